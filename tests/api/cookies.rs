//! The cookie transport over real HTTP against the real server: the cookies a login sets
//! and every attribute they carry, refresh and logout by cookie, the header-or-cookie
//! routes, and the CSRF refusals, each a 403 that changes nothing.

use cookie::{Cookie, SameSite};
use portcullis_e2e::ServerProcess;
use portcullis_e2e::api::{Api, Reply};
use portcullis_testdb::TestDb;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, COOKIE, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";
const ACCESS: &str = "__Host-sg_access";
const REFRESH: &str = "__Secure-sg_refresh";
const BINDING: &str = "__Host-sg_binding";

/// The cookies a response sets, parsed.
fn set_cookies(reply: &Reply) -> Vec<Cookie<'static>> {
    reply
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|value| {
            let text = value.to_str().expect("Set-Cookie is ASCII").to_owned();
            Cookie::parse(text).expect("Set-Cookie parses")
        })
        .collect()
}

fn named<'c>(cookies: &'c [Cookie<'static>], name: &str) -> &'c Cookie<'static> {
    cookies
        .iter()
        .find(|cookie| cookie.name() == name)
        .unwrap_or_else(|| panic!("no {name} cookie in {cookies:?}"))
}

/// What a browser would hold after a cookie login: the cookies' values, and any refresh
/// cookies another host under the same parent domain planted (`Domain=`), which the
/// browser sends too, before its own when their path is as long.
#[derive(Debug, Clone)]
struct Jar {
    access: String,
    refresh: String,
    binding: String,
    planted: Vec<String>,
}

impl Jar {
    fn from_reply(reply: &Reply) -> Self {
        let cookies = set_cookies(reply);
        Self {
            access: named(&cookies, ACCESS).value().to_owned(),
            refresh: named(&cookies, REFRESH).value().to_owned(),
            binding: named(&cookies, BINDING).value().to_owned(),
            planted: Vec::new(),
        }
    }

    /// A signed-out browser holding only refresh cookies a sibling host planted.
    fn only_planted(planted: Vec<String>) -> Self {
        Self {
            access: String::new(),
            refresh: String::new(),
            binding: String::new(),
            planted,
        }
    }

    /// The `Cookie` header a browser sends to `path`: the refresh cookie only under
    /// `/auth`, as its `Path` says.
    fn header(&self, path: &str) -> String {
        let mut pairs = vec!["theme=dark".to_owned()];
        let mut own = |name: &str, value: &str| {
            if !value.is_empty() {
                pairs.push(format!("{name}={value}"));
            }
        };
        own(ACCESS, &self.access);
        own(BINDING, &self.binding);
        if path == "/auth" || path.starts_with("/auth/") {
            for planted in &self.planted {
                pairs.push(format!("{REFRESH}={planted}"));
            }
            if !self.refresh.is_empty() {
                pairs.push(format!("{REFRESH}={}", self.refresh));
            }
        }
        pairs.join("; ")
    }
}

/// Where a request says it comes from.
#[derive(Debug, Clone, Copy)]
enum Provenance {
    /// What a same-origin `fetch` sends: `Origin` (the server's) and `Sec-Fetch-Site`.
    ThisPage,
    /// A form or `fetch` on another site: its `Origin` and `Sec-Fetch-Site: cross-site`.
    CrossSite,
    /// An `Origin` that is not the server's, with no `Sec-Fetch-Site`.
    ForeignOrigin,
    /// Neither header.
    Nowhere,
}

struct Client<'s> {
    server: &'s ServerProcess,
    api: Api<'s>,
}

impl<'s> Client<'s> {
    fn new(server: &'s ServerProcess) -> Self {
        Self {
            server,
            api: Api::new(server),
        }
    }

    fn origin(&self) -> String {
        self.server.url("")
    }

