//! The connection state machine driven through a fake driver: events in, bytes out, simulated
//! ticks; no sockets or clocks involved.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::conn::Phase;
use super::deadline::PING_FRAME;
use super::stream::{CONTROL_WINDOW, MAX_CONTROL_FRAMES};
use super::wheel::Tick;
use super::{ConnLimit, Shard};
use crate::config::Config;
use crate::driver::sys::Waker;
use crate::driver::{ConnKey, Driver, Event, RecvBuf};
use crate::limits::OutboxPolicy;
use crate::mesh::{Mailbox, MeshConfig};
use crate::metrics::{DisconnectReason, RejectReason, SlowConsumerCause};
use crate::ws::{self, CloseCode, CloseFrame, OpCode};

#[derive(Default)]
struct FakeDriver {
    bufs: Vec<Vec<u8>>,
    sent: Vec<(ConnKey, Vec<u8>)>,
    closed: Vec<ConnKey>,
    stopped_accepting: bool,
    waker: Option<Waker>,
}

impl Driver for FakeDriver {
    fn backend(&self) -> &'static str {
        "fake"
    }
    fn listen(&mut self, _listener: OwnedFd) -> io::Result<()> {
        Ok(())
    }
    fn stop_accepting(&mut self) {
        self.stopped_accepting = true;
    }
    fn register(&mut self, _key: ConnKey, _socket: OwnedFd) -> io::Result<()> {
        Ok(())
    }
    fn adopt_connecting(&mut self, _key: ConnKey, _socket: OwnedFd) -> io::Result<()> {
        Ok(())
    }
    fn resume_recv(&mut self, _key: ConnKey) {}
    fn send(&mut self, key: ConnKey, frames: &mut Vec<Bytes>) {
        self.sent.push((key, frames.concat()));
        frames.clear();
    }
    fn close(&mut self, key: ConnKey) {
        self.closed.push(key);
    }
    fn wait(&mut self, _timeout: Duration) -> io::Result<()> {
        Ok(())
    }
    fn poll_event(&mut self) -> Option<Event> {
        None
    }
    fn recv_buf(&mut self, buf: RecvBuf) -> &mut [u8] {
        &mut self.bufs[usize::from(buf.id)]
    }
    fn release(&mut self, _buf: RecvBuf) {}
    fn waker(&self) -> Waker {
        self.waker.clone().expect("waker")
    }
}

struct Harness {
    shard: Shard<FakeDriver>,
    transmit: Vec<Bytes>,
    _peers: VecDeque<std::os::unix::net::UnixStream>,
}

fn fd() -> (OwnedFd, std::os::unix::net::UnixStream) {
    let (a, b) = std::os::unix::net::UnixStream::pair().expect("socket pair");
    (OwnedFd::from(a), b)
}

impl Harness {
    fn new(config: Config) -> Self {
        let eventfd = Arc::new(crate::driver::sys::eventfd().expect("eventfd"));
        let waker = Waker::new(eventfd);
        let mesh = MeshConfig::for_config(&config, 1);
        let (_tx, mailbox) = Mailbox::new(waker.clone(), &mesh);
        let driver = FakeDriver {
            waker: Some(waker),
            ..FakeDriver::default()
        };
        let (listener, peer) = fd();
        let limit = Arc::new(ConnLimit::new(100));
        let shard = Shard::new(driver, listener, Arc::new(config), mailbox, limit).expect("shard");
        Self {
            shard,
            transmit: Vec::new(),
            _peers: VecDeque::from([peer]),
        }
    }

    fn accept(&mut self) -> ConnKey {
        let (socket, peer) = fd();
        self._peers.push_back(peer);
        self.shard.handle_event(Event::Accepted(socket));
        self.shard.core.conns.keys().last().expect("accepted")
    }

    /// Feeds bytes, flushes, completes every send, returns what was sent.
    fn read(&mut self, key: ConnKey, bytes: &[u8]) -> Vec<u8> {
        self.shard.driver.bufs = vec![bytes.to_vec()];
        let buf = RecvBuf {
            id: 0,
            len: bytes.len() as u32,
        };
        self.shard.handle_event(Event::Recv { key, buf });
        self.settle(key)
    }

