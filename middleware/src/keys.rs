//! Verification keys: each has a `kid` and exactly one algorithm.
//!
//! A token names its key by `kid`; the key, not the token, decides the algorithm. A token
//! whose header claims another algorithm than its key's is refused, which closes the
//! HS/RS and HS/EdDSA confusion attacks by construction.
//!
//! ```
//! use portcullis::{Algorithm, KeySet, VerificationKey};
//!
//! let keys = KeySet::new([
//!     VerificationKey::hmac("2024-hs", b"a secret of at least thirty-two bytes!").unwrap(),
//! ]);
//! assert_eq!(keys.get(Some("2024-hs")).unwrap().algorithm(), Algorithm::HS256);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};

/// The shortest HMAC secret accepted: 256 bits, as RFC 7518 asks for HS256.
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// The signature algorithms a key may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Ed25519 signatures (the default).
    EdDSA,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// HMAC with SHA-256, for single-service set-ups with a shared secret.
    HS256,
}

impl Algorithm {
    pub(crate) fn to_jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Self::ES256 => jsonwebtoken::Algorithm::ES256,
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
            Self::HS256 => jsonwebtoken::Algorithm::HS256,
        }
    }

    pub(crate) fn from_jwt(algorithm: jsonwebtoken::Algorithm) -> Option<Self> {
        match algorithm {
            jsonwebtoken::Algorithm::EdDSA => Some(Self::EdDSA),
            jsonwebtoken::Algorithm::ES256 => Some(Self::ES256),
            jsonwebtoken::Algorithm::RS256 => Some(Self::RS256),
            jsonwebtoken::Algorithm::HS256 => Some(Self::HS256),
            _ => None,
        }
    }
}

/// Why a key could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The PEM or JWK does not hold a key of the expected kind.
    #[error("key {kid}: not a valid {algorithm:?} public key: {reason}")]
    Invalid {
        /// The key id.
        kid: String,
        /// The algorithm it was meant for.
        algorithm: Algorithm,
        /// What the parser said.
        reason: String,
    },
    /// An HMAC secret shorter than [`MIN_HMAC_SECRET_BYTES`].
    #[error("key {0}: an HS256 secret needs at least 32 bytes")]
    WeakSecret(String),
    /// A JWKS document that is not JSON of the right shape.
    #[error("not a JWKS document: {0}")]
    Jwks(String),
    /// A published key this crate does not verify with: a symmetric key, another
    /// algorithm or curve, or no `kid`.
    #[error("{}: {reason}", describe_kid(.kid.as_deref()))]
    Unsupported {
        /// The key id, if it has one.
        kid: Option<String>,
        /// What is wrong with it.
        reason: String,
    },
}

/// `key "k1"`, or what to call a key that has no id.
fn describe_kid(kid: Option<&str>) -> String {
    match kid {
        Some(kid) => format!("key {kid:?}"),
        None => "a key without kid".to_owned(),
    }
}

/// One key that verifies signatures, with its id and its one algorithm.
#[derive(Clone)]
pub struct VerificationKey {
    kid: Arc<str>,
    algorithm: Algorithm,
    decoding: DecodingKey,
}

impl fmt::Debug for VerificationKey {
    // An HMAC key is a secret: its bytes never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl VerificationKey {
    /// A public key in PEM: SPKI (`PUBLIC KEY`) for EdDSA and ES256, SPKI or PKCS#1
    /// (`RSA PUBLIC KEY`) for RS256. For HS256 use [`VerificationKey::hmac`].
    pub fn from_pem(
        kid: impl Into<String>,
        algorithm: Algorithm,
        pem: &[u8],
    ) -> Result<Self, KeyError> {
        let kid = kid.into();
        let decoding = match algorithm {
            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
            Algorithm::HS256 => {
                return Err(KeyError::Invalid {
                    kid,
                    algorithm,
                    reason: "HS256 keys are secrets, not PEM: use VerificationKey::hmac".into(),
                });
            }
        }
        .map_err(|e| KeyError::Invalid {
            kid: kid.clone(),
            algorithm,
            reason: e.to_string(),
        })?;
        Ok(Self {
            kid: kid.into(),
            algorithm,
            decoding,
        })
    }

    /// An HS256 shared secret of at least [`MIN_HMAC_SECRET_BYTES`] bytes.
    pub fn hmac(kid: impl Into<String>, secret: &[u8]) -> Result<Self, KeyError> {
        let kid = kid.into();
        if secret.len() < MIN_HMAC_SECRET_BYTES {
            return Err(KeyError::WeakSecret(kid));
        }
        Ok(Self {
            kid: kid.into(),
            algorithm: Algorithm::HS256,
            decoding: DecodingKey::from_secret(secret),
        })
    }

