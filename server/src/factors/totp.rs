//! TOTP (RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps), as every authenticator app
//! speaks it: the shared secret, its `otpauth://` URI and QR code, its encryption at rest,
//! and the check of a code that accepts each time step once.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use qrcode::QrCode;
use qrcode::render::svg;
use secrecy::{ExposeSecret as _, SecretSlice};
use totp_rs::{Algorithm, TOTP};

use crate::error::ServiceError;

/// Bytes of a shared secret: 160 bits, RFC 4226's recommendation for HMAC-SHA-1.
const SECRET_BYTES: usize = 20;
/// Seconds per step.
pub const STEP_SECONDS: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Steps either side of now whose codes are accepted: a phone's clock a little off, or a
/// code typed as it changed.
const SKEW_STEPS: u64 = 1;

/// A TOTP shared secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct TotpSecret(SecretSlice<u8>);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

/// What enrolment shows the user once: the secret in base32, the URI an app reads, and
/// the QR code of that URI.
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// The secret, base32 without padding (what apps accept typed in).
    pub secret: String,
    /// `otpauth://totp/{issuer}:{account}?secret=…&issuer=…`.
    pub otpauth_uri: String,
    /// The URI as a QR code, an SVG document drawn here (nothing loaded from elsewhere).
    pub qr_svg: String,
}

impl TotpSecret {
    /// A new secret from the system's secure random source.
    ///
    /// # Panics
    ///
    /// When the operating system's random source fails, which leaves nothing safe to do.
    pub fn generate() -> Self {
        let mut bytes = vec![0; SECRET_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system random source works");
        Self(bytes.into())
    }

    fn totp(&self, issuer: &str, account: &str) -> Result<TOTP, ServiceError> {
        // The URI's label is `issuer:account`: a colon inside either would split it wrongly.
        let clean = |text: &str| text.replace(':', " ");
        TOTP::new(
            Algorithm::SHA1,
            DIGITS,
            0,
            STEP_SECONDS,
            self.0.expose_secret().to_vec(),
            Some(clean(issuer)),
            clean(account),
        )
        .map_err(|e| ServiceError::internal("building a TOTP", e))
    }

    /// What the user's app needs, labelled `issuer` and `account` (the email).
    pub fn enrolment(&self, issuer: &str, account: &str) -> Result<Enrolment, ServiceError> {
        let totp = self.totp(issuer, account)?;
        let otpauth_uri = totp.get_url();
        let qr_svg = QrCode::new(otpauth_uri.as_bytes())
            .map_err(|e| ServiceError::internal("drawing the enrolment QR code", e))?
            .render::<svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build();
        Ok(Enrolment {
            secret: totp.get_secret_base32(),
            otpauth_uri,
            qr_svg,
        })
    }

    /// The time step whose code `code` is, among the steps around `at`, if any. Codes are
    /// compared in constant time; anything but six digits matches nothing.
    pub fn matching_step(&self, code: &str, at: SystemTime) -> Option<u64> {
        if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let totp = self.totp("-", "-").ok()?;
        let now = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / STEP_SECONDS;
        // Every candidate is computed and compared, so the time taken does not say which.
        let mut found = None;
        for step in now.saturating_sub(SKEW_STEPS)..=now + SKEW_STEPS {
            let expected = totp.generate(step * STEP_SECONDS);
            if aws_lc_rs::constant_time::verify_slices_are_equal(
                expected.as_bytes(),
                code.as_bytes(),
            )
            .is_ok()
            {
                found = Some(step);
            }
        }
        found
    }

    /// The secret encrypted under `key` (AES-256-GCM, a random nonce first), bound to
    /// `context` (the factor's id), for the database.
    pub fn seal(&self, key: &[u8], context: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let sealing = sealing_key(key)?;
        let mut nonce = [0; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|e| ServiceError::internal("drawing a nonce", e))?;
        let mut data = self.0.expose_secret().to_vec();
        sealing
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut data,
            )
            .map_err(|e| ServiceError::internal("sealing a TOTP secret", e))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&data);
        Ok(sealed)
    }

    /// The secret [`seal`](Self::seal) encrypted, or an internal error when the key or the
    /// context is not the one it was sealed with.
    pub fn open(sealed: &[u8], key: &[u8], context: &[u8]) -> Result<Self, ServiceError> {
        let opening = sealing_key(key)?;
        if sealed.len() < NONCE_LEN {
            return Err(ServiceError::internal(
                "opening a TOTP secret",
                "the sealed secret is too short",
            ));
        }
        let (nonce, data) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|e| ServiceError::internal("opening a TOTP secret", e))?;
        let mut data = data.to_vec();
        let plain = opening
            .open_in_place(nonce, Aad::from(context), &mut data)
            .map_err(|e| {
                ServiceError::internal(
                    "opening a TOTP secret (was REFRESH_TOKEN_KEY_FILE's key changed?)",
                    e,
                )
            })?;
        Ok(Self(plain.to_vec().into()))
    }

    /// A secret from its raw bytes (tests: RFC 6238's vectors).
    #[cfg(test)]
    fn from_bytes(bytes: &[u8]) -> Self {
        Self(bytes.to_vec().into())
    }
}

