//! Settings, read once from the environment at start-up.
//!
//! Every variable is declared once, in [`settings`], with its default, the values it
//! allows and its meaning; [`Config::from_lookup`] reads each through its declaration into
//! one section per concern ([`DatabaseSettings`], [`HttpSettings`], [`AccountPolicy`], …),
//! which the parts of the server take whole. An application declares its own settings the
//! same way ([`settings::Setting`]) and reads them from [`AppSettings`]; `config` prints
//! them all as the configuration reference. Nothing else in the crate reads the
//! environment: it gets a [`Config`].

pub mod settings;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::accounts::{AccountPolicy, LinkLifetimes, MailLimits};
use crate::client_ip::{ClientIpHeader, TrustedProxies};
use crate::cookies::{CookieNames, CookieRole, SessionCookies};
use crate::mail::worker::WorkerSettings;
use crate::mail::{Delivery, SmtpUrl};
use crate::origin::PublicOrigin;
use crate::purge::Retention;
use crate::store::mail_log::MailCaps;
use settings::{DAY, Kind, Setting, Unit};

/// The name of the stand-alone server, and what its unset defaults derive from.
pub const STANDALONE_NAME: &str = "portcullis-server";

/// A variable that is set but unusable, named so the operator can fix it.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// What is wrong with it and what would be right.
    pub message: String,
}

impl ConfigError {
    /// `var` is unusable: `message` says why and what would be right.
    pub fn new(var: &'static str, message: impl Into<String>) -> Self {
        Self {
            var,
            message: message.into(),
        }
    }
}

/// Development or production: decides whether the server may improvise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Creates its database when missing and generates a signing key on first run.
    Development,
    /// Refuses to start without explicitly given keys, and never creates its database.
    Production,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// How long connections may take and how many there may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// The longest an HTTP/1 connection may take to send a request's header, counted
    /// from when it is ready for one, so it also ends an idle keep-alive connection
    /// ([`settings::HEADER_READ_TIMEOUT_SECONDS`]).
    pub header_read_timeout: Duration,
    /// A connection that moves nothing for this long is closed
    /// ([`settings::IDLE_CONNECTION_TIMEOUT_SECONDS`]).
    pub idle_timeout: Duration,
    /// Open connections in all ([`settings::MAX_CONNECTIONS`]).
    pub max_total: usize,
    /// Open connections per client network, trusted proxies exempt; 0: no cap
    /// ([`settings::MAX_CONNECTIONS_PER_IP`]).
    pub max_per_ip: usize,
}

/// Everything the server needs to know about its surroundings, one section per concern.
/// Each field names the declaration in [`settings`] it is read from, where its default
/// and range are.
#[derive(Debug, Clone)]
pub struct Config {
    /// The application these settings are for: the stand-alone server
    /// ([`STANDALONE_NAME`]) or an app built on the library. Unset names and senders
    /// default to it.
    pub app_name: String,
    /// Development or production ([`settings::APP_ENV`]).
    pub environment: Environment,
    /// Where the database is and how it is used.
    pub database: DatabaseSettings,
    /// Where the server listens, and how requests and connections are bounded.
    pub http: HttpSettings,
    /// The public origin and the session cookies of browsers.
    pub browser: BrowserSettings,
    /// Where the keys are.
    pub keys: KeySettings,
    /// What access tokens say and how long they live.
    pub tokens: TokenSettings,
    /// The rules of sessions, refresh tokens and credentials.
    pub accounts: AccountPolicy,
    /// How often clients may try.
    pub rate_limits: RateLimitSettings,
    /// How long ended sessions and security events are kept, and how often they are purged.
    pub retention: Retention,
    /// Second factors and the proof sensitive routes need.
    pub factors: FactorSettings,
    /// How account mail is sent, and how long its links work.
    pub mail: MailSettings,
    /// What is logged and how.
    pub logging: LogSettings,
    /// The application's own settings, as it declared them.
    pub application: AppSettings,
}

/// Where the database is and how it is used.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// Where the database is, `sslmode` and `sslrootcert` included, with the user and
    /// database name filled in when the URL names none ([`settings::DATABASE_URL`]).
    pub url: portcullis::postgres::DatabaseConfig,
    /// The most connections the pool opens ([`settings::DATABASE_POOL_SIZE`]).
    pub pool_size: usize,
    /// The longest wait for a connection or a query
    /// ([`settings::DATABASE_TIMEOUT_SECONDS`]).
    pub timeout: Duration,
    /// How instances hear of revocations ([`settings::REVOCATION_FEED`],
    /// [`settings::NATS_URL`], [`settings::REVOCATION_RELAY`]).
    pub feed: RevocationFeedSettings,
}

/// How instances hear of revocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationFeedSettings {
    /// PostgreSQL `LISTEN`.
    Postgres,
    /// A NATS `JetStream` stream a relay fills from the revocation log.
    Nats {
        /// Where the stream is.
        nats: portcullis::nats::NatsFeedConfig,
        /// Whether this process runs a relay too.
        relay: bool,
    },
}

/// Where the server listens, and how requests and connections are bounded.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Where the HTTP server listens ([`settings::BIND_ADDR`]).
    pub bind_addr: SocketAddr,
    /// The largest request body accepted ([`settings::MAX_BODY_BYTES`]).
    pub max_body_bytes: usize,
    /// The longest a request may take ([`settings::REQUEST_TIMEOUT_SECONDS`]).
    pub request_timeout: Duration,
    /// How connections are bounded: header and idle timeouts, connection caps.
    pub connections: ConnectionSettings,
    /// The proxies whose forwarding header is believed, and that header
    /// ([`settings::TRUSTED_PROXIES`], [`settings::CLIENT_IP_HEADER`]).
    pub trusted_proxies: TrustedProxies,
    /// How long in-flight requests may finish after SIGTERM or ctrl-c
    /// ([`settings::SHUTDOWN_GRACE_SECONDS`]).
    pub shutdown_grace: Duration,
    /// Whether `/docs` serves the interactive API reference ([`settings::OPENAPI_UI`]).
    pub openapi_ui: bool,
}

