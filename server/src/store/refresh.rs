//! Refresh rotation: one call of `session_guard_refresh` (see migration V3), one round
//! trip, one short transaction, one lookup of the session by its primary key.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::ids::{SessionId, UserId};
use deadpool_postgres::GenericClient;

use super::bounded;
use super::sessions::interval;
use crate::assurance::Assurance;
use crate::error::ServiceError;

/// The rotation, and beside it what the new access token must say of the session (its
/// assurance, migration V9) and the user agent it records, read by the session's primary
/// key in the same statement: still one round trip. `OFFSET 0` keeps the lateral lookup
/// a parameterised index scan per result row (the function's one row), never a join
/// the planner might turn into a scan of `sessions`.
const ROTATE: &str = "SELECT r.outcome, r.session_id, r.user_id, r.generation, r.current_hash, \
            r.idle_expires_at, r.absolute_expires_at, s.aal, s.amr, s.auth_time, s.user_agent \
     FROM session_guard_refresh($1, $2, $3, $4, $5, $6::text::interval, $7::text::interval, \
                                $8, $9) r \
     LEFT JOIN LATERAL (SELECT x.aal, x.amr, coalesce(x.auth_time, x.created_at) AS auth_time, \
                               x.user_agent \
                        FROM sessions x WHERE x.id = r.session_id OFFSET 0) s ON true";
const REVOKE_REUSED: &str = "SELECT session_guard_revoke_reused($1, $2, $3)";

/// What the rotation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Rotated: the successor is now current.
    Rotated,
    /// The previous token again, inside the grace window, from the client that rotated
    /// it: the successor is handed out again.
    Retried,
    /// The previous token from another client, after the grace window or over the retry
    /// bound: the session is now revoked.
    Reused,
    /// A token older than the previous one: the caller checks that it is genuine.
    Stale,
    /// The session was revoked already.
    Revoked,
    /// The session is past its idle timeout or absolute lifetime.
    Expired,
    /// No such session, or a token that is not of its chain.
    Unknown,
}

impl Outcome {
    /// The outcome `session_guard_refresh` named. Any other text means the schema and the
    /// server disagree: an internal error, never a quiet 401.
    fn from_sql(text: &str) -> Result<Self, ServiceError> {
        Ok(match text {
            "rotated" => Self::Rotated,
            "retried" => Self::Retried,
            "reused" => Self::Reused,
            "stale" => Self::Stale,
            "revoked" => Self::Revoked,
            "expired" => Self::Expired,
            "unknown" => Self::Unknown,
            other => {
                return Err(ServiceError::internal(
                    "reading session_guard_refresh's outcome",
                    format!("an outcome this server does not know: {other:?}"),
                ));
            }
        })
    }

    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rotated => "rotated",
            Self::Retried => "retried",
            Self::Reused => "reused",
            Self::Stale => "stale",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::Unknown => "unknown",
        }
    }
}

/// What the server derived from a presented token, and the rules to apply.
#[derive(Debug, Clone, Copy)]
pub struct RotateRequest<'a> {
    /// The session the token names (`None` for the old format).
    pub session: Option<SessionId>,
    /// The token's generation.
    pub generation: u32,
    /// The stored form of the token's secret.
    pub hash: &'a [u8],
    /// The stored form of its successor.
    pub next_hash: &'a [u8],
    /// The calling client's fingerprint.
    pub client: &'a [u8],
    /// How long the previous token may be retried.
    pub grace: Duration,
    /// How long the session lives without a refresh.
    pub idle: Duration,
    /// How many retries one rotation allows.
    pub max_retries: u32,
    /// The client's IP.
    pub ip: Option<IpAddr>,
}

/// The outcome with the session it concerns (none for [`Outcome::Unknown`]).
#[derive(Debug, Clone)]
pub struct Rotation {
    /// What happened.
    pub outcome: Outcome,
    /// The session.
    pub session: Option<SessionId>,
    /// Its user.
    pub user: Option<UserId>,
    /// The session's current generation, after the rotation.
    pub generation: Option<u32>,
    /// The stored hash of the current generation (used to check a stale token).
    pub current_hash: Option<Vec<u8>>,
    /// When the session's refresh token stops working: its idle or absolute deadline.
    pub refresh_expires_at: Option<SystemTime>,
    /// How the session's user last proved who they are.
    pub assurance: Option<Assurance>,
    /// The user agent the session records (of its sign-in, or its last step-up).
    pub user_agent: Option<String>,
}

/// Applies the rotation rules to the presented token.
pub async fn rotate(
    client: &impl GenericClient,
    request: &RotateRequest<'_>,
) -> Result<Rotation, ServiceError> {
    let statement = bounded(client.prepare_cached(ROTATE)).await?;
    let generation = sql_integer(request.generation);
    let max_retries = sql_integer(request.max_retries);
    let row = bounded(client.query_one(
        &statement,
        &[
            &request.session,
            &generation,
            &request.hash,
            &request.next_hash,
            &request.client,
            &interval(request.grace),
            &interval(request.idle),
            &max_retries,
            &request.ip,
        ],
    ))
    .await?;
    let idle: Option<SystemTime> = row.get(5);
    let absolute: Option<SystemTime> = row.get(6);
    let aal: Option<&str> = row.get(7);
    let amr: Option<Vec<String>> = row.get(8);
    let auth_time: Option<SystemTime> = row.get(9);
    let assurance = match (aal, amr, auth_time) {
        (Some(aal), Some(amr), Some(auth_time)) => {
            Some(Assurance::from_columns(aal, &amr, auth_time))
        }
        _ => None,
    };
    Ok(Rotation {
        outcome: Outcome::from_sql(row.get(0))?,
        session: row.get(1),
        user: row.get(2),
        generation: row
            .get::<_, Option<i32>>(3)
            .and_then(|g| u32::try_from(g).ok()),
        current_hash: row.get(4),
        refresh_expires_at: idle.zip(absolute).map(|(a, b)| a.min(b)),
        assurance,
        user_agent: row.get(10),
    })
}

/// Revokes a session whose genuine earlier token was presented; `true` when this call
/// revoked it (and recorded the `refresh_reuse` event).
pub async fn revoke_reused(
    client: &impl GenericClient,
    session: SessionId,
    generation: u32,
    ip: Option<IpAddr>,
) -> Result<bool, ServiceError> {
    let statement = bounded(client.prepare_cached(REVOKE_REUSED)).await?;
    let row =
        bounded(client.query_one(&statement, &[&session, &sql_integer(generation), &ip])).await?;
    Ok(row.get(0))
}

/// A count as PostgreSQL's `integer`; the parser already refuses larger generations.
fn sql_integer(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_reads_back_from_its_sql_text_and_others_are_errors() {
        for outcome in [
            Outcome::Rotated,
            Outcome::Retried,
            Outcome::Reused,
            Outcome::Stale,
            Outcome::Revoked,
            Outcome::Expired,
            Outcome::Unknown,
        ] {
            assert_eq!(Outcome::from_sql(outcome.as_str()).unwrap(), outcome);
        }
        assert!(matches!(
            Outcome::from_sql("forked"),
            Err(ServiceError::Internal { .. })
        ));
    }
}
