//! Figure 7, peers: what other ways of protecting the same hello route cost, and how
//! long each keeps accepting a session after it was revoked, measured in the same rounds
//! as the bare service and the layer.
//!
//! Rust services ([`hello`] modes, see [`rust_peers`](crate::rust_peers)) are compared
//! with the bare Rust hello; better-auth ([`node_peer`]) with a bare route of the same
//! Node process. All of them share one throwaway database, so PostgreSQL's CPU per
//! request is that of the backends connected to it while one service is under load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, ORIGIN, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use portcullis_testdb::TestDb;

use crate::hello::{self, HelloService, Mode};
use crate::http1::{self, Connection};
use crate::load::{self, Bounds, Stats};
use crate::node_peer::{self, CookieCache, NodeService};
use crate::report::{Round, Section, Target, Unit};
use crate::rust_peers;
use crate::seed::{self, Population};
use crate::tokens::{self, Signer};
use crate::{Result, Settings, cpu};

/// Sessions each service is loaded with (the workers cycle through them).
const SESSIONS: usize = 64;
/// Sessions revoked per service and round, all at once, each polled on its own
/// connection.
const REVOCATIONS: usize = 4;
/// Concurrent keep-alive connections of the load generator (as in figure 1).
const CONNECTIONS: usize = 32;
/// A revoked session still accepted this long after its revocation is reported as
/// such, not waited for further.
const REVOCATION_LIMIT: Duration = Duration::from_secs(3);
/// Pause between two polls of a revoked session.
const POLL_INTERVAL: Duration = Duration::from_millis(1);
/// Lifetime of the harness's access tokens.
const TOKEN_LIFETIME_SECS: u64 = 3_600;
/// Longest warm-up pass per service and round.
const WARM_UP_LIMIT: Duration = Duration::from_secs(30);
/// Logins (sign-ups) in flight at once while preparing sessions.
const LOGIN_CONCURRENCY: usize = 4;
/// The password of every better-auth user.
const PASSWORD: &str = "correct horse battery staple";
/// Seeded sessions of the layer and jwt-authorizer: session 0 is the only revoked one
/// and is never used.
const POPULATION: Population = Population {
    sessions: 1_000,
    users: 100,
    revoked_every: 1_000_000,
};

/// The measured services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// The Rust hello, no guard.
    RustBare,
    /// `SessionGuardLayer`, EdDSA, `PostgresLiveness` defaults.
    Layer,
    JwtAuthorizer,
    TowerSessions,
    TowerSessionsCached,
    /// The Node route without a check.
    NodeBare,
    BetterAuth,
    BetterAuthCached,
}

const PEERS: [Peer; 8] = [
    Peer::RustBare,
    Peer::Layer,
    Peer::JwtAuthorizer,
    Peer::TowerSessions,
    Peer::TowerSessionsCached,
    Peer::NodeBare,
    Peer::BetterAuth,
    Peer::BetterAuthCached,
];

impl Peer {
    /// What its row says before the version.
    fn label(self) -> &'static str {
        match self {
            Self::RustBare => "Rust bare",
            Self::Layer => "portcullis layer",
            Self::JwtAuthorizer => "jwt-authorizer",
            Self::TowerSessions => "tower-sessions + PostgresStore",
            Self::TowerSessionsCached => "tower-sessions + Moka cache + PostgresStore",
            Self::NodeBare => "Node bare",
            Self::BetterAuth => "better-auth",
            Self::BetterAuthCached => "better-auth + cookie cache",
        }
    }

    /// The bare service its throughput is divided by; `None` for a bare one.
    fn baseline(self) -> Option<Self> {
        match self {
            Self::RustBare | Self::NodeBare => None,
            Self::BetterAuth | Self::BetterAuthCached => Some(Self::NodeBare),
            _ => Some(Self::RustBare),
        }
    }

    /// The package whose locked version is the peer's.
    fn package(self) -> Option<Package> {
        match self {
            Self::RustBare | Self::NodeBare => None,
            Self::Layer => Some(Package::Crate("portcullis")),
            Self::JwtAuthorizer => Some(Package::Crate("jwt-authorizer")),
            Self::TowerSessions | Self::TowerSessionsCached => {
                Some(Package::Crate("tower-sessions"))
            }
            Self::BetterAuth | Self::BetterAuthCached => Some(Package::Npm("better-auth")),
        }
    }

    /// How a revoked session is revoked for this peer.
    fn revocation(self) -> Option<Revocation> {
        match self {
            Self::RustBare | Self::NodeBare => None,
            Self::Layer | Self::JwtAuthorizer => Some(Revocation::SessionRow),
            Self::TowerSessions | Self::TowerSessionsCached => Some(Revocation::StoreRow),
            Self::BetterAuth | Self::BetterAuthCached => Some(Revocation::SignOut),
        }
    }
}

