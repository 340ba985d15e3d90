//! Figure 5, memory at scale: the resident set of a process carrying the layer once it
//! caches ten million sessions (and its default 100,000 verified tokens), and how long a
//! lookup takes at that size against the same at one million.
//!
//! The caches are filled through the public API only: the child (`fill-memory`) signs one
//! HS256 token per seeded session and authenticates it, which verifies the token, caches
//! it (the token cache keeps the newest 100,000 or so) and asks PostgreSQL once about its
//! session, whose answer is then cached. At each checkpoint (one million sessions, then
//! all ten) the child stops, reads its resident set and times lookups of sessions spread
//! over everything cached so far. Filling ten million sessions takes minutes, so the
//! figure runs once whatever `--rounds` says.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::AUTHORIZATION;
use portcullis::{
    AuthError, Authenticator, DEFAULT_TOKEN_CACHE_CAPACITY, Liveness, PostgresLiveness,
};
use portcullis_testdb::TestDb;
use serde::{Deserialize, Serialize};

use crate::child::Child;
use crate::cli::Args;
use crate::hello::wait_for_listener;
use crate::load::nearest_rank;
use crate::report::{Round, Section, Target, Unit};
use crate::seed::{self, Population};
use crate::tokens::{self, Signer};
use crate::{Result, Settings, cpu, http1};

/// The sessions seeded, all of which the child caches.
const POPULATION: Population = Population {
    sessions: 10_000_000,
    users: 100_000,
    revoked_every: 10,
};
/// Sessions cached when the child stops to measure; the last is every session.
const CHECKPOINTS: [u64; 2] = [1_000_000, POPULATION.sessions];
/// Capacity over what the caches must hold, in percent: `quick_cache`'s shards fill
/// unevenly, so a cache of exactly its population drops a few entries before it is full,
/// and the figure is about holding them all.
const HEADROOM_PERCENT: u64 = 2;

/// `entries` plus [`HEADROOM_PERCENT`].
const fn with_headroom(entries: u64) -> u64 {
    entries + entries * HEADROOM_PERCENT / 100
}
/// Longest the child may spend filling its caches; then it reports what it has.
const FILL_LIMIT: Duration = Duration::from_secs(600);
/// Authentications in flight in the child.
const TASKS: u64 = 64;
/// Liveness connections in the child's pool.
const POOL_SIZE: usize = 16;
/// Sessions looked up at each checkpoint, spread over what is cached.
const SAMPLE: u64 = 10_000;
/// Target: resident memory with ten million sessions cached (1 GiB).
const TARGET_MB: f64 = 1024.0;
const KIB_PER_MB: f64 = 1024.0;

/// How the figure is measured, for BENCHMARKS.md.
pub(crate) const METHOD: &str = "\
A database with 10,000,000 sessions of 100,000 users (one in ten revoked). A child \
process builds `PostgresLiveness` (cache capacity 10,200,000, live TTL raised to one \
hour so that entries stay while the cache fills, pool of 16) and an `Authenticator` \
with HS256 keys and its default token cache (100,000, plus 2%: a cache filled to \
exactly its capacity drops a few entries, its shards filling unevenly), then reads its \
`VmRSS`: the baseline, an empty layer process. Then 64 tasks sign one token per session \
and call `Authenticator::authenticate` with it (the public API only: that verifies and \
caches the token, asks PostgreSQL once and caches the session's answer, live or \
revoked). At 1,000,000 sessions and again at 10,000,000 the tasks stop, `VmRSS` is \
read (MB are MiB), and 10,000 sessions spread over everything cached so far are looked \
up, each call timed on its own: first with a freshly signed token (the token is \
verified, then the session is found in the liveness cache: no query is expected, and \
any is counted), then, after one untimed pass that asks again for each token the token \
cache let go (it admits new tokens as cold and evicts those first), with the same \
token through `authenticate_cached` (one probe of the token cache and one load of the \
session's cell; only answered calls are timed, the others are counted). Bytes per cached session are the growth from the first \
checkpoint to the second over the 9,000,000 sessions added (the token cache is full \
at both). The figure runs once: filling takes minutes.";

/// What the child reports, as one JSON line.
#[derive(Debug, Serialize, Deserialize)]
struct Filled {
    rss_empty_kib: u64,
    rss_peak_kib: u64,
    checkpoints: Vec<Checkpoint>,
    live: u64,
    ended: u64,
    errors: u64,
    liveness_queries: u64,
    listener_connects: u64,
}

