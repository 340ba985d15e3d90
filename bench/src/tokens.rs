//! Access tokens the harness signs itself, with the key the measured service trusts:
//! HS256 with a random 32-byte secret, or EdDSA with the test key of `portcullis`
//! (`middleware/tests/keys`, public on purpose and used for nothing else).

use std::io::Read as _;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use portcullis::{Algorithm, KeySet, MIN_HMAC_SECRET_BYTES, TokenVerifier, VerificationKey};
use serde_json::json;

use crate::Result;

/// `iss` and `aud` of the tokens the harness signs.
pub(crate) const ISSUER: &str = "portcullis-bench";
const ED25519_PRIVATE_PEM: &[u8] = include_bytes!("../../middleware/tests/keys/ed25519.pem");
/// The public half of the EdDSA key (SPKI PEM).
pub(crate) const ED25519_PUBLIC_PEM: &[u8] =
    include_bytes!("../../middleware/tests/keys/ed25519.pub.pem");
/// The `kid` of the EdDSA key.
pub(crate) const ED25519_KID: &str = "bench-ed25519";
const HS256_KID: &str = "bench-hs256";

/// An HS256 secret: 32 bytes from the kernel's generator.
pub(crate) fn random_secret() -> Result<[u8; MIN_HMAC_SECRET_BYTES]> {
    let mut secret = [0; MIN_HMAC_SECRET_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
    Ok(secret)
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Signs access tokens as the server would: `iss`, `aud`, `sub`, `sid`, `iat`, `exp`, `jti`.
pub(crate) struct Signer {
    header: Header,
    key: EncodingKey,
}

impl Signer {
    /// EdDSA with the test key.
    pub(crate) fn eddsa() -> Result<Self> {
        let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(ED25519_KID.to_owned());
        Ok(Self {
            header,
            key: EncodingKey::from_ed_pem(ED25519_PRIVATE_PEM)?,
        })
    }

    /// HS256 with `secret`.
    pub(crate) fn hs256(secret: &[u8]) -> Self {
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(HS256_KID.to_owned());
        Self {
            header,
            key: EncodingKey::from_secret(secret),
        }
    }

    /// A token for `session` of `user`, issued at `issued_at` (Unix seconds) and valid
    /// for `lifetime_secs`. The same arguments give the same token; its `jti` is the
    /// session id, as long as a real one.
    pub(crate) fn sign(
        &self,
        user: &str,
        session: &str,
        issued_at: u64,
        lifetime_secs: u64,
    ) -> Result<String> {
        let claims = json!({
            "iss": ISSUER, "aud": ISSUER, "sub": user, "sid": session,
            "iat": issued_at, "exp": issued_at + lifetime_secs, "jti": session,
        });
        Ok(jsonwebtoken::encode(&self.header, &claims, &self.key)?)
    }
}

/// A verifier that trusts the EdDSA test key.
pub(crate) fn eddsa_verifier() -> Result<TokenVerifier> {
    let key = VerificationKey::from_pem(ED25519_KID, Algorithm::EdDSA, ED25519_PUBLIC_PEM)?;
    Ok(TokenVerifier::builder(KeySet::new([key]))
        .issuer(ISSUER)
        .audience(ISSUER)
        .build())
}

/// A verifier that trusts the HS256 `secret`.
pub(crate) fn hs256_verifier(secret: &[u8]) -> Result<TokenVerifier> {
    let key = VerificationKey::hmac(HS256_KID, secret)?;
    Ok(TokenVerifier::builder(KeySet::new([key]))
        .issuer(ISSUER)
        .audience(ISSUER)
        .build())
}

/// Reads an HS256 secret written by [`write_secret`].
pub(crate) fn read_secret(path: &str) -> Result<Vec<u8>> {
    Ok(std::fs::read(path).map_err(|e| format!("reading the HS256 secret {path}: {e}"))?)
}

/// Writes `secret` to `path` (mode 0600) for a child process.
pub(crate) fn write_secret(path: &std::path::Path, secret: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret)?;
    Ok(())
}
