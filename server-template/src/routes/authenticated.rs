//! The bearer security scheme of the API: authenticates through `session-guard`'s Poem
//! adapter and documents itself in the OpenAPI document.

use poem::{IntoResponse as _, Request, RequestBody};
use poem_openapi::payload::Json;
use poem_openapi::registry::{MetaSecurityScheme, Registry};
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use session_guard::{AuthContext, Authenticator};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};

const SCHEME: &str = "BearerAuth";

/// The authenticated caller of a protected operation: its user and session, as the
/// UUIDs `session-guard` parsed from the token.
#[derive(Debug, Clone, Copy)]
pub(super) struct Authenticated {
    user: Uuid,
    session: Uuid,
}

impl Authenticated {
    /// The user.
    pub(super) fn user(self) -> Uuid {
        self.user
    }

    /// The session.
    pub(super) fn session(self) -> Uuid {
        self.session
    }

    /// The caller of `context`. Our own tokens always carry UUIDs, and liveness already
    /// vouched for them (the store refuses anything else), so this refuses only what
    /// could not have got this far.
    fn from_context(context: &AuthContext) -> Result<Self, ApiError> {
        match (context.user_uuid(), context.session_uuid()) {
            (Some(user), Some(session)) => Ok(Self { user, session }),
            _ => Err(ApiError::Unauthorized(Json(ErrorBody::new(
                "invalid_token",
                "the access token is invalid, expired or revoked",
            )))),
        }
    }
}

impl<'a> ApiExtractor<'a> for Authenticated {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            SCHEME,
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
    }

    fn security_schemes() -> Vec<&'static str> {
        vec![SCHEME]
    }

    async fn from_request(
        request: &'a Request,
        _body: &mut RequestBody,
        _options: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let auth = request
            .data::<Authenticator>()
            .expect("the app installs the Authenticator as data");
        match session_guard::poem::authenticate(auth, request).await {
            Ok(context) => Self::from_context(&context)
                .map_err(|error| poem::Error::from_response(error.into_response())),
            Err(error) => {
                metrics::counter!("session_auth_rejections_total", "reason" => error.reason())
                    .increment(1);
                Err(poem::Error::from_response(session_guard::poem::rejection(
                    &error, request,
                )))
            }
        }
    }
}
