//! A hashed timer wheel of connection deadlines, counted in ticks since the shard started.
//!
//! No timer object exists per connection: an entry is a key and the tick it is due, 12 bytes in
//! a bucket vector. The shard keeps each connection's real deadline in the connection itself
//! and re-files an entry that fires early (the deadline moved on with activity), so activity
//! never has to find and move an entry.

use crate::driver::ConnKey;

/// A tick count since the shard started.
pub(crate) type Tick = u32;

/// Buckets in the wheel: 1024 ticks of 100 ms cover 102 s, so the usual deadlines (ping 25 s,
/// pong 20 s, handshake 10 s, close 5 s) land within one turn and longer ones (idle 120 s) are
/// looked at once per turn before they are due.
pub(crate) const BUCKETS: usize = 1024;

/// The wheel.
#[derive(Debug)]
pub(crate) struct TimerWheel {
    buckets: Vec<Vec<(ConnKey, Tick)>>,
    /// Every bucket up to and including this tick has been swept.
    swept: Tick,
    /// Scratch for the bucket being swept, kept to reuse its allocation.
    sweeping: Vec<(ConnKey, Tick)>,
    len: usize,
}

impl Default for TimerWheel {
    fn default() -> Self {
        Self {
            buckets: vec![Vec::new(); BUCKETS],
            swept: 0,
            sweeping: Vec::new(),
            len: 0,
        }
    }
}

impl TimerWheel {
    /// Files `key` to fire at `due` (at the next tick when `due` has already passed).
    pub(crate) fn insert(&mut self, key: ConnKey, due: Tick) {
        let due = due.max(self.swept.wrapping_add(1));
        self.buckets[due as usize % BUCKETS].push((key, due));
        self.len += 1;
    }

    /// Entries filed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is filed.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sweeps every bucket up to tick `now`, calling `on_due(key, due)` for each entry whose
    /// tick has come; entries due on a later turn of the wheel stay filed. `on_due` may insert.
    pub(crate) fn advance(&mut self, now: Tick, on_due: &mut dyn FnMut(&mut Self, ConnKey, Tick)) {
        while self.swept < now {
            let tick = self.swept + 1;
            let index = tick as usize % BUCKETS;
            std::mem::swap(&mut self.sweeping, &mut self.buckets[index]);
            let mut sweeping = std::mem::take(&mut self.sweeping);
            self.swept = tick;
            for (key, due) in sweeping.drain(..) {
                if due <= tick {
                    self.len -= 1;
                    on_due(self, key, due);
                } else {
                    self.buckets[index].push((key, due));
                }
            }
            self.sweeping = sweeping;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(slot: u32) -> ConnKey {
        ConnKey {
            slot,
            generation: 1,
        }
    }

    fn fired(wheel: &mut TimerWheel, now: Tick) -> Vec<(u32, Tick)> {
        let mut out = Vec::new();
        wheel.advance(now, &mut |_, key, due| out.push((key.slot, due)));
        out.sort_unstable();
        out
    }

    #[test]
    fn fires_each_entry_at_its_tick_and_not_before() {
        let mut wheel = TimerWheel::default();
        let cases = [
            (1, 5),
            (2, 5),
            (3, 6),
            (4, BUCKETS as Tick + 5),
            (5, 3 * BUCKETS as Tick),
        ];
        for (slot, due) in cases {
            wheel.insert(key(slot), due);
        }
        assert_eq!(fired(&mut wheel, 4), vec![]);
        assert_eq!(fired(&mut wheel, 5), vec![(1, 5), (2, 5)]);
        assert_eq!(fired(&mut wheel, 6), vec![(3, 6)]);
        assert_eq!(
            fired(&mut wheel, BUCKETS as Tick + 4),
            vec![],
            "same bucket, next turn"
        );
        assert_eq!(
            fired(&mut wheel, BUCKETS as Tick + 5),
            vec![(4, BUCKETS as Tick + 5)]
        );
        assert_eq!(wheel.len(), 1);
        assert_eq!(
            fired(&mut wheel, 10 * BUCKETS as Tick),
            vec![(5, 3 * BUCKETS as Tick)]
        );
        assert!(wheel.is_empty());
    }

    #[test]
    fn past_deadline_fires_on_next_tick() {
        let mut wheel = TimerWheel::default();
        assert_eq!(fired(&mut wheel, 10), vec![]);
        wheel.insert(key(7), 3);
        assert_eq!(fired(&mut wheel, 11), vec![(7, 11)]);
    }

    #[test]
    fn callback_can_refile_for_later() {
        let mut wheel = TimerWheel::default();
        wheel.insert(key(1), 2);
        let mut seen = Vec::new();
        wheel.advance(20, &mut |wheel, key, due| {
            seen.push(due);
            if due < 10 {
                wheel.insert(key, due + 5);
            }
        });
        assert_eq!(seen, vec![2, 7, 12]);
        assert!(wheel.is_empty());
    }
}
