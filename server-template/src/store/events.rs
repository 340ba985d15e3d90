//! `security_events`: what happened, to whom, from where. Never a secret or a token.

use std::net::IpAddr;
use std::time::Duration;

use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::sessions::interval;
use crate::error::ServiceError;

const INSERT: &str = "INSERT INTO security_events (kind, user_id, session_id, ip, detail) \
                      VALUES ($1, $2, $3, $4, $5)";
/// Served by `security_events_by_session_kind` (migration V4).
const COUNT_FOR_SESSION: &str =
    "SELECT count(*) FROM security_events WHERE session_id = $1 AND kind = $2";
/// Deletes up to `$2` events older than `$1`; served by `security_events_occurred_at`.
const PURGE_BATCH: &str = "DELETE FROM security_events WHERE id IN ( \
       SELECT id FROM security_events WHERE occurred_at < now() - $1::text::interval LIMIT $2)";

/// What a security event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A login with an unknown email or a wrong password.
    LoginFailed,
    /// Sessions were revoked (by their user, a password change, or too many failures).
    SessionsRevoked,
    /// The password was changed.
    PasswordChanged,
    /// A password change gave the wrong current password.
    PasswordChangeFailed,
}

impl EventKind {
    /// The `kind` column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoginFailed => "login_failed",
            Self::SessionsRevoked => "sessions_revoked",
            Self::PasswordChanged => "password_changed",
            Self::PasswordChangeFailed => "password_change_failed",
        }
    }
}

/// Records an event.
pub async fn record(
    client: &impl GenericClient,
    kind: EventKind,
    user: Option<Uuid>,
    session: Option<Uuid>,
    ip: Option<IpAddr>,
    detail: serde_json::Value,
) -> Result<(), ServiceError> {
    let statement = client.prepare_cached(INSERT).await?;
    client
        .execute(&statement, &[&kind.as_str(), &user, &session, &ip, &detail])
        .await?;
    Ok(())
}

/// How many events of `kind` the session has.
pub async fn count_for_session(
    client: &impl GenericClient,
    session: Uuid,
    kind: EventKind,
) -> Result<u64, ServiceError> {
    let statement = client.prepare_cached(COUNT_FOR_SESSION).await?;
    let count: i64 = client
        .query_one(&statement, &[&session, &kind.as_str()])
        .await?
        .get(0);
    Ok(count.unsigned_abs())
}

/// Deletes one batch of events that happened more than `retention` ago.
pub async fn purge_batch(
    client: &impl GenericClient,
    retention: Duration,
    batch: i64,
) -> Result<u64, ServiceError> {
    let statement = client.prepare_cached(PURGE_BATCH).await?;
    Ok(client
        .execute(&statement, &[&interval(retention), &batch])
        .await?)
}
