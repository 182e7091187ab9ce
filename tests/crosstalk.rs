//! No byte of one connection ever reaches another, while the server closes connections under
//! load. A few hundred Pusher clients each subscribe to a channel of their own; the HTTP API
//! publishes to every one of them without pause; meanwhile the server cuts off slow consumers
//! (a small outbox cap), clients that never answer `pusher:ping` (short heartbeat and close
//! deadlines) and clients that read too slowly, and readers hang up and reconnect. Every byte a
//! client reads is checked: an HTTP head that is not the 101 it asked for, a frame that is not
//! a valid server frame, an event for a channel it did not subscribe to, or a request the
//! server never answered fails the test (the signatures of a send or a receive that reached a
//! reused descriptor). Runs on both backends.

#[allow(
    dead_code,
    reason = "the shared harness serves several suites; this one uses part of it"
)]
mod common;

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Backend, Server, heavy_lock, raise_nofile_limit, uring_available};
use ringcast::pusher::api::signature::body_md5;
use ringcast::pusher::auth::sign;
use ringcast::ws::{self, OpCode};
use serde_json::{Value, json};

/// The development app the server is started with: its id,
const APP_ID: &str = "5150";
/// its key, which clients connect to (`/app/{APP_KEY}`),
const APP_KEY: &str = "crosstalk-key";
/// and its secret, which API requests are signed with.
const APP_SECRET: &str = "crosstalk-secret";

/// How long the clients and publishers run against one server.
const RUN: Duration = Duration::from_secs(14);

/// Client threads, each driving its share of the connections over non-blocking sockets.
const CLIENT_THREADS: usize = 4;

/// Readers per client thread; with the others, 4 x 74 = 296 connections at any moment.
const READERS: usize = 40;
/// Tricklers per client thread.
const TRICKLERS: usize = 14;
/// Stallers per client thread.
const STALLERS: usize = 20;

/// Threads publishing through the HTTP API, each a new connection per request.
const PUBLISHERS: usize = 4;

/// Channels per API event: a quarter of the Pusher limit, for more API connections.
const CHANNELS_PER_EVENT: usize = 25;

/// How the channels of stallers begin, so the publishers can send them large events.
const STALLER_PREFIX: &str = "stall-";

/// Outbox cap of the server under test: a few dozen published events.
const MAX_OUTBOX: &str = "16384";

/// The server's handshake deadline: far longer than any answer takes, so that only a request
/// whose bytes never reached its connection runs into it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// Bound on any one blocking read of a publisher.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest server frame a client accepts: published events are far smaller.
const MAX_FRAME: usize = 64 * 1024;

/// How a client behaves, and so how the server ends up closing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Reads everything, answers pings, hangs up after a short random life and is replaced.
    Reader,
    /// Reads a little at a time and never answers pings: closed with 4201, then at the close
    /// deadline while its backlog is still draining; or closed as a slow consumer.
    Trickler,
    /// Stops reading once subscribed, with a tiny receive window, and keeps sending
    /// `pusher:ping`: a slow consumer whose receives run dry and are re-armed all the time.
    Staller,
}

/// What the clients saw, shared by every thread.
#[derive(Default)]
struct Tally {
    /// Events received on the channel the connection subscribed to.
    own_events: AtomicU64,
    /// Connections the server closed (close frame or end of stream).
    server_closes: AtomicU64,
    /// Connections that completed the subscription.
    subscribed: AtomicU64,
    /// API publishes answered 200.
    publishes: AtomicU64,
    /// What must never happen, described.
    crosstalk: Mutex<Vec<String>>,
}

impl Tally {
    /// Records one thing that must never happen (the first twenty are kept).
    fn crosstalk(&self, what: String) {
        let mut list = self.crosstalk.lock().unwrap_or_else(|p| p.into_inner());
        if list.len() < 20 {
            list.push(what);
        }
    }
}

/// The channels currently subscribed, which the publishers publish to.
type Channels = Arc<Mutex<HashSet<String>>>;

/// A cheap xorshift for client lifetimes and read sizes.
struct Rng(u64);