/// Where a peer's version comes from: what the build or `npm ci` installed.
#[derive(Debug, Clone, Copy)]
enum Package {
    /// A crate in the workspace's Cargo.lock.
    Crate(&'static str),
    /// A package in `bench/node/node_modules`.
    Npm(&'static str),
}

/// How the harness revokes a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revocation {
    /// `UPDATE sessions SET revoked_at = now()`, as the server's logout does (its trigger
    /// notifies the layer's listeners).
    SessionRow,
    /// `DELETE` of the session's row in tower-sessions' table: what a logout on another
    /// instance does to this one's view.
    StoreRow,
    /// `POST /api/auth/sign-out` with the session's cookies, through better-auth's own
    /// API; the harness keeps presenting the old cookies, as a stolen copy would.
    SignOut,
}

/// How the figure is measured, for BENCHMARKS.md.
pub(crate) const METHOD: &str = "\
Eight services, each a child process on loopback: the Rust axum `GET /hello` **bare**; \
behind `SessionGuardLayer` (EdDSA, `PostgresLiveness` defaults); behind \
**jwt-authorizer** (its `Authorizer` with the same Ed25519 key as a JWKS, called from an \
axum 0.8 middleware because its own layer is built on axum 0.7: signature, `iss`, `aud`, \
`exp`, nothing else); behind **tower-sessions** on `PostgresStore` (the session cookie \
loaded from PostgreSQL on every request, pool of 16); the same with its \
`CachingSessionStore` of a `MokaStore` in front of `PostgresStore`; then Node: a bare \
`node:http` route, and the same route after **better-auth**'s `auth.api.getSession({ \
headers })` (email and password, PostgreSQL through `pg`, pool of 10), with its cookie \
cache off and on (5 min max age) in two processes. All share one database. Each \
service gets 64 sessions (seeded and signed for the layer and jwt-authorizer, \
`POST /login` for tower-sessions, better-auth's own sign-up for better-auth); 32 \
keep-alive connections cycle through them after a warm-up pass, half a load phase per \
service, the order rotated by one service each round, so every ratio is within one \
round: Rust peers against the Rust bare hello, better-auth against the Node bare route. \
CPU per request as in figure 1. Then in the same round each guarded service gets 4 new \
sessions, accepts each once, and they are revoked at once: for the layer and \
jwt-authorizer by setting `revoked_at` on the session row (what the server's logout \
does), for tower-sessions by deleting the session's row from its table (what a logout \
on another instance does to this one: its own cache is not told), for better-auth by \
its own `POST /api/auth/sign-out` with the session's cookies, after which the old \
cookies are presented again (a stolen copy). Each is polled about every millisecond \
until refused; a session still accepted after 3 s is counted, not waited for.";

/// What each peer guarantees about revocation, for BENCHMARKS.md (next to its
/// numbers); `cookie_cache` is better-auth's cookie max age as its process reported it.
fn guarantees(cookie_cache: Duration) -> String {
    use std::fmt::Write as _;
    let token_hours = TOKEN_LIFETIME_SECS / 3_600;
    let cookie_minutes = cookie_cache.as_secs() / 60;
    let rows = [
        (
            Peer::Layer,
            "refused once its listener gets the trigger's `NOTIFY` (milliseconds: figure 3); \
             a live answer is cached for at most 15 s only while the listener is down"
                .to_owned(),
        ),
        (
            Peer::JwtAuthorizer,
            format!("none until the token's `exp` (here {token_hours} h): it asks no one"),
        ),
        (
            Peer::TowerSessions,
            "next request: the store reads PostgreSQL on every request".to_owned(),
        ),
        (
            Peer::TowerSessionsCached,
            "none on an instance that cached the session, until the session's own expiry \
             (tower-sessions' default: 2 weeks): the Moka entry lives that long, and only \
             the instance that deletes a session clears its own cache"
                .to_owned(),
        ),
        (
            Peer::BetterAuth,
            "next request: `getSession` reads the session row".to_owned(),
        ),
        (
            Peer::BetterAuthCached,
            format!(
                "none until the signed `session_data` cookie's max age (here \
                 {cookie_minutes} min): `getSession` trusts the cookie without reading the row"
            ),
        ),
    ];
    let mut out = String::from(
        "What each peer guarantees about revocation:\n\n| peer | guarantee |\n|---|---|\n",
    );
    for (peer, guarantee) in rows {
        let _ = writeln!(out, "| {} | {guarantee} |", peer.label());
    }
    out
}

/// A header every request of a worker carries (the credential).
type Credential = (HeaderName, HeaderValue);

/// A started service.
enum Process {
    Rust(HelloService),
    Node(NodeService),
}

impl Process {
    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Self::Rust(service) => service.addr,
            Self::Node(service) => service.addr,
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Self::Rust(service) => service.pid(),
            Self::Node(service) => service.pid(),
        }
    }
}

