//! The account page in a real browser: headless Chromium driven through chromedriver
//! (the W3C `WebDriver` protocol), against the real server over HTTP. Two `WebDriver`
//! sessions are two browser profiles with cookie jars of their own: the first signs out the second, whose
//! next request is refused. A screenshot of the signed-in page is written to
//! `target/account-page.png`.
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

const PASSWORD: &str = "correct horse battery";
/// The longest any step of the page may take.
const STEP: Duration = Duration::from_secs(20);
/// A phone's width, so the screenshot shows the page as a phone does.
const WINDOW: &str = "--window-size=412,915";

/// chromedriver on a free loopback port, in a process group of its own so the browsers
/// it starts go with it.
struct ChromeDriver {
    child: Child,
    port: u16,
}

impl ChromeDriver {
    async fn start() -> Self {
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
        let driver = Self { child, port };
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

    /// A new browser session: a fresh profile, headless, phone-wide.
    async fn browser(&self) -> Client {
        let mut options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", WINDOW],
        });
        if Path::new("/usr/bin/chromium").exists() {
            options["binary"] = json!("/usr/bin/chromium");
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".to_owned(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".to_owned(), options);
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url(""))
            .await
            .expect("a Chromium session through chromedriver")
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

/// Waits until the page says it is in `state` (`signed-in`, `signed-out`).
async fn wait_for_state(browser: &Client, state: &str) {
    browser
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css(&format!("body[data-state='{state}']")))
        .await
        .unwrap_or_else(|e| panic!("the page never showed {state}: {e}"));
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

/// Opens the account page and signs in through its form.
async fn sign_in(browser: &Client, server: &ServerProcess, email: &str, device: &str) {
    browser
        .goto(&server.url("/account"))
        .await
        .expect("opening /account");
    wait_for_state(browser, "signed-out").await;
    for (id, text) in [
        ("email", email),
        ("password", PASSWORD),
        ("device-name", device),
    ] {
        browser
            .find(Locator::Id(id))
            .await
            .expect(id)
            .send_keys(text)
            .await
            .expect(id);
    }
    browser
        .find(Locator::Id("sign-in-button"))
        .await
        .expect("the sign-in button")
        .click()
        .await
        .expect("clicking sign in");
    wait_for_state(browser, "signed-in").await;
}

/// `GET /me` from inside the page: the status the browser gets with its own cookies.
async fn me_status_from(browser: &Client) -> Value {
    browser
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             fetch('/me', {credentials: 'same-origin'}).then(r => done(r.status), e => done(String(e)));",
            vec![],
        )
        .await
        .expect("running fetch in the page")
}

fn screenshot_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("account-page.png")
}

#[tokio::test]
async fn one_profile_signs_another_out_on_the_account_page_and_its_next_request_is_refused() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    Api::new(&server)
        .register("ada@example.com", PASSWORD)
        .await;
    let driver = ChromeDriver::start().await;

    let first = driver.browser().await;
    sign_in(&first, &server, "ada@example.com", "Ada's laptop").await;
    let items = wait_for_sessions(&first, 1).await;
    assert_eq!(
        items[0].attr("data-current").await.unwrap().as_deref(),
        Some("true")
    );
    let mark = first
        .find(Locator::Css("li.session[data-current='true'] .this-device"))
        .await
        .expect("its own session is marked");
    assert_eq!(mark.text().await.unwrap(), "This device");
    let text = items[0].text().await.unwrap();
    assert!(
        text.contains("Ada's laptop") && text.contains("127.0.0.1"),
        "{text}"
    );
    // The tokens are in HttpOnly cookies: the page's script cannot see them.
    let visible = first
        .execute("return document.cookie;", vec![])
        .await
        .unwrap();
    assert_eq!(visible, json!(""), "cookies visible to script");

    let second = driver.browser().await;
    sign_in(&second, &server, "ada@example.com", "Phone").await;
    assert_eq!(me_status_from(&second).await, json!(200));

    // The first profile sees both, signs the other one out.
    first.refresh().await.expect("reloading");
    wait_for_state(&first, "signed-in").await;
    wait_for_sessions(&first, 2).await;
    let png = first.screenshot().await.expect("a screenshot");
    let path = screenshot_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    first
        .find(Locator::Css(
            "li.session[data-current='false'] button.sign-out-session",
        ))
        .await
        .expect("a sign-out button on the other session")
        .click()
        .await
        .expect("clicking sign out");
    let left = wait_for_sessions(&first, 1).await;
    assert_eq!(
        left[0].attr("data-current").await.unwrap().as_deref(),
        Some("true")
    );

    // The second profile's next request is refused, and so is its refresh: the page
    // shows the sign-in form again.
    assert_eq!(me_status_from(&second).await, json!(401));
    second.refresh().await.expect("reloading");
    wait_for_state(&second, "signed-out").await;
    // The first is still signed in, and signs out.
    assert_eq!(me_status_from(&first).await, json!(200));
    first
        .find(Locator::Id("sign-out"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_state(&first, "signed-out").await;
    assert_eq!(me_status_from(&first).await, json!(401));

    second.close().await.unwrap();
    first.close().await.unwrap();
}
