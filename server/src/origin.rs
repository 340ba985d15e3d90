//! The server's public origin (`PUBLIC_URL`), and the CSRF check of requests that a
//! cookie authenticates: a browser sends cookies by itself, also on requests another site
//! makes it send, so such a request must show that it comes from this origin.

use std::net::IpAddr;

use poem::http::header::ORIGIN;
use poem::http::{HeaderMap, Method, Uri};

/// An origin: scheme, host and port (RFC 6454), kept as its ASCII serialisation
/// (`https://auth.example.com`, `http://127.0.0.1:8080`): the scheme and host lower-cased,
/// the port left out when it is the scheme's default, as browsers write `Origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicOrigin {
    serialized: String,
    loopback_http: bool,
}

impl PublicOrigin {
    /// Reads `http(s)://host[:port]`, with at most a `/` after it; no user, path, query
    /// or fragment.
    pub fn parse(text: &str) -> Result<Self, String> {
        let uri: Uri = text
            .parse()
            .map_err(|_| format!("`{text}` is not a URL like https://auth.example.com"))?;
        let scheme = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http") => "http",
            Some("https") => "https",
            _ => return Err(format!("`{text}` must start with http:// or https://")),
        };
        let Some(authority) = uri.authority() else {
            return Err(format!("`{text}` names no host"));
        };
        if authority.as_str().contains('@') || authority.host().is_empty() {
            return Err(format!("`{text}` must name a host without a user"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() || text.contains('#') {
            return Err(format!(
                "`{text}` is an origin: scheme, host and port, with no path or query"
            ));
        }
        let host = authority.host().to_ascii_lowercase();
        let default_port = if scheme == "https" { 443 } else { 80 };
        let serialized = match authority.port_u16() {
            Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
            _ => format!("{scheme}://{host}"),
        };
        let bare_host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = bare_host == "localhost"
            || bare_host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        Ok(Self {
            serialized,
            loopback_http: scheme == "http" && loopback,
        })
    }

    /// The origin as browsers write it in `Origin`.
    pub fn as_str(&self) -> &str {
        &self.serialized
    }

    /// This origin as the layer's configuration of where cookie requests may come from.
    ///
    /// # Panics
    ///
    /// Never: an origin [`parse`](Self::parse) accepted is one the layer accepts.
    pub fn expected_origins(&self) -> portcullis::ExpectedOrigins {
        portcullis::ExpectedOrigins::parse([self.as_str()])
            .expect("a parsed public origin is an expected origin")
    }

    /// Whether this is `http://` to `localhost` or a loopback address: development on
    /// this machine, the only place cookies may go without `Secure`.
    pub fn is_loopback_http(&self) -> bool {
        self.loopback_http
    }
}

impl std::fmt::Display for PublicOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.serialized)
    }
}

/// Why a cookie-authenticated request was refused as possibly forged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfRefusal {
    /// `Sec-Fetch-Site` says the request did not come from this origin.
    CrossSite,
    /// `Origin` names another origin (or `null`).
    ForeignOrigin,
    /// Neither `Origin` nor `Sec-Fetch-Site`: nothing shows where it came from.
    NoProvenance,
}

impl CsrfRefusal {
    /// A sentence for the error body.
    pub fn message(self) -> &'static str {
        match self {
            Self::CrossSite => "a session cookie cannot authenticate a request from another site",
            Self::ForeignOrigin => {
                "a session cookie cannot authenticate a request whose Origin is not this server's"
            }
            Self::NoProvenance => {
                "a request authenticated by a session cookie must carry Origin or Sec-Fetch-Site"
            }
        }
    }
}

/// Whether `method` may change state, and so needs the CSRF check in cookie transport.
pub fn changes_state(method: &Method) -> bool {
    ![Method::GET, Method::HEAD, Method::OPTIONS].contains(method)
}

