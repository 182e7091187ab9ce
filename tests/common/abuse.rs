//! The abuse suite's part of the harness: a server started through [`super::serve_command`]
//! with a backend and extra flags, that keeps its log and is killed when dropped; plus a
//! blocking WebSocket client small enough to misbehave on purpose, a `/metrics` reader and the
//! server's resident memory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use ringcast::ws::{self, OpCode};

use super::{STARTUP_TIMEOUT, parse_listen_port, serve_command};

/// The bound every blocking read and write of the suite runs under: generous for a loaded CI
/// box, short enough that a server that stopped answering fails the test rather than hangs it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The development app's id, key and secret the server is started with.
pub const APP_ID: &str = "4711";
/// Its key: Pusher clients connect to `/app/{APP_KEY}`.
pub const APP_KEY: &str = "abuse-key";
/// Its secret: private channel subscriptions are signed with it.
pub const APP_SECRET: &str = "abuse-secret";

/// A running server, killed when dropped.
pub struct Server {
    child: Child,
    /// The port every shard listens on.
    pub port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `ringcast serve` on `backend` with two shards and `extra` flags.
    pub fn start(backend: &str, extra: &[&str]) -> Server {
        Server::start_with_shards(backend, 2, extra)
    }

    /// [`Server::start`] with `shards` shards. With one, connections are accepted in the order
    /// they connected, so a test can rely on earlier sockets being charged first.
    pub fn start_with_shards(backend: &str, shards: usize, extra: &[&str]) -> Server {
        let mut child = serve_command(backend, shards)
            .args(["--log-level", "info"])
            .args(extra)
            .env("RINGCAST_APP_ID", APP_ID)
            .env("RINGCAST_APP_KEY", APP_KEY)
            .env("RINGCAST_APP_SECRET", APP_SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringcast");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&log);
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(port) = parse_listen_port(&line) {
                        let _ = tx.send(port);
                    }
                    log.lock().expect("log").push(line);
                }
            });
        }
        let port = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no listen line: {:?}", log.lock().expect("log"));
            }
        };
        Server { child, port, log }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Resident memory of the server process, in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .expect("VmRSS")
    }

    /// Log lines at info level or above written so far.
    pub fn info_lines(&self) -> Vec<String> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .filter(|line| {
                line.contains(" INFO ") || line.contains(" WARN ") || line.contains(" ERROR ")
            })
            .filter(|line| !line.contains("host check") && !line.contains("kernel setting"))
            .cloned()
            .collect()
    }

    /// The first `name=VALUE` field in the log, waiting up to [`IO_TIMEOUT`] for it.
    pub fn log_field(&self, name: &str) -> String {
        let start = Instant::now();
        let needle = format!("{name}=");
        loop {
            let found = self.log.lock().expect("log").iter().find_map(|line| {
                let rest = line.split(needle.as_str()).nth(1)?;
                rest.split_whitespace().next().map(str::to_owned)
            });
            if let Some(value) = found {
                return value;
            }
            assert!(start.elapsed() < IO_TIMEOUT, "no {name}= in the log");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A plain GET on a fresh connection; the whole answer (the server closes after it). Sent
    /// from 127.0.0.9, an address no test limits or names a proxy.
    pub fn get(&self, path: &str) -> String {
        get_from(self.addr(), path)
    }

    /// The address of the admin listener (`/metrics`, `/dashboard`), from its log line.
    pub fn admin_addr(&self) -> SocketAddr {
        self.log_field("admin").parse().expect("admin address")
    }

    /// The sum of every sample of the metric family `name` whose labels contain `labels`
    /// (`""` for all samples), read from `/metrics` on the admin listener. Shards publish
    /// every 100 ms, so callers wait for a count with [`Server::wait_metric`].
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = get_from(self.admin_addr(), "/metrics");
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter(|line| {
                let (series, _) = line.rsplit_once(' ').unwrap_or((line, ""));
                let family = series.split('{').next().unwrap_or("");
                family == name && series.contains(labels)
            })
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// Waits until [`Server::metric`] reaches `at_least` and returns it; panics after
    /// [`IO_TIMEOUT`] with the last value.
    pub fn wait_metric(&self, name: &str, labels: &str, at_least: f64) -> f64 {
        let start = Instant::now();
        loop {
            let value = self.metric(name, labels);
            if value >= at_least {
                return value;
            }
            assert!(
                start.elapsed() < IO_TIMEOUT,
                "{name}{{{labels}}} stayed at {value}, expected at least {at_least}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asserts the server still serves: a fresh client from `source` (a loopback address)
    /// upgrades and gets its message echoed within [`IO_TIMEOUT`].
    pub fn assert_responsive_from(&self, source: [u8; 4]) {
        let stream = connect_from(source, self.addr());
        let mut client = Client::upgrade(stream, "/echo", &[]).expect("fresh client upgrades");
        client.send(OpCode::Text, b"still there?");
        let (op, payload) = client.read_frame().expect("echo arrives");
        assert_eq!(
            (op, payload.as_slice()),
            (OpCode::Text, &b"still there?"[..])
        );
    }

    /// [`Server::assert_responsive_from`] 127.0.0.1.
    pub fn assert_responsive(&self) {
        self.assert_responsive_from([127, 0, 0, 1]);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain GET to `addr` from 127.0.0.9 (an address no test limits or names a proxy); the
/// whole answer (the server closes after it).
pub fn get_from(addr: SocketAddr, path: &str) -> String {
    let mut stream = connect_from([127, 0, 0, 9], addr);
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send GET");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// A connection with the suite's timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    // No bind: the kernel picks the source port at connect time, which reuses ports across
    // destinations, so thousands of connections do not exhaust the ephemeral range.
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    with_suite_options(stream)
}

/// A connection from the loopback address `source`, with the suite's timeouts.
pub fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    // Ports in TIME_WAIT from earlier runs would otherwise refuse the bind.
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .expect("bind source");
    socket.connect(&addr.into()).expect("connect");
    with_suite_options(socket.into())
}

/// The suite's timeouts, and an abortive close: a dropped client resets instead of leaving a
/// TIME_WAIT socket holding its port, so repeated runs of the 5,000-connection test do not use
/// up the host's ephemeral ports.
fn with_suite_options(stream: TcpStream) -> TcpStream {
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER");
    stream
}

/// A WebSocket client over a blocking stream.
pub struct Client {
    /// The socket.
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Sends an upgrade for `path` (with `headers`) and reads the answer head; `Err` carries
    /// the answer when it is not 101.
    pub fn upgrade(
        mut stream: TcpStream,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, String> {
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = [0; 4096];
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(String::from_utf8_lossy(&buf).into_owned());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        if !buf.starts_with(b"HTTP/1.1 101 ") {
            return Err(String::from_utf8_lossy(&buf).into_owned());
        }
        buf.drain(..end);
        Ok(Client { stream, buf })
    }

    /// Sends one masked frame.
    pub fn send(&mut self, op: OpCode, payload: &[u8]) {
        self.send_frame(true, op, payload).expect("send frame");
    }

    /// Sends one masked frame with the FIN bit `fin`.
    pub fn send_frame(&mut self, fin: bool, op: OpCode, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        ws::encode_masked_frame(&mut frame, fin, op, payload, [7, 1, 3, 9]);
        self.stream.write_all(&frame)
    }

    /// Reads one server frame: its opcode and payload. `None` at EOF, reset or timeout.
    pub fn read_frame(&mut self) -> Option<(OpCode, Vec<u8>)> {
        loop {
            if let Some((op, payload, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Some((op, payload));
            }
            let mut chunk = [0; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads frames until a close and returns its code; `None` when the socket ends first.
    pub fn read_close_code(&mut self) -> Option<u16> {
        while let Some((op, payload)) = self.read_frame() {
            if op == OpCode::Close {
                return Some(
                    payload
                        .get(..2)
                        .map_or(1005, |b| u16::from_be_bytes([b[0], b[1]])),
                );
            }
        }
        None
    }
}

/// An unmasked server frame at the start of `buf`: opcode, payload, bytes used.
fn parse_frame(buf: &[u8]) -> Option<(OpCode, Vec<u8>, usize)> {
    let (&b0, &b1) = (buf.first()?, buf.get(1)?);
    let op = OpCode::from_bits(b0 & 0x0f)?;
    let (len, header) = match b1 & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (usize::try_from(u64::from_be_bytes(bytes)).ok()?, 10)
        }
        n => (usize::from(n), 2),
    };
    let payload = buf.get(header..header + len)?.to_vec();
    Some((op, payload, header + len))
}

/// Whether the server closed `stream` (EOF or reset) within [`IO_TIMEOUT`], reading and
/// discarding whatever it sends first.
pub fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut chunk = [0; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Runs a test body once per backend: `matrix!(name, body_fn)` makes `name::epoll` and
/// `name::uring` (the latter passes vacuously with a note where io_uring is disabled).
#[macro_export]
macro_rules! matrix {
    ($name:ident) => {
        mod $name {
            #[test]
            fn epoll() {
                super::$name("epoll");
            }

            #[test]
            fn uring() {
                if !$crate::common::uring_available() {
                    eprintln!("io_uring is disabled on this host; skipped");
                    return;
                }
                super::$name("uring");
            }
        }
    };
}
