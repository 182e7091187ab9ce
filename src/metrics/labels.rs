//! The label values of ringcast's metrics, each a closed enum so every family has a bounded,
//! known set of series and a counter is an index into a fixed array.

/// Why a connection attempt was refused before it became a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RejectReason {
    /// The process holds its configured maximum of connections (503, or Pusher 4100).
    Capacity,
    /// The source address holds its maximum of connections (by default 1000 per IP,
    /// docs/operations.md).
    PerIp,
    /// The source address opens handshakes faster than its allowed rate.
    Rate,
    /// The source address holds its maximum of connections that have not sent their request
    /// head yet (429 at accept).
    PendingHandshakes,
    /// The request head was not a valid WebSocket upgrade (4xx answer).
    HandshakeError,
    /// The request head did not arrive before the handshake deadline.
    HandshakeTimeout,
    /// The `Origin` is not allowed.
    Origin,
    /// The server is draining and takes no new connections.
    Draining,
}

impl RejectReason {
    /// How many reasons there are: the length of the counter array.
    pub(crate) const COUNT: usize = 8;
    /// Every reason, in exposition order.
    pub(crate) const ALL: [Self; Self::COUNT] = [
        Self::Capacity,
        Self::PerIp,
        Self::Rate,
        Self::PendingHandshakes,
        Self::HandshakeError,
        Self::HandshakeTimeout,
        Self::Origin,
        Self::Draining,
    ];

    /// The `reason` label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Capacity => "capacity",
            Self::PerIp => "per_ip",
            Self::Rate => "rate",
            Self::PendingHandshakes => "pending_handshakes",
            Self::HandshakeError => "handshake_error",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::Origin => "origin",
            Self::Draining => "draining",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Why an established WebSocket connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum DisconnectReason {
    /// The client sent a close frame.
    ClientClose,
    /// The socket ended (EOF, reset) without a close handshake.
    ConnectionLost,
    /// The client broke RFC 6455 or the Pusher protocol (1002, 1003, 1007).
    ProtocolError,
    /// A frame or message over the size limit (1009).
    MessageTooBig,
    /// A policy limit other than size: fragments, control-frame flood (1008).
    Policy,
    /// The client exceeded its message rate.
    RateLimit,
    /// No pong before the pong deadline (1011, Pusher 4201).
    PongTimeout,
    /// No traffic at all for the idle timeout.
    IdleTimeout,
    /// The outbox crossed its cap (Pusher 4100, echo 1008).
    SlowConsumer,
    /// The server drained on shutdown (1001, Pusher 4200).
    Drain,
    /// The application refused the connection (unknown app, disabled app, bad version).
    Application,
    /// A socket error or an internal failure (1011).
    ServerError,
}

impl DisconnectReason {
    /// How many reasons there are: the first dimension of the counter array.
    pub(crate) const COUNT: usize = 12;
    /// Every reason, in exposition order.
    pub(crate) const ALL: [Self; Self::COUNT] = [
        Self::ClientClose,
        Self::ConnectionLost,
        Self::ProtocolError,
        Self::MessageTooBig,
        Self::Policy,
        Self::RateLimit,
        Self::PongTimeout,
        Self::IdleTimeout,
        Self::SlowConsumer,
        Self::Drain,
        Self::Application,
        Self::ServerError,
    ];

