//! Channel names: what kind a name denotes (by prefix), which names are valid, and the ids the
//! shard's channel table hands out so a connection can remember its channels in 4 bytes each.

/// Longest channel name accepted, in bytes (Pusher's documented limit).
pub(super) const MAX_CHANNEL_NAME: usize = 164;

/// Prefix of the per-user channels server-to-user events travel on; clients may not subscribe.
pub(super) const SERVER_TO_USER_PREFIX: &str = "#server-to-user-";

/// A channel's index in the owning shard's channel table. Ids are the shard's to assign; the
/// session only stores and returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u32);

/// The part of the shard's channel table a session needs: names to ids. A session keeps the
/// ids of its subscriptions, so an id must keep naming the same channel while any connection is
/// subscribed to it; the shard may drop and reuse it once the channel has no subscribers.
pub trait ChannelRegistry {
    /// The id for `name`, creating the table entry if the channel has none yet.
    fn intern(&mut self, name: &str) -> ChannelId;
    /// The id of an existing channel, `None` when the shard has no entry for it.
    fn find(&self, name: &str) -> Option<ChannelId>;
    /// What the whole process holds of the channel and its app, for the app's channel and
    /// presence caps; `user_id` is the presence member asking to join. A table that sees only
    /// its own shard (or a test's) may answer [`Occupancy::default`]: nothing is full.
    fn occupancy(&self, name: &str, user_id: Option<&str>) -> Occupancy {
        let _ = (name, user_id);
        Occupancy::default()
    }
}

/// The process-wide facts a new subscription is judged by against the app's limits
/// ([`ChannelRegistry::occupancy`]). Read without holding anything, so shards subscribing at
/// the same instant may each pass a cap that has one place left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// Whether the channel is already occupied (joining it opens no new channel).
    pub channel_exists: bool,
    /// Channels the app has occupied.
    pub app_channels: u32,
    /// Distinct users on the channel, for a presence channel.
    pub members: u32,
    /// Whether the joining user is already one of them (another device of theirs).
    pub is_member: bool,
}

/// Who may subscribe to a channel and what it carries, decided by the name's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone may subscribe.
    Public,
    /// `private-`: a signature over `socket_id:channel` is required.
    Private,
    /// `private-encrypted-`: as private; payloads are end-to-end encrypted, ringcast only relays.
    PrivateEncrypted,
    /// `presence-`: a signature over `socket_id:channel:channel_data`; members are announced.
    Presence,
}

/// A channel's kind: its access and whether it is a cache channel (the last event is replayed
/// to each new subscriber).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelKind {
    /// Who may subscribe.
    pub access: Access,
    /// Whether the last event is kept and replayed (`cache-`, `private-cache-`, ...).
    pub cache: bool,
}

/// Prefixes from the most to the least specific, so the first match wins.
const PREFIXES: &[(&str, Access, bool)] = &[
    ("private-encrypted-cache-", Access::PrivateEncrypted, true),
    ("private-encrypted-", Access::PrivateEncrypted, false),
    ("private-cache-", Access::Private, true),
    ("private-", Access::Private, false),
    ("presence-cache-", Access::Presence, true),
    ("presence-", Access::Presence, false),
    ("cache-", Access::Public, true),
];

impl ChannelKind {
    /// The kind `name` denotes.
    pub fn of(name: &str) -> Self {
        PREFIXES
            .iter()
            .find(|(prefix, _, _)| name.starts_with(prefix))
            .map_or(
                Self {
                    access: Access::Public,
                    cache: false,
                },
                |&(_, access, cache)| Self { access, cache },
            )
    }

    /// Whether subscribing needs a signature from the app's auth endpoint.
    pub fn needs_auth(self) -> bool {
        self.access != Access::Public
    }

    /// Whether this is a presence channel.
    pub fn is_presence(self) -> bool {
        self.access == Access::Presence
    }

