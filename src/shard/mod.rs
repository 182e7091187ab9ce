//! A shard: one event loop on one thread, owning its listener, driver, connection slab and timer
//! wheel. The loop is generic over [`Driver`], so the connection state machine below is written
//! once for io_uring and epoll.
//!
//! A loop turn: [`Driver::wait`] (submits everything queued, sleeps until an event or the next
//! wheel tick), handle every ready event (reads go through the HTTP head reader or the WebSocket
//! decoder, answers are encoded into the connection's outbox), flush (start one send per
//! connection with something queued and none in flight, close what must close), then advance
//! the wheel to the current tick.

use std::collections::HashMap;
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

mod api;
pub mod channels;
pub mod conn;
pub mod hub;
mod observe;
pub mod outbox;
mod pusher_conn;
pub mod slab;
pub mod wheel;

use conn::{Conn, NO_REASON, NOT_FILED, Phase, Route, flags};
use observe::Observe;

use crate::limits::{IpLimitError, IpLimits, OutboxPolicy, TokenBucket};
use crate::metrics::{DisconnectReason, Registry, RejectReason};
use wheel::{Tick, TimerWheel};

/// Length of one wheel tick, the granularity of every connection deadline. 100 ms keeps the
/// loop's wake-ups at ten a second when idle while every configured timeout (seconds) stays
/// accurate to a tenth of a second.
pub const TICK: Duration = Duration::from_millis(100);

/// The routing table: request path to what the connection serves. Later routes (`/health`,
/// `/metrics`) are rows here; `/app/{key}` ([`PUSHER_PREFIX`]) and the Pusher HTTP API
/// ([`crate::pusher::api::is_api_path`]) are matched by prefix.
const ROUTES: &[(&str, Route)] = &[
    ("/echo", Route::Echo),
    (crate::dashboard::FEED_PATH, Route::Feed),
];

/// Path prefix of Pusher client connections, `/app/{key}`.
const PUSHER_PREFIX: &str = "/app/";

/// The route of a WebSocket request path.
fn route_of(path: &str) -> Option<Route> {
    match ROUTES.iter().find(|(p, _)| *p == path) {
        Some(&(_, route)) => Some(route),
        None => path.starts_with(PUSHER_PREFIX).then_some(Route::Pusher),
    }
}

/// Longest control-frame payload (RFC 6455 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Inbound Ping and Pong frames allowed per [`CONTROL_WINDOW`] before the connection is closed
/// with 1008. `shared/LIMITS.md` asks for about 10 a second; 20 leaves room for a client that
/// sends a burst of pings at once (the Autobahn suite sends 10 back to back).
const MAX_CONTROL_FRAMES: u32 = 20;

/// The window [`MAX_CONTROL_FRAMES`] is counted over: one second of ticks.
const CONTROL_WINDOW: Tick = 10;

/// What a connection over `max_connections` is told before its socket closes (`LIMITS.md`:
/// 503 to new upgrades at capacity).
const CAPACITY_ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\
    Connection: close\r\n\r\n";

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
    stall: Tick,
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
            stall: ticks(config.write_stall_timeout).max(1),
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
    /// Stats, admin answers, dashboard feeds and per-IP slots.
    observe: Observe,
    /// Pusher sessions, channels and the shared hub.
    pusher: pusher_conn::PusherState,
    /// HTTP API requests whose body is still arriving.
    api_pending: HashMap<ConnKey, api::PendingApi>,
}

impl<D: Driver> Shard<D> {
    /// A shard that accepts on `listener` (bound, listening, non-blocking) once [`Shard::run`]s,
    /// alone in its process (a hub of one shard serving the configured apps).
    pub fn new(
        driver: D,
        listener: OwnedFd,
        config: Arc<Config>,
        mailbox: Mailbox,
        limit: Arc<ConnLimit>,
    ) -> io::Result<Self> {
        let hub = Arc::new(hub::Hub::for_config(&config, 1).map_err(io::Error::other)?);
        Self::with_hub(driver, listener, config, mailbox, limit, hub, 0)
    }

