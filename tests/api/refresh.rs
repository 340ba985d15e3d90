//! Refresh-token rotation and theft detection on the real server process against a real
//! PostgreSQL: rotation, the grace window for retries and concurrent refreshes (only for
//! the client that rotated, a bounded number of times), reuse of any earlier generation
//! revoking the session, a thief shadowing a session through the grace window, forged
//! tokens revoking nothing, refresh state that does not grow, malformed bodies, and
//! logged-out sessions.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_e2e::ServerProcess;
use portcullis_e2e::api::Session;
use portcullis_e2e::api::{Api, assert_refused, token};
use portcullis_testdb::TestDb;
use reqwest::Method;
use serde_json::{Value, json};

const EMAIL: &str = "ada@example.com";
const PASSWORD: &str = "correct horse battery staple";
/// Comfortably past a grace window of one second.
const PAST_ONE_SECOND_GRACE: Duration = Duration::from_millis(1500);

/// 43 random URL-safe base64 characters: the shape of a real 256-bit refresh token.
fn forged_token() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..3)
        .flat_map(|_| uuid::Uuid::new_v4().into_bytes())
        .take(43)
        .map(|byte| char::from(ALPHABET[usize::from(byte % 64)]))
        .collect()
}

/// A token of the current format naming `session` and `generation`, with a random
/// secret: what a forger who read a session id off a screen could make.
fn forged_for(session: &str, generation: u32) -> String {
    let mut bytes = vec![1_u8];
    bytes.extend_from_slice(uuid::Uuid::parse_str(session).unwrap().as_bytes());
    bytes.extend_from_slice(&generation.to_be_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// How many `security_events` of `kind` the session has.
async fn events(db: &TestDb, kind: &str, session: &str) -> Vec<Value> {
    let session = uuid::Uuid::parse_str(session).unwrap();
    db.connect()
        .await
        .query(
            "SELECT jsonb_build_object('ip', host(ip), 'detail', detail) FROM security_events \
             WHERE kind = $1 AND session_id = $2 ORDER BY id",
            &[&kind, &session],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

async fn start_with(env: &[(&str, &str)]) -> (TestDb, ServerProcess) {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), env).await;
    (db, server)
}

#[tokio::test]
async fn refresh_rotates_to_a_new_token_of_the_same_session_and_the_old_one_fails_after_grace() {
    let (_db, server) = start_with(&[("REFRESH_GRACE_SECONDS", "1")]).await;
    let api = Api::new(&server);
    let login = api.signed_up(EMAIL, PASSWORD).await;
    let old = token(&login, "refresh_token");

    let rotated = api.refresh(&old).await.expect(200);

    let new = token(&rotated, "refresh_token");
    assert_ne!(new, old, "every refresh returns a new refresh token");
    assert_eq!(rotated["session_id"], login["session_id"]);
    assert_eq!(rotated["token_type"], "Bearer");
    assert!(rotated["expires_in"].as_u64().is_some_and(|s| s > 0));
    let me = api.me(&token(&rotated, "access_token")).await.expect(200);
    assert_eq!(me["session_id"], login["session_id"]);

    tokio::time::sleep(PAST_ONE_SECOND_GRACE).await;
    api.refresh(&old)
        .await
        .expect_error(&[401], "invalid_refresh_token");
}

#[tokio::test]
async fn a_retry_inside_the_grace_window_gets_the_same_new_token_which_then_works() {
    let (_db, server) = start_with(&[]).await;
    let api = Api::new(&server);
    let login = api.signed_up(EMAIL, PASSWORD).await;
    let old = token(&login, "refresh_token");

    let first = api.refresh(&old).await.expect(200);
    let retry = api.refresh(&old).await.expect(200);

    assert_eq!(
        token(&retry, "refresh_token"),
        token(&first, "refresh_token"),
        "a lost response must not fork the session"
    );
    assert_eq!(retry["session_id"], login["session_id"]);
    api.refresh(&token(&first, "refresh_token"))
        .await
        .expect(200);
}

#[tokio::test]
async fn eight_concurrent_refreshes_of_one_token_never_5xx_and_all_successes_agree() {
    let (_db, server) = start_with(&[]).await;
    let api = Api::new(&server);
    let login = api.signed_up(EMAIL, PASSWORD).await;
    let old = token(&login, "refresh_token");

    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let request = api
                .request(Method::POST, "/auth/refresh")
                .json(&json!({"refresh_token": old}));
            tokio::spawn(async move {
                let response = request.send().await.expect("refresh request");
                let status = response.status().as_u16();
                (status, response.text().await.expect("refresh body"))
            })
        })
        .collect();
    let replies = futures_util::future::join_all(tasks).await;

    let mut new_tokens = Vec::new();
    for reply in replies {
        let (status, body) = reply.expect("refresh task");
        assert!(status < 500, "{status}: {body}\n{}", server.log());
        let body: Value = serde_json::from_str(&body).expect("a JSON body");
        match status {
            200 => new_tokens.push(token(&body, "refresh_token")),
            401 => assert_eq!(body["error"], "invalid_refresh_token", "{body}"),
            other => panic!("concurrent refresh answered {other}: {body}"),
        }
    }
    assert!(!new_tokens.is_empty(), "no concurrent refresh succeeded");
    assert!(
        new_tokens.iter().all(|t| *t == new_tokens[0]),
        "the session forked: {new_tokens:?}"
    );
    api.refresh(&new_tokens[0]).await.expect(200);
}

