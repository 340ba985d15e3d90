//! A foreign axum service guarded by the layer, trusting the real server process: keys
//! from the server's JWKS URL only, liveness from the shared PostgreSQL.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::{
    AuthContext, Authenticator, PostgresLiveness, RemoteJwks, SessionGuardLayer, TokenVerifier,
};
use portcullis_e2e::ServerProcess;
use portcullis_testdb::TestDb;

async fn whoami(auth: AuthContext) -> String {
    auth.user_id().to_string()
}

#[tokio::test]
async fn a_service_knowing_only_the_server_url_verifies_and_honours_revocation() {
    portcullis::install_crypto_provider();
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;

    // The session and the token the server would hand out at login.
    let client = db.connect().await;
    let row = client
        .query_one(
            "WITH u AS (INSERT INTO users (email, password_hash) \
             VALUES ('foreign@example.com', 'x') RETURNING id) \
             INSERT INTO sessions (user_id, idle_expires_at, absolute_expires_at) \
             SELECT id, now() + interval '1 day', now() + interval '2 days' FROM u \
             RETURNING user_id::text, id::text",
            &[],
        )
        .await
        .unwrap();
    let (user, session): (String, String) = (row.get(0), row.get(1));
    let jwks: serde_json::Value = server
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
    let pem = std::fs::read(server.keys_dir().unwrap().join("ed25519-dev.pem")).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid);
    let token = jsonwebtoken::encode(
        &header,
        &serde_json::json!({
            "iss": "portcullis-server", "aud": "portcullis-server", "sub": user, "sid": session,
            "iat": now, "exp": now + 900,
        }),
        &EncodingKey::from_ed_pem(&pem).unwrap(),
    )
    .unwrap();

    // The foreign service: nothing shared with the server but its URL and the database.
    let verifier =
        TokenVerifier::builder(RemoteJwks::new(server.url("/.well-known/jwks.json")).unwrap())
            .issuer("portcullis-server")
            .audience("portcullis-server")
            .build();
    let store = PostgresLiveness::builder(db.config().clone().into())
        .start()
        .unwrap();
    let app = Router::new()
        .route("/whoami", get(whoami))
        .layer(SessionGuardLayer::new(Authenticator::new(
            verifier,
            store.clone(),
        )));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let http = reqwest::Client::new();
    let call = || {
        http.get(format!("http://{addr}/whoami"))
            .bearer_auth(&token)
            .send()
    };
    let ok = call().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), user);

    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.stats().listener_connected {
        assert!(Instant::now() < deadline, "listener never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client
        .execute(
            "UPDATE sessions SET revoked_at = now(), revoked_reason = 'admin' \
             WHERE id = $1::text::uuid",
            &[&session],
        )
        .await
        .unwrap();
    let revoked_at = Instant::now();
    loop {
        let status = call().await.unwrap().status();
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(2),
            "revocation not honoured"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let unauthorized = call().await.unwrap();
    assert!(
        unauthorized.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
}
