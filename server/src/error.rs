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
    /// A wrong, used or replayed second-factor code.
    #[error("the code is wrong, or was used already")]
    InvalidCode,
    /// No such factor of this user.
    #[error("no such factor")]
    FactorNotFound,
    /// An `mfa_token` that is unknown, used, expired, voided by wrong codes or by a
    /// password change: one error.
    #[error("the mfa_token is invalid, used or expired; sign in again")]
    InvalidMfaToken,
    /// A passkey ceremony (`challenge_id`) that is unknown, used, expired or another's.
    #[error("the challenge is invalid, used or expired; ask for new options")]
    InvalidChallenge,
    /// A passkey's answer that does not verify, or a passkey this server does not know.
    #[error("the passkey's answer does not verify")]
    InvalidCredential,
    /// A login in cookie transport continued from another site than `PUBLIC_URL`'s
    /// (login CSRF): nothing was used up or opened.
    #[error("a sign-in in cookie transport must come from this site's own pages")]
    CrossSiteSignIn,
    /// Passkeys are off: `PUBLIC_URL` names no domain for a WebAuthn relying party.
    #[error("passkeys are not available on this server (its PUBLIC_URL names no domain)")]
    PasskeysUnavailable,
    /// Recovery codes for an account without a second factor.
    #[error("the account has no second factor")]
    NoFactor,
    /// The caller's proof of who they are is too old or too weak for this action: the
    /// layer's refusal, answered with 401 and its RFC 9470 challenge.
    #[error("the proof of who the user is is too old or too weak for this action")]
    InsufficientAuthentication(#[source] portcullis::AuthError),
    /// Over a rate limit; retry after this long.
    #[error("too many requests")]
    RateLimited(Duration),
    /// PostgreSQL did not answer or failed; the cause keeps its SQLSTATE code.
    #[error("the database failed")]
    Database(#[from] StoreError),
    /// A bug or a broken invariant; logged with its cause, answered with 500.
    #[error("internal error: {context}")]
    Internal {
        /// What was under way.
        context: &'static str,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ServiceError {
    /// A broken invariant or a failure that is nobody's input: `context` says what was
    /// under way, `source` what went wrong.
    pub fn internal(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Internal {
            context,
            source: source.into(),
        }
    }
}

/// Why PostgreSQL could not serve a query: its own error (with the SQLSTATE code, the
/// message and the connection's cause), or no connection from the pool in time.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL answered with an error, or the connection failed.
    #[error("PostgreSQL")]
    Postgres(#[from] tokio_postgres::Error),
    /// The pool had no connection to give within `DATABASE_TIMEOUT_SECONDS`, or could
    /// not open one.
    #[error("the connection pool")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement got no answer within `DATABASE_TIMEOUT_SECONDS` (a stalled server or
    /// network).
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

impl StoreError {
    /// PostgreSQL's SQLSTATE code, when PostgreSQL answered with an error.
    pub fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            Self::Postgres(e) | Self::Pool(deadpool_postgres::PoolError::Backend(e)) => e.code(),
            Self::Pool(_) | Self::TimedOut(_) => None,
        }
    }
}

impl From<tokio_postgres::Error> for ServiceError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Database(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for ServiceError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Database(e.into())
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
