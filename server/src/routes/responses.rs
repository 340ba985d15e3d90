//! Responses several routes share.

use poem_openapi::ApiResponse;

/// Done, with nothing to answer.
#[derive(ApiResponse)]
pub(super) enum NoContent {
    /// Done.
    #[oai(status = 204)]
    Done,
}
