//! What instances of a cluster tell each other through the broker, and on which subjects.
//!
//! A message is binary: a version byte, a kind byte, the origin instance's id (so the origin
//! can ignore its own message, having delivered locally already), the app id, then the kind's
//! fields. A publish carries the channel, the excluded socket id and the encoded Pusher frame
//! exactly as the origin's subscribers got it, so every receiving instance fans out the same
//! bytes through its encode-once path. Names travel in the body, not only in the subject, so
//! a subject's escaping never has to be undone.

use crate::pusher::{Frame, SocketId};

use super::counts::ChannelCount;

/// Format version; a message of another version is refused, counted and logged once.
const VERSION: u8 = 1;

/// Kind byte of an event published on a channel.
const KIND_PUBLISH: u8 = 1;

/// Kind byte of `terminate_connections` for a user.
const KIND_TERMINATE_USER: u8 = 2;

/// Kind byte of a user's first connection on an instance joining a presence channel.
const KIND_PRESENCE_JOIN: u8 = 3;

/// Kind byte of a user's last connection on an instance leaving a presence channel.
const KIND_PRESENCE_LEAVE: u8 = 4;

/// Kind byte of an instance asking the others for their members of a presence channel.
const KIND_PRESENCE_SYNC: u8 = 5;

/// Kind byte of an instance's whole member list of a presence channel.
const KIND_PRESENCE_STATE: u8 = 6;

/// Kind byte of an instance renewing the lease on its presence members.
const KIND_LEASE: u8 = 7;

/// Kind byte of one part of an instance's channel counts for an app.
const KIND_COUNTS: u8 = 8;

/// The subject every instance listens on for an app's user-wide messages; no channel can be
/// named so (a name starting with `#` is refused unless it is `#server-to-user-...`).
const USERS_SUBJECT: &str = "#users";

/// One message between instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireMessage {
    /// An event for the channel's subscribers on every instance.
    Publish {
        /// The instance that published it.
        origin: u64,
        /// The app's id (`AppConfig::id`): app indexes are per process.
        app: String,
        /// The channel.
        channel: String,
        /// A connection that must not get it.
        exclude: Option<SocketId>,
        /// The encoded event.
        frame: Frame,
    },
    /// Close every connection of the user (4009) on every instance.
    TerminateUser {
        /// The instance the request came to.
        origin: u64,
        /// The app's id.
        app: String,
        /// The user.
        user_id: String,
    },
    /// The origin now holds the user on the presence channel (its first connection there).
    PresenceJoin {
        /// The instance holding the user.
        origin: u64,
        /// The app's id.
        app: String,
        /// The presence channel.
        channel: String,
        /// The member.
        member: Member,
    },
    /// The origin no longer holds the user on the presence channel.
    PresenceLeave {
        /// The instance that held the user.
        origin: u64,
        /// The app's id.
        app: String,
        /// The presence channel.
        channel: String,
        /// The user.
        user_id: String,
    },
    /// The origin started listening on the presence channel and asks for everyone's members.
    PresenceSync {
        /// The asking instance.
        origin: u64,
        /// The app's id.
        app: String,
        /// The presence channel.
        channel: String,
    },
    /// Every member the origin holds on the presence channel, replacing what it said before.
    PresenceState {
        /// The instance holding them.
        origin: u64,
        /// The app's id.
        app: String,
        /// The presence channel.
        channel: String,
        /// The members.
        members: Vec<Member>,
    },
    /// The origin is alive: its presence members stay for another lease.
    Lease {
        /// The instance renewing.
        origin: u64,
        /// The app's id (the lease travels on each app's user subject).
        app: String,
    },
    /// One part of the origin's occupied channels of an app with their local counts; the
    /// parts of one generation together replace what it reported before.
    Counts {
        /// The instance reporting.
        origin: u64,
        /// The app's id.
        app: String,
        /// Tells one snapshot's parts from another's.
        generation: u64,
        /// The snapshot's last part.
        last: bool,
        /// The channels of this part.
        channels: Vec<ChannelCount>,
    },
}

