//! One event loop of a worker: a slab of tiny connection states driven by the server's own
//! [`Driver`] (io_uring or epoll), so the load generator and the server share one networking
//! stack.
//!
//! An idle connection is a [`Conn`] of 112 bytes (a test keeps it at most 128): no read buffer
//! (reads land in the driver's shared buffers), no timer object (heartbeats and open-loop sends
//! are one cursor sweeping the slab, deadlines are FIFO queues because every deadline of a kind
//! has the same length), no task, and no send queue until something waits to be sent.
//!
//! The loop is split in two: [`State`] reacts to driver events and the clock and pushes
//! [`Act`]s; [`Runner`] carries the acts out on the driver. `State` never touches the driver,
//! so a borrowed receive buffer can be handed to it directly.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use bytes::Bytes;
use ringcast::driver::{ConnKey, Driver, Event as DriverEvent, MAX_SEND_FRAMES};
use ringcast::ws::{self, CloseCode, CloseFrame, OpCode, Role, WsConfig};

use crate::cause::Cause;
use crate::net;
use crate::plan::{Mode, Plan, channel_name};
use crate::proto::{ChannelTally, Counters, Outcome, TICK_NS, Tick, WorkerMsg};
use crate::publish::Publisher;
use crate::record::{
    Hist, LatencyRecorder, Percentiles, Schedule, encode_hist, new_hist, ns_to_us, record_us,
};
use crate::seq::SeqTracker;
use crate::wire::{Handshake, Upgrade, handle_upgrade_response};
use ringcast::driver::sys::monotonic_ns as now_ns;

/// Connections opened per loop turn at most, so a late loop catching up on its ramp still
/// serves reads in between (bounded work per turn, like quinn's IO_LOOP_BOUND).
const OPENS_PER_TURN: u64 = 256;
/// Slab visits (heartbeats, open-loop sends) per loop turn at most, for the same reason.
const SWEEP_PER_TURN: u64 = 4096;
/// Largest upgrade answer head accepted; the server's is about 130 bytes.
const MAX_UPGRADE_HEAD: usize = 8 * 1024;
/// How long closing handshakes at the end of the run (and churn closes) may take.
const CLOSE_WAIT_NS: u64 = 1_000_000_000;
/// Driver events handled per loop turn at most, so timers (ticks, deadlines, the end of the run)
/// are served even when events never stop coming (bounded work per turn).
const EVENTS_PER_TURN: usize = 4096;
/// Longest single wait on the driver, so ticks stay on time.
const MAX_WAIT: Duration = Duration::from_millis(50);

/// Where one connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// Not in use (never opened, or closed for good).
    #[default]
    Free,
    /// Waiting for the TCP connect.
    Connecting,
    /// Upgrade request sent, waiting for 101.
    Upgrading,
    /// WebSocket open.
    Open,
    /// Our close frame sent, waiting for the server's.
    Closing,
    /// Storm: waiting to reconnect.
    Backoff,
    /// Failed or dropped, not reused.
    Dead,
}

/// Where a Pusher connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum PusherPhase {
    /// Waiting for `pusher:connection_established`.
    #[default]
    Connecting,
    /// Subscribe sent.
    Subscribing,
    /// Subscription succeeded.
    Subscribed,
}

/// Frames waiting to go out on one socket; exists only while something does.
#[derive(Debug, Default)]
struct Outbox {
    /// Frames not yet handed to the driver.
    queue: Vec<Bytes>,
    /// Frames of the send in flight, kept to resend what a short send left.
    inflight: Vec<Bytes>,
}

/// The sending side of one socket, shared by WebSocket and HTTP connections.
#[derive(Debug, Default)]
pub struct Link {
    /// Generation of the slot; bumped on every new socket.
    pub generation: u32,
    /// A send is in flight in the driver.
    sending: bool,
    outbox: Option<Box<Outbox>>,
}

impl Link {
    /// The driver key of the current socket.
    pub fn key(&self, slot: u32) -> ConnKey {
        ConnKey {
            slot,
            generation: self.generation,
        }
    }
}

/// One WebSocket connection's state.
#[derive(Debug, Default)]
struct Conn {
    link: Link,
    phase: Phase,
    pusher: PusherPhase,
    /// Subscribed before publishing started, so every event must reach it.
    counted: bool,
    /// Storm: failed attempts in a row.
    attempt: u8,
    /// When the current attempt started (connect latency), or when the closed-loop message or
    /// the Pusher ping in flight was sent.
    stamp_ns: u64,
    /// Echo: messages sent and echoes received.
    sent: u32,
    received: u32,
    ws: Option<ws::Connection>,
    handshake: Option<Box<Handshake>>,
    seq: SeqTracker,
}

/// Something the driver must do.
#[derive(Debug)]
pub enum Act {
    /// Open a socket for the slot of this key (the generation is already bumped).
    Connect(ConnKey),
    /// Queue a frame or request.
    Send(ConnKey, Bytes),
    /// Close the socket.
    Close(ConnKey),
}

/// A cursor that visits every slot once per period, slot `s` at `start + round * period + s *
/// period / n`: heartbeats and open-loop sends for the whole slab without a timer per
/// connection.
#[derive(Debug, Clone, Copy)]
pub struct Sweep {
    /// When slot 0 of round 0 is due.
    pub start_ns: u64,
    /// Length of one round.
    pub period_ns: u64,
    /// Slots visited per round.
    pub n: u64,
    /// Visits made so far.
    pub done: u64,
}

impl Sweep {
    /// Visits due by `now_ns`.
    pub fn due(&self, now_ns: u64) -> u64 {
        if now_ns < self.start_ns || self.n == 0 || self.period_ns == 0 {
            return 0;
        }
        let elapsed = now_ns - self.start_ns;
        let rounds = elapsed / self.period_ns;
        let into =
            u128::from(elapsed % self.period_ns) * u128::from(self.n) / u128::from(self.period_ns);
        rounds * self.n + (into as u64 + 1).min(self.n)
    }

    /// When visit `v` is due.
    pub fn intended(&self, v: u64) -> u64 {
        let (round, slot) = (v / self.n.max(1), v % self.n.max(1));
        self.start_ns + round * self.period_ns + slot * self.period_ns / self.n.max(1)
    }

    /// When the next visit is due.
    pub fn next_ns(&self) -> u64 {
        self.intended(self.done)
    }
}

/// What the loop is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Opening, holding, sending.
    Running,
    /// Run over: waiting for messages in flight.
    Draining,
    /// Close frames sent, waiting for the answers.
    Closing,
    /// Finished.
    Done,
}

