//! `portcullis-bench`: every performance figure of Portcullis, each measured against a
//! baseline in the same run, on loopback, against throwaway PostgreSQL databases.
//!
//! ```sh
//! cargo run --release -p portcullis-bench -- all            # every figure; rewrites BENCHMARKS.md
//! cargo run --release -p portcullis-bench -- layer --rounds 5
//! cargo run --release -p portcullis-bench -- refresh      # figures 2 and 6 alone
//! cargo run --release -p portcullis-bench -- login        # figure 4 alone
//! ```
//!
//! Each figure runs `--rounds` times (3 by default) and is reported as the median and the
//! spread of its rounds; a ratio is taken within one round, because the machine is shared
//! and noisy. A missed target is a measurement, not a failure: the exit code is 0
//! whenever the harness itself worked, 1 when it did not, 2 for a usage error. Every load
//! loop is bounded in time and in request count, and every child process exits with the
//! harness.
//!
//! Layout, by figure: [`layer_cost`] (1, with [`hello`] and [`naive`] as the measured
//! services), [`refresh`] (2, with [`pgbench`] and the private cluster of [`cluster`]), [`propagation`] (3), [`login`] (4),
//! [`memory`] (5), [`refresh_state`] (6), [`peers`] (7, with [`rust_peers`] and
//! [`node_peer`] as the measured services), [`fanout`] (8), [`nats_fanout`] (9, sharing
//! [`fleet`] with 8) and [`profile`] (with [`hot_loop`] and [`callgrind`]). Shared parts:
//! [`server`] runs the release server, [`child`] runs this harness as a child process,
//! [`load`] and [`http1`] make bounded load, [`seed`] and [`tokens`] make sessions and
//! tokens, [`cpu`] reads `/proc`, [`report`] folds rounds into rows, [`machine`] and
//! [`document`] write BENCHMARKS.md.

mod bulk;
mod callgrind;
mod child;
mod cli;
mod cluster;
mod cpu;
mod document;
mod fanout;
mod fleet;
mod hello;
mod hot_loop;
mod http1;
mod layer_cost;
mod load;
mod login;
mod machine;
mod memory;
mod naive;
mod nats_fanout;
mod node_peer;
mod peers;
mod pgbench;
mod profile;
mod propagation;
mod refresh;
mod refresh_state;
mod report;
mod rust_peers;
mod seed;
mod server;
mod tokens;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cli::{Args, USAGE};
use report::{Report, Round, Section};

