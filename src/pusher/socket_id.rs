//! Socket ids: `"{high}.{low}"`, the connection's identity in the protocol (signatures cover it,
//! the HTTP API excludes a sender by it). Kept as two integers, not a string, because one lives
//! in every connection.

use std::fmt;

/// A connection's Pusher socket id. `high` names the issuing shard of the issuing instance (the
/// caller picks it unique across shards and instances, e.g. a random instance prefix plus the
/// shard index); `low` counts connections on that shard, so the pair is unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId {
    /// Issuer: instance and shard.
    pub high: u32,
    /// Sequence number within the issuer.
    pub low: u64,
}

impl SocketId {
    /// Parses the wire form; `None` unless it is `\d+\.\d+` with both parts in range.
    pub fn parse(s: &str) -> Option<Self> {
        let (high, low) = s.split_once('.')?;
        if !is_digits(high) || !is_digits(low) {
            return None;
        }
        Some(Self {
            high: high.parse().ok()?,
            low: low.parse().ok()?,
        })
    }
}

impl fmt::Display for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.high, self.low)
    }
}

/// Whether `s` has the socket id format Pusher's SDKs check, `\A\d+\.\d+\z`, whatever the size
/// of the numbers (a socket id from elsewhere need not fit ours).
pub(super) fn is_valid_socket_id(s: &str) -> bool {
    s.split_once('.')
        .is_some_and(|(a, b)| is_digits(a) && is_digits(b))
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format_table() {
        type Case<'a> = (&'a str, Option<(u32, u64)>, bool);
        let cases: &[Case<'_>] = &[
            ("1234.1234", Some((1234, 1234)), true),
            ("0.0", Some((0, 0)), true),
            (
                "4294967295.18446744073709551615",
                Some((u32::MAX, u64::MAX)),
                true,
            ),
            ("4294967296.1", None, true),
            ("1.2.3", None, false),
            (".1", None, false),
            ("1.", None, false),
            ("1", None, false),
            ("a.1", None, false),
            ("+1.1", None, false),
            ("1.1\n", None, false),
            ("", None, false),
        ];
        for &(text, parsed, valid) in cases {
            assert_eq!(
                SocketId::parse(text).map(|s| (s.high, s.low)),
                parsed,
                "{text:?}"
            );
            assert_eq!(is_valid_socket_id(text), valid, "{text:?}");
        }
        assert_eq!(SocketId { high: 12, low: 345 }.to_string(), "12.345");
    }
}
