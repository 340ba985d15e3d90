//! The command line of the stand-alone server and of every app built on the library:
//! serve HTTP (the default), only apply migrations, print the configuration reference,
//! or let an operator list and revoke sessions. [`App::main`](crate::App::main) calls
//! [`main`]; an application with commands of its own flattens [`Command`] into its clap
//! parser and calls [`run`].

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::SystemTime;

use crate::ids::SessionId;
use clap::{Args, Parser, Subcommand};
use poem_openapi::OpenApi;

use crate::App;
use crate::accounts::{Email, Operator, OperatorError, RevokeTarget};
use crate::config::{Config, LogFormat};
use crate::error::chain;
use crate::store::sessions::{RevokeReason, SessionRecord, SessionState};

/// The column `--help` wraps at.
const HELP_WIDTH: usize = 90;

/// What follows the command list in `--help`.
const AFTER_HELP: &str = "Settings come from environment variables, read once at start-up \
                          (`config` lists them); the sessions commands read the same ones as \
                          serve, and running servers refuse revoked sessions at once.";

// The arguments: one command, `serve` when none is given. (A plain comment: clap would
// print a doc comment as the program's description.)
#[derive(Debug, Parser)]
#[command(after_help = AFTER_HELP)]
struct Arguments {
    #[command(subcommand)]
    command: Option<Command>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default); migrates the database first.
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate,
    /// Print every setting (an environment variable) with its default, the values it
    /// allows and its meaning, as Markdown.
    Config,
    /// List or revoke the sessions of users.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Run only the revocation relay of `REVOCATION_FEED=nats`: publish the database's
    /// revocation log to NATS at `NATS_URL` (one relay is active per database, others
    /// stand by), until SIGTERM or ctrl-c.
    Relay,
}

/// `sessions …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum SessionsCommand {
    /// Print every session of the account (live, revoked with its reason, or expired),
    /// one per line, or as a JSON array.
    List {
        /// The account's email address.
        #[arg(long, value_parser = parse_email)]
        email: Email,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one session of an account, every live session of it, or every live session
    /// of every user (after a key compromise).
    Revoke(RevokeArgs),
}

/// `sessions revoke`: `--email` (and maybe `--session`), or `--all-users` alone.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RevokeArgs {
    /// The account whose sessions end (or `--all-users`).
    #[arg(
        long,
        value_parser = parse_email,
        required_unless_present = "all_users",
        conflicts_with = "all_users"
    )]
    email: Option<Email>,
    /// Only this session of the account, by its id.
    #[arg(long, value_parser = parse_session, requires = "email")]
    session: Option<SessionId>,
    /// Every live session of every user, instead of one account's.
    #[arg(long)]
    all_users: bool,
}

impl RevokeArgs {
    /// What to revoke.
    pub fn target(&self) -> RevokeTarget {
        match (&self.email, self.session) {
            (Some(email), Some(session)) => RevokeTarget::Session {
                email: email.clone(),
                session,
            },
            (Some(email), None) => RevokeTarget::User {
                email: email.clone(),
            },
            // clap requires `--email` or `--all-users`, and `--session` only with `--email`.
            (None, _) => RevokeTarget::AllUsers,
        }
    }
}

fn parse_email(text: &str) -> Result<Email, String> {
    Email::parse(text).map_err(|_| format!("{text:?} is not an email address"))
}

fn parse_session(text: &str) -> Result<SessionId, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a session id"))
}

/// Runs the command the process's arguments name; what [`App::main`] returns.
#[must_use]
pub fn main<Api: OpenApi + 'static>(app: &App<Api>) -> ExitCode {
    main_from(app, std::env::args_os())
}

