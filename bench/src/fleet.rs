//! What figures 8 and 9 (revocation fan-out over `LISTEN`, and over NATS) share: the
//! PostgreSQL cluster they run on, the simulated instances spread over child processes,
//! revoking sessions one at a time and timing their delivery, and the throughput phase
//! (revoking transactions beside refresh transactions, with the revocation trigger on
//! and then off).
//!
//! A child that simulates instances says a ready line, then prints `notified <session id>
//! <unix nanoseconds>` for each instance that hears each revocation of a session numbered
//! below `--report-below` ([`THROUGHPUT_FIRST`]), until its standard input closes.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portcullis_testdb::{ClusterUnavailable, PrivateCluster, TestDb};

use crate::child::Child;
use crate::load::{Bounds, per_second};
use crate::seed::{self, Population};
use crate::{Result, cpu};

/// Connections left free for everyone else on the server when the largest size does not
/// fit under `max_connections`.
pub(crate) const SPARE_CONNECTIONS: usize = 30;
/// Child processes the listeners are spread over.
pub(crate) const PROCESSES: usize = 4;
/// Sessions revoked one at a time per size and round.
pub(crate) const REVOCATIONS: u64 = 40;
/// How long the harness waits for every listener to get one notification.
pub(crate) const DELIVERY_LIMIT: Duration = Duration::from_secs(5);
/// How long a child may take to open its connections.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent revoking transactions in the throughput phase.
pub(crate) const WRITERS: u64 = 16;
/// Concurrent refresh transactions beside them, on sessions of their own.
pub(crate) const REFRESHERS: u64 = 8;

/// The trigger that notifies on revocation (migrations/sql).
const TRIGGER: &str = "sessions_notify_revoked_on_update";
/// Sessions seeded: the one-at-a-time revocations take fresh ones, the throughput
/// phase's writers and refreshers move deadlines and refresh state of their own.
pub(crate) const POPULATION: Population = Population {
    sessions: 20_000,
    users: 100,
    revoked_every: 1_000_000,
};
/// The throughput phase's sessions: writer `w` updates sessions `THROUGHPUT_FIRST + w`,
/// `+ WRITERS`, ... (no two writers ever wait on one row).
pub(crate) const THROUGHPUT_FIRST: u64 = 10_000;
const THROUGHPUT_ROWS_PER_WRITER: u64 = 500;
/// Refresher `r` refreshes session `REFRESH_FIRST + r`, after every writer's rows.
const REFRESH_FIRST: u64 = THROUGHPUT_FIRST + WRITERS * THROUGHPUT_ROWS_PER_WRITER;
const _: () = assert!(
    REFRESH_FIRST + REFRESHERS <= POPULATION.sessions,
    "the refreshers' sessions are seeded"
);

/// The private cluster's settings besides `max_connections`, written after
/// `portcullis-testdb`'s defaults (which turn durability off for speed): a real server's
/// durability, and PostgreSQL's default shared buffers.
pub(crate) const CLUSTER_SETTINGS: [(&str, &str); 4] = [
    ("fsync", "on"),
    ("synchronous_commit", "on"),
    ("full_page_writes", "on"),
    ("shared_buffers", "128MB"),
];

/// A writer's revoking transaction: moves a session's idle deadline earlier, which the
/// trigger notifies.
const REVOKE: &str =
    "UPDATE sessions SET idle_expires_at = idle_expires_at - interval '1 second' WHERE id = $1";
/// Gives a refresher's session (`$1`) refresh state at generation 0 with hash `$2`
/// (touches no deadline: the trigger stays silent).
const REFRESH_START: &str = "UPDATE sessions SET refresh_generation = 0, refresh_hash = $2, \
                             refresh_retries = 0 WHERE id = $1";
