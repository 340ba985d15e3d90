//! Refresh-token rotation, and the check of tokens older than the previous one.

use std::net::IpAddr;
use std::sync::Arc;

use deadpool_postgres::Pool;

use super::{AccountPolicy, Revocations, TokenPair, Tokens};
use crate::assurance::Assurance;
use crate::device;
use crate::error::ServiceError;
use crate::refresh_token::{Ancestry, PresentedToken, RefreshToken};
use crate::store::events::{self, Event, Subject};
use crate::store::refresh::{self, Outcome, RotateRequest, Rotation};
use crate::store::sessions::RevokeReason;

/// Who is refreshing: the previous token may be retried only by the client that rotated
/// it. A client that sends its session's binding is recognised by it, from any network;
/// one that does not, by its IP and user agent.
#[derive(Debug, Clone, Default)]
pub struct RefreshClient {
    /// The client IP.
    pub ip: Option<IpAddr>,
    /// The request's user agent, as stored for devices.
    pub user_agent: Option<String>,
    /// The session's client binding as the client sent it, if it did.
    pub binding: Option<String>,
}

/// What a refresh came to, as `session_refreshes_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    /// The token did not parse; the database was not asked.
    Malformed,
    /// The client binding sent is not the token's session's; the database was not asked.
    WrongBinding,
    /// What the rotation found (a stale token resolved to reused or unknown).
    Rotation(Outcome),
}

impl Counted {
    fn count(self) {
        let outcome = match self {
            Self::Malformed => "malformed",
            Self::WrongBinding => "wrong_binding",
            Self::Rotation(outcome) => outcome.as_str(),
        };
        metrics::counter!("session_refreshes_total", "outcome" => outcome).increment(1);
    }
}

/// Rotates refresh tokens.
#[derive(Clone)]
pub struct Refresh {
    pool: Pool,
    tokens: Tokens,
    revocations: Revocations,
    policy: AccountPolicy,
    step_up_on_device_change: bool,
}

impl Refresh {
    /// Rotation over `pool`'s sessions, under `policy`'s idle timeout and retry rule;
    /// with `step_up_on_device_change`, a refresh from another browser or OS gets a
    /// token that asks for step-up.
    pub fn new(
        pool: Pool,
        tokens: Tokens,
        revocations: Revocations,
        policy: AccountPolicy,
        step_up_on_device_change: bool,
    ) -> Self {
        Self {
            pool,
            tokens,
            revocations,
            policy,
            step_up_on_device_change,
        }
    }

    /// Rotates a refresh token. `client` is the caller as the retry rule sees it.
    pub async fn rotate(
        &self,
        token: &str,
        client: &RefreshClient,
    ) -> Result<TokenPair, ServiceError> {
        let Some(presented) = PresentedToken::parse(token) else {
            Counted::Malformed.count();
            return Err(ServiceError::InvalidRefreshToken);
        };
        let key = self.tokens.refresh_key();
        let hash = key.hash(presented.secret());
        let successor = key.successor(presented.secret());
        let next_hash = key.hash(&successor);
        let fingerprint = match (&client.binding, presented.session()) {
            (None, _) => key.client_fingerprint(client.ip, client.user_agent.as_deref()),
            (Some(binding), Some(session)) if key.binds(session, binding) => {
                key.bound_fingerprint(session)
            }
            // Another session's binding, or a forged one: nothing is asked or changed.
            (Some(_), _) => {
                Counted::WrongBinding.count();
                return Err(ServiceError::InvalidRefreshToken);
            }
        };
        let connection = self.pool.get().await?;
        let rotation = refresh::rotate(
            &connection,
            &RotateRequest {
                session: presented.session(),
                generation: presented.generation(),
                hash: &hash,
                next_hash: &next_hash,
                client: &fingerprint,
                grace: self.policy.refresh_grace,
                idle: self.policy.idle_timeout,
                max_retries: self.policy.refresh_max_retries,
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
        Counted::Rotation(outcome).count();
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
                let next = RefreshToken::following(&presented, session, successor);
                let recorded = rotation.assurance.clone().ok_or_else(|| {
                    ServiceError::internal("refreshing", "the rotated session has no assurance")
                })?;
                let assurance = self
                    .assurance_for(&connection, &rotation, &recorded, client)
                    .await?;
                self.tokens.pair(user, session, &assurance, next, expires)
            }
            (Outcome::Reused, user, session, _) => {
                // The rotation function (or `check_stale`) revoked it and committed.
                self.revocations
                    .committed(session.as_slice(), RevokeReason::RefreshReuse);
                tracing::warn!(
                    user_id = ?user,
                    session_id = ?session,
                    ip = ?client.ip,
                    "refresh token reuse: session revoked"
                );
                Err(ServiceError::InvalidRefreshToken)
            }
            _ => Err(ServiceError::InvalidRefreshToken),
        }
    }

    /// Of the refresh tokens a browser sent (its own and any another host planted), the
    /// one whose session `binding` names; `None` when none is.
    pub fn bound_token<'t>(&self, tokens: &[&'t str], binding: &str) -> Option<&'t str> {
        let key = self.tokens.refresh_key();
        tokens.iter().copied().find(|token| {
            PresentedToken::parse(token)
                .and_then(|presented| presented.session())
                .is_some_and(|session| key.binds(session, binding))
        })
    }

    /// What the new access token says of the session: what the session records, or with
    /// `STEP_UP_ON_DEVICE_CHANGE`, when the client is another browser or OS than the
    /// session's, that downgraded (and the event recorded), so that routes needing
    /// assurance ask for a step-up.
    async fn assurance_for(
        &self,
        connection: &impl deadpool_postgres::GenericClient,
        rotation: &Rotation,
        recorded: &Assurance,
        client: &RefreshClient,
    ) -> Result<Assurance, ServiceError> {
        if !self.step_up_on_device_change
            || device::same_family(rotation.user_agent.as_deref(), client.user_agent.as_deref())
        {
            return Ok(recorded.clone());
        }
        let subject = Subject {
            user: rotation.user,
            session: rotation.session,
            ip: client.ip,
        };
        events::record(connection, Event::DeviceChanged, subject).await?;
        tracing::warn!(
            user_id = ?rotation.user,
            session_id = ?rotation.session,
            ip = ?client.ip,
            "refresh from another browser or OS: the access token asks for step-up"
        );
        Ok(recorded.downgraded())
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
        let key = Arc::clone(self.tokens.refresh_key());
        let secret = presented.secret().clone();
        let ancestry =
            tokio::task::spawn_blocking(move || key.ancestry(&secret, steps, &current_hash))
                .await
                .map_err(|e| ServiceError::internal("walking a refresh token's chain", e))?;
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
}
