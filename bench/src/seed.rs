//! Users and sessions written straight into the database, many at once, with ids derived
//! from their index: a child process computes the id of session `i` and its owner
//! without reading a million rows back.

use tokio_postgres::Client;

use crate::Result;

/// Session `index`'s id: a valid UUID (version 4 layout), as long as a real one.
pub(crate) fn session_id(index: u64) -> String {
    format!("00000000-0000-4000-8000-{index:012x}")
}

/// The index of a session id made by [`session_id`]; `None` for any other text.
pub(crate) fn session_index(id: &str) -> Option<u64> {
    let hex = id.strip_prefix("00000000-0000-4000-8000-")?;
    if hex.len() == 12 {
        u64::from_str_radix(hex, 16).ok()
    } else {
        None
    }
}

/// User `index`'s id.
pub(crate) fn user_id(index: u64) -> String {
    format!("00000000-0000-4000-9000-{index:012x}")
}

const USERS: &str = "\
INSERT INTO users (id, email, password_hash)
SELECT ('00000000-0000-4000-9000-' || lpad(to_hex(u), 12, '0'))::uuid,
       'bench-' || u || '@example.com', 'not a password hash'
  FROM generate_series(0, $1::int8 - 1) AS u";

/// The floor is given (the same instant as the deadline), so that V6's insert trigger,
/// which fills it when absent, does not run for each of millions of rows.
const SESSIONS: &str = "\
INSERT INTO sessions (id, user_id, device_name, ip, idle_expires_at, absolute_expires_at,
                      idle_expires_floor, revoked_at, revoked_reason)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(s), 12, '0'))::uuid,
       ('00000000-0000-4000-9000-' || lpad(to_hex(s % $2::int8), 12, '0'))::uuid,
       'bench', '127.0.0.1', now() + interval '14 days', now() + interval '90 days',
       now() + interval '14 days',
       CASE WHEN s % $3::int8 = 0 THEN now() END,
       CASE WHEN s % $3::int8 = 0 THEN 'admin' END
  FROM generate_series(0, $1::int8 - 1) AS s";

/// The trigger that makes a starting session wait for a bulk revocation (V8).
const JOIN_BULK: &str = "sessions_join_bulk_revocations";

/// Sessions `0..sessions`, owned round-robin by users `0..users`; every
/// `revoked_every`-th session (from session 0) is revoked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Population {
    /// How many sessions.
    pub(crate) sessions: u64,
    /// How many users own them.
    pub(crate) users: u64,
    /// One session in this many is revoked.
    pub(crate) revoked_every: u64,
}

impl Population {
    /// The owner of session `index`.
    pub(crate) fn owner(&self, index: u64) -> u64 {
        index % self.users
    }

    /// Whether session `index` is revoked.
    pub(crate) fn is_revoked(&self, index: u64) -> bool {
        index.is_multiple_of(self.revoked_every)
    }

    /// Writes the users and sessions (into a database that has none of them yet).
    pub(crate) async fn seed(&self, client: &Client) -> Result<()> {
        let (sessions, users, revoked_every) = (
            i64::try_from(self.sessions)?,
            i64::try_from(self.users)?,
            i64::try_from(self.revoked_every)?,
        );
        client.execute(USERS, &[&users]).await?;
        // V8's insert trigger takes a shared advisory lock per user for the length of the
        // transaction (a session waits for a bulk revocation of its user that is
        // committing): one statement inserting sessions of 100,000 users would need more
        // locks than PostgreSQL's lock table holds. A new database has no bulk
        // revocation to wait for, so the seed goes without it.
        client
            .batch_execute(&format!("ALTER TABLE sessions DISABLE TRIGGER {JOIN_BULK}"))
            .await?;
        let inserted = client
            .execute(SESSIONS, &[&sessions, &users, &revoked_every])
            .await;
        client
            .batch_execute(&format!("ALTER TABLE sessions ENABLE TRIGGER {JOIN_BULK}"))
            .await?;
        inserted?;
        client.batch_execute("ANALYZE users, sessions").await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_round_trip() {
        assert_eq!(session_index(&session_id(70_000)), Some(70_000));
        assert_eq!(session_index(&user_id(1)), None);
        assert_eq!(session_index("00000000-0000-4000-8000-00000000000g"), None);
    }
}
