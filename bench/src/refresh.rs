//! The refresh figure: refresh-token rotations over HTTP against what PostgreSQL alone
//! does with the same stored function (`session_guard_refresh`), measured with pgbench in
//! the same round, at the same concurrency; and the same pgbench run against the schema
//! and function of the release before (migration V5), so that the database's cost per
//! refresh of the new schema is set against the old one's on the same machine, in the
//! same round.
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
//! successor `H(s, c, k + 1)`. The statement returns `k + 1` only when the outcome is
//! `rotated`, and `\gset` stores it back into `:k`; any other outcome returns no row,
//! `\gset` fails and the client aborts, so a transaction that did less work than a
//! rotation cannot be counted. Each transaction is thus what `POST /auth/refresh` runs:
//! one prepared call, one round trip. The only extra work is a few SHA-256 and an MD5 of
//! a few bytes in SQL. Afterwards the generations reached are summed in the database and
//! compared with the transactions pgbench reported.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_postgres::Client;

use crate::cluster::{self, BenchCluster, Database};
use crate::http1::Connection;
use crate::load::{self, Bounds, Stats};
use crate::report::{Round, Target, Unit};
use crate::server::Server;
use crate::{Result, Settings, cpu, pgbench};

const EMAIL: &str = "bench@example.com";
/// Each round cuts its phase into this many slices per side, interleaved.
const SLICES: u32 = 3;
/// The schema (and `session_guard_refresh`) of the release before V6.
pub(crate) const OLD_SCHEMA: u16 = 5;

/// What a slice runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The server, over HTTP.
    Http,
    /// pgbench on the server's database (this build's schema).
    Pgbench,
    /// The same, throttled to the rate the last HTTP slice reached: PostgreSQL's cost per
    /// rotation grows as the rate falls (fewer commits share a WAL flush), so this is the
    /// baseline that leaves only what the server's way of calling adds.
    PgbenchAtHttpRate,
    /// pgbench on a database at [`OLD_SCHEMA`].
    PgbenchOld,
}

/// The order within each slice: every side takes every place once, so that a drift in
/// the machine's speed during a round weighs on all three alike.
/// The throttled side runs right after an HTTP slice, whose rate it takes.
const SLICE_ORDER: [[Side; 4]; 3] = [
    [
        Side::Http,
        Side::PgbenchAtHttpRate,
        Side::Pgbench,
        Side::PgbenchOld,
    ],
    [
        Side::Pgbench,
        Side::PgbenchOld,
        Side::Http,
        Side::PgbenchAtHttpRate,
    ],
    [
        Side::PgbenchOld,
        Side::Http,
        Side::PgbenchAtHttpRate,
        Side::Pgbench,
    ],
];

/// The route the chains post to.
const PATH: &str = "/auth/refresh";
/// The account's password, shared with the login figure.
pub(crate) const PASSWORD: &str = "correct horse battery staple";
/// Target: PostgreSQL's CPU per HTTP refresh over its CPU per pgbench rotation.
const TARGET_DATABASE_RATIO: f64 = 1.05;
/// Target: the share of refresh updates that are HOT.
const TARGET_HOT_SHARE: f64 = 0.90;
/// Target: PostgreSQL's CPU per rotation, this build's schema over the old one's.
const TARGET_NEW_OVER_OLD: f64 = 0.75;
/// How long the database's statistics may take to count every update once the server's
/// connections closed.
const STATS_WAIT: Duration = Duration::from_secs(15);

