//! [`CellArena`]: the cells of a [`LivenessCache`](crate::LivenessCache), kept as slots
//! of atomic words in chunks rather than one heap allocation each, and the users they
//! belong to, each kept once.
//!
//! Ten million cached sessions are ten million cells. One `Arc` each (two counters, the
//! word, the allocator's header) cost 48 bytes a session, and the cache's entry held the
//! owner's id beside it; a slot costs 24 bytes and names its owner by a 4-byte index into
//! a table of users, where each user is kept once with their bulk revocations.
//!
//! A token holds its cell as the arena, the slot's index and the slot's generation: the
//! generation changes whenever the slot is released, so a token still holding a released
//! slot reads "ask the store" however the slot was reused since. The generation is even
//! while no one writes the slot and odd while a writer holds it. A reader loads the
//! state, the start and the owner, then the generation, and trusts them only if the
//! generation is the one its token holds: a release bumps the generation before the
//! slot can be reused, so what another generation wrote never passes.
//!
//! A live slot also answers to bulk revocations: a slot whose session started before
//! its user's watermark ("every session of this user that started before T ended") or
//! everyone's says nothing, and the cache decides (revoked, or the one session spared).
//! One event ends any number of sessions with one store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use uuid::Uuid;

use super::Liveness;
use super::cache::lock;
use super::cell::{ASK, Tick, pack, unpack};

/// Slots per chunk: chunks are allocated as the cache grows, and never move.
const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;
const CHUNK_MASK: u32 = (1 << CHUNK_BITS) - 1;
/// Spins a reader or writer waits for a writer holding a slot (a few stores long).
const HELD_SPINS: u32 = 100_000;
/// The user index of a slot that belongs to no one (a session that does not exist).
pub(crate) const NO_USER: u32 = u32::MAX;

/// Items in chunks that are allocated when first needed and never move, so that an
/// index stays valid and a reader needs no lock.
#[derive(Debug)]
struct Chunked<T> {
    chunks: Box<[OnceLock<Box<[T]>>]>,
}

impl<T: Default> Chunked<T> {
    fn new(limit: u32) -> Self {
        let chunks = limit.div_ceil(1 << CHUNK_BITS) as usize;
        Self {
            chunks: (0..chunks).map(|_| OnceLock::new()).collect(),
        }
    }

    #[inline]
    fn get(&self, index: u32) -> Option<&T> {
        let chunk = self.chunks.get((index >> CHUNK_BITS) as usize)?.get()?;
        chunk.get((index & CHUNK_MASK) as usize)
    }

    fn get_or_allocate(&self, index: u32) -> Option<&T> {
        let chunk = self
            .chunks
            .get((index >> CHUNK_BITS) as usize)?
            .get_or_init(|| (0..CHUNK).map(|_| T::default()).collect());
        chunk.get((index & CHUNK_MASK) as usize)
    }
}

/// Indexes never used yet, and released ones, up to a limit.
#[derive(Debug)]
struct Free {
    released: Vec<u32>,
    next_unused: u32,
    limit: u32,
}

impl Free {
    fn new(limit: u32) -> Self {
        Self {
            released: Vec::new(),
            next_unused: 0,
            limit,
        }
    }

    fn take(&mut self) -> Option<u32> {
        if let Some(index) = self.released.pop() {
            return Some(index);
        }
        if self.next_unused < self.limit {
            self.next_unused += 1;
            return Some(self.next_unused - 1);
        }
        None
    }

    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.next_unused as usize - self.released.len()
    }
}

/// One cell: its packed state, the session's start and owner, and its generation.
#[derive(Debug, Default)]
struct Slot {
    word: AtomicU64,
    /// When the session started, in µs since the Unix epoch: a bulk revocation covers it
    /// when this is before the revocation's instant. Moved later when the session is
    /// known to have been spared by one.
    started: AtomicU64,
    /// The owner's index in the [`Users`] table, or [`NO_USER`].
    user: AtomicU32,
    generation: AtomicU32,
}

/// Which slot a cell is, and of which generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotRef {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

/// What a slot held, read consistently (all of one generation).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotView {
    word: u64,
    pub(crate) started: u64,
    pub(crate) user: u32,
}

