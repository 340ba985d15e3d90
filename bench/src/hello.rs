//! The measured service: an axum hello route, bare or behind a guard, in a child process
//! of its own (`portcullis-bench serve-hello --mode ...`).
//!
//! | mode | guard |
//! |---|---|
//! | `bare` | none |
//! | `hs256`, `eddsa` | `SessionGuardLayer`: the harness's key, `PostgresLiveness` |
//! | `jwks` | `SessionGuardLayer`: keys from the server's JWKS URL, `PostgresLiveness` |
//! | `naive` | [`naive`](crate::naive): EdDSA verify and one query on every request |
//! | `jwt-authorizer`, `tower-sessions`, `tower-sessions-cached` | a peer: see [`rust_peers`](crate::rust_peers) |
//!
//! Every guarded mode serves the same handler as `bare`, so the difference is the guard.
//! The child prints `listening <addr>` once its revocation listener is connected, and
//! exits when its standard input closes or after `--max-seconds`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use portcullis::{Authenticator, PostgresLiveness, RemoteJwks, SessionGuardLayer, TokenVerifier};

use crate::child::{self, Child};
use crate::cli::Args;
use crate::naive::{self, NaiveGuard};
use crate::rust_peers::{self, SessionStorage};
use crate::{Result, tokens};

/// How long a child may take to connect its listener and bind.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The route every mode serves.
pub(crate) const PATH: &str = "/hello";
/// `iss` and `aud` of the tokens the server issues (its defaults).
const SERVER_ISSUER: &str = "portcullis-server";

/// Which guard stands in front of the hello route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// No guard.
    Bare,
    /// The layer, HS256 tokens.
    Hs256,
    /// The layer, EdDSA tokens.
    EdDsa,
    /// The layer, keys from the server's JWKS.
    Jwks,
    /// The naive guard, EdDSA tokens.
    Naive,
    /// jwt-authorizer, EdDSA tokens.
    JwtAuthorizer,
    /// tower-sessions on PostgreSQL, a session cookie.
    TowerSessions,
    /// tower-sessions with a Moka cache in front of PostgreSQL, a session cookie.
    TowerSessionsCached,
}

impl Mode {
    /// The name on the command line and in the table.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Bare => "bare",
            Self::Hs256 => "hs256",
            Self::EdDsa => "eddsa",
            Self::Jwks => "jwks",
            Self::Naive => "naive",
            Self::JwtAuthorizer => "jwt-authorizer",
            Self::TowerSessions => "tower-sessions",
            Self::TowerSessionsCached => "tower-sessions-cached",
        }
    }

    fn parse(name: &str) -> Result<Self> {
        [
            Self::Bare,
            Self::Hs256,
            Self::EdDsa,
            Self::Jwks,
            Self::Naive,
            Self::JwtAuthorizer,
            Self::TowerSessions,
            Self::TowerSessionsCached,
        ]
        .into_iter()
        .find(|mode| mode.name() == name)
        .ok_or_else(|| format!("--mode: unknown mode {name:?}").into())
    }
}

async fn hello() -> &'static str {
    "hello\n"
}

/// A running hello service.
#[derive(Debug)]
pub(crate) struct HelloService {
    child: Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
}

