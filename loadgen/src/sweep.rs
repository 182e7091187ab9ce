//! Pacing without a timer per connection: a cursor that visits every slot of a slab once per
//! period, for heartbeats, open-loop sends and publish schedules.

/// A cursor that visits every slot once per period, slot `s` at `start + round * period + s *
/// period / n`: heartbeats and open-loop sends for the whole slab without a timer per
/// connection.
#[derive(Debug, Clone, Copy)]
pub struct Sweep {
    /// When slot 0 of round 0 is due.
    pub start_ns: u64,
    /// Length of one round.
    pub period_ns: u64,
    /// Slots visited per round.
    pub n: u64,
    /// Visits made so far.
    pub done: u64,
}

impl Sweep {
    /// Visits due by `now_ns`.
    pub fn due(&self, now_ns: u64) -> u64 {
        if now_ns < self.start_ns || self.n == 0 || self.period_ns == 0 {
            return 0;
        }
        let elapsed = now_ns - self.start_ns;
        let rounds = elapsed / self.period_ns;
        let into =
            u128::from(elapsed % self.period_ns) * u128::from(self.n) / u128::from(self.period_ns);
        rounds * self.n + (into as u64 + 1).min(self.n)
    }

    /// When visit `v` is due.
    pub fn intended(&self, v: u64) -> u64 {
        let (round, slot) = (v / self.n.max(1), v % self.n.max(1));
        self.start_ns + round * self.period_ns + slot * self.period_ns / self.n.max(1)
    }

    /// When the next visit is due.
    pub fn next_ns(&self) -> u64 {
        self.intended(self.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_visits_every_slot_once_per_period() {
        let mut s = Sweep {
            start_ns: 1000,
            period_ns: 100,
            n: 4,
            done: 0,
        };
        let cases = [
            (999, 0),
            (1000, 1),
            (1024, 1),
            (1025, 2),
            (1075, 4),
            (1099, 4),
            (1100, 5),
            (1300, 13),
        ];
        for (now, due) in cases {
            assert_eq!(s.due(now), due, "now {now}");
        }
        let visits: Vec<u64> = (0..6).map(|v| s.intended(v)).collect();
        assert_eq!(visits, [1000, 1025, 1050, 1075, 1100, 1125]);
        s.done = 5;
        assert_eq!(s.next_ns(), 1125);
    }
}
