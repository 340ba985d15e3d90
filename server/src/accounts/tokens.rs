//! The token pair a login or a refresh hands the client.

use std::sync::Arc;
use std::time::SystemTime;

use crate::ids::{SessionId, UserId};

use crate::access_token::AccessTokenIssuer;
use crate::assurance::Assurance;
use crate::error::ServiceError;
use crate::refresh_token::{ClientBinding, RefreshKey, RefreshToken};

/// What a login or a refresh hands the client.
#[derive(Debug, Clone)]
pub struct TokenPair {
    /// The signed access token.
    pub access_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The refresh token (secret).
    pub refresh_token: RefreshToken,
    /// Seconds until the refresh token stops working unless used.
    pub refresh_expires_in: u64,
    /// The session both belong to.
    pub session_id: SessionId,
    /// The session's client binding, sent with each refresh.
    pub client_binding: ClientBinding,
}

/// Signs access tokens and keys refresh tokens.
#[derive(Clone)]
pub struct Tokens {
    access: AccessTokenIssuer,
    refresh_key: Arc<RefreshKey>,
}

impl Tokens {
    /// Access tokens from `access`; refresh-token hashes and successors keyed by
    /// `refresh_key`.
    pub fn new(access: AccessTokenIssuer, refresh_key: Arc<RefreshKey>) -> Self {
        Self {
            access,
            refresh_key,
        }
    }

    /// The key of refresh-token hashes, successors and client fingerprints.
    pub fn refresh_key(&self) -> &Arc<RefreshKey> {
        &self.refresh_key
    }

    /// A new access token for the session, saying `assurance`, with `refresh_token`,
    /// which stops working at `refresh_expires_at` unless used.
    pub fn pair(
        &self,
        user: UserId,
        session: SessionId,
        assurance: &Assurance,
        refresh_token: RefreshToken,
        refresh_expires_at: SystemTime,
    ) -> Result<TokenPair, ServiceError> {
        let access_token = self.access_token(user, session, assurance)?;
        Ok(TokenPair {
            access_token,
            expires_in: self.access.ttl().as_secs(),
            refresh_token,
            refresh_expires_in: refresh_expires_at
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .as_secs(),
            session_id: session,
            client_binding: self.refresh_key.client_binding(session),
        })
    }

    /// A new access token alone (a step-up: the refresh token is left as it is).
    pub fn access_token(
        &self,
        user: UserId,
        session: SessionId,
        assurance: &Assurance,
    ) -> Result<String, ServiceError> {
        self.access
            .issue(user, session, assurance)
            .map_err(|e| ServiceError::internal("signing an access token", e))
    }

    /// Seconds an access token lives.
    pub fn access_ttl_secs(&self) -> u64 {
        self.access.ttl().as_secs()
    }
}
