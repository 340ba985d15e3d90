//! Checking an access token: size, header, key, signature and claims.
//!
//! ```
//! # portcullis::install_crypto_provider();
//! use portcullis::{KeySet, TokenVerifier, VerificationKey};
//!
//! let keys = KeySet::new([VerificationKey::hmac("k1", &[42; 32]).unwrap()]);
//! let verifier = TokenVerifier::builder(keys)
//!     .issuer("https://auth.example.com")
//!     .audience("api")
//!     .build();
//! # let _ = verifier;
//! ```

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use serde_json::{Map, Value};

use crate::context::Claims;
use crate::keys::{Algorithm, KeySet, VerificationKey};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The default clock leeway for `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// Why a token was refused. Kept for logs and metrics; never sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("token too large")]
    TooLarge,
    /// Not three base64url parts of JSON, or a header this crate cannot read.
    #[error("malformed token")]
    Malformed,
    /// No trusted key has the token's `kid`.
    #[error("unknown key id")]
    UnknownKey,
    /// The header's `alg` is not the algorithm of the key it names.
    #[error("algorithm does not match the key")]
    AlgorithmMismatch,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the expected issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not include the expected audience.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim (`exp`, `sub`, `sid`, `iss`, `aud`) is missing or mistyped, or an
    /// optional one (`aal`, `amr`, `auth_time`, ...) is mistyped: an `aal` other than
    /// `"aal1"` or `"aal2"`, say.
    #[error("missing or invalid claim")]
    InvalidClaims,
    /// The header has `crit` (RFC 7515 §4.1.11): extensions the recipient must understand,
    /// and this crate understands none.
    #[error("critical header extensions")]
    CriticalHeader,
    /// The claims are not strict JSON (RFC 8259): a number no parser can hold, invalid
    /// UTF-8, ... in a claim this crate does not read. A lenient reader skips it, a strict
    /// one refuses the token; a token that two readers see differently is refused.
    #[error("claims are not strict JSON")]
    ClaimsNotStrictJson,
}

impl TokenError {
    /// A short stable label, for metrics and log fields.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooLarge => "token_too_large",
            Self::Malformed => "token_malformed",
            Self::UnknownKey => "unknown_kid",
            Self::AlgorithmMismatch => "algorithm_mismatch",
            Self::BadSignature => "bad_signature",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::InvalidClaims => "invalid_claims",
            Self::CriticalHeader => "critical_header",
            Self::ClaimsNotStrictJson => "claims_not_strict_json",
        }
    }
}

/// Where the verifier finds its keys.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A fixed set, from PEM, secrets or a JWKS document.
    Static(Arc<KeySet>),
    /// A JWKS URL, fetched and refreshed when an unknown `kid` appears.
    #[cfg(feature = "remote-jwks")]
    Remote(crate::jwks::RemoteJwks),
}

impl From<KeySet> for KeySource {
    fn from(keys: KeySet) -> Self {
        Self::Static(Arc::new(keys))
    }
}

#[cfg(feature = "remote-jwks")]
impl From<crate::jwks::RemoteJwks> for KeySource {
    fn from(jwks: crate::jwks::RemoteJwks) -> Self {
        Self::Remote(jwks)
    }
}

/// Verifies access tokens against trusted keys, an issuer and an audience.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    keys: KeySource,
    issuer: String,
    audience: String,
    leeway: Duration,
}

/// Builds a [`TokenVerifier`]: the keys, then the issuer and the audience, each named.
///
/// Both are required: `build` exists only once [`issuer`](Self::issuer) and
/// [`audience`](Self::audience) were both called (in either order), so neither can be
/// forgotten or passed in the other's place.
///
/// ```compile_fail
/// # use portcullis::{KeySet, TokenVerifier};
/// // No audience: does not compile.
/// let verifier = TokenVerifier::builder(KeySet::default()).issuer("https://auth.example.com").build();
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct TokenVerifierBuilder<I = (), A = ()> {
    keys: KeySource,
    issuer: I,
    audience: A,
}

impl<A> TokenVerifierBuilder<(), A> {
    /// The `iss` every token must carry, exactly.
    pub fn issuer(self, issuer: impl Into<String>) -> TokenVerifierBuilder<String, A> {
        TokenVerifierBuilder {
            keys: self.keys,
            issuer: issuer.into(),
            audience: self.audience,
        }
    }
}

