//! A shard: one event loop on one thread, owning its listener, driver, connection slab and timer
//! wheel. The loop is generic over [`Driver`], so the connection state machine below is written
//! once for io_uring and epoll.
//!
//! A loop turn: [`Driver::wait`] (submits everything queued, sleeps until an event or the next
//! wheel tick), handle every ready event (reads go through the HTTP head reader or the WebSocket
//! decoder, answers are encoded into the connection's outbox), flush (start one send per
//! connection with something queued and none in flight, close what must close), then advance
//! the wheel to the current tick.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::Config;
use crate::driver::{ConnKey, Driver, Event};
use crate::http::{self, StatusCode};
use crate::mesh::{Mailbox, MeshMessage};
use crate::ws::{self, CloseCode, CloseFrame, OpCode};

pub mod conn;
pub mod outbox;
pub mod slab;
pub mod wheel;

use conn::{Conn, NOT_FILED, Phase, Route, flags};
use wheel::{Tick, TimerWheel};

/// Length of one wheel tick, the granularity of every connection deadline. 100 ms keeps the
/// loop's wake-ups at ten a second when idle while every configured timeout (seconds) stays
/// accurate to a tenth of a second.
pub const TICK: Duration = Duration::from_millis(100);

/// The routing table: request path to what the connection serves. Later routes (`/app/{key}`,
/// `/health`, `/metrics`, the HTTP API) are rows here.
const ROUTES: &[(&str, Route)] = &[("/echo", Route::Echo)];

/// A pre-encoded unmasked Ping with an empty payload (opcode 0x9, FIN, length 0).
const PING_FRAME: [u8; 2] = [0x89, 0x00];

/// Connections held by all shards of the process, against `max_connections`. One relaxed
/// atomic touched on accept and close only, never per message.
#[derive(Debug)]
pub struct ConnLimit {
    open: AtomicUsize,
    max: usize,
}

impl ConnLimit {
    /// A limit of `max` connections.
    pub fn new(max: usize) -> Self {
        Self {
            open: AtomicUsize::new(0),
            max,
        }
    }

    fn try_acquire(&self) -> bool {
        if self.open.fetch_add(1, Ordering::Relaxed) < self.max {
            true
        } else {
            self.open.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }

    fn release(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections open now, across shards.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Every configured duration in ticks (rounded up; 0 disables ping and idle).
#[derive(Debug, Clone, Copy)]
struct Ticks {
    handshake: Tick,
    ping: Tick,
    pong: Tick,
    idle: Tick,
    close: Tick,
    drain: Tick,
}

fn ticks(d: Duration) -> Tick {
    d.as_millis()
        .div_ceil(TICK.as_millis())
        .min(u128::from(Tick::MAX / 2)) as Tick
}

impl Ticks {
    fn new(config: &Config) -> Self {
        Self {
            handshake: ticks(config.handshake_timeout).max(1),
            ping: ticks(config.ping_interval),
            pong: ticks(config.pong_timeout).max(1),
            idle: ticks(config.idle_timeout),
            close: ticks(config.close_timeout).max(1),
            drain: ticks(config.drain_timeout),
        }
    }
}

/// Why a shard's loop stopped with an error.
#[derive(Debug)]
pub enum ShardError {
    /// The driver's wait failed: the event loop cannot go on.
    Driver(io::Error),
}

impl std::fmt::Display for ShardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Driver(e) => write!(f, "event loop failed: {e}"),
        }
    }
}

impl std::error::Error for ShardError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Driver(e) => Some(e),
        }
    }
}

/// One shard: a driver and the state its events act on.
pub struct Shard<D: Driver> {
    driver: D,
    core: Core,
}

/// Everything of a shard but the driver, so that bytes lent by the driver and the connection
/// they belong to can be borrowed at once.
struct Core {
    config: Arc<Config>,
    ticks: Ticks,
    conns: slab::ConnSlab<Conn>,
    wheel: TimerWheel,
    started: Instant,
    now: Tick,
    /// Frames encoded while handling one read, pushed to the outbox as one buffer.
    out: Vec<u8>,
    /// Connections to flush or close at the end of the turn.
    dirty: Vec<ConnKey>,
    mailbox: Mailbox,
    limit: Arc<ConnLimit>,
    /// Tick the drain gives up waiting, once draining.
    drain_until: Option<Tick>,
    stop: bool,
    last_accept_warning: Option<Tick>,
}

