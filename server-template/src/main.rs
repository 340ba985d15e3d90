//! `session-server`: serve HTTP (the default), or only apply migrations.

use std::process::ExitCode;

use session_server::config::{Config, LogFormat};

/// Every Argon2 hash allocates and frees 19 MiB. glibc's allocator keeps such blocks
/// once freed (its mmap threshold rises to meet them), so a few hundred logins left the
/// process at hundreds of MB; mimalloc hands them back to the OS.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: session-server [serve | migrate]

  serve     run the HTTP server (default); migrates the database first
  migrate   apply pending database migrations, then exit

Settings come from environment variables; see the README's configuration table.";

enum Command {
    Serve,
    Migrate,
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = match (args.next().as_deref(), args.next()) {
        (None | Some("serve"), None) => Command::Serve,
        (Some("migrate"), None) => Command::Migrate,
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
            eprintln!("session-server: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("session-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match command {
            Command::Serve => session_server::run(config).await,
            Command::Migrate => session_server::database::migrate(&config)
                .await
                .map(|applied| tracing::info!(applied, "migrations applied"))
                .map_err(Into::into),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "session-server stopped");
            eprintln!("session-server: {e}");
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
