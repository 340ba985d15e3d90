//! Throwaway PostgreSQL databases for tests.
//!
//! Every test gets a database of its own, so tests run in parallel (threads or
//! processes) without seeing each other's rows, and each database is dropped when its
//! [`TestDb`] is, panics included.
//!
//! - The admin connection comes from `DATABASE_URL` when it is set. Otherwise the local
//!   server is tried on the unix socket (`/var/run/postgresql`), then on
//!   `127.0.0.1:5432`, as the current OS user, database `postgres`.
//! - The schema is migrated once, into a template database named after the migrations'
//!   fingerprint (`sg_template_<hash>`), under an advisory lock so that parallel test
//!   processes build it once. Later runs reuse it. A template of another migration set
//!   (another checkout, an older commit) is dropped once it is a day old and unused, so
//!   two checkouts with different migrations can run their tests at the same time. Each test database is a `CREATE DATABASE … TEMPLATE` copy.
//! - When no server answers, the test process prints one line saying how to start one and
//!   exits, instead of failing every test with a panic.
//!
//! ```no_run
//! # async fn test() {
//! let db = portcullis_testdb::TestDb::new().await;
//! let client = db.connect().await;
//! let users: i64 = client.query_one("SELECT count(*) FROM users", &[]).await.unwrap().get(0);
//! assert_eq!(users, 0);
//! # }
//! ```

#![allow(
    clippy::missing_panics_doc,
    reason = "test support: every function panics, with a message, when PostgreSQL misbehaves"
)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

mod cluster;
mod nats;
mod proxy;
pub mod rows;

pub use cluster::{ClusterUnavailable, PrivateCluster, StopMode};
pub use nats::{NatsServer, NatsUnavailable};
pub use proxy::PostgresProxy;

/// Prefix of every per-test database name.
pub const TEST_DB_PREFIX: &str = "sg_test_";
const TEMPLATE_PREFIX: &str = "sg_template_";
/// Key of the advisory lock under which the template is built: the bytes of `"sgtmplat"`.
const TEMPLATE_LOCK_KEY: i64 = i64::from_be_bytes(*b"sgtmplat");
/// How a template's comment begins once it is migrated: `… <name> ready at <unix time>`.
const READY_MARKER: &str = "portcullis-testdb template";
/// Age after which a template of another migration set is dropped (when nobody uses it).
const STALE_TEMPLATE_SECONDS: i64 = 24 * 60 * 60;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

static ADMIN: OnceLock<Config> = OnceLock::new();
static TEMPLATE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A database that exists for one test and is dropped with this value.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    config: Config,
}

impl TestDb {
    /// A fresh database with the full schema, copied from the migrated template.
    pub async fn new() -> Self {
        let template = template().await;
        let db = Self::reserved().await;
        let admin = connect_admin().await;
        let sql: String = admin
            .query_one(
                "SELECT format('CREATE DATABASE %I TEMPLATE %I', $1::text, $2::text)",
                &[&db.name, &template],
            )
            .await
            .expect("format CREATE DATABASE")
            .get(0);
        admin
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("creating test database {}: {e}", db.name));
        db
    }

    /// A fresh database with no schema at all, for tests of migrating itself.
    pub async fn empty() -> Self {
        let db = Self::reserved().await;
        let admin = connect_admin().await;
        let sql: String = admin
            .query_one("SELECT format('CREATE DATABASE %I', $1::text)", &[&db.name])
            .await
            .expect("format CREATE DATABASE")
            .get(0);
        admin
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("creating test database {}: {e}", db.name));
        db
    }

    /// A unique database name with no database behind it yet.
    ///
    /// For tests of code that creates its own database: whoever creates it, the database
    /// is dropped with this value.
    pub async fn reserved() -> Self {
        let admin = admin_config().await;
        let name = format!(
            "{TEST_DB_PREFIX}{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            &uuid::Uuid::new_v4().simple().to_string()[..8],
        );
        let mut config = admin.clone();
        config.dbname(&name);
        Self { name, config }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connection settings for this database.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This database as a libpq key-value connection string, for a `DATABASE_URL`.
    pub fn url(&self) -> String {
        connection_string(&self.config)
    }

    /// Any settings as a libpq key-value connection string, for a `DATABASE_URL`.
    pub fn url_of(config: &Config) -> String {
        connection_string(config)
    }

    /// A new connection to this database, driven on the current runtime.
    pub async fn connect(&self) -> Client {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to test database {}: {e}", self.name));
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let Some(admin) = ADMIN.get().cloned() else {
            return;
        };
        // Drop may run inside a runtime (async tests) or outside one; a thread with its
        // own runtime works in both.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let (client, connection) = admin.connect(NoTls).await?;
                tokio::spawn(connection);
                let sql: String = client
                    .query_one(
                        "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', $1::text)",
                        &[&name],
                    )
                    .await?
                    .get(0);
                client.batch_execute(&sql).await
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!(
                "portcullis-testdb: could not drop test database {}: {e}",
                self.name
            );
        }
    }
}

