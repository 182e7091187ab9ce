//! Pusher connections on a shard: the upgrade of `/app/{key}`, each text message through the
//! connection's [`Session`], and the session's [`Action`]s carried out against the shard's
//! channel table, the process-wide [`Hub`] and the other shards' mailboxes.
//!
//! Fan-out: a publish is one [`Frame`] (one buffer). Local subscribers get a [`Bytes`] made
//! once per shard from that buffer (no copy), cloned into each outbox (a reference count, no
//! allocation but the outbox's queue slot); every other shard with subscribers of the channel
//! gets one mesh message carrying a clone of the same frame.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::driver::ConnKey;
use crate::mesh::MeshMessage;
use crate::pusher::protocol;
use crate::pusher::{
    Action, AppIndex, ChannelKind, CloseCode, ConnectRequest, Frame, Load, Session, SocketId,
};

use super::Core;
use super::channels::ChannelTable;
use super::conn::Phase;
use super::hub::Hub;

/// A frame lent to [`Bytes::from_owner`]: the outbox holds `Bytes`, the pusher core builds
/// [`Frame`]s; this joins them without copying the payload.
struct FrameBytes(Frame);

impl AsRef<[u8]> for FrameBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The frame as outbox bytes sharing its buffer.
pub(super) fn frame_bytes(frame: Frame) -> Bytes {
    Bytes::from_owner(FrameBytes(frame))
}

/// A shard's Pusher state.
pub(super) struct PusherState {
    /// Shared with the other shards.
    pub hub: Arc<Hub>,
    /// This shard's index.
    pub shard: usize,
    /// Local channels and their subscribers.
    pub channels: ChannelTable,
    /// The session of each Pusher connection.
    pub sessions: HashMap<ConnKey, Session>,
    /// Signed-in users' connections on this shard, for terminate_connections.
    pub users: HashMap<(AppIndex, Box<str>), Vec<ConnKey>>,
    /// Text messages of the current read, concatenated; `texts` holds their ranges.
    pub inbox: Vec<u8>,
    /// Ranges of `inbox`.
    pub texts: Vec<(usize, usize)>,
    /// Reused action buffer.
    actions: Vec<Action>,
    /// Reused buffer of subscriber keys for one delivery.
    targets: Vec<ConnKey>,
    /// Reused buffer of shards for one publish.
    shards: Vec<usize>,
    /// Presence joins whose `subscription_succeeded` waits for the cluster bridge to learn the
    /// other instances' members of the channel ([`MeshMessage::PresenceReady`]).
    held: Vec<(ConnKey, AppIndex, Arc<str>)>,
}

impl PusherState {
    /// The state of shard `shard` sharing `hub`.
    pub(super) fn new(hub: Arc<Hub>, shard: usize) -> Self {
        Self {
            hub,
            shard,
            channels: ChannelTable::default(),
            sessions: HashMap::new(),
            users: HashMap::new(),
            inbox: Vec::new(),
            texts: Vec::new(),
            actions: Vec::new(),
            targets: Vec::new(),
            shards: Vec::new(),
            held: Vec::new(),
        }
    }

    /// The socket id of a local connection: the shard's prefix, then the slab key, so a
    /// socket id leads back to its connection without a map.
    pub(super) fn socket_id(&self, key: ConnKey) -> SocketId {
        SocketId {
            high: self.hub.socket_high(self.shard),
            low: (u64::from(key.generation) << 32) | u64::from(key.slot),
        }
    }

    /// The local connection a socket id names, if it was issued by this shard.
    pub(super) fn local_key(&self, socket_id: SocketId) -> Option<ConnKey> {
        (socket_id.high == self.hub.socket_high(self.shard)).then_some(ConnKey {
            slot: socket_id.low as u32,
            generation: (socket_id.low >> 32) as u32,
        })
    }
}

impl Core {
    /// The WebSocket of `/app/{key}` is open (the 101 is queued): start the session, or
    /// refuse with the Pusher code (an error message, then the close).
    pub(super) fn open_pusher(&mut self, key: ConnKey, target: &str) {
        let hub = Arc::clone(&self.pusher.hub);
        let socket_id = self.pusher.socket_id(key);
        let connected = ConnectRequest::parse(target).and_then(|request| {
            let load = Load {
                app_connections: hub
                    .apps()
                    .by_key(request.app_key)
                    .map_or(0, |(app, _)| hub.app_connections(app)),
            };
            Session::connect(
                hub.apps(),
                &request,
                socket_id,
                load,
                hub.pusher(),
                Instant::now(),
            )
        });
        match connected {
            Ok((session, established)) => {
                hub.count_connection(session.app(), true);
                self.out.extend_from_slice(established.as_bytes());
                self.pusher.sessions.insert(key, session);
                self.push_out(key);
            }
            Err(code) => {
                let error = protocol::error(Some(code.code()), code.reason());
                self.out.extend_from_slice(error.as_bytes());
                self.start_close(key, code.into(), code.reason());
            }
        }
    }