#[tokio::test]
async fn reuse_after_the_grace_window_revokes_the_session_for_its_legitimate_holder_too() {
    let (_db, server) = start_with(&[("REFRESH_GRACE_SECONDS", "1")]).await;
    let api = Api::new(&server);
    let login = api.signed_up(EMAIL, PASSWORD).await;
    let stolen = token(&login, "refresh_token");
    let holder = api.refresh(&stolen).await.expect(200);

    tokio::time::sleep(PAST_ONE_SECOND_GRACE).await;
    api.refresh(&stolen)
        .await
        .expect_error(&[401], "invalid_refresh_token");

    api.refresh(&token(&holder, "refresh_token"))
        .await
        .expect_error(&[401], "invalid_refresh_token");
    assert_refused(&api.me(&token(&holder, "access_token")).await);
    assert_refused(&api.me(&token(&login, "access_token")).await);
}

#[tokio::test]
async fn a_forged_random_refresh_token_gets_401_and_the_victim_session_keeps_working() {
    let (_db, server) = start_with(&[]).await;
    let api = Api::new(&server);
    let victim = api.signed_up(EMAIL, PASSWORD).await;

    for forged in [forged_token(), forged_token(), "A".repeat(43)] {
        api.refresh(&forged)
            .await
            .expect_error(&[401], "invalid_refresh_token");
    }

    api.me(&token(&victim, "access_token")).await.expect(200);
    let rotated = api
        .refresh(&token(&victim, "refresh_token"))
        .await
        .expect(200);
    api.me(&token(&rotated, "access_token")).await.expect(200);
}