/// The CSRF check of a state-changing request that a cookie authenticates: refused when
/// `Sec-Fetch-Site` is anything but `same-origin`, when `Origin` is not `public`, and when
/// it carries neither header. Every browser that sends cookies with `SameSite` sends
/// `Origin` on a `POST` or `DELETE` made by `fetch` or a form.
pub fn check(headers: &HeaderMap, public: &PublicOrigin) -> Result<(), CsrfRefusal> {
    let site = headers.get("sec-fetch-site");
    if let Some(site) = site
        && site.as_bytes() != b"same-origin"
    {
        return Err(CsrfRefusal::CrossSite);
    }
    match headers.get(ORIGIN) {
        Some(origin) => {
            let same = origin
                .to_str()
                .ok()
                .and_then(|text| PublicOrigin::parse(text).ok())
                .is_some_and(|origin| origin.serialized == public.serialized);
            if same {
                Ok(())
            } else {
                Err(CsrfRefusal::ForeignOrigin)
            }
        }
        None if site.is_some() => Ok(()),
        None => Err(CsrfRefusal::NoProvenance),
    }
}

#[cfg(test)]
mod tests {
    use poem::http::HeaderValue;

    use super::*;

    #[test]
    fn public_urls_are_read_as_browsers_write_origins() {
        for (text, origin, loopback) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080", true),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080", true),
            (
                "HTTPS://Auth.Example.com:443",
                "https://auth.example.com",
                false,
            ),
            (
                "https://auth.example.com:8443",
                "https://auth.example.com:8443",
                false,
            ),
            ("http://localhost", "http://localhost", true),
            ("http://[::1]:3000", "http://[::1]:3000", true),
            ("https://localhost", "https://localhost", false),
            ("http://app.example", "http://app.example", false),
        ] {
            let parsed = PublicOrigin::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed.as_str(), origin, "{text}");
            assert_eq!(parsed.is_loopback_http(), loopback, "{text}");
        }
        for bad in [
            "auth.example.com",
            "ftp://auth.example.com",
            "https://",
            "https://user@auth.example.com",
            "https://auth.example.com/app",
            "https://auth.example.com/?a=1",
            "https://auth.example.com/#top",
            "",
        ] {
            assert!(PublicOrigin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_this_origin_passes_the_csrf_check() {
        let public = PublicOrigin::parse("https://auth.example.com").unwrap();
        let check_with = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(*name, HeaderValue::from_static(value));
            }
            check(&headers, &public)
        };
        assert_eq!(
            check_with(&[
                ("origin", "https://auth.example.com"),
                ("sec-fetch-site", "same-origin")
            ]),
            Ok(())
        );
        assert_eq!(
            check_with(&[("origin", "https://auth.example.com:443")]),
            Ok(())
        );
        assert_eq!(check_with(&[("sec-fetch-site", "same-origin")]), Ok(()));
        for (pairs, refusal) in [
            (
                &[("sec-fetch-site", "cross-site")][..],
                CsrfRefusal::CrossSite,
            ),
            (&[("sec-fetch-site", "same-site")], CsrfRefusal::CrossSite),
            (&[("sec-fetch-site", "none")], CsrfRefusal::CrossSite),
            (
                &[
                    ("origin", "https://auth.example.com"),
                    ("sec-fetch-site", "cross-site"),
                ],
                CsrfRefusal::CrossSite,
            ),
            (
                &[("origin", "https://evil.example")],
                CsrfRefusal::ForeignOrigin,
            ),
            (
                &[("origin", "http://auth.example.com")],
                CsrfRefusal::ForeignOrigin,
            ),
            (
                &[("origin", "https://auth.example.com:8443")],
                CsrfRefusal::ForeignOrigin,
            ),
            (&[("origin", "null")], CsrfRefusal::ForeignOrigin),
            (&[], CsrfRefusal::NoProvenance),
        ] {
            assert_eq!(check_with(pairs), Err(refusal), "{pairs:?}");
        }
    }

    #[test]
    fn reads_do_not_change_state() {
        assert!(!changes_state(&Method::GET));
        assert!(!changes_state(&Method::HEAD));
        assert!(changes_state(&Method::POST));
        assert!(changes_state(&Method::DELETE));
    }
}
