//! The framework-agnostic core: headers in, [`AuthContext`] or [`AuthError`] out.
//!
//! Every adapter (the Tower layer, the Poem middleware) is a thin shell around
//! [`Authenticator`].

use std::sync::Arc;

use http::HeaderMap;

use crate::context::{AuthContext, Claims};
use crate::error::AuthError;
use crate::extract::TokenSource;
use crate::liveness::{DynLivenessCheck, Liveness, LivenessCheck};
use crate::token_cache::{DEFAULT_TOKEN_CACHE_CAPACITY, VerifiedTokenCache};
use crate::verify::TokenVerifier;

/// What to do when the liveness store cannot answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnavailablePolicy {
    /// Refuse with 503 (the default): a session that cannot be checked is not trusted.
    #[default]
    FailClosed,
    /// Let a validly signed token through. Trades revocation for availability.
    FailOpen,
}

/// Verifies the access token of a request and checks that its session is live.
///
/// Cheap to clone: clones share the verifier, the caches and the store.
#[derive(Clone)]
pub struct Authenticator {
    verifier: Arc<TokenVerifier>,
    tokens: VerifiedTokenCache,
    liveness: Arc<dyn DynLivenessCheck>,
    source: TokenSource,
    unavailable: UnavailablePolicy,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("verifier", &self.verifier)
            .field("source", &self.source)
            .field("unavailable", &self.unavailable)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator that verifies with `verifier` and checks sessions in `liveness`.
    pub fn new(verifier: TokenVerifier, liveness: impl LivenessCheck) -> Self {
        Self {
            verifier: Arc::new(verifier),
            tokens: VerifiedTokenCache::new(DEFAULT_TOKEN_CACHE_CAPACITY),
            liveness: Arc::new(liveness),
            source: TokenSource::Bearer,
            unavailable: UnavailablePolicy::FailClosed,
        }
    }

    /// Where the token is read from (default `Authorization: Bearer`).
    #[must_use]
    pub fn with_token_source(mut self, source: TokenSource) -> Self {
        self.source = source;
        self
    }

    /// How many verified tokens are remembered (default 100,000).
    #[must_use]
    pub fn with_token_cache_capacity(mut self, capacity: u64) -> Self {
        self.tokens = VerifiedTokenCache::new(capacity);
        self
    }

    /// What happens when liveness cannot be decided (default: fail closed, 503).
    #[must_use]
    pub fn with_unavailable_policy(mut self, policy: UnavailablePolicy) -> Self {
        self.unavailable = policy;
        self
    }

    /// Authenticates a request by its headers.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<AuthContext, AuthError> {
        let token = self.source.extract(headers)?;
        let context = match self.tokens.get(token) {
            Some(claims) => AuthContext::new(claims),
            None => {
                let claims = Arc::new(self.verifier.verify(token).await?);
                self.tokens.insert(token, Arc::clone(&claims));
                AuthContext::new(claims)
            }
        };
        let liveness = match self.liveness.check_cached(&context) {
            Some(liveness) => liveness,
            None => match self.liveness.check(&context).await {
                Ok(liveness) => liveness,
                Err(e) if self.unavailable == UnavailablePolicy::FailOpen => {
                    tracing::warn!(error = %e, "liveness unavailable; failing open");
                    Liveness::Live
                }
                Err(e) => return Err(AuthError::Unavailable(e)),
            },
        };
        Self::admit(context, liveness)
    }

    /// The answer when it is known without awaiting anything: the token was verified
    /// before and the store has the session in memory. `None` means "call
    /// [`authenticate`](Self::authenticate)". Lets adapters skip boxing a future on the
    /// hot path.
    pub fn authenticate_cached(
        &self,
        headers: &HeaderMap,
    ) -> Option<Result<AuthContext, AuthError>> {
        let token = match self.source.extract(headers) {
            Ok(token) => token,
            Err(e) => return Some(Err(e)),
        };
        let context = AuthContext::new(self.cached_claims(token)?);
        let liveness = self.liveness.check_cached(&context)?;
        Some(Self::admit(context, liveness))
    }

    fn cached_claims(&self, token: &str) -> Option<Arc<Claims>> {
        self.tokens.get(token)
    }

    fn admit(context: AuthContext, liveness: Liveness) -> Result<AuthContext, AuthError> {
        if liveness.is_live() {
            Ok(context)
        } else {
            Err(AuthError::SessionNotLive(liveness))
        }
    }
}
