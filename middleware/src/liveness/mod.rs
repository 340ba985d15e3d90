//! "Is this session still live?": the question every authenticated request asks.
//!
//! [`LivenessCheck`] is the one trait a store implements. Two ship here:
//! [`PostgresLiveness`](crate::PostgresLiveness) (cache + `LISTEN` for revocations, behind
//! the `postgres` feature) and [`InMemoryLiveness`] (tests and single-process apps).
//!
//! A store with a database and a feed of revocations is built from parts (behind the
//! `postgres` feature): [`LivenessCache`](crate::LivenessCache) holds the cells and the
//! rules (bounds, the race between a query and a revocation, eviction), and takes a
//! [`SessionQuery`](crate::SessionQuery) to ask on a miss and a
//! [`RevocationFeed`](crate::RevocationFeed) to hear revocations from. `PostgresLiveness`
//! is that cache with the PostgreSQL query and the `LISTEN` feed; another feed is a
//! module, not a fork.
//!
//! A request whose token was verified before costs one lookup: the verified-token cache
//! holds, beside the token's claims, the [`LivenessCell`] its store handed out for the
//! session ([`LivenessCheck::watch`]), and the store keeps that cell current as sessions
//! end. Only when a token has no cell, or its cell says nothing (invalidated, past its
//! deadline), does the layer ask the store: from memory in
//! [`LivenessCheck::check_cached`] when it can, else in [`LivenessCheck::check`], which
//! may do I/O.
//!
//! [`LivenessCheck`] says how another store implements it.

#[cfg(feature = "postgres")]
mod arena;
#[cfg(feature = "postgres")]
pub(crate) mod cache;
mod cell;
#[cfg(feature = "postgres")]
pub(crate) mod feed;
mod memory;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "postgres")]
pub(crate) mod query;

use std::future::Future;
use std::pin::Pin;

pub use cell::LivenessCell;
pub(crate) use cell::Tick;
pub use memory::InMemoryLiveness;

use crate::context::AuthContext;

/// The answer about one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Liveness {
    /// Neither revoked nor expired, and it belongs to the token's user.
    Live,
    /// Revoked (logged out, signed out elsewhere, theft detected, an operator).
    Revoked,
    /// Past its idle timeout or its absolute lifetime.
    Expired,
    /// No such session, or it belongs to another user.
    Unknown,
}

impl Liveness {
    /// Whether requests of this session may pass.
    pub fn is_live(self) -> bool {
        self == Self::Live
    }

    /// A short stable label, for metrics and log fields.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Revoked => "session_revoked",
            Self::Expired => "session_expired",
            Self::Unknown => "session_unknown",
        }
    }
}

/// The store could not answer (database down, timeout, pool exhausted).
#[derive(Debug, thiserror::Error)]
#[error("session liveness unavailable: {0}")]
pub struct LivenessError(pub String);

/// A place that knows whether sessions are live.
///
/// Implement this for another backend; the layer, the Poem middleware and the
/// extractors work with any implementation.
///
/// # Implementing a store
///
/// [`check`](Self::check) is the one method a store must have: the answer for a token's
/// session, doing I/O if needed. That alone works: every request then awaits it. A store
/// that keeps answers in memory adds [`check_cached`](Self::check_cached), which spares
/// those requests the future. A store that knows when sessions end (it ends them, or is
/// told) adds [`watch`](Self::watch): it keeps one [`LivenessCell`] per session it
/// tracks, hands it out for tokens of the session's own user, [`set`](LivenessCell::set)s
/// or [`invalidate`](LivenessCell::invalidate)s it the moment the session ends, gives a
/// live state an `until` no later than the session's deadline, and invalidates the cell
/// before it stops tracking the session. Then a request of a cached token reads the cell
/// and asks nothing. [`InMemoryLiveness`] is a short example.
pub trait LivenessCheck: Send + Sync + 'static {
    /// The answer from memory, without I/O, when the store has one. The default never
    /// has one.
    fn check_cached(&self, context: &AuthContext) -> Option<Liveness> {
        let _ = context;
        None
    }

    /// The answer, doing I/O if needed.
    fn check(
        &self,
        context: &AuthContext,
    ) -> impl Future<Output = Result<Liveness, LivenessError>> + Send;

    /// The cell this store keeps current for the session of `context`, if it tracks the
    /// session and the session belongs to the token's user; asked right after
    /// [`check`](Self::check) or [`check_cached`](Self::check_cached) answered, and kept
    /// with the verified token, whose later requests read it instead of asking. What the
    /// cell says is the store's business from then on (see [`LivenessCell`]). The
    /// default: no cell, so every request asks.
    fn watch(&self, context: &AuthContext) -> Option<LivenessCell> {
        let _ = context;
        None
    }
}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Object-safe [`LivenessCheck`], so the core holds any store behind one pointer type.
pub(crate) trait DynLivenessCheck: Send + Sync + 'static {
    fn check_cached(&self, context: &AuthContext) -> Option<Liveness>;
    fn watch(&self, context: &AuthContext) -> Option<LivenessCell>;
    fn check<'a>(
        &'a self,
        context: &'a AuthContext,
    ) -> BoxFuture<'a, Result<Liveness, LivenessError>>;
}

impl<T: LivenessCheck> DynLivenessCheck for T {
    fn check_cached(&self, context: &AuthContext) -> Option<Liveness> {
        LivenessCheck::check_cached(self, context)
    }

    fn watch(&self, context: &AuthContext) -> Option<LivenessCell> {
        LivenessCheck::watch(self, context)
    }

    fn check<'a>(
        &'a self,
        context: &'a AuthContext,
    ) -> BoxFuture<'a, Result<Liveness, LivenessError>> {
        Box::pin(LivenessCheck::check(self, context))
    }
}
