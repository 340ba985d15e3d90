//! The schema against a real PostgreSQL: the revocation trigger on every path (and its
//! silence when ended sessions are purged), the constraints, the indexes the design's
//! lookups need, and migrating concurrently.

use std::time::Duration;

use portcullis_e2e::Listener;
use portcullis_migrations::{REVOCATION_CHANNEL, REVOKE_ALL_PAYLOAD};
use portcullis_testdb::TestDb;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(5);

async fn user(client: &Client, email: &str) -> Uuid {
    client
        .query_one(
            "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id",
            &[&email],
        )
        .await
        .expect("inserting a user")
        .get(0)
}

async fn session(client: &Client, user_id: Uuid) -> Uuid {
    client
        .query_one(
            "INSERT INTO sessions (user_id, user_agent, device_label, ip, idle_expires_at, \
             absolute_expires_at) VALUES ($1, 'curl/8.0', 'curl 8.0', '203.0.113.7', \
             now() + interval '14 days', now() + interval '90 days') RETURNING id",
            &[&user_id],
        )
        .await
        .expect("inserting a session")
        .get(0)
}

/// Asserts that the next notification on the channel carries exactly `payload`.
async fn expect_notification(listener: &mut Listener, payload: &str) {
    let notification = listener
        .next(WAIT)
        .await
        .unwrap_or_else(|| panic!("no notification for {payload} within {WAIT:?}"));
    assert_eq!(notification.channel(), REVOCATION_CHANNEL);
    assert_eq!(notification.payload(), payload);
}

#[tokio::test]
async fn revoking_a_session_with_plain_sql_notifies_its_id() {
    let db = TestDb::new().await;
    let mut listener = Listener::start(db.config(), REVOCATION_CHANNEL).await;
    let operator = db.connect().await;
    let user_id = user(&operator, "ada@example.com").await;
    let session_id = session(&operator, user_id).await;

    // What an operator would type by hand, no server involved.
    operator
        .batch_execute(&format!(
            "UPDATE sessions SET revoked_at = now(), revoked_reason = 'admin' \
             WHERE id = '{session_id}'"
        ))
        .await
        .unwrap();

    expect_notification(&mut listener, &session_id.to_string()).await;
}

#[tokio::test]
async fn deleting_truncating_and_cascading_all_notify() {
    let db = TestDb::new().await;
    let mut listener = Listener::start(db.config(), REVOCATION_CHANNEL).await;
    let client = db.connect().await;
    let user_id = user(&client, "grace@example.com").await;

    let deleted = session(&client, user_id).await;
    client
        .execute("DELETE FROM sessions WHERE id = $1", &[&deleted])
        .await
        .unwrap();
    expect_notification(&mut listener, &deleted.to_string()).await;

    // Deleting the user removes its sessions by cascade; each one is announced.
    let cascaded = session(&client, user_id).await;
    client
        .execute("DELETE FROM users WHERE id = $1", &[&user_id])
        .await
        .unwrap();
    expect_notification(&mut listener, &cascaded.to_string()).await;

    let other = user(&client, "linus@example.com").await;
    session(&client, other).await;
    client
        .batch_execute("TRUNCATE sessions CASCADE")
        .await
        .unwrap();
    expect_notification(&mut listener, REVOKE_ALL_PAYLOAD).await;
}

