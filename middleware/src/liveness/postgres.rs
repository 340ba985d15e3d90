//! Liveness from PostgreSQL, cached, with revocations pushed over `LISTEN`.
//!
//! - The cache holds one [`LivenessCell`] per session, which the store hands to every
//!   verified token of the session ([`LivenessCheck::watch`]): a request of a cached token
//!   reads the cell and nothing else.
//! - A live answer holds for a bounded time (`live_ttl`, default 15 s) and never past
//!   the session's own deadline; a revoked, expired or unknown answer holds for as long as
//!   tokens ask (each token entry ends at its own `exp`).
//! - One dedicated connection (not from the pool: pooled connections drop notifications)
//!   listens on the revocation channel. A notification evicts that session and
//!   invalidates its cell at once, so the next request of any of its tokens asks the
//!   database; `*` does that to every session.
//! - When that connection drops, the cache is cleared (every cell invalidated) and
//!   nothing live is cached until it is back; it reconnects with backoff. Revocations
//!   missed meanwhile are therefore seen on the next request.
//! - The cache is bounded; a session it evicts has its cell invalidated first, so a token
//!   that still holds the cell asks again rather than trusting what no one updates.
//! - An entry is what the database says of a session, whoever asked: its user and its
//!   state, under its id (the key notifications name). A token of another user that
//!   carries the id is answered "unknown" from the entry, and what it asked is never
//!   cached as the session's answer.
//! - A query racing a notification (or a [`PostgresLiveness::forget`], or the listener
//!   dropping) never leaves its possibly stale live answer in a cell: it checks before
//!   caching and again after, and invalidates the cell if anything came between.
//!
//! The listener needs a direct or session-mode connection: a transaction-pooling proxy
//! does not deliver notifications.
//!
//! Starting never waits for the database, so a service starts while PostgreSQL is down;
//! [`PostgresLiveness::ready`] says whether the store can work, and what is wrong if not.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use quick_cache::sync::{Cache, GuardResult};
use quick_cache::{DefaultHashBuilder, Lifecycle, UnitWeighter};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::{Liveness, LivenessCell, LivenessCheck, LivenessError, Tick};
use crate::context::AuthContext;
use crate::postgres::{DatabaseConfig, Listener};

/// The channel the schema's trigger notifies on.
pub const DEFAULT_CHANNEL: &str = "session_revoked";
/// The payload meaning "every session ended".
const EVERY_SESSION: &str = "*";
/// What the listener calls itself in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "portcullis-listener";

/// How long the listener may take to connect.
const LISTENER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a trigger on `sessions` calls a function that names the channel `$1`: the
/// schema's revocation trigger, by what it does rather than by its name.
const REVOCATION_TRIGGER_SQL: &str = "SELECT EXISTS (SELECT 1 FROM pg_trigger t \
     JOIN pg_proc p ON p.oid = t.tgfoid \
     WHERE t.tgrelid = 'sessions'::regclass AND NOT t.tgisinternal AND t.tgenabled <> 'D' \
       AND position(quote_literal($1) IN p.prosrc) > 0)";

const LIVENESS_SQL: &str = "SELECT user_id, revoked_at IS NOT NULL, \
     least(idle_expires_at, absolute_expires_at) <= now(), \
     (extract(epoch FROM least(idle_expires_at, absolute_expires_at) - now()) * 1000)::int8 \
     FROM sessions WHERE id = $1";

/// What the database says of one session, whoever asked.
#[derive(Debug, Clone, Copy)]
struct Session {
    /// Its user; `None` when there is no such session.
    owner: Option<Uuid>,
    /// Live, revoked or expired; unknown when there is no such session.
    state: Liveness,
    /// Time left before its idle or absolute deadline, when live.
    remaining: Duration,
}

impl Session {
    /// The answer for a token of `user`: the session's state if it is theirs.
    fn answer(&self, user: Uuid) -> Liveness {
        if self.owner == Some(user) {
            self.state
        } else {
            Liveness::Unknown
        }
    }
}

/// A session the store tracks: whose it is, and the cell its tokens read.
#[derive(Debug, Clone)]
struct Tracked {
    /// Its user; `None` when there is no such session.
    owner: Option<Uuid>,
    cell: LivenessCell,
}

impl Tracked {
    /// Stops tracking: the cell says nothing from now on, and its hits are counted here.
    fn retire(&self, hits: &AtomicU64) {
        self.cell.invalidate();
        hits.fetch_add(self.cell.take_hits(), Ordering::Relaxed);
    }
}

/// Retires what the cache evicts to stay in bounds: a cell no one would update any more
/// must not go on saying "live" to the tokens that hold it.
#[derive(Debug, Clone)]
struct RetireOnEviction {
    hits: Arc<AtomicU64>,
}

impl Lifecycle<Uuid, Tracked> for RetireOnEviction {
    type RequestState = ();

    fn on_evict(&self, (): &mut (), _session: Uuid, tracked: Tracked) {
        tracked.retire(&self.hits);
    }
}

type SessionCache = Cache<Uuid, Tracked, UnitWeighter, DefaultHashBuilder, RetireOnEviction>;

/// Counters for metrics: cache hits and misses, and the listener's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LivenessStats {
    /// Answers served from the cache.
    pub hits: u64,
    /// Answers that needed the database.
    pub misses: u64,
    /// Whether the revocation listener is connected now.
    pub listener_connected: bool,
    /// How many times the listener has connected (1 after a clean start).
    pub listener_connects: u64,
    /// Revocation notifications received.
    pub notifications: u64,
}

