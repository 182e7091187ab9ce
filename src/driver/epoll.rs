//! The epoll backend, for hosts where io_uring is off: edge-triggered registrations, reads into
//! one scratch buffer per shard (lent to the shard exactly like an io_uring provided buffer),
//! and gathered `sendmsg` straight from the connection's outbox frames. Readiness is turned into
//! the same completion-shaped [`Event`]s the io_uring driver produces.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::sys::{self, Waker};
use super::{ConnKey, Driver, Event, MAX_SEND_FRAMES, OpKind, RecvBuf, UserData, slot_mut};

/// Ready descriptors fetched per `epoll_wait`; more simply wait for the next call.
const EVENTS_PER_WAIT: usize = 1024;

/// Reads of one full scratch buffer from one connection before the others get a turn; the rest
/// is read on the next loop turn (edge-triggered epoll will not remind us, so it is carried).
const READS_PER_TURN: u32 = 4;

/// Connections accepted per loop turn before other events get a turn.
const ACCEPTS_PER_TURN: u32 = 256;

/// How long accepting pauses after an error such as EMFILE. 100 ms is one wheel tick.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Slot {
    socket: Option<OwnedFd>,
    generation: u32,
    connecting: bool,
}

/// The epoll [`Driver`].
pub struct EpollDriver {
    epfd: OwnedFd,
    listener: Option<OwnedFd>,
    accept_ready: bool,
    accept_retry_at: Option<Instant>,
    accepted_this_turn: u32,
    eventfd: Arc<OwnedFd>,
    slots: Vec<Slot>,
    /// Sends that hit a full socket buffer, by slot, waiting for EPOLLOUT.
    blocked_sends: HashMap<u32, (ConnKey, Vec<Bytes>)>,
    scratch: Box<[u8]>,
    iov: Vec<libc::iovec>,
    events: Vec<libc::epoll_event>,
    next_event: usize,
    reading: Option<(ConnKey, u32)>,
    /// Connections to read from in this loop turn.
    readable: VecDeque<ConnKey>,
    /// Connections with unread bytes left when their turn ended; read on the next loop turn.
    carried: Vec<ConnKey>,
    pending: VecDeque<Event>,
}

impl EpollDriver {
    /// An epoll instance with a scratch read buffer of `scratch_size` bytes.
    pub fn new(scratch_size: usize) -> io::Result<Self> {
        let epfd = sys::epoll_create()?;
        let eventfd = Arc::new(sys::eventfd()?);
        sys::epoll_ctl(
            epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            eventfd.as_raw_fd(),
            (libc::EPOLLIN | libc::EPOLLET) as u32,
            UserData::new(OpKind::Wake, 0, 0).raw(),
        )?;
        Ok(Self {
            epfd,
            listener: None,
            accept_ready: false,
            accept_retry_at: None,
            accepted_this_turn: 0,
            eventfd,
            slots: Vec::new(),
            blocked_sends: HashMap::new(),
            scratch: vec![0; scratch_size.max(1)].into_boxed_slice(),
            iov: Vec::with_capacity(MAX_SEND_FRAMES),
            events: Vec::with_capacity(EVENTS_PER_WAIT),
            next_event: 0,
            reading: None,
            readable: VecDeque::new(),
            carried: Vec::new(),
            pending: VecDeque::new(),
        })
    }

