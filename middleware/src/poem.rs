//! The Poem adapter: a middleware and an extractor over the same core.
//!
//! Poem's tower-compat hands the inner service a `poem::Request`, not an
//! `http::Request`, so the Tower layer does not fit there; this does.
//!
//! ```
//! use poem::{EndpointExt, Route, get, handler};
//! use portcullis::{AuthContext, Authenticator, InMemoryLiveness, KeySet, TokenVerifier,
//!     VerificationKey};
//! use portcullis::poem::SessionGuardMiddleware;
//!
//! #[handler]
//! fn me(auth: AuthContext) -> String {
//!     auth.user_id().to_string()
//! }
//!
//! # portcullis::install_crypto_provider();
//! let keys = KeySet::new([VerificationKey::hmac("k1", &[7; 32]).unwrap()]);
//! let auth = Authenticator::new(TokenVerifier::builder(keys).issuer("iss").audience("aud").build(), InMemoryLiveness::new());
//! let app = Route::new().at("/me", get(me)).with(SessionGuardMiddleware::new(auth));
//! # let _ = app;
//! ```
//!
//! # Step-up
//!
//! A route that needs more of the user's authentication takes a middleware with a
//! requirement, on that endpoint alone; a token that falls short gets 401 with the RFC
//! 9470 challenge:
//!
//! ```
//! # use poem::{EndpointExt, Route, get, post, handler};
//! # use portcullis::{AuthContext, Authenticator, InMemoryLiveness, KeySet, TokenVerifier,
//! #     VerificationKey};
//! # use portcullis::poem::SessionGuardMiddleware;
//! use std::time::Duration;
//! use portcullis::Aal;
//!
//! # #[handler] fn me() {}
//! # #[handler] fn delete_account() {}
//! # portcullis::install_crypto_provider();
//! # let keys = KeySet::new([VerificationKey::hmac("k1", &[7; 32]).unwrap()]);
//! # let auth = Authenticator::new(TokenVerifier::builder(keys).issuer("iss").audience("aud").build(), InMemoryLiveness::new());
//! let guard = SessionGuardMiddleware::new(auth);
//! let privileged = guard.clone().require_aal(Aal::Aal2).max_auth_age(Duration::from_secs(600));
//! let app = Route::new()
//!     .at("/me", get(me.with(guard)))
//!     .at("/account/delete", post(delete_account.with(privileged)));
//! # let _ = app;
//! ```
//!
//! Inside a handler, [`AssuranceRequirement::check`] does the same, and [`AuthError`] is
//! a Poem [`ResponseError`]: `requirement.check(&auth)?`.

use std::time::Duration;

use poem::error::ResponseError;
use poem::http::StatusCode;
use poem::{Endpoint, FromRequest, IntoResponse, Middleware, Request, RequestBody, Response};

use crate::assurance::{Aal, AssuranceRequirement};
use crate::authenticator::Authenticator;
use crate::context::AuthContext;
use crate::error::AuthError;
use crate::extract::RequestHead;

/// Authenticates each request before the endpoint sees it.
///
/// By default any valid token of a live session passes; [`require_aal`](Self::require_aal)
/// and [`max_auth_age`](Self::max_auth_age) ask more, as on
/// [`SessionGuardLayer`](crate::SessionGuardLayer).
#[derive(Debug, Clone)]
pub struct SessionGuardMiddleware {
    auth: Authenticator,
    requirement: AssuranceRequirement,
}

impl SessionGuardMiddleware {
    /// A middleware that authenticates every request with `auth`.
    pub fn new(auth: Authenticator) -> Self {
        Self {
            auth,
            requirement: AssuranceRequirement::new(),
        }
    }

    /// Requires at least `aal` of the user's authentication; a token below it gets 401
    /// with an RFC 9470 challenge (`acr_values`).
    #[must_use]
    pub fn require_aal(mut self, aal: Aal) -> Self {
        self.requirement = self.requirement.require_aal(aal);
        self
    }

    /// Requires that the user authenticated at most `age` ago (whole seconds); an older
    /// token, or one without `auth_time`, gets 401 with an RFC 9470 challenge
    /// (`max_age`).
    #[must_use]
    pub fn max_auth_age(mut self, age: Duration) -> Self {
        self.requirement = self.requirement.max_auth_age(age);
        self
    }