/// Why a [`PostgresLiveness`] cannot work, from [`PostgresLiveness::ready`]. Each message
/// names the database (without credentials) and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotReady {
    /// No connection: the server is down or unreachable, refuses the role or the
    /// database, or the TLS handshake failed.
    #[error("session liveness: cannot reach PostgreSQL at {target}: {reason}")]
    Unreachable {
        /// Where, without credentials.
        target: String,
        /// What the network, TLS or PostgreSQL said.
        reason: String,
    },
    /// The database has no `sessions` table: not the Portcullis server's, or not migrated.
    #[error(
        "session liveness: PostgreSQL at {target} has no sessions table; point the layer at the \
         Portcullis server's database, migrated with portcullis-migrations"
    )]
    MissingSchema {
        /// Where, without credentials.
        target: String,
    },
    /// The `sessions` table lacks what the liveness query reads.
    #[error(
        "session liveness: the sessions table at {target} is not the one this version reads \
         ({reason}); migrate it with portcullis-migrations"
    )]
    IncompatibleSchema {
        /// Where, without credentials.
        target: String,
        /// What PostgreSQL said of the query.
        reason: String,
    },
    /// No trigger on `sessions` notifies the channel: revocations would never reach the
    /// cache.
    #[error(
        "session liveness: no trigger on sessions at {target} notifies channel {channel}, so \
         revocations would go unseen; migrate with portcullis-migrations, or listen on the \
         channel its trigger uses"
    )]
    MissingRevocationTrigger {
        /// Where, without credentials.
        target: String,
        /// The channel the store listens on.
        channel: String,
    },
    /// Queries work but the revocation listener does not connect.
    #[error("session liveness: the revocation listener cannot connect to {target}: {reason}")]
    ListenerDown {
        /// Where, without credentials.
        target: String,
        /// Why its last attempt failed.
        reason: String,
    },
}

/// Configures and starts a [`PostgresLiveness`].
#[derive(Debug)]
#[must_use]
pub struct PostgresLivenessBuilder {
    database: DatabaseConfig,
    pool: Option<Pool>,
    pool_size: usize,
    live_ttl: Duration,
    query_timeout: Duration,
    capacity: u64,
    channel: String,
}

impl PostgresLivenessBuilder {
    /// How long a live answer may be served from memory (default 15 s; at most 30 s is
    /// sensible: it bounds how long a revocation missed by a dropped listener can go
    /// unseen).
    pub fn with_live_ttl(mut self, ttl: Duration) -> Self {
        self.live_ttl = ttl;
        self
    }

    /// The longest wait for a liveness query, pool wait included (default 2 s).
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// How many sessions the cache holds (default 1,000,000).
    pub fn with_cache_capacity(mut self, capacity: u64) -> Self {
        self.capacity = capacity;
        self
    }

    /// Size of the pool built from the connection settings (default 4), by
    /// [`DatabaseConfig::pool`] with the query timeout. Ignored with
    /// [`with_pool`](Self::with_pool).
    pub fn with_pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// Run liveness queries on an existing pool instead of building one: a service that
    /// has a pool (built with [`DatabaseConfig::pool`]) hands it over, and the process
    /// keeps one pool. The listener still opens its own connection from the settings.
    pub fn with_pool(mut self, pool: Pool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The notification channel (default `session_revoked`, as the schema's trigger uses).
    pub fn with_channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }

    /// Builds the store and starts its listener. Must be called inside a Tokio runtime.
    /// Nothing is awaited: the server starts even while PostgreSQL is down. Await
    /// [`PostgresLiveness::ready`] next to learn whether it can work.
    pub fn start(self) -> Result<PostgresLiveness, LivenessError> {
        let pool = match self.pool {
            Some(pool) => pool,
            None => self
                .database
                .pool(self.pool_size, self.query_timeout)
                .map_err(|e| LivenessError(format!("building the pool: {e}")))?,
        };
        let capacity = self.capacity.max(1);
        let hits = Arc::new(AtomicU64::new(0));
        let inner = Arc::new(Inner {
            pool,
            cache: Cache::with(
                usize::try_from(capacity).unwrap_or(usize::MAX),
                capacity,
                UnitWeighter,
                DefaultHashBuilder::default(),
                RetireOnEviction {
                    hits: Arc::clone(&hits),
                },
            ),
            hits,
            epoch: AtomicU64::new(0),
            listener_connected: AtomicBool::new(false),
            listener_connects: AtomicU64::new(0),
            notifications: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            live_ttl: self.live_ttl,
            query_timeout: self.query_timeout,
            listener: std::sync::Mutex::new(None),
            listener_error: std::sync::Mutex::new(None),
            target: self.database.to_string(),
            channel: self.channel.clone(),
            #[cfg(test)]
            pause_before_caching: std::sync::Mutex::new(None),
        });
        let mut listener_config = self.database;
        listener_config
            .settings_mut()
            .application_name(LISTENER_APPLICATION_NAME)
            .keepalives_idle(Duration::from_secs(30))
            .connect_timeout(LISTENER_CONNECT_TIMEOUT);
        let task = tokio::spawn(listen(
            Arc::downgrade(&inner),
            listener_config,
            self.channel,
        ));
        *inner
            .listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
        Ok(PostgresLiveness { inner })
    }
}

/// Session liveness from PostgreSQL's `sessions` table. Cheap to clone: clones share the
/// cache, the pool and the listener, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct PostgresLiveness {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// Keyed by the session's UUID. Each entry is the session's user, compared with the
    /// token's, and its cell, whose state carries its own deadline.
    cache: SessionCache,
    /// Answers given by cells, collected from them when they leave the cache and when
    /// [`PostgresLiveness::stats`] is asked: the hit count.
    hits: Arc<AtomicU64>,
    /// Bumped by every notification, `forget` and listener connect or drop (before it
    /// evicts); a query that sees it change leaves no live answer cached.
    epoch: AtomicU64,
    listener_connected: AtomicBool,
    listener_connects: AtomicU64,
    notifications: AtomicU64,
    misses: AtomicU64,
    live_ttl: Duration,
    query_timeout: Duration,
    listener: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Why the listener last failed to connect, until it connects.
    listener_error: std::sync::Mutex<Option<String>>,
    /// Where the store connects, without credentials, for errors.
    target: String,
    channel: String,
    /// Tests only: the next query's answer waits here, just before it is cached.
    #[cfg(test)]
    pause_before_caching: std::sync::Mutex<Option<tests::Pause>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .listener
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl std::fmt::Debug for PostgresLiveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLiveness")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl PostgresLiveness {
    /// A builder for a store on `database`: the Portcullis server's database, where the
    /// `sessions` table and its revocation trigger are.
    pub fn builder(database: DatabaseConfig) -> PostgresLivenessBuilder {
        PostgresLivenessBuilder {
            database,
            pool: None,
            pool_size: 4,
            live_ttl: Duration::from_secs(15),
            query_timeout: Duration::from_secs(2),
            capacity: 1_000_000,
            channel: DEFAULT_CHANNEL.to_owned(),
        }
    }

