//! Presence bookkeeping for one presence channel: which users are members and on how many
//! connections each. A user is announced (`member_added`) when their first connection joins
//! and retired (`member_removed`) when their last one leaves, so a user on three devices is one
//! member, as pusher-js expects.
//!
//! The roster only counts; the frames are built from a [`RosterSnapshot`] (reference-counted
//! names, no copies of the text) so that the lock guarding a roster is released before any
//! JSON is written.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::pusher::frame::Frame;
use crate::pusher::protocol::{self, PresenceMember};

/// One member: how many of its connections are subscribed, and the info the first one gave.
#[derive(Debug, Clone)]
struct Member {
    connections: u32,
    user_info: Option<Arc<str>>,
}

/// The members of one presence channel, ordered by user id so listings are stable.
#[derive(Debug, Clone, Default)]
pub struct PresenceRoster {
    members: BTreeMap<Arc<str>, Member>,
}

/// The members of a roster at one instant, as `(user_id, user_info)` in user-id order: taken
/// under the roster's lock (a reference count per member), encoded after it is released.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RosterSnapshot(Vec<(Arc<str>, Option<Arc<str>>)>);

/// What a shard sends when a connection joins a presence channel.
#[derive(Debug, Clone)]
pub struct PresenceJoin {
    /// For the joining connection: `subscription_succeeded` with the member list (itself
    /// included).
    pub subscription_succeeded: Frame,
    /// For every other subscriber of the channel (exclude the joining socket): present only
    /// when this is the user's first connection on the channel.
    pub member_added: Option<Frame>,
}

impl PresenceJoin {
    /// The frames of `member` joining `channel`, whose roster after the join is `roster`;
    /// `first` says whether this was the user's first connection there.
    pub fn encode(
        channel: &str,
        member: &PresenceMember,
        roster: &RosterSnapshot,
        first: bool,
    ) -> Self {
        Self {
            subscription_succeeded: protocol::presence_subscription_succeeded(
                channel,
                roster.members(),
            ),
            member_added: first.then(|| protocol::member_added(channel, member)),
        }
    }
}

impl RosterSnapshot {
    /// Members as `(user_id, user_info)`, ordered by user id.
    pub fn members(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.0.iter().map(|(id, info)| (&**id, info.as_deref()))
    }
}

impl PresenceRoster {
    /// Records `member` joining on one more connection; whether it is the user's first, so
    /// the caller publishes `member_added` ([`PresenceJoin::encode`]).
    pub fn handle_join(&mut self, member: &PresenceMember) -> bool {
        match self.members.get_mut(&*member.user_id) {
            Some(existing) => {
                existing.connections = existing.connections.saturating_add(1);
                false
            }
            None => {
                let entry = Member {
                    connections: 1,
                    user_info: member.user_info.as_deref().map(Arc::from),
                };
                self.members.insert(Arc::from(&*member.user_id), entry);
                true
            }
        }
    }

    /// Records one connection of `user_id` leaving; whether it was the user's last one there,
    /// so the caller publishes [`protocol::member_removed`].
    pub fn handle_leave(&mut self, user_id: &str) -> bool {
        let Some(member) = self.members.get_mut(user_id) else {
            return false;
        };
        member.connections = member.connections.saturating_sub(1);
        if member.connections > 0 {
            return false;
        }
        self.members.remove(user_id);
        true
    }

    /// The user's connections counted here and its `user_info`, when present.
    pub fn member(&self, user_id: &str) -> Option<(u32, Option<Arc<str>>)> {
        self.members
            .get(user_id)
            .map(|m| (m.connections, m.user_info.clone()))
    }

    /// Distinct users present.
    pub fn user_count(&self) -> usize {
        self.members.len()
    }

    /// Whether `user_id` is present (on any connection).
    pub fn contains(&self, user_id: &str) -> bool {
        self.members.contains_key(user_id)
    }

    /// Whether nobody is present (the shard can drop the roster).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Members as `(user_id, user_info)`, ordered by user id.
    pub fn members(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.members
            .iter()
            .map(|(id, m)| (&**id, m.user_info.as_deref()))
    }

    /// The members now, for encoding once the roster's lock is released.
    pub fn snapshot(&self) -> RosterSnapshot {
        RosterSnapshot(
            self.members
                .iter()
                .map(|(id, m)| (Arc::clone(id), m.user_info.clone()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, info: Option<&str>) -> PresenceMember {
        PresenceMember {
            user_id: id.into(),
            user_info: info.map(Into::into),
        }
    }

    fn join(roster: &mut PresenceRoster, channel: &str, member: &PresenceMember) -> PresenceJoin {
        let first = roster.handle_join(member);
        PresenceJoin::encode(channel, member, &roster.snapshot(), first)
    }

    #[test]
    fn members_are_announced_once_per_user_not_per_device() {
        let mut roster = PresenceRoster::default();
        let alice = member("alice", Some(r#"{"n":1}"#));
        let first = join(&mut roster, "presence-r", &alice);
        assert!(first.member_added.is_some());
        assert!(
            first
                .subscription_succeeded
                .text()
                .contains("\\\"count\\\":1")
        );
        let second_device = join(
            &mut roster,
            "presence-r",
            &member("alice", Some(r#"{"n":2}"#)),
        );
        assert!(second_device.member_added.is_none());
        assert_eq!(roster.user_count(), 1);
        assert!(roster.contains("alice") && !roster.contains("bob"));
        assert_eq!(
            roster.members().collect::<Vec<_>>(),
            [("alice", Some(r#"{"n":1}"#))]
        );

        let bob = join(&mut roster, "presence-r", &member("bob", None));
        assert_eq!(
            bob.member_added,
            Some(protocol::member_added("presence-r", &member("bob", None)))
        );
        assert_eq!(roster.user_count(), 2);
        assert_eq!(
            roster.snapshot().members().collect::<Vec<_>>(),
            [("alice", Some(r#"{"n":1}"#)), ("bob", None)]
        );

        assert!(!roster.handle_leave("alice"));
        assert!(roster.handle_leave("alice"));
        assert!(!roster.handle_leave("alice"));
        assert!(!roster.handle_leave("nobody"));
        assert!(roster.handle_leave("bob"));
        assert!(roster.is_empty());
    }
}
