//! Keys from a JWKS URL: fetched, cached, and refreshed when a token names a `kid` the
//! cached set does not hold, at most once per `min_refresh_interval`.
//!
//! This is how a service behind the template verifies tokens knowing only the server's
//! URL: `RemoteJwks::fetch("https://auth.example.com/.well-known/jwks.json").await?`,
//! which fetches the keys once at start-up and fails then, with the URL and the cause,
//! if they cannot be had.
//!
//! The URL must be `https://`: keys fetched in the clear could be swapped on the way, and
//! whoever swaps them signs any token. `http://` is taken only to this machine
//! (127.0.0.0/8, `::1`, `localhost`), for a server and a service side by side.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;

use crate::diagnostics::ErrorChain;
use crate::keys::{KeyError, KeySet, VerificationKey};

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Why the key set could not be fetched, or is of no use. Each names the URL; the
/// cause is the error's [`source`](std::error::Error::source) where another library
/// found it, so print the whole chain (`a: b: c`), not just the first line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// No answer: nothing listens there, the host is unknown or unreachable, TLS failed,
    /// or it did not answer in time.
    #[error("cannot fetch the JWKS from {url}")]
    Unreachable {
        /// The JWKS URL.
        url: String,
        /// What the HTTP client said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An answer other than 2xx (redirects are not followed).
    #[error("the JWKS URL {url} answered {status}, not 200 with a key set")]
    Status {
        /// The JWKS URL.
        url: String,
        /// What it answered.
        status: http::StatusCode,
    },
    /// An answer that is not a JWKS document (`{"keys": [...]}`): an HTML page, other
    /// JSON, too large, not UTF-8.
    #[error("the answer of {url} is not a JWKS document ({{\"keys\": [...]}}): {reason}")]
    NotJwks {
        /// The JWKS URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A JWKS document without one key this crate can verify with (EdDSA, ES256 or
    /// RS256, with a `kid`): every token would be refused.
    #[error("the JWKS at {url} holds no key to verify tokens with{}", skipped_keys(.skipped))]
    NoUsableKey {
        /// The JWKS URL.
        url: String,
        /// Why each key it holds was skipped; empty when it holds none.
        skipped: Vec<KeyError>,
    },
    /// The URL is not an `http://` or `https://` URL with a host.
    #[error("JWKS URL {url:?} is not an http(s) URL with a host")]
    InvalidUrl {
        /// The URL as given.
        url: String,
    },
    /// `http://` to another machine: keys fetched in the clear could be swapped.
    #[error("JWKS URL {url:?} must be https:// (http:// only to 127.0.0.0/8, ::1 or localhost)")]
    InsecureUrl {
        /// The URL as given.
        url: String,
    },
}

/// The tail of [`JwksError::NoUsableKey`]'s message: why each key was skipped.
fn skipped_keys(skipped: &[KeyError]) -> String {
    if skipped.is_empty() {
        return " (its key list is empty)".to_owned();
    }
    let reasons: Vec<String> = skipped.iter().map(ToString::to_string).collect();
    format!(
        " ({} published, none usable: {})",
        skipped.len(),
        reasons.join("; ")
    )
}

/// Checks that `url` may carry keys: `https://`, or `http://` to a loopback host.
fn check_url(url: &str) -> Result<(), JwksError> {
    let invalid = || JwksError::InvalidUrl {
        url: url.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| invalid())?;
    let host = parsed
        .host_str()
        .filter(|host| !host.is_empty())
        .ok_or_else(invalid)?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(host) => Ok(()),
        "http" => Err(JwksError::InsecureUrl {
            url: url.to_owned(),
        }),
        _ => Err(invalid()),
    }
}

/// `localhost`, 127.0.0.0/8 or `::1`, as the URL parser writes hosts (lower case, IPv4
/// in dotted decimal, IPv6 in brackets).
fn is_loopback(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
    }
    host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// A JWKS URL and the key set last fetched from it. Cheap to clone: clones share.
#[derive(Clone)]
pub struct RemoteJwks {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    client: reqwest::Client,
    min_refresh_interval: Duration,
    max_age: Duration,
    keys: RwLock<Arc<KeySet>>,
    /// When the set was last fetched, or last tried; `None` before the first try.
    fetched: RwLock<Option<Instant>>,
    /// One refresh at a time; others wait for it and then read its result.
    refreshing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("url", &self.inner.url)
            .field("keys", &self.current().len())
            .finish_non_exhaustive()
    }
}