/// The refresh transaction of the server and of the refresh figure (one call of
/// `session_guard_refresh`, migration V3, with the server's default grace, idle timeout
/// and retry bound): it rotates the session's hash and generation and moves
/// `idle_expires_at` later, which the trigger does not notify. A row only when it
/// rotated.
const REFRESH: &str = "SELECT generation \
                         FROM session_guard_refresh($1, $2, $3, $4, $5, '10 seconds', '14 days', \
                                                    16, '127.0.0.1') \
                        WHERE outcome = 'rotated'";
/// The client fingerprint the refreshers present (any 32 bytes).
const REFRESHER_CLIENT: &[u8; 32] = b"portcullis fan-out refreshers!!!";

/// What a figure asks of its private cluster.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClusterSpec {
    /// The figure, for what the harness says while it runs (`fan-out`).
    pub(crate) figure: &'static str,
    /// The database created in the cluster.
    pub(crate) database: &'static str,
    /// The cluster's `max_connections`.
    pub(crate) max_connections: u64,
}

/// Where the figure runs.
pub(crate) enum Server {
    /// A cluster the harness started for the figure, with [`CLUSTER_SETTINGS`].
    Private {
        /// Its database, migrated.
        config: tokio_postgres::Config,
        /// Stopped and deleted when dropped.
        cluster: PrivateCluster,
    },
    /// The shared server, because no private cluster could be started.
    Shared {
        /// A database of the figure's own on it.
        db: TestDb,
        /// Why there is no private cluster.
        why: ClusterUnavailable,
    },
}

impl Server {
    /// A private cluster with [`CLUSTER_SETTINGS`], else the shared server.
    pub(crate) async fn start(spec: ClusterSpec) -> Self {
        let max_connections = spec.max_connections.to_string();
        let mut settings = CLUSTER_SETTINGS.to_vec();
        settings.push(("max_connections", &max_connections));
        match PrivateCluster::start_with(&settings).await {
            Ok(cluster) => Self::Private {
                config: cluster.create_database(spec.database).await,
                cluster,
            },
            Err(why) => {
                eprintln!("{}: {why}; running on the shared server", spec.figure);
                Self::Shared {
                    db: TestDb::new().await,
                    why,
                }
            }
        }
    }

    /// Which kind of server this is.
    pub(crate) fn placement(&self) -> Placement {
        match self {
            Self::Private { .. } => Placement::Private,
            Self::Shared { .. } => Placement::Shared,
        }
    }

    /// The figure's database as a libpq key-value string, for the listener children.
    pub(crate) fn url(&self) -> String {
        match self {
            Self::Private { config, .. } => TestDb::url_of(config),
            Self::Shared { db, .. } => db.url(),
        }
    }

    /// A new connection to the figure's database.
    pub(crate) async fn connect(&self) -> tokio_postgres::Client {
        match self {
            Self::Private { config, cluster } => cluster.connect(config).await,
            Self::Shared { db, .. } => db.connect().await,
        }
    }
}

/// Which server the figure ran on, for the scaling-out text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// A private cluster the harness started.
    Private,
    /// The shared server (no private cluster could be started).
    Shared,
}

/// What the throughput phase does to the revocation trigger.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Trigger {
    Enabled,
    Disabled,
}

impl Trigger {
    /// Enables or disables the trigger (`ALTER TABLE`: no writer may be running).
    pub(crate) async fn set(self, client: &tokio_postgres::Client) -> Result<()> {
        let verb = match self {
            Self::Enabled => "ENABLE",
            Self::Disabled => "DISABLE",
        };
        client
            .batch_execute(&format!("ALTER TABLE sessions {verb} TRIGGER {TRIGGER}"))
            .await?;
        Ok(())
    }
}

/// One half of the throughput phase: transactions committed per second.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Throughput {
    /// By the [`WRITERS`] revoking connections.
    pub(crate) revocations: f64,
    /// By the [`REFRESHERS`] beside them.
    pub(crate) refreshes: f64,
}

/// `total` split into `parts` near-equal shares, none empty.
pub(crate) fn shares(total: usize, parts: usize) -> Vec<usize> {
    let parts = parts.min(total).max(1);
    (0..parts)
        .map(|index| total / parts + usize::from(index < total % parts))
        .collect()
}