    /// `method path` sent as a browser would from `from`, with `cookies` and `body`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        from: Provenance,
        cookies: Option<&Jar>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.api.request(method.clone(), path);
        match from {
            Provenance::ThisPage => {
                request = request
                    .header(ORIGIN, self.origin())
                    .header("sec-fetch-site", "same-origin");
            }
            Provenance::CrossSite => {
                request = request
                    .header(ORIGIN, "https://evil.example")
                    .header("sec-fetch-site", "cross-site");
            }
            Provenance::ForeignOrigin => request = request.header(ORIGIN, "https://evil.example"),
            Provenance::Nowhere => {}
        }
        if let Some(jar) = cookies {
            request = request.header(COOKIE, jar.header(path));
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let what = format!(
            "{method} {path} from {from:?} with cookies {}",
            cookies.is_some()
        );
        self.api.send(what, request).await
    }

    /// Registers `email` and signs in with the cookie transport from the page.
    async fn signed_up(&self, email: &str) -> (Reply, Jar) {
        self.api.register(email, PASSWORD).await;
        self.cookie_login(email).await
    }

    async fn cookie_login(&self, email: &str) -> (Reply, Jar) {
        let body = json!({"email": email, "password": PASSWORD, "transport": "cookie"});
        let reply = self
            .send(
                Method::POST,
                "/auth/login",
                Provenance::ThisPage,
                None,
                Some(&body),
            )
            .await;
        reply.expect(200);
        let jar = Jar::from_reply(&reply);
        (reply, jar)
    }

    async fn me(&self, jar: &Jar) -> Reply {
        self.send(Method::GET, "/me", Provenance::Nowhere, Some(jar), None)
            .await
    }
}

#[tokio::test]
async fn a_cookie_login_sets_both_cookies_with_every_attribute_and_no_token_in_the_body() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let client = Client::new(&server);
    let (reply, jar) = client.signed_up("ada@example.com").await;

    let body = reply.json();
    let fields: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        ["expires_in", "refresh_expires_in", "session_id"],
        "{body}"
    );
    assert!(!reply.body.contains(&jar.access) && !reply.body.contains(&jar.refresh));
    assert_eq!(body["expires_in"], 900);

    let cookies = set_cookies(&reply);
    assert_eq!(cookies.len(), 3, "{cookies:?}");
    let access = named(&cookies, ACCESS);
    let refresh = named(&cookies, REFRESH);
    let binding = named(&cookies, BINDING);
    assert_eq!(binding.path(), Some("/"));
    assert_eq!(
        binding.max_age().unwrap().whole_seconds(),
        refresh.max_age().unwrap().whole_seconds()
    );
    for cookie in [access, refresh, binding] {
        assert_eq!(cookie.http_only(), Some(true), "{cookie}");
        assert_eq!(cookie.secure(), Some(true), "{cookie}");
        assert_eq!(cookie.same_site(), Some(SameSite::Strict), "{cookie}");
        assert_eq!(cookie.domain(), None, "{cookie}");
    }
    assert_eq!(access.path(), Some("/"));
    assert_eq!(refresh.path(), Some("/auth"));
    assert_eq!(access.max_age().unwrap().whole_seconds(), 900);
    let refresh_age = refresh.max_age().unwrap().whole_seconds();
    assert_eq!(Some(refresh_age), body["refresh_expires_in"].as_i64());
    assert!(refresh_age > 13 * 24 * 3600, "{refresh}");
    // The access cookie's value is the JWT; the refresh cookie's the refresh token.
    assert_eq!(jar.access.split('.').count(), 3, "{}", jar.access);
    assert_eq!(jar.refresh.len(), 71, "{}", jar.refresh);

    // The cookie authenticates a read, with no Origin needed.
    let me = client.me(&jar).await.expect(200);
    assert_eq!(me["email"], "ada@example.com");
    assert_eq!(me["session_id"], body["session_id"]);
}

