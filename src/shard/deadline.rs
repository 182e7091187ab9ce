//! Deadlines: every connection has at most one, derived from its phase and ticks (handshake,
//! ping, pong, idle, close, write stall) and filed in the shard's timer wheel; when it comes
//! the connection is pinged, closed, or refiled. While bytes wait, the socket must take at
//! least `min_drain_rate` over each write-stall window, or the connection is a slow consumer.

use std::time::Duration;

use bytes::Bytes;

use crate::config::Config;
use crate::driver::ConnKey;
use crate::metrics::{DisconnectReason, RejectReason, SlowConsumerCause};
use crate::ws::CloseCode;

use super::conn::{Conn, NOT_FILED, Phase, Route, flags};
use super::stream::set_reason;
use super::wheel::Tick;
use super::{Core, TICK, pusher_conn};

/// A pre-encoded unmasked Ping with an empty payload (opcode 0x9, FIN, length 0).
pub(super) const PING_FRAME: [u8; 2] = [0x89, 0x00];

/// Every configured duration in ticks (rounded up; 0 disables ping and idle).
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticks {
    handshake: Tick,
    ping: Tick,
    pong: Tick,
    idle: Tick,
    close: Tick,
    /// How long a drain waits for connections to go; read by the drain, not a deadline.
    pub(super) drain: Tick,
    stall: Tick,
}

/// `d` in ticks, rounded up, capped at half the tick range so that adding it to a tick cannot
/// overflow.
pub(super) fn ticks(d: Duration) -> Tick {
    d.as_millis()
        .div_ceil(TICK.as_millis())
        .min(u128::from(Tick::MAX / 2)) as Tick
}

impl Ticks {
    /// The configured durations of `config`.
    pub(super) fn new(config: &Config) -> Self {
        Self {
            handshake: ticks(config.handshake_timeout).max(1),
            ping: ticks(config.ping_interval),
            pong: ticks(config.pong_timeout).max(1),
            idle: ticks(config.idle_timeout),
            close: ticks(config.close_timeout).max(1),
            drain: ticks(config.drain_timeout),
            stall: ticks(config.write_stall_timeout).max(1),
        }
    }
}

impl Core {
    /// The tick the clock is in now, counted from the shard's start.
    pub(super) fn tick_now(&self) -> Tick {
        (self.started.elapsed().as_millis() / TICK.as_millis()).min(u128::from(Tick::MAX - 1))
            as Tick
    }

    /// Files the connection's deadline in the wheel when it is earlier than what is filed.
    pub(super) fn schedule(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let Some(due) = deadline(&self.ticks, conn) else {
            return;
        };
        if due < conn.wheel_due {
            self.wheel.insert(key, due);
            if let Some(conn) = self.conns.get_mut(key) {
                conn.wheel_due = due;
            }
        }
    }

    /// Advances the wheel to `now`, acting on every deadline that came.
    pub(super) fn advance(&mut self, now: Tick) {
        self.now = now;
        let mut due_keys = Vec::new();
        self.wheel
            .advance(now, &mut |_, key, due| due_keys.push((key, due)));
        for (key, due) in due_keys {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.wheel_due != due {
                continue;
            }
            conn.wheel_due = NOT_FILED;
            match deadline(&self.ticks, conn) {
                Some(deadline) if deadline > now => self.schedule(key),
                Some(_) => self.handle_deadline(key),
                None => {}
            }
        }
    }