impl RemoteJwks {
    /// The key set at `url`, fetched now: the start-up check. Fails, naming the URL and
    /// the cause, when nothing answers there, when the answer is not 2xx or not a JWKS
    /// document (an HTML page, other JSON), or when the set holds no key to verify with.
    /// A service that starts with a wrong URL would otherwise answer 401 to every valid
    /// token, and say why only in a log line.
    ///
    /// ```no_run
    /// # async fn start() -> Result<(), portcullis::JwksError> {
    /// let keys = portcullis::RemoteJwks::fetch("https://auth.example.com/.well-known/jwks.json").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// With other intervals: [`with_intervals`](Self::with_intervals), then
    /// [`refresh`](Self::refresh), which checks the same.
    pub async fn fetch(url: impl Into<String>) -> Result<Self, JwksError> {
        let jwks = Self::new(url)?;
        jwks.refresh().await?;
        Ok(jwks)
    }

    /// A key set fetched from `url` on first use, without a check: a wrong URL shows
    /// only as refused tokens and a warning. Prefer [`fetch`](Self::fetch) at start-up.
    /// Refuses a URL that is not `https://` (or `http://` to this machine).
    pub fn new(url: impl Into<String>) -> Result<Self, JwksError> {
        Self::with_intervals(url, Duration::from_secs(10), Duration::from_secs(300))
    }

