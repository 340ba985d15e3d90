//! [`PostgresLiveness`]: the [`LivenessCache`] on the `sessions` table of a Portcullis
//! database, with revocations pushed over `LISTEN` ([`PostgresListenFeed`]).
//!
//! What the cache does (cells, bounds, the race guard) is [`LivenessCache`]'s; this adds
//! the PostgreSQL query ([`PostgresSessionQuery`]), the feed, and
//! [`PostgresLiveness::ready`], which says at start-up whether the database can serve
//! them.
//!
//! Starting never waits for the database, so a service starts while PostgreSQL is down;
//! [`PostgresLiveness::ready`] says whether the store can work, and what is wrong if not.

mod listen;
mod query;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

#[cfg(test)]
pub(crate) use listen::parse_payload;
pub use listen::{DEFAULT_CHANNEL, LISTENER_APPLICATION_NAME, PostgresListenFeed};
pub(crate) use listen::{LISTENER_CONNECT_TIMEOUT, error_text};
use query::LIVENESS_SQL;
pub use query::PostgresSessionQuery;

use super::cache::{DEFAULT_CACHE_CAPACITY, DEFAULT_LIVE_TTL, LivenessCache, LivenessStats};
use super::feed::Revocation;
use super::{Liveness, LivenessCell, LivenessCheck, LivenessError};
use crate::context::AuthContext;
use crate::postgres::DatabaseConfig;

/// Whether a trigger on `sessions` calls a function that names the channel `$1`: the
/// schema's revocation trigger, by what it does rather than by its name.
const REVOCATION_TRIGGER_SQL: &str = "SELECT EXISTS (SELECT 1 FROM pg_trigger t \
     JOIN pg_proc p ON p.oid = t.tgfoid \
     WHERE t.tgrelid = 'sessions'::regclass AND NOT t.tgisinternal AND t.tgenabled <> 'D' \
       AND position(quote_literal($1) IN p.prosrc) > 0)";

/// The role the pool connects as, quoted as an identifier where it needs to be.
const CURRENT_ROLE_SQL: &str = "SELECT quote_ident(current_user)";

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
    /// The role the store connects as may not run the liveness query: every request would
    /// be refused with 503.
    #[error(
        "session liveness: role {role} lacks the {privilege} privilege on table {table} at \
         {target}; grant it (GRANT {privilege} ON {table} TO {role})"
    )]
    MissingPrivilege {
        /// Where, without credentials.
        target: String,
        /// The role, as PostgreSQL quotes it.
        role: String,
        /// The table it may not read.
        table: &'static str,
        /// The privilege it lacks.
        privilege: &'static str,
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
    /// Queries work but the revocation feed (the `LISTEN` connection, or the NATS
    /// stream) does not connect.
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
    #[cfg(feature = "nats")]
    nats: Option<crate::nats::NatsFeedConfig>,
}

impl PostgresLivenessBuilder {
    /// Hear revocations from a NATS `JetStream` stream ([`NatsRevocationFeed`]) instead
    /// of PostgreSQL `LISTEN`: for a fleet, where a [`NatsRelay`] publishes the
    /// database's revocation log. Queries still go to PostgreSQL; the channel is then
    /// only checked by [`ready`](PostgresLiveness::ready) (the schema's trigger, which
    /// also writes the log, names it).
    ///
    /// [`NatsRevocationFeed`]: crate::nats::NatsRevocationFeed
    /// [`NatsRelay`]: crate::nats::NatsRelay
    #[cfg(feature = "nats")]
    #[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
    pub fn with_nats(mut self, nats: crate::nats::NatsFeedConfig) -> Self {
        self.nats = Some(nats);
        self
    }

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
        let target = self.database.to_string();
        let builder = LivenessCache::builder(PostgresSessionQuery::new(pool, self.query_timeout))
            .with_live_ttl(self.live_ttl)
            .with_capacity(self.capacity);
        #[cfg(feature = "nats")]
        if let Some(nats) = self.nats {
            let feed_target = nats.url.clone();
            return Ok(PostgresLiveness {
                cache: builder.start(crate::nats::NatsRevocationFeed::new(nats)),
                database: Arc::new(Database {
                    target,
                    feed_target,
                    channel: self.channel,
                }),
            });
        }
        let feed = PostgresListenFeed::new(self.database, self.channel.clone());
        Ok(PostgresLiveness {
            cache: builder.start(feed),
            database: Arc::new(Database {
                feed_target: target.clone(),
                target,
                channel: self.channel,
            }),
        })
    }
}

/// Session liveness from PostgreSQL's `sessions` table: a [`LivenessCache`] on
/// [`PostgresSessionQuery`] fed by [`PostgresListenFeed`]. Cheap to clone: clones share
/// the cache, the pool and the listener, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct PostgresLiveness {
    cache: LivenessCache<PostgresSessionQuery>,
    database: Arc<Database>,
}

