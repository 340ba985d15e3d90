//! The account page in a real browser: headless Chromium driven through chromedriver
//! (the W3C `WebDriver` protocol), against the real server over HTTP, as a person uses it
//! (issue 22, items 1 and 14 to 17). Two `WebDriver` sessions are two browser profiles
//! with cookie jars of their own.
//!
//! The server is reached as `app.portcullis.localhost` and an attacker's page as
//! `evil.portcullis.localhost`: Chromium resolves `*.localhost` to loopback, so they are
//! two hosts under one parent domain, and the attacker's page can set cookies for both.
//!
//! In every state the test visits, axe-core (from npm, pinned in `tests/node`, installed
//! by `bash .ci/run`) checks the page against WCAG 2.2 AA and must find nothing. The
//! screenshots in `docs/` (`account-page.png` at a phone's width,
//! `account-page-desktop.png` at a desktop's) are written by this test.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`bash .ci/run` installs them).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use portcullis_e2e::ServerProcess;
use portcullis_e2e::api::Api;
use portcullis_testdb::TestDb;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const PASSWORD: &str = "correct horse battery";
const NEW_PASSWORD: &str = "a new correct horse";
/// The longest any step of the page may take.
const STEP: Duration = Duration::from_secs(20);
/// A phone's viewport, and a desktop's.
const PHONE: (u32, u32) = (390, 844);
const DESKTOP: (u32, u32) = (1280, 900);
/// The server's host and the attacker's: siblings under `portcullis.localhost`.
const APP_HOST: &str = "app.portcullis.localhost";
const EVIL_HOST: &str = "evil.portcullis.localhost";
const PARENT_DOMAIN: &str = "portcullis.localhost";
/// The refresh cookie's name, which a sibling host can set for the parent domain.
const REFRESH_COOKIE: &str = "__Secure-sg_refresh";
/// The access cookie a cookie sign-in sets.
const ACCESS_COOKIE: &str = "__Host-sg_access";
/// WCAG 2.2 A and AA, as axe-core tags them.
const WCAG_22_AA: [&str; 5] = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"];

/// Held by the test whose chromedriver runs: one at a time. Chromium instances of
/// parallel tests (three, with two browsers in one) starved each other and their servers
/// on two cores, so that a page took longer than [`STEP`] to load.
static ONE_DRIVER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// chromedriver on a free loopback port, in a process group of its own so the browsers
/// it starts go with it.
struct ChromeDriver {
    child: Child,
    port: u16,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl ChromeDriver {
    async fn start() -> Self {
        let turn = ONE_DRIVER_AT_A_TIME.lock().await;
        let port = portcullis_e2e::free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting chromedriver: {e}; install Debian's chromium and \
                     chromium-driver packages (bash .ci/run does)"
                )
            });
        let driver = Self {
            child,
            port,
            _turn: turn,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + STEP;
        while http.get(driver.url("/status")).send().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer within {STEP:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        driver
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A new browser session: a fresh profile, headless, phone-sized.
    async fn browser(&self) -> Client {
        let mut options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
        });
        if Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".to_owned(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".to_owned(), options);
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url(""))
            .await
            .expect("a Chromium session through chromedriver");
        resize(&client, PHONE).await;
        client
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

/// Sets the viewport (not the window) to `(width, height)` CSS pixels.
async fn resize(browser: &Client, (width, height): (u32, u32)) {
    browser
        .set_window_size(width, height)
        .await
        .expect("sizing the window");
    let inner = browser
        .execute("return [window.innerWidth, window.innerHeight];", vec![])
        .await
        .expect("reading the viewport");
    let (inner_width, inner_height) = (
        u32::try_from(inner[0].as_u64().unwrap()).unwrap(),
        u32::try_from(inner[1].as_u64().unwrap()).unwrap(),
    );
    browser
        .set_window_size(
            width + width.saturating_sub(inner_width),
            height + height.saturating_sub(inner_height),
        )
        .await
        .expect("sizing the window");
}

