//! How a client holds its tokens (the JSON body, or cookies the browser keeps), the
//! responses that set or clear those cookies, and the CSRF refusal of cookie requests.

use poem::http::HeaderValue;
use poem::http::header::SET_COOKIE;
use poem::{IntoResponse, Request, Response};
use poem_openapi::registry::{MetaHeader, MetaResponses, Registry};
use poem_openapi::types::Type as _;
use poem_openapi::{ApiResponse, Enum};

use super::error::{ApiError, ErrorBody};
use crate::cookies::SessionCookies;
use crate::origin::{self, CsrfRefusal, PublicOrigin};
use poem_openapi::payload::Json;

/// Where a client keeps its tokens, chosen per sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Enum)]
#[oai(rename_all = "lowercase")]
pub(crate) enum Transport {
    /// Both tokens in the JSON body; the access token goes in `Authorization: Bearer`.
    #[default]
    Bearer,
    /// `HttpOnly` cookies the browser keeps and sends; no token in the body.
    Cookie,
}

impl Transport {
    /// The name the API and the stored login challenge use.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::Cookie => "cookie",
        }
    }

    /// The transport a stored name says (bearer for anything else).
    pub(crate) fn from_name(name: &str) -> Self {
        if name == "cookie" {
            Self::Cookie
        } else {
            Self::Bearer
        }
    }
}

/// The 403 for a cookie request that may be forged. Nothing has changed when it is sent.
pub(super) fn csrf_refused(refusal: CsrfRefusal) -> ApiError {
    metrics::counter!("session_auth_rejections_total", "reason" => "cross_site").increment(1);
    ApiError::Forbidden(Json(ErrorBody::new(
        "cross_site_request",
        refusal.message(),
    )))
}

/// Refuses `request` unless it shows that it comes from `public` (see [`origin::check`]).
pub(super) fn same_origin(request: &Request, public: &PublicOrigin) -> Result<(), ApiError> {
    origin::check(request.headers(), public).map_err(csrf_refused)
}

/// A response with `Set-Cookie` headers added: the cookies a sign-in sets or a sign-out
/// clears. Documented as an optional `Set-Cookie` header of the response.
pub(super) struct WithCookies<T> {
    response: T,
    cookies: Vec<cookie::Cookie<'static>>,
}

impl<T> WithCookies<T> {
    /// `response` with no cookies.
    pub(super) fn none(response: T) -> Self {
        Self {
            response,
            cookies: Vec::new(),
        }
    }

    /// `response` setting `cookies`.
    pub(super) fn new(response: T, cookies: Vec<cookie::Cookie<'static>>) -> Self {
        Self { response, cookies }
    }

    /// `response`, clearing the session cookies when the request came by `transport`
    /// cookie.
    pub(super) fn clearing(response: T, transport: Transport, cookies: &SessionCookies) -> Self {
        match transport {
            Transport::Bearer => Self::none(response),
            Transport::Cookie => Self::new(response, cookies.cleared()),
        }
    }
}

impl<T: ApiResponse> ApiResponse for WithCookies<T> {
    fn meta() -> MetaResponses {
        let mut meta = T::meta();
        for response in &mut meta.responses {
            response.headers.push(MetaHeader {
                name: "Set-Cookie".to_owned(),
                description: Some(
                    "In cookie transport: the session cookies set, or cleared with `Max-Age=0`."
                        .to_owned(),
                ),
                required: false,
                deprecated: false,
                schema: String::schema_ref(),
            });
        }
        meta
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: IntoResponse> IntoResponse for WithCookies<T> {
    fn into_response(self) -> Response {
        let mut response = self.response.into_response();
        for cookie in self.cookies {
            // Names are checked tokens and values base64url or JWT text: always valid.
            match HeaderValue::from_str(&cookie.to_string()) {
                Ok(value) => {
                    response.headers_mut().append(SET_COOKIE, value);
                }
                Err(e) => tracing::error!(error = %e, name = cookie.name(), "unwritable cookie"),
            }
        }
        response
    }
}
