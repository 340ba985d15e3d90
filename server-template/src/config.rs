//! Settings, read once from the environment at start-up.
//!
//! Every variable is listed in the README's configuration table. Nothing else in the
//! crate reads the environment: it gets a [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::client_ip::{ClientIpHeader, TrustedProxies};

/// The database name used when `DATABASE_URL` names none.
pub const DEFAULT_DATABASE_NAME: &str = "session_guard";

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
    fn new(var: &'static str, message: impl Into<String>) -> Self {
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
    /// `HEADER_READ_TIMEOUT_SECONDS`: the longest an HTTP/1 connection may take to send a
    /// request's header, counted from when it is ready for one; so it also ends an idle
    /// keep-alive connection (default 10).
    pub header_read_timeout: Duration,
    /// `IDLE_CONNECTION_TIMEOUT_SECONDS`: a connection that sends and receives nothing for
    /// this long is closed, HTTP/2 ones included (default 60).
    pub idle_timeout: Duration,
    /// `MAX_CONNECTIONS`: open connections in all; more are closed at once (default 4096).
    pub max_total: usize,
    /// `MAX_CONNECTIONS_PER_IP`: open connections per client IPv4 address or IPv6 /64;
    /// trusted proxies are exempt (default 256; 0: off).
    pub max_per_ip: usize,
}

