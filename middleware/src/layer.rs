//! The Tower layer: every request needs a valid access token of a live session.
//!
//! Works in front of any `Service<http::Request<B>>` (axum, hyper, tonic). A refusal is
//! an `Ok` response with the right status (or a gRPC status for gRPC requests), never an
//! `Err`: the inner service's error type is unchanged and the connection stays up. On
//! success the request carries an [`AuthContext`] in its extensions.
//!
//! ```
//! # session_guard::install_crypto_provider();
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use session_guard::{
//!     AuthContext, Authenticator, InMemoryLiveness, KeySet, SessionGuardLayer, TokenVerifier,
//!     VerificationKey,
//! };
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio_test_runtime(async {
//! let keys = KeySet::new([VerificationKey::hmac("k1", &[7; 32]).unwrap()]);
//! let verifier = TokenVerifier::new(keys, "https://auth.example.com", "api");
//! let auth = Authenticator::new(verifier, InMemoryLiveness::new());
//!
//! let service = ServiceBuilder::new()
//!     .layer(SessionGuardLayer::new(auth))
//!     .service_fn(|request: Request<String>| async move {
//!         let who = request.extensions().get::<AuthContext>().unwrap().user_id().clone();
//!         Ok::<_, Infallible>(Response::new(format!("hello {who}")))
//!     });
//!
//! // No token: 401 with a Bearer challenge.
//! let response = service.oneshot(Request::new(String::new())).await.unwrap();
//! assert_eq!(response.status(), 401);
//! assert_eq!(response.headers()["www-authenticate"], "Bearer");
//! # });
//! # fn tokio_test_runtime(f: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::authenticator::Authenticator;
use crate::body::ResponseBody;
use crate::future::ResponseFuture;

#[cfg(doc)]
use crate::context::AuthContext;

/// Adds [`SessionGuard`] to a service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SessionGuardLayer {
    auth: Authenticator,
}

impl SessionGuardLayer {
    /// A layer that authenticates every request with `auth`.
    pub fn new(auth: Authenticator) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for SessionGuardLayer {
    type Service = SessionGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionGuard::new(inner, self.auth.clone())
    }
}

/// Authenticates each request before the inner service sees it.
#[derive(Debug, Clone)]
pub struct SessionGuard<S> {
    inner: S,
    auth: Authenticator,
}

impl<S> SessionGuard<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, auth: Authenticator) -> Self {
        Self { inner, auth }
    }

    /// A [`SessionGuardLayer`] with `auth`.
    pub fn layer(auth: Authenticator) -> SessionGuardLayer {
        SessionGuardLayer::new(auth)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionGuard<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        match self.auth.authenticate_cached(request.headers()) {
            Some(Ok(context)) => {
                request.extensions_mut().insert(context);
                ResponseFuture::calling(self.inner.call(request))
            }
            Some(Err(error)) => ResponseFuture::rejected(&error, request.headers()),
            None => {
                // The instance that was polled ready must be the one that is called.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let auth = self.auth.clone();
                ResponseFuture::authenticating(
                    Box::pin(async move {
                        let outcome = auth.authenticate(request.headers()).await;
                        (outcome, request)
                    }),
                    inner,
                )
            }
        }
    }
}