/// Runs the command `args` name (the first being the binary's name).
pub fn main_from<Api: OpenApi + 'static>(
    app: &App<Api>,
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> ExitCode {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = <Arguments as clap::CommandFactory>::command()
        .name(app.name())
        .bin_name(app.name())
        .version(app.version())
        // The same wrapping on every terminal, so the README can show it as printed.
        .term_width(HELP_WIDTH)
        .about(format!(
            "{}: accounts, sessions and devices over HTTP, on Portcullis",
            app.name()
        ));
    let parsed = command
        .try_get_matches_from_mut(&args)
        .and_then(|matches| <Arguments as clap::FromArgMatches>::from_arg_matches(&matches));
    match parsed {
        Ok(arguments) => run(app, arguments.command.unwrap_or(Command::Serve)),
        Err(e) => {
            // Help goes to stdout with success; a usage error to stderr with 2, and with
            // the usage of the command it was for, which clap leaves out of some errors
            // (a value its parser refused).
            let _ = e.print();
            if e.use_stderr() && !e.render().to_string().contains("Usage:") {
                eprintln!("\n{}", usage_of_named_subcommand(&mut command, &args));
            }
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
        }
    }
}

/// The usage line of the deepest subcommand `args` name, as clap renders it.
fn usage_of_named_subcommand(command: &mut clap::Command, args: &[OsString]) -> String {
    let mut path = Vec::new();
    let mut current: &clap::Command = command;
    for name in args.iter().skip(1).filter_map(|arg| arg.to_str()) {
        if let Some(sub) = current.find_subcommand(name) {
            path.push(name);
            current = sub;
        }
    }
    path.iter()
        .try_fold(&mut *command, |parent, name| {
            parent.find_subcommand_mut(name)
        })
        .map(|sub| sub.render_usage().to_string())
        .unwrap_or_else(|| command.render_usage().to_string())
}

