//! Figure 5, memory: the resident set of a process carrying the layer once it caches a
//! million sessions and a hundred thousand verified tokens, against the same process
//! before it cached anything.
//!
//! The caches are filled through the public API only: the child (`fill-memory`) signs one
//! HS256 token per seeded session and authenticates it, which verifies the token, caches
//! it (the token cache keeps at most 100,000) and asks PostgreSQL once about its session,
//! whose answer is then cached. A second child does the same with the token cache off,
//! which splits the total between the two caches.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::AUTHORIZATION;
use serde::{Deserialize, Serialize};
use session_guard::{AuthError, Authenticator, PostgresLiveness};
use session_testdb::TestDb;

use crate::child::Child;
use crate::cli::Args;
use crate::hello::wait_for_listener;
use crate::report::{Round, Section, Target, Unit};
use crate::seed::{self, Population};
use crate::tokens::{self, Signer};
use crate::{Result, Settings, cpu, http1};

/// The sessions seeded, all of which the child caches.
const POPULATION: Population = Population {
    sessions: 1_000_000,
    users: 10_000,
    revoked_every: 10,
};
/// Verified tokens the figure asks the layer to hold (the layer's default capacity).
const TOKEN_CACHE: u64 = 100_000;
/// Capacity over what the caches must hold, in percent: `quick_cache`'s shards fill
/// unevenly, so a cache of exactly 1,000,000 drops a few entries before it is full (1 to
/// 8 of 1,000 sampled sessions in earlier runs), and the figure is about holding them all.
const HEADROOM_PERCENT: u64 = 2;

/// `entries` plus [`HEADROOM_PERCENT`].
const fn with_headroom(entries: u64) -> u64 {
    entries + entries * HEADROOM_PERCENT / 100
}
/// Longest the child may spend filling its caches; then it reports what it has.
const FILL_LIMIT: Duration = Duration::from_secs(300);
/// Authentications in flight in the child.
const TASKS: u64 = 64;
/// Liveness connections in the child's pool.
const POOL_SIZE: usize = 16;
/// Sessions looked up again afterwards, to confirm they are still cached.
const SAMPLE: u64 = 1_000;
/// Target: resident memory with the caches full.
const TARGET_MB: f64 = 300.0;
const KIB_PER_MB: f64 = 1024.0;

/// How the figure is measured, for BENCHMARKS.md.
pub(crate) const METHOD: &str = "\
A database with 1,000,000 sessions of 10,000 users (one in ten revoked). A child \
process builds `PostgresLiveness` (cache capacity 1,020,000, live TTL raised to one \
hour so that entries stay while the cache fills, pool of 16) and an `Authenticator` \
with HS256 keys and a token cache of 102,000 (2% over what they must hold: a cache \
filled to exactly its capacity drops a few entries, its shards filling unevenly), then \
reads its `VmRSS`: the \
baseline, an empty layer process. Then 64 tasks sign one token per session and call \
`Authenticator::authenticate` with it (through the public API only: that verifies and \
caches the token, asks PostgreSQL once and caches the session's answer, live or \
revoked), for at most 300 s. `VmRSS` is read again once every session has been \
answered (MB are MiB). Afterwards 1,000 sessions spread over the range are \
authenticated again: the liveness queries that causes count the sessions the cache \
has evicted again (expected: none), and the \
share already answerable from both caches estimates how many tokens the token cache \
holds. In each round a second child does \
the same with the token cache off (capacity 0): its growth is the sessions' share, \
the difference is the tokens'.";

/// What the child reports, as one JSON line.
#[derive(Debug, Serialize, Deserialize)]
struct Filled {
    rss_empty_kib: u64,
    rss_full_kib: u64,
    rss_peak_kib: u64,
    sessions_answered: u64,
    live: u64,
    ended: u64,
    errors: u64,
    fill_millis: u64,
    liveness_queries: u64,
    listener_connects: u64,
    sampled: u64,
    sample_liveness_misses: u64,
    sample_token_hits: u64,
}

