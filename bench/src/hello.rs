//! The measured service: an axum hello route, bare or behind a guard, in a child process
//! of its own (`session-bench serve-hello --mode ...`).
//!
//! | mode | guard |
//! |---|---|
//! | `bare` | none |
//! | `hs256`, `eddsa` | `SessionGuardLayer`: the harness's key, `PostgresLiveness` |
//! | `jwks` | `SessionGuardLayer`: keys from the server's JWKS URL, `PostgresLiveness` |
//! | `naive` | [`naive`](crate::naive): EdDSA verify and one query on every request |
//!
//! Every guarded mode serves the same handler as `bare`, so the difference is the guard.
//! The child prints `listening <addr>` once its revocation listener is connected, and
//! exits when its standard input closes or after `--max-seconds`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use session_guard::{
    Authenticator, PostgresLiveness, RemoteJwks, SessionGuardLayer, TokenVerifier,
};

use crate::child::{self, Child};
use crate::cli::Args;
use crate::naive::{self, NaiveGuard};
use crate::{Result, tokens};

/// How long a child may take to connect its listener and bind.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The route every mode serves.
pub(crate) const PATH: &str = "/hello";
/// `iss` and `aud` of the tokens the server issues (its defaults).
const SERVER_ISSUER: &str = "session-server";

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
        }
    }

    fn parse(name: &str) -> Result<Self> {
        [
            Self::Bare,
            Self::Hs256,
            Self::EdDsa,
            Self::Jwks,
            Self::Naive,
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
    session_guard::install_crypto_provider();
    let mode = Mode::parse(args.required("mode")?)?;
    let database: session_guard::postgres::DatabaseConfig =
        args.required("database-url")?.parse()?;
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
    database: session_guard::postgres::DatabaseConfig,
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