/// The child's state at one checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    /// Sessions answered (each answer cached) so far.
    sessions: u64,
    rss_kib: u64,
    /// Time spent filling up to here, sampling excluded.
    fill_millis: u64,
    /// Sorted latencies of the fresh-token lookups, in nanoseconds.
    fresh_token_nanos: Vec<u64>,
    /// Sorted latencies of the cached-token lookups the hot path answered, in nanoseconds.
    cached_token_nanos: Vec<u64>,
    /// Lookups whose answer was not what the seed says (live or revoked).
    wrong_answers: u64,
    /// Cached-token lookups the hot path could not answer: tokens the token cache had
    /// already let go.
    cached_misses: u64,
    /// Liveness queries the sampling caused: sessions the cache had dropped.
    sample_queries: u64,
}

/// Runs figure 5 once (see the module documentation for why once).
pub(crate) async fn run(_settings: Settings) -> Result<Section> {
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
    eprintln!(
        "memory: a child caches {} sessions, stopping at {CHECKPOINTS:?} ...",
        POPULATION.sessions
    );
    let filled = fill_in_child(&db.url()).await?;
    section.push(record(&filled));
    Ok(section)
}

/// Runs `fill-memory`; returns its report.
async fn fill_in_child(database_url: &str) -> Result<Filled> {
    let limit = FILL_LIMIT.as_secs().to_string();
    let mut child = Child::spawn([
        "fill-memory",
        "--database-url",
        database_url,
        "--max-seconds",
        limit.as_str(),
    ])?;
    let line = child
        .line_after("filled", FILL_LIMIT + Duration::from_secs(180))
        .await?;
    child.finish(Duration::from_secs(60)).await?;
    Ok(serde_json::from_str(&line)?)
}

/// Millions, for figure names ("1M").
fn millions(sessions: u64) -> String {
    format!("{}M", sessions / 1_000_000)
}

#[allow(
    clippy::cast_precision_loss,
    reason = "memory sizes and counts stay far below 2^52"
)]
fn record(filled: &Filled) -> Round {
    let mut round = Round::default();
    let megabytes = |kib: u64| kib as f64 / KIB_PER_MB;
    round.value(
        "RSS of an empty layer process, baseline",
        megabytes(filled.rss_empty_kib),
        Unit::Megabytes,
    );
    for checkpoint in &filled.checkpoints {
        let at = millions(checkpoint.sessions);
        let measure = round.value(
            format!("RSS with {at} sessions and the token cache full"),
            megabytes(checkpoint.rss_kib),
            Unit::Megabytes,
        );
        if checkpoint.sessions == POPULATION.sessions {
            measure.target(Target::Below(TARGET_MB));
        }
    }
    if let [first, .., last] = filled.checkpoints.as_slice() {
        let added = last.sessions.saturating_sub(first.sessions).max(1);
        round.value(
            format!(
                "bytes per cached session ({} to {})",
                millions(first.sessions),
                millions(last.sessions)
            ),
            (last.rss_kib.saturating_sub(first.rss_kib) * 1024) as f64 / added as f64,
            Unit::Count,
        );
    }
    round.value(
        "peak RSS (VmHWM)",
        megabytes(filled.rss_peak_kib),
        Unit::Megabytes,
    );
    record_lookups(&mut round, &filled.checkpoints);
    record_fill(&mut round, filled);
    round
}

/// The lookup latencies at each checkpoint, and how they grew from the first to the last.
#[allow(
    clippy::cast_precision_loss,
    reason = "nanosecond latencies stay far below 2^52"
)]
fn record_lookups(round: &mut Round, checkpoints: &[Checkpoint]) {
    for checkpoint in checkpoints {
        let at = millions(checkpoint.sessions);
        for (what, nanos) in [
            (
                "fresh token (verify, then the session cache)",
                &checkpoint.fresh_token_nanos,
            ),
            (
                "cached token (one probe, one load)",
                &checkpoint.cached_token_nanos,
            ),
        ] {
            for (label, per_mille) in [("p50", 500), ("p99", 990)] {
                let sorted: Vec<Duration> =
                    nanos.iter().map(|&n| Duration::from_nanos(n)).collect();
                if let Some(latency) = nearest_rank(&sorted, per_mille) {
                    round.value(
                        format!("lookup at {at}: {what} {label}"),
                        latency.as_nanos() as f64,
                        Unit::Nanos,
                    );
                }
            }
        }
    }
    if let [first, .., last] = checkpoints {
        let p50 = |nanos: &[u64]| nanos.get(nanos.len() / 2).copied().unwrap_or(0) as f64;
        for (what, first_p50, last_p50) in [
            (
                "fresh token",
                p50(&first.fresh_token_nanos),
                p50(&last.fresh_token_nanos),
            ),
            (
                "cached token",
                p50(&first.cached_token_nanos),
                p50(&last.cached_token_nanos),
            ),
        ] {
            round.value(
                format!(
                    "lookup p50 at {} / at {}: {what}",
                    millions(last.sessions),
                    millions(first.sessions)
                ),
                last_p50 / first_p50.max(1.0),
                Unit::Ratio,
            );
        }
    }
}

