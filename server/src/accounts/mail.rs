//! The account mails the account logic queues, in the caller's transaction: a
//! verification link, a reset link, a sign-in alert. Links carry a fresh
//! [`AccountToken`], of which only the keyed hash is stored, replacing any older token of
//! the same purpose.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_postgres::GenericClient;
use uuid::Uuid;

use crate::ids::UserId;

use crate::account_token::AccountToken;
use crate::error::ServiceError;
use crate::mail::compose;
use crate::origin::PublicOrigin;
use crate::refresh_token::RefreshKey;
use crate::store::account_tokens::{self, TokenPurpose};
use crate::store::outbox;

/// How long the links work.
#[derive(Debug, Clone, Copy)]
pub struct LinkLifetimes {
    /// `EMAIL_VERIFICATION_TTL_SECONDS`.
    pub verification: Duration,
    /// `PASSWORD_RESET_TTL_SECONDS`.
    pub reset: Duration,
}

/// Queues account mail into the outbox.
#[derive(Clone)]
pub struct AccountMail {
    public: PublicOrigin,
    key: Arc<RefreshKey>,
    lifetimes: LinkLifetimes,
}

impl AccountMail {
    /// Mails linking to pages under `public`, their tokens hashed with `key`.
    pub fn new(public: PublicOrigin, key: Arc<RefreshKey>, lifetimes: LinkLifetimes) -> Self {
        Self {
            public,
            key,
            lifetimes,
        }
    }

    /// What the database stores for the token a client sent, or `None` when it is no
    /// token at all.
    pub fn stored_hash(&self, text: &str) -> Option<Vec<u8>> {
        AccountToken::parse(text).map(|token| token.hash(&self.key))
    }

    /// Queues a verification mail to `email` of `user`; older verification links stop
    /// working.
    pub async fn queue_verification(
        &self,
        client: &impl GenericClient,
        user: UserId,
        email: &str,
    ) -> Result<(), ServiceError> {
        let ttl = self.lifetimes.verification;
        let token = self
            .replace_token(client, user, TokenPurpose::VerifyEmail, ttl)
            .await?;
        let link = compose::token_link(&self.public, compose::VERIFY_PAGE, &token.expose());
        outbox::insert(client, email, &compose::email_verification(&link, ttl)).await
    }

    /// Queues a reset mail to `account` (its id and email); older reset links stop working.
    /// With no account, does the same database work but for storing a token and a mail, so
    /// that an unknown address costs about what a known one does.
    pub async fn queue_reset(
        &self,
        client: &impl GenericClient,
        account: Option<(UserId, &str)>,
    ) -> Result<(), ServiceError> {
        let ttl = self.lifetimes.reset;
        let purpose = TokenPurpose::ResetPassword;
        let Some((user, email)) = account else {
            return account_tokens::delete_for_user(
                client,
                UserId::from_uuid(Uuid::new_v4()),
                purpose,
            )
            .await;
        };
        let token = self.replace_token(client, user, purpose, ttl).await?;
        let link = compose::token_link(&self.public, compose::RESET_PAGE, &token.expose());
        outbox::insert(client, email, &compose::password_reset(&link, ttl)).await
    }

    /// Queues the alert of a sign-in from `device_label` at `ip`, now.
    pub async fn queue_sign_in_alert(
        &self,
        client: &impl GenericClient,
        email: &str,
        device_label: Option<&str>,
        ip: IpAddr,
    ) -> Result<(), ServiceError> {
        let mail = compose::sign_in_alert(&self.public, device_label, ip, SystemTime::now());
        outbox::insert(client, email, &mail).await
    }

    async fn replace_token(
        &self,
        client: &impl GenericClient,
        user: UserId,
        purpose: TokenPurpose,
        ttl: Duration,
    ) -> Result<AccountToken, ServiceError> {
        let token = AccountToken::generate();
        account_tokens::delete_for_user(client, user, purpose).await?;
        account_tokens::insert(client, &token.hash(&self.key), user, purpose, ttl).await?;
        Ok(token)
    }
}
