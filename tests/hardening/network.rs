//! The real server process under network-level abuse: spoofed forwarding headers behind
//! a trusted proxy, IPv6 clients hopping addresses inside their /64, clients that send
//! their headers slowly or sit on idle connections, and one address opening too many
//! connections. Loopback only; every wait is bounded.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use portcullis_e2e::ServerProcess;
use portcullis_e2e::api::{Api, Reply, Session};
use portcullis_testdb::TestDb;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

const EMAIL: &str = "ada@example.com";
const PASSWORD: &str = "correct horse battery staple";
/// Logins sent behind the proxy: more than the default per-IP limit of 60.
const LOGINS: usize = 80;
/// How long the server may take to close a connection past its 1 s header timeout.
const CLOSE_BOUND: Duration = Duration::from_secs(5);

async fn start_with(env: &[(&str, &str)]) -> (TestDb, ServerProcess) {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), env).await;
    (db, server)
}

/// `POST /auth/login` through "the proxy" (the test, at the trusted 127.0.0.1) with
/// these forwarding headers.
async fn login_forwarded(
    api: &Api<'_>,
    email: &str,
    password: &str,
    headers: &[(&str, String)],
) -> Reply {
    let mut request = api
        .request(Method::POST, "/auth/login")
        .json(&json!({"email": email, "password": password}));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    api.send(format!("POST /auth/login with {headers:?}"), request)
        .await
}

/// Sends [`LOGINS`] failed logins, each with `headers(i)` and its own unknown email (so
/// only a per-IP limit can stop them): the statuses, in order.
async fn failed_logins(
    api: &Api<'_>,
    headers: impl Fn(usize) -> Vec<(&'static str, String)>,
) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(LOGINS);
    for i in 0..LOGINS {
        let reply = login_forwarded(
            api,
            &format!("guess{i}@example.com"),
            "wrong password",
            &headers(i),
        )
        .await;
        if reply.status == 429 {
            reply.expect_error(&[429], "rate_limited");
            assert!(
                reply.header("retry-after").is_some(),
                "429 without Retry-After"
            );
        } else {
            reply.expect_error(&[401], "invalid_credentials");
        }
        statuses.push(reply.status);
    }
    statuses
}

