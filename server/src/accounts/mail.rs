//! The account mails the account logic queues, in the caller's transaction: a
//! verification link, a reset link, a sign-in alert. Links carry a fresh
//! [`AccountToken`], of which only the keyed hash is stored: a verification link replaces
//! the older one, a reset link joins the few newest. Every mail counts against its
//! mailbox's hourly and daily caps ([`MailCaps`]); one over a cap is not queued.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_postgres::GenericClient;

use crate::ids::UserId;

use crate::account_token::AccountToken;
use crate::error::ServiceError;
use crate::mail::compose::{self, MailKind};
use crate::origin::PublicOrigin;
use crate::refresh_token::RefreshKey;
use crate::store::account_tokens::{self, TokenPurpose};
use crate::store::mail_log::{self, MailCaps};
use crate::store::outbox;

/// How long the links work.
#[derive(Debug, Clone, Copy)]
pub struct LinkLifetimes {
    /// `EMAIL_VERIFICATION_TTL_SECONDS`.
    pub verification: Duration,
    /// `PASSWORD_RESET_TTL_SECONDS`.
    pub reset: Duration,
}

/// How much account mail goes out, and how many reset links stay live.
#[derive(Debug, Clone, Copy)]
pub struct MailLimits {
    /// The hourly and daily caps per mailbox, and of sign-in alerts per account.
    pub caps: MailCaps,
    /// How many reset links of one account work at once (`PASSWORD_RESET_LIVE_LINKS`).
    pub live_reset_links: u32,
}

/// Whether a mail was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// In the outbox.
    Yes,
    /// Not: its mailbox reached a cap.
    Capped,
}

/// Queues account mail into the outbox.
#[derive(Clone)]
pub struct AccountMail {
    public: PublicOrigin,
    key: Arc<RefreshKey>,
    lifetimes: LinkLifetimes,
    limits: MailLimits,
}

impl AccountMail {
    /// Mails linking to pages under `public`, their tokens hashed with `key`, within
    /// `limits`.
    pub fn new(
        public: PublicOrigin,
        key: Arc<RefreshKey>,
        lifetimes: LinkLifetimes,
        limits: MailLimits,
    ) -> Self {
        Self {
            public,
            key,
            lifetimes,
            limits,
        }
    }

    /// What the database stores for the token a client sent, or `None` when it is no
    /// token at all.
    pub fn stored_hash(&self, text: &str) -> Option<Vec<u8>> {
        AccountToken::parse(text).map(|token| token.hash(&self.key))
    }

    /// Queues a verification mail to `email` of `user`; older verification links stop
    /// working. Nothing changes when the mailbox reached a cap.
    pub async fn queue_verification(
        &self,
        client: &impl GenericClient,
        user: UserId,
        email: &str,
    ) -> Result<Queued, ServiceError> {
        if !self
            .reserve(client, email, MailKind::EmailVerification)
            .await?
        {
            return Ok(Queued::Capped);
        }
        let ttl = self.lifetimes.verification;
        let purpose = TokenPurpose::VerifyEmail;
        account_tokens::delete_for_user(client, user, purpose).await?;
        let token = self.store_token(client, user, purpose, ttl).await?;
        let link = compose::token_link(&self.public, compose::VERIFY_PAGE, &token.expose());
        outbox::insert(client, email, &compose::email_verification(&link, ttl)).await?;
        Ok(Queued::Yes)
    }

    /// Queues a reset mail to `email` of `user`. Earlier links keep working, but for the
    /// oldest beyond `PASSWORD_RESET_LIVE_LINKS`: a request by someone else does not void
    /// the owner's link. Nothing changes when the mailbox reached a cap.
    pub async fn queue_reset(
        &self,
        client: &impl GenericClient,
        user: UserId,
        email: &str,
    ) -> Result<Queued, ServiceError> {
        if !self.reserve(client, email, MailKind::PasswordReset).await? {
            return Ok(Queued::Capped);
        }
        let ttl = self.lifetimes.reset;
        let purpose = TokenPurpose::ResetPassword;
        let keep = self.limits.live_reset_links.saturating_sub(1);
        account_tokens::keep_newest(client, user, purpose, keep).await?;
        let token = self.store_token(client, user, purpose, ttl).await?;
        let link = compose::token_link(&self.public, compose::RESET_PAGE, &token.expose());
        outbox::insert(client, email, &compose::password_reset(&link, ttl)).await?;
        Ok(Queued::Yes)
    }

    /// Queues the alert of a sign-in from `device_label` at `ip`, now, unless the
    /// account's alerts or its mailbox reached a cap.
    pub async fn queue_sign_in_alert(
        &self,
        client: &impl GenericClient,
        email: &str,
        device_label: Option<&str>,
        ip: IpAddr,
    ) -> Result<Queued, ServiceError> {
        if !self.reserve(client, email, MailKind::SignInAlert).await? {
            return Ok(Queued::Capped);
        }
        let mail = compose::sign_in_alert(&self.public, device_label, ip, SystemTime::now());
        outbox::insert(client, email, &mail).await?;
        Ok(Queued::Yes)
    }

    async fn reserve(
        &self,
        client: &impl GenericClient,
        email: &str,
        kind: MailKind,
    ) -> Result<bool, ServiceError> {
        let room = mail_log::reserve(client, email, kind, self.limits.caps).await?;
        if !room {
            metrics::counter!("session_account_mail_capped_total", "kind" => kind.as_str())
                .increment(1);
            tracing::info!(
                kind = kind.as_str(),
                "account mail not queued: the mailbox reached its cap"
            );
        }
        Ok(room)
    }

    /// Queues the mail telling `email`'s owner of `change` to the account's factors.
    pub async fn queue_factor_change(
        &self,
        client: &impl GenericClient,
        email: &str,
        change: compose::FactorChange,
    ) -> Result<(), ServiceError> {
        let mail = compose::factor_change(&self.public, change, SystemTime::now());
        outbox::insert(client, email, &mail).await
    }

    async fn store_token(
        &self,
        client: &impl GenericClient,
        user: UserId,
        purpose: TokenPurpose,
        ttl: Duration,
    ) -> Result<AccountToken, ServiceError> {
        let token = AccountToken::generate();
        account_tokens::insert(client, &token.hash(&self.key), user, purpose, ttl).await?;
        Ok(token)
    }
}
