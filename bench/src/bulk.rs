//! Figure 10, a bulk revocation: `portcullis-server sessions revoke --all-users` over a
//! million live sessions, on each feed. The command is one statement
//! (`session_guard_revoke_sessions_before`), one row of the revocation log and one message
//! to the instances, however many sessions it ends; the figure times the command and the
//! message, and counts the rows and messages.

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use portcullis::nats::{NatsFeedConfig, NatsRevocationFeed};
use portcullis::postgres::{DatabaseConfig, RevocationFeedKind, RevocationLog};
use portcullis::{FeedEvent, Revocation, RevocationFeed as _};
use portcullis_testdb::{NatsServer, TestDb};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::report::{Round, Section, Target, Unit};
use crate::seed::Population;
use crate::{Result, Settings};

/// The sessions ended, over this many users.
const POPULATION: Population = Population {
    sessions: 1_000_000,
    users: 10_000,
    // None revoked: no session index reaches it.
    revoked_every: 1 << 62,
};
/// How long the command may take (issue 23).
const TARGET_COMMAND: Duration = Duration::from_secs(30);
/// How long the harness waits for the message.
const MESSAGE_LIMIT: Duration = Duration::from_secs(30);
/// How long the feed may take to subscribe.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// The channel the `LISTEN` feed hears.
const CHANNEL: &str = portcullis::DEFAULT_CHANNEL;

/// How the figure is measured, for BENCHMARKS.md.
fn method() -> String {
    let sessions = crate::report::thousands(POPULATION.sessions);
    let users = crate::report::thousands(POPULATION.users);
    format!(
        "One round per feed (seeding takes most of a minute): a throwaway database on the \
         shared server, migrated, with {sessions} live sessions over {users} users. The \
         harness listens as an instance does: on the `postgres` feed one connection \
         `LISTEN {CHANNEL}`; on the `nats` feed a relay (`NatsRelay`) and one \
         `NatsRevocationFeed` on a `nats-server` of the figure's own. Then it runs the \
         release `portcullis-server sessions revoke --all-users` as a child process and \
         times it from start to exit; the message time is from the command's exit to the \
         moment the harness got the revocation (negative: it came before the process had \
         exited). Log rows and messages are those the command caused. Delivery to many \
         instances is figures 8 and 9: one message like any other."
    )
}

/// Runs figure 10 with the release server `binary`.
pub(crate) async fn run(binary: &Path, _settings: Settings) -> Result<Section> {
    let mut section = Section::new("10. Bulk revocation", method());
    let mut round = Round::default();
    measure(binary, Feed::Postgres, &mut round).await?;
    match NatsServer::start().await {
        Ok(nats) => measure(binary, Feed::Nats(&nats), &mut round).await?,
        Err(why) => section
            .notes
            .push(format!("The NATS feed was not measured: {why}.")),
    }
    section.push(round);
    Ok(section)
}

/// Which feed carries the revocation.
#[derive(Clone, Copy)]
enum Feed<'a> {
    Postgres,
    Nats(&'a NatsServer),
}

impl Feed<'_> {
    fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Nats(_) => "nats",
        }
    }
}

