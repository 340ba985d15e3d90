//! The login figure: logins per second over HTTP against the bound Argon2 sets
//! (cores / time of one hash), and `GET /me` latency while the logins saturate the CPU.

use std::time::{Duration, Instant};

use argon2::{Argon2, Block, Params};
use reqwest::StatusCode;
use serde_json::json;

use crate::load::{self, Bounds, Stats};
use crate::refresh::{PASSWORD, login, string_field};
use crate::report::{Round, Target, Unit};
use crate::server::{Server, http_client};
use crate::{Result, Settings, cpu};

/// How the figure is measured, for BENCHMARKS.md.
pub(crate) const METHOD: &str = "\
In the same rounds and server as figure 2. The harness times one Argon2id hash with \
the server's parameters in its own process, in a working-memory buffer it reuses (the \
pure cost of the hash, without allocating or faulting in its 19 MiB): 11 hashes just \
before the login phase and 11 just after, so that a change in the machine's speed \
during the phase shows in both; the bound is cores ÷ the median of the 22. After the \
phase it times 11 hashes on each of `cores` threads at once (each its own buffer), as \
the server's hashing threads run under load, and reports their median against the \
hash alone. During the \
phase, 2 × cores workers post `POST /auth/login` for one account, while one more \
client sends `GET /me` with a token of that account every 5 ms (a paced reader, so \
that it measures latency without taking CPU from the logins; each latency counts from \
the moment the request was due, so a stalled server is not hidden by sending later). \
Logins/s counts 200s over the phase's wall time.";

/// Target: logins per second over the Argon2 bound.
const TARGET_RATIO: f64 = 0.95;
/// Target: `/me` p99 under login load.
const TARGET_ME_P99: Duration = Duration::from_millis(5);
/// Hashes timed before the phase, and again after it.
const HASH_SAMPLES: usize = 11;
/// How often the `/me` reader sends a request.
const ME_INTERVAL: Duration = Duration::from_millis(5);

/// Times `samples` Argon2 hashes with the default parameters (the server's) in one
/// reused working-memory buffer, after one untimed hash that faults the buffer in.
fn argon2_hash_times(samples: usize) -> Result<Vec<Duration>> {
    let argon2 = Argon2::default();
    let mut blocks = vec![Block::default(); Params::default().block_count()];
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let salt = b"bench-salt-16byt";
    let mut times = Vec::with_capacity(samples);
    for sample in 0..=samples {
        let started = Instant::now();
        argon2
            .hash_password_into_with_memory(PASSWORD.as_bytes(), salt, &mut out, &mut blocks)
            .map_err(|e| format!("argon2: {e}"))?;
        if sample > 0 {
            times.push(started.elapsed());
        }
        std::hint::black_box(&out);
    }
    Ok(times)
}

/// [`argon2_hash_times`] on the blocking pool, so the runtime's timers keep running.
async fn time_hashes() -> Result<Vec<Duration>> {
    tokio::task::spawn_blocking(|| argon2_hash_times(HASH_SAMPLES)).await?
}

/// [`argon2_hash_times`] on `threads` threads at once, each with its own buffer, as the
/// server's hashing threads run under load: every hash of every thread. Hashes that
/// share the cores' last-level cache and memory bandwidth take longer than one alone.
async fn time_concurrent_hashes(threads: usize) -> Result<Vec<Duration>> {
    tokio::task::spawn_blocking(move || {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| scope.spawn(|| argon2_hash_times(HASH_SAMPLES)))
                .collect();
            let mut times = Vec::new();
            for worker in workers {
                times.extend(worker.join().map_err(|_| "a hashing thread panicked")??);
            }
            Ok(times)
        })
    })
    .await?
}

/// The login figures of one run.
#[derive(Debug)]
pub(crate) struct Figures {
    /// Median of the hashes timed before and after the phase.
    hash_time: Duration,
    /// Median of the hashes timed with every core hashing at once, after the phase.
    concurrent_hash_time: Duration,
    cores: usize,
    /// The server's CPU time over the login phase.
    server_cpu: Duration,
    logins: load::Run,
    me: load::Run,
}

