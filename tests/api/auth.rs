//! The account routes of the real server process against a real PostgreSQL: register,
//! login (token pair, enumeration, rate limits), request size limits, bearer refusals on
//! `/me`, logout, logout-all and password change.

use portcullis_e2e::ServerProcess;
use portcullis_e2e::api::{Api, Reply, token};
use portcullis_testdb::TestDb;
use reqwest::Method;
use reqwest::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

#[track_caller]
fn assert_retry_after(reply: &Reply) {
    let retry_after = reply
        .header(RETRY_AFTER)
        .unwrap_or_else(|| panic!("{}: 429 without Retry-After", reply.what));
    let seconds: u64 = retry_after
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After is not integer seconds: {retry_after:?}"));
    assert!(seconds >= 1, "Retry-After {seconds}");
}

#[track_caller]
fn assert_bearer_challenge(reply: &Reply) {
    let challenge = reply
        .header(WWW_AUTHENTICATE)
        .unwrap_or_else(|| panic!("{}: 401 without WWW-Authenticate", reply.what));
    assert!(challenge.starts_with("Bearer"), "{challenge}");
}

async fn start() -> (TestDb, ServerProcess) {
    start_with(&[]).await
}

async fn start_with(env: &[(&str, &str)]) -> (TestDb, ServerProcess) {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), env).await;
    (db, server)
}

#[tokio::test]
async fn register_returns_201_with_a_uuid_user_id() {
    let (_db, server) = start().await;
    let api = Api::new(&server);

    let reply = api
        .post_json(
            "/auth/register",
            &json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;

    let body = reply.expect(201);
    let user_id = body["user_id"].as_str().expect("user_id is a string");
    uuid::Uuid::parse_str(user_id).expect("user_id is a UUID");
}

#[tokio::test]
async fn register_with_a_taken_email_is_409_even_when_case_and_whitespace_differ() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;

    for email in ["ada@example.com", " Ada@Example.COM ", "ADA@EXAMPLE.COM"] {
        api.post_json(
            "/auth/register",
            &json!({"email": email, "password": "another password"}),
        )
        .await
        .expect_error(&[409], "email_taken");
    }
}

#[tokio::test]
async fn register_rejects_invalid_emails_with_400_invalid_email() {
    let (_db, server) = start().await;
    let api = Api::new(&server);

    for email in ["", "   ", "not-an-email", "ada@", "@example.com"] {
        api.post_json(
            "/auth/register",
            &json!({"email": email, "password": PASSWORD}),
        )
        .await
        .expect_error(&[400], "invalid_email");
    }
}

#[tokio::test]
async fn register_rejects_a_7_char_password_as_too_short_and_a_1025_char_one_as_too_long() {
    let (_db, server) = start().await;
    let api = Api::new(&server);

    api.post_json(
        "/auth/register",
        &json!({"email": "ada@example.com", "password": "1234567"}),
    )
    .await
    .expect_error(&[400], "password_too_short");
    api.post_json(
        "/auth/register",
        &json!({"email": "ada@example.com", "password": "p".repeat(1025)}),
    )
    .await
    .expect_error(&[400], "password_too_long");
}

#[tokio::test]
async fn register_accepts_passwords_of_exactly_8_and_1024_chars_and_they_log_in() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    let long = "p".repeat(1024);

    api.register("short@example.com", "12345678").await;
    api.register("long@example.com", &long).await;

    api.login("short@example.com", "12345678").await;
    api.login("long@example.com", &long).await;
}

#[tokio::test]
async fn register_rejects_malformed_json_missing_fields_and_wrong_types_with_a_json_error() {
    let (_db, server) = start().await;
    let api = Api::new(&server);

    let bodies = [
        r#"{"email": "ada@example.com", "password": "#,
        "not json at all",
        "",
        "null",
        "[]",
        r#"{"email": "ada@example.com"}"#,
        r#"{"password": "correct horse battery staple"}"#,
        "{}",
        r#"{"email": "ada@example.com", "password": ["correct horse"]}"#,
        r#"{"email": null, "password": "correct horse battery staple"}"#,
    ];
    for body in bodies {
        api.post_raw("/auth/register", body)
            .await
            .expect_error(&[400, 422], "invalid_request");
    }
    // A number or a boolean where the schema says string is a malformed body, like any
    // other wrong type.
    for body in [
        r#"{"email": 42, "password": "correct horse battery staple"}"#,
        r#"{"email": "ada@example.com", "password": 12345678}"#,
        r#"{"email": "ada@example.com", "password": true}"#,
    ] {
        api.post_raw("/auth/register", body)
            .await
            .expect_error(&[400, 422], "invalid_request");
    }
}

