//! The example resource's store against a real PostgreSQL: the application's migrations
//! apply on top of Session Guard's schema, and every query keeps to its user's rows.

use crate::app::app_schema;
use crate::app::store::{notes, users};
use session_testdb::TestDb;
use uuid::Uuid;

/// A database with both schemas, and two users in it; the connection is a pooled one,
/// as the server's handlers use.
async fn database() -> (TestDb, deadpool_postgres::Object, Uuid, Uuid) {
    let db = TestDb::new().await;
    let manager = deadpool_postgres::Manager::new(db.config().clone(), tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(1)
        .build()
        .expect("a pool");
    let mut client = pool.get().await.expect("a connection");
    let applied = app_schema::migrate(&mut client)
        .await
        .expect("the application's migrations apply");
    assert!(applied >= 1, "a fresh database gets the notes migration");
    let again = app_schema::migrate(&mut client)
        .await
        .expect("migrating again is harmless");
    assert_eq!(again, 0);
    let alice = users::insert(&client, "alice@example.com", "not a real hash")
        .await
        .unwrap()
        .expect("a new email");
    let bob = users::insert(&client, "bob@example.com", "not a real hash")
        .await
        .unwrap()
        .expect("a new email");
    (db, client, alice, bob)
}

#[tokio::test]
async fn a_note_is_written_listed_read_and_deleted_by_its_owner() {
    let (_db, client, alice, _bob) = database().await;
    let first = notes::insert(&client, alice, "groceries", "eggs")
        .await
        .unwrap();
    let second = notes::insert(&client, alice, "ideas", "").await.unwrap();

    let listed = notes::list(&client, alice).await.unwrap();
    let ids: Vec<Uuid> = listed.iter().map(|note| note.id).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&first.id) && ids.contains(&second.id));
    assert_eq!(
        notes::by_id(&client, alice, first.id).await.unwrap(),
        Some(first.clone())
    );

    assert!(notes::delete(&client, alice, first.id).await.unwrap());
    assert!(
        !notes::delete(&client, alice, first.id).await.unwrap(),
        "already gone"
    );
    assert_eq!(notes::by_id(&client, alice, first.id).await.unwrap(), None);
    assert_eq!(notes::list(&client, alice).await.unwrap(), vec![second]);
}

#[tokio::test]
async fn another_users_note_can_be_neither_read_nor_deleted() {
    let (_db, client, alice, bob) = database().await;
    let note = notes::insert(&client, alice, "private", "mine")
        .await
        .unwrap();

    assert_eq!(notes::by_id(&client, bob, note.id).await.unwrap(), None);
    assert!(notes::list(&client, bob).await.unwrap().is_empty());
    assert!(!notes::delete(&client, bob, note.id).await.unwrap());
    assert_eq!(
        notes::by_id(&client, alice, note.id).await.unwrap(),
        Some(note)
    );
}

#[tokio::test]
async fn the_table_refuses_what_the_routes_refuse() {
    let (_db, client, alice, _bob) = database().await;
    assert!(
        notes::insert(&client, alice, "", "").await.is_err(),
        "empty title"
    );
    let long_title = "t".repeat(201);
    assert!(
        notes::insert(&client, alice, &long_title, "")
            .await
            .is_err()
    );
    let long_body = "b".repeat(10_001);
    assert!(
        notes::insert(&client, alice, "title", &long_body)
            .await
            .is_err()
    );
    assert!(
        notes::list(&client, alice).await.unwrap().is_empty(),
        "nothing written"
    );
}

#[tokio::test]
async fn a_listing_is_bounded_and_newest_first() {
    let (_db, client, alice, _bob) = database().await;
    let total = notes::LIST_LIMIT + 5;
    client
        .execute(
            "INSERT INTO notes (user_id, title, body, created_at) \
             SELECT $1, 'note ' || n, '', now() - n * interval '1 second' \
               FROM generate_series(1, $2::bigint) AS n",
            &[&alice, &total],
        )
        .await
        .unwrap();
    let listed = notes::list(&client, alice).await.unwrap();
    assert_eq!(listed.len(), usize::try_from(notes::LIST_LIMIT).unwrap());
    assert_eq!(listed[0].title, "note 1", "the newest first");
    assert!(
        listed
            .windows(2)
            .all(|pair| pair[0].created_at >= pair[1].created_at)
    );
}

#[tokio::test]
async fn deleting_a_user_deletes_their_notes() {
    let (_db, client, alice, _bob) = database().await;
    notes::insert(&client, alice, "soon gone", "")
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
