//! One Pusher connection's protocol state, sans-IO: the text messages a client sends go in
//! with `now`, and [`Action`]s for the hosting shard come out.
//!
//! The state is deliberately tiny (see [`Session`]): a million of them live in one process.
//! Names of channels are not kept here; the shard's channel table numbers them
//! ([`ChannelRegistry`]) and the session keeps only the numbers.

use std::time::{Duration, Instant};

use crate::limits::{TokenBucket, tick_of};
use crate::pusher::apps::{AppConfig, AppIndex, Apps};
use crate::pusher::auth;
use crate::pusher::channels::{
    self, ChannelId, ChannelKind, ChannelRegistry, SERVER_TO_USER_PREFIX,
};
use crate::pusher::codes::{CLIENT_EVENT_RATE_LIMIT, CloseCode, Limit};
use crate::pusher::frame::{Frame, encode_event_frame};
use crate::pusher::protocol::{self, ClientMessage, PresenceMember};
use crate::pusher::socket_id::SocketId;
use crate::pusher::subscriptions::{Subscription, SubscriptionList};

/// The only protocol version accepted in `?protocol=`: every maintained client library
/// (pusher-js 2 and later, Laravel Echo, the mobile SDKs) sends 7. Anything else gets 4007.
pub(super) const PROTOCOL_VERSION: u32 = 7;

/// Protocol settings shared by every connection of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PusherConfig {
    /// Silence after which the server pings (sent to clients as `activity_timeout`, so they
    /// ping first); Pusher uses 120 s.
    pub activity_timeout: Duration,
    /// How long a server ping waits for any message before closing with 4201; Pusher
    /// recommends 30 s.
    pub pong_timeout: Duration,
}

impl Default for PusherConfig {
    fn default() -> Self {
        Self {
            activity_timeout: Duration::from_secs(120),
            pong_timeout: Duration::from_secs(30),
        }
    }
}

/// What a shard must do for a session, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this frame to this connection.
    Send(Frame),
    /// Add this connection to the channel's subscribers.
    Subscribe {
        /// The channel.
        channel: ChannelId,
    },
    /// Remove this connection from the channel's subscribers.
    Unsubscribe {
        /// The channel.
        channel: ChannelId,
    },
    /// Join the channel's presence roster ([`crate::pusher::PresenceRoster::handle_join`]):
    /// send its `subscription_succeeded` here and publish its `member_added`, if any, to the
    /// channel excluding this connection.
    JoinPresence {
        /// The channel.
        channel: ChannelId,
        /// The channel's name, for the frames.
        channel_name: Box<str>,
        /// Who joins.
        member: PresenceMember,
    },
    /// Leave the channel's presence roster ([`crate::pusher::PresenceRoster::handle_leave`]);
    /// publish the `member_removed` it returns, if any, to the channel.
    LeavePresence {
        /// The channel.
        channel: ChannelId,
        /// Who leaves.
        user_id: Box<str>,
    },
    /// Send this connection the channel's cached event, or `pusher:cache_miss`
    /// ([`crate::pusher::CacheSlot::replay`]).
    ReplayCache {
        /// The channel.
        channel: ChannelId,
        /// The channel's name, for the cache miss.
        channel_name: Box<str>,
    },
    /// Deliver the frame to every subscriber of the channel on every shard, except the
    /// connection with socket id `exclude`; on a cache channel also keep it in the channel's
    /// [`crate::pusher::CacheSlot`] (as for events published through the HTTP API).
    Publish {
        /// The channel.
        channel: ChannelId,
        /// The encoded event.
        frame: Frame,
        /// The sender, who never receives its own client event.
        exclude: Option<SocketId>,
    },
    /// Register this connection as one of the user's (server-to-user events, terminate).
    SignIn {
        /// The user.
        user_id: Box<str>,
    },
    /// Forget this connection as one of the user's.
    SignOut {
        /// The user.
        user_id: Box<str>,
    },
    /// Close the WebSocket with this code (any frames queued before it go out first), then
    /// call [`Session::handle_disconnect`].
    Close(CloseCode),
    /// A subscription was refused at this limit (its `pusher:subscription_error` is the
    /// `Send` before); the shard counts it.
    Refused(Limit),
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Normal operation.
    Open,
    /// A `pusher:ping` went out at `last_activity`; any message clears it.
    AwaitingPong,
    /// A close was requested or the connection is gone; inputs are ignored.
    Closed,
}

/// Rarely needed state, allocated on first use so idle connections don't pay for it.
#[derive(Debug, Default)]
struct Extra {
    /// The signed-in user.
    user_id: Option<Box<str>>,
    /// The user id of each presence subscription.
    presence: Vec<(ChannelId, Box<str>)>,
    /// Client-event rate limit, from the first client event on.
    client_events: Option<ClientEventBucket>,
}

/// The client-event token bucket and the instant its ticks count from (the first client
/// event), since a session keeps time as `Instant`s.
#[derive(Debug)]
struct ClientEventBucket {
    epoch: Instant,
    bucket: TokenBucket,
}

/// One connection's Pusher state.
///
/// Call order: [`Session::connect`] once at the upgrade (send the frame it returns, or close
/// with the code); then [`Session::handle_text`] for each text message and
/// [`Session::handle_activity`] for any other inbound traffic; [`Session::handle_timeout`] when
/// [`Session::poll_timeout`] is reached; [`Session::handle_disconnect`] once when the
/// connection ends, whatever the reason, so the shard can undo subscriptions and presence.
///
/// 64 bytes, one cache line: the socket id is stored as its two halves so the 4-byte half
/// shares a word with the app index and phase instead of padding a 16-byte struct.
#[derive(Debug)]
pub struct Session {
    /// `SocketId::low`.
    socket_low: u64,
    /// `SocketId::high`.
    socket_high: u32,
    /// Last inbound message, or when the outstanding ping went out.
    last_activity: Instant,
    subscriptions: SubscriptionList,
    extra: Option<Box<Extra>>,
    app: AppIndex,
    phase: Phase,
}

