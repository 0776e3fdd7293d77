//! The client's address behind a load balancer: `X-Forwarded-For`, read only from trusted
//! proxies.
//!
//! Failed authentications are limited per client address ([`crate::auth_failures`]). Behind a
//! load balancer the TCP peer of every request is the balancer, so twenty bad requests from
//! anyone would get every client behind it refused. The balancer knows each client's address
//! and appends it to `X-Forwarded-For`; but anyone can send that header, so it is believed only
//! from peers the operator names (`serve --trusted-proxy CIDR`).
//!
//! The client is found the way nginx's `real_ip_recursive on` finds it: start at the TCP peer;
//! while the address in hand is a trusted proxy, step one entry left in `X-Forwarded-For` (every
//! such header of the request, in order, as one comma-separated list). The first address that
//! is not a trusted proxy is the client. What a client writes into the header itself lies left
//! of what its first trusted proxy appended (the client's real address), so it is never reached
//! unless that address is itself trusted. An entry that is not an address ends the walk at the
//! last trusted hop; so does the end of the list. Entries may carry a port (`192.0.2.7:5123`,
//! `[2001:db8::7]:5123`), as some balancers write them. IPv4-mapped IPv6 addresses are taken
//! as the IPv4 address they map.
//!
//! With no trusted proxy (the default) the header is ignored: the client is the TCP peer.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::HeaderMap;
use axum::http::header::HeaderName;

/// `X-Forwarded-For`.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// A network: an address and a prefix length (`10.0.0.0/8`, `fd00::/8`; a bare address is a
/// network of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && network_address(ip, self.prefix) == self.addr
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || format!("{s:?} is not an address or a network such as 10.0.0.0/8 or fd00::/8");
        let (addr, prefix) = match s.split_once('/') {
            None => (s, None),
            Some((a, p)) => (a, Some(p)),
        };
        let addr = addr.parse::<IpAddr>().map_err(|_| bad())?.to_canonical();
        let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("{s:?}: the prefix length is 0 to {max}")),
            },
        };
        // `10.0.0.1/8` is most likely a typo for a host or for `10.0.0.0/8`: say which.
        if network_address(addr, prefix) != addr {
            return Err(format!(
                "{s:?} has host bits set: the network is {}/{prefix}",
                network_address(addr, prefix)
            ));
        }
        Ok(Network { addr, prefix })
    }
}

/// `addr` with the bits past `prefix` cleared.
fn network_address(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The proxies whose `X-Forwarded-For` is believed (none by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Network>);

impl TrustedProxies {
    /// Parses each network (`10.0.0.0/8`, `192.0.2.7`, `fd00::/8`); the first that does not
    /// parse is the error.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        items
            .iter()
            .map(|s| s.as_ref().parse())
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    /// No proxy is trusted: the client is always the TCP peer.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The networks, as given.
    pub fn networks(&self) -> &[Network] {
        &self.0
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client's address for a request from TCP peer `peer` with `headers` (module docs).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let forwarded: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for entry in forwarded.iter().rev() {
            match parse_entry(entry) {
                Some(ip) => client = ip,
                None => return client,
            }
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

/// One `X-Forwarded-For` entry: an address, with or without a port.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(items: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(items).unwrap()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(&X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_contain() {
        let n: Network = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains(ip("10.255.0.1")));
        assert!(!n.contains(ip("11.0.0.1")));
        assert!(n.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped");
        assert!(!n.contains(ip("fd00::1")));
        let one: Network = "192.0.2.7".parse().unwrap();
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Network = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12:3456::1")) && !v6.contains(ip("fe80::1")));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")) && !all.contains(ip("::1")));
        let all6: Network = "::/0".parse().unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
        let mapped: Network = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(mapped.to_string(), "127.0.0.1/32");
    }

    #[test]
    fn bad_networks_are_refused_with_what_is_wrong() {
        for (s, says) in [
            ("", "not an address"),
            ("localhost", "not an address"),
            ("10.0.0.0/33", "0 to 32"),
            ("fd00::/129", "0 to 128"),
            ("10.0.0.0/", "0 to 32"),
            ("10.0.0.0/+8", "0 to 32"),
            ("10.0.0.0/8/8", "0 to 32"),
            ("10.0.0.1/8", "the network is 10.0.0.0/8"),
            ("fd00::1/8", "the network is fd00::/8"),
        ] {
            let e = s.parse::<Network>().unwrap_err();
            assert!(e.contains(says), "{s:?}: {e}");
        }
        let e = TrustedProxies::parse(&["10.0.0.0/8", "nope"]).unwrap_err();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let none = TrustedProxies::default();
        let h = headers(&["203.0.113.9"]);
        assert_eq!(none.client(ip("192.0.2.1"), &h), ip("192.0.2.1"));
        // From a peer that is not trusted, neither.
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(p.client(ip("192.0.2.1"), &h), ip("192.0.2.1"));
    }

    #[test]
    fn the_first_untrusted_address_from_the_right_is_the_client() {
        let p = proxies(&["10.0.0.0/8", "fd00::/8"]);
        // One balancer: it appended the client.
        let h = headers(&["203.0.113.9"]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("203.0.113.9"));
        // A client that wrote its own header: what it wrote is left of its real address.
        let h = headers(&["198.51.100.1, 203.0.113.9"]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("203.0.113.9"));
        // Two trusted hops, in one header or several.
        let h = headers(&["198.51.100.1, 203.0.113.9, 10.1.1.1"]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("203.0.113.9"));
        let h = headers(&["198.51.100.1", "203.0.113.9", "fd00::5"]);
        assert_eq!(p.client(ip("::ffff:10.0.0.2"), &h), ip("203.0.113.9"));
        // Ports, as some balancers write them; mapped addresses as IPv4.
        let h = headers(&["[2001:db8::7]:5123"]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("2001:db8::7"));
        let h = headers(&["203.0.113.9:5123"]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("203.0.113.9"));
        let h = headers(&["::ffff:203.0.113.9"]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("203.0.113.9"));
    }

    #[test]
    fn a_walk_that_finds_no_client_stops_at_the_last_trusted_hop() {
        let p = proxies(&["10.0.0.0/8"]);
        // No header: the balancer itself (a health check, say).
        assert_eq!(p.client(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
        // Garbage right of the peer: the peer.
        let h = headers(&["203.0.113.9, unknown"]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.0.0.2"));
        let h = headers(&["203.0.113.9, , 10.0.0.3"]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.0.0.3"));
        // Every entry trusted: the leftmost.
        let h = headers(&["10.9.9.9, 10.0.0.3"]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.9.9.9"));
        // A header that is not text: ignored.
        let mut h = HeaderMap::new();
        h.append(
            &X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"203.0.113.9\xff").unwrap(),
        );
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.0.0.2"));
    }
}
