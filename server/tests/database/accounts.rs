//! The account logic against a real PostgreSQL, at the Rust API level: register, login,
//! refresh rotation and revocation, as `prepare` wires them for the server. Each test has
//! a database of its own (`portcullis-testdb`); without PostgreSQL the process stops with
//! one line saying how to start one.

use std::net::IpAddr;

use crate::app::accounts::{
    Email, LoginResult, NewPassword, RefreshClient, RevokeScope, TokenPair,
};
use crate::app::error::ServiceError;
use crate::app::ids::{SessionId, UserId};
use crate::app::store::sessions::{Device, RevokeReason};
use crate::app::{App, AppState, prepare};
use portcullis_testdb::TestDb;
use uuid::Uuid;

const PASSWORD: &str = "correct horse battery";

/// The server's state over a fresh database, with `settings` on top of the defaults.
struct Server {
    state: AppState,
    db: TestDb,
    keys: tempfile::TempDir,
}

impl Server {
    async fn start(settings: &[(&str, &str)]) -> Self {
        let db = TestDb::new().await;
        let keys = tempfile::tempdir().expect("a directory for development keys");
        let url = db.url();
        let keys_dir = keys.path().to_owned();
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        let app = App::standalone();
        let config = app
            .config_from_lookup(|name| match name {
                "DATABASE_URL" => Some(url.clone().into()),
                "DEV_KEYS_DIR" => Some(keys_dir.clone().into()),
                _ => settings
                    .iter()
                    .find(|(given, _)| given == name)
                    .map(|(_, value)| value.into()),
            })
            .expect("the test configuration is valid");
        let state = prepare(&app, config).await.expect("the server prepares");
        Self { state, db, keys }
    }

    async fn register(&self, email: &str) -> UserId {
        self.state
            .accounts
            .credentials
            .register(&email_of(email), new_password(PASSWORD))
            .await
            .expect("registering")
    }

    async fn login_from(&self, email: &str, ip: &str) -> TokenPair {
        let device = Device {
            ip: Some(self::ip(ip)),
            user_agent: Some("curl/8.0".to_owned()),
            ..Device::default()
        };
        self.state
            .accounts
            .credentials
            .login(&email_of(email), PASSWORD.into(), device, "bearer")
            .await
            .map_or_else(
                |refusal| panic!("login refused: {:?}", refusal.error),
                |result| match result {
                    LoginResult::SignedIn(pair) => pair,
                    LoginResult::SecondFactorNeeded(_) => panic!("no factor was enrolled"),
                },
            )
    }

    async fn rotate(&self, pair: &TokenPair) -> Result<TokenPair, ServiceError> {
        let client = RefreshClient {
            ip: Some("203.0.113.7".parse().unwrap()),
            user_agent: Some("curl/8.0".to_owned()),
            binding: None,
        };
        self.state
            .accounts
            .refresh
            .rotate(&pair.refresh_token.expose(), &client)
            .await
    }

    /// `(revoked_reason, live)` of a session, straight from the table.
    async fn session_row(&self, session: SessionId) -> (Option<String>, bool) {
        let row = self
            .db
            .connect()
            .await
            .query_one(
                "SELECT revoked_reason, revoked_at IS NULL FROM sessions WHERE id = $1",
                &[&session],
            )
            .await
            .expect("the session row");
        (row.get(0), row.get(1))
    }

    /// One number from `sql`.
    async fn count(&self, sql: &str) -> i64 {
        self.db
            .connect()
            .await
            .query_one(sql, &[])
            .await
            .expect("the count")
            .get(0)
    }

    /// The `(kind, detail)` of every security event, oldest first.
    async fn events(&self) -> Vec<(String, serde_json::Value)> {
        self.db
            .connect()
            .await
            .query("SELECT kind, detail FROM security_events ORDER BY id", &[])
            .await
            .expect("the events")
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    }
}

fn email_of(text: &str) -> Email {
    Email::parse(text).expect("a valid email")
}

