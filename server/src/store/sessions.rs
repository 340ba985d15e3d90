//! `sessions`, with the refresh state each one carries (see `store::refresh`).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::ids::{SessionId, UserId};
use deadpool_postgres::GenericClient;

use super::bounded;
use crate::assurance::{Aal, Assurance, aal_from_column};
use crate::error::ServiceError;

/// A session with the stored hash of its first refresh token, in one statement.
/// With how its user proved who they are (migration V9).
const CREATE: &str = "INSERT INTO sessions (user_id, user_agent, device_label, device_name, ip, \
                             idle_expires_at, absolute_expires_at, refresh_hash, \
                             aal, amr, auth_time) \
       VALUES ($1, $2, $3, $4, $5, now() + least($6::text::interval, $7::text::interval), \
               now() + $7::text::interval, $8, $9, $10, $11) \
       RETURNING id, idle_expires_at";
const LIST_LIVE: &str = "SELECT id, device_name, device_label, user_agent, ip, created_at, \
       last_used_at, aal FROM sessions \
     WHERE user_id = $1 AND revoked_at IS NULL \
       AND least(idle_expires_at, absolute_expires_at) > now() \
     ORDER BY last_used_at DESC";
/// Marks the session used now, at most every 30 s (so a page polling its list writes
/// little): last use moves with use, not only with refresh.
const TOUCH: &str = "UPDATE sessions SET last_used_at = now() \
     WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL \
       AND last_used_at < now() - interval '30 seconds'";
/// Revokes the session only while it is live: one that ended already is left as it is.
const REVOKE_ONE: &str = "UPDATE sessions SET revoked_at = now(), revoked_reason = $3 \
     WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL \
       AND least(idle_expires_at, absolute_expires_at) > now()";
const EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND user_id = $2)";
/// A new proof of who the user is on a live session (a step-up), and the client that gave
/// it, whose device the session now records.
const RECORD_PROOF: &str = "UPDATE sessions SET aal = $3, amr = $4, auth_time = $5, \
       user_agent = coalesce($6, user_agent), device_label = coalesce($7, device_label) \
     WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL \
       AND least(idle_expires_at, absolute_expires_at) > now()";
/// Whether the session is live, locking it until the transaction ends.
const LOCK_LIVE: &str = "SELECT revoked_at IS NULL AND least(idle_expires_at, absolute_expires_at) > now() \
     FROM sessions WHERE id = $1 AND user_id = $2 FOR UPDATE";
/// Whether a session of the user was last used (login or refresh) from the IP within
/// `$3`; a session revoked as stolen does not count. Served by `sessions_by_user_ip` (V4).
const USED_FROM: &str = "SELECT EXISTS (SELECT 1 FROM sessions \
     WHERE user_id = $1 AND ip = $2 AND last_used_at > now() - $3::text::interval \
       AND revoked_reason IS DISTINCT FROM $4)";
/// Revokes the user's live sessions but `$2` beyond the `$3` most recently used (ties:
/// the newest first). The outer `revoked_at IS NULL` is checked again on a row another
/// transaction revoked meanwhile, so its reason is not overwritten.
const REVOKE_BEYOND: &str = "UPDATE sessions SET revoked_at = now(), revoked_reason = $4 \
     WHERE revoked_at IS NULL AND id IN ( \
       SELECT id FROM sessions \
       WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL \
         AND least(idle_expires_at, absolute_expires_at) > now() \
       ORDER BY last_used_at DESC, created_at DESC, id DESC OFFSET $3) \
     RETURNING id";
/// Every session of the user, live or ended, newest first.
const LIST_ALL: &str = "SELECT id, device_name, device_label, ip, created_at, last_used_at, \
       revoked_at IS NOT NULL, revoked_reason, \
       least(idle_expires_at, absolute_expires_at) <= now() \
     FROM sessions WHERE user_id = $1 ORDER BY created_at DESC, id";
/// Ends every live session of a user (`$1`; of everyone when `NULL`) that started before
/// this transaction, but `$2`, for reason `$3`: one row of the revocation log and at most
/// one notification, however many sessions (V8). Returns how many ended, and the instant
/// the revocation covers.
const REVOKE_BEFORE: &str =
    "SELECT revoked, before FROM session_guard_revoke_sessions_before($1, $2, $3)";
