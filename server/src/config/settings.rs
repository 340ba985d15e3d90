//! Every environment variable the server reads, declared once: its name, what it is
//! about, its default, the values it allows and what it means.
//!
//! [`Config::from_lookup`](super::Config::from_lookup) reads each variable through its
//! declaration here, so the default and the range it applies are the ones written below;
//! [`markdown`] renders the same declarations as the configuration reference that
//! `portcullis-server config` prints and the README shows. An application declares its
//! own settings with the same [`Setting`] type, in a [`Group::Application`] of its own.

use std::fmt::Write as _;

/// Seconds in a day.
pub(crate) const DAY: u64 = 24 * 60 * 60;

/// What a setting is about; the reference lists groups in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Development or production.
    Environment,
    /// Where the database is and how it is used.
    Database,
    /// Where the server listens, and how requests and connections are bounded.
    Http,
    /// The public origin and the cookies of browser sessions.
    Browser,
    /// What signs and keys the tokens.
    Keys,
    /// How long sessions live and how refresh tokens may be retried.
    Sessions,
    /// How often clients may try.
    RateLimits,
    /// How long ended sessions and security events are kept.
    Retention,
    /// Second factors, and how recent and strong a proof the sensitive routes need.
    Factors,
    /// Verification, password reset and sign-in alerts, and how their mail is sent.
    Mail,
    /// What is logged and how.
    Logging,
    /// An application's own settings, under the heading it names.
    Application(&'static str),
}

impl Group {
    /// Every group of Portcullis's own settings, in the reference's order; an
    /// application's groups follow them.
    pub const ALL: [Self; 11] = [
        Self::Environment,
        Self::Database,
        Self::Http,
        Self::Browser,
        Self::Keys,
        Self::Sessions,
        Self::RateLimits,
        Self::Retention,
        Self::Factors,
        Self::Mail,
        Self::Logging,
    ];

    /// The group's heading in the reference.
    pub fn title(self) -> &'static str {
        match self {
            Self::Environment => "Environment",
            Self::Database => "Database",
            Self::Http => "HTTP and connections",
            Self::Browser => "Browser sessions",
            Self::Keys => "Tokens and keys",
            Self::Sessions => "Sessions and refresh",
            Self::RateLimits => "Rate limits",
            Self::Retention => "Retention and purge",
            Self::Factors => "Second factors and step-up",
            Self::Mail => "Account mail",
            Self::Logging => "Logging",
            Self::Application(title) => title,
        }
    }
}

/// What a whole-number setting counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Things: connections, keys, attempts, requests per minute.
    Count,
    /// Bytes.
    Bytes,
    /// Seconds of time.
    Seconds,
    /// Days of time.
    Days,
}

/// The values a setting takes, and the one it takes when unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A whole number from `min` to `max`, inclusive.
    Number {
        /// The value when unset.
        default: u64,
        /// The smallest value allowed.
        min: u64,
        /// The largest value allowed.
        max: u64,
        /// What the number counts.
        unit: Unit,
    },
    /// One of a few words.
    Choice {
        /// The word when unset.
        default: &'static str,
        /// The words allowed.
        choices: &'static [&'static str],
    },
    /// Text in a form of its own (an address, a filter), parsed by the setting's reader;
    /// when unset, `default` is read as if it had been given.
    Text {
        /// The text when unset.
        default: &'static str,
    },
    /// Text with no default value: unset means what `when_unset` says.
    Optional {
        /// What happens when the variable is unset, in Markdown.
        when_unset: &'static str,
    },
}

/// One environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The variable's name.
    pub name: &'static str,
    /// What it is about.
    pub group: Group,
    /// The values it takes, and its default.
    pub kind: Kind,
    /// What it means, in Markdown.
    pub meaning: &'static str,
}

impl Kind {
    /// A count from `min` to `max`, `default` when unset.
    pub const fn count(default: u64, min: u64, max: u64) -> Self {
        Self::Number {
            default,
            min,
            max,
            unit: Unit::Count,
        }
    }

    /// A number of seconds from `min` to `max`, `default` when unset.
    pub const fn seconds(default: u64, min: u64, max: u64) -> Self {
        Self::Number {
            default,
            min,
            max,
            unit: Unit::Seconds,
        }
    }

    /// A number of days from `min` to `max`, `default` when unset.
    pub const fn days(default: u64, min: u64, max: u64) -> Self {
        Self::Number {
            default,
            min,
            max,
            unit: Unit::Days,
        }
    }

    /// `false` or `true`, `default` when unset.
    pub const fn flag(default: bool) -> Self {
        Self::Choice {
            default: if default { "true" } else { "false" },
            choices: &["false", "true"],
        }
    }
}

/// `APP_ENV`.
pub const APP_ENV: Setting = Setting {
    name: "APP_ENV",
    group: Group::Environment,
    kind: Kind::Choice {
        default: "development",
        choices: &["development", "production"],
    },
    meaning: "Production never generates keys or creates the database, and refuses to start \
              without `JWT_SIGNING_KEYS`, `REFRESH_TOKEN_KEY_FILE` and `SMTP_URL`.",
};

/// The socket folder tried first when `DATABASE_URL` is unset.
pub(crate) const LOCAL_SOCKET_DIR: &str = "/var/run/postgresql";
/// The TCP host tried next.
pub(crate) const LOCAL_HOST: &str = "127.0.0.1";
/// The port on it.
pub(crate) const LOCAL_PORT: u16 = 5432;

