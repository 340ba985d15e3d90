//! The server as operators see it: two processes sharing one database, the purge job,
//! stored security events, metrics and the OpenAPI document.

use std::time::{Duration, Instant};

use portcullis_e2e::ServerProcess;
use portcullis_testdb::TestDb;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

async fn post(
    server: &ServerProcess,
    path: &str,
    body: &Value,
    bearer: Option<&str>,
) -> (u16, Value) {
    let mut request = http().post(server.url(path)).json(body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// One client per test thread (each test has its own runtime, which owns the client's
/// connections): building a client costs milliseconds, which would swamp the
/// propagation time being measured.
fn http() -> reqwest::Client {
    thread_local! {
        static CLIENT: reqwest::Client = reqwest::Client::new();
    }
    CLIENT.with(Clone::clone)
}

async fn me_status(server: &ServerProcess, token: &str) -> u16 {
    http()
        .get(server.url("/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Registers `email` and logs in once; returns the token pair.
async fn signed_in(server: &ServerProcess, email: &str) -> Value {
    let credentials = json!({ "email": email, "password": PASSWORD });
    let (status, _) = post(server, "/auth/register", &credentials, None).await;
    assert_eq!(status, 201);
    let (status, pair) = post(server, "/auth/login", &credentials, None).await;
    assert_eq!(status, 200, "{pair}");
    pair
}

#[tokio::test]
async fn a_logout_on_one_process_is_honoured_by_another_within_100_ms() {
    let db = TestDb::new().await;
    // Replicas share their keys, as they would in production.
    let keys = tempfile::tempdir().unwrap();
    let shared = [("DEV_KEYS_DIR", keys.path().to_str().unwrap())];
    let a = ServerProcess::start(&db.url(), &shared).await;
    let b = ServerProcess::start(&db.url(), &shared).await;
    let pair = signed_in(&a, "two@example.com").await;
    let access = pair["access_token"].as_str().unwrap();

    // B has verified the token and cached the session as live.
    assert_eq!(me_status(&b, access).await, 200);
    assert_eq!(me_status(&b, access).await, 200);

    let (status, _) = post(&a, "/auth/logout", &json!({}), Some(access)).await;
    assert_eq!(status, 204);
    let revoked_at = Instant::now();
    let mut polls = 0;
    loop {
        polls += 1;
        match me_status(&b, access).await {
            401 => break,
            200 => assert!(
                revoked_at.elapsed() < Duration::from_secs(2),
                "B still accepts the token"
            ),
            other => panic!("unexpected {other}"),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = revoked_at.elapsed();
    eprintln!("revocation reached the other process in {elapsed:?} ({polls} polls)");
    assert!(elapsed < Duration::from_millis(100), "took {elapsed:?}");
}

#[tokio::test]
async fn the_purge_job_deletes_long_ended_sessions_on_one_replica_at_a_time() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    let ended: Vec<uuid::Uuid> = client
        .query(
            "WITH u AS (INSERT INTO users (email, password_hash) VALUES ('p@example.com', 'x') \
             RETURNING id) \
             INSERT INTO sessions (user_id, idle_expires_at, absolute_expires_at, revoked_at) \
             SELECT id, now() - interval '2 hours', now() + interval '1 day', NULL FROM u \
             UNION ALL SELECT id, now() + interval '1 day', now() + interval '2 days', \
                    now() - interval '1 hour' FROM u \
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let live: uuid::Uuid = client
        .query_one(
            "INSERT INTO sessions (user_id, idle_expires_at, absolute_expires_at) \
             SELECT id, now() + interval '1 day', now() + interval '2 days' FROM users \
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let count = |ids: Vec<uuid::Uuid>| {
        let client = &client;
        async move {
            client
                .query_one("SELECT count(*) FROM sessions WHERE id = ANY($1)", &[&ids])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };

    // Another replica holds the purge lock: this one must stand back.
    let holder = db.connect().await;
    holder
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&portcullis_server::purge::PURGE_LOCK_KEY],
        )
        .await
        .unwrap();
    let server = ServerProcess::start(
        &db.url(),
        &[
            ("PURGE_INTERVAL_SECONDS", "1"),
            ("SESSION_RETENTION_DAYS", "0"),
            ("RUST_LOG", "info,portcullis_server::purge=debug"),
        ],
    )
    .await;
    // Wait for the job to have run, and stood back, twice.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.log().matches("purge skipped").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the purge job never ran:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        count(ended.clone()).await,
        2,
        "purged while another replica held the lock"
    );

    holder
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&portcullis_server::purge::PURGE_LOCK_KEY],
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(ended.clone()).await > 0 {
        assert!(Instant::now() < deadline, "ended sessions were not purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(vec![live]).await, 1, "a live session was purged");
}

#[tokio::test]
async fn security_events_are_stored_without_secrets() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[("REFRESH_GRACE_SECONDS", "0")]).await;
    let pair = signed_in(&server, "events@example.com").await;
    let refresh = pair["refresh_token"].as_str().unwrap();

    let wrong = json!({ "email": "events@example.com", "password": "not the password" });
    assert_eq!(post(&server, "/auth/login", &wrong, None).await.0, 401);
    let body = json!({ "refresh_token": refresh });
    assert_eq!(post(&server, "/auth/refresh", &body, None).await.0, 200);
    // The rotated token again, after the (zero) grace window: theft.
    assert_eq!(post(&server, "/auth/refresh", &body, None).await.0, 401);

    let client = db.connect().await;
    let rows = client
        .query(
            "SELECT kind, coalesce(session_id::text, ''), detail::text FROM security_events \
             ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let kinds: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    assert!(kinds.contains(&"login_failed".to_owned()), "{kinds:?}");
    let reuse = rows
        .iter()
        .find(|row| row.get::<_, &str>(0) == "refresh_reuse")
        .expect("the reuse was recorded");
    assert_eq!(
        reuse.get::<_, &str>(1),
        pair["session_id"].as_str().unwrap()
    );
    for row in &rows {
        let detail: &str = row.get(2);
        assert!(!detail.contains(refresh), "a refresh token was stored");
        assert!(!detail.contains(PASSWORD) && !detail.contains("not the password"));
    }
    assert!(
        !server.log().contains(refresh),
        "a refresh token was logged"
    );
    assert!(!server.log().contains(PASSWORD), "a password was logged");
}

#[tokio::test]
async fn metrics_count_logins_refreshes_rejections_and_the_cache() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let pair = signed_in(&server, "metrics@example.com").await;
    let access = pair["access_token"].as_str().unwrap();
    assert_eq!(me_status(&server, access).await, 200);
    assert_eq!(me_status(&server, access).await, 200);
    assert_eq!(me_status(&server, "garbage").await, 401);
    let body = json!({ "refresh_token": pair["refresh_token"] });
    assert_eq!(post(&server, "/auth/refresh", &body, None).await.0, 200);

    let response = server.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    for line in [
        "session_logins_total{outcome=\"success\"} 1",
        "session_refreshes_total{outcome=\"rotated\"} 1",
        "session_auth_rejections_total{reason=\"token_malformed\"} 1",
        "session_liveness_cache_hits 1",
        "session_liveness_cache_misses 1",
        "session_liveness_cache_hit_ratio 0.5",
        "session_liveness_listener_connected 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in\n{text}"
        );
    }
}

#[tokio::test]
async fn the_openapi_document_declares_bearer_and_cookie_auth_and_every_error_body() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let spec: Value = server.get("/openapi.json").await.json().await.unwrap();
    let scheme = &spec["components"]["securitySchemes"]["BearerAuth"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    let cookie = &spec["components"]["securitySchemes"]["CookieAuth"];
    assert_eq!(cookie["type"], "apiKey", "{cookie}");
    assert_eq!(cookie["in"], "cookie", "{cookie}");
    assert_eq!(cookie["name"], "__Host-sg_access", "{cookie}");
    // The cookie transport: chosen at login, and a refresh whose body may be left out.
    let schemas = &spec["components"]["schemas"];
    let transport = &schemas["LoginRequest"]["properties"]["transport"];
    assert_eq!(
        transport["allOf"][0]["$ref"], "#/components/schemas/Transport",
        "{transport}"
    );
    assert_eq!(schemas["Transport"]["enum"], json!(["bearer", "cookie"]));
    let refresh = &spec["paths"]["/auth/refresh"]["post"];
    assert_ne!(refresh["requestBody"]["required"], true, "{refresh}");
    // Without the refresh cookie the token is required, so the document says it is.
    assert_eq!(
        schemas["RefreshRequest"]["required"],
        json!(["refresh_token"]),
        "{}",
        schemas["RefreshRequest"]
    );
    // The account page and the pages of mailed links are HTML, outside the API's document.
    for page in ["/account", "/account/verify", "/account/reset"] {
        assert!(spec["paths"].get(page).is_none(), "{page}");
    }

    let protected = [
        ("/auth/logout", "post"),
        ("/auth/logout-all", "post"),
        ("/auth/password", "post"),
        ("/auth/verify-email/resend", "post"),
        ("/me", "get"),
        ("/sessions", "get"),
        ("/sessions/{id}", "delete"),
        ("/sessions/revoke-others", "post"),
        ("/notes", "get"),
        ("/notes", "post"),
        ("/notes/{id}", "get"),
        ("/notes/{id}", "delete"),
        ("/auth/mfa/totp", "post"),
        ("/auth/mfa/totp/{factor_id}/confirm", "post"),
        ("/auth/mfa/factors", "get"),
        ("/auth/mfa/factors/{id}", "delete"),
        ("/auth/mfa/recovery-codes", "post"),
        ("/auth/passkeys/registration/options", "post"),
        ("/auth/passkeys/registration", "post"),
        ("/auth/step-up", "post"),
    ];
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            // Either scheme will do: one requirement object each.
            let required: Vec<&str> = operation["security"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|requirement| requirement.as_object().unwrap().keys())
                .map(String::as_str)
                .collect();
            let should = protected.contains(&(path.as_str(), method.as_str()));
            let expected: &[&str] = if should {
                &["BearerAuth", "CookieAuth"]
            } else {
                &[]
            };
            assert_eq!(required, expected, "{method} {path} security");
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    let body_schema =
                        &response["content"]["application/json; charset=utf-8"]["schema"]["$ref"];
                    assert_eq!(
                        body_schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status}: {response}"
                    );
                }
            }
        }
    }
    assert!(operations >= 12, "{operations} operations documented");
}

