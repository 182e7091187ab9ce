//! The WebSocket byte stream of an open connection: reads decoded into messages (echoed, or
//! handed to the Pusher session), control frames answered and rate-limited, the peer's close
//! answered, failures closed with their code; and every byte the shard writes pushed to the
//! connection's outbox under its cap.

use std::io;
use std::time::Instant;

use bytes::Bytes;

use crate::driver::{ConnKey, MAX_SEND_FRAMES};
use crate::limits::{OutboxPolicy, TokenBucket};
use crate::metrics::{DisconnectReason, SlowConsumerCause};
use crate::ws::{self, CloseCode, CloseFrame, OpCode};

use super::conn::{Conn, NO_REASON, Phase, Route, flags};
use super::wheel::Tick;
use super::{Core, TICK};

/// Longest control-frame payload (RFC 6455 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Inbound Ping and Pong frames allowed per [`CONTROL_WINDOW`] before the connection is closed
/// with 1008 (fixed; the limits table of `docs/operations.md`). 20 a second leaves room for a
/// client that sends a burst of pings at once (the Autobahn suite sends 10 back to back).
pub(super) const MAX_CONTROL_FRAMES: u32 = 20;

/// The window [`MAX_CONTROL_FRAMES`] is counted over: one second of ticks.
pub(super) const CONTROL_WINDOW: Tick = 10;

