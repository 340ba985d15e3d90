//! `/auth/*`: register, login, refresh, logout, logout-all, password change.

use std::time::Duration;

use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Union};
use uuid::Uuid;

use super::ApiTags;
use super::authenticated::Authenticated;
use super::error::{ApiError, ErrorBody, FactorRef};
use super::optional_json::OptionalJson;
use super::responses::NoContent;
use super::text::{DeviceName, Email, Password, Text};
use super::transport::{self, Transport, WithCookies};
use crate::AppState;
use crate::accounts::{
    self, LoginOutcome, LoginResult, NewPassword, RefreshClient, RevokeScope, SecondFactorNeeded,
    TokenPair,
};
use crate::client_ip::ClientIp;
use crate::device;
use crate::error::ServiceError;
use crate::ids::UserId;
use crate::store::sessions::{Device, RevokeReason};

pub(super) struct AuthApi {
    state: AppState,
}

impl AuthApi {
    pub(super) fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// Email and password of a new account.
#[derive(Object)]
struct RegisterRequest {
    /// An email address; trimmed and lower-cased.
    email: Text<Email>,
    /// 8 to 1024 characters.
    password: Text<Password>,
}

/// The new account.
#[derive(Object)]
struct Registered {
    /// The account's id.
    user_id: Uuid,
}

/// Credentials, and optionally a name for this device.
#[derive(Object)]
struct LoginRequest {
    /// The account's email.
    email: String,
    /// The account's password.
    password: String,
    /// A name the user gives this device ("Ada's laptop"), up to 128 characters.
    device_name: Option<Text<DeviceName>>,
    /// `bearer` (the default): both tokens in the body. `cookie`: both in `HttpOnly`
    /// cookies and none in the body; the request must then come from the server's own
    /// origin (`Origin` or `Sec-Fetch-Site: same-origin`), else 403.
    transport: Option<Transport>,
}

/// A refresh token to rotate.
#[derive(Object)]
struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    refresh_token: String,
    /// The session's `client_binding` from the login. Optional; a client that sends it
    /// may retry a refresh whose answer it lost from another network, and a copy of the
    /// refresh token without it cannot retry at all.
    client_binding: Option<String>,
}

/// What a refresh body may hold: [`RefreshRequest`], whose token only a request carrying
/// the refresh cookie may leave out. The document shows the stricter [`RefreshRequest`],
/// since without the cookie a body lacking the token is refused with 400.
#[derive(Object)]
struct RefreshBody {
    refresh_token: Option<String>,
    client_binding: Option<String>,
}

/// The current and the new password.
#[derive(Object)]
struct PasswordChange {
    /// The password in use now.
    current_password: String,
    /// 8 to 1024 characters.
    new_password: Text<Password>,
}

/// An access token and the refresh token that renews it.
#[derive(Object)]
pub(super) struct TokenPairBody {
    /// A short-lived JWT for `Authorization: Bearer`.
    access_token: String,
    /// Always `Bearer`.
    token_type: String,
    /// Seconds until the access token expires.
    expires_in: u64,
    /// Opaque; send it to `/auth/refresh` for a new pair. Each one works once.
    refresh_token: String,
    /// Seconds until the refresh token stops working unless used.
    refresh_expires_in: u64,
    /// The session both tokens belong to.
    session_id: Uuid,
    /// A secret of this session's client: send it with each refresh as `client_binding`.
    /// It stays the same for the session's life.
    client_binding: String,
}

impl From<TokenPair> for TokenPairBody {
    fn from(pair: TokenPair) -> Self {
        Self {
            access_token: pair.access_token,
            token_type: "Bearer".to_owned(),
            expires_in: pair.expires_in,
            refresh_token: pair.refresh_token.expose(),
            refresh_expires_in: pair.refresh_expires_in,
            session_id: pair.session_id.as_uuid(),
            client_binding: pair.client_binding.expose(),
        }
    }
}

/// A session in cookie transport: its tokens are in the cookies this response sets.
#[derive(Object)]
pub(super) struct CookieSessionBody {
    /// The session the cookies belong to.
    session_id: Uuid,
    /// Seconds until the access token (and its cookie) expires.
    expires_in: u64,
    /// Seconds until the refresh token (and its cookie) stops working unless used.
    refresh_expires_in: u64,
}