/// One service under test: its process, the route, and its sessions.
struct Service {
    peer: Peer,
    process: Arc<Process>,
    path: &'static str,
    credentials: Arc<[Credential]>,
    version: Option<String>,
}

/// What one service did in one round.
struct Phase {
    run: load::Run,
    warm_up_errors: Stats,
    server_cpu: Duration,
    database_cpu: Duration,
    /// Time until each revoked session was refused; `None`: still accepted at the limit.
    revocations: Vec<Option<Duration>>,
    revocation_errors: Vec<String>,
}

/// Runs figure 7 for `settings.rounds` rounds.
pub(crate) async fn run(settings: Settings) -> Result<Section> {
    node_peer::install().await?;
    let db = TestDb::new().await;
    let client = db.connect().await;
    POPULATION.seed(&client).await?;
    let url = hello::postgres_url(&db.url())?;
    let signer = Signer::eddsa()?;
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock"))?;

    eprintln!("peers: starting 5 Rust services and 2 Node services ...");
    let bare = start_rust(Mode::Bare, &db).await?;
    let layer = start_rust(Mode::EdDsa, &db).await?;
    let jwt = start_rust(Mode::JwtAuthorizer, &db).await?;
    let tower = start_rust(Mode::TowerSessions, &db).await?;
    let tower_cached = start_rust(Mode::TowerSessionsCached, &db).await?;
    let node = Arc::new(Process::Node(
        NodeService::start(&url, CookieCache::Off, true).await?,
    ));
    let node_cached = Arc::new(Process::Node(
        NodeService::start(&url, CookieCache::On, false).await?,
    ));

    eprintln!("peers: {SESSIONS} sessions per service ...");
    let bearers: Arc<[Credential]> = (1..=SESSIONS as u64)
        .map(|index| Ok((AUTHORIZATION, layer_token(&signer, index)?)))
        .collect::<Result<_>>()?;
    let tower_sessions = tower_logins(&tower, SESSIONS).await?;
    let tower_cached_sessions = tower_logins(&tower_cached, SESSIONS).await?;
    let node_sessions = better_auth_sign_ups(&node, "load", SESSIONS).await?;
    let node_cached_sessions = better_auth_sign_ups(&node_cached, "load-cached", SESSIONS).await?;

    let services: Vec<Service> = PEERS
        .into_iter()
        .map(|peer| {
            let (process, path, credentials) = match peer {
                Peer::RustBare => (&bare, hello::PATH, &bearers),
                Peer::Layer => (&layer, hello::PATH, &bearers),
                Peer::JwtAuthorizer => (&jwt, hello::PATH, &bearers),
                Peer::TowerSessions => (&tower, hello::PATH, &tower_sessions),
                Peer::TowerSessionsCached => (&tower_cached, hello::PATH, &tower_cached_sessions),
                // The bare route gets the same cookies, so the requests are as long.
                Peer::NodeBare => (&node, node_peer::BARE_PATH, &node_sessions),
                Peer::BetterAuth => (&node, node_peer::PROTECTED_PATH, &node_sessions),
                Peer::BetterAuthCached => (
                    &node_cached,
                    node_peer::PROTECTED_PATH,
                    &node_cached_sessions,
                ),
            };
            let version = peer.package().map(|package| match package {
                Package::Crate(name) => locked_version(&lock, name),
                Package::Npm(name) => node_peer::installed_version(name),
            });
            Ok(Service {
                peer,
                process: Arc::clone(process),
                path,
                credentials: Arc::clone(credentials),
                version: version.transpose()?,
            })
        })
        .collect::<Result<_>>()?;

    let mut section = Section::new("7. Peers", METHOD);
    let Process::Node(cached) = node_cached.as_ref() else {
        return Err("better-auth runs in a Node process".into());
    };
    section.preface = guarantees(cached.cookie_cache_max_age);
    let node_version = node_peer::node_version().await?;
    let phase_settings = Settings {
        duration: settings.duration / 2,
        ..settings
    };
    let mut revocation_index = 0;
    for round_index in 0..settings.rounds {
        let mut phases = Vec::with_capacity(services.len());
        for offset in 0..services.len() {
            let service = &services[(round_index + offset) % services.len()];
            eprintln!(
                "peers: round {}/{}, {} ...",
                round_index + 1,
                settings.rounds,
                service.peer.label()
            );
            let warm_up_errors = warm_up(service).await?;
            let mut phase = measure(service, &client, phase_settings, warm_up_errors).await?;
            if let Some(revocation) = service.peer.revocation() {
                let revoke = Revoke {
                    client: &client,
                    signer: &signer,
                    first_index: SESSIONS as u64 + 1 + revocation_index,
                };
                revocation_index += REVOCATIONS as u64;
                revoke.measure(service, revocation, &mut phase).await?;
            }
            phases.push((service, phase));
        }
        let mut round = record(&phases);
        round.note(format!("Node {node_version}"));
        section.push(round);
    }
    Ok(section)
}

