//! Figures over several rounds: each round records [`Measure`]s, a [`Section`] folds the
//! rounds into one row per measure (the median and the spread, or the total for counts),
//! and the [`Report`] prints the sections as a table or writes them as Markdown.

use std::fmt::Write as _;
use std::time::Duration;

/// How a value reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Events per second.
    PerSecond,
    /// Milliseconds.
    Millis,
    /// Microseconds.
    Micros,
    /// Nanoseconds.
    Nanos,
    /// Seconds.
    Seconds,
    /// Mebibytes.
    Megabytes,
    /// A ratio of two figures measured in the same round.
    Ratio,
    /// A plain count.
    Count,
}

impl Unit {
    fn format(self, value: f64) -> String {
        match self {
            Self::PerSecond if value >= 100.0 => format!("{}/s", grouped(value)),
            Self::PerSecond => format!("{value:.1}/s"),
            Self::Millis => format!("{value:.2} ms"),
            // Below 10 µs a tenth is too coarse: the layer's cost over bare is about that.
            Self::Micros if value.abs() < 10.0 => format!("{value:.2} µs"),
            Self::Micros => format!("{value:.1} µs"),
            Self::Nanos => format!("{value:.0} ns"),
            Self::Seconds => format!("{value:.1} s"),
            Self::Megabytes => format!("{value:.1} MB"),
            Self::Ratio => format!("{value:.3}"),
            Self::Count => grouped(value),
        }
    }
}

/// `value` rounded, with thousands separated by commas (`1,000,000`).
fn grouped(value: f64) -> String {
    let sign = if value.round() < 0.0 { "-" } else { "" };
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "rounded, non-negative, and far below 2^53"
    )]
    let magnitude = value.abs().round() as u64;
    format!("{sign}{}", thousands(magnitude))
}

/// `value` with thousands separated by commas (`1,000,000`).
pub(crate) fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// What a measure should be.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// At least this much.
    AtLeast(f64),
    /// Strictly below this.
    Below(f64),
    /// At most this much (`AtMost(0.0)`: none at all).
    AtMost(f64),
}

impl Target {
    fn met(self, value: f64) -> bool {
        match self {
            Self::AtLeast(bound) => value >= bound,
            Self::Below(bound) => value < bound,
            Self::AtMost(bound) => value <= bound,
        }
    }

    fn describe(self, unit: Unit) -> String {
        match self {
            Self::AtLeast(bound) => format!(">= {}", unit.format(bound)),
            Self::Below(bound) => format!("< {}", unit.format(bound)),
            Self::AtMost(bound) => format!("<= {}", unit.format(bound)),
        }
    }
}

/// How a measure's rounds fold into one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fold {
    /// The median of the rounds, with their spread.
    Median,
    /// The sum of the rounds (error counts).
    Total,
}

/// One figure of one round.
#[derive(Debug, Clone)]
pub(crate) struct Measure {
    name: String,
    value: f64,
    unit: Unit,
    fold: Fold,
    target: Option<Target>,
}

impl Measure {
    /// Sets what the (folded) figure should be.
    pub(crate) fn target(&mut self, target: Target) -> &mut Self {
        self.target = Some(target);
        self
    }
}

/// What one round of a figure recorded.
#[derive(Debug, Default)]
pub(crate) struct Round {
    measures: Vec<Measure>,
    notes: Vec<String>,
}

impl Round {
    /// A figure reported as the median over rounds, with its spread.
    pub(crate) fn value(
        &mut self,
        name: impl Into<String>,
        value: f64,
        unit: Unit,
    ) -> &mut Measure {
        self.push(name.into(), value, unit, Fold::Median)
    }

    /// A latency reported in milliseconds as the median over rounds; a note instead when
    /// there was no sample.
    pub(crate) fn latency(
        &mut self,
        name: impl Into<String>,
        latency: Option<Duration>,
    ) -> Option<&mut Measure> {
        let name = name.into();
        if let Some(latency) = latency {
            Some(self.value(name, latency.as_secs_f64() * 1000.0, Unit::Millis))
        } else {
            self.note(format!("{name}: no sample"));
            None
        }
    }

    /// A count reported as the total over rounds (errors, missing rows).
    #[allow(clippy::cast_precision_loss, reason = "counts stay far below 2^52")]
    pub(crate) fn count(&mut self, name: impl Into<String>, count: u64) -> &mut Measure {
        self.push(name.into(), count as f64, Unit::Count, Fold::Total)
    }

