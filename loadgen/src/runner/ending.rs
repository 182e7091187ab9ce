//! The end of a run: draining messages in flight, charging unanswered echoes, closing every
//! connection, and finishing.

use super::{CLOSE_WAIT_NS, Phase, Stage, State};
use crate::link::Act;
use crate::net;
use crate::plan::Mode;
use crate::record::Schedule;

impl State {
    pub(super) fn drained(&self) -> bool {
        match &self.plan.mode {
            Mode::Echo(_) => self
                .conns
                .iter()
                .all(|c| c.phase != Phase::Open || c.sent == c.received),
            Mode::Pubsub(_) => false,
            _ => true,
        }
    }

    pub(super) fn enter_drain(&mut self, now: u64) {
        self.stage = Stage::Draining;
        self.stage_until = now + self.plan.drain_ns;
        self.counters.conns_open_at_end = self.open_now;
        self.counters.rss_bytes = net::resident_bytes().unwrap_or(0);
    }

    /// Charges unanswered echoes, then starts closing every open connection.
    pub(super) fn enter_closing(&mut self, now: u64) {
        if let Mode::Echo(e) = self.plan.mode {
            for slot in 0..self.conns.len() {
                let conn = &self.conns[slot];
                if conn.phase != Phase::Open {
                    continue;
                }
                let missing = u64::from(conn.sent.wrapping_sub(conn.received));
                match (e.interval_ns, self.sweep) {
                    (Some(_), Some(sweep)) if missing > 0 => {
                        // Visits of this slot so far: slot, slot + n, ...; the last `missing` of
                        // them went unanswered (echoes come back in order).
                        let n = sweep.n;
                        let slot = slot as u64;
                        if sweep.done > slot {
                            let last_round = (sweep.done - 1 - slot) / n;
                            let first = (last_round + 1).saturating_sub(missing);
                            let schedule = Schedule {
                                start_ns: sweep.intended(slot),
                                interval_ns: sweep.period_ns,
                            };
                            self.latency
                                .record_unanswered(schedule, first, last_round + 1, now);
                        }
                    }
                    (None, _) if missing > 0 => self.latency.record(conn.stamp_ns, now),
                    _ => {}
                }
            }
        }
        self.stage = Stage::Closing;
        self.stage_until = now + CLOSE_WAIT_NS;
        for slot in 0..self.conns.len() as u32 {
            let key = self.conns[slot as usize].link.key(slot);
            match self.conns[slot as usize].phase {
                Phase::Open => self.start_close(key, now),
                Phase::Connecting | Phase::Upgrading => {
                    self.conns[slot as usize].phase = Phase::Dead;
                    self.acts.push(Act::Close(key));
                }
                _ => {}
            }
        }
        if let Some(p) = self.publisher.as_mut() {
            p.close_all(&mut self.acts);
        }
    }

    pub(super) fn finish(&mut self, _now: u64) {
        for slot in 0..self.conns.len() as u32 {
            let conn = &mut self.conns[slot as usize];
            if matches!(conn.phase, Phase::Closing | Phase::Open) {
                conn.phase = Phase::Dead;
                self.acts.push(Act::Close(conn.link.key(slot)));
            }
        }
        self.open_now = 0;
        self.stage = Stage::Done;
    }
}
