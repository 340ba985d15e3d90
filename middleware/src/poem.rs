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

use poem::{Endpoint, FromRequest, IntoResponse, Middleware, Request, RequestBody, Response};

use crate::authenticator::Authenticator;
use crate::context::AuthContext;
use crate::error::AuthError;
use crate::extract::RequestHead;

/// Authenticates each request before the endpoint sees it.
#[derive(Debug, Clone)]
pub struct SessionGuardMiddleware {
    auth: Authenticator,
}

impl SessionGuardMiddleware {
    /// A middleware that authenticates every request with `auth`.
    pub fn new(auth: Authenticator) -> Self {
        Self { auth }
    }
}

impl<E: Endpoint> Middleware<E> for SessionGuardMiddleware {
    type Output = SessionGuardEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        SessionGuardEndpoint {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// The endpoint [`SessionGuardMiddleware`] wraps around another.
#[derive(Debug)]
pub struct SessionGuardEndpoint<E> {
    inner: E,
    auth: Authenticator,
}

impl<E: Endpoint> Endpoint for SessionGuardEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut request: Request) -> poem::Result<Response> {
        match authenticate(&self.auth, &request).await {
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

/// The refusal as a Poem response.
pub fn rejection(error: &AuthError, request: &Request) -> Response {
    let (parts, body) = error.to_response(request.headers()).into_parts();
    let mut response = Response::builder().status(parts.status).body(body);
    *response.headers_mut() = parts.headers;
    response
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
    async fn the_extractor_without_the_middleware_is_a_clear_500() {
        let app = Route::new().at("/me", get(me));
        let response = app.get_response(request(None)).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
