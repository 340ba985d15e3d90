//! Races on the real server process, each run many times with its invariant checked
//! after every run: concurrent refreshes of one token and of sibling tokens, a revoke
//! racing a refresh of the same session, a password change racing a login, and
//! logout-all racing refreshes from several devices.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use portcullis_e2e::ServerProcess;
use portcullis_e2e::api::{Api, Session, token};
use portcullis_e2e::attempt::Attempt;
use portcullis_testdb::TestDb;
use reqwest::Method;
use serde_json::{Value, json};
use tokio_postgres::Client;

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "a brand new passphrase";
/// Races send far more than a person would; rate limits would only add 429s.
const NO_RATE_LIMITS: [(&str, &str); 3] = [
    ("RATE_LIMIT_LOGIN_PER_ACCOUNT", "0"),
    ("RATE_LIMIT_LOGIN_PER_IP", "0"),
    ("RATE_LIMIT_REFRESH_PER_IP", "0"),
];
/// How long a revocation may take to reach the server's own liveness cache: it travels
/// as a PostgreSQL notification, after the commit (the cross-process test in
/// `server_ops` allows the same 100 ms).
const NOTIFICATION_DELAY: Duration = Duration::from_millis(100);

async fn start() -> (TestDb, ServerProcess) {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &NO_RATE_LIMITS).await;
    (db, server)
}

/// The refresh tokens handed out by the 200s among `attempts`, which must all be JSON
/// token pairs of `session_id`; panics on any 5xx or transport error.
#[track_caller]
fn successors(attempts: &[Attempt], session_id: &str) -> Vec<Value> {
    let mut pairs = Vec::new();
    for attempt in attempts {
        let reply = attempt.reply();
        assert!(reply.status < 500, "{}: {}", reply.status, reply.body);
        match reply.status {
            200 => {
                let pair = reply.json();
                assert_eq!(pair["session_id"], session_id, "{pair}");
                pairs.push(pair);
            }
            401 => {
                reply.expect_error(&[401], "invalid_refresh_token");
            }
            other => panic!("refresh answered {other}: {}", reply.body),
        }
    }
    pairs
}

/// Asserts that `pairs` all carry the same refresh token, and returns that session.
#[track_caller]
fn agreed(pairs: &[Value], id: &str, what: &str) -> Session {
    let first = pairs
        .first()
        .unwrap_or_else(|| panic!("{what}: no refresh succeeded"));
    let next = token(first, "refresh_token");
    for pair in pairs {
        assert_eq!(
            token(pair, "refresh_token"),
            next,
            "{what}: the session forked"
        );
    }
    Session {
        id: id.to_owned(),
        access: token(first, "access_token"),
        refresh: next,
    }
}

/// Asserts that the refresh token is refused (401).
async fn refresh_refused(api: &Api<'_>, refresh_token: &str, what: &str) {
    let reply = api.refresh(refresh_token).await;
    assert_eq!(
        reply.status, 401,
        "{what}: a refresh token still works: {}",
        reply.body
    );
}

/// Asserts that `GET /me` refuses the access token, allowing the revocation's
/// notification [`NOTIFICATION_DELAY`] to reach the server's cache.
async fn access_refused(api: &Api<'_>, access_token: &str, what: &str) {
    let started = Instant::now();
    loop {
        let reply = api.me(access_token).await;
        match reply.status {
            401 => return,
            200 if started.elapsed() < NOTIFICATION_DELAY => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            status => panic!(
                "{what}: an access token is accepted {:?} after the revocation: {status} {}",
                started.elapsed(),
                reply.body
            ),
        }
    }
}