/// `DATABASE_URL`.
pub const DATABASE_URL: Setting = Setting {
    name: "DATABASE_URL",
    group: Group::Database,
    kind: Kind::Optional {
        when_unset: "local server: `/var/run/postgresql`, then `127.0.0.1:5432`, as the OS user",
    },
    meaning: "A libpq URL (`postgres://user:pass@host:5432/db`) or key-value string. The \
              database defaults to the application's name with `_` for `-` \
              (`portcullis_server` for the stand-alone server). In development the server creates it \
              when missing. Needs a direct or session-mode connection (the layer `LISTEN`s). \
              `sslmode` (`disable`, `prefer` (the default), `require`, `verify-ca`, \
              `verify-full`) and `sslrootcert` (a CA file, or `system`) mean what they mean \
              to libpq; TLS is rustls, with the system's roots unless a CA file is given.",
};

/// `DATABASE_POOL_SIZE`.
pub const DATABASE_POOL_SIZE: Setting = Setting {
    name: "DATABASE_POOL_SIZE",
    group: Group::Database,
    kind: Kind::count(16, 1, 1024),
    meaning: "Most pooled connections.",
};

/// `DATABASE_TIMEOUT_SECONDS`.
pub const DATABASE_TIMEOUT_SECONDS: Setting = Setting {
    name: "DATABASE_TIMEOUT_SECONDS",
    group: Group::Database,
    kind: Kind::seconds(5, 1, 300),
    meaning: "Longest wait for a connection or a query.",
};

/// `REVOCATION_FEED`.
pub const REVOCATION_FEED: Setting = Setting {
    name: "REVOCATION_FEED",
    group: Group::Database,
    kind: Kind::Choice {
        default: "postgres",
        choices: &["postgres", "nats"],
    },
    meaning: "How instances hear of revocations. `postgres`: PostgreSQL `LISTEN`, nothing \
              else to run, one notification per revocation per instance. `nats`: a relay \
              publishes the database's revocation log to a NATS JetStream stream that every \
              instance reads, and the database sends no `NOTIFY`; for fleets (see \
              `docs/fleet.md`). At start the server sets the database's feed to this value, \
              so every instance of one database must agree.",
};

/// `NATS_URL`.
pub const NATS_URL: Setting = Setting {
    name: "NATS_URL",
    group: Group::Database,
    kind: Kind::Text {
        default: "nats://127.0.0.1:4222",
    },
    meaning: "The NATS server (JetStream on) of `REVOCATION_FEED=nats`; a comma-separated \
              list for a cluster. The stream is `PORTCULLIS_REVOCATIONS`, subject \
              `portcullis.revocations`.",
};

/// `REVOCATION_RELAY`.
pub const REVOCATION_RELAY: Setting = Setting {
    name: "REVOCATION_RELAY",
    group: Group::Database,
    kind: Kind::Choice {
        default: "on",
        choices: &["on", "off"],
    },
    meaning: "With `REVOCATION_FEED=nats`, whether this process also runs a relay that \
              publishes the revocation log (one is active per database, the others stand \
              by). `off` when relays run apart (`portcullis-server relay`).",
};

/// `BIND_ADDR`.
pub const BIND_ADDR: Setting = Setting {
    name: "BIND_ADDR",
    group: Group::Http,
    kind: Kind::Text {
        default: "127.0.0.1:8080",
    },
    meaning: "Address and port the HTTP server listens on.",
};

/// `MAX_BODY_BYTES`.
pub const MAX_BODY_BYTES: Setting = Setting {
    name: "MAX_BODY_BYTES",
    group: Group::Http,
    kind: Kind::Number {
        default: 65_536,
        min: 1_024,
        max: 16 * 1024 * 1024,
        unit: Unit::Bytes,
    },
    meaning: "Largest request body; larger gets 413.",
};

/// `REQUEST_TIMEOUT_SECONDS`.
pub const REQUEST_TIMEOUT_SECONDS: Setting = Setting {
    name: "REQUEST_TIMEOUT_SECONDS",
    group: Group::Http,
    kind: Kind::seconds(30, 1, 600),
    meaning: "Longest a request may take; then 503.",
};

/// `HEADER_READ_TIMEOUT_SECONDS`.
pub const HEADER_READ_TIMEOUT_SECONDS: Setting = Setting {
    name: "HEADER_READ_TIMEOUT_SECONDS",
    group: Group::Http,
    kind: Kind::seconds(10, 1, 600),
    meaning: "Longest a connection may take to send a request header, counted from when it \
              is ready for one; then it is closed. It ends an idle HTTP/1.1 keep-alive \
              connection too, and one that sends no first request: behind a proxy that keeps \
              idle upstream connections, keep its idle timeout below this.",
};

/// `IDLE_CONNECTION_TIMEOUT_SECONDS`.
pub const IDLE_CONNECTION_TIMEOUT_SECONDS: Setting = Setting {
    name: "IDLE_CONNECTION_TIMEOUT_SECONDS",
    group: Group::Http,
    kind: Kind::seconds(60, 1, 3600),
    meaning: "A connection that sends and receives nothing for this long is closed, HTTP/2 \
              ones included.",
};

/// `MAX_CONNECTIONS`.
pub const MAX_CONNECTIONS: Setting = Setting {
    name: "MAX_CONNECTIONS",
    group: Group::Http,
    kind: Kind::count(4096, 1, 1_000_000),
    meaning: "Most open connections; more are closed as soon as accepted. Keep it under the \
              open-files limit (`ulimit -n`), with room for the database pool.",
};

/// `MAX_CONNECTIONS_PER_IP`.
pub const MAX_CONNECTIONS_PER_IP: Setting = Setting {
    name: "MAX_CONNECTIONS_PER_IP",
    group: Group::Http,
    kind: Kind::count(256, 0, 1_000_000),
    meaning: "Most open connections per client IPv4 address or IPv6 /64; more are closed as \
              soon as accepted. `TRUSTED_PROXIES` are exempt (they carry everyone); `0` turns \
              it off.",
};

/// `TRUSTED_PROXIES`.
pub const TRUSTED_PROXIES: Setting = Setting {
    name: "TRUSTED_PROXIES",
    group: Group::Http,
    kind: Kind::Optional { when_unset: "none" },
    meaning: "Comma-separated IPs or CIDRs of your proxies. From them, and only from them, \
              `CLIENT_IP_HEADER` is believed for the client IP.",
};

