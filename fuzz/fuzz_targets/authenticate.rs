//! The whole `Authenticator::authenticate` (and its synchronous fast path,
//! `authenticate_cached`) on an `Authorization: Bearer ...` header.
//!
//! Two kinds of input:
//!
//! - anything else: the bytes after `Bearer ` as they are;
//! - `sign-hs\n<header>\n<payload>` or `sign-ed\n<header>\n<payload>`: the header and
//!   payload bytes are base64url-encoded and *signed* with the test HS256 secret or the
//!   test Ed25519 key, so the fuzzer reaches the claim checks behind the signature.
//!
//! Invariants: a token is accepted only when it is signed by the key its `kid` names with
//! that key's algorithm, its header has no `crit`, its claims are strict JSON and name the expected issuer and audience, it has not
//! expired and is already valid, and its session (`s1` of `u1`) is live; the cached fast
//! path never disagrees with the full path; a refused token is never cached.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::EncodingKey;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use portcullis::{
    Algorithm, AuthContext, AuthError, Authenticator, DEFAULT_LEEWAY, InMemoryLiveness, KeySet,
    TokenVerifier, VerificationKey,
};

const ISSUER: &str = "https://auth.test";
const AUDIENCE: &str = "api";
/// The unit tests' HS256 secret: public, for tests only.
const HMAC_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const ED_PRIVATE: &[u8] = include_bytes!("../../middleware/tests/keys/ed25519.pem");
const ED_PUBLIC: &[u8] = include_bytes!("../../middleware/tests/keys/ed25519.pub.pem");

struct Fixture {
    runtime: tokio::runtime::Runtime,
    authenticator: Authenticator,
    /// The same keys without any cache, to check the cached answers against.
    verifier: TokenVerifier,
    hs_signing: EncodingKey,
    ed_signing: EncodingKey,
}

fn key_set() -> KeySet {
    KeySet::new([
        VerificationKey::hmac("hs", HMAC_SECRET).expect("a 32-byte secret"),
        VerificationKey::from_pem("ed", Algorithm::EdDSA, ED_PUBLIC).expect("the test key"),
    ])
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        portcullis::install_crypto_provider();
        let liveness = InMemoryLiveness::new();
        liveness.insert("s1", "u1", None);
        liveness.insert("s2", "u1", None);
        liveness.revoke("s2");
        liveness.insert("s3", "u1", Some(UNIX_EPOCH + Duration::from_secs(1)));
        Fixture {
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a current-thread runtime"),
            authenticator: Authenticator::new(
                TokenVerifier::builder(key_set()).issuer(ISSUER).audience(AUDIENCE).build(),
                liveness,
            )
            .with_token_cache_capacity(4096),
            verifier: TokenVerifier::builder(key_set()).issuer(ISSUER).audience(AUDIENCE).build(),
            hs_signing: EncodingKey::from_secret(HMAC_SECRET),
            ed_signing: EncodingKey::from_ed_pem(ED_PRIVATE).expect("the test key"),
        }
    })
}

/// A token signed over fuzzed header and payload bytes, and the key it was signed with.
struct Signed {
    token: String,
    kid: &'static str,
    algorithm: jsonwebtoken::Algorithm,
    header: Vec<u8>,
    payload: Vec<u8>,
}

fn signed(fixture: &Fixture, data: &[u8]) -> Option<Signed> {
    let (kid, algorithm, key, rest) = if let Some(rest) = data.strip_prefix(b"sign-hs\n") {
        (
            "hs",
            jsonwebtoken::Algorithm::HS256,
            &fixture.hs_signing,
            rest,
        )
    } else if let Some(rest) = data.strip_prefix(b"sign-ed\n") {
        (
            "ed",
            jsonwebtoken::Algorithm::EdDSA,
            &fixture.ed_signing,
            rest,
        )
    } else {
        return None;
    };
    let split = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let header = rest[..split].to_vec();
    let payload = rest.get(split + 1..).unwrap_or_default().to_vec();
    let message = format!("{}.{}", B64.encode(&header), B64.encode(&payload));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, algorithm).ok()?;
    Some(Signed {
        token: format!("{message}.{signature}"),
        kid,
        algorithm,
        header,
        payload,
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn outcome(result: &Result<AuthContext, AuthError>) -> String {
    match result {
        Ok(context) => format!("ok {} {}", context.user_id(), context.session_id()),
        Err(e) => format!("err {}", e.reason()),
    }
}

/// What must hold of a signed token that was accepted, read from its JSON directly.
fn check_accepted_signed(signed: &Signed) {
    let header: Value = serde_json::from_slice(&signed.header).expect("accepted: JSON header");
    assert!(header.get("crit").is_none(), "accepted with crit");
    assert_eq!(header["kid"], signed.kid, "accepted under another kid");
    let alg = serde_json::to_value(signed.algorithm).expect("an algorithm serializes");
    assert_eq!(header["alg"], alg, "accepted with another alg");

    // Strict JSON, as the verifier demands: reading only the known claims would skip an
    // unknown one holding a number out of range or invalid UTF-8.
    let claims: Value = serde_json::from_slice(&signed.payload).expect("accepted: JSON claims");
    assert_eq!(claims["iss"], ISSUER, "accepted with another issuer");
    let audience_ok = match &claims["aud"] {
        Value::String(one) => one == AUDIENCE,
        Value::Array(many) => many.iter().any(|a| a == AUDIENCE),
        _ => false,
    };
    assert!(audience_ok, "accepted with another audience");
    assert_eq!(claims["sub"], "u1");
    assert_eq!(claims["sid"], "s1");
    let leeway = DEFAULT_LEEWAY.as_secs();
    // One second of slack: the clock moves between the check and here.
    let exp = claims["exp"].as_u64().expect("accepted: integer exp");
    assert!(
        exp.saturating_add(leeway + 1) >= now(),
        "accepted after exp"
    );
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_u64().expect("accepted: integer nbf");
        assert!(nbf <= now() + leeway + 1, "accepted before nbf");
    }
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let signed = signed(fixture, data);
    let value = match &signed {
        Some(signed) => format!("Bearer {}", signed.token).into_bytes(),
        None => [b"Bearer ".as_slice(), data].concat(),
    };
    let Ok(value) = HeaderValue::from_bytes(&value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value);
    let auth = &fixture.authenticator;

    let cached_before = auth.authenticate_cached(&headers);
    let full = fixture.runtime.block_on(auth.authenticate(&headers));
    let cached_after = auth.authenticate_cached(&headers);

    if let Some(before) = &cached_before {
        assert_eq!(outcome(before), outcome(&full), "fast path disagrees");
    }
    if let Some(after) = &cached_after {
        assert_eq!(outcome(after), outcome(&full), "fast path disagrees");
    }
    match &full {
        Ok(context) => {
            assert_eq!(context.user_id().as_str(), "u1");
            assert_eq!(context.session_id().as_str(), "s1");
            let token = std::str::from_utf8(&headers[AUTHORIZATION].as_bytes()[7..])
                .expect("accepted: ASCII")
                .trim_start_matches(' ');
            let claims = fixture
                .runtime
                .block_on(fixture.verifier.verify(token))
                .expect("accepted by the cache but not by a fresh verifier");
            assert_eq!(&claims, context.claims());
            if let Some(signed) = &signed {
                check_accepted_signed(signed);
            }
            if context.claims().exp > now() + 2 {
                assert!(cached_after.is_some(), "an accepted token was not cached");
            }
        }
        Err(AuthError::InvalidToken(_)) => {
            assert!(cached_after.is_none(), "a refused token was cached");
        }
        Err(_) => {}
    }
});
