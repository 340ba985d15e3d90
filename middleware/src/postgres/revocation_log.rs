//! [`RevocationLog`]: the schema's append-only log of revocations
//! (`session_guard_revocation_log`), read in order by a relay, and the switch between
//! the two ways revocations reach instances.
//!
//! Every way a session ends writes a row in the transaction that ends it (the schema's
//! trigger); a bulk revocation writes one row for all its sessions. Positions are handed
//! out before commit, so a transaction holding a lower one can commit after one holding
//! a higher: a reader that remembered "the highest position seen" would skip rows. The
//! reader here reads only rows of transactions older than every transaction still in
//! progress, in (transaction, position) order, and its [`LogCursor`] is that pair: no
//! row can appear later before the cursor, so none is skipped, and none is read twice.
//!
//! The price: a transaction left open anywhere in the PostgreSQL instance holds the
//! reader back until it ends (never losing a row). `idle_in_transaction_session_timeout`
//! bounds how long.

use std::time::{Duration, SystemTime};

use tokio_postgres::{GenericClient, Row};
use uuid::Uuid;

use crate::liveness::feed::Revocation;

/// The rows after the cursor, up to a limit, of finished transactions; and the horizon.
const READ_AFTER: &str = "SELECT log_position, txid, kind, session_id, user_id, before, except_session, horizon \
     FROM session_guard_revocation_log_after($1, $2, $3)";
/// Deletes rows logged more than `$1` ago, at most `$2`.
const PURGE: &str = "SELECT session_guard_purge_revocation_log($1::text::interval, $2)";
/// Sets the feed the instances use.
const SET_FEED: &str = "SELECT session_guard_set_revocation_feed($1)";
/// The feed the instances use.
const FEED: &str = "SELECT feed FROM session_guard_revocation_feed";

/// Where a reader of the log has got to: every row of a transaction before `txid`, and of
/// `txid` up to `position`, has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct LogCursor {
    /// The transaction (`xid8`, as a number).
    pub txid: i64,
    /// The row's position within the log.
    pub position: i64,
}

/// One row of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Where the row is: also the reader's cursor once it is read.
    pub cursor: LogCursor,
    /// What ended.
    pub revocation: Revocation,
}

/// What one read gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogBatch {
    /// The rows, in order.
    pub entries: Vec<LogEntry>,
    /// Where the next read starts: past the last row, or, when the read was not cut short
    /// by its limit, at the horizon (every older transaction has ended, and its rows
    /// were all read).
    pub next: LogCursor,
}

/// Which feed carries revocations to the instances: the schema's
/// `session_guard_revocation_feed` row, which decides whether its trigger sends a
/// `NOTIFY` per revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationFeedKind {
    /// PostgreSQL `LISTEN`: a `NOTIFY` per revocation (the default).
    Postgres,
    /// NATS `JetStream`: a relay publishes the log; no `NOTIFY`.
    Nats,
}

impl RevocationFeedKind {
    /// The name the schema stores, and `REVOCATION_FEED` spells.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Nats => "nats",
        }
    }
}

/// A log row the reader does not understand: a schema newer than this version.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// PostgreSQL failed.
    #[error("reading the revocation log: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// A row of a kind this version does not know.
    #[error("revocation log row {position} is of kind {kind:?}, which this version does not know")]
    UnknownKind {
        /// The row.
        position: i64,
        /// Its kind.
        kind: String,
    },
}

/// The log's SQL, in one place: read in order, purge, and the feed switch.
#[derive(Debug, Clone, Copy)]
pub struct RevocationLog;

impl RevocationLog {
    /// Up to `limit` rows after `cursor`, of transactions that have ended.
    pub async fn read_after(
        client: &impl GenericClient,
        cursor: LogCursor,
        limit: u32,
    ) -> Result<LogBatch, LogError> {
        let limit = i32::try_from(limit.max(1)).unwrap_or(i32::MAX);
        let rows = client
            .query(READ_AFTER, &[&cursor.txid, &cursor.position, &limit])
            .await?;
        let horizon: i64 = rows.first().map_or(0, |row| row.get(7));
        let entries = rows
            .iter()
            .filter(|row| row.get::<_, Option<i64>>(0).is_some())
            .map(entry)
            .collect::<Result<Vec<_>, _>>()?;
        let cut_short = entries.len() >= usize::try_from(limit).unwrap_or(usize::MAX);
        let next = match entries.last() {
            Some(last) if cut_short => last.cursor,
            last => {
                let past_last = last.map_or(cursor, |last| last.cursor);
                past_last.max(LogCursor {
                    txid: horizon,
                    position: 0,
                })
            }
        };
        Ok(LogBatch { entries, next })
    }

