//! The framework-agnostic core: headers in, [`AuthContext`] or [`AuthError`] out.
//!
//! Every adapter (the Tower layer, the Poem middleware) is a thin shell around
//! [`Authenticator`].

use std::sync::Arc;

use crate::context::AuthContext;
use crate::error::AuthError;
use crate::extract::{RequestHead, TokenSource};
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

    /// Authenticates a request by its headers, or by a [`RequestHead`] (headers and URI,
    /// which a cookie source needs to check an `Origin` over HTTP/2).
    ///
    /// From memory when the token was verified before and the store knows the session
    /// ([`authenticate_cached`](Self::authenticate_cached)), else in full: verifying the
    /// token and asking the store.
    pub async fn authenticate<'r>(
        &self,
        request: impl Into<RequestHead<'r>>,
    ) -> Result<AuthContext, AuthError> {
        let request = request.into();
        match self.authenticate_cached(request) {
            Some(outcome) => outcome,
            None => self.authenticate_in_full(request).await,
        }
    }

    async fn authenticate_in_full(
        &self,
        request: RequestHead<'_>,
    ) -> Result<AuthContext, AuthError> {
        let token = self.source.extract(request)?;
        let context = if let Some(context) = self.tokens.get(token.as_bytes()) {
            context
        } else {
            let context = AuthContext::new(Arc::new(self.verifier.verify(token).await?));
            self.tokens.insert(token.as_bytes(), context.clone());
            context
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
    /// [`authenticate`](Self::authenticate)", which tries this first. Lets an adapter skip
    /// boxing a future on the hot path.
    pub fn authenticate_cached<'r>(
        &self,
        request: impl Into<RequestHead<'r>>,
    ) -> Option<Result<AuthContext, AuthError>> {
        let request = request.into();
        // A verified token is well-formed, so a hit needs no byte-by-byte validation.
        let candidate = self.source.bearer_candidate(request.headers());
        if let Some(context) = candidate.and_then(|token| self.tokens.get(token)) {
            let liveness = self.liveness.check_cached(&context)?;
            return Some(Self::admit(context, liveness));
        }
        let token = match self.source.extract(request) {
            Ok(token) => token,
            Err(e) => return Some(Err(e)),
        };
        if candidate == Some(token.as_bytes()) {
            // Looked up just above: not verified yet.
            return None;
        }
        let context = self.tokens.get(token.as_bytes())?;
        let liveness = self.liveness.check_cached(&context)?;
        Some(Self::admit(context, liveness))
    }

    fn admit(context: AuthContext, liveness: Liveness) -> Result<AuthContext, AuthError> {
        if liveness.is_live() {
            Ok(context)
        } else {
            Err(AuthError::SessionNotLive(liveness))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use http::header::AUTHORIZATION;
    use http::{HeaderMap, HeaderValue};

    use super::*;
    use crate::liveness::{InMemoryLiveness, LivenessError};
    use crate::test_tokens::{token, verifier};

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    #[tokio::test]
    async fn a_live_session_passes_and_the_context_names_it() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let auth = Authenticator::new(verifier(), store);
        let context = auth
            .authenticate(&bearer(&token("u1", "s1")))
            .await
            .unwrap();
        assert_eq!(context.user_id().as_str(), "u1");
        assert_eq!(context.session_id().as_str(), "s1");
        assert!(context.expires_at() > SystemTime::now());
    }

    #[tokio::test]
    async fn a_revoked_session_is_refused_from_the_next_request_on() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let auth = Authenticator::new(verifier(), store.clone());
        let headers = bearer(&token("u1", "s1"));
        assert!(auth.authenticate(&headers).await.is_ok());
        assert!(store.revoke("s1"));
        assert!(matches!(
            auth.authenticate(&headers).await,
            Err(AuthError::SessionNotLive(Liveness::Revoked))
        ));
        // The fast path agrees.
        assert!(matches!(
            auth.authenticate_cached(&headers),
            Some(Err(AuthError::SessionNotLive(Liveness::Revoked)))
        ));
    }

    #[tokio::test]
    async fn an_expired_session_is_refused() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", Some(SystemTime::now() - Duration::from_secs(1)));
        let auth = Authenticator::new(verifier(), store);
        assert!(matches!(
            auth.authenticate(&bearer(&token("u1", "s1"))).await,
            Err(AuthError::SessionNotLive(Liveness::Expired))
        ));
    }

    #[tokio::test]
    async fn a_session_of_another_user_or_none_at_all_is_refused() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let auth = Authenticator::new(verifier(), store);
        assert!(matches!(
            auth.authenticate(&bearer(&token("intruder", "s1"))).await,
            Err(AuthError::SessionNotLive(Liveness::Unknown))
        ));
        assert!(matches!(
            auth.authenticate(&bearer(&token("u1", "nope"))).await,
            Err(AuthError::SessionNotLive(Liveness::Unknown))
        ));
    }

    #[tokio::test]
    async fn the_second_request_is_answered_without_awaiting() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let auth = Authenticator::new(verifier(), store);
        let headers = bearer(&token("u1", "s1"));
        assert!(
            auth.authenticate_cached(&headers).is_none(),
            "not verified yet"
        );
        auth.authenticate(&headers).await.unwrap();
        let context = auth.authenticate_cached(&headers).unwrap().unwrap();
        assert_eq!(context.session_id().as_str(), "s1");
    }

    #[tokio::test]
    async fn bad_tokens_are_never_cached() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let auth = Authenticator::new(verifier(), store);
        let mut tampered = token("u1", "s1");
        tampered.push('A');
        let headers = bearer(&tampered);
        for _ in 0..2 {
            assert!(matches!(
                auth.authenticate(&headers).await,
                Err(AuthError::InvalidToken(_))
            ));
            assert!(auth.authenticate_cached(&headers).is_none());
        }
    }

    struct Down;

    impl LivenessCheck for Down {
        async fn check(&self, _: &AuthContext) -> Result<Liveness, LivenessError> {
            Err(LivenessError("database down".into()))
        }
    }

    #[tokio::test]
    async fn an_unanswerable_store_fails_closed_by_default_and_open_when_asked() {
        let headers = bearer(&token("u1", "s1"));
        let closed = Authenticator::new(verifier(), Down);
        let err = closed.authenticate(&headers).await.unwrap_err();
        assert!(matches!(err, AuthError::Unavailable(_)));
        assert_eq!(err.status(), 503);

        let open = Authenticator::new(verifier(), Down)
            .with_unavailable_policy(UnavailablePolicy::FailOpen);
        assert!(open.authenticate(&headers).await.is_ok());
    }

    #[tokio::test]
    async fn a_cookie_source_reads_the_cookie() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let auth = Authenticator::new(verifier(), store)
            .with_token_source(TokenSource::cookie("sg_access"));
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            HeaderValue::from_str(&format!("a=b; sg_access={}", token("u1", "s1"))).unwrap(),
        );
        assert!(auth.authenticate(&headers).await.is_ok());
        assert!(matches!(
            auth.authenticate(&bearer(&token("u1", "s1"))).await,
            Err(AuthError::MissingToken)
        ));
    }
}
