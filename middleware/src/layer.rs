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
use std::time::Duration;

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::assurance::{Aal, AssuranceRequirement};
use crate::authenticator::Authenticator;
use crate::body::ResponseBody;
use crate::extract::RequestHead;
use crate::future::ResponseFuture;

use crate::context::AuthContext;
use crate::error::AuthError;

/// Adds [`SessionGuard`] to a service. Cheap to clone.
///
/// By default any valid token of a live session passes. [`require_aal`](Self::require_aal)
/// and [`max_auth_age`](Self::max_auth_age) ask more of the user's authentication (step-up,
/// see [`AssuranceRequirement`]); clones share the authenticator and its caches, so one
/// layer per requirement costs nothing extra:
///
/// ```
/// # portcullis::install_crypto_provider();
/// use std::time::Duration;
/// use portcullis::{Aal, Authenticator, InMemoryLiveness, KeySet, SessionGuardLayer,
///     TokenVerifier, VerificationKey};
///
/// # let keys = KeySet::new([VerificationKey::hmac("k1", &[7; 32]).unwrap()]);
/// # let verifier = TokenVerifier::builder(keys).issuer("iss").audience("aud").build();
/// let guard = SessionGuardLayer::new(Authenticator::new(verifier, InMemoryLiveness::new()));
/// // A second factor, used within the last ten minutes.
/// let privileged = guard
///     .clone()
///     .require_aal(Aal::Aal2)
///     .max_auth_age(Duration::from_secs(600));
/// # let _ = (guard, privileged);
/// ```
#[derive(Debug, Clone)]
pub struct SessionGuardLayer {
    auth: Authenticator,
    requirement: AssuranceRequirement,
}

impl SessionGuardLayer {
    /// A layer that authenticates every request with `auth`.
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

impl<S> Layer<S> for SessionGuardLayer {
    type Service = SessionGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionGuard::new(inner, self.auth.clone()).with_requirement(self.requirement)
    }
}

/// Authenticates each request before the inner service sees it.
#[derive(Debug, Clone)]
pub struct SessionGuard<S> {
    inner: S,
    auth: Authenticator,
    requirement: AssuranceRequirement,
}

impl<S> SessionGuard<S> {
    /// Wraps `inner`; any valid token of a live session passes.
    pub fn new(inner: S, auth: Authenticator) -> Self {
        Self {
            inner,
            auth,
            requirement: AssuranceRequirement::new(),
        }
    }

    /// Requires all of `requirement` of the user's authentication, as
    /// [`SessionGuardLayer::require_aal`] and [`SessionGuardLayer::max_auth_age`] do.
    #[must_use]
    pub fn with_requirement(mut self, requirement: AssuranceRequirement) -> Self {
        self.requirement = requirement;
        self
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
        let requirement = self.requirement;
        let cached = self
            .auth
            .authenticate_cached(RequestHead::new(request.uri(), request.headers()))
            .map(|outcome| outcome.and_then(|context| meets(requirement, context)));
        match cached {
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
                        (
                            outcome.and_then(|context| meets(requirement, context)),
                            request,
                        )
                    }),
                    inner,
                )
            }
        }
    }
}