impl<I> TokenVerifierBuilder<I, ()> {
    /// The audience every token's `aud` must name (it may name others too).
    pub fn audience(self, audience: impl Into<String>) -> TokenVerifierBuilder<I, String> {
        TokenVerifierBuilder {
            keys: self.keys,
            issuer: self.issuer,
            audience: audience.into(),
        }
    }
}

impl TokenVerifierBuilder<String, String> {
    /// The verifier, with the default leeway ([`TokenVerifier::with_leeway`] changes it).
    pub fn build(self) -> TokenVerifier {
        TokenVerifier {
            keys: self.keys,
            issuer: self.issuer,
            audience: self.audience,
            leeway: DEFAULT_LEEWAY,
        }
    }
}

impl TokenVerifier {
    /// A verifier that trusts `keys`; name the issuer and the audience next:
    /// `TokenVerifier::builder(keys).issuer(iss).audience(aud).build()`.
    pub fn builder(keys: impl Into<KeySource>) -> TokenVerifierBuilder {
        TokenVerifierBuilder {
            keys: keys.into(),
            issuer: (),
            audience: (),
        }
    }

    /// Clock skew tolerated on `exp` and `nbf` (default 5 s).
    #[must_use]
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Checks `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let kid = self.precheck(token)?;
        match &self.keys {
            KeySource::Static(keys) => self.verify_with(token, keys.get(kid.as_deref())),
            #[cfg(feature = "remote-jwks")]
            KeySource::Remote(jwks) => {
                let key = jwks.key(kid.as_deref()).await;
                self.verify_with(token, key.as_ref())
            }
        }
    }

    /// Size and header checks that need no key; returns the header's `kid`.
    fn precheck(&self, token: &str) -> Result<Option<String>, TokenError> {
        let _ = self;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        // `alg: none` and algorithms outside jsonwebtoken's list fail here, unparsed.
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        // jsonwebtoken reads `crit` but does not act on it, and takes `"crit": null` for
        // none: look at the header's members themselves.
        if json_object(part(token, 0))
            .ok_or(TokenError::Malformed)?
            .contains_key("crit")
        {
            return Err(TokenError::CriticalHeader);
        }
        if Algorithm::from_jwt(header.alg).is_none() {
            return Err(TokenError::AlgorithmMismatch);
        }
        Ok(header.kid)
    }

    fn verify_with(
        &self,
        token: &str,
        key: Option<&Arc<VerificationKey>>,
    ) -> Result<Claims, TokenError> {
        let key = key.ok_or(TokenError::UnknownKey)?;
        // Only the key's own algorithm is allowed: the header cannot choose.
        let mut validation = Validation::new(key.algorithm().to_jwt());
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        let data =
            decode::<Claims>(token, key.decoding(), &validation).map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidAlgorithm => TokenError::AlgorithmMismatch,
                ErrorKind::MissingRequiredClaim(_)
                | ErrorKind::InvalidClaimFormat(_)
                | ErrorKind::Json(_)
                | ErrorKind::InvalidSubject => TokenError::InvalidClaims,
                _ => TokenError::Malformed,
            })?;
        // Reading `Claims` skips the members it does not name without parsing them (a
        // number is not converted, a string's UTF-8 is not checked); the whole payload
        // must be strict JSON too, as a strict reader of the same token would demand.
        if json_object(part(token, 1)).is_none() {
            return Err(TokenError::ClaimsNotStrictJson);
        }
        let claims = data.claims;
        if claims.sub.is_empty() || claims.sid.is_empty() {
            return Err(TokenError::InvalidClaims);
        }
        // The caches turn `exp` (and `AuthContext::auth_time` turns `auth_time`) into a
        // `SystemTime`; past what one can hold that would overflow and panic. No real token
        // lives that long.
        let representable = |secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)).is_some();
        if !representable(claims.exp) || !claims.auth_time.is_none_or(representable) {
            return Err(TokenError::InvalidClaims);
        }
        Ok(claims)
    }
}

/// The `index`th dot-separated part of `token`, as jsonwebtoken splits it once it has
/// parsed the header (whose part holds no dot).
fn part(token: &str, index: usize) -> &str {
    token.split('.').nth(index).unwrap_or_default()
}

/// A base64url part decoded and parsed as a strict JSON object: every number in range,
/// every string valid UTF-8.
fn json_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The security floor (SECURITY.md), one test per row that belongs to token checking.
#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::test_tokens::*;

    fn b64(value: &serde_json::Value) -> String {
        B64.encode(value.to_string())
    }

    async fn verify(token: &str) -> Result<Claims, TokenError> {
        verifier().verify(token).await
    }

    #[tokio::test]
    async fn every_supported_algorithm_verifies_with_its_own_key() {
        for kid in ["ed", "ec", "rsa", "hs"] {
            let claims = verify(&sign(kid, &claims("u1", "s1"))).await;
            let claims = claims.unwrap_or_else(|e| panic!("{kid}: {e}"));
            assert_eq!((claims.sub.as_str(), claims.sid.as_str()), ("u1", "s1"));
        }
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        let header = json!({"alg": "none", "typ": "JWT", "kid": "ed"});
        for signature in ["", "AAAA"] {
            let token = format!("{}.{}.{signature}", b64(&header), b64(&claims("u", "s")));
            assert_eq!(verify(&token).await.unwrap_err(), TokenError::Malformed);
        }
    }

    #[tokio::test]
    async fn hmac_signed_with_a_public_key_is_refused() {
        // The classic confusion: the attacker HMACs with the public key as secret and
        // names the asymmetric key's kid.
        for (kid, public) in [("ed", ED_PUBLIC), ("rsa", RSA_PUBLIC), ("ec", EC_PUBLIC)] {
            let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
            header.kid = Some(kid.to_owned());
            let token = jsonwebtoken::encode(
                &header,
                &claims("u", "s"),
                &EncodingKey::from_secret(public),
            )
            .unwrap();
            assert_eq!(
                verify(&token).await.unwrap_err(),
                TokenError::AlgorithmMismatch,
                "{kid}"
            );
        }
    }

    #[tokio::test]
    async fn asymmetric_token_naming_the_hmac_key_is_refused() {
        let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some("hs".to_owned());
        let token = jsonwebtoken::encode(
            &header,
            &claims("u", "s"),
            &EncodingKey::from_ed_pem(ED_PRIVATE).unwrap(),
        )
        .unwrap();
        assert_eq!(
            verify(&token).await.unwrap_err(),
            TokenError::AlgorithmMismatch
        );
    }

    #[tokio::test]
    async fn other_algorithms_of_the_family_are_refused() {
        let mut header = Header::new(jsonwebtoken::Algorithm::HS512);
        header.kid = Some("hs".to_owned());
        let token = jsonwebtoken::encode(
            &header,
            &claims("u", "s"),
            &EncodingKey::from_secret(HMAC_SECRET),
        )
        .unwrap();
        assert_eq!(
            verify(&token).await.unwrap_err(),
            TokenError::AlgorithmMismatch
        );
    }

    #[tokio::test]
    async fn expired_is_refused_beyond_the_leeway() {
        let mut expired = claims("u", "s");
        expired["exp"] = json!(now() - 60);
        assert_eq!(
            verify(&sign("ed", &expired)).await.unwrap_err(),
            TokenError::Expired
        );

        // Within the leeway it still passes; with no leeway it does not.
        let mut just = claims("u", "s");
        just["exp"] = json!(now() - 2);
        assert!(verify(&sign("ed", &just)).await.is_ok());
        let strict = verifier().with_leeway(Duration::ZERO);
        assert_eq!(
            strict.verify(&sign("ed", &just)).await.unwrap_err(),
            TokenError::Expired
        );
    }

    #[tokio::test]
    async fn nbf_in_the_future_is_refused() {
        let mut early = claims("u", "s");
        early["nbf"] = json!(now() + 3600);
        assert_eq!(
            verify(&sign("ed", &early)).await.unwrap_err(),
            TokenError::NotYetValid
        );
        let mut fine = claims("u", "s");
        fine["nbf"] = json!(now() - 10);
        assert!(verify(&sign("ed", &fine)).await.is_ok());
    }

    #[tokio::test]
    async fn wrong_issuer_or_audience_is_refused() {
        let mut issuer = claims("u", "s");
        issuer["iss"] = json!("https://evil.test");
        assert_eq!(
            verify(&sign("ed", &issuer)).await.unwrap_err(),
            TokenError::WrongIssuer
        );

        let mut audience = claims("u", "s");
        audience["aud"] = json!("another-api");
        assert_eq!(
            verify(&sign("ed", &audience)).await.unwrap_err(),
            TokenError::WrongAudience
        );

        let mut several = claims("u", "s");
        several["aud"] = json!(["another-api", AUDIENCE]);
        assert!(verify(&sign("ed", &several)).await.is_ok());
    }

    #[tokio::test]
    async fn a_bad_signature_is_refused() {
        let token = token("u", "s");
        let (rest, signature) = token.rsplit_once('.').unwrap();
        let mut bytes = B64.decode(signature).unwrap();
        bytes[0] ^= 1;
        let tampered = format!("{rest}.{}", B64.encode(bytes));
        assert_eq!(
            verify(&tampered).await.unwrap_err(),
            TokenError::BadSignature
        );

        // Claims changed after signing.
        let (header, _) = rest.split_once('.').unwrap();
        let mut forged_claims = claims("admin", "s");
        forged_claims["sub"] = json!("admin");
        let forged = format!("{header}.{}.{signature}", b64(&forged_claims));
        assert_eq!(verify(&forged).await.unwrap_err(), TokenError::BadSignature);

        // Signed by another Ed25519 key under a trusted kid.
        let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some("ed".to_owned());
        let impostor = jsonwebtoken::encode(
            &header,
            &claims("u", "s"),
            &EncodingKey::from_ed_pem(ED_OTHER_PRIVATE).unwrap(),
        )
        .unwrap();
        assert_eq!(
            verify(&impostor).await.unwrap_err(),
            TokenError::BadSignature
        );
    }

    #[tokio::test]
    async fn an_unknown_kid_is_refused() {
        let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some("retired-2019".to_owned());
        let token = jsonwebtoken::encode(
            &header,
            &claims("u", "s"),
            &EncodingKey::from_ed_pem(ED_PRIVATE).unwrap(),
        )
        .unwrap();
        assert_eq!(verify(&token).await.unwrap_err(), TokenError::UnknownKey);

        // No kid at all, with several keys to choose from.
        let header = Header::new(jsonwebtoken::Algorithm::EdDSA);
        let token = jsonwebtoken::encode(
            &header,
            &claims("u", "s"),
            &EncodingKey::from_ed_pem(ED_PRIVATE).unwrap(),
        )
        .unwrap();
        assert_eq!(verify(&token).await.unwrap_err(), TokenError::UnknownKey);
    }

    #[tokio::test]
    async fn malformed_base64_or_json_is_refused() {
        let good = token("u", "s");
        let parts: Vec<&str> = good.split('.').collect();
        let header_not_json = B64.encode("{not json");
        let cases = [
            String::new(),
            "abc".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            "!!!.@@@.###".to_owned(),
            format!("{header_not_json}.{}.{}", parts[1], parts[2]),
            format!("{}.{}.{}", parts[0], "%%%", parts[2]),
            format!("{}.{}.{}", parts[0], parts[1], "not base64!"),
            format!("{}.{}.{}", B64.encode("[]"), parts[1], parts[2]),
        ];
        for case in &cases {
            let err = verify(case).await.unwrap_err();
            assert!(
                matches!(err, TokenError::Malformed | TokenError::BadSignature),
                "{case}: {err:?}"
            );
        }
        // Validly signed, but the payload is not a JSON object of claims.
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("hs".to_owned());
        let signing_input = format!(
            "{}.{}",
            B64.encode(serde_json::to_string(&header).unwrap()),
            B64.encode("not json")
        );
        let signature = {
            use aws_lc_rs::hmac;
            let key = hmac::Key::new(hmac::HMAC_SHA256, HMAC_SECRET);
            B64.encode(hmac::sign(&key, signing_input.as_bytes()))
        };
        let err = verify(&format!("{signing_input}.{signature}"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, TokenError::InvalidClaims | TokenError::Malformed),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_token_over_8_kib_is_refused_unparsed() {
        let mut big = claims("u", "s");
        big["padding"] = json!("x".repeat(MAX_TOKEN_BYTES));
        let token = sign("ed", &big);
        assert!(token.len() > MAX_TOKEN_BYTES);
        assert_eq!(verify(&token).await.unwrap_err(), TokenError::TooLarge);
        assert_eq!(
            verify(&"a".repeat(MAX_TOKEN_BYTES + 1)).await.unwrap_err(),
            TokenError::TooLarge
        );
    }

    /// Found by the `authenticate` fuzz target: a validly signed token whose `exp` lies
    /// beyond `SystemTime`'s range (more than `i64::MAX` seconds) made the token cache
    /// panic when it computed the expiry instant.
    #[tokio::test]
    async fn an_exp_beyond_the_clock_is_refused_without_a_panic() {
        for exp in [u64::MAX, 1 << 63] {
            let mut far = claims("u", "s");
            far["exp"] = json!(exp);
            assert_eq!(
                verify(&sign("hs", &far)).await.unwrap_err(),
                TokenError::InvalidClaims,
                "exp {exp}"
            );
        }
        let mut latest = claims("u", "s");
        latest["exp"] = json!((1_u64 << 63) - 1);
        let claims = verify(&sign("hs", &latest)).await.unwrap();
        assert!(claims.expires_at() > std::time::SystemTime::now());
    }

    #[tokio::test]
    async fn missing_required_claims_are_refused() {
        for claim in ["sid", "sub", "exp", "iss", "aud"] {
            let mut partial = claims("u", "s");
            partial.as_object_mut().unwrap().remove(claim);
            let err = verify(&sign("ed", &partial)).await.unwrap_err();
            let expected = match claim {
                "iss" => [TokenError::InvalidClaims, TokenError::WrongIssuer],
                "aud" => [TokenError::InvalidClaims, TokenError::WrongAudience],
                _ => [TokenError::InvalidClaims, TokenError::InvalidClaims],
            };
            assert!(expected.contains(&err), "without {claim}: {err:?}");
        }
        let mut empty = claims("u", "s");
        empty["sid"] = json!("");
        assert_eq!(
            verify(&sign("ed", &empty)).await.unwrap_err(),
            TokenError::InvalidClaims
        );
        let mut mistyped = claims("u", "s");
        mistyped["sid"] = json!(42);
        assert_eq!(
            verify(&sign("ed", &mistyped)).await.unwrap_err(),
            TokenError::InvalidClaims
        );
    }

    /// Signs `header` and `payload` byte for byte as they are, with the HS256 test key.
    fn sign_raw(header: &[u8], payload: &[u8]) -> String {
        let message = format!("{}.{}", B64.encode(header), B64.encode(payload));
        let key = EncodingKey::from_secret(HMAC_SECRET);
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
                .unwrap();
        format!("{message}.{signature}")
    }

    const HS_HEADER: &[u8] = br#"{"alg":"HS256","typ":"JWT","kid":"hs"}"#;

    /// RFC 7515 §4.1.11: a recipient must refuse a `crit` header naming extensions it
    /// does not understand, and this crate understands none. Any `crit` is refused, also
    /// the forbidden empty list and a `null`.
    #[tokio::test]
    async fn a_header_with_crit_is_refused() {
        let payload = claims("u", "s").to_string();
        for crit in [r#"["exp"]"#, r#"["b64"]"#, "[]", "null"] {
            let header = format!(r#"{{"alg":"HS256","typ":"JWT","kid":"hs","crit":{crit}}}"#);
            assert_eq!(
                verify(&sign_raw(header.as_bytes(), payload.as_bytes()))
                    .await
                    .unwrap_err(),
                TokenError::CriticalHeader,
                "crit {crit}"
            );
        }
        assert!(
            verify(&sign_raw(HS_HEADER, payload.as_bytes()))
                .await
                .is_ok()
        );
    }

    /// Found by the `authenticate` fuzz target after 8.6 million runs: a validly signed
    /// token whose unknown claim holds a number no parser can hold. Reading the known
    /// claims skips it; a strict parser (`serde_json`'s own `Value`) refuses the payload:
    /// two readers of one token would disagree on whether it is JSON at all.
    #[tokio::test]
    async fn claims_that_are_not_strict_json_are_refused() {
        let found = br#"{"iss":"https://auth.test","aud":"api","sub":"u1","sid":"s1",")UUUUUUUUUUUUUUUUUUUUUUUUUUUUUUat":170000000888888888888888E002000,"exp":4102444800,"i":"seed-1"}"#;
        assert!(serde_json::from_slice::<serde_json::Value>(found).is_err());
        assert_eq!(
            verify(&sign_raw(HS_HEADER, found)).await.unwrap_err(),
            TokenError::ClaimsNotStrictJson
        );
        // Invalid UTF-8 inside an unknown claim is skipped the same way.
        let mut bad_utf8 = claims("u1", "s1").to_string().into_bytes();
        bad_utf8.pop();
        bad_utf8.extend_from_slice(b",\"note\":\"\xff\"}");
        assert_eq!(
            verify(&sign_raw(HS_HEADER, &bad_utf8)).await.unwrap_err(),
            TokenError::ClaimsNotStrictJson
        );
        // The same claims with the number in range pass.
        let in_range = String::from_utf8(found.to_vec())
            .unwrap()
            .replace("170000000888888888888888E002000", "17");
        assert!(
            verify(&sign_raw(HS_HEADER, in_range.as_bytes()))
                .await
                .is_ok()
        );
    }
}
