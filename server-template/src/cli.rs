//! The command line: serve HTTP (the default), only apply migrations, print the
//! configuration reference, or let an operator list and revoke sessions. The binary's
//! `main` calls [`main`], so that everything the binary does lives in the library.

use std::process::ExitCode;
use std::time::SystemTime;

use uuid::Uuid;

use crate::accounts::{Email, Operator, OperatorError, RevokeTarget};
use crate::config::{Config, LogFormat};
use crate::store::sessions::{RevokeReason, SessionRecord, SessionState};

/// The binary's name, in messages.
const NAME: &str = env!("CARGO_PKG_NAME");

const USAGE: &str = concat!(
    "usage: ",
    env!("CARGO_PKG_NAME"),
    " [serve | migrate | config | sessions ...]

  serve     run the HTTP server (default); migrates the database first
  migrate   apply pending database migrations, then exit
  config    print every setting (an environment variable) with its default, the values
            it allows and its meaning, as Markdown

  sessions list --email EMAIL [--json]
            print every session of the account (live, revoked with its reason, or
            expired), one per line, or as a JSON array
  sessions revoke --email EMAIL [--session ID]
            revoke that one session of the account, or every live session of it
  sessions revoke --all-users
            revoke every live session of every user (after a key compromise)

Settings come from environment variables, read once at start-up; the sessions commands
read the same ones as serve, and running servers refuse revoked sessions at once."
);

/// What the arguments ask for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    /// Print the configuration reference.
    Config,
    /// Print the usage.
    Help,
    /// Read the configuration, then do this.
    Run(Job),
}

/// A command that needs the configuration and the database.
#[derive(Debug, PartialEq, Eq)]
enum Job {
    Serve,
    Migrate,
    ListSessions { email: Email, json: bool },
    RevokeSessions(RevokeTarget),
}

/// Why the arguments name no command; the message precedes the usage on stderr.
#[derive(Debug, PartialEq, Eq)]
struct UsageError(String);

