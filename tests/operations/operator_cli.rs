//! The operator's command line, `portcullis-server sessions …`, run as the real binary
//! against the database of a running server process: it lists a user's sessions, and
//! revokes one of them, all of a user's, or every user's, through the same revocation
//! path as the routes, so the running server refuses the revoked access tokens within a
//! moment; each revocation is recorded as a security event; an unknown email, a session
//! of someone else and bad arguments change nothing.

use std::process::Output;
use std::time::{Duration, Instant};

use portcullis_e2e::ServerProcess;
use portcullis_e2e::api::{Api, Session, assert_refused};
use portcullis_e2e::server_command;
use portcullis_testdb::TestDb;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const ADA: &str = "ada@example.com";
const BOB: &str = "bob@example.com";
const FIREFOX_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0";
/// How long a running server may take to hear of a revocation: PostgreSQL notifies it
/// within milliseconds; this only bounds the wait of a failing test.
const NOTICE_LIMIT: Duration = Duration::from_secs(5);

async fn start() -> (TestDb, ServerProcess) {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    (db, server)
}

/// Runs `portcullis-server` with `args` on `db`, as an operator would.
async fn operator(db: &TestDb, args: &[&str]) -> Output {
    let mut command = server_command(args, &[("DATABASE_URL", &db.url())]);
    tokio::task::spawn_blocking(move || command.output().expect("running portcullis-server"))
        .await
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn assert_succeeded(output: &Output) {
    assert!(
        output.status.success(),
        "{:?}\nstdout: {}\nstderr: {}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

/// Waits, a few seconds at most, until the server refuses `session`'s access token.
async fn refused_soon(api: &Api<'_>, session: &Session) {
    let started = Instant::now();
    loop {
        let reply = api.me(&session.access).await;
        if reply.status == 401 {
            return;
        }
        reply.expect(200);
        assert!(
            started.elapsed() < NOTICE_LIMIT,
            "session {} still accepted after {NOTICE_LIMIT:?}",
            session.id
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every `operator_revoked_sessions` event: its user, session and detail.
async fn operator_events(db: &TestDb) -> Vec<(Option<String>, Option<String>, Value)> {
    db.connect()
        .await
        .query(
            "SELECT user_id::text, session_id::text, detail FROM security_events \
             WHERE kind = 'operator_revoked_sessions' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

/// How many sessions are revoked, of anyone, for any reason.
async fn revoked_count(db: &TestDb) -> i64 {
    db.connect()
        .await
        .query_one(
            "SELECT count(*) FROM sessions WHERE revoked_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn list_shows_every_session_of_the_user_with_its_state_and_device_but_no_token() {
    let (db, server) = start().await;
    let api = Api::new(&server);
    api.register(ADA, PASSWORD).await;
    let laptop = api
        .login_session_as(ADA, PASSWORD, Some("Ada's laptop"), Some(FIREFOX_LINUX))
        .await;
    let gone = api.login_session(ADA, PASSWORD).await;
    api.bearer(reqwest::Method::POST, "/auth/logout", &gone.access)
        .await
        .expect(204);
    let bob = api.signed_up(BOB, PASSWORD).await;
    // The label the routes show for the laptop, parsed from its user agent.
    let label = api
        .sessions(&laptop)
        .await
        .iter()
        .find(|s| s["id"] == laptop.id.as_str())
        .and_then(|s| s["device_label"].as_str().map(str::to_owned))
        .expect("the laptop's label");

    let output = operator(&db, &["sessions", "list", "--email", "Ada@Example.com"]).await;

    assert_succeeded(&output);
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one line per session: {text}");
    let laptop_line = lines
        .iter()
        .find(|line| line.starts_with(&laptop.id))
        .unwrap_or_else(|| panic!("{} not listed: {text}", laptop.id));
    assert!(laptop_line.contains(" live "), "{laptop_line}");
    assert!(
        laptop_line.contains(r#"name="Ada's laptop""#),
        "{laptop_line}"
    );
    assert!(
        laptop_line.contains(&format!("label={label:?}")),
        "{laptop_line}"
    );
    assert!(laptop_line.contains("ip=127.0.0.1"), "{laptop_line}");
    assert!(laptop_line.contains("created=20"), "{laptop_line}");
    assert!(laptop_line.contains("last_used=20"), "{laptop_line}");
    let gone_line = lines
        .iter()
        .find(|line| line.starts_with(&gone.id))
        .unwrap();
    assert!(gone_line.contains("revoked (logout)"), "{gone_line}");
    for secret in [&laptop.access, &laptop.refresh, &gone.refresh] {
        assert!(
            !text.contains(secret.as_str()),
            "a token is printed: {text}"
        );
    }
    assert!(
        !text.contains(bob["session_id"].as_str().unwrap()),
        "{text}"
    );

    let output = operator(&db, &["sessions", "list", "--email", ADA, "--json"]).await;
    assert_succeeded(&output);
    let listed: Value = serde_json::from_str(&stdout(&output)).expect("JSON");
    let listed = listed.as_array().expect("an array");
    assert_eq!(listed.len(), 2);
    let laptop_json = listed
        .iter()
        .find(|s| s["id"] == laptop.id.as_str())
        .unwrap();
    assert_eq!(laptop_json["state"], "live");
    assert_eq!(laptop_json["revoked_reason"], Value::Null);
    assert_eq!(laptop_json["device_name"], "Ada's laptop");
    assert_eq!(laptop_json["device_label"], label.as_str());
    let gone_json = listed.iter().find(|s| s["id"] == gone.id.as_str()).unwrap();
    assert_eq!(gone_json["state"], "revoked");
    assert_eq!(gone_json["revoked_reason"], "logout");
}

#[tokio::test]
async fn revoking_one_session_ends_it_on_the_running_server_and_leaves_the_others() {
    let (db, server) = start().await;
    let api = Api::new(&server);
    let ada = api.register(ADA, PASSWORD).await;
    let target = api.login_session(ADA, PASSWORD).await;
    let other = api.login_session(ADA, PASSWORD).await;
    api.me(&target.access).await.expect(200);

    let output = operator(
        &db,
        &[
            "sessions",
            "revoke",
            "--email",
            ADA,
            "--session",
            &target.id,
        ],
    )
    .await;

    assert_succeeded(&output);
    assert!(
        stdout(&output).contains("revoked 1 live session"),
        "{}",
        stdout(&output)
    );
    refused_soon(&api, &target).await;
    assert_refused(&api.refresh(&target.refresh).await);
    api.me(&other.access).await.expect(200);
    assert_eq!(
        operator_events(&db).await,
        [(
            Some(ada),
            Some(target.id.clone()),
            json!({"scope": "session", "reason": "operator", "count": 1})
        )]
    );
    let listed = stdout(&operator(&db, &["sessions", "list", "--email", ADA]).await);
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with(&target.id) && line.contains("revoked (operator)")),
        "{listed}"
    );

    // Again: it has ended already, so nothing changes and nothing more is recorded.
    let again = operator(
        &db,
        &[
            "sessions",
            "revoke",
            "--email",
            ADA,
            "--session",
            &target.id,
        ],
    )
    .await;
    assert_succeeded(&again);
    assert!(
        stdout(&again).contains("already ended"),
        "{}",
        stdout(&again)
    );
    assert_eq!(operator_events(&db).await.len(), 1);
}

#[tokio::test]
async fn revoking_a_user_ends_all_of_that_users_sessions_only() {
    let (db, server) = start().await;
    let api = Api::new(&server);
    let ada = api.register(ADA, PASSWORD).await;
    let first = api.login_session(ADA, PASSWORD).await;
    let second = api.login_session(ADA, PASSWORD).await;
    let bob = Session::from_pair(&api.signed_up(BOB, PASSWORD).await);

    let output = operator(&db, &["sessions", "revoke", "--email", ADA]).await;

    assert_succeeded(&output);
    assert!(
        stdout(&output).contains("revoked 2 live sessions of ada@example.com"),
        "{}",
        stdout(&output)
    );
    refused_soon(&api, &first).await;
    refused_soon(&api, &second).await;
    assert_refused(&api.refresh(&second.refresh).await);
    api.me(&bob.access).await.expect(200);
    assert_eq!(
        operator_events(&db).await,
        [(
            Some(ada),
            None,
            json!({"scope": "user", "reason": "operator", "count": 2})
        )]
    );
}

#[tokio::test]
async fn revoking_all_users_signs_everyone_out() {
    let (db, server) = start().await;
    let api = Api::new(&server);
    api.register(ADA, PASSWORD).await;
    let ada = api.login_session(ADA, PASSWORD).await;
    let ada_again = api.login_session(ADA, PASSWORD).await;
    let bob = Session::from_pair(&api.signed_up(BOB, PASSWORD).await);

    let output = operator(&db, &["sessions", "revoke", "--all-users"]).await;

    assert_succeeded(&output);
    assert!(
        stdout(&output).contains("revoked 3 live sessions of all users"),
        "{}",
        stdout(&output)
    );
    for session in [&ada, &ada_again, &bob] {
        refused_soon(&api, session).await;
        assert_refused(&api.refresh(&session.refresh).await);
    }
    assert_eq!(
        operator_events(&db).await,
        [(
            None,
            None,
            json!({"scope": "all_users", "reason": "operator", "count": 3})
        )]
    );
    // A new login after the sign-out works as usual.
    let after = api.login_session(BOB, PASSWORD).await;
    api.me(&after.access).await.expect(200);
}

#[tokio::test]
async fn an_unknown_email_or_a_foreign_session_fails_clearly_and_changes_nothing() {
    let (db, server) = start().await;
    let api = Api::new(&server);
    api.register(ADA, PASSWORD).await;
    let ada = api.login_session(ADA, PASSWORD).await;
    let bob = Session::from_pair(&api.signed_up(BOB, PASSWORD).await);

    let unknown = operator(&db, &["sessions", "revoke", "--email", "eve@example.com"]).await;
    assert_eq!(unknown.status.code(), Some(1), "{}", stderr(&unknown));
    assert!(
        stderr(&unknown).contains("no account has the email eve@example.com; nothing changed"),
        "{}",
        stderr(&unknown)
    );
    let listed = operator(&db, &["sessions", "list", "--email", "eve@example.com"]).await;
    assert_eq!(listed.status.code(), Some(1));
    assert!(stderr(&listed).contains("no account has the email"));

    let foreign = operator(
        &db,
        &["sessions", "revoke", "--email", ADA, "--session", &bob.id],
    )
    .await;
    assert_eq!(foreign.status.code(), Some(1), "{}", stderr(&foreign));
    assert!(
        stderr(&foreign).contains(&format!(
            "the account ada@example.com has no session {}; nothing changed",
            bob.id
        )),
        "{}",
        stderr(&foreign)
    );

    assert_eq!(revoked_count(&db).await, 0);
    assert!(operator_events(&db).await.is_empty());
    api.me(&ada.access).await.expect(200);
    api.me(&bob.access).await.expect(200);
}

#[tokio::test]
async fn bad_arguments_print_the_usage_and_exit_2_without_touching_the_database() {
    let (db, server) = start().await;
    let api = Api::new(&server);
    let ada = Session::from_pair(&api.signed_up(ADA, PASSWORD).await);
    for args in [
        &["sessions"][..],
        &["sessions", "list"],
        &["sessions", "revoke"],
        &["sessions", "revoke", "--session", &ada.id],
        &["sessions", "revoke", "--all-users", "--email", ADA],
        &["sessions", "revoke", "--email", "not an email"],
        &["sessions", "revoke", "--email", ADA, "--session", "42"],
        &["sessions", "revoke", "--email", ADA, "--force"],
    ] {
        let output = operator(&db, args).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("Usage: portcullis-server"),
            "{args:?}"
        );
        assert!(stdout(&output).is_empty(), "{args:?}: {}", stdout(&output));
    }
    assert_eq!(revoked_count(&db).await, 0);
    api.me(&ada.access).await.expect(200);
}

/// Issue 22, item 13: an argument that is not UTF-8 (a Latin-1 file name, a mangled
/// paste) is a usage error, exit 2, never a panic (exit 101).
#[tokio::test]
async fn a_non_utf8_argument_is_a_usage_error_not_a_panic() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt as _;

    let db = portcullis_testdb::TestDb::new().await;
    let latin1 = OsStr::from_bytes(b"ada\xe9@example.com");
    for args in [
        vec![
            OsStr::new("sessions"),
            OsStr::new("list"),
            OsStr::new("--email"),
            latin1,
        ],
        vec![OsStr::from_bytes(b"sessi\xf6ns")],
        vec![OsStr::new("sessions"), OsStr::from_bytes(b"--\xff")],
    ] {
        let mut command = server_command(&[], &[("DATABASE_URL", &db.url())]);
        command.args(&args);
        let output = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
        assert!(
            stderr(&output).contains("Usage: portcullis-server"),
            "{}",
            stderr(&output)
        );
    }
}