/// The admin connection settings, found once per process.
pub async fn admin_config() -> Config {
    if let Some(config) = ADMIN.get() {
        return config.clone();
    }
    let config = find_admin().await;
    ADMIN.get_or_init(|| config).clone()
}

async fn find_admin() -> Config {
    let candidates = match std::env::var("DATABASE_URL") {
        Ok(url) => match url.parse::<Config>() {
            Ok(config) => vec![config],
            Err(e) => give_up(&format!(
                "DATABASE_URL is not a valid connection string: {e}"
            )),
        },
        Err(_) => local_candidates(),
    };
    let mut failures = Vec::new();
    for mut config in candidates {
        if config.get_dbname().is_none() {
            config.dbname("postgres");
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        match config.connect(NoTls).await {
            Ok(_) => return config,
            Err(e) => failures.push(format!("{}: {}", describe(&config), error_text(&e))),
        }
    }
    give_up(&format!(
        "no PostgreSQL answers ({}). Start one (Debian: `pg_ctlcluster <version> main start`, \
         or run `bash .ci/run` once), create your role if it is missing \
         (`sudo -u postgres createuser --superuser \"$USER\"`), or set DATABASE_URL to an \
         admin connection",
        failures.join("; ")
    ))
}

fn local_candidates() -> Vec<Config> {
    let user = whoami::username().unwrap_or_else(|_| "postgres".to_owned());
    let mut socket = Config::new();
    socket
        .host_path("/var/run/postgresql")
        .port(5432)
        .user(&user);
    let mut tcp = Config::new();
    tcp.host("127.0.0.1").port(5432).user(&user);
    vec![socket, tcp]
}

/// Prints `line` and ends the test process.
///
/// Straight to the standard error stream, not through `eprintln!`, which the test
/// harness captures and would lose with the process; and once, however many tests give
/// up at the same time: the first holds the lock until the process is gone.
fn give_up(line: &str) -> ! {
    use std::io::Write as _;

    static GIVING_UP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = GIVING_UP.lock();
    let _ = writeln!(std::io::stderr().lock(), "portcullis-testdb: {line}");
    std::process::exit(2);
}

fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => std::error::Error::source(e).map_or_else(|| e.to_string(), ToString::to_string),
    }
}

fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port} as {}", config.get_user().unwrap_or("?"))
}

async fn connect_admin() -> Client {
    let config = admin_config().await;
    let (client, connection) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| give_up(&format!("admin connection lost: {}", error_text(&e))));
    tokio::spawn(connection);
    client
}

/// The migrated template database, built at most once per set of migrations.
async fn template() -> String {
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("{TEMPLATE_PREFIX}{}", portcullis_migrations::fingerprint());
            build_template(&name).await;
            name
        })
        .await
        .clone()
}

