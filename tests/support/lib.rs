//! Support for the end-to-end tests: the real `portcullis-server` binary as a child process
//! ([`ServerProcess`], which the benchmark uses too) and a `LISTEN` connection. The
//! outage proxy lives in `portcullis-testdb`.

#![allow(
    clippy::missing_panics_doc,
    reason = "test support: every function panics, with a message, when something is off"
)]

pub mod api;
pub mod attempt;
pub mod proc_status;
mod server;
pub mod smtp;

pub use portcullis_testdb::PostgresProxy;
pub use server::{
    BuildProfile, SERVER_BINARY_VAR, ServerError, ServerProcess, binary_command, build_server,
    free_port, server_binary, server_command,
};

use std::time::Duration;

use tokio_postgres::Config;

/// A connection that `LISTEN`s on a channel and hands its notifications over: the
/// layer's own [`portcullis::postgres::Listener`], with a time limit on waiting.
pub struct Listener(portcullis::postgres::Listener);

impl Listener {
    /// Connects with `config` and listens on `channel`.
    pub async fn start(config: &Config, channel: &str) -> Self {
        let database = portcullis::postgres::DatabaseConfig::from(config.clone());
        Self(
            portcullis::postgres::Listener::connect(&database, channel)
                .await
                .expect("listener connection"),
        )
    }

    /// The next notification, or `None` if none arrives within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<tokio_postgres::Notification> {
        tokio::time::timeout(limit, self.0.recv())
            .await
            .ok()
            .flatten()
    }
}