/// `context` if it meets `requirement`: checked after the token and the session, so the
/// challenge, which names the requirement, only goes to holders of a valid token.
fn meets(
    requirement: AssuranceRequirement,
    context: AuthContext,
) -> Result<AuthContext, AuthError> {
    requirement.check(&context).map(|()| context)
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

/// `require_aal` and `max_auth_age` on the Tower layer: RFC 9470 challenges, on the path
/// that verifies a token and on the one that answers from memory.
#[cfg(test)]
mod step_up_tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
    use http::{Request, Response, StatusCode};
    use http_body_util::BodyExt as _;
    use serde_json::{Value, json};
    use tower::{ServiceBuilder, ServiceExt as _};

    use crate::test_tokens::{now, token_with};
    use crate::{Aal, AuthContext, Authenticator, InMemoryLiveness, SessionGuardLayer};

    const LEVEL: &str = r#"Bearer error="insufficient_user_authentication", error_description="a stronger authentication is required", acr_values="aal2""#;
    const AGE: &str = r#"Bearer error="insufficient_user_authentication", error_description="a more recent authentication is required", max_age=600"#;
    const AGE_ON_BOTH: &str = r#"Bearer error="insufficient_user_authentication", error_description="a more recent authentication is required", acr_values="aal2", max_age=600"#;
    const LEVEL_ON_BOTH: &str = r#"Bearer error="insufficient_user_authentication", error_description="a stronger authentication is required", acr_values="aal2", max_age=600"#;
    const BOTH: &str = r#"Bearer error="insufficient_user_authentication", error_description="a stronger and more recent authentication is required", acr_values="aal2", max_age=600"#;
    const INVALID: &str =
        r#"Bearer error="invalid_token", error_description="the access token is invalid""#;

    async fn echo(request: Request<String>) -> Result<Response<String>, Infallible> {
        let context = request.extensions().get::<AuthContext>().unwrap();
        Ok(Response::new(format!(
            "{} {:?}",
            context.aal(),
            context.amr()
        )))
    }

    /// What one request got: the status and the challenge, if any.
    async fn send(layer: &SessionGuardLayer, token: &str, grpc: bool) -> Response<Vec<u8>> {
        let service = ServiceBuilder::new().layer(layer.clone()).service_fn(echo);
        let mut request = Request::builder().header(AUTHORIZATION, format!("Bearer {token}"));
        if grpc {
            request = request.header(CONTENT_TYPE, "application/grpc");
        }
        let response = service
            .oneshot(request.body(String::new()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes().to_vec();
        Response::from_parts(parts, body)
    }

    fn challenge(response: &Response<Vec<u8>>) -> Option<&str> {
        response
            .headers()
            .get(WWW_AUTHENTICATE)
            .map(|value| value.to_str().unwrap())
    }

    #[tokio::test]
    #[allow(clippy::too_many_lines, reason = "one table of cases")]
    async fn tokens_that_fall_short_get_an_rfc_9470_challenge_on_both_paths() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let plain =
            SessionGuardLayer::new(Authenticator::new(crate::test_tokens::verifier(), store));
        let aal2 = plain.clone().require_aal(Aal::Aal2);
        let recent = plain.clone().max_auth_age(Duration::from_secs(600));
        let both = aal2.clone().max_auth_age(Duration::from_secs(600));
        let now = now();
        let fresh = |aal: &str| json!({"aal": aal, "amr": ["pwd"], "auth_time": now - 5});
        let stale = |aal: &str| json!({"aal": aal, "amr": ["pwd"], "auth_time": now - 700});
        let cases: [(&str, &SessionGuardLayer, Value, Option<&str>); 17] = [
            ("aal1 on a plain route", &plain, fresh("aal1"), None),
            ("no claims on a plain route", &plain, json!({}), None),
            ("aal1 on an aal2 route", &aal2, fresh("aal1"), Some(LEVEL)),
            ("aal2 on an aal2 route", &aal2, stale("aal2"), None),
            (
                "no aal on an aal2 route",
                &aal2,
                json!({"auth_time": now}),
                Some(LEVEL),
            ),
            ("fresh on a recent route", &recent, fresh("aal1"), None),
            ("stale on a recent route", &recent, stale("aal2"), Some(AGE)),
            (
                "no auth_time on a recent route",
                &recent,
                json!({"aal": "aal2", "iat": now}),
                Some(AGE),
            ),
            ("aal2 fresh on both", &both, fresh("aal2"), None),
            (
                "aal2 stale on both",
                &both,
                stale("aal2"),
                Some(AGE_ON_BOTH),
            ),
            (
                "aal1 fresh on both",
                &both,
                fresh("aal1"),
                Some(LEVEL_ON_BOTH),
            ),
            ("aal1 stale on both", &both, stale("aal1"), Some(BOTH)),
            ("no claims on both", &both, json!({}), Some(BOTH)),
            (
                "aal9 on a plain route",
                &plain,
                json!({"aal": "aal9"}),
                Some(INVALID),
            ),
            (
                "aal9 on both",
                &both,
                json!({"aal": "aal9", "auth_time": now}),
                Some(INVALID),
            ),
            (
                "auth_time as text",
                &recent,
                json!({"auth_time": "yesterday"}),
                Some(INVALID),
            ),
            (
                "unknown amr on both",
                &both,
                json!({"aal": "aal2", "amr": ["hwk", "x-corp"], "auth_time": now}),
                None,
            ),
        ];
        for (what, layer, extra, expected) in cases {
            let token = token_with("u1", "s1", &extra);
            // The first request verifies the token, the second is answered from memory.
            for round in ["verified", "cached"] {
                let response = send(layer, &token, false).await;
                match expected {
                    None => {
                        assert_eq!(response.status(), StatusCode::OK, "{what}, {round}");
                        assert!(challenge(&response).is_none(), "{what}");
                    }
                    Some(header) => {
                        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
                        assert_eq!(challenge(&response), Some(header), "{what}, {round}");
                        let body: Value = serde_json::from_slice(response.body()).unwrap();
                        let code = if header == INVALID {
                            "invalid_token"
                        } else {
                            "insufficient_user_authentication"
                        };
                        assert_eq!(body["error"], code, "{what}");
                        if code != "invalid_token" {
                            let description = format!(
                                r#"error_description="{}""#,
                                body["message"].as_str().unwrap()
                            );
                            assert!(header.contains(&description), "{what}");
                        }
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn the_handler_sees_the_level_and_the_methods() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let layer =
            SessionGuardLayer::new(Authenticator::new(crate::test_tokens::verifier(), store))
                .require_aal(Aal::Aal2);
        let token = token_with(
            "u1",
            "s1",
            &json!({"aal": "aal2", "amr": ["pwd", "otp", "mfa"], "auth_time": now()}),
        );
        let response = send(&layer, &token, false).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            String::from_utf8(response.into_body()).unwrap(),
            r#"aal2 [AuthMethod("pwd"), AuthMethod("otp"), AuthMethod("mfa")]"#
        );
    }

    #[tokio::test]
    async fn grpc_requests_that_fall_short_get_unauthenticated_with_the_challenge() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let layer =
            SessionGuardLayer::new(Authenticator::new(crate::test_tokens::verifier(), store))
                .require_aal(Aal::Aal2);
        let token = token_with("u1", "s1", &json!({"aal": "aal1"}));
        for _ in 0..2 {
            let response = send(&layer, &token, true).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()["grpc-status"], "16");
            assert_eq!(
                response.headers()["grpc-message"],
                "a stronger authentication is required"
            );
            assert_eq!(challenge(&response), Some(LEVEL));
            assert!(response.body().is_empty());
        }
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

/// A real tonic server on loopback whose health service needs a recent second factor, and
/// a real tonic client: the refusal is `UNAUTHENTICATED` with the challenge's description
/// as its message and the challenge itself in its metadata.
#[cfg(all(test, feature = "tonic"))]
mod tonic_tests {
    use std::time::Duration;

    use serde_json::json;
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{Channel, Endpoint, Server};
    use tonic::{Code, Request};
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

    use crate::test_tokens::{now, token_with, verifier};
    use crate::{Aal, AssuranceRequirement, Authenticator, InMemoryLiveness, SessionGuard};

    async fn check(
        client: &mut HealthClient<Channel>,
        token: &str,
    ) -> Result<HealthCheckResponse, tonic::Status> {
        let mut request = Request::new(HealthCheckRequest {
            service: String::new(),
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        client.check(request).await.map(tonic::Response::into_inner)
    }

    #[tokio::test]
    async fn a_grpc_service_that_needs_a_recent_second_factor() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let auth = Authenticator::new(verifier(), store);
        let requirement = AssuranceRequirement::new()
            .require_aal(Aal::Aal2)
            .max_auth_age(Duration::from_secs(600));
        let (_reporter, health) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            Server::builder()
                .add_service(SessionGuard::new(health, auth).with_requirement(requirement))
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        let now = now();

        let stepped_up = token_with(
            "u1",
            "s1",
            &json!({"aal": "aal2", "amr": ["pwd", "otp", "mfa"], "auth_time": now - 10}),
        );
        for _ in 0..2 {
            check(&mut client, &stepped_up)
                .await
                .expect("a recent second factor passes");
        }

        for (claims, message, challenge) in [
            (
                json!({"aal": "aal1", "amr": ["pwd"], "auth_time": now}),
                "a stronger authentication is required",
                r#"Bearer error="insufficient_user_authentication", error_description="a stronger authentication is required", acr_values="aal2", max_age=600"#,
            ),
            (
                json!({"aal": "aal2", "auth_time": now - 3600}),
                "a more recent authentication is required",
                r#"Bearer error="insufficient_user_authentication", error_description="a more recent authentication is required", acr_values="aal2", max_age=600"#,
            ),
            (
                json!({}),
                "a stronger and more recent authentication is required",
                r#"Bearer error="insufficient_user_authentication", error_description="a stronger and more recent authentication is required", acr_values="aal2", max_age=600"#,
            ),
            (
                json!({"aal": "aal9", "auth_time": now}),
                "the access token is invalid, expired or revoked",
                r#"Bearer error="invalid_token", error_description="the access token is invalid""#,
            ),
        ] {
            let token = token_with("u1", "s1", &claims);
            for _ in 0..2 {
                let status = check(&mut client, &token).await.expect_err("falls short");
                assert_eq!(status.code(), Code::Unauthenticated, "{claims}");
                assert_eq!(status.message(), message, "{claims}");
                assert_eq!(
                    status
                        .metadata()
                        .get("www-authenticate")
                        .map(|v| v.to_str().unwrap()),
                    Some(challenge),
                    "{claims}"
                );
            }
        }
    }
}
