//! Faults of a fleet on the NATS revocation feed (`REVOCATION_FEED=nats`, issue 23), on
//! real server and relay processes, a real `nats-server` of the test's own
//! ([`NatsServer`]) and real PostgreSQL: the broker restarted while sessions are
//! revoked, the active relay killed while sessions are revoked, and PostgreSQL
//! restarted. Every wait has a deadline.
//!
//! Not here: a subscriber cut off longer than the stream's retention. The relay creates
//! the stream with a retention of 24 h and no server setting changes it
//! (`NatsRelay::with_max_age` is only reachable from the library), so a process cannot
//! outlive it within a test; the layer's test `middleware/tests/nats.rs` covers it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use portcullis_e2e::api::{Api, Session};
use portcullis_e2e::{ServerProcess, free_port, server_command};

use super::faults::Outage;
use portcullis_testdb::{NatsServer, StopMode, TestDb};
use reqwest::Method;

const PASSWORD: &str = "correct horse battery staple";
/// The tests count outcomes themselves; rate limits would only add 429s.
const NO_RATE_LIMITS: [(&str, &str); 3] = [
    ("RATE_LIMIT_LOGIN_PER_ACCOUNT", "0"),
    ("RATE_LIMIT_LOGIN_PER_IP", "0"),
    ("RATE_LIMIT_REFRESH_PER_IP", "0"),
];
/// The liveness cache's bound on a live answer (`PostgresLiveness`'s default): a cached
/// "live" older than this is asked again, so a refusal later than this proves nothing
/// about the feed.
const LIVE_TTL: Duration = Duration::from_secs(15);
/// How long a revocation may take, with everything up, from the answer of the logout on
/// one server to the other server's refusal: log, relay (which polls), NATS, feed.
const PROPAGATION: Duration = Duration::from_secs(2);
/// The longest a revocation may take to reach another instance once the broker is back.
const AFTER_BROKER_RESTART: Duration = Duration::from_secs(5);
/// How long the broker stays down.
const BROKER_DOWN: Duration = Duration::from_secs(2);
/// The longest a revocation may take to reach another instance after the active relay
/// was killed (the standby polls the lock every 500 ms).
const AFTER_RELAY_KILL: Duration = Duration::from_secs(2);
/// What the cache logs when it forgets everything because its feed may have missed
/// revocations.
const CACHE_CLEARED: &str = "cache cleared";

async fn nats_server() -> NatsServer {
    NatsServer::start()
        .await
        .unwrap_or_else(|e| panic!("{e} (the fleet tests need a nats-server of their own)"))
}

/// A server's environment on the NATS feed, with or without its in-process relay, with
/// the signing keys of `keys` (replicas share their keys, as in production).
fn fleet_env<'a>(
    nats_url: &'a str,
    relay: bool,
    keys: &'a tempfile::TempDir,
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("DEV_KEYS_DIR", keys.path().to_str().unwrap()),
        ("REVOCATION_FEED", "nats"),
        ("NATS_URL", nats_url),
        ("REVOCATION_RELAY", if relay { "on" } else { "off" }),
    ];
    env.extend(NO_RATE_LIMITS);
    env
}

/// Starts `portcullis-server relay` (it listens on nothing; the address is unused).
fn start_relay(database_url: &str, nats_url: &str) -> ServerProcess {
    let command = server_command(
        &["relay"],
        &[
            ("DATABASE_URL", database_url),
            ("REVOCATION_FEED", "nats"),
            ("NATS_URL", nats_url),
        ],
    );
    ServerProcess::spawn(command, ([127, 0, 0, 1], free_port()).into())
}