#[tokio::test]
async fn login_returns_a_bearer_token_pair_and_me_describes_that_session() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    let user_id = api.register("ada@example.com", PASSWORD).await;

    let pair = api.login("ada@example.com", PASSWORD).await;

    let access_token = token(&pair, "access_token");
    assert_eq!(
        access_token.split('.').count(),
        3,
        "the access token is a JWT"
    );
    assert_eq!(pair["token_type"], "Bearer");
    assert!(pair["expires_in"].as_u64().is_some_and(|s| s > 0), "{pair}");
    assert!(token(&pair, "refresh_token").len() >= 43, "{pair}");
    assert!(
        pair["refresh_expires_in"].as_u64().is_some_and(|s| s > 0),
        "{pair}"
    );
    let session_id = token(&pair, "session_id");
    uuid::Uuid::parse_str(&session_id).expect("session_id is a UUID");

    let me = api.me(&access_token).await.expect(200);
    assert_eq!(me["user_id"], user_id.as_str());
    assert_eq!(me["email"], "ada@example.com");
    assert_eq!(me["session_id"], session_id.as_str());
}

#[tokio::test]
async fn emails_are_trimmed_and_lower_cased_for_register_and_login() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    let user_id = api.register(" Ada@Example.COM ", PASSWORD).await;

    let pair = api.login("ADA@example.com", PASSWORD).await;

    let me = api.me(&token(&pair, "access_token")).await.expect(200);
    assert_eq!(me["user_id"], user_id.as_str());
    assert_eq!(me["email"], "ada@example.com");
}

#[tokio::test]
async fn login_with_an_unknown_email_or_a_wrong_password_gives_the_identical_401() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;

    let unknown = api.login_reply("nobody@example.com", PASSWORD).await;
    let wrong = api.login_reply("ada@example.com", "wrong password!").await;

    unknown.expect_error(&[401], "invalid_credentials");
    wrong.expect_error(&[401], "invalid_credentials");
    assert_eq!(unknown.status, wrong.status);
    assert_eq!(unknown.body, wrong.body, "the bodies must not tell which");
}

#[tokio::test]
async fn default_limits_let_a_burst_of_20_logins_through_and_then_stop_guessing_with_429() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;

    for attempt in 1..=20 {
        let reply = api.login_reply("ada@example.com", PASSWORD).await;
        assert_eq!(reply.status, 200, "login {attempt}: {}", reply.body);
    }
    // Whether successes count or only failures, 20 more guesses exceed 20 per minute.
    for attempt in 21..=45 {
        let reply = api.login_reply("ada@example.com", "a wrong guess").await;
        if reply.status == 429 {
            reply.expect_error(&[429], "rate_limited");
            assert_retry_after(&reply);
            return;
        }
        reply.expect_error(&[401], "invalid_credentials");
        assert!(attempt < 45, "45 logins within a minute were never limited");
    }
}

#[tokio::test]
async fn login_over_the_per_account_limit_is_429_with_retry_after_for_that_account_only() {
    let (_db, server) = start_with(&[("RATE_LIMIT_LOGIN_PER_ACCOUNT", "3")]).await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    api.register("bob@example.com", PASSWORD).await;

    let mut limited = None;
    for attempt in 1..=10 {
        let reply = api.login_reply("ada@example.com", "a wrong guess").await;
        if reply.status == 429 {
            limited = Some((attempt, reply));
            break;
        }
        reply.expect_error(&[401], "invalid_credentials");
    }
    let (attempt, reply) = limited.expect("10 guesses with a limit of 3 were never limited");
    assert!(
        attempt > 3,
        "limited at attempt {attempt}, within the limit of 3"
    );
    reply.expect_error(&[429], "rate_limited");
    assert_retry_after(&reply);

    // Over the limit, even the right password waits; another account does not.
    let right = api.login_reply("ada@example.com", PASSWORD).await;
    right.expect_error(&[429], "rate_limited");
    assert_retry_after(&right);
    api.login("bob@example.com", PASSWORD).await;
}

