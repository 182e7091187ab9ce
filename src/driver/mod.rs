//! The two event-loop backends (io_uring and epoll) behind one small [`Driver`] trait, so that the
//! shard loop and the connection state machine are written once.
//!
//! The trait is completion-shaped, because that is what io_uring is and what epoll can emulate
//! cheaply: the shard hands the driver sockets and frames to send, then [`Driver::wait`]s and
//! drains [`Event`]s with [`Driver::poll_event`]. Received bytes stay in driver-owned memory (an
//! io_uring provided-buffer ring, or the epoll driver's per-shard scratch buffer) and are lent
//! to the shard through [`Driver::recv_buf`] until [`Driver::release`], so no connection owns a
//! read buffer.
//!
//! The driver owns every socket it is given, keyed by the connection's [`ConnKey`]. A send
//! holds reference-counted [`Bytes`] until its completion arrives, even when the connection was
//! closed in between, because the kernel may still be reading them. Completions that belong to
//! a closed connection are dropped by the driver (the key's generation no longer matches), so
//! the shard never sees them.
//!
//! Unsafe code lives in this module tree only, each block with a `// SAFETY:` comment.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use bytes::Bytes;

pub mod epoll;
#[cfg(test)]
mod loopback_tests;
pub mod sys;
pub mod uring;

/// Names a connection of one shard: its slab slot and the generation the slot had when the
/// connection was inserted, so that an event for a closed connection never reaches the
/// connection that reused the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Slab slot; below [`MAX_SLOTS`].
    pub slot: u32,
    /// Generation of the slot when the connection was inserted.
    pub generation: u32,
}

/// Most connection slots one shard can address: `user_data` keeps 24 bits for the slot. Sixteen
/// million per shard is far above what a shard's share of a million-connection box needs.
pub const MAX_SLOTS: u32 = 1 << 24;

/// What an io_uring submission or epoll registration is for; packed into its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpKind {
    /// Multishot accept on the listener.
    Accept = 1,
    /// Multishot receive (io_uring) or read readiness (epoll) of a connection.
    Recv = 2,
    /// A send of queued frames; the slot is the in-flight send's slot, not the connection's.
    Send = 3,
    /// The wheel-tick timeout.
    Timeout = 4,
    /// The cross-shard doorbell (eventfd).
    Wake = 5,
    /// Writability of an adopted, connecting socket.
    Connect = 6,
    /// A cancellation the driver issued for itself.
    Cancel = 7,
}

impl OpKind {
    fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Accept,
            2 => Self::Recv,
            3 => Self::Send,
            4 => Self::Timeout,
            5 => Self::Wake,
            6 => Self::Connect,
            7 => Self::Cancel,
            _ => return None,
        })
    }
}

/// The 64 bits the kernel hands back with every completion or readiness event: op kind in the
/// low 8 bits, slot in the next 24, generation in the high 32. Every kind is non-zero, so 0 is
/// never a valid `user_data` and a zeroed entry can never be mistaken for a real one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserData(u64);

impl UserData {
    /// Packs an op kind, a slot (below [`MAX_SLOTS`]) and a generation.
    pub fn new(kind: OpKind, slot: u32, generation: u32) -> Self {
        debug_assert!(slot < MAX_SLOTS);
        Self(kind as u64 | (u64::from(slot & (MAX_SLOTS - 1)) << 8) | (u64::from(generation) << 32))
    }

    /// Packs an op kind with a connection key.
    pub fn conn(kind: OpKind, key: ConnKey) -> Self {
        Self::new(kind, key.slot, key.generation)
    }

    /// Unpacks a raw value; `None` for 0 or an unknown kind.
    pub fn from_raw(raw: u64) -> Option<Self> {
        OpKind::from_u8((raw & 0xff) as u8).map(|_| Self(raw))
    }

    /// The raw value handed to the kernel.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// The op kind.
    pub fn kind(self) -> OpKind {
        // INVARIANT: every constructor stores a valid kind in the low byte.
        OpKind::from_u8((self.0 & 0xff) as u8).unwrap_or(OpKind::Recv)
    }

    /// The slot.
    pub fn slot(self) -> u32 {
        ((self.0 >> 8) as u32) & (MAX_SLOTS - 1)
    }

    /// The generation.
    pub fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Slot and generation as a connection key.
    pub fn key(self) -> ConnKey {
        ConnKey {
            slot: self.slot(),
            generation: self.generation(),
        }
    }
}

/// Received bytes lent by the driver: which buffer and how many bytes. Pass it to
/// [`Driver::recv_buf`] to read them and to [`Driver::release`] when done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvBuf {
    /// Buffer id in the driver's pool (always 0 for the epoll scratch buffer).
    pub id: u16,
    /// Bytes received.
    pub len: u32,
}