/// The attacker's site on a sibling host: `GET /plant/<value>` answers a page that sets
/// the refresh cookie's name to `value` for the whole parent domain (`Domain=`), as any
/// host under it may.
struct SiblingSite {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl SiblingSite {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 2048];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16_384 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request);
                    let path = text.split_whitespace().nth(1).unwrap_or("/");
                    let cookie = path.strip_prefix("/plant/").map(|value| {
                        format!(
                            "Set-Cookie: {REFRESH_COOKIE}={value}; Domain={PARENT_DOMAIN}; \
                             Path=/auth; Secure; HttpOnly; SameSite=Lax\r\n"
                        )
                    });
                    let body = "<!doctype html><html lang=\"en\"><title>A sibling site</title>\
                                <p>Nothing to see here.</p></html>";
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n{}Content-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        cookie.unwrap_or_default(),
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        Self { port, task }
    }

    /// The page that plants `value` as the refresh cookie of every host under the parent.
    fn plant(&self, value: &str) -> String {
        format!("http://{EVIL_HOST}:{}/plant/{value}", self.port)
    }
}

impl Drop for SiblingSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the browser test works with: the server, reached by its name.
struct App {
    port: u16,
}

impl App {
    fn url(&self, path: &str) -> String {
        format!("http://{APP_HOST}:{}{path}", self.port)
    }
}

/// Waits until the page says it is in `state` (`signed-in`, `signed-out`, `offline`,
/// `ready`, `failed`).
async fn wait_for_state(browser: &Client, state: &str) {
    let shown = browser
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css(&format!("body[data-state='{state}']")))
        .await;
    if let Err(e) = shown {
        let status = browser
            .execute(
                "return document.getElementById('status').textContent;",
                vec![],
            )
            .await;
        panic!("the page never showed {state}: {e}; it says {status:?}");
    }
}

