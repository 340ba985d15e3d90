//! Figure 9, revocation fan-out on NATS: the same questions as figure 8 ([`fanout`]) with
//! the NATS `JetStream` feed instead of `LISTEN`. The database writes each revocation
//! once to its revocation log and sends no `NOTIFY`; one [`NatsRelay`] in the harness
//! publishes the log to a `nats-server` of the figure's own, and every simulated
//! instance reads the stream with a [`NatsRevocationFeed`].
//!
//! Instances are [`NatsRevocationFeed`]s, each with its own NATS connection and ordered
//! consumer, spread over a few child processes
//! (`portcullis-bench subscribe --nats-url ... --feeds N`). For 3, 200 and 1,000 of them:
//! sessions are revoked one at a time by plain SQL at a steady pace, each child reports
//! when each of its feeds yielded the revocation, and PostgreSQL's CPU over those
//! revocations (the relay's backend among the others) is shared out per revocation.
//! Then, with the same feeds subscribed, figure 8's throughput phase runs with the
//! revocation trigger on (logging every revocation for the relay) and off.
//!
//! [`fanout`]: crate::fanout

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis::nats::{
    NatsFeedConfig, NatsRelay, NatsRelayHandle, NatsRevocationFeed, RELAY_LOCK_KEY,
};
use portcullis::postgres::{DatabaseConfig, RevocationFeedKind, RevocationLog};
use portcullis::{FeedEvent, Revocation, RevocationFeed as _};
use portcullis_testdb::NatsServer;

use crate::child::Child;
use crate::cli::Args;
use crate::fleet::{
    CLUSTER_SETTINGS, ClusterSpec, DELIVERY_LIMIT, POPULATION, PROCESSES, REFRESHERS, REVOCATIONS,
    SPARE_CONNECTIONS, Server, THROUGHPUT_FIRST, Throughput, Trigger, WRITERS, parse_notified,
    revoke_one_at_a_time, shares, throughput,
};
use crate::load::nearest_rank;
use crate::report::{Round, Section, Target, Unit};
use crate::seed;
use crate::{Result, Settings, cpu};

/// Subscribed instances measured.
const SIZES: [usize; 3] = [3, 200, 1_000];
/// One revocation starts at most this often (start to start), at every size: the relay
/// polls the log on a clock, so its backend's CPU per revocation depends on the time
/// between revocations, which must not differ between sizes.
const PACE: Duration = Duration::from_millis(100);
/// How long a child may take to subscribe all its feeds.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the relay may take to become active.
const RELAY_TIMEOUT: Duration = Duration::from_secs(10);
/// The private cluster's `max_connections`: the writers and the refreshers, the relay,
/// and [`SPARE_CONNECTIONS`] twice over, as in figure 8 (no instance holds a connection
/// to be notified).
const CLUSTER_MAX_CONNECTIONS: u64 = WRITERS + REFRESHERS + 2 * SPARE_CONNECTIONS as u64 + 4;
/// The database the figure creates in its private cluster.
const CLUSTER_DATABASE: &str = "portcullis_bench_nats_fanout";
/// Delivery p99 at the largest size must stay below this.
const TARGET_P99: Duration = Duration::from_millis(10);
/// PostgreSQL CPU per revocation at the largest size over the smallest: at most this.
const TARGET_CPU_GROWTH: f64 = 1.5;
/// Revocations/s with the NATS feed over the same with the trigger off: at least this.
const TARGET_RATE_RATIO: f64 = 0.8;
/// From the active relay's death until revocations reach every feed again: at most this.
const TARGET_FAILOVER: Duration = Duration::from_secs(2);
/// Feeds subscribed during the failover.
const FAILOVER_FEEDS: usize = 3;
/// Sessions revoked during the failover, the active relay killed halfway.
const FAILOVER_REVOCATIONS: u64 = 100;
/// One failover revocation every this long: 2 s of revocations in all.
const FAILOVER_PACE: Duration = Duration::from_millis(20);
/// How long the standby relay is given to find the lock taken before the phase starts.
const STANDBY_SETTLE: Duration = Duration::from_secs(1);
/// The one-at-a-time revocation of the failover phase.
const REVOKE_SESSION: &str =
    "UPDATE sessions SET revoked_at = now(), revoked_reason = 'admin' WHERE id = $1";

