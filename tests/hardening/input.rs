//! Input that looks harmless and is not (issue 22): a quoted local part that names
//! another account's mailbox, single-label domains, device names with characters that
//! reorder or hide what the device list shows, and `/docs` in a frame.

use portcullis_e2e::ServerProcess;
use portcullis_e2e::api::Api;
use portcullis_testdb::TestDb;
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";

/// Item 4: `"ada"@example.com` is delivered to `ada@example.com`, so it is that account:
/// registering it again is 409, and signing in with it signs in to it. A quoted local part
/// with no unquoted spelling is refused.
#[tokio::test]
async fn a_quoted_local_part_is_the_account_of_the_mailbox_it_delivers_to() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let api = Api::new(&server);
    let ada = api.register("ada@example.com", PASSWORD).await;
    for quoted in [
        "\"ada\"@example.com",
        "\"Ada\"@Example.com",
        "\"a\\da\"@example.com",
    ] {
        api.post_json(
            "/auth/register",
            &json!({"email": quoted, "password": "another long password"}),
        )
        .await
        .expect_error(&[409], "email_taken");
        let pair = api.login(quoted, PASSWORD).await;
        let me = api
            .me(pair["access_token"].as_str().unwrap())
            .await
            .expect(200);
        assert_eq!(me["user_id"], ada.as_str(), "{quoted}");
    }
    for refused in [
        "\"a b\"@example.com",
        "\"ada@x\"@example.com",
        "ada(x)@example.com",
    ] {
        api.post_json(
            "/auth/register",
            &json!({"email": refused, "password": PASSWORD}),
        )
        .await
        .expect_error(&[400, 422], "invalid_email");
    }
    let users: i64 = db
        .connect()
        .await
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(users, 1);
}

/// Item 4: an address on a single-label domain is refused at registration (the check
/// has no branch by environment) unless `ALLOW_SINGLE_LABEL_EMAIL_DOMAINS` allows it, for
/// an intranet.
#[tokio::test]
async fn single_label_domains_are_refused_unless_an_intranet_allows_them() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let api = Api::new(&server);
    for email in ["x@localhost", "x@intranet", "x@intranet."] {
        api.post_json(
            "/auth/register",
            &json!({"email": email, "password": PASSWORD}),
        )
        .await
        .expect_error(&[400], "invalid_email");
    }
    drop(server);
    let server =
        ServerProcess::start(&db.url(), &[("ALLOW_SINGLE_LABEL_EMAIL_DOMAINS", "true")]).await;
    Api::new(&server).register("x@intranet", PASSWORD).await;
}

/// Item 13: a device name holding a bidirectional override or isolate, a zero-width
/// character or a line separator would show in the device list as something it is not;
/// it is refused as emails refuse them, and nothing is signed in.
#[tokio::test]
async fn device_names_with_invisible_or_reordering_characters_are_refused() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    for name in [
        "Ada\u{202e}potpal",
        "Ada\u{2067}laptop\u{2069}",
        "Ada\u{200b}laptop",
        "Ada\u{2028}laptop",
        "Ada\u{2029}laptop",
        "Ada\u{feff}laptop",
    ] {
        api.post_json(
            "/auth/login",
            &json!({"email": "ada@example.com", "password": PASSWORD, "device_name": name}),
        )
        .await
        .expect_error(&[400, 422], "invalid_device_name");
    }
    let sessions: i64 = db
        .connect()
        .await
        .query_one("SELECT count(*) FROM sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sessions, 0);
    api.post_json(
        "/auth/login",
        &json!({"email": "ada@example.com", "password": PASSWORD, "device_name": "Ada’s Pixel — 日本"}),
    )
    .await
    .expect(200);
}

/// Item 3: no HTML page can be framed, the Swagger UI at `/docs` included (its buttons act
/// with the session cookie), and `OPENAPI_UI=off` takes `/docs` away.
#[tokio::test]
async fn no_html_page_can_be_framed_and_docs_can_be_turned_off() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let api = Api::new(&server);
    for path in [
        "/docs",
        "/docs/",
        "/account",
        "/account/verify",
        "/account/reset",
    ] {
        let reply = api
            .send(format!("GET {path}"), api.request(Method::GET, path))
            .await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert!(
            reply
                .header(CONTENT_TYPE)
                .is_some_and(|t| t.starts_with("text/html")),
            "{path}"
        );
        assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{path}");
        let policy = reply.header("content-security-policy").unwrap_or_default();
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
    }
    drop(server);
    let server = ServerProcess::start(&db.url(), &[("OPENAPI_UI", "off")]).await;
    let api = Api::new(&server);
    let docs = api
        .send("GET /docs".to_owned(), api.request(Method::GET, "/docs"))
        .await;
    assert_eq!(docs.status, 404, "{}", docs.body);
    let spec = api
        .send(
            "GET /openapi.json".to_owned(),
            api.request(Method::GET, "/openapi.json"),
        )
        .await;
    assert_eq!(spec.status, 200);
}
