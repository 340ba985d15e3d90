//! [`LivenessCell`]: a session's liveness as its store last knew it, shared between the
//! store, which keeps it current, and every cached token of the session, which reads it.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::Liveness;
#[cfg(feature = "postgres")]
use super::arena::ArenaCell;

/// Monotonic time as nanoseconds since the first time anything here asked for it: one
/// integer, so that a state and its deadline fit one atomic word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Tick(u64);

impl Tick {
    fn base() -> Instant {
        static BASE: OnceLock<Instant> = OnceLock::new();
        *BASE.get_or_init(Instant::now)
    }

    /// Now.
    pub(crate) fn now() -> Self {
        Self::at(Instant::now())
    }

    /// `instant`, or zero if it came before the base (long past, then).
    pub(crate) fn at(instant: Instant) -> Self {
        let nanos = instant.saturating_duration_since(Self::base()).as_nanos();
        Self(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// `duration` from now, in ticks.
    pub(crate) fn after(duration: std::time::Duration) -> Self {
        let now = Self::now().0;
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Self(now.saturating_add(nanos))
    }
}

/// What one cell holds, packed in a `u64`: the state in the low [`TAG_BITS`] bits, the
/// deadline (a [`Tick`], shifted) above them. One atomic load reads both, one store
/// writes both: a reader never sees one state with another's deadline.
const TAG_BITS: u32 = 3;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
/// The largest deadline the word holds; also "no deadline".
const NO_DEADLINE: u64 = u64::MAX >> TAG_BITS;

/// The state tags. `ASK` (zero) is "the store must be asked".
pub(crate) const ASK: u64 = 0;
const LIVE: u64 = 1;
const REVOKED: u64 = 2;
const EXPIRED: u64 = 3;
const UNKNOWN: u64 = 4;

fn tag(liveness: Liveness) -> u64 {
    match liveness {
        Liveness::Live => LIVE,
        Liveness::Revoked => REVOKED,
        Liveness::Expired => EXPIRED,
        Liveness::Unknown => UNKNOWN,
    }
}

/// `liveness` until `until`, as one word.
pub(crate) fn pack(liveness: Liveness, until: Option<Instant>) -> u64 {
    let deadline = until.map_or(NO_DEADLINE, |at| Tick::at(at).0.min(NO_DEADLINE));
    (deadline << TAG_BITS) | tag(liveness)
}

/// What a word says at `now`: `None` when it says "ask", or its deadline has passed.
#[inline]
pub(crate) fn unpack(word: u64, now: Tick) -> Option<Liveness> {
    if word >> TAG_BITS <= now.0 {
        return None;
    }
    match word & TAG_MASK {
        LIVE => Some(Liveness::Live),
        REVOKED => Some(Liveness::Revoked),
        EXPIRED => Some(Liveness::Expired),
        UNKNOWN => Some(Liveness::Unknown),
        _ => None,
    }
}

/// A cell of its own, for stores that keep few ([`LivenessCell::new`]).
#[derive(Debug, Default)]
struct OwnCell {
    word: AtomicU64,
    /// Requests this cell answered: the store's cache-hit count.
    hits: AtomicU64,
}

/// Where a cell's word lives.
#[derive(Debug, Clone)]
enum Place {
    /// An allocation of its own.
    Own(Arc<OwnCell>),
    /// A slot in a [`LivenessCache`](crate::LivenessCache)'s arena.
    #[cfg(feature = "postgres")]
    Slot(ArenaCell),
}

/// A session's liveness as its store knows it, shared with every cached token of the
/// session: the layer answers a request whose token it verified before with one load of
/// the cell, and the store changes the answer for all of them with one store.
///
/// A store hands one out from [`LivenessCheck::watch`](super::LivenessCheck::watch) and
/// then owes it three things:
///
/// - **Revocations.** When the session ends, [`set`](Self::set) it (revoked, expired) or
///   [`invalidate`](Self::invalidate) it, at once.
/// - **Deadlines.** A state holds until the `until` it was set with; past it, the layer
///   asks the store again. A store that learns of revocations by push and could miss
///   one sets a bound here, and a session's own deadline goes here too.
/// - **Letting go.** When the store stops tracking the session (evicted from a bounded
///   cache, or it lost its feed of revocations) it must [`invalidate`](Self::invalidate)
///   the cell first: a cell no one will revoke must not say "live".
///
/// Cheap to clone: clones are the same cell. A cell made with [`new`](Self::new) is an
/// allocation of its own; the cells of a [`LivenessCache`](crate::LivenessCache) are
/// slots of one arena, far smaller.
#[derive(Debug, Clone)]
pub struct LivenessCell(Place);

impl Default for LivenessCell {
    fn default() -> Self {
        Self(Place::Own(Arc::default()))
    }
}

impl LivenessCell {
    /// A cell saying `liveness` until `until` (`None`: until the store changes it).
    pub fn new(liveness: Liveness, until: Option<Instant>) -> Self {
        let cell = Self::default();
        cell.set(liveness, until);
        cell
    }

    /// A cell that is a slot of an arena.
    #[cfg(feature = "postgres")]
    pub(crate) fn in_arena(cell: ArenaCell) -> Self {
        Self(Place::Slot(cell))
    }

    /// From now on the cell says `liveness`, until `until` (`None`: until the store
    /// changes it again).
    pub fn set(&self, liveness: Liveness, until: Option<Instant>) {
        match &self.0 {
            Place::Own(cell) => cell.word.store(pack(liveness, until), Ordering::SeqCst),
            #[cfg(feature = "postgres")]
            Place::Slot(cell) => {
                cell.arena.set(cell.slot, liveness, until);
            }
        }
    }

    /// From now on the cell says nothing: every request whose token holds it asks the
    /// store ([`LivenessCheck::check_cached`](super::LivenessCheck::check_cached), then
    /// [`check`](super::LivenessCheck::check)), which may hand out a new cell.
    pub fn invalidate(&self) {
        match &self.0 {
            Place::Own(cell) => cell.word.store(ASK, Ordering::SeqCst),
            #[cfg(feature = "postgres")]
            Place::Slot(cell) => {
                cell.arena.invalidate(cell.slot);
            }
        }
    }

    /// How many requests the cell answered since the last call: for a store's hit
    /// counter, which adds these up. The cells of a
    /// [`LivenessCache`](crate::LivenessCache) count into the cache's
    /// [`stats`](crate::LivenessCache::stats) instead, and say 0 here.
    pub fn take_hits(&self) -> u64 {
        match &self.0 {
            Place::Own(cell) => cell.hits.swap(0, Ordering::Relaxed),
            #[cfg(feature = "postgres")]
            Place::Slot(_) => 0,
        }
    }

    /// Whether both are the same cell.
    pub(crate) fn is(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Place::Own(a), Place::Own(b)) => Arc::ptr_eq(a, b),
            #[cfg(feature = "postgres")]
            (Place::Slot(a), Place::Slot(b)) => Arc::ptr_eq(&a.arena, &b.arena) && a.slot == b.slot,
            #[cfg(feature = "postgres")]
            _ => false,
        }
    }

