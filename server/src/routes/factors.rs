//! `/auth/mfa/*`, `/auth/passkeys/*` and `/auth/step-up`: second factors (TOTP,
//! passkeys, recovery codes), finishing a login that needs one, signing in with a passkey,
//! and a new proof of who the user is on a signed-in session.
//!
//! Adding or removing a factor and new recovery codes are privileged
//! ([`require_privileged`]): they need a recent proof, and `aal2` when the account has a
//! factor, else 401 with the RFC 9470 challenge, which `POST /auth/step-up` answers.

use std::time::Duration;

use poem::Request;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::ApiTags;
use super::auth::{AuthApi, TokenResponse};
use super::authenticated::Authenticated;
use super::error::{ApiError, ErrorBody};
use super::optional_json::OptionalJson;
use super::responses::NoContent;
use super::text::{DeviceName, Text};
use super::transport::{self, Transport, WithCookies};
use crate::AppState;
use crate::accounts::{self, Code, Finished, Proof};
use crate::assurance::seconds;
use crate::client_ip::ClientIp;
use crate::device;
use crate::error::ServiceError;
use crate::store::factors::FactorRow;
use crate::store::sessions::Device;

/// Refuses the request unless the caller's proof is recent enough (and strong enough for
/// an account with a factor) for a privileged action: 401 with the RFC 9470 challenge.
pub(super) async fn require_privileged(
    state: &AppState,
    auth: &Authenticated,
) -> Result<(), ApiError> {
    state
        .accounts
        .factors
        .privileged(auth.user(), auth.context())
        .await
        .map_err(ApiError::from)
}

pub(super) struct FactorsApi {
    state: AppState,
}

