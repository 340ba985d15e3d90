//! Figure 8, revocation fan-out: how the one-`LISTEN`-connection-per-instance design
//! scales with the number of instances, and what the trigger's `NOTIFY` costs the
//! revoking transactions while refreshes run.
//!
//! The figure runs on a PostgreSQL cluster of its own ([`PrivateCluster`]), configured
//! like a real server as far as durability goes and with connections for 200 listeners;
//! only when none can be started does it fall back to the shared server, shrinking the
//! sizes to what that server's `max_connections` leaves.
//!
//! Instances are simulated by listener connections (`LISTEN session_revoked`, what
//! `PostgresLiveness` opens), spread over a few child processes
//! (`portcullis-bench listen --database-url ... --connections N`). For 3, 50 and 200
//! listeners: sessions are revoked one at a time by plain SQL, and each child reports
//! when each of its connections got the notification; PostgreSQL's CPU over those
//! revocations is shared out per revocation. Then, with the same listeners connected,
//! concurrent revoking transactions and refresh transactions run side by side for a
//! bounded time with the trigger enabled, and again with it disabled.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::child::Child;
use crate::cli::Args;
use crate::fleet::{
    CLUSTER_SETTINGS, ClusterSpec, DELIVERY_LIMIT, POPULATION, PROCESSES, Placement, REFRESHERS,
    REVOCATIONS, SPARE_CONNECTIONS, START_TIMEOUT, Server, THROUGHPUT_FIRST, Throughput, Trigger,
    WRITERS, revoke_one_at_a_time, shares, throughput,
};
use crate::load::nearest_rank;
use crate::report::{Round, Section, Unit};
use crate::seed;
use crate::{Result, Settings, cpu};

/// Listener counts measured.
const SIZES: [usize; 3] = [3, 50, 200];
/// The largest of [`SIZES`].
const LARGEST: usize = SIZES[SIZES.len() - 1];
/// The channel `PostgresLiveness` listens on (the migrations' trigger notifies it).
const CHANNEL: &str = portcullis::DEFAULT_CHANNEL;
/// Connections one layer instance holds by default: its liveness pool and its listener.
const CONNECTIONS_PER_INSTANCE: u64 = 4 + 1;
/// The private cluster's `max_connections`: the largest size, the writers and the
/// refreshers, and [`SPARE_CONNECTIONS`] twice over (once kept free by
/// [`connection_room`], once for the superuser reservation, the background processes
/// `pg_stat_activity` lists and the harness's own connections).
const CLUSTER_MAX_CONNECTIONS: u64 =
    LARGEST as u64 + WRITERS + REFRESHERS + 2 * SPARE_CONNECTIONS as u64;
/// The database the figure creates in its private cluster.
const CLUSTER_DATABASE: &str = "portcullis_bench_fanout";

/// How the figure is measured, for BENCHMARKS.md.
fn method() -> String {
    let [small, middle, large] = SIZES;
    let limit = DELIVERY_LIMIT.as_secs();
    let durability: Vec<String> = CLUSTER_SETTINGS
        .iter()
        .map(|(name, value)| format!("`{name} = {value}`"))
        .collect();
    format!(
        "The figure runs on a PostgreSQL cluster of its own, which the harness starts \
         (`portcullis_testdb::PrivateCluster`: `initdb` into a temporary folder on this \
         machine's disk, the project's migrations applied) with a real server's \
         durability and PostgreSQL's default buffers ({}) and `max_connections = \
         {CLUSTER_MAX_CONNECTIONS}`, room for {large} listeners, the writers and \
         refreshers below and spare. Only when no cluster can be started does it run on \
         the shared server, with the sizes shrunk to what its `max_connections` leaves \
         (keeping {SPARE_CONNECTIONS} free): a note says so, and why. Instances are \
         simulated by listener connections: {small}, {middle} and then {large} \
         connections, each `LISTEN {CHANNEL}` as `PostgresLiveness` does, spread over \
         {PROCESSES} child processes of the harness. {REVOCATIONS} sessions are revoked \
         one at a time by an `UPDATE sessions SET revoked_at = now()` (the trigger sends \
         the `NOTIFY`); a sample is the time from just before the statement was sent \
         until a listener got the notification (wall clocks of the same machine), one per \
         listener and revocation; a listener that has not got it after {limit} s is \
         counted. PostgreSQL CPU per revocation is the time on CPU of every backend of \
         the run's database over those {REVOCATIONS} revocations \
         (`/proc/<pid>/schedstat`, to the nanosecond: each backend's share is far below a \
         clock tick), divided by {REVOCATIONS} (the listeners' backends are where the \
         fan-out is paid). Then, with the same listeners connected, {WRITERS} connections \
         run single-row revoking transactions (a prepared `UPDATE` that moves \
         `idle_expires_at` earlier, which the trigger notifies) while {REFRESHERS} more \
         run refresh transactions, each on a session of its own that no writer touches \
         (the prepared `session_guard_refresh` call of the server and of figure 2, a real \
         rotation every time: it rotates the session's refresh hash and generation and \
         moves `idle_expires_at` later, which does not notify). Both run for half a load \
         phase with the trigger enabled, and half a phase with it disabled (`ALTER TABLE \
         ... DISABLE TRIGGER`), every connection bounded in time and in transactions; \
         revocations/s and refreshes/s are each half's committed transactions over its \
         wall time. The ratio of the revocation rates is the price of the `NOTIFY`, whose \
         commit-time queue lock serialises the notifying transactions' commits.",
        durability.join(", ")
    )
}