/// The public origin and the session cookies of browsers.
#[derive(Debug, Clone)]
pub struct BrowserSettings {
    /// The origin browsers reach the server at, which cookie-authenticated requests that
    /// change state must come from ([`settings::PUBLIC_URL`]).
    pub public_origin: PublicOrigin,
    /// The session cookies of the cookie transport: names and `Secure`
    /// ([`settings::ACCESS_COOKIE_NAME`], [`settings::REFRESH_COOKIE_NAME`],
    /// [`settings::COOKIE_SECURE`]).
    pub cookies: SessionCookies,
}

/// Where the keys are.
#[derive(Debug, Clone)]
pub struct KeySettings {
    /// Paths of Ed25519 private keys; the first signs, all verify
    /// ([`settings::JWT_SIGNING_KEYS`]). Empty in development means: generate one.
    pub signing_keys: Vec<PathBuf>,
    /// The file keying refresh-token hashes and successors
    /// ([`settings::REFRESH_TOKEN_KEY_FILE`]). `None` in development means: generate one
    /// in `dev_keys_dir`.
    pub refresh_key_file: Option<PathBuf>,
    /// Where development mode keeps its generated keys ([`settings::DEV_KEYS_DIR`]).
    pub dev_keys_dir: PathBuf,
}

/// Second factors and the proof sensitive routes need.
#[derive(Debug, Clone)]
pub struct FactorSettings {
    /// The issuer authenticator apps and passkey prompts show ([`settings::MFA_ISSUER`]).
    pub issuer: String,
    /// How long an `mfa_token` and a passkey ceremony work
    /// ([`settings::MFA_CHALLENGE_TTL_SECONDS`]).
    pub challenge_ttl: Duration,
    /// Wrong codes per `mfa_token` ([`settings::MFA_MAX_FAILURES_PER_TOKEN`]).
    pub max_failures_per_token: u32,
    /// Wrong codes per account per window ([`settings::MFA_MAX_FAILURES_PER_ACCOUNT`]).
    pub max_failures_per_account: u32,
    /// How recent a proof the privileged routes need
    /// ([`settings::PRIVILEGED_AUTH_MAX_AGE_SECONDS`]).
    pub privileged_max_age: Duration,
    /// Whether a refresh from another browser or OS asks for step-up
    /// ([`settings::STEP_UP_ON_DEVICE_CHANGE`]).
    pub step_up_on_device_change: bool,
}

/// What access tokens say and how long they live.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// The `iss` of access tokens ([`settings::JWT_ISSUER`]).
    pub issuer: String,
    /// The `aud` of access tokens ([`settings::JWT_AUDIENCE`]).
    pub audience: String,
    /// Access token lifetime ([`settings::ACCESS_TOKEN_TTL_SECONDS`]).
    pub access_ttl: Duration,
}

/// How often clients may try: each a budget per minute, 0 turning it off.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitSettings {
    /// Failed logins per account per minute, and per account from one client IP
    /// ([`settings::RATE_LIMIT_LOGIN_PER_ACCOUNT`]).
    pub login_per_account: u32,
    /// Failed logins, and registrations, per client IP per minute
    /// ([`settings::RATE_LIMIT_LOGIN_PER_IP`]).
    pub login_per_ip: u32,
    /// Failed password changes per user per minute
    /// ([`settings::RATE_LIMIT_PASSWORD_CHANGE_PER_USER`]).
    pub password_change_per_user: u32,
    /// Refreshes per client IP per minute ([`settings::RATE_LIMIT_REFRESH_PER_IP`]).
    pub refresh_per_ip: u32,
    /// Password-reset requests per address, and verification mails per user, per minute
    /// ([`settings::RATE_LIMIT_ACCOUNT_MAIL_PER_ADDRESS`]).
    pub account_mail_per_address: u32,
    /// Requests to the reset and verification routes per client IP per minute
    /// ([`settings::RATE_LIMIT_ACCOUNT_RECOVERY_PER_IP`]).
    pub account_recovery_per_ip: u32,
    /// The most keys each limiter keeps ([`settings::RATE_LIMIT_MAX_KEYS`]).
    pub max_keys: usize,
}

/// How account mail is sent, and by whom.
#[derive(Debug, Clone)]
pub struct MailSettings {
    /// SMTP, or files in development ([`settings::SMTP_URL`], [`settings::MAIL_DEV_DIR`]).
    pub delivery: Delivery,
    /// The sender ([`settings::MAIL_FROM`]).
    pub from: lettre::message::Mailbox,
    /// How the worker paces itself ([`settings::MAIL_POLL_INTERVAL_SECONDS`],
    /// [`settings::MAIL_RETRY_BASE_SECONDS`], [`settings::MAIL_BATCH_SIZE`]).
    pub worker: WorkerSettings,
    /// How long the links of verification and reset mails work
    /// ([`settings::EMAIL_VERIFICATION_TTL_SECONDS`],
    /// [`settings::PASSWORD_RESET_TTL_SECONDS`]).
    pub links: LinkLifetimes,
    /// How much account mail goes out and how many reset links stay live
    /// ([`settings::ACCOUNT_MAIL_PER_HOUR`], [`settings::ACCOUNT_MAIL_PER_DAY`],
    /// [`settings::SIGNIN_ALERTS_PER_HOUR`], [`settings::PASSWORD_RESET_LIVE_LINKS`]).
    pub limits: MailLimits,
}

/// What is logged and how.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// A tracing filter ([`settings::RUST_LOG`]).
    pub filter: String,
    /// How log lines are written ([`settings::LOG_FORMAT`]).
    pub format: LogFormat,
}

/// The settings an application declared ([`crate::App::settings`]), checked against their
/// declarations when the configuration is read, and read by the application through the
/// same declarations.
///
/// ```
/// use portcullis_server::config::{AppSettings, ConfigError};
/// use portcullis_server::config::settings::{Group, Kind, Setting, Unit};
///
/// const NOTES_PER_USER: Setting = Setting {
///     name: "NOTES_PER_USER",
///     group: Group::Application("Notes"),
///     kind: Kind::Number { default: 1000, min: 1, max: 100_000, unit: Unit::Count },
///     meaning: "Most notes one user may keep.",
/// };
///
/// fn limit(settings: &AppSettings) -> Result<u32, ConfigError> {
///     settings.number(&NOTES_PER_USER)
/// }
/// ```
#[derive(Clone, Default)]
pub struct AppSettings {
    /// The declared settings' values as given; `None` when unset or empty.
    given: BTreeMap<&'static str, Option<String>>,
}

