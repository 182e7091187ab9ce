//! What event loops report: live ticks and final results, sent from worker threads to the
//! worker's main thread and from workers to the parent as JSON lines on the worker's stdout.

use serde::{Deserialize, Serialize};

use crate::cause::CauseCounts;
use crate::record::{Hist, decode_hist, encode_hist};

/// Length of one progress tick: fine enough to see a reconnect storm's peak, coarse enough that
/// a few hundred event loops cost the parent nothing.
pub const TICK_NS: u64 = 200_000_000;

/// One line a worker writes to the parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WorkerMsg {
    /// Live figures of one event loop.
    Tick(Tick),
    /// Everything one worker measured, sent once at the end.
    Done(Box<Outcome>),
    /// The worker could not run; the text says why.
    Fatal(String),
}

/// Cumulative figures of one event loop at the end of tick `idx`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    /// Event loop index across the run (`0..workers*threads`).
    pub runner: u32,
    /// Tick number since `t0`.
    pub idx: u32,
    /// Connections open now.
    pub open: u64,
    /// Handshakes completed so far.
    pub opened: u64,
    /// Failed attempts so far (including retried ones).
    pub failed: u64,
    /// Messages sent so far.
    pub sent: u64,
    /// Messages received so far.
    pub received: u64,
    /// 99th percentile message latency during this tick, microseconds (0 when none).
    pub p99_us: u64,
}

/// Deliveries of one channel, for loss accounting across processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelTally {
    /// Subscribers counted (subscribed before publishing started).
    pub subs: u64,
    /// Distinct sequences delivered, summed over counted subscribers.
    pub distinct: u64,
    /// Duplicate deliveries.
    pub duplicated: u64,
    /// Out-of-order deliveries.
    pub out_of_order: u64,
    /// Events published (sequence numbers handed out).
    pub published: u64,
    /// Publishes the API refused or that failed on the way.
    pub publish_failed: u64,
}

impl ChannelTally {
    /// Adds another tally of the same channel.
    pub fn merge(&mut self, o: &Self) {
        self.subs += o.subs;
        self.distinct += o.distinct;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.published += o.published;
        self.publish_failed += o.publish_failed;
    }
}

/// Counters of one event loop, one worker or the whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Connections asked for.
    pub conns_target: u64,
    /// Handshakes completed (reconnects and churn cycles included).
    pub conns_opened: u64,
    /// Connections open at the end of the run, before closing.
    pub conns_open_at_end: u64,
    /// Attempts that failed, by cause (for storm: connections never recovered).
    pub failures: CauseCounts,
    /// Reconnect attempts that failed and were retried (storm), by cause.
    pub retries: CauseCounts,
    /// Open connections that ended before the run did, by cause.
    pub disconnects: CauseCounts,
    /// Messages sent (echo messages, publishes, subscribes, pings).
    pub msgs_sent: u64,
    /// Messages received.
    pub msgs_received: u64,
    /// Connections subscribed (pubsub).
    pub subscribed: u64,
    /// Subscribers whose subscription completed after publishing started: left out of loss
    /// accounting, because they could not have received the first events.
    pub late_subscribers: u64,
    /// `pusher:error` events received.
    pub pusher_errors: u64,
    /// Churn: connections closed cleanly after their hold.
    pub cycles: u64,
    /// Storm: connections dropped at once.
    pub storm_dropped: u64,
    /// Storm: nanoseconds from the drop until every connection of the loop was open again;
    /// the run's figure is the largest of its loops.
    pub recover_ns: Option<u64>,
    /// Storm: when the drop happened, nanoseconds after `t0`.
    pub drop_at_ns: Option<u64>,
    /// Nanoseconds after `t0` when the loop had opened its first `conns_target` connections; the
    /// run's figure is the largest of its loops.
    pub ramp_done_ns: Option<u64>,
    /// Nanoseconds after `t0` of the loop's latest successful handshake.
    pub last_open_ns: u64,
    /// Resident memory of the worker process at the end of the hold, bytes (summed over
    /// workers).
    pub rss_bytes: u64,
    /// Resident memory of the worker processes before any connection opened, bytes.
    pub rss_base_bytes: u64,
}

