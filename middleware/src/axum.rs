//! The axum extractor: `AuthContext` as a handler argument, behind the Tower layer.
//!
//! ```
//! use portcullis::AuthContext;
//!
//! async fn me(auth: AuthContext) -> String {
//!     format!("user {} on session {}", auth.user_id(), auth.session_id())
//! }
//! let _routes: axum::Router = axum::Router::new().route("/me", axum::routing::get(me));
//! ```
//!
//! # Step-up
//!
//! A route that needs more of the user's authentication gets its own layer, with a
//! requirement; the layer goes on the route (or on a router of such routes), so each
//! request is authenticated once:
//!
//! ```
//! # portcullis::install_crypto_provider();
//! use std::time::Duration;
//! use axum::{Router, routing::{get, post}};
//! use portcullis::{Aal, Authenticator, InMemoryLiveness, KeySet, SessionGuardLayer,
//!     TokenVerifier, VerificationKey};
//!
//! # async fn me() {}
//! # async fn delete_account() {}
//! # let keys = KeySet::new([VerificationKey::hmac("k1", &[7; 32]).unwrap()]);
//! # let verifier = TokenVerifier::builder(keys).issuer("iss").audience("aud").build();
//! let guard = SessionGuardLayer::new(Authenticator::new(verifier, InMemoryLiveness::new()));
//! let privileged = guard.clone().require_aal(Aal::Aal2).max_auth_age(Duration::from_secs(600));
//! let app: Router = Router::new()
//!     .route("/me", get(me).layer(guard))
//!     .route("/account/delete", post(delete_account).layer(privileged));
//! ```
//!
//! Inside a handler, [`AssuranceRequirement::check`](crate::AssuranceRequirement::check)
//! does the same, and [`AuthError`] is an axum `IntoResponse`:
//! `requirement.check(&auth)?` in a handler returning `Result<_, AuthError>`.

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::context::AuthContext;
use crate::error::AuthError;

/// The handler asked for an [`AuthContext`] on a route without the
/// [`SessionGuardLayer`](crate::SessionGuardLayer): a wiring mistake, answered with 500.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("SessionGuardLayer is not installed on this route")]
pub struct MissingAuthContext;

impl IntoResponse for MissingAuthContext {
    fn into_response(self) -> Response {
        tracing::error!("{self}");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(http::header::CONTENT_TYPE, "application/json")],
            r#"{"error":"internal_error","message":"authentication is not configured for this route"}"#,
        )
            .into_response()
    }
}

