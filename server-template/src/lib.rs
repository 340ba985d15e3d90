//! The Session Server template: a Poem backend that owns users and sessions.
//!
//! [`run`] is the whole server; [`cli`] adds argument parsing and logging, and the binary
//! only calls [`cli::main`]. Settings come from [`config::Config`], read once from the
//! environment. Protected routes are authenticated by `session-guard`'s Poem adapter, the
//! same core other services use.

pub mod access_token;
pub mod account_token;
pub mod accounts;
pub mod app_schema;
pub mod cli;
pub mod client_ip;
pub mod config;
pub mod connections;
pub mod cookies;
pub mod database;
pub mod device;
pub mod email;
pub mod error;
pub mod keys;
pub mod mail;
pub mod origin;
pub mod passwords;
pub mod purge;
pub mod rate_limit;
pub mod refresh_token;
pub mod routes;
pub mod store;

use std::sync::Arc;

use deadpool_postgres::Pool;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use poem::EndpointExt as _;
use session_guard::{Authenticator, PostgresLiveness, TokenSource, TokenVerifier};

use crate::access_token::AccessTokenIssuer;
use crate::accounts::{AccountMail, AccountPolicy, Accounts, LinkLifetimes, Tokens};
use crate::config::Config;
use crate::keys::KeyRing;
use crate::passwords::PasswordHasher;
use crate::rate_limit::{KeyedLimit, RateLimits};
use crate::refresh_token::RefreshKey;

/// Why the server could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
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
    Liveness(#[from] session_guard::LivenessError),
    /// The liveness store cannot work on this database.
    #[error(transparent)]
    LivenessNotReady(#[from] session_guard::NotReady),
    /// The development mail folder cannot be created.
    #[error("the mail folder {path}: {source}")]
    MailFolder {
        /// The folder (`MAIL_DEV_DIR`).
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
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
    /// `session-guard`'s core, for the protected routes.
    pub authenticator: Authenticator,
    /// The liveness store behind it (for its metrics).
    pub liveness: PostgresLiveness,
    /// The Prometheus registry.
    pub metrics: PrometheusHandle,
    /// Sends the outbox's mail.
    pub mail_worker: mail::worker::MailWorker,
}

/// Loads keys, prepares the database, and serves HTTP until SIGTERM or ctrl-c.
pub async fn run(config: Config) -> Result<(), StartupError> {
    let state = prepare(config).await?;
    let addr = state.config.bind_addr;
    let grace = state.config.shutdown_grace;
    let purge = purge::spawn(
        state.pool.clone(),
        state.limits.clone(),
        purge::Retention {
            sessions: state.config.session_retention,
            security_events: state.config.security_event_retention,
        },
        state.config.purge_interval,
    );
    let mail_worker = state
        .mail_worker
        .clone()
        .spawn(state.config.database.clone());
    let served = async {
        let shutdown = shutdown_signal()?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        connections::serve(
            listener,
            routes::app(&state).map_to_response(),
            state.config.connections,
            state.config.trusted_proxies.clone(),
            shutdown,
            grace,
        )
        .await
    }
    .await;
    purge.abort();
    mail_worker.abort();
    served.map_err(|source| StartupError::Serve { addr, source })?;
    tracing::info!("stopped");
    Ok(())
}

/// Everything `run` builds before it listens.
pub async fn prepare(config: Config) -> Result<AppState, StartupError> {
    session_guard::install_crypto_provider();
    let keys = Arc::new(KeyRing::load(&config)?);
    tracing::info!(
        kid = keys.signing().kid(),
        keys = keys.all().len(),
        "signing keys loaded"
    );
    let refresh_key = Arc::new(match &config.refresh_key_file {
        Some(path) => RefreshKey::load(path)?,
        None => RefreshKey::load_or_generate(&config.dev_keys_dir)?,
    });
    let applied = database::migrate(&config).await?;
    tracing::info!(database = %config.database_target(), applied, "database ready");
    let pool = database::pool(&config)?;
    let liveness = PostgresLiveness::builder(config.database.clone())
        .with_pool(pool.clone())
        .with_query_timeout(config.database_timeout)
        .start()?;
    liveness.ready().await?;
    let verifier = TokenVerifier::builder(keys.verification_keys())
        .issuer(&config.issuer)
        .audience(&config.audience)
        .build();
    // The header when a client sends one, else the access cookie of the cookie transport.
    let authenticator = Authenticator::new(verifier, liveness.clone()).with_token_source(
        TokenSource::BearerOrCookie(config.cookies.access_name().into()),
    );
    let mail_worker = mail_worker(&config, pool.clone())?;
    let account_mail = AccountMail::new(
        config.public_origin.clone(),
        Arc::clone(&refresh_key),
        LinkLifetimes {
            verification: config.email_verification_ttl,
            reset: config.password_reset_ttl,
        },
    );
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let accounts = Accounts::new(
        pool.clone(),
        liveness.clone(),
        PasswordHasher::new(cores),
        Tokens::new(
            AccessTokenIssuer::new(
                Arc::clone(&keys),
                &config.issuer,
                &config.audience,
                config.access_token_ttl,
            ),
            refresh_key,
        ),
        account_mail,
        AccountPolicy {
            idle_timeout: config.refresh_idle_timeout,
            absolute_lifetime: config.refresh_absolute_lifetime,
            refresh_grace: config.refresh_grace,
            refresh_max_retries: config.refresh_max_retries,
            known_ip_window: config.login_known_ip,
            password_change_max_failures: config.password_change_max_failures,
            max_sessions_per_user: config.max_sessions_per_user,
            require_verified_email: config.require_verified_email,
            new_signin_alerts: config.new_signin_alerts,
        },
    );
    let limits = rate_limits(&config);
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "a metrics recorder exists already; using a private one");
            PrometheusBuilder::new().build_recorder().handle()
        });
    Ok(AppState {
        config: Arc::new(config),
        pool,
        keys,
        accounts,
        limits,
        authenticator,
        liveness,
        metrics,
        mail_worker,
    })
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

/// Every limit, each keeping at most `RATE_LIMIT_MAX_KEYS` keys.
fn rate_limits(config: &Config) -> RateLimits {
    fn limit<K: std::hash::Hash + Eq + Clone>(per_minute: u32, config: &Config) -> KeyedLimit<K> {
        KeyedLimit::per_minute(per_minute).with_max_keys(config.rate_limit_max_keys)
    }
    RateLimits {
        login_failures_per_account: limit(config.login_per_account_per_minute, config),
        login_failures_per_account_ip: limit(config.login_per_account_per_minute, config),
        login_per_ip: limit(config.login_per_ip_per_minute, config),
        refresh_per_ip: limit(config.refresh_per_ip_per_minute, config),
        password_change_failures_per_user: limit(
            config.password_change_per_user_per_minute,
            config,
        ),
        // As many at once as the session may fail in all before it is revoked.
        password_change_failures_per_session: limit(config.password_change_max_failures, config),
        account_mail_per_address: limit(config.account_mail_per_address_per_minute, config),
        account_recovery_per_ip: limit(config.account_recovery_per_ip_per_minute, config),
    }
}

/// Listens for SIGTERM and ctrl-c from the moment it is called, and resolves on the first.
///
/// The handlers are installed here rather than when the future is first polled: a signal that
/// arrives between binding the port and the first poll of the accept loop would otherwise meet
/// the default action and kill the process instead of stopping it gracefully.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
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
