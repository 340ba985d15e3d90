//! An HTTP client for the account and session routes of one [`ServerProcess`], whose
//! answers are read whole so that assertions can quote them.
//!
//! Every request is sent by [`Api::send`], which panics with the server's log when the
//! request fails or the server answers with a 5xx.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, AsHeaderName, CONTENT_TYPE, HeaderMap, USER_AGENT};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

use crate::ServerProcess;

/// One HTTP answer, read whole so that assertions can quote it.
pub struct Reply {
    /// What was sent, to name the request in assertion messages.
    pub what: String,
    /// The HTTP status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The response body as text.
    pub body: String,
}

impl Reply {
    /// The body parsed as JSON; panics if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {:?}", self.what, self.body))
    }

    /// The value of the header `name`, when present and visible ASCII.
    pub fn header(&self, name: impl AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Asserts `status` and returns the JSON body (`Null` when empty).
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}: {}", self.what, self.body);
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts one of `statuses` and the JSON error shape with the code `error`.
    #[track_caller]
    pub fn expect_error(&self, statuses: &[u16], error: &str) -> Value {
        let body = self.expect_error_shape(statuses);
        assert_eq!(body["error"], error, "{}: {}", self.what, self.body);
        body
    }

    /// Asserts one of `statuses` and the JSON error shape, whatever the code.
    #[track_caller]
    pub fn expect_error_shape(&self, statuses: &[u16]) -> Value {
        assert!(
            statuses.contains(&self.status),
            "{}: expected {statuses:?}, got {}: {}",
            self.what,
            self.status,
            self.body
        );
        assert!(
            self.header(CONTENT_TYPE)
                .is_some_and(|t| t.starts_with("application/json")),
            "{}: error without a JSON content type: {:?}",
            self.what,
            self.headers
        );
        let body = self.json();
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{}: error without a code: {}",
            self.what,
            self.body
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: error without a message: {}",
            self.what,
            self.body
        );
        body
    }
}

/// Asserts that `reply` is a 401: the credential it carried was refused.
#[track_caller]
pub fn assert_refused(reply: &Reply) {
    assert_eq!(reply.status, 401, "{}: {}", reply.what, reply.body);
}

/// The string `field` of a token pair (or any JSON object); panics if it is missing.
pub fn token(pair: &Value, field: &str) -> String {
    pair[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} missing from {pair}"))
        .to_owned()
}

/// What a login hands a client.
pub struct Session {
    /// The session id.
    pub id: String,
    /// The access token.
    pub access: String,
    /// The refresh token.
    pub refresh: String,
}

impl Session {
    /// The session described by a login's token pair.
    pub fn from_pair(pair: &Value) -> Self {
        Self {
            id: token(pair, "session_id"),
            access: token(pair, "access_token"),
            refresh: token(pair, "refresh_token"),
        }
    }
}

/// A client for one server, with one HTTP client of its own.
pub struct Api<'s> {
    server: &'s ServerProcess,
    http: reqwest::Client,
}

impl<'s> Api<'s> {
    /// A client for `server`.
    pub fn new(server: &'s ServerProcess) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("HTTP client");
        Self { server, http }
    }