#[tokio::test]
async fn protected_routes_take_the_header_or_the_cookie_and_bearer_logins_set_no_cookie() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let client = Client::new(&server);
    let (_, jar) = client.signed_up("grace@example.com").await;

    let pair = client.api.login("grace@example.com", PASSWORD).await;
    assert!(pair["access_token"].is_string() && pair["refresh_token"].is_string());
    let bearer = client.api.login_reply("grace@example.com", PASSWORD).await;
    assert!(
        bearer.headers.get(SET_COOKIE).is_none(),
        "{:?}",
        bearer.headers
    );
    let explicit = client
        .send(
            Method::POST,
            "/auth/login",
            Provenance::Nowhere,
            None,
            Some(
                &json!({"email": "grace@example.com", "password": PASSWORD, "transport": "bearer"}),
            ),
        )
        .await;
    assert!(explicit.expect(200)["access_token"].is_string());

    let by_header = client.api.me(pair["access_token"].as_str().unwrap()).await;
    by_header.expect(200);
    client.me(&jar).await.expect(200);
    let sessions = client
        .send(
            Method::GET,
            "/sessions",
            Provenance::Nowhere,
            Some(&jar),
            None,
        )
        .await
        .expect(200);
    let current: Vec<&Value> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["current"] == true)
        .collect();
    assert_eq!(current.len(), 1, "{sessions}");

    // A cookie that is not a live session's token is refused as a bad header would be.
    let forged = Jar {
        access: "not.a.token".to_owned(),
        ..jar.clone()
    };
    assert_eq!(client.me(&forged).await.status, 401);
}

#[tokio::test]
async fn refresh_by_cookie_sets_both_cookies_anew_and_the_new_ones_work() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let client = Client::new(&server);
    let (login, jar) = client.signed_up("linus@example.com").await;
    let session_id = login.json()["session_id"].clone();

    // No body at all, as the page's fetch sends it.
    let refreshed = client
        .send(
            Method::POST,
            "/auth/refresh",
            Provenance::ThisPage,
            Some(&jar),
            None,
        )
        .await;
    let body = refreshed.expect(200);
    assert_eq!(body["session_id"], session_id);
    assert!(body.get("access_token").is_none() && body.get("refresh_token").is_none());
    let cookies = set_cookies(&refreshed);
    assert_eq!(named(&cookies, REFRESH).path(), Some("/auth"));
    assert_eq!(named(&cookies, ACCESS).http_only(), Some(true));
    let next = Jar::from_reply(&refreshed);
    assert_ne!(next.refresh, jar.refresh);
    client.me(&next).await.expect(200);

    // A JSON body without a refresh token uses the cookie too.
    let again = client
        .send(
            Method::POST,
            "/auth/refresh",
            Provenance::ThisPage,
            Some(&next),
            Some(&json!({})),
        )
        .await;
    again.expect(200);
    let third = Jar::from_reply(&again);
    assert_ne!(third.refresh, next.refresh);

    // Neither a token in the body nor a cookie: with no body, the same 401 as a bad
    // token; with a body lacking the token, the 400 it always was.
    client
        .send(
            Method::POST,
            "/auth/refresh",
            Provenance::ThisPage,
            None,
            None,
        )
        .await
        .expect_error(&[401], "invalid_refresh_token");
    client
        .send(
            Method::POST,
            "/auth/refresh",
            Provenance::ThisPage,
            None,
            Some(&json!({})),
        )
        .await
        .expect_error(&[400], "invalid_request");
    // A bearer client's body token still wins and gets the pair in the body.
    let bearer = client
        .api
        .login_session("linus@example.com", PASSWORD)
        .await;
    let pair = client.api.refresh(&bearer.refresh).await.expect(200);
    assert!(pair["refresh_token"].is_string());
}