async fn start_rust(mode: Mode, db: &TestDb) -> Result<Arc<Process>> {
    Ok(Arc::new(Process::Rust(
        HelloService::start(mode, &db.url(), &[]).await?,
    )))
}

/// An access token for seeded session `index`.
fn layer_token(signer: &Signer, index: u64) -> Result<HeaderValue> {
    let user = seed::user_id(POPULATION.owner(index));
    let token = signer.sign(
        &user,
        &seed::session_id(index),
        tokens::unix_now(),
        TOKEN_LIFETIME_SECS,
    )?;
    http1::bearer(&token)
}

/// `count` new tower-sessions sessions through `POST /login`: their `Cookie` headers.
async fn tower_logins(process: &Process, count: usize) -> Result<Arc<[Credential]>> {
    let mut connection = Connection::open(process.addr()).await?;
    let mut cookies = Vec::with_capacity(count);
    for _ in 0..count {
        let (status, headers, _) = connection
            .post(rust_peers::LOGIN_PATH, &[], Bytes::new())
            .await?;
        if status != StatusCode::NO_CONTENT {
            return Err(format!("POST /login: expected 204, got {status}").into());
        }
        cookies.push((COOKIE, cookie_header(&headers)?));
    }
    Ok(cookies.into())
}

/// `count` better-auth users signed up through its own API (each sign-up opens a
/// session): their `Cookie` headers. `tag` keeps the e-mail addresses apart.
async fn better_auth_sign_ups(
    process: &Process,
    tag: &str,
    count: usize,
) -> Result<Arc<[Credential]>> {
    let Process::Node(node) = process else {
        return Err("better-auth runs in a Node process".into());
    };
    let origin = HeaderValue::from_str(&node.origin())?;
    let indices: Vec<usize> = (0..count).collect();
    let mut cookies = Vec::with_capacity(count);
    for batch in indices.chunks(LOGIN_CONCURRENCY) {
        let sign_ups = batch.iter().map(|index| {
            let origin = origin.clone();
            let body = serde_json::json!({
                "email": format!("{tag}-{index}-{}@example.com", tokens::unix_now()),
                "password": PASSWORD,
                "name": format!("{tag} {index}"),
            });
            async move {
                let mut connection = Connection::open(node.addr).await?;
                let (status, headers, body) = connection
                    .post(
                        node_peer::SIGN_UP_PATH,
                        &[
                            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                            (ORIGIN, origin),
                        ],
                        Bytes::from(serde_json::to_vec(&body)?),
                    )
                    .await?;
                if status != StatusCode::OK {
                    return Err(format!(
                        "better-auth sign-up: expected 200, got {status}: {}",
                        String::from_utf8_lossy(&body)
                    )
                    .into());
                }
                Ok::<_, crate::Error>((COOKIE, cookie_header(&headers)?))
            }
        });
        for cookie in join_all(sign_ups).await {
            cookies.push(cookie?);
        }
    }
    Ok(cookies.into())
}

