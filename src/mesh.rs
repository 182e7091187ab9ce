//! Mailboxes between threads and shards. Shards share nothing; everything one thread asks of a
//! shard arrives here as a message, followed by a ring of the shard's doorbell (the driver's
//! eventfd), so a sleeping shard wakes and reads its mailbox in its own loop turn.
//!
//! Senders are the process's control thread (drain on a signal), the other shards (a Pusher
//! publish reaches each shard that has subscribers of the channel as one message carrying the
//! reference-counted frame, see `docs/architecture.md`, fan-out) and any other thread given a
//! lane of its own (a bridge feeding publishes from elsewhere takes the lane after the shards').
//!
//! # Lanes
//!
//! - **Data lanes.** Every sender has its own bounded queue into every shard, one per ordered
//!   sender-to-shard pair, holding publishes. One producer and one consumer per queue keep its
//!   lock nearly always free, and a sender that floods one shard fills only its own lane: the
//!   other senders' publishes to that shard still get through.
//! - **The control lane.** Terminations (`TerminateUser`) go to one bounded queue per shard that
//!   the shard empties before any data; a drain is a flag, so it is never queued at all, never
//!   lost and never waits behind anything.
//!
//! A full lane drops the message and counts it (`ringcast_mesh_dropped_total{lane,reason}`); the
//! sender hears [`SendError::Full`]. Delivery over the mesh is at most once, as it is from a shard
//! to a slow client: a publish must not stall the shard that sends it, nor grow memory without
//! limit while the receiving shard is behind.
//!
//! # Turns
//!
//! A shard reads at most `turn_budget` data messages per loop turn ([`Mailbox::take_turn`]),
//! taken round robin across the lanes, so a publish storm cannot starve its flushes, timers and
//! accepts. What is left waits for the next turn, and the mailbox rings its own doorbell so that
//! turn comes at once instead of after a sleep.
//!
//! The doorbell is rung once per batch: a sender rings only when the shard has not been rung
//! since it last looked, so a storm costs one eventfd write per shard turn, not one per message.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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
    /// The cluster bridge finished asking the other instances for a presence channel's members
    /// (or stopped waiting): answer the joins of the channel held meanwhile with the roster.
    PresenceReady {
        /// The app.
        app: crate::pusher::AppIndex,
        /// The presence channel.
        channel: std::sync::Arc<str>,
    },
    /// Close every connection of this shard signed in as the user (4009).
    TerminateUser {
        /// The app.
        app: crate::pusher::AppIndex,
        /// The user.
        user_id: std::sync::Arc<str>,
    },
}

/// The shape of one shard's mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MeshConfig {
    /// Data lanes: one per sender of publishes (the shards, then any other sending thread).
    pub(crate) lanes: usize,
    /// Most messages one lane holds (the control lane as well); at least 1.
    pub(crate) capacity: usize,
    /// Most data messages the shard reads per loop turn; at least 1.
    pub(crate) turn_budget: usize,
}

impl MeshConfig {
    /// The mailbox of a process configured by `config`, with `lanes` data senders.
    pub(crate) fn for_config(config: &crate::config::Config, lanes: usize) -> Self {
        Self {
            lanes,
            capacity: config.mesh_queue_capacity,
            turn_budget: config.mesh_turn_budget,
        }
    }
}

/// Why a message was not left in a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The lane is full: the shard is behind. The message was dropped and counted.
    Full,
    /// The shard stopped; nobody reads this mailbox any more.
    Gone,
    /// The sender's lane does not exist: the mailbox was built with fewer lanes.
    NoLane,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Full => "the shard's mailbox lane is full; the message was dropped",
            Self::Gone => "the shard has stopped",
            Self::NoLane => "the mailbox has no lane for this sender",
        })
    }
}

impl std::error::Error for SendError {}

/// Messages dropped because a lane was full, counted since the mailbox was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Dropped {
    /// Publishes refused by a full data lane.
    pub(crate) data: u64,
    /// Control messages refused by a full control lane.
    pub(crate) control: u64,
}

/// A bounded queue with one lock; a lane of one sender, or the control lane.
type Queue = Mutex<VecDeque<MeshMessage>>;

/// What the senders and the shard share.
#[derive(Debug)]
struct Inbox {
    lanes: Box<[Queue]>,
    control: Queue,
    capacity: usize,
    /// A drain was asked for and the shard has not taken it yet.
    drain: AtomicBool,
    /// The doorbell was rung and the shard has not looked since.
    rung: AtomicBool,
    /// The shard still reads the mailbox.
    open: AtomicBool,
    dropped_data: AtomicU64,
    dropped_control: AtomicU64,
}

