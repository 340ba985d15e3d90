//! The account and session logic behind the routes: register, login, refresh, logout,
//! password change. Routes translate HTTP to these calls and their errors back.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use session_guard::PostgresLiveness;
use uuid::Uuid;

use crate::access_token::AccessTokenIssuer;
use crate::client_ip::ClientNetwork;
use crate::error::ServiceError;
use crate::passwords::{self, PasswordHasher, Verified};
use crate::rate_limit::{LimitKey, RateLimits};
use crate::refresh_token::{Ancestry, PresentedToken, RefreshKey, RefreshSecret, RefreshToken};
use crate::store::events::EventKind;
use crate::store::refresh::{Outcome, RotateRequest, Rotation};
use crate::store::sessions::{Device, Revocation, RevokeReason};
use crate::store::{events, refresh, sessions, users};

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
    pub session_id: Uuid,
}

/// Lifetimes of sessions and refresh tokens.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    /// A session not refreshed for this long ends.
    pub idle_timeout: Duration,
    /// A session ends this long after login, whatever happens.
    pub absolute_lifetime: Duration,
    /// How long the previous refresh token may be retried by the client that rotated it.
    pub grace: Duration,
    /// How many such retries one rotation allows.
    pub max_retries: u32,
}

/// Accounts and sessions.
#[derive(Clone)]
pub struct Accounts {
    pool: Pool,
    passwords: PasswordHasher,
    refresh_key: Arc<RefreshKey>,
    access: AccessTokenIssuer,
    limits: RateLimits,
    policy: SessionPolicy,
    liveness: PostgresLiveness,
}

impl Accounts {
    /// Accounts over `pool`; revocations are also forgotten at once by `liveness`.
    pub fn new(
        pool: Pool,
        passwords: PasswordHasher,
        refresh_key: Arc<RefreshKey>,
        access: AccessTokenIssuer,
        limits: RateLimits,
        policy: SessionPolicy,
        liveness: PostgresLiveness,
    ) -> Self {
        Self {
            pool,
            passwords,
            refresh_key,
            access,
            limits,
            policy,
            liveness,
        }
    }

    /// The rate limits, for the periodic clean-up.
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// Creates an account.
    pub async fn register(
        &self,
        email: &str,
        password: String,
        ip: Option<IpAddr>,
    ) -> Result<Uuid, ServiceError> {
        // Checked before any limiter sees it: a bad email costs nothing and stores nothing.
        let email = normalize_email(email)?;
        if let Some(ip) = ip {
            self.limits
                .login_per_ip
                .check(&ClientNetwork::from(ip))
                .map_err(ServiceError::RateLimited)?;
        }
        passwords::check_policy(&password)?;
        let hash = self.passwords.hash(password).await;
        let client = self.pool.get().await?;
        let user = users::insert(&client, &email, &hash)
            .await?
            .ok_or(ServiceError::EmailTaken)?;
        tracing::info!(user_id = %user, "account registered");
        Ok(user)
    }