/// Everything but the driver.
pub struct State {
    plan: Arc<Plan>,
    t0: u64,
    runner: u64,
    runners: u64,
    ws_cfg: WsConfig,
    conns: Vec<Conn>,
    free: Vec<u32>,
    rng: fastrand::Rng,
    /// What the driver must do next.
    pub acts: Vec<Act>,
    arena: EventArena,
    /// Counters.
    pub counters: Counters,
    connect: Hist,
    latency: LatencyRecorder,
    tick_latency: Hist,
    /// Connect deadlines, in order (all have the same length).
    deadlines: VecDeque<(u64, ConnKey)>,
    /// Churn: hold ends, in order.
    holds: VecDeque<(u64, ConnKey)>,
    /// Close handshake deadlines, in order.
    closings: VecDeque<(u64, ConnKey)>,
    /// Storm: reconnect times.
    retries: BinaryHeap<Reverse<(u64, u32)>>,
    next_open: u64,
    sweep: Option<Sweep>,
    publisher: Option<Publisher>,
    client_pub: Option<ClientPublisher>,
    open_now: u64,
    opened_total: u64,
    failed_total: u64,
    stage: Stage,
    stage_until: u64,
    storm_dropped: bool,
    next_tick: u32,
}

impl State {
    /// The state of loop `runner` of `runners`, starting at `t0` (monotonic ns).
    pub fn new(plan: Arc<Plan>, t0: u64, runner: u64, runners: u64, seed: u64) -> Self {
        let n = plan.slots_of(runner, runners);
        let mut conns = Vec::new();
        conns.resize_with(usize::try_from(n).unwrap_or(0), Conn::default);
        let sweep = match &plan.mode {
            Mode::Echo(e) => e.interval_ns.map(|period| Sweep {
                start_ns: t0,
                period_ns: period,
                n,
                done: 0,
            }),
            Mode::Pubsub(_) if !plan.pusher => None,
            _ => Some(Sweep {
                start_ns: t0,
                period_ns: plan.ping_interval_ns,
                n,
                done: 0,
            }),
        };
        let publisher = match &plan.mode {
            Mode::Pubsub(p) if !p.client_events => Publisher::new(
                &plan,
                p,
                t0,
                runner,
                runners,
                u32::try_from(n).unwrap_or(u32::MAX),
            ),
            _ => None,
        };
        let client_pub = match &plan.mode {
            Mode::Pubsub(p) if p.client_events => ClientPublisher::new(p, t0, runner, runners),
            _ => None,
        };
        let free = if matches!(plan.mode, Mode::Churn { .. }) {
            (0..n as u32).rev().collect()
        } else {
            Vec::new()
        };
        let counters = Counters {
            conns_target: n,
            ..Counters::default()
        };
        Self {
            plan,
            t0,
            runner,
            runners,
            ws_cfg: WsConfig::default(),
            conns,
            free,
            rng: fastrand::Rng::with_seed(seed),
            acts: Vec::new(),
            arena: EventArena::default(),
            counters,
            connect: new_hist(),
            latency: LatencyRecorder::default(),
            tick_latency: new_hist(),
            deadlines: VecDeque::new(),
            holds: VecDeque::new(),
            closings: VecDeque::new(),
            retries: BinaryHeap::new(),
            next_open: 0,
            sweep,
            publisher,
            client_pub,
            open_now: 0,
            opened_total: 0,
            failed_total: 0,
            stage: Stage::Running,
            stage_until: 0,
            storm_dropped: false,
            next_tick: 1,
        }
    }

    fn end_ns(&self) -> u64 {
        self.t0 + self.plan.duration_ns
    }

    fn global(&self, slot: u32) -> u64 {
        Plan::global_index(u64::from(slot), self.runner, self.runners)
    }

    fn mask(&mut self) -> [u8; 4] {
        self.rng.u32(..).to_ne_bytes()
    }

    /// The target and source address of a slot.
    pub fn endpoints(&self, slot: u32) -> (std::net::SocketAddr, Option<std::net::IpAddr>, bool) {
        let g = self.global(slot);
        let plan = &self.plan;
        if let Some(p) = self.publisher.as_ref().filter(|p| p.owns_slot(slot)) {
            return (p.api_addr(), None, false);
        }
        let target = &plan.targets[(g % plan.targets.len() as u64) as usize];
        let src = (!plan.sources.is_empty())
            .then(|| plan.sources[(g % plan.sources.len() as u64) as usize]);
        (target.addr, src, matches!(plan.mode, Mode::Storm(_)))
    }

    /// The link (send state) of a slot, WebSocket or HTTP.
    pub fn link(&mut self, slot: u32) -> Option<&mut Link> {
        match self.conns.get_mut(slot as usize) {
            Some(c) => Some(&mut c.link),
            None => self.publisher.as_mut().and_then(|p| p.link(slot)),
        }
    }