/// What a sign-in or refresh answers: the token pair, or in cookie transport the
/// session's metadata.
#[derive(Union)]
pub(super) enum SignedIn {
    /// Bearer transport.
    Tokens(TokenPairBody),
    /// Cookie transport.
    Cookie(CookieSessionBody),
}

#[derive(ApiResponse)]
enum RegisterResponse {
    /// The account was created.
    #[oai(status = 201)]
    Created(Json<Registered>),
}

#[derive(ApiResponse)]
pub(super) enum TokenResponse {
    /// A new token pair, or in cookie transport the session, its tokens in `Set-Cookie`.
    #[oai(status = 200)]
    Ok(Json<SignedIn>),
}

#[OpenApi(tag = "ApiTags::Auth")]
impl AuthApi {
    /// Create an account.
    #[oai(path = "/auth/register", method = "post")]
    async fn register(
        &self,
        ClientIp(ip): ClientIp,
        body: Json<RegisterRequest>,
    ) -> Result<RegisterResponse, ApiError> {
        let Json(body) = body;
        // Checked before any limit sees it: a bad email costs nothing and stores nothing.
        let email = accounts::Email::parse(&body.email.into_inner())?;
        if email.has_single_label_domain()
            && !self.state.config.accounts.allow_single_label_email_domains
        {
            return Err(ServiceError::InvalidEmail.into());
        }
        self.state
            .limits
            .register(ip)
            .map_err(ServiceError::RateLimited)?;
        let password = NewPassword::parse(body.password.into_inner().into())?;
        let user_id = self
            .state
            .accounts
            .credentials
            .register(&email, password)
            .await?;
        Ok(RegisterResponse::Created(Json(Registered {
            user_id: user_id.as_uuid(),
        })))
    }

    /// Sign in: opens a session for this device and returns its token pair.
    ///
    /// An unknown email and a wrong password get the same answer in about the same time;
    /// an email that is not a valid address (too long, invisible characters, mixed
    /// scripts) gets 400 `invalid_email` at once, as at registration. Failed logins are
    /// limited per account; once someone else's guesses reach that limit, the account's
    /// owner still signs in from a client IP that used the account recently, or by sending
    /// an access token of one of its live sessions as `Authorization: Bearer`.
    #[oai(path = "/auth/login", method = "post")]
    async fn login(
        &self,
        request: &Request,
        ClientIp(ip): ClientIp,
        body: Json<LoginRequest>,
    ) -> Result<WithCookies<TokenResponse>, ApiError> {
        let Json(body) = body;
        let transport = body.transport.unwrap_or_default();
        if transport == Transport::Cookie {
            // Login CSRF: another site must not sign the browser in to an account.
            transport::same_origin(request, &self.state.config.browser.public_origin)?;
        }
        // Checked before any limit sees them: bad input costs nothing and stores nothing.
        let email = accounts::Email::parse(&body.email)?;
        let name = body.device_name.map(Text::into_inner);
        let name = accounts::device_name(name.as_deref())?;
        let user_agent = device::user_agent(request.headers());
        let device = Device {
            label: user_agent.as_deref().and_then(device::label),
            user_agent,
            name,
            ip,
        };
        let rate_limited = |wait| {
            LoginOutcome::RateLimited.count();
            ServiceError::RateLimited(wait)
        };
        let credentials = &self.state.accounts.credentials;
        // Each attempt takes its tokens before the password is verified, so parallel
        // guesses cannot overshoot; they come back unless the attempt failed.
        let attempt = self
            .state
            .limits
            .login(email.as_str(), ip)
            .map_err(rate_limited)?;
        if let Some(wait) = attempt.account_exhausted() {
            // Someone else's guesses spent the account's budget: only a client known to
            // the account goes on, bound all the same by its own account-and-IP budget.
            let signed_in_as = self.signed_in_as(request).await;
            if !credentials
                .is_known_client(&email, signed_in_as, ip)
                .await?
            {
                attempt.refused();
                return Err(rate_limited(wait).into());
            }
            tracing::info!(
                ip = ?ip,
                "account login limit reached; a known client may still sign in"
            );
        }
        match credentials
            .login(&email, body.password.into(), device, transport.as_str())
            .await
        {
            Ok(LoginResult::SignedIn(pair)) => Ok(self.signed_in(pair, transport)),
            Ok(LoginResult::SecondFactorNeeded(needed)) => Err(mfa_required(needed)),
            Err(refusal) => {
                if refusal.counts {
                    attempt.failed();
                }
                Err(refusal.error.into())
            }
        }
    }