    /// A public JWK. The algorithm comes from its `alg`, or from its key type when
    /// `alg` is absent (OKP Ed25519: EdDSA, EC P-256: ES256, RSA: RS256). Symmetric
    /// (`oct`) keys are refused: they do not belong in a published key set.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        let kid = jwk.common.key_id.clone().filter(|kid| !kid.is_empty());
        let unsupported = |reason: String| KeyError::Unsupported {
            kid: kid.clone(),
            reason,
        };
        let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::OctetKeyPair(p), None | Some(KeyAlgorithm::EdDSA))
                if p.curve == EllipticCurve::Ed25519 =>
            {
                Algorithm::EdDSA
            }
            (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
                if p.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::OctetKey(_), _) => {
                return Err(unsupported(
                    "a symmetric (oct) key, which is never published".to_owned(),
                ));
            }
            (parameters, alg) => {
                let key_type = match parameters {
                    AlgorithmParameters::EllipticCurve(p) => format!("EC {:?}", p.curve),
                    AlgorithmParameters::OctetKeyPair(p) => format!("OKP {:?}", p.curve),
                    AlgorithmParameters::RSA(_) => "RSA".to_owned(),
                    _ => "this key type".to_owned(),
                };
                let alg = alg
                    .map(|alg| format!(" with alg {alg}"))
                    .unwrap_or_default();
                return Err(unsupported(format!(
                    "{key_type}{alg} is not supported (EdDSA on Ed25519, ES256 on P-256 or RS256)"
                )));
            }
        };
        let Some(kid) = kid else {
            return Err(unsupported("a published key needs a kid".to_owned()));
        };
        let invalid = |reason: &str| KeyError::Invalid {
            kid: kid.clone(),
            algorithm,
            reason: reason.to_owned(),
        };
        let decoding = DecodingKey::from_jwk(jwk).map_err(|e| invalid(&e.to_string()))?;
        Ok(Self {
            kid: kid.into(),
            algorithm,
            decoding,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

/// The keys a verifier trusts, by `kid`. Several may be active at once, for rotation.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<Arc<str>, Arc<VerificationKey>>,
}

impl KeySet {
    /// A set of these keys. A later key with the same `kid` replaces an earlier one.
    pub fn new(keys: impl IntoIterator<Item = VerificationKey>) -> Self {
        Self {
            keys: keys
                .into_iter()
                .map(|key| (Arc::clone(&key.kid), Arc::new(key)))
                .collect(),
        }
    }

    /// The keys of a JWKS document (`{"keys": [...]}`). Keys this crate cannot use (other
    /// algorithms, symmetric keys, keys without `kid`) are skipped with a warning;
    /// a document that is not a JWKS at all is an error.
    pub fn from_jwks_json(json: &str) -> Result<Self, KeyError> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| KeyError::Jwks(e.to_string()))?;
        Ok(Self::from_jwks(&set))
    }

    /// The usable keys of a parsed JWKS; see [`KeySet::from_jwks_json`].
    pub fn from_jwks(set: &JwkSet) -> Self {
        let (keys, skipped) = Self::usable_keys(set);
        for error in skipped {
            tracing::warn!(error = %error, "skipping a JWKS key");
        }
        keys
    }

    /// The usable keys of a parsed JWKS, and why each of the others is skipped.
    pub(crate) fn usable_keys(set: &JwkSet) -> (Self, Vec<KeyError>) {
        let mut skipped = Vec::new();
        let keys = Self::new(set.keys.iter().filter_map(|jwk| {
            VerificationKey::from_jwk(jwk)
                .map_err(|e| skipped.push(e))
                .ok()
        }));
        (keys, skipped)
    }

    /// The key a token's `kid` names. A token without `kid` is accepted only when the
    /// set holds exactly one key, so that there is nothing to choose between.
    pub fn get(&self, kid: Option<&str>) -> Option<&Arc<VerificationKey>> {
        match kid {
            Some(kid) => self.keys.get(kid),
            None if self.keys.len() == 1 => self.keys.values().next(),
            None => None,
        }
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_secrets_must_be_long_enough() {
        assert!(matches!(
            VerificationKey::hmac("k", b"short"),
            Err(KeyError::WeakSecret(_))
        ));
        assert!(VerificationKey::hmac("k", &[7; 32]).is_ok());
    }

    #[test]
    fn garbage_pem_is_a_clear_error() {
        for algorithm in [
            Algorithm::EdDSA,
            Algorithm::ES256,
            Algorithm::RS256,
            Algorithm::HS256,
        ] {
            let err = VerificationKey::from_pem("k1", algorithm, b"not a pem").unwrap_err();
            assert!(err.to_string().contains("k1"), "{err}");
        }
    }

    #[test]
    fn a_token_without_kid_only_matches_a_single_key_set() {
        let one = KeySet::new([VerificationKey::hmac("a", &[1; 32]).unwrap()]);
        assert_eq!(one.get(None).unwrap().kid(), "a");
        let two = KeySet::new([
            VerificationKey::hmac("a", &[1; 32]).unwrap(),
            VerificationKey::hmac("b", &[2; 32]).unwrap(),
        ]);
        assert!(two.get(None).is_none());
        assert_eq!(two.get(Some("b")).unwrap().kid(), "b");
        assert!(two.get(Some("c")).is_none());
    }

    #[test]
    fn jwks_skips_symmetric_and_kidless_keys() {
        let json = r#"{"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"}
        ]}"#;
        let set = KeySet::from_jwks_json(json).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.get(Some("ed")).unwrap().algorithm(), Algorithm::EdDSA);
        assert!(KeySet::from_jwks_json("{\"nope\": 1}").is_err());
        assert!(KeySet::from_jwks_json("not json").is_err());
    }
}
