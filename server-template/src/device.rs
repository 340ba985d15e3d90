//! What a session records about its device: user agent, a readable label, the client IP.

use std::net::IpAddr;

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

/// The client's IP: the socket peer, unless the peer is a trusted proxy, in which case
/// the nearest untrusted hop of `Forwarded` (or else `X-Forwarded-For`).
pub fn client_ip(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops = forwarded_hops(headers);
    // Walk from the nearest hop outwards; the first address we do not trust is the client.
    let mut client = peer;
    for hop in hops.iter().rev() {
        client = *hop;
        if !is_trusted(hop) {
            break;
        }
    }
    Some(client)
}

/// The `for=` addresses of `Forwarded`, or else the addresses of `X-Forwarded-For`,
/// farthest first. Unparseable entries (obfuscated ids, `unknown`) end the chain there.
fn forwarded_hops(headers: &HeaderMap) -> Vec<IpAddr> {
    let forwarded: Vec<&str> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                key.eq_ignore_ascii_case("for").then_some(value.trim())
            })
        })
        .collect();
    let entries: Vec<&str> = if forwarded.is_empty() {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect()
    } else {
        forwarded
    };
    let mut hops = Vec::new();
    for entry in entries.iter().rev() {
        match parse_node(entry) {
            Some(ip) => hops.push(ip),
            None => break,
        }
    }
    hops.reverse();
    hops
}

/// `203.0.113.7`, `203.0.113.7:443`, `"[2001:db8::1]:443"` or `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim_matches('"');
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    node.rsplit_once(':')?.0.parse().ok()
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
    fn user_agents_are_cut_to_a_sane_length() {
        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_str(&"a".repeat(5000)).unwrap(),
        );
        assert_eq!(user_agent(&headers).unwrap().len(), MAX_USER_AGENT_CHARS);
        assert_eq!(user_agent(&HeaderMap::new()), None);
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.1, 203.0.113.7"),
        );

        // An untrusted peer's claims are ignored.
        assert_eq!(client_ip(Some(client), &headers, &trusted), Some(client));
        // A trusted proxy's are believed, nearest untrusted hop first.
        assert_eq!(client_ip(Some(proxy), &headers, &trusted), Some(client));
        // Without trusted proxies nothing is believed.
        assert_eq!(client_ip(Some(proxy), &headers, &[]), Some(proxy));

        let mut forwarded = HeaderMap::new();
        forwarded.insert(
            "forwarded",
            HeaderValue::from_static("for=198.51.100.1, for=\"[2001:db8::1]:443\";proto=https"),
        );
        assert_eq!(
            client_ip(Some(proxy), &forwarded, &trusted),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(client_ip(None, &headers, &trusted), None);
    }
}
