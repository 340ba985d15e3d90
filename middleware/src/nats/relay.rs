//! [`NatsRelay`]: publishes the PostgreSQL revocation log to the NATS `JetStream` stream
//! the instances' [`NatsRevocationFeed`](super::NatsRevocationFeed)s read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::{self, Context};
use tokio_postgres::Client;

use super::NatsFeedConfig;
use super::feed::connect;
use super::wire::encode_revocation;
use crate::liveness::postgres::error_text;
use crate::postgres::{DatabaseConfig, LogCursor, RevocationLog};

/// What the relay calls itself in `pg_stat_activity` and to NATS.
pub const RELAY_APPLICATION_NAME: &str = "portcullis-relay";
/// The session advisory lock (one `bigint` key) the active relay of a database holds.
pub const RELAY_LOCK_KEY: i64 = 0x706f_7274_6372_6c79; // "portcrly"
/// How often a standby asks for the lock.
const LOCK_RETRY: Duration = Duration::from_millis(500);
/// The longest wait for the broker's acknowledgement of a publication.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

const TRY_LOCK: &str = "SELECT pg_try_advisory_lock($1)";
const READ_CURSOR: &str = "SELECT txid, position FROM session_guard_relay_cursor";
const WRITE_CURSOR: &str = "UPDATE session_guard_relay_cursor \
     SET txid = $1, position = $2, published_at = now()";

/// Publishes the revocation log ([`RevocationLog`]) to a NATS `JetStream` stream, in
/// order, each row with its log position as `Nats-Msg-Id`, and moves on only once the
/// broker acknowledged every row of a batch. Where it got to is kept in the database
/// (`session_guard_relay_cursor`), so a relay that restarts or takes over resumes
/// there; a row published again after a crash carries the same id and the stream's
/// duplicate window drops it.
///
/// One relay is active per database: the one holding a session advisory lock
/// ([`RELAY_LOCK_KEY`]) on a connection of its own, which it also reads the log on.
/// Others stand by, asking for the lock every 500 ms, and take over when the holder's
/// connection ends (the holder died, or lost PostgreSQL). It creates the stream when
/// missing (the subject, file storage, the retention and the duplicate window), and
/// polls the log (every 10 ms by default) when there is nothing to publish.
#[derive(Debug)]
#[must_use]
pub struct NatsRelay {
    database: DatabaseConfig,
    nats: NatsFeedConfig,
    max_age: Duration,
    duplicate_window: Duration,
    poll_every: Duration,
    batch: u32,
    status: Arc<Status>,
}

#[derive(Debug, Default)]
struct Status {
    active: AtomicBool,
    published: AtomicU64,
    duplicates: AtomicU64,
    takeovers: AtomicU64,
}

/// A relay running in a task; dropping it stops the relay (and frees the lock).
#[derive(Debug)]
pub struct NatsRelayHandle {
    status: Arc<Status>,
    task: tokio::task::JoinHandle<()>,
}

impl NatsRelayHandle {
    /// Whether this relay holds the lock and publishes.
    pub fn is_active(&self) -> bool {
        self.status.active.load(Ordering::Acquire)
    }

    /// How many log rows it published (the broker stored them).
    pub fn published(&self) -> u64 {
        self.status.published.load(Ordering::Acquire)
    }

    /// How many it published again that the broker already held (dropped as duplicates).
    pub fn duplicates(&self) -> u64 {
        self.status.duplicates.load(Ordering::Acquire)
    }

    /// How many times it became the active relay.
    pub fn activations(&self) -> u64 {
        self.status.takeovers.load(Ordering::Acquire)
    }
}

