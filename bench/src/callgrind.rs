//! valgrind's callgrind: instructions counted in one function of a child process, read
//! back with `callgrind_annotate`, and grouped by what they do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Result;
use crate::child::Child;

/// The longest a child may run under valgrind.
const LIMIT: Duration = Duration::from_secs(600);

/// A function and the instructions spent in it (self cost).
#[derive(Debug, Clone)]
pub(crate) struct Cost {
    /// Instructions.
    pub(crate) instructions: u64,
    /// The function, demangled, without its crate hash or binary path.
    pub(crate) function: String,
}

/// One counted run.
#[derive(Debug)]
pub(crate) struct Counted {
    /// All instructions counted.
    pub(crate) total: u64,
    /// By function, costliest first.
    pub(crate) costs: Vec<Cost>,
    /// What the child printed on its `profiled` line.
    pub(crate) reported: String,
}

/// valgrind and `callgrind_annotate`, when both are installed.
#[derive(Debug)]
pub(crate) struct Callgrind {
    valgrind: PathBuf,
    annotate: PathBuf,
}

impl Callgrind {
    /// Finds both on `PATH`.
    pub(crate) fn find() -> Option<Self> {
        Some(Self {
            valgrind: on_path("valgrind")?,
            annotate: on_path("callgrind_annotate")?,
        })
    }

    /// Runs this executable with `args` under callgrind, counting only the functions that
    /// match `toggle` and what they call; waits for the child's `profiled` line.
    pub(crate) async fn count(&self, toggle: &str, args: &[String]) -> Result<Counted> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("callgrind.out");
        let mut command = vec![
            "--tool=callgrind".to_owned(),
            format!("--callgrind-out-file={}", out.display()),
            format!("--toggle-collect={toggle}"),
            std::env::current_exe()?.display().to_string(),
        ];
        command.extend_from_slice(args);
        let mut child = Child::spawn_program(&self.valgrind, &command)?;
        let reported = child.line_after("profiled", LIMIT).await?;
        child.finish(Duration::from_secs(60)).await?;
        let annotated = tokio::process::Command::new(&self.annotate)
            .args(["--inclusive=no", "--threshold=100"])
            .arg(&out)
            .output()
            .await?;
        if !annotated.status.success() {
            return Err(format!(
                "callgrind_annotate failed: {}",
                String::from_utf8_lossy(&annotated.stderr)
            )
            .into());
        }
        let (total, costs) = parse_annotated(&String::from_utf8_lossy(&annotated.stdout))
            .ok_or("unexpected callgrind_annotate output")?;
        Ok(Counted {
            total,
            costs,
            reported,
        })
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path: &PathBuf| Path::is_file(path))
}

