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
    apply(client, &[&embedded::migrations::runner()]).await
}

/// Applies this schema's pending migrations and then an application's, in one hold of the
/// lock [`migrate`] takes: how an application built on Portcullis keeps its own tables.
/// The application's steps are recorded in a history table of their own
/// ([`APPLICATION_HISTORY_TABLE`]), so the two sets number their steps independently and
/// a newer Portcullis never collides with the application's.
pub async fn migrate_with_application(
    client: &mut Client,
    mut application: refinery::Runner,
) -> Result<usize, MigrateError> {
    application.set_migration_table_name(APPLICATION_HISTORY_TABLE);
    apply(client, &[&embedded::migrations::runner(), &application]).await
}

/// Where an application's migrations are recorded (Portcullis's own go to refinery's
/// default, `refinery_schema_history`).
pub const APPLICATION_HISTORY_TABLE: &str = "app_schema_history";

/// Applies pending migrations up to and including `version` (the `n` of `V{n}__`), as
/// [`migrate`] does. For upgrade tests, and for rolling out a schema change in steps.
pub async fn migrate_to(client: &mut Client, version: u16) -> Result<usize, MigrateError> {
    let runner =
        embedded::migrations::runner().set_target(refinery::Target::Version(version.into()));
    apply(client, &[&runner]).await
}

/// Runs `runners` one after the other under the migration lock.
async fn apply(client: &mut Client, runners: &[&refinery::Runner]) -> Result<usize, MigrateError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(MigrateError::Lock)?;
    let mut applied = 0;
    let mut outcome = Ok(());
    for runner in runners {
        match runner.run_async(client).await {
            Ok(report) => {
                for migration in report.applied_migrations() {
                    tracing::info!(
                        version = migration.version(),
                        name = migration.name(),
                        "applied migration"
                    );
                }
                applied += report.applied_migrations().len();
            }
            Err(e) => {
                outcome = Err(MigrateError::Migration(e));
                break;
            }
        }
    }
    // Release even when migrating failed; a closed connection would release it too.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    outcome?;
    unlocked.map_err(MigrateError::Lock)?;
    Ok(applied)
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