impl HelloService {
    /// Starts a child in `mode` against `database_url`; `options` are extra `--name value`
    /// pairs (`secret-file`, `jwks-url`).
    pub(crate) async fn start(
        mode: Mode,
        database_url: &str,
        options: &[(&str, &str)],
    ) -> Result<Self> {
        let mut args = vec![
            "serve-hello".to_owned(),
            "--mode".to_owned(),
            mode.name().to_owned(),
            "--database-url".to_owned(),
            database_url.to_owned(),
        ];
        for (name, value) in options {
            args.push(format!("--{name}"));
            args.push((*value).to_owned());
        }
        let mut child = Child::spawn(&args)?;
        let addr = child
            .line_after("listening", START_TIMEOUT)
            .await?
            .parse()?;
        Ok(Self { child, addr })
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// `serve-hello`: the child side.
pub(crate) async fn serve(args: &Args) -> Result<()> {
    portcullis::install_crypto_provider();
    let mode = Mode::parse(args.required("mode")?)?;
    let database_url = args.required("database-url")?;
    let database: portcullis::postgres::DatabaseConfig = database_url.parse()?;
    let lifetime = Duration::from_secs(args.number("max-seconds", 3_600)?);
    let app = Router::new().route(PATH, get(hello));
    let app = match mode {
        Mode::Bare => app,
        Mode::Hs256 => {
            let secret = tokens::read_secret(args.required("secret-file")?)?;
            app.layer(guard(tokens::hs256_verifier(&secret)?, database).await?)
        }
        Mode::EdDsa => app.layer(guard(tokens::eddsa_verifier()?, database).await?),
        Mode::Jwks => {
            let keys = RemoteJwks::new(args.required("jwks-url")?)?;
            let verifier = TokenVerifier::builder(keys)
                .issuer(SERVER_ISSUER)
                .audience(SERVER_ISSUER)
                .build();
            app.layer(guard(verifier, database).await?)
        }
        Mode::Naive => app.layer(axum::middleware::from_fn_with_state(
            NaiveGuard::new(database.settings().clone())?,
            naive::guard,
        )),
        Mode::JwtAuthorizer => rust_peers::jwt_authorizer(app).await?,
        Mode::TowerSessions => {
            rust_peers::tower_sessions(app, &postgres_url(database_url)?, SessionStorage::Postgres)
                .await?
        }
        Mode::TowerSessionsCached => {
            rust_peers::tower_sessions(
                app,
                &postgres_url(database_url)?,
                SessionStorage::CachedPostgres,
            )
            .await?
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                () = child::stdin_closed() => {}
                () = tokio::time::sleep(lifetime) => {}
            }
        })
        .await?;
    Ok(())
}

/// The layer with `verifier` and `PostgresLiveness` on `database`, its defaults
/// untouched, once its revocation listener is connected.
pub(crate) async fn guard(
    verifier: TokenVerifier,
    database: portcullis::postgres::DatabaseConfig,
) -> Result<SessionGuardLayer> {
    let liveness = PostgresLiveness::builder(database).start()?;
    wait_for_listener(&liveness).await?;
    Ok(SessionGuardLayer::new(Authenticator::new(
        verifier, liveness,
    )))
}

/// Waits (at most [`START_TIMEOUT`]) until `liveness` listens for revocations.
pub(crate) async fn wait_for_listener(liveness: &PostgresLiveness) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while !liveness.stats().listener_connected {
        if Instant::now() > deadline {
            return Err("the revocation listener did not connect".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// `connection_string` (libpq key-value or URL) as a `postgres://` URL, the only form sqlx
/// and node-postgres read; a Unix socket directory goes into the `host` parameter.
pub(crate) fn postgres_url(connection_string: &str) -> Result<String> {
    use tokio_postgres::config::Host;
    let config: tokio_postgres::Config = connection_string.parse()?;
    let user = config.get_user().ok_or("the database URL names no user")?;
    let dbname = config
        .get_dbname()
        .ok_or("the database URL names no database")?;
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let encode = |text: &str| {
        percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let mut url = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => format!(
            "postgres://{}@{host}:{port}/{}",
            encode(user),
            encode(dbname)
        ),
        Some(Host::Unix(path)) => format!(
            "postgres://{}@localhost:{port}/{}?host={}",
            encode(user),
            encode(dbname),
            encode(path.to_str().ok_or("the socket path is not UTF-8")?)
        ),
        None => return Err("the database URL names no host".into()),
    };
    if let Some(password) = config.get_password() {
        let password = std::str::from_utf8(password)?;
        url = url.replacen('@', &format!(":{}@", encode(password)), 1);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_strings_become_urls() {
        assert_eq!(
            postgres_url("host=/var/run/postgresql port=5433 user=root dbname=bench_1").unwrap(),
            "postgres://root@localhost:5433/bench%5F1?host=%2Fvar%2Frun%2Fpostgresql"
        );
        assert_eq!(
            postgres_url("host=127.0.0.1 user=root password=p@ss dbname=db").unwrap(),
            "postgres://root:p%40ss@127.0.0.1:5432/db"
        );
        assert!(postgres_url("host=127.0.0.1 dbname=db").is_err());
    }
}
