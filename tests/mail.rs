//! Account mail end to end: the real server process, a real PostgreSQL and a real SMTP
//! server (aiosmtpd, see `support/smtp.rs`). Verification, password reset, sign-in
//! alerts, the development mail folder, production's refusal to run without a mail
//! server, and an SMTP outage that loses no mail.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use portcullis_e2e::api::{Api, Reply, Session, assert_refused};
use portcullis_e2e::smtp::{Mail, SmtpServer};
use portcullis_e2e::{ServerProcess, free_port, server_command};
use portcullis_testdb::TestDb;
use reqwest::Method;
use reqwest::header::{RETRY_AFTER, USER_AGENT};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "a brand new passphrase";
/// The longest a mail may take to arrive.
const MAIL_WAIT: Duration = Duration::from_secs(30);
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0";
const CHROME: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 \
                      (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

/// A database, an SMTP server and the server sending to it, polling often.
async fn start(env: &[(&str, &str)]) -> (TestDb, SmtpServer, ServerProcess) {
    let smtp = SmtpServer::start();
    let db = TestDb::new().await;
    let url = smtp.url();
    let mut vars = vec![
        ("SMTP_URL", url.as_str()),
        ("MAIL_POLL_INTERVAL_SECONDS", "1"),
        ("MAIL_RETRY_BASE_SECONDS", "1"),
    ];
    vars.extend_from_slice(env);
    let server = ServerProcess::start(&db.url(), &vars).await;
    (db, smtp, server)
}

/// The mails to `address` whose subject is `subject`, waiting for `count` of them.
async fn mails(smtp: &SmtpServer, address: &str, subject: &str, count: usize) -> Vec<Mail> {
    let deadline = Instant::now() + MAIL_WAIT;
    loop {
        let found: Vec<Mail> = smtp
            .mails_to(address)
            .into_iter()
            .filter(|mail| mail.header("Subject") == Some(subject))
            .collect();
        if found.len() >= count {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} mails \"{subject}\" to {address} within {MAIL_WAIT:?}",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const VERIFY_SUBJECT: &str = "Confirm your email address";
const RESET_SUBJECT: &str = "Reset your password";
const ALERT_SUBJECT: &str = "New sign-in to your account";

async fn verification_token(
    smtp: &SmtpServer,
    server: &ServerProcess,
    address: &str,
    nth: usize,
) -> String {
    let mails = mails(smtp, address, VERIFY_SUBJECT, nth).await;
    mails[nth - 1].token(&server.url("/account/verify?token="))
}

async fn reset_token(
    smtp: &SmtpServer,
    server: &ServerProcess,
    address: &str,
    nth: usize,
) -> String {
    let mails = mails(smtp, address, RESET_SUBJECT, nth).await;
    mails[nth - 1].token(&server.url("/account/reset?token="))
}

async fn verify(api: &Api<'_>, token: &str) -> Reply {
    api.post_json("/auth/verify-email", &json!({ "token": token }))
        .await
}

async fn request_reset(api: &Api<'_>, email: &str) -> Reply {
    api.post_json("/auth/password-reset", &json!({ "email": email }))
        .await
}

async fn confirm_reset(api: &Api<'_>, token: &str, new_password: &str) -> Reply {
    api.post_json(
        "/auth/password-reset/confirm",
        &json!({ "token": token, "new_password": new_password }),
    )
    .await
}

fn email_verified(me: &Value) -> bool {
    me["email_verified"]
        .as_bool()
        .unwrap_or_else(|| panic!("no email_verified in {me}"))
}

#[tokio::test]
async fn the_verification_mail_arrives_and_its_token_verifies_once() {
    let (_db, smtp, server) = start(&[]).await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    let session = api.login_session("ada@example.com", PASSWORD).await;
    assert!(!email_verified(&api.me(&session.access).await.expect(200)));

    let mail = &mails(&smtp, "ada@example.com", VERIFY_SUBJECT, 1).await[0];
    let link = mail.link(&server.url("/account/verify?token="));
    let token = mail.token(&server.url("/account/verify?token="));
    assert_eq!(token.len(), 43, "{link}");

    // Opening the link (as a mail scanner does) serves the page and uses nothing up.
    let page = reqwest::get(&link).await.expect("GET the link");
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("/account/link.js") && !html.contains("<script>"),
        "{html}"
    );
    assert!(!email_verified(&api.me(&session.access).await.expect(200)));

    verify(&api, &token).await.expect(204);
    assert!(email_verified(&api.me(&session.access).await.expect(200)));
    verify(&api, &token)
        .await
        .expect_error(&[400], "invalid_verification_token");
    // Verified already: nothing more is sent.
    api.bearer(Method::POST, "/auth/verify-email/resend", &session.access)
        .await
        .expect(204);
}

#[tokio::test]
async fn a_resent_verification_mail_replaces_the_older_link() {
    let (_db, smtp, server) = start(&[]).await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    let session = api.login_session("ada@example.com", PASSWORD).await;
    let older = verification_token(&smtp, &server, "ada@example.com", 1).await;
    let reply = api
        .bearer(Method::POST, "/auth/verify-email/resend", &session.access)
        .await;
    reply.expect(202);
    let newer = verification_token(&smtp, &server, "ada@example.com", 2).await;
    assert_ne!(older, newer);
    verify(&api, &older)
        .await
        .expect_error(&[400], "invalid_verification_token");
    verify(&api, &newer).await.expect(204);
    for bad in ["", "not a token", &"A".repeat(43)] {
        verify(&api, bad)
            .await
            .expect_error(&[400], "invalid_verification_token");
    }
}

#[tokio::test]
async fn required_verification_is_told_only_to_the_right_password() {
    let (_db, smtp, server) = start(&[("REQUIRE_VERIFIED_EMAIL", "true")]).await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    api.login_reply("ada@example.com", "wrong password entirely")
        .await
        .expect_error(&[401], "invalid_credentials");
    api.login_reply("ada@example.com", PASSWORD)
        .await
        .expect_error(&[403], "email_not_verified");
    let token = verification_token(&smtp, &server, "ada@example.com", 1).await;
    verify(&api, &token).await.expect(204);
    api.login("ada@example.com", PASSWORD).await;
}

#[tokio::test]
async fn a_reset_mail_goes_to_an_existing_account_only_with_the_same_answer_for_both() {
    let (db, smtp, server) = start(&[]).await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;

    let unknown = request_reset(&api, "nobody@example.com").await;
    let known = request_reset(&api, "ada@example.com").await;
    assert_eq!(unknown.status, 202, "{}", unknown.body);
    assert_eq!(known.status, 202, "{}", known.body);
    assert_eq!(unknown.body, known.body);

    // The outbox is sent oldest first: by the time Ada's mail is here, a mail for the
    // earlier request would have been too.
    mails(&smtp, "ada@example.com", RESET_SUBJECT, 1).await;
    assert!(smtp.mails_to("nobody@example.com").is_empty());
    let client = db.connect().await;
    let requests: i64 = client
        .query_one(
            "SELECT count(*) FROM security_events WHERE kind = 'password_reset_requested'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(requests, 2, "both requests are recorded");
    outbox_drained(&client).await;
}

/// Waits until `count` reset requests have been processed: a request is answered before
/// its work, which records `password_reset_requested` in the transaction that queues its
/// mail (or, past a cap, queues none).
async fn reset_requests_processed(client: &tokio_postgres::Client, count: i64) {
    let deadline = Instant::now() + MAIL_WAIT;
    loop {
        let recorded: i64 = client
            .query_one(
                "SELECT count(*) FROM security_events WHERE kind = 'password_reset_requested'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if recorded >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{recorded} of {count} reset requests processed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the outbox is empty: every mail queued so far is with the mail server (the
/// worker deletes a sent mail's row when its batch commits, just after the server took it).
async fn outbox_drained(client: &tokio_postgres::Client) {
    let deadline = Instant::now() + MAIL_WAIT;
    loop {
        let queued: i64 = client
            .query_one("SELECT count(*) FROM mail_outbox", &[])
            .await
            .unwrap()
            .get(0);
        if queued == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{queued} mails left unsent");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_reset_sets_the_password_and_ends_every_session_at_once() {
    let (db, smtp, server) = start(&[]).await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    let sessions: Vec<Session> = [
        api.login_session("ada@example.com", PASSWORD).await,
        api.login_session("ada@example.com", PASSWORD).await,
    ]
    .into();
    for session in &sessions {
        api.me(&session.access).await.expect(200);
    }
    request_reset(&api, "ada@example.com").await.expect(202);
    let token = reset_token(&smtp, &server, "ada@example.com", 1).await;

    // A too-weak password is refused, and the token still works afterwards.
    confirm_reset(&api, &token, "short")
        .await
        .expect_error(&[400], "password_too_short");
    confirm_reset(&api, &token, NEW_PASSWORD).await.expect(204);

    for session in &sessions {
        assert_refused(&api.me(&session.access).await);
        assert_refused(&api.refresh(&session.refresh).await);
    }
    api.login_reply("ada@example.com", PASSWORD)
        .await
        .expect_error(&[401], "invalid_credentials");
    let fresh = api.login_session("ada@example.com", NEW_PASSWORD).await;
    // The mail proved the address is Ada's.
    assert!(email_verified(&api.me(&fresh.access).await.expect(200)));
    confirm_reset(&api, &token, "yet another passphrase")
        .await
        .expect_error(&[400], "invalid_reset_token");
    api.login("ada@example.com", NEW_PASSWORD).await;

    let client = db.connect().await;
    let reasons: Vec<String> = client
        .query(
            "SELECT revoked_reason FROM sessions WHERE id = ANY($1::uuid[])",
            &[&sessions
                .iter()
                .map(|s| s.id.parse::<uuid::Uuid>().unwrap())
                .collect::<Vec<_>>()],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(reasons, ["password_reset", "password_reset"]);
    let resets: i64 = client
        .query_one(
            "SELECT count(*) FROM security_events WHERE kind = 'password_reset' \
               AND detail = '{\"revoked_sessions\": 2}'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(resets, 1);
}

#[tokio::test]
async fn expired_random_and_replaced_reset_tokens_change_nothing() {
    // One live link at a time, so the newer request replaces the older link.
    let (db, smtp, server) = start(&[
        ("PASSWORD_RESET_TTL_SECONDS", "60"),
        ("PASSWORD_RESET_LIVE_LINKS", "1"),
    ])
    .await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;

    request_reset(&api, "ada@example.com").await.expect(202);
    let older = reset_token(&smtp, &server, "ada@example.com", 1).await;
    request_reset(&api, "ada@example.com").await.expect(202);
    let newer = reset_token(&smtp, &server, "ada@example.com", 2).await;
    assert_ne!(older, newer);
    confirm_reset(&api, &older, NEW_PASSWORD)
        .await
        .expect_error(&[400], "invalid_reset_token");
    let random = base64_43();
    for bad in [random.as_str(), "", "x", &"!".repeat(43)] {
        confirm_reset(&api, bad, NEW_PASSWORD)
            .await
            .expect_error(&[400], "invalid_reset_token");
    }
    // The newer one lives PASSWORD_RESET_TTL_SECONDS; moved past that, it fails too.
    let client = db.connect().await;
    let lifetimes: Vec<f64> = client
        .query(
            "SELECT extract(epoch FROM expires_at - created_at)::float8 FROM account_tokens \
             WHERE purpose = 'reset_password'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        lifetimes.len(),
        1,
        "the newer request replaced the older token"
    );
    assert!((lifetimes[0] - 60.0).abs() < 1.0, "{lifetimes:?}");
    client
        .execute(
            "UPDATE account_tokens SET created_at = created_at - interval '61 seconds', \
             expires_at = expires_at - interval '61 seconds' WHERE purpose = 'reset_password'",
            &[],
        )
        .await
        .unwrap();
    confirm_reset(&api, &newer, NEW_PASSWORD)
        .await
        .expect_error(&[400], "invalid_reset_token");
    api.login("ada@example.com", PASSWORD).await;
    api.login_reply("ada@example.com", NEW_PASSWORD)
        .await
        .expect_error(&[401], "invalid_credentials");
}

/// A token-shaped string no server issued.
fn base64_43() -> String {
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let seed = uuid::Uuid::new_v4().as_u128();
    (0..43)
        .map(|i| {
            let index = usize::try_from((seed >> (i % 21 * 6)) & 63).unwrap();
            // The last character of 32 bytes carries 4 bits: keep the rest zero.
            if i == 42 {
                'A'
            } else {
                alphabet.as_bytes()[index] as char
            }
        })
        .collect()
}

#[tokio::test]
async fn reset_requests_are_limited_per_address_alike_for_known_and_unknown_and_per_ip() {
    let (_db, _smtp, server) = start(&[
        ("RATE_LIMIT_ACCOUNT_MAIL_PER_ADDRESS", "1"),
        ("RATE_LIMIT_ACCOUNT_RECOVERY_PER_IP", "5"),
    ])
    .await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;

    request_reset(&api, "ada@example.com").await.expect(202);
    let known = request_reset(&api, "ada@example.com").await;
    request_reset(&api, "nobody@example.com").await.expect(202);
    let unknown = request_reset(&api, "nobody@example.com").await;
    for reply in [&known, &unknown] {
        reply.expect_error(&[429], "rate_limited");
        assert!(reply.header(RETRY_AFTER).is_some(), "{}", reply.what);
    }
    assert_eq!(known.body, unknown.body);

    // The fifth request from this IP is the last it may make this minute.
    request_reset(&api, "carol@example.com").await.expect(202);
    request_reset(&api, "dave@example.com")
        .await
        .expect_error(&[429], "rate_limited");
    confirm_reset(&api, &base64_43(), NEW_PASSWORD)
        .await
        .expect_error(&[429], "rate_limited");
}

/// Logs `email` in with `user_agent` from `ip` (the server trusts loopback as a proxy).
async fn login_from(api: &Api<'_>, email: &str, user_agent: &str, ip: &str) {
    let request = api
        .request(Method::POST, "/auth/login")
        .header(USER_AGENT, user_agent)
        .header("x-forwarded-for", ip)
        .json(&json!({ "email": email, "password": PASSWORD }));
    api.send(format!("POST /auth/login from {ip}"), request)
        .await
        .expect(200);
}

#[tokio::test]
async fn a_sign_in_from_a_new_device_and_network_alerts_the_owner_once() {
    let (db, smtp, server) = start(&[
        ("NEW_SIGNIN_ALERTS", "true"),
        ("TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    // The first login ever, then the same browser from the same /24: no alert.
    login_from(&api, "ada@example.com", FIREFOX, "203.0.113.7").await;
    login_from(&api, "ada@example.com", FIREFOX, "203.0.113.80").await;
    // Another browser from another network: an alert.
    login_from(&api, "ada@example.com", CHROME, "198.51.100.9").await;
    // Now known.
    login_from(&api, "ada@example.com", CHROME, "198.51.100.10").await;
    // A last alert, from a known browser on a new network, so that the mails of every
    // login before it have been sent by the time it arrives (oldest first).
    login_from(&api, "ada@example.com", FIREFOX, "192.0.2.1").await;

    let alerts = mails(&smtp, "ada@example.com", ALERT_SUBJECT, 2).await;
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    let first = &alerts[0].body;
    assert!(first.contains("Chrome 120 on Mac"), "{first}");
    assert!(first.contains(", from 198.51.100.9, at "), "{first}");
    assert!(first.contains(" UTC"), "{first}");
    assert!(first.contains(&server.url("/account")), "{first}");
    assert!(
        alerts[1]
            .body
            .contains("Firefox 131 on Linux, from 192.0.2.1, at ")
    );
    // Once every queued mail is with the mail server, there is no third alert.
    outbox_drained(&db.connect().await).await;
    assert_eq!(
        mails(&smtp, "ada@example.com", ALERT_SUBJECT, 2)
            .await
            .len(),
        2
    );
}

#[tokio::test]
async fn an_smtp_outage_delays_mail_but_loses_none() {
    let (db, mut smtp, server) = start(&[]).await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    verification_token(&smtp, &server, "ada@example.com", 1).await;

    smtp.stop();
    let asked = Instant::now();
    request_reset(&api, "ada@example.com").await.expect(202);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "the answer waited for the mail server"
    );

    // The worker tries, fails and keeps the mail with its error.
    let client = db.connect().await;
    let deadline = Instant::now() + MAIL_WAIT;
    loop {
        let row = client
            .query_opt("SELECT attempts, last_error FROM mail_outbox", &[])
            .await
            .unwrap();
        if let Some(row) = row {
            let attempts: i32 = row.get(0);
            let error: Option<String> = row.get(1);
            if attempts >= 1 {
                assert!(error.is_some_and(|e| !e.is_empty()));
                break;
            }
        }
        assert!(Instant::now() < deadline, "no failed attempt recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(smtp.mails_to("ada@example.com").len() == 1);

    smtp.resume();
    let token = reset_token(&smtp, &server, "ada@example.com", 1).await;
    confirm_reset(&api, &token, NEW_PASSWORD).await.expect(204);
}

#[tokio::test]
async fn development_without_smtp_writes_eml_files_and_logs_their_path_not_the_token() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[("MAIL_POLL_INTERVAL_SECONDS", "1")]).await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    let folder = server.keys_dir().expect("a keys folder").join("mail");
    let deadline = Instant::now() + MAIL_WAIT;
    let file = loop {
        let found = std::fs::read_dir(&folder).ok().and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .find(|path| path.extension().is_some_and(|ext| ext == "eml"))
        });
        if let Some(file) = found {
            break file;
        }
        assert!(Instant::now() < deadline, "no .eml in {}", folder.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mail = Mail::parse(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(mail.header("To"), Some("ada@example.com"));
    let token = mail.token(&server.url("/account/verify?token="));
    assert_eq!(token.len(), 43, "{}", mail.body);
    let deadline = Instant::now() + MAIL_WAIT;
    while !server.log().contains(&file.display().to_string()) {
        assert!(
            Instant::now() < deadline,
            "the path is not logged:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !server.log().contains(&token),
        "a token in the log:\n{}",
        server.log()
    );
    verify(&api, &token).await.expect(204);
}

#[tokio::test]
async fn production_without_smtp_url_refuses_to_start_and_names_it() {
    let keys = tempfile::tempdir().unwrap();
    let db = TestDb::reserved().await;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let signing = keys.path().join("signing.pem");
    let refresh = keys.path().join("refresh.key");
    let command = server_command(
        &[],
        &[
            ("APP_ENV", "production"),
            ("DATABASE_URL", &db.url()),
            ("BIND_ADDR", &addr.to_string()),
            ("JWT_SIGNING_KEYS", &signing.display().to_string()),
            ("REFRESH_TOKEN_KEY_FILE", &refresh.display().to_string()),
        ],
    );
    let mut server = ServerProcess::spawn(command, addr);
    let status = server.wait_for_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(2), "{}", server.log());
    let log = server.log();
    assert!(log.contains("SMTP_URL"), "{log}");
    assert!(log.contains("production"), "{log}");
}

/// Issue 22, item 6: anyone may ask for a reset of Ada's address; that must not void the
/// link Ada is about to use. Up to `PASSWORD_RESET_LIVE_LINKS` links work at once, each
/// once; beyond that the oldest goes.
#[tokio::test]
async fn another_request_does_not_void_a_pending_reset_link() {
    let (db, smtp, server) = start(&[("RATE_LIMIT_ACCOUNT_MAIL_PER_ADDRESS", "100")]).await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    request_reset(&api, "ada@example.com").await.expect(202);
    let adas = reset_token(&smtp, &server, "ada@example.com", 1).await;
    // Someone else asks twice more.
    request_reset(&api, "ada@example.com").await.expect(202);
    request_reset(&api, "ada@example.com").await.expect(202);
    let third = reset_token(&smtp, &server, "ada@example.com", 3).await;
    confirm_reset(&api, &adas, NEW_PASSWORD).await.expect(204);
    confirm_reset(&api, &adas, "yet another passphrase")
        .await
        .expect_error(&[400], "invalid_reset_token");
    // The reset ended the other links with the old password.
    confirm_reset(&api, &third, "yet another passphrase")
        .await
        .expect_error(&[400], "invalid_reset_token");
    api.login("ada@example.com", NEW_PASSWORD).await;

    // A fourth request while three are live voids the oldest only.
    for _ in 0..4 {
        request_reset(&api, "ada@example.com").await.expect(202);
    }
    let all = mails(&smtp, "ada@example.com", RESET_SUBJECT, 7).await;
    let link = server.url("/account/reset?token=");
    let live: Vec<String> = all[3..].iter().map(|mail| mail.token(&link)).collect();
    let stored: i64 = db
        .connect()
        .await
        .query_one(
            "SELECT count(*) FROM account_tokens WHERE purpose = 'reset_password'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 3);
    confirm_reset(&api, &live[0], "a fourth passphrase")
        .await
        .expect_error(&[400], "invalid_reset_token");
    confirm_reset(&api, &live[3], "a fourth passphrase")
        .await
        .expect(204);
}

/// Issue 22, item 7: a reset link asked for before a password change, a reset or
/// signing out everywhere must not work after it: whoever asked for it (maybe the
/// attacker the owner is locking out) cannot use it to take the account back.
#[tokio::test]
async fn reset_links_die_with_a_password_change_and_with_logout_all() {
    let (_db, smtp, server) = start(&[("RATE_LIMIT_ACCOUNT_MAIL_PER_ADDRESS", "100")]).await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;

    request_reset(&api, "ada@example.com").await.expect(202);
    let before_change = reset_token(&smtp, &server, "ada@example.com", 1).await;
    let session = api.login_session("ada@example.com", PASSWORD).await;
    let change = api
        .request(Method::POST, "/auth/password")
        .bearer_auth(&session.access)
        .json(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD}));
    api.send("POST /auth/password".to_owned(), change)
        .await
        .expect(204);
    confirm_reset(&api, &before_change, "the attacker's passphrase")
        .await
        .expect_error(&[400], "invalid_reset_token");

    request_reset(&api, "ada@example.com").await.expect(202);
    let before_logout_all = reset_token(&smtp, &server, "ada@example.com", 2).await;
    api.bearer(Method::POST, "/auth/logout-all", &session.access)
        .await
        .expect(204);
    confirm_reset(&api, &before_logout_all, "the attacker's passphrase")
        .await
        .expect_error(&[400], "invalid_reset_token");
    api.login("ada@example.com", NEW_PASSWORD).await;
}

/// Issue 22, item 8: a mailbox gets at most `ACCOUNT_MAIL_PER_HOUR` account mails an
/// hour and `ACCOUNT_MAIL_PER_DAY` a day, across verification, reset and alerts and
/// whatever spelling of the address asked: past that a reset request is still 202 (it
/// tells nothing) but mails nothing, and a verification resend gets 429.
#[tokio::test]
async fn a_mailbox_gets_at_most_its_hourly_and_daily_caps_of_account_mail() {
    let (db, smtp, server) = start(&[
        ("ACCOUNT_MAIL_PER_HOUR", "3"),
        ("ACCOUNT_MAIL_PER_DAY", "5"),
        ("RATE_LIMIT_ACCOUNT_MAIL_PER_ADDRESS", "100"),
        ("RATE_LIMIT_ACCOUNT_RECOVERY_PER_IP", "100"),
    ])
    .await;
    let api = Api::new(&server);
    // Registration's verification mail is the first of the hour.
    api.register("ada@example.com", PASSWORD).await;
    for spelling in [
        "ada@example.com",
        "\"ada\"@example.com",
        "ADA@Example.com",
        "\"Ada\"@example.com",
        "ada@EXAMPLE.COM",
        "ada@example.com",
    ] {
        request_reset(&api, spelling).await.expect(202);
    }
    let session = api.login_session("ada@example.com", PASSWORD).await;
    let resend = api
        .bearer(Method::POST, "/auth/verify-email/resend", &session.access)
        .await;
    resend.expect_error(&[429], "rate_limited");
    mails(&smtp, "ada@example.com", RESET_SUBJECT, 2).await;
    let client = db.connect().await;
    reset_requests_processed(&client, 6).await;
    outbox_drained(&client).await;
    assert_eq!(smtp.mails_to("ada@example.com").len(), 3, "the hourly cap");

    // The daily cap: four mails earlier today (but not this hour) leave room for one.
    api.register("bob@example.com", PASSWORD).await;
    client
        .execute(
            "UPDATE account_mail_log SET queued_at = now() - interval '2 hours' \
             WHERE mailbox = 'bob@example.com'",
            &[],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO account_mail_log (mailbox, kind, queued_at) \
             SELECT 'bob@example.com', 'password_reset', now() - interval '3 hours' \
             FROM generate_series(1, 3)",
            &[],
        )
        .await
        .unwrap();
    for _ in 0..3 {
        request_reset(&api, "bob@example.com").await.expect(202);
    }
    mails(&smtp, "bob@example.com", RESET_SUBJECT, 1).await;
    reset_requests_processed(&client, 6 + 3).await;
    outbox_drained(&client).await;
    assert_eq!(
        smtp.mails_to("bob@example.com")
            .iter()
            .filter(|mail| mail.header("Subject") == Some(RESET_SUBJECT))
            .count(),
        1,
        "the daily cap"
    );
}

/// Issue 22, item 9: a device the owner signed out is not "known" any more, so its next
/// sign-in alerts; and sign-ins that cycle user agents get at most
/// `SIGNIN_ALERTS_PER_HOUR` alerts.
#[tokio::test]
async fn a_signed_out_device_alerts_again_and_alerts_are_capped_per_account() {
    let (db, smtp, server) = start(&[
        ("NEW_SIGNIN_ALERTS", "true"),
        ("TRUSTED_PROXIES", "127.0.0.1"),
        ("SIGNIN_ALERTS_PER_HOUR", "3"),
        ("RATE_LIMIT_LOGIN_PER_IP", "1000"),
    ])
    .await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    let request = api
        .request(Method::POST, "/auth/login")
        .header(USER_AGENT, FIREFOX)
        .header("x-forwarded-for", "203.0.113.7")
        .json(&json!({ "email": "ada@example.com", "password": PASSWORD }));
    let owner = Session::from_pair(
        &api.send("owner's login".to_owned(), request)
            .await
            .expect(200),
    );
    // The thief's device signs in (an alert), the owner signs it out.
    login_from(&api, "ada@example.com", CHROME, "198.51.100.9").await;
    let sessions = api.sessions(&owner).await;
    let thief = sessions
        .iter()
        .find(|s| s["ip"] == "198.51.100.9")
        .expect("the thief's session");
    api.delete_session(&owner, thief["id"].as_str().unwrap())
        .await
        .expect(204);
    // It signs in again: not known any more, so a second alert.
    login_from(&api, "ada@example.com", CHROME, "198.51.100.9").await;
    mails(&smtp, "ada@example.com", ALERT_SUBJECT, 2).await;

    // Thirty sign-ins cycling user agents: one more alert at most (three an hour).
    for n in 0..30 {
        let agent =
            format!("Mozilla/5.0 (X11; Linux x86_64; rv:{n}.0) Gecko/20100101 Firefox/{n}.0");
        login_from(&api, "ada@example.com", &agent, &format!("192.0.2.{n}")).await;
    }
    // Each alert is queued in its sign-in's transaction, committed before the answer: a
    // drained outbox is every alert sent.
    let client = db.connect().await;
    outbox_drained(&client).await;
    let alerts = smtp
        .mails_to("ada@example.com")
        .into_iter()
        .filter(|mail| mail.header("Subject") == Some(ALERT_SUBJECT))
        .count();
    assert_eq!(alerts, 3, "alerts are capped per account");
}
