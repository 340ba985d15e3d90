//! The keys that sign access tokens.
//!
//! Keys are Ed25519, read from PKCS#8 PEM files named by `JWT_SIGNING_KEYS`. Each key's
//! `kid` is its RFC 7638 JWK thumbprint, so the same key always has the same id on every
//! replica. In development, when no key is given, one is generated on first run and kept
//! in `DEV_KEYS_DIR` (git-ignored) so tokens survive restarts.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use aws_lc_rs::signature::Ed25519KeyPair;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use crate::config::settings::{DEV_KEYS_DIR, JWT_SIGNING_KEYS};
use crate::config::{Environment, KeySettings};

/// Characters of a base64url Ed25519 signature (64 bytes).
const SIGNATURE_CHARS: usize = 86;

/// The header of every token `kid` signs.
fn header_for(kid: &str) -> Header {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    header
}

/// The file name of the generated development key inside `DEV_KEYS_DIR`.
const DEV_KEY_FILE: &str = "ed25519-dev.pem";

/// Why the signing keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("{var}: {path}: {source}")]
    Io {
        /// The setting that names the file (`JWT_SIGNING_KEYS`, or `DEV_KEYS_DIR` for a
        /// generated key).
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key file holds no usable Ed25519 private key.
    #[error("{var}: {path}: not an Ed25519 private key in PKCS#8 PEM ({reason})")]
    Invalid {
        /// The setting that names the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// No keys were configured and this environment may not generate one.
    #[error("JWT_SIGNING_KEYS is empty; only development mode generates a key")]
    Missing,
}

/// One key: its id, its private half for signing and its public half as a JWK.
pub struct SigningKey {
    kid: String,
    /// The private key, parsed once: `jsonwebtoken::encode` parses the PKCS#8 document on
    /// every call, which for Ed25519 derives the public key (a scalar multiplication as
    /// costly as the signature itself), and every login and refresh signs a token.
    pair: Ed25519KeyPair,
    /// The token header (`alg`, `typ`, this `kid`), base64url-encoded once.
    encoded_header: String,
    public: Jwk,
}

impl std::fmt::Debug for SigningKey {
    // The private key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Parses a PKCS#8 PEM Ed25519 private key and proves it can sign and verify.
    fn from_pem(var: &'static str, path: &Path, pem: &[u8]) -> Result<Self, KeyError> {
        let invalid = |reason: String| KeyError::Invalid {
            var,
            path: path.to_owned(),
            reason,
        };
        let encoding = EncodingKey::from_ed_pem(pem).map_err(|e| invalid(e.to_string()))?;
        let mut public = Jwk::from_encoding_key(&encoding, Algorithm::EdDSA)
            .map_err(|e| invalid(e.to_string()))?;
        let kid = public
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| invalid(e.to_string()))?;
        public.common.key_id = Some(kid.clone());
        public.common.public_key_use = Some(PublicKeyUse::Signature);
        let pair = Ed25519KeyPair::from_pkcs8(encoding.as_bytes())
            .map_err(|e| invalid(format!("unusable Ed25519 key: {e}")))?;
        let encoded_header = serde_json::to_vec(&header_for(&kid))
            .map(|json| URL_SAFE_NO_PAD.encode(json))
            .map_err(|e| invalid(e.to_string()))?;
        let key = Self {
            kid,
            pair,
            encoded_header,
            public,
        };
        key.self_check(&encoding).map_err(invalid)?;
        Ok(key)
    }

    /// The key id that tokens signed with this key carry in their header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half, as published in the JWKS.
    pub fn public_jwk(&self) -> &Jwk {
        &self.public
    }

    /// Signs `claims` into a JWT (JWS compact serialisation) whose header names this key:
    /// byte for byte what `jsonwebtoken::encode` writes, without parsing the key again.
    pub fn sign<T: serde::Serialize>(
        &self,
        claims: &T,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = serde_json::to_vec(claims)?;
        let mut token = String::with_capacity(
            self.encoded_header.len() + 2 + (claims.len() * 4).div_ceil(3) + SIGNATURE_CHARS,
        );
        token.push_str(&self.encoded_header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
        let signature = self.pair.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }

    /// Signs a throwaway token, checks that `jsonwebtoken` signs it identically with the
    /// key as it was read, and verifies it with the public half.
    fn self_check(&self, encoding: &EncodingKey) -> Result<(), String> {
        let claims = serde_json::json!({ "sub": "self-check", "exp": u64::MAX / 2 });
        let token = self
            .sign(&claims)
            .map_err(|e| format!("cannot sign: {e}"))?;
        let reference = jsonwebtoken::encode(&header_for(&self.kid), &claims, encoding)
            .map_err(|e| format!("cannot sign: {e}"))?;
        if token != reference {
            return Err("the parsed key signs differently from the key as read".to_owned());
        }
        let decoding = DecodingKey::from_jwk(&self.public).map_err(|e| e.to_string())?;
        jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &decoding,
            &Validation::new(Algorithm::EdDSA),
        )
        .map_err(|e| format!("cannot verify its own signature: {e}"))?;
        Ok(())
    }
}

/// The loaded keys: the first signs, every one verifies.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<SigningKey>,
}

