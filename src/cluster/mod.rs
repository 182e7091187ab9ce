//! Cluster mode: several ringcast processes joined through a broker (Redis pub/sub or NATS),
//! so a publish on any instance reaches the subscribers on every instance.
//!
//! One thread per process, the bridge, owns the broker client on its own current-thread tokio
//! runtime; the shards stay free of tokio. Nothing of this runs without `--broker`.
//!
//! # The bridge's mailbox
//!
//! - **Publishes and terminations** from the shards go into one bounded queue
//!   (`broker_queue_capacity`) with `try_send`: a full queue drops the message and counts it
//!   (`ringcast_broker_dropped_total{reason="full"}`); a shard never waits on the broker.
//! - **Interest** is a set of `(app, channel)` whose local subscriber count may have crossed
//!   zero, filled by the hub when a shard's count goes 0 -> 1 or 1 -> 0, plus a wake-up. The
//!   bridge re-reads the hub's process-wide count for each and subscribes or unsubscribes the
//!   channel's subject to match, so the order in which shards report does not matter and a
//!   burst of churn on one channel is one check. The set holds each channel once, so it is
//!   bounded by the channels in use.
//!
//! Messages from the broker are decoded on the bridge and handed to each shard with
//! subscribers of the channel as a mesh publish on the lane after the shards' (the mailboxes are
//! built with one more lane when a broker is configured); the origin instance ignores its own
//! messages, having delivered them locally already. Local delivery never waits for, or depends
//! on, the broker.

mod nats;
mod presence;
mod redis;
mod url;
mod wire;

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

pub use url::{BrokerKind, BrokerUrl};

use crate::config::Config;
use crate::mesh::MeshMessage;
use crate::pusher::{AppIndex, ChannelKind, Frame, SocketId};
use crate::shard::hub::Hub;
use presence::{Announce, Presence};
use wire::{Subjects, WireMessage};

/// The subject prefix when none is configured.
pub const DEFAULT_PREFIX: &str = "ringcast";

/// Longest subject prefix accepted.
const MAX_PREFIX_LEN: usize = 64;

/// How long one connection attempt to the broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// First wait before reconnecting; doubled per failed attempt up to [`MAX_BACKOFF`], each wait
/// jittered to between half and one and a half times itself so instances do not reconnect in
/// step.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Longest wait between reconnection attempts: a restarted broker is back in use within a
/// couple of seconds.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How often the bridge looks at the interest set even without a wake-up.
const INTEREST_SWEEP: Duration = Duration::from_secs(1);

/// Why a prefix cannot name subjects on both brokers, or `None` when it can: letters, digits,
/// `-` and `_`, 1 to 64 of them.
pub(crate) fn prefix_problem(prefix: &str) -> Option<String> {
    if prefix.is_empty() || prefix.len() > MAX_PREFIX_LEN {
        return Some(format!(
            "must be 1 to {MAX_PREFIX_LEN} characters, not {}",
            prefix.len()
        ));
    }
    let ok = prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (!ok).then(|| {
        format!("{prefix:?} may hold only letters, digits, - and _ (it starts every subject)")
    })
}

/// Why cluster mode could not start.
#[derive(Debug)]
pub enum ClusterError {
    /// `broker_required` is set and the first connection attempt failed.
    Unreachable {
        /// The broker, without credentials.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// The bridge thread or its runtime could not be started.
    Start(std::io::Error),
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable { url, reason } => write!(
                f,
                "the broker {url} is unreachable ({reason}) and --broker-required is set; start \
                 the broker, fix --broker, or leave --broker-required out to start degraded and \
                 keep retrying"
            ),
            Self::Start(e) => write!(f, "cannot start the cluster bridge thread: {e}"),
        }
    }
}

impl std::error::Error for ClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Start(e) => Some(e),
            Self::Unreachable { .. } => None,
        }
    }
}