/// How the figure is measured, for BENCHMARKS.md.
fn method() -> String {
    let [small, middle, large] = SIZES;
    let limit = DELIVERY_LIMIT.as_secs();
    let pace = PACE.as_millis();
    let failover_pace = FAILOVER_PACE.as_millis();
    let durability: Vec<String> = CLUSTER_SETTINGS
        .iter()
        .map(|(name, value)| format!("`{name} = {value}`"))
        .collect();
    format!(
        "Figure 8's setup with the NATS feed: a private PostgreSQL cluster ({}, \
         `max_connections = {CLUSTER_MAX_CONNECTIONS}`; the shared server with a note when \
         none can be started), migrated, seeded, its feed set to `nats` \
         (`RevocationLog::set_feed`: the trigger logs each revocation to \
         `session_guard_revocation_log` and sends no `NOTIFY`). The harness starts a \
         `nats-server -js` of its own (`portcullis_testdb::NatsServer`) and one \
         `NatsRelay` with its defaults (it polls the log every 10 ms when idle). Instances \
         are simulated by `NatsRevocationFeed`s, each with its own NATS connection and \
         ordered consumer as a layer instance has: {small}, {middle} and then {large}, \
         spread over {PROCESSES} child processes of the harness. {REVOCATIONS} sessions \
         are revoked one at a time by an `UPDATE sessions SET revoked_at = now()`, one \
         every {pace} ms at most (start to start, the same at every size, so that the \
         relay's polling costs the same per revocation); a sample is the time from just \
         before the statement was sent until a feed yielded the revocation (wall clocks \
         of the same machine), one per feed and revocation; a feed that has not yielded \
         it after {limit} s is counted. PostgreSQL CPU per revocation is the time on CPU \
         of every other backend of the run's database (the relay's among them; not the \
         revoking connection's own, as in figure 8) over those {REVOCATIONS} revocations \
         (`/proc/<pid>/schedstat`), divided by {REVOCATIONS}, and the relay's backend's \
         share of it apart (the backend holding the relay's advisory lock: it reads the \
         log, idle or not, every poll); the ratio of the largest size's to the smallest's \
         is taken within a round. Then, with the same feeds subscribed, figure 8's \
         throughput phase: {WRITERS} connections run single-row \
         revoking transactions while {REFRESHERS} run refresh transactions, half a load \
         phase with the trigger enabled (every revocation logged, relayed and fanned out \
         to every feed) and half with it disabled (nothing logged or sent); the ratio of \
         the revocation rates is what the NATS feed costs the revoking transactions. The \
         relay, the broker and the feeds share this machine's cores with PostgreSQL. \
         Last, relay failover: the harness's relay stops and two relays in child \
         processes take over (one active, one standing by); {FAILOVER_FEEDS} feeds \
         subscribe, {FAILOVER_REVOCATIONS} sessions are revoked one every \
         {failover_pace} ms, and the active relay's process is killed \
         (SIGKILL) halfway through. Reported: the time from the kill until the standby \
         says it is active, and until the first revocation sent after the kill reached \
         every feed; the deliveries that never came within {limit} s of the last \
         revocation are counted as lost.",
        durability.join(", ")
    )
}

