//! What V6 (refresh as a HOT update) must not change: the order in which a user's live
//! sessions are listed, and which ended sessions the purge deletes. Each test builds the
//! same sessions on a database migrated to V5 and checks the answers on it, migrates it to
//! V6 and checks that the server's queries give the same answers; then it moves the
//! deadlines the way V6's refresh does (the indexed floor lagging behind) and checks again.

use std::time::Duration;

use crate::app::store::sessions;
use portcullis::postgres::DatabaseConfig;
use portcullis_testdb::TestDb;
use tokio_postgres::Client;
use uuid::Uuid;

/// The last schema before V6.
const BEFORE: u16 = 5;
/// The server's default `SESSION_RETENTION_DAYS`.
const RETENTION: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// V5's purge, as servers built before V6 ran it: the sessions it deletes.
const PURGED_BEFORE_V6: &str = "SELECT id FROM sessions \
     WHERE least(revoked_at, idle_expires_at, absolute_expires_at) < now() - interval '30 days' \
     ORDER BY id";

/// V5's list of a user's live sessions, as servers built before V6 ran it (this build's
/// query reads columns of later migrations).
const LISTED_BEFORE_V6: &str = "SELECT device_name FROM sessions \
     WHERE user_id = $1 AND revoked_at IS NULL \
       AND least(idle_expires_at, absolute_expires_at) > now() \
     ORDER BY last_used_at DESC";

/// A session: its name (the device name), and its deadlines in days from now
/// (`last_used` and `revoked` in the past, negative).
struct Shape {
    name: &'static str,
    last_used: f64,
    idle: f64,
    absolute: f64,
    revoked: Option<f64>,
}

/// Live ones in an order of use that is not their order of creation, and ended ones on
/// both sides of the purge's cutoff (30 days ago), by each of the three ways to end.
const SHAPES: [Shape; 9] = [
    Shape {
        name: "live, used an hour ago",
        last_used: -0.04,
        idle: 14.0,
        absolute: 80.0,
        revoked: None,
    },
    Shape {
        name: "live, used just now",
        last_used: -0.0001,
        idle: 14.0,
        absolute: 60.0,
        revoked: None,
    },
    Shape {
        name: "live, used three days ago",
        last_used: -3.0,
        idle: 11.0,
        absolute: 85.0,
        revoked: None,
    },
    Shape {
        name: "idle-expired 31 days ago",
        last_used: -45.0,
        idle: -31.0,
        absolute: 40.0,
        revoked: None,
    },
    Shape {
        name: "idle-expired 29 days ago",
        last_used: -43.0,
        idle: -29.0,
        absolute: 40.0,
        revoked: None,
    },
    Shape {
        name: "past its lifetime 40 days ago",
        last_used: -50.0,
        idle: -40.0,
        absolute: -40.0,
        revoked: None,
    },
    Shape {
        name: "revoked 35 days ago",
        last_used: -36.0,
        idle: -22.0,
        absolute: 50.0,
        revoked: Some(-35.0),
    },
    Shape {
        name: "revoked 2 days ago",
        last_used: -3.0,
        idle: 11.0,
        absolute: 80.0,
        revoked: Some(-2.0),
    },
    Shape {
        name: "idle-expired 100 days ago",
        last_used: -114.0,
        idle: -100.0,
        absolute: -10.0,
        revoked: None,
    },
];

/// The names of the sessions a purge with the default retention deletes.
const PURGED: [&str; 4] = [
    "idle-expired 31 days ago",
    "past its lifetime 40 days ago",
    "revoked 35 days ago",
    "idle-expired 100 days ago",
];

/// The live sessions, most recently used first.
const LISTED: [&str; 3] = [
    "live, used just now",
    "live, used an hour ago",
    "live, used three days ago",
];