    /// A line printed under the table.
    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    fn push(&mut self, name: String, value: f64, unit: Unit, fold: Fold) -> &mut Measure {
        self.measures.push(Measure {
            name,
            value,
            unit,
            fold,
            target: None,
        });
        self.measures.last_mut().expect("just pushed")
    }
}

/// One figure folded over its rounds.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    name: String,
    /// The median (or the total, for counts).
    value: f64,
    /// Smallest and largest round, for medians.
    spread: Option<(f64, f64)>,
    unit: Unit,
    target: Option<Target>,
}

impl Row {
    /// Whether the target is met; `None` without a target.
    pub(crate) fn met(&self) -> Option<bool> {
        self.target.map(|target| target.met(self.value))
    }

    /// The figure's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The median (or total) as the tables print it.
    pub(crate) fn median_text(&self) -> String {
        self.unit.format(self.value)
    }

    /// Whether this is a check that something did not happen (errors, missing rows)
    /// rather than a performance target.
    pub(crate) fn is_check(&self) -> bool {
        matches!(self.target, Some(Target::AtMost(bound)) if bound.abs() < f64::EPSILON)
    }

    fn cells(&self) -> [String; 5] {
        let spread = self.spread.map_or_else(
            || "-".to_owned(),
            |(low, high)| format!("{} – {}", self.unit.format(low), self.unit.format(high)),
        );
        let (target, result) = match (self.target, self.met()) {
            (Some(target), Some(met)) => (
                target.describe(self.unit),
                if met { "met" } else { "MISSED" }.to_owned(),
            ),
            _ => ("-".to_owned(), String::new()),
        };
        [
            self.name.clone(),
            self.unit.format(self.value),
            spread,
            target,
            result,
        ]
    }
}

/// One numbered figure: its rounds, how it is measured, and notes.
#[derive(Debug)]
pub(crate) struct Section {
    /// `1. Layer cost`.
    pub(crate) title: String,
    /// How the figure is measured, for BENCHMARKS.md (Markdown).
    pub(crate) method: String,
    /// Markdown printed above the figure's table (empty: none), for what the numbers
    /// must be read with.
    pub(crate) preface: String,
    /// Markdown for BENCHMARKS.md's scaling-out section (empty: nothing to say).
    pub(crate) conclusion: String,
    rounds: Vec<Round>,
    /// Lines printed under the table, besides the rounds' own notes.
    pub(crate) notes: Vec<String>,
}

impl Section {
    /// A section with no rounds yet.
    pub(crate) fn new(title: impl Into<String>, method: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            method: method.into(),
            preface: String::new(),
            conclusion: String::new(),
            rounds: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a finished round.
    pub(crate) fn push(&mut self, round: Round) {
        self.rounds.push(round);
    }

    /// How many rounds ran.
    pub(crate) fn round_count(&self) -> usize {
        self.rounds.len()
    }

    /// The measures folded over the rounds, in the order the first round recorded them.
    pub(crate) fn rows(&self) -> Vec<Row> {
        let mut names: Vec<&str> = Vec::new();
        for measure in self.rounds.iter().flat_map(|round| &round.measures) {
            if !names.contains(&measure.name.as_str()) {
                names.push(&measure.name);
            }
        }
        names
            .into_iter()
            .map(|name| {
                let measures: Vec<&Measure> = self
                    .rounds
                    .iter()
                    .flat_map(|round| &round.measures)
                    .filter(|measure| measure.name == name)
                    .collect();
                fold(name, &measures)
            })
            .collect()
    }

    /// Every note: the section's, then each round's, tagged with its round.
    pub(crate) fn all_notes(&self) -> Vec<String> {
        let mut notes = self.notes.clone();
        for (index, round) in self.rounds.iter().enumerate() {
            for note in &round.notes {
                notes.push(format!("round {}: {note}", index + 1));
            }
        }
        notes
    }
}

fn rounds(count: usize) -> String {
    if count == 1 {
        "1 round".to_owned()
    } else {
        format!("{count} rounds")
    }
}

fn fold(name: &str, measures: &[&Measure]) -> Row {
    let first = measures[0];
    let mut values: Vec<f64> = measures.iter().map(|measure| measure.value).collect();
    values.sort_by(f64::total_cmp);
    let (value, spread) = match first.fold {
        Fold::Total => (values.iter().sum(), None),
        Fold::Median => (median(&values), Some((values[0], values[values.len() - 1]))),
    };
    Row {
        name: name.to_owned(),
        value,
        spread,
        unit: first.unit,
        target: first.target,
    }
}

/// The median of sorted `values` (the mean of the middle two for an even count).
fn median(values: &[f64]) -> f64 {
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        f64::midpoint(values[middle - 1], values[middle])
    }
}