/// How the figure is measured, for BENCHMARKS.md.
pub(crate) const METHOD: &str = "\
Each round runs on a PostgreSQL cluster of the harness's own (`initdb` into a temporary \
folder, a real server's durability: `fsync`, `synchronous_commit` and `full_page_writes` \
on, 128 MB of shared buffers, autovacuum on), so that every process of the cluster \
works for the figure alone. The round creates two databases: one with every migration, \
for the release `portcullis-server` (rate limits off by configuration, a pool of 32 \
connections: as many as pgbench has clients), and one migrated only up to V5, the \
release before: its schema, indexes and `session_guard_refresh`. The server registers \
32 accounts, one per chain (the old database gets 32 users of its own): concurrent \
refreshes come from different users, as real traffic does. 32 refresh chains run over \
HTTP, each on one keep-alive HTTP/1.1 connection of the harness's lean hyper client: \
each worker posts its current refresh token to `POST /auth/refresh` and continues with \
the token it gets back. pgbench runs the same stored function (one prepared call per \
transaction, 32 clients, client c on a session of chain c's account), each transaction a \
real rotation (a client aborts if one is not), on the new database and, as the old \
function, on the V5 database; and once more on the new database throttled \
(`--rate`) to the rate the HTTP slice just before reached, because PostgreSQL's CPU \
per rotation grows as the rate falls (fewer commits share one WAL flush): that side is \
the baseline that leaves only what the server's way of calling adds. The machine's \
speed drifts within a round, so the round cuts the phase into 3 slices per side and \
interleaves them so that each side takes each place once: HTTP, pgbench at the HTTP \
rate, pgbench, pgbench on V5; pgbench, pgbench on V5, HTTP, pgbench at the HTTP rate; \
pgbench on V5, HTTP, pgbench at the HTTP rate, pgbench. Every slice starts with a `CHECKPOINT` (so that each pays for its \
own full-page images) and from sessions never refreshed before (32 logins before an \
HTTP slice, 32 seeded sessions before a pgbench one). Rotations/s counts 200s (or \
pgbench's transactions) over each side's slices' time; p50 and p99 are client-side. \
PostgreSQL CPU per rotation is the utime + stime of the whole cluster (the postmaster, \
every process it started, and those it has reaped) over a side's slices, divided by \
its rotations; likewise the server process, the client (the harness's own process, or \
pgbench) and the time both cores stood idle. WAL bytes per rotation is the move of \
`pg_current_wal_insert_lsn()` over a side's slices, divided by its rotations. The HOT \
share is `n_tup_hot_upd / n_tup_upd` of `sessions` (`pg_stat_user_tables`): on the new \
database over the whole round (its HTTP and pgbench refreshes, and figure 6's) once the \
server is stopped and its connections have reported their counts, on the V5 database \
over its pgbench slices. Afterwards the rotations written are counted in each \
database and compared with what each side reported. The HTTP/pgbench rate ratio is \
reported, not a target: with the server, the load generator and PostgreSQL on the same \
two cores it measures the co-location as much as the server.";

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

/// The old database's users, one per pgbench client.
const OLD_USERS: &str = "\
INSERT INTO users (email, password_hash)
SELECT 'chain-' || i || '@example.com', 'not a hash' FROM generate_series(0, $1 - 1) AS i
RETURNING id";

/// The backends pgbench has connected to the database.
const PGBENCH_BACKENDS: &str = "\
SELECT pid FROM pg_stat_activity
 WHERE datname = current_database() AND application_name = 'pgbench'";

/// How long pgbench may take to open its connections.
const BACKENDS_WAIT: Duration = Duration::from_secs(10);

/// Rotations done (generations reached) by sessions whose device name matches `$1`.
const ROTATIONS: &str = "\
SELECT coalesce(sum(refresh_generation), 0)::bigint FROM sessions WHERE device_name LIKE $1";
/// Every rotation the database holds.
const ALL_ROTATIONS: &str = "SELECT coalesce(sum(refresh_generation), 0)::bigint FROM sessions";

/// The refresh figures of one round.
#[derive(Debug)]
pub(crate) struct Figures {
    http: load::Run,
    /// What the HTTP slices cost.
    http_spent: Spent,
    /// Rotations the database holds for the HTTP chains.
    http_rotations: i64,
    /// HTTP slices in which no refresh succeeded (each must have run for its time).
    idle_http_slices: u64,
    /// pgbench on this build's schema.
    pgbench: PgbenchSide,
    /// pgbench on this build's schema, at the HTTP slices' rate.
    at_http_rate: PgbenchSide,
    /// pgbench on [`OLD_SCHEMA`].
    old: PgbenchSide,
    /// Updates of `sessions` in the old database during its slices, and the HOT ones.
    old_updates: (i64, i64),
    /// Updates of `sessions` in the new database over the round, and the HOT ones, once
    /// counted ([`Figures::count_hot_updates`]).
    new_updates: Option<(i64, i64)>,
}

/// One pgbench side's runs, cost and rotations written.
#[derive(Debug, Default)]
struct PgbenchSide {
    outcome: Option<pgbench::Outcome>,
    spent: Spent,
    rotations: i64,
}

/// The databases of one round.
pub(crate) struct Databases<'a> {
    /// The cluster both are in.
    pub(crate) cluster: &'a BenchCluster,
    /// This build's schema; the server's.
    pub(crate) new: &'a Database,
    /// At [`OLD_SCHEMA`].
    pub(crate) old: &'a Database,
}

