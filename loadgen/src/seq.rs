//! Per-subscriber sequence checking: every delivery of a channel carries the channel's sequence
//! number, and each subscriber tells delivered, duplicated and out-of-order deliveries apart.
//! Losses are what is left: published minus distinct deliveries.

/// How far below the highest sequence seen a late delivery can still be told apart from a
/// duplicate: one bit per sequence in a `u64`.
const WINDOW: u32 = 64;

/// The sequence state of one subscriber on one channel; sequences start at 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqTracker {
    /// Highest sequence delivered so far (0: none yet).
    highest: u32,
    /// INVARIANT: bit `i` is set when sequence `highest - i` was delivered.
    seen: u64,
    /// Distinct sequences delivered.
    pub distinct: u32,
    /// Deliveries of a sequence already delivered.
    pub duplicated: u32,
    /// Deliveries arriving after a higher sequence.
    pub out_of_order: u32,
}

impl SeqTracker {
    /// Takes one delivery. Sequence 0 is not a valid sequence and is ignored.
    pub fn handle_delivery(&mut self, seq: u32) {
        if seq == 0 {
            return;
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = seq;
            self.distinct += 1;
            return;
        }
        let behind = self.highest - seq;
        if behind >= WINDOW {
            // Too old to know whether it came before; a late first delivery is the likelier case.
            self.distinct += 1;
            self.out_of_order += 1;
        } else if self.seen & (1 << behind) != 0 {
            self.duplicated += 1;
        } else {
            self.seen |= 1 << behind;
            self.distinct += 1;
            self.out_of_order += 1;
        }
    }
}

/// Deliveries that never arrived: `expected` (subscribers times events published) minus the
/// distinct deliveries counted. Shared by the per-subscriber tests and the run's report.
pub fn lost(expected: u64, distinct: u64) -> u64 {
    expected.saturating_sub(distinct)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u32]) -> SeqTracker {
        let mut t = SeqTracker::default();
        seqs.iter().for_each(|&s| t.handle_delivery(s));
        t
    }

    /// (deliveries, published, lost, duplicated, out of order)
    #[test]
    fn deliveries_are_classified() {
        let cases: &[(&[u32], u32, u32, u32, u32)] = &[
            (&[1, 2, 3, 4, 5], 5, 0, 0, 0),
            (&[1, 2, 4, 5], 5, 1, 0, 0),
            (&[1, 2, 3, 4], 5, 1, 0, 0),
            (&[1, 2, 2, 3], 3, 0, 1, 0),
            (&[1, 3, 2], 3, 0, 0, 1),
            (&[1, 3, 2, 2], 3, 0, 1, 1),
            (&[], 3, 3, 0, 0),
            (&[0, 1], 1, 0, 0, 0),
            (&[2, 1, 1, 3], 3, 0, 1, 1),
            (&[1, 100, 2], 100, 97, 0, 1),
            (&[1, 200, 100], 200, 197, 0, 1),
        ];
        for (seqs, published, want_lost, duplicated, ooo) in cases {
            let t = run(seqs);
            assert_eq!(
                (
                    lost(u64::from(*published), u64::from(t.distinct)) as u32,
                    t.duplicated,
                    t.out_of_order
                ),
                (*want_lost, *duplicated, *ooo),
                "{seqs:?}"
            );
        }
    }

    /// A drop injected into a long clean stream is caught as lost; a duplicate as duplicated.
    #[test]
    fn injected_drop_and_duplicate_are_caught() {
        let mut t = SeqTracker::default();
        for s in 1..=10_000u32 {
            if s == 4_321 {
                continue;
            }
            t.handle_delivery(s);
            if s == 7_000 {
                t.handle_delivery(s);
            }
        }
        assert_eq!(lost(10_000, u64::from(t.distinct)), 1);
        assert_eq!(t.duplicated, 1);
        assert_eq!(t.out_of_order, 0);
        assert_eq!(t.distinct, 9_999);
    }
}