    /// Whether clients may send `client-*` events on it (private and presence only; pusher-js
    /// refuses them on encrypted channels, and relaying them unencrypted would defeat the point).
    pub fn allows_client_events(self) -> bool {
        matches!(self.access, Access::Private | Access::Presence)
    }
}

/// Why a channel name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChannelNameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_CHANNEL_NAME`].
    TooLong,
    /// The name uses a character outside `[A-Za-z0-9_\-=@,.;]`.
    InvalidCharacter,
    /// The name is a server-to-user channel, which only the server may use.
    Reserved,
}

impl ChannelNameError {
    /// The message sent to the client or API caller.
    pub(super) fn message(self) -> &'static str {
        match self {
            Self::Empty => "Channel name is empty",
            Self::TooLong => "Channel name is longer than 164 characters",
            Self::InvalidCharacter => {
                "Channel name contains invalid characters (allowed: A-Z a-z 0-9 _ - = @ , . ;)"
            }
            Self::Reserved => "Channels starting with #server-to-user- are reserved",
        }
    }
}

/// Checks a channel name a client or the API names: length, characters, reserved prefix.
pub(super) fn validate_channel_name(name: &str) -> Result<(), ChannelNameError> {
    if name.is_empty() {
        return Err(ChannelNameError::Empty);
    }
    if name.len() > MAX_CHANNEL_NAME {
        return Err(ChannelNameError::TooLong);
    }
    if name.starts_with(SERVER_TO_USER_PREFIX) {
        return Err(ChannelNameError::Reserved);
    }
    if !name.bytes().all(is_channel_byte) {
        return Err(ChannelNameError::InvalidCharacter);
    }
    Ok(())
}

/// Whether `b` may appear in a channel name (and a user id, which follows the same rule).
pub(crate) fn is_channel_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=' | b'@' | b',' | b'.' | b';')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_prefix() {
        use Access::*;
        let cases = [
            ("chat", Public, false),
            ("cache-chat", Public, true),
            ("private-chat", Private, false),
            ("private-cache-chat", Private, true),
            ("private-encrypted-chat", PrivateEncrypted, false),
            ("private-encrypted-cache-chat", PrivateEncrypted, true),
            ("presence-room", Presence, false),
            ("presence-cache-room", Presence, true),
            ("privatechat", Public, false),
            ("presence", Public, false),
            ("my-private-chat", Public, false),
        ];
        for (name, access, cache) in cases {
            assert_eq!(
                ChannelKind::of(name),
                ChannelKind { access, cache },
                "{name}"
            );
        }
        assert!(!ChannelKind::of("chat").needs_auth());
        assert!(ChannelKind::of("private-encrypted-x").needs_auth());
        assert!(!ChannelKind::of("private-encrypted-x").allows_client_events());
        assert!(ChannelKind::of("presence-cache-x").allows_client_events());
        assert!(!ChannelKind::of("cache-x").allows_client_events());
    }

    #[test]
    fn name_validation_table() {
        let long_ok = "a".repeat(MAX_CHANNEL_NAME);
        let too_long = "a".repeat(MAX_CHANNEL_NAME + 1);
        let cases: &[(&str, Result<(), ChannelNameError>)] = &[
            ("chat", Ok(())),
            ("A-z_0-9=@,.;", Ok(())),
            (&long_ok, Ok(())),
            (&too_long, Err(ChannelNameError::TooLong)),
            ("", Err(ChannelNameError::Empty)),
            ("has space", Err(ChannelNameError::InvalidCharacter)),
            ("slash/", Err(ChannelNameError::InvalidCharacter)),
            ("é", Err(ChannelNameError::InvalidCharacter)),
            ("#server-to-user-42", Err(ChannelNameError::Reserved)),
            ("#other", Err(ChannelNameError::InvalidCharacter)),
        ];
        for (name, expected) in cases {
            assert_eq!(validate_channel_name(name), *expected, "{name:?}");
        }
    }
}
