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
//!   challenge (RFC 9470's for step-up), 400 for a malformed header, 503 when liveness
//!   cannot be decided, or a gRPC status for gRPC requests.
//!
//! # Set-up
//!
//! A service that trusts a Portcullis server needs two things: the server's JWKS URL (keys,
//! [`RemoteJwks`]) and the server's PostgreSQL (liveness, [`PostgresLiveness`] on the
//! same database, whose `sessions` table and revocation trigger it reads).
//! [`postgres::DatabaseConfig`] reads that `DATABASE_URL`, `sslmode` included, and
//! refuses by name a URL that is not PostgreSQL's. At start-up, [`RemoteJwks::fetch`]
//! fails unless the URL answers a key set this crate can verify with, and
//! [`PostgresLiveness::ready`] unless the store can work; each error names what is wrong
//! in its [`source`](std::error::Error::source) chain, which the examples print whole.
//! Once running, the layer's only voice is `tracing`: install a subscriber to see its
//! warnings (a refusal because liveness could not be decided, at most one line per 10 s;
//! a failed key refresh). Only the routes behind the guard need a session.
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
//! # Step-up
//!
//! Tokens say how the user authenticated: [`AuthContext::aal`] (`aal1`, `aal2`),
//! [`AuthContext::amr`] (RFC 8176 methods: `pwd`, `otp`, `hwk`, ...) and
//! [`AuthContext::auth_time`]. A route can require a level and a freshness:
//! [`SessionGuardLayer::require_aal`] and [`SessionGuardLayer::max_auth_age`] (the same on
//! [`poem::SessionGuardMiddleware`]; [`SessionGuard::with_requirement`] for one tonic
//! service). A valid token of a live session that falls short gets 401 with RFC 9470's
//! challenge, which states the route's requirement, or `UNAUTHENTICATED` with the same
//! challenge in the metadata for gRPC:
//!
//! ```text
//! WWW-Authenticate: Bearer error="insufficient_user_authentication",
//!   error_description="a stronger authentication is required", acr_values="aal2", max_age=600
//! ```
//!
//! The client authenticates again (the Portcullis server's `POST /auth/step-up`) and
//! retries with the new token. A token without `aal` is `aal1`; one without `auth_time`
//! never meets a `max_auth_age` (`iat` is when the token was minted, which a refresh moves,
//! not when the user authenticated).
//!
//! ```
//! # portcullis::install_crypto_provider();
//! use std::time::Duration;
//! use portcullis::{Aal, Authenticator, InMemoryLiveness, KeySet, SessionGuardLayer,
//!     TokenVerifier, VerificationKey};
//!
//! # let keys = KeySet::new([VerificationKey::hmac("k1", &[7; 32]).unwrap()]);
//! # let verifier = TokenVerifier::builder(keys).issuer("iss").audience("aud").build();
//! let guard = SessionGuardLayer::new(Authenticator::new(verifier, InMemoryLiveness::new()));
//! // A second factor, used within the last ten minutes; clones share the caches.
//! let privileged = guard.clone().require_aal(Aal::Aal2).max_auth_age(Duration::from_secs(600));
//! // axum: `.route("/me", get(me).layer(guard))`
//! //       `.route("/account/delete", post(delete).layer(privileged))`
//! # let _ = (guard, privileged);
//! ```
//!
//! In a handler, [`AssuranceRequirement::check`] applies a requirement by hand; with the
//! `axum` or `poem` feature, [`AuthError`] is a response there, so `?` answers with the
//! challenge.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `postgres` | on | [`PostgresLiveness`], and [`postgres`]: every `sslmode` with rustls, the pool, the `LISTEN` connection |
//! | `remote-jwks` | on | [`RemoteJwks`]: keys from a URL (`https://`, or `http://` to this machine) |
//! | `axum` | off | [`AuthContext`] as an axum extractor, [`AuthError`] as a response |
//! | `poem` | off | [`poem`]: the Poem middleware and extractor; [`AuthError`] as a Poem `ResponseError` |
//! | `tonic` | off | [`SessionGuard`] keeps its service's gRPC name |

#![cfg_attr(docsrs, feature(doc_cfg))]

mod assurance;
mod authenticator;
#[cfg(feature = "axum")]
mod axum;
pub mod body;
mod context;
mod crypto;
mod diagnostics;
mod error;
mod extract;
pub mod future;
#[cfg(feature = "remote-jwks")]
mod jwks;
mod keys;
mod layer;
mod liveness;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "poem")]
pub mod poem;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(test)]
mod test_tokens;
mod token_cache;
mod verify;

pub use assurance::{Aal, AssuranceRequirement, AuthMethod, Shortfall};
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
pub use liveness::cache::{
    DEFAULT_CACHE_CAPACITY, DEFAULT_LIVE_TTL, LivenessCache, LivenessCacheBuilder, LivenessStats,
};
#[cfg(feature = "postgres")]
pub use liveness::feed::{FeedEvent, Revocation, RevocationFeed};
#[cfg(feature = "postgres")]
pub use liveness::postgres::{
    DEFAULT_CHANNEL, LISTENER_APPLICATION_NAME, NotReady, PostgresListenFeed, PostgresLiveness,
    PostgresLivenessBuilder, PostgresSessionQuery,
};
#[cfg(feature = "postgres")]
pub use liveness::query::{SessionQuery, SessionRecord, SessionState};
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
