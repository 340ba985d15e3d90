//! Why a request was refused, and the response that says so.
//!
//! Every refusal knows its status and its RFC 6750 `WWW-Authenticate` challenge. The
//! body is `{"error": code, "message": text}`; neither says which check failed, so a
//! caller learns nothing about keys, sessions or users from a refusal. gRPC callers get a
//! real gRPC status instead (UNAUTHENTICATED, or UNAVAILABLE).
//!
//! The one refusal that says more is a valid token of a live session whose
//! authentication falls short of the route's [`AssuranceRequirement`]: RFC 9470's
//! challenge names the requirement (`acr_values`, `max_age`), so that the client can step
//! up. It is only ever sent to a caller that proved it holds a valid token.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::assurance::{AssuranceRequirement, Shortfall};
use crate::liveness::{Liveness, LivenessError};
use crate::verify::TokenError;

/// Why a request was not authenticated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No access token was sent (or another scheme than Bearer).
    #[error("no access token")]
    MissingToken,
    /// The `Authorization` header is not a well-formed `Bearer` credential.
    #[error("malformed Authorization header")]
    MalformedHeader,
    /// The token failed verification.
    #[error("invalid access token: {0}")]
    InvalidToken(#[from] TokenError),
    /// A cookie-authenticated request that a browser marks as sent by another site.
    #[error("cross-site request with a session cookie")]
    CrossSite,
    /// The token is valid but its session is not live.
    #[error("session not live: {}", .0.reason())]
    SessionNotLive(Liveness),
    /// Whether the session is live could not be decided.
    #[error(transparent)]
    Unavailable(#[from] LivenessError),
    /// The token is valid and its session live, but the user's authentication is too weak
    /// or too old for the route (RFC 9470 `insufficient_user_authentication`).
    #[error("insufficient user authentication: {}", shortfall_text(*.shortfall))]
    InsufficientAuthentication {
        /// What the route requires; the challenge states it.
        required: AssuranceRequirement,
        /// What the token lacks.
        shortfall: Shortfall,
    },
}

impl AuthError {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            // RFC 9470 §3: a step-up challenge is a 401, as RFC 6750's are.
            Self::MissingToken
            | Self::InvalidToken(_)
            | Self::SessionNotLive(_)
            | Self::InsufficientAuthentication { .. } => StatusCode::UNAUTHORIZED,
            Self::MalformedHeader => StatusCode::BAD_REQUEST,
            Self::CrossSite => StatusCode::FORBIDDEN,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short stable label, for metrics and log fields ("rejections by reason").
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::MalformedHeader => "malformed_header",
            Self::CrossSite => "cross_site",
            Self::InvalidToken(e) => e.reason(),
            Self::SessionNotLive(liveness) => liveness.reason(),
            Self::Unavailable(_) => "liveness_unavailable",
            Self::InsufficientAuthentication { shortfall, .. } => match shortfall {
                Shortfall::Level => "aal_too_low",
                Shortfall::Age => "authentication_too_old",
                Shortfall::LevelAndAge => "aal_too_low_and_authentication_too_old",
            },
        }
    }

    /// The `error` code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::MalformedHeader => "invalid_request",
            Self::CrossSite => "cross_site_request",
            Self::InvalidToken(_) | Self::SessionNotLive(_) => "invalid_token",
            Self::Unavailable(_) => "session_check_unavailable",
            Self::InsufficientAuthentication { .. } => "insufficient_user_authentication",
        }
    }

    /// The human-readable `message` of the JSON body: generic on purpose.
    pub fn message(&self) -> &'static str {
        match self {
            Self::MissingToken => "an access token is required",
            Self::MalformedHeader => "the Authorization header is malformed",
            Self::CrossSite => "a session cookie cannot authenticate a request from another site",
            Self::InvalidToken(_) | Self::SessionNotLive(_) => {
                "the access token is invalid, expired or revoked"
            }
            Self::Unavailable(_) => "the session cannot be checked right now; retry shortly",
            Self::InsufficientAuthentication { shortfall, .. } => shortfall_text(*shortfall),
        }
    }

    /// The JSON body, `{"error": code(), "message": message()}`, rendered at compile
    /// time: a refusal allocates nothing for its body.
    fn body(&self) -> &'static [u8] {
        macro_rules! body {
            ($code:literal, $message:literal) => {
                concat!(
                    r#"{"error":""#,
                    $code,
                    r#"","message":""#,
                    $message,
                    r#""}"#
                )
                .as_bytes()
            };
        }
        match self {
            Self::MissingToken => body!("missing_token", "an access token is required"),
            Self::MalformedHeader => {
                body!("invalid_request", "the Authorization header is malformed")
            }
            Self::CrossSite => body!(
                "cross_site_request",
                "a session cookie cannot authenticate a request from another site"
            ),
            Self::InvalidToken(_) | Self::SessionNotLive(_) => body!(
                "invalid_token",
                "the access token is invalid, expired or revoked"
            ),
            Self::Unavailable(_) => body!(
                "session_check_unavailable",
                "the session cannot be checked right now; retry shortly"
            ),
            Self::InsufficientAuthentication { shortfall, .. } => match shortfall {
                Shortfall::Level => body!(
                    "insufficient_user_authentication",
                    "a stronger authentication is required"
                ),
                Shortfall::Age => body!(
                    "insufficient_user_authentication",
                    "a more recent authentication is required"
                ),
                Shortfall::LevelAndAge => body!(
                    "insufficient_user_authentication",
                    "a stronger and more recent authentication is required"
                ),
            },
        }
    }

    /// The RFC 6750 challenge (RFC 9470's for insufficient authentication), when the
    /// status calls for one.
    pub fn www_authenticate(&self) -> Option<HeaderValue> {
        let challenge = match self {
            // RFC 6750 §3.1: no error code when the request had no credentials.
            Self::MissingToken => "Bearer",
            Self::MalformedHeader => {
                r#"Bearer error="invalid_request", error_description="malformed Authorization header""#
            }
            Self::InvalidToken(_) | Self::SessionNotLive(_) => {
                r#"Bearer error="invalid_token", error_description="the access token is invalid""#
            }
            Self::InsufficientAuthentication {
                required,
                shortfall,
            } => {
                let challenge = format!(
                    r#"Bearer error="insufficient_user_authentication", error_description="{}"{}"#,
                    shortfall_text(*shortfall),
                    required.challenge_params()
                );
                // Visible ASCII only: static text, level names and digits.
                return HeaderValue::try_from(challenge).ok();
            }
            Self::CrossSite | Self::Unavailable(_) => return None,
        };
        Some(HeaderValue::from_static(challenge))
    }

    /// The gRPC status code: UNAUTHENTICATED (16), or UNAVAILABLE (14).
    pub fn grpc_status(&self) -> u16 {
        match self {
            Self::Unavailable(_) => 14,
            _ => 16,
        }
    }

    /// The refusal as an HTTP response; a gRPC response when `request_headers` say gRPC.
    pub fn to_response(&self, request_headers: &HeaderMap) -> Response<Bytes> {
        if is_grpc(request_headers) {
            return self.to_grpc_response();
        }
        let mut response = Response::new(Bytes::from_static(self.body()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(challenge) = self.www_authenticate() {
            headers.insert(WWW_AUTHENTICATE, challenge);
        }
        if matches!(self, Self::Unavailable(_)) {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }

    /// A trailers-only gRPC response: HTTP 200 with `grpc-status` and `grpc-message`.
    fn to_grpc_response(&self) -> Response<Bytes> {
        let mut response = Response::new(Bytes::new());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(self.grpc_status()));
        // The messages are plain ASCII without `%`, so they need no percent-encoding.
        headers.insert("grpc-message", HeaderValue::from_static(self.message()));
        if let Some(challenge) = self.www_authenticate() {
            headers.insert(WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// The description of a shortfall: the JSON body's `message`, the challenge's
/// `error_description` and the gRPC message. Plain ASCII without `"`, `\` or `%`, so it
/// goes into a quoted string and a `grpc-message` as it is.
fn shortfall_text(shortfall: Shortfall) -> &'static str {
    match shortfall {
        Shortfall::Level => "a stronger authentication is required",
        Shortfall::Age => "a more recent authentication is required",
        Shortfall::LevelAndAge => "a stronger and more recent authentication is required",
    }
}

/// Whether the request is gRPC (`content-type: application/grpc[+proto|...]`).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .get(..16)
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case("application/grpc"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_its_status_and_challenge() {
        let cases = [
            (AuthError::MissingToken, 401, Some("Bearer")),
            (
                AuthError::MalformedHeader,
                400,
                Some("Bearer error=\"invalid_request\""),
            ),
            (
                AuthError::InvalidToken(TokenError::Expired),
                401,
                Some("Bearer error=\"invalid_token\""),
            ),
            (
                AuthError::SessionNotLive(Liveness::Revoked),
                401,
                Some("Bearer error=\"invalid_token\""),
            ),
            (
                AuthError::Unavailable(LivenessError("db down".into())),
                503,
                None,
            ),
        ];
        for (error, status, challenge) in cases {
            let response = error.to_response(&HeaderMap::new());
            assert_eq!(response.status().as_u16(), status, "{error}");
            let header = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .map(|v| v.to_str().unwrap().to_owned());
            match challenge {
                Some(prefix) => assert!(header.unwrap().starts_with(prefix), "{error}"),
                None => assert!(header.is_none(), "{error}"),
            }
            let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
            assert_eq!(body["error"], error.code());
            assert!(
                !response
                    .body()
                    .escape_ascii()
                    .to_string()
                    .contains("db down")
            );
        }
    }

    #[test]
    fn every_token_or_session_failure_looks_the_same_to_the_client() {
        let failures = [
            AuthError::InvalidToken(TokenError::Expired),
            AuthError::InvalidToken(TokenError::BadSignature),
            AuthError::InvalidToken(TokenError::UnknownKey),
            AuthError::InvalidToken(TokenError::WrongAudience),
            AuthError::SessionNotLive(Liveness::Revoked),
            AuthError::SessionNotLive(Liveness::Unknown),
        ];
        let responses: Vec<_> = failures
            .iter()
            .map(|e| {
                let response = e.to_response(&HeaderMap::new());
                (
                    response.status(),
                    response.headers().clone(),
                    response.into_body(),
                )
            })
            .collect();
        for response in &responses[1..] {
            assert_eq!(response, &responses[0]);
        }
    }

    fn insufficient(shortfall: Shortfall) -> AuthError {
        AuthError::InsufficientAuthentication {
            required: AssuranceRequirement::new()
                .require_aal(crate::Aal::Aal2)
                .max_auth_age(std::time::Duration::from_secs(300)),
            shortfall,
        }
    }

    #[test]
    fn the_prerendered_bodies_say_what_code_and_message_say() {
        for error in [
            AuthError::MissingToken,
            AuthError::MalformedHeader,
            AuthError::CrossSite,
            AuthError::InvalidToken(TokenError::Expired),
            AuthError::SessionNotLive(Liveness::Revoked),
            AuthError::Unavailable(LivenessError("x".into())),
            insufficient(Shortfall::Level),
            insufficient(Shortfall::Age),
            insufficient(Shortfall::LevelAndAge),
        ] {
            let body: serde_json::Value = serde_json::from_slice(error.body()).unwrap();
            assert_eq!(
                body,
                serde_json::json!({ "error": error.code(), "message": error.message() })
            );
        }
    }

    /// RFC 9470 §3: 401, `error`, `error_description`, then the requirement; only the
    /// parts the route has.
    #[test]
    fn insufficient_authentication_is_a_401_with_the_step_up_challenge() {
        use crate::Aal;
        use std::time::Duration;

        let requirement = AssuranceRequirement::new();
        for (required, shortfall, challenge) in [
            (
                requirement.require_aal(Aal::Aal2),
                Shortfall::Level,
                r#"Bearer error="insufficient_user_authentication", error_description="a stronger authentication is required", acr_values="aal2""#,
            ),
            (
                requirement.max_auth_age(Duration::from_secs(300)),
                Shortfall::Age,
                r#"Bearer error="insufficient_user_authentication", error_description="a more recent authentication is required", max_age=300"#,
            ),
            (
                requirement
                    .require_aal(Aal::Aal2)
                    .max_auth_age(Duration::from_secs(0)),
                Shortfall::LevelAndAge,
                r#"Bearer error="insufficient_user_authentication", error_description="a stronger and more recent authentication is required", acr_values="aal2", max_age=0"#,
            ),
        ] {
            let error = AuthError::InsufficientAuthentication {
                required,
                shortfall,
            };
            let response = error.to_response(&HeaderMap::new());
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(response.headers()[WWW_AUTHENTICATE], challenge);
            assert_eq!(error.code(), "insufficient_user_authentication");
        }
    }

    #[test]
    fn grpc_requests_get_a_grpc_status() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        let response = AuthError::InvalidToken(TokenError::BadSignature).to_response(&headers);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "16");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
        let unavailable =
            AuthError::Unavailable(LivenessError("down".into())).to_response(&headers);
        assert_eq!(unavailable.headers()["grpc-status"], "14");
        let step_up = insufficient(Shortfall::Age).to_response(&headers);
        assert_eq!(step_up.headers()["grpc-status"], "16");
        assert_eq!(
            step_up.headers()["grpc-message"],
            "a more recent authentication is required"
        );
        assert_eq!(
            step_up.headers()[WWW_AUTHENTICATE],
            r#"Bearer error="insufficient_user_authentication", error_description="a more recent authentication is required", acr_values="aal2", max_age=300"#
        );
    }
}