/// Everything the server needs to know about its surroundings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `APP_ENV`: `development` (default) or `production`.
    pub environment: Environment,
    /// `DATABASE_URL`, as a libpq URL or key-value string, `sslmode` and `sslrootcert`
    /// included. When unset: the local server, on the unix socket then `127.0.0.1:5432`,
    /// as the current OS user.
    pub database: session_guard::postgres::DatabaseConfig,
    /// `DATABASE_POOL_SIZE`: the most connections the pool opens (default 16).
    pub database_pool_size: usize,
    /// `DATABASE_TIMEOUT_SECONDS`: the longest wait for a connection or a health query
    /// (default 5).
    pub database_timeout: Duration,
    /// `BIND_ADDR`: where the HTTP server listens (default `127.0.0.1:8080`).
    pub bind_addr: SocketAddr,
    /// `JWT_SIGNING_KEYS`: comma-separated paths of Ed25519 private keys (PKCS#8 PEM). The
    /// first signs; all of them verify, so a retired key keeps working while rotating.
    pub signing_keys: Vec<PathBuf>,
    /// `DEV_KEYS_DIR`: where development mode keeps its generated key (default `.dev-keys`).
    pub dev_keys_dir: PathBuf,
    /// `RUST_LOG`: a tracing filter (default `info`).
    pub log_filter: String,
    /// `LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// `SHUTDOWN_GRACE_SECONDS`: how long in-flight requests may finish after SIGTERM or
    /// ctrl-c (default 10).
    pub shutdown_grace: Duration,
    /// `JWT_ISSUER`: the `iss` of access tokens (default `session-server`).
    pub issuer: String,
    /// `JWT_AUDIENCE`: the `aud` of access tokens (default `session-server`).
    pub audience: String,
    /// `ACCESS_TOKEN_TTL_SECONDS`: access token lifetime (default 900).
    pub access_token_ttl: Duration,
    /// `REFRESH_TOKEN_KEY_FILE`: a file of at least 32 random bytes that keys the refresh
    /// token hashes and successors. Development generates one in `DEV_KEYS_DIR`.
    pub refresh_key_file: Option<PathBuf>,
    /// `REFRESH_IDLE_TIMEOUT_SECONDS`: a session not refreshed for this long ends
    /// (default 14 days).
    pub refresh_idle_timeout: Duration,
    /// `REFRESH_ABSOLUTE_LIFETIME_SECONDS`: a session ends this long after login, whatever
    /// happens (default 90 days).
    pub refresh_absolute_lifetime: Duration,
    /// `REFRESH_GRACE_SECONDS`: how long the previous refresh token may be retried by the
    /// client that rotated it (default 5).
    pub refresh_grace: Duration,
    /// `REFRESH_MAX_RETRIES`: how many times, per rotation, the previous refresh token may
    /// be retried inside the grace window (default 16).
    pub refresh_max_retries: u32,
    /// `RATE_LIMIT_LOGIN_PER_ACCOUNT`: failed logins per account per minute, and per
    /// account from one client IP (default 20; 0: off).
    pub login_per_account_per_minute: u32,
    /// `RATE_LIMIT_LOGIN_PER_IP`: failed logins, and registrations, per client IP per
    /// minute (default 60; 0: off).
    pub login_per_ip_per_minute: u32,
    /// `LOGIN_KNOWN_IP_DAYS`: a client IP from which a session of the account was used
    /// (login or refresh) within this many days is let through the per-account limit with
    /// the right password (default 30; 0: only a bearer token of the account does).
    pub login_known_ip: Duration,
    /// `RATE_LIMIT_PASSWORD_CHANGE_PER_USER`: failed password changes per user per minute
    /// (default 10; 0: off).
    pub password_change_per_user_per_minute: u32,
    /// `PASSWORD_CHANGE_MAX_FAILURES`: wrong current passwords after which the session is
    /// revoked (default 5; 0: never).
    pub password_change_max_failures: u32,
    /// `RATE_LIMIT_MAX_KEYS`: the most keys (IPs, accounts, sessions) each limiter keeps,
    /// least recently used out (default 100000).
    pub rate_limit_max_keys: usize,
    /// `RATE_LIMIT_REFRESH_PER_IP`: refreshes per client IP per minute (default 600; 0: off).
    pub refresh_per_ip_per_minute: u32,
    /// `TRUSTED_PROXIES`: comma-separated IPs or CIDRs whose forwarding header is
    /// believed (default none); `CLIENT_IP_HEADER`: that one header (default
    /// `X-Forwarded-For`; `Forwarded`, or any header of comma-separated addresses).
    pub trusted_proxies: TrustedProxies,
    /// `MAX_BODY_BYTES`: the largest request body accepted (default 65536).
    pub max_body_bytes: usize,
    /// `REQUEST_TIMEOUT_SECONDS`: the longest a request may take (default 30).
    pub request_timeout: Duration,
    /// How connections are bounded: header and idle timeouts, connection caps.
    pub connections: ConnectionSettings,
    /// `SESSION_RETENTION_DAYS`: ended sessions are deleted this long after they end
    /// (default 30).
    pub session_retention: Duration,
    /// `SECURITY_EVENT_RETENTION_DAYS`: security events are deleted this long after they
    /// happened (default 90).
    pub security_event_retention: Duration,
    /// `PURGE_INTERVAL_SECONDS`: how often the purge job runs (default 3600).
    pub purge_interval: Duration,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// Reads settings through `lookup`, which maps a variable name to its value.
    #[allow(
        clippy::too_many_lines,
        reason = "one short statement per setting, in the README's order"
    )]
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Self, ConfigError> {
        let env = Lookup(&lookup);
        let environment = match env.text("APP_ENV")?.as_deref() {
            None | Some("development" | "dev") => Environment::Development,
            Some("production" | "prod") => Environment::Production,
            Some(other) => {
                return Err(ConfigError::new(
                    "APP_ENV",
                    format!("`{other}` is not `development` or `production`"),
                ));
            }
        };
        let signing_keys = env
            .text("JWT_SIGNING_KEYS")?
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|path| !path.is_empty())
                    .map(PathBuf::from)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if environment == Environment::Production && signing_keys.is_empty() {
            return Err(ConfigError::new(
                "JWT_SIGNING_KEYS",
                "APP_ENV=production needs explicit signing keys (comma-separated paths of \
                 Ed25519 PKCS#8 PEM files); generated development keys are never used in \
                 production",
            ));
        }
        Ok(Self {
            environment,
            database: database_config(&env)?,
            database_pool_size: env.parsed("DATABASE_POOL_SIZE", 16, 1..=1024)?,
            database_timeout: Duration::from_secs(env.parsed(
                "DATABASE_TIMEOUT_SECONDS",
                5,
                1..=300,
            )?),
            bind_addr: env.parsed_any("BIND_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            signing_keys,
            dev_keys_dir: env
                .text("DEV_KEYS_DIR")?
                .map_or_else(|| PathBuf::from(".dev-keys"), PathBuf::from),
            log_filter: log_filter(&env)?,
            log_format: log_format(&env)?,
            shutdown_grace: Duration::from_secs(env.parsed(
                "SHUTDOWN_GRACE_SECONDS",
                10,
                0..=600,
            )?),
            issuer: env
                .text("JWT_ISSUER")?
                .unwrap_or_else(|| "session-server".to_owned()),
            audience: env
                .text("JWT_AUDIENCE")?
                .unwrap_or_else(|| "session-server".to_owned()),
            access_token_ttl: seconds(&env, "ACCESS_TOKEN_TTL_SECONDS", 900, 10..=86_400)?,
            refresh_key_file: refresh_key_file(&env, environment)?,
            refresh_idle_timeout: seconds(
                &env,
                "REFRESH_IDLE_TIMEOUT_SECONDS",
                14 * DAY,
                60..=365 * DAY,
            )?,
            refresh_absolute_lifetime: seconds(
                &env,
                "REFRESH_ABSOLUTE_LIFETIME_SECONDS",
                90 * DAY,
                60..=3 * 365 * DAY,
            )?,
            refresh_grace: seconds(&env, "REFRESH_GRACE_SECONDS", 5, 0..=300)?,
            refresh_max_retries: env.parsed("REFRESH_MAX_RETRIES", 16, 0..=1_000)?,
            login_per_account_per_minute: env.parsed(
                "RATE_LIMIT_LOGIN_PER_ACCOUNT",
                20,
                0..=1_000_000,
            )?,
            login_per_ip_per_minute: env.parsed("RATE_LIMIT_LOGIN_PER_IP", 60, 0..=1_000_000)?,
            login_known_ip: days(&env, "LOGIN_KNOWN_IP_DAYS", 30, 0..=365)?,
            password_change_per_user_per_minute: env.parsed(
                "RATE_LIMIT_PASSWORD_CHANGE_PER_USER",
                10,
                0..=1_000_000,
            )?,
            password_change_max_failures: env.parsed(
                "PASSWORD_CHANGE_MAX_FAILURES",
                5,
                0..=1_000,
            )?,
            rate_limit_max_keys: env.parsed(
                "RATE_LIMIT_MAX_KEYS",
                crate::rate_limit::DEFAULT_MAX_KEYS,
                1_000..=100_000_000,
            )?,
            refresh_per_ip_per_minute: env.parsed(
                "RATE_LIMIT_REFRESH_PER_IP",
                600,
                0..=10_000_000,
            )?,
            trusted_proxies: trusted_proxies(&env)?,
            max_body_bytes: env.parsed("MAX_BODY_BYTES", 65_536, 1_024..=16 * 1024 * 1024)?,
            request_timeout: seconds(&env, "REQUEST_TIMEOUT_SECONDS", 30, 1..=600)?,
            connections: connection_settings(&env)?,
            session_retention: days(&env, "SESSION_RETENTION_DAYS", 30, 0..=3650)?,
            security_event_retention: days(&env, "SECURITY_EVENT_RETENTION_DAYS", 90, 0..=3650)?,
            purge_interval: seconds(&env, "PURGE_INTERVAL_SECONDS", 3600, 1..=7 * DAY)?,
        })
    }

    /// Where the database is, without credentials, for log lines.
    pub fn database_target(&self) -> String {
        self.database.to_string()
    }
}