impl KeyRing {
    /// Loads the configured keys, or in development the generated one.
    pub fn load(settings: &KeySettings, environment: Environment) -> Result<Self, KeyError> {
        let (var, paths) = if settings.signing_keys.is_empty() {
            if environment == Environment::Production {
                return Err(KeyError::Missing);
            }
            (DEV_KEYS_DIR.name, vec![dev_key(&settings.dev_keys_dir)?])
        } else {
            (JWT_SIGNING_KEYS.name, settings.signing_keys.clone())
        };
        let keys = paths
            .iter()
            .map(|path| {
                let pem = fs::read(path).map_err(|source| KeyError::Io {
                    var,
                    path: path.clone(),
                    source,
                })?;
                SigningKey::from_pem(var, path, &pem)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { keys })
    }

    /// The key new tokens are signed with.
    pub fn signing(&self) -> &SigningKey {
        &self.keys[0]
    }

    /// Every key that verifies, the signing one first.
    pub fn all(&self) -> &[SigningKey] {
        &self.keys
    }

    /// The public keys as a `portcullis` key set, for verifying our own tokens.
    pub fn verification_keys(&self) -> portcullis::KeySet {
        portcullis::KeySet::new(
            self.keys
                .iter()
                .filter_map(|key| portcullis::VerificationKey::from_jwk(&key.public).ok()),
        )
    }
}

/// The development key's path, generating the key on first use.
fn dev_key(dir: &Path) -> Result<PathBuf, KeyError> {
    let path = dir.join(DEV_KEY_FILE);
    if path.exists() {
        return Ok(path);
    }
    let io = |source| KeyError::Io {
        var: DEV_KEYS_DIR.name,
        path: path.clone(),
        source,
    };
    fs::create_dir_all(dir).map_err(io)?;
    let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .map_err(|_| io(std::io::Error::other("the system random source failed")))?;
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref()));
    write_private(&path, pem.as_bytes()).map_err(io)?;
    tracing::warn!(
        path = %path.display(),
        "generated a development signing key; set JWT_SIGNING_KEYS before going to production"
    );
    Ok(path)
}

/// Writes a file only its owner can read, failing if it already exists.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn dev_config(dir: &Path) -> Config {
        let dir = dir.to_owned();
        Config::from_lookup(crate::config::STANDALONE_NAME, &[], move |name| {
            (name == "DEV_KEYS_DIR").then(|| dir.clone().into_os_string())
        })
        .unwrap()
    }

    fn load(config: &Config) -> Result<KeyRing, KeyError> {
        KeyRing::load(&config.keys, config.environment)
    }

    #[test]
    fn development_generates_a_key_once_and_reuses_it() {
        portcullis::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");
        let first = load(&dev_config(&keys_dir)).expect("generates");
        let second = load(&dev_config(&keys_dir)).expect("reuses");
        assert_eq!(first.signing().kid(), second.signing().kid());
        assert_eq!(first.all().len(), 1);
        let file = keys_dir.join(DEV_KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "only the owner may read the key");
        }
        // The kid is the RFC 7638 thumbprint: 32 bytes of SHA-256, base64url.
        assert_eq!(first.signing().kid().len(), 43);
    }

    #[test]
    fn tokens_are_what_jsonwebtoken_signs_and_verify_with_the_published_key() {
        portcullis::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ring = load(&dev_config(dir.path())).expect("generates");
        let key = ring.signing();
        let pem = fs::read(dir.path().join(DEV_KEY_FILE)).unwrap();
        let encoding = EncodingKey::from_ed_pem(&pem).unwrap();
        for claims in [
            serde_json::json!({"sub": "a", "exp": 4_102_444_800_u64}),
            serde_json::json!({"sub": "ü ✓", "sid": "x".repeat(500), "exp": 4_102_444_800_u64}),
        ] {
            let token = key.sign(&claims).unwrap();
            let reference =
                jsonwebtoken::encode(&header_for(key.kid()), &claims, &encoding).unwrap();
            assert_eq!(token, reference);
            let decoding = DecodingKey::from_jwk(key.public_jwk()).unwrap();
            let decoded = jsonwebtoken::decode::<serde_json::Value>(
                &token,
                &decoding,
                &Validation::new(Algorithm::EdDSA),
            )
            .unwrap();
            assert_eq!(decoded.claims, claims);
            assert_eq!(decoded.header.kid.as_deref(), Some(key.kid()));
        }
    }

    #[test]
    fn production_never_generates() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = dev_config(dir.path());
        config.environment = Environment::Production;
        assert!(matches!(load(&config), Err(KeyError::Missing)));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn garbage_and_missing_files_are_clear_errors() {
        portcullis::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        fs::write(
            &garbage,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let mut config = dev_config(dir.path());
        config.keys.signing_keys = vec![garbage.clone()];
        let err = load(&config).unwrap_err();
        assert!(matches!(err, KeyError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("garbage.pem"));

        config.keys.signing_keys = vec![dir.path().join("absent.pem")];
        assert!(matches!(load(&config), Err(KeyError::Io { .. })));
    }

    #[test]
    fn several_keys_load_in_order_with_distinct_kids() {
        portcullis::install_crypto_provider();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let first = dev_key(a.path()).unwrap();
        let second = dev_key(b.path()).unwrap();
        let mut config = dev_config(a.path());
        config.keys.signing_keys = vec![second, first];
        let ring = load(&config).unwrap();
        assert_eq!(ring.all().len(), 2);
        assert_ne!(ring.all()[0].kid(), ring.all()[1].kid());
        assert_eq!(ring.signing().kid(), ring.all()[0].kid());
        assert_eq!(
            ring.signing().public_jwk().common.key_id.as_deref(),
            Some(ring.signing().kid())
        );
    }
}
