//! `/health` and `/ready`: what a load balancer and an orchestrator ask a ringcast process.
//!
//! Both are pure functions from a [`HealthSnapshot`] to a status code and a JSON body, so the
//! shard that serves them only copies the [`crate::metrics::Registry`] and writes the answer.
//!
//! - `/health` says how well the process serves: `ok`, `degraded` (serving, but something an
//!   operator should see: a late event loop, load near capacity, a shard not listening),
//!   `draining` (shutting down) or `failed` (a shard's thread died; the process is exiting so
//!   its supervisor restarts it). The status code is what a load balancer acts on: 200 keeps
//!   the instance in rotation, 503 takes it out. `draining` and `failed` are 503, and so is
//!   `degraded` once a hard threshold is crossed ([`HealthConfig::unavailable_lag`], capacity
//!   full, no shard listening): new clients are better served elsewhere.
//! - `/ready` says whether the process should receive traffic at all: 200 once every shard
//!   listens and none drains or failed, 503 before (starting) and after (draining, failed).
//!   Orchestrators gate rollouts on it; it ignores load, so a busy instance is not restarted for
//!   being busy.

use std::time::Duration;

use serde_json::{Value, json};

use crate::metrics::MetricsSnapshot;

/// The `Content-Type` of `/health` and `/ready` answers.
pub(crate) const CONTENT_TYPE: &str = "application/json";

/// Thresholds that turn measurements into a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthConfig {
    /// Worst shard loop lag from which the status is `degraded` (still 200).
    pub degraded_lag: Duration,
    /// Worst shard loop lag from which `/health` answers 503: every deadline the shard owns
    /// (pings, handshakes, closes) slips by this much, so new clients should go elsewhere.
    pub unavailable_lag: Duration,
    /// Connections as a percentage of capacity from which the status is `degraded`; at 100 the
    /// process refuses new connections and `/health` answers 503.
    pub degraded_load_percent: u8,
}

impl Default for HealthConfig {
    /// 100 ms of lag is when delays become visible to people in a chat; 1 s is when heartbeat
    /// and handshake deadlines (seconds; defaults in docs/operations.md) start to misfire; 90 % of
    /// capacity leaves a scrape interval or two to react before refusals start.
    fn default() -> Self {
        Self {
            degraded_lag: Duration::from_millis(100),
            unavailable_lag: Duration::from_secs(1),
            degraded_load_percent: 90,
        }
    }
}

/// One shard, as `/health` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardHealth {
    /// The shard's index.
    pub id: usize,
    /// Its open connections.
    pub connections: u64,
    /// How late its loop ran its latest timer tick.
    pub lag: Duration,
    /// Whether its listener accepts.
    pub listening: bool,
    /// Whether it is draining.
    pub draining: bool,
    /// Whether its thread died.
    pub failed: bool,
}

/// What `/health` and `/ready` judge from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthSnapshot {
    /// Open connections across all shards.
    pub connections: u64,
    /// The connections the process can hold: the configured maximum, or fewer when the
    /// open-files limit allows fewer. Load and `full` are judged against this.
    pub capacity: u64,
    /// The configured maximum of connections (`max_connections`), reported beside `capacity`
    /// so an operator sees when the host holds fewer than asked for.
    pub capacity_configured: u64,
    /// Each shard, by id.
    pub shards: Vec<ShardHealth>,
    /// The cluster broker, when one is configured.
    pub broker: Option<crate::cluster::BrokerSnapshot>,
}

impl HealthSnapshot {
    /// The health-relevant part of a metrics snapshot.
    pub(crate) fn from_metrics(snapshot: &MetricsSnapshot) -> Self {
        let shards: Vec<ShardHealth> = snapshot
            .shards
            .iter()
            .enumerate()
            .map(|(id, shard)| ShardHealth {
                id,
                connections: shard.connections,
                lag: shard.loop_lag(),
                listening: shard.listening,
                draining: shard.draining,
                failed: shard.failed,
            })
            .collect();
        Self {
            connections: shards.iter().map(|shard| shard.connections).sum(),
            capacity: snapshot.process.capacity,
            capacity_configured: snapshot.process.capacity_configured,
            shards,
            broker: snapshot.broker.clone(),
        }
    }

    fn worst_lag(&self) -> Duration {
        self.shards
            .iter()
            .map(|shard| shard.lag)
            .max()
            .unwrap_or_default()
    }
}

/// The overall status `/health` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HealthStatus {
    /// Serving normally.
    Ok,
    /// Serving, with [`Assessment::reasons`] an operator should look at.
    Degraded,
    /// Shutting down: closing connections, refusing new ones.
    Draining,
    /// A shard's thread died: the process is exiting so that its supervisor restarts it.
    Failed,
}