fn database_config(
    env: &Lookup<'_>,
) -> Result<session_guard::postgres::DatabaseConfig, ConfigError> {
    let mut database = if let Some(url) = env.text("DATABASE_URL")? {
        // The error never echoes the value: it may hold a password.
        url.parse::<session_guard::postgres::DatabaseConfig>()
            .map_err(|e| ConfigError::new("DATABASE_URL", e.to_string()))?
    } else {
        let mut local = tokio_postgres::Config::new();
        local
            .host_path("/var/run/postgresql")
            .host("127.0.0.1")
            .port(5432);
        local.into()
    };
    let config = database.settings_mut();
    if config.get_user().is_none() {
        let user = whoami::username().map_err(|e| {
            ConfigError::new(
                "DATABASE_URL",
                format!("names no user and the OS user is unknown ({e})"),
            )
        })?;
        config.user(&user);
    }
    if config.get_dbname().is_none() {
        config.dbname(DEFAULT_DATABASE_NAME);
    }
    if config.get_hosts().is_empty() {
        config.host("127.0.0.1");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.application_name("session-server");
    Ok(database)
}

const DAY: u64 = 24 * 60 * 60;

fn seconds(
    env: &Lookup<'_>,
    var: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(env.parsed(var, default, range)?))
}

fn days(
    env: &Lookup<'_>,
    var: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(env.parsed(var, default, range)? * DAY))
}

fn refresh_key_file(
    env: &Lookup<'_>,
    environment: Environment,
) -> Result<Option<PathBuf>, ConfigError> {
    let file = env.text("REFRESH_TOKEN_KEY_FILE")?.map(PathBuf::from);
    if file.is_none() && environment == Environment::Production {
        return Err(ConfigError::new(
            "REFRESH_TOKEN_KEY_FILE",
            "APP_ENV=production needs an explicit refresh-token key (a file of at least 32 \
             random bytes, e.g. `head -c 32 /dev/urandom`)",
        ));
    }
    Ok(file)
}

fn connection_settings(env: &Lookup<'_>) -> Result<ConnectionSettings, ConfigError> {
    Ok(ConnectionSettings {
        header_read_timeout: seconds(env, "HEADER_READ_TIMEOUT_SECONDS", 10, 1..=600)?,
        idle_timeout: seconds(env, "IDLE_CONNECTION_TIMEOUT_SECONDS", 60, 1..=3600)?,
        max_total: env.parsed("MAX_CONNECTIONS", 4096, 1..=1_000_000)?,
        max_per_ip: env.parsed("MAX_CONNECTIONS_PER_IP", 256, 0..=1_000_000)?,
    })
}

