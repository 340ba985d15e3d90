//! The real `portcullis-server` binary as a child process against a real PostgreSQL:
//! first run, database outage and recovery, graceful shutdown, start-up refusals, the
//! `migrate` subcommand, and the `config` and `help` subcommands against the README.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use portcullis_e2e::{PostgresProxy, ServerProcess, free_port, server_command};
use portcullis_testdb::{TestDb, admin_config};

/// Polls `GET /health` until it answers `status`, or panics after `limit`.
async fn wait_for_health(server: &ServerProcess, status: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let answer = server.get("/health").await.status().as_u16();
        if answer == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/health still {answer}, not {status}, after {limit:?}:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn database_exists(name: &str) -> bool {
    let (client, connection) = admin_config()
        .await
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn first_run_creates_its_database_migrates_and_answers_health() {
    let db = TestDb::reserved().await;
    assert!(!database_exists(db.name()).await);

    let server = ServerProcess::start(&db.url(), &[]).await;

    let health = server.get("/health").await;
    assert_eq!(health.status(), 200, "{}", server.log());
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert!(
        database_exists(db.name()).await,
        "the server created its database"
    );
    let tables: i64 = db
        .connect()
        .await
        .query_one(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_name IN ('users', 'sessions', 'security_events')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 3, "the server migrated its database");
    let log = server.log();
    assert!(log.contains("generated a development signing key"), "{log}");
    assert!(log.contains("created database"), "{log}");
}

#[tokio::test]
async fn health_is_503_while_the_database_is_unreachable_and_recovers_without_restart() {
    let db = TestDb::new().await;
    let mut proxy = PostgresProxy::start(db.config()).await;
    let through_proxy = proxy.route(db.config());
    let url = portcullis_testdb::TestDb::url_of(&through_proxy);
    let mut server = ServerProcess::start(&url, &[("DATABASE_TIMEOUT_SECONDS", "2")]).await;
    wait_for_health(&server, 200, Duration::from_secs(10)).await;

    proxy.cut();
    wait_for_health(&server, 503, Duration::from_secs(15)).await;
    let body: serde_json::Value = server.get("/health").await.json().await.unwrap();
    assert_eq!(body["error"], "database_unavailable");
    assert!(body["message"].is_string());
    assert!(server.is_running(), "the outage must not kill the server");

    proxy.restore().await;
    wait_for_health(&server, 200, Duration::from_secs(15)).await;
    assert!(server.is_running());
}

#[tokio::test]
async fn sigterm_stops_the_server_gracefully() {
    let db = TestDb::new().await;
    let mut server = ServerProcess::start(&db.url(), &[]).await;
    assert_eq!(server.get("/health").await.status(), 200);

    let status = server.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status}:\n{}", server.log());
    assert!(server.log().contains("shutting down"), "{}", server.log());
}

#[tokio::test]
async fn production_without_keys_refuses_to_start_and_says_why() {
    let db = TestDb::reserved().await;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let command = server_command(
        &[],
        &[
            ("APP_ENV", "production"),
            ("DATABASE_URL", &db.url()),
            ("BIND_ADDR", &addr.to_string()),
        ],
    );
    let mut server = ServerProcess::spawn(command, addr);
    let status = server.wait_for_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(2), "{}", server.log());
    let log = server.log();
    assert!(log.contains("JWT_SIGNING_KEYS"), "{log}");
    assert!(log.contains("production"), "{log}");
    assert!(!database_exists(db.name()).await, "nothing was created");
}

#[tokio::test]
async fn an_invalid_setting_is_named_in_the_error() {
    for (var, value) in [
        ("BIND_ADDR", "not-an-address"),
        ("DATABASE_POOL_SIZE", "0"),
        ("DATABASE_URL", "postgres://user:secret@host:notaport/db"),
    ] {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut server = ServerProcess::spawn(server_command(&[], &[(var, value)]), addr);
        let status = server.wait_for_exit(Duration::from_secs(20)).await;
        assert_eq!(status.code(), Some(2), "{var}: {}", server.log());
        let log = server.log();
        assert!(log.contains(var), "{var}: {log}");
        assert!(!log.contains("secret"), "a password leaked: {log}");
    }
}

