//! The hand-off between shards and the scrape: one published [`ShardStats`] per shard, the
//! broker state and the process facts, read together as a [`MetricsSnapshot`].

use std::sync::{Mutex, PoisonError, TryLockError};
use std::time::SystemTime;

use super::ShardStats;

/// How often a shard should publish its stats: often enough that a scrape or a dashboard frame
/// (one per second) is at most a tenth of its interval stale, rarely enough that the copy (a few
/// KiB) is noise next to a loop turn.
pub const PUBLISH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// One shard's published stats. The shard writes it with [`ShardSlot::publish`]; readers copy it
/// out under the lock.
#[derive(Debug, Default)]
pub struct ShardSlot {
    published: Mutex<ShardStats>,
}

impl ShardSlot {
    /// Replaces the published copy with `stats`. Never blocks: when a reader holds the slot the
    /// shard skips this publish (and returns `false`) and tries again on its next interval.
    pub fn publish(&self, stats: &ShardStats) -> bool {
        let mut slot = match self.published.try_lock() {
            Ok(slot) => slot,
            // A panic while the slot was held left a whole ShardStats behind (a copy cannot
            // half-happen), so the data is still good.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        slot.clone_from(stats);
        true
    }

    /// A copy of the last published stats.
    pub fn read(&self) -> ShardStats {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Whether a broker connection exists and how it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerState {
    /// No broker is configured: this instance delivers locally only, by design.
    Disabled,
    /// The bridge holds a working connection to the broker.
    Connected,
    /// A broker is configured but unreachable: delivery is local only until it returns.
    Disconnected,
}

impl BrokerState {
    /// Every state, in exposition order.
    pub const ALL: [Self; 3] = [Self::Disabled, Self::Connected, Self::Disconnected];

    /// The `state` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
        }
    }
}

/// The broker the cluster bridge talks to, as `/metrics` and `/health` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerStatus {
    /// `none`, `redis` or `nats`: the `broker` label.
    pub kind: &'static str,
    /// How the connection is doing.
    pub state: BrokerState,
}

impl BrokerStatus {
    /// No broker configured.
    pub const NONE: Self = Self {
        kind: "none",
        state: BrokerState::Disabled,
    };
}

/// Facts about the process that do not change while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The crate version (`CARGO_PKG_VERSION`).
    pub version: &'static str,
    /// The event-loop backend the shards run on (`io_uring`, `epoll`).
    pub backend: &'static str,
    /// When the process started.
    pub start_time: SystemTime,
    /// The configured maximum of connections across all shards.
    pub capacity: u64,
}

/// Where every shard publishes and every reader (scrape, `/health`, dashboard feed) reads.
/// Built once at start, shared by `Arc` with every shard and the broker bridge.
#[derive(Debug)]
pub struct Registry {
    shards: Box<[ShardSlot]>,
    broker: Mutex<BrokerStatus>,
    process: ProcessInfo,
}

impl Registry {
    /// A registry for `shards` shards, none listening yet, no broker.
    pub fn new(shards: usize, process: ProcessInfo) -> Self {
        Self {
            shards: (0..shards).map(|_| ShardSlot::default()).collect(),
            broker: Mutex::new(BrokerStatus::NONE),
            process,
        }
    }

    /// The slot shard `id` publishes to; `None` past the number of shards.
    pub fn shard(&self, id: usize) -> Option<&ShardSlot> {
        self.shards.get(id)
    }

    /// Records the broker bridge's state; called by the bridge when it changes.
    pub fn set_broker(&self, status: BrokerStatus) {
        *self.broker.lock().unwrap_or_else(PoisonError::into_inner) = status;
    }

    /// Copies every shard's last published stats, the broker state and the process facts.
    /// `taken_at` stamps the snapshot (the dashboard computes rates from consecutive stamps).
    pub fn snapshot(&self, taken_at: SystemTime) -> MetricsSnapshot {
        MetricsSnapshot {
            taken_at,
            shards: self.shards.iter().map(ShardSlot::read).collect(),
            broker: *self.broker.lock().unwrap_or_else(PoisonError::into_inner),
            process: self.process.clone(),
        }
    }
}

/// Everything a scrape reports, copied out of the [`Registry`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// When the copy was taken.
    pub taken_at: SystemTime,
    /// Each shard's stats, indexed by shard id.
    pub shards: Vec<ShardStats>,
    /// The broker state.
    pub broker: BrokerStatus,
    /// The process facts.
    pub process: ProcessInfo,
}

impl MetricsSnapshot {
    /// Every shard's stats summed ([`ShardStats::merge`]); with no shards, an empty sum that is
    /// not listening.
    pub fn totals(&self) -> ShardStats {
        let mut totals = ShardStats::new();
        totals.listening = !self.shards.is_empty();
        for shard in &self.shards {
            totals.merge(shard);
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn process() -> ProcessInfo {
        ProcessInfo {
            version: "0.0.0",
            backend: "epoll",
            start_time: SystemTime::UNIX_EPOCH,
            capacity: 100,
        }
    }

    #[test]
    fn snapshot_reads_what_each_shard_published() {
        let registry = Registry::new(2, process());
        let mut stats = ShardStats::new();
        stats.set_connections(7);
        assert!(registry.shard(1).is_some_and(|slot| slot.publish(&stats)));
        assert!(registry.shard(2).is_none());
        registry.set_broker(BrokerStatus {
            kind: "redis",
            state: BrokerState::Connected,
        });

        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(5);
        let snapshot = registry.snapshot(at);
        assert_eq!(snapshot.taken_at, at);
        assert_eq!(snapshot.shards.len(), 2);
        assert_eq!(snapshot.shards[0], ShardStats::new());
        assert_eq!(snapshot.shards[1], stats);
        assert_eq!(snapshot.totals().connections, 7);
        assert_eq!(snapshot.broker.state, BrokerState::Connected);
    }

    #[test]
    fn publish_skips_instead_of_blocking_while_a_reader_holds_the_slot() {
        let slot = ShardSlot::default();
        let held = slot.published.lock();
        assert!(held.is_ok());
        let mut stats = ShardStats::new();
        stats.set_connections(1);
        assert!(!slot.publish(&stats));
        drop(held);
        assert!(slot.publish(&stats));
        assert_eq!(slot.read(), stats);
    }

    #[test]
    fn shards_publish_from_their_own_threads() {
        let registry = std::sync::Arc::new(Registry::new(4, process()));
        let threads: Vec<_> = (0..4)
            .map(|id| {
                let registry = std::sync::Arc::clone(&registry);
                std::thread::spawn(move || {
                    let mut stats = ShardStats::new();
                    stats.set_listening(true);
                    for _ in 0..=id {
                        stats.record_message_received();
                    }
                    // A concurrent reader may make a publish skip; the shard retries.
                    while !registry.shard(id).is_some_and(|slot| slot.publish(&stats)) {}
                })
            })
            .collect();
        for thread in threads {
            assert!(thread.join().is_ok());
        }
        let totals = registry.snapshot(SystemTime::UNIX_EPOCH).totals();
        assert!(totals.listening);
        assert_eq!(totals.messages_received, 1 + 2 + 3 + 4);
    }
}
