//! Fuzzes the client-to-server Pusher messages through the entry point the shards use,
//! `Session::handle_text`: the input is a conversation, one message per line, on one session of
//! the development app (client events and user authentication on). A `@auth` in a message is
//! replaced by the valid signature for it, so private and presence subscriptions and sign-ins
//! get past authentication and into the member and user data they carry.
//!
//! It must never panic; every frame sent back must be a JSON object naming its event; an
//! error must be a `pusher:error` with a message (or a `pusher:subscription_error`); a message
//! that is not a JSON object must get exactly one `pusher:error`; and after the disconnect,
//! every subscription and presence membership taken must have been given back.
#![no_main]

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use ringcast::pusher::apps::DevCredentials;
use ringcast::pusher::auth::sign;
use ringcast::pusher::{
    Action, AppConfig, Apps, ChannelId, ChannelRegistry, ConnectRequest, Frame, Load, PusherConfig,
    Session, SocketId,
};
use serde_json::Value;
use serde_json::value::RawValue;

/// A shard's channel table reduced to names and ids.
#[derive(Default)]
struct Table(HashMap<String, ChannelId>);

impl ChannelRegistry for Table {
    fn intern(&mut self, name: &str) -> ChannelId {
        let next = ChannelId(self.0.len() as u32);
        *self.0.entry(name.to_owned()).or_insert(next)
    }
    fn find(&self, name: &str) -> Option<ChannelId> {
        self.0.get(name).copied()
    }
}

/// The marker a message uses where the valid `auth` value goes.
const AUTH_MARKER: &str = "@auth";

/// `data` of a `pusher:` message: an object, or a string holding one (as older clients send).
fn pusher_data(message: &Value) -> Option<Value> {
    match message.get("data")? {
        Value::String(s) => serde_json::from_str(s).ok(),
        other => Some(other.clone()),
    }
}

/// The message with `@auth` replaced by the signature the server expects, when the message
/// says enough to compute it.
fn with_auth(app: &AppConfig, socket_id: &str, text: &str) -> String {
    if !text.contains(AUTH_MARKER) {
        return text.to_owned();
    }
    let Ok(message) = serde_json::from_str::<Value>(text) else {
        return text.to_owned();
    };
    let Some(data) = pusher_data(&message) else {
        return text.to_owned();
    };
    let field = |name: &str| data.get(name).and_then(Value::as_str).map(str::to_owned);
    let signature = match message.get("event").and_then(Value::as_str) {
        Some("pusher:signin") => field("user_data")
            .map(|user_data| sign(&app.secret, &[socket_id, "::user::", &user_data])),
        _ => field("channel").map(|channel| match field("channel_data") {
            Some(channel_data) => {
                sign(&app.secret, &[socket_id, ":", &channel, ":", &channel_data])
            }
            None => sign(&app.secret, &[socket_id, ":", &channel]),
        }),
    };
    match signature {
        Some(signature) => text.replace(AUTH_MARKER, &format!("{}:{signature}", app.key)),
        None => text.to_owned(),
    }
}

/// Checks one frame the server sends and returns its event name.
fn check_frame(frame: &Frame) -> String {
    let message: Value = serde_json::from_str(frame.text())
        .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {:?}", frame.text()));
    let event = message
        .get("event")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("frame without an event: {message}"))
        .to_owned();
    if event == "pusher:error" {
        let data = &message["data"];
        assert!(data["message"].is_string(), "{message}");
        assert!(data["code"].is_null() || data["code"].is_u64(), "{message}");
    } else if let Some(data) = message.get("data") {
        // Every other server event carries its data as a JSON-encoded string.
        assert!(data.is_string(), "{message}");
        if event == "pusher:subscription_error" {
            let inner: Value = serde_json::from_str(data.as_str().unwrap_or_default())
                .unwrap_or_else(|e| panic!("subscription_error data ({e}): {message}"));
            assert!(
                inner["error"].is_string() && inner["status"].is_u64(),
                "{message}"
            );
        }
    }
    event
}

