//! The one error body every route answers with: `{"error": code, "message": text}`.

use poem::IntoResponse;
use poem::http::StatusCode;
use poem_openapi::Object;

/// An error: a stable `snake_case` code for programs and a sentence for people.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// Stable machine-readable code, such as `database_unavailable`.
    pub error: String,
    /// Human-readable explanation.
    pub message: String,
}

impl ErrorBody {
    /// An error body with the given code and message.
    pub fn new(error: &str, message: impl Into<String>) -> Self {
        Self {
            error: error.to_owned(),
            message: message.into(),
        }
    }

    /// This body as a JSON response with `status`.
    pub fn with_status(self, status: StatusCode) -> poem::Response {
        (
            status,
            poem::web::Json(serde_json::json!({
                "error": self.error,
                "message": self.message,
            })),
        )
            .into_response()
    }
}
