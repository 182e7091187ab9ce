//! Presence across instances, kept by the bridge.
//!
//! Each instance announces the users it holds on a presence channel: a user's first local
//! connection there sends `PresenceJoin`, its last one `PresenceLeave`. Another instance counts
//! each instance holding a user as one connection in its hub's roster, so `member_added` goes
//! to its clients only when the user was present nowhere it knew of, `member_removed` only when
//! the last instance holding the user let go, and rosters, `/users` and `user_count` include
//! the other instances' members.
//!
//! Every instance renews a lease on its members with a `Lease` message each third of
//! `presence_lease`; an instance not heard from for a whole lease is taken for dead, and every
//! member only it held is removed, with one `member_removed` per survivor's subscribers. An
//! instance that starts listening on a presence channel asks for everyone's members
//! (`PresenceSync`), and one heard from again after it was taken for dead (or for the first
//! time) gets everyone's `PresenceState`, so members lost to an outage come back.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::pusher::protocol::PresenceMember;
use crate::pusher::{AppIndex, Frame};
use crate::shard::hub::Hub;

use super::wire::Member;

/// Which instances hold one user on one channel, and whether this instance announced it holds
/// the user too.
#[derive(Debug, Default)]
struct Holders {
    remote: HashSet<u64>,
    announced: bool,
}

/// What this instance announces about its own members.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Announce {
    /// The user's first local connection joined.
    Join(Member),
    /// The user's last local connection left.
    Leave(Box<str>),
}

/// The bridge's presence bookkeeping.
#[derive(Debug)]
pub(super) struct Presence {
    /// Per (app, presence channel): each user's holders.
    channels: HashMap<(AppIndex, Box<str>), HashMap<Box<str>, Holders>>,
    /// When each other instance was last heard from.
    leases: HashMap<u64, Instant>,
    lease: Duration,
}

/// A frame for the local subscribers of a channel.
pub(super) type Delivery = (AppIndex, Box<str>, Frame);

impl Presence {
    /// Bookkeeping whose members expire after `lease` without word from their instance.
    pub(super) fn new(lease: Duration) -> Self {
        Self {
            channels: HashMap::new(),
            leases: HashMap::new(),
            lease,
        }
    }

    /// The user's local connections on the channel changed: what to announce, if the user's
    /// first local connection joined or its last left.
    pub(super) fn local_changed(
        &mut self,
        hub: &Hub,
        app: AppIndex,
        channel: &str,
        user_id: &str,
    ) -> Option<Announce> {
        let present = hub.presence_member(app, channel, user_id);
        let users = self.channels.entry((app, channel.into())).or_default();
        let holders = users.entry(user_id.into()).or_default();
        let remote = u32::try_from(holders.remote.len()).unwrap_or(u32::MAX);
        let local = present
            .as_ref()
            .map_or(0, |(n, _)| n.saturating_sub(remote));
        let announce = match (local > 0, holders.announced) {
            (true, false) => {
                holders.announced = true;
                Some(Announce::Join(Member {
                    user_id: user_id.to_owned(),
                    user_info: present.and_then(|(_, info)| info.map(|i| i.to_string())),
                }))
            }
            (false, true) => {
                holders.announced = false;
                Some(Announce::Leave(user_id.into()))
            }
            _ => None,
        };
        self.tidy(app, channel, user_id);
        announce
    }

    /// Drops empty bookkeeping of a user and of a channel.
    fn tidy(&mut self, app: AppIndex, channel: &str, user_id: &str) {
        let key = (app, Box::<str>::from(channel));
        if let Some(users) = self.channels.get_mut(&key) {
            if users
                .get(user_id)
                .is_some_and(|h| h.remote.is_empty() && !h.announced)
            {
                users.remove(user_id);
            }
            if users.is_empty() {
                self.channels.remove(&key);
            }
        }
    }

    /// `origin` was heard from; `true` when it was unknown (new, or taken for dead), so this
    /// instance should tell it its members.
    pub(super) fn heard(&mut self, origin: u64, now: Instant) -> bool {
        self.leases.insert(origin, now).is_none()
    }

    /// `origin` holds the user on the channel: the `member_added` for local subscribers when
    /// the user was present nowhere this instance knew of.
    pub(super) fn remote_join(
        &mut self,
        hub: &Hub,
        origin: u64,
        app: AppIndex,
        channel: &str,
        member: &Member,
    ) -> Option<Frame> {
        let users = self.channels.entry((app, channel.into())).or_default();
        let holders = users.entry(member.user_id.as_str().into()).or_default();
        if !holders.remote.insert(origin) {
            return None;
        }
        let member = PresenceMember {
            user_id: member.user_id.as_str().into(),
            user_info: member.user_info.as_deref().map(Box::from),
        };
        hub.join_presence_remote(app, channel, &member)
    }