/// Runs figure 9 for `settings.rounds` rounds; a section with a note and no rows when no
/// `nats-server` can be started.
pub(crate) async fn run(settings: Settings) -> Result<Section> {
    let mut section = Section::new("9. Revocation fan-out on NATS", method());
    let nats = match NatsServer::start().await {
        Ok(nats) => nats,
        Err(why) => {
            eprintln!("nats-fan-out: {why}; skipped");
            section.notes.push(format!("Not measured: {why}."));
            return Ok(section);
        }
    };
    let server = Server::start(ClusterSpec {
        figure: "nats-fan-out",
        database: CLUSTER_DATABASE,
        max_connections: CLUSTER_MAX_CONNECTIONS,
    })
    .await;
    if let Server::Shared { why, .. } = &server {
        section.notes.push(format!(
            "The figure ran on the shared server, not on a private cluster ({why})."
        ));
    }
    let client = server.connect().await;
    POPULATION.seed(&client).await?;
    RevocationLog::set_feed(&client, RevocationFeedKind::Nats).await?;
    let feed = NatsFeedConfig::new(nats.url());
    let database: DatabaseConfig = server.url().parse()?;
    let mut relay = start_relay(database.clone(), feed.clone()).await?;
    let mut next_session = 1;
    for round_index in 0..settings.rounds {
        let mut round = Round::default();
        let mut cpu_per_revocation = Vec::new();
        for size in SIZES {
            eprintln!(
                "nats-fan-out: round {}/{}, {size} subscribers ...",
                round_index + 1,
                settings.rounds
            );
            let mut subscribers = subscribe(&feed, size).await?;
            let relay_backend = RelayBackend::find(&client).await?;
            let (samples, missing, database_cpu) =
                revoke_one_at_a_time(&client, &mut subscribers, Some(PACE), &mut next_session)
                    .await?;
            let cpu = DatabaseCpu {
                all: database_cpu,
                relay: relay_backend.spent()?,
            };
            record_delivery(&mut round, size, &samples, missing, cpu);
            cpu_per_revocation.push(database_cpu);
            let bounds = (settings.duration / 2, settings.max_requests_per_worker);
            let with = throughput(&server, bounds).await?;
            Trigger::Disabled.set(&client).await?;
            let without = throughput(&server, bounds).await;
            Trigger::Enabled.set(&client).await?;
            record_throughput(&mut round, size, with, without?);
            drop(subscribers);
        }
        record_cpu_growth(&mut round, &cpu_per_revocation);
        round.note(format!(
            "the harness's relay published {} log rows so far ({} dropped as duplicates by \
             the broker)",
            relay.published(),
            relay.duplicates()
        ));
        // Two relays of their own take the log over for the failover, then this one again.
        drop(relay);
        eprintln!("nats-fan-out: relay failover ...");
        let failover = failover(&server, &feed, &mut next_session).await?;
        failover.record(&mut round);
        relay = start_relay(database.clone(), feed.clone()).await?;
        section.push(round);
    }
    drop(relay);
    Ok(section)
}

/// What the relay failover phase saw.
#[derive(Debug)]
struct Failover {
    /// From the kill until the standby said it was active.
    takeover: Option<Duration>,
    /// From the kill until the first revocation sent after it had reached every feed.
    flowing_again: Option<Duration>,
    /// The longest delivery of any revocation of the phase.
    longest: Option<Duration>,
    /// Deliveries (feed and revocation) that never came.
    lost: u64,
}

impl Failover {
    fn record(&self, round: &mut Round) {
        round.latency(
            "failover: relay killed until the standby is active",
            self.takeover,
        );
        if let Some(flowing) = round.latency(
            "failover: relay killed until revocations reach every feed again",
            self.flowing_again,
        ) {
            flowing.target(Target::AtMost(TARGET_FAILOVER.as_secs_f64() * 1000.0));
        }
        round.latency("failover: longest delivery of the phase", self.longest);
        round
            .count("failover: deliveries lost", self.lost)
            .target(Target::AtMost(0.0));
    }
}