impl FactorsApi {
    pub(super) fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// A pending TOTP factor: what the authenticator app needs. Shown once.
#[derive(Object)]
struct TotpEnrolment {
    /// The factor, to confirm with a first code.
    factor_id: Uuid,
    /// The shared secret, base32 (for typing into an app).
    secret: String,
    /// `otpauth://totp/…`: what the QR code holds.
    otpauth_uri: String,
    /// The QR code of `otpauth_uri`, an SVG document.
    qr_svg: String,
}

/// A code from the authenticator app.
#[derive(Object)]
struct CodeRequest {
    /// Six digits.
    code: String,
}

/// Recovery codes: each works once in place of a factor. Shown once; store them safely.
#[derive(Object)]
struct RecoveryCodes {
    /// The codes (`xxxxx-xxxxx`); empty when the account already had a factor.
    recovery_codes: Vec<String>,
}

/// A second factor of the account.
#[derive(Object)]
struct FactorBody {
    /// Its id.
    id: Uuid,
    /// `totp` or `passkey`.
    kind: String,
    /// The name it was given.
    name: String,
    /// When it was added (RFC 3339).
    created_at: String,
    /// When it last proved the user (RFC 3339), if ever.
    #[oai(nullable)]
    last_used_at: Option<String>,
}

/// The account's confirmed second factors, oldest first.
#[derive(Object)]
struct FactorList {
    /// The factors.
    factors: Vec<FactorBody>,
}

/// The second step of a login that answered `mfa_required`: the token and a TOTP code
/// (`factor_id` and `code`), or a recovery code.
#[derive(Object)]
struct VerifyRequest {
    /// From the `mfa_required` answer.
    mfa_token: String,
    /// A TOTP factor of the account (with `code`).
    factor_id: Option<Uuid>,
    /// The factor's current code.
    code: Option<String>,
    /// A recovery code, instead of `factor_id` and `code`.
    recovery_code: Option<String>,
}

/// A passkey ceremony begun: its id and the options for the browser.
#[derive(Object)]
struct PasskeyOptions {
    /// Send it back with the browser's answer.
    challenge_id: Uuid,
    /// `PublicKeyCredentialCreationOptions` or `…RequestOptions` as JSON (binary values in
    /// base64url), under `publicKey`: pass `options.publicKey` to
    /// `PublicKeyCredential.parseCreationOptionsFromJSON` (or `…RequestOptions…`).
    options: serde_json::Value,
}

/// The browser's answer to a registration ceremony.
#[derive(Object)]
struct PasskeyRegistration {
    /// From the options.
    challenge_id: Uuid,
    /// A name for the passkey ("Ada's phone").
    name: Option<Text<DeviceName>>,
    /// The `PublicKeyCredential` from `navigator.credentials.create`, as its `toJSON()`.
    credential: serde_json::Value,
}

/// The new passkey.
#[derive(Object)]
struct PasskeyRegistered {
    /// Its factor id.
    factor_id: Uuid,
}

/// Whose passkeys to ask for, if known.
#[derive(Object, Default)]
struct PasskeyOptionsRequest {
    /// The account's email: its passkeys are offered. Without it (or for an unknown
    /// address) the browser offers whichever passkey it holds for this site.
    email: Option<String>,
}

/// The browser's answer to a sign-in ceremony.
#[derive(Object)]
struct PasskeySignIn {
    /// From the options.
    challenge_id: Uuid,
    /// The `PublicKeyCredential` from `navigator.credentials.get`, as its `toJSON()`.
    credential: serde_json::Value,
    /// Finishes the login that answered `mfa_required` with this token, instead of
    /// signing in with the passkey alone (its transport and device are the login's).
    mfa_token: Option<String>,
    /// A name for this device, as at login.
    device_name: Option<Text<DeviceName>>,
    /// `bearer` (default) or `cookie`, as at login.
    transport: Option<Transport>,
}

/// A new proof of who the user is: the password, a TOTP code (`factor_id` and `code`),
/// a recovery code, or a passkey's answer (`challenge_id` and `credential`, from
/// `POST /auth/passkeys/authentication/options`).
#[derive(Object)]
struct StepUpRequest {
    /// The account's password.
    password: Option<String>,
    /// A TOTP factor (with `code`).
    factor_id: Option<Uuid>,
    /// Its current code.
    code: Option<String>,
    /// A recovery code.
    recovery_code: Option<String>,
    /// A passkey ceremony (with `credential`).
    challenge_id: Option<Uuid>,
    /// The passkey's answer.
    credential: Option<serde_json::Value>,
}

/// A new access token for the same session; the refresh token is unchanged. In cookie
/// transport it is also set as the access cookie.
#[derive(Object)]
struct SteppedUpBody {
    /// The access token.
    access_token: String,
    /// Always `Bearer`.
    token_type: String,
    /// Seconds until it expires.
    expires_in: u64,
    /// The level reached: `aal1` or `aal2`.
    aal: String,
    /// How (RFC 8176 values).
    amr: Vec<String>,
    /// When, in seconds since the Unix epoch.
    auth_time: u64,
}

#[derive(ApiResponse)]
enum EnrolmentResponse {
    /// The pending factor.
    #[oai(status = 200)]
    Ok(Json<TotpEnrolment>),
}

#[derive(ApiResponse)]
enum RecoveryCodesResponse {
    /// The codes.
    #[oai(status = 200)]
    Ok(Json<RecoveryCodes>),
}

#[derive(ApiResponse)]
enum FactorListResponse {
    /// The factors.
    #[oai(status = 200)]
    Ok(Json<FactorList>),
}

#[derive(ApiResponse)]
enum OptionsResponse {
    /// The ceremony's options.
    #[oai(status = 200)]
    Ok(Json<PasskeyOptions>),
}

#[derive(ApiResponse)]
enum RegisteredResponse {
    /// The passkey is a factor of the account.
    #[oai(status = 201)]
    Created(Json<PasskeyRegistered>),
}

#[derive(ApiResponse)]
enum SteppedUpResponse {
    /// The new access token.
    #[oai(status = 200)]
    Ok(Json<SteppedUpBody>),
}

#[OpenApi(tag = "ApiTags::Factors")]
impl FactorsApi {
    /// Begin setting up an authenticator app: a pending TOTP factor (RFC 6238: SHA-1, 6
    /// digits, 30 s). Privileged.
    #[oai(path = "/auth/mfa/totp", method = "post")]
    async fn enrol_totp(&self, auth: Authenticated) -> Result<EnrolmentResponse, ApiError> {
        require_privileged(&self.state, &auth).await?;
        let (factor_id, enrolment) = self.state.accounts.factors.enrol_totp(auth.user()).await?;
        Ok(EnrolmentResponse::Ok(Json(TotpEnrolment {
            factor_id,
            secret: enrolment.secret,
            otpauth_uri: enrolment.otpauth_uri,
            qr_svg: enrolment.qr_svg,
        })))
    }

