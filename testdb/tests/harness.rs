//! The harness itself: isolation, clean-up, and the one-line failure without a server.

use std::process::Command;

use portcullis_testdb::{TestDb, admin_config};
use tokio_postgres::NoTls;

async fn exists(name: &str) -> bool {
    let (client, connection) = admin_config().await.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn each_test_database_is_its_own_and_is_dropped_with_its_value() {
    let first = TestDb::new().await;
    let second = TestDb::new().await;
    assert_ne!(first.name(), second.name());

    // Rows written in one are not seen in the other.
    first
        .connect()
        .await
        .execute(
            "INSERT INTO users (email, password_hash) VALUES ('a@example.com', 'x')",
            &[],
        )
        .await
        .unwrap();
    let seen: i64 = second
        .connect()
        .await
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 0);

    let name = first.name().to_owned();
    // Dropped even with a connection still open to it.
    let _open = first.connect().await;
    drop(first);
    assert!(!exists(&name).await, "{name} was dropped");
    assert!(exists(second.name()).await);
}

#[tokio::test]
async fn a_reserved_name_is_dropped_whoever_created_it() {
    let reserved = TestDb::reserved().await;
    let name = reserved.name().to_owned();
    assert!(!exists(&name).await);
    let (client, connection) = admin_config().await.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    drop(reserved);
    assert!(!exists(&name).await);
}

#[tokio::test]
async fn empty_databases_have_no_schema() {
    let db = TestDb::empty().await;
    let err = db
        .connect()
        .await
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .expect_err("no users table before migrating");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
    );
}

/// Run by the test below in a child process; a no-op in a normal run.
#[tokio::test]
async fn probe_connect() {
    if std::env::var_os("SESSION_TESTDB_PROBE").is_some() {
        let _db = TestDb::new().await;
    }
}

#[test]
fn without_a_server_the_tests_fail_with_one_clear_line() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "probe_connect", "--nocapture"])
        .env("SESSION_TESTDB_PROBE", "1")
        .env(
            "DATABASE_URL",
            format!("host=127.0.0.1 port={closed_port} user=nobody"),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("portcullis-testdb:"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("no PostgreSQL answers"), "{stderr}");
    assert!(lines[0].contains("pg_ctlcluster"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A broker of the test's own: `JetStream` on, the same port after a restart, gone after a
/// stop.
#[tokio::test]
async fn a_nats_server_restarts_on_its_port_with_jetstream() {
    use portcullis_testdb::NatsServer;
    use tokio::io::AsyncReadExt as _;

    async fn greeting(port: u16) -> std::io::Result<String> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut buffer = vec![0; 4096];
        let read = stream.read(&mut buffer).await?;
        Ok(String::from_utf8_lossy(&buffer[..read]).into_owned())
    }

    let mut nats = NatsServer::start().await.expect("nats-server is installed");
    let port = nats.port();
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
    assert!(greeting(port).await.unwrap().contains("\"jetstream\":true"));
    nats.stop();
    assert!(greeting(port).await.is_err(), "stopped");
    nats.restart().await.unwrap();
    assert!(greeting(port).await.unwrap().starts_with("INFO "));
}
