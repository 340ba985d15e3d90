//! The process-wide `jsonwebtoken` crypto provider.
//!
//! `jsonwebtoken` picks its backend from its cargo features. Features are additive, so
//! another crate in the dependency graph can switch on a second backend; with two compiled
//! in and none installed, `jsonwebtoken` cannot choose and panics on the first signature
//! or verification. Installing the provider explicitly removes that failure mode.

/// Installs the aws-lc-rs backed provider as `jsonwebtoken`'s process default.
///
/// Call it once at start-up, before anything signs or verifies a token. It is idempotent:
/// when a provider is already installed (by an earlier call or by the application), that
/// one stays.
pub fn install_crypto_provider() {
    // `Err` only means a provider is installed already, which is the state we want.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

    #[test]
    fn signing_and_verifying_work_after_install() {
        super::install_crypto_provider();
        super::install_crypto_provider();

        let secret = b"a test secret that is long enough for HS256";
        let claims = serde_json_claims();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("signing works once the provider is installed");

        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        let decoded = jsonwebtoken::decode::<std::collections::BTreeMap<String, String>>(
            &token,
            &DecodingKey::from_secret(secret),
            &validation,
        )
        .expect("verification works once the provider is installed");
        assert_eq!(decoded.claims, claims);

        let tampered = format!("{token}x");
        assert!(
            jsonwebtoken::decode::<std::collections::BTreeMap<String, String>>(
                &tampered,
                &DecodingKey::from_secret(secret),
                &validation,
            )
            .is_err()
        );
    }

    fn serde_json_claims() -> std::collections::BTreeMap<String, String> {
        std::collections::BTreeMap::from([("sub".to_owned(), "user-1".to_owned())])
    }
}
