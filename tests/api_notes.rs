//! The example resource (`/notes`) of the real server process against a real PostgreSQL:
//! only a signed-in user reaches it, each user sees only their own notes, bad input is a
//! 400 that writes nothing, and a revoked session's token is refused at once.

use reqwest::Method;
use serde_json::{Value, json};
use session_e2e::ServerProcess;
use session_e2e::api::{Api, Reply, Session};
use session_testdb::TestDb;

const PASSWORD: &str = "correct horse battery staple";

async fn start() -> (TestDb, ServerProcess) {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    (db, server)
}

async fn signed_in(api: &Api<'_>, email: &str) -> Session {
    api.register(email, PASSWORD).await;
    api.login_session(email, PASSWORD).await
}

async fn write(api: &Api<'_>, session: &Session, note: &Value) -> Reply {
    let request = api
        .request(Method::POST, "/notes")
        .bearer_auth(&session.access)
        .json(note);
    api.send(format!("POST /notes {note}"), request).await
}

async fn titles(api: &Api<'_>, session: &Session) -> Vec<String> {
    let listed = api
        .bearer(Method::GET, "/notes", &session.access)
        .await
        .expect(200);
    listed["notes"]
        .as_array()
        .expect("a notes array")
        .iter()
        .map(|note| note["title"].as_str().expect("a title").to_owned())
        .collect()
}

#[tokio::test]
async fn a_user_writes_reads_lists_and_deletes_their_notes() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    let ada = signed_in(&api, "ada@example.com").await;

    let written = write(&api, &ada, &json!({"title": "groceries", "body": "eggs"}))
        .await
        .expect(201);
    let id = written["id"].as_str().expect("an id").to_owned();
    assert_eq!(written["body"], "eggs");
    write(&api, &ada, &json!({"title": "ideas"}))
        .await
        .expect(201);

    let read = api
        .bearer(Method::GET, &format!("/notes/{id}"), &ada.access)
        .await
        .expect(200);
    assert_eq!(read, written);
    assert_eq!(
        titles(&api, &ada).await,
        ["ideas", "groceries"],
        "newest first"
    );

    api.bearer(Method::DELETE, &format!("/notes/{id}"), &ada.access)
        .await
        .expect(204);
    api.bearer(Method::GET, &format!("/notes/{id}"), &ada.access)
        .await
        .expect_error(&[404], "note_not_found");
    assert_eq!(titles(&api, &ada).await, ["ideas"]);
}

#[tokio::test]
async fn another_users_notes_are_invisible_and_untouchable() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    let ada = signed_in(&api, "ada@example.com").await;
    let bob = signed_in(&api, "bob@example.com").await;
    let note = write(&api, &ada, &json!({"title": "private"}))
        .await
        .expect(201);
    let path = format!("/notes/{}", note["id"].as_str().unwrap());

    assert!(titles(&api, &bob).await.is_empty());
    let not_found = api.bearer(Method::GET, &path, &bob.access).await;
    let unknown = api
        .bearer(
            Method::GET,
            "/notes/00000000-0000-0000-0000-000000000000",
            &bob.access,
        )
        .await;
    assert_eq!(
        not_found.expect_error(&[404], "note_not_found"),
        unknown.expect_error(&[404], "note_not_found"),
        "another user's note and no note look the same"
    );
    api.bearer(Method::DELETE, &path, &bob.access)
        .await
        .expect_error(&[404], "note_not_found");
    assert_eq!(titles(&api, &ada).await, ["private"], "still there");
}

#[tokio::test]
async fn bad_notes_are_refused_and_write_nothing() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    let ada = signed_in(&api, "ada@example.com").await;
    for bad in [
        json!({"title": ""}),
        json!({"title": "t".repeat(201)}),
        json!({"title": "ok", "body": "b".repeat(10_001)}),
        // Schemathesis found a NUL answered 503: PostgreSQL's text cannot hold it.
        json!({"title": "nul\u{0}"}),
        json!({"title": "tab\there"}),
        json!({"title": "ok", "body": "nul\u{0}"}),
    ] {
        write(&api, &ada, &bad)
            .await
            .expect_error(&[400], "invalid_note");
    }
    // Schemathesis found `{"title": false}` written as the title "false": only strings.
    for not_text in [
        json!({"body": "no title"}),
        json!({"title": false}),
        json!({"title": 7}),
        json!({"title": "ok", "body": ["not", "text"]}),
    ] {
        write(&api, &ada, &not_text)
            .await
            .expect_error_shape(&[400]);
    }
    api.bearer(Method::GET, "/notes/not-a-uuid", &ada.access)
        .await
        .expect_error(&[404], "note_not_found");
    assert!(titles(&api, &ada).await.is_empty());
}

#[tokio::test]
async fn notes_need_a_live_session() {
    let (_db, server) = start().await;
    let api = Api::new(&server);
    let ada = signed_in(&api, "ada@example.com").await;
    api.with_auth(Method::GET, "/notes", None).await.expect(401);

    api.bearer(Method::POST, "/auth/logout", &ada.access)
        .await
        .expect(204);
    api.bearer(Method::GET, "/notes", &ada.access)
        .await
        .expect(401);
    write(&api, &ada, &json!({"title": "too late"}))
        .await
        .expect(401);
}
