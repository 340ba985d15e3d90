//! `Allow` on every 405 (RFC 9110 §15.5.6: the server MUST list the methods the resource
//! supports). The methods come from the OpenAPI document itself, so they cannot drift from
//! the routes.

use std::sync::Arc;

use poem::http::header::ALLOW;
use poem::http::{HeaderValue, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};

use super::error::framework_error;

/// The methods of each known path.
#[derive(Debug, Default)]
pub(super) struct AllowedMethods {
    paths: Vec<(Vec<Segment>, HeaderValue)>,
}

#[derive(Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`: any one non-empty segment.
    Parameter,
}

const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
];

impl AllowedMethods {
    /// The paths and methods of an OpenAPI document.
    pub(super) fn from_openapi(document: &str) -> Self {
        let document: serde_json::Value = serde_json::from_str(document).unwrap_or_default();
        let mut allowed = Self::default();
        if let Some(paths) = document["paths"].as_object() {
            for (path, item) in paths {
                let methods: Vec<String> = item
                    .as_object()
                    .into_iter()
                    .flat_map(serde_json::Map::keys)
                    .map(|key| key.to_ascii_uppercase())
                    .collect();
                let methods: Vec<&str> = methods.iter().map(String::as_str).collect();
                allowed = allowed.with(path, &methods);
            }
        }
        allowed
    }

    /// Adds a path (`/a/{id}` syntax) served outside the OpenAPI document.
    pub(super) fn with(mut self, path: &str, methods: &[&str]) -> Self {
        // Poem answers HEAD with the GET handler when a path has no HEAD of its own.
        let head = methods.contains(&"GET");
        let listed: Vec<&str> = METHODS
            .into_iter()
            .filter(|method| methods.contains(method) || (head && *method == "HEAD"))
            .collect();
        if let Ok(value) = HeaderValue::from_str(&listed.join(", ")) {
            let segments = path
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') && segment.ends_with('}') {
                        Segment::Parameter
                    } else {
                        Segment::Literal(segment.to_owned())
                    }
                })
                .collect();
            self.paths.push((segments, value));
        }
        self
    }

    /// The `Allow` value for a request path; a literal route beats a parameter, as in
    /// the router.
    fn for_path(&self, path: &str) -> Option<&HeaderValue> {
        let request: Vec<&str> = path.split('/').collect();
        self.paths
            .iter()
            .filter(|(template, _)| {
                template.len() == request.len()
                    && template.iter().zip(&request).all(|(t, r)| match t {
                        Segment::Literal(literal) => literal == r,
                        Segment::Parameter => !r.is_empty(),
                    })
            })
            .min_by_key(|(template, _)| {
                template
                    .iter()
                    .filter(|segment| **segment == Segment::Parameter)
                    .count()
            })
            .map(|(_, allow)| allow)
    }
}

/// Calls `endpoint`, adding `Allow` to a 405.
pub(super) async fn allow_on_405<E: Endpoint>(
    endpoint: Arc<E>,
    request: Request,
    allowed: Arc<AllowedMethods>,
) -> poem::Result<Response> {
    // A clone of the URI shares its bytes: no copy of the path for every request.
    let uri = request.uri().clone();
    let result = endpoint
        .call(request)
        .await
        .map(IntoResponse::into_response);
    let status = match &result {
        Ok(response) => response.status(),
        Err(error) => error.status(),
    };
    // Matching the path costs a little: only a 405 needs it.
    if status != StatusCode::METHOD_NOT_ALLOWED {
        return result;
    }
    let Some(allow) = allowed.for_path(uri.path()) else {
        return result;
    };
    let mut response = result.unwrap_or_else(framework_error);
    response.headers_mut().insert(ALLOW, allow.clone());
    Ok(response)
}

#[cfg(test)]
mod tests {
    use poem::http::Method;
    use poem::{EndpointExt, Route, get, post};

    use super::*;

    const DOCUMENT: &str = r#"{"paths": {
        "/sessions": {"get": {}},
        "/sessions/{id}": {"delete": {}, "parameters": []},
        "/sessions/revoke-others": {"post": {}}
    }}"#;

    /// Schemathesis found `TRACE /me` answered 405 without `Allow`, which RFC 9110
    /// requires.
    #[tokio::test]
    async fn a_405_lists_the_methods_of_the_path() {
        let allowed = Arc::new(AllowedMethods::from_openapi(DOCUMENT).with("/metrics", &["GET"]));
        let ok = || poem::endpoint::make_sync(|_| "ok");
        let app = Route::new()
            .at("/sessions", get(ok()))
            .at("/sessions/:id", poem::delete(ok()))
            .at("/sessions/revoke-others", post(ok()))
            .at("/metrics", get(ok()))
            .around(move |endpoint, request| allow_on_405(endpoint, request, Arc::clone(&allowed)));
        let call = |method: Method, path: &str| {
            let request = Request::builder().method(method).uri_str(path).finish();
            let app = &app;
            async move { app.call(request).await }
        };

        for (method, path, allow) in [
            (Method::TRACE, "/sessions", "GET, HEAD"),
            (Method::POST, "/sessions", "GET, HEAD"),
            (Method::GET, "/sessions/6a1b", "DELETE"),
            (Method::DELETE, "/sessions/revoke-others", "POST"),
            (Method::OPTIONS, "/metrics", "GET, HEAD"),
        ] {
            let response = call(method.clone(), path).await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(response.headers()[ALLOW], allow, "{method} {path}");
            let body = response.into_body().into_string().await.unwrap();
            assert!(body.contains("method_not_allowed"), "{body}");
        }

        // Other answers are left alone.
        let found = call(Method::GET, "/sessions").await.unwrap();
        assert_eq!(found.status(), StatusCode::OK);
        assert!(found.headers().get(ALLOW).is_none());
        let missing = call(Method::GET, "/nowhere").await;
        assert_eq!(missing.unwrap_err().status(), StatusCode::NOT_FOUND);
    }
}
