//! Where connections go (`--url`) and where they come from (`--src`).
//!
//! One (source address, destination address and port) pair gives at most one connection per
//! local port, about 28,000 with Linux's default `ip_local_port_range`; a million connections
//! therefore need several source addresses, several target ports, or both.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// One `ws://` target, resolved once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Address the TCP connection goes to.
    pub addr: SocketAddr,
    /// Value of the `Host` header, as written in the URL.
    pub host: String,
    /// Request target: path and query, always starting with `/`.
    pub path: String,
}

impl Target {
    /// Parses and resolves `ws://HOST[:PORT][/PATH]`. `wss://` is refused: the load generator
    /// measures the server, not TLS.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("{url:?}: only ws:// URLs are supported"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes().get(i) == Some(&b'?') => {
                (&rest[..i], format!("/{}", &rest[i..]))
            }
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let with_port = if has_port(authority) {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{url:?}: cannot resolve {authority:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url:?}: {authority:?} resolves to no address"))?;
        Ok(Self {
            addr,
            host: authority.to_string(),
            path,
        })
    }

    /// Whether this target speaks the Pusher protocol (`/app/{key}`) rather than plain echo.
    pub fn is_pusher(&self) -> bool {
        self.path.starts_with("/app/")
    }
}

/// Whether an authority (`host`, `host:port`, `[v6]`, `[v6]:port`) carries a port.
fn has_port(authority: &str) -> bool {
    match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    }
}

/// Most addresses one `--src` range may expand to; more is surely a typo.
const MAX_SOURCES: u128 = 65_536;

/// Parses `--src`: a comma-separated list of addresses and inclusive ranges `A-B`.
pub fn parse_sources(text: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (parse_ip(a)?, parse_ip(b)?),
            None => (parse_ip(item)?, parse_ip(item)?),
        };
        match (first, last) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let (a, b) = (u32::from(a), u32::from(b));
                check_range(item, u128::from(a), u128::from(b))?;
                out.extend((a..=b).map(|v| IpAddr::V4(Ipv4Addr::from(v))));
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let (a, b) = (u128::from(a), u128::from(b));
                check_range(item, a, b)?;
                out.extend((a..=b).map(|v| IpAddr::V6(Ipv6Addr::from(v))));
            }
            _ => return Err(format!("{item:?}: a range cannot mix IPv4 and IPv6")),
        }
    }
    if out.is_empty() {
        return Err(format!("{text:?}: no source address"));
    }
    Ok(out)
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address"))
}

fn check_range(item: &str, first: u128, last: u128) -> Result<(), String> {
    if last < first {
        return Err(format!("{item:?}: range runs backwards"));
    }
    if last - first >= MAX_SOURCES {
        return Err(format!("{item:?}: more than {MAX_SOURCES} addresses"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        /// (url, expected (address, host, path))
        type Case<'a> = (&'a str, Option<(&'a str, &'a str, &'a str)>);
        let cases: &[Case] = &[
            (
                "ws://127.0.0.1:8080/echo",
                Some(("127.0.0.1:8080", "127.0.0.1:8080", "/echo")),
            ),
            ("ws://127.0.0.1", Some(("127.0.0.1:80", "127.0.0.1", "/"))),
            (
                "ws://127.0.0.1:9/app/k?protocol=7",
                Some(("127.0.0.1:9", "127.0.0.1:9", "/app/k?protocol=7")),
            ),
            (
                "ws://127.0.0.1:9?x=1",
                Some(("127.0.0.1:9", "127.0.0.1:9", "/?x=1")),
            ),
            ("ws://[::1]:7/e", Some(("[::1]:7", "[::1]:7", "/e"))),
            ("wss://127.0.0.1/", None),
            ("http://127.0.0.1/", None),
            ("ws:///echo", None),
        ];
        for (url, want) in cases {
            let got = Target::parse(url).ok();
            let want = want.map(|(addr, host, path)| Target {
                addr: addr.parse().unwrap(),
                host: host.to_string(),
                path: path.to_string(),
            });
            assert_eq!(got, want, "{url}");
        }
    }

    #[test]
    fn sources_parse() {
        let ips = |v: &[&str]| {
            v.iter()
                .map(|s| s.parse::<IpAddr>().unwrap())
                .collect::<Vec<_>>()
        };
        let cases: &[(&str, Option<Vec<IpAddr>>)] = &[
            ("127.0.0.2", Some(ips(&["127.0.0.2"]))),
            (
                "127.0.0.2-127.0.0.4",
                Some(ips(&["127.0.0.2", "127.0.0.3", "127.0.0.4"])),
            ),
            (
                "127.0.0.9, 127.0.1.1-127.0.1.2",
                Some(ips(&["127.0.0.9", "127.0.1.1", "127.0.1.2"])),
            ),
            (
                "127.0.0.255-127.0.1.0",
                Some(ips(&["127.0.0.255", "127.0.1.0"])),
            ),
            ("::1", Some(ips(&["::1"]))),
            ("127.0.0.4-127.0.0.2", None),
            ("127.0.0.1-::1", None),
            ("10.0.0.0-10.255.255.255", None),
            ("nonsense", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_sources(text).ok(), *want, "{text}");
        }
    }
}