    /// Runs the text messages of the last read through the connection's session.
    pub(super) fn handle_pusher_texts(&mut self, key: ConnKey) {
        let texts = std::mem::take(&mut self.pusher.texts);
        let inbox = std::mem::take(&mut self.pusher.inbox);
        let open = self.conns.get(key).is_some_and(|c| c.phase == Phase::Open);
        if open {
            for &(start, end) in &texts {
                let text = inbox
                    .get(start..end)
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .unwrap_or_default();
                self.handle_pusher_text(key, text);
            }
        }
        self.pusher.texts = texts;
        self.pusher.texts.clear();
        self.pusher.inbox = inbox;
        self.pusher.inbox.clear();
    }

    fn handle_pusher_text(&mut self, key: ConnKey, text: &str) {
        let hub = Arc::clone(&self.pusher.hub);
        let state = &mut self.pusher;
        let Some(session) = state.sessions.get_mut(&key) else {
            return;
        };
        let app = session.app();
        let Some(config) = hub.apps().app(app) else {
            return;
        };
        let mut actions = std::mem::take(&mut state.actions);
        let mut channels = state.channels.for_app(app, &hub);
        session.handle_text(config, &mut channels, text, Instant::now(), &mut actions);
        self.run_actions(key, app, &mut actions);
        self.pusher.actions = actions;
    }

    /// Carries out a session's actions for connection `key`, in order; frames for the
    /// connection itself are queued once at the end.
    fn run_actions(&mut self, key: ConnKey, app: AppIndex, actions: &mut Vec<Action>) {
        let hub = Arc::clone(&self.pusher.hub);
        let shard = self.pusher.shard;
        let me = self.pusher.socket_id(key);
        for action in actions.drain(..) {
            match action {
                Action::Send(frame) => self.out.extend_from_slice(frame.as_bytes()),
                Action::Subscribe { channel } => {
                    if let Some(name) = self.pusher.channels.subscribe(channel, key) {
                        hub.handle_subscribe(app, &name, shard);
                    }
                }
                Action::Unsubscribe { channel } => {
                    if let Some(name) = self.pusher.channels.unsubscribe(channel, key) {
                        hub.handle_unsubscribe(app, &name, shard);
                    }
                }
                Action::JoinPresence {
                    channel_name,
                    member,
                    ..
                } => {
                    // Asked before the join's roster is read: a roster read first could miss
                    // the other instances' members the bridge adds before it answers.
                    let held = hub
                        .bridge()
                        .is_some_and(|bridge| bridge.holds_roster(app, &channel_name));
                    if let Some(join) = hub.join_presence(app, &channel_name, &member) {
                        if held {
                            self.pusher.held.push((key, app, Arc::from(&*channel_name)));
                        } else {
                            self.out
                                .extend_from_slice(join.subscription_succeeded.as_bytes());
                        }
                        if let Some(bridge) = hub.bridge() {
                            bridge.presence_changed(app, &channel_name, &member.user_id);
                        }
                        if let Some(added) = join.member_added {
                            self.publish(app, channel_name.into(), added, Some(me), false);
                        }
                    }
                }
                Action::LeavePresence { channel, user_id } => {
                    let name = self
                        .pusher
                        .channels
                        .channel(channel)
                        .map(|c| c.name.clone());
                    if let Some(name) = name {
                        let removed = hub.leave_presence(app, &name, &user_id);
                        if let Some(bridge) = hub.bridge() {
                            bridge.presence_changed(app, &name, &user_id);
                        }
                        if let Some(removed) = removed {
                            self.publish(app, name, removed, Some(me), false);
                        }
                    }
                }
                Action::ReplayCache { channel_name, .. } => {
                    let frame = hub.cache_replay(app, &channel_name, Instant::now());
                    self.out.extend_from_slice(frame.as_bytes());
                }
                Action::Publish {
                    channel,
                    frame,
                    exclude,
                } => {
                    let name = self
                        .pusher
                        .channels
                        .channel(channel)
                        .map(|c| c.name.clone());
                    if let Some(name) = name {
                        self.publish_everywhere(app, name, frame, exclude);
                    }
                }
                Action::SignIn { user_id } => {
                    self.pusher
                        .users
                        .entry((app, user_id))
                        .or_default()
                        .push(key);
                }
                Action::SignOut { user_id } => {
                    let entry = (app, user_id);
                    if let Some(keys) = self.pusher.users.get_mut(&entry) {
                        keys.retain(|k| *k != key);
                        if keys.is_empty() {
                            self.pusher.users.remove(&entry);
                        }
                    }
                }
                Action::Close(code) => {
                    self.start_close(key, code.into(), code.reason());
                }
                Action::Refused(limit) => self.observe.stats.record_pusher_refusal(limit),
            }
        }
        self.push_out(key);
    }