    /// Checks the credentials and opens a session. `signed_in_as` is the user of a live
    /// session the client proved it holds (its access token), if any.
    ///
    /// Only failures count against the limits: each attempt takes a token from the
    /// per-IP, per-account-and-IP and per-account budgets before the password is verified
    /// (so parallel guesses cannot overshoot) and gets them back when it was right. When
    /// someone else's guesses have used up the account's budget, a known client (see
    /// [`Accounts::is_known`]) still gets in with the right password; its own
    /// per-account-and-IP budget binds it all the same.
    pub async fn login(
        &self,
        email: &str,
        password: String,
        device: Device,
        signed_in_as: Option<Uuid>,
    ) -> Result<TokenPair, ServiceError> {
        // Checked before any limiter sees it: a bad email costs nothing and stores nothing.
        let email = normalize_email(email)?;
        if let Some(name) = &device.name {
            check_device_name(name)?;
        }
        let limits = &self.limits;
        let rate_limited = |wait| {
            metrics::counter!("session_logins_total", "outcome" => "rate_limited").increment(1);
            ServiceError::RateLimited(wait)
        };
        let mut attempt = LoginAttempt {
            limits,
            ip: None,
            pair: None,
            account: None,
            failed: false,
        };
        if let Some(ip) = device.ip {
            let network = ClientNetwork::from(ip);
            limits.login_per_ip.check(&network).map_err(rate_limited)?;
            attempt.ip = Some(network);
            let pair = LimitKey::account_from(&email, network);
            limits
                .login_failures_per_account_ip
                .check(&pair)
                .map_err(rate_limited)?;
            attempt.pair = Some(pair);
        }
        let account_key = LimitKey::account(&email);
        let account_locked = match limits.login_failures_per_account.check(&account_key) {
            Ok(()) => {
                attempt.account = Some(account_key);
                None
            }
            Err(wait) => Some(wait),
        };
        // No connection is held while hashing: a burst of logins must not drain the pool.
        let account = {
            let client = self.pool.get().await?;
            let account = users::by_email(&client, &email).await?;
            if let Some(wait) = account_locked {
                let known = match &account {
                    Some((user, _)) => {
                        self.is_known(&client, *user, signed_in_as, device.ip)
                            .await?
                    }
                    None => false,
                };
                if !known {
                    // Not a guess (the password was not looked at), but the queries it
                    // cost stay on this IP's budget.
                    attempt.ip = None;
                    return Err(rate_limited(wait));
                }
                tracing::info!(
                    ip = ?device.ip,
                    "account login limit reached; a known client may still sign in"
                );
            }
            account
        };
        let (user, stored) = account.map_or((None, None), |(id, hash)| (Some(id), Some(hash)));
        let verified = self.passwords.verify(password, stored.clone()).await;
        let mut client = self.pool.get().await?;
        let (Some(user), Verified::Match { rehash }) = (user, verified) else {
            attempt.failed = true;
            tracing::info!(ip = ?device.ip, "login failed");
            metrics::counter!("session_logins_total", "outcome" => "failure").increment(1);
            events::record(
                &client,
                EventKind::LoginFailed,
                user,
                None,
                device.ip,
                serde_json::json!({}),
            )
            .await?;
            return Err(ServiceError::InvalidCredentials);
        };
        let secret = RefreshSecret::generate();
        let transaction = client.transaction().await?;
        // The hash was verified outside any transaction. Had a password change committed
        // since, this login used the old password and must not open a session; locking
        // the row also makes a change still under way wait, then revoke this session.
        if users::hash_for_share(&transaction, user).await? != stored {
            tracing::info!(user_id = %user, "login lost a race with a password change");
            return Err(ServiceError::InvalidCredentials);
        }
        if let Some(new_hash) = rehash {
            users::set_password(&transaction, user, &new_hash).await?;
        }
        let (session, idle_expires_at) = sessions::create(
            &transaction,
            user,
            &device,
            self.policy.idle_timeout,
            self.policy.absolute_lifetime,
            &self.refresh_key.hash(&secret),
        )
        .await?;
        transaction.commit().await?;
        let refresh_token = RefreshToken::first(session, secret);
        tracing::info!(user_id = %user, session_id = %session, "login");
        metrics::counter!("session_logins_total", "outcome" => "success").increment(1);
        self.pair(user, session, refresh_token, idle_expires_at)
    }

    /// Whether a client is known to `user`: it presented an access token of a live session
    /// of the user, or a session of the user was used from its IP within
    /// `LOGIN_KNOWN_IP_DAYS` (the sessions table, so every instance and a restart agree).
    async fn is_known(
        &self,
        client: &impl deadpool_postgres::GenericClient,
        user: Uuid,
        signed_in_as: Option<Uuid>,
        ip: Option<IpAddr>,
    ) -> Result<bool, ServiceError> {
        if signed_in_as == Some(user) {
            return Ok(true);
        }
        match ip {
            Some(ip) if !self.limits.login_known_ip.is_zero() => {
                sessions::used_from(client, user, ip, self.limits.login_known_ip).await
            }
            _ => Ok(false),
        }
    }