/// Whether the user has any session at all (ended ones that are kept included), and
/// whether one of them came from the device label `$2` on the network of `$3` (the IPv4
/// /24, the IPv6 /64).
/// A revoked session does not make its device known: a device the owner signed out, or
/// one caught reusing a refresh token, alerts again when it signs in again.
const SIGNED_IN_BEFORE: &str = "SELECT count(*) > 0, coalesce(bool_or( \
       revoked_at IS NULL AND device_label IS NOT DISTINCT FROM $2 AND ip IS NOT NULL \
       AND set_masklen(ip, CASE family(ip) WHEN 4 THEN 24 ELSE 64 END) >>= $3::inet), false) \
     FROM sessions WHERE user_id = $1";
/// Whether `user` signed in before at all, and whether from `label` on the network of
/// `ip` in a session nobody revoked.
pub async fn signed_in_before(
    client: &impl GenericClient,
    user: UserId,
    label: Option<&str>,
    ip: IpAddr,
) -> Result<(bool, bool), ServiceError> {
    let statement = bounded(client.prepare_cached(SIGNED_IN_BEFORE)).await?;
    let row = bounded(client.query_one(&statement, &[&user, &label, &ip])).await?;
    Ok((row.get(0), row.get(1)))
}

/// Marks `session` of `user` used now (see [`TOUCH`]).
pub async fn touch(
    client: &impl GenericClient,
    user: UserId,
    session: SessionId,
) -> Result<(), ServiceError> {
    let statement = bounded(client.prepare_cached(TOUCH)).await?;
    bounded(client.execute(&statement, &[&session, &user])).await?;
    Ok(())
}

/// Deletes up to `$2` sessions that ended more than `$1` ago. The index
/// `sessions_ended_at_floor` (V6) finds them by `idle_expires_floor`, which is never later
/// than `idle_expires_at` (a refresh need not move an indexed column); the exact deadline
/// is checked on each row it finds.
const PURGE_BATCH: &str = "DELETE FROM sessions WHERE id IN ( \
       SELECT id FROM sessions \
       WHERE least(revoked_at, idle_expires_floor, absolute_expires_at) < now() - $1::text::interval \
         AND least(revoked_at, idle_expires_at, absolute_expires_at) < now() - $1::text::interval \
       LIMIT $2)";

/// Why a session was revoked: the `revoked_reason` column and the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// The user signed this session out.
    Logout,
    /// The user signed every session out.
    LogoutAll,
    /// The user signed this session out from another one.
    RevokedByUser,
    /// The user signed every other session out.
    RevokeOthers,
    /// The password was changed from another session.
    PasswordChange,
    /// Too many wrong current passwords were given from this session.
    PasswordChangeFailures,
    /// A rotated refresh token came back after the grace window (set by the rotation
    /// function in SQL).
    RefreshReuse,
    /// A newer login of the user would have exceeded `MAX_SESSIONS_PER_USER`, and this
    /// was among the least recently used.
    SessionLimit,
    /// An operator revoked it from the command line (`portcullis-server sessions revoke`).
    Operator,
    /// The password was reset through a mailed link: every session ends.
    PasswordReset,
    /// The user removed the account's last second factor: every other session ends.
    LastFactorRemoved,
}

impl RevokeReason {
    /// The column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::LogoutAll => "logout_all",
            Self::RevokedByUser => "revoked_by_user",
            Self::RevokeOthers => "revoke_others",
            Self::PasswordChange => "password_change",
            Self::PasswordChangeFailures => "password_change_failures",
            Self::RefreshReuse => "refresh_reuse",
            Self::SessionLimit => "session_limit",
            Self::Operator => "operator",
            Self::PasswordReset => "password_reset",
            Self::LastFactorRemoved => "last_factor_removed",
        }
    }

    /// The reason a `revoked_reason` value names; `None` for one this server does not
    /// write (an operator's plain SQL, say).
    pub fn from_column(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|reason| reason.as_str() == value)
    }

    /// Every reason.
    pub const ALL: [Self; 11] = [
        Self::Logout,
        Self::LogoutAll,
        Self::RevokedByUser,
        Self::RevokeOthers,
        Self::PasswordChange,
        Self::PasswordChangeFailures,
        Self::RefreshReuse,
        Self::SessionLimit,
        Self::Operator,
        Self::PasswordReset,
        Self::LastFactorRemoved,
    ];
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Neither revoked nor past a deadline.
    Live,
    /// Revoked, for this reason (`None`: a reason this server does not write, or none).
    Revoked(Option<RevokeReason>),
    /// Past its idle or absolute deadline without being revoked.
    Expired,
}

