//! The refresh figure: refresh-token rotations per second over HTTP, against what
//! PostgreSQL alone does with the same stored function (`session_guard_refresh`,
//! migration V3), measured with pgbench in the same run, at the same concurrency.
//!
//! # How pgbench does a real rotation every transaction
//!
//! Each pgbench client `c` owns one session seeded for this run, with the id
//! `S(c) = md5('pgbench:' || c)::uuid` and the current secret hash `H(c, 0)`, where
//! `H(c, k) = sha256('pgbench:' || c || ':' || k)` (32 bytes, like the server's keyed
//! hash). pgbench keeps a separate set of variables per client for the whole run, so the
//! script carries the client's generation in `:k` (`--define k=0` to start) and presents
//! session `S(c)`, generation `k`, hash `H(c, k)` with successor `H(c, k + 1)`. The
//! statement returns `k + 1` only when the outcome is `rotated`, and `\gset` stores it
//! back into `:k`; any other outcome returns no row, `\gset` fails and the client aborts,
//! so a transaction that did less work than a rotation cannot be counted. Each
//! transaction is thus exactly what `POST /auth/refresh` runs: one prepared call, one
//! round trip, locking the session by its primary key, checking the generation and hash
//! and updating the row. The only extra work is a few SHA-256 and an MD5 of a few bytes
//! in SQL. Afterwards the generations reached are summed in the database and compared
//! with the transactions pgbench reported.

use std::time::Instant;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use session_testdb::TestDb;

use crate::http1::Connection;
use crate::load::{self, Bounds, Stats};
use crate::report::{Round, Target, Unit};
use crate::server::Server;
use crate::{Result, Settings, cpu, pgbench};

const EMAIL: &str = "bench@example.com";
/// Each round cuts its phase into this many slices per side, interleaved.
const SLICES: u32 = 3;

/// What a slice runs.
#[derive(Debug, Clone, Copy)]
enum Side {
    Http,
    Pgbench,
}

/// The order within each slice: HTTP then pgbench, then the other way round, and again,
/// so that a drift in the machine's speed during a round weighs on both sides alike.
const SLICE_ORDER: [[Side; 2]; 2] = [[Side::Http, Side::Pgbench], [Side::Pgbench, Side::Http]];

/// The route the chains post to.
const PATH: &str = "/auth/refresh";
/// The account's password, shared with the login figure.
pub(crate) const PASSWORD: &str = "correct horse battery staple";
/// Target: HTTP refreshes per second over pgbench rotations per second.
const TARGET_RATIO: f64 = 0.7;

/// How the figure is measured, for BENCHMARKS.md.
pub(crate) const METHOD: &str = "\
Each round starts a fresh database and the release `session-server` (rate limits off by \
configuration, a pool of 32 connections: as many as pgbench has clients). 32 refresh \
chains run over HTTP, each on one keep-alive HTTP/1.1 connection of the harness's lean \
hyper client (the load generator shares the two cores, so it should take as little as \
pgbench's own client does): each worker posts its current refresh token to \
`POST /auth/refresh` and continues with the token it gets back. pgbench runs the same \
stored function (`session_guard_refresh`, one prepared call per transaction, 32 \
clients) on 32 sessions seeded for it, each transaction a real rotation (a client \
aborts if one is not). The machine's speed drifts within a round, so the round cuts the \
phase into 3 slices per side and interleaves them: HTTP, pgbench, pgbench, HTTP, HTTP, \
pgbench; the chains carry their tokens from slice to slice, pgbench gets fresh sessions \
for each. Rotations/s counts 200s (or pgbench's transactions) over each side's slices' \
time; p50 and p99 are client-side; server CPU per refresh is the server's utime + stime \
over the HTTP slices divided by the rotations, PostgreSQL CPU per refresh the same for \
the backends connected to the run's database. Afterwards the rotations written are \
counted in the database for both and compared with what each side reported. The ratio \
is HTTP over pgbench in the same round.";