    /// `origin` no longer holds the user: the `member_removed` for local subscribers when
    /// nobody holds the user any more.
    pub(super) fn remote_leave(
        &mut self,
        hub: &Hub,
        origin: u64,
        app: AppIndex,
        channel: &str,
        user_id: &str,
    ) -> Option<Frame> {
        let removed = self
            .channels
            .get_mut(&(app, channel.into()))
            .and_then(|users| users.get_mut(user_id))
            .is_some_and(|holders| holders.remote.remove(&origin));
        let frame = removed
            .then(|| hub.leave_presence(app, channel, user_id))
            .flatten();
        self.tidy(app, channel, user_id);
        frame
    }

    /// `origin` holds exactly `members` on the channel: joins for the new ones, leaves for
    /// those it no longer lists.
    pub(super) fn remote_state(
        &mut self,
        hub: &Hub,
        origin: u64,
        app: AppIndex,
        channel: &str,
        members: &[Member],
    ) -> Vec<Frame> {
        let listed: HashSet<&str> = members.iter().map(|m| m.user_id.as_str()).collect();
        let gone: Vec<Box<str>> = self
            .channels
            .get(&(app, channel.into()))
            .map(|users| {
                users
                    .iter()
                    .filter(|(id, h)| h.remote.contains(&origin) && !listed.contains(&***id))
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default();
        let mut frames: Vec<Frame> = gone
            .iter()
            .filter_map(|id| self.remote_leave(hub, origin, app, channel, id))
            .collect();
        frames.extend(
            members
                .iter()
                .filter_map(|m| self.remote_join(hub, origin, app, channel, m)),
        );
        frames
    }

    /// The members this instance holds on the channel, for a `PresenceState`.
    pub(super) fn local_members(&self, hub: &Hub, app: AppIndex, channel: &str) -> Vec<Member> {
        let Some(users) = self.channels.get(&(app, channel.into())) else {
            return Vec::new();
        };
        users
            .iter()
            .filter(|(_, h)| h.announced)
            .map(|(id, _)| Member {
                user_id: id.to_string(),
                user_info: hub
                    .presence_member(app, channel, id)
                    .and_then(|(_, info)| info.map(|i| i.to_string())),
            })
            .collect()
    }

    /// The other instances heard from within the lease: those whose answer a sync awaits.
    pub(super) fn alive(&self) -> HashSet<u64> {
        self.leases.keys().copied().collect()
    }

    /// Presence channels on which this instance announced members.
    pub(super) fn announced_channels(&self) -> Vec<(AppIndex, Box<str>)> {
        self.channels
            .iter()
            .filter(|(_, users)| users.values().any(|h| h.announced))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// This instance stopped listening on the channel: it will not hear the other instances'
    /// leaves, so their members are dropped from its roster.
    pub(super) fn forget_remote(&mut self, hub: &Hub, app: AppIndex, channel: &str) {
        let held: Vec<(Box<str>, Vec<u64>)> = self
            .channels
            .get(&(app, channel.into()))
            .map(|users| {
                users
                    .iter()
                    .map(|(id, h)| (id.clone(), h.remote.iter().copied().collect()))
                    .collect()
            })
            .unwrap_or_default();
        for (user_id, origins) in held {
            for origin in origins {
                let _ = self.remote_leave(hub, origin, app, channel, &user_id);
            }
        }
    }

    /// Removes every member held only by instances not heard from for a whole lease; the
    /// `member_removed` frames for local subscribers.
    pub(super) fn expire(&mut self, hub: &Hub, now: Instant) -> Vec<Delivery> {
        let lease = self.lease;
        let dead: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, heard)| now.saturating_duration_since(**heard) > lease)
            .map(|(origin, _)| *origin)
            .collect();
        let mut frames = Vec::new();
        for origin in dead {
            self.leases.remove(&origin);
            let held: Vec<(AppIndex, Box<str>, Box<str>)> = self
                .channels
                .iter()
                .flat_map(|((app, channel), users)| {
                    users
                        .iter()
                        .filter(|(_, h)| h.remote.contains(&origin))
                        .map(|(id, _)| (*app, channel.clone(), id.clone()))
                })
                .collect();
            for (app, channel, user_id) in held {
                if let Some(frame) = self.remote_leave(hub, origin, app, &channel, &user_id) {
                    frames.push((app, channel, frame));
                }
            }
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pusher::{AppConfig, Apps, PusherConfig};

    const APP: AppIndex = AppIndex(0);
    const CHANNEL: &str = "presence-r";

    fn hub() -> Hub {
        let apps = Apps::new(vec![AppConfig::new("1", "k", "s")]).unwrap_or_else(|e| panic!("{e}"));
        Hub::new(apps, PusherConfig::default(), 1, 1)
    }

    fn member(id: &str) -> Member {
        Member {
            user_id: id.into(),
            user_info: Some(format!("{{\"name\":\"{id}\"}}")),
        }
    }

    fn local(id: &str) -> PresenceMember {
        PresenceMember {
            user_id: id.into(),
            user_info: Some(format!("{{\"name\":\"{id}\"}}").into()),
        }
    }

    #[test]
    fn local_members_are_announced_on_first_join_and_last_leave() {
        let (hub, mut presence) = (hub(), Presence::new(Duration::from_secs(5)));
        hub.join_presence(APP, CHANNEL, &local("u"));
        assert_eq!(
            presence.local_changed(&hub, APP, CHANNEL, "u"),
            Some(Announce::Join(member("u")))
        );
        hub.join_presence(APP, CHANNEL, &local("u"));
        assert_eq!(presence.local_changed(&hub, APP, CHANNEL, "u"), None);
        hub.leave_presence(APP, CHANNEL, "u");
        assert_eq!(presence.local_changed(&hub, APP, CHANNEL, "u"), None);
        hub.leave_presence(APP, CHANNEL, "u");
        assert_eq!(
            presence.local_changed(&hub, APP, CHANNEL, "u"),
            Some(Announce::Leave("u".into()))
        );
        assert!(presence.channels.is_empty(), "nothing kept for nobody");
    }

    #[test]
    fn a_user_held_elsewhere_is_added_once_and_removed_when_the_last_holder_lets_go() {
        let (hub, mut presence) = (hub(), Presence::new(Duration::from_secs(5)));
        assert!(
            presence
                .remote_join(&hub, 7, APP, CHANNEL, &member("u"))
                .is_some()
        );
        assert!(
            presence
                .remote_join(&hub, 7, APP, CHANNEL, &member("u"))
                .is_none()
        );
        assert!(
            presence
                .remote_join(&hub, 8, APP, CHANNEL, &member("u"))
                .is_none()
        );
        // A local connection of the same user: present already, and announced as held here.
        hub.join_presence(APP, CHANNEL, &local("u"));
        assert!(matches!(
            presence.local_changed(&hub, APP, CHANNEL, "u"),
            Some(Announce::Join(_))
        ));
        assert_eq!(hub.users(APP, CHANNEL), ["u"]);
        assert!(presence.remote_leave(&hub, 7, APP, CHANNEL, "u").is_none());
        hub.leave_presence(APP, CHANNEL, "u");
        assert_eq!(
            presence.local_changed(&hub, APP, CHANNEL, "u"),
            Some(Announce::Leave("u".into()))
        );
        assert!(
            presence.remote_leave(&hub, 8, APP, CHANNEL, "u").is_some(),
            "the last holder's leave removes the member"
        );
        assert!(hub.users(APP, CHANNEL).is_empty());
    }

    #[test]
    fn a_silent_instance_loses_its_members_after_the_lease() {
        let (hub, mut presence) = (hub(), Presence::new(Duration::from_secs(5)));
        let t0 = Instant::now();
        assert!(presence.heard(7, t0));
        assert!(!presence.heard(7, t0));
        presence.remote_join(&hub, 7, APP, CHANNEL, &member("a"));
        presence.remote_join(&hub, 7, APP, CHANNEL, &member("b"));
        assert!(presence.heard(9, t0));
        presence.remote_join(&hub, 9, APP, CHANNEL, &member("b"));
        assert!(
            presence
                .expire(&hub, t0 + Duration::from_secs(5))
                .is_empty()
        );
        presence.heard(9, t0 + Duration::from_secs(4));
        let removed = presence.expire(&hub, t0 + Duration::from_secs(6));
        assert_eq!(removed.len(), 1, "b is still held by 9: {removed:?}");
        assert!(removed[0].2.text().contains("member_removed"));
        assert_eq!(hub.users(APP, CHANNEL), ["b"]);
        assert!(
            presence.heard(7, t0 + Duration::from_secs(7)),
            "unknown again"
        );
    }

    #[test]
    fn a_state_replaces_what_its_instance_said_before() {
        let (hub, mut presence) = (hub(), Presence::new(Duration::from_secs(5)));
        presence.remote_join(&hub, 7, APP, CHANNEL, &member("a"));
        let frames = presence.remote_state(&hub, 7, APP, CHANNEL, &[member("b")]);
        assert_eq!(frames.len(), 2, "a removed, b added");
        assert_eq!(hub.users(APP, CHANNEL), ["b"]);
        presence.forget_remote(&hub, APP, CHANNEL);
        assert!(hub.users(APP, CHANNEL).is_empty());
        assert!(presence.channels.is_empty());
    }
}
