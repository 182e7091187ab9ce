//! The close codes a Pusher connection can end with (4000-4299) and the `pusher:error` codes,
//! as the Pusher protocol documents them. pusher-js decides from the range what to do next:
//! 4000-4099 do not reconnect, 4100-4199 reconnect after a back-off, 4200-4299 reconnect now.

/// A Pusher close code, sent in a `pusher:error` and then in the WebSocket close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum CloseCode {
    /// 4001: no app has the key in the connection path.
    AppDoesNotExist = 4001,
    /// 4003: the app exists but is disabled.
    AppDisabled = 4003,
    /// 4004: the app is at its connection limit.
    OverConnectionQuota = 4004,
    /// 4005: the connection path is not `/app/{key}`.
    PathNotFound = 4005,
    /// 4006: the `protocol` query parameter is not a number.
    InvalidVersionFormat = 4006,
    /// 4007: the protocol version is outside the supported range.
    UnsupportedProtocolVersion = 4007,
    /// 4008: the `protocol` query parameter is missing.
    NoProtocolVersion = 4008,
    /// 4009: user authentication (`pusher:signin`) failed.
    Unauthorized = 4009,
    /// 4100: the server is over capacity; clients back off and retry.
    OverCapacity = 4100,
    /// 4200: the server is going away (drain); clients reconnect at once.
    Reconnect = 4200,
    /// 4201: the client did not answer a `pusher:ping` in time.
    PongNotReceived = 4201,
    /// 4202: the connection was closed for inactivity.
    ClosedAfterInactivity = 4202,
}

impl CloseCode {
    /// The numeric code for the close frame and the `pusher:error`.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The human-readable reason, as Pusher words it.
    pub fn reason(self) -> &'static str {
        match self {
            Self::AppDoesNotExist => "App key does not exist",
            Self::AppDisabled => "App is disabled",
            Self::OverConnectionQuota => "App is over its connection quota",
            Self::PathNotFound => "Path not found",
            Self::InvalidVersionFormat => "Invalid version string format",
            Self::UnsupportedProtocolVersion => "Unsupported protocol version",
            Self::NoProtocolVersion => "No protocol version supplied",
            Self::Unauthorized => "Connection is unauthorized",
            Self::OverCapacity => "Over capacity",
            Self::Reconnect => "Server is restarting, reconnect",
            Self::PongNotReceived => "Pong reply not received",
            Self::ClosedAfterInactivity => "Closed after inactivity",
        }
    }
}

impl From<CloseCode> for crate::ws::CloseCode {
    /// The code for the WebSocket close frame that ends a Pusher connection.
    fn from(code: CloseCode) -> Self {
        Self(code.code())
    }
}

/// `pusher:error` code for a client event dropped by the per-connection rate limit; the
/// connection stays open (4300-4399 are errors that do not close).
pub(super) const CLIENT_EVENT_RATE_LIMIT: u16 = 4301;

/// A Pusher limit a request was refused at: the connection stays open, the client gets a
/// `pusher:subscription_error` of type `LimitReached`, and the shard counts the refusal in
/// `ringcast_pusher_limit_refusals_total{limit}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// The connection holds the app's `max_subscriptions_per_connection`.
    SubscriptionsPerConnection,
    /// The app has `max_channels` channels occupied.
    ChannelsPerApp,
    /// The presence channel has `max_presence_members` users.
    PresenceMembers,
    /// The member's `user_info` is over `max_presence_user_info_bytes`.
    PresenceUserInfo,
}

impl Limit {
    /// How many limits there are: the length of the metric's counter array.
    pub const COUNT: usize = 4;
    /// Every limit, in exposition order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::SubscriptionsPerConnection,
        Self::ChannelsPerApp,
        Self::PresenceMembers,
        Self::PresenceUserInfo,
    ];

    /// The `limit` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SubscriptionsPerConnection => "subscriptions_per_connection",
            Self::ChannelsPerApp => "channels_per_app",
            Self::PresenceMembers => "presence_members",
            Self::PresenceUserInfo => "presence_user_info",
        }
    }

    /// The limit's place in [`Limit::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `status` of the `pusher:subscription_error`: 4100 (over capacity, as Pusher's
    /// close code says: retrying later may succeed) when the app or channel is full, 400 when
    /// the request itself is over the limit and will never pass.
    pub fn status(self) -> u16 {
        match self {
            Self::ChannelsPerApp | Self::PresenceMembers => CloseCode::OverCapacity.code(),
            Self::SubscriptionsPerConnection | Self::PresenceUserInfo => 400,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_sit_in_the_ranges_clients_act_on() {
        let no_reconnect = [
            CloseCode::AppDoesNotExist,
            CloseCode::AppDisabled,
            CloseCode::OverConnectionQuota,
            CloseCode::PathNotFound,
            CloseCode::InvalidVersionFormat,
            CloseCode::UnsupportedProtocolVersion,
            CloseCode::NoProtocolVersion,
            CloseCode::Unauthorized,
        ];
        for code in no_reconnect {
            assert!((4000..4100).contains(&code.code()), "{code:?}");
        }
        assert_eq!(CloseCode::OverCapacity.code(), 4100);
        assert_eq!(
            crate::ws::CloseCode::from(CloseCode::PongNotReceived),
            crate::ws::CloseCode(4201)
        );
        assert!(crate::ws::CloseCode::from(CloseCode::Unauthorized).is_allowed_from_peer());
        for code in [
            CloseCode::Reconnect,
            CloseCode::PongNotReceived,
            CloseCode::ClosedAfterInactivity,
        ] {
            assert!((4200..4300).contains(&code.code()), "{code:?}");
            assert!(!code.reason().is_empty());
        }
    }
}