/// Waits until the element `css` shows text containing `expected`; returns its text.
async fn wait_for_text(browser: &Client, css: &str, expected: &str) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        let text = match browser.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(expected) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{css} says {text:?}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The session items the page lists, once there are `count` of them.
async fn wait_for_sessions(browser: &Client, count: usize) -> Vec<fantoccini::elements::Element> {
    let deadline = Instant::now() + STEP;
    loop {
        let items = browser
            .find_all(Locator::Css("#sessions li.session"))
            .await
            .expect("finding sessions");
        if items.len() == count {
            return items;
        }
        assert!(
            Instant::now() < deadline,
            "the page lists {} sessions, not {count}",
            items.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks the element `css` selects, once there is one (within [`STEP`]).
async fn click(browser: &Client, css: &str) {
    browser
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("finding {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

/// Clicks the element of id `id` once it is shown.
async fn click_shown(browser: &Client, id: &str) {
    click(browser, &format!("#{id}:not([hidden])")).await;
}

/// Replaces the text of the field of id `id`, once there is one (within [`STEP`]).
async fn type_into(browser: &Client, id: &str, text: &str) {
    let field = browser
        .wait()
        .at_most(STEP)
        .for_element(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("finding #{id}: {e}"));
    field.clear().await.expect(id);
    field.send_keys(text).await.expect(id);
}

async fn is_visible(browser: &Client, css: &str) -> bool {
    browser
        .find(Locator::Css(css))
        .await
        .expect(css)
        .is_displayed()
        .await
        .expect(css)
}

/// The id of the element that has the focus, once it is `expected`.
async fn assert_focus(browser: &Client, expected: &str) {
    let deadline = Instant::now() + STEP;
    loop {
        let focused = browser
            .execute(
                "return document.activeElement ? document.activeElement.id : '';",
                vec![],
            )
            .await
            .expect("reading the focus");
        if focused == json!(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the focus is on {focused}, not #{expected}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `axe.min.js` from `tests/node` (`npm ci --prefix tests/node`, which `bash .ci/run`
/// does).
fn axe_source() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("node/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `npm ci --prefix tests/node` (bash .ci/run does)",
            path.display()
        )
    })
}

/// Runs axe-core on the page as it is now: no violation of WCAG 2.2 A or AA.
async fn assert_accessible(browser: &Client, axe: &str, state: &str) {
    let loaded = browser
        .execute("return typeof window.axe !== 'undefined';", vec![])
        .await
        .expect("asking for axe");
    if loaded != json!(true) {
        browser
            .execute(&format!("{axe}\nreturn true;"), vec![])
            .await
            .expect("injecting axe-core");
    }
    let violations = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             axe.run(document, { runOnly: { type: 'tag', values: arguments[0] } })\
               .then(r => done(r.violations.map(v => ({ id: v.id, help: v.help, \
                     nodes: v.nodes.map(n => n.target.join(' ') + ': ' + n.failureSummary) }))),\
                     e => done([{ id: 'axe-error', help: String(e), nodes: [] }]));",
            vec![json!(WCAG_22_AA)],
        )
        .await
        .expect("running axe-core");
    assert_eq!(
        violations,
        json!([]),
        "WCAG 2.2 AA violations in the state \"{state}\""
    );
}

/// Fills in and sends the sign-in form of the page, which is showing it.
async fn fill_sign_in(browser: &Client, email: &str, password: &str, device: &str) {
    type_into(browser, "email", email).await;
    type_into(browser, "password", password).await;
    type_into(browser, "device-name", device).await;
    click(browser, "#sign-in-button").await;
}

/// Opens the account page and signs in through its form.
async fn sign_in(browser: &Client, app: &App, email: &str, password: &str, device: &str) {
    browser
        .goto(&app.url("/account"))
        .await
        .expect("opening /account");
    wait_for_state(browser, "signed-out").await;
    fill_sign_in(browser, email, password, device).await;
    wait_for_state(browser, "signed-in").await;
}

/// Fills in and sends the sign-in form of the open page with [`PASSWORD`], once it shows
/// it; what follows (a second step, or the signed-in page) is the caller's to wait for.
async fn submit_password(browser: &Client, email: &str, device: &str) {
    wait_for_state(browser, "signed-out").await;
    fill_sign_in(browser, email, PASSWORD, device).await;
}

/// A request from inside the page with the browser's own cookies: its status.
async fn fetch_status(browser: &Client, method: &str, path: &str) -> Value {
    browser
        .execute_async(
            "const [method, path, done] = arguments;\
             fetch(path, {method, credentials: 'same-origin'}).then(r => done(r.status), e => done(String(e)));",
            vec![json!(method), json!(path)],
        )
        .await
        .expect("running fetch in the page")
}

fn docs_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(name)
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    std::fs::write(docs_path(name), &png).expect("writing the screenshot");
}

/// The refresh token a cookie sign-in of `email` sets, as an attacker signing in to
/// their own account gets it.
async fn cookie_sign_in_refresh_token(server: &ServerProcess, app: &App, email: &str) -> String {
    let reply = reqwest::Client::new()
        .post(server.url("/auth/login"))
        .header("origin", app.url(""))
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"email": email, "password": PASSWORD, "transport": "cookie"}))
        .send()
        .await
        .expect("the attacker's sign-in");
    assert_eq!(reply.status(), 200);
    reply
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| value.strip_prefix(&format!("{REFRESH_COOKIE}=")))
        .and_then(|rest| rest.split(';').next())
        .expect("a refresh cookie")
        .to_owned()
}