    /// Like [`RemoteJwks::new`], with how often an unknown `kid` may trigger a refresh
    /// (`min_refresh_interval`) and how old the set may grow before it is refetched
    /// (`max_age`).
    pub fn with_intervals(
        url: impl Into<String>,
        min_refresh_interval: Duration,
        max_age: Duration,
    ) -> Result<Self, JwksError> {
        let url = url.into();
        check_url(&url)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Ok(Self {
            inner: Arc::new(Inner {
                url,
                client,
                min_refresh_interval,
                max_age,
                keys: RwLock::new(Arc::new(KeySet::default())),
                fetched: RwLock::new(None),
                refreshing: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Fetches the set now, whatever the intervals say, and returns how many usable keys
    /// it holds. Fails as [`fetch`](Self::fetch) does; on failure the keys fetched
    /// before are kept.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let _one_at_a_time = self.inner.refreshing.lock().await;
        self.download().await
    }

    /// The set as last fetched.
    pub fn current(&self) -> Arc<KeySet> {
        Arc::clone(
            &self
                .inner
                .keys
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The key for `kid`, refreshing first when the set is too old, or when it does not
    /// hold `kid` and the last refresh is older than the minimum interval.
    pub(crate) async fn key(&self, kid: Option<&str>) -> Option<Arc<VerificationKey>> {
        let age = self.age();
        let stale = age.is_none_or(|age| age >= self.inner.max_age);
        if !stale && let Some(key) = self.current().get(kid) {
            return Some(Arc::clone(key));
        }
        if stale || age.is_none_or(|age| age >= self.inner.min_refresh_interval) {
            let _one_at_a_time = self.inner.refreshing.lock().await;
            // Someone else may have refreshed while we waited.
            let age = self.age();
            if age.is_none_or(|age| age >= self.inner.min_refresh_interval)
                && let Err(e) = self.download().await
            {
                tracing::warn!(
                    error = %ErrorChain(&e),
                    "JWKS refresh failed; keeping the previous keys"
                );
            }
        }
        self.current().get(kid).cloned()
    }

    fn age(&self) -> Option<Duration> {
        self.inner
            .fetched
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|at| at.elapsed())
    }

    /// Fetches and checks the set, and keeps it when it holds a usable key.
    async fn download(&self) -> Result<usize, JwksError> {
        *self
            .inner
            .fetched
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        let url = || self.inner.url.clone();
        let unreachable = |e: reqwest::Error| JwksError::Unreachable {
            url: url(),
            // The URL is in our message already.
            source: e.without_url().into(),
        };
        let not_jwks = |reason: String| JwksError::NotJwks { url: url(), reason };
        let mut response = self
            .inner
            .client
            .get(&self.inner.url)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(JwksError::Status { url: url(), status });
        }
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(not_jwks(format!("larger than {MAX_JWKS_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| {
            // An HTML page says so by its type better than by where JSON parsing stopped.
            let hint = match content_type.filter(|kind| !kind.contains("json")) {
                Some(kind) => format!(" (it sent {kind})"),
                None if body.trim_ascii_start().starts_with(b"<") => {
                    " (it looks like HTML)".to_owned()
                }
                None => String::new(),
            };
            not_jwks(format!("{e}{hint}"))
        })?;
        let (keys, skipped) = KeySet::usable_keys(&set);
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey {
                url: url(),
                skipped,
            });
        }
        for error in &skipped {
            tracing::warn!(url = %self.inner.url, error = %error, "skipping a JWKS key");
        }
        let count = keys.len();
        *self
            .inner
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
        tracing::info!(url = %self.inner.url, keys = count, "JWKS fetched");
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::Router;
    use axum::routing::get;
    use jsonwebtoken::EncodingKey;
    use jsonwebtoken::jwk::{Jwk, JwkSet};

    use super::*;
    use crate::test_tokens::{AUDIENCE, ED_OTHER_PRIVATE, ED_PRIVATE, ISSUER, claims};
    use crate::verify::{TokenError, TokenVerifier};

    /// A published key for the private key `pem`, under `kid`.
    fn public_jwk(kid: &str, pem: &[u8]) -> Jwk {
        crate::install_crypto_provider();
        let key = EncodingKey::from_ed_pem(pem).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::EdDSA).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        jwk
    }

    fn sign(kid: &str, pem: &[u8]) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(
            &header,
            &claims("u", "s"),
            &EncodingKey::from_ed_pem(pem).unwrap(),
        )
        .unwrap()
    }

    /// Serves whatever `published` holds at `/jwks.json`, counting requests.
    async fn jwks_server(published: Arc<Mutex<JwkSet>>, hits: Arc<AtomicUsize>) -> String {
        let app = Router::new().route(
            "/jwks.json",
            get(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                let body = serde_json::to_string(&*published.lock().unwrap()).unwrap();
                async move { body }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/jwks.json")
    }

    #[tokio::test]
    async fn keys_come_from_the_url_and_a_new_kid_triggers_one_rate_limited_refresh() {
        let published = Arc::new(Mutex::new(JwkSet {
            keys: vec![public_jwk("k1", ED_PRIVATE)],
        }));
        let hits = Arc::new(AtomicUsize::new(0));
        let url = jwks_server(Arc::clone(&published), Arc::clone(&hits)).await;
        let jwks =
            RemoteJwks::with_intervals(url, Duration::from_millis(300), Duration::from_secs(600))
                .unwrap();
        let verifier = TokenVerifier::builder(jwks.clone())
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .build();

        // First use fetches; later uses of a known kid do not.
        for _ in 0..3 {
            verifier.verify(&sign("k1", ED_PRIVATE)).await.unwrap();
        }
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        // The server rotates in a new key. Inside the interval an unknown kid may not
        // refetch (no one can make us hammer the server with made-up kids)...
        published
            .lock()
            .unwrap()
            .keys
            .push(public_jwk("k2", ED_OTHER_PRIVATE));
        let rotated = sign("k2", ED_OTHER_PRIVATE);
        assert_eq!(
            verifier.verify(&rotated).await.unwrap_err(),
            TokenError::UnknownKey
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        // ...after it, the unknown kid triggers exactly one refresh.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while verifier.verify(&rotated).await.is_err() {
            assert_eq!(
                hits.load(Ordering::SeqCst),
                1,
                "refetched inside the interval"
            );
            assert!(std::time::Instant::now() < deadline, "never refetched");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        verifier.verify(&rotated).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        for _ in 0..5 {
            assert_eq!(
                verifier
                    .verify(&sign("made-up", ED_PRIVATE))
                    .await
                    .unwrap_err(),
                TokenError::UnknownKey
            );
        }
        assert_eq!(
            hits.load(Ordering::SeqCst),
            2,
            "made-up kids are rate-limited"
        );
    }

    #[tokio::test]
    async fn an_unreachable_url_refuses_tokens_without_panicking() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let jwks = RemoteJwks::new(format!("http://127.0.0.1:{port}/jwks.json")).unwrap();
        assert!(matches!(
            jwks.refresh().await,
            Err(JwksError::Unreachable { .. })
        ));
        let verifier = TokenVerifier::builder(jwks)
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .build();
        assert_eq!(
            verifier.verify(&sign("k1", ED_PRIVATE)).await.unwrap_err(),
            TokenError::UnknownKey
        );
    }

    /// A loopback HTTP server answering `status`, `content_type` and `body` at
    /// `/jwks.json` (and 404 elsewhere); its JWKS URL.
    async fn answering(status: u16, content_type: &'static str, body: &'static str) -> String {
        let status = http::StatusCode::from_u16(status).unwrap();
        let app = Router::new().route(
            "/jwks.json",
            get(
                move || async move { (status, [(http::header::CONTENT_TYPE, content_type)], body) },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/jwks.json")
    }

    /// What a service's `main` does: check the keys at `jwks_url`, then serve `/hello`
    /// behind the layer on a loopback port. Its address, or why it did not start.
    async fn start_guarded_service(jwks_url: &str) -> Result<std::net::SocketAddr, JwksError> {
        let keys = RemoteJwks::fetch(jwks_url).await?;
        let verifier = TokenVerifier::builder(keys)
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .build();
        let liveness = crate::InMemoryLiveness::new();
        liveness.insert("s", "u", None);
        let guard = crate::SessionGuardLayer::new(crate::Authenticator::new(verifier, liveness));
        let app = Router::new()
            .route(
                "/hello",
                get(
                    |axum::Extension(auth): axum::Extension<crate::AuthContext>| async move {
                        auth.user_id().to_string()
                    },
                ),
            )
            .layer(guard);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(addr)
    }

    /// The start-up error for `url`, printed as `main` prints it: every cause.
    async fn start_up_error(url: &str) -> (JwksError, String) {
        let error = start_guarded_service(url).await.expect_err(url);
        let printed = ErrorChain(&error).to_string();
        assert!(printed.contains(url), "the URL is named: {printed}");
        (error, printed)
    }

    #[tokio::test]
    async fn a_good_jwks_starts_the_service_and_its_tokens_pass() {
        let published = Arc::new(Mutex::new(JwkSet {
            keys: vec![public_jwk("k1", ED_PRIVATE)],
        }));
        let url = jwks_server(published, Arc::new(AtomicUsize::new(0))).await;
        let addr = start_guarded_service(&url).await.unwrap();
        let client = reqwest::Client::new();
        let response = client
            .get(format!("http://{addr}/hello"))
            .bearer_auth(sign("k1", ED_PRIVATE))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "u");
        let refused = client
            .get(format!("http://{addr}/hello"))
            .bearer_auth(sign("k1", ED_OTHER_PRIVATE))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
    }

    #[tokio::test]
    async fn a_closed_port_stops_the_start_up_saying_the_connection_was_refused() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/jwks.json");
        let (error, printed) = start_up_error(&url).await;
        assert!(matches!(error, JwksError::Unreachable { .. }), "{error:?}");
        assert!(
            printed.starts_with(&format!("cannot fetch the JWKS from {url}: ")),
            "{printed}"
        );
        assert!(
            printed.to_lowercase().contains("connection refused"),
            "the cause is named: {printed}"
        );
    }

    #[tokio::test]
    async fn an_answer_that_is_not_a_jwks_stops_the_start_up() {
        let html = answering(
            200,
            "text/html; charset=utf-8",
            "<!doctype html><p>Welcome</p>",
        )
        .await;
        let (error, printed) = start_up_error(&html).await;
        assert!(matches!(error, JwksError::NotJwks { .. }), "{error:?}");
        assert!(printed.contains("is not a JWKS document"), "{printed}");
        assert!(printed.contains("text/html"), "{printed}");

        let html_as_json = answering(200, "application/json", "\n<html></html>").await;
        let (_, printed) = start_up_error(&html_as_json).await;
        assert!(printed.ends_with("(it looks like HTML)"), "{printed}");

        let empty_object = answering(200, "application/json", "{}").await;
        let (error, printed) = start_up_error(&empty_object).await;
        assert!(matches!(error, JwksError::NotJwks { .. }), "{error:?}");
        assert!(printed.contains("missing field `keys`"), "{printed}");

        let other_json = answering(200, "application/json", r#"{"keys": "none"}"#).await;
        let (error, _) = start_up_error(&other_json).await;
        assert!(matches!(error, JwksError::NotJwks { .. }), "{error:?}");

        let not_found = answering(200, "application/json", "{}")
            .await
            .replace("/jwks.json", "/.well-known/jwks.json");
        let (error, printed) = start_up_error(&not_found).await;
        assert!(
            matches!(error, JwksError::Status { status, .. } if status == 404),
            "{error:?}"
        );
        assert!(printed.contains("answered 404 Not Found"), "{printed}");

        let failing = answering(500, "text/plain", "oops").await;
        let (error, _) = start_up_error(&failing).await;
        assert!(matches!(error, JwksError::Status { status, .. } if status == 500));
    }

    #[tokio::test]
    async fn a_jwks_without_a_usable_key_stops_the_start_up() {
        let empty = answering(200, "application/json", r#"{"keys": []}"#).await;
        let (error, printed) = start_up_error(&empty).await;
        assert!(
            matches!(&error, JwksError::NoUsableKey { skipped, .. } if skipped.is_empty()),
            "{error:?}"
        );
        assert_eq!(
            printed,
            format!(
                "the JWKS at {empty} holds no key to verify tokens with (its key list is empty)"
            )
        );

        // Only keys this crate cannot verify with: a shared secret, a P-384 key.
        let unusable = answering(
            200,
            "application/json",
            r#"{"keys": [
                {"kty": "oct", "kid": "shared", "k": "c2VjcmV0"},
                {"kty": "EC", "kid": "p384", "crv": "P-384", "alg": "ES384",
                 "x": "AAAA", "y": "AAAA"}
            ]}"#,
        )
        .await;
        let (error, printed) = start_up_error(&unusable).await;
        assert!(
            matches!(&error, JwksError::NoUsableKey { skipped, .. } if skipped.len() == 2),
            "{error:?}"
        );
        assert!(printed.contains("2 published, none usable"), "{printed}");
        assert!(
            printed.contains(r#"key "shared": a symmetric (oct) key"#),
            "{printed}"
        );
        assert!(
            printed.contains(r#"key "p384": EC P384 with alg ES384 is not supported"#),
            "{printed}"
        );
    }

    #[tokio::test]
    async fn a_refresh_to_an_unusable_set_keeps_the_keys_it_had() {
        let published = Arc::new(Mutex::new(JwkSet {
            keys: vec![public_jwk("k1", ED_PRIVATE)],
        }));
        let url = jwks_server(Arc::clone(&published), Arc::new(AtomicUsize::new(0))).await;
        let jwks = RemoteJwks::fetch(&url).await.unwrap();
        published.lock().unwrap().keys.clear();
        assert!(matches!(
            jwks.refresh().await,
            Err(JwksError::NoUsableKey { .. })
        ));
        assert!(
            jwks.current().get(Some("k1")).is_some(),
            "the old key stays"
        );
    }

    #[test]
    fn http_is_refused_except_to_this_machine() {
        for url in [
            "https://auth.example.com/.well-known/jwks.json",
            "https://10.0.0.1/jwks.json",
            "http://127.0.0.1:8080/jwks.json",
            "http://127.1.2.3/jwks.json",
            "http://[::1]:8080/jwks.json",
            "http://localhost/jwks.json",
            "http://LOCALHOST:8080/jwks.json",
        ] {
            assert!(RemoteJwks::new(url).is_ok(), "{url}");
        }
        for url in [
            "http://auth.example.com/.well-known/jwks.json",
            "http://10.0.0.1/jwks.json",
            "http://128.0.0.1/jwks.json",
            "http://[::2]/jwks.json",
            "http://[::ffff:127.0.0.1]/jwks.json",
            "http://localhost.evil.example/jwks.json",
            "http://127.0.0.1.evil.example/jwks.json",
            "http://0.0.0.0/jwks.json",
        ] {
            assert!(
                matches!(RemoteJwks::new(url), Err(JwksError::InsecureUrl { .. })),
                "{url}"
            );
        }
        for url in [
            "",
            "auth.example.com/jwks.json",
            "ftp://127.0.0.1/jwks.json",
            "file:///etc/jwks.json",
            "http://",
        ] {
            assert!(
                matches!(RemoteJwks::new(url), Err(JwksError::InvalidUrl { .. })),
                "{url}"
            );
        }
    }
}