/// Runs `command` for `app`: reads the configuration (a bad value stops it, naming the
/// variable), starts logging and does the work.
#[must_use]
pub fn run<Api: OpenApi + 'static>(app: &App<Api>, command: Command) -> ExitCode {
    let name = app.name();
    if command == Command::Config {
        print!(
            "{}",
            crate::config::settings::markdown_with(app.declared_settings())
        );
        return ExitCode::SUCCESS;
    }
    let config = match app.config_from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{name}: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match command {
            Command::Serve => crate::run(app, config).await.map_err(|e| chain(&e)),
            Command::Migrate => crate::database::migrate(&config, app.migration_runner())
                .await
                .map(|applied| tracing::info!(applied, "migrations applied"))
                .map_err(|e| chain(&e)),
            Command::Config => Ok(()),
            Command::Sessions(SessionsCommand::List { email, json }) => {
                list_sessions(&config, &email, json).await
            }
            Command::Sessions(SessionsCommand::Revoke(args)) => {
                revoke_sessions(&config, &args.target()).await
            }
            Command::Relay => relay(&config).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!(error = %message, "{name} stopped");
            eprintln!("{name}: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the revocation relay until SIGTERM or ctrl-c.
async fn relay(config: &Config) -> Result<(), String> {
    let crate::config::RevocationFeedSettings::Nats { nats, .. } = &config.database.feed else {
        return Err(
            "the relay publishes revocations for REVOCATION_FEED=nats; this configuration \
             says postgres"
                .to_owned(),
        );
    };
    let shutdown = crate::shutdown_signal().map_err(|e| format!("signal handlers: {e}"))?;
    tracing::info!(url = %nats.url, database = %config.database_target(), "revocation relay starting");
    let relay = portcullis::nats::NatsRelay::new(config.database.url.clone(), nats.clone()).start();
    shutdown.await;
    tracing::info!(published = relay.published(), "revocation relay stopping");
    drop(relay);
    Ok(())
}

/// The operator's store, on a pool of this configuration's database.
fn operator(config: &Config) -> Result<Operator, String> {
    Ok(Operator::new(
        crate::database::pool(config).map_err(|e| chain(&e))?,
    ))
}

fn failed(error: &OperatorError) -> String {
    match error {
        OperatorError::UnknownEmail(_) | OperatorError::ForeignSession { .. } => {
            format!("{error}; nothing changed")
        }
        OperatorError::Service(_) => chain(error),
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
        eprintln!("{} has no sessions", email.as_str());
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
    let filter = tracing_subscriber::EnvFilter::new(&config.logging.filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.logging.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &str) -> Result<Option<Command>, String> {
        let args = std::iter::once("portcullis-server").chain(line.split_whitespace());
        Arguments::try_parse_from(args)
            .map(|arguments| arguments.command)
            .map_err(|e| e.to_string())
    }

    fn email(text: &str) -> Email {
        Email::parse(text).unwrap()
    }

    fn refused(line: &str) -> String {
        match parsed(line) {
            Err(message) => message,
            Ok(command) => panic!("{line:?} was accepted as {command:?}"),
        }
    }

    fn revoke(line: &str) -> RevokeTarget {
        match parsed(line) {
            Ok(Some(Command::Sessions(SessionsCommand::Revoke(args)))) => args.target(),
            other => panic!("{line:?}: {other:?}"),
        }
    }

    #[test]
    fn the_server_commands_stay_as_they_were() {
        assert_eq!(parsed(""), Ok(None));
        assert_eq!(parsed("serve"), Ok(Some(Command::Serve)));
        assert_eq!(parsed("migrate"), Ok(Some(Command::Migrate)));
        assert_eq!(parsed("config"), Ok(Some(Command::Config)));
        assert!(parsed("serve now").is_err());
        assert!(parsed("launch").is_err());
    }

    #[test]
    fn sessions_list_takes_an_email_and_maybe_json() {
        assert_eq!(
            parsed("sessions list --email Ada@Example.com"),
            Ok(Some(Command::Sessions(SessionsCommand::List {
                email: email("ada@example.com"),
                json: false
            })))
        );
        assert_eq!(
            parsed("sessions list --json --email=ada@example.com"),
            Ok(Some(Command::Sessions(SessionsCommand::List {
                email: email("ada@example.com"),
                json: true
            })))
        );
        assert!(refused("sessions list").contains("--email"));
        assert!(refused("sessions list --email").contains("a value is required"));
        assert!(refused("sessions list --email nobody").contains("not an email address"));
        assert!(refused("sessions list --email a@example.com --all-users").contains("unexpected"));
        assert!(refused("sessions list --email a@example.com --json=yes").contains("unexpected"));
        assert!(
            refused("sessions list --email a@example.com --email b@example.com")
                .contains("cannot be used multiple times")
        );
    }

    #[test]
    fn sessions_revoke_names_one_session_one_user_or_everyone() {
        let id = SessionId::from_uuid(uuid::Uuid::new_v4());
        assert_eq!(
            revoke(&format!(
                "sessions revoke --email ada@example.com --session {id}"
            )),
            RevokeTarget::Session {
                email: email("ada@example.com"),
                session: id
            }
        );
        assert_eq!(
            revoke("sessions revoke --email ada@example.com"),
            RevokeTarget::User {
                email: email("ada@example.com")
            }
        );
        assert_eq!(
            revoke("sessions revoke --all-users"),
            RevokeTarget::AllUsers
        );
        assert!(refused(&format!("sessions revoke --session {id}")).contains("--email"));
        assert!(refused("sessions revoke").contains("required"));
        assert!(
            refused("sessions revoke --all-users --email ada@example.com")
                .contains("cannot be used with")
        );
        assert!(
            refused("sessions revoke --email ada@example.com --session 42")
                .contains("not a session id")
        );
        assert!(refused("sessions").contains("Usage"));
        assert!(refused("sessions purge").contains("unrecognized subcommand"));
    }

    #[test]
    fn a_non_utf8_argument_is_a_usage_error_not_a_panic() {
        use std::os::unix::ffi::OsStringExt as _;
        let args = [
            OsString::from("portcullis-server"),
            OsString::from("sessions"),
            OsString::from("list"),
            OsString::from("--email"),
            OsString::from_vec(vec![0x61, 0xff, 0x40, 0x62]),
        ];
        let code = main_from(&App::standalone(), args);
        assert_eq!(code, ExitCode::from(2));
    }

    #[test]
    fn errors_print_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("inner")]
        struct Inner;
        assert_eq!(chain(&Outer(Inner)), "outer: inner");
    }

    #[test]
    fn a_listed_session_shows_its_state_device_and_times_but_no_secret() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let session = SessionRecord {
            id: SessionId::from_uuid(uuid::Uuid::nil()),
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