#[tokio::test]
async fn moving_a_deadline_earlier_notifies_and_routine_updates_stay_silent() {
    let db = TestDb::new().await;
    let mut listener = Listener::start(db.config(), REVOCATION_CHANNEL).await;
    let client = db.connect().await;
    let user_id = user(&client, "barbara@example.com").await;
    let busy = session(&client, user_id).await;
    let expired = session(&client, user_id).await;

    // A refresh: later deadlines, new last_used_at and IP. Nothing ended, so no message.
    client
        .execute(
            "UPDATE sessions SET last_used_at = now(), ip = '198.51.100.1', \
             idle_expires_at = now() + interval '20 days' WHERE id = $1",
            &[&busy],
        )
        .await
        .unwrap();
    // An operator ends a session by expiring it.
    client
        .execute(
            "UPDATE sessions SET idle_expires_at = now() - interval '1 second' WHERE id = $1",
            &[&expired],
        )
        .await
        .unwrap();

    // Notifications arrive in commit order, so had the first update notified, its id
    // would come first.
    expect_notification(&mut listener, &expired.to_string()).await;
    assert!(listener.next(Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn deleting_sessions_that_already_ended_is_silent_and_deleting_a_live_one_is_not() {
    let db = TestDb::new().await;
    let mut listener = Listener::start(db.config(), REVOCATION_CHANNEL).await;
    let client = db.connect().await;
    let user_id = user(&client, "purge@example.com").await;
    let mut ended = Vec::new();
    for _ in 0..50 {
        ended.push(session(&client, user_id).await);
    }
    client
        .execute(
            "UPDATE sessions SET revoked_at = now() - interval '40 days', \
             revoked_reason = 'logout' WHERE id = ANY($1)",
            &[&&ended[..25]],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE sessions SET idle_expires_at = now() - interval '40 days' WHERE id = ANY($1)",
            &[&&ended[25..]],
        )
        .await
        .unwrap();
    // Those updates ended the sessions, and said so; drain what they announced.
    for _ in 0..ended.len() {
        assert!(listener.next(WAIT).await.is_some());
    }

    // What the purge does: delete sessions that ended long ago.
    let deleted = client
        .execute("DELETE FROM sessions WHERE id = ANY($1)", &[&ended])
        .await
        .unwrap();
    assert_eq!(deleted, 50);
    let live = session(&client, user_id).await;
    client
        .execute("DELETE FROM sessions WHERE id = $1", &[&live])
        .await
        .unwrap();

    // Notifications arrive in commit order: had the purge announced anything, it would
    // come before the live session's id.
    expect_notification(&mut listener, &live.to_string()).await;
    assert!(listener.next(Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn emails_are_unique_whatever_their_case() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    user(&client, "Mixed.Case@Example.com").await;
    let err = client
        .execute(
            "INSERT INTO users (email, password_hash) VALUES ('mixed.case@example.COM', 'x')",
            &[],
        )
        .await
        .expect_err("a second account with the same email in other case");
    assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION));
}

#[tokio::test]
async fn constraints_reject_inconsistent_rows() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    let user_id = user(&client, "check@example.com").await;
    let session_id = session(&client, user_id).await;
    for (what, sql) in [
        (
            "a reason without a revocation",
            "UPDATE sessions SET revoked_reason = 'admin' WHERE id = $1",
        ),
        (
            "an idle deadline past the absolute one",
            "UPDATE sessions SET idle_expires_at = absolute_expires_at + interval '1 day' \
             WHERE id = $1",
        ),
        (
            "a user agent longer than 512 characters",
            "UPDATE sessions SET user_agent = repeat('a', 513) WHERE id = $1",
        ),
        (
            "a refresh hash that is not 32 bytes",
            "UPDATE sessions SET refresh_hash = '\\x00' WHERE id = $1",
        ),
        (
            "a client fingerprint that is not 32 bytes",
            "UPDATE sessions SET refresh_rotated_by = '\\x00' WHERE id = $1",
        ),
        (
            "a negative generation",
            "UPDATE sessions SET refresh_generation = -1 WHERE id = $1",
        ),
    ] {
        let err = client.execute(sql, &[&session_id]).await.expect_err(what);
        assert_eq!(err.code(), Some(&SqlState::CHECK_VIOLATION), "{what}");
    }
}

/// The plan `sql` gets when sequential scans are priced out, as one string.
async fn plan(client: &Client, sql: &str) -> String {
    client
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let rows = client.query(&format!("EXPLAIN {sql}"), &[]).await.unwrap();
    rows.iter()
        .map(|row| row.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn the_design_lookups_are_served_by_indexes() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    let session_id = Uuid::new_v4();
    for (lookup, sql, index) in [
        (
            "live sessions of a user, newest use first",
            format!(
                "SELECT id FROM sessions WHERE user_id = '{session_id}' AND revoked_at IS NULL \
                 ORDER BY last_used_at DESC"
            ),
            "sessions_live_by_user_id",
        ),
        (
            "sessions that ended before the purge's cutoff",
            "SELECT id FROM sessions \
             WHERE least(revoked_at, idle_expires_floor, absolute_expires_at) < now() - interval '30 days' \
               AND least(revoked_at, idle_expires_at, absolute_expires_at) < now() - interval '30 days' \
             LIMIT 1000"
                .to_owned(),
            "sessions_ended_at_floor",
        ),
        (
            "a session by id (liveness)",
            format!("SELECT revoked_at FROM sessions WHERE id = '{session_id}'"),
            "sessions_pkey",
        ),
        (
            "refresh state by session id",
            format!("SELECT refresh_hash FROM sessions WHERE id = '{session_id}'"),
            "sessions_pkey",
        ),
        (
            "a token of the format before the upgrade, by its hash",
            format!(
                "SELECT session_id FROM legacy_refresh_tokens WHERE token_hash = '\\x{}'",
                "00".repeat(32)
            ),
            "legacy_refresh_tokens_pkey",
        ),
        (
            "a user by email",
            "SELECT id FROM users WHERE lower(email) = 'a@example.com'".to_owned(),
            "users_email_lower_key",
        ),
    ] {
        let plan = plan(&client, &sql).await;
        assert!(
            plan.contains(index),
            "{lookup}: expected {index} in\n{plan}"
        );
        assert!(
            !plan.contains("Seq Scan"),
            "{lookup}: sequential scan in\n{plan}"
        );
    }
}

#[tokio::test]
async fn concurrent_migrations_apply_each_step_once() {
    let db = TestDb::empty().await;
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let mut client = db.connect().await;
        runs.spawn(async move { portcullis_migrations::migrate(&mut client).await });
    }
    let mut applied = 0;
    while let Some(run) = runs.join_next().await {
        applied += run
            .expect("task")
            .expect("every concurrent migration succeeds");
    }
    let client = db.connect().await;
    let recorded: i64 = client
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .unwrap()
        .get(0);
    assert!(applied >= 1, "someone applied the migrations");
    assert_eq!(
        i64::try_from(applied).unwrap(),
        recorded,
        "each migration was applied by exactly one of the four"
    );
    // And again: nothing left to do.
    let mut client = db.connect().await;
    assert_eq!(
        portcullis_migrations::migrate(&mut client).await.unwrap(),
        0
    );
}