/// `CLIENT_IP_HEADER`.
pub const CLIENT_IP_HEADER: Setting = Setting {
    name: "CLIENT_IP_HEADER",
    group: Group::Http,
    kind: Kind::Text {
        default: "X-Forwarded-For",
    },
    meaning: "The one header your proxies set: `X-Forwarded-For` (what nginx and load \
              balancers append to), `Forwarded` (RFC 7239 `for=`), or any header of \
              comma-separated addresses such as `X-Real-IP`. The client is its right-most \
              address that is not a trusted proxy; every other forwarding header is ignored, \
              since proxies pass those through as the client wrote them.",
};

/// `SHUTDOWN_GRACE_SECONDS`.
pub const SHUTDOWN_GRACE_SECONDS: Setting = Setting {
    name: "SHUTDOWN_GRACE_SECONDS",
    group: Group::Http,
    kind: Kind::seconds(10, 0, 600),
    meaning: "How long in-flight requests may finish after SIGTERM.",
};

/// `OPENAPI_UI`.
pub const OPENAPI_UI: Setting = Setting {
    name: "OPENAPI_UI",
    group: Group::Http,
    kind: Kind::Choice {
        default: "on",
        choices: &["on", "off"],
    },
    meaning: "Whether `/docs` serves the interactive API reference (Swagger UI). Its buttons \
              send requests with the browser's session cookie; `off` (404) is advised in \
              production. `/openapi.json` is served either way. Like every HTML page here it \
              cannot be framed (`frame-ancestors 'none'`, `X-Frame-Options: DENY`).",
};

/// `PUBLIC_URL`.
pub const PUBLIC_URL: Setting = Setting {
    name: "PUBLIC_URL",
    group: Group::Browser,
    kind: Kind::Text {
        default: "http://127.0.0.1:8080",
    },
    meaning: "The origin browsers reach the server at, scheme included \
              (`https://auth.example.com`; no path). A request authenticated by a cookie that \
              changes anything must carry an `Origin` naming exactly this origin (or, with no \
              `Origin`, `Sec-Fetch-Site: same-origin`); otherwise it is refused with 403.",
};

/// `COOKIE_SECURE`.
pub const COOKIE_SECURE: Setting = Setting {
    name: "COOKIE_SECURE",
    group: Group::Browser,
    kind: Kind::Choice {
        default: "on",
        choices: &["on", "off"],
    },
    meaning: "Whether the session cookies are `Secure`. `off` is allowed only while \
              `PUBLIC_URL` is `http://localhost` or a loopback address, for clients that do not \
              count loopback as secure, and then the cookie names may not use the `__Host-` and \
              `__Secure-` prefixes, which browsers accept only on `Secure` cookies. Browsers \
              take `Secure` cookies from `http://localhost` and loopback addresses anyway.",
};

/// `ACCESS_COOKIE_NAME`.
pub const ACCESS_COOKIE_NAME: Setting = Setting {
    name: "ACCESS_COOKIE_NAME",
    group: Group::Browser,
    kind: Kind::Text {
        default: "__Host-sg_access",
    },
    meaning: "The cookie holding the access token when a login asks for `\"transport\": \
              \"cookie\"`: `HttpOnly; Secure; SameSite=Strict; Path=/`. With `Secure` on it must \
              start with `__Host-`, so no subdomain can set or shadow it.",
};

/// The access cookie's name when `ACCESS_COOKIE_NAME` is unset (what the OpenAPI
/// document names).
pub const ACCESS_COOKIE_NAME_DEFAULT: &str = match ACCESS_COOKIE_NAME.kind {
    Kind::Text { default } => default,
    _ => panic!("ACCESS_COOKIE_NAME is declared as text"),
};

/// `REFRESH_COOKIE_NAME`.
pub const REFRESH_COOKIE_NAME: Setting = Setting {
    name: "REFRESH_COOKIE_NAME",
    group: Group::Browser,
    kind: Kind::Text {
        default: "__Secure-sg_refresh",
    },
    meaning: "The cookie holding the refresh token in cookie transport: `HttpOnly; Secure; \
              SameSite=Strict; Path=/auth`, so it is sent only to `/auth/*` (of which only \
              `/auth/refresh` reads it). With `Secure` on it must start with `__Secure-` \
              (`__Host-` would need `Path=/`). A sibling subdomain can set a cookie of this \
              name, so a refresh uses only the one whose session the binding cookie names.",
};

/// `BINDING_COOKIE_NAME`.
pub const BINDING_COOKIE_NAME: Setting = Setting {
    name: "BINDING_COOKIE_NAME",
    group: Group::Browser,
    kind: Kind::Text {
        default: "__Host-sg_binding",
    },
    meaning: "The cookie holding the session's client binding in cookie transport: \
              `HttpOnly; Secure; SameSite=Strict; Path=/`. It names the session this browser \
              signed in to; a refresh by cookie needs it and uses only the refresh cookie of \
              that session, and a retry of a rotated refresh token that carries it counts as \
              the same client from any network. With `Secure` on it must start with \
              `__Host-`, so no other host can set or shadow it.",
};

/// `JWT_SIGNING_KEYS`.
pub const JWT_SIGNING_KEYS: Setting = Setting {
    name: "JWT_SIGNING_KEYS",
    group: Group::Keys,
    kind: Kind::Optional {
        when_unset: "none (development generates one)",
    },
    meaning: "Comma-separated paths of Ed25519 private keys in PKCS#8 PEM (`openssl genpkey \
              -algorithm ed25519`). The first signs; all verify, for rotation. Each key's \
              `kid` is its RFC 7638 thumbprint.",
};

