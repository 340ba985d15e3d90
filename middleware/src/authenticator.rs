//! The framework-agnostic core: headers in, [`AuthContext`] or [`AuthError`] out.
//!
//! Every adapter (the Tower layer, the Poem middleware) is a thin shell around
//! [`Authenticator`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::context::AuthContext;
use crate::diagnostics::{ErrorChain, LogThrottle};
use crate::error::AuthError;
use crate::extract::{ExpectedOrigins, RequestHead, TokenSource};
use crate::liveness::{
    DynLivenessCheck, Liveness, LivenessCell, LivenessCheck, LivenessError, Tick,
};
use crate::token_cache::{DEFAULT_TOKEN_CACHE_CAPACITY, VerifiedToken, VerifiedTokenCache};
use crate::verify::TokenVerifier;

/// At most one warning per this long about requests whose session could not be checked:
/// during an outage every request meets it, and the log must stay readable.
const UNAVAILABLE_LOG_WINDOW: Duration = Duration::from_secs(10);

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

/// What the verified-token cache held for a token before its store was asked.
enum Held {
    /// Not there: the token was verified just now.
    NotCached,
    /// There, with this cell or none.
    Cached(Option<LivenessCell>),
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
    origins: Option<ExpectedOrigins>,
    unavailable: UnavailablePolicy,
    /// Shared by clones, so a process warns once per window however many clones it has.
    unavailable_log: Arc<LogThrottle>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("verifier", &self.verifier)
            .field("source", &self.source)
            .field("origins", &self.origins)
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
            origins: None,
            unavailable: UnavailablePolicy::FailClosed,
            unavailable_log: Arc::new(LogThrottle::new(UNAVAILABLE_LOG_WINDOW)),
        }
    }

    /// Where the token is read from (default `Authorization: Bearer`).
    #[must_use]
    pub fn with_token_source(mut self, source: TokenSource) -> Self {
        self.source = source;
        self
    }

    /// The origins whose pages may send cookie-authenticated requests (scheme, host and
    /// port). Unset, a cookie request's `Origin` must match its own `Host` or URI
    /// authority, which a proxy that rewrites `Host` breaks.
    #[must_use]
    pub fn with_expected_origins(mut self, origins: ExpectedOrigins) -> Self {
        self.origins = Some(origins);
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
    /// From memory when the token was verified before and its session's state is known
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
        let token = self.source.extract_for(request, self.origins.as_ref())?;
        let (context, held) = match self.tokens.get(token.as_bytes(), Tick::now()) {
            Some(verified) => (
                verified.context.clone(),
                Held::Cached(verified.liveness.clone()),
            ),
            None => (
                AuthContext::new(Arc::new(self.verifier.verify(token).await?)),
                Held::NotCached,
            ),
        };
        let liveness = match self.liveness.check_cached(&context) {
            Some(liveness) => Ok(liveness),
            None => self.liveness.check(&context).await,
        };
        // Remembered whatever the store said: the signature need not be checked again.
        self.remember_cell(token.as_bytes(), &context, held);
        let liveness = match liveness {
            Ok(liveness) => liveness,
            Err(e) => {
                self.warn_unavailable(&e);
                match self.unavailable {
                    UnavailablePolicy::FailOpen => Liveness::Live,
                    UnavailablePolicy::FailClosed => return Err(AuthError::Unavailable(e)),
                }
            }
        };
        Self::admit(context, liveness)
    }

    /// The one trace of a store that cannot answer (the 503 itself is logged at debug
    /// only, as every refusal): a warning with the cause, at most once per
    /// [`UNAVAILABLE_LOG_WINDOW`], saying how many were suppressed since the last one.
    fn warn_unavailable(&self, error: &LivenessError) {
        let Some(suppressed) = self.unavailable_log.admit(Instant::now()) else {
            return;
        };
        let window_secs = UNAVAILABLE_LOG_WINDOW.as_secs();
        match self.unavailable {
            UnavailablePolicy::FailClosed => tracing::warn!(
                error = %ErrorChain(error),
                suppressed,
                window_secs,
                "session liveness could not be checked; request refused with 503"
            ),
            UnavailablePolicy::FailOpen => tracing::warn!(
                error = %ErrorChain(error),
                suppressed,
                window_secs,
                "session liveness could not be checked; request let through (fail open)"
            ),
        }
    }

    /// The answer when it is known without awaiting anything: the token was verified
    /// before, and its session's cell (or else the store, from memory) knows the
    /// session. `None` means "call [`authenticate`](Self::authenticate)", which tries
    /// this first. Lets an adapter skip boxing a future on the hot path.
    pub fn authenticate_cached<'r>(
        &self,
        request: impl Into<RequestHead<'r>>,
    ) -> Option<Result<AuthContext, AuthError>> {
        let request = request.into();
        let now = Tick::now();
        // A verified token is well-formed, so a hit needs no byte-by-byte validation.
        let candidate = self.source.bearer_candidate(request.headers());
        if let Some(token) = candidate
            && let Some(verified) = self.tokens.get(token, now)
        {
            return self.answer_from_memory(token, &verified, now);
        }
        let token = match self.source.extract_for(request, self.origins.as_ref()) {
            Ok(token) => token,
            Err(e) => return Some(Err(e)),
        };
        if candidate == Some(token.as_bytes()) {
            // Looked up just above: not verified yet.
            return None;
        }
        let verified = self.tokens.get(token.as_bytes(), now)?;
        self.answer_from_memory(token.as_bytes(), &verified, now)
    }

    /// The hot path: one load of the session's cell. Without a cell, or when it says
    /// nothing, the store's memory; then the token takes the cell the store has now.
    fn answer_from_memory(
        &self,
        token: &[u8],
        verified: &VerifiedToken,
        now: Tick,
    ) -> Option<Result<AuthContext, AuthError>> {
        if let Some(liveness) = verified.liveness.as_ref().and_then(|cell| cell.read(now)) {
            return Some(Self::admit(verified.context.clone(), liveness));
        }
        let liveness = self.liveness.check_cached(&verified.context)?;
        self.remember_cell(
            token,
            &verified.context,
            Held::Cached(verified.liveness.clone()),
        );
        Some(Self::admit(verified.context.clone(), liveness))
    }

    /// Keeps `token` (verified) with the cell the store hands out now for its session,
    /// unless the cache holds just that already.
    fn remember_cell(&self, token: &[u8], context: &AuthContext, held: Held) {
        let cell = self.liveness.watch(context);
        let unchanged = match (held, &cell) {
            (Held::NotCached, _) => false,
            (Held::Cached(Some(held)), Some(cell)) => held.is(cell),
            (Held::Cached(held), cell) => held.is_none() && cell.is_none(),
        };
        if !unchanged {
            self.tokens.insert(token, context.clone(), cell);
        }
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

    /// The cell the verified-token cache holds for `token`.
    fn held_cell(auth: &Authenticator, token: &str) -> Option<LivenessCell> {
        auth.tokens
            .get(token.as_bytes(), Tick::now())
            .expect("the token is cached")
            .liveness
            .clone()
    }

    #[tokio::test]
    async fn a_cached_token_holds_its_sessions_cell_and_a_revocation_flips_it() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let auth = Authenticator::new(verifier(), store.clone());
        let token = token("u1", "s1");
        let headers = bearer(&token);
        let context = auth.authenticate(&headers).await.unwrap();
        let held = held_cell(&auth, &token).expect("the store handed out a cell");
        assert!(
            held.is(&LivenessCheck::watch(&store, &context).unwrap()),
            "the session's own cell"
        );
        assert_eq!(held.read(Tick::now()), Some(Liveness::Live));

        assert!(store.revoke("s1"));
        assert_eq!(
            held.read(Tick::now()),
            Some(Liveness::Revoked),
            "flipped in place"
        );
        assert!(matches!(
            auth.authenticate_cached(&headers),
            Some(Err(AuthError::SessionNotLive(Liveness::Revoked)))
        ));
    }

    #[tokio::test]
    async fn a_token_whose_session_was_revoked_before_it_was_cached_is_refused() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        assert!(store.revoke("s1"));
        let auth = Authenticator::new(verifier(), store);
        let token = token("u1", "s1");
        let headers = bearer(&token);
        assert!(matches!(
            auth.authenticate(&headers).await,
            Err(AuthError::SessionNotLive(Liveness::Revoked))
        ));
        let held = held_cell(&auth, &token).expect("cached with its cell");
        assert_eq!(held.read(Tick::now()), Some(Liveness::Revoked));
        assert!(matches!(
            auth.authenticate_cached(&headers),
            Some(Err(AuthError::SessionNotLive(Liveness::Revoked)))
        ));
    }

    #[tokio::test]
    async fn an_invalidated_cell_is_never_trusted_and_the_token_takes_the_new_one() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let auth = Authenticator::new(verifier(), store.clone());
        let token = token("u1", "s1");
        let headers = bearer(&token);
        auth.authenticate(&headers).await.unwrap();
        let old = held_cell(&auth, &token).unwrap();

        // Recorded anew: the old cell is invalidated, and the store answers instead.
        store.insert("s1", "u1", None);
        assert_eq!(old.read(Tick::now()), None);
        assert!(matches!(auth.authenticate_cached(&headers), Some(Ok(_))));
        let new = held_cell(&auth, &token).unwrap();
        assert!(!new.is(&old), "the token now holds the new cell");

        assert!(store.revoke("s1"));
        assert!(matches!(
            auth.authenticate_cached(&headers),
            Some(Err(AuthError::SessionNotLive(Liveness::Revoked)))
        ));
    }

    #[tokio::test]
    async fn a_session_reaching_its_deadline_is_refused_by_the_cell() {
        let store = InMemoryLiveness::new();
        let ends = SystemTime::now() + Duration::from_millis(200);
        store.insert("s1", "u1", Some(ends));
        let auth = Authenticator::new(verifier(), store);
        let headers = bearer(&token("u1", "s1"));
        auth.authenticate(&headers).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match auth.authenticate_cached(&headers) {
                Some(Ok(_)) => assert!(SystemTime::now() < ends + Duration::from_secs(1)),
                Some(Err(AuthError::SessionNotLive(Liveness::Expired))) => break,
                other => panic!("{other:?}"),
            }
            assert!(std::time::Instant::now() < deadline, "never refused");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A store with nothing but `check`: every request asks it.
    struct CheckOnly(InMemoryLiveness);

    impl LivenessCheck for CheckOnly {
        async fn check(&self, context: &AuthContext) -> Result<Liveness, LivenessError> {
            LivenessCheck::check(&self.0, context).await
        }
    }

    #[tokio::test]
    async fn a_store_without_cells_or_memory_is_asked_on_every_request() {
        let store = InMemoryLiveness::new();
        store.insert("s1", "u1", None);
        let auth = Authenticator::new(verifier(), CheckOnly(store.clone()));
        let token = token("u1", "s1");
        let headers = bearer(&token);
        for _ in 0..2 {
            assert!(auth.authenticate(&headers).await.is_ok());
            assert!(auth.authenticate_cached(&headers).is_none(), "must await");
        }
        assert!(held_cell(&auth, &token).is_none(), "verified once, no cell");
        assert!(store.revoke("s1"));
        assert!(matches!(
            auth.authenticate(&headers).await,
            Err(AuthError::SessionNotLive(Liveness::Revoked))
        ));
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

    /// Where a test subscriber writes: its JSON lines, kept for the test to read.
    #[derive(Clone, Default)]
    struct LogLines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for LogLines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl LogLines {
        /// The warnings written so far, each as its JSON object.
        fn warnings(&self) -> Vec<serde_json::Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
                .filter(|event| event["level"] == "WARN")
                .collect()
        }
    }

    #[tokio::test]
    async fn a_refusal_for_want_of_liveness_is_one_warning_per_window_with_its_cause() {
        let lines = LogLines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        // The test runtime runs every future on this thread, where the guard applies.
        let _guard = tracing::subscriber::set_default(subscriber);

        let auth = Authenticator::new(verifier(), Down);
        let clone = auth.clone();
        let headers = bearer(&token("u1", "s1"));
        for authenticator in [&auth, &clone, &auth, &clone, &auth] {
            let refusal = authenticator.authenticate(&headers).await.unwrap_err();
            assert_eq!(refusal.status(), 503);
        }
        let warnings = lines.warnings();
        assert_eq!(warnings.len(), 1, "one line per window: {warnings:#?}");
        let fields = &warnings[0]["fields"];
        assert_eq!(
            fields["message"],
            "session liveness could not be checked; request refused with 503"
        );
        assert_eq!(
            fields["error"],
            "session liveness unavailable: database down"
        );
        assert_eq!(fields["suppressed"], 0);
        assert_eq!(fields["window_secs"], 10);

        // The window passes; the next refusal is written, and says what was suppressed.
        auth.unavailable_log.rewind(UNAVAILABLE_LOG_WINDOW);
        clone.authenticate(&headers).await.unwrap_err();
        let warnings = lines.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:#?}");
        assert_eq!(warnings[1]["fields"]["suppressed"], 4);
        clone.authenticate(&headers).await.unwrap_err();
        assert_eq!(lines.warnings().len(), 2, "a new window, held again");
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
