//! What a shard tells operators: its [`ShardStats`] (published to the process [`Registry`]
//! every tick), the admin answers (`/metrics`, `/health`, `/ready`, `/dashboard`) and the
//! dashboard feed connections it owns.
//!
//! Kept apart from the connection state machine so that the loop only calls `record_*` and
//! a few hooks; everything here runs on the shard's thread.

use std::sync::Arc;
use std::time::SystemTime;

use crate::dashboard;
use crate::driver::ConnKey;
use crate::health::HealthConfig;
use crate::metrics::{MetricsSnapshot, ProcessInfo, Registry, ShardStats};

use super::wheel::Tick;

/// Ticks between dashboard feed frames: [`dashboard::FEED_INTERVAL`] in 100 ms ticks.
const FEED_TICKS: Tick = 10;

/// A shard's observability state.
pub(super) struct Observe {
    id: usize,
    registry: Arc<Registry>,
    /// The shard's counters; bumped by the loop, copied to the registry each tick.
    pub stats: ShardStats,
    health: HealthConfig,
    /// Dashboard feed connections on this shard.
    feeds: Vec<ConnKey>,
    feed_prev: Option<MetricsSnapshot>,
    last_feed: Tick,
    /// Open WebSocket connections (the connections gauge).
    open: u64,
    /// The admin routes are served on the main listener (`admin_listen = "public"`).
    admin_on_main: bool,
}

impl Observe {
    /// Shard `id`'s state, publishing to `registry`; `admin_on_main`: it answers the admin
    /// routes.
    pub(super) fn new(id: usize, registry: Arc<Registry>, admin_on_main: bool) -> Self {
        let mut stats = ShardStats::new();
        stats.set_listening(true);
        Self {
            id,
            registry,
            stats,
            health: HealthConfig::default(),
            feeds: Vec::new(),
            feed_prev: None,
            last_feed: 0,
            open: 0,
            admin_on_main,
        }
    }

    /// A stand-alone shard's state: its own one-slot registry.
    pub(super) fn standalone(config: &crate::config::Config, backend: &'static str) -> Self {
        let process = ProcessInfo {
            version: env!("CARGO_PKG_VERSION"),
            backend,
            start_time: SystemTime::now(),
            capacity: config.max_connections as u64,
            capacity_configured: config.max_connections as u64,
        };
        Self::new(
            0,
            Arc::new(Registry::new(1, process)),
            config.admin_listen == crate::config::AdminListen::Public,
        )
    }

    /// A connection completed its upgrade.
    pub(super) fn handle_open(&mut self, key: ConnKey, feed: bool) {
        self.open += 1;
        if feed {
            self.feeds.push(key);
        }
    }

    /// A connection is gone: it leaves the connections gauge if it was open.
    pub(super) fn handle_closed(&mut self, was_open: bool) {
        if was_open {
            self.open = self.open.saturating_sub(1);
        }
    }

    /// Marks the shard draining in what it publishes.
    pub(super) fn handle_drain(&mut self) {
        self.stats.set_draining(true);
        self.stats.set_listening(false);
    }

    /// Publishes the stats (once per 100 ms tick: a scrape or a dashboard frame, one per second, is then at most a
    /// tenth of its interval stale, and the copy of a few KiB is noise next to a loop turn).
    pub(super) fn publish(&mut self) {
        self.stats.set_connections(self.open);
        if let Some(slot) = self.registry.shard(self.id) {
            slot.publish(&self.stats);
        }
    }

    /// When a feed frame is due at `now`: the frame and the feed connections to send it to.
    /// `None` when no feed is open here or the interval has not passed.
    pub(super) fn poll_feed(
        &mut self,
        now: Tick,
        is_feed: impl Fn(ConnKey) -> bool,
    ) -> Option<(String, &[ConnKey])> {
        if self.feeds.is_empty() || now < self.last_feed.saturating_add(FEED_TICKS) {
            return None;
        }
        self.feeds.retain(|&key| is_feed(key));
        if self.feeds.is_empty() {
            self.feed_prev = None;
            return None;
        }
        self.last_feed = now;
        let snapshot = self.registry.snapshot(SystemTime::now());
        let frame = dashboard::dashboard_frame(&snapshot, self.feed_prev.as_ref());
        self.feed_prev = Some(snapshot);
        Some((frame, &self.feeds))
    }

    /// Whether the admin routes (the feed included) are served here.
    pub(super) fn admin_on_main(&self) -> bool {
        self.admin_on_main
    }

    /// Writes the whole HTTP answer for an admin path into `out`; `false` when `path` is not
    /// one, or is served on the admin listener only (every path but the probes `/health` and
    /// `/ready`, which load balancers send to the main listener).
    pub(super) fn write_admin(&self, path: &str, out: &mut Vec<u8>) -> bool {
        (self.admin_on_main || crate::admin::is_probe_path(path))
            && crate::admin::write_admin_response(&self.registry, None, &self.health, path, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn answer(observe: &Observe, path: &str) -> String {
        let mut out = Vec::new();
        assert!(observe.write_admin(path, &mut out), "{path}");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn admin_paths_answer_with_their_content() {
        let config = Config {
            admin_listen: crate::config::AdminListen::Public,
            ..Config::default()
        };
        let mut observe = Observe::standalone(&config, "fake");
        observe.stats.record_message_received();
        observe.publish();
        let metrics = answer(&observe, "/metrics");
        assert!(metrics.starts_with("HTTP/1.1 200 "), "{metrics}");
        assert!(
            metrics.contains("ringcast_messages_received_total 1"),
            "{metrics}"
        );
        assert!(answer(&observe, "/health").contains("\"status\""));
        assert!(answer(&observe, "/ready").starts_with("HTTP/1.1 200 "));
        assert!(answer(&observe, "/dashboard").contains("<html"));
        assert!(!observe.write_admin("/echo", &mut Vec::new()));
    }

    #[test]
    fn ready_turns_503_once_draining() {
        let mut observe = Observe::standalone(&Config::default(), "fake");
        observe.publish();
        observe.handle_drain();
        observe.publish();
        assert!(answer(&observe, "/ready").starts_with("HTTP/1.1 503 "));
    }

    #[test]
    fn feed_frames_come_once_per_interval_to_live_feeds() {
        let mut observe = Observe::standalone(&Config::default(), "fake");
        let key = ConnKey {
            slot: 0,
            generation: 1,
        };
        assert!(observe.poll_feed(100, |_| true).is_none(), "no feed yet");
        observe.handle_open(key, true);
        let (frame, keys) = observe.poll_feed(100, |_| true).expect("due");
        assert!(frame.contains("\"v\":1"), "{frame}");
        assert_eq!(keys, [key]);
        assert!(
            observe.poll_feed(105, |_| true).is_none(),
            "within the interval"
        );
        assert!(
            observe.poll_feed(110, |_| false).is_none(),
            "closed feeds dropped"
        );
    }
}