impl SlotView {
    /// What the slot says at `now`, bulk revocations aside.
    pub(crate) fn liveness(&self, now: Tick) -> Option<Liveness> {
        unpack(self.word, now)
    }
}

/// A bulk revocation as the arena keeps it: sessions started before `before` (µs since
/// the Unix epoch) ended, but `spared`.
#[derive(Debug, Default)]
pub(crate) struct Watermark {
    before: AtomicU64,
    /// Read and written together with `before` under this lock; the hot path reads
    /// `before` alone, and a slot it covers goes to the cache, which takes the lock.
    spared: Mutex<Option<Uuid>>,
}

impl Watermark {
    /// Moves the watermark to `before` sparing `spared`, if later than what it holds.
    fn raise(&self, before: u64, spared: Option<Uuid>) {
        let mut held = lock(&self.spared);
        if before > self.before.load(Ordering::Acquire) {
            *held = spared;
            self.before.store(before, Ordering::Release);
        }
    }

    #[inline]
    fn covers(&self, started: u64) -> bool {
        started < self.before.load(Ordering::Acquire)
    }

    /// The instant and the spared session, read together.
    pub(crate) fn get(&self) -> (u64, Option<Uuid>) {
        let spared = lock(&self.spared);
        (self.before.load(Ordering::Acquire), *spared)
    }
}

/// One user: their id, how many cached sessions name them, their bulk revocations.
#[derive(Debug, Default)]
struct User {
    id: [AtomicU64; 2],
    sessions: AtomicU32,
    watermark: Watermark,
}

/// The users of the cached sessions, each kept once, found by id under a sharded lock
/// and by index without one. A user is dropped with their last cached session.
#[derive(Debug)]
struct Users {
    slots: Chunked<User>,
    by_id: [Mutex<HashMap<Uuid, u32>>; USER_SHARDS],
    free: Mutex<Free>,
}

const USER_SHARDS: usize = 16;

fn user_shard(user: Uuid) -> usize {
    let (high, low) = user.as_u64_pair();
    #[allow(
        clippy::cast_possible_truncation,
        reason = "reduced below USER_SHARDS first"
    )]
    let shard = ((high ^ low) % USER_SHARDS as u64) as usize;
    shard
}

impl Users {
    fn new(limit: u32) -> Self {
        Self {
            slots: Chunked::new(limit),
            by_id: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            free: Mutex::new(Free::new(limit)),
        }
    }

    /// `user`'s index, counting one more session of theirs.
    fn acquire(&self, user: Uuid) -> Option<u32> {
        let mut by_id = lock(&self.by_id[user_shard(user)]);
        if let Some(&index) = by_id.get(&user) {
            self.slots
                .get(index)?
                .sessions
                .fetch_add(1, Ordering::Relaxed);
            return Some(index);
        }
        let index = lock(&self.free).take()?;
        let slot = self.slots.get_or_allocate(index)?;
        let (high, low) = user.as_u64_pair();
        slot.id[0].store(high, Ordering::Release);
        slot.id[1].store(low, Ordering::Release);
        slot.sessions.store(1, Ordering::Relaxed);
        slot.watermark.before.store(0, Ordering::Release);
        *lock(&slot.watermark.spared) = None;
        by_id.insert(user, index);
        Some(index)
    }

    /// One session of the user at `index` fewer; the user goes with the last.
    fn release(&self, index: u32) {
        let Some(slot) = self.slots.get(index) else {
            return;
        };
        let user = self.id(index);
        let mut by_id = lock(&self.by_id[user_shard(user)]);
        if slot.sessions.fetch_sub(1, Ordering::Relaxed) == 1 {
            by_id.remove(&user);
            lock(&self.free).released.push(index);
        }
    }

    fn id(&self, index: u32) -> Uuid {
        self.slots.get(index).map_or(Uuid::nil(), |slot| {
            Uuid::from_u64_pair(
                slot.id[0].load(Ordering::Acquire),
                slot.id[1].load(Ordering::Acquire),
            )
        })
    }

