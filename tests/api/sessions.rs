//! The session routes of the real server process against a real PostgreSQL: listing
//! (live only, newest use first, current flag, device fields), deleting one session,
//! identical 404s that never tell whose a session is, isolation between users, and
//! revoking every other session.

use portcullis_e2e::ServerProcess;
use portcullis_e2e::api::{Api, assert_refused};
use portcullis_testdb::TestDb;
use reqwest::Method;
use serde_json::Value;

const PASSWORD: &str = "correct horse battery staple";
const FIREFOX_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0";
const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                              (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36";

fn ids(sessions: &[Value]) -> Vec<&str> {
    sessions
        .iter()
        .map(|s| s["id"].as_str().expect("session id"))
        .collect()
}

fn listed<'a>(sessions: &'a [Value], id: &str) -> &'a Value {
    sessions
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("session {id} not listed in {sessions:?}"))
}

async fn start() -> (TestDb, ServerProcess) {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    (db, server)
}

#[tokio::test]
async fn listing_shows_only_live_sessions_with_exactly_the_caller_marked_current() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    let first = api.login_session("ada@example.com", PASSWORD).await;
    let gone = api.login_session("ada@example.com", PASSWORD).await;
    let caller = api.login_session("ada@example.com", PASSWORD).await;
    api.bearer(Method::POST, "/auth/logout", &gone.access)
        .await
        .expect(204);

    let sessions = api.sessions(&caller).await;

    let mut listed_ids = ids(&sessions);
    listed_ids.sort_unstable();
    let mut live = vec![first.id.as_str(), caller.id.as_str()];
    live.sort_unstable();
    assert_eq!(listed_ids, live, "only the live sessions: {sessions:?}");
    let current: Vec<&str> = sessions
        .iter()
        .filter(|s| s["current"] == true)
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(current, [caller.id.as_str()], "{sessions:?}");
    assert_eq!(listed(&sessions, &first.id)["current"], false);
}

#[tokio::test]
async fn listing_puts_the_most_recently_used_session_first_after_a_refresh() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    let older = api.login_session("ada@example.com", PASSWORD).await;
    let newer = api.login_session("ada@example.com", PASSWORD).await;
    let third = api.login_session("ada@example.com", PASSWORD).await;
    assert_eq!(
        ids(&api.sessions(&newer).await),
        [third.id.as_str(), newer.id.as_str(), older.id.as_str()],
        "before any refresh: newest login first"
    );

    api.refresh(&older.refresh).await.expect(200);

    assert_eq!(
        ids(&api.sessions(&newer).await),
        [older.id.as_str(), third.id.as_str(), newer.id.as_str()],
        "the refreshed session was used last"
    );
}

#[tokio::test]
async fn listing_shows_device_labels_parsed_from_firefox_and_chrome_agents_device_name_and_ip() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    let firefox = api
        .login_session_as(
            "ada@example.com",
            PASSWORD,
            Some("Work laptop"),
            Some(FIREFOX_LINUX),
        )
        .await;
    let chrome = api
        .login_session_as("ada@example.com", PASSWORD, None, Some(CHROME_WINDOWS))
        .await;

    let sessions = api.sessions(&chrome).await;

    let on_firefox = listed(&sessions, &firefox.id);
    let label = on_firefox["device_label"].as_str().expect("device_label");
    assert!(
        label.contains("Firefox") && label.contains("Linux"),
        "{label:?}"
    );
    assert_eq!(on_firefox["device_name"], "Work laptop");
    assert_eq!(on_firefox["user_agent"], FIREFOX_LINUX);
    assert_eq!(on_firefox["ip"], "127.0.0.1");

    let on_chrome = listed(&sessions, &chrome.id);
    let label = on_chrome["device_label"].as_str().expect("device_label");
    assert!(
        label.contains("Chrome") && label.contains("Windows"),
        "{label:?}"
    );
    assert!(on_chrome["device_name"].is_null(), "{on_chrome}");
    assert_eq!(on_chrome["user_agent"], CHROME_WINDOWS);
    assert_eq!(on_chrome["ip"], "127.0.0.1");

    for session in &sessions {
        assert!(session["created_at"].is_string(), "{session}");
        assert!(session["last_used_at"].is_string(), "{session}");
    }
}

#[tokio::test]
async fn deleting_one_of_my_sessions_is_204_refuses_its_access_token_and_keeps_mine() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    let mine = api.login_session("ada@example.com", PASSWORD).await;
    let doomed = api.login_session("ada@example.com", PASSWORD).await;

    api.delete_session(&mine, &doomed.id).await.expect(204);

    assert_refused(&api.me(&doomed.access).await);
    api.me(&mine.access).await.expect(200);
    assert_eq!(ids(&api.sessions(&mine).await), [mine.id.as_str()]);
}

