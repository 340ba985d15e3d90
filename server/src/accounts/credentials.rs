//! Accounts and their passwords: register, login, password change, and the one spelling
//! of an email.

use std::net::IpAddr;

use crate::ids::{SessionId, UserId};
use deadpool_postgres::Pool;
use secrecy::{ExposeSecret as _, SecretString};

use super::mail::AccountMail;
use super::{AccountPolicy, Factors, LoginResult, Refusal, Revocations, SignIn};
use crate::assurance::Assurance;
use crate::error::ServiceError;
use crate::passwords::{self, PasswordHasher, Verified};
use crate::store::account_tokens::{self, TokenPurpose};
use crate::store::events::{self, Event, EventKind, Subject};
use crate::store::sessions::{self, BulkScope, Device, RevokeReason};
use crate::store::users;

/// An email in the one spelling that names its account (see [`crate::email`]): what
/// registration stores, login looks up, and the per-account limits are keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Normalises `text`, or refuses it as not an email address.
    pub fn parse(text: &str) -> Result<Self, ServiceError> {
        crate::email::normalize(text).map(Self).map_err(|reason| {
            tracing::debug!(%reason, "email refused");
            ServiceError::InvalidEmail
        })
    }

    /// The normalised email.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the domain is one label (`x@localhost`): refused for new accounts unless
    /// `ALLOW_SINGLE_LABEL_EMAIL_DOMAINS` allows it.
    pub fn has_single_label_domain(&self) -> bool {
        crate::email::has_single_label_domain(&self.0)
    }
}

/// A password that passes the policy (see [`passwords::check_policy`]), for a new account
/// or a password change. Like every password here it is a [`SecretString`]: it never
/// prints, and its memory is wiped when it is dropped.
pub struct NewPassword(SecretString);

impl NewPassword {
    /// Checks `password` against the policy.
    pub fn parse(password: SecretString) -> Result<Self, ServiceError> {
        passwords::check_policy(password.expose_secret())?;
        Ok(Self(password))
    }

    /// The password, to hash.
    pub(super) fn into_inner(self) -> SecretString {
        self.0
    }
}

/// The name a client gives its device at login, trimmed; `None` when it gave none or only
/// blanks. Refused when longer than [`MAX_DEVICE_NAME_CHARS`](crate::device::MAX_DEVICE_NAME_CHARS)
/// characters or holding a character emails refuse too: controls, zero-width and
/// bidirectional formatting characters, line and paragraph separators (a name shown in
/// the device list must read as what it is).
pub fn device_name(given: Option<&str>) -> Result<Option<String>, ServiceError> {
    let Some(name) = given.map(str::trim).filter(|name| !name.is_empty()) else {
        return Ok(None);
    };
    if name.chars().count() > crate::device::MAX_DEVICE_NAME_CHARS
        || name.chars().any(crate::email::is_invisible)
    {
        return Err(ServiceError::InvalidDeviceName);
    }
    Ok(Some(name.to_owned()))
}

/// How a login attempt ended, as `session_logins_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// A session was opened.
    Success,
    /// Unknown email or wrong password.
    Failure,
    /// Refused by a rate limit before the password was looked at.
    RateLimited,
}

impl LoginOutcome {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::RateLimited => "rate_limited",
        }
    }

    /// Counts one login that ended so.
    pub fn count(self) {
        metrics::counter!("session_logins_total", "outcome" => self.as_str()).increment(1);
    }
}

/// Creates accounts, checks their passwords (and then has [`SignIn`] open the session),
/// changes passwords.
#[derive(Clone)]
pub struct Credentials {
    pool: Pool,
    passwords: PasswordHasher,
    sign_in: SignIn,
    factors: Factors,
    revocations: Revocations,
    mail: AccountMail,
    policy: AccountPolicy,
}

impl Credentials {
    /// Accounts in `pool`'s database, passwords hashed by `passwords`, sessions opened by
    /// `sign_in`.
    pub fn new(
        pool: Pool,
        passwords: PasswordHasher,
        sign_in: SignIn,
        factors: Factors,
        revocations: Revocations,
        mail: AccountMail,
        policy: AccountPolicy,
    ) -> Self {
        Self {
            pool,
            passwords,
            sign_in,
            factors,
            revocations,
            mail,
            policy,
        }
    }

    /// Creates an account and, in the same transaction, queues the mail that verifies its
    /// address.
    pub async fn register(
        &self,
        email: &Email,
        password: NewPassword,
    ) -> Result<UserId, ServiceError> {
        let hash = self.passwords.hash(password.0).await;
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let user = users::insert(&transaction, email.as_str(), &hash)
            .await?
            .ok_or(ServiceError::EmailTaken)?;
        self.mail
            .queue_verification(&transaction, user, email.as_str())
            .await?;
        transaction.commit().await?;
        tracing::info!(user_id = %user, "account registered");
        Ok(user)
    }

