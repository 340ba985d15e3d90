//! What follows proof of who someone is: a new session and its token pair.
//!
//! Every way of signing in (a password; a password and a second factor; a passkey) proves
//! a user's identity its own way and then calls [`SignIn::open`] with how it did
//! ([`Assurance`]), so the rules that come with a new session are applied in one place:
//! the session cap, the sign-in alert, the refresh token's first secret, the assurance the
//! session records, the access token.

use std::net::IpAddr;

use deadpool_postgres::{GenericClient, Transaction};

use super::mail::AccountMail;
use super::{AccountPolicy, Revocations, TokenPair, Tokens};
use crate::assurance::Assurance;
use crate::error::ServiceError;
use crate::ids::{SessionId, UserId};
use crate::refresh_token::{RefreshSecret, RefreshToken};
use crate::store::events::{self, Event, Subject};
use crate::store::sessions::{self, Device, RevokeReason};
use crate::store::users;

/// Opens sessions for users whose identity has been verified.
#[derive(Clone)]
pub struct SignIn {
    tokens: Tokens,
    revocations: Revocations,
    mail: AccountMail,
    policy: AccountPolicy,
}

impl SignIn {
    /// Sessions under `policy`, their tokens from `tokens`.
    pub fn new(
        tokens: Tokens,
        revocations: Revocations,
        mail: AccountMail,
        policy: AccountPolicy,
    ) -> Self {
        Self {
            tokens,
            revocations,
            mail,
            policy,
        }
    }

    /// Opens a session on `device` for `user`, whose identity the caller has verified as
    /// `assurance` says, in `transaction` (where the caller made its own checks, such as
    /// that the password it verified is still the account's), commits it and hands out the
    /// token pair. The session records `assurance`; its access tokens carry it.
    ///
    /// With `MAX_SESSIONS_PER_USER`, the least recently used sessions beyond the cap are
    /// revoked in the same transaction; with `NEW_SIGNIN_ALERTS`, a sign-in from a device
    /// label and network that no kept session of the account came from queues a mail to
    /// the owner (not on the account's first sign-in).
    pub async fn open(
        &self,
        transaction: Transaction<'_>,
        user: UserId,
        device: Device,
        assurance: &Assurance,
    ) -> Result<TokenPair, ServiceError> {
        if self.policy.new_signin_alerts {
            self.alert_if_new(&transaction, user, &device).await?;
        }
        let secret = RefreshSecret::generate();
        let (session, idle_expires_at) = sessions::create(
            &transaction,
            user,
            &device,
            assurance,
            (self.policy.idle_timeout, self.policy.absolute_lifetime),
            &self.tokens.refresh_key().hash(&secret),
        )
        .await?;
        let capped = self
            .revoke_beyond_cap(&transaction, user, session, device.ip)
            .await?;
        transaction.commit().await?;
        if !capped.is_empty() {
            self.revocations
                .committed(&capped, RevokeReason::SessionLimit);
        }
        tracing::info!(user_id = %user, session_id = %session, aal = %assurance.aal, "session opened");
        self.tokens.pair(
            user,
            session,
            assurance,
            RefreshToken::first(session, secret),
            idle_expires_at,
        )
    }

    /// With the user's row locked by the caller: revokes the least recently used live
    /// sessions that the new `session` puts beyond `MAX_SESSIONS_PER_USER`, and records
    /// it; returns them.
    async fn revoke_beyond_cap(
        &self,
        transaction: &Transaction<'_>,
        user: UserId,
        session: SessionId,
        ip: Option<IpAddr>,
    ) -> Result<Vec<SessionId>, ServiceError> {
        let cap = self.policy.max_sessions_per_user;
        if cap == 0 {
            return Ok(Vec::new());
        }
        let reason = RevokeReason::SessionLimit;
        let revoked = sessions::revoke_beyond_cap(transaction, user, session, cap, reason).await?;
        if !revoked.is_empty() {
            let count = revoked.len() as u64;
            let event = Event::SessionsRevoked { reason, count };
            let subject = Subject {
                user: Some(user),
                session: Some(session),
                ip,
            };
            events::record(transaction, event, subject).await?;
            tracing::info!(user_id = %user, session_id = %session, count, "session cap: least recently used sessions revoked");
        }
        Ok(revoked)
    }

    /// Queues a sign-in alert when `device` (its label and network) is new to `user`,
    /// which has signed in before.
    async fn alert_if_new(
        &self,
        client: &impl GenericClient,
        user: UserId,
        device: &Device,
    ) -> Result<(), ServiceError> {
        let Some(ip) = device.ip else {
            return Ok(());
        };
        let label = device.label.as_deref();
        let (signed_in_before, known) = sessions::signed_in_before(client, user, label, ip).await?;
        if signed_in_before && !known {
            let Some((email, _)) = users::profile(client, user).await? else {
                return Ok(());
            };
            tracing::info!(user_id = %user, ip = %ip, "sign-in from a new device and network; alerting the owner");
            self.mail
                .queue_sign_in_alert(client, &email, label, ip)
                .await?;
        }
        Ok(())
    }
}