    /// Confirm a pending TOTP factor with a first code. The account's first factor comes
    /// with ten recovery codes, shown this once. Privileged; the owner is mailed.
    #[oai(path = "/auth/mfa/totp/:factor_id/confirm", method = "post")]
    async fn confirm_totp(
        &self,
        ClientIp(ip): ClientIp,
        auth: Authenticated,
        /// The pending factor.
        factor_id: Path<String>,
        body: Json<CodeRequest>,
    ) -> Result<RecoveryCodesResponse, ApiError> {
        let factor: Uuid = factor_id
            .parse()
            .map_err(|_| ServiceError::FactorNotFound)?;
        require_privileged(&self.state, &auth).await?;
        let codes = self
            .state
            .accounts
            .factors
            .confirm_totp(auth.user(), auth.session(), factor, &body.0.code, ip)
            .await?;
        Ok(RecoveryCodesResponse::Ok(Json(RecoveryCodes {
            recovery_codes: codes,
        })))
    }

    /// The account's second factors.
    #[oai(path = "/auth/mfa/factors", method = "get")]
    async fn list(&self, auth: Authenticated) -> Result<FactorListResponse, ApiError> {
        let rows = self.state.accounts.factors.list(auth.user()).await?;
        Ok(FactorListResponse::Ok(Json(FactorList {
            factors: rows.into_iter().map(factor_body).collect(),
        })))
    }

    /// Remove a second factor. Removing the last one voids the recovery codes and signs
    /// out every other session. Privileged; the owner is mailed.
    #[oai(path = "/auth/mfa/factors/:id", method = "delete")]
    async fn remove(
        &self,
        ClientIp(ip): ClientIp,
        auth: Authenticated,
        /// The factor.
        id: Path<String>,
    ) -> Result<NoContent, ApiError> {
        let factor: Uuid = id.parse().map_err(|_| ServiceError::FactorNotFound)?;
        require_privileged(&self.state, &auth).await?;
        self.state
            .accounts
            .factors
            .remove(auth.user(), auth.session(), factor, ip)
            .await?;
        Ok(NoContent::Done)
    }

    /// New recovery codes; the old ones stop working. Privileged; the owner is mailed.
    #[oai(path = "/auth/mfa/recovery-codes", method = "post")]
    async fn recovery_codes(
        &self,
        ClientIp(ip): ClientIp,
        auth: Authenticated,
    ) -> Result<RecoveryCodesResponse, ApiError> {
        require_privileged(&self.state, &auth).await?;
        let codes = self
            .state
            .accounts
            .factors
            .regenerate_recovery_codes(auth.user(), auth.session(), ip)
            .await?;
        Ok(RecoveryCodesResponse::Ok(Json(RecoveryCodes {
            recovery_codes: codes,
        })))
    }

    /// Finish a login that answered `mfa_required`: its `mfa_token` with a TOTP code or a
    /// recovery code. The session opens at `aal2`, in the transport the login asked for.
    /// A wrong code is 400 `invalid_code`; the token takes `MFA_MAX_FAILURES_PER_TOKEN`
    /// of them, the account `MFA_MAX_FAILURES_PER_ACCOUNT` per 15 minutes (then 429); a
    /// TOTP code works once.
    #[oai(path = "/auth/mfa/verify", method = "post")]
    async fn verify(
        &self,
        request: &Request,
        body: Json<VerifyRequest>,
    ) -> Result<WithCookies<TokenResponse>, ApiError> {
        let Json(body) = body;
        let code = match (body.factor_id, body.code, body.recovery_code) {
            (Some(factor), Some(code), None) => Code::Totp { factor, code },
            (None, None, Some(code)) => Code::Recovery(code),
            _ => {
                return Err(bad_request("send factor_id and code, or recovery_code"));
            }
        };
        let same_site = self.same_site(request);
        let finished = self
            .state
            .accounts
            .factors
            .verify_login(&body.mfa_token, code, same_site)
            .await?;
        Ok(self.finished(finished))
    }

