//! The Prometheus text exposition format, version 0.0.4, written by hand: `# HELP` and `# TYPE`
//! once per family, then its samples, one per line. The format is a few lines of grammar, so a
//! crate would add a second registry model without saving code.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::histogram::Histogram;
use super::labels::{CloseCodeLabel, DisconnectReason, RejectReason, SlowConsumerCause};
use super::registry::MetricsSnapshot;
use super::stats::ShardStats;

/// The `Content-Type` of a `/metrics` answer.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How a histogram's integer observations become the exposed base unit.
#[derive(Clone, Copy)]
enum Unit {
    /// Microseconds, exposed as seconds.
    Micros,
    /// Bytes, exposed as bytes.
    Bytes,
}

impl Unit {
    fn scale(self, value: u64) -> f64 {
        match self {
            Self::Micros => value as f64 / 1e6,
            Self::Bytes => value as f64,
        }
    }
}

/// Writes `snapshot` as a complete exposition into `out`.
pub(crate) fn encode(snapshot: &MetricsSnapshot, out: &mut String) {
    let totals = snapshot.totals();
    let process = &snapshot.process;
    let mut w = Writer { out };

    w.family(
        "ringcast_build_info",
        GAUGE,
        "Always 1; the labels say which build runs.",
    );
    w.sample("ringcast_build_info", &[("version", process.version)], 1.0);
    w.family(
        "ringcast_driver_info",
        GAUGE,
        "Always 1; the label names the event-loop backend.",
    );
    w.sample("ringcast_driver_info", &[("driver", process.backend)], 1.0);
    w.family(
        "process_start_time_seconds",
        GAUGE,
        "Start time of the process since the Unix epoch, in seconds.",
    );
    w.sample(
        "process_start_time_seconds",
        &[],
        unix_seconds(process.start_time),
    );
    w.family(
        "ringcast_connections_capacity",
        GAUGE,
        "Connections the process can hold across all shards: max_connections, or fewer when the \
         open-files limit allows fewer.",
    );
    w.sample(
        "ringcast_connections_capacity",
        &[],
        process.capacity as f64,
    );
    w.family(
        "ringcast_connections_capacity_configured",
        GAUGE,
        "The configured maximum of connections across all shards (max_connections).",
    );
    w.sample(
        "ringcast_connections_capacity_configured",
        &[],
        process.capacity_configured as f64,
    );

    w.per_shard(
        snapshot,
        (
            "ringcast_connections",
            "Open WebSocket connections, per shard.",
        ),
        |shard| shard.connections as f64,
    );
    w.per_shard(
        snapshot,
        (
            "ringcast_channels",
            "Channels with at least one local subscriber, per shard.",
        ),
        |shard| shard.channels as f64,
    );
    w.per_shard(
        snapshot,
        (
            "ringcast_subscriptions",
            "Channel subscriptions held by connections, per shard.",
        ),
        |shard| shard.subscriptions as f64,
    );
    w.per_shard(
        snapshot,
        (
            "ringcast_shard_up",
            "1 while the shard's listener accepts; 0 before it listens, once it drains or after its \
             thread died.",
        ),
        |shard| f64::from(u8::from(shard.listening && !shard.draining && !shard.failed)),
    );
    w.per_shard(
        snapshot,
        (
            "ringcast_event_loop_lag_current_seconds",
            "How late the shard's event loop ran its latest timer tick, per shard.",
        ),
        |shard| Duration::from_micros(shard.loop_lag_us).as_secs_f64(),
    );
    w.family(
        "ringcast_event_loop_lag_seconds",
        HISTOGRAM,
        "How late the shard's event loop ran each timer tick, per shard.",
    );
    for (id, shard) in snapshot.shards.iter().enumerate() {
        let id = id.to_string();
        let labels = [("shard", id.as_str())];
        let lag = &shard.loop_lag_hist_us;
        w.histogram(
            "ringcast_event_loop_lag_seconds",
            &labels,
            lag,
            Unit::Micros,
        );
    }

    w.counter(
        (
            "ringcast_connections_accepted_total",
            "Connections that completed the handshake.",
        ),
        totals.accepted,
    );
    w.family(
        "ringcast_connections_rejected_total",
        COUNTER,
        "Connection attempts refused before the WebSocket handshake completed, by reason.",
    );
    for reason in RejectReason::ALL {
        let count = totals.rejected.get(reason.index()).copied().unwrap_or(0);
        let labels = [("reason", reason.as_str())];
        w.sample("ringcast_connections_rejected_total", &labels, count as f64);
    }
    w.family(
        "ringcast_disconnects_total",
        COUNTER,
        "Established connections that ended, by reason and close code (code \"none\": no \
         close frame). Only pairs seen at least once are listed.",
    );
    for reason in DisconnectReason::ALL {
        let Some(row) = totals.disconnects.get(reason.index()) else {
            continue;
        };
        for code in CloseCodeLabel::all() {
            let count = row.get(code.index()).copied().unwrap_or(0);
            if count > 0 {
                let labels = [("reason", reason.as_str()), ("code", &code.to_label())];
                w.sample("ringcast_disconnects_total", &labels, count as f64);
            }
        }
    }
    w.family(
        "ringcast_slow_consumer_closes_total",
        COUNTER,
        "Connections cut off as slow consumers, by reason: outbox over its cap, write stalled, \
         or drained slower than the minimum rate.",
    );
    for cause in SlowConsumerCause::ALL {
        let count = totals
            .slow_consumer_closes
            .get(cause.index())
            .copied()
            .unwrap_or(0);
        let labels = [("reason", cause.as_str())];
        w.sample("ringcast_slow_consumer_closes_total", &labels, count as f64);
    }
    w.family(
        "ringcast_mesh_dropped_total",
        COUNTER,
        "Messages between shards dropped because the receiving shard's mailbox lane was full, \
         by lane (data: publishes, control: terminations).",
    );
    for (lane, count) in [
        ("data", totals.mesh_dropped_data),
        ("control", totals.mesh_dropped_control),
    ] {
        let labels = [("lane", lane), ("reason", "full")];
        w.sample("ringcast_mesh_dropped_total", &labels, count as f64);
    }
    w.counter(
        (
            "ringcast_mesh_budget_exhausted_total",
            "Loop turns that took mesh_turn_budget messages from other shards and left some \
             queued for the next turn.",
        ),
        totals.mesh_budget_exhausted,
    );
    w.counter(
        (
            "ringcast_messages_received_total",
            "WebSocket data messages received from clients, after reassembly.",
        ),
        totals.messages_received,
    );
    w.counter(
        (
            "ringcast_messages_sent_total",
            "WebSocket data messages queued to one connection in answer to it (fan-out counts \
             in ringcast_deliveries_total).",
        ),
        totals.messages_sent,
    );
    w.counter(
        (
            "ringcast_received_bytes_total",
            "Bytes read from client sockets, framing and HTTP heads included.",
        ),
        totals.bytes_received,
    );
    w.counter(
        (
            "ringcast_sent_bytes_total",
            "Bytes written to client sockets, framing and HTTP heads included.",
        ),
        totals.bytes_sent,
    );
    w.counter(
        (
            "ringcast_deliveries_total",
            "Published messages queued to a subscriber's outbox, one per subscriber reached.",
        ),
        totals.deliveries,
    );
    w.family(
        "ringcast_pusher_limit_refusals_total",
        COUNTER,
        "Pusher subscriptions refused with LimitReached, by the limit they crossed.",
    );
    for limit in crate::pusher::Limit::ALL {
        let count = totals
            .pusher_refusals
            .get(limit.index())
            .copied()
            .unwrap_or(0);
        let labels = [("limit", limit.as_str())];
        w.sample(
            "ringcast_pusher_limit_refusals_total",
            &labels,
            count as f64,
        );
    }

    w.family(
        "ringcast_outbox_bytes",
        HISTOGRAM,
        "Bytes pending in a connection's outbox when the shard hands it to the driver.",
    );
    w.histogram(
        "ringcast_outbox_bytes",
        &[],
        &totals.outbox_bytes,
        Unit::Bytes,
    );
    w.family(
        "ringcast_handshake_duration_seconds",
        HISTOGRAM,
        "Time from TCP accept to a completed WebSocket handshake.",
    );
    let handshake = &totals.handshake_duration_us;
    w.histogram(
        "ringcast_handshake_duration_seconds",
        &[],
        handshake,
        Unit::Micros,
    );
    w.family(
        "ringcast_heartbeat_rtt_seconds",
        HISTOGRAM,
        "Round trip from a server ping to the client's pong.",
    );
    let heartbeat = &totals.heartbeat_rtt_us;
    w.histogram(
        "ringcast_heartbeat_rtt_seconds",
        &[],
        heartbeat,
        Unit::Micros,
    );
    if let Some(broker) = &snapshot.broker {
        encode_broker(&mut w, broker);
    }
}