fn new_password(text: &str) -> NewPassword {
    NewPassword::parse(text.into()).expect("a password the policy accepts")
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[tokio::test]
async fn a_registered_account_signs_in_under_its_normalised_email_only_with_its_password() {
    let server = Server::start(&[]).await;
    let credentials = &server.state.accounts.credentials;
    let user = server.register("Ada@Example.COM").await;
    assert!(matches!(
        credentials
            .register(
                &email_of("ada@example.com"),
                new_password("another password")
            )
            .await,
        Err(ServiceError::EmailTaken)
    ));
    assert_eq!(
        credentials.profile(user).await.unwrap(),
        ("ada@example.com".to_owned(), false)
    );

    for (email, password) in [
        ("ada@example.com", "wrong password"),
        ("bob@example.com", PASSWORD),
    ] {
        let refusal = credentials
            .login(
                &email_of(email),
                password.into(),
                Device::default(),
                "bearer",
            )
            .await
            .expect_err("no session for wrong credentials");
        assert!(
            matches!(refusal.error, ServiceError::InvalidCredentials),
            "{:?}",
            refusal.error
        );
        assert!(refusal.counts, "a failed guess keeps its rate-limit tokens");
    }
    let events = server.events().await;
    assert_eq!(
        events
            .iter()
            .filter(|(kind, _)| kind == "login_failed")
            .count(),
        2
    );

    let pair = server.login_from("ADA@example.com", "203.0.113.7").await;
    let listed = server.state.accounts.sessions.list(user).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, pair.session_id);
    assert_eq!(listed[0].ip, Some(ip("203.0.113.7")));
    assert_eq!(listed[0].user_agent.as_deref(), Some("curl/8.0"));
}