impl Core {
    /// Closes the socket at the next flush, whatever is queued.
    pub(super) fn close_now(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.flags |= flags::CLOSE_NOW;
            self.dirty.push(key);
        }
    }

    /// A send completed: the outbox moves on (and a slow consumer's close frame, waiting for
    /// this send, is queued behind what the socket started), a failed send closes the socket.
    pub(super) fn handle_sent(&mut self, key: ConnKey, result: io::Result<usize>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.flags &= !flags::SEND_IN_FLIGHT;
        match result {
            Ok(n) => {
                conn.outbox.handle_sent(n);
                conn.drained = conn
                    .drained
                    .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
                self.observe.stats.record_bytes_sent(n as u64);
                if conn.has(flags::CLOSE_AFTER_SEND) {
                    conn.flags &= !flags::CLOSE_AFTER_SEND;
                    conn.outbox.drop_unstarted(0);
                    conn.outbox.push(slow_consumer_close(conn.route));
                }
            }
            Err(_) => conn.flags |= flags::CLOSE_NOW,
        }
        self.dirty.push(key);
    }

    /// Bytes read from the connection, handled by its phase.
    pub(super) fn handle_read(&mut self, key: ConnKey, data: &mut [u8]) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.last_rx = now;
        if conn.has(flags::PING_OUTSTANDING) {
            // Any byte answers our ping. The ping went out in the loop turn of tick `since`,
            // which starts at `started + since * TICK`: the round trip is measured from there
            // (late by that turn's lag at most).
            let sent_at = self.started + TICK * conn.since;
            let rtt = Instant::now().saturating_duration_since(sent_at);
            self.observe.stats.record_heartbeat(rtt);
        }
        conn.flags &= !flags::PING_OUTSTANDING;
        self.observe.stats.record_bytes_received(data.len() as u64);
        match conn.phase {
            Phase::Handshake => self.handle_handshake_read(key, data),
            // A slow consumer we are closing is read for its close, within the allowance of a
            // peer we failed: one that writes on and never reads would otherwise be read, and
            // answered with nothing, until the close deadline.
            Phase::Closing if conn.reason == DisconnectReason::SlowConsumer as u8 => {
                let cost = u32::try_from(data.len()).unwrap_or(u32::MAX);
                if conn
                    .byte_bucket
                    .try_take(self.now, cost, 0, FAILED_READ_BUDGET)
                {
                    self.handle_ws_bytes(key, data);
                } else {
                    self.close_now(key);
                }
            }
            Phase::Open | Phase::Closing => self.handle_ws_bytes(key, data),
            // A peer we failed (RFC 6455 7.1.7: flood, rate, protocol, size, slow consumer)
            // keeps sending while our close frame waits: its bytes are dropped, up to the rest
            // of one largest frame so that a peer that reads still learns why. Past that it may
            // never read, and the shard would read and drop until the close deadline: close TCP
            // now.
            Phase::Flushing if is_failure(conn.reason) => {
                let cost = u32::try_from(data.len()).unwrap_or(u32::MAX);
                if !conn
                    .byte_bucket
                    .try_take(self.now, cost, 0, FAILED_READ_BUDGET)
                {
                    self.close_now(key);
                }
            }
            Phase::Flushing => {}
        }
    }

    /// WebSocket bytes of an open (or closing) connection: decoded, answered, rate-limited.
    pub(super) fn handle_ws_bytes(&mut self, key: ConnKey, data: &mut [u8]) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        // Once our close frame is queued, nothing is echoed (RFC 6455 5.5.1: no data after
        // Close); the peer's frames are still read for its close.
        let echo = conn.route == Route::Echo && !conn.ws.is_close_sent();
        let pusher = conn.route == Route::Pusher;
        let out = &mut self.out;
        let rate = self.config.message_rate;
        // A slow consumer's bytes are charged to its read allowance instead (`handle_read`).
        let budgeted = conn.reason == DisconnectReason::SlowConsumer as u8;
        let (msg_bucket, byte_bucket) = (&mut conn.msg_bucket, &mut conn.byte_bucket);
        let (mut received, mut sent, mut over_rate) = (0u64, 0u64, false);
        let mut allow = |len: usize| {
            if budgeted {
                return true;
            }
            let (mps, bps) = (rate.messages_per_second, rate.bytes_per_second);
            let len = u32::try_from(len).unwrap_or(u32::MAX);
            (mps == 0 || msg_bucket.try_take(now, 1, mps, mps))
                && (bps == 0 || byte_bucket.try_take(now, len, bps, bps))
        };
        let inbox = &mut self.pusher.inbox;
        let texts = &mut self.pusher.texts;
        let mut peer_close = None;
        let mut control_frames = 0u32;
        // Pongs are coalesced: only the latest Ping of a read is answered (RFC 6455 5.5.3).
        let mut last_ping: Option<([u8; MAX_CONTROL_PAYLOAD], usize)> = None;
        let result = conn
            .ws
            .handle_read(&self.config.ws, data, &mut |event| match event {
                ws::Event::Text(_) | ws::Event::Binary(_) if over_rate => {}
                ws::Event::Text(text) if !allow(text.len()) => {
                    received += 1;
                    over_rate = true;
                }
                ws::Event::Binary(bytes) if !allow(bytes.len()) => {
                    received += 1;
                    over_rate = true;
                }
                ws::Event::Text(text) if echo => {
                    received += 1;
                    sent += 1;
                    ws::encode_frame(out, true, OpCode::Text, text.as_bytes());
                }
                ws::Event::Binary(bytes) if echo => {
                    received += 1;
                    sent += 1;
                    ws::encode_frame(out, true, OpCode::Binary, bytes)
                }
                ws::Event::Text(text) if pusher => {
                    received += 1;
                    let start = inbox.len();
                    inbox.extend_from_slice(text.as_bytes());
                    texts.push((start, inbox.len()));
                }
                ws::Event::Ping(payload) => {
                    control_frames += 1;
                    let mut copy = [0; MAX_CONTROL_PAYLOAD];
                    let len = payload.len().min(MAX_CONTROL_PAYLOAD);
                    copy[..len].copy_from_slice(&payload[..len]);
                    last_ping = Some((copy, len));
                }
                ws::Event::Pong(_) => control_frames += 1,
                ws::Event::Close(frame) => {
                    let code = frame.as_ref().map(|f| f.code);
                    peer_close = Some((ws::close_reply(frame.as_ref()), code));
                }
                ws::Event::Text(_) | ws::Event::Binary(_) => received += 1,
            });
        for _ in 0..received {
            self.observe.stats.record_message_received();
        }
        for _ in 0..sent {
            self.observe.stats.record_message_sent();
        }
        if control_frames > 0 {
            if now >= conn.control_window.saturating_add(CONTROL_WINDOW) {
                conn.control_window = now;
                conn.control_frames = 0;
            }
            let count = u32::from(conn.control_frames).saturating_add(control_frames);
            conn.control_frames = count.min(u32::from(u8::MAX)) as u8;
        }
        let failure = match result {
            Err(error) => {
                let code = CloseCode::from(error);
                Some((code, error.reason(), failure_reason(code)))
            }
            Ok(()) if u32::from(conn.control_frames) > MAX_CONTROL_FRAMES => Some((
                CloseCode::POLICY_VIOLATION,
                "control frame flood",
                DisconnectReason::Policy,
            )),
            Ok(()) if over_rate => Some((
                CloseCode::POLICY_VIOLATION,
                "message rate exceeded",
                DisconnectReason::RateLimit,
            )),
            Ok(()) => None,
        };
        if let Some((payload, len)) = last_ping
            && failure.is_none()
            && !conn.ws.is_close_sent()
        {
            ws::encode_frame(out, true, OpCode::Pong, &payload[..len]);
        }
        match (failure, peer_close) {
            (Some((code, reason, why)), _) => {
                set_reason(conn, why, Some(wire_close_code(code)));
                if !conn.ws.is_close_sent() {
                    let code = wire_close_code(code);
                    ws::encode_close(out, Some(CloseFrame { code, reason }), None);
                    conn.ws.handle_close_sent();
                }
                conn.enter(Phase::Flushing, now);
                self.dirty.push(key);
                self.schedule(key);
            }
            (None, Some((reply, code))) => {
                set_reason(conn, DisconnectReason::ClientClose, code);
                if !conn.ws.is_close_sent() {
                    ws::encode_close(out, reply, None);
                    conn.ws.handle_close_sent();
                }
                // The closing handshake is complete: the server closes TCP first (RFC 6455 7.1.1),
                // at the next flush when nothing is left to send.
                conn.enter(Phase::Flushing, now);
                self.dirty.push(key);
                self.schedule(key);
            }
            (None, None) => {}
        }
        if pusher {
            self.push_out_with_close(key);
            self.handle_pusher_texts(key);
        }
        self.push_out_with_close(key);
    }

    /// Moves what was encoded into the connection's outbox, enforcing the outbox limit. Once
    /// our close frame is queued nothing is: what would follow it is data after Close
    /// (RFC 6455 5.5.1), and is dropped.
    pub(super) fn push_out(&mut self, key: ConnKey) {
        if self.out.is_empty() {
            return;
        }
        let frame = Bytes::copy_from_slice(&self.out);
        self.out.clear();
        self.push_frame(key, frame, false);
    }

    /// [`Core::push_out`] for bytes that may end with our close frame, encoded after every
    /// frame that precedes it and nothing after (the read path, [`Core::start_close`]).
    fn push_out_with_close(&mut self, key: ConnKey) {
        if self.out.is_empty() {
            return;
        }
        let frame = Bytes::copy_from_slice(&self.out);
        self.out.clear();
        self.queue(key, frame, false);
    }

    /// Queues one buffer (a frame shared with other connections, or this connection's own
    /// bytes) on the connection's outbox, enforcing the outbox limit (never lossy); `false` when
    /// the connection takes no more data (see [`Core::push_frame`]).
    pub(super) fn enqueue(&mut self, key: ConnKey, bytes: Bytes) -> bool {
        self.push_frame(key, bytes, false)
    }

    /// Queues an encoded `frame` (whole WebSocket frames) to the connection, enforcing the
    /// outbox cap. This is the path for fan-out: `frame` is shared, not copied. A `lossy` frame
    /// (a channel marked lossy) under [`OutboxPolicy::DropOldest`] makes room by dropping the
    /// oldest queued frames instead of closing; anything else over the cap closes the
    /// connection as a slow consumer (1008; the code follows [`slow_consumer_code`]). Once our
    /// close frame is queued, frames are dropped: no data follows Close (RFC 6455 5.5.1).
    /// `false` when the frame was dropped so: the connection is gone, closing, or closed.
    pub(super) fn push_frame(&mut self, key: ConnKey, frame: Bytes, lossy: bool) -> bool {
        let open = self
            .conns
            .get(key)
            .is_some_and(|c| !c.ws.is_close_sent() && !c.has(flags::CLOSE_NOW));
        if open {
            self.queue(key, frame, lossy);
        }
        open
    }

    /// [`Core::push_frame`] without the check for our close frame, for the callers that queue
    /// it themselves.
    fn queue(&mut self, key: ConnKey, frame: Bytes, lossy: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.has(flags::CLOSE_NOW) {
            // Going at the next flush: queue nothing more.
            return;
        }
        let was_idle = conn.outbox.is_empty() && !conn.has(flags::SEND_IN_FLIGHT);
        if was_idle {
            // A new drain window, judged at the write-stall deadline.
            conn.drain_since = self.now;
            conn.drained = 0;
        }
        conn.outbox.push(frame);
        self.dirty.push(key);
        if was_idle {
            // Files the write-stall deadline.
            self.schedule(key);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let max = self.config.max_outbox_bytes;
        if conn.outbox.queued_bytes() <= max {
            return;
        }
        // Frames handed to the driver stay: the socket may be mid-way through them.
        let in_flight = if conn.has(flags::SEND_IN_FLIGHT) {
            MAX_SEND_FRAMES
        } else {
            0
        };
        if lossy && self.config.outbox_policy == OutboxPolicy::DropOldest {
            conn.outbox.drop_oldest(in_flight, max);
            if conn.outbox.queued_bytes() <= max {
                return;
            }
        }
        match conn.phase {
            // A slow consumer: the data it has not been handed goes, and the close frame is the
            // next write: now, behind the rest of a frame partly sent, or once the send in
            // flight completes (what it took is known only then). Then, as for any close we
            // start, the peer's close is awaited while what it still sends is read (closing TCP
            // on unread bytes would reset the connection and lose the close frame); a peer that
            // never reads again is closed at the close deadline.
            Phase::Open => {
                let code = slow_consumer_code(conn.route);
                set_reason(conn, DisconnectReason::SlowConsumer, Some(code));
                self.observe
                    .stats
                    .record_slow_consumer(SlowConsumerCause::OutboxFull);
                conn.outbox.drop_unstarted(in_flight);
                if in_flight > 0 {
                    conn.flags |= flags::CLOSE_AFTER_SEND;
                } else {
                    conn.outbox.push(slow_consumer_close(conn.route));
                }
                conn.ws.handle_close_sent();
                conn.enter(Phase::Closing, self.now);
                self.schedule(key);
            }
            // An HTTP answer that does not fit: there is no WebSocket to close.
            Phase::Handshake => {
                conn.outbox.clear();
                conn.flags |= flags::CLOSE_NOW;
            }
            // Our close frame is queued and nothing can follow it: the outbox no longer grows,
            // and the close deadline bounds how long it waits.
            Phase::Closing | Phase::Flushing => {}
        }
    }

    /// Sends our close frame and waits for the peer's under the close deadline.
    pub(super) fn start_close(&mut self, key: ConnKey, code: CloseCode, reason: &str) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.ws.is_close_sent() {
            return;
        }
        ws::encode_close(
            &mut self.out,
            Some(CloseFrame {
                code: wire_close_code(code),
                reason,
            }),
            None,
        );
        conn.ws.handle_close_sent();
        conn.enter(Phase::Closing, self.now);
        self.push_out_with_close(key);
        self.schedule(key);
    }
}

