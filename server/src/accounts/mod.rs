//! The account and session logic behind the routes, one job per type:
//!
//! - [`Credentials`] (`credentials.rs`): accounts and passwords: register, login, password
//!   change, and the one spelling of an email ([`Email`]).
//! - [`Sessions`] (`sessions.rs`): a user's sessions: list them, revoke one or all but one.
//! - [`Refresh`] (`refresh.rs`): refresh-token rotation and the check of stale tokens.
//! - [`SignIn`] (`sign_in.rs`): what follows proof of identity: a new session and its
//!   token pair, under the session cap, with the sign-in alert.
//! - [`Tokens`] (`tokens.rs`): the token pair a login or a refresh hands out.
//! - [`Revocations`] (`revocations.rs`): what follows a committed revocation: this
//!   instance forgets the sessions, the metrics count them.
//! - [`Operator`] (`operator.rs`): the operator's command line: list a user's sessions,
//!   revoke one, all of a user's, or every user's.
//! - [`Factors`] (`factors.rs`): second factors (TOTP, passkeys, recovery codes), the
//!   login that waits for one, passkey sign-in, step-up, and the rule of privileged routes.
//! - [`Recovery`] (`recovery.rs`): what mailed links do: verify an address, reset a
//!   password.
//! - [`AccountMail`] (`mail.rs`): the mails the others queue in their transactions.
//!
//! Rate limits are not applied here but by the routes, through
//! [`RateLimits`](crate::rate_limit::RateLimits), before they call in. Routes translate
//! HTTP to these calls and their errors back.

mod credentials;
mod factors;
mod mail;
mod operator;
mod recovery;
mod refresh;
mod revocations;
mod sessions;
mod sign_in;
mod tokens;

use std::time::Duration;

use deadpool_postgres::Pool;
use portcullis::PostgresLiveness;

pub use credentials::{Credentials, Email, LoginOutcome, NewPassword, device_name};
pub use factors::{
    Code, FAILURE_WINDOW, FactorParts, Factors, Finished, LoginResult, Proof, SecondFactorNeeded,
    SteppedUp,
};
pub use mail::{AccountMail, LinkLifetimes, MailLimits, Queued};
pub use operator::{Operator, OperatorError, RevokeTarget};
pub use recovery::{Recovery, VerificationResent};
pub use refresh::{Refresh, RefreshClient};
pub use revocations::Revocations;
pub use sessions::{RevokeScope, Sessions};
pub use sign_in::SignIn;
pub use tokens::{TokenPair, Tokens};

use std::sync::Arc;

use crate::config::FactorSettings;
use crate::error::ServiceError;
use crate::factors::passkeys::RelyingParty;
use crate::passwords::PasswordHasher;

/// The rules of sessions, refresh tokens and credentials, read once from the
/// configuration.
#[derive(Debug, Clone, Copy)]
pub struct AccountPolicy {
    /// A session not refreshed for this long ends.
    pub idle_timeout: Duration,
    /// A session ends this long after login, whatever happens.
    pub absolute_lifetime: Duration,
    /// How long the previous refresh token may be retried by the client that rotated it.
    pub refresh_grace: Duration,
    /// How many such retries one rotation allows.
    pub refresh_max_retries: u32,
    /// How recently a session of an account must have been used from a client IP for
    /// that client to be known to the account (zero: never by IP).
    pub known_ip_window: Duration,
    /// Wrong current passwords after which the session giving them is revoked (0: never).
    pub password_change_max_failures: u32,
    /// Most live sessions per user; a login beyond it revokes the least recently used
    /// (0: no cap).
    pub max_sessions_per_user: u32,
    /// Whether login needs a verified address.
    pub require_verified_email: bool,
    /// Whether a login from a new device and network mails the owner.
    pub new_signin_alerts: bool,
    /// Whether new accounts may have an address on a single-label domain.
    pub allow_single_label_email_domains: bool,
}

/// Everything behind the account routes.
#[derive(Clone)]
pub struct Accounts {
    /// Open a session for a user whose identity was verified.
    pub sign_in: SignIn,
    /// Register, login, password change.
    pub credentials: Credentials,
    /// List and revoke sessions.
    pub sessions: Sessions,
    /// Rotate refresh tokens.
    pub refresh: Refresh,
    /// Verify addresses, reset passwords.
    pub recovery: Recovery,
    /// Second factors, passkey sign-in, step-up.
    pub factors: Factors,
}

impl Accounts {
    /// The account logic over `pool`; revocations are also forgotten at once by
    /// `liveness`.
    pub fn new(
        pool: Pool,
        liveness: PostgresLiveness,
        passwords: PasswordHasher,
        tokens: Tokens,
        mail: AccountMail,
        policy: AccountPolicy,
        factor_settings: (FactorSettings, Option<RelyingParty>),
    ) -> Self {
        let (factor_settings, rp) = factor_settings;
        let revocations = Revocations::new(liveness);
        let sign_in = SignIn::new(tokens.clone(), revocations.clone(), mail.clone(), policy);
        let step_up_on_device_change = factor_settings.step_up_on_device_change;
        let factors = Factors::new(FactorParts {
            pool: pool.clone(),
            key: Arc::clone(tokens.refresh_key()),
            rp,
            passwords: passwords.clone(),
            sign_in: sign_in.clone(),
            tokens: tokens.clone(),
            revocations: revocations.clone(),
            mail: mail.clone(),
            settings: factor_settings,
            require_verified_email: policy.require_verified_email,
        });
        Self {
            recovery: Recovery::new(
                pool.clone(),
                passwords.clone(),
                mail.clone(),
                revocations.clone(),
            ),
            credentials: Credentials::new(
                pool.clone(),
                passwords,
                sign_in.clone(),
                factors.clone(),
                revocations.clone(),
                mail,
                policy,
            ),
            sign_in,
            sessions: Sessions::new(pool.clone(), revocations.clone()),
            refresh: Refresh::new(pool, tokens, revocations, policy, step_up_on_device_change),
            factors,
        }
    }
}

/// Why a login or a password change did not go through, and whether it counts against
/// the caller's failure budget: a wrong password or an unknown email does; bad input,
/// the database or a lost race does not.
#[derive(Debug)]
pub struct Refusal {
    /// What to answer.
    pub error: ServiceError,
    /// Whether it was a failed guess, which keeps the rate-limit tokens it took.
    pub counts: bool,
}

impl Refusal {
    /// A failed guess, answered with `error` (the wrong credentials, or what kept the
    /// failure from being recorded).
    fn failed_guess(error: ServiceError) -> Self {
        Self {
            error,
            counts: true,
        }
    }
}

impl From<ServiceError> for Refusal {
    fn from(error: ServiceError) -> Self {
        Self {
            error,
            counts: false,
        }
    }
}

impl From<tokio_postgres::Error> for Refusal {
    fn from(error: tokio_postgres::Error) -> Self {
        ServiceError::from(error).into()
    }
}

impl From<deadpool_postgres::PoolError> for Refusal {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        ServiceError::from(error).into()
    }
}
