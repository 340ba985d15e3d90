//! The profile of the layer's hot path: the same loop of cached requests through the
//! layer and, as the baseline, through the bare service ([`hot_loop`]), timed natively
//! each round and counted once under callgrind. What the layer costs is the difference,
//! function by function.
//!
//! [`hot_loop`]: crate::hot_loop

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use portcullis_testdb::TestDb;

use crate::Result;
use crate::callgrind::{self, Callgrind, Cost, Counted, Theme};
use crate::child::Child;
use crate::hot_loop::{self, BARE_SYMBOL, GUARDED_SYMBOL};
use crate::report::{Round, Section, Unit, thousands};

/// Requests counted under callgrind, per loop.
const COUNTED: usize = 50_000;
/// Requests timed natively, per loop and round.
const TIMED: usize = 1_000_000;
/// How long a native run may take.
const TIMED_LIMIT: Duration = Duration::from_secs(120);
/// Functions listed in BENCHMARKS.md.
const LISTED: usize = 12;

/// How the figure is measured, for BENCHMARKS.md.
pub(crate) const METHOD: &str = "\
A child process puts `SessionGuardLayer` (EdDSA keys, `PostgresLiveness` with its \
cache; live TTL raised to 10 minutes so that nothing expires under valgrind's slowness) \
in front of a Tower service that answers at once, and authenticates 1,000 tokens once \
(1,000 sessions, one in ten revoked), so every token and every session is cached. It \
then calls the service with prepared requests, cycling through the tokens: the hot path \
of figure 1, 200s and 401s alike, on one thread, without HTTP. The baseline is the same \
loop calling the bare service. Each round times 1,000,000 calls of each loop natively \
(only the calls; preparing the requests is left out). Then `valgrind --tool=callgrind` \
counts 50,000 calls of each loop (`--toggle-collect` on the loop function alone), and \
50,000 calls of the guarded loop once more with HS256 tokens. \
Instructions (Ir) are exact and repeat from run to run, unlike time on a shared \
machine; `callgrind_annotate` gives each function's self cost (inlined functions count \
as their caller), the layer's cost is the guarded loop's minus the bare loop's, \
function by function, and the harness groups functions by what they do. Instructions \
are not time: cache misses and contention between threads do not show, and the HTTP \
service of figure 1 adds parsing, routing and a 10,000-token working set.";

/// What the profile found.
#[derive(Debug)]
pub(crate) struct Profile {
    /// Nanoseconds per request, (guarded, bare), one pair per round.
    timed: Vec<(f64, f64)>,
    /// The instruction counts, or why there are none.
    counted: Result<Instructions, String>,
}

/// Instruction counts of both loops.
#[derive(Debug)]
struct Instructions {
    /// Requests counted in each loop.
    requests: u64,
    /// Instructions per request through the layer (EdDSA tokens).
    guarded: u64,
    /// The same with HS256 tokens: on a cached request the algorithm should not matter.
    guarded_hs256: u64,
    /// Instructions per request of the bare service.
    bare: u64,
    /// The layer's own costs over all requests (guarded minus bare), costliest first.
    layer: Vec<Cost>,
    themes: Vec<Theme>,
    wall: Duration,
}

impl Instructions {
    /// The layer's own instructions per request.
    fn per_request(&self) -> u64 {
        self.guarded.saturating_sub(self.bare)
    }

    /// The layer's own instructions over all requests counted.
    fn layer_total(&self) -> u64 {
        self.per_request() * self.requests
    }
}