    /// Exchange a refresh token for a new pair. The old refresh token stops working: only
    /// the client that rotated it may retry it, briefly; anyone else presenting it, or
    /// anyone presenting an older one, revokes the whole session.
    ///
    /// With no body, or no `refresh_token` in it, the refresh cookie is used (cookie
    /// transport): the cookies are set anew. Such a request must come from the server's
    /// own origin, else 403, and carry the binding cookie: only the refresh cookie of the
    /// session it names is used (another host under the same parent domain can plant a
    /// refresh cookie, never the binding cookie). Without them, `refresh_token` is
    /// required.
    #[oai(path = "/auth/refresh", method = "post")]
    async fn refresh(
        &self,
        request: &Request,
        ClientIp(ip): ClientIp,
        body: OptionalJson<RefreshBody, RefreshRequest>,
    ) -> Result<WithCookies<TokenResponse>, ApiError> {
        let cookies = &self.state.config.browser.cookies;
        let binding_cookie = cookies.binding_value(request.headers());
        // A refresh cookie counts only as the one whose session the binding cookie names:
        // with no binding cookie (a signed-out browser) a planted one signs nobody in.
        let cookie = binding_cookie.and_then(|binding| {
            let tokens = cookies.refresh_tokens(request.headers());
            self.state
                .accounts
                .refresh
                .bound_token(&tokens, binding)
                .map(|token| (token, binding))
        });
        let (token, binding, transport) = match (body.0, cookie) {
            (
                Some(RefreshBody {
                    refresh_token: Some(token),
                    client_binding,
                }),
                _,
            ) => (token, client_binding, Transport::Bearer),
            (_, Some((token, binding))) => {
                transport::same_origin(request, &self.state.config.browser.public_origin)?;
                (
                    token.to_owned(),
                    Some(binding.to_owned()),
                    Transport::Cookie,
                )
            }
            // A body without the token, as before the cookie transport: a bad request.
            (Some(_), None) => {
                return Err(ApiError::BadRequest(Json(ErrorBody::new(
                    "invalid_request",
                    "refresh_token is required unless the refresh cookie is sent",
                ))));
            }
            // Nothing at all: a cookie client whose refresh cookie is gone.
            (None, None) => return Err(ServiceError::InvalidRefreshToken.into()),
        };
        self.state
            .limits
            .refresh(ip)
            .map_err(ServiceError::RateLimited)?;
        let client = RefreshClient {
            ip,
            user_agent: device::user_agent(request.headers()),
            binding,
        };
        let pair = self.state.accounts.refresh.rotate(&token, &client).await?;
        Ok(self.signed_in(pair, transport))
    }

    /// Sign out this session.
    #[oai(path = "/auth/logout", method = "post")]
    async fn logout(
        &self,
        ClientIp(ip): ClientIp,
        auth: Authenticated,
    ) -> Result<WithCookies<NoContent>, ApiError> {
        let scope = RevokeScope::One {
            session: auth.session(),
            reason: RevokeReason::Logout,
        };
        self.revoke(auth, scope, ip).await
    }

    /// Sign out every session of this user, this one included. Needs a recent proof of
    /// who the user is (and `aal2` for an account with a second factor), else 401 with
    /// the RFC 9470 challenge.
    #[oai(path = "/auth/logout-all", method = "post")]
    async fn logout_all(
        &self,
        ClientIp(ip): ClientIp,
        auth: Authenticated,
    ) -> Result<WithCookies<NoContent>, ApiError> {
        super::factors::require_privileged(&self.state, &auth).await?;
        let scope = RevokeScope::AllBut {
            keep: None,
            reason: RevokeReason::LogoutAll,
        };
        self.revoke(auth, scope, ip).await
    }

