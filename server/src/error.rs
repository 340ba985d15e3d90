//! The one error type of the server's logic, mapped to HTTP once (in `routes::error`).

use std::time::Duration;

use crate::passwords::PasswordPolicyError;

/// Everything a request can fail with, beyond authentication (which `portcullis`
/// answers itself).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Not an email address.
    #[error("not a valid email address")]
    InvalidEmail,
    /// The password breaks the length rules.
    #[error(transparent)]
    Password(#[from] PasswordPolicyError),
    /// The device name is too long or holds control characters.
    #[error("the device name must be at most 128 printable characters")]
    InvalidDeviceName,
    /// An account with this email exists.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Unknown email or wrong password: deliberately one error.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// A signed-in user gave the wrong current password.
    #[error("the current password is wrong")]
    WrongCurrentPassword,
    /// Unknown, expired, revoked or reused refresh token: deliberately one error.
    #[error("the refresh token is invalid, expired or revoked")]
    InvalidRefreshToken,
    /// A verification token that is unknown, used, replaced or expired: one error.
    #[error("the verification link is invalid, used or expired; ask for a new one")]
    InvalidVerificationToken,
    /// A reset token that is unknown, used, replaced or expired: one error.
    #[error("the reset link is invalid, used or expired; ask for a new one")]
    InvalidResetToken,
    /// The right password, but login needs a verified address (`REQUIRE_VERIFIED_EMAIL`).
    #[error("confirm your email address first: open the link in the mail we sent")]
    EmailNotVerified,
    /// No such session of this user.
    #[error("no such session")]
    SessionNotFound,
    /// The caller's own session ended while its request was under way.
    #[error("the access token is invalid, expired or revoked")]
    SessionEnded,
    /// Over a rate limit; retry after this long.
    #[error("too many requests")]
    RateLimited(Duration),
    /// PostgreSQL did not answer or failed.
    #[error("database unavailable: {0}")]
    Database(String),
    /// A bug or a broken invariant; logged, answered with 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<tokio_postgres::Error> for ServiceError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Database(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for ServiceError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Database(e.to_string())
    }
}

/// An error and its causes, outermost first, each once: `a: b: c`.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // `#[error(transparent)]` and `{0}` wrappers repeat their cause's text.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
