//! Refresh tokens: the session they belong to, their generation, and 256 random bits.
//!
//! The secrets of one session form a chain: the secret of generation `n + 1` is
//! `HMAC(successor key, secret n)`. Rotation is therefore deterministic (a retry of the
//! same token derives the same successor, so a client ends up with a working token
//! whichever response it keeps), and the session stores only `HMAC(hash key, current
//! secret)`: one fixed-size value, however often it is refreshed. A keyed hash fits a
//! high-entropy secret; slow password hashes are for passwords.
//!
//! Because successors are derived, the server can tell an older token of the chain from
//! a forgery without storing old generations: it walks the presented secret forward to
//! the current generation and compares the result with the stored hash. The walk is
//! bounded by [`MAX_CHAIN_WALK`], so a forged token costs at most a few milliseconds.
//!
//! The text a client holds is base64url (no padding) of
//! `version (1 byte) ‖ session id (16) ‖ generation (4, big-endian) ‖ secret (32)`.
//! Tokens issued before this format (43 characters: the bare secret) are still accepted
//! once: they are generation 0 of their session's chain, found through a table kept for
//! the upgrade, and rotate to the current format.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret as _, SecretSlice};
use uuid::Uuid;

use crate::ids::SessionId;

use crate::config::settings::{DEV_KEYS_DIR, REFRESH_TOKEN_KEY_FILE};

const SECRET_BYTES: usize = 32;
const FORMAT_VERSION: u8 = 1;
/// Version, session id, generation, secret.
const TOKEN_BYTES: usize = 1 + 16 + 4 + SECRET_BYTES;
/// Length of a token's text: base64url of [`TOKEN_BYTES`] without padding.
pub const TOKEN_CHARS: usize = (TOKEN_BYTES * 4).div_ceil(3);
/// Length of a token of the format before session ids were carried: the bare secret.
pub const LEGACY_TOKEN_CHARS: usize = (SECRET_BYTES * 4).div_ceil(3);
/// The most generations a presented token may lag behind its session's current one and
/// still be recognised as an earlier token of the chain (and so as reuse). Each step is
/// one HMAC (well under a microsecond), so a forged token costs a few milliseconds at
/// most. With 15-minute access tokens this is over 100 days of refreshing day and night,
/// longer than a session lives; an older token is refused as unknown.
pub const MAX_CHAIN_WALK: u32 = 10_000;
/// Shortest key accepted from `REFRESH_TOKEN_KEY_FILE`.
pub const MIN_KEY_BYTES: usize = 32;

/// The secret part of a refresh token. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshSecret([u8; SECRET_BYTES]);

impl fmt::Debug for RefreshSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshSecret(..)")
    }
}

