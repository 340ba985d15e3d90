//! The cookie transport: the three session cookies a login with `"transport": "cookie"`
//! sets, how they are written and cleared, and how a request's cookies are read.
//!
//! All are `HttpOnly` (no script reads them, so an XSS cannot carry them off),
//! `SameSite=Strict` and, unless development on loopback turns it off, `Secure`. The
//! access cookie goes to every route (`Path=/`, a `__Host-` name); the refresh cookie only
//! to `/auth/*` ([`REFRESH_COOKIE_PATH`]), so its name can only be `__Secure-`, which a
//! sibling subdomain can plant or shadow (`Domain=` the parent). The binding cookie
//! (`__Host-`, `Path=/`) names the session the browser signed in to, and a refresh by
//! cookie uses only the refresh cookie of that session: one planted by another host is
//! never used, and without the binding cookie (a signed-out browser) none is.

use std::time::Duration;

use cookie::{Cookie, SameSite};
use poem::http::HeaderMap;
use poem::http::header::COOKIE;

/// Where the access cookie is sent: everywhere, as a `__Host-` cookie must be.
pub const ACCESS_COOKIE_PATH: &str = "/";

/// Where the refresh cookie is sent. Cookie paths match by prefix up to a `/`, so one
/// cookie cannot name `/auth/refresh`, `/auth/logout` and `/auth/logout-all` alone
/// (`Path=/auth/logout` does not reach `/auth/logout-all`); `/auth` is the narrowest path
/// that reaches all three. Of the routes under it only `/auth/refresh` reads the cookie.
pub const REFRESH_COOKIE_PATH: &str = "/auth";

/// The prefix browsers accept only on a `Secure` cookie with `Path=/` and no `Domain`.
pub const HOST_PREFIX: &str = "__Host-";
/// The prefix browsers accept only on a `Secure` cookie.
pub const SECURE_PREFIX: &str = "__Secure-";

/// One of the session cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieRole {
    /// The access token's cookie.
    Access,
    /// The refresh token's cookie.
    Refresh,
    /// The cookie binding the browser to its session: its client binding.
    Binding,
}

impl CookieRole {
    /// The name prefix a `Secure` cookie of this role carries: `__Host-` binds the
    /// access and binding cookies to this host and `Path=/`; the refresh cookie has a
    /// narrower path, so `__Secure-`.
    pub fn secure_prefix(self) -> &'static str {
        match self {
            Self::Access | Self::Binding => HOST_PREFIX,
            Self::Refresh => SECURE_PREFIX,
        }
    }

    /// Whether `name` may name this cookie: a cookie-name token (RFC 6265), with this
    /// role's prefix when `secure` and with neither prefix when not (browsers drop
    /// prefixed cookies that are not `Secure`).
    fn check(self, name: &str, secure: bool) -> Result<(), String> {
        if !is_token(name) {
            return Err(format!("`{name}` is not a cookie name"));
        }
        let prefixed = name.starts_with(HOST_PREFIX) || name.starts_with(SECURE_PREFIX);
        let prefix = self.secure_prefix();
        if secure && !name.starts_with(prefix) {
            return Err(format!("`{name}` must start with `{prefix}`"));
        }
        if !secure && prefixed {
            return Err(format!(
                "`{name}`: browsers drop `{HOST_PREFIX}` and `{SECURE_PREFIX}` cookies that are \
                 not Secure; name it without the prefix when COOKIE_SECURE is off"
            ));
        }
        Ok(())
    }
}

/// The session cookies' names and whether they are `Secure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCookies {
    access_name: String,
    refresh_name: String,
    binding_name: String,
    secure: bool,
}

/// The names of the session cookies, as configured.
#[derive(Debug, Clone, Copy)]
pub struct CookieNames<'a> {
    /// `ACCESS_COOKIE_NAME`.
    pub access: &'a str,
    /// `REFRESH_COOKIE_NAME`.
    pub refresh: &'a str,
    /// `BINDING_COOKIE_NAME`.
    pub binding: &'a str,
}

