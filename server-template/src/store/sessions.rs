//! `sessions`, with the refresh state each one carries (see `store::refresh`).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use deadpool_postgres::GenericClient;
use uuid::Uuid;

use crate::error::ServiceError;

/// A session with the stored hash of its first refresh token, in one statement.
const CREATE: &str = "INSERT INTO sessions (user_id, user_agent, device_label, device_name, ip, \
                             idle_expires_at, absolute_expires_at, refresh_hash) \
       VALUES ($1, $2, $3, $4, $5, now() + least($6::text::interval, $7::text::interval), \
               now() + $7::text::interval, $8) \
       RETURNING id, idle_expires_at";
const LIST_LIVE: &str = "SELECT id, device_name, device_label, user_agent, ip, created_at, \
       last_used_at FROM sessions \
     WHERE user_id = $1 AND revoked_at IS NULL \
       AND least(idle_expires_at, absolute_expires_at) > now() \
     ORDER BY last_used_at DESC";
const REVOKE_ONE: &str = "UPDATE sessions SET revoked_at = coalesce(revoked_at, now()), \
       revoked_reason = coalesce(revoked_reason, $3) \
     WHERE id = $1 AND user_id = $2";
const REVOKE_ALL_BUT: &str = "UPDATE sessions SET revoked_at = now(), revoked_reason = $3 \
     WHERE user_id = $1 AND revoked_at IS NULL AND id IS DISTINCT FROM $2 RETURNING id";
/// Deletes up to `$2` sessions that ended more than `$1` ago.
const PURGE_BATCH: &str = "DELETE FROM sessions WHERE id IN ( \
       SELECT id FROM sessions \
       WHERE least(revoked_at, idle_expires_at, absolute_expires_at) < now() - $1::text::interval \
       LIMIT $2)";

/// What a new session records about its device.
#[derive(Debug, Clone, Default)]
pub struct Device {
    /// The user agent, already cut to length.
    pub user_agent: Option<String>,
    /// The parser's label.
    pub label: Option<String>,
    /// The client's name for the device.
    pub name: Option<String>,
    /// The client IP.
    pub ip: Option<IpAddr>,
}

/// One live session, as listed to its user.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// The session id.
    pub id: Uuid,
    /// The client's name for the device.
    pub device_name: Option<String>,
    /// The parser's label.
    pub device_label: Option<String>,
    /// The user agent.
    pub user_agent: Option<String>,
    /// The last client IP.
    pub ip: Option<IpAddr>,
    /// When it was created (login).
    pub created_at: SystemTime,
    /// When it was last refreshed.
    pub last_used_at: SystemTime,
}

/// Creates a session whose first refresh token hashes to `token_hash`; returns its id
/// and idle deadline.
pub async fn create(
    client: &impl GenericClient,
    user: Uuid,
    device: &Device,
    idle: Duration,
    absolute: Duration,
    token_hash: &[u8],
) -> Result<(Uuid, SystemTime), ServiceError> {
    let statement = client.prepare_cached(CREATE).await?;
    let row = client
        .query_one(
            &statement,
            &[
                &user,
                &device.user_agent,
                &device.label,
                &device.name,
                &device.ip,
                &interval(idle),
                &interval(absolute),
                &token_hash,
            ],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// The user's live sessions, newest use first.
pub async fn list_live(
    client: &impl GenericClient,
    user: Uuid,
) -> Result<Vec<SessionRow>, ServiceError> {
    let statement = client.prepare_cached(LIST_LIVE).await?;
    let rows = client.query(&statement, &[&user]).await?;
    Ok(rows
        .iter()
        .map(|row| SessionRow {
            id: row.get(0),
            device_name: row.get(1),
            device_label: row.get(2),
            user_agent: row.get(3),
            ip: row.get(4),
            created_at: row.get(5),
            last_used_at: row.get(6),
        })
        .collect())
}

/// Revokes one of the user's sessions; `false` when the user has no such session.
pub async fn revoke_one(
    client: &impl GenericClient,
    user: Uuid,
    session: Uuid,
    reason: &str,
) -> Result<bool, ServiceError> {
    let statement = client.prepare_cached(REVOKE_ONE).await?;
    Ok(client
        .execute(&statement, &[&session, &user, &reason])
        .await?
        == 1)
}

/// Revokes every live session of the user but `keep`; returns the revoked ids.
pub async fn revoke_all_but(
    client: &impl GenericClient,
    user: Uuid,
    keep: Option<Uuid>,
    reason: &str,
) -> Result<Vec<Uuid>, ServiceError> {
    let statement = client.prepare_cached(REVOKE_ALL_BUT).await?;
    let rows = client.query(&statement, &[&user, &keep, &reason]).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Deletes one batch of sessions that ended more than `retention` ago.
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

/// A duration as a PostgreSQL interval literal PostgreSQL parses itself.
pub(crate) fn interval(duration: Duration) -> String {
    format!("{} milliseconds", duration.as_millis())
}
