//! The messages of Pusher protocol v7 on the wire: parsing what clients send, and building what
//! the server sends as ready [`Frame`]s. Where Pusher sends `data` as a JSON-encoded string
//! (every server event but `pusher:error`), so does this, because pusher-js decodes it exactly
//! that way.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::pusher::frame::{Frame, FrameBuilder};
use crate::pusher::json;
use crate::pusher::socket_id::SocketId;

/// A message from a client, borrowed from its text where it can be.
#[derive(Debug, PartialEq)]
pub(crate) enum ClientMessage<'a> {
    /// `pusher:subscribe`.
    Subscribe {
        /// Channel name.
        channel: String,
        /// `key:signature` for private and presence channels.
        auth: Option<String>,
        /// Presence member data, a JSON string signed as is.
        channel_data: Option<String>,
    },
    /// `pusher:unsubscribe`.
    Unsubscribe {
        /// Channel name.
        channel: String,
    },
    /// `pusher:ping`: answer with `pusher:pong`.
    Ping,
    /// `pusher:pong`: the answer to a server ping.
    Pong,
    /// `pusher:signin`: user authentication.
    Signin {
        /// The user's data, a JSON object string with at least `id`, signed as is.
        user_data: String,
        /// `key:signature` over `socket_id::user::user_data`.
        auth: String,
    },
    /// A `client-*` event to relay to the channel's other subscribers.
    ClientEvent {
        /// Event name, starting with `client-`.
        event: Cow<'a, str>,
        /// Channel name.
        channel: Cow<'a, str>,
        /// The event's data as the client sent it (raw JSON).
        data: &'a str,
    },
}

/// Why a client message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProtocolError {
    /// Not a JSON object with a string `event`.
    InvalidJson,
    /// A known `pusher:` event without the fields it needs.
    MissingField(&'static str),
    /// A client event without a `channel`.
    ClientEventWithoutChannel,
    /// An event that is neither a `pusher:` event clients send nor a `client-` event.
    UnsupportedEvent,
}

impl ProtocolError {
    /// The message sent back in `pusher:error`.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::InvalidJson => "Invalid message: expected a JSON object with an event name",
            Self::MissingField("channel") => "Missing field: channel",
            Self::MissingField("user_data") => "Missing field: user_data",
            Self::MissingField("auth") => "Missing field: auth",
            Self::MissingField(_) => "Missing field in data",
            Self::ClientEventWithoutChannel => "Client events need a channel",
            Self::UnsupportedEvent => {
                "Unsupported event: clients may send pusher: events and client- events"
            }
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// The `data` of the `pusher:` events clients send. Every field is optional here so the error
/// can say which one was missing.
#[derive(Deserialize, Default)]
struct PusherData {
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    channel_data: Option<String>,
    #[serde(default)]
    user_data: Option<String>,
}

/// Parses one client text message.
pub(crate) fn parse_client_message(text: &str) -> Result<ClientMessage<'_>, ProtocolError> {
    let envelope: Envelope<'_> =
        serde_json::from_str(text).map_err(|_| ProtocolError::InvalidJson)?;
    if envelope.event.starts_with("client-") {
        let channel = envelope
            .channel
            .ok_or(ProtocolError::ClientEventWithoutChannel)?;
        let data = envelope.data.map_or("null", RawValue::get);
        return Ok(ClientMessage::ClientEvent {
            event: envelope.event,
            channel,
            data,
        });
    }
    let data = || pusher_data(envelope.data);
    match envelope.event.as_ref() {
        "pusher:ping" => Ok(ClientMessage::Ping),
        "pusher:pong" => Ok(ClientMessage::Pong),
        "pusher:subscribe" => {
            let d = data()?;
            let channel = d.channel.ok_or(ProtocolError::MissingField("channel"))?;
            Ok(ClientMessage::Subscribe {
                channel,
                auth: d.auth,
                channel_data: d.channel_data,
            })
        }
        "pusher:unsubscribe" => {
            let channel = data()?
                .channel
                .ok_or(ProtocolError::MissingField("channel"))?;
            Ok(ClientMessage::Unsubscribe { channel })
        }
        "pusher:signin" => {
            let d = data()?;
            let user_data = d
                .user_data
                .ok_or(ProtocolError::MissingField("user_data"))?;
            let auth = d.auth.ok_or(ProtocolError::MissingField("auth"))?;
            Ok(ClientMessage::Signin { user_data, auth })
        }
        _ => Err(ProtocolError::UnsupportedEvent),
    }
}

