//! Who the client is: the socket peer, or what a trusted proxy says, and the network the
//! rate limits and connection caps count it under.
//!
//! Proxies append the address they saw to one header (nginx and load balancers to
//! `X-Forwarded-For`) and pass every other header through untouched, so only that one
//! header is believed, and only its right-most hops, which the proxies wrote. A client
//! can put anything in the others.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use poem::http::{HeaderMap, HeaderName, StatusCode};
use poem::{FromRequest, Request, RequestBody};

/// The one header the trusted proxies write the client's address into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIpHeader {
    /// RFC 7239 `Forwarded`: the `for=` parameter of each element.
    Forwarded,
    /// A comma-separated list of addresses, farthest first: `X-Forwarded-For`, or a
    /// header of one address such as `X-Real-IP`.
    AddressList(HeaderName),
}

impl Default for ClientIpHeader {
    fn default() -> Self {
        Self::AddressList(HeaderName::from_static("x-forwarded-for"))
    }
}

impl ClientIpHeader {
    /// `Forwarded` (any case) or any other header name, read as a list of addresses.
    pub fn parse(name: &str) -> Result<Self, String> {
        if name.eq_ignore_ascii_case("forwarded") {
            return Ok(Self::Forwarded);
        }
        HeaderName::try_from(name)
            .map(Self::AddressList)
            .map_err(|_| format!("`{name}` is not a header name"))
    }

    /// The header's address entries as written, farthest first.
    fn entries<'h>(&self, headers: &'h HeaderMap) -> Vec<&'h str> {
        let name = match self {
            Self::Forwarded => &poem::http::header::FORWARDED,
            Self::AddressList(name) => name,
        };
        let elements = headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim);
        match self {
            Self::Forwarded => elements
                .map(|element| {
                    element
                        .split(';')
                        .find_map(|pair| {
                            let (key, value) = pair.trim().split_once('=')?;
                            key.trim()
                                .eq_ignore_ascii_case("for")
                                .then_some(value.trim())
                        })
                        // An element without `for=` still is a hop: it ends the chain.
                        .unwrap_or_default()
                })
                .collect(),
            Self::AddressList(_) => elements.collect(),
        }
    }
}

/// The proxies in front of the server, and the header they set.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    /// `TRUSTED_PROXIES`: the peers whose header is believed.
    pub networks: Vec<IpNet>,
    /// `CLIENT_IP_HEADER`: the header believed from them.
    pub header: ClientIpHeader,
}

impl TrustedProxies {
    /// Whether `ip` is one of the proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.networks.iter().any(|net| net.contains(&ip))
    }

    /// The client's IP: the socket peer, unless the peer is a trusted proxy; then the
    /// right-most address of the configured header that is not a trusted proxy.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        if !self.contains(peer) {
            return Some(peer);
        }
        // Walk from the nearest hop outwards; the first address we do not trust is the
        // client. An unparseable entry (`unknown`, an obfuscated id) ends the chain: what
        // lies beyond it was not written by a proxy we know.
        let mut client = peer;
        for entry in self.header.entries(headers).iter().rev() {
            let Some(hop) = parse_node(entry) else { break };
            client = hop;
            if !self.contains(hop) {
                break;
            }
        }
        Some(client)
    }
}

/// `203.0.113.7`, `203.0.113.7:443`, `"[2001:db8::1]:443"` or `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    node.rsplit_once(':')?.0.parse().ok()
}

/// The client's IP of a request: a handler parameter (`poem::FromRequest`, which
/// poem-openapi operations take too), so each request works it out once, in one way.
/// `None` only when the connection has no IP peer (a unix socket).
///
/// Needs the app's [`TrustedProxies`] as request data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

