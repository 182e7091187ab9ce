//! The live dashboard: one self-contained page at [`PAGE_PATH`] (inline CSS and JavaScript, no
//! CDN) that opens a WebSocket to [`FEED_PATH`] on the same ringcast and draws what each frame
//! says.
//!
//! The shard serving the feed sends one [`dashboard_frame`] every [`FEED_INTERVAL`], built from
//! a fresh [`MetricsSnapshot`] and the one sent before it. A frame carries cumulative counters
//! (the page turns consecutive frames into rates, using the frames' own timestamps, so a late
//! frame does not distort a rate) and latency percentiles over the interval since the previous
//! frame (the page cannot get those from cumulative numbers without the buckets).
//!
//! Frame shape, version 1 (`tests/dashboard/sample_frame.json` is a complete example and the
//! tests keep both in step):
//!
//! ```json
//! {"v": 1, "ts_ms": 0, "uptime_s": 0.0, "version": "", "driver": "", "capacity": 0,
//!  "connections": 0, "draining": false,
//!  "totals": {"accepted": 0, "rejected": 0, "disconnects": 0, "slow_consumer_closes": 0,
//!             "messages_in": 0, "messages_out": 0, "deliveries": 0, "bytes_in": 0,
//!             "bytes_out": 0},
//!  "latency_window": "interval",
//!  "latency_ms": {"heartbeat_p50": null, "heartbeat_p99": null, "handshake_p50": null,
//!                 "handshake_p99": null, "loop_lag_p99": null},
//!  "shards": [{"id": 0, "connections": 0, "lag_ms": 0.0, "listening": true, "draining": false,
//!              "messages_in": 0, "deliveries": 0}]}
//! ```

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::health::millis;
use crate::metrics::{Histogram, MetricsSnapshot};

/// Where the page is served (plain GET).
pub(crate) const PAGE_PATH: &str = "/dashboard";

/// Where the page's WebSocket connects; the shard upgrades it and sends frames, and ignores
/// what the page sends.
pub(crate) const FEED_PATH: &str = "/dashboard/feed";

/// How often the feed sends a frame: what a person watching perceives as live, and slow enough
/// that a snapshot per frame costs nothing.
pub(crate) const FEED_INTERVAL: Duration = Duration::from_secs(1);

/// The page, embedded in the binary so the dashboard needs no files at run time.
pub(crate) const PAGE_HTML: &str = include_str!("dashboard.html");

/// The `Content-Type` of [`PAGE_HTML`].
pub(crate) const PAGE_CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// The frame schema version; the page refuses frames of another version.
const FRAME_VERSION: u32 = 1;

/// One feed frame (a JSON text message) for `snapshot`. `prev` is the snapshot of the previous
/// frame on this feed, if any: latency percentiles cover the interval since it
/// (`latency_window: "interval"`), or the whole run without it (`"since_start"`).
pub(crate) fn dashboard_frame(
    snapshot: &MetricsSnapshot,
    prev: Option<&MetricsSnapshot>,
) -> String {
    let totals = snapshot.totals();
    let prev_totals = prev.map(MetricsSnapshot::totals);
    let window = |now: &Histogram<16>, before: Option<&Histogram<16>>| match before {
        Some(before) => now.since(before),
        None => *now,
    };
    let heartbeat = window(
        &totals.heartbeat_rtt_us,
        prev_totals.as_ref().map(|t| &t.heartbeat_rtt_us),
    );
    let handshake = window(
        &totals.handshake_duration_us,
        prev_totals.as_ref().map(|t| &t.handshake_duration_us),
    );
    let loop_lag = match &prev_totals {
        Some(before) => totals.loop_lag_hist_us.since(&before.loop_lag_hist_us),
        None => totals.loop_lag_hist_us,
    };
    let shards: Vec<Value> = snapshot
        .shards
        .iter()
        .enumerate()
        .map(|(id, shard)| {
            json!({
                "id": id,
                "connections": shard.connections,
                "lag_ms": millis(shard.loop_lag()),
                "listening": shard.listening,
                "draining": shard.draining,
                "messages_in": shard.messages_received,
                "deliveries": shard.deliveries,
            })
        })
        .collect();
    let uptime = snapshot
        .taken_at
        .duration_since(snapshot.process.start_time)
        .unwrap_or_default();
    json!({
        "v": FRAME_VERSION,
        "ts_ms": unix_millis(snapshot.taken_at),
        "uptime_s": uptime.as_secs_f64(),
        "version": snapshot.process.version,
        "driver": snapshot.process.backend,
        "capacity": snapshot.process.capacity,
        "connections": totals.connections,
        "draining": totals.draining,
        "totals": {
            "accepted": totals.accepted,
            "rejected": totals.rejected_total(),
            "disconnects": totals.disconnects_total(),
            "slow_consumer_closes": totals.slow_consumer_closes_total(),
            "messages_in": totals.messages_received,
            "messages_out": totals.messages_sent,
            "deliveries": totals.deliveries,
            "bytes_in": totals.bytes_received,
            "bytes_out": totals.bytes_sent,
        },
        "latency_window": if prev.is_some() { "interval" } else { "since_start" },
        "latency_ms": {
            "heartbeat_p50": quantile_ms(&heartbeat, 0.5),
            "heartbeat_p99": quantile_ms(&heartbeat, 0.99),
            "handshake_p50": quantile_ms(&handshake, 0.5),
            "handshake_p99": quantile_ms(&handshake, 0.99),
            "loop_lag_p99": quantile_ms(&loop_lag, 0.99),
        },
        "shards": shards,
    })
    .to_string()
}