/// The `Cookie` header that sends back every cookie `headers` set (name=value pairs).
fn cookie_header(headers: &HeaderMap) -> Result<HeaderValue> {
    let pairs: Vec<&str> = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| value.split(';').next())
        .map(str::trim)
        .filter(|pair| pair.contains('='))
        .collect();
    if pairs.is_empty() {
        return Err("the response set no cookie".into());
    }
    Ok(HeaderValue::from_str(&pairs.join("; "))?)
}

/// The value of cookie `name` in a `Cookie` header.
fn cookie_value<'a>(cookie: &'a HeaderValue, name: &str) -> Option<&'a str> {
    cookie
        .to_str()
        .ok()?
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// The version of package `name` in the text of a Cargo.lock (it must be there once).
fn locked_version(lock: &str, name: &str) -> Result<String> {
    let lock: toml::Table = toml::from_str(lock)?;
    let versions: Vec<&str> = lock
        .get("package")
        .and_then(toml::Value::as_array)
        .ok_or("Cargo.lock without packages")?
        .iter()
        .filter(|package| package.get("name").and_then(toml::Value::as_str) == Some(name))
        .filter_map(|package| package.get("version").and_then(toml::Value::as_str))
        .collect();
    match versions.as_slice() {
        [version] => Ok((*version).to_owned()),
        [] => Err(format!("{name} is not in Cargo.lock").into()),
        _ => Err(format!("{name} is in Cargo.lock {} times", versions.len()).into()),
    }
}

/// Sends every credential once, so the timed phase sees the steady state.
async fn warm_up(service: &Service) -> Result<Stats> {
    let per_worker = service.credentials.len().div_ceil(CONNECTIONS);
    let bounds = Bounds::new(WARM_UP_LIMIT, per_worker);
    let workers = (0..CONNECTIONS).map(|worker| {
        cycle(
            service.process.addr(),
            service.path,
            Arc::clone(&service.credentials),
            worker * per_worker,
            bounds,
        )
    });
    Ok(load::run(workers).await?.stats)
}