/// `REFRESH_TOKEN_KEY_FILE`.
pub const REFRESH_TOKEN_KEY_FILE: Setting = Setting {
    name: "REFRESH_TOKEN_KEY_FILE",
    group: Group::Keys,
    kind: Kind::Optional {
        when_unset: "none (development generates one)",
    },
    meaning: "A file of at least 32 random bytes (`head -c 32 /dev/urandom`) keying \
              refresh-token hashes and successors. Changing it invalidates every refresh \
              token.",
};

/// `DEV_KEYS_DIR`.
pub const DEV_KEYS_DIR: Setting = Setting {
    name: "DEV_KEYS_DIR",
    group: Group::Keys,
    kind: Kind::Text {
        default: ".dev-keys",
    },
    meaning: "Where development mode keeps its generated keys (mode 0600).",
};

/// `JWT_ISSUER`.
pub const JWT_ISSUER: Setting = Setting {
    name: "JWT_ISSUER",
    group: Group::Keys,
    kind: Kind::Optional {
        when_unset: "the application's name (`portcullis-server` for the stand-alone server)",
    },
    meaning: "The `iss` of access tokens.",
};

/// `JWT_AUDIENCE`.
pub const JWT_AUDIENCE: Setting = Setting {
    name: "JWT_AUDIENCE",
    group: Group::Keys,
    kind: Kind::Optional {
        when_unset: "the application's name (`portcullis-server` for the stand-alone server)",
    },
    meaning: "The `aud` of access tokens.",
};

/// `ACCESS_TOKEN_TTL_SECONDS`.
pub const ACCESS_TOKEN_TTL_SECONDS: Setting = Setting {
    name: "ACCESS_TOKEN_TTL_SECONDS",
    group: Group::Keys,
    kind: Kind::seconds(900, 10, DAY),
    meaning: "Access token lifetime.",
};

/// `REFRESH_IDLE_TIMEOUT_SECONDS`.
pub const REFRESH_IDLE_TIMEOUT_SECONDS: Setting = Setting {
    name: "REFRESH_IDLE_TIMEOUT_SECONDS",
    group: Group::Sessions,
    kind: Kind::seconds(14 * DAY, 60, 365 * DAY),
    meaning: "A session not refreshed for this long ends.",
};

/// `REFRESH_ABSOLUTE_LIFETIME_SECONDS`.
pub const REFRESH_ABSOLUTE_LIFETIME_SECONDS: Setting = Setting {
    name: "REFRESH_ABSOLUTE_LIFETIME_SECONDS",
    group: Group::Sessions,
    kind: Kind::seconds(90 * DAY, 60, 3 * 365 * DAY),
    meaning: "A session ends this long after login, whatever happens.",
};

/// `REFRESH_GRACE_SECONDS`.
pub const REFRESH_GRACE_SECONDS: Setting = Setting {
    name: "REFRESH_GRACE_SECONDS",
    group: Group::Sessions,
    kind: Kind::seconds(5, 0, 300),
    meaning: "How long the previous refresh token may be retried, by the client (IP and user \
              agent) that rotated it only.",
};

/// `REFRESH_MAX_RETRIES`.
pub const REFRESH_MAX_RETRIES: Setting = Setting {
    name: "REFRESH_MAX_RETRIES",
    group: Group::Sessions,
    kind: Kind::count(16, 0, 1_000),
    meaning: "How many such retries one rotation allows; one more is reuse.",
};

/// `MAX_SESSIONS_PER_USER`.
pub const MAX_SESSIONS_PER_USER: Setting = Setting {
    name: "MAX_SESSIONS_PER_USER",
    group: Group::Sessions,
    kind: Kind::count(0, 0, 10_000),
    meaning: "Most live sessions one user may have. A login that would leave more revokes the \
              user's least recently used ones (reason `session_limit`), so the newest sign-in \
              wins. `0`: no cap.",
};

/// `RATE_LIMIT_LOGIN_PER_ACCOUNT`.
pub const RATE_LIMIT_LOGIN_PER_ACCOUNT: Setting = Setting {
    name: "RATE_LIMIT_LOGIN_PER_ACCOUNT",
    group: Group::RateLimits,
    kind: Kind::count(20, 0, 1_000_000),
    meaning: "Failed logins per account per minute, as a burst, and as many per account from \
              one client IP; `0` turns both off.",
};

/// `RATE_LIMIT_LOGIN_PER_IP`.
pub const RATE_LIMIT_LOGIN_PER_IP: Setting = Setting {
    name: "RATE_LIMIT_LOGIN_PER_IP",
    group: Group::RateLimits,
    kind: Kind::count(60, 0, 1_000_000),
    meaning: "Failed logins, and registrations, per client IP (IPv6: per /64) per minute; `0` \
              turns it off.",
};

/// `LOGIN_KNOWN_IP_DAYS`.
pub const LOGIN_KNOWN_IP_DAYS: Setting = Setting {
    name: "LOGIN_KNOWN_IP_DAYS",
    group: Group::RateLimits,
    kind: Kind::days(30, 0, 365),
    meaning: "A client IP from which a session of the account was used (login or refresh) \
              within this many days signs in with the right password even when others' \
              failures used up the account's budget; `0`: only a bearer token of a live \
              session of the account does.",
};

/// `RATE_LIMIT_PASSWORD_CHANGE_PER_USER`.
pub const RATE_LIMIT_PASSWORD_CHANGE_PER_USER: Setting = Setting {
    name: "RATE_LIMIT_PASSWORD_CHANGE_PER_USER",
    group: Group::RateLimits,
    kind: Kind::count(10, 0, 1_000_000),
    meaning: "Failed password changes per user per minute, over all the user's sessions; `0` \
              turns it off.",
};