/// A slow consumer's close frame: 1008 (Pusher 4100) with the reason "slow consumer".
fn slow_consumer_close(route: Route) -> Bytes {
    let close = CloseFrame {
        code: slow_consumer_code(route),
        reason: "slow consumer",
    };
    let mut frame = Vec::with_capacity(2 + 2 + close.reason.len());
    ws::encode_close(&mut frame, Some(close), None);
    Bytes::from(frame)
}

/// Whether a disconnect `reason` (as stored in the connection) means the server failed the
/// connection for what the peer sent (or, as a slow consumer, for what it did not read), after
/// which at most [`FAILED_READ_BUDGET`] more bytes are read (and dropped) while the close frame
/// waits.
fn is_failure(reason: u8) -> bool {
    [
        DisconnectReason::SlowConsumer,
        DisconnectReason::RateLimit,
        DisconnectReason::Policy,
        DisconnectReason::ProtocolError,
        DisconnectReason::MessageTooBig,
    ]
    .iter()
    .any(|r| *r as u8 == reason)
}

/// The close code a slow consumer of `route` gets, as the limits table of `docs/operations.md`
/// gives it for the outbox cap: 1008 for echo, 4100 for Pusher connections (over capacity:
/// back off, then reconnect).
fn slow_consumer_code(route: Route) -> CloseCode {
    match route {
        Route::None | Route::Echo | Route::Feed => CloseCode::POLICY_VIOLATION,
        Route::Pusher => crate::pusher::CloseCode::OverCapacity.into(),
    }
}

