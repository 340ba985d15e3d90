//! A test harness for applications built on Portcullis (feature `testing`): the
//! application, started in the test's process on a throwaway database, and called over
//! real HTTP with the tokens of a really signed-in user.
//!
//! ```no_run
//! # async fn test() {
//! use portcullis_server::App;
//! use portcullis_server::testing::TestServer;
//!
//! let server = TestServer::start(App::standalone()).await;
//! let ada = server.sign_up().await;
//! let me: serde_json::Value = ada.get("/me").send().await.unwrap().json().await.unwrap();
//! assert_eq!(me["email"], ada.email());
//! # }
//! ```
//!
//! The database is created from the same `DATABASE_URL` the server reads (the local
//! PostgreSQL as the OS user when unset), under a name of its own, migrated with
//! Portcullis's schema and the application's, and dropped when the [`TestServer`] is.
//! Every other setting is its default unless the test gives it
//! ([`TestServer::start_with`]); the process environment is not read, so a test sees
//! the same server wherever it runs.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use deadpool_postgres::Pool;
use poem_openapi::OpenApi;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::App;
use crate::config::{Config, default_database_name};
use crate::ids::{SessionId, UserId};

/// The password every [`TestServer::sign_up`] user gets.
pub const TEST_PASSWORD: &str = "correct horse battery staple";

static DATABASES: AtomicU64 = AtomicU64::new(0);

/// The application, serving on a free loopback port over a database of its own; stopped,
/// and its database dropped, when dropped.
pub struct TestServer {
    addr: SocketAddr,
    http: reqwest::Client,
    pool: Pool,
    config: Config,
    task: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dev_keys: tempfile::TempDir,
}

impl TestServer {
    /// Starts `app` with every setting at its default.
    ///
    /// # Panics
    ///
    /// When PostgreSQL cannot be reached or the application does not start; the message
    /// says why.
    pub async fn start<Api: OpenApi + 'static>(app: App<Api>) -> Self {
        Self::start_with(app, &[]).await
    }

    /// Starts `app` with `settings` (`("NOTES_PER_USER", "3")`, …) over the defaults.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start), and when a setting is invalid.
    pub async fn start_with<Api: OpenApi + 'static>(
        app: App<Api>,
        settings: &[(&str, &str)],
    ) -> Self {
        let dev_keys = tempfile::tempdir().expect("a folder for development keys");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let addr = listener.local_addr().expect("the port's address");
        let mut given: HashMap<String, OsString> = HashMap::from([
            ("BIND_ADDR".to_owned(), addr.to_string().into()),
            ("PUBLIC_URL".to_owned(), format!("http://{addr}").into()),
            ("DEV_KEYS_DIR".to_owned(), dev_keys.path().into()),
            ("RUST_LOG".to_owned(), "warn".into()),
        ]);
        if let Some(url) = std::env::var_os("DATABASE_URL") {
            given.insert("DATABASE_URL".to_owned(), url);
        }
        for (name, value) in settings {
            given.insert((*name).to_owned(), (*value).into());
        }
        let mut config = app
            .config_from_lookup(|name| given.get(name).cloned())
            .unwrap_or_else(|e| panic!("the test server's settings: {e}"));
        let database = format!(
            "{}_test_{}_{}_{}",
            default_database_name(app.name()),
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::Relaxed),
            &Uuid::new_v4().simple().to_string()[..8],
        );
        config.database.url.settings_mut().dbname(&database);
        let state = crate::prepare(&app, config.clone())
            .await
            .unwrap_or_else(|e| panic!("starting {}: {}", app.name(), crate::error::chain(&e)));
        let pool = state.pool.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = crate::serve(&app, state, listener, shutdown).await {
                eprintln!("the test server stopped: {}", crate::error::chain(&e));
            }
        });
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("an HTTP client");
        Self {
            addr,
            http,
            pool,
            config,
            task,
            stop: Some(stop),
            _dev_keys: dev_keys,
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The absolute URL of `path` (`/notes`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request to `path` with no credentials.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// The pool of the server's database, to set up or check rows directly.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The settings the server runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Registers a new account with a unique address and [`TEST_PASSWORD`], and signs it
    /// in.
    ///
    /// # Panics
    ///
    /// When registering or signing in does not succeed.
    pub async fn sign_up(&self) -> TestUser {
        let email = format!("user-{}@example.com", Uuid::new_v4().simple());
        self.sign_up_as(&email, TEST_PASSWORD).await
    }

    /// Registers `email` with `password` and signs it in.
    ///
    /// # Panics
    ///
    /// When registering or signing in does not succeed.
    pub async fn sign_up_as(&self, email: &str, password: &str) -> TestUser {
        let registered = self
            .request(Method::POST, "/auth/register")
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("POST /auth/register");
        let status = registered.status();
        let body: Value = registered.json().await.unwrap_or_default();
        assert_eq!(status, StatusCode::CREATED, "registering {email}: {body}");
        self.sign_in(email, password).await
    }

    /// Signs an existing account in: a new session.
    ///
    /// # Panics
    ///
    /// When signing in does not succeed.
    pub async fn sign_in(&self, email: &str, password: &str) -> TestUser {
        let response = self
            .request(Method::POST, "/auth/login")
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("POST /auth/login");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        assert_eq!(status, StatusCode::OK, "signing {email} in: {body}");
        let text = |field: &str| {
            body[field]
                .as_str()
                .unwrap_or_else(|| panic!("the token pair has no {field}: {body}"))
                .to_owned()
        };
        let access_token = text("access_token");
        let session_id: SessionId = text("session_id").parse().expect("a session id");
        let me: Value = self
            .http
            .get(self.url("/me"))
            .bearer_auth(&access_token)
            .send()
            .await
            .expect("GET /me")
            .json()
            .await
            .expect("GET /me answers JSON");
        let user_id: UserId = me["user_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("GET /me names no user: {me}"));
        TestUser {
            http: self.http.clone(),
            base: format!("http://{}", self.addr),
            email: email.to_owned(),
            user_id,
            session_id,
            access_token,
            refresh_token: text("refresh_token"),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
        self.pool.close();
        let database = self.config.database.url.clone();
        // Drop runs inside the test's runtime or outside one; a thread of its own with its
        // own runtime works in both.
        let dropped = std::thread::spawn(move || crate::database::drop_database(&database)).join();
        if let Ok(Err(e)) = dropped {
            eprintln!("the test server's database was not dropped: {e}");
        }
    }
}

/// A signed-in user of a [`TestServer`]: its ids, and requests that carry its access
/// token.
#[derive(Debug, Clone)]
pub struct TestUser {
    http: reqwest::Client,
    base: String,
    email: String,
    user_id: UserId,
    session_id: SessionId,
    access_token: String,
    refresh_token: String,
}

impl TestUser {
    /// A request to `path` with the user's access token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.access_token)
    }

    /// `GET path` as the user.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// `POST path` as the user.
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    /// `PUT path` as the user.
    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    /// `PATCH path` as the user.
    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.request(Method::PATCH, path)
    }

    /// `DELETE path` as the user.
    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// The account's address.
    pub fn email(&self) -> &str {
        &self.email
    }

    /// The account's id.
    pub fn user_id(&self) -> UserId {
        self.user_id
    }

    /// The session's id.
    pub fn session_id(&self) -> SessionId {
        self.session_id
    }

    /// The access token (a JWT).
    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    /// The refresh token of the sign-in.
    pub fn refresh_token(&self) -> &str {
        &self.refresh_token
    }
}
