//! Presence channels whose joins wait for the other instances' members.
//!
//! When an instance starts listening on a presence channel it knows none of the other
//! instances' members there, so the roster of a join would lack them and they would follow as
//! `member_added` (which clients take for new arrivals). The bridge asks every instance heard
//! from within the lease for its members (`PresenceSync`) and holds the channel's joins until
//! each has answered or [`ROSTER_WAIT`] passed; the shards then answer the held joins with the
//! roster as it is then.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::pusher::AppIndex;

/// Longest a join of a presence channel waits for the other instances' members: an instance
/// that does not answer by then (dead, or its answer lost) is left out of that roster, its
/// members then arrive as `member_added`, and the request is sent once more.
pub(super) const ROSTER_WAIT: Duration = Duration::from_secs(2);

/// One channel's wait.
#[derive(Debug)]
struct Wait {
    until: Instant,
    awaited: HashSet<u64>,
    /// Every local subscriber of the channel is a held join: the members the answers add go
    /// into their rosters, not out as `member_added`.
    quiet: bool,
}

/// The channels being synced.
#[derive(Debug, Default)]
pub(super) struct Holds {
    waits: HashMap<(AppIndex, Box<str>), Wait>,
}

impl Holds {
    /// Starts waiting for `awaited`'s answers about the channel; `false` when there is nobody
    /// to wait for (the channel is ready at once).
    pub(super) fn start(
        &mut self,
        app: AppIndex,
        channel: &str,
        awaited: HashSet<u64>,
        quiet: bool,
        now: Instant,
    ) -> bool {
        if awaited.is_empty() {
            self.waits.remove(&(app, channel.into()));
            return false;
        }
        let wait = Wait {
            until: now + ROSTER_WAIT,
            awaited,
            quiet,
        };
        self.waits.insert((app, channel.into()), wait);
        true
    }

    /// `origin` answered about the channel; `true` when that was the last awaited answer (the
    /// channel is ready).
    pub(super) fn answered(&mut self, app: AppIndex, channel: &str, origin: u64) -> bool {
        let key = (app, Box::<str>::from(channel));
        let Some(wait) = self.waits.get_mut(&key) else {
            return false;
        };
        wait.awaited.remove(&origin);
        if wait.awaited.is_empty() {
            self.waits.remove(&key);
            return true;
        }
        false
    }

    /// Whether presence changes of the channel stay out of its local subscribers' streams for
    /// now (they go into the held rosters).
    pub(super) fn is_quiet(&self, app: AppIndex, channel: &str) -> bool {
        self.waits
            .get(&(app, Box::<str>::from(channel)))
            .is_some_and(|w| w.quiet)
    }

    /// Stops waiting on the channel (nobody here subscribes to it any more).
    pub(super) fn cancel(&mut self, app: AppIndex, channel: &str) {
        self.waits.remove(&(app, Box::<str>::from(channel)));
    }

    /// The earliest end of a wait, if any.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.waits.values().map(|w| w.until).min()
    }

    /// Ends the waits that are over at `now`, or every wait with `now` `None`; their channels.
    pub(super) fn take_expired(&mut self, now: Option<Instant>) -> Vec<(AppIndex, Box<str>)> {
        let over: Vec<(AppIndex, Box<str>)> = self
            .waits
            .iter()
            .filter(|(_, w)| now.is_none_or(|now| w.until <= now))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &over {
            self.waits.remove(key);
        }
        over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: AppIndex = AppIndex(0);

    #[test]
    fn a_wait_ends_with_the_last_answer_or_its_deadline() {
        let (mut holds, now) = (Holds::default(), Instant::now());
        assert!(!holds.start(APP, "presence-a", HashSet::new(), true, now));
        assert!(holds.start(APP, "presence-a", HashSet::from([1, 2]), true, now));
        assert!(holds.is_quiet(APP, "presence-a"));
        assert!(!holds.answered(APP, "presence-a", 1));
        assert!(!holds.answered(APP, "presence-a", 1), "one answer each");
        assert!(holds.answered(APP, "presence-a", 2));
        assert!(!holds.is_quiet(APP, "presence-a"));

        assert!(holds.start(APP, "presence-b", HashSet::from([1]), false, now));
        assert!(!holds.is_quiet(APP, "presence-b"));
        assert_eq!(holds.deadline(), Some(now + ROSTER_WAIT));
        assert!(holds.take_expired(Some(now)).is_empty());
        assert_eq!(
            holds.take_expired(Some(now + ROSTER_WAIT)),
            [(APP, "presence-b".into())]
        );
        assert_eq!(holds.deadline(), None);
    }
}
