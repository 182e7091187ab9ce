//! The io_uring backend on the `io-uring` crate: multishot accept, multishot receive into a
//! provided-buffer ring shared by every connection of the shard, gathered `sendmsg` of
//! reference-counted frames, one timeout per wheel tick, and a multishot poll on the shard's
//! eventfd doorbell. Submissions are batched: nothing is submitted until [`Driver::wait`].
//!
//! Every submission names its socket by descriptor number, and the kernel looks the number up
//! only when it consumes the entry at submit time. All shards share the process's descriptor
//! table and Linux hands out the lowest free number, so a descriptor closed while an entry that
//! names it still waits to be submitted could be reused by another shard's accept, and the
//! entry would then send one connection's frames to an unrelated client or receive its bytes.
//! So a closed connection's socket is shut down at once but its descriptor is closed only once
//! the submission queue and the backlog are empty, right after the submit that carried its
//! last entries ([`UringDriver::release_closed`]). No entry uses `IOSQE_ASYNC` or links, so
//! every entry is looked up while `io_uring_enter` consumes it.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};

use super::sys::{self, Waker};
use super::{
    ConnKey, Driver, Event, MAX_SEND_FRAMES, MAX_SLOTS, OpKind, RecvBuf, UserData, slot_mut,
};
use buf_ring::{BUF_GROUP, BufRing};
#[cfg(test)]
pub(crate) use probe::test_driver;
pub use probe::{Unavailable, probe};

mod buf_ring;
mod probe;

/// Submission queue entries. A loop turn submits at most one op per event it handled plus a
/// few of its own, and a full queue is submitted and reused, so this bounds batching only.
const SQ_ENTRIES: u32 = 4096;

/// Completion queue entries: four per submission slot, so multishot receives on many
/// connections rarely overflow into the kernel's (slower) backlog list.
const CQ_ENTRIES: u32 = 4 * SQ_ENTRIES;

/// How long accepting pauses after an error such as EMFILE before it is armed again, so a full
/// descriptor table does not spin the loop. 100 ms is one wheel tick.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// How long dropping the driver waits for the kernel to finish with its buffers before it
/// leaks them rather than free memory the kernel may still write.
const DROP_DRAIN: Duration = Duration::from_secs(1);

/// Finished send ops kept for reuse. A burst (every connection answering its handshake at
/// once) may need one per connection; keeping them all would leave about 250 bytes per peak
/// connection behind, so only this many are kept: enough to cover a busy loop turn.
const SPARE_SENDS: usize = 1024;

/// Sizes of the shard's receive buffer pool.
#[derive(Debug, Clone, Copy)]
pub struct UringConfig {
    /// Buffers in the provided-buffer ring; a power of two, at most 32768.
    pub recv_buffers: u16,
    /// Bytes per buffer.
    pub recv_buffer_size: u32,
}

/// A gathered send the kernel is working on. Boxed so the `msghdr` and `iovec`s keep their
/// address until the completion, and kept in `UringDriver::sends` until then even if the
/// connection closed.
struct SendOp {
    key: ConnKey,
    frames: Vec<Bytes>,
    iov: Vec<libc::iovec>,
    msg: libc::msghdr,
}

/// One registered socket: the descriptor (None once closed) and the generation of the
/// connection that owns the slot, so stale completions are recognised.
#[derive(Default)]
struct Slot {
    socket: Option<OwnedFd>,
    generation: u32,
}

/// Why [`Driver::send`] reported a send as failed without submitting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendRefused {
    /// Every send slot `user_data` can address is held by a send in flight.
    SlotsExhausted,
}

impl std::fmt::Display for SendRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SlotsExhausted => write!(
                f,
                "every one of the {MAX_SLOTS} send slots user_data can address is in flight"
            ),
        }
    }
}

impl std::error::Error for SendRefused {}

