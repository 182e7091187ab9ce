//! The Pusher HTTP API, sans-IO: a request (method, target, body, `now`) becomes a typed,
//! authenticated, validated [`ApiRequest`] or an [`ApiError`] carrying the status and JSON body
//! to answer with; the [`response`] builders turn what the shards collected into the bodies the
//! Pusher server SDKs parse.
//!
//! Routes (the app id in the path must be the app of `auth_key`):
//!
//! | method | path | request |
//! | --- | --- | --- |
//! | POST | `/apps/{id}/events` | [`ApiRequest::Events`] |
//! | POST | `/apps/{id}/batch_events` | [`ApiRequest::Events`] (`batch`) |
//! | GET | `/apps/{id}/channels` | [`ApiRequest::Channels`] |
//! | GET | `/apps/{id}/channels/{name}` | [`ApiRequest::Channel`] |
//! | GET | `/apps/{id}/channels/{name}/users` | [`ApiRequest::Users`] |
//! | POST | `/apps/{id}/users/{user_id}/terminate_connections` | [`ApiRequest::TerminateUserConnections`] |
//! | POST | `/users/{user_id}/terminate_connections` | the same; pusher-http-python 3.3 sends this path, the app is `auth_key`'s |

pub mod response;
pub mod signature;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::pusher::apps::{AppConfig, AppIndex, Apps};
use crate::pusher::channels::{self, ChannelKind, SERVER_TO_USER_PREFIX};
use crate::pusher::frame::{Frame, encode_event_frame};
use crate::pusher::protocol::MAX_USER_ID;
use crate::pusher::socket_id::{SocketId, is_valid_socket_id};

use signature::Query;

/// A refused API request: the HTTP status and the JSON body `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// 400, 401, 403, 404, 405 or 413.
    pub status: u16,
    /// `{"error":"<why>"}`.
    pub body: String,
}

impl ApiError {
    fn new(status: u16, message: impl AsRef<str>) -> Self {
        let mut body = Vec::with_capacity(16 + message.as_ref().len());
        body.extend_from_slice(b"{\"error\":");
        crate::pusher::json::write_str(&mut body, message.as_ref());
        body.push(b'}');
        Self {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// 400: the request is malformed or breaks a limit other than size.
    pub fn bad_request(message: impl AsRef<str>) -> Self {
        Self::new(400, message)
    }

    /// 401: authentication failed (key, timestamp, body_md5, signature).
    pub fn unauthorized(message: impl AsRef<str>) -> Self {
        Self::new(401, message)
    }

    /// 403: the app is disabled.
    pub fn forbidden(message: impl AsRef<str>) -> Self {
        Self::new(403, message)
    }

    /// 404: no such route.
    pub fn not_found() -> Self {
        Self::new(404, "Not found")
    }

    /// 405: the route exists for another method.
    pub fn method_not_allowed() -> Self {
        Self::new(405, "Method not allowed")
    }

    /// 413: an event's data is over the app's limit.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            413,
            format!("Event data is larger than the limit of {limit} bytes"),
        )
    }
}

/// Which channel attributes a caller asked for with `info=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InfoFields {
    /// `user_count`: distinct presence members (presence channels only).
    pub user_count: bool,
    /// `subscription_count`: subscribed connections.
    pub subscription_count: bool,
}

impl InfoFields {
    fn parse(info: Option<&str>) -> Result<Self, ApiError> {
        let mut fields = Self::default();
        for attribute in info
            .unwrap_or_default()
            .split(',')
            .filter(|a| !a.is_empty())
        {
            match attribute {
                "user_count" => fields.user_count = true,
                "subscription_count" => fields.subscription_count = true,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "Unknown info attribute {other:?}"
                    )));
                }
            }
        }
        Ok(fields)
    }

    /// Whether any attribute was asked for.
    pub fn any(self) -> bool {
        self.user_count || self.subscription_count
    }
}

/// One event to publish, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerEvent {
    /// Event name.
    pub name: String,
    /// Event data, sent to clients as the JSON string value of `data`.
    pub data: String,
    /// Target channels; a name starting with `#server-to-user-` targets that user's
    /// connections ([`user_of_channel`]).
    pub channels: Vec<String>,
    /// A connection not to deliver to (the sender of the action that caused the event).
    pub exclude: Option<SocketId>,
    /// Channel attributes to return for each channel after publishing.
    pub info: InfoFields,
}