/// Times both loops `rounds` times, then counts them under callgrind when valgrind is
/// installed.
pub(crate) async fn run(rounds: usize) -> Result<Profile> {
    let db = TestDb::new().await;
    hot_loop::POPULATION.seed(&db.connect().await).await?;
    let url = db.url();
    let mut timed = Vec::with_capacity(rounds);
    for round_index in 0..rounds {
        eprintln!(
            "profile: round {}/{}: {TIMED} cached requests with and without the layer ...",
            round_index + 1,
            rounds
        );
        let guarded = time_loop(&url, "guarded").await?;
        let bare = time_loop(&url, "bare").await?;
        timed.push((guarded, bare));
    }
    let counted = match Callgrind::find() {
        None => Err("valgrind (with callgrind_annotate) not found on PATH".to_owned()),
        Some(callgrind) => {
            eprintln!("profile: callgrind, {COUNTED} requests with and without the layer ...");
            let started = Instant::now();
            let guarded = callgrind
                .count(
                    GUARDED_SYMBOL,
                    &loop_args(&url, "guarded", "eddsa", COUNTED),
                )
                .await?;
            let guarded_hs256 = callgrind
                .count(
                    GUARDED_SYMBOL,
                    &loop_args(&url, "guarded", "hs256", COUNTED),
                )
                .await?;
            let bare = callgrind
                .count(BARE_SYMBOL, &loop_args(&url, "bare", "eddsa", COUNTED))
                .await?;
            Ok(instructions(
                &guarded,
                &guarded_hs256,
                &bare,
                started.elapsed(),
            )?)
        }
    };
    Ok(Profile { timed, counted })
}

fn loop_args(database_url: &str, variant: &str, algorithm: &str, iterations: usize) -> Vec<String> {
    [
        "profile-loop",
        "--database-url",
        database_url,
        "--loop",
        variant,
        "--algorithm",
        algorithm,
        "--iterations",
        &iterations.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Nanoseconds per request of one loop, run natively.
#[allow(
    clippy::cast_precision_loss,
    reason = "nanosecond totals stay far below 2^52"
)]
async fn time_loop(database_url: &str, variant: &str) -> Result<f64> {
    let mut child = Child::spawn(loop_args(database_url, variant, "eddsa", TIMED))?;
    let reported = child.line_after("profiled", TIMED_LIMIT).await?;
    child.finish(Duration::from_secs(30)).await?;
    let (requests, nanos) = parse_reported(&reported)?;
    Ok(nanos as f64 / requests.max(1) as f64)
}

/// `<requests> requests in <nanoseconds> ns`.
fn parse_reported(reported: &str) -> Result<(u64, u64)> {
    let words: Vec<&str> = reported.split_whitespace().collect();
    match words.as_slice() {
        [requests, "requests", "in", nanos, "ns"] => Ok((requests.parse()?, nanos.parse()?)),
        _ => Err(format!("profile-loop reported {reported:?}").into()),
    }
}

/// Per-request instructions of both loops and the layer's costs by function.
fn instructions(
    guarded: &Counted,
    guarded_hs256: &Counted,
    bare: &Counted,
    wall: Duration,
) -> Result<Instructions> {
    let (guarded_requests, _) = parse_reported(&guarded.reported)?;
    let (hs256_requests, _) = parse_reported(&guarded_hs256.reported)?;
    let (bare_requests, _) = parse_reported(&bare.reported)?;
    if guarded_requests != bare_requests
        || guarded_requests != hs256_requests
        || guarded_requests == 0
    {
        return Err("the counted loops answered different numbers of requests".into());
    }
    let layer = callgrind::difference(&guarded.costs, &bare.costs);
    Ok(Instructions {
        requests: guarded_requests,
        guarded: guarded.total / guarded_requests,
        guarded_hs256: guarded_hs256.total / hs256_requests,
        bare: bare.total / bare_requests,
        themes: callgrind::themes(&layer),
        layer,
        wall,
    })
}

#[allow(
    clippy::cast_precision_loss,
    reason = "instruction counts stay far below 2^52"
)]
fn share(part: u64, total: u64) -> f64 {
    part as f64 * 100.0 / total.max(1) as f64
}