/// The io_uring [`Driver`].
pub struct UringDriver {
    /// Its registered buffer ring is unregistered in `Drop` before `bufs` is freed.
    ring: IoUring,
    /// Freed in `Drop` only once the kernel can no longer pick from it (see there).
    bufs: std::mem::ManuallyDrop<BufRing>,
    slots: Vec<Slot>,
    /// INVARIANT: an op is in here from its submission until its completion, at an index below
    /// `send_slots`, so that the index survives the 24 bits `user_data` keeps for it.
    sends: slab::Slab<Box<SendOp>>,
    /// Most sends in flight at once: [`MAX_SLOTS`]; a send beyond it fails with
    /// [`SendRefused::SlotsExhausted`] instead of aliasing another send's `user_data`.
    send_slots: usize,
    /// Sockets of closed connections, already shut down, whose descriptor numbers a queued
    /// submission may still name; closed by [`UringDriver::release_closed`].
    closing: Vec<OwnedFd>,
    /// Finished ops kept for reuse, boxed because `sends` needs them boxed (stable addresses).
    #[allow(clippy::vec_box)] // moving boxes between `sends` and here must not move the op
    spare_sends: Vec<Box<SendOp>>,
    listener: Option<OwnedFd>,
    accept_armed: bool,
    accept_retry_at: Option<Instant>,
    eventfd: Arc<OwnedFd>,
    wake_armed: bool,
    timeout_armed: bool,
    /// INVARIANT: boxed so its address is stable while a timeout op refers to it.
    timespec: Box<Timespec>,
    cqes: VecDeque<cqueue::Entry>,
    /// Submissions waiting for room in the submission queue, in order.
    backlog: VecDeque<squeue::Entry>,
    pending: VecDeque<Event>,
    /// Submitted ops whose final completion has not arrived.
    in_flight: usize,
}

impl UringDriver {
    /// Sets up a ring and its provided-buffer pool.
    pub fn new(config: UringConfig) -> io::Result<Self> {
        let ring = build_ring()?;
        let bufs = BufRing::new(&ring, config.recv_buffers, config.recv_buffer_size)?;
        Ok(Self {
            ring,
            bufs: std::mem::ManuallyDrop::new(bufs),
            slots: Vec::new(),
            sends: slab::Slab::new(),
            send_slots: MAX_SLOTS as usize,
            closing: Vec::new(),
            spare_sends: Vec::new(),
            listener: None,
            accept_armed: false,
            accept_retry_at: None,
            eventfd: Arc::new(sys::eventfd()?),
            wake_armed: false,
            timeout_armed: false,
            timespec: Box::new(Timespec::new()),
            cqes: VecDeque::new(),
            backlog: VecDeque::new(),
            pending: VecDeque::new(),
            in_flight: 0,
        })
    }

    /// Queues one submission. It never fails: when the submission queue is full and cannot be
    /// submitted right now (the kernel answers EBUSY while completions back up), the entry waits
    /// in `backlog`, in order, until [`Driver::wait`]. The memory an entry points at must stay
    /// valid until its completion (see the callers).
    fn push(&mut self, entry: squeue::Entry) {
        self.in_flight += 1;
        if self.backlog.is_empty() && !self.try_push(&entry) {
            let _ = self.ring.submit();
            self.reap();
            if self.try_push(&entry) {
                return;
            }
        } else if self.backlog.is_empty() {
            return;
        }
        self.backlog.push_back(entry);
    }

    fn try_push(&mut self, entry: &squeue::Entry) -> bool {
        // SAFETY: every entry built in this file points only at memory the driver keeps alive
        // until the completion: `timespec` (boxed field, not rewritten while a timeout is
        // armed), a boxed `SendOp` held in `sends`, the buffer ring, or nothing.
        unsafe { self.ring.submission().push(entry) }.is_ok()
    }

