//! Load on the real server process: 1,000 concurrent keep-alive connections for 30 s
//! against a protected route (`GET /me`) and the refresh route, with no errors, and the
//! server's resident memory flat once warmed up.
//!
//! It runs with the rest (about 35 s); `cargo test -p portcullis-e2e --test load -- --nocapture`
//! prints requests
//! per second, p50 and p99 latency, errors, and the server's RSS over time. The server is
//! the debug build the other end-to-end tests use, on a machine it shares with the load
//! generator and PostgreSQL; the figures are for comparison between runs, not capacity.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_e2e::ServerProcess;
use portcullis_e2e::api::{Api, Session, token};
use portcullis_e2e::proc_status::open_files_limit;
use portcullis_testdb::TestDb;
use serde_json::json;

const EMAIL: &str = "load@example.com";
const PASSWORD: &str = "correct horse battery staple";
/// Concurrent connections, one per task, each kept alive for the whole run.
const CONNECTIONS: usize = 1_000;
/// One task in this many refreshes (its own session); the others call `GET /me`.
const REFRESH_EVERY: usize = 10;
/// Sessions whose access tokens the `GET /me` tasks share.
const ME_SESSIONS: usize = 20;
const RUN: Duration = Duration::from_secs(30);
const WARM_UP: Duration = Duration::from_secs(10);
/// Allowed growth of the server's RSS from the end of the warm-up to the end of the
/// run: 10 % of the warmed-up size plus 8 MiB (allocator and pool slack).
const RSS_GROWTH_PERCENT: u64 = 10;
const RSS_GROWTH_SLACK_KIB: u64 = 8 * 1024;

/// What one connection's task saw.
#[derive(Default)]
struct TaskReport {
    /// Latencies of answered requests, in microseconds, by route: `/me`, refresh.
    latencies: [Vec<u32>; 2],
    /// Requests that failed or were not a 200, with the reason.
    errors: Vec<String>,
}

/// Sends requests one after the other until `until`: refreshes of `session` when
/// `refresh`, else `GET /me` with its access token. With every task doing so on one
/// shared client, its pool holds one keep-alive connection per task.
async fn one_client(
    http: reqwest::Client,
    base: String,
    mut session: Session,
    refresh: bool,
    until: Instant,
) -> TaskReport {
    let mut report = TaskReport::default();
    // Bounded: far more than 30 s can hold even at a microsecond per request.
    for _ in 0..10_000_000 {
        if Instant::now() >= until {
            break;
        }
        let sent = Instant::now();
        let request = if refresh {
            http.post(format!("{base}/auth/refresh"))
                .json(&json!({"refresh_token": session.refresh}))
        } else {
            http.get(format!("{base}/me")).bearer_auth(&session.access)
        };
        let outcome = async {
            let response = request.send().await.map_err(|e| format!("{e:?}"))?;
            let status = response.status().as_u16();
            let body = response.text().await.map_err(|e| format!("{e:?}"))?;
            Ok::<_, String>((status, body))
        }
        .await;
        let took = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
        match outcome {
            Ok((200, body)) => {
                report.latencies[usize::from(refresh)].push(took);
                if refresh {
                    let pair: serde_json::Value = serde_json::from_str(&body).unwrap();
                    session.refresh = token(&pair, "refresh_token");
                    session.access = token(&pair, "access_token");
                }
            }
            Ok((status, body)) => report.errors.push(format!("{status}: {body}")),
            Err(e) => report.errors.push(e),
        }
    }
    report
}

fn percentile(sorted: &[u32], percent: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = (sorted.len() * percent / 100).min(sorted.len() - 1);
    Duration::from_micros(u64::from(sorted[index]))
}

