//! Channel counts across instances, for the HTTP API's `subscription_count`, `user_count` and
//! `occupied`.
//!
//! Each instance publishes, per app, a snapshot of its occupied channels with their local
//! subscription counts and roster sizes (`Counts`, on the app's user subject): soon after its
//! counts change and every third of `presence_lease` regardless. A snapshot longer than
//! [`MAX_PART_BYTES`] travels in parts under one generation number and replaces the instance's
//! previous figures once its last part is in. Peers keep the last complete snapshot of each
//! instance and drop it once the instance has not sent one for a whole lease, so a dead
//! instance's subscribers stop counting within the lease. A query answers the local figures
//! plus the sum of the fresh remote ones.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::pusher::AppIndex;
use crate::pusher::api::response::ChannelStats;

/// Longest body of one `Counts` part, well under NATS's default 1 MiB payload limit.
pub(super) const MAX_PART_BYTES: usize = 60 * 1024;

/// One channel's figures as an instance reports them: its local subscriptions, and its
/// roster's size (already cluster-wide on an instance listening on a presence channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChannelCount {
    /// The channel.
    pub(crate) channel: String,
    /// Subscriptions on the reporting instance.
    pub(crate) subscriptions: u64,
    /// Members in the reporting instance's roster (0 for channels other than presence).
    pub(crate) users: u64,
}

/// One instance's figures of an app: channel to (subscriptions, users).
type Figures = HashMap<Box<str>, (u64, u64)>;

/// What one instance reported for one app.
#[derive(Debug, Default)]
struct Reported {
    /// When its last complete snapshot arrived.
    heard: Option<Instant>,
    /// Its last complete snapshot.
    current: Figures,
    /// A snapshot whose last part has not arrived yet, with its generation.
    pending: Option<(u64, Figures)>,
}

/// The other instances' last figures, written by the bridge and read by the shards' API.
#[derive(Debug)]
pub(crate) struct RemoteCounts {
    lease: Duration,
    reported: Mutex<HashMap<(u64, AppIndex), Reported>>,
}

impl RemoteCounts {
    /// Figures that count for `lease` after they arrived.
    pub(super) fn new(lease: Duration) -> Self {
        Self {
            lease,
            reported: Mutex::new(HashMap::new()),
        }
    }

    /// One part of `origin`'s snapshot for `app`; the snapshot replaces the previous one once
    /// its `last` part arrives. A part of another generation than the one being collected
    /// starts over (an earlier snapshot's parts were lost or overtaken).
    pub(super) fn receive(
        &self,
        origin: u64,
        app: AppIndex,
        generation: u64,
        last: bool,
        channels: Vec<ChannelCount>,
        now: Instant,
    ) {
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = reported.entry((origin, app)).or_default();
        let pending = match &mut entry.pending {
            Some((g, pending)) if *g == generation => pending,
            slot => &mut slot.insert((generation, HashMap::new())).1,
        };
        for count in channels {
            pending.insert(count.channel.into(), (count.subscriptions, count.users));
        }
        if last {
            entry.current = entry.pending.take().map(|(_, p)| p).unwrap_or_default();
            entry.heard = Some(now);
        }
    }

    /// Forgets every instance whose last snapshot is older than the lease.
    pub(super) fn expire(&self, now: Instant) {
        let lease = self.lease;
        self.reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, r| {
                r.heard
                    .is_none_or(|h| now.saturating_duration_since(h) <= lease)
            });
    }

    fn fresh(&self, reported: &Reported, now: Instant) -> bool {
        reported
            .heard
            .is_some_and(|h| now.saturating_duration_since(h) <= self.lease)
    }

    /// One channel's figures: `local` plus the fresh remote subscriptions. The user count is
    /// the local roster's when this instance has subscribers (it listens on the channel, so
    /// its roster holds every instance's members), else the largest remote roster.
    pub(crate) fn merge(&self, app: AppIndex, channel: &str, local: ChannelStats) -> ChannelStats {
        let now = Instant::now();
        let reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        let mut stats = local;
        for ((_, of), r) in reported.iter() {
            if *of != app || !self.fresh(r, now) {
                continue;
            }
            if let Some(&(subscriptions, users)) = r.current.get(channel) {
                stats.subscription_count += subscriptions;
                if local.subscription_count == 0 {
                    stats.user_count = stats.user_count.max(users);
                }
            }
        }
        stats
    }

    /// The occupied channels of `app` starting with `prefix`, local and remote, each merged as
    /// [`RemoteCounts::merge`] does, sorted by name.
    pub(crate) fn merge_all(
        &self,
        app: AppIndex,
        prefix: &str,
        local: Vec<(String, ChannelStats)>,
    ) -> Vec<(String, ChannelStats)> {
        let now = Instant::now();
        let mut merged: BTreeMap<String, (ChannelStats, bool)> = local
            .into_iter()
            .map(|(name, stats)| (name, (stats, stats.subscription_count > 0)))
            .collect();
        let reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        for ((_, of), r) in reported.iter() {
            if *of != app || !self.fresh(r, now) {
                continue;
            }
            for (channel, &(subscriptions, users)) in &r.current {
                if subscriptions == 0 || !channel.starts_with(prefix) {
                    continue;
                }
                let (stats, held_here) = merged.entry(channel.to_string()).or_default();
                stats.subscription_count += subscriptions;
                if !*held_here {
                    stats.user_count = stats.user_count.max(users);
                }
            }
        }
        merged
            .into_iter()
            .map(|(name, (stats, _))| (name, stats))
            .collect()
    }
}

