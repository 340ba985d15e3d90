//! Faults on the real server process: PostgreSQL restarting under load, the revocation
//! listener's backend killed while sessions are revoked, a pool of one connection held
//! busy, and refreshes whose client hangs up before reading the answer.
//!
//! The PostgreSQL every test shares is never stopped: the restart runs against a
//! [`PrivateCluster`] of the test's own (or, where this machine cannot build one, against
//! a [`PostgresProxy`] that severs every connection, which the test then says).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use portcullis_e2e::api::{Api, Session, assert_refused, token};
use portcullis_e2e::attempt::Attempt;
use portcullis_e2e::{PostgresProxy, ServerProcess};
use portcullis_testdb::{PrivateCluster, StopMode, TestDb};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio_postgres::{Client, NoTls};

const EMAIL: &str = "ada@example.com";
const PASSWORD: &str = "correct horse battery staple";
/// The tests count outcomes themselves; rate limits would only add 429s to the count.
const NO_RATE_LIMITS: [(&str, &str); 3] = [
    ("RATE_LIMIT_LOGIN_PER_ACCOUNT", "0"),
    ("RATE_LIMIT_LOGIN_PER_IP", "0"),
    ("RATE_LIMIT_REFRESH_PER_IP", "0"),
];
/// The liveness cache's bound on a live answer (`PostgresLiveness`'s default; the
/// server has no setting for it): no revoked session may be accepted for longer.
const LIVE_TTL: Duration = Duration::from_secs(15);
/// How long a revocation made through the server may take to reach its own liveness
/// cache: it travels as a PostgreSQL notification, after the commit and the answer (the
/// cross-process test in `server_ops` allows the same 100 ms).
const NOTIFICATION_DELAY: Duration = Duration::from_millis(100);

/// A database that a test can take down and bring back: a private cluster that is
/// really stopped, or a proxy that severs every connection where no cluster can be built.
pub(super) enum Outage {
    Cluster {
        cluster: PrivateCluster,
        config: tokio_postgres::Config,
    },
    Proxy {
        db: TestDb,
        proxy: PostgresProxy,
    },
}

impl Outage {
    pub(super) async fn new() -> Self {
        match PrivateCluster::start().await {
            Ok(cluster) => {
                let config = cluster.create_database("session_guard").await;
                Self::Cluster { cluster, config }
            }
            Err(e) => {
                eprintln!("{e}; staging the outage with PostgresProxy instead");
                let db = TestDb::new().await;
                let proxy = PostgresProxy::start(db.config()).await;
                Self::Proxy { db, proxy }
            }
        }
    }

    /// The `DATABASE_URL` for the server.
    pub(super) fn url(&self) -> String {
        match self {
            Self::Cluster { config, .. } => TestDb::url_of(config),
            Self::Proxy { db, proxy } => TestDb::url_of(&proxy.route(db.config())),
        }
    }

    /// A direct connection for the test's own SQL.
    pub(super) async fn connect(&self) -> Client {
        match self {
            Self::Cluster { cluster, config } => cluster.connect(config).await,
            Self::Proxy { db, .. } => db.connect().await,
        }
    }

    pub(super) async fn down(&mut self, mode: StopMode) {
        match self {
            Self::Cluster { cluster, .. } => cluster.stop(mode).await,
            Self::Proxy { proxy, .. } => proxy.cut(),
        }
    }

