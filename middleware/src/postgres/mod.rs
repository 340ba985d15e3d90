//! Connecting to PostgreSQL the way production needs: every `sslmode`, with rustls.
//!
//! - [`DatabaseConfig`] reads a libpq connection string (URL or key-value) with all of
//!   `sslmode` (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`) and
//!   `sslrootcert` (a PEM file, or `system`), which tokio-postgres alone does not. It
//!   opens single connections, builds the connection pool, and feeds
//!   [`PostgresLiveness`](crate::PostgresLiveness): one process, one TLS set-up.
//! - [`Listener`] keeps one connection `LISTEN`ing and hands over the notifications.
//! - [`RevocationLog`] reads the schema's log of revocations in order, for a relay that
//!   publishes it to a broker, and switches between the `LISTEN` and NATS feeds.
//! - The types a user names are here too: [`Pool`], and the crates behind them,
//!   [`tokio_postgres`] and [`deadpool_postgres`], so no version of them has to match by
//!   hand.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use portcullis::postgres::DatabaseConfig;
//!
//! let database: DatabaseConfig =
//!     "postgres://app@db.internal/app?sslmode=verify-full&sslrootcert=/etc/db-ca.pem".parse()?;
//! let pool = database.pool(16, Duration::from_secs(5))?;
//! let client = pool.get().await?;
//! client.simple_query("SELECT 1").await?;
//! # Ok(())
//! # }
//! ```

mod config;
mod listen;
mod revocation_log;
mod tls;

pub use config::{Connection, DatabaseConfig, DatabaseConfigError, RootCerts, SslMode};
pub use deadpool_postgres::{self, Pool};
pub use listen::Listener;
pub use revocation_log::{
    LogBatch, LogCursor, LogEntry, LogError, RevocationFeedKind, RevocationLog,
};
pub use tokio_postgres;