    /// Change the password; every other session of this user is signed out. In cookie
    /// transport this browser is signed out too (its session revoked, its cookies
    /// cleared), to sign in again with the new password. Needs a recent proof of who the
    /// user is (and `aal2` for an account with a second factor), else 401 with the RFC
    /// 9470 challenge.
    #[oai(path = "/auth/password", method = "post")]
    async fn change_password(
        &self,
        ClientIp(ip): ClientIp,
        auth: Authenticated,
        body: Json<PasswordChange>,
    ) -> Result<WithCookies<NoContent>, ApiError> {
        let Json(body) = body;
        // Checked before any limit sees it, as at registration.
        let new_password = NewPassword::parse(body.new_password.into_inner().into())?;
        super::factors::require_privileged(&self.state, &auth).await?;
        // As for login, each attempt takes a token per session and per user before
        // verifying and gets them back unless the current password was wrong.
        let attempt = self
            .state
            .limits
            .password_change(auth.user(), auth.session())
            .map_err(ServiceError::RateLimited)?;
        let changed = self
            .state
            .accounts
            .credentials
            .change_password(
                auth.user(),
                auth.session(),
                body.current_password.into(),
                new_password,
                ip,
            )
            .await;
        match changed {
            Ok(()) if auth.transport() == Transport::Cookie => {
                let scope = RevokeScope::One {
                    session: auth.session(),
                    reason: RevokeReason::Logout,
                };
                self.revoke(auth, scope, ip).await
            }
            Ok(()) => Ok(WithCookies::none(NoContent::Done)),
            Err(refusal) => {
                if refusal.counts {
                    attempt.failed();
                }
                Err(refusal.error.into())
            }
        }
    }
}

impl AuthApi {
    /// The user of the live session whose access token the request carries, if any: a
    /// login may carry one to prove it comes from a client of the account. A missing or
    /// refused token is simply no proof.
    async fn signed_in_as(&self, request: &Request) -> Option<UserId> {
        if !request
            .headers()
            .contains_key(poem::http::header::AUTHORIZATION)
        {
            return None;
        }
        portcullis::poem::authenticate(&self.state.authenticator, request)
            .await
            .ok()?
            .user_uuid()
            .map(UserId::from_uuid)
    }

    /// Revokes `scope` and answers 204, clearing the cookies of a cookie request.
    async fn revoke(
        &self,
        auth: Authenticated,
        scope: RevokeScope,
        ip: Option<std::net::IpAddr>,
    ) -> Result<WithCookies<NoContent>, ApiError> {
        self.state
            .accounts
            .sessions
            .revoke(auth.user(), scope, ip)
            .await?;
        Ok(WithCookies::clearing(
            NoContent::Done,
            auth.transport(),
            &self.state.config.browser.cookies,
        ))
    }

    /// The answer to a sign-in or refresh: the pair in the body, or in cookie transport
    /// the pair in cookies and the session's metadata in the body.
    pub(super) fn signed_in(
        &self,
        pair: TokenPair,
        transport: Transport,
    ) -> WithCookies<TokenResponse> {
        match transport {
            Transport::Bearer => {
                WithCookies::none(TokenResponse::Ok(Json(SignedIn::Tokens(pair.into()))))
            }
            Transport::Cookie => {
                let cookies = &self.state.config.browser.cookies;
                let refresh_age = Duration::from_secs(pair.refresh_expires_in);
                let set = vec![
                    cookies.access(pair.access_token, Duration::from_secs(pair.expires_in)),
                    cookies.refresh(pair.refresh_token.expose(), refresh_age),
                    cookies.binding(pair.client_binding.expose(), refresh_age),
                ];
                let body = CookieSessionBody {
                    session_id: pair.session_id.as_uuid(),
                    expires_in: pair.expires_in,
                    refresh_expires_in: pair.refresh_expires_in,
                };
                WithCookies::new(TokenResponse::Ok(Json(SignedIn::Cookie(body))), set)
            }
        }
    }
}

/// The 403 of a login whose password checked out for an account with a second factor:
/// the `mfa_token` that continues it, and the factors it may continue with.
fn mfa_required(needed: SecondFactorNeeded) -> ApiError {
    let mut body = ErrorBody::new(
        "mfa_required",
        "a second factor is required: send a code or use a passkey with the mfa_token",
    );
    body.mfa_token = Some(needed.mfa_token);
    body.factors = Some(
        needed
            .factors
            .into_iter()
            .map(|(id, kind)| FactorRef {
                id,
                kind: kind.as_str().to_owned(),
            })
            .collect(),
    );
    ApiError::Forbidden(Json(body))
}
