//! Figure 1, what the layer costs: an axum hello service bare, against the same service
//! behind `SessionGuardLayer` (HS256, then EdDSA; `PostgresLiveness` with its defaults),
//! and behind a naive guard that verifies and queries PostgreSQL on every request.
//!
//! Each service is a child process of its own; the load generator ([`http1`]) runs here.
//! 10,000 sessions are seeded, one in ten revoked, and workers cycle through one token
//! per session, so the guarded services answer 401 to a tenth of the requests (counted as
//! answers, like the 200s). The server's CPU time comes from `/proc/<pid>/stat`, and
//! PostgreSQL's from its backends connected to the run's database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, StatusCode};
use portcullis_testdb::TestDb;

use crate::hello::{self, HelloService, Mode};
use crate::http1::{self, Connection};
use crate::load::{self, Bounds, Stats};
use crate::report::{Round, Section, Target, Unit};
use crate::seed::{self, Population};
use crate::tokens::{self, Signer};
use crate::{Result, Settings, cpu};

/// Sessions seeded, and distinct tokens per algorithm.
const POPULATION: Population = Population {
    sessions: 10_000,
    users: 1_000,
    revoked_every: 10,
};
/// Concurrent keep-alive connections of the load generator.
const CONNECTIONS: usize = 32;
/// Lifetime of the harness's tokens: longer than any run.
const TOKEN_LIFETIME_SECS: u64 = 3_600;
/// Longest warm-up pass (every token once) per service and round.
const WARM_UP_LIMIT: Duration = Duration::from_secs(60);
/// Target: the layer's throughput over the bare service's.
const TARGET_RATIO: f64 = 0.98;
/// Target: the layer's server CPU per request over the bare service's, in µs.
const TARGET_EXTRA_CPU_MICROS: f64 = 0.25;

/// The services.
const MODES: [Mode; 4] = [Mode::Bare, Mode::Hs256, Mode::EdDsa, Mode::Naive];

/// Slices per layer-cost round: the round's phase time is cut into this many slices for
/// each of bare, HS256 and EdDSA, interleaved.
const SLICES: usize = 3;

/// The order of slice `slice`: bare, HS256 and EdDSA rotated by one each slice, so that
/// within a round each service runs early, in the middle and late, and a machine that
/// speeds up or slows down favours none of them.
fn slice_order(slice: usize) -> [Mode; 3] {
    let mut order = [Mode::Bare, Mode::Hs256, Mode::EdDsa];
    let len = order.len();
    order.rotate_left(slice % len);
    order
}

/// How the figure is measured, for BENCHMARKS.md.
pub(crate) const METHOD: &str = "\
Four child processes serve the same axum `GET /hello` handler: **bare**; behind \
`SessionGuardLayer` with **HS256** tokens; behind it with **EdDSA** tokens (both with \
`PostgresLiveness` and every default: 15 s live TTL, pool of 4, 100k-token cache); and \
behind a **naive** axum middleware that verifies the EdDSA signature and runs one \
`SELECT` on `sessions` (pool of 16) on every request. The database holds 10,000 \
sessions of 1,000 users, one session in ten revoked; the harness signs one token per \
session and per algorithm, and 32 keep-alive HTTP/1.1 connections (a hyper client in \
the harness process) cycle through them, so a tenth of the answers are 401 (counted \
as answers; anything but 200 and 401 is an error). Before each timed phase a warm-up pass \
sends every token once. \
Requests/s counts answers over the phase's wall time; p50 and p99 are client-side \
latencies; server CPU per request is the child's utime + stime (`/proc/<pid>/stat`) \
over the phase, divided by the answers; PostgreSQL CPU per request is the same for \
the database backends connected to the run's database. The load generator shares the \
two cores with the service, so the absolute rates are the machine's, the ratios are \
the figure. The machine's speed drifts by tens of percent within a minute (other \
tenants), so a round interleaves the three services it compares: it cuts the phase \
time into 3 slices per service and runs bare, HS256, EdDSA, then HS256, EdDSA, bare, \
then EdDSA, bare, HS256 (each slice after its own warm-up pass), and a service's \
figures are its 3 slices added up. The naive service runs last, one whole phase.";

/// One timed phase against one service.
#[derive(Debug)]
struct Phase {
    run: load::Run,
    server_cpu: Duration,
    database_cpu: Duration,
}