/// One session of a user, live or ended, as an operator lists it. Never a token hash.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// The session id.
    pub id: SessionId,
    /// Live, revoked or expired.
    pub state: SessionState,
    /// The parser's label.
    pub device_label: Option<String>,
    /// The client's name for the device.
    pub device_name: Option<String>,
    /// The last client IP.
    pub ip: Option<IpAddr>,
    /// When it was created (login).
    pub created_at: SystemTime,
    /// When it was last used (login or refresh).
    pub last_used_at: SystemTime,
}

/// What revoking one session found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// It was live and is now revoked.
    Revoked,
    /// It had ended already (revoked or expired): nothing changed.
    AlreadyEnded,
    /// The user has no such session.
    NotFound,
}

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
    pub id: SessionId,
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
    /// The assurance level of its last proof.
    pub aal: Aal,
}

/// Creates a session whose user proved who they are as `assurance` says, and whose first
/// refresh token hashes to `token_hash`; returns its id and idle deadline.
pub async fn create(
    client: &impl GenericClient,
    user: UserId,
    device: &Device,
    assurance: &Assurance,
    lifetime: (Duration, Duration),
    token_hash: &[u8],
) -> Result<(SessionId, SystemTime), ServiceError> {
    let (idle, absolute) = lifetime;
    let statement = bounded(client.prepare_cached(CREATE)).await?;
    let row = bounded(client.query_one(
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
            &assurance.aal.as_str(),
            &assurance.amr_values(),
            &assurance.auth_time,
        ],
    ))
    .await?;
    Ok((row.get(0), row.get(1)))
}

/// The user's live sessions, newest use first.
pub async fn list_live(
    client: &impl GenericClient,
    user: UserId,
) -> Result<Vec<SessionRow>, ServiceError> {
    let statement = bounded(client.prepare_cached(LIST_LIVE)).await?;
    let rows = bounded(client.query(&statement, &[&user])).await?;
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
            aal: aal_from_column(row.get(7)),
        })
        .collect())
}

/// Records a new proof of who the user of the live `session` is, given from `device`
/// (its user agent and label replace the session's, when known); whether the session was
/// live.
pub async fn record_proof(
    client: &impl GenericClient,
    user: UserId,
    session: SessionId,
    assurance: &Assurance,
    device: &Device,
) -> Result<bool, ServiceError> {
    let statement = client.prepare_cached(RECORD_PROOF).await?;
    let updated = client
        .execute(
            &statement,
            &[
                &session,
                &user,
                &assurance.aal.as_str(),
                &assurance.amr_values(),
                &assurance.auth_time,
                &device.user_agent,
                &device.label,
            ],
        )
        .await?;
    Ok(updated == 1)
}

/// Revokes one of the user's sessions if it is live.
pub async fn revoke_one(
    client: &impl GenericClient,
    user: UserId,
    session: SessionId,
    reason: RevokeReason,
) -> Result<Revocation, ServiceError> {
    let statement = bounded(client.prepare_cached(REVOKE_ONE)).await?;
    if bounded(client.execute(&statement, &[&session, &user, &reason.as_str()])).await? == 1 {
        return Ok(Revocation::Revoked);
    }
    let statement = bounded(client.prepare_cached(EXISTS)).await?;
    let exists: bool = bounded(client.query_one(&statement, &[&session, &user]))
        .await?
        .get(0);
    Ok(if exists {
        Revocation::AlreadyEnded
    } else {
        Revocation::NotFound
    })
}

