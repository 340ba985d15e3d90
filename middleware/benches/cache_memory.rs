//! The liveness cache's memory and lookup time at one and ten million sessions, without
//! PostgreSQL: `LivenessCache` on an in-memory `SessionQuery` that knows every session,
//! filled through `Authenticator::authenticate` (the public API) with one HS256 token per
//! session, 64 tasks at a time. The same population as figure 5 (100,000 users, one
//! session in ten revoked), the same capacities (10,200,000 sessions; the token cache's
//! default plus 2%) and the same lookups (10,000 sessions spread over what is cached,
//! each with a fresh token, then with the same token through `authenticate_cached`); only
//! the database is left out, so that a busy machine fills ten million sessions in a
//! minute rather than failing figure 5's time limit.
//!
//! `cargo bench -p portcullis --bench cache_memory`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::AUTHORIZATION;
use jsonwebtoken::{EncodingKey, Header};
use portcullis::{
    AuthError, Authenticator, DEFAULT_TOKEN_CACHE_CAPACITY, FeedEvent, KeySet, Liveness,
    LivenessCache, LivenessError, RevocationFeed, SessionQuery, SessionRecord, SessionState,
    TokenVerifier, VerificationKey,
};
use uuid::Uuid;

const SESSIONS: u64 = 10_000_000;
const USERS: u64 = 100_000;
const REVOKED_EVERY: u64 = 10;
const CHECKPOINTS: [u64; 2] = [1_000_000, SESSIONS];
const SAMPLE: u64 = 10_000;
const TASKS: u64 = 64;
const SECRET: &[u8] = b"cache-memory-probe-secret-0123456789";

fn session_id(index: u64) -> Uuid {
    Uuid::from_u64_pair(0x5e55_1011, index)
}

fn user_id(index: u64) -> Uuid {
    Uuid::from_u64_pair(0x0005_e700, index % USERS)
}

fn revoked(index: u64) -> bool {
    index.is_multiple_of(REVOKED_EVERY)
}

/// Every session of the population, computed from its id: no map to weigh.
struct Population;

impl SessionQuery for Population {
    async fn session(&self, session: Uuid) -> Result<Option<SessionRecord>, LivenessError> {
        let (tag, index) = session.as_u64_pair();
        if tag != 0x5e55_1011 || index >= SESSIONS {
            return Ok(None);
        }
        let state = if revoked(index) {
            SessionState::Revoked
        } else {
            SessionState::Live {
                remaining: Duration::from_secs(86_400),
            }
        };
        Ok(Some(SessionRecord::new(
            user_id(index),
            state,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )))
    }
}

/// Connected, then silent.
struct Quiet(bool);

impl RevocationFeed for Quiet {
    async fn next_event(&mut self) -> Option<FeedEvent> {
        if std::mem::replace(&mut self.0, true) {
            std::future::pending::<()>().await;
        }
        Some(FeedEvent::Connected)
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn headers(index: u64, issued_at: u64) -> HeaderMap {
    let claims = serde_json::json!({
        "iss": "probe", "aud": "api", "sub": user_id(index).to_string(),
        "sid": session_id(index).to_string(), "iat": issued_at, "exp": issued_at + 3_600,
    });
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("hs".into());
    let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    headers
}

fn right(outcome: &Result<portcullis::AuthContext, AuthError>, index: u64) -> bool {
    match outcome {
        Ok(_) => !revoked(index),
        Err(AuthError::SessionNotLive(Liveness::Revoked)) => revoked(index),
        Err(_) => false,
    }
}

fn nearest_rank(sorted: &[u64], per_mille: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * per_mille / 1000).min(sorted.len() - 1)]
}

#[tokio::main]
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::too_many_lines,
    reason = "a measurement: sizes and nanoseconds far below 2^52, printed"
)]
async fn main() {
    portcullis::install_crypto_provider();
    let cache = LivenessCache::builder(Population)
        .with_capacity(SESSIONS + SESSIONS / 50)
        .with_live_ttl(Duration::from_secs(3_600))
        .start(Quiet(false));
    cache
        .wait_for_feed(Duration::from_secs(5))
        .await
        .expect("connected");
    let keys = KeySet::new([VerificationKey::hmac("hs", SECRET).unwrap()]);
    let verifier = TokenVerifier::builder(keys)
        .issuer("probe")
        .audience("api")
        .build();
    let auth = Authenticator::new(verifier, cache.clone()).with_token_cache_capacity(
        DEFAULT_TOKEN_CACHE_CAPACITY + DEFAULT_TOKEN_CACHE_CAPACITY / 50,
    );
    let issued_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let empty = rss_kib();
    println!("RSS empty: {:.1} MiB", empty as f64 / 1024.0);
    let mut from = 0;
    let mut at_checkpoint = Vec::new();
    for (round, until) in CHECKPOINTS.into_iter().enumerate() {
        let started = Instant::now();
        let next = Arc::new(AtomicU64::new(from));
        let wrong = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (auth, next, wrong) = (auth.clone(), Arc::clone(&next), Arc::clone(&wrong));
                tokio::spawn(async move {
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= until {
                            return;
                        }
                        if !right(&auth.authenticate(&headers(index, issued_at)).await, index) {
                            wrong.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        from = until;
        let rss = rss_kib();
        at_checkpoint.push((until, rss));
        println!(
            "filled {until} sessions in {:.1} s ({} wrong); RSS {:.1} MiB",
            started.elapsed().as_secs_f64(),
            wrong.load(Ordering::Relaxed),
            rss as f64 / 1024.0
        );
        let sample_issued_at = issued_at + 1 + round as u64;
        let step = (until / SAMPLE).max(1);
        let requests: Vec<(u64, HeaderMap)> = (0..until)
            .step_by(step as usize)
            .take(SAMPLE as usize)
            .map(|index| (index, headers(index, sample_issued_at)))
            .collect();
        let misses_before = cache.stats().misses;
        let (mut fresh, mut cached, mut wrong) = (Vec::new(), Vec::new(), 0);
        for (index, headers) in &requests {
            let started = Instant::now();
            let outcome = auth.authenticate(headers).await;
            fresh.push(started.elapsed().as_nanos() as u64);
            wrong += u64::from(!right(&outcome, *index));
        }
        for (_, headers) in &requests {
            if auth.authenticate_cached(headers).is_none() {
                let _ = auth.authenticate(headers).await;
            }
        }
        let mut unanswered = 0;
        for (index, headers) in &requests {
            let started = Instant::now();
            let outcome = auth.authenticate_cached(headers);
            let nanos = started.elapsed().as_nanos() as u64;
            match outcome {
                Some(outcome) if right(&outcome, *index) => cached.push(nanos),
                Some(_) => wrong += 1,
                None => unanswered += 1,
            }
        }
        fresh.sort_unstable();
        cached.sort_unstable();
        println!(
            "at {until}: fresh token p50 {} ns p99 {} ns; cached token p50 {} ns p99 {} ns; \
             {wrong} wrong, {unanswered} unanswered, {} queries while sampling",
            nearest_rank(&fresh, 500),
            nearest_rank(&fresh, 990),
            nearest_rank(&cached, 500),
            nearest_rank(&cached, 990),
            cache.stats().misses - misses_before
        );
    }
    if let [(first, first_rss), (last, last_rss)] = at_checkpoint[..] {
        println!(
            "bytes per cached session ({first} to {last}): {:.1}",
            (last_rss - first_rss) as f64 * 1024.0 / (last - first) as f64
        );
    }
}