#[tokio::test]
async fn login_over_the_per_ip_limit_is_429_with_retry_after_across_accounts() {
    let (_db, server) = start_with(&[("RATE_LIMIT_LOGIN_PER_IP", "3")]).await;
    let api = Api::new(&server);

    let mut limited = None;
    for attempt in 1..=10 {
        let email = format!("nobody{attempt}@example.com");
        let reply = api.login_reply(&email, PASSWORD).await;
        if reply.status == 429 {
            limited = Some((attempt, reply));
            break;
        }
        reply.expect_error(&[401], "invalid_credentials");
    }
    let (attempt, reply) = limited.expect("10 logins with an IP limit of 3 were never limited");
    assert!(
        attempt > 3,
        "limited at attempt {attempt}, within the limit of 3"
    );
    reply.expect_error(&[429], "rate_limited");
    assert_retry_after(&reply);
}

#[tokio::test]
async fn a_body_larger_than_the_default_max_body_bytes_is_413_payload_too_large() {
    let (_db, server) = start().await;
    let api = Api::new(&server);

    let huge = "p".repeat(70_000);
    for path in ["/auth/register", "/auth/login"] {
        // A connection of its own each: the server may close one whose body it refused.
        let fresh = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("HTTP client");
        let request = fresh
            .post(server.url(path))
            .json(&json!({"email": "ada@example.com", "password": huge}));
        let reply = api.send(format!("POST {path} (70 kB)"), request).await;
        reply.expect_error(&[413], "payload_too_large");
    }
}

#[tokio::test]
async fn me_refuses_a_missing_garbage_or_non_bearer_credential_with_401_and_a_bearer_challenge() {
    let (_db, server) = start().await;
    let api = Api::new(&server);

    let missing = api.with_auth(Method::GET, "/me", None).await;
    assert_eq!(missing.status, 401, "{}", missing.body);
    assert_bearer_challenge(&missing);
    missing.expect_error_shape(&[401]);

    let basic = api
        .with_auth(Method::GET, "/me", Some("Basic YWRhOnBhc3N3b3Jk"))
        .await;
    assert_eq!(basic.status, 401, "{}", basic.body);
    assert_bearer_challenge(&basic);
    basic.expect_error_shape(&[401]);

    for garbage in [
        "Bearer garbage",
        "Bearer a.b.c",
        "Bearer eyJhbGciOiJub25lIn0.e30.",
    ] {
        let reply = api.with_auth(Method::GET, "/me", Some(garbage)).await;
        assert_eq!(reply.status, 401, "{garbage}: {}", reply.body);
        let challenge = reply.header(WWW_AUTHENTICATE).unwrap_or_default();
        assert!(
            challenge.starts_with(r#"Bearer error="invalid_token""#),
            "{garbage}: {challenge:?}"
        );
        reply.expect_error_shape(&[401]);
    }
}

#[tokio::test]
async fn me_with_a_bearer_scheme_but_no_token_is_400() {
    let (_db, server) = start().await;
    let api = Api::new(&server);

    for header in ["Bearer", "Bearer ", "Bearer not a b64token"] {
        let reply = api.with_auth(Method::GET, "/me", Some(header)).await;
        assert_eq!(reply.status, 400, "{header:?}: {}", reply.body);
        reply.expect_error_shape(&[400]);
    }
}

#[tokio::test]
async fn logout_is_204_and_revokes_only_the_current_session_access_and_refresh() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    let leaving = api.login("ada@example.com", PASSWORD).await;
    let staying = api.login("ada@example.com", PASSWORD).await;
    let access = token(&leaving, "access_token");

    api.bearer(Method::POST, "/auth/logout", &access)
        .await
        .expect(204);

    let refused = api.me(&access).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_bearer_challenge(&refused);
    api.refresh(&token(&leaving, "refresh_token"))
        .await
        .expect_error(&[401], "invalid_refresh_token");
    api.me(&token(&staying, "access_token")).await.expect(200);
}

