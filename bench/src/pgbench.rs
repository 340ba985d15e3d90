//! PostgreSQL's own benchmark tool, run with a custom script, and the figures it prints.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Result;

/// What pgbench reported.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    /// Transactions per second, without the initial connection time.
    pub(crate) tps: f64,
    /// Transactions that completed.
    pub(crate) processed: u64,
    /// Transactions that failed (PostgreSQL 15 and later report them).
    pub(crate) failed: u64,
    /// Mean latency, in milliseconds.
    pub(crate) latency_ms: f64,
    /// Whether a client aborted (pgbench exit code 2): the figures are incomplete.
    pub(crate) aborted: bool,
    /// The first lines pgbench wrote to stderr.
    pub(crate) stderr: String,
}

impl Outcome {
    /// Folds `other`, a later run of the same script, into this one: transactions add up,
    /// and the rate and mean latency are over both runs' time.
    pub(crate) fn absorb(&mut self, other: Self) {
        #[allow(
            clippy::cast_precision_loss,
            reason = "transaction counts stay far below 2^52"
        )]
        let busy = |outcome: &Self| outcome.processed as f64 / outcome.tps.max(f64::EPSILON);
        let (mine, theirs) = (busy(self), busy(&other));
        let processed = self.processed + other.processed;
        #[allow(
            clippy::cast_precision_loss,
            reason = "transaction counts stay far below 2^52"
        )]
        let weight = |count: u64| count as f64 / (processed.max(1) as f64);
        self.latency_ms =
            self.latency_ms * weight(self.processed) + other.latency_ms * weight(other.processed);
        #[allow(
            clippy::cast_precision_loss,
            reason = "transaction counts stay far below 2^52"
        )]
        let tps = processed as f64 / (mine + theirs).max(f64::EPSILON);
        self.tps = tps;
        self.processed = processed;
        self.failed += other.failed;
        self.aborted |= other.aborted;
        if self.stderr.is_empty() {
            self.stderr = other.stderr;
        }
    }
}

/// A run of `script` against `conninfo`.
#[derive(Debug)]
pub(crate) struct Run<'a> {
    /// A libpq connection string (key-value or URL).
    pub(crate) conninfo: &'a str,
    /// The custom script (`-f`).
    pub(crate) script: &'a Path,
    /// Concurrent clients (`-c`).
    pub(crate) clients: usize,
    /// Worker threads (`-j`).
    pub(crate) threads: usize,
    /// Length of the run (`-T`, whole seconds).
    pub(crate) duration: Duration,
    /// Client variables (`-D name=value`), a separate copy for each client.
    pub(crate) variables: &'a [(&'a str, &'a str)],
    /// Transactions per second over all clients (`--rate`), or as fast as they go.
    pub(crate) rate: Option<f64>,
}

impl Run<'_> {
    /// Runs pgbench: prepared statements like the server, no vacuum of the (absent)
    /// pgbench tables. Killed if it overruns its duration by a minute.
    pub(crate) async fn execute(&self) -> Result<Outcome> {
        let mut command = tokio::process::Command::new(find()?);
        command
            .args(["--no-vacuum", "--protocol=prepared"])
            .arg(format!("--client={}", self.clients))
            .arg(format!("--jobs={}", self.threads.clamp(1, self.clients)))
            .arg(format!("--time={}", self.duration.as_secs().max(1)))
            .arg("--file")
            .arg(self.script)
            .args(
                self.variables
                    .iter()
                    .map(|(name, value)| format!("--define={name}={value}")),
            )
            .args(self.rate.map(|rate| format!("--rate={:.0}", rate.max(1.0))))
            .arg(self.conninfo)
            .kill_on_drop(true);
        let limit = self.duration + Duration::from_secs(60);
        let output = tokio::time::timeout(limit, command.output())
            .await
            .map_err(|_| format!("pgbench still running after {limit:?}"))??;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let aborted = match output.status.code() {
            Some(0) => false,
            Some(2) => true,
            _ => return Err(format!("pgbench failed ({}):\n{stderr}", output.status).into()),
        };
        let mut outcome = parse(&stdout)
            .ok_or_else(|| format!("unexpected pgbench output:\n{stdout}\n{stderr}"))?;
        outcome.aborted = aborted;
        outcome.stderr = stderr.lines().take(10).collect::<Vec<_>>().join("\n");
        Ok(outcome)
    }
}

/// pgbench of the newest PostgreSQL under `/usr/lib/postgresql`, else the one on `PATH`.
pub(crate) fn find() -> Result<PathBuf> {
    let mut installed: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(std::result::Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let path = entry.path().join("bin/pgbench");
            path.is_file().then_some((version, path))
        })
        .collect();
    installed.sort();
    if let Some((_, path)) = installed.pop() {
        return Ok(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("pgbench"))
        .find(|path| path.is_file())
        .ok_or_else(|| "pgbench not found (install postgresql-contrib or the server)".into())
}

/// The summary figures from pgbench's standard output.
fn parse(stdout: &str) -> Option<Outcome> {
    let mut outcome = Outcome::default();
    let mut has_tps = false;
    for line in stdout.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("tps = ") {
            outcome.tps = rest.split_whitespace().next()?.parse().ok()?;
            has_tps = true;
        } else if let Some(rest) = line.strip_prefix("number of transactions actually processed: ")
        {
            outcome.processed = rest.split('/').next()?.trim().parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("number of failed transactions: ") {
            outcome.failed = rest.split_whitespace().next()?.parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("latency average = ") {
            outcome.latency_ms = rest.split_whitespace().next()?.parse().ok()?;
        }
    }
    has_tps.then_some(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_summary() {
        let out = "transaction type: script.sql\nnumber of clients: 32\n\
                   number of transactions actually processed: 12345\n\
                   number of failed transactions: 0 (0.000%)\n\
                   latency average = 25.9 ms\n\
                   initial connection time = 40.1 ms\n\
                   tps = 1234.567890 (without initial connection time)\n";
        let outcome = parse(out).expect("parses");
        assert!((outcome.tps - 1_234.567_89).abs() < 1e-6);
        assert_eq!(outcome.processed, 12345);
        assert_eq!(outcome.failed, 0);
        assert!((outcome.latency_ms - 25.9).abs() < 1e-9);
    }
}