    /// Rotates a refresh token. `client` is the caller as the retry rule sees it.
    pub async fn refresh(
        &self,
        token: &str,
        client: &RefreshClient,
    ) -> Result<TokenPair, ServiceError> {
        if let Some(ip) = client.ip {
            self.limits
                .refresh_per_ip
                .check(&ClientNetwork::from(ip))
                .map_err(ServiceError::RateLimited)?;
        }
        let Some(presented) = PresentedToken::parse(token) else {
            metrics::counter!("session_refreshes_total", "outcome" => "malformed").increment(1);
            return Err(ServiceError::InvalidRefreshToken);
        };
        let key = &self.refresh_key;
        let hash = key.hash(presented.secret());
        let next_hash = key.hash(&key.successor(presented.secret()));
        let fingerprint = key.client_fingerprint(client.ip, client.user_agent.as_deref());
        let connection = self.pool.get().await?;
        let rotation = refresh::rotate(
            &connection,
            &RotateRequest {
                session: presented.session(),
                generation: presented.generation(),
                hash: &hash,
                next_hash: &next_hash,
                client: &fingerprint,
                grace: self.policy.grace,
                idle: self.policy.idle_timeout,
                max_retries: self.policy.max_retries,
                ip: client.ip,
            },
        )
        .await?;
        let outcome = match rotation.outcome {
            Outcome::Stale => {
                self.check_stale(&connection, &presented, &rotation, client.ip)
                    .await?
            }
            outcome => outcome,
        };
        metrics::counter!("session_refreshes_total", "outcome" => outcome.as_str()).increment(1);
        match (
            outcome,
            rotation.user,
            rotation.session,
            rotation.refresh_expires_at,
        ) {
            (Outcome::Rotated | Outcome::Retried, Some(user), Some(session), Some(expires)) => {
                if outcome == Outcome::Retried {
                    tracing::info!(user_id = %user, session_id = %session, ip = ?client.ip, "refresh retried");
                }
                self.pair(user, session, key.next(&presented, session), expires)
            }
            (Outcome::Reused, user, session, _) => {
                if let Some(session) = session {
                    self.forget(&[session]);
                }
                tracing::warn!(
                    user_id = ?user,
                    session_id = ?session,
                    ip = ?client.ip,
                    "refresh token reuse: session revoked"
                );
                metrics::counter!("session_revocations_total", "reason" => "refresh_reuse")
                    .increment(1);
                Err(ServiceError::InvalidRefreshToken)
            }
            _ => Err(ServiceError::InvalidRefreshToken),
        }
    }

    /// A token older than the previous generation: reuse when it walks forward to the
    /// session's current secret (the session is revoked then), unknown otherwise. The
    /// walk is bounded and runs off the async threads.
    async fn check_stale(
        &self,
        connection: &impl deadpool_postgres::GenericClient,
        presented: &PresentedToken,
        rotation: &Rotation,
        ip: Option<IpAddr>,
    ) -> Result<Outcome, ServiceError> {
        let (Some(session), Some(current), Some(current_hash)) = (
            rotation.session,
            rotation.generation,
            rotation.current_hash.clone(),
        ) else {
            return Ok(Outcome::Unknown);
        };
        let steps = current.saturating_sub(presented.generation());
        let key = Arc::clone(&self.refresh_key);
        let secret = presented.secret().clone();
        let ancestry =
            tokio::task::spawn_blocking(move || key.ancestry(&secret, steps, &current_hash))
                .await
                .map_err(|e| ServiceError::Internal(format!("chain walk failed: {e}")))?;
        match ancestry {
            Ancestry::Genuine => {
                refresh::revoke_reused(connection, session, presented.generation(), ip).await?;
                Ok(Outcome::Reused)
            }
            Ancestry::Forged => Ok(Outcome::Unknown),
            Ancestry::TooOld => {
                tracing::info!(session_id = %session, steps, "refresh token too old to check");
                Ok(Outcome::Unknown)
            }
        }
    }

    /// Revokes one session of `user`, or every other one, or all of them.
    pub async fn revoke(
        &self,
        user: Uuid,
        scope: RevokeScope,
        ip: Option<IpAddr>,
    ) -> Result<u64, ServiceError> {
        let client = self.pool.get().await?;
        let (revoked, reason, session) = match scope {
            RevokeScope::One { session, reason } => {
                match sessions::revoke_one(&client, user, session, reason).await? {
                    Revocation::Revoked => (vec![session], reason, Some(session)),
                    // Nothing changed, so nothing is recorded.
                    Revocation::AlreadyEnded => return Ok(0),
                    Revocation::NotFound => return Err(ServiceError::SessionNotFound),
                }
            }
            RevokeScope::AllBut { keep, reason } => (
                sessions::revoke_all_but(&client, user, keep, reason).await?,
                reason,
                keep,
            ),
        };
        self.forget(&revoked);
        let count = revoked.len() as u64;
        if count == 0 {
            return Ok(0);
        }
        let reason = reason.as_str();
        tracing::info!(user_id = %user, count, reason, "sessions revoked");
        metrics::counter!("session_revocations_total", "reason" => reason).increment(count);
        events::record(
            &client,
            EventKind::SessionsRevoked,
            Some(user),
            session,
            ip,
            serde_json::json!({ "reason": reason, "count": count }),
        )
        .await?;
        Ok(count)
    }

