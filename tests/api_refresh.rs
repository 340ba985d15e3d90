//! Refresh-token rotation and theft detection on the real server process against a real
//! PostgreSQL: rotation, the grace window for retries and concurrent refreshes, reuse
//! after the grace window revoking the session, forged tokens revoking nothing, malformed
//! bodies, and logged-out sessions.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use session_e2e::ServerProcess;
use session_e2e::api::{Api, assert_refused, token};
use session_testdb::TestDb;

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
