//! What mailed links do: confirm an address, and reset a forgotten password.

use std::net::IpAddr;

use crate::ids::UserId;
use deadpool_postgres::Pool;

use super::Revocations;
use super::credentials::{Email, NewPassword};
use super::mail::AccountMail;
use crate::error::ServiceError;
use crate::passwords::PasswordHasher;
use crate::store::account_tokens::{self, TokenPurpose};
use crate::store::events::{self, Event, Subject};
use crate::store::sessions::{self, RevokeReason};
use crate::store::users;

/// What asking for another verification mail did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerificationResent {
    /// A new mail is queued; earlier links stop working.
    Queued,
    /// The address is verified already: nothing is sent.
    AlreadyVerified,
}

/// Email verification and password reset.
#[derive(Clone)]
pub struct Recovery {
    pool: Pool,
    passwords: PasswordHasher,
    mail: AccountMail,
    revocations: Revocations,
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
        }
    }

    /// Queues a reset mail when an account has `email`, and records the request either
    /// way. Known and unknown addresses take the same path through the database (a
    /// lookup, then one transaction deleting older tokens and recording the event), so
    /// the answer and its timing tell a caller nothing.
    pub async fn request_reset(
        &self,
        email: &Email,
        ip: Option<IpAddr>,
    ) -> Result<(), ServiceError> {
        let account = users::by_email(&self.pool.get().await?, email.as_str()).await?;
        let user = account.as_ref().map(|account| account.id);
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        self.mail
            .queue_reset(&transaction, user.map(|user| (user, email.as_str())))
            .await?;
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
        users::set_password(&transaction, user, &new_hash).await?;
        users::mark_email_verified(&transaction, user).await?;
        let reason = RevokeReason::PasswordReset;
        let revoked_ids = sessions::revoke_all_but(&transaction, user, None, reason).await?;
        let revoked = revoked_ids.len() as u64;
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
        self.revocations.committed(&revoked_ids, reason);
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
        self.mail
            .queue_verification(&transaction, user, &email)
            .await?;
        transaction.commit().await?;
        Ok(VerificationResent::Queued)
    }

    /// The email of `user` (what the per-address limit of a resend is keyed by).
    pub async fn email_of(&self, user: UserId) -> Result<String, ServiceError> {
        users::profile(&self.pool.get().await?, user)
            .await?
            .map(|(email, _)| email)
            .ok_or(ServiceError::SessionEnded)
    }
}
