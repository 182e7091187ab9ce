//! The driving half of an event loop: waits on the driver, feeds its events and the clock to the
//! [`State`], and carries out the [`Act`]s the state queued.

use std::os::fd::AsRawFd;
use std::sync::mpsc::Sender;

use bytes::Bytes;
use ringcast::driver::sys::monotonic_ns as now_ns;
use ringcast::driver::{ConnKey, Driver, Event as DriverEvent, MAX_SEND_FRAMES};

use super::State;
use crate::link::{Act, Link};
use crate::net;
use crate::proto::WorkerMsg;

/// Driver events handled per loop turn at most, so timers (ticks, deadlines, the end of the run)
/// are served even when events never stop coming (bounded work per turn).
const EVENTS_PER_TURN: usize = 4096;

/// One event loop: the state and the driver it runs on.
pub struct Runner<D: Driver> {
    driver: D,
    /// The state.
    pub state: State,
    frames: Vec<Bytes>,
    /// Connections whose receive stopped (buffer pool dry), resumed before the next wait.
    stopped: Vec<ConnKey>,
}

impl<D: Driver> Runner<D> {
    /// A loop on `driver`.
    pub fn new(driver: D, state: State) -> Self {
        Self {
            driver,
            state,
            frames: Vec::with_capacity(MAX_SEND_FRAMES),
            stopped: Vec::new(),
        }
    }

    /// Runs until the plan's duration, drain and closing are over.
    pub fn run(&mut self, ticks: &Sender<WorkerMsg>) -> std::io::Result<()> {
        while !self.state.is_done() {
            let now = now_ns();
            let wait = self.state.handle_timeout(now, ticks);
            self.apply();
            if self.state.is_done() {
                break;
            }
            for key in self.stopped.drain(..) {
                self.driver.resume_recv(key);
            }
            self.driver.wait(wait)?;
            for _ in 0..EVENTS_PER_TURN {
                let Some(ev) = self.driver.poll_event() else {
                    break;
                };
                let now = now_ns();
                match ev {
                    DriverEvent::Connected { key, result } => {
                        self.state.handle_connected(key, result, now)
                    }
                    DriverEvent::Recv { key, buf } => {
                        let data = self.driver.recv_buf(buf);
                        self.state.handle_recv(key, data, now);
                        self.driver.release(buf);
                    }
                    // Resumed before the next wait, once the buffers released in this turn are
                    // back in the pool: resuming at once could stop again, turn after turn.
                    DriverEvent::RecvStopped { key } => self.stopped.push(key),
                    DriverEvent::Eof { key } => self.state.handle_eof(key, now),
                    DriverEvent::Sent { key, result } => self.handle_sent(key, result, now),
                    DriverEvent::Accepted(_) | DriverEvent::AcceptError(_) | DriverEvent::Wake => {}
                }
                self.apply();
            }
        }
        Ok(())
    }

    /// Carries out the acts the state queued.
    fn apply(&mut self) {
        let mut acts = std::mem::take(&mut self.state.acts);
        for act in acts.drain(..) {
            match act {
                Act::Connect(key) => {
                    let (dst, src, abortive) = self.state.endpoints(key.slot);
                    let now = now_ns();
                    match net::start_connect(src, dst) {
                        Ok(sock) => {
                            if abortive {
                                net::set_abortive_close(sock.as_raw_fd());
                            }
                            if let Err(e) = self.driver.adopt_connecting(key, sock) {
                                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                                self.state.handle_connect_error(key, errno, now);
                            }
                        }
                        Err(errno) => self.state.handle_connect_error(key, errno, now),
                    }
                }
                Act::Send(key, frame) => {
                    let Some(link) = self.state.link(key) else {
                        continue;
                    };
                    if link.queue(frame) {
                        Self::flush(&mut self.driver, &mut self.frames, link, key);
                    }
                }
                Act::Close(key) => {
                    if let Some(link) = self.state.link(key) {
                        link.reset();
                    }
                    self.driver.close(key);
                }
            }
        }
        // Acts queued while applying (failed connects) are applied on the next call.
        self.state.acts.append(&mut acts);
    }

    /// Hands the next batch of `link`'s waiting frames to the driver.
    fn flush(driver: &mut D, frames: &mut Vec<Bytes>, link: &mut Link, key: ConnKey) {
        if link.next_send(frames) {
            driver.send(key, frames);
            frames.clear();
        }
    }

    fn handle_sent(&mut self, key: ConnKey, result: std::io::Result<usize>, now: u64) {
        match result {
            Ok(n) => {
                let Some(link) = self.state.link(key) else {
                    return;
                };
                link.handle_sent(n);
                Self::flush(&mut self.driver, &mut self.frames, link, key);
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                self.state.handle_send_error(key, errno, now);
                self.apply();
            }
        }
    }
}
