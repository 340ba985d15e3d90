//! The axum extractor: `AuthContext` as a handler argument, behind the Tower layer.
//!
//! ```
//! use session_guard::AuthContext;
//!
//! async fn me(auth: AuthContext) -> String {
//!     format!("user {} on session {}", auth.user_id(), auth.session_id())
//! }
//! # let _ = axum::routing::get(me);
//! ```

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::context::AuthContext;

/// The handler asked for an [`AuthContext`] on a route without the
/// [`SessionGuardLayer`](crate::SessionGuardLayer): a wiring mistake, answered with 500.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("SessionGuardLayer is not installed on this route")]
pub struct MissingAuthContext;

impl IntoResponse for MissingAuthContext {
    fn into_response(self) -> Response {
        tracing::error!("{self}");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(http::header::CONTENT_TYPE, "application/json")],
            r#"{"error":"internal_error","message":"authentication is not configured for this route"}"#,
        )
            .into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthContext {
    type Rejection = MissingAuthContext;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<AuthContext>()
            .cloned()
            .ok_or(MissingAuthContext)
    }
}