    /// Raises `user`'s watermark, if they have a cached session. Under the user's shard
    /// lock, so that the slot cannot pass to another user meanwhile.
    fn raise(&self, user: Uuid, before: u64, spared: Option<Uuid>) {
        let by_id = lock(&self.by_id[user_shard(user)]);
        if let Some(slot) = by_id.get(&user).and_then(|&index| self.slots.get(index)) {
            slot.watermark.raise(before, spared);
        }
    }
}

/// The cells of one cache, and their users. See the module documentation.
#[derive(Debug)]
pub(crate) struct CellArena {
    slots: Chunked<Slot>,
    free: Mutex<Free>,
    users: Users,
    everyone: Watermark,
    hits: StripedCounter,
}

impl CellArena {
    /// An arena of at most `limit` slots (and as many users; at least one chunk's worth),
    /// none allocated yet.
    pub(crate) fn new(limit: u64) -> Self {
        let limit = u32::try_from(limit.max(CHUNK as u64))
            .unwrap_or(u32::MAX - 1)
            .min(u32::MAX - 1);
        Self {
            slots: Chunked::new(limit),
            free: Mutex::new(Free::new(limit)),
            users: Users::new(limit),
            everyone: Watermark::default(),
            hits: StripedCounter::default(),
        }
    }

    /// A slot of `owner`'s session (`None`: no such session) that started at `started`
    /// (µs since the Unix epoch), saying `liveness` until `until`; `None` when every slot
    /// is in use.
    pub(crate) fn allocate(
        &self,
        owner: Option<Uuid>,
        started: u64,
        liveness: Liveness,
        until: Option<Instant>,
    ) -> Option<SlotRef> {
        let user = match owner {
            Some(owner) => self.users.acquire(owner)?,
            None => NO_USER,
        };
        let Some(index) = lock(&self.free).take() else {
            if user != NO_USER {
                self.users.release(user);
            }
            return None;
        };
        let slot = self.slots.get_or_allocate(index)?;
        // Free, so no writer holds it: the generation is even and stays so.
        let generation = slot.generation.load(Ordering::Acquire);
        slot.user.store(user, Ordering::Release);
        slot.started.store(started, Ordering::Release);
        slot.word.store(pack(liveness, until), Ordering::Release);
        Some(SlotRef { index, generation })
    }

    /// What the slot holds, if it is still of `cell`'s generation.
    pub(crate) fn view(&self, cell: SlotRef) -> Option<SlotView> {
        let slot = self.slots.get(cell.index)?;
        let mut spins = 0;
        loop {
            let word = slot.word.load(Ordering::Acquire);
            let started = slot.started.load(Ordering::Acquire);
            let user = slot.user.load(Ordering::Acquire);
            let generation = slot.generation.load(Ordering::Acquire);
            if generation == cell.generation {
                return Some(SlotView {
                    word,
                    started,
                    user,
                });
            }
            if generation != cell.generation | 1 || spins == HELD_SPINS {
                return None;
            }
            spins += 1;
            std::hint::spin_loop();
        }
    }

    /// The slot's answer at `now`, or `None` when the store must be asked: the slot moved
    /// on to another generation, says nothing, is past its deadline, or says "live" of a
    /// session a bulk revocation may have ended. Counts a hit when it answers. The hot
    /// path: a few loads of one slot, and two more when it says "live".
    #[inline]
    pub(crate) fn read(&self, cell: SlotRef, now: Tick) -> Option<Liveness> {
        let view = self.view(cell)?;
        let liveness = view.liveness(now)?;
        if liveness == Liveness::Live && (self.covered(&view) || !self.still(cell)) {
            // Covered, or the slot (and so perhaps its user's watermark) moved on while
            // it was read.
            return None;
        }
        self.hits.add();
        Some(liveness)
    }

    /// Whether the slot is still of `cell`'s generation.
    #[inline]
    fn still(&self, cell: SlotRef) -> bool {
        self.slots
            .get(cell.index)
            .is_some_and(|slot| slot.generation.load(Ordering::Acquire) == cell.generation)
    }

    /// Counts an answer given from memory by the cache rather than by a cell.
    pub(crate) fn hit(&self) {
        self.hits.add();
    }