#[tokio::test]
async fn logout_all_is_204_and_revokes_every_session_of_the_user_as_one_logged_revocation() {
    let (db, server) = start().await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    let first = api.login("ada@example.com", PASSWORD).await;
    let second = api.login("ada@example.com", PASSWORD).await;
    let third = api.login("ada@example.com", PASSWORD).await;
    api.register("bob@example.com", PASSWORD).await;
    let bob = api.login("bob@example.com", PASSWORD).await;
    let log = db.connect().await;
    let logged_before: i64 = log
        .query_one("SELECT count(*) FROM session_guard_revocation_log", &[])
        .await
        .unwrap()
        .get(0);

    api.bearer(
        Method::POST,
        "/auth/logout-all",
        &token(&first, "access_token"),
    )
    .await
    .expect(204);

    for pair in [&first, &second, &third] {
        let refused = api.me(&token(pair, "access_token")).await;
        assert_eq!(refused.status, 401, "{}", refused.body);
        api.refresh(&token(pair, "refresh_token"))
            .await
            .expect_error(&[401], "invalid_refresh_token");
    }
    api.me(&token(&bob, "access_token")).await.expect(200);
    // Three sessions, one row in the revocation log (one message to every instance).
    let rows: Vec<(String, i64)> = log
        .query(
            "SELECT kind, position FROM session_guard_revocation_log ORDER BY position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let kinds: Vec<&str> = rows
        .iter()
        .skip(usize::try_from(logged_before).unwrap())
        .map(|(kind, _)| kind.as_str())
        .collect();
    assert_eq!(kinds, ["user_before"]);
}

#[tokio::test]
async fn password_change_revokes_other_sessions_keeps_this_one_and_only_the_new_password_logs_in() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    let current = api.login("ada@example.com", PASSWORD).await;
    let other = api.login("ada@example.com", PASSWORD).await;
    let new_password = "a brand new passphrase";

    let request = api
        .request(Method::POST, "/auth/password")
        .bearer_auth(token(&current, "access_token"))
        .json(&json!({"current_password": PASSWORD, "new_password": new_password}));
    api.send("POST /auth/password".to_owned(), request)
        .await
        .expect(204);

    api.me(&token(&current, "access_token")).await.expect(200);
    api.refresh(&token(&current, "refresh_token"))
        .await
        .expect(200);
    let refused = api.me(&token(&other, "access_token")).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    api.refresh(&token(&other, "refresh_token"))
        .await
        .expect_error(&[401], "invalid_refresh_token");
    api.login_reply("ada@example.com", PASSWORD)
        .await
        .expect_error(&[401], "invalid_credentials");
    api.login("ada@example.com", new_password).await;
}

#[tokio::test]
async fn password_change_with_a_wrong_current_password_is_403_and_changes_nothing() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    let current = api.login("ada@example.com", PASSWORD).await;
    let other = api.login("ada@example.com", PASSWORD).await;

    let request = api
        .request(Method::POST, "/auth/password")
        .bearer_auth(token(&current, "access_token"))
        .json(&json!({"current_password": "not my password", "new_password": "a brand new passphrase"}));
    api.send("POST /auth/password".to_owned(), request)
        .await
        .expect_error(&[403], "invalid_credentials");

    api.me(&token(&other, "access_token")).await.expect(200);
    api.login("ada@example.com", PASSWORD).await;
    api.login_reply("ada@example.com", "a brand new passphrase")
        .await
        .expect_error(&[401], "invalid_credentials");
}

#[tokio::test]
async fn password_change_to_a_too_short_new_password_is_400_password_too_short() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    let current = api.login("ada@example.com", PASSWORD).await;

    let request = api
        .request(Method::POST, "/auth/password")
        .bearer_auth(token(&current, "access_token"))
        .json(&json!({"current_password": PASSWORD, "new_password": "short"}));
    api.send("POST /auth/password".to_owned(), request)
        .await
        .expect_error(&[400], "password_too_short");

    api.login("ada@example.com", PASSWORD).await;
}
