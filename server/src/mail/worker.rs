//! The mail worker: sends what the outbox holds, a batch at a time, and schedules a
//! failed mail for later, waiting twice as long after each failure.
//!
//! It wakes on `MAIL_POLL_INTERVAL_SECONDS` and whenever PostgreSQL notifies
//! [`MAIL_CHANNEL`] (the outbox's insert trigger). A batch is claimed with `FOR UPDATE
//! SKIP LOCKED` in one transaction that lasts while it is sent: the workers of several
//! replicas never send the same mail, and a worker that dies mid-batch leaves its mails to
//! the others. A mail the server took, but whose row could not then be deleted, is sent
//! again: at least once, never lost.

use std::time::Duration;

use deadpool_postgres::Pool;
use lettre::message::Mailbox;
use portcullis::postgres::{DatabaseConfig, Listener};

use super::Mailer;
use crate::error::ServiceError;
use crate::store::outbox;

/// The channel the outbox's insert trigger notifies (migration V5).
pub const MAIL_CHANNEL: &str = "session_guard_mail";
/// The longest wait between two attempts at one mail.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// How the worker paces itself.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    /// How often it looks without being woken (`MAIL_POLL_INTERVAL_SECONDS`).
    pub poll_interval: Duration,
    /// The wait after a first failure (`MAIL_RETRY_BASE_SECONDS`).
    pub retry_base: Duration,
    /// Most mails claimed at once (`MAIL_BATCH_SIZE`).
    pub batch_size: u32,
}

/// How long to wait after the `failures`-th failed attempt: `base`, doubling with each
/// failure, at most [`MAX_RETRY_DELAY`].
pub fn retry_delay(base: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    base.saturating_mul(1 << doublings).min(MAX_RETRY_DELAY)
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Mails claimed.
    pub claimed: usize,
    /// Mails the server took.
    pub sent: usize,
    /// Mails kept for a later attempt.
    pub deferred: usize,
    /// Mails refused for good, and dropped.
    pub dropped: usize,
}

/// Sends the outbox's mail.
#[derive(Clone)]
pub struct MailWorker {
    pool: Pool,
    mailer: Mailer,
    from: Mailbox,
    settings: WorkerSettings,
}

impl MailWorker {
    /// A worker sending the mail in `pool`'s database through `mailer`, from `from`.
    pub fn new(pool: Pool, mailer: Mailer, from: Mailbox, settings: WorkerSettings) -> Self {
        Self {
            pool,
            mailer,
            from,
            settings,
        }
    }

    /// Runs until the process ends, listening for the outbox's notifications on a
    /// connection of its own to `database`.
    pub fn spawn(self, database: DatabaseConfig) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.settings.poll_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut listener: Option<Listener> = None;
            loop {
                if listener.is_none() {
                    listener = match Listener::connect(&database, MAIL_CHANNEL).await {
                        Ok(listener) => Some(listener),
                        Err(e) => {
                            tracing::warn!(error = %e, "mail worker cannot listen for new mail; polling only");
                            None
                        }
                    };
                }
                self.deliver_all_due().await;
                match listener.as_mut() {
                    Some(listening) => {
                        tokio::select! {
                            _ = ticks.tick() => {}
                            heard = listening.recv() => {
                                if heard.is_none() {
                                    listener = None;
                                }
                            }
                        }
                    }
                    None => {
                        ticks.tick().await;
                    }
                }
            }
        })
    }

    /// Sends batches until what is due is done, or an attempt fails.
    async fn deliver_all_due(&self) {
        loop {
            match self.deliver_batch().await {
                Ok(outcome) => {
                    if outcome.claimed > 0 {
                        tracing::debug!(?outcome, "mail batch");
                    }
                    let full = outcome.claimed >= self.settings.batch_size as usize;
                    if !full || outcome.deferred > 0 {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "mail worker cannot read the outbox; will retry");
                    return;
                }
            }
        }
    }

    /// Claims one batch of due mail and sends it.
    pub async fn deliver_batch(&self) -> Result<BatchOutcome, ServiceError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let due = outbox::claim_due(&transaction, self.settings.batch_size).await?;
        let mut outcome = BatchOutcome {
            claimed: due.len(),
            ..BatchOutcome::default()
        };
        for mail in due {
            let sent = self
                .mailer
                .send(&self.from, &mail.recipient, &mail.subject, mail.body)
                .await;
            match sent {
                Ok(()) => {
                    outbox::delete(&transaction, mail.id).await?;
                    outcome.sent += 1;
                    metrics::counter!("session_mail_total", "outcome" => "sent").increment(1);
                }
                Err(e) if e.permanent => {
                    outbox::delete(&transaction, mail.id).await?;
                    outcome.dropped += 1;
                    tracing::warn!(mail_id = mail.id, error = %e, "the mail server refused a mail for good; dropped");
                    metrics::counter!("session_mail_total", "outcome" => "dropped").increment(1);
                }
                Err(e) => {
                    let failures = mail.attempts + 1;
                    let wait = retry_delay(self.settings.retry_base, failures);
                    outbox::retry_later(&transaction, mail.id, wait, &e.detail).await?;
                    outcome.deferred += 1;
                    tracing::warn!(mail_id = mail.id, failures, retry_in = ?wait, error = %e, "mail not sent; will retry");
                    metrics::counter!("session_mail_total", "outcome" => "deferred").increment(1);
                }
            }
        }
        transaction.commit().await?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_the_base_up_to_an_hour() {
        let base = Duration::from_secs(30);
        assert_eq!(retry_delay(base, 1), Duration::from_secs(30));
        assert_eq!(retry_delay(base, 2), Duration::from_secs(60));
        assert_eq!(retry_delay(base, 3), Duration::from_secs(120));
        assert_eq!(retry_delay(base, 7), Duration::from_secs(1920));
        assert_eq!(retry_delay(base, 8), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(base, u32::MAX), MAX_RETRY_DELAY);
        assert_eq!(
            retry_delay(Duration::from_secs(1), 0),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn the_settings_say_what_the_cap_is() {
        assert_eq!(MAX_RETRY_DELAY, Duration::from_secs(3600));
        assert!(
            crate::config::settings::MAIL_RETRY_BASE_SECONDS
                .meaning
                .contains("up to an hour")
        );
    }
}
