//! Second factors and step-up over real HTTP against the real server: TOTP enrolment and
//! login with `mfa_required`, replayed and guessed codes, recovery codes, passkeys (a
//! software authenticator), step-up raising `aal` and `auth_time`, the privileged routes'
//! RFC 9470 challenge, factor removal revoking other sessions, and the step-up asked of a
//! refresh from another device.
//!
//! TOTP codes are computed here from the `secret` the server returns, with `totp-rs`, as
//! an authenticator app would; the generator is checked against RFC 6238's vector first.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_e2e::ServerProcess;
use portcullis_e2e::api::{Api, Reply, Session};
use portcullis_testdb::TestDb;
use reqwest::Method;
use reqwest::header::{SET_COOKIE, USER_AGENT, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use totp_rs::{Algorithm, Secret, TOTP};

use super::soft_passkey::SoftPasskey;

const PASSWORD: &str = "correct horse battery staple";
const FIREFOX_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0";
const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
                              (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36";

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The code an authenticator app shows for `secret` (base32) `offset` seconds from now.
fn code(secret: &str, offset: i64) -> String {
    let bytes = Secret::Encoded(secret.to_owned())
        .to_bytes()
        .expect("a base32 secret");
    let totp = TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, bytes, None, String::new());
    totp.generate(now_secs().saturating_add_signed(offset))
}

/// The claims of an access token (its signature is the server's business).
fn claims(access_token: &str) -> Value {
    let payload = access_token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

fn challenge_of(reply: &Reply) -> String {
    reply
        .header(WWW_AUTHENTICATE)
        .unwrap_or_else(|| panic!("{}: no WWW-Authenticate: {}", reply.what, reply.body))
        .to_owned()
}

async fn count_events(db: &TestDb, kind: &str) -> i64 {
    db.connect()
        .await
        .query_one(
            "SELECT count(*) FROM security_events WHERE kind = $1",
            &[&kind],
        )
        .await
        .unwrap()
        .get(0)
}

/// The subject lines of the mails written to `dir` (development delivery), once there
/// are at least `count` of them (or after ten seconds).
async fn mailed_subjects(dir: &std::path::Path, count: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let subjects: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
            .filter_map(|mail| {
                mail.lines()
                    .find(|line| line.starts_with("Subject:"))
                    .map(str::to_owned)
            })
            .collect();
        if subjects.len() >= count || tokio::time::Instant::now() > deadline {
            return subjects;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A pending TOTP factor of the session's user: its id and secret.
async fn enrol(api: &Api<'_>, access: &str) -> (String, String) {
    let body = api
        .bearer(Method::POST, "/auth/mfa/totp", access)
        .await
        .expect(200);
    let uri = body["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{body}");
    // The issuer is the server's name by default: `portcullis-server`, or the name of an
    // app built on it (the e2e suites also run against a generated app).
    let server_name = portcullis_e2e::server_binary()
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap();
    assert!(uri.contains(&format!("issuer={server_name}")), "{uri}");
    assert!(
        body["qr_svg"].as_str().unwrap().starts_with("<?xml")
            || body["qr_svg"].as_str().unwrap().contains("<svg")
    );
    // The URI and the secret describe the same code, as apps read them.
    let from_uri = TOTP::from_url_unchecked(uri).expect("a standard otpauth URI");
    let secret = body["secret"].as_str().unwrap().to_owned();
    assert_eq!(from_uri.generate(now_secs()), code(&secret, 0));
    (body["factor_id"].as_str().unwrap().to_owned(), secret)
}

/// Confirms the factor with the current code: the recovery codes.
async fn confirm(api: &Api<'_>, access: &str, factor: &str, code: &str) -> Reply {
    let request = api
        .request(Method::POST, &format!("/auth/mfa/totp/{factor}/confirm"))
        .bearer_auth(access)
        .json(&json!({"code": code}));
    api.send(format!("confirm {factor}"), request).await
}

/// A user with a confirmed TOTP factor: the session that enrolled it (aal1), the
/// factor's id and secret, and the recovery codes. The current time step is used.
async fn enrolled(api: &Api<'_>, email: &str) -> (Session, String, String, Vec<String>) {
    api.register(email, PASSWORD).await;
    let session = api.login_session(email, PASSWORD).await;
    let (factor, secret) = enrol(api, &session.access).await;
    let codes = confirm(api, &session.access, &factor, &code(&secret, 0))
        .await
        .expect(200)["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (session, factor, secret, codes)
}

/// A login that answers `mfa_required`: its `mfa_token`.
async fn mfa_token(api: &Api<'_>, email: &str) -> String {
    let reply = api.login_reply(email, PASSWORD).await;
    let body = reply.expect_error(&[403], "mfa_required");
    body["mfa_token"].as_str().unwrap().to_owned()
}

async fn verify(api: &Api<'_>, body: &Value) -> Reply {
    api.post_json("/auth/mfa/verify", body).await
}

async fn step_up(api: &Api<'_>, access: &str, body: &Value) -> Reply {
    let request = api
        .request(Method::POST, "/auth/step-up")
        .bearer_auth(access)
        .json(body);
    api.send("POST /auth/step-up".to_owned(), request).await
}

#[test]
fn the_tests_code_generator_is_rfc_6238() {
    // RFC 6238 appendix B (SHA-1): secret "12345678901234567890", T = 59 s: 94287082.
    let totp = TOTP::new_unchecked(
        Algorithm::SHA1,
        8,
        1,
        30,
        b"12345678901234567890".to_vec(),
        None,
        String::new(),
    );
    assert_eq!(totp.generate(59), "94287082");
    assert_eq!(totp.generate(1_111_111_109), "07081804");
}

#[tokio::test]
async fn a_totp_factor_turns_login_into_mfa_required_and_its_code_opens_an_aal2_session() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    let first = api.login_session("ada@example.com", PASSWORD).await;

    let before = claims(&first.access);
    assert_eq!(before["aal"], "aal1");
    assert_eq!(before["amr"], json!(["pwd"]));
    assert!(before["auth_time"].as_u64().unwrap().abs_diff(now_secs()) < 60);
    let me = api.me(&first.access).await.expect(200);
    assert_eq!(me["aal"], "aal1");
    assert_eq!(me["amr"], json!(["pwd"]));

    let (factor, secret) = enrol(&api, &first.access).await;
    let factors = api
        .bearer(Method::GET, "/auth/mfa/factors", &first.access)
        .await
        .expect(200);
    assert_eq!(
        factors["factors"],
        json!([]),
        "a pending factor is not listed"
    );
    // Not a login yet: the password alone still signs in.
    api.login_session("ada@example.com", PASSWORD).await;

    let stale = code(&secret, -600);
    confirm(&api, &first.access, &factor, &stale)
        .await
        .expect_error(&[400], "invalid_code");
    confirm(&api, &first.access, "not-a-uuid", &code(&secret, 0))
        .await
        .expect_error(&[404], "factor_not_found");
    let confirming = code(&secret, 0);
    let codes = confirm(&api, &first.access, &factor, &confirming)
        .await
        .expect(200);
    // The account has a factor now: this aal1 session may not touch factors any more.
    confirm(&api, &first.access, &factor, &confirming)
        .await
        .expect_error(&[401], "insufficient_user_authentication");
    assert_eq!(
        codes["recovery_codes"].as_array().unwrap().len(),
        10,
        "{codes}"
    );
    let listed = api
        .bearer(Method::GET, "/auth/mfa/factors", &first.access)
        .await
        .expect(200);
    assert_eq!(listed["factors"][0]["id"], factor.as_str());
    assert_eq!(listed["factors"][0]["kind"], "totp");
    assert!(listed["factors"][0]["created_at"].is_string());

    // The password is right, yet nothing is opened: no tokens, no cookies.
    let reply = api.login_reply("ada@example.com", PASSWORD).await;
    let body = reply.expect_error(&[403], "mfa_required");
    assert!(body.get("access_token").is_none() && body.get("refresh_token").is_none());
    assert!(reply.headers.get(SET_COOKIE).is_none());
    assert_eq!(body["factors"], json!([{"id": factor, "kind": "totp"}]));
    let token = body["mfa_token"].as_str().unwrap().to_owned();

    // The confirming code signed no one in: it still does, once.
    let next = confirming;
    let pair = verify(
        &api,
        &json!({"mfa_token": token, "factor_id": factor, "code": next}),
    )
    .await
    .expect(200);
    let second = Session::from_pair(&pair);
    let after = claims(&second.access);
    assert_eq!(after["aal"], "aal2");
    assert_eq!(after["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(api.me(&second.access).await.expect(200)["aal"], "aal2");
    let sessions = api.sessions(&second).await;
    let aal_of = |id: &str| {
        sessions
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["aal"].clone())
            .unwrap()
    };
    assert_eq!(aal_of(&second.id), "aal2");
    assert_eq!(aal_of(&first.id), "aal1");

    // The token is single use, and the code too.
    verify(
        &api,
        &json!({"mfa_token": token, "factor_id": factor, "code": code(&secret, 30)}),
    )
    .await
    .expect_error(&[401], "invalid_mfa_token");
    let again = mfa_token(&api, "ada@example.com").await;
    verify(
        &api,
        &json!({"mfa_token": again, "factor_id": factor, "code": next}),
    )
    .await
    .expect_error(&[400], "invalid_code");
    // Bad input: neither a code nor a recovery code.
    verify(&api, &json!({"mfa_token": again}))
        .await
        .expect_error(&[400], "invalid_request");

    // A refresh carries the session's assurance forward.
    let refreshed = api.refresh(&second.refresh).await.expect(200);
    let refreshed = claims(refreshed["access_token"].as_str().unwrap());
    assert_eq!(refreshed["aal"], "aal2");
    assert_eq!(refreshed["auth_time"], after["auth_time"]);
    assert_eq!(count_events(&db, "mfa_factor_added").await, 1);
}

#[tokio::test]
async fn recovery_codes_work_once_each_and_new_ones_void_the_old() {
    let db = TestDb::new().await;
    let mail_dir = tempfile::tempdir().unwrap();
    let mail_dir_path = mail_dir.path().display().to_string();
    let server = ServerProcess::start(&db.url(), &[("MAIL_DEV_DIR", &mail_dir_path)]).await;
    let api = Api::new(&server);
    let (_, _, _, codes) = enrolled(&api, "bob@example.com").await;

    let token = mfa_token(&api, "bob@example.com").await;
    let pair = verify(
        &api,
        &json!({"mfa_token": token, "recovery_code": codes[0]}),
    )
    .await
    .expect(200);
    let rescued = Session::from_pair(&pair);
    assert_eq!(claims(&rescued.access)["aal"], "aal2");

    let token = mfa_token(&api, "bob@example.com").await;
    verify(
        &api,
        &json!({"mfa_token": token, "recovery_code": codes[0]}),
    )
    .await
    .expect_error(&[400], "invalid_code");
    // Typed sloppily (upper case, spaces for the dash), the next one works.
    let sloppy = codes[1].to_uppercase().replace('-', " ");
    verify(&api, &json!({"mfa_token": token, "recovery_code": sloppy}))
        .await
        .expect(200);
    assert_eq!(count_events(&db, "recovery_code_used").await, 2);
    let subjects = mailed_subjects(mail_dir.path(), 3).await;
    assert_eq!(
        subjects
            .iter()
            .filter(|s| s.contains("A recovery code of your account was used"))
            .count(),
        2,
        "{subjects:?}"
    );
    assert!(
        subjects
            .iter()
            .any(|s| s.contains("A second factor was added to your account")),
        "{subjects:?}"
    );

    // The rescued session is aal2 and recent: it may make new codes.
    let fresh = api
        .bearer(Method::POST, "/auth/mfa/recovery-codes", &rescued.access)
        .await
        .expect(200);
    assert_eq!(fresh["recovery_codes"].as_array().unwrap().len(), 10);
    let token = mfa_token(&api, "bob@example.com").await;
    verify(
        &api,
        &json!({"mfa_token": token, "recovery_code": codes[2]}),
    )
    .await
    .expect_error(&[400], "invalid_code");
    let stored: i64 = db
        .connect()
        .await
        .query_one("SELECT count(*) FROM mfa_recovery_codes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 10, "only the new set is kept");
    let plain = fresh["recovery_codes"][0]
        .as_str()
        .unwrap()
        .replace('-', "");
    let leaked: i64 = db
        .connect()
        .await
        .query_one(
            "SELECT count(*) FROM mfa_recovery_codes WHERE position($1::bytea IN code_hash) > 0",
            &[&plain.as_bytes()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0, "codes are stored only as keyed hashes");
}

#[tokio::test]
async fn wrong_codes_void_the_token_and_then_limit_the_account() {
    let db = TestDb::new().await;
    let env = [
        ("MFA_MAX_FAILURES_PER_TOKEN", "3"),
        ("MFA_MAX_FAILURES_PER_ACCOUNT", "5"),
    ];
    let server = ServerProcess::start(&db.url(), &env).await;
    let api = Api::new(&server);
    let (_, factor, secret, _) = enrolled(&api, "eve@example.com").await;
    let wrong = code(&secret, -900);

    let token = mfa_token(&api, "eve@example.com").await;
    for _ in 0..3 {
        verify(
            &api,
            &json!({"mfa_token": token, "factor_id": factor, "code": wrong}),
        )
        .await
        .expect_error(&[400], "invalid_code");
    }
    // Voided: even the right code does not revive it.
    verify(
        &api,
        &json!({"mfa_token": token, "factor_id": factor, "code": code(&secret, 30)}),
    )
    .await
    .expect_error(&[401], "invalid_mfa_token");

    let token = mfa_token(&api, "eve@example.com").await;
    for _ in 0..2 {
        verify(
            &api,
            &json!({"mfa_token": token, "factor_id": factor, "code": wrong}),
        )
        .await
        .expect_error(&[400], "invalid_code");
    }
    let limited = verify(
        &api,
        &json!({"mfa_token": token, "factor_id": factor, "code": code(&secret, 30)}),
    )
    .await;
    limited.expect_error(&[429], "rate_limited");
    assert!(limited.header("retry-after").is_some());
    assert_eq!(count_events(&db, "mfa_failed").await, 5);
}

#[tokio::test]
async fn privileged_routes_need_a_recent_proof_and_aal2_once_there_is_a_factor() {
    let db = TestDb::new().await;
    let env = [("PRIVILEGED_AUTH_MAX_AGE_SECONDS", "10")];
    let server = ServerProcess::start(&db.url(), &env).await;
    let api = Api::new(&server);
    api.register("cy@example.com", PASSWORD).await;
    let signed_in = api.login_session("cy@example.com", PASSWORD).await;
    // The sign-in a minute ago, as the session records it: the next access token, from a
    // refresh, carries that `auth_time`, past the 10 s the server allows.
    db.connect()
        .await
        .execute(
            "UPDATE sessions SET auth_time = auth_time - interval '60 seconds' \
             WHERE id = $1::text::uuid",
            &[&signed_in.id],
        )
        .await
        .unwrap();
    let session = Session::from_pair(&api.refresh(&signed_in.refresh).await.expect(200));
    let signed_in_at = claims(&session.access)["auth_time"].as_u64().unwrap();
    assert!(signed_in_at + 60 <= claims(&signed_in.access)["auth_time"].as_u64().unwrap());
    let stale = |reply: Reply| {
        reply.expect_error(&[401], "insufficient_user_authentication");
        assert_eq!(
            challenge_of(&reply),
            "Bearer error=\"insufficient_user_authentication\", error_description=\"a more \
             recent authentication is required\", max_age=10"
        );
    };
    stale(
        api.bearer(Method::POST, "/auth/mfa/totp", &session.access)
            .await,
    );
    stale(
        api.bearer(Method::POST, "/auth/logout-all", &session.access)
            .await,
    );
    let request = api
        .request(Method::POST, "/auth/password")
        .bearer_auth(&session.access)
        .json(&json!({"current_password": PASSWORD, "new_password": "another long password"}));
    stale(api.send("POST /auth/password".to_owned(), request).await);
    // Unprivileged routes do not care.
    api.me(&session.access).await.expect(200);

    step_up(
        &api,
        &session.access,
        &json!({"password": "wrong password"}),
    )
    .await
    .expect_error(&[403], "invalid_credentials");
    let stepped = step_up(&api, &session.access, &json!({"password": PASSWORD}))
        .await
        .expect(200);
    assert_eq!(stepped["aal"], "aal1");
    let access = stepped["access_token"].as_str().unwrap().to_owned();
    let renewed = claims(&access);
    assert!(renewed["auth_time"].as_u64().unwrap() > signed_in_at);
    assert_eq!(renewed["sid"].as_str().unwrap(), session.id);

    let (factor, secret) = enrol(&api, &access).await;
    confirm(&api, &access, &factor, &code(&secret, 0))
        .await
        .expect(200);
    // Now the account has a factor: a fresh aal1 token is not enough.
    let low = api
        .bearer(Method::POST, "/auth/mfa/recovery-codes", &access)
        .await;
    low.expect_error(&[401], "insufficient_user_authentication");
    assert_eq!(
        challenge_of(&low),
        "Bearer error=\"insufficient_user_authentication\", error_description=\"a stronger \
         authentication is required\", acr_values=\"aal2\", max_age=10"
    );
    let stepped = step_up(
        &api,
        &access,
        &json!({"factor_id": factor, "code": code(&secret, 30)}),
    )
    .await
    .expect(200);
    assert_eq!(stepped["aal"], "aal2");
    let strong = stepped["access_token"].as_str().unwrap().to_owned();
    assert_eq!(api.me(&strong).await.expect(200)["aal"], "aal2");
    api.bearer(Method::POST, "/auth/mfa/recovery-codes", &strong)
        .await
        .expect(200);
    // The refresh token was not disturbed, and the session now records aal2.
    let refreshed = api.refresh(&session.refresh).await.expect(200);
    assert_eq!(
        claims(refreshed["access_token"].as_str().unwrap())["aal"],
        "aal2"
    );
    assert_eq!(count_events(&db, "stepped_up").await, 2);
}

#[tokio::test]
async fn removing_the_last_factor_signs_out_every_other_session() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let api = Api::new(&server);
    let (first, factor, secret, codes) = enrolled(&api, "dee@example.com").await;
    let token = mfa_token(&api, "dee@example.com").await;
    let other = Session::from_pair(
        &verify(
            &api,
            &json!({"mfa_token": token, "factor_id": factor, "code": code(&secret, 30)}),
        )
        .await
        .expect(200),
    );
    // The enrolling session is aal1: removing a factor needs aal2.
    api.bearer(
        Method::DELETE,
        &format!("/auth/mfa/factors/{factor}"),
        &first.access,
    )
    .await
    .expect_error(&[401], "insufficient_user_authentication");
    let stepped = step_up(&api, &first.access, &json!({"recovery_code": codes[0]}))
        .await
        .expect(200);
    let strong = stepped["access_token"].as_str().unwrap().to_owned();
    api.bearer(
        Method::DELETE,
        &format!("/auth/mfa/factors/{}", uuid::Uuid::new_v4()),
        &strong,
    )
    .await
    .expect_error(&[404], "factor_not_found");
    api.bearer(
        Method::DELETE,
        &format!("/auth/mfa/factors/{factor}"),
        &strong,
    )
    .await
    .expect(204);

    api.me(&other.access).await.expect(401);
    api.refresh(&other.refresh).await.expect(401);
    api.me(&strong).await.expect(200);
    // Single-factor again: the password alone signs in, and the codes are gone.
    let factors = api
        .bearer(Method::GET, "/auth/mfa/factors", &strong)
        .await
        .expect(200);
    assert_eq!(factors["factors"], json!([]));
    api.login("dee@example.com", PASSWORD).await;
    assert_eq!(count_events(&db, "mfa_factor_removed").await, 1);
}

#[tokio::test]
async fn a_refresh_from_another_browser_gets_a_token_that_asks_for_step_up() {
    let db = TestDb::new().await;
    let env = [("STEP_UP_ON_DEVICE_CHANGE", "true")];
    let server = ServerProcess::start(&db.url(), &env).await;
    let api = Api::new(&server);
    let (_, factor, secret, _) = enrolled(&api, "fay@example.com").await;
    let reply = api
        .login_reply_as("fay@example.com", PASSWORD, None, Some(FIREFOX_LINUX))
        .await;
    let token = reply.expect_error(&[403], "mfa_required")["mfa_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let request = api
        .request(Method::POST, "/auth/mfa/verify")
        .header(USER_AGENT, FIREFOX_LINUX)
        .json(&json!({"mfa_token": token, "factor_id": factor, "code": code(&secret, 30)}));
    let pair = api.send("verify".to_owned(), request).await.expect(200);
    let session = Session::from_pair(&pair);
    let proved = claims(&session.access);
    assert_eq!(proved["aal"], "aal2");

    // Another browser on another OS: same session, but a token that must step up.
    let moved = api
        .refresh_from(&session.refresh, CHROME_WINDOWS, None)
        .await
        .expect(200);
    let downgraded = moved["access_token"].as_str().unwrap().to_owned();
    let downgraded_claims = claims(&downgraded);
    assert_eq!(downgraded_claims["aal"], "aal1");
    assert_eq!(downgraded_claims["auth_time"], 0);
    assert_eq!(downgraded_claims["sid"].as_str().unwrap(), session.id);
    api.bearer(Method::POST, "/auth/mfa/recovery-codes", &downgraded)
        .await
        .expect_error(&[401], "insufficient_user_authentication");
    assert_eq!(count_events(&db, "device_changed").await, 1);

    // The browser that signed in refreshes at the session's assurance.
    let back = api
        .refresh_from(
            moved["refresh_token"].as_str().unwrap(),
            FIREFOX_LINUX,
            None,
        )
        .await
        .expect(200);
    let back = claims(back["access_token"].as_str().unwrap());
    assert_eq!(back["aal"], "aal2");
    assert_eq!(back["auth_time"], proved["auth_time"]);
}

#[tokio::test]
async fn passkeys_register_sign_in_alone_finish_a_login_and_step_up() {
    let db = TestDb::new().await;
    let server = ServerProcess::start_on_localhost(&db.url(), &[]).await;
    let origin = format!("http://localhost:{}", server.addr().port());
    let api = Api::new(&server);
    api.register("gil@example.com", PASSWORD).await;
    let first = api.login_session("gil@example.com", PASSWORD).await;
    let mut passkey = SoftPasskey::new(&origin);

    let begun = api
        .bearer(
            Method::POST,
            "/auth/passkeys/registration/options",
            &first.access,
        )
        .await
        .expect(200);
    let options = &begun["options"];
    assert_eq!(options["publicKey"]["rp"]["id"], "localhost");
    assert_eq!(
        options["publicKey"]["authenticatorSelection"]["userVerification"],
        "required"
    );
    let answer = passkey.register(options);
    let register = |challenge: Value, credential: Value| {
        let request = api
            .request(Method::POST, "/auth/passkeys/registration")
            .bearer_auth(&first.access)
            .json(&json!({"challenge_id": challenge, "name": "Laptop", "credential": credential}));
        api.send("register a passkey".to_owned(), request)
    };
    let created = register(begun["challenge_id"].clone(), answer.clone())
        .await
        .expect(201);
    assert!(created["factor_id"].is_string(), "{created}");
    // The ceremony is used once.
    // Once the account has a factor, this aal1 session may not add another.
    register(begun["challenge_id"].clone(), answer)
        .await
        .expect_error(&[401], "insufficient_user_authentication");
    let factors = api
        .bearer(Method::GET, "/auth/mfa/factors", &first.access)
        .await
        .expect(200);
    assert_eq!(factors["factors"][0]["kind"], "passkey");
    assert_eq!(factors["factors"][0]["name"], "Laptop");

    // Alone: no email, the device's passkey names its user.
    let options = api
        .post_json("/auth/passkeys/authentication/options", &json!({}))
        .await
        .expect(200);
    let signed = passkey.sign(&options["options"]);
    let api = &api;
    let sign_in =
        |body: Value| async move { api.post_json("/auth/passkeys/authentication", &body).await };
    let pair = sign_in(json!({"challenge_id": options["challenge_id"], "credential": signed}))
        .await
        .expect(200);
    let alone = claims(pair["access_token"].as_str().unwrap());
    assert_eq!(alone["aal"], "aal2");
    assert_eq!(alone["amr"], json!(["hwk", "user", "mfa"]));
    // The same answer again: the ceremony is gone.
    sign_in(json!({"challenge_id": options["challenge_id"], "credential": signed}))
        .await
        .expect_error(&[400], "invalid_challenge");

    // With an email, the account's passkeys are offered; it finishes a password login.
    let options = api
        .post_json(
            "/auth/passkeys/authentication/options",
            &json!({"email": "gil@example.com"}),
        )
        .await
        .expect(200);
    assert_eq!(
        options["options"]["publicKey"]["allowCredentials"][0]["id"],
        passkey.id()
    );
    let body = api
        .login_reply("gil@example.com", PASSWORD)
        .await
        .expect_error(&[403], "mfa_required");
    assert_eq!(body["factors"][0]["kind"], "passkey");
    let signed = passkey.sign(&options["options"]);
    let pair = sign_in(json!({
        "challenge_id": options["challenge_id"],
        "credential": signed,
        "mfa_token": body["mfa_token"],
    }))
    .await
    .expect(200);
    assert_eq!(
        claims(pair["access_token"].as_str().unwrap())["aal"],
        "aal2"
    );
}

#[tokio::test]
async fn a_forged_passkey_answer_is_refused_and_a_real_one_steps_up() {
    let db = TestDb::new().await;
    let server = ServerProcess::start_on_localhost(&db.url(), &[]).await;
    let origin = format!("http://localhost:{}", server.addr().port());
    let api = Api::new(&server);
    api.register("hal@example.com", PASSWORD).await;
    let first = api.login_session("hal@example.com", PASSWORD).await;
    let mut passkey = SoftPasskey::new(&origin);
    let begun = api
        .bearer(
            Method::POST,
            "/auth/passkeys/registration/options",
            &first.access,
        )
        .await
        .expect(200);
    let request = api
        .request(Method::POST, "/auth/passkeys/registration")
        .bearer_auth(&first.access)
        .json(&json!({
            "challenge_id": begun["challenge_id"],
            "credential": passkey.register(&begun["options"]),
        }));
    let factor = api.send("register".to_owned(), request).await.expect(201)["factor_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let api = &api;
    let sign_in =
        |body: Value| async move { api.post_json("/auth/passkeys/authentication", &body).await };

    // A forged answer (another key for the same credential id) is refused.
    let options = api
        .post_json("/auth/passkeys/authentication/options", &json!({}))
        .await
        .expect(200);
    let mut impostor = SoftPasskey::new(&origin);
    impostor.register(&begun["options"]);
    let mut forged = impostor.sign(&options["options"]);
    forged["id"] = json!(passkey.id());
    forged["rawId"] = json!(passkey.id());
    sign_in(json!({"challenge_id": options["challenge_id"], "credential": forged}))
        .await
        .expect_error(&[400], "invalid_credential");

    // Step-up of the first (aal1) session with the passkey.
    let options = api
        .post_json("/auth/passkeys/authentication/options", &json!({}))
        .await
        .expect(200);
    let stepped = step_up(
        api,
        &first.access,
        &json!({"challenge_id": options["challenge_id"], "credential": passkey.sign(&options["options"])}),
    )
    .await
    .expect(200);
    assert_eq!(stepped["aal"], "aal2");
    api.bearer(
        Method::DELETE,
        &format!("/auth/mfa/factors/{factor}"),
        stepped["access_token"].as_str().unwrap(),
    )
    .await
    .expect(204);
}

#[tokio::test]
async fn passkeys_are_off_on_an_ip_address_and_say_so() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let api = Api::new(&server);
    api.post_json("/auth/passkeys/authentication/options", &json!({}))
        .await
        .expect_error(&[400], "passkeys_unavailable");
}

#[tokio::test]
async fn a_cookie_login_finishes_only_from_the_sites_own_pages_and_then_sets_cookies() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let api = Api::new(&server);
    let (_, factor, secret, _) = enrolled(&api, "ida@example.com").await;
    let origin = format!("http://{}", server.addr());
    let request = api
        .request(Method::POST, "/auth/login")
        .header(reqwest::header::ORIGIN, &origin)
        .json(&json!({"email": "ida@example.com", "password": PASSWORD, "transport": "cookie"}));
    let reply = api.send("cookie login".to_owned(), request).await;
    let body = reply.expect_error(&[403], "mfa_required");
    assert!(reply.headers.get(SET_COOKIE).is_none());
    let continuation = json!({
        "mfa_token": body["mfa_token"],
        "factor_id": factor,
        "code": code(&secret, 30),
    });

    // From elsewhere (no Origin): refused, and the token and the code are not used up.
    verify(&api, &continuation)
        .await
        .expect_error(&[403], "cross_site_request");
    let request = api
        .request(Method::POST, "/auth/mfa/verify")
        .header(reqwest::header::ORIGIN, &origin)
        .json(&continuation);
    let reply = api.send("verify from the site".to_owned(), request).await;
    let signed_in = reply.expect(200);
    assert!(signed_in.get("access_token").is_none(), "{signed_in}");
    let mut set: Vec<&str> = reply
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|cookie| cookie.to_str().ok()?.split('=').next())
        .collect();
    set.sort_unstable();
    assert_eq!(
        set,
        [
            "__Host-sg_access",
            "__Host-sg_binding",
            "__Secure-sg_refresh"
        ]
    );
}
