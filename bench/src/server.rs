//! The `portcullis-server` binary, built in release and run as a child process on a free
//! loopback port, killed when dropped (errors and panics included). Building, starting
//! and log capture are `portcullis-e2e`'s [`ServerProcess`], which the end-to-end tests use
//! with a debug build; this adds the benchmark's settings and setup requests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_e2e::{BuildProfile, ServerProcess};
use reqwest::StatusCode;
use serde_json::Value;

use crate::Result;

/// Lines of the server's log named in the summary.
const LOG_LINES_SHOWN: usize = 20;

/// What the development-key warnings say; every run logs them.
const DEV_KEY_WARNING: &str = "generated a development";

/// Builds `portcullis-server` in release and returns the binary's path.
pub(crate) async fn build() -> Result<PathBuf> {
    let binary =
        tokio::task::spawn_blocking(|| portcullis_e2e::build_server(BuildProfile::Release))
            .await??;
    Ok(binary)
}

/// An HTTP client for loopback: keep-alive, no proxy, a timeout on every request.
pub(crate) fn http_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// A running `portcullis-server`.
#[derive(Debug)]
pub(crate) struct Server {
    process: ServerProcess,
    http: reqwest::Client,
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
        let pool = database_pool.map(|size| size.to_string());
        let mut env = vec![
            ("RUST_LOG", "warn"),
            ("NO_COLOR", "1"),
            ("RATE_LIMIT_LOGIN_PER_ACCOUNT", "0"),
            ("RATE_LIMIT_LOGIN_PER_IP", "0"),
            ("RATE_LIMIT_REFRESH_PER_IP", "0"),
        ];
        if let Some(size) = &pool {
            env.push(("DATABASE_POOL_SIZE", size));
        }
        let process = ServerProcess::try_start(binary, database_url, &env).await?;
        let server = Self {
            process,
            http: http_client()?,
        };
        let health = server
            .http
            .get(server.url("/health"))
            .send()
            .await?
            .status();
        if health != StatusCode::OK {
            return Err(format!(
                "portcullis-server answered /health with {health}:\n{}",
                server.process.log()
            )
            .into());
        }
        Ok(server)
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The loopback address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.process.addr()
    }

    /// The absolute URL of `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        self.process.url(path)
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
        let log = self.process.log();
        let expected = log
            .lines()
            .filter(|line| line.contains(DEV_KEY_WARNING))
            .count();
        let total = self.process.log_line_count();
        let unexpected: Vec<&str> = log
            .lines()
            .filter(|line| !line.contains(DEV_KEY_WARNING))
            .take(LOG_LINES_SHOWN)
            .collect();
        (total > expected).then(|| {
            format!(
                "server log (RUST_LOG=warn): {} line(s) besides the development-key warnings: {}",
                total - expected,
                unexpected.join(" / ")
            )
        })
    }
}
