//! Response bodies of the HTTP API, in the shapes the Pusher server SDKs parse, built from what
//! the shards report. Every success is status 200 with `Content-Type: application/json`.

use crate::pusher::channels::{ChannelKind, SERVER_TO_USER_PREFIX};
use crate::pusher::json;

use super::InfoFields;

/// What a shard (or the sum over shards) knows about one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Connections subscribed.
    pub subscription_count: u64,
    /// Distinct presence members (0 for other kinds).
    pub user_count: u64,
}

impl ChannelStats {
    /// Adds another shard's figures for the same channel. Summing user counts is exact only
    /// when no user is on two shards; a shard-spanning roster must de-duplicate first.
    pub fn merge(&mut self, other: ChannelStats) {
        self.subscription_count += other.subscription_count;
        self.user_count += other.user_count;
    }
}

/// `{}`: the body of a success with nothing to report.
pub fn empty() -> String {
    "{}".to_owned()
}

/// Appends `{"user_count":..,"subscription_count":..}` with the fields asked for (user_count
/// only for presence channels).
fn write_attributes(out: &mut String, channel: &str, info: InfoFields, stats: ChannelStats) {
    let mut fields = Vec::new();
    if info.user_count && ChannelKind::of(channel).is_presence() {
        fields.push(format!("\"user_count\":{}", stats.user_count));
    }
    if info.subscription_count {
        fields.push(format!(
            "\"subscription_count\":{}",
            stats.subscription_count
        ));
    }
    out.push('{');
    out.push_str(&fields.join(","));
    out.push('}');
}

fn write_channel_map<'a>(
    out: &mut String,
    info: InfoFields,
    channels: impl Iterator<Item = (&'a str, ChannelStats)>,
) {
    out.push('{');
    for (i, (name, stats)) in channels.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let mut key = Vec::new();
        json::write_str(&mut key, name);
        out.push_str(&String::from_utf8_lossy(&key));
        out.push(':');
        write_attributes(out, name, info, stats);
    }
    out.push('}');
}

/// POST `/events`: `{}`, or with `info` `{"channels":{name:{attributes}}}`.
pub fn events<'a>(
    info: InfoFields,
    channels: impl Iterator<Item = (&'a str, ChannelStats)>,
) -> String {
    if !info.any() {
        return empty();
    }
    let mut out = String::from("{\"channels\":");
    write_channel_map(&mut out, info, channels);
    out.push('}');
    out
}

/// POST `/batch_events`: `{}` when no event asked for `info`, else `{"batch":[{attributes}..]}`
/// with one entry per event (`{}` for events that asked for nothing), each event naming one
/// channel.
pub fn batch_events<'a>(
    events: impl Iterator<Item = (&'a str, InfoFields, ChannelStats)> + Clone,
) -> String {
    if !events.clone().any(|(_, info, _)| info.any()) {
        return empty();
    }
    let mut out = String::from("{\"batch\":[");
    for (i, (channel, info, stats)) in events.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_attributes(&mut out, channel, info, stats);
    }
    out.push_str("]}");
    out
}

/// GET `/channels`: `{"channels":{name:{attributes}}}` for the occupied channels given.
/// Server-to-user channels are internal plumbing and never listed, as in Pusher.
pub fn channels<'a>(
    info: InfoFields,
    channels: impl Iterator<Item = (&'a str, ChannelStats)>,
) -> String {
    let mut out = String::from("{\"channels\":");
    let listed = channels.filter(|(name, _)| !name.starts_with(SERVER_TO_USER_PREFIX));
    write_channel_map(&mut out, info, listed);
    out.push('}');
    out
}

/// GET `/channels/{name}`: `{"occupied":bool, ..attributes}`.
pub fn channel(name: &str, info: InfoFields, stats: ChannelStats) -> String {
    let mut attributes = String::new();
    write_attributes(&mut attributes, name, info, stats);
    let occupied = stats.subscription_count > 0;
    match attributes
        .strip_prefix('{')
        .and_then(|a| a.strip_suffix('}'))
    {
        Some(fields) if !fields.is_empty() => format!("{{\"occupied\":{occupied},{fields}}}"),
        _ => format!("{{\"occupied\":{occupied}}}"),
    }
}

/// GET `/channels/{name}/users`: `{"users":[{"id":..}..]}`.
pub fn users<'a>(user_ids: impl Iterator<Item = &'a str>) -> String {
    let mut out = Vec::from(&b"{\"users\":["[..]);
    for (i, id) in user_ids.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        json::write_str(&mut out, id);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
    }

    const BOTH: InfoFields = InfoFields {
        user_count: true,
        subscription_count: true,
    };
    const STATS: ChannelStats = ChannelStats {
        subscription_count: 3,
        user_count: 2,
    };

    #[test]
    fn events_bodies() {
        assert_eq!(
            events(InfoFields::default(), [("a", STATS)].into_iter()),
            "{}"
        );
        let body = events(BOTH, [("presence-a", STATS), ("b", STATS)].into_iter());
        assert_eq!(
            parse(&body),
            json!({"channels":{"presence-a":{"user_count":2,"subscription_count":3},"b":{"subscription_count":3}}})
        );
        let none = InfoFields::default();
        let sub = InfoFields {
            subscription_count: true,
            ..none
        };
        assert_eq!(batch_events([("a", none, STATS)].into_iter()), "{}");
        let body = batch_events([("a", none, STATS), ("b", sub, STATS)].into_iter());
        assert_eq!(parse(&body), json!({"batch":[{},{"subscription_count":3}]}));
    }

    #[test]
    fn query_bodies() {
        let body = channels(
            InfoFields::default(),
            [("a\"", STATS), ("#server-to-user-1", STATS), ("b", STATS)].into_iter(),
        );
        assert_eq!(parse(&body), json!({"channels":{"a\"":{},"b":{}}}));
        let user = InfoFields {
            user_count: true,
            subscription_count: false,
        };
        assert_eq!(
            parse(&channels(user, [("presence-x", STATS)].into_iter())),
            json!({"channels":{"presence-x":{"user_count":2}}})
        );
        assert_eq!(
            parse(&channel("a", InfoFields::default(), STATS)),
            json!({"occupied":true})
        );
        assert_eq!(
            parse(&channel(
                "a",
                InfoFields::default(),
                ChannelStats::default()
            )),
            json!({"occupied":false})
        );
        assert_eq!(
            parse(&channel("presence-a", BOTH, STATS)),
            json!({"occupied":true,"user_count":2,"subscription_count":3})
        );
        assert_eq!(
            parse(&users(["1", "x\"y"].into_iter())),
            json!({"users":[{"id":"1"},{"id":"x\"y"}]})
        );
        assert_eq!(parse(&users(std::iter::empty())), json!({"users":[]}));
        let mut merged = STATS;
        merged.merge(STATS);
        assert_eq!(
            merged,
            ChannelStats {
                subscription_count: 6,
                user_count: 4
            }
        );
    }
}