/// Every section of a run.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// In the order they ran.
    pub(crate) sections: Vec<Section>,
}

const HEADER: [&str; 5] = ["figure", "median", "spread (min – max)", "target", "result"];

impl Report {
    /// The table as plain text, for a terminal.
    pub(crate) fn text(&self) -> String {
        let mut rows: Vec<Option<[String; 5]>> = Vec::new();
        for section in &self.sections {
            let title = format!("{} ({})", section.title, rounds(section.round_count()));
            rows.push(Some([
                title,
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]));
            rows.extend(section.rows().iter().map(|row| {
                let mut cells = row.cells();
                cells[0].insert_str(0, "  ");
                Some(cells)
            }));
            rows.push(None);
        }
        let header = HEADER.map(str::to_owned);
        let mut widths = [0; 5];
        for row in std::iter::once(&header).chain(rows.iter().flatten()) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |row: &[String; 5]| {
            let [name, median, spread, target, result] = row;
            let [w_name, w_median, w_spread, w_target, w_result] = widths;
            format!(
                "| {name:<w_name$} | {median:>w_median$} | {spread:>w_spread$} \
                 | {target:<w_target$} | {result:<w_result$} |\n"
            )
        };
        let rule: Vec<String> = widths.iter().map(|width| "-".repeat(width + 2)).collect();
        let rule = format!("|{}|\n", rule.join("|"));
        let mut out = line(&header);
        out.push_str(&rule);
        for row in rows.iter().take(rows.len().saturating_sub(1)) {
            match row {
                Some(row) => out.push_str(&line(row)),
                None => out.push_str(&rule),
            }
        }
        for section in &self.sections {
            for note in section.all_notes() {
                let _ = writeln!(out, "note ({}): {note}", section.title);
            }
        }
        out
    }

    /// The table as Markdown, one table per section.
    pub(crate) fn markdown_tables(&self) -> String {
        let mut out = String::new();
        for section in &self.sections {
            let _ = writeln!(
                out,
                "### {} ({})\n",
                section.title,
                rounds(section.round_count())
            );
            if !section.preface.is_empty() {
                let _ = writeln!(out, "{}\n", section.preface.trim_end());
            }
            let _ = writeln!(out, "| {} |\n|---|--:|--:|---|---|", HEADER.join(" | "));
            for row in section.rows() {
                let cells = row.cells();
                let _ = writeln!(out, "| {} |", cells.join(" | "));
            }
            let notes = section.all_notes();
            if !notes.is_empty() {
                out.push('\n');
                for note in notes {
                    let _ = writeln!(out, "- {note}");
                }
            }
            out.push('\n');
        }
        out
    }

    /// Every row with a target: (section, row).
    pub(crate) fn targets(&self) -> Vec<(&Section, Row)> {
        self.sections
            .iter()
            .flat_map(|section| {
                section
                    .rows()
                    .into_iter()
                    .filter(|row| row.target.is_some())
                    .map(move |row| (section, row))
            })
            .collect()
    }
}

impl Row {
    /// `name: value (target)`, for the summary of targets.
    pub(crate) fn summary(&self) -> String {
        let [name, value, _, target, result] = self.cells();
        format!("{name}: {value} (target {target}): {result}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_fold_into_medians_and_totals() {
        let mut section = Section::new("1. Test", "");
        for (rate, errors) in [(100.0, 1), (300.0, 0), (200.0, 2)] {
            let mut round = Round::default();
            round
                .value("rate", rate, Unit::PerSecond)
                .target(Target::AtLeast(150.0));
            round.count("errors", errors).target(Target::AtMost(0.0));
            section.push(round);
        }
        let rows = section.rows();
        assert_eq!(rows.len(), 2);
        assert!((rows[0].value - 200.0).abs() < f64::EPSILON);
        assert_eq!(rows[0].spread, Some((100.0, 300.0)));
        assert_eq!(rows[0].met(), Some(true));
        assert!((rows[1].value - 3.0).abs() < f64::EPSILON);
        assert_eq!(rows[1].met(), Some(false));
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(grouped(1_000_000.0), "1,000,000");
        assert_eq!(grouped(12_485.4), "12,485");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(grouped(-1_500.0), "-1,500");
    }

    #[test]
    fn even_counts_take_the_middle_pair() {
        assert!((median(&[1.0, 2.0, 4.0, 8.0]) - 3.0).abs() < f64::EPSILON);
        assert!((median(&[5.0]) - 5.0).abs() < f64::EPSILON);
    }
}