/// The broker's state and the bridge's counters, read by `/health` and `/metrics`.
#[derive(Debug)]
pub(crate) struct BrokerStatus {
    url: String,
    up: AtomicBool,
    /// Why the broker is down; empty while up.
    reason: Mutex<String>,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    dropped_full: AtomicU64,
    dropped_down: AtomicU64,
    dropped_invalid: AtomicU64,
    /// Successful connections after the first.
    reconnects: AtomicU64,
    /// Whether a connection ever succeeded.
    connected_once: AtomicBool,
    /// Subjects subscribed on the broker.
    subscriptions: AtomicU64,
}

/// A copy of [`BrokerStatus`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BrokerSnapshot {
    /// The broker, without credentials.
    pub url: String,
    /// Connected.
    pub up: bool,
    /// Why it is down; empty while up.
    pub reason: String,
    /// Messages received from the broker.
    pub messages_in: u64,
    /// Messages published to the broker.
    pub messages_out: u64,
    /// Messages the shards handed over while the bridge's queue was full.
    pub dropped_full: u64,
    /// Messages not published because the broker was down.
    pub dropped_down: u64,
    /// Messages from the broker that were not ours to read.
    pub dropped_invalid: u64,
    /// Successful connections after the first: the reconnect epoch.
    pub reconnects: u64,
    /// Subjects subscribed on the broker.
    pub subscriptions: u64,
}

impl BrokerStatus {
    fn new(url: &BrokerUrl) -> Self {
        Self {
            url: url.to_string(),
            up: AtomicBool::new(false),
            reason: Mutex::new("connecting".to_owned()),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            dropped_down: AtomicU64::new(0),
            dropped_invalid: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            connected_once: AtomicBool::new(false),
            subscriptions: AtomicU64::new(0),
        }
    }

    /// The broker answered: up, and one more epoch unless this is the first connection.
    fn mark_up(&self) {
        if self.connected_once.swap(true, Ordering::AcqRel) {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.up.store(true, Ordering::Release);
        tracing::info!(broker = %self.url, "broker connected");
    }

    /// The broker is unreachable or the connection was lost, for `reason`.
    fn mark_down(&self, reason: &str) {
        let was_up = self.up.swap(false, Ordering::AcqRel);
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = reason.to_owned();
        if was_up {
            tracing::warn!(broker = %self.url, reason, "broker connection lost; local delivery goes on, retrying");
        }
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub(crate) fn snapshot(&self) -> BrokerSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BrokerSnapshot {
            url: self.url.clone(),
            up: self.is_up(),
            reason: self
                .reason
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            messages_in: load(&self.messages_in),
            messages_out: load(&self.messages_out),
            dropped_full: load(&self.dropped_full),
            dropped_down: load(&self.dropped_down),
            dropped_invalid: load(&self.dropped_invalid),
            reconnects: load(&self.reconnects),
            subscriptions: load(&self.subscriptions),
        }
    }
}

/// What a shard hands the bridge to publish.
#[derive(Debug)]
enum Command {
    /// An event published locally, for the other instances.
    Publish {
        app: AppIndex,
        channel: Arc<str>,
        frame: Frame,
        exclude: Option<SocketId>,
    },
    /// `terminate_connections` for a user, for the other instances.
    TerminateUser { app: AppIndex, user_id: Arc<str> },
}

/// The shards' handle on the bridge, kept in the [`Hub`]; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Bridge {
    commands: mpsc::Sender<Command>,
    interest: Arc<Interest>,
    status: Arc<BrokerStatus>,
}

/// A user of a presence channel of an app.
type PresenceKey = (AppIndex, Box<str>, Box<str>);

/// Channels whose local interest may have changed, presence members whose local connections
/// may have, and the bridge's wake-up.
#[derive(Debug, Default)]
struct Interest {
    changed: Mutex<HashSet<(AppIndex, Box<str>)>>,
    presence: Mutex<HashSet<PresenceKey>>,
    wake: Notify,
}