/// Item 16: this device first, by its name, relative times, buttons naming devices; a
/// confirmation before "Sign out everywhere else"; the screenshots.
async fn two_devices_listed_and_confirmed(laptop: &Client, phone: &Client, axe: &str) {
    // Item 16: this device first, named by its user, the browser's label under it,
    // "just now" with the exact time on hover, and each button names its device.
    laptop.refresh().await.unwrap();
    wait_for_state(laptop, "signed-in").await;
    let items = wait_for_sessions(laptop, 2).await;
    assert_eq!(
        items[0].attr("data-current").await.unwrap().as_deref(),
        Some("true")
    );
    let title = items[0]
        .find(Locator::Css("h3.device"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        title.starts_with("Ada's laptop") && title.contains("This device"),
        "{title}"
    );
    let label = items[0]
        .find(Locator::Css(".device-label"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(label.contains("Chrome"), "{label}");
    let last_used = items[0].find(Locator::Css("time")).await.unwrap();
    assert_eq!(last_used.text().await.unwrap(), "just now");
    assert!(
        last_used
            .attr("title")
            .await
            .unwrap()
            .is_some_and(|t| !t.is_empty())
    );
    let other = items[1]
        .find(Locator::Css("button.sign-out-session"))
        .await
        .unwrap();
    assert_eq!(
        other.attr("aria-label").await.unwrap().as_deref(),
        Some("Sign out Phone")
    );
    assert_accessible(laptop, axe, "two devices").await;
    screenshot(laptop, "account-page.png").await;
    resize(laptop, DESKTOP).await;
    screenshot(laptop, "account-page-desktop.png").await;
    assert_accessible(laptop, axe, "two devices, desktop width").await;
    resize(laptop, PHONE).await;

    // "Sign out everywhere else" asks first; cancelling signs nobody out and says so.
    click(laptop, "#sign-out-others").await;
    assert!(is_visible(laptop, "#confirm-others").await);
    wait_for_text(laptop, "#confirm-others-text", "Sign out the other device?").await;
    assert_focus(laptop, "confirm-others-no").await;
    assert_accessible(laptop, axe, "confirming sign out everywhere else").await;
    click(laptop, "#confirm-others-no").await;
    wait_for_text(laptop, "#status", "Nothing was signed out").await;
    assert!(!is_visible(laptop, "#confirm-others").await);
    assert_eq!(fetch_status(phone, "GET", "/me").await, json!(200));
}

/// Items 14 and 15: Back after being signed out elsewhere; "Forgot password?"; used links
/// that offer new ones; the sign-in alert's link.
async fn back_forgot_and_used_links(laptop: &Client, phone: &Client, app: &App, axe: &str) {
    // Item 14: the laptop leaves the page; the phone signs the laptop out; Back on the
    // laptop does not show the old list from the cache but says what happened.
    laptop.goto(&app.url("/account/verify")).await.unwrap();
    wait_for_state(laptop, "failed").await;
    assert!(is_visible(laptop, "#new-link").await);
    assert_accessible(laptop, axe, "a verification link without a token").await;
    phone.refresh().await.unwrap();
    wait_for_state(phone, "signed-in").await;
    wait_for_sessions(phone, 2).await;
    click(phone, "button[aria-label=\"Sign out Ada's laptop\"]").await;
    wait_for_text(phone, "#status", "Signed out Ada's laptop.").await;
    wait_for_sessions(phone, 1).await;
    assert_focus(phone, "devices-heading").await;
    assert_accessible(phone, axe, "one device left").await;
    laptop.back().await.unwrap();
    wait_for_state(laptop, "signed-out").await;
    wait_for_text(laptop, "#status", "signed out from another device").await;
    assert_accessible(laptop, axe, "signed out from another device").await;

    // Item 15: "Forgot password?" on the sign-in form.
    click(laptop, "#forgot-link").await;
    assert!(is_visible(laptop, "#forgot").await);
    assert_focus(laptop, "forgot-heading").await;
    assert_accessible(laptop, axe, "forgot password").await;
    type_into(laptop, "forgot-email", "ada@example.com").await;
    click(laptop, "#forgot-button").await;
    wait_for_text(
        laptop,
        "#status",
        "a link to set a new password is on its way",
    )
    .await;

    // A used or expired reset link says so, and offers a new one.
    let unknown_token = "A".repeat(43);
    laptop
        .goto(&app.url(&format!("/account/reset?token={unknown_token}")))
        .await
        .unwrap();
    wait_for_state(laptop, "ready").await;
    assert_accessible(laptop, axe, "reset link").await;
    type_into(laptop, "new-password", NEW_PASSWORD).await;
    click(laptop, "#link-button").await;
    wait_for_state(laptop, "failed").await;
    wait_for_text(laptop, "#error[role='alert']", "used or expired").await;
    assert!(is_visible(laptop, "#new-link").await);
    assert_accessible(laptop, axe, "reset link used or expired").await;
    type_into(laptop, "new-link-email", "ada@example.com").await;
    click(laptop, "#new-link-button").await;
    wait_for_text(laptop, "#status", "a new link is on its way").await;

    // The same for a verification link.
    laptop
        .goto(&app.url(&format!("/account/verify?token={unknown_token}")))
        .await
        .unwrap();
    wait_for_state(laptop, "ready").await;
    assert_accessible(laptop, axe, "verification link").await;
    click(laptop, "#link-button").await;
    wait_for_state(laptop, "failed").await;
    assert!(is_visible(laptop, "#new-link").await);
    assert_accessible(laptop, axe, "verification link used or expired").await;

    // The sign-in alert's link says what to do.
    laptop.goto(&app.url("/account#new-sign-in")).await.unwrap();
    wait_for_state(laptop, "signed-out").await;
    wait_for_text(laptop, "#notice", "Forgot password?").await;
    assert_accessible(laptop, axe, "arrived from a sign-in alert").await;
}

/// Items 14 to 16: a password change, signing out, "Sign out everywhere else" confirmed,
/// and a tab that becomes visible again.
async fn password_change_and_sign_outs(laptop: &Client, phone: &Client, app: &App) {
    // Item 15: the phone changes the password; every device, the phone too, is signed
    // out, and the page says so.
    type_into(phone, "current-password", PASSWORD).await;
    type_into(phone, "new-password", NEW_PASSWORD).await;
    click(phone, "#change-password-button").await;
    wait_for_state(phone, "signed-out").await;
    wait_for_text(phone, "#status", "Your password is changed").await;
    assert_focus(phone, "sign-in-heading").await;

    // Signing out says so and moves the focus to the sign-in form.
    fill_sign_in(phone, "ada@example.com", NEW_PASSWORD, "Phone").await;
    wait_for_state(phone, "signed-in").await;
    click(phone, "#sign-out").await;
    wait_for_state(phone, "signed-out").await;
    wait_for_text(phone, "#status", "You signed out").await;
    assert_focus(phone, "sign-in-heading").await;
    assert_eq!(fetch_status(phone, "GET", "/me").await, json!(401));

    // Item 16: "Sign out everywhere else", confirmed, says what it did; item 14: the
    // laptop's page, when its tab becomes visible again, checks and says why it is out.
    fill_sign_in(phone, "ada@example.com", NEW_PASSWORD, "Phone").await;
    wait_for_state(phone, "signed-in").await;
    laptop.goto(&app.url("/account")).await.unwrap();
    wait_for_state(laptop, "signed-out").await;
    fill_sign_in(laptop, "ada@example.com", NEW_PASSWORD, "Ada's laptop").await;
    wait_for_state(laptop, "signed-in").await;
    phone.refresh().await.unwrap();
    wait_for_state(phone, "signed-in").await;
    wait_for_sessions(phone, 2).await;
    click(phone, "#sign-out-others").await;
    click(phone, "#confirm-others-yes").await;
    wait_for_text(phone, "#status", "Signed out 1 other device.").await;
    wait_for_sessions(phone, 1).await;
    assert_focus(phone, "devices-heading").await;
    laptop
        .execute(
            "document.dispatchEvent(new Event('visibilitychange')); return true;",
            vec![],
        )
        .await
        .unwrap();
    wait_for_state(laptop, "signed-out").await;
    wait_for_text(laptop, "#status", "signed out from another device").await;
}

#[tokio::test]
async fn a_person_uses_the_account_page_in_two_browsers_and_it_never_shows_a_false_state() {
    let db = TestDb::new().await;
    let mut server = ServerProcess::start_named(&db.url(), APP_HOST, &[]).await;
    let app = App {
        port: server.addr().port(),
    };
    let api = Api::new(&server);
    api.register("ada@example.com", PASSWORD).await;
    api.register("mallory@example.com", PASSWORD).await;
    let mallorys = cookie_sign_in_refresh_token(&server, &app, "mallory@example.com").await;
    let sibling = SiblingSite::start().await;
    let axe = axe_source();
    let driver = ChromeDriver::start().await;
    let laptop = driver.browser().await;

    // Item 1: the attacker's sibling site plants its refresh cookie in a signed-out
    // browser, which then opens the account page: it is signed in to nobody's account.
    laptop.goto(&sibling.plant(&mallorys)).await.unwrap();
    // The cookie is really there for the app's host (WebDriver sees HttpOnly ones).
    laptop.goto(&app.url("/auth/cookies")).await.unwrap();
    let planted = laptop.get_all_cookies().await.unwrap();
    assert!(
        planted
            .iter()
            .any(|c| c.name() == REFRESH_COOKIE && c.value() == mallorys),
        "the sibling site could not plant its cookie: {planted:?}"
    );
    laptop.goto(&app.url("/account")).await.unwrap();
    wait_for_state(&laptop, "signed-out").await;
    assert_eq!(fetch_status(&laptop, "GET", "/me").await, json!(401));
    assert_eq!(
        fetch_status(&laptop, "POST", "/auth/refresh").await,
        json!(401),
        "a planted refresh cookie signed the browser in"
    );
    assert_accessible(&laptop, &axe, "signed out").await;

    // A wrong password: the error is an alert, and the focus goes to it.
    fill_sign_in(
        &laptop,
        "ada@example.com",
        "not the password",
        "Ada's laptop",
    )
    .await;
    wait_for_text(&laptop, "#error[role='alert']", "invalid").await;
    assert_focus(&laptop, "error").await;
    assert_accessible(&laptop, &axe, "sign-in refused").await;

    // Signing in moves the focus to what is new; the address is not confirmed yet.
    type_into(&laptop, "password", PASSWORD).await;
    click(&laptop, "#sign-in-button").await;
    wait_for_state(&laptop, "signed-in").await;
    assert_focus(&laptop, "signed-in-heading").await;
    wait_for_text(&laptop, "#who", "ada@example.com").await;
    wait_for_text(&laptop, "#email-state-text", "not confirmed").await;
    assert_accessible(&laptop, &axe, "signed in").await;

    // The planted cookie, and junk planted beside it, neither sign Ada out nor in to
    // Mallory's account: refreshes use the one cookie of her own session.
    laptop.goto(&sibling.plant("junk")).await.unwrap();
    laptop.goto(&app.url("/account")).await.unwrap();
    wait_for_state(&laptop, "signed-in").await;
    for _ in 0..2 {
        assert_eq!(
            fetch_status(&laptop, "POST", "/auth/refresh").await,
            json!(200)
        );
    }
    wait_for_text(&laptop, "#who", "ada@example.com").await;

    // Item 15: a new verification link from the page.
    click(&laptop, "#resend").await;
    wait_for_text(&laptop, "#status", "A new link is on its way").await;
    // A second profile signs in as Ada's phone.
    let phone = driver.browser().await;
    sign_in(&phone, &app, "ada@example.com", PASSWORD, "Phone").await;

    two_devices_listed_and_confirmed(&laptop, &phone, &axe).await;
    back_forgot_and_used_links(&laptop, &phone, &app, &axe).await;
    password_change_and_sign_outs(&laptop, &phone, &app).await;

    // Item 14: with the server down, a button says so and offers a retry.
    let stopped = server.terminate(STEP).await;
    assert!(stopped.success(), "{}", server.log());
    click(&phone, "#sign-out").await;
    wait_for_state(&phone, "offline").await;
    wait_for_text(&phone, "#error[role='alert']", "The server did not answer").await;
    assert_focus(&phone, "error").await;
    assert!(is_visible(&phone, "#retry").await);
    assert_accessible(&phone, &axe, "server down").await;
    click(&phone, "#retry").await;
    wait_for_state(&phone, "offline").await;

    phone.close().await.unwrap();
    laptop.close().await.unwrap();
}

/// The code an authenticator app shows for `secret` (base32) `offset` seconds from now.
fn totp_code(secret: &str, offset: u64) -> String {
    let bytes = totp_rs::Secret::Encoded(secret.to_owned())
        .to_bytes()
        .expect("a base32 secret");
    let totp = totp_rs::TOTP::new_unchecked(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        bytes,
        None,
        String::new(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp.generate(now + offset)
}

/// Gives `browser` a platform authenticator that holds discoverable credentials and
/// verifies its user (`WebDriver`'s virtual authenticator, as chromedriver offers it).
async fn add_virtual_authenticator(driver: &ChromeDriver, browser: &Client) {
    let session = browser
        .session_id()
        .await
        .unwrap()
        .expect("a WebDriver session id");
    let reply = reqwest::Client::new()
        .post(driver.url(&format!("/session/{session}/webauthn/authenticator")))
        .json(&json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserVerified": true,
        }))
        .send()
        .await
        .expect("adding a virtual authenticator");
    assert!(reply.status().is_success(), "{:?}", reply.text().await);
}

/// The factors the page lists, once there are `count` of them: their kinds.
async fn wait_for_factors(browser: &Client, count: usize) -> Vec<String> {
    let deadline = Instant::now() + STEP;
    loop {
        let items = browser
            .find_all(Locator::Css("#factor-list li.factor"))
            .await
            .expect("finding factors");
        if items.len() == count {
            let mut kinds = Vec::new();
            for item in items {
                kinds.push(item.attr("data-kind").await.unwrap().unwrap_or_default());
            }
            return kinds;
        }
        assert!(
            Instant::now() < deadline,
            "the page lists {} factors, not {count}",
            items.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_out(browser: &Client) {
    click_shown(browser, "sign-out").await;
    wait_for_state(browser, "signed-out").await;
}

#[tokio::test]
async fn the_account_page_sets_up_an_app_and_a_passkey_and_signs_in_with_each() {
    let db = TestDb::new().await;
    let server = ServerProcess::start_on_localhost(&db.url(), &[]).await;
    let page = format!("http://localhost:{}/account", server.addr().port());
    Api::new(&server)
        .register("ada@example.com", PASSWORD)
        .await;
    let driver = ChromeDriver::start().await;
    let browser = driver.browser().await;
    add_virtual_authenticator(&driver, &browser).await;
    browser.goto(&page).await.expect("opening /account");
    submit_password(&browser, "ada@example.com", "Laptop").await;
    wait_for_state(&browser, "signed-in").await;

    // An authenticator app: the QR code and key, a first code, ten recovery codes.
    click_shown(&browser, "add-totp").await;
    browser
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css("#totp-setup:not([hidden]) #totp-qr svg"))
        .await
        .expect("the QR code is shown");
    let secret = browser
        .find(Locator::Id("totp-secret"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    type_into(&browser, "totp-code", &totp_code(&secret, 0)).await;
    click_shown(&browser, "totp-confirm").await;
    browser
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css("#recovery-codes:not([hidden])"))
        .await
        .expect("the recovery codes are shown");
    let mut codes = Vec::new();
    for item in browser
        .find_all(Locator::Css("#recovery-code-list li"))
        .await
        .unwrap()
    {
        codes.push(item.text().await.unwrap());
    }
    assert_eq!(codes.len(), 10, "{codes:?}");
    assert_eq!(wait_for_factors(&browser, 1).await, ["totp"]);
    screenshot(&browser, "account-factors.png").await;
    click_shown(&browser, "recovery-done").await;

    // A passkey: the account now has a factor, so the page asks for a step-up first.
    type_into(&browser, "passkey-name", "This laptop").await;
    click_shown(&browser, "add-passkey").await;
    browser
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css("dialog#step-up[open]"))
        .await
        .expect("the step-up prompt");
    type_into(&browser, "step-up-code", &totp_code(&secret, 30)).await;
    click_shown(&browser, "step-up-submit").await;
    let mut kinds = wait_for_factors(&browser, 2).await;
    kinds.sort();
    assert_eq!(kinds, ["passkey", "totp"]);

    // The password alone no longer signs in: the second step takes the passkey.
    sign_out(&browser).await;
    submit_password(&browser, "ada@example.com", "Laptop").await;
    wait_for_state(&browser, "second-factor").await;
    click_shown(&browser, "mfa-passkey").await;
    wait_for_state(&browser, "signed-in").await;
    assert_eq!(fetch_status(&browser, "GET", "/me").await, json!(200));

    // The passkey alone, no email typed.
    sign_out(&browser).await;
    click_shown(&browser, "passkey-sign-in").await;
    wait_for_state(&browser, "signed-in").await;

    // A recovery code instead of the app; then the app is removed (recent, aal2).
    sign_out(&browser).await;
    submit_password(&browser, "ada@example.com", "Laptop").await;
    wait_for_state(&browser, "second-factor").await;
    type_into(&browser, "mfa-recovery-code", &codes[0]).await;
    click_shown(&browser, "mfa-recovery-button").await;
    wait_for_state(&browser, "signed-in").await;
    wait_for_factors(&browser, 2).await;
    browser
        .find(Locator::Css(
            "li.factor[data-kind='totp'] button.remove-factor",
        ))
        .await
        .expect("a remove button on the app")
        .click()
        .await
        .unwrap();
    assert_eq!(wait_for_factors(&browser, 1).await, ["passkey"]);

    browser.close().await.unwrap();
}

/// A privileged action long after sign-in (past `PRIVILEGED_AUTH_MAX_AGE_SECONDS`) asks
/// the person to confirm it is them; the page shows that prompt, never "signed out".
/// Closing it changes nothing and keeps the page signed in; confirming with the password
/// does what was asked.
#[tokio::test]
async fn a_password_change_long_after_sign_in_asks_to_confirm_and_never_signs_the_page_out() {
    let db = TestDb::new().await;
    let server = ServerProcess::start_on_localhost(&db.url(), &[]).await;
    let page = format!("http://localhost:{}/account", server.addr().port());
    Api::new(&server)
        .register("ada@example.com", PASSWORD)
        .await;
    let driver = ChromeDriver::start().await;
    let browser = driver.browser().await;
    browser.goto(&page).await.expect("opening /account");
    submit_password(&browser, "ada@example.com", "Laptop").await;
    wait_for_state(&browser, "signed-in").await;

    // The sign-in an hour ago, as the session records it (past the default 600 s), and
    // the access cookie gone as when it expires: the page's next request refreshes, and
    // the new access token carries that old `auth_time`.
    db.connect()
        .await
        .execute(
            "UPDATE sessions SET auth_time = now() - interval '1 hour'",
            &[],
        )
        .await
        .unwrap();
    browser
        .delete_cookie(ACCESS_COOKIE)
        .await
        .expect("deleting the access cookie");

    // Closed: nothing changed, still signed in, and the old password still works.
    type_into(&browser, "current-password", PASSWORD).await;
    type_into(&browser, "new-password", NEW_PASSWORD).await;
    click_shown(&browser, "change-password-button").await;
    let prompt = Locator::Css("dialog#step-up[open]");
    browser
        .wait()
        .at_most(STEP)
        .for_element(prompt)
        .await
        .expect("the step-up prompt");
    click_shown(&browser, "step-up-cancel").await;
    wait_for_text(&browser, "#status", "Nothing was changed").await;
    assert_eq!(
        browser
            .find(Locator::Css("body"))
            .await
            .unwrap()
            .attr("data-state")
            .await
            .unwrap(),
        Some("signed-in".to_owned())
    );
    assert_eq!(fetch_status(&browser, "GET", "/me").await, json!(200));

    // Confirmed with the password: the change goes through.
    click_shown(&browser, "change-password-button").await;
    browser
        .wait()
        .at_most(STEP)
        .for_element(prompt)
        .await
        .expect("the step-up prompt again");
    type_into(&browser, "step-up-password", PASSWORD).await;
    click_shown(&browser, "step-up-submit").await;
    wait_for_state(&browser, "signed-out").await;
    wait_for_text(&browser, "#status", "Your password is changed").await;
    let api = Api::new(&server);
    api.login("ada@example.com", NEW_PASSWORD).await;

    browser.close().await.unwrap();
}
