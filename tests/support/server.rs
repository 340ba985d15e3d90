//! The real `portcullis-server` binary as a child process: built with Cargo, started on a
//! free loopback port with a throwaway development key and a clean environment, its
//! stderr captured, killed when dropped. The end-to-end tests use it with a debug build
//! and the benchmark (`portcullis-bench`) with a release build.
//!
//! The `try_` functions return errors, for the benchmark; the others panic with the
//! server's log, as tests do.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How long a started server may take to answer HTTP.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of the server's stderr kept; later ones are only counted.
const LOG_LINES_KEPT: usize = 100_000;

/// Why the server could not be built, started or reached.
#[derive(Debug)]
pub struct ServerError(String);

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerError {}

/// How the server binary is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildProfile {
    /// Cargo's `dev` profile, as tests run.
    Debug,
    /// Cargo's `release` profile, as the benchmark measures.
    Release,
}

/// Builds the `portcullis-server` binary with `profile` and returns its path.
pub fn build_server(profile: BuildProfile) -> Result<PathBuf, ServerError> {
    let build = escargot::CargoBuild::new()
        .package("portcullis-server")
        .bin("portcullis-server")
        .manifest_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"));
    let build = match profile {
        BuildProfile::Debug => build,
        BuildProfile::Release => build.release(),
    };
    let run = build
        .run()
        .map_err(|e| ServerError(format!("building portcullis-server ({profile:?}): {e}")))?;
    Ok(run.path().to_owned())
}

/// The variable naming another server binary for the tests to run against: an app
/// built on the library, such as a project generated from `server-template/`.
pub const SERVER_BINARY_VAR: &str = "PORTCULLIS_E2E_SERVER";

/// The server binary the tests run: the one [`SERVER_BINARY_VAR`] names, or else the
/// debug `portcullis-server`, built once per test process.
pub fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| match std::env::var_os(SERVER_BINARY_VAR) {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "{SERVER_BINARY_VAR}={} names no file",
                path.display()
            );
            path
        }
        None => build_server(BuildProfile::Debug).unwrap_or_else(|e| panic!("{e}")),
    })
}

/// A free loopback port, for a child process to bind.
pub fn free_port() -> u16 {
    try_free_port().unwrap_or_else(|e| panic!("{e}"))
}

fn try_free_port() -> Result<u16, ServerError> {
    StdTcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| ServerError(format!("asking the OS for a free port: {e}")))
}

/// The debug `portcullis-server` with a clean environment: only what the test sets is seen.
pub fn server_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    binary_command(server_binary(), args, env)
}

/// `binary` with a clean environment but for `env`, logging at `info` unless `env` sets
/// `RUST_LOG`.
pub fn binary_command(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary);
    command
        .args(args)
        .env_clear()
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    command
}

/// The server's stderr: the first lines and how many there were.
#[derive(Debug, Default)]
struct Log {
    kept: String,
    lines: usize,
}

/// A running `portcullis-server` process, killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    log_reader: Option<std::thread::JoinHandle<()>>,
    http: reqwest::Client,
    /// Kept so the generated key outlives the process; removed when dropped.
    keys_dir: Option<tempfile::TempDir>,
}

