//! The HTTP surface: routes, their OpenAPI description and the error body they share.

mod error;
mod health;
mod jwks;

use poem::error::NotFoundError;
use poem::{Endpoint, EndpointExt, Route};
use poem_openapi::OpenApiService;

pub use error::ErrorBody;

use crate::AppState;

/// The whole application: API routes, `/openapi.json` and the `/docs` UI.
pub fn app(state: AppState) -> impl Endpoint {
    let api = OpenApiService::new(
        (
            health::HealthApi::new(state.clone()),
            jwks::JwksApi::new(state),
        ),
        "Session Server",
        env!("CARGO_PKG_VERSION"),
    );
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    Route::new()
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .nest("/", api)
        .catch_error(|_: NotFoundError| async {
            ErrorBody::new("not_found", "no such route")
                .with_status(poem::http::StatusCode::NOT_FOUND)
        })
}