/// Names only: a value may be a secret (an API key of the application's).
impl std::fmt::Debug for AppSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.given.keys()).finish()
    }
}

impl AppSettings {
    /// Reads each of `declared` through `lookup` and checks it against its declaration.
    fn read(
        declared: &[&'static Setting],
        lookup: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Self, ConfigError> {
        let env = Lookup(lookup);
        let mut given = BTreeMap::new();
        for setting in declared {
            if settings::ALL.iter().any(|own| own.name == setting.name) {
                return Err(ConfigError::new(
                    setting.name,
                    "is declared by the application and by Portcullis itself; rename the \
                     application's",
                ));
            }
            if given.insert(setting.name, env.given(setting)?).is_some() {
                return Err(ConfigError::new(
                    setting.name,
                    "is declared twice by the application",
                ));
            }
        }
        let settings = Self { given };
        for setting in declared {
            settings.check(setting)?;
        }
        Ok(settings)
    }

    /// Whether the value of `setting` fits its declaration: a number in range, one of
    /// the choices.
    fn check(&self, setting: &Setting) -> Result<(), ConfigError> {
        match setting.kind {
            Kind::Number { .. } => self.number::<u64>(setting).map(drop),
            Kind::Choice { .. } => self.choice(setting).map(drop),
            Kind::Text { .. } | Kind::Optional { .. } => Ok(()),
        }
    }

    fn lookup(&self) -> impl Fn(&str) -> Option<std::ffi::OsString> + '_ {
        |name| self.given.get(name).cloned().flatten().map(Into::into)
    }

    fn declared(&self, setting: &Setting) -> Result<(), ConfigError> {
        if self.given.contains_key(setting.name) {
            Ok(())
        } else {
            Err(ConfigError::new(
                setting.name,
                "is read by the application but not declared; add it to `App::settings`",
            ))
        }
    }

    /// The value given, when given (any kind of setting).
    pub fn given(&self, setting: &Setting) -> Result<Option<String>, ConfigError> {
        self.declared(setting)?;
        Ok(self.given.get(setting.name).cloned().flatten())
    }

    /// A [`Kind::Text`] or [`Kind::Choice`] setting's value, or its default.
    pub fn text(&self, setting: &Setting) -> Result<String, ConfigError> {
        self.declared(setting)?;
        Lookup(&self.lookup()).text(setting)
    }

    /// A [`Kind::Choice`] setting's value (one of its choices), or its default.
    pub fn choice(&self, setting: &Setting) -> Result<String, ConfigError> {
        let value = self.text(setting)?;
        match setting.kind {
            Kind::Choice { choices, .. } if choices.contains(&value.as_str()) => Ok(value),
            Kind::Choice { .. } => Err(not_a_choice(setting, &value)),
            _ => Err(misdeclared(setting, "a choice")),
        }
    }

    /// A `false`/`true` [`Kind::Choice`] setting.
    pub fn flag(&self, setting: &Setting) -> Result<bool, ConfigError> {
        self.declared(setting)?;
        flag(&Lookup(&self.lookup()), setting)
    }

    /// A [`Kind::Number`] setting's value or default, within its range.
    pub fn number<T: TryFrom<u64>>(&self, setting: &Setting) -> Result<T, ConfigError> {
        self.declared(setting)?;
        Lookup(&self.lookup()).number(setting)
    }

    /// A [`Kind::Number`] setting of seconds or days, as a duration.
    pub fn duration(&self, setting: &Setting) -> Result<Duration, ConfigError> {
        self.declared(setting)?;
        Lookup(&self.lookup()).duration(setting)
    }

    /// A [`Kind::Text`] setting's value or default, parsed; a value that does not parse
    /// is an error naming the variable.
    pub fn parsed<T>(&self, setting: &Setting) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        self.declared(setting)?;
        Lookup(&self.lookup()).parsed(setting)
    }
}