/// Asserts that `reply` clears every session cookie with `Max-Age=0` on its own path.
#[track_caller]
fn assert_clears_both(reply: &Reply) {
    let cookies = set_cookies(reply);
    assert_eq!(cookies.len(), 3, "{}: {cookies:?}", reply.what);
    for (name, path) in [(ACCESS, "/"), (REFRESH, "/auth"), (BINDING, "/")] {
        let cookie = named(&cookies, name);
        assert_eq!(cookie.value(), "", "{cookie}");
        assert_eq!(
            cookie.max_age().map(cookie::time::Duration::whole_seconds),
            Some(0),
            "{cookie}"
        );
        assert_eq!(cookie.path(), Some(path), "{cookie}");
        assert_eq!(cookie.secure(), Some(true), "{cookie}");
    }
}

#[tokio::test]
async fn logout_logout_all_and_a_password_change_by_cookie_clear_both_cookies() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let client = Client::new(&server);

    let (_, jar) = client.signed_up("barbara@example.com").await;
    let logout = client
        .send(
            Method::POST,
            "/auth/logout",
            Provenance::ThisPage,
            Some(&jar),
            None,
        )
        .await;
    logout.expect(204);
    assert_clears_both(&logout);
    assert_eq!(client.me(&jar).await.status, 401);
    client
        .send(
            Method::POST,
            "/auth/refresh",
            Provenance::ThisPage,
            Some(&jar),
            None,
        )
        .await
        .expect_error(&[401], "invalid_refresh_token");

    let (_, jar) = client.cookie_login("barbara@example.com").await;
    let other = client
        .api
        .login_session("barbara@example.com", PASSWORD)
        .await;
    let all = client
        .send(
            Method::POST,
            "/auth/logout-all",
            Provenance::ThisPage,
            Some(&jar),
            None,
        )
        .await;
    all.expect(204);
    assert_clears_both(&all);
    assert_eq!(client.me(&jar).await.status, 401);
    assert_eq!(client.api.me(&other.access).await.status, 401);

    let (_, jar) = client.cookie_login("barbara@example.com").await;
    let change = client
        .send(
            Method::POST,
            "/auth/password",
            Provenance::ThisPage,
            Some(&jar),
            Some(&json!({"current_password": PASSWORD, "new_password": "a new long password"})),
        )
        .await;
    change.expect(204);
    assert_clears_both(&change);
    // This browser signs in again, with the new password.
    assert_eq!(client.me(&jar).await.status, 401);
    client
        .api
        .login("barbara@example.com", "a new long password")
        .await;

    // A bearer logout sets no cookie.
    let bearer = client
        .api
        .login_session("barbara@example.com", "a new long password")
        .await;
    let reply = client
        .api
        .bearer(Method::POST, "/auth/logout", &bearer.access)
        .await;
    reply.expect(204);
    assert!(reply.headers.get(SET_COOKIE).is_none());
}

/// Everything a forged request could have changed: each session's state and refresh
/// generation, the password hash, and the security events.
async fn snapshot(db: &TestDb) -> Vec<String> {
    let client = db.connect().await;
    let mut rows: Vec<String> = client
        .query(
            "SELECT id::text || ' ' || (revoked_at IS NULL)::text || ' ' || \
             refresh_generation::text FROM sessions ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    for sql in [
        "SELECT string_agg(password_hash, ',' ORDER BY id) FROM users",
        "SELECT count(*)::text FROM security_events",
    ] {
        rows.push(client.query_one(sql, &[]).await.unwrap().get(0));
    }
    rows
}