impl TriggerEvent {
    /// The frame for one of the event's channels, encoded once and shared by every subscriber.
    pub fn frame(&self, channel: &str) -> Frame {
        encode_event_frame(&self.name, channel, &self.data, None)
    }
}

/// The user a `#server-to-user-{id}` channel addresses.
pub fn user_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix(SERVER_TO_USER_PREFIX)
}

/// An authenticated, validated API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRequest {
    /// Publish events (one from `/events`, up to the batch limit from `/batch_events`).
    /// Answer with [`response::events`] or [`response::batch_events`].
    Events {
        /// The app.
        app: AppIndex,
        /// The events, in order.
        events: Vec<TriggerEvent>,
        /// Whether it came from `/batch_events` (decides the response shape).
        batch: bool,
    },
    /// List occupied channels. Answer with [`response::channels`].
    Channels {
        /// The app.
        app: AppIndex,
        /// Only channels whose name starts with this.
        filter_by_prefix: Option<String>,
        /// Attributes to include per channel.
        info: InfoFields,
    },
    /// One channel's state. Answer with [`response::channel`].
    Channel {
        /// The app.
        app: AppIndex,
        /// The channel.
        channel: String,
        /// Attributes to include.
        info: InfoFields,
    },
    /// A presence channel's members. Answer with [`response::users`].
    Users {
        /// The app.
        app: AppIndex,
        /// The presence channel.
        channel: String,
    },
    /// Close every connection signed in as the user: `Session::close(CloseCode::Unauthorized)`
    /// (4009, which pusher-js does not reconnect after). Answer with [`response::empty`].
    TerminateUserConnections {
        /// The app.
        app: AppIndex,
        /// The user.
        user_id: String,
    },
}