    fn settle(&mut self, key: ConnKey) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            self.shard.flush(&mut self.transmit);
            let sent = std::mem::take(&mut self.shard.driver.sent);
            if sent.is_empty() {
                return out;
            }
            for (k, bytes) in sent {
                assert_eq!(k, key);
                out.extend_from_slice(&bytes);
                self.shard.handle_event(Event::Sent {
                    key: k,
                    result: Ok(bytes.len()),
                });
            }
        }
    }

    fn advance(&mut self, key: ConnKey, now: Tick) -> Vec<u8> {
        self.shard.core.advance(now);
        self.settle(key)
    }

    fn closed(&self, key: ConnKey) -> bool {
        self.shard.driver.closed.contains(&key) && self.shard.core.conns.get(key).is_none()
    }

    fn upgrade(&mut self, key: ConnKey) {
        let out = self.read(key, UPGRADE);
        assert!(
            out.starts_with(b"HTTP/1.1 101 "),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
}

const UPGRADE: &[u8] = b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ws::encode_masked_frame(
        &mut out,
        true,
        OpCode::from_bits(opcode).expect("op"),
        payload,
        [1, 2, 3, 4],
    );
    out
}

fn close_code(frame: &[u8]) -> u16 {
    assert_eq!(frame[0], 0x88, "not a close frame: {frame:?}");
    u16::from_be_bytes([frame[2], frame[3]])
}

#[test]
fn upgrade_then_echo_then_close_handshake() {
    let mut h = Harness::new(Config::default());
    let key = h.accept();
    h.upgrade(key);
    assert!(
        h.shard.core.conns.get(key).expect("conn").head.is_none(),
        "head reader freed"
    );
    assert_eq!(h.read(key, &masked(0x1, b"hello")), b"\x81\x05hello");
    assert_eq!(
        h.read(key, &masked(0x2, &[7; 200]))[..4],
        [0x82, 126, 0, 200]
    );
    let mut close = Vec::new();
    ws::encode_close(
        &mut close,
        Some(CloseFrame {
            code: CloseCode::NORMAL,
            reason: "",
        }),
        Some([9; 4]),
    );
    let reply = h.read(key, &close);
    assert_eq!(close_code(&reply), 1000);
    assert!(
        h.closed(key),
        "server closes TCP once its close answer is sent"
    );
}

#[test]
fn frames_sent_with_the_head_are_echoed() {
    let mut h = Harness::new(Config::default());
    let key = h.accept();
    let mut bytes = UPGRADE.to_vec();
    bytes.extend(masked(0x1, b"early"));
    let out = h.read(key, &bytes);
    assert!(out.starts_with(b"HTTP/1.1 101 "));
    assert!(out.ends_with(b"\x81\x05early"));
}

