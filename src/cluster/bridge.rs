//! The bridge's loop on its runtime: connect (and reconnect, with jittered backoff), subscribe
//! to the subjects of the channels with local interest, publish what the shards hand over,
//! and act on what the other instances send.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use crate::mesh::MeshMessage;
use crate::pusher::{AppIndex, ChannelKind, Frame, SocketId};
use crate::shard::hub::Hub;

use super::counts::{ChannelCount, RemoteCounts, parts};
use super::hold::Holds;
use super::presence::{Announce, Presence};
use super::status::BrokerStatus;
use super::url::BrokerUrl;
use super::wire::{Subjects, WireMessage};
use super::{Command, Inbox, Interest, PresenceKey};

/// How long one connection attempt to the broker may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// First wait before reconnecting; doubled per failed attempt up to [`MAX_BACKOFF`], each wait
/// jittered to between half and one and a half times itself so instances do not reconnect in
/// step.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Longest wait between reconnection attempts: a restarted broker is back in use within a
/// couple of seconds.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How often the bridge looks whether an app's counts changed, and publishes them if so: the
/// delay a change of counts may wait before the other instances hear of it.
pub(super) const COUNTS_DEBOUNCE: Duration = Duration::from_millis(250);

/// How often the bridge looks at the interest set even without a wake-up.
const INTEREST_SWEEP: Duration = Duration::from_secs(1);

/// One connection to a broker, as the bridge uses it.
pub(super) trait Link: Sized {
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

    /// Waits until what was published has been handed to the broker.
    async fn flush(&mut self) -> Result<(), String>;
}

/// What the bridge needs besides the link and its inbox.
pub(super) struct Context {
    pub(super) hub: Arc<Hub>,
    pub(super) status: Arc<BrokerStatus>,
    pub(super) prefix: String,
    /// This instance's id in messages, so it ignores its own.
    pub(super) origin: u64,
    /// The mesh lane the bridge sends on (the one after the shards').
    pub(super) lane: usize,
    /// How long another instance's presence members stay without word from it.
    pub(super) lease: Duration,
    /// The other instances' channel counts, read by the API.
    pub(super) counts: Arc<RemoteCounts>,
}

/// The bridge's life: connect (retrying with jittered backoff while the broker is down,
/// dropping and counting what the shards publish meanwhile), subscribe to every channel with
/// local interest, serve until the connection is lost, and again.
pub(super) async fn run<L: Link>(
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
                    // Nothing can be published: the flush is over.
                    Some(Command::Flush(ack)) => {
                        let _ = ack.send(());
                    }
                    Some(_) => BrokerStatus::count(&context.status.dropped_down),
                    None => return,
                },
            }
        }
        // Other instances' leases run out while the broker is down, as they would with it up.
        let mut shards = Vec::new();
        for (app, channel, frame) in presence.expire(&context.hub, Instant::now()) {
            deliver_local(&context, app, &channel, frame, &mut shards);
        }
    }
}

/// The wait before reconnection attempt `attempt` (0 first): [`MIN_BACKOFF`] doubled per
/// attempt up to [`MAX_BACKOFF`], times a random factor in [0.5, 1.5).
pub(super) fn backoff(attempt: u32) -> Duration {
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
    let mut holds = Holds::default();
    let interest = Arc::clone(&inbox.interest);
    let lost = serve_subscribed(link, context, inbox, presence, &mut subscribed, &mut holds).await;
    // Nothing answers the held joins on this connection any more: they get their rosters now,
    // and every presence channel is synced again once the broker is back.
    for (app, channel) in holds.take_expired(None) {
        ready(context, &interest, app, &channel, false);
    }
    interest
        .synced
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    lost
}