/// Runs figure 5 for `settings.rounds` rounds; each round is a fresh child.
pub(crate) async fn run(settings: Settings) -> Result<Section> {
    let db = TestDb::new().await;
    let client = db.connect().await;
    eprintln!("memory: seeding {} sessions ...", POPULATION.sessions);
    let seeding = Instant::now();
    POPULATION.seed(&client).await?;
    let mut section = Section::new("5. Memory", METHOD);
    section.notes.push(format!(
        "seeding {} sessions took {:.1} s",
        POPULATION.sessions,
        seeding.elapsed().as_secs_f64()
    ));
    for round_index in 0..settings.rounds {
        eprintln!(
            "memory: round {}/{}: a child caches {} sessions ...",
            round_index + 1,
            settings.rounds,
            POPULATION.sessions
        );
        let full = fill_in_child(&db.url(), TOKEN_CACHE).await?;
        eprintln!("memory: the same with the token cache off ...");
        let sessions_only = fill_in_child(&db.url(), 0).await?;
        section.push(record(&full, &sessions_only));
    }
    Ok(section)
}

/// Runs `fill-memory` with a token cache of `token_cache` entries; returns its report.
async fn fill_in_child(database_url: &str, token_cache: u64) -> Result<Filled> {
    let limit = FILL_LIMIT.as_secs().to_string();
    let token_cache = token_cache.to_string();
    let mut child = Child::spawn([
        "fill-memory",
        "--database-url",
        database_url,
        "--max-seconds",
        limit.as_str(),
        "--token-cache",
        token_cache.as_str(),
    ])?;
    let line = child
        .line_after("filled", FILL_LIMIT + Duration::from_secs(120))
        .await?;
    child.finish(Duration::from_secs(30)).await?;
    Ok(serde_json::from_str(&line)?)
}

#[allow(
    clippy::cast_precision_loss,
    reason = "memory sizes and counts stay far below 2^52"
)]
fn record(filled: &Filled, sessions_only: &Filled) -> Round {
    let mut round = Round::default();
    let megabytes = |kib: u64| kib as f64 / KIB_PER_MB;
    let empty = megabytes(filled.rss_empty_kib);
    let full = megabytes(filled.rss_full_kib);
    round.value(
        "RSS of an empty layer process, baseline",
        empty,
        Unit::Megabytes,
    );
    round
        .value("RSS with the caches full", full, Unit::Megabytes)
        .target(Target::Below(TARGET_MB));
    round.value(
        "RSS full / empty",
        full / empty.max(f64::EPSILON),
        Unit::Ratio,
    );
    let sessions_growth = sessions_only
        .rss_full_kib
        .saturating_sub(sessions_only.rss_empty_kib);
    let tokens_growth = filled
        .rss_full_kib
        .saturating_sub(filled.rss_empty_kib)
        .saturating_sub(sessions_growth);
    round.value(
        "of which the 1M sessions (second child, token cache off)",
        megabytes(sessions_growth),
        Unit::Megabytes,
    );
    round.value(
        "of which the tokens (the difference; a cache of 102,000)",
        megabytes(tokens_growth),
        Unit::Megabytes,
    );
    round.value(
        "bytes per cached session",
        (sessions_growth * 1024) as f64 / sessions_only.sessions_answered.max(1) as f64,
        Unit::Count,
    );
    round.value(
        "bytes per cached token",
        (tokens_growth * 1024) as f64 / with_headroom(TOKEN_CACHE) as f64,
        Unit::Count,
    );
    round.value(
        "peak RSS (VmHWM)",
        megabytes(filled.rss_peak_kib),
        Unit::Megabytes,
    );
    round.value(
        "sessions answered (each answer cached)",
        filled.sessions_answered as f64,
        Unit::Count,
    );
    round.value(
        "tokens in the token cache (estimate from the sample)",
        filled.sample_token_hits as f64 * POPULATION.sessions as f64 / filled.sampled.max(1) as f64,
        Unit::Count,
    );
    round.value(
        "fill time",
        Duration::from_millis(filled.fill_millis).as_secs_f64(),
        Unit::Seconds,
    );
    let shortfall = |filled: &Filled| {
        POPULATION.sessions - filled.sessions_answered.min(POPULATION.sessions) + filled.errors
    };
    round
        .count(
            "sessions not answered (errors, or the time limit hit)",
            shortfall(filled) + shortfall(sessions_only),
        )
        .target(Target::AtMost(0.0));
    // A full cache may evict a few entries before it holds exactly its capacity (its
    // shards fill unevenly): a measurement, not an error.
    round.value(
        "sampled sessions evicted again (of 2 × 1,000)",
        (filled.sample_liveness_misses + sessions_only.sample_liveness_misses) as f64,
        Unit::Count,
    );
    for (child, filled) in [("first", filled), ("second", sessions_only)] {
        if filled.liveness_queries != filled.sessions_answered || filled.listener_connects != 1 {
            round.note(format!(
                "{child} child: {} liveness queries for {} sessions, listener connected {} \
                 time(s)",
                filled.liveness_queries, filled.sessions_answered, filled.listener_connects
            ));
        }
    }
    if filled.ended != POPULATION.sessions / POPULATION.revoked_every {
        round.note(format!(
            "{} live and {} revoked sessions cached",
            filled.live, filled.ended
        ));
    }
    round
}