impl Profile {
    /// The profile as a section of the table: one round per native timing.
    #[allow(
        clippy::cast_precision_loss,
        reason = "instruction counts stay far below 2^52"
    )]
    pub(crate) fn section(&self) -> Section {
        let mut section = Section::new("Profile of the hot path", METHOD);
        for (index, (guarded, bare)) in self.timed.iter().enumerate() {
            let mut round = Round::default();
            round.value(
                "time per cached request through the layer",
                *guarded,
                Unit::Nanos,
            );
            round.value(
                "time per request, bare service, baseline",
                *bare,
                Unit::Nanos,
            );
            round.value(
                "the layer's own time per request",
                guarded - bare,
                Unit::Nanos,
            );
            if index == 0 {
                match &self.counted {
                    Err(why) => round.note(format!("callgrind skipped: {why}")),
                    Ok(counted) => {
                        round.value(
                            "instructions per request through the layer (callgrind)",
                            counted.guarded as f64,
                            Unit::Count,
                        );
                        round.value(
                            "instructions per request, bare service, baseline",
                            counted.bare as f64,
                            Unit::Count,
                        );
                        round.value(
                            "the layer's own instructions per request",
                            counted.per_request() as f64,
                            Unit::Count,
                        );
                        round.value(
                            "the layer's own instructions per request, HS256 tokens",
                            counted.guarded_hs256.saturating_sub(counted.bare) as f64,
                            Unit::Count,
                        );
                        for (rank, theme) in counted.themes.iter().take(3).enumerate() {
                            round.note(format!(
                                "cost {}: {:.0}% of the layer's instructions: {}",
                                rank + 1,
                                share(theme.instructions, counted.layer_total()),
                                theme.words
                            ));
                        }
                    }
                }
            }
            section.push(round);
        }
        section
    }

    /// The layer's costs by theme and its costliest functions, for the terminal.
    pub(crate) fn summary_text(&self) -> String {
        let mut out = String::from("profile: the layer's own instructions, by what they do:\n");
        let counted = match &self.counted {
            Err(why) => {
                let _ = writeln!(out, "  callgrind skipped: {why}");
                return out;
            }
            Ok(counted) => counted,
        };
        for theme in &counted.themes {
            let share = share(theme.instructions, counted.layer_total());
            let _ = writeln!(out, "  {share:>5.1}%  {}", theme.words);
        }
        let _ = writeln!(
            out,
            "costliest functions (self cost; valgrind took {:.0} s):",
            counted.wall.as_secs_f64()
        );
        for cost in counted.layer.iter().take(LISTED) {
            let share = share(cost.instructions, counted.layer_total());
            let _ = writeln!(out, "  {share:>5.1}%  {}", cost.function);
        }
        out
    }

    /// The profile for BENCHMARKS.md: the top three costs in words, then the details.
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        let counted = match &self.counted {
            Err(why) => {
                let _ = writeln!(out, "callgrind did not run: {why}.");
                return out;
            }
            Ok(counted) => counted,
        };
        let layer = counted.layer_total();
        let _ = writeln!(
            out,
            "A cached request through the layer takes {} instructions, the bare service \
             call {}: the layer's own cost is {} instructions per request.\n\n\
             The top three costs of the layer, grouping functions by what they do:\n",
            thousands(counted.guarded),
            thousands(counted.bare),
            thousands(counted.per_request())
        );
        for (rank, theme) in counted.themes.iter().take(3).enumerate() {
            let share = share(theme.instructions, layer);
            let _ = writeln!(out, "{}. **{share:.0}%**: {}.", rank + 1, theme.words);
        }
        out.push_str(
            "\nAll of the layer's costs by what they do:\n\n| share | what |\n|--:|---|\n",
        );
        for theme in &counted.themes {
            let share = share(theme.instructions, layer);
            let _ = writeln!(out, "| {share:.1}% | {} |", theme.words);
        }
        out.push_str(
            "\nThe layer's costliest functions (self cost, guarded loop minus bare loop):\n\n\
             | share | instructions per request | function |\n|--:|--:|---|\n",
        );
        for cost in counted.layer.iter().take(LISTED) {
            #[allow(
                clippy::cast_precision_loss,
                reason = "instruction counts stay far below 2^52"
            )]
            let per_request = cost.instructions as f64 / counted.requests.max(1) as f64;
            let _ = writeln!(
                out,
                "| {:.1}% | {per_request:.0} | `{}` |",
                share(cost.instructions, layer),
                cost.function.replace('|', "\\|")
            );
        }
        out
    }
}
