//! A PostgreSQL cluster of one test's own, to stop and start at will.
//!
//! The server every test shares must never go down, so a test that needs a real database
//! restart (not just severed connections, which [`PostgresProxy`](crate::PostgresProxy)
//! stages) builds a throwaway cluster: `initdb` into a temporary folder, trust
//! authentication, listening on `127.0.0.1` and a free port, its socket in that folder.
//! Dropping it stops it (`pg_ctl -m immediate`) and deletes the folder.
//!
//! - The binaries are the newest `/usr/lib/postgresql/<version>/bin` (Debian's layout),
//!   else the folder `pg_config --bindir` names.
//! - `initdb` refuses to run as root: as root, every PostgreSQL command runs as the
//!   `postgres` OS user through `runuser`, and the folder belongs to that user.
//! - Clusters left behind by test processes that were killed (no `Drop`) are stopped and
//!   deleted by the next [`PrivateCluster::start`].
//! - The defaults favour speed over durability (`fsync` and `full_page_writes` off, small
//!   shared buffers, 200 connections). [`PrivateCluster::start_with`] adds settings of
//!   the caller's after them, which override them: a benchmark can ask for a real
//!   server's durability, or more connections.
//!
//! ```no_run
//! # async fn test() {
//! use portcullis_testdb::{PrivateCluster, StopMode};
//!
//! let mut cluster = PrivateCluster::start().await.expect("initdb works here");
//! let config = cluster.create_database("app").await; // migrated
//! cluster.stop(StopMode::Fast).await;
//! cluster.restart().await;
//! # let _ = config;
//! # }
//! ```

use std::fmt;
use std::net::TcpListener;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tokio_postgres::{Config, NoTls};

/// Prefix of every cluster folder in the temporary directory; the owning process id
/// follows it, so that leftovers of dead processes can be recognised.
const FOLDER_PREFIX: &str = "sg_cluster_";
/// The bootstrap superuser of every private cluster.
const SUPERUSER: &str = "postgres";
/// How long `pg_ctl` may wait for a start or a stop.
const PG_CTL_WAIT_SECONDS: &str = "60";
/// Fresh ports tried when the first start finds its port taken.
const START_ATTEMPTS: usize = 3;

/// How [`PrivateCluster::stop`] stops the server (`pg_ctl -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Backends are terminated, open transactions rolled back, a checkpoint written.
    Fast,
    /// Every process is killed at once, as in a crash; the next start recovers from WAL.
    Immediate,
}

impl StopMode {
    fn flag(self) -> &'static str {
        match self {
            Self::Fast => "fast",
            Self::Immediate => "immediate",
        }
    }
}

/// Why a private cluster cannot be built on this machine.
#[derive(Debug, Clone)]
pub struct ClusterUnavailable(String);

impl fmt::Display for ClusterUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no private PostgreSQL cluster: {}", self.0)
    }
}

impl std::error::Error for ClusterUnavailable {}

/// A throwaway PostgreSQL cluster on `127.0.0.1`, stopped and deleted when dropped.
#[derive(Debug)]
pub struct PrivateCluster {
    control: Control,
    running: bool,
}

/// Where the PostgreSQL binaries are and as whom they run.
#[derive(Debug, Clone)]
struct Tools {
    bin: PathBuf,
    /// Run through `runuser -u postgres --` (we are root).
    as_postgres: bool,
}

impl Tools {
    fn find() -> Result<Self, ClusterUnavailable> {
        let bin = newest_debian_bin_dir()
            .or_else(pg_config_bin_dir)
            .ok_or_else(|| {
                ClusterUnavailable(
                    "no initdb under /usr/lib/postgresql/*/bin nor in `pg_config --bindir`"
                        .to_owned(),
                )
            })?;
        let as_postgres = whoami::username().is_ok_and(|user| user == "root");
        if as_postgres && which("runuser").is_none() {
            return Err(ClusterUnavailable(
                "running as root, and there is no runuser to drop to the postgres user".into(),
            ));
        }
        Ok(Self { bin, as_postgres })
    }

