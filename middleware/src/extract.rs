//! Where the access token comes from: `Authorization: Bearer` (default) or a cookie.

use std::sync::Arc;

use http::header::{AUTHORIZATION, COOKIE, HOST, ORIGIN};
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Uri};

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
    /// elsewhere (`Sec-Fetch-Site` other than `same-origin`/`none`, or an `Origin` whose
    /// scheme, host and port are not the request's, see [`RequestHead`]) is refused with
    /// 403.
    Cookie(Arc<str>),
    /// `Authorization: Bearer` when present, else the named cookie.
    BearerOrCookie(Arc<str>),
}

impl TokenSource {
    /// Reads a cookie with this name.
    pub fn cookie(name: impl Into<Arc<str>>) -> Self {
        Self::Cookie(name.into())
    }

    /// The token in the request (its headers, or a [`RequestHead`]), borrowed. A cookie
    /// request's `Origin` is compared with the request's own `Host` (or URI authority).
    pub fn extract<'h>(&self, request: impl Into<RequestHead<'h>>) -> Result<&'h str, AuthError> {
        self.extract_for(request, None)
    }

    /// As [`extract`](Self::extract), but a cookie request's `Origin` must be one of
    /// `expected` when that is given: behind a proxy that does not pass `Host` through,
    /// the request's own host is the proxy's upstream, not the page's origin.
    pub fn extract_for<'h>(
        &self,
        request: impl Into<RequestHead<'h>>,
        expected: Option<&ExpectedOrigins>,
    ) -> Result<&'h str, AuthError> {
        let request = request.into();
        let headers = request.headers;
        match self {
            Self::Bearer => bearer(headers),
            Self::Cookie(name) => {
                from_this_site(request, expected).and_then(|()| cookie(headers, name))
            }
            Self::BearerOrCookie(name) => match bearer(headers) {
                Err(AuthError::MissingToken) => {
                    from_this_site(request, expected).and_then(|()| cookie(headers, name))
                }
                found => found,
            },
        }
    }
}

/// The origins (scheme, host and port) whose pages may send cookie-authenticated
/// requests: the public origin the browser sees, whatever `Host` a proxy forwards.
///
/// ```
/// use portcullis::ExpectedOrigins;
///
/// let origins = ExpectedOrigins::parse(["https://app.example"]).unwrap();
/// assert!(ExpectedOrigins::parse(["app.example"]).is_err());
/// # let _ = origins;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedOrigins {
    origins: Arc<[SchemeHostPort]>,
}

/// One origin, lower-cased, its port made explicit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SchemeHostPort {
    scheme: &'static str,
    host: String,
    port: u16,
}

/// An expected origin that is not `http(s)://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an origin like https://app.example (scheme, host and optional port)")]
pub struct InvalidOrigin(String);

impl ExpectedOrigins {
    /// Reads each `http(s)://host[:port]` (a trailing `/` is allowed, nothing else).
    ///
    /// # Errors
    ///
    /// The first text that is not such an origin, or none given at all.
    pub fn parse<I, S>(origins: I) -> Result<Self, InvalidOrigin>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let origins = origins
            .into_iter()
            .map(|text| {
                let text = text.as_ref();
                let trimmed = text.strip_suffix('/').unwrap_or(text);
                scheme_host_port(trimmed).ok_or_else(|| InvalidOrigin(text.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if origins.is_empty() {
            return Err(InvalidOrigin(String::new()));
        }
        Ok(Self {
            origins: origins.into(),
        })
    }

    fn contains(&self, origin: &SchemeHostPort) -> bool {
        self.origins.iter().any(|expected| expected == origin)
    }
}

/// `scheme://host[:port]` as a browser writes `Origin`, http(s) only, port made explicit.
fn scheme_host_port(text: &str) -> Option<SchemeHostPort> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme = if scheme.eq_ignore_ascii_case("https") {
        "https"
    } else if scheme.eq_ignore_ascii_case("http") {
        "http"
    } else {
        return None;
    };
    let authority = authority_str(rest)?;
    if authority.as_str() != rest {
        return None;
    }
    Some(SchemeHostPort {
        scheme,
        host: authority.host().to_ascii_lowercase(),
        port: authority.port_u16().or_else(|| default_port(scheme))?,
    })
}

/// What authentication reads of a request: its headers and, when known, its URI.
///
/// The URI matters in cookie mode: an `Origin` must name the scheme and authority the
/// request was sent to. HTTP/2 carries those in the URI (`:scheme`, `:authority`) and
/// need not send `Host`; HTTP/1.1 sends `Host` and, in origin form, no scheme. So the
/// `Origin`'s host and port must match the URI's authority and the `Host` header,
/// whichever are present (and at least one must be), and its scheme the URI's scheme when
/// there is one; without one the port decides (an `Origin`'s default port is its
/// scheme's). From headers alone (`From<&HeaderMap>`) only `Host` is known.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    uri: Option<&'a Uri>,
    headers: &'a HeaderMap,
}

impl<'a> RequestHead<'a> {
    /// A request's URI and headers (`request.uri()`, `request.headers()`).
    pub fn new(uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        Self {
            uri: Some(uri),
            headers,
        }
    }