    fn live_fd(&self, key: ConnKey) -> Option<RawFd> {
        let slot = self.slots.get(key.slot as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.socket.as_ref().map(AsRawFd::as_raw_fd)
    }

    fn insert(&mut self, key: ConnKey, socket: OwnedFd, connecting: bool) -> io::Result<()> {
        sys::epoll_ctl(
            self.epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            socket.as_raw_fd(),
            (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            UserData::conn(OpKind::Recv, key).raw(),
        )?;
        *slot_mut(&mut self.slots, key.slot) = Slot {
            socket: Some(socket),
            generation: key.generation,
            connecting,
        };
        Ok(())
    }

    /// One gathered send; a full socket buffer parks the frames until EPOLLOUT.
    fn try_send(&mut self, key: ConnKey, fd: RawFd, frames: Vec<Bytes>) {
        match sys::send_frames(fd, &frames, &mut self.iov) {
            Ok(n) => self.pending.push_back(Event::Sent { key, result: Ok(n) }),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.blocked_sends.insert(key.slot, (key, frames));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.try_send(key, fd, frames),
            Err(e) => self.pending.push_back(Event::Sent {
                key,
                result: Err(e),
            }),
        }
    }

    fn read_more(&mut self, key: ConnKey, turns_left: u32) -> Option<Event> {
        self.reading = None;
        let fd = self.live_fd(key)?;
        loop {
            return match sys::read(fd, &mut self.scratch) {
                Ok(0) => Some(Event::Eof { key }),
                Ok(n) => {
                    // A short read emptied the socket: the next arrival raises a new edge.
                    if n == self.scratch.len() {
                        if turns_left > 1 {
                            self.reading = Some((key, turns_left - 1));
                        } else {
                            self.carried.push(key);
                        }
                    }
                    Some(Event::Recv {
                        key,
                        buf: RecvBuf {
                            id: 0,
                            len: n as u32,
                        },
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                Err(_) => Some(Event::Eof { key }),
            };
        }
    }

    fn accept_one(&mut self) -> Option<Event> {
        let listener = self.listener.as_ref()?.as_raw_fd();
        if self.accepted_this_turn >= ACCEPTS_PER_TURN {
            return None;
        }
        match sys::accept(listener) {
            Ok(socket) => {
                self.accepted_this_turn += 1;
                Some(Event::Accepted(socket))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.accept_ready = false;
                None
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => {
                self.accept_ready = false;
                self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
                Some(Event::AcceptError(e))
            }
        }
    }

    fn handle_ready(&mut self, event: libc::epoll_event) -> Option<Event> {
        let flags = event.events;
        let data = UserData::from_raw(event.u64)?;
        match data.kind() {
            OpKind::Accept => {
                self.accept_ready = true;
                None
            }
            OpKind::Wake => {
                sys::eventfd_drain(self.eventfd.as_raw_fd());
                Some(Event::Wake)
            }
            _ => {
                let key = data.key();
                let fd = self.live_fd(key)?;
                let readable = flags
                    & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32
                    != 0;
                let slot = self.slots.get_mut(key.slot as usize)?;
                if slot.connecting {
                    slot.connecting = false;
                    let result = sys::socket_error(fd);
                    if result.is_ok() && readable {
                        self.readable.push_back(key);
                    }
                    return Some(Event::Connected { key, result });
                }
                if flags & libc::EPOLLOUT as u32 != 0
                    && let Some((parked, frames)) = self.blocked_sends.remove(&key.slot)
                    && parked == key
                {
                    self.try_send(key, fd, frames);
                }
                if readable {
                    self.readable.push_back(key);
                }
                None
            }
        }
    }
}

impl Driver for EpollDriver {
    fn backend(&self) -> &'static str {
        "epoll"
    }

    fn listen(&mut self, listener: OwnedFd) -> io::Result<()> {
        sys::epoll_ctl(
            self.epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            listener.as_raw_fd(),
            (libc::EPOLLIN | libc::EPOLLET) as u32,
            UserData::new(OpKind::Accept, 0, 0).raw(),
        )?;
        self.listener = Some(listener);
        self.accept_ready = true;
        Ok(())
    }

    fn stop_accepting(&mut self) {
        self.listener = None;
        self.accept_ready = false;
        self.accept_retry_at = None;
    }

    fn register(&mut self, key: ConnKey, socket: OwnedFd) -> io::Result<()> {
        self.insert(key, socket, false)
    }

    fn adopt_connecting(&mut self, key: ConnKey, socket: OwnedFd) -> io::Result<()> {
        self.insert(key, socket, true)
    }

    fn resume_recv(&mut self, key: ConnKey) {
        self.readable.push_back(key);
    }

    fn send(&mut self, key: ConnKey, frames: &mut Vec<Bytes>) {
        let Some(fd) = self.live_fd(key) else {
            frames.clear();
            return;
        };
        frames.truncate(MAX_SEND_FRAMES);
        let frames = std::mem::take(frames);
        self.try_send(key, fd, frames);
    }

    fn close(&mut self, key: ConnKey) {
        if self.live_fd(key).is_none() {
            return;
        }
        if let Some(slot) = self.slots.get_mut(key.slot as usize) {
            // Dropping the only descriptor also removes it from the epoll set.
            slot.socket = None;
        }
        self.blocked_sends.remove(&key.slot);
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.accepted_this_turn = 0;
        if self.listener.is_some() && self.accept_retry_at.is_some_and(|at| at <= Instant::now()) {
            self.accept_retry_at = None;
            self.accept_ready = true;
        }
        let busy = !self.pending.is_empty()
            || !self.readable.is_empty()
            || !self.carried.is_empty()
            || self.accept_ready;
        let timeout_ms = if busy {
            0
        } else {
            timeout.as_millis().clamp(1, i32::MAX as u128) as i32
        };
        self.next_event = 0;
        self.readable.extend(self.carried.drain(..));
        match sys::epoll_wait(self.epfd.as_raw_fd(), &mut self.events, timeout_ms) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn poll_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                // A send completes inside `send`; its event waits here and is dropped if the
                // connection was closed before the shard polled it.
                if event.key().is_some_and(|key| self.live_fd(key).is_none()) {
                    continue;
                }
                return Some(event);
            }
            if let Some((key, turns_left)) = self.reading {
                if let Some(event) = self.read_more(key, turns_left) {
                    return Some(event);
                }
                continue;
            }
            if let Some(&event) = self.events.get(self.next_event) {
                self.next_event += 1;
                if let Some(event) = self.handle_ready(event) {
                    return Some(event);
                }
                continue;
            }
            if let Some(key) = self.readable.pop_front() {
                self.reading = Some((key, READS_PER_TURN));
                continue;
            }
            if self.accept_ready {
                if let Some(event) = self.accept_one() {
                    return Some(event);
                }
                if self.accept_ready && self.accepted_this_turn < ACCEPTS_PER_TURN {
                    continue;
                }
            }
            return None;
        }
    }

    fn recv_buf(&mut self, buf: RecvBuf) -> &mut [u8] {
        let len = (buf.len as usize).min(self.scratch.len());
        &mut self.scratch[..len]
    }

    fn release(&mut self, _buf: RecvBuf) {}

    fn waker(&self) -> Waker {
        Waker::new(Arc::clone(&self.eventfd))
    }
}