/// The cluster bridge's families, written only when a broker is configured.
fn encode_broker(w: &mut Writer<'_>, broker: &crate::cluster::BrokerSnapshot) {
    w.family(
        "ringcast_broker_up",
        GAUGE,
        "1 while the cluster broker is connected, 0 while it is unreachable.",
    );
    w.sample("ringcast_broker_up", &[], f64::from(u8::from(broker.up)));
    w.family(
        "ringcast_broker_messages_total",
        COUNTER,
        "Messages received from (in) and published to (out) the cluster broker.",
    );
    for (direction, value) in [("in", broker.messages_in), ("out", broker.messages_out)] {
        w.sample(
            "ringcast_broker_messages_total",
            &[("direction", direction)],
            value as f64,
        );
    }
    w.family(
        "ringcast_broker_dropped_total",
        COUNTER,
        "Messages not carried between instances: the bridge's queue was full, the broker was \
         down, or a received message was not ours to read.",
    );
    for (reason, value) in [
        ("full", broker.dropped_full),
        ("down", broker.dropped_down),
        ("invalid", broker.dropped_invalid),
    ] {
        w.sample(
            "ringcast_broker_dropped_total",
            &[("reason", reason)],
            value as f64,
        );
    }
    w.counter(
        (
            "ringcast_broker_reconnects_total",
            "Connections to the broker after the first: the reconnect epoch.",
        ),
        broker.reconnects,
    );
    w.family(
        "ringcast_broker_subscriptions",
        GAUGE,
        "Broker subjects this instance subscribes to: one per channel with local subscribers, \
         plus one per app for user-wide messages.",
    );
    w.sample(
        "ringcast_broker_subscriptions",
        &[],
        broker.subscriptions as f64,
    );
}

