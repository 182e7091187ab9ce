//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2) that L4 load
//! balancers put before the client's bytes to say whose connection it is. Only the source
//! address is used: it replaces the TCP peer for the per-IP limits.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The version 2 signature (spec section 2.2).
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Longest version 1 line, CRLF included (spec section 2.1: 107 bytes).
const V1_MAX: usize = 107;

/// Why a header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeaderError {
    /// More bytes are needed.
    Incomplete,
    /// Not a PROXY header, or a malformed one: the connection is closed.
    Invalid,
}

/// A header read from the start of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client's address; `None` for `UNKNOWN` (v1) or a `LOCAL` command or an address
    /// family other than TCP over IPv4/IPv6 (v2): the TCP peer stands.
    pub source: Option<IpAddr>,
    /// Bytes the header took; the HTTP request starts after them.
    pub len: usize,
}

/// Reads a version 1 or 2 header at the start of `bytes`.
pub fn parse_proxy_header(bytes: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    if bytes.len() < V2_SIGNATURE.len() {
        // A start of either signature, or a v1 line begun but shorter than the v2 signature.
        let prefix = |sig: &[u8]| sig.starts_with(bytes);
        return if prefix(&V2_SIGNATURE) || prefix(b"PROXY ") || bytes.starts_with(b"PROXY ") {
            Err(ProxyHeaderError::Incomplete)
        } else {
            Err(ProxyHeaderError::Invalid)
        };
    }
    if bytes.starts_with(&V2_SIGNATURE) {
        parse_v2(bytes)
    } else if bytes.starts_with(b"PROXY ") {
        parse_v1(bytes)
    } else {
        Err(ProxyHeaderError::Invalid)
    }
}

fn parse_v1(bytes: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    let window = &bytes[..bytes.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return Err(if bytes.len() >= V1_MAX {
            ProxyHeaderError::Invalid
        } else {
            ProxyHeaderError::Incomplete
        });
    };
    let line = std::str::from_utf8(&bytes[..end]).map_err(|_| ProxyHeaderError::Invalid)?;
    let mut fields = line.split(' ').skip(1);
    let source = match fields.next() {
        Some("UNKNOWN") => None,
        Some(family @ ("TCP4" | "TCP6")) => {
            let source: IpAddr = fields
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or(ProxyHeaderError::Invalid)?;
            let destination: IpAddr = fields
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or(ProxyHeaderError::Invalid)?;
            let ports_ok = fields
                .by_ref()
                .take(2)
                .filter(|p| p.parse::<u16>().is_ok())
                .count()
                == 2;
            let family_ok = (family == "TCP4") == (source.is_ipv4() && destination.is_ipv4());
            if !ports_ok || !family_ok || fields.next().is_some() {
                return Err(ProxyHeaderError::Invalid);
            }
            Some(source)
        }
        _ => return Err(ProxyHeaderError::Invalid),
    };
    Ok(ProxyHeader {
        source,
        len: end + 2,
    })
}

