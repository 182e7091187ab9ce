//! The `--broker` URL: which broker joins the instances of a cluster, checked once at start so a
//! typo is a clear configuration error rather than a retry loop against nothing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Redis's port when the URL names none.
const REDIS_PORT: u16 = 6379;

/// Redis Sentinel's port when a `redis+sentinel://` URL names none.
const SENTINEL_PORT: u16 = 26379;

/// NATS's client port when the URL names none.
const NATS_PORT: u16 = 4222;

/// Which broker protocol the URL speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// Redis pub/sub (`redis://`).
    Redis,
    /// NATS core subjects (`nats://`).
    Nats,
}

impl fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Redis => "redis",
            Self::Nats => "nats",
        })
    }
}

/// Where Redis Sentinel is asked for the current master, from a `redis+sentinel://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    /// The sentinels, host (IPv6 in brackets, as written) and port, in the order to try them.
    pub nodes: Vec<(String, u16)>,
    /// The name the sentinels monitor the master under.
    pub master: String,
    /// The database number on the master.
    pub db: Option<i64>,
    /// The master's password.
    password: Option<String>,
}

impl SentinelTarget {
    /// The master's password, when the URL gives one.
    pub(crate) fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

/// A validated broker URL: `redis://[:PASSWORD@]HOST[:PORT][/DB]` (`rediss://` for TLS),
/// `redis+sentinel://[:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB]` or
/// `nats://HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// The protocol.
    pub kind: BrokerKind,
    /// Host name or address (IPv6 in brackets, as written); the first sentinel's with Sentinel.
    pub host: String,
    /// Port, the protocol's default when the URL names none.
    pub port: u16,
    /// The sentinels to ask for the master, for `redis+sentinel://`.
    pub sentinel: Option<SentinelTarget>,
    /// Whether the connection runs TLS (`rediss://`).
    pub tls: bool,
    /// The PEM file of the CA that signs the broker's certificate (`broker_ca_file`); `None`:
    /// the system's roots.
    ca_file: Option<PathBuf>,
    /// The URL as given, handed to the client crate (credentials included).
    text: String,
}

impl BrokerUrl {
    /// The URL to hand to the broker's client.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// This URL, its TLS connections verified against the CA in `ca_file` instead of the
    /// system's roots.
    pub(crate) fn trusting(self, ca_file: Option<PathBuf>) -> Self {
        Self { ca_file, ..self }
    }

    /// The CA file the TLS connections are verified against, when one is set.
    pub(crate) fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }
}

impl fmt::Display for BrokerUrl {
    /// The URL without credentials, for logs and `/health`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.sentinel {
            Some(target) => {
                let nodes: Vec<String> = target
                    .nodes
                    .iter()
                    .map(|(host, port)| format!("{host}:{port}"))
                    .collect();
                write!(f, "redis+sentinel://{}/{}", nodes.join(","), target.master)
            }
            None => {
                let tls = if self.tls { "s" } else { "" };
                write!(f, "{}{tls}://{}:{}", self.kind, self.host, self.port)
            }
        }
    }
}

impl FromStr for BrokerUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            format!(
                "expected redis://HOST:PORT[/DB], rediss://HOST:PORT[/DB], redis+sentinel://HOST:PORT/MASTER_NAME or \
                 nats://HOST:PORT, not {text:?}"
            )
        })?;
        let (kind, tls) = match scheme {
            "redis+sentinel" => return sentinel(text, rest),
            "redis" => (BrokerKind::Redis, false),
            "rediss" => (BrokerKind::Redis, true),
            "nats" => (BrokerKind::Nats, false),
            "tls" => {
                return Err(
                    "tls:// (NATS over TLS) is not supported by this build; use rediss:// for \
                     Redis over TLS, or nats:// on a private network or through a TLS tunnel"
                        .to_owned(),
                );
            }
            other => {
                return Err(format!(
                    "unknown broker scheme {other:?}; expected redis://, rediss://, \
                     redis+sentinel:// or nats://"
                ));
            }
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, address) = match authority.rsplit_once('@') {
            Some((credentials, address)) => (Some(credentials), address),
            None => (None, authority),
        };
        if credentials.is_some() && kind == BrokerKind::Nats {
            return Err("credentials in a nats:// URL are not supported".to_owned());
        }
        let (host, port) = split_host_port(address)?;
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("invalid port {port:?} in broker URL {text:?}"))?,
            None => match kind {
                BrokerKind::Redis => REDIS_PORT,
                BrokerKind::Nats => NATS_PORT,
            },
        };
        if !path.is_empty() {
            match kind {
                BrokerKind::Redis if path.parse::<u32>().is_ok() => {}
                BrokerKind::Redis => {
                    return Err(format!(
                        "the path of a {scheme}:// URL is the database number, not {path:?}"
                    ));
                }
                BrokerKind::Nats => {
                    return Err(format!("a nats:// URL has no path, not {path:?}"));
                }
            }
        }
        Ok(Self {
            kind,
            host: host.to_owned(),
            port,
            sentinel: None,
            tls,
            ca_file: None,
            text: text.to_owned(),
        })
    }
}