/// Revokes the least recently used live sessions of the user, other than `keep`, so that
/// at most `cap` live ones remain with `keep` among them; returns the revoked ids.
pub async fn revoke_beyond_cap(
    client: &impl GenericClient,
    user: UserId,
    keep: SessionId,
    cap: u32,
    reason: RevokeReason,
) -> Result<Vec<SessionId>, ServiceError> {
    let others_kept = i64::from(cap.saturating_sub(1));
    let statement = bounded(client.prepare_cached(REVOKE_BEYOND)).await?;
    let rows =
        bounded(client.query(&statement, &[&user, &keep, &others_kept, &reason.as_str()])).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Every session of the user, live or ended (until the purge deletes it), newest first.
pub async fn list_all(
    client: &impl GenericClient,
    user: UserId,
) -> Result<Vec<SessionRecord>, ServiceError> {
    let statement = bounded(client.prepare_cached(LIST_ALL)).await?;
    let rows = bounded(client.query(&statement, &[&user])).await?;
    Ok(rows
        .iter()
        .map(|row| {
            let revoked: bool = row.get(6);
            let reason: Option<&str> = row.get(7);
            let expired: bool = row.get(8);
            let state = if revoked {
                SessionState::Revoked(reason.and_then(RevokeReason::from_column))
            } else if expired {
                SessionState::Expired
            } else {
                SessionState::Live
            };
            SessionRecord {
                id: row.get(0),
                state,
                device_name: row.get(1),
                device_label: row.get(2),
                ip: row.get(3),
                created_at: row.get(4),
                last_used_at: row.get(5),
            }
        })
        .collect())
}

/// Whose sessions a bulk revocation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkScope {
    /// Every live session of one user, but `except`.
    User {
        /// Whose.
        user: UserId,
        /// The session spared (the one that asked), if any.
        except: Option<SessionId>,
    },
    /// Every live session of every user.
    Everyone,
}

/// What a bulk revocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkRevoked {
    /// The sessions that were live and are now revoked.
    pub count: u64,
    /// Every session of the scope that started before this instant has ended (a session
    /// that started while the revocation committed too: the schema makes it wait, then
    /// start revoked).
    pub before: SystemTime,
}

/// Revokes every live session `scope` names that started before this transaction, as
/// one row in the revocation log and one message to the instances, however many.
pub async fn revoke_before(
    client: &impl GenericClient,
    scope: BulkScope,
    reason: RevokeReason,
) -> Result<BulkRevoked, ServiceError> {
    let (user, except) = match scope {
        BulkScope::User { user, except } => (Some(user), except),
        BulkScope::Everyone => (None, None),
    };
    let statement = bounded(client.prepare_cached(REVOKE_BEFORE)).await?;
    let row = bounded(client.query_one(&statement, &[&user, &except, &reason.as_str()])).await?;
    let count: i64 = row.get(0);
    Ok(BulkRevoked {
        count: u64::try_from(count).unwrap_or(0),
        before: row.get(1),
    })
}

/// Whether the user's session is live; it stays locked until the transaction ends, so
/// that what the caller does next cannot race its revocation.
pub async fn lock_live(
    client: &impl GenericClient,
    user: UserId,
    session: SessionId,
) -> Result<bool, ServiceError> {
    let statement = bounded(client.prepare_cached(LOCK_LIVE)).await?;
    let row = bounded(client.query_opt(&statement, &[&session, &user])).await?;
    Ok(row.is_some_and(|row| row.get(0)))
}

/// Whether a session of the user was used (logged in or refreshed) from `ip` within
/// `window`, and not revoked as stolen.
pub async fn used_from(
    client: &impl GenericClient,
    user: UserId,
    ip: IpAddr,
    window: Duration,
) -> Result<bool, ServiceError> {
    let statement = bounded(client.prepare_cached(USED_FROM)).await?;
    Ok(bounded(client.query_one(
        &statement,
        &[
            &user,
            &ip,
            &interval(window),
            &RevokeReason::RefreshReuse.as_str(),
        ],
    ))
    .await?
    .get(0))
}

/// Deletes one batch of sessions that ended more than `retention` ago.
pub async fn purge_batch(
    client: &impl GenericClient,
    retention: Duration,
    batch: i64,
) -> Result<u64, ServiceError> {
    let statement = bounded(client.prepare_cached(PURGE_BATCH)).await?;
    bounded(client.execute(&statement, &[&interval(retention), &batch])).await
}

/// A duration as a PostgreSQL interval literal PostgreSQL parses itself.
pub(crate) fn interval(duration: Duration) -> String {
    format!("{} milliseconds", duration.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_from_its_column_value() {
        for reason in RevokeReason::ALL {
            assert_eq!(RevokeReason::from_column(reason.as_str()), Some(reason));
        }
        assert_eq!(
            RevokeReason::from_column("session_limit"),
            Some(RevokeReason::SessionLimit)
        );
        assert_eq!(
            RevokeReason::from_column("operator"),
            Some(RevokeReason::Operator)
        );
        assert_eq!(RevokeReason::from_column("typed_by_hand"), None);
    }
}