const COUNTER: &str = "counter";
const GAUGE: &str = "gauge";
const HISTOGRAM: &str = "histogram";

/// Seconds from the Unix epoch to `time`; 0 for a time before it.
fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

struct Writer<'a> {
    out: &'a mut String,
}

impl Writer<'_> {
    /// A gauge family with one sample per shard, labelled `shard`.
    fn per_shard(
        &mut self,
        snapshot: &MetricsSnapshot,
        (name, help): (&str, &str),
        value: impl Fn(&ShardStats) -> f64,
    ) {
        self.family(name, GAUGE, help);
        for (id, shard) in snapshot.shards.iter().enumerate() {
            self.sample(name, &[("shard", &id.to_string())], value(shard));
        }
    }

    /// A counter family with one unlabelled sample.
    fn counter(&mut self, (name, help): (&str, &str), value: u64) {
        self.family(name, COUNTER, help);
        self.sample(name, &[], value as f64);
    }

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (at, (key, value)) in labels.iter().enumerate() {
                if at > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn histogram<const N: usize>(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        histogram: &Histogram<N>,
        unit: Unit,
    ) {
        let bucket = format!("{name}_bucket");
        for (bound, cumulative) in histogram.cumulative() {
            let le = unit.scale(bound).to_string();
            let with_le: Vec<(&str, &str)> = labels
                .iter()
                .copied()
                .chain([("le", le.as_str())])
                .collect();
            self.sample(&bucket, &with_le, cumulative as f64);
        }
        let count = histogram.count() as f64;
        let with_inf: Vec<(&str, &str)> = labels.iter().copied().chain([("le", "+Inf")]).collect();
        self.sample(&bucket, &with_inf, count);
        self.sample(&format!("{name}_sum"), labels, unit.scale(histogram.sum()));
        self.sample(&format!("{name}_count"), labels, count);
    }
}

