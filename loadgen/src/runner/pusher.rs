//! The Pusher protocol side of a subscriber: subscribing once the connection is established,
//! answering pings, and counting deliveries.

use ringcast::driver::ConnKey;

use super::{PusherPhase, State};
use crate::cause::Cause;
use crate::delivery::parse_delivery;
use crate::plan::{Mode, Plan, channel_name};

impl State {
    pub(super) fn handle_pusher(&mut self, key: ConnKey, text: &[u8], now: u64) {
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
