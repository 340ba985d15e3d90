//! Support for the end-to-end tests: the real `session-server` binary as a child process
//! ([`ServerProcess`], which the benchmark uses too) and a `LISTEN` connection. The
//! outage proxy lives in `session-testdb`.

#![allow(
    clippy::missing_panics_doc,
    reason = "test support: every function panics, with a message, when something is off"
)]

pub mod api;
pub mod attempt;
pub mod proc_status;
mod server;
pub mod smtp;

pub use server::{
    BuildProfile, ServerError, ServerProcess, binary_command, build_server, free_port,
    server_binary, server_command,
};
pub use session_testdb::PostgresProxy;

use std::time::Duration;

use tokio_postgres::Config;

/// A connection that `LISTEN`s on a channel and hands its notifications over: the
/// layer's own [`session_guard::postgres::Listener`], with a time limit on waiting.
pub struct Listener(session_guard::postgres::Listener);

impl Listener {
    /// Connects with `config` and listens on `channel`.
    pub async fn start(config: &Config, channel: &str) -> Self {
        let database = session_guard::postgres::DatabaseConfig::from(config.clone());
        Self(
            session_guard::postgres::Listener::connect(&database, channel)
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
