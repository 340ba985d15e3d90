//! The connection pool, and getting the database ready at start-up.
//!
//! Every connection (the migrations', the pool's, the liveness listener's) comes from
//! the one [`DatabaseConfig`] read from `DATABASE_URL`, so each honours its `sslmode`.

use std::time::Duration;

use deadpool_postgres::Pool;
use portcullis::postgres::DatabaseConfig;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::config::{Config, Environment, default_database_name};
use crate::error::chain;

/// The database where `CREATE DATABASE` is issued from when ours is missing.
const MAINTENANCE_DATABASE: &str = "postgres";

const CREATE_DATABASE_SQL: &str = "SELECT format('CREATE DATABASE %I', $1::text)";
const DROP_DATABASE_SQL: &str =
    "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', $1::text)";
const HEALTH_SQL: &str = "SELECT 1";

/// Why the database could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// No connection could be made.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect {
        /// Where we tried, without credentials.
        target: String,
        /// What PostgreSQL or the network said.
        reason: String,
    },
    /// Our database does not exist, and this environment does not create it.
    #[error(
        "database {0} does not exist; create it, or run in development mode (APP_ENV=development) to have it created"
    )]
    Missing(String),
    /// Creating our database failed.
    #[error("cannot create database {name}: {reason}")]
    Create {
        /// The database.
        name: String,
        /// What PostgreSQL said.
        reason: String,
    },
    /// Migrating failed.
    #[error(transparent)]
    Migrate(#[from] portcullis_migrations::MigrateError),
    /// The pool could not be built.
    #[error("cannot build the connection pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
}

/// Connects, creating the database first when it is missing and that is allowed.
pub async fn connect_creating(config: &Config) -> Result<Client, DatabaseError> {
    match connect(&config.database.url).await {
        Ok(client) => Ok(client),
        Err(e) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
            let name = config
                .database
                .url
                .settings()
                .get_dbname()
                .map_or_else(|| default_database_name(&config.app_name), str::to_owned);
            if config.environment == Environment::Production {
                return Err(DatabaseError::Missing(name));
            }
            create_database(config, &name).await?;
            connect(&config.database.url)
                .await
                .map_err(|e| connect_error(config, &e))
        }
        Err(e) => Err(connect_error(config, &e)),
    }
}

/// Connects, creates the database if needed and allowed, and applies pending migrations:
/// Portcullis's schema, then the application's own when it has any.
pub async fn migrate(
    config: &Config,
    application: Option<refinery::Runner>,
) -> Result<usize, DatabaseError> {
    let mut client = connect_creating(config).await?;
    Ok(match application {
        Some(runner) => {
            portcullis_migrations::migrate_with_application(&mut client, runner).await?
        }
        None => portcullis_migrations::migrate(&mut client).await?,
    })
}

/// The process's one pool: the request handlers and the liveness store borrow from it.
///
/// It connects lazily, so the server starts and keeps running while PostgreSQL is down;
/// every wait, and every statement (a query stuck behind a lock gives up and the request
/// answers 503), is bounded by `DATABASE_TIMEOUT_SECONDS`.
pub fn pool(config: &Config) -> Result<Pool, DatabaseError> {
    let database = &config.database;
    Ok(database.url.pool(database.pool_size, database.timeout)?)
}

/// Whether the database answers a query within `timeout`.
pub async fn ping(pool: &Pool, timeout: Duration) -> Result<(), String> {
    let check = async {
        let client = pool.get().await.map_err(|e| chain(&e))?;
        client
            .simple_query(HEALTH_SQL)
            .await
            .map_err(|e| chain(&e))?;
        Ok(())
    };
    tokio::time::timeout(timeout, check)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

async fn connect(database: &DatabaseConfig) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = database.connect().await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

async fn create_database(config: &Config, name: &str) -> Result<(), DatabaseError> {
    let create_error = |e: &tokio_postgres::Error| DatabaseError::Create {
        name: name.to_owned(),
        reason: reason(e),
    };
    let mut maintenance = config.database.url.clone();
    maintenance.settings_mut().dbname(MAINTENANCE_DATABASE);
    let client = connect(&maintenance)
        .await
        .map_err(|e| connect_error(config, &e))?;
    // The name is quoted by PostgreSQL itself (`%I`), never spliced by hand.
    let sql: String = client
        .query_one(CREATE_DATABASE_SQL, &[&name])
        .await
        .map_err(|e| create_error(&e))?
        .get(0);
    match client.batch_execute(&sql).await {
        Ok(()) => {
            tracing::info!(database = name, "created database");
            Ok(())
        }
        // Another replica won the race: the database exists, which is all we want.
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(()),
        Err(e) => Err(create_error(&e)),
    }
}

fn connect_error(config: &Config, e: &tokio_postgres::Error) -> DatabaseError {
    DatabaseError::Connect {
        target: config.database_target(),
        reason: reason(e),
    }
}

/// The most specific message an error carries: PostgreSQL's own, or the causes.
fn reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => chain(e),
    }
}

/// Drops the database `database` names (`WITH (FORCE)`, so open connections do not stop
/// it), from the maintenance database; blocks on a runtime of its own, so it may be
/// called where no runtime runs (a `Drop`).
pub fn drop_database(database: &DatabaseConfig) -> Result<(), String> {
    let Some(name) = database.settings().get_dbname().map(str::to_owned) else {
        return Ok(());
    };
    let mut maintenance = database.clone();
    maintenance.settings_mut().dbname(MAINTENANCE_DATABASE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| chain(&e))?;
    runtime.block_on(async move {
        let client = connect(&maintenance).await.map_err(|e| chain(&e))?;
        let sql: String = client
            .query_one(DROP_DATABASE_SQL, &[&name])
            .await
            .map_err(|e| chain(&e))?
            .get(0);
        client.batch_execute(&sql).await.map_err(|e| chain(&e))
    })
}
