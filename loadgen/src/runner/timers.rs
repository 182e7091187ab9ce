//! The scenario drivers and their pacing: what is due at `now` (opens, sweeps, storm drops and
//! retries, client events, deadlines) and when the loop must wake next.

use std::cmp::Reverse;
use std::sync::mpsc::Sender;
use std::time::Duration;

use ringcast::ws::OpCode;

use super::{Phase, PusherPhase, Stage, State};
use crate::cause::Cause;
use crate::delivery::delivery_data;
use crate::link::Act;
use crate::plan::{Mode, Plan, PubsubPlan, channel_name};
use crate::proto::{TICK_NS, WorkerMsg};
use crate::publish::{self, Channel};
use crate::sweep::Sweep;

/// Connections opened per loop turn at most, so a late loop catching up on its ramp still
/// serves reads in between (bounded work per turn, like quinn's IO_LOOP_BOUND).
const OPENS_PER_TURN: u64 = 256;
/// Slab visits (heartbeats, open-loop sends) per loop turn at most, for the same reason.
const SWEEP_PER_TURN: u64 = 4096;
/// Longest single wait on the driver, so ticks stay on time.
const MAX_WAIT: Duration = Duration::from_millis(50);

impl State {
    /// Timers: opens due, sweeps, deadlines, stage changes. Returns how long the loop may wait.
    pub fn handle_timeout(&mut self, now: u64, ticks: &Sender<WorkerMsg>) -> Duration {
        self.emit_ticks(now, ticks);
        let end = self.end_ns();
        if self.stage == Stage::Running && now >= end {
            self.enter_drain(now);
        }
        if self.stage == Stage::Running {
            self.open_due(now);
            self.sweep_due(now);
            self.storm_due(now);
            if let Some(p) = self.publisher.as_mut() {
                p.handle_timeout(now, &mut self.acts);
            }
            self.client_publish_due(now);
        }
        self.deadlines_due(now);
        match self.stage {
            Stage::Draining if now >= self.stage_until || self.drained() => self.enter_closing(now),
            Stage::Closing if now >= self.stage_until || self.open_now == 0 => self.finish(now),
            _ => {}
        }
        let next = self.next_wakeup(now);
        Duration::from_nanos(next.saturating_sub(now)).min(MAX_WAIT)
    }

    fn next_wakeup(&self, now: u64) -> u64 {
        let mut next = self.t0 + u64::from(self.next_tick) * TICK_NS;
        if self.stage == Stage::Running {
            next = next.min(self.end_ns());
            if let Some(at) = self.next_open_ns() {
                next = next.min(at);
            }
            if let Some(s) = &self.sweep {
                next = next.min(s.next_ns());
            }
            if let Some(Reverse((at, _))) = self.retries.peek() {
                next = next.min(*at);
            }
            if let Some(p) = &self.publisher {
                next = next.min(p.next_ns());
            }
            if let Some(p) = &self.client_pub {
                next = next.min(p.sweep.next_ns());
            }
        }
        for q in [&self.deadlines, &self.holds, &self.closings] {
            if let Some((at, _)) = q.front() {
                next = next.min(*at);
            }
        }
        next.max(now)
    }

    fn next_open_ns(&self) -> Option<u64> {
        let churn = matches!(self.plan.mode, Mode::Churn { .. });
        if !churn && self.next_open >= self.conns.len() as u64 {
            return None;
        }
        let g = Plan::global_index(self.next_open, self.runner, self.runners);
        Some(self.t0 + self.plan.open_at_ns(g))
    }

    fn open_due(&mut self, now: u64) {
        let churn = matches!(self.plan.mode, Mode::Churn { .. });
        for _ in 0..OPENS_PER_TURN {
            match self.next_open_ns() {
                Some(at) if at <= now => {}
                _ => return,
            }
            let j = self.next_open;
            self.next_open += 1;
            if churn {
                // At most --conns open: an open due while every slot is busy is skipped.
                if let Some(slot) = self.free.pop() {
                    self.start_attempt(slot, now);
                }
            } else {
                self.start_attempt(j as u32, now);
            }
        }
    }