    /// Shard number `index` of the shards sharing `hub`.
    pub fn with_hub(
        mut driver: D,
        listener: OwnedFd,
        config: Arc<Config>,
        mailbox: Mailbox,
        limit: Arc<ConnLimit>,
        hub: Arc<hub::Hub>,
        index: usize,
    ) -> io::Result<Self> {
        driver.listen(listener)?;
        let ticks = Ticks::new(&config);
        let observe = Observe::standalone(&config, driver.backend());
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
                observe,
                pusher: pusher_conn::PusherState::new(hub, index),
                api_pending: HashMap::new(),
            },
        })
    }

    /// Makes this shard number `id` of the process: it publishes its stats to `registry`'s slot
    /// `id` and charges client addresses to the process-wide `ip_limits`.
    #[must_use]
    pub fn with_shared(
        mut self,
        id: usize,
        registry: Arc<Registry>,
        ip_limits: Arc<IpLimits>,
    ) -> Self {
        let admin_on_main = self.core.config.admin_listen.is_none();
        self.core.observe = Observe::new(id, registry, ip_limits, admin_on_main);
        self
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
            if now > self.core.now {
                let late = Instant::now().saturating_duration_since(next_tick);
                self.core.observe.stats.record_loop_lag(late);
            }
            self.core.advance(now);
            self.core.handle_tick_observe();
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
                        MeshMessage::Publish {
                            app,
                            channel,
                            frame,
                            exclude,
                        } => core.deliver_local(app, &channel, frame, exclude),
                        MeshMessage::TerminateUser { app, user_id } => {
                            core.terminate_user(app, &user_id)
                        }
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
                core.forget_pusher(key);
                core.api_pending.remove(&key);
                if let Some(conn) = core.conns.remove(key) {
                    core.handle_removed(key, &conn);
                }
                core.limit.release();
                continue;
            }
            if !conn.has(flags::SEND_IN_FLIGHT) && !conn.outbox.is_empty() {
                core.observe
                    .stats
                    .record_outbox(conn.outbox.queued_bytes() as u64);
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

    /// A connection left the slab: its disconnect, its per-IP slot, the gauges.
    fn handle_removed(&mut self, key: ConnKey, conn: &Conn) {
        let was_open = conn.route != Route::None;
        if was_open {
            let reason = DisconnectReason::ALL
                .get(usize::from(conn.reason))
                .copied()
                .unwrap_or(DisconnectReason::ConnectionLost);
            let code = (conn.close_code != 0).then_some(conn.close_code);
            self.observe.stats.record_disconnect(reason, code);
        }
        self.observe.handle_closed(key, was_open);
    }

    /// Once per loop turn: publishes the stats (the channel gauges once a second) and sends a
    /// dashboard frame when one is due.
    fn handle_tick_observe(&mut self) {
        if self.now.is_multiple_of(10) {
            let (channels, subscriptions) = self.pusher.channels.counts();
            self.observe.stats.set_channels(channels);
            self.observe.stats.set_subscriptions(subscriptions);
        }
        self.observe.publish();
        let conns = &self.conns;
        let is_feed = |key| {
            conns
                .get(key)
                .is_some_and(|c: &Conn| c.route == Route::Feed && c.phase == Phase::Open)
        };
        let Some((frame, keys)) = self.observe.poll_feed(self.now, is_feed) else {
            return;
        };
        let mut encoded = Vec::with_capacity(frame.len() + 10);
        ws::encode_frame(&mut encoded, true, OpCode::Text, frame.as_bytes());
        let encoded = Bytes::from(encoded);
        let keys = keys.to_vec();
        for key in keys {
            self.push_frame(key, encoded.clone(), false);
        }
    }

    fn drain_done(&self) -> bool {
        self.drain_until
            .is_some_and(|until| self.conns.is_empty() || self.now >= until)
    }

    fn handle_accept(&mut self, driver: &mut impl Driver, socket: OwnedFd) {
        if self.drain_until.is_some() {
            self.observe.stats.record_reject(RejectReason::Draining);
            return;
        }
        if !self.limit.try_acquire() {
            self.observe.stats.record_reject(RejectReason::Capacity);
            // The client has not sent its request yet, but an HTTP client reads an early
            // answer; one short non-blocking send into an empty socket buffer, then close.
            let _ = socket2::SockRef::from(&socket)
                .send_with_flags(CAPACITY_ANSWER, libc::MSG_DONTWAIT);
            return;
        }
        let peer = socket2::SockRef::from(&socket)
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.ip());
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
        self.observe.handle_accept(key, peer);
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
            Ok(n) => {
                conn.outbox.handle_sent(n);
                if n > 0 {
                    conn.last_tx = self.now;
                }
                self.observe.stats.record_bytes_sent(n as u64);
            }
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
            Phase::Handshake => match self.observe.handle_proxy_header(key, data) {
                Ok(skip) => self.handle_head_bytes(key, data.get(skip..).unwrap_or_default()),
                Err(()) => {
                    self.observe
                        .stats
                        .record_reject(RejectReason::HandshakeError);
                    self.close_now(key);
                }
            },
            Phase::Open | Phase::Closing => self.handle_ws_bytes(key, data),
            // A slow consumer that keeps sending while its close frame waits for room: it reads
            // nothing, so the close would only come at the close deadline while its bytes are
            // read and dropped meanwhile. Close TCP now.
            Phase::Flushing if conn.reason == DisconnectReason::SlowConsumer as u8 => {
                self.close_now(key);
            }
            // Another peer we failed (RFC 6455 7.1.7: flood, rate, protocol, size) keeps
            // sending while our close frame waits: its bytes are dropped, up to the rest of one
            // largest frame so that a peer that reads still learns why. Past that it may never
            // read, and the shard would read and drop until the close deadline: close TCP now.
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

    fn handle_head_bytes(&mut self, key: ConnKey, data: &[u8]) {
        if self.handle_api_bytes(key, data) {
            return;
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let reader = conn.head.get_or_insert_with(Default::default);
        match reader.handle_read(&self.config.http, data) {
            Ok(http::Status::Partial) => {}
            Ok(http::Status::Complete(_)) => self.answer_handshake(key),
            Err(e) => {
                self.observe
                    .stats
                    .record_reject(RejectReason::HandshakeError);
                self.http_error(key, e.status(), &[]);
            }
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
        let observe = &mut self.observe;
        let mut target = None;
        let outcome = match reader.parse(&self.config.http) {
            Err(e) => Err((e.status(), &[][..])),
            Ok(_) if draining => Err((StatusCode::SERVICE_UNAVAILABLE, &[][..])),
            Ok(req)
                if !req.is_websocket_upgrade() && observe.write_admin(req.path, &mut self.out) =>
            {
                conn.head = None;
                conn.enter(Phase::Flushing, self.now);
                self.push_out(key);
                self.schedule(key);
                return;
            }
            Ok(req) if crate::pusher::api::is_api_path(req.path) && !req.is_websocket_upgrade() => {
                let early = reader.buffered_after_head();
                self.begin_api(key, &req, early);
                return;
            }
            Ok(req) => match route_of(req.path) {
                None => Err((StatusCode::NOT_FOUND, &[][..])),
                Some(Route::Feed) if !observe.admin_on_main() => {
                    Err((StatusCode::NOT_FOUND, &[][..]))
                }
                Some(route) => match http::validate_upgrade(&req, &self.config.http) {
                    Ok(upgrade) => match admit_ip(observe, key, &req, &self.config) {
                        Err(status) => Err((status, &[][..])),
                        Ok(()) => {
                            let accept = ws::accept_key(upgrade.key);
                            http::write_switching_protocols(&mut self.out, &accept, None);
                            if route == Route::Pusher {
                                target = Some(req.target.to_owned());
                            }
                            Ok(route)
                        }
                    },
                    Err(e) => Err((e.status(), e.extra_headers())),
                },
            },
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match outcome {
            Err((status, extra)) => {
                let reason = match status {
                    StatusCode::TOO_MANY_REQUESTS => None,
                    StatusCode::SERVICE_UNAVAILABLE => Some(RejectReason::Draining),
                    StatusCode::FORBIDDEN => Some(RejectReason::Origin),
                    _ => Some(RejectReason::HandshakeError),
                };
                if let Some(reason) = reason {
                    self.observe.stats.record_reject(reason);
                }
                self.http_error(key, status, extra)
            }
            Ok(route) => {
                let rate = self.config.message_rate;
                conn.route = route;
                conn.msg_bucket = TokenBucket::full(rate.messages_per_second, self.now);
                conn.byte_bucket = TokenBucket::full(rate.bytes_per_second, self.now);
                let handshake = TICK * self.now.saturating_sub(conn.since);
                self.observe.stats.record_accept(handshake);
                self.observe.handle_open(key, route == Route::Feed);
                conn.enter(Phase::Open, self.now);
                self.push_out(key);
                self.schedule(key);
                if let Some(target) = target {
                    self.open_pusher(key, &target);
                }
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
        let now = self.now;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let echo = conn.route == Route::Echo;
        let pusher = conn.route == Route::Pusher;
        let out = &mut self.out;
        let rate = self.config.message_rate;
        let (msg_bucket, byte_bucket) = (&mut conn.msg_bucket, &mut conn.byte_bucket);
        let (mut received, mut sent, mut over_rate) = (0u64, 0u64, false);
        let mut allow = |len: usize| {
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
            self.push_out(key);
            self.handle_pusher_texts(key);
        }
        self.push_out(key);
    }

    /// Moves what was encoded into the connection's outbox, enforcing the outbox limit.
    fn push_out(&mut self, key: ConnKey) {
        if self.out.is_empty() {
            return;
        }
        if self.conns.get(key).is_none() {
            self.out.clear();
            return;
        }
        let frame = Bytes::copy_from_slice(&self.out);
        self.out.clear();
        self.push_frame(key, frame, false);
    }

    /// Queues one buffer (a frame shared with other connections, or this connection's own
    /// bytes) on the connection's outbox, enforcing the outbox limit (never lossy).
    fn enqueue(&mut self, key: ConnKey, bytes: Bytes) {
        self.push_frame(key, bytes, false);
    }

    /// Queues an encoded `frame` (whole WebSocket frames) to the connection, enforcing the
    /// outbox cap. This is the path for fan-out: `frame` is shared, not copied. A `lossy` frame
    /// (a channel marked lossy) under [`OutboxPolicy::DropOldest`] makes room by dropping the
    /// oldest queued frames instead of closing; anything else over the cap closes the
    /// connection as a slow consumer (1008; the code follows [`slow_consumer_code`]).
    fn push_frame(&mut self, key: ConnKey, frame: Bytes, lossy: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.has(flags::CLOSE_NOW) {
            // Going at the next flush: queue nothing more.
            return;
        }
        let was_idle = conn.outbox.is_empty() && !conn.has(flags::SEND_IN_FLIGHT);
        if was_idle {
            conn.last_tx = self.now;
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
        if conn.outbox.queued_bytes() > max {
            if lossy && self.config.outbox_policy == OutboxPolicy::DropOldest {
                // Frames handed to the driver stay: the socket may be mid-way through them.
                let in_flight = if conn.has(flags::SEND_IN_FLIGHT) {
                    crate::driver::MAX_SEND_FRAMES
                } else {
                    0
                };
                conn.outbox.drop_oldest(in_flight, max);
                if conn.outbox.queued_bytes() <= max {
                    return;
                }
            }
            let code = slow_consumer_code(conn.route);
            set_reason(conn, DisconnectReason::SlowConsumer, Some(code));
            // A slow consumer. Without a send in flight the queue can be replaced by a close
            // frame; with one, the stream may stop mid-frame, so only closing TCP is safe. The
            // queue is dropped now either way: a send in flight holds its own references.
            if conn.has(flags::SEND_IN_FLIGHT) || conn.phase == Phase::Flushing {
                conn.outbox.clear();
                conn.flags |= flags::CLOSE_NOW;
            } else {
                conn.outbox.clear();
                let close = CloseFrame {
                    code,
                    reason: "slow consumer",
                };
                let mut frame = Vec::with_capacity(2 + 2 + close.reason.len());
                ws::encode_close(&mut frame, Some(close), None);
                conn.outbox.push(Bytes::from(frame));
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
        self.observe.handle_drain();
        self.drain_until = Some(self.now.saturating_add(self.ticks.drain));
        let keys: Vec<ConnKey> = self.conns.keys().collect();
        for key in keys {
            match self.conns.get(key).map(|conn| conn.phase) {
                Some(Phase::Handshake) => {
                    self.http_error(key, StatusCode::SERVICE_UNAVAILABLE, &[]);
                }
                Some(Phase::Open)
                    if self.conns.get(key).map(|c| c.route) == Some(Route::Pusher) =>
                {
                    // 4200: pusher-js reconnects at once, to another instance.
                    let code = crate::pusher::CloseCode::Reconnect;
                    self.start_close(key, code.into(), "server draining")
                }
                Some(Phase::Open) => {
                    if let Some(conn) = self.conns.get_mut(key) {
                        set_reason(conn, DisconnectReason::Drain, Some(CloseCode::GOING_AWAY));
                    }
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
            Phase::Handshake => {
                self.observe
                    .stats
                    .record_reject(RejectReason::HandshakeTimeout);
                self.close_now(key);
            }
            Phase::Closing | Phase::Flushing => self.close_now(key),
            // Bytes queued and none taken by the socket for the stall timeout: the peer stopped
            // reading. A send may be in flight, so only closing TCP is safe.
            Phase::Open
                if !conn.outbox.is_empty() && now >= conn.last_tx.saturating_add(t.stall) =>
            {
                set_reason(conn, DisconnectReason::SlowConsumer, None);
                conn.outbox.clear();
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
                    conn.last_tx = now;
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

/// The tick the connection's current deadline falls on; `None` when it has none.
fn deadline(t: &Ticks, conn: &Conn) -> Option<Tick> {
    match conn.phase {
        Phase::Handshake => Some(conn.since + t.handshake),
        Phase::Closing | Phase::Flushing => Some(conn.since + t.close),
        Phase::Open => {
            let stall = (!conn.outbox.is_empty()).then(|| conn.last_tx.saturating_add(t.stall));
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

/// Charges the upgrade to its client address (the TCP peer, or the forwarded client when the
/// peer is a trusted proxy): `Err(429)` when the address is over its connection or handshake
/// limit, counted in the rejects.
fn admit_ip(
    observe: &mut Observe,
    key: ConnKey,
    req: &http::Request<'_>,
    config: &Config,
) -> Result<(), StatusCode> {
    let Some(peer) = observe.peer(key) else {
        return Ok(());
    };
    let forwarded: Vec<&[u8]> = req.header_values("x-forwarded-for").collect();
    let client = crate::limits::client_ip(peer, &forwarded, &config.ip_limits.trusted_proxies);
    if !observe.ip_limits().applies_to(client) {
        return Ok(());
    }
    match observe.ip_limits().try_acquire(client, Instant::now()) {
        Ok(()) => {
            observe.hold_ip(key, client);
            Ok(())
        }
        Err(error) => {
            let reason = match error {
                IpLimitError::TooManyConnections => RejectReason::PerIp,
                IpLimitError::TooManyHandshakes => RejectReason::Rate,
            };
            observe.stats.record_reject(reason);
            Err(StatusCode::TOO_MANY_REQUESTS)
        }
    }
}

/// Whether a disconnect `reason` (as stored in the connection) means the server failed the
/// connection for what the peer sent, after which at most [`FAILED_READ_BUDGET`] more bytes are
/// read (and dropped) while the close frame waits.
fn is_failure(reason: u8) -> bool {
    [
        DisconnectReason::RateLimit,
        DisconnectReason::Policy,
        DisconnectReason::ProtocolError,
        DisconnectReason::MessageTooBig,
    ]
    .iter()
    .any(|r| *r as u8 == reason)
}

/// The close code a slow consumer of `route` gets: `LIMITS.md` says 1008 for echo and 4100
/// for Pusher connections (over capacity: back off, then reconnect).
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
fn set_reason(conn: &mut Conn, reason: DisconnectReason, code: Option<CloseCode>) {
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
/// `max_message_size` may be configured to (16 MiB, `shared/LIMITS.md`) plus its header, so a
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

/// The connection state machine driven through a fake driver: events in, bytes out, simulated
/// ticks; no sockets or clocks involved.
#[cfg(test)]
mod state_tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::driver::RecvBuf;
    use crate::driver::sys::Waker;

    #[derive(Default)]
    struct FakeDriver {
        bufs: Vec<Vec<u8>>,
        sent: Vec<(ConnKey, Vec<u8>)>,
        closed: Vec<ConnKey>,
        stopped_accepting: bool,
        waker: Option<Waker>,
    }

    impl Driver for FakeDriver {
        fn backend(&self) -> &'static str {
            "fake"
        }
        fn listen(&mut self, _listener: OwnedFd) -> io::Result<()> {
            Ok(())
        }
        fn stop_accepting(&mut self) {
            self.stopped_accepting = true;
        }
        fn register(&mut self, _key: ConnKey, _socket: OwnedFd) -> io::Result<()> {
            Ok(())
        }
        fn adopt_connecting(&mut self, _key: ConnKey, _socket: OwnedFd) -> io::Result<()> {
            Ok(())
        }
        fn resume_recv(&mut self, _key: ConnKey) {}
        fn send(&mut self, key: ConnKey, frames: &mut Vec<Bytes>) {
            self.sent.push((key, frames.concat()));
            frames.clear();
        }
        fn close(&mut self, key: ConnKey) {
            self.closed.push(key);
        }
        fn wait(&mut self, _timeout: Duration) -> io::Result<()> {
            Ok(())
        }
        fn poll_event(&mut self) -> Option<Event> {
            None
        }
        fn recv_buf(&mut self, buf: RecvBuf) -> &mut [u8] {
            &mut self.bufs[usize::from(buf.id)]
        }
        fn release(&mut self, _buf: RecvBuf) {}
        fn waker(&self) -> Waker {
            self.waker.clone().expect("waker")
        }
    }

    struct Harness {
        shard: Shard<FakeDriver>,
        transmit: Vec<Bytes>,
        _peers: VecDeque<std::os::unix::net::UnixStream>,
    }

    fn fd() -> (OwnedFd, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        (OwnedFd::from(a), b)
    }

    impl Harness {
        fn new(config: Config) -> Self {
            let eventfd = Arc::new(crate::driver::sys::eventfd().expect("eventfd"));
            let waker = Waker::new(eventfd);
            let (_tx, mailbox) = Mailbox::new(waker.clone());
            let driver = FakeDriver {
                waker: Some(waker),
                ..FakeDriver::default()
            };
            let (listener, peer) = fd();
            let limit = Arc::new(ConnLimit::new(100));
            let shard =
                Shard::new(driver, listener, Arc::new(config), mailbox, limit).expect("shard");
            Self {
                shard,
                transmit: Vec::new(),
                _peers: VecDeque::from([peer]),
            }
        }

        fn accept(&mut self) -> ConnKey {
            let (socket, peer) = fd();
            self._peers.push_back(peer);
            self.shard.handle_event(Event::Accepted(socket));
            self.shard.core.conns.keys().last().expect("accepted")
        }

        /// Feeds bytes, flushes, completes every send, returns what was sent.
        fn read(&mut self, key: ConnKey, bytes: &[u8]) -> Vec<u8> {
            self.shard.driver.bufs = vec![bytes.to_vec()];
            let buf = RecvBuf {
                id: 0,
                len: bytes.len() as u32,
            };
            self.shard.handle_event(Event::Recv { key, buf });
            self.settle(key)
        }

        fn settle(&mut self, key: ConnKey) -> Vec<u8> {
            let mut out = Vec::new();
            loop {
                self.shard.flush(&mut self.transmit);
                let sent = std::mem::take(&mut self.shard.driver.sent);
                if sent.is_empty() {
                    return out;
                }
                for (k, bytes) in sent {
                    assert_eq!(k, key);
                    out.extend_from_slice(&bytes);
                    self.shard.handle_event(Event::Sent {
                        key: k,
                        result: Ok(bytes.len()),
                    });
                }
            }
        }

        fn advance(&mut self, key: ConnKey, now: Tick) -> Vec<u8> {
            self.shard.core.advance(now);
            self.settle(key)
        }

        fn closed(&self, key: ConnKey) -> bool {
            self.shard.driver.closed.contains(&key) && self.shard.core.conns.get(key).is_none()
        }

        fn upgrade(&mut self, key: ConnKey) {
            let out = self.read(key, UPGRADE);
            assert!(
                out.starts_with(b"HTTP/1.1 101 "),
                "{}",
                String::from_utf8_lossy(&out)
            );
        }
    }

    const UPGRADE: &[u8] = b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        ws::encode_masked_frame(
            &mut out,
            true,
            OpCode::from_bits(opcode).expect("op"),
            payload,
            [1, 2, 3, 4],
        );
        out
    }

    fn close_code(frame: &[u8]) -> u16 {
        assert_eq!(frame[0], 0x88, "not a close frame: {frame:?}");
        u16::from_be_bytes([frame[2], frame[3]])
    }

    #[test]
    fn upgrade_then_echo_then_close_handshake() {
        let mut h = Harness::new(Config::default());
        let key = h.accept();
        h.upgrade(key);
        assert!(
            h.shard.core.conns.get(key).expect("conn").head.is_none(),
            "head reader freed"
        );
        assert_eq!(h.read(key, &masked(0x1, b"hello")), b"\x81\x05hello");
        assert_eq!(
            h.read(key, &masked(0x2, &[7; 200]))[..4],
            [0x82, 126, 0, 200]
        );
        let mut close = Vec::new();
        ws::encode_close(
            &mut close,
            Some(CloseFrame {
                code: CloseCode::NORMAL,
                reason: "",
            }),
            Some([9; 4]),
        );
        let reply = h.read(key, &close);
        assert_eq!(close_code(&reply), 1000);
        assert!(
            h.closed(key),
            "server closes TCP once its close answer is sent"
        );
    }

    #[test]
    fn frames_sent_with_the_head_are_echoed() {
        let mut h = Harness::new(Config::default());
        let key = h.accept();
        let mut bytes = UPGRADE.to_vec();
        bytes.extend(masked(0x1, b"early"));
        let out = h.read(key, &bytes);
        assert!(out.starts_with(b"HTTP/1.1 101 "));
        assert!(out.ends_with(b"\x81\x05early"));
    }

    #[test]
    fn http_answers_then_closes() {
        let cases: [(&[u8], &str); 3] = [
            (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 404 "),
            (b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 426 "),
            (b"BROKEN\r\n\r\n", "HTTP/1.1 400 "),
        ];
        for (request, status) in cases {
            let mut h = Harness::new(Config::default());
            let key = h.accept();
            let out = h.read(key, request);
            assert!(
                out.starts_with(status.as_bytes()),
                "{}",
                String::from_utf8_lossy(&out)
            );
            assert!(h.closed(key));
        }
    }

    #[test]
    fn protocol_error_gets_its_close_code() {
        let mut h = Harness::new(Config::default());
        let key = h.accept();
        h.upgrade(key);
        let unmasked = [0x81, 0x02, b'h', b'i'];
        assert_eq!(close_code(&h.read(key, &unmasked)), 1002);
        assert!(h.closed(key));
    }

    #[test]
    fn handshake_deadline_closes_a_slow_client_only() {
        let config = Config {
            handshake_timeout: Duration::from_secs(1),
            ..Config::default()
        };
        let mut h = Harness::new(config);
        let slow = h.accept();
        h.read(slow, b"GET /echo HTTP/1.1\r\n");
        h.advance(slow, 9);
        assert!(!h.closed(slow));
        h.advance(slow, 10);
        assert!(h.closed(slow), "half-open handshake closed at its deadline");
    }

    #[test]
    fn silent_connection_is_pinged_then_closed_1011() {
        let config = Config {
            ping_interval: Duration::from_secs(1),
            pong_timeout: Duration::from_secs(1),
            close_timeout: Duration::from_secs(1),
            ..Config::default()
        };
        let mut h = Harness::new(config);
        let key = h.accept();
        h.upgrade(key);
        assert_eq!(h.advance(key, 9), b"");
        assert_eq!(h.advance(key, 10), PING_FRAME);
        assert_eq!(close_code(&h.advance(key, 20)), 1011);
        assert!(!h.closed(key), "waits close_timeout for the peer's close");
        h.advance(key, 30);
        assert!(h.closed(key));
    }

    #[test]
    fn any_byte_answers_a_ping() {
        let config = Config {
            ping_interval: Duration::from_secs(1),
            pong_timeout: Duration::from_secs(1),
            ..Config::default()
        };
        let mut h = Harness::new(config);
        let key = h.accept();
        h.upgrade(key);
        assert_eq!(h.advance(key, 10), PING_FRAME);
        h.shard.core.now = 15;
        h.read(key, &masked(0xA, b""));
        assert_eq!(h.advance(key, 24), b"", "no close: the pong arrived");
        assert_eq!(
            h.advance(key, 25),
            PING_FRAME,
            "next ping after another quiet interval"
        );
    }

    #[test]
    fn pings_in_one_read_get_one_pong_for_the_latest() {
        let mut h = Harness::new(Config::default());
        let key = h.accept();
        h.upgrade(key);
        let mut bytes = masked(0x9, b"first");
        bytes.extend(masked(0x9, b"second"));
        assert_eq!(h.read(key, &bytes), b"\x8a\x06second");
    }

    #[test]
    fn control_frame_flood_closes_1008() {
        let mut h = Harness::new(Config::default());
        let key = h.accept();
        h.upgrade(key);
        let ping = masked(0x9, b"");
        for _ in 0..MAX_CONTROL_FRAMES {
            assert_eq!(h.read(key, &ping), b"\x8a\x00");
        }
        assert!(!h.closed(key), "the limit itself is allowed");
        let reply = h.read(key, &ping);
        assert_eq!(close_code(&reply), 1008);
        assert!(h.closed(key));
    }

    #[test]
    fn control_frame_budget_refills_each_window() {
        let mut h = Harness::new(Config::default());
        let key = h.accept();
        h.upgrade(key);
        let ping = masked(0x9, b"");
        for round in 0..3 {
            h.shard.core.now = round * CONTROL_WINDOW;
            for _ in 0..MAX_CONTROL_FRAMES {
                assert_eq!(h.read(key, &ping), b"\x8a\x00");
            }
        }
        assert!(!h.closed(key));
    }

    #[test]
    fn drain_answers_handshakes_503_and_open_connections_1001() {
        let mut h = Harness::new(Config::default());
        let open = h.accept();
        h.upgrade(open);
        let pending = h.accept();
        h.read(pending, b"GET /echo HTTP/1.1\r\n");
        h.shard.core.begin_drain(&mut h.shard.driver);
        assert!(h.shard.driver.stopped_accepting);
        h.shard.flush(&mut h.transmit);
        let sent = std::mem::take(&mut h.shard.driver.sent);
        let to = |key| {
            sent.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, b)| b.clone())
                .expect("sent")
        };
        assert_eq!(close_code(&to(open)), 1001);
        assert!(to(pending).starts_with(b"HTTP/1.1 503 "));
        assert!(!h.shard.core.drain_done());
    }

    fn pusher_upgrade(key: &str) -> Vec<u8> {
        format!(
            "GET /app/{key}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .into_bytes()
    }

    fn app_key(h: &Harness) -> String {
        let apps = h.shard.core.pusher.hub.apps();
        apps.iter()
            .next()
            .map(|a| a.key.clone())
            .unwrap_or_default()
    }

    #[test]
    fn pusher_connection_is_established_and_subscribes() {
        let mut h = Harness::new(Config::default());
        let key = h.accept();
        let out = h.read(key, &pusher_upgrade(&app_key(&h)));
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
        assert!(text.contains("pusher:connection_established"), "{text}");
        let subscribe = masked(
            0x1,
            br#"{"event":"pusher:subscribe","data":{"channel":"chat"}}"#,
        );
        let out = h.read(key, &subscribe);
        assert!(String::from_utf8_lossy(&out).contains("subscription_succeeded"));
        let hub = &h.shard.core.pusher.hub;
        let stats = hub.stats(crate::pusher::AppIndex(0), "chat");
        assert_eq!(stats.subscription_count, 1);
        h.shard.handle_event(Event::Eof { key });
        h.shard.flush(&mut h.transmit);
        let stats = h
            .shard
            .core
            .pusher
            .hub
            .stats(crate::pusher::AppIndex(0), "chat");
        assert_eq!(
            stats.subscription_count, 0,
            "a closed connection is unsubscribed"
        );
    }

    #[test]
    fn pusher_unknown_app_gets_4001() {
        let mut h = Harness::new(Config::default());
        let key = h.accept();
        let out = h.read(key, &pusher_upgrade("no-such-key"));
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains(r#""code":4001"#), "{text}");
        let close_at = out
            .windows(2)
            .rposition(|w| w[0] == 0x88)
            .expect("close frame");
        assert_eq!(close_code(&out[close_at..]), 4001);
    }

    #[test]
    fn app_over_its_connection_cap_gets_4004() {
        let mut app = crate::pusher::AppConfig::new("1", "capped", "secret");
        app.limits.max_connections = Some(1);
        let mut h = Harness::new(Config {
            apps: vec![app],
            ..Config::default()
        });
        let first = h.accept();
        let out = h.read(first, &pusher_upgrade("capped"));
        assert!(String::from_utf8_lossy(&out).contains("connection_established"));
        let second = h.accept();
        let out = h.read(second, &pusher_upgrade("capped"));
        assert!(String::from_utf8_lossy(&out).contains(r#""code":4004"#));
        // Both gone, so the next accept is the only connection (the harness finds it last).
        h.shard.handle_event(Event::Eof { key: first });
        h.shard.handle_event(Event::Eof { key: second });
        h.shard.flush(&mut h.transmit);
        let third = h.accept();
        let out = h.read(third, &pusher_upgrade("capped"));
        assert!(
            String::from_utf8_lossy(&out).contains("connection_established"),
            "a closed connection frees its place"
        );
    }

    #[test]
    fn pusher_ping_then_4201_without_an_answer() {
        let config = Config {
            ping_interval: Duration::from_secs(1),
            pong_timeout: Duration::from_secs(1),
            ..Config::default()
        };
        let mut h = Harness::new(config);
        let key = h.accept();
        let out = h.read(key, &pusher_upgrade(&app_key(&h)));
        assert!(String::from_utf8_lossy(&out).contains(r#"activity_timeout\":1"#));
        let ping = h.advance(key, 10);
        assert!(String::from_utf8_lossy(&ping).contains("pusher:ping"));
        assert_eq!(close_code(&h.advance(key, 20)), 4201);
    }

    #[test]
    fn pusher_connections_drain_with_4200() {
        let mut h = Harness::new(Config::default());
        let key = h.accept();
        h.read(key, &pusher_upgrade(&app_key(&h)));
        h.shard.core.begin_drain(&mut h.shard.driver);
        assert_eq!(close_code(&h.settle(key)), 4200);
    }

    #[test]
    fn slow_pusher_subscriber_is_closed_with_4100() {
        let config = Config {
            // Room for the 101 and connection_established, not for the event below.
            max_outbox_bytes: 400,
            ..Config::default()
        };
        let mut h = Harness::new(config);
        let key = h.accept();
        h.read(key, &pusher_upgrade(&app_key(&h)));
        let subscribe = masked(
            0x1,
            br#"{"event":"pusher:subscribe","data":{"channel":"big"}}"#,
        );
        h.read(key, &subscribe);
        let frame = crate::pusher::encode_event_frame("e", "big", &"x".repeat(1000), None);
        let app = crate::pusher::AppIndex(0);
        h.shard.core.publish(app, "big".into(), frame, None, true);
        assert_eq!(close_code(&h.settle(key)), 4100);
    }

    #[test]
    fn publish_shares_one_buffer_between_subscribers() {
        let mut h = Harness::new(Config::default());
        let upgrade = pusher_upgrade(&app_key(&h));
        let subscribe = masked(
            0x1,
            br#"{"event":"pusher:subscribe","data":{"channel":"news"}}"#,
        );
        let mut keys = Vec::new();
        for _ in 0..3 {
            let key = h.accept();
            h.read(key, &upgrade);
            h.read(key, &subscribe);
            keys.push(key);
        }
        let frame = crate::pusher::encode_event_frame("e", "news", "{}", None);
        let app = crate::pusher::AppIndex(0);
        h.shard
            .core
            .publish(app, "news".into(), frame.clone(), None, true);
        let mut starts = Vec::new();
        for key in &keys {
            let conn = h.shard.core.conns.get(*key).expect("conn");
            let mut queued = Vec::new();
            conn.outbox.poll_transmit(&mut queued);
            assert_eq!(queued.len(), 1);
            assert_eq!(&queued[0][..], frame.as_bytes());
            starts.push(queued[0].as_ptr());
        }
        assert!(
            starts.iter().all(|&p| p == frame.as_bytes().as_ptr()),
            "every outbox points at the publisher's buffer"
        );
    }

    #[test]
    fn each_subscriber_reached_counts_one_delivery() {
        let mut h = Harness::new(Config::default());
        let upgrade = pusher_upgrade(&app_key(&h));
        let subscribe = masked(
            0x1,
            br#"{"event":"pusher:subscribe","data":{"channel":"news"}}"#,
        );
        let mut keys = Vec::new();
        for _ in 0..2 {
            let key = h.accept();
            h.read(key, &upgrade);
            h.read(key, &subscribe);
            keys.push(key);
        }
        assert_eq!(h.shard.core.observe.stats.deliveries, 0);
        let frame = crate::pusher::encode_event_frame("e", "news", "{}", None);
        let app = crate::pusher::AppIndex(0);
        h.shard
            .core
            .publish(app, "news".into(), frame.clone(), None, true);
        assert_eq!(h.shard.core.observe.stats.deliveries, 2);
        // As a publish from another shard arrives: the excluded sender is not reached.
        let sender = h.shard.core.pusher.socket_id(keys[0]);
        h.shard.core.deliver_local(app, "news", frame, Some(sender));
        assert_eq!(h.shard.core.observe.stats.deliveries, 3);
    }

    #[test]
    fn api_body_over_the_limit_is_refused_before_it_is_read() {
        let mut h = Harness::new(Config::default());
        let key = h.accept();
        let request = b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\n\
            Content-Length: 99999999\r\n\r\n";
        let out = h.read(key, request);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
        assert!(h.closed(key));
    }

    #[test]
    fn api_body_split_across_reads_is_answered_once_complete() {
        let mut h = Harness::new(Config::default());
        let key = h.accept();
        let head = b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n{}";
        assert_eq!(h.read(key, head), b"", "waits for the rest of the body");
        let out = h.read(key, b"  ");
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 401 "), "unsigned: {text}");
    }

    #[test]
    fn events_for_a_closed_connection_are_ignored() {
        let mut h = Harness::new(Config::default());
        let key = h.accept();
        h.shard.handle_event(Event::Eof { key });
        h.shard.flush(&mut h.transmit);
        assert!(h.closed(key));
        let reused = h.accept();
        assert_eq!(reused.slot, key.slot);
        h.read(key, UPGRADE);
        h.shard.handle_event(Event::Sent {
            key,
            result: Ok(10),
        });
        h.shard.flush(&mut h.transmit);
        let conn = h
            .shard
            .core
            .conns
            .get(reused)
            .expect("reused slot untouched");
        assert_eq!(conn.phase, Phase::Handshake);
        assert!(conn.head.is_none());
    }

    fn disconnects(h: &Harness, reason: DisconnectReason) -> u64 {
        let stats = &h.shard.core.observe.stats;
        stats.disconnects[reason as usize].iter().sum()
    }

    #[test]
    fn message_rate_over_the_limit_closes_1008_and_is_counted() {
        let mut config = Config::default();
        config.message_rate.messages_per_second = 3;
        let mut h = Harness::new(config);
        let key = h.accept();
        h.upgrade(key);
        let mut burst = Vec::new();
        for _ in 0..4 {
            burst.extend(masked(0x1, b"x"));
        }
        let out = h.read(key, &burst);
        assert_eq!(
            &out[..9],
            b"\x81\x01x\x81\x01x\x81\x01x",
            "the burst is served"
        );
        assert_eq!(close_code(&out[9..]), 1008);
        assert!(h.closed(key));
        assert_eq!(disconnects(&h, DisconnectReason::RateLimit), 1);
        assert_eq!(h.shard.core.observe.stats.messages_received, 4);
    }

    #[test]
    fn message_rate_refills_over_time() {
        let mut config = Config::default();
        config.message_rate.messages_per_second = 10;
        let mut h = Harness::new(config);
        let key = h.accept();
        h.upgrade(key);
        for second in 0..3 {
            h.shard.core.now = second * 10;
            for _ in 0..10 {
                assert_eq!(h.read(key, &masked(0x1, b"x")), b"\x81\x01x");
            }
        }
        assert!(!h.closed(key));
    }

    #[test]
    fn byte_rate_over_the_limit_closes_1008() {
        let mut config = Config::default();
        config.message_rate.bytes_per_second = 100;
        let mut h = Harness::new(config);
        let key = h.accept();
        h.upgrade(key);
        assert_eq!(h.read(key, &masked(0x2, &[0; 60]))[..2], [0x82, 60]);
        assert_eq!(close_code(&h.read(key, &masked(0x2, &[0; 60]))), 1008);
        assert_eq!(disconnects(&h, DisconnectReason::RateLimit), 1);
    }

    #[test]
    fn oversized_message_closes_1009_and_is_counted() {
        let mut config = Config::default();
        config.ws.max_message_size = 100;
        config.ws.max_frame_size = 100;
        let mut h = Harness::new(config);
        let key = h.accept();
        h.upgrade(key);
        assert_eq!(close_code(&h.read(key, &masked(0x2, &[0; 101]))), 1009);
        assert_eq!(disconnects(&h, DisconnectReason::MessageTooBig), 1);
    }

    #[test]
    fn stalled_writer_is_closed_at_the_write_stall_deadline() {
        let config = Config {
            write_stall_timeout: Duration::from_secs(1),
            ..Config::default()
        };
        let mut h = Harness::new(config);
        let key = h.accept();
        h.upgrade(key);
        // A message whose echo is handed to the driver and never completes.
        h.shard.driver.bufs = vec![masked(0x1, b"hi")];
        let buf = RecvBuf { id: 0, len: 8 };
        h.shard.handle_event(Event::Recv { key, buf });
        h.shard.flush(&mut h.transmit);
        assert_eq!(h.shard.driver.sent.len(), 1, "echo handed to the driver");
        h.shard.core.advance(9);
        h.shard.flush(&mut h.transmit);
        assert!(!h.closed(key));
        h.shard.core.advance(10);
        h.shard.flush(&mut h.transmit);
        assert!(h.closed(key), "no progress for the stall timeout");
        assert_eq!(disconnects(&h, DisconnectReason::SlowConsumer), 1);
        assert_eq!(h.shard.core.observe.stats.slow_consumer_closes, 1);
    }

    #[test]
    fn slow_consumer_is_closed_and_its_outbox_freed() {
        let config = Config {
            max_outbox_bytes: 1000,
            ..Config::default()
        };
        let mut h = Harness::new(config);
        let key = h.accept();
        h.upgrade(key);
        // The first echo goes in flight and never completes; the rest pile up.
        let message = masked(0x2, &[1; 300]);
        for _ in 0..5 {
            h.shard.driver.bufs = vec![message.clone()];
            let buf = RecvBuf {
                id: 0,
                len: message.len() as u32,
            };
            h.shard.handle_event(Event::Recv { key, buf });
            if h.shard.driver.sent.is_empty() {
                h.shard.flush(&mut h.transmit);
            }
        }
        let conn = h
            .shard
            .core
            .conns
            .get(key)
            .expect("removed at the next flush");
        assert!(conn.outbox.is_empty(), "queue dropped at once");
        h.shard.flush(&mut h.transmit);
        assert!(h.closed(key));
        assert_eq!(disconnects(&h, DisconnectReason::SlowConsumer), 1);
    }

    #[test]
    fn slow_consumer_that_keeps_sending_is_closed_at_once() {
        let config = Config {
            max_outbox_bytes: 300,
            ..Config::default()
        };
        let mut h = Harness::new(config);
        let key = h.accept();
        h.upgrade(key);
        // Over the cap with no send in flight: a close frame is queued, never sent here.
        h.shard
            .core
            .push_frame(key, Bytes::from(vec![0u8; 400]), false);
        let conn = h.shard.core.conns.get(key).expect("closing");
        assert_eq!(conn.phase, Phase::Flushing);
        h.shard.driver.bufs = vec![masked(0x1, b"more")];
        let buf = RecvBuf { id: 0, len: 10 };
        h.shard.handle_event(Event::Recv { key, buf });
        h.shard.flush(&mut h.transmit);
        assert!(h.closed(key), "no waiting for the close deadline");
    }

    #[test]
    fn lossy_frames_drop_the_oldest_under_drop_oldest() {
        let config = Config {
            max_outbox_bytes: 1000,
            outbox_policy: OutboxPolicy::DropOldest,
            ..Config::default()
        };
        let mut h = Harness::new(config);
        let key = h.accept();
        h.upgrade(key);
        let frame = Bytes::from(vec![0u8; 300]);
        for _ in 0..10 {
            h.shard.core.push_frame(key, frame.clone(), true);
        }
        let conn = h.shard.core.conns.get(key).expect("still open");
        assert!(conn.outbox.queued_bytes() <= 1000);
        assert_eq!(conn.phase, Phase::Open);
        h.shard.core.push_frame(key, frame, false);
        h.shard.flush(&mut h.transmit);
        let closing = h
            .shard
            .core
            .conns
            .get(key)
            .is_none_or(|c| c.phase != Phase::Open);
        assert!(closing, "a frame that is not lossy still closes");
    }

    #[test]
    fn admin_paths_answer_plain_gets() {
        for (path, status) in [
            ("/metrics", "HTTP/1.1 200 "),
            ("/health", "HTTP/1.1 200 "),
            ("/ready", "HTTP/1.1 200 "),
            ("/dashboard", "HTTP/1.1 200 "),
        ] {
            let mut h = Harness::new(Config::default());
            h.shard.core.observe.publish();
            let key = h.accept();
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            let out = h.read(key, request.as_bytes());
            let text = String::from_utf8_lossy(&out);
            assert!(text.starts_with(status), "{path}: {text}");
            assert!(h.closed(key));
        }
    }

    #[test]
    fn accepts_and_handshake_errors_are_counted() {
        let mut h = Harness::new(Config::default());
        let key = h.accept();
        h.upgrade(key);
        let bad = h.accept();
        h.read(bad, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
        let stats = &h.shard.core.observe.stats;
        assert_eq!(stats.accepted, 1);
        assert_eq!(stats.rejected[RejectReason::HandshakeError as usize], 1);
        h.shard.handle_event(Event::Eof { key });
        h.shard.flush(&mut h.transmit);
        assert_eq!(disconnects(&h, DisconnectReason::ConnectionLost), 1);
    }
}