/// Whether JSON text is an object: derived structs would also accept an array of the fields.
fn is_object(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// Decodes a `pusher:` event's data: an object, or (older clients) a string holding one.
fn pusher_data(raw: Option<&RawValue>) -> Result<PusherData, ProtocolError> {
    let Some(raw) = raw else {
        return Ok(PusherData::default());
    };
    if raw.get().starts_with('"') {
        let inner: String =
            serde_json::from_str(raw.get()).map_err(|_| ProtocolError::InvalidJson)?;
        serde_json::from_str(&inner).map_err(|_| ProtocolError::InvalidJson)
    } else {
        serde_json::from_str(raw.get()).map_err(|_| ProtocolError::InvalidJson)
    }
}

/// A presence member as announced to others: user id and optional info (raw JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceMember {
    /// The user id from `channel_data` (numbers are kept as their decimal text).
    pub user_id: Box<str>,
    /// The `user_info` object from `channel_data`, as raw JSON.
    pub user_info: Option<Box<str>>,
}

/// Why a presence subscription's `channel_data` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelDataError {
    /// Not a JSON object.
    Invalid,
    /// No `user_id`, or one that is neither a non-empty string nor a number.
    MissingUserId,
}

impl ChannelDataError {
    /// The message sent back to the client.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::Invalid => "channel_data must be a JSON object",
            Self::MissingUserId => {
                "channel_data must have a user_id (a non-empty string or a number)"
            }
        }
    }
}

/// Longest user id accepted, in bytes (the Pusher SDKs refuse longer ones).
pub(crate) const MAX_USER_ID: usize = 200;

/// Parses presence `channel_data`: `{"user_id": "..", "user_info": {..}}`.
pub(crate) fn parse_channel_data(channel_data: &str) -> Result<PresenceMember, ChannelDataError> {
    #[derive(Deserialize)]
    struct ChannelData<'a> {
        #[serde(borrow, default)]
        user_id: Option<&'a RawValue>,
        #[serde(borrow, default)]
        user_info: Option<&'a RawValue>,
    }
    if !is_object(channel_data) {
        return Err(ChannelDataError::Invalid);
    }
    let parsed: ChannelData<'_> =
        serde_json::from_str(channel_data).map_err(|_| ChannelDataError::Invalid)?;
    let user_id = parsed.user_id.ok_or(ChannelDataError::MissingUserId)?;
    let user_id = match serde_json::from_str::<serde_json::Value>(user_id.get()) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Number(n)) => n.to_string(),
        _ => return Err(ChannelDataError::MissingUserId),
    };
    if user_id.is_empty() || user_id.len() > MAX_USER_ID {
        return Err(ChannelDataError::MissingUserId);
    }
    let user_info = parsed
        .user_info
        .filter(|raw| raw.get() != "null")
        .map(|raw| Box::from(raw.get()));
    Ok(PresenceMember {
        user_id: user_id.into_boxed_str(),
        user_info,
    })
}

/// Parses `pusher:signin` user_data and returns its `id`: a non-empty string of at most
/// [`MAX_USER_ID`] bytes from the channel-name alphabet, because it names the user's
/// `#server-to-user-{id}` channel (the Pusher SDKs apply the same rule).
pub(crate) fn parse_user_data_id(user_data: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct UserData {
        id: String,
    }
    if !is_object(user_data) {
        return None;
    }
    let parsed: UserData = serde_json::from_str(user_data).ok()?;
    let valid = !parsed.id.is_empty()
        && parsed.id.len() <= MAX_USER_ID
        && parsed
            .id
            .bytes()
            .all(crate::pusher::channels::is_channel_byte);
    valid.then_some(parsed.id)
}

/// Appends `inner` (JSON text) as a JSON string: how Pusher nests `data`.
fn data_string(b: &mut FrameBuilder, inner: &str) {
    b.raw(",\"data\":").string(inner);
}