#[test]
fn http_answers_then_closes() {
    let cases: [(&[u8], &str); 3] = [
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 404 "),
        (b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 426 "),
        (b"BROKEN\r\n\r\n", "HTTP/1.1 400 "),
    ];
    for (request, status) in cases {
        let mut h = Harness::new(Config::default());
        let key = h.accept();
        let out = h.read(key, request);
        assert!(
            out.starts_with(status.as_bytes()),
            "{}",
            String::from_utf8_lossy(&out)
        );
        assert!(h.closed(key));
    }
}

#[test]
fn protocol_error_gets_its_close_code() {
    let mut h = Harness::new(Config::default());
    let key = h.accept();
    h.upgrade(key);
    let unmasked = [0x81, 0x02, b'h', b'i'];
    assert_eq!(close_code(&h.read(key, &unmasked)), 1002);
    assert!(h.closed(key));
}

#[test]
fn handshake_deadline_closes_a_slow_client_only() {
    let config = Config {
        handshake_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let slow = h.accept();
    h.read(slow, b"GET /echo HTTP/1.1\r\n");
    h.advance(slow, 9);
    assert!(!h.closed(slow));
    h.advance(slow, 10);
    assert!(h.closed(slow), "half-open handshake closed at its deadline");
}

#[test]
fn silent_connection_is_pinged_then_closed_1011() {
    let config = Config {
        ping_interval: Duration::from_secs(1),
        pong_timeout: Duration::from_secs(1),
        close_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let key = h.accept();
    h.upgrade(key);
    assert_eq!(h.advance(key, 9), b"");
    assert_eq!(h.advance(key, 10), PING_FRAME);
    assert_eq!(close_code(&h.advance(key, 20)), 1011);
    assert!(!h.closed(key), "waits close_timeout for the peer's close");
    h.advance(key, 30);
    assert!(h.closed(key));
}

#[test]
fn any_byte_answers_a_ping() {
    let config = Config {
        ping_interval: Duration::from_secs(1),
        pong_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let key = h.accept();
    h.upgrade(key);
    assert_eq!(h.advance(key, 10), PING_FRAME);
    h.shard.core.now = 15;
    h.read(key, &masked(0xA, b""));
    assert_eq!(h.advance(key, 24), b"", "no close: the pong arrived");
    assert_eq!(
        h.advance(key, 25),
        PING_FRAME,
        "next ping after another quiet interval"
    );
}

#[test]
fn pings_in_one_read_get_one_pong_for_the_latest() {
    let mut h = Harness::new(Config::default());
    let key = h.accept();
    h.upgrade(key);
    let mut bytes = masked(0x9, b"first");
    bytes.extend(masked(0x9, b"second"));
    assert_eq!(h.read(key, &bytes), b"\x8a\x06second");
}

#[test]
fn control_frame_flood_closes_1008() {
    let mut h = Harness::new(Config::default());
    let key = h.accept();
    h.upgrade(key);
    let ping = masked(0x9, b"");
    for _ in 0..MAX_CONTROL_FRAMES {
        assert_eq!(h.read(key, &ping), b"\x8a\x00");
    }
    assert!(!h.closed(key), "the limit itself is allowed");
    let reply = h.read(key, &ping);
    assert_eq!(close_code(&reply), 1008);
    assert!(h.closed(key));
}

#[test]
fn control_frame_budget_refills_each_window() {
    let mut h = Harness::new(Config::default());
    let key = h.accept();
    h.upgrade(key);
    let ping = masked(0x9, b"");
    for round in 0..3 {
        h.shard.core.now = round * CONTROL_WINDOW;
        for _ in 0..MAX_CONTROL_FRAMES {
            assert_eq!(h.read(key, &ping), b"\x8a\x00");
        }
    }
    assert!(!h.closed(key));
}

#[test]
fn drain_answers_handshakes_503_and_open_connections_1001() {
    let mut h = Harness::new(Config::default());
    let open = h.accept();
    h.upgrade(open);
    let pending = h.accept();
    h.read(pending, b"GET /echo HTTP/1.1\r\n");
    h.shard.core.begin_drain(&mut h.shard.driver);
    assert!(h.shard.driver.stopped_accepting);
    h.shard.flush(&mut h.transmit);
    let sent = std::mem::take(&mut h.shard.driver.sent);
    let to = |key| {
        sent.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, b)| b.clone())
            .expect("sent")
    };
    assert_eq!(close_code(&to(open)), 1001);
    assert!(to(pending).starts_with(b"HTTP/1.1 503 "));
    assert!(!h.shard.core.drain_done());
}

fn pusher_upgrade(key: &str) -> Vec<u8> {
    format!(
        "GET /app/{key}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

fn app_key(h: &Harness) -> String {
    let apps = h.shard.core.pusher.hub.apps();
    apps.iter()
        .next()
        .map(|a| a.key.clone())
        .unwrap_or_default()
}

#[test]
fn pusher_connection_is_established_and_subscribes() {
    let mut h = Harness::new(Config::default());
    let key = h.accept();
    let out = h.read(key, &pusher_upgrade(&app_key(&h)));
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    assert!(text.contains("pusher:connection_established"), "{text}");
    let subscribe = masked(
        0x1,
        br#"{"event":"pusher:subscribe","data":{"channel":"chat"}}"#,
    );
    let out = h.read(key, &subscribe);
    assert!(String::from_utf8_lossy(&out).contains("subscription_succeeded"));
    let hub = &h.shard.core.pusher.hub;
    let stats = hub.stats(crate::pusher::AppIndex(0), "chat");
    assert_eq!(stats.subscription_count, 1);
    h.shard.handle_event(Event::Eof { key });
    h.shard.flush(&mut h.transmit);
    let stats = h
        .shard
        .core
        .pusher
        .hub
        .stats(crate::pusher::AppIndex(0), "chat");
    assert_eq!(
        stats.subscription_count, 0,
        "a closed connection is unsubscribed"
    );
}

#[test]
fn pusher_unknown_app_gets_4001() {
    let mut h = Harness::new(Config::default());
    let key = h.accept();
    let out = h.read(key, &pusher_upgrade("no-such-key"));
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains(r#""code":4001"#), "{text}");
    let close_at = out
        .windows(2)
        .rposition(|w| w[0] == 0x88)
        .expect("close frame");
    assert_eq!(close_code(&out[close_at..]), 4001);
}

#[test]
fn app_over_its_connection_cap_gets_4004() {
    let mut app = crate::pusher::AppConfig::new("1", "capped", "secret");
    app.limits.max_connections = Some(1);
    let mut h = Harness::new(Config {
        apps: vec![app],
        ..Config::default()
    });
    let first = h.accept();
    let out = h.read(first, &pusher_upgrade("capped"));
    assert!(String::from_utf8_lossy(&out).contains("connection_established"));
    let second = h.accept();
    let out = h.read(second, &pusher_upgrade("capped"));
    assert!(String::from_utf8_lossy(&out).contains(r#""code":4004"#));
    // Both gone, so the next accept is the only connection (the harness finds it last).
    h.shard.handle_event(Event::Eof { key: first });
    h.shard.handle_event(Event::Eof { key: second });
    h.shard.flush(&mut h.transmit);
    let third = h.accept();
    let out = h.read(third, &pusher_upgrade("capped"));
    assert!(
        String::from_utf8_lossy(&out).contains("connection_established"),
        "a closed connection frees its place"
    );
}

#[test]
fn pusher_ping_then_4201_without_an_answer() {
    let config = Config {
        ping_interval: Duration::from_secs(1),
        pong_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let key = h.accept();
    let out = h.read(key, &pusher_upgrade(&app_key(&h)));
    assert!(String::from_utf8_lossy(&out).contains(r#"activity_timeout\":1"#));
    let ping = h.advance(key, 10);
    assert!(String::from_utf8_lossy(&ping).contains("pusher:ping"));
    assert_eq!(close_code(&h.advance(key, 20)), 4201);
}

#[test]
fn pusher_connections_drain_with_4200() {
    let mut h = Harness::new(Config::default());
    let key = h.accept();
    h.read(key, &pusher_upgrade(&app_key(&h)));
    h.shard.core.begin_drain(&mut h.shard.driver);
    assert_eq!(close_code(&h.settle(key)), 4200);
}

#[test]
fn slow_pusher_subscriber_is_closed_with_4100() {
    let config = Config {
        // Room for the 101 and connection_established, not for the event below.
        max_outbox_bytes: 400,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let key = h.accept();
    h.read(key, &pusher_upgrade(&app_key(&h)));
    let subscribe = masked(
        0x1,
        br#"{"event":"pusher:subscribe","data":{"channel":"big"}}"#,
    );
    h.read(key, &subscribe);
    let frame = crate::pusher::encode_event_frame("e", "big", &"x".repeat(1000), None);
    let app = crate::pusher::AppIndex(0);
    h.shard.core.publish(app, "big".into(), frame, None, true);
    assert_eq!(close_code(&h.settle(key)), 4100);
}

#[test]
fn publish_shares_one_buffer_between_subscribers() {
    let mut h = Harness::new(Config::default());
    let upgrade = pusher_upgrade(&app_key(&h));
    let subscribe = masked(
        0x1,
        br#"{"event":"pusher:subscribe","data":{"channel":"news"}}"#,
    );
    let mut keys = Vec::new();
    for _ in 0..3 {
        let key = h.accept();
        h.read(key, &upgrade);
        h.read(key, &subscribe);
        keys.push(key);
    }
    let frame = crate::pusher::encode_event_frame("e", "news", "{}", None);
    let app = crate::pusher::AppIndex(0);
    h.shard
        .core
        .publish(app, "news".into(), frame.clone(), None, true);
    let mut starts = Vec::new();
    for key in &keys {
        let conn = h.shard.core.conns.get(*key).expect("conn");
        let mut queued = Vec::new();
        conn.outbox.poll_transmit(&mut queued);
        assert_eq!(queued.len(), 1);
        assert_eq!(&queued[0][..], frame.as_bytes());
        starts.push(queued[0].as_ptr());
    }
    assert!(
        starts.iter().all(|&p| p == frame.as_bytes().as_ptr()),
        "every outbox points at the publisher's buffer"
    );
}

#[test]
fn each_subscriber_reached_counts_one_delivery() {
    let mut h = Harness::new(Config::default());
    let upgrade = pusher_upgrade(&app_key(&h));
    let subscribe = masked(
        0x1,
        br#"{"event":"pusher:subscribe","data":{"channel":"news"}}"#,
    );
    let mut keys = Vec::new();
    for _ in 0..2 {
        let key = h.accept();
        h.read(key, &upgrade);
        h.read(key, &subscribe);
        keys.push(key);
    }
    assert_eq!(h.shard.core.observe.stats.deliveries, 0);
    let frame = crate::pusher::encode_event_frame("e", "news", "{}", None);
    let app = crate::pusher::AppIndex(0);
    h.shard
        .core
        .publish(app, "news".into(), frame.clone(), None, true);
    assert_eq!(h.shard.core.observe.stats.deliveries, 2);
    // As a publish from another shard arrives: the excluded sender is not reached.
    let sender = h.shard.core.pusher.socket_id(keys[0]);
    h.shard.core.deliver_local(app, "news", frame, Some(sender));
    assert_eq!(h.shard.core.observe.stats.deliveries, 3);
}

#[test]
fn api_body_over_the_limit_is_refused_before_it_is_read() {
    let mut h = Harness::new(Config::default());
    let key = h.accept();
    let request = b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\n\
        Content-Length: 99999999\r\n\r\n";
    let out = h.read(key, request);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert!(h.closed(key));
}

#[test]
fn api_body_split_across_reads_is_answered_once_complete() {
    let mut h = Harness::new(Config::default());
    let key = h.accept();
    let head = b"POST /apps/1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n{}";
    assert_eq!(h.read(key, head), b"", "waits for the rest of the body");
    let out = h.read(key, b"  ");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 401 "), "unsigned: {text}");
}

#[test]
fn events_for_a_closed_connection_are_ignored() {
    let mut h = Harness::new(Config::default());
    let key = h.accept();
    h.shard.handle_event(Event::Eof { key });
    h.shard.flush(&mut h.transmit);
    assert!(h.closed(key));
    let reused = h.accept();
    assert_eq!(reused.slot, key.slot);
    h.read(key, UPGRADE);
    h.shard.handle_event(Event::Sent {
        key,
        result: Ok(10),
    });
    h.shard.flush(&mut h.transmit);
    let conn = h
        .shard
        .core
        .conns
        .get(reused)
        .expect("reused slot untouched");
    assert_eq!(conn.phase, Phase::Handshake);
    assert!(conn.head.is_none());
}

fn disconnects(h: &Harness, reason: DisconnectReason) -> u64 {
    let stats = &h.shard.core.observe.stats;
    stats.disconnects[reason as usize].iter().sum()
}

#[test]
fn message_rate_over_the_limit_closes_1008_and_is_counted() {
    let mut config = Config::default();
    config.message_rate.messages_per_second = 3;
    let mut h = Harness::new(config);
    let key = h.accept();
    h.upgrade(key);
    let mut burst = Vec::new();
    for _ in 0..4 {
        burst.extend(masked(0x1, b"x"));
    }
    let out = h.read(key, &burst);
    assert_eq!(
        &out[..9],
        b"\x81\x01x\x81\x01x\x81\x01x",
        "the burst is served"
    );
    assert_eq!(close_code(&out[9..]), 1008);
    assert!(h.closed(key));
    assert_eq!(disconnects(&h, DisconnectReason::RateLimit), 1);
    assert_eq!(h.shard.core.observe.stats.messages_received, 4);
}

#[test]
fn message_rate_refills_over_time() {
    let mut config = Config::default();
    config.message_rate.messages_per_second = 10;
    let mut h = Harness::new(config);
    let key = h.accept();
    h.upgrade(key);
    for second in 0..3 {
        h.shard.core.now = second * 10;
        for _ in 0..10 {
            assert_eq!(h.read(key, &masked(0x1, b"x")), b"\x81\x01x");
        }
    }
    assert!(!h.closed(key));
}

#[test]
fn byte_rate_over_the_limit_closes_1008() {
    let mut config = Config::default();
    config.message_rate.bytes_per_second = 100;
    let mut h = Harness::new(config);
    let key = h.accept();
    h.upgrade(key);
    assert_eq!(h.read(key, &masked(0x2, &[0; 60]))[..2], [0x82, 60]);
    assert_eq!(close_code(&h.read(key, &masked(0x2, &[0; 60]))), 1008);
    assert_eq!(disconnects(&h, DisconnectReason::RateLimit), 1);
}

#[test]
fn oversized_message_closes_1009_and_is_counted() {
    let mut config = Config::default();
    config.ws.max_message_size = 100;
    config.ws.max_frame_size = 100;
    let mut h = Harness::new(config);
    let key = h.accept();
    h.upgrade(key);
    assert_eq!(close_code(&h.read(key, &masked(0x2, &[0; 101]))), 1009);
    assert_eq!(disconnects(&h, DisconnectReason::MessageTooBig), 1);
}

#[test]
fn stalled_writer_is_closed_at_the_write_stall_deadline() {
    let config = Config {
        write_stall_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let key = h.accept();
    h.upgrade(key);
    // A message whose echo is handed to the driver and never completes.
    h.shard.driver.bufs = vec![masked(0x1, b"hi")];
    let buf = RecvBuf { id: 0, len: 8 };
    h.shard.handle_event(Event::Recv { key, buf });
    h.shard.flush(&mut h.transmit);
    assert_eq!(h.shard.driver.sent.len(), 1, "echo handed to the driver");
    h.shard.core.advance(9);
    h.shard.flush(&mut h.transmit);
    assert!(!h.closed(key));
    h.shard.core.advance(10);
    h.shard.flush(&mut h.transmit);
    assert!(h.closed(key), "no progress for the stall timeout");
    assert_eq!(disconnects(&h, DisconnectReason::SlowConsumer), 1);
    let stats = &h.shard.core.observe.stats;
    assert_eq!(
        stats.slow_consumer_closes[SlowConsumerCause::WriteStall.index()],
        1
    );
    assert_eq!(stats.slow_consumer_closes_total(), 1);
}

#[test]
fn slow_consumer_with_a_send_in_flight_gets_its_close_frame_next() {
    let config = Config {
        max_outbox_bytes: 1000,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let key = h.accept();
    h.upgrade(key);
    // The first echo goes in flight; the rest pile up until the cap is crossed.
    let message = masked(0x2, &[1; 300]);
    for _ in 0..5 {
        h.shard.driver.bufs = vec![message.clone()];
        let buf = RecvBuf {
            id: 0,
            len: message.len() as u32,
        };
        h.shard.handle_event(Event::Recv { key, buf });
        if h.shard.driver.sent.is_empty() {
            h.shard.flush(&mut h.transmit);
        }
    }
    let conn = h.shard.core.conns.get(key).expect("waits for its send");
    assert_eq!(conn.phase, Phase::Closing);
    // The socket takes part of the echo: its rest, then the close frame, are the next write.
    let sent = std::mem::take(&mut h.shard.driver.sent);
    assert_eq!(sent.len(), 1);
    h.shard.handle_event(Event::Sent {
        key,
        result: Ok(100),
    });
    let out = h.settle(key);
    assert_eq!(out.len(), 204 + 17, "the rest of the echo, then the close");
    assert_eq!(close_code(&out[204..]), 1008);
    assert_eq!(&out[208..], b"slow consumer");
    assert!(!h.closed(key), "the peer's close is awaited");
    h.read(key, &masked(0x8, &1008u16.to_be_bytes()));
    assert!(h.closed(key));
    assert_eq!(disconnects(&h, DisconnectReason::SlowConsumer), 1);
    let stats = &h.shard.core.observe.stats;
    assert_eq!(
        stats.slow_consumer_closes[SlowConsumerCause::OutboxFull.index()],
        1
    );
}

#[test]
fn slow_consumer_close_follows_the_rest_of_a_frame_partly_sent() {
    let config = Config {
        max_outbox_bytes: 300,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let key = h.accept();
    h.upgrade(key);
    h.shard
        .core
        .push_frame(key, Bytes::from(vec![7u8; 200]), false);
    h.shard.flush(&mut h.transmit);
    h.shard.driver.sent.clear();
    h.shard.handle_event(Event::Sent {
        key,
        result: Ok(50),
    });
    // No send in flight, 150 bytes of a frame still owed to the peer: over the cap now.
    h.shard
        .core
        .push_frame(key, Bytes::from(vec![8u8; 200]), false);
    let out = h.settle(key);
    assert_eq!(&out[..150], &[7u8; 150][..], "the frame is finished first");
    assert_eq!(close_code(&out[150..]), 1008);
}

#[test]
fn slow_consumer_reads_on_until_the_peers_close() {
    let config = Config {
        max_outbox_bytes: 300,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let key = h.accept();
    h.upgrade(key);
    // Over the cap with no send in flight: the close frame is queued.
    h.shard
        .core
        .push_frame(key, Bytes::from(vec![0u8; 400]), false);
    assert_eq!(close_code(&h.settle(key)), 1008);
    // What the peer wrote before it read the close is read, and nothing answers it...
    assert_eq!(h.read(key, &masked(0x1, b"more")), b"");
    assert!(
        !h.closed(key),
        "closing TCP on unread bytes would reset the close away"
    );
    // ...until its close, or the close deadline.
    h.read(key, &masked(0x8, &1008u16.to_be_bytes()));
    assert!(h.closed(key));
}

#[test]
fn slow_consumer_that_writes_on_is_closed_past_its_read_allowance() {
    let mut config = Config {
        max_outbox_bytes: 300,
        ..Config::default()
    };
    // No rates: the allowance alone stops the reading.
    config.message_rate.messages_per_second = 0;
    config.message_rate.bytes_per_second = 0;
    let mut h = Harness::new(config);
    let key = h.accept();
    h.upgrade(key);
    h.shard
        .core
        .push_frame(key, Bytes::from(vec![0u8; 400]), false);
    assert_eq!(close_code(&h.settle(key)), 1008);
    // More than one largest frame after its close: it is not reading, and waits no longer.
    let message = masked(0x2, &[0; 60_000]);
    for _ in 0..(17 << 20) / message.len() {
        h.read(key, &message);
    }
    assert!(h.closed(key), "no waiting for the close deadline");
}

#[test]
fn lossy_frames_drop_the_oldest_under_drop_oldest() {
    let config = Config {
        max_outbox_bytes: 1000,
        outbox_policy: OutboxPolicy::DropOldest,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let key = h.accept();
    h.upgrade(key);
    let frame = Bytes::from(vec![0u8; 300]);
    for _ in 0..10 {
        h.shard.core.push_frame(key, frame.clone(), true);
    }
    let conn = h.shard.core.conns.get(key).expect("still open");
    assert!(conn.outbox.queued_bytes() <= 1000);
    assert_eq!(conn.phase, Phase::Open);
    h.shard.core.push_frame(key, frame, false);
    h.shard.flush(&mut h.transmit);
    let closing = h
        .shard
        .core
        .conns
        .get(key)
        .is_none_or(|c| c.phase != Phase::Open);
    assert!(closing, "a frame that is not lossy still closes");
}

#[test]
fn admin_paths_answer_plain_gets() {
    for (path, status) in [
        ("/metrics", "HTTP/1.1 200 "),
        ("/health", "HTTP/1.1 200 "),
        ("/ready", "HTTP/1.1 200 "),
        ("/dashboard", "HTTP/1.1 200 "),
    ] {
        let mut h = Harness::new(Config {
            admin_listen: crate::config::AdminListen::Public,
            ..Config::default()
        });
        h.shard.core.observe.publish();
        let key = h.accept();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let out = h.read(key, request.as_bytes());
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with(status), "{path}: {text}");
        assert!(h.closed(key));
    }
}

#[test]
fn only_the_probes_are_answered_beside_an_admin_listener() {
    for (path, status) in [
        ("/metrics", "HTTP/1.1 404 "),
        ("/dashboard", "HTTP/1.1 404 "),
        ("/health", "HTTP/1.1 200 "),
        ("/ready", "HTTP/1.1 200 "),
    ] {
        let mut h = Harness::new(Config::default());
        h.shard.core.observe.publish();
        let key = h.accept();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let out = h.read(key, request.as_bytes());
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with(status), "{path}: {text}");
    }
}

#[test]
fn accepts_and_handshake_errors_are_counted() {
    let mut h = Harness::new(Config::default());
    let key = h.accept();
    h.upgrade(key);
    let bad = h.accept();
    h.read(bad, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    let stats = &h.shard.core.observe.stats;
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.rejected[RejectReason::HandshakeError as usize], 1);
    h.shard.handle_event(Event::Eof { key });
    h.shard.flush(&mut h.transmit);
    assert_eq!(disconnects(&h, DisconnectReason::ConnectionLost), 1);
}

/// Queues `bytes` on `key` and lets the socket take `per_tick` bytes a tick for `ticks` ticks
/// from tick `from`, as a reader drains; returns whether the connection is still there.
fn drain_at(h: &mut Harness, key: ConnKey, from: Tick, ticks: Tick, per_tick: usize) -> bool {
    for tick in from..from + ticks {
        h.shard.flush(&mut h.transmit);
        if h.shard.core.conns.get(key).is_none() {
            return false;
        }
        let in_flight = std::mem::take(&mut h.shard.driver.sent);
        for (k, bytes) in in_flight {
            h.shard.handle_event(Event::Sent {
                key: k,
                result: Ok(per_tick.min(bytes.len())),
            });
        }
        h.shard.core.advance(tick + 1);
    }
    h.shard.flush(&mut h.transmit);
    h.shard.core.conns.get(key).is_some()
}

#[test]
fn trickle_reader_below_the_least_drain_rate_is_closed_at_the_window_end() {
    let config = Config {
        write_stall_timeout: Duration::from_secs(1),
        min_drain_rate: 1000,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let key = h.accept();
    h.upgrade(key);
    h.shard
        .core
        .push_frame(key, Bytes::from(vec![0u8; 100_000]), false);
    // A byte a tick: progress all the time, 10 bytes a second against the 1000 asked.
    assert!(
        !drain_at(&mut h, key, 0, 30, 1),
        "a trickle is closed, not kept for every byte it takes"
    );
    assert!(h.closed(key));
    let stats = &h.shard.core.observe.stats;
    assert_eq!(
        stats.slow_consumer_closes[SlowConsumerCause::SlowDrain.index()],
        1
    );
    assert_eq!(disconnects(&h, DisconnectReason::SlowConsumer), 1);
}

#[test]
fn reader_at_the_least_drain_rate_is_kept() {
    let config = Config {
        write_stall_timeout: Duration::from_secs(1),
        min_drain_rate: 1000,
        ..Config::default()
    };
    let mut h = Harness::new(config);
    let key = h.accept();
    h.upgrade(key);
    h.shard
        .core
        .push_frame(key, Bytes::from(vec![0u8; 100_000]), false);
    // 100 bytes a tick is the 1000 bytes a second asked: window after window it stays.
    assert!(drain_at(&mut h, key, 0, 50, 100));
    assert_eq!(h.shard.core.observe.stats.slow_consumer_closes_total(), 0);
}

#[test]
fn no_echo_follows_our_close_frame() {
    let mut h = Harness::new(Config::default());
    let key = h.accept();
    h.upgrade(key);
    h.shard.core.begin_drain(&mut h.shard.driver);
    assert_eq!(close_code(&h.settle(key)), 1001);
    // The peer has not seen our close yet and sends a message: it is read, not echoed.
    assert_eq!(h.read(key, &masked(0x1, b"late")), b"");
    assert!(!h.closed(key), "still waiting for the peer's close");
}

#[test]
fn no_fan_out_follows_our_close_frame() {
    let mut h = Harness::new(Config::default());
    let key = h.accept();
    h.read(key, &pusher_upgrade(&app_key(&h)));
    let subscribe = masked(
        0x1,
        br#"{"event":"pusher:subscribe","data":{"channel":"news"}}"#,
    );
    h.read(key, &subscribe);
    h.shard.core.begin_drain(&mut h.shard.driver);
    assert_eq!(close_code(&h.settle(key)), 4200);
    let frame = crate::pusher::encode_event_frame("e", "news", "{}", None);
    let app = crate::pusher::AppIndex(0);
    let before = h.shard.core.observe.stats.deliveries;
    h.shard.core.publish(app, "news".into(), frame, None, true);
    assert_eq!(h.settle(key), b"", "no event after the close frame");
    assert_eq!(
        h.shard.core.observe.stats.deliveries, before,
        "a closing subscriber is not counted as reached"
    );
}
