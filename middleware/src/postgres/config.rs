//! [`DatabaseConfig`]: a libpq connection string with all of `sslmode`.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{BuildError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use percent_encoding::percent_decode_str;
use tokio_postgres::config::Host;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How a connection is encrypted and what of the server's certificate is checked: libpq's
/// `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// Encrypted when the server offers it, plain otherwise; the certificate is not
    /// checked. libpq's default, and the default here. (PostgreSQL never encrypts unix
    /// socket connections: those stay plain.)
    Prefer,
    /// Encrypted or no connection; the certificate is not checked, unless `sslrootcert`
    /// names a file, which makes it [`VerifyCa`](Self::VerifyCa) (as in libpq).
    Require,
    /// Encrypted, and the server's certificate must chain to a trusted root; its host
    /// name is not checked.
    VerifyCa,
    /// Encrypted, the certificate must chain to a trusted root and name the host
    /// connected to.
    VerifyFull,
}

impl SslMode {
    /// The `sslmode` value, as written in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// Whether the server's certificate is checked against trusted roots.
    pub fn verifies_certificate(self) -> bool {
        matches!(self, Self::VerifyCa | Self::VerifyFull)
    }

    /// The nearest mode tokio-postgres knows: it negotiates, rustls checks.
    fn negotiation(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Negotiation;
        match self {
            Self::Disable => Negotiation::Disable,
            Self::Prefer => Negotiation::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => Negotiation::Require,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = DatabaseConfigError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            other => Err(DatabaseConfigError::SslMode(other.to_owned())),
        }
    }
}

/// The certificates a verifying [`SslMode`] trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// The operating system's trusted roots (`sslrootcert=system`, and the default).
    System,
    /// The PEM certificates in this file (`sslrootcert=<path>`).
    File(PathBuf),
}

impl fmt::Display for RootCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::System => f.write_str("the system's trusted roots"),
            Self::File(path) => write!(f, "sslrootcert {}", path.display()),
        }
    }
}

/// Why a connection string or its TLS settings cannot be used. No variant repeats the
/// string, which may hold a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatabaseConfigError {
    /// tokio-postgres refused the string.
    #[error("not a valid connection string: {0}")]
    Invalid(#[source] tokio_postgres::Error),
    /// Not a connection string this crate can take apart.
    #[error("not a valid connection string")]
    Malformed,
    /// A URL of another database or protocol (`mysql://`, `sqlite:`, `http://`), which
    /// tokio-postgres would misread as a broken key-value string.
    #[error(
        "`{scheme}…` is not a PostgreSQL URL: Portcullis needs `postgres://` or \
         `postgresql://` (or a libpq key=value string)"
    )]
    NotPostgres {
        /// The string up to the end of its scheme (`mysql://`, `sqlite:`): never the
        /// credentials after it.
        scheme: String,
    },
    /// An `sslmode` this crate does not know (libpq's `allow` included: it would try a
    /// plain connection first).
    #[error("sslmode must be disable, prefer, require, verify-ca or verify-full, not {0:?}")]
    SslMode(String),
    /// `sslrootcert=system` with a mode weaker than `verify-full`, which libpq refuses too.
    #[error("sslrootcert=system needs sslmode=verify-full (or no sslmode), not {0}")]
    SystemRootsNeedVerifyFull(SslMode),
    /// The trusted roots could not be loaded.
    #[error("cannot use {roots} as trusted certificates: {reason}")]
    Roots {
        /// Where they were looked for.
        roots: String,
        /// What went wrong.
        reason: String,
    },
}

/// Where PostgreSQL is and how to connect to it: a libpq connection string (URL or
/// key-value), `sslmode` and `sslrootcert` included, which tokio-postgres alone does not
/// fully read.
///
/// ```
/// use portcullis::postgres::{DatabaseConfig, SslMode};
///
/// let url = "postgres://app@db.internal/app?sslmode=verify-full&sslrootcert=system";
/// let database: DatabaseConfig = url.parse()?;
/// assert_eq!(database.ssl_mode(), SslMode::VerifyFull);
/// assert_eq!(database.settings().get_dbname(), Some("app"));
/// # Ok::<_, portcullis::postgres::DatabaseConfigError>(())
/// ```
///
/// Every connection made from it ([`connect`](Self::connect), [`pool`](Self::pool),
/// [`Listener`](super::Listener), [`PostgresLiveness`](crate::PostgresLiveness)) uses
/// rustls as `sslmode` says. Parsing builds the TLS set-up once, reading `sslrootcert`
/// (or the system's roots) when the mode verifies; clones share it.
///
/// Without `sslrootcert`, the verifying modes trust the system's roots (libpq would read
/// `~/.postgresql/root.crt`).
#[derive(Clone)]
pub struct DatabaseConfig {
    settings: tokio_postgres::Config,
    ssl_mode: SslMode,
    roots: RootCerts,
    tls: MakeRustlsConnect,
}