/// How fast the caches filled, and whether every session was answered right.
#[allow(clippy::cast_precision_loss, reason = "counts stay far below 2^52")]
fn record_fill(round: &mut Round, filled: &Filled) {
    let mut filled_before = (0, 0);
    for checkpoint in &filled.checkpoints {
        let (sessions, millis) = (
            checkpoint.sessions - filled_before.0,
            checkpoint.fill_millis - filled_before.1,
        );
        round.value(
            format!(
                "fill rate up to {} (authentications/s, one query each)",
                millions(checkpoint.sessions)
            ),
            sessions as f64 * 1000.0 / millis.max(1) as f64,
            Unit::PerSecond,
        );
        filled_before = (checkpoint.sessions, checkpoint.fill_millis);
    }
    if let Some(last) = filled.checkpoints.last() {
        round.value(
            "fill time, sampling excluded",
            Duration::from_millis(last.fill_millis).as_secs_f64(),
            Unit::Seconds,
        );
    }
    let answered = filled.live + filled.ended;
    round
        .count(
            "sessions not answered (errors, or the time limit hit)",
            POPULATION.sessions - answered.min(POPULATION.sessions) + filled.errors,
        )
        .target(Target::AtMost(0.0));
    round
        .count(
            "sampled lookups with a wrong answer",
            filled.checkpoints.iter().map(|c| c.wrong_answers).sum(),
        )
        .target(Target::AtMost(0.0));
    // A full cache may evict a few entries before it holds exactly its capacity (its
    // shards fill unevenly): a measurement, not an error.
    round.value(
        "sampled sessions the cache had dropped (queries while sampling)",
        filled
            .checkpoints
            .iter()
            .map(|c| c.sample_queries)
            .sum::<u64>() as f64,
        Unit::Count,
    );
    round.value(
        "sampled cached tokens the hot path could not answer",
        filled
            .checkpoints
            .iter()
            .map(|c| c.cached_misses)
            .sum::<u64>() as f64,
        Unit::Count,
    );
    if filled.listener_connects != 1 {
        round.note(format!(
            "the listener connected {} time(s)",
            filled.listener_connects
        ));
    }
    if filled.ended != answered / POPULATION.revoked_every {
        round.note(format!(
            "{} live and {} revoked sessions cached",
            filled.live, filled.ended
        ));
    }
}

/// `fill-memory`: the child side. Prints `filled <json>` and exits.
pub(crate) async fn fill(args: &Args) -> Result<()> {
    portcullis::install_crypto_provider();
    let database: portcullis::postgres::DatabaseConfig = args.required("database-url")?.parse()?;
    let limit = Duration::from_secs(args.number("max-seconds", FILL_LIMIT.as_secs())?);
    let secret = tokens::random_secret()?;
    let liveness = PostgresLiveness::builder(database)
        .with_cache_capacity(with_headroom(POPULATION.sessions))
        .with_live_ttl(Duration::from_secs(3_600))
        .with_pool_size(POOL_SIZE)
        .start()?;
    wait_for_listener(&liveness).await?;
    let auth = Authenticator::new(tokens::hs256_verifier(&secret)?, liveness.clone())
        .with_token_cache_capacity(with_headroom(DEFAULT_TOKEN_CACHE_CAPACITY));
    let signer = Arc::new(Signer::hs256(&secret));
    let issued_at = tokens::unix_now();
    let rss_empty_kib = cpu::status_kib("self", "VmRSS")?;

    let deadline = Instant::now() + limit;
    let mut filling = Duration::ZERO;
    let mut outcome = Outcome::default();
    let mut checkpoints = Vec::with_capacity(CHECKPOINTS.len());
    let mut from = 0;
    for (index, &until) in CHECKPOINTS.iter().enumerate() {
        let started = Instant::now();
        outcome.merge(&fill_range(&auth, &signer, issued_at, from..until, deadline).await?);
        filling += started.elapsed();
        from = until;
        let rss_kib = cpu::status_kib("self", "VmRSS")?;
        // Tokens of their own: issued a second later per checkpoint, so none is cached.
        let sample_issued_at = issued_at + 1 + u64::try_from(index)?;
        let answered = outcome.live + outcome.ended;
        checkpoints.push(
            sample(
                &auth,
                &liveness,
                &signer,
                sample_issued_at,
                answered,
                rss_kib,
                filling,
            )
            .await?,
        );
        if Instant::now() > deadline {
            break;
        }
    }
    let stats = liveness.stats();
    let filled = Filled {
        rss_empty_kib,
        rss_peak_kib: cpu::status_kib("self", "VmHWM")?,
        checkpoints,
        live: outcome.live,
        ended: outcome.ended,
        errors: outcome.errors,
        liveness_queries: stats.misses,
        listener_connects: stats.listener_connects,
    };
    println!("filled {}", serde_json::to_string(&filled)?);
    Ok(())
}