impl Config {
    /// Reads the process environment for the stand-alone server.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(STANDALONE_NAME, &[], |name| std::env::var_os(name))
    }

    /// Reads settings for the application `app_name`, which declared `app_settings`,
    /// through `lookup`, which maps a variable name to its value.
    pub fn from_lookup(
        app_name: &str,
        app_settings: &[&'static Setting],
        lookup: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Self, ConfigError> {
        use settings::{
            ACCESS_TOKEN_TTL_SECONDS, BIND_ADDR, DATABASE_POOL_SIZE, DATABASE_TIMEOUT_SECONDS,
            DEV_KEYS_DIR, JWT_AUDIENCE, JWT_ISSUER, MAX_BODY_BYTES, REQUEST_TIMEOUT_SECONDS,
            SHUTDOWN_GRACE_SECONDS,
        };
        let env = Lookup(&lookup);
        let environment = environment(&env)?;
        let public_origin = public_origin(&env)?;
        let cookies = session_cookies(&env, &public_origin)?;
        let dev_keys_dir = PathBuf::from(env.text(&DEV_KEYS_DIR)?);
        let keys = KeySettings {
            signing_keys: signing_keys(&env, environment)?,
            refresh_key_file: refresh_key_file(&env, environment)?,
            dev_keys_dir,
        };
        let mail = mail_settings(&env, environment, &keys.dev_keys_dir, app_name)?;
        Ok(Self {
            app_name: app_name.to_owned(),
            environment,
            database: DatabaseSettings {
                url: database_config(&env, app_name)?,
                pool_size: env.number(&DATABASE_POOL_SIZE)?,
                timeout: env.duration(&DATABASE_TIMEOUT_SECONDS)?,
                feed: revocation_feed(&env)?,
            },
            http: HttpSettings {
                bind_addr: env.parsed(&BIND_ADDR)?,
                max_body_bytes: env.number(&MAX_BODY_BYTES)?,
                request_timeout: env.duration(&REQUEST_TIMEOUT_SECONDS)?,
                connections: connection_settings(&env)?,
                trusted_proxies: trusted_proxies(&env)?,
                shutdown_grace: env.duration(&SHUTDOWN_GRACE_SECONDS)?,
                openapi_ui: on_off(&env, &settings::OPENAPI_UI)?,
            },
            browser: BrowserSettings {
                public_origin,
                cookies,
            },
            keys,
            tokens: TokenSettings {
                issuer: env.text_or(&JWT_ISSUER, app_name)?,
                audience: env.text_or(&JWT_AUDIENCE, app_name)?,
                access_ttl: env.duration(&ACCESS_TOKEN_TTL_SECONDS)?,
            },
            accounts: account_policy(&env)?,
            factors: FactorSettings {
                issuer: env.text_or(&settings::MFA_ISSUER, app_name)?,
                challenge_ttl: env.duration(&settings::MFA_CHALLENGE_TTL_SECONDS)?,
                max_failures_per_token: env.number(&settings::MFA_MAX_FAILURES_PER_TOKEN)?,
                max_failures_per_account: env.number(&settings::MFA_MAX_FAILURES_PER_ACCOUNT)?,
                privileged_max_age: env.duration(&settings::PRIVILEGED_AUTH_MAX_AGE_SECONDS)?,
                step_up_on_device_change: flag(&env, &settings::STEP_UP_ON_DEVICE_CHANGE)?,
            },
            rate_limits: rate_limit_settings(&env)?,
            retention: Retention {
                sessions: env.duration(&settings::SESSION_RETENTION_DAYS)?,
                security_events: env.duration(&settings::SECURITY_EVENT_RETENTION_DAYS)?,
                purge_interval: env.duration(&settings::PURGE_INTERVAL_SECONDS)?,
            },
            mail,
            logging: LogSettings {
                filter: log_filter(&env)?,
                format: log_format(&env)?,
            },
            application: AppSettings::read(app_settings, &lookup)?,
        })
    }

    /// Where the database is, without credentials, for log lines.
    pub fn database_target(&self) -> String {
        self.database.url.to_string()
    }
}

/// The database an application uses when `DATABASE_URL` names none: its name, with `_`
/// for `-` (`portcullis_server`, `my_app`).
pub fn default_database_name(app_name: &str) -> String {
    app_name.replace('-', "_")
}

fn account_policy(env: &Lookup<'_>) -> Result<AccountPolicy, ConfigError> {
    use settings::{
        ALLOW_SINGLE_LABEL_EMAIL_DOMAINS, LOGIN_KNOWN_IP_DAYS, MAX_SESSIONS_PER_USER,
        NEW_SIGNIN_ALERTS, PASSWORD_CHANGE_MAX_FAILURES, REFRESH_ABSOLUTE_LIFETIME_SECONDS,
        REFRESH_GRACE_SECONDS, REFRESH_IDLE_TIMEOUT_SECONDS, REFRESH_MAX_RETRIES,
        REQUIRE_VERIFIED_EMAIL,
    };
    Ok(AccountPolicy {
        idle_timeout: env.duration(&REFRESH_IDLE_TIMEOUT_SECONDS)?,
        absolute_lifetime: env.duration(&REFRESH_ABSOLUTE_LIFETIME_SECONDS)?,
        refresh_grace: env.duration(&REFRESH_GRACE_SECONDS)?,
        refresh_max_retries: env.number(&REFRESH_MAX_RETRIES)?,
        known_ip_window: env.duration(&LOGIN_KNOWN_IP_DAYS)?,
        password_change_max_failures: env.number(&PASSWORD_CHANGE_MAX_FAILURES)?,
        max_sessions_per_user: env.number(&MAX_SESSIONS_PER_USER)?,
        require_verified_email: flag(env, &REQUIRE_VERIFIED_EMAIL)?,
        new_signin_alerts: flag(env, &NEW_SIGNIN_ALERTS)?,
        allow_single_label_email_domains: flag(env, &ALLOW_SINGLE_LABEL_EMAIL_DOMAINS)?,
    })
}

fn rate_limit_settings(env: &Lookup<'_>) -> Result<RateLimitSettings, ConfigError> {
    use settings::{
        RATE_LIMIT_ACCOUNT_MAIL_PER_ADDRESS, RATE_LIMIT_ACCOUNT_RECOVERY_PER_IP,
        RATE_LIMIT_LOGIN_PER_ACCOUNT, RATE_LIMIT_LOGIN_PER_IP, RATE_LIMIT_MAX_KEYS,
        RATE_LIMIT_PASSWORD_CHANGE_PER_USER, RATE_LIMIT_REFRESH_PER_IP,
    };
    Ok(RateLimitSettings {
        login_per_account: env.number(&RATE_LIMIT_LOGIN_PER_ACCOUNT)?,
        login_per_ip: env.number(&RATE_LIMIT_LOGIN_PER_IP)?,
        password_change_per_user: env.number(&RATE_LIMIT_PASSWORD_CHANGE_PER_USER)?,
        refresh_per_ip: env.number(&RATE_LIMIT_REFRESH_PER_IP)?,
        account_mail_per_address: env.number(&RATE_LIMIT_ACCOUNT_MAIL_PER_ADDRESS)?,
        account_recovery_per_ip: env.number(&RATE_LIMIT_ACCOUNT_RECOVERY_PER_IP)?,
        max_keys: env.number(&RATE_LIMIT_MAX_KEYS)?,
    })
}

fn environment(env: &Lookup<'_>) -> Result<Environment, ConfigError> {
    let setting = &settings::APP_ENV;
    match env.text(setting)?.as_str() {
        "development" | "dev" => Ok(Environment::Development),
        "production" | "prod" => Ok(Environment::Production),
        other => Err(not_a_choice(setting, other)),
    }
}

fn database_config(
    env: &Lookup<'_>,
    app_name: &str,
) -> Result<portcullis::postgres::DatabaseConfig, ConfigError> {
    let setting = &settings::DATABASE_URL;
    let mut database = if let Some(url) = env.given(setting)? {
        // The error never echoes the value: it may hold a password.
        url.parse::<portcullis::postgres::DatabaseConfig>()
            .map_err(|e| ConfigError::new(setting.name, e.to_string()))?
    } else {
        let mut local = tokio_postgres::Config::new();
        local
            .host_path(settings::LOCAL_SOCKET_DIR)
            .host(settings::LOCAL_HOST)
            .port(settings::LOCAL_PORT);
        local.into()
    };
    let config = database.settings_mut();
    if config.get_user().is_none() {
        let user = whoami::username().map_err(|e| {
            ConfigError::new(
                setting.name,
                format!("names no user and the OS user is unknown ({e})"),
            )
        })?;
        config.user(&user);
    }
    if config.get_dbname().is_none() {
        config.dbname(default_database_name(app_name));
    }
    if config.get_hosts().is_empty() {
        config.host(settings::LOCAL_HOST);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.application_name(app_name);
    Ok(database)
}

fn signing_keys(env: &Lookup<'_>, environment: Environment) -> Result<Vec<PathBuf>, ConfigError> {
    let setting = &settings::JWT_SIGNING_KEYS;
    let keys: Vec<PathBuf> = env
        .given(setting)?
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|path| !path.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    if environment == Environment::Production && keys.is_empty() {
        return Err(ConfigError::new(
            setting.name,
            "APP_ENV=production needs explicit signing keys (comma-separated paths of \
             Ed25519 PKCS#8 PEM files); generated development keys are never used in \
             production",
        ));
    }
    Ok(keys)
}

fn refresh_key_file(
    env: &Lookup<'_>,
    environment: Environment,
) -> Result<Option<PathBuf>, ConfigError> {
    let setting = &settings::REFRESH_TOKEN_KEY_FILE;
    let file = env.given(setting)?.map(PathBuf::from);
    if file.is_none() && environment == Environment::Production {
        return Err(ConfigError::new(
            setting.name,
            "APP_ENV=production needs an explicit refresh-token key (a file of at least 32 \
             random bytes, e.g. `head -c 32 /dev/urandom`)",
        ));
    }
    Ok(file)
}

fn mail_settings(
    env: &Lookup<'_>,
    environment: Environment,
    dev_keys_dir: &std::path::Path,
    app_name: &str,
) -> Result<MailSettings, ConfigError> {
    let smtp = &settings::SMTP_URL;
    let delivery = match env.given(smtp)? {
        Some(url) => Delivery::Smtp(Box::new(
            SmtpUrl::parse(&url).map_err(|e| ConfigError::new(smtp.name, e))?,
        )),
        None if environment == Environment::Production => {
            return Err(ConfigError::new(
                smtp.name,
                "APP_ENV=production needs a mail server: verification and password-reset \
                 mails are always sent (`smtps://user:pass@host:465`, or `smtp://host:587` \
                 for STARTTLS)",
            ));
        }
        None => Delivery::Files(
            env.given(&settings::MAIL_DEV_DIR)?
                .map_or_else(|| dev_keys_dir.join("mail"), PathBuf::from),
        ),
    };
    let from_setting = &settings::MAIL_FROM;
    let from_text = env.text_or(from_setting, &format!("{app_name} <{app_name}@localhost>"))?;
    let from = from_text.parse().map_err(|e| {
        ConfigError::new(
            from_setting.name,
            format!("`{from_text}` is not an address: {e}"),
        )
    })?;
    Ok(MailSettings {
        delivery,
        from,
        worker: WorkerSettings {
            poll_interval: env.duration(&settings::MAIL_POLL_INTERVAL_SECONDS)?,
            retry_base: env.duration(&settings::MAIL_RETRY_BASE_SECONDS)?,
            batch_size: env.number(&settings::MAIL_BATCH_SIZE)?,
        },
        links: LinkLifetimes {
            verification: env.duration(&settings::EMAIL_VERIFICATION_TTL_SECONDS)?,
            reset: env.duration(&settings::PASSWORD_RESET_TTL_SECONDS)?,
        },
        limits: MailLimits {
            caps: MailCaps {
                per_hour: env.number(&settings::ACCOUNT_MAIL_PER_HOUR)?,
                per_day: env.number(&settings::ACCOUNT_MAIL_PER_DAY)?,
                alerts_per_hour: env.number(&settings::SIGNIN_ALERTS_PER_HOUR)?,
            },
            live_reset_links: env.number(&settings::PASSWORD_RESET_LIVE_LINKS)?,
        },
    })
}

/// A `false`/`true` choice.
fn flag(env: &Lookup<'_>, setting: &Setting) -> Result<bool, ConfigError> {
    match env.text(setting)?.as_str() {
        "false" => Ok(false),
        "true" => Ok(true),
        other => Err(not_a_choice(setting, other)),
    }
}

fn on_off(env: &Lookup<'_>, setting: &Setting) -> Result<bool, ConfigError> {
    match env.text(setting)?.as_str() {
        "off" => Ok(false),
        "on" => Ok(true),
        other => Err(not_a_choice(setting, other)),
    }
}

fn public_origin(env: &Lookup<'_>) -> Result<PublicOrigin, ConfigError> {
    let setting = &settings::PUBLIC_URL;
    PublicOrigin::parse(&env.text(setting)?).map_err(|e| ConfigError::new(setting.name, e))
}

fn session_cookies(
    env: &Lookup<'_>,
    public_origin: &PublicOrigin,
) -> Result<SessionCookies, ConfigError> {
    let secure_setting = &settings::COOKIE_SECURE;
    let secure = match env.text(secure_setting)?.as_str() {
        "on" => true,
        "off" if public_origin.is_loopback_http() => false,
        "off" => {
            return Err(ConfigError::new(
                secure_setting.name,
                format!(
                    "`off` is only for development on this machine (PUBLIC_URL \
                     http://localhost or a loopback address), not for {public_origin}"
                ),
            ));
        }
        other => return Err(not_a_choice(secure_setting, other)),
    };
    let access = &settings::ACCESS_COOKIE_NAME;
    let refresh = &settings::REFRESH_COOKIE_NAME;
    let binding = &settings::BINDING_COOKIE_NAME;
    let names = CookieNames {
        access: &env.text(access)?,
        refresh: &env.text(refresh)?,
        binding: &env.text(binding)?,
    };
    SessionCookies::new(names, secure).map_err(|(role, e)| {
        let setting = match role {
            CookieRole::Access => access,
            CookieRole::Refresh => refresh,
            CookieRole::Binding => binding,
        };
        ConfigError::new(setting.name, e)
    })
}

fn connection_settings(env: &Lookup<'_>) -> Result<ConnectionSettings, ConfigError> {
    Ok(ConnectionSettings {
        header_read_timeout: env.duration(&settings::HEADER_READ_TIMEOUT_SECONDS)?,
        idle_timeout: env.duration(&settings::IDLE_CONNECTION_TIMEOUT_SECONDS)?,
        max_total: env.number(&settings::MAX_CONNECTIONS)?,
        max_per_ip: env.number(&settings::MAX_CONNECTIONS_PER_IP)?,
    })
}

fn trusted_proxies(env: &Lookup<'_>) -> Result<TrustedProxies, ConfigError> {
    let header_setting = &settings::CLIENT_IP_HEADER;
    let header = ClientIpHeader::parse(&env.text(header_setting)?)
        .map_err(|e| ConfigError::new(header_setting.name, e))?;
    let networks = match env.given(&settings::TRUSTED_PROXIES)? {
        None => Vec::new(),
        Some(list) => proxy_networks(&list)?,
    };
    Ok(TrustedProxies { networks, header })
}

fn proxy_networks(list: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        settings::TRUSTED_PROXIES.name,
                        format!("`{entry}` is not an IP address or CIDR range"),
                    )
                })
        })
        .collect()
}