/// One rotation per transaction; see the module documentation.
const SCRIPT: &str = "\
-- One refresh-token rotation per transaction (see bench/src/refresh.rs).
SELECT :k::int + 1 AS k
  FROM session_guard_refresh(
         md5('pgbench:' || :slice::text || ':' || :client_id::text)::uuid, :k::int,
         sha256(convert_to('pgbench:' || :slice::text || ':' || :client_id::text || ':' || :k::text, 'UTF8')),
         sha256(convert_to('pgbench:' || :slice::text || ':' || :client_id::text || ':' || (:k::int + 1)::text, 'UTF8')),
         sha256(convert_to('pgbench client', 'UTF8')),
         '10 seconds', '14 days', 16, '127.0.0.1')
 WHERE outcome = 'rotated' \\gset
";

/// One live session per pgbench client (numbered from 0) for slice `s` (`$3`): id
/// `S(s, c)`, secret hash `H(s, c, 0)`.
const SEED: &str = "\
INSERT INTO sessions (id, user_id, device_name, ip, idle_expires_at, absolute_expires_at,
                      refresh_hash)
SELECT md5('pgbench:' || $3::int || ':' || c)::uuid, $1::text::uuid,
       'pgbench ' || $3::int || ' ' || c, '127.0.0.1',
       now() + interval '14 days', now() + interval '90 days',
       sha256(convert_to('pgbench:' || $3::int || ':' || c || ':0', 'UTF8'))
  FROM generate_series(0, $2::int - 1) AS c";

/// Rotations done (generations reached) by sessions whose device name matches `$1`.
const ROTATIONS: &str = "\
SELECT coalesce(sum(refresh_generation), 0)::bigint FROM sessions WHERE device_name LIKE $1";

/// The refresh figures of one run.
#[derive(Debug)]
pub(crate) struct Figures {
    http: load::Run,
    /// CPU the server and the database spent on the HTTP phase.
    http_cpu: CpuSpent,
    /// Rotations the database holds for the HTTP chains.
    http_rotations: i64,
    pgbench: pgbench::Outcome,
    /// CPU PostgreSQL spent on pgbench's transactions.
    pgbench_cpu: Duration,
    /// Rotations the database holds for the pgbench clients.
    pgbench_rotations: i64,
}

/// Registers the account, then runs the HTTP chains and pgbench in interleaved slices.
pub(crate) async fn run(server: &Server, db: &TestDb, settings: Settings) -> Result<Figures> {
    let registered = server
        .post_json(
            "/auth/register",
            &json!({"email": EMAIL, "password": PASSWORD}),
            StatusCode::CREATED,
        )
        .await?;
    let user_id = registered["user_id"]
        .as_str()
        .ok_or("register answered without user_id")?
        .to_owned();

    let mut tokens = Vec::with_capacity(settings.refresh_concurrency);
    for chain in 0..settings.refresh_concurrency {
        let pair = login(server, &format!("http refresh {chain}")).await?;
        tokens.push(string_field(&pair, "refresh_token")?);
    }
    let client = db.connect().await;
    let clients = i32::try_from(settings.refresh_concurrency)?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("rotate.sql");
    std::fs::write(&script, SCRIPT)?;
    let slice = settings.duration / SLICES;
    let bounds = Bounds::new(slice, settings.max_requests_per_worker);
    let mut http: Option<load::Run> = None;
    let mut http_cpu = CpuSpent::default();
    let mut pgbench: Option<pgbench::Outcome> = None;
    // pgbench's backends have ended by the time it reports; the postmaster has reaped
    // them, so their CPU is in its children's time.
    let backend: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await?
        .get(0);
    let postmaster = cpu::parent(u32::try_from(backend)?)?;
    let mut pgbench_cpu = Duration::ZERO;
    for index in 0..SLICES {
        for side in SLICE_ORDER[index as usize % SLICE_ORDER.len()] {
            match side {
                Side::Http => {
                    let before = CpuSnapshot::take(server.pid(), &client).await?;
                    let workers = tokens
                        .drain(..)
                        .map(|token| refresh_chain(server.addr(), token, bounds));
                    let (run, next) = load::run_handing_back(workers).await?;
                    tokens = next;
                    http_cpu.add(&before.elapsed(server.pid(), &client).await?);
                    match &mut http {
                        Some(total) => total.absorb(run),
                        None => http = Some(run),
                    }
                }
                Side::Pgbench => {
                    let slice_id = i32::try_from(index)?;
                    client
                        .execute(SEED, &[&user_id, &clients, &slice_id])
                        .await?;
                    let slice_text = index.to_string();
                    let before = cpu::ended_children_time(postmaster)?;
                    let outcome = pgbench::Run {
                        conninfo: &db.url(),
                        script: &script,
                        clients: settings.refresh_concurrency,
                        threads: settings.cores,
                        duration: slice,
                        variables: &[("k", "0"), ("slice", &slice_text)],
                    }
                    .execute()
                    .await?;
                    pgbench_cpu += cpu::ended_children_time(postmaster)?.saturating_sub(before);
                    match &mut pgbench {
                        Some(total) => total.absorb(outcome),
                        None => pgbench = Some(outcome),
                    }
                }
            }
        }
    }
    let http = http.ok_or("no HTTP slice ran")?;
    let pgbench = pgbench.ok_or("no pgbench slice ran")?;
    let http_rotations: i64 = client.query_one(ROTATIONS, &[&"http %"]).await?.get(0);
    let pgbench_rotations: i64 = client.query_one(ROTATIONS, &[&"pgbench %"]).await?.get(0);

    Ok(Figures {
        http,
        http_cpu,
        http_rotations,
        pgbench,
        pgbench_cpu,
        pgbench_rotations,
    })
}

