//! A user's sessions: list them, revoke them.

use std::net::IpAddr;

use crate::ids::{SessionId, UserId};
use deadpool_postgres::Pool;

use super::Revocations;
use crate::error::ServiceError;
use crate::store::account_tokens::{self, TokenPurpose};
use crate::store::events::{self, Event, Subject};
use crate::store::sessions::{self, BulkScope, Revocation, RevokeReason, SessionRow};

/// Which sessions to revoke.
#[derive(Debug, Clone, Copy)]
pub enum RevokeScope {
    /// One session, for this reason.
    One {
        /// The session.
        session: SessionId,
        /// Why ([`RevokeReason::Logout`], [`RevokeReason::RevokedByUser`]).
        reason: RevokeReason,
    },
    /// Every live session but `keep` (all when `None`).
    AllBut {
        /// The session to keep.
        keep: Option<SessionId>,
        /// Why ([`RevokeReason::LogoutAll`], [`RevokeReason::RevokeOthers`]).
        reason: RevokeReason,
    },
}

/// Lists and revokes the sessions of a user.
#[derive(Clone)]
pub struct Sessions {
    pool: Pool,
    revocations: Revocations,
}

impl Sessions {
    /// Sessions in `pool`'s database.
    pub fn new(pool: Pool, revocations: Revocations) -> Self {
        Self { pool, revocations }
    }

    /// The user's live sessions, newest use first.
    pub async fn list(&self, user: UserId) -> Result<Vec<SessionRow>, ServiceError> {
        let client = self.pool.get().await?;
        sessions::list_live(&client, user).await
    }

    /// Marks `session` of `user` used now (at most every 30 s): its last use moves with
    /// use, such as listing the sessions, not only with refresh.
    pub async fn touch(&self, user: UserId, session: SessionId) -> Result<(), ServiceError> {
        sessions::touch(&self.pool.get().await?, user, session).await
    }

    /// Revokes one session of `user`, or every other one, or all of them; returns how
    /// many were live and are now revoked.
    pub async fn revoke(
        &self,
        user: UserId,
        scope: RevokeScope,
        ip: Option<IpAddr>,
    ) -> Result<u64, ServiceError> {
        let client = self.pool.get().await?;
        let (count, reason, session) = match scope {
            RevokeScope::One { session, reason } => {
                match sessions::revoke_one(&client, user, session, reason).await? {
                    Revocation::Revoked => {
                        self.revocations.committed(&[session], reason);
                        (1, reason, Some(session))
                    }
                    // Nothing changed, so nothing is recorded.
                    Revocation::AlreadyEnded => return Ok(0),
                    Revocation::NotFound => return Err(ServiceError::SessionNotFound),
                }
            }
            RevokeScope::AllBut { keep, reason } => {
                if reason == RevokeReason::LogoutAll {
                    // Signing out everywhere is what an owner does who fears someone has
                    // the account: a reset link in their hands must die too.
                    account_tokens::delete_for_user(&client, user, TokenPurpose::ResetPassword)
                        .await?;
                }
                let bulk_scope = BulkScope::User { user, except: keep };
                let bulk = sessions::revoke_before(&client, bulk_scope, reason).await?;
                self.revocations.committed_bulk(bulk_scope, bulk, reason);
                (bulk.count, reason, keep)
            }
        };
        if count == 0 {
            return Ok(0);
        }
        tracing::info!(user_id = %user, count, reason = reason.as_str(), "sessions revoked");
        events::record(
            &client,
            Event::SessionsRevoked { reason, count },
            Subject {
                user: Some(user),
                session,
                ip,
            },
        )
        .await?;
        Ok(count)
    }
}