#[tokio::test]
async fn cookie_requests_from_another_site_a_foreign_origin_or_nowhere_are_403_and_change_nothing()
{
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let client = Client::new(&server);
    let (_, jar) = client.signed_up("ken@example.com").await;
    let other = client.api.login_session("ken@example.com", PASSWORD).await;
    let before = snapshot(&db).await;

    let change = json!({"current_password": PASSWORD, "new_password": "attacker's password"});
    let login = json!({"email": "ken@example.com", "password": PASSWORD, "transport": "cookie"});
    let delete_other = format!("/sessions/{}", other.id);
    let requests: [(Method, &str, Option<&Jar>, Option<&Value>); 7] = [
        (Method::POST, "/auth/refresh", Some(&jar), None),
        (Method::POST, "/auth/logout", Some(&jar), None),
        (Method::POST, "/auth/logout-all", Some(&jar), None),
        (Method::DELETE, &delete_other, Some(&jar), None),
        (Method::POST, "/sessions/revoke-others", Some(&jar), None),
        (Method::POST, "/auth/password", Some(&jar), Some(&change)),
        (Method::POST, "/auth/login", None, Some(&login)),
    ];
    for from in [
        Provenance::CrossSite,
        Provenance::ForeignOrigin,
        Provenance::Nowhere,
    ] {
        for (method, path, cookies, body) in &requests {
            let reply = client
                .send(method.clone(), path, from, *cookies, *body)
                .await;
            reply.expect_error(&[403], "cross_site_request");
            assert!(reply.headers.get(SET_COOKIE).is_none(), "{}", reply.what);
        }
    }
    assert_eq!(
        snapshot(&db).await,
        before,
        "a refused request changed something"
    );

    // Both sessions still work, and the refresh cookie was never rotated.
    client.me(&jar).await.expect(200);
    client.api.me(&other.access).await.expect(200);
    client
        .send(
            Method::POST,
            "/auth/refresh",
            Provenance::ThisPage,
            Some(&jar),
            None,
        )
        .await
        .expect(200);
    // Reads need no provenance; a bearer request never needs it.
    client
        .send(
            Method::GET,
            "/sessions",
            Provenance::Nowhere,
            Some(&jar),
            None,
        )
        .await
        .expect(200);
    client
        .api
        .bearer(Method::POST, "/sessions/revoke-others", &other.access)
        .await
        .expect(200);
}

#[tokio::test]
async fn the_account_page_is_served_with_a_strict_policy_and_no_inline_script() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let client = Client::new(&server);
    let page = client
        .send(Method::GET, "/account", Provenance::Nowhere, None, None)
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.header(CONTENT_TYPE), Some("text/html; charset=utf-8"));
    let policy = page.header("content-security-policy").expect("a CSP");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    // Every script is a file of this origin; no inline script, handler or style.
    let html = page.body.to_ascii_lowercase();
    for tag in html.split("<script").skip(1) {
        let opening = tag.split('>').next().unwrap();
        assert!(opening.contains("src=\"/account/"), "<script{opening}>");
    }
    assert!(!html.contains(" onclick") && !html.contains(" onsubmit") && !html.contains("<style"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no third party"
    );

    for (path, content_type) in [
        ("/account/app.js", "text/javascript; charset=utf-8"),
        ("/account/factors.js", "text/javascript; charset=utf-8"),
        ("/account/style.css", "text/css; charset=utf-8"),
    ] {
        let file = client
            .send(Method::GET, path, Provenance::Nowhere, None, None)
            .await;
        assert_eq!(file.status, 200, "{path}");
        assert!(!file.body.is_empty(), "{path}");
        assert_eq!(file.header(CONTENT_TYPE), Some(content_type), "{path}");
        assert!(file.header("content-security-policy").is_some(), "{path}");
    }
    let post = client
        .send(Method::POST, "/account", Provenance::ThisPage, None, None)
        .await;
    post.expect_error(&[405], "method_not_allowed");
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
}

