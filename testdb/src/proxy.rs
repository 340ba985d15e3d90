//! A loopback TCP proxy in front of PostgreSQL, to stage an outage for one process (or
//! one store) without stopping the server every other test shares.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_postgres::Config;
use tokio_postgres::config::Host;

/// Where the proxy forwards to: PostgreSQL over TCP or its unix socket.
#[derive(Debug, Clone)]
enum Upstream {
    Tcp(String),
    Unix(PathBuf),
}

/// A loopback TCP proxy in front of PostgreSQL that a test can cut and restore, to
/// stage a database outage for one process without stopping the shared server.
pub struct PostgresProxy {
    addr: SocketAddr,
    upstream: Upstream,
    task: Option<tokio::task::JoinHandle<()>>,
    /// `true` while the proxy stalls: connections stay open, nothing is forwarded.
    stalled: tokio::sync::watch::Sender<bool>,
}

impl PostgresProxy {
    /// Starts forwarding a free loopback port to the server `config` points at.
    pub async fn start(config: &Config) -> Self {
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let upstream = match config.get_hosts().first() {
            Some(Host::Unix(dir)) => Upstream::Unix(dir.join(format!(".s.PGSQL.{port}"))),
            Some(Host::Tcp(host)) => Upstream::Tcp(format!("{host}:{port}")),
            None => Upstream::Tcp(format!("127.0.0.1:{port}")),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let mut proxy = Self {
            addr,
            upstream,
            task: None,
            stalled: tokio::sync::watch::Sender::new(false),
        };
        proxy.serve(listener);
        proxy
    }

    /// `config` with its host and port replaced by this proxy's.
    pub fn route(&self, config: &Config) -> Config {
        let mut routed = Config::new();
        routed.host("127.0.0.1").port(self.addr.port());
        if let Some(user) = config.get_user() {
            routed.user(user);
        }
        if let Some(password) = config.get_password() {
            routed.password(password);
        }
        if let Some(dbname) = config.get_dbname() {
            routed.dbname(dbname);
        }
        routed
    }

    /// Refuses new connections and severs every open one, as a stopped server would.
    pub fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Keeps every connection open, and accepts new ones, but forwards nothing either way:
    /// a server (or a network) that stalls without closing anything, which only a
    /// client's own timer notices.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Forwards again after [`stall`](Self::stall), on the connections it held.
    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }

    /// Accepts and forwards connections again, on the same port.
    pub async fn restore(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("rebinding the proxy on {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let upstream = self.upstream.clone();
        let stalled = self.stalled.subscribe();
        self.task = Some(tokio::spawn(async move {
            // Each connection lives in this set, so aborting the accept loop drops the
            // set and severs them all.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let upstream = upstream.clone();
                let stalled = stalled.clone();
                connections.spawn(async move {
                    match upstream {
                        Upstream::Tcp(addr) => {
                            if let Ok(outbound) = tokio::net::TcpStream::connect(addr).await {
                                forward(inbound, outbound, stalled).await;
                            }
                        }
                        Upstream::Unix(path) => {
                            if let Ok(outbound) = tokio::net::UnixStream::connect(path).await {
                                forward(inbound, outbound, stalled).await;
                            }
                        }
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        }));
    }
}

/// Copies both ways, one chunk at a time, holding each chunk while the proxy stalls.
async fn forward<A, B>(a: A, b: B, stalled: tokio::sync::watch::Receiver<bool>)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let (a_read, a_write) = tokio::io::split(a);
    let (b_read, b_write) = tokio::io::split(b);
    tokio::join!(
        pump(a_read, b_write, stalled.clone()),
        pump(b_read, a_write, stalled)
    );
}

async fn pump<R, W>(mut from: R, mut to: W, mut stalled: tokio::sync::watch::Receiver<bool>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0_u8; 16 * 1024];
    loop {
        if stalled.wait_for(|stalled| !*stalled).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // Bytes read just as the stall began are held until it ends.
        if stalled.wait_for(|stalled| !*stalled).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for PostgresProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