/// Why a connection closed with `code` after a failure of its stream.
fn failure_reason(code: CloseCode) -> DisconnectReason {
    match code.0 {
        1009 => DisconnectReason::MessageTooBig,
        1008 => DisconnectReason::Policy,
        1011 => DisconnectReason::ServerError,
        _ => DisconnectReason::ProtocolError,
    }
}

/// Sets why `conn` is ending, unless a reason was already set (the first one wins).
pub(super) fn set_reason(conn: &mut Conn, reason: DisconnectReason, code: Option<CloseCode>) {
    if conn.reason == NO_REASON {
        conn.reason = reason as u8;
        conn.close_code = code.map_or(0, |c| c.0);
        if is_failure(conn.reason) {
            // Rates no longer matter once the connection failed: the byte bucket becomes the
            // allowance of bytes still read and dropped (no refill), see `FAILED_READ_BUDGET`.
            conn.byte_bucket = TokenBucket::full(FAILED_READ_BUDGET, conn.last_rx);
        }
    }
}

/// Bytes a failed connection may still send while its close frame waits: the largest frame
/// `max_message_size` may be configured to (16 MiB, `docs/deployment.md`) plus its header, so a
/// peer cut off mid-frame still reads the close code; a peer that sends more is not reading.
const FAILED_READ_BUDGET: u32 = 16 * 1024 * 1024 + 14;

/// The code to put on the wire: 1005, 1006 and 1015 only describe a close locally
/// (RFC 6455 7.4.1) and are never sent; a protocol error is said instead.
fn wire_close_code(code: CloseCode) -> CloseCode {
    match code.0 {
        1005 | 1006 | 1015 => CloseCode::PROTOCOL_ERROR,
        _ => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_only_close_codes_never_reach_the_wire() {
        let cases = [
            (1005, 1002),
            (1006, 1002),
            (1015, 1002),
            (1000, 1000),
            (1011, 1011),
            (4100, 4100),
        ];
        for (code, wire) in cases {
            assert_eq!(wire_close_code(CloseCode(code)), CloseCode(wire));
        }
    }
}