    /// A request for `method path` on the server, to complete and pass to [`Api::send`].
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.server.url(path))
    }

    /// Sends `request`, named `what` in messages, and reads the whole answer; panics with
    /// the server's log if it fails or the server answers with a 5xx.
    pub async fn send(&self, what: String, request: RequestBuilder) -> Reply {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:?}\n{}", self.server.log()));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.expect("reading the body");
        assert!(
            status < 500,
            "{what}: server error {status}: {body}\n{}",
            self.server.log()
        );
        Reply {
            what,
            status,
            headers,
            body,
        }
    }

    /// `POST path` with `body` as JSON.
    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        let request = self.request(Method::POST, path).json(body);
        self.send(format!("POST {path}"), request).await
    }

    /// `POST path` with `body` sent verbatim as `application/json`.
    pub async fn post_raw(&self, path: &str, body: &str) -> Reply {
        let request = self
            .request(Method::POST, path)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_owned());
        self.send(format!("POST {path} {body:?}"), request).await
    }

    /// `method path` with the `Authorization` header set to `authorization`, if any.
    pub async fn with_auth(
        &self,
        method: Method,
        path: &str,
        authorization: Option<&str>,
    ) -> Reply {
        let what = format!("{method} {path} with Authorization {authorization:?}");
        let mut request = self.request(method, path);
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        self.send(what, request).await
    }

    /// `method path` with `access_token` as the bearer token.
    pub async fn bearer(&self, method: Method, path: &str, access_token: &str) -> Reply {
        let request = self.request(method.clone(), path).bearer_auth(access_token);
        self.send(format!("{method} {path} with a bearer token"), request)
            .await
    }

    /// `GET /me` with `access_token`.
    pub async fn me(&self, access_token: &str) -> Reply {
        self.bearer(Method::GET, "/me", access_token).await
    }

    /// Registers `email` with `password`, asserting a 201: the new user's id.
    pub async fn register(&self, email: &str, password: &str) -> String {
        let body = self
            .post_json(
                "/auth/register",
                &json!({"email": email, "password": password}),
            )
            .await
            .expect(201);
        body["user_id"].as_str().expect("user_id").to_owned()
    }

    /// Registers `email` with `password` and logs it in: the token pair.
    pub async fn signed_up(&self, email: &str, password: &str) -> Value {
        self.register(email, password).await;
        self.login(email, password).await
    }

    /// `POST /auth/login` with `email` and `password`, whatever the answer.
    pub async fn login_reply(&self, email: &str, password: &str) -> Reply {
        self.login_reply_as(email, password, None, None).await
    }

    /// `POST /auth/login` with `email`, `password` and, when given, a `device_name` in
    /// the body and a `User-Agent` header; whatever the answer.
    pub async fn login_reply_as(
        &self,
        email: &str,
        password: &str,
        device_name: Option<&str>,
        user_agent: Option<&str>,
    ) -> Reply {
        let mut body = json!({"email": email, "password": password});
        if let Some(name) = device_name {
            body["device_name"] = json!(name);
        }
        let mut request = self.request(Method::POST, "/auth/login").json(&body);
        if let Some(user_agent) = user_agent {
            request = request.header(USER_AGENT, user_agent);
        }
        self.send("POST /auth/login".to_owned(), request).await
    }

    /// Logs `email` in, asserting a 200: the token pair.
    pub async fn login(&self, email: &str, password: &str) -> Value {
        self.login_reply(email, password).await.expect(200)
    }

    /// Logs `email` in, asserting a 200: the new session.
    pub async fn login_session(&self, email: &str, password: &str) -> Session {
        self.login_session_as(email, password, None, None).await
    }

    /// Logs `email` in as [`Api::login_reply_as`] does, asserting a 200: the new session.
    pub async fn login_session_as(
        &self,
        email: &str,
        password: &str,
        device_name: Option<&str>,
        user_agent: Option<&str>,
    ) -> Session {
        let pair = self
            .login_reply_as(email, password, device_name, user_agent)
            .await
            .expect(200);
        Session::from_pair(&pair)
    }

    /// `POST /auth/refresh` with `refresh_token`.
    pub async fn refresh(&self, refresh_token: &str) -> Reply {
        self.post_json("/auth/refresh", &json!({"refresh_token": refresh_token}))
            .await
    }

    /// `POST /auth/refresh` with `refresh_token` from another client: this `User-Agent`
    /// and, when given, this `X-Forwarded-For` (believed when the server trusts loopback
    /// as a proxy).
    pub async fn refresh_from(
        &self,
        refresh_token: &str,
        user_agent: &str,
        forwarded_for: Option<&str>,
    ) -> Reply {
        let mut request = self
            .request(Method::POST, "/auth/refresh")
            .header(USER_AGENT, user_agent)
            .json(&json!({"refresh_token": refresh_token}));
        if let Some(ip) = forwarded_for {
            request = request.header("x-forwarded-for", ip);
        }
        self.send(format!("POST /auth/refresh as {user_agent}"), request)
            .await
    }

    /// `GET /sessions` as `session`, asserting a 200: the listed sessions.
    pub async fn sessions(&self, session: &Session) -> Vec<Value> {
        let body = self
            .bearer(Method::GET, "/sessions", &session.access)
            .await
            .expect(200);
        body["sessions"]
            .as_array()
            .unwrap_or_else(|| panic!("no sessions array in {body}"))
            .clone()
    }

    /// `DELETE /sessions/{id}` as `session`.
    pub async fn delete_session(&self, session: &Session, id: &str) -> Reply {
        self.bearer(Method::DELETE, &format!("/sessions/{id}"), &session.access)
            .await
    }
}
