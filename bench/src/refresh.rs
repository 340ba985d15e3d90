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

use reqwest::StatusCode;
use serde_json::{Value, json};
use session_testdb::TestDb;

use crate::load::{self, Bounds, Stats};
use crate::report::{Round, Target, Unit};
use crate::server::{Server, http_client};
use crate::{Result, Settings, pgbench};

const EMAIL: &str = "bench@example.com";
/// The account's password, shared with the login figure.
pub(crate) const PASSWORD: &str = "correct horse battery staple";
/// Target: HTTP refreshes per second over pgbench rotations per second.
const TARGET_RATIO: f64 = 0.7;

/// How the figure is measured, for BENCHMARKS.md.
pub(crate) const METHOD: &str = "\
Each round starts a fresh database and the release `session-server` (rate limits off by \
configuration). 32 refresh chains run over HTTP for one phase: each worker posts its \
current refresh token to `POST /auth/refresh` and continues with the token it gets back; \
rotations/s counts 200s over the phase's wall time, p50 and p99 are client-side. Then \
pgbench runs the same stored function (`session_guard_refresh`, one prepared call \
per transaction, 32 clients, the same phase length) on 32 sessions seeded for it, each \
transaction a real rotation (a client aborts if one is not). Afterwards the rotations \
written are counted in the database for both and compared with what each side \
reported. The ratio is HTTP over pgbench in the same round.";

/// One rotation per transaction; see the module documentation.
const SCRIPT: &str = "\
-- One refresh-token rotation per transaction (see bench/src/refresh.rs).
SELECT :k::int + 1 AS k
  FROM session_guard_refresh(
         md5('pgbench:' || :client_id::text)::uuid, :k::int,
         sha256(convert_to('pgbench:' || :client_id::text || ':' || :k::text, 'UTF8')),
         sha256(convert_to('pgbench:' || :client_id::text || ':' || (:k::int + 1)::text, 'UTF8')),
         sha256(convert_to('pgbench client', 'UTF8')),
         '10 seconds', '14 days', 16, '127.0.0.1')
 WHERE outcome = 'rotated' \\gset
";

/// One live session per pgbench client (numbered from 0): id `S(c)`, secret hash `H(c, 0)`.
const SEED: &str = "\
INSERT INTO sessions (id, user_id, device_name, ip, idle_expires_at, absolute_expires_at,
                      refresh_hash)
SELECT md5('pgbench:' || c)::uuid, $1::text::uuid, 'pgbench ' || c, '127.0.0.1',
       now() + interval '14 days', now() + interval '90 days',
       sha256(convert_to('pgbench:' || c || ':0', 'UTF8'))
  FROM generate_series(0, $2::int - 1) AS c";

/// Rotations done (generations reached) by sessions whose device name matches `$1`.
const ROTATIONS: &str = "\
SELECT coalesce(sum(refresh_generation), 0)::bigint FROM sessions WHERE device_name LIKE $1";

/// The refresh figures of one run.
#[derive(Debug)]
pub(crate) struct Figures {
    http: load::Run,
    /// Rotations the database holds for the HTTP chains.
    http_rotations: i64,
    pgbench: pgbench::Outcome,
    /// Rotations the database holds for the pgbench clients.
    pgbench_rotations: i64,
}

/// Registers the account, runs the HTTP load, then pgbench.
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
    let url = server.url("/auth/refresh");
    let bounds = Bounds::new(settings.duration, settings.max_requests_per_worker);
    let mut workers = Vec::with_capacity(tokens.len());
    for token in tokens {
        workers.push(refresh_chain(http_client()?, url.clone(), token, bounds));
    }
    let http = load::run(workers).await?;

    let client = db.connect().await;
    let http_rotations: i64 = client.query_one(ROTATIONS, &[&"http %"]).await?.get(0);
    let clients = i32::try_from(settings.refresh_concurrency)?;
    client.execute(SEED, &[&user_id, &clients]).await?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("rotate.sql");
    std::fs::write(&script, SCRIPT)?;
    let pgbench = pgbench::Run {
        conninfo: &db.url(),
        script: &script,
        clients: settings.refresh_concurrency,
        threads: settings.cores,
        duration: settings.duration,
        variables: &[("k", "0")],
    }
    .execute()
    .await?;
    let pgbench_rotations: i64 = client.query_one(ROTATIONS, &[&"pgbench %"]).await?.get(0);

    Ok(Figures {
        http,
        http_rotations,
        pgbench,
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

/// Refreshes one session's chain: each success hands the next token to use. A failed
/// request keeps the token and tries again (a retry is safe by design); a 401 means the
/// chain is dead, and the worker stops.
async fn refresh_chain(
    client: reqwest::Client,
    url: String,
    mut token: String,
    bounds: Bounds,
) -> Stats {
    let mut stats = Stats::default();
    while bounds.allow(stats.attempts()) {
        let started = Instant::now();
        let response = client
            .post(&url)
            .json(&json!({"refresh_token": token}))
            .send()
            .await;
        match response {
            Ok(response) if response.status() == StatusCode::OK => {
                let body = match response.json::<Value>().await {
                    Ok(body) => body,
                    Err(e) => {
                        stats.transport_failure(e);
                        continue;
                    }
                };
                let Some(next) = body["refresh_token"].as_str() else {
                    stats.failure("200 without refresh_token");
                    break;
                };
                next.clone_into(&mut token);
                stats.success(started);
            }
            Ok(response) => {
                let code = response.status();
                stats.failure(format!("HTTP {code}"));
                if code == StatusCode::UNAUTHORIZED {
                    break;
                }
            }
            Err(e) => stats.transport_failure(e),
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
