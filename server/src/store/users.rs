//! `users`.

use crate::ids::UserId;
use deadpool_postgres::GenericClient;

use super::bounded;
use crate::error::ServiceError;

const INSERT: &str = "INSERT INTO users (email, password_hash) VALUES ($1, $2) \
                      ON CONFLICT ((lower(email))) DO NOTHING RETURNING id";
const BY_EMAIL: &str = "SELECT id, password_hash, email_verified_at IS NOT NULL FROM users \
                        WHERE lower(email) = lower($1)";
const PROFILE: &str = "SELECT email, email_verified_at IS NOT NULL FROM users WHERE id = $1";
/// Marks the address verified, keeping the first time it was.
const MARK_VERIFIED: &str = "UPDATE users SET email_verified_at = coalesce(email_verified_at, now()) \
                             WHERE id = $1 RETURNING email";
const BY_ID: &str = "SELECT email, password_hash FROM users WHERE id = $1";
/// The hash, with the user's row locked until the transaction ends.
const LOCK_HASH: &str = "SELECT password_hash FROM users WHERE id = $1 FOR NO KEY UPDATE";
const SET_PASSWORD: &str = "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1";

/// Creates an account; `None` when the email is taken.
pub async fn insert(
    client: &impl GenericClient,
    email: &str,
    password_hash: &str,
) -> Result<Option<UserId>, ServiceError> {
    let statement = bounded(client.prepare_cached(INSERT)).await?;
    let row = bounded(client.query_opt(&statement, &[&email, &password_hash])).await?;
    Ok(row.map(|row| row.get(0)))
}

/// An account as login finds it by email.
#[derive(Debug, Clone)]
pub struct Account {
    /// The user's id.
    pub id: UserId,
    /// The password hash.
    pub password_hash: String,
    /// Whether the owner verified the address.
    pub email_verified: bool,
}

/// The account of an email.
pub async fn by_email(
    client: &impl GenericClient,
    email: &str,
) -> Result<Option<Account>, ServiceError> {
    let statement = bounded(client.prepare_cached(BY_EMAIL)).await?;
    let row = bounded(client.query_opt(&statement, &[&email])).await?;
    Ok(row.map(|row| Account {
        id: row.get(0),
        password_hash: row.get(1),
        email_verified: row.get(2),
    }))
}

/// The account's email and whether it is verified, by id.
pub async fn profile(
    client: &impl GenericClient,
    id: UserId,
) -> Result<Option<(String, bool)>, ServiceError> {
    let statement = bounded(client.prepare_cached(PROFILE)).await?;
    let row = bounded(client.query_opt(&statement, &[&id])).await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

/// Marks the account's address verified; its email, or `None` when it is gone.
pub async fn mark_email_verified(
    client: &impl GenericClient,
    id: UserId,
) -> Result<Option<String>, ServiceError> {
    let statement = bounded(client.prepare_cached(MARK_VERIFIED)).await?;
    let row = bounded(client.query_opt(&statement, &[&id])).await?;
    Ok(row.map(|row| row.get(0)))
}

/// The account's email and password hash, by id.
pub async fn by_id(
    client: &impl GenericClient,
    id: UserId,
) -> Result<Option<(String, String)>, ServiceError> {
    let statement = bounded(client.prepare_cached(BY_ID)).await?;
    let row = bounded(client.query_opt(&statement, &[&id])).await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

/// The current password hash, with the user's row locked until the transaction ends: the
/// logins and password changes of one user take turns, so a password change waits for a
/// login under way (or, having committed first, is seen by it), and each login counts the
/// user's live sessions against the cap with no other login in between. Both lock the
/// user before any session, so neither waits for the other in the opposite order.
pub async fn lock_hash(
    client: &impl GenericClient,
    id: UserId,
) -> Result<Option<String>, ServiceError> {
    let statement = bounded(client.prepare_cached(LOCK_HASH)).await?;
    let row = bounded(client.query_opt(&statement, &[&id])).await?;
    Ok(row.map(|row| row.get(0)))
}

/// Replaces the password hash.
pub async fn set_password(
    client: &impl GenericClient,
    id: UserId,
    password_hash: &str,
) -> Result<(), ServiceError> {
    let statement = bounded(client.prepare_cached(SET_PASSWORD)).await?;
    bounded(client.execute(&statement, &[&id, &password_hash])).await?;
    Ok(())
}