impl Rng {
    /// A number below `n`.
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the 101.
    Head,
    /// Waiting for `pusher:connection_established`.
    Established,
    /// Subscribe sent, events flowing.
    Subscribed,
    /// Finished: closed by the server or by the client.
    Done,
}

/// One client connection on a non-blocking socket.
struct Conn {
    stream: TcpStream,
    kind: Kind,
    channel: String,
    buf: Vec<u8>,
    phase: Phase,
    /// When a reader hangs up on its own.
    leave_at: Instant,
    /// When a staller sends its next ping.
    next_ping: Instant,
    /// When a trickler reads next.
    next_read: Instant,
    /// Whether the subscription succeeded (and the channel is being published to).
    confirmed: bool,
}

impl Conn {
    /// Connects and sends the upgrade request; the rest happens in [`Conn::step`].
    fn open(addr: SocketAddr, kind: Kind, channel: String, rng: &mut Rng) -> io::Result<Conn> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        if kind == Kind::Staller {
            // A small window and small segments keep the server's kernel from buffering much
            // for it, so its outbox fills.
            socket.set_recv_buffer_size(2048)?;
            socket.set_tcp_mss(536)?;
        }
        socket.connect(&addr.into())?;
        let mut stream = TcpStream::from(socket);
        stream.set_nodelay(true)?;
        let request = format!(
            "GET /app/{APP_KEY}?protocol=7&client=crosstalk HTTP/1.1\r\nHost: x\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes())?;
        stream.set_nonblocking(true)?;
        let now = Instant::now();
        Ok(Conn {
            stream,
            kind,
            channel,
            buf: Vec::new(),
            phase: Phase::Head,
            leave_at: now + Duration::from_millis(100 + rng.below(500)),
            next_ping: now,
            next_read: now,
            confirmed: false,
        })
    }

