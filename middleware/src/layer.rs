//! The Tower layer: every request needs a valid access token of a live session.
//!
//! Works in front of any `Service<http::Request<B>>` (axum, hyper, tonic). A refusal is
//! an `Ok` response with the right status (or a gRPC status for gRPC requests), never an
//! `Err`: the inner service's error type is unchanged and the connection stays up. On
//! success the request carries an [`AuthContext`] in its extensions.
//!
//! ```
//! # portcullis::install_crypto_provider();
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use portcullis::{
//!     AuthContext, Authenticator, InMemoryLiveness, KeySet, SessionGuardLayer, TokenVerifier,
//!     VerificationKey,
//! };
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio_test_runtime(async {
//! let keys = KeySet::new([VerificationKey::hmac("k1", &[7; 32]).unwrap()]);
//! let verifier = TokenVerifier::builder(keys).issuer("https://auth.example.com").audience("api").build();
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
use crate::extract::RequestHead;
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
        // Answered from memory, the request goes on without a boxed future; otherwise
        // `authenticate` (which would try memory first too) runs in one.
        match self
            .auth
            .authenticate_cached(RequestHead::new(request.uri(), request.headers()))
        {
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
                        let head = RequestHead::new(request.uri(), request.headers());
                        let outcome = auth.authenticate(head).await;
                        (outcome, request)
                    }),
                    inner,
                )
            }
        }
    }
}

/// A guarded tonic service keeps its service name, so it goes on a server beside
/// services that are not guarded: `Server::builder().add_service(SessionGuard::new(svc,
/// auth))`.
#[cfg(feature = "tonic")]
impl<S: tonic::server::NamedService> tonic::server::NamedService for SessionGuard<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
    use http_body_util::BodyExt as _;
    use tower::{ServiceBuilder, ServiceExt as _};

    use super::*;
    use crate::context::AuthContext;
    use crate::liveness::InMemoryLiveness;
    use crate::test_tokens::{token, verifier};

    async fn echo(request: Request<String>) -> Result<Response<String>, Infallible> {
        let context = request.extensions().get::<AuthContext>().unwrap();
        Ok(Response::new(format!(
            "{} {}",
            context.user_id(),
            context.session_id()
        )))
    }

    fn guard(store: &InMemoryLiveness) -> SessionGuardLayer {
        SessionGuardLayer::new(Authenticator::new(verifier(), store.clone()))
    }

    fn request(authorization: Option<&str>) -> Request<String> {
        let mut builder = Request::builder();
        if let Some(value) = authorization {
            builder = builder.header(AUTHORIZATION, value);
        }
        builder.body(String::new()).unwrap()
    }

    async fn body(response: Response<ResponseBody<String>>) -> Bytes {
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_valid_token_reaches_the_service_with_its_context() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let service = ServiceBuilder::new().layer(guard(&store)).service_fn(echo);
        let bearer = format!("Bearer {}", token("u1", "s1"));
        // Twice: the first goes through the async path, the second through the cache.
        for _ in 0..2 {
            let response = service
                .clone()
                .oneshot(request(Some(&bearer)))
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(body(response).await, "u1 s1");
        }
    }

    #[tokio::test]
    async fn refusals_are_ok_responses_with_status_and_challenge() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        store.insert("s2", "u1", None);
        store.revoke("s2");
        let service = ServiceBuilder::new().layer(guard(&store)).service_fn(echo);
        let revoked = format!("Bearer {}", token("u1", "s2"));
        for (authorization, status, challenge) in [
            (None, 401, "Bearer"),
            (Some("Bearer"), 400, "Bearer error=\"invalid_request\""),
            (
                Some("Bearer not-a-jwt"),
                401,
                "Bearer error=\"invalid_token\"",
            ),
            (
                Some(revoked.as_str()),
                401,
                "Bearer error=\"invalid_token\"",
            ),
        ] {
            let response = service
                .clone()
                .oneshot(request(authorization))
                .await
                .unwrap();
            assert_eq!(response.status(), status, "{authorization:?}");
            let header = response.headers()[WWW_AUTHENTICATE].to_str().unwrap();
            assert!(header.starts_with(challenge), "{authorization:?}: {header}");
            assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
            let json: serde_json::Value = serde_json::from_slice(&body(response).await).unwrap();
            assert!(json["error"].is_string() && json["message"].is_string());
        }
    }

    #[tokio::test]
    async fn the_inner_error_type_is_unchanged() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let service = ServiceBuilder::new()
            .layer(guard(&store))
            .service_fn(|_: Request<String>| async { Err::<Response<String>, _>("inner failed") });
        let bearer = format!("Bearer {}", token("u1", "s1"));
        let error = service.oneshot(request(Some(&bearer))).await.unwrap_err();
        assert_eq!(error, "inner failed");
    }

    #[tokio::test]
    async fn grpc_requests_are_refused_with_a_grpc_status() {
        let store = InMemoryLiveness::new();
        let service = ServiceBuilder::new().layer(guard(&store)).service_fn(echo);
        let request = Request::builder()
            .header(CONTENT_TYPE, "application/grpc")
            .body(String::new())
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["grpc-status"], "16");
        assert!(body(response).await.is_empty());
    }
}