/// Runs figure 1 for `settings.rounds` rounds.
pub(crate) async fn run(settings: Settings) -> Result<Section> {
    let db = TestDb::new().await;
    let client = db.connect().await;
    POPULATION.seed(&client).await?;
    let secret = tokens::random_secret()?;
    let dir = tempfile::tempdir()?;
    let secret_file = dir.path().join("hs256.secret");
    tokens::write_secret(&secret_file, &secret)?;
    let secret_file = secret_file.to_str().ok_or("temporary path is not UTF-8")?;

    eprintln!(
        "layer: signing {} tokens per algorithm ...",
        POPULATION.sessions
    );
    let eddsa_tokens = sign_all(&Signer::eddsa()?)?;
    let hs256_tokens = sign_all(&Signer::hs256(&secret))?;

    let mut services = Vec::new();
    for mode in MODES {
        let service = HelloService::start(mode, &db.url(), &[("secret-file", secret_file)]).await?;
        services.push((mode, service));
    }

    let mut section = Section::new("1. Layer cost", METHOD);
    let slice = Settings {
        duration: settings.duration / u32::try_from(SLICES)?,
        ..settings
    };
    for round_index in 0..settings.rounds {
        let mut phases: Vec<(Mode, Stats, Phase)> = Vec::new();
        let steps = (0..SLICES)
            .flat_map(|index| slice_order(index).map(|mode| (mode, slice)))
            .chain([(Mode::Naive, settings)]);
        for (mode, step) in steps {
            let service = services
                .iter()
                .find_map(|(started, service)| (*started == mode).then_some(service))
                .ok_or("a mode without a service")?;
            eprintln!(
                "layer: round {}/{}, {} ...",
                round_index + 1,
                settings.rounds,
                mode.name()
            );
            let tokens = if mode == Mode::Hs256 {
                &hs256_tokens
            } else {
                &eddsa_tokens
            };
            let warm = warm_up(service, tokens).await?;
            let phase = measure(service, tokens, &client, step).await?;
            match phases.iter_mut().find(|(seen, ..)| *seen == mode) {
                Some((_, warm_total, total)) => {
                    warm_total.merge(warm);
                    total.absorb(phase);
                }
                None => phases.push((mode, warm, phase)),
            }
        }
        section.push(record(&phases));
    }
    Ok(section)
}

impl Phase {
    /// Adds `other`, a later slice against the same service.
    fn absorb(&mut self, other: Self) {
        self.run.absorb(other.run);
        self.server_cpu += other.server_cpu;
        self.database_cpu += other.database_cpu;
    }
}

/// `Bearer` values of one token per seeded session.
fn sign_all(signer: &Signer) -> Result<Arc<[HeaderValue]>> {
    let now = tokens::unix_now();
    (0..POPULATION.sessions)
        .map(|index| {
            let user = seed::user_id(POPULATION.owner(index));
            let token = signer.sign(&user, &seed::session_id(index), now, TOKEN_LIFETIME_SECS)?;
            http1::bearer(&token)
        })
        .collect()
}

/// Sends every token once, so the timed phase sees the steady state.
async fn warm_up(service: &HelloService, tokens: &Arc<[HeaderValue]>) -> Result<Stats> {
    let per_worker = tokens.len().div_ceil(CONNECTIONS);
    let bounds = Bounds::new(WARM_UP_LIMIT, per_worker);
    let workers = (0..CONNECTIONS).map(|worker| {
        cycle(
            service.addr,
            Arc::clone(tokens),
            worker * per_worker,
            bounds,
        )
    });
    Ok(load::run(workers).await?.stats)
}

/// The timed phase, with the CPU time the service and PostgreSQL spent on it.
async fn measure(
    service: &HelloService,
    tokens: &Arc<[HeaderValue]>,
    client: &tokio_postgres::Client,
    settings: Settings,
) -> Result<Phase> {
    let backends = cpu::database_backends(client).await?;
    let database_before: Vec<_> = backends
        .iter()
        .map(|&pid| cpu::process_time(pid).ok())
        .collect();
    let server_before = cpu::process_time(service.pid())?;
    let bounds = Bounds::new(settings.duration, settings.max_requests_per_worker);
    let stride = tokens.len() / CONNECTIONS;
    let workers = (0..CONNECTIONS)
        .map(|worker| cycle(service.addr, Arc::clone(tokens), worker * stride, bounds));
    let run = load::run(workers).await?;
    let server_cpu = cpu::process_time(service.pid())?.saturating_sub(server_before);
    let database_cpu = backends
        .iter()
        .zip(database_before)
        .filter_map(|(&pid, before)| Some(cpu::process_time(pid).ok()?.saturating_sub(before?)))
        .sum();
    Ok(Phase {
        run,
        server_cpu,
        database_cpu,
    })
}

