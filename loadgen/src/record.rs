//! Latency recording that does not lie: every message latency is measured from the time the
//! message was *meant* to be sent, not from when the sender got round to it.
//!
//! A sender that stalls (a full socket buffer, a late event loop, a server that stopped reading)
//! sends late; timing from the actual send hides the stall behind the sender's own delay, which
//! is coordinated omission. Timing from the intended send time of an open-loop schedule charges
//! the stall to every message that should have gone out during it, and messages never answered
//! by the end of the run are charged their whole wait ([`LatencyRecorder::record_unanswered`]).

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use serde::{Deserialize, Serialize};

/// Histogram of microseconds used for every latency.
pub type Hist = Histogram<u64>;

/// Largest latency a histogram tracks: one hour, in microseconds; longer values saturate.
const MAX_TRACKED_US: u64 = 3_600_000_000;
/// Three significant figures: 0.1 % resolution, the usual HdrHistogram choice.
const SIGNIFICANT_FIGURES: u8 = 3;

/// A fresh latency histogram (1 µs to one hour, 3 significant figures).
pub fn new_hist() -> Hist {
    // Bounds are constants that satisfy the crate's preconditions (low >= 1, high >= 2 * low,
    // sigfig <= 5), so creation cannot fail.
    Histogram::new_with_bounds(1, MAX_TRACKED_US, SIGNIFICANT_FIGURES)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

/// Records one value in microseconds, saturating at the tracked maximum.
pub fn record_us(hist: &mut Hist, micros: u64) {
    hist.saturating_record(micros.clamp(1, MAX_TRACKED_US));
}

/// Nanoseconds to microseconds, rounding up so that a non-zero latency never records as 0.
pub fn ns_to_us(ns: u64) -> u64 {
    ns.div_ceil(1000)
}

/// An open-loop schedule: message `k` of a connection is due at `start_ns + k * interval_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// When message 0 is due (monotonic nanoseconds).
    pub start_ns: u64,
    /// Nanoseconds between two messages.
    pub interval_ns: u64,
}

impl Schedule {
    /// When message `k` is due.
    pub fn intended(&self, k: u64) -> u64 {
        self.start_ns
            .saturating_add(k.saturating_mul(self.interval_ns))
    }
}

/// Message latency, measured against intended send times.
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    /// The recorded latencies, microseconds.
    pub hist: Hist,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self { hist: new_hist() }
    }
}

impl LatencyRecorder {
    /// Records the answer, arriving at `now_ns`, to a message due at `intended_ns`.
    pub fn record(&mut self, intended_ns: u64, now_ns: u64) {
        record_us(&mut self.hist, ns_to_us(now_ns.saturating_sub(intended_ns)));
    }

    /// At the end of a run, charges each message `from..to` of `schedule` that was due but never
    /// answered with its whole wait until `now_ns`. Without this, a server that stops answering
    /// altogether would leave the percentiles untouched.
    pub fn record_unanswered(&mut self, schedule: Schedule, from: u64, to: u64, now_ns: u64) {
        for k in from..to {
            let intended = schedule.intended(k);
            if intended <= now_ns {
                self.record(intended, now_ns);
            }
        }
    }
}

/// Serialises a histogram with the HdrHistogram V2 format, base64-encoded for a text pipe.
pub fn encode_hist(hist: &Hist) -> String {
    let mut bytes = Vec::new();
    // Serialising into a Vec cannot fail for a histogram we built (the error cases are I/O and
    // counts that do not fit the format's 64-bit fields).
    if V2Serializer::new().serialize(hist, &mut bytes).is_err() {
        bytes.clear();
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads back [`encode_hist`]'s output.
pub fn decode_hist(text: &str) -> Result<Hist, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    if bytes.is_empty() {
        return Ok(new_hist());
    }
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("histogram does not deserialise: {e:?}"))
}

/// The figures a report shows for one latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Percentiles {
    /// Reads the figures off a histogram (all zero when it is empty).
    pub fn of(hist: &Hist) -> Self {
        if hist.is_empty() {
            return Self::default();
        }
        Self {
            count: hist.len(),
            p50: hist.value_at_quantile(0.50),
            p90: hist.value_at_quantile(0.90),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            max: hist.max(),
            mean: hist.mean(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// An open-loop sender at 1 kHz for 10 s against a server that answers in 1 ms, except
    /// that from t = 5 s it stops reading for 2 s: the sender's socket buffer fills, nothing
    /// goes out during the stall, and everything queued leaves (and is answered) at t = 7 s.
    /// Timing from the actual send sees one slow message; timing from the intended send sees
    /// the 2,000 messages that should have gone out meanwhile.
    #[test]
    fn stalled_response_shows_in_percentiles() {
        let schedule = Schedule {
            start_ns: 0,
            interval_ns: MS,
        };
        let (stall_from, stall_to) = (5_000 * MS, 7_000 * MS);
        let mut corrected = LatencyRecorder::default();
        let mut naive = new_hist();
        for k in 0..10_000 {
            let intended = schedule.intended(k);
            let actual_send = if (stall_from..stall_to).contains(&intended) {
                stall_to
            } else {
                intended
            };
            let answered = actual_send + MS;
            corrected.record(intended, answered);
            record_us(&mut naive, ns_to_us(answered - actual_send));
        }
        let naive = Percentiles::of(&naive);
        let fixed = Percentiles::of(&corrected.hist);
        assert!(
            naive.p99 <= 1_100,
            "naive timing hides the stall: p99 {} us",
            naive.p99
        );
        assert!(
            fixed.p99 >= 1_900_000,
            "corrected p99 {} us must show the 2 s stall",
            fixed.p99
        );
        assert!(
            fixed.p90 >= 900_000,
            "a fifth of the messages waited: p90 {} us",
            fixed.p90
        );
        assert!(fixed.max >= 2_000_000, "max {} us", fixed.max);
        assert!(
            fixed.p50 <= 1_100,
            "the median stays at the service time: {} us",
            fixed.p50
        );
    }

    /// A server that stops answering for good: the unanswered messages still count.
    #[test]
    fn unanswered_messages_are_charged_their_wait() {
        let schedule = Schedule {
            start_ns: 0,
            interval_ns: MS,
        };
        let mut rec = LatencyRecorder::default();
        for k in 0..900 {
            rec.record(schedule.intended(k), schedule.intended(k) + MS);
        }
        let end = 1_000 * MS;
        rec.record_unanswered(schedule, 900, 1_001, end);
        let p = Percentiles::of(&rec.hist);
        assert_eq!(p.count, 1_001, "messages 0..=1000 are due by t = 1 s");
        assert!(p.p99 >= 80_000, "p99 {} us", p.p99);
        assert!(p.max >= 99_000, "max {} us", p.max);
    }

    #[test]
    fn histograms_survive_the_pipe() {
        let mut h = new_hist();
        for v in [1, 5, 1000, 123_456, 10_000_000] {
            record_us(&mut h, v);
        }
        let back = decode_hist(&encode_hist(&h)).unwrap();
        assert_eq!(Percentiles::of(&back), Percentiles::of(&h));
        assert!(decode_hist("%%%").is_err());
        assert!(decode_hist("AAAA").is_err());
    }
}