/// Times the hash, logs in with `2 * cores` workers while the paced reader reads `/me`,
/// then times the hash again.
pub(crate) async fn run(server: &Server, settings: Settings) -> Result<Figures> {
    let access = string_field(&login(server, "me reader").await?, "access_token")?;
    let mut hash_times = time_hashes().await?;
    let bounds = Bounds::new(settings.duration, settings.max_requests_per_worker);
    let me = tokio::spawn(load::run([read_me(
        http_client()?,
        server.url("/me"),
        access,
        bounds,
    )]));
    let url = server.url("/auth/login");
    let mut workers = Vec::new();
    for _ in 0..2 * settings.cores {
        workers.push(log_in(http_client()?, url.clone(), bounds));
    }
    let cpu_before = cpu::process_time(server.pid())?;
    let logins = load::run(workers).await?;
    let server_cpu = cpu::process_time(server.pid())?.saturating_sub(cpu_before);
    let me = me.await??;
    hash_times.extend(time_hashes().await?);
    hash_times.sort_unstable();
    let mut concurrent = time_concurrent_hashes(settings.cores).await?;
    concurrent.sort_unstable();
    Ok(Figures {
        hash_time: hash_times[hash_times.len() / 2],
        concurrent_hash_time: concurrent[concurrent.len() / 2],
        cores: settings.cores,
        server_cpu,
        logins,
        me,
    })
}

async fn log_in(client: reqwest::Client, url: String, bounds: Bounds) -> Stats {
    let body = json!({
        "email": "bench@example.com",
        "password": PASSWORD,
        "device_name": "login load",
    });
    let mut stats = Stats::default();
    while bounds.allow(stats.attempts()) {
        let started = Instant::now();
        match client.post(&url).json(&body).send().await {
            Ok(response) => expect_ok(&mut stats, started, response).await,
            Err(e) => stats.transport_failure(e),
        }
    }
    stats
}

/// One request every [`ME_INTERVAL`]; a late request goes out at once, and its latency
/// counts from when it was due.
async fn read_me(client: reqwest::Client, url: String, access: String, bounds: Bounds) -> Stats {
    let mut stats = Stats::default();
    let mut schedule = tokio::time::interval(ME_INTERVAL);
    schedule.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while bounds.allow(stats.attempts()) {
        let started = schedule.tick().await.into_std();
        match client.get(&url).bearer_auth(&access).send().await {
            Ok(response) => expect_ok(&mut stats, started, response).await,
            Err(e) => stats.transport_failure(e),
        }
    }
    stats
}

/// Reads the whole body (so the connection is kept) and records the outcome.
async fn expect_ok(stats: &mut Stats, started: Instant, response: reqwest::Response) {
    let code = response.status();
    match response.bytes().await {
        Ok(_) if code == StatusCode::OK => stats.success(started),
        Ok(_) => stats.failure(format!("HTTP {code}")),
        Err(e) => stats.transport_failure(e),
    }
}

impl Figures {
    /// Records the login figures of this round.
    #[allow(
        clippy::cast_precision_loss,
        reason = "login counts stay far below 2^52"
    )]
    pub(crate) fn record(&self, round: &mut Round) {
        let bound = load::per_second(self.cores, self.hash_time);
        let rate = self.logins.rate();
        round.value(
            "argon2 hash (median of 2 × 11, in-process)",
            self.hash_time.as_secs_f64() * 1000.0,
            Unit::Millis,
        );
        round.value(
            "login bound, baseline (cores / hash)",
            bound,
            Unit::PerSecond,
        );
        round.value(
            "argon2 hash with every core hashing at once (median, in-process)",
            self.concurrent_hash_time.as_secs_f64() * 1000.0,
            Unit::Millis,
        );
        round.value(
            "argon2 hash, every core hashing / one alone",
            self.concurrent_hash_time.as_secs_f64() / self.hash_time.as_secs_f64().max(1e-9),
            Unit::Ratio,
        );
        round.value("login over HTTP", rate, Unit::PerSecond);
        round
            .value(
                "login HTTP / bound",
                rate / bound.max(f64::EPSILON),
                Unit::Ratio,
            )
            .target(Target::AtLeast(TARGET_RATIO));
        let logins = self.logins.stats.successes().max(1) as f64;
        round.value(
            "server CPU per login (the hash and everything else)",
            self.server_cpu.as_secs_f64() * 1000.0 / logins,
            Unit::Millis,
        );
        round
            .count("login errors", self.logins.stats.error_count() as u64)
            .target(Target::AtMost(0.0));
        let me = &self.me.stats;
        round.latency("GET /me under login load p50", me.percentile(500));
        if let Some(p99) = round.latency("GET /me under login load p99", me.percentile(990)) {
            p99.target(Target::Below(TARGET_ME_P99.as_secs_f64() * 1000.0));
        }
        round
            .count("GET /me errors", me.error_count() as u64)
            .target(Target::AtMost(0.0));
        for (kind, count) in self.logins.stats.errors() {
            round.note(format!("login error: {kind} x{count}"));
        }
        for (kind, count) in me.errors() {
            round.note(format!("/me error: {kind} x{count}"));
        }
    }
}
