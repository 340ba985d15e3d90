//! `GET /.well-known/jwks.json`: the public halves of the verification keys.

use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use crate::AppState;

pub(super) struct JwksApi {
    state: AppState,
}

impl JwksApi {
    pub(super) fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// A JSON Web Key Set (RFC 7517).
#[derive(Debug, Object)]
struct Jwks {
    /// Every key that verifies access tokens, the signing one first.
    keys: Vec<serde_json::Value>,
}

#[OpenApi(tag = "super::ApiTags::Operations")]
impl JwksApi {
    /// The public keys that verify access tokens, for services that check them.
    #[oai(path = "/.well-known/jwks.json", method = "get")]
    #[allow(clippy::unused_async, reason = "poem-openapi operations are async")]
    async fn jwks(&self) -> Json<Jwks> {
        let keys = self
            .state
            .keys
            .all()
            .iter()
            .filter_map(|key| serde_json::to_value(key.public_jwk()).ok())
            .collect();
        Json(Jwks { keys })
    }
}