/// Runs figure 8 for `settings.rounds` rounds.
pub(crate) async fn run(settings: Settings) -> Result<Section> {
    let server = Server::start(ClusterSpec {
        figure: "fan-out",
        database: CLUSTER_DATABASE,
        max_connections: CLUSTER_MAX_CONNECTIONS,
    })
    .await;
    let client = server.connect().await;
    POPULATION.seed(&client).await?;
    let mut section = Section::new("8. Revocation fan-out", method());
    let room = connection_room(&client).await?;
    let mut sizes: Vec<usize> = SIZES.iter().map(|&size| size.min(room)).collect();
    sizes.dedup();
    let shrunk = (sizes != SIZES).then(|| {
        format!(
            "its max_connections leaves room for {room} listeners (keeping \
             {SPARE_CONNECTIONS} free), so the sizes ran were {sizes:?} instead of {SIZES:?}"
        )
    });
    match (&server, shrunk) {
        (Server::Shared { why, .. }, shrunk) => section.notes.push(format!(
            "The figure ran on the shared server, not on a private cluster ({why}){}",
            shrunk.map_or_else(String::new, |shrunk| format!(": {shrunk}"))
        )),
        (Server::Private { .. }, Some(shrunk)) => section
            .notes
            .push(format!("On the private cluster, {shrunk}")),
        (Server::Private { .. }, None) => {}
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
                    server.url(),
                    "--connections".to_owned(),
                    share.to_string(),
                    "--report-below".to_owned(),
                    THROUGHPUT_FIRST.to_string(),
                ])?;
                child.line_after("listening", START_TIMEOUT).await?;
                listeners.push((child, u64::try_from(share)?));
            }
            let (samples, missing, database_cpu) =
                revoke_one_at_a_time(&client, &mut listeners, None, &mut next_session).await?;
            record_delivery(&mut round, size, &samples, missing, database_cpu);
            let delivered = cpu::micros_each(database_cpu, samples.len());
            let p99 = nearest_rank(&samples, 990).unwrap_or_default();
            let bounds = (settings.duration / 2, settings.max_requests_per_worker);
            let with = throughput(&server, bounds).await?;
            Trigger::Disabled.set(&client).await?;
            let without = throughput(&server, bounds).await;
            Trigger::Enabled.set(&client).await?;
            let without = without?;
            record_throughput(&mut round, size, with, without);
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
    section.conclusion = scaling_out(
        &observed,
        &server_settings(&client).await?,
        server.placement(),
    );
    Ok(section)
}

/// One size in one round, for the scaling-out section.
#[derive(Debug, Clone, Copy)]
struct Observed {
    size: usize,
    micros_per_notification: f64,
    p99: Duration,
    with_trigger: Throughput,
    without_trigger: Throughput,
}

/// The PostgreSQL settings the figures assume, as the server shows them (with their
/// units); a setting this version does not have is left out.
async fn server_settings(client: &tokio_postgres::Client) -> Result<Vec<(String, String)>> {
    let mut settings = Vec::new();
    for name in [
        "server_version",
        "max_connections",
        "shared_buffers",
        "synchronous_commit",
        "fsync",
        "full_page_writes",
        "max_notify_queue_pages",
    ] {
        let value: Option<String> = client
            .query_one("SELECT current_setting($1, true)", &[&name])
            .await?
            .get(0);
        if let Some(value) = value {
            settings.push((name.to_owned(), value));
        }
    }
    Ok(settings)
}

