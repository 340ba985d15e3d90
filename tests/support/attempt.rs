//! Requests that may meet an outage: the answer whatever its status, or the transport
//! error, for tests that classify outcomes instead of expecting one.

use std::time::{Duration, Instant};

use reqwest::RequestBuilder;
use serde_json::json;

use crate::api::{Api, Reply};

/// What one attempted request came back with, and how long it took.
pub struct Attempt {
    /// The answer, or why there was none (connection refused or reset, client timeout).
    pub outcome: Result<Reply, String>,
    /// From sending to the end of the body.
    pub took: Duration,
}

impl Attempt {
    /// The status, or `None` when there was no answer.
    pub fn status(&self) -> Option<u16> {
        self.outcome.as_ref().ok().map(|reply| reply.status)
    }

    /// The answer; panics, quoting the error, when there was none.
    #[track_caller]
    pub fn reply(&self) -> &Reply {
        match &self.outcome {
            Ok(reply) => reply,
            Err(e) => panic!("no answer after {:?}: {e}", self.took),
        }
    }
}

impl Api<'_> {
    /// Sends `request`, named `what`, and reads the whole answer, whatever its status;
    /// unlike [`Api::send`] it neither panics on a 5xx nor on a failed request.
    pub async fn attempt(&self, what: String, request: RequestBuilder) -> Attempt {
        let started = Instant::now();
        let outcome = async {
            let response = request.send().await.map_err(|e| format!("{what}: {e:?}"))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .text()
                .await
                .map_err(|e| format!("{what}: reading the body: {e:?}"))?;
            Ok(Reply {
                what,
                status,
                headers,
                body,
            })
        }
        .await;
        Attempt {
            outcome,
            took: started.elapsed(),
        }
    }

    /// `POST /auth/refresh` with `refresh_token`, as an [`Api::attempt`].
    pub async fn attempt_refresh(&self, refresh_token: &str) -> Attempt {
        let request = self
            .request(reqwest::Method::POST, "/auth/refresh")
            .json(&json!({"refresh_token": refresh_token}));
        self.attempt("POST /auth/refresh".to_owned(), request).await
    }

    /// `GET /me` with `access_token`, as an [`Api::attempt`].
    pub async fn attempt_me(&self, access_token: &str) -> Attempt {
        let request = self
            .request(reqwest::Method::GET, "/me")
            .bearer_auth(access_token);
        self.attempt("GET /me".to_owned(), request).await
    }

    /// `POST /auth/login` with `email` and `password`, as an [`Api::attempt`].
    pub async fn attempt_login(&self, email: &str, password: &str) -> Attempt {
        let request = self
            .request(reqwest::Method::POST, "/auth/login")
            .json(&json!({"email": email, "password": password}));
        self.attempt("POST /auth/login".to_owned(), request).await
    }
}