/// A connection made by [`DatabaseConfig::connect`]: poll it (or spawn it) for the
/// client to work.
pub type Connection =
    tokio_postgres::Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

impl DatabaseConfig {
    /// Settings from tokio-postgres with an `sslmode` and the roots it trusts. Loads the
    /// roots when `ssl_mode` verifies certificates.
    pub fn new(
        settings: tokio_postgres::Config,
        ssl_mode: SslMode,
        roots: RootCerts,
    ) -> Result<Self, DatabaseConfigError> {
        let tls = super::tls::connector(ssl_mode, &roots)?;
        Ok(Self {
            settings,
            ssl_mode,
            roots,
            tls,
        })
    }

    /// The `sslmode` in force.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// The roots a verifying mode trusts.
    pub fn root_certs(&self) -> &RootCerts {
        &self.roots
    }

    /// Everything else: host, port, user, database, timeouts.
    pub fn settings(&self) -> &tokio_postgres::Config {
        &self.settings
    }

    /// Everything else, to change. Its own `ssl_mode` is ignored: [`ssl_mode`](Self::ssl_mode)
    /// decides.
    pub fn settings_mut(&mut self) -> &mut tokio_postgres::Config {
        &mut self.settings
    }

    /// The rustls connector, for connections made by hand with
    /// `settings().connect(tls)`. Prefer [`connect`](Self::connect), which also applies
    /// the `sslmode`.
    pub fn tls(&self) -> MakeRustlsConnect {
        self.tls.clone()
    }

    /// Opens one connection. Spawn the [`Connection`] (`tokio::spawn(connection)`) or poll
    /// it for the client to work.
    pub async fn connect(&self) -> Result<(Client, Connection), tokio_postgres::Error> {
        self.negotiated().connect(self.tls.clone()).await
    }

