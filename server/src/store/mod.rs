//! The SQL, one module per table, run on pooled connections with prepared (cached)
//! statements. Handlers call these functions; they never build SQL.

use std::future::Future;
use std::time::Duration;

use crate::error::{ServiceError, StoreError};

tokio::task_local! {
    /// The longest one statement may take (`DATABASE_TIMEOUT_SECONDS`), for the work of
    /// one request or background job.
    static STATEMENT_BOUND: Duration;
}

/// The bound when no request set one: `DATABASE_TIMEOUT_SECONDS`'s default.
const DEFAULT_STATEMENT_BOUND: Duration = Duration::from_secs(5);

/// Runs `work` (a request's or a job's) with every statement bounded by `bound`.
pub fn with_statement_bound<F: Future>(
    bound: Duration,
    work: F,
) -> impl Future<Output = F::Output> {
    STATEMENT_BOUND.scope(bound, work)
}

/// The bound `work` runs under now, to hand on to work spawned from it.
pub fn statement_bound() -> Duration {
    STATEMENT_BOUND
        .try_with(|bound| *bound)
        .unwrap_or(DEFAULT_STATEMENT_BOUND)
}

/// One statement (or its preparation), bounded here, on the client's side: PostgreSQL's
/// own `statement_timeout` cannot fire when PostgreSQL (or a proxy before it) stalls, and
/// the request would wait for its own timeout instead.
pub(crate) async fn bounded<T>(
    work: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, ServiceError> {
    let limit = statement_bound();
    match tokio::time::timeout(limit, work).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(StoreError::TimedOut(limit).into()),
    }
}

pub mod account_tokens;
pub mod events;
pub mod factors;
pub mod mail_log;
pub mod outbox;
pub mod refresh;
pub mod sessions;
pub mod users;
