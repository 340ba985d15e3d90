//! Portcullis: access tokens that stop working the moment their session is revoked.
//!
//! A JWT access token is checked without a database, which is why backends use them; the
//! price is that a logged-out or stolen token keeps working until it expires. Session
//! Guard removes that price. Every request needs a valid token *and* a live session; the
//! session check is answered from memory, and PostgreSQL pushes each revocation to every
//! instance at once, so a revoked session's tokens stop working within milliseconds
//! without a database round trip per request.
//!
//! - The core, [`Authenticator`], knows no web framework: [`TokenVerifier`] (keys by
//!   `kid`, each with one algorithm; claims `iss`, `aud`, `sub`, `sid`, `exp`, `nbf`),
//!   a cache of verified tokens, and a [`LivenessCheck`] store. Each cached token holds
//!   its session's [`LivenessCell`], which the store keeps current, so a request with a
//!   token verified before costs one lookup and one atomic load. [`LivenessCheck`] says
//!   how another store implements that.
//! - Adapters are thin: the Tower layer [`SessionGuardLayer`] (axum, hyper, tonic), the
//!   axum extractor (feature `axum`) and the Poem middleware and extractor ([`poem`],
//!   feature `poem`).
//! - Refusals are [`AuthError`]s that know their response: 401 with an RFC 6750
//!   challenge, 400 for a malformed header, 503 when liveness cannot be decided, or a gRPC
//!   status for gRPC requests.
//!
//! # Set-up
//!
//! A service that trusts a Portcullis server needs two things: the server's JWKS URL (keys,
//! [`RemoteJwks`]) and the server's PostgreSQL (liveness, [`PostgresLiveness`] on the
//! same database, whose `sessions` table and revocation trigger it reads).
//! [`postgres::DatabaseConfig`] reads that `DATABASE_URL`, `sslmode` included.
//! [`PostgresLiveness::ready`] says at start-up whether it can work. Only the routes
//! behind the guard need a session.
//!
//! With axum (feature `axum`): `/hello` is guarded, `/health` is open.
//!
//! ```rust,ignore
#![doc = include_str!("../examples/axum.rs")]
//! ```
//!
//! With tonic (feature `tonic`): one gRPC service guarded; others added plainly stay open.
//!
//! ```rust,ignore
#![doc = include_str!("../examples/tonic.rs")]
//! ```
//!
//! With Poem (feature `poem`): the middleware on `/hello` only.
//!
//! ```rust,ignore
#![doc = include_str!("../examples/poem.rs")]
//! ```
//!
//! (These are the crate's `examples/`, built with it.) Without a database, for tests or
//! a single process, [`InMemoryLiveness`] stands in:
//!
//! ```
//! # portcullis::install_crypto_provider();
//! use portcullis::{Authenticator, InMemoryLiveness, KeySet, SessionGuardLayer,
//!     TokenVerifier, VerificationKey};
//!
//! let keys = KeySet::new([VerificationKey::hmac("k1", &[7; 32]).unwrap()]);
//! let verifier = TokenVerifier::builder(keys)
//!     .issuer("https://auth.example.com")
//!     .audience("api")
//!     .build();
//! let layer = SessionGuardLayer::new(Authenticator::new(verifier, InMemoryLiveness::new()));
//! // `ServiceBuilder::new().layer(layer).service(your_service)`, or `router.layer(layer)`.
//! # let _ = layer;
//! ```
//!
//! Call [`install_crypto_provider`] once at start-up.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `postgres` | on | [`PostgresLiveness`], and [`postgres`]: every `sslmode` with rustls, the pool, the `LISTEN` connection |
//! | `remote-jwks` | on | [`RemoteJwks`]: keys from a URL (`https://`, or `http://` to this machine) |
//! | `axum` | off | [`AuthContext`] as an axum extractor |
//! | `poem` | off | [`poem`]: the Poem middleware and extractor |
//! | `tonic` | off | [`SessionGuard`] keeps its service's gRPC name |

#![cfg_attr(docsrs, feature(doc_cfg))]

mod authenticator;
#[cfg(feature = "axum")]
mod axum;
pub mod body;
mod context;
mod crypto;
mod error;
mod extract;
pub mod future;
#[cfg(feature = "remote-jwks")]
mod jwks;
mod keys;
mod layer;
mod liveness;
#[cfg(feature = "poem")]
pub mod poem;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(test)]
mod test_tokens;
mod token_cache;
mod verify;

pub use authenticator::{Authenticator, UnavailablePolicy};
#[cfg(feature = "axum")]
pub use axum::MissingAuthContext;
pub use context::{Audience, AuthContext, Claims, SessionId, UserId};
pub use crypto::install_crypto_provider;
pub use error::AuthError;
pub use extract::{ExpectedOrigins, InvalidOrigin, RequestHead, TokenSource};
#[cfg(feature = "remote-jwks")]
pub use jwks::{JwksError, RemoteJwks};
pub use keys::{Algorithm, KeyError, KeySet, MIN_HMAC_SECRET_BYTES, VerificationKey};
pub use layer::{SessionGuard, SessionGuardLayer};
#[cfg(feature = "postgres")]
pub use liveness::postgres::{
    DEFAULT_CHANNEL, LISTENER_APPLICATION_NAME, LivenessStats, NotReady, PostgresLiveness,
    PostgresLivenessBuilder,
};
pub use liveness::{InMemoryLiveness, Liveness, LivenessCell, LivenessCheck, LivenessError};
pub use token_cache::DEFAULT_TOKEN_CACHE_CAPACITY;
pub use verify::{
    DEFAULT_LEEWAY, KeySource, MAX_TOKEN_BYTES, TokenError, TokenVerifier, TokenVerifierBuilder,
};

/// The Rust snippet of the repository's README ("Guarding your own service"), compiled
/// as written. Only when collecting doc-tests in the repository: the published crate
/// has no README of the repository's.
#[cfg(all(
    doctest,
    feature = "axum",
    feature = "postgres",
    feature = "remote-jwks"
))]
#[doc = include_str!("../../README.md")]
pub struct RepositoryReadme;
