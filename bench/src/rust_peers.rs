//! The Rust peers of figure 7, each guarding the same axum hello route as
//! [`hello`](crate::hello) in a child of its own (`portcullis-bench serve-hello --mode ...`):
//!
//! | mode | guard |
//! |---|---|
//! | `jwt-authorizer` | `jwt_authorizer::Authorizer` with the harness's Ed25519 key as a JWKS: the signature and claims, nothing else |
//! | `tower-sessions` | `tower_sessions::SessionManagerLayer` on `PostgresStore`: the session cookie looked up in PostgreSQL on every request |
//! | `tower-sessions-cached` | the same on `CachingSessionStore<MokaStore, PostgresStore>`: a process-local cache in front of PostgreSQL |
//!
//! jwt-authorizer's newest release (0.15) is built on axum 0.7, so its own tower layer
//! does not fit an axum 0.8 router; the guard here is an axum 0.8 middleware that calls
//! the same `Authorizer::extract_token` and `Authorizer::check_auth` its layer calls. The
//! tower-sessions services also serve `POST /login`, which puts a user into a new session
//! and answers with its cookie: how the harness gets sessions to present.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use jwt_authorizer::{Authorizer, JwtAuthorizer, RegisteredClaims, Validation};
use tower_sessions::{CachingSessionStore, Session, SessionManagerLayer, SessionStore};
use tower_sessions_moka_store::MokaStore;
use tower_sessions_sqlx_store::PostgresStore;

use crate::{Result, tokens};

/// The route that opens a tower-sessions session.
pub(crate) const LOGIN_PATH: &str = "/login";
/// The name of tower-sessions' cookie (its default, written out for the harness).
pub(crate) const SESSION_COOKIE: &str = "id";
/// Where the tower-sessions store keeps its rows (its defaults, written out for the
/// harness, which deletes rows to revoke sessions).
pub(crate) const SESSION_TABLE: &str = "tower_sessions.session";
/// Sessions each process's Moka cache holds at most.
const CACHE_CAPACITY: u64 = 100_000;
/// Connections of each tower-sessions process's sqlx pool: the same as the naive guard's.
const POOL_SIZE: u32 = 16;
/// The key a logged-in session holds.
const USER_KEY: &str = "user";

/// The harness's Ed25519 public key as a one-key JWKS, as a server would publish it.
pub(crate) fn eddsa_jwks() -> Result<String> {
    let spki = pem::parse(tokens::ED25519_PUBLIC_PEM)?;
    // An Ed25519 SubjectPublicKeyInfo ends with the 32 bytes of the key.
    let key = spki
        .contents()
        .get(spki.contents().len().saturating_sub(32)..)
        .filter(|key| key.len() == 32)
        .ok_or("the Ed25519 public key is too short")?;
    Ok(serde_json::json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
        "kid": tokens::ED25519_KID, "x": URL_SAFE_NO_PAD.encode(key),
    }]})
    .to_string())
}

/// `app` behind jwt-authorizer, trusting the harness's EdDSA key with its `iss` and `aud`.
pub(crate) async fn jwt_authorizer(app: Router) -> Result<Router> {
    let authorizer = JwtAuthorizer::<RegisteredClaims>::from_jwks_text(&eddsa_jwks()?)
        .validation(
            Validation::new()
                .iss(&[tokens::ISSUER])
                .aud(&[tokens::ISSUER]),
        )
        .build()
        .await?;
    Ok(app.layer(axum::middleware::from_fn_with_state(
        Arc::new(authorizer),
        check_token,
    )))
}

/// What jwt-authorizer's layer does per request: the bearer token, checked, or 401.
async fn check_token(
    State(authorizer): State<Arc<Authorizer<RegisteredClaims>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = authorizer.extract_token(request.headers()) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    match authorizer.check_auth(&token).await {
        Ok(_) => next.run(request).await,
        Err(_) => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// How a tower-sessions process keeps its sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionStorage {
    /// `PostgresStore` alone: every request reads PostgreSQL.
    Postgres,
    /// `MokaStore` in front of `PostgresStore`.
    CachedPostgres,
}

/// `app` (its hello route now requiring a logged-in session) behind tower-sessions on
/// `database_url`, plus [`LOGIN_PATH`]; creates the store's table when missing.
pub(crate) async fn tower_sessions(
    app: Router,
    database_url: &str,
    storage: SessionStorage,
) -> Result<Router> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .connect(database_url)
        .await?;
    let postgres = PostgresStore::new(pool);
    postgres.migrate().await?;
    Ok(match storage {
        SessionStorage::Postgres => with_sessions(app, postgres),
        SessionStorage::CachedPostgres => with_sessions(
            app,
            CachingSessionStore::new(MokaStore::new(Some(CACHE_CAPACITY)), postgres),
        ),
    })
}

fn with_sessions<S: SessionStore + Clone>(app: Router, store: S) -> Router {
    app.route_layer(axum::middleware::from_fn(require_user))
        .route(LOGIN_PATH, post(log_in))
        .layer(SessionManagerLayer::new(store).with_secure(false))
}

/// 401 unless the session holds a user.
async fn require_user(session: Session, request: Request, next: Next) -> Response {
    match session.get::<u64>(USER_KEY).await {
        Ok(Some(_)) => next.run(request).await,
        Ok(None) => StatusCode::UNAUTHORIZED.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// Puts a user into the (new) session; tower-sessions saves it and sets the cookie.
async fn log_in(session: Session) -> StatusCode {
    match session.insert(USER_KEY, 1_u64).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello_app() -> Router {
        Router::new().route("/hello", axum::routing::get(|| async { "hello\n" }))
    }

    #[test]
    fn the_jwks_carries_the_raw_ed25519_key() {
        let jwks: serde_json::Value = serde_json::from_str(&eddsa_jwks().unwrap()).unwrap();
        let x = jwks["keys"][0]["x"].as_str().unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(x).unwrap().len(), 32);
        assert_eq!(jwks["keys"][0]["kid"], tokens::ED25519_KID);
    }

    #[tokio::test]
    async fn jwt_authorizer_accepts_the_harness_tokens_and_refuses_others() {
        use tower::ServiceExt as _;
        let app = jwt_authorizer(hello_app()).await.unwrap();
        let signer = tokens::Signer::eddsa().unwrap();
        let token = signer
            .sign("user", "session", tokens::unix_now(), 60)
            .unwrap();
        let request = |value: Option<String>| {
            let mut builder = http::Request::get("/hello");
            if let Some(value) = value {
                builder = builder.header(http::header::AUTHORIZATION, value);
            }
            builder.body(axum::body::Body::empty()).unwrap()
        };
        let ok = app
            .clone()
            .oneshot(request(Some(format!("Bearer {token}"))))
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        let tampered = format!("Bearer {token}x");
        let refused = app.clone().oneshot(request(Some(tampered))).await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let missing = app.oneshot(request(None)).await.unwrap();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    }
}