    /// Whether a client is known to the account of `email`: it presented an access token
    /// of a live session of the account (`signed_in_as`), or a session of the account was
    /// used from its IP within `LOGIN_KNOWN_IP_DAYS` (the sessions table, so every
    /// instance and a restart agree). Such a client still signs in with the right
    /// password when others' failures have spent the account's login budget.
    pub async fn is_known_client(
        &self,
        email: &Email,
        signed_in_as: Option<UserId>,
        ip: Option<IpAddr>,
    ) -> Result<bool, ServiceError> {
        let client = self.pool.get().await?;
        let Some(user) = users::by_email(&client, email.as_str())
            .await?
            .map(|account| account.id)
        else {
            return Ok(false);
        };
        if signed_in_as == Some(user) {
            return Ok(true);
        }
        match ip {
            Some(ip) if !self.policy.known_ip_window.is_zero() => {
                sessions::used_from(&client, user, ip, self.policy.known_ip_window).await
            }
            _ => Ok(false),
        }
    }

    /// Checks the credentials and opens a session on `device` ([`SignIn::open`]), or, for
    /// an account with a second factor, hands out the `mfa_token` that continues the login
    /// (it remembers `transport`, `bearer` or `cookie`) and opens nothing.
    ///
    /// An unknown email and a wrong password are one refusal, that
    /// [counts](Refusal::counts) against the failure limits, and cost about the same
    /// time. With `REQUIRE_VERIFIED_EMAIL`, the right password of an unverified account
    /// is refused with [`ServiceError::EmailNotVerified`], which does not count: only
    /// the owner learns it.
    pub async fn login(
        &self,
        email: &Email,
        password: SecretString,
        device: Device,
        transport: &str,
    ) -> Result<LoginResult, Refusal> {
        // No connection is held while hashing: a burst of logins must not drain the pool.
        let account = users::by_email(&self.pool.get().await?, email.as_str()).await?;
        let email_verified = account
            .as_ref()
            .is_some_and(|account| account.email_verified);
        let (user, stored) = account.map_or((None, None), |account| {
            (Some(account.id), Some(account.password_hash))
        });
        let verified = self.passwords.verify(password, stored.clone()).await;
        let mut client = self.pool.get().await?;
        let (Some(user), Verified::Match { rehash }) = (user, verified) else {
            tracing::info!(ip = ?device.ip, "login failed");
            LoginOutcome::Failure.count();
            let subject = Subject {
                user,
                session: None,
                ip: device.ip,
            };
            let recorded = events::record(&client, Event::LoginFailed, subject).await;
            return Err(Refusal::failed_guess(
                recorded.err().unwrap_or(ServiceError::InvalidCredentials),
            ));
        };
        if self.policy.require_verified_email && !email_verified {
            tracing::info!(user_id = %user, "login refused: the address is not verified");
            return Err(ServiceError::EmailNotVerified.into());
        }
        let transaction = client.transaction().await?;
        // The hash was verified outside any transaction. Had a password change committed
        // since, this login used the old password and must not open a session; locking
        // the row also makes a change still under way wait, then revoke this session.
        if users::lock_hash(&transaction, user).await? != stored {
            tracing::info!(user_id = %user, "login lost a race with a password change");
            return Err(ServiceError::InvalidCredentials.into());
        }
        let current_hash = match rehash {
            Some(new_hash) => {
                users::set_password(&transaction, user, &new_hash).await?;
                new_hash
            }
            None => stored.unwrap_or_default(),
        };
        if let Some(needed) = self
            .factors
            .challenge_login(&transaction, user, &device, transport, &current_hash)
            .await?
        {
            transaction.commit().await?;
            return Ok(LoginResult::SecondFactorNeeded(needed));
        }
        let pair = self
            .sign_in
            .open(transaction, user, device, &Assurance::password())
            .await?;
        LoginOutcome::Success.count();
        Ok(LoginResult::SignedIn(pair))
    }

