//! `jsonwebtoken::decode_header` on arbitrary bytes, and `portcullis`'s own checks that
//! run before any key is looked up (size, header, algorithm allow-list).
//!
//! Invariants: parsing the bytes and parsing them as text agree, and the verifier's
//! verdict on a token it has no key for is exactly what the header alone decides (a
//! `crit` member is refused before the algorithm is looked at).

#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use portcullis::{KeySet, MAX_TOKEN_BYTES, TokenError, TokenVerifier};

struct Fixture {
    runtime: tokio::runtime::Runtime,
    /// No keys at all: every token that gets past the prechecks ends at `UnknownKey`.
    keyless: TokenVerifier,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        portcullis::install_crypto_provider();
        Fixture {
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a current-thread runtime"),
            keyless: TokenVerifier::builder(KeySet::default()).issuer("issuer").audience("audience").build(),
        }
    })
}

/// Whether the header (the part before the first dot) has a `crit` member, whatever its
/// value: RFC 7515 §4.1.11 extensions, none of which the verifier understands.
fn carries_crit(token: &str) -> bool {
    let header = token.split('.').next().unwrap_or_default();
    B64.decode(header)
        .ok()
        .and_then(|json| serde_json::from_slice::<Value>(&json).ok())
        .is_some_and(|header| header.get("crit").is_some())
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let from_bytes = jsonwebtoken::decode_header(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let from_text = jsonwebtoken::decode_header(text);
    assert_eq!(
        from_bytes.as_ref().ok(),
        from_text.as_ref().ok(),
        "bytes and text parse differently"
    );

    let verdict = fixture.runtime.block_on(fixture.keyless.verify(text));
    let Err(verdict) = verdict else {
        panic!("a verifier without keys accepted a token");
    };
    let expected = if text.len() > MAX_TOKEN_BYTES {
        TokenError::TooLarge
    } else {
        match &from_text {
            Err(_) => TokenError::Malformed,
            Ok(_) if carries_crit(text) => TokenError::CriticalHeader,
            Ok(header) => match header.alg {
                Algorithm::EdDSA | Algorithm::ES256 | Algorithm::RS256 | Algorithm::HS256 => {
                    TokenError::UnknownKey
                }
                _ => TokenError::AlgorithmMismatch,
            },
        }
    };
    assert_eq!(verdict, expected, "precheck verdict for {text:?}");
});