/// Registers the bench account, which figures 4 and 6 sign in to.
pub(crate) async fn register_bench_account(server: &Server) -> Result<uuid::Uuid> {
    register(server, EMAIL).await
}

/// Registers one account per chain, then runs the HTTP chains and pgbench on both
/// databases in interleaved slices.
pub(crate) async fn run(
    server: &Server,
    databases: &Databases<'_>,
    settings: Settings,
) -> Result<Figures> {
    let accounts = register_chains(server, settings.refresh_concurrency).await?;
    let user_ids: Vec<uuid::Uuid> = accounts.iter().map(|account| account.user_id).collect();
    let clients = i32::try_from(settings.refresh_concurrency)?;
    let new = databases.new.connect().await?;
    let old = databases.old.connect().await?;
    let old_user_ids: Vec<uuid::Uuid> = old
        .query(OLD_USERS, &[&clients])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let old_updates_before = cluster::session_updates(&old).await?;

    let dir = tempfile::tempdir()?;
    let script = dir.path().join("rotate.sql");
    std::fs::write(&script, SCRIPT)?;
    let slice = settings.duration / SLICES;
    let mut http: Option<load::Run> = None;
    let mut http_spent = Spent::default();
    let mut idle_http_slices = 0;
    let mut pgbench = PgbenchSide::default();
    let mut at_http_rate = PgbenchSide::default();
    let mut old_side = PgbenchSide::default();
    let mut last_http_rate = None;
    for index in 0..SLICES {
        for side in SLICE_ORDER[index as usize % SLICE_ORDER.len()] {
            match side {
                Side::Http => {
                    let tokens = fresh_chains(server, &accounts, index).await?;
                    let (run, spent) =
                        http_slice(server, databases.cluster, &new, tokens, slice, settings)
                            .await?;
                    if run.stats.successes() == 0 {
                        idle_http_slices += 1;
                    }
                    last_http_rate = Some(run.rate());
                    http_spent.add(&spent);
                    match &mut http {
                        Some(total) => total.absorb(run),
                        None => http = Some(run),
                    }
                }
                Side::Pgbench | Side::PgbenchAtHttpRate | Side::PgbenchOld => {
                    let (client, database, users, into) = match side {
                        Side::Pgbench => (&new, databases.new, &user_ids, &mut pgbench),
                        Side::PgbenchAtHttpRate => {
                            (&new, databases.new, &user_ids, &mut at_http_rate)
                        }
                        _ => (&old, databases.old, &old_user_ids, &mut old_side),
                    };
                    let rate = if side == Side::PgbenchAtHttpRate {
                        Some(last_http_rate.ok_or("no HTTP slice before the throttled one")?)
                    } else {
                        None
                    };
                    let slice_run = PgbenchSlice {
                        cluster: databases.cluster,
                        client,
                        database,
                        script: &script,
                        users,
                        index,
                        side,
                        rate,
                        length: slice,
                        settings,
                    };
                    let (outcome, spent) = slice_run.run().await?;
                    into.spent.add(&spent);
                    match &mut into.outcome {
                        Some(total) => total.absorb(outcome),
                        None => into.outcome = Some(outcome),
                    }
                }
            }
        }
    }
    let http = http.ok_or("no HTTP slice ran")?;
    let http_rotations: i64 = new.query_one(ROTATIONS, &[&"http %"]).await?.get(0);
    // Slices 0..SLICES ran at full speed, SLICES..2 * SLICES throttled.
    pgbench.rotations = pgbench_rotations(&new, 0..SLICES).await?;
    at_http_rate.rotations = pgbench_rotations(&new, SLICES..2 * SLICES).await?;
    old_side.rotations = old.query_one(ROTATIONS, &[&"pgbench %"]).await?.get(0);
    // pgbench's backends have ended, and reported their counts as they did.
    let old_updates_after = cluster::session_updates(&old).await?;
    Ok(Figures {
        http,
        http_spent,
        http_rotations,
        idle_http_slices,
        pgbench,
        at_http_rate,
        old: old_side,
        old_updates: (
            old_updates_after.0 - old_updates_before.0,
            old_updates_after.1 - old_updates_before.1,
        ),
        new_updates: None,
    })
}

