//! A software passkey for the API tests: a WebAuthn authenticator in a few lines, so the
//! server's relying party is exercised over HTTP without a browser (the browser test
//! drives Chromium's virtual authenticator). It makes a P-256 key, answers a registration
//! with a `none` attestation and a sign-in with a signed assertion, as `toJSON()` of a
//! browser's `PublicKeyCredential` would, with user presence and verification.

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// Flags of authenticator data: user present, user verified, attested credential data.
const UP: u8 = 0x01;
const UV: u8 = 0x04;
const AT: u8 = 0x40;

/// One passkey on one "device".
pub(crate) struct SoftPasskey {
    key: EcdsaKeyPair,
    credential_id: Vec<u8>,
    user_handle: Vec<u8>,
    rp_id: String,
    origin: String,
    counter: u32,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .unwrap_or_else(|e| panic!("base64url {text}: {e}"))
}

/// CBOR: a major type with its argument (RFC 8949 section 3).
fn cbor_head(major: u8, value: u64, out: &mut Vec<u8>) {
    let major = major << 5;
    match value {
        0..=23 => out.push(major | u8::try_from(value).unwrap()),
        24..=0xff => out.extend([major | 0x18, u8::try_from(value).unwrap()]),
        _ => {
            out.push(major | 0x19);
            out.extend(u16::try_from(value).unwrap().to_be_bytes());
        }
    }
}

fn cbor_int(value: i64, out: &mut Vec<u8>) {
    if value >= 0 {
        cbor_head(0, value.unsigned_abs(), out);
    } else {
        cbor_head(1, (-1 - value).unsigned_abs(), out);
    }
}

fn cbor_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    cbor_head(2, bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn cbor_text(text: &str, out: &mut Vec<u8>) {
    cbor_head(3, text.len() as u64, out);
    out.extend_from_slice(text.as_bytes());
}

impl SoftPasskey {
    /// A new passkey for the site at `origin` (whose host is the relying party's id).
    pub(crate) fn new(origin: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .expect("a P-256 key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
            .expect("the key parses");
        let host = origin
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(':').next())
            .expect("an origin with a host")
            .to_owned();
        Self {
            key,
            credential_id: uuid::Uuid::new_v4().as_bytes().to_vec(),
            user_handle: Vec::new(),
            rp_id: host,
            origin: origin.to_owned(),
            counter: 0,
        }
    }

    fn client_data(&self, kind: &str, challenge: &str) -> Vec<u8> {
        json!({
            "type": kind,
            "challenge": challenge,
            "origin": self.origin,
            "crossOrigin": false,
        })
        .to_string()
        .into_bytes()
    }

    fn auth_data(&mut self, flags: u8) -> Vec<u8> {
        self.counter += 1;
        let mut data = digest(&SHA256, self.rp_id.as_bytes()).as_ref().to_vec();
        data.push(flags);
        data.extend(self.counter.to_be_bytes());
        data
    }

    /// The answer to registration `options` (the server's `options`), as the browser's
    /// `toJSON()` would give it.
    pub(crate) fn register(&mut self, options: &Value) -> Value {
        let public_key = &options["publicKey"];
        assert_eq!(public_key["rp"]["id"], self.rp_id.as_str(), "{options}");
        let challenge = public_key["challenge"].as_str().expect("a challenge");
        self.user_handle = unb64(public_key["user"]["id"].as_str().expect("a user id"));
        let client_data = self.client_data("webauthn.create", challenge);
        let mut auth_data = self.auth_data(UP | UV | AT);
        auth_data.extend([0u8; 16]); // AAGUID: none
        auth_data.extend(
            u16::try_from(self.credential_id.len())
                .unwrap()
                .to_be_bytes(),
        );
        auth_data.extend(&self.credential_id);
        // The COSE key: {1: 2 (EC2), 3: -7 (ES256), -1: 1 (P-256), -2: x, -3: y}.
        let point = self.key.public_key().as_ref(); // 0x04 ‖ x ‖ y
        let mut cose = Vec::new();
        cbor_head(5, 5, &mut cose);
        cbor_int(1, &mut cose);
        cbor_int(2, &mut cose);
        cbor_int(3, &mut cose);
        cbor_int(-7, &mut cose);
        cbor_int(-1, &mut cose);
        cbor_int(1, &mut cose);
        cbor_int(-2, &mut cose);
        cbor_bytes(&point[1..33], &mut cose);
        cbor_int(-3, &mut cose);
        cbor_bytes(&point[33..65], &mut cose);
        auth_data.extend(cose);
        let mut attestation = Vec::new();
        cbor_head(5, 3, &mut attestation);
        cbor_text("fmt", &mut attestation);
        cbor_text("none", &mut attestation);
        cbor_text("attStmt", &mut attestation);
        cbor_head(5, 0, &mut attestation);
        cbor_text("authData", &mut attestation);
        cbor_bytes(&auth_data, &mut attestation);
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(&client_data),
                "attestationObject": b64(&attestation),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
        })
    }

    /// The answer to sign-in `options`, signed, with the user handle (a discoverable
    /// passkey's).
    pub(crate) fn sign(&mut self, options: &Value) -> Value {
        let public_key = &options["publicKey"];
        let challenge = public_key["challenge"].as_str().expect("a challenge");
        let client_data = self.client_data("webauthn.get", challenge);
        let auth_data = self.auth_data(UP | UV);
        let mut signed = auth_data.clone();
        signed.extend(digest(&SHA256, &client_data).as_ref());
        let signature = self
            .key
            .sign(&SystemRandom::new(), &signed)
            .expect("signing");
        json!({
            "id": b64(&self.credential_id),
            "rawId": b64(&self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(&client_data),
                "authenticatorData": b64(&auth_data),
                "signature": b64(signature.as_ref()),
                "userHandle": b64(&self.user_handle),
            },
            "clientExtensionResults": {},
        })
    }

    /// This passkey's credential id, base64url.
    pub(crate) fn id(&self) -> String {
        b64(&self.credential_id)
    }
}
