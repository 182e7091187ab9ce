//! Presence bookkeeping for one presence channel on one shard: which users are members and on
//! how many connections each. A user is announced (`member_added`) when their first connection
//! joins and retired (`member_removed`) when their last one leaves, so a user on three devices
//! is one member, as pusher-js expects.

use std::collections::BTreeMap;

use crate::pusher::frame::Frame;
use crate::pusher::protocol::{self, PresenceMember};

/// One member: how many of its connections are subscribed, and the info the first one gave.
#[derive(Debug, Clone)]
struct Member {
    connections: u32,
    user_info: Option<Box<str>>,
}

/// The members of one presence channel, ordered by user id so listings are stable.
#[derive(Debug, Clone, Default)]
pub struct PresenceRoster {
    members: BTreeMap<Box<str>, Member>,
}

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

impl PresenceRoster {
    /// Records `member` joining `channel` on one more connection.
    pub fn handle_join(&mut self, channel: &str, member: &PresenceMember) -> PresenceJoin {
        let first = match self.members.get_mut(&member.user_id) {
            Some(existing) => {
                existing.connections = existing.connections.saturating_add(1);
                false
            }
            None => {
                let entry = Member {
                    connections: 1,
                    user_info: member.user_info.clone(),
                };
                self.members.insert(member.user_id.clone(), entry);
                true
            }
        };
        PresenceJoin {
            subscription_succeeded: protocol::presence_subscription_succeeded(
                channel,
                self.members(),
            ),
            member_added: first.then(|| protocol::member_added(channel, member)),
        }
    }

    /// Records one connection of `user_id` leaving `channel`; returns the `member_removed` to
    /// publish when it was the user's last connection there.
    pub fn handle_leave(&mut self, channel: &str, user_id: &str) -> Option<Frame> {
        let member = self.members.get_mut(user_id)?;
        member.connections = member.connections.saturating_sub(1);
        if member.connections > 0 {
            return None;
        }
        self.members.remove(user_id);
        Some(protocol::member_removed(channel, user_id))
    }

    /// Distinct users present.
    pub fn user_count(&self) -> usize {
        self.members.len()
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

    #[test]
    fn members_are_announced_once_per_user_not_per_device() {
        let mut roster = PresenceRoster::default();
        let alice = member("alice", Some(r#"{"n":1}"#));
        let first = roster.handle_join("presence-r", &alice);
        assert!(first.member_added.is_some());
        assert!(
            first
                .subscription_succeeded
                .text()
                .contains("\\\"count\\\":1")
        );
        let second_device = roster.handle_join("presence-r", &member("alice", Some(r#"{"n":2}"#)));
        assert!(second_device.member_added.is_none());
        assert_eq!(roster.user_count(), 1);
        assert_eq!(
            roster.members().collect::<Vec<_>>(),
            [("alice", Some(r#"{"n":1}"#))]
        );

        let bob = roster.handle_join("presence-r", &member("bob", None));
        assert_eq!(
            bob.member_added,
            Some(protocol::member_added("presence-r", &member("bob", None)))
        );
        assert_eq!(roster.user_count(), 2);

        assert_eq!(roster.handle_leave("presence-r", "alice"), None);
        assert_eq!(
            roster.handle_leave("presence-r", "alice"),
            Some(protocol::member_removed("presence-r", "alice"))
        );
        assert_eq!(roster.handle_leave("presence-r", "alice"), None);
        assert_eq!(roster.handle_leave("presence-r", "nobody"), None);
        assert_eq!(
            roster.handle_leave("presence-r", "bob"),
            Some(protocol::member_removed("presence-r", "bob"))
        );
        assert!(roster.is_empty());
    }
}
