//! Figure 8, revocation fan-out: how the one-`LISTEN`-connection-per-instance design
//! scales with the number of instances, and what the trigger's `NOTIFY` costs the
//! revoking transactions.
//!
//! Instances are simulated by listener connections (`LISTEN session_revoked`, what
//! `PostgresLiveness` opens), spread over a few child processes
//! (`session-bench listen --database-url ... --connections N`). For 3, 50 and 200
//! listeners: sessions are revoked one at a time by plain SQL, and each child reports
//! when each of its connections got the notification; PostgreSQL's CPU over those
//! revocations is shared out per revocation. Then, with the same listeners connected,
//! concurrent revoking transactions run for a bounded time with the trigger enabled,
//! and again with it disabled.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use session_testdb::TestDb;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::child::Child;
use crate::cli::Args;
use crate::load::{nearest_rank, per_second};
use crate::report::{Round, Section, Unit};
use crate::seed::{self, Population};
use crate::{Result, Settings, cpu};

/// Listener counts measured.
const SIZES: [usize; 3] = [3, 50, 200];
/// Connections left free for everyone else on the server when the largest size does not
/// fit under `max_connections`.
const SPARE_CONNECTIONS: usize = 30;
/// Child processes the listeners are spread over.
const PROCESSES: usize = 4;
/// Sessions revoked one at a time per size and round.
const REVOCATIONS: u64 = 40;
/// How long the harness waits for every listener to get one notification.
const DELIVERY_LIMIT: Duration = Duration::from_secs(5);
/// How long a child may take to open its connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Concurrent revoking transactions in the throughput phase.
const WRITERS: u64 = 16;
/// The channel `PostgresLiveness` listens on (the migrations' trigger notifies it).
const CHANNEL: &str = session_guard::DEFAULT_CHANNEL;
/// Connections one layer instance holds by default: its liveness pool and its listener.
const CONNECTIONS_PER_INSTANCE: u64 = 4 + 1;
/// The trigger that notifies on revocation (migrations/sql).
const TRIGGER: &str = "sessions_notify_revoked_on_update";
/// Sessions seeded: the one-at-a-time revocations take fresh ones, the throughput
/// phase moves deadlines of its own.
const POPULATION: Population = Population {
    sessions: 20_000,
    users: 100,
    revoked_every: 1_000_000,
};
/// The throughput phase's sessions: writer `w` updates sessions `THROUGHPUT_FIRST + w`,
/// `+ WRITERS`, ... (no two writers ever wait on one row).
const THROUGHPUT_FIRST: u64 = 10_000;
const THROUGHPUT_ROWS_PER_WRITER: u64 = 500;

/// How the figure is measured, for BENCHMARKS.md.
pub(crate) const METHOD: &str = "\
Instances are simulated by listener connections: 3, 50 and then 200 connections, each \
`LISTEN session_revoked` as `PostgresLiveness` does, spread over 4 child processes of \
the harness (fewer when the server's `max_connections` has no room for them: a \
note says so). 40 sessions are revoked one at a time by an `UPDATE sessions SET \
revoked_at = now()` (the trigger sends the `NOTIFY`); a sample is the time from just \
before the statement was sent until a listener got the notification (wall clocks of \
the same machine), one per listener and revocation; a listener that has not got it \
after 5 s is counted. PostgreSQL CPU per revocation is the time on CPU of every backend \
of the run's database over those 40 revocations (`/proc/<pid>/schedstat`, to the \
nanosecond: each backend's share is far below a clock tick), divided by 40 (the listeners' \
backends are where the fan-out is paid). Then, with the same listeners connected, 16 \
connections run single-row revoking transactions (an `UPDATE` that moves \
`idle_expires_at` earlier, which the trigger notifies) for half a load phase with the \
trigger enabled, and half a phase with it disabled (`ALTER TABLE ... DISABLE \
TRIGGER`); the ratio is the price of the `NOTIFY`, whose commit-time queue lock \
serialises the committing transactions. No refreshes run alongside.";

