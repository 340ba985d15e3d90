//! `/auth/verify-email*` and `/auth/password-reset*`: what the links of account mail do.
//! The pages those links open (`/account/verify`, `/account/reset`) post here.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ApiTags;
use super::authenticated::Authenticated;
use super::error::ApiError;
use super::responses::NoContent;
use super::text::{Email, Password, Text};
use crate::AppState;
use crate::accounts::{self, NewPassword, VerificationResent};
use crate::client_ip::ClientIp;
use crate::error::ServiceError;

pub(super) struct RecoveryApi {
    state: AppState,
}

impl RecoveryApi {
    pub(super) fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// The token from a verification link.
#[derive(Object)]
struct VerifyEmailRequest {
    /// The `token` of the link's query.
    token: String,
}

/// The address of the account whose password is forgotten.
#[derive(Object)]
struct PasswordResetRequest {
    /// The account's email.
    email: Text<Email>,
}

/// The token from a reset link, and the new password.
#[derive(Object)]
struct PasswordResetConfirm {
    /// The `token` of the link's query.
    token: String,
    /// 8 to 1024 characters.
    new_password: Text<Password>,
}

/// A mail is (or, for a reset, may be) on its way.
#[derive(Object)]
struct MailQueued {
    /// What happens next, for people.
    message: String,
}

/// The one answer to a reset request, whether or not an account has the address.
const RESET_REQUESTED: &str =
    "if an account has this address, a mail with a reset link is on its way";

#[derive(ApiResponse)]
enum ResetRequested {
    /// Taken: a mail goes out if an account has the address (the same answer either way).
    #[oai(status = 202)]
    Accepted(Json<MailQueued>),
}

#[derive(ApiResponse)]
enum VerificationResendResponse {
    /// A new verification mail is on its way; links of earlier ones stop working.
    #[oai(status = 202)]
    Queued(Json<MailQueued>),
    /// The address is verified already; nothing is sent.
    #[oai(status = 204)]
    AlreadyVerified,
}

#[OpenApi(tag = "ApiTags::Auth")]
impl RecoveryApi {
    /// Confirm the account's address with the token of a verification mail. A token
    /// works once; an unknown, used, replaced or expired one gets 400
    /// `invalid_verification_token`.
    #[oai(path = "/auth/verify-email", method = "post")]
    async fn verify_email(
        &self,
        ClientIp(ip): ClientIp,
        body: Json<VerifyEmailRequest>,
    ) -> Result<NoContent, ApiError> {
        self.state
            .limits
            .account_recovery(ip)
            .map_err(ServiceError::RateLimited)?;
        self.state
            .accounts
            .recovery
            .verify_email(&body.0.token, ip)
            .await?;
        Ok(NoContent::Done)
    }

    /// Send the signed-in user another verification mail (202), unless the address is
    /// verified already (204, nothing sent).
    #[oai(path = "/auth/verify-email/resend", method = "post")]
    async fn resend_verification(
        &self,
        ClientIp(ip): ClientIp,
        auth: Authenticated,
    ) -> Result<VerificationResendResponse, ApiError> {
        let limits = &self.state.limits;
        limits
            .account_recovery(ip)
            .map_err(ServiceError::RateLimited)?;
        let recovery = &self.state.accounts.recovery;
        let email = recovery.email_of(auth.user()).await?;
        limits
            .account_mail(&email)
            .map_err(ServiceError::RateLimited)?;
        Ok(match recovery.resend_verification(auth.user()).await? {
            VerificationResent::Queued => VerificationResendResponse::Queued(Json(MailQueued {
                message: "a new verification mail is on its way".to_owned(),
            })),
            VerificationResent::AlreadyVerified => VerificationResendResponse::AlreadyVerified,
        })
    }

    /// Ask for a password-reset mail. The answer is 202 with the same body, in the same
    /// time, whether or not an account has the address: the work is done after the
    /// answer. Only an account's owner gets a mail, with a link that works once, for
    /// `PASSWORD_RESET_TTL_SECONDS`; up to `PASSWORD_RESET_LIVE_LINKS` links work at once
    /// (a request by someone else does not void the owner's), and all of them die with a
    /// password change, a reset, or signing out everywhere. A mailbox gets at most
    /// `ACCOUNT_MAIL_PER_HOUR` and `ACCOUNT_MAIL_PER_DAY` account mails.
    #[oai(path = "/auth/password-reset", method = "post")]
    #[expect(
        clippy::unused_async,
        reason = "poem-openapi routes are async; the work runs after the answer"
    )]
    async fn request_password_reset(
        &self,
        ClientIp(ip): ClientIp,
        body: Json<PasswordResetRequest>,
    ) -> Result<ResetRequested, ApiError> {
        // Checked before any limit sees it, as at registration.
        let email = accounts::Email::parse(&body.0.email.into_inner())?;
        let limits = &self.state.limits;
        limits
            .account_recovery(ip)
            .map_err(ServiceError::RateLimited)?;
        limits
            .account_mail(email.as_str())
            .map_err(ServiceError::RateLimited)?;
        self.state.accounts.recovery.request_reset(email, ip)?;
        Ok(ResetRequested::Accepted(Json(MailQueued {
            message: RESET_REQUESTED.to_owned(),
        })))
    }

    /// Set a new password with the token of a reset mail. Every session of the account is
    /// signed out at once, and the token is used up. An unknown, used, replaced or
    /// expired token gets 400 `invalid_reset_token` and changes nothing.
    #[oai(path = "/auth/password-reset/confirm", method = "post")]
    async fn confirm_password_reset(
        &self,
        ClientIp(ip): ClientIp,
        body: Json<PasswordResetConfirm>,
    ) -> Result<NoContent, ApiError> {
        let Json(body) = body;
        // Checked before any limit sees it, as at registration.
        let new_password = NewPassword::parse(body.new_password.into_inner().into())?;
        self.state
            .limits
            .account_recovery(ip)
            .map_err(ServiceError::RateLimited)?;
        self.state
            .accounts
            .recovery
            .confirm_reset(&body.token, new_password, ip)
            .await?;
        Ok(NoContent::Done)
    }
}