/// Runs the command the arguments name; what the binary's `main` returns.
#[must_use]
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let job = match parse(&args) {
        Ok(Command::Config) => {
            print!("{}", crate::config::settings::markdown());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(job)) => job,
        Err(UsageError(message)) => {
            if !message.is_empty() {
                eprintln!("{NAME}: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{NAME}: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{NAME}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match job {
            Job::Serve => crate::run(config).await.map_err(|e| e.to_string()),
            Job::Migrate => crate::database::migrate(&config)
                .await
                .map(|applied| tracing::info!(applied, "migrations applied"))
                .map_err(|e| e.to_string()),
            Job::ListSessions { email, json } => list_sessions(&config, &email, json).await,
            Job::RevokeSessions(target) => revoke_sessions(&config, &target).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!(error = %message, "{NAME} stopped");
            eprintln!("{NAME}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the arguments after the binary's name.
fn parse(args: &[String]) -> Result<Command, UsageError> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        [] | ["serve"] => Ok(Command::Run(Job::Serve)),
        ["migrate"] => Ok(Command::Run(Job::Migrate)),
        ["config"] => Ok(Command::Config),
        ["-h" | "--help" | "help"] => Ok(Command::Help),
        ["sessions", "list", options @ ..] => {
            let options = Options::parse(options, &["--email"], &["--json"])?;
            Ok(Command::Run(Job::ListSessions {
                email: options.email()?.ok_or_else(|| missing("--email"))?,
                json: options.has("--json"),
            }))
        }
        ["sessions", "revoke", options @ ..] => {
            let options = Options::parse(options, &["--email", "--session"], &["--all-users"])?;
            let email = options.email()?;
            let session = options.session()?;
            let target = match (email, session, options.has("--all-users")) {
                (Some(email), Some(session), false) => RevokeTarget::Session { email, session },
                (Some(email), None, false) => RevokeTarget::User { email },
                (None, None, true) => RevokeTarget::AllUsers,
                (None, Some(_), false) => return Err(missing("--email")),
                (None, None, false) => {
                    return Err(UsageError(
                        "sessions revoke needs --email (and maybe --session), or --all-users"
                            .to_owned(),
                    ));
                }
                (_, _, true) => {
                    return Err(UsageError(
                        "--all-users goes alone, without --email or --session".to_owned(),
                    ));
                }
            };
            Ok(Command::Run(Job::RevokeSessions(target)))
        }
        ["sessions", ..] => Err(UsageError(
            "sessions needs a subcommand: list or revoke".to_owned(),
        )),
        _ => Err(UsageError(String::new())),
    }
}

fn missing(option: &str) -> UsageError {
    UsageError(format!("{option} is required"))
}

/// The options of a `sessions` subcommand: each at most once, `--name value` or
/// `--name=value` for those taking a value, `--name` alone for flags.
struct Options<'a> {
    given: Vec<(&'a str, Option<&'a str>)>,
}

impl<'a> Options<'a> {
    fn parse(words: &[&'a str], with_value: &[&str], flags: &[&str]) -> Result<Self, UsageError> {
        let mut given: Vec<(&'a str, Option<&'a str>)> = Vec::new();
        let mut rest = words.iter();
        while let Some(&word) = rest.next() {
            let (name, inline) = match word.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (word, None),
            };
            let value = if with_value.contains(&name) {
                match inline.or_else(|| rest.next().copied()) {
                    Some(value) if !value.is_empty() => Some(value),
                    _ => return Err(UsageError(format!("{name} needs a value"))),
                }
            } else if flags.contains(&name) {
                if inline.is_some() {
                    return Err(UsageError(format!("{name} takes no value")));
                }
                None
            } else {
                return Err(UsageError(format!("unexpected argument {word:?}")));
            };
            if given.iter().any(|(seen, _)| *seen == name) {
                return Err(UsageError(format!("{name} is given twice")));
            }
            given.push((name, value));
        }
        Ok(Self { given })
    }

    fn value(&self, name: &str) -> Option<&'a str> {
        self.given
            .iter()
            .find(|(given, _)| *given == name)
            .and_then(|(_, value)| *value)
    }

    fn has(&self, name: &str) -> bool {
        self.given.iter().any(|(given, _)| *given == name)
    }

    fn email(&self) -> Result<Option<Email>, UsageError> {
        self.value("--email")
            .map(|text| {
                Email::parse(text)
                    .map_err(|_| UsageError(format!("--email {text:?} is not an email address")))
            })
            .transpose()
    }

    fn session(&self) -> Result<Option<Uuid>, UsageError> {
        self.value("--session")
            .map(|text| {
                Uuid::parse_str(text)
                    .map_err(|_| UsageError(format!("--session {text:?} is not a session id")))
            })
            .transpose()
    }
}

/// The operator's store, on a pool of this configuration's database.
fn operator(config: &Config) -> Result<Operator, String> {
    Ok(Operator::new(
        crate::database::pool(config).map_err(|e| e.to_string())?,
    ))
}

fn failed(error: &OperatorError) -> String {
    match error {
        OperatorError::UnknownEmail(_) | OperatorError::ForeignSession { .. } => {
            format!("{error}; nothing changed")
        }
        OperatorError::Service(_) => error.to_string(),
    }
}

async fn list_sessions(config: &Config, email: &Email, json: bool) -> Result<(), String> {
    let sessions = operator(config)?
        .list(email)
        .await
        .map_err(|e| failed(&e))?;
    if json {
        let list: Vec<serde_json::Value> = sessions.iter().map(session_json).collect();
        println!("{}", serde_json::Value::Array(list));
    } else if sessions.is_empty() {
        eprintln!("{NAME}: {} has no sessions", email.as_str());
    } else {
        for session in &sessions {
            println!("{}", session_line(session));
        }
    }
    Ok(())
}

async fn revoke_sessions(config: &Config, target: &RevokeTarget) -> Result<(), String> {
    let count = operator(config)?
        .revoke(target)
        .await
        .map_err(|e| failed(&e))?;
    let whose = match target {
        RevokeTarget::Session { email, session } if count == 0 => {
            println!(
                "session {session} of {} had already ended; nothing changed",
                email.as_str()
            );
            return Ok(());
        }
        RevokeTarget::Session { email, .. } | RevokeTarget::User { email } => {
            format!("of {}", email.as_str())
        }
        RevokeTarget::AllUsers => "of all users".to_owned(),
    };
    let plural = if count == 1 { "" } else { "s" };
    println!("revoked {count} live session{plural} {whose}");
    Ok(())
}

/// The state as a listing shows it: `live`, `expired`, `revoked (reason)`.
fn state_text(state: SessionState) -> String {
    match state {
        SessionState::Live => "live".to_owned(),
        SessionState::Expired => "expired".to_owned(),
        SessionState::Revoked(Some(reason)) => format!("revoked ({})", reason.as_str()),
        SessionState::Revoked(None) => "revoked".to_owned(),
    }
}

fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// One session on one line; texts quoted with their escapes, `-` when absent.
fn session_line(session: &SessionRecord) -> String {
    format!(
        "{}  {:<32}  label={}  name={}  ip={}  created={}  last_used={}",
        session.id,
        state_text(session.state),
        quoted(session.device_label.as_deref()),
        quoted(session.device_name.as_deref()),
        session
            .ip
            .map_or_else(|| "-".to_owned(), |ip| ip.to_string()),
        time(session.created_at),
        time(session.last_used_at),
    )
}

fn quoted(text: Option<&str>) -> String {
    text.map_or_else(|| "-".to_owned(), |text| format!("{text:?}"))
}

fn session_json(session: &SessionRecord) -> serde_json::Value {
    let (state, reason) = match session.state {
        SessionState::Live => ("live", None),
        SessionState::Expired => ("expired", None),
        SessionState::Revoked(reason) => ("revoked", reason.map(RevokeReason::as_str)),
    };
    serde_json::json!({
        "id": session.id.to_string(),
        "state": state,
        "revoked_reason": reason,
        "device_label": session.device_label,
        "device_name": session.device_name,
        "ip": session.ip.map(|ip| ip.to_string()),
        "created_at": time(session.created_at),
        "last_used_at": time(session.last_used_at),
    })
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.log_filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &str) -> Result<Command, UsageError> {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        parse(&args)
    }

    fn email(text: &str) -> Email {
        Email::parse(text).unwrap()
    }

    fn refused(line: &str) -> String {
        match parsed(line) {
            Err(UsageError(message)) => message,
            Ok(command) => panic!("{line:?} was accepted as {command:?}"),
        }
    }

    #[test]
    fn the_server_commands_stay_as_they_were() {
        assert_eq!(parsed(""), Ok(Command::Run(Job::Serve)));
        assert_eq!(parsed("serve"), Ok(Command::Run(Job::Serve)));
        assert_eq!(parsed("migrate"), Ok(Command::Run(Job::Migrate)));
        assert_eq!(parsed("config"), Ok(Command::Config));
        for help in ["help", "-h", "--help"] {
            assert_eq!(parsed(help), Ok(Command::Help));
        }
        assert!(parsed("serve now").is_err());
        assert!(parsed("launch").is_err());
    }

    #[test]
    fn sessions_list_takes_an_email_and_maybe_json() {
        assert_eq!(
            parsed("sessions list --email Ada@Example.com"),
            Ok(Command::Run(Job::ListSessions {
                email: email("ada@example.com"),
                json: false
            }))
        );
        assert_eq!(
            parsed("sessions list --json --email=ada@example.com"),
            Ok(Command::Run(Job::ListSessions {
                email: email("ada@example.com"),
                json: true
            }))
        );
        assert_eq!(refused("sessions list"), "--email is required");
        assert_eq!(refused("sessions list --email"), "--email needs a value");
        assert_eq!(refused("sessions list --email="), "--email needs a value");
        assert!(refused("sessions list --email nobody").contains("not an email address"));
        assert!(refused("sessions list --email a@example.com --all-users").contains("unexpected"));
        assert!(refused("sessions list --email a@example.com --json=yes").contains("no value"));
        assert!(
            refused("sessions list --email a@example.com --email b@example.com").contains("twice")
        );
    }

    #[test]
    fn sessions_revoke_names_one_session_one_user_or_everyone() {
        let id = Uuid::new_v4();
        assert_eq!(
            parsed(&format!(
                "sessions revoke --email ada@example.com --session {id}"
            )),
            Ok(Command::Run(Job::RevokeSessions(RevokeTarget::Session {
                email: email("ada@example.com"),
                session: id
            })))
        );
        assert_eq!(
            parsed("sessions revoke --email ada@example.com"),
            Ok(Command::Run(Job::RevokeSessions(RevokeTarget::User {
                email: email("ada@example.com")
            })))
        );
        assert_eq!(
            parsed("sessions revoke --all-users"),
            Ok(Command::Run(Job::RevokeSessions(RevokeTarget::AllUsers)))
        );
        assert_eq!(
            refused(&format!("sessions revoke --session {id}")),
            "--email is required"
        );
        assert!(refused("sessions revoke").contains("--all-users"));
        assert!(refused("sessions revoke --all-users --email ada@example.com").contains("alone"));
        assert!(
            refused("sessions revoke --email ada@example.com --session 42")
                .contains("not a session id")
        );
        assert!(refused("sessions revoke --all-users --all-users").contains("twice"));
        assert!(refused("sessions").contains("list or revoke"));
        assert!(refused("sessions purge").contains("list or revoke"));
    }

    #[test]
    fn a_listed_session_shows_its_state_device_and_times_but_no_secret() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let session = SessionRecord {
            id: Uuid::nil(),
            state: SessionState::Revoked(Some(RevokeReason::SessionLimit)),
            device_label: Some("Firefox on Linux".to_owned()),
            device_name: None,
            ip: Some("203.0.113.7".parse().unwrap()),
            created_at: at,
            last_used_at: at,
        };
        let line = session_line(&session);
        assert!(line.starts_with("00000000-0000-0000-0000-000000000000  revoked (session_limit)"));
        assert!(line.contains(r#"label="Firefox on Linux"  name=-  ip=203.0.113.7"#));
        assert!(line.contains("created=2023-11-14T22:13:20Z  last_used=2023-11-14T22:13:20Z"));
        let json = session_json(&session);
        assert_eq!(json["state"], "revoked");
        assert_eq!(json["revoked_reason"], "session_limit");
        assert_eq!(json["device_name"], serde_json::Value::Null);
        assert_eq!(state_text(SessionState::Expired), "expired");
        assert_eq!(state_text(SessionState::Revoked(None)), "revoked");
    }
}
