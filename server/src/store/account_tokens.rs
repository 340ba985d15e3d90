//! `account_tokens`: the one-time tokens of verification and reset mails (migration V5).
//! Only their keyed hashes are stored.

use std::time::Duration;

use crate::ids::UserId;
use deadpool_postgres::GenericClient;

use super::bounded;
use super::sessions::interval;
use crate::error::ServiceError;

const DELETE_FOR_USER: &str = "DELETE FROM account_tokens WHERE user_id = $1 AND purpose = $2";
/// Deletes the user's tokens of the purpose but the newest `$3` unexpired ones.
const KEEP_NEWEST: &str = "DELETE FROM account_tokens \
     WHERE user_id = $1 AND purpose = $2 AND token_hash NOT IN ( \
       SELECT token_hash FROM account_tokens \
       WHERE user_id = $1 AND purpose = $2 AND expires_at > now() \
       ORDER BY created_at DESC LIMIT $3)";
const INSERT: &str = "INSERT INTO account_tokens (token_hash, user_id, purpose, expires_at) \
     VALUES ($1, $2, $3, now() + $4::text::interval)";
/// Uses the token up: only an unexpired one of the purpose, once.
const CONSUME: &str = "DELETE FROM account_tokens \
     WHERE token_hash = $1 AND purpose = $2 AND expires_at > now() RETURNING user_id";
/// Whose unexpired token of the purpose this is, without using it up.
const PEEK: &str = "SELECT user_id FROM account_tokens \
     WHERE token_hash = $1 AND purpose = $2 AND expires_at > now()";
/// Deletes up to `$1` expired tokens.
const PURGE_BATCH: &str = "DELETE FROM account_tokens WHERE token_hash IN ( \
       SELECT token_hash FROM account_tokens WHERE expires_at < now() LIMIT $1)";

/// What a token is for: the `purpose` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    /// Proves the address belongs to the account's owner.
    VerifyEmail,
    /// Sets a new password.
    ResetPassword,
}

impl TokenPurpose {
    /// The column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
        }
    }
}

/// Forgets every token of `purpose` of `user`: what a newer verification request does to
/// older links, and what a password change, a reset or signing out everywhere does to
/// reset links.
pub async fn delete_for_user(
    client: &impl GenericClient,
    user: UserId,
    purpose: TokenPurpose,
) -> Result<(), ServiceError> {
    let statement = bounded(client.prepare_cached(DELETE_FOR_USER)).await?;
    bounded(client.execute(&statement, &[&user, &purpose.as_str()])).await?;
    Ok(())
}

/// Forgets the tokens of `purpose` of `user` but the newest `keep` that still work: what
/// a newer reset request does, so that several links stay live (a request by someone
/// else does not void the owner's) and their number stays bounded.
pub async fn keep_newest(
    client: &impl GenericClient,
    user: UserId,
    purpose: TokenPurpose,
    keep: u32,
) -> Result<(), ServiceError> {
    let statement = bounded(client.prepare_cached(KEEP_NEWEST)).await?;
    bounded(client.execute(&statement, &[&user, &purpose.as_str(), &i64::from(keep)])).await?;
    Ok(())
}

/// Stores the hash of a new token of `purpose` for `user`, working for `ttl`.
pub async fn insert(
    client: &impl GenericClient,
    token_hash: &[u8],
    user: UserId,
    purpose: TokenPurpose,
    ttl: Duration,
) -> Result<(), ServiceError> {
    let statement = bounded(client.prepare_cached(INSERT)).await?;
    bounded(client.execute(
        &statement,
        &[&token_hash, &user, &purpose.as_str(), &interval(ttl)],
    ))
    .await?;
    Ok(())
}

/// Uses up the unexpired token of `purpose` whose hash is `token_hash`: its user, or
/// `None` when there is none (unknown, used, replaced or expired).
pub async fn consume(
    client: &impl GenericClient,
    token_hash: &[u8],
    purpose: TokenPurpose,
) -> Result<Option<UserId>, ServiceError> {
    let statement = bounded(client.prepare_cached(CONSUME)).await?;
    let row = bounded(client.query_opt(&statement, &[&token_hash, &purpose.as_str()])).await?;
    Ok(row.map(|row| row.get(0)))
}

/// The user of the unexpired token of `purpose` whose hash is `token_hash`, which stays
/// usable: a check before slow work, which [`consume`] then confirms.
pub async fn peek(
    client: &impl GenericClient,
    token_hash: &[u8],
    purpose: TokenPurpose,
) -> Result<Option<UserId>, ServiceError> {
    let statement = bounded(client.prepare_cached(PEEK)).await?;
    let row = bounded(client.query_opt(&statement, &[&token_hash, &purpose.as_str()])).await?;
    Ok(row.map(|row| row.get(0)))
}

/// Deletes one batch of expired tokens.
pub async fn purge_batch(client: &impl GenericClient, batch: i64) -> Result<u64, ServiceError> {
    let statement = bounded(client.prepare_cached(PURGE_BATCH)).await?;
    bounded(client.execute(&statement, &[&batch])).await
}
