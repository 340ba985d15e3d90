//! `PresentedToken::parse` on arbitrary text.
//!
//! Invariants: only the two formats parse (71 base64url characters of version 1, or the
//! 43 of a bare legacy secret); a parsed current-format token's `expose()` gives back
//! exactly the text it came from (one text per token, so no two spellings of one
//! token), and parses again to the same token; rotation moves to the next generation of
//! the same session, deterministically, with a secret of another hash.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis_server::SessionId;
use portcullis_server::refresh_token::{
    LEGACY_TOKEN_CHARS, PresentedToken, RefreshKey, RefreshToken, TOKEN_CHARS,
};
use uuid::Uuid;

fn key() -> &'static RefreshKey {
    static KEY: OnceLock<RefreshKey> = OnceLock::new();
    KEY.get_or_init(|| RefreshKey::from_secret(&[7; 32]))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(presented) = PresentedToken::parse(text) else {
        return;
    };
    assert!(
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "parsed a token outside the base64url alphabet"
    );
    match &presented {
        PresentedToken::Chained(token) => {
            assert_eq!(text.len(), TOKEN_CHARS, "parsed a token of another length");
            let exposed = token.expose();
            assert_eq!(exposed, text, "expose() does not round-trip");
            assert_eq!(PresentedToken::parse(&exposed).as_ref(), Some(&presented));
            assert!(i32::try_from(token.generation()).is_ok());
        }
        PresentedToken::Legacy(_) => {
            assert_eq!(text.len(), LEGACY_TOKEN_CHARS, "parsed a token of another length");
        }
    }

    let key = key();
    let session = presented
        .session()
        .unwrap_or(SessionId::from_uuid(Uuid::nil()));
    let successor = key.successor(presented.secret());
    assert_eq!(successor, key.successor(presented.secret()), "rotation is not deterministic");
    let next = RefreshToken::following(&presented, session, successor.clone());
    assert_eq!(next.session(), session);
    assert_eq!(next.generation(), presented.generation() + 1);
    assert_ne!(key.hash(presented.secret()), key.hash(&successor));
});