/// The median over the rounds of `measure` at `size` listeners (NaN when none ran).
fn median_at(observed: &[Observed], size: usize, measure: fn(&Observed) -> f64) -> f64 {
    median(
        observed
            .iter()
            .filter(|seen| seen.size == size)
            .map(measure)
            .collect(),
    )
}

/// The median of `values` (NaN when empty).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Below this ratio of revocations/s with the trigger to without it, the notify lock is
/// what bounds the revocation rate.
const NOTIFY_BOUND: f64 = 0.8;

/// What the figure predicts for more instances and more revocations, in Markdown, with
/// the settings of the server it ran on (`placement`).
#[allow(
    clippy::cast_precision_loss,
    reason = "instance counts stay far below 2^52"
)]
fn scaling_out(
    observed: &[Observed],
    settings: &[(String, String)],
    placement: Placement,
) -> String {
    use std::fmt::Write as _;
    let Some(largest) = observed.iter().map(|seen| seen.size).max() else {
        return String::new();
    };
    let smallest = observed
        .iter()
        .map(|seen| seen.size)
        .min()
        .unwrap_or(largest);
    let of_largest = |measure: fn(&Observed) -> f64| median_at(observed, largest, measure);
    let per_notification = of_largest(|seen| seen.micros_per_notification);
    let p99_ms = of_largest(|seen| seen.p99.as_secs_f64() * 1000.0);
    let with = of_largest(|seen| seen.with_trigger.revocations);
    let without = of_largest(|seen| seen.without_trigger.revocations);
    let refreshes = of_largest(|seen| seen.with_trigger.refreshes);
    let ratio = of_largest(|seen| {
        seen.with_trigger.revocations / seen.without_trigger.revocations.max(f64::EPSILON)
    });
    let notify_bound = ratio < NOTIFY_BOUND;
    let with_smallest = median_at(observed, smallest, |seen| seen.with_trigger.revocations);
    let falls = if with_smallest > with {
        format!(
            " It falls as listeners are added ({with_smallest:.0}/s at {smallest} \
             listeners): every notifying commit signals each listening backend, and their \
             deliveries share this machine's cores."
        )
    } else {
        String::new()
    };
    let max_connections: u64 = settings
        .iter()
        .find(|(name, _)| name == "max_connections")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(100);
    // Instances whose fan-out of the measured revocation rate takes one whole core.
    let instances_per_core = 1e6 / (with * per_notification).max(f64::EPSILON);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "From figure 8 (medians of its rounds, {largest} listeners). Every listening \
         instance costs PostgreSQL about {per_notification:.0} µs of CPU per revocation \
         (one notification delivered to its backend), and delivery p99 was \
         {p99_ms:.1} ms. With {REFRESHERS} connections refreshing alongside \
         ({refreshes:.0} refreshes/s), revocations commit at {with:.0}/s with the \
         trigger's `NOTIFY` against {without:.0}/s without it ({ratio:.2} of it): {}{falls}\n",
        if notify_bound {
            "the commit-time notify lock serialises the revoking transactions' commits, \
             so this rate does not grow with more instances or cores."
        } else {
            "on this setup the `NOTIFY` costs little of the commit rate, but the \
             commit-time notify lock still serialises every notifying commit, so the rate \
             will not grow with more cores."
        }
    );
    let _ = writeln!(
        out,
        "- **When a fan-out tier is needed.** Connections run out first: an instance \
         holds {CONNECTIONS_PER_INSTANCE} connections by default (a pool of 4 and its \
         listener), so a `max_connections` of {max_connections}, as on the server \
         measured, carries about {} instances; beyond that the liveness pools must go \
         through a pooler, while the `LISTEN` connections cannot (transaction pooling \
         does not keep `LISTEN`), which is where one relay per host or a small fan-out \
         tier (a few listeners republishing to instances) takes over. CPU runs out next: \
         at the measured {with:.0} revocations/s, fan-out takes one PostgreSQL core at \
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
        "- **10× and 100× the revocation rate.** {} whatever the instances: a tenfold \
         rate needs batching revocations into fewer transactions (one `NOTIFY` per \
         commit) or a faster commit path; measuring it on the target hardware comes \
         first.\n",
        if notify_bound {
            format!("The rate is capped near {with:.0}/s by the notify lock on this setup,")
        } else {
            format!(
                "The commit path caps the rate near {with:.0}/s on this setup (near \
                 {without:.0}/s without the `NOTIFY`),"
            )
        }
    );
    out.push_str(&settings_table(settings, placement));
    out
}