/// Relay failover: two relays in child processes (one active, one standing by),
/// [`FAILOVER_FEEDS`] feeds subscribed, [`FAILOVER_REVOCATIONS`] sessions revoked one
/// every [`FAILOVER_PACE`] by a connection of their own, and the active relay killed
/// halfway through; then every delivery is waited for up to [`DELIVERY_LIMIT`] after
/// the last revocation.
async fn failover(
    server: &Server,
    feed: &NatsFeedConfig,
    next_session: &mut u64,
) -> Result<Failover> {
    let active = start_relay_child(server, feed).await?;
    let mut standby = start_relay_child_standing_by(server, feed).await?;
    let mut subscribers = subscribe(feed, FAILOVER_FEEDS).await?;
    let first = *next_session;
    *next_session += FAILOVER_REVOCATIONS;
    let revoker = tokio::spawn(revoke_paced(server.connect().await, first));
    tokio::time::sleep(FAILOVER_PACE * u32::try_from(FAILOVER_REVOCATIONS / 2)?).await;
    let killed = SystemTime::now();
    // Killed (SIGKILL) when dropped: its PostgreSQL session ends, and the lock with it.
    drop(active);
    let deliveries = collect_deliveries(
        &mut subscribers,
        FAILOVER_REVOCATIONS,
        FAILOVER_PACE * u32::try_from(FAILOVER_REVOCATIONS / 2)? + DELIVERY_LIMIT,
    )
    .await;
    let sent = revoker.await??;
    let takeover = standby
        .line_after("active", RELAY_TIMEOUT)
        .await
        .ok()
        .and_then(|line| crate::fleet::parse_time(&line).ok())
        .map(|at| at.duration_since(killed).unwrap_or_default());
    Ok(summarise_failover(killed, &sent, &deliveries?, takeover))
}

/// Folds a failover phase: `sent` the revocations (session id, sent at), `deliveries`
/// every (session id, delivered at) the feeds printed.
fn summarise_failover(
    killed: SystemTime,
    sent: &[(String, SystemTime)],
    deliveries: &[(String, SystemTime)],
    takeover: Option<Duration>,
) -> Failover {
    let feeds = FAILOVER_FEEDS as u64;
    let mut lost = 0;
    let mut longest = None;
    let mut flowing_again = None;
    for (session, at) in sent {
        let arrived: Vec<SystemTime> = deliveries
            .iter()
            .filter(|(id, _)| id == session)
            .map(|&(_, at)| at)
            .collect();
        lost += feeds.saturating_sub(arrived.len() as u64);
        let Some(latest) = arrived.iter().max() else {
            continue;
        };
        longest = longest.max(Some(latest.duration_since(*at).unwrap_or_default()));
        if flowing_again.is_none() && *at >= killed && arrived.len() as u64 >= feeds {
            flowing_again = Some(latest.duration_since(killed).unwrap_or_default());
        }
    }
    Failover {
        takeover,
        flowing_again,
        longest,
        lost,
    }
}

/// Revokes [`FAILOVER_REVOCATIONS`] sessions from number `first` on, one every
/// [`FAILOVER_PACE`] (start to start): each session's id and when its statement was
/// sent.
async fn revoke_paced(
    client: tokio_postgres::Client,
    first: u64,
) -> Result<Vec<(String, SystemTime)>> {
    let statement = client.prepare(REVOKE_SESSION).await?;
    let mut pace = tokio::time::interval(FAILOVER_PACE);
    let mut sent = Vec::new();
    for index in first..first + FAILOVER_REVOCATIONS {
        pace.tick().await;
        let id = seed::session_id(index);
        let uuid: uuid::Uuid = id.parse()?;
        let at = SystemTime::now();
        client.execute(&statement, &[&uuid]).await?;
        sent.push((id, at));
    }
    Ok(sent)
}

/// Reads `notified` lines from `subscribers` (each child with how many feeds it runs)
/// until each printed `revocations` per feed or `within` passed: (session id,
/// delivered at) of each.
async fn collect_deliveries(
    subscribers: &mut [(Child, u64)],
    revocations: u64,
    within: Duration,
) -> Result<Vec<(String, SystemTime)>> {
    // Lines a child printed before the deadline are still read after it.
    const GRACE: Duration = Duration::from_millis(100);
    let deadline = tokio::time::Instant::now() + within;
    let mut deliveries = Vec::new();
    for (subscriber, feeds) in subscribers.iter_mut() {
        for _ in 0..*feeds * revocations {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Ok(line) = subscriber.line_after("notified", left.max(GRACE)).await else {
                break;
            };
            let (session, at) = parse_notified(&line)?;
            deliveries.push((session.to_owned(), at));
        }
    }
    Ok(deliveries)
}

