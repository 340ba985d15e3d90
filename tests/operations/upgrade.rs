//! Upgrading a database from the schema before refresh state moved into the session row
//! (migration V2) keeps its users signed in: a refresh token issued before the upgrade
//! works once more and moves to the current format, a retry of it from the same client
//! still gets the same successor, and presenting it again later is recognised as reuse.
//! The per-generation rows are gone with the upgrade.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_e2e::ServerProcess;
use portcullis_e2e::api::{Api, assert_refused, token};
use portcullis_server::refresh_token::{
    LEGACY_TOKEN_CHARS, PresentedToken, RefreshKey, RefreshToken, TOKEN_CHARS,
};
use portcullis_testdb::TestDb;
use tokio_postgres::Client;
use uuid::Uuid;

/// The last schema with one `refresh_tokens` row per generation.
const SCHEMA_BEFORE: u16 = 2;

/// A token as the server before the upgrade issued it: 32 random bytes, base64url.
fn legacy_token() -> String {
    let mut bytes = Uuid::new_v4().as_bytes().to_vec();
    bytes.extend_from_slice(Uuid::new_v4().as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What the old server stored at login and at one rotation: generation 0 rotated,
/// generation 1 (the successor) current. Returns the session id.
async fn old_session(sql: &Client, key: &RefreshKey, first: &str) -> Uuid {
    let first = PresentedToken::parse(first).unwrap();
    let second = key.successor(first.secret());
    let user: Uuid = sql
        .query_one(
            "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id",
            &[&format!("{}@example.com", Uuid::new_v4())],
        )
        .await
        .unwrap()
        .get(0);
    let session: Uuid = sql
        .query_one(
            "INSERT INTO sessions (user_id, idle_expires_at, absolute_expires_at) \
             VALUES ($1, now() + interval '14 days', now() + interval '90 days') RETURNING id",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    sql.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, generation, rotated_at) \
         VALUES ($1, $3, 0, now() - interval '1 hour'), ($2, $3, 1, NULL)",
        &[&key.hash(first.secret()), &key.hash(&second), &session],
    )
    .await
    .unwrap();
    session
}

#[tokio::test]
async fn a_token_issued_before_the_upgrade_works_once_more_and_moves_to_the_new_format() {
    let db = TestDb::empty().await;
    let mut sql = db.connect().await;
    portcullis_migrations::migrate_to(&mut sql, SCHEMA_BEFORE)
        .await
        .unwrap();
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("refresh.key");
    std::fs::write(&key_file, [42_u8; 32]).unwrap();
    let key = RefreshKey::from_secret(&[42; 32]);
    let first = legacy_token();
    let session = old_session(&sql, &key, &first).await;
    let current = URL_SAFE_NO_PAD.encode(
        // The text of generation 1, as the old server handed it out.
        {
            let first = PresentedToken::parse(&first).unwrap();
            let next = RefreshToken::following(
                &first,
                portcullis_server::SessionId::from_uuid(session),
                key.successor(first.secret()),
            );
            let text = next.expose();
            URL_SAFE_NO_PAD.decode(text).unwrap()[21..].to_vec()
        },
    );
    assert_eq!(current.len(), LEGACY_TOKEN_CHARS);

    // The new server migrates the database as it starts.
    let server = ServerProcess::start(
        &db.url(),
        &[("REFRESH_TOKEN_KEY_FILE", &key_file.display().to_string())],
    )
    .await;
    let api = Api::new(&server);
    let tables: i64 = sql
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'refresh_tokens'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "the per-generation rows went with the upgrade");

    let moved = api.refresh(&current).await.expect(200);
    let new_token = token(&moved, "refresh_token");
    assert_eq!(moved["session_id"], session.to_string());
    assert_eq!(
        new_token.len(),
        TOKEN_CHARS,
        "the successor has the new format"
    );
    api.me(&token(&moved, "access_token")).await.expect(200);
    // A lost response: the same client retries the old token and gets the same successor.
    let retried = api.refresh(&current).await.expect(200);
    assert_eq!(token(&retried, "refresh_token"), new_token);
    // A token rotated before the upgrade is no longer known: refused, nothing revoked.
    api.refresh(&first)
        .await
        .expect_error(&[401], "invalid_refresh_token");
    let newer = api.refresh(&new_token).await.expect(200);

    // The old token, presented once the session has moved on, is reuse.
    api.refresh(&current)
        .await
        .expect_error(&[401], "invalid_refresh_token");
    assert_refused(&api.me(&token(&newer, "access_token")).await);
    let reason: Option<String> = sql
        .query_one(
            "SELECT revoked_reason FROM sessions WHERE id = $1",
            &[&session],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(reason.as_deref(), Some("refresh_reuse"));
}
