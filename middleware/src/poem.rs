//! The Poem adapter: a middleware and an extractor over the same core.
//!
//! Poem's tower-compat hands the inner service a `poem::Request`, not an
//! `http::Request`, so the Tower layer does not fit there; this does.
//!
//! ```
//! use poem::{EndpointExt, Route, get, handler};
//! use session_guard::{AuthContext, Authenticator, InMemoryLiveness, KeySet, TokenVerifier,
//!     VerificationKey};
//! use session_guard::poem::SessionGuardMiddleware;
//!
//! #[handler]
//! fn me(auth: AuthContext) -> String {
//!     auth.user_id().to_string()
//! }
//!
//! # session_guard::install_crypto_provider();
//! let keys = KeySet::new([VerificationKey::hmac("k1", &[7; 32]).unwrap()]);
//! let auth = Authenticator::new(TokenVerifier::new(keys, "iss", "aud"), InMemoryLiveness::new());
//! let app = Route::new().at("/me", get(me)).with(SessionGuardMiddleware::new(auth));
//! # let _ = app;
//! ```

use poem::{Endpoint, FromRequest, IntoResponse, Middleware, Request, RequestBody, Response};

use crate::authenticator::Authenticator;
use crate::context::AuthContext;
use crate::error::AuthError;

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
        let outcome = match self.auth.authenticate_cached(request.headers()) {
            Some(outcome) => outcome,
            None => self.auth.authenticate(request.headers()).await,
        };
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