/// A presence member as it travels: the user id and its `user_info` JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// The user id.
    pub(crate) user_id: String,
    /// The `user_info` object, raw JSON.
    pub(crate) user_info: Option<String>,
}

/// Why bytes from the broker were not a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireError {
    /// Another format version (an instance of another release).
    Version(u8),
    /// Cut short, an unknown kind, a name that is not UTF-8 or a frame that is not one.
    Malformed,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Version(v) => write!(f, "message format version {v}, expected {VERSION}"),
            Self::Malformed => f.write_str("malformed message"),
        }
    }
}

impl WireMessage {
    /// The instance that sent it.
    pub(crate) fn origin(&self) -> u64 {
        match self {
            Self::Publish { origin, .. }
            | Self::TerminateUser { origin, .. }
            | Self::PresenceJoin { origin, .. }
            | Self::PresenceLeave { origin, .. }
            | Self::PresenceSync { origin, .. }
            | Self::PresenceState { origin, .. }
            | Self::Lease { origin, .. }
            | Self::Counts { origin, .. } => *origin,
        }
    }

    /// The bytes to publish.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Publish {
                origin,
                app,
                channel,
                exclude,
                frame,
            } => {
                out.reserve(40 + app.len() + channel.len() + frame.as_bytes().len());
                head(&mut out, KIND_PUBLISH, *origin, app);
                name(&mut out, channel);
                match exclude {
                    Some(id) => {
                        out.push(1);
                        out.extend_from_slice(&id.high.to_le_bytes());
                        out.extend_from_slice(&id.low.to_le_bytes());
                    }
                    None => out.push(0),
                }
                out.extend_from_slice(frame.as_bytes());
            }
            Self::TerminateUser {
                origin,
                app,
                user_id,
            } => {
                head(&mut out, KIND_TERMINATE_USER, *origin, app);
                out.extend_from_slice(user_id.as_bytes());
            }
            Self::PresenceJoin {
                origin,
                app,
                channel,
                member,
            } => {
                head(&mut out, KIND_PRESENCE_JOIN, *origin, app);
                name(&mut out, channel);
                encode_member(&mut out, member);
            }
            Self::PresenceLeave {
                origin,
                app,
                channel,
                user_id,
            } => {
                head(&mut out, KIND_PRESENCE_LEAVE, *origin, app);
                name(&mut out, channel);
                name(&mut out, user_id);
            }
            Self::PresenceSync {
                origin,
                app,
                channel,
            } => {
                head(&mut out, KIND_PRESENCE_SYNC, *origin, app);
                name(&mut out, channel);
            }
            Self::PresenceState {
                origin,
                app,
                channel,
                members,
            } => {
                head(&mut out, KIND_PRESENCE_STATE, *origin, app);
                name(&mut out, channel);
                for member in members {
                    encode_member(&mut out, member);
                }
            }
            Self::Lease { origin, app } => head(&mut out, KIND_LEASE, *origin, app),
            Self::Counts {
                origin,
                app,
                generation,
                last,
                channels,
            } => {
                head(&mut out, KIND_COUNTS, *origin, app);
                out.extend_from_slice(&generation.to_le_bytes());
                out.push(u8::from(*last));
                for count in channels {
                    name(&mut out, &count.channel);
                    out.extend_from_slice(&count.subscriptions.to_le_bytes());
                    out.extend_from_slice(&count.users.to_le_bytes());
                }
            }
        }
        out
    }

    /// Reads a message back.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader(bytes);
        let version = r.byte()?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let kind = r.byte()?;
        let origin = u64::from_le_bytes(r.take(8)?.try_into().map_err(|_| WireError::Malformed)?);
        let app = r.name()?;
        match kind {
            KIND_PUBLISH => {
                let channel = r.name()?;
                let exclude = match r.byte()? {
                    0 => None,
                    1 => {
                        let high = r.take(4)?.try_into().map_err(|_| WireError::Malformed)?;
                        let low = r.take(8)?.try_into().map_err(|_| WireError::Malformed)?;
                        Some(SocketId {
                            high: u32::from_le_bytes(high),
                            low: u64::from_le_bytes(low),
                        })
                    }
                    _ => return Err(WireError::Malformed),
                };
                let frame = Frame::from_wire(r.0).ok_or(WireError::Malformed)?;
                Ok(Self::Publish {
                    origin,
                    app,
                    channel,
                    exclude,
                    frame,
                })
            }
            KIND_TERMINATE_USER => Ok(Self::TerminateUser {
                origin,
                app,
                user_id: std::str::from_utf8(r.0)
                    .map_err(|_| WireError::Malformed)?
                    .to_owned(),
            }),
            KIND_PRESENCE_JOIN => Ok(Self::PresenceJoin {
                origin,
                app,
                channel: r.name()?,
                member: r.member()?,
            }),
            KIND_PRESENCE_LEAVE => Ok(Self::PresenceLeave {
                origin,
                app,
                channel: r.name()?,
                user_id: r.name()?,
            }),
            KIND_PRESENCE_SYNC => Ok(Self::PresenceSync {
                origin,
                app,
                channel: r.name()?,
            }),
            KIND_PRESENCE_STATE => {
                let channel = r.name()?;
                let mut members = Vec::new();
                while !r.0.is_empty() {
                    members.push(r.member()?);
                }
                Ok(Self::PresenceState {
                    origin,
                    app,
                    channel,
                    members,
                })
            }
            KIND_LEASE => Ok(Self::Lease { origin, app }),
            KIND_COUNTS => {
                let generation = r.u64()?;
                let last = match r.byte()? {
                    0 => false,
                    1 => true,
                    _ => return Err(WireError::Malformed),
                };
                let mut channels = Vec::new();
                while !r.0.is_empty() {
                    channels.push(ChannelCount {
                        channel: r.name()?,
                        subscriptions: r.u64()?,
                        users: r.u64()?,
                    });
                }
                Ok(Self::Counts {
                    origin,
                    app,
                    generation,
                    last,
                    channels,
                })
            }
            _ => Err(WireError::Malformed),
        }
    }
}

