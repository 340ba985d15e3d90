//! What follows a revocation the database committed.

use crate::ids::SessionId;
use portcullis::{PostgresLiveness, Revocation};

use crate::store::sessions::{BulkRevoked, BulkScope, RevokeReason};

/// Makes this instance refuse revoked sessions at once (other instances hear of it from
/// PostgreSQL within milliseconds) and counts revocations by reason.
#[derive(Clone)]
pub struct Revocations {
    liveness: PostgresLiveness,
}

impl Revocations {
    /// Revocations forgotten by `liveness`.
    pub fn new(liveness: PostgresLiveness) -> Self {
        Self { liveness }
    }

    /// The database revoked `sessions` for `reason`, and committed.
    pub fn committed(&self, sessions: &[SessionId], reason: RevokeReason) {
        for session in sessions {
            self.liveness.forget(session.as_uuid());
        }
        metrics::counter!("session_revocations_total", "reason" => reason.as_str())
            .increment(sessions.len() as u64);
    }

    /// The database ended every session of `scope` that started before `revoked.before`,
    /// for `reason`, and committed: this instance refuses them at once, without a query,
    /// as every other instance does when the one message reaches it.
    pub fn committed_bulk(&self, scope: BulkScope, revoked: BulkRevoked, reason: RevokeReason) {
        let revocation = match scope {
            BulkScope::User { user, except } => Revocation::UserSessionsBefore {
                user: user.as_uuid(),
                before: revoked.before,
                except: except.map(SessionId::as_uuid),
            },
            BulkScope::Everyone => Revocation::AllSessionsBefore {
                before: revoked.before,
                except: None,
            },
        };
        self.liveness.apply(&revocation);
        metrics::counter!("session_revocations_total", "reason" => reason.as_str())
            .increment(revoked.count);
    }
}
