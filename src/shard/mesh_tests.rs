//! The shard loop under a publish storm, on both drivers over real loopback sockets: with far
//! more mail queued than one turn's budget, a turn takes at most the budget, connections are
//! still answered (a read echoed and flushed, a new client accepted and upgraded) while mail is
//! left, and the loop does not sleep between turns while it is; and a drain gets through a full
//! data lane.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{ConnLimit, Shard, TICK};
use crate::config::Config;
use crate::driver::Driver;
use crate::driver::epoll::EpollDriver;
use crate::driver::uring::{self, UringConfig, UringDriver};
use crate::mesh::{Mailbox, MailboxSender, MeshConfig, MeshMessage, SendError};
use crate::pusher::{AppIndex, encode_event_frame};
use crate::ws::{self, OpCode};

/// Data messages a turn may take.
const BUDGET: usize = 8;

/// Publishes queued at once: forty turns' worth.
const STORM: usize = 40 * BUDGET;

/// Most turns a step may take before the test gives up on it: five times what the storm needs.
const MAX_TURNS: usize = 5 * STORM / BUDGET;

const UPGRADE: &[u8] = b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// A shard on a real driver and listener, with the sending half of its mailbox.
struct Rig<D: Driver> {
    shard: Shard<D>,
    mail: MailboxSender,
    transmit: Vec<Bytes>,
    addr: SocketAddr,
}

impl<D: Driver> Rig<D> {
    fn new(driver: D) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local addr");
        let config = Config {
            mesh_turn_budget: BUDGET,
            mesh_queue_capacity: STORM,
            ..Config::default()
        };
        let (mail, mailbox) = Mailbox::new(driver.waker(), &MeshConfig::for_config(&config, 1));
        let limit = Arc::new(ConnLimit::new(100));
        let shard = Shard::new(
            driver,
            OwnedFd::from(listener),
            Arc::new(config),
            mailbox,
            limit,
        )
        .expect("shard");
        Self {
            shard,
            mail,
            transmit: Vec::new(),
            addr,
        }
    }

    /// Mail still queued in the mailbox.
    fn queued(&self) -> usize {
        self.shard.core.mailbox.queued()
    }

    /// One loop turn; fails the test when it takes more than the budget.
    fn turn(&mut self) {
        let before = self.queued();
        let done = self.shard.turn(&mut self.transmit).expect("turn");
        assert!(!done, "no drain was asked for");
        let taken = before.saturating_sub(self.queued());
        assert!(taken <= BUDGET, "one turn took {taken} messages");
    }

    /// Turns until `done`; how many it took.
    fn turn_until(&mut self, mut done: impl FnMut(&mut Self) -> bool) -> usize {
        for turns in 1..=MAX_TURNS {
            self.turn();
            if done(self) {
                return turns;
            }
        }
        panic!("not done after {MAX_TURNS} turns");
    }
}

/// A publish to a channel nobody on the shard subscribes to: each costs the shard a lookup.
fn publish() -> MeshMessage {
    MeshMessage::Publish {
        app: AppIndex(0),
        channel: Arc::from("storm"),
        frame: encode_event_frame("tick", "storm", "{}", None),
        exclude: None,
    }
}

/// A client that never blocks: what it reads piles up in `got`.
struct Client {
    stream: TcpStream,
    got: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Self {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.write_all(UPGRADE).expect("upgrade request");
        stream.set_nonblocking(true).expect("non-blocking");
        Self {
            stream,
            got: Vec::new(),
        }
    }

    /// Reads what arrived; `true` once `got` holds `want` somewhere.
    fn has(&mut self, want: &[u8]) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        self.got.windows(want.len()).any(|w| w == want)
    }
}

