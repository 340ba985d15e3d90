//! `session-bench`: measures the real `session-server` against a throwaway PostgreSQL
//! database and prints each figure next to its target.
//!
//! ```sh
//! cargo run --release -p session-bench -- refresh-login
//! ```
//!
//! A missed target is a measurement, not a failure: the exit code is 0 whenever the
//! harness itself worked, 1 when it did not, 2 for a usage error. Every load loop is
//! bounded in time and in request count, and everything runs on loopback.
//!
//! Layout: [`server`] builds and runs the server process, [`load`] is the bounded load
//! runner, [`refresh`] and [`login`] are the figures, [`pgbench`] runs PostgreSQL's own
//! benchmark tool, [`report`] prints the table.

mod load;
mod login;
mod pgbench;
mod refresh;
mod report;
mod server;

use std::process::ExitCode;
use std::time::Duration;

/// Anything that stops the harness (a missed target is not one).
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
/// The harness's result type.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

const USAGE: &str = "usage: session-bench refresh-login";

/// Knobs shared by the scenarios.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// How long each load phase runs.
    pub(crate) duration: Duration,
    /// Concurrent refresh chains (HTTP workers and pgbench clients alike).
    pub(crate) refresh_concurrency: usize,
    /// Most requests one worker sends in a phase, whatever the clock says.
    pub(crate) max_requests_per_worker: usize,
    /// Cores of this machine (`std::thread::available_parallelism`).
    pub(crate) cores: usize,
}

impl Settings {
    fn new() -> Self {
        Self {
            duration: Duration::from_secs(10),
            refresh_concurrency: 32,
            max_requests_per_worker: 1_000_000,
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args != ["refresh-login"] {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let outcome = refresh_login(Settings::new()).await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The refresh and login figures, against one server and one database.
async fn refresh_login(settings: Settings) -> Result<()> {
    // Measured first, while nothing else runs on the machine.
    eprintln!("measuring one Argon2 hash in-process ...");
    let hash_time = login::argon2_hash_time(11)?;

    eprintln!("building session-server (release) ...");
    let binary = server::build().await?;
    // Declared before the server, so the server is dropped (killed) first.
    let db = session_testdb::TestDb::new().await;
    let server = server::Server::start(&binary, &db.url()).await?;

    eprintln!(
        "refresh: {} chains over HTTP, then pgbench ...",
        settings.refresh_concurrency
    );
    let refresh = refresh::run(&server, &db, settings).await?;
    eprintln!(
        "login: {} workers over HTTP, /me alongside ...",
        2 * settings.cores
    );
    let login = login::run(&server, hash_time, settings).await?;

    let mut table = report::Table::new("refresh-login", settings.cores);
    refresh.report(&mut table);
    login.report(&mut table);
    table.print();
    server.print_log_summary();
    Ok(())
}
