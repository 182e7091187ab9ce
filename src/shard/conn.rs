//! One connection's state: a slab entry, not a task. It holds no read buffer (reads are lent
//! by the driver), no timer object (its one deadline is derived from the fields below and filed
//! in the shard's wheel), and heap memory only while it is needed: the request-head reader
//! until the upgrade, the WebSocket decoder's buffers while a frame is split, the outbox's
//! queue while frames wait.

use crate::http::HeadReader;
use crate::limits::TokenBucket;
use crate::ws;

use super::outbox::Outbox;
use super::wheel::Tick;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading the HTTP request head, under the handshake deadline.
    Handshake,
    /// WebSocket open: messages flow, pings keep it honest.
    Open,
    /// We sent a close frame and wait for the peer's, under the close deadline.
    Closing,
    /// Nothing more is read; the socket closes once the outbox is sent (or the close deadline
    /// passes first).
    Flushing,
}

/// What a connection serves, from the routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Not routed yet (handshake).
    None,
    /// Echo every text and binary message.
    Echo,
    /// The dashboard feed: one metrics frame a second, what the client sends is ignored.
    Feed,
    /// A Pusher protocol v7 connection (`/app/{key}`); its session lives in the shard's
    /// session map.
    Pusher,
}

/// Bit set of [`Conn::flags`].
pub(crate) mod flags {
    /// A send is in flight in the driver; the next waits for its completion.
    pub(crate) const SEND_IN_FLIGHT: u8 = 1 << 0;
    /// We pinged and no byte has arrived since.
    pub(crate) const PING_OUTSTANDING: u8 = 1 << 1;
    /// Close the socket at the next flush, whatever is queued.
    pub(crate) const CLOSE_NOW: u8 = 1 << 2;
    /// A slow consumer's close frame waits for the send in flight: when it completes, the
    /// frames it did not start are dropped and the close frame is the next write.
    pub(crate) const CLOSE_AFTER_SEND: u8 = 1 << 3;
}

/// Disconnect reasons a connection can carry before it is removed, as a
/// [`crate::metrics::DisconnectReason`] index; 0 (client close) is overwritten by the first
/// reason the server finds, and a connection that ends with none set counts as lost.
pub(crate) const NO_REASON: u8 = u8::MAX;

/// Marks "no wheel entry filed".
pub(crate) const NOT_FILED: Tick = Tick::MAX;

/// A connection.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Life phase.
    pub phase: Phase,
    /// What it serves.
    pub route: Route,
    /// [`flags`] bits.
    pub flags: u8,
    /// Tick of the earliest wheel entry filed for this connection, or [`NOT_FILED`]. An entry
    /// that fires with another tick is a leftover and is ignored.
    pub wheel_due: Tick,
    /// Tick of the last byte received.
    pub last_rx: Tick,
    /// Tick the current phase (or the outstanding ping) started; its deadline counts from here.
    pub since: Tick,
    /// Start tick of the window inbound control frames are counted in.
    pub control_window: Tick,
    /// Inbound Ping and Pong frames in the current window (saturating).
    pub control_frames: u8,
    /// The request-head reader, boxed and present only during the handshake.
    pub head: Option<Box<HeadReader>>,
    /// WebSocket decoder state.
    pub ws: ws::Connection,
    /// Data messages the client may still send (`max_messages_per_sec`).
    pub msg_bucket: TokenBucket,
    /// Payload bytes the client may still send (`max_bytes_per_sec`).
    pub byte_bucket: TokenBucket,
    /// Tick the current drain window started (the outbox went from empty to non-empty, or the
    /// previous window passed with enough progress): the write-stall deadline counts from here
    /// while bytes wait.
    pub drain_since: Tick,
    /// Bytes the socket took since `drain_since` (saturating), judged against `min_drain_rate`
    /// when the window ends.
    pub drained: u32,
    /// The close code sent or received, for the disconnect metric; 0 when none.
    pub close_code: u16,
    /// Why the connection is ending ([`NO_REASON`] until known).
    pub reason: u8,
    /// Frames waiting for the socket.
    pub outbox: Outbox,
}

impl Conn {
    /// A connection just accepted at tick `now`.
    pub(crate) fn new(now: Tick) -> Self {
        Self {
            phase: Phase::Handshake,
            route: Route::None,
            flags: 0,
            wheel_due: NOT_FILED,
            last_rx: now,
            since: now,
            control_window: now,
            control_frames: 0,
            head: None,
            ws: ws::Connection::new(ws::Role::Server),
            msg_bucket: TokenBucket::full(0, now),
            byte_bucket: TokenBucket::full(0, now),
            drain_since: now,
            drained: 0,
            close_code: 0,
            reason: NO_REASON,
            outbox: Outbox::default(),
        }
    }

    /// Whether `flag` is set.
    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Enters `phase` at tick `now`.
    pub(crate) fn enter(&mut self, phase: Phase, now: Tick) {
        self.phase = phase;
        self.since = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_entry_fits_the_inline_budget() {
        // At most 256 bytes inline per connection, slab entry included (the memory budget in
        // `docs/benchmarks.md`).
        let entry = super::super::slab::ConnSlab::<Conn>::ENTRY_BYTES;
        assert!(entry <= 256, "a connection takes {entry} bytes in the slab");
        assert!(
            // 112 bytes of state plus the two rate buckets, the drain window (tick and
            // bytes) and the disconnect reason and code (28 bytes, padded).
            size_of::<Conn>() <= 136,
            "Conn is {} bytes",
            size_of::<Conn>()
        );
    }

    #[test]
    fn idle_open_connection_owns_no_heap() {
        let conn = Conn::new(0);
        assert!(conn.head.is_none());
        assert!(conn.outbox.is_empty());
    }
}