/// `fill-memory`: the child side. Prints `filled <json>` and exits.
pub(crate) async fn fill(args: &Args) -> Result<()> {
    session_guard::install_crypto_provider();
    let database: session_guard::postgres::DatabaseConfig =
        args.required("database-url")?.parse()?;
    let limit = Duration::from_secs(args.number("max-seconds", FILL_LIMIT.as_secs())?);
    let secret = tokens::random_secret()?;
    let liveness = PostgresLiveness::builder(database)
        .with_cache_capacity(with_headroom(POPULATION.sessions))
        .with_live_ttl(Duration::from_secs(3_600))
        .with_pool_size(POOL_SIZE)
        .start()?;
    wait_for_listener(&liveness).await?;
    let token_cache = args.number("token-cache", TOKEN_CACHE)?;
    let auth = Authenticator::new(tokens::hs256_verifier(&secret)?, liveness.clone())
        .with_token_cache_capacity(with_headroom(token_cache));
    let signer = Arc::new(Signer::hs256(&secret));
    let issued_at = tokens::unix_now();
    let rss_empty_kib = cpu::status_kib("self", "VmRSS")?;

    let started = Instant::now();
    let deadline = started + limit;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (auth, signer, next) = (auth.clone(), Arc::clone(&signer), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= POPULATION.sessions || Instant::now() > deadline {
                    return Ok::<_, crate::Error>(outcome);
                }
                let headers = headers(&signer, index, issued_at)?;
                outcome.count(
                    &auth.authenticate(&headers).await,
                    POPULATION.is_revoked(index),
                );
            }
        }));
    }
    let mut outcome = Outcome::default();
    for task in tasks {
        outcome.merge(&task.await??);
    }
    let fill_millis = u64::try_from(started.elapsed().as_millis())?;
    let stats = liveness.stats();
    let rss_full_kib = cpu::status_kib("self", "VmRSS")?;
    let rss_peak_kib = cpu::status_kib("self", "VmHWM")?;

    // Confirm what is cached, after the resident set has been read.
    let answered = outcome.live + outcome.ended;
    let step = (answered / SAMPLE).max(1);
    let (mut sampled, mut token_hits) = (0, 0);
    let misses_before = liveness.stats().misses;
    for index in (0..answered)
        .step_by(usize::try_from(step)?)
        .take(usize::try_from(SAMPLE)?)
    {
        let headers = headers(&signer, index, issued_at)?;
        if auth.authenticate_cached(&headers).is_some() {
            token_hits += 1;
        }
        let _ = auth.authenticate(&headers).await;
        sampled += 1;
    }
    let filled = Filled {
        rss_empty_kib,
        rss_full_kib,
        rss_peak_kib,
        sessions_answered: answered,
        live: outcome.live,
        ended: outcome.ended,
        errors: outcome.errors,
        fill_millis,
        liveness_queries: stats.misses,
        listener_connects: stats.listener_connects,
        sampled,
        sample_liveness_misses: liveness.stats().misses - misses_before,
        sample_token_hits: token_hits,
    };
    println!("filled {}", serde_json::to_string(&filled)?);
    Ok(())
}

/// The request headers for session `index`: a freshly signed token for it. The same
/// index and `issued_at` give the same token.
fn headers(signer: &Signer, index: u64, issued_at: u64) -> Result<HeaderMap> {
    let user = seed::user_id(POPULATION.owner(index));
    let token = signer.sign(&user, &seed::session_id(index), issued_at, 3_600)?;
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, http1::bearer(&token)?);
    Ok(headers)
}

/// Authentications by outcome.
#[derive(Debug, Default)]
struct Outcome {
    live: u64,
    ended: u64,
    errors: u64,
}

impl Outcome {
    fn count(&mut self, outcome: &Result<session_guard::AuthContext, AuthError>, revoked: bool) {
        match outcome {
            Ok(_) if !revoked => self.live += 1,
            Err(AuthError::SessionNotLive(_)) if revoked => self.ended += 1,
            _ => self.errors += 1,
        }
    }

    fn merge(&mut self, other: &Self) {
        self.live += other.live;
        self.ended += other.ended;
        self.errors += other.errors;
    }
}