impl<D: Driver> Shard<D> {
    /// A shard that accepts on `listener` (bound, listening, non-blocking) once [`Shard::run`]s.
    pub fn new(
        mut driver: D,
        listener: OwnedFd,
        config: Arc<Config>,
        mailbox: Mailbox,
        limit: Arc<ConnLimit>,
    ) -> io::Result<Self> {
        driver.listen(listener)?;
        let ticks = Ticks::new(&config);
        Ok(Self {
            driver,
            core: Core {
                config,
                ticks,
                conns: slab::ConnSlab::default(),
                wheel: TimerWheel::default(),
                started: Instant::now(),
                now: 0,
                out: Vec::new(),
                dirty: Vec::new(),
                mailbox,
                limit,
                drain_until: None,
                stop: false,
                last_accept_warning: None,
            },
        })
    }

    /// Runs the loop until a drain completes or a stop is asked for.
    pub fn run(mut self) -> Result<(), ShardError> {
        let mut transmit = Vec::new();
        loop {
            let next_tick = self.core.started + TICK * (self.core.now + 1);
            let timeout = next_tick
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            self.driver.wait(timeout).map_err(ShardError::Driver)?;
            while let Some(event) = self.driver.poll_event() {
                self.handle_event(event);
            }
            self.flush(&mut transmit);
            let now = self.core.tick_now();
            self.core.advance(now);
            self.flush(&mut transmit);
            if self.core.stop || self.core.drain_done() {
                return Ok(());
            }
        }
    }

    fn handle_event(&mut self, event: Event) {
        let core = &mut self.core;
        match event {
            Event::Accepted(socket) => core.handle_accept(&mut self.driver, socket),
            Event::AcceptError(e) => core.handle_accept_error(&e),
            Event::Recv { key, buf } => {
                let data = self.driver.recv_buf(buf);
                core.handle_read(key, data);
                self.driver.release(buf);
            }
            Event::RecvStopped { key } => {
                if core.conns.get(key).is_some() {
                    self.driver.resume_recv(key);
                }
            }
            Event::Eof { key } => core.close_now(key),
            Event::Sent { key, result } => core.handle_sent(key, result),
            Event::Connected { key, .. } => core.close_now(key),
            Event::Wake => {
                while let Some(message) = core.mailbox.poll_message() {
                    match message {
                        MeshMessage::Drain => core.begin_drain(&mut self.driver),
                        MeshMessage::Stop => core.stop = true,
                    }
                }
            }
        }
    }

    /// Starts sends and closes for every connection touched this turn.
    fn flush(&mut self, transmit: &mut Vec<Bytes>) {
        let core = &mut self.core;
        while let Some(key) = core.dirty.pop() {
            let Some(conn) = core.conns.get_mut(key) else {
                continue;
            };
            let flushed = conn.outbox.is_empty() && !conn.has(flags::SEND_IN_FLIGHT);
            if conn.has(flags::CLOSE_NOW) || (conn.phase == Phase::Flushing && flushed) {
                self.driver.close(key);
                core.conns.remove(key);
                core.limit.release();
                continue;
            }
            if !conn.has(flags::SEND_IN_FLIGHT) && !conn.outbox.is_empty() {
                conn.outbox.poll_transmit(transmit);
                conn.flags |= flags::SEND_IN_FLIGHT;
                self.driver.send(key, transmit);
            }
        }
    }
}

impl Core {
    fn tick_now(&self) -> Tick {
        (self.started.elapsed().as_millis() / TICK.as_millis()).min(u128::from(Tick::MAX - 1))
            as Tick
    }

    fn drain_done(&self) -> bool {
        self.drain_until
            .is_some_and(|until| self.conns.is_empty() || self.now >= until)
    }

    fn handle_accept(&mut self, driver: &mut impl Driver, socket: OwnedFd) {
        if self.drain_until.is_some() || !self.limit.try_acquire() {
            return;
        }
        // Small frames go out at once: latency matters more than packet count for echo and
        // pub/sub, and every send already gathers whatever is queued.
        let _ = socket2::SockRef::from(&socket).set_tcp_nodelay(true);
        let Some(key) = self.conns.insert(Conn::new(self.now)) else {
            self.limit.release();
            return;
        };
        if driver.register(key, socket).is_err() {
            self.conns.remove(key);
            self.limit.release();
            return;
        }
        self.schedule(key);
    }

    fn handle_accept_error(&mut self, error: &io::Error) {
        // Rate-limited: at EMFILE the driver retries every tick.
        let quiet = self
            .last_accept_warning
            .is_some_and(|at| self.now < at + ticks(Duration::from_secs(10)));
        if !quiet {
            self.last_accept_warning = Some(self.now);
            tracing::warn!(error = %error, open = self.limit.open(), "accept failed; retrying");
        }
    }

