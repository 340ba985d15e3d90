//! [`SessionQuery`]: how a [`LivenessCache`](crate::LivenessCache) asks the source of
//! truth about one session it does not know.

use std::future::Future;
use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::LivenessError;

/// Where a session stands, as its source of truth says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionState {
    /// Neither revoked nor past a deadline; `remaining` is the time left before its idle
    /// or absolute deadline, whichever comes first.
    Live {
        /// Time left before the session's first deadline.
        remaining: Duration,
    },
    /// Revoked.
    Revoked,
    /// Past its idle timeout or its absolute lifetime.
    Expired,
}

/// What the source of truth says of one session, whoever asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionRecord {
    /// Its user.
    pub owner: Uuid,
    /// Live, revoked or expired.
    pub state: SessionState,
    /// When it was created: a bulk revocation ("sessions of this user that started before
    /// T") covers it when this is before T.
    pub started: SystemTime,
}

impl SessionRecord {
    /// A record of a session of `owner`, created at `started`, now `state`.
    pub fn new(owner: Uuid, state: SessionState, started: SystemTime) -> Self {
        Self {
            owner,
            state,
            started,
        }
    }
}

/// Asks the source of truth about one session: the one method a new backend for
/// [`LivenessCache`](crate::LivenessCache) writes.
///
/// Called on a cache miss; its answer is cached (a live one for a bounded time). It must
/// read committed state as of a moment after it was called, so that a revocation the
/// cache's feed announced before the call is in the answer.
pub trait SessionQuery: Send + Sync + 'static {
    /// The session `session`, or `None` when there is no such session.
    fn session(
        &self,
        session: Uuid,
    ) -> impl Future<Output = Result<Option<SessionRecord>, LivenessError>> + Send;
}