    fn sweep_due(&mut self, now: u64) {
        let Some(mut sweep) = self.sweep else { return };
        let due = sweep.due(now).min(sweep.done + SWEEP_PER_TURN);
        let echo = matches!(self.plan.mode, Mode::Echo(_));
        while sweep.done < due {
            let v = sweep.done;
            sweep.done += 1;
            let slot = (v % sweep.n) as u32;
            let Some(conn) = self.conns.get(slot as usize) else {
                continue;
            };
            if conn.phase != Phase::Open {
                continue;
            }
            let key = conn.link.key(slot);
            if echo {
                self.send_echo(key, sweep.intended(v), now);
            } else if self.plan.pusher {
                if let Some(conn) = self.live(key) {
                    conn.stamp_ns = now;
                }
                self.send_text(key, r#"{"event":"pusher:ping","data":{}}"#);
            } else {
                self.send_frame(key, OpCode::Ping, &now.to_le_bytes());
            }
        }
        self.sweep = Some(sweep);
    }

    /// Client events due by `now`: sequence `k` of channel `c` goes out as `client-seq` from the
    /// channel's publishing subscriber (slot `c / loops` of loop `c % loops`).
    fn client_publish_due(&mut self, now: u64) {
        let Some(mut p) = self.client_pub.take() else {
            return;
        };
        let due = p.sweep.due(now).min(p.sweep.done + SWEEP_PER_TURN);
        while p.sweep.done < due {
            let v = p.sweep.done;
            p.sweep.done += 1;
            let Some(chan) = p.channels.get_mut((v % p.sweep.n) as usize) else {
                continue;
            };
            chan.seq += 1;
            let slot = (u64::from(chan.id) / self.runners) as u32;
            let ready = self
                .conns
                .get(slot as usize)
                .filter(|c| c.pusher == PusherPhase::Subscribed && c.phase == Phase::Open);
            let Some(key) = ready.map(|c| c.link.key(slot)) else {
                chan.failed += 1;
                continue;
            };
            let data = delivery_data(chan.seq, p.sweep.intended(v), p.size);
            let text = format!(
                r#"{{"event":"client-seq","channel":"{}","data":"{data}"}}"#,
                channel_name(chan.id, true)
            );
            self.send_text(key, &text);
        }
        self.client_pub = Some(p);
    }

    fn storm_due(&mut self, now: u64) {
        let Mode::Storm(storm) = self.plan.mode else {
            return;
        };
        if !self.storm_dropped && now >= self.t0 + storm.drop_after_ns {
            self.storm_dropped = true;
            self.counters.drop_at_ns = Some(now - self.t0);
            for slot in 0..self.conns.len() as u32 {
                let conn = &mut self.conns[slot as usize];
                if conn.phase != Phase::Open {
                    continue;
                }
                let key = conn.link.key(slot);
                conn.phase = Phase::Dead;
                conn.ws = None;
                self.open_now -= 1;
                self.counters.storm_dropped += 1;
                // Sockets of a storm run close with SO_LINGER 0: a reset, as from a lost network.
                self.acts.push(Act::Close(key));
                self.schedule_retry(slot, 0, now);
            }
        }
        for _ in 0..OPENS_PER_TURN {
            match self.retries.peek() {
                Some(Reverse((at, _))) if *at <= now => {}
                _ => return,
            }
            let Some(Reverse((_, slot))) = self.retries.pop() else {
                return;
            };
            self.start_attempt(slot, now);
        }
    }

    fn deadlines_due(&mut self, now: u64) {
        while let Some(&(at, key)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            self.fail(key, Cause::Timeout, now);
        }
        while let Some(&(at, key)) = self.holds.front() {
            if at > now {
                break;
            }
            self.holds.pop_front();
            if self.stage == Stage::Running {
                self.start_close(key, now);
            }
        }
        while let Some(&(at, key)) = self.closings.front() {
            if at > now {
                break;
            }
            self.closings.pop_front();
            self.finish_close(key);
        }
    }
}

/// Client-event publishing of one loop: the channels it owns and their sequences.
#[derive(Debug)]
pub(super) struct ClientPublisher {
    pub(super) sweep: Sweep,
    pub(super) channels: Vec<Channel>,
    size: usize,
}

impl ClientPublisher {
    pub(super) fn new(p: &PubsubPlan, t0: u64, runner: u64, runners: u64) -> Option<Self> {
        let channels = publish::owned_channels(p, runner, runners);
        (!channels.is_empty()).then(|| Self {
            sweep: Sweep {
                start_ns: t0 + p.publish_after_ns,
                period_ns: p.publish_interval_ns,
                n: channels.len() as u64,
                done: 0,
            },
            channels,
            size: p.size,
        })
    }
}