/// Logs in once more as the bench account; returns the token pair.
pub(crate) async fn login(server: &Server, device_name: &str) -> Result<Value> {
    server
        .post_json(
            "/auth/login",
            &json!({"email": EMAIL, "password": PASSWORD, "device_name": device_name}),
            StatusCode::OK,
        )
        .await
}

/// A string field of a JSON object.
pub(crate) fn string_field(body: &Value, name: &str) -> Result<String> {
    Ok(body[name]
        .as_str()
        .ok_or_else(|| format!("response without {name}: {body}"))?
        .to_owned())
}

/// The body `POST /auth/refresh` takes.
#[derive(Serialize)]
struct RefreshRequest<'a> {
    refresh_token: &'a str,
}

/// The part of its answer the chain needs.
#[derive(Deserialize)]
struct RefreshAnswer {
    refresh_token: String,
}

/// Refreshes one session's chain over one keep-alive connection of the lean client: each
/// success hands the next token to use. A failed request keeps the token and tries again
/// on a new connection (a retry is safe by design); a 401 means the chain is dead, and the
/// worker stops.
async fn refresh_chain(addr: SocketAddr, mut token: String, bounds: Bounds) -> (Stats, String) {
    let mut stats = Stats::default();
    let mut connection = None;
    while bounds.allow(stats.attempts()) {
        let started = Instant::now();
        let open = match connection.take() {
            Some(open) => open,
            None => match Connection::open(addr).await {
                Ok(open) => open,
                Err(e) => {
                    stats.failure(format!("connect: {e}"));
                    continue;
                }
            },
        };
        let mut open = open;
        let body = match serde_json::to_vec(&RefreshRequest {
            refresh_token: &token,
        }) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                stats.failure(format!("encoding the request: {e}"));
                break;
            }
        };
        match open.post_json(PATH, body).await {
            Ok((StatusCode::OK, body)) => {
                connection = Some(open);
                match serde_json::from_slice::<RefreshAnswer>(&body) {
                    Ok(answer) => {
                        token = answer.refresh_token;
                        stats.success(started);
                    }
                    Err(e) => {
                        stats.failure(format!("200 without a refresh token: {e}"));
                        break;
                    }
                }
            }
            Ok((code, _)) => {
                connection = Some(open);
                stats.failure(format!("HTTP {code}"));
                if code == StatusCode::UNAUTHORIZED {
                    break;
                }
            }
            Err(e) => stats.failure(format!("transport: {e}")),
        }
    }
    (stats, token)
}