#[tokio::test]
async fn malformed_refresh_bodies_get_a_400_or_422_json_error() {
    let (_db, server) = start_with(&[]).await;
    let api = Api::new(&server);

    let bodies = [
        r#"{"refresh_token": "#,
        "not json",
        "",
        "null",
        "[]",
        "{}",
        r#"{"refresh_token": null}"#,
        r#"{"refresh_token": ["abc"]}"#,
    ];
    for body in bodies {
        api.post_raw("/auth/refresh", body)
            .await
            .expect_error(&[400, 422], "invalid_request");
    }
    // poem-openapi reads a JSON number where a string belongs as its text; "42" is then
    // simply not a refresh token.
    api.post_raw("/auth/refresh", r#"{"refresh_token": 42}"#)
        .await
        .expect_error(&[401], "invalid_refresh_token");
}

#[tokio::test]
async fn the_refresh_token_of_a_logged_out_session_gets_401() {
    let (_db, server) = start_with(&[]).await;
    let api = Api::new(&server);
    let login = api.signed_up(EMAIL, PASSWORD).await;

    api.bearer(Method::POST, "/auth/logout", &token(&login, "access_token"))
        .await
        .expect(204);

    api.refresh(&token(&login, "refresh_token"))
        .await
        .expect_error(&[401], "invalid_refresh_token");
}

#[tokio::test]
async fn a_second_login_is_a_separate_session_that_reuse_elsewhere_does_not_revoke() {
    let (_db, server) = start_with(&[("REFRESH_GRACE_SECONDS", "1")]).await;
    let api = Api::new(&server);
    let compromised = api.signed_up(EMAIL, PASSWORD).await;
    let unrelated = api.login(EMAIL, PASSWORD).await;
    let stolen = token(&compromised, "refresh_token");
    api.refresh(&stolen).await.expect(200);

    tokio::time::sleep(PAST_ONE_SECOND_GRACE).await;
    api.refresh(&stolen)
        .await
        .expect_error(&[401], "invalid_refresh_token");

    assert_ne!(unrelated["session_id"], compromised["session_id"]);
    api.me(&token(&unrelated, "access_token")).await.expect(200);
    api.refresh(&token(&unrelated, "refresh_token"))
        .await
        .expect(200);
}

#[tokio::test]
async fn a_retry_from_the_rotating_client_succeeds_and_is_recorded_as_refresh_retried_with_its_ip()
{
    let (db, server) = start_with(&[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let api = Api::new(&server);
    let login = api.signed_up(EMAIL, PASSWORD).await;
    let old = token(&login, "refresh_token");
    let session = login["session_id"].as_str().unwrap();

    let first = api
        .refresh_from(&old, "App/1.0", Some("198.51.100.7"))
        .await
        .expect(200);
    let retry = api
        .refresh_from(&old, "App/1.0", Some("198.51.100.7"))
        .await
        .expect(200);

    assert_eq!(
        token(&retry, "refresh_token"),
        token(&first, "refresh_token")
    );
    let retried = events(&db, "refresh_retried", session).await;
    assert_eq!(retried.len(), 1, "{retried:?}");
    assert_eq!(retried[0]["ip"], "198.51.100.7");
    assert!(events(&db, "refresh_reuse", session).await.is_empty());
}

#[tokio::test]
async fn a_thief_replaying_the_previous_token_inside_the_grace_window_ends_the_session_instead_of_shadowing_it()
 {
    let (db, server) = start_with(&[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let api = Api::new(&server);
    api.register(EMAIL, PASSWORD).await;
    // The thief differs by IP, by user agent, or by both.
    for (thief_agent, thief_ip) in [
        ("Thief/6.6", "203.0.113.66"),
        ("Victim/1.0", "203.0.113.66"),
        ("Thief/6.6", "198.51.100.1"),
    ] {
        let stolen = Session::from_pair(&api.login(EMAIL, PASSWORD).await);
        let before = api.sessions(&stolen).await;
        let seen = |sessions: &[Value]| {
            sessions
                .iter()
                .find(|s| s["id"] == stolen.id.as_str())
                .map(|s| s["last_used_at"].clone())
        };

        // The victim refreshes from their own client ...
        let victim = api
            .refresh_from(&stolen.refresh, "Victim/1.0", Some("198.51.100.1"))
            .await
            .expect(200);
        // ... the thief, polling the session list, sees last_used_at move ...
        let after = api.sessions(&stolen).await;
        assert_ne!(seen(&before), seen(&after), "the refresh is visible");
        // ... and replays the previous token at once, inside the grace window.
        api.refresh_from(&stolen.refresh, thief_agent, Some(thief_ip))
            .await
            .expect_error(&[401], "invalid_refresh_token");

        // The session is over for both: no token of either party works any more.
        api.refresh_from(
            &token(&victim, "refresh_token"),
            "Victim/1.0",
            Some("198.51.100.1"),
        )
        .await
        .expect_error(&[401], "invalid_refresh_token");
        assert_refused(&api.me(&token(&victim, "access_token")).await);
        assert_refused(&api.me(&stolen.access).await);
        let reuse = events(&db, "refresh_reuse", &stolen.id).await;
        assert_eq!(reuse.len(), 1, "{thief_agent} {thief_ip}: {reuse:?}");
        assert_eq!(reuse[0]["ip"], thief_ip);
        assert!(events(&db, "refresh_retried", &stolen.id).await.is_empty());
    }
}

#[tokio::test]
async fn any_earlier_generation_revokes_the_session_even_inside_the_grace_window() {
    let (db, server) = start_with(&[]).await;
    let api = Api::new(&server);
    api.register(EMAIL, PASSWORD).await;
    for stale in [0, 2] {
        let login = api.login(EMAIL, PASSWORD).await;
        let session = login["session_id"].as_str().unwrap().to_owned();
        let mut chain = vec![token(&login, "refresh_token")];
        for _ in 0..5 {
            let pair = api.refresh(chain.last().unwrap()).await.expect(200);
            chain.push(token(&pair, "refresh_token"));
        }

        api.refresh(&chain[stale])
            .await
            .expect_error(&[401], "invalid_refresh_token");

        api.refresh(chain.last().unwrap())
            .await
            .expect_error(&[401], "invalid_refresh_token");
        let reuse = events(&db, "refresh_reuse", &session).await;
        assert_eq!(reuse.len(), 1, "generation {stale}: {reuse:?}");
        assert_eq!(reuse[0]["detail"]["generation"], stale);
        assert_eq!(reuse[0]["detail"]["current_generation"], 5);
    }
}

#[tokio::test]
async fn forged_tokens_naming_a_real_session_and_any_generation_change_nothing() {
    let (db, server) = start_with(&[]).await;
    let api = Api::new(&server);
    let login = api.signed_up(EMAIL, PASSWORD).await;
    let mut current = token(&login, "refresh_token");
    for _ in 0..3 {
        current = token(&api.refresh(&current).await.expect(200), "refresh_token");
    }
    let session = login["session_id"].as_str().unwrap();

    // Current, previous, older, future and absurd generations; a truncated real token.
    for generation in [3, 2, 0, 4, 1_000_000, u32::MAX] {
        api.refresh(&forged_for(session, generation))
            .await
            .expect_error(&[401], "invalid_refresh_token");
    }
    api.refresh(&current[..current.len() - 1])
        .await
        .expect_error(&[401], "invalid_refresh_token");

    assert!(events(&db, "refresh_reuse", session).await.is_empty());
    assert!(events(&db, "refresh_retried", session).await.is_empty());
    let rotated = api.refresh(&current).await.expect(200);
    api.me(&token(&rotated, "access_token")).await.expect(200);
}

#[tokio::test]
async fn retries_past_the_bound_are_reuse() {
    let (db, server) = start_with(&[("REFRESH_MAX_RETRIES", "2")]).await;
    let api = Api::new(&server);
    let login = api.signed_up(EMAIL, PASSWORD).await;
    let old = token(&login, "refresh_token");
    let session = login["session_id"].as_str().unwrap();

    api.refresh(&old).await.expect(200);
    api.refresh(&old).await.expect(200);
    api.refresh(&old).await.expect(200);
    api.refresh(&old)
        .await
        .expect_error(&[401], "invalid_refresh_token");

    assert_eq!(events(&db, "refresh_retried", session).await.len(), 2);
    assert_eq!(events(&db, "refresh_reuse", session).await.len(), 1);
    assert_refused(&api.me(&token(&login, "access_token")).await);
}

#[tokio::test]
async fn refresh_state_is_one_row_of_the_same_size_after_one_refresh_and_after_three_hundred() {
    let (db, server) = start_with(&[("RATE_LIMIT_REFRESH_PER_IP", "0")]).await;
    let api = Api::new(&server);
    let login = api.signed_up(EMAIL, PASSWORD).await;
    let session = uuid::Uuid::parse_str(login["session_id"].as_str().unwrap()).unwrap();
    let sql = db.connect().await;
    let footprint = async || -> (i64, i32) {
        let row = sql
            .query_one(
                "SELECT (SELECT count(*) FROM sessions WHERE id = $1) \
                      + (SELECT count(*) FROM legacy_refresh_tokens WHERE session_id = $1), \
                        (SELECT pg_column_size(s.*) FROM sessions s WHERE id = $1)",
                &[&session],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };

    let mut current = token(
        &api.refresh(&token(&login, "refresh_token"))
            .await
            .expect(200),
        "refresh_token",
    );
    let after_one = footprint().await;
    for _ in 0..300 {
        current = token(&api.refresh(&current).await.expect(200), "refresh_token");
    }
    let after_many = footprint().await;

    assert_eq!(after_one.0, 1, "one row holds the session's refresh state");
    assert_eq!(
        after_many, after_one,
        "rows and bytes after 1 and 301 refreshes"
    );
}

/// `POST /auth/refresh` with `refresh_token`, the session's `client_binding` when given,
/// as `user_agent` from `ip` (believed when the server trusts loopback as a proxy).
async fn refresh_bound(
    api: &Api<'_>,
    refresh_token: &str,
    binding: Option<&str>,
    user_agent: &str,
    ip: &str,
) -> portcullis_e2e::api::Reply {
    let mut body = json!({"refresh_token": refresh_token});
    if let Some(binding) = binding {
        body["client_binding"] = json!(binding);
    }
    let request = api
        .request(Method::POST, "/auth/refresh")
        .header(reqwest::header::USER_AGENT, user_agent)
        .header("x-forwarded-for", ip)
        .json(&body);
    api.send(
        format!(
            "POST /auth/refresh as {user_agent} from {ip}, bound {}",
            binding.is_some()
        ),
        request,
    )
    .await
}

/// Issue 22, item 12: the owner's retry of a refresh whose answer it lost, sent from a
/// new network (Wi-Fi to LTE) inside the grace window, carries the session's client
/// binding and so is the owner's: it gets the same successor and nothing is revoked.
#[tokio::test]
async fn a_retry_with_the_client_binding_from_a_new_network_is_the_owner_and_revokes_nothing() {
    let (db, server) = start_with(&[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let api = Api::new(&server);
    let login = api.signed_up(EMAIL, PASSWORD).await;
    let binding = token(&login, "client_binding");
    let session = login["session_id"].as_str().unwrap();
    let old = token(&login, "refresh_token");

    let first = refresh_bound(&api, &old, Some(&binding), "App/1.0", "198.51.100.7")
        .await
        .expect(200);
    assert_eq!(
        token(&first, "client_binding"),
        binding,
        "one binding per session"
    );
    let retry = refresh_bound(&api, &old, Some(&binding), "App/1.0", "203.0.113.9")
        .await
        .expect(200);
    assert_eq!(
        token(&retry, "refresh_token"),
        token(&first, "refresh_token")
    );
    assert!(events(&db, "refresh_reuse", session).await.is_empty());
    assert_eq!(events(&db, "refresh_retried", session).await.len(), 1);
    // The session goes on from the new network.
    refresh_bound(
        &api,
        &token(&retry, "refresh_token"),
        Some(&binding),
        "App/1.0",
        "203.0.113.9",
    )
    .await
    .expect(200);
    // Without the binding, the same move from a new network is still what it was: reuse.
    let unbound = api.login(EMAIL, PASSWORD).await;
    let old = token(&unbound, "refresh_token");
    refresh_bound(&api, &old, None, "App/1.0", "198.51.100.7")
        .await
        .expect(200);
    refresh_bound(&api, &old, None, "App/1.0", "203.0.113.9")
        .await
        .expect_error(&[401], "invalid_refresh_token");
}

/// Issue 22, item 12: a thief on the owner's network with the owner's user agent who
/// holds a copy of the refresh token alone used to get the owner's successor as a
/// "retry" at every rotation. The owner's rotation is bound; the thief's replay is not,
/// so it is reuse: the thief gets nothing, at 0 of 10 rotations, and the session ends.
/// A binding of another session, or a forged one, is refused and changes nothing.
#[tokio::test]
async fn a_thief_with_the_refresh_token_alone_cannot_ride_the_rotation() {
    let (db, server) = start_with(&[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let api = Api::new(&server);
    api.register(EMAIL, PASSWORD).await;
    let (agent, ip) = ("Victim/1.0", "198.51.100.1");
    let mut ridden = 0;
    for _ in 0..10 {
        let login = api.login(EMAIL, PASSWORD).await;
        let binding = token(&login, "client_binding");
        let copy = token(&login, "refresh_token");
        refresh_bound(&api, &copy, Some(&binding), agent, ip)
            .await
            .expect(200);
        let thief = refresh_bound(&api, &copy, None, agent, ip).await;
        if thief.status == 200 {
            ridden += 1;
        }
        let reuse = events(&db, "refresh_reuse", &token(&login, "session_id")).await;
        assert_eq!(reuse.len(), 1, "the replay is theft: {reuse:?}");
    }
    assert_eq!(ridden, 0, "the thief rode {ridden} of 10 rotations");

    let login = api.login(EMAIL, PASSWORD).await;
    let other = api.login(EMAIL, PASSWORD).await;
    let copy = token(&login, "refresh_token");
    for wrong in [
        token(&other, "client_binding"),
        "A".repeat(43),
        "not base64".to_owned(),
    ] {
        refresh_bound(&api, &copy, Some(&wrong), agent, ip)
            .await
            .expect_error(&[401], "invalid_refresh_token");
    }
    // Nothing changed: the owner's token is still current and rotates.
    refresh_bound(
        &api,
        &copy,
        Some(&token(&login, "client_binding")),
        agent,
        ip,
    )
    .await
    .expect(200);
}