impl Counters {
    /// Adds another loop's or worker's counters.
    pub fn merge(&mut self, o: &Self) {
        self.conns_target += o.conns_target;
        self.conns_opened += o.conns_opened;
        self.conns_open_at_end += o.conns_open_at_end;
        self.failures.merge(&o.failures);
        self.retries.merge(&o.retries);
        self.disconnects.merge(&o.disconnects);
        self.msgs_sent += o.msgs_sent;
        self.msgs_received += o.msgs_received;
        self.subscribed += o.subscribed;
        self.late_subscribers += o.late_subscribers;
        self.pusher_errors += o.pusher_errors;
        self.cycles += o.cycles;
        self.storm_dropped += o.storm_dropped;
        self.recover_ns = match (self.recover_ns, o.recover_ns) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.drop_at_ns = match (self.drop_at_ns, o.drop_at_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.ramp_done_ns = match (self.ramp_done_ns, o.ramp_done_ns) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.last_open_ns = self.last_open_ns.max(o.last_open_ns);
        self.rss_bytes += o.rss_bytes;
        self.rss_base_bytes += o.rss_base_bytes;
    }
}

/// Everything measured, with histograms in V2 wire form so it crosses a pipe.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Counters.
    pub counters: Counters,
    /// Connect latency (TCP connect plus WebSocket handshake), microseconds, V2 + base64.
    pub connect_hist: String,
    /// Message latency, microseconds, V2 + base64.
    pub latency_hist: String,
    /// Per-channel deliveries (pubsub), by channel number.
    pub channels: Vec<(u32, ChannelTally)>,
}

/// An [`Outcome`] with live histograms, for merging.
#[derive(Debug, Clone)]
pub struct Merged {
    /// Counters.
    pub counters: Counters,
    /// Connect latency, microseconds.
    pub connect: Hist,
    /// Message latency, microseconds.
    pub latency: Hist,
    /// Per-channel deliveries.
    pub channels: std::collections::BTreeMap<u32, ChannelTally>,
}

impl Default for Merged {
    fn default() -> Self {
        Self {
            counters: Counters::default(),
            connect: crate::record::new_hist(),
            latency: crate::record::new_hist(),
            channels: Default::default(),
        }
    }
}

impl Merged {
    /// Adds an outcome read from a pipe.
    pub fn merge(&mut self, o: &Outcome) -> Result<(), String> {
        self.counters.merge(&o.counters);
        self.connect
            .add(decode_hist(&o.connect_hist)?)
            .map_err(|e| format!("{e:?}"))?;
        self.latency
            .add(decode_hist(&o.latency_hist)?)
            .map_err(|e| format!("{e:?}"))?;
        for (c, t) in &o.channels {
            self.channels.entry(*c).or_default().merge(t);
        }
        Ok(())
    }

    /// Back to wire form.
    pub fn to_outcome(&self) -> Outcome {
        Outcome {
            counters: self.counters.clone(),
            connect_hist: encode_hist(&self.connect),
            latency_hist: encode_hist(&self.latency),
            channels: self.channels.iter().map(|(c, t)| (*c, *t)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cause::Cause;
    use crate::record::record_us;

    #[test]
    fn outcomes_merge_across_the_pipe() {
        let mut a = Merged::default();
        a.counters.conns_opened = 3;
        a.counters.failures.add(Cause::Refused);
        a.counters.recover_ns = Some(5);
        record_us(&mut a.connect, 100);
        a.channels.insert(
            1,
            ChannelTally {
                subs: 2,
                distinct: 10,
                published: 5,
                ..Default::default()
            },
        );
        let mut b = a.clone();
        b.counters.recover_ns = Some(9);
        record_us(&mut b.latency, 7);
        let line = serde_json::to_string(&WorkerMsg::Done(Box::new(b.to_outcome()))).unwrap();
        let WorkerMsg::Done(back) = serde_json::from_str(&line).unwrap() else {
            panic!("{line}")
        };
        a.merge(&back).unwrap();
        assert_eq!(a.counters.conns_opened, 6);
        assert_eq!(a.counters.failures.total(), 2);
        assert_eq!(a.counters.recover_ns, Some(9));
        assert_eq!(a.connect.len(), 2);
        assert_eq!(a.latency.len(), 1);
        assert_eq!(a.channels[&1].subs, 4);
        assert_eq!(a.channels[&1].published, 10);
    }
}