/// An empty database at V5 with one user, and a pool for the server's queries.
async fn at_v5() -> (TestDb, Client, deadpool_postgres::Pool, Uuid) {
    let db = TestDb::empty().await;
    let mut client = db.connect().await;
    portcullis_migrations::migrate_to(&mut client, BEFORE)
        .await
        .expect("migrating to V5");
    let user: Uuid = client
        .query_one(
            "INSERT INTO users (email, password_hash) VALUES ('a@example.com', 'x') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let pool = db
        .url()
        .parse::<DatabaseConfig>()
        .unwrap()
        .pool(2, Duration::from_secs(10))
        .unwrap();
    (db, client, pool, user)
}

/// Inserts `SHAPES` for `user` the way a server before V6 did (no floor given).
async fn insert_shapes(client: &Client, user: Uuid) {
    for shape in &SHAPES {
        client
            .execute(
                "INSERT INTO sessions (user_id, device_name, ip, created_at, last_used_at, \
                         idle_expires_at, absolute_expires_at, revoked_at, revoked_reason) \
                 VALUES ($1, $2, '192.0.2.1', now() + ($3::float8 - 1) * interval '1 day', \
                         now() + $3::float8 * interval '1 day', \
                         now() + $4::float8 * interval '1 day', \
                         now() + $5::float8 * interval '1 day', \
                         now() + $6::float8 * interval '1 day', \
                         CASE WHEN $6::float8 IS NULL THEN NULL ELSE 'logout' END)",
                &[
                    &user,
                    &shape.name,
                    &shape.last_used,
                    &shape.idle,
                    &shape.absolute,
                    &shape.revoked,
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", shape.name));
    }
}

/// The device names of `ids`, sorted.
async fn names(client: &Client, ids: &[Uuid]) -> Vec<String> {
    let mut names: Vec<String> = client
        .query(
            "SELECT device_name FROM sessions WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    names.sort();
    names
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|&name| name.to_owned()).collect();
    names.sort();
    names
}

/// What the server lists for `user`, by device name.
async fn listed(pool: &deadpool_postgres::Pool, user: Uuid) -> Vec<String> {
    let client = pool.get().await.unwrap();
    sessions::list_live(&client, crate::app::UserId::from_uuid(user))
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.device_name.unwrap_or_default())
        .collect()
}

/// Runs the server's purge until it deletes nothing more; returns how many it deleted.
async fn purge(pool: &deadpool_postgres::Pool) -> u64 {
    let client = pool.get().await.unwrap();
    let mut total = 0;
    loop {
        let deleted = sessions::purge_batch(&client, RETENTION, 2).await.unwrap();
        total += deleted;
        if deleted < 2 {
            return total;
        }
    }
}

async fn remaining(client: &Client) -> Vec<String> {
    let mut names: Vec<String> = client
        .query("SELECT device_name FROM sessions", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_session_list_and_the_purge_answer_after_v6_what_they_answered_before() {
    let (db, client, _pool, user) = at_v5().await;
    insert_shapes(&client, user).await;

    // On V5, with V5's queries: the list the server gave, and what V5's purge would
    // delete.
    let listed_before: Vec<String> = client
        .query(LISTED_BEFORE_V6, &[&user])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(listed_before, LISTED);
    let purged_before: Vec<Uuid> = client
        .query(PURGED_BEFORE_V6, &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(names(&client, &purged_before).await, sorted(&PURGED));

    // V6 backfills the floor of every existing session.
    let mut migrating = db.connect().await;
    portcullis_migrations::migrate(&mut migrating)
        .await
        .expect("migrating to V6");
    let lagging: i64 = client
        .query_one(
            "SELECT count(*) FROM sessions WHERE idle_expires_floor IS DISTINCT FROM idle_expires_at",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(lagging, 0, "every floor starts at its deadline");

    let pool = db
        .url()
        .parse::<DatabaseConfig>()
        .unwrap()
        .pool(2, Duration::from_secs(10))
        .unwrap();
    assert_eq!(listed(&pool, user).await, LISTED);
    assert_eq!(purge(&pool).await, PURGED.len() as u64);
    let mut kept: Vec<&str> = SHAPES
        .iter()
        .map(|shape| shape.name)
        .filter(|name| !PURGED.contains(name))
        .collect();
    kept.sort_unstable();
    assert_eq!(remaining(&client).await, kept);
}

#[tokio::test]
async fn a_floor_that_lags_behind_the_deadline_neither_purges_early_nor_keeps_too_long() {
    let (db, client, _pool, user) = at_v5().await;
    let mut migrating = db.connect().await;
    portcullis_migrations::migrate(&mut migrating)
        .await
        .unwrap();
    let pool = db
        .url()
        .parse::<DatabaseConfig>()
        .unwrap()
        .pool(2, Duration::from_secs(10))
        .unwrap();
    // Sessions inserted by a server that knows nothing of the floor get one.
    insert_shapes(&client, user).await;
    let unset: i64 = client
        .query_one(
            "SELECT count(*) FROM sessions WHERE idle_expires_floor IS DISTINCT FROM idle_expires_at",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unset, 0);

    // What refreshes leave behind: floors up to a day behind the deadline. The first
    // idle-expired session's floor is now before the cutoff, its deadline a few hours after:
    // it ended 29.9 days ago, so the purge finds it and must keep it.
    for (name, idle, floor) in [
        ("idle-expired 29 days ago", -29.9, -30.5),
        ("idle-expired 31 days ago", -31.0, -31.9),
        ("live, used an hour ago", 13.96, 13.0),
    ] {
        let updated = client
            .execute(
                "UPDATE sessions SET idle_expires_at = now() + $2::float8 * interval '1 day', \
                        idle_expires_floor = now() + $3::float8 * interval '1 day' \
                  WHERE device_name = $1",
                &[&name, &idle, &floor],
            )
            .await
            .unwrap();
        assert_eq!(updated, 1, "{name}");
    }
    // An operator moves a live session's deadline far back by hand, below its floor: the
    // trigger moves the floor with it, so the purge finds it.
    client
        .execute(
            "UPDATE sessions SET idle_expires_at = now() - interval '60 days', \
                    absolute_expires_at = now() + interval '1 day' \
              WHERE device_name = 'live, used three days ago'",
            &[],
        )
        .await
        .unwrap();
    let floor_follows: bool = client
        .query_one(
            "SELECT idle_expires_floor = idle_expires_at FROM sessions \
              WHERE device_name = 'live, used three days ago'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(floor_follows);

    assert_eq!(
        listed(&pool, user).await,
        ["live, used just now", "live, used an hour ago"]
    );
    let mut expected_purged: Vec<&str> = PURGED.to_vec();
    expected_purged.push("live, used three days ago");
    assert_eq!(purge(&pool).await, expected_purged.len() as u64);
    let mut kept: Vec<&str> = SHAPES
        .iter()
        .map(|shape| shape.name)
        .filter(|name| !expected_purged.contains(name))
        .collect();
    kept.sort_unstable();
    assert_eq!(remaining(&client).await, kept);
}

#[tokio::test]
async fn a_rotation_is_a_hot_update_and_moves_the_floor_only_when_it_lags_a_day() {
    let db = TestDb::new().await;
    let client = db.connect().await;
    let user: Uuid = client
        .query_one(
            "INSERT INTO users (email, password_hash) VALUES ('a@example.com', 'x') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let session: Uuid = client
        .query_one(
            "INSERT INTO sessions (user_id, ip, idle_expires_at, absolute_expires_at, refresh_hash) \
             VALUES ($1, '192.0.2.1', now() + interval '14 days', now() + interval '90 days', \
                     sha256('0')) RETURNING id",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    // (updates, HOT updates) of `sessions` in this transaction so far.
    let counts = "SELECT pg_stat_get_xact_tuples_updated('sessions'::regclass), \
                         pg_stat_get_xact_tuples_hot_updated('sessions'::regclass)";
    let rotate = "SELECT outcome FROM session_guard_refresh($1, $2, sha256($3::text::bytea), \
                  sha256($4::text::bytea), sha256('client'), '10 seconds', '14 days', 16, \
                  '192.0.2.1')";
    let floor = "SELECT idle_expires_floor FROM sessions WHERE id = $1";
    client.batch_execute("BEGIN").await.unwrap();
    let before: std::time::SystemTime = client.query_one(floor, &[&session]).await.unwrap().get(0);
    for generation in 0..3_i32 {
        let outcome: String = client
            .query_one(
                rotate,
                &[
                    &session,
                    &generation,
                    &generation.to_string(),
                    &(generation + 1).to_string(),
                ],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(outcome, "rotated");
    }
    let row = client.query_one(counts, &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (3, 3));
    let after: std::time::SystemTime = client.query_one(floor, &[&session]).await.unwrap().get(0);
    assert_eq!(
        before, after,
        "the floor stays while it lags less than a day"
    );
    client.batch_execute("COMMIT").await.unwrap();

    // A floor more than a day behind moves with the next rotation (a non-HOT update), to
    // the new deadline.
    client
        .execute(
            "UPDATE sessions SET idle_expires_floor = now() - interval '2 days' WHERE id = $1",
            &[&session],
        )
        .await
        .unwrap();
    let outcome: String = client
        .query_one(rotate, &[&session, &3_i32, &"3", &"4"])
        .await
        .unwrap()
        .get(0);
    assert_eq!(outcome, "rotated");
    let caught_up: bool = client
        .query_one(
            "SELECT idle_expires_floor = idle_expires_at FROM sessions WHERE id = $1",
            &[&session],
        )
        .await
        .unwrap()
        .get(0);
    assert!(caught_up);
}