/// One HTTP slice: the chains of `tokens` for `length`, after a `CHECKPOINT`; what they
/// did and what it cost.
async fn http_slice(
    server: &Server,
    cluster: &BenchCluster,
    client: &Client,
    tokens: Vec<String>,
    length: Duration,
    settings: Settings,
) -> Result<(load::Run, Spent)> {
    client.batch_execute("CHECKPOINT").await?;
    let before = Snapshot::take(cluster, Some(server.pid()), client).await?;
    // Each slice's own deadline, from its start.
    let bounds = Bounds::new(length, settings.max_requests_per_worker);
    let workers = tokens
        .into_iter()
        .map(|token| refresh_chain(server.addr(), token, bounds));
    let run = load::run(workers).await?;
    let after = Snapshot::take(cluster, Some(server.pid()), client).await?;
    Ok((run, after.since(&before, Side::Http)))
}

/// One pgbench slice on one database.
struct PgbenchSlice<'a> {
    cluster: &'a BenchCluster,
    client: &'a Client,
    database: &'a Database,
    script: &'a std::path::Path,
    users: &'a [uuid::Uuid],
    index: u32,
    side: Side,
    /// `--rate`, if throttled.
    rate: Option<f64>,
    length: Duration,
    settings: Settings,
}

impl PgbenchSlice<'_> {
    /// Seeds the slice's sessions, runs pgbench, and waits until its backends are gone.
    async fn run(&self) -> Result<(pgbench::Outcome, Spent)> {
        // Sessions of their own for the throttled slices, which share the database.
        let offset = if self.side == Side::PgbenchAtHttpRate {
            SLICES
        } else {
            0
        };
        let slice_id = i32::try_from(self.index + offset)?;
        self.client.execute(SEED, &[&self.users, &slice_id]).await?;
        self.client.batch_execute("CHECKPOINT").await?;
        let slice_text = slice_id.to_string();
        let url = self.database.url();
        let before = Snapshot::take(self.cluster, None, self.client).await?;
        let run = pgbench::Run {
            conninfo: &url,
            script: self.script,
            clients: self.settings.refresh_concurrency,
            threads: self.settings.cores,
            duration: self.length,
            variables: &[("k", "0"), ("slice", &slice_text)],
            rate: self.rate,
        };
        let clients = i32::try_from(self.settings.refresh_concurrency)?;
        let (outcome, backends) =
            tokio::join!(run.execute(), pgbench_backends(self.client, clients));
        let outcome = outcome?;
        // Gone backends have reported their statistics and their time is the postmaster's.
        cpu::wait_until_reaped(&backends?).await?;
        let after = Snapshot::take(self.cluster, None, self.client).await?;
        Ok((outcome, after.since(&before, Side::Pgbench)))
    }
}

/// Registers one account per chain.
async fn register_chains(server: &Server, chains: usize) -> Result<Vec<Account>> {
    let mut accounts = Vec::with_capacity(chains);
    for chain in 0..chains {
        let email = format!("chain-{chain}@example.com");
        let user_id = register(server, &email).await?;
        accounts.push(Account { email, user_id });
    }
    Ok(accounts)
}