impl ServerProcess {
    /// Starts the debug server against `database_url` on a free port, with a throwaway
    /// development key, and waits until it answers HTTP.
    pub async fn start(database_url: &str, extra_env: &[(&str, &str)]) -> Self {
        Self::try_start(server_binary(), database_url, extra_env)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the debug server as [`start`](Self::start) does, but reached by browsers at
    /// `http://localhost:PORT` (`PUBLIC_URL`): a domain, which WebAuthn needs for passkeys.
    pub async fn start_on_localhost(database_url: &str, extra_env: &[(&str, &str)]) -> Self {
        Self::start_named(database_url, "localhost", extra_env).await
    }

    /// Starts `binary` as [`start`](Self::start) does the debug server.
    pub async fn try_start(
        binary: &Path,
        database_url: &str,
        extra_env: &[(&str, &str)],
    ) -> Result<Self, ServerError> {
        Self::try_start_named(binary, database_url, None, extra_env).await
    }

    /// Starts the debug server as [`start`](Self::start) does, but reached by browsers
    /// at `http://{host}:{port}` (`PUBLIC_URL`): a `*.localhost` name resolves to
    /// loopback in Chromium, so two such names are two sites under one parent domain.
    pub async fn start_named(database_url: &str, host: &str, extra_env: &[(&str, &str)]) -> Self {
        Self::try_start_named(server_binary(), database_url, Some(host), extra_env)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn try_start_named(
        binary: &Path,
        database_url: &str,
        host: Option<&str>,
        extra_env: &[(&str, &str)],
    ) -> Result<Self, ServerError> {
        let keys_dir = tempfile::tempdir()
            .map_err(|e| ServerError(format!("a folder for development keys: {e}")))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], try_free_port()?));
        let public_url = match host {
            Some(host) => format!("http://{host}:{}", addr.port()),
            None => format!("http://{addr}"),
        };
        let mut env: HashMap<&str, String> = HashMap::from([
            ("DATABASE_URL", database_url.to_owned()),
            ("BIND_ADDR", addr.to_string()),
            ("DEV_KEYS_DIR", keys_dir.path().display().to_string()),
            // The origin a browser reaches it at, which its CSRF checks compare with.
            ("PUBLIC_URL", public_url),
        ]);
        for (name, value) in extra_env {
            env.insert(name, (*value).to_owned());
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut server = Self::try_spawn(binary_command(binary, &[], &env), addr)?;
        server.keys_dir = Some(keys_dir);
        server.try_wait_until_answering().await?;
        Ok(server)
    }

    /// Spawns `command`, which must make the server listen on `addr`, and returns at once.
    pub fn spawn(command: Command, addr: SocketAddr) -> Self {
        Self::try_spawn(command, addr).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_spawn(mut command: Command, addr: SocketAddr) -> Result<Self, ServerError> {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                ServerError(format!("spawning {}: {e}", command.get_program().display()))
            })?;
        let log = Arc::new(Mutex::new(Log::default()));
        let Some(stderr) = child.stderr.take() else {
            let _ = child.kill();
            return Err(ServerError(
                "portcullis-server's stderr is not piped".to_owned(),
            ));
        };
        let sink = Arc::clone(&log);
        // Ends when the pipe closes, that is when the process is gone.
        let log_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(PoisonError::into_inner);
                log.lines += 1;
                if log.lines <= LOG_LINES_KEPT {
                    log.kept.push_str(&line);
                    log.kept.push('\n');
                }
            }
        });
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| ServerError(format!("an HTTP client: {e}")))?;
        Ok(Self {
            child,
            addr,
            log,
            log_reader: Some(log_reader),
            http,
            keys_dir: None,
        })
    }

    /// Waits until the server answers any HTTP request; panics with its log if it exits.
    pub async fn wait_until_answering(&mut self) {
        self.try_wait_until_answering()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    async fn try_wait_until_answering(&mut self) -> Result<(), ServerError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.poll_exit()? {
                return Err(ServerError(format!(
                    "portcullis-server exited with {status} before answering:\n{}",
                    self.log()
                )));
            }
            if self.http.get(self.url("/health")).send().await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ServerError(format!(
                    "portcullis-server did not answer within {START_TIMEOUT:?}:\n{}",
                    self.log()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn poll_exit(&mut self) -> Result<Option<ExitStatus>, ServerError> {
        self.child
            .try_wait()
            .map_err(|e| ServerError(format!("polling portcullis-server: {e}")))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The loopback address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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

    /// Everything the server wrote to stderr so far (the first [`LOG_LINES_KEPT`] lines).
    pub fn log(&self) -> String {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let mut text = log.kept.clone();
        if log.lines > LOG_LINES_KEPT {
            let _ = writeln!(text, "[{} more lines not kept]", log.lines - LOG_LINES_KEPT);
        }
        text
    }

    /// How many lines the server wrote to stderr so far, kept or not.
    pub fn log_line_count(&self) -> usize {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lines
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("polling the child").is_none()
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit.
    pub async fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).expect("pid fits in i32"));
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
                "portcullis-server still running after {limit:?}:\n{}",
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