/// `PASSWORD_CHANGE_MAX_FAILURES`.
pub const PASSWORD_CHANGE_MAX_FAILURES: Setting = Setting {
    name: "PASSWORD_CHANGE_MAX_FAILURES",
    group: Group::RateLimits,
    kind: Kind::count(5, 0, 1_000),
    meaning: "Wrong current passwords after which the session giving them is revoked; also \
              the most attempts one session has at once. `0`: never revoked, no per-session \
              limit.",
};

/// `RATE_LIMIT_REFRESH_PER_IP`.
pub const RATE_LIMIT_REFRESH_PER_IP: Setting = Setting {
    name: "RATE_LIMIT_REFRESH_PER_IP",
    group: Group::RateLimits,
    kind: Kind::count(600, 0, 10_000_000),
    meaning: "Refreshes per client IP (IPv6: per /64) per minute; `0` turns it off.",
};

/// `RATE_LIMIT_MAX_KEYS`.
pub const RATE_LIMIT_MAX_KEYS: Setting = Setting {
    name: "RATE_LIMIT_MAX_KEYS",
    group: Group::RateLimits,
    kind: Kind::count(
        crate::rate_limit::DEFAULT_MAX_KEYS as u64,
        1_000,
        100_000_000,
    ),
    meaning: "Most keys (IPs, accounts, sessions) each rate limiter keeps; the least recently \
              used go first.",
};

/// `RATE_LIMIT_ACCOUNT_MAIL_PER_ADDRESS`.
pub const RATE_LIMIT_ACCOUNT_MAIL_PER_ADDRESS: Setting = Setting {
    name: "RATE_LIMIT_ACCOUNT_MAIL_PER_ADDRESS",
    group: Group::RateLimits,
    kind: Kind::count(5, 0, 1_000_000),
    meaning: "Password-reset requests per email address per minute, whether or not an account \
              has it (so the answer tells nobody which), and verification mails a signed-in \
              user asks for; `0` turns it off.",
};

/// `RATE_LIMIT_ACCOUNT_RECOVERY_PER_IP`.
pub const RATE_LIMIT_ACCOUNT_RECOVERY_PER_IP: Setting = Setting {
    name: "RATE_LIMIT_ACCOUNT_RECOVERY_PER_IP",
    group: Group::RateLimits,
    kind: Kind::count(30, 0, 1_000_000),
    meaning: "Requests per client IP (IPv6: per /64) per minute to the password-reset and \
              email-verification routes; `0` turns it off.",
};

/// `SESSION_RETENTION_DAYS`.
pub const SESSION_RETENTION_DAYS: Setting = Setting {
    name: "SESSION_RETENTION_DAYS",
    group: Group::Retention,
    kind: Kind::days(30, 0, 3650),
    meaning: "Ended sessions are deleted this long after they end.",
};

/// `SECURITY_EVENT_RETENTION_DAYS`.
pub const SECURITY_EVENT_RETENTION_DAYS: Setting = Setting {
    name: "SECURITY_EVENT_RETENTION_DAYS",
    group: Group::Retention,
    kind: Kind::days(90, 0, 3650),
    meaning: "Security events are deleted this long after they happened.",
};

/// `PURGE_INTERVAL_SECONDS`.
pub const PURGE_INTERVAL_SECONDS: Setting = Setting {
    name: "PURGE_INTERVAL_SECONDS",
    group: Group::Retention,
    kind: Kind::seconds(3600, 1, 7 * DAY),
    meaning: "How often the purge job runs.",
};

/// `SMTP_URL`.
pub const SMTP_URL: Setting = Setting {
    name: "SMTP_URL",
    group: Group::Mail,
    kind: Kind::Optional {
        when_unset: "none: development writes mails to `MAIL_DEV_DIR`; production refuses to \
                     start",
    },
    meaning: "The mail server: `smtps://user:pass@host:465` (TLS from the start) or \
              `smtp://user:pass@host:587` (STARTTLS, required: a server that does not offer it \
              is not used). `smtp://host:port?tls=none` talks plain SMTP, only to `localhost` \
              or a loopback address. Credentials are optional and percent-encoded.",
};

/// `MAIL_FROM`.
pub const MAIL_FROM: Setting = Setting {
    name: "MAIL_FROM",
    group: Group::Mail,
    kind: Kind::Optional {
        when_unset: "the application's name at `localhost` (`portcullis-server \
                     <portcullis-server@localhost>`)",
    },
    meaning: "The sender of account mail: an address, or `Name <address>`.",
};

/// `MAIL_DEV_DIR`.
pub const MAIL_DEV_DIR: Setting = Setting {
    name: "MAIL_DEV_DIR",
    group: Group::Mail,
    kind: Kind::Optional {
        when_unset: "`mail` in `DEV_KEYS_DIR`",
    },
    meaning: "In development without `SMTP_URL`, each mail is written here as an `.eml` file \
              and its path logged.",
};

/// `MAIL_POLL_INTERVAL_SECONDS`.
pub const MAIL_POLL_INTERVAL_SECONDS: Setting = Setting {
    name: "MAIL_POLL_INTERVAL_SECONDS",
    group: Group::Mail,
    kind: Kind::seconds(30, 1, 3600),
    meaning: "How often the mail worker looks for mail that is due; it also wakes at once \
              when mail is queued (a `NOTIFY` on `session_guard_mail`).",
};

/// `MAIL_RETRY_BASE_SECONDS`.
pub const MAIL_RETRY_BASE_SECONDS: Setting = Setting {
    name: "MAIL_RETRY_BASE_SECONDS",
    group: Group::Mail,
    kind: Kind::seconds(30, 1, 3600),
    meaning: "How long after a failed attempt a mail is tried again; the wait doubles with \
              each failure, up to an hour. A mail the server refuses for good (a 5xx \
              answer) is dropped and logged.",
};

/// `MAIL_BATCH_SIZE`.
pub const MAIL_BATCH_SIZE: Setting = Setting {
    name: "MAIL_BATCH_SIZE",
    group: Group::Mail,
    kind: Kind::count(20, 1, 1_000),
    meaning: "Most mails one worker claims at once (`FOR UPDATE SKIP LOCKED`, so replicas \
              share the work).",
};