    /// Begin registering a passkey: the options for `navigator.credentials.create`
    /// (a discoverable credential with user verification). Privileged.
    #[oai(path = "/auth/passkeys/registration/options", method = "post")]
    async fn registration_options(&self, auth: Authenticated) -> Result<OptionsResponse, ApiError> {
        require_privileged(&self.state, &auth).await?;
        let (challenge_id, options) = self
            .state
            .accounts
            .factors
            .passkey_registration_options(auth.user())
            .await?;
        Ok(OptionsResponse::Ok(Json(PasskeyOptions {
            challenge_id,
            options,
        })))
    }

    /// Finish registering a passkey with the browser's answer. Privileged; the owner is
    /// mailed.
    #[oai(path = "/auth/passkeys/registration", method = "post")]
    async fn register(
        &self,
        ClientIp(ip): ClientIp,
        auth: Authenticated,
        body: Json<PasskeyRegistration>,
    ) -> Result<RegisteredResponse, ApiError> {
        let Json(body) = body;
        let credential: RegisterPublicKeyCredential =
            serde_json::from_value(body.credential).map_err(|_| ServiceError::InvalidCredential)?;
        require_privileged(&self.state, &auth).await?;
        let factor_id = self
            .state
            .accounts
            .factors
            .register_passkey(
                auth.user(),
                auth.session(),
                body.challenge_id,
                body.name
                    .map(Text::into_inner)
                    .filter(|name| !name.trim().is_empty()),
                &credential,
                ip,
            )
            .await?;
        Ok(RegisteredResponse::Created(Json(PasskeyRegistered {
            factor_id,
        })))
    }

    /// Begin signing in (or stepping up) with a passkey: the options for
    /// `navigator.credentials.get`. Limited per client IP, as registrations are.
    #[oai(path = "/auth/passkeys/authentication/options", method = "post")]
    async fn authentication_options(
        &self,
        ClientIp(ip): ClientIp,
        body: OptionalJson<PasskeyOptionsRequest>,
    ) -> Result<OptionsResponse, ApiError> {
        let body = body.0.unwrap_or_default();
        let email = match body.email.as_deref() {
            Some(text) => Some(accounts::Email::parse(text)?),
            None => None,
        };
        self.state
            .limits
            .register(ip)
            .map_err(ServiceError::RateLimited)?;
        let (challenge_id, options) = self
            .state
            .accounts
            .factors
            .passkey_authentication_options(email.as_ref().map(accounts::Email::as_str))
            .await?;
        Ok(OptionsResponse::Ok(Json(PasskeyOptions {
            challenge_id,
            options,
        })))
    }

    /// Sign in with a passkey: alone (user verification makes it `aal2`), or finishing a
    /// login that answered `mfa_required` when `mfa_token` is given.
    #[oai(path = "/auth/passkeys/authentication", method = "post")]
    async fn authenticate(
        &self,
        request: &Request,
        ClientIp(ip): ClientIp,
        body: Json<PasskeySignIn>,
    ) -> Result<WithCookies<TokenResponse>, ApiError> {
        let Json(body) = body;
        let transport = body.transport.unwrap_or_default();
        if transport == Transport::Cookie {
            transport::same_origin(request, &self.state.config.browser.public_origin)?;
        }
        let credential: PublicKeyCredential =
            serde_json::from_value(body.credential).map_err(|_| ServiceError::InvalidCredential)?;
        let name = body.device_name.map(Text::into_inner);
        let device = request_device(request, ip, accounts::device_name(name.as_deref())?);
        let finished = self
            .state
            .accounts
            .factors
            .sign_in_with_passkey(
                body.challenge_id,
                &credential,
                body.mfa_token.as_deref(),
                device,
                (transport.as_str(), self.same_site(request)),
            )
            .await?;
        Ok(self.finished(finished))
    }