/// Something the kernel reported, already translated to the shard's terms.
#[derive(Debug)]
pub enum Event {
    /// The listener accepted a connection; the shard decides whether to keep it.
    Accepted(OwnedFd),
    /// Accepting failed (for example EMFILE); the driver retries on its own a little later.
    AcceptError(io::Error),
    /// An adopted, connecting socket became writable: `Ok` when connected, and receiving has
    /// started; the connect error otherwise (the socket is still registered: close it).
    Connected {
        /// The connection.
        key: ConnKey,
        /// Outcome of the non-blocking connect.
        result: io::Result<()>,
    },
    /// Bytes arrived; read them with [`Driver::recv_buf`], then [`Driver::release`] the buffer.
    Recv {
        /// The connection.
        key: ConnKey,
        /// Where the bytes are.
        buf: RecvBuf,
    },
    /// Receiving stopped without end of stream (the buffer pool ran dry): call
    /// [`Driver::resume_recv`]; the unread bytes wait in the socket.
    RecvStopped {
        /// The connection.
        key: ConnKey,
    },
    /// The peer closed its sending side, or receiving failed (reset); the socket is done.
    Eof {
        /// The connection.
        key: ConnKey,
    },
    /// The send started by [`Driver::send`] completed: how many bytes went out (maybe fewer
    /// than queued: send the rest again), or why it failed.
    Sent {
        /// The connection.
        key: ConnKey,
        /// Bytes written, or the error.
        result: io::Result<usize>,
    },
    /// The doorbell rang: another thread left messages in this shard's mailbox.
    Wake,
}

impl Event {
    /// The connection the event is about; `None` for the listener and the doorbell.
    fn key(&self) -> Option<ConnKey> {
        match self {
            Self::Connected { key, .. }
            | Self::Recv { key, .. }
            | Self::RecvStopped { key }
            | Self::Eof { key }
            | Self::Sent { key, .. } => Some(*key),
            Self::Accepted(_) | Self::AcceptError(_) | Self::Wake => None,
        }
    }
}

/// Most frames gathered into one send. Linux's `UIO_MAXIOV` is 1024; 64 frames already cover
/// far more bytes than one socket send buffer takes in one call.
pub const MAX_SEND_FRAMES: usize = 64;

/// One shard's event-loop backend. Every method is called from the shard's own thread.
pub trait Driver {
    /// The backend's name for logs: `io_uring` or `epoll`.
    fn backend(&self) -> &'static str;

    /// Starts accepting on `listener` (bound, listening, non-blocking), which the driver now owns.
    fn listen(&mut self, listener: OwnedFd) -> io::Result<()>;

    /// Stops accepting and closes the listener (graceful drain).
    fn stop_accepting(&mut self);

    /// Takes an accepted socket under `key` and starts receiving on it.
    fn register(&mut self, key: ConnKey, socket: OwnedFd) -> io::Result<()>;

    /// Takes a socket the caller created and started connecting (non-blocking) under `key`;
    /// [`Event::Connected`] reports the outcome, after which it behaves as an accepted one.
    fn adopt_connecting(&mut self, key: ConnKey, socket: OwnedFd) -> io::Result<()>;

    /// Starts receiving again after [`Event::RecvStopped`].
    fn resume_recv(&mut self, key: ConnKey);

    /// Sends `frames` (drained from the vector, at most [`MAX_SEND_FRAMES`]) in one gathered
    /// send. At most one send per connection is in flight: wait for [`Event::Sent`].
    fn send(&mut self, key: ConnKey, frames: &mut Vec<Bytes>);

    /// Closes the socket; no further event is reported for `key`. Buffers of a send still in
    /// flight stay alive until the kernel is done with them, and the descriptor number is not
    /// freed while a queued submission names it, so nothing queued for `key` can reach a
    /// socket that later gets the same number.
    fn close(&mut self, key: ConnKey);

    /// Submits what was queued and blocks until at least one event is ready or `timeout`
    /// passes. Returns at once when events are already waiting.
    fn wait(&mut self, timeout: Duration) -> io::Result<()>;

    /// Next ready event, if any.
    fn poll_event(&mut self) -> Option<Event>;

    /// The bytes of an [`Event::Recv`], writable so the WebSocket decoder can unmask in place.
    fn recv_buf(&mut self, buf: RecvBuf) -> &mut [u8];

    /// Gives the buffer of an [`Event::Recv`] back to the pool.
    fn release(&mut self, buf: RecvBuf);

    /// A handle other threads use to ring this driver's doorbell ([`Event::Wake`]).
    fn waker(&self) -> sys::Waker;
}

/// Entry `slot` of a driver's slot table, growing the table with empty slots to reach it: both
/// backends keep one entry per connection slot the shard has used.
fn slot_mut<S: Default>(slots: &mut Vec<S>, slot: u32) -> &mut S {
    let index = slot as usize;
    if slots.len() <= index {
        slots.resize_with(index + 1, S::default);
    }
    &mut slots[index]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips_and_is_never_zero() {
        let cases = [
            (OpKind::Accept, 0, 0),
            (OpKind::Recv, 1, 7),
            (OpKind::Send, MAX_SLOTS - 1, u32::MAX),
            (OpKind::Connect, 12345, 0x8000_0000),
        ];
        for (kind, slot, generation) in cases {
            let data = UserData::new(kind, slot, generation);
            assert_ne!(data.raw(), 0);
            let back = UserData::from_raw(data.raw()).expect("valid user_data");
            assert_eq!(
                (back.kind(), back.slot(), back.generation()),
                (kind, slot, generation)
            );
        }
    }

    #[test]
    fn zero_and_unknown_kinds_are_rejected() {
        assert_eq!(UserData::from_raw(0), None);
        assert_eq!(UserData::from_raw(0xff), None);
        assert_eq!(UserData::from_raw(1 << 32), None);
    }
}