    /// Moves backlogged entries into the submission queue, submitting when it fills.
    fn flush_backlog(&mut self) {
        while let Some(entry) = self.backlog.pop_front() {
            if self.try_push(&entry) {
                continue;
            }
            let _ = self.ring.submit();
            self.reap();
            if !self.try_push(&entry) {
                self.backlog.push_front(entry);
                return;
            }
        }
    }

    /// Closes the descriptors of closed connections once no submission that could name them
    /// is left unsubmitted: the submission queue and the backlog are both empty, so the kernel
    /// has looked every entry's descriptor up already and holds the socket itself.
    fn release_closed(&mut self) {
        if !self.closing.is_empty() && self.backlog.is_empty() && self.ring.submission().is_empty()
        {
            self.closing.clear();
        }
    }

    /// Ends every op for teardown: shuts every socket down, waits (bounded by DROP_DRAIN) for
    /// the final completions, and cancels what the shutdowns did not end. Returns how many
    /// `io_uring_enter` waits it took; `in_flight` is what is left.
    fn drain(&mut self) -> u32 {
        self.closing.extend(self.listener.take());
        for slot in &mut self.slots {
            if let Some(socket) = slot.socket.take() {
                sys::shutdown(socket.as_raw_fd());
                self.closing.push(socket);
            }
        }
        self.flush_backlog();
        let start = Instant::now();
        let deadline = start + DROP_DRAIN;
        let cancel_by = start + DROP_DRAIN / 2;
        let tick = Timespec::from(Duration::from_millis(10));
        let mut cancelled = false;
        let mut waits = 0;
        while self.in_flight > 0 && Instant::now() < deadline {
            self.flush_backlog();
            // Waiting for every outstanding completion, not one: with deferred task work the
            // kernel runs only as many woken ops per `io_uring_enter` as it is asked to wait
            // for (at least 20), so waiting for one took a thousand calls for 19,000 sockets.
            let want = self.in_flight.min(CQ_ENTRIES as usize);
            let args = SubmitArgs::new().timespec(&tick);
            let _ = self.ring.submitter().submit_with_args(want, &args);
            waits += 1;
            self.reap();
            let quiet = self.cqes.is_empty();
            while let Some(cqe) = self.cqes.pop_front() {
                if !cqueue::more(cqe.flags()) {
                    self.in_flight = self.in_flight.saturating_sub(1);
                }
            }
            if !cancelled && self.in_flight > 0 && (quiet || Instant::now() >= cancel_by) {
                let entry = opcode::AsyncCancel2::new(CancelBuilder::any())
                    .build()
                    .user_data(UserData::new(OpKind::Cancel, 0, 0).raw());
                self.push(entry);
                cancelled = true;
            }
        }
        self.release_closed();
        waits
    }

    /// Moves every completion from the ring into `cqes`.
    fn reap(&mut self) {
        self.cqes.extend(self.ring.completion());
    }