    /// The request's headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }
}

impl<'a> From<&'a HeaderMap> for RequestHead<'a> {
    fn from(headers: &'a HeaderMap) -> Self {
        Self { uri: None, headers }
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
fn from_this_site(
    request: RequestHead<'_>,
    expected: Option<&ExpectedOrigins>,
) -> Result<(), AuthError> {
    let headers = request.headers;
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Err(AuthError::CrossSite);
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    if let Some(expected) = expected {
        // Configured: scheme, host and port must be one of these, whatever `Host` says.
        let sent = origin.to_str().ok().and_then(scheme_host_port);
        return if sent.is_some_and(|sent| expected.contains(&sent)) {
            Ok(())
        } else {
            Err(AuthError::CrossSite)
        };
    }
    let Some((scheme, origin)) = parse_origin(origin) else {
        // `null` (a sandboxed or privacy-sensitive context), or not an origin at all.
        return Err(AuthError::CrossSite);
    };
    let uri = request.uri;
    if let Some(sent) = uri.and_then(Uri::scheme_str)
        && !sent.eq_ignore_ascii_case(scheme)
    {
        return Err(AuthError::CrossSite);
    }
    // A port left out is the scheme's default: the request's scheme when known, else
    // the one the `Origin` names.
    let target_default = default_port(uri.and_then(Uri::scheme_str).unwrap_or(scheme));
    let origin_port = origin.port_u16().or_else(|| default_port(scheme));
    let same = |target: &Authority| {
        target.host().eq_ignore_ascii_case(origin.host())
            && target.port_u16().or(target_default) == origin_port
    };
    let from_uri = uri.and_then(Uri::authority);
    let host = match headers.get(HOST) {
        Some(host) => Some(authority(host).ok_or(AuthError::CrossSite)?),
        None => None,
    };
    if from_uri.is_none() && host.is_none() {
        // Nothing to compare with: this request cannot be shown to come from this site.
        return Err(AuthError::CrossSite);
    }
    if from_uri.is_some_and(|a| !same(a)) || host.as_ref().is_some_and(|a| !same(a)) {
        return Err(AuthError::CrossSite);
    }
    Ok(())
}

/// An `Origin` header (RFC 6454 §7): `scheme "://" host [ ":" port ]`, http(s) only.
fn parse_origin(origin: &HeaderValue) -> Option<(&str, Authority)> {
    let (scheme, rest) = origin.to_str().ok()?.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    Some((scheme, authority_str(rest)?))
}

/// A `Host` header: an authority without user information.
fn authority(host: &HeaderValue) -> Option<Authority> {
    authority_str(host.to_str().ok()?)
}

fn authority_str(text: &str) -> Option<Authority> {
    let authority: Authority = text.parse().ok()?;
    // `user@host` is no host a browser names.
    (!authority.as_str().contains('@') && !authority.host().is_empty()).then_some(authority)
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else {
        None
    }
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

    /// Configured origins decide alone: a proxy's upstream `Host` does not matter, and
    /// the scheme and port are compared too.
    #[test]
    fn expected_origins_replace_the_host_comparison() {
        let source = TokenSource::cookie("sg_access");
        let expected =
            ExpectedOrigins::parse(["https://app.example/", "http://localhost:3000"]).unwrap();
        for (host, origin, ok) in [
            ("127.0.0.1:8080", "https://app.example", true),
            ("127.0.0.1:8080", "https://APP.example:443", true),
            ("app.example", "http://app.example", false),
            ("app.example", "https://app.example:8443", false),
            ("app.example", "https://evil.example", false),
            ("localhost:3000", "http://localhost:3000", true),
            ("localhost:3000", "http://localhost", false),
            ("app.example", "null", false),
        ] {
            let map = headers(&[
                ("host", host.as_bytes()),
                ("origin", origin.as_bytes()),
                ("cookie", b"sg_access=abc"),
            ]);
            let result = source.extract_for(&map, Some(&expected));
            assert_eq!(
                result.is_ok(),
                ok,
                "Host {host}, Origin {origin}: {result:?}"
            );
        }
        // Without configuration, the same proxied request fails the Host comparison.
        let proxied = headers(&[
            ("host", b"127.0.0.1:8080"),
            ("origin", b"https://app.example"),
            ("cookie", b"sg_access=abc"),
        ]);
        assert!(matches!(
            source.extract(&proxied),
            Err(AuthError::CrossSite)
        ));
        for bad in [
            "app.example",
            "ftp://app.example",
            "https://app.example/path",
            "https://u@app.example",
        ] {
            assert!(ExpectedOrigins::parse([bad]).is_err(), "{bad}");
        }
        assert!(ExpectedOrigins::parse(Vec::<String>::new()).is_err());
    }

    /// The `Origin` against the request's own scheme and authority: from the URI when it
    /// has them (HTTP/2, absolute form), from `Host` otherwise, and refused when neither
    /// names where the request went.
    #[test]
    fn the_origin_must_name_the_requests_scheme_host_and_port() {
        // URI, Host (`-`: none), Origin, verdict.
        const CASES: &str = "
            # HTTP/2: no Host, the authority and scheme are in the URI.
            https://app.example/me      -                 https://app.example          pass
            https://app.example/me      -                 https://APP.example          pass
            https://app.example:443/me  -                 https://app.example          pass
            https://app.example/me      -                 https://app.example:443      pass
            https://app.example:8443/   -                 https://app.example:8443     pass
            https://app.example/me      -                 https://evil.example         refuse
            https://app.example/me      -                 http://app.example           refuse
            https://app.example:8443/   -                 https://app.example          refuse
            https://app.example/me      -                 https://app.example.evil     refuse
            https://app.example/me      -                 https://user@app.example     refuse
            https://app.example/me      -                 https://app.example/me       refuse
            https://app.example/me      -                 null                         refuse
            # HTTP/1.1 origin form: Host and no scheme; a port left out is the default
            # of the Origin's scheme.
            /me                         app.example       https://app.example          pass
            /me                         app.example:443   https://app.example          pass
            /me                         app.example:8080  http://app.example:8080      pass
            /me                         app.example       http://app.example:8080      refuse
            /me                         app.example:8080  http://app.example           refuse
            /me                         evil.example      https://app.example          refuse
            # Both: they must agree.
            https://app.example/        app.example       https://app.example          pass
            https://app.example/        evil.example      https://evil.example         refuse
            # Neither: nothing shows the request comes from this site.
            /me                         -                 https://app.example          refuse
        ";
        let source = TokenSource::cookie("sg_access");
        let lines = CASES.lines().map(str::trim);
        for case in lines.filter(|line| !line.is_empty() && !line.starts_with('#')) {
            let [uri, host, origin, verdict] = case.split_whitespace().collect::<Vec<_>>()[..]
            else {
                panic!("bad case {case:?}");
            };
            let uri: Uri = uri.parse().unwrap();
            let mut pairs = vec![
                ("cookie", &b"sg_access=abc"[..]),
                ("origin", origin.as_bytes()),
            ];
            if host != "-" {
                pairs.push(("host", host.as_bytes()));
            }
            let map = headers(&pairs);
            let result = source.extract(RequestHead::new(&uri, &map));
            match verdict {
                "pass" => assert_eq!(result.unwrap(), "abc", "{case}"),
                _ => assert!(matches!(result, Err(AuthError::CrossSite)), "{case}"),
            }
        }
        // From headers alone, no Host: the Origin cannot be checked, so it is refused.
        let map = headers(&[
            ("cookie", b"sg_access=abc"),
            ("origin", b"https://app.example"),
        ]);
        assert!(matches!(source.extract(&map), Err(AuthError::CrossSite)));
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
