//! Refresh tokens: 256 random bits, URL-safe, stored only as a keyed hash.
//!
//! Rotation is deterministic: a token's successor is `HMAC(successor key, token)`, so a
//! retry of the same token derives the same successor and the client ends up with a
//! working token whichever response it keeps. The database stores `HMAC(hash key, token)`
//! of each generation; a keyed hash fits a high-entropy secret and allows an indexed
//! lookup (slow password hashes are for passwords).

use std::fmt;
use std::path::Path;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const TOKEN_BYTES: usize = 32;
/// Shortest key accepted from `REFRESH_TOKEN_KEY_FILE`.
pub const MIN_KEY_BYTES: usize = 32;

/// A refresh token as the client holds it. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken([u8; TOKEN_BYTES]);

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(..)")
    }
}

impl RefreshToken {
    /// A new token from the system's secure random source.
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

    /// Parses the client's text; `None` unless it is exactly 32 bytes of base64url.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 43 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// The text handed to the client.
    pub fn expose(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }
}

/// The server's refresh-token key: derives the stored hash and the successor of a token.
pub struct RefreshKey {
    hash: hmac::Key,
    successor: hmac::Key,
}

impl fmt::Debug for RefreshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshKey(..)")
    }
}

/// Why the key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RefreshKeyError {
    /// Reading or writing the key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file holds fewer than [`MIN_KEY_BYTES`] bytes.
    #[error("{0}: a refresh-token key needs at least 32 bytes")]
    TooShort(std::path::PathBuf),
}

impl RefreshKey {
    /// A key from secret bytes; the two derived keys are independent HMAC keys.
    pub fn from_secret(secret: &[u8]) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derive =
            |label: &[u8]| hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, label).as_ref());
        Self {
            hash: derive(b"session-guard refresh-token hash v1"),
            successor: derive(b"session-guard refresh-token successor v1"),
        }
    }

    /// Reads the key file.
    pub fn load(path: &Path) -> Result<Self, RefreshKeyError> {
        let secret = std::fs::read(path).map_err(|source| RefreshKeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        if secret.len() < MIN_KEY_BYTES {
            return Err(RefreshKeyError::TooShort(path.to_owned()));
        }
        Ok(Self::from_secret(&secret))
    }

    /// The development key in `dir`, generated on first use.
    pub fn load_or_generate(dir: &Path) -> Result<Self, RefreshKeyError> {
        let path = dir.join("refresh-token.key");
        if !path.exists() {
            let io = |source| RefreshKeyError::Io {
                path: path.clone(),
                source,
            };
            std::fs::create_dir_all(dir).map_err(io)?;
            let mut secret = [0_u8; MIN_KEY_BYTES];
            SystemRandom::new()
                .fill(&mut secret)
                .map_err(|_| io(std::io::Error::other("the system random source failed")))?;
            crate::keys::write_private(&path, &secret).map_err(io)?;
            tracing::warn!(
                path = %path.display(),
                "generated a development refresh-token key; set REFRESH_TOKEN_KEY_FILE in production"
            );
        }
        Self::load(&path)
    }

    /// What the database stores for `token`.
    pub fn hash(&self, token: &RefreshToken) -> Vec<u8> {
        hmac::sign(&self.hash, &token.0).as_ref().to_vec()
    }

    /// The token that replaces `token` when it is rotated: the same every time.
    pub fn successor(&self, token: &RefreshToken) -> RefreshToken {
        let tag = hmac::sign(&self.successor, &token.0);
        let mut bytes = [0; TOKEN_BYTES];
        bytes.copy_from_slice(&tag.as_ref()[..TOKEN_BYTES]);
        RefreshToken(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let token = RefreshToken::generate();
        let text = token.expose();
        assert_eq!(text.len(), 43);
        assert_eq!(RefreshToken::parse(&text), Some(token.clone()));
        assert_ne!(RefreshToken::generate(), token);
        for garbage in [
            "",
            "abc",
            &"A".repeat(44),
            &format!("{}=", &text[..42]),
            "!!",
        ] {
            assert!(RefreshToken::parse(garbage).is_none(), "{garbage}");
        }
        assert_eq!(format!("{token:?}"), "RefreshToken(..)");
    }

    #[test]
    fn successors_are_deterministic_and_hashes_keyed() {
        let key = RefreshKey::from_secret(&[1; 32]);
        let other = RefreshKey::from_secret(&[2; 32]);
        let token = RefreshToken::generate();
        assert_eq!(key.successor(&token), key.successor(&token));
        assert_ne!(key.successor(&token), token);
        assert_ne!(key.successor(&token), other.successor(&token));
        assert_eq!(key.hash(&token).len(), 32);
        assert_ne!(key.hash(&token), other.hash(&token));
        assert_ne!(key.hash(&token), key.hash(&key.successor(&token)));
    }
}