/// HELP text escapes backslash and newline (exposition format 0.0.4).
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Label values escape backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap, HashSet};
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::metrics::ProcessInfo;

    /// One parsed sample: metric name, labels in order, value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// A strict reader of the 0.0.4 text format as this module writes it: every line well
    /// formed, HELP and TYPE once per family and before its samples, samples of a family
    /// contiguous, no duplicate series, counters named `_total` and never negative, histogram
    /// buckets ascending in `le`, cumulative, ending in `+Inf` equal to `_count`, with `_sum`.
    /// Returns the samples by series key (`name{labels}`).
    fn validate(text: &str) -> Result<BTreeMap<String, f64>, String> {
        let mut kinds: HashMap<String, String> = HashMap::new();
        let mut helped: HashSet<String> = HashSet::new();
        let mut finished: HashSet<String> = HashSet::new();
        let mut current: Option<String> = None;
        let mut series = BTreeMap::new();
        let mut histograms: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
        if !text.ends_with('\n') {
            return Err("exposition must end with a newline".into());
        }
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let (keyword, rest) = rest.split_once(' ').ok_or(format!("bad comment {line}"))?;
                let (name, value) = rest.split_once(' ').ok_or(format!("bad comment {line}"))?;
                check_name(name)?;
                match keyword {
                    "HELP" => {
                        if !helped.insert(name.to_owned()) {
                            return Err(format!("second HELP for {name}"));
                        }
                        if value.is_empty() {
                            return Err(format!("empty HELP for {name}"));
                        }
                    }
                    "TYPE" => {
                        if !["counter", "gauge", "histogram"].contains(&value) {
                            return Err(format!("type {value} of {name}"));
                        }
                        if kinds.insert(name.to_owned(), value.to_owned()).is_some() {
                            return Err(format!("second TYPE for {name}"));
                        }
                        if let Some(previous) = current.replace(name.to_owned()) {
                            finished.insert(previous);
                        }
                    }
                    _ => return Err(format!("unknown comment {line}")),
                }
                continue;
            }
            let (name, labels, value) = parse_sample(line)?;
            let family = current
                .clone()
                .ok_or(format!("sample before any TYPE: {line}"))?;
            let kind = kinds.get(&family).cloned().unwrap_or_default();
            if !helped.contains(&family) {
                return Err(format!("family {family} has no HELP"));
            }
            let belongs = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name == format!("{family}{suffix}")),
                _ => name == family,
            };
            if !belongs || finished.contains(&family) {
                return Err(format!("sample {name} outside its family block ({family})"));
            }
            if kind == "counter" && (!name.ends_with("_total") || value < 0.0) {
                return Err(format!("counter {name} must end in _total and be >= 0"));
            }
            let key = series_key(&name, &labels);
            if series.insert(key.clone(), value).is_some() {
                return Err(format!("duplicate series {key}"));
            }
            if kind == "histogram" {
                let without_le: Vec<_> =
                    labels.iter().filter(|(k, _)| k != "le").cloned().collect();
                histograms
                    .entry(series_key(&family, &without_le))
                    .or_default()
                    .push((name, labels, value));
            }
        }
        for (key, samples) in &histograms {
            check_histogram(key, samples)?;
        }
        Ok(series)
    }

    fn check_histogram(key: &str, samples: &[Sample]) -> Result<(), String> {
        let mut previous: Option<(f64, f64)> = None;
        let (mut count, mut sum, mut inf) = (None, None, None);
        for (name, labels, value) in samples {
            if name.ends_with("_bucket") {
                let le = labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .map(|(_, v)| v.clone())
                    .ok_or(format!("{key}: bucket without le"))?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse::<f64>().map_err(|_| format!("{key}: le {le}"))?
                };
                if let Some((last_bound, last_count)) = previous
                    && (bound <= last_bound || *value < last_count)
                {
                    return Err(format!("{key}: buckets not ascending and cumulative"));
                }
                previous = Some((bound, *value));
                if le == "+Inf" {
                    inf = Some(*value);
                }
            } else if name.ends_with("_count") {
                count = Some(*value);
            } else {
                sum = Some(*value);
            }
        }
        match (inf, count, sum) {
            (Some(inf), Some(count), Some(_)) if inf == count => Ok(()),
            other => Err(format!(
                "{key}: +Inf bucket, _count and _sum disagree: {other:?}"
            )),
        }
    }

    fn check_name(name: &str) -> Result<(), String> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            Ok(())
        } else {
            Err(format!("bad name {name:?}"))
        }
    }

    fn parse_sample(line: &str) -> Result<Sample, String> {
        let (series, value) = line.rsplit_once(' ').ok_or(format!("no value: {line}"))?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse::<f64>().map_err(|_| format!("bad value: {line}"))?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or(format!("unclosed labels: {line}"))?;
                (
                    name,
                    parse_labels(body).ok_or(format!("bad labels: {line}"))?,
                )
            }
        };
        check_name(name)?;
        Ok((name.to_owned(), labels, value))
    }

    fn parse_labels(mut body: &str) -> Option<Vec<(String, String)>> {
        let mut labels = Vec::new();
        while !body.is_empty() {
            let (key, rest) = body.split_once("=\"")?;
            check_name(key).ok()?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        _ => return None,
                    },
                    (at, '"') => break at,
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            body = &rest[end + 1..];
            body = match body.strip_prefix(',') {
                Some(more) if !more.is_empty() => more,
                Some(_) => return None,
                None if body.is_empty() => body,
                None => return None,
            };
        }
        Some(labels)
    }

    fn series_key(name: &str, labels: &[(String, String)]) -> String {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        format!("{name}{{{}}}", labels.join(","))
    }

    fn snapshot() -> MetricsSnapshot {
        let mut busy = ShardStats::new();
        busy.set_listening(true);
        busy.set_connections(5);
        busy.set_channels(2);
        busy.set_subscriptions(9);
        busy.record_accept(Duration::from_micros(2_000));
        busy.record_accept(Duration::from_secs(60));
        busy.record_reject(RejectReason::PerIp);
        busy.record_reject(RejectReason::PerIp);
        busy.record_disconnect(DisconnectReason::SlowConsumer, Some(4100));
        busy.record_slow_consumer(SlowConsumerCause::OutboxFull);
        busy.record_disconnect(DisconnectReason::ClientClose, Some(3333));
        busy.record_disconnect(DisconnectReason::ConnectionLost, None);
        busy.record_heartbeat(Duration::from_millis(3));
        busy.record_outbox(70_000);
        busy.record_loop_lag(Duration::from_micros(300));
        busy.record_deliveries(40);
        busy.record_pusher_refusal(crate::pusher::Limit::ChannelsPerApp);
        busy.record_bytes_sent(1234);
        busy.set_mesh_dropped(6, 1);
        busy.record_mesh_budget_exhausted();
        let mut quiet = ShardStats::new();
        quiet.set_listening(true);
        quiet.set_connections(1);
        quiet.record_accept(Duration::from_micros(50));
        MetricsSnapshot {
            taken_at: SystemTime::UNIX_EPOCH + Duration::from_secs(100),
            shards: vec![busy, quiet],
            process: ProcessInfo {
                version: "1.2.3",
                backend: "io_uring",
                start_time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_500),
                capacity: 1000,
                capacity_configured: 5000,
            },
            broker: Some(crate::cluster::BrokerSnapshot {
                url: "nats://n:4222".into(),
                up: true,
                reason: String::new(),
                messages_in: 11,
                messages_out: 12,
                dropped_full: 13,
                dropped_down: 14,
                dropped_invalid: 15,
                reconnects: 16,
                subscriptions: 17,
            }),
        }
    }

    fn encoded(snapshot: &MetricsSnapshot) -> String {
        let mut out = String::new();
        encode(snapshot, &mut out);
        out
    }

    #[test]
    fn exposition_parses_back_with_the_recorded_values() {
        let text = encoded(&snapshot());
        let series = validate(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        let expected: [(&str, f64); 31] = [
            ("ringcast_broker_up{}", 1.0),
            (r#"ringcast_broker_messages_total{direction="in"}"#, 11.0),
            (r#"ringcast_broker_messages_total{direction="out"}"#, 12.0),
            (r#"ringcast_broker_dropped_total{reason="full"}"#, 13.0),
            (r#"ringcast_broker_dropped_total{reason="down"}"#, 14.0),
            (r#"ringcast_broker_dropped_total{reason="invalid"}"#, 15.0),
            ("ringcast_broker_reconnects_total{}", 16.0),
            ("ringcast_broker_subscriptions{}", 17.0),
            (r#"ringcast_build_info{version="1.2.3"}"#, 1.0),
            (r#"ringcast_driver_info{driver="io_uring"}"#, 1.0),
            ("process_start_time_seconds{}", 1.5),
            ("ringcast_connections_capacity{}", 1000.0),
            ("ringcast_connections_capacity_configured{}", 5000.0),
            (r#"ringcast_connections{shard="0"}"#, 5.0),
            (r#"ringcast_connections{shard="1"}"#, 1.0),
            (r#"ringcast_subscriptions{shard="0"}"#, 9.0),
            (r#"ringcast_shard_up{shard="1"}"#, 1.0),
            (
                r#"ringcast_event_loop_lag_current_seconds{shard="0"}"#,
                0.0003,
            ),
            ("ringcast_connections_accepted_total{}", 3.0),
            (
                r#"ringcast_connections_rejected_total{reason="per_ip"}"#,
                2.0,
            ),
            (
                r#"ringcast_connections_rejected_total{reason="capacity"}"#,
                0.0,
            ),
            (
                r#"ringcast_disconnects_total{reason="slow_consumer",code="4100"}"#,
                1.0,
            ),
            (
                r#"ringcast_disconnects_total{reason="client_close",code="other"}"#,
                1.0,
            ),
            (
                r#"ringcast_disconnects_total{reason="connection_lost",code="none"}"#,
                1.0,
            ),
            (
                r#"ringcast_slow_consumer_closes_total{reason="outbox_full"}"#,
                1.0,
            ),
            ("ringcast_deliveries_total{}", 40.0),
            (
                r#"ringcast_mesh_dropped_total{lane="data",reason="full"}"#,
                6.0,
            ),
            (
                r#"ringcast_mesh_dropped_total{lane="control",reason="full"}"#,
                1.0,
            ),
            ("ringcast_mesh_budget_exhausted_total{}", 1.0),
            (
                r#"ringcast_handshake_duration_seconds_bucket{le="0.0025"}"#,
                2.0,
            ),
            (
                r#"ringcast_handshake_duration_seconds_bucket{le="+Inf"}"#,
                3.0,
            ),
        ];
        for (key, value) in expected {
            assert_eq!(series.get(key), Some(&value), "{key} in\n{text}");
        }
        assert_eq!(
            series.get(r#"ringcast_outbox_bytes_bucket{le="65536"}"#),
            Some(&0.0)
        );
        assert_eq!(
            series.get(r#"ringcast_outbox_bytes_bucket{le="262144"}"#),
            Some(&1.0)
        );
        assert_eq!(series.get("ringcast_outbox_bytes_sum{}"), Some(&70_000.0));
        assert_eq!(
            series.get(r#"ringcast_pusher_limit_refusals_total{limit="channels_per_app"}"#),
            Some(&1.0)
        );
        assert!(series.contains_key(r#"ringcast_event_loop_lag_seconds_count{shard="1"}"#));
        assert!(
            !series.keys().any(|k| k.contains(r#"reason="drain""#)),
            "disconnect pairs never seen are left out"
        );
    }

    #[test]
    fn exposition_of_an_idle_process_is_well_formed() {
        let snapshot = MetricsSnapshot {
            taken_at: SystemTime::UNIX_EPOCH,
            shards: vec![ShardStats::new()],
            process: snapshot().process,
            broker: None,
        };
        let text = encoded(&snapshot);
        let series = validate(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        assert_eq!(series.get(r#"ringcast_shard_up{shard="0"}"#), Some(&0.0));
        assert_eq!(
            series.get("ringcast_heartbeat_rtt_seconds_count{}"),
            Some(&0.0)
        );
        assert!(
            !text.contains("ringcast_broker_"),
            "no broker families without a broker"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut snapshot = snapshot();
        snapshot.process.version = "a\"b\\c\nd";
        let text = encoded(&snapshot);
        let series = validate(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        assert!(series.contains_key(&series_key(
            "ringcast_build_info",
            &[("version".into(), "a\"b\\c\nd".into())]
        )));
    }

    #[test]
    fn the_validator_rejects_malformed_expositions() {
        let good = "# HELP a_total x\n# TYPE a_total counter\na_total 1\n";
        assert!(validate(good).is_ok());
        let histogram = |buckets: &str, count: &str| {
            format!("# HELP h x\n# TYPE h histogram\n{buckets}h_sum 1\nh_count {count}\n")
        };
        let bad = [
            "# HELP a_total x\n# TYPE a_total counter\na_total 1".to_owned(),
            "# HELP a_total x\n# TYPE a_total counter\n# TYPE a_total counter\na_total 1\n".into(),
            "a_total 1\n".into(),
            "# HELP a x\n# TYPE a counter\na 1\n".into(),
            "# HELP a_total x\n# TYPE a_total counter\na_total -1\n".into(),
            "# HELP g x\n# TYPE g gauge\ng 1\ng 2\n".into(),
            "# HELP g x\n# TYPE g gauge\ng{l=\"1\" 2\n".into(),
            "# HELP g x\n# TYPE g gauge\n# HELP f x\n# TYPE f gauge\nf 1\ng 2\n".into(),
            histogram(
                "h_bucket{le=\"1\"} 2\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"+Inf\"} 2\n",
                "2",
            ),
            histogram("h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n", "3"),
            histogram("h_bucket{le=\"1\"} 1\n", "1"),
        ];
        for text in bad {
            assert!(validate(&text).is_err(), "accepted:\n{text}");
        }
        assert!(
            validate(&histogram(
                "h_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n",
                "2"
            ))
            .is_ok()
        );
    }
}
