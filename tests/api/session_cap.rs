//! `MAX_SESSIONS_PER_USER` on the real server process and a real PostgreSQL: a login
//! beyond the cap revokes the least recently used live session (its access token is
//! refused at once, its refresh token fails, the event is recorded), concurrent logins
//! never leave more than the cap live, and unset means no cap.

use portcullis_e2e::ServerProcess;
use portcullis_e2e::api::{Api, Session, assert_refused};
use portcullis_testdb::TestDb;
use reqwest::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const EMAIL: &str = "ada@example.com";

async fn start_with(env: &[(&str, &str)]) -> (TestDb, ServerProcess) {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), env).await;
    (db, server)
}

/// The ids of the user's sessions that are live in the database.
async fn live_in_database(db: &TestDb) -> Vec<String> {
    let mut ids: Vec<String> = db
        .connect()
        .await
        .query(
            "SELECT s.id::text FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE u.email = $1 AND s.revoked_at IS NULL \
               AND least(s.idle_expires_at, s.absolute_expires_at) > now()",
            &[&EMAIL],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    ids.sort_unstable();
    ids
}

async fn revoked_reason(db: &TestDb, session: &str) -> Option<String> {
    let id = uuid::Uuid::parse_str(session).unwrap();
    db.connect()
        .await
        .query_one("SELECT revoked_reason FROM sessions WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0)
}

/// The `detail` of every `sessions_revoked` event of the session.
async fn revocation_events(db: &TestDb, session: &str) -> Vec<Value> {
    let id = uuid::Uuid::parse_str(session).unwrap();
    db.connect()
        .await
        .query(
            "SELECT detail FROM security_events WHERE kind = 'sessions_revoked' \
             AND session_id = $1 ORDER BY id",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn a_login_beyond_the_cap_revokes_the_least_recently_used_session_at_once() {
    let (db, server) = start_with(&[("MAX_SESSIONS_PER_USER", "2")]).await;
    let api = Api::new(&server);
    api.register(EMAIL, PASSWORD).await;
    let oldest = api.login_session(EMAIL, PASSWORD).await;
    let idle = api.login_session(EMAIL, PASSWORD).await;
    // Refreshing the oldest login makes the second the least recently used.
    let refreshed = Session::from_pair(&api.refresh(&oldest.refresh).await.expect(200));
    api.me(&idle.access).await.expect(200);

    let newest = api.login_session(EMAIL, PASSWORD).await;

    assert_refused(&api.me(&idle.access).await);
    assert_refused(&api.refresh(&idle.refresh).await);
    api.me(&refreshed.access).await.expect(200);
    api.me(&newest.access).await.expect(200);
    let listed: Vec<String> = api
        .sessions(&newest)
        .await
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        sorted(listed),
        sorted(vec![oldest.id.clone(), newest.id.clone()])
    );
    assert_eq!(live_in_database(&db).await.len(), 2);
    assert_eq!(
        revoked_reason(&db, &idle.id).await.as_deref(),
        Some("session_limit")
    );
    assert_eq!(
        revocation_events(&db, &newest.id).await,
        [json!({"reason": "session_limit", "count": 1})],
        "recorded once, on the login that caused it"
    );
    // The survivors keep refreshing.
    api.refresh(&refreshed.refresh).await.expect(200);
    api.refresh(&newest.refresh).await.expect(200);
}

#[tokio::test]
async fn a_lower_cap_revokes_every_session_beyond_it_at_the_next_login() {
    let db = TestDb::new().await;
    // Two servers on one database and one development key: one without a cap, one with.
    let keys = tempfile::tempdir().unwrap();
    let keys_dir = keys.path().display().to_string();
    let uncapped = ServerProcess::start(&db.url(), &[("DEV_KEYS_DIR", &keys_dir)]).await;
    let capped = ServerProcess::start(
        &db.url(),
        &[("DEV_KEYS_DIR", &keys_dir), ("MAX_SESSIONS_PER_USER", "2")],
    )
    .await;
    let before = Api::new(&uncapped);
    before.register(EMAIL, PASSWORD).await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(before.login_session(EMAIL, PASSWORD).await);
    }
    let api = Api::new(&capped);
    for session in &sessions {
        api.me(&session.access).await.expect(200);
    }

    let newest = api.login_session(EMAIL, PASSWORD).await;

    // Kept: the newest login and the most recently used session before it.
    let kept = &sessions[3];
    assert_eq!(
        live_in_database(&db).await,
        sorted(vec![kept.id.clone(), newest.id.clone()])
    );
    for gone in &sessions[..3] {
        assert_refused(&api.me(&gone.access).await);
        assert_refused(&api.refresh(&gone.refresh).await);
    }
    api.me(&kept.access).await.expect(200);
    assert_eq!(
        revocation_events(&db, &newest.id).await,
        [json!({"reason": "session_limit", "count": 3})]
    );
}

/// How many backends of the test's database wait for a lock.
async fn waiting_for_a_lock(db: &TestDb) -> i64 {
    db.connect()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn concurrent_logins_never_leave_more_live_sessions_than_the_cap() {
    const LOGINS: i64 = 6;
    // Long enough for every login to hash its password while the first waits.
    let (db, server) = start_with(&[
        ("MAX_SESSIONS_PER_USER", "2"),
        ("DATABASE_TIMEOUT_SECONDS", "60"),
    ])
    .await;
    let api = Api::new(&server);
    api.register(EMAIL, PASSWORD).await;
    // Hold the user's row so that every login's transaction queues up behind it, then
    // let them all go at once: the sharpest race the cap must survive.
    let mut holder = db.connect().await;
    let hold = holder.transaction().await.unwrap();
    hold.execute(
        "SELECT 1 FROM users WHERE email = $1 FOR NO KEY UPDATE",
        &[&EMAIL],
    )
    .await
    .unwrap();

    let logins =
        futures_util::future::join_all((0..LOGINS).map(|_| api.login_session(EMAIL, PASSWORD)));
    let release = async {
        let started = std::time::Instant::now();
        let mut queued = 0;
        while started.elapsed() < std::time::Duration::from_secs(12) {
            queued = waiting_for_a_lock(&db).await;
            if queued >= LOGINS {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        hold.commit().await.unwrap();
        queued
    };
    let (sessions, queued) = tokio::join!(logins, release);

    assert_eq!(queued, LOGINS, "every login waited for the user's row");
    let live = live_in_database(&db).await;
    assert_eq!(live.len(), 2, "{live:?}");
    let mut answering = Vec::new();
    for session in &sessions {
        let reply = api.me(&session.access).await;
        if reply.status == 200 {
            answering.push(session.id.clone());
        } else {
            assert_refused(&reply);
        }
    }
    assert_eq!(sorted(answering), live, "exactly the live sessions answer");
    let any_live = sessions.iter().find(|s| live.contains(&s.id)).unwrap();
    assert_eq!(api.sessions(any_live).await.len(), 2);
}

#[tokio::test]
async fn without_the_setting_there_is_no_cap() {
    let (db, server) = start_with(&[]).await;
    let api = Api::new(&server);
    api.register(EMAIL, PASSWORD).await;
    let mut sessions = Vec::new();
    for _ in 0..6 {
        sessions.push(api.login_session(EMAIL, PASSWORD).await);
    }
    for session in &sessions {
        api.bearer(Method::GET, "/me", &session.access)
            .await
            .expect(200);
    }
    assert_eq!(live_in_database(&db).await.len(), 6);
    assert_eq!(api.sessions(&sessions[0]).await.len(), 6);
}