    /// Runs `tool args…` (as the `postgres` OS user when we are root) and returns its
    /// output, or a message quoting it.
    fn run(&self, tool: &str, args: &[&str]) -> Result<Output, String> {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", SUPERUSER, "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        let output = command
            .args(args)
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| format!("running {tool}: {e}"))?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(format!(
                "{tool} {args:?} failed with {}: {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
            ))
        }
    }
}

/// The folder, port and tools of one cluster: what `pg_ctl` needs, cheap to move to
/// the blocking pool.
#[derive(Debug, Clone)]
struct Control {
    tools: Tools,
    root: PathBuf,
    port: u16,
}

impl Control {
    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// `initdb`, then the defaults and `extra` (`name`, `value`) appended to
    /// `postgresql.conf`, in that order: the last line naming a setting wins.
    fn init(&self, extra: &[(String, String)]) -> Result<(), String> {
        if self.tools.as_postgres {
            let status = Command::new("chown")
                .arg(format!("{SUPERUSER}:"))
                .arg(&self.root)
                .status()
                .map_err(|e| format!("running chown: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "chown {SUPERUSER} {}: {status}",
                    self.root.display()
                ));
            }
        }
        let data = self.data_dir();
        self.tools.run(
            "initdb",
            &[
                "--pgdata",
                path_str(&data)?,
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            ],
        )?;
        // Small and fast: nothing here needs to survive a power cut.
        let mut settings = format!(
            "\n# portcullis-testdb private cluster\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             full_page_writes = off\n\
             shared_buffers = '32MB'\n\
             max_connections = 200\n",
            self.root.display()
        );
        if !extra.is_empty() {
            settings.push_str("# the caller's settings (PrivateCluster::start_with)\n");
        }
        for (name, value) in extra {
            settings.push_str(&conf_line(name, value));
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .map_err(|e| format!("reading {}: {e}", conf.display()))?;
        text.push_str(&settings);
        std::fs::write(&conf, text).map_err(|e| format!("writing {}: {e}", conf.display()))
    }

    fn start(&self) -> Result<(), String> {
        let data = self.data_dir();
        let log = self.log_file();
        let port = format!("-p {}", self.port);
        self.tools
            .run(
                "pg_ctl",
                &[
                    "start",
                    "--pgdata",
                    path_str(&data)?,
                    "--log",
                    path_str(&log)?,
                    "--wait",
                    "--timeout",
                    PG_CTL_WAIT_SECONDS,
                    "-o",
                    &port,
                ],
            )
            .map(drop)
            .map_err(|e| format!("{e}\nserver log:\n{}", self.log_tail()))
    }