    /// Changes the password of `user` and revokes every other session of the user.
    ///
    /// A wrong current password is recorded and [counts](Refusal::counts); after
    /// `PASSWORD_CHANGE_MAX_FAILURES` of them the session giving them is revoked.
    pub async fn change_password(
        &self,
        user: UserId,
        current_session: SessionId,
        current_password: SecretString,
        new_password: NewPassword,
        ip: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        let stored = users::by_id(&self.pool.get().await?, user)
            .await?
            .map(|(_, hash)| hash);
        if !matches!(
            self.passwords.verify(current_password, stored).await,
            Verified::Match { .. }
        ) {
            let recorded = self.password_change_failed(user, current_session, ip).await;
            return Err(Refusal::failed_guess(
                recorded.err().unwrap_or(ServiceError::WrongCurrentPassword),
            ));
        }
        let new_hash = self.passwords.hash(new_password.0).await;
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        // The user before the session, in the order a login takes them (a login may
        // revoke this session for the cap while it holds the user).
        users::lock_hash(&transaction, user).await?;
        // Revoked while the password was being verified (by its user, or by too many
        // failures of parallel attempts): an ended session changes nothing.
        if !sessions::lock_live(&transaction, user, current_session).await? {
            return Err(ServiceError::SessionEnded.into());
        }
        users::set_password(&transaction, user, &new_hash).await?;
        // A reset link asked for before the change must not undo it.
        account_tokens::delete_for_user(&transaction, user, TokenPurpose::ResetPassword).await?;
        let reason = RevokeReason::PasswordChange;
        let scope = BulkScope::User {
            user,
            except: Some(current_session),
        };
        let bulk = sessions::revoke_before(&transaction, scope, reason).await?;
        let revoked = bulk.count;
        events::record(
            &transaction,
            Event::PasswordChanged {
                revoked_sessions: revoked,
            },
            Subject {
                user: Some(user),
                session: Some(current_session),
                ip,
            },
        )
        .await?;
        transaction.commit().await?;
        self.revocations.committed_bulk(scope, bulk, reason);
        tracing::info!(user_id = %user, revoked, "password changed");
        Ok(())
    }

    /// Records a wrong current password and revokes the session at the limit.
    async fn password_change_failed(
        &self,
        user: UserId,
        session: SessionId,
        ip: Option<IpAddr>,
    ) -> Result<(), ServiceError> {
        let max = self.policy.password_change_max_failures;
        let subject = Subject {
            user: Some(user),
            session: Some(session),
            ip,
        };
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        // The session's row lock makes its failures count one at a time, so parallel
        // attempts cannot all see a count under the limit.
        let live = sessions::lock_live(&transaction, user, session).await?;
        events::record(&transaction, Event::PasswordChangeFailed, subject).await?;
        let failures =
            events::count_for_session(&transaction, session, EventKind::PasswordChangeFailed)
                .await?;
        let revoke = live && max > 0 && failures >= u64::from(max);
        let reason = RevokeReason::PasswordChangeFailures;
        if revoke {
            sessions::revoke_one(&transaction, user, session, reason).await?;
            let event = Event::SessionsRevoked { reason, count: 1 };
            events::record(&transaction, event, subject).await?;
        }
        transaction.commit().await?;
        tracing::warn!(user_id = %user, session_id = %session, failures, ip = ?ip, "password change with a wrong current password");
        metrics::counter!("session_password_change_failures_total").increment(1);
        if revoke {
            self.revocations.committed(&[session], reason);
            tracing::warn!(user_id = %user, session_id = %session, failures, "session revoked after too many failed password changes");
        }
        Ok(())
    }

    /// The user's email, and whether its owner verified it.
    pub async fn profile(&self, user: UserId) -> Result<(String, bool), ServiceError> {
        let client = self.pool.get().await?;
        users::profile(&client, user)
            .await?
            .ok_or(ServiceError::SessionNotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_trimmed_bounded_and_printable() {
        assert_eq!(
            device_name(Some("  Ada's laptop ")).unwrap().as_deref(),
            Some("Ada's laptop")
        );
        assert_eq!(device_name(Some("   ")).unwrap(), None);
        assert_eq!(device_name(None).unwrap(), None);
        assert!(device_name(Some(&"x".repeat(128))).is_ok());
        assert!(device_name(Some(&"x".repeat(129))).is_err());
        assert!(device_name(Some("tab\there")).is_err());
        for hidden in [
            "Ada\u{202e}potpal",
            "Ada\u{2066}laptop",
            "Ada\u{200b}laptop",
            "Ada\u{200d}laptop",
            "Ada\u{feff}laptop",
            "Ada\u{2028}laptop",
            "Ada\u{2029}laptop",
            "Ada\u{ad}laptop",
        ] {
            assert!(device_name(Some(hidden)).is_err(), "{hidden:?}");
        }
        assert!(device_name(Some("Ada’s Pixel 8 — 日本")).is_ok());
    }

    #[test]
    fn an_email_is_kept_in_its_normalised_spelling_only() {
        let email = Email::parse("  Ada@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "ada@example.com");
        assert!(matches!(
            Email::parse("not an email"),
            Err(ServiceError::InvalidEmail)
        ));
    }
}