    /// Whether a bulk revocation may have ended the session: it started before its
    /// user's watermark or everyone's.
    #[inline]
    pub(crate) fn covered(&self, view: &SlotView) -> bool {
        self.everyone.covers(view.started)
            || self
                .users
                .slots
                .get(view.user)
                .is_some_and(|user| user.watermark.covers(view.started))
    }

    /// The user at `index` (the nil id for [`NO_USER`]).
    pub(crate) fn user_id(&self, index: u32) -> Option<Uuid> {
        (index != NO_USER).then(|| self.users.id(index))
    }

    /// The watermarks a slot of the user at `index` answers to: its user's, everyone's.
    pub(crate) fn watermarks(&self, user: u32) -> [(u64, Option<Uuid>); 2] {
        let own = self
            .users
            .slots
            .get(user)
            .filter(|_| user != NO_USER)
            .map_or((0, None), |user| user.watermark.get());
        [own, self.everyone.get()]
    }

    /// Every session of `user` that started before `before` (µs since the Unix epoch)
    /// ended, but `spared`: their slots stop saying "live". Nothing to do for a user
    /// with no cached session.
    pub(crate) fn revoke_user_before(&self, user: Uuid, before: u64, spared: Option<Uuid>) {
        self.users.raise(user, before, spared);
    }

    /// The same for every user.
    pub(crate) fn revoke_all_before(&self, before: u64, spared: Option<Uuid>) {
        self.everyone.raise(before, spared);
    }

    /// Takes the slot for a write, if it is still of `cell`'s generation; waits while
    /// another writer holds it.
    fn hold(&self, cell: SlotRef) -> Option<&Slot> {
        let slot = self.slots.get(cell.index)?;
        let mut spins = 0;
        loop {
            match slot.generation.compare_exchange_weak(
                cell.generation,
                cell.generation | 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(slot),
                Err(held) if held == cell.generation | 1 && spins < HELD_SPINS => {
                    spins += 1;
                    std::hint::spin_loop();
                }
                Err(current) if current == cell.generation => {}
                Err(_) => return None,
            }
        }
    }

    /// From now on the slot says `liveness` until `until`, if it is still `cell`'s.
    /// Returns whether it was.
    pub(crate) fn set(&self, cell: SlotRef, liveness: Liveness, until: Option<Instant>) -> bool {
        self.store(cell, pack(liveness, until))
    }

    /// From now on the slot says nothing, if it is still `cell`'s.
    pub(crate) fn invalidate(&self, cell: SlotRef) -> bool {
        self.store(cell, ASK)
    }

    fn store(&self, cell: SlotRef, word: u64) -> bool {
        let Some(slot) = self.hold(cell) else {
            return false;
        };
        slot.word.store(word, Ordering::Release);
        slot.generation.store(cell.generation, Ordering::Release);
        true
    }

    /// The session is known to have been spared by the bulk revocations up to `through`
    /// (µs): they no longer cover its slot.
    pub(crate) fn spare(&self, cell: SlotRef, through: u64) -> bool {
        let Some(slot) = self.hold(cell) else {
            return false;
        };
        slot.started.fetch_max(through, Ordering::AcqRel);
        slot.generation.store(cell.generation, Ordering::Release);
        true
    }

    /// Ends `cell`'s generation: every token holding it asks the store from now on, and
    /// the slot goes back to the free list. Nothing happens if it had ended already.
    pub(crate) fn release(&self, cell: SlotRef) {
        let Some(slot) = self.hold(cell) else {
            return;
        };
        slot.word.store(ASK, Ordering::Release);
        let user = slot.user.swap(NO_USER, Ordering::AcqRel);
        slot.generation
            .store(cell.generation.wrapping_add(2), Ordering::Release);
        lock(&self.free).released.push(cell.index);
        if user != NO_USER {
            self.users.release(user);
        }
    }

    /// Answers given by this arena's slots since the last call.
    pub(crate) fn take_hits(&self) -> u64 {
        self.hits.take()
    }

    /// Slots and users in use.
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> (usize, usize) {
        (lock(&self.free).in_use(), lock(&self.users.free).in_use())
    }
}