/// Runs figure 8 for `settings.rounds` rounds.
pub(crate) async fn run(settings: Settings) -> Result<Section> {
    let db = TestDb::new().await;
    let client = db.connect().await;
    POPULATION.seed(&client).await?;
    let mut section = Section::new("8. Revocation fan-out", METHOD);
    let room = connection_room(&client).await?;
    let mut sizes: Vec<usize> = SIZES.iter().map(|&size| size.min(room)).collect();
    sizes.dedup();
    if sizes != SIZES {
        section.notes.push(format!(
            "PostgreSQL's max_connections leaves room for {room} listeners (keeping \
             {SPARE_CONNECTIONS} free), so the sizes ran were {sizes:?} instead of {SIZES:?}"
        ));
    }
    let mut next_session = 1;
    let mut observed: Vec<Observed> = Vec::new();
    for round_index in 0..settings.rounds {
        let mut round = Round::default();
        for &size in &sizes {
            eprintln!(
                "fan-out: round {}/{}, {size} listeners ...",
                round_index + 1,
                settings.rounds
            );
            let mut listeners = Vec::with_capacity(PROCESSES);
            for share in shares(size, PROCESSES) {
                let mut child = Child::spawn([
                    "listen".to_owned(),
                    "--database-url".to_owned(),
                    db.url(),
                    "--connections".to_owned(),
                    share.to_string(),
                    "--report-below".to_owned(),
                    THROUGHPUT_FIRST.to_string(),
                ])?;
                child.line_after("listening", START_TIMEOUT).await?;
                listeners.push((child, u64::try_from(share)?));
            }
            let (samples, missing, database_cpu) =
                revoke_one_at_a_time(&client, &mut listeners, size, &mut next_session).await?;
            record_delivery(&mut round, size, &samples, missing, database_cpu);
            let delivered = cpu::micros_each(database_cpu, samples.len());
            let p99 = nearest_rank(&samples, 990).unwrap_or_default();
            let phase = settings.duration / 2;
            let with = revoke_concurrently(&db, phase).await?;
            client
                .batch_execute(&format!("ALTER TABLE sessions DISABLE TRIGGER {TRIGGER}"))
                .await?;
            let without = revoke_concurrently(&db, phase).await;
            client
                .batch_execute(&format!("ALTER TABLE sessions ENABLE TRIGGER {TRIGGER}"))
                .await?;
            let without = without?;
            round.value(
                format!("{size} listeners: revocations/s with the trigger"),
                with,
                Unit::PerSecond,
            );
            round.value(
                format!("{size} listeners: revocations/s without it"),
                without,
                Unit::PerSecond,
            );
            round.value(
                format!("{size} listeners: with / without the trigger"),
                with / without,
                Unit::Ratio,
            );
            drop(listeners);
            observed.push(Observed {
                size,
                micros_per_notification: delivered,
                p99,
                with_trigger: with,
                without_trigger: without,
            });
        }
        section.push(round);
    }
    section.conclusion = scaling_out(&observed, &server_settings(&client).await?);
    Ok(section)
}

/// One size in one round, for the scaling-out section.
#[derive(Debug, Clone, Copy)]
struct Observed {
    size: usize,
    micros_per_notification: f64,
    p99: Duration,
    with_trigger: f64,
    without_trigger: f64,
}

/// The PostgreSQL settings the figures assume, as the server reports them.
async fn server_settings(client: &tokio_postgres::Client) -> Result<Vec<(String, String)>> {
    let mut settings = Vec::new();
    for name in [
        "server_version",
        "max_connections",
        "shared_buffers",
        "synchronous_commit",
        "fsync",
        "max_notify_queue_pages",
    ] {
        let value: Option<String> = client
            .query_opt("SELECT setting FROM pg_settings WHERE name = $1", &[&name])
            .await?
            .map(|row| row.get(0));
        if let Some(value) = value {
            settings.push((name.to_owned(), value));
        }
    }
    Ok(settings)
}

