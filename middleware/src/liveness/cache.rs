//! [`LivenessCache`]: sessions' liveness held in memory, asked of a [`SessionQuery`] on a
//! miss and kept current by a [`RevocationFeed`].
//!
//! - The cache holds one [`LivenessCell`] per session, which it hands to every verified
//!   token of the session ([`LivenessCheck::watch`]): a request of a cached token reads
//!   the cell and nothing else.
//! - A live answer holds for a bounded time (the live TTL, default 15 s) and never past
//!   the session's own deadline; a revoked, expired or unknown answer holds for as long as
//!   tokens ask (each token entry ends at its own `exp`).
//! - The feed's events act at once: a session that ended is evicted and its cell
//!   invalidated, so the next request of any of its tokens asks the query; a bulk
//!   revocation ("user U's sessions that started before T") ends the cells it covers; a
//!   feed that may have missed something makes the cache forget everything.
//! - While the feed is not connected, no live answer is remembered (what is held runs out
//!   at its bound). A LISTEN-style feed that cannot resume also says it missed events,
//!   and the cache empties; a feed that resumes where it stopped keeps the cache.
//! - The cache is bounded; a session it evicts has its cell invalidated first, so a token
//!   that still holds the cell asks again rather than trusting what no one updates.
//! - An entry is what the source of truth says of a session, whoever asked: its user, its
//!   start and its state, under its id. A token of another user that carries the id is
//!   answered "unknown", and what it asked is never cached as the session's live answer.
//! - A query racing an event that concerns its session (its own revocation, a bulk one
//!   of its user or of everyone, the feed dropping) never leaves its possibly stale live
//!   answer in a cell: it checks before caching and again after, and takes the cell back
//!   if anything came between (see [`RaceGuard`]).
//!
//! ```no_run
//! # async fn run(query: impl portcullis::SessionQuery, feed: impl portcullis::RevocationFeed) {
//! use std::time::Duration;
//! use portcullis::LivenessCache;
//!
//! let cache = LivenessCache::builder(query)
//!     .with_live_ttl(Duration::from_secs(15))
//!     .with_capacity(1_000_000)
//!     .start(feed);
//! // `Authenticator::new(verifier, cache)`: it is a `LivenessCheck`.
//! # let _ = cache;
//! # }
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use quick_cache::sync::{Cache, GuardResult};
use quick_cache::{DefaultHashBuilder, Lifecycle, UnitWeighter};
use uuid::Uuid;

use super::arena::{ArenaCell, CellArena, SlotRef};
use super::feed::{FeedEvent, Revocation, RevocationFeed};
use super::query::{SessionQuery, SessionRecord, SessionState};
use super::{Liveness, LivenessCell, LivenessCheck, LivenessError, Tick};
use crate::context::AuthContext;

/// The default bound on a live answer served from memory.
pub const DEFAULT_LIVE_TTL: Duration = Duration::from_secs(15);
/// The default number of sessions a cache holds.
pub const DEFAULT_CACHE_CAPACITY: u64 = 1_000_000;

/// Counters for metrics: cache hits and misses, and the revocation feed's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LivenessStats {
    /// Answers served from the cache.
    pub hits: u64,
    /// Answers that needed the source of truth.
    pub misses: u64,
    /// Whether the revocation feed (for [`PostgresLiveness`](crate::PostgresLiveness),
    /// its `LISTEN` connection) is connected now.
    pub listener_connected: bool,
    /// How many times the feed has connected (1 after a clean start).
    pub listener_connects: u64,
    /// Revocations the feed delivered.
    pub notifications: u64,
    /// How many times the cache forgot everything because its feed may have missed
    /// revocations.
    pub forgot_everything: u64,
}

/// Releases the slot of what the cache evicts to stay in bounds: a cell no one would
/// update any more must not go on saying "live" to the tokens that hold it.
#[derive(Debug, Clone)]
struct ReleaseOnEviction {
    arena: Arc<CellArena>,
}

impl Lifecycle<Uuid, SlotRef> for ReleaseOnEviction {
    type RequestState = ();

    fn on_evict(&self, (): &mut (), _session: Uuid, slot: SlotRef) {
        self.arena.release(slot);
    }
}

/// Each cached session is its id (the key revocations name) and its slot in the arena,
/// which holds its state, start and owner.
type SessionMap = Cache<Uuid, SlotRef, UnitWeighter, DefaultHashBuilder, ReleaseOnEviction>;

/// How many counters each kind of event is spread over in the [`RaceGuard`].
const STRIPES: usize = 256;

/// Tells a query whether an event that concerns its session happened while it ran.
///
/// Every event bumps a counter before it touches the cache: its session's stripe, its
/// user's stripe, or the one for everything (feed state, bulk revocations of everyone,
/// forgetting). A query takes a [`Ticket`] before it asks, and caches a live answer only
/// if the ticket still holds before the write and after it; an event after the second
/// check finds the written entry and ends it. Stripes, not one counter: with every
/// revocation of a fleet reaching every instance, one counter would change during most
/// queries and nothing live would be cached.
#[derive(Debug)]
struct RaceGuard {
    everything: AtomicU64,
    sessions: [AtomicU64; STRIPES],
    users: [AtomicU64; STRIPES],
}