/// What [`PostgresLiveness::ready`] checks against.
#[derive(Debug)]
struct Database {
    /// Where the store connects, without credentials, for errors.
    target: String,
    /// Where its feed connects: the database, or the NATS server.
    feed_target: String,
    channel: String,
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
            live_ttl: DEFAULT_LIVE_TTL,
            query_timeout: Duration::from_secs(2),
            capacity: DEFAULT_CACHE_CAPACITY,
            channel: DEFAULT_CHANNEL.to_owned(),
            #[cfg(feature = "nats")]
            nats: None,
        }
    }

    /// Drops what this instance remembers about `session`, at once.
    ///
    /// For the process that revokes a session itself: the notification will evict it on
    /// every instance within milliseconds, but this one should not accept the session's
    /// token even for those milliseconds after answering "logged out". The id is the
    /// session's UUID, as the `sessions` table and [`AuthContext::session_uuid`] hold it.
    pub fn forget(&self, session: Uuid) {
        self.cache.forget(session);
    }

    /// Applies `revocation` at once, as the feed will: for the process that commits a
    /// bulk revocation itself.
    pub fn apply(&self, revocation: &Revocation) {
        self.cache.apply(revocation);
    }

    /// Cache and listener counters. Walks the cache to collect the cells' hits.
    pub fn stats(&self) -> LivenessStats {
        self.cache.stats()
    }

    /// The cache underneath.
    pub fn cache(&self) -> &LivenessCache<PostgresSessionQuery> {
        &self.cache
    }

    /// Whether the store can work, checked now: PostgreSQL answers a pooled connection,
    /// the database holds the `sessions` table this version reads, the role may run the
    /// liveness query, a trigger on the table notifies the channel, and the revocation
    /// listener is connected (waiting for it a few seconds). Call it once at start-up and
    /// stop with its error: a store on the wrong database, or one PostgreSQL refuses,
    /// would otherwise answer every request with 503 and say nothing.
    pub async fn ready(&self) -> Result<(), NotReady> {
        let query = self.cache.query();
        let timeout = query.timeout();
        let target = || self.database.target.clone();
        let client = tokio::time::timeout(timeout, query.pool().get())
            .await
            .map_err(|_| NotReady::Unreachable {
                target: target(),
                reason: format!("no connection within {timeout:?}"),
            })?
            .map_err(|e| NotReady::Unreachable {
                target: target(),
                reason: error_text(&e),
            })?;
        let unreachable = |e: &tokio_postgres::Error| NotReady::Unreachable {
            target: target(),
            reason: error_text(e),
        };
        let checked = async {
            let statement = match client.prepare_cached(LIVENESS_SQL).await {
                Ok(statement) => statement,
                Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                    return Err(NotReady::MissingSchema { target: target() });
                }
                Err(e) => {
                    return Err(NotReady::IncompatibleSchema {
                        target: target(),
                        reason: db_message(&e),
                    });
                }
            };
            // Run, not just prepared: PostgreSQL checks privileges when a statement runs,
            // and a role that may not read the table must fail here, not on every request.
            if let Err(e) = client.query_opt(&statement, &[&Uuid::nil()]).await {
                if e.code() != Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
                    return Err(NotReady::IncompatibleSchema {
                        target: target(),
                        reason: db_message(&e),
                    });
                }
                let role: String = client
                    .query_one(CURRENT_ROLE_SQL, &[])
                    .await
                    .map_err(|e| unreachable(&e))?
                    .get(0);
                return Err(NotReady::MissingPrivilege {
                    target: target(),
                    role,
                    table: "sessions",
                    privilege: "SELECT",
                });
            }
            let notifies: bool = client
                .query_one(REVOCATION_TRIGGER_SQL, &[&self.database.channel])
                .await
                .map_err(|e| unreachable(&e))?
                .get(0);
            if !notifies {
                return Err(NotReady::MissingRevocationTrigger {
                    target: target(),
                    channel: self.database.channel.clone(),
                });
            }
            Ok(())
        };
        tokio::time::timeout(timeout, checked)
            .await
            .map_err(|_| NotReady::Unreachable {
                target: target(),
                reason: format!("no answer within {timeout:?}"),
            })??;
        drop(client);
        self.cache
            .wait_for_feed(LISTENER_CONNECT_TIMEOUT + Duration::from_secs(1))
            .await
            .map_err(|reason| NotReady::ListenerDown {
                target: self.database.feed_target.clone(),
                reason,
            })
    }
}

/// What PostgreSQL said, without the client's wrapping.
fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| error_text(e), |db| db.message().to_owned())
}

impl LivenessCheck for PostgresLiveness {
    fn check_cached(&self, context: &AuthContext) -> Option<Liveness> {
        self.cache.check_cached(context)
    }

