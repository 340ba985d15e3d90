//! Session Guard: access tokens that stop working the moment their session is revoked.
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
//!   a cache of verified tokens, and a [`LivenessCheck`] store.
//! - Adapters are thin: the Tower layer [`SessionGuardLayer`] (axum, hyper, tonic), the
//!   axum extractor (feature `axum`) and the Poem middleware and extractor ([`poem`],
//!   feature `poem`).
//! - Refusals are [`AuthError`]s that know their response: 401 with an RFC 6750
//!   challenge, 400 for a malformed header, 503 when liveness cannot be decided, or a gRPC
//!   status for gRPC requests.
//!
//! ```
//! # session_guard::install_crypto_provider();
//! use session_guard::{Authenticator, InMemoryLiveness, KeySet, SessionGuardLayer,
//!     TokenVerifier, VerificationKey};
//!
//! let keys = KeySet::new([VerificationKey::hmac("k1", &[7; 32]).unwrap()]);
//! let verifier = TokenVerifier::builder(keys).issuer("https://auth.example.com").audience("api").build();
//! let layer = SessionGuardLayer::new(Authenticator::new(verifier, InMemoryLiveness::new()));
//! // `ServiceBuilder::new().layer(layer).service(your_service)`, or `router.layer(layer)`.
//! # let _ = layer;
//! ```
//!
//! With PostgreSQL (feature `postgres`, on by default) the store is
//! `PostgresLiveness::builder(pg_config).start()?`; with keys published by the server,
//! `RemoteJwks::new(url)?` (an `https://` URL, or `http://` to this machine; feature `remote-jwks`, on by default).
//!
//! Call [`install_crypto_provider`] once at start-up.

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
pub use extract::{RequestHead, TokenSource};
#[cfg(feature = "remote-jwks")]
pub use jwks::{JwksError, RemoteJwks};
pub use keys::{Algorithm, KeyError, KeySet, MIN_HMAC_SECRET_BYTES, VerificationKey};
pub use layer::{SessionGuard, SessionGuardLayer};
#[cfg(feature = "postgres")]
pub use liveness::postgres::{
    DEFAULT_CHANNEL, LISTENER_APPLICATION_NAME, LivenessStats, NotReady, PostgresLiveness,
    PostgresLivenessBuilder,
};
pub use liveness::{InMemoryLiveness, Liveness, LivenessCheck, LivenessError};
pub use token_cache::DEFAULT_TOKEN_CACHE_CAPACITY;
pub use verify::{
    DEFAULT_LEEWAY, KeySource, MAX_TOKEN_BYTES, TokenError, TokenVerifier, TokenVerifierBuilder,
};
