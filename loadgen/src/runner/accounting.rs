//! The figures of a loop: latencies as they are recorded, the live tick sent every `TICK_NS`,
//! and the outcome merged at the end.

use std::sync::mpsc::Sender;

use super::State;
use crate::cause::Cause;
use crate::plan::{Mode, Plan};
use crate::proto::{ChannelTally, Outcome, TICK_NS, Tick, WorkerMsg};
use crate::record::{Percentiles, encode_hist, ns_to_us, record_us};

impl State {
    pub(super) fn record_latency(&mut self, intended: u64, now: u64) {
        self.latency.record(intended, now);
        record_us(
            &mut self.tick_latency,
            ns_to_us(now.saturating_sub(intended)),
        );
    }

    pub(super) fn emit_ticks(&mut self, now: u64, ticks: &Sender<WorkerMsg>) {
        let due = self.t0 + u64::from(self.next_tick) * TICK_NS;
        if now < due {
            return;
        }
        let idx = u32::try_from((now - self.t0) / TICK_NS).unwrap_or(u32::MAX);
        let p99 = Percentiles::of(&self.tick_latency).p99;
        self.tick_latency.reset();
        let _ = ticks.send(WorkerMsg::Tick(Tick {
            runner: self.runner as u32,
            idx,
            open: self.open_now,
            opened: self.opened_total,
            failed: self.failed_total,
            sent: self.counters.msgs_sent,
            received: self.counters.msgs_received,
            p99_us: p99,
        }));
        self.next_tick = idx.saturating_add(1);
    }

    /// The figures of this loop.
    pub fn outcome(&mut self) -> Outcome {
        let mut channels: std::collections::BTreeMap<u32, ChannelTally> = Default::default();
        if let Mode::Pubsub(p) = &self.plan.mode {
            for (slot, conn) in self.conns.iter().enumerate() {
                if !conn.counted {
                    continue;
                }
                let c = Plan::channel_of(self.global(slot as u32), p.channels);
                let t = channels.entry(c).or_default();
                t.subs += 1;
                t.distinct += u64::from(conn.seq.distinct);
                t.duplicated += u64::from(conn.seq.duplicated);
                t.out_of_order += u64::from(conn.seq.out_of_order);
            }
            if let Some(publisher) = &self.client_pub {
                for c in &publisher.channels {
                    let t = channels.entry(c.id).or_default();
                    t.published += u64::from(c.seq);
                    t.publish_failed += c.failed;
                }
            }
            if let Some(publisher) = &self.publisher {
                for (c, published, failed) in publisher.tallies() {
                    let t = channels.entry(c).or_default();
                    t.published += published;
                    t.publish_failed += failed;
                }
                self.counters.msgs_sent += publisher.requests_sent();
            }
        }
        if matches!(self.plan.mode, Mode::Storm(_)) {
            let never = self.conns.len() as u64 - self.counters.conns_open_at_end;
            for _ in 0..never {
                self.counters.failures.add(Cause::Timeout);
            }
        }
        Outcome {
            counters: self.counters.clone(),
            connect_hist: encode_hist(&self.connect),
            latency_hist: encode_hist(&self.latency.hist),
            channels: channels.into_iter().collect(),
        }
    }
}