    /// A connection pool of at most `max_size` connections, opened lazily: it builds
    /// while PostgreSQL is down. Every wait for a connection, every connect and every
    /// statement (`statement_timeout`, `lock_timeout`) is bounded by `timeout`, and TCP
    /// keepalive and `TCP_USER_TIMEOUT` notice a peer that went away. A
    /// connection that died with its server is noticed on checkout and replaced.
    pub fn pool(&self, max_size: usize, timeout: Duration) -> Result<Pool, BuildError> {
        let mut settings = self.negotiated();
        let ms = timeout.as_millis();
        let given = settings.get_options().unwrap_or_default();
        let options = format!("{given} -c statement_timeout={ms} -c lock_timeout={ms}");
        settings.options(options.trim_start());
        // A peer that vanished (a dropped network, a host that died) is noticed by the
        // kernel: keepalive probes on an idle connection, and unacknowledged data for
        // longer than `timeout`. A server that stalls but acknowledges is for the caller
        // to bound.
        settings
            .keepalives(true)
            .keepalives_idle(timeout.max(Duration::from_secs(1)))
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(3)
            .tcp_user_timeout(timeout);
        let manager = Manager::from_config(
            settings,
            self.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(max_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
    }

    fn negotiated(&self) -> tokio_postgres::Config {
        let mut settings = self.settings.clone();
        settings.ssl_mode(self.ssl_mode.negotiation());
        settings
    }
}

impl From<tokio_postgres::Config> for DatabaseConfig {
    /// Takes tokio-postgres' own `sslmode` (`disable`, `prefer` or `require`: none of
    /// them checks certificates, so nothing is loaded).
    fn from(settings: tokio_postgres::Config) -> Self {
        use tokio_postgres::config::SslMode as Negotiation;
        let ssl_mode = match settings.get_ssl_mode() {
            Negotiation::Disable => SslMode::Disable,
            Negotiation::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
        let tls = super::tls::unverified();
        Self {
            settings,
            ssl_mode,
            roots: RootCerts::System,
            tls,
        }
    }
}

impl FromStr for DatabaseConfig {
    type Err = DatabaseConfigError;

    /// Parses a libpq URL (`postgres://user@host:5432/db?sslmode=require`) or key-value
    /// string (`host=db sslmode=verify-full sslrootcert=/etc/ca.pem`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(scheme) = foreign_scheme(text) {
            return Err(DatabaseConfigError::NotPostgres {
                scheme: scheme.to_owned(),
            });
        }
        let Some((rest, ssl)) = split_tls_parameters(text) else {
            // Not well-formed: tokio-postgres says what is wrong.
            return Err(invalid(text));
        };
        let settings: tokio_postgres::Config =
            rest.parse().map_err(DatabaseConfigError::Invalid)?;
        let mode = ssl.mode.as_deref().map(str::parse::<SslMode>).transpose()?;
        let roots = ssl.root_cert.map(|value| {
            if value == "system" {
                RootCerts::System
            } else {
                RootCerts::File(PathBuf::from(value))
            }
        });
        let mode = match (mode, &roots) {
            (None | Some(SslMode::VerifyFull), Some(RootCerts::System)) => SslMode::VerifyFull,
            (Some(weaker), Some(RootCerts::System)) => {
                return Err(DatabaseConfigError::SystemRootsNeedVerifyFull(weaker));
            }
            (Some(SslMode::Require), Some(RootCerts::File(_))) => SslMode::VerifyCa,
            (Some(mode), _) => mode,
            (None, _) => SslMode::Prefer,
        };
        Self::new(settings, mode, roots.unwrap_or(RootCerts::System))
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("settings", &self.settings)
            .field("ssl_mode", &self.ssl_mode)
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

/// Where it connects, without credentials, for log lines and errors:
/// `host db.internal port 5432 database app user app sslmode verify-full`.
impl fmt::Display for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<String> = self
            .settings
            .get_hosts()
            .iter()
            .map(|host| match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = self
            .settings
            .get_ports()
            .iter()
            .map(ToString::to_string)
            .collect();
        write!(
            f,
            "host {} port {} database {} user {} sslmode {}",
            if hosts.is_empty() {
                "localhost".to_owned()
            } else {
                hosts.join(",")
            },
            if ports.is_empty() {
                "5432".to_owned()
            } else {
                ports.join(",")
            },
            self.settings.get_dbname().unwrap_or("?"),
            self.settings.get_user().unwrap_or("?"),
            self.ssl_mode,
        )
    }
}

/// The schemes libpq reads as URLs; it matches them as written, in lower case.
const POSTGRES_SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// The scheme of `text` (`mysql://`, `sqlite:`), with what follows it up to `//`, when
/// `text` starts like a URL (RFC 3986: a letter, then letters, digits, `+`, `-` or `.`,
/// then `:`) of anything but PostgreSQL. A key-value string never does: its first
/// keyword ends at `=` or a space.
fn foreign_scheme(text: &str) -> Option<&str> {
    if POSTGRES_SCHEMES
        .iter()
        .any(|scheme| text.starts_with(scheme))
    {
        return None;
    }
    let colon = text.find(':')?;
    let name = &text[..colon];
    let mut chars = name.chars();
    let is_scheme = chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !is_scheme {
        return None;
    }
    let end = if text[colon..].starts_with("://") {
        colon + 3
    } else {
        colon + 1
    };
    Some(&text[..end])
}

fn invalid(text: &str) -> DatabaseConfigError {
    match text.parse::<tokio_postgres::Config>() {
        Err(e) => DatabaseConfigError::Invalid(e),
        // Both readers must agree on what the string says; they do not here.
        Ok(_) => DatabaseConfigError::Malformed,
    }
}

/// The TLS parameters taken out of a connection string.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsParameters {
    mode: Option<String>,
    root_cert: Option<String>,
}

impl TlsParameters {
    /// Takes `key = value` if it is one of ours; the last one written wins, as in libpq.
    fn take(&mut self, key: &str, value: String) -> bool {
        match key {
            "sslmode" => self.mode = Some(value),
            "sslrootcert" => self.root_cert = Some(value),
            _ => return false,
        }
        true
    }
}

/// Splits `sslmode` and `sslrootcert` out of a connection string, leaving the rest, as
/// written, for tokio-postgres. `None` when the string is not well-formed.
fn split_tls_parameters(text: &str) -> Option<(Cow<'_, str>, TlsParameters)> {
    let mut ours = TlsParameters::default();
    let is_url = POSTGRES_SCHEMES
        .iter()
        .any(|scheme| text.starts_with(scheme));
    if is_url {
        // tokio-postgres reads credentials up to the first `@`; the query starts at the
        // first `?` after them.
        let from = text.find('@').unwrap_or(0);
        let Some(question) = text[from..].find('?').map(|at| from + at) else {
            return Some((Cow::Borrowed(text), ours));
        };
        let mut kept = Vec::new();
        for pair in text[question + 1..].split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode_str(key).decode_utf8().ok()?;
            let value = percent_decode_str(value).decode_utf8().ok()?.into_owned();
            if !ours.take(&key, value) {
                kept.push(pair);
            }
        }
        let mut rest = text[..question].to_owned();
        if !kept.is_empty() {
            rest.push('?');
            rest.push_str(&kept.join("&"));
        }
        return Some((Cow::Owned(rest), ours));
    }
    let mut kept = Vec::new();
    for pair in key_value_pairs(text)? {
        if !ours.take(pair.key, pair.value) {
            kept.push(&text[pair.span]);
        }
    }
    Some((Cow::Owned(kept.join(" ")), ours))
}

