//! What follows a revocation the database committed.

use crate::ids::SessionId;
use portcullis::PostgresLiveness;

use crate::store::sessions::RevokeReason;

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
}
