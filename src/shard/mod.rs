//! A shard: one event loop on one thread, owning its listener, driver, connection slab and timer
//! wheel. The loop is generic over [`Driver`], so the connection state machine is written once
//! for io_uring and epoll.
//!
//! A loop turn: [`Driver::wait`] (submits everything queued, sleeps until an event or the next
//! wheel tick), handle every ready event (reads go through the HTTP head reader or the WebSocket
//! decoder, answers are encoded into the connection's outbox), handle the turn's mail (control
//! messages, then at most the turn budget of publishes from other shards, see [`crate::mesh`]),
//! flush (start one send per connection with something queued and none in flight, close what
//! must close), then advance the wheel to the current tick. Mail left over rings the shard's
//! own doorbell, so the next turn's wait returns at once.
//!
//! This file holds the [`Shard`], its loop and the dispatch of driver events; the state machine
//! they drive is `impl Core`, one file per stage: `accept` (connection limit, client address,
//! PROXY header), `handshake` (request head, routes, upgrade), `stream` (WebSocket bytes and the
//! outbox), `deadline` (the timer wheel's deadlines), `drain`, `pusher_conn` and `api`.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::Config;
use crate::driver::{ConnKey, Driver, Event};
use crate::limits::IpLimits;
use crate::mesh::{Mailbox, MeshMessage};
use crate::metrics::{DisconnectReason, Registry};
use crate::ws::{self, OpCode};

mod accept;
mod api;
pub(crate) mod channels;
pub(crate) mod conn;
mod deadline;
mod drain;
#[cfg(debug_assertions)]
mod fault;
mod handshake;
pub(crate) mod hub;
mod observe;
pub(crate) mod outbox;
mod pusher_conn;
pub(crate) mod slab;
mod stream;
pub(crate) mod wheel;

use accept::ClientAddrs;
pub(crate) use accept::ConnLimit;
use conn::{Conn, Phase, Route, flags};
use deadline::Ticks;
use observe::Observe;
use wheel::{Tick, TimerWheel};

/// Length of one wheel tick, the granularity of every connection deadline. 100 ms keeps the
/// loop's wake-ups at ten a second when idle while every configured timeout (seconds) stays
/// accurate to a tenth of a second.
pub(crate) const TICK: Duration = Duration::from_millis(100);

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
pub(crate) struct Shard<D: Driver> {
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
    /// This turn's mail, taken from the mailbox; kept to reuse its allocation.
    mail: VecDeque<MeshMessage>,
    limit: Arc<ConnLimit>,
    /// Tick the drain gives up waiting, once draining.
    drain_until: Option<Tick>,
    last_accept_warning: Option<Tick>,
    /// Stats, admin answers and dashboard feeds.
    observe: Observe,
    /// Client addresses and their per-IP slots.
    clients: ClientAddrs,
    /// Pusher sessions, channels and the shared hub.
    pusher: pusher_conn::PusherState,
    /// HTTP API requests whose body is still arriving.
    api_pending: HashMap<ConnKey, api::PendingApi>,
    /// Faults the test suite asked for (debug builds only).
    #[cfg(debug_assertions)]
    fault: fault::Fault,
}

impl<D: Driver> Shard<D> {
    #[cfg(test)]
    /// A shard that accepts on `listener` (bound, listening, non-blocking) once [`Shard::run`]s,
    /// alone in its process (a hub of one shard serving the configured apps).
    pub(crate) fn new(
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
    pub(crate) fn with_hub(
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
        let clients = ClientAddrs::new(Arc::new(IpLimits::new(config.ip_limits.clone())));
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
                mail: VecDeque::new(),
                limit,
                drain_until: None,
                last_accept_warning: None,
                observe,
                clients,
                pusher: pusher_conn::PusherState::new(hub, index),
                api_pending: HashMap::new(),
                #[cfg(debug_assertions)]
                fault: fault::Fault::from_env(index),
            },
        })
    }

    /// Makes this shard number `id` of the process: it publishes its stats to `registry`'s slot
    /// `id` and charges client addresses to the process-wide `ip_limits`.
    #[must_use]
    pub(crate) fn with_shared(
        mut self,
        id: usize,
        registry: Arc<Registry>,
        ip_limits: Arc<IpLimits>,
    ) -> Self {
        let admin_on_main = self.core.config.admin_listen == crate::config::AdminListen::Public;
        self.core.observe = Observe::new(id, registry, admin_on_main);
        self.core.clients = ClientAddrs::new(ip_limits);
        self
    }

    /// Runs the loop until a drain completes.
    pub(crate) fn run(mut self) -> Result<(), ShardError> {
        let mut transmit = Vec::new();
        while !self.turn(&mut transmit)? {}
        Ok(())
    }

    /// One loop turn (see the module docs); `true` once a drain is over.
    fn turn(&mut self, transmit: &mut Vec<Bytes>) -> Result<bool, ShardError> {
        let next_tick = self.core.started + TICK * (self.core.now + 1);
        let timeout = next_tick
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        self.driver.wait(timeout).map_err(ShardError::Driver)?;
        while let Some(event) = self.driver.poll_event() {
            self.handle_event(event);
        }
        self.handle_mail();
        self.flush(transmit);
        let now = self.core.tick_now();
        if now > self.core.now {
            let late = Instant::now().saturating_duration_since(next_tick);
            self.core.observe.stats.record_loop_lag(late);
        }
        self.core.advance(now);
        self.core.handle_tick_observe();
        self.flush(transmit);
        Ok(self.core.drain_done())
    }

    /// Acts on this turn's mail: a drain and control messages first, then at most the turn
    /// budget of publishes; the mailbox keeps the rest for the next turn.
    fn handle_mail(&mut self) {
        let core = &mut self.core;
        let mut mail = std::mem::take(&mut core.mail);
        if core.mailbox.take_turn(&mut mail) {
            core.observe.stats.record_mesh_budget_exhausted();
        }
        for message in mail.drain(..) {
            match message {
                MeshMessage::Drain => core.begin_drain(&mut self.driver),
                MeshMessage::Publish {
                    app,
                    channel,
                    frame,
                    exclude,
                } => core.deliver_local(app, &channel, frame, exclude),
                MeshMessage::TerminateUser { app, user_id } => core.terminate_user(app, &user_id),
                MeshMessage::PresenceReady { app, channel } => core.answer_held(app, &channel),
            }
        }
        core.mail = mail;
    }

    /// Acts on one driver event.
    fn handle_event(&mut self, event: Event) {
        let core = &mut self.core;
        match event {
            Event::Accepted(socket) => {
                #[cfg(debug_assertions)]
                core.fault.handle_accept();
                core.handle_accept(&mut self.driver, socket)
            }
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
            // The mailbox is read once per turn, after the events ([`Shard::handle_mail`]); the
            // doorbell only ended the wait.
            Event::Wake => {}
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
        self.observe.handle_closed(was_open);
        self.clients.handle_closed(key);
    }

    /// Once per loop turn: publishes the stats (the channel gauges once a second) and sends a
    /// dashboard frame when one is due.
    fn handle_tick_observe(&mut self) {
        if self.now.is_multiple_of(10) {
            let (channels, subscriptions) = self.pusher.channels.counts();
            self.observe.stats.set_channels(channels);
            self.observe.stats.set_subscriptions(subscriptions);
        }
        let dropped = self.mailbox.dropped();
        self.observe
            .stats
            .set_mesh_dropped(dropped.data, dropped.control);
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
}

#[cfg(test)]
mod mesh_tests;
#[cfg(test)]
mod tests;
