//! The refresh figure: refresh-token rotations per second over HTTP, against what
//! PostgreSQL alone does with the same stored function (`session_guard_rotate_refresh`,
//! migration V2), measured with pgbench in the same run, at the same concurrency.
//!
//! # How pgbench does a real rotation every transaction
//!
//! Each pgbench client `c` owns one session seeded for this run, whose current token hash
//! is `H(c, 0)`, with `H(c, k) = sha256('pgbench:' || c || ':' || k)` (32 bytes, like the
//! server's keyed hash). pgbench keeps a separate set of variables per client for the
//! whole run, so the script carries the client's generation in `:k` (`--define k=0` to
//! start) and rotates `H(c, k)` to `H(c, k + 1)`. The statement returns `k + 1` only when
//! the outcome is `rotated`, and `\gset` stores it back into `:k`; any other outcome
//! returns no row, `\gset` fails and the client aborts, so a transaction that did less
//! work than a rotation cannot be counted. Each transaction is thus exactly what
//! `POST /auth/refresh` runs: one prepared call, one round trip, looking the token up by
//! hash, locking it and its session, marking it rotated, inserting the successor and
//! updating the session. The only extra work is two SHA-256 of a few bytes in SQL.
//! Afterwards the successors written are counted in the database and compared with the
//! transactions pgbench reported.

use std::time::Instant;

use reqwest::StatusCode;
use serde_json::{Value, json};
use session_testdb::TestDb;

use crate::load::{self, Bounds, Stats};
use crate::report::{Table, millis};
use crate::server::{Server, http_client};
use crate::{Result, Settings, pgbench};

const EMAIL: &str = "bench@example.com";
/// The account's password, shared with the login figure.
pub(crate) const PASSWORD: &str = "correct horse battery staple";
/// Target: HTTP refreshes per second over pgbench rotations per second.
const TARGET_RATIO: f64 = 0.5;

/// One rotation per transaction; see the module documentation.
const SCRIPT: &str = "\
-- One refresh-token rotation per transaction (see bench/src/refresh.rs).
SELECT :k::int + 1 AS k
  FROM session_guard_rotate_refresh(
         sha256(convert_to('pgbench:' || :client_id::text || ':' || :k::text, 'UTF8')),
         sha256(convert_to('pgbench:' || :client_id::text || ':' || (:k::int + 1)::text, 'UTF8')),
         '10 seconds', '14 days', '127.0.0.1')
 WHERE outcome = 'rotated' \\gset
";

/// One live session per pgbench client (numbered from 0), current token `H(c, 0)`.
const SEED: &str = "\
WITH seeds AS (
    SELECT c, gen_random_uuid() AS id FROM generate_series(0, $2::int - 1) AS c
), seeded AS (
    INSERT INTO sessions (id, user_id, device_name, ip, idle_expires_at, absolute_expires_at)
    SELECT id, $1::text::uuid, 'pgbench ' || c, '127.0.0.1',
           now() + interval '14 days', now() + interval '90 days'
      FROM seeds
)
INSERT INTO refresh_tokens (token_hash, session_id, generation)
SELECT sha256(convert_to('pgbench:' || c || ':0', 'UTF8')), id, 0 FROM seeds";

/// Successors written (rotations done) for sessions whose device name matches `$1`.
const ROTATIONS: &str = "\
SELECT count(*) FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
 WHERE t.generation > 0 AND s.device_name LIKE $1";

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
    /// Adds the refresh rows.
    pub(crate) fn report(&self, table: &mut Table) {
        let stats = &self.http.stats;
        let http_tps = self.http.rate();
        let ratio = http_tps / self.pgbench.tps.max(f64::EPSILON);
        table.row(
            "refresh over HTTP (rotations/s)",
            format!("{http_tps:.0}"),
            None,
        );
        table.row(
            "refresh in pgbench (rotations/s)",
            format!("{:.0}", self.pgbench.tps),
            None,
        );
        table.row(
            "refresh HTTP / pgbench",
            format!("{ratio:.2}"),
            Some((format!(">= {TARGET_RATIO:.2}"), ratio >= TARGET_RATIO)),
        );
        table.row(
            "refresh HTTP p50 / p99",
            format!(
                "{} / {}",
                millis(stats.percentile(500)),
                millis(stats.percentile(990))
            ),
            None,
        );
        table.row(
            "pgbench mean latency",
            format!("{:.2} ms", self.pgbench.latency_ms),
            None,
        );
        let errors = stats.error_count();
        table.row(
            "refresh HTTP errors (of which 5xx)",
            format!("{errors} ({})", stats.server_errors()),
            Some(("0".to_owned(), errors == 0)),
        );
        let consistent = self.http_rotations == i64::try_from(stats.successes()).unwrap_or(-1);
        table.row(
            "refresh HTTP rotations in DB",
            format!("{} of {} successes", self.http_rotations, stats.successes()),
            Some(("all".to_owned(), consistent)),
        );
        let pgbench_ok = !self.pgbench.aborted
            && self.pgbench.failed == 0
            && self.pgbench_rotations == i64::try_from(self.pgbench.processed).unwrap_or(-1);
        table.row(
            "pgbench rotations in DB",
            format!(
                "{} of {} transactions, {} failed{}",
                self.pgbench_rotations,
                self.pgbench.processed,
                self.pgbench.failed,
                if self.pgbench.aborted {
                    ", ABORTED"
                } else {
                    ""
                }
            ),
            Some(("all, 0 failed".to_owned(), pgbench_ok)),
        );
        for (kind, count) in stats.errors() {
            table.note(format!("refresh HTTP error: {kind} x{count}"));
        }
        if !self.pgbench.stderr.is_empty() {
            table.note(format!("pgbench stderr: {}", self.pgbench.stderr));
        }
    }
}
