//! The application's own schema: the SQL files in `migrations/` (`V1__notes.sql`, …),
//! applied after Session Guard's schema (which owns `users`, `sessions` and
//! `security_events`) and recorded in their own history table, so that the two sets
//! number their steps independently and a newer Session Guard never collides with yours.

use tokio_postgres::Client;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Where refinery records which of the application's migrations ran.
pub const HISTORY_TABLE: &str = "app_schema_history";

/// Applies the application's pending migrations (Session Guard's must be applied first);
/// returns how many ran.
pub async fn migrate(client: &mut Client) -> Result<usize, session_migrations::MigrateError> {
    let mut runner = embedded::migrations::runner();
    runner.set_migration_table_name(HISTORY_TABLE);
    session_migrations::apply(client, &runner).await
}