/// Whether a request target belongs to the API (as opposed to a WebSocket upgrade or another
/// route): the shard routes on this before reading a body.
pub fn is_api_path(target: &str) -> bool {
    target.starts_with("/apps/") || target.starts_with("/users/")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Events,
    BatchEvents,
    Channels,
    Channel(&'a str),
    Users(&'a str),
    Terminate(&'a str),
}

impl Route<'_> {
    fn method(self) -> &'static str {
        match self {
            Self::Events | Self::BatchEvents | Self::Terminate(_) => "POST",
            Self::Channels | Self::Channel(_) | Self::Users(_) => "GET",
        }
    }
}

/// Splits a path into the app id it names (if any) and the route.
fn route(path: &str) -> Option<(Option<&str>, Route<'_>)> {
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let (app_id, route) = match segments[..] {
        ["apps", id, "events"] => (Some(id), Route::Events),
        ["apps", id, "batch_events"] => (Some(id), Route::BatchEvents),
        ["apps", id, "channels"] => (Some(id), Route::Channels),
        ["apps", id, "channels", name] => (Some(id), Route::Channel(name)),
        ["apps", id, "channels", name, "users"] => (Some(id), Route::Users(name)),
        ["apps", id, "users", user, "terminate_connections"] => (Some(id), Route::Terminate(user)),
        ["users", user, "terminate_connections"] => (None, Route::Terminate(user)),
        _ => return None,
    };
    Some((app_id, route))
}

/// Turns one HTTP request into an [`ApiRequest`]: route (404, 405), authenticate (401), app
/// enabled (403), then validate the parameters and body (400, 413). `target` is the request
/// target as received (path and query); `now_unix_secs` is the server's wall clock.
pub fn handle_request(
    apps: &Apps,
    method: &str,
    target: &str,
    body: &[u8],
    now_unix_secs: u64,
) -> Result<ApiRequest, ApiError> {
    let (path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let (path_app_id, route) = route(path).ok_or_else(ApiError::not_found)?;
    if method != route.method() {
        return Err(ApiError::method_not_allowed());
    }
    let query = Query::parse(raw_query)?;
    let (app, config) =
        signature::verify(apps, path_app_id, method, path, &query, body, now_unix_secs)?;
    if !config.enabled {
        return Err(ApiError::forbidden("App is disabled"));
    }
    match route {
        Route::Events => Ok(ApiRequest::Events {
            app,
            events: vec![parse_event(config, body)?],
            batch: false,
        }),
        Route::BatchEvents => Ok(ApiRequest::Events {
            app,
            events: parse_batch(config, body)?,
            batch: true,
        }),
        Route::Channels => {
            let filter_by_prefix = query.get("filter_by_prefix").map(str::to_owned);
            let info = InfoFields::parse(query.get("info"))?;
            if info.user_count
                && !filter_by_prefix
                    .as_deref()
                    .is_some_and(|p| p.starts_with("presence-"))
            {
                return Err(ApiError::bad_request(
                    "info=user_count needs filter_by_prefix=presence-",
                ));
            }
            Ok(ApiRequest::Channels {
                app,
                filter_by_prefix,
                info,
            })
        }
        Route::Channel(name) => {
            let channel = valid_channel(name)?;
            let info = InfoFields::parse(query.get("info"))?;
            if info.user_count && !ChannelKind::of(&channel).is_presence() {
                return Err(ApiError::bad_request(
                    "info=user_count is only available for presence channels",
                ));
            }
            Ok(ApiRequest::Channel { app, channel, info })
        }
        Route::Users(name) => {
            let channel = valid_channel(name)?;
            if !ChannelKind::of(&channel).is_presence() {
                return Err(ApiError::bad_request(
                    "Users are only available for presence channels",
                ));
            }
            Ok(ApiRequest::Users { app, channel })
        }
        Route::Terminate(user_id) => {
            if !is_valid_user_id(user_id) {
                return Err(ApiError::bad_request("Invalid user id"));
            }
            Ok(ApiRequest::TerminateUserConnections {
                app,
                user_id: user_id.to_owned(),
            })
        }
    }
}

fn valid_channel(name: &str) -> Result<String, ApiError> {
    channels::validate_channel_name(name).map_err(|e| ApiError::bad_request(e.message()))?;
    Ok(name.to_owned())
}

fn is_valid_user_id(user_id: &str) -> bool {
    !user_id.is_empty()
        && user_id.len() <= MAX_USER_ID
        && user_id.bytes().all(channels::is_channel_byte)
}

/// A channel an event may target: a valid channel name, or a server-to-user channel of a
/// valid user id.
fn valid_target(name: &str) -> Result<(), ApiError> {
    match user_of_channel(name) {
        Some(user) if is_valid_user_id(user) => Ok(()),
        Some(_) => Err(ApiError::bad_request(format!(
            "Invalid server-to-user channel {name:?}"
        ))),
        None => channels::validate_channel_name(name)
            .map_err(|e| ApiError::bad_request(format!("{}: {name:?}", e.message()))),
    }
}

/// The JSON of one event, as `/events` and each `/batch_events` entry carry it.
#[derive(Deserialize)]
struct EventBody<'a> {
    #[serde(default)]
    name: Option<String>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
}

/// The JSON of `/batch_events`: each entry is kept raw until it is checked to be an object.
#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
}

/// Deserializes a JSON object; derived structs would also accept an array of the fields in
/// order, which no SDK sends.
fn object<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Result<T, ApiError> {
    let value = serde_json::from_slice(json)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))?;
    if json.trim_ascii_start().starts_with(b"{") {
        Ok(value)
    } else {
        Err(ApiError::bad_request(
            "Invalid JSON body: expected an object",
        ))
    }
}

fn parse_event(app: &AppConfig, body: &[u8]) -> Result<TriggerEvent, ApiError> {
    validate_event(app, object(body)?)
}

fn parse_batch(app: &AppConfig, body: &[u8]) -> Result<Vec<TriggerEvent>, ApiError> {
    let batch: BatchBody<'_> = object(body)?;
    let max = app.limits.max_batch_events;
    if batch.batch.len() > max {
        return Err(ApiError::bad_request(format!(
            "Batch has more than {max} events"
        )));
    }
    batch
        .batch
        .into_iter()
        .map(|event| validate_event(app, object(event.get().as_bytes())?))
        .collect()
}

