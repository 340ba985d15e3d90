//! Test keys and token minting for this crate's unit tests.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use crate::keys::{Algorithm, KeySet, VerificationKey};
use crate::verify::TokenVerifier;

pub(crate) const ISSUER: &str = "https://auth.test";
pub(crate) const AUDIENCE: &str = "api";
pub(crate) const HMAC_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

pub(crate) const ED_PRIVATE: &[u8] = include_bytes!("../tests/keys/ed25519.pem");
pub(crate) const ED_PUBLIC: &[u8] = include_bytes!("../tests/keys/ed25519.pub.pem");
pub(crate) const ED_OTHER_PRIVATE: &[u8] = include_bytes!("../tests/keys/ed25519-other.pem");
pub(crate) const EC_PRIVATE: &[u8] = include_bytes!("../tests/keys/p256.pem");
pub(crate) const EC_PUBLIC: &[u8] = include_bytes!("../tests/keys/p256.pub.pem");
pub(crate) const RSA_PRIVATE: &[u8] = include_bytes!("../tests/keys/rsa.pem");
pub(crate) const RSA_PUBLIC: &[u8] = include_bytes!("../tests/keys/rsa.pub.pem");

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A key set with one key of each algorithm: kids `ed`, `ec`, `rsa`, `hs`.
pub(crate) fn key_set() -> KeySet {
    crate::install_crypto_provider();
    KeySet::new([
        VerificationKey::from_pem("ed", Algorithm::EdDSA, ED_PUBLIC).unwrap(),
        VerificationKey::from_pem("ec", Algorithm::ES256, EC_PUBLIC).unwrap(),
        VerificationKey::from_pem("rsa", Algorithm::RS256, RSA_PUBLIC).unwrap(),
        VerificationKey::hmac("hs", HMAC_SECRET).unwrap(),
    ])
}

pub(crate) fn verifier() -> TokenVerifier {
    TokenVerifier::builder(key_set())
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .build()
}

/// Valid claims for `user` and `session`, expiring in 15 minutes.
pub(crate) fn claims(user: &str, session: &str) -> Value {
    let now = now();
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": user, "sid": session,
        "iat": now, "exp": now + 900, "jti": format!("{user}-{session}-{now}"),
    })
}

/// Signs `claims` with the private key behind `kid` (as in [`key_set`]).
pub(crate) fn sign(kid: &str, claims: &Value) -> String {
    crate::install_crypto_provider();
    let (algorithm, key) = match kid {
        "ed" => (
            jsonwebtoken::Algorithm::EdDSA,
            EncodingKey::from_ed_pem(ED_PRIVATE).unwrap(),
        ),
        "ec" => (
            jsonwebtoken::Algorithm::ES256,
            EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
        ),
        "rsa" => (
            jsonwebtoken::Algorithm::RS256,
            EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        ),
        "hs" => (
            jsonwebtoken::Algorithm::HS256,
            EncodingKey::from_secret(HMAC_SECRET),
        ),
        other => panic!("no test key {other}"),
    };
    let mut header = Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// An EdDSA token for `user` and `session`.
pub(crate) fn token(user: &str, session: &str) -> String {
    sign("ed", &claims(user, session))
}

/// An EdDSA token for `user` and `session` with `extra` claims added (or replaced).
pub(crate) fn token_with(user: &str, session: &str, extra: &Value) -> String {
    let mut claims = claims(user, session);
    let object = claims.as_object_mut().expect("claims are an object");
    for (name, value) in extra.as_object().expect("extra claims are an object") {
        object.insert(name.clone(), value.clone());
    }
    sign("ed", &claims)
}