/// The timed phase, with the CPU time the service and PostgreSQL spent on it.
async fn measure(
    service: &Service,
    client: &tokio_postgres::Client,
    settings: Settings,
    warm_up_errors: Stats,
) -> Result<Phase> {
    let backends = cpu::database_backends(client).await?;
    let database_before: Vec<_> = backends
        .iter()
        .map(|&pid| cpu::process_time(pid).ok())
        .collect();
    let pid = service.process.pid();
    let server_before = cpu::process_time(pid)?;
    let bounds = Bounds::new(settings.duration, settings.max_requests_per_worker);
    let stride = service.credentials.len() / CONNECTIONS;
    let workers = (0..CONNECTIONS).map(|worker| {
        cycle(
            service.process.addr(),
            service.path,
            Arc::clone(&service.credentials),
            worker * stride,
            bounds,
        )
    });
    let run = load::run(workers).await?;
    let server_cpu = cpu::process_time(pid)?.saturating_sub(server_before);
    let database_cpu = backends
        .iter()
        .zip(database_before)
        .filter_map(|(&pid, before)| Some(cpu::process_time(pid).ok()?.saturating_sub(before?)))
        .sum();
    Ok(Phase {
        run,
        warm_up_errors,
        server_cpu,
        database_cpu,
        revocations: Vec::new(),
        revocation_errors: Vec::new(),
    })
}

/// One connection sending `GET path` with the credentials in turn from `start`, until
/// `bounds` say stop. Every session is live: anything but 200 is an error.
async fn cycle(
    addr: std::net::SocketAddr,
    path: &'static str,
    credentials: Arc<[Credential]>,
    start: usize,
    bounds: Bounds,
) -> Stats {
    let mut stats = Stats::default();
    let mut connection = match Connection::open(addr).await {
        Ok(connection) => connection,
        Err(e) => {
            stats.failure(format!("connect: {e}"));
            return stats;
        }
    };
    let mut next = start;
    while bounds.allow(stats.attempts()) {
        let (name, value) = &credentials[next % credentials.len()];
        next += 1;
        let started = Instant::now();
        match connection.get_with(path, name, value).await {
            Ok(StatusCode::OK) => stats.success(started),
            Ok(other) => stats.failure(format!("HTTP {other}")),
            Err(e) => {
                stats.failure(format!("transport: {e}"));
                break;
            }
        }
    }
    stats
}

/// Revokes [`REVOCATIONS`] new sessions of a service at once and times their refusal.
struct Revoke<'a> {
    client: &'a tokio_postgres::Client,
    signer: &'a Signer,
    /// The first seeded session this round may use (layer and jwt-authorizer).
    first_index: u64,
}