/// Anything that stops the harness (a missed target is not one).
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
/// The harness's result type.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// Knobs shared by the figures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// How many times each figure runs.
    pub(crate) rounds: usize,
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
    fn from_args(args: &Args) -> Result<Self> {
        let rounds: usize = args.number("rounds", 3)?;
        let seconds: u64 = args.number("duration", 6)?;
        if !(1..=20).contains(&rounds) || !(1..=120).contains(&seconds) {
            return Err("--rounds must be 1 to 20, --duration 1 to 120 seconds".into());
        }
        Ok(Self {
            rounds,
            duration: Duration::from_secs(seconds),
            refresh_concurrency: 32,
            max_requests_per_worker: 1_000_000,
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("portcullis-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let outcome = match args.command.as_str() {
        "all" | "layer" | "peers" | "fan-out" | "nats-fan-out" | "bulk" | "refresh" | "login"
        | "refresh-login" | "propagation" | "memory" | "profile" => {
            match Settings::from_args(&args) {
                Ok(settings) => figures(&args.command, settings).await,
                Err(e) => {
                    eprintln!("portcullis-bench: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        // The harness's own child processes.
        "serve-hello" => hello::serve(&args).await,
        "fill-memory" => memory::fill(&args).await,
        "listen" => fanout::listen(&args).await,
        "subscribe" => nats_fanout::subscribe_child(&args).await,
        "relay" => nats_fanout::relay_child(&args).await,
        "profile-loop" => hot_loop::run(&args).await,
        other => {
            eprintln!("portcullis-bench: unknown command {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where a section goes: by its figure's number ("10." after "9."), the profile last.
fn figure_order(section: &Section) -> (u32, String) {
    let number = section
        .title
        .split('.')
        .next()
        .and_then(|number| number.parse().ok())
        .unwrap_or(u32::MAX);
    (number, section.title.clone())
}

/// Runs the figures `command` names, prints the table and how long each figure took,
/// and for `all` rewrites BENCHMARKS.md.
async fn figures(command: &str, settings: Settings) -> Result<()> {
    let started = Instant::now();
    let machine = machine::Machine::describe(settings.cores);
    let load_before = machine::load_average();
    let every = command == "all";
    let mut report = Report::default();
    let mut profile = None;
    let mut timings = Timings::default();
    if every || command == "layer" {
        let clock = Instant::now();
        report.sections.push(layer_cost::run(settings).await?);
        timings.push("1. layer", clock);
    }
    if every || command == "peers" {
        let clock = Instant::now();
        report.sections.push(peers::run(settings).await?);
        timings.push("7. peers", clock);
    }
    if every || command == "fan-out" {
        let clock = Instant::now();
        report.sections.push(fanout::run(settings).await?);
        timings.push("8. fan-out", clock);
    }
    if every || command == "nats-fan-out" {
        let clock = Instant::now();
        report.sections.push(nats_fanout::run(settings).await?);
        timings.push("9. fan-out on NATS", clock);
    }
    let rounds = RefreshLogin {
        refresh: every || matches!(command, "refresh" | "refresh-login"),
        login: every || matches!(command, "login" | "refresh-login"),
    };
    if rounds.refresh || rounds.login || matches!(command, "propagation" | "bulk") {
        let clock = Instant::now();
        eprintln!("building portcullis-server (release) ...");
        let binary = server::build().await?;
        timings.push("building the server", clock);
        if rounds.refresh || rounds.login {
            let clock = Instant::now();
            report
                .sections
                .extend(refresh_login(&binary, settings, rounds).await?);
            timings.push(rounds.label(), clock);
        }
        if every || command == "propagation" {
            let clock = Instant::now();
            report
                .sections
                .push(propagation::run(&binary, settings).await?);
            timings.push("3. propagation", clock);
        }
        if every || command == "bulk" {
            let clock = Instant::now();
            report.sections.push(bulk::run(&binary, settings).await?);
            timings.push("10. bulk", clock);
        }
    }
    if every || command == "memory" {
        let clock = Instant::now();
        report.sections.push(memory::run(settings).await?);
        timings.push("5. memory", clock);
    }
    if every || command == "profile" {
        let clock = Instant::now();
        let outcome = profile::run(settings.rounds).await?;
        report.sections.push(outcome.section());
        profile = Some(outcome);
        timings.push("profile", clock);
    }
    // Numbered figures in their order, the profile last.
    report.sections.sort_by_key(figure_order);
    let elapsed = started.elapsed();
    let load_after = machine::load_average();
    println!(
        "\nportcullis-bench {command}: {} rounds, {}s load phases, {} cores, {:.0} s \
         (load average before {load_before}, after {load_after}); {}\n",
        settings.rounds,
        settings.duration.as_secs(),
        settings.cores,
        elapsed.as_secs_f64(),
        timings.text(),
    );
    print!("{}", report.text());
    if let Some(profile) = &profile {
        println!("\n{}", profile.summary_text());
    }
    if every {
        let path = document::write(&document::Run {
            machine: &machine,
            settings,
            report: &report,
            profile: profile.as_ref(),
            elapsed,
            timings: &timings.text(),
            load_before: &load_before,
            load_after: &load_after,
        })?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

/// How long each part of a run took, in the order they ran.
#[derive(Debug, Default)]
struct Timings(Vec<(&'static str, Duration)>);

impl Timings {
    fn push(&mut self, what: &'static str, since: Instant) {
        self.0.push((what, since.elapsed()));
    }

    /// `what N s, what N s, ...`.
    fn text(&self) -> String {
        self.0
            .iter()
            .map(|(what, took)| format!("{what} {:.0} s", took.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Which of the figures that share rounds, a cluster and a server run.
#[derive(Debug, Clone, Copy)]
struct RefreshLogin {
    /// Figures 2 and 6.
    refresh: bool,
    /// Figure 4.
    login: bool,
}

impl RefreshLogin {
    fn label(self) -> &'static str {
        match (self.refresh, self.login) {
            (true, true) => "2., 4. and 6. refresh and login",
            (true, false) => "2. and 6. refresh",
            _ => "4. login",
        }
    }
}

/// Figures 2, 4 and 6 (those `which` names), on a private PostgreSQL cluster: each round
/// gets fresh databases and a fresh server.
async fn refresh_login(
    binary: &std::path::Path,
    settings: Settings,
    which: RefreshLogin,
) -> Result<Vec<Section>> {
    let mut refresh = Section::new("2. Refresh", refresh::METHOD);
    let mut login = Section::new("4. Login", login::METHOD);
    let mut state = Section::new("6. Refresh state", refresh_state::METHOD);
    eprintln!("refresh-login: starting a private PostgreSQL cluster ...");
    let cluster = cluster::BenchCluster::start().await?;
    for round_index in 0..settings.rounds {
        eprintln!(
            "refresh-login: round {}/{} ...",
            round_index + 1,
            settings.rounds
        );
        let new = cluster
            .database(&format!("portcullis_bench_{round_index}"), None)
            .await?;
        // As many connections as refresh chains: pgbench runs as many clients.
        let server =
            server::Server::start(binary, &new.url(), Some(settings.refresh_concurrency)).await?;
        refresh::register_bench_account(&server).await?;
        let mut refresh_figures = None;
        if which.refresh {
            let old = cluster
                .database(
                    &format!("portcullis_bench_{round_index}_v{}", refresh::OLD_SCHEMA),
                    Some(refresh::OLD_SCHEMA),
                )
                .await?;
            eprintln!(
                "refresh-login: {} chains over HTTP, pgbench, pgbench on V{} ...",
                settings.refresh_concurrency,
                refresh::OLD_SCHEMA
            );
            let databases = refresh::Databases {
                cluster: &cluster,
                new: &new,
                old: &old,
            };
            refresh_figures = Some(refresh::run(&server, &databases, settings).await?);
        }
        if which.login {
            eprintln!(
                "refresh-login: Argon2 in-process, {} login workers over HTTP with /me \
                 alongside, Argon2 again ...",
                2 * settings.cores
            );
            let figures = login::run(&server, settings).await?;
            let mut round = Round::default();
            figures.record(&mut round);
            login.push(round);
        }
        if let Some(mut figures) = refresh_figures {
            eprintln!("refresh-login: one chain refreshed 10,000 times ...");
            let state_figures = refresh_state::run(&server, &new).await?;
            let log = server.log_summary();
            // Its connections close and report their counts of updates.
            drop(server);
            figures.count_hot_updates(&new).await?;
            let mut round = Round::default();
            figures.record(&mut round);
            if let Some(log) = log {
                round.note(log);
            }
            refresh.push(round);
            let mut round = Round::default();
            state_figures.record(&mut round);
            state.push(round);
        }
    }
    let mut sections = Vec::new();
    if which.refresh {
        sections.push(refresh);
        sections.push(state);
    }
    if which.login {
        sections.push(login);
    }
    Ok(sections)
}
