//! Portcullis's auth server, as a library an application is built on.
//!
//! Accounts, login, refresh with rotation and theft detection, devices, revocation,
//! recovery mail and the browser account page, protected by [`portcullis`]'s guard. An
//! application describes what it adds with [`App`] (its own routes, migrations and
//! settings) and hands over: its `main` is [`App::main`], which runs the command line
//! (`serve`, `migrate`, `config`, `sessions …`). The `portcullis-server` binary is
//! [`App::standalone`].
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     portcullis_server::App::standalone().main()
//! }
//! ```
//!
//! The application's routes read the caller with the [`Authenticated`] extractor and
//! answer errors with [`ApiError`]. With the `testing` feature, [`testing`] starts the
//! application on a throwaway database and calls it as a signed-in user.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod access_token;
pub mod account_token;
pub mod accounts;
mod app;
pub mod assurance;
pub mod cli;
pub mod client_ip;
pub mod config;
pub mod connections;
pub mod cookies;
pub mod database;
pub mod device;
pub mod email;
pub mod error;
pub mod factors;
pub mod ids;
pub mod keys;
pub mod mail;
pub mod origin;
pub mod passwords;
pub mod purge;
pub mod rate_limit;
pub mod refresh_token;
pub mod routes;
pub mod store;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

use std::sync::Arc;

use deadpool_postgres::Pool;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use poem::EndpointExt as _;
use poem_openapi::OpenApi;
use portcullis::{Authenticator, PostgresLiveness, TokenSource, TokenVerifier};

pub use app::{App, Services};
pub use config::{Config, ConfigError};
pub use error::ServiceError;
pub use ids::{SessionId, UserId};
pub use routes::authenticated::Authenticated;
pub use routes::error::{ApiError, ErrorBody};

use crate::access_token::AccessTokenIssuer;
use crate::accounts::{AccountMail, Accounts, Tokens};
use crate::keys::KeyRing;
use crate::passwords::PasswordHasher;
use crate::rate_limit::RateLimits;
use crate::refresh_token::RefreshKey;

/// The liveness store on the feed `REVOCATION_FEED` names, after setting the database's
/// feed to it; and with the NATS feed, the relay this process runs, started first since
/// it creates the stream the store reads.
async fn liveness(
    config: &Config,
    pool: &Pool,
) -> Result<
    (
        PostgresLiveness,
        Option<Arc<portcullis::nats::NatsRelayHandle>>,
    ),
    StartupError,
> {
    use crate::config::RevocationFeedSettings;
    use portcullis::postgres::{RevocationFeedKind, RevocationLog};

    let kind = match config.database.feed {
        RevocationFeedSettings::Postgres => RevocationFeedKind::Postgres,
        RevocationFeedSettings::Nats { .. } => RevocationFeedKind::Nats,
    };
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| StartupError::RevocationFeed {
        feed: kind.as_str(),
        source,
    };
    let client = pool.get().await.map_err(|e| failed(Box::new(e)))?;
    RevocationLog::set_feed(&**client, kind)
        .await
        .map_err(|e| failed(Box::new(e)))?;
    drop(client);
    let builder = PostgresLiveness::builder(config.database.url.clone())
        .with_pool(pool.clone())
        .with_query_timeout(config.database.timeout);
    Ok(match &config.database.feed {
        RevocationFeedSettings::Postgres => (builder.start()?, None),
        RevocationFeedSettings::Nats { nats, relay } => {
            let relay = relay.then(|| {
                Arc::new(
                    portcullis::nats::NatsRelay::new(config.database.url.clone(), nats.clone())
                        .start(),
                )
            });
            tracing::info!(url = %nats.url, relay = relay.is_some(), "revocations through NATS");
            (builder.with_nats(nats.clone()).start()?, relay)
        }
    })
}