/// [`serve`] with its subscriptions and presence waits.
async fn serve_subscribed<L: Link>(
    link: &mut L,
    context: &Context,
    inbox: &mut Inbox,
    presence: &mut Presence,
    subscribed: &mut HashSet<String>,
    holds: &mut Holds,
) -> String {
    let subscribing = subscribe_all(link, context, subscribed, presence, holds, &inbox.interest);
    if let Err(lost) = subscribing.await {
        return lost;
    }
    let mut sweep = tokio::time::interval(INTEREST_SWEEP);
    let renew = context.lease / 3;
    let mut lease = tokio::time::interval_at(tokio::time::Instant::now() + renew, renew);
    let mut shards = Vec::new();
    let mut replies = Vec::new();
    let mut flushes: Vec<std::sync::mpsc::Sender<()>> = Vec::new();
    let mut debounce = tokio::time::interval(COUNTS_DEBOUNCE);
    let mut counts = CountsSent::default();
    // The other instances hear this one's counts at once, not only once they change.
    counts.queue_all(context, L::SUBJECTS, &mut replies);
    loop {
        let changed: Vec<(AppIndex, Box<str>)> = inbox
            .interest
            .changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        for (app, channel) in changed {
            let mut channel_state = ChannelState {
                subscribed: &mut *subscribed,
                presence: &mut *presence,
                holds: &mut *holds,
                interest: &inbox.interest,
            };
            let reconciled = reconcile(link, context, &mut channel_state, app, &channel).await;
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
        if !flushes.is_empty() {
            if let Err(lost) = link.flush().await {
                return lost;
            }
            for ack in flushes.drain(..) {
                let _ = ack.send(());
            }
        }
        let deadline = holds.deadline();
        let far = tokio::time::Instant::now() + INTEREST_SWEEP;
        tokio::select! {
            () = inbox.interest.wake.notified() => {}
            () = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                // Instances that did not answer in time: the joins go out without their
                // members, and the request goes again (its answers then come as member_added).
                for (app, channel) in holds.take_expired(Some(tokio::time::Instant::now())) {
                    ready(context, &inbox.interest, app, &channel, true);
                    replies.push(addressed(context, L::SUBJECTS, &sync_of(context, app, &channel)));
                }
            }
            _ = sweep.tick() => {}
            _ = debounce.tick() => counts.queue_changed(context, L::SUBJECTS, &mut replies),
            _ = lease.tick() => {
                counts.queue_all(context, L::SUBJECTS, &mut replies);
                context.counts.expire(Instant::now());
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
                if let Command::Flush(ack) = command {
                    // Answered once the interest and presence changes before it are out.
                    flushes.push(ack);
                    continue;
                }
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
                        replies.push(addressed(context, L::SUBJECTS, &message));
                    };
                    let mut state = Receiving { presence: &mut *presence, holds: &mut *holds, interest: &inbox.interest };
                    if deliver(context, &mut state, &bytes, &mut shards, &mut answer) {
                        // A newcomer counts this instance's subscribers at once.
                        counts.queue_all(context, L::SUBJECTS, &mut replies);
                    }
                }
                Err(lost) => return lost,
            },
        }
    }
}

/// What the bridge last told the other instances of each app's counts.
#[derive(Debug, Default)]
struct CountsSent {
    /// Per app: the hub's change count when its last snapshot was taken.
    changes: Vec<u64>,
    /// The generation of the last snapshot sent.
    generation: u64,
}

impl CountsSent {
    /// Queues a snapshot of every app whose counts changed since its last one.
    fn queue_changed(
        &mut self,
        context: &Context,
        subjects: Subjects,
        out: &mut Vec<(String, Vec<u8>)>,
    ) {
        self.queue(context, subjects, out, false);
    }

    /// Queues a snapshot of every app.
    fn queue_all(
        &mut self,
        context: &Context,
        subjects: Subjects,
        out: &mut Vec<(String, Vec<u8>)>,
    ) {
        self.queue(context, subjects, out, true);
    }

