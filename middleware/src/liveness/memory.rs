//! An in-memory store: for unit tests and for single-process apps that keep sessions in
//! memory anyway.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use super::{Liveness, LivenessCheck, LivenessError};
use crate::context::{AuthContext, SessionId, UserId};

#[derive(Debug, Clone)]
struct Entry {
    user_id: UserId,
    expires_at: Option<SystemTime>,
    revoked: bool,
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

    /// Records a live session of `user_id`, ending at `expires_at` if given.
    pub fn insert(
        &self,
        session_id: impl Into<SessionId>,
        user_id: impl Into<UserId>,
        expires_at: Option<SystemTime>,
    ) {
        self.sessions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                session_id.into(),
                Entry {
                    user_id: user_id.into(),
                    expires_at,
                    revoked: false,
                },
            );
    }

    /// Revokes a session; its tokens are refused from the next request on.
    /// Returns whether the session was known.
    pub fn revoke(&self, session_id: &str) -> bool {
        self.sessions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(session_id)
            .map(|entry| entry.revoked = true)
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
}