impl Figures {
    /// Records the refresh figures of this round.
    pub(crate) fn record(&self, round: &mut Round) {
        let stats = &self.http.stats;
        let http_tps = self.http.rate();
        let ratio = http_tps / self.pgbench.tps.max(f64::EPSILON);
        round.value("refresh over HTTP (rotations/s)", http_tps, Unit::PerSecond);
        round.value(
            "refresh in pgbench, baseline (rotations/s)",
            self.pgbench.tps,
            Unit::PerSecond,
        );
        round
            .value("refresh HTTP / pgbench", ratio, Unit::Ratio)
            .target(Target::AtLeast(TARGET_RATIO));
        round.value(
            "server CPU per HTTP refresh",
            cpu::micros_each(self.http_cpu.server, stats.successes()),
            Unit::Micros,
        );
        round.value(
            "PostgreSQL CPU per HTTP refresh",
            cpu::micros_each(self.http_cpu.database, stats.successes()),
            Unit::Micros,
        );
        round.value(
            "PostgreSQL CPU per pgbench rotation",
            cpu::micros_each(
                self.pgbench_cpu,
                usize::try_from(self.pgbench.processed).unwrap_or(usize::MAX),
            ),
            Unit::Micros,
        );
        round.latency("refresh HTTP p50", stats.percentile(500));
        round.latency("refresh HTTP p99", stats.percentile(990));
        round.value(
            "pgbench mean latency",
            self.pgbench.latency_ms,
            Unit::Millis,
        );
        round
            .count("refresh HTTP errors", stats.error_count() as u64)
            .target(Target::AtMost(0.0));
        let successes = stats.successes() as u64;
        let missing = successes.abs_diff(u64::try_from(self.http_rotations).unwrap_or(0));
        round
            .count(
                "refresh HTTP successes without their rotation in DB",
                missing,
            )
            .target(Target::AtMost(0.0));
        let pgbench_missing = self
            .pgbench
            .processed
            .abs_diff(u64::try_from(self.pgbench_rotations).unwrap_or(0));
        round
            .count(
                "pgbench transactions failed or without their rotation",
                pgbench_missing + self.pgbench.failed + u64::from(self.pgbench.aborted),
            )
            .target(Target::AtMost(0.0));
        for (kind, count) in stats.errors() {
            round.note(format!("refresh HTTP error: {kind} x{count}"));
        }
        if !self.pgbench.stderr.is_empty() {
            round.note(format!("pgbench stderr: {}", self.pgbench.stderr));
        }
    }
}

/// CPU time of the server process and of the database's backends at one moment.
struct CpuSnapshot {
    server: Duration,
    backends: HashMap<u32, Duration>,
}

impl CpuSnapshot {
    async fn take(server: u32, client: &tokio_postgres::Client) -> Result<Self> {
        let mut backends = HashMap::new();
        for pid in cpu::database_backends(client).await? {
            // A backend that ended meanwhile has nothing left to count.
            if let Ok(time) = cpu::process_time(pid) {
                backends.insert(pid, time);
            }
        }
        Ok(Self {
            server: cpu::process_time(server)?,
            backends,
        })
    }

    /// What was spent since this snapshot; backends opened since count from zero.
    async fn elapsed(&self, server: u32, client: &tokio_postgres::Client) -> Result<CpuSpent> {
        let now = Self::take(server, client).await?;
        let database = now
            .backends
            .iter()
            .map(|(pid, time)| {
                time.saturating_sub(self.backends.get(pid).copied().unwrap_or_default())
            })
            .sum();
        Ok(CpuSpent {
            server: now.server.saturating_sub(self.server),
            database,
        })
    }
}

/// CPU spent during a phase.
#[derive(Debug, Default)]
struct CpuSpent {
    server: Duration,
    database: Duration,
}

impl CpuSpent {
    fn add(&mut self, other: &Self) {
        self.server += other.server;
        self.database += other.database;
    }
}