impl Bridge {
    /// Hands a locally published event to the other instances; dropped and counted when the
    /// bridge's queue is full.
    pub(crate) fn publish(
        &self,
        app: AppIndex,
        channel: Arc<str>,
        frame: Frame,
        exclude: Option<SocketId>,
    ) {
        self.send(Command::Publish {
            app,
            channel,
            frame,
            exclude,
        });
    }

    /// Hands `terminate_connections` for a user to the other instances.
    pub(crate) fn terminate_user(&self, app: AppIndex, user_id: Arc<str>) {
        self.send(Command::TerminateUser { app, user_id });
    }

    fn send(&self, command: Command) {
        if self.commands.try_send(command).is_err() {
            BrokerStatus::count(&self.status.dropped_full);
        }
    }

    /// A local connection of the user joined or left the presence channel: the bridge checks
    /// whether the other instances must hear of it (the user's first or last one here).
    pub(crate) fn presence_changed(&self, app: AppIndex, channel: &str, user_id: &str) {
        let inserted = self
            .interest
            .presence
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((app, channel.into(), user_id.into()));
        if inserted {
            self.interest.wake.notify_one();
        }
    }

    /// A shard's subscriber count of the channel crossed zero: the bridge checks whether the
    /// process still wants the channel's subject.
    pub(crate) fn interest_changed(&self, app: AppIndex, channel: &str) {
        let inserted = self
            .interest
            .changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((app, channel.into()));
        if inserted {
            self.interest.wake.notify_one();
        }
    }
}

/// What the bridge's side of the mailbox holds.
struct Inbox {
    commands: mpsc::Receiver<Command>,
    interest: Arc<Interest>,
}

/// Starts the bridge when `config` names a broker and registers it with the hub, whose shards
/// then hand it their publishes; the shards' mailboxes must have lane `hub.shards()` for its
/// deliveries. `None` without a broker: nothing runs. With `broker_required`, waits for the
/// first connection attempt and fails when it does.
pub(crate) fn start(
    config: &Config,
    hub: &Arc<Hub>,
) -> Result<Option<Arc<BrokerStatus>>, ClusterError> {
    let Some(url) = config.broker.clone() else {
        return Ok(None);
    };
    let (bridge, inbox) = channel(&url, config.broker_queue_capacity);
    let status = Arc::clone(&bridge.status);
    hub.set_bridge(bridge);
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let context = Context {
        hub: Arc::clone(hub),
        status: Arc::clone(&status),
        prefix: config.broker_prefix.clone(),
        origin: u64::from_le_bytes(
            crate::shard::hub::entropy()[..8]
                .try_into()
                .unwrap_or_default(),
        ),
        lane: hub.shards(),
        lease: config.presence_lease,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClusterError::Start)?;
    std::thread::Builder::new()
        .name("cluster-bridge".into())
        .spawn(move || {
            runtime.block_on(async move {
                match url.kind {
                    BrokerKind::Redis => {
                        run::<redis::RedisLink>(&url, context, inbox, first_tx).await
                    }
                    BrokerKind::Nats => run::<nats::NatsLink>(&url, context, inbox, first_tx).await,
                }
            });
        })
        .map_err(ClusterError::Start)?;
    if config.broker_required {
        match first_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                return Err(ClusterError::Unreachable {
                    url: status.url.clone(),
                    reason,
                });
            }
            Err(_) => {
                return Err(ClusterError::Unreachable {
                    url: status.url.clone(),
                    reason: "the bridge thread stopped".to_owned(),
                });
            }
        }
    }
    Ok(Some(status))
}

/// A bridge handle and its inbox, the queue holding `capacity` commands.
fn channel(url: &BrokerUrl, capacity: usize) -> (Bridge, Inbox) {
    let (commands_tx, commands) = mpsc::channel(capacity.max(1));
    let interest = Arc::new(Interest::default());
    let bridge = Bridge {
        commands: commands_tx,
        interest: Arc::clone(&interest),
        status: Arc::new(BrokerStatus::new(url)),
    };
    (bridge, Inbox { commands, interest })
}