impl<'a> FromRequest<'a> for ClientIp {
    async fn from_request(request: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let proxies = request.data::<TrustedProxies>().ok_or_else(|| {
            poem::Error::from_string(
                "the app installs TrustedProxies as data",
                StatusCode::INTERNAL_SERVER_ERROR,
            )
        })?;
        let peer = request.remote_addr().as_socket_addr().map(SocketAddr::ip);
        Ok(Self(proxies.client_ip(peer, request.headers())))
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, as a dual-stack socket reports IPv4
/// peers) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// What per-client limits count under: an IPv4 address, or the /64 network of an IPv6
/// address, since one subscriber is routinely given a whole /64 to pick addresses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientNetwork(IpAddr);

/// The prefix length IPv6 clients are grouped by.
pub const IPV6_CLIENT_PREFIX: u8 = 64;

impl From<IpAddr> for ClientNetwork {
    fn from(ip: IpAddr) -> Self {
        match canonical(ip) {
            IpAddr::V6(v6) => {
                let mask = u128::MAX << (128 - u32::from(IPV6_CLIENT_PREFIX));
                Self(IpAddr::V6(Ipv6Addr::from(v6.to_bits() & mask)))
            }
            v4 @ IpAddr::V4(_) => Self(v4),
        }
    }
}

impl ClientNetwork {
    /// The network as one address: the IPv4 address, or the IPv6 /64 with its host bits
    /// cleared.
    pub fn ip(self) -> IpAddr {
        self.0
    }
}

impl std::fmt::Display for ClientNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => v4.fmt(f),
            IpAddr::V6(v6) => write!(f, "{v6}/{IPV6_CLIENT_PREFIX}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    fn proxies(header: &str) -> TrustedProxies {
        TrustedProxies {
            networks: vec!["10.0.0.0/8".parse().unwrap()],
            header: ClientIpHeader::parse(header).unwrap(),
        }
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let proxy = ip("10.0.0.5");
        let client = ip("203.0.113.7");
        let xff = headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.7")]);
        let trusted = proxies("X-Forwarded-For");

        // An untrusted peer's claims are ignored.
        assert_eq!(trusted.client_ip(Some(client), &xff), Some(client));
        // A trusted proxy's are believed, nearest untrusted hop first.
        assert_eq!(trusted.client_ip(Some(proxy), &xff), Some(client));
        // Without trusted proxies nothing is believed.
        let nobody = TrustedProxies::default();
        assert_eq!(nobody.client_ip(Some(proxy), &xff), Some(proxy));
        assert_eq!(trusted.client_ip(None, &xff), None);
    }

    #[test]
    fn only_the_configured_header_is_believed() {
        let proxy = ip("10.0.0.5");
        // The proxy appended the peer it saw to X-Forwarded-For and passed the client's
        // own `Forwarded` through.
        let both = headers(&[
            ("forwarded", "for=192.0.2.66"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-real-ip", "198.51.100.9"),
        ]);
        assert_eq!(
            proxies("X-Forwarded-For").client_ip(Some(proxy), &both),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(
            proxies("forwarded").client_ip(Some(proxy), &both),
            Some(ip("192.0.2.66"))
        );
        assert_eq!(
            proxies("X-Real-IP").client_ip(Some(proxy), &both),
            Some(ip("198.51.100.9"))
        );
        // The configured header missing: the proxy itself is the client.
        let only_forwarded = headers(&[("forwarded", "for=192.0.2.66")]);
        assert_eq!(
            proxies("X-Forwarded-For").client_ip(Some(proxy), &only_forwarded),
            Some(proxy)
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_wins_over_what_the_client_wrote() {
        let proxy = ip("10.0.0.5");
        // The client sent `X-Forwarded-For: 192.0.2.66`; our two proxies appended.
        let xff = headers(&[
            ("x-forwarded-for", "192.0.2.66, 203.0.113.7"),
            ("x-forwarded-for", "10.1.2.3"),
        ]);
        assert_eq!(
            proxies("X-Forwarded-For").client_ip(Some(proxy), &xff),
            Some(ip("203.0.113.7"))
        );
        // Garbage past the proxies' hops ends the chain at the last trusted hop.
        let garbage = headers(&[("x-forwarded-for", "192.0.2.66, unknown, 10.1.2.3")]);
        assert_eq!(
            proxies("X-Forwarded-For").client_ip(Some(proxy), &garbage),
            Some(ip("10.1.2.3"))
        );
        let forwarded = headers(&[(
            "forwarded",
            "for=198.51.100.1, for=\"[2001:db8::1]:443\";proto=https",
        )]);
        assert_eq!(
            proxies("Forwarded").client_ip(Some(proxy), &forwarded),
            Some(ip("2001:db8::1"))
        );
        let element_without_for = headers(&[("forwarded", "for=198.51.100.1, proto=https")]);
        assert_eq!(
            proxies("Forwarded").client_ip(Some(proxy), &element_without_for),
            Some(proxy)
        );
    }

    #[test]
    fn header_names_are_checked() {
        assert_eq!(
            ClientIpHeader::parse("FORWARDED"),
            Ok(ClientIpHeader::Forwarded)
        );
        assert_eq!(
            ClientIpHeader::parse("X-Forwarded-For"),
            Ok(ClientIpHeader::default())
        );
        assert!(ClientIpHeader::parse("not a header").is_err());
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let a = ClientNetwork::from(ip("2001:db8:1:2:aaaa::1"));
        let b = ClientNetwork::from(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        let other = ClientNetwork::from(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");

        // IPv4 addresses are their own buckets, also when a dual-stack socket maps them.
        let v4 = ClientNetwork::from(ip("192.0.2.1"));
        assert_ne!(v4, ClientNetwork::from(ip("192.0.2.2")));
        assert_eq!(v4, ClientNetwork::from(ip("::ffff:192.0.2.1")));
        assert_ne!(
            ClientNetwork::from(ip("::ffff:192.0.2.1")),
            ClientNetwork::from(ip("::ffff:192.0.2.2"))
        );

        // And so the rate limits count them.
        let limit = crate::rate_limit::KeyedLimit::<ClientNetwork>::per_minute(1);
        assert!(limit.check(&a).is_ok());
        assert!(limit.check(&b).is_err(), "the same /64 shares the bucket");
        assert!(limit.check(&other).is_ok(), "another /64 has its own");
    }
}