    /// Sends one text message; false once the server reset the connection. A full socket
    /// drops the message, which only changes how the server goes on to treat this client.
    fn send_text(&mut self, message: &Value) -> bool {
        let mut frame = Vec::new();
        ws::encode_masked_frame(
            &mut frame,
            true,
            OpCode::Text,
            message.to_string().as_bytes(),
            [3, 1, 4, 1],
        );
        match self.stream.write_all(&frame) {
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ),
            Ok(()) => true,
        }
    }

    /// Reads what is there (at most `limit` bytes) and checks it; returns whether anything
    /// happened.
    fn step(&mut self, limit: usize, tally: &Tally, channels: &Channels) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let want = limit.min(chunk.len());
        let n = match self.stream.read(&mut chunk[..want]) {
            Ok(0) => {
                self.server_closed(tally, "end of stream");
                return true;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return false,
            Err(e) => {
                self.server_closed(tally, &e.to_string());
                return true;
            }
        };
        self.buf.extend_from_slice(&chunk[..n]);
        self.parse(tally, channels);
        true
    }

    /// The server ended the connection (close frame, end of stream or reset); before the 101
    /// that means the request never reached its connection.
    fn server_closed(&mut self, tally: &Tally, how: &str) {
        if self.phase == Phase::Done {
            return;
        }
        if self.phase == Phase::Head {
            tally.crosstalk(format!(
                "{:?} on {}: the upgrade was never answered ({how})",
                self.kind, self.channel
            ));
        }
        tally.server_closes.fetch_add(1, Ordering::Relaxed);
        self.phase = Phase::Done;
    }

    /// Checks and acts on what is buffered: the 101 head, then whole frames.
    fn parse(&mut self, tally: &Tally, channels: &Channels) {
        if self.phase == Phase::Head {
            let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                if self.buf.len() > 4096
                    || !b"HTTP/1.1 101 ".starts_with(&self.buf[..self.buf.len().min(13)])
                {
                    self.fail(tally, "bytes that are not its upgrade answer");
                }
                return;
            };
            if !self.buf.starts_with(b"HTTP/1.1 101 ") {
                self.fail(tally, "an upgrade answer that is not 101");
                return;
            }
            self.buf.drain(..end + 4);
            self.phase = Phase::Established;
        }
        while self.phase != Phase::Done {
            match self.next_frame() {
                Ok(Some((opcode, payload))) => self.handle_frame(opcode, &payload, tally, channels),
                Ok(None) => return,
                Err(why) => return self.fail(tally, why),
            }
        }
    }

    /// The next whole frame in the buffer, checked against what a server may send.
    fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, &'static str> {
        let [first, second, ..] = self.buf[..] else {
            return Ok(None);
        };
        if first & 0x70 != 0 || second & 0x80 != 0 || first & 0x80 == 0 {
            return Err("a frame with RSV bits, a mask or no FIN");
        }
        let (len, header) = match second & 0x7f {
            126 => match self.buf.get(2..4) {
                Some(b) => (usize::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => return Err("a 64-bit frame length"),
            n => (usize::from(n), 2),
        };
        if len > MAX_FRAME {
            return Err("a frame larger than any event");
        }
        if self.buf.len() < header + len {
            return Ok(None);
        }
        let payload = self.buf[header..header + len].to_vec();
        self.buf.drain(..header + len);
        Ok(Some((first & 0x0f, payload)))
    }

    /// One server frame: a close ends the connection, a text frame must be a Pusher message
    /// meant for this connection.
    fn handle_frame(&mut self, opcode: u8, payload: &[u8], tally: &Tally, channels: &Channels) {
        match opcode {
            0x1 => {}
            0x8 => {
                self.server_closed(tally, "close frame");
                return;
            }
            _ => return self.fail(tally, "a frame of an opcode Pusher never sends"),
        }
        let Ok(message) = serde_json::from_slice::<Value>(payload) else {
            return self.fail(tally, "a text frame that is not JSON");
        };
        let event = message["event"].as_str().unwrap_or_default();
        let channel = message["channel"].as_str();
        match (self.phase, event, channel) {
            (Phase::Established, "pusher:connection_established", None) => {
                self.send_text(&json!({
                    "event": "pusher:subscribe",
                    "data": { "channel": self.channel },
                }));
                self.phase = Phase::Subscribed;
            }
            (Phase::Subscribed, "pusher_internal:subscription_succeeded", Some(c))
                if c == self.channel =>
            {
                tally.subscribed.fetch_add(1, Ordering::Relaxed);
                self.confirmed = true;
                channels
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(self.channel.clone());
            }
            (Phase::Subscribed, "tick", Some(c)) if c == self.channel => {
                tally.own_events.fetch_add(1, Ordering::Relaxed);
            }
            (Phase::Subscribed, "pusher:ping", None) => {
                if self.kind == Kind::Reader {
                    self.send_text(&json!({ "event": "pusher:pong", "data": {} }));
                }
            }
            (Phase::Subscribed, "pusher:pong", None) if self.kind == Kind::Staller => {}
            _ => self.fail(tally, "a message for another connection"),
        }
    }

    /// Records crosstalk with what the buffer held, and gives the connection up.
    fn fail(&mut self, tally: &Tally, what: &str) {
        let shown: String = String::from_utf8_lossy(&self.buf[..self.buf.len().min(160)]).into();
        tally.crosstalk(format!(
            "{:?} subscribed to {} got {what}: {shown:?}",
            self.kind, self.channel
        ));
        self.phase = Phase::Done;
    }

    /// The client hangs up (a reader with a close frame), and its channel is no longer
    /// published to.
    fn leave(&mut self, channels: &Channels) {
        channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.channel);
        if self.phase != Phase::Done && self.kind == Kind::Reader {
            let mut frame = Vec::new();
            ws::encode_masked_frame(
                &mut frame,
                true,
                OpCode::Close,
                &1000u16.to_be_bytes(),
                [9, 9, 9, 9],
            );
            let _ = self.stream.write_all(&frame);
        }
        self.phase = Phase::Done;
    }
}