    /// Whether the loop has finished.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Starts an attempt on `slot`.
    fn start_attempt(&mut self, slot: u32, now: u64) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        conn.link.generation = conn.link.generation.wrapping_add(1);
        conn.link.sending = false;
        conn.link.outbox = None;
        conn.phase = Phase::Connecting;
        conn.pusher = PusherPhase::Connecting;
        conn.stamp_ns = now;
        conn.ws = None;
        conn.handshake = None;
        let key = conn.link.key(slot);
        self.deadlines
            .push_back((now + self.plan.connect_timeout_ns, key));
        self.acts.push(Act::Connect(key));
    }

    /// The socket for `key` could not be created or connected.
    pub fn handle_connect_error(&mut self, key: ConnKey, errno: i32, now: u64) {
        self.fail(key, Cause::of_errno(errno), now);
    }

    /// A connect finished.
    pub fn handle_connected(&mut self, key: ConnKey, result: std::io::Result<()>, now: u64) {
        if let Some(p) = self.publisher.as_mut().filter(|p| p.owns_slot(key.slot)) {
            p.handle_connected(key, result, now, &mut self.acts);
            return;
        }
        let Some(conn) = self.live(key) else { return };
        if conn.phase != Phase::Connecting {
            return;
        }
        if let Err(e) = result {
            let cause = Cause::of_errno(e.raw_os_error().unwrap_or(0));
            self.fail(key, cause, now);
            return;
        }
        let hs = Box::new(Handshake::new(&mut self.rng));
        let g = self.global(key.slot);
        let target = &self.plan.targets[(g % self.plan.targets.len() as u64) as usize];
        let mut req = Vec::with_capacity(256);
        hs.write_request(target, &mut req);
        let Some(conn) = self.live(key) else { return };
        conn.handshake = Some(hs);
        conn.phase = Phase::Upgrading;
        self.acts.push(Act::Send(key, Bytes::from(req)));
    }

    fn live(&mut self, key: ConnKey) -> Option<&mut Conn> {
        self.conns
            .get_mut(key.slot as usize)
            .filter(|c| c.link.generation == key.generation)
    }

    /// An attempt failed: count it, close the socket, and retry (storm), free the slot (churn)
    /// or give up on it.
    fn fail(&mut self, key: ConnKey, cause: Cause, now: u64) {
        let storm = matches!(self.plan.mode, Mode::Storm(_));
        let Some(conn) = self.live(key) else { return };
        if !matches!(conn.phase, Phase::Connecting | Phase::Upgrading) {
            return;
        }
        conn.phase = Phase::Dead;
        conn.handshake = None;
        let attempt = conn.attempt;
        self.acts.push(Act::Close(key));
        self.failed_total += 1;
        if storm {
            self.counters.retries.add(cause);
            self.schedule_retry(key.slot, attempt.saturating_add(1), now);
        } else {
            self.counters.failures.add(cause);
            if matches!(self.plan.mode, Mode::Churn { .. }) {
                self.free.push(key.slot);
            }
        }
    }

    /// Storm: reconnect `slot` after a uniformly random wait in `[0, min(max, base * 2^attempt)]`
    /// (exponential backoff with full jitter).
    fn schedule_retry(&mut self, slot: u32, attempt: u8, now: u64) {
        let Mode::Storm(storm) = self.plan.mode else {
            return;
        };
        let ceiling = storm
            .backoff_base_ns
            .saturating_mul(1u64 << attempt.min(40))
            .min(storm.backoff_max_ns);
        let at = now + self.rng.u64(0..=ceiling);
        if let Some(conn) = self.conns.get_mut(slot as usize) {
            conn.phase = Phase::Backoff;
            conn.attempt = attempt;
        }
        self.retries.push(Reverse((at, slot)));
    }

    /// Bytes arrived on `key`.
    pub fn handle_recv(&mut self, key: ConnKey, data: &mut [u8], now: u64) {
        if let Some(p) = self.publisher.as_mut().filter(|p| p.owns_slot(key.slot)) {
            p.handle_recv(key, data, now, &mut self.acts);
            return;
        }
        let Some(conn) = self.live(key) else { return };
        match conn.phase {
            Phase::Upgrading => self.handle_upgrade(key, data, now),
            Phase::Open | Phase::Closing => self.handle_frames(key, data, now),
            _ => {}
        }
    }

    fn handle_upgrade(&mut self, key: ConnKey, data: &mut [u8], now: u64) {
        let Some(conn) = self.live(key) else { return };
        let Some(hs) = conn.handshake.as_mut() else {
            return;
        };
        let outcome = if hs.partial.is_empty() {
            handle_upgrade_response(data, &hs.key)
        } else {
            hs.partial.extend_from_slice(data);
            handle_upgrade_response(&hs.partial, &hs.key)
        };
        match outcome {
            Upgrade::Partial => {
                if hs.partial.is_empty() {
                    hs.partial.extend_from_slice(data);
                }
                if hs.partial.len() > MAX_UPGRADE_HEAD {
                    self.fail(key, Cause::BadHandshake, now);
                }
            }
            Upgrade::Rejected(_) => self.fail(key, Cause::Rejected, now),
            Upgrade::Malformed => self.fail(key, Cause::BadHandshake, now),
            Upgrade::Accepted { head_len } => {
                let hs = conn.handshake.take();
                conn.phase = Phase::Open;
                conn.ws = Some(ws::Connection::new(Role::Client));
                conn.attempt = 0;
                let started = conn.stamp_ns;
                record_us(&mut self.connect, ns_to_us(now.saturating_sub(started)));
                self.counters.conns_opened += 1;
                self.counters.last_open_ns = now.saturating_sub(self.t0);
                if self.counters.ramp_done_ns.is_none()
                    && self.counters.conns_opened >= self.counters.conns_target
                {
                    self.counters.ramp_done_ns = Some(now.saturating_sub(self.t0));
                }
                self.opened_total += 1;
                self.open_now += 1;
                self.handle_open(key, now);
                // Frames that came with the answer.
                match hs {
                    Some(hs) if !hs.partial.is_empty() => {
                        let mut rest = hs.partial.get(head_len..).unwrap_or_default().to_vec();
                        if !rest.is_empty() {
                            self.handle_frames(key, &mut rest, now);
                        }
                    }
                    _ => {
                        if let Some(rest) = data.get_mut(head_len..).filter(|r| !r.is_empty()) {
                            self.handle_frames(key, rest, now);
                        }
                    }
                }
            }
        }
    }

    /// The WebSocket just opened.
    fn handle_open(&mut self, key: ConnKey, now: u64) {
        match self.plan.mode {
            Mode::Echo(e) if e.interval_ns.is_none() => self.send_echo(key, now, now),
            Mode::Churn { hold_ns } => self.holds.push_back((now + hold_ns, key)),
            Mode::Storm(_)
                if self.storm_dropped
                    && self.open_now == self.conns.len() as u64
                    && self.counters.recover_ns.is_none() =>
            {
                let dropped_at = self.counters.drop_at_ns.unwrap_or(0) + self.t0;
                self.counters.recover_ns = Some(now.saturating_sub(dropped_at));
            }
            _ => {}
        }
    }

    fn send_frame(&mut self, key: ConnKey, opcode: OpCode, payload: &[u8]) {
        let mut frame = Vec::with_capacity(payload.len() + ws::MAX_HEADER_LEN);
        let mask = self.mask();
        ws::encode_masked_frame(&mut frame, true, opcode, payload, mask);
        self.acts.push(Act::Send(key, Bytes::from(frame)));
        self.counters.msgs_sent += 1;
    }

    /// An echo message stamped with `intended`, the time it was meant to leave.
    fn send_echo(&mut self, key: ConnKey, intended: u64, now: u64) {
        let Mode::Echo(e) = self.plan.mode else {
            return;
        };
        let mut payload = vec![if e.binary { 0 } else { b'x' }; e.size];
        if e.binary {
            payload[..8].copy_from_slice(&intended.to_le_bytes());
        } else {
            payload[..16].copy_from_slice(format!("{intended:016x}").as_bytes());
        }
        if let Some(conn) = self.live(key) {
            conn.sent = conn.sent.wrapping_add(1);
            conn.stamp_ns = now;
        }
        let opcode = if e.binary {
            OpCode::Binary
        } else {
            OpCode::Text
        };
        self.send_frame(key, opcode, &payload);
    }

    fn send_text(&mut self, key: ConnKey, text: &str) {
        self.send_frame(key, OpCode::Text, text.as_bytes());
    }

    fn handle_frames(&mut self, key: ConnKey, data: &mut [u8], now: u64) {
        let Some(conn) = self.conns.get_mut(key.slot as usize) else {
            return;
        };
        let Some(wsc) = conn.ws.as_mut() else { return };
        let mut arena = std::mem::take(&mut self.arena);
        arena.clear();
        let result = wsc.handle_read(&self.ws_cfg, data, &mut |ev| arena.push(ev));
        for &(kind, start, end, code) in &arena.events {
            let payload = arena.bytes.get(start..end).unwrap_or_default();
            self.handle_event(key, kind, payload, code, now);
        }
        self.arena = arena;
        if let Err(error) = result {
            let Some(conn) = self.live(key) else { return };
            if let Some(wsc) = conn.ws.as_mut().filter(|w| !w.is_close_sent()) {
                wsc.handle_close_sent();
                let mut frame = Vec::new();
                let close = CloseFrame {
                    code: CloseCode::from(error),
                    reason: "",
                };
                ws::encode_close(
                    &mut frame,
                    Some(close),
                    Some(self.rng.u32(..).to_ne_bytes()),
                );
                self.acts.push(Act::Send(key, Bytes::from(frame)));
            }
            self.end_conn(key, Cause::Protocol, now);
        }
    }

    /// One WebSocket event.
    fn handle_event(
        &mut self,
        key: ConnKey,
        kind: Kind,
        payload: &[u8],
        code: Option<u16>,
        now: u64,
    ) {
        self.counters.msgs_received += u64::from(kind != Kind::Close);
        match kind {
            Kind::Ping => {
                let mut frame = Vec::new();
                ws::encode_masked_frame(&mut frame, true, OpCode::Pong, payload, self.mask());
                self.acts.push(Act::Send(key, Bytes::from(frame)));
            }
            Kind::Pong => {
                if let Some(sent) = payload
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
                {
                    self.record_latency(sent, now);
                }
            }
            Kind::Close => {
                let Some(conn) = self.live(key) else { return };
                let ours = conn.phase == Phase::Closing;
                if let Some(wsc) = conn.ws.as_mut().filter(|w| !w.is_close_sent()) {
                    wsc.handle_close_sent();
                    let mut frame = Vec::new();
                    let reply = code.map(|c| CloseFrame {
                        code: CloseCode(c),
                        reason: "",
                    });
                    ws::encode_close(&mut frame, reply, Some(self.rng.u32(..).to_ne_bytes()));
                    self.acts.push(Act::Send(key, Bytes::from(frame)));
                }
                if ours {
                    self.finish_close(key);
                } else {
                    self.end_conn(key, Cause::ServerClose, now);
                }
            }
            Kind::Text | Kind::Binary => match &self.plan.mode {
                Mode::Echo(e) => {
                    self.handle_echo(key, payload, e.binary, e.interval_ns.is_none(), now)
                }
                _ if self.plan.pusher && kind == Kind::Text => {
                    self.handle_pusher(key, payload, now)
                }
                _ => {}
            },
        }
    }

    fn record_latency(&mut self, intended: u64, now: u64) {
        self.latency.record(intended, now);
        record_us(
            &mut self.tick_latency,
            ns_to_us(now.saturating_sub(intended)),
        );
    }

    fn handle_echo(
        &mut self,
        key: ConnKey,
        payload: &[u8],
        binary: bool,
        closed_loop: bool,
        now: u64,
    ) {
        let stamp = if binary {
            payload
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        } else {
            payload
                .get(..16)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u64::from_str_radix(h, 16).ok())
        };
        let Some(stamp) = stamp else { return };
        self.record_latency(stamp, now);
        let Some(conn) = self.live(key) else { return };
        conn.received = conn.received.wrapping_add(1);
        if closed_loop && conn.phase == Phase::Open && self.stage == Stage::Running {
            self.send_echo(key, now, now);
        }
    }

    fn handle_pusher(&mut self, key: ConnKey, text: &[u8], now: u64) {
        if let Some((seq, stamp)) = parse_delivery(text) {
            let Some(conn) = self.live(key) else { return };
            conn.seq.handle_delivery(seq);
            if conn.counted {
                self.record_latency(stamp, now);
            }
            return;
        }
        let Ok(msg) = serde_json::from_slice::<PusherMsg>(text) else {
            return;
        };
        match msg.event.as_str() {
            "pusher:connection_established" => {
                if let Mode::Pubsub(p) = &self.plan.mode {
                    let private = p.client_events;
                    let channel =
                        channel_name(Plan::channel_of(self.global(key.slot), p.channels), private);
                    let sub = if private {
                        // The auth an auth endpoint would hand out: the load generator knows the
                        // secret, so it signs `socket_id:channel` itself.
                        let Some(socket_id) = socket_id_of(msg.data.as_ref()) else {
                            self.end_conn(key, Cause::Protocol, now);
                            return;
                        };
                        let auth = self.plan.app.private_channel_auth(&socket_id, &channel);
                        format!(
                            r#"{{"event":"pusher:subscribe","data":{{"channel":"{channel}","auth":"{auth}"}}}}"#
                        )
                    } else {
                        format!(
                            r#"{{"event":"pusher:subscribe","data":{{"channel":"{channel}"}}}}"#
                        )
                    };
                    if let Some(conn) = self.live(key) {
                        conn.pusher = PusherPhase::Subscribing;
                    }
                    self.send_text(key, &sub);
                }
            }
            "pusher_internal:subscription_succeeded" => {
                let Mode::Pubsub(p) = &self.plan.mode else {
                    return;
                };
                let publish_start = self.t0 + p.publish_after_ns;
                // A client event never comes back to its sender: the publishing subscriber of
                // each channel (global index = channel) is not counted.
                let publisher = p.client_events && self.global(key.slot) < u64::from(p.channels);
                let Some(conn) = self.live(key) else { return };
                if conn.pusher != PusherPhase::Subscribing {
                    return;
                }
                conn.pusher = PusherPhase::Subscribed;
                conn.counted = now < publish_start && !publisher;
                let late = now >= publish_start;
                self.counters.subscribed += 1;
                self.counters.late_subscribers += u64::from(late);
            }
            "pusher:ping" => self.send_text(key, r#"{"event":"pusher:pong","data":{}}"#),
            "pusher:pong" => {
                let Some(conn) = self.live(key) else { return };
                let sent = std::mem::take(&mut conn.stamp_ns);
                // In pubsub the latency figure is publish-to-delivery only.
                if sent != 0 && !matches!(self.plan.mode, Mode::Pubsub(_)) {
                    self.record_latency(sent, now);
                }
            }
            "pusher:error" => {
                if self.counters.pusher_errors == 0 {
                    eprintln!(
                        "ringcast-loadgen: server sent pusher:error: {}",
                        String::from_utf8_lossy(text)
                    );
                }
                self.counters.pusher_errors += 1;
            }
            _ => {}
        }
    }

    /// An open connection ended before we closed it: the server closed, reset, or broke the
    /// protocol.
    fn end_conn(&mut self, key: ConnKey, cause: Cause, now: u64) {
        let stage = self.stage;
        let Some(conn) = self.live(key) else { return };
        match conn.phase {
            Phase::Open => {}
            Phase::Connecting | Phase::Upgrading => {
                self.fail(key, cause, now);
                return;
            }
            Phase::Closing => {
                self.finish_close(key);
                return;
            }
            _ => return,
        }
        conn.phase = Phase::Dead;
        self.open_now -= 1;
        self.acts.push(Act::Close(key));
        if stage == Stage::Running {
            self.counters.disconnects.add(cause);
        }
        match self.plan.mode {
            Mode::Storm(_) if stage == Stage::Running => self.schedule_retry(key.slot, 0, now),
            Mode::Churn { .. } => self.free.push(key.slot),
            _ => {}
        }
    }

    /// Our closing handshake finished (or timed out): close the socket.
    fn finish_close(&mut self, key: ConnKey) {
        let churn = matches!(self.plan.mode, Mode::Churn { .. }) && self.stage == Stage::Running;
        let Some(conn) = self.live(key) else { return };
        if conn.phase != Phase::Closing {
            return;
        }
        conn.phase = if churn { Phase::Free } else { Phase::Dead };
        conn.ws = None;
        self.open_now -= 1;
        self.acts.push(Act::Close(key));
        if churn {
            self.counters.cycles += 1;
            self.free.push(key.slot);
        }
    }

    /// Starts our closing handshake on an open connection.
    fn start_close(&mut self, key: ConnKey, now: u64) {
        let Some(conn) = self.live(key) else { return };
        if conn.phase != Phase::Open {
            return;
        }
        conn.phase = Phase::Closing;
        let Some(wsc) = conn.ws.as_mut() else { return };
        if !wsc.is_close_sent() {
            wsc.handle_close_sent();
            let mut frame = Vec::new();
            let close = CloseFrame {
                code: CloseCode::NORMAL,
                reason: "",
            };
            ws::encode_close(
                &mut frame,
                Some(close),
                Some(self.rng.u32(..).to_ne_bytes()),
            );
            self.acts.push(Act::Send(key, Bytes::from(frame)));
        }
        self.closings.push_back((now + CLOSE_WAIT_NS, key));
    }

    /// The peer closed or reset the socket.
    pub fn handle_eof(&mut self, key: ConnKey, now: u64) {
        if let Some(p) = self.publisher.as_mut().filter(|p| p.owns_slot(key.slot)) {
            p.handle_eof(key, now, &mut self.acts);
            return;
        }
        self.end_conn(key, Cause::Eof, now);
    }

    /// A send failed.
    pub fn handle_send_error(&mut self, key: ConnKey, errno: i32, now: u64) {
        if let Some(p) = self.publisher.as_mut().filter(|p| p.owns_slot(key.slot)) {
            p.handle_eof(key, now, &mut self.acts);
            return;
        }
        self.end_conn(key, Cause::of_errno(errno), now);
    }

    /// Timers: opens due, sweeps, deadlines, stage changes. Returns how long the loop may wait.
    pub fn handle_timeout(&mut self, now: u64, ticks: &Sender<WorkerMsg>) -> Duration {
        self.emit_ticks(now, ticks);
        let end = self.end_ns();
        if self.stage == Stage::Running && now >= end {
            self.enter_drain(now);
        }
        if self.stage == Stage::Running {
            self.open_due(now);
            self.sweep_due(now);
            self.storm_due(now);
            if let Some(p) = self.publisher.as_mut() {
                p.handle_timeout(now, &mut self.acts);
            }
            self.client_publish_due(now);
        }
        self.deadlines_due(now);
        match self.stage {
            Stage::Draining if now >= self.stage_until || self.drained() => self.enter_closing(now),
            Stage::Closing if now >= self.stage_until || self.open_now == 0 => self.finish(now),
            _ => {}
        }
        let next = self.next_wakeup(now);
        Duration::from_nanos(next.saturating_sub(now)).min(MAX_WAIT)
    }

    fn next_wakeup(&self, now: u64) -> u64 {
        let mut next = self.t0 + u64::from(self.next_tick) * TICK_NS;
        if self.stage == Stage::Running {
            next = next.min(self.end_ns());
            if let Some(at) = self.next_open_ns() {
                next = next.min(at);
            }
            if let Some(s) = &self.sweep {
                next = next.min(s.next_ns());
            }
            if let Some(Reverse((at, _))) = self.retries.peek() {
                next = next.min(*at);
            }
            if let Some(p) = &self.publisher {
                next = next.min(p.next_ns());
            }
            if let Some(p) = &self.client_pub {
                next = next.min(p.sweep.next_ns());
            }
        }
        for q in [&self.deadlines, &self.holds, &self.closings] {
            if let Some((at, _)) = q.front() {
                next = next.min(*at);
            }
        }
        next.max(now)
    }

    fn next_open_ns(&self) -> Option<u64> {
        let churn = matches!(self.plan.mode, Mode::Churn { .. });
        if !churn && self.next_open >= self.conns.len() as u64 {
            return None;
        }
        let g = Plan::global_index(self.next_open, self.runner, self.runners);
        Some(self.t0 + self.plan.open_at_ns(g))
    }

    fn open_due(&mut self, now: u64) {
        let churn = matches!(self.plan.mode, Mode::Churn { .. });
        for _ in 0..OPENS_PER_TURN {
            match self.next_open_ns() {
                Some(at) if at <= now => {}
                _ => return,
            }
            let j = self.next_open;
            self.next_open += 1;
            if churn {
                // At most --conns open: an open due while every slot is busy is skipped.
                if let Some(slot) = self.free.pop() {
                    self.start_attempt(slot, now);
                }
            } else {
                self.start_attempt(j as u32, now);
            }
        }
    }

    fn sweep_due(&mut self, now: u64) {
        let Some(mut sweep) = self.sweep else { return };
        let due = sweep.due(now).min(sweep.done + SWEEP_PER_TURN);
        let echo = matches!(self.plan.mode, Mode::Echo(_));
        while sweep.done < due {
            let v = sweep.done;
            sweep.done += 1;
            let slot = (v % sweep.n) as u32;
            let Some(conn) = self.conns.get(slot as usize) else {
                continue;
            };
            if conn.phase != Phase::Open {
                continue;
            }
            let key = conn.link.key(slot);
            if echo {
                self.send_echo(key, sweep.intended(v), now);
            } else if self.plan.pusher {
                if let Some(conn) = self.live(key) {
                    conn.stamp_ns = now;
                }
                self.send_text(key, r#"{"event":"pusher:ping","data":{}}"#);
            } else {
                self.send_frame(key, OpCode::Ping, &now.to_le_bytes());
            }
        }
        self.sweep = Some(sweep);
    }

    /// Client events due by `now`: sequence `k` of channel `c` goes out as `client-seq` from the
    /// channel's publishing subscriber (slot `c / loops` of loop `c % loops`).
    fn client_publish_due(&mut self, now: u64) {
        let Some(mut p) = self.client_pub.take() else {
            return;
        };
        let due = p.sweep.due(now).min(p.sweep.done + SWEEP_PER_TURN);
        while p.sweep.done < due {
            let v = p.sweep.done;
            p.sweep.done += 1;
            let Some(chan) = p.channels.get_mut((v % p.sweep.n) as usize) else {
                continue;
            };
            chan.seq += 1;
            let slot = (u64::from(chan.id) / self.runners) as u32;
            let ready = self
                .conns
                .get(slot as usize)
                .filter(|c| c.pusher == PusherPhase::Subscribed && c.phase == Phase::Open);
            let Some(key) = ready.map(|c| c.link.key(slot)) else {
                chan.failed += 1;
                continue;
            };
            let mut data = format!("lg:{}:{}:", chan.seq, p.sweep.intended(v));
            if data.len() < p.size {
                data.extend(std::iter::repeat_n('x', p.size - data.len()));
            }
            let text = format!(
                r#"{{"event":"client-seq","channel":"{}","data":"{data}"}}"#,
                channel_name(chan.id, true)
            );
            self.send_text(key, &text);
        }
        self.client_pub = Some(p);
    }

    fn storm_due(&mut self, now: u64) {
        let Mode::Storm(storm) = self.plan.mode else {
            return;
        };
        if !self.storm_dropped && now >= self.t0 + storm.drop_after_ns {
            self.storm_dropped = true;
            self.counters.drop_at_ns = Some(now - self.t0);
            for slot in 0..self.conns.len() as u32 {
                let conn = &mut self.conns[slot as usize];
                if conn.phase != Phase::Open {
                    continue;
                }
                let key = conn.link.key(slot);
                conn.phase = Phase::Dead;
                conn.ws = None;
                self.open_now -= 1;
                self.counters.storm_dropped += 1;
                // Sockets of a storm run close with SO_LINGER 0: a reset, as from a lost network.
                self.acts.push(Act::Close(key));
                self.schedule_retry(slot, 0, now);
            }
        }
        for _ in 0..OPENS_PER_TURN {
            match self.retries.peek() {
                Some(Reverse((at, _))) if *at <= now => {}
                _ => return,
            }
            let Some(Reverse((_, slot))) = self.retries.pop() else {
                return;
            };
            self.start_attempt(slot, now);
        }
    }

    fn deadlines_due(&mut self, now: u64) {
        while let Some(&(at, key)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            self.fail(key, Cause::Timeout, now);
        }
        while let Some(&(at, key)) = self.holds.front() {
            if at > now {
                break;
            }
            self.holds.pop_front();
            if self.stage == Stage::Running {
                self.start_close(key, now);
            }
        }
        while let Some(&(at, key)) = self.closings.front() {
            if at > now {
                break;
            }
            self.closings.pop_front();
            self.finish_close(key);
        }
    }

    fn drained(&self) -> bool {
        match &self.plan.mode {
            Mode::Echo(_) => self
                .conns
                .iter()
                .all(|c| c.phase != Phase::Open || c.sent == c.received),
            Mode::Pubsub(_) => false,
            _ => true,
        }
    }

    fn enter_drain(&mut self, now: u64) {
        self.stage = Stage::Draining;
        self.stage_until = now + self.plan.drain_ns;
        self.counters.conns_open_at_end = self.open_now;
        self.counters.rss_bytes = net::resident_bytes().unwrap_or(0);
    }

    /// Charges unanswered echoes, then starts closing every open connection.
    fn enter_closing(&mut self, now: u64) {
        if let Mode::Echo(e) = self.plan.mode {
            for slot in 0..self.conns.len() {
                let conn = &self.conns[slot];
                if conn.phase != Phase::Open {
                    continue;
                }
                let missing = u64::from(conn.sent.wrapping_sub(conn.received));
                match (e.interval_ns, self.sweep) {
                    (Some(_), Some(sweep)) if missing > 0 => {
                        // Visits of this slot so far: slot, slot + n, ...; the last `missing` of
                        // them went unanswered (echoes come back in order).
                        let n = sweep.n;
                        let slot = slot as u64;
                        if sweep.done > slot {
                            let last_round = (sweep.done - 1 - slot) / n;
                            let first = (last_round + 1).saturating_sub(missing);
                            let schedule = Schedule {
                                start_ns: sweep.intended(slot),
                                interval_ns: sweep.period_ns,
                            };
                            self.latency
                                .record_unanswered(schedule, first, last_round + 1, now);
                        }
                    }
                    (None, _) if missing > 0 => self.latency.record(conn.stamp_ns, now),
                    _ => {}
                }
            }
        }
        self.stage = Stage::Closing;
        self.stage_until = now + CLOSE_WAIT_NS;
        for slot in 0..self.conns.len() as u32 {
            let key = self.conns[slot as usize].link.key(slot);
            match self.conns[slot as usize].phase {
                Phase::Open => self.start_close(key, now),
                Phase::Connecting | Phase::Upgrading => {
                    self.conns[slot as usize].phase = Phase::Dead;
                    self.acts.push(Act::Close(key));
                }
                _ => {}
            }
        }
        if let Some(p) = self.publisher.as_mut() {
            p.close_all(&mut self.acts);
        }
    }

    fn finish(&mut self, _now: u64) {
        for slot in 0..self.conns.len() as u32 {
            let conn = &mut self.conns[slot as usize];
            if matches!(conn.phase, Phase::Closing | Phase::Open) {
                conn.phase = Phase::Dead;
                self.acts.push(Act::Close(conn.link.key(slot)));
            }
        }
        self.open_now = 0;
        self.stage = Stage::Done;
    }

    fn emit_ticks(&mut self, now: u64, ticks: &Sender<WorkerMsg>) {
        let due = self.t0 + u64::from(self.next_tick) * TICK_NS;
        if now < due {
            return;
        }
        let idx = u32::try_from((now - self.t0) / TICK_NS).unwrap_or(u32::MAX);
        let p99 = Percentiles::of(&self.tick_latency).p99;
        self.tick_latency.reset();
        let _ = ticks.send(WorkerMsg::Tick(Tick {
            runner: self.runner as u32,
            idx,
            open: self.open_now,
            opened: self.opened_total,
            failed: self.failed_total,
            sent: self.counters.msgs_sent,
            received: self.counters.msgs_received,
            p99_us: p99,
        }));
        self.next_tick = idx.saturating_add(1);
    }

    /// The figures of this loop.
    pub fn outcome(&mut self) -> Outcome {
        let mut channels: std::collections::BTreeMap<u32, ChannelTally> = Default::default();
        if let Mode::Pubsub(p) = &self.plan.mode {
            for (slot, conn) in self.conns.iter().enumerate() {
                if !conn.counted {
                    continue;
                }
                let c = Plan::channel_of(self.global(slot as u32), p.channels);
                let t = channels.entry(c).or_default();
                t.subs += 1;
                t.distinct += u64::from(conn.seq.distinct);
                t.duplicated += u64::from(conn.seq.duplicated);
                t.out_of_order += u64::from(conn.seq.out_of_order);
            }
            if let Some(publisher) = &self.client_pub {
                for c in &publisher.channels {
                    let t = channels.entry(c.id).or_default();
                    t.published += u64::from(c.seq);
                    t.publish_failed += c.failed;
                }
            }
            if let Some(publisher) = &self.publisher {
                for (c, published, failed) in publisher.tallies() {
                    let t = channels.entry(c).or_default();
                    t.published += published;
                    t.publish_failed += failed;
                }
                self.counters.msgs_sent += publisher.requests_sent();
            }
        }
        if matches!(self.plan.mode, Mode::Storm(_)) {
            let never = self.conns.len() as u64 - self.counters.conns_open_at_end;
            for _ in 0..never {
                self.counters.failures.add(Cause::Timeout);
            }
        }
        Outcome {
            counters: self.counters.clone(),
            connect_hist: encode_hist(&self.connect),
            latency_hist: encode_hist(&self.latency.hist),
            channels: channels.into_iter().collect(),
        }
    }
}

/// Client-event publishing of one loop: the channels it owns and their sequences.
#[derive(Debug)]
struct ClientPublisher {
    sweep: Sweep,
    channels: Vec<crate::publish::Channel>,
    size: usize,
}

impl ClientPublisher {
    fn new(p: &crate::plan::PubsubPlan, t0: u64, runner: u64, runners: u64) -> Option<Self> {
        let channels = crate::publish::owned_channels(p, runner, runners);
        (!channels.is_empty()).then(|| Self {
            sweep: Sweep {
                start_ns: t0 + p.publish_after_ns,
                period_ns: p.publish_interval_ns,
                n: channels.len() as u64,
                done: 0,
            },
            channels,
            size: p.size,
        })
    }
}

/// What kind of WebSocket event an [`EventArena`] entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
    Ping,
    Pong,
    Close,
}