async fn live_sessions(sql: &Client, email: &str) -> HashSet<String> {
    sql.query(
        "SELECT s.id::text FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE u.email = $1 AND s.revoked_at IS NULL \
           AND least(s.idle_expires_at, s.absolute_expires_at) > now()",
        &[&email],
    )
    .await
    .expect("listing live sessions")
    .iter()
    .map(|row| row.get(0))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_refreshes_of_one_token_twenty_times_never_5xx_agree_on_one_successor_that_works()
 {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    let mut session = Session::from_pair(&api.signed_up("one@example.com", PASSWORD).await);
    let mut refused = 0;
    for round in 0..20 {
        let attempts =
            futures_util::future::join_all((0..16).map(|_| api.attempt_refresh(&session.refresh)))
                .await;
        let pairs = successors(&attempts, &session.id);
        refused += attempts.len() - pairs.len();
        session = agreed(&pairs, &session.id, &format!("round {round}"));
        api.me(&session.access).await.expect(200);
    }
    // The last successor rotates like any other token.
    api.refresh(&session.refresh).await.expect(200);
    assert_eq!(
        refused, 0,
        "concurrent retries inside the grace window must all succeed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_of_sibling_sessions_twenty_times_never_5xx_and_each_session_keeps_its_own_working_successor()
 {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    api.register("siblings@example.com", PASSWORD).await;
    let mut sessions = Vec::new();
    for _ in 0..8 {
        sessions.push(api.login_session("siblings@example.com", PASSWORD).await);
    }
    for round in 0..20 {
        // Two clients per session (tabs), eight sessions of one user: sixteen at once.
        let attempts = futures_util::future::join_all(
            sessions
                .iter()
                .flat_map(|session| [&session.refresh, &session.refresh])
                .map(|refresh| api.attempt_refresh(refresh)),
        )
        .await;
        let mut next = Vec::new();
        for (session, pair_of_attempts) in sessions.iter().zip(attempts.chunks(2)) {
            let pairs = successors(pair_of_attempts, &session.id);
            assert_eq!(pairs.len(), 2, "round {round}: a retry was refused");
            next.push(agreed(
                &pairs,
                &session.id,
                &format!("round {round}, {}", session.id),
            ));
        }
        let distinct: HashSet<&str> = next.iter().map(|s| s.refresh.as_str()).collect();
        assert_eq!(
            distinct.len(),
            sessions.len(),
            "round {round}: sibling sessions share a refresh token"
        );
        sessions = next;
    }
    for session in &sessions {
        api.me(&session.access).await.expect(200);
        api.refresh(&session.refresh).await.expect(200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_or_delete_racing_refreshes_of_the_same_session_leaves_it_revoked_with_every_token_from_the_race_refused()
 {
    let (db, server) = start().await;
    let sql = db.connect().await;
    let api = Api::new(&server);
    let email = "revoke-race@example.com";
    api.register(email, PASSWORD).await;
    let controller = api.login_session(email, PASSWORD).await;
    let mut refresh_won = 0;
    for round in 0_u64..20 {
        let victim = api.login_session(email, PASSWORD).await;
        // Cached live, as a session in use would be.
        api.me(&victim.access).await.expect(200);
        let by_logout = round % 2 == 0;
        // The revocation starts first; the refreshes follow 0 to 9 ms later, so that
        // either side wins in some rounds.
        let revoke = async {
            let reply = if by_logout {
                api.bearer(Method::POST, "/auth/logout", &victim.access)
                    .await
            } else {
                api.delete_session(&controller, &victim.id).await
            };
            reply.expect(204);
        };
        let refreshes = futures_util::future::join_all((0..4).map(|turn| {
            let (api, refresh) = (&api, &victim.refresh);
            async move {
                tokio::time::sleep(Duration::from_millis(turn * 2 + round % 3)).await;
                api.attempt_refresh(refresh).await
            }
        }));
        let ((), attempts) = tokio::join!(revoke, refreshes);
        let what = format!(
            "round {round} ({})",
            if by_logout { "logout" } else { "DELETE" }
        );
        let pairs = successors(&attempts, &victim.id);
        if !pairs.is_empty() {
            refresh_won += 1;
            agreed(&pairs, &victim.id, &what);
        }

        let revoked: bool = sql
            .query_one(
                "SELECT revoked_at IS NOT NULL FROM sessions WHERE id = $1::text::uuid",
                &[&victim.id],
            )
            .await
            .unwrap()
            .get(0);
        assert!(revoked, "{what}: the session is not revoked");
        refresh_refused(&api, &victim.refresh, &what).await;
        access_refused(&api, &victim.access, &what).await;
        for pair in &pairs {
            refresh_refused(&api, &token(pair, "refresh_token"), &what).await;
            access_refused(&api, &token(pair, "access_token"), &what).await;
        }
    }
    eprintln!("the refresh got in before the revocation in {refresh_won} of 20 rounds");
    api.me(&controller.access).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_racing_a_login_with_the_old_password_leaves_only_the_changer_and_new_password_sessions()
 {
    // Invariant, checked after every round, once the change (204) and the racing logins
    // with the old password have all answered:
    //   1. each racing login either failed (401), or its session is revoked: its refresh
    //      token and its access token are refused;
    //   2. the old password no longer logs in and the new one does;
    //   3. the user's live sessions are exactly the changer's and those opened with the
    //      new password.
    let (db, server) = start().await;
    let sql = db.connect().await;
    let api = Api::new(&server);
    // A login's cost is mostly one Argon2 verification; the change verifies and then
    // hashes. Racing logins start across that span so that some read the old hash
    // before the change commits and insert their session after it.
    let probe = "probe@example.com";
    api.register(probe, PASSWORD).await;
    let started = Instant::now();
    api.login(probe, PASSWORD).await;
    let login_cost = started.elapsed();
    let mut violations = Vec::new();
    let mut outcomes = [0_usize; 2];
    for round in 0_u32..16 {
        let email = format!("pw{round}@example.com");
        api.register(&email, PASSWORD).await;
        let changer = api.login_session(&email, PASSWORD).await;
        let change = async {
            api.send(
                "POST /auth/password".to_owned(),
                api.request(Method::POST, "/auth/password")
                    .bearer_auth(&changer.access)
                    .json(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD})),
            )
            .await
            .expect(204);
        };
        let logins = futures_util::future::join_all((0..2_u32).map(|turn| {
            let offset = login_cost * (round * 2 + turn) / 12;
            let (api, email) = (&api, &email);
            async move {
                tokio::time::sleep(offset).await;
                api.attempt_login(email, PASSWORD).await
            }
        }));
        let ((), attempts) = tokio::join!(change, logins);

        let mut allowed = HashSet::from([changer.id.clone()]);
        for attempt in &attempts {
            let reply = attempt.reply();
            match reply.status {
                401 => outcomes[0] += 1,
                200 => {
                    outcomes[1] += 1;
                    let old = Session::from_pair(&reply.json());
                    let revoked: bool = sql
                        .query_one(
                            "SELECT revoked_at IS NOT NULL FROM sessions \
                             WHERE id = $1::text::uuid",
                            &[&old.id],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    if !revoked {
                        violations.push(format!(
                            "round {round}: a login with the old password opened session {} \
                             that outlived the password change",
                            old.id
                        ));
                    }
                }
                other => panic!("round {round}: login answered {other}: {}", reply.body),
            }
        }
        api.login_reply(&email, PASSWORD)
            .await
            .expect_error(&[401], "invalid_credentials");
        let fresh = api.login_session(&email, NEW_PASSWORD).await;
        allowed.insert(fresh.id.clone());
        let live = live_sessions(&sql, &email).await;
        if !live.is_subset(&allowed) {
            violations.push(format!(
                "round {round}: live sessions {live:?}, allowed only {allowed:?}"
            ));
        }
        api.me(&changer.access).await.expect(200);
    }
    eprintln!(
        "login cost {login_cost:?}; racing logins: {} failed, {} succeeded",
        outcomes[0], outcomes[1]
    );
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_all_racing_refreshes_from_several_devices_revokes_every_session_and_refuses_every_token_seen()
 {
    let (db, server) = start().await;
    let sql = db.connect().await;
    let api = Api::new(&server);
    let mut rotations = 0;
    for round in 0_u64..8 {
        let email = format!("devices{round}@example.com");
        api.register(&email, PASSWORD).await;
        let mut devices = Vec::new();
        for _ in 0..4 {
            devices.push(api.login_session(&email, PASSWORD).await);
        }
        let first_access = devices[0].access.clone();
        // Every device refreshes in a loop until it is refused; all tokens are kept.
        let refreshing = futures_util::future::join_all(devices.into_iter().map(|device| {
            let api = &api;
            async move {
                let mut seen = vec![(device.access.clone(), device.refresh.clone())];
                let mut current = device;
                for _ in 0..200 {
                    let attempt = api.attempt_refresh(&current.refresh).await;
                    let pairs = successors(std::slice::from_ref(&attempt), &current.id);
                    let Some(pair) = pairs.first() else { break };
                    current = Session::from_pair(pair);
                    seen.push((current.access.clone(), current.refresh.clone()));
                }
                seen
            }
        }));
        let logout_all = async {
            tokio::time::sleep(Duration::from_millis(10 + round * 7)).await;
            api.bearer(Method::POST, "/auth/logout-all", &first_access)
                .await
                .expect(204);
        };
        let (seen, ()) = tokio::join!(refreshing, logout_all);

        let what = format!("round {round}");
        assert!(
            live_sessions(&sql, &email).await.is_empty(),
            "{what}: a session survived logout-all"
        );
        for (access, refresh) in seen.iter().flatten() {
            rotations += 1;
            refresh_refused(&api, refresh, &what).await;
            access_refused(&api, access, &what).await;
        }
    }
    eprintln!("{rotations} token pairs from 32 devices checked after logout-all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_out_access_token_is_refused_by_the_same_server_as_soon_as_the_logout_answered() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    api.register("logout@example.com", PASSWORD).await;
    let mut accepted = Vec::new();
    for round in 0..60 {
        let session = api.login_session("logout@example.com", PASSWORD).await;
        api.me(&session.access).await.expect(200);
        api.bearer(Method::POST, "/auth/logout", &session.access)
            .await
            .expect(204);
        let answered = Instant::now();
        let reply = api.me(&session.access).await;
        if reply.status == 200 {
            accepted.push(format!(
                "round {round}, {:?} after the 204",
                answered.elapsed()
            ));
        }
    }
    assert!(
        accepted.is_empty(),
        "logged-out tokens accepted: {accepted:?}"
    );
}
