#![doc = include_str!("../README.md")]

use tokio_postgres::Client;

mod embedded {
    refinery::embed_migrations!("sql");
}

/// The `LISTEN` channel on which the schema announces ended sessions.
///
/// The payload is the session id, or `*` when every session ended at once (`TRUNCATE`).
pub const REVOCATION_CHANNEL: &str = "session_revoked";

/// The payload sent on [`REVOCATION_CHANNEL`] when every session ended at once.
pub const REVOKE_ALL_PAYLOAD: &str = "*";

/// Key of the session-level advisory lock held while migrating.
///
/// Fixed so that every replica of every version agrees on it: the bytes of `"sgmigrat"`.
const MIGRATION_LOCK_KEY: i64 = i64::from_be_bytes(*b"sgmigrat");

/// What can go wrong while migrating.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Taking or releasing the advisory lock failed.
    #[error("could not take the migration lock: {0}")]
    Lock(#[source] tokio_postgres::Error),
    /// A migration failed, or the database holds migrations this build does not know.
    #[error("migration failed: {0}")]
    Migration(#[source] refinery::Error),
}

/// Applies every pending migration and returns how many were applied.
///
/// Runs under a session-level `pg_advisory_lock`, so replicas that start together apply
/// each migration exactly once: the first migrates, the others wait and then find nothing
/// left to do. Each migration runs in its own transaction.
pub async fn migrate(client: &mut Client) -> Result<usize, MigrateError> {
    apply(client, &embedded::migrations::runner()).await
}

/// Applies pending migrations up to and including `version` (the `n` of `V{n}__`), as
/// [`migrate`] does. For upgrade tests, and for rolling out a schema change in steps.
pub async fn migrate_to(client: &mut Client, version: u16) -> Result<usize, MigrateError> {
    let runner =
        embedded::migrations::runner().set_target(refinery::Target::Version(version.into()));
    apply(client, &runner).await
}

/// Applies another set of migrations under the same lock as [`migrate`]: how an
/// application built on Session Guard applies its own schema after this one, with its own
/// history table (`Runner::set_migration_table_name`), so that the two sets number their
/// steps independently.
pub async fn apply(client: &mut Client, runner: &refinery::Runner) -> Result<usize, MigrateError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(MigrateError::Lock)?;
    let outcome = runner.run_async(client).await;
    // Release even when migrating failed; a closed connection would release it too.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    let report = outcome.map_err(MigrateError::Migration)?;
    unlocked.map_err(MigrateError::Lock)?;
    for migration in report.applied_migrations() {
        tracing::info!(
            version = migration.version(),
            name = migration.name(),
            "applied migration"
        );
    }
    Ok(report.applied_migrations().len())
}

/// A fingerprint of every embedded migration (versions, names and checksums).
///
/// Two builds with the same fingerprint produce the same schema; the test harness names
/// its template database after it. Stable for a given toolchain, which is all a cache
/// name needs.
pub fn fingerprint() -> String {
    use std::hash::{Hash, Hasher};

    let mut parts: Vec<String> = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| format!("{}:{}:{}", m.version(), m.name(), m.checksum()))
        .collect();
    parts.sort();
    let mut hasher = std::hash::DefaultHasher::new();
    parts.hash(&mut hasher);
    let hash = hasher.finish();
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprint_is_stable_and_hex() {
        let first = super::fingerprint();
        assert_eq!(first, super::fingerprint());
        assert_eq!(first.len(), 16);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