impl Revoke<'_> {
    async fn measure(
        &self,
        service: &Service,
        revocation: Revocation,
        phase: &mut Phase,
    ) -> Result<()> {
        let indices = self.first_index..self.first_index + REVOCATIONS as u64;
        let credentials: Vec<Credential> = match service.peer {
            Peer::Layer | Peer::JwtAuthorizer => indices
                .clone()
                .map(|index| Ok((AUTHORIZATION, layer_token(self.signer, index)?)))
                .collect::<Result<_>>()?,
            Peer::TowerSessions | Peer::TowerSessionsCached => {
                tower_logins(&service.process, REVOCATIONS).await?.to_vec()
            }
            _ => {
                let tag = format!("revoked-{}", self.first_index);
                better_auth_sign_ups(&service.process, &tag, REVOCATIONS)
                    .await?
                    .to_vec()
            }
        };
        // Each session accepted once: cached as live wherever there is a cache.
        let mut connections = Vec::with_capacity(REVOCATIONS);
        for (name, value) in &credentials {
            let mut connection = Connection::open(service.process.addr()).await?;
            let status = connection.get_with(service.path, name, value).await?;
            if status != StatusCode::OK {
                return Err(format!(
                    "{}: a new session got {status}, expected 200",
                    service.peer.label()
                )
                .into());
            }
            connections.push(connection);
        }
        let mut revoked_at = Vec::with_capacity(REVOCATIONS);
        for (index, (_, value)) in indices.zip(&credentials) {
            self.revoke(service, revocation, index, value).await?;
            revoked_at.push(Instant::now());
        }
        let polls = connections
            .iter_mut()
            .zip(&credentials)
            .zip(revoked_at)
            .map(|((connection, (name, value)), since)| {
                refused_after(connection, service.path, name, value, since)
            });
        for outcome in join_all(polls).await {
            match outcome {
                Ok(delay) => phase.revocations.push(delay),
                Err(e) => phase.revocation_errors.push(e.to_string()),
            }
        }
        Ok(())
    }

    async fn revoke(
        &self,
        service: &Service,
        revocation: Revocation,
        index: u64,
        credential: &HeaderValue,
    ) -> Result<()> {
        match revocation {
            Revocation::SessionRow => {
                let id: uuid::Uuid = seed::session_id(index).parse()?;
                let rows = self
                    .client
                    .execute(
                        "UPDATE sessions SET revoked_at = now(), revoked_reason = 'admin' \
                         WHERE id = $1 AND revoked_at IS NULL",
                        &[&id],
                    )
                    .await?;
                expect_one_row(rows, "sessions")
            }
            Revocation::StoreRow => {
                let id = cookie_value(credential, rust_peers::SESSION_COOKIE)
                    .ok_or("a tower-sessions cookie without its id")?;
                let rows = self
                    .client
                    .execute(
                        &format!("DELETE FROM {} WHERE id = $1", rust_peers::SESSION_TABLE),
                        &[&id],
                    )
                    .await?;
                expect_one_row(rows, rust_peers::SESSION_TABLE)
            }
            Revocation::SignOut => {
                let Process::Node(node) = service.process.as_ref() else {
                    return Err("better-auth runs in a Node process".into());
                };
                let mut connection = Connection::open(node.addr).await?;
                let (status, _, body) = connection
                    .post(
                        node_peer::SIGN_OUT_PATH,
                        &[
                            (COOKIE, credential.clone()),
                            (ORIGIN, HeaderValue::from_str(&node.origin())?),
                        ],
                        Bytes::new(),
                    )
                    .await?;
                if status == StatusCode::OK {
                    Ok(())
                } else {
                    Err(format!(
                        "better-auth sign-out: expected 200, got {status}: {}",
                        String::from_utf8_lossy(&body)
                    )
                    .into())
                }
            }
        }
    }
}

fn expect_one_row(rows: u64, table: &str) -> Result<()> {
    if rows == 1 {
        Ok(())
    } else {
        Err(format!("revoking: {rows} rows of {table} changed, expected 1").into())
    }
}