    fn queue(
        &mut self,
        context: &Context,
        subjects: Subjects,
        out: &mut Vec<(String, Vec<u8>)>,
        all: bool,
    ) {
        let hub = &context.hub;
        for (index, config) in hub.apps().iter().enumerate() {
            let Ok(app) = u16::try_from(index).map(AppIndex) else {
                continue;
            };
            if self.changes.len() <= index {
                self.changes.resize(index + 1, u64::MAX);
            }
            let changes = hub.count_changes(app);
            if !all && self.changes[index] == changes {
                continue;
            }
            self.changes[index] = changes;
            self.generation += 1;
            let channels: Vec<ChannelCount> = hub
                .occupied(app, "")
                .into_iter()
                .map(|(channel, stats)| ChannelCount {
                    channel,
                    subscriptions: stats.subscription_count,
                    users: stats.user_count,
                })
                .collect();
            let cut = parts(channels);
            let total = cut.len();
            for (n, channels) in cut.into_iter().enumerate() {
                let message = WireMessage::Counts {
                    origin: context.origin,
                    app: config.id.clone(),
                    generation: self.generation,
                    last: n + 1 == total,
                    channels,
                };
                out.push(addressed(context, subjects, &message));
            }
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
    Some(addressed(context, subjects, &message))
}

/// The subject a message of this instance goes to, and its bytes.
fn addressed(context: &Context, subjects: Subjects, message: &WireMessage) -> (String, Vec<u8>) {
    let subject = match message {
        WireMessage::PresenceJoin { app, channel, .. }
        | WireMessage::PresenceLeave { app, channel, .. }
        | WireMessage::PresenceState { app, channel, .. }
        | WireMessage::Publish { app, channel, .. } => {
            subjects.channel(&context.prefix, app, channel)
        }
        // Every instance hears a sync, whether it listens on the channel or not, so the asker
        // knows whose answers to wait for: all it has heard from.
        WireMessage::TerminateUser { app, .. }
        | WireMessage::PresenceSync { app, .. }
        | WireMessage::Lease { app, .. }
        | WireMessage::Counts { app, .. } => subjects.users(&context.prefix, app),
    };
    (subject, message.encode())
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
/// presence channel asks for the other instances' members (holding its new joins until they
/// answer) and tells them this one's.
async fn subscribe_all<L: Link>(
    link: &mut L,
    context: &Context,
    subscribed: &mut HashSet<String>,
    presence: &Presence,
    holds: &mut Holds,
    interest: &Interest,
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
        // Its subscribers already have their rosters: what the answers change goes out to them.
        let now = tokio::time::Instant::now();
        if !holds.start(app, &channel, presence.alive(), false, now) {
            ready(context, interest, app, &channel, true);
        }
        for message in [
            sync_of(context, app, &channel),
            state_of(context, presence, app, &channel),
        ] {
            let (subject, body) = addressed(context, L::SUBJECTS, &message);
            publish_counted(link, context, &subject, body).await?;
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

/// The joins of a presence channel may have their rosters: marked synced (when the bridge
/// knows the other instances' members) and every shard told to answer the held joins.
fn ready(context: &Context, interest: &Interest, app: AppIndex, channel: &str, synced: bool) {
    if synced {
        interest
            .synced
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((app, channel.into()));
    }
    let channel: Arc<str> = channel.into();
    for shard in 0..context.hub.shards() {
        if let Some(peer) = context.hub.peer(shard) {
            let message = MeshMessage::PresenceReady {
                app,
                channel: Arc::clone(&channel),
            };
            let _ = peer.send(context.lane, message);
        }
    }
}

/// What [`reconcile`] changes besides the link.
struct ChannelState<'a> {
    subscribed: &'a mut HashSet<String>,
    presence: &'a mut Presence,
    holds: &'a mut Holds,
    interest: &'a Interest,
}

/// Makes the subscription to one channel's subject match whether the process has subscribers.
/// A presence channel newly listened to asks every instance for its members, once the
/// subscription is confirmed so no answer is missed, and holds its joins until they answer; one
/// no longer listened to drops them, as their leaves will not arrive.
async fn reconcile<L: Link>(
    link: &mut L,
    context: &Context,
    state: &mut ChannelState<'_>,
    app: AppIndex,
    channel: &str,
) -> Result<(), String> {
    let ChannelState {
        subscribed,
        presence,
        holds,
        interest,
    } = state;
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
        if is_presence {
            let now = tokio::time::Instant::now();
            if !holds.start(app, channel, presence.alive(), true, now) {
                ready(context, interest, app, channel, true);
            }
            // Asked even when no instance is known to wait for: one not heard from yet (started
            // at about the same time) still answers, and its members then follow as
            // `member_added` instead of never.
            let (subject, body) = addressed(context, L::SUBJECTS, &sync_of(context, app, channel));
            publish_counted(link, context, &subject, body).await?;
        }
    } else if !wanted && subscribed.remove(&subject) {
        link.unsubscribe(&subject).await?;
        context.status.subscriptions.fetch_sub(1, Ordering::Relaxed);
        if is_presence {
            holds.cancel(app, channel);
            interest
                .synced
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&(app, Box::from(channel)));
            presence.forget_remote(&context.hub, app, channel);
        }
    }
    Ok(())
}

/// The subject and bytes of a shard's command.
fn outgoing(context: &Context, subjects: Subjects, command: Command) -> Option<(String, Vec<u8>)> {
    let apps = context.hub.apps();
    let message = match command {
        Command::Publish {
            app,
            channel,
            frame,
            exclude,
        } => WireMessage::Publish {
            origin: context.origin,
            app: apps.app(app)?.id.clone(),
            channel: channel.to_string(),
            exclude,
            frame,
        },
        Command::TerminateUser { app, user_id } => WireMessage::TerminateUser {
            origin: context.origin,
            app: apps.app(app)?.id.clone(),
            user_id: user_id.to_string(),
        },
        Command::Flush(_) => return None,
    };
    Some(addressed(context, subjects, &message))
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
/// they concern on the bridge's lane; what this instance must answer goes to `answer`. `true`
/// when the sender was unknown until now (new, or taken for dead).
/// What [`deliver`] changes.
struct Receiving<'a> {
    presence: &'a mut Presence,
    holds: &'a mut Holds,
    interest: &'a Interest,
}

fn deliver(
    context: &Context,
    state: &mut Receiving<'_>,
    bytes: &[u8],
    shards: &mut Vec<usize>,
    answer: &mut impl FnMut(WireMessage),
) -> bool {
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
            return false;
        }
    };
    let origin = message.origin();
    if origin == context.origin {
        return false;
    }
    let about_presence = !matches!(
        message,
        WireMessage::Publish { .. } | WireMessage::TerminateUser { .. }
    );
    let newcomer = about_presence && state.presence.heard(origin, Instant::now());
    if newcomer {
        // Unknown until now (new, or taken for dead): it may have dropped this instance's
        // members meanwhile, so it hears them all again.
        for (app, channel) in state.presence.announced_channels() {
            answer(state_of(context, state.presence, app, &channel));
        }
    }
    deliver_message(context, state, message, shards, answer);
    newcomer
}

