//! The purge job: deletes sessions that ended longer ago than the retention period, in
//! batches, on one replica at a time.

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::auth::Accounts;
use crate::error::ServiceError;
use crate::store::sessions;

/// Sessions deleted per statement: small enough to keep each transaction short.
const BATCH: i64 = 1_000;
/// Key of the advisory lock that elects the replica that purges: the bytes of "sgpurge!".
pub const PURGE_LOCK_KEY: i64 = i64::from_be_bytes(*b"sgpurge!");

const TRY_LOCK: &str = "SELECT pg_try_advisory_lock($1)";
const UNLOCK: &str = "SELECT pg_advisory_unlock($1)";

/// Runs the purge every `interval` until the process ends.
pub fn spawn(
    pool: Pool,
    accounts: Accounts,
    retention: Duration,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            accounts.limits().forget_idle();
            match purge_once(&pool, retention).await {
                Ok(Some(deleted)) if deleted > 0 => {
                    tracing::info!(deleted, "purged ended sessions");
                }
                Ok(Some(_)) => {}
                Ok(None) => tracing::debug!("purge skipped: another replica holds the lock"),
                Err(e) => tracing::warn!(error = %e, "purge failed; will retry"),
            }
        }
    })
}

/// One run: `None` when another replica holds the lock, else how many were deleted.
pub async fn purge_once(pool: &Pool, retention: Duration) -> Result<Option<u64>, ServiceError> {
    let client = pool.get().await?;
    let locked: bool = client.query_one(TRY_LOCK, &[&PURGE_LOCK_KEY]).await?.get(0);
    if !locked {
        return Ok(None);
    }
    let mut deleted = 0;
    let outcome = async {
        loop {
            let batch = sessions::purge_batch(&client, retention, BATCH).await?;
            deleted += batch;
            if batch < BATCH.unsigned_abs() {
                return Ok::<_, ServiceError>(());
            }
        }
    }
    .await;
    // The lock belongs to this pooled connection: release it before the pool reuses it.
    client.query_one(UNLOCK, &[&PURGE_LOCK_KEY]).await?;
    outcome?;
    Ok(Some(deleted))
}
