//! `GET /metrics`: Prometheus text format.
//!
//! Counters: `session_logins_total{outcome}`, `session_refreshes_total{outcome}`,
//! `session_auth_rejections_total{reason}`, `session_revocations_total{reason}`; gauges
//! from the liveness cache: `session_liveness_cache_hit_ratio`, its hits and misses, and
//! whether the revocation listener is connected.

use metrics_exporter_prometheus::PrometheusHandle;
use poem::web::Data;
use poem::{IntoResponse, Response, handler};
use portcullis::PostgresLiveness;

/// Renders the registry, refreshing the liveness gauges first.
#[handler]
#[allow(
    clippy::needless_pass_by_value,
    reason = "poem hands extractors over by value"
)]
pub(super) fn render(
    handle: Data<&PrometheusHandle>,
    liveness: Data<&PostgresLiveness>,
) -> Response {
    let stats = liveness.stats();
    let total = stats.hits + stats.misses;
    #[allow(clippy::cast_precision_loss, reason = "a ratio needs no exact counts")]
    let ratio = if total == 0 {
        0.0
    } else {
        stats.hits as f64 / total as f64
    };
    metrics::gauge!("session_liveness_cache_hit_ratio").set(ratio);
    #[allow(clippy::cast_precision_loss, reason = "gauges are floats")]
    {
        metrics::gauge!("session_liveness_cache_hits").set(stats.hits as f64);
        metrics::gauge!("session_liveness_cache_misses").set(stats.misses as f64);
    }
    metrics::gauge!("session_liveness_listener_connected").set(if stats.listener_connected {
        1.0
    } else {
        0.0
    });
    handle
        .render()
        .with_content_type("text/plain; version=0.0.4")
        .into_response()
}