    fn live_fd(&self, key: ConnKey) -> Option<RawFd> {
        let slot = self.slots.get(key.slot as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.socket.as_ref().map(AsRawFd::as_raw_fd)
    }

    fn arm_accept(&mut self) {
        let Some(fd) = self.listener.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        let entry = opcode::AcceptMulti::new(Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(UserData::new(OpKind::Accept, 0, 0).raw());
        self.push(entry);
        self.accept_armed = true;
        self.accept_retry_at = None;
    }

    fn arm_recv(&mut self, key: ConnKey) {
        let Some(fd) = self.live_fd(key) else { return };
        let entry = opcode::RecvMulti::new(Fd(fd), BUF_GROUP)
            .build()
            .user_data(UserData::conn(OpKind::Recv, key).raw());
        self.push(entry);
    }

    fn insert_slot(&mut self, key: ConnKey, socket: OwnedFd) {
        let slot = slot_mut(&mut self.slots, key.slot);
        // A slot is only reused after `close`; should a socket still be there, it is retired
        // like a closed one rather than closed under entries that may name it.
        if let Some(old) = slot.socket.replace(socket) {
            sys::shutdown(old.as_raw_fd());
            self.closing.push(old);
        }
        slot.generation = key.generation;
    }

    fn handle_cqe(&mut self, cqe: &cqueue::Entry) -> Option<Event> {
        let data = UserData::from_raw(cqe.user_data())?;
        let more = cqueue::more(cqe.flags());
        if !more {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        let res = cqe.result();
        match data.kind() {
            OpKind::Accept => {
                if !more {
                    self.accept_armed = false;
                    self.accept_retry_at = Some(if res < 0 {
                        Instant::now() + ACCEPT_RETRY
                    } else {
                        Instant::now()
                    });
                }
                if res >= 0 {
                    // SAFETY: a non-negative accept result is a new descriptor we own.
                    Some(Event::Accepted(unsafe { OwnedFd::from_raw_fd(res) }))
                } else if self.listener.is_some() && res != -libc::ECANCELED {
                    Some(Event::AcceptError(io::Error::from_raw_os_error(-res)))
                } else {
                    None
                }
            }
            OpKind::Recv => {
                let key = data.key();
                let buffer = cqueue::buffer_select(cqe.flags());
                if self.live_fd(key).is_none() {
                    if let Some(id) = buffer {
                        self.bufs.recycle(id);
                    }
                    return None;
                }
                match (res, buffer) {
                    (1.., Some(id)) => {
                        if !more {
                            self.pending.push_back(Event::RecvStopped { key });
                        }
                        Some(Event::Recv {
                            key,
                            buf: RecvBuf {
                                id,
                                len: res as u32,
                            },
                        })
                    }
                    (_, Some(id)) => {
                        self.bufs.recycle(id);
                        Some(Event::Eof { key })
                    }
                    (r, None) if r == -libc::ENOBUFS => Some(Event::RecvStopped { key }),
                    (r, None) if r > 0 => Some(Event::RecvStopped { key }),
                    (_, None) if more => None,
                    (_, None) => Some(Event::Eof { key }),
                }
            }
            OpKind::Send => {
                let index = data.slot() as usize;
                let mut op = self.sends.try_remove(index)?;
                let key = op.key;
                op.frames.clear();
                if self.spare_sends.len() < SPARE_SENDS {
                    self.spare_sends.push(op);
                }
                self.live_fd(key)?;
                let result = if res >= 0 {
                    Ok(res as usize)
                } else {
                    Err(io::Error::from_raw_os_error(-res))
                };
                Some(Event::Sent { key, result })
            }
            OpKind::Timeout => {
                self.timeout_armed = false;
                None
            }
            OpKind::Cancel => None,
            OpKind::Wake => {
                sys::eventfd_drain(self.eventfd.as_raw_fd());
                if !more {
                    self.wake_armed = false;
                }
                Some(Event::Wake)
            }
            OpKind::Connect => {
                let key = data.key();
                let fd = self.live_fd(key)?;
                let result = if res < 0 {
                    Err(io::Error::from_raw_os_error(-res))
                } else {
                    sys::socket_error(fd)
                };
                if result.is_ok() {
                    self.arm_recv(key);
                }
                Some(Event::Connected { key, result })
            }
        }
    }
}

/// A ring with the flags that suit one thread owning it, falling back to a plain ring on
/// kernels that refuse them (single issuer and deferred task work need 6.1).
fn build_ring() -> io::Result<IoUring> {
    IoUring::builder()
        .setup_cqsize(CQ_ENTRIES)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(SQ_ENTRIES)
        .or_else(|_| {
            IoUring::builder()
                .setup_cqsize(CQ_ENTRIES)
                .build(SQ_ENTRIES)
        })
}

impl Driver for UringDriver {
    fn backend(&self) -> &'static str {
        "io_uring"
    }

    fn listen(&mut self, listener: OwnedFd) -> io::Result<()> {
        // io_uring completes an accept on an O_NONBLOCK listener with EAGAIN instead of waiting
        // (and that ends the multishot), so the listener is switched back to blocking mode.
        let listener = socket2::Socket::from(listener);
        listener.set_nonblocking(false)?;
        self.listener = Some(OwnedFd::from(listener));
        self.arm_accept();
        Ok(())
    }

    fn stop_accepting(&mut self) {
        if let Some(listener) = self.listener.take() {
            // The multishot accept holds its own reference to the socket, so closing the
            // descriptor alone would keep accepting. Shutting a listening socket down fails the
            // pending accept; the cancel covers kernels where it would not. The cancel names
            // the descriptor, so the descriptor is closed like a connection's: after the submit
            // that carries it.
            let entry =
                opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(listener.as_raw_fd())).all())
                    .build()
                    .user_data(UserData::new(OpKind::Cancel, 0, 0).raw());
            self.push(entry);
            self.flush_backlog();
            let _ = self.ring.submit();
            sys::shutdown(listener.as_raw_fd());
            self.closing.push(listener);
            self.release_closed();
        }
        self.accept_retry_at = None;
    }