    /// Drops what this instance remembers about `session`, at once.
    ///
    /// For the process that revokes a session itself: the notification will evict it on
    /// every instance within milliseconds, but this one should not accept the session's
    /// token even for those milliseconds after answering "logged out". The id is the
    /// session's UUID, as the `sessions` table and [`AuthContext::session_uuid`] hold it.
    pub fn forget(&self, session: Uuid) {
        self.inner.epoch.fetch_add(1, Ordering::SeqCst);
        self.inner.stop_tracking(session);
    }

    /// Cache and listener counters. Walks the cache to collect the cells' hits.
    pub fn stats(&self) -> LivenessStats {
        for (_, tracked) in self.inner.cache.iter() {
            let hits = tracked.cell.take_hits();
            self.inner.hits.fetch_add(hits, Ordering::Relaxed);
        }
        LivenessStats {
            hits: self.inner.hits.load(Ordering::Relaxed),
            misses: self.inner.misses.load(Ordering::Relaxed),
            listener_connected: self.inner.listener_connected.load(Ordering::Acquire),
            listener_connects: self.inner.listener_connects.load(Ordering::Relaxed),
            notifications: self.inner.notifications.load(Ordering::Acquire),
        }
    }

    /// Whether the store can work, checked now: PostgreSQL answers a pooled connection,
    /// the database holds the `sessions` table this version reads and a trigger on it
    /// that notifies the channel, and the revocation listener is connected (waiting for
    /// it a few seconds). Call it once at start-up and stop with its error: a store on the
    /// wrong database, or one PostgreSQL refuses, would otherwise answer every request
    /// with 503 and say nothing.
    pub async fn ready(&self) -> Result<(), NotReady> {
        let inner = &self.inner;
        let target = || inner.target.clone();
        let client = tokio::time::timeout(inner.query_timeout, inner.pool.get())
            .await
            .map_err(|_| NotReady::Unreachable {
                target: target(),
                reason: format!("no connection within {:?}", inner.query_timeout),
            })?
            .map_err(|e| NotReady::Unreachable {
                target: target(),
                reason: error_text(&e),
            })?;
        let checked = async {
            if let Err(e) = client.prepare_cached(LIVENESS_SQL).await {
                return Err(if e.code() == Some(&SqlState::UNDEFINED_TABLE) {
                    NotReady::MissingSchema { target: target() }
                } else {
                    NotReady::IncompatibleSchema {
                        target: target(),
                        reason: e
                            .as_db_error()
                            .map_or_else(|| error_text(&e), |db| db.message().to_owned()),
                    }
                });
            }
            let notifies: bool = client
                .query_one(REVOCATION_TRIGGER_SQL, &[&inner.channel])
                .await
                .map_err(|e| NotReady::Unreachable {
                    target: target(),
                    reason: error_text(&e),
                })?
                .get(0);
            if !notifies {
                return Err(NotReady::MissingRevocationTrigger {
                    target: target(),
                    channel: inner.channel.clone(),
                });
            }
            Ok(())
        };
        tokio::time::timeout(inner.query_timeout, checked)
            .await
            .map_err(|_| NotReady::Unreachable {
                target: target(),
                reason: format!("no answer within {:?}", inner.query_timeout),
            })??;
        drop(client);
        let deadline = Instant::now() + LISTENER_CONNECT_TIMEOUT + Duration::from_secs(1);
        while !inner.listener_connected.load(Ordering::SeqCst) {
            if Instant::now() >= deadline {
                return Err(NotReady::ListenerDown {
                    target: target(),
                    reason: lock(&inner.listener_error)
                        .clone()
                        .unwrap_or_else(|| "not connected yet".to_owned()),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    #[cfg(test)]
    async fn paused_before_caching(&self) {
        let pause = self
            .inner
            .pause_before_caching
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(pause) = pause {
            let _ = pause.reached.send(());
            let _ = pause.resume.await;
        }
    }

    /// Whether nothing that evicts has happened since `epoch` was read, and the listener
    /// is up to push the next revocation.
    fn quiet_since(&self, epoch: u64) -> bool {
        self.inner.epoch.load(Ordering::SeqCst) == epoch
            && self.inner.listener_connected.load(Ordering::SeqCst)
    }

    async fn query(&self, session_id: Uuid) -> Result<Session, LivenessError> {
        let query = async {
            let client = self
                .inner
                .pool
                .get()
                .await
                .map_err(|e| LivenessError(e.to_string()))?;
            let statement = client
                .prepare_cached(LIVENESS_SQL)
                .await
                .map_err(|e| LivenessError(e.to_string()))?;
            client
                .query_opt(&statement, &[&session_id])
                .await
                .map_err(|e| LivenessError(e.to_string()))
        };
        let row = tokio::time::timeout(self.inner.query_timeout, query)
            .await
            .map_err(|_| LivenessError("liveness query timed out".into()))??;
        let Some(row) = row else {
            return Ok(Session {
                owner: None,
                state: Liveness::Unknown,
                remaining: Duration::ZERO,
            });
        };
        let (state, remaining) = if row.get::<_, bool>(1) {
            (Liveness::Revoked, Duration::ZERO)
        } else if row.get::<_, bool>(2) {
            (Liveness::Expired, Duration::ZERO)
        } else {
            let remaining_ms: i64 = row.get(3);
            let remaining = Duration::from_millis(u64::try_from(remaining_ms).unwrap_or(0));
            (Liveness::Live, remaining)
        };
        Ok(Session {
            owner: Some(row.get(0)),
            state,
            remaining,
        })
    }
}

impl LivenessCheck for PostgresLiveness {
    fn check_cached(&self, context: &AuthContext) -> Option<Liveness> {
        let Some((session, user)) = context.session_and_user_uuids() else {
            // Not ids this schema could hold: no such session, and nothing to ask.
            return Some(Liveness::Unknown);
        };
        let tracked = self.inner.cache.get(&session)?;
        let liveness = tracked.cell.read(Tick::now())?;
        Some(if tracked.owner == Some(user) {
            liveness
        } else {
            Liveness::Unknown
        })
    }

    async fn check(&self, context: &AuthContext) -> Result<Liveness, LivenessError> {
        if let Some(liveness) = self.check_cached(context) {
            return Ok(liveness);
        }
        let Some((session_id, user)) = context.session_and_user_uuids() else {
            return Ok(Liveness::Unknown);
        };
        self.inner.misses.fetch_add(1, Ordering::Relaxed);
        let epoch = self.inner.epoch.load(Ordering::SeqCst);
        let session = self.query(session_id).await?;
        let answer = session.answer(user);
        let live = session.state.is_live();
        // A session that ended stays ended, and one that does not exist is not created
        // under a known id: those hold until the store changes them. A live one holds for
        // the live TTL at most, and never past the session's deadline.
        let until = if live {
            if !self.quiet_since(epoch) {
                // A revocation may have slipped past this query, or none would be
                // pushed to us now: answer, but do not remember.
                return Ok(answer);
            }
            let ttl = self.inner.live_ttl.min(session.remaining);
            if ttl.is_zero() {
                return Ok(answer);
            }
            Some(Instant::now() + ttl)
        } else {
            None
        };
        #[cfg(test)]
        self.paused_before_caching().await;
        let tracked = match self.inner.cache.get_value_or_guard(&session_id, None) {
            GuardResult::Value(tracked) if tracked.owner == session.owner => {
                tracked.cell.set(session.state, until);
                Some(tracked)
            }
            GuardResult::Value(_) => {
                // Tracked as someone else's (or as absent) before: not this answer's to
                // overwrite; the next request asks afresh.
                self.inner.stop_tracking(session_id);
                None
            }
            GuardResult::Guard(guard) => {
                let tracked = Tracked {
                    owner: session.owner,
                    cell: LivenessCell::new(session.state, until),
                };
                match guard.insert(tracked.clone()) {
                    Ok(()) => Some(tracked),
                    // Removed meanwhile, by something that evicts: nothing to keep.
                    Err(_) => None,
                }
            }
            GuardResult::Timeout => None,
        };
        if let Some(tracked) = tracked
            && live
            && !self.quiet_since(epoch)
        {
            // Something that evicts came between the check above and the write, and its
            // eviction may have run before the write: take the cell back. (The eviction
            // bumps the epoch before it invalidates, the write comes before this load:
            // one of the two sees the other.)
            tracked.retire(&self.inner.hits);
            self.inner.stop_tracking(session_id);
        }
        Ok(answer)
    }

    fn watch(&self, context: &AuthContext) -> Option<LivenessCell> {
        let (session, user) = context.session_and_user_uuids()?;
        let tracked = self.inner.cache.get(&session)?;
        (tracked.owner == Some(user)).then_some(tracked.cell)
    }
}

impl Inner {
    /// Evicts `session` and invalidates its cell.
    fn stop_tracking(&self, session: Uuid) {
        if let Some((_, tracked)) = self.cache.remove(&session) {
            tracked.retire(&self.hits);
        }
    }

    /// Evicts every session and invalidates every cell.
    fn stop_tracking_all(&self) {
        for (_, tracked) in self.cache.drain() {
            tracked.retire(&self.hits);
        }
    }
}

/// Keeps one `LISTEN` connection up for as long as the store lives.
async fn listen(store: Weak<Inner>, config: DatabaseConfig, channel: String) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    let mut backoff = FIRST_BACKOFF;
    loop {
        match listen_once(&store, &config, &channel).await {
            Ok(()) => backoff = FIRST_BACKOFF,
            Err(e) => {
                let reason = error_text(&e);
                tracing::warn!(error = %reason, ?backoff, "revocation listener cannot connect");
                if let Some(inner) = store.upgrade() {
                    *lock(&inner.listener_error) = Some(reason);
                }
            }
        }
        let Some(inner) = store.upgrade() else { return };
        forget_everything(&inner);
        drop(inner);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Connects, listens and evicts until the connection ends. `Ok` once it had connected.
async fn listen_once(
    store: &Weak<Inner>,
    config: &DatabaseConfig,
    channel: &str,
) -> Result<(), tokio_postgres::Error> {
    let mut listener = Listener::connect(config, channel).await?;
    {
        let Some(inner) = store.upgrade() else {
            return Ok(());
        };
        *lock(&inner.listener_error) = None;
        // Whatever was cached before this connection existed may have missed a message.
        forget_everything(&inner);
        inner.listener_connected.store(true, Ordering::SeqCst);
        inner.listener_connects.fetch_add(1, Ordering::Relaxed);
    }
    tracing::info!(channel, "revocation listener connected");
    let mut ping = tokio::time::interval(Duration::from_secs(30));
    ping.tick().await;
    loop {
        tokio::select! {
            notification = listener.recv() => {
                let Some(notification) = notification else { break };
                let Some(inner) = store.upgrade() else { return Ok(()) };
                inner.epoch.fetch_add(1, Ordering::SeqCst);
                if notification.payload() == EVERY_SESSION {
                    inner.stop_tracking_all();
                } else if let Ok(id) = Uuid::parse_str(notification.payload()) {
                    inner.stop_tracking(id);
                }
                inner.notifications.fetch_add(1, Ordering::Release);
                tracing::debug!(session_id = notification.payload(), "session revoked: evicted");
            }
            _ = ping.tick() => {
                // A connection that silently died (no RST) would otherwise look alive.
                let alive =
                    tokio::time::timeout(Duration::from_secs(5), listener.client().simple_query(""))
                        .await;
                if !matches!(alive, Ok(Ok(_))) {
                    tracing::warn!("revocation listener stopped answering");
                    break;
                }
            }
        }
    }
    if let Some(inner) = store.upgrade() {
        inner.listener_connected.store(false, Ordering::SeqCst);
    }
    tracing::warn!("revocation listener disconnected; cache cleared, reconnecting");
    Ok(())
}

fn forget_everything(inner: &Inner) {
    inner.listener_connected.store(false, Ordering::SeqCst);
    inner.epoch.fetch_add(1, Ordering::SeqCst);
    inner.stop_tracking_all();
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An error and the causes its own text does not already give, outermost first.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, Instant};

    use http::header::AUTHORIZATION;
    use http::{HeaderMap, HeaderValue};
    use portcullis_testdb::{PostgresProxy, TestDb};
    use tokio_postgres::Client;
    use uuid::Uuid;

    use super::*;
    use crate::authenticator::Authenticator;
    use crate::error::AuthError;
    use crate::test_tokens::{token, verifier};

    /// Where a query stopped before caching its answer: `reached` fires when it gets
    /// there, and it goes on once `resume` fires (or is dropped).
    pub(crate) struct Pause {
        pub(crate) reached: tokio::sync::oneshot::Sender<()>,
        pub(crate) resume: tokio::sync::oneshot::Receiver<()>,
    }

    impl PostgresLiveness {
        /// Makes the next query that is about to cache its answer wait: the receiver
        /// fires when it does, and the sender lets it go on.
        fn pause_before_caching(
            &self,
        ) -> (
            tokio::sync::oneshot::Receiver<()>,
            tokio::sync::oneshot::Sender<()>,
        ) {
            let (reached, reached_rx) = tokio::sync::oneshot::channel();
            let (resume_tx, resume) = tokio::sync::oneshot::channel();
            *self
                .inner
                .pause_before_caching
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(Pause { reached, resume });
            (reached_rx, resume_tx)
        }
    }

    /// Polls `condition` every 10 ms for up to 10 s.
    pub(crate) async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A started store whose revocation listener is connected: a notification sent
    /// before `LISTEN` is lost for good.
    pub(crate) async fn started(builder: PostgresLivenessBuilder) -> PostgresLiveness {
        let store = builder.start().unwrap();
        eventually("the listener to connect", || {
            store.stats().listener_connected
        })
        .await;
        store
    }

    async fn user(client: &Client) -> Uuid {
        client
            .query_one(
                "INSERT INTO users (email, password_hash) \
                 VALUES (gen_random_uuid() || '@example.com', 'x') RETURNING id",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn session(client: &Client, user: Uuid, idle: &str) -> Uuid {
        client
            .query_one(
                &format!(
                    "INSERT INTO sessions (user_id, idle_expires_at, absolute_expires_at) \
                     VALUES ($1, now() + interval '{idle}', now() + interval '90 days') \
                     RETURNING id"
                ),
                &[&user],
            )
            .await
            .unwrap()
            .get(0)
    }

    async fn revoke(client: &Client, session: Uuid) {
        client
            .execute(
                "UPDATE sessions SET revoked_at = now(), revoked_reason = 'admin' WHERE id = $1",
                &[&session],
            )
            .await
            .unwrap();
    }

    fn bearer(user: Uuid, session: Uuid) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Bearer {}", token(&user.to_string(), &session.to_string()));
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
        headers
    }

    #[tokio::test]
    async fn a_session_revoked_by_plain_sql_is_refused_on_the_next_request() {
        let db = TestDb::new().await;
        let client = db.connect().await;
        let user = user(&client).await;
        let session = session(&client, user, "14 days").await;
        let store = started(PostgresLiveness::builder(db.config().clone().into())).await;
        let auth = Authenticator::new(verifier(), store.clone());
        let headers = bearer(user, session);

        let context = auth.authenticate(&headers).await.unwrap();
        auth.authenticate(&headers).await.unwrap();
        let stats = store.stats();
        assert_eq!(
            (stats.misses, stats.hits),
            (1, 1),
            "the second answer came from memory"
        );
        let held = store.watch(&context).expect("the session's cell");
        assert_eq!(held.read(Tick::now()), Some(Liveness::Live));

        revoke(&client, session).await;
        eventually("the notification", || store.stats().notifications == 1).await;
        assert_eq!(
            held.read(Tick::now()),
            None,
            "the notification invalidated the cell the token holds"
        );
        assert!(matches!(
            auth.authenticate(&headers).await,
            Err(AuthError::SessionNotLive(Liveness::Revoked))
        ));
        // And the revoked answer is remembered: no further queries.
        let misses = store.stats().misses;
        assert!(auth.authenticate(&headers).await.is_err());
        assert_eq!(store.stats().misses, misses);
    }

    #[tokio::test]
    async fn forget_makes_the_next_request_ask_the_database() {
        let db = TestDb::new().await;
        let client = db.connect().await;
        let user = user(&client).await;
        let session = session(&client, user, "14 days").await;
        // No notifications reach this store: only `forget` can evict.
        let store = started(
            PostgresLiveness::builder(db.config().clone().into())
                .with_channel("nobody_notifies_here"),
        )
        .await;
        let auth = Authenticator::new(verifier(), store.clone());
        let headers = bearer(user, session);
        auth.authenticate(&headers).await.unwrap();
        revoke(&client, session).await;
        assert!(
            auth.authenticate(&headers).await.is_ok(),
            "still cached as live"
        );
        store.forget(session);
        assert!(matches!(
            auth.authenticate(&headers).await,
            Err(AuthError::SessionNotLive(Liveness::Revoked))
        ));
    }

    /// A session the bounded cache evicts is not revoked by anyone any more: its cell,
    /// still held by a cached token, must stop saying "live".
    #[tokio::test]
    async fn a_session_evicted_from_the_cache_is_not_trusted_through_its_cell() {
        let db = TestDb::new().await;
        let client = db.connect().await;
        let user = user(&client).await;
        let session = session(&client, user, "14 days").await;
        // No notifications reach this store: only the eviction can tell the cell.
        let store = started(
            PostgresLiveness::builder(db.config().clone().into())
                .with_channel("nobody_notifies_here"),
        )
        .await;
        let auth = Authenticator::new(verifier(), store.clone());
        let headers = bearer(user, session);
        let context = auth.authenticate(&headers).await.unwrap();
        let held = store.watch(&context).expect("the session's cell");
        assert_eq!(held.read(Tick::now()), Some(Liveness::Live));

        // Shrinking the cache evicts the way filling it does: through its lifecycle.
        store.inner.cache.set_capacity(0);
        assert!(!store.inner.cache.contains_key(&session), "evicted");
        assert_eq!(held.read(Tick::now()), None, "evicted, so invalidated");

        revoke(&client, session).await;
        assert!(matches!(
            auth.authenticate(&headers).await,
            Err(AuthError::SessionNotLive(Liveness::Revoked))
        ));
    }

    #[tokio::test]
    async fn expired_unknown_and_foreign_sessions_are_refused() {
        let db = TestDb::new().await;
        let client = db.connect().await;
        let owner = user(&client).await;
        let other = user(&client).await;
        let expired = session(&client, owner, "-1 second").await;
        let live = session(&client, owner, "14 days").await;
        let store = started(PostgresLiveness::builder(db.config().clone().into())).await;
        let auth = Authenticator::new(verifier(), store);
        for (user, session, expected) in [
            (owner, expired, Liveness::Expired),
            (owner, Uuid::new_v4(), Liveness::Unknown),
            (other, live, Liveness::Unknown),
        ] {
            match auth.authenticate(&bearer(user, session)).await {
                Err(AuthError::SessionNotLive(got)) => assert_eq!(got, expected),
                other => panic!("{expected:?}: {other:?}"),
            }
        }
        // Ids the schema cannot hold are refused without a query.
        let mut headers = HeaderMap::new();
        let value = format!("Bearer {}", token("not-a-uuid", "neither"));
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
        assert!(matches!(
            auth.authenticate(&headers).await,
            Err(AuthError::SessionNotLive(Liveness::Unknown))
        ));
    }

    #[tokio::test]
    async fn a_session_reaching_its_deadline_while_cached_is_refused() {
        let db = TestDb::new().await;
        let client = db.connect().await;
        let user = user(&client).await;
        let session = session(&client, user, "300 milliseconds").await;
        let store = started(PostgresLiveness::builder(db.config().clone().into())).await;
        let auth = Authenticator::new(verifier(), store);
        let headers = bearer(user, session);
        auth.authenticate(&headers).await.unwrap();
        // Live until the deadline passes, then refused: never anything else.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match auth.authenticate(&headers).await {
                Ok(_) => assert!(Instant::now() < deadline, "never refused"),
                Err(AuthError::SessionNotLive(Liveness::Expired)) => break,
                Err(other) => panic!("{other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_missed_notification_is_bounded_by_the_live_ttl() {
        let db = TestDb::new().await;
        let client = db.connect().await;
        let user = user(&client).await;
        let session = session(&client, user, "14 days").await;
        // Listening on a channel nobody notifies: every revocation is "missed".
        let store = started(
            PostgresLiveness::builder(db.config().clone().into())
                .with_channel("nobody_notifies_here")
                .with_live_ttl(Duration::from_millis(300)),
        )
        .await;
        let auth = Authenticator::new(verifier(), store);
        let headers = bearer(user, session);
        auth.authenticate(&headers).await.unwrap();
        revoke(&client, session).await;
        let revoked = Instant::now();
        // Served from memory until the cached answer's 300 ms run out, then refused.
        loop {
            match auth.authenticate(&headers).await {
                Ok(_) => assert!(
                    revoked.elapsed() < Duration::from_millis(300),
                    "accepted {:?} after the revocation, past the live TTL",
                    revoked.elapsed()
                ),
                Err(AuthError::SessionNotLive(Liveness::Revoked)) => break,
                Err(other) => panic!("{other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_killed_listener_clears_the_cache_reconnects_and_still_honours_revocations() {
        let db = TestDb::new().await;
        let client = db.connect().await;
        let user = user(&client).await;
        let session = session(&client, user, "14 days").await;
        let store = started(PostgresLiveness::builder(db.config().clone().into())).await;
        let auth = Authenticator::new(verifier(), store.clone());
        let headers = bearer(user, session);
        auth.authenticate(&headers).await.unwrap();
        assert_eq!(store.stats().misses, 1);

        let killed: i64 = client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = $1 AND datname = current_database()",
                &[&LISTENER_APPLICATION_NAME],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(killed, 1, "exactly one listener backend");
        eventually("the listener to reconnect", || {
            let stats = store.stats();
            stats.listener_connects == 2 && stats.listener_connected
        })
        .await;

        // The cache was cleared: the next answer comes from the database again.
        auth.authenticate(&headers).await.unwrap();
        assert_eq!(store.stats().misses, 2);

        revoke(&client, session).await;
        eventually("the notification", || store.stats().notifications == 1).await;
        assert!(matches!(
            auth.authenticate(&headers).await,
            Err(AuthError::SessionNotLive(Liveness::Revoked))
        ));
    }

    #[tokio::test]
    async fn an_unreachable_database_gives_503_never_200_and_recovery_follows() {
        let db = TestDb::new().await;
        let client = db.connect().await;
        let user = user(&client).await;
        let cached = session(&client, user, "14 days").await;
        let fresh = session(&client, user, "14 days").await;
        let mut proxy = PostgresProxy::start(db.config()).await;
        let store = started(
            PostgresLiveness::builder(proxy.route(db.config()).into())
                .with_query_timeout(Duration::from_millis(500)),
        )
        .await;
        let auth = Authenticator::new(verifier(), store.clone());
        auth.authenticate(&bearer(user, cached)).await.unwrap();

        proxy.cut();
        eventually("the listener to notice", || {
            !store.stats().listener_connected
        })
        .await;
        for session in [cached, fresh] {
            for _ in 0..3 {
                let outcome = auth.authenticate(&bearer(user, session)).await;
                let err = outcome.expect_err("no session can be vouched for while down");
                assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
                assert_eq!(err.status(), 503);
            }
        }

        proxy.restore().await;
        eventually("the listener to reconnect", || {
            store.stats().listener_connected
        })
        .await;
        auth.authenticate(&bearer(user, fresh)).await.unwrap();
    }

    /// The cache answers for a session only to its own user: a validly signed token of
    /// user B that carries user A's `sid` is refused while A's session is cached as live,
    /// and A's entry keeps answering A.
    #[tokio::test]
    async fn a_token_of_another_user_does_not_ride_a_cached_live_session() {
        let db = TestDb::new().await;
        let client = db.connect().await;
        let owner = user(&client).await;
        let intruder = user(&client).await;
        let session = session(&client, owner, "14 days").await;
        let store = started(PostgresLiveness::builder(db.config().clone().into())).await;
        let auth = Authenticator::new(verifier(), store.clone());
        auth.authenticate(&bearer(owner, session)).await.unwrap();
        auth.authenticate(&bearer(owner, session)).await.unwrap();
        assert_eq!(store.stats().hits, 1, "cached as live");

        match auth.authenticate(&bearer(intruder, session)).await {
            Err(AuthError::SessionNotLive(Liveness::Unknown)) => {}
            other => panic!("another user's token rode the cached session: {other:?}"),
        }
        let misses = store.stats().misses;
        auth.authenticate(&bearer(owner, session)).await.unwrap();
        assert_eq!(
            store.stats().misses,
            misses,
            "the owner's entry is still cached"
        );
    }

    /// Nor can such a token plant an answer in the session's entry: asked first, the
    /// intruder's "unknown" must not lock the owner out.
    #[tokio::test]
    async fn a_token_of_another_user_does_not_poison_the_session_entry() {
        let db = TestDb::new().await;
        let client = db.connect().await;
        let owner = user(&client).await;
        let intruder = user(&client).await;
        let session = session(&client, owner, "14 days").await;
        let store = started(PostgresLiveness::builder(db.config().clone().into())).await;
        let auth = Authenticator::new(verifier(), store);
        let mut headers = HeaderMap::new();
        let value = format!("Bearer {}", token("not-a-uuid", &session.to_string()));
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
        for intruding in [bearer(intruder, session), headers] {
            assert!(matches!(
                auth.authenticate(&intruding).await,
                Err(AuthError::SessionNotLive(Liveness::Unknown))
            ));
            auth.authenticate(&bearer(owner, session))
                .await
                .expect("the owner was locked out by another token's answer");
        }
    }

    /// A revocation whose notification lands after the database said "live" but before
    /// that answer is cached must not leave a live entry behind.
    #[tokio::test]
    async fn a_revocation_between_the_answer_and_its_caching_leaves_nothing_live() {
        let db = TestDb::new().await;
        let client = db.connect().await;
        let user = user(&client).await;
        let session = session(&client, user, "14 days").await;
        let store = started(PostgresLiveness::builder(db.config().clone().into())).await;
        let auth = Authenticator::new(verifier(), store.clone());
        let headers = bearer(user, session);

        let (reached, resume) = store.pause_before_caching();
        let asking = tokio::spawn({
            let auth = auth.clone();
            let headers = headers.clone();
            async move { auth.authenticate(&headers).await }
        });
        reached.await.expect("the query reached the cache");
        revoke(&client, session).await;
        eventually("the notification", || store.stats().notifications == 1).await;
        resume.send(()).unwrap();
        // Live when it was asked: that one answer stands.
        asking.await.unwrap().unwrap();

        assert!(
            matches!(
                auth.authenticate(&headers).await,
                Err(AuthError::SessionNotLive(Liveness::Revoked))
            ),
            "a live answer was cached past its revocation"
        );
    }
}

#[cfg(test)]
mod readiness {
    use std::time::Duration;

    use portcullis_testdb::TestDb;

    use super::{NotReady, PostgresLiveness};
    use crate::postgres::DatabaseConfig;

    #[tokio::test]
    async fn a_migrated_database_is_ready() {
        let db = TestDb::new().await;
        let store = PostgresLiveness::builder(db.config().clone().into())
            .start()
            .unwrap();
        store.ready().await.unwrap();
        assert!(store.stats().listener_connected);
    }

    #[tokio::test]
    async fn a_database_without_the_schema_says_so() {
        let db = TestDb::empty().await;
        let store = PostgresLiveness::builder(db.config().clone().into())
            .start()
            .unwrap();
        let error = store.ready().await.unwrap_err();
        assert!(matches!(error, NotReady::MissingSchema { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(db.name()), "names the database: {message}");
        assert!(message.contains("no sessions table"), "{message}");
    }

    #[tokio::test]
    async fn a_schema_whose_trigger_notifies_elsewhere_says_so() {
        let db = TestDb::new().await;
        let store = PostgresLiveness::builder(db.config().clone().into())
            .with_channel("nobody_notifies_here")
            .start()
            .unwrap();
        let error = store.ready().await.unwrap_err();
        assert!(
            matches!(&error, NotReady::MissingRevocationTrigger { channel, .. } if channel == "nobody_notifies_here"),
            "{error:?}"
        );

        // And without the triggers at all.
        db.connect()
            .await
            .batch_execute(
                "DROP TRIGGER sessions_notify_revoked_on_update ON sessions; \
                 DROP TRIGGER sessions_notify_revoked_on_delete ON sessions; \
                 DROP TRIGGER sessions_notify_revoked_on_truncate ON sessions;",
            )
            .await
            .unwrap();
        let store = PostgresLiveness::builder(db.config().clone().into())
            .start()
            .unwrap();
        let error = store.ready().await.unwrap_err();
        assert!(
            matches!(error, NotReady::MissingRevocationTrigger { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_says_so_quickly() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let database: DatabaseConfig =
            format!("host=127.0.0.1 port={port} user=nobody dbname=none")
                .parse()
                .unwrap();
        let store = PostgresLiveness::builder(database)
            .with_query_timeout(Duration::from_secs(1))
            .start()
            .unwrap();
        let started = std::time::Instant::now();
        let error = store.ready().await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        assert!(matches!(error, NotReady::Unreachable { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&format!("port {port}")), "{message}");
        assert!(message.contains("refused"), "{message}");
    }
}