/// Issue 22, item 1: another host under the same parent domain can set a refresh cookie
/// (`__Secure-`, `Domain=` the parent) but never the `__Host-` binding cookie. A planted
/// cookie signs a signed-out browser in to nobody's account (login CSRF), and beside the
/// owner's own it neither signs the owner out nor is used.
#[tokio::test]
async fn a_refresh_cookie_planted_by_a_sibling_host_signs_nobody_in_and_signs_nobody_out() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let client = Client::new(&server);
    let (_, attacker) = client.signed_up("mallory@example.com").await;
    let (victim_login, victim) = client.signed_up("alice@example.com").await;
    let before = snapshot(&db).await;

    // A signed-out browser holding only the attacker's planted refresh cookie.
    for planted in [vec![attacker.refresh.clone()], vec!["junk".to_owned()]] {
        let reply = client
            .send(
                Method::POST,
                "/auth/refresh",
                Provenance::ThisPage,
                Some(&Jar::only_planted(planted)),
                None,
            )
            .await;
        reply.expect_error(&[401], "invalid_refresh_token");
        assert!(reply.headers.get(SET_COOKIE).is_none(), "{}", reply.what);
    }
    // Even with the attacker's own binding cookie copied in, a binding names one session.
    let mixed = Jar {
        binding: victim.binding.clone(),
        ..Jar::only_planted(vec![attacker.refresh.clone()])
    };
    client
        .send(
            Method::POST,
            "/auth/refresh",
            Provenance::ThisPage,
            Some(&mixed),
            None,
        )
        .await
        .expect_error(&[401], "invalid_refresh_token");
    assert_eq!(
        snapshot(&db).await,
        before,
        "a planted cookie changed something"
    );

    // The signed-in victim with junk and the attacker's token planted beside its own:
    // its own session is refreshed, again and again, and the planted ones are ignored.
    let mut jar = Jar {
        planted: vec!["junk".to_owned(), attacker.refresh.clone()],
        ..victim
    };
    for _ in 0..3 {
        let reply = client
            .send(
                Method::POST,
                "/auth/refresh",
                Provenance::ThisPage,
                Some(&jar),
                None,
            )
            .await;
        let body = reply.expect(200);
        assert_eq!(body["session_id"], victim_login.json()["session_id"]);
        let next = Jar::from_reply(&reply);
        jar = Jar {
            planted: jar.planted.clone(),
            ..next
        };
        let me = client.me(&jar).await.expect(200);
        assert_eq!(me["email"], "alice@example.com");
    }
    // The attacker's session was never touched: its refresh token still works for it.
    client
        .send(
            Method::POST,
            "/auth/refresh",
            Provenance::ThisPage,
            Some(&attacker),
            None,
        )
        .await
        .expect(200);
}

/// Issue 22, item 2: behind a proxy that does not pass `Host` through, a browser's
/// request carries `Origin: PUBLIC_URL` and the upstream's `Host`. The origin check
/// compares `Origin` with `PUBLIC_URL` (scheme, host and port), not with `Host`.
#[tokio::test]
async fn a_cookie_request_through_a_proxy_that_rewrites_host_is_judged_by_public_url() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let client = Client::new(&server);
    let (_, jar) = client.signed_up("nginx@example.com").await;
    let other = client
        .api
        .login_session("nginx@example.com", PASSWORD)
        .await;
    let public = client.origin();
    let https = public.replacen("http://", "https://", 1);
    let proxied = |method: Method, path: &str, origin: &str| {
        client
            .api
            .request(method, path)
            .header("host", "upstream.internal:9000")
            .header(ORIGIN, origin.to_owned())
            .header("sec-fetch-site", "same-origin")
            .header(COOKIE, jar.header(path))
    };
    let me = client
        .api
        .send(
            "GET /me via a proxy".to_owned(),
            proxied(Method::GET, "/me", &public),
        )
        .await;
    me.expect(200);
    // The scheme counts: the same host and port over https is another origin.
    for origin in [https.as_str(), "http://upstream.internal:9000"] {
        client
            .api
            .send(
                format!("GET /me from {origin}"),
                proxied(Method::GET, "/me", origin),
            )
            .await
            .expect_error(&[403], "cross_site_request");
    }
    let path = format!("/sessions/{}", other.id);
    client
        .api
        .send(
            "DELETE a session via a proxy".to_owned(),
            proxied(Method::DELETE, &path, &public),
        )
        .await
        .expect(204);
    assert_eq!(client.api.me(&other.access).await.status, 401);
}