/// The request lines (target `portcullis_server::request`) in a JSON log.
fn request_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "portcullis_server::request")
        .collect()
}

#[tokio::test]
async fn each_request_logs_one_line_with_method_path_route_status_and_latency() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(
        &db.url(),
        &[
            ("RUST_LOG", "info,portcullis_server::request=debug"),
            ("LOG_FORMAT", "json"),
        ],
    )
    .await;
    let session = uuid::Uuid::new_v4();
    let requests = [
        (
            "GET",
            "/openapi.json".to_owned(),
            200,
            Some("/openapi.json"),
        ),
        ("GET", "/no/such/route".to_owned(), 404, None),
        // Poem names the parameters of OpenAPI paths itself (`:param0`).
        (
            "DELETE",
            format!("/sessions/{session}"),
            401,
            Some("/sessions/:"),
        ),
        (
            "POST",
            "/auth/refresh".to_owned(),
            400,
            Some("/auth/refresh"),
        ),
    ];
    for (method, path, status, _) in &requests {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = http().request(method, server.url(path));
        if path == "/auth/refresh" {
            request = request
                .header("content-type", "application/json")
                .body("{not json");
        }
        let answer = request.send().await.unwrap().status().as_u16();
        assert_eq!(answer, *status, "{path}");
    }
    let ours = |line: &&Value| {
        requests
            .iter()
            .any(|(_, path, _, _)| line["span"]["path"] == path.as_str())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while request_lines(&server.log()).iter().filter(ours).count() < requests.len() {
        assert!(
            Instant::now() < deadline,
            "request lines missing:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines = request_lines(&server.log());
    for (method, path, status, route) in &requests {
        let matching: Vec<&Value> = lines
            .iter()
            .filter(|line| line["span"]["path"] == path.as_str())
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "one line for {method} {path}: {matching:?}"
        );
        let line = matching[0];
        assert_eq!(line["level"], "DEBUG", "{line}");
        assert_eq!(line["span"]["name"], "request", "{line}");
        assert_eq!(line["span"]["method"], *method, "{line}");
        assert_eq!(line["fields"]["status"], *status, "{line}");
        match route {
            Some(pattern) => assert!(
                line["fields"]["route"]
                    .as_str()
                    .is_some_and(|logged| logged.starts_with(pattern)),
                "{line}"
            ),
            None => assert!(line["fields"].get("route").is_none(), "{line}"),
        }
        let latency = line["fields"]["latency_ms"].as_f64().expect("a latency");
        assert!((0.0..10_000.0).contains(&latency), "{line}");
    }
}

#[tokio::test]
async fn the_default_filter_logs_no_line_per_request() {
    let db = TestDb::new().await;
    let mut server = ServerProcess::start(&db.url(), &[("LOG_FORMAT", "json")]).await;
    for _ in 0..3 {
        assert_eq!(server.get("/health").await.status(), 200);
    }
    // Once the process is gone its whole log has been read.
    let status = server.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}:\n{}", server.log());
    let log = server.log();
    assert!(log.contains("shutting down"), "{log}");
    assert_eq!(request_lines(&log), Vec::<Value>::new(), "{log}");
}
