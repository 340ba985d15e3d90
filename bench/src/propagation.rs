//! Figure 3, revocation propagation: the time from a logout answered by the server until
//! each of three processes carrying the layer refuses that session's token.
//!
//! The three processes trust the server's JWKS URL and share its database, as services
//! behind the template would. Each round logs in 100 sessions, has every process accept
//! every token once (so each caches the session as live), then logs the sessions out one
//! at a time and polls the three processes until each answers 401.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use http::{HeaderValue, StatusCode};
use portcullis_testdb::TestDb;
use serde_json::json;

use crate::hello::{self, HelloService, Mode};
use crate::http1::{self, Connection};
use crate::load::nearest_rank;
use crate::refresh::string_field;
use crate::report::{Round, Section, Target, Unit};
use crate::server::Server;
use crate::{Result, Settings};

/// Sessions revoked per round.
const SESSIONS: usize = 100;
/// Processes carrying the layer.
const PROCESSES: usize = 3;
/// Logins in flight at once while preparing a round.
const LOGIN_CONCURRENCY: usize = 4;
/// Pause between two polls of one process (tokio's timer rounds it up to 1 ms).
const POLL_INTERVAL: Duration = Duration::from_micros(500);
/// A process that still accepts the token this long after the logout has failed.
const POLL_LIMIT: Duration = Duration::from_secs(5);
/// Target: p99 of the propagation time.
const TARGET_P99: Duration = Duration::from_millis(50);
const EMAIL: &str = "propagation@example.com";
const PASSWORD: &str = "correct horse battery staple";

/// How the figure is measured, for BENCHMARKS.md.
pub(crate) const METHOD: &str = "\
The release `portcullis-server` and three child processes, each an axum hello service \
behind `SessionGuardLayer` with keys from the server's JWKS URL and `PostgresLiveness` \
on the same database (defaults: one `LISTEN` connection each). Each round logs in 100 \
sessions through the server and has each process accept each token once (200: the \
session is now cached as live in all three). Then, one session at a time: \
`POST /auth/logout` with its token through the server; the clock starts when the 204 \
arrives, and each of the three processes is polled over its own keep-alive connection \
(about every 0.5 ms; tokio's timer makes it up to 1 ms) until it answers 401; a sample \
is the time from the 204 to the arrival of that 401. 300 samples per round (100 sessions \
× 3 processes); a process still answering 200 after 5 s is an error.";

/// Runs figure 3 for `settings.rounds` rounds.
pub(crate) async fn run(binary: &std::path::Path, settings: Settings) -> Result<Section> {
    let db = TestDb::new().await;
    let server = Server::start(binary, &db.url(), None).await?;
    let jwks_url = server.url("/.well-known/jwks.json");
    let mut services = Vec::with_capacity(PROCESSES);
    for _ in 0..PROCESSES {
        services
            .push(HelloService::start(Mode::Jwks, &db.url(), &[("jwks-url", &jwks_url)]).await?);
    }
    server
        .post_json(
            "/auth/register",
            &json!({"email": EMAIL, "password": PASSWORD}),
            StatusCode::CREATED,
        )
        .await?;

    let mut section = Section::new("3. Revocation propagation", METHOD);
    for round_index in 0..settings.rounds {
        eprintln!(
            "propagation: round {}/{}: {SESSIONS} logins, then {SESSIONS} logouts ...",
            round_index + 1,
            settings.rounds
        );
        let tokens = log_in(&server, round_index).await?;
        let mut connections = Vec::with_capacity(PROCESSES);
        for service in &services {
            connections.push(Connection::open(service.addr).await?);
        }
        let mut round = Round::default();
        for (_, bearer) in &tokens {
            for connection in &mut connections {
                let status = connection.get(hello::PATH, Some(bearer)).await?;
                if status != StatusCode::OK {
                    return Err(format!("warming a token: expected 200, got {status}").into());
                }
            }
        }
        let mut samples = Vec::with_capacity(SESSIONS * PROCESSES);
        let mut failures = 0;
        for (token, bearer) in &tokens {
            let status = server.post_bearer("/auth/logout", token).await?;
            let revoked_at = Instant::now();
            if status != StatusCode::NO_CONTENT {
                return Err(format!("POST /auth/logout: expected 204, got {status}").into());
            }
            let polls = connections
                .iter_mut()
                .map(|connection| refused_after(connection, bearer, revoked_at));
            for outcome in join_all(polls).await {
                match outcome {
                    Ok(Some(elapsed)) => samples.push(elapsed),
                    Ok(None) => failures += 1,
                    Err(e) => {
                        failures += 1;
                        round.note(format!("poll failed: {e}"));
                    }
                }
            }
        }
        samples.sort_unstable();
        record(&mut round, &samples, failures);
        section.push(round);
    }
    Ok(section)
}

/// Logs in [`SESSIONS`] new sessions; returns each access token and its `Bearer` value.
async fn log_in(server: &Server, round_index: usize) -> Result<Vec<(String, HeaderValue)>> {
    let mut tokens = Vec::with_capacity(SESSIONS);
    let indices: Vec<usize> = (0..SESSIONS).collect();
    for batch in indices.chunks(LOGIN_CONCURRENCY) {
        let logins = batch.iter().map(|index| {
            let body = json!({
                "email": EMAIL,
                "password": PASSWORD,
                "device_name": format!("propagation {round_index}.{index}"),
            });
            async move { server.post_json("/auth/login", &body, StatusCode::OK).await }
        });
        for pair in join_all(logins).await {
            let token = string_field(&pair?, "access_token")?;
            let bearer = http1::bearer(&token)?;
            tokens.push((token, bearer));
        }
    }
    Ok(tokens)
}

/// Polls until `connection` refuses `bearer`: the time since `since` when the 401
/// arrived, or `None` after [`POLL_LIMIT`].
async fn refused_after(
    connection: &mut Connection,
    bearer: &HeaderValue,
    since: Instant,
) -> Result<Option<Duration>> {
    loop {
        let status = connection.get(hello::PATH, Some(bearer)).await?;
        let elapsed = since.elapsed();
        match status {
            StatusCode::UNAUTHORIZED => return Ok(Some(elapsed)),
            StatusCode::OK if elapsed < POLL_LIMIT => {}
            StatusCode::OK => return Ok(None),
            other => return Err(format!("expected 200 or 401, got {other}").into()),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "sample counts stay far below 2^52"
)]
fn record(round: &mut Round, samples: &[Duration], failures: u64) {
    round.latency("propagation p50", nearest_rank(samples, 500));
    if let Some(p99) = round.latency("propagation p99", nearest_rank(samples, 990)) {
        p99.target(Target::Below(TARGET_P99.as_secs_f64() * 1000.0));
    }
    round.latency("propagation max", samples.last().copied());
    round.value(
        "samples (sessions × processes)",
        samples.len() as f64,
        Unit::Count,
    );
    round
        .count("tokens still accepted after 5 s, or polls failed", failures)
        .target(Target::AtMost(0.0));
}