/// `PROGRAM TOTALS` and the per-function lines of `callgrind_annotate`, costliest first.
fn parse_annotated(text: &str) -> Option<(u64, Vec<Cost>)> {
    let mut total = None;
    let mut costs = Vec::new();
    for line in text.lines().map(str::trim) {
        let Some((count, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(instructions) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        let rest = rest.trim_start();
        // Newer versions print a percentage after the count.
        let rest = match rest.strip_prefix('(') {
            Some(after) => after
                .split_once(')')
                .map_or(after, |(_, tail)| tail)
                .trim_start(),
            None => rest,
        };
        if rest.starts_with("PROGRAM TOTALS") {
            total = Some(instructions);
        } else if let Some((_, function)) = rest.split_once(':') {
            costs.push(Cost {
                instructions,
                function: clean(function),
            });
        }
    }
    costs.sort_by_key(|cost| std::cmp::Reverse(cost.instructions));
    Some((total?, costs))
}

/// Drops the binary path (` [/path]`) and Rust's symbol hashes (`::h0123456789abcdef`).
fn clean(function: &str) -> String {
    let function = function
        .rsplit_once(" [")
        .map_or(function, |(name, _)| name)
        .trim();
    let mut out = String::with_capacity(function.len());
    for (index, part) in function.split("::").enumerate() {
        let is_hash = part.len() == 17
            && part.starts_with('h')
            && part[1..].bytes().all(|b| b.is_ascii_hexdigit());
        if is_hash {
            continue;
        }
        if index > 0 {
            out.push_str("::");
        }
        out.push_str(part);
    }
    out
}

/// What `with` costs beyond `without`, function by function (both over the same number
/// of requests); functions that cost less are left out. Costliest first.
pub(crate) fn difference(with: &[Cost], without: &[Cost]) -> Vec<Cost> {
    let mut by_function: BTreeMap<&str, i128> = BTreeMap::new();
    for cost in with {
        *by_function.entry(&cost.function).or_default() += i128::from(cost.instructions);
    }
    for cost in without {
        *by_function.entry(&cost.function).or_default() -= i128::from(cost.instructions);
    }
    let mut costs: Vec<Cost> = by_function
        .into_iter()
        .filter_map(|(function, instructions)| {
            Some(Cost {
                instructions: u64::try_from(instructions).ok().filter(|&n| n > 0)?,
                function: function.to_owned(),
            })
        })
        .collect();
    costs.sort_by_key(|cost| std::cmp::Reverse(cost.instructions));
    costs
}

/// A group of functions that together make one cost, in words.
#[derive(Debug, Clone)]
pub(crate) struct Theme {
    /// What the cost is, in words.
    pub(crate) words: &'static str,
    /// Instructions of all its functions.
    pub(crate) instructions: u64,
}

/// What a function's name says its cost is for; the first match wins.
const THEMES: &[(&str, &[&str])] = &[
    (
        "reading the `Authorization: Bearer` header (`portcullis::extract`, UTF-8 \
         and b64token checks)",
        &["extract::", "b64token", "from_utf8"],
    ),
    (
        "cache lookups (the concurrent maps behind the token cache and the liveness cache, \
         their locks and bookkeeping)",
        &[
            "moka",
            "quick_cache",
            "crossbeam",
            "tagptr",
            "quanta",
            "parking_lot",
            "lock_api",
            "RwLock",
        ],
    ),
    (
        "memory allocation and freeing (glibc malloc)",
        &[
            "malloc",
            "free",
            "realloc",
            "calloc",
            "unlink_chunk",
            "__rdl_",
            "__rust_alloc",
            "__rust_dealloc",
        ],
    ),
    (
        "the http crate: the request's extension map (where the `AuthContext` goes), \
         headers and the response",
        &["http::", "hashbrown", "Extensions", "HeaderMap"],
    ),
    (
        "hashing the cache keys (the whole token text for the token cache, the session \
         id for the liveness cache)",
        &["sip::", "foldhash", "BuildHasher", "Hasher", "hash_one"],
    ),
    (
        "reading and comparing clocks (`SystemTime` for the token's `exp`, `Instant` for \
         the cache deadlines)",
        &[
            "time::",
            "Instant",
            "SystemTime",
            "clock_gettime",
            "Timespec",
        ],
    ),
    (
        "building the 401 refusals (JSON body, `WWW-Authenticate`)",
        &["error::", "serde_json", "fmt::", "rejected"],
    ),
    (
        "comparing and copying memory (`memcmp`, `memcpy`: the cache compares the whole \
         token)",
        &["memcmp", "memcpy", "memmove", "memset", "bcmp"],
    ),
];

/// `costs` grouped by [`THEMES`], costliest first.
pub(crate) fn themes(costs: &[Cost]) -> Vec<Theme> {
    let mut by_theme: BTreeMap<&'static str, u64> = BTreeMap::new();
    for cost in costs {
        let words = THEMES
            .iter()
            .find(|(_, patterns)| patterns.iter().any(|p| cost.function.contains(p)))
            .map_or(
                "everything else (the layer's own code: `Authenticator`, `SessionGuard`, \
                 its response future)",
                |(words, _)| words,
            );
        *by_theme.entry(words).or_default() += cost.instructions;
    }
    let mut themes: Vec<Theme> = by_theme
        .into_iter()
        .map(|(words, instructions)| Theme {
            words,
            instructions,
        })
        .collect();
    themes.sort_by_key(|theme| std::cmp::Reverse(theme.instructions));
    themes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_callgrind_annotate() {
        let text = "\
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
1,000,000  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir  file:function
--------------------------------------------------------------------------------
600,000  ???:moka::sync::cache::Cache<K,V,S>::get::h0123456789abcdef [/x/portcullis-bench]
400,000 (40.00%)  ./malloc/malloc.c:malloc [/usr/lib/libc.so.6]
";
        let (total, costs) = parse_annotated(text).unwrap();
        assert_eq!(total, 1_000_000);
        assert_eq!(costs[0].function, "moka::sync::cache::Cache<K,V,S>::get");
        assert_eq!(costs[1].function, "malloc");
        assert!(themes(&costs)[0].words.starts_with("cache lookups"));
    }

    #[test]
    fn the_difference_keeps_what_costs_more() {
        let cost = |instructions, function: &str| Cost {
            instructions,
            function: function.to_owned(),
        };
        let with = [cost(500, "a"), cost(300, "b"), cost(100, "c")];
        let without = [cost(200, "a"), cost(400, "b")];
        let difference = difference(&with, &without);
        assert_eq!(difference.len(), 2);
        assert_eq!(
            (difference[0].function.as_str(), difference[0].instructions),
            ("a", 300)
        );
        assert_eq!(
            (difference[1].function.as_str(), difference[1].instructions),
            ("c", 100)
        );
    }
}
