//! Fixed-bucket histograms: an observation is one search over a short constant array and one
//! increment, with no allocation, so a shard can record every handshake and every pong.

/// Bucket upper bounds of the WebSocket handshake duration, in microseconds: 100 us to the 10 s
/// default handshake deadline, roughly 1-2.5-5 per decade as Prometheus client defaults.
pub(crate) const HANDSHAKE_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Bucket upper bounds of the ping-to-pong round trip, in microseconds: 250 us (loopback) to the
/// default 20 s pong deadline (docs/operations.md lists both).
pub(crate) const HEARTBEAT_BOUNDS_US: [u64; 16] = [
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000, 20_000_000,
];

/// Bucket upper bounds of event-loop lag, in microseconds: 50 us (a healthy loop turn) to 2.5 s
/// (a shard so late that every deadline it owns slips).
pub(crate) const LOOP_LAG_BOUNDS_US: [u64; 15] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// Bucket upper bounds of a connection's outbox, in bytes: powers of four from 1 KiB around the
/// 1 MiB default outbox cap (docs/operations.md), up to 16 MiB for raised caps.
pub(crate) const OUTBOX_BOUNDS_BYTES: [u64; 9] = [
    1 << 10,
    1 << 12,
    1 << 14,
    1 << 16,
    1 << 18,
    1 << 19,
    1 << 20,
    1 << 22,
    1 << 24,
];

/// A histogram of `u64` observations over `N` fixed upper bounds plus an overflow (`+Inf`)
/// bucket. Counts are kept per bucket (not cumulative) so that an observation touches one word;
/// the exposition makes them cumulative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Histogram<const N: usize> {
    /// INVARIANT: strictly ascending.
    bounds: &'static [u64; N],
    /// `buckets[i]` counts observations `v` with `bounds[i - 1] < v <= bounds[i]`.
    buckets: [u64; N],
    /// Observations above the last bound.
    overflow: u64,
    /// Sum of every observation, saturating.
    sum: u64,
}

impl<const N: usize> Histogram<N> {
    /// An empty histogram over `bounds`, which must be strictly ascending.
    pub(crate) const fn new(bounds: &'static [u64; N]) -> Self {
        Self {
            bounds,
            buckets: [0; N],
            overflow: 0,
            sum: 0,
        }
    }

    /// Records one observation.
    #[inline]
    pub(crate) fn observe(&mut self, value: u64) {
        let index = self.bounds.partition_point(|&bound| bound < value);
        match self.buckets.get_mut(index) {
            Some(count) => *count += 1,
            None => self.overflow += 1,
        }
        self.sum = self.sum.saturating_add(value);
    }

    /// Number of observations.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().sum::<u64>() + self.overflow
    }

    /// Sum of every observation.
    pub(crate) fn sum(&self) -> u64 {
        self.sum
    }

    /// `(upper bound, cumulative count)` per finite bucket, ascending; the `+Inf` bucket is
    /// [`Histogram::count`].
    pub(crate) fn cumulative(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.bounds
            .iter()
            .zip(self.buckets.iter())
            .scan(0u64, |running, (&bound, &count)| {
                *running += count;
                Some((bound, *running))
            })
    }

    /// Adds `other`'s observations to these; both must share bounds, which every histogram of
    /// one field of [`super::ShardStats`] does.
    pub(crate) fn merge(&mut self, other: &Self) {
        debug_assert_eq!(
            self.bounds, other.bounds,
            "merging histograms of different buckets"
        );
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *mine += theirs;
        }
        self.overflow += other.overflow;
        self.sum = self.sum.saturating_add(other.sum);
    }

    /// The observations made after `earlier` was copied from this histogram: what a window
    /// between two snapshots saw. Saturates at zero should `earlier` not be an ancestor.
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        let mut window = *self;
        for (mine, theirs) in window.buckets.iter_mut().zip(earlier.buckets.iter()) {
            *mine = mine.saturating_sub(*theirs);
        }
        window.overflow = window.overflow.saturating_sub(earlier.overflow);
        window.sum = window.sum.saturating_sub(earlier.sum);
        window
    }

    /// Estimates the `q` quantile (0 to 1) by linear interpolation inside the bucket that holds
    /// it, as Prometheus `histogram_quantile` does; a quantile in the overflow bucket answers
    /// the last finite bound. `None` when there are no observations.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut below = 0u64;
        let mut lower = 0u64;
        for (&bound, &in_bucket) in self.bounds.iter().zip(self.buckets.iter()) {
            if in_bucket > 0 && (below + in_bucket) as f64 >= rank {
                let into = (rank - below as f64) / in_bucket as f64;
                return Some(lower as f64 + (bound - lower) as f64 * into);
            }
            below += in_bucket;
            lower = bound;
        }
        Some(lower as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static BOUNDS: [u64; 3] = [10, 100, 1000];

    #[test]
    fn bucket_bounds_are_strictly_ascending() {
        fn ascending(bounds: &[u64]) -> bool {
            bounds.windows(2).all(|pair| pair[0] < pair[1])
        }
        assert!(ascending(&HANDSHAKE_BOUNDS_US));
        assert!(ascending(&HEARTBEAT_BOUNDS_US));
        assert!(ascending(&LOOP_LAG_BOUNDS_US));
        assert!(ascending(&OUTBOX_BOUNDS_BYTES));
    }

    #[test]
    fn observations_land_in_the_bucket_whose_bound_is_inclusive() {
        // (value, expected cumulative counts at 10, 100, 1000, total)
        let cases: [(u64, [u64; 4]); 7] = [
            (0, [1, 1, 1, 1]),
            (10, [1, 1, 1, 1]),
            (11, [0, 1, 1, 1]),
            (100, [0, 1, 1, 1]),
            (101, [0, 0, 1, 1]),
            (1000, [0, 0, 1, 1]),
            (1001, [0, 0, 0, 1]),
        ];
        for (value, expected) in cases {
            let mut histogram = Histogram::new(&BOUNDS);
            histogram.observe(value);
            let cumulative: Vec<u64> = histogram.cumulative().map(|(_, c)| c).collect();
            assert_eq!(cumulative, expected[..3], "value {value}");
            assert_eq!(histogram.count(), expected[3], "value {value}");
            assert_eq!(histogram.sum(), value);
        }
    }

    #[test]
    fn merge_adds_and_since_subtracts() {
        let mut a = Histogram::new(&BOUNDS);
        let mut b = Histogram::new(&BOUNDS);
        a.observe(5);
        b.observe(50);
        b.observe(5000);
        let before = a;
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.sum(), 5055);
        let window = a.since(&before);
        assert_eq!(window, {
            let mut expected = Histogram::new(&BOUNDS);
            expected.observe(50);
            expected.observe(5000);
            expected
        });
        assert_eq!(before.since(&a).count(), 0, "saturates instead of wrapping");
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let mut histogram = Histogram::new(&BOUNDS);
        assert_eq!(histogram.quantile(0.5), None);
        for _ in 0..10 {
            histogram.observe(50);
        }
        // Ten observations in (10, 100]: the median sits half-way through that bucket.
        assert_eq!(histogram.quantile(0.5), Some(55.0));
        assert_eq!(histogram.quantile(1.0), Some(100.0));
        histogram.observe(1_000_000);
        assert_eq!(
            histogram.quantile(1.0),
            Some(1000.0),
            "overflow answers the last bound"
        );
    }
}