    /// The `reason` label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ClientClose => "client_close",
            Self::ConnectionLost => "connection_lost",
            Self::ProtocolError => "protocol_error",
            Self::MessageTooBig => "message_too_big",
            Self::Policy => "policy",
            Self::RateLimit => "rate_limit",
            Self::PongTimeout => "pong_timeout",
            Self::IdleTimeout => "idle_timeout",
            Self::SlowConsumer => "slow_consumer",
            Self::Drain => "drain",
            Self::Application => "application",
            Self::ServerError => "server_error",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Why a connection was cut off as a slow consumer (`ringcast_slow_consumer_closes_total`'s
/// `reason`): the three ways its outbox can pin memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SlowConsumerCause {
    /// The outbox crossed `max_outbox_bytes` (close 1008, Pusher 4100).
    OutboxFull,
    /// Bytes waited and the socket took none for `write_stall_timeout`.
    WriteStall,
    /// Bytes waited and the socket took fewer than `min_drain_rate` over `write_stall_timeout`.
    SlowDrain,
}

impl SlowConsumerCause {
    /// How many causes there are: the length of the counter array.
    pub(crate) const COUNT: usize = 3;
    /// Every cause, in exposition order.
    pub(crate) const ALL: [Self; Self::COUNT] =
        [Self::OutboxFull, Self::WriteStall, Self::SlowDrain];

    /// The `reason` label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::OutboxFull => "outbox_full",
            Self::WriteStall => "write_stall",
            Self::SlowDrain => "slow_drain",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Close codes given their own `code` label value: the codes of RFC 6455 7.4.1 a peer may send,
/// and the Pusher protocol v7 close codes ringcast sends. Any other code counts as `other`, so a
/// client cannot grow the number of series by sending arbitrary codes in 3000-4999.
pub(crate) const LABELLED_CLOSE_CODES: [u16; 25] = [
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 4000, 4001, 4003, 4004,
    4005, 4006, 4007, 4008, 4009, 4100, 4200, 4201, 4202,
];

/// The `code` label of a disconnect: a close code from [`LABELLED_CLOSE_CODES`], `other`, or
/// `none` when the connection ended without a close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CloseCodeLabel(u8);

impl CloseCodeLabel {
    /// How many label values there are: the second dimension of the counter array.
    pub(crate) const COUNT: usize = LABELLED_CLOSE_CODES.len() + 2;
    const OTHER: u8 = LABELLED_CLOSE_CODES.len() as u8;
    const NONE: u8 = Self::OTHER + 1;

    /// The label of a close code, `None` meaning no close frame was exchanged.
    pub(crate) fn of(code: Option<u16>) -> Self {
        match code {
            None => Self(Self::NONE),
            Some(code) => match LABELLED_CLOSE_CODES.iter().position(|&c| c == code) {
                // The position is below LABELLED_CLOSE_CODES.len(), which fits u8 (checked by
                // the `OTHER` constant above).
                Some(at) => Self(at as u8),
                None => Self(Self::OTHER),
            },
        }
    }

    /// Every label value, in exposition order.
    pub(crate) fn all() -> impl Iterator<Item = Self> {
        (0..Self::COUNT as u8).map(Self)
    }

    /// The label value written to the exposition.
    pub(crate) fn to_label(self) -> String {
        match LABELLED_CLOSE_CODES.get(usize::from(self.0)) {
            Some(code) => code.to_string(),
            None if self.0 == Self::OTHER => "other".to_owned(),
            None => "none".to_owned(),
        }
    }

    pub(crate) fn index(self) -> usize {
        usize::from(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_match_the_all_arrays() {
        for (at, reason) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), at);
        }
        for (at, reason) in DisconnectReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), at);
        }
        let labels: Vec<String> = CloseCodeLabel::all()
            .map(CloseCodeLabel::to_label)
            .collect();
        assert_eq!(labels.len(), CloseCodeLabel::COUNT);
        let mut unique = labels.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), labels.len(), "label values are distinct");
    }

    #[test]
    fn close_code_labels() {
        let cases = [
            (None, "none"),
            (Some(1000), "1000"),
            (Some(1009), "1009"),
            (Some(4100), "4100"),
            (Some(4201), "4201"),
            (Some(3999), "other"),
            (Some(1005), "other"),
            (Some(u16::MAX), "other"),
        ];
        for (code, label) in cases {
            let value = CloseCodeLabel::of(code);
            assert_eq!(value.to_label(), label, "{code:?}");
            assert!(value.index() < CloseCodeLabel::COUNT);
        }
    }
}
