//! Who the client is: the TCP peer, or behind trusted reverse proxies the rightmost untrusted
//! hop they forwarded; and the key per-address limits count under (IPv6 per /64).

use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::config::ProxyHeader;

/// The key per-address limits count under: an IPv4 address as it is (an IPv4-mapped IPv6
/// address as its IPv4 address), an IPv6 address by its /64, since one host or subscriber
/// usually holds a whole /64 and could otherwise change address per attempt.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// Whether `ip` is one of the trusted proxies.
pub fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    proxies.iter().any(|net| net.contains(&ip))
}

/// The client's address: `peer` itself unless it is a trusted proxy; then the rightmost hop in
/// `header` that is not a trusted proxy. Hops left of it were written by the client and cannot
/// be believed. A hop that is not an address (`unknown`, an obfuscated name) ends the walk at
/// the last trusted hop; with every hop trusted, the leftmost one.
pub fn client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    proxies: &[IpNet],
    header: ProxyHeader,
) -> IpAddr {
    if !trusted(peer, proxies) {
        return peer;
    }
    let hops = forwarded_hops(headers, header);
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if trusted(*ip, proxies) => client = *ip,
            Some(ip) => return *ip,
            None => return client,
        }
    }
    client
}

/// Every hop of the forwarding header, in order (all its lines joined), `None` for a hop that
/// is not an address.
fn forwarded_hops(headers: &HeaderMap, header: ProxyHeader) -> Vec<Option<IpAddr>> {
    let name = match header {
        ProxyHeader::XForwardedFor => "x-forwarded-for",
        ProxyHeader::Forwarded => "forwarded",
    };
    let mut hops = Vec::new();
    for value in headers.get_all(name) {
        let Ok(value) = value.to_str() else {
            hops.push(None);
            continue;
        };
        for element in value.split(',') {
            let hop = match header {
                ProxyHeader::XForwardedFor => parse_node(element.trim()),
                ProxyHeader::Forwarded => element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| parse_node(v.trim().trim_matches('"'))),
            };
            hops.push(hop);
        }
    }
    hops
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:4711`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    // IPv4 with a port.
    let (host, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(name, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn ipv6_is_keyed_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(ip_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            ip_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            ip_key(ip("2001:db8:1:2::7"))
        );
        assert_ne!(ip_key(ip("2001:db8:1:3::1")), ip_key(ip("2001:db8:1:2::1")));
        assert_eq!(ip_key(ip("::ffff:192.0.2.9")), ip("192.0.2.9"));
        assert_eq!(ip_key(ip("192.0.2.9")), ip("192.0.2.9"));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let proxies = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers("x-forwarded-for", &["198.51.100.1"]);
        let got = client_ip(ip("203.0.113.5"), &h, &proxies, ProxyHeader::XForwardedFor);
        assert_eq!(got, ip("203.0.113.5"));
        // No proxies configured: the same.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &[], ProxyHeader::XForwardedFor),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn x_forwarded_for_gives_the_rightmost_untrusted_hop() {
        let proxies = vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ];
        // The client forged the first entry; the proxies appended the rest.
        let h = headers(
            "x-forwarded-for",
            &["1.2.3.4, 198.51.100.7", "10.1.1.1 , 10.2.2.2"],
        );
        let got = client_ip(ip("127.0.0.1"), &h, &proxies, ProxyHeader::XForwardedFor);
        assert_eq!(got, ip("198.51.100.7"));
        // Ports and brackets are understood.
        let h = headers("x-forwarded-for", &["[2001:db8::5]:443, 198.51.100.8:5000"]);
        let got = client_ip(ip("10.0.0.1"), &h, &proxies, ProxyHeader::XForwardedFor);
        assert_eq!(got, ip("198.51.100.8"));
        // Every hop trusted: the leftmost.
        let h = headers("x-forwarded-for", &["10.9.9.9, 10.0.0.2"]);
        let got = client_ip(ip("10.0.0.1"), &h, &proxies, ProxyHeader::XForwardedFor);
        assert_eq!(got, ip("10.9.9.9"));
        // Garbage ends the walk at the last trusted hop, never left of it.
        let h = headers("x-forwarded-for", &["198.51.100.9, garbage, 10.0.0.3"]);
        let got = client_ip(ip("10.0.0.1"), &h, &proxies, ProxyHeader::XForwardedFor);
        assert_eq!(got, ip("10.0.0.3"));
        // No header: the proxy itself.
        let got = client_ip(
            ip("10.0.0.1"),
            &HeaderMap::new(),
            &proxies,
            ProxyHeader::XForwardedFor,
        );
        assert_eq!(got, ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_gives_the_rightmost_untrusted_for() {
        let proxies = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(
            "forwarded",
            &[
                "for=1.2.3.4;proto=https, For=\"[2001:db8:cafe::17]:4711\"",
                "for=10.0.0.9;by=10.0.0.1",
            ],
        );
        let got = client_ip(ip("10.0.0.1"), &h, &proxies, ProxyHeader::Forwarded);
        assert_eq!(got, ip("2001:db8:cafe::17"));
        let h = headers("forwarded", &["for=\"192.0.2.43:47011\""]);
        let got = client_ip(ip("10.0.0.1"), &h, &proxies, ProxyHeader::Forwarded);
        assert_eq!(got, ip("192.0.2.43"));
        // With x-forwarded-for chosen, a Forwarded header is ignored (and vice versa).
        let got = client_ip(ip("10.0.0.1"), &h, &proxies, ProxyHeader::XForwardedFor);
        assert_eq!(got, ip("10.0.0.1"));
        let h = headers("forwarded", &["for=unknown, for=10.0.0.4"]);
        let got = client_ip(ip("10.0.0.1"), &h, &proxies, ProxyHeader::Forwarded);
        assert_eq!(got, ip("10.0.0.4"));
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_proxies() {
        let proxies = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(trusted(ip("::ffff:127.0.0.1"), &proxies));
        assert!(!trusted(ip("::1"), &proxies));
    }
}