/// One connection to a broker, as the bridge uses it.
trait Link: Sized {
    /// How this broker spells subjects.
    const SUBJECTS: Subjects;

    /// Connects; the error is the reason, for `/health`.
    async fn connect(url: &BrokerUrl, status: &Arc<BrokerStatus>) -> Result<Self, String>;

    /// Starts receiving the subject's messages.
    async fn subscribe(&mut self, subject: &str) -> Result<(), String>;

    /// Stops receiving the subject's messages.
    async fn unsubscribe(&mut self, subject: &str) -> Result<(), String>;

    /// Publishes one message; `Ok(false)` when the broker is down and the message was dropped.
    async fn publish(&mut self, subject: &str, body: Vec<u8>) -> Result<bool, String>;

    /// The next message from any subscribed subject; the error says why the connection is gone.
    async fn next(&mut self) -> Result<Vec<u8>, String>;
}

/// What the bridge needs besides the link and its inbox.
struct Context {
    hub: Arc<Hub>,
    status: Arc<BrokerStatus>,
    prefix: String,
    /// This instance's id in messages, so it ignores its own.
    origin: u64,
    /// The mesh lane the bridge sends on (the one after the shards').
    lane: usize,
    /// How long another instance's presence members stay without word from it.
    lease: Duration,
}

/// The bridge's life: connect (retrying with jittered backoff while the broker is down,
/// dropping and counting what the shards publish meanwhile), subscribe to every channel with
/// local interest, serve until the connection is lost, and again.
async fn run<L: Link>(
    url: &BrokerUrl,
    context: Context,
    mut inbox: Inbox,
    first: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let mut first = Some(first);
    let mut attempt: u32 = 0;
    let mut presence = Presence::new(context.lease);
    loop {
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, L::connect(url, &context.status))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {CONNECT_TIMEOUT:?}")));
        match connected {
            Ok(mut link) => {
                if let Some(first) = first.take() {
                    let _ = first.send(Ok(()));
                }
                attempt = 0;
                context.status.mark_up();
                let lost = serve(&mut link, &context, &mut inbox, &mut presence).await;
                context.status.mark_down(&lost);
                context.status.subscriptions.store(0, Ordering::Relaxed);
            }
            Err(reason) => {
                if let Some(first) = first.take() {
                    tracing::warn!(broker = %context.status.url, %reason, "broker unreachable; serving local clients only, retrying");
                    let _ = first.send(Err(reason.clone()));
                }
                context.status.mark_down(&reason);
            }
        }
        let wait = backoff(attempt);
        attempt = attempt.saturating_add(1);
        let until = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => break,
                command = inbox.commands.recv() => match command {
                    Some(_) => BrokerStatus::count(&context.status.dropped_down),
                    None => return,
                },
            }
        }
    }
}

/// The wait before reconnection attempt `attempt` (0 first): [`MIN_BACKOFF`] doubled per
/// attempt up to [`MAX_BACKOFF`], times a random factor in [0.5, 1.5).
fn backoff(attempt: u32) -> Duration {
    let base = MIN_BACKOFF
        .saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF);
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    let factor = 0.5 + (random % 1000) as f64 / 1000.0;
    base.mul_f64(factor)
}