/// The events of one read, copied out of the decoder's borrow into one reusable buffer so the
/// state can react with `&mut self` without allocating per message.
#[derive(Debug, Default)]
struct EventArena {
    bytes: Vec<u8>,
    /// Kind, payload range in `bytes`, close code.
    events: Vec<(Kind, usize, usize, Option<u16>)>,
}

impl EventArena {
    fn clear(&mut self) {
        self.bytes.clear();
        self.events.clear();
    }

    fn push(&mut self, ev: ws::Event<'_>) {
        let (kind, payload, code) = match ev {
            ws::Event::Text(t) => (Kind::Text, t.as_bytes(), None),
            ws::Event::Binary(b) => (Kind::Binary, b, None),
            ws::Event::Ping(p) => (Kind::Ping, p, None),
            ws::Event::Pong(p) => (Kind::Pong, p, None),
            ws::Event::Close(c) => (Kind::Close, &[][..], c.map(|c| c.code.0)),
        };
        let start = self.bytes.len();
        self.bytes.extend_from_slice(payload);
        self.events.push((kind, start, self.bytes.len(), code));
    }
}

/// The few fields of a Pusher message the load generator looks at.
#[derive(Debug, serde::Deserialize)]
struct PusherMsg {
    event: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

/// The socket id in the data of `pusher:connection_established`, a JSON object sent as a string.
fn socket_id_of(data: Option<&serde_json::Value>) -> Option<String> {
    let inner: serde_json::Value = match data? {
        serde_json::Value::String(text) => serde_json::from_str(text).ok()?,
        other => other.clone(),
    };
    inner.get("socket_id")?.as_str().map(str::to_string)
}

/// Marker that starts the data of a load-generator event: `lg:SEQ:STAMP:`.
const DELIVERY_MARKER: &[u8] = b"\"lg:";

/// Reads `(sequence, intended send time)` out of a delivered event without parsing its JSON: the
/// data string is `lg:SEQ:STAMP:padding`, written by the publisher.
pub fn parse_delivery(text: &[u8]) -> Option<(u32, u64)> {
    let at = text
        .windows(DELIVERY_MARKER.len())
        .position(|w| w == DELIVERY_MARKER)?;
    let rest = text.get(at + DELIVERY_MARKER.len()..)?;
    let (seq, rest) = split_number(rest)?;
    let rest = rest.strip_prefix(b":")?;
    let (stamp, _) = split_number(rest)?;
    Some((u32::try_from(seq).ok()?, stamp))
}

fn split_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let len = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 || len > 20 {
        return None;
    }
    let number = std::str::from_utf8(&bytes[..len]).ok()?.parse().ok()?;
    Some((number, &bytes[len..]))
}