/// One `keyword = value` of a key-value string.
struct Pair<'a> {
    /// Where it is, in bytes, as written.
    span: std::ops::Range<usize>,
    key: &'a str,
    /// Unquoted and unescaped.
    value: String,
}

/// The `keyword = value` pairs of a libpq key-value string. `None` when malformed (no
/// `=`, an open quote).
fn key_value_pairs(text: &str) -> Option<Vec<Pair<'_>>> {
    let bytes = text.as_bytes();
    let skip_space = |mut at: usize| {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        at
    };
    let mut pairs = Vec::new();
    let mut at = skip_space(0);
    while at < bytes.len() {
        let start = at;
        while at < bytes.len() && bytes[at] != b'=' && !bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        let key = &text[start..at];
        at = skip_space(at);
        if key.is_empty() || bytes.get(at) != Some(&b'=') {
            return None;
        }
        at = skip_space(at + 1);
        let quoted = bytes.get(at) == Some(&b'\'');
        if quoted {
            at += 1;
        }
        let mut value = Vec::new();
        loop {
            match bytes.get(at) {
                None if quoted => return None,
                None => break,
                Some(b'\'') if quoted => {
                    at += 1;
                    break;
                }
                Some(byte) if !quoted && byte.is_ascii_whitespace() => break,
                Some(b'\\') => {
                    value.push(*bytes.get(at + 1)?);
                    at += 2;
                }
                Some(byte) => {
                    value.push(*byte);
                    at += 1;
                }
            }
        }
        pairs.push(Pair {
            span: start..at,
            key,
            value: String::from_utf8(value).ok()?,
        });
        at = skip_space(at);
    }
    Some(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> DatabaseConfig {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn every_sslmode_is_read_from_urls_and_key_value_strings() {
        for (value, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            let url = parsed(&format!("postgres://u@h:5433/db?sslmode={value}"));
            assert_eq!(url.ssl_mode(), mode, "{value} in a URL");
            assert_eq!(url.settings().get_ports(), [5433]);
            let key_value = parsed(&format!("host=h sslmode = {value} dbname=db"));
            assert_eq!(key_value.ssl_mode(), mode, "{value} in key-value");
            assert_eq!(key_value.settings().get_dbname(), Some("db"));
            assert_eq!(mode.as_str(), value);
        }
    }

    #[test]
    fn no_sslmode_is_prefer_as_in_libpq() {
        assert_eq!(parsed("host=h").ssl_mode(), SslMode::Prefer);
        assert_eq!(parsed("postgres://h/db").ssl_mode(), SslMode::Prefer);
    }

    /// A CA certificate that signed nothing the tests connect to.
    const UNRELATED_CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/certs/unrelated-ca.pem");

    #[test]
    fn the_other_parameters_reach_tokio_postgres_as_written() {
        let url = parsed(&format!(
            "postgresql://us%40er:p%3Fss@h1:5432,h2:5433/d%20b\
             ?application_name=a%20b&sslmode=verify-ca&sslrootcert={}&connect_timeout=3",
            UNRELATED_CA.replace('/', "%2F")
        ));
        let settings = url.settings();
        assert_eq!(settings.get_user(), Some("us@er"));
        assert_eq!(settings.get_password(), Some(&b"p?ss"[..]));
        assert_eq!(settings.get_dbname(), Some("d b"));
        assert_eq!(settings.get_application_name(), Some("a b"));
        assert_eq!(
            settings.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        assert_eq!(settings.get_hosts().len(), 2);
        assert_eq!(settings.get_ports(), [5432, 5433]);
        assert_eq!(url.ssl_mode(), SslMode::VerifyCa);
        assert_eq!(url.root_certs(), &RootCerts::File(UNRELATED_CA.into()));

        let dir = tempfile::tempdir().unwrap();
        let spaced = dir.path().join("my ca.pem");
        std::fs::copy(UNRELATED_CA, &spaced).unwrap();
        let key_value = parsed(&format!(
            r"user='o\'neil' password='a b\\c' sslrootcert='{}' dbname=x sslmode=verify-ca",
            spaced.display()
        ));
        let settings = key_value.settings();
        assert_eq!(settings.get_user(), Some("o'neil"));
        assert_eq!(settings.get_password(), Some(&br"a b\c"[..]));
        assert_eq!(settings.get_dbname(), Some("x"));
        assert_eq!(key_value.root_certs(), &RootCerts::File(spaced));
    }

    #[test]
    fn sslrootcert_follows_libpq() {
        // A CA file makes `require` check the chain.
        let require = parsed(&format!(
            "host=h sslmode=require sslrootcert={UNRELATED_CA}"
        ));
        assert_eq!(require.ssl_mode(), SslMode::VerifyCa);
        // `system` means verify-full, and refuses anything weaker.
        assert_eq!(
            parsed("host=h sslrootcert=system").ssl_mode(),
            SslMode::VerifyFull
        );
        assert!(matches!(
            "host=h sslmode=verify-ca sslrootcert=system".parse::<DatabaseConfig>(),
            Err(DatabaseConfigError::SystemRootsNeedVerifyFull(
                SslMode::VerifyCa
            ))
        ));
    }

    #[test]
    fn bad_strings_get_errors_that_do_not_echo_them() {
        for (text, expected) in [
            ("host=h sslmode=allow", "sslmode must be"),
            (
                "postgres://u:hunter2@h/db?sslmode=verify-everything",
                "sslmode must be",
            ),
            ("host=h password='hunter2", "not a valid connection string"),
            (
                "postgres://u:hunter2@h/db?nonsense=1",
                "not a valid connection string",
            ),
            (
                "host=h sslmode=verify-full sslrootcert=/nonexistent/hunter2.pem",
                "cannot use sslrootcert",
            ),
        ] {
            let error = text.parse::<DatabaseConfig>().expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
            if !expected.starts_with("cannot use") {
                assert!(!error.contains("hunter2"), "{text}: {error}");
            }
        }
    }

    #[test]
    fn a_url_of_another_database_is_refused_by_name_without_its_password() {
        for (text, scheme) in [
            ("mysql://u:secret@h/db", "mysql://"),
            ("http://u:secret@h:5432/db", "http://"),
            ("sqlite:secret.db", "sqlite:"),
            ("sqlite::memory:", "sqlite:"),
            ("POSTGRES://u:secret@h/db", "POSTGRES://"),
            ("postgres+psycopg://u:secret@h/db", "postgres+psycopg://"),
            ("jdbc:postgresql://h/secret", "jdbc:"),
        ] {
            let error = text.parse::<DatabaseConfig>().expect_err(text);
            assert!(
                matches!(&error, DatabaseConfigError::NotPostgres { scheme: s } if s == scheme),
                "{text}: {error:?}"
            );
            let message = error.to_string();
            assert_eq!(
                message,
                format!(
                    "`{scheme}…` is not a PostgreSQL URL: Portcullis needs `postgres://` or \
                     `postgresql://` (or a libpq key=value string)"
                )
            );
            assert!(!message.contains("secret"), "{message}");
        }
        // Both PostgreSQL schemes and key-value strings are still read.
        for text in [
            "postgres://u:secret@h/db",
            "postgresql://u:secret@h/db",
            "host=h user=u password=secret dbname=db",
            "host=/var/run/postgresql,127.0.0.1 dbname=db",
            "hostaddr=::1 dbname=db",
        ] {
            parsed(text);
        }
    }

    #[test]
    fn an_unreadable_ca_file_is_named_with_its_setting_and_the_cause() {
        let error = "host=h sslmode=verify-full sslrootcert=/nonexistent/ca.pem"
            .parse::<DatabaseConfig>()
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("cannot use sslrootcert /nonexistent/ca.pem as trusted certificates"),
            "{error}"
        );
        assert!(error.contains("No such file or directory"), "{error}");
    }

    #[test]
    fn a_file_without_certificates_is_refused_at_parse_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = format!("host=h sslmode=verify-full sslrootcert={}", path.display())
            .parse::<DatabaseConfig>()
            .unwrap_err();
        assert!(
            matches!(error, DatabaseConfigError::Roots { .. }),
            "{error}"
        );
    }

    #[test]
    fn display_names_the_target_without_credentials() {
        let text =
            parsed("postgres://alice:hunter2@db.internal:6543/app?sslmode=require").to_string();
        assert_eq!(
            text,
            "host db.internal port 6543 database app user alice sslmode require"
        );
    }

    #[test]
    fn the_sslmode_decides_over_the_settings() {
        let mut database = parsed("host=h sslmode=verify-full sslrootcert=system");
        database
            .settings_mut()
            .ssl_mode(tokio_postgres::config::SslMode::Disable);
        assert_eq!(
            database.negotiated().get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }
}
