//! A connection's channels: the ids and kinds of what it is subscribed to, inline for the
//! common case of one or two channels, a boxed slice beyond that. Presence memberships keep
//! their user id elsewhere (the session's rarely allocated extras), so an entry is 8 bytes.

use crate::pusher::channels::{ChannelId, ChannelKind};

/// One subscription: the channel and its kind (the kind decides client events and presence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// The channel, as the shard's table numbers it.
    pub channel: ChannelId,
    /// The channel's kind, derived from its name at subscribe time.
    pub kind: ChannelKind,
}

/// Entries held without allocating; most connections have one or two channels.
pub(super) const INLINE: usize = 2;

/// The set of a connection's subscriptions, in subscribe order. Growing past [`INLINE`]
/// reallocates a boxed slice of exactly the needed size: subscribe is rare next to everything
/// else, and the per-connection cap keeps the copies small.
#[derive(Debug, Clone)]
pub(super) enum SubscriptionList {
    /// Up to [`INLINE`] entries; `len` of `items` are used.
    Inline {
        /// Number of used entries.
        len: u8,
        /// Storage; entries past `len` are meaningless.
        items: [Option<Subscription>; INLINE],
    },
    /// More than [`INLINE`] entries.
    Spilled(Box<[Subscription]>),
}

impl Default for SubscriptionList {
    fn default() -> Self {
        Self::Inline {
            len: 0,
            items: [None; INLINE],
        }
    }
}

impl SubscriptionList {
    /// The subscriptions, in subscribe order.
    pub(super) fn iter(&self) -> impl Iterator<Item = Subscription> + '_ {
        let (inline, spilled): (&[Option<Subscription>], &[Subscription]) = match self {
            Self::Inline { items, .. } => (items, &[]),
            Self::Spilled(items) => (&[], items),
        };
        inline
            .iter()
            .flatten()
            .copied()
            .chain(spilled.iter().copied())
    }

    /// Number of subscriptions.
    pub(super) fn len(&self) -> usize {
        match self {
            Self::Inline { len, .. } => usize::from(*len),
            Self::Spilled(items) => items.len(),
        }
    }

    /// Whether there are none.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The subscription to `channel`, if any.
    pub(super) fn find(&self, channel: ChannelId) -> Option<Subscription> {
        self.iter().find(|s| s.channel == channel)
    }

    /// Adds `sub`; the caller has checked it is not present and the cap.
    pub(super) fn push(&mut self, sub: Subscription) {
        match self {
            Self::Inline { len, items } if usize::from(*len) < INLINE => {
                items[usize::from(*len)] = Some(sub);
                *len += 1;
            }
            _ => {
                let all: Box<[Subscription]> = self.iter().chain(std::iter::once(sub)).collect();
                *self = Self::Spilled(all);
            }
        }
    }

    /// Removes the subscription to `channel` and returns it.
    pub(super) fn remove(&mut self, channel: ChannelId) -> Option<Subscription> {
        let found = self.find(channel)?;
        let rest: Vec<Subscription> = self.iter().filter(|s| s.channel != channel).collect();
        *self = Self::default();
        if rest.len() > INLINE {
            *self = Self::Spilled(rest.into_boxed_slice());
        } else {
            for sub in rest {
                self.push(sub);
            }
        }
        Some(found)
    }

    /// Empties the list, returning what it held.
    pub(super) fn take(&mut self) -> Vec<Subscription> {
        let all = self.iter().collect();
        *self = Self::default();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: u32) -> Subscription {
        Subscription {
            channel: ChannelId(id),
            kind: ChannelKind::of("chat"),
        }
    }

    #[test]
    fn grows_spills_and_shrinks_in_order() {
        let mut list = SubscriptionList::default();
        assert!(list.is_empty());
        for id in 0..5 {
            list.push(sub(id));
            assert_eq!(list.len(), id as usize + 1);
        }
        assert!(matches!(list, SubscriptionList::Spilled(_)));
        assert_eq!(list.remove(ChannelId(1)), Some(sub(1)));
        assert_eq!(list.remove(ChannelId(1)), None);
        let ids: Vec<u32> = list.iter().map(|s| s.channel.0).collect();
        assert_eq!(ids, [0, 2, 3, 4]);
        list.remove(ChannelId(0));
        list.remove(ChannelId(4));
        assert!(matches!(list, SubscriptionList::Inline { len: 2, .. }));
        assert_eq!(list.find(ChannelId(3)), Some(sub(3)));
        assert_eq!(list.take().len(), 2);
        assert!(list.is_empty());
    }

    #[test]
    fn stays_small() {
        assert!(
            std::mem::size_of::<SubscriptionList>() <= 24,
            "{}",
            std::mem::size_of::<SubscriptionList>()
        );
    }
}