/// Revokes [`REVOCATIONS`] sessions one at a time and waits for every listener to get
/// each (each child in `listeners` with how many instances it simulates), starting one
/// revocation at most every `pace` when given: the delivery times, how many never came,
/// and PostgreSQL's CPU over it all.
pub(crate) async fn revoke_one_at_a_time(
    client: &tokio_postgres::Client,
    listeners: &mut [(Child, u64)],
    pace: Option<Duration>,
    next_session: &mut u64,
) -> Result<(Vec<Duration>, u64, Duration)> {
    let size: u64 = listeners.iter().map(|(_, instances)| instances).sum();
    let backends = cpu::database_backends(client).await?;
    let before: Vec<_> = backends
        .iter()
        .map(|&pid| cpu::run_time(pid).ok())
        .collect();
    let mut samples = Vec::with_capacity(usize::try_from(size * REVOCATIONS)?);
    let mut missing = 0;
    for _ in 0..REVOCATIONS {
        let started = tokio::time::Instant::now();
        let id = seed::session_id(*next_session);
        *next_session += 1;
        let uuid: uuid::Uuid = id.parse()?;
        let sent = SystemTime::now();
        client
            .execute(
                "UPDATE sessions SET revoked_at = now(), revoked_reason = 'admin' \
                 WHERE id = $1",
                &[&uuid],
            )
            .await?;
        let deadline = Instant::now() + DELIVERY_LIMIT;
        for (listener, connections) in listeners.iter_mut() {
            let mut pending = *connections;
            while pending > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                let Ok(line) = listener.line_after("notified", left).await else {
                    missing += pending;
                    break;
                };
                let (payload, at) = parse_notified(&line)?;
                if payload == id {
                    samples.push(at.duration_since(sent).unwrap_or_default());
                    pending -= 1;
                }
            }
        }
        if let Some(pace) = pace {
            tokio::time::sleep_until(started + pace).await;
        }
    }
    let database_cpu = backends
        .iter()
        .zip(before)
        .filter_map(|(&pid, before)| Some(cpu::run_time(pid).ok()?.saturating_sub(before?)))
        .sum();
    samples.sort_unstable();
    Ok((samples, missing, database_cpu))
}

/// `<payload> <unix nanoseconds>` of a `notified` line.
pub(crate) fn parse_notified(line: &str) -> Result<(&str, SystemTime)> {
    let (payload, nanos) = line
        .split_once(' ')
        .ok_or_else(|| format!("malformed notified line {line:?}"))?;
    Ok((payload, parse_time(nanos)?))
}