/// A relay in a child process (`portcullis-bench relay`), once it is the active one.
async fn start_relay_child(server: &Server, feed: &NatsFeedConfig) -> Result<Child> {
    let mut child = spawn_relay_child(server, feed)?;
    child.line_after("active", RELAY_TIMEOUT).await?;
    Ok(child)
}

/// A relay in a child process standing by: started, and given time to find the lock
/// taken.
async fn start_relay_child_standing_by(server: &Server, feed: &NatsFeedConfig) -> Result<Child> {
    let mut child = spawn_relay_child(server, feed)?;
    child.line_after("started", RELAY_TIMEOUT).await?;
    tokio::time::sleep(STANDBY_SETTLE).await;
    Ok(child)
}

fn spawn_relay_child(server: &Server, feed: &NatsFeedConfig) -> Result<Child> {
    Child::spawn([
        "relay".to_owned(),
        "--database-url".to_owned(),
        server.url(),
        "--nats-url".to_owned(),
        feed.url.clone(),
    ])
}

/// `relay`: the child side. Runs a [`NatsRelay`] from `--database-url`'s log to the
/// default stream at `--nats-url`, says `started`, then `active <unix nanoseconds>` each
/// time it becomes the active relay, until standard input closes.
pub(crate) async fn relay_child(args: &Args) -> Result<()> {
    let database: DatabaseConfig = args.required("database-url")?.parse()?;
    let relay = NatsRelay::new(database, NatsFeedConfig::new(args.required("nats-url")?)).start();
    println!("started");
    let stdin_closed = crate::child::stdin_closed();
    tokio::pin!(stdin_closed);
    let mut check = tokio::time::interval(Duration::from_millis(5));
    let mut activations = 0;
    loop {
        tokio::select! {
            () = &mut stdin_closed => return Ok(()),
            _ = check.tick() => {
                if relay.activations() > activations && relay.is_active() {
                    activations = relay.activations();
                    println!("active {}", now_nanos());
                }
            }
        }
    }
}

/// Now, in nanoseconds since the Unix epoch.
fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos())
}

/// PostgreSQL's CPU over the one-at-a-time revocations of one size.
#[derive(Debug, Clone, Copy)]
struct DatabaseCpu {
    /// Every backend of the database but the revoking connection's.
    all: Duration,
    /// The active relay's backend, one of them.
    relay: Duration,
}

/// The active relay's PostgreSQL backend, and its CPU time when found.
struct RelayBackend {
    pid: u32,
    before: Duration,
}

impl RelayBackend {
    /// The backend of the active relay (the one holding [`RELAY_LOCK_KEY`]).
    async fn find(client: &tokio_postgres::Client) -> Result<Self> {
        let pid: i32 = client
            .query_one(
                "SELECT pid FROM pg_locks \
                  WHERE locktype = 'advisory' AND granted \
                    AND ((classid::int8 << 32) | objid::int8) = $1",
                &[&RELAY_LOCK_KEY],
            )
            .await?
            .get(0);
        let pid = u32::try_from(pid)?;
        Ok(Self {
            pid,
            before: cpu::run_time(pid)?,
        })
    }

    /// Its CPU time since it was found.
    fn spent(&self) -> Result<Duration> {
        Ok(cpu::run_time(self.pid)?.saturating_sub(self.before))
    }
}

