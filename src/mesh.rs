//! Mailboxes between threads and shards. Shards share nothing; everything one thread asks of a
//! shard arrives here as a message, followed by a ring of the shard's doorbell (the driver's
//! eventfd), so a sleeping shard wakes and drains its mailbox in its own loop turn.
//!
//! Today the only sender is the process's control thread (drain on a signal). The shape is the
//! one pub/sub fan-out needs later: a message per target shard carrying reference-counted frames,
//! at which point the queue becomes one SPSC ring per ordered shard pair with the doorbell rung
//! only when the target is about to sleep.

use std::sync::mpsc;

use crate::driver::sys::Waker;

/// What one thread can ask of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshMessage {
    /// Graceful drain: stop accepting, answer handshakes 503, close open connections with 1001,
    /// exit when they are gone or the drain timeout passes.
    Drain,
    /// Stop at once, closing every socket without a close handshake.
    Stop,
}

/// The sending half, held by other threads; cheap to clone.
#[derive(Debug, Clone)]
pub struct MailboxSender {
    tx: mpsc::Sender<MeshMessage>,
    waker: Waker,
}

impl MailboxSender {
    /// Leaves `message` and wakes the shard. `false` when the shard is gone.
    pub fn send(&self, message: MeshMessage) -> bool {
        let sent = self.tx.send(message).is_ok();
        if sent {
            self.waker.wake();
        }
        sent
    }
}

/// The receiving half, owned by the shard.
#[derive(Debug)]
pub struct Mailbox {
    rx: mpsc::Receiver<MeshMessage>,
}

impl Mailbox {
    /// A mailbox whose senders ring `waker`.
    pub fn new(waker: Waker) -> (MailboxSender, Mailbox) {
        let (tx, rx) = mpsc::channel();
        (MailboxSender { tx, waker }, Mailbox { rx })
    }

    /// The next message waiting, if any; never blocks.
    pub fn poll_message(&self) -> Option<MeshMessage> {
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
        assert!(!tx.send(MeshMessage::Stop));
    }
}