/// Stripes of the hit counter: a request adds to its thread's stripe, so that threads
/// answering at once do not fight over one cache line.
const HIT_STRIPES: usize = 16;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// A counter many threads add to at once, read rarely.
#[derive(Debug, Default)]
struct StripedCounter([Padded; HIT_STRIPES]);

thread_local! {
    /// This thread's stripe, handed out round-robin.
    static STRIPE: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % HIT_STRIPES
    };
}

impl StripedCounter {
    #[inline]
    fn add(&self) {
        let stripe = STRIPE.with(|stripe| *stripe);
        self.0[stripe].0.fetch_add(1, Ordering::Relaxed);
    }

    fn take(&self) -> u64 {
        self.0
            .iter()
            .map(|stripe| stripe.0.swap(0, Ordering::Relaxed))
            .sum()
    }
}

/// A cell in an arena, as a token holds it.
#[derive(Debug, Clone)]
pub(crate) struct ArenaCell {
    pub(crate) arena: Arc<CellArena>,
    pub(crate) slot: SlotRef,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn live(arena: &CellArena, owner: Uuid, started: u64) -> SlotRef {
        arena
            .allocate(Some(owner), started, Liveness::Live, None)
            .unwrap()
    }

    #[test]
    fn a_slot_says_what_it_was_set_to_until_released() {
        let arena = CellArena::new(10);
        let user = Uuid::new_v4();
        let cell = live(&arena, user, 1);
        assert_eq!(arena.read(cell, Tick::now()), Some(Liveness::Live));
        assert!(arena.set(cell, Liveness::Revoked, None));
        assert_eq!(arena.read(cell, Tick::now()), Some(Liveness::Revoked));
        assert!(arena.invalidate(cell));
        assert_eq!(arena.read(cell, Tick::now()), None);
        let soon = Instant::now() + Duration::from_secs(60);
        assert!(arena.set(cell, Liveness::Live, Some(soon)));
        assert_eq!(arena.take_hits(), 2);
        assert_eq!(arena.read(cell, Tick::now()), Some(Liveness::Live));
        assert_eq!(arena.read(cell, Tick::at(soon)), None, "past its deadline");
        assert_eq!(arena.user_id(arena.view(cell).unwrap().user), Some(user));

        arena.release(cell);
        assert_eq!(arena.read(cell, Tick::now()), None, "released");
        assert!(
            !arena.set(cell, Liveness::Live, None),
            "not its slot any more"
        );
        arena.release(cell);
        assert_eq!(
            arena.in_use(),
            (0, 0),
            "released once, and the user with it"
        );
    }

    /// A user is kept once however many sessions, and goes with the last.
    #[test]
    fn users_are_shared_by_their_sessions() {
        let arena = CellArena::new(10);
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let cells = [
            live(&arena, alice, 1),
            live(&arena, alice, 2),
            live(&arena, bob, 3),
        ];
        assert_eq!(arena.in_use(), (3, 2));
        let unknown = arena.allocate(None, 0, Liveness::Unknown, None).unwrap();
        assert_eq!(arena.view(unknown).unwrap().user, NO_USER);
        assert_eq!(arena.in_use(), (4, 2));
        arena.release(cells[0]);
        assert_eq!(arena.in_use(), (3, 2));
        arena.release(cells[1]);
        assert_eq!(arena.in_use(), (2, 1), "alice went with her last session");
        assert_eq!(arena.user_id(arena.view(cells[2]).unwrap().user), Some(bob));
    }

    /// A token holding a released slot never reads the state of the session that reuses
    /// it, however many times it was reused.
    #[test]
    fn a_reused_slot_does_not_answer_for_its_old_generations() {
        let arena = CellArena::new(1);
        let first = arena.allocate(None, 0, Liveness::Revoked, None).unwrap();
        arena.release(first);
        let mut last = first;
        for _ in 0..1_000 {
            let next = live(&arena, Uuid::new_v4(), 0);
            assert_eq!(next.index, first.index, "the slot was reused");
            assert_ne!(next.generation, last.generation);
            assert_eq!(arena.read(first, Tick::now()), None);
            assert_eq!(arena.read(next, Tick::now()), Some(Liveness::Live));
            arena.release(next);
            last = next;
        }
    }