    pub(super) async fn up(&mut self) {
        match self {
            Self::Cluster { cluster, .. } => cluster.restart().await,
            Self::Proxy { proxy, .. } => proxy.restore().await,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Refresh,
    Me,
}

/// One request of the load, with when it was sent and answered.
#[derive(Debug)]
struct Record {
    route: Route,
    sent: Instant,
    done: Instant,
    status: Option<u16>,
    detail: String,
}

impl Record {
    fn of(route: Route, sent: Instant, attempt: &Attempt) -> Self {
        let (status, detail) = match &attempt.outcome {
            Ok(reply) => (Some(reply.status), reply.body.clone()),
            Err(e) => (None, e.clone()),
        };
        Self {
            route,
            sent,
            done: sent + attempt.took,
            status,
            detail,
        }
    }
}

/// Waits (at most 20 s) until the load has recorded `count` answers with `status` to
/// requests sent after `since`: the event the outage test moves on at, instead of a
/// fixed sleep.
async fn load_answered(records: &Mutex<Vec<Record>>, since: Instant, status: u16, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.sent >= since && r.status == Some(status))
            .count();
        if seen >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {seen} answers {status} of the load, expected {count}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Takes a [`Session`]'s new tokens from a 200 of a refresh.
fn rotate(session: &mut Session, attempt: &Attempt) {
    if attempt.status() == Some(200) {
        let pair = attempt.reply().json();
        session.access = token(&pair, "access_token");
        session.refresh = token(&pair, "refresh_token");
    }
}

/// Refreshes and calls `/me` in turns until `stop` (at most `rounds` turns), keeping
/// the tokens of the last 200 as a client would (after a 503 it retries the same refresh
/// token, which the grace window allows); returns the session as it ends.
async fn churn(
    api: &Api<'_>,
    mut session: Session,
    stop: &AtomicBool,
    records: &Mutex<Vec<Record>>,
    rounds: usize,
) -> Session {
    for _ in 0..rounds {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let sent = Instant::now();
        let attempt = api.attempt_refresh(&session.refresh).await;
        rotate(&mut session, &attempt);
        records
            .lock()
            .unwrap()
            .push(Record::of(Route::Refresh, sent, &attempt));
        let sent = Instant::now();
        let attempt = api.attempt_me(&session.access).await;
        records
            .lock()
            .unwrap()
            .push(Record::of(Route::Me, sent, &attempt));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    session
}

/// Asserts that `attempt` is a 503 with the JSON error body.
#[track_caller]
fn assert_json_503(attempt: &Attempt) {
    attempt.reply().expect_error_shape(&[503]);
}

/// Polls `GET /me` with the access token of a revoked session until it is refused
/// (401); a 200 fails once `live_for` has passed, and so does no 401 within `live_for`
/// plus 5 s. Returns how long the refusal took and how many 200s came before it.
async fn refused_within(api: &Api<'_>, access: &str, live_for: Duration) -> (Duration, usize) {
    let started = Instant::now();
    let mut accepted = 0;
    loop {
        let attempt = api.attempt_me(access).await;
        let elapsed = started.elapsed();
        match attempt.status() {
            Some(401) => return (elapsed, accepted),
            Some(200) => {
                accepted += 1;
                assert!(
                    elapsed <= live_for,
                    "a revoked session was still accepted after {elapsed:?}"
                );
            }
            Some(503) => assert_json_503(&attempt),
            _ => panic!("GET /me of a revoked session: {}", attempt.reply().body),
        }
        assert!(
            elapsed < live_for + Duration::from_secs(5),
            "a revoked session was not refused within {elapsed:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// When the outage began and ended, as the test saw it.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    stop_called: Instant,
    stopped: Instant,
    start_called: Instant,
    /// A refresh and a `/me` had succeeded again.
    recovered: Instant,
}

#[allow(
    clippy::too_many_lines,
    reason = "one scenario: load, outage, recovery, then the checks of what was seen"
)]
async fn postgres_restart_under_load(mode: StopMode) {
    let mut db = Outage::new().await;
    let mut env = vec![
        ("DATABASE_TIMEOUT_SECONDS", "2"),
        ("REFRESH_GRACE_SECONDS", "60"),
    ];
    env.extend(NO_RATE_LIMITS);
    let server = ServerProcess::start(&db.url(), &env).await;
    let api = Api::new(&server);
    api.register(EMAIL, PASSWORD).await;
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push(api.login_session(EMAIL, PASSWORD).await);
    }
    let probe = api.login_session(EMAIL, PASSWORD).await;
    let doomed = api.login_session(EMAIL, PASSWORD).await;
    // Cached as live before the outage: its revocation must still be seen after it.
    api.me(&doomed.access).await.expect(200);
    api.me(&doomed.access).await.expect(200);

    let stop = AtomicBool::new(false);
    let records = Mutex::new(Vec::new());
    let load = futures_util::future::join_all(
        workers
            .into_iter()
            .map(|session| churn(&api, session, &stop, &records, 5_000)),
    );
    let outage = async {
        let began = Instant::now();
        load_answered(&records, began, 200, 20).await;
        let stop_called = Instant::now();
        db.down(mode).await;
        let stopped = Instant::now();
        // Down long enough for the load to meet it many times over.
        load_answered(&records, stopped, 503, 40).await;
        assert_eq!(
            server.get("/health").await.status(),
            503,
            "health while down"
        );
        let start_called = Instant::now();
        db.up().await;
        let started = Instant::now();

        // Revoked by plain SQL the moment PostgreSQL is back: the listener is most likely
        // still backing off, so the notification is lost; the cache was cleared when the
        // listener dropped, so the database decides.
        db.connect()
            .await
            .execute(
                "UPDATE sessions SET revoked_at = now(), revoked_reason = 'admin' \
                 WHERE id = $1::text::uuid",
                &[&doomed.id],
            )
            .await
            .expect("revoking a session after the restart");
        let revoked = Instant::now();

        // Recovery: a refresh and a /me of a session idle during the outage.
        let mut probe = probe;
        let (mut refreshed, mut answered) = (None, None);
        while refreshed.is_none() || answered.is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no recovery within 5 s of PostgreSQL's return (refresh {refreshed:?}, \
                 /me {answered:?})\n{}",
                server.log()
            );
            if refreshed.is_none() {
                let attempt = api.attempt_refresh(&probe.refresh).await;
                match attempt.status() {
                    Some(200) => {
                        rotate(&mut probe, &attempt);
                        refreshed = Some(started.elapsed());
                    }
                    Some(503) => assert_json_503(&attempt),
                    _ => panic!("refresh while recovering: {}", attempt.reply().body),
                }
            }
            let attempt = api.attempt_me(&probe.access).await;
            match attempt.status() {
                Some(200) => answered = answered.or(Some(started.elapsed())),
                Some(503) => assert_json_503(&attempt),
                _ => panic!("/me while recovering: {}", attempt.reply().body),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let recovered = Instant::now();
        assert_eq!(
            server.get("/health").await.status(),
            200,
            "health after recovery"
        );
        let (refused_after, _) = refused_within(&api, &doomed.access, Duration::ZERO).await;
        // The load runs on after recovery until it has been answered again, then stops.
        load_answered(&records, recovered + Duration::from_secs(1), 200, 20).await;
        stop.store(true, Ordering::Release);
        eprintln!(
            "{mode:?} restart: down {:?} (pg_ctl stop took {:?}, start took {:?}); \
             first refresh 200 {refreshed:?} and /me 200 {answered:?} after the start; \
             session revoked by SQL {:?} after the start refused {refused_after:?} later",
            start_called - stop_called,
            stopped - stop_called,
            started - start_called,
            revoked - started,
        );
        (
            Timeline {
                stop_called,
                stopped,
                start_called,
                recovered,
            },
            probe,
        )
    };
    let (survivors, (timeline, probe)) = tokio::join!(load, outage);
    let records = records.into_inner().unwrap();

    let mut during = [0_usize; 2];
    for record in &records {
        let what = format!("{:?} {record:?}", record.route);
        let status = record
            .status
            .unwrap_or_else(|| panic!("no answer at all: {what}\n{}", server.log()));
        assert!(
            status < 500 || status == 503,
            "a 5xx other than 503: {what}"
        );
        if status == 503 {
            let body: Value = serde_json::from_str(&record.detail)
                .unwrap_or_else(|_| panic!("a 503 without a JSON body: {what}"));
            assert!(
                body["error"].is_string() && body["message"].is_string(),
                "{what}"
            );
        }
        if record.done < timeline.stop_called {
            assert_eq!(status, 200, "before the outage: {what}");
        }
        // Sent after pg_ctl returned (no server process left) and answered before the
        // start began: nothing can be verified, so nothing may succeed. Requests in flight
        // while pg_ctl stopped the server may still have completed with a 200: that window
        // is [stop_called, stopped). `/me` also reads the email from the database, so the
        // liveness cache alone never answers it 200.
        if record.sent >= timeline.stopped && record.done <= timeline.start_called {
            assert_eq!(status, 503, "while PostgreSQL was down: {what}");
            during[usize::from(record.route == Route::Me)] += 1;
        }
        if record.sent >= timeline.recovered + Duration::from_secs(1) {
            assert_eq!(status, 200, "a second after recovery: {what}");
        }
    }
    assert!(
        during[0] > 5 && during[1] > 5,
        "too little load during the outage: {during:?} refreshes and /me"
    );
    eprintln!(
        "{mode:?} restart: {} requests, {} refreshes and {} /me answered 503 while down",
        records.len(),
        during[0],
        during[1]
    );

    // Every client ends up with working tokens; a logout afterwards is honoured.
    for session in survivors.iter().chain([&probe]) {
        let pair = api.refresh(&session.refresh).await.expect(200);
        api.me(&token(&pair, "access_token")).await.expect(200);
    }
    let last = &survivors[0];
    let pair = api.refresh(&last.refresh).await.expect(200);
    let access = token(&pair, "access_token");
    api.bearer(Method::POST, "/auth/logout", &access)
        .await
        .expect(204);
    // The revocation reaches the server's own cache as a notification, after the 204.
    refused_within(&api, &access, NOTIFICATION_DELAY).await;
    assert_refused(&api.refresh(&token(&pair, "refresh_token")).await);
    assert_refused(&api.refresh(&doomed.refresh).await);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fast_restart_under_load_gives_only_json_503s_while_down_and_recovers_within_5_s()
{
    postgres_restart_under_load(StopMode::Fast).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_and_recovery_under_load_gives_only_json_503s_while_down_and_recovers_within_5_s()
 {
    postgres_restart_under_load(StopMode::Immediate).await;
}

/// Terminates the backend of this database's revocation listener: how many there were.
async fn kill_listener(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1 AND datname = current_database()",
            &[&portcullis::LISTENER_APPLICATION_NAME],
        )
        .await
        .expect("terminating the listener")
        .get(0)
}

async fn revoke_by_sql(client: &Client, session: &str) {
    let revoked = client
        .execute(
            "UPDATE sessions SET revoked_at = now(), revoked_reason = 'admin' \
             WHERE id = $1::text::uuid AND revoked_at IS NULL",
            &[&session],
        )
        .await
        .expect("revoking by SQL");
    assert_eq!(revoked, 1);
}

/// Whether the server's revocation listener is connected, from `/metrics`.
async fn listener_connected(server: &ServerProcess) -> bool {
    let text = server.get("/metrics").await.text().await.unwrap();
    text.lines()
        .any(|line| line == "session_liveness_listener_connected 1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::too_many_lines,
    reason = "two phases of one scenario: scripted interleavings, then a free-running killer"
)]
async fn killing_the_listener_backend_while_sessions_are_revoked_never_lets_a_revoked_token_through_past_the_cache_bound()
 {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &NO_RATE_LIMITS).await;
    let api = Api::new(&server);
    let sql = db.connect().await;
    api.register(EMAIL, PASSWORD).await;
    let mut sessions = Vec::new();
    for _ in 0..24 {
        sessions.push(api.login_session(EMAIL, PASSWORD).await);
    }
    let keeper = sessions.pop().expect("a session that stays");
    let mut latencies = Vec::new();
    let mut kills = 0;
    // Answers of 200 to a revoked session's token, before its first 401.
    let mut accepted = 0;

    // Phase 1: each interleaving of kill and revocation in turn, the victim cached live.
    let (scripted, raced) = sessions.split_at(12);
    for (round, victim) in scripted.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !listener_connected(&server).await {
            assert!(Instant::now() < deadline, "the listener did not reconnect");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        api.me(&victim.access).await.expect(200);
        api.me(&victim.access).await.expect(200);
        let revoked_at = match round % 3 {
            // Killed, then revoked while it reconnects: the notification is lost.
            0 => {
                kills += kill_listener(&sql).await;
                revoke_by_sql(&sql, &victim.id).await;
                Instant::now()
            }
            // Revoked, then killed at once: the notification may die with it.
            1 => {
                revoke_by_sql(&sql, &victim.id).await;
                let at = Instant::now();
                kills += kill_listener(&sql).await;
                at
            }
            // Killed, cached live again on the fresh connection, then revoked.
            _ => {
                kills += kill_listener(&sql).await;
                let deadline = Instant::now() + Duration::from_secs(10);
                while !listener_connected(&server).await {
                    assert!(Instant::now() < deadline, "the listener did not reconnect");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                api.me(&victim.access).await.expect(200);
                revoke_by_sql(&sql, &victim.id).await;
                Instant::now()
            }
        };
        accepted += refused_within(&api, &victim.access, LIVE_TTL).await.1;
        latencies.push(revoked_at.elapsed());
        assert_refused(&api.refresh(&victim.refresh).await);
    }

    // Phase 2: a killer on its own schedule while victims are revoked and others are
    // kept warm in the cache.
    let done = AtomicBool::new(false);
    let killer = async {
        let killer_sql = db.connect().await;
        let mut killed = 0;
        for turn in 0_u64..400 {
            if done.load(Ordering::Acquire) {
                break;
            }
            killed += kill_listener(&killer_sql).await;
            tokio::time::sleep(Duration::from_millis(40 + (turn * 37) % 160)).await;
        }
        killed
    };
    let warmer = async {
        for _ in 0..2_000 {
            if done.load(Ordering::Acquire) {
                break;
            }
            for session in raced {
                let status = api.attempt_me(&session.access).await.status();
                assert!(matches!(status, Some(200 | 401)), "{status:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let revoker = async {
        let mut raced_latencies = Vec::new();
        let mut raced_accepted = 0;
        for (turn, victim) in (0_u64..).zip(raced) {
            api.me(&victim.access).await.expect(200);
            tokio::time::sleep(Duration::from_millis(20 + (turn * 53) % 200)).await;
            revoke_by_sql(&sql, &victim.id).await;
            let revoked_at = Instant::now();
            raced_accepted += refused_within(&api, &victim.access, LIVE_TTL).await.1;
            raced_latencies.push(revoked_at.elapsed());
            assert_refused(&api.refresh(&victim.refresh).await);
        }
        done.store(true, Ordering::Release);
        (raced_latencies, raced_accepted)
    };
    let (background_kills, (), (raced_latencies, raced_accepted)) =
        tokio::join!(killer, warmer, revoker);
    latencies.extend(raced_latencies);
    accepted += raced_accepted;
    kills += background_kills;

    let worst = latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "listener backends killed: {kills}; {} revocations, worst refusal latency {worst:?} \
         ({accepted} answers of 200 after a revocation in all), all: {latencies:?}",
        latencies.len()
    );
    assert!(kills >= 12, "only {kills} listener backends were killed");
    // Still serving, and every revoked session stays refused.
    api.me(&keeper.access).await.expect(200);
    for victim in &sessions {
        assert_refused(&api.me(&victim.access).await);
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// Sends `requests` at once and returns each attempt.
async fn burst(api: &Api<'_>, requests: Vec<(&str, reqwest::RequestBuilder)>) -> Vec<Attempt> {
    futures_util::future::join_all(
        requests
            .into_iter()
            .map(|(what, request)| api.attempt(what.to_owned(), request)),
    )
    .await
}

/// Asserts every attempt got a 200 or a JSON 503 within `bound`; counts the 503s.
#[track_caller]
fn only_200_or_json_503_within(attempts: &[Attempt], bound: Duration) -> usize {
    let mut unavailable = 0;
    for attempt in attempts {
        let reply = attempt.reply();
        assert!(
            attempt.took <= bound,
            "{} took {:?} (bound {bound:?})",
            reply.what,
            attempt.took
        );
        match reply.status {
            200 => {}
            503 => {
                reply.expect_error_shape(&[503]);
                unavailable += 1;
            }
            other => panic!("{}: {other} {}", reply.what, reply.body),
        }
    }
    unavailable
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_one_under_a_burst_of_refreshes_logins_and_me_answers_200_or_json_503_within_a_bound_and_recovers()
 {
    let db = TestDb::new().await;
    let mut env = vec![
        ("DATABASE_POOL_SIZE", "1"),
        ("DATABASE_TIMEOUT_SECONDS", "1"),
        ("REFRESH_GRACE_SECONDS", "60"),
    ];
    env.extend(NO_RATE_LIMITS);
    let server = ServerProcess::start(&db.url(), &env).await;
    let api = Api::new(&server);
    api.register(EMAIL, PASSWORD).await;
    let mut sessions = Vec::new();
    for _ in 0..8 {
        sessions.push(api.login_session(EMAIL, PASSWORD).await);
    }
    // Queueing for the one connection takes at most DATABASE_TIMEOUT_SECONDS per wait;
    // a login waits twice, around its hash. Generous for a loaded 2-core machine.
    let bound = Duration::from_secs(8);
    let mut unavailable = 0;
    let mut total = 0;
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        let mut requests = Vec::new();
        for session in &sessions {
            for _ in 0..3 {
                requests.push((
                    "POST /auth/refresh",
                    api.request(Method::POST, "/auth/refresh")
                        .json(&json!({"refresh_token": session.refresh})),
                ));
                requests.push((
                    "GET /me",
                    api.request(Method::GET, "/me").bearer_auth(&session.access),
                ));
            }
            requests.push((
                "POST /auth/login",
                api.request(Method::POST, "/auth/login")
                    .json(&json!({"email": EMAIL, "password": PASSWORD})),
            ));
        }
        total += requests.len();
        let attempts = burst(&api, requests).await;
        unavailable += only_200_or_json_503_within(&attempts, bound);
        slowest = slowest.max(attempts.iter().map(|a| a.took).max().unwrap_or_default());
        // Each client keeps the newest successor it was handed (all 200s of one token agree).
        for (session, answers) in sessions.iter_mut().zip(attempts.chunks(7)) {
            if let Some(ok) = answers
                .iter()
                .step_by(2)
                .take(3)
                .find(|a| a.status() == Some(200))
            {
                rotate(session, ok);
            }
        }
    }
    eprintln!(
        "pool of one: {total} requests in bursts, {unavailable} answered 503, slowest {slowest:?}"
    );

    // Recovered: every session refreshes and answers /me.
    for session in &sessions {
        let pair = api.refresh(&session.refresh).await.expect(200);
        api.me(&token(&pair, "access_token")).await.expect(200);
    }
    api.login(EMAIL, PASSWORD).await;
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// Holds the `sessions` row of `session` locked in an open transaction until the
/// returned client is dropped or rolls back.
async fn lock_session_row(db: &TestDb, session: &str) -> Client {
    let (client, connection) = db.config().connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("BEGIN")
        .await
        .expect("opening the locking transaction");
    client
        .execute(
            "SELECT 1 FROM sessions WHERE id = $1::text::uuid FOR UPDATE",
            &[&session],
        )
        .await
        .expect("locking the session row");
    client
}

/// Waits (at most 20 s) until a backend of `db` waits for a lock: the refresh has taken
/// the pool's one connection and is stuck behind the row lock.
async fn blocked_on_a_lock(db: &TestDb) {
    let observer = db.connect().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "no request blocked on the lock");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A pool-of-one server whose one connection was held by a refresh blocked on a row lock.
struct HeldPool {
    _db: TestDb,
    server: ServerProcess,
    /// The refresh that waited for the lock.
    blocked: Attempt,
    /// Refreshes and `/me` of other sessions sent while it waited.
    others: Vec<Attempt>,
    /// Every session, the blocked one first, with its tokens from before.
    sessions: Vec<Session>,
}

/// Starts a pool-of-one server, locks one session's row from another client and sends
/// a refresh of that session (which blocks in the database, holding the one connection)
/// and then a burst of other requests; releases the lock after `hold`.
async fn pool_of_one_held_by_a_row_lock(extra_env: &[(&str, &str)], hold: Duration) -> HeldPool {
    let db = TestDb::new().await;
    let mut env = vec![
        ("DATABASE_POOL_SIZE", "1"),
        ("DATABASE_TIMEOUT_SECONDS", "1"),
        ("REFRESH_GRACE_SECONDS", "60"),
    ];
    env.extend(NO_RATE_LIMITS);
    env.extend_from_slice(extra_env);
    let server = ServerProcess::start(&db.url(), &env).await;
    let api = Api::new(&server);
    api.register(EMAIL, PASSWORD).await;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(api.login_session(EMAIL, PASSWORD).await);
    }
    let locker = lock_session_row(&db, &sessions[0].id).await;
    let blocked = api.attempt_refresh(&sessions[0].refresh);
    let others = async {
        // The blocked refresh must hold the one connection first.
        blocked_on_a_lock(&db).await;
        let mut requests = Vec::new();
        for session in &sessions[1..] {
            requests.push((
                "POST /auth/refresh",
                api.request(Method::POST, "/auth/refresh")
                    .json(&json!({"refresh_token": session.refresh})),
            ));
            requests.push((
                "GET /me",
                api.request(Method::GET, "/me").bearer_auth(&session.access),
            ));
        }
        let attempts = burst(&api, requests).await;
        tokio::time::sleep(hold.saturating_sub(Duration::from_millis(300))).await;
        locker
            .batch_execute("ROLLBACK")
            .await
            .expect("releasing the lock");
        attempts
    };
    let (blocked, others) = tokio::join!(blocked, others);
    drop(api);
    HeldPool {
        _db: db,
        server,
        blocked,
        others,
        sessions,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_of_one_held_by_a_refresh_blocked_on_a_row_lock_fails_other_requests_fast_with_json_503_and_recovers()
 {
    let hold = Duration::from_secs(4);
    let HeldPool {
        _db,
        server,
        blocked,
        others,
        sessions,
    } = pool_of_one_held_by_a_row_lock(&[("REQUEST_TIMEOUT_SECONDS", "2")], hold).await;
    let api = Api::new(&server);

    // The others wait DATABASE_TIMEOUT_SECONDS (1 s) for the connection, then give up.
    let unavailable = only_200_or_json_503_within(&others, Duration::from_secs(4));
    // The blocked refresh is cut off by REQUEST_TIMEOUT_SECONDS (2 s) at the latest.
    assert!(
        blocked.took < Duration::from_secs(5),
        "took {:?}",
        blocked.took
    );
    assert_json_503(&blocked);
    eprintln!(
        "row lock on a pool of one: {unavailable}/{} other requests answered 503, slowest {:?}; \
         the blocked refresh answered {} after {:?}",
        others.len(),
        others.iter().map(|a| a.took).max().unwrap_or_default(),
        blocked.reply().status,
        blocked.took
    );

    // Once the lock is gone, everything works again, the blocked session included.
    let deadline = Instant::now() + Duration::from_secs(10);
    for session in &sessions {
        loop {
            let attempt = api.attempt_refresh(&session.refresh).await;
            if attempt.status() == Some(200) {
                api.me(&token(&attempt.reply().json(), "access_token"))
                    .await
                    .expect(200);
                break;
            }
            assert_json_503(&attempt);
            assert!(
                Instant::now() < deadline,
                "no recovery after the lock was released"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_blocked_on_a_row_lock_answers_503_within_database_timeout_seconds() {
    // README: DATABASE_TIMEOUT_SECONDS is the "longest wait for a connection or a query".
    let hold = Duration::from_secs(6);
    let HeldPool { blocked, .. } = pool_of_one_held_by_a_row_lock(&[], hold).await;
    assert!(
        blocked.took < Duration::from_secs(4),
        "a refresh blocked in PostgreSQL took {:?} with DATABASE_TIMEOUT_SECONDS=1 \
         (answer {:?})",
        blocked.took,
        blocked.status()
    );
    assert_json_503(&blocked);
}

/// How a client hangs up on a refresh.
#[derive(Debug, Clone, Copy)]
enum HangUp {
    /// The whole request is sent; the connection is closed after this long.
    AfterRequest(Duration),
    /// Only part of the body is sent.
    MidBody,
}

/// Sends `POST /auth/refresh` for `refresh_token` over a raw connection and closes it
/// without reading the answer.
async fn refresh_and_hang_up(addr: SocketAddr, refresh_token: &str, how: HangUp) {
    let body = json!({ "refresh_token": refresh_token }).to_string();
    let head = format!(
        "POST /auth/refresh HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    match how {
        HangUp::AfterRequest(delay) => {
            stream
                .write_all(format!("{head}{body}").as_bytes())
                .await
                .unwrap();
            tokio::time::sleep(delay).await;
        }
        HangUp::MidBody => {
            stream
                .write_all(format!("{head}{}", &body[..body.len() / 2]).as_bytes())
                .await
                .unwrap();
        }
    }
    drop(stream);
}

/// The server's `refresh` counter for `outcome`, from `/metrics`.
async fn refreshes_counted(server: &ServerProcess, outcome: &str) -> u64 {
    let text = server.get("/metrics").await.text().await.unwrap();
    let prefix = format!("session_refreshes_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .map_or(0, |count| count.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_whose_client_hangs_up_before_the_answer_can_be_retried_in_the_grace_window_and_the_new_token_works()
 {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &NO_RATE_LIMITS).await;
    let api = Api::new(&server);
    let addr: SocketAddr = server
        .url("")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let mut session = Session::from_pair(&api.signed_up(EMAIL, PASSWORD).await);
    let hang_ups = [
        HangUp::AfterRequest(Duration::ZERO),
        HangUp::AfterRequest(Duration::from_millis(1)),
        HangUp::AfterRequest(Duration::from_millis(2)),
        HangUp::AfterRequest(Duration::from_millis(4)),
        HangUp::AfterRequest(Duration::from_millis(8)),
        HangUp::AfterRequest(Duration::from_millis(15)),
        HangUp::AfterRequest(Duration::from_millis(30)),
        HangUp::AfterRequest(Duration::from_millis(100)),
        HangUp::MidBody,
    ];
    // The same client, given up on by a tiny timeout instead of a closed socket.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(3))
        .build()
        .unwrap();

    for round in 0..3 {
        for how in hang_ups {
            refresh_and_hang_up(addr, &session.refresh, how).await;
            let retried = api.refresh(&session.refresh).await.expect(200);
            let again = api.refresh(&session.refresh).await.expect(200);
            assert_eq!(
                token(&retried, "refresh_token"),
                token(&again, "refresh_token"),
                "round {round}, {how:?}: retries disagree"
            );
            assert_eq!(retried["session_id"], json!(session.id));
            session.access = token(&retried, "access_token");
            session.refresh = token(&retried, "refresh_token");
            api.me(&session.access).await.expect(200);
        }
        for _ in 0..3 {
            let _ = impatient
                .post(server.url("/auth/refresh"))
                .json(&json!({"refresh_token": session.refresh}))
                .send()
                .await;
            let retried = api.refresh(&session.refresh).await.expect(200);
            session.access = token(&retried, "access_token");
            session.refresh = token(&retried, "refresh_token");
            api.me(&session.access).await.expect(200);
        }
    }
    // The chain is intact: the last successor rotates, and nothing was taken for theft.
    api.refresh(&session.refresh).await.expect(200);
    assert_eq!(refreshes_counted(&server, "reused").await, 0);
    eprintln!(
        "hang-ups: {} refreshes rotated by the server, {} retries answered from the grace \
         window",
        refreshes_counted(&server, "rotated").await,
        refreshes_counted(&server, "retried").await
    );
    assert!(!server.log().contains("panicked"), "{}", server.log());
}
