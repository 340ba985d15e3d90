//! The table printed at the end: each figure, its target and whether it was met.

use std::time::Duration;

/// Rows of figures, then free-form notes.
#[derive(Debug)]
pub(crate) struct Table {
    title: String,
    rows: Vec<[String; 4]>,
    notes: Vec<String>,
}

impl Table {
    /// An empty table for `scenario` on a machine with `cores` cores.
    pub(crate) fn new(scenario: &str, cores: usize) -> Self {
        Self {
            title: format!("session-bench {scenario} (cores: {cores})"),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A figure; `target` is its target text and whether it was met, if it has one.
    pub(crate) fn row(&mut self, figure: &str, value: String, target: Option<(String, bool)>) {
        let (target, verdict) = match target {
            Some((text, true)) => (text, "PASS"),
            Some((text, false)) => (text, "MISS"),
            None => ("-".to_owned(), ""),
        };
        self.rows
            .push([figure.to_owned(), value, target, verdict.to_owned()]);
    }

    /// A line printed under the table.
    pub(crate) fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Prints the table on standard output.
    pub(crate) fn print(&self) {
        let header = [
            "figure".to_owned(),
            "value".to_owned(),
            "target".to_owned(),
            "result".to_owned(),
        ];
        let mut widths = [0; 4];
        for row in std::iter::once(&header).chain(&self.rows) {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |row: &[String; 4]| {
            let [a, b, c, d] = row;
            let [wa, wb, wc, wd] = widths;
            println!("| {a:<wa$} | {b:>wb$} | {c:<wc$} | {d:<wd$} |");
        };
        println!("\n{}", self.title);
        line(&header);
        let rule: Vec<String> = widths.iter().map(|width| "-".repeat(width + 2)).collect();
        println!("|{}|", rule.join("|"));
        for row in &self.rows {
            line(row);
        }
        for note in &self.notes {
            println!("note: {note}");
        }
    }
}

/// A latency in milliseconds, or `n/a` when there was none.
pub(crate) fn millis(latency: Option<Duration>) -> String {
    latency.map_or_else(
        || "n/a".to_owned(),
        |latency| format!("{:.2} ms", latency.as_secs_f64() * 1000.0),
    )
}