#[tokio::test]
async fn migrate_subcommand_applies_the_schema_and_exits() {
    let db = TestDb::empty().await;
    // Three replicas migrating at the same time: all succeed, each step runs once.
    let runs: Vec<_> = (0..3)
        .map(|_| {
            server_command(&["migrate"], &[("DATABASE_URL", &db.url())])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawning portcullis-server migrate")
        })
        .collect();
    for run in runs {
        let output = run.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let client = db.connect().await;
    let history: Vec<i32> = client
        .query(
            "SELECT version FROM refinery_schema_history ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    // Every file of migrations/sql, whichever versions it holds.
    let sql = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sql");
    let mut versions: Vec<i32> = std::fs::read_dir(&sql)
        .expect("reading migrations/sql")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_prefix('V')?.split_once("__")?.0.parse().ok()
        })
        .collect();
    versions.sort_unstable();
    assert_eq!(history, versions, "each migration applied exactly once");
    client
        .query_one("SELECT count(*) FROM sessions", &[])
        .await
        .expect("the sessions table exists");
}

#[tokio::test]
async fn documentation_and_unknown_routes() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;

    let spec: serde_json::Value = server.get("/openapi.json").await.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    assert!(spec["paths"]["/health"]["get"]["responses"]["503"].is_object());

    let jwks: serde_json::Value = server
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    assert!(key["kid"].as_str().is_some_and(|kid| kid.len() == 43));
    assert!(
        key.get("d").is_none(),
        "the private half must never be published"
    );

    let docs = server.get("/docs").await;
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("swagger")
    );

    let missing = server.get("/no/such/route").await;
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    assert!(body["message"].is_string());
}

#[tokio::test]
async fn production_with_explicit_keys_starts_and_generates_nothing() {
    let db = TestDb::new().await;
    // A development run generates a key pair we can hand to production explicitly.
    let mut dev = ServerProcess::start(&db.url(), &[]).await;
    let keys = dev.keys_dir().unwrap().to_owned();
    let signing = keys.join("ed25519-dev.pem");
    let refresh = keys.join("refresh-token.key");
    let kept = tempfile::tempdir().unwrap();
    for file in [&signing, &refresh] {
        std::fs::copy(file, kept.path().join(file.file_name().unwrap())).unwrap();
    }
    let status = dev.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}:\n{}", dev.log());

    let untouched = tempfile::tempdir().unwrap();
    let signing = kept.path().join("ed25519-dev.pem");
    let refresh = kept.path().join("refresh-token.key");
    let production = ServerProcess::start(
        &db.url(),
        &[
            ("APP_ENV", "production"),
            ("JWT_SIGNING_KEYS", signing.to_str().unwrap()),
            ("REFRESH_TOKEN_KEY_FILE", refresh.to_str().unwrap()),
            ("DEV_KEYS_DIR", untouched.path().to_str().unwrap()),
            // Production needs a mail server; nothing is sent in this test, so none listens.
            ("SMTP_URL", "smtp://127.0.0.1:1?tls=none"),
        ],
    )
    .await;
    assert_eq!(production.get("/health").await.status(), 200);
    assert_eq!(std::fs::read_dir(untouched.path()).unwrap().count(), 0);
    assert!(
        !production.log().contains("generated"),
        "{}",
        production.log()
    );
}

/// The configuration reference's group headings and table rows, in order.
fn reference_lines(markdown: &str) -> Vec<&str> {
    markdown
        .lines()
        .filter(|line| line.starts_with("#### ") || line.starts_with("| `"))
        .collect()
}

/// The README's `### Configuration` section, up to the next heading of its level or above.
fn readme_configuration(readme: &str) -> &str {
    let start = readme
        .find("\n### Configuration\n")
        .expect("the README has a `### Configuration` section");
    let section = &readme[start + 1..];
    let end = section
        .match_indices('\n')
        .map(|(at, _)| at + 1)
        .find(|&at| {
            let line = &section[at..];
            line.starts_with("## ") || line.starts_with("### ")
        })
        .unwrap_or(section.len());
    &section[..end]
}

/// Each table row's cells after the first, by the variable the first names.
fn rows<'a>(lines: &[&'a str]) -> BTreeMap<&'a str, Vec<&'a str>> {
    lines
        .iter()
        .filter(|line| line.starts_with("| `"))
        .map(|row| cells(row))
        .collect()
}

