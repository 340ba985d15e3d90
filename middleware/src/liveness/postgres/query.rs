//! [`PostgresSessionQuery`]: one session's row of the `sessions` table.

use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::liveness::LivenessError;
use crate::liveness::query::{SessionQuery, SessionRecord, SessionState};

/// The liveness query: the session's user, whether it was revoked or is past a deadline,
/// the time left before its first deadline, and when it was created.
pub(crate) const LIVENESS_SQL: &str = "SELECT user_id, revoked_at IS NOT NULL, \
     least(idle_expires_at, absolute_expires_at) <= now(), \
     (extract(epoch FROM least(idle_expires_at, absolute_expires_at) - now()) * 1000)::int8, \
     created_at \
     FROM sessions WHERE id = $1";

/// Asks the `sessions` table of a Portcullis database about one session, on a pool,
/// within a timeout that includes the wait for a connection.
#[derive(Debug, Clone)]
pub struct PostgresSessionQuery {
    pool: Pool,
    timeout: Duration,
}

impl PostgresSessionQuery {
    /// Queries on `pool`, each given up after `timeout` (pool wait included).
    pub fn new(pool: Pool, timeout: Duration) -> Self {
        Self { pool, timeout }
    }

    /// The pool queries run on.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The longest a query may take, pool wait included.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl SessionQuery for PostgresSessionQuery {
    async fn session(&self, session: Uuid) -> Result<Option<SessionRecord>, LivenessError> {
        let query = async {
            let client = self
                .pool
                .get()
                .await
                .map_err(|e| LivenessError(e.to_string()))?;
            let statement = client
                .prepare_cached(LIVENESS_SQL)
                .await
                .map_err(|e| LivenessError(e.to_string()))?;
            client
                .query_opt(&statement, &[&session])
                .await
                .map_err(|e| LivenessError(e.to_string()))
        };
        let row = tokio::time::timeout(self.timeout, query)
            .await
            .map_err(|_| LivenessError("liveness query timed out".into()))??;
        let Some(row) = row else {
            return Ok(None);
        };
        let state = if row.get::<_, bool>(1) {
            SessionState::Revoked
        } else if row.get::<_, bool>(2) {
            SessionState::Expired
        } else {
            let remaining_ms: i64 = row.get(3);
            SessionState::Live {
                remaining: Duration::from_millis(u64::try_from(remaining_ms).unwrap_or(0)),
            }
        };
        let started: SystemTime = row.get(4);
        Ok(Some(SessionRecord::new(row.get(0), state, started)))
    }
}
