//! Accepting and serving HTTP connections, bounded against slow and numerous clients.
//!
//! Poem's own `Server` gives hyper no timer, so hyper's header-read timeout never runs and
//! a client sending its header a byte at a time holds a connection for ever. [`serve`]
//! runs Poem's endpoint on hyper-util's `auto` builder, HTTP/1 and HTTP/2 as Poem does,
//! and adds what Poem lacks:
//!
//! - hyper's HTTP/1 header-read timeout, which also ends idle keep-alive connections;
//! - a first-request deadline of the same length, for connections that send nothing, or
//!   the HTTP/2 preface slowly, before hyper's timer can start;
//! - an idle timeout for any connection, HTTP/2 ones included;
//! - caps on open connections, in all and per client network (trusted proxies exempt),
//!   over which a connection is closed as soon as it is accepted;
//! - graceful shutdown: no new connections, in-flight requests finish within the grace.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Addr, Endpoint, Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client_ip::{ClientNetwork, TrustedProxies};
use crate::config::ConnectionSettings;

/// How long to wait after a failed `accept` (mostly: out of file descriptors) before
/// the next, rather than spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Why a connection was closed as soon as it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `MAX_CONNECTIONS` connections are open.
    TooManyConnections,
    /// `MAX_CONNECTIONS_PER_IP` connections are open from the client's network.
    TooManyFromNetwork,
}

impl Refusal {
    /// The metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooManyConnections => "too_many_connections",
            Self::TooManyFromNetwork => "too_many_from_network",
        }
    }
}

/// Counts open connections, in all and per client network.
#[derive(Clone)]
pub struct ConnectionCaps {
    counts: Arc<Mutex<Counts>>,
    max_total: usize,
    /// 0: no per-network cap.
    max_per_network: usize,
    proxies: TrustedProxies,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_network: HashMap<ClientNetwork, usize>,
}

/// One admitted connection; dropping it frees its place.
pub struct ConnectionPermit {
    counts: Arc<Mutex<Counts>>,
    network: Option<ClientNetwork>,
}

impl ConnectionCaps {
    /// Caps from `settings`; connections from `proxies` count only towards the total, as
    /// every client behind them shares their address.
    pub fn new(settings: &ConnectionSettings, proxies: TrustedProxies) -> Self {
        Self {
            counts: Arc::default(),
            max_total: settings.max_total,
            max_per_network: settings.max_per_ip,
            proxies,
        }
    }

    /// A place for a connection from `peer`, or why there is none.
    pub fn admit(&self, peer: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let network = (self.max_per_network > 0 && !self.proxies.contains(peer))
            .then(|| ClientNetwork::from(peer));
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.max_total {
            return Err(Refusal::TooManyConnections);
        }
        if let Some(network) = network {
            let open = counts.per_network.entry(network).or_default();
            if *open >= self.max_per_network {
                return Err(Refusal::TooManyFromNetwork);
            }
            *open += 1;
        }
        counts.total += 1;
        metrics::gauge!("session_connections_open").increment(1.0);
        Ok(ConnectionPermit {
            counts: Arc::clone(&self.counts),
            network,
        })
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total -= 1;
        if let Some(network) = self.network
            && let Some(open) = counts.per_network.get_mut(&network)
        {
            *open -= 1;
            if *open == 0 {
                counts.per_network.remove(&network);
            }
        }
        metrics::gauge!("session_connections_open").decrement(1.0);
    }
}