/// A raw hyper server (no framework) behind the layer, over real TCP.
#[cfg(test)]
mod hyper_tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, ORIGIN};
    use http::{Request, Response};
    use http_body_util::{BodyExt as _, Full};
    use hyper::body::Incoming;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceBuilder;

    use crate::test_tokens::{token, verifier};
    use crate::{AuthContext, Authenticator, InMemoryLiveness, SessionGuardLayer};

    async fn hello(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let user = request
            .extensions()
            .get::<AuthContext>()
            .unwrap()
            .user_id()
            .clone();
        Ok(Response::new(Full::new(Bytes::from(format!(
            "hello {user}"
        )))))
    }

    #[tokio::test]
    async fn a_plain_hyper_service_is_guarded() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let service = ServiceBuilder::new()
            .layer(SessionGuardLayer::new(Authenticator::new(
                verifier(),
                store.clone(),
            )))
            .service_fn(hello);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let service = TowerToHyperService::new(service.clone());
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });

        let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let send = |headers: Vec<(http::HeaderName, String)>| {
            let mut request = Request::get(format!("http://{addr}/"));
            for (name, value) in headers {
                request = request.header(name, value);
            }
            http.request(request.body(Full::default()).unwrap())
        };

        let bearer = format!("Bearer {}", token("u1", "s1"));
        let ok = send(vec![(AUTHORIZATION, bearer.clone())]).await.unwrap();
        assert_eq!(ok.status(), 200);
        let body = ok.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello u1");

        store.revoke("s1");
        assert_eq!(
            send(vec![(AUTHORIZATION, bearer)]).await.unwrap().status(),
            401
        );

        // A gRPC client sees a gRPC status, not an opaque HTTP 401.
        let grpc = send(vec![(CONTENT_TYPE, "application/grpc".into())])
            .await
            .unwrap();
        assert_eq!(grpc.status(), 200);
        assert_eq!(grpc.headers()["grpc-status"], "16");
    }

    /// HTTP/2 has no `Host` header: the authority travels in the URI (`:authority`), and
    /// that is what a cookie request's `Origin` must match.
    #[tokio::test]
    async fn a_cookie_over_http2_is_refused_from_another_origin() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let auth = Authenticator::new(verifier(), store)
            .with_token_source(crate::TokenSource::cookie("sg_access"));
        let service = ServiceBuilder::new()
            .layer(SessionGuardLayer::new(auth))
            .service_fn(hello);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let service = TowerToHyperService::new(service.clone());
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });

        let http = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http::<Full<Bytes>>();
        let cookie = format!("sg_access={}", token("u1", "s1"));
        for (origin, status) in [
            (None, 200),
            (Some(format!("http://{addr}")), 200),
            (Some("http://evil.example".to_owned()), 403),
            (Some(format!("https://{addr}")), 403),
            (Some(format!("http://127.0.0.1:{}", addr.port() + 1)), 403),
        ] {
            let mut request = Request::get(format!("http://{addr}/")).header(COOKIE, &cookie);
            if let Some(origin) = &origin {
                request = request.header(ORIGIN, origin);
            }
            let response = http
                .request(request.body(Full::default()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.version(), http::Version::HTTP_2);
            assert_eq!(response.status(), status, "Origin {origin:?}");
        }
    }
}