/// A `redis+sentinel://` URL, `rest` being what follows the scheme.
fn sentinel(text: &str, rest: &str) -> Result<BrokerUrl, String> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (password, nodes) = match authority.rsplit_once('@') {
        Some((credentials, nodes)) => {
            let password = credentials.strip_prefix(':').unwrap_or(credentials);
            (Some(password.to_owned()), nodes)
        }
        None => (None, authority),
    };
    let nodes = nodes
        .split(',')
        .map(|node| {
            let (host, port) = split_host_port(node)?;
            let port = match port {
                Some(port) => port
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| format!("invalid port {port:?} in broker URL {text:?}"))?,
                None => SENTINEL_PORT,
            };
            Ok((host.to_owned(), port))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let (master, db) = path.split_once('/').unwrap_or((path, ""));
    if master.is_empty() {
        return Err(format!(
            "a redis+sentinel:// URL names the master after the sentinels              (redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER_NAME[/DB]), not {text:?}"
        ));
    }
    let db = match db {
        "" => None,
        db => Some(db.parse::<i64>().ok().filter(|&n| n >= 0).ok_or_else(|| {
            format!("the path after the master is the database number, not {db:?}")
        })?),
    };
    let (host, port) = nodes.first().cloned().unwrap_or_default();
    Ok(BrokerUrl {
        kind: BrokerKind::Redis,
        host,
        port,
        sentinel: Some(SentinelTarget {
            nodes,
            master: master.to_owned(),
            db,
            password,
        }),
        tls: false,
        ca_file: None,
        text: text.to_owned(),
    })
}

/// `HOST[:PORT]` or `[V6][:PORT]`, refusing an empty host.
fn split_host_port(address: &str) -> Result<(&str, Option<&str>), String> {
    let (host, port) = if let Some(v6) = address.strip_prefix('[') {
        let (inner, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("unclosed [ in broker address {address:?}"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("expected :PORT after ] in {address:?}"))?,
            ),
        };
        (&address[..inner.len() + 2], port)
    } else {
        match address.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("the broker URL names no host ({address:?})"));
    }
    Ok((host, port))
}

impl<'de> serde::Deserialize<'de> for BrokerUrl {
    /// The file gives the URL as a string, checked like the flag.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_urls_and_their_defaults() {
        let cases: &[(&str, BrokerKind, &str, u16)] = &[
            (
                "redis://127.0.0.1:6380",
                BrokerKind::Redis,
                "127.0.0.1",
                6380,
            ),
            ("redis://localhost", BrokerKind::Redis, "localhost", 6379),
            ("redis://h:1/3", BrokerKind::Redis, "h", 1),
            ("redis://:secret@h:7", BrokerKind::Redis, "h", 7),
            ("rediss://h", BrokerKind::Redis, "h", 6379),
            ("rediss://:secret@h:6380/1", BrokerKind::Redis, "h", 6380),
            ("nats://127.0.0.1:4223", BrokerKind::Nats, "127.0.0.1", 4223),
            ("nats://n", BrokerKind::Nats, "n", 4222),
            ("nats://[::1]:5", BrokerKind::Nats, "[::1]", 5),
        ];
        for &(text, kind, host, port) in cases {
            let url: BrokerUrl = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((url.kind, url.host.as_str(), url.port), (kind, host, port));
            assert_eq!(url.as_str(), text);
            assert_eq!(url.tls, text.starts_with("rediss://"), "{text}");
        }
    }

    #[test]
    fn sentinel_urls_name_the_sentinels_and_the_master() {
        let url: BrokerUrl = "redis+sentinel://:pw@127.0.0.1:26380,[::1],h:7/mymaster/2"
            .parse()
            .expect("valid");
        assert_eq!(url.kind, BrokerKind::Redis);
        let target = url.sentinel.clone().expect("sentinel");
        assert_eq!(
            target.nodes,
            [
                ("127.0.0.1".to_owned(), 26380),
                ("[::1]".to_owned(), 26379),
                ("h".to_owned(), 7)
            ]
        );
        assert_eq!((target.master.as_str(), target.db), ("mymaster", Some(2)));
        assert_eq!(target.password(), Some("pw"));
        assert_eq!(
            url.to_string(),
            "redis+sentinel://127.0.0.1:26380,[::1]:26379,h:7/mymaster"
        );
        for (text, says) in [
            ("redis+sentinel://h:1", "names the master"),
            ("redis+sentinel://h:1/", "names the master"),
            ("redis+sentinel://h:1,/m", "no host"),
            ("redis+sentinel://h:0/m", "invalid port"),
            ("redis+sentinel://h/m/x", "database number"),
        ] {
            match text.parse::<BrokerUrl>() {
                Ok(url) => panic!("{text} accepted as {url:?}"),
                Err(e) => assert!(e.contains(says), "{text}: {e}"),
            }
        }
    }

    #[test]
    fn display_hides_credentials() {
        let url: BrokerUrl = "redis://:secret@h:7/2".parse().expect("valid");
        assert_eq!(url.to_string(), "redis://h:7");
        let url: BrokerUrl = "rediss://:secret@h:7".parse().expect("valid");
        assert_eq!(url.to_string(), "rediss://h:7");
    }

    #[test]
    fn refused_urls_say_why() {
        let cases: &[(&str, &str)] = &[
            ("127.0.0.1:6379", "expected redis://"),
            ("http://h", "unknown broker scheme"),
            ("tls://h", "not supported"),
            ("rediss://h/db", "database number"),
            ("redis://", "no host"),
            ("redis://h:0", "invalid port"),
            ("redis://h:99999", "invalid port"),
            ("redis://h:x", "invalid port"),
            ("redis://h/db", "database number"),
            ("nats://h/x", "no path"),
            ("nats://u:p@h", "credentials"),
            ("nats://[::1", "unclosed"),
        ];
        for &(text, says) in cases {
            match text.parse::<BrokerUrl>() {
                Ok(url) => panic!("{text} accepted as {url:?}"),
                Err(e) => assert!(e.contains(says), "{text}: {e}"),
            }
        }
    }
}