impl HealthStatus {
    /// The `status` value in the JSON body.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Draining => "draining",
            Self::Failed => "failed",
        }
    }
}

/// Why a process is degraded; the `reasons` array of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DegradedReason {
    /// A shard's loop lag is at or over [`HealthConfig::degraded_lag`].
    Lag,
    /// Connections are at or over [`HealthConfig::degraded_load_percent`] of capacity.
    Load,
    /// Connections reached capacity: new ones are refused.
    Full,
    /// A shard is not listening (starting, or its listener failed).
    ShardNotListening,
    /// The cluster broker is unreachable: local clients are served, other instances' publishes
    /// do not arrive. Still 200: the instance serves its own clients fully.
    Broker,
}

impl DegradedReason {
    /// The value in the `reasons` array.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Lag => "lag",
            Self::Load => "load",
            Self::Full => "full",
            Self::ShardNotListening => "shard_not_listening",
            Self::Broker => "broker",
        }
    }
}

/// The judgement behind a `/health` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assessment {
    /// The overall status.
    pub status: HealthStatus,
    /// Why it is degraded; empty when `ok`.
    pub reasons: Vec<DegradedReason>,
    /// Whether a load balancer should stop sending new clients (answer 503).
    pub unavailable: bool,
}

/// Judges `snapshot` against `config`.
pub(crate) fn assess(snapshot: &HealthSnapshot, config: &HealthConfig) -> Assessment {
    let draining = snapshot.shards.iter().any(|shard| shard.draining);
    let failed = snapshot.shards.iter().any(|shard| shard.failed);
    let lag = snapshot.worst_lag();
    let load_limit = u128::from(snapshot.capacity) * u128::from(config.degraded_load_percent);
    let full = snapshot.connections >= snapshot.capacity;
    let none_listening = snapshot.shards.iter().all(|shard| !shard.listening);

    let mut reasons = Vec::new();
    if lag >= config.degraded_lag {
        reasons.push(DegradedReason::Lag);
    }
    if full {
        reasons.push(DegradedReason::Full);
    } else if u128::from(snapshot.connections) * 100 >= load_limit {
        reasons.push(DegradedReason::Load);
    }
    if snapshot.shards.iter().any(|shard| !shard.listening) {
        reasons.push(DegradedReason::ShardNotListening);
    }
    if snapshot.broker.as_ref().is_some_and(|broker| !broker.up) {
        reasons.push(DegradedReason::Broker);
    }

    let status = if failed {
        HealthStatus::Failed
    } else if draining {
        HealthStatus::Draining
    } else if reasons.is_empty() {
        HealthStatus::Ok
    } else {
        HealthStatus::Degraded
    };
    let unavailable = failed || draining || full || none_listening || lag >= config.unavailable_lag;
    Assessment {
        status,
        reasons,
        unavailable,
    }
}

/// The `/health` answer: 200 or 503 and the JSON body
/// `{status, reasons, connections, capacity, capacity_configured, shards: [{id, connections,
/// lag_ms, listening, draining, failed}]}`.
pub(crate) fn health_response(snapshot: &HealthSnapshot, config: &HealthConfig) -> (u16, Vec<u8>) {
    let assessment = assess(snapshot, config);
    let shards: Vec<Value> = snapshot
        .shards
        .iter()
        .map(|shard| {
            json!({
                "id": shard.id,
                "connections": shard.connections,
                "lag_ms": millis(shard.lag),
                "listening": shard.listening,
                "draining": shard.draining,
                "failed": shard.failed,
            })
        })
        .collect();
    let mut body = json!({
        "status": assessment.status.as_str(),
        "reasons": assessment.reasons.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "connections": snapshot.connections,
        "capacity": snapshot.capacity,
        "capacity_configured": snapshot.capacity_configured,
        "shards": shards,
    });
    if let Some(broker) = &snapshot.broker {
        body["broker"] = json!({
            "url": broker.url,
            "up": broker.up,
            "reason": broker.reason,
            "reconnects": broker.reconnects,
        });
    }
    let code = if assessment.unavailable { 503 } else { 200 };
    (code, body.to_string().into_bytes())
}

/// The `/ready` answer: 200 `{"ready":true}` once every shard listens and none drains or
/// failed, else 503 `{"ready":false,"reason":"starting"|"draining"|"failed"}`.
pub(crate) fn ready_response(snapshot: &HealthSnapshot) -> (u16, Vec<u8>) {
    let failed = snapshot.shards.iter().any(|shard| shard.failed);
    let draining = snapshot.shards.iter().any(|shard| shard.draining);
    let starting =
        snapshot.shards.is_empty() || snapshot.shards.iter().any(|shard| !shard.listening);
    let (code, body) = if failed {
        (503, json!({"ready": false, "reason": "failed"}))
    } else if draining {
        (503, json!({"ready": false, "reason": "draining"}))
    } else if starting {
        (503, json!({"ready": false, "reason": "starting"}))
    } else {
        (200, json!({"ready": true}))
    };
    (code, body.to_string().into_bytes())
}

