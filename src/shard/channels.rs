//! A shard's channel table: per app, channel name to a [`ChannelId`], and per id the set of
//! local subscribers (connection keys). Only this shard's connections are in it; the
//! process-wide view (which shards, how many, presence) is the [`super::hub::Hub`]'s.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::driver::ConnKey;
use crate::pusher::{AppIndex, ChannelId, ChannelRegistry, Occupancy};

use super::hub::Hub;

/// One channel with local subscribers.
#[derive(Debug)]
pub(crate) struct LocalChannel {
    /// The app it belongs to.
    pub app: AppIndex,
    /// Its name, shared with the mesh messages that carry its publishes.
    pub name: Arc<str>,
    /// The connections of this shard subscribed to it.
    pub subscribers: HashSet<ConnKey>,
}

/// The table.
#[derive(Debug, Default)]
pub(crate) struct ChannelTable {
    /// Per app (by [`AppIndex`]): name to id.
    ids: Vec<HashMap<Arc<str>, ChannelId>>,
    channels: slab::Slab<LocalChannel>,
}

impl ChannelTable {
    /// The id of the channel, creating its entry.
    pub(crate) fn intern(&mut self, app: AppIndex, name: &str) -> ChannelId {
        let slot = usize::from(app.0);
        if self.ids.len() <= slot {
            self.ids.resize_with(slot + 1, HashMap::new);
        }
        if let Some(id) = self.ids.get(slot).and_then(|ids| ids.get(name)) {
            return *id;
        }
        let name: Arc<str> = name.into();
        let entry = self.channels.vacant_entry();
        let id = ChannelId(entry.key() as u32);
        entry.insert(LocalChannel {
            app,
            name: Arc::clone(&name),
            subscribers: HashSet::new(),
        });
        if let Some(ids) = self.ids.get_mut(slot) {
            ids.insert(name, id);
        }
        id
    }

    /// Channels with at least one local subscriber, and the subscriptions they hold: the
    /// `ringcast_channels` and `ringcast_subscriptions` gauges. Walks the table, so the shard
    /// calls it once a second, not per publish.
    pub(crate) fn counts(&self) -> (u64, u64) {
        self.channels
            .iter()
            .filter(|(_, channel)| !channel.subscribers.is_empty())
            .fold((0, 0), |(channels, subscriptions), (_, channel)| {
                (
                    channels + 1,
                    subscriptions + channel.subscribers.len() as u64,
                )
            })
    }

    /// The id of a channel that has an entry.
    pub(crate) fn find(&self, app: AppIndex, name: &str) -> Option<ChannelId> {
        self.ids.get(usize::from(app.0))?.get(name).copied()
    }

    /// The channel with id `id`.
    pub(crate) fn channel(&self, id: ChannelId) -> Option<&LocalChannel> {
        self.channels.get(id.0 as usize)
    }

    /// Adds a subscriber; the channel's name when it was not one already.
    pub(crate) fn subscribe(&mut self, id: ChannelId, key: ConnKey) -> Option<Arc<str>> {
        let channel = self.channels.get_mut(id.0 as usize)?;
        channel
            .subscribers
            .insert(key)
            .then(|| Arc::clone(&channel.name))
    }

    /// Removes a subscriber; the channel's name when it was one. A channel left without
    /// subscribers is dropped and its id freed.
    pub(crate) fn unsubscribe(&mut self, id: ChannelId, key: ConnKey) -> Option<Arc<str>> {
        let channel = self.channels.get_mut(id.0 as usize)?;
        if !channel.subscribers.remove(&key) {
            return None;
        }
        let name = Arc::clone(&channel.name);
        if channel.subscribers.is_empty() {
            let app = channel.app;
            self.channels.remove(id.0 as usize);
            if let Some(ids) = self.ids.get_mut(usize::from(app.0)) {
                ids.remove(&*name);
            }
        }
        Some(name)
    }

    /// Copies the subscribers of a channel into `out` (cleared first).
    pub(crate) fn subscribers(&self, app: AppIndex, name: &str, out: &mut Vec<ConnKey>) {
        out.clear();
        if let Some(channel) = self.find(app, name).and_then(|id| self.channel(id)) {
            out.extend(channel.subscribers.iter().copied());
        }
    }

    /// The table as one app's sessions see it, with the process-wide `hub` answering for
    /// the app's caps.
    pub(crate) fn for_app<'a>(&'a mut self, app: AppIndex, hub: &'a Hub) -> AppChannels<'a> {
        AppChannels {
            table: self,
            app,
            hub,
        }
    }
}

/// One app's view of the table, handed to [`crate::pusher::Session::handle_text`].
pub(crate) struct AppChannels<'a> {
    table: &'a mut ChannelTable,
    app: AppIndex,
    hub: &'a Hub,
}

impl ChannelRegistry for AppChannels<'_> {
    fn intern(&mut self, name: &str) -> ChannelId {
        self.table.intern(self.app, name)
    }

    fn find(&self, name: &str) -> Option<ChannelId> {
        self.table.find(self.app, name)
    }

    fn occupancy(&self, name: &str, user_id: Option<&str>) -> Occupancy {
        self.hub.occupancy(self.app, name, user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(slot: u32) -> ConnKey {
        ConnKey {
            slot,
            generation: 0,
        }
    }

    #[test]
    fn apps_do_not_share_channels() {
        let mut table = ChannelTable::default();
        let a = table.intern(AppIndex(0), "chat");
        let b = table.intern(AppIndex(1), "chat");
        assert_ne!(a, b);
        assert_eq!(table.find(AppIndex(0), "chat"), Some(a));
        let apps = crate::pusher::Apps::new(vec![crate::pusher::AppConfig::new("1", "k", "s")])
            .unwrap_or_else(|e| panic!("{e}"));
        let hub = Hub::new(apps, crate::pusher::PusherConfig::default(), 1, 1);
        assert_eq!(table.for_app(AppIndex(1), &hub).find("chat"), Some(b));
    }

    #[test]
    fn last_unsubscribe_frees_the_channel() {
        let mut table = ChannelTable::default();
        let id = table.intern(AppIndex(0), "c");
        assert!(table.subscribe(id, key(1)).is_some());
        assert!(
            table.subscribe(id, key(1)).is_none(),
            "already a subscriber"
        );
        assert!(table.subscribe(id, key(2)).is_some());
        let mut out = Vec::new();
        table.subscribers(AppIndex(0), "c", &mut out);
        out.sort_by_key(|k| k.slot);
        assert_eq!(out, [key(1), key(2)]);
        assert!(table.unsubscribe(id, key(1)).is_some());
        assert!(table.unsubscribe(id, key(1)).is_none());
        assert!(table.find(AppIndex(0), "c").is_some());
        assert!(table.unsubscribe(id, key(2)).is_some());
        assert!(table.find(AppIndex(0), "c").is_none());
    }
}