/// `EMAIL_VERIFICATION_TTL_SECONDS`.
pub const EMAIL_VERIFICATION_TTL_SECONDS: Setting = Setting {
    name: "EMAIL_VERIFICATION_TTL_SECONDS",
    group: Group::Mail,
    kind: Kind::seconds(DAY, 1, 30 * DAY),
    meaning: "How long the link of a verification mail works.",
};

/// `PASSWORD_RESET_TTL_SECONDS`.
pub const PASSWORD_RESET_TTL_SECONDS: Setting = Setting {
    name: "PASSWORD_RESET_TTL_SECONDS",
    group: Group::Mail,
    kind: Kind::seconds(1800, 1, DAY),
    meaning: "How long the link of a password-reset mail works.",
};

/// `PASSWORD_RESET_LIVE_LINKS`.
pub const PASSWORD_RESET_LIVE_LINKS: Setting = Setting {
    name: "PASSWORD_RESET_LIVE_LINKS",
    group: Group::Mail,
    kind: Kind::count(3, 1, 10),
    meaning: "How many password-reset links of one account work at once. A new request \
              keeps the newest earlier ones, so someone else's request does not void the \
              owner's link; each still works once and expires. A password change, a reset \
              and signing out everywhere end them all.",
};

/// `ACCOUNT_MAIL_PER_HOUR`.
pub const ACCOUNT_MAIL_PER_HOUR: Setting = Setting {
    name: "ACCOUNT_MAIL_PER_HOUR",
    group: Group::Mail,
    kind: Kind::count(10, 1, 1000),
    meaning: "Most account mails (verification, reset and sign-in alert together) one \
              mailbox gets in an hour, counted across replicas. Past it a reset request is \
              still answered 202 but mails nothing, and a verification resend gets 429.",
};

/// `ACCOUNT_MAIL_PER_DAY`.
pub const ACCOUNT_MAIL_PER_DAY: Setting = Setting {
    name: "ACCOUNT_MAIL_PER_DAY",
    group: Group::Mail,
    kind: Kind::count(30, 1, 10_000),
    meaning: "Most account mails one mailbox gets in a day, as `ACCOUNT_MAIL_PER_HOUR`.",
};

/// `SIGNIN_ALERTS_PER_HOUR`.
pub const SIGNIN_ALERTS_PER_HOUR: Setting = Setting {
    name: "SIGNIN_ALERTS_PER_HOUR",
    group: Group::Mail,
    kind: Kind::count(3, 1, 100),
    meaning: "Most sign-in alerts one account gets in an hour (within the mailbox's caps \
              above): sign-ins that cycle user agents cannot flood the owner.",
};

/// `REQUIRE_VERIFIED_EMAIL`.
pub const REQUIRE_VERIFIED_EMAIL: Setting = Setting {
    name: "REQUIRE_VERIFIED_EMAIL",
    group: Group::Mail,
    kind: Kind::flag(false),
    meaning: "`true`: a login with the right password of an account whose address is not \
              verified gets 403 `email_not_verified` (a wrong password still gets 401).",
};

/// `ALLOW_SINGLE_LABEL_EMAIL_DOMAINS`.
pub const ALLOW_SINGLE_LABEL_EMAIL_DOMAINS: Setting = Setting {
    name: "ALLOW_SINGLE_LABEL_EMAIL_DOMAINS",
    group: Group::Mail,
    kind: Kind::flag(false),
    meaning: "`true`: registration accepts addresses whose domain is a single label \
              (`ada@intranet`, `ada@localhost`), for an intranet whose mail server delivers \
              to such names. Off, they get 400 `invalid_email` in every environment.",
};

/// `NEW_SIGNIN_ALERTS`.
pub const NEW_SIGNIN_ALERTS: Setting = Setting {
    name: "NEW_SIGNIN_ALERTS",
    group: Group::Mail,
    kind: Kind::flag(false),
    meaning: "`true`: a login from a device (its label, such as \"Firefox 131 on Linux\") and \
              network (the IPv4 /24, the IPv6 /64) that no kept, unrevoked session of the \
              account came from mails the owner (at most `SIGNIN_ALERTS_PER_HOUR`). An \
              account's first login does not.",
};

/// `MFA_ISSUER`.
pub const MFA_ISSUER: Setting = Setting {
    name: "MFA_ISSUER",
    group: Group::Factors,
    kind: Kind::Optional {
        when_unset: "the application's name (`portcullis-server` for the stand-alone server)",
    },
    meaning: "The name authenticator apps show beside the account's codes (the TOTP URI's \
              issuer), and passkey prompts show as the site's name.",
};

/// `MFA_CHALLENGE_TTL_SECONDS`.
pub const MFA_CHALLENGE_TTL_SECONDS: Setting = Setting {
    name: "MFA_CHALLENGE_TTL_SECONDS",
    group: Group::Factors,
    kind: Kind::seconds(300, 30, 3600),
    meaning: "How long the `mfa_token` of a login that needs a second factor works, and a \
              passkey ceremony's challenge.",
};

/// `MFA_MAX_FAILURES_PER_TOKEN`.
pub const MFA_MAX_FAILURES_PER_TOKEN: Setting = Setting {
    name: "MFA_MAX_FAILURES_PER_TOKEN",
    group: Group::Factors,
    kind: Kind::count(5, 1, 100),
    meaning: "Wrong codes one `mfa_token` may take; the last one voids it (sign in again).",
};

/// `MFA_MAX_FAILURES_PER_ACCOUNT`.
pub const MFA_MAX_FAILURES_PER_ACCOUNT: Setting = Setting {
    name: "MFA_MAX_FAILURES_PER_ACCOUNT",
    group: Group::Factors,
    kind: Kind::count(10, 1, 10_000),
    meaning: "Wrong second-factor codes per account (every `mfa_token` and step-up \
              together, on every instance) within 15 minutes; past it, codes get 429 until \
              the window ends.",
};