/// `pusher:connection_established` with the socket id and the activity timeout in seconds,
/// after which the client pings if it has heard nothing.
pub(crate) fn connection_established(socket_id: SocketId, activity_timeout_secs: u64) -> Frame {
    let inner =
        format!("{{\"socket_id\":\"{socket_id}\",\"activity_timeout\":{activity_timeout_secs}}}");
    let mut b = FrameBuilder::with_capacity(96);
    b.raw("{\"event\":\"pusher:connection_established\"");
    data_string(&mut b, &inner);
    b.raw("}").finish()
}

/// `pusher_internal:subscription_succeeded` for a public, private or encrypted channel.
pub(crate) fn subscription_succeeded(channel: &str) -> Frame {
    let mut b = FrameBuilder::with_capacity(80 + channel.len());
    b.raw("{\"event\":\"pusher_internal:subscription_succeeded\",\"channel\":")
        .string(channel);
    b.raw(",\"data\":\"{}\"}").finish()
}

/// `pusher_internal:subscription_succeeded` for a presence channel, listing the members:
/// data is `{"presence":{"ids":[..],"hash":{id: info},"count":n}}` as a string.
pub(crate) fn presence_subscription_succeeded<'m>(
    channel: &str,
    members: impl Iterator<Item = (&'m str, Option<&'m str>)>,
) -> Frame {
    let mut ids = Vec::new();
    let mut hash = Vec::new();
    let mut count = 0usize;
    for (user_id, user_info) in members {
        if count > 0 {
            ids.push(b',');
            hash.push(b',');
        }
        json::write_str(&mut ids, user_id);
        json::write_str(&mut hash, user_id);
        hash.push(b':');
        hash.extend_from_slice(user_info.unwrap_or("null").as_bytes());
        count += 1;
    }
    let mut inner = Vec::with_capacity(48 + ids.len() + hash.len());
    inner.extend_from_slice(b"{\"presence\":{\"ids\":[");
    inner.extend_from_slice(&ids);
    inner.extend_from_slice(b"],\"hash\":{");
    inner.extend_from_slice(&hash);
    inner.extend_from_slice(format!("}},\"count\":{count}}}}}").as_bytes());
    let inner = String::from_utf8_lossy(&inner);
    let mut b = FrameBuilder::with_capacity(80 + channel.len() + inner.len() * 9 / 8);
    b.raw("{\"event\":\"pusher_internal:subscription_succeeded\",\"channel\":")
        .string(channel);
    data_string(&mut b, &inner);
    b.raw("}").finish()
}

/// `pusher_internal:member_added`: data `{"user_id":..,"user_info":..}` as a string.
pub(crate) fn member_added(channel: &str, member: &PresenceMember) -> Frame {
    let mut inner = Vec::with_capacity(32 + member.user_id.len());
    inner.extend_from_slice(b"{\"user_id\":");
    json::write_str(&mut inner, &member.user_id);
    if let Some(info) = &member.user_info {
        inner.extend_from_slice(b",\"user_info\":");
        inner.extend_from_slice(info.as_bytes());
    }
    inner.push(b'}');
    let inner = String::from_utf8_lossy(&inner);
    let mut b = FrameBuilder::with_capacity(64 + channel.len() + inner.len() * 9 / 8);
    b.raw("{\"event\":\"pusher_internal:member_added\",\"channel\":")
        .string(channel);
    data_string(&mut b, &inner);
    b.raw("}").finish()
}

/// `pusher_internal:member_removed`: data `{"user_id":..}` as a string.
pub(crate) fn member_removed(channel: &str, user_id: &str) -> Frame {
    let mut inner = Vec::with_capacity(16 + user_id.len());
    inner.extend_from_slice(b"{\"user_id\":");
    json::write_str(&mut inner, user_id);
    inner.push(b'}');
    let inner = String::from_utf8_lossy(&inner);
    let mut b = FrameBuilder::with_capacity(64 + channel.len() + inner.len() * 9 / 8);
    b.raw("{\"event\":\"pusher_internal:member_removed\",\"channel\":")
        .string(channel);
    data_string(&mut b, &inner);
    b.raw("}").finish()
}

