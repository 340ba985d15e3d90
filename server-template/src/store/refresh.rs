//! Refresh rotation: one call of `session_guard_rotate_refresh` (see migration V2), one
//! round trip, one short transaction.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::sessions::interval;
use crate::error::ServiceError;

const ROTATE: &str = "SELECT outcome, session_id, user_id, idle_expires_at, absolute_expires_at \
     FROM session_guard_rotate_refresh($1, $2, $3::text::interval, $4::text::interval, $5)";

/// What the rotation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Rotated: the successor is now current.
    Rotated,
    /// A retry inside the grace window: the successor is handed out again.
    Retried,
    /// A rotated token presented after the grace window: the session is now revoked.
    Reused,
    /// The session was revoked already.
    Revoked,
    /// The session is past its idle timeout or absolute lifetime.
    Expired,
    /// No such token.
    Unknown,
}

/// The outcome with the session it concerns (none for [`Outcome::Unknown`]).
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    /// What happened.
    pub outcome: Outcome,
    /// The session.
    pub session: Option<Uuid>,
    /// Its user.
    pub user: Option<Uuid>,
    /// When the session's refresh token stops working: its idle or absolute deadline.
    pub refresh_expires_at: Option<SystemTime>,
}

/// Rotates the token whose hash is `token_hash` to `successor_hash`.
pub async fn rotate(
    client: &impl GenericClient,
    token_hash: &[u8],
    successor_hash: &[u8],
    grace: Duration,
    idle: Duration,
    ip: Option<IpAddr>,
) -> Result<Rotation, ServiceError> {
    let statement = client.prepare_cached(ROTATE).await?;
    let row = client
        .query_one(
            &statement,
            &[
                &token_hash,
                &successor_hash,
                &interval(grace),
                &interval(idle),
                &ip,
            ],
        )
        .await?;
    let outcome = match row.get::<_, &str>(0) {
        "rotated" => Outcome::Rotated,
        "retried" => Outcome::Retried,
        "reused" => Outcome::Reused,
        "revoked" => Outcome::Revoked,
        "expired" => Outcome::Expired,
        _ => Outcome::Unknown,
    };
    let idle: Option<SystemTime> = row.get(3);
    let absolute: Option<SystemTime> = row.get(4);
    Ok(Rotation {
        outcome,
        session: row.get(1),
        user: row.get(2),
        refresh_expires_at: idle.zip(absolute).map(|(a, b)| a.min(b)),
    })
}