/// `PRIVILEGED_AUTH_MAX_AGE_SECONDS`.
pub const PRIVILEGED_AUTH_MAX_AGE_SECONDS: Setting = Setting {
    name: "PRIVILEGED_AUTH_MAX_AGE_SECONDS",
    group: Group::Factors,
    kind: Kind::seconds(600, 10, DAY),
    meaning: "How recent the user's last proof (`auth_time`) must be for a password change, \
              `logout-all`, adding or removing a factor and new recovery codes; an account \
              with a factor needs `aal2` for them too. Otherwise: 401 with the RFC 9470 \
              challenge, answered by `POST /auth/step-up`.",
};

/// `STEP_UP_ON_DEVICE_CHANGE`.
pub const STEP_UP_ON_DEVICE_CHANGE: Setting = Setting {
    name: "STEP_UP_ON_DEVICE_CHANGE",
    group: Group::Factors,
    kind: Kind::flag(false),
    meaning: "`true`: a refresh from a browser family or OS other than the session's keeps \
              the session but gets an access token at `aal1` with an `auth_time` of 0, so \
              that routes needing assurance ask for a step-up; recorded as `device_changed`.",
};

/// `RUST_LOG`.
pub const RUST_LOG: Setting = Setting {
    name: "RUST_LOG",
    group: Group::Logging,
    kind: Kind::Text { default: "info" },
    meaning: "Log filter (`tracing-subscriber` syntax). `info,portcullis_server::request=debug` \
              adds one line per request (method, path, route, status, latency).",
};

/// `LOG_FORMAT`.
pub const LOG_FORMAT: Setting = Setting {
    name: "LOG_FORMAT",
    group: Group::Logging,
    kind: Kind::Choice {
        default: "text",
        choices: &["text", "json"],
    },
    meaning: "`json` writes one object per line.",
};

/// Every setting, grouped, in the reference's order.
pub const ALL: &[&Setting] = &[
    &APP_ENV,
    &DATABASE_URL,
    &DATABASE_POOL_SIZE,
    &DATABASE_TIMEOUT_SECONDS,
    &REVOCATION_FEED,
    &NATS_URL,
    &REVOCATION_RELAY,
    &BIND_ADDR,
    &MAX_BODY_BYTES,
    &REQUEST_TIMEOUT_SECONDS,
    &HEADER_READ_TIMEOUT_SECONDS,
    &IDLE_CONNECTION_TIMEOUT_SECONDS,
    &MAX_CONNECTIONS,
    &MAX_CONNECTIONS_PER_IP,
    &TRUSTED_PROXIES,
    &CLIENT_IP_HEADER,
    &SHUTDOWN_GRACE_SECONDS,
    &OPENAPI_UI,
    &PUBLIC_URL,
    &COOKIE_SECURE,
    &ACCESS_COOKIE_NAME,
    &REFRESH_COOKIE_NAME,
    &BINDING_COOKIE_NAME,
    &JWT_SIGNING_KEYS,
    &REFRESH_TOKEN_KEY_FILE,
    &DEV_KEYS_DIR,
    &JWT_ISSUER,
    &JWT_AUDIENCE,
    &ACCESS_TOKEN_TTL_SECONDS,
    &REFRESH_IDLE_TIMEOUT_SECONDS,
    &REFRESH_ABSOLUTE_LIFETIME_SECONDS,
    &REFRESH_GRACE_SECONDS,
    &REFRESH_MAX_RETRIES,
    &MAX_SESSIONS_PER_USER,
    &RATE_LIMIT_LOGIN_PER_ACCOUNT,
    &RATE_LIMIT_LOGIN_PER_IP,
    &LOGIN_KNOWN_IP_DAYS,
    &RATE_LIMIT_PASSWORD_CHANGE_PER_USER,
    &PASSWORD_CHANGE_MAX_FAILURES,
    &RATE_LIMIT_REFRESH_PER_IP,
    &RATE_LIMIT_MAX_KEYS,
    &RATE_LIMIT_ACCOUNT_MAIL_PER_ADDRESS,
    &RATE_LIMIT_ACCOUNT_RECOVERY_PER_IP,
    &SESSION_RETENTION_DAYS,
    &SECURITY_EVENT_RETENTION_DAYS,
    &PURGE_INTERVAL_SECONDS,
    &MFA_ISSUER,
    &MFA_CHALLENGE_TTL_SECONDS,
    &MFA_MAX_FAILURES_PER_TOKEN,
    &MFA_MAX_FAILURES_PER_ACCOUNT,
    &PRIVILEGED_AUTH_MAX_AGE_SECONDS,
    &STEP_UP_ON_DEVICE_CHANGE,
    &SMTP_URL,
    &MAIL_FROM,
    &MAIL_DEV_DIR,
    &MAIL_POLL_INTERVAL_SECONDS,
    &MAIL_RETRY_BASE_SECONDS,
    &MAIL_BATCH_SIZE,
    &EMAIL_VERIFICATION_TTL_SECONDS,
    &PASSWORD_RESET_TTL_SECONDS,
    &PASSWORD_RESET_LIVE_LINKS,
    &ACCOUNT_MAIL_PER_HOUR,
    &ACCOUNT_MAIL_PER_DAY,
    &SIGNIN_ALERTS_PER_HOUR,
    &REQUIRE_VERIFIED_EMAIL,
    &ALLOW_SINGLE_LABEL_EMAIL_DOMAINS,
    &NEW_SIGNIN_ALERTS,
    &RUST_LOG,
    &LOG_FORMAT,
];

/// The header row of each group's table; the README check parses tables by it.
pub const TABLE_HEADER: &str = "| variable | default | allowed | meaning |";