#[tokio::test]
async fn behind_a_trusted_proxy_only_x_forwarded_for_counts_and_a_spoofed_forwarded_is_ignored() {
    let (_db, server) = start_with(&[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let api = Api::new(&server);
    api.register(EMAIL, PASSWORD).await;
    let client = "203.0.113.7";

    // The proxy appended the client's address to X-Forwarded-For and passed the
    // client's own `Forwarded` through.
    let pair = login_forwarded(
        &api,
        EMAIL,
        PASSWORD,
        &[
            ("x-forwarded-for", client.to_owned()),
            ("forwarded", "for=192.0.2.66".to_owned()),
        ],
    )
    .await
    .expect(200);
    let session = Session::from_pair(&pair);
    let sessions = api.sessions(&session).await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["ip"], json!(client), "{sessions:?}");

    let statuses = failed_logins(&api, |i| {
        vec![
            ("x-forwarded-for", client.to_owned()),
            (
                "forwarded",
                format!("for=198.51.{}.{}", i / 250, i % 250 + 1),
            ),
        ]
    })
    .await;
    assert!(
        statuses.contains(&429),
        "{LOGINS} logins from one client behind the proxy, each with another `Forwarded`, \
         were never limited: {statuses:?}"
    );
}

#[tokio::test]
async fn ipv6_clients_share_the_login_limit_of_their_64() {
    let (_db, server) = start_with(&[("TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let api = Api::new(&server);

    let statuses = failed_logins(&api, |i| {
        vec![("x-forwarded-for", format!("2001:db8:1:2:{i:x}::1"))]
    })
    .await;
    assert!(
        statuses.contains(&429),
        "{LOGINS} logins from one /64, each from another address, were never limited: \
         {statuses:?}"
    );

    // Another /64 is another client.
    let other = failed_logins_once(&api, "2001:db8:1:3::1").await;
    assert_eq!(other, 401, "a fresh /64 was limited too");
}

async fn failed_logins_once(api: &Api<'_>, forwarded_for: &str) -> u16 {
    login_forwarded(
        api,
        "someone@example.com",
        "wrong password",
        &[("x-forwarded-for", forwarded_for.to_owned())],
    )
    .await
    .status
}

/// A connection to the server from the loopback address `from`.
async fn connect_from(from: IpAddr, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("binding a loopback source address");
    socket
        .connect(server)
        .await
        .expect("connecting to the server")
}

/// Reads until the server closes the connection (end of stream or reset), for at most
/// `limit`: how long that took, or `None` if it stayed open.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_to_end)
        .await
        .ok()
        .map(|()| start.elapsed())
}

/// `GET /health` on `stream`, keeping it alive: the status, or `None` if the server
/// closed the connection first.
async fn health_on(stream: &mut TcpStream) -> Option<u16> {
    let request = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n";
    stream.write_all(request).await.ok()?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a Content-Length");
            if body.len() >= length {
                return head.split(' ').nth(1)?.parse().ok();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server answers /health within 10 s")
}

#[tokio::test]
async fn slow_headers_and_idle_keep_alive_connections_are_closed_and_health_stays_quick() {
    let (_db, server) = start_with(&[("HEADER_READ_TIMEOUT_SECONDS", "1")]).await;
    let addr: SocketAddr = server
        .url("")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let loopback: IpAddr = [127, 0, 0, 1].into();

    // 20 clients each send a request header a byte every 200 ms, for at most 12 s.
    let slow: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                let stream = connect_from(loopback, addr).await;
                let (mut reader, mut writer) = stream.into_split();
                let trickle = tokio::spawn(async move {
                    let start = b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
                    for byte in start.iter().chain([b'a'; 20].iter()) {
                        if writer.write_all(&[*byte]).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                });
                let started = Instant::now();
                let mut buf = [0u8; 1024];
                let closed = tokio::time::timeout(Duration::from_secs(15), async {
                    loop {
                        match reader.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                })
                .await
                .ok()
                .map(|()| started.elapsed());
                trickle.abort();
                closed
            })
        })
        .collect();

    // Meanwhile the server answers others at once.
    let fresh = reqwest::Client::new();
    let asked = Instant::now();
    let health = fresh
        .get(server.url("/health"))
        .send()
        .await
        .expect("GET /health");
    let took = asked.elapsed();
    assert_eq!(health.status(), 200);
    assert!(
        took < Duration::from_secs(1),
        "/health took {took:?} beside slow clients"
    );

    for (i, client) in slow.into_iter().enumerate() {
        let closed = client.await.expect("the slow client's task");
        let closed = closed.unwrap_or_else(|| {
            panic!(
                "slow client {i} was still connected after 15 s\n{}",
                server.log()
            )
        });
        assert!(
            closed < CLOSE_BOUND,
            "slow client {i} was closed only after {closed:?}"
        );
    }

    // A keep-alive connection that asked once and then says nothing is closed too.
    let mut idle = connect_from(loopback, addr).await;
    assert_eq!(health_on(&mut idle).await, Some(200));
    let closed = closed_within(&mut idle, Duration::from_secs(15)).await;
    let closed = closed.expect("an idle keep-alive connection stayed open for 15 s");
    assert!(
        closed < CLOSE_BOUND,
        "the idle connection was closed after {closed:?}"
    );
}

#[tokio::test]
async fn a_chunked_body_sent_slowly_is_cut_off_by_the_request_timeout() {
    let (_db, server) = start_with(&[("REQUEST_TIMEOUT_SECONDS", "1")]).await;
    let addr: SocketAddr = server
        .url("")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let mut stream = connect_from([127, 0, 0, 1].into(), addr).await;
    let head = "POST /auth/login HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // One byte of JSON every 200 ms, for at most 12 s.
    let trickle = tokio::spawn(async move {
        for _ in 0..60 {
            if writer.write_all(b"1\r\n \r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), reader.read_to_end(&mut answer)).await;
    trickle.abort();
    let took = started.elapsed();
    assert!(
        read.is_ok(),
        "the trickled body held the request for 15 s\n{}",
        server.log()
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"timeout\""), "{answer}");
    assert!(
        took < CLOSE_BOUND,
        "the trickled body was cut off only after {took:?}"
    );
}

#[tokio::test]
async fn one_address_gets_at_most_max_connections_per_ip_and_its_places_come_back() {
    let cap = 4;
    let (_db, server) = start_with(&[
        ("MAX_CONNECTIONS_PER_IP", "4"),
        // Long enough that the held connections stay open for the whole test.
        ("HEADER_READ_TIMEOUT_SECONDS", "60"),
    ])
    .await;
    let addr: SocketAddr = server
        .url("")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    // Another loopback address than the test harness's own client uses.
    let greedy: IpAddr = [127, 0, 0, 2].into();

    let mut held = Vec::new();
    for i in 0..cap {
        let mut stream = connect_from(greedy, addr).await;
        assert_eq!(health_on(&mut stream).await, Some(200), "connection {i}");
        held.push(stream);
    }
    let mut extra = connect_from(greedy, addr).await;
    let closed = closed_within(&mut extra, CLOSE_BOUND).await;
    assert!(
        closed.is_some(),
        "connection {} from one address was kept open over a cap of {cap}",
        cap + 1
    );
    assert_eq!(
        health_on(&mut extra).await,
        None,
        "the extra connection was served"
    );

    // Other addresses are unaffected.
    assert_eq!(server.get("/health").await.status(), 200);

    // Once closed, the places are free again (the server notices the close shortly).
    drop(held);
    let mut answered = None;
    for _ in 0..50 {
        let mut stream = connect_from(greedy, addr).await;
        answered = health_on(&mut stream).await;
        if answered.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        answered,
        Some(200),
        "no place came back after closing\n{}",
        server.log()
    );
}

#[tokio::test]
async fn sigterm_lets_a_request_in_flight_finish_on_the_new_server_loop() {
    let (_db, mut server) = start_with(&[]).await;
    let addr: SocketAddr = server
        .url("")
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let mut stream = connect_from([127, 0, 0, 1].into(), addr).await;
    // Served once: the connection is accepted and open.
    assert_eq!(health_on(&mut stream).await, Some(200));

    // A login whose body is held back is in flight once its header is in.
    let body = json!({"email": EMAIL, "password": "wrong password"}).to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let head = format!(
        "POST /auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{first}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    for _ in 0..100 {
        if server.log().contains("shutting down") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.log().contains("shutting down"), "{}", server.log());
    assert!(server.is_running(), "the server left a request unanswered");

    stream.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the in-flight login is answered and the connection closed")
        .expect("reading the answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let status = server.wait_for_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status}:\n{}", server.log());
}

/// Issue 22, item 11: a request head that never ends used to be buffered up to about
/// 400 KiB per connection (0.6 MiB resident with its overhead): 100 connections each
/// holding 288 KiB of an unfinished head pinned some 30 MiB. Past 32 KiB the server answers 431 and lets go, so they pin
/// little, while a head of 16 KiB is still served.
#[tokio::test]
async fn an_endless_request_head_gets_431_past_32_kib_and_pins_no_memory() {
    let (_db, server) = start_with(&[("MAX_CONNECTIONS_PER_IP", "0")]).await;
    let addr = server.addr();
    // A large but complete head is fine.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let pad = "a".repeat(16 * 1024);
    let request = format!("GET /health HTTP/1.1\r\nHost: localhost\r\nX-Pad: {pad}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut status_line = [0u8; 12];
    stream.read_exact(&mut status_line).await.unwrap();
    assert_eq!(&status_line, b"HTTP/1.1 200");

    let before = server.resident_kib();
    let mut held = Vec::new();
    for n in 0..100 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let _ = stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Pad: ")
            .await;
        // 288 KiB of a header that never ends: less than hyper's default buffer, so
        // without the cap all of it stays buffered, waiting for the rest.
        let chunk = vec![b'a'; 16 * 1024];
        for _ in 0..18 {
            match tokio::time::timeout(Duration::from_millis(200), stream.write_all(&chunk)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        if n == 0 {
            let mut answer = [0u8; 12];
            let read =
                tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer)).await;
            assert!(
                matches!(read, Ok(Ok(_))) && &answer == b"HTTP/1.1 431",
                "{read:?} {:?}",
                String::from_utf8_lossy(&answer)
            );
        }
        held.push(stream);
    }
    let grown = server.resident_kib().saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "100 endless request heads grew the server by {grown} KiB"
    );
    drop(held);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    assert_eq!(health_on(&mut stream).await, Some(200));
}