/// Serves `endpoint` on `listener` until `shutdown` resolves, then lets open connections
/// finish for up to `grace` and closes the rest.
pub async fn serve<E>(
    listener: TcpListener,
    endpoint: E,
    settings: ConnectionSettings,
    proxies: TrustedProxies,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()>
where
    E: Endpoint<Output = Response> + 'static,
{
    let local = listener.local_addr()?;
    let endpoint = Arc::new(endpoint);
    let caps = ConnectionCaps::new(&settings, proxies);
    let http = Arc::new(http_builder(&settings));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    tracing::info!(addr = %local, "listening");
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = finished {
                    tracing::error!(error = %e, "a connection task failed");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match caps.admit(peer.ip()) {
                    Ok(permit) => {
                        connections.spawn(connection(Connection {
                            stream,
                            peer,
                            local,
                            endpoint: Arc::clone(&endpoint),
                            http: Arc::clone(&http),
                            settings,
                            stopping: stopping.clone(),
                            permit,
                        }));
                    }
                    Err(refusal) => {
                        metrics::counter!(
                            "session_connections_refused_total",
                            "reason" => refusal.as_str()
                        )
                        .increment(1);
                        tracing::debug!(%peer, reason = refusal.as_str(), "connection refused");
                        drop(stream);
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
    drop(listener);
    stop.send_replace(true);
    if !connections.is_empty() {
        tracing::info!(open = connections.len(), "waiting for open connections");
        let drained = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(
                open = connections.len(),
                "shutdown grace is over: closing the connections left"
            );
            connections.shutdown().await;
        }
    }
    Ok(())
}

/// The most an HTTP/1 request head (request line and headers) may take; a longer one is
/// answered 431. Browsers send a few KiB; HTTP/2's header list is bounded alike.
pub const MAX_REQUEST_HEAD_BYTES: usize = 32 * 1024;

/// hyper's HTTP/1 and HTTP/2 server, with a timer so its timeouts run, and Poem's
/// HTTP/2 settings.
fn http_builder(settings: &ConnectionSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        // hyper buffers an unfinished request head up to about 400 KiB by default, which
        // a client can pin on every connection it holds open; past this it answers 431.
        .max_buf_size(MAX_REQUEST_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_pending_accept_reset_streams(20)
        .max_header_list_size(u32::try_from(MAX_REQUEST_HEAD_BYTES).unwrap_or(u32::MAX));
    builder
}

/// One accepted connection and what serving it needs.
struct Connection<E> {
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    endpoint: Arc<E>,
    http: Arc<auto::Builder<TokioExecutor>>,
    settings: ConnectionSettings,
    stopping: watch::Receiver<bool>,
    permit: ConnectionPermit,
}

async fn connection<E>(connection: Connection<E>)
where
    E: Endpoint<Output = Response> + 'static,
{
    let Connection {
        stream,
        peer,
        local,
        endpoint,
        http,
        settings,
        mut stopping,
        permit,
    } = connection;
    // Small responses go out at once rather than waiting on Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let served_one = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let service = hyper::service::service_fn({
        let served_one = Arc::clone(&served_one);
        move |request: hyper::Request<Incoming>| {
            served_one.store(true, Ordering::Relaxed);
            let endpoint = Arc::clone(&endpoint);
            async move {
                let request = Request::from((
                    request,
                    LocalAddr(Addr::SocketAddr(local)),
                    RemoteAddr(Addr::SocketAddr(peer)),
                    Scheme::HTTP,
                ));
                let response: hyper::Response<BoxBody<Bytes, io::Error>> =
                    endpoint.get_response(request).await.into();
                Ok::<_, Infallible>(response)
            }
        }
    });
    let served = http.serve_connection_with_upgrades(io, service);
    tokio::pin!(served);
    let first_request = tokio::time::sleep(settings.header_read_timeout);
    tokio::pin!(first_request);
    let mut first_request_over = false;
    let mut closing = false;
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            () = &mut first_request, if !first_request_over => {
                // The guard is checked only when this `select!` starts, so look again.
                if !served_one.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "closing a connection that sent no request in time");
                    break;
                }
                first_request_over = true;
            }
            () = activity.idle_for(settings.idle_timeout), if !closing => {
                tracing::debug!(%peer, "closing an idle connection");
                closing = true;
                served.as_mut().graceful_shutdown();
            }
            _ = stopping.wait_for(|stop| *stop), if !closing => {
                closing = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
    drop(permit);
}

/// When a connection last moved a byte, in milliseconds since it was accepted.
struct Activity {
    accepted: Instant,
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            accepted: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let since = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(since, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = self.accepted + last + idle;
            if deadline <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that records its activity.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_ready() {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if polled.is_ready() {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if polled.is_ready() {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(max_total: usize, max_per_ip: usize) -> ConnectionCaps {
        let settings = ConnectionSettings {
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_total,
            max_per_ip,
        };
        let proxies = TrustedProxies {
            networks: vec!["10.0.0.0/8".parse().unwrap()],
            ..TrustedProxies::default()
        };
        ConnectionCaps::new(&settings, proxies)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn connections_are_capped_per_network_and_in_all() {
        let caps = caps(4, 2);
        let a1 = caps.admit(ip("192.0.2.1")).unwrap();
        let _a2 = caps.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(
            caps.admit(ip("192.0.2.1")).err(),
            Some(Refusal::TooManyFromNetwork)
        );
        // One /64 is one network.
        let _v6 = caps.admit(ip("2001:db8::1")).unwrap();
        let _v6b = caps.admit(ip("2001:db8::2")).unwrap();
        assert_eq!(
            caps.admit(ip("2001:db8::3")).err(),
            Some(Refusal::TooManyConnections),
            "four are open in all"
        );
        drop(a1);
        assert_eq!(
            caps.admit(ip("2001:db8::3")).err(),
            Some(Refusal::TooManyFromNetwork)
        );
        let _a3 = caps.admit(ip("192.0.2.1")).expect("a place was freed");
        assert!(caps.counts.lock().unwrap().per_network.len() == 2);
    }

    #[test]
    fn trusted_proxies_are_not_capped_per_network_and_zero_turns_the_cap_off() {
        let caps = caps(10, 1);
        let _held: Vec<_> = (0..5)
            .map(|_| {
                caps.admit(ip("10.0.0.5"))
                    .expect("a proxy carries many clients")
            })
            .collect();
        assert!(caps.counts.lock().unwrap().per_network.is_empty());
        let uncapped = self::caps(10, 0);
        let _held: Vec<_> = (0..10)
            .map(|_| uncapped.admit(ip("192.0.2.1")).unwrap())
            .collect();
        assert_eq!(
            uncapped.admit(ip("192.0.2.1")).err(),
            Some(Refusal::TooManyConnections)
        );
    }
}