    fn stop(&self, mode: StopMode) -> Result<(), String> {
        let data = self.data_dir();
        self.tools
            .run(
                "pg_ctl",
                &[
                    "stop",
                    "--pgdata",
                    path_str(&data)?,
                    "--mode",
                    mode.flag(),
                    "--wait",
                    "--timeout",
                    PG_CTL_WAIT_SECONDS,
                ],
            )
            .map(drop)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl PrivateCluster {
    /// Creates a cluster in a new temporary folder and starts it on a free port.
    ///
    /// Takes a couple of seconds (`initdb`). Fails when this machine has no PostgreSQL
    /// binaries or cannot run them; tests may then fall back to
    /// [`PostgresProxy`](crate::PostgresProxy).
    pub async fn start() -> Result<Self, ClusterUnavailable> {
        Self::start_with(&[]).await
    }

    /// Like [`start`](Self::start), with `settings` (`name`, `value`) written into
    /// `postgresql.conf` after the defaults, which they override; later pairs override
    /// earlier ones. A value is written quoted, as `ALTER SYSTEM` writes it, so
    /// `("max_connections", "300")` and `("shared_buffers", "128MB")` both work.
    ///
    /// ```no_run
    /// # async fn test() {
    /// use portcullis_testdb::PrivateCluster;
    ///
    /// let durable = PrivateCluster::start_with(&[("fsync", "on"), ("max_connections", "300")])
    ///     .await
    ///     .expect("initdb works here");
    /// # let _ = durable;
    /// # }
    /// ```
    ///
    /// A setting PostgreSQL does not know, or a value it rejects, makes the start fail
    /// (the error quotes the server's log).
    ///
    /// # Panics
    ///
    /// When a name is not a parameter name (letters, digits, `_`, `.`) or a value holds
    /// a line break: either would break the file rather than name a setting.
    pub async fn start_with(settings: &[(&str, &str)]) -> Result<Self, ClusterUnavailable> {
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|&(name, value)| {
                assert!(
                    !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'),
                    "{name:?} is not a PostgreSQL parameter name"
                );
                assert!(
                    !value.contains(['\n', '\r']),
                    "the value of {name} holds a line break"
                );
                (name.to_owned(), value.to_owned())
            })
            .collect();
        tokio::task::spawn_blocking(move || Self::start_blocking(&settings))
            .await
            .map_err(|e| ClusterUnavailable(format!("the set-up thread failed: {e}")))?
    }

    fn start_blocking(settings: &[(String, String)]) -> Result<Self, ClusterUnavailable> {
        let tools = Tools::find()?;
        remove_leftovers(&tools);
        let root = std::env::temp_dir().join(format!(
            "{FOLDER_PREFIX}{}_{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&root)
            .map_err(|e| ClusterUnavailable(format!("creating {}: {e}", root.display())))?;
        // From here on, dropping the value deletes the folder, whatever fails next.
        let mut cluster = Self {
            control: Control {
                tools,
                root,
                port: 0,
            },
            running: false,
        };
        cluster.control.init(settings).map_err(ClusterUnavailable)?;
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            cluster.control.port = free_port().map_err(ClusterUnavailable)?;
            // Someone may take the port between our probe and the server's bind: retry.
            match cluster.control.start() {
                Ok(()) => {
                    cluster.running = true;
                    return Ok(cluster);
                }
                Err(e) => failures.push(e),
            }
        }
        Err(ClusterUnavailable(failures.join("; ")))
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.control.log_tail()
    }

    /// The TCP port the cluster listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.control.port
    }

    /// Whether the server is running (as far as this value knows).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Superuser settings for the database `dbname` of this cluster.
    pub fn config(&self, dbname: &str) -> Config {
        let mut config = Config::new();
        config
            .host("127.0.0.1")
            .port(self.control.port)
            .user(SUPERUSER)
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(5));
        config
    }

    /// Creates the database `name`, applies the project's migrations to it and returns
    /// its connection settings.
    pub async fn create_database(&self, name: &str) -> Config {
        let admin = self.connect(&self.config("postgres")).await;
        let create: String = admin
            .query_one("SELECT format('CREATE DATABASE %I', $1::text)", &[&name])
            .await
            .expect("formatting CREATE DATABASE")
            .get(0);
        admin
            .batch_execute(&create)
            .await
            .unwrap_or_else(|e| panic!("creating {name} in the private cluster: {e}"));
        let config = self.config(name);
        let mut client = self.connect(&config).await;
        portcullis_migrations::migrate(&mut client)
            .await
            .unwrap_or_else(|e| panic!("migrating {name} in the private cluster: {e}"));
        config
    }

    /// A new connection with `config`, driven on the current runtime.
    pub async fn connect(&self, config: &Config) -> tokio_postgres::Client {
        let (client, connection) = config.connect(NoTls).await.unwrap_or_else(|e| {
            panic!(
                "connecting to the private cluster on port {}: {e}\n{}",
                self.control.port,
                self.log_tail()
            )
        });
        tokio::spawn(connection);
        client
    }

    /// Stops the server; returns once every server process has exited.
    pub async fn stop(&mut self, mode: StopMode) {
        let control = self.control.clone();
        tokio::task::spawn_blocking(move || control.stop(mode))
            .await
            .expect("the pg_ctl thread panicked")
            .unwrap_or_else(|e| panic!("stopping the private cluster: {e}"));
        self.running = false;
    }

