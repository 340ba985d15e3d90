//! Revocations for a fleet, through NATS `JetStream` (the `nats` feature).
//!
//! With PostgreSQL's `LISTEN` every instance costs the database a notification per
//! revocation. Here the database writes each revocation once, to its revocation log
//! ([`RevocationLog`](crate::postgres::RevocationLog)); one [`NatsRelay`] per database
//! publishes the log to a `JetStream` stream, and every instance reads the stream with a
//! [`NatsRevocationFeed`]. Build an instance's store with
//! [`PostgresLivenessBuilder::with_nats`](crate::PostgresLivenessBuilder::with_nats), and
//! switch the database's trigger off `NOTIFY` with
//! [`RevocationLog::set_feed`](crate::postgres::RevocationLog::set_feed).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use portcullis::PostgresLiveness;
//! use portcullis::nats::{NatsFeedConfig, NatsRelay};
//!
//! let database: portcullis::postgres::DatabaseConfig = "postgres://app@db/app".parse()?;
//! let nats = NatsFeedConfig::new("nats://nats.internal:4222");
//! let _relay = NatsRelay::new(database.clone(), nats.clone()).start();
//! let store = PostgresLiveness::builder(database).with_nats(nats).start()?;
//! store.ready().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Messages are JSON, one revocation each; [`wire`] documents the format.

mod feed;
mod relay;
pub mod wire;

pub use feed::NatsRevocationFeed;
pub use relay::{NatsRelay, NatsRelayHandle, RELAY_APPLICATION_NAME, RELAY_LOCK_KEY};
pub use wire::{WIRE_VERSION, WireError, decode_revocation, encode_revocation};

/// The stream a relay fills and the feeds read, unless told otherwise.
pub const DEFAULT_STREAM: &str = "PORTCULLIS_REVOCATIONS";
/// The subject revocations are published on, unless told otherwise.
pub const DEFAULT_SUBJECT: &str = "portcullis.revocations";

/// Where the revocation stream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsFeedConfig {
    /// The server, `nats://host:port` (a comma-separated list for a cluster).
    pub url: String,
    /// The `JetStream` stream, of its own: every message in it is a revocation.
    pub stream: String,
    /// The subject the relay publishes on, the stream's only one.
    pub subject: String,
}

impl NatsFeedConfig {
    /// The default stream and subject on the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: DEFAULT_STREAM.to_owned(),
            subject: DEFAULT_SUBJECT.to_owned(),
        }
    }
}
