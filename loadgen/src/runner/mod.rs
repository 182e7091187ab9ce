//! One event loop of a worker: a slab of tiny connection states driven by the server's own
//! driver (io_uring or epoll), so the load generator and the server share one networking
//! stack.
//!
//! An idle connection is a [`Conn`] of 112 bytes (a test keeps it at most 128): no read buffer
//! (reads land in the driver's shared buffers), no timer object (heartbeats and open-loop sends
//! are one cursor sweeping the slab, deadlines are FIFO queues because every deadline of a kind
//! has the same length), no task, and no send queue until something waits to be sent.
//!
//! The loop is split in two: [`State`] reacts to driver events and the clock and pushes
//! [`Act`]s; [`Runner`] carries the acts out on the driver. `State` never touches the driver,
//! so a borrowed receive buffer can be handed to it directly. The state's data lives here; what
//! it does is split by idea: the connection state machine ([`conn`]), WebSocket traffic
//! ([`frames`]), the Pusher protocol ([`pusher`]), timers and pacing ([`timers`]), the end of
//! the run ([`ending`]) and the figures ([`accounting`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use ringcast::driver::ConnKey;
use ringcast::ws::{self, WsConfig};

use crate::link::{Act, Link};
use crate::plan::{Mode, Plan};
use crate::proto::Counters;
use crate::publish::Publisher;
use crate::record::{Hist, LatencyRecorder, new_hist};
use crate::seq::SeqTracker;
use crate::sweep::Sweep;
use crate::wire::Handshake;
use frames::EventArena;
use timers::ClientPublisher;

mod accounting;
mod conn;
mod ending;
mod event_loop;
mod frames;
mod pusher;
mod timers;

pub use event_loop::Runner;

/// How long closing handshakes at the end of the run (and churn closes) may take.
const CLOSE_WAIT_NS: u64 = 1_000_000_000;

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

    /// The link (send state) of the socket `key` names, WebSocket or HTTP; `None` once the
    /// slot holds a newer socket.
    pub fn link(&mut self, key: ConnKey) -> Option<&mut Link> {
        let link = match self.conns.get_mut(key.slot as usize) {
            Some(c) => Some(&mut c.link),
            None => self.publisher.as_mut().and_then(|p| p.link(key.slot)),
        };
        link.filter(|l| l.generation == key.generation)
    }

    /// Whether the loop has finished.
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }

    fn live(&mut self, key: ConnKey) -> Option<&mut Conn> {
        self.conns
            .get_mut(key.slot as usize)
            .filter(|c| c.link.generation == key.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
