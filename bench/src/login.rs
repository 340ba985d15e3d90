//! The login figure: logins per second over HTTP against the bound Argon2 sets
//! (cores / time of one hash), and `GET /me` latency while the logins saturate the CPU.

use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::PasswordHasher as _;
use reqwest::StatusCode;
use serde_json::json;

use crate::load::{self, Bounds, Stats};
use crate::refresh::{PASSWORD, login, string_field};
use crate::report::{Round, Target, Unit};
use crate::server::{Server, http_client};
use crate::{Result, Settings};

/// How the figure is measured, for BENCHMARKS.md.
pub(crate) const METHOD: &str = "\
In the same rounds and server as figure 2. First the harness times one Argon2id hash \
with the server's parameters in its own process (the median of 11), before the server \
starts: the bound is cores ÷ that time. Then 2 × cores workers post `POST /auth/login` \
for one account for one phase while one more worker reads `GET /me` with a token of \
that account; logins/s counts 200s over the phase's wall time, and the `/me` latencies \
are client-side.";

/// Target: logins per second over the Argon2 bound.
const TARGET_RATIO: f64 = 0.8;
/// Target: `/me` p99 under login load.
const TARGET_ME_P99: Duration = Duration::from_millis(20);

/// The median time of one Argon2 hash with the default parameters (the server's), over
/// `samples` hashes.
pub(crate) fn argon2_hash_time(samples: usize) -> Result<Duration> {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        let started = Instant::now();
        let hash = Argon2::default()
            .hash_password(PASSWORD.as_bytes())
            .map_err(|e| format!("argon2: {e}"))?;
        times.push(started.elapsed());
        std::hint::black_box(hash);
    }
    times.sort_unstable();
    Ok(times[times.len() / 2])
}

/// The login figures of one run.
#[derive(Debug)]
pub(crate) struct Figures {
    hash_time: Duration,
    cores: usize,
    logins: load::Run,
    me: load::Run,
}

/// Logs in with `2 * cores` workers while one more worker reads `/me`.
pub(crate) async fn run(
    server: &Server,
    hash_time: Duration,
    settings: Settings,
) -> Result<Figures> {
    let access = string_field(&login(server, "me reader").await?, "access_token")?;
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
    let logins = load::run(workers).await?;
    let me = me.await??;
    Ok(Figures {
        hash_time,
        cores: settings.cores,
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

async fn read_me(client: reqwest::Client, url: String, access: String, bounds: Bounds) -> Stats {
    let mut stats = Stats::default();
    while bounds.allow(stats.attempts()) {
        let started = Instant::now();
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
    pub(crate) fn record(&self, round: &mut Round) {
        let bound = load::per_second(self.cores, self.hash_time);
        let rate = self.logins.rate();
        round.value(
            "argon2 hash (median of 11, in-process)",
            self.hash_time.as_secs_f64() * 1000.0,
            Unit::Millis,
        );
        round.value(
            "login bound, baseline (cores / hash)",
            bound,
            Unit::PerSecond,
        );
        round.value("login over HTTP", rate, Unit::PerSecond);
        round
            .value(
                "login HTTP / bound",
                rate / bound.max(f64::EPSILON),
                Unit::Ratio,
            )
            .target(Target::AtLeast(TARGET_RATIO));
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
