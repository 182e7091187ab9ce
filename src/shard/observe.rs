//! What a shard tells operators and what it holds per client address: its [`ShardStats`]
//! (published to the process [`Registry`] every tick), the admin answers (`/metrics`,
//! `/health`, `/ready`, `/dashboard`), the dashboard feed connections it owns, and the
//! per-IP slots its connections hold in the shared [`IpLimits`].
//!
//! Kept apart from the connection state machine so that the loop only calls `record_*` and
//! a few hooks; everything here runs on the shard's thread.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::dashboard;
use crate::driver::ConnKey;
use crate::health::HealthConfig;
use crate::limits::IpLimits;
use crate::metrics::{MetricsSnapshot, ProcessInfo, Registry, ShardStats};

use super::wheel::Tick;

/// Ticks between dashboard feed frames: [`dashboard::FEED_INTERVAL`] in 100 ms ticks.
const FEED_TICKS: Tick = 10;

/// What the shard knows of a connection's client address.
#[derive(Debug, Clone, Copy)]
struct Peer {
    /// The TCP peer, or the source a PROXY header gave, or the client the upgrade was
    /// charged to.
    ip: IpAddr,
    /// The connection holds a slot in [`IpLimits`] for `ip`.
    held: bool,
    /// A PROXY protocol header is expected before the request.
    expect_proxy: bool,
}

/// A shard's observability and per-address state.
pub struct Observe {
    id: usize,
    registry: Arc<Registry>,
    /// The shard's counters; bumped by the loop, copied to the registry each tick.
    pub stats: ShardStats,
    ip_limits: Arc<IpLimits>,
    health: HealthConfig,
    /// Client addresses of connections the per-IP limits may apply to. Exempt peers
    /// (loopback by default) are not entered, so they cost nothing here.
    peers: HashMap<ConnKey, Peer>,
    /// Dashboard feed connections on this shard.
    feeds: Vec<ConnKey>,
    feed_prev: Option<MetricsSnapshot>,
    last_feed: Tick,
    /// Open WebSocket connections (the connections gauge).
    open: u64,
    /// The admin routes are served on the main listener (no `admin_listen`).
    admin_on_main: bool,
}

impl Observe {
    /// Shard `id`'s state, publishing to `registry` and charging addresses to `ip_limits`;
    /// `admin_on_main`: it answers the admin routes.
    pub fn new(
        id: usize,
        registry: Arc<Registry>,
        ip_limits: Arc<IpLimits>,
        admin_on_main: bool,
    ) -> Self {
        let mut stats = ShardStats::new();
        stats.set_listening(true);
        Self {
            id,
            registry,
            stats,
            ip_limits,
            health: HealthConfig::default(),
            peers: HashMap::new(),
            feeds: Vec::new(),
            feed_prev: None,
            last_feed: 0,
            open: 0,
            admin_on_main,
        }
    }

    /// A stand-alone shard's state: its own one-slot registry, limits from `config`.
    pub fn standalone(config: &crate::config::Config, backend: &'static str) -> Self {
        let process = ProcessInfo {
            version: env!("CARGO_PKG_VERSION"),
            backend,
            start_time: SystemTime::now(),
            capacity: config.max_connections as u64,
        };
        Self::new(
            0,
            Arc::new(Registry::new(1, process)),
            Arc::new(IpLimits::new(config.ip_limits.clone())),
            config.admin_listen.is_none(),
        )
    }

    /// The shared per-IP table.
    pub fn ip_limits(&self) -> &IpLimits {
        &self.ip_limits
    }

    /// Notes the TCP peer of a new connection when the per-IP limits may concern it: a peer
    /// that is limited itself, or a trusted proxy whose forwarded clients may be.
    pub fn handle_accept(&mut self, key: ConnKey, peer: Option<IpAddr>) {
        let Some(peer) = peer.map(|p| p.to_canonical()) else {
            return;
        };
        let config = self.ip_limits.config();
        let proxy = config.trusted_proxies.iter().any(|net| net.contains(peer));
        if proxy || self.ip_limits.applies_to(peer) {
            let expect_proxy = proxy && config.proxy_protocol;
            let entry = Peer {
                ip: peer,
                held: false,
                expect_proxy,
            };
            self.peers.insert(key, entry);
        }
    }

    /// Consumes the PROXY protocol header a connection from a trusted proxy starts with, when
    /// one is expected: `Ok(n)` says how many bytes of `data` it took (0 when none is
    /// expected). The header must arrive whole in the connection's first read (load balancers
    /// send it in one segment); `Err` closes the connection.
    pub fn handle_proxy_header(&mut self, key: ConnKey, data: &[u8]) -> Result<usize, ()> {
        let Some(peer) = self.peers.get_mut(&key).filter(|p| p.expect_proxy) else {
            return Ok(0);
        };
        let header = crate::limits::parse_proxy_header(data).map_err(drop)?;
        peer.expect_proxy = false;
        if let Some(source) = header.source {
            peer.ip = source.to_canonical();
        }
        Ok(header.len)
    }

    /// The client address noted for the connection (TCP peer or PROXY source), if any.
    pub fn peer(&self, key: ConnKey) -> Option<IpAddr> {
        self.peers.get(&key).map(|p| p.ip)
    }

    /// Records that `key` holds a per-IP slot for `client`.
    pub fn hold_ip(&mut self, key: ConnKey, client: IpAddr) {
        let entry = Peer {
            ip: client,
            held: true,
            expect_proxy: false,
        };
        self.peers.insert(key, entry);
    }

    /// A connection completed its upgrade.
    pub fn handle_open(&mut self, key: ConnKey, feed: bool) {
        self.open += 1;
        if feed {
            self.feeds.push(key);
        }
    }

    /// A connection is gone: gives back its per-IP slot and its place in the gauges.
    pub fn handle_closed(&mut self, key: ConnKey, was_open: bool) {
        if let Some(Peer { ip, held: true, .. }) = self.peers.remove(&key) {
            self.ip_limits.release(ip, Instant::now());
        }
        if was_open {
            self.open = self.open.saturating_sub(1);
        }
    }

    /// Marks the shard draining in what it publishes.
    pub fn handle_drain(&mut self) {
        self.stats.set_draining(true);
        self.stats.set_listening(false);
    }

    /// Publishes the stats (once per tick; [`metrics::PUBLISH_INTERVAL`] is one tick).
    pub fn publish(&mut self) {
        self.stats.set_connections(self.open);
        if let Some(slot) = self.registry.shard(self.id) {
            slot.publish(&self.stats);
        }
    }

    /// When a feed frame is due at `now`: the frame and the feed connections to send it to.
    /// `None` when no feed is open here or the interval has not passed.
    pub fn poll_feed(
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
    pub fn admin_on_main(&self) -> bool {
        self.admin_on_main
    }

    /// Writes the whole HTTP answer for an admin path into `out`; `false` when `path` is not
    /// one, or the admin routes are served on their own listener.
    pub fn write_admin(&self, path: &str, out: &mut Vec<u8>) -> bool {
        self.admin_on_main
            && crate::admin::write_admin_response(&self.registry, &self.health, path, out)
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
        let mut observe = Observe::standalone(&Config::default(), "fake");
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
