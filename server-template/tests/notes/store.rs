//! The notes store on the app's own pool: the app's migration applies on top of
//! Portcullis's schema in a history table of its own, and every query keeps to its user's
//! rows.

use portcullis_server::UserId;
use portcullis_server::testing::TestServer;

use crate::app;
use app::notes::store;

/// A test server with two signed-up users, and a pooled connection to its database.
async fn database() -> (TestServer, deadpool_postgres::Object, UserId, UserId) {
    let server = TestServer::start(app::app()).await;
    let alice = server.sign_up().await.user_id();
    let bob = server.sign_up().await.user_id();
    let client = server.pool().get().await.expect("a connection");
    (server, client, alice, bob)
}

#[tokio::test]
async fn the_apps_migrations_have_their_own_history() {
    let (_server, client, _, _) = database().await;
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM app_schema_history ORDER BY version",
            &[],
        )
        .await
        .expect("the app's history table")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        versions,
        [1],
        "V1__notes.sql, recorded apart from Portcullis's steps"
    );
}

#[tokio::test]
async fn another_users_note_can_be_neither_read_nor_deleted() {
    let (_server, client, alice, bob) = database().await;
    let note = store::insert(&client, alice, "private", "mine", 10)
        .await
        .unwrap()
        .expect("under the limit");
    assert_eq!(store::by_id(&client, bob, note.id).await.unwrap(), None);
    assert!(store::list(&client, bob).await.unwrap().is_empty());
    assert!(!store::delete(&client, bob, note.id).await.unwrap());
    assert_eq!(
        store::by_id(&client, alice, note.id).await.unwrap(),
        Some(note)
    );
}

#[tokio::test]
async fn the_table_refuses_what_the_routes_refuse() {
    let (_server, client, alice, _) = database().await;
    assert!(
        store::insert(&client, alice, "", "", 10).await.is_err(),
        "empty title"
    );
    let long_title = "t".repeat(201);
    assert!(
        store::insert(&client, alice, &long_title, "", 10)
            .await
            .is_err()
    );
    let long_body = "b".repeat(10_001);
    assert!(
        store::insert(&client, alice, "title", &long_body, 10)
            .await
            .is_err()
    );
    assert!(
        store::list(&client, alice).await.unwrap().is_empty(),
        "nothing written"
    );
}

#[tokio::test]
async fn a_listing_is_bounded_and_newest_first() {
    let (_server, client, alice, _) = database().await;
    let total = store::LIST_LIMIT + 5;
    client
        .execute(
            "INSERT INTO notes (user_id, title, body, created_at) \
             SELECT $1, 'note ' || n, '', now() - n * interval '1 second' \
               FROM generate_series(1, $2::bigint) AS n",
            &[&alice, &total],
        )
        .await
        .unwrap();
    let listed = store::list(&client, alice).await.unwrap();
    assert_eq!(listed.len(), usize::try_from(store::LIST_LIMIT).unwrap());
    assert_eq!(listed[0].title, "note 1", "the newest first");
    assert!(
        listed
            .windows(2)
            .all(|pair| pair[0].created_at >= pair[1].created_at)
    );
}

#[tokio::test]
async fn deleting_a_user_deletes_their_notes() {
    let (_server, client, alice, _) = database().await;
    store::insert(&client, alice, "soon gone", "", 10)
        .await
        .unwrap();
    client
        .execute("DELETE FROM users WHERE id = $1", &[&alice])
        .await
        .unwrap();
    let left: i64 = client
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}
