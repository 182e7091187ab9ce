//! Mailboxes between threads and shards. Shards share nothing; everything one thread asks of a
//! shard arrives here as a message, followed by a ring of the shard's doorbell (the driver's
//! eventfd), so a sleeping shard wakes and drains its mailbox in its own loop turn.
//!
//! Senders are the process's control thread (drain on a signal) and the other shards: a Pusher
//! publish reaches each shard that has subscribers of the channel as one message carrying the
//! reference-counted frame (see `docs/architecture.md`, fan-out). The queue could become one
//! SPSC ring per ordered shard pair with the doorbell rung only when the target is about to
//! sleep.

use std::sync::mpsc;

use crate::driver::sys::Waker;

/// What one thread can ask of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MeshMessage {
    /// Graceful drain: stop accepting, answer handshakes 503, close open connections with 1001,
    /// exit when they are gone or the drain timeout passes.
    Drain,
    /// Deliver a frame published on another shard to this shard's subscribers of the channel.
    /// The frame is the publisher's buffer (a reference count), not a copy.
    Publish {
        /// The app.
        app: crate::pusher::AppIndex,
        /// The channel.
        channel: std::sync::Arc<str>,
        /// The encoded event.
        frame: crate::pusher::Frame,
        /// A connection that must not receive it (the sender of a client event, or the
        /// `socket_id` of an API call).
        exclude: Option<crate::pusher::SocketId>,
    },
    /// Close every connection of this shard signed in as the user (4009).
    TerminateUser {
        /// The app.
        app: crate::pusher::AppIndex,
        /// The user.
        user_id: std::sync::Arc<str>,
    },
}

/// The sending half, held by other threads; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct MailboxSender {
    tx: mpsc::Sender<MeshMessage>,
    waker: Waker,
}

impl MailboxSender {
    /// Leaves `message` and wakes the shard. `false` when the shard is gone.
    pub(crate) fn send(&self, message: MeshMessage) -> bool {
        let sent = self.tx.send(message).is_ok();
        if sent {
            self.waker.wake();
        }
        sent
    }
}

/// The receiving half, owned by the shard.
#[derive(Debug)]
pub(crate) struct Mailbox {
    rx: mpsc::Receiver<MeshMessage>,
}

impl Mailbox {
    /// A mailbox whose senders ring `waker`.
    pub(crate) fn new(waker: Waker) -> (MailboxSender, Mailbox) {
        let (tx, rx) = mpsc::channel();
        (MailboxSender { tx, waker }, Mailbox { rx })
    }

    /// The next message waiting, if any; never blocks.
    pub(crate) fn poll_message(&self) -> Option<MeshMessage> {
        self.rx.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn message_arrives_and_rings_the_doorbell() {
        let eventfd = Arc::new(crate::driver::sys::eventfd().expect("eventfd"));
        let (tx, mailbox) = Mailbox::new(Waker::new(Arc::clone(&eventfd)));
        assert_eq!(mailbox.poll_message(), None);
        assert!(tx.send(MeshMessage::Drain));
        assert_eq!(mailbox.poll_message(), Some(MeshMessage::Drain));
        let mut counter = [0u8; 8];
        let n = crate::driver::sys::read(std::os::fd::AsRawFd::as_raw_fd(&*eventfd), &mut counter)
            .expect("doorbell rang");
        assert_eq!((n, u64::from_ne_bytes(counter)), (8, 1));
    }

    #[test]
    fn send_to_a_gone_shard_reports_false() {
        let eventfd = Arc::new(crate::driver::sys::eventfd().expect("eventfd"));
        let (tx, mailbox) = Mailbox::new(Waker::new(eventfd));
        drop(mailbox);
        assert!(!tx.send(MeshMessage::Drain));
    }
}
