//! What mailed links do: confirm an address, and reset a forgotten password.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::ids::UserId;
use deadpool_postgres::Pool;
use tokio::sync::Semaphore;

use super::Revocations;
use super::credentials::{Email, NewPassword};
use super::mail::{AccountMail, Queued};
use crate::error::ServiceError;
use crate::passwords::PasswordHasher;
use crate::store::account_tokens::{self, TokenPurpose};
use crate::store::events::{self, Event, Subject};
use crate::store::sessions::{self, BulkScope, RevokeReason};
use crate::store::users;

/// What asking for another verification mail did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerificationResent {
    /// A new mail is queued; earlier links stop working.
    Queued,
    /// The address is verified already: nothing is sent.
    AlreadyVerified,
}

/// How many reset requests may be under way in the background at once; past that a
/// request is answered 429 at once, known address or not.
const RESET_REQUESTS_IN_FLIGHT: usize = 64;

/// Email verification and password reset.
#[derive(Clone)]
pub struct Recovery {
    pool: Pool,
    passwords: PasswordHasher,
    mail: AccountMail,
    revocations: Revocations,
    reset_requests: Arc<Semaphore>,
}

impl Recovery {
    /// Recovery of the accounts in `pool`'s database.
    pub fn new(
        pool: Pool,
        passwords: PasswordHasher,
        mail: AccountMail,
        revocations: Revocations,
    ) -> Self {
        Self {
            pool,
            passwords,
            mail,
            revocations,
            reset_requests: Arc::new(Semaphore::new(RESET_REQUESTS_IN_FLIGHT)),
        }
    }

    /// Takes a reset request for `email` and answers at once: the lookup, the token, the
    /// mail and the record are done afterwards, off the request. So the answer and its
    /// timing are the same for a known and an unknown address, whatever the database's
    /// work for each costs (measured: a known address's request took 1.4 ms longer when
    /// the work was done before answering). A request that cannot be taken (too many
    /// under way) gets 429, known address or not.
    pub fn request_reset(&self, email: Email, ip: Option<IpAddr>) -> Result<(), ServiceError> {
        let permit = Arc::clone(&self.reset_requests)
            .try_acquire_owned()
            .map_err(|_| ServiceError::RateLimited(Duration::from_secs(1)))?;
        let recovery = self.clone();
        let statements = crate::store::statement_bound();
        tokio::spawn(crate::store::with_statement_bound(statements, async move {
            if let Err(e) = recovery.process_reset(&email, ip).await {
                tracing::warn!(error = %e, "a password-reset request failed; it was dropped");
            }
            drop(permit);
        }));
        Ok(())
    }

    /// What [`request_reset`](Self::request_reset) does after answering: queues a reset
    /// mail when an account has `email` (and its mailbox is under its caps), and records
    /// the request either way.
    pub async fn process_reset(
        &self,
        email: &Email,
        ip: Option<IpAddr>,
    ) -> Result<(), ServiceError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let account = users::by_email(&transaction, email.as_str()).await?;
        let user = account.as_ref().map(|account| account.id);
        if let Some(user) = user {
            self.mail
                .queue_reset(&transaction, user, email.as_str())
                .await?;
        }
        let event = Event::PasswordResetRequested {
            known: user.is_some(),
        };
        let subject = Subject {
            user,
            session: None,
            ip,
        };
        events::record(&transaction, event, subject).await?;
        transaction.commit().await?;
        tracing::info!(user_id = ?user, ip = ?ip, "password reset requested");
        Ok(())
    }

    /// Sets the password of the reset token's user, revokes every session of the user
    /// and uses the token up, in one transaction. The address counts as verified: the
    /// token came by mail to it.
    pub async fn confirm_reset(
        &self,
        token: &str,
        new_password: NewPassword,
        ip: Option<IpAddr>,
    ) -> Result<(), ServiceError> {
        let purpose = TokenPurpose::ResetPassword;
        let hash = self
            .mail
            .stored_hash(token)
            .ok_or(ServiceError::InvalidResetToken)?;
        // Only a live token is worth the slow password hash.
        account_tokens::peek(&self.pool.get().await?, &hash, purpose)
            .await?
            .ok_or(ServiceError::InvalidResetToken)?;
        let new_hash = self.passwords.hash(new_password.into_inner()).await;
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        // Used or replaced since the check: nothing changes.
        let user = account_tokens::consume(&transaction, &hash, purpose)
            .await?
            .ok_or(ServiceError::InvalidResetToken)?;
        // The account's other reset links die with the password they were for.
        account_tokens::delete_for_user(&transaction, user, purpose).await?;
        users::set_password(&transaction, user, &new_hash).await?;
        users::mark_email_verified(&transaction, user).await?;
        let reason = RevokeReason::PasswordReset;
        let scope = BulkScope::User { user, except: None };
        let bulk = sessions::revoke_before(&transaction, scope, reason).await?;
        let revoked = bulk.count;
        let subject = Subject {
            user: Some(user),
            session: None,
            ip,
        };
        let event = Event::PasswordReset {
            revoked_sessions: revoked,
        };
        events::record(&transaction, event, subject).await?;
        transaction.commit().await?;
        self.revocations.committed_bulk(scope, bulk, reason);
        tracing::info!(user_id = %user, revoked, "password reset");
        Ok(())
    }

    /// Marks the verification token's user verified and uses the token up.
    pub async fn verify_email(&self, token: &str, ip: Option<IpAddr>) -> Result<(), ServiceError> {
        let hash = self
            .mail
            .stored_hash(token)
            .ok_or(ServiceError::InvalidVerificationToken)?;
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let user = account_tokens::consume(&transaction, &hash, TokenPurpose::VerifyEmail)
            .await?
            .ok_or(ServiceError::InvalidVerificationToken)?;
        users::mark_email_verified(&transaction, user).await?;
        let subject = Subject {
            user: Some(user),
            session: None,
            ip,
        };
        events::record(&transaction, Event::EmailVerified, subject).await?;
        transaction.commit().await?;
        tracing::info!(user_id = %user, "email verified");
        Ok(())
    }

    /// Queues another verification mail for `user`, unless the address is verified.
    pub async fn resend_verification(
        &self,
        user: UserId,
    ) -> Result<VerificationResent, ServiceError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let (email, verified) = users::profile(&transaction, user)
            .await?
            .ok_or(ServiceError::SessionEnded)?;
        if verified {
            return Ok(VerificationResent::AlreadyVerified);
        }
        match self
            .mail
            .queue_verification(&transaction, user, &email)
            .await?
        {
            Queued::Yes => {
                transaction.commit().await?;
                Ok(VerificationResent::Queued)
            }
            // The mailbox's hourly or daily cap: try again later.
            Queued::Capped => Err(ServiceError::RateLimited(Duration::from_secs(3600))),
        }
    }

    /// The email of `user` (what the per-address limit of a resend is keyed by).
    pub async fn email_of(&self, user: UserId) -> Result<String, ServiceError> {
        users::profile(&self.pool.get().await?, user)
            .await?
            .map(|(email, _)| email)
            .ok_or(ServiceError::SessionEnded)
    }
}