fn log_format(env: &Lookup<'_>) -> Result<LogFormat, ConfigError> {
    let setting = &settings::LOG_FORMAT;
    match env.text(setting)?.as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(not_a_choice(setting, other)),
    }
}

fn log_filter(env: &Lookup<'_>) -> Result<String, ConfigError> {
    let setting = &settings::RUST_LOG;
    let filter = env.text(setting)?;
    tracing_subscriber::EnvFilter::try_new(&filter).map_err(|e| {
        ConfigError::new(
            setting.name,
            format!("`{filter}` is not a valid filter: {e}"),
        )
    })?;
    Ok(filter)
}

/// `value` is none of the words `setting` allows.
fn revocation_feed(env: &Lookup<'_>) -> Result<RevocationFeedSettings, ConfigError> {
    // Read (and so checked) whatever the feed: a bad value is an error before it matters.
    let url = env.text(&settings::NATS_URL)?;
    let relay = on_off(env, &settings::REVOCATION_RELAY)?;
    let setting = &settings::REVOCATION_FEED;
    match env.text(setting)?.as_str() {
        "nats" => Ok(RevocationFeedSettings::Nats {
            nats: portcullis::nats::NatsFeedConfig::new(url),
            relay,
        }),
        "postgres" => Ok(RevocationFeedSettings::Postgres),
        other => Err(not_a_choice(setting, other)),
    }
}

