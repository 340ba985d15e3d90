//! Where the access token comes from: `Authorization: Bearer` (default) or a cookie.

use std::sync::Arc;

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};

use crate::error::AuthError;

/// Where to read the access token from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` (RFC 6750 §2.1).
    #[default]
    Bearer,
    /// A cookie with this name. Set it `HttpOnly`, `Secure` and `SameSite=Strict` (or
    /// `Lax`). A browser sends cookies on its own, also on requests another site makes it
    /// send (CSRF), so a cookie-authenticated request that a browser marks as coming from
    /// elsewhere (`Sec-Fetch-Site` other than `same-origin`/`none`, or an `Origin` that is
    /// not this `Host`) is refused with 403.
    Cookie(Arc<str>),
    /// `Authorization: Bearer` when present, else the named cookie.
    BearerOrCookie(Arc<str>),
}

impl TokenSource {
    /// Reads a cookie with this name.
    pub fn cookie(name: impl Into<Arc<str>>) -> Self {
        Self::Cookie(name.into())
    }

    /// The token in `headers`, borrowed.
    pub fn extract<'h>(&self, headers: &'h HeaderMap) -> Result<&'h str, AuthError> {
        match self {
            Self::Bearer => bearer(headers),
            Self::Cookie(name) => from_this_site(headers).and_then(|()| cookie(headers, name)),
            Self::BearerOrCookie(name) => match bearer(headers) {
                Err(AuthError::MissingToken) => {
                    from_this_site(headers).and_then(|()| cookie(headers, name))
                }
                found => found,
            },
        }
    }
}

impl TokenSource {
    /// The bearer token as sent, with only the cheapest checks (one `Authorization`
    /// header, `Bearer` scheme), as bytes: for looking up a token verified before, which
    /// is well-formed by construction. Validating every byte first cost half of the
    /// layer's time on a cache hit, and a UTF-8 pass another tenth. `None` when there is
    /// nothing to look up this way (cookie mode, no header, several headers);
    /// [`TokenSource::extract`] then decides.
    pub(crate) fn bearer_candidate<'h>(&self, headers: &'h HeaderMap) -> Option<&'h [u8]> {
        if matches!(self, Self::Cookie(_)) {
            return None;
        }
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        let bytes = value.as_bytes();
        let (scheme, token) = bytes.split_at_checked(7)?;
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return None;
        }
        let start = token.iter().position(|&b| b != b' ')?;
        Some(&token[start..])
    }
}

/// RFC 6750 §2.1: `Bearer 1*SP b64token`, one `Authorization` header only.
fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::MissingToken);
    };
    if values.next().is_some() {
        return Err(AuthError::MalformedHeader);
    }
    let value = value.to_str().map_err(|_| AuthError::MalformedHeader)?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme (Basic, ...): no bearer credentials were offered.
        return Err(AuthError::MissingToken);
    }
    let token = rest.trim_start_matches(' ');
    if is_b64token(token) {
        Ok(token)
    } else {
        Err(AuthError::MalformedHeader)
    }
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

