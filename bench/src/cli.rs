//! The command line: one command, then `--name value` options.
//!
//! The commands a person runs are listed in [`USAGE`]; the others (`serve-hello`,
//! `fill-memory`, `listen`, `subscribe`, `relay`, `profile-loop`) are how the harness runs itself as a child process, so
//! that a measured service never shares a process with its load generator.

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::Result;

/// What `portcullis-bench` prints for a usage error.
pub(crate) const USAGE: &str = "\
usage: portcullis-bench <command> [--rounds N] [--duration SECONDS]

commands:
  all            every figure below, then rewrites BENCHMARKS.md
  layer          1. the layer's cost to an axum hello service (HS256, EdDSA, a naive layer)
  peers          7. jwt-authorizer, tower-sessions and better-auth beside the layer
  fan-out        8. notification delivery to 3, 50 and 200 listeners, revocations/s
                 with and without the trigger while refreshes run (private cluster)
  nats-fan-out   9. the same on the NATS feed: delivery to 3, 200 and 1,000 subscribed
                 feeds, PostgreSQL CPU per revocation, revocations/s with the NATS feed
                 and with the trigger off while refreshes run, relay failover
                 (private cluster, own nats-server)
  bulk           10. sessions revoke --all-users over 1,000,000 live sessions on each
                 feed: the command's time, the one message, the log rows
  refresh        2. and 6. refresh against pgbench and against the old function (V5):
                 PostgreSQL CPU, WAL and HOT share per refresh; bytes of refresh state
                 after 1, 100 and 10,000 refreshes (private cluster)
  login          4. login against the Argon2 bound, GET /me while logins load the CPU
  refresh-login  2., 4. and 6. in the same rounds
  propagation    3. time from a revocation until three layer processes refuse the token
  memory         5. resident memory with 1M cached sessions and 100k cached tokens
  profile        callgrind on the layer's hot path (skipped without valgrind)

options:
  --rounds N          how many times each figure runs (default 3)
  --duration SECONDS  length of each load phase (default 6)";

/// A parsed command line.
#[derive(Debug)]
pub(crate) struct Args {
    /// The first argument.
    pub(crate) command: String,
    options: BTreeMap<String, String>,
}

impl Args {
    /// Parses `command --name value ...`; `Err` holds what was wrong.
    pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut args = args.into_iter();
        let command = args.next().ok_or("no command")?;
        let mut options = BTreeMap::new();
        while let Some(name) = args.next() {
            let name = name
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {name:?}"))?
                .to_owned();
            let value = args
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            if options.insert(name.clone(), value).is_some() {
                return Err(format!("--{name} given twice"));
            }
        }
        Ok(Self { command, options })
    }

    /// The value of `--name`, if given.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }

    /// The value of `--name`, which must be given.
    pub(crate) fn required(&self, name: &str) -> Result<&str> {
        self.get(name)
            .ok_or_else(|| format!("{}: --{name} is required", self.command).into())
    }

    /// `--name` parsed, or `default` when absent.
    pub(crate) fn number<T: FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.get(name) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| format!("--{name}: not a valid number: {text:?}").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Args, String> {
        Args::parse(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn a_command_and_its_options() {
        let args = parse("all --rounds 5").unwrap();
        assert_eq!(args.command, "all");
        assert_eq!(args.number("rounds", 3).unwrap(), 5);
        assert_eq!(args.number("duration", 6).unwrap(), 6);
        assert!(args.required("mode").is_err());
    }

    #[test]
    fn malformed_lines_are_refused() {
        assert!(parse("").is_err());
        assert!(parse("all rounds 5").is_err());
        assert!(parse("all --rounds").is_err());
        assert!(parse("all --rounds 1 --rounds 2").is_err());
        assert!(
            parse("all --rounds x")
                .unwrap()
                .number("rounds", 3)
                .is_err()
        );
    }
}
