//! Session Guard: access tokens that stop working the moment their session is revoked.
//!
//! This crate is the framework-agnostic core and its adapters. Today it holds the
//! process-wide crypto set-up that every signer and verifier in the workspace relies on;
//! the Tower layer, the liveness check and the verifier build on it.
//!
//! ```
//! session_guard::install_crypto_provider();
//! // Calling it again, from a library or a test, is harmless.
//! session_guard::install_crypto_provider();
//! ```

mod crypto;

pub use crypto::install_crypto_provider;