/// One connection, cycling through `tokens` from `start`, until `bounds` say stop.
async fn cycle(
    addr: std::net::SocketAddr,
    tokens: Arc<[HeaderValue]>,
    start: usize,
    bounds: Bounds,
) -> Stats {
    let mut stats = Stats::default();
    let mut connection = match Connection::open(addr).await {
        Ok(connection) => connection,
        Err(e) => {
            stats.failure(format!("connect: {e}"));
            return stats;
        }
    };
    let mut next = start;
    while bounds.allow(stats.attempts()) {
        let token = &tokens[next % tokens.len()];
        next += 1;
        let started = Instant::now();
        match connection.get(hello::PATH, Some(token)).await {
            Ok(StatusCode::OK) => stats.success(started),
            Ok(StatusCode::UNAUTHORIZED) => stats.refusal(started),
            Ok(other) => stats.failure(format!("HTTP {other}")),
            Err(e) => {
                stats.failure(format!("transport: {e}"));
                // The connection is gone; the phase goes on without this worker.
                break;
            }
        }
    }
    stats
}

fn label(mode: Mode) -> &'static str {
    match mode {
        Mode::Bare => "bare",
        Mode::Hs256 => "layer HS256",
        Mode::EdDsa => "layer EdDSA",
        Mode::Jwks => "layer JWKS",
        Mode::Naive => "naive EdDSA + query",
        Mode::JwtAuthorizer => "jwt-authorizer",
        Mode::TowerSessions => "tower-sessions",
        Mode::TowerSessionsCached => "tower-sessions cached",
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "request counts and microseconds stay far below 2^52"
)]
fn record(phases: &[(Mode, Stats, Phase)]) -> Round {
    let mut round = Round::default();
    let per_request =
        |phase: &Phase, cpu: Duration| cpu::micros_each(cpu, phase.run.stats.successes());
    let bare = phases.iter().find(|(mode, ..)| *mode == Mode::Bare);
    let (bare_rate, bare_cpu) = bare.map_or((f64::NAN, f64::NAN), |(_, _, phase)| {
        (phase.run.rate(), per_request(phase, phase.server_cpu))
    });
    for (mode, warm, phase) in phases {
        let name = label(*mode);
        let stats = &phase.run.stats;
        let rate = phase.run.rate();
        round.value(format!("{name}: requests/s"), rate, Unit::PerSecond);
        round.latency(format!("{name}: p50"), stats.percentile(500));
        round.latency(format!("{name}: p99"), stats.percentile(990));
        let server_cpu = per_request(phase, phase.server_cpu);
        round.value(
            format!("{name}: server CPU per request"),
            server_cpu,
            Unit::Micros,
        );
        if *mode != Mode::Bare {
            round.value(
                format!("{name}: PostgreSQL CPU per request"),
                per_request(phase, phase.database_cpu),
                Unit::Micros,
            );
            let extra = round.value(
                format!("{name}: server CPU per request − bare"),
                server_cpu - bare_cpu,
                Unit::Micros,
            );
            if *mode != Mode::Naive {
                extra.target(Target::AtMost(TARGET_EXTRA_CPU_MICROS));
            }
            let ratio = round.value(
                format!("{name} / bare: requests/s"),
                rate / bare_rate,
                Unit::Ratio,
            );
            if *mode != Mode::Naive {
                ratio.target(Target::AtLeast(TARGET_RATIO));
            }
            let share = stats.refused() as f64 / stats.successes().max(1) as f64;
            if (share - 0.1).abs() > 0.01 {
                round.note(format!(
                    "{name}: {:.1}% of answers were 401, expected 10%",
                    share * 100.0
                ));
            }
        }
        round
            .count(format!("{name}: errors"), stats.error_count() as u64)
            .target(Target::AtMost(0.0));
        for (kind, count) in stats.errors() {
            round.note(format!("{name}: {kind} x{count}"));
        }
        for (kind, count) in warm.errors() {
            round.note(format!("{name} warm-up: {kind} x{count}"));
        }
    }
    round
}
