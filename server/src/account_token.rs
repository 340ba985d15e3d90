//! The one-time tokens of verification and password-reset links: 256 bits from the
//! operating system's random source, handed out as base64url (43 characters, no
//! padding), stored only as a keyed hash
//! ([`RefreshKey::account_token_hash`](crate::refresh_token::RefreshKey::account_token_hash)).
//! Anything else a client sends is no token.

use std::fmt;

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::refresh_token::RefreshKey;

const TOKEN_BYTES: usize = 32;
/// Length of a token's text.
pub const TOKEN_CHARS: usize = (TOKEN_BYTES * 4).div_ceil(3);

/// A mailed one-time token. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountToken([u8; TOKEN_BYTES]);

impl fmt::Debug for AccountToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccountToken(..)")
    }
}

impl AccountToken {
    /// A new token.
    ///
    /// # Panics
    ///
    /// When the operating system's random source fails, which leaves nothing safe to do.
    pub fn generate() -> Self {
        let mut bytes = [0; TOKEN_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system random source works");
        Self(bytes)
    }

    /// The token in `text`, when it is exactly one.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != TOKEN_CHARS {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// The text that goes into the link.
    pub fn expose(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// What the database stores for it.
    pub fn hash(&self, key: &RefreshKey) -> Vec<u8> {
        key.account_token_hash(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_base64url_characters_that_parse_back() {
        let token = AccountToken::generate();
        let text = token.expose();
        assert_eq!(text.len(), TOKEN_CHARS);
        assert_eq!(TOKEN_CHARS, 43);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(AccountToken::parse(&text), Some(token.clone()));
        assert_ne!(AccountToken::generate(), token);
        assert!(!format!("{token:?}").contains(&text));
    }

    #[test]
    fn anything_else_is_no_token() {
        let text = AccountToken::generate().expose();
        assert_eq!(AccountToken::parse(&text[1..]), None);
        assert_eq!(AccountToken::parse(&format!("{text}A")), None);
        assert_eq!(AccountToken::parse(&"*".repeat(TOKEN_CHARS)), None);
        assert_eq!(AccountToken::parse(""), None);
    }

    #[test]
    fn the_stored_hash_is_keyed() {
        let token = AccountToken::generate();
        let a = RefreshKey::from_secret(&[1; 32]);
        let b = RefreshKey::from_secret(&[2; 32]);
        assert_eq!(token.hash(&a).len(), 32);
        assert_eq!(token.hash(&a), token.hash(&a));
        assert_ne!(token.hash(&a), token.hash(&b));
    }
}