impl RefreshSecret {
    /// A new secret from the system's secure random source.
    ///
    /// # Panics
    ///
    /// When the operating system's random source fails, which leaves nothing safe to do.
    pub fn generate() -> Self {
        let mut bytes = [0; SECRET_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system random source works");
        Self(bytes)
    }
}

/// A refresh token of the current format: which session, which generation, the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    session: SessionId,
    generation: u32,
    secret: RefreshSecret,
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshToken")
            .field("session", &self.session)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl RefreshToken {
    /// The first token of a new session.
    pub fn first(session: SessionId, secret: RefreshSecret) -> Self {
        Self {
            session,
            generation: 0,
            secret,
        }
    }

    /// The session it belongs to.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Its place in the session's chain: 0 at login, one more per rotation.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The token that replaces `presented` when it is rotated, from the successor of its
    /// secret ([`RefreshKey::successor`]): the same every time.
    pub fn following(
        presented: &PresentedToken,
        session: SessionId,
        successor: RefreshSecret,
    ) -> Self {
        Self {
            session,
            generation: presented.generation() + 1,
            secret: successor,
        }
    }

    /// The text handed to the client.
    pub fn expose(&self) -> String {
        let mut bytes = [0; TOKEN_BYTES];
        bytes[0] = FORMAT_VERSION;
        bytes[1..17].copy_from_slice(self.session.as_uuid().as_bytes());
        bytes[17..21].copy_from_slice(&self.generation.to_be_bytes());
        bytes[21..].copy_from_slice(&self.secret.0);
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

/// A refresh token as a client presents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresentedToken {
    /// The current format.
    Chained(RefreshToken),
    /// A token issued before the upgrade: generation 0 of a session found by its hash.
    Legacy(RefreshSecret),
}

impl PresentedToken {
    /// Parses the client's text; `None` unless it is one of the two formats exactly, with
    /// a generation PostgreSQL's `integer` holds.
    pub fn parse(text: &str) -> Option<Self> {
        match text.len() {
            TOKEN_CHARS => {
                let bytes: [u8; TOKEN_BYTES] =
                    URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()?;
                if bytes[0] != FORMAT_VERSION {
                    return None;
                }
                let generation = u32::from_be_bytes(bytes[17..21].try_into().ok()?);
                if i32::try_from(generation).is_err() {
                    return None;
                }
                Some(Self::Chained(RefreshToken {
                    session: SessionId::from_uuid(Uuid::from_slice(&bytes[1..17]).ok()?),
                    generation,
                    secret: RefreshSecret(bytes[21..].try_into().ok()?),
                }))
            }
            LEGACY_TOKEN_CHARS => {
                let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
                Some(Self::Legacy(RefreshSecret(bytes.try_into().ok()?)))
            }
            _ => None,
        }
    }

    /// The session the token names; `None` for the old format.
    pub fn session(&self) -> Option<SessionId> {
        match self {
            Self::Chained(token) => Some(token.session),
            Self::Legacy(_) => None,
        }
    }

    /// The token's generation (0 for the old format).
    pub fn generation(&self) -> u32 {
        match self {
            Self::Chained(token) => token.generation,
            Self::Legacy(_) => 0,
        }
    }

    /// The secret.
    pub fn secret(&self) -> &RefreshSecret {
        match self {
            Self::Chained(token) => &token.secret,
            Self::Legacy(secret) => secret,
        }
    }
}

/// The server's refresh-token key: derives stored hashes, successors and client
/// fingerprints.
pub struct RefreshKey {
    hash: hmac::Key,
    successor: hmac::Key,
    client: hmac::Key,
    account_token: hmac::Key,
    binding: hmac::Key,
    recovery_code: hmac::Key,
    factor_sealing: SecretSlice<u8>,
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
    #[error("{var}: {path}: {source}")]
    Io {
        /// The setting that names the file (`REFRESH_TOKEN_KEY_FILE`, or `DEV_KEYS_DIR`
        /// for a generated key).
        var: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file holds fewer than [`MIN_KEY_BYTES`] bytes.
    #[error("{var}: {path}: a refresh-token key needs at least 32 bytes")]
    TooShort {
        /// The setting that names the file.
        var: &'static str,
        /// The file.
        path: std::path::PathBuf,
    },
}

/// A session's client binding (see [`RefreshKey::client_binding`]): base64url, 43
/// characters. A secret: no `Debug` in the clear.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientBinding(String);

impl ClientBinding {
    /// The text the client keeps.
    pub fn expose(&self) -> String {
        self.0.clone()
    }
}

impl fmt::Debug for ClientBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientBinding(..)")
    }
}

/// Whether an older token belongs to its session's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ancestry {
    /// Walking it forward reaches the current secret: a genuine earlier token.
    Genuine,
    /// It does not: a forgery (or a token of another key).
    Forged,
    /// It lags more than [`MAX_CHAIN_WALK`] generations: not checked.
    TooOld,
}

