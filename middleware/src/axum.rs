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

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::context::AuthContext;

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
