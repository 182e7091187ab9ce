//! A connection's queue of encoded frames waiting for the socket. Frames are reference-counted
//! [`Bytes`], so a frame fanned out to many connections is encoded once and shared. An empty
//! outbox owns no heap memory: the queue's allocation is released when it drains.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::driver::MAX_SEND_FRAMES;

/// The queue.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    frames: VecDeque<Bytes>,
    /// Bytes of `frames[0]` already sent.
    head_sent: u32,
    /// Bytes queued and not yet sent, `head_sent` excluded.
    queued: u32,
}

impl Outbox {
    /// Appends a frame; empty frames are ignored.
    pub(crate) fn push(&mut self, frame: Bytes) {
        if !frame.is_empty() {
            self.queued = self.queued.saturating_add(frame.len() as u32);
            self.frames.push_back(frame);
        }
    }

    /// Bytes waiting to be sent.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued as usize
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Fills `out` with the unsent bytes of up to [`MAX_SEND_FRAMES`] frames, as cheap clones,
    /// for one gathered send.
    pub(crate) fn poll_transmit(&self, out: &mut Vec<Bytes>) {
        out.clear();
        for (i, frame) in self.frames.iter().take(MAX_SEND_FRAMES).enumerate() {
            if i == 0 {
                out.push(frame.slice((self.head_sent as usize).min(frame.len())..));
            } else {
                out.push(frame.clone());
            }
        }
    }

    /// Drops `sent` bytes from the front after a send completed.
    pub(crate) fn handle_sent(&mut self, mut sent: usize) {
        self.queued = self.queued.saturating_sub(sent as u32);
        while sent > 0 {
            let Some(front) = self.frames.front() else {
                break;
            };
            let left = front.len() - (self.head_sent as usize).min(front.len());
            if sent < left {
                self.head_sent += sent as u32;
                break;
            }
            sent -= left;
            self.head_sent = 0;
            self.frames.pop_front();
        }
        if self.frames.is_empty() {
            self.frames = VecDeque::new();
            self.head_sent = 0;
            self.queued = 0;
        }
    }

    /// Drops whole frames from the front, sparing the first `keep` (handed to the driver and
    /// possibly half sent), until at most `max` bytes are queued or nothing more can go.
    /// Returns how many frames were dropped.
    pub(crate) fn drop_oldest(&mut self, keep: usize, max: usize) -> usize {
        let mut dropped = 0;
        while self.queued as usize > max {
            let Some(frame) = self
                .frames
                .remove(keep.max(usize::from(self.head_sent > 0)))
            else {
                break;
            };
            self.queued = self.queued.saturating_sub(frame.len() as u32);
            dropped += 1;
        }
        dropped
    }

    /// Drops every frame not yet handed to the driver (a send in flight holds its own clones).
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Drops every frame the socket has not started on, sparing the first `keep` (handed to a
    /// send that has not completed: what it takes is only known then) and a frame partly sent
    /// (the peer must get its rest before anything else can follow). What is left ends on a
    /// frame boundary once sent, so a close frame can be queued behind it.
    pub(crate) fn drop_unstarted(&mut self, keep: usize) {
        let keep = keep.max(usize::from(self.head_sent > 0));
        self.frames.truncate(keep);
        if self.frames.is_empty() {
            *self = Self::default();
            return;
        }
        let total: usize = self.frames.iter().map(Bytes::len).sum();
        self.queued = (total - (self.head_sent as usize).min(total)) as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_oldest_spares_frames_in_flight_and_stops_at_the_cap() {
        let mut outbox = Outbox::default();
        for byte in 0..5u8 {
            outbox.push(Bytes::from(vec![byte; 10]));
        }
        assert_eq!(outbox.drop_oldest(1, 30), 2, "frames 1 and 2 go");
        assert_eq!(outbox.queued_bytes(), 30);
        assert_eq!(
            transmit(&outbox)[..],
            [[0u8; 10], [3; 10], [4; 10]].concat()[..]
        );
        assert_eq!(outbox.drop_oldest(3, 0), 0, "everything left is in flight");
    }

    fn transmit(outbox: &Outbox) -> Vec<u8> {
        let mut frames = Vec::new();
        outbox.poll_transmit(&mut frames);
        frames.concat()
    }

    #[test]
    fn partial_sends_resume_mid_frame() {
        let mut outbox = Outbox::default();
        outbox.push(Bytes::from_static(b"hello"));
        outbox.push(Bytes::new());
        outbox.push(Bytes::from_static(b"world"));
        assert_eq!(outbox.queued_bytes(), 10);
        assert_eq!(transmit(&outbox), b"helloworld");
        outbox.handle_sent(3);
        assert_eq!(transmit(&outbox), b"loworld");
        outbox.handle_sent(4);
        assert_eq!(transmit(&outbox), b"rld");
        assert_eq!(outbox.queued_bytes(), 3);
        outbox.handle_sent(3);
        assert!(outbox.is_empty());
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[test]
    fn drop_unstarted_keeps_the_frames_in_flight_and_the_rest_of_a_started_one() {
        let mut outbox = Outbox::default();
        for byte in 0..4u8 {
            outbox.push(Bytes::from(vec![byte; 10]));
        }
        outbox.drop_unstarted(2);
        assert_eq!(
            outbox.queued_bytes(),
            20,
            "the two handed to the driver stay"
        );
        outbox.handle_sent(13);
        outbox.drop_unstarted(0);
        assert_eq!(
            transmit(&outbox),
            [1u8; 7],
            "the rest of the started frame stays"
        );
        outbox.handle_sent(7);
        outbox.push(Bytes::from_static(b"close"));
        outbox.drop_unstarted(0);
        assert!(outbox.is_empty(), "a frame not started goes");
        assert_eq!(outbox.frames.capacity(), 0);
    }

    #[test]
    fn drained_outbox_releases_its_queue() {
        let mut outbox = Outbox::default();
        for _ in 0..10 {
            outbox.push(Bytes::from_static(b"x"));
        }
        outbox.handle_sent(10);
        assert_eq!(outbox.frames.capacity(), 0);
    }

    #[test]
    fn one_transmit_gathers_at_most_the_frame_cap() {
        let mut outbox = Outbox::default();
        for _ in 0..MAX_SEND_FRAMES + 5 {
            outbox.push(Bytes::from_static(b"ab"));
        }
        let mut frames = Vec::new();
        outbox.poll_transmit(&mut frames);
        assert_eq!(frames.len(), MAX_SEND_FRAMES);
    }
}
