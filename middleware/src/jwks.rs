//! Keys from a JWKS URL: fetched, cached, and refreshed when a token names a `kid` the
//! cached set does not hold, at most once per `min_refresh_interval`.
//!
//! This is how a service behind the template verifies tokens knowing only the server's
//! URL: `RemoteJwks::new("https://auth.example.com/.well-known/jwks.json")?`.
//!
//! The URL must be `https://`: keys fetched in the clear could be swapped on the way, and
//! whoever swaps them signs any token. `http://` is taken only to this machine
//! (127.0.0.0/8, `::1`, `localhost`), for a server and a service side by side.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::keys::{KeyError, KeySet, VerificationKey};

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Why the key set could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The request failed or timed out.
    #[error("fetching {url}: {reason}")]
    Fetch {
        /// The JWKS URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The document is not a usable JWKS.
    #[error(transparent)]
    Keys(#[from] KeyError),
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
    /// A key set fetched from `url` on first use. Refuses a URL that is not `https://`
    /// (or `http://` to this machine).
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

    /// Fetches the set now, whatever the intervals say.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let _one_at_a_time = self.inner.refreshing.lock().await;
        self.fetch().await
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
                && let Err(e) = self.fetch().await
            {
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the previous keys");
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

    async fn fetch(&self) -> Result<usize, JwksError> {
        *self
            .inner
            .fetched
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        let fetch_error = |reason: String| JwksError::Fetch {
            url: self.inner.url.clone(),
            reason,
        };
        let mut response = self
            .inner
            .client
            .get(&self.inner.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| fetch_error(e.to_string()))?;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fetch_error(e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(fetch_error(format!(
                    "document larger than {MAX_JWKS_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(body).map_err(|_| fetch_error("not UTF-8".into()))?;
        let keys = KeySet::from_jwks_json(&text)?;
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
        assert!(matches!(jwks.refresh().await, Err(JwksError::Fetch { .. })));
        let verifier = TokenVerifier::builder(jwks)
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .build();
        assert_eq!(
            verifier.verify(&sign("k1", ED_PRIVATE)).await.unwrap_err(),
            TokenError::UnknownKey
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