/// Serves one connection until it is lost; returns why.
async fn serve<L: Link>(
    link: &mut L,
    context: &Context,
    inbox: &mut Inbox,
    presence: &mut Presence,
) -> String {
    let mut subscribed: HashSet<String> = HashSet::new();
    if let Err(lost) = subscribe_all(link, context, &mut subscribed, presence).await {
        return lost;
    }
    let mut sweep = tokio::time::interval(INTEREST_SWEEP);
    let renew = context.lease / 3;
    let mut lease = tokio::time::interval_at(tokio::time::Instant::now() + renew, renew);
    let mut shards = Vec::new();
    let mut replies = Vec::new();
    loop {
        let changed: Vec<(AppIndex, Box<str>)> = inbox
            .interest
            .changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for (app, channel) in changed {
            let reconciled =
                reconcile(link, context, &mut subscribed, presence, app, &channel).await;
            if let Err(lost) = reconciled {
                return lost;
            }
        }
        let members: Vec<PresenceKey> = inbox
            .interest
            .presence
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for (app, channel, user_id) in members {
            if let Some(announce) = presence.local_changed(&context.hub, app, &channel, &user_id) {
                replies.extend(announcement(context, L::SUBJECTS, app, &channel, announce));
            }
        }
        for (subject, body) in replies.drain(..) {
            if let Err(lost) = publish_counted(link, context, &subject, body).await {
                return lost;
            }
        }
        tokio::select! {
            () = inbox.interest.wake.notified() => {}
            _ = sweep.tick() => {}
            _ = lease.tick() => {
                for app in context.hub.apps().iter() {
                    let message = WireMessage::Lease {
                        origin: context.origin,
                        app: app.id.clone(),
                    };
                    replies.push((L::SUBJECTS.users(&context.prefix, &app.id), message.encode()));
                }
                for (app, channel, frame) in presence.expire(&context.hub, Instant::now()) {
                    deliver_local(context, app, &channel, frame, &mut shards);
                }
            }
            command = inbox.commands.recv() => {
                let Some(command) = command else {
                    return "the process is stopping".to_owned();
                };
                let Some((subject, body)) = outgoing(context, L::SUBJECTS, command) else {
                    continue;
                };
                if let Err(lost) = publish_counted(link, context, &subject, body).await {
                    return lost;
                }
            }
            message = link.next() => match message {
                Ok(bytes) => {
                    BrokerStatus::count(&context.status.messages_in);
                    let mut answer = |message: WireMessage| {
                        replies.extend(outgoing_wire(context, L::SUBJECTS, &message));
                    };
                    deliver(context, presence, &bytes, &mut shards, &mut answer);
                }
                Err(lost) => return lost,
            },
        }
    }
}

/// Publishes one message and counts it (out, or dropped while the broker is down); the error
/// is why the connection is gone.
async fn publish_counted<L: Link>(
    link: &mut L,
    context: &Context,
    subject: &str,
    body: Vec<u8>,
) -> Result<(), String> {
    match link.publish(subject, body).await {
        Ok(true) => BrokerStatus::count(&context.status.messages_out),
        Ok(false) => BrokerStatus::count(&context.status.dropped_down),
        Err(lost) => {
            BrokerStatus::count(&context.status.dropped_down);
            return Err(lost);
        }
    }
    Ok(())
}

/// The subject and bytes of an announcement of this instance's own member.
fn announcement(
    context: &Context,
    subjects: Subjects,
    app: AppIndex,
    channel: &str,
    announce: Announce,
) -> Option<(String, Vec<u8>)> {
    let app = context.hub.apps().app(app)?.id.clone();
    let message = match announce {
        Announce::Join(member) => WireMessage::PresenceJoin {
            origin: context.origin,
            app,
            channel: channel.to_owned(),
            member,
        },
        Announce::Leave(user_id) => WireMessage::PresenceLeave {
            origin: context.origin,
            app,
            channel: channel.to_owned(),
            user_id: user_id.into(),
        },
    };
    outgoing_wire(context, subjects, &message)
}

/// The subject a presence message of this instance goes to, and its bytes.
fn outgoing_wire(
    context: &Context,
    subjects: Subjects,
    message: &WireMessage,
) -> Option<(String, Vec<u8>)> {
    let subject = match message {
        WireMessage::PresenceJoin { app, channel, .. }
        | WireMessage::PresenceLeave { app, channel, .. }
        | WireMessage::PresenceSync { app, channel, .. }
        | WireMessage::PresenceState { app, channel, .. }
        | WireMessage::Publish { app, channel, .. } => {
            subjects.channel(&context.prefix, app, channel)
        }
        WireMessage::TerminateUser { app, .. } | WireMessage::Lease { app, .. } => {
            subjects.users(&context.prefix, app)
        }
    };
    Some((subject, message.encode()))
}

