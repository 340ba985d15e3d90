//! Support for the end-to-end tests: the real `session-server` binary as a child process
//! and a `LISTEN` connection. The outage proxy lives in `session-testdb`.

#![allow(
    clippy::missing_panics_doc,
    reason = "test support: every function panics, with a message, when something is off"
)]

pub mod api;
pub mod attempt;
pub mod proc_status;

pub use session_testdb::PostgresProxy;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_postgres::Config;

/// The path of the `session-server` binary, built once per test process.
pub fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        escargot::CargoBuild::new()
            .package("session-server")
            .bin("session-server")
            .manifest_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
            .run()
            .expect("building session-server")
            .path()
            .to_owned()
    })
}

/// A free loopback port, for a child process to bind.
pub fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("asking the OS for a free port")
        .port()
}

/// `session-server` with a clean environment: only what the test sets is seen.
pub fn server_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(server_binary());
    command
        .args(args)
        .env_clear()
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    command
}

/// A running `session-server` process, killed when dropped.
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
    log_reader: Option<std::thread::JoinHandle<()>>,
    http: reqwest::Client,
    /// Kept so the generated key outlives the process; removed when dropped.
    keys_dir: Option<tempfile::TempDir>,
}

impl ServerProcess {
    /// Starts the server against `database_url` on a free port, with a throwaway
    /// development key, and waits until it answers HTTP.
    pub async fn start(database_url: &str, extra_env: &[(&str, &str)]) -> Self {
        let keys_dir = tempfile::tempdir().expect("tempdir for keys");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut env: HashMap<&str, String> = HashMap::from([
            ("DATABASE_URL", database_url.to_owned()),
            ("BIND_ADDR", addr.to_string()),
            ("DEV_KEYS_DIR", keys_dir.path().display().to_string()),
        ]);
        for (name, value) in extra_env {
            env.insert(name, (*value).to_owned());
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut server = Self::spawn(server_command(&[], &env), addr);
        server.keys_dir = Some(keys_dir);
        server.wait_until_answering().await;
        server
    }

    /// Spawns `command`, which must make the server listen on `addr`, and returns at once.
    pub fn spawn(mut command: Command, addr: SocketAddr) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning session-server");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&log);
        let log_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self {
            child,
            addr,
            log,
            log_reader: Some(log_reader),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("HTTP client"),
            keys_dir: None,
        }
    }

    /// Waits until the server answers any HTTP request; panics with its log if it exits.
    pub async fn wait_until_answering(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("polling the child") {
                panic!(
                    "session-server exited with {status} before answering:\n{}",
                    self.log()
                );
            }
            if self.http.get(self.url("/health")).send().await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "session-server did not answer within 60 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The folder holding the server's generated development key, when it has one.
    pub fn keys_dir(&self) -> Option<&Path> {
        self.keys_dir.as_ref().map(tempfile::TempDir::path)
    }

    /// The absolute URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()))
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("polling the child").is_none()
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit.
    pub async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let pid =
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits in i32"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("sending SIGTERM");
        self.wait_for_exit(limit).await
    }

    /// Waits up to `limit` for the process to exit by itself.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("polling the child") {
                // The pipe closes with the process: once the reader is done, the log is whole.
                if let Some(reader) = self.log_reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "session-server still running after {limit:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection that `LISTEN`s on a channel and hands its notifications over: the
/// layer's own [`session_guard::postgres::Listener`], with a time limit on waiting.
pub struct Listener(session_guard::postgres::Listener);

impl Listener {
    /// Connects with `config` and listens on `channel`.
    pub async fn start(config: &Config, channel: &str) -> Self {
        let database = session_guard::postgres::DatabaseConfig::from(config.clone());
        Self(
            session_guard::postgres::Listener::connect(&database, channel)
                .await
                .expect("listener connection"),
        )
    }

    /// The next notification, or `None` if none arrives within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<tokio_postgres::Notification> {
        tokio::time::timeout(limit, self.0.recv())
            .await
            .ok()
            .flatten()
    }
}