/// A time printed as unix nanoseconds.
pub(crate) fn parse_time(nanos: &str) -> Result<SystemTime> {
    let nanos: u64 = nanos.trim().parse()?;
    Ok(UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// One half of the throughput phase: [`WRITERS`] connections revoking and
/// [`REFRESHERS`] refreshing, side by side, each until `bounds` (a duration and a most
/// transactions per connection) runs out. Connections are opened and prepared first; the
/// rates are over the wall time from the first start to the last finish.
pub(crate) async fn throughput(server: &Server, bounds: (Duration, usize)) -> Result<Throughput> {
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let client = server.connect().await;
        let statement = client.prepare(REVOKE).await?;
        let rows = (0..THROUGHPUT_ROWS_PER_WRITER)
            .map(|row| seed::session_id(THROUGHPUT_FIRST + writer + WRITERS * row).parse())
            .collect::<Result<Vec<uuid::Uuid>, _>>()?;
        writers.push((client, statement, rows));
    }
    let mut refreshers = Vec::new();
    for refresher in 0..REFRESHERS {
        let index = REFRESH_FIRST + refresher;
        let id: uuid::Uuid = seed::session_id(index).parse()?;
        let client = server.connect().await;
        client
            .execute(REFRESH_START, &[&id, &secret_hash(index, 0)])
            .await?;
        let statement = client.prepare(REFRESH).await?;
        refreshers.push((client, statement, index, id));
    }
    let (phase, max_transactions) = bounds;
    let bounds = Bounds::new(phase, max_transactions);
    let started = Instant::now();
    let writers: Vec<_> = writers
        .into_iter()
        .map(|(client, statement, rows)| tokio::spawn(revoke_rows(client, statement, rows, bounds)))
        .collect();
    let refreshers: Vec<_> = refreshers
        .into_iter()
        .map(|(client, statement, index, id)| {
            tokio::spawn(refresh_session(client, statement, (index, id), bounds))
        })
        .collect();
    let mut revocations = 0;
    for writer in writers {
        revocations += writer.await??;
    }
    let mut rotations = 0;
    for refresher in refreshers {
        rotations += refresher.await??;
    }
    let elapsed = started.elapsed();
    Ok(Throughput {
        revocations: per_second(revocations, elapsed),
        refreshes: per_second(rotations, elapsed),
    })
}

/// A writer: moves the deadlines of `rows` earlier in turn, one transaction each, until
/// `bounds` runs out; how many it committed.
async fn revoke_rows(
    client: tokio_postgres::Client,
    revoke: tokio_postgres::Statement,
    rows: Vec<uuid::Uuid>,
    bounds: Bounds,
) -> Result<usize> {
    let mut done = 0_usize;
    while bounds.allow(done) {
        client.execute(&revoke, &[&rows[done % rows.len()]]).await?;
        done += 1;
    }
    Ok(done)
}

/// A refresher: rotates session `index` (id `id`), starting at generation 0, until
/// `bounds` runs out; how many rotations it committed. Anything but a rotation is an
/// error.
async fn refresh_session(
    client: tokio_postgres::Client,
    refresh: tokio_postgres::Statement,
    (index, id): (u64, uuid::Uuid),
    bounds: Bounds,
) -> Result<usize> {
    let fingerprint: &[u8] = REFRESHER_CLIENT;
    let mut generation = 0_i32;
    let mut done = 0_usize;
    while bounds.allow(done) {
        let (current, next) = (
            secret_hash(index, generation),
            secret_hash(index, generation + 1),
        );
        let rotated = client
            .query_opt(&refresh, &[&id, &generation, &current, &next, &fingerprint])
            .await?
            .ok_or_else(|| format!("refreshing session {index} at {generation} did not rotate"))?;
        generation = rotated.get(0);
        done += 1;
    }
    Ok(done)
}

/// The stand-in for the server's keyed hash of session `index`'s secret at `generation`:
/// 32 bytes, distinct for every session and generation.
pub(crate) fn secret_hash(index: u64, generation: i32) -> Vec<u8> {
    let mut hash = vec![0; 32];
    hash[..8].copy_from_slice(&index.to_be_bytes());
    hash[8..12].copy_from_slice(&generation.to_be_bytes());
    hash
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_shared_out_evenly() {
        assert_eq!(shares(3, 4), vec![1, 1, 1]);
        assert_eq!(shares(50, 4), vec![13, 13, 12, 12]);
        assert_eq!(shares(200, 4).iter().sum::<usize>(), 200);
    }

    #[test]
    fn secret_hashes_differ_by_session_and_generation() {
        assert_eq!(secret_hash(1, 0).len(), 32);
        assert_ne!(secret_hash(1, 0), secret_hash(1, 1));
        assert_ne!(secret_hash(1, 0), secret_hash(2, 0));
    }

    #[test]
    fn notified_lines_parse() {
        let (payload, at) = parse_notified("00000000-0000-4000-8000-000000000001 1500").unwrap();
        assert_eq!(payload, "00000000-0000-4000-8000-000000000001");
        assert_eq!(at, UNIX_EPOCH + Duration::from_nanos(1500));
        assert!(parse_notified("no-time").is_err());
        assert!(parse_notified("id soon").is_err());
    }
}