/// The `q` quantile of a microsecond histogram in milliseconds, `null` without observations.
fn quantile_ms<const N: usize>(histogram: &Histogram<N>, q: f64) -> Value {
    histogram
        .quantile(q)
        .map_or(Value::Null, |micros| json!(micros / 1000.0))
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{ProcessInfo, ShardStats};

    /// The example frame the browser test's fake feed replays.
    const SAMPLE_FRAME: &str = include_str!("../tests/dashboard/sample_frame.json");

    fn snapshot(at_secs: u64, shards: Vec<ShardStats>) -> MetricsSnapshot {
        MetricsSnapshot {
            taken_at: SystemTime::UNIX_EPOCH + Duration::from_secs(at_secs),
            shards,
            process: ProcessInfo {
                version: "0.1.0",
                backend: "epoll",
                start_time: SystemTime::UNIX_EPOCH + Duration::from_secs(1000),
                capacity: 1000,
                capacity_configured: 1000,
            },
            broker: None,
        }
    }

    fn parse(frame: &str) -> Value {
        serde_json::from_str(frame).unwrap_or_else(|error| panic!("{error}: {frame}"))
    }

    /// Object keys, recursively, with arrays judged by their first element: the shape of a
    /// frame regardless of its values.
    fn shape(value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(key, value)| (key.clone(), shape(value)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.first().map(shape).into_iter().collect()),
            _ => Value::Null,
        }
    }

    #[test]
    fn frame_has_the_shape_of_the_sample_the_browser_test_replays() {
        let mut stats = ShardStats::new();
        stats.set_listening(true);
        let frame = parse(&dashboard_frame(&snapshot(1010, vec![stats]), None));
        assert_eq!(shape(&frame), shape(&parse(SAMPLE_FRAME)));
        assert_eq!(frame["v"], FRAME_VERSION);
    }

    #[test]
    fn frame_sums_shards_and_stamps_time() {
        let mut a = ShardStats::new();
        a.set_connections(3);
        a.record_message_received();
        a.record_deliveries(10);
        let mut b = ShardStats::new();
        b.set_connections(4);
        b.record_loop_lag(Duration::from_millis(7));
        let frame = parse(&dashboard_frame(&snapshot(1012, vec![a, b]), None));
        assert_eq!(frame["ts_ms"], 1_012_000);
        assert_eq!(frame["uptime_s"], 12.0);
        assert_eq!(frame["connections"], 7);
        assert_eq!(frame["capacity"], 1000);
        assert_eq!(frame["totals"]["messages_in"], 1);
        assert_eq!(frame["totals"]["deliveries"], 10);
        assert_eq!(frame["shards"][0]["deliveries"], 10);
        assert_eq!(frame["shards"][1]["connections"], 4);
        assert_eq!(frame["shards"][1]["lag_ms"], 7.0);
    }

    #[test]
    fn latency_covers_the_interval_since_the_previous_frame() {
        let mut stats = ShardStats::new();
        for _ in 0..100 {
            stats.record_heartbeat(Duration::from_millis(4));
        }
        let before = snapshot(1001, vec![stats.clone()]);
        let first = parse(&dashboard_frame(&before, None));
        assert_eq!(first["latency_window"], "since_start");
        let p50 = first["latency_ms"]["heartbeat_p50"]
            .as_f64()
            .unwrap_or_default();
        assert!((2.5..=5.0).contains(&p50), "{p50}");
        assert_eq!(
            first["latency_ms"]["handshake_p99"],
            Value::Null,
            "no handshakes yet"
        );

        for _ in 0..100 {
            stats.record_heartbeat(Duration::from_millis(400));
        }
        let after = snapshot(1002, vec![stats]);
        let second = parse(&dashboard_frame(&after, Some(&before)));
        assert_eq!(second["latency_window"], "interval");
        let p50 = second["latency_ms"]["heartbeat_p50"]
            .as_f64()
            .unwrap_or_default();
        assert!(
            (250.0..=500.0).contains(&p50),
            "only the new observations count: {p50}"
        );

        let idle = parse(&dashboard_frame(&after, Some(&after)));
        assert_eq!(
            idle["latency_ms"]["heartbeat_p50"],
            Value::Null,
            "nothing in the interval"
        );
    }

    #[test]
    fn page_is_self_contained_and_exposes_stable_ids() {
        for id in [
            "feed-state",
            "connections",
            "capacity",
            "messages-per-second",
            "deliveries-per-second",
            "heartbeat-p50",
            "heartbeat-p99",
            "handshake-p99",
            "loop-lag-p99",
            "shards",
        ] {
            assert!(PAGE_HTML.contains(&format!("id=\"{id}\"")), "missing #{id}");
        }
        assert!(
            PAGE_HTML.contains(FEED_PATH),
            "the page connects to the feed route"
        );
        for external in ["http://", "https://", "src=\"//", "href=\"//", "@import"] {
            assert!(
                !PAGE_HTML.contains(external),
                "external reference {external}"
            );
        }
    }
}