    /// Requires all of `requirement` (and nothing else).
    #[must_use]
    pub fn with_requirement(mut self, requirement: AssuranceRequirement) -> Self {
        self.requirement = requirement;
        self
    }
}

impl<E: Endpoint> Middleware<E> for SessionGuardMiddleware {
    type Output = SessionGuardEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        SessionGuardEndpoint {
            inner,
            auth: self.auth.clone(),
            requirement: self.requirement,
        }
    }
}

/// The endpoint [`SessionGuardMiddleware`] wraps around another.
#[derive(Debug)]
pub struct SessionGuardEndpoint<E> {
    inner: E,
    auth: Authenticator,
    requirement: AssuranceRequirement,
}

impl<E: Endpoint> Endpoint for SessionGuardEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut request: Request) -> poem::Result<Response> {
        let outcome = authenticate(&self.auth, &request)
            .await
            .and_then(|context| self.requirement.check(&context).map(|()| context));
        match outcome {
            Ok(context) => {
                request.extensions_mut().insert(context);
                self.inner
                    .call(request)
                    .await
                    .map(IntoResponse::into_response)
            }
            Err(error) => {
                tracing::debug!(
                    reason = error.reason(),
                    status = error.status().as_u16(),
                    "request refused"
                );
                Ok(rejection(&error, &request))
            }
        }
    }
}

/// Authenticates a Poem request: from memory when the answer is there, else in full.
///
/// For extractors that authenticate themselves (a poem-openapi security scheme, say)
/// instead of relying on [`SessionGuardMiddleware`].
pub async fn authenticate(
    auth: &Authenticator,
    request: &Request,
) -> Result<AuthContext, AuthError> {
    auth.authenticate(RequestHead::new(request.uri(), request.headers()))
        .await
}

/// The refusal as a Poem response (a gRPC status when `request` is gRPC).
pub fn rejection(error: &AuthError, request: &Request) -> Response {
    to_poem(error.to_response(request.headers()))
}

fn to_poem(response: poem::http::Response<bytes::Bytes>) -> Response {
    let (parts, body) = response.into_parts();
    let mut response = Response::builder().status(parts.status).body(body);
    *response.headers_mut() = parts.headers;
    response
}

/// A refusal returned from a handler (`requirement.check(&auth)?`) answers as the
/// middleware would: the status, the challenge and the JSON body.
impl ResponseError for AuthError {
    fn status(&self) -> StatusCode {
        AuthError::status(self)
    }

    fn as_response(&self) -> Response {
        // A handler's answer is HTTP: Poem serves gRPC with its own crate, not through this.
        to_poem(self.to_response(&poem::http::HeaderMap::new()))
    }
}

impl<'a> FromRequest<'a> for AuthContext {
    async fn from_request(request: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        request
            .extensions()
            .get::<AuthContext>()
            .cloned()
            .ok_or_else(|| {
                tracing::error!("SessionGuardMiddleware is not installed on this route");
                poem::Error::from_string(
                    "authentication is not configured for this route",
                    poem::http::StatusCode::INTERNAL_SERVER_ERROR,
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use poem::http::StatusCode;
    use poem::{Endpoint, EndpointExt, Request, Route, get, handler};

    use super::*;
    use crate::liveness::InMemoryLiveness;
    use crate::test_tokens::{token, verifier};

    #[handler]
    #[allow(
        clippy::needless_pass_by_value,
        reason = "poem hands extractors over by value"
    )]
    fn me(auth: AuthContext) -> String {
        format!("{} {}", auth.user_id(), auth.session_id())
    }

    fn request(authorization: Option<String>) -> Request {
        let mut builder = Request::builder().uri(poem::http::Uri::from_static("/me"));
        if let Some(value) = authorization {
            builder = builder.header(poem::http::header::AUTHORIZATION, value);
        }
        builder.finish()
    }

    #[tokio::test]
    async fn poem_routes_behind_the_middleware_get_the_context_or_a_refusal() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let app = Route::new()
            .at("/me", get(me))
            .with(SessionGuardMiddleware::new(Authenticator::new(
                verifier(),
                store.clone(),
            )));
        let bearer = format!("Bearer {}", token("u1", "s1"));

        for _ in 0..2 {
            let response = app.call(request(Some(bearer.clone()))).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.into_body().into_string().await.unwrap(), "u1 s1");
        }

        let missing = app.call(request(None)).await.unwrap();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(missing.headers()["www-authenticate"], "Bearer");
        let body: serde_json::Value =
            serde_json::from_str(&missing.into_body().into_string().await.unwrap()).unwrap();
        assert_eq!(body["error"], "missing_token");

        let malformed = app.call(request(Some("Bearer".into()))).await.unwrap();
        assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);