fn validate_event(app: &AppConfig, event: EventBody<'_>) -> Result<TriggerEvent, ApiError> {
    let limits = &app.limits;
    let name = event
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("Missing event name"))?;
    if name.len() > limits.max_event_name_bytes {
        return Err(ApiError::bad_request(format!(
            "Event name is longer than {} bytes",
            limits.max_event_name_bytes
        )));
    }
    let channels = match (event.channels, event.channel) {
        (Some(channels), None) => channels,
        (None, Some(channel)) => vec![channel],
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("Give channels or channel, not both"));
        }
        (None, None) => return Err(ApiError::bad_request("Missing channels")),
    };
    if channels.is_empty() || channels.len() > limits.max_channels_per_event {
        let max = limits.max_channels_per_event;
        return Err(ApiError::bad_request(format!(
            "An event needs between 1 and {max} channels"
        )));
    }
    for (i, channel) in channels.iter().enumerate() {
        valid_target(channel)?;
        if channels[..i].contains(channel) {
            return Err(ApiError::bad_request(format!(
                "Channel {channel:?} is listed twice"
            )));
        }
    }
    let encrypted = channels
        .iter()
        .any(|c| ChannelKind::of(c).access == channels::Access::PrivateEncrypted);
    if encrypted && channels.len() > 1 {
        return Err(ApiError::bad_request(
            "Events to encrypted channels name exactly one channel",
        ));
    }
    // Data is a string in every SDK; any other JSON value is relayed as its JSON text.
    let data = match event.data {
        None => String::new(),
        Some(raw) if raw.get().starts_with('"') => serde_json::from_str(raw.get())
            .map_err(|_| ApiError::bad_request("Invalid data string"))?,
        Some(raw) => raw.get().to_owned(),
    };
    if data.len() > limits.max_event_payload_bytes {
        return Err(ApiError::payload_too_large(limits.max_event_payload_bytes));
    }
    let exclude = match event.socket_id.as_deref() {
        None => None,
        Some(s) if is_valid_socket_id(s) => SocketId::parse(s),
        Some(_) => return Err(ApiError::bad_request("Invalid socket_id")),
    };
    let info = InfoFields::parse(event.info.as_deref())?;
    Ok(TriggerEvent {
        name,
        data,
        channels,
        exclude,
        info,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::pusher::auth;

    const FIXTURES: [(&str, &str); 2] = [
        (
            "python",
            include_str!("../../../tests/clients/fixtures/python_sdk.json"),
        ),
        (
            "node",
            include_str!("../../../tests/clients/fixtures/node_sdk.json"),
        ),
    ];

    fn fixture(text: &str) -> Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn fixture_apps(f: &Value) -> Apps {
        let app = &f["app"];
        let s = |k: &str| app[k].as_str().unwrap_or_default().to_owned();
        let config = AppConfig::new(&s("id"), &s("key"), &s("secret"));
        Apps::new(vec![
            AppConfig::new("1", "other-key", "other-secret"),
            config,
        ])
        .unwrap_or_else(|e| panic!("{e}"))
    }

    struct Recorded {
        method: String,
        target: String,
        body: String,
        timestamp: u64,
    }

    fn requests(f: &Value) -> Vec<(String, Recorded)> {
        let list = f["requests"].as_array().cloned().unwrap_or_default();
        list.iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                let timestamp = r["timestamp"].as_u64().unwrap_or_default();
                (
                    s("name"),
                    Recorded {
                        method: s("method"),
                        target: s("target"),
                        body: s("body"),
                        timestamp,
                    },
                )
            })
            .collect()
    }

    fn handle(apps: &Apps, r: &Recorded, now: u64) -> Result<ApiRequest, ApiError> {
        handle_request(apps, &r.method, &r.target, r.body.as_bytes(), now)
    }

    #[test]
    fn requests_signed_by_the_real_sdks_are_accepted() {
        for (sdk, text) in FIXTURES {
            let f = fixture(text);
            let apps = fixture_apps(&f);
            let app = AppIndex(1);
            let recorded = requests(&f);
            assert_eq!(recorded.len(), 9, "{sdk}");
            for (name, r) in &recorded {
                let request =
                    handle(&apps, r, r.timestamp).unwrap_or_else(|e| panic!("{sdk} {name}: {e:?}"));
                match (name.as_str(), request) {
                    (
                        "trigger",
                        ApiRequest::Events {
                            app: a,
                            events,
                            batch: false,
                        },
                    ) => {
                        assert_eq!(a, app);
                        let e = &events[0];
                        assert_eq!(e.name, "my-event");
                        assert_eq!(e.channels, ["my-channel", "presence-room"]);
                        assert_eq!(
                            e.exclude,
                            Some(SocketId {
                                high: 1234,
                                low: 5678
                            })
                        );
                        let data: Value = serde_json::from_str(&e.data).unwrap_or_default();
                        assert_eq!(data["message"], "hello, \"world\" é & ok", "{sdk}");
                    }
                    ("trigger_string", ApiRequest::Events { events, .. }) => {
                        assert_eq!(events[0].data, "plain string");
                        assert_eq!(events[0].channels, ["private-a"]);
                    }
                    ("send_to_user", ApiRequest::Events { events, .. }) => {
                        assert_eq!(events[0].channels, ["#server-to-user-user-1"]);
                        assert_eq!(user_of_channel(&events[0].channels[0]), Some("user-1"));
                    }
                    (
                        "trigger_batch",
                        ApiRequest::Events {
                            events,
                            batch: true,
                            ..
                        },
                    ) => {
                        assert_eq!(events.len(), 2);
                        assert_eq!(
                            (events[1].channels[0].as_str(), events[1].data.as_str()),
                            ("presence-room", "two")
                        );
                    }
                    (
                        "channels_info",
                        ApiRequest::Channels {
                            filter_by_prefix,
                            info,
                            ..
                        },
                    ) => {
                        assert_eq!(filter_by_prefix.as_deref(), Some("presence-"));
                        assert_eq!(
                            info,
                            InfoFields {
                                user_count: true,
                                subscription_count: true
                            }
                        );
                    }
                    (
                        "channels_info_plain",
                        ApiRequest::Channels {
                            filter_by_prefix: None,
                            info,
                            ..
                        },
                    ) => {
                        assert!(!info.any());
                    }
                    ("channel_info", ApiRequest::Channel { channel, info, .. }) => {
                        assert_eq!(channel, "presence-room");
                        assert!(info.user_count);
                    }
                    ("users_info", ApiRequest::Users { channel, .. }) => {
                        assert_eq!(channel, "presence-room")
                    }
                    ("terminate", ApiRequest::TerminateUserConnections { app: a, user_id }) => {
                        assert_eq!((a, user_id.as_str()), (app, "user-1"));
                    }
                    (name, other) => panic!("{sdk} {name}: unexpected {other:?}"),
                }
            }
        }
    }

    #[test]
    fn tampered_sdk_requests_are_refused_with_401() {
        for (sdk, text) in FIXTURES {
            let f = fixture(text);
            let apps = fixture_apps(&f);
            for (name, r) in requests(&f) {
                let now = r.timestamp;
                let mut tampered: Vec<Recorded> = Vec::new();
                if !r.body.is_empty() {
                    let body = format!("{} ", r.body);
                    tampered.push(Recorded { body, ..clone(&r) });
                }
                let target = r
                    .target
                    .replacen("auth_version=1.0", "auth_version=1.0&extra=1", 1);
                tampered.push(Recorded {
                    target,
                    ..clone(&r)
                });
                let target = r.target.replacen("/apps/4321/", "/apps/1/", 1);
                if target != r.target {
                    tampered.push(Recorded {
                        target,
                        ..clone(&r)
                    });
                }
                let target = r
                    .target
                    .replacen("auth_key=fixture-key", "auth_key=other-key", 1);
                tampered.push(Recorded {
                    target,
                    ..clone(&r)
                });
                for t in &tampered {
                    let status = handle(&apps, t, now).map_err(|e| e.status);
                    assert_eq!(status, Err(401), "{sdk} {name}: {} {}", t.target, t.body);
                }
                for skew in [601, -601] {
                    let status =
                        handle(&apps, &r, now.saturating_add_signed(skew)).map_err(|e| e.status);
                    assert_eq!(status, Err(401), "{sdk} {name}: skew {skew}");
                }
                for skew in [600, -600] {
                    assert!(
                        handle(&apps, &r, now.saturating_add_signed(skew)).is_ok(),
                        "{sdk} {name}: skew {skew}"
                    );
                }
            }
        }
    }

    fn clone(r: &Recorded) -> Recorded {
        Recorded {
            method: r.method.clone(),
            target: r.target.clone(),
            body: r.body.clone(),
            timestamp: r.timestamp,
        }
    }

    #[test]
    fn sdk_subscription_and_signin_signatures_verify() {
        for (sdk, text) in FIXTURES {
            let f = fixture(text);
            let apps = fixture_apps(&f);
            let app = apps.app(AppIndex(1)).unwrap_or_else(|| panic!("app"));
            for a in f["channel_auths"].as_array().cloned().unwrap_or_default() {
                let s = |v: &Value| v.as_str().map(str::to_owned);
                let (socket, channel) = (
                    s(&a["socket_id"]).unwrap_or_default(),
                    s(&a["channel"]).unwrap_or_default(),
                );
                let data = s(&a["response"]["channel_data"]);
                let sig = s(&a["response"]["auth"]);
                let verified = auth::verify_channel_auth(
                    app,
                    &socket,
                    &channel,
                    data.as_deref(),
                    sig.as_deref(),
                );
                assert_eq!(verified, Ok(()), "{sdk} {channel}");
                let wrong = auth::verify_channel_auth(
                    app,
                    "1.3",
                    &channel,
                    data.as_deref(),
                    sig.as_deref(),
                );
                assert_eq!(wrong, Err(auth::AuthError::BadSignature), "{sdk} {channel}");
            }
            let signin = &f["signin"];
            let user_data = signin["response"]["user_data"].as_str().unwrap_or_default();
            let sig = signin["response"]["auth"].as_str();
            assert_eq!(
                auth::verify_user_auth(app, "1.2", user_data, sig),
                Ok(()),
                "{sdk}"
            );
            assert_eq!(
                crate::pusher::protocol::parse_user_data_id(user_data).as_deref(),
                Some("u1")
            );
        }
    }

    /// Signs like the SDKs (sorted `key=value`, no URL-encoding) for the validation table.
    fn signed(method: &str, path: &str, params: &[(&str, &str)], body: &str, now: u64) -> String {
        let mut all: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        all.push(("auth_key".into(), "key".into()));
        all.push(("auth_timestamp".into(), now.to_string()));
        all.push(("auth_version".into(), "1.0".into()));
        if !body.is_empty() {
            all.push(("body_md5".into(), signature::body_md5(body.as_bytes())));
        }
        all.sort();
        let query: Vec<String> = all.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let query = query.join("&");
        let sig = auth::sign("secret", &[method, "\n", path, "\n", &query]);
        format!("{path}?{query}&auth_signature={sig}")
    }

    fn validation_apps() -> Apps {
        let small = AppLimits {
            max_event_payload_bytes: 16,
            max_batch_events: 2,
            max_channels_per_event: 3,
            ..AppLimits::default()
        };
        let app = AppConfig {
            limits: small,
            ..AppConfig::new("9", "key", "secret")
        };
        let off = AppConfig {
            enabled: false,
            ..AppConfig::new("8", "offkey", "secret")
        };
        Apps::new(vec![app, off]).unwrap_or_else(|e| panic!("{e}"))
    }

    use crate::pusher::apps::AppLimits;

    #[test]
    fn routing_and_validation_table() {
        let apps = validation_apps();
        let now = 1_700_000_000;
        let ev = |body: &str| {
            (
                "POST",
                signed("POST", "/apps/9/events", &[], body, now),
                body.to_owned(),
            )
        };
        let batch = |body: &str| {
            (
                "POST",
                signed("POST", "/apps/9/batch_events", &[], body, now),
                body.to_owned(),
            )
        };
        let get = |path: &str, params: &[(&str, &str)]| {
            ("GET", signed("GET", path, params, "", now), String::new())
        };
        let cases: Vec<((&str, String, String), u16)> = vec![
            (
                ev(r#"{"name":"e","channels":["a"],"data":"0123456789abcdef"}"#),
                200,
            ),
            (ev(r#"{"name":"e","channel":"a","data":{"k":1}}"#), 200),
            (
                ev(r#"{"name":"e","channels":["a"],"data":"0123456789abcdefg"}"#),
                413,
            ),
            (
                ev(r#"{"name":"e","channels":["a","b","c","d"],"data":"x"}"#),
                400,
            ),
            (ev(r#"{"name":"e","channels":[],"data":"x"}"#), 400),
            (ev(r#"{"name":"e","data":"x"}"#), 400),
            (
                ev(r#"{"name":"e","channels":["a"],"channel":"a","data":"x"}"#),
                400,
            ),
            (ev(r#"{"name":"e","channels":["a","a"],"data":"x"}"#), 400),
            (
                ev(r#"{"name":"e","channels":["bad name"],"data":"x"}"#),
                400,
            ),
            (
                ev(r##"{"name":"e","channels":["#server-to-user-"],"data":"x"}"##),
                400,
            ),
            (
                ev(r#"{"name":"e","channels":["private-encrypted-a","b"],"data":"x"}"#),
                400,
            ),
            (ev(r#"{"name":"","channels":["a"],"data":"x"}"#), 400),
            (
                ev(&format!(
                    r#"{{"name":"{}","channels":["a"],"data":"x"}}"#,
                    "n".repeat(201)
                )),
                400,
            ),
            (
                ev(r#"{"name":"e","channels":["a"],"data":"x","socket_id":"1.x"}"#),
                400,
            ),
            (
                ev(r#"{"name":"e","channels":["a"],"data":"x","info":"colour"}"#),
                400,
            ),
            (ev(r#"{"name":"e","channels":["a"]"#), 400),
            (
                batch(
                    r#"{"batch":[{"name":"e","channel":"a","data":"x"},{"name":"e","channel":"b","data":"x"}]}"#,
                ),
                200,
            ),
            (
                batch(
                    r#"{"batch":[{"name":"e","channel":"a","data":"x"},{"name":"e","channel":"b","data":"x"},{"name":"e","channel":"c","data":"x"}]}"#,
                ),
                400,
            ),
            (
                batch(r#"{"batch":[{"name":"e","channel":"a","data":"0123456789abcdefg"}]}"#),
                413,
            ),
            (
                get(
                    "/apps/9/channels",
                    &[("filter_by_prefix", "presence-"), ("info", "user_count")],
                ),
                200,
            ),
            (get("/apps/9/channels", &[("info", "user_count")]), 400),
            (
                get("/apps/9/channels", &[("info", "subscription_count")]),
                200,
            ),
            (
                get(
                    "/apps/9/channels/presence-a",
                    &[("info", "user_count,subscription_count")],
                ),
                200,
            ),
            (get("/apps/9/channels/a", &[("info", "user_count")]), 400),
            (get("/apps/9/channels/bad%20name", &[]), 400),
            (get("/apps/9/channels/presence-a/users", &[]), 200),
            (get("/apps/9/channels/a/users", &[]), 400),
            (
                (
                    "POST",
                    signed(
                        "POST",
                        "/apps/9/users/u1/terminate_connections",
                        &[],
                        "{}",
                        now,
                    ),
                    "{}".into(),
                ),
                200,
            ),
            (
                (
                    "POST",
                    signed(
                        "POST",
                        "/apps/9/users/u%201/terminate_connections",
                        &[],
                        "{}",
                        now,
                    ),
                    "{}".into(),
                ),
                400,
            ),
            (
                (
                    "GET",
                    signed("GET", "/apps/9/events", &[], "", now),
                    String::new(),
                ),
                405,
            ),
            (
                (
                    "GET",
                    signed("GET", "/apps/9/nothing", &[], "", now),
                    String::new(),
                ),
                404,
            ),
            (("GET", "/apps/9/channels".to_owned(), String::new()), 401),
            (
                (
                    "GET",
                    signed("GET", "/apps/8/channels", &[], "", now).replace("key", "offkey"),
                    String::new(),
                ),
                401,
            ),
        ];
        for ((method, target, body), status) in cases {
            let got = handle_request(&apps, method, &target, body.as_bytes(), now)
                .map(|_| 200)
                .unwrap_or_else(|e| {
                    assert!(
                        serde_json::from_str::<Value>(&e.body)
                            .is_ok_and(|v| v["error"].is_string()),
                        "{}",
                        e.body
                    );
                    e.status
                });
            assert_eq!(got, status, "{method} {target} {body}");
        }
    }

    /// Bodies must be JSON objects: derived structs also accept an array of the fields in
    /// order (found by the `api_request` fuzz target: `[[]]` was an empty batch).
    #[test]
    fn bodies_that_are_not_objects_get_400() {
        let apps = validation_apps();
        let now = 1_700_000_000;
        let cases = [
            ("/apps/9/events", r#"["e",null,["a"],null,null,null]"#),
            ("/apps/9/batch_events", "[[]]"),
            ("/apps/9/batch_events", r#"[[{"name":"e","channel":"a"}]]"#),
            (
                "/apps/9/batch_events",
                r#"{"batch":[["e",null,["a"],null,null,null]]}"#,
            ),
        ];
        for (path, body) in cases {
            let target = signed("POST", path, &[], body, now);
            let got = handle_request(&apps, "POST", &target, body.as_bytes(), now);
            assert_eq!(got.map_err(|e| e.status), Err(400), "{path} {body}");
        }
        let body = r#"{"batch":[{"name":"e","channel":"a"}]}"#;
        let target = signed("POST", "/apps/9/batch_events", &[], body, now);
        assert!(handle_request(&apps, "POST", &target, body.as_bytes(), now).is_ok());
    }

    #[test]
    fn disabled_apps_get_403_after_authenticating() {
        let apps = validation_apps();
        let now = 1_700_000_000;
        let target = signed("GET", "/apps/8/channels", &[], "", now);
        // Re-sign for the disabled app's key.
        let query: String = format!("auth_key=offkey&auth_timestamp={now}&auth_version=1.0");
        let sig = auth::sign("secret", &["GET", "\n", "/apps/8/channels", "\n", &query]);
        let target_off = format!("/apps/8/channels?{query}&auth_signature={sig}");
        assert_eq!(
            handle_request(&apps, "GET", &target_off, b"", now).map_err(|e| e.status),
            Err(403)
        );
        assert!(
            handle_request(
                &apps,
                "GET",
                &target.replace("/apps/8/", "/apps/9/"),
                b"",
                now
            )
            .is_err()
        );
    }

    #[test]
    fn trigger_event_frames_and_api_paths() {
        let e = TriggerEvent {
            name: "e".into(),
            data: "{\"a\":1}".into(),
            channels: vec!["a".into()],
            exclude: None,
            info: InfoFields::default(),
        };
        assert_eq!(
            e.frame("a"),
            encode_event_frame("e", "a", "{\"a\":1}", None)
        );
        assert!(is_api_path("/apps/1/events?x=1"));
        assert!(is_api_path("/users/u/terminate_connections"));
        assert!(!is_api_path("/app/key?protocol=7"));
    }

    #[test]
    fn percent_encoded_values_are_decoded_before_signing() {
        let apps = validation_apps();
        let now = 1_700_000_000;
        let params = [
            ("filter_by_prefix", "presence-"),
            ("info", "user_count,subscription_count"),
        ];
        let target = signed("GET", "/apps/9/channels", &params, "", now);
        let encoded = target.replace(
            "user_count,subscription_count",
            "user_count%2Csubscription_count",
        );
        assert_ne!(target, encoded);
        assert!(handle_request(&apps, "GET", &encoded, b"", now).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_requests_never_panic(
            method in "(GET|POST|PUT)",
            target in "/(apps|users)?/?[a-z0-9]{0,4}/?(events|batch_events|channels|users)?/?[a-z0-9%-]{0,6}/?[a-z_]{0,21}\\??[a-z_=&%0-9.,]{0,60}",
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let apps = validation_apps();
            let _ = handle_request(&apps, &method, &target, &body, 1_700_000_000);
        }

        #[test]
        fn arbitrary_event_bodies_never_panic(body in "\\PC{0,120}") {
            let apps = validation_apps();
            let now = 1_700_000_000;
            for path in ["/apps/9/events", "/apps/9/batch_events"] {
                let target = signed("POST", path, &[], &body, now);
                let _ = handle_request(&apps, "POST", &target, body.as_bytes(), now);
            }
        }
    }
}
