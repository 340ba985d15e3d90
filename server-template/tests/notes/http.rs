//! `/notes` over HTTP: only a signed-in user reaches it, each user sees only their own
//! notes, bad input is a 400 that writes nothing, the app's setting bounds it, and a
//! revoked session's token is refused at once.

use portcullis_server::testing::{TestServer, TestUser};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::app;

/// Sends `request` and returns its status and JSON body (`null` when it has none).
async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn write(user: &TestUser, note: &Value) -> (StatusCode, Value) {
    send(user.post("/notes").json(note)).await
}

async fn titles(user: &TestUser) -> Vec<String> {
    let (status, listed) = send(user.get("/notes")).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    listed["notes"]
        .as_array()
        .expect("a notes array")
        .iter()
        .map(|note| note["title"].as_str().expect("a title").to_owned())
        .collect()
}

#[tokio::test]
async fn a_user_writes_reads_lists_and_deletes_their_notes() {
    let server = TestServer::start(app::app()).await;
    let ada = server.sign_up().await;

    let (status, written) = write(&ada, &json!({"title": "groceries", "body": "eggs"})).await;
    assert_eq!(status, StatusCode::CREATED, "{written}");
    let id = written["id"].as_str().expect("an id").to_owned();
    assert_eq!(written["body"], "eggs");
    assert_eq!(
        write(&ada, &json!({"title": "ideas"})).await.0,
        StatusCode::CREATED
    );

    let (status, read) = send(ada.get(&format!("/notes/{id}"))).await;
    assert_eq!((status, &read), (StatusCode::OK, &written));
    assert_eq!(titles(&ada).await, ["ideas", "groceries"], "newest first");

    let (status, _) = send(ada.delete(&format!("/notes/{id}"))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, gone) = send(ada.get(&format!("/notes/{id}"))).await;
    assert_eq!(
        (status, gone["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("note_not_found"))
    );
    assert_eq!(titles(&ada).await, ["ideas"]);
}

#[tokio::test]
async fn another_users_notes_are_invisible_and_untouchable() {
    let server = TestServer::start(app::app()).await;
    let ada = server.sign_up().await;
    let bob = server.sign_up().await;
    let (_, note) = write(&ada, &json!({"title": "private"})).await;
    let path = format!("/notes/{}", note["id"].as_str().expect("an id"));

    assert!(titles(&bob).await.is_empty());
    let theirs = send(bob.get(&path)).await;
    let nobodys = send(bob.get("/notes/00000000-0000-0000-0000-000000000000")).await;
    assert_eq!(theirs.0, StatusCode::NOT_FOUND);
    assert_eq!(
        theirs, nobodys,
        "another user's note and no note look the same"
    );
    assert_eq!(send(bob.delete(&path)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(titles(&ada).await, ["private"], "still there");
}

#[tokio::test]
async fn bad_notes_are_refused_and_write_nothing() {
    let server = TestServer::start(app::app()).await;
    let ada = server.sign_up().await;
    for bad in [
        json!({"title": ""}),
        json!({"title": "t".repeat(201)}),
        json!({"title": "ok", "body": "b".repeat(10_001)}),
        json!({"title": "nul\u{0}"}),
        json!({"title": "tab\there"}),
        json!({"title": "ok", "body": "nul\u{0}"}),
    ] {
        let (status, body) = write(&ada, &bad).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_note")),
            "{bad}"
        );
    }
    for not_text in [
        json!({"body": "no title"}),
        json!({"title": false}),
        json!({"title": "ok", "body": ["not", "text"]}),
    ] {
        let (status, body) = write(&ada, &not_text).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{not_text}: {body}");
        assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{body}"
        );
    }
    assert_eq!(
        send(ada.get("/notes/not-a-uuid")).await.0,
        StatusCode::NOT_FOUND
    );
    assert!(titles(&ada).await.is_empty());
}

#[tokio::test]
async fn notes_need_a_live_session() {
    let server = TestServer::start(app::app()).await;
    let ada = server.sign_up().await;
    let (status, _) = send(server.request(reqwest::Method::GET, "/notes")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let forged = server
        .request(reqwest::Method::GET, "/notes")
        .bearer_auth("eyJhbGciOiJub25lIn0.e30.");
    assert_eq!(send(forged).await.0, StatusCode::UNAUTHORIZED);

    assert_eq!(
        send(ada.post("/auth/logout")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(send(ada.get("/notes")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        write(&ada, &json!({"title": "too late"})).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_apps_setting_bounds_each_users_notes() {
    let server = TestServer::start_with(app::app(), &[("NOTES_PER_USER", "2")]).await;
    let ada = server.sign_up().await;
    let bob = server.sign_up().await;
    for title in ["one", "two"] {
        assert_eq!(
            write(&ada, &json!({"title": title})).await.0,
            StatusCode::CREATED
        );
    }
    let (status, body) = write(&ada, &json!({"title": "three"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("too_many_notes"))
    );
    assert_eq!(
        write(&bob, &json!({"title": "one"})).await.0,
        StatusCode::CREATED,
        "per user"
    );
}

#[test]
fn a_bad_value_of_the_apps_setting_stops_start_up_naming_it() {
    for bad in ["0", "many", "1000001"] {
        let err = app::app()
            .config_from_lookup(|name| (name == "NOTES_PER_USER").then(|| bad.into()))
            .expect_err(bad);
        assert_eq!(err.var, "NOTES_PER_USER", "{err}");
    }
    let reference =
        portcullis_server::config::settings::markdown_with(app::app().declared_settings());
    assert!(
        reference.contains("#### Notes"),
        "`config` lists the app's settings"
    );
    assert!(reference.contains("| `NOTES_PER_USER` | `1000` |"));
}

#[tokio::test]
async fn the_openapi_document_has_the_apps_routes_beside_portcullis_routes() {
    let server = TestServer::start(app::app()).await;
    let (status, document) = send(server.request(reqwest::Method::GET, "/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    let paths = &document["paths"];
    for path in ["/notes", "/notes/{id}", "/auth/login", "/sessions"] {
        assert!(paths.get(path).is_some(), "{path} is documented");
    }
    let security = &paths["/notes"]["get"]["security"];
    assert!(
        security.to_string().contains("BearerAuth"),
        "the notes routes are guarded like Portcullis's own: {security}"
    );
}

#[tokio::test]
async fn signing_in_and_the_account_page_work_in_the_app() {
    let server = TestServer::start(app::app()).await;
    let ada = server.sign_up().await;
    let (status, me) = send(ada.get("/me")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["email"], ada.email());
    let (status, sessions) = send(ada.get("/sessions")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sessions["sessions"].as_array().map(Vec::len), Some(1));
    let page = server
        .request(reqwest::Method::GET, "/account")
        .send()
        .await
        .expect("GET /account");
    assert_eq!(page.status(), StatusCode::OK);
    let (status, health) = send(server.request(reqwest::Method::GET, "/health")).await;
    assert_eq!(status, StatusCode::OK, "{health}");
}