/// One event loop: the state and the driver it runs on.
pub struct Runner<D: Driver> {
    driver: D,
    /// The state.
    pub state: State,
    frames: Vec<Bytes>,
    /// Connections whose receive stopped (buffer pool dry), resumed before the next wait.
    stopped: Vec<ConnKey>,
}

impl<D: Driver> Runner<D> {
    /// A loop on `driver`.
    pub fn new(driver: D, state: State) -> Self {
        Self {
            driver,
            state,
            frames: Vec::with_capacity(MAX_SEND_FRAMES),
            stopped: Vec::new(),
        }
    }

    /// Runs until the plan's duration, drain and closing are over.
    pub fn run(&mut self, ticks: &Sender<WorkerMsg>) -> std::io::Result<()> {
        while !self.state.is_done() {
            let now = now_ns();
            let wait = self.state.handle_timeout(now, ticks);
            self.apply();
            if self.state.is_done() {
                break;
            }
            for key in self.stopped.drain(..) {
                self.driver.resume_recv(key);
            }
            self.driver.wait(wait)?;
            for _ in 0..EVENTS_PER_TURN {
                let Some(ev) = self.driver.poll_event() else {
                    break;
                };
                let now = now_ns();
                match ev {
                    DriverEvent::Connected { key, result } => {
                        self.state.handle_connected(key, result, now)
                    }
                    DriverEvent::Recv { key, buf } => {
                        let data = self.driver.recv_buf(buf);
                        self.state.handle_recv(key, data, now);
                        self.driver.release(buf);
                    }
                    // Resumed before the next wait, once the buffers released in this turn are
                    // back in the pool: resuming at once could stop again, turn after turn.
                    DriverEvent::RecvStopped { key } => self.stopped.push(key),
                    DriverEvent::Eof { key } => self.state.handle_eof(key, now),
                    DriverEvent::Sent { key, result } => self.handle_sent(key, result, now),
                    DriverEvent::Accepted(_) | DriverEvent::AcceptError(_) | DriverEvent::Wake => {}
                }
                self.apply();
            }
        }
        Ok(())
    }