/// A table row's variable name and its other cells.
fn cells(row: &str) -> (&str, Vec<&str>) {
    let inner = row.trim().trim_start_matches("| ").trim_end_matches(" |");
    let mut cells = inner.split(" | ");
    let name = cells.next().unwrap_or_default().trim_matches('`');
    (name, cells.collect())
}

#[test]
fn the_readme_lists_exactly_the_settings_the_server_declares() {
    let output = server_command(&["config"], &[])
        .output()
        .expect("running portcullis-server config");
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).expect("UTF-8 output");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("reading README.md");
    let documented = reference_lines(readme_configuration(&readme));
    let printed = reference_lines(&printed);
    let regenerate =
        "regenerate the README's tables with `cargo run -q -p portcullis-server -- config`";

    let (printed_rows, documented_rows) = (rows(&printed), rows(&documented));
    assert!(
        printed_rows.len() > 30,
        "the server declares its settings: {printed:?}"
    );
    let missing: Vec<_> = printed_rows
        .keys()
        .filter(|name| !documented_rows.contains_key(*name))
        .collect();
    let unknown: Vec<_> = documented_rows
        .keys()
        .filter(|name| !printed_rows.contains_key(*name))
        .collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "the README misses {missing:?} and lists {unknown:?}, which the server does not read; \
         {regenerate}"
    );
    let other_defaults: Vec<String> = printed_rows
        .iter()
        .filter(|(name, row)| documented_rows[*name].first() != row.first())
        .map(|(name, row)| {
            format!(
                "{name}: README {:?}, server {:?}",
                documented_rows[name].first(),
                row.first()
            )
        })
        .collect();
    assert!(
        other_defaults.is_empty(),
        "defaults differ: {other_defaults:?}; {regenerate}"
    );
    let first_difference = documented
        .iter()
        .zip(&printed)
        .find(|(readme, server)| readme != server);
    assert!(
        first_difference.is_none() && documented.len() == printed.len(),
        "the README's groups, ranges or meanings differ from the declarations, first at \
         {first_difference:#?}; {regenerate}"
    );
}

#[test]
fn the_readme_shows_the_usage_that_help_prints() {
    let output = server_command(&["help"], &[])
        .output()
        .expect("running portcullis-server help");
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).expect("UTF-8 output");
    assert!(printed.contains("Usage: portcullis-server"), "{printed}");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("reading README.md");
    let block = format!("```text\n{printed}```");
    assert!(
        readme.contains(&block),
        "the README's `### Operator commands` must show what `portcullis-server help` prints:\n{printed}"
    );
}

/// Issue 22, item 10: a PostgreSQL that stalls (here a proxy that keeps every connection
/// open and forwards nothing) used to hold requests on pooled connections for the 30 s
/// request timeout. Every statement is bounded on the client's side by
/// `DATABASE_TIMEOUT_SECONDS`: the answer is a JSON 503 within that, and the server
/// recovers once the database answers again.
#[tokio::test]
async fn a_stalled_database_gives_503_within_database_timeout_seconds_not_the_request_timeout() {
    let db = TestDb::new().await;
    let proxy = PostgresProxy::start(db.config()).await;
    let url = portcullis_testdb::TestDb::url_of(&proxy.route(db.config()));
    let server = ServerProcess::start(&url, &[("DATABASE_TIMEOUT_SECONDS", "2")]).await;
    let api = portcullis_e2e::api::Api::new(&server);
    let session = portcullis_e2e::api::Session::from_pair(
        &api.signed_up("ada@example.com", "correct horse battery")
            .await,
    );
    // The layer holds the session as live, so only the handler's own statements wait.
    api.sessions(&session).await;

    proxy.stall();
    for (what, path) in [("the session list", "/sessions"), ("health", "/health")] {
        let started = std::time::Instant::now();
        let reply = reqwest::Client::new()
            .get(server.url(path))
            .bearer_auth(&session.access)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let took = started.elapsed();
        assert_eq!(reply.status(), 503, "{what}");
        let body: serde_json::Value = reply.json().await.unwrap();
        assert_eq!(body["error"], "database_unavailable", "{what}: {body}");
        assert!(
            took < Duration::from_millis(4500),
            "{what}: 503 after {took:?}, past DATABASE_TIMEOUT_SECONDS=2"
        );
    }
    proxy.resume();
    wait_for_health(&server, 200, Duration::from_secs(15)).await;
    api.sessions(&session).await;
}
