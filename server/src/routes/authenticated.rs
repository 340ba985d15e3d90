//! The security schemes of the API, a bearer token or the access cookie of the cookie
//! transport: authenticates through `portcullis`'s Poem adapter and documents both in
//! the OpenAPI document. A cookie request that changes state must pass the CSRF check
//! first ([`crate::origin::check`]).

use crate::ids::{SessionId, UserId};
use poem::{IntoResponse as _, Request, RequestBody};
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaSecurityScheme, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use portcullis::{AuthContext, AuthError, Authenticator, TokenSource};

use super::error::{ApiError, ErrorBody};
use super::transport::{self, Transport};
use crate::assurance::Assurance;
use crate::cookies::SessionCookies;
use crate::origin::{self, PublicOrigin};

const BEARER_SCHEME: &str = "BearerAuth";
const COOKIE_SCHEME: &str = "CookieAuth";

/// The authenticated caller of a protected operation: its user and session, as the
/// UUIDs `portcullis` parsed from the token, and the token's [`AuthContext`].
///
/// Take it as an argument of a poem-openapi operation and the operation is protected: the
/// guard has checked the token and the session's liveness before the handler runs, and the
/// OpenAPI document lists the bearer and cookie schemes for it.
#[derive(Debug, Clone)]
pub struct Authenticated {
    user: UserId,
    session: SessionId,
    transport: Transport,
    context: AuthContext,
    assurance: Assurance,
}

impl Authenticated {
    /// The user.
    pub fn user(&self) -> UserId {
        self.user
    }

    /// The session.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// What the guard verified: the token's claims and ids.
    pub fn context(&self) -> &AuthContext {
        &self.context
    }

    /// How and when the user proved who they are, as the access token says (`aal`, `amr`,
    /// `auth_time`).
    pub fn assurance(&self) -> &Assurance {
        &self.assurance
    }

    /// How the access token came: a bearer header or the access cookie.
    pub(crate) fn transport(&self) -> Transport {
        self.transport
    }

    /// The caller of `context`. Our own tokens always carry UUIDs, and liveness already
    /// vouched for them (the store refuses anything else), so this refuses only what
    /// could not have got this far.
    fn from_context(
        context: &AuthContext,
        transport: Transport,
        assurance: Assurance,
    ) -> Result<Self, ApiError> {
        match (context.user_uuid(), context.session_uuid()) {
            (Some(user), Some(session)) => Ok(Self {
                user: UserId::from_uuid(user),
                session: SessionId::from_uuid(session),
                transport,
                context: context.clone(),
                assurance,
            }),
            _ => Err(ApiError::Unauthorized(
                Json(ErrorBody::new(
                    "invalid_token",
                    "the access token is invalid, expired or revoked",
                )),
                None,
            )),
        }
    }
}

impl<'a> ApiExtractor<'a> for Authenticated {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            BEARER_SCHEME,
            MetaSecurityScheme {
                ty: "http",
                description: Some(
                    "An access token from /auth/login or /auth/refresh: \
                     `Authorization: Bearer <access_token>`.",
                ),
                name: None,
                key_in: None,
                scheme: Some("bearer"),
                bearer_format: Some("JWT"),
                flows: None,
                openid_connect_url: None,
            },
        );
        registry.create_security_scheme(
            COOKIE_SCHEME,
            MetaSecurityScheme {
                ty: "apiKey",
                description: Some(
                    "The access cookie a login with `\"transport\": \"cookie\"` sets \
                     (`HttpOnly; Secure; SameSite=Strict; Path=/`; its name is \
                     `ACCESS_COOKIE_NAME`, `__Host-sg_access` by default). A request it \
                     authenticates that changes state must carry an `Origin` naming the \
                     server's `PUBLIC_URL`, or `Sec-Fetch-Site: same-origin`, else 403 \
                     `cross_site_request`.",
                ),
                name: Some(crate::config::settings::ACCESS_COOKIE_NAME_DEFAULT),
                key_in: Some("cookie"),
                scheme: None,
                bearer_format: None,
                flows: None,
                openid_connect_url: None,
            },
        );
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![BEARER_SCHEME, COOKIE_SCHEME]
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut RequestBody,
        _options: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let auth = request
            .data::<Authenticator>()
            .expect("the app installs the Authenticator as data");
        let cookies = request
            .data::<SessionCookies>()
            .expect("the app installs the session cookies as data");
        let public = request
            .data::<PublicOrigin>()
            .expect("the app installs the public origin as data");
        let refuse = |error: ApiError| poem::Error::from_response(error.into_response());
        // The authenticator reads the cookie exactly when no bearer token was offered.
        let by_cookie = matches!(
            TokenSource::Bearer.extract(request.headers()),
            Err(AuthError::MissingToken)
        ) && cookies.has_access_cookie(request.headers());
        let transport = if by_cookie {
            if origin::changes_state(request.method()) {
                transport::same_origin(request, public).map_err(refuse)?;
            }
            Transport::Cookie
        } else {
            Transport::Bearer
        };
        match portcullis::poem::authenticate(auth, request).await {
            Ok(context) => {
                let assurance = Assurance::of_token(&context);
                Self::from_context(&context, transport, assurance).map_err(refuse)
            }
            Err(error) => {
                metrics::counter!("session_auth_rejections_total", "reason" => error.reason())
                    .increment(1);
                Err(poem::Error::from_response(portcullis::poem::rejection(
                    &error, request,
                )))
            }
        }
    }
}