fn head(out: &mut Vec<u8>, kind: u8, origin: u64, app: &str) {
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&origin.to_le_bytes());
    name(out, app);
}

/// A name, length first (two bytes: app ids and channel names are far shorter than 64 KiB).
fn name(out: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A member: its user id as a name, then its `user_info` as a flag and a four-byte length.
fn encode_member(out: &mut Vec<u8>, member: &Member) {
    name(out, &member.user_id);
    match &member.user_info {
        Some(info) => {
            out.push(1);
            out.extend_from_slice(&u32::try_from(info.len()).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(info.as_bytes());
        }
        None => out.push(0),
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let (taken, rest) = self.0.split_at_checked(n).ok_or(WireError::Malformed)?;
        self.0 = rest;
        Ok(taken)
    }

    fn byte(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        let bytes = self.take(8)?.try_into().map_err(|_| WireError::Malformed)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn member(&mut self) -> Result<Member, WireError> {
        let user_id = self.name()?;
        let user_info = match self.byte()? {
            0 => None,
            1 => {
                let len = self.take(4)?;
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]);
                let info = self.take(usize::try_from(len).map_err(|_| WireError::Malformed)?)?;
                let info = std::str::from_utf8(info).map_err(|_| WireError::Malformed)?;
                Some(info.to_owned())
            }
            _ => return Err(WireError::Malformed),
        };
        Ok(Member { user_id, user_info })
    }

    fn name(&mut self) -> Result<String, WireError> {
        let len = self.take(2)?;
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let text = std::str::from_utf8(self.take(len)?).map_err(|_| WireError::Malformed)?;
        Ok(text.to_owned())
    }
}

/// How a broker spells subjects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subjects {
    /// Redis channels are binary-safe: `{prefix}:{app}:{channel}` as written.
    Redis,
    /// NATS subjects are dot-separated tokens with `*` and `>` as wildcards and no spaces:
    /// `{prefix}.{app}.{channel}` with each part escaped.
    Nats,
}

