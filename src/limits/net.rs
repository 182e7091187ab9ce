//! Address ranges (`10.0.0.0/8`, `::1`) and the client address behind trusted proxies.

use std::net::IpAddr;

/// An address range: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` falls in the range. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(net)), 32, self.prefix)
                    == masked(u128::from(u32::from(ip)), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128, self.prefix)
                    == masked(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
    let keep = u32::from(prefix.min(width));
    if keep == 0 {
        return 0;
    }
    bits >> (u32::from(width) - keep)
}

impl std::str::FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or address/prefix"))?;
        let addr = addr.to_canonical();
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{text:?} has a prefix outside 0..={width}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

/// Parses a comma-separated list of ranges; an empty string is the empty list.
pub(crate) fn parse_nets(text: &str) -> Result<Vec<IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(str::parse)
        .collect()
}

/// The address a connection is charged to: the TCP peer, unless the peer is a trusted proxy,
/// in which case the right-most `X-Forwarded-For` entry that is not itself a trusted proxy
/// (entries left of it could have been written by the client). A malformed entry stops the
/// walk at the last trusted hop, so a garbled header never lets a client pick its address.
pub(crate) fn client_ip(peer: IpAddr, forwarded_for: &[&[u8]], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(client) {
        return client;
    }
    // Several header lines are one list in order (RFC 9110 5.3); walk from the right.
    for value in forwarded_for.iter().rev() {
        let Ok(value) = std::str::from_utf8(value) else {
            return client;
        };
        for entry in value.rsplit(',') {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                return client;
            };
            client = ip.to_canonical();
            if !is_trusted(client) {
                return client;
            }
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn ranges_match_their_prefix() {
        let cases = [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("::1", "::1", true),
            ("2001:db8::/32", "2001:db8:1::5", true),
            ("2001:db8::/32", "2001:db9::5", false),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("127.0.0.0/8", "::1", false),
        ];
        for (net, addr, expected) in cases {
            let net: IpNet = net.parse().expect("net");
            assert_eq!(net.contains(ip(addr)), expected, "{net:?} {addr}");
        }
    }

    #[test]
    fn bad_ranges_are_refused() {
        for text in ["10.0.0.0/33", "nope", "::1/129", "10.0.0.0/x"] {
            assert!(text.parse::<IpNet>().is_err(), "{text}");
        }
        assert_eq!(parse_nets("").expect("empty"), Vec::new());
        assert_eq!(parse_nets(" 10.0.0.0/8 , ::1 ").expect("two").len(), 2);
    }

    #[test]
    fn forwarded_for_is_believed_from_trusted_proxies_only() {
        let trusted = parse_nets("10.0.0.0/8").expect("nets");
        let cases: [(&str, &[&str], &str); 6] = [
            ("203.0.113.5", &["198.51.100.1"], "203.0.113.5"),
            ("10.0.0.1", &["198.51.100.1"], "198.51.100.1"),
            (
                "10.0.0.1",
                &["1.1.1.1, 198.51.100.1, 10.0.0.2"],
                "198.51.100.1",
            ),
            ("10.0.0.1", &["1.1.1.1", "198.51.100.1"], "198.51.100.1"),
            ("10.0.0.1", &["garbage, 10.0.0.3"], "10.0.0.3"),
            ("10.0.0.1", &[], "10.0.0.1"),
        ];
        for (peer, header, expected) in cases {
            let values: Vec<&[u8]> = header.iter().map(|v| v.as_bytes()).collect();
            assert_eq!(
                client_ip(ip(peer), &values, &trusted),
                ip(expected),
                "{peer} {header:?}"
            );
        }
    }
}
