//! The HTTP surface: routes, their OpenAPI description, request limits, and the error
//! body they all share.

mod account;
mod allow;
mod auth;
pub mod authenticated;
pub mod error;
mod factors;
mod health;
mod jwks;
mod metrics;
mod optional_json;
mod recovery;
pub mod request_span;
mod responses;
mod sessions;
pub mod text;
mod transport;

use std::sync::Arc;

use poem::http::header::CONTENT_LENGTH;
use poem::http::{HeaderValue, StatusCode};
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get};
use poem_openapi::{OpenApi, OpenApiService, Tags};

pub use error::ErrorBody;

use crate::{App, AppState, ConfigError};

#[derive(Tags)]
enum ApiTags {
    /// Accounts, login and token refresh.
    Auth,
    /// Signed-in sessions and devices.
    Sessions,
    /// Second factors (TOTP, passkeys, recovery codes) and step-up.
    Factors,
    /// Health and keys.
    Operations,
}

/// The OpenAPI service of every documented route: Portcullis's, then the application's.
fn api<Api: OpenApi + 'static>(
    state: &AppState,
    app: &App<Api>,
) -> Result<OpenApiService<impl OpenApi + use<Api>, ()>, ConfigError> {
    Ok(OpenApiService::new(
        (
            auth::AuthApi::new(state.clone()),
            factors::FactorsApi::new(state.clone()),
            recovery::RecoveryApi::new(state.clone()),
            sessions::SessionsApi::new(state.clone()),
            health::HealthApi::new(state.clone()),
            jwks::JwksApi::new(state.clone()),
            app.build_api(&state.services())?,
        ),
        app.openapi_title(),
        app.version(),
    )
    .description(
        "Register, sign in, refresh with rotation and theft detection, and see or revoke \
         the sessions of every device you are signed in on.",
    ))
}

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi_json<Api: OpenApi + 'static>(
    state: &AppState,
    app: &App<Api>,
) -> Result<String, ConfigError> {
    Ok(api(state, app)?.spec())
}

/// The whole application: API routes, `/openapi.json`, `/docs`, `/metrics`, each request
/// in its span.
pub fn app<Api: OpenApi + 'static>(
    state: &AppState,
    app: &App<Api>,
) -> Result<impl Endpoint + use<Api>, ConfigError> {
    let api = api(state, app)?;
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let mut allowed = allow::AllowedMethods::from_openapi(&api.spec()).with("/metrics", &["GET"]);
    for (path, _) in account::FILES {
        allowed = allowed.with(path, &["GET"]);
    }
    let allowed = Arc::new(allowed);
    let max_body = state.config.http.max_body_bytes;
    let timeout = state.config.http.request_timeout;
    let statements = state.config.database.timeout;
    let mut routes = account::routes(Route::new())
        .at("/openapi.json", spec)
        .at("/metrics", get(metrics::render));
    if state.config.http.openapi_ui {
        routes = routes.nest("/docs", docs);
    }
    Ok(routes
        .nest("/", api)
        .data(state.authenticator.clone())
        .data(state.metrics.clone())
        .data(state.liveness.clone())
        .data(state.config.http.trusted_proxies.clone())
        .data(state.config.browser.cookies.clone())
        .data(state.config.browser.public_origin.clone())
        .around(move |endpoint, request| limited(endpoint, request, max_body, timeout, statements))
        .around(move |endpoint, request| {
            allow::allow_on_405(endpoint, request, Arc::clone(&allowed))
        })
        .catch_all_error(
            |error| async move { request_span::keep_route(error, error::framework_error) },
        )
        .around(unframeable)
        .around(request_span::traced))
}

/// Every HTML response refuses to be framed, the Swagger UI's included: a page of another
/// origin (a sibling subdomain too) could otherwise show it under a decoy and have the
/// user click buttons that act with the session cookie.
///
/// And no response but the public key set is kept in a cache unless it says it may be:
/// an account's data, a token pair or a page must not come back from the browser's cache
/// (the Back button) after the session behind it ended.
async fn unframeable<E: Endpoint>(endpoint: Arc<E>, request: Request) -> poem::Result<Response> {
    let public_keys = request.uri().path() == "/.well-known/jwks.json";
    let mut response = endpoint.call(request).await?.into_response();
    if !public_keys
        && !response
            .headers()
            .contains_key(poem::http::header::CACHE_CONTROL)
    {
        response.headers_mut().insert(
            poem::http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
    }
    let html = response
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"));
    if html {
        let headers = response.headers_mut();
        headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
        let policy = headers
            .get("content-security-policy")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        match policy {
            Some(policy) if policy.contains("frame-ancestors") => {}
            Some(policy) => {
                if let Ok(value) =
                    HeaderValue::from_str(&format!("{policy}; frame-ancestors 'none'"))
                {
                    headers.insert("content-security-policy", value);
                }
            }
            None => {
                headers.insert(
                    "content-security-policy",
                    HeaderValue::from_static("frame-ancestors 'none'"),
                );
            }
        }
    }
    Ok(response)
}

/// Bounds each database statement of the request by `statements`, and refuses bodies
/// over `max_body` bytes (by `Content-Length`, or by reading at most that
/// much of a chunked body) and requests that take longer than `timeout`, reading a chunked
/// body included: a client trickling one must not hold its connection for ever.
async fn limited<E: Endpoint>(
    endpoint: Arc<E>,
    mut request: Request,
    max_body: usize,
    timeout: std::time::Duration,
    statements: std::time::Duration,
) -> poem::Result<Response> {
    let deadline = tokio::time::Instant::now() + timeout;
    let timed_out = || {
        ErrorBody::new("timeout", "the request took too long; retry")
            .with_status(StatusCode::SERVICE_UNAVAILABLE)
    };
    // The unread rest of the body is still on the connection: do not reuse it.
    let closing = |mut response: Response| {
        response.headers_mut().insert(
            poem::http::header::CONNECTION,
            poem::http::HeaderValue::from_static("close"),
        );
        response
    };
    let too_large = || {
        closing(
            ErrorBody::new(
                "payload_too_large",
                format!("the body may have at most {max_body} bytes"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE),
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    match declared {
        Some(length) if length > max_body as u64 => return Ok(too_large()),
        Some(_) => {}
        None => {
            let body = request.take_body();
            if !body.is_empty() {
                match tokio::time::timeout_at(deadline, body.into_bytes_limit(max_body)).await {
                    Ok(Ok(bytes)) => request.set_body(bytes),
                    Ok(Err(_)) => return Ok(too_large()),
                    Err(_) => return Ok(closing(timed_out())),
                }
            }
        }
    }
    // Each statement the request runs waits at most DATABASE_TIMEOUT_SECONDS.
    let call = crate::store::with_statement_bound(statements, endpoint.call(request));
    match tokio::time::timeout_at(deadline, call).await {
        Ok(result) => result.map(IntoResponse::into_response),
        Err(_) => Ok(timed_out()),
    }
}