    /// Deletes up to `limit` rows logged more than `older_than` ago; returns how many.
    /// Keep rows well past the layer's live TTL and the broker's retention.
    pub async fn purge(
        client: &impl GenericClient,
        older_than: Duration,
        limit: u32,
    ) -> Result<u64, tokio_postgres::Error> {
        let interval = format!("{} milliseconds", older_than.as_millis());
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let purged: i64 = client.query_one(PURGE, &[&interval, &limit]).await?.get(0);
        Ok(u64::try_from(purged).unwrap_or(0))
    }

    /// Makes `feed` the one that carries revocations: with
    /// [`Nats`](RevocationFeedKind::Nats) the trigger stops sending a `NOTIFY` per
    /// revocation, so every instance must follow the relay first.
    pub async fn set_feed(
        client: &impl GenericClient,
        feed: RevocationFeedKind,
    ) -> Result<(), tokio_postgres::Error> {
        client.execute(SET_FEED, &[&feed.as_str()]).await.map(drop)
    }

    /// The feed that carries revocations now.
    pub async fn feed(
        client: &impl GenericClient,
    ) -> Result<RevocationFeedKind, tokio_postgres::Error> {
        let feed: String = client.query_one(FEED, &[]).await?.get(0);
        Ok(if feed == "nats" {
            RevocationFeedKind::Nats
        } else {
            RevocationFeedKind::Postgres
        })
    }
}