/// `pusher:ping`, sent after `activity_timeout` of silence.
pub(crate) fn ping() -> Frame {
    FrameBuilder::with_capacity(40)
        .raw("{\"event\":\"pusher:ping\",\"data\":\"{}\"}")
        .finish()
}

/// `pusher:pong`, the answer to a client's `pusher:ping`.
pub(crate) fn pong() -> Frame {
    FrameBuilder::with_capacity(40)
        .raw("{\"event\":\"pusher:pong\",\"data\":\"{}\"}")
        .finish()
}

/// `pusher:error` with an optional code; unlike other events its data is an object, as
/// Pusher sends it: `{"message":..,"code":..}`.
pub(crate) fn error(code: Option<u16>, message: &str) -> Frame {
    let mut b = FrameBuilder::with_capacity(64 + message.len());
    b.raw("{\"event\":\"pusher:error\",\"data\":{\"message\":")
        .string(message);
    match code {
        Some(code) => b.raw(&format!(",\"code\":{code}}}}}")),
        None => b.raw(",\"code\":null}}"),
    };
    b.finish()
}

/// `pusher:subscription_error` on a channel, the event pusher-js apps bind to learn why a
/// subscription failed: data `{"type":..,"error":..,"status":..}`.
pub(crate) fn subscription_error(channel: &str, kind: &str, message: &str, status: u16) -> Frame {
    let mut inner = Vec::with_capacity(48 + message.len());
    inner.extend_from_slice(b"{\"type\":");
    json::write_str(&mut inner, kind);
    inner.extend_from_slice(b",\"error\":");
    json::write_str(&mut inner, message);
    inner.extend_from_slice(format!(",\"status\":{status}}}").as_bytes());
    let inner = String::from_utf8_lossy(&inner);
    let mut b = FrameBuilder::with_capacity(64 + channel.len() + inner.len() * 9 / 8);
    b.raw("{\"event\":\"pusher:subscription_error\",\"channel\":")
        .string(channel);
    data_string(&mut b, &inner);
    b.raw("}").finish()
}

/// `pusher:signin_success`: data `{"user_data":"<the signed user_data string>"}` as a string.
pub(crate) fn signin_success(user_data: &str) -> Frame {
    let mut inner = Vec::with_capacity(16 + user_data.len() * 9 / 8);
    inner.extend_from_slice(b"{\"user_data\":");
    json::write_str(&mut inner, user_data);
    inner.push(b'}');
    let inner = String::from_utf8_lossy(&inner);
    let mut b = FrameBuilder::with_capacity(48 + inner.len() * 9 / 8);
    b.raw("{\"event\":\"pusher:signin_success\"");
    data_string(&mut b, &inner);
    b.raw("}").finish()
}

