//! The error body every route answers with, `{"error": code, "message": text}`, and the
//! one place where the server's errors become HTTP responses.

use poem::IntoResponse;
use poem::http::StatusCode;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

use crate::error::ServiceError;
use crate::passwords::PasswordPolicyError;

/// An error: a stable `snake_case` code for programs and a sentence for people.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// Stable machine-readable code, such as `invalid_credentials`.
    pub error: String,
    /// Human-readable explanation.
    pub message: String,
    /// Only with `mfa_required` (a login of an account with a second factor): the
    /// single-use token that continues the login at `POST /auth/mfa/verify` or
    /// `POST /auth/passkeys/authentication`.
    #[oai(skip_serializing_if_is_none)]
    pub mfa_token: Option<String>,
    /// Only with `mfa_required`: the factors the login may continue with.
    #[oai(skip_serializing_if_is_none)]
    pub factors: Option<Vec<FactorRef>>,
}

/// A factor a login may continue with.
#[derive(Debug, Clone, Object)]
pub struct FactorRef {
    /// The factor's id (`factor_id` of `POST /auth/mfa/verify`).
    pub id: uuid::Uuid,
    /// `totp` or `passkey`.
    pub kind: String,
}

impl ErrorBody {
    /// An error body with the given code and message.
    pub fn new(error: &str, message: impl Into<String>) -> Self {
        Self {
            error: error.to_owned(),
            message: message.into(),
            mfa_token: None,
            factors: None,
        }
    }

    /// This body as a JSON response with `status`.
    pub fn with_status(self, status: StatusCode) -> poem::Response {
        (
            status,
            poem::web::Json(serde_json::json!({
                "error": self.error,
                "message": self.message,
            })),
        )
            .into_response()
    }
}

/// Every error status the API documents, each with the error body.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed or a value is invalid.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing or bad credentials (bearer routes add an RFC 6750 challenge), or a proof of
    /// who the user is that is too old or too weak for the route (`WWW-Authenticate:
    /// Bearer error="insufficient_user_authentication"` with `acr_values` and/or
    /// `max_age`, RFC 9470; answer it with `POST /auth/step-up`).
    #[oai(status = 401)]
    Unauthorized(
        Json<ErrorBody>,
        /// The challenge, when the route states one.
        #[oai(header = "WWW-Authenticate")]
        Option<String>,
    ),
    /// The credentials are valid but the action is refused.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such resource for this user.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The resource exists already.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The request body is too large.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The body is not `application/json` (or is missing).
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// Too many requests; retry after the given number of seconds.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        u64,
    ),
    /// An unexpected failure; details are in the server log only.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// A dependency (the database) is unavailable; retry shortly.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        let body = |code: &str| Json(ErrorBody::new(code, error.to_string()));
        match &error {
            ServiceError::InvalidEmail => Self::BadRequest(body("invalid_email")),
            ServiceError::Password(PasswordPolicyError::TooShort) => {
                Self::BadRequest(body("password_too_short"))
            }
            ServiceError::Password(PasswordPolicyError::TooLong) => {
                Self::BadRequest(body("password_too_long"))
            }
            ServiceError::InvalidDeviceName => Self::BadRequest(body("invalid_device_name")),
            ServiceError::EmailTaken => Self::Conflict(body("email_taken")),
            ServiceError::InvalidCredentials => {
                Self::Unauthorized(body("invalid_credentials"), None)
            }
            ServiceError::WrongCurrentPassword => Self::Forbidden(body("invalid_credentials")),
            ServiceError::InvalidRefreshToken => {
                Self::Unauthorized(body("invalid_refresh_token"), None)
            }
            ServiceError::InvalidVerificationToken => {
                Self::BadRequest(body("invalid_verification_token"))
            }
            ServiceError::InvalidResetToken => Self::BadRequest(body("invalid_reset_token")),
            ServiceError::EmailNotVerified => Self::Forbidden(body("email_not_verified")),
            ServiceError::SessionNotFound => Self::NotFound(body("session_not_found")),
            ServiceError::SessionEnded => Self::Unauthorized(body("invalid_token"), None),
            ServiceError::InvalidCode => Self::BadRequest(body("invalid_code")),
            ServiceError::FactorNotFound => Self::NotFound(body("factor_not_found")),
            ServiceError::InvalidMfaToken => Self::Unauthorized(body("invalid_mfa_token"), None),
            ServiceError::InvalidChallenge => Self::BadRequest(body("invalid_challenge")),
            ServiceError::InvalidCredential => Self::BadRequest(body("invalid_credential")),
            ServiceError::NoFactor => Self::BadRequest(body("mfa_not_enabled")),
            ServiceError::CrossSiteSignIn => Self::Forbidden(body("cross_site_request")),
            ServiceError::PasskeysUnavailable => Self::BadRequest(body("passkeys_unavailable")),
            ServiceError::InsufficientAuthentication(refusal) => {
                metrics::counter!("session_auth_rejections_total", "reason" => refusal.reason())
                    .increment(1);
                // The layer's own body and challenge, as a guarded route answers.
                let challenge = refusal
                    .www_authenticate()
                    .and_then(|value| value.to_str().ok().map(str::to_owned));
                Self::Unauthorized(
                    Json(ErrorBody::new(refusal.code(), refusal.message())),
                    challenge,
                )
            }
            ServiceError::RateLimited(wait) => Self::TooManyRequests(
                body("rate_limited"),
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            ),
            ServiceError::Database(cause) => {
                tracing::warn!(
                    error = %crate::error::chain(cause),
                    code = cause.code().map(tokio_postgres::error::SqlState::code),
                    "database unavailable"
                );
                Self::Unavailable(Json(ErrorBody::new(
                    "database_unavailable",
                    "the database does not answer; retry shortly",
                )))
            }
            ServiceError::Internal { .. } => {
                tracing::error!(error = %crate::error::chain(&error), "internal error");
                Self::Internal(Json(ErrorBody::new(
                    "internal_error",
                    "an internal error occurred",
                )))
            }
        }
    }
}

/// Turns any framework error (unknown route, unparsable JSON, a missing field, a
/// body too large) into the error body, with its status kept. Errors that are already
/// responses (ours, and `portcullis`'s refusals) pass through untouched.
pub fn framework_error(error: poem::Error) -> poem::Response {
    if error.is_from_response() {
        return error.into_response();
    }
    let status = error.status();
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed".to_owned()),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the body is too large".to_owned()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send the body as application/json".to_owned(),
        ),
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "retry shortly".to_owned()),
        status if status.is_client_error() => ("invalid_request", error.to_string()),
        _ => {
            tracing::error!(%error, "unhandled error");
            ("internal_error", "an internal error occurred".to_owned())
        }
    };
    ErrorBody::new(code, message).with_status(status)
}

#[cfg(test)]
mod tests {
    use poem_openapi::ApiResponse as _;

    use super::*;

    /// Schemathesis found a body-less `POST /auth/login` answered 415, a status the
    /// document did not list: every error status the framework produces is documented.
    #[test]
    fn every_error_status_the_routes_produce_is_documented() {
        let documented: Vec<u16> = ApiError::meta()
            .responses
            .iter()
            .filter_map(|response| response.status)
            .collect();
        for status in [400, 401, 403, 404, 409, 413, 415, 429, 500, 503] {
            assert!(documented.contains(&status), "{status} in {documented:?}");
        }
        let response =
            framework_error(poem::Error::from_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