impl RefreshKey {
    /// A key from secret bytes; the derived keys are independent HMAC keys.
    pub fn from_secret(secret: &[u8]) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let derive =
            |label: &[u8]| hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&root, label).as_ref());
        Self {
            hash: derive(b"portcullis refresh-token hash v1"),
            successor: derive(b"portcullis refresh-token successor v1"),
            client: derive(b"portcullis refresh-token client v1"),
            account_token: derive(b"portcullis account-token hash v1"),
            binding: derive(b"portcullis client-binding v1"),
            recovery_code: derive(b"portcullis recovery-code hash v1"),
            factor_sealing: hmac::sign(&root, b"portcullis factor sealing v1")
                .as_ref()
                .to_vec()
                .into(),
        }
    }

    /// Reads the key file `REFRESH_TOKEN_KEY_FILE` names.
    pub fn load(path: &Path) -> Result<Self, RefreshKeyError> {
        Self::load_named(REFRESH_TOKEN_KEY_FILE.name, path)
    }

    fn load_named(var: &'static str, path: &Path) -> Result<Self, RefreshKeyError> {
        let secret =
            SecretSlice::from(std::fs::read(path).map_err(|source| RefreshKeyError::Io {
                var,
                path: path.to_owned(),
                source,
            })?);
        if secret.expose_secret().len() < MIN_KEY_BYTES {
            return Err(RefreshKeyError::TooShort {
                var,
                path: path.to_owned(),
            });
        }
        Ok(Self::from_secret(secret.expose_secret()))
    }

    /// The development key in `dir`, generated on first use.
    pub fn load_or_generate(dir: &Path) -> Result<Self, RefreshKeyError> {
        let path = dir.join("refresh-token.key");
        if !path.exists() {
            let io = |source| RefreshKeyError::Io {
                var: DEV_KEYS_DIR.name,
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
        Self::load_named(DEV_KEYS_DIR.name, &path)
    }

    /// What the database stores for `secret`.
    pub fn hash(&self, secret: &RefreshSecret) -> Vec<u8> {
        hmac::sign(&self.hash, &secret.0).as_ref().to_vec()
    }

    /// What the database stores for a mailed one-time token (see
    /// [`crate::account_token`]): a hash keyed by its own key derived from this one, so
    /// it can never be mistaken for a refresh token's.
    pub fn account_token_hash(&self, secret: &[u8]) -> Vec<u8> {
        hmac::sign(&self.account_token, secret).as_ref().to_vec()
    }

    /// What the database stores for a recovery code (its normalised text): a hash keyed
    /// by its own key, so a dump of the database alone cannot be searched for codes.
    pub fn recovery_code_hash(&self, code: &[u8]) -> Vec<u8> {
        hmac::sign(&self.recovery_code, code).as_ref().to_vec()
    }

    /// The 256-bit key that encrypts second-factor secrets at rest (TOTP secrets),
    /// derived from this one, so that the database alone does not give them away.
    pub fn factor_sealing_key(&self) -> &[u8] {
        self.factor_sealing.expose_secret()
    }

    /// The secret of the next generation: the same every time.
    pub fn successor(&self, secret: &RefreshSecret) -> RefreshSecret {
        let tag = hmac::sign(&self.successor, &secret.0);
        let mut bytes = [0; SECRET_BYTES];
        bytes.copy_from_slice(&tag.as_ref()[..SECRET_BYTES]);
        RefreshSecret(bytes)
    }

    /// Whether `secret`, `steps` generations behind, walks forward to the secret whose
    /// stored hash is `current_hash`. Compares in constant time.
    pub fn ancestry(&self, secret: &RefreshSecret, steps: u32, current_hash: &[u8]) -> Ancestry {
        if steps > MAX_CHAIN_WALK {
            return Ancestry::TooOld;
        }
        let mut walked = secret.clone();
        for _ in 0..steps {
            walked = self.successor(&walked);
        }
        match hmac::verify(&self.hash, &walked.0, current_hash) {
            Ok(()) => Ancestry::Genuine,
            Err(_) => Ancestry::Forged,
        }
    }

    /// The session's client binding: a secret the client gets with its first token pair
    /// (in the binding cookie for a browser) and sends with each refresh. A copy of the
    /// refresh token alone does not carry it. Derived from the session id with its own
    /// key, so nothing more is stored.
    pub fn client_binding(&self, session: SessionId) -> ClientBinding {
        let tag = hmac::sign(&self.binding, session.as_uuid().as_bytes());
        ClientBinding(URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Whether `presented` is `session`'s client binding. Compares in constant time.
    pub fn binds(&self, session: SessionId, presented: &str) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(presented) else {
            return false;
        };
        hmac::verify(&self.binding, session.as_uuid().as_bytes(), &tag).is_ok()
    }

    /// The fingerprint of a client that showed `session`'s binding: the same from every
    /// network and user agent, so the owner's retry from a new network is still theirs.
    pub fn bound_fingerprint(&self, session: SessionId) -> Vec<u8> {
        let mut context = hmac::Context::with_key(&self.client);
        // A first byte no IP fingerprint starts with (they start 0, 4 or 6).
        context.update(b"b");
        context.update(session.as_uuid().as_bytes());
        context.sign().as_ref().to_vec()
    }

    /// A keyed fingerprint of a client: only the client that rotated a token may retry
    /// it. Keyed so that the stored value says nothing about the user agent.
    pub fn client_fingerprint(&self, ip: Option<IpAddr>, user_agent: Option<&str>) -> Vec<u8> {
        let mut context = hmac::Context::with_key(&self.client);
        match ip {
            Some(IpAddr::V4(ip)) => {
                context.update(&[4]);
                context.update(&ip.octets());
            }
            Some(IpAddr::V6(ip)) => {
                context.update(&[6]);
                context.update(&ip.octets());
            }
            None => context.update(&[0]),
        }
        let agent = user_agent.unwrap_or_default().as_bytes();
        context.update(&(agent.len() as u64).to_be_bytes());
        context.update(agent);
        context.sign().as_ref().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(generation: u32) -> RefreshToken {
        RefreshToken {
            session: SessionId::from_uuid(Uuid::new_v4()),
            generation,
            secret: RefreshSecret::generate(),
        }
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let token = token(7);
        let text = token.expose();
        assert_eq!(text.len(), TOKEN_CHARS);
        assert_eq!(
            PresentedToken::parse(&text),
            Some(PresentedToken::Chained(token.clone()))
        );
        let legacy = URL_SAFE_NO_PAD.encode([9_u8; 32]);
        assert_eq!(
            PresentedToken::parse(&legacy),
            Some(PresentedToken::Legacy(RefreshSecret([9; 32])))
        );
        let mut wrong_version = URL_SAFE_NO_PAD.decode(&text).unwrap();
        wrong_version[0] = 2;
        let mut huge_generation = URL_SAFE_NO_PAD.decode(&text).unwrap();
        huge_generation[17] = 0x80;
        for garbage in [
            String::new(),
            "abc".to_owned(),
            "A".repeat(44),
            format!("{}=", &legacy[..42]),
            format!("{}=", &text[..TOKEN_CHARS - 1]),
            text[..TOKEN_CHARS - 1].to_owned(),
            format!("{text}A"),
            "!".repeat(TOKEN_CHARS),
            URL_SAFE_NO_PAD.encode(wrong_version),
            URL_SAFE_NO_PAD.encode(huge_generation),
        ] {
            assert!(PresentedToken::parse(&garbage).is_none(), "{garbage}");
        }
        let debug = format!("{token:?} {:?}", token.secret);
        assert!(!debug.contains(&text), "{debug}");
        assert!(debug.contains("RefreshSecret(..)"), "{debug}");
    }

    #[test]
    fn successors_are_deterministic_and_hashes_keyed() {
        let key = RefreshKey::from_secret(&[1; 32]);
        let other = RefreshKey::from_secret(&[2; 32]);
        let presented = PresentedToken::Chained(token(3));
        let session = presented.session().unwrap();
        let next = RefreshToken::following(&presented, session, key.successor(presented.secret()));
        assert_eq!(
            next,
            RefreshToken::following(&presented, session, key.successor(presented.secret()))
        );
        assert_eq!(next.generation(), 4);
        assert_ne!(&next.secret, presented.secret());
        assert_ne!(next.secret, other.successor(presented.secret()));
        let secret = presented.secret();
        assert_eq!(key.hash(secret).len(), 32);
        assert_ne!(key.hash(secret), other.hash(secret));
        assert_ne!(key.hash(secret), key.hash(&key.successor(secret)));
    }

    #[test]
    fn only_a_genuine_earlier_secret_walks_to_the_current_hash_within_the_bound() {
        let key = RefreshKey::from_secret(&[1; 32]);
        let first = RefreshSecret::generate();
        let mut current = first.clone();
        for _ in 0..50 {
            current = key.successor(&current);
        }
        let current_hash = key.hash(&current);
        assert_eq!(key.ancestry(&first, 50, &current_hash), Ancestry::Genuine);
        assert_eq!(key.ancestry(&first, 49, &current_hash), Ancestry::Forged);
        assert_eq!(key.ancestry(&current, 0, &current_hash), Ancestry::Genuine);
        let forged = RefreshSecret::generate();
        assert_eq!(key.ancestry(&forged, 50, &current_hash), Ancestry::Forged);
        let other = RefreshKey::from_secret(&[2; 32]);
        assert_eq!(other.ancestry(&first, 50, &current_hash), Ancestry::Forged);
        assert_eq!(
            key.ancestry(&forged, MAX_CHAIN_WALK + 1, &current_hash),
            Ancestry::TooOld
        );
    }

    #[test]
    fn a_binding_belongs_to_its_session_and_key_only() {
        let key = RefreshKey::from_secret(&[1; 32]);
        let other = RefreshKey::from_secret(&[2; 32]);
        let session = SessionId::from_uuid(Uuid::new_v4());
        let elsewhere = SessionId::from_uuid(Uuid::new_v4());
        let binding = key.client_binding(session).expose();
        assert_eq!(binding.len(), 43);
        assert!(key.binds(session, &binding));
        assert!(!key.binds(elsewhere, &binding));
        assert!(!other.binds(session, &binding));
        assert!(!key.binds(session, "not base64!"));
        assert!(!key.binds(session, ""));
        assert_eq!(
            key.bound_fingerprint(session),
            key.bound_fingerprint(session)
        );
        assert_ne!(
            key.bound_fingerprint(session),
            key.bound_fingerprint(elsewhere)
        );
        assert_ne!(
            key.bound_fingerprint(session),
            key.client_fingerprint(None, None)
        );
    }

    #[test]
    fn client_fingerprints_differ_by_ip_and_user_agent() {
        let key = RefreshKey::from_secret(&[1; 32]);
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let fingerprint = key.client_fingerprint(Some(ip), Some("Firefox"));
        assert_eq!(
            fingerprint,
            key.client_fingerprint(Some(ip), Some("Firefox"))
        );
        assert_eq!(fingerprint.len(), 32);
        for other in [
            key.client_fingerprint(Some("203.0.113.8".parse().unwrap()), Some("Firefox")),
            key.client_fingerprint(Some(ip), Some("Chrome")),
            key.client_fingerprint(Some(ip), None),
            key.client_fingerprint(None, Some("Firefox")),
            RefreshKey::from_secret(&[2; 32]).client_fingerprint(Some(ip), Some("Firefox")),
        ] {
            assert_ne!(fingerprint, other);
        }
    }
}