fn trusted_proxies(env: &Lookup<'_>) -> Result<TrustedProxies, ConfigError> {
    let header = match env.text("CLIENT_IP_HEADER")? {
        None => ClientIpHeader::default(),
        Some(name) => {
            ClientIpHeader::parse(&name).map_err(|e| ConfigError::new("CLIENT_IP_HEADER", e))?
        }
    };
    let networks = match env.text("TRUSTED_PROXIES")? {
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
                        "TRUSTED_PROXIES",
                        format!("`{entry}` is not an IP address or CIDR range"),
                    )
                })
        })
        .collect()
}

fn log_format(env: &Lookup<'_>) -> Result<LogFormat, ConfigError> {
    match env.text("LOG_FORMAT")?.as_deref() {
        None | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(ConfigError::new(
            "LOG_FORMAT",
            format!("`{other}` is not `text` or `json`"),
        )),
    }
}

fn log_filter(env: &Lookup<'_>) -> Result<String, ConfigError> {
    let filter = env.text("RUST_LOG")?.unwrap_or_else(|| "info".to_owned());
    tracing_subscriber::EnvFilter::try_new(&filter).map_err(|e| {
        ConfigError::new("RUST_LOG", format!("`{filter}` is not a valid filter: {e}"))
    })?;
    Ok(filter)
}

struct Lookup<'a>(&'a dyn Fn(&str) -> Option<std::ffi::OsString>);

impl Lookup<'_> {
    /// The variable's value; unset and empty are the same.
    fn text(&self, var: &'static str) -> Result<Option<String>, ConfigError> {
        match (self.0)(var) {
            None => Ok(None),
            Some(value) => {
                let value = value
                    .into_string()
                    .map_err(|_| ConfigError::new(var, "is not valid UTF-8"))?;
                let value = value.trim();
                Ok((!value.is_empty()).then(|| value.to_owned()))
            }
        }
    }

    fn parsed_any<T>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.text(var)? {
            None => Ok(default),
            Some(value) => value
                .parse()
                .map_err(|e| ConfigError::new(var, format!("`{value}` is not valid: {e}"))),
        }
    }

    fn parsed<T>(
        &self,
        var: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display,
        T::Err: std::fmt::Display,
    {
        let value = self.parsed_any(var, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::new(
                var,
                format!(
                    "{value} is out of range ({} to {})",
                    range.start(),
                    range.end()
                ),
            ))
        }
    }
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
        Config::from_lookup(move |name| vars.get(name).map(Into::into))
    }

    #[test]
    fn defaults_need_no_variables() {
        let config = config(&[]).expect("defaults are valid");
        assert_eq!(config.environment, Environment::Development);
        assert_eq!(config.bind_addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            config.database.settings().get_dbname(),
            Some(DEFAULT_DATABASE_NAME)
        );
        assert_eq!(
            config.database.settings().get_hosts().len(),
            2,
            "socket, then TCP"
        );
        assert!(config.database.settings().get_user().is_some());
        assert!(config.signing_keys.is_empty());
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.login_known_ip, Duration::from_secs(30 * DAY));
        assert_eq!(config.password_change_max_failures, 5);
        assert_eq!(config.password_change_per_user_per_minute, 10);
        assert_eq!(
            config.rate_limit_max_keys,
            crate::rate_limit::DEFAULT_MAX_KEYS
        );
        assert_eq!(
            config.security_event_retention,
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
        let ok = config(&[
            ("APP_ENV", "production"),
            ("JWT_SIGNING_KEYS", "/k/a.pem, /k/b.pem"),
            ("REFRESH_TOKEN_KEY_FILE", "/k/refresh.key"),
        ])
        .expect("keys given");
        assert_eq!(
            ok.signing_keys,
            [PathBuf::from("/k/a.pem"), PathBuf::from("/k/b.pem")]
        );
    }

    #[test]
    fn database_url_keeps_its_parts_and_gains_defaults() {
        let config = config(&[("DATABASE_URL", "postgres://alice@db.internal:6543")]).unwrap();
        assert_eq!(config.database.settings().get_user(), Some("alice"));
        assert_eq!(config.database.settings().get_ports(), [6543]);
        assert_eq!(
            config.database.settings().get_dbname(),
            Some(DEFAULT_DATABASE_NAME)
        );
        assert!(!config.database_target().contains("password"));
    }
}
