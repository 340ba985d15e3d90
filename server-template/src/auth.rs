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
use crate::rate_limit::RateLimits;
use crate::refresh_token::{Ancestry, PresentedToken, RefreshKey, RefreshSecret, RefreshToken};
use crate::store::refresh::{Outcome, RotateRequest, Rotation};
use crate::store::sessions::Device;
use crate::store::{events, refresh, sessions, users};

/// Longest email accepted (RFC 5321's path limit).
const MAX_EMAIL_CHARS: usize = 254;

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
        if let Some(ip) = ip {
            self.limits
                .login_per_ip
                .check(&ClientNetwork::from(ip))
                .map_err(ServiceError::RateLimited)?;
        }
        let email = normalize_email(email)?;
        passwords::check_policy(&password)?;
        let hash = self.passwords.hash(password).await;
        let client = self.pool.get().await?;
        let user = users::insert(&client, &email, &hash)
            .await?
            .ok_or(ServiceError::EmailTaken)?;
        tracing::info!(user_id = %user, "account registered");
        Ok(user)
    }

    /// Checks the credentials and opens a session.
    pub async fn login(
        &self,
        email: &str,
        password: String,
        device: Device,
    ) -> Result<TokenPair, ServiceError> {
        if let Some(ip) = device.ip {
            self.limits
                .login_per_ip
                .check(&ClientNetwork::from(ip))
                .map_err(ServiceError::RateLimited)?;
        }
        let normalized = email.trim().to_lowercase();
        self.limits
            .login_per_account
            .check(&normalized)
            .map_err(ServiceError::RateLimited)?;
        if let Some(name) = &device.name {
            check_device_name(name)?;
        }
        // A malformed email or password is simply a failed login: same answer, same cost.
        // No connection is held while hashing: a burst of logins must not drain the pool.
        let account = if normalize_email(email).is_ok() {
            users::by_email(&self.pool.get().await?, &normalized).await?
        } else {
            None
        };
        let (user, stored) = account.map_or((None, None), |(id, hash)| (Some(id), Some(hash)));
        let verified = self.passwords.verify(password, stored.clone()).await;
        let mut client = self.pool.get().await?;
        let (Some(user), Verified::Match { rehash }) = (user, verified) else {
            tracing::info!(ip = ?device.ip, "login failed");
            metrics::counter!("session_logins_total", "outcome" => "failure").increment(1);
            events::record(
                &client,
                "login_failed",
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
                let found = sessions::revoke_one(&client, user, session, reason).await?;
                if !found {
                    return Err(ServiceError::SessionNotFound);
                }
                (vec![session], reason, Some(session))
            }
            RevokeScope::AllBut { keep, reason } => (
                sessions::revoke_all_but(&client, user, keep, reason).await?,
                reason,
                keep,
            ),
        };
        self.forget(&revoked);
        let count = revoked.len() as u64;
        tracing::info!(user_id = %user, count, reason, "sessions revoked");
        metrics::counter!("session_revocations_total", "reason" => reason).increment(count);
        events::record(
            &client,
            "sessions_revoked",
            Some(user),
            session,
            ip,
            serde_json::json!({ "reason": reason, "count": count }),
        )
        .await?;
        Ok(count)
    }

    /// Changes the password and revokes every other session of the user.
    pub async fn change_password(
        &self,
        user: Uuid,
        current_session: Uuid,
        current_password: String,
        new_password: String,
        ip: Option<IpAddr>,
    ) -> Result<(), ServiceError> {
        passwords::check_policy(&new_password)?;
        let stored = users::by_id(&self.pool.get().await?, user)
            .await?
            .map(|(_, hash)| hash);
        if !matches!(
            self.passwords.verify(current_password, stored).await,
            Verified::Match { .. }
        ) {
            return Err(ServiceError::WrongCurrentPassword);
        }
        let new_hash = self.passwords.hash(new_password).await;
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        users::set_password(&transaction, user, &new_hash).await?;
        let revoked_ids =
            sessions::revoke_all_but(&transaction, user, Some(current_session), "password_change")
                .await?;
        let revoked = revoked_ids.len() as u64;
        events::record(
            &transaction,
            "password_changed",
            Some(user),
            Some(current_session),
            ip,
            serde_json::json!({ "revoked_sessions": revoked }),
        )
        .await?;
        transaction.commit().await?;
        self.forget(&revoked_ids);
        tracing::info!(user_id = %user, revoked, "password changed");
        metrics::counter!("session_revocations_total", "reason" => "password_change")
            .increment(revoked);
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
            self.liveness.forget(&session.to_string());
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

/// Which sessions to revoke.
#[derive(Debug, Clone, Copy)]
pub enum RevokeScope {
    /// One session, for this reason.
    One {
        /// The session.
        session: Uuid,
        /// Why (`logout`, `revoked_by_user`).
        reason: &'static str,
    },
    /// Every live session but `keep` (all when `None`).
    AllBut {
        /// The session to keep.
        keep: Option<Uuid>,
        /// Why (`logout_all`, `revoke_others`).
        reason: &'static str,
    },
}

/// Trims and lower-cases an email and checks that it is one.
pub fn normalize_email(email: &str) -> Result<String, ServiceError> {
    let email = email.trim().to_lowercase();
    if email.chars().count() > MAX_EMAIL_CHARS || !email_address::EmailAddress::is_valid(&email) {
        return Err(ServiceError::InvalidEmail);
    }
    Ok(email)
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
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "a b@example.com",
            &format!("{}@x.io", "a".repeat(300)),
        ] {
            assert!(
                matches!(normalize_email(bad), Err(ServiceError::InvalidEmail)),
                "{bad}"
            );
        }
    }

    #[test]
    fn device_names_are_bounded_and_printable() {
        assert!(check_device_name("Ada's laptop").is_ok());
        assert!(check_device_name(&"x".repeat(129)).is_err());
        assert!(check_device_name("tab\there").is_err());
    }
}
