//! "Is this session still live?": the question every authenticated request asks.
//!
//! [`LivenessCheck`] is the one trait a store implements. Two ship here:
//! [`PostgresLiveness`](crate::PostgresLiveness) (cache + `LISTEN` for revocations, behind
//! the `postgres` feature) and [`InMemoryLiveness`] (tests and single-process apps).
//!
//! A store answers from memory in [`LivenessCheck::check_cached`] when it can, which keeps
//! the hot path free of I/O and allocation; [`LivenessCheck::check`] may do I/O.

mod memory;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;

use std::future::Future;
use std::pin::Pin;

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
}

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Object-safe [`LivenessCheck`], so the core holds any store behind one pointer type.
pub(crate) trait DynLivenessCheck: Send + Sync + 'static {
    fn check_cached(&self, context: &AuthContext) -> Option<Liveness>;
    fn check<'a>(
        &'a self,
        context: &'a AuthContext,
    ) -> BoxFuture<'a, Result<Liveness, LivenessError>>;
}

impl<T: LivenessCheck> DynLivenessCheck for T {
    fn check_cached(&self, context: &AuthContext) -> Option<Liveness> {
        LivenessCheck::check_cached(self, context)
    }

    fn check<'a>(
        &'a self,
        context: &'a AuthContext,
    ) -> BoxFuture<'a, Result<Liveness, LivenessError>> {
        Box::pin(LivenessCheck::check(self, context))
    }
}
