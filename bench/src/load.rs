//! Bounded load: workers loop until a deadline or a request budget runs out, whichever
//! comes first, and bring back their latencies and errors.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::Result;

/// When a worker stops: at `deadline` or after `max_requests`, whichever comes first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    deadline: Instant,
    max_requests: usize,
}

impl Bounds {
    /// Bounds starting now.
    pub(crate) fn new(duration: Duration, max_requests: usize) -> Self {
        Self {
            deadline: Instant::now() + duration,
            max_requests,
        }
    }

    /// Whether a worker that has sent `sent` requests may send another.
    pub(crate) fn allow(&self, sent: usize) -> bool {
        sent < self.max_requests && Instant::now() < self.deadline
    }
}

/// What workers saw: the latency of every expected answer, and failures counted by kind.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Latencies of expected answers; sorted once [`run`] has merged them.
    latencies: Vec<Duration>,
    /// How many of the expected answers were refusals (a revoked session's 401).
    refused: u64,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    /// A success that started at `started`.
    pub(crate) fn success(&mut self, started: Instant) {
        self.latencies.push(started.elapsed());
    }

    /// An expected refusal (a revoked session's 401) that started at `started`: it
    /// counts, with its latency, as an answer.
    pub(crate) fn refusal(&mut self, started: Instant) {
        self.latencies.push(started.elapsed());
        self.refused += 1;
    }

    /// Expected refusals among the successes.
    pub(crate) fn refused(&self) -> u64 {
        self.refused
    }

    /// A failure of kind `kind` (`HTTP 503`, `transport: ...`).
    pub(crate) fn failure(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    /// The failure of a request that got no response.
    pub(crate) fn transport_failure(&mut self, error: reqwest::Error) {
        self.failure(format!("transport: {}", error.without_url()));
    }

    /// Requests sent so far.
    pub(crate) fn attempts(&self) -> usize {
        self.latencies.len() + self.error_count()
    }

    /// Successful requests.
    pub(crate) fn successes(&self) -> usize {
        self.latencies.len()
    }

    /// Failed requests.
    pub(crate) fn error_count(&self) -> usize {
        self.errors
            .values()
            .sum::<u64>()
            .try_into()
            .unwrap_or(usize::MAX)
    }

    /// Failures by kind.
    pub(crate) fn errors(&self) -> &BTreeMap<String, u64> {
        &self.errors
    }

    /// The nearest-rank percentile of the success latencies, in thousandths (990: p99).
    pub(crate) fn percentile(&self, per_mille: usize) -> Option<Duration> {
        nearest_rank(&self.latencies, per_mille)
    }

    /// Adds `other`'s answers, refusals and failures to these.
    pub(crate) fn merge(&mut self, other: Self) {
        self.latencies.extend(other.latencies);
        self.refused += other.refused;
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
    }
}

/// A finished phase: all workers' stats and the wall time they took together.
#[derive(Debug)]
pub(crate) struct Run {
    /// Merged stats, latencies sorted.
    pub(crate) stats: Stats,
    /// From spawning the first worker to the last one finishing.
    pub(crate) elapsed: Duration,
}

impl Run {
    /// Folds `other`, a later phase against the same service, into this one: the
    /// answers and the wall time add up.
    pub(crate) fn absorb(&mut self, other: Self) {
        self.stats.merge(other.stats);
        self.stats.latencies.sort_unstable();
        self.elapsed += other.elapsed;
    }

    /// Successes per second of wall time.
    pub(crate) fn rate(&self) -> f64 {
        per_second(self.stats.successes(), self.elapsed)
    }
}

/// Runs `workers` concurrently, each on its own task, and merges what they bring back.
pub(crate) async fn run<F>(workers: impl IntoIterator<Item = F>) -> Result<Run>
where
    F: Future<Output = Stats> + Send + 'static,
{
    let started = Instant::now();
    let handles: Vec<_> = workers.into_iter().map(tokio::spawn).collect();
    let mut stats = Stats::default();
    for handle in handles {
        stats.merge(handle.await?);
    }
    let elapsed = started.elapsed();
    stats.latencies.sort_unstable();
    Ok(Run { stats, elapsed })
}

/// The nearest-rank percentile of `sorted`, in thousandths (990: p99).
pub(crate) fn nearest_rank(sorted: &[Duration], per_mille: usize) -> Option<Duration> {
    let rank = (sorted.len() * per_mille).div_ceil(1000).max(1);
    sorted.get(rank - 1).copied()
}

/// `count` events in `elapsed`, per second.
#[allow(
    clippy::cast_precision_loss,
    reason = "request counts stay far below 2^52"
)]
pub(crate) fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::EPSILON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let stats = Stats {
            latencies: (1..=100).map(Duration::from_millis).collect(),
            ..Stats::default()
        };
        assert_eq!(stats.percentile(500), Some(Duration::from_millis(50)));
        assert_eq!(stats.percentile(990), Some(Duration::from_millis(99)));
        assert_eq!(stats.percentile(1000), Some(Duration::from_millis(100)));
        assert_eq!(Stats::default().percentile(500), None);
    }
}
