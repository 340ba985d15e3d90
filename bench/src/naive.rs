//! The naive layer the design is measured against: it checks the signature of every
//! request and asks PostgreSQL about the session on every request (no cache, no
//! notifications), as a hand-written axum middleware would.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use http::StatusCode;
use http::header::AUTHORIZATION;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;
use tokio_postgres::NoTls;

use crate::Result;
use crate::tokens::{ED25519_PUBLIC_PEM, ISSUER};

/// Connections in the naive layer's pool: enough that the pool is never what waits.
const POOL_SIZE: usize = 16;

const LIVE_SQL: &str = "\
SELECT revoked_at IS NULL AND least(idle_expires_at, absolute_expires_at) > now()
  FROM sessions WHERE id = $1 AND user_id = $2";

#[derive(Deserialize)]
struct Claims {
    sub: String,
    sid: String,
}

/// The naive check: EdDSA signature and claims, then one query, every request.
#[derive(Clone)]
pub(crate) struct NaiveGuard {
    inner: Arc<Inner>,
}

struct Inner {
    key: DecodingKey,
    validation: Validation,
    pool: Pool,
}

impl NaiveGuard {
    /// A guard trusting the EdDSA test key, querying the database `config` names.
    pub(crate) fn new(config: tokio_postgres::Config) -> Result<Self> {
        let mut validation = Validation::new(jsonwebtoken::Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                key: DecodingKey::from_ed_pem(ED25519_PUBLIC_PEM)?,
                validation,
                pool,
            }),
        })
    }

    /// `Ok` when `token` is valid and its session live; else the status.
    async fn check(&self, token: Option<String>) -> Result<(), StatusCode> {
        let token = token.ok_or(StatusCode::UNAUTHORIZED)?;
        let claims =
            jsonwebtoken::decode::<Claims>(&token, &self.inner.key, &self.inner.validation)
                .map_err(|_| StatusCode::UNAUTHORIZED)?
                .claims;
        let (Ok(session), Ok(user)) = (
            uuid::Uuid::parse_str(&claims.sid),
            uuid::Uuid::parse_str(&claims.sub),
        ) else {
            return Err(StatusCode::UNAUTHORIZED);
        };
        let unavailable = |_| StatusCode::SERVICE_UNAVAILABLE;
        let client = self.inner.pool.get().await.map_err(unavailable)?;
        let statement = client
            .prepare_cached(LIVE_SQL)
            .await
            .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
        let row = client
            .query_opt(&statement, &[&session, &user])
            .await
            .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
        match row {
            Some(row) if row.get::<_, bool>(0) => Ok(()),
            _ => Err(StatusCode::UNAUTHORIZED),
        }
    }
}

/// The middleware: `axum::middleware::from_fn_with_state(guard, naive::guard)`.
pub(crate) async fn guard(
    State(guard): State<NaiveGuard>,
    request: Request,
    next: Next,
) -> Response {
    // Owned, so that no borrow of the (not `Sync`) request is held across an await.
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_owned);
    match guard.check(token).await {
        Ok(()) => next.run(request).await,
        Err(status) => status.into_response(),
    }
}