/// This instance's members of a presence channel, as the `PresenceState` to publish.
fn state_of(context: &Context, presence: &Presence, app: AppIndex, channel: &str) -> WireMessage {
    WireMessage::PresenceState {
        origin: context.origin,
        app: context
            .hub
            .apps()
            .app(app)
            .map(|a| a.id.clone())
            .unwrap_or_default(),
        channel: channel.to_owned(),
        members: presence.local_members(&context.hub, app, channel),
    }
}

/// Subscribes to every app's user subject and every channel with local subscribers; for each
/// presence channel asks for the other instances' members and tells them this one's.
async fn subscribe_all<L: Link>(
    link: &mut L,
    context: &Context,
    subscribed: &mut HashSet<String>,
    presence: &Presence,
) -> Result<(), String> {
    let hub = &context.hub;
    let mut wanted = Vec::new();
    let mut presence_channels = Vec::new();
    for (index, app) in hub.apps().iter().enumerate() {
        wanted.push(L::SUBJECTS.users(&context.prefix, &app.id));
        let Ok(index) = u16::try_from(index) else {
            continue;
        };
        for (channel, _) in hub.occupied(AppIndex(index), "") {
            wanted.push(L::SUBJECTS.channel(&context.prefix, &app.id, &channel));
            if ChannelKind::of(&channel).is_presence() {
                presence_channels.push((AppIndex(index), channel));
            }
        }
    }
    for subject in wanted {
        if subscribed.insert(subject.clone()) {
            link.subscribe(&subject).await?;
            context.status.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
    }
    for (app, channel) in presence_channels {
        for message in [
            sync_of(context, app, &channel),
            state_of(context, presence, app, &channel),
        ] {
            if let Some((subject, body)) = outgoing_wire(context, L::SUBJECTS, &message) {
                publish_counted(link, context, &subject, body).await?;
            }
        }
    }
    Ok(())
}

/// The request for the other instances' members of a presence channel.
fn sync_of(context: &Context, app: AppIndex, channel: &str) -> WireMessage {
    WireMessage::PresenceSync {
        origin: context.origin,
        app: context
            .hub
            .apps()
            .app(app)
            .map(|a| a.id.clone())
            .unwrap_or_default(),
        channel: channel.to_owned(),
    }
}

/// Makes the subscription to one channel's subject match whether the process has subscribers.
/// A presence channel newly listened to asks for the other instances' members; one no longer
/// listened to drops them, as their leaves will not arrive.
async fn reconcile<L: Link>(
    link: &mut L,
    context: &Context,
    subscribed: &mut HashSet<String>,
    presence: &mut Presence,
    app: AppIndex,
    channel: &str,
) -> Result<(), String> {
    let Some(config) = context.hub.apps().app(app) else {
        return Ok(());
    };
    let wanted = context.hub.stats(app, channel).subscription_count > 0;
    let subject = L::SUBJECTS.channel(&context.prefix, &config.id, channel);
    let is_presence = ChannelKind::of(channel).is_presence();
    if wanted && !subscribed.contains(&subject) {
        link.subscribe(&subject).await?;
        subscribed.insert(subject);
        context.status.subscriptions.fetch_add(1, Ordering::Relaxed);
        if is_presence
            && let Some((subject, body)) =
                outgoing_wire(context, L::SUBJECTS, &sync_of(context, app, channel))
        {
            publish_counted(link, context, &subject, body).await?;
        }
    } else if !wanted && subscribed.remove(&subject) {
        link.unsubscribe(&subject).await?;
        context.status.subscriptions.fetch_sub(1, Ordering::Relaxed);
        if is_presence {
            presence.forget_remote(&context.hub, app, channel);
        }
    }
    Ok(())
}

/// The subject and bytes of a shard's command.
fn outgoing(context: &Context, subjects: Subjects, command: Command) -> Option<(String, Vec<u8>)> {
    let apps = context.hub.apps();
    match command {
        Command::Publish {
            app,
            channel,
            frame,
            exclude,
        } => {
            let app = &apps.app(app)?.id;
            let subject = subjects.channel(&context.prefix, app, &channel);
            let message = WireMessage::Publish {
                origin: context.origin,
                app: app.clone(),
                channel: channel.to_string(),
                exclude,
                frame,
            };
            Some((subject, message.encode()))
        }
        Command::TerminateUser { app, user_id } => {
            let app = &apps.app(app)?.id;
            let message = WireMessage::TerminateUser {
                origin: context.origin,
                app: app.clone(),
                user_id: user_id.to_string(),
            };
            Some((subjects.users(&context.prefix, app), message.encode()))
        }
    }
}

/// Sends a frame to every local shard with subscribers of the channel, on the bridge's lane.
fn deliver_local(
    context: &Context,
    app: AppIndex,
    channel: &str,
    frame: Frame,
    shards: &mut Vec<usize>,
) {
    deliver_excluding(context, app, channel.into(), frame, None, shards);
}

/// [`deliver_local`] with a connection that must not get the frame.
fn deliver_excluding(
    context: &Context,
    app: AppIndex,
    channel: Arc<str>,
    frame: Frame,
    exclude: Option<SocketId>,
    shards: &mut Vec<usize>,
) {
    let hub = &context.hub;
    hub.interested_shards(app, &channel, shards);
    for &shard in shards.iter() {
        if let Some(peer) = hub.peer(shard) {
            // A full lane drops this copy; the receiving shard counts it.
            let _ = peer.send(
                context.lane,
                MeshMessage::Publish {
                    app,
                    channel: Arc::clone(&channel),
                    frame: frame.clone(),
                    exclude,
                },
            );
        }
    }
}

/// Acts on a message from another instance: its publishes and presence frames go to the shards
/// they concern on the bridge's lane; what this instance must answer goes to `answer`.
fn deliver(
    context: &Context,
    presence: &mut Presence,
    bytes: &[u8],
    shards: &mut Vec<usize>,
    answer: &mut impl FnMut(WireMessage),
) {
    let message = match WireMessage::decode(bytes) {
        Ok(message) => message,
        Err(error) => {
            if context
                .status
                .dropped_invalid
                .fetch_add(1, Ordering::Relaxed)
                == 0
            {
                tracing::warn!(%error, "ignoring a broker message that is not ours to read");
            }
            return;
        }
    };
    let origin = message.origin();
    if origin == context.origin {
        return;
    }
    let hub = &context.hub;
    let index = |app: &str| hub.apps().by_id(app).map(|(index, _)| index);
    let about_presence = !matches!(
        message,
        WireMessage::Publish { .. } | WireMessage::TerminateUser { .. }
    );
    if about_presence && presence.heard(origin, Instant::now()) {
        // Unknown until now (new, or taken for dead): it may have dropped this instance's
        // members meanwhile, so it hears them all again.
        for (app, channel) in presence.announced_channels() {
            answer(state_of(context, presence, app, &channel));
        }
    }
    match message {
        WireMessage::Publish {
            app,
            channel,
            exclude,
            frame,
            ..
        } => {
            let Some(app) = index(&app) else {
                return;
            };
            if ChannelKind::of(&channel).cache {
                hub.cache_publish(app, &channel, &frame, Instant::now());
            }
            deliver_excluding(context, app, channel.into(), frame, exclude, shards);
        }
        WireMessage::TerminateUser { app, user_id, .. } => {
            let Some(app) = index(&app) else {
                return;
            };
            let user_id: Arc<str> = user_id.into();
            for shard in 0..hub.shards() {
                if let Some(peer) = hub.peer(shard) {
                    let _ = peer.send(
                        context.lane,
                        MeshMessage::TerminateUser {
                            app,
                            user_id: Arc::clone(&user_id),
                        },
                    );
                }
            }
        }
        WireMessage::Lease { .. } => {}
        WireMessage::PresenceJoin {
            app,
            channel,
            member,
            ..
        } => {
            let Some(app) = index(&app) else {
                return;
            };
            if let Some(frame) = presence.remote_join(hub, origin, app, &channel, &member) {
                deliver_local(context, app, &channel, frame, shards);
            }
        }
        WireMessage::PresenceLeave {
            app,
            channel,
            user_id,
            ..
        } => {
            let Some(app) = index(&app) else {
                return;
            };
            if let Some(frame) = presence.remote_leave(hub, origin, app, &channel, &user_id) {
                deliver_local(context, app, &channel, frame, shards);
            }
        }
        WireMessage::PresenceSync { app, channel, .. } => {
            if let Some(app) = index(&app) {
                answer(state_of(context, presence, app, &channel));
            }
        }
        WireMessage::PresenceState {
            app,
            channel,
            members,
            ..
        } => {
            let Some(app) = index(&app) else {
                return;
            };
            for frame in presence.remote_state(hub, origin, app, &channel, &members) {
                deliver_local(context, app, &channel, frame, shards);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pusher::encode_event_frame;

    fn url() -> BrokerUrl {
        "redis://127.0.0.1:1".parse().expect("valid")
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (bridge, mut inbox) = channel(&url(), 2);
        let frame = encode_event_frame("e", "c", "{}", None);
        for _ in 0..5 {
            bridge.publish(AppIndex(0), "c".into(), frame.clone(), None);
        }
        bridge.terminate_user(AppIndex(0), "u".into());
        assert_eq!(bridge.status.snapshot().dropped_full, 4);
        let mut queued = 0;
        while inbox.commands.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, 2, "the queue holds its capacity");
        bridge.publish(AppIndex(0), "c".into(), frame, None);
        assert_eq!(
            bridge.status.snapshot().dropped_full,
            4,
            "room again once read"
        );
    }

    #[test]
    fn interest_changes_are_kept_once_per_channel() {
        let (bridge, inbox) = channel(&url(), 2);
        for _ in 0..3 {
            bridge.interest_changed(AppIndex(0), "a");
        }
        bridge.interest_changed(AppIndex(1), "a");
        let changed = inbox.interest.changed.lock().expect("lock").len();
        assert_eq!(changed, 2);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        for attempt in 0..40 {
            let base = MIN_BACKOFF
                .saturating_mul(1u32 << attempt.min(16))
                .min(MAX_BACKOFF);
            let wait = backoff(attempt);
            assert!(
                wait >= base / 2 && wait < base.mul_f64(1.5),
                "{attempt}: {wait:?}"
            );
        }
    }

    #[test]
    fn prefixes_that_name_subjects_on_both_brokers() {
        assert_eq!(prefix_problem("ringcast"), None);
        assert_eq!(prefix_problem("blue-2_x"), None);
        for bad in ["", "a.b", "a:b", "a b", "*", &"x".repeat(65)] {
            assert!(prefix_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn broker_status_counts_reconnects_after_the_first_connection() {
        let status = BrokerStatus::new(&url());
        assert!(!status.snapshot().up);
        assert_eq!(status.snapshot().reason, "connecting");
        status.mark_up();
        status.mark_down("connection reset");
        let down = status.snapshot();
        assert_eq!(
            (down.up, down.reason.as_str(), down.reconnects),
            (false, "connection reset", 0)
        );
        status.mark_up();
        let up = status.snapshot();
        assert_eq!((up.up, up.reason.as_str(), up.reconnects), (true, "", 1));
    }
}