impl SessionCookies {
    /// Checks the names ([`CookieRole`]'s rules, and different from each other); an
    /// error names the cookie at fault.
    pub fn new(names: CookieNames<'_>, secure: bool) -> Result<Self, (CookieRole, String)> {
        for (role, name) in [
            (CookieRole::Access, names.access),
            (CookieRole::Refresh, names.refresh),
            (CookieRole::Binding, names.binding),
        ] {
            role.check(name, secure).map_err(|e| (role, e))?;
        }
        if names.access == names.refresh {
            return Err((
                CookieRole::Refresh,
                "the access and refresh cookies need different names".to_owned(),
            ));
        }
        if names.binding == names.access || names.binding == names.refresh {
            return Err((
                CookieRole::Binding,
                "the binding cookie needs a name of its own".to_owned(),
            ));
        }
        Ok(Self {
            access_name: names.access.to_owned(),
            refresh_name: names.refresh.to_owned(),
            binding_name: names.binding.to_owned(),
            secure,
        })
    }

    /// The access cookie's name.
    pub fn access_name(&self) -> &str {
        &self.access_name
    }

    /// The refresh cookie's name.
    pub fn refresh_name(&self) -> &str {
        &self.refresh_name
    }

    /// The binding cookie's name.
    pub fn binding_name(&self) -> &str {
        &self.binding_name
    }

    /// Whether the cookies are `Secure`.
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// The access cookie holding `token`, for `max_age` (the token's lifetime).
    pub fn access(&self, token: String, max_age: Duration) -> Cookie<'static> {
        self.cookie(self.access_name.clone(), token, ACCESS_COOKIE_PATH, max_age)
    }

    /// The refresh cookie holding `token`, for `max_age` (until the session's nearer
    /// deadline).
    pub fn refresh(&self, token: String, max_age: Duration) -> Cookie<'static> {
        self.cookie(
            self.refresh_name.clone(),
            token,
            REFRESH_COOKIE_PATH,
            max_age,
        )
    }

    /// The binding cookie holding the session's client binding, for `max_age` (as the
    /// refresh cookie's).
    pub fn binding(&self, binding: String, max_age: Duration) -> Cookie<'static> {
        self.cookie(
            self.binding_name.clone(),
            binding,
            ACCESS_COOKIE_PATH,
            max_age,
        )
    }

    /// Every session cookie emptied with `Max-Age=0`, so the browser deletes them.
    pub fn cleared(&self) -> Vec<Cookie<'static>> {
        [
            (&self.access_name, ACCESS_COOKIE_PATH),
            (&self.refresh_name, REFRESH_COOKIE_PATH),
            (&self.binding_name, ACCESS_COOKIE_PATH),
        ]
        .into_iter()
        .map(|(name, path)| {
            let mut cookie = self.cookie(name.clone(), String::new(), path, Duration::ZERO);
            cookie.make_removal();
            cookie
        })
        .collect()
    }

    fn cookie(
        &self,
        name: String,
        value: String,
        path: &'static str,
        max_age: Duration,
    ) -> Cookie<'static> {
        let max_age =
            cookie::time::Duration::seconds(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX));
        Cookie::build((name, value))
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Strict)
            .path(path)
            .max_age(max_age)
            .build()
    }

    /// Every refresh cookie's value the request carries: its own, and any that another
    /// host under the same parent domain planted (`Domain=`), which the binding cookie
    /// tells apart.
    pub fn refresh_tokens<'h>(&self, headers: &'h HeaderMap) -> Vec<&'h str> {
        request_cookies(headers)
            .filter(|pair| pair.name() == self.refresh_name)
            .filter_map(|pair| pair.value_raw())
            .collect()
    }

    /// The binding cookie's value, when the request carries exactly one (a `__Host-`
    /// cookie: only this host can have set it).
    pub fn binding_value<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let mut found = None;
        for pair in request_cookies(headers) {
            if pair.name() == self.binding_name {
                if found.is_some() {
                    return None;
                }
                found = pair.value_raw();
            }
        }
        found
    }

    /// Whether the request carries the access cookie.
    pub fn has_access_cookie(&self, headers: &HeaderMap) -> bool {
        request_cookies(headers).any(|pair| pair.name() == self.access_name)
    }
}

/// Every `name=value` pair of the request's `Cookie` headers that parses.
fn request_cookies(headers: &HeaderMap) -> impl Iterator<Item = Cookie<'_>> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|header| Cookie::split_parse(header).flatten())
}