#[tokio::test]
async fn deleting_an_unknown_a_malformed_or_another_users_session_gives_identical_404_bodies() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    api.register("bob@example.com", PASSWORD).await;
    let ada = api.login_session("ada@example.com", PASSWORD).await;
    let bob = api.login_session("bob@example.com", PASSWORD).await;

    let unknown = api
        .delete_session(&ada, &uuid::Uuid::new_v4().to_string())
        .await;
    let malformed = api.delete_session(&ada, "not-a-session-id").await;
    let others = api.delete_session(&ada, &bob.id).await;

    for reply in [&unknown, &malformed, &others] {
        reply.expect_error(&[404], "session_not_found");
    }
    assert_eq!(unknown.body, malformed.body);
    assert_eq!(
        unknown.body, others.body,
        "must not tell that the id exists"
    );
}

#[tokio::test]
async fn user_b_never_sees_user_a_sessions_and_cannot_revoke_them() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    api.register("bob@example.com", PASSWORD).await;
    let ada_laptop = api.login_session("ada@example.com", PASSWORD).await;
    let ada_phone = api.login_session("ada@example.com", PASSWORD).await;
    let bob = api.login_session("bob@example.com", PASSWORD).await;

    assert_eq!(ids(&api.sessions(&bob).await), [bob.id.as_str()]);
    for victim in [&ada_laptop, &ada_phone] {
        api.delete_session(&bob, &victim.id)
            .await
            .expect_error(&[404], "session_not_found");
    }
    api.bearer(Method::POST, "/sessions/revoke-others", &bob.access)
        .await
        .expect(200);

    for victim in [&ada_laptop, &ada_phone] {
        api.me(&victim.access).await.expect(200);
    }
    assert_eq!(api.sessions(&ada_laptop).await.len(), 2);
    api.refresh(&ada_phone.refresh).await.expect(200);
}

#[tokio::test]
async fn revoke_others_reports_how_many_it_revoked_and_leaves_only_the_current_session() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    let current = api.login_session("ada@example.com", PASSWORD).await;
    let others = [
        api.login_session("ada@example.com", PASSWORD).await,
        api.login_session("ada@example.com", PASSWORD).await,
    ];
    let already_gone = api.login_session("ada@example.com", PASSWORD).await;
    api.bearer(Method::POST, "/auth/logout", &already_gone.access)
        .await
        .expect(204);

    let body = api
        .bearer(Method::POST, "/sessions/revoke-others", &current.access)
        .await
        .expect(200);

    assert_eq!(body["revoked"], 2, "{body}");
    for other in &others {
        assert_refused(&api.me(&other.access).await);
    }
    api.me(&current.access).await.expect(200);
    assert_eq!(ids(&api.sessions(&current).await), [current.id.as_str()]);
}

/// Issue 22, items 14 and 16: the account data is never kept in a cache (the Back button
/// must not show a list from before a sign-out), and a session's last use moves when it
/// is used (listing the sessions), not only when it is refreshed.
#[tokio::test]
async fn listing_is_a_use_of_the_session_and_no_account_data_is_cached() {
    let (db, server) = start().await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    let caller = api.login_session("ada@example.com", PASSWORD).await;
    let other = api.login_session("ada@example.com", PASSWORD).await;
    db.connect()
        .await
        .execute(
            "UPDATE sessions SET last_used_at = now() - interval '1 hour'",
            &[],
        )
        .await
        .unwrap();

    let sessions = api.sessions(&caller).await;
    let client = db.connect().await;
    let seconds_since_use = |id: &str| {
        let id: uuid::Uuid = id.parse().unwrap();
        let client = &client;
        async move {
            let seconds: f64 = client
                .query_one(
                    "SELECT extract(epoch FROM now() - last_used_at)::float8 FROM sessions \
                     WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap()
                .get(0);
            seconds
        }
    };
    assert!(seconds_since_use(&caller.id).await < 60.0, "{sessions:?}");
    assert!(seconds_since_use(&other.id).await > 3000.0, "{sessions:?}");
    assert_eq!(ids(&sessions)[0], caller.id, "the caller was used last");

    for path in ["/me", "/sessions"] {
        let reply = api.bearer(Method::GET, path, &caller.access).await;
        reply.expect(200);
        assert_eq!(reply.header("cache-control"), Some("no-store"), "{path}");
    }
    let login = api.login_reply("ada@example.com", PASSWORD).await;
    assert_eq!(login.header("cache-control"), Some("no-store"));
}
