//! The purge job: deletes sessions that ended, and security events that happened, longer
//! ago than their retention periods, expired account tokens, and mail that could not be
//! sent for [`UNSENT_MAIL_MAX_AGE`], in batches, on one replica at a time.

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::error::ServiceError;
use crate::rate_limit::RateLimits;
use crate::store::{account_tokens, events, factors, mail_log, outbox, sessions};

/// How long ended sessions and security events are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// `SESSION_RETENTION_DAYS`, counted from the session's end.
    pub sessions: Duration,
    /// `SECURITY_EVENT_RETENTION_DAYS`, counted from the event.
    pub security_events: Duration,
    /// `PURGE_INTERVAL_SECONDS`: how often the purge runs.
    pub purge_interval: Duration,
}

/// What one run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Ended sessions.
    pub sessions: u64,
    /// Security events.
    pub security_events: u64,
    /// Expired verification and reset tokens.
    pub account_tokens: u64,
    /// Mails still unsent after [`UNSENT_MAIL_MAX_AGE`].
    pub unsent_mails: u64,
    /// Expired second-factor leftovers: login challenges, passkey ceremonies, TOTP factors
    /// never confirmed.
    pub factor_leftovers: u64,
    /// Rows of the revocation log older than [`REVOCATION_LOG_MAX_AGE`].
    pub revocation_log: u64,
}

/// How long a row of the revocation log is kept: a week. Far past what reads it: the
/// layer's live TTL (seconds), the NATS stream's retention (a day), a relay's restart;
/// a relay stopped for longer than this loses the rows it had not published yet.
pub const REVOCATION_LOG_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// How long an unsent mail may wait in the outbox: a week, past which a verification
/// link may still work (`EMAIL_VERIFICATION_TTL_SECONDS` goes up to 30 days) but the user
/// is better served by asking for a new one, and an alert is stale.
pub const UNSENT_MAIL_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// How long the record of a queued account mail is kept: the daily cap looks back a day.
pub const MAIL_LOG_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// Rows deleted per statement: small enough to keep each transaction short.
const BATCH: i64 = 1_000;
/// Key of the advisory lock that elects the replica that purges: the bytes of "sgpurge!".
pub const PURGE_LOCK_KEY: i64 = i64::from_be_bytes(*b"sgpurge!");

const TRY_LOCK: &str = "SELECT pg_try_advisory_lock($1)";
const UNLOCK: &str = "SELECT pg_advisory_unlock($1)";

/// Runs the purge every `retention.purge_interval` until the process ends.
pub fn spawn(pool: Pool, limits: RateLimits, retention: Retention) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(retention.purge_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            limits.forget_idle();
            match purge_once(&pool, retention).await {
                Ok(Some(purged)) if purged != Purged::default() => {
                    tracing::info!(
                        sessions = purged.sessions,
                        security_events = purged.security_events,
                        account_tokens = purged.account_tokens,
                        unsent_mails = purged.unsent_mails,
                        factor_leftovers = purged.factor_leftovers,
                        revocation_log = purged.revocation_log,
                        "purged ended sessions and old security events"
                    );
                }
                Ok(Some(_)) => {}
                Ok(None) => tracing::debug!("purge skipped: another replica holds the lock"),
                Err(e) => tracing::warn!(error = %e, "purge failed; will retry"),
            }
        }
    })
}

/// One run: `None` when another replica holds the lock, else how many were deleted.
pub async fn purge_once(pool: &Pool, retention: Retention) -> Result<Option<Purged>, ServiceError> {
    let client = pool.get().await?;
    let locked: bool = client.query_one(TRY_LOCK, &[&PURGE_LOCK_KEY]).await?.get(0);
    if !locked {
        return Ok(None);
    }
    let mut purged = Purged::default();
    let outcome = async {
        loop {
            let batch = sessions::purge_batch(&client, retention.sessions, BATCH).await?;
            purged.sessions += batch;
            if batch < BATCH.unsigned_abs() {
                break;
            }
        }
        loop {
            let batch = events::purge_batch(&client, retention.security_events, BATCH).await?;
            purged.security_events += batch;
            if batch < BATCH.unsigned_abs() {
                break;
            }
        }
        loop {
            let batch = account_tokens::purge_batch(&client, BATCH).await?;
            purged.account_tokens += batch;
            if batch < BATCH.unsigned_abs() {
                break;
            }
        }
        loop {
            let batch = mail_log::purge_batch(&client, MAIL_LOG_MAX_AGE, BATCH).await?;
            if batch < BATCH.unsigned_abs() {
                break;
            }
        }
        loop {
            let (deleted, full) = factors::purge_batch(&client, BATCH).await?;
            purged.factor_leftovers += deleted;
            if !full {
                break;
            }
        }
        loop {
            let batch = portcullis::postgres::RevocationLog::purge(
                &**client,
                REVOCATION_LOG_MAX_AGE,
                BATCH.unsigned_abs().try_into().unwrap_or(u32::MAX),
            )
            .await?;
            purged.revocation_log += batch;
            if batch < BATCH.unsigned_abs() {
                break;
            }
        }
        loop {
            let batch = outbox::purge_batch(&client, UNSENT_MAIL_MAX_AGE, BATCH).await?;
            purged.unsent_mails += batch;
            if batch < BATCH.unsigned_abs() {
                return Ok::<_, ServiceError>(());
            }
        }
    }
    .await;
    // The lock belongs to this pooled connection: release it before the pool reuses it.
    client.query_one(UNLOCK, &[&PURGE_LOCK_KEY]).await?;
    outcome?;
    Ok(Some(purged))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use portcullis_testdb::TestDb;

    use super::*;

    /// The purge deletes log rows older than a week, and keeps the rest for the relay.
    #[tokio::test]
    async fn the_purge_deletes_old_revocation_log_rows_only() {
        let db = TestDb::new().await;
        let client = db.connect().await;
        client
            .batch_execute(
                "INSERT INTO session_guard_revocation_log (kind, session_id) \
                 SELECT 'session', gen_random_uuid() FROM generate_series(1, 3); \
                 UPDATE session_guard_revocation_log SET logged_at = now() - interval '8 days' \
                 WHERE position IN (SELECT position FROM session_guard_revocation_log \
                                    ORDER BY position LIMIT 2)",
            )
            .await
            .unwrap();
        let database: portcullis::postgres::DatabaseConfig = db.config().clone().into();
        let pool = database.pool(2, Duration::from_secs(5)).unwrap();
        let retention = Retention {
            sessions: Duration::from_secs(86_400),
            security_events: Duration::from_secs(86_400),
            purge_interval: Duration::from_secs(3600),
        };
        let purged = purge_once(&pool, retention).await.unwrap().unwrap();
        assert_eq!(purged.revocation_log, 2);
        let left: i64 = client
            .query_one("SELECT count(*) FROM session_guard_revocation_log", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 1);
    }
}
