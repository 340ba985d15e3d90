//! `/auth/*`: register, login, refresh, logout, logout-all, password change.

use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::authenticated::Authenticated;
use super::error::ApiError;
use super::text::{DeviceName, Email, Password, Text};
use super::{ApiTags, client_ip};
use crate::AppState;
use crate::auth::{RefreshClient, RevokeScope, TokenPair};
use crate::device;
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
}

/// A refresh token to rotate.
#[derive(Object)]
struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    refresh_token: String,
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
struct TokenPairBody {
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
}

impl From<TokenPair> for TokenPairBody {
    fn from(pair: TokenPair) -> Self {
        Self {
            access_token: pair.access_token,
            token_type: "Bearer".to_owned(),
            expires_in: pair.expires_in,
            refresh_token: pair.refresh_token.expose(),
            refresh_expires_in: pair.refresh_expires_in,
            session_id: pair.session_id,
        }
    }
}

#[derive(ApiResponse)]
enum RegisterResponse {
    /// The account was created.
    #[oai(status = 201)]
    Created(Json<Registered>),
}

#[derive(ApiResponse)]
enum TokenResponse {
    /// A new token pair.
    #[oai(status = 200)]
    Ok(Json<TokenPairBody>),
}

#[derive(ApiResponse)]
enum NoContent {
    /// Done.
    #[oai(status = 204)]
    Done,
}

#[OpenApi(tag = "ApiTags::Auth")]
impl AuthApi {
    /// Create an account.
    #[oai(path = "/auth/register", method = "post")]
    async fn register(
        &self,
        request: &Request,
        body: Json<RegisterRequest>,
    ) -> Result<RegisterResponse, ApiError> {
        let Json(body) = body;
        let ip = client_ip(request, &self.state.config.trusted_proxies);
        let user_id = self
            .state
            .accounts
            .register(&body.email.into_inner(), body.password.into_inner(), ip)
            .await?;
        Ok(RegisterResponse::Created(Json(Registered { user_id })))
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
        body: Json<LoginRequest>,
    ) -> Result<TokenResponse, ApiError> {
        let Json(body) = body;
        let user_agent = device::user_agent(request.headers());
        let device = Device {
            label: user_agent.as_deref().and_then(device::label),
            user_agent,
            name: body
                .device_name
                .map(|name| name.into_inner().trim().to_owned())
                .filter(|name| !name.is_empty()),
            ip: client_ip(request, &self.state.config.trusted_proxies),
        };
        let pair = self
            .state
            .accounts
            .login(
                &body.email,
                body.password,
                device,
                self.signed_in_as(request).await,
            )
            .await?;
        Ok(TokenResponse::Ok(Json(pair.into())))
    }

    /// Exchange a refresh token for a new pair. The old refresh token stops working: only
    /// the client that rotated it may retry it, briefly; anyone else presenting it, or
    /// anyone presenting an older one, revokes the whole session.
    #[oai(path = "/auth/refresh", method = "post")]
    async fn refresh(
        &self,
        request: &Request,
        body: Json<RefreshRequest>,
    ) -> Result<TokenResponse, ApiError> {
        let client = RefreshClient {
            ip: client_ip(request, &self.state.config.trusted_proxies),
            user_agent: device::user_agent(request.headers()),
        };
        let pair = self
            .state
            .accounts
            .refresh(&body.refresh_token, &client)
            .await?;
        Ok(TokenResponse::Ok(Json(pair.into())))
    }

    /// Sign out this session.
    #[oai(path = "/auth/logout", method = "post")]
    async fn logout(&self, request: &Request, auth: Authenticated) -> Result<NoContent, ApiError> {
        let scope = RevokeScope::One {
            session: auth.session()?,
            reason: RevokeReason::Logout,
        };
        self.revoke(request, &auth, scope).await
    }

    /// Sign out every session of this user, this one included.
    #[oai(path = "/auth/logout-all", method = "post")]
    async fn logout_all(
        &self,
        request: &Request,
        auth: Authenticated,
    ) -> Result<NoContent, ApiError> {
        let scope = RevokeScope::AllBut {
            keep: None,
            reason: RevokeReason::LogoutAll,
        };
        self.revoke(request, &auth, scope).await
    }

    /// Change the password; every other session of this user is signed out.
    #[oai(path = "/auth/password", method = "post")]
    async fn change_password(
        &self,
        request: &Request,
        auth: Authenticated,
        body: Json<PasswordChange>,
    ) -> Result<NoContent, ApiError> {
        let Json(body) = body;
        self.state
            .accounts
            .change_password(
                auth.user()?,
                auth.session()?,
                body.current_password,
                body.new_password.into_inner(),
                client_ip(request, &self.state.config.trusted_proxies),
            )
            .await?;
        Ok(NoContent::Done)
    }
}

impl AuthApi {
    /// The user of the live session whose access token the request carries, if any: a
    /// login may carry one to prove it comes from a client of the account. A missing or
    /// refused token is simply no proof.
    async fn signed_in_as(&self, request: &Request) -> Option<Uuid> {
        if !request
            .headers()
            .contains_key(poem::http::header::AUTHORIZATION)
        {
            return None;
        }
        let context = session_guard::poem::authenticate(&self.state.authenticator, request)
            .await
            .ok()?;
        Uuid::parse_str(context.user_id().as_str()).ok()
    }

    async fn revoke(
        &self,
        request: &Request,
        auth: &Authenticated,
        scope: RevokeScope,
    ) -> Result<NoContent, ApiError> {
        let ip = client_ip(request, &self.state.config.trusted_proxies);
        self.state.accounts.revoke(auth.user()?, scope, ip).await?;
        Ok(NoContent::Done)
    }
}
