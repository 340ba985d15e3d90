//! The refresh figure: refresh-token rotations per second over HTTP, against what
//! PostgreSQL alone does with the same stored function (`session_guard_refresh`,
//! migration V3), measured with pgbench in the same run, at the same concurrency.
//!
//! # How pgbench does a real rotation every transaction
//!
//! In slice `s`, each pgbench client `c` owns one session seeded for it (of chain `c`'s
//! account), with the id `S(s, c) = md5('pgbench:' || s || ':' || c)::uuid` and the
//! current secret hash `H(s, c, 0)`, where
//! `H(s, c, k) = sha256('pgbench:' || s || ':' || c || ':' || k)` (32 bytes, like the
//! server's keyed hash). pgbench keeps a separate set of variables per client for the
//! whole run, so the script carries the client's generation in `:k` (`--define k=0` to
//! start) and presents session `S(s, c)`, generation `k`, hash `H(s, c, k)` with
//! successor `H(s, c, k + 1)`. The
//! statement returns `k + 1` only when the outcome is `rotated`, and `\gset` stores it
//! back into `:k`; any other outcome returns no row, `\gset` fails and the client aborts,
//! so a transaction that did less work than a rotation cannot be counted. Each
//! transaction is thus exactly what `POST /auth/refresh` runs: one prepared call, one
//! round trip, locking the session by its primary key, checking the generation and hash
//! and updating the row. The only extra work is a few SHA-256 and an MD5 of a few bytes
//! in SQL. Afterwards the generations reached are summed in the database and compared
//! with the transactions pgbench reported.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use portcullis_testdb::TestDb;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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
Each round starts a fresh database and the release `portcullis-server` (rate limits off by \
configuration, a pool of 32 connections: as many as pgbench has clients) and registers \
32 accounts, one per chain: concurrent refreshes come from different users, and one \
account for all would make every rotation insert into the same pages of the indexes \
that lead with the user id. 32 refresh chains run over HTTP, each on one keep-alive \
HTTP/1.1 connection of the harness's lean hyper client (the load generator shares the \
two cores, so it should take as little as pgbench's own client does): each worker posts \
its current refresh token to `POST /auth/refresh` and continues with the token it gets \
back. pgbench runs the same stored function (`session_guard_refresh`, one prepared call \
per transaction, 32 clients, client c on a session of chain c's account), each \
transaction a real rotation (a client aborts if one is not). The machine's speed drifts \
within a round, so the round cuts the phase into 3 slices per side and interleaves them: \
HTTP, pgbench, pgbench, HTTP, HTTP, pgbench. Every slice starts from sessions never \
refreshed before, on both sides (32 logins before an HTTP slice, 32 seeded sessions \
before a pgbench one). Rotations/s counts 200s (or pgbench's transactions) over each \
side's slices' time; p50 and p99 are client-side. CPU per rotation is each party's \
utime + stime over its side's slices divided by the rotations: the server process; \
PostgreSQL's backends (for HTTP those connected to the run's database, for pgbench its \
connections, counted once the postmaster has reaped them); the client (the harness's \
own process, or pgbench); and the time both cores stood idle. What is left of the \
2 cores' time goes to the kernel's interrupt work and to other processes. Afterwards \
the rotations written are counted in the database for both and compared with what each \
side reported. The ratio is HTTP over pgbench in the same round.";

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

/// One live session per pgbench client `c` (numbered from 0) for slice `s` (`$2`), of
/// the `c`-th account of `$1` (chain `c`'s): id `S(s, c)`, secret hash `H(s, c, 0)`.
const SEED: &str = "\
INSERT INTO sessions (id, user_id, device_name, ip, idle_expires_at, absolute_expires_at,
                      refresh_hash)
SELECT md5('pgbench:' || $2::int || ':' || c)::uuid, u.id,
       'pgbench ' || $2::int || ' ' || c, '127.0.0.1',
       now() + interval '14 days', now() + interval '90 days',
       sha256(convert_to('pgbench:' || $2::int || ':' || c || ':0', 'UTF8'))
  FROM unnest($1::uuid[]) WITH ORDINALITY AS u(id, n), LATERAL (SELECT u.n - 1 AS c) AS client";

/// The backends pgbench has connected to the run's database.
const PGBENCH_BACKENDS: &str = "\
SELECT pid FROM pg_stat_activity
 WHERE datname = current_database() AND application_name = 'pgbench'";

/// How long pgbench may take to open its connections.
const BACKENDS_WAIT: Duration = Duration::from_secs(10);

/// Rotations done (generations reached) by sessions whose device name matches `$1`.
const ROTATIONS: &str = "\
SELECT coalesce(sum(refresh_generation), 0)::bigint FROM sessions WHERE device_name LIKE $1";

/// The refresh figures of one run.
#[derive(Debug)]
pub(crate) struct Figures {
    http: load::Run,
    /// CPU the server, the database and the harness spent on the HTTP slices.
    http_cpu: CpuSpent,
    /// Rotations the database holds for the HTTP chains.
    http_rotations: i64,
    /// HTTP slices in which no refresh succeeded (each must have run for its time).
    idle_http_slices: u64,
    pgbench: pgbench::Outcome,
    /// CPU PostgreSQL and pgbench spent on pgbench's slices.
    pgbench_cpu: CpuSpent,
    /// Rotations the database holds for the pgbench clients.
    pgbench_rotations: i64,
}

/// Registers the bench account (figures 4 and 6 sign in to it) and one account per
/// chain, then runs the HTTP chains and pgbench in interleaved slices.
pub(crate) async fn run(server: &Server, db: &TestDb, settings: Settings) -> Result<Figures> {
    register(server, EMAIL).await?;
    let mut accounts = Vec::with_capacity(settings.refresh_concurrency);
    for chain in 0..settings.refresh_concurrency {
        let email = format!("chain-{chain}@example.com");
        let user_id = register(server, &email).await?;
        accounts.push(Account { email, user_id });
    }
    let user_ids: Vec<uuid::Uuid> = accounts.iter().map(|account| account.user_id).collect();

    let client = db.connect().await;
    let clients = i32::try_from(settings.refresh_concurrency)?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("rotate.sql");
    std::fs::write(&script, SCRIPT)?;
    let slice = settings.duration / SLICES;
    let mut http: Option<load::Run> = None;
    let mut http_cpu = CpuSpent::default();
    let mut idle_http_slices = 0;
    let mut pgbench: Option<pgbench::Outcome> = None;
    // pgbench's backends end with it; once the postmaster has reaped them
    // (`cpu::wait_until_reaped`), their CPU is in its ended children's time.
    let backend: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await?
        .get(0);
    let postmaster = cpu::parent(u32::try_from(backend)?)?;
    let mut pgbench_cpu = CpuSpent::default();
    for index in 0..SLICES {
        for side in SLICE_ORDER[index as usize % SLICE_ORDER.len()] {
            match side {
                Side::Http => {
                    let tokens = fresh_chains(server, &accounts, index).await?;
                    let before = CpuSnapshot::take(server.pid(), &client).await?;
                    // Each slice's own deadline, from its start.
                    let bounds = Bounds::new(slice, settings.max_requests_per_worker);
                    let workers = tokens
                        .into_iter()
                        .map(|token| refresh_chain(server.addr(), token, bounds));
                    let run = load::run(workers).await?;
                    if run.stats.successes() == 0 {
                        idle_http_slices += 1;
                    }
                    http_cpu.add(&before.elapsed(server.pid(), &client).await?);
                    match &mut http {
                        Some(total) => total.absorb(run),
                        None => http = Some(run),
                    }
                }
                Side::Pgbench => {
                    let slice_id = i32::try_from(index)?;
                    client.execute(SEED, &[&user_ids, &slice_id]).await?;
                    let slice_text = index.to_string();
                    let before = PgbenchSnapshot::take(postmaster)?;
                    let run = pgbench::Run {
                        conninfo: &db.url(),
                        script: &script,
                        clients: settings.refresh_concurrency,
                        threads: settings.cores,
                        duration: slice,
                        variables: &[("k", "0"), ("slice", &slice_text)],
                    };
                    let (outcome, backends) =
                        tokio::join!(run.execute(), pgbench_backends(&client, clients));
                    let outcome = outcome?;
                    // Their time is in the postmaster's only once it has reaped them all.
                    cpu::wait_until_reaped(&backends?).await?;
                    pgbench_cpu.add(&before.elapsed(postmaster)?);
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
        idle_http_slices,
        pgbench,
        pgbench_cpu,
        pgbench_rotations,
    })
}

/// A registered account of one chain.
struct Account {
    email: String,
    user_id: uuid::Uuid,
}

/// Registers `email` with [`PASSWORD`]; returns the new user's id.
async fn register(server: &Server, email: &str) -> Result<uuid::Uuid> {
    let registered = server
        .post_json(
            "/auth/register",
            &json!({"email": email, "password": PASSWORD}),
            StatusCode::CREATED,
        )
        .await?;
    Ok(string_field(&registered, "user_id")?.parse()?)
}

/// Logs in one new session per account for HTTP slice `slice` and returns their refresh
/// tokens: each slice starts from sessions refreshed never before, as pgbench's do.
async fn fresh_chains(server: &Server, accounts: &[Account], slice: u32) -> Result<Vec<String>> {
    let mut tokens = Vec::with_capacity(accounts.len());
    for (chain, account) in accounts.iter().enumerate() {
        let pair = login_as(
            server,
            &account.email,
            &format!("http refresh {slice} {chain}"),
        )
        .await?;
        tokens.push(string_field(&pair, "refresh_token")?);
    }
    Ok(tokens)
}

/// The backends of pgbench's `clients` connections, once all are open (pgbench opens
/// them before its first transaction). Polls for at most [`BACKENDS_WAIT`].
async fn pgbench_backends(client: &tokio_postgres::Client, clients: i32) -> Result<Vec<u32>> {
    let deadline = Instant::now() + BACKENDS_WAIT;
    loop {
        let pids: Vec<u32> = client
            .query(PGBENCH_BACKENDS, &[])
            .await?
            .iter()
            .filter_map(|row| u32::try_from(row.get::<_, i32>(0)).ok())
            .collect();
        if pids.len() >= usize::try_from(clients)? {
            return Ok(pids);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "only {} of pgbench's {clients} connections appeared within {BACKENDS_WAIT:?}",
                pids.len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Logs in once more as the bench account; returns the token pair.
pub(crate) async fn login(server: &Server, device_name: &str) -> Result<Value> {
    login_as(server, EMAIL, device_name).await
}

/// Logs in as `email` (password [`PASSWORD`]); returns the token pair.
async fn login_as(server: &Server, email: &str, device_name: &str) -> Result<Value> {
    server
        .post_json(
            "/auth/login",
            &json!({"email": email, "password": PASSWORD, "device_name": device_name}),
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
async fn refresh_chain(addr: SocketAddr, mut token: String, bounds: Bounds) -> Stats {
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
    stats
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
        let refreshes = stats.successes();
        let processed = usize::try_from(self.pgbench.processed).unwrap_or(usize::MAX);
        for (label, spent, count) in [
            (
                "server CPU per HTTP refresh",
                self.http_cpu.server,
                refreshes,
            ),
            (
                "PostgreSQL CPU per HTTP refresh",
                self.http_cpu.database,
                refreshes,
            ),
            (
                "PostgreSQL CPU per pgbench rotation",
                self.pgbench_cpu.database,
                processed,
            ),
            (
                "harness CPU per HTTP refresh (the load generator)",
                self.http_cpu.client,
                refreshes,
            ),
            (
                "pgbench CPU per rotation (its client)",
                self.pgbench_cpu.client,
                processed,
            ),
            (
                "idle CPU per HTTP refresh (both cores)",
                self.http_cpu.idle,
                refreshes,
            ),
            (
                "idle CPU per pgbench rotation (both cores)",
                self.pgbench_cpu.idle,
                processed,
            ),
        ] {
            round.value(label, cpu::micros_each(spent, count), Unit::Micros);
        }
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
        round
            .count(
                "HTTP slices in which no refresh succeeded",
                self.idle_http_slices,
            )
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

/// CPU time of the server process, of the database's backends and of the harness, and
/// the machine's idle time, at one moment.
struct CpuSnapshot {
    server: Duration,
    backends: HashMap<u32, Duration>,
    harness: Duration,
    idle: Duration,
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
            harness: cpu::process_time(std::process::id())?,
            idle: cpu::machine_idle()?,
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
            client: now.harness.saturating_sub(self.harness),
            idle: now.idle.saturating_sub(self.idle),
        })
    }
}

/// What pgbench's side has used at one moment: its backends' time is in the postmaster's
/// ended children once reaped, pgbench's own in the harness's (its parent).
struct PgbenchSnapshot {
    database: Duration,
    client: Duration,
    idle: Duration,
}

impl PgbenchSnapshot {
    fn take(postmaster: u32) -> Result<Self> {
        Ok(Self {
            database: cpu::ended_children_time(postmaster)?,
            client: cpu::ended_children_time(std::process::id())?,
            idle: cpu::machine_idle()?,
        })
    }

    /// What was spent since this snapshot, once pgbench and its backends have ended.
    fn elapsed(&self, postmaster: u32) -> Result<CpuSpent> {
        let now = Self::take(postmaster)?;
        Ok(CpuSpent {
            server: Duration::ZERO,
            database: now.database.saturating_sub(self.database),
            client: now.client.saturating_sub(self.client),
            idle: now.idle.saturating_sub(self.idle),
        })
    }
}

/// CPU spent during one side's slices, and the time no one used.
#[derive(Debug, Default)]
struct CpuSpent {
    /// The server process (none on pgbench's side).
    server: Duration,
    /// PostgreSQL's backends.
    database: Duration,
    /// The client: the harness's own process for HTTP, pgbench for pgbench.
    client: Duration,
    /// Idle and I/O-wait time of all cores.
    idle: Duration,
}

impl CpuSpent {
    fn add(&mut self, other: &Self) {
        self.server += other.server;
        self.database += other.database;
        self.client += other.client;
        self.idle += other.idle;
    }
}
