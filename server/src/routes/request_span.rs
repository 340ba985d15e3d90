//! One span per request (method and path), and one line when its response is ready
//! (status, matched route, latency until then), both at `debug` under the target
//! [`TARGET`].
//!
//! `debug`, as tower-http's `TraceLayer` does by default: at the default filter (`info`)
//! a line per request would be most of the log under load, and formatting and writing
//! it would cost every refresh. `RUST_LOG=info,portcullis_server::request=debug` turns them
//! on. When the filter leaves them off, nothing is formatted or timed: the span macro
//! evaluates its fields only when enabled, and a disabled span skips the rest. Failures
//! are logged where they happen (`routes::error`), at `warn` and `error`.

use std::sync::Arc;
use std::time::Instant;

use poem::{Endpoint, PathPattern, Request, Response};
use tracing::Instrument as _;

/// The target of the request span and its line, for `RUST_LOG` directives.
pub const TARGET: &str = "portcullis_server::request";

/// Calls `endpoint` inside the request's span and logs how it ended.
pub(super) async fn traced<E: Endpoint>(
    endpoint: Arc<E>,
    request: Request,
) -> poem::Result<Response> {
    let span = tracing::debug_span!(
        target: TARGET,
        "request",
        method = %request.method(),
        path = %request.uri().path(),
    );
    if span.is_disabled() {
        return Ok(endpoint.get_response(request).await);
    }
    let started = Instant::now();
    let response = endpoint
        .get_response(request)
        .instrument(span.clone())
        .await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        tracing::debug!(
            target: TARGET,
            status = response.status().as_u16(),
            route = route(&response).map(tracing::field::display),
            latency_ms,
            "response",
        );
    });
    Ok(response)
}

/// The route pattern the request matched; none for an unknown path, where all that
/// matched is the prefix of a nested router.
fn route(response: &Response) -> Option<&str> {
    response
        .data::<PathPattern>()
        .map(|pattern| &*pattern.0)
        .filter(|pattern| !pattern.is_empty())
}

/// `into_response(error)`, keeping the route the request matched for its line: a
/// response built from an error (unparsable JSON, say) starts without it.
pub(super) fn keep_route(
    error: poem::Error,
    into_response: impl FnOnce(poem::Error) -> Response,
) -> Response {
    let route = error.data::<PathPattern>().cloned();
    let mut response = into_response(error);
    if let Some(route) = route {
        response.set_data(route);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_filter_names_the_target() {
        assert!(
            crate::config::settings::RUST_LOG
                .meaning
                .contains(&format!("{TARGET}=debug"))
        );
    }
}