/// A queue's contents; a sender that panicked while holding the lock left whole messages.
fn lock(queue: &Queue) -> MutexGuard<'_, VecDeque<MeshMessage>> {
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sending half, held by other threads; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct MailboxSender {
    inbox: Arc<Inbox>,
    waker: Waker,
}

impl MailboxSender {
    /// Asks the shard to drain. A flag, not a queued message: it never waits behind data and
    /// is never refused for a full lane.
    pub(crate) fn drain(&self) -> Result<(), SendError> {
        if !self.inbox.open.load(Ordering::Acquire) {
            return Err(SendError::Gone);
        }
        self.inbox.drain.store(true, Ordering::Release);
        self.ring();
        Ok(())
    }

    /// Leaves `message` from sender number `from` (a shard's index, or a lane past the shards'
    /// for another thread) and wakes the shard: a publish goes to the sender's own data lane, a
    /// termination to the control lane, a drain to [`MailboxSender::drain`].
    pub(crate) fn send(&self, from: usize, message: MeshMessage) -> Result<(), SendError> {
        if !self.inbox.open.load(Ordering::Acquire) {
            return Err(SendError::Gone);
        }
        let (queue, dropped) = match message {
            MeshMessage::Drain => return self.drain(),
            MeshMessage::Publish { .. } => (
                self.inbox.lanes.get(from).ok_or(SendError::NoLane)?,
                &self.inbox.dropped_data,
            ),
            MeshMessage::TerminateUser { .. } | MeshMessage::PresenceReady { .. } => {
                (&self.inbox.control, &self.inbox.dropped_control)
            }
        };
        {
            let mut queue = lock(queue);
            if queue.len() >= self.inbox.capacity {
                dropped.fetch_add(1, Ordering::Relaxed);
                return Err(SendError::Full);
            }
            queue.push_back(message);
        }
        self.ring();
        Ok(())
    }

    /// Rings the doorbell unless it was rung since the shard last looked.
    fn ring(&self) {
        if !self.inbox.rung.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }
}

/// The receiving half, owned by the shard.
#[derive(Debug)]
pub(crate) struct Mailbox {
    inbox: Arc<Inbox>,
    /// Rings the shard's own doorbell when a turn leaves data behind.
    own: MailboxSender,
    turn_budget: usize,
    /// The lane the next turn starts at, so no lane is always served first.
    next_lane: usize,
}

impl Mailbox {
    /// A mailbox shaped by `config` whose senders ring `waker`.
    pub(crate) fn new(waker: Waker, config: &MeshConfig) -> (MailboxSender, Mailbox) {
        let inbox = Arc::new(Inbox {
            lanes: (0..config.lanes).map(|_| Queue::default()).collect(),
            control: Queue::default(),
            capacity: config.capacity.max(1),
            drain: AtomicBool::new(false),
            rung: AtomicBool::new(false),
            open: AtomicBool::new(true),
            dropped_data: AtomicU64::new(0),
            dropped_control: AtomicU64::new(0),
        });
        let sender = MailboxSender {
            inbox: Arc::clone(&inbox),
            waker,
        };
        let mailbox = Mailbox {
            inbox,
            own: sender.clone(),
            turn_budget: config.turn_budget.max(1),
            next_lane: 0,
        };
        (sender, mailbox)
    }

    /// This turn's mail, appended to `out` in the order to act on it: a drain when one was
    /// asked for, every control message, then at most the turn budget of data messages, taken
    /// round robin across the lanes. Nothing when the doorbell was not rung since the last
    /// turn. `true` when the budget ran out with data still queued: the doorbell is rung again,
    /// so the loop takes the rest in its next turn without sleeping.
    pub(crate) fn take_turn(&mut self, out: &mut VecDeque<MeshMessage>) -> bool {
        if !self.inbox.rung.swap(false, Ordering::AcqRel) {
            return false;
        }
        if self.inbox.drain.swap(false, Ordering::AcqRel) {
            out.push_back(MeshMessage::Drain);
        }
        out.extend(lock(&self.inbox.control).drain(..));
        let lanes = self.inbox.lanes.len();
        if lanes == 0 {
            return false;
        }
        let mut budget = self.turn_budget;
        // Each pass takes up to an equal share from every lane; passes repeat while some lane
        // still gave something and budget is left.
        let share = (budget / lanes).max(1);
        let start = self.next_lane % lanes;
        self.next_lane = start + 1;
        loop {
            let mut took = 0;
            for at in (start..lanes).chain(0..start) {
                if budget == 0 {
                    break;
                }
                let mut lane = lock(&self.inbox.lanes[at]);
                let n = lane.len().min(share).min(budget);
                out.extend(lane.drain(..n));
                budget -= n;
                took += n;
            }
            if budget == 0 {
                let left = self.inbox.lanes.iter().any(|lane| !lock(lane).is_empty());
                if left {
                    self.own.ring();
                }
                return left;
            }
            if took == 0 {
                return false;
            }
        }
    }

