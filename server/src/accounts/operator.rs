//! What an operator does from the command line (`portcullis-server sessions …`): list a
//! user's sessions, revoke one of them, all of them, or every live session of every user.
//!
//! It goes through the same store as the routes. The database's trigger announces each
//! revocation on commit, so every running server refuses the revoked sessions' access
//! tokens within milliseconds; their refresh tokens fail from the commit on.

use std::time::Duration;

use crate::ids::{SessionId, UserId};
use deadpool_postgres::Pool;

use super::Email;
use crate::error::ServiceError;
use crate::store::events::{self, Event, OperatorScope, Subject};
use crate::store::sessions::{self, BulkScope, Revocation, RevokeReason, SessionRecord};
use crate::store::users;

/// Which sessions an operator revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    /// One session, which must belong to the account of `email`.
    Session {
        /// The account.
        email: Email,
        /// The session.
        session: SessionId,
    },
    /// Every live session of the account of `email`.
    User {
        /// The account.
        email: Email,
    },
    /// Every live session of every user: the response to a key compromise.
    AllUsers,
}

impl RevokeTarget {
    /// What the security event calls it.
    pub fn scope(&self) -> OperatorScope {
        match self {
            Self::Session { .. } => OperatorScope::Session,
            Self::User { .. } => OperatorScope::User,
            Self::AllUsers => OperatorScope::AllUsers,
        }
    }
}

/// Why an operator's command changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// No account has this email.
    #[error("no account has the email {0}")]
    UnknownEmail(String),
    /// The session is not one of this account's.
    #[error("the account {email} has no session {session}")]
    ForeignSession {
        /// The account's email.
        email: String,
        /// The session asked for.
        session: SessionId,
    },
    /// The database failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<tokio_postgres::Error> for OperatorError {
    fn from(error: tokio_postgres::Error) -> Self {
        ServiceError::from(error).into()
    }
}

impl From<deadpool_postgres::PoolError> for OperatorError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        ServiceError::from(error).into()
    }
}

/// How long one statement of `sessions revoke` may take, on both sides: `--all-users`
/// over a million live sessions takes tens of seconds (`DATABASE_TIMEOUT_SECONDS` bounds
/// requests, 5 s by default).
const BULK_REVOCATION_TIMEOUT: Duration = Duration::from_secs(600);

/// The operator's view of the sessions, over `pool`'s database.
pub struct Operator {
    pool: Pool,
}

impl Operator {
    /// Sessions in `pool`'s database.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Every session of the account of `email`, live or ended, newest first.
    pub async fn list(&self, email: &Email) -> Result<Vec<SessionRecord>, OperatorError> {
        let client = self.pool.get().await?;
        let user = user_of(&client, email).await?;
        Ok(sessions::list_all(&client, user).await?)
    }

    /// Revokes the live sessions `target` names, with reason [`RevokeReason::Operator`],
    /// and records it; returns how many were live and are now revoked (0: nothing
    /// changed, nothing recorded).
    pub async fn revoke(&self, target: &RevokeTarget) -> Result<u64, OperatorError> {
        // The bulk revocations update every session they end in one statement: far longer
        // than a request may take, so they have a bound of their own.
        crate::store::with_statement_bound(BULK_REVOCATION_TIMEOUT, self.revoke_now(target)).await
    }

    async fn revoke_now(&self, target: &RevokeTarget) -> Result<u64, OperatorError> {
        let reason = RevokeReason::Operator;
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let timeout_ms = BULK_REVOCATION_TIMEOUT.as_millis();
        transaction
            .batch_execute(&format!("SET LOCAL statement_timeout = {timeout_ms}"))
            .await?;
        let (count, subject) = match target {
            RevokeTarget::Session { email, session } => {
                let user = user_of(&transaction, email).await?;
                // The user before the session, in the order a login takes them.
                users::lock_hash(&transaction, user).await?;
                let subject = Subject {
                    user: Some(user),
                    session: Some(*session),
                    ip: None,
                };
                match sessions::revoke_one(&transaction, user, *session, reason).await? {
                    Revocation::Revoked => (1, subject),
                    Revocation::AlreadyEnded => (0, subject),
                    Revocation::NotFound => {
                        return Err(OperatorError::ForeignSession {
                            email: email.as_str().to_owned(),
                            session: *session,
                        });
                    }
                }
            }
            RevokeTarget::User { email } => {
                let user = user_of(&transaction, email).await?;
                users::lock_hash(&transaction, user).await?;
                let scope = BulkScope::User { user, except: None };
                let revoked = sessions::revoke_before(&transaction, scope, reason).await?;
                let subject = Subject {
                    user: Some(user),
                    ..Subject::default()
                };
                (revoked.count, subject)
            }
            RevokeTarget::AllUsers => {
                let revoked =
                    sessions::revoke_before(&transaction, BulkScope::Everyone, reason).await?;
                (revoked.count, Subject::default())
            }
        };
        if count == 0 {
            // Dropping the transaction rolls back the lock; nothing changed.
            return Ok(0);
        }
        let scope = target.scope();
        events::record(
            &transaction,
            Event::OperatorRevokedSessions { scope, count },
            subject,
        )
        .await?;
        transaction.commit().await?;
        tracing::warn!(scope = scope.as_str(), count, user_id = ?subject.user, session_id = ?subject.session, "operator revoked sessions");
        Ok(count)
    }
}

/// The id of the account of `email`.
async fn user_of(
    client: &impl deadpool_postgres::GenericClient,
    email: &Email,
) -> Result<UserId, OperatorError> {
    users::by_email(client, email.as_str())
        .await?
        .map(|account| account.id)
        .ok_or_else(|| OperatorError::UnknownEmail(email.as_str().to_owned()))
}
