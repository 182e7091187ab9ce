//! What the shards of one process share about Pusher channels: the apps, the peers' mailboxes,
//! and a read-mostly index of channels (which shards have subscribers, how many, presence
//! rosters, cache slots).
//!
//! The index is what makes fan-out targeted and API queries answerable without asking every
//! shard: a publish reads which shards hold subscribers of the channel (one read lock, one hash
//! lookup) and sends the frame only to those; `GET /channels` sums the per-shard counts. The
//! counts are atomics: a subscribe or unsubscribe takes the shared lock, and only creating or
//! dropping a channel's entry and presence joins and leaves take the exclusive one; nothing is
//! written per delivered message. Each app's index is split into [`STRIPES`] maps by a hash
//! of the channel name, each behind its own lock, so a client churning through unique channel
//! names excludes a sixty-fourth of the app's publishes at a time, not all of them; presence
//! frames are encoded after the lock is released. The shards' hot path (delivering a frame to
//! local subscribers) never takes a lock.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::Instant;

use crate::mesh::MailboxSender;
use crate::pusher::api::response::ChannelStats;
use crate::pusher::cache::CACHE_TTL;
use crate::pusher::protocol::{self, PresenceMember};
use crate::pusher::{
    AppConfig, AppIndex, Apps, CacheSlot, Frame, Occupancy, PresenceJoin, PresenceRoster,
    PusherConfig,
};

/// Most shards a socket id can name: the shard index is the last three decimal digits of the
/// socket id's first half.
pub(crate) const MAX_SHARDS: usize = 1000;

/// One channel of one app, across shards.
#[derive(Debug)]
struct ChannelEntry {
    /// Local subscriber count per shard; a shard with 0 gets no copy of a publish. Atomic so
    /// that subscribing to an existing channel needs only the shared (read) lock.
    per_shard: Box<[AtomicU32]>,
    /// The presence roster, for `presence-` channels.
    roster: Option<PresenceRoster>,
}

impl ChannelEntry {
    fn new(shards: usize) -> Self {
        Self {
            per_shard: (0..shards).map(|_| AtomicU32::new(0)).collect(),
            roster: None,
        }
    }

    fn subscriptions(&self) -> u64 {
        self.per_shard
            .iter()
            .map(|n| u64::from(n.load(Ordering::Relaxed)))
            .sum()
    }

    fn is_unused(&self) -> bool {
        self.subscriptions() == 0 && self.roster.as_ref().is_none_or(PresenceRoster::is_empty)
    }
}

/// Maps each app's channel index is split into: enough that churn on one stripe leaves the
/// publishes of the other 63 alone, few enough that listing an app's channels stays cheap.
pub(crate) const STRIPES: usize = 64;

/// One stripe of an app's channels: name to entry.
type Stripe = RwLock<HashMap<Box<str>, ChannelEntry>>;

/// One app's channels, striped by name hash, and how many there are (for `max_channels`).
#[derive(Debug)]
struct AppIndexMap {
    stripes: Box<[Stripe]>,
    /// Entries over all stripes; changed under the stripe's exclusive lock, read without one.
    channels: AtomicU32,
}

impl AppIndexMap {
    fn new() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| RwLock::default()).collect(),
            channels: AtomicU32::new(0),
        }
    }
}

/// One app's cache channels: name to last event.
type AppCaches = Mutex<CacheTable>;

/// Fewest cache entries before expired ones are swept: small tables are not worth a pass.
const MIN_CACHE_SWEEP: usize = 64;

/// One app's cache slots with the time each was last written, swept of expired entries each
/// time the table doubles, so channels that stopped publishing do not stay forever and the
/// sweeps cost O(1) per publish amortised.
#[derive(Debug, Default)]
struct CacheTable {
    slots: HashMap<Box<str>, (CacheSlot, Instant)>,
    sweep_at: usize,
}

