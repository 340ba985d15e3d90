//! The `session-server` binary, built in release and run as a child process on a free
//! loopback port, killed when dropped (errors and panics included).

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::Result;

/// How long the server may take to answer `/health` with 200.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of the server's log kept for the summary.
const LOG_LINES_KEPT: usize = 20;

/// Builds `session-server` in release and returns the binary's path.
pub(crate) async fn build() -> Result<PathBuf> {
    let run = tokio::task::spawn_blocking(|| {
        escargot::CargoBuild::new()
            .package("session-server")
            .bin("session-server")
            .release()
            .manifest_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
            .run()
    })
    .await?
    .map_err(|e| format!("building session-server: {e}"))?;
    Ok(run.path().to_owned())
}

/// An HTTP client for loopback: keep-alive, no proxy, a timeout on every request.
pub(crate) fn http_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// The server's stderr: the first lines and how many there were.
#[derive(Debug, Default)]
struct Log {
    first: Vec<String>,
    total: usize,
}

/// A running `session-server`.
#[derive(Debug)]
pub(crate) struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    http: reqwest::Client,
    /// Holds the generated development keys; removed after the process is gone.
    _keys_dir: tempfile::TempDir,
}

impl Server {
    /// Starts `binary` against `database_url` with rate limits off and a pool of
    /// `database_pool` connections (the server's default when `None`), and waits for
    /// `GET /health` to answer 200.
    pub(crate) async fn start(
        binary: &Path,
        database_url: &str,
        database_pool: Option<usize>,
    ) -> Result<Self> {
        let keys_dir = tempfile::tempdir()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let mut command = Command::new(binary);
        command.env_clear();
        if let Some(size) = database_pool {
            command.env("DATABASE_POOL_SIZE", size.to_string());
        }
        let mut child = command
            .env("DATABASE_URL", database_url)
            .env("BIND_ADDR", addr.to_string())
            .env("DEV_KEYS_DIR", keys_dir.path())
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .env("RATE_LIMIT_LOGIN_PER_ACCOUNT", "0")
            .env("RATE_LIMIT_LOGIN_PER_IP", "0")
            .env("RATE_LIMIT_REFRESH_PER_IP", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", binary.display()))?;
        let log = Arc::new(Mutex::new(Log::default()));
        if let Some(stderr) = child.stderr.take() {
            let sink = Arc::clone(&log);
            // Ends when the pipe closes, that is when the process is gone.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut log = sink.lock().unwrap_or_else(PoisonError::into_inner);
                    log.total += 1;
                    if log.first.len() < LOG_LINES_KEPT {
                        log.first.push(line);
                    }
                }
            });
        }
        let mut server = Self {
            child,
            addr,
            log,
            http: http_client()?,
            _keys_dir: keys_dir,
        };
        server.wait_until_healthy().await?;
        Ok(server)
    }

    async fn wait_until_healthy(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!(
                    "session-server exited with {status} before answering:\n{}",
                    self.log_text()
                )
                .into());
            }
            if let Ok(response) = self.http.get(self.url("/health")).send().await
                && response.status() == StatusCode::OK
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "session-server was not healthy within {START_TIMEOUT:?}:\n{}",
            self.log_text()
        )
        .into())
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The loopback address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The absolute URL of `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `POST path` with a JSON body during setup: anything but `expect` is an error.
    pub(crate) async fn post_json(
        &self,
        path: &str,
        body: &Value,
        expect: StatusCode,
    ) -> Result<Value> {
        let response = self.http.post(self.url(path)).json(body).send().await?;
        let status = response.status();
        let text = response.text().await?;
        if status != expect {
            return Err(format!("POST {path}: expected {expect}, got {status}: {text}").into());
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// `POST path` with a bearer token and no body; returns the status.
    pub(crate) async fn post_bearer(&self, path: &str, token: &str) -> Result<StatusCode> {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await?;
        Ok(response.status())
    }

    /// How much the server logged (at `warn` and above) besides its development-key
    /// warnings, with the first such lines; `None` when nothing else.
    pub(crate) fn log_summary(&self) -> Option<String> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let expected = log
            .first
            .iter()
            .filter(|line| line.contains("generated a development"))
            .count();
        let unexpected: Vec<&str> = log
            .first
            .iter()
            .filter(|line| !line.contains("generated a development"))
            .map(String::as_str)
            .collect();
        (log.total > expected).then(|| {
            format!(
                "server log (RUST_LOG=warn): {} line(s) besides the development-key warnings: {}",
                log.total - expected,
                unexpected.join(" / ")
            )
        })
    }

    fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .first
            .join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