/// The median of `values` (NaN when empty).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// What the figure predicts for more instances and more revocations, in Markdown.
#[allow(
    clippy::cast_precision_loss,
    reason = "instance counts stay far below 2^52"
)]
fn scaling_out(observed: &[Observed], settings: &[(String, String)]) -> String {
    use std::fmt::Write as _;
    let Some(largest) = observed.iter().map(|seen| seen.size).max() else {
        return String::new();
    };
    let at_largest: Vec<&Observed> = observed
        .iter()
        .filter(|seen| seen.size == largest)
        .collect();
    let per_notification = median(
        at_largest
            .iter()
            .map(|seen| seen.micros_per_notification)
            .collect(),
    );
    let p99_ms = median(
        at_largest
            .iter()
            .map(|seen| seen.p99.as_secs_f64() * 1000.0)
            .collect(),
    );
    let with = median(at_largest.iter().map(|seen| seen.with_trigger).collect());
    let without = median(at_largest.iter().map(|seen| seen.without_trigger).collect());
    let max_connections: u64 = settings
        .iter()
        .find(|(name, _)| name == "max_connections")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(100);
    // Instances whose fan-out of the trigger-bound revocation rate takes one whole core.
    let instances_per_core = 1e6 / (with * per_notification).max(f64::EPSILON);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "From figure 8 (medians of its rounds, {largest} listeners). Every listening \
         instance costs PostgreSQL about {per_notification:.0} µs of CPU per revocation \
         (one notification delivered to its backend), and delivery p99 was \
         {p99_ms:.1} ms. Revocations commit at {with:.0}/s with the trigger's `NOTIFY` \
         against {without:.0}/s without it: the commit-time notify lock serialises \
         revoking transactions, so this rate does not grow with more instances or cores.\n"
    );
    let _ = writeln!(
        out,
        "- **When a fan-out tier is needed.** Connections run out first: an instance \
         holds {CONNECTIONS_PER_INSTANCE} connections by default (a pool of 4 and its \
         listener), so this server's `max_connections` of {max_connections} carries \
         about {} instances; beyond that the liveness pools must go through a pooler, \
         while the `LISTEN` connections cannot (transaction pooling does not keep \
         `LISTEN`), which is where one relay per host or a small fan-out tier (a few \
         listeners republishing to instances) takes over. CPU runs out next: at the \
         trigger-bound {with:.0} revocations/s, fan-out takes one PostgreSQL core at \
         about {instances_per_core:.0} listening instances.",
        max_connections / CONNECTIONS_PER_INSTANCE
    );
    for factor in [10.0_f64, 100.0] {
        let instances = largest as f64 * factor;
        let core_share = with * instances * per_notification / 1e6;
        let _ = writeln!(
            out,
            "- **{factor:.0}× the instances ({instances:.0}).** Each revocation costs about \
             {:.1} ms of PostgreSQL CPU; at {with:.0} revocations/s that is {core_share:.1} \
             cores of fan-out alone, and {:.0} listener connections: a fan-out tier is \
             required.",
            instances * per_notification / 1000.0,
            instances,
        );
    }
    let _ = writeln!(
        out,
        "- **10× and 100× the revocation rate.** The rate is capped near {with:.0}/s by \
         the notify lock on this setup, whatever the instances: a tenfold rate needs \
         batching revocations into fewer transactions (one `NOTIFY` per commit) or a \
         faster commit path; measuring it on the target hardware comes first.\n"
    );
    out.push_str("PostgreSQL as measured (the figures assume this setup: one primary, on the same machine as the services, over loopback):\n\n| setting | value |\n|---|---|\n");
    for (name, value) in settings {
        let _ = writeln!(out, "| `{name}` | {value} |");
    }
    out
}

/// How many more connections the server takes, less [`SPARE_CONNECTIONS`] and the
/// throughput phase's writers.
async fn connection_room(client: &tokio_postgres::Client) -> Result<usize> {
    let row = client
        .query_one(
            "SELECT current_setting('max_connections')::int8 \
                  - current_setting('superuser_reserved_connections')::int8 \
                  - (SELECT count(*) FROM pg_stat_activity)",
            &[],
        )
        .await?;
    let free = usize::try_from(row.get::<_, i64>(0).max(0))?;
    Ok(free.saturating_sub(SPARE_CONNECTIONS + usize::try_from(WRITERS)?))
}

/// `total` split into `parts` near-equal shares, none empty.
fn shares(total: usize, parts: usize) -> Vec<usize> {
    let parts = parts.min(total).max(1);
    (0..parts)
        .map(|index| total / parts + usize::from(index < total % parts))
        .collect()
}