/// Refuses requests a browser says come from another site, before a cookie may count.
/// Clients that send neither header (not browsers) cannot be made to forge a request,
/// so they pass.
fn from_this_site(headers: &HeaderMap) -> Result<(), AuthError> {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(AuthError::CrossSite);
    }
    if let (Some(origin), Some(host)) = (headers.get(ORIGIN), headers.get(HOST)) {
        let authority = origin
            .to_str()
            .ok()
            .and_then(|origin| origin.split_once("://"))
            .map(|(_, authority)| authority);
        let same = authority.is_some_and(|authority| {
            host.to_str()
                .is_ok_and(|host| host.eq_ignore_ascii_case(authority))
        });
        if !same {
            return Err(AuthError::CrossSite);
        }
    }
    Ok(())
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, AuthError> {
    let mut found = None;
    for header in headers.get_all(COOKIE) {
        let Ok(header) = header.to_str() else {
            continue;
        };
        for pair in cookie::Cookie::split_parse(header).flatten() {
            if pair.name() == name {
                // Two cookies of that name: refuse rather than guess which one counts.
                if found.is_some() {
                    return Err(AuthError::MalformedHeader);
                }
                let value = pair.value_raw().unwrap_or("");
                found = Some(value);
            }
        }
    }
    match found {
        Some(value) if is_b64token(value) => Ok(value),
        Some(_) => Err(AuthError::MalformedHeader),
        None => Err(AuthError::MissingToken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    #[test]
    fn bearer_tokens() {
        let source = TokenSource::Bearer;
        let ok = headers(&[("authorization", b"Bearer abc.def-_~+/ghi==")]);
        assert_eq!(source.extract(&ok).unwrap(), "abc.def-_~+/ghi==");
        let lower = headers(&[("authorization", b"bearer abc")]);
        assert_eq!(source.extract(&lower).unwrap(), "abc");

        for (value, expected) in [
            (&b""[..], "missing"),
            (b"Basic dXNlcjpwYXNz", "missing"),
            (b"Bearer", "malformed"),
            (b"Bearer ", "malformed"),
            (b"Bearer a b", "malformed"),
            (b"Bearer a,b", "malformed"),
            (b"Bearer \xff\xfe", "malformed"),
            (b"Bearer ==", "malformed"),
        ] {
            let map = headers(&[("authorization", value)]);
            let result = source.extract(&map);
            let got = match result {
                Err(AuthError::MissingToken) => "missing",
                Err(AuthError::MalformedHeader) => "malformed",
                other => panic!("{value:?}: {other:?}"),
            };
            assert_eq!(got, expected, "{value:?}");
        }
        assert!(matches!(
            source.extract(&HeaderMap::new()),
            Err(AuthError::MissingToken)
        ));
        let twice = headers(&[
            ("authorization", b"Bearer a"),
            ("authorization", b"Bearer b"),
        ]);
        assert!(matches!(
            source.extract(&twice),
            Err(AuthError::MalformedHeader)
        ));
    }

    #[test]
    fn cookie_tokens() {
        let source = TokenSource::cookie("sg_access");
        let ok = headers(&[("cookie", b"theme=dark; sg_access=abc.def")]);
        assert_eq!(source.extract(&ok).unwrap(), "abc.def");
        let split = headers(&[("cookie", b"theme=dark"), ("cookie", b"sg_access=xyz")]);
        assert_eq!(source.extract(&split).unwrap(), "xyz");
        assert!(matches!(
            source.extract(&headers(&[("cookie", b"other=1")])),
            Err(AuthError::MissingToken)
        ));
        assert!(matches!(
            source.extract(&headers(&[("cookie", b"sg_access=a; sg_access=b")])),
            Err(AuthError::MalformedHeader)
        ));
        assert!(matches!(
            source.extract(&headers(&[("cookie", b"sg_access=\"a b\"")])),
            Err(AuthError::MalformedHeader)
        ));
        // The bearer header is not consulted in cookie mode.
        assert!(matches!(
            source.extract(&headers(&[("authorization", b"Bearer abc")])),
            Err(AuthError::MissingToken)
        ));
    }

    #[test]
    fn cookies_from_another_site_are_refused() {
        let source = TokenSource::cookie("sg_access");
        let cookie: (&str, &[u8]) = ("cookie", b"sg_access=abc");
        for (extra, allowed) in [
            (vec![], true),
            (vec![("sec-fetch-site", &b"same-origin"[..])], true),
            (vec![("sec-fetch-site", &b"none"[..])], true),
            (vec![("sec-fetch-site", &b"cross-site"[..])], false),
            (vec![("sec-fetch-site", &b"same-site"[..])], false),
            (
                vec![
                    ("host", &b"app.example"[..]),
                    ("origin", &b"https://app.example"[..]),
                ],
                true,
            ),
            (
                vec![
                    ("host", &b"app.example"[..]),
                    ("origin", &b"https://evil.example"[..]),
                ],
                false,
            ),
            (
                vec![("host", &b"app.example"[..]), ("origin", &b"null"[..])],
                false,
            ),
        ] {
            let mut pairs = vec![cookie];
            pairs.extend(extra.iter().map(|(k, v)| (*k, *v)));
            let map = headers(&pairs);
            let result = source.extract(&map);
            if allowed {
                assert_eq!(result.unwrap(), "abc", "{extra:?}");
            } else {
                assert!(matches!(result, Err(AuthError::CrossSite)), "{extra:?}");
            }
        }
        // A bearer header is never a CSRF vector: the browser does not add it by itself.
        let bearer = headers(&[
            ("authorization", b"Bearer abc"),
            ("sec-fetch-site", b"cross-site"),
        ]);
        assert_eq!(
            TokenSource::BearerOrCookie("sg_access".into())
                .extract(&bearer)
                .unwrap(),
            "abc"
        );
    }

    #[test]
    fn the_lookup_candidate_is_what_extract_would_return_for_well_formed_headers() {
        for source in [
            TokenSource::Bearer,
            TokenSource::BearerOrCookie("sg_access".into()),
        ] {
            for value in [&b"Bearer abc.def"[..], b"bearer   abc.def", b"BEARER abc"] {
                let map = headers(&[("authorization", value)]);
                assert_eq!(
                    source.bearer_candidate(&map),
                    Some(source.extract(&map).unwrap().as_bytes()),
                    "{value:?}"
                );
            }
            for value in [&b"Basic abc"[..], b"Bearer", b"Bearer\xff", b"Bearer   "] {
                let map = headers(&[("authorization", value)]);
                assert!(source.bearer_candidate(&map).is_none(), "{value:?}");
            }
        }
        // Not validated: a candidate only ever matches a token verified before.
        let map = headers(&[("authorization", b"Bearer \xffabc")]);
        assert_eq!(
            TokenSource::Bearer.bearer_candidate(&map),
            Some(&b"\xffabc"[..])
        );
        assert!(TokenSource::Bearer.extract(&map).is_err());
        let cookie_mode = TokenSource::cookie("sg_access");
        let map = headers(&[("authorization", b"Bearer abc")]);
        assert!(cookie_mode.bearer_candidate(&map).is_none());
    }

    #[test]
    fn bearer_or_cookie_prefers_the_header() {
        let source = TokenSource::BearerOrCookie("sg_access".into());
        let both = headers(&[
            ("authorization", b"Bearer fromheader"),
            ("cookie", b"sg_access=fromcookie"),
        ]);
        assert_eq!(source.extract(&both).unwrap(), "fromheader");
        let cookie_only = headers(&[("cookie", b"sg_access=fromcookie")]);
        assert_eq!(source.extract(&cookie_only).unwrap(), "fromcookie");
    }
}