    /// Data messages still queued, over every lane.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.inbox.lanes.iter().map(|lane| lock(lane).len()).sum()
    }

    /// Messages dropped so far because this mailbox's lanes were full.
    pub(crate) fn dropped(&self) -> Dropped {
        Dropped {
            data: self.inbox.dropped_data.load(Ordering::Relaxed),
            control: self.inbox.dropped_control.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Mailbox {
    /// Tells senders the shard is gone and frees what was still queued (frames included).
    fn drop(&mut self) {
        self.inbox.open.store(false, Ordering::Release);
        for lane in &self.inbox.lanes {
            lock(lane).clear();
        }
        lock(&self.inbox.control).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pusher::{AppIndex, encode_event_frame};
    use std::os::fd::{AsRawFd, OwnedFd};

    fn config(lanes: usize, capacity: usize, turn_budget: usize) -> MeshConfig {
        MeshConfig {
            lanes,
            capacity,
            turn_budget,
        }
    }

    fn mailbox(config: &MeshConfig) -> (Arc<OwnedFd>, MailboxSender, Mailbox) {
        let eventfd = Arc::new(crate::driver::sys::eventfd().expect("eventfd"));
        let (tx, mailbox) = Mailbox::new(Waker::new(Arc::clone(&eventfd)), config);
        (eventfd, tx, mailbox)
    }

    /// The doorbell's counter, reset to 0; 0 when it was not rung.
    fn rings(eventfd: &OwnedFd) -> u64 {
        let mut counter = [0u8; 8];
        match crate::driver::sys::read(eventfd.as_raw_fd(), &mut counter) {
            Ok(8) => u64::from_ne_bytes(counter),
            _ => 0,
        }
    }

    /// Publish number `n`, told apart by its channel.
    fn publish(n: u8) -> MeshMessage {
        MeshMessage::Publish {
            app: AppIndex(0),
            channel: Arc::from(n.to_string()),
            frame: encode_event_frame("e", "c", "{}", None),
            exclude: None,
        }
    }

    fn terminate(user: &str) -> MeshMessage {
        MeshMessage::TerminateUser {
            app: AppIndex(0),
            user_id: Arc::from(user),
        }
    }

    fn turn(mailbox: &mut Mailbox) -> Vec<MeshMessage> {
        let mut out = VecDeque::new();
        let left = mailbox.take_turn(&mut out);
        assert_eq!(left, mailbox.queued() > 0, "says whether data was left");
        out.into()
    }

    #[test]
    fn message_arrives_and_rings_the_doorbell() {
        let (eventfd, tx, mut mailbox) = mailbox(&config(1, 4, 4));
        assert_eq!(turn(&mut mailbox), []);
        assert_eq!(tx.send(0, publish(1)), Ok(()));
        assert_eq!(rings(&eventfd), 1);
        assert_eq!(turn(&mut mailbox), [publish(1)]);
    }

    #[test]
    fn a_batch_rings_the_doorbell_once_until_the_shard_looks() {
        let (eventfd, tx, mut mailbox) = mailbox(&config(1, 8, 8));
        for n in 0..5 {
            assert_eq!(tx.send(0, publish(n)), Ok(()));
        }
        assert_eq!(rings(&eventfd), 1);
        assert_eq!(turn(&mut mailbox).len(), 5);
        assert_eq!(tx.send(0, publish(9)), Ok(()));
        assert_eq!(rings(&eventfd), 1, "rung again once the shard looked");
    }

    #[test]
    fn a_full_lane_drops_and_counts_the_publish() {
        let (_eventfd, tx, mut mailbox) = mailbox(&config(2, 3, 16));
        for n in 0..3 {
            assert_eq!(tx.send(0, publish(n)), Ok(()));
        }
        assert_eq!(tx.send(0, publish(3)), Err(SendError::Full));
        assert_eq!(tx.send(0, publish(4)), Err(SendError::Full));
        assert_eq!(
            mailbox.dropped(),
            Dropped {
                data: 2,
                control: 0
            }
        );
        // Another sender's lane is its own: the flood of sender 0 does not refuse sender 1.
        assert_eq!(tx.send(1, publish(7)), Ok(()));
        let got = turn(&mut mailbox);
        assert_eq!(got.len(), 4);
        assert!(got.contains(&publish(7)));
        assert!(!got.contains(&publish(3)), "the dropped publish is gone");
        assert_eq!(tx.send(0, publish(5)), Ok(()), "room again once read");
    }

    #[test]
    fn drain_and_terminations_are_delivered_while_the_data_lane_is_full() {
        let (_eventfd, tx, mut mailbox) = mailbox(&config(1, 2, 1));
        assert_eq!(tx.send(0, publish(0)), Ok(()));
        assert_eq!(tx.send(0, publish(1)), Ok(()));
        assert_eq!(tx.send(0, publish(2)), Err(SendError::Full));
        assert_eq!(tx.send(0, terminate("u")), Ok(()));
        assert_eq!(tx.drain(), Ok(()));
        // Control comes first, ahead of the data queued before it, and the budget of one data
        // message per turn does not hold it back.
        assert_eq!(
            turn(&mut mailbox),
            [MeshMessage::Drain, terminate("u"), publish(0)]
        );
        assert_eq!(turn(&mut mailbox), [publish(1)]);
    }

    #[test]
    fn a_full_control_lane_drops_and_counts_but_a_drain_still_gets_through() {
        let (_eventfd, tx, mut mailbox) = mailbox(&config(1, 1, 4));
        assert_eq!(tx.send(0, terminate("a")), Ok(()));
        assert_eq!(tx.send(0, terminate("b")), Err(SendError::Full));
        assert_eq!(tx.send(0, MeshMessage::Drain), Ok(()));
        assert_eq!(mailbox.dropped().control, 1);
        assert_eq!(turn(&mut mailbox), [MeshMessage::Drain, terminate("a")]);
    }

    #[test]
    fn a_turn_reads_at_most_the_budget_and_comes_back_for_the_rest() {
        let (eventfd, tx, mut mailbox) = mailbox(&config(2, 100, 4));
        for n in 0..10 {
            assert_eq!(tx.send(0, publish(n)), Ok(()));
        }
        assert_eq!(tx.send(1, publish(100)), Ok(()));
        assert_eq!(rings(&eventfd), 1);
        let first = turn(&mut mailbox);
        assert_eq!(first.len(), 4);
        assert!(
            first.contains(&publish(100)),
            "both lanes served in one turn"
        );
        assert_eq!(rings(&eventfd), 1, "data left: the mailbox rang itself");
        assert_eq!(turn(&mut mailbox).len(), 4);
        assert_eq!(rings(&eventfd), 1);
        assert_eq!(turn(&mut mailbox), [publish(7), publish(8), publish(9)]);
        assert_eq!(
            rings(&eventfd),
            0,
            "nothing left: no ring, the loop may sleep"
        );
        assert_eq!(turn(&mut mailbox), []);
        for n in 0..4 {
            assert_eq!(tx.send(0, publish(n)), Ok(()));
        }
        assert_eq!(rings(&eventfd), 1);
        assert_eq!(turn(&mut mailbox).len(), 4);
        assert_eq!(
            rings(&eventfd),
            0,
            "exactly the budget: nothing left, no ring"
        );
    }

    #[test]
    fn lanes_keep_each_senders_order() {
        let (_eventfd, tx, mut mailbox) = mailbox(&config(3, 100, 1000));
        for n in 0..30 {
            assert_eq!(tx.send(usize::from(n % 3), publish(n)), Ok(()));
        }
        let got = turn(&mut mailbox);
        for lane in 0..3 {
            let order: Vec<&MeshMessage> = got
                .iter()
                .filter(|m| match m {
                    MeshMessage::Publish { channel, .. } => {
                        channel.parse::<u8>().is_ok_and(|n| n % 3 == lane)
                    }
                    _ => false,
                })
                .collect();
            let expected: Vec<MeshMessage> =
                (0..30).filter(|n| n % 3 == lane).map(publish).collect();
            assert_eq!(order, expected.iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn send_to_a_gone_shard_or_a_missing_lane_is_refused() {
        let (_eventfd, tx, mailbox) = mailbox(&config(1, 4, 4));
        assert_eq!(tx.send(1, publish(0)), Err(SendError::NoLane));
        drop(mailbox);
        assert_eq!(tx.send(0, publish(0)), Err(SendError::Gone));
        assert_eq!(tx.drain(), Err(SendError::Gone));
    }
}