/// What a query saw of the [`RaceGuard`] before it asked.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    everything: u64,
    session_stripe: usize,
    session: u64,
    user_stripe: usize,
    user: u64,
}

fn stripe(id: Uuid) -> usize {
    let (high, low) = id.as_u64_pair();
    // The modulus fits a usize whatever the platform.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "reduced below STRIPES first"
    )]
    let index = ((high ^ low) % STRIPES as u64) as usize;
    index
}

impl RaceGuard {
    fn new() -> Self {
        Self {
            everything: AtomicU64::new(0),
            sessions: std::array::from_fn(|_| AtomicU64::new(0)),
            users: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn ticket(&self, session: Uuid, user: Uuid) -> Ticket {
        let (session_stripe, user_stripe) = (stripe(session), stripe(user));
        Ticket {
            everything: self.everything.load(Ordering::SeqCst),
            session_stripe,
            session: self.sessions[session_stripe].load(Ordering::SeqCst),
            user_stripe,
            user: self.users[user_stripe].load(Ordering::SeqCst),
        }
    }

    /// Whether nothing that concerns the ticket's session happened since it was taken.
    fn holds(&self, ticket: &Ticket) -> bool {
        self.everything.load(Ordering::SeqCst) == ticket.everything
            && self.sessions[ticket.session_stripe].load(Ordering::SeqCst) == ticket.session
            && self.users[ticket.user_stripe].load(Ordering::SeqCst) == ticket.user
    }

    fn session_changed(&self, session: Uuid) {
        self.sessions[stripe(session)].fetch_add(1, Ordering::SeqCst);
    }

    fn user_changed(&self, user: Uuid) {
        self.users[stripe(user)].fetch_add(1, Ordering::SeqCst);
    }

    fn everything_changed(&self) {
        self.everything.fetch_add(1, Ordering::SeqCst);
    }
}

/// What the cache knows of its feed.
#[derive(Debug, Default)]
struct FeedState {
    connected: AtomicBool,
    connects: AtomicU64,
    revocations: AtomicU64,
    forgot_everything: AtomicU64,
    /// Why the feed last went away, until it connects again.
    last_error: std::sync::Mutex<Option<String>>,
}

/// Configures and starts a [`LivenessCache`].
#[derive(Debug)]
#[must_use]
pub struct LivenessCacheBuilder<Q> {
    query: Q,
    live_ttl: Duration,
    capacity: u64,
}

impl<Q: SessionQuery> LivenessCacheBuilder<Q> {
    /// How long a live answer may be served from memory (default 15 s): it bounds how
    /// long a revocation the feed failed to deliver can go unseen.
    pub fn with_live_ttl(mut self, ttl: Duration) -> Self {
        self.live_ttl = ttl;
        self
    }

    /// How many sessions the cache holds (default 1,000,000).
    pub fn with_capacity(mut self, capacity: u64) -> Self {
        self.capacity = capacity;
        self
    }

    /// Builds the cache and starts a task that applies `feed`'s events until the last
    /// clone of the cache is dropped. Must be called inside a Tokio runtime.
    pub fn start(self, feed: impl RevocationFeed) -> LivenessCache<Q> {
        let capacity = self.capacity.max(1);
        // Room for what the cache holds, and for the slots of entries on their way in
        // or out while it is full.
        let arena = Arc::new(CellArena::new(capacity.saturating_add(capacity / 4)));
        let inner = Arc::new(Inner {
            query: self.query,
            sessions: Cache::with(
                usize::try_from(capacity).unwrap_or(usize::MAX),
                capacity,
                UnitWeighter,
                DefaultHashBuilder::default(),
                ReleaseOnEviction {
                    arena: Arc::clone(&arena),
                },
            ),
            arena,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            guard: RaceGuard::new(),
            feed: FeedState::default(),
            live_ttl: self.live_ttl,
            driver: std::sync::Mutex::new(None),
            #[cfg(test)]
            pause_before_caching: std::sync::Mutex::new(None),
        });
        let task = tokio::spawn(drive(Arc::downgrade(&inner), feed));
        *lock(&inner.driver) = Some(task);
        LivenessCache { inner }
    }
}

/// Sessions' liveness, cached in front of a [`SessionQuery`] and kept current by a
/// [`RevocationFeed`]: the piece every store with a database and a feed shares.
/// [`PostgresLiveness`](crate::PostgresLiveness) is one with PostgreSQL's query and its
/// `LISTEN` feed.
///
/// Cheap to clone: clones share the cache and the feed, which stops when the last clone
/// is dropped.
pub struct LivenessCache<Q> {
    inner: Arc<Inner<Q>>,
}

impl<Q> Clone for LivenessCache<Q> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<Q: SessionQuery> std::fmt::Debug for LivenessCache<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivenessCache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

struct Inner<Q> {
    query: Q,
    /// Keyed by the session's UUID: the key revocations name.
    sessions: SessionMap,
    /// The cells, and the users they belong to.
    arena: Arc<CellArena>,
    /// Answers given from memory, collected from the arena when
    /// [`LivenessCache::stats`] is asked: the hit count.
    hits: AtomicU64,
    misses: AtomicU64,
    guard: RaceGuard,
    feed: FeedState,
    live_ttl: Duration,
    driver: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Tests only: the next query's answer waits here, just before it is cached.
    #[cfg(test)]
    pause_before_caching: std::sync::Mutex<Option<tests::Pause>>,
}

impl<Q> Drop for Inner<Q> {
    fn drop(&mut self) {
        if let Some(task) = self
            .driver
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl<Q: SessionQuery> LivenessCache<Q> {
    /// A builder for a cache that asks `query` on a miss.
    pub fn builder(query: Q) -> LivenessCacheBuilder<Q> {
        LivenessCacheBuilder {
            query,
            live_ttl: DEFAULT_LIVE_TTL,
            capacity: DEFAULT_CACHE_CAPACITY,
        }
    }

    /// The query the cache asks on a miss.
    pub fn query(&self) -> &Q {
        &self.inner.query
    }

    /// Drops what this instance remembers about `session`, at once: for the process that
    /// revokes a session itself, which should not accept its tokens even for the
    /// milliseconds until the feed says so.
    pub fn forget(&self, session: Uuid) {
        self.apply(&Revocation::Session { session });
    }

    /// Applies `revocation` at once, as if the feed had delivered it: for the process that
    /// commits a bulk revocation itself.
    pub fn apply(&self, revocation: &Revocation) {
        self.inner.apply(revocation);
    }

    /// Cache and feed counters.
    pub fn stats(&self) -> LivenessStats {
        let inner = &self.inner;
        inner
            .hits
            .fetch_add(inner.arena.take_hits(), Ordering::Relaxed);
        LivenessStats {
            hits: inner.hits.load(Ordering::Relaxed),
            misses: inner.misses.load(Ordering::Relaxed),
            listener_connected: inner.feed.connected.load(Ordering::Acquire),
            listener_connects: inner.feed.connects.load(Ordering::Relaxed),
            notifications: inner.feed.revocations.load(Ordering::Acquire),
            forgot_everything: inner.feed.forgot_everything.load(Ordering::Relaxed),
        }
    }

    /// Waits up to `timeout` for the feed to be connected; `Err` holds why it is not
    /// (its last error, or "not connected yet").
    pub async fn wait_for_feed(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while !self.inner.feed.connected.load(Ordering::SeqCst) {
            if Instant::now() >= deadline {
                return Err(lock(&self.inner.feed.last_error)
                    .clone()
                    .unwrap_or_else(|| "not connected yet".to_owned()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    #[cfg(test)]
    async fn paused_before_caching(&self) {
        let pause = lock(&self.inner.pause_before_caching).take();
        if let Some(pause) = pause {
            let _ = pause.reached.send(());
            let _ = pause.resume.await;
        }
    }

    /// Whether the ticket still holds and the feed is up to push the next revocation.
    fn quiet_since(&self, ticket: &Ticket) -> bool {
        self.inner.guard.holds(ticket) && self.inner.feed.connected.load(Ordering::SeqCst)
    }
}

/// Microseconds since the Unix epoch (0 before it): how the arena keeps instants.
fn micros(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

impl<Q: SessionQuery> LivenessCheck for LivenessCache<Q> {
    fn check_cached(&self, context: &AuthContext) -> Option<Liveness> {
        let Some((session, user)) = context.session_and_user_uuids() else {
            // Not ids a session could have: no such session, and nothing to ask.
            return Some(Liveness::Unknown);
        };
        let slot = self.inner.sessions.get(&session)?;
        self.inner.answer(session, slot, user, Tick::now())
    }

    async fn check(&self, context: &AuthContext) -> Result<Liveness, LivenessError> {
        if let Some(liveness) = self.check_cached(context) {
            return Ok(liveness);
        }
        let Some((session_id, user)) = context.session_and_user_uuids() else {
            return Ok(Liveness::Unknown);
        };
        let inner = &self.inner;
        inner.misses.fetch_add(1, Ordering::Relaxed);
        let ticket = inner.guard.ticket(session_id, user);
        let record = inner.query.session(session_id).await?;
        let (owner, state, remaining, started) = match record {
            None => (None, Liveness::Unknown, Duration::ZERO, 0),
            Some(SessionRecord {
                owner,
                state,
                started,
            }) => {
                let (state, remaining) = match state {
                    SessionState::Live { remaining } => (Liveness::Live, remaining),
                    SessionState::Revoked => (Liveness::Revoked, Duration::ZERO),
                    SessionState::Expired => (Liveness::Expired, Duration::ZERO),
                };
                (Some(owner), state, remaining, micros(started))
            }
        };
        let answer = if owner == Some(user) {
            state
        } else {
            Liveness::Unknown
        };
        let live = state.is_live();
        // A session that ended stays ended, and one that does not exist is not created
        // under a known id: those hold until the cache changes them. A live one holds for
        // the live TTL at most, never past the session's deadline, and only when this
        // token's user owns it: the guard watched this user's events, not another's.
        let until = if live {
            if owner != Some(user) || !self.quiet_since(&ticket) {
                // A revocation may have slipped past this query, or none would be
                // pushed to us now: answer, but do not remember.
                return Ok(answer);
            }
            let ttl = inner.live_ttl.min(remaining);
            if ttl.is_zero() {
                return Ok(answer);
            }
            Some(Instant::now() + ttl)
        } else {
            None
        };
        #[cfg(test)]
        self.paused_before_caching().await;
        let arena = &inner.arena;
        let cached = match inner.sessions.get_value_or_guard(&session_id, None) {
            GuardResult::Value(slot) => {
                let view = arena.view(slot);
                if view.is_some_and(|view| arena.user_id(view.user) == owner)
                    && arena.set(slot, state, until)
                {
                    Some(slot)
                } else {
                    // Tracked as someone else's (or as absent) before: not this answer's
                    // to overwrite; the next request asks afresh.
                    inner.stop_tracking(session_id);
                    None
                }
            }
            GuardResult::Guard(guard) => {
                // No slot left (the arena is full of entries on their way out): answer,
                // remember nothing.
                let Some(slot) = arena.allocate(owner, started, state, until) else {
                    return Ok(answer);
                };
                match guard.insert(slot) {
                    Ok(()) => Some(slot),
                    // Removed meanwhile, by something that evicts: nothing to keep.
                    Err(slot) => {
                        arena.release(slot);
                        None
                    }
                }
            }
            GuardResult::Timeout => None,
        };
        if let Some(slot) = cached
            && live
            && !self.quiet_since(&ticket)
        {
            // An event came between the check above and the write, and may have acted
            // before the write: take the cell back. (Events bump the guard before they
            // act, the write comes before this load: one of the two sees the other.)
            arena.invalidate(slot);
            inner.stop_tracking(session_id);
        }
        Ok(answer)
    }

    fn watch(&self, context: &AuthContext) -> Option<LivenessCell> {
        let (session, user) = context.session_and_user_uuids()?;
        let slot = self.inner.sessions.get(&session)?;
        let arena = &self.inner.arena;
        let view = arena.view(slot)?;
        (arena.user_id(view.user) == Some(user)).then(|| {
            LivenessCell::in_arena(ArenaCell {
                arena: Arc::clone(arena),
                slot,
            })
        })
    }
}

impl<Q> Inner<Q> {
    /// What `session`'s slot says for a token of `user` at `now`, from memory; `None`
    /// when the query must be asked.
    fn answer(&self, session: Uuid, slot: SlotRef, user: Uuid, now: Tick) -> Option<Liveness> {
        let arena = &self.arena;
        let view = arena.view(slot)?;
        let liveness = view.liveness(now)?;
        if arena.user_id(view.user) != Some(user) {
            arena.hit();
            return Some(Liveness::Unknown);
        }
        if liveness == Liveness::Live && arena.covered(&view) {
            // A bulk revocation covers it: the database ended it in the transaction
            // that logged the revocation, unless it is the one session spared.
            let mut spared_through = 0;
            for (before, spared) in arena.watermarks(view.user) {
                if view.started < before {
                    if spared != Some(session) {
                        arena.set(slot, Liveness::Revoked, None);
                        arena.hit();
                        return Some(Liveness::Revoked);
                    }
                    spared_through = spared_through.max(before);
                }
            }
            arena.spare(slot, spared_through);
        }
        arena.hit();
        Some(liveness)
    }

    /// Evicts `session` and releases its slot.
    fn stop_tracking(&self, session: Uuid) {
        if let Some((_, slot)) = self.sessions.remove(&session) {
            self.arena.release(slot);
        }
    }

    /// Evicts every session and releases every slot.
    fn stop_tracking_all(&self) {
        for (_, slot) in self.sessions.drain() {
            self.arena.release(slot);
        }
    }

    fn apply(&self, revocation: &Revocation) {
        match *revocation {
            Revocation::Session { session } => {
                self.guard.session_changed(session);
                self.stop_tracking(session);
            }
            Revocation::UserSessionsBefore {
                user,
                before,
                except,
            } => {
                self.guard.user_changed(user);
                self.arena.revoke_user_before(user, micros(before), except);
            }
            Revocation::AllSessionsBefore { before, except } => {
                self.guard.everything_changed();
                self.arena.revoke_all_before(micros(before), except);
            }
            Revocation::Everything => self.forget_everything(),
        }
    }

    fn forget_everything(&self) {
        self.guard.everything_changed();
        self.stop_tracking_all();
        self.feed.forgot_everything.fetch_add(1, Ordering::Relaxed);
    }

    fn on_event(&self, event: FeedEvent) {
        match event {
            FeedEvent::Connected => {
                *lock(&self.feed.last_error) = None;
                self.guard.everything_changed();
                self.feed.connected.store(true, Ordering::SeqCst);
                self.feed.connects.fetch_add(1, Ordering::Relaxed);
            }
            FeedEvent::Disconnected { reason } => {
                self.feed.connected.store(false, Ordering::SeqCst);
                self.guard.everything_changed();
                *lock(&self.feed.last_error) = Some(reason);
            }
            FeedEvent::Revoked(revocation) => {
                self.apply(&revocation);
                self.feed.revocations.fetch_add(1, Ordering::Release);
            }
            FeedEvent::Missed => self.forget_everything(),
        }
    }
}

/// Applies `feed`'s events to the cache for as long as it lives.
async fn drive<Q>(cache: Weak<Inner<Q>>, mut feed: impl RevocationFeed) {
    while let Some(event) = feed.next_event().await {
        let Some(inner) = cache.upgrade() else { return };
        inner.on_event(event);
    }
    if let Some(inner) = cache.upgrade() {
        inner.on_event(FeedEvent::Disconnected {
            reason: "the revocation feed stopped".to_owned(),
        });
    }
}

pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
impl<Q: SessionQuery> LivenessCache<Q> {
    /// Shrinks (or grows) the cache: shrinking evicts the way filling it does.
    pub(crate) fn set_capacity(&self, capacity: u64) {
        self.inner.sessions.set_capacity(capacity);
    }

    /// Whether the cache holds an entry for `session`.
    pub(crate) fn is_tracking(&self, session: Uuid) -> bool {
        self.inner.sessions.contains_key(&session)
    }

    /// Makes the next query that is about to cache its answer wait: the receiver fires
    /// when it does, and the sender lets it go on.
    pub(crate) fn pause_before_caching(
        &self,
    ) -> (
        tokio::sync::oneshot::Receiver<()>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (reached, reached_rx) = tokio::sync::oneshot::channel();
        let (resume_tx, resume) = tokio::sync::oneshot::channel();
        *lock(&self.inner.pause_before_caching) = Some(tests::Pause { reached, resume });
        (reached_rx, resume_tx)
    }
}

/// The cache's rules, against a fake query and a fake feed: each test decides what the
/// "database" says and when, and delivers feed events at the exact point it wants.
#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use tokio::sync::{mpsc, oneshot};

    use super::*;
    use crate::context::{Audience, Claims};

    /// Where a query stopped before caching its answer: `reached` fires when it gets
    /// there, and it goes on once `resume` fires (or is dropped).
    pub(crate) struct Pause {
        pub(crate) reached: oneshot::Sender<()>,
        pub(crate) resume: oneshot::Receiver<()>,
    }

    /// Sessions as a test says they are; counts queries, and can hold the next query
    /// between reading its answer and returning it.
    #[derive(Clone, Default)]
    struct FakeSessions(Arc<Mutex<FakeState>>);

    #[derive(Default)]
    struct FakeState {
        records: HashMap<Uuid, SessionRecord>,
        queries: u64,
        hold: Option<Pause>,
    }

    impl FakeSessions {
        fn put(&self, session: Uuid, record: SessionRecord) {
            lock(&self.0).records.insert(session, record);
        }

        fn revoke(&self, session: Uuid) {
            if let Some(record) = lock(&self.0).records.get_mut(&session) {
                record.state = SessionState::Revoked;
            }
        }

        fn queries(&self) -> u64 {
            lock(&self.0).queries
        }

        /// The next query reads its answer, then waits: the first receiver fires when it
        /// got there, the sender lets it return.
        fn hold_next(&self) -> (oneshot::Receiver<()>, oneshot::Sender<()>) {
            let (reached, reached_rx) = oneshot::channel();
            let (resume_tx, resume) = oneshot::channel();
            lock(&self.0).hold = Some(Pause { reached, resume });
            (reached_rx, resume_tx)
        }
    }

    impl SessionQuery for FakeSessions {
        async fn session(&self, session: Uuid) -> Result<Option<SessionRecord>, LivenessError> {
            let (record, hold) = {
                let mut state = lock(&self.0);
                state.queries += 1;
                (state.records.get(&session).copied(), state.hold.take())
            };
            if let Some(hold) = hold {
                let _ = hold.reached.send(());
                let _ = hold.resume.await;
            }
            Ok(record)
        }
    }

    /// A feed a test drives: each event is acknowledged once the cache has applied it
    /// (when the cache asks for the next one).
    struct FakeFeed {
        events: mpsc::UnboundedReceiver<(FeedEvent, oneshot::Sender<()>)>,
        applied: Option<oneshot::Sender<()>>,
    }

    impl RevocationFeed for FakeFeed {
        async fn next_event(&mut self) -> Option<FeedEvent> {
            if let Some(applied) = self.applied.take() {
                let _ = applied.send(());
            }
            let (event, applied) = self.events.recv().await?;
            self.applied = Some(applied);
            Some(event)
        }
    }

    struct Harness {
        cache: LivenessCache<FakeSessions>,
        sessions: FakeSessions,
        feed: mpsc::UnboundedSender<(FeedEvent, oneshot::Sender<()>)>,
    }

    const HOUR: Duration = Duration::from_secs(3600);

    impl Harness {
        /// A cache of `capacity` on fake sessions, its feed connected.
        async fn new(capacity: u64) -> Self {
            let sessions = FakeSessions::default();
            let (feed, events) = mpsc::unbounded_channel();
            let cache = LivenessCache::builder(sessions.clone())
                .with_capacity(capacity)
                .start(FakeFeed {
                    events,
                    applied: None,
                });
            let harness = Self {
                cache,
                sessions,
                feed,
            };
            harness.deliver(FeedEvent::Connected).await;
            harness
        }

        /// Delivers `event` and returns once the cache has applied it.
        async fn deliver(&self, event: FeedEvent) {
            let (applied, done) = oneshot::channel();
            self.feed.send((event, applied)).unwrap();
            done.await.expect("the cache applied the event");
        }

        /// A live session of `user` that started `started`, known to the fake database.
        fn live(&self, user: Uuid, started: SystemTime) -> Uuid {
            let session = Uuid::new_v4();
            self.sessions.put(
                session,
                SessionRecord::new(user, SessionState::Live { remaining: HOUR }, started),
            );
            session
        }

        /// The answer for a token of `user` in `session`, through the whole store: from
        /// memory if it can, else the query.
        async fn check(&self, user: Uuid, session: Uuid) -> Liveness {
            self.cache.check(&context(user, session)).await.unwrap()
        }

        fn cached(&self, user: Uuid, session: Uuid) -> Option<Liveness> {
            self.cache.check_cached(&context(user, session))
        }

        fn cell(&self, user: Uuid, session: Uuid) -> LivenessCell {
            self.cache
                .watch(&context(user, session))
                .expect("the session is tracked")
        }
    }

    fn context(user: Uuid, session: Uuid) -> AuthContext {
        AuthContext::new(Arc::new(Claims {
            iss: "i".into(),
            aud: Audience::One("a".into()),
            sub: user.to_string(),
            sid: session.to_string(),
            exp: u64::MAX / 2,
            iat: None,
            nbf: None,
            jti: None,
            aal: None,
            amr: Vec::new(),
            auth_time: None,
        }))
    }

    fn minutes_ago(minutes: u64) -> SystemTime {
        SystemTime::now() - Duration::from_secs(60 * minutes)
    }

    /// Two ids whose guard stripes differ.
    fn apart() -> (Uuid, Uuid) {
        loop {
            let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
            if stripe(a) != stripe(b) {
                return (a, b);
            }
        }
    }

    #[tokio::test]
    async fn a_live_answer_is_served_from_memory_until_its_session_is_revoked() {
        let harness = Harness::new(100).await;
        let user = Uuid::new_v4();
        let session = harness.live(user, minutes_ago(1));
        assert_eq!(harness.check(user, session).await, Liveness::Live);
        assert_eq!(harness.cached(user, session), Some(Liveness::Live));
        let held = harness.cell(user, session);
        assert_eq!(held.read(Tick::now()), Some(Liveness::Live));
        assert_eq!(harness.sessions.queries(), 1);

        harness.sessions.revoke(session);
        harness
            .deliver(FeedEvent::Revoked(Revocation::Session { session }))
            .await;
        assert_eq!(
            held.read(Tick::now()),
            None,
            "the event invalidated the cell"
        );
        assert_eq!(harness.check(user, session).await, Liveness::Revoked);
        assert_eq!(harness.sessions.queries(), 2);
        // The ended answer is remembered.
        assert_eq!(harness.cached(user, session), Some(Liveness::Revoked));
        assert_eq!(harness.sessions.queries(), 2);
        assert_eq!(harness.cache.stats().notifications, 1);
    }

    /// The database said "live", then the session was revoked and its event applied, and
    /// only then does the answer come back: it is given, but not remembered.
    #[tokio::test]
    async fn a_query_racing_its_sessions_revocation_leaves_nothing_live() {
        let harness = Harness::new(100).await;
        let user = Uuid::new_v4();
        let session = harness.live(user, minutes_ago(1));
        let (reached, resume) = harness.sessions.hold_next();
        let cache = harness.cache.clone();
        let asking = tokio::spawn(async move { cache.check(&context(user, session)).await });
        reached.await.unwrap();
        harness.sessions.revoke(session);
        harness
            .deliver(FeedEvent::Revoked(Revocation::Session { session }))
            .await;
        resume.send(()).unwrap();
        assert_eq!(
            asking.await.unwrap().unwrap(),
            Liveness::Live,
            "live when asked"
        );

        assert_eq!(
            harness.cached(user, session),
            None,
            "nothing live was cached"
        );
        assert_eq!(harness.check(user, session).await, Liveness::Revoked);
    }

    /// The same, with the event landing between the cache's last look and its write.
    #[tokio::test]
    async fn a_revocation_between_the_check_and_the_write_takes_the_cell_back() {
        let harness = Harness::new(100).await;
        let user = Uuid::new_v4();
        let session = harness.live(user, minutes_ago(1));
        let (reached, resume) = harness.cache.pause_before_caching();
        let cache = harness.cache.clone();
        let asking = tokio::spawn(async move { cache.check(&context(user, session)).await });
        reached.await.unwrap();
        harness.sessions.revoke(session);
        harness
            .deliver(FeedEvent::Revoked(Revocation::Session { session }))
            .await;
        resume.send(()).unwrap();
        assert_eq!(asking.await.unwrap().unwrap(), Liveness::Live);
        assert_eq!(harness.cached(user, session), None);
        assert_eq!(harness.check(user, session).await, Liveness::Revoked);
    }

    /// The guard is per session: another session's revocation during a query does not
    /// stop its answer from being remembered.
    #[tokio::test]
    async fn a_revocation_of_another_session_does_not_stop_caching() {
        let harness = Harness::new(100).await;
        let (user, other_user) = apart();
        let (session, other) = loop {
            let (a, b) = apart();
            if stripe(a) != stripe(user) && stripe(b) != stripe(user) {
                break (a, b);
            }
        };
        harness.sessions.put(
            session,
            SessionRecord::new(user, SessionState::Live { remaining: HOUR }, minutes_ago(1)),
        );
        let (reached, resume) = harness.sessions.hold_next();
        let cache = harness.cache.clone();
        let asking = tokio::spawn(async move { cache.check(&context(user, session)).await });
        reached.await.unwrap();
        harness
            .deliver(FeedEvent::Revoked(Revocation::Session { session: other }))
            .await;
        harness
            .deliver(FeedEvent::Revoked(Revocation::UserSessionsBefore {
                user: other_user,
                before: SystemTime::now(),
                except: None,
            }))
            .await;
        resume.send(()).unwrap();
        assert_eq!(asking.await.unwrap().unwrap(), Liveness::Live);
        assert_eq!(harness.cached(user, session), Some(Liveness::Live));
    }

    #[tokio::test]
    async fn a_feed_that_missed_events_makes_the_cache_forget_everything() {
        let harness = Harness::new(100).await;
        let user = Uuid::new_v4();
        let sessions: Vec<Uuid> = (0..5).map(|_| harness.live(user, minutes_ago(1))).collect();
        let mut cells = Vec::new();
        for &session in &sessions {
            assert_eq!(harness.check(user, session).await, Liveness::Live);
            cells.push(harness.cell(user, session));
        }
        harness.deliver(FeedEvent::Missed).await;
        for (cell, &session) in cells.iter().zip(&sessions) {
            assert_eq!(cell.read(Tick::now()), None);
            assert!(!harness.cache.is_tracking(session));
        }
        assert_eq!(harness.cache.stats().forgot_everything, 1);
        // Everything is asked again.
        harness.check(user, sessions[0]).await;
        assert_eq!(harness.sessions.queries(), 6);
    }

    /// A feed that resumes after a blip: what was cached stays, nothing new live is
    /// cached while it is away, and caching resumes with it.
    #[tokio::test]
    async fn while_the_feed_is_away_nothing_new_live_is_remembered() {
        let harness = Harness::new(100).await;
        let user = Uuid::new_v4();
        let held = harness.live(user, minutes_ago(1));
        let fresh = harness.live(user, minutes_ago(1));
        harness.check(user, held).await;
        harness
            .deliver(FeedEvent::Disconnected {
                reason: "blip".into(),
            })
            .await;
        assert!(!harness.cache.stats().listener_connected);
        assert_eq!(harness.cached(user, held), Some(Liveness::Live), "kept");
        assert_eq!(
            harness.cache.wait_for_feed(Duration::ZERO).await,
            Err("blip".to_owned())
        );
        for _ in 0..2 {
            assert_eq!(harness.check(user, fresh).await, Liveness::Live);
        }
        assert_eq!(
            harness.sessions.queries(),
            3,
            "each asked: nothing remembered"
        );

        harness.deliver(FeedEvent::Connected).await;
        harness.check(user, fresh).await;
        assert_eq!(harness.cached(user, fresh), Some(Liveness::Live));
        assert_eq!(harness.cache.stats().listener_connects, 2);
        assert_eq!(harness.cache.wait_for_feed(Duration::ZERO).await, Ok(()));
    }

    /// One event ends the sessions of a user that started before it, and only those:
    /// later ones, the one spared, and other users' stay live, all without a query.
    #[tokio::test]
    async fn a_bulk_revocation_ends_the_users_sessions_that_started_before_it() {
        let harness = Harness::new(100).await;
        let (user, other_user) = apart();
        let before = SystemTime::now() - Duration::from_secs(30);
        let old = harness.live(user, minutes_ago(5));
        let spared = harness.live(user, minutes_ago(5));
        let new = harness.live(user, before + Duration::from_micros(1));
        let others = harness.live(other_user, minutes_ago(5));
        let all = [
            (user, old),
            (user, spared),
            (user, new),
            (other_user, others),
        ];
        for (owner, session) in all {
            assert_eq!(harness.check(owner, session).await, Liveness::Live);
        }
        let old_cell = harness.cell(user, old);
        harness
            .deliver(FeedEvent::Revoked(Revocation::UserSessionsBefore {
                user,
                before,
                except: Some(spared),
            }))
            .await;
        assert_eq!(old_cell.read(Tick::now()), None, "covered: the cell asks");
        assert_eq!(harness.check(user, old).await, Liveness::Revoked);
        assert_eq!(old_cell.read(Tick::now()), Some(Liveness::Revoked));
        for (owner, session) in [(user, spared), (user, new), (other_user, others)] {
            assert_eq!(harness.check(owner, session).await, Liveness::Live);
        }
        assert_eq!(harness.sessions.queries(), 4, "no query after the event");
    }

    #[tokio::test]
    async fn a_bulk_revocation_of_everyone_ends_every_session_that_started_before_it() {
        let harness = Harness::new(100).await;
        let before = SystemTime::now() - Duration::from_secs(30);
        let users: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        let old: Vec<Uuid> = users
            .iter()
            .map(|&user| harness.live(user, minutes_ago(5)))
            .collect();
        let new: Vec<Uuid> = users
            .iter()
            .map(|&user| harness.live(user, before + Duration::from_millis(1)))
            .collect();
        for (i, &user) in users.iter().enumerate() {
            harness.check(user, old[i]).await;
            harness.check(user, new[i]).await;
        }
        harness
            .deliver(FeedEvent::Revoked(Revocation::AllSessionsBefore {
                before,
                except: None,
            }))
            .await;
        for (i, &user) in users.iter().enumerate() {
            assert_eq!(harness.cached(user, old[i]), Some(Liveness::Revoked));
            assert_eq!(harness.cached(user, new[i]), Some(Liveness::Live));
        }
        assert_eq!(harness.sessions.queries(), 8);
    }

    /// A query of a session that the bulk revocation covers, answered "live" before the
    /// revocation committed and returning after its event: not remembered.
    #[tokio::test]
    async fn a_query_racing_a_bulk_revocation_of_its_user_leaves_nothing_live() {
        let harness = Harness::new(100).await;
        let user = Uuid::new_v4();
        let session = harness.live(user, minutes_ago(5));
        let (reached, resume) = harness.sessions.hold_next();
        let cache = harness.cache.clone();
        let asking = tokio::spawn(async move { cache.check(&context(user, session)).await });
        reached.await.unwrap();
        harness.sessions.revoke(session);
        harness
            .deliver(FeedEvent::Revoked(Revocation::UserSessionsBefore {
                user,
                before: SystemTime::now(),
                except: None,
            }))
            .await;
        resume.send(()).unwrap();
        assert_eq!(asking.await.unwrap().unwrap(), Liveness::Live);
        assert_eq!(harness.cached(user, session), None);
        assert_eq!(harness.check(user, session).await, Liveness::Revoked);
    }

    /// A session that starts after a bulk revocation is cached and served as live.
    #[tokio::test]
    async fn a_session_started_after_a_bulk_revocation_is_live() {
        let harness = Harness::new(100).await;
        let user = Uuid::new_v4();
        let before = SystemTime::now();
        harness
            .deliver(FeedEvent::Revoked(Revocation::UserSessionsBefore {
                user,
                before,
                except: None,
            }))
            .await;
        harness
            .deliver(FeedEvent::Revoked(Revocation::AllSessionsBefore {
                before,
                except: None,
            }))
            .await;
        let session = harness.live(user, before + Duration::from_millis(5));
        assert_eq!(harness.check(user, session).await, Liveness::Live);
        assert_eq!(harness.cached(user, session), Some(Liveness::Live));
        assert_eq!(
            harness.cell(user, session).read(Tick::now()),
            Some(Liveness::Live)
        );
    }

    /// A session the bounded cache lets go is not revoked by anyone any more: its cell,
    /// still held by a token, stops saying "live".
    #[tokio::test]
    async fn an_evicted_sessions_cell_says_nothing() {
        let harness = Harness::new(1_000).await;
        let user = Uuid::new_v4();
        let sessions: Vec<Uuid> = (0..300)
            .map(|_| harness.live(user, minutes_ago(1)))
            .collect();
        let mut cells = Vec::new();
        for &session in &sessions {
            harness.check(user, session).await;
            cells.push(harness.cell(user, session));
        }
        harness.cache.set_capacity(10);
        let mut evicted = 0;
        for (cell, &session) in cells.iter().zip(&sessions) {
            if harness.cache.is_tracking(session) {
                assert_eq!(cell.read(Tick::now()), Some(Liveness::Live));
            } else {
                evicted += 1;
                assert_eq!(cell.read(Tick::now()), None, "evicted, so invalidated");
            }
        }
        assert!(evicted >= 250, "{evicted} of 300 evicted to fit 10");
    }

    /// A token of another user carrying a cached session's id is told "unknown", and its
    /// question leaves the owner's entry alone.
    #[tokio::test]
    async fn another_users_token_neither_rides_nor_poisons_a_session() {
        let harness = Harness::new(100).await;
        let (owner, intruder) = apart();
        let session = harness.live(owner, minutes_ago(1));
        assert_eq!(harness.check(intruder, session).await, Liveness::Unknown);
        assert!(harness.cache.watch(&context(intruder, session)).is_none());
        assert_eq!(harness.check(owner, session).await, Liveness::Live);
        assert_eq!(harness.cached(intruder, session), Some(Liveness::Unknown));
        assert_eq!(harness.cached(owner, session), Some(Liveness::Live));
    }

    #[tokio::test]
    async fn a_feed_that_stops_leaves_the_cache_disconnected() {
        let harness = Harness::new(100).await;
        let Harness { cache, feed, .. } = harness;
        drop(feed);
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.stats().listener_connected {
            assert!(Instant::now() < deadline, "still connected");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            cache.wait_for_feed(Duration::ZERO).await,
            Err("the revocation feed stopped".to_owned())
        );
    }
}
