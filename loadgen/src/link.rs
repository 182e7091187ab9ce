//! The sending side of one socket, shared by the WebSocket connections of an event loop and the
//! publisher's HTTP connections: what the state asks the driver to do ([`Act`]), and the frames
//! waiting on each socket ([`Link`]) while a send is in flight.

use bytes::Bytes;
use ringcast::driver::{ConnKey, MAX_SEND_FRAMES};

/// Something the driver must do.
#[derive(Debug)]
pub enum Act {
    /// Open a socket for the slot of this key (the generation is already bumped).
    Connect(ConnKey),
    /// Queue a frame or request.
    Send(ConnKey, Bytes),
    /// Close the socket.
    Close(ConnKey),
}

/// Frames waiting to go out on one socket; exists only while something does.
#[derive(Debug, Default)]
struct Outbox {
    /// Frames not yet handed to the driver.
    queue: Vec<Bytes>,
    /// Frames of the send in flight, kept to resend what a short send left.
    inflight: Vec<Bytes>,
}

/// The sending side of one socket, shared by WebSocket and HTTP connections.
#[derive(Debug, Default)]
pub struct Link {
    /// Generation of the slot; bumped on every new socket.
    pub generation: u32,
    /// A send is in flight in the driver.
    sending: bool,
    outbox: Option<Box<Outbox>>,
}

impl Link {
    /// The driver key of the current socket.
    pub fn key(&self, slot: u32) -> ConnKey {
        ConnKey {
            slot,
            generation: self.generation,
        }
    }

    /// Forgets every frame waiting and the send in flight: the socket is new or closed.
    pub fn reset(&mut self) {
        self.sending = false;
        self.outbox = None;
    }

    /// Queues `frame`; returns whether no send is in flight, so the caller should
    /// [`Link::next_send`] now.
    pub fn queue(&mut self, frame: Bytes) -> bool {
        self.outbox.get_or_insert_default().queue.push(frame);
        !self.sending
    }

    /// Moves the next batch of waiting frames (at most [`MAX_SEND_FRAMES`]) into `frames` for
    /// the driver and marks a send in flight. Returns false, and drops the outbox, when nothing
    /// waits.
    pub fn next_send(&mut self, frames: &mut Vec<Bytes>) -> bool {
        let Some(outbox) = self.outbox.as_mut() else {
            return false;
        };
        if outbox.queue.is_empty() {
            self.outbox = None;
            return false;
        }
        let take = outbox.queue.len().min(MAX_SEND_FRAMES);
        outbox.inflight.extend(outbox.queue.drain(..take));
        frames.extend(outbox.inflight.iter().cloned());
        self.sending = true;
        true
    }

    /// The send in flight wrote `n` bytes: drops what went out; a short send leaves the rest at
    /// the front of the queue.
    pub fn handle_sent(&mut self, mut n: usize) {
        self.sending = false;
        let Some(outbox) = self.outbox.as_mut() else {
            return;
        };
        let mut rest = Vec::new();
        for frame in outbox.inflight.drain(..) {
            if n >= frame.len() {
                n -= frame.len();
            } else {
                rest.push(frame.slice(n..));
                n = 0;
            }
        }
        if !rest.is_empty() {
            rest.append(&mut outbox.queue);
            outbox.queue = rest;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_send_resends_the_rest_first() {
        let mut link = Link::default();
        assert!(link.queue(Bytes::from_static(b"abc")));
        assert!(link.queue(Bytes::from_static(b"de")));
        let mut frames = Vec::new();
        assert!(link.next_send(&mut frames));
        assert_eq!(frames, [&b"abc"[..], &b"de"[..]]);
        frames.clear();
        assert!(!link.queue(Bytes::from_static(b"f")), "a send is in flight");
        link.handle_sent(4);
        assert!(link.next_send(&mut frames));
        assert_eq!(frames, [&b"e"[..], &b"f"[..]]);
        frames.clear();
        link.handle_sent(2);
        assert!(!link.next_send(&mut frames));
        assert!(frames.is_empty());
    }
}