/// Rotations the database holds for the pgbench sessions of `slices`.
async fn pgbench_rotations(client: &Client, slices: std::ops::Range<u32>) -> Result<i64> {
    let mut total = 0;
    for slice in slices {
        let rotations: i64 = client
            .query_one(ROTATIONS, &[&format!("pgbench {slice} %")])
            .await?
            .get(0);
        total += rotations;
    }
    Ok(total)
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
async fn pgbench_backends(client: &Client, clients: i32) -> Result<Vec<u32>> {
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
    /// Counts the new database's updates of `sessions` over the round, once the server
    /// has stopped: its connections report their counts as they close. Waits (at most
    /// [`STATS_WAIT`]) until every rotation the database holds is counted.
    pub(crate) async fn count_hot_updates(&mut self, database: &Database) -> Result<()> {
        let client = database.connect().await?;
        let rotations: i64 = client.query_one(ALL_ROTATIONS, &[]).await?.get(0);
        let deadline = Instant::now() + STATS_WAIT;
        loop {
            let updates = cluster::session_updates(&client).await?;
            if updates.0 >= rotations || Instant::now() >= deadline {
                self.new_updates = Some(updates);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Records the refresh figures of this round.
    pub(crate) fn record(&self, round: &mut Round) {
        self.record_costs(round);
        self.record_checks(round);
    }

    /// Rates, CPU, WAL and HOT share.
    #[allow(
        clippy::cast_precision_loss,
        clippy::too_many_lines,
        reason = "counts and bytes stay far below 2^52; one row after another"
    )]
    fn record_costs(&self, round: &mut Round) {
        let stats = &self.http.stats;
        let empty = pgbench::Outcome::default();
        let pgbench = self.pgbench.outcome.as_ref().unwrap_or(&empty);
        let old = self.old.outcome.as_ref().unwrap_or(&empty);
        let at_rate = self.at_http_rate.outcome.as_ref().unwrap_or(&empty);
        let http_tps = self.http.rate();
        round.value("refresh over HTTP (rotations/s)", http_tps, Unit::PerSecond);
        round.value(
            "refresh in pgbench, baseline (rotations/s)",
            pgbench.tps,
            Unit::PerSecond,
        );
        round.value(
            "refresh in pgbench at the HTTP rate (rotations/s)",
            at_rate.tps,
            Unit::PerSecond,
        );
        round.value(
            "refresh in pgbench, old function and schema (V5) (rotations/s)",
            old.tps,
            Unit::PerSecond,
        );
        round.value(
            "refresh HTTP / pgbench (rotations/s; co-location, not a target)",
            http_tps / pgbench.tps.max(f64::EPSILON),
            Unit::Ratio,
        );
        let refreshes = stats.successes();
        let processed = usize::try_from(pgbench.processed).unwrap_or(usize::MAX);
        let old_processed = usize::try_from(old.processed).unwrap_or(usize::MAX);
        let at_rate_processed = usize::try_from(at_rate.processed).unwrap_or(usize::MAX);
        let at_rate_database =
            cpu::micros_each(self.at_http_rate.spent.database, at_rate_processed);
        let http_database = cpu::micros_each(self.http_spent.database, refreshes);
        let pgbench_database = cpu::micros_each(self.pgbench.spent.database, processed);
        let old_database = cpu::micros_each(self.old.spent.database, old_processed);
        round.value(
            "server CPU per HTTP refresh",
            cpu::micros_each(self.http_spent.server, refreshes),
            Unit::Micros,
        );
        round.value(
            "PostgreSQL CPU per HTTP refresh",
            http_database,
            Unit::Micros,
        );
        round.value(
            "PostgreSQL CPU per pgbench rotation",
            pgbench_database,
            Unit::Micros,
        );
        round.value(
            "PostgreSQL CPU per pgbench rotation at the HTTP rate",
            at_rate_database,
            Unit::Micros,
        );
        round.value(
            "PostgreSQL CPU per pgbench rotation, old function and schema (V5)",
            old_database,
            Unit::Micros,
        );
        round
            .value(
                "PostgreSQL CPU per HTTP refresh / per pgbench rotation",
                http_database / pgbench_database.max(f64::EPSILON),
                Unit::Ratio,
            )
            .target(Target::AtMost(TARGET_DATABASE_RATIO));
        round
            .value(
                "PostgreSQL CPU per HTTP refresh / per pgbench rotation at the HTTP rate",
                http_database / at_rate_database.max(f64::EPSILON),
                Unit::Ratio,
            )
            .target(Target::AtMost(TARGET_DATABASE_RATIO));
        round
            .value(
                "PostgreSQL CPU per pgbench rotation, new / old function and schema",
                pgbench_database / old_database.max(f64::EPSILON),
                Unit::Ratio,
            )
            .target(Target::AtMost(TARGET_NEW_OVER_OLD));
        let per = |bytes: i64, count: usize| bytes as f64 / count.max(1) as f64;
        round.value(
            "WAL bytes per HTTP refresh",
            per(self.http_spent.wal_bytes, refreshes),
            Unit::Count,
        );
        round.value(
            "WAL bytes per pgbench rotation",
            per(self.pgbench.spent.wal_bytes, processed),
            Unit::Count,
        );
        round.value(
            "WAL bytes per pgbench rotation at the HTTP rate",
            per(self.at_http_rate.spent.wal_bytes, at_rate_processed),
            Unit::Count,
        );
        round.value(
            "WAL bytes per pgbench rotation, old function and schema (V5)",
            per(self.old.spent.wal_bytes, old_processed),
            Unit::Count,
        );
        let share = |(updates, hot): (i64, i64)| hot as f64 / updates.max(1) as f64;
        if let Some(updates) = self.new_updates {
            round
                .value(
                    "HOT share of refresh updates (n_tup_hot_upd / n_tup_upd)",
                    share(updates),
                    Unit::Ratio,
                )
                .target(Target::AtLeast(TARGET_HOT_SHARE));
        }
        round.value(
            "HOT share of refresh updates, old function and schema (V5)",
            share(self.old_updates),
            Unit::Ratio,
        );
        for (label, spent, count) in [
            (
                "harness CPU per HTTP refresh (the load generator)",
                self.http_spent.client,
                refreshes,
            ),
            (
                "pgbench CPU per rotation (its client)",
                self.pgbench.spent.client,
                processed,
            ),
            (
                "idle CPU per HTTP refresh (both cores)",
                self.http_spent.idle,
                refreshes,
            ),
            (
                "idle CPU per pgbench rotation (both cores)",
                self.pgbench.spent.idle,
                processed,
            ),
        ] {
            round.value(label, cpu::micros_each(spent, count), Unit::Micros);
        }
        round.latency("refresh HTTP p50", stats.percentile(500));
        round.latency("refresh HTTP p99", stats.percentile(990));
        round.value("pgbench mean latency", pgbench.latency_ms, Unit::Millis);
    }

    /// That nothing failed, and every success is in the database.
    #[allow(clippy::cast_precision_loss, reason = "counts stay far below 2^52")]
    fn record_checks(&self, round: &mut Round) {
        let stats = &self.http.stats;
        let empty = pgbench::Outcome::default();
        let pgbench = self.pgbench.outcome.as_ref().unwrap_or(&empty);
        let old = self.old.outcome.as_ref().unwrap_or(&empty);
        let at_rate = self.at_http_rate.outcome.as_ref().unwrap_or(&empty);
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
        for (side, outcome, rotations) in [
            ("", pgbench, self.pgbench.rotations),
            (" (at the HTTP rate)", at_rate, self.at_http_rate.rotations),
            (" (V5)", old, self.old.rotations),
        ] {
            let missing = outcome
                .processed
                .abs_diff(u64::try_from(rotations).unwrap_or(0));
            round
                .count(
                    format!("pgbench transactions failed or without their rotation{side}"),
                    missing + outcome.failed + u64::from(outcome.aborted),
                )
                .target(Target::AtMost(0.0));
            if !outcome.stderr.is_empty() {
                round.note(format!("pgbench{side} stderr: {}", outcome.stderr));
            }
        }
        if self.new_updates.is_some_and(|(updates, _)| {
            updates < self.http_rotations + self.pgbench.rotations + self.at_http_rate.rotations
        }) {
            round.note(format!(
                "the statistics had not counted every rotation after {STATS_WAIT:?}"
            ));
        }
        for (kind, count) in stats.errors() {
            round.note(format!("refresh HTTP error: {kind} x{count}"));
        }
    }
}

/// What the cluster, the server, the harness and pgbench had used at one moment, and
/// where the WAL stood.
struct Snapshot {
    cluster: Duration,
    server: Duration,
    harness: Duration,
    /// The harness's reaped children: pgbench.
    pgbench: Duration,
    idle: Duration,
    wal: i64,
}

impl Snapshot {
    async fn take(cluster: &BenchCluster, server: Option<u32>, client: &Client) -> Result<Self> {
        let wal = cluster::wal_position(client).await?;
        Ok(Self {
            cluster: cluster.cpu()?,
            server: server.map_or(Ok(Duration::ZERO), cpu::process_time)?,
            harness: cpu::process_time(std::process::id())?,
            pgbench: cpu::ended_children_time(std::process::id())?,
            idle: cpu::machine_idle()?,
            wal,
        })
    }

    /// What `side` spent from `before` to this snapshot.
    fn since(&self, before: &Self, side: Side) -> Spent {
        let client = match side {
            Side::Http => self.harness.saturating_sub(before.harness),
            Side::Pgbench | Side::PgbenchAtHttpRate | Side::PgbenchOld => {
                self.pgbench.saturating_sub(before.pgbench)
            }
        };
        Spent {
            server: self.server.saturating_sub(before.server),
            database: self.cluster.saturating_sub(before.cluster),
            client,
            idle: self.idle.saturating_sub(before.idle),
            wal_bytes: self.wal - before.wal,
        }
    }
}

/// CPU and WAL spent during one side's slices.
#[derive(Debug, Default)]
struct Spent {
    /// The server process (none on pgbench's sides).
    server: Duration,
    /// The whole PostgreSQL cluster.
    database: Duration,
    /// The client: the harness's own process for HTTP, pgbench for pgbench.
    client: Duration,
    /// Idle and I/O-wait time of all cores.
    idle: Duration,
    /// WAL written.
    wal_bytes: i64,
}

impl Spent {
    fn add(&mut self, other: &Self) {
        self.server += other.server;
        self.database += other.database;
        self.client += other.client;
        self.idle += other.idle;
        self.wal_bytes += other.wal_bytes;
    }
}