/// The process-wide state the shards share. Built once at start, then shared by `Arc`.
#[derive(Debug)]
pub(crate) struct Hub {
    apps: Apps,
    pusher: PusherConfig,
    /// First half of every socket id issued here is `instance * 1000 + shard`.
    instance: u32,
    peers: Box<[OnceLock<MailboxSender>]>,
    /// Per app: channel name to its entry.
    index: Box<[AppIndexMap]>,
    /// Picks a channel name's stripe; randomly keyed so names cannot be chosen to share one.
    stripe_hasher: RandomState,
    /// Per app: cache channel name to its last event. Kept apart from `index` because a cached
    /// event outlives the channel's subscribers (for the slot's TTL).
    caches: Box<[AppCaches]>,
    /// Per app: open Pusher connections, for the app's `max_connections` (4004). Touched on
    /// connect and disconnect only.
    connections: Box<[AtomicU32]>,
    /// The cluster bridge, with a broker configured: told when a shard's count of a channel
    /// crosses zero, so the process subscribes to the channel's subject only while it has
    /// subscribers.
    bridge: OnceLock<crate::cluster::Bridge>,
    /// Per app: bumped whenever a subscription or roster changes while in a cluster, so the
    /// bridge republishes the app's counts only when they moved.
    count_changes: Box<[AtomicU64]>,
}

