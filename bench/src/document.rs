//! BENCHMARKS.md, rewritten by every `all` run: the machine and the moment, the table,
//! the targets met and missed, how each figure is measured, and the profile.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::machine::Machine;
use crate::profile::Profile;
use crate::report::{Report, Section};
use crate::{Result, Settings};

/// Everything the document says.
#[derive(Debug)]
pub(crate) struct Run<'a> {
    /// Where and when.
    pub(crate) machine: &'a Machine,
    /// Rounds and phase length.
    pub(crate) settings: Settings,
    /// The figures.
    pub(crate) report: &'a Report,
    /// The profile, when it ran.
    pub(crate) profile: Option<&'a Profile>,
    /// How long the whole run took.
    pub(crate) elapsed: Duration,
    /// How long each figure took.
    pub(crate) timings: &'a str,
    /// `/proc/loadavg` when the run started.
    pub(crate) load_before: &'a str,
    /// `/proc/loadavg` when it ended.
    pub(crate) load_after: &'a str,
}

/// Rows set against the same row of the run before (the BENCHMARKS.md this run replaces):
/// what a deployment pays per refresh on the servers it scales out.
const AGAINST_PREVIOUS: [&str; 2] = [
    "server CPU per HTTP refresh",
    "server CPU per login (the hash and everything else)",
];

/// Writes BENCHMARKS.md at the workspace root; returns its path.
pub(crate) fn write(run: &Run<'_>) -> Result<PathBuf> {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../BENCHMARKS.md"));
    let previous = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, render(run, &previous))?;
    Ok(path)
}

/// The median cell of the row that starts with `name` in a BENCHMARKS.md, and the commit
/// that run names.
fn previous_median<'a>(document: &'a str, name: &str) -> Option<(&'a str, &'a str)> {
    let commit = document
        .lines()
        .find_map(|line| line.strip_prefix("| commit | ")?.strip_suffix(" |"))?;
    let median = document.lines().find_map(|line| {
        let mut cells = line.strip_prefix("| ")?.split(" | ");
        (cells.next()? == name).then(|| cells.next())?
    })?;
    Some((median, commit))
}

fn render(run: &Run<'_>, previous: &str) -> String {
    let machine = run.machine;
    let mut out = String::new();
    let _ = write!(
        out,
        "# Benchmarks\n\n\
         Written by `cargo run --release -p portcullis-bench -- all`; the next run rewrites \
         this file. Every figure ran {rounds} times; a row gives the median and the spread \
         (smallest and largest round), or the total for counts. The machine is shared and \
         noisy, so each figure is set against a baseline measured in the same round, and \
         it is the ratio that can be compared from run to run. Everything runs on loopback \
         against throwaway PostgreSQL databases.\n\n\
         ## Machine and run\n\n\
         | | |\n|---|---|\n\
         | taken (UTC) | {taken} |\n\
         | commit | {commit} |\n\
         | CPU | {cpu}, {cores} cores |\n\
         | memory | {memory:.1} GiB |\n\
         | kernel | Linux {kernel} |\n\
         | rounds, load phase | {rounds}, {seconds} s |\n\
         | wall time of the run | {wall:.0} s |\n\
         | wall time of each part | {timings} |\n\
         | load average (1, 5, 15 min) | {before} at the start, {after} at the end |\n\n",
        rounds = run.settings.rounds,
        taken = machine.started_at,
        commit = machine.commit,
        cpu = machine.cpu_model,
        cores = machine.cores,
        memory = machine.memory_gib,
        kernel = machine.kernel,
        seconds = run.settings.duration.as_secs(),
        wall = run.elapsed.as_secs_f64(),
        timings = run.timings,
        before = run.load_before,
        after = run.load_after,
    );

    out.push_str("## Targets\n\n");
    let targets = run.report.targets();
    for (section, row) in targets.iter().filter(|(_, row)| !row.is_check()) {
        let mark = if row.met() == Some(true) { "x" } else { " " };
        let _ = writeln!(out, "- [{mark}] {}: {}", section.title, row.summary());
    }
    let checks: Vec<_> = targets.iter().filter(|(_, row)| row.is_check()).collect();
    let failed: Vec<_> = checks
        .iter()
        .filter(|(_, row)| row.met() != Some(true))
        .collect();
    if failed.is_empty() {
        let _ = writeln!(
            out,
            "\nAll {} checks that something did not happen (errors, missing rows) passed.",
            checks.len()
        );
    } else {
        let _ = writeln!(out, "\nChecks that failed:\n");
        for (section, row) in failed {
            let _ = writeln!(out, "- {}: {}", section.title, row.summary());
        }
    }

    let compared: Vec<String> = medians_by_name(run.report)
        .into_iter()
        .filter(|(name, _)| AGAINST_PREVIOUS.contains(&name.as_str()))
        .filter_map(|(name, now)| {
            let (before, commit) = previous_median(previous, &name)?;
            Some(format!(
                "- {name}: {now} (the run before, at {commit}: {before})"
            ))
        })
        .collect();
    if !compared.is_empty() {
        out.push_str("\n## Against the run before\n\n");
        for line in compared {
            let _ = writeln!(out, "{line}");
        }
    }

    out.push_str("\n## Figures\n\n");
    out.push_str(&run.report.markdown_tables());

    let conclusions: Vec<&str> = run
        .report
        .sections
        .iter()
        .map(|section| section.conclusion.as_str())
        .filter(|conclusion| !conclusion.is_empty())
        .collect();
    if !conclusions.is_empty() {
        out.push_str("## What the figures say about scaling out\n\n");
        for conclusion in conclusions {
            let _ = writeln!(out, "{}\n", conclusion.trim_end());
        }
    }

    out.push_str("## How each figure is measured\n\n");
    for section in &run.report.sections {
        let _ = writeln!(out, "### {}\n\n{}\n", section.title, section.method);
    }

    if let Some(profile) = run.profile {
        out.push_str("## Profile of the layer's hot path\n\n");
        out.push_str(&profile.markdown());
    }
    out
}

/// Every row of every section, by name, with its median as the table prints it.
fn medians_by_name(report: &Report) -> Vec<(String, String)> {
    report
        .sections
        .iter()
        .flat_map(Section::rows)
        .map(|row| (row.name().to_owned(), row.median_text()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_rows_median_and_the_commit_of_the_run_before() {
        let document = "| commit | f8a9111 |\n\
                        | server CPU per HTTP refresh | 52.3 µs | 49.1 µs – 65.0 µs | - |  |\n";
        assert_eq!(
            previous_median(document, "server CPU per HTTP refresh"),
            Some(("52.3 µs", "f8a9111"))
        );
        assert_eq!(previous_median(document, "server CPU per login"), None);
        assert_eq!(previous_median("", "server CPU per HTTP refresh"), None);
    }
}