    /// Prove again who the signed-in user is (the RFC 9470 challenge's answer): a new
    /// access token for the same session with a fresh `auth_time` and the level reached
    /// (`aal2` by a code or a passkey, `aal1` by the password). The refresh token is not
    /// touched. Wrong passwords count as wrong current passwords of a password change,
    /// wrong codes as wrong codes of a login.
    #[oai(path = "/auth/step-up", method = "post")]
    async fn step_up(
        &self,
        request: &Request,
        ClientIp(ip): ClientIp,
        auth: Authenticated,
        body: Json<StepUpRequest>,
    ) -> Result<WithCookies<SteppedUpResponse>, ApiError> {
        let Json(body) = body;
        let proof = match body {
            StepUpRequest {
                password: Some(password),
                factor_id: None,
                code: None,
                recovery_code: None,
                challenge_id: None,
                credential: None,
            } => Proof::Password(password.into()),
            StepUpRequest {
                password: None,
                factor_id: Some(factor),
                code: Some(code),
                recovery_code: None,
                challenge_id: None,
                credential: None,
            } => Proof::Code(Code::Totp { factor, code }),
            StepUpRequest {
                password: None,
                factor_id: None,
                code: None,
                recovery_code: Some(code),
                challenge_id: None,
                credential: None,
            } => Proof::Code(Code::Recovery(code)),
            StepUpRequest {
                password: None,
                factor_id: None,
                code: None,
                recovery_code: None,
                challenge_id: Some(ceremony),
                credential: Some(credential),
            } => Proof::Passkey {
                ceremony,
                credential: Box::new(
                    serde_json::from_value(credential)
                        .map_err(|_| ServiceError::InvalidCredential)?,
                ),
            },
            _ => {
                return Err(bad_request(
                    "send one of: password; factor_id and code; recovery_code; \
                     challenge_id and credential",
                ));
            }
        };
        let attempt = match proof {
            Proof::Password(_) => Some(
                self.state
                    .limits
                    .password_change(auth.user(), auth.session())
                    .map_err(ServiceError::RateLimited)?,
            ),
            _ => None,
        };
        let device = request_device(request, ip, None);
        let stepped = self
            .state
            .accounts
            .factors
            .step_up(auth.user(), auth.session(), proof, device)
            .await;
        let stepped = match stepped {
            Ok(stepped) => stepped,
            Err(refusal) => {
                if refusal.counts
                    && let Some(attempt) = attempt
                {
                    attempt.failed();
                }
                return Err(refusal.error.into());
            }
        };
        let body = SteppedUpBody {
            access_token: stepped.access_token.clone(),
            token_type: "Bearer".to_owned(),
            expires_in: stepped.expires_in,
            aal: stepped.assurance.aal.as_str().to_owned(),
            amr: stepped
                .assurance
                .amr_values()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            auth_time: seconds(stepped.assurance.auth_time),
        };
        let response = SteppedUpResponse::Ok(Json(body));
        Ok(match auth.transport() {
            Transport::Bearer => WithCookies::none(response),
            Transport::Cookie => {
                let cookie = self.state.config.browser.cookies.access(
                    stepped.access_token,
                    Duration::from_secs(stepped.expires_in),
                );
                WithCookies::new(response, vec![cookie])
            }
        })
    }
}

impl FactorsApi {
    /// The answer to a finished sign-in, in the transport it asked for.
    fn finished(&self, finished: Finished) -> WithCookies<TokenResponse> {
        let transport = Transport::from_name(&finished.transport);
        AuthApi::new(self.state.clone()).signed_in(finished.pair, transport)
    }

    /// Whether `request` comes from `PUBLIC_URL`'s own pages: a sign-in that sets
    /// cookies must (login CSRF), and is refused before anything is used up otherwise.
    fn same_site(&self, request: &Request) -> bool {
        // Asked, not refused: a bearer continuation need not come from our pages.
        crate::origin::check(request.headers(), &self.state.config.browser.public_origin).is_ok()
    }
}

/// The device of a sign-in made by `request`.
fn request_device(request: &Request, ip: Option<std::net::IpAddr>, name: Option<String>) -> Device {
    let user_agent = device::user_agent(request.headers());
    Device {
        label: user_agent.as_deref().and_then(device::label),
        user_agent,
        name,
        ip,
    }
}

fn bad_request(message: &str) -> ApiError {
    ApiError::BadRequest(Json(ErrorBody::new("invalid_request", message)))
}

fn factor_body(row: FactorRow) -> FactorBody {
    let rfc3339 = |at| humantime::format_rfc3339_millis(at).to_string();
    FactorBody {
        id: row.id,
        kind: row.kind.as_str().to_owned(),
        name: row.name,
        created_at: rfc3339(row.created_at),
        last_used_at: row.last_used_at.map(rfc3339),
    }
}