/// Open sockets of the server process: its connections, clients' and PostgreSQL's.
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|entry| {
                std::fs::read_link(entry.path())
                    .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
            })
            .count()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::too_many_lines,
    clippy::cast_precision_loss,
    reason = "one run: set-up, load, memory samples, then the report; rates are floats"
)]
async fn a_thousand_keep_alive_connections_on_me_and_refresh_for_30_s_get_no_errors_and_server_memory_stays_flat()
 {
    // Each connection costs a socket here and one in the server (a child, same limit).
    let needed = 2 * CONNECTIONS as u64 + 256;
    let limit = open_files_limit();
    assert!(
        limit.is_none_or(|limit| limit >= needed),
        "the open-files limit is {limit:?}; {needed} are needed: raise it (`ulimit -n {needed}`) \
         and run again"
    );
    let db = TestDb::new().await;
    let server = ServerProcess::start(
        &db.url(),
        &[
            ("RATE_LIMIT_LOGIN_PER_ACCOUNT", "0"),
            ("RATE_LIMIT_LOGIN_PER_IP", "0"),
            ("RATE_LIMIT_REFRESH_PER_IP", "0"),
            // All the connections come from one address.
            ("MAX_CONNECTIONS_PER_IP", "0"),
            ("RUST_LOG", "warn"),
        ],
    )
    .await;
    let api = Api::new(&server);
    api.register(EMAIL, PASSWORD).await;
    let refreshers = CONNECTIONS / REFRESH_EVERY;
    let mut sessions = Vec::new();
    while sessions.len() < refreshers + ME_SESSIONS {
        let batch =
            futures_util::future::join_all((0..8).map(|_| api.login_session(EMAIL, PASSWORD)))
                .await;
        sessions.extend(batch);
    }
    let me_sessions: Vec<Session> = sessions.split_off(refreshers);
    let mut refresh_sessions = sessions.into_iter();

    // One client for all tasks: its pool keeps every connection alive between requests
    // (building a client per task would parse the CA bundle a thousand times).
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client");
    let base = server.url("");
    let before = server.resident_kib();
    let started = Instant::now();
    let until = started + RUN;
    let mut tasks = Vec::new();
    for index in 0..CONNECTIONS {
        let refresh = index % REFRESH_EVERY == 0;
        let session = if refresh {
            refresh_sessions
                .next()
                .expect("a session per refreshing task")
        } else {
            let shared = &me_sessions[index % ME_SESSIONS];
            Session {
                id: shared.id.clone(),
                access: shared.access.clone(),
                refresh: String::new(),
            }
        };
        tasks.push(tokio::spawn(one_client(
            http.clone(),
            base.clone(),
            session,
            refresh,
            until,
        )));
        // Connections open over the first second rather than as one SYN flood.
        if index % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The server's RSS every second, and its sockets once every connection is open.
    let server = Arc::new(server);
    let pid = server.pid();
    let mut samples = Vec::new();
    let mut sockets = 0;
    for second in 1..=RUN.as_secs() {
        tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
        samples.push((second, server.resident_kib()));
        if second == WARM_UP.as_secs() / 2 {
            sockets = open_sockets(pid);
        }
    }
    let mut reports = Vec::new();
    for task in tasks {
        reports.push(task.await.expect("a load task panicked"));
    }
    let elapsed = started.elapsed();

    let mut latencies: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
    let mut errors = Vec::new();
    for report in reports {
        for (all, mine) in latencies.iter_mut().zip(report.latencies) {
            all.extend(mine);
        }
        errors.extend(report.errors);
    }
    let mut everything: Vec<u32> = latencies.concat();
    everything.sort_unstable();
    for route in &mut latencies {
        route.sort_unstable();
    }
    let seconds = elapsed.as_secs_f64();
    let at = |second: u64| {
        samples
            .iter()
            .find(|(s, _)| *s == second)
            .map_or(0, |(_, kib)| *kib)
    };
    let (warm, end) = (at(WARM_UP.as_secs()), at(RUN.as_secs()));
    eprintln!(
        "{CONNECTIONS} connections ({refreshers} refreshing, the rest on GET /me) for \
         {elapsed:.1?}; server sockets at {}s: {sockets}",
        WARM_UP.as_secs() / 2
    );
    eprintln!(
        "all: {} requests, {:.0}/s, p50 {:?}, p99 {:?}; errors: {}",
        everything.len(),
        everything.len() as f64 / seconds,
        percentile(&everything, 50),
        percentile(&everything, 99),
        errors.len()
    );
    for (name, route) in ["GET /me", "POST /auth/refresh"].iter().zip(&latencies) {
        eprintln!(
            "{name}: {} requests, {:.0}/s, p50 {:?}, p99 {:?}",
            route.len(),
            route.len() as f64 / seconds,
            percentile(route, 50),
            percentile(route, 99)
        );
    }
    eprintln!(
        "server RSS (KiB) by second: {samples:?}\nRSS before the load {before} KiB, at {}s \
         {warm} KiB, at {}s {end} KiB",
        WARM_UP.as_secs(),
        RUN.as_secs()
    );

    assert!(
        errors.is_empty(),
        "{} errors, the first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(
        sockets >= CONNECTIONS,
        "only {sockets} sockets open in the server: the connections were not kept alive"
    );
    assert!(
        !latencies[0].is_empty() && !latencies[1].is_empty(),
        "a route saw no load"
    );
    let allowed = warm + warm * RSS_GROWTH_PERCENT / 100 + RSS_GROWTH_SLACK_KIB;
    assert!(
        end <= allowed,
        "server RSS grew from {warm} KiB at {}s to {end} KiB at {}s (allowed {allowed} KiB)",
        WARM_UP.as_secs(),
        RUN.as_secs()
    );
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