    /// The connection's deadline came: what it means depends on its phase (see [`deadline`]).
    fn handle_deadline(&mut self, key: ConnKey) {
        let now = self.now;
        let t = self.ticks;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.phase {
            // Slowloris: a head not complete in time gets no answer, only a closed socket.
            Phase::Handshake => {
                self.observe
                    .stats
                    .record_reject(RejectReason::HandshakeTimeout);
                self.close_now(key);
            }
            Phase::Closing | Phase::Flushing => self.close_now(key),
            // A drain window passed with bytes waiting all along: a peer that kept up drained
            // at least `min_drain_rate` over it and starts the next one; one that took less
            // (nothing: it stopped reading; a trickle: it reads just enough to look alive) is
            // closed. A close frame would wait behind what it does not read, so TCP is closed.
            Phase::Open
                if !conn.outbox.is_empty() && now >= conn.drain_since.saturating_add(t.stall) =>
            {
                let least = min_drained(self.config.min_drain_rate, t.stall);
                if conn.drained > 0 && conn.drained >= least {
                    conn.drain_since = now;
                    conn.drained = 0;
                    self.schedule(key);
                    return;
                }
                let cause = if conn.drained == 0 {
                    SlowConsumerCause::WriteStall
                } else {
                    SlowConsumerCause::SlowDrain
                };
                set_reason(conn, DisconnectReason::SlowConsumer, None);
                conn.outbox.clear();
                self.observe.stats.record_slow_consumer(cause);
                self.close_now(key);
            }
            Phase::Open if conn.has(flags::PING_OUTSTANDING) && conn.route == Route::Pusher => {
                set_reason(conn, DisconnectReason::PongTimeout, Some(CloseCode(4201)));
                let code = crate::pusher::CloseCode::PongNotReceived;
                self.start_close(key, code.into(), code.reason());
            }
            Phase::Open if conn.has(flags::PING_OUTSTANDING) => {
                set_reason(
                    conn,
                    DisconnectReason::PongTimeout,
                    Some(CloseCode::INTERNAL_ERROR),
                );
                self.start_close(key, CloseCode::INTERNAL_ERROR, "pong timeout");
            }
            Phase::Open if t.idle > 0 && now >= conn.last_rx + t.idle => {
                set_reason(conn, DisconnectReason::IdleTimeout, Some(CloseCode::NORMAL));
                self.start_close(key, CloseCode::NORMAL, "idle timeout");
            }
            Phase::Open => {
                conn.flags |= flags::PING_OUTSTANDING;
                conn.since = now;
                if conn.outbox.is_empty() && !conn.has(flags::SEND_IN_FLIGHT) {
                    conn.drain_since = now;
                    conn.drained = 0;
                }
                if conn.route == Route::Pusher {
                    // pusher-js answers `pusher:ping` with `pusher:pong`; browsers give scripts
                    // no view of WebSocket pings.
                    conn.outbox
                        .push(pusher_conn::frame_bytes(crate::pusher::protocol::ping()));
                } else {
                    conn.outbox.push(Bytes::from_static(&PING_FRAME));
                }
                self.dirty.push(key);
                self.schedule(key);
            }
        }
    }
}

/// The least bytes a connection with bytes waiting must drain over a window of `window` ticks
/// at `rate` bytes per second (saturating).
fn min_drained(rate: u32, window: Tick) -> u32 {
    let bytes = u64::from(rate).saturating_mul(u64::from(window) * TICK.as_millis() as u64) / 1000;
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// The tick the connection's current deadline falls on; `None` when it has none.
fn deadline(t: &Ticks, conn: &Conn) -> Option<Tick> {
    match conn.phase {
        Phase::Handshake => Some(conn.since + t.handshake),
        Phase::Closing | Phase::Flushing => Some(conn.since + t.close),
        Phase::Open => {
            let stall = (!conn.outbox.is_empty()).then(|| conn.drain_since.saturating_add(t.stall));
            let quiet = if conn.has(flags::PING_OUTSTANDING) {
                Some(conn.since + t.pong)
            } else {
                let ping = (t.ping > 0).then(|| conn.last_rx + t.ping);
                let idle = (t.idle > 0).then(|| conn.last_rx + t.idle);
                ping.into_iter().chain(idle).min()
            };
            quiet.into_iter().chain(stall).min()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_drain_scales_with_the_window() {
        assert_eq!(min_drained(4096, 100), 40_960, "4 KiB/s over 10 s");
        assert_eq!(min_drained(0, 100), 0);
        assert_eq!(min_drained(u32::MAX, Tick::MAX / 2), u32::MAX);
    }

    #[test]
    fn durations_round_up_to_ticks() {
        let cases = [(0, 0), (1, 1), (100, 1), (101, 2), (25_000, 250)];
        for (ms, expected) in cases {
            assert_eq!(ticks(Duration::from_millis(ms)), expected, "{ms} ms");
        }
    }
}