impl Hub {
    /// A hub for `shards` shards serving `apps`. `instance` tells this process's socket ids
    /// from other instances' (callers pass a random number, see [`random_instance`]).
    pub(crate) fn new(apps: Apps, pusher: PusherConfig, shards: usize, instance: u32) -> Self {
        let n = apps.iter().count();
        Self {
            apps,
            pusher,
            instance: instance % (u32::MAX / MAX_SHARDS as u32),
            peers: (0..shards).map(|_| OnceLock::new()).collect(),
            index: (0..n).map(|_| AppIndexMap::new()).collect(),
            stripe_hasher: RandomState::new(),
            caches: (0..n).map(|_| Mutex::default()).collect(),
            connections: (0..n).map(|_| AtomicU32::new(0)).collect(),
            bridge: OnceLock::new(),
            count_changes: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Joins the process to a cluster: publishes and interest changes go to `bridge` from now.
    pub(crate) fn set_bridge(&self, bridge: crate::cluster::Bridge) {
        let _ = self.bridge.set(bridge);
    }

    /// The cluster bridge, when a broker is configured.
    pub(crate) fn bridge(&self) -> Option<&crate::cluster::Bridge> {
        self.bridge.get()
    }

    /// How many times the app's counts changed, for the bridge (0 outside a cluster).
    pub(crate) fn count_changes(&self, app: AppIndex) -> u64 {
        self.count_changes
            .get(usize::from(app.0))
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// A subscription or roster of the app changed: counted for the bridge, in a cluster.
    fn counts_moved(&self, app: AppIndex) {
        if self.bridge.get().is_some()
            && let Some(n) = self.count_changes.get(usize::from(app.0))
        {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A shard's count of the channel went 0 -> 1 or 1 -> 0: the bridge rechecks the
    /// process-wide count.
    fn interest_changed(&self, app: AppIndex, channel: &str) {
        if let Some(bridge) = self.bridge.get() {
            bridge.interest_changed(app, channel);
        }
    }

    /// The hub of a process configured by `config` with `shards` shards: the configured apps,
    /// or one development app, whose credentials are logged with a warning.
    pub(crate) fn for_config(
        config: &crate::config::Config,
        shards: usize,
    ) -> Result<Self, crate::pusher::apps::AppsError> {
        let apps = if config.apps.is_empty() {
            let app = AppConfig::development(config.dev_app.clone(), entropy());
            tracing::warn!(
                app_id = %app.id,
                key = %app.key,
                secret = %app.secret,
                "no [[apps]] configured: serving one development app (client events and user \
                 authentication on); set RINGCAST_APP_ID, RINGCAST_APP_KEY and \
                 RINGCAST_APP_SECRET or configure [[apps]] for production"
            );
            Apps::new(vec![app])?
        } else {
            Apps::new(config.apps.clone())?
        };
        let pusher = PusherConfig {
            // The server pings after `ping_interval` of silence; telling clients the same
            // keeps them from pinging first.
            activity_timeout: config.ping_interval,
            pong_timeout: config.pong_timeout,
        };
        Ok(Self::new(apps, pusher, shards, random_instance()))
    }

    /// The apps served.
    pub(crate) fn apps(&self) -> &Apps {
        &self.apps
    }

    /// Protocol settings of every connection.
    pub(crate) fn pusher(&self) -> &PusherConfig {
        &self.pusher
    }

    /// Shards sharing this hub.
    pub(crate) fn shards(&self) -> usize {
        self.peers.len()
    }

    /// The first half of socket ids issued by `shard`.
    pub(crate) fn socket_high(&self, shard: usize) -> u32 {
        self.instance * MAX_SHARDS as u32 + (shard % MAX_SHARDS) as u32
    }

    /// Records `shard`'s mailbox, so other shards can send it publishes.
    pub(crate) fn register_peer(&self, shard: usize, mailbox: MailboxSender) {
        if let Some(slot) = self.peers.get(shard) {
            let _ = slot.set(mailbox);
        }
    }

    /// `shard`'s mailbox, once it started.
    pub(crate) fn peer(&self, shard: usize) -> Option<&MailboxSender> {
        self.peers.get(shard)?.get()
    }

    /// Open connections of the app. Shards check and count separately, so an app at its cap
    /// may briefly hold up to one connection per shard more.
    pub(crate) fn app_connections(&self, app: AppIndex) -> u32 {
        self.connections
            .get(usize::from(app.0))
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// A connection of the app opened (`+1`) or closed (`-1`).
    pub(crate) fn count_connection(&self, app: AppIndex, opened: bool) {
        if let Some(n) = self.connections.get(usize::from(app.0)) {
            if opened {
                n.fetch_add(1, Ordering::Relaxed);
            } else {
                n.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn index(&self, app: AppIndex) -> Option<&AppIndexMap> {
        self.index.get(usize::from(app.0))
    }

    /// The app's index and the stripe holding `channel`.
    fn stripe(&self, app: AppIndex, channel: &str) -> Option<(&AppIndexMap, &Stripe)> {
        let index = self.index(app)?;
        let at = self.stripe_hasher.hash_one(channel) as usize % STRIPES;
        Some((index, index.stripes.get(at)?))
    }

    /// `shard` has one more local subscriber of the channel. A channel that has an entry
    /// takes the shared lock only; the exclusive one is for creating the entry.
    pub(crate) fn handle_subscribe(&self, app: AppIndex, channel: &str, shard: usize) {
        let Some((index, stripe)) = self.stripe(app, channel) else {
            return;
        };
        self.counts_moved(app);
        {
            let shared = stripe.read().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = shared.get(channel) {
                let first = entry
                    .per_shard
                    .get(shard)
                    .is_some_and(|n| n.fetch_add(1, Ordering::Relaxed) == 0);
                drop(shared);
                if first {
                    self.interest_changed(app, channel);
                }
                return;
            }
        }
        let first = {
            let mut stripe = stripe.write().unwrap_or_else(|e| e.into_inner());
            let entry = self.entry(index, &mut stripe, channel);
            entry
                .per_shard
                .get(shard)
                .is_some_and(|n| n.fetch_add(1, Ordering::Relaxed) == 0)
        };
        if first {
            self.interest_changed(app, channel);
        }
    }

    /// The channel's entry in its (exclusively locked) stripe, created and counted if new.
    fn entry<'s>(
        &self,
        index: &AppIndexMap,
        stripe: &'s mut HashMap<Box<str>, ChannelEntry>,
        channel: &str,
    ) -> &'s mut ChannelEntry {
        let shards = self.peers.len();
        stripe.entry(channel.into()).or_insert_with(|| {
            index.channels.fetch_add(1, Ordering::Relaxed);
            ChannelEntry::new(shards)
        })
    }

    /// Drops the channel's entry from its (exclusively locked) stripe if nothing uses it.
    fn remove_if_unused(
        index: &AppIndexMap,
        stripe: &mut HashMap<Box<str>, ChannelEntry>,
        channel: &str,
    ) {
        if stripe.get(channel).is_some_and(ChannelEntry::is_unused) {
            stripe.remove(channel);
            index.channels.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// `shard` has one local subscriber of the channel fewer. Only the shard's last one takes
    /// the exclusive lock, to drop the entry once no shard has subscribers.
    pub(crate) fn handle_unsubscribe(&self, app: AppIndex, channel: &str, shard: usize) {
        let Some((index, stripe)) = self.stripe(app, channel) else {
            return;
        };
        self.counts_moved(app);
        let emptied = {
            let shared = stripe.read().unwrap_or_else(|e| e.into_inner());
            shared
                .get(channel)
                .and_then(|entry| entry.per_shard.get(shard))
                .is_some_and(|n| {
                    let before = n.fetch_sub(1, Ordering::Relaxed);
                    if before == 0 {
                        // Never below zero, whatever the caller did.
                        n.store(0, Ordering::Relaxed);
                    }
                    before <= 1
                })
        };
        if emptied {
            // Counts only change under the shared lock, so under the exclusive one they are
            // stable: the entry goes only if it is still unused.
            {
                let mut stripe = stripe.write().unwrap_or_else(|e| e.into_inner());
                Self::remove_if_unused(index, &mut stripe, channel);
            }
            self.interest_changed(app, channel);
        }
    }

    /// Fills `out` with the shards that hold subscribers of the channel.
    pub(crate) fn interested_shards(&self, app: AppIndex, channel: &str, out: &mut Vec<usize>) {
        out.clear();
        let Some((_, stripe)) = self.stripe(app, channel) else {
            return;
        };
        let stripe = stripe.read().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = stripe.get(channel) {
            out.extend(
                entry
                    .per_shard
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.load(Ordering::Relaxed) > 0)
                    .map(|(shard, _)| shard),
            );
        }
    }

    /// What the process holds of the channel and its app, for a subscription's caps: one
    /// shared lock on the channel's stripe.
    pub(crate) fn occupancy(
        &self,
        app: AppIndex,
        channel: &str,
        user_id: Option<&str>,
    ) -> Occupancy {
        let Some((index, stripe)) = self.stripe(app, channel) else {
            return Occupancy::default();
        };
        let app_channels = index.channels.load(Ordering::Relaxed);
        let stripe = stripe.read().unwrap_or_else(|e| e.into_inner());
        let entry = stripe.get(channel);
        let roster = entry.and_then(|entry| entry.roster.as_ref());
        Occupancy {
            channel_exists: entry.is_some(),
            app_channels,
            members: roster.map_or(0, |r| u32::try_from(r.user_count()).unwrap_or(u32::MAX)),
            is_member: roster.zip(user_id).is_some_and(|(r, id)| r.contains(id)),
        }
    }

    /// A connection of `member` joins the presence channel: the roster is process-wide, so
    /// `member_added` goes out once per user whatever shard their connections are on. The
    /// roster is copied (a reference count per member) under the lock and the frames are
    /// encoded after it is released.
    pub(crate) fn join_presence(
        &self,
        app: AppIndex,
        channel: &str,
        member: &PresenceMember,
    ) -> Option<PresenceJoin> {
        let (index, stripe) = self.stripe(app, channel)?;
        self.counts_moved(app);
        let (first, roster) = {
            let mut stripe = stripe.write().unwrap_or_else(|e| e.into_inner());
            let roster = self
                .entry(index, &mut stripe, channel)
                .roster
                .get_or_insert_with(PresenceRoster::default);
            (roster.handle_join(member), roster.snapshot())
        };
        Some(PresenceJoin::encode(channel, member, &roster, first))
    }

    /// A connection of `user_id` leaves the presence channel; the `member_removed` to publish
    /// when it was the user's last one.
    pub(crate) fn leave_presence(
        &self,
        app: AppIndex,
        channel: &str,
        user_id: &str,
    ) -> Option<Frame> {
        let (index, stripe) = self.stripe(app, channel)?;
        self.counts_moved(app);
        let last = {
            let mut stripe = stripe.write().unwrap_or_else(|e| e.into_inner());
            let last = stripe
                .get_mut(channel)?
                .roster
                .as_mut()?
                .handle_leave(user_id);
            Self::remove_if_unused(index, &mut stripe, channel);
            last
        };
        last.then(|| protocol::member_removed(channel, user_id))
    }

    /// A user present on another instance of the cluster joins the channel's roster, counted
    /// as one connection per instance holding it; the `member_added` to deliver locally when
    /// the user was not present here.
    pub(crate) fn join_presence_remote(
        &self,
        app: AppIndex,
        channel: &str,
        member: &PresenceMember,
    ) -> Option<Frame> {
        let (index, stripe) = self.stripe(app, channel)?;
        self.counts_moved(app);
        let first = {
            let mut stripe = stripe.write().unwrap_or_else(|e| e.into_inner());
            self.entry(index, &mut stripe, channel)
                .roster
                .get_or_insert_with(PresenceRoster::default)
                .handle_join(member)
        };
        first.then(|| protocol::member_added(channel, member))
    }

    /// `subscription_succeeded` for a presence channel with its roster as it is now (for a join
    /// whose answer was held while the cluster bridge learned the other instances' members).
    pub(crate) fn presence_subscription_succeeded(&self, app: AppIndex, channel: &str) -> Frame {
        let roster = self
            .stripe(app, channel)
            .and_then(|(_, stripe)| {
                let stripe = stripe.read().unwrap_or_else(|e| e.into_inner());
                stripe
                    .get(channel)
                    .and_then(|entry| entry.roster.as_ref())
                    .map(PresenceRoster::snapshot)
            })
            .unwrap_or_default();
        protocol::presence_subscription_succeeded(channel, roster.members())
    }

    /// The user's connections in the channel's roster (remote instances holding it counted
    /// once each) and its `user_info`, when present.
    pub(crate) fn presence_member(
        &self,
        app: AppIndex,
        channel: &str,
        user_id: &str,
    ) -> Option<(u32, Option<std::sync::Arc<str>>)> {
        let (_, stripe) = self.stripe(app, channel)?;
        let stripe = stripe.read().unwrap_or_else(|e| e.into_inner());
        stripe.get(channel)?.roster.as_ref()?.member(user_id)
    }

    /// Remembers the last event of a cache channel.
    pub(crate) fn cache_publish(&self, app: AppIndex, channel: &str, frame: &Frame, now: Instant) {
        let Some(caches) = self.caches.get(usize::from(app.0)) else {
            return;
        };
        let mut caches = caches.lock().unwrap_or_else(|e| e.into_inner());
        match caches.slots.get_mut(channel) {
            Some((slot, at)) => {
                slot.handle_publish(frame, now);
                *at = now;
            }
            None => {
                let mut slot = CacheSlot::default();
                slot.handle_publish(frame, now);
                caches.slots.insert(channel.into(), (slot, now));
            }
        }
        if caches.slots.len() >= caches.sweep_at.max(MIN_CACHE_SWEEP) {
            caches
                .slots
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < CACHE_TTL);
            caches.sweep_at = caches.slots.len() * 2;
        }
    }

    /// The cached event of a cache channel for a new subscriber, or `pusher:cache_miss`.
    pub(crate) fn cache_replay(&self, app: AppIndex, channel: &str, now: Instant) -> Frame {
        let Some(caches) = self.caches.get(usize::from(app.0)) else {
            return CacheSlot::default().replay(channel, now);
        };
        let mut caches = caches.lock().unwrap_or_else(|e| e.into_inner());
        match caches.slots.get_mut(channel) {
            Some((slot, _)) => slot.replay(channel, now),
            None => CacheSlot::default().replay(channel, now),
        }
    }

    /// Subscriptions and presence users of one channel, across shards.
    pub(crate) fn stats(&self, app: AppIndex, channel: &str) -> ChannelStats {
        let Some((_, stripe)) = self.stripe(app, channel) else {
            return ChannelStats::default();
        };
        let stripe = stripe.read().unwrap_or_else(|e| e.into_inner());
        stripe.get(channel).map(stats_of).unwrap_or_default()
    }

    /// Occupied channels of the app whose names start with `prefix`, sorted by name.
    pub(crate) fn occupied(&self, app: AppIndex, prefix: &str) -> Vec<(String, ChannelStats)> {
        let Some(index) = self.index(app) else {
            return Vec::new();
        };
        let mut list: Vec<(String, ChannelStats)> = Vec::new();
        for stripe in &index.stripes {
            let stripe = stripe.read().unwrap_or_else(|e| e.into_inner());
            list.extend(
                stripe
                    .iter()
                    .filter(|(name, entry)| name.starts_with(prefix) && entry.subscriptions() > 0)
                    .map(|(name, entry)| (name.to_string(), stats_of(entry))),
            );
        }
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// [`Hub::stats`] with the other instances' fresh figures added, in a cluster.
    pub(crate) fn cluster_stats(&self, app: AppIndex, channel: &str) -> ChannelStats {
        let local = self.stats(app, channel);
        match self.bridge.get() {
            Some(bridge) => bridge.remote_counts().merge(app, channel, local),
            None => local,
        }
    }

    /// [`Hub::occupied`] with the channels and figures of the other instances, in a cluster.
    pub(crate) fn cluster_occupied(
        &self,
        app: AppIndex,
        prefix: &str,
    ) -> Vec<(String, ChannelStats)> {
        let local = self.occupied(app, prefix);
        match self.bridge.get() {
            Some(bridge) => bridge.remote_counts().merge_all(app, prefix, local),
            None => local,
        }
    }

    /// The user ids present on a presence channel, ordered.
    pub(crate) fn users(&self, app: AppIndex, channel: &str) -> Vec<String> {
        let Some((_, stripe)) = self.stripe(app, channel) else {
            return Vec::new();
        };
        let stripe = stripe.read().unwrap_or_else(|e| e.into_inner());
        stripe
            .get(channel)
            .and_then(|entry| entry.roster.as_ref())
            .map(|roster| roster.members().map(|(id, _)| id.to_owned()).collect())
            .unwrap_or_default()
    }
}

fn stats_of(entry: &ChannelEntry) -> ChannelStats {
    ChannelStats {
        subscription_count: entry.subscriptions(),
        user_count: entry
            .roster
            .as_ref()
            .map_or(0, |roster| roster.user_count() as u64),
    }
}

/// A random instance number for socket ids, from the kernel's generator (or, failing that,
/// std's randomly keyed hasher). Two instances behind one load balancer collide with a chance
/// of one in four million.
pub(crate) fn random_instance() -> u32 {
    let bytes = entropy();
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// 32 random bytes: the development app's credentials and the instance number come from here.
pub(crate) fn entropy() -> [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    use std::io::Read;
    let mut bytes = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_usize(i);
            chunk.copy_from_slice(&hasher.finish().to_le_bytes());
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(shards: usize) -> Hub {
        let apps = Apps::new(vec![AppConfig::new("1", "k", "s")]).unwrap_or_else(|e| panic!("{e}"));
        Hub::new(apps, PusherConfig::default(), shards, 42)
    }

    const APP: AppIndex = AppIndex(0);

    #[test]
    fn interest_follows_subscriptions_per_shard() {
        let hub = hub(3);
        let mut shards = Vec::new();
        hub.handle_subscribe(APP, "c", 2);
        hub.handle_subscribe(APP, "c", 0);
        hub.handle_subscribe(APP, "c", 2);
        hub.interested_shards(APP, "c", &mut shards);
        assert_eq!(shards, [0, 2]);
        assert_eq!(hub.stats(APP, "c").subscription_count, 3);
        hub.handle_unsubscribe(APP, "c", 2);
        hub.handle_unsubscribe(APP, "c", 0);
        hub.interested_shards(APP, "c", &mut shards);
        assert_eq!(shards, [2]);
        hub.handle_unsubscribe(APP, "c", 2);
        assert!(
            hub.occupied(APP, "").is_empty(),
            "empty channels are forgotten"
        );
    }

    #[test]
    fn presence_counts_users_once_across_shards() {
        let hub = hub(2);
        let member = PresenceMember {
            user_id: "u1".into(),
            user_info: None,
        };
        let first = hub.join_presence(APP, "presence-r", &member);
        assert!(first.is_some_and(|j| j.member_added.is_some()));
        let second = hub.join_presence(APP, "presence-r", &member);
        assert!(second.is_some_and(|j| j.member_added.is_none()));
        hub.handle_subscribe(APP, "presence-r", 0);
        hub.handle_subscribe(APP, "presence-r", 1);
        assert_eq!(hub.stats(APP, "presence-r").user_count, 1);
        assert_eq!(hub.users(APP, "presence-r"), ["u1"]);
        assert!(hub.leave_presence(APP, "presence-r", "u1").is_none());
        assert!(hub.leave_presence(APP, "presence-r", "u1").is_some());
    }

    #[test]
    fn occupancy_counts_the_apps_channels_and_the_rosters_members() {
        let hub = hub(2);
        let nobody = Occupancy::default();
        assert_eq!(hub.occupancy(APP, "a", None), nobody);
        for i in 0..200 {
            hub.handle_subscribe(APP, &format!("c{i}"), i % 2);
        }
        let a = hub.occupancy(APP, "a", None);
        assert_eq!((a.channel_exists, a.app_channels), (false, 200));
        assert!(hub.occupancy(APP, "c7", None).channel_exists);
        let member = |id: &str| PresenceMember {
            user_id: id.into(),
            user_info: None,
        };
        hub.join_presence(APP, "presence-r", &member("u1"));
        hub.join_presence(APP, "presence-r", &member("u2"));
        let r = hub.occupancy(APP, "presence-r", Some("u2"));
        assert_eq!((r.members, r.is_member, r.app_channels), (2, true, 201));
        assert!(!hub.occupancy(APP, "presence-r", Some("u3")).is_member);
        for i in 0..200 {
            hub.handle_unsubscribe(APP, &format!("c{i}"), i % 2);
        }
        hub.leave_presence(APP, "presence-r", "u1");
        hub.leave_presence(APP, "presence-r", "u2");
        assert_eq!(hub.occupancy(APP, "presence-r", None), nobody);
        assert_eq!(
            hub.index[0].channels.load(Ordering::Relaxed),
            0,
            "every dropped entry is uncounted"
        );
        let used = hub.index[0]
            .stripes
            .iter()
            .filter(|s| s.read().is_ok_and(|s| s.capacity() > 0))
            .count();
        assert!(used > STRIPES / 2, "names spread over the stripes: {used}");
    }

    #[test]
    fn churn_holding_one_stripe_leaves_publishes_on_others_alone() {
        let hub = std::sync::Arc::new(hub(2));
        hub.handle_subscribe(APP, "busy", 0);
        let stripe_of = |name: &str| hub.stripe_hasher.hash_one(name) as usize % STRIPES;
        let others: Vec<String> = (0..1000)
            .map(|i| format!("chat-{i}"))
            .filter(|name| stripe_of(name) != stripe_of("busy"))
            .collect();
        for name in &others {
            hub.handle_subscribe(APP, name, 1);
        }
        // A churning shard holds the exclusive lock of "busy"'s stripe (creating or dropping
        // an entry there) while another shard publishes to every other channel.
        let held = hub.index[0].stripes[stripe_of("busy")]
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let (done, finished) = std::sync::mpsc::channel();
        let publisher = {
            let hub = std::sync::Arc::clone(&hub);
            std::thread::spawn(move || {
                let mut shards = Vec::new();
                let reached = others
                    .iter()
                    .filter(|name| {
                        hub.interested_shards(APP, name, &mut shards);
                        shards == [1]
                    })
                    .count();
                let _ = done.send(reached);
            })
        };
        let reached = finished.recv_timeout(std::time::Duration::from_secs(30));
        drop(held);
        let _ = publisher.join();
        // With one lock per app, none of the thousand channels could be looked up meanwhile.
        assert!(
            reached.is_ok_and(|n| n > 900),
            "publishes to other channels during the churn, of 1000: {reached:?}"
        );
    }

    #[test]
    fn expired_cache_slots_are_swept() {
        let hub = hub(1);
        let t0 = Instant::now();
        let frame = crate::pusher::encode_event_frame("e", "cache-0", "{}", None);
        for i in 0..MIN_CACHE_SWEEP - 1 {
            hub.cache_publish(APP, &format!("cache-{i}"), &frame, t0);
        }
        let later = t0 + CACHE_TTL;
        hub.cache_publish(APP, "cache-new", &frame, later);
        let caches = hub.caches[0].lock().unwrap_or_else(|e| e.into_inner());
        let names: Vec<&str> = caches.slots.keys().map(|k| &**k).collect();
        assert_eq!(names, ["cache-new"]);
    }

    #[test]
    fn socket_ids_name_their_shard() {
        let hub = hub(2);
        assert_eq!(hub.socket_high(0), 42_000);
        assert_eq!(hub.socket_high(1), 42_001);
    }

    #[test]
    fn occupied_filters_by_prefix() {
        let hub = hub(1);
        for name in ["private-a", "b", "private-c"] {
            hub.handle_subscribe(APP, name, 0);
        }
        let names: Vec<String> = hub
            .occupied(APP, "private-")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["private-a", "private-c"]);
    }
}