fn entry(row: &Row) -> Result<LogEntry, LogError> {
    let position: i64 = row.get(0);
    let cursor = LogCursor {
        txid: row.get(1),
        position,
    };
    let kind: &str = row.get(2);
    let before = || row.get::<_, SystemTime>(5);
    let revocation = match kind {
        "session" => Revocation::Session {
            session: row.get(3),
        },
        "user_before" => Revocation::UserSessionsBefore {
            user: row.get(4),
            before: before(),
            except: row.get::<_, Option<Uuid>>(6),
        },
        "all_before" => Revocation::AllSessionsBefore {
            before: before(),
            except: row.get::<_, Option<Uuid>>(6),
        },
        "everything" => Revocation::Everything,
        other => {
            return Err(LogError::UnknownKind {
                position,
                kind: other.to_owned(),
            });
        }
    };
    Ok(LogEntry { cursor, revocation })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use portcullis_testdb::TestDb;
    use portcullis_testdb::rows::{insert_session, insert_user, revoke_session};
    use tokio_postgres::{AsyncMessage, Client};

    use super::*;

    /// Reads from `cursor` until `count` rows came (other databases' transactions on the
    /// same server hold the horizon back for a moment), for up to 10 s.
    async fn read_rows(client: &Client, cursor: LogCursor, count: usize) -> LogBatch {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut batch = LogBatch {
            entries: Vec::new(),
            next: cursor,
        };
        while batch.entries.len() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {count} rows came: {batch:?}",
                batch.entries.len()
            );
            let more = RevocationLog::read_after(client, batch.next, 100)
                .await
                .unwrap();
            batch.entries.extend(more.entries);
            batch.next = more.next;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        batch
    }

    fn ended(batch: &LogBatch) -> Vec<Uuid> {
        batch
            .entries
            .iter()
            .map(|entry| match entry.revocation {
                Revocation::Session { session } => session,
                ref other => panic!("not one session: {other:?}"),
            })
            .collect()
    }

    /// Transaction A takes the lower position, B the higher; B commits first. A reader that
    /// remembered the highest position would now read B's row and skip A's for ever: this
    /// one waits for A, then reads both.
    #[tokio::test]
    async fn a_row_whose_transaction_commits_later_is_not_skipped() {
        let db = TestDb::new().await;
        let (reader, a, b) = (db.connect().await, db.connect().await, db.connect().await);
        let owner = insert_user(&reader).await;
        let (first, second) = (
            insert_session(&reader, owner, "1 day").await,
            insert_session(&reader, owner, "1 day").await,
        );
        let start = RevocationLog::read_after(&reader, LogCursor::default(), 100)
            .await
            .unwrap()
            .next;

        a.batch_execute("BEGIN").await.unwrap();
        revoke_session(&a, first).await;
        b.batch_execute("BEGIN").await.unwrap();
        revoke_session(&b, second).await;
        b.batch_execute("COMMIT").await.unwrap();

        let naive: Vec<i64> = reader
            .query(
                "SELECT position FROM session_guard_revocation_log ORDER BY position",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(naive.len(), 1, "B's row is visible, A's is not yet");
        let batch = RevocationLog::read_after(&reader, start, 100)
            .await
            .unwrap();
        assert!(batch.entries.is_empty(), "{batch:?}");

        a.batch_execute("COMMIT").await.unwrap();
        let batch = read_rows(&reader, batch.next, 2).await;
        assert_eq!(ended(&batch), [first, second]);
        assert!(
            naive[0] > batch.entries[0].cursor.position,
            "A held the lower position"
        );
        let again = RevocationLog::read_after(&reader, batch.next, 100)
            .await
            .unwrap();
        assert!(again.entries.is_empty(), "read once: {again:?}");
    }

    /// The other interleaving: B's transaction is older, A takes the lower position and
    /// commits first. A's row waits for B, then both come in transaction order.
    #[tokio::test]
    async fn rows_come_in_transaction_order_once_every_older_transaction_ended() {
        let db = TestDb::new().await;
        let (reader, a, b) = (db.connect().await, db.connect().await, db.connect().await);
        let owner = insert_user(&reader).await;
        let (first, second) = (
            insert_session(&reader, owner, "1 day").await,
            insert_session(&reader, owner, "1 day").await,
        );
        let start = RevocationLog::read_after(&reader, LogCursor::default(), 100)
            .await
            .unwrap()
            .next;

        b.batch_execute("BEGIN; SELECT pg_current_xact_id()")
            .await
            .unwrap();
        a.batch_execute("BEGIN").await.unwrap();
        revoke_session(&a, first).await;
        revoke_session(&b, second).await;
        a.batch_execute("COMMIT").await.unwrap();
        let batch = RevocationLog::read_after(&reader, start, 100)
            .await
            .unwrap();
        assert!(
            batch.entries.is_empty(),
            "B is older and still open: {batch:?}"
        );

        b.batch_execute("COMMIT").await.unwrap();
        let batch = read_rows(&reader, batch.next, 2).await;
        assert_eq!(ended(&batch), [second, first], "B's transaction first");
        assert!(batch.entries[0].cursor.position > batch.entries[1].cursor.position);

        // A limit cuts a read short without losing the rest.
        let (third, fourth) = (
            insert_session(&reader, owner, "1 day").await,
            insert_session(&reader, owner, "1 day").await,
        );
        revoke_session(&reader, third).await;
        revoke_session(&reader, fourth).await;
        read_rows(&reader, batch.next, 2).await;
        let one = RevocationLog::read_after(&reader, batch.next, 1)
            .await
            .unwrap();
        assert_eq!(ended(&one), [third]);
        let rest = RevocationLog::read_after(&reader, one.next, 1)
            .await
            .unwrap();
        assert_eq!(ended(&rest), [fourth]);
    }

    /// A bulk revocation is one row and one notification, and ends exactly the sessions
    /// it says: the user's, started before it, but the one spared.
    #[tokio::test]
    async fn a_bulk_revocation_is_one_row_and_one_notification() {
        let db = TestDb::new().await;
        let client = db.connect().await;
        let (owner, other) = (insert_user(&client).await, insert_user(&client).await);
        let sessions = [
            insert_session(&client, owner, "1 day").await,
            insert_session(&client, owner, "1 day").await,
            insert_session(&client, owner, "1 day").await,
        ];
        let others = insert_session(&client, other, "1 day").await;
        let start = RevocationLog::read_after(&client, LogCursor::default(), 100)
            .await
            .unwrap()
            .next;
        let (listener, mut notifications) = listen(&db).await;

        let row = client
            .query_one(
                "SELECT revoked, before FROM session_guard_revoke_sessions_before($1, $2, 'logout_all')",
                &[&owner, &sessions[2]],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 2);
        let before: SystemTime = row.get(1);

        let batch = read_rows(&client, start, 1).await;
        let expected = Revocation::UserSessionsBefore {
            user: owner,
            before,
            except: Some(sessions[2]),
        };
        assert_eq!(
            batch
                .entries
                .iter()
                .map(|entry| &entry.revocation)
                .collect::<Vec<_>>(),
            [&expected]
        );
        let payload = tokio::time::timeout(Duration::from_secs(5), notifications.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            crate::liveness::postgres::parse_payload(&payload),
            Some(expected)
        );
        let live: Vec<Uuid> = client
            .query(
                "SELECT id FROM sessions WHERE revoked_at IS NULL ORDER BY created_at",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(live, [sessions[2], others]);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), notifications.recv())
                .await
                .is_err(),
            "one notification, not one per session"
        );
        drop(listener);
    }

    /// A session whose transaction began before a bulk revocation but inserts it after
    /// the revocation committed starts revoked: what the log row says holds in the
    /// database too.
    #[tokio::test]
    async fn a_session_starting_as_a_bulk_revocation_commits_is_covered() {
        let db = TestDb::new().await;
        let (client, late) = (db.connect().await, db.connect().await);
        let owner = insert_user(&client).await;
        late.batch_execute("BEGIN; SELECT now()").await.unwrap();
        client
            .execute(
                "SELECT session_guard_revoke_sessions_before($1, NULL, 'password_changed')",
                &[&owner],
            )
            .await
            .unwrap();
        let started_late = insert_session(&late, owner, "1 day").await;
        late.batch_execute("COMMIT").await.unwrap();
        let row = client
            .query_one(
                "SELECT revoked_at IS NOT NULL, revoked_reason FROM sessions WHERE id = $1",
                &[&started_late],
            )
            .await
            .unwrap();
        assert!(
            row.get::<_, bool>(0),
            "started before the revocation: revoked"
        );
        assert_eq!(row.get::<_, &str>(1), "password_changed");

        // And a session inserted (not committed) before the revocation holds it up, then
        // is revoked by it.
        let (early, bulk) = (db.connect().await, db.connect().await);
        early.batch_execute("BEGIN").await.unwrap();
        let waiting = insert_session(&early, owner, "1 day").await;
        let revoking = tokio::spawn(async move {
            bulk.query_one(
                "SELECT revoked FROM session_guard_revoke_sessions_before($1, NULL, 'logout_all')",
                &[&owner],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        });
        // The bulk revocation's backend waits on the insert's lock.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let waiting_on_a_lock: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waiting_on_a_lock == 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline && !revoking.is_finished(),
                "the bulk revocation waits for the insert"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            !revoking.is_finished(),
            "the bulk revocation waits for the insert"
        );
        early.batch_execute("COMMIT").await.unwrap();
        assert_eq!(revoking.await.unwrap(), 1);
        let revoked: bool = client
            .query_one(
                "SELECT revoked_at IS NOT NULL FROM sessions WHERE id = $1",
                &[&waiting],
            )
            .await
            .unwrap()
            .get(0);
        assert!(revoked);
        // A session that starts afterwards is live.
        let after = insert_session(&client, owner, "1 day").await;
        let live: bool = client
            .query_one(
                "SELECT revoked_at IS NULL FROM sessions WHERE id = $1",
                &[&after],
            )
            .await
            .unwrap()
            .get(0);
        assert!(live);
    }

    /// With the NATS feed, a revocation is logged but not announced; with PostgreSQL's,
    /// both. Notifications arrive in commit order, so receiving the second and not the
    /// first shows the first sent none.
    #[tokio::test]
    async fn with_the_nats_feed_a_revocation_sends_no_notify() {
        let db = TestDb::new().await;
        let client = db.connect().await;
        let owner = insert_user(&client).await;
        let (quiet, heard) = (
            insert_session(&client, owner, "1 day").await,
            insert_session(&client, owner, "1 day").await,
        );
        let (listener, mut notifications) = listen(&db).await;
        assert_eq!(
            RevocationLog::feed(&client).await.unwrap(),
            RevocationFeedKind::Postgres
        );
        let start = RevocationLog::read_after(&client, LogCursor::default(), 100)
            .await
            .unwrap()
            .next;

        RevocationLog::set_feed(&client, RevocationFeedKind::Nats)
            .await
            .unwrap();
        revoke_session(&client, quiet).await;
        RevocationLog::set_feed(&client, RevocationFeedKind::Postgres)
            .await
            .unwrap();
        revoke_session(&client, heard).await;
        let payload = tokio::time::timeout(Duration::from_secs(5), notifications.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(payload, heard.to_string());
        let batch = read_rows(&client, start, 2).await;
        assert_eq!(ended(&batch), [quiet, heard], "both logged");
        drop(listener);
    }

    #[tokio::test]
    async fn the_purge_removes_old_rows_only() {
        let db = TestDb::new().await;
        let client = db.connect().await;
        let owner = insert_user(&client).await;
        for _ in 0..3 {
            let session = insert_session(&client, owner, "1 day").await;
            revoke_session(&client, session).await;
        }
        client
            .execute(
                "UPDATE session_guard_revocation_log SET logged_at = now() - interval '2 hours' \
                 WHERE position IN (SELECT position FROM session_guard_revocation_log \
                                    ORDER BY position LIMIT 2)",
                &[],
            )
            .await
            .unwrap();
        let hour = Duration::from_secs(3600);
        assert_eq!(RevocationLog::purge(&client, hour, 1).await.unwrap(), 1);
        assert_eq!(RevocationLog::purge(&client, hour, 100).await.unwrap(), 1);
        assert_eq!(RevocationLog::purge(&client, hour, 100).await.unwrap(), 0);
        let left: i64 = client
            .query_one("SELECT count(*) FROM session_guard_revocation_log", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 1);
    }

    /// A connection listening on the revocation channel, and its payloads.
    async fn listen(db: &TestDb) -> (Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
        use futures_util::StreamExt as _;

        let (client, mut connection) = db.config().connect(tokio_postgres::NoTls).await.unwrap();
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(notification) = message {
                    let _ = sender.send(notification.payload().to_owned());
                }
            }
        });
        client
            .batch_execute("LISTEN session_revoked")
            .await
            .unwrap();
        (client, receiver)
    }
}