/// RFC 6265 §4.1.1 `cookie-name`: an RFC 2616 token.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'(' | b')'
                        | b'<'
                        | b'>'
                        | b'@'
                        | b','
                        | b';'
                        | b':'
                        | b'\\'
                        | b'"'
                        | b'/'
                        | b'['
                        | b']'
                        | b'?'
                        | b'='
                        | b'{'
                        | b'}'
                )
        })
}

#[cfg(test)]
mod tests {
    use poem::http::HeaderValue;

    use super::*;

    fn names<'a>(access: &'a str, refresh: &'a str, binding: &'a str) -> CookieNames<'a> {
        CookieNames {
            access,
            refresh,
            binding,
        }
    }

    fn defaults() -> SessionCookies {
        SessionCookies::new(
            names(
                "__Host-sg_access",
                "__Secure-sg_refresh",
                "__Host-sg_binding",
            ),
            true,
        )
        .unwrap()
    }

    #[test]
    fn the_cookies_carry_every_attribute() {
        let cookies = defaults();
        let access = cookies
            .access("a.b.c".to_owned(), Duration::from_secs(900))
            .to_string();
        assert_eq!(
            access,
            "__Host-sg_access=a.b.c; HttpOnly; SameSite=Strict; Secure; Path=/; Max-Age=900"
        );
        let refresh = cookies
            .refresh("r".to_owned(), Duration::from_secs(60))
            .to_string();
        assert_eq!(
            refresh,
            "__Secure-sg_refresh=r; HttpOnly; SameSite=Strict; Secure; Path=/auth; Max-Age=60"
        );
        let binding = cookies
            .binding("b".to_owned(), Duration::from_secs(60))
            .to_string();
        assert_eq!(
            binding,
            "__Host-sg_binding=b; HttpOnly; SameSite=Strict; Secure; Path=/; Max-Age=60"
        );
        assert_eq!(cookies.cleared().len(), 3);
        for cleared in cookies.cleared() {
            let text = cleared.to_string();
            assert!(text.contains("Max-Age=0"), "{text}");
            assert_eq!(cleared.value(), "", "{text}");
        }
    }

    #[test]
    fn names_must_fit_the_secure_setting() {
        let new = |access, refresh, binding, secure| {
            SessionCookies::new(names(access, refresh, binding), secure)
        };
        let b = "__Host-b";
        assert!(new("sg_access", "__Secure-sg_refresh", b, true).is_err());
        assert!(new("__Host-sg_access", "sg_refresh", b, true).is_err());
        assert!(new("__Host-sg_access", "__Host-sg_refresh", b, true).is_err());
        assert!(new("__Host-sg_access", "__Secure-sg_refresh", b, false).is_err());
        assert!(new("__Host-a", "__Host-a", b, true).is_err());
        assert!(new("__Host-a b", "__Secure-b", b, true).is_err());
        assert!(new("__Host-a=", "__Secure-b", b, true).is_err());
        assert!(new("__Host-a", "__Secure-r", "__Secure-b", true).is_err());
        assert!(new("__Host-a", "__Secure-r", "__Host-a", true).is_err());
        let plain = new("sg_access", "sg_refresh", "sg_binding", false).unwrap();
        assert!(
            !plain
                .access("t".to_owned(), Duration::from_secs(1))
                .to_string()
                .contains("Secure")
        );
    }

    #[test]
    fn every_refresh_cookie_is_read_and_the_binding_only_when_there_is_one() {
        let cookies = defaults();
        let headers = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(COOKIE, HeaderValue::from_static(value));
            }
            headers
        };
        let refresh = |values: &[&'static str]| {
            cookies
                .refresh_tokens(&headers(values))
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(refresh(&["theme=dark; __Secure-sg_refresh=abc"]), ["abc"]);
        assert_eq!(refresh(&["theme=dark", "__Secure-sg_refresh=abc"]), ["abc"]);
        assert_eq!(
            refresh(&["__Secure-sg_refresh=a; __Secure-sg_refresh=b"]),
            ["a", "b"]
        );
        assert!(refresh(&["sg_refresh=abc"]).is_empty());
        let binding =
            |values: &[&'static str]| cookies.binding_value(&headers(values)).map(str::to_owned);
        assert_eq!(binding(&["__Host-sg_binding=x"]).as_deref(), Some("x"));
        assert_eq!(binding(&["__Host-sg_binding=x; __Host-sg_binding=y"]), None);
        assert_eq!(binding(&[]), None);
    }
}
