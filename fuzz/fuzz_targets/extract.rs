//! `TokenSource::{Bearer, Cookie, BearerOrCookie}::extract` on arbitrary headers.
//!
//! The input is lines: `cookie:<value>` adds a `Cookie` header, `authorization:<value>`
//! or any other line adds an `Authorization` header (values that are not valid header
//! bytes are skipped; optional whitespace around a value is dropped, as an HTTP parser
//! does). Several lines make several headers.
//!
//! Invariants: an extracted token is an RFC 6750 `b64token`, taken from the one
//! `Authorization: Bearer` header or from a `Cookie` header that has a cookie named `sg`;
//! `BearerOrCookie` is `Bearer`, falling back to the cookie only when no bearer token
//! was offered.

#![no_main]

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis::{AuthError, TokenSource};

const COOKIE_NAME: &str = "sg";

fn headers(data: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) if line[..colon].eq_ignore_ascii_case(b"cookie") => {
                (COOKIE, &line[colon + 1..])
            }
            Some(colon) if line[..colon].eq_ignore_ascii_case(b"authorization") => {
                (AUTHORIZATION, &line[colon + 1..])
            }
            _ => (AUTHORIZATION, line),
        };
        if let Ok(value) = HeaderValue::from_bytes(value.trim_ascii()) {
            map.append(name, value);
        }
    }
    map
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

fn label(result: &Result<&str, AuthError>) -> String {
    match result {
        Ok(token) => format!("ok {token}"),
        Err(e) => format!("err {}", e.reason()),
    }
}

fn check_bearer(map: &HeaderMap, result: &Result<&str, AuthError>) {
    let values: Vec<&HeaderValue> = map.get_all(AUTHORIZATION).iter().collect();
    match result {
        Ok(token) => {
            assert!(is_b64token(token), "not a b64token: {token:?}");
            assert_eq!(
                values.len(),
                1,
                "a token from several Authorization headers"
            );
            let value = values[0].to_str().expect("accepted: visible ASCII");
            let (scheme, rest) = value.split_at(6.min(value.len()));
            assert!(scheme.eq_ignore_ascii_case("bearer"), "scheme of {value:?}");
            assert!(
                rest.starts_with(' '),
                "no space after the scheme: {value:?}"
            );
            assert_eq!(rest.trim_start_matches(' '), *token, "token of {value:?}");
        }
        Err(AuthError::MissingToken) => {
            // Nothing, or one header of another scheme.
            if let [value] = values.as_slice() {
                let bytes = value.as_bytes();
                let scheme = bytes.split(|&b| b == b' ').next().unwrap_or_default();
                assert!(!scheme.eq_ignore_ascii_case(b"bearer"), "missed {value:?}");
            } else {
                assert!(values.is_empty(), "several headers are not missing");
            }
        }
        Err(AuthError::MalformedHeader) => assert!(!values.is_empty()),
        Err(other) => panic!("extract cannot fail with {other:?}"),
    }
}

fn check_cookie(map: &HeaderMap, result: &Result<&str, AuthError>) {
    let cookies: Vec<&[u8]> = map
        .get_all(COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let named = |needle: &[u8]| {
        cookies
            .iter()
            .any(|c| c.windows(needle.len()).any(|w| w == needle))
    };
    match result {
        Ok(token) => {
            assert!(is_b64token(token), "not a b64token: {token:?}");
            assert!(named(token.as_bytes()), "token in no Cookie header");
            assert!(named(COOKIE_NAME.as_bytes()), "no cookie of that name");
        }
        Err(AuthError::MissingToken | AuthError::MalformedHeader) => {}
        Err(other) => panic!("extract cannot fail with {other:?}"),
    }
    if !named(COOKIE_NAME.as_bytes()) {
        assert!(
            matches!(result, Err(AuthError::MissingToken)),
            "a cookie that is not there: {}",
            label(result)
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let map = headers(data);
    let bearer = TokenSource::Bearer.extract(&map);
    let cookie = TokenSource::cookie(COOKIE_NAME).extract(&map);
    let either = TokenSource::BearerOrCookie(COOKIE_NAME.into()).extract(&map);
    check_bearer(&map, &bearer);
    check_cookie(&map, &cookie);
    let expected = match &bearer {
        Err(AuthError::MissingToken) => &cookie,
        found => found,
    };
    assert_eq!(label(&either), label(expected), "BearerOrCookie");
});