fn sealing_key(key: &[u8]) -> Result<LessSafeKey, ServiceError> {
    UnboundKey::new(&AES_256_GCM, key)
        .map(LessSafeKey::new)
        .map_err(|e| ServiceError::internal("the factor sealing key", e))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// RFC 6238 appendix B, SHA-1: the secret is ASCII "12345678901234567890", and at
    /// T = 59 s the 8-digit code is 94287082, so the 6-digit code is its last six digits.
    #[test]
    fn codes_are_rfc_6238_codes() {
        let secret = TotpSecret::from_bytes(b"12345678901234567890");
        let at = UNIX_EPOCH + Duration::from_secs(59);
        assert_eq!(secret.matching_step("287082", at), Some(1));
        let at = UNIX_EPOCH + Duration::from_secs(1_111_111_109);
        // 07081804 at T = 1111111109.
        assert_eq!(secret.matching_step("081804", at), Some(1_111_111_109 / 30));
        assert_eq!(secret.matching_step("081805", at), None);
        assert_eq!(secret.matching_step("08180", at), None);
        assert_eq!(secret.matching_step("08180a", at), None);
    }

    #[test]
    fn a_neighbouring_step_is_accepted_and_named() {
        let secret = TotpSecret::generate();
        let totp = secret.totp("x", "y").unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(3_000_000);
        let previous = totp.generate(3_000_000 - 30);
        assert_eq!(
            secret.matching_step(&previous, now),
            Some(3_000_000 / 30 - 1)
        );
        let far = totp.generate(3_000_000 - 120);
        assert_eq!(secret.matching_step(&far, now), None);
    }

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_context() {
        let secret = TotpSecret::generate();
        let key = [7u8; 32];
        let sealed = secret.seal(&key, b"factor-1").unwrap();
        assert!(
            !sealed
                .windows(SECRET_BYTES)
                .any(|w| w == secret.0.expose_secret())
        );
        let opened = TotpSecret::open(&sealed, &key, b"factor-1").unwrap();
        assert_eq!(opened.0.expose_secret(), secret.0.expose_secret());
        assert!(TotpSecret::open(&sealed, &[8u8; 32], b"factor-1").is_err());
        assert!(TotpSecret::open(&sealed, &key, b"factor-2").is_err());
        assert!(TotpSecret::open(&sealed[..5], &key, b"factor-1").is_err());
    }

    #[test]
    fn the_enrolment_uri_is_standard_and_the_qr_code_is_svg() {
        let secret = TotpSecret::generate();
        let enrolment = secret.enrolment("Portcullis", "ada@example.com").unwrap();
        assert!(
            enrolment
                .otpauth_uri
                .starts_with("otpauth://totp/Portcullis:ada%40example.com?"),
            "{}",
            enrolment.otpauth_uri
        );
        assert!(
            enrolment
                .otpauth_uri
                .contains(&format!("secret={}", enrolment.secret))
        );
        assert!(enrolment.otpauth_uri.contains("issuer=Portcullis"));
        assert_eq!(enrolment.secret.len(), 32);
        assert!(enrolment.qr_svg.contains("<svg"));
        assert!(!enrolment.qr_svg.contains("<script"));
    }
}
