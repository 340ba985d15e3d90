//! The Session Server template: a Poem backend that owns users and sessions.
//!
//! [`run`] is the whole server; the binary adds argument parsing and logging. Settings
//! come from [`config::Config`], read once from the environment.

pub mod config;
pub mod database;
pub mod keys;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use poem::Server;
use poem::listener::TcpListener;

use crate::config::Config;
use crate::keys::KeyRing;

/// Why the server could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The signing keys are missing or unusable.
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    /// The database could not be reached, created or migrated.
    #[error(transparent)]
    Database(#[from] database::DatabaseError),
    /// Binding or serving failed.
    #[error("HTTP server on {addr}: {source}")]
    Serve {
        /// The address from `BIND_ADDR`.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Connections to PostgreSQL.
    pub pool: deadpool_postgres::Pool,
    /// The keys that sign and verify access tokens.
    pub keys: Arc<KeyRing>,
    /// The longest wait for the database.
    pub database_timeout: Duration,
}

/// Loads keys, prepares the database, and serves HTTP until SIGTERM or ctrl-c.
pub async fn run(config: Config) -> Result<(), StartupError> {
    session_guard::install_crypto_provider();
    let keys = KeyRing::load(&config)?;
    tracing::info!(
        kid = keys.signing().kid(),
        keys = keys.all().len(),
        "signing keys loaded"
    );
    let applied = database::migrate(&config).await?;
    tracing::info!(
        database = %config.database_target(),
        applied,
        "database ready"
    );
    let state = AppState {
        pool: database::pool(&config)?,
        keys: Arc::new(keys),
        database_timeout: config.database_timeout,
    };
    let addr = config.bind_addr;
    Server::new(TcpListener::bind(addr))
        .run_with_graceful_shutdown(
            routes::app(state),
            shutdown_signal(),
            Some(config.shutdown_grace),
        )
        .await
        .map_err(|source| StartupError::Serve { addr, source })?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on ctrl-c or SIGTERM, whichever comes first.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