/// The development app (client events and user authentication on), built once.
static APPS: LazyLock<Apps> = LazyLock::new(|| {
    Apps::new(vec![AppConfig::development(
        DevCredentials::default(),
        [7; 32],
    )])
    .expect("development app")
});

fuzz_target!(|data: &[u8]| {
    let apps = &*APPS;
    let app = apps.iter().next().expect("one app");
    let config = PusherConfig {
        max_subscriptions: 8,
        ..PusherConfig::default()
    };
    let start = Instant::now();
    let target = format!("/app/{}?protocol=7", app.key);
    let request = ConnectRequest::parse(&target).expect("target");
    let socket_id = SocketId { high: 3, low: 9 };
    let (mut session, established) =
        Session::connect(apps, &request, socket_id, Load::default(), &config, start)
            .expect("connect");
    assert_eq!(check_frame(&established), "pusher:connection_established");
    let app = apps.app(session.app()).expect("app");
    let socket = socket_id.to_string();

    let mut table = Table::default();
    let mut subscribed = HashMap::<ChannelId, i32>::new();
    let mut present = HashMap::<ChannelId, i32>::new();
    let mut actions = Vec::new();
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        // Text messages reach the session only as UTF-8 (the WebSocket layer checks it).
        let Ok(text) = std::str::from_utf8(line) else {
            continue;
        };
        let text = with_auth(app, &socket, text);
        let was_closed = session.is_closed();
        let now = start + Duration::from_millis(50 * i as u64);
        actions.clear();
        session.handle_text(app, &config, &mut table, &text, now, &mut actions);
        if was_closed {
            assert!(actions.is_empty(), "a closed session answered {actions:?}");
            continue;
        }
        // Raw, as the server reads it: a lone surrogate escape in a string it skips is no
        // error there, though `Value` refuses it.
        let is_object = serde_json::from_str::<Box<RawValue>>(&text)
            .is_ok_and(|raw| raw.get().starts_with('{'));
        if !is_object {
            assert_eq!(actions.len(), 1, "{text:?} -> {actions:?}");
        }
        for action in &actions {
            match action {
                Action::Send(frame) => {
                    let event = check_frame(frame);
                    if !is_object {
                        assert_eq!(event, "pusher:error", "{text:?}");
                    }
                }
                Action::Publish { frame, exclude, .. } => {
                    assert!(check_frame(frame).starts_with("client-"));
                    assert_eq!(*exclude, Some(socket_id));
                }
                Action::Subscribe { channel } => *subscribed.entry(*channel).or_default() += 1,
                Action::Unsubscribe { channel } => *subscribed.entry(*channel).or_default() -= 1,
                Action::JoinPresence { channel, .. } => *present.entry(*channel).or_default() += 1,
                Action::LeavePresence { channel, .. } => *present.entry(*channel).or_default() -= 1,
                Action::Close(_) => assert!(session.is_closed()),
                Action::ReplayCache { .. } | Action::SignIn { .. } | Action::SignOut { .. } => {}
            }
        }
        assert!(
            subscribed.values().all(|&n| n == 0 || n == 1),
            "{subscribed:?}"
        );
        let held = subscribed.values().filter(|&&n| n == 1).count();
        assert!(held <= config.max_subscriptions);
        assert!(present.values().all(|&n| n == 0 || n == 1), "{present:?}");
    }
    actions.clear();
    session.handle_disconnect(&mut actions);
    for action in &actions {
        match action {
            Action::Unsubscribe { channel } => *subscribed.entry(*channel).or_default() -= 1,
            Action::LeavePresence { channel, .. } => *present.entry(*channel).or_default() -= 1,
            Action::SignOut { .. } => {}
            other => panic!("disconnect did {other:?}"),
        }
    }
    assert!(
        subscribed.values().all(|&n| n == 0),
        "left subscribed: {subscribed:?}"
    );
    assert!(
        present.values().all(|&n| n == 0),
        "left present: {present:?}"
    );
});
