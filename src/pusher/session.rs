//! One Pusher connection's protocol state, sans-IO: the text messages a client sends go in
//! with `now`, and [`Action`]s for the hosting shard come out.
//!
//! The state is deliberately tiny (see [`Session`]): a million of them live in one process.
//! Names of channels are not kept here; the shard's channel table numbers them
//! ([`ChannelRegistry`]) and the session keeps only the numbers.

use std::time::{Duration, Instant};

use crate::pusher::apps::{AppConfig, AppIndex, Apps};
use crate::pusher::auth;
use crate::pusher::channels::{self, ChannelId, ChannelKind, ChannelRegistry};
use crate::pusher::codes::{CLIENT_EVENT_RATE_LIMIT, CloseCode};
use crate::pusher::frame::{Frame, encode_event_frame};
use crate::pusher::protocol::{self, ClientMessage, PresenceMember};
use crate::pusher::ratelimit::TokenBucket;
use crate::pusher::socket_id::SocketId;
use crate::pusher::subscriptions::{Subscription, SubscriptionList};

/// The only protocol version accepted in `?protocol=`: every maintained client library
/// (pusher-js 2 and later, Laravel Echo, the mobile SDKs) sends 7. Anything else gets 4007.
pub const PROTOCOL_VERSION: u32 = 7;

/// Protocol settings shared by every connection of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PusherConfig {
    /// Silence after which the server pings (sent to clients as `activity_timeout`, so they
    /// ping first); Pusher uses 120 s.
    pub activity_timeout: Duration,
    /// How long a server ping waits for any message before closing with 4201; Pusher
    /// recommends 30 s.
    pub pong_timeout: Duration,
    /// Most channels one connection may be subscribed to (`shared/LIMITS.md`: 128).
    pub max_subscriptions: usize,
}

impl Default for PusherConfig {
    fn default() -> Self {
        Self {
            activity_timeout: Duration::from_secs(120),
            pong_timeout: Duration::from_secs(30),
            max_subscriptions: 128,
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
    /// connection with socket id `exclude`.
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
    client_events: Option<TokenBucket>,
}

/// One connection's Pusher state.
///
/// Call order: [`Session::connect`] once at the upgrade (send the frame it returns, or close
/// with the code); then [`Session::handle_text`] for each text message and
/// [`Session::handle_activity`] for any other inbound traffic; [`Session::handle_timeout`] when
/// [`Session::poll_timeout`] is reached; [`Session::handle_disconnect`] once when the
/// connection ends, whatever the reason, so the shard can undo subscriptions and presence.
#[derive(Debug)]
pub struct Session {
    socket_id: SocketId,
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

impl Session {
    /// Decides the upgrade of a new connection: the app must exist (4001) and be enabled
    /// (4003), the protocol version must be 7 (missing 4008, not a number 4006, another
    /// number 4007) and the app below its connection cap (4004; `app_connections` is the
    /// app's current count). On success returns the session and the
    /// `pusher:connection_established` frame to send first. On failure, send
    /// [`protocol::error`] with the code, then close with it.
    pub fn connect(
        apps: &Apps,
        request: &ConnectRequest<'_>,
        socket_id: SocketId,
        app_connections: u32,
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
            .is_some_and(|max| app_connections >= max)
        {
            return Err(CloseCode::OverConnectionQuota);
        }
        let session = Self {
            socket_id,
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
        self.socket_id
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
        config: &PusherConfig,
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
                self.handle_subscribe(app, config, channels, request, out);
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
                if let Err(message) =
                    self.handle_client_event(app, channels, &event, &channel, data, now, out)
                {
                    let code = (message == RATE_LIMITED).then_some(CLIENT_EVENT_RATE_LIMIT);
                    out.push(Action::Send(protocol::error(code, message)));
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
        config: &PusherConfig,
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
        if let Err(e) = channels::validate_channel_name(channel) {
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
        if self.subscriptions.len() >= config.max_subscriptions {
            let message = format!(
                "Too many subscriptions: a connection may join at most {}",
                config.max_subscriptions
            );
            return out.push(refuse("LimitReached", &message, 400));
        }
        let member = if kind.needs_auth() {
            let socket_id = self.socket_id.to_string();
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
        let socket_id = self.socket_id.to_string();
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

    /// Relays a client event, or says why not (the `pusher:error` message).
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
    ) -> Result<(), &'static str> {
        if !app.client_events {
            return Err("Client events are disabled for this app");
        }
        let rate = app.limits.client_events_per_second;
        let bucket = self
            .extra()
            .client_events
            .get_or_insert_with(|| TokenBucket::full(rate, now));
        if !bucket.try_take(rate, now) {
            return Err(RATE_LIMITED);
        }
        if !ChannelKind::of(channel).allows_client_events() {
            return Err("Client events are only allowed on private and presence channels");
        }
        let id = channels
            .find(channel)
            .filter(|&id| self.subscriptions.find(id).is_some());
        let Some(id) = id else {
            return Err("Client event rejected: not subscribed to the channel");
        };
        if event.len() > app.limits.max_event_name_bytes {
            return Err("Client event name is too long");
        }
        if data.len() > app.limits.max_event_payload_bytes {
            return Err("Client event data is too large");
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
            exclude: Some(self.socket_id),
        });
        Ok(())
    }
}

/// The `pusher:error` message of a rate-limited client event (code 4301).
const RATE_LIMITED: &str = "Client event rejected due to rate limit";

/// The fields of a `pusher:subscribe`, borrowed.
struct SubscribeRequest<'a> {
    channel: &'a str,
    auth: Option<&'a str>,
    channel_data: Option<&'a str>,
}