#[tokio::test]
async fn a_client_is_known_by_a_recent_session_ip_or_a_bearer_token_of_the_account() {
    let server = Server::start(&[]).await;
    let credentials = &server.state.accounts.credentials;
    let ada = server.register("ada@example.com").await;
    let bob = server.register("bob@example.com").await;
    server.login_from("ada@example.com", "203.0.113.7").await;
    let email = email_of("ada@example.com");

    let known =
        |signed_in_as, from| credentials.is_known_client(&email, signed_in_as, Some(ip(from)));
    assert!(known(None, "203.0.113.7").await.unwrap());
    assert!(!known(None, "198.51.100.1").await.unwrap());
    assert!(known(Some(ada), "198.51.100.1").await.unwrap());
    assert!(!known(Some(bob), "198.51.100.1").await.unwrap());
    assert!(
        !credentials
            .is_known_client(
                &email_of("nobody@example.com"),
                Some(ada),
                Some(ip("203.0.113.7"))
            )
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn refresh_rotates_a_retry_gets_the_same_successor_and_an_older_token_revokes() {
    let server = Server::start(&[]).await;
    server.register("ada@example.com").await;
    let first = server.login_from("ada@example.com", "203.0.113.7").await;
    let second = server.rotate(&first).await.expect("the first rotation");
    assert_eq!(second.session_id, first.session_id);
    assert_ne!(second.refresh_token.expose(), first.refresh_token.expose());

    // The previous token again, inside the grace window, from the rotating client.
    let third = server.rotate(&second).await.expect("the second rotation");
    let retried = server.rotate(&second).await.expect("a retry");
    assert_eq!(retried.refresh_token.expose(), third.refresh_token.expose());
    assert_eq!(server.session_row(first.session_id).await, (None, true));

    // Two generations back: genuine, so reuse, and the session is revoked.
    assert!(matches!(
        server.rotate(&first).await,
        Err(ServiceError::InvalidRefreshToken)
    ));
    assert_eq!(
        server.session_row(first.session_id).await,
        (Some(RevokeReason::RefreshReuse.as_str().to_owned()), false)
    );
    assert!(matches!(
        server.rotate(&third).await,
        Err(ServiceError::InvalidRefreshToken)
    ));
    let garbage = server
        .state
        .accounts
        .refresh
        .rotate("not a refresh token", &RefreshClient::default())
        .await;
    assert!(matches!(garbage, Err(ServiceError::InvalidRefreshToken)));
}

#[tokio::test]
async fn revoking_ends_only_the_named_sessions_of_their_own_user_and_records_it() {
    let server = Server::start(&[]).await;
    let sessions = &server.state.accounts.sessions;
    let ada = server.register("ada@example.com").await;
    let bob = server.register("bob@example.com").await;
    let [one, two, three] = [
        server.login_from("ada@example.com", "203.0.113.7").await,
        server.login_from("ada@example.com", "203.0.113.8").await,
        server.login_from("ada@example.com", "203.0.113.9").await,
    ];
    let bobs = server.login_from("bob@example.com", "198.51.100.1").await;

    let only = |session| RevokeScope::One {
        session,
        reason: RevokeReason::RevokedByUser,
    };
    assert!(matches!(
        sessions.revoke(ada, only(bobs.session_id), None).await,
        Err(ServiceError::SessionNotFound)
    ));
    assert!(matches!(
        sessions
            .revoke(ada, only(SessionId::from_uuid(Uuid::new_v4())), None)
            .await,
        Err(ServiceError::SessionNotFound)
    ));
    assert_eq!(
        sessions
            .revoke(ada, only(two.session_id), None)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        sessions
            .revoke(ada, only(two.session_id), None)
            .await
            .unwrap(),
        0,
        "an ended session changes nothing"
    );
    let others = RevokeScope::AllBut {
        keep: Some(one.session_id),
        reason: RevokeReason::RevokeOthers,
    };
    assert_eq!(sessions.revoke(ada, others, None).await.unwrap(), 1);

    let live: Vec<SessionId> = sessions
        .list(ada)
        .await
        .unwrap()
        .iter()
        .map(|row| row.id)
        .collect();
    assert_eq!(live, [one.session_id]);
    assert_eq!(
        server.session_row(three.session_id).await,
        (Some("revoke_others".to_owned()), false)
    );
    assert_eq!(sessions.list(bob).await.unwrap().len(), 1);
    let revoked: Vec<serde_json::Value> = server
        .events()
        .await
        .into_iter()
        .filter(|(kind, _)| kind == "sessions_revoked")
        .map(|(_, detail)| detail)
        .collect();
    assert_eq!(
        revoked,
        [
            serde_json::json!({ "reason": "revoked_by_user", "count": 1 }),
            serde_json::json!({ "reason": "revoke_others", "count": 1 }),
        ]
    );
}

#[tokio::test]
async fn a_password_change_revokes_the_other_sessions_and_wrong_ones_end_the_session() {
    let server = Server::start(&[("PASSWORD_CHANGE_MAX_FAILURES", "2")]).await;
    let credentials = &server.state.accounts.credentials;
    let ada = server.register("ada@example.com").await;
    let here = server.login_from("ada@example.com", "203.0.113.7").await;
    let elsewhere = server.login_from("ada@example.com", "203.0.113.8").await;
    let change = |session, current: &str, new: &str| {
        credentials.change_password(
            ada,
            session,
            current.into(),
            new_password(new),
            Some(ip("203.0.113.7")),
        )
    };

    credentials
        .change_password(
            ada,
            here.session_id,
            PASSWORD.into(),
            new_password("a new password"),
            None,
        )
        .await
        .expect("the password changes");
    assert_eq!(server.session_row(here.session_id).await, (None, true));
    assert_eq!(
        server.session_row(elsewhere.session_id).await,
        (Some("password_change".to_owned()), false)
    );
    let old = credentials
        .login(
            &email_of("ada@example.com"),
            PASSWORD.into(),
            Device::default(),
            "bearer",
        )
        .await;
    assert!(old.is_err(), "the old password no longer signs in");

    // Wrong current passwords count, and the second ends the session giving them.
    let refusal = change(here.session_id, "not it at all", "whatever else")
        .await
        .expect_err("a wrong current password");
    assert!(matches!(refusal.error, ServiceError::WrongCurrentPassword));
    assert!(refusal.counts);
    assert_eq!(server.session_row(here.session_id).await, (None, true));
    change(here.session_id, "still not it", "whatever else")
        .await
        .expect_err("a wrong current password");
    assert_eq!(
        server.session_row(here.session_id).await,
        (Some("password_change_failures".to_owned()), false)
    );
    // The right password from the ended session changes nothing.
    let ended = change(here.session_id, "a new password", "yet another one").await;
    assert!(matches!(
        ended.map_err(|refusal| refusal.error),
        Err(ServiceError::SessionEnded)
    ));
    let kinds: Vec<String> = server
        .events()
        .await
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "password_changed",
            "login_failed",
            "password_change_failed",
            "password_change_failed",
            "sessions_revoked",
        ]
    );
}