    async fn check(&self, context: &AuthContext) -> Result<Liveness, LivenessError> {
        self.cache.check(context).await
    }

    fn watch(&self, context: &AuthContext) -> Option<LivenessCell> {
        self.cache.watch(context)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, Instant};

    use http::header::AUTHORIZATION;
    use http::{HeaderMap, HeaderValue};
    use portcullis_testdb::rows::{insert_session, insert_user, revoke_session};
    use portcullis_testdb::{PostgresProxy, TestDb};
    use uuid::Uuid;

    use super::*;
    use crate::authenticator::Authenticator;
    use crate::error::AuthError;
    use crate::liveness::Tick;
    use crate::test_tokens::{token, verifier};

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
        let user = insert_user(&client).await;
        let session = insert_session(&client, user, "14 days").await;
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

        revoke_session(&client, session).await;
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
        let user = insert_user(&client).await;
        let session = insert_session(&client, user, "14 days").await;
        // No notifications reach this store: only `forget` can evict.
        let store = started(
            PostgresLiveness::builder(db.config().clone().into())
                .with_channel("nobody_notifies_here"),
        )
        .await;
        let auth = Authenticator::new(verifier(), store.clone());
        let headers = bearer(user, session);
        auth.authenticate(&headers).await.unwrap();
        revoke_session(&client, session).await;
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
        let user = insert_user(&client).await;
        let session = insert_session(&client, user, "14 days").await;
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
        store.cache.set_capacity(0);
        assert!(!store.cache.is_tracking(session), "evicted");
        assert_eq!(held.read(Tick::now()), None, "evicted, so invalidated");

        revoke_session(&client, session).await;
        assert!(matches!(
            auth.authenticate(&headers).await,
            Err(AuthError::SessionNotLive(Liveness::Revoked))
        ));
    }

    #[tokio::test]
    async fn expired_unknown_and_foreign_sessions_are_refused() {
        let db = TestDb::new().await;
        let client = db.connect().await;
        let owner = insert_user(&client).await;
        let other = insert_user(&client).await;
        let expired = insert_session(&client, owner, "-1 second").await;
        let live = insert_session(&client, owner, "14 days").await;
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
        let user = insert_user(&client).await;
        let session = insert_session(&client, user, "300 milliseconds").await;
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
        let user = insert_user(&client).await;
        let session = insert_session(&client, user, "14 days").await;
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
        revoke_session(&client, session).await;
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
        let user = insert_user(&client).await;
        let session = insert_session(&client, user, "14 days").await;
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

        revoke_session(&client, session).await;
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
        let user = insert_user(&client).await;
        let cached = insert_session(&client, user, "14 days").await;
        let fresh = insert_session(&client, user, "14 days").await;
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
        let owner = insert_user(&client).await;
        let intruder = insert_user(&client).await;
        let session = insert_session(&client, owner, "14 days").await;
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
        let owner = insert_user(&client).await;
        let intruder = insert_user(&client).await;
        let session = insert_session(&client, owner, "14 days").await;
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
        let user = insert_user(&client).await;
        let session = insert_session(&client, user, "14 days").await;
        let store = started(PostgresLiveness::builder(db.config().clone().into())).await;
        let auth = Authenticator::new(verifier(), store.clone());
        let headers = bearer(user, session);

        let (reached, resume) = store.cache.pause_before_caching();
        let asking = tokio::spawn({
            let auth = auth.clone();
            let headers = headers.clone();
            async move { auth.authenticate(&headers).await }
        });
        reached.await.expect("the query reached the cache");
        revoke_session(&client, session).await;
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

    /// A role that may connect but not read `sessions` fails at start, with a message that
    /// names the table and the privilege, rather than answering 503 to every request.
    #[tokio::test]
    async fn a_role_that_may_not_read_sessions_says_so() {
        let db = TestDb::new().await;
        let admin = db.connect().await;
        let role = format!("{}_reader", db.name());
        admin
            .batch_execute(&format!("CREATE ROLE \"{role}\" LOGIN"))
            .await
            .unwrap();
        let mut config = db.config().clone();
        config.user(&role);
        let store = PostgresLiveness::builder(config.into()).start().unwrap();
        let error = store.ready().await.unwrap_err();
        drop(store);
        admin
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'; \
                 DROP ROLE \"{role}\""
            ))
            .await
            .unwrap();
        assert!(
            matches!(
                &error,
                NotReady::MissingPrivilege {
                    table: "sessions",
                    privilege: "SELECT",
                    ..
                }
            ),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains(&role), "names the role: {message}");
        assert!(
            message.contains("SELECT privilege on table sessions"),
            "names the table and the privilege: {message}"
        );
        assert!(message.contains(db.name()), "names the database: {message}");
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