    /// Changes the password and revokes every other session of the user.
    ///
    /// A wrong current password is recorded; after `PASSWORD_CHANGE_MAX_FAILURES` of them
    /// the session is revoked. As for login, each attempt takes a token per session and per
    /// user before verifying and gets it back when the password was right.
    pub async fn change_password(
        &self,
        user: Uuid,
        current_session: Uuid,
        current_password: String,
        new_password: String,
        ip: Option<IpAddr>,
    ) -> Result<(), ServiceError> {
        passwords::check_policy(&new_password)?;
        let limits = &self.limits;
        limits
            .password_change_failures_per_session
            .check(&current_session)
            .map_err(ServiceError::RateLimited)?;
        if let Err(wait) = limits.password_change_failures_per_user.check(&user) {
            limits
                .password_change_failures_per_session
                .refund(&current_session);
            return Err(ServiceError::RateLimited(wait));
        }
        let stored = users::by_id(&self.pool.get().await?, user)
            .await?
            .map(|(_, hash)| hash);
        if !matches!(
            self.passwords.verify(current_password, stored).await,
            Verified::Match { .. }
        ) {
            self.password_change_failed(user, current_session, ip)
                .await?;
            return Err(ServiceError::WrongCurrentPassword);
        }
        limits
            .password_change_failures_per_session
            .refund(&current_session);
        limits.password_change_failures_per_user.refund(&user);
        let new_hash = self.passwords.hash(new_password).await;
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        // Revoked while the password was being verified (by its user, or by too many
        // failures of parallel attempts): an ended session changes nothing.
        if !sessions::lock_live(&transaction, user, current_session).await? {
            return Err(ServiceError::SessionEnded);
        }
        users::set_password(&transaction, user, &new_hash).await?;
        let revoked_ids = sessions::revoke_all_but(
            &transaction,
            user,
            Some(current_session),
            RevokeReason::PasswordChange,
        )
        .await?;
        let revoked = revoked_ids.len() as u64;
        events::record(
            &transaction,
            EventKind::PasswordChanged,
            Some(user),
            Some(current_session),
            ip,
            serde_json::json!({ "revoked_sessions": revoked }),
        )
        .await?;
        transaction.commit().await?;
        self.forget(&revoked_ids);
        tracing::info!(user_id = %user, revoked, "password changed");
        metrics::counter!("session_revocations_total", "reason" => RevokeReason::PasswordChange.as_str())
            .increment(revoked);
        Ok(())
    }

    /// Records a wrong current password and revokes the session at the limit.
    async fn password_change_failed(
        &self,
        user: Uuid,
        session: Uuid,
        ip: Option<IpAddr>,
    ) -> Result<(), ServiceError> {
        let max = self.limits.password_change_max_failures;
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        // The session's row lock makes its failures count one at a time, so parallel
        // attempts cannot all see a count under the limit.
        let live = sessions::lock_live(&transaction, user, session).await?;
        events::record(
            &transaction,
            EventKind::PasswordChangeFailed,
            Some(user),
            Some(session),
            ip,
            serde_json::json!({}),
        )
        .await?;
        let failures =
            events::count_for_session(&transaction, session, EventKind::PasswordChangeFailed)
                .await?;
        let revoke = live && max > 0 && failures >= u64::from(max);
        let reason = RevokeReason::PasswordChangeFailures;
        if revoke {
            sessions::revoke_one(&transaction, user, session, reason).await?;
            events::record(
                &transaction,
                EventKind::SessionsRevoked,
                Some(user),
                Some(session),
                ip,
                serde_json::json!({ "reason": reason.as_str(), "count": 1 }),
            )
            .await?;
        }
        transaction.commit().await?;
        tracing::warn!(user_id = %user, session_id = %session, failures, ip = ?ip, "password change with a wrong current password");
        metrics::counter!("session_password_change_failures_total").increment(1);
        if revoke {
            self.forget(&[session]);
            tracing::warn!(user_id = %user, session_id = %session, failures, "session revoked after too many failed password changes");
            metrics::counter!("session_revocations_total", "reason" => reason.as_str())
                .increment(1);
        }
        Ok(())
    }