    /// Starts the stopped server again on the same port; returns once it accepts
    /// connections.
    pub async fn restart(&mut self) {
        let control = self.control.clone();
        tokio::task::spawn_blocking(move || control.start())
            .await
            .expect("the pg_ctl thread panicked")
            .unwrap_or_else(|e| panic!("starting the private cluster again: {e}"));
        self.running = true;
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self.control.stop(StopMode::Immediate);
        }
        let _ = std::fs::remove_dir_all(&self.control.root);
    }
}

/// One `postgresql.conf` line setting `name` to `value`, quoted (a quote doubled).
fn conf_line(name: &str, value: &str) -> String {
    format!("{name} = '{}'\n", value.replace('\'', "''"))
}

fn path_str(path: &Path) -> Result<&str, String> {
    path.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("asking the OS for a free port: {e}"))
}

/// The `bin` folder of the newest `/usr/lib/postgresql/<major>` holding `initdb`.
fn newest_debian_bin_dir() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major)
        .map(|(_, bin)| bin)
}

fn pg_config_bin_dir() -> Option<PathBuf> {
    let output = Command::new("pg_config").arg("--bindir").output().ok()?;
    let bin = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
    bin.join("initdb").exists().then_some(bin)
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.exists())
    })
}

/// Stops and deletes clusters whose owning test process no longer exists.
fn remove_leftovers(tools: &Tools) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|name| name.strip_prefix(FOLDER_PREFIX))
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let data = entry.path().join("data");
        if let Some(data) = data.to_str() {
            let _ = tools.run(
                "pg_ctl",
                &["stop", "--pgdata", data, "--mode", "immediate", "--wait"],
            );
        }
        let _ = std::fs::remove_dir_all(entry.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_lines_quote_their_values() {
        assert_eq!(conf_line("fsync", "on"), "fsync = 'on'\n");
        assert_eq!(
            conf_line("application_name", "o'neil"),
            "application_name = 'o''neil'\n"
        );
    }

    #[tokio::test]
    async fn settings_given_at_start_override_the_defaults() {
        let cluster = PrivateCluster::start_with(&[
            ("fsync", "on"),
            ("max_connections", "150"),
            ("max_connections", "160"),
            ("shared_buffers", "64MB"),
        ])
        .await
        .expect("initdb and pg_ctl work on this machine");
        let client = cluster.connect(&cluster.config("postgres")).await;
        for (name, expected) in [
            ("fsync", "on"),
            ("full_page_writes", "off"),
            ("max_connections", "160"),
            ("shared_buffers", "64MB"),
        ] {
            let row = client
                .simple_query(&format!("SHOW {name}"))
                .await
                .unwrap()
                .into_iter()
                .find_map(|message| match message {
                    tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                    _ => None,
                });
            assert_eq!(row.as_deref(), Some(expected), "{name}");
        }
    }

    #[tokio::test]
    async fn a_private_cluster_stops_starts_again_and_is_deleted_when_dropped() {
        let mut cluster = PrivateCluster::start()
            .await
            .expect("initdb and pg_ctl work on this machine");
        let config = cluster.create_database("private").await;
        let client = cluster.connect(&config).await;
        client
            .execute(
                "INSERT INTO users (email, password_hash) VALUES ('c@example.com', 'x')",
                &[],
            )
            .await
            .unwrap();

        cluster.stop(StopMode::Fast).await;
        assert!(client.simple_query("SELECT 1").await.is_err());
        assert!(config.connect(NoTls).await.is_err(), "still accepting");

        cluster.restart().await;
        let client = cluster.connect(&config).await;
        let users: i64 = client
            .query_one("SELECT count(*) FROM users", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(users, 1, "the row survived the restart");

        cluster.stop(StopMode::Immediate).await;
        cluster.restart().await;
        cluster.connect(&config).await;

        let root = cluster.control.root.clone();
        assert!(root.exists());
        drop(cluster);
        assert!(!root.exists(), "the folder was not deleted");
        assert!(
            config.connect(NoTls).await.is_err(),
            "still running after drop"
        );
    }
}