fn storm<D: Driver>(driver: D) {
    let mut rig = Rig::new(driver);
    let mut first = Client::connect(rig.addr);
    rig.turn_until(|_| first.has(b"\r\n\r\n"));
    assert!(first.got.starts_with(b"HTTP/1.1 101 "), "{:?}", first.got);

    for _ in 0..STORM {
        assert_eq!(rig.mail.send(0, publish()), Ok(()));
    }
    let mut frame = Vec::new();
    ws::encode_masked_frame(&mut frame, true, OpCode::Text, b"storm", [1, 2, 3, 4]);
    first.stream.write_all(&frame).expect("send a message");
    let mut second = Client::connect(rig.addr);

    // The echo is flushed and the newcomer upgraded while most of the storm still waits.
    rig.turn_until(|_| first.has(b"\x81\x05storm") && second.has(b"\r\n\r\n"));
    assert!(second.got.starts_with(b"HTTP/1.1 101 "), "{:?}", second.got);
    let left = rig.queued();
    assert!(
        left >= STORM / 2,
        "only {left} of {STORM} publishes were still queued once both clients were answered"
    );

    // The rest takes one full turn per budget, and those turns do not wait for a timer tick.
    let started = Instant::now();
    let exhausted = rig.shard.core.observe.stats.mesh_budget_exhausted;
    let turns = rig.turn_until(|rig| rig.queued() == 0);
    let elapsed = started.elapsed();
    assert_eq!(
        rig.shard.core.observe.stats.mesh_budget_exhausted - exhausted,
        turns as u64 - 1,
        "every turn but the last left mail behind and was counted"
    );
    assert!(
        turns <= left.div_ceil(BUDGET) + 1,
        "{turns} turns for {left} messages"
    );
    assert!(
        elapsed < TICK * (turns as u32) / 4,
        "{turns} turns took {elapsed:?}: the loop slept with mail waiting"
    );
}

/// A drain sent while the data lane is full starts on the next turn, ahead of the queued
/// publishes, and the open connection gets its 1001.
fn drain_through_a_full_lane<D: Driver>(driver: D) {
    let mut rig = Rig::new(driver);
    let mut client = Client::connect(rig.addr);
    rig.turn_until(|_| client.has(b"\r\n\r\n"));
    for _ in 0..STORM {
        assert_eq!(rig.mail.send(0, publish()), Ok(()));
    }
    assert_eq!(rig.mail.send(0, publish()), Err(SendError::Full));
    assert_eq!(rig.shard.core.mailbox.dropped().data, 1);
    assert_eq!(rig.mail.drain(), Ok(()));
    rig.turn();
    assert!(
        rig.shard.core.drain_until.is_some(),
        "drain began on the first turn"
    );
    assert!(rig.queued() >= STORM - BUDGET, "ahead of the publishes");
    assert_eq!(
        rig.shard.core.observe.stats.mesh_dropped_data, 1,
        "the drop reaches the shard's stats (ringcast_mesh_dropped_total)"
    );
    // Close frame, 2-byte payload 1001 plus the reason.
    rig.turn_until(|_| client.has(&[0x03, 0xe9]));
    assert!(client.got.contains(&0x88), "{:?}", client.got);
}

#[test]
fn epoll_drain_reaches_a_shard_whose_data_lane_is_full() {
    drain_through_a_full_lane(EpollDriver::new(16 * 1024).expect("epoll driver"));
}

#[test]
fn uring_drain_reaches_a_shard_whose_data_lane_is_full() {
    if let Err(why) = uring::probe() {
        eprintln!("io_uring unavailable on this kernel ({why}): skipped");
        return;
    }
    drain_through_a_full_lane(UringDriver::new(uring_config()).expect("uring driver"));
}

/// A small buffer ring: the tests' clients send a few bytes at a time.
fn uring_config() -> UringConfig {
    UringConfig {
        recv_buffers: 16,
        recv_buffer_size: 4096,
    }
}

#[test]
fn epoll_budget_bounds_each_turn_and_connections_are_served_during_a_storm() {
    storm(EpollDriver::new(16 * 1024).expect("epoll driver"));
}

#[test]
fn uring_budget_bounds_each_turn_and_connections_are_served_during_a_storm() {
    if let Err(why) = uring::probe() {
        eprintln!("io_uring unavailable on this kernel ({why}): skipped");
        return;
    }
    storm(UringDriver::new(uring_config()).expect("uring driver"));
}