/// Revokes [`REVOCATIONS`] sessions one at a time and waits for every listener to get
/// each: the delivery times, how many never came, and PostgreSQL's CPU over it all.
async fn revoke_one_at_a_time(
    client: &tokio_postgres::Client,
    listeners: &mut [(Child, u64)],
    size: usize,
    next_session: &mut u64,
) -> Result<(Vec<Duration>, u64, Duration)> {
    let backends = cpu::database_backends(client).await?;
    let before: Vec<_> = backends
        .iter()
        .map(|&pid| cpu::run_time(pid).ok())
        .collect();
    let mut samples = Vec::with_capacity(size * usize::try_from(REVOCATIONS)?);
    let mut missing = 0;
    for _ in 0..REVOCATIONS {
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
fn parse_notified(line: &str) -> Result<(&str, SystemTime)> {
    let (payload, nanos) = line
        .split_once(' ')
        .ok_or_else(|| format!("malformed notified line {line:?}"))?;
    let nanos: u64 = nanos.parse()?;
    Ok((payload, UNIX_EPOCH + Duration::from_nanos(nanos)))
}

/// Revoking transactions on [`WRITERS`] connections for `phase`: transactions per
/// second.
async fn revoke_concurrently(db: &TestDb, phase: Duration) -> Result<f64> {
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let client = db.connect().await;
        writers.push(tokio::spawn(async move {
            let deadline = Instant::now() + phase;
            let mut done = 0_usize;
            while Instant::now() < deadline {
                let index = THROUGHPUT_FIRST
                    + writer
                    + WRITERS * (u64::try_from(done).unwrap_or(0) % THROUGHPUT_ROWS_PER_WRITER);
                let id: uuid::Uuid = seed::session_id(index).parse()?;
                client
                    .execute(
                        "UPDATE sessions SET idle_expires_at = idle_expires_at - interval '1 second' \
                         WHERE id = $1",
                        &[&id],
                    )
                    .await?;
                done += 1;
            }
            Ok::<_, crate::Error>(done)
        }));
    }
    let started = Instant::now();
    let mut total = 0;
    for writer in writers {
        total += writer.await??;
    }
    Ok(per_second(total, started.elapsed().max(phase)))
}

fn record_delivery(
    round: &mut Round,
    size: usize,
    samples: &[Duration],
    missing: u64,
    database_cpu: Duration,
) {
    round.latency(
        format!("{size} listeners: notification p50"),
        nearest_rank(samples, 500),
    );
    round.latency(
        format!("{size} listeners: notification p99"),
        nearest_rank(samples, 990),
    );
    round.latency(
        format!("{size} listeners: notification max"),
        samples.last().copied(),
    );
    round.value(
        format!("{size} listeners: PostgreSQL CPU per revocation"),
        cpu::micros_each(database_cpu, usize::try_from(REVOCATIONS).unwrap_or(1)),
        Unit::Micros,
    );
    round.value(
        format!("{size} listeners: PostgreSQL CPU per delivered notification"),
        cpu::micros_each(database_cpu, samples.len()),
        Unit::Micros,
    );
    round
        .count(
            format!("{size} listeners: notifications not delivered within 5 s"),
            missing,
        )
        .target(crate::report::Target::AtMost(0.0));
}

/// `listen`: the child side. Opens `--connections` connections, each `LISTEN`ing, says
/// `listening <count>`, then prints `notified <payload> <unix nanoseconds>` for every
/// notification of a session numbered below `--report-below` (the others, the
/// throughput phase's, are received and dropped), until standard input closes.
pub(crate) async fn listen(args: &Args) -> Result<()> {
    let config: tokio_postgres::Config = args.required("database-url")?.parse()?;
    let count: usize = args.number("connections", 1)?;
    let report_below: u64 = args.number("report-below", u64::MAX)?;
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel::<(String, u128)>();
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        let (client, mut connection) = config.connect(NoTls).await?;
        let sender = sender.clone();
        tokio::spawn(async move {
            let mut messages =
                futures_util::stream::poll_fn(move |context| connection.poll_message(context));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(notification) = message {
                    let at = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |elapsed| elapsed.as_nanos());
                    if sender
                        .send((notification.payload().to_owned(), at))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        clients.push(client);
    }
    drop(sender);
    println!("listening {count}");
    let stdin_closed = crate::child::stdin_closed();
    tokio::pin!(stdin_closed);
    loop {
        tokio::select! {
            () = &mut stdin_closed => return Ok(()),
            message = received.recv() => match message {
                Some((payload, at)) if seed::session_index(&payload).is_some_and(|index| index < report_below) => {
                    println!("notified {payload} {at}");
                }
                Some(_) => {}
                None => return Ok(()),
            },
        }
    }
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
    fn scaling_out_uses_the_largest_size() {
        let seen = |size, micros, with| Observed {
            size,
            micros_per_notification: micros,
            p99: Duration::from_millis(10),
            with_trigger: with,
            without_trigger: 1_000.0,
        };
        let text = scaling_out(
            &[seen(3, 500.0, 300.0), seen(50, 100.0, 200.0)],
            &[("max_connections".to_owned(), "100".to_owned())],
        );
        assert!(text.contains("50 listeners"), "{text}");
        assert!(text.contains("about 100 µs"), "{text}");
        // 1e6 / (200 * 100): the instances whose fan-out takes one core.
        assert!(text.contains("about 50 listening instances"), "{text}");
        assert!(text.contains("about 20 instances"), "{text}");
        assert!(scaling_out(&[], &[]).is_empty());
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
