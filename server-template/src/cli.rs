//! The command line: serve HTTP (the default), only apply migrations, or print the
//! configuration reference. The binary's `main` calls [`main`], so that everything the
//! binary does lives in the library.

use std::process::ExitCode;

use crate::config::{Config, LogFormat};

/// The binary's name, in messages.
const NAME: &str = env!("CARGO_PKG_NAME");

const USAGE: &str = concat!(
    "usage: ",
    env!("CARGO_PKG_NAME"),
    " [serve | migrate | config]

  serve     run the HTTP server (default); migrates the database first
  migrate   apply pending database migrations, then exit
  config    print every setting (an environment variable) with its default, the values
            it allows and its meaning, as Markdown

Settings come from environment variables, read once at start-up."
);

enum Command {
    Serve,
    Migrate,
}

/// Runs the command the arguments name; what the binary's `main` returns.
#[must_use]
pub fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = match (args.next().as_deref(), args.next()) {
        (None | Some("serve"), None) => Command::Serve,
        (Some("migrate"), None) => Command::Migrate,
        (Some("config"), None) => {
            print!("{}", crate::config::settings::markdown());
            return ExitCode::SUCCESS;
        }
        (Some("-h" | "--help" | "help"), None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
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
        match command {
            Command::Serve => crate::run(config).await,
            Command::Migrate => crate::database::migrate(&config)
                .await
                .map(|applied| tracing::info!(applied, "migrations applied"))
                .map_err(Into::into),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{NAME} stopped");
            eprintln!("{NAME}: {e}");
            ExitCode::FAILURE
        }
    }
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
