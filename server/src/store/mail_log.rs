//! `account_mail_log`: the account mail each mailbox was sent (migration V7), so that a
//! mailbox gets at most so many mails an hour and a day, across replicas and kinds.

use deadpool_postgres::GenericClient;

use super::bounded;
use super::sessions::interval;
use crate::error::ServiceError;
use crate::mail::compose::MailKind;

/// Serialises the check-and-insert of one mailbox until the transaction ends: two
/// requests at once must not both see room for one more mail.
const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 22))";
/// The mailbox's mails in the last hour and the last day, and those of kind `$2` in the
/// last hour.
const COUNTS: &str = "SELECT \
       count(*) FILTER (WHERE queued_at > now() - interval '1 hour'), \
       count(*), \
       count(*) FILTER (WHERE kind = $2 AND queued_at > now() - interval '1 hour') \
     FROM account_mail_log WHERE mailbox = $1 AND queued_at > now() - interval '1 day'";
const INSERT: &str = "INSERT INTO account_mail_log (mailbox, kind) VALUES ($1, $2)";
/// Deletes up to `$2` rows older than `$1`.
const PURGE_BATCH: &str = "DELETE FROM account_mail_log WHERE id IN ( \
       SELECT id FROM account_mail_log WHERE queued_at < now() - $1::text::interval LIMIT $2)";

/// How much account mail one mailbox may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailCaps {
    /// Mails of any kind per hour (`ACCOUNT_MAIL_PER_HOUR`).
    pub per_hour: u32,
    /// Mails of any kind per day (`ACCOUNT_MAIL_PER_DAY`).
    pub per_day: u32,
    /// Sign-in alerts per hour (`SIGNIN_ALERTS_PER_HOUR`).
    pub alerts_per_hour: u32,
}

impl MailCaps {
    /// The cap of `kind` alone per hour, beyond the mailbox's, if it has one.
    fn per_kind_hourly(self, kind: MailKind) -> Option<u32> {
        match kind {
            MailKind::SignInAlert => Some(self.alerts_per_hour),
            MailKind::EmailVerification | MailKind::PasswordReset | MailKind::FactorChange => None,
        }
    }
}

/// Counts a mail of `kind` to `mailbox` against `caps` in the caller's transaction:
/// `true` and recorded when there is room, `false` (nothing recorded) when a cap is
/// reached.
pub async fn reserve(
    client: &impl GenericClient,
    mailbox: &str,
    kind: MailKind,
    caps: MailCaps,
) -> Result<bool, ServiceError> {
    let lock = bounded(client.prepare_cached(LOCK)).await?;
    bounded(client.query_one(&lock, &[&mailbox])).await?;
    let counts = bounded(client.prepare_cached(COUNTS)).await?;
    let row = bounded(client.query_one(&counts, &[&mailbox, &kind.as_str()])).await?;
    let (hour, day, kind_hour): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let over = |count: i64, cap: u32| count >= i64::from(cap);
    if over(hour, caps.per_hour)
        || over(day, caps.per_day)
        || caps
            .per_kind_hourly(kind)
            .is_some_and(|cap| over(kind_hour, cap))
    {
        return Ok(false);
    }
    let insert = bounded(client.prepare_cached(INSERT)).await?;
    bounded(client.execute(&insert, &[&mailbox, &kind.as_str()])).await?;
    Ok(true)
}

/// Deletes one batch of rows older than `age` (a day is all the caps look at).
pub async fn purge_batch(
    client: &impl GenericClient,
    age: std::time::Duration,
    batch: i64,
) -> Result<u64, ServiceError> {
    let statement = bounded(client.prepare_cached(PURGE_BATCH)).await?;
    bounded(client.execute(&statement, &[&interval(age), &batch])).await
}
