//! `GET /health`: 200 while the database answers, 503 while it does not.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::ErrorBody;
use crate::AppState;
use crate::database;

pub(super) struct HealthApi {
    state: AppState,
}

impl HealthApi {
    pub(super) fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// The server and its database answer.
#[derive(Debug, Object)]
struct Healthy {
    /// Always `ok`.
    status: String,
}

#[derive(ApiResponse)]
enum HealthResponse {
    /// The server and its database answer.
    #[oai(status = 200)]
    Healthy(Json<Healthy>),
    /// The database does not answer; the server keeps running and recovers with it.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

#[OpenApi(tag = "super::ApiTags::Operations")]
impl HealthApi {
    /// Health check for load balancers and orchestrators.
    #[oai(path = "/health", method = "get")]
    async fn health(&self) -> HealthResponse {
        match database::ping(&self.state.pool, self.state.config.database.timeout).await {
            Ok(()) => HealthResponse::Healthy(Json(Healthy {
                status: "ok".to_owned(),
            })),
            Err(reason) => {
                tracing::warn!(%reason, "health check: database unavailable");
                HealthResponse::Unavailable(Json(ErrorBody::new(
                    "database_unavailable",
                    "the database does not answer",
                )))
            }
        }
    }
}