/// Milliseconds with microsecond precision, for JSON.
pub(crate) fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: usize, connections: u64, lag_ms: u64) -> ShardHealth {
        ShardHealth {
            id,
            connections,
            lag: Duration::from_millis(lag_ms),
            listening: true,
            draining: false,
            failed: false,
        }
    }

    fn healthy() -> HealthSnapshot {
        HealthSnapshot {
            connections: 30,
            capacity: 100,
            capacity_configured: 100,
            shards: vec![shard(0, 10, 1), shard(1, 20, 2)],
            broker: None,
        }
    }

    /// A broker that is down degrades the instance but keeps it in rotation, and says why.
    #[test]
    fn a_broker_down_is_degraded_with_the_reason() {
        let broker = crate::cluster::BrokerSnapshot {
            url: "redis://r:6379".into(),
            up: false,
            reason: "connection refused".into(),
            ..Default::default()
        };
        let down = HealthSnapshot {
            broker: Some(broker.clone()),
            ..healthy()
        };
        let (code, bytes) = health_response(&down, &HealthConfig::default());
        let json = body(&bytes);
        assert_eq!(code, 200, "{json}");
        assert_eq!(json["status"], "degraded");
        assert_eq!(json["reasons"], json!(["broker"]));
        assert_eq!(json["broker"]["reason"], "connection refused");
        assert_eq!(json["broker"]["up"], false);
        let up = HealthSnapshot {
            broker: Some(crate::cluster::BrokerSnapshot {
                up: true,
                reason: String::new(),
                ..broker
            }),
            ..healthy()
        };
        let json = body(&health_response(&up, &HealthConfig::default()).1);
        assert_eq!(json["status"], "ok", "{json}");
        assert_eq!(json["broker"]["up"], true);
        assert!(body(&health_response(&healthy(), &HealthConfig::default()).1)["broker"].is_null());
    }

    fn body(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap_or_else(|error| panic!("{error}"))
    }

    #[test]
    fn health_table() {
        type Case = (
            &'static str,
            fn(&mut HealthSnapshot),
            u16,
            &'static str,
            &'static [&'static str],
        );
        let cases: [Case; 10] = [
            ("healthy", |_| {}, 200, "ok", &[]),
            (
                "lag degraded",
                |s| s.shards[1].lag = Duration::from_millis(100),
                200,
                "degraded",
                &["lag"],
            ),
            (
                "lag unavailable",
                |s| s.shards[0].lag = Duration::from_secs(2),
                503,
                "degraded",
                &["lag"],
            ),
            ("load", |s| s.connections = 90, 200, "degraded", &["load"]),
            ("full", |s| s.connections = 100, 503, "degraded", &["full"]),
            (
                "one shard down",
                |s| s.shards[0].listening = false,
                200,
                "degraded",
                &["shard_not_listening"],
            ),
            (
                "all shards down",
                |s| {
                    s.shards
                        .iter_mut()
                        .for_each(|shard| shard.listening = false)
                },
                503,
                "degraded",
                &["shard_not_listening"],
            ),
            (
                "draining",
                |s| s.shards[1].draining = true,
                503,
                "draining",
                &[],
            ),
            (
                "a shard failed",
                |s| s.shards[1].failed = true,
                503,
                "failed",
                &[],
            ),
            (
                "a shard failed while draining",
                |s| {
                    s.shards[0].draining = true;
                    s.shards[1].failed = true;
                },
                503,
                "failed",
                &[],
            ),
        ];
        for (name, change, code, status, reasons) in cases {
            let mut snapshot = healthy();
            change(&mut snapshot);
            let (got_code, bytes) = health_response(&snapshot, &HealthConfig::default());
            let json = body(&bytes);
            assert_eq!(got_code, code, "{name}: {json}");
            assert_eq!(json["status"], status, "{name}");
            assert_eq!(json["reasons"], json!(reasons), "{name}");
        }
    }

    #[test]
    fn health_body_carries_shards() {
        let (_, bytes) = health_response(&healthy(), &HealthConfig::default());
        let json = body(&bytes);
        assert_eq!(json["connections"], 30);
        assert_eq!(json["capacity"], 100);
        assert_eq!(json["shards"][1]["id"], 1);
        assert_eq!(json["shards"][1]["connections"], 20);
        assert_eq!(json["shards"][1]["lag_ms"], 2.0);
    }

    /// On a host whose open-files limit holds fewer connections than configured, `/health`
    /// reports both, and judges load against what the host can hold.
    #[test]
    fn capacity_below_the_configured_one_is_reported_and_judged() {
        let snapshot = HealthSnapshot {
            connections: 19_000,
            capacity: 19_962,
            capacity_configured: 1_000_000,
            ..healthy()
        };
        let (code, bytes) = health_response(&snapshot, &HealthConfig::default());
        let json = body(&bytes);
        assert_eq!(json["capacity"], 19_962);
        assert_eq!(json["capacity_configured"], 1_000_000);
        assert_eq!(json["reasons"], json!(["load"]), "{json}");
        assert_eq!(code, 200);
        let full = HealthSnapshot {
            connections: 19_962,
            ..snapshot
        };
        let (code, bytes) = health_response(&full, &HealthConfig::default());
        assert_eq!(code, 503, "{}", body(&bytes));
        assert_eq!(body(&bytes)["reasons"], json!(["full"]));
    }

    #[test]
    fn ready_table() {
        type Case = (&'static str, fn(&mut HealthSnapshot), u16, Value);
        let cases: [Case; 6] = [
            ("listening", |_| {}, 200, json!({"ready": true})),
            (
                "busy still ready",
                |s| s.connections = 100,
                200,
                json!({"ready": true}),
            ),
            (
                "a shard starting",
                |s| s.shards[1].listening = false,
                503,
                json!({"ready": false, "reason": "starting"}),
            ),
            (
                "no shards",
                |s| s.shards.clear(),
                503,
                json!({"ready": false, "reason": "starting"}),
            ),
            (
                "draining",
                |s| s.shards[0].draining = true,
                503,
                json!({"ready": false, "reason": "draining"}),
            ),
            (
                "a shard failed",
                |s| s.shards[1].failed = true,
                503,
                json!({"ready": false, "reason": "failed"}),
            ),
        ];
        for (name, change, code, expected) in cases {
            let mut snapshot = healthy();
            change(&mut snapshot);
            let (got_code, bytes) = ready_response(&snapshot);
            assert_eq!(got_code, code, "{name}");
            assert_eq!(body(&bytes), expected, "{name}");
        }
    }

    /// A shard marked failed in the registry (its thread panicked) takes `/health` and `/ready`
    /// to 503 on the next read, though its last published stats still say it listens.
    #[test]
    fn a_failed_shard_in_the_registry_answers_503_at_once() {
        use crate::metrics::{ProcessInfo, Registry, ShardStats};
        let registry = Registry::new(
            2,
            ProcessInfo {
                version: "0",
                backend: "epoll",
                start_time: std::time::SystemTime::UNIX_EPOCH,
                capacity: 10,
                capacity_configured: 10,
            },
        );
        let mut stats = ShardStats::new();
        stats.set_listening(true);
        for id in 0..2 {
            assert!(registry.shard(id).is_some_and(|slot| slot.publish(&stats)));
        }
        let health = |registry: &Registry| {
            HealthSnapshot::from_metrics(&registry.snapshot(std::time::SystemTime::UNIX_EPOCH))
        };
        assert_eq!(
            health_response(&health(&registry), &HealthConfig::default()).0,
            200
        );
        if let Some(slot) = registry.shard(1) {
            slot.mark_failed();
        }
        let (code, bytes) = health_response(&health(&registry), &HealthConfig::default());
        let json = body(&bytes);
        assert_eq!((code, &json["status"]), (503, &json!("failed")), "{json}");
        assert_eq!(json["shards"][1]["failed"], true);
        assert_eq!(ready_response(&health(&registry)).0, 503);
    }

    #[test]
    fn snapshot_from_metrics() {
        use crate::metrics::{ProcessInfo, ShardStats};
        let mut stats = ShardStats::new();
        stats.set_listening(true);
        stats.set_connections(4);
        stats.record_loop_lag(Duration::from_millis(3));
        let metrics = MetricsSnapshot {
            taken_at: std::time::SystemTime::UNIX_EPOCH,
            shards: vec![stats, ShardStats::new()],
            process: ProcessInfo {
                version: "0",
                backend: "epoll",
                start_time: std::time::SystemTime::UNIX_EPOCH,
                capacity: 10,
                capacity_configured: 50,
            },
            broker: None,
        };
        let health = HealthSnapshot::from_metrics(&metrics);
        assert_eq!(health.connections, 4);
        assert_eq!(health.capacity, 10);
        assert_eq!(health.capacity_configured, 50);
        assert_eq!(health.shards[0], shard(0, 4, 3));
        assert!(!health.shards[1].listening);
        assert_eq!(ready_response(&health).0, 503);
    }
}