    fn register(&mut self, key: ConnKey, socket: OwnedFd) -> io::Result<()> {
        self.insert_slot(key, socket);
        self.arm_recv(key);
        Ok(())
    }

    fn adopt_connecting(&mut self, key: ConnKey, socket: OwnedFd) -> io::Result<()> {
        let fd = socket.as_raw_fd();
        self.insert_slot(key, socket);
        let entry = opcode::PollAdd::new(Fd(fd), libc::POLLOUT as u32)
            .build()
            .user_data(UserData::conn(OpKind::Connect, key).raw());
        self.push(entry);
        Ok(())
    }

    fn resume_recv(&mut self, key: ConnKey) {
        self.arm_recv(key);
    }

    fn send(&mut self, key: ConnKey, frames: &mut Vec<Bytes>) {
        let Some(fd) = self.live_fd(key) else {
            frames.clear();
            return;
        };
        if self.sends.vacant_key() >= self.send_slots {
            frames.clear();
            let refused = io::Error::other(SendRefused::SlotsExhausted);
            self.pending.push_back(Event::Sent {
                key,
                result: Err(refused),
            });
            return;
        }
        let mut op = self.spare_sends.pop().unwrap_or_else(|| {
            Box::new(SendOp {
                key,
                frames: Vec::new(),
                iov: Vec::new(),
                // SAFETY: msghdr is plain data; all-zero means no address, no control data.
                msg: unsafe { std::mem::zeroed() },
            })
        });
        op.key = key;
        let take = frames.len().min(MAX_SEND_FRAMES);
        op.frames.extend(frames.drain(..take));
        frames.clear();
        sys::fill_iovecs(&op.frames, &mut op.iov);
        op.msg.msg_iov = op.iov.as_mut_ptr();
        op.msg.msg_iovlen = op.iov.len();
        let msg: *const libc::msghdr = &op.msg;
        let index = self.sends.insert(op);
        let entry = opcode::SendMsg::new(Fd(fd), msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(UserData::new(OpKind::Send, index as u32, key.generation).raw());
        self.push(entry);
    }

    fn close(&mut self, key: ConnKey) {
        if self.live_fd(key).is_none() {
            return;
        }
        if let Some(socket) = self
            .slots
            .get_mut(key.slot as usize)
            .and_then(|s| s.socket.take())
        {
            // Shutting down ends the multishot receive (it completes with end of stream), which
            // holds its own reference to the socket, and fails a send already submitted. The
            // descriptor stays open until entries queued this turn that name it (a send from
            // the flush, a re-armed receive) are submitted: see the module documentation.
            sys::shutdown(socket.as_raw_fd());
            self.closing.push(socket);
        }
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        if !self.accept_armed && self.accept_retry_at.is_some_and(|at| at <= Instant::now()) {
            self.arm_accept();
        }
        if !self.wake_armed {
            let entry = opcode::PollAdd::new(Fd(self.eventfd.as_raw_fd()), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(UserData::new(OpKind::Wake, 0, 0).raw());
            self.push(entry);
            self.wake_armed = true;
        }
        let want = if self.cqes.is_empty() && self.pending.is_empty() {
            1
        } else {
            0
        };
        if want == 1 && !self.timeout_armed {
            *self.timespec = Timespec::from(timeout);
            let entry = opcode::Timeout::new(&*self.timespec)
                .build()
                .user_data(UserData::new(OpKind::Timeout, 0, 0).raw());
            self.push(entry);
            self.timeout_armed = true;
        }
        self.flush_backlog();
        let want = if self.backlog.is_empty() { want } else { 0 };
        match self.ring.submit_and_wait(want) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) => {}
            Err(e) => return Err(e),
        }
        self.release_closed();
        self.reap();
        Ok(())
    }