/// One client thread: keeps its share of connections open, replacing each one that ends.
fn client_thread(
    id: usize,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    channels: Channels,
) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((id as u64 + 1) * 0x1000_0001));
    let mut serial = 0u64;
    let mut open = |kind: Kind, rng: &mut Rng| loop {
        serial += 1;
        let prefix = if kind == Kind::Staller {
            STALLER_PREFIX
        } else {
            "own-"
        };
        let channel = format!("{prefix}{id}-{serial}");
        match Conn::open(addr, kind, channel, rng) {
            Ok(conn) => return conn,
            // A connect that failed under churn (a full listen backlog): not crosstalk.
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    };
    let kinds = std::iter::repeat_n(Kind::Reader, READERS)
        .chain(std::iter::repeat_n(Kind::Trickler, TRICKLERS))
        .chain(std::iter::repeat_n(Kind::Staller, STALLERS));
    let mut conns: Vec<Conn> = kinds.map(|kind| open(kind, &mut rng)).collect();
    while !stop.load(Ordering::Relaxed) {
        let mut busy = false;
        let now = Instant::now();
        for conn in &mut conns {
            match conn.kind {
                Kind::Reader => {
                    while conn.phase != Phase::Done && conn.step(usize::MAX, &tally, &channels) {
                        busy = true;
                    }
                    if now >= conn.leave_at {
                        conn.leave(&channels);
                    }
                }
                Kind::Trickler if now >= conn.next_read => {
                    let limit = 64 + rng.below(448) as usize;
                    busy |= conn.step(limit, &tally, &channels);
                    conn.next_read = now + Duration::from_millis(5);
                }
                Kind::Trickler => {}
                Kind::Staller => {
                    if conn.confirmed && now >= conn.next_ping {
                        // It never reads, so a failing write is how it learns it was cut off.
                        if !conn.send_text(&json!({ "event": "pusher:ping", "data": {} })) {
                            conn.server_closed(&tally, "reset");
                        }
                        conn.next_ping = now + Duration::from_millis(5);
                    } else if !conn.confirmed {
                        // Reads only until subscribed, then never again.
                        busy |= conn.step(usize::MAX, &tally, &channels);
                    }
                    // Cut off long before this, unless publishing is very slow.
                    if now >= conn.leave_at + Duration::from_secs(5) {
                        conn.leave(&channels);
                    }
                }
            }
            if conn.phase == Phase::Done {
                conn.leave(&channels);
                *conn = open(conn.kind, &mut rng);
                busy = true;
            }
        }
        if !busy {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// One signed `POST /apps/{id}/events` to `channels` on a new connection; checks the answer is
/// the 200 the API gives, not bytes of some other connection.
fn publish(addr: SocketAddr, channels: &[String], data: &str, tally: &Tally) {
    let body = json!({ "name": "tick", "channels": channels, "data": data }).to_string();
    let path = format!("/apps/{APP_ID}/events");
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let md5 = body_md5(body.as_bytes());
    let query =
        format!("auth_key={APP_KEY}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={md5}");
    let signature = sign(APP_SECRET, &[&format!("POST\n{path}\n{query}")]);
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let request = format!(
        "POST {path}?{query}&auth_signature={signature} HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return;
    }
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    if answer.starts_with(b"HTTP/1.1 200 ") {
        tally.publishes.fetch_add(1, Ordering::Relaxed);
    } else {
        let shown = String::from_utf8_lossy(&answer[..answer.len().min(160)]).into_owned();
        tally.crosstalk(format!("an API publish got {shown:?} ({read:?})"));
    }
}

/// One publisher: publishes to every subscribed channel, round after round, until stopped.
fn publisher_thread(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    channels: Channels,
) {
    // Stallers get large events, so that they become slow consumers within a second however
    // slowly the loaded machine publishes; the others small ones.
    let small = "x".repeat(200);
    let large = "y".repeat(4000);
    while !stop.load(Ordering::Relaxed) {
        let (stallers, others): (Vec<String>, Vec<String>) = channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .partition(|channel| channel.starts_with(STALLER_PREFIX));
        if stallers.is_empty() && others.is_empty() {
            thread::sleep(Duration::from_millis(5));
            continue;
        }
        for batch in stallers.chunks(CHANNELS_PER_EVENT) {
            publish(addr, batch, &large, &tally);
        }
        for batch in others.chunks(CHANNELS_PER_EVENT) {
            publish(addr, batch, &small, &tally);
        }
    }
}

/// The server's `/metrics` answer, head included.
fn metrics_text(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect for /metrics");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request /metrics");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "/metrics on the admin listener {addr} answered: {text:.200}"
    );
    text
}

/// A counter's value in the admin listener's `/metrics`, summed over the series whose labels contain
/// `labels`.
fn metric(addr: SocketAddr, family: &str, labels: &str) -> f64 {
    metrics_text(addr)
        .lines()
        .filter(|line| line.starts_with(family) && line.contains(labels))
        .filter(|line| line[family.len()..].starts_with([' ', '{']))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The whole run against one server on `backend`.
fn no_crosstalk(backend: Backend) {
    let _heavy = heavy_lock();
    raise_nofile_limit();
    let handshake_timeout = format!("{}s", HANDSHAKE_TIMEOUT.as_secs());
    let server = Server::start_with_env(
        backend,
        2,
        &[
            "--max-outbox-bytes",
            MAX_OUTBOX,
            // The outbox cap may not be below the largest message.
            "--max-message-size",
            "8192",
            "--ping-interval",
            "500ms",
            "--pong-timeout",
            "500ms",
            "--idle-timeout",
            "5s",
            "--close-timeout",
            "300ms",
            "--write-stall-timeout",
            "1s",
            "--handshake-timeout",
            &handshake_timeout,
            // Few small receive buffers per shard: receives run dry and are re-armed all the
            // time, in the same loop turns as closes.
            "--recv-buffers",
            "8",
            "--recv-buffer-size",
            "1024",
        ],
        &[
            ("RINGCAST_APP_ID", APP_ID),
            ("RINGCAST_APP_KEY", APP_KEY),
            ("RINGCAST_APP_SECRET", APP_SECRET),
        ],
    );
    let addr = server.addr();
    let admin = server.admin_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let channels: Channels = Arc::default();
    let mut threads = Vec::new();
    for id in 0..CLIENT_THREADS {
        let (stop, tally, channels) =
            (Arc::clone(&stop), Arc::clone(&tally), Arc::clone(&channels));
        threads.push(thread::spawn(move || {
            client_thread(id, addr, stop, tally, channels)
        }));
    }
    for _ in 0..PUBLISHERS {
        let (stop, tally, channels) =
            (Arc::clone(&stop), Arc::clone(&tally), Arc::clone(&channels));
        threads.push(thread::spawn(move || {
            publisher_thread(addr, stop, tally, channels)
        }));
    }
    thread::sleep(RUN);
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("client thread");
    }
    // Every client sent its whole request head at once, so a handshake that times out is one
    // whose bytes some other connection's receive took. Requests sent up to the end of the run
    // have timed out by now if they were lost.
    thread::sleep(HANDSHAKE_TIMEOUT + Duration::from_millis(300));
    let lost = metric(
        admin,
        "ringcast_connections_rejected_total",
        "reason=\"handshake_timeout\"",
    );

    let crosstalk = tally.crosstalk.lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        crosstalk.is_empty(),
        "bytes reached the wrong client: {crosstalk:#?}"
    );
    assert_eq!(
        lost, 0.0,
        "request heads were lost: {lost} handshakes timed out"
    );
    let own = tally.own_events.load(Ordering::Relaxed);
    let closes = tally.server_closes.load(Ordering::Relaxed);
    eprintln!(
        "{backend:?}: {} subscriptions, {} publishes, {own} events delivered, {closes} server closes",
        tally.subscribed.load(Ordering::Relaxed),
        tally.publishes.load(Ordering::Relaxed),
    );
    assert!(own > 0, "no published event reached its subscriber");
    // The server did close connections under load, for each reason the clients provoke.
    assert!(metric(admin, "ringcast_slow_consumer_closes_total", "") > 0.0);
    assert!(
        metric(
            admin,
            "ringcast_disconnects_total",
            "reason=\"pong_timeout\""
        ) > 0.0
    );
}

#[test]
fn no_crosstalk_on_epoll() {
    no_crosstalk(Backend::Epoll);
}

#[test]
fn no_crosstalk_on_io_uring() {
    if !uring_available() {
        eprintln!("io_uring is disabled on this kernel: skipped");
        return;
    }
    no_crosstalk(Backend::Uring);
}