/// [`deliver`] once the message is read and known to come from another instance.
fn deliver_message(
    context: &Context,
    state: &mut Receiving<'_>,
    message: WireMessage,
    shards: &mut Vec<usize>,
    answer: &mut impl FnMut(WireMessage),
) {
    let origin = message.origin();
    let hub = &context.hub;
    let index = |app: &str| hub.apps().by_id(app).map(|(index, _)| index);
    let presence = &mut *state.presence;
    // A presence change of a channel whose subscribers all wait for their rosters goes into
    // those rosters only.
    let deliver_presence = |holds: &Holds, app, channel: &str, frame, shards: &mut Vec<usize>| {
        if !holds.is_quiet(app, channel) {
            deliver_local(context, app, channel, frame, shards);
        }
    };
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
        WireMessage::Counts {
            app,
            generation,
            last,
            channels,
            ..
        } => {
            if let Some(app) = index(&app) {
                let counts = &context.counts;
                counts.receive(origin, app, generation, last, channels, Instant::now());
            }
        }
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
                deliver_presence(state.holds, app, &channel, frame, shards);
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
                deliver_presence(state.holds, app, &channel, frame, shards);
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
                deliver_presence(state.holds, app, &channel, frame, shards);
            }
            if state.holds.answered(app, &channel, origin) {
                ready(context, state.interest, app, &channel, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
