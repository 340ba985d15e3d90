//! `mail_outbox`: mail waiting to be sent (migration V5).

use std::time::Duration;

use deadpool_postgres::GenericClient;

use super::bounded;
use super::sessions::interval;
use crate::error::ServiceError;
use crate::mail::compose::Composed;

const INSERT: &str =
    "INSERT INTO mail_outbox (kind, recipient, subject, body) VALUES ($1, $2, $3, $4)";
/// Up to `$1` mails that are due, oldest first, locked; rows another worker holds are
/// skipped, so replicas never send the same mail at once.
const CLAIM_DUE: &str = "SELECT id, recipient, subject, body, attempts FROM mail_outbox \
     WHERE next_attempt_at <= now() ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED";
const DELETE: &str = "DELETE FROM mail_outbox WHERE id = $1";
const RETRY_LATER: &str = "UPDATE mail_outbox SET attempts = attempts + 1, \
     next_attempt_at = now() + $2::text::interval, last_error = left($3, 1024) WHERE id = $1";
/// Deletes up to `$2` mails queued more than `$1` ago and still not sent.
const PURGE_BATCH: &str = "DELETE FROM mail_outbox WHERE id IN ( \
       SELECT id FROM mail_outbox WHERE created_at < now() - $1::text::interval LIMIT $2)";

/// A mail the worker claimed.
#[derive(Debug, Clone)]
pub struct QueuedMail {
    /// The row.
    pub id: i64,
    /// The address it goes to.
    pub recipient: String,
    /// Its subject line.
    pub subject: String,
    /// Its text.
    pub body: String,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// Queues `mail` to `recipient`; sent once the caller's transaction commits.
pub async fn insert(
    client: &impl GenericClient,
    recipient: &str,
    mail: &Composed,
) -> Result<(), ServiceError> {
    let statement = bounded(client.prepare_cached(INSERT)).await?;
    bounded(client.execute(
        &statement,
        &[&mail.kind.as_str(), &recipient, &mail.subject, &mail.body],
    ))
    .await?;
    Ok(())
}

/// Claims up to `limit` due mails until the transaction ends.
pub async fn claim_due(
    client: &impl GenericClient,
    limit: u32,
) -> Result<Vec<QueuedMail>, ServiceError> {
    let statement = bounded(client.prepare_cached(CLAIM_DUE)).await?;
    let rows = bounded(client.query(&statement, &[&i64::from(limit)])).await?;
    Ok(rows
        .into_iter()
        .map(|row| QueuedMail {
            id: row.get(0),
            recipient: row.get(1),
            subject: row.get(2),
            body: row.get(3),
            attempts: row.get::<_, i32>(4).unsigned_abs(),
        })
        .collect())
}

/// The mail was sent (or refused for good): it leaves the outbox.
pub async fn delete(client: &impl GenericClient, id: i64) -> Result<(), ServiceError> {
    let statement = bounded(client.prepare_cached(DELETE)).await?;
    bounded(client.execute(&statement, &[&id])).await?;
    Ok(())
}

/// An attempt failed with `error`: counted, and the next one `after` from now.
pub async fn retry_later(
    client: &impl GenericClient,
    id: i64,
    after: Duration,
    error: &str,
) -> Result<(), ServiceError> {
    let statement = bounded(client.prepare_cached(RETRY_LATER)).await?;
    bounded(client.execute(&statement, &[&id, &interval(after), &error])).await?;
    Ok(())
}

/// Deletes one batch of mails queued more than `max_age` ago: whatever links they hold
/// have expired, so they are no use to anyone.
pub async fn purge_batch(
    client: &impl GenericClient,
    max_age: Duration,
    batch: i64,
) -> Result<u64, ServiceError> {
    let statement = bounded(client.prepare_cached(PURGE_BATCH)).await?;
    bounded(client.execute(&statement, &[&interval(max_age), &batch])).await
}