    /// Carries out the acts the state queued.
    fn apply(&mut self) {
        let mut acts = std::mem::take(&mut self.state.acts);
        for act in acts.drain(..) {
            match act {
                Act::Connect(key) => {
                    let (dst, src, abortive) = self.state.endpoints(key.slot);
                    let now = now_ns();
                    match net::start_connect(src, dst) {
                        Ok(sock) => {
                            if abortive {
                                net::set_abortive_close(sock.as_raw_fd());
                            }
                            if let Err(e) = self.driver.adopt_connecting(key, sock) {
                                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                                self.state.handle_connect_error(key, errno, now);
                            }
                        }
                        Err(errno) => self.state.handle_connect_error(key, errno, now),
                    }
                }
                Act::Send(key, frame) => {
                    let Some(link) = self
                        .state
                        .link(key.slot)
                        .filter(|l| l.generation == key.generation)
                    else {
                        continue;
                    };
                    link.outbox.get_or_insert_default().queue.push(frame);
                    if !link.sending {
                        Self::flush(&mut self.driver, &mut self.frames, link, key);
                    }
                }
                Act::Close(key) => {
                    if let Some(link) = self
                        .state
                        .link(key.slot)
                        .filter(|l| l.generation == key.generation)
                    {
                        link.outbox = None;
                        link.sending = false;
                    }
                    self.driver.close(key);
                }
            }
        }
        // Acts queued while applying (failed connects) are applied on the next call.
        self.state.acts.append(&mut acts);
    }