/// Polls until the service refuses the credential: the time since `since`, or `None`
/// when it still accepts it after [`REVOCATION_LIMIT`].
async fn refused_after(
    connection: &mut Connection,
    path: &str,
    name: &HeaderName,
    value: &HeaderValue,
    since: Instant,
) -> Result<Option<Duration>> {
    loop {
        let status = connection.get_with(path, name, value).await?;
        let elapsed = since.elapsed();
        match status {
            StatusCode::UNAUTHORIZED => return Ok(Some(elapsed)),
            StatusCode::OK if elapsed < REVOCATION_LIMIT => {}
            StatusCode::OK => return Ok(None),
            other => return Err(format!("expected 200 or 401, got {other}").into()),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn row_name(service: &Service) -> String {
    match &service.version {
        Some(version) => format!("{} {version}", service.peer.label()),
        None => service.peer.label().to_owned(),
    }
}

fn record(phases: &[(&Service, Phase)]) -> Round {
    let mut round = Round::default();
    let find = |peer: Peer| phases.iter().find(|(service, _)| service.peer == peer);
    for (service, phase) in phases {
        let name = row_name(service);
        let stats = &phase.run.stats;
        let rate = phase.run.rate();
        round.value(format!("{name}: requests/s"), rate, Unit::PerSecond);
        if let Some((_, bare)) = service.peer.baseline().and_then(find) {
            round.value(
                format!("{name} / {}: requests/s", bare_name(service.peer)),
                rate / bare.run.rate(),
                Unit::Ratio,
            );
        }
        round.latency(format!("{name}: p50"), stats.percentile(500));
        round.latency(format!("{name}: p99"), stats.percentile(990));
        let successes = stats.successes();
        round.value(
            format!("{name}: server CPU per request"),
            cpu::micros_each(phase.server_cpu, successes),
            Unit::Micros,
        );
        if service.peer.baseline().is_some() {
            round.value(
                format!("{name}: PostgreSQL CPU per request"),
                cpu::micros_each(phase.database_cpu, successes),
                Unit::Micros,
            );
        }
        record_revocations(&mut round, &name, phase);
        round
            .count(format!("{name}: errors"), stats.error_count() as u64)
            .target(Target::AtMost(0.0));
        for (kind, count) in stats.errors() {
            round.note(format!("{name}: {kind} x{count}"));
        }
        for (kind, count) in phase.warm_up_errors.errors() {
            round.note(format!("{name} warm-up: {kind} x{count}"));
        }
    }
    round
}

fn bare_name(peer: Peer) -> &'static str {
    match peer.baseline() {
        Some(bare) => bare.label(),
        None => peer.label(),
    }
}

/// The revocation rows of one service: the slowest refusal, or how many sessions were
/// still accepted at the limit.
fn record_revocations(round: &mut Round, name: &str, phase: &Phase) {
    if phase.revocations.is_empty() && phase.revocation_errors.is_empty() {
        return;
    }
    let refused: Vec<Duration> = phase.revocations.iter().flatten().copied().collect();
    let still_accepted = phase.revocations.len() - refused.len();
    if let Some(slowest) = refused.iter().max() {
        round.latency(
            format!(
                "{name}: revoked until refused (slowest of {})",
                refused.len()
            ),
            Some(*slowest),
        );
    }
    round.count(
        format!(
            "{name}: revoked sessions still accepted after {} s",
            REVOCATION_LIMIT.as_secs()
        ),
        still_accepted as u64,
    );
    round
        .count(
            format!("{name}: revocation polls failed"),
            phase.revocation_errors.len() as u64,
        )
        .target(Target::AtMost(0.0));
    for error in &phase.revocation_errors {
        round.note(format!("{name}: revocation poll: {error}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_set_are_sent_back_together() {
        let mut headers = HeaderMap::new();
        headers.append(
            SET_COOKIE,
            HeaderValue::from_static("a=1; Max-Age=300; Path=/; HttpOnly"),
        );
        headers.append(SET_COOKIE, HeaderValue::from_static("b=x.y%3D; Path=/"));
        let cookie = cookie_header(&headers).unwrap();
        assert_eq!(cookie, "a=1; b=x.y%3D");
        assert_eq!(cookie_value(&cookie, "b"), Some("x.y%3D"));
        assert_eq!(cookie_value(&cookie, "c"), None);
        assert!(cookie_header(&HeaderMap::new()).is_err());
    }

    #[test]
    fn versions_come_from_the_lock_file() {
        let lock = r#"
version = 4

[[package]]
name = "jwt-authorizer"
version = "0.15.0"

[[package]]
name = "axum"
version = "0.7.9"

[[package]]
name = "axum"
version = "0.8.4"
"#;
        assert_eq!(locked_version(lock, "jwt-authorizer").unwrap(), "0.15.0");
        assert!(locked_version(lock, "axum").is_err());
        assert!(locked_version(lock, "tower-sessions").is_err());
    }

    #[test]
    fn every_guarded_peer_has_a_baseline_a_version_and_a_revocation() {
        for peer in PEERS {
            let guarded = peer.baseline().is_some();
            assert_eq!(peer.package().is_some(), guarded, "{peer:?}");
            assert_eq!(peer.revocation().is_some(), guarded, "{peer:?}");
            let table = guarantees(Duration::from_secs(300));
            assert_eq!(
                table.contains(&format!("| {} |", peer.label())),
                guarded,
                "{peer:?}"
            );
        }
    }
}