    /// The answer at `now`, or `None` when the store must be asked (invalidated, or past
    /// its deadline). Counts a hit when it answers.
    #[inline]
    pub(crate) fn read(&self, now: Tick) -> Option<Liveness> {
        match &self.0 {
            #[cfg(feature = "postgres")]
            Place::Slot(cell) => cell.arena.read(cell.slot, now),
            Place::Own(cell) => {
                let liveness = unpack(cell.word.load(Ordering::Acquire), now)?;
                cell.hits.fetch_add(1, Ordering::Relaxed);
                Some(liveness)
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn says_what_it_was_set_to_until_its_deadline() {
        let cell = LivenessCell::new(Liveness::Live, None);
        assert_eq!(cell.read(Tick::now()), Some(Liveness::Live));
        assert_eq!(cell.read(Tick(NO_DEADLINE - 1)), Some(Liveness::Live));
        for ended in [Liveness::Revoked, Liveness::Expired, Liveness::Unknown] {
            cell.set(ended, None);
            assert_eq!(cell.read(Tick::now()), Some(ended));
        }
        assert_eq!(cell.take_hits(), 5);
        assert_eq!(cell.take_hits(), 0, "taken");

        let soon = Instant::now() + Duration::from_millis(50);
        cell.set(Liveness::Live, Some(soon));
        assert_eq!(cell.read(Tick::now()), Some(Liveness::Live));
        assert_eq!(cell.read(Tick::at(soon)), None, "at the deadline: ask");
        assert_eq!(cell.read(Tick::at(soon + Duration::from_secs(1))), None);
    }

    #[test]
    fn an_invalidated_or_new_cell_says_nothing() {
        assert_eq!(LivenessCell::default().read(Tick::now()), None);
        let cell = LivenessCell::new(Liveness::Live, None);
        let held_by_a_token = cell.clone();
        cell.invalidate();
        assert_eq!(held_by_a_token.read(Tick::now()), None);
        assert_eq!(held_by_a_token.take_hits(), 0, "no answer, no hit");
        assert!(held_by_a_token.is(&cell));
        assert!(!held_by_a_token.is(&LivenessCell::default()));
    }

    #[test]
    fn a_deadline_in_the_past_or_before_the_base_is_passed() {
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(1))
            .expect("the clock runs");
        let cell = LivenessCell::new(Liveness::Live, Some(long_ago));
        assert_eq!(cell.read(Tick::now()), None);
        assert!(Tick::after(Duration::from_secs(1)) > Tick::now());
        assert_eq!(Tick::after(Duration::MAX), Tick(u64::MAX));
    }
}
