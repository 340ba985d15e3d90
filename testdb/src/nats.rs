//! A `nats-server` of one test's own, with `JetStream`, to stop and start at will.
//!
//! Tests of a fleet's revocation feed need a real broker they can restart (its stream
//! must survive) and cut off. [`NatsServer::start`] runs `nats-server -a 127.0.0.1 -p
//! PORT -js -sd DIR` on a free port with its store in a new temporary folder;
//! [`stop`](NatsServer::stop) kills it, [`restart`](NatsServer::restart) starts it again
//! on the same port and store. Dropping it kills the process and deletes the folder.
//!
//! The binary is `nats-server` on the `PATH`, else `/usr/sbin/nats-server` (Debian's
//! package).
//!
//! ```no_run
//! # async fn test() {
//! use portcullis_testdb::NatsServer;
//!
//! let mut nats = NatsServer::start().await.expect("nats-server is installed");
//! let url = nats.url(); // nats://127.0.0.1:PORT
//! nats.stop();
//! nats.restart().await.unwrap();
//! # let _ = url;
//! # }
//! ```

use std::fmt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt as _;

/// Prefix of every store folder in the temporary directory; the owning process id
/// follows it.
const FOLDER_PREFIX: &str = "sg_nats_";
/// How long a start may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(10);

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why no `nats-server` could be started.
#[derive(Debug, Clone)]
pub struct NatsUnavailable(String);

impl fmt::Display for NatsUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no nats-server: {}", self.0)
    }
}

impl std::error::Error for NatsUnavailable {}

/// A `nats-server` with `JetStream` on `127.0.0.1`, killed and its store deleted when
/// dropped.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    store: PathBuf,
    process: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port with a new, empty store.
    pub async fn start() -> Result<Self, NatsUnavailable> {
        let binary = find_binary()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .map_err(|e| NatsUnavailable(format!("asking the OS for a free port: {e}")))?;
        let store = std::env::temp_dir().join(format!(
            "{FOLDER_PREFIX}{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&store)
            .map_err(|e| NatsUnavailable(format!("creating {}: {e}", store.display())))?;
        let mut server = Self {
            binary,
            port,
            store,
            process: None,
        };
        server.restart().await?;
        Ok(server)
    }

    /// Where clients connect: `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server at once (as a crash would); clients see their connections drop.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts the server again (stopping it first if it runs) on the same port and
    /// store, and waits until it accepts connections with `JetStream` on.
    pub async fn restart(&mut self) -> Result<(), NatsUnavailable> {
        self.stop();
        let port = self.port.to_string();
        let process = Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| NatsUnavailable(format!("running {}: {e}", self.binary.display())))?;
        self.process = Some(process);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.banner().await {
                Ok(info) if info.contains("\"jetstream\":true") => return Ok(()),
                Ok(info) => {
                    return Err(NatsUnavailable(format!(
                        "the server on port {} has no JetStream: {info}",
                        self.port
                    )));
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(NatsUnavailable(format!(
                        "nothing answers on port {} after {START_TIMEOUT:?}: {e}",
                        self.port
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// The `INFO` line a server greets a new connection with.
    async fn banner(&self) -> std::io::Result<String> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let mut buffer = vec![0; 4096];
        let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer))
            .await
            .map_err(|_| std::io::Error::other("no INFO within 1 s"))??;
        Ok(String::from_utf8_lossy(&buffer[..read]).into_owned())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn find_binary() -> Result<PathBuf, NatsUnavailable> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    on_path
        .or_else(|| {
            let debian = PathBuf::from("/usr/sbin/nats-server");
            debian.is_file().then_some(debian)
        })
        .ok_or_else(|| {
            NatsUnavailable(
                "nats-server is neither on the PATH nor at /usr/sbin/nats-server \
                 (Debian: apt-get install nats-server)"
                    .to_owned(),
            )
        })
}