    fn flush(driver: &mut D, frames: &mut Vec<Bytes>, link: &mut Link, key: ConnKey) {
        let Some(outbox) = link.outbox.as_mut() else {
            return;
        };
        if outbox.queue.is_empty() {
            link.outbox = None;
            return;
        }
        let take = outbox.queue.len().min(MAX_SEND_FRAMES);
        outbox.inflight.extend(outbox.queue.drain(..take));
        frames.extend(outbox.inflight.iter().cloned());
        link.sending = true;
        driver.send(key, frames);
        frames.clear();
    }

    fn handle_sent(&mut self, key: ConnKey, result: std::io::Result<usize>, now: u64) {
        match result {
            Ok(mut n) => {
                let Some(link) = self
                    .state
                    .link(key.slot)
                    .filter(|l| l.generation == key.generation)
                else {
                    return;
                };
                link.sending = false;
                let Some(outbox) = link.outbox.as_mut() else {
                    return;
                };
                // Drop what went out; a short send leaves the rest at the front of the queue.
                let mut rest = Vec::new();
                for frame in outbox.inflight.drain(..) {
                    if n >= frame.len() {
                        n -= frame.len();
                    } else {
                        rest.push(frame.slice(n..));
                        n = 0;
                    }
                }
                if !rest.is_empty() {
                    rest.append(&mut outbox.queue);
                    outbox.queue = rest;
                }
                Self::flush(&mut self.driver, &mut self.frames, link, key);
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                self.state.handle_send_error(key, errno, now);
                self.apply();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storm_state() -> State {
        use clap::Parser as _;
        let args = [
            "ringcast-loadgen",
            "storm",
            "--conns",
            "1000",
            "--backoff-base",
            "100ms",
        ];
        let cli = crate::cli::Cli::try_parse_from(args.into_iter().chain(["--backoff-max", "1s"]))
            .unwrap();
        let plan = Plan::from_cli(&cli.scenario).unwrap();
        State::new(Arc::new(plan), 0, 0, 1, 7)
    }

    /// Attempt n waits uniformly in [0, min(max, base * 2^n)]: spread over the whole range
    /// (full jitter), doubling per attempt, capped.
    #[test]
    fn storm_backoff_is_exponential_with_full_jitter_and_capped() {
        const MS: u64 = 1_000_000;
        for (attempt, ceiling) in [
            (0, 100 * MS),
            (1, 200 * MS),
            (3, 800 * MS),
            (4, 1000 * MS),
            (60, 1000 * MS),
        ] {
            let mut st = storm_state();
            for slot in 0..1000 {
                st.schedule_retry(slot, attempt, 5);
            }
            let waits: Vec<u64> = st.retries.iter().map(|Reverse((at, _))| at - 5).collect();
            let (min, max) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
            let mean = waits.iter().sum::<u64>() / waits.len() as u64;
            assert!(*max <= ceiling, "attempt {attempt}: {max} above {ceiling}");
            assert!(
                *min < ceiling / 20 && *max > ceiling / 20 * 19,
                "attempt {attempt}: {min}..{max}"
            );
            assert!(
                (ceiling * 2 / 5..ceiling * 3 / 5).contains(&mean),
                "attempt {attempt}: mean {mean}"
            );
        }
    }

    #[test]
    fn sweep_visits_every_slot_once_per_period() {
        let mut s = Sweep {
            start_ns: 1000,
            period_ns: 100,
            n: 4,
            done: 0,
        };
        let cases = [
            (999, 0),
            (1000, 1),
            (1024, 1),
            (1025, 2),
            (1075, 4),
            (1099, 4),
            (1100, 5),
            (1300, 13),
        ];
        for (now, due) in cases {
            assert_eq!(s.due(now), due, "now {now}");
        }
        let visits: Vec<u64> = (0..6).map(|v| s.intended(v)).collect();
        assert_eq!(visits, [1000, 1025, 1050, 1075, 1100, 1125]);
        s.done = 5;
        assert_eq!(s.next_ns(), 1125);
    }

    #[test]
    fn deliveries_parse_without_json() {
        type Case<'a> = (&'a [u8], Option<(u32, u64)>);
        let cases: &[Case] = &[
            (
                br#"{"event":"seq","channel":"loadgen-1","data":"lg:5:123456:xxxx"}"#,
                Some((5, 123_456)),
            ),
            (
                br#"{"event":"seq","data":"lg:1:9:","channel":"c"}"#,
                Some((1, 9)),
            ),
            (br#"{"event":"seq","data":"lg:1"}"#, None),
            (br#"{"event":"seq","data":"lg::5:"}"#, None),
            (br#"{"event":"pusher:pong","data":{}}"#, None),
            (br#"{"data":"lg:99999999999:1:"}"#, None),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_delivery(text),
                *want,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }

    /// An idle connection stays well under a kilobyte of user memory: the slab entry itself,
    /// with no buffers attached.
    #[test]
    fn idle_connection_is_small() {
        assert!(
            size_of::<Conn>() <= 128,
            "Conn is {} bytes",
            size_of::<Conn>()
        );
    }
}