/// Authenticates one fresh token for each session in `range` on [`TASKS`] tasks, until
/// `deadline`.
async fn fill_range(
    auth: &Authenticator,
    signer: &Arc<Signer>,
    issued_at: u64,
    range: std::ops::Range<u64>,
    deadline: Instant,
) -> Result<Outcome> {
    let next = Arc::new(AtomicU64::new(range.start));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (auth, signer, next) = (auth.clone(), Arc::clone(signer), Arc::clone(&next));
        let end = range.end;
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= end || Instant::now() > deadline {
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
    Ok(outcome)
}

/// Times [`SAMPLE`] lookups of sessions spread over the first `answered`, each with a
/// fresh token and then with the same token again.
async fn sample(
    auth: &Authenticator,
    liveness: &PostgresLiveness,
    signer: &Signer,
    issued_at: u64,
    answered: u64,
    rss_kib: u64,
    filling: Duration,
) -> Result<Checkpoint> {
    let step = (answered / SAMPLE).max(1);
    let requests = (0..answered)
        .step_by(usize::try_from(step)?)
        .take(usize::try_from(SAMPLE)?)
        .map(|index| Ok((index, headers(signer, index, issued_at)?)))
        .collect::<Result<Vec<_>>>()?;
    let queries_before = liveness.stats().misses;
    let (mut fresh, mut cached) = (Vec::new(), Vec::new());
    let (mut wrong_answers, mut cached_misses) = (0, 0);
    for (index, headers) in &requests {
        let started = Instant::now();
        let outcome = auth.authenticate(headers).await;
        fresh.push(nanos_since(started));
        if !is_right(&outcome, POPULATION.is_revoked(*index)) {
            wrong_answers += 1;
        }
    }
    // The token cache admits a new token as cold and lets it go first (CLOCK-Pro): ask
    // once more for each, so the timed pass below finds the ones it keeps.
    for (_, headers) in &requests {
        if auth.authenticate_cached(headers).is_none() {
            let _ = auth.authenticate(headers).await;
        }
    }
    for (index, headers) in &requests {
        let started = Instant::now();
        let outcome = auth.authenticate_cached(headers);
        let nanos = nanos_since(started);
        match outcome {
            Some(outcome) if is_right(&outcome, POPULATION.is_revoked(*index)) => {
                cached.push(nanos);
            }
            Some(_) => wrong_answers += 1,
            None => cached_misses += 1,
        }
    }
    fresh.sort_unstable();
    cached.sort_unstable();
    Ok(Checkpoint {
        sessions: answered,
        rss_kib,
        fill_millis: u64::try_from(filling.as_millis())?,
        fresh_token_nanos: fresh,
        cached_token_nanos: cached,
        wrong_answers,
        cached_misses,
        sample_queries: liveness.stats().misses - queries_before,
    })
}

fn nanos_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Whether `outcome` is what the seed says of the session: admitted when live, refused
/// as revoked when revoked.
fn is_right(outcome: &Result<portcullis::AuthContext, AuthError>, revoked: bool) -> bool {
    match outcome {
        Ok(_) => !revoked,
        Err(AuthError::SessionNotLive(Liveness::Revoked)) => revoked,
        Err(_) => false,
    }
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
    fn count(&mut self, outcome: &Result<portcullis::AuthContext, AuthError>, revoked: bool) {
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