/// `pusher:cache_miss`: a new subscriber of a cache channel that has no event to replay.
pub(crate) fn cache_miss(channel: &str) -> Frame {
    let mut b = FrameBuilder::with_capacity(48 + channel.len());
    b.raw("{\"event\":\"pusher:cache_miss\",\"channel\":")
        .string(channel)
        .raw("}")
        .finish()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn value(frame: &Frame) -> Value {
        serde_json::from_str(frame.text()).unwrap_or_else(|e| panic!("{e}: {}", frame.text()))
    }

    /// `data` of a server frame, decoded from its string form.
    fn data(frame: &Frame) -> Value {
        let v = value(frame);
        let s = v["data"]
            .as_str()
            .unwrap_or_else(|| panic!("data is not a string: {v}"));
        serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
    }

    #[test]
    fn parse_client_messages_table() {
        use ClientMessage::*;
        let cases: Vec<(&str, Result<ClientMessage<'_>, ProtocolError>)> = vec![
            (r#"{"event":"pusher:ping","data":{}}"#, Ok(Ping)),
            (r#"{"event":"pusher:ping"}"#, Ok(Ping)),
            (r#"{"event":"pusher:pong","data":{}}"#, Ok(Pong)),
            (
                r#"{"event":"pusher:subscribe","data":{"channel":"chat"}}"#,
                Ok(Subscribe {
                    channel: "chat".into(),
                    auth: None,
                    channel_data: None,
                }),
            ),
            (
                r#"{"event":"pusher:subscribe","data":{"auth":"k:s","channel_data":"{\"user_id\":1}","channel":"presence-a"}}"#,
                Ok(Subscribe {
                    channel: "presence-a".into(),
                    auth: Some("k:s".into()),
                    channel_data: Some("{\"user_id\":1}".into()),
                }),
            ),
            (
                r#"{"event":"pusher:subscribe","data":"{\"channel\":\"old\"}"}"#,
                Ok(Subscribe {
                    channel: "old".into(),
                    auth: None,
                    channel_data: None,
                }),
            ),
            (
                r#"{"event":"pusher:subscribe","data":{}}"#,
                Err(ProtocolError::MissingField("channel")),
            ),
            (
                r#"{"event":"pusher:subscribe"}"#,
                Err(ProtocolError::MissingField("channel")),
            ),
            (
                r#"{"event":"pusher:subscribe","data":{"channel":5}}"#,
                Err(ProtocolError::InvalidJson),
            ),
            (
                r#"{"event":"pusher:unsubscribe","data":{"channel":"chat"}}"#,
                Ok(Unsubscribe {
                    channel: "chat".into(),
                }),
            ),
            (
                r#"{"event":"pusher:unsubscribe","data":{}}"#,
                Err(ProtocolError::MissingField("channel")),
            ),
            (
                r#"{"event":"pusher:signin","data":{"user_data":"{\"id\":\"1\"}","auth":"k:s"}}"#,
                Ok(Signin {
                    user_data: "{\"id\":\"1\"}".into(),
                    auth: "k:s".into(),
                }),
            ),
            (
                r#"{"event":"pusher:signin","data":{"auth":"k:s"}}"#,
                Err(ProtocolError::MissingField("user_data")),
            ),
            (
                r#"{"event":"pusher:signin","data":{"user_data":"{}"}}"#,
                Err(ProtocolError::MissingField("auth")),
            ),
            (
                r#"{"event":"client-typing","channel":"private-a","data":{"x":[1, 2]}}"#,
                Ok(ClientEvent {
                    event: "client-typing".into(),
                    channel: "private-a".into(),
                    data: r#"{"x":[1, 2]}"#,
                }),
            ),
            (
                r#"{"event":"client-typing","channel":"private-a"}"#,
                Ok(ClientEvent {
                    event: "client-typing".into(),
                    channel: "private-a".into(),
                    data: "null",
                }),
            ),
            (
                r#"{"event":"client-typing","data":1}"#,
                Err(ProtocolError::ClientEventWithoutChannel),
            ),
            (
                r#"{"event":"pusher:connection_established"}"#,
                Err(ProtocolError::UnsupportedEvent),
            ),
            (
                r#"{"event":"my-event","channel":"chat"}"#,
                Err(ProtocolError::UnsupportedEvent),
            ),
            (r#"{"data":{}}"#, Err(ProtocolError::InvalidJson)),
            (r#"{"event":5}"#, Err(ProtocolError::InvalidJson)),
            ("[]", Err(ProtocolError::InvalidJson)),
            ("not json", Err(ProtocolError::InvalidJson)),
            ("", Err(ProtocolError::InvalidJson)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_client_message(text), expected, "{text}");
        }
    }

    #[test]
    fn channel_data_table() {
        type Parsed<'a> = Result<(&'a str, Option<&'a str>), ChannelDataError>;
        let cases: &[(&str, Parsed<'_>)] = &[
            (
                r#"{"user_id":"u1","user_info":{"name":"A"}}"#,
                Ok(("u1", Some(r#"{"name":"A"}"#))),
            ),
            (r#"{"user_id":10}"#, Ok(("10", None))),
            (r#"{"user_id":"u1","user_info":null}"#, Ok(("u1", None))),
            (r#"{"user_id":""}"#, Err(ChannelDataError::MissingUserId)),
            (r#"{"user_id":true}"#, Err(ChannelDataError::MissingUserId)),
            (r#"{"user_info":{}}"#, Err(ChannelDataError::MissingUserId)),
            ("[1]", Err(ChannelDataError::Invalid)),
            ("nope", Err(ChannelDataError::Invalid)),
        ];
        for &(text, expected) in cases {
            let got = parse_channel_data(text);
            let got = got
                .as_ref()
                .map(|m| (&*m.user_id, m.user_info.as_deref()))
                .map_err(|e| *e);
            assert_eq!(got, expected, "{text}");
        }
        assert_eq!(
            parse_channel_data(&format!(r#"{{"user_id":"{}"}}"#, "a".repeat(201))),
            Err(ChannelDataError::MissingUserId)
        );
    }

    #[test]
    fn user_data_id_table() {
        assert_eq!(
            parse_user_data_id(r#"{"id":"42","name":"x"}"#),
            Some("42".into())
        );
        assert_eq!(parse_user_data_id(r#"{"id":42}"#), None);
        assert_eq!(parse_user_data_id(r#"{"id":""}"#), None);
        assert_eq!(parse_user_data_id(r#"{"name":"x"}"#), None);
        assert_eq!(parse_user_data_id("x"), None);
        assert_eq!(parse_user_data_id(r#"["1"]"#), None);
        assert_eq!(parse_user_data_id(r#"{"id":"a/b"}"#), None);
    }

    #[test]
    fn server_messages_match_the_pusher_wire_format() {
        let f = connection_established(
            SocketId {
                high: 123,
                low: 456,
            },
            120,
        );
        assert_eq!(
            f.text(),
            r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"123.456\",\"activity_timeout\":120}"}"#
        );
        assert_eq!(
            subscription_succeeded("chat").text(),
            r#"{"event":"pusher_internal:subscription_succeeded","channel":"chat","data":"{}"}"#
        );
        assert_eq!(ping().text(), r#"{"event":"pusher:ping","data":"{}"}"#);
        assert_eq!(pong().text(), r#"{"event":"pusher:pong","data":"{}"}"#);
        assert_eq!(
            value(&error(Some(4301), "slow down")),
            json!({"event":"pusher:error","data":{"message":"slow down","code":4301}})
        );
        assert_eq!(
            value(&error(None, "x\"y")),
            json!({"event":"pusher:error","data":{"message":"x\"y","code":null}})
        );
        assert_eq!(
            cache_miss("cache-a").text(),
            r#"{"event":"pusher:cache_miss","channel":"cache-a"}"#
        );

        let signin = signin_success(r#"{"id":"1","n":"\"q"}"#);
        assert_eq!(value(&signin)["event"], "pusher:signin_success");
        assert_eq!(
            data(&signin),
            json!({"user_data": r#"{"id":"1","n":"\"q"}"#})
        );

        let err = subscription_error("private-a", "AuthError", "Invalid signature", 401);
        assert_eq!(value(&err)["channel"], "private-a");
        assert_eq!(
            data(&err),
            json!({"type":"AuthError","error":"Invalid signature","status":401})
        );
    }

    #[test]
    fn presence_messages() {
        let members = [("1", Some(r#"{"name":"A"}"#)), ("2", None)];
        let f = presence_subscription_succeeded("presence-r", members.into_iter());
        assert_eq!(value(&f)["event"], "pusher_internal:subscription_succeeded");
        assert_eq!(value(&f)["channel"], "presence-r");
        assert_eq!(
            data(&f),
            json!({"presence":{"ids":["1","2"],"hash":{"1":{"name":"A"},"2":null},"count":2}})
        );
        let empty = presence_subscription_succeeded("presence-r", std::iter::empty());
        assert_eq!(
            data(&empty),
            json!({"presence":{"ids":[],"hash":{},"count":0}})
        );

        let member = PresenceMember {
            user_id: "u\"1".into(),
            user_info: Some(r#"{"a":1}"#.into()),
        };
        let added = member_added("presence-r", &member);
        assert_eq!(value(&added)["event"], "pusher_internal:member_added");
        assert_eq!(data(&added), json!({"user_id":"u\"1","user_info":{"a":1}}));
        let bare = PresenceMember {
            user_id: "2".into(),
            user_info: None,
        };
        assert_eq!(
            data(&member_added("presence-r", &bare)),
            json!({"user_id":"2"})
        );
        let removed = member_removed("presence-r", "u\"1");
        assert_eq!(value(&removed)["event"], "pusher_internal:member_removed");
        assert_eq!(data(&removed), json!({"user_id":"u\"1"}));
    }
}