/// A refusal returned from a handler answers as the layer would: the status, the
/// challenge and the JSON body.
impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        // A handler's answer is HTTP; gRPC requests are refused by the layer itself.
        self.to_response(&http::HeaderMap::new())
            .map(axum::body::Body::from)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthContext {
    type Rejection = MissingAuthContext;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AuthContext>()
            .cloned()
            .ok_or(MissingAuthContext)
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::routing::get;
    use http_body_util::{BodyExt as _, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use portcullis_testdb::TestDb;

    use crate::liveness::postgres::tests::{eventually, started};
    use crate::test_tokens::{token, verifier};
    use crate::{AuthContext, Authenticator, PostgresLiveness, SessionGuardLayer};

    async fn me(auth: AuthContext) -> String {
        format!("{} {}", auth.user_id(), auth.session_id())
    }

    #[tokio::test]
    async fn an_axum_app_behind_the_layer_over_tcp_honours_a_revocation() {
        let db = TestDb::new().await;
        let client = db.connect().await;
        let row = client
            .query_one(
                "WITH u AS (INSERT INTO users (email, password_hash) \
                 VALUES ('axum@example.com', 'x') RETURNING id) \
                 INSERT INTO sessions (user_id, idle_expires_at, absolute_expires_at) \
                 SELECT id, now() + interval '1 day', now() + interval '2 days' FROM u \
                 RETURNING user_id::text, id::text",
                &[],
            )
            .await
            .unwrap();
        let (user, session): (String, String) = (row.get(0), row.get(1));
        let store = started(PostgresLiveness::builder(db.config().clone().into())).await;
        let app = Router::new()
            .route("/me", get(me))
            .layer(SessionGuardLayer::new(Authenticator::new(
                verifier(),
                store.clone(),
            )));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let http = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
        let bearer = format!("Bearer {}", token(&user, &session));
        let get_me = |authorization: Option<String>| {
            let mut request = http::Request::get(format!("http://{addr}/me"));
            if let Some(value) = authorization {
                request = request.header(http::header::AUTHORIZATION, value);
            }
            let future = http.request(request.body(Empty::new()).unwrap());
            async move {
                let response = future.await.unwrap();
                let status = response.status().as_u16();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, String::from_utf8(body.to_vec()).unwrap())
            }
        };

        assert_eq!(get_me(None).await.0, 401);
        assert_eq!(
            get_me(Some(bearer.clone())).await,
            (200, format!("{user} {session}"))
        );

        let before = store.stats().notifications;
        client
            .execute(
                "UPDATE sessions SET revoked_at = now() WHERE id = $1::text::uuid",
                &[&session],
            )
            .await
            .unwrap();
        eventually("the notification", || store.stats().notifications > before).await;
        assert_eq!(get_me(Some(bearer)).await.0, 401);
    }

    #[tokio::test]
    async fn the_extractor_without_the_layer_is_a_clear_500() {
        use tower::ServiceExt as _;
        let app = Router::new().route("/me", get(me));
        let response = app
            .oneshot(
                http::Request::get("/me")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
    }
}

/// Step-up on axum over real TCP: a plain route, a route with its own privileged layer,
/// and a handler that checks a requirement itself.
#[cfg(test)]
mod step_up_tests {
    use std::time::Duration;

    use axum::Router;
    use axum::routing::{get, post};
    use http_body_util::{BodyExt as _, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use serde_json::json;

    use crate::test_tokens::{now, token_with, verifier};
    use crate::{
        Aal, AssuranceRequirement, AuthContext, AuthError, Authenticator, InMemoryLiveness,
        SessionGuardLayer,
    };

    async fn me(auth: AuthContext) -> String {
        format!("{} {}", auth.user_id(), auth.aal())
    }

    async fn export(auth: AuthContext) -> Result<&'static str, AuthError> {
        AssuranceRequirement::new()
            .max_auth_age(Duration::from_secs(60))
            .check(&auth)?;
        Ok("exported")
    }

    #[tokio::test]
    async fn routes_with_their_own_requirement_challenge_tokens_that_fall_short() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let guard = SessionGuardLayer::new(Authenticator::new(verifier(), store));
        let privileged = guard
            .clone()
            .require_aal(Aal::Aal2)
            .max_auth_age(Duration::from_secs(600));
        let app = Router::new()
            .route("/me", get(me).layer(guard.clone()))
            .route("/account/delete", post(me).layer(privileged))
            .route("/export", post(export).layer(guard));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let http = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
        let send = |method: http::Method, path: &str, token: &str| {
            let request = http::Request::builder()
                .method(method)
                .uri(format!("http://{addr}{path}"))
                .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Empty::new())
                .unwrap();
            let future = http.request(request);
            async move {
                let response = future.await.unwrap();
                let status = response.status().as_u16();
                let challenge = response
                    .headers()
                    .get(http::header::WWW_AUTHENTICATE)
                    .map(|v| v.to_str().unwrap().to_owned());
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, challenge, String::from_utf8(body.to_vec()).unwrap())
            }
        };
        let now = now();
        let password = token_with(
            "u1",
            "s1",
            &json!({"aal": "aal1", "amr": ["pwd"], "auth_time": now - 120}),
        );
        let second_factor = token_with(
            "u1",
            "s1",
            &json!({"aal": "aal2", "amr": ["pwd", "otp", "mfa"], "auth_time": now - 120}),
        );
        let legacy = token_with("u1", "s1", &json!({}));

        assert_eq!(send(http::Method::GET, "/me", &password).await.0, 200);
        assert_eq!(send(http::Method::GET, "/me", &legacy).await.2, "u1 aal1");

        let (status, challenge, body) =
            send(http::Method::POST, "/account/delete", &password).await;
        assert_eq!(status, 401);
        assert_eq!(
            challenge.as_deref(),
            Some(
                r#"Bearer error="insufficient_user_authentication", error_description="a stronger authentication is required", acr_values="aal2", max_age=600"#
            )
        );
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body,
            json!({
                "error": "insufficient_user_authentication",
                "message": "a stronger authentication is required",
            })
        );
        assert_eq!(
            send(http::Method::POST, "/account/delete", &second_factor).await,
            (200, None, "u1 aal2".to_owned())
        );
        let (status, challenge, _) = send(http::Method::POST, "/account/delete", &legacy).await;
        assert_eq!(status, 401);
        assert!(
            challenge
                .unwrap()
                .ends_with(r#"acr_values="aal2", max_age=600"#)
        );

        // In the handler: authenticated two minutes ago, but one minute is the limit.
        let (status, challenge, _) = send(http::Method::POST, "/export", &second_factor).await;
        assert_eq!(status, 401);
        assert_eq!(
            challenge.as_deref(),
            Some(
                r#"Bearer error="insufficient_user_authentication", error_description="a more recent authentication is required", max_age=60"#
            )
        );
        let just_now = token_with("u1", "s1", &json!({"auth_time": now}));
        assert_eq!(
            send(http::Method::POST, "/export", &just_now).await.2,
            "exported"
        );
    }
}
