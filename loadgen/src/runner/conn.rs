//! The per-connection state machine: connect, upgrade, open, close, fail and (storm) retry.

use std::cmp::Reverse;

use bytes::Bytes;
use ringcast::driver::ConnKey;
use ringcast::ws::{self, CloseCode, Role};

use super::{CLOSE_WAIT_NS, Phase, PusherPhase, Stage, State};
use crate::cause::Cause;
use crate::link::Act;
use crate::plan::Mode;
use crate::record::{ns_to_us, record_us};
use crate::wire::{Handshake, Upgrade, handle_upgrade_response};

/// Largest upgrade answer head accepted; the server's is about 130 bytes.
const MAX_UPGRADE_HEAD: usize = 8 * 1024;

impl State {
    /// Starts an attempt on `slot`.
    pub(super) fn start_attempt(&mut self, slot: u32, now: u64) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        conn.link.generation = conn.link.generation.wrapping_add(1);
        conn.link.reset();
        conn.phase = Phase::Connecting;
        conn.pusher = PusherPhase::Connecting;
        conn.stamp_ns = now;
        conn.ws = None;
        conn.handshake = None;
        let key = conn.link.key(slot);
        self.deadlines
            .push_back((now + self.plan.connect_timeout_ns, key));
        self.acts.push(Act::Connect(key));
    }

    /// The socket for `key` could not be created or connected.
    pub fn handle_connect_error(&mut self, key: ConnKey, errno: i32, now: u64) {
        self.fail(key, Cause::of_errno(errno), now);
    }

    /// A connect finished.
    pub fn handle_connected(&mut self, key: ConnKey, result: std::io::Result<()>, now: u64) {
        if let Some(p) = self.publisher.as_mut().filter(|p| p.owns_slot(key.slot)) {
            p.handle_connected(key, result, now, &mut self.acts);
            return;
        }
        let Some(conn) = self.live(key) else { return };
        if conn.phase != Phase::Connecting {
            return;
        }
        if let Err(e) = result {
            let cause = Cause::of_errno(e.raw_os_error().unwrap_or(0));
            self.fail(key, cause, now);
            return;
        }
        let hs = Box::new(Handshake::new(&mut self.rng));
        let g = self.global(key.slot);
        let target = &self.plan.targets[(g % self.plan.targets.len() as u64) as usize];
        let mut req = Vec::with_capacity(256);
        hs.write_request(target, &mut req);
        let Some(conn) = self.live(key) else { return };
        conn.handshake = Some(hs);
        conn.phase = Phase::Upgrading;
        self.acts.push(Act::Send(key, Bytes::from(req)));
    }

    /// An attempt failed: count it, close the socket, and retry (storm), free the slot (churn)
    /// or give up on it.
    pub(super) fn fail(&mut self, key: ConnKey, cause: Cause, now: u64) {
        let storm = matches!(self.plan.mode, Mode::Storm(_));
        let Some(conn) = self.live(key) else { return };
        if !matches!(conn.phase, Phase::Connecting | Phase::Upgrading) {
            return;
        }
        conn.phase = Phase::Dead;
        conn.handshake = None;
        let attempt = conn.attempt;
        self.acts.push(Act::Close(key));
        self.failed_total += 1;
        if storm {
            self.counters.retries.add(cause);
            self.schedule_retry(key.slot, attempt.saturating_add(1), now);
        } else {
            self.counters.failures.add(cause);
            if matches!(self.plan.mode, Mode::Churn { .. }) {
                self.free.push(key.slot);
            }
        }
    }

    /// Storm: reconnect `slot` after a uniformly random wait in `[0, min(max, base * 2^attempt)]`
    /// (exponential backoff with full jitter).
    pub(super) fn schedule_retry(&mut self, slot: u32, attempt: u8, now: u64) {
        let Mode::Storm(storm) = self.plan.mode else {
            return;
        };
        let ceiling = storm
            .backoff_base_ns
            .saturating_mul(1u64 << attempt.min(40))
            .min(storm.backoff_max_ns);
        let at = now + self.rng.u64(0..=ceiling);
        if let Some(conn) = self.conns.get_mut(slot as usize) {
            conn.phase = Phase::Backoff;
            conn.attempt = attempt;
        }
        self.retries.push(Reverse((at, slot)));
    }

    /// Bytes arrived on `key`.
    pub fn handle_recv(&mut self, key: ConnKey, data: &mut [u8], now: u64) {
        if let Some(p) = self.publisher.as_mut().filter(|p| p.owns_slot(key.slot)) {
            p.handle_recv(key, data, now, &mut self.acts);
            return;
        }
        let Some(conn) = self.live(key) else { return };
        match conn.phase {
            Phase::Upgrading => self.handle_upgrade(key, data, now),
            Phase::Open | Phase::Closing => self.handle_frames(key, data, now),
            _ => {}
        }
    }

    fn handle_upgrade(&mut self, key: ConnKey, data: &mut [u8], now: u64) {
        let Some(conn) = self.live(key) else { return };
        let Some(hs) = conn.handshake.as_mut() else {
            return;
        };
        let outcome = if hs.partial.is_empty() {
            handle_upgrade_response(data, &hs.key)
        } else {
            hs.partial.extend_from_slice(data);
            handle_upgrade_response(&hs.partial, &hs.key)
        };
        match outcome {
            Upgrade::Partial => {
                if hs.partial.is_empty() {
                    hs.partial.extend_from_slice(data);
                }
                if hs.partial.len() > MAX_UPGRADE_HEAD {
                    self.fail(key, Cause::BadHandshake, now);
                }
            }
            Upgrade::Rejected(_) => self.fail(key, Cause::Rejected, now),
            Upgrade::Malformed => self.fail(key, Cause::BadHandshake, now),
            Upgrade::Accepted { head_len } => {
                let hs = conn.handshake.take();
                conn.phase = Phase::Open;
                conn.ws = Some(ws::Connection::new(Role::Client));
                conn.attempt = 0;
                let started = conn.stamp_ns;
                record_us(&mut self.connect, ns_to_us(now.saturating_sub(started)));
                self.counters.conns_opened += 1;
                self.counters.last_open_ns = now.saturating_sub(self.t0);
                if self.counters.ramp_done_ns.is_none()
                    && self.counters.conns_opened >= self.counters.conns_target
                {
                    self.counters.ramp_done_ns = Some(now.saturating_sub(self.t0));
                }
                self.opened_total += 1;
                self.open_now += 1;
                self.handle_open(key, now);
                // Frames that came with the answer.
                match hs {
                    Some(hs) if !hs.partial.is_empty() => {
                        let mut rest = hs.partial.get(head_len..).unwrap_or_default().to_vec();
                        if !rest.is_empty() {
                            self.handle_frames(key, &mut rest, now);
                        }
                    }
                    _ => {
                        if let Some(rest) = data.get_mut(head_len..).filter(|r| !r.is_empty()) {
                            self.handle_frames(key, rest, now);
                        }
                    }
                }
            }
        }
    }

    /// The WebSocket just opened.
    fn handle_open(&mut self, key: ConnKey, now: u64) {
        match self.plan.mode {
            Mode::Echo(e) if e.interval_ns.is_none() => self.send_echo(key, now, now),
            Mode::Churn { hold_ns } => self.holds.push_back((now + hold_ns, key)),
            Mode::Storm(_)
                if self.storm_dropped
                    && self.open_now == self.conns.len() as u64
                    && self.counters.recover_ns.is_none() =>
            {
                let dropped_at = self.counters.drop_at_ns.unwrap_or(0) + self.t0;
                self.counters.recover_ns = Some(now.saturating_sub(dropped_at));
            }
            _ => {}
        }
    }

    /// An open connection ended before we closed it: the server closed, reset, or broke the
    /// protocol.
    pub(super) fn end_conn(&mut self, key: ConnKey, cause: Cause, now: u64) {
        let stage = self.stage;
        let Some(conn) = self.live(key) else { return };
        match conn.phase {
            Phase::Open => {}
            Phase::Connecting | Phase::Upgrading => {
                self.fail(key, cause, now);
                return;
            }
            Phase::Closing => {
                self.finish_close(key);
                return;
            }
            _ => return,
        }
        conn.phase = Phase::Dead;
        self.open_now -= 1;
        self.acts.push(Act::Close(key));
        if stage == Stage::Running {
            self.counters.disconnects.add(cause);
        }
        match self.plan.mode {
            Mode::Storm(_) if stage == Stage::Running => self.schedule_retry(key.slot, 0, now),
            Mode::Churn { .. } => self.free.push(key.slot),
            _ => {}
        }
    }

    /// Our closing handshake finished (or timed out): close the socket.
    pub(super) fn finish_close(&mut self, key: ConnKey) {
        let churn = matches!(self.plan.mode, Mode::Churn { .. }) && self.stage == Stage::Running;
        let Some(conn) = self.live(key) else { return };
        if conn.phase != Phase::Closing {
            return;
        }
        conn.phase = if churn { Phase::Free } else { Phase::Dead };
        conn.ws = None;
        self.open_now -= 1;
        self.acts.push(Act::Close(key));
        if churn {
            self.counters.cycles += 1;
            self.free.push(key.slot);
        }
    }

    /// Starts our closing handshake on an open connection.
    pub(super) fn start_close(&mut self, key: ConnKey, now: u64) {
        let Some(conn) = self.live(key) else { return };
        if conn.phase != Phase::Open {
            return;
        }
        conn.phase = Phase::Closing;
        if conn.ws.is_none() {
            return;
        }
        self.send_close(key, Some(CloseCode::NORMAL));
        self.closings.push_back((now + CLOSE_WAIT_NS, key));
    }

    /// The peer closed or reset the socket.
    pub fn handle_eof(&mut self, key: ConnKey, now: u64) {
        if let Some(p) = self.publisher.as_mut().filter(|p| p.owns_slot(key.slot)) {
            p.handle_eof(key, now, &mut self.acts);
            return;
        }
        self.end_conn(key, Cause::Eof, now);
    }

    /// A send failed.
    pub fn handle_send_error(&mut self, key: ConnKey, errno: i32, now: u64) {
        if let Some(p) = self.publisher.as_mut().filter(|p| p.owns_slot(key.slot)) {
            p.handle_eof(key, now, &mut self.acts);
            return;
        }
        self.end_conn(key, Cause::of_errno(errno), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::plan::Plan;

    fn storm_state() -> State {
        use clap::Parser as _;
        let args = [
            "ringcast-loadgen",
            "storm",
            "--conns",
            "1000",
            "--backoff-base",
            "100ms",
        ];
        let cli = crate::cli::Cli::try_parse_from(args.into_iter().chain(["--backoff-max", "1s"]))
            .unwrap();
        let plan = Plan::from_cli(&cli.scenario).unwrap();
        State::new(Arc::new(plan), 0, 0, 1, 7)
    }

    /// Attempt n waits uniformly in [0, min(max, base * 2^n)]: spread over the whole range
    /// (full jitter), doubling per attempt, capped.
    #[test]
    fn storm_backoff_is_exponential_with_full_jitter_and_capped() {
        const MS: u64 = 1_000_000;
        for (attempt, ceiling) in [
            (0, 100 * MS),
            (1, 200 * MS),
            (3, 800 * MS),
            (4, 1000 * MS),
            (60, 1000 * MS),
        ] {
            let mut st = storm_state();
            for slot in 0..1000 {
                st.schedule_retry(slot, attempt, 5);
            }
            let waits: Vec<u64> = st.retries.iter().map(|Reverse((at, _))| at - 5).collect();
            let (min, max) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
            let mean = waits.iter().sum::<u64>() / waits.len() as u64;
            assert!(*max <= ceiling, "attempt {attempt}: {max} above {ceiling}");
            assert!(
                *min < ceiling / 20 && *max > ceiling / 20 * 19,
                "attempt {attempt}: {min}..{max}"
            );
            assert!(
                (ceiling * 2 / 5..ceiling * 3 / 5).contains(&mean),
                "attempt {attempt}: mean {mean}"
            );
        }
    }
}