fn parse_v2(bytes: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    let fixed = bytes.get(..16).ok_or(ProxyHeaderError::Incomplete)?;
    let (version_command, family) = (fixed[12], fixed[13]);
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if version_command >> 4 != 2 {
        return Err(ProxyHeaderError::Invalid);
    }
    let body = bytes
        .get(16..16 + len)
        .ok_or(ProxyHeaderError::Incomplete)?;
    let source = match (version_command & 0x0f, family) {
        // LOCAL: the proxy's own connection (health checks); the peer stands.
        (0, _) => None,
        // PROXY over TCP/IPv4 (0x11) or TCP/IPv6 (0x21): the source address leads the block.
        (1, 0x11) => {
            let octets: [u8; 4] = body
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or(ProxyHeaderError::Invalid)?;
            Some(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        (1, 0x21) => {
            let octets: [u8; 16] = body
                .get(..16)
                .and_then(|b| b.try_into().ok())
                .ok_or(ProxyHeaderError::Invalid)?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        (1, _) => None,
        _ => return Err(ProxyHeaderError::Invalid),
    };
    Ok(ProxyHeader {
        source,
        len: 16 + len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// What a test case expects: the source address as text, or the error.
    type Expected = Result<Option<&'static str>, ProxyHeaderError>;

    #[test]
    fn version_1_lines() {
        let cases: [(&[u8], Expected); 9] = [
            (
                b"PROXY TCP4 192.0.2.1 192.0.2.2 5555 80\r\nGET",
                Ok(Some("192.0.2.1")),
            ),
            (
                b"PROXY TCP6 2001:db8::1 2001:db8::2 5555 443\r\n",
                Ok(Some("2001:db8::1")),
            ),
            (b"PROXY UNKNOWN\r\n", Ok(None)),
            (
                b"PROXY TCP4 192.0.2.1 192.0.2.2 5555",
                Err(ProxyHeaderError::Incomplete),
            ),
            (
                b"PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n",
                Err(ProxyHeaderError::Invalid),
            ),
            (
                b"PROXY TCP4 192.0.2.1 192.0.2.2 99999 80\r\n",
                Err(ProxyHeaderError::Invalid),
            ),
            (
                b"PROXY TCP4 nope 192.0.2.2 1 80\r\n",
                Err(ProxyHeaderError::Invalid),
            ),
            (
                b"PROXY UDP4 192.0.2.1 192.0.2.2 1 80\r\n",
                Err(ProxyHeaderError::Invalid),
            ),
            (b"GET / HTTP/1.1\r\n\r\n", Err(ProxyHeaderError::Invalid)),
        ];
        for (bytes, expected) in cases {
            let got = parse_proxy_header(bytes).map(|h| h.source);
            let expected = expected.map(|ip| ip.map(|ip| ip.parse::<IpAddr>().expect("ip")));
            assert_eq!(got, expected, "{}", String::from_utf8_lossy(bytes));
        }
        let header = parse_proxy_header(b"PROXY UNKNOWN\r\nGET").expect("header");
        assert_eq!(header.len, 15);
        let endless = [b"PROXY ".as_slice(), &[b'x'; 200]].concat();
        assert_eq!(parse_proxy_header(&endless), Err(ProxyHeaderError::Invalid));
    }

    /// A version 1 line read in pieces: every prefix of a valid header shorter than the v2
    /// signature is incomplete, not invalid (found by the `proxy_header` fuzz target: a first
    /// read of 7 to 11 bytes, `PROXY U`, closed the connection).
    #[test]
    fn version_1_prefixes_are_incomplete() {
        let line = b"PROXY UNKNOWN\r\n";
        for end in 0..line.len() {
            assert_eq!(
                parse_proxy_header(&line[..end]),
                Err(ProxyHeaderError::Incomplete),
                "{:?}",
                String::from_utf8_lossy(&line[..end])
            );
        }
        assert_eq!(
            parse_proxy_header(b"PROXY!"),
            Err(ProxyHeaderError::Invalid)
        );
    }

    #[test]
    fn version_2_blocks() {
        let ipv4 = v2(1, 0x11, &[192, 0, 2, 1, 192, 0, 2, 2, 0x15, 0xb3, 0, 80]);
        let header = parse_proxy_header(&ipv4).expect("v4");
        assert_eq!(header.source, Some("192.0.2.1".parse().expect("ip")));
        assert_eq!(header.len, 28);
        let mut ipv6_body = "2001:db8::7"
            .parse::<Ipv6Addr>()
            .expect("ip")
            .octets()
            .to_vec();
        ipv6_body.extend_from_slice(&[0; 20]);
        let ipv6 = v2(1, 0x21, &ipv6_body);
        assert_eq!(
            parse_proxy_header(&ipv6).expect("v6").source,
            Some("2001:db8::7".parse().expect("ip"))
        );
        assert_eq!(
            parse_proxy_header(&v2(0, 0, &[])).expect("local").source,
            None
        );
        assert_eq!(
            parse_proxy_header(&ipv4[..20]),
            Err(ProxyHeaderError::Incomplete)
        );
        assert_eq!(
            parse_proxy_header(&ipv4[..5]),
            Err(ProxyHeaderError::Incomplete)
        );
        assert_eq!(
            parse_proxy_header(&v2(1, 0x11, &[1, 2])),
            Err(ProxyHeaderError::Invalid)
        );
        assert_eq!(
            parse_proxy_header(&v2(3, 0x11, &[])),
            Err(ProxyHeaderError::Invalid)
        );
    }
}