    #[test]
    fn an_arena_is_bounded() {
        let arena = CellArena::new(1);
        let user = Uuid::new_v4();
        let slots: Vec<SlotRef> =
            std::iter::from_fn(|| arena.allocate(Some(user), 0, Liveness::Live, None))
                .take(CHUNK + 10)
                .collect();
        assert_eq!(slots.len(), CHUNK, "one chunk at least, and no more");
        arena.release(slots[7]);
        assert!(arena.allocate(None, 0, Liveness::Live, None).is_some());
        assert!(arena.allocate(None, 0, Liveness::Live, None).is_none());
    }

    /// A bulk revocation silences the live slots it covers (its user's, started before
    /// it) with one store, and nothing else; sparing moves a slot past it.
    #[test]
    fn a_watermark_covers_the_live_slots_that_started_before_it() {
        let arena = CellArena::new(10);
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let old = live(&arena, alice, 100);
        let new = live(&arena, alice, 300);
        let bobs = live(&arena, bob, 100);
        let ended = arena
            .allocate(Some(alice), 100, Liveness::Expired, None)
            .unwrap();
        arena.revoke_user_before(alice, 200, None);
        assert_eq!(arena.read(old, Tick::now()), None, "covered: ask");
        assert_eq!(arena.read(new, Tick::now()), Some(Liveness::Live));
        assert_eq!(arena.read(bobs, Tick::now()), Some(Liveness::Live));
        assert_eq!(arena.read(ended, Tick::now()), Some(Liveness::Expired));
        assert_eq!(
            arena.watermarks(arena.view(old).unwrap().user)[0],
            (200, None)
        );
        // A watermark never moves back.
        arena.revoke_user_before(alice, 150, Some(bob));
        assert_eq!(
            arena.watermarks(arena.view(old).unwrap().user)[0],
            (200, None)
        );

        assert!(arena.spare(old, 200));
        assert_eq!(arena.read(old, Tick::now()), Some(Liveness::Live));

        arena.revoke_all_before(250, None);
        assert_eq!(arena.read(old, Tick::now()), None);
        assert_eq!(arena.read(bobs, Tick::now()), None);
        assert_eq!(arena.read(new, Tick::now()), Some(Liveness::Live));
        // Nothing to do for a user with no cached session.
        arena.revoke_user_before(Uuid::new_v4(), 1_000, None);
    }

    /// Writers and readers of one slot on several threads: a reader only ever sees a
    /// state of its own generation, whatever the interleaving.
    #[test]
    fn concurrent_reuse_never_shows_another_generations_state() {
        let arena = Arc::new(CellArena::new(1));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Generation g of the slot is "revoked" when g / 2 is odd, "live" when even: a
        // reader of a generation knows which state it may see.
        let state_of = |generation: u32| {
            if (generation / 2) % 2 == 1 {
                Liveness::Revoked
            } else {
                Liveness::Live
            }
        };
        let cycler = {
            let (arena, stop) = (Arc::clone(&arena), Arc::clone(&stop));
            std::thread::spawn(move || {
                let user = Uuid::new_v4();
                let mut cell = arena.allocate(Some(user), 0, Liveness::Live, None).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    arena.release(cell);
                    let next = cell.generation.wrapping_add(2);
                    cell = arena.allocate(Some(user), 0, state_of(next), None).unwrap();
                    assert_eq!(cell.generation, next);
                }
            })
        };
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let arena = Arc::clone(&arena);
                std::thread::spawn(move || {
                    for generation in (0..20_000_u32).map(|g| g * 2) {
                        let cell = SlotRef {
                            index: 0,
                            generation,
                        };
                        for _ in 0..50 {
                            if let Some(seen) = arena.read(cell, Tick::now()) {
                                assert_eq!(seen, state_of(generation), "generation {generation}");
                            }
                        }
                    }
                })
            })
            .collect();
        for reader in readers {
            reader.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        cycler.join().unwrap();
    }
}