    fn poll_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                if event.key().is_some_and(|key| self.live_fd(key).is_none()) {
                    continue;
                }
                return Some(event);
            }
            let cqe = self.cqes.pop_front()?;
            if let Some(event) = self.handle_cqe(&cqe) {
                return Some(event);
            }
        }
    }

    fn recv_buf(&mut self, buf: RecvBuf) -> &mut [u8] {
        self.bufs.slice(buf.id, buf.len)
    }

    fn release(&mut self, buf: RecvBuf) {
        self.bufs.recycle(buf.id);
    }

    fn waker(&self) -> Waker {
        Waker::new(Arc::clone(&self.eventfd))
    }
}

impl Drop for UringDriver {
    fn drop(&mut self) {
        // The kernel may still write into receive buffers and read send frames: end every op,
        // wait (bounded) for their final completions, and leak the memory if they never come.
        //
        // Shutting a socket down ends its receive, send or connect poll by itself, so most ops
        // finish without a cancel. The cancel of everything left (the doorbell poll, the tick
        // timeout, whatever a kernel did not end) is submitted only once the completions stop
        // coming (or half of DROP_DRAIN has passed): a cancel-any walks the kernel's table of
        // pending polls once per op it cancels, and with deferred task work the ops just woken
        // by the shutdowns stay in that table until we reap, so cancelling first cost seconds of
        // kernel time in one uninterruptible `io_uring_enter` with 19,000 sockets, far past
        // DROP_DRAIN.
        self.drain();
        // The kernel picks receive buffers from the registered ring whenever a receive runs,
        // until the ring is unregistered, and the ring field is only closed after this body.
        // So the buffer ring is unregistered first: from then on no receive, not even one this
        // driver failed to count, can pick a buffer. The memory is freed only when that
        // succeeded and no op is left that may hold a buffer it picked before.
        let unregistered = self.bufs.unregister(&self.ring);
        if self.in_flight == 0 && unregistered.is_ok() {
            // SAFETY: the kernel no longer knows the buffer ring and no op is left that could
            // hold one of its buffers; `bufs` is not used again.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.bufs) };
        } else {
            tracing::warn!(
                ops = self.in_flight,
                unregistered = unregistered.is_ok(),
                "io_uring ops outlived the shard; leaking buffers"
            );
            std::mem::forget(std::mem::take(&mut self.sends));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use super::*;

    /// Socket pairs for the teardown test: enough that waiting for one completion per
    /// `io_uring_enter` (the kernel then runs about 20 woken ops per call) would take 20 waits,
    /// few enough for the default limit of 1024 open files.
    const PAIRS: u32 = 400;

    #[test]
    fn teardown_ends_every_op_in_a_few_waits() {
        let config = UringConfig {
            recv_buffers: 64,
            recv_buffer_size: 4096,
        };
        let Some(mut driver) = test_driver(config) else {
            return;
        };
        let mut peers = Vec::new();
        for slot in 0..PAIRS {
            let (ours, theirs) = UnixStream::pair().expect("socket pair");
            driver
                .register(
                    ConnKey {
                        slot,
                        generation: 1,
                    },
                    OwnedFd::from(ours),
                )
                .expect("register");
            peers.push(theirs);
        }
        // Submits the receives and arms the doorbell poll and the tick timeout.
        driver.wait(Duration::ZERO).expect("wait");
        let waits = driver.drain();
        assert_eq!(driver.in_flight, 0, "ops left after teardown");
        assert!(
            waits < 10,
            "teardown took {waits} waits for {PAIRS} sockets"
        );
    }

    fn small_driver() -> Option<UringDriver> {
        test_driver(UringConfig {
            recv_buffers: 4,
            recv_buffer_size: 4096,
        })
    }

    /// Events until `want` says stop or a few waits pass.
    fn events_until(driver: &mut UringDriver, mut want: impl FnMut(&Event) -> bool) -> Vec<Event> {
        let mut seen = Vec::new();
        for _ in 0..100 {
            driver.wait(Duration::from_millis(10)).expect("wait");
            while let Some(event) = driver.poll_event() {
                let stop = want(&event);
                seen.push(event);
                if stop {
                    return seen;
                }
            }
        }
        seen
    }

    #[test]
    fn a_send_beyond_the_addressable_slots_fails_instead_of_aliasing() {
        let Some(mut driver) = small_driver() else {
            return;
        };
        // One slot stands for the 2^24 that user_data can address.
        driver.send_slots = 1;
        let mut peers = Vec::new();
        let keys = [0, 1].map(|slot| {
            let (ours, theirs) = UnixStream::pair().expect("socket pair");
            let key = ConnKey {
                slot,
                generation: 1,
            };
            driver.register(key, OwnedFd::from(ours)).expect("register");
            peers.push(theirs);
            key
        });
        driver.send(keys[0], &mut vec![Bytes::from_static(b"first")]);
        driver.send(keys[1], &mut vec![Bytes::from_static(b"second")]);
        let events = events_until(&mut driver, |_| false);
        let sent: Vec<_> = events
            .iter()
            .filter_map(|event| match event {
                Event::Sent { key, result } => Some((*key, result)),
                _ => None,
            })
            .collect();
        assert_eq!(sent.len(), 2, "{events:?}");
        let (first, second) = (
            sent.iter().find(|s| s.0 == keys[0]),
            sent.iter().find(|s| s.0 == keys[1]),
        );
        assert_eq!(first.and_then(|s| s.1.as_ref().ok()), Some(&5));
        let refused = second
            .and_then(|s| s.1.as_ref().err())
            .expect("the second send fails");
        let why = refused
            .get_ref()
            .and_then(|e| e.downcast_ref::<SendRefused>());
        assert_eq!(why, Some(&SendRefused::SlotsExhausted));
        // The slot is free again once the first send completed.
        driver.send(keys[1], &mut vec![Bytes::from_static(b"second")]);
        let events = events_until(&mut driver, |event| matches!(event, Event::Sent { .. }));
        assert!(
            matches!(events.last(), Some(Event::Sent { key, result: Ok(6) }) if *key == keys[1]),
            "{events:?}"
        );
    }

    #[test]
    fn an_unregistered_buffer_ring_is_never_written() {
        let Some(mut driver) = small_driver() else {
            return;
        };
        let (ours, theirs) = UnixStream::pair().expect("socket pair");
        let key = ConnKey {
            slot: 0,
            generation: 1,
        };
        driver.register(key, OwnedFd::from(ours)).expect("register");
        driver.wait(Duration::ZERO).expect("wait");
        driver.bufs.unregister(&driver.ring).expect("unregister");
        (&theirs).write_all(b"after").expect("write");
        let events = events_until(&mut driver, |event| !matches!(event, Event::Wake));
        assert!(
            matches!(events.last(), Some(Event::RecvStopped { key: k }) if *k == key),
            "a receive after unregistering found a buffer: {events:?}"
        );
    }
}