/// Splits a snapshot into parts of at most about [`MAX_PART_BYTES`] of channel data each; an
/// empty snapshot is one empty part, so it still replaces the previous figures.
pub(super) fn parts(channels: Vec<ChannelCount>) -> Vec<Vec<ChannelCount>> {
    let mut parts = vec![Vec::new()];
    let mut bytes = 0;
    for count in channels {
        // A channel's name, its length and two figures.
        let size = count.channel.len() + 18;
        if bytes + size > MAX_PART_BYTES && parts.last().is_some_and(|p| !p.is_empty()) {
            parts.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(part) = parts.last_mut() {
            part.push(count);
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: AppIndex = AppIndex(0);

    fn count(channel: &str, subscriptions: u64, users: u64) -> ChannelCount {
        ChannelCount {
            channel: channel.into(),
            subscriptions,
            users,
        }
    }

    fn stats(subscription_count: u64, user_count: u64) -> ChannelStats {
        ChannelStats {
            subscription_count,
            user_count,
        }
    }

    #[test]
    fn fresh_remote_figures_add_to_the_local_ones() {
        let counts = RemoteCounts::new(Duration::from_secs(5));
        let now = Instant::now();
        counts.receive(7, APP, 1, true, vec![count("a", 2, 0)], now);
        counts.receive(8, APP, 1, true, vec![count("a", 3, 0)], now);
        counts.receive(9, AppIndex(1), 1, true, vec![count("a", 50, 0)], now);
        assert_eq!(counts.merge(APP, "a", stats(1, 0)), stats(6, 0));
        assert_eq!(counts.merge(APP, "b", stats(1, 0)), stats(1, 0));
        // A new snapshot replaces the old one.
        counts.receive(7, APP, 2, true, vec![count("b", 1, 0)], now);
        assert_eq!(counts.merge(APP, "a", stats(0, 0)), stats(3, 0));
        let listed = counts.merge_all(APP, "", vec![("c".into(), stats(4, 0))]);
        assert_eq!(
            listed,
            [
                ("a".to_owned(), stats(3, 0)),
                ("b".to_owned(), stats(1, 0)),
                ("c".to_owned(), stats(4, 0))
            ]
        );
        assert_eq!(counts.merge_all(APP, "b", Vec::new()).len(), 1);
    }

    #[test]
    fn the_user_count_is_the_local_roster_or_the_largest_remote_one() {
        let counts = RemoteCounts::new(Duration::from_secs(5));
        let now = Instant::now();
        counts.receive(7, APP, 1, true, vec![count("presence-r", 2, 3)], now);
        counts.receive(8, APP, 1, true, vec![count("presence-r", 1, 2)], now);
        assert_eq!(counts.merge(APP, "presence-r", stats(1, 3)), stats(4, 3));
        assert_eq!(counts.merge(APP, "presence-r", stats(0, 0)), stats(3, 3));
    }

    #[test]
    fn a_snapshot_in_parts_counts_once_complete() {
        let counts = RemoteCounts::new(Duration::from_secs(5));
        let now = Instant::now();
        counts.receive(7, APP, 1, true, vec![count("old", 1, 0)], now);
        counts.receive(7, APP, 2, false, vec![count("a", 1, 0)], now);
        assert_eq!(counts.merge(APP, "old", stats(0, 0)), stats(1, 0));
        assert_eq!(counts.merge(APP, "a", stats(0, 0)), stats(0, 0));
        // A part of a later generation drops the unfinished one.
        counts.receive(7, APP, 3, false, vec![count("b", 1, 0)], now);
        counts.receive(7, APP, 3, true, vec![count("c", 1, 0)], now);
        let names: Vec<String> = counts
            .merge_all(APP, "", Vec::new())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["b", "c"]);
    }

    #[test]
    fn figures_older_than_the_lease_stop_counting() {
        let counts = RemoteCounts::new(Duration::from_secs(5));
        let then = Instant::now() - Duration::from_secs(6);
        counts.receive(7, APP, 1, true, vec![count("a", 2, 0)], then);
        assert_eq!(counts.merge(APP, "a", stats(1, 0)), stats(1, 0));
        assert!(counts.merge_all(APP, "", Vec::new()).is_empty());
        counts.expire(Instant::now());
        assert!(counts.reported.lock().expect("lock").is_empty());
    }

    #[test]
    fn long_snapshots_are_cut_into_parts() {
        assert_eq!(parts(Vec::new()), [Vec::new()]);
        let name = "x".repeat(1000);
        let many: Vec<ChannelCount> = (0..200)
            .map(|n| count(&format!("{name}{n}"), 1, 0))
            .collect();
        let cut = parts(many);
        assert!(cut.len() > 1);
        assert_eq!(cut.iter().map(Vec::len).sum::<usize>(), 200);
        for part in &cut {
            let bytes: usize = part.iter().map(|c| c.channel.len() + 18).sum();
            assert!(bytes <= MAX_PART_BYTES, "{bytes}");
        }
    }
}