/// One bulk revocation on `feed`, recorded into `round`.
async fn measure(binary: &Path, feed: Feed<'_>, round: &mut Round) -> Result<()> {
    let name = feed.name();
    eprintln!("bulk: seeding {} sessions ...", POPULATION.sessions);
    let db = TestDb::new().await;
    let client = db.connect().await;
    POPULATION.seed(&client).await?;
    client.batch_execute("ANALYZE sessions").await?;
    let (revocations, mut received) = mpsc::unbounded_channel::<(Heard, Instant)>();
    // Held for as long as the listener must run.
    let _listening = start_listening(feed, &db, &client, revocations).await?;
    let logged_before = log_rows(&client).await?;
    eprintln!("bulk: sessions revoke --all-users on the {name} feed ...");
    let started = Instant::now();
    let output = tokio::process::Command::new(binary)
        .args(["sessions", "revoke", "--all-users"])
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .output()
        .await?;
    let exited = Instant::now();
    if !output.status.success() {
        return Err(format!(
            "sessions revoke --all-users failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let command = exited - started;
    let (messages, first) = collect(&mut received).await;
    let still_live: i64 = client
        .query_one(
            "SELECT count(*) FROM sessions WHERE revoked_at IS NULL",
            &[],
        )
        .await?
        .get(0);
    let logged = log_rows(&client).await? - logged_before;
    round
        .value(
            format!("{name} feed: the command's wall time"),
            command.as_secs_f64(),
            Unit::Seconds,
        )
        .target(Target::AtMost(TARGET_COMMAND.as_secs_f64()));
    match first {
        Some(at) => {
            let signed_ms = if at >= exited {
                (at - exited).as_secs_f64() * 1000.0
            } else {
                -(exited - at).as_secs_f64() * 1000.0
            };
            round.value(
                format!("{name} feed: the message, after the command's exit"),
                signed_ms,
                Unit::Millis,
            );
        }
        None => round.note(format!(
            "{name} feed: no bulk revocation came within {MESSAGE_LIMIT:?}"
        )),
    }
    round
        .count(
            format!("{name} feed: messages the command caused"),
            messages,
        )
        .target(Target::AtMost(1.0));
    round
        .count(
            format!("{name} feed: revocation log rows the command wrote"),
            u64::try_from(logged)?,
        )
        .target(Target::AtMost(1.0));
    round
        .count(
            format!("{name} feed: sessions left live"),
            u64::try_from(still_live)?,
        )
        .target(Target::AtMost(0.0));
    Ok(())
}

/// What the harness's listener heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heard {
    /// Every session of everyone started before an instant ended.
    Bulk,
    /// Anything else (one per session, were the revocation not bulk).
    Other,
}

/// Sets the database's feed to `feed` and starts the harness's listener on it.
async fn start_listening(
    feed: Feed<'_>,
    db: &TestDb,
    client: &tokio_postgres::Client,
    revocations: mpsc::UnboundedSender<(Heard, Instant)>,
) -> Result<Listening> {
    Ok(match feed {
        Feed::Postgres => {
            RevocationLog::set_feed(client, RevocationFeedKind::Postgres).await?;
            Listening::Postgres(listen(&db.url(), revocations).await?)
        }
        Feed::Nats(nats) => {
            RevocationLog::set_feed(client, RevocationFeedKind::Nats).await?;
            let config = NatsFeedConfig::new(nats.url());
            let database: DatabaseConfig = db.url().parse()?;
            let relay = crate::nats_fanout::start_relay(database, config.clone()).await?;
            let task = subscribe(config, revocations).await?;
            Listening::Nats {
                _relay: relay,
                task,
            }
        }
    })
}

/// How many messages came, and when the bulk one came: waits for it up to
/// [`MESSAGE_LIMIT`], then half a second more for any other.
async fn collect(
    received: &mut mpsc::UnboundedReceiver<(Heard, Instant)>,
) -> (u64, Option<Instant>) {
    let mut messages = 0;
    let mut bulk = None;
    let deadline = tokio::time::Instant::now() + MESSAGE_LIMIT;
    loop {
        let until = if bulk.is_some() {
            tokio::time::Instant::now() + Duration::from_millis(500)
        } else {
            deadline
        };
        let Ok(Some((heard, at))) = tokio::time::timeout_at(until, received.recv()).await else {
            return (messages, bulk);
        };
        messages += 1;
        if heard == Heard::Bulk && bulk.is_none() {
            bulk = Some(at);
        }
    }
}

/// What keeps the harness's listener running.
enum Listening {
    Postgres(tokio::task::JoinHandle<()>),
    Nats {
        /// Stops the relay when dropped.
        _relay: portcullis::nats::NatsRelayHandle,
        task: tokio::task::JoinHandle<()>,
    },
}

impl Drop for Listening {
    fn drop(&mut self) {
        match self {
            Self::Postgres(task) | Self::Nats { task, .. } => task.abort(),
        }
    }
}

/// Rows in the revocation log.
async fn log_rows(client: &tokio_postgres::Client) -> Result<i64> {
    Ok(client
        .query_one("SELECT count(*) FROM session_guard_revocation_log", &[])
        .await?
        .get(0))
}

/// A connection that `LISTEN`s as an instance does, sending what it hears.
async fn listen(
    url: &str,
    revocations: mpsc::UnboundedSender<(Heard, Instant)>,
) -> Result<tokio::task::JoinHandle<()>> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
    let (notified, mut notifications) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(note) = message {
                let _ = notified.send((note.payload().to_owned(), Instant::now()));
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok(tokio::spawn(async move {
        let _client = client;
        let _driver = driver;
        while let Some((payload, at)) = notifications.recv().await {
            // The bulk payload: `all before <micros>` (migration V8).
            let heard = if payload.starts_with("all before ") {
                Heard::Bulk
            } else {
                Heard::Other
            };
            let _ = revocations.send((heard, at));
        }
    }))
}

/// A NATS feed as an instance reads it, sending what it hears, once it reads the stream.
async fn subscribe(
    config: NatsFeedConfig,
    revocations: mpsc::UnboundedSender<(Heard, Instant)>,
) -> Result<tokio::task::JoinHandle<()>> {
    let (ready, readied) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut feed = NatsRevocationFeed::new(config);
        let mut ready = Some(ready);
        while let Some(event) = feed.next_event().await {
            match event {
                FeedEvent::Connected => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                }
                FeedEvent::Revoked(revocation) => {
                    let heard = if matches!(revocation, Revocation::AllSessionsBefore { .. }) {
                        Heard::Bulk
                    } else {
                        Heard::Other
                    };
                    let _ = revocations.send((heard, Instant::now()));
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(SUBSCRIBE_TIMEOUT, readied)
        .await
        .map_err(|_| "the NATS feed did not subscribe")??;
    Ok(task)
}