    /// Publishes `frame` on a channel: remembered when it is a cache channel (and `cache`),
    /// sent to every other shard with subscribers of it, delivered to local subscribers.
    pub(super) fn publish(
        &mut self,
        app: AppIndex,
        channel: Arc<str>,
        frame: Frame,
        exclude: Option<SocketId>,
        cache: bool,
    ) {
        let hub = Arc::clone(&self.pusher.hub);
        if cache && ChannelKind::of(&channel).cache {
            hub.cache_publish(app, &channel, &frame, Instant::now());
        }
        let mut shards = std::mem::take(&mut self.pusher.shards);
        hub.interested_shards(app, &channel, &mut shards);
        for &shard in &shards {
            if shard == self.pusher.shard {
                continue;
            }
            if let Some(peer) = hub.peer(shard) {
                // A full lane drops this copy; the receiving shard counts it.
                let _ = peer.send(
                    self.pusher.shard,
                    MeshMessage::Publish {
                        app,
                        channel: Arc::clone(&channel),
                        frame: frame.clone(),
                        exclude,
                    },
                );
            }
        }
        self.pusher.shards = shards;
        self.deliver_local(app, &channel, frame, exclude);
    }

    /// Publishes a client or API event as [`Core::publish`] does and, in a cluster, hands it
    /// to the bridge for the other instances (presence events stay local: each instance keeps
    /// its own roster).
    pub(super) fn publish_everywhere(
        &mut self,
        app: AppIndex,
        channel: Arc<str>,
        frame: Frame,
        exclude: Option<SocketId>,
    ) {
        if let Some(bridge) = self.pusher.hub.bridge() {
            bridge.publish(app, Arc::clone(&channel), frame.clone(), exclude);
        }
        self.publish(app, channel, frame, exclude, true);
    }

    /// Queues `frame` on every local subscriber of the channel but `exclude`, whether the
    /// publish came from this shard or over the mesh; each open subscriber reached counts as one
    /// delivery.
    pub(super) fn deliver_local(
        &mut self,
        app: AppIndex,
        channel: &str,
        frame: Frame,
        exclude: Option<SocketId>,
    ) {
        let mut targets = std::mem::take(&mut self.pusher.targets);
        self.pusher.channels.subscribers(app, channel, &mut targets);
        if !targets.is_empty() {
            let skip = exclude.and_then(|id| self.pusher.local_key(id));
            let bytes = frame_bytes(frame);
            let mut delivered = 0;
            for &key in &targets {
                // A connection whose close frame is queued takes no more data (RFC 6455 5.5.1)
                // and is not counted.
                if Some(key) != skip && self.enqueue(key, bytes.clone()) {
                    delivered += 1;
                }
            }
            self.observe.stats.record_deliveries(delivered);
        }
        targets.clear();
        self.pusher.targets = targets;
    }

    /// Closes every local connection signed in as the user with 4009.
    pub(super) fn terminate_user(&mut self, app: AppIndex, user_id: &str) {
        let keys = self
            .pusher
            .users
            .get(&(app, Box::from(user_id)))
            .cloned()
            .unwrap_or_default();
        for key in keys {
            let mut actions = std::mem::take(&mut self.pusher.actions);
            if let Some(session) = self.pusher.sessions.get_mut(&key) {
                session.close(CloseCode::Unauthorized, &mut actions);
            }
            self.run_actions(key, app, &mut actions);
            self.pusher.actions = actions;
        }
    }

    /// Answers the presence joins of the channel held for the cluster bridge with the roster as
    /// it is now, the other instances' members included; a connection that left the channel
    /// (or closed) meanwhile gets nothing.
    pub(super) fn answer_held(&mut self, app: AppIndex, channel: &str) {
        let held = std::mem::take(&mut self.pusher.held);
        let (ready, waiting): (Vec<_>, Vec<_>) = held
            .into_iter()
            .partition(|(_, a, c)| *a == app && &**c == channel);
        self.pusher.held = waiting;
        if ready.is_empty() {
            return;
        }
        let frame = frame_bytes(
            self.pusher
                .hub
                .presence_subscription_succeeded(app, channel),
        );
        let mut targets = std::mem::take(&mut self.pusher.targets);
        self.pusher.channels.subscribers(app, channel, &mut targets);
        for (key, _, _) in ready {
            // A closing connection takes nothing: enqueue drops it.
            if targets.contains(&key) {
                self.enqueue(key, frame.clone());
            }
        }
        targets.clear();
        self.pusher.targets = targets;
    }

    /// The connection is gone: undo its subscriptions, presence and sign-in.
    pub(super) fn forget_pusher(&mut self, key: ConnKey) {
        self.pusher.held.retain(|(held, _, _)| *held != key);
        let Some(mut session) = self.pusher.sessions.remove(&key) else {
            return;
        };
        self.pusher.hub.count_connection(session.app(), false);
        let mut actions = std::mem::take(&mut self.pusher.actions);
        session.handle_disconnect(&mut actions);
        self.run_actions(key, session.app(), &mut actions);
        self.out.clear();
        self.pusher.actions = actions;
    }
}