    /// The user's email.
    pub async fn email(&self, user: Uuid) -> Result<String, ServiceError> {
        let client = self.pool.get().await?;
        users::by_id(&client, user)
            .await?
            .map(|(email, _)| email)
            .ok_or(ServiceError::SessionNotFound)
    }

    /// The user's live sessions, newest use first.
    pub async fn sessions(&self, user: Uuid) -> Result<Vec<sessions::SessionRow>, ServiceError> {
        let client = self.pool.get().await?;
        sessions::list_live(&client, user).await
    }

    /// Makes this instance refuse the sessions at once; other instances hear of it from
    /// PostgreSQL within milliseconds.
    fn forget(&self, sessions: &[Uuid]) {
        for session in sessions {
            self.liveness.forget(*session);
        }
    }

    fn pair(
        &self,
        user: Uuid,
        session: Uuid,
        refresh_token: RefreshToken,
        refresh_expires_at: SystemTime,
    ) -> Result<TokenPair, ServiceError> {
        let access_token = self
            .access
            .issue(user, session)
            .map_err(|e| ServiceError::Internal(format!("signing failed: {e}")))?;
        Ok(TokenPair {
            access_token,
            expires_in: self.access.ttl().as_secs(),
            refresh_token,
            refresh_expires_in: refresh_expires_at
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .as_secs(),
            session_id: session,
        })
    }
}

/// Who is refreshing: the previous token may be retried only by the client that rotated
/// it.
#[derive(Debug, Clone, Default)]
pub struct RefreshClient {
    /// The client IP.
    pub ip: Option<IpAddr>,
    /// The request's user agent, as stored for devices.
    pub user_agent: Option<String>,
}

/// The tokens one login attempt took from the limits: given back when it ends, unless it
/// was a failure (a wrong password, an unknown email). A right password, and an attempt
/// the database could not answer, cost nobody's budget.
struct LoginAttempt<'a> {
    limits: &'a RateLimits,
    ip: Option<ClientNetwork>,
    pair: Option<LimitKey>,
    account: Option<LimitKey>,
    failed: bool,
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        if self.failed {
            return;
        }
        if let Some(ip) = &self.ip {
            self.limits.login_per_ip.refund(ip);
        }
        if let Some(key) = &self.pair {
            self.limits.login_failures_per_account_ip.refund(key);
        }
        if let Some(key) = &self.account {
            self.limits.login_failures_per_account.refund(key);
        }
    }
}

/// Which sessions to revoke.
#[derive(Debug, Clone, Copy)]
pub enum RevokeScope {
    /// One session, for this reason.
    One {
        /// The session.
        session: Uuid,
        /// Why ([`RevokeReason::Logout`], [`RevokeReason::RevokedByUser`]).
        reason: RevokeReason,
    },
    /// Every live session but `keep` (all when `None`).
    AllBut {
        /// The session to keep.
        keep: Option<Uuid>,
        /// Why ([`RevokeReason::LogoutAll`], [`RevokeReason::RevokeOthers`]).
        reason: RevokeReason,
    },
}

/// The one spelling of an email that names its account (see [`crate::email`]).
pub fn normalize_email(email: &str) -> Result<String, ServiceError> {
    crate::email::normalize(email).map_err(|reason| {
        tracing::debug!(%reason, "email refused");
        ServiceError::InvalidEmail
    })
}

fn check_device_name(name: &str) -> Result<(), ServiceError> {
    if name.chars().count() > crate::device::MAX_DEVICE_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ServiceError::InvalidDeviceName);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_bounded_and_printable() {
        assert!(check_device_name("Ada's laptop").is_ok());
        assert!(check_device_name(&"x".repeat(129)).is_err());
        assert!(check_device_name("tab\there").is_err());
    }
}