impl Subjects {
    /// The subject of one channel of one app.
    pub(crate) fn channel(self, prefix: &str, app: &str, channel: &str) -> String {
        match self {
            Self::Redis => format!("{prefix}:{app}:{channel}"),
            Self::Nats => format!("{prefix}.{}.{}", nats_token(app), nats_token(channel)),
        }
    }

    /// The subject of an app's user-wide messages (`terminate_connections`).
    pub(crate) fn users(self, prefix: &str, app: &str) -> String {
        self.channel(prefix, app, USERS_SUBJECT)
    }
}

/// One NATS subject token: `%XX` for `.`, `*`, `>`, `%` and every byte that is not printable
/// ASCII, so no name can add a token or a wildcard, and distinct names stay distinct.
fn nats_token(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>' | b'%') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pusher::encode_event_frame;

    fn publish(exclude: Option<SocketId>) -> WireMessage {
        WireMessage::Publish {
            origin: 0xdead_beef_0000_0001,
            app: "app-1".into(),
            channel: "presence-room.1".into(),
            exclude,
            frame: encode_event_frame("e", "presence-room.1", "{\"a\":1}", None),
        }
    }

    #[test]
    fn messages_round_trip() {
        let exclude = Some(SocketId {
            high: 123_004,
            low: (7 << 32) | 9,
        });
        let messages = [
            publish(None),
            publish(exclude),
            WireMessage::TerminateUser {
                origin: 5,
                app: "1".into(),
                user_id: "user ü".into(),
            },
            WireMessage::PresenceJoin {
                origin: 6,
                app: "1".into(),
                channel: "presence-r".into(),
                member: Member {
                    user_id: "u".into(),
                    user_info: Some("{\"n\":1}".into()),
                },
            },
            WireMessage::PresenceLeave {
                origin: 7,
                app: "1".into(),
                channel: "presence-r".into(),
                user_id: "u".into(),
            },
            WireMessage::PresenceSync {
                origin: 8,
                app: "1".into(),
                channel: "presence-r".into(),
            },
            WireMessage::PresenceState {
                origin: 9,
                app: "1".into(),
                channel: "presence-r".into(),
                members: vec![
                    Member {
                        user_id: "a".into(),
                        user_info: None,
                    },
                    Member {
                        user_id: "b".into(),
                        user_info: Some("{}".into()),
                    },
                ],
            },
            WireMessage::Lease {
                origin: 10,
                app: "1".into(),
            },
            WireMessage::Counts {
                origin: 11,
                app: "1".into(),
                generation: 3,
                last: true,
                channels: vec![
                    ChannelCount {
                        channel: "presence-r".into(),
                        subscriptions: 4,
                        users: 2,
                    },
                    ChannelCount {
                        channel: "a".into(),
                        subscriptions: 1,
                        users: 0,
                    },
                ],
            },
        ];
        for message in messages {
            let bytes = message.encode();
            assert_eq!(WireMessage::decode(&bytes), Ok(message.clone()));
        }
    }

    #[test]
    fn damaged_messages_are_refused() {
        let bytes = publish(None).encode();
        for cut in [0, 1, 5, 12, 20, bytes.len() - 1] {
            assert!(WireMessage::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut other = bytes.clone();
        other[0] = 9;
        assert_eq!(WireMessage::decode(&other), Err(WireError::Version(9)));
        let mut kind = bytes;
        kind[1] = 77;
        assert_eq!(WireMessage::decode(&kind), Err(WireError::Malformed));
    }

    #[test]
    fn subjects_per_broker() {
        assert_eq!(Subjects::Redis.channel("rc", "1", "a.b"), "rc:1:a.b");
        assert_eq!(Subjects::Redis.users("rc", "1"), "rc:1:#users");
        assert_eq!(
            Subjects::Nats.channel("rc", "a.1", "private-x.*>%y z"),
            "rc.a%2E1.private-x%2E%2A%3E%25y%20z"
        );
        assert_eq!(Subjects::Nats.users("rc", "1"), "rc.1.#users");
        assert_ne!(
            Subjects::Nats.channel("rc", "1", "a.b"),
            Subjects::Nats.channel("rc", "1", "a%2Eb"),
            "escaping keeps distinct names distinct"
        );
    }
}
