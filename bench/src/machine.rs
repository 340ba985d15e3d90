//! Which machine the figures were taken on, and when: read from `/proc` and `git`, so
//! BENCHMARKS.md can say it.

use std::process::Command;
use std::time::SystemTime;

/// The machine, the moment and the code the figures belong to.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    /// Logical cores available to this process.
    pub(crate) cores: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub(crate) cpu_model: String,
    /// `MemTotal` from `/proc/meminfo`, in GiB.
    pub(crate) memory_gib: f64,
    /// `/proc/sys/kernel/osrelease`.
    pub(crate) kernel: String,
    /// When the run started, UTC, RFC 3339.
    pub(crate) started_at: String,
    /// `git rev-parse --short HEAD`, with `+ uncommitted changes` when the tree is dirty.
    pub(crate) commit: String,
}

impl Machine {
    /// Describes this machine now.
    pub(crate) fn describe(cores: usize) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Self {
            cores,
            cpu_model,
            memory_gib: memory_kib / (1024.0 * 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_owned(), |text| text.trim().to_owned()),
            started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            commit: commit(),
        }
    }
}

/// The system load average over 1, 5 and 15 minutes, as `/proc/loadavg` says it.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_owned(),
        |text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        None => "unknown (not a git checkout)".to_owned(),
        Some(hash) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(status) if status.is_empty() => hash,
            _ => format!("{hash} + uncommitted changes"),
        },
    }
}
