//! `SMTP_URL`: which mail server, how securely, with which credentials.
//!
//! lettre reads the URL (`AsyncSmtpTransport::from_url`), but its defaults are not ours:
//! to lettre, `smtp://` without `?tls=` is plain text. Here `smtp://` means STARTTLS,
//! required; plain text must be asked for with `?tls=none`, and only to a server on this
//! machine, where nothing travels over a network.

use std::fmt;

use lettre::{AsyncSmtpTransport, Tokio1Executor};
use url::{Host, Url};

use super::SMTP_TIMEOUT;

/// How the connection to the mail server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtps://`: TLS from the first byte.
    ImplicitTls,
    /// `smtp://`: STARTTLS, and a server that does not offer it is not used.
    StartTls,
    /// `smtp://…?tls=none` to a loopback server: no TLS.
    Plain,
}

/// A checked `SMTP_URL`. Neither its `Debug` nor its `Display` shows the credentials.
#[derive(Clone)]
pub struct SmtpUrl {
    /// lettre's transport, built from the URL in the form lettre reads.
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// `scheme://host:port`, for log lines.
    target: String,
    security: SmtpSecurity,
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpUrl")
            .field("target", &self.target)
            .field("security", &self.security)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.target)
    }
}

impl SmtpUrl {
    /// Checks `text`; the error never repeats it, since it may hold a password.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut url = Url::parse(text).map_err(|e| {
            format!("is not a URL ({e}); write `smtps://user:pass@host:465` or `smtp://host:587`")
        })?;
        let host = url.host().ok_or("names no host")?.to_owned();
        let mut tls = None;
        for (key, value) in url.query_pairs() {
            if key != "tls" {
                return Err(format!("`{key}` is not understood; only `tls=` is"));
            }
            tls = Some(value.into_owned());
        }
        let security = match (url.scheme(), tls.as_deref()) {
            ("smtps", None) => SmtpSecurity::ImplicitTls,
            ("smtps", Some(_)) => {
                return Err("`smtps://` is TLS from the start; `tls=` does not apply".into());
            }
            ("smtp", None | Some("required")) => SmtpSecurity::StartTls,
            ("smtp", Some("none")) if is_loopback(&host) => SmtpSecurity::Plain,
            ("smtp", Some("none")) => {
                return Err(
                    "`tls=none` (plain text) is only for a mail server on this machine \
                     (`localhost` or a loopback address)"
                        .into(),
                );
            }
            ("smtp", Some(other)) => {
                return Err(format!("`tls={other}` is not `required` or `none`"));
            }
            (scheme, _) => return Err(format!("`{scheme}://` is not `smtp://` or `smtps://`")),
        };
        // lettre's words: `tls=required` is STARTTLS required; no `tls` is plain text.
        match security {
            SmtpSecurity::StartTls => url.set_query(Some("tls=required")),
            SmtpSecurity::ImplicitTls | SmtpSecurity::Plain => url.set_query(None),
        }
        let port = url.port().unwrap_or(match security {
            SmtpSecurity::ImplicitTls => lettre::transport::smtp::SUBMISSIONS_PORT,
            SmtpSecurity::StartTls | SmtpSecurity::Plain => {
                lettre::transport::smtp::SUBMISSION_PORT
            }
        });
        let target = format!("{}://{host}:{port}", url.scheme());
        let lettre_url = String::from(url);
        debug_assert!(lettre_url_says(&lettre_url, security));
        // Each conversation is bounded by [`SMTP_TIMEOUT`].
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&lettre_url)
            .map_err(|e| format!("is not a usable SMTP URL: {e}"))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(Self {
            transport,
            target,
            security,
        })
    }

    /// How the connection is protected.
    pub fn security(&self) -> SmtpSecurity {
        self.security
    }

    /// The transport lettre builds from the URL, each conversation bounded by
    /// [`SMTP_TIMEOUT`].
    pub fn transport(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        self.transport.clone()
    }
}

/// Whether `url`, as handed to lettre, asks it for `security` (lettre reads `smtps://` as
/// implicit TLS, `?tls=required` as STARTTLS required, and no `tls` as plain text).
fn lettre_url_says(url: &str, security: SmtpSecurity) -> bool {
    match security {
        SmtpSecurity::ImplicitTls => url.starts_with("smtps://") && !url.contains('?'),
        SmtpSecurity::StartTls => url.starts_with("smtp://") && url.ends_with("?tls=required"),
        SmtpSecurity::Plain => url.starts_with("smtp://") && !url.contains('?'),
    }
}

fn is_loopback(host: &Host<String>) -> bool {
    match host {
        // `smtp://` is no scheme the URL standard knows, so its host stays text, an IPv4
        // address included.
        Host::Domain(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_means_starttls_required_and_smtps_implicit_tls() {
        let url = SmtpUrl::parse("smtp://mail.example.com:587").unwrap();
        assert_eq!(url.security(), SmtpSecurity::StartTls);
        assert_eq!(url.to_string(), "smtp://mail.example.com:587");
        let url = SmtpUrl::parse("smtps://u:p@mail.example.com").unwrap();
        assert_eq!(url.security(), SmtpSecurity::ImplicitTls);
        assert_eq!(url.to_string(), "smtps://mail.example.com:465");
    }

    #[test]
    fn plain_text_only_to_this_machine() {
        for ok in [
            "smtp://127.0.0.1:2525?tls=none",
            "smtp://localhost:25?tls=none",
            "smtp://[::1]:25?tls=none",
        ] {
            let url = SmtpUrl::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(url.security(), SmtpSecurity::Plain);
            assert!(url.to_string().starts_with("smtp://"), "{url}");
        }
        assert!(SmtpUrl::parse("smtp://mail.example.com?tls=none").is_err());
        assert!(SmtpUrl::parse("smtp://mail.example.com?tls=opportunistic").is_err());
        assert!(SmtpUrl::parse("smtps://mail.example.com?tls=none").is_err());
        assert!(SmtpUrl::parse("http://mail.example.com").is_err());
        assert!(SmtpUrl::parse("smtp://mail.example.com?x=1").is_err());
    }

    #[test]
    fn credentials_never_show() {
        let url = SmtpUrl::parse("smtps://user:hunter2@mail.example.com").unwrap();
        assert!(!format!("{url:?} {url}").contains("hunter2"));
        let err = SmtpUrl::parse("smtps://user:hunter2@").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