fn not_a_choice(setting: &Setting, value: &str) -> ConfigError {
    let words = match setting.kind {
        Kind::Choice { choices, .. } => choices
            .iter()
            .map(|choice| format!("`{choice}`"))
            .collect::<Vec<_>>()
            .join(" or "),
        _ => setting.rendered_allowed(),
    };
    ConfigError::new(setting.name, format!("`{value}` is not {words}"))
}

/// The environment, read through the settings' declarations.
struct Lookup<'a>(&'a dyn Fn(&str) -> Option<std::ffi::OsString>);

impl Lookup<'_> {
    /// The variable's value, when given; unset and empty are the same.
    fn given(&self, setting: &Setting) -> Result<Option<String>, ConfigError> {
        match (self.0)(setting.name) {
            None => Ok(None),
            Some(value) => {
                let value = value
                    .into_string()
                    .map_err(|_| ConfigError::new(setting.name, "is not valid UTF-8"))?;
                let value = value.trim();
                Ok((!value.is_empty()).then(|| value.to_owned()))
            }
        }
    }

    /// The value given, or the declared default text.
    fn text(&self, setting: &Setting) -> Result<String, ConfigError> {
        if let Some(value) = self.given(setting)? {
            return Ok(value);
        }
        match setting.kind {
            Kind::Text { default } | Kind::Choice { default, .. } => Ok(default.to_owned()),
            Kind::Number { .. } | Kind::Optional { .. } => Err(misdeclared(setting, "text")),
        }
    }

    /// The value given, or `default` for a setting whose default is the application's
    /// (declared [`Kind::Optional`]).
    fn text_or(&self, setting: &Setting, default: &str) -> Result<String, ConfigError> {
        match setting.kind {
            Kind::Optional { .. } => Ok(self.given(setting)?.unwrap_or_else(|| default.to_owned())),
            _ => Err(misdeclared(setting, "text defaulting to the application's")),
        }
    }

    /// The value given, or the declared default text, parsed.
    fn parsed<T>(&self, setting: &Setting) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let value = self.text(setting)?;
        value
            .parse()
            .map_err(|e| ConfigError::new(setting.name, format!("`{value}` is not valid: {e}")))
    }

    /// The number given, or the declared default, checked against the declared range.
    fn number<T: TryFrom<u64>>(&self, setting: &Setting) -> Result<T, ConfigError> {
        let Kind::Number {
            default, min, max, ..
        } = setting.kind
        else {
            return Err(misdeclared(setting, "a number"));
        };
        let value = match self.given(setting)? {
            None => default,
            Some(text) => text.parse::<u64>().map_err(|e| {
                ConfigError::new(setting.name, format!("`{text}` is not valid: {e}"))
            })?,
        };
        if !(min..=max).contains(&value) {
            return Err(ConfigError::new(
                setting.name,
                format!("{value} is out of range ({min} to {max})"),
            ));
        }
        T::try_from(value).map_err(|_| misdeclared(setting, "a number that fits its field"))
    }

    /// A number of seconds or days, as a duration.
    fn duration(&self, setting: &Setting) -> Result<Duration, ConfigError> {
        let n: u64 = self.number(setting)?;
        match setting.kind {
            Kind::Number {
                unit: Unit::Seconds,
                ..
            } => Ok(Duration::from_secs(n)),
            Kind::Number {
                unit: Unit::Days, ..
            } => Ok(Duration::from_secs(n * DAY)),
            _ => Err(misdeclared(setting, "a number of seconds or days")),
        }
    }
}

