//! Passkeys: the WebAuthn relying party (webauthn-rs), whose id is `PUBLIC_URL`'s host
//! and whose origin is `PUBLIC_URL`'s origin, exactly.
//!
//! A ceremony is two requests: the options (a challenge) and the authenticator's answer.
//! The server's half of it ([`Ceremony`]) is kept in PostgreSQL between them, so any
//! instance can finish what another began, and used once.

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use webauthn_rs::prelude::{
    AuthenticationResult, CredentialID, DiscoverableAuthentication, DiscoverableKey, Passkey,
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    Url, WebauthnError,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

use crate::ids::UserId;

/// The relying party.
#[derive(Clone)]
pub struct RelyingParty(std::sync::Arc<Webauthn>);

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelyingParty").finish_non_exhaustive()
    }
}

/// The server's half of a ceremony under way, as stored (JSON) between its two requests.
#[derive(Serialize, Deserialize)]
#[serde(tag = "ceremony", content = "state", rename_all = "snake_case")]
pub enum Ceremony {
    /// A user registers a passkey.
    Registration(PasskeyRegistration),
    /// Someone signs in (or steps up) with one of a known user's passkeys.
    Authentication(PasskeyAuthentication),
    /// Someone signs in with whichever passkey their device holds for this site.
    Discoverable(DiscoverableAuthentication),
}

/// Why a passkey ceremony failed: the client's answer does not verify. Never the server's
/// own fault, so always a 400 to the client.
#[derive(Debug, thiserror::Error)]
#[error("the passkey's answer does not verify")]
pub struct PasskeyRefused(#[source] pub WebauthnError);

impl RelyingParty {
    /// The relying party of `public_url` (its host is the id, its origin the only one
    /// accepted), named `name` to users.
    pub fn new(public_url: &str, name: &str) -> Result<Self, String> {
        let origin = Url::parse(public_url).map_err(|e| format!("PUBLIC_URL: {e}"))?;
        let id = origin
            .host_str()
            .ok_or_else(|| "PUBLIC_URL has no host".to_owned())?
            .to_owned();
        let webauthn = WebauthnBuilder::new(&id, &origin)
            .and_then(|builder| builder.rp_name(name).build())
            .map_err(|e| format!("PUBLIC_URL as a WebAuthn relying party: {e}"))?;
        Ok(Self(std::sync::Arc::new(webauthn)))
    }

    /// The options of registering a passkey for `user` (shown as `email`), none of
    /// `existing` again; the passkey is asked to be discoverable, so it later signs in
    /// without an email typed.
    pub fn registration_options(
        &self,
        user: UserId,
        email: &str,
        existing: Vec<CredentialID>,
    ) -> Result<(serde_json::Value, Ceremony), WebauthnError> {
        let exclude = (!existing.is_empty()).then_some(existing);
        let (options, state) =
            self.0
                .start_passkey_registration(user.as_uuid(), email, email, exclude)?;
        let mut options = to_json(&options);
        // The registration state does not depend on it: only what the browser is asked.
        if let Some(selection) = options
            .pointer_mut("/publicKey/authenticatorSelection")
            .and_then(serde_json::Value::as_object_mut)
        {
            selection.insert("residentKey".to_owned(), "required".into());
            selection.insert("requireResidentKey".to_owned(), true.into());
        }
        Ok((options, Ceremony::Registration(state)))
    }

    /// The passkey the browser's answer registers.
    pub fn finish_registration(
        &self,
        credential: &RegisterPublicKeyCredential,
        state: &PasskeyRegistration,
    ) -> Result<Passkey, PasskeyRefused> {
        self.0
            .finish_passkey_registration(credential, state)
            .map_err(PasskeyRefused)
    }

    /// The options of signing in or stepping up: with one of `passkeys` when there are
    /// any, else with any passkey the device holds for this site.
    pub fn authentication_options(
        &self,
        passkeys: &[Passkey],
    ) -> Result<(serde_json::Value, Ceremony), WebauthnError> {
        if passkeys.is_empty() {
            let (mut options, state) = self.0.start_discoverable_authentication()?;
            // Asked for by a button, not by an autofill field.
            options.mediation = None;
            Ok((to_json(&options), Ceremony::Discoverable(state)))
        } else {
            let (options, state) = self.0.start_passkey_authentication(passkeys)?;
            Ok((to_json(&options), Ceremony::Authentication(state)))
        }
    }

    /// Checks the browser's answer against `ceremony`, with `passkey`, the stored passkey
    /// of the credential it names. User verification is required by both ceremonies.
    pub fn finish_authentication(
        &self,
        credential: &PublicKeyCredential,
        ceremony: Ceremony,
        passkey: &Passkey,
    ) -> Result<AuthenticationResult, PasskeyRefused> {
        match ceremony {
            Ceremony::Authentication(state) => self
                .0
                .finish_passkey_authentication(credential, &state)
                .map_err(PasskeyRefused),
            Ceremony::Discoverable(state) => self
                .0
                .finish_discoverable_authentication(
                    credential,
                    state,
                    &[DiscoverableKey::from(passkey)],
                )
                .map_err(PasskeyRefused),
            Ceremony::Registration(_) => Err(PasskeyRefused(WebauthnError::MismatchedChallenge)),
        }
    }
}

/// The user id a passkey was registered under (its user handle).
pub fn user_handle(credential: &PublicKeyCredential) -> Option<UserId> {
    credential
        .get_user_unique_id()
        .and_then(|bytes| Uuid::from_slice(bytes).ok())
        .map(UserId::from_uuid)
}

fn to_json(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relying_party_is_public_urls_host_and_its_options_ask_for_a_discoverable_passkey() {
        let rp = RelyingParty::new("https://auth.example.com", "Portcullis").unwrap();
        let user = UserId::from_uuid(Uuid::new_v4());
        let (options, ceremony) = rp
            .registration_options(user, "ada@example.com", Vec::new())
            .unwrap();
        assert_eq!(options["publicKey"]["rp"]["id"], "auth.example.com");
        assert_eq!(
            options["publicKey"]["authenticatorSelection"]["residentKey"],
            "required"
        );
        assert_eq!(
            options["publicKey"]["authenticatorSelection"]["userVerification"],
            "required"
        );
        assert!(matches!(ceremony, Ceremony::Registration(_)));
        let stored = serde_json::to_value(&ceremony).unwrap();
        let back: Ceremony = serde_json::from_value(stored).unwrap();
        assert!(matches!(back, Ceremony::Registration(_)));
        let (options, ceremony) = rp.authentication_options(&[]).unwrap();
        assert!(options["publicKey"]["challenge"].is_string());
        assert!(
            options
                .get("mediation")
                .is_none_or(serde_json::Value::is_null)
        );
        assert!(matches!(ceremony, Ceremony::Discoverable(_)));
        assert!(RelyingParty::new("not a url", "x").is_err());
    }
}
