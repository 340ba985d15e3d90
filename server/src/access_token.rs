//! Access tokens: short-lived EdDSA JWTs naming the user (`sub`) and the session (`sid`),
//! and saying how and when the user last proved who they are (`aal`, `amr`, `auth_time`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use uuid::Uuid;

use crate::assurance::Assurance;
use crate::ids::{SessionId, UserId};

use crate::config::TokenSettings;
use crate::keys::KeyRing;

#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: String,
    sid: String,
    iat: u64,
    exp: u64,
    jti: String,
    aal: &'static str,
    amr: Vec<&'a str>,
    auth_time: u64,
}

/// Signs access tokens with the key ring's signing key.
#[derive(Debug, Clone)]
pub struct AccessTokenIssuer {
    keys: Arc<KeyRing>,
    issuer: Arc<str>,
    audience: Arc<str>,
    ttl: Duration,
}

impl AccessTokenIssuer {
    /// An issuer of tokens signed with `keys`, saying what `settings` say.
    pub fn new(keys: Arc<KeyRing>, settings: &TokenSettings) -> Self {
        Self {
            keys,
            issuer: settings.issuer.as_str().into(),
            audience: settings.audience.as_str().into(),
            ttl: settings.access_ttl,
        }
    }

    /// How long a token lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A signed token for `user` on `session`, whose user proved who they are as
    /// `assurance` says.
    pub fn issue(
        &self,
        user: UserId,
        session: SessionId,
        assurance: &Assurance,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.keys.signing().sign(&AccessClaims {
            iss: &self.issuer,
            aud: &self.audience,
            sub: user.to_string(),
            sid: session.to_string(),
            iat: now,
            exp: now + self.ttl.as_secs(),
            jti: Uuid::new_v4().to_string(),
            aal: assurance.aal.as_str(),
            amr: assurance.amr_values(),
            auth_time: assurance.auth_time_secs(),
        })
    }
}