impl Setting {
    /// The default as the reference shows it, in Markdown.
    pub fn rendered_default(&self) -> String {
        match self.kind {
            Kind::Number { default, unit, .. } => number(default, unit),
            Kind::Choice { default, .. } | Kind::Text { default } => format!("`{default}`"),
            Kind::Optional { when_unset } => when_unset.to_owned(),
        }
    }

    /// The values allowed as the reference shows them, in Markdown; `—` when the meaning
    /// says which form the text takes.
    pub fn rendered_allowed(&self) -> String {
        match self.kind {
            Kind::Number { min, max, unit, .. } => {
                format!("{} to {}", number(min, unit), number(max, unit))
            }
            Kind::Choice { choices, .. } => choices
                .iter()
                .map(|choice| format!("`{choice}`"))
                .collect::<Vec<_>>()
                .join(", "),
            Kind::Text { .. } | Kind::Optional { .. } => "—".to_owned(),
        }
    }

    /// The setting's row in its group's table.
    pub fn table_row(&self) -> String {
        format!(
            "| `{}` | {} | {} | {} |",
            self.name,
            self.rendered_default(),
            self.rendered_allowed(),
            self.meaning
        )
    }
}

/// `n` in `unit`, with whole days spelled out for long spans of seconds.
fn number(n: u64, unit: Unit) -> String {
    match unit {
        Unit::Seconds if n >= DAY && n.is_multiple_of(DAY) => {
            let days = n / DAY;
            let plural = if days == 1 { "" } else { "s" };
            format!("`{n}` ({days} day{plural})")
        }
        Unit::Count | Unit::Bytes | Unit::Seconds | Unit::Days => format!("`{n}`"),
    }
}

/// The configuration reference of Portcullis's own settings: a heading and a table per
/// group, in Markdown.
pub fn markdown() -> String {
    markdown_with(&[])
}

/// The configuration reference of Portcullis's settings and then an application's, in the
/// groups it declared them in (in the order they first appear).
pub fn markdown_with(application: &[&Setting]) -> String {
    let mut groups: Vec<Group> = Group::ALL.to_vec();
    for setting in application {
        if !groups.contains(&setting.group) {
            groups.push(setting.group);
        }
    }
    let mut text = String::new();
    for group in groups {
        if !text.is_empty() {
            text.push('\n');
        }
        let _ = writeln!(text, "#### {}\n", group.title());
        let _ = writeln!(text, "{TABLE_HEADER}\n|---|---|---|---|");
        for setting in ALL
            .iter()
            .chain(application)
            .filter(|setting| setting.group == group)
        {
            let _ = writeln!(text, "{}", setting.table_row());
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{STANDALONE_NAME, default_database_name};

    #[test]
    fn names_are_unique_and_listed_by_group() {
        let mut names: Vec<&str> = ALL.iter().map(|setting| setting.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a variable is declared twice");
        let order: Vec<usize> = ALL
            .iter()
            .map(|setting| Group::ALL.iter().position(|g| *g == setting.group).unwrap())
            .collect();
        assert!(order.is_sorted(), "ALL lists settings out of group order");
    }

    #[test]
    fn defaults_lie_within_their_ranges_and_choices() {
        for setting in ALL {
            match setting.kind {
                Kind::Number {
                    default, min, max, ..
                } => assert!(
                    min <= default && default <= max,
                    "{}: {default} outside {min}..={max}",
                    setting.name
                ),
                Kind::Choice { default, choices } => {
                    assert!(choices.contains(&default), "{}", setting.name);
                }
                Kind::Text { .. } | Kind::Optional { .. } => {}
            }
        }
    }

    #[test]
    fn the_reference_has_one_row_per_setting_under_its_group() {
        let reference = markdown();
        for group in Group::ALL {
            assert!(
                reference.contains(&format!("#### {}\n", group.title())),
                "{reference}"
            );
        }
        let rows: Vec<&str> = reference
            .lines()
            .filter(|line| line.starts_with("| `"))
            .collect();
        assert_eq!(rows.len(), ALL.len());
        assert!(reference.contains(
            "| `REFRESH_IDLE_TIMEOUT_SECONDS` | `1209600` (14 days) | `60` to `31536000` (365 days) |"
        ));
        assert!(reference.contains("| `APP_ENV` | `development` | `development`, `production` |"));
        assert!(reference.contains("| `BIND_ADDR` | `127.0.0.1:8080` | — |"));
    }

    #[test]
    fn the_cookie_words_match_what_is_set() {
        use crate::cookies::{ACCESS_COOKIE_PATH, CookieRole, REFRESH_COOKIE_PATH};
        assert!(
            ACCESS_COOKIE_NAME
                .meaning
                .contains(&format!("Path={ACCESS_COOKIE_PATH}`"))
        );
        assert!(
            REFRESH_COOKIE_NAME
                .meaning
                .contains(&format!("Path={REFRESH_COOKIE_PATH}`"))
        );
        assert!(ACCESS_COOKIE_NAME_DEFAULT.starts_with(CookieRole::Access.secure_prefix()));
        let Kind::Text { default } = REFRESH_COOKIE_NAME.kind else {
            panic!("REFRESH_COOKIE_NAME is text");
        };
        assert!(default.starts_with(CookieRole::Refresh.secure_prefix()));
    }

    #[test]
    fn the_words_for_an_unset_database_url_match_what_is_used() {
        let Kind::Optional { when_unset } = DATABASE_URL.kind else {
            panic!("DATABASE_URL has no default value");
        };
        assert!(when_unset.contains(&format!("`{LOCAL_SOCKET_DIR}`")));
        assert!(when_unset.contains(&format!("`{LOCAL_HOST}:{LOCAL_PORT}`")));
        assert!(
            DATABASE_URL
                .meaning
                .contains(&format!("`{}`", default_database_name(STANDALONE_NAME)))
        );
    }
}