/// The code reads `setting` as something its declaration says it is not: a mistake in
/// this crate, reported like a bad value so it cannot go unnoticed.
fn misdeclared(setting: &Setting, read_as: &str) -> ConfigError {
    ConfigError::new(
        setting.name,
        format!("is read as {read_as}, which its declaration in config::settings does not allow"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(STANDALONE_NAME, &[], move |name| {
            vars.get(name).map(Into::into)
        })
    }

    #[test]
    fn defaults_need_no_variables() {
        let config = config(&[]).expect("defaults are valid");
        assert_eq!(config.environment, Environment::Development);
        assert_eq!(config.http.bind_addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            config.database.url.settings().get_dbname(),
            Some(default_database_name(STANDALONE_NAME).as_str())
        );
        assert_eq!(
            config.database.url.settings().get_hosts().len(),
            2,
            "socket, then TCP"
        );
        assert!(config.database.url.settings().get_user().is_some());
        assert!(config.keys.signing_keys.is_empty());
        assert_eq!(config.logging.format, LogFormat::Text);
        assert_eq!(
            config.accounts.known_ip_window,
            Duration::from_secs(30 * DAY)
        );
        assert_eq!(config.accounts.password_change_max_failures, 5);
        assert_eq!(
            config.accounts.max_sessions_per_user, 0,
            "no cap unless asked for"
        );
        assert_eq!(config.rate_limits.password_change_per_user, 10);
        assert_eq!(
            config.rate_limits.max_keys,
            crate::rate_limit::DEFAULT_MAX_KEYS
        );
        assert_eq!(
            config.retention.security_events,
            Duration::from_secs(90 * DAY)
        );
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for (var, value) in [
            ("BIND_ADDR", "localhost"),
            ("APP_ENV", "staging"),
            ("LOG_FORMAT", "xml"),
            ("DATABASE_POOL_SIZE", "0"),
            ("DATABASE_POOL_SIZE", "many"),
            ("DATABASE_TIMEOUT_SECONDS", "-1"),
            ("SHUTDOWN_GRACE_SECONDS", "100000"),
            ("RUST_LOG", "info,[[["),
            ("TRUSTED_PROXIES", "10.0.0.0/8, proxy.local"),
            ("CLIENT_IP_HEADER", "X Forwarded For"),
            ("HEADER_READ_TIMEOUT_SECONDS", "0"),
            ("IDLE_CONNECTION_TIMEOUT_SECONDS", "soon"),
            ("MAX_CONNECTIONS", "0"),
            ("MAX_CONNECTIONS_PER_IP", "-1"),
            ("REFRESH_GRACE_SECONDS", "301"),
            ("REFRESH_MAX_RETRIES", "1001"),
            ("RATE_LIMIT_LOGIN_PER_IP", "-5"),
            ("LOGIN_KNOWN_IP_DAYS", "366"),
            ("PASSWORD_CHANGE_MAX_FAILURES", "1001"),
            ("RATE_LIMIT_PASSWORD_CHANGE_PER_USER", "ten"),
            ("RATE_LIMIT_MAX_KEYS", "10"),
            ("SECURITY_EVENT_RETENTION_DAYS", "-1"),
            ("MAX_BODY_BYTES", "10"),
            ("DATABASE_URL", "postgres://host:notaport/db"),
            ("PUBLIC_URL", "auth.example.com"),
            ("PUBLIC_URL", "https://auth.example.com/app"),
            ("COOKIE_SECURE", "maybe"),
            ("ACCESS_COOKIE_NAME", "sg_access"),
            ("ACCESS_COOKIE_NAME", "__Host-a;b"),
            ("REFRESH_COOKIE_NAME", "__Host-sg_refresh"),
            ("REFRESH_COOKIE_NAME", "__Host-sg_access"),
            ("BINDING_COOKIE_NAME", "__Secure-sg_binding"),
            ("BINDING_COOKIE_NAME", "__Host-sg_access"),
            ("SMTP_URL", "smtp://mail.example.com?tls=none"),
            ("SMTP_URL", "imap://mail.example.com"),
            ("MAIL_FROM", "not an address"),
            ("REQUIRE_VERIFIED_EMAIL", "yes"),
            ("NEW_SIGNIN_ALERTS", "1"),
            ("PASSWORD_RESET_TTL_SECONDS", "0"),
        ] {
            let err = config(&[(var, value)]).expect_err(value);
            assert_eq!(err.var, var, "{value}");
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn database_url_errors_do_not_echo_passwords() {
        let err = config(&[("DATABASE_URL", "postgres://u:hunter2@h:x/db")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn production_refuses_to_start_without_keys() {
        let err = config(&[("APP_ENV", "production")]).unwrap_err();
        assert_eq!(err.var, "JWT_SIGNING_KEYS");
        let err =
            config(&[("APP_ENV", "production"), ("JWT_SIGNING_KEYS", "/k/a.pem")]).unwrap_err();
        assert_eq!(err.var, "REFRESH_TOKEN_KEY_FILE");
        let err = config(&[
            ("APP_ENV", "production"),
            ("JWT_SIGNING_KEYS", "/k/a.pem, /k/b.pem"),
            ("REFRESH_TOKEN_KEY_FILE", "/k/refresh.key"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "SMTP_URL");
        let ok = config(&[
            ("APP_ENV", "production"),
            ("JWT_SIGNING_KEYS", "/k/a.pem, /k/b.pem"),
            ("REFRESH_TOKEN_KEY_FILE", "/k/refresh.key"),
            ("SMTP_URL", "smtps://mailer:secret@mail.example.com"),
        ])
        .expect("keys and mail server given");
        assert_eq!(
            ok.keys.signing_keys,
            [PathBuf::from("/k/a.pem"), PathBuf::from("/k/b.pem")]
        );
    }

    #[test]
    fn database_url_keeps_its_parts_and_gains_defaults() {
        let config = config(&[("DATABASE_URL", "postgres://alice@db.internal:6543")]).unwrap();
        assert_eq!(config.database.url.settings().get_user(), Some("alice"));
        assert_eq!(config.database.url.settings().get_ports(), [6543]);
        assert_eq!(
            config.database.url.settings().get_dbname(),
            Some(default_database_name(STANDALONE_NAME).as_str())
        );
        assert!(!config.database_target().contains("password"));
    }

    #[test]
    fn every_declared_setting_is_read_and_nothing_else() {
        let asked = std::sync::Mutex::new(Vec::new());
        Config::from_lookup(STANDALONE_NAME, &[], |name| {
            asked.lock().unwrap().push(name.to_owned());
            None
        })
        .expect("defaults are valid");
        let mut asked = asked.into_inner().unwrap();
        asked.sort();
        asked.dedup();
        let mut declared: Vec<&str> = settings::ALL.iter().map(|setting| setting.name).collect();
        declared.sort_unstable();
        assert_eq!(asked, declared);
    }

    #[test]
    fn every_number_is_accepted_at_both_ends_of_its_range_and_refused_past_them() {
        for setting in settings::ALL {
            let Kind::Number { min, max, .. } = setting.kind else {
                continue;
            };
            for ok in [min, max] {
                config(&[(setting.name, &ok.to_string())])
                    .unwrap_or_else(|e| panic!("{}={ok}: {e}", setting.name));
            }
            let mut outside = vec![max + 1];
            outside.extend(min.checked_sub(1));
            for bad in outside {
                let err = config(&[(setting.name, &bad.to_string())]).expect_err(setting.name);
                assert_eq!(err.var, setting.name);
                assert!(err.message.contains("out of range"), "{err}");
            }
        }
    }

    #[test]
    fn unset_numbers_take_their_declared_defaults() {
        let config = config(&[]).unwrap();
        let declared = |setting: &Setting| match setting.kind {
            Kind::Number { default, .. } => default,
            _ => unreachable!("{} is a number", setting.name),
        };
        assert_eq!(
            config.database.pool_size as u64,
            declared(&settings::DATABASE_POOL_SIZE)
        );
        assert_eq!(
            config.accounts.idle_timeout.as_secs(),
            declared(&settings::REFRESH_IDLE_TIMEOUT_SECONDS)
        );
        assert_eq!(
            config.retention.sessions.as_secs(),
            declared(&settings::SESSION_RETENTION_DAYS) * DAY
        );
        assert_eq!(
            u64::from(config.accounts.refresh_max_retries),
            declared(&settings::REFRESH_MAX_RETRIES)
        );
    }

    #[test]
    fn every_listed_choice_is_understood() {
        for setting in settings::ALL {
            if let Kind::Choice { choices, .. } = setting.kind {
                for choice in choices {
                    let mut vars = vec![(setting.name, *choice)];
                    if *choice == "production" {
                        vars.extend([
                            ("JWT_SIGNING_KEYS", "/k/a.pem"),
                            ("REFRESH_TOKEN_KEY_FILE", "/k/r.key"),
                            ("SMTP_URL", "smtp://mail.example.com"),
                        ]);
                    }
                    if setting.name == "COOKIE_SECURE" && *choice == "off" {
                        vars.extend([
                            ("ACCESS_COOKIE_NAME", "sg_access"),
                            ("REFRESH_COOKIE_NAME", "sg_refresh"),
                            ("BINDING_COOKIE_NAME", "sg_binding"),
                        ]);
                    }
                    config(&vars).unwrap_or_else(|e| panic!("{}={choice}: {e}", setting.name));
                }
                let err = config(&[(setting.name, "neither")]).unwrap_err();
                assert!(err.message.contains(&format!("`{}`", choices[0])), "{err}");
            }
        }
    }

    #[test]
    fn cookies_may_go_without_secure_only_for_development_on_loopback() {
        let defaults = config(&[]).unwrap();
        assert_eq!(
            defaults.browser.public_origin.as_str(),
            "http://127.0.0.1:8080"
        );
        assert!(defaults.browser.cookies.secure());
        assert_eq!(defaults.browser.cookies.access_name(), "__Host-sg_access");
        assert_eq!(
            defaults.browser.cookies.refresh_name(),
            "__Secure-sg_refresh"
        );

        let err = config(&[
            ("PUBLIC_URL", "https://auth.example.com"),
            ("COOKIE_SECURE", "off"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "COOKIE_SECURE", "{err}");
        let err = config(&[
            ("PUBLIC_URL", "http://app.example:8080"),
            ("COOKIE_SECURE", "off"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "COOKIE_SECURE", "{err}");
        // Off keeps the prefixed default names, which browsers would drop: refused.
        let err = config(&[("COOKIE_SECURE", "off")]).unwrap_err();
        assert_eq!(err.var, "ACCESS_COOKIE_NAME", "{err}");
        let plain = config(&[
            ("PUBLIC_URL", "http://localhost:3000"),
            ("COOKIE_SECURE", "off"),
            ("ACCESS_COOKIE_NAME", "sg_access"),
            ("REFRESH_COOKIE_NAME", "sg_refresh"),
            ("BINDING_COOKIE_NAME", "sg_binding"),
        ])
        .unwrap();
        assert!(!plain.browser.cookies.secure());
    }

    #[test]
    fn development_without_a_mail_server_writes_files_next_to_its_keys() {
        let defaults = config(&[("DEV_KEYS_DIR", "/tmp/k")]).unwrap();
        assert!(
            matches!(&defaults.mail.delivery, Delivery::Files(dir) if dir == std::path::Path::new("/tmp/k/mail"))
        );
        assert!(!defaults.accounts.require_verified_email);
        assert!(!defaults.accounts.new_signin_alerts);
        assert_eq!(defaults.mail.links.reset, Duration::from_secs(1800));
        assert_eq!(defaults.mail.links.verification, Duration::from_secs(DAY));
        let given = config(&[
            ("MAIL_DEV_DIR", "/tmp/m"),
            ("REQUIRE_VERIFIED_EMAIL", "true"),
        ])
        .unwrap();
        assert!(
            matches!(&given.mail.delivery, Delivery::Files(dir) if dir == std::path::Path::new("/tmp/m"))
        );
        assert!(given.accounts.require_verified_email);
        let smtp = config(&[("SMTP_URL", "smtp://127.0.0.1:2525?tls=none")]).unwrap();
        assert!(matches!(smtp.mail.delivery, Delivery::Smtp(_)));
    }

    #[test]
    fn the_declared_client_ip_header_is_the_type_default() {
        assert_eq!(
            config(&[]).unwrap().http.trusted_proxies.header,
            ClientIpHeader::default()
        );
    }
}