        store.revoke("s1");
        let revoked = app.call(request(Some(bearer))).await.unwrap();
        assert_eq!(revoked.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn step_up_on_an_endpoint_and_in_a_handler() {
        use std::time::Duration;

        use serde_json::json;

        use crate::test_tokens::{now, token_with};
        use crate::{Aal, AssuranceRequirement};

        #[handler]
        #[allow(
            clippy::needless_pass_by_value,
            reason = "poem hands extractors over by value"
        )]
        fn export(auth: AuthContext) -> poem::Result<&'static str> {
            AssuranceRequirement::new()
                .max_auth_age(Duration::from_secs(60))
                .check(&auth)?;
            Ok("exported")
        }

        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let guard = SessionGuardMiddleware::new(Authenticator::new(verifier(), store));
        let privileged = guard
            .clone()
            .require_aal(Aal::Aal2)
            .max_auth_age(Duration::from_secs(600));
        let app = Route::new()
            .at("/me", get(me.with(guard.clone())))
            .at("/account/delete", get(me.with(privileged)))
            .at("/export", get(export.with(guard)));
        let call = |path: &'static str, token: &str| {
            let request = Request::builder()
                .uri(poem::http::Uri::from_static(path))
                .header(poem::http::header::AUTHORIZATION, format!("Bearer {token}"))
                .finish();
            let app = &app;
            async move {
                let response = app.get_response(request).await;
                let challenge = response
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap().to_owned());
                let status = response.status().as_u16();
                (
                    status,
                    challenge,
                    response.into_body().into_string().await.unwrap(),
                )
            }
        };
        let now = now();
        let password = token_with("u1", "s1", &json!({"aal": "aal1", "auth_time": now - 120}));
        let stale = token_with("u1", "s1", &json!({"aal": "aal2", "auth_time": now - 900}));
        let stepped_up = token_with("u1", "s1", &json!({"aal": "aal2", "auth_time": now - 120}));

        for _ in 0..2 {
            assert_eq!(call("/me", &password).await.0, 200);
            assert_eq!(call("/account/delete", &stepped_up).await.0, 200);
            let (status, challenge, body) = call("/account/delete", &password).await;
            assert_eq!(status, 401);
            assert_eq!(
                challenge.as_deref(),
                Some(
                    r#"Bearer error="insufficient_user_authentication", error_description="a stronger authentication is required", acr_values="aal2", max_age=600"#
                )
            );
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["error"], "insufficient_user_authentication");
            let (status, challenge, _) = call("/account/delete", &stale).await;
            assert_eq!(status, 401);
            assert_eq!(
                challenge.as_deref(),
                Some(
                    r#"Bearer error="insufficient_user_authentication", error_description="a more recent authentication is required", acr_values="aal2", max_age=600"#
                )
            );
        }

        // The handler's own check: `?` on the refusal answers with its challenge.
        let (status, challenge, body) = call("/export", &stepped_up).await;
        assert_eq!(status, 401);
        assert_eq!(
            challenge.as_deref(),
            Some(
                r#"Bearer error="insufficient_user_authentication", error_description="a more recent authentication is required", max_age=60"#
            )
        );
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body,
            json!({
                "error": "insufficient_user_authentication",
                "message": "a more recent authentication is required",
            })
        );
        let just_now = token_with("u1", "s1", &json!({"auth_time": now}));
        assert_eq!(call("/export", &just_now).await.2, "exported");
    }

    #[tokio::test]
    async fn the_extractor_without_the_middleware_is_a_clear_500() {
        let app = Route::new().at("/me", get(me));
        let response = app.get_response(request(None)).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
