//! A token bucket for per-connection client-event limits: `rate` events per second on
//! average, bursts of up to `rate`. Allocated only for connections that send client events.

use std::time::Instant;

/// Tokens are counted in thousandths so refills at sub-token granularity are not lost.
const MILLI: u64 = 1000;

/// A token bucket; see the module docs.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens left, in thousandths.
    milli_tokens: u64,
    /// When `milli_tokens` was last brought up to date.
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket at `now` for `rate` tokens per second.
    pub fn full(rate: u32, now: Instant) -> Self {
        Self {
            milli_tokens: u64::from(rate) * MILLI,
            updated: now,
        }
    }

    /// Takes one token if there is one; `false` means the event must be refused.
    pub fn try_take(&mut self, rate: u32, now: Instant) -> bool {
        let capacity = u64::from(rate) * MILLI;
        let elapsed_ms = now.saturating_duration_since(self.updated).as_millis();
        let refill = u64::try_from(elapsed_ms)
            .unwrap_or(u64::MAX)
            .saturating_mul(u64::from(rate));
        self.milli_tokens = self.milli_tokens.saturating_add(refill).min(capacity);
        self.updated = now.max(self.updated);
        if self.milli_tokens >= MILLI {
            self.milli_tokens -= MILLI;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(10, t0);
        let taken = (0..15).filter(|_| bucket.try_take(10, t0)).count();
        assert_eq!(taken, 10);
        assert!(!bucket.try_take(10, t0 + Duration::from_millis(99)));
        assert!(bucket.try_take(10, t0 + Duration::from_millis(100)));
        assert!(!bucket.try_take(10, t0 + Duration::from_millis(150)));
        let later = t0 + Duration::from_secs(60);
        let taken = (0..15).filter(|_| bucket.try_take(10, later)).count();
        assert_eq!(taken, 10, "refill is capped at one burst");
    }

    #[test]
    fn zero_rate_refuses_everything() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(0, t0);
        assert!(!bucket.try_take(0, t0 + Duration::from_secs(5)));
    }
}