async fn build_template(name: &str) {
    let ready_marker = format!("{READY_MARKER} {name} ready");
    let admin = connect_admin().await;
    admin
        .execute("SELECT pg_advisory_lock($1)", &[&TEMPLATE_LOCK_KEY])
        .await
        .expect("taking the template lock");
    let ready = admin
        .query_opt(
            "SELECT 1 FROM pg_database \
             WHERE datname = $1 AND starts_with(shobj_description(oid, 'pg_database'), $2)",
            &[&name, &ready_marker],
        )
        .await
        .expect("looking for the template")
        .is_some();
    if !ready {
        // Under the lock nobody else is building, so a template not marked ready is left
        // over from a crash and goes at once. A ready one of another migration set may be
        // in use by another checkout's tests running now: it goes only once it is a day
        // old, and never while someone is connected to it.
        let stale = admin
            .query(
                "SELECT format('DROP DATABASE IF EXISTS %I%s', datname, \
                        CASE WHEN ready THEN '' ELSE ' WITH (FORCE)' END), ready \
                 FROM (SELECT datname, starts_with(coalesce(comment, ''), $2) AS ready, \
                              substring(comment FROM ' ready at ([0-9]+)$')::bigint AS at \
                         FROM (SELECT datname, shobj_description(oid, 'pg_database') AS comment \
                                 FROM pg_database WHERE starts_with(datname, $1)) AS t) AS d \
                 WHERE NOT ready \
                    OR coalesce(at, 0) < extract(epoch FROM now())::bigint - $3",
                &[&TEMPLATE_PREFIX, &READY_MARKER, &STALE_TEMPLATE_SECONDS],
            )
            .await
            .expect("listing old templates");
        for drop in stale {
            let dropped = admin.batch_execute(drop.get::<_, &str>(0)).await;
            if let Err(e) = dropped
                && !drop.get::<_, bool>(1)
            {
                panic!("dropping a half-built template: {e}");
            }
        }
        let create: String = admin
            .query_one("SELECT format('CREATE DATABASE %I', $1::text)", &[&name])
            .await
            .expect("formatting CREATE DATABASE")
            .get(0);
        admin
            .batch_execute(&create)
            .await
            .expect("creating the template");
        let mut config = admin_config().await;
        config.dbname(name);
        let (mut client, connection) = config
            .connect(NoTls)
            .await
            .expect("connecting to the template");
        let driver = tokio::spawn(connection);
        portcullis_migrations::migrate(&mut client)
            .await
            .unwrap_or_else(|e| panic!("migrating the template database: {e}"));
        drop(client);
        // The copy fails while anyone is connected to the template: wait for our own
        // connection to close before declaring it ready.
        let _ = driver.await;
        let comment: String = admin
            .query_one(
                "SELECT format('COMMENT ON DATABASE %I IS %L', $1::text, \
                        $2::text || ' at ' || extract(epoch FROM now())::bigint)",
                &[&name, &ready_marker],
            )
            .await
            .expect("formatting COMMENT ON DATABASE")
            .get(0);
        admin
            .batch_execute(&comment)
            .await
            .expect("marking the template ready");
    }
    admin
        .execute("SELECT pg_advisory_unlock($1)", &[&TEMPLATE_LOCK_KEY])
        .await
        .expect("releasing the template lock");
}

/// Renders settings as a libpq key-value string (`host=… port=… user=… dbname=…`).
fn connection_string(config: &Config) -> String {
    fn quoted(value: &str) -> String {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            Host::Tcp(host) => host.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let port_list: Vec<String> = config.get_ports().iter().map(ToString::to_string).collect();
    let mut parts = Vec::new();
    if !hosts.is_empty() {
        parts.push(format!("host={}", quoted(&hosts.join(","))));
    }
    if !port_list.is_empty() {
        parts.push(format!("port={}", quoted(&port_list.join(","))));
    }
    if let Some(user) = config.get_user() {
        parts.push(format!("user={}", quoted(user)));
    }
    if let Some(password) = config.get_password() {
        parts.push(format!(
            "password={}",
            quoted(&String::from_utf8_lossy(password))
        ));
    }
    if let Some(dbname) = config.get_dbname() {
        parts.push(format!("dbname={}", quoted(dbname)));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_string_round_trips() {
        let mut config = Config::new();
        config
            .host_path("/var/run/postgresql")
            .port(5432)
            .user("o'neil")
            .password("pa ss\\word")
            .dbname("sg_test_1");
        let parsed: Config = connection_string(&config).parse().expect("parses");
        assert_eq!(parsed.get_hosts(), config.get_hosts());
        assert_eq!(parsed.get_ports(), config.get_ports());
        assert_eq!(parsed.get_user(), Some("o'neil"));
        assert_eq!(parsed.get_password(), Some(&b"pa ss\\word"[..]));
        assert_eq!(parsed.get_dbname(), Some("sg_test_1"));
    }
}