/// The server's settings as a Markdown table, with a line saying which server it was.
fn settings_table(settings: &[(String, String)], placement: Placement) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "PostgreSQL as measured ({}; the figures assume this setup: one primary, on the \
         same machine as the services, over loopback):\n\n| setting | value |\n|---|---|\n",
        match placement {
            Placement::Private => {
                "a private cluster the harness started for this figure, on this machine's \
                 disk, with a real server's durability"
            }
            Placement::Shared => {
                "the shared server: no private cluster could be started for this figure"
            }
        }
    );
    for (name, value) in settings {
        let _ = writeln!(out, "| `{name}` | {value} |");
    }
    out
}

/// How many more connections the server takes, less [`SPARE_CONNECTIONS`] and the
/// throughput phase's writers and refreshers.
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
    Ok(free.saturating_sub(SPARE_CONNECTIONS + usize::try_from(WRITERS + REFRESHERS)?))
}

/// Records both halves of the throughput phase for `size` listeners.
fn record_throughput(round: &mut Round, size: usize, with: Throughput, without: Throughput) {
    round.value(
        format!("{size} listeners: revocations/s with the trigger, refreshes running"),
        with.revocations,
        Unit::PerSecond,
    );
    round.value(
        format!("{size} listeners: revocations/s without it, refreshes running"),
        without.revocations,
        Unit::PerSecond,
    );
    round.value(
        format!("{size} listeners: revocations with / without the trigger"),
        with.revocations / without.revocations.max(f64::EPSILON),
        Unit::Ratio,
    );
    round.value(
        format!("{size} listeners: refreshes/s beside them, with the trigger"),
        with.refreshes,
        Unit::PerSecond,
    );
    round.value(
        format!("{size} listeners: refreshes/s beside them, without it"),
        without.refreshes,
        Unit::PerSecond,
    );
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
    fn scaling_out_uses_the_largest_size() {
        let seen = |size, micros, with| Observed {
            size,
            micros_per_notification: micros,
            p99: Duration::from_millis(10),
            with_trigger: Throughput {
                revocations: with,
                refreshes: 700.0,
            },
            without_trigger: Throughput {
                revocations: 1_000.0,
                refreshes: 900.0,
            },
        };
        let settings = [("max_connections".to_owned(), "100".to_owned())];
        let text = scaling_out(
            &[seen(3, 500.0, 300.0), seen(50, 100.0, 200.0)],
            &settings,
            Placement::Private,
        );
        assert!(text.contains("50 listeners"), "{text}");
        assert!(text.contains("about 100 µs"), "{text}");
        // 1e6 / (200 * 100): the instances whose fan-out takes one core.
        assert!(text.contains("about 50 listening instances"), "{text}");
        assert!(text.contains("about 20 instances"), "{text}");
        assert!(text.contains("(700 refreshes/s)"), "{text}");
        assert!(text.contains("(0.20 of it)"), "{text}");
        assert!(
            text.contains("capped near 200/s by the notify lock"),
            "{text}"
        );
        assert!(
            text.contains("a private cluster the harness started"),
            "{text}"
        );
        assert!(scaling_out(&[], &[], Placement::Shared).is_empty());
    }

    #[test]
    fn scaling_out_says_when_the_notify_costs_little() {
        let seen = Observed {
            size: 200,
            micros_per_notification: 10.0,
            p99: Duration::from_millis(10),
            with_trigger: Throughput {
                revocations: 950.0,
                refreshes: 500.0,
            },
            without_trigger: Throughput {
                revocations: 1_000.0,
                refreshes: 500.0,
            },
        };
        let text = scaling_out(&[seen], &[], Placement::Shared);
        assert!(text.contains("costs little"), "{text}");
        assert!(!text.contains("by the notify lock on this setup"), "{text}");
        assert!(
            text.contains("no private cluster could be started"),
            "{text}"
        );
    }
}