#[tokio::test]
async fn registration_queues_a_verification_mail_that_the_worker_sends_once() {
    let server = Server::start(&[]).await;
    server.register("ada@example.com").await;
    assert_eq!(server.count("SELECT count(*) FROM mail_outbox").await, 1);
    assert_eq!(
        server
            .count("SELECT count(*) FROM account_tokens WHERE purpose = 'verify_email'")
            .await,
        1
    );

    let outcome = server.state.mail_worker.deliver_batch().await.unwrap();
    assert_eq!((outcome.claimed, outcome.sent), (1, 1), "{outcome:?}");
    assert_eq!(server.count("SELECT count(*) FROM mail_outbox").await, 0);
    let files: Vec<_> = std::fs::read_dir(server.keys.path().join("mail"))
        .expect("the development mail folder")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "eml"))
        .collect();
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(files[0].path()).unwrap();
    assert!(text.contains("To: ada@example.com"), "{text}");
    let again = server.state.mail_worker.deliver_batch().await.unwrap();
    assert_eq!(again.claimed, 0);
}

#[tokio::test]
async fn a_failed_attempt_is_kept_counted_and_due_later_and_a_locked_mail_is_skipped() {
    // Nothing listens on port 1: every attempt fails to connect.
    let server = Server::start(&[
        ("SMTP_URL", "smtp://127.0.0.1:1?tls=none"),
        ("MAIL_RETRY_BASE_SECONDS", "60"),
    ])
    .await;
    server.register("ada@example.com").await;

    // Another replica's worker holds the mail: this one skips it instead of waiting.
    let mut other = server.db.connect().await;
    let holding = other.transaction().await.unwrap();
    holding
        .execute("SELECT id FROM mail_outbox FOR UPDATE", &[])
        .await
        .unwrap();
    let skipped = server.state.mail_worker.deliver_batch().await.unwrap();
    assert_eq!(skipped.claimed, 0);
    holding.rollback().await.unwrap();

    let failed = server.state.mail_worker.deliver_batch().await.unwrap();
    assert_eq!((failed.claimed, failed.deferred), (1, 1), "{failed:?}");
    let row = server
        .db
        .connect()
        .await
        .query_one(
            "SELECT attempts, last_error, next_attempt_at > now() + interval '50 seconds' \
             FROM mail_outbox",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    assert!(
        row.get::<_, Option<String>>(1)
            .is_some_and(|e| !e.is_empty())
    );
    assert!(
        row.get::<_, bool>(2),
        "the next attempt waits the base delay"
    );
    let not_due = server.state.mail_worker.deliver_batch().await.unwrap();
    assert_eq!(not_due.claimed, 0);
}

#[tokio::test]
async fn a_reset_for_an_unknown_address_stores_only_its_event() {
    let server = Server::start(&[]).await;
    server.register("ada@example.com").await;
    let recovery = &server.state.accounts.recovery;
    recovery
        .process_reset(&email_of("nobody@example.com"), Some(ip("203.0.113.7")))
        .await
        .unwrap();
    assert_eq!(
        server
            .count("SELECT count(*) FROM account_tokens WHERE purpose = 'reset_password'")
            .await,
        0
    );
    recovery
        .process_reset(&email_of("ada@example.com"), None)
        .await
        .unwrap();
    assert_eq!(
        server
            .count("SELECT count(*) FROM account_tokens WHERE purpose = 'reset_password'")
            .await,
        1
    );
    assert_eq!(
        server
            .count("SELECT count(*) FROM mail_outbox WHERE kind = 'password_reset'")
            .await,
        1
    );
    let requests: Vec<serde_json::Value> = server
        .events()
        .await
        .into_iter()
        .filter(|(kind, _)| kind == "password_reset_requested")
        .map(|(_, detail)| detail)
        .collect();
    assert_eq!(
        requests,
        [
            serde_json::json!({ "known": false }),
            serde_json::json!({ "known": true })
        ]
    );
}