/// Why the server could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A setting, the application's own included, is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The signing keys are missing or unusable.
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    /// The refresh-token key is missing or unusable.
    #[error(transparent)]
    RefreshKey(#[from] refresh_token::RefreshKeyError),
    /// The database could not be reached, created or migrated.
    #[error(transparent)]
    Database(#[from] database::DatabaseError),
    /// The liveness store could not be started.
    #[error(transparent)]
    Liveness(#[from] portcullis::LivenessError),
    /// The liveness store cannot work on this database.
    #[error(transparent)]
    LivenessNotReady(#[from] portcullis::NotReady),
    /// The development mail folder cannot be created.
    #[error("the mail folder {path}: {source}")]
    MailFolder {
        /// The folder (`MAIL_DEV_DIR`).
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database's revocation feed could not be set (`REVOCATION_FEED`).
    #[error("setting the database's revocation feed to {feed}: {source}")]
    RevocationFeed {
        /// The feed asked for.
        feed: &'static str,
        /// What PostgreSQL said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Binding or serving failed.
    #[error("HTTP server on {addr}: {source}")]
    Serve {
        /// The address from `BIND_ADDR`.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The settings.
    pub config: Arc<Config>,
    /// Connections to PostgreSQL.
    pub pool: Pool,
    /// The keys that sign and verify access tokens.
    pub keys: Arc<KeyRing>,
    /// Accounts and sessions.
    pub accounts: Accounts,
    /// The rate limits the routes apply before they call the account logic.
    pub limits: RateLimits,
    /// `portcullis`'s core, for the protected routes.
    pub authenticator: Authenticator,
    /// The liveness store behind it (for its metrics).
    pub liveness: PostgresLiveness,
    /// The Prometheus registry.
    pub metrics: PrometheusHandle,
    /// Sends the outbox's mail.
    pub mail_worker: mail::worker::MailWorker,
    /// The revocation relay this process runs (`REVOCATION_FEED=nats` with
    /// `REVOCATION_RELAY=on`); it stops when the last clone of the state is dropped.
    pub relay: Option<Arc<portcullis::nats::NatsRelayHandle>>,
}

impl AppState {
    /// What the application's routes get.
    pub fn services(&self) -> Services {
        Services::new(self.pool.clone(), Arc::clone(&self.config))
    }
}

/// Loads keys, prepares the database, and serves HTTP on `BIND_ADDR` until SIGTERM or
/// ctrl-c.
pub async fn run<Api: OpenApi + 'static>(
    app: &App<Api>,
    config: Config,
) -> Result<(), StartupError> {
    let addr = config.http.bind_addr;
    let state = prepare(app, config).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Serve { addr, source })?;
    let shutdown = shutdown_signal().map_err(|source| StartupError::Serve { addr, source })?;
    serve(app, state, listener, shutdown).await
}

/// Serves `state` on `listener` until `shutdown` resolves, with the purge job and the mail
/// worker running beside it.
pub async fn serve<Api: OpenApi + 'static>(
    app: &App<Api>,
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let addr = listener.local_addr().unwrap_or(state.config.http.bind_addr);
    let purge = purge::spawn(
        state.pool.clone(),
        state.limits.clone(),
        state.config.retention,
    );
    let mail_worker = state
        .mail_worker
        .clone()
        .spawn(state.config.database.url.clone());
    let endpoint = routes::app(&state, app)
        .map_err(StartupError::Config)?
        .map_to_response();
    let served = connections::serve(
        listener,
        endpoint,
        state.config.http.connections,
        state.config.http.trusted_proxies.clone(),
        shutdown,
        state.config.http.shutdown_grace,
    )
    .await;
    purge.abort();
    mail_worker.abort();
    served.map_err(|source| StartupError::Serve { addr, source })?;
    tracing::info!("stopped");
    Ok(())
}

/// Everything `run` builds before it listens: keys, the migrated database, the account
/// logic, and the application's routes, built once here so that a bad setting of the
/// application's stops start-up.
pub async fn prepare<Api: OpenApi + 'static>(
    app: &App<Api>,
    config: Config,
) -> Result<AppState, StartupError> {
    portcullis::install_crypto_provider();
    let keys = Arc::new(KeyRing::load(&config.keys, config.environment)?);
    tracing::info!(
        kid = keys.signing().kid(),
        keys = keys.all().len(),
        "signing keys loaded"
    );
    let refresh_key = Arc::new(match &config.keys.refresh_key_file {
        Some(path) => RefreshKey::load(path)?,
        None => RefreshKey::load_or_generate(&config.keys.dev_keys_dir)?,
    });
    let applied = database::migrate(&config, app.migration_runner()).await?;
    tracing::info!(database = %config.database_target(), applied, "database ready");
    let pool = database::pool(&config)?;
    let (liveness, relay) = liveness(&config, &pool).await?;
    liveness.ready().await?;
    let verifier = TokenVerifier::builder(keys.verification_keys())
        .issuer(&config.tokens.issuer)
        .audience(&config.tokens.audience)
        .build();
    // The header when a client sends one, else the access cookie of the cookie transport,
    // whose requests must come from `PUBLIC_URL`'s pages whatever `Host` a proxy forwards.
    let authenticator = Authenticator::new(verifier, liveness.clone())
        .with_token_source(TokenSource::BearerOrCookie(
            config.browser.cookies.access_name().into(),
        ))
        .with_expected_origins(config.browser.public_origin.expected_origins());
    let mail_worker = mail_worker(&config, pool.clone())?;
    let account_mail = AccountMail::new(
        config.browser.public_origin.clone(),
        Arc::clone(&refresh_key),
        config.mail.links,
        config.mail.limits,
    );
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    // WebAuthn needs a domain: a `PUBLIC_URL` on an IP address (the development default)
    // leaves passkeys off, and their routes say so.
    let relying_party = match factors::passkeys::RelyingParty::new(
        config.browser.public_origin.as_str(),
        &config.factors.issuer,
    ) {
        Ok(rp) => Some(rp),
        Err(reason) => {
            tracing::warn!(%reason, "passkeys are off: PUBLIC_URL must name a domain for them");
            None
        }
    };
    let accounts = Accounts::new(
        pool.clone(),
        liveness.clone(),
        PasswordHasher::new(cores),
        Tokens::new(
            AccessTokenIssuer::new(Arc::clone(&keys), &config.tokens),
            refresh_key,
        ),
        account_mail,
        config.accounts,
        (config.factors.clone(), relying_party),
    );
    let limits = RateLimits::new(
        &config.rate_limits,
        config.accounts.password_change_max_failures,
    );
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .unwrap_or_else(|e| {
            tracing::debug!(error = %e, "a metrics recorder exists already; using a private one");
            PrometheusBuilder::new().build_recorder().handle()
        });
    let state = AppState {
        config: Arc::new(config),
        pool,
        keys,
        accounts,
        limits,
        authenticator,
        liveness,
        metrics,
        mail_worker,
        relay,
    };
    app.build_api(&state.services())?;
    Ok(state)
}

/// The worker that sends the outbox's mail the way `config` says.
fn mail_worker(config: &Config, pool: Pool) -> Result<mail::worker::MailWorker, StartupError> {
    let mailer = mail::Mailer::new(&config.mail.delivery).map_err(|source| {
        let path = match &config.mail.delivery {
            mail::Delivery::Files(path) => path.clone(),
            mail::Delivery::Smtp(_) => std::path::PathBuf::new(),
        };
        StartupError::MailFolder { path, source }
    })?;
    match &config.mail.delivery {
        mail::Delivery::Smtp(url) => {
            tracing::info!(server = %url, "account mail goes to the SMTP server");
        }
        mail::Delivery::Files(path) => tracing::warn!(
            folder = %path.display(),
            "development: no SMTP_URL, so account mail is written to files"
        ),
    }
    Ok(mail::worker::MailWorker::new(
        pool,
        mailer,
        config.mail.from.clone(),
        config.mail.worker,
    ))
}

/// Listens for SIGTERM and ctrl-c from the moment it is called, and resolves on the first.
///
/// The handlers are installed here rather than when the future is first polled: a signal that
/// arrives between binding the port and the first poll of the accept loop would otherwise meet
/// the default action and kill the process instead of stopping it gracefully.
pub(crate) fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => {},
                _ = interrupt.recv() => {},
            }
            tracing::info!("shutting down: finishing in-flight requests");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::error!(error = %e, "cannot listen for ctrl-c");
                std::future::pending::<()>().await;
            }
            tracing::info!("shutting down: finishing in-flight requests");
        })
    }
}
