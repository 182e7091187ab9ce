//! The hand-off between shards and the scrape: one published [`ShardStats`] per shard and the
//! process facts, read together as a [`MetricsSnapshot`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, TryLockError};
use std::time::SystemTime;

use super::ShardStats;

/// One shard's published stats. The shard writes it with [`ShardSlot::publish`]; readers copy it
/// out under the lock.
#[derive(Debug, Default)]
pub(crate) struct ShardSlot {
    published: Mutex<ShardStats>,
    /// The shard's thread died; readers see [`ShardStats::failed`] from then on.
    failed: AtomicBool,
}

impl ShardSlot {
    /// Replaces the published copy with `stats`. Never blocks: when a reader holds the slot the
    /// shard skips this publish (and returns `false`) and tries again on its next interval.
    pub(crate) fn publish(&self, stats: &ShardStats) -> bool {
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

    /// A copy of the last published stats, marked failed once [`ShardSlot::mark_failed`] ran.
    pub(crate) fn read(&self) -> ShardStats {
        let mut stats = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        stats.failed = self.failed.load(Ordering::Acquire);
        stats
    }

    /// The shard's thread died: its last stats are stale for good, and `/health` must say so
    /// from the next read on. Lock-free, so a panicking thread can call it.
    pub(crate) fn mark_failed(&self) {
        self.failed.store(true, Ordering::Release);
    }
}

/// Facts about the process that do not change while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcessInfo {
    /// The crate version (`CARGO_PKG_VERSION`).
    pub version: &'static str,
    /// The event-loop backend the shards run on (`io_uring`, `epoll`).
    pub backend: &'static str,
    /// When the process started.
    pub start_time: SystemTime,
    /// The connections the process can hold across all shards: the configured maximum, or
    /// fewer when the open-files limit (RLIMIT_NOFILE) leaves room for fewer.
    pub capacity: u64,
    /// The configured maximum of connections (`max_connections`), reported beside `capacity`.
    pub capacity_configured: u64,
}

/// Where every shard publishes and every reader (scrape, `/health`, dashboard feed) reads.
/// Built once at start, shared by `Arc` with every shard.
#[derive(Debug)]
pub(crate) struct Registry {
    shards: Box<[ShardSlot]>,
    process: ProcessInfo,
    /// The broker bridge's state, in a cluster.
    broker: std::sync::OnceLock<std::sync::Arc<crate::cluster::BrokerStatus>>,
}

impl Registry {
    /// A registry for `shards` shards, none listening yet.
    pub(crate) fn new(shards: usize, process: ProcessInfo) -> Self {
        Self {
            shards: (0..shards).map(|_| ShardSlot::default()).collect(),
            process,
            broker: std::sync::OnceLock::new(),
        }
    }

    /// Reports the broker bridge's state from now on.
    pub(crate) fn set_broker(&self, status: std::sync::Arc<crate::cluster::BrokerStatus>) {
        let _ = self.broker.set(status);
    }

    /// The slot shard `id` publishes to; `None` past the number of shards.
    pub(crate) fn shard(&self, id: usize) -> Option<&ShardSlot> {
        self.shards.get(id)
    }

    /// Copies every shard's last published stats and the process facts.
    /// `taken_at` stamps the snapshot (the dashboard computes rates from consecutive stamps).
    pub(crate) fn snapshot(&self, taken_at: SystemTime) -> MetricsSnapshot {
        MetricsSnapshot {
            taken_at,
            shards: self.shards.iter().map(ShardSlot::read).collect(),
            process: self.process.clone(),
            broker: self.broker.get().map(|status| status.snapshot()),
        }
    }
}

/// Everything a scrape reports, copied out of the [`Registry`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MetricsSnapshot {
    /// When the copy was taken.
    pub taken_at: SystemTime,
    /// Each shard's stats, indexed by shard id.
    pub shards: Vec<ShardStats>,
    /// The process facts.
    pub process: ProcessInfo,
    /// The broker bridge, in a cluster.
    pub broker: Option<crate::cluster::BrokerSnapshot>,
}

impl MetricsSnapshot {
    /// Every shard's stats summed ([`ShardStats::merge`]); with no shards, an empty sum that is
    /// not listening.
    pub(crate) fn totals(&self) -> ShardStats {
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
            capacity_configured: 100,
        }
    }

    #[test]
    fn snapshot_reads_what_each_shard_published() {
        let registry = Registry::new(2, process());
        let mut stats = ShardStats::new();
        stats.set_connections(7);
        assert!(registry.shard(1).is_some_and(|slot| slot.publish(&stats)));
        assert!(registry.shard(2).is_none());

        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(5);
        let snapshot = registry.snapshot(at);
        assert_eq!(snapshot.taken_at, at);
        assert_eq!(snapshot.shards.len(), 2);
        assert_eq!(snapshot.shards[0], ShardStats::new());
        assert_eq!(snapshot.shards[1], stats);
        assert_eq!(snapshot.totals().connections, 7);
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
    fn a_failed_shard_reads_failed_whatever_it_published() {
        let slot = ShardSlot::default();
        let mut stats = ShardStats::new();
        stats.set_listening(true);
        assert!(slot.publish(&stats));
        assert!(!slot.read().failed);
        slot.mark_failed();
        assert!(slot.read().failed);
        assert!(slot.publish(&stats));
        assert!(slot.read().failed, "a later publish does not clear it");
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
