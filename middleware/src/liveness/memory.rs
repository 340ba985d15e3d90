//! An in-memory store: for unit tests and for single-process apps that keep sessions in
//! memory anyway.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::{Liveness, LivenessCell, LivenessCheck, LivenessError};
use crate::context::{AuthContext, SessionId, UserId};

#[derive(Debug, Clone)]
struct Entry {
    user_id: UserId,
    expires_at: Option<SystemTime>,
    revoked: bool,
    /// What the tokens of the session read: set on revocation and on expiry, invalidated
    /// when the entry is replaced.
    cell: LivenessCell,
}

/// Sessions held in a map. Cheap to clone: clones share the map.
#[derive(Debug, Clone, Default)]
pub struct InMemoryLiveness {
    sessions: Arc<RwLock<HashMap<SessionId, Entry>>>,
}

impl InMemoryLiveness {
    /// An empty store: every session is unknown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a live session of `user_id`, ending at `expires_at` if given. Replaces
    /// what was recorded under the id before.
    pub fn insert(
        &self,
        session_id: impl Into<SessionId>,
        user_id: impl Into<UserId>,
        expires_at: Option<SystemTime>,
    ) {
        // The cell's deadline is monotonic time; `check_cached` compares the wall clock.
        let until = expires_at.map(|at| {
            Instant::now()
                + at.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
        });
        let replaced = self
            .sessions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                session_id.into(),
                Entry {
                    user_id: user_id.into(),
                    expires_at,
                    revoked: false,
                    cell: LivenessCell::new(Liveness::Live, until),
                },
            );
        if let Some(replaced) = replaced {
            // Tokens holding the old cell ask again, and get the new one.
            replaced.cell.invalidate();
        }
    }

    /// Revokes a session; its tokens are refused from the next request on.
    /// Returns whether the session was known.
    pub fn revoke(&self, session_id: &str) -> bool {
        self.sessions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(session_id)
            .map(|entry| {
                entry.revoked = true;
                entry.cell.set(Liveness::Revoked, None);
            })
            .is_some()
    }

    fn answer(&self, context: &AuthContext) -> Liveness {
        let sessions = self
            .sessions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match sessions.get(context.session_id().as_str()) {
            Some(entry) if entry.user_id != *context.user_id() => Liveness::Unknown,
            Some(entry) if entry.revoked => Liveness::Revoked,
            Some(entry) if entry.expires_at.is_some_and(|at| at <= SystemTime::now()) => {
                entry.cell.set(Liveness::Expired, None);
                Liveness::Expired
            }
            Some(_) => Liveness::Live,
            None => Liveness::Unknown,
        }
    }
}

impl LivenessCheck for InMemoryLiveness {
    fn check_cached(&self, context: &AuthContext) -> Option<Liveness> {
        Some(self.answer(context))
    }

    async fn check(&self, context: &AuthContext) -> Result<Liveness, LivenessError> {
        Ok(self.answer(context))
    }

    fn watch(&self, context: &AuthContext) -> Option<LivenessCell> {
        let sessions = self
            .sessions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sessions
            .get(context.session_id().as_str())
            .filter(|entry| entry.user_id == *context.user_id())
            .map(|entry| entry.cell.clone())
    }
}
