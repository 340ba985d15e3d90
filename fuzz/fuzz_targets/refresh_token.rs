//! `RefreshToken::parse` on arbitrary text.
//!
//! Invariants: only 43 base64url characters parse; a parsed token's `expose()` gives back
//! exactly the text it came from (one text per token, so no two spellings of one
//! secret), and parses again to the same token; rotation never hands back the same token.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use session_server::refresh_token::{RefreshKey, RefreshToken};

fn key() -> &'static RefreshKey {
    static KEY: OnceLock<RefreshKey> = OnceLock::new();
    KEY.get_or_init(|| RefreshKey::from_secret(&[7; 32]))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(token) = RefreshToken::parse(text) else {
        return;
    };
    assert_eq!(text.len(), 43, "parsed a token of another length");
    assert!(
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "parsed a token outside the base64url alphabet"
    );
    let exposed = token.expose();
    assert_eq!(exposed, text, "expose() does not round-trip");
    assert_eq!(RefreshToken::parse(&exposed).as_ref(), Some(&token));

    let key = key();
    let successor = key.successor(&token);
    assert_ne!(successor, token, "rotation returned the same token");
    assert_eq!(
        successor,
        key.successor(&token),
        "rotation is not deterministic"
    );
    assert_ne!(key.hash(&token), key.hash(&successor));
});