/// A gauge of the server's `/metrics` (0 when absent).
async fn gauge(server: &ServerProcess, name: &str) -> f64 {
    let text = server.get("/metrics").await.text().await.unwrap();
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// Waits (at most `within`) until the server says its revocation feed is `connected` or
/// not; how long that took.
async fn feed_connected(server: &ServerProcess, connected: bool, within: Duration) -> Duration {
    let started = Instant::now();
    let want = if connected { 1.0 } else { 0.0 };
    loop {
        #[allow(clippy::float_cmp, reason = "the gauge is exactly 0 or 1")]
        if gauge(server, "session_liveness_listener_connected").await == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "the revocation feed not {} within {within:?}:\n{}",
            if connected {
                "connected"
            } else {
                "disconnected"
            },
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most `within`) until the process's log contains `text`.
async fn logged(process: &ServerProcess, text: &str, within: Duration) -> Duration {
    let started = Instant::now();
    while !process.log().contains(text) {
        assert!(
            started.elapsed() < within,
            "{text:?} not logged within {within:?}:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

/// Polls `GET /me` on `api`'s server with every token until each is refused (401);
/// fails when one is accepted or unanswered at `deadline`, or answered anything but 200
/// or 401. Returns when each was refused.
async fn refused_by(api: &Api<'_>, tokens: &[&str], deadline: Instant) -> Vec<Instant> {
    let mut refused: Vec<Option<Instant>> = vec![None; tokens.len()];
    loop {
        for (token, refused) in tokens.iter().zip(&mut refused) {
            if refused.is_some() {
                continue;
            }
            let attempt = api.attempt_me(token).await;
            match attempt.status() {
                Some(401) => *refused = Some(Instant::now()),
                Some(200) => {}
                _ => panic!("GET /me of a revoked session: {}", attempt.reply().body),
            }
        }
        if refused.iter().all(Option::is_some) {
            return refused.into_iter().flatten().collect();
        }
        let pending = refused.iter().filter(|r| r.is_none()).count();
        assert!(
            Instant::now() < deadline,
            "{pending} of {} revoked sessions still accepted at the deadline",
            tokens.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Logs `session` out on `api`'s server.
async fn logout(api: &Api<'_>, session: &Session) {
    api.bearer(Method::POST, "/auth/logout", &session.access)
        .await
        .expect(204);
}

fn assert_clean_log(server: &ServerProcess, what: &str) {
    let log = server.log();
    assert!(!log.contains("panicked"), "{what} panicked:\n{log}");
    assert!(
        !log.contains(CACHE_CLEARED),
        "{what} forgot its whole cache:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario: sign-ins, the broker down while sessions end, its return"
)]
async fn a_broker_restarted_while_sessions_are_revoked_delivers_every_revocation_and_instances_keep_their_caches()
 {
    let mut nats = nats_server().await;
    let nats_url = nats.url();
    let db = TestDb::new().await;
    let keys = tempfile::tempdir().unwrap();
    let env = fleet_env(&nats_url, true, &keys);
    let a = ServerProcess::start(&db.url(), &env).await;
    let b = ServerProcess::start(&db.url(), &env).await;
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    feed_connected(&b, true, Duration::from_secs(10)).await;

    // Two users with sessions that end one by one, one whose every session ends at once.
    let (mut live, mut doomed) = (Vec::new(), Vec::new());
    for user in ["ada", "grace"] {
        let email = format!("{user}@example.com");
        api_a.register(&email, PASSWORD).await;
        for i in 0..4 {
            let session = api_a.login_session(&email, PASSWORD).await;
            if i % 2 == 0 {
                doomed.push(session);
            } else {
                live.push(session);
            }
        }
    }
    api_a.register("edsger@example.com", PASSWORD).await;
    let mut everywhere = Vec::new();
    for _ in 0..2 {
        everywhere.push(api_a.login_session("edsger@example.com", PASSWORD).await);
    }

    // The path works before the fault: a logout on A reaches B.
    let warm = api_a.login_session("ada@example.com", PASSWORD).await;
    api_b.me(&warm.access).await.expect(200);
    logout(&api_a, &warm).await;
    refused_by(&api_b, &[&warm.access], Instant::now() + PROPAGATION).await;

    // Every session cached as live on B.
    for session in live.iter().chain(&doomed).chain(&everywhere) {
        api_b.me(&session.access).await.expect(200);
    }
    let cached_at = Instant::now();

    nats.stop();
    let stopped = Instant::now();
    let noticed = feed_connected(&b, false, Duration::from_secs(5)).await;
    for session in &doomed {
        logout(&api_a, session).await;
    }
    api_a
        .bearer(Method::POST, "/auth/logout-all", &everywhere[0].access)
        .await
        .expect(204);
    // The live sessions still work on B while the broker stays down a while (long
    // enough for the feed's reconnection backoff to grow).
    while stopped.elapsed() < BROKER_DOWN {
        for session in &live {
            api_b.me(&session.access).await.expect(200);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nats.restart()
        .await
        .unwrap_or_else(|e| panic!("restarting nats-server: {e}"));
    let restarted = Instant::now();
    // One more ends as the broker comes back, before anyone has reconnected.
    let last = live.pop().unwrap();
    logout(&api_a, &last).await;
    doomed.push(last);

    let revoked: Vec<&str> = doomed
        .iter()
        .chain(&everywhere)
        .map(|s| s.access.as_str())
        .collect();
    let refused = refused_by(&api_b, &revoked, restarted + AFTER_BROKER_RESTART).await;
    let slowest = refused
        .iter()
        .map(|at| at.duration_since(restarted))
        .max()
        .unwrap();
    let reconnected = feed_connected(&b, true, Duration::from_secs(1)).await;

    // The live sessions are still accepted, from B's cache: no lookup missed it.
    // (A revoked session's entry may be dropped and asked for again; only the live ones
    // are counted.)
    let since_cached = cached_at.elapsed();
    let misses_before = gauge(&b, "session_liveness_cache_misses").await;
    for session in &live {
        api_b.me(&session.access).await.expect(200);
    }
    let misses_after = gauge(&b, "session_liveness_cache_misses").await;
    if since_cached + Duration::from_secs(1) < LIVE_TTL {
        #[allow(clippy::float_cmp, reason = "counts, exact in a float")]
        {
            assert_eq!(
                misses_after,
                misses_before,
                "B asked the database again for sessions it had cached ({:?} after caching \
                 them): it emptied its cache\n{}",
                since_cached,
                b.log()
            );
        }
    } else {
        eprintln!("{since_cached:?} since caching, near the live TTL: cache misses not compared");
    }

    // Once back, revocations flow at the usual pace.
    let after = api_a.login_session("grace@example.com", PASSWORD).await;
    api_b.me(&after.access).await.expect(200);
    logout(&api_a, &after).await;
    refused_by(&api_b, &[&after.access], Instant::now() + PROPAGATION).await;

    // No revoked session is accepted anywhere, and none became accepted again.
    for token in &revoked {
        api_b.me(token).await.expect(401);
        api_a.me(token).await.expect(401);
    }
    assert_clean_log(&a, "A");
    assert_clean_log(&b, "B");
    eprintln!(
        "broker restart: B saw the broker gone {noticed:?} after the kill; down for {:?}; \
         {} revoked sessions all refused on B within {slowest:?} of the restart; {} live \
         sessions kept in B's cache ({misses_before} misses before, {misses_after} after); \
         B's feed connected again by {reconnected:?} after the last refusal",
        restarted - stopped,
        revoked.len(),
        live.len(),
    );
}

/// A revoked session's token, when its logout was answered, and when B refused it.
struct Revoked {
    access: String,
    at: Instant,
    refused: Option<Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::too_many_lines,
    reason = "one scenario: relays, revocations in a loop, the kill, the checks"
)]
async fn the_active_relay_killed_while_sessions_are_revoked_a_standby_takes_over_and_none_is_lost()
{
    let nats = nats_server().await;
    let nats_url = nats.url();
    let db = TestDb::new().await;
    let keys = tempfile::tempdir().unwrap();
    let env = fleet_env(&nats_url, false, &keys);
    // The relay does not migrate, and a server without a relay does not start before a
    // relay has created the stream: migrate, then the relays, then the servers.
    let mut migrate = ServerProcess::spawn(
        server_command(&["migrate"], &[("DATABASE_URL", &db.url())]),
        ([127, 0, 0, 1], free_port()).into(),
    );
    let status = migrate.wait_for_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "migrate: {status}\n{}", migrate.log());
    let mut active = Some(start_relay(&db.url(), &nats_url));
    logged(
        active.as_ref().unwrap(),
        "revocation relay active",
        Duration::from_secs(30),
    )
    .await;
    let standby = start_relay(&db.url(), &nats_url);
    logged(
        &standby,
        "another revocation relay is active",
        Duration::from_secs(30),
    )
    .await;
    let a = ServerProcess::start(&db.url(), &env).await;
    let b = ServerProcess::start(&db.url(), &env).await;
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    feed_connected(&b, true, Duration::from_secs(10)).await;

    let mut sessions = Vec::new();
    for user in ["ada", "grace"] {
        let email = format!("{user}@example.com");
        api_a.register(&email, PASSWORD).await;
        for _ in 0..15 {
            sessions.push(api_a.login_session(&email, PASSWORD).await);
        }
    }
    let warm = api_a.login_session("ada@example.com", PASSWORD).await;
    api_b.me(&warm.access).await.expect(200);
    logout(&api_a, &warm).await;
    refused_by(&api_b, &[&warm.access], Instant::now() + PROPAGATION).await;

    let revoked: Mutex<Vec<Revoked>> = Mutex::new(Vec::new());
    let killed_at: Mutex<Option<Instant>> = Mutex::new(None);
    let done = std::sync::atomic::AtomicBool::new(false);
    // Revocations on A in a loop; the active relay killed (SIGKILL) after a third of them.
    let revoke = async {
        for (i, session) in sessions.iter().enumerate() {
            // Cached as live on B just before: only the feed can make B refuse it in time.
            api_b.me(&session.access).await.expect(200);
            logout(&api_a, session).await;
            revoked.lock().unwrap().push(Revoked {
                access: session.access.clone(),
                at: Instant::now(),
                refused: None,
            });
            if i == sessions.len() / 3 {
                // Dropping the process kills it with SIGKILL.
                drop(active.take());
                *killed_at.lock().unwrap() = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        done.store(true, std::sync::atomic::Ordering::Release);
    };
    // B polled for every revoked session until it refuses it; each must be refused within
    // AFTER_RELAY_KILL of its logout or of the kill, whichever is later.
    let watch = async {
        loop {
            let finished = done.load(std::sync::atomic::Ordering::Acquire);
            let pending: Vec<(usize, String, Instant)> = revoked
                .lock()
                .unwrap()
                .iter()
                .enumerate()
                .filter(|(_, r)| r.refused.is_none())
                .map(|(i, r)| (i, r.access.clone(), r.at))
                .collect();
            if finished && pending.is_empty() {
                return;
            }
            for (i, access, at) in pending {
                let attempt = api_b.attempt_me(&access).await;
                let now = Instant::now();
                let killed = *killed_at.lock().unwrap();
                let deadline = killed.map_or(at, |k| k.max(at)) + AFTER_RELAY_KILL;
                match attempt.status() {
                    Some(401) => revoked.lock().unwrap()[i].refused = Some(now),
                    Some(200) => assert!(
                        now <= deadline,
                        "revoked session {i} still accepted on B {:?} after its logout \
                         (relay killed {:?})\nstandby:\n{}",
                        now - at,
                        killed.map(|k| now - k),
                        standby.log()
                    ),
                    _ => panic!("GET /me of a revoked session: {}", attempt.reply().body),
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    // When the standby says it took over, from the kill.
    let takeover = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let killed = loop {
            if let Some(killed) = *killed_at.lock().unwrap() {
                break killed;
            }
            assert!(Instant::now() < deadline, "the relay was never killed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        logged(&standby, "revocation relay active", Duration::from_secs(5)).await;
        killed.elapsed()
    };
    let ((), (), took_over) = tokio::join!(revoke, watch, takeover);
    let killed = killed_at.into_inner().unwrap().unwrap();
    let revoked = revoked.into_inner().unwrap();
    assert_eq!(revoked.len(), sessions.len());

    // From its logout or the kill, whichever is later.
    let slowest = revoked
        .iter()
        .map(|r| {
            let refused = r.refused.expect("every revoked session is refused");
            refused.saturating_duration_since(r.at.max(killed))
        })
        .max()
        .unwrap_or_default();
    let after_kill = revoked
        .iter()
        .filter(|r| r.at >= killed)
        .map(|r| r.refused.unwrap() - r.at)
        .max()
        .unwrap_or_default();
    // None lost: every one refused on B and on A, by the feed and the database alike.
    for r in &revoked {
        api_b.me(&r.access).await.expect(401);
        api_a.me(&r.access).await.expect(401);
    }
    // A new revocation still flows through the standby.
    let after = api_a.login_session("grace@example.com", PASSWORD).await;
    api_b.me(&after.access).await.expect(200);
    logout(&api_a, &after).await;
    refused_by(&api_b, &[&after.access], Instant::now() + PROPAGATION).await;
    // Published twice or out of order would have made B forget its cache.
    assert_clean_log(&a, "A");
    assert_clean_log(&b, "B");
    assert!(
        !standby.log().contains("panicked"),
        "the standby relay panicked:\n{}",
        standby.log()
    );
    eprintln!(
        "relay killed after {} of {} logouts: the standby logged itself active within \
         {took_over:?}; slowest refusal on B of a session revoked after the kill {after_kill:?}, of any \
         {:?} (from its logout or the kill)",
        sessions.len() / 3 + 1,
        sessions.len(),
        slowest,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_with_the_nats_feed_fails_closed_with_json_503_and_recovers() {
    let nats = nats_server().await;
    let nats_url = nats.url();
    let mut db = Outage::new().await;
    let keys = tempfile::tempdir().unwrap();
    let mut env = fleet_env(&nats_url, true, &keys);
    env.push(("DATABASE_TIMEOUT_SECONDS", "2"));
    let server = ServerProcess::start(&db.url(), &env).await;
    let api = Api::new(&server);
    let email = "ada@example.com";
    api.register(email, PASSWORD).await;
    let cached = api.login_session(email, PASSWORD).await;
    let uncached = api.login_session(email, PASSWORD).await;
    let victim = api.login_session(email, PASSWORD).await;
    api.me(&cached.access).await.expect(200);
    feed_connected(&server, true, Duration::from_secs(10)).await;

    db.down(StopMode::Fast).await;
    let stopped = Instant::now();
    // Nothing can be verified: every answer is a JSON 503, never a 200 or a 500.
    // Down for at least 1.5 s (and three rounds), for the relay to notice it too.
    let mut answered = 0;
    let mut rounds = 0;
    while rounds < 3 || stopped.elapsed() < Duration::from_millis(1_500) {
        rounds += 1;
        for token in [&uncached.access, &cached.access] {
            let attempt = api.attempt_me(token).await;
            assert_eq!(
                attempt.status(),
                Some(503),
                "GET /me while PostgreSQL is down: {}",
                attempt.reply().body
            );
            attempt.reply().expect_error_shape(&[503]);
            answered += 1;
        }
        let attempt = api.attempt_refresh(&uncached.refresh).await;
        assert_eq!(
            attempt.status(),
            Some(503),
            "refresh while PostgreSQL is down: {}",
            attempt.reply().body
        );
        attempt.reply().expect_error_shape(&[503]);
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        server.get("/health").await.status(),
        503,
        "health while down"
    );
    let down_for = stopped.elapsed();

    db.up().await;
    let started = Instant::now();
    // Recovery: the session not used before answers again, and refreshes.
    let deadline = started + Duration::from_secs(10);
    loop {
        let attempt = api.attempt_me(&uncached.access).await;
        match attempt.status() {
            Some(200) => break,
            Some(503) => {
                attempt.reply().expect_error_shape(&[503]);
            }
            _ => panic!("/me while recovering: {}", attempt.reply().body),
        }
        assert!(
            Instant::now() < deadline,
            "no recovery within 10 s of PostgreSQL's return\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered = started.elapsed();
    api.refresh(&uncached.refresh).await.expect(200);
    assert_eq!(server.get("/health").await.status(), 200, "health after");

    // The feed works after the restart: the relay is active again and a session revoked
    // by plain SQL, cached as live on the server, is refused through NATS.
    api.me(&victim.access).await.expect(200);
    db.connect()
        .await
        .execute(
            "UPDATE sessions SET revoked_at = now(), revoked_reason = 'admin' \
             WHERE id = $1::text::uuid",
            &[&victim.id],
        )
        .await
        .expect("revoking a session after the restart");
    let revoked = Instant::now();
    let refused = refused_by(
        &api,
        &[&victim.access],
        revoked + PROPAGATION + Duration::from_secs(1),
    )
    .await;
    assert!(!server.log().contains("panicked"), "{}", server.log());
    eprintln!(
        "PostgreSQL down {down_for:?}: {answered} requests all answered a JSON 503; /me \
         answered 200 {recovered:?} after the start; a session revoked by SQL then refused \
         {:?} later",
        refused[0] - revoked
    );
}