    fn close_now(&mut self, key: ConnKey) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.flags |= flags::CLOSE_NOW;
            self.dirty.push(key);
        }
    }

    fn handle_sent(&mut self, key: ConnKey, result: io::Result<usize>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.flags &= !flags::SEND_IN_FLIGHT;
        match result {
            Ok(n) => conn.outbox.handle_sent(n),
            Err(_) => conn.flags |= flags::CLOSE_NOW,
        }
        self.dirty.push(key);
    }

    fn handle_read(&mut self, key: ConnKey, data: &mut [u8]) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.last_rx = now;
        conn.flags &= !flags::PING_OUTSTANDING;
        match conn.phase {
            Phase::Handshake => self.handle_head_bytes(key, data),
            Phase::Open | Phase::Closing => self.handle_ws_bytes(key, data),
            Phase::Flushing => {}
        }
    }

    fn handle_head_bytes(&mut self, key: ConnKey, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let reader = conn.head.get_or_insert_with(Default::default);
        match reader.handle_read(&self.config.http, data) {
            Ok(http::Status::Partial) => {}
            Ok(http::Status::Complete(_)) => self.answer_handshake(key),
            Err(e) => self.http_error(key, e.status(), &[]),
        }
    }

    /// The head is complete: route it, then upgrade or refuse.
    fn answer_handshake(&mut self, key: ConnKey) {
        let draining = self.drain_until.is_some();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(reader) = conn.head.take() else {
            return;
        };
        let outcome = match reader.parse(&self.config.http) {
            Err(e) => Err((e.status(), &[][..])),
            Ok(_) if draining => Err((StatusCode::SERVICE_UNAVAILABLE, &[][..])),
            Ok(req) => match ROUTES.iter().find(|(path, _)| *path == req.path) {
                None => Err((StatusCode::NOT_FOUND, &[][..])),
                Some(&(_, route)) => match http::validate_upgrade(&req, &self.config.http) {
                    Ok(upgrade) => {
                        let accept = ws::accept_key(upgrade.key);
                        http::write_switching_protocols(&mut self.out, &accept, None);
                        Ok(route)
                    }
                    Err(e) => Err((e.status(), e.extra_headers())),
                },
            },
        };
        match outcome {
            Err((status, extra)) => self.http_error(key, status, extra),
            Ok(route) => {
                conn.route = route;
                conn.enter(Phase::Open, self.now);
                self.push_out(key);
                self.schedule(key);
                let mut early = reader.into_after_head();
                if !early.is_empty() {
                    self.handle_ws_bytes(key, &mut early);
                }
            }
        }
    }

    fn http_error(&mut self, key: ConnKey, status: StatusCode, extra: &[(&str, &str)]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.head = None;
        conn.enter(Phase::Flushing, self.now);
        http::write_error(&mut self.out, status, extra);
        self.push_out(key);
        self.schedule(key);
    }

    fn handle_ws_bytes(&mut self, key: ConnKey, data: &mut [u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let echo = conn.route == Route::Echo;
        let out = &mut self.out;
        let mut peer_close = None;
        let result = conn
            .ws
            .handle_read(&self.config.ws, data, &mut |event| match event {
                ws::Event::Text(text) if echo => {
                    ws::encode_frame(out, true, OpCode::Text, text.as_bytes());
                }
                ws::Event::Binary(bytes) if echo => {
                    ws::encode_frame(out, true, OpCode::Binary, bytes)
                }
                ws::Event::Ping(payload) => ws::encode_frame(out, true, OpCode::Pong, payload),
                ws::Event::Close(frame) => peer_close = Some(ws::close_reply(frame.as_ref())),
                ws::Event::Text(_) | ws::Event::Binary(_) | ws::Event::Pong(_) => {}
            });
        match (result, peer_close) {
            (Err(error), _) => {
                if !conn.ws.is_close_sent() {
                    let code = wire_close_code(CloseCode::from(error));
                    ws::encode_close(
                        out,
                        Some(CloseFrame {
                            code,
                            reason: error.reason(),
                        }),
                        None,
                    );
                    conn.ws.handle_close_sent();
                }
                conn.enter(Phase::Flushing, self.now);
                self.dirty.push(key);
                self.schedule(key);
            }
            (Ok(()), Some(reply)) => {
                if !conn.ws.is_close_sent() {
                    ws::encode_close(out, reply, None);
                    conn.ws.handle_close_sent();
                }
                // The closing handshake is complete: the server closes TCP first (RFC 6455 7.1.1),
                // at the next flush when nothing is left to send.
                conn.enter(Phase::Flushing, self.now);
                self.dirty.push(key);
                self.schedule(key);
            }
            (Ok(()), None) => {}
        }
        self.push_out(key);
    }

    /// Moves what was encoded into the connection's outbox, enforcing the outbox limit.
    fn push_out(&mut self, key: ConnKey) {
        if self.out.is_empty() {
            return;
        }
        let Some(conn) = self.conns.get_mut(key) else {
            self.out.clear();
            return;
        };
        conn.outbox.push(Bytes::copy_from_slice(&self.out));
        self.out.clear();
        self.dirty.push(key);
        if conn.outbox.queued_bytes() > self.config.max_outbox_bytes {
            // A slow consumer. Without a send in flight the queue can be replaced by a close
            // frame; with one, the stream may stop mid-frame, so only closing TCP is safe.
            if conn.has(flags::SEND_IN_FLIGHT) || conn.phase == Phase::Flushing {
                conn.flags |= flags::CLOSE_NOW;
            } else {
                conn.outbox.clear();
                let close = CloseFrame {
                    code: CloseCode::POLICY_VIOLATION,
                    reason: "slow consumer",
                };
                ws::encode_close(&mut self.out, Some(close), None);
                conn.outbox.push(Bytes::copy_from_slice(&self.out));
                self.out.clear();
                conn.ws.handle_close_sent();
                conn.enter(Phase::Flushing, self.now);
                self.schedule(key);
            }
        }
    }

    /// Sends our close frame and waits for the peer's under the close deadline.
    fn start_close(&mut self, key: ConnKey, code: CloseCode, reason: &str) {
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
        self.push_out(key);
        self.schedule(key);
    }

    fn begin_drain(&mut self, driver: &mut impl Driver) {
        if self.drain_until.is_some() {
            return;
        }
        driver.stop_accepting();
        self.drain_until = Some(self.now.saturating_add(self.ticks.drain));
        let keys: Vec<ConnKey> = self.conns.keys().collect();
        for key in keys {
            match self.conns.get(key).map(|conn| conn.phase) {
                Some(Phase::Handshake) => {
                    self.http_error(key, StatusCode::SERVICE_UNAVAILABLE, &[]);
                }
                Some(Phase::Open) => {
                    self.start_close(key, CloseCode::GOING_AWAY, "server draining")
                }
                _ => {}
            }
        }
    }

    /// Files the connection's deadline in the wheel when it is earlier than what is filed.
    fn schedule(&mut self, key: ConnKey) {
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
    fn advance(&mut self, now: Tick) {
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

    fn handle_deadline(&mut self, key: ConnKey) {
        let now = self.now;
        let t = self.ticks;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.phase {
            // Slowloris: a head not complete in time gets no answer, only a closed socket.
            Phase::Handshake | Phase::Closing | Phase::Flushing => self.close_now(key),
            Phase::Open if conn.has(flags::PING_OUTSTANDING) => {
                self.start_close(key, CloseCode::INTERNAL_ERROR, "pong timeout");
            }
            Phase::Open if t.idle > 0 && now >= conn.last_rx + t.idle => {
                self.start_close(key, CloseCode::NORMAL, "idle timeout");
            }
            Phase::Open => {
                conn.flags |= flags::PING_OUTSTANDING;
                conn.since = now;
                conn.outbox.push(Bytes::from_static(&PING_FRAME));
                self.dirty.push(key);
                self.schedule(key);
            }
        }
    }
}

/// The tick the connection's current deadline falls on; `None` when it has none.
fn deadline(t: &Ticks, conn: &Conn) -> Option<Tick> {
    match conn.phase {
        Phase::Handshake => Some(conn.since + t.handshake),
        Phase::Closing | Phase::Flushing => Some(conn.since + t.close),
        Phase::Open if conn.has(flags::PING_OUTSTANDING) => Some(conn.since + t.pong),
        Phase::Open => {
            let ping = (t.ping > 0).then(|| conn.last_rx + t.ping);
            let idle = (t.idle > 0).then(|| conn.last_rx + t.idle);
            ping.into_iter().chain(idle).min()
        }
    }
}

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

    #[test]
    fn durations_round_up_to_ticks() {
        let cases = [(0, 0), (1, 1), (100, 1), (101, 2), (25_000, 250)];
        for (ms, expected) in cases {
            assert_eq!(ticks(Duration::from_millis(ms)), expected, "{ms} ms");
        }
    }

    #[test]
    fn limit_refuses_past_max_and_frees_on_release() {
        let limit = ConnLimit::new(2);
        assert!(limit.try_acquire());
        assert!(limit.try_acquire());
        assert!(!limit.try_acquire());
        limit.release();
        assert!(limit.try_acquire());
        assert_eq!(limit.open(), 2);
    }
}
