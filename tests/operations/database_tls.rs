//! `sslmode` in `DATABASE_URL`, against the local PostgreSQL over TCP with `ssl = on`
//! (as Debian's package sets it up, with its self-signed certificate): what each mode
//! does to the server process's connections and to the layer's own pool and listener,
//! seen from PostgreSQL's side in `pg_stat_ssl`.

use std::net::SocketAddr;
use std::time::Duration;

use portcullis::postgres::{DatabaseConfig, SslMode};
use portcullis::{LISTENER_APPLICATION_NAME, PostgresLiveness};
use portcullis_e2e::{ServerProcess, free_port, server_command};
use portcullis_testdb::TestDb;
use tokio_postgres::Client;

/// A CA that signed nothing PostgreSQL presents.
const UNRELATED_CA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../middleware/tests/certs/unrelated-ca.pem"
);

/// `db` over TCP on 127.0.0.1, with `extra` parameters, as a key-value string.
fn tcp_url(db: &TestDb, extra: &str) -> String {
    let port = db.config().get_ports().first().copied().unwrap_or(5432);
    let user = db.config().get_user().expect("the harness names a user");
    format!(
        "host=127.0.0.1 port={port} user='{user}' dbname='{}' {extra}",
        db.name()
    )
}

/// Panics with a clear line unless the server offers TLS; returns its certificate file.
async fn server_certificate(client: &Client) -> String {
    let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    assert_eq!(
        ssl, "on",
        "these tests need PostgreSQL with ssl = on (Debian's package turns it on)"
    );
    client
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .unwrap()
        .get(0)
}

/// Whether each backend of `db` named `application` is encrypted, by name.
async fn encryption(client: &Client, db: &TestDb, applications: &[&str]) -> Vec<(String, bool)> {
    let applications: Vec<String> = applications.iter().map(|&a| a.to_owned()).collect();
    client
        .query(
            "SELECT a.application_name, s.ssl FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = $1 AND a.application_name = ANY($2) ORDER BY 1",
            &[&db.name(), &applications],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test]
async fn require_encrypts_every_server_connection_and_disable_none() {
    let db = TestDb::new().await;
    let admin = db.connect().await;
    server_certificate(&admin).await;
    for (mode, encrypted) in [("require", true), ("disable", false)] {
        let mut server = ServerProcess::start(&tcp_url(&db, &format!("sslmode={mode}")), &[]).await;
        assert_eq!(
            server.get("/health").await.status(),
            200,
            "{}",
            server.log()
        );
        let seen = encryption(
            &admin,
            &db,
            &["portcullis-server", LISTENER_APPLICATION_NAME],
        )
        .await;
        let names: Vec<&str> = seen.iter().map(|(name, _)| name.as_str()).collect();
        assert!(
            names.contains(&"portcullis-server") && names.contains(&LISTENER_APPLICATION_NAME),
            "sslmode={mode}: the pool and the listener are connected: {seen:?}"
        );
        assert!(
            seen.iter().all(|(_, ssl)| *ssl == encrypted),
            "sslmode={mode}: {seen:?}"
        );
        server.terminate(Duration::from_secs(20)).await;
        gone(
            &admin,
            &db,
            &["portcullis-server", LISTENER_APPLICATION_NAME],
        )
        .await;
    }
}

/// Waits until no backend of `db` is named any of `applications`.
async fn gone(client: &Client, db: &TestDb, applications: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !encryption(client, db, applications).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "connections of {applications:?} left open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn verify_full_with_a_wrong_ca_refuses_to_start_with_one_clear_message() {
    let db = TestDb::new().await;
    server_certificate(&db.connect().await).await;
    let url = tcp_url(
        &db,
        &format!("sslmode=verify-full sslrootcert='{UNRELATED_CA}'"),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let keys = tempfile::tempdir().unwrap();
    let command = server_command(
        &[],
        &[
            ("DATABASE_URL", &url),
            ("BIND_ADDR", &addr.to_string()),
            ("DEV_KEYS_DIR", &keys.path().display().to_string()),
        ],
    );
    let mut server = ServerProcess::spawn(command, addr);
    let status = server.wait_for_exit(Duration::from_secs(30)).await;
    let log = server.log();
    assert!(!status.success(), "it started:\n{log}");
    let said: Vec<&str> = log
        .lines()
        .filter(|line| line.starts_with("portcullis-server: "))
        .collect();
    assert_eq!(said.len(), 1, "one message:\n{log}");
    let message = said[0];
    for part in [
        "cannot connect to PostgreSQL",
        "127.0.0.1",
        "sslmode verify-full",
        "not signed by a trusted CA",
        UNRELATED_CA,
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
}

/// The layer on its own (its own pool, its listener) in each mode, and what the
/// verifying modes check of the local server's self-signed certificate.
#[tokio::test]
async fn the_layers_pool_and_listener_follow_the_sslmode() {
    let db = TestDb::new().await;
    let admin = db.connect().await;
    let certificate = server_certificate(&admin).await;
    let application = "sg-tls-test";
    for (extra, mode, encrypted) in [
        ("sslmode=disable", SslMode::Disable, false),
        ("", SslMode::Prefer, true),
        ("sslmode=require", SslMode::Require, true),
        // The chain is checked, the name (127.0.0.1 is not in the certificate) is not.
        (
            &*format!("sslmode=verify-ca sslrootcert='{certificate}'"),
            SslMode::VerifyCa,
            true,
        ),
    ] {
        let database: DatabaseConfig =
            tcp_url(&db, &format!("application_name={application} {extra}"))
                .parse()
                .unwrap();
        assert_eq!(database.ssl_mode(), mode);
        let liveness = PostgresLiveness::builder(database).start().unwrap();
        liveness
            .ready()
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let seen = encryption(&admin, &db, &[application, LISTENER_APPLICATION_NAME]).await;
        assert_eq!(
            seen.len(),
            2,
            "{mode}: one pooled connection and the listener: {seen:?}"
        );
        assert!(
            seen.iter().all(|(_, ssl)| *ssl == encrypted),
            "{mode}: {seen:?}"
        );
        drop(liveness);
        // Its connections close with it.
        gone(&admin, &db, &[application, LISTENER_APPLICATION_NAME]).await;
    }

    // verify-full checks the name too: 127.0.0.1 is not what the certificate names.
    let database: DatabaseConfig = tcp_url(
        &db,
        &format!("sslmode=verify-full sslrootcert='{certificate}'"),
    )
    .parse()
    .unwrap();
    let error = database
        .connect()
        .await
        .err()
        .expect("verify-full connected");
    let text = error_text(&error);
    assert!(text.contains("not valid for name"), "{text}");
}

fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