/// What a connection asked for in its upgrade request: `/app/{key}?protocol=7&...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectRequest<'a> {
    /// The app key from the path.
    pub app_key: &'a str,
    /// The `protocol` query parameter, if present.
    pub protocol: Option<&'a str>,
}

impl<'a> ConnectRequest<'a> {
    /// Parses a request target; 4005 when the path is not `/app/{key}`.
    pub fn parse(target: &'a str) -> Result<Self, CloseCode> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let app_key = path.strip_prefix("/app/").ok_or(CloseCode::PathNotFound)?;
        if app_key.is_empty() || app_key.contains('/') {
            return Err(CloseCode::PathNotFound);
        }
        let protocol = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("protocol="));
        Ok(Self { app_key, protocol })
    }
}

/// How loaded the app is when a connection arrives; the shard knows. (At the process-wide
/// connection limit the shard answers 503 at accept, so a session never starts then.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// The app's current connection count, for its `max_connections` (4004).
    pub app_connections: u32,
}

impl Session {
    /// Decides the upgrade of a new connection: the app must exist (4001) and be enabled (4003), the protocol version must be 7 (missing 4008,
    /// not a number 4006, another number 4007) and the app below its connection cap (4004).
    /// On success returns the session and the `pusher:connection_established` frame to send
    /// first. On failure, send [`protocol::error`] with the code, then close with it.
    pub fn connect(
        apps: &Apps,
        request: &ConnectRequest<'_>,
        socket_id: SocketId,
        load: Load,
        config: &PusherConfig,
        now: Instant,
    ) -> Result<(Self, Frame), CloseCode> {
        let (app, config_of_app) = apps
            .by_key(request.app_key)
            .ok_or(CloseCode::AppDoesNotExist)?;
        if !config_of_app.enabled {
            return Err(CloseCode::AppDisabled);
        }
        let version = request.protocol.ok_or(CloseCode::NoProtocolVersion)?;
        if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CloseCode::InvalidVersionFormat);
        }
        if version.parse::<u32>().ok() != Some(PROTOCOL_VERSION) {
            return Err(CloseCode::UnsupportedProtocolVersion);
        }
        if config_of_app
            .limits
            .max_connections
            .is_some_and(|max| load.app_connections >= max)
        {
            return Err(CloseCode::OverConnectionQuota);
        }
        let session = Self {
            socket_low: socket_id.low,
            socket_high: socket_id.high,
            last_activity: now,
            subscriptions: SubscriptionList::default(),
            extra: None,
            app,
            phase: Phase::Open,
        };
        let established =
            protocol::connection_established(socket_id, config.activity_timeout.as_secs());
        Ok((session, established))
    }

    /// This connection's socket id.
    pub fn socket_id(&self) -> SocketId {
        SocketId {
            high: self.socket_high,
            low: self.socket_low,
        }
    }

    /// The app this connection belongs to.
    pub fn app(&self) -> AppIndex {
        self.app
    }

    /// The signed-in user, if any.
    pub fn user_id(&self) -> Option<&str> {
        self.extra.as_ref()?.user_id.as_deref()
    }

    /// The channels this connection is subscribed to.
    pub fn subscriptions(&self) -> impl Iterator<Item = Subscription> + '_ {
        self.subscriptions.iter()
    }

    /// Whether a close was requested; the shard stops feeding input.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// When [`Session::handle_timeout`] is next due; `None` once closed.
    pub fn poll_timeout(&self, config: &PusherConfig) -> Option<Instant> {
        match self.phase {
            Phase::Open => Some(self.last_activity + config.activity_timeout),
            Phase::AwaitingPong => Some(self.last_activity + config.pong_timeout),
            Phase::Closed => None,
        }
    }

    /// Inbound traffic other than a text message (WebSocket ping or pong, a binary frame)
    /// shows the client is alive.
    pub fn handle_activity(&mut self, now: Instant) {
        if self.phase != Phase::Closed {
            self.last_activity = now;
            self.phase = Phase::Open;
        }
    }

    /// Pings after `activity_timeout` of silence; closes with 4201 when the ping went
    /// unanswered for `pong_timeout`.
    pub fn handle_timeout(&mut self, config: &PusherConfig, now: Instant, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Open if now >= self.last_activity + config.activity_timeout => {
                out.push(Action::Send(protocol::ping()));
                self.last_activity = now;
                self.phase = Phase::AwaitingPong;
            }
            Phase::AwaitingPong if now >= self.last_activity + config.pong_timeout => {
                self.close(CloseCode::PongNotReceived, out);
            }
            _ => {}
        }
    }

    /// Ends the connection from the server's side: a `pusher:error` with the code, then the
    /// close. Used for drain (4200), terminate_connections (4009) and slow consumers (4100).
    pub fn close(&mut self, code: CloseCode, out: &mut Vec<Action>) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        out.push(Action::Send(protocol::error(
            Some(code.code()),
            code.reason(),
        )));
        out.push(Action::Close(code));
    }

    /// The connection is gone: undoes every subscription, presence membership and sign-in.
    pub fn handle_disconnect(&mut self, out: &mut Vec<Action>) {
        self.phase = Phase::Closed;
        let mut extra = self.extra.take().unwrap_or_default();
        for sub in self.subscriptions.take() {
            if let Some(i) = extra.presence.iter().position(|(id, _)| *id == sub.channel) {
                let (channel, user_id) = extra.presence.swap_remove(i);
                out.push(Action::LeavePresence { channel, user_id });
            }
            out.push(Action::Unsubscribe {
                channel: sub.channel,
            });
        }
        if let Some(user_id) = extra.user_id.take() {
            out.push(Action::SignOut { user_id });
        }
    }

    /// Handles one text message from the client. `app` is the app at [`Session::app`];
    /// `channels` is the shard's channel table.
    pub fn handle_text(
        &mut self,
        app: &AppConfig,
        channels: &mut impl ChannelRegistry,
        text: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if self.phase == Phase::Closed {
            return;
        }
        self.handle_activity(now);
        let message = match protocol::parse_client_message(text) {
            Ok(message) => message,
            Err(e) => return out.push(Action::Send(protocol::error(None, e.message()))),
        };
        match message {
            ClientMessage::Ping => out.push(Action::Send(protocol::pong())),
            ClientMessage::Pong => {}
            ClientMessage::Subscribe {
                channel,
                auth,
                channel_data,
            } => {
                let request = SubscribeRequest {
                    channel: &channel,
                    auth: auth.as_deref(),
                    channel_data: channel_data.as_deref(),
                };
                self.handle_subscribe(app, channels, request, out);
            }
            ClientMessage::Unsubscribe { channel } => {
                self.handle_unsubscribe(channels, &channel, out)
            }
            ClientMessage::Signin { user_data, auth } => {
                self.handle_signin(app, &user_data, &auth, out)
            }
            ClientMessage::ClientEvent {
                event,
                channel,
                data,
            } => {
                if let Err(refusal) =
                    self.handle_client_event(app, channels, &event, &channel, data, now, out)
                {
                    let frame = protocol::error(refusal.code(), refusal.message());
                    out.push(Action::Send(frame));
                }
            }
        }
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    fn handle_subscribe(
        &mut self,
        app: &AppConfig,
        channels: &mut impl ChannelRegistry,
        request: SubscribeRequest<'_>,
        out: &mut Vec<Action>,
    ) {
        let SubscribeRequest {
            channel,
            auth,
            channel_data,
        } = request;
        let refuse = |kind: &str, message: &str, status: u16| {
            Action::Send(protocol::subscription_error(channel, kind, message, status))
        };
        // pusher-js subscribes to `#server-to-user-{id}` after signing in; that channel is how
        // user events reach the connection, and only the signed-in user may join it.
        let validity = match channel.strip_prefix(SERVER_TO_USER_PREFIX) {
            Some(user) if Some(user) == self.user_id() => Ok(()),
            _ => channels::validate_channel_name(channel),
        };
        if let Err(e) = validity {
            return out.push(refuse("InvalidChannel", e.message(), 400));
        }
        let kind = ChannelKind::of(channel);
        if let Some(existing) = channels
            .find(channel)
            .and_then(|id| self.subscriptions.find(id))
        {
            // A repeated subscribe is answered again but changes nothing; presence would
            // otherwise count the connection twice.
            if !existing.kind.is_presence() {
                out.push(Action::Send(protocol::subscription_succeeded(channel)));
            }
            return;
        }
        let limits = &app.limits;
        let over_limit = |limit: Limit, message: &str, out: &mut Vec<Action>| {
            out.push(refuse("LimitReached", message, limit.status()));
            out.push(Action::Refused(limit));
        };
        if self.subscriptions.len() >= limits.max_subscriptions_per_connection {
            let message = format!(
                "Too many subscriptions: a connection may join at most {}",
                limits.max_subscriptions_per_connection
            );
            return over_limit(Limit::SubscriptionsPerConnection, &message, out);
        }
        let member = if kind.needs_auth() {
            let socket_id = self.socket_id().to_string();
            let data = if kind.is_presence() {
                Some(channel_data.unwrap_or_default())
            } else {
                None
            };
            if let Err(e) = auth::verify_channel_auth(app, &socket_id, channel, data, auth) {
                return out.push(refuse("AuthError", e.message(), 401));
            }
            match data.map(protocol::parse_channel_data) {
                Some(Ok(member)) => Some(member),
                Some(Err(e)) => return out.push(refuse("InvalidChannelData", e.message(), 400)),
                None => None,
            }
        } else {
            None
        };
        if let Some(member) = &member
            && member
                .user_info
                .as_ref()
                .is_some_and(|info| info.len() > limits.max_presence_user_info_bytes)
        {
            let message = format!(
                "The maximum size of a presence member's user_info is {} bytes",
                limits.max_presence_user_info_bytes
            );
            return over_limit(Limit::PresenceUserInfo, &message, out);
        }
        let occupancy = channels.occupancy(channel, member.as_ref().map(|m| &*m.user_id));
        if !occupancy.channel_exists && occupancy.app_channels >= limits.max_channels {
            let message = format!(
                "The app has the maximum of {} channels occupied",
                limits.max_channels
            );
            return over_limit(Limit::ChannelsPerApp, &message, out);
        }
        if member.is_some()
            && !occupancy.is_member
            && occupancy.members >= limits.max_presence_members
        {
            let message = format!(
                "The maximum members per presence channel ({}) was reached",
                limits.max_presence_members
            );
            return over_limit(Limit::PresenceMembers, &message, out);
        }
        let id = channels.intern(channel);
        self.subscriptions.push(Subscription { channel: id, kind });
        out.push(Action::Subscribe { channel: id });
        match member {
            Some(member) => {
                self.extra().presence.push((id, member.user_id.clone()));
                out.push(Action::JoinPresence {
                    channel: id,
                    channel_name: channel.into(),
                    member,
                });
            }
            None => out.push(Action::Send(protocol::subscription_succeeded(channel))),
        }
        if kind.cache {
            out.push(Action::ReplayCache {
                channel: id,
                channel_name: channel.into(),
            });
        }
    }

    fn handle_unsubscribe(
        &mut self,
        channels: &impl ChannelRegistry,
        channel: &str,
        out: &mut Vec<Action>,
    ) {
        let Some(sub) = channels
            .find(channel)
            .and_then(|id| self.subscriptions.remove(id))
        else {
            return;
        };
        if let Some(extra) = self.extra.as_mut()
            && let Some(i) = extra.presence.iter().position(|(id, _)| *id == sub.channel)
        {
            let (channel, user_id) = extra.presence.swap_remove(i);
            out.push(Action::LeavePresence { channel, user_id });
        }
        out.push(Action::Unsubscribe {
            channel: sub.channel,
        });
    }

    fn handle_signin(
        &mut self,
        app: &AppConfig,
        user_data: &str,
        auth: &str,
        out: &mut Vec<Action>,
    ) {
        if !app.user_authentication {
            return out.push(Action::Send(protocol::error(
                None,
                "User authentication is disabled for this app",
            )));
        }
        if self.user_id().is_some() {
            return out.push(Action::Send(protocol::error(None, "Already signed in")));
        }
        let socket_id = self.socket_id().to_string();
        let verified = auth::verify_user_auth(app, &socket_id, user_data, Some(auth));
        let user_id = verified
            .ok()
            .and_then(|()| protocol::parse_user_data_id(user_data));
        let Some(user_id) = user_id else {
            return self.close(CloseCode::Unauthorized, out);
        };
        let user_id: Box<str> = user_id.into();
        self.extra().user_id = Some(user_id.clone());
        out.push(Action::SignIn { user_id });
        out.push(Action::Send(protocol::signin_success(user_data)));
    }

    /// Relays a client event, or says why not.
    #[allow(clippy::too_many_arguments)] // Each is a distinct input of one relay decision.
    fn handle_client_event(
        &mut self,
        app: &AppConfig,
        channels: &impl ChannelRegistry,
        event: &str,
        channel: &str,
        data: &str,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), ClientEventRefusal> {
        if !app.client_events {
            return Err(ClientEventRefusal::Disabled);
        }
        let rate = app.limits.client_events_per_second;
        let limit = self
            .extra()
            .client_events
            .get_or_insert_with(|| ClientEventBucket {
                epoch: now,
                bucket: TokenBucket::full(rate, 0),
            });
        let tick = tick_of(now, limit.epoch);
        if !limit.bucket.try_take(tick, 1, rate, rate) {
            return Err(ClientEventRefusal::RateLimited);
        }
        if !ChannelKind::of(channel).allows_client_events() {
            return Err(ClientEventRefusal::ChannelKind);
        }
        let id = channels
            .find(channel)
            .filter(|&id| self.subscriptions.find(id).is_some());
        let Some(id) = id else {
            return Err(ClientEventRefusal::NotSubscribed);
        };
        if event.len() > app.limits.max_event_name_bytes {
            return Err(ClientEventRefusal::NameTooLong);
        }
        if data.len() > app.limits.max_event_payload_bytes {
            return Err(ClientEventRefusal::DataTooLarge);
        }
        let user_id = self
            .extra
            .as_ref()
            .and_then(|e| e.presence.iter().find(|(c, _)| *c == id))
            .map(|(_, u)| &**u);
        let frame = encode_event_frame(event, channel, data, user_id);
        out.push(Action::Publish {
            channel: id,
            frame,
            exclude: Some(self.socket_id()),
        });
        Ok(())
    }
}

