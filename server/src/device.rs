//! What a session records about its device: user agent and a readable label. The client
//! IP it also records comes from [`crate::client_ip`].

use poem::http::HeaderMap;
use poem::http::header::USER_AGENT;

/// Longest user agent stored, in characters.
pub const MAX_USER_AGENT_CHARS: usize = 512;
/// Longest client-given device name, in characters.
pub const MAX_DEVICE_NAME_CHARS: usize = 128;

/// The request's user agent, cut to [`MAX_USER_AGENT_CHARS`].
pub fn user_agent(headers: &HeaderMap) -> Option<String> {
    let text = headers.get(USER_AGENT)?.to_str().ok()?.trim();
    (!text.is_empty()).then(|| text.chars().take(MAX_USER_AGENT_CHARS).collect())
}

/// "Firefox 131 on Linux", from the user agent by woothee's parser.
pub fn label(user_agent: &str) -> Option<String> {
    let parsed = woothee::parser::Parser::new().parse(user_agent)?;
    if parsed.name == woothee::woothee::VALUE_UNKNOWN {
        return None;
    }
    let major = parsed.version.split('.').next().unwrap_or_default();
    let mut label = parsed.name.to_owned();
    if !major.is_empty() && major != woothee::woothee::VALUE_UNKNOWN {
        label.push(' ');
        label.push_str(major);
    }
    if parsed.os != woothee::woothee::VALUE_UNKNOWN {
        label.push_str(" on ");
        label.push_str(parsed.os);
    }
    Some(label.chars().take(128).collect())
}

/// Whether two user agents are the same browser family on the same OS, by woothee's
/// parser (versions aside: a browser that updates itself is the same device). Two that
/// the parser cannot place are the same only when they are equal.
pub fn same_family(a: Option<&str>, b: Option<&str>) -> bool {
    let parser = woothee::parser::Parser::new();
    let family = |agent: Option<&str>| {
        agent
            .and_then(|agent| parser.parse(agent))
            .filter(|parsed| parsed.name != woothee::woothee::VALUE_UNKNOWN)
            .map(|parsed| (parsed.name.to_owned(), parsed.os.to_owned()))
    };
    match (family(a), family(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::HeaderValue;

    #[test]
    fn labels_come_from_the_parser() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0";
        assert_eq!(label(firefox).as_deref(), Some("Firefox 131 on Linux"));
        let chrome = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 \
                      (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        let chrome_label = label(chrome).unwrap();
        assert!(
            chrome_label.starts_with("Chrome 120 on Mac"),
            "{chrome_label}"
        );
        assert_eq!(label("\u{1}garbage"), None);
    }

    #[test]
    fn families_ignore_versions_but_not_browser_or_os() {
        let firefox_131 = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0";
        let firefox_132 = "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0";
        let firefox_win =
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:131.0) Gecko/20100101 Firefox/131.0";
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                      Chrome/120.0.0.0 Safari/537.36";
        assert!(same_family(Some(firefox_131), Some(firefox_132)));
        assert!(!same_family(Some(firefox_131), Some(firefox_win)));
        assert!(!same_family(Some(firefox_131), Some(chrome)));
        assert!(same_family(Some("curl/8"), Some("curl/8")));
        assert!(!same_family(Some("curl/8"), None));
        assert!(same_family(None, None));
    }

    #[test]
    fn user_agents_are_cut_to_a_sane_length() {
        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_str(&"a".repeat(5000)).unwrap(),
        );
        assert_eq!(user_agent(&headers).unwrap().len(), MAX_USER_AGENT_CHARS);
        assert_eq!(user_agent(&HeaderMap::new()), None);
    }
}