impl Drop for NatsRelayHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NatsRelay {
    /// A relay from the log of `database` to the stream of `nats`.
    pub fn new(database: DatabaseConfig, nats: NatsFeedConfig) -> Self {
        let mut database = database;
        database
            .settings_mut()
            .application_name(RELAY_APPLICATION_NAME)
            .keepalives_idle(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5));
        Self {
            database,
            nats,
            max_age: Duration::from_secs(24 * 3600),
            duplicate_window: Duration::from_secs(120),
            poll_every: Duration::from_millis(10),
            batch: 256,
            status: Arc::default(),
        }
    }

    /// How long the stream keeps a revocation when it creates the stream (default 24 h):
    /// an instance cut off longer than this forgets its cache when it returns.
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The stream's duplicate window when it creates the stream (default 2 min, at most
    /// the retention).
    pub fn with_duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// How long to wait before reading the log again when it had nothing new (default
    /// 10 ms).
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_every = every;
        self
    }

    /// Starts the relay in a task. Must be called inside a Tokio runtime.
    pub fn start(self) -> NatsRelayHandle {
        let status = Arc::clone(&self.status);
        NatsRelayHandle {
            status,
            task: tokio::spawn(self.run()),
        }
    }

    /// Runs the relay: stands by until it holds the lock, then publishes until it loses
    /// PostgreSQL or NATS, then stands by again. Never returns.
    pub async fn run(self) {
        let mut nats = None;
        loop {
            let client = self.acquire().await;
            self.status.active.store(true, Ordering::Release);
            self.status.takeovers.fetch_add(1, Ordering::AcqRel);
            tracing::info!(stream = %self.nats.stream, "revocation relay active");
            let error = self.publish(&client, &mut nats).await;
            self.status.active.store(false, Ordering::Release);
            tracing::warn!(%error, "revocation relay stopped publishing; standing by");
            // Ends the session, which frees the lock for a standby.
            drop(client);
            tokio::time::sleep(LOCK_RETRY).await;
        }
    }

    /// A connection holding the lock.
    async fn acquire(&self) -> Client {
        let mut said = false;
        loop {
            match self.database.connect().await {
                Ok((client, connection)) => {
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    loop {
                        match client.query_one(TRY_LOCK, &[&RELAY_LOCK_KEY]).await {
                            Ok(row) if row.get::<_, bool>(0) => return client,
                            Ok(_) => {
                                if !said {
                                    tracing::info!(
                                        "another revocation relay is active; standing by"
                                    );
                                    said = true;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %error_text(&e), "revocation relay: PostgreSQL");
                                break;
                            }
                        }
                        tokio::time::sleep(LOCK_RETRY).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %error_text(&e), "revocation relay cannot reach PostgreSQL");
                }
            }
            tokio::time::sleep(LOCK_RETRY).await;
        }
    }

    /// Publishes while it can; the reason it stopped.
    async fn publish(&self, client: &Client, nats: &mut Option<async_nats::Client>) -> String {
        let jetstream = match nats {
            Some(nats) => nats.clone(),
            None => match connect(&self.nats.url, RELAY_APPLICATION_NAME, None).await {
                Ok(connected) => nats.insert(connected).clone(),
                Err(e) => return e,
            },
        };
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(PUBLISH_TIMEOUT)
            .build(jetstream);
        if let Err(e) = self.ensure_stream(&jetstream).await {
            return e;
        }
        let mut cursor = match client.query_one(READ_CURSOR, &[]).await {
            Ok(row) => LogCursor {
                txid: row.get(0),
                position: row.get(1),
            },
            Err(e) => return format!("reading the relay's cursor: {}", error_text(&e)),
        };
        loop {
            let batch = match RevocationLog::read_after(client, cursor, self.batch).await {
                Ok(batch) => batch,
                Err(e) => return error_text(&e),
            };
            let Some(last) = batch.entries.last() else {
                cursor = batch.next;
                tokio::time::sleep(self.poll_every).await;
                continue;
            };
            let mut acks = Vec::with_capacity(batch.entries.len());
            for entry in &batch.entries {
                let message = PublishMessage::build()
                    .payload(encode_revocation(&entry.revocation).into())
                    .message_id(entry.cursor.position.to_string());
                match jetstream
                    .send_publish(self.nats.subject.clone(), message)
                    .await
                {
                    Ok(ack) => acks.push(ack),
                    Err(e) => return format!("publishing to NATS: {}", error_text(&e)),
                }
            }
            for ack in acks {
                match ack.await {
                    Ok(ack) if ack.duplicate => {
                        self.status.duplicates.fetch_add(1, Ordering::AcqRel);
                    }
                    Ok(_) => {
                        self.status.published.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(e) => return format!("NATS did not acknowledge: {}", error_text(&e)),
                }
            }
            if let Err(e) = client
                .execute(WRITE_CURSOR, &[&last.cursor.txid, &last.cursor.position])
                .await
            {
                return format!("saving the relay's cursor: {}", error_text(&e));
            }
            cursor = batch.next;
        }
    }

    /// Creates the stream unless it exists (an existing one is left as it is).
    async fn ensure_stream(&self, jetstream: &Context) -> Result<(), String> {
        let config = StreamConfig {
            name: self.nats.stream.clone(),
            subjects: vec![self.nats.subject.clone()],
            max_age: self.max_age,
            duplicate_window: self.duplicate_window.min(self.max_age),
            storage: StorageType::File,
            ..StreamConfig::default()
        };
        jetstream
            .get_or_create_stream(config)
            .await
            .map(drop)
            .map_err(|e| {
                format!(
                    "creating stream {} at {}: {}",
                    self.nats.stream,
                    self.nats.url,
                    error_text(&e)
                )
            })
    }
}