/// Why a client event was not relayed; answered with a `pusher:error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientEventRefusal {
    /// The app does not allow client events.
    Disabled,
    /// Over the per-connection rate (code 4301).
    RateLimited,
    /// Not a private or presence channel.
    ChannelKind,
    /// The sender is not subscribed to the channel.
    NotSubscribed,
    /// The event name is over the app's limit.
    NameTooLong,
    /// The data is over the app's limit.
    DataTooLarge,
}

impl ClientEventRefusal {
    fn code(self) -> Option<u16> {
        (self == Self::RateLimited).then_some(CLIENT_EVENT_RATE_LIMIT)
    }

    fn message(self) -> &'static str {
        match self {
            Self::Disabled => "Client events are disabled for this app",
            Self::RateLimited => "Client event rejected due to rate limit",
            Self::ChannelKind => "Client events are only allowed on private and presence channels",
            Self::NotSubscribed => "Client event rejected: not subscribed to the channel",
            Self::NameTooLong => "Client event name is too long",
            Self::DataTooLarge => "Client event data is too large",
        }
    }
}

/// The fields of a `pusher:subscribe`, borrowed.
struct SubscribeRequest<'a> {
    channel: &'a str,
    auth: Option<&'a str>,
    channel_data: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::{Value, json};

    use super::*;
    use crate::pusher::Occupancy;

    /// The shard's channel table, reduced to what a session sees; `occupancy` is what it
    /// reports of the process for every channel.
    #[derive(Default)]
    struct Table(HashMap<String, ChannelId>, Occupancy);

    impl ChannelRegistry for Table {
        fn intern(&mut self, name: &str) -> ChannelId {
            let next = ChannelId(self.0.len() as u32);
            *self.0.entry(name.to_owned()).or_insert(next)
        }
        fn find(&self, name: &str) -> Option<ChannelId> {
            self.0.get(name).copied()
        }
        fn occupancy(&self, _: &str, _: Option<&str>) -> Occupancy {
            self.1
        }
    }

    const SOCKET: SocketId = SocketId { high: 7, low: 42 };

    fn app() -> AppConfig {
        AppConfig {
            client_events: true,
            user_authentication: true,
            ..AppConfig::new("1", "key", "secret")
        }
    }

    struct Harness {
        app: AppConfig,
        config: PusherConfig,
        table: Table,
        session: Session,
        t0: Instant,
    }

    impl Harness {
        fn new(app: AppConfig) -> Self {
            let apps = Apps::new(vec![app.clone()]).unwrap_or_else(|e| panic!("{e}"));
            let config = PusherConfig::default();
            let t0 = Instant::now();
            let request = ConnectRequest {
                app_key: "key",
                protocol: Some("7"),
            };
            let load = Load::default();
            let (session, _) = Session::connect(&apps, &request, SOCKET, load, &config, t0)
                .unwrap_or_else(|c| panic!("{c:?}"));
            Self {
                app,
                config,
                table: Table::default(),
                session,
                t0,
            }
        }

        fn text_at(&mut self, text: &str, now: Instant) -> Vec<Action> {
            let mut out = Vec::new();
            self.session
                .handle_text(&self.app, &mut self.table, text, now, &mut out);
            out
        }

        fn text(&mut self, text: &str) -> Vec<Action> {
            self.text_at(text, self.t0)
        }

        fn subscribe(&mut self, channel: &str, channel_data: Option<&str>) -> Vec<Action> {
            let mut data = json!({ "channel": channel });
            if ChannelKind::of(channel).needs_auth() {
                let mut parts = vec!["7.42", ":", channel];
                if let Some(cd) = channel_data {
                    parts.extend([":", cd]);
                    data["channel_data"] = cd.into();
                }
                data["auth"] = format!("key:{}", auth::sign("secret", &parts)).into();
            }
            self.text(&json!({"event": "pusher:subscribe", "data": data}).to_string())
        }
    }

    fn sent(actions: &[Action]) -> Vec<Value> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(f) => Some(serde_json::from_str(f.text()).unwrap_or(Value::Null)),
                _ => None,
            })
            .collect()
    }

    fn only_error(actions: &[Action]) -> Value {
        assert_eq!(actions.len(), 1, "{actions:?}");
        let v = sent(actions).remove(0);
        assert_eq!(v["event"], "pusher:error", "{v}");
        v["data"].clone()
    }

    fn subscription_error(actions: &[Action]) -> Value {
        let v = sent(actions).remove(0);
        assert_eq!(v["event"], "pusher:subscription_error", "{v}");
        serde_json::from_str(v["data"].as_str().unwrap_or_default()).unwrap_or_default()
    }

    fn subscription_error_type(actions: &[Action]) -> String {
        assert_eq!(actions.len(), 1, "{actions:?}");
        subscription_error(actions)["type"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The refusal at `limit`: the error frame with its type and status, then the count.
    fn assert_refused_at(actions: &[Action], limit: Limit) {
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert_eq!(actions[1], Action::Refused(limit));
        let error = subscription_error(actions);
        assert_eq!(error["type"], "LimitReached", "{error}");
        assert_eq!(error["status"], limit.status(), "{error}");
    }

    #[test]
    fn connect_decisions_table() {
        let disabled = AppConfig {
            enabled: false,
            ..AppConfig::new("2", "off", "s")
        };
        let capped = AppConfig {
            limits: crate::pusher::AppLimits {
                max_connections: Some(3),
                ..Default::default()
            },
            ..AppConfig::new("3", "capped", "s")
        };
        let apps = Apps::new(vec![app(), disabled, capped]).unwrap_or_else(|e| panic!("{e}"));
        let cases: &[(&str, u32, Result<(), CloseCode>)] = &[
            (
                "/app/key?protocol=7&client=js&version=8.4.0&flash=false",
                0,
                Ok(()),
            ),
            ("/app/key?client=js&protocol=7", 0, Ok(())),
            ("/app/nope?protocol=7", 0, Err(CloseCode::AppDoesNotExist)),
            ("/app/off?protocol=7", 0, Err(CloseCode::AppDisabled)),
            ("/app/key", 0, Err(CloseCode::NoProtocolVersion)),
            (
                "/app/key?protocol=",
                0,
                Err(CloseCode::InvalidVersionFormat),
            ),
            (
                "/app/key?protocol=7.1",
                0,
                Err(CloseCode::InvalidVersionFormat),
            ),
            (
                "/app/key?protocol=6",
                0,
                Err(CloseCode::UnsupportedProtocolVersion),
            ),
            (
                "/app/key?protocol=8",
                0,
                Err(CloseCode::UnsupportedProtocolVersion),
            ),
            (
                "/app/key?protocol=99999999999999999999",
                0,
                Err(CloseCode::UnsupportedProtocolVersion),
            ),
            ("/app/capped?protocol=7", 2, Ok(())),
            (
                "/app/capped?protocol=7",
                3,
                Err(CloseCode::OverConnectionQuota),
            ),
            ("/apps/key?protocol=7", 0, Err(CloseCode::PathNotFound)),
            ("/app/?protocol=7", 0, Err(CloseCode::PathNotFound)),
            ("/app/key/x?protocol=7", 0, Err(CloseCode::PathNotFound)),
            ("/", 0, Err(CloseCode::PathNotFound)),
        ];
        let now = Instant::now();
        for &(target, count, expected) in cases {
            let load = Load {
                app_connections: count,
            };
            let result = ConnectRequest::parse(target).and_then(|req| {
                Session::connect(&apps, &req, SOCKET, load, &PusherConfig::default(), now)
            });
            assert_eq!(
                result.as_ref().map(|_| ()).map_err(|c| *c),
                expected,
                "{target}"
            );
            if let Ok((session, frame)) = result {
                assert_eq!(session.socket_id(), SOCKET);
                assert!(frame.text().contains("7.42"), "{}", frame.text());
            }
        }
    }

    #[test]
    fn session_stays_small() {
        let size = std::mem::size_of::<Session>();
        assert!(size <= 64, "Session is {size} bytes");
    }

    #[test]
    fn ping_is_answered_and_garbage_gets_an_error() {
        let mut h = Harness::new(app());
        assert_eq!(
            sent(&h.text(r#"{"event":"pusher:ping","data":{}}"#))[0]["event"],
            "pusher:pong"
        );
        assert!(h.text(r#"{"event":"pusher:pong","data":{}}"#).is_empty());
        let cases = [
            "nope",
            r#"{"event":"x"}"#,
            r#"{"event":"pusher:subscribe","data":{}}"#,
        ];
        for text in cases {
            assert_eq!(only_error(&h.text(text))["code"], Value::Null, "{text}");
        }
    }

    #[test]
    fn public_private_and_cache_subscriptions() {
        let mut h = Harness::new(app());
        let actions = h.subscribe("chat", None);
        assert_eq!(
            actions[0],
            Action::Subscribe {
                channel: ChannelId(0)
            }
        );
        assert_eq!(
            actions[1],
            Action::Send(protocol::subscription_succeeded("chat"))
        );
        assert_eq!(actions.len(), 2);

        let actions = h.subscribe("private-cache-x", None);
        assert_eq!(
            actions,
            [
                Action::Subscribe {
                    channel: ChannelId(1)
                },
                Action::Send(protocol::subscription_succeeded("private-cache-x")),
                Action::ReplayCache {
                    channel: ChannelId(1),
                    channel_name: "private-cache-x".into()
                },
            ]
        );
        assert_eq!(h.session.subscriptions().count(), 2);

        // A repeat is answered but changes nothing.
        assert_eq!(
            h.subscribe("chat", None),
            [Action::Send(protocol::subscription_succeeded("chat"))]
        );
        assert_eq!(h.session.subscriptions().count(), 2);

        let unsub = h.text(r#"{"event":"pusher:unsubscribe","data":{"channel":"chat"}}"#);
        assert_eq!(
            unsub,
            [Action::Unsubscribe {
                channel: ChannelId(0)
            }]
        );
        assert!(
            h.text(r#"{"event":"pusher:unsubscribe","data":{"channel":"chat"}}"#)
                .is_empty()
        );
        assert!(
            h.text(r#"{"event":"pusher:unsubscribe","data":{"channel":"never"}}"#)
                .is_empty()
        );
    }

    #[test]
    fn subscription_refusals_table() {
        let sig = |msg: &str| format!("key:{}", auth::sign("secret", &[msg]));
        let long = "a".repeat(165);
        let cases: Vec<(Value, &str)> = vec![
            (json!({"channel": long}), "InvalidChannel"),
            (json!({"channel": "bad name"}), "InvalidChannel"),
            (json!({"channel": "#server-to-user-1"}), "InvalidChannel"),
            (json!({"channel": "private-a"}), "AuthError"),
            (
                json!({"channel": "private-a", "auth": "key:nothex"}),
                "AuthError",
            ),
            (
                json!({"channel": "private-a", "auth": sig("7.42:private-b")}),
                "AuthError",
            ),
            (
                json!({"channel": "private-a", "auth": sig("7.43:private-a")}),
                "AuthError",
            ),
            (
                json!({"channel": "private-encrypted-a", "auth": sig("7.42:private-a")}),
                "AuthError",
            ),
            (
                json!({"channel": "presence-a", "auth": sig("7.42:presence-a")}),
                "AuthError",
            ),
            (
                json!({"channel": "presence-a", "channel_data": "{}", "auth": sig("7.42:presence-a:{}")}),
                "InvalidChannelData",
            ),
        ];
        let mut h = Harness::new(app());
        for (data, expected) in cases {
            let text = json!({"event": "pusher:subscribe", "data": data}).to_string();
            assert_eq!(subscription_error_type(&h.text(&text)), expected, "{text}");
        }
        assert_eq!(h.session.subscriptions().count(), 0);
        let ok = json!({"channel": "private-a", "auth": sig("7.42:private-a")});
        let ok = h.text(&json!({"event": "pusher:subscribe", "data": ok}).to_string());
        assert_eq!(ok.len(), 2, "{ok:?}");
    }

    #[test]
    fn subscription_cap() {
        let mut h = Harness::new(app());
        for i in 0..h.app.limits.max_subscriptions_per_connection {
            assert_eq!(h.subscribe(&format!("c{i}"), None).len(), 2);
        }
        assert_refused_at(
            &h.subscribe("one-more", None),
            Limit::SubscriptionsPerConnection,
        );
        h.text(r#"{"event":"pusher:unsubscribe","data":{"channel":"c0"}}"#);
        assert_eq!(h.subscribe("one-more", None).len(), 2);
    }

    #[test]
    fn app_channel_cap_refuses_only_new_channels() {
        let mut h = Harness::new(app());
        let max = h.app.limits.max_channels;
        h.table.1 = Occupancy {
            app_channels: max,
            ..Occupancy::default()
        };
        assert_refused_at(&h.subscribe("new", None), Limit::ChannelsPerApp);
        h.table.1.channel_exists = true;
        assert_eq!(h.subscribe("new", None).len(), 2, "joins an occupied one");
        h.table.1 = Occupancy {
            app_channels: max - 1,
            ..Occupancy::default()
        };
        assert_eq!(h.subscribe("another", None).len(), 2);
    }

    #[test]
    fn presence_member_cap_admits_more_devices_of_members() {
        let mut h = Harness::new(app());
        let data = r#"{"user_id":"u1"}"#;
        h.table.1 = Occupancy {
            channel_exists: true,
            members: h.app.limits.max_presence_members,
            ..Occupancy::default()
        };
        assert_refused_at(
            &h.subscribe("presence-full", Some(data)),
            Limit::PresenceMembers,
        );
        assert_eq!(h.session.subscriptions().count(), 0);
        h.table.1.is_member = true;
        let joined = h.subscribe("presence-full", Some(data));
        assert!(
            matches!(joined[1], Action::JoinPresence { .. }),
            "{joined:?}"
        );
        h.table.1.is_member = false;
        assert_eq!(h.subscribe("public-is-not-capped", None).len(), 2);
    }

    #[test]
    fn presence_user_info_cap() {
        let mut h = Harness::new(app());
        let max = h.app.limits.max_presence_user_info_bytes;
        // `{"n":"..."}` is 8 bytes of JSON around the string.
        let at_max = format!(
            r#"{{"user_id":"u1","user_info":{{"n":"{}"}}}}"#,
            "x".repeat(max - 8)
        );
        let joined = h.subscribe("presence-a", Some(&at_max));
        assert!(
            matches!(joined[1], Action::JoinPresence { .. }),
            "{joined:?}"
        );
        let over = format!(
            r#"{{"user_id":"u1","user_info":{{"n":"{}"}}}}"#,
            "x".repeat(max - 7)
        );
        assert_refused_at(
            &h.subscribe("presence-b", Some(&over)),
            Limit::PresenceUserInfo,
        );
        assert_eq!(h.session.subscriptions().count(), 1);
    }

    #[test]
    fn presence_join_leave_and_disconnect() {
        let mut h = Harness::new(app());
        let data = r#"{"user_id":"u1","user_info":{"name":"A"}}"#;
        let actions = h.subscribe("presence-room", Some(data));
        let member = PresenceMember {
            user_id: "u1".into(),
            user_info: Some(r#"{"name":"A"}"#.into()),
        };
        assert_eq!(
            actions,
            [
                Action::Subscribe {
                    channel: ChannelId(0)
                },
                Action::JoinPresence {
                    channel: ChannelId(0),
                    channel_name: "presence-room".into(),
                    member
                },
            ]
        );
        assert!(
            h.subscribe("presence-room", Some(data)).is_empty(),
            "repeat presence subscribe"
        );
        h.subscribe("chat", None);
        let unsub = h.text(r#"{"event":"pusher:unsubscribe","data":{"channel":"presence-room"}}"#);
        assert_eq!(
            unsub,
            [
                Action::LeavePresence {
                    channel: ChannelId(0),
                    user_id: "u1".into()
                },
                Action::Unsubscribe {
                    channel: ChannelId(0)
                },
            ]
        );
        h.subscribe("presence-room", Some(data));
        let mut out = Vec::new();
        h.session.handle_disconnect(&mut out);
        assert_eq!(
            out,
            [
                Action::Unsubscribe {
                    channel: ChannelId(1)
                },
                Action::LeavePresence {
                    channel: ChannelId(0),
                    user_id: "u1".into()
                },
                Action::Unsubscribe {
                    channel: ChannelId(0)
                },
            ]
        );
        assert!(h.session.is_closed());
        assert!(
            h.text(r#"{"event":"pusher:ping"}"#).is_empty(),
            "closed sessions ignore input"
        );
    }

    #[test]
    fn client_events_are_relayed_to_others_only() {
        let mut h = Harness::new(app());
        h.subscribe("private-a", None);
        h.subscribe("presence-r", Some(r#"{"user_id":"u9"}"#));
        let actions = h.text(r#"{"event":"client-typing","channel":"private-a","data":{"x":1}}"#);
        let expected = encode_event_frame("client-typing", "private-a", r#"{"x":1}"#, None);
        assert_eq!(
            actions,
            [Action::Publish {
                channel: ChannelId(0),
                frame: expected,
                exclude: Some(SOCKET)
            }]
        );

        let actions = h.text(r#"{"event":"client-typing","channel":"presence-r","data":"hi"}"#);
        let expected = encode_event_frame("client-typing", "presence-r", r#""hi""#, Some("u9"));
        assert_eq!(
            actions,
            [Action::Publish {
                channel: ChannelId(1),
                frame: expected,
                exclude: Some(SOCKET)
            }]
        );
    }

    #[test]
    fn client_event_refusals_table() {
        let mut h = Harness::new(app());
        h.subscribe("private-a", None);
        h.subscribe("chat", None);
        h.subscribe("private-encrypted-e", None);
        let big = format!(
            r#"{{"event":"client-x","channel":"private-a","data":"{}"}}"#,
            "x".repeat(10 * 1024)
        );
        let long_name = format!(
            r#"{{"event":"client-{}","channel":"private-a"}}"#,
            "x".repeat(200)
        );
        let cases = [
            r#"{"event":"client-x","channel":"chat","data":1}"#.to_owned(),
            r#"{"event":"client-x","channel":"private-encrypted-e","data":1}"#.to_owned(),
            r#"{"event":"client-x","channel":"private-other","data":1}"#.to_owned(),
            big,
            long_name,
        ];
        for text in &cases {
            let error = only_error(&h.text(text));
            assert_eq!(error["code"], Value::Null, "{text}");
        }
        let mut off = Harness::new(AppConfig {
            client_events: false,
            ..app()
        });
        off.subscribe("private-a", None);
        let error = only_error(&off.text(r#"{"event":"client-x","channel":"private-a"}"#));
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains("disabled")
        );
    }

    #[test]
    fn client_events_are_rate_limited_per_connection() {
        let mut h = Harness::new(app());
        h.subscribe("private-a", None);
        let event = r#"{"event":"client-x","channel":"private-a","data":1}"#;
        for _ in 0..10 {
            assert!(matches!(h.text(event)[..], [Action::Publish { .. }]));
        }
        assert_eq!(only_error(&h.text(event))["code"], 4301);
        let later = h.t0 + Duration::from_millis(100);
        assert!(matches!(
            h.text_at(event, later)[..],
            [Action::Publish { .. }]
        ));
        assert_eq!(only_error(&h.text_at(event, later))["code"], 4301);
        assert!(
            !h.session.is_closed(),
            "a rate-limited client stays connected"
        );
    }

    fn signin_text(user_data: &str, socket: &str) -> String {
        let auth = format!(
            "key:{}",
            auth::sign("secret", &[socket, "::user::", user_data])
        );
        json!({"event": "pusher:signin", "data": {"user_data": user_data, "auth": auth}})
            .to_string()
    }

    #[test]
    fn signin_success_and_sign_out_on_disconnect() {
        let mut h = Harness::new(app());
        let user_data = r#"{"id":"u1","name":"A"}"#;
        let actions = h.text(&signin_text(user_data, "7.42"));
        assert_eq!(
            actions[0],
            Action::SignIn {
                user_id: "u1".into()
            }
        );
        assert_eq!(
            actions[1],
            Action::Send(protocol::signin_success(user_data))
        );
        assert_eq!(h.session.user_id(), Some("u1"));
        assert_eq!(
            only_error(&h.text(&signin_text(user_data, "7.42")))["code"],
            Value::Null
        );

        // pusher-js then subscribes to its own server-to-user channel, and only to its own.
        let own =
            h.text(r##"{"event":"pusher:subscribe","data":{"channel":"#server-to-user-u1"}}"##);
        assert_eq!(
            own[0],
            Action::Subscribe {
                channel: ChannelId(0)
            }
        );
        let other =
            h.text(r##"{"event":"pusher:subscribe","data":{"channel":"#server-to-user-u2"}}"##);
        assert_eq!(subscription_error_type(&other), "InvalidChannel");
        let msg = r##"{"event":"pusher:unsubscribe","data":{"channel":"#server-to-user-u1"}}"##;
        assert_eq!(
            h.text(msg),
            [Action::Unsubscribe {
                channel: ChannelId(0)
            }]
        );
        h.text(r##"{"event":"pusher:subscribe","data":{"channel":"#server-to-user-u1"}}"##);

        let mut out = Vec::new();
        h.session.handle_disconnect(&mut out);
        let expected = [
            Action::Unsubscribe {
                channel: ChannelId(0),
            },
            Action::SignOut {
                user_id: "u1".into(),
            },
        ];
        assert_eq!(out, expected);
    }

    #[test]
    fn signin_refusals_table() {
        let cases = [
            signin_text(r#"{"id":"u1"}"#, "7.43"),
            signin_text(r#"{"id":"u 1"}"#, "7.42"),
            signin_text(r#"{"name":"no id"}"#, "7.42"),
            signin_text("not json", "7.42"),
            r#"{"event":"pusher:signin","data":{"user_data":"{\"id\":\"1\"}","auth":"key:00"}}"#
                .to_owned(),
        ];
        for text in cases {
            let mut h = Harness::new(app());
            let actions = h.text(&text);
            assert_eq!(sent(&actions)[0]["data"]["code"], 4009, "{text}");
            assert_eq!(
                actions.last(),
                Some(&Action::Close(CloseCode::Unauthorized)),
                "{text}"
            );
            assert!(h.session.is_closed());
        }
        let mut off = Harness::new(AppConfig {
            user_authentication: false,
            ..app()
        });
        assert_eq!(
            only_error(&off.text(&signin_text(r#"{"id":"u1"}"#, "7.42")))["code"],
            Value::Null
        );
        assert!(!off.session.is_closed());
    }

    #[test]
    fn server_pings_after_silence_and_closes_4201_without_pong() {
        let mut h = Harness::new(app());
        let config = h.config.clone();
        let mut out = Vec::new();
        let due = h.t0 + config.activity_timeout;
        assert_eq!(h.session.poll_timeout(&config), Some(due));
        h.session
            .handle_timeout(&config, due - Duration::from_secs(1), &mut out);
        assert!(out.is_empty(), "not due yet");
        h.session.handle_timeout(&config, due, &mut out);
        assert_eq!(out, [Action::Send(protocol::ping())]);
        out.clear();

        // Any message counts as the answer.
        h.text_at(
            r#"{"event":"pusher:pong","data":{}}"#,
            due + Duration::from_secs(1),
        );
        assert_eq!(
            h.session.poll_timeout(&config),
            Some(due + Duration::from_secs(1) + config.activity_timeout)
        );

        let second = due + Duration::from_secs(1) + config.activity_timeout;
        h.session.handle_timeout(&config, second, &mut out);
        assert_eq!(out, [Action::Send(protocol::ping())]);
        out.clear();
        assert_eq!(
            h.session.poll_timeout(&config),
            Some(second + config.pong_timeout)
        );
        h.session
            .handle_timeout(&config, second + config.pong_timeout, &mut out);
        assert_eq!(sent(&out)[0]["data"]["code"], 4201);
        assert_eq!(out.last(), Some(&Action::Close(CloseCode::PongNotReceived)));
        assert_eq!(h.session.poll_timeout(&config), None);
    }

    #[test]
    fn activity_other_than_text_defers_the_ping() {
        let mut h = Harness::new(app());
        let config = h.config.clone();
        let later = h.t0 + Duration::from_secs(100);
        h.session.handle_activity(later);
        let mut out = Vec::new();
        h.session
            .handle_timeout(&config, h.t0 + config.activity_timeout, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn server_side_close_codes() {
        for code in [
            CloseCode::Reconnect,
            CloseCode::Unauthorized,
            CloseCode::OverCapacity,
        ] {
            let mut h = Harness::new(app());
            let mut out = Vec::new();
            h.session.close(code, &mut out);
            h.session.close(code, &mut out);
            assert_eq!(out.len(), 2, "closing twice sends one close");
            assert_eq!(sent(&out)[0]["data"]["code"], code.code());
            assert_eq!(out[1], Action::Close(code));
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let mut h = Harness::new(app());
            h.text(&text);
        }

        #[test]
        fn message_shaped_text_never_panics(
            event in "(pusher:(subscribe|unsubscribe|signin|ping|pong)|client-[a-z]{0,4}|[a-z:]{0,8})",
            channel in "(private-|presence-|cache-|private-encrypted-|#server-to-user-)?[a-z0-9;@=]{0,8}",
            data in "\\PC{0,40}",
        ) {
            let mut h = Harness::new(app());
            h.subscribe("private-a", None);
            let messages = [
                json!({"event": event, "channel": channel, "data": data}),
                json!({"event": event, "data": {"channel": channel, "auth": data, "channel_data": data, "user_data": data}}),
                json!({"event": event, "data": data}),
            ];
            for m in messages {
                h.text(&m.to_string());
            }
            let mut out = Vec::new();
            h.session.handle_disconnect(&mut out);
        }
    }
}