/// Starts a relay from `database`'s log to `feed`'s stream and waits until it is active.
pub(crate) async fn start_relay(
    database: DatabaseConfig,
    feed: NatsFeedConfig,
) -> Result<NatsRelayHandle> {
    let relay = NatsRelay::new(database, feed).start();
    let deadline = tokio::time::Instant::now() + RELAY_TIMEOUT;
    while !relay.is_active() {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("the relay was not active after {RELAY_TIMEOUT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(relay)
}

/// `size` feeds of `feed`'s stream spread over [`PROCESSES`] children, each child with
/// how many it runs, once every feed reads the stream.
async fn subscribe(feed: &NatsFeedConfig, size: usize) -> Result<Vec<(Child, u64)>> {
    let mut subscribers = Vec::with_capacity(PROCESSES);
    for share in shares(size, PROCESSES) {
        let child = Child::spawn([
            "subscribe".to_owned(),
            "--nats-url".to_owned(),
            feed.url.clone(),
            "--feeds".to_owned(),
            share.to_string(),
            "--report-below".to_owned(),
            THROUGHPUT_FIRST.to_string(),
        ])?;
        subscribers.push((child, u64::try_from(share)?));
    }
    // The children subscribe side by side.
    for (child, _) in &mut subscribers {
        child.line_after("subscribed", SUBSCRIBE_TIMEOUT).await?;
    }
    Ok(subscribers)
}

/// Records the one-at-a-time revocations at `size` subscribers: delivery latencies (the
/// p99 at the largest size against its target), PostgreSQL CPU per revocation, and the
/// deliveries that never came.
fn record_delivery(
    round: &mut Round,
    size: usize,
    samples: &[Duration],
    missing: u64,
    cpu: DatabaseCpu,
) {
    round.latency(
        format!("{size} subscribers: delivery p50"),
        nearest_rank(samples, 500),
    );
    let p99 = round.latency(
        format!("{size} subscribers: delivery p99"),
        nearest_rank(samples, 990),
    );
    if let (Some(p99), true) = (p99, size == SIZES[SIZES.len() - 1]) {
        p99.target(Target::Below(TARGET_P99.as_secs_f64() * 1000.0));
    }
    round.latency(
        format!("{size} subscribers: delivery max"),
        samples.last().copied(),
    );
    let revocations = usize::try_from(REVOCATIONS).unwrap_or(1);
    round.value(
        format!("{size} subscribers: PostgreSQL CPU per revocation"),
        cpu::micros_each(cpu.all, revocations),
        Unit::Micros,
    );
    round.value(
        format!("{size} subscribers: of which the relay's backend"),
        cpu::micros_each(cpu.relay, revocations),
        Unit::Micros,
    );
    round
        .count(
            format!(
                "{size} subscribers: deliveries missing after {} s",
                DELIVERY_LIMIT.as_secs()
            ),
            missing,
        )
        .target(Target::AtMost(0.0));
}

/// Records PostgreSQL CPU per revocation at the largest size over the smallest
/// (`cpu_per_revocation` in [`SIZES`] order).
fn record_cpu_growth(round: &mut Round, cpu_per_revocation: &[Duration]) {
    let (Some(smallest), Some(largest)) = (cpu_per_revocation.first(), cpu_per_revocation.last())
    else {
        return;
    };
    round
        .value(
            format!(
                "PostgreSQL CPU per revocation, {} over {} subscribers",
                SIZES[SIZES.len() - 1],
                SIZES[0]
            ),
            largest.as_secs_f64() / smallest.as_secs_f64().max(f64::EPSILON),
            Unit::Ratio,
        )
        .target(Target::AtMost(TARGET_CPU_GROWTH));
}

/// Records both halves of the throughput phase for `size` subscribers, the ratio of the
/// revocation rates against its target.
fn record_throughput(round: &mut Round, size: usize, with: Throughput, without: Throughput) {
    round.value(
        format!("{size} subscribers: revocations/s on the NATS feed, refreshes running"),
        with.revocations,
        Unit::PerSecond,
    );
    round.value(
        format!("{size} subscribers: revocations/s with the trigger off, refreshes running"),
        without.revocations,
        Unit::PerSecond,
    );
    round
        .value(
            format!("{size} subscribers: revocations on the NATS feed / trigger off"),
            with.revocations / without.revocations.max(f64::EPSILON),
            Unit::Ratio,
        )
        .target(Target::AtLeast(TARGET_RATE_RATIO));
    round.value(
        format!("{size} subscribers: refreshes/s beside them, NATS feed"),
        with.refreshes,
        Unit::PerSecond,
    );
    round.value(
        format!("{size} subscribers: refreshes/s beside them, trigger off"),
        without.refreshes,
        Unit::PerSecond,
    );
}

/// `subscribe`: the child side. Starts `--feeds` [`NatsRevocationFeed`]s of the stream
/// at `--nats-url`, says `subscribed <count>` once every one reads the stream, then
/// prints `notified <session id> <unix nanoseconds>` each time a feed yields the
/// revocation of a session numbered below `--report-below` (the others, the throughput
/// phase's, are received and dropped), until standard input closes.
pub(crate) async fn subscribe_child(args: &Args) -> Result<()> {
    let config = NatsFeedConfig::new(args.required("nats-url")?);
    let count: usize = args.number("feeds", 1)?;
    let report_below: u64 = args.number("report-below", u64::MAX)?;
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel::<(String, u128)>();
    let (ready, mut readied) = tokio::sync::mpsc::unbounded_channel::<()>();
    for _ in 0..count {
        tokio::spawn(read_feed(
            NatsRevocationFeed::new(config.clone()),
            ready.clone(),
            sender.clone(),
        ));
    }
    drop((ready, sender));
    let stdin_closed = crate::child::stdin_closed();
    tokio::pin!(stdin_closed);
    for _ in 0..count {
        tokio::select! {
            () = &mut stdin_closed => return Ok(()),
            subscribed = readied.recv() => if subscribed.is_none() {
                return Err("a feed stopped before it subscribed".into());
            },
        }
    }
    println!("subscribed {count}");
    loop {
        tokio::select! {
            () = &mut stdin_closed => return Ok(()),
            message = received.recv() => match message {
                Some((session, at)) if seed::session_index(&session).is_some_and(|index| index < report_below) => {
                    println!("notified {session} {at}");
                }
                Some(_) => {}
                None => return Ok(()),
            },
        }
    }
}

/// One simulated instance: reads `feed`, says on `ready` when it first reads the stream,
/// and sends every session revocation with the time it came (unix nanoseconds).
async fn read_feed(
    mut feed: NatsRevocationFeed,
    ready: tokio::sync::mpsc::UnboundedSender<()>,
    revoked: tokio::sync::mpsc::UnboundedSender<(String, u128)>,
) {
    let mut ready = Some(ready);
    while let Some(event) = feed.next_event().await {
        match event {
            FeedEvent::Connected => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            FeedEvent::Revoked(Revocation::Session { session }) => {
                let Ok(()) = revoked.send((session.to_string(), now_nanos())) else {
                    return;
                };
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_counts_lost_deliveries_and_the_first_after_the_kill() {
        let at = |millis| UNIX_EPOCH + Duration::from_millis(millis);
        let killed = at(1_000);
        let sent = vec![
            ("a".to_owned(), at(900)),
            ("b".to_owned(), at(1_010)),
            ("c".to_owned(), at(1_020)),
        ];
        let mut deliveries = Vec::new();
        for feed in 0..FAILOVER_FEEDS as u64 {
            deliveries.push(("a".to_owned(), at(905 + feed)));
            deliveries.push(("b".to_owned(), at(1_300 + feed)));
            // One feed never gets "c".
            if feed > 0 {
                deliveries.push(("c".to_owned(), at(1_301)));
            }
        }
        let failover = summarise_failover(killed, &sent, &deliveries, None);
        assert_eq!(failover.lost, 1);
        let last_b = 1_300 + FAILOVER_FEEDS as u64 - 1;
        assert_eq!(
            failover.flowing_again,
            Some(Duration::from_millis(last_b - 1_000))
        );
        assert_eq!(
            failover.longest,
            Some(Duration::from_millis(last_b - 1_010))
        );
    }

    #[test]
    fn cpu_growth_is_largest_over_smallest() {
        let mut round = Round::default();
        record_cpu_growth(
            &mut round,
            &[
                Duration::from_micros(100),
                Duration::from_micros(120),
                Duration::from_micros(150),
            ],
        );
        let mut section = Section::new("9", "");
        section.push(round);
        let rows = section.rows();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].met(), Some(true));
        assert!(
            rows[0].median_text().starts_with("1.5"),
            "{}",
            rows[0].median_text()
        );
    }
}
