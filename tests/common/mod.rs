//! Harness for the integration suite: starts the real `ringcast` binary on a loopback port with a
//! chosen backend, speaks WebSocket to it over plain blocking sockets (frames written by hand, so
//! the suite tests the server against an independent encoder), and kills the server when dropped.
//! [`abuse`] holds the abuse suite's misbehaving client and log/metrics readers, with a server
//! that keeps its log, started through [`serve_command`]; [`pusher`] wraps [`Server`] with
//! development-app credentials for the Pusher suites.

pub mod abuse;
pub mod browser;
pub mod metrics;
pub mod pusher;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha1::{Digest as _, Sha1};

/// How long the server may take to print its listen lines: a debug build on a loaded two-core
/// machine starts in well under a second, so this only bounds a hang.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Read timeout on every test socket, so a server that never answers fails the test instead of
/// hanging it. Generous because CI shares the machine with compilers.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// The key from RFC 6455 section 1.3; its accept value is given there too.
const HANDSHAKE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// RFC 6455 section 1.3.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Frame opcodes, RFC 6455 section 5.2.
pub mod op {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// A UTF-8 text frame.
    pub const TEXT: u8 = 0x1;
    /// A binary frame.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// The event-loop backend a test runs the server on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// io_uring.
    Uring,
    /// epoll.
    Epoll,
}

impl Backend {
    /// The value of `--backend`.
    pub fn flag(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Epoll => "epoll",
        }
    }
}

/// Why io_uring cannot run on this kernel, or `None` when it can. The uring half of the matrix
/// skips itself only for this reason; every other failure is a failure.
pub fn uring_unavailable() -> Option<String> {
    ringcast::driver::uring::probe()
        .err()
        .map(|why| why.to_string())
}

/// Whether io_uring is not switched off by sysctl here (the uring half of the abuse and Pusher
/// matrices runs only then).
pub fn uring_available() -> bool {
    !std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .is_ok_and(|value| value.trim() == "2")
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit, so one test can hold many
/// sockets, and returns the new soft limit. Never above the hard limit the box allows.
pub fn raise_nofile_limit() -> u64 {
    ringcast::driver::sys::raise_nofile_limit().expect("raise RLIMIT_NOFILE")
}

/// Serialises the tests that hold thousands of sockets, so that together they stay under the
/// open-files limit of this process. Light tests run beside them.
pub fn heavy_lock() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The repository root, where `.venv` and `tests/clients` live.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `ringcast serve` on `127.0.0.1:0` with `backend` (`uring` or `epoll`) and `shards` shards,
/// its admin listener on another ephemeral loopback port (logged as `admin=ADDR`), no colour
/// and no stdin; callers add flags, environment and pipes.
pub fn serve_command(backend: &str, shards: usize) -> Command {
    serve_command_under(&[], backend, shards)
}

/// [`serve_command`] run by `wrapper` (a program and its arguments, such as `prlimit
/// --nofile=64:64 --`), which must exec the server so that its pid is the server's.
pub fn serve_command_under(wrapper: &[&str], backend: &str, shards: usize) -> Command {
    // RINGCAST_TEST_BIN runs the suite against another build, a release one for instance.
    let program = std::env::var_os("RINGCAST_TEST_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_ringcast")),
        PathBuf::from,
    );
    let mut command = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut command = Command::new(first);
            command.args(rest).arg(program);
            command
        }
        None => Command::new(program),
    };
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--backend", backend])
        .args(["--shards", &shards.to_string()])
        // Admin routes on a port of their own per server, so servers of parallel tests never
        // meet on the default one; a test's own --admin-listen flag overrides this.
        .env("RINGCAST_ADMIN_LISTEN", "127.0.0.1:0")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

/// A running `ringcast serve`, killed when dropped.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    log: Receiver<String>,
}

impl Server {
    /// Starts `ringcast serve` on `127.0.0.1:0` with `backend` and `shards` shards plus `extra`
    /// arguments, and waits until every shard has logged its listener.
    pub fn start(backend: Backend, shards: usize, extra: &[&str]) -> Server {
        Server::start_with_env(backend, shards, extra, &[])
    }

    /// [`Server::start`] with `env` added to the server's environment.
    pub fn start_with_env(
        backend: Backend,
        shards: usize,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut command = serve_command(backend.flag(), shards);
        command.args(extra).envs(env.iter().copied());
        Server::spawn(command, backend, shards)
    }

    /// Runs `command` (a [`serve_command`] for `backend` and `shards`, adjusted by the caller)
    /// and waits until every shard has logged its listener.
    pub fn spawn(mut command: Command, backend: Backend, shards: usize) -> Server {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringcast");
        let (tx, log) = mpsc::channel();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let line = strip_ansi(&line);
                    eprintln!("[ringcast] {line}");
                    // Once the test stops reading the log, keep draining the pipe anyway so
                    // the server never blocks on a full one.
                    let _ = tx.send(line);
                }
            });
        }
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: None,
            log,
        };
        let mut ports = Vec::new();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while ports.len() < shards {
            let line = server.next_log_line(deadline).unwrap_or_else(|| {
                panic!(
                    "ringcast logged {} of {shards} listen lines before exiting or timing out",
                    ports.len()
                )
            });
            if let Some(admin) = parse_addr_field(&line, "admin=") {
                server.admin = Some(admin);
            }
            if let Some(port) = parse_listen_port(&line) {
                // A shard must say which backend it runs, so a silent fallback cannot pass the
                // io_uring half of the matrix on epoll.
                assert!(
                    line.contains(backend.flag()),
                    "listen line without {backend:?}: {line}"
                );
                ports.push(port);
            }
        }
        assert!(
            ports.iter().all(|&p| p == ports[0]),
            "every shard must listen on the same SO_REUSEPORT port, got {ports:?}"
        );
        server.addr = SocketAddr::from(([127, 0, 0, 1], ports[0]));
        server
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the admin listener (`/metrics`, `/dashboard`); panics when the server
    /// runs without one.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.expect("the server logged no admin= address")
    }

    /// The server's process id, for signals and /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: libc::c_int) {
        ringcast::driver::sys::signal(self.pid(), signal).expect("kill");
    }

    /// Waits for the server to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to [`READ_TIMEOUT`] for a log line containing `needle` and returns it.
    pub fn wait_for_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            match self.next_log_line(deadline) {
                Some(line) if line.contains(needle) => return line,
                Some(_) => {}
                None => panic!("the server logged no line with {needle:?}"),
            }
        }
    }

    /// How long the server's threads have been running or waiting to run, summed (the first
    /// two fields of each `/proc/PID/task/TID/schedstat`). A thread that spins adds the whole
    /// wall time however busy the machine is; one that sleeps adds almost nothing.
    pub fn cpu_demand(&self) -> Duration {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).expect("tasks");
        let nanos: u64 = tasks
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
            .map(|stat| {
                stat.split_whitespace()
                    .take(2)
                    .filter_map(|field| field.parse::<u64>().ok())
                    .sum::<u64>()
            })
            .sum();
        Duration::from_nanos(nanos)
    }

    /// The next line the server logged, or `None` once it exited or `deadline` passed.
    fn next_log_line(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.log.recv_timeout(left).ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `line` without ANSI escape sequences (CSI ... letter), in case the log is coloured.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // Skip to the final byte of the sequence, a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The port in a log line holding `listen=127.0.0.1:PORT`.
pub fn parse_listen_port(line: &str) -> Option<u16> {
    parse_addr_field(line, "listen=").map(|a| a.port())
}

/// The address in a log line holding `FIELD=ADDR` (`field` given with its `=`).
pub fn parse_addr_field(line: &str, field: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(field)? + field.len()..];
    let addr = rest
        .split_whitespace()
        .next()?
        .trim_matches(|c| c == ',' || c == '"');
    addr.parse::<SocketAddr>().ok()
}

/// An HTTP response head: status code and raw header text.
#[derive(Debug)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// Every header line, lowercased names kept as sent.
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Opens a TCP connection with the suite's read timeout.
pub fn connect_tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("set_read_timeout");
    stream.set_nodelay(true).expect("set_nodelay");
    stream
}

/// One `read`, retried on EINTR: a read on a socket with a receive timeout fails with EINTR
/// when the process is stopped and resumed, even without a signal handler (signal(7)).
fn read_retrying(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Reads an HTTP response head from `stream`, returning it and any bytes read past it.
pub fn read_response_head(stream: &mut TcpStream) -> io::Result<(ResponseHead, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = read_retrying(stream, &mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "eof before response head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok((ResponseHead { status, headers }, buf[end..].to_vec()))
}

/// Sends `request` as is on a fresh connection and returns the response head.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> ResponseHead {
    let mut stream = connect_tcp(addr);
    stream.write_all(request).expect("write request");
    read_response_head(&mut stream)
        .expect("read response head")
        .0
}

/// An upgrade request for `path` with the RFC's sample key.
pub fn upgrade_request(addr: SocketAddr, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {HANDSHAKE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// The `Sec-WebSocket-Accept` value for `key` (RFC 6455 section 4.2.2).
pub fn accept_value(key: &str) -> String {
    let digest = Sha1::new()
        .chain_update(key.as_bytes())
        .chain_update(WS_GUID)
        .finalize();
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// One frame as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit.
    pub fin: bool,
    /// Opcode.
    pub opcode: u8,
    /// Unmasked payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code and reason of a close frame; `None` code for an empty close body.
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, op::CLOSE, "not a close frame: {self:?}");
        match self.payload.as_slice() {
            [hi, lo, ..] => Some(u16::from_be_bytes([*hi, *lo])),
            _ => None,
        }
    }
}

/// Encodes one masked client frame (RFC 6455 section 5.2), by hand, independently of the
/// server's codec.
pub fn encode_client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A WebSocket client on a blocking socket, upgraded on `/echo`.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    mask_seed: u32,
}

impl Client {
    /// Connects and upgrades on `path`, asserting the 101 answer and its accept value.
    pub fn connect_path(addr: SocketAddr, path: &str) -> Client {
        let mut stream = connect_tcp(addr);
        stream
            .write_all(upgrade_request(addr, path).as_bytes())
            .expect("write upgrade");
        let (head, rest) = read_response_head(&mut stream).expect("read upgrade answer");
        assert_eq!(head.status, 101, "upgrade answer: {head:?}");
        assert_eq!(
            head.header("sec-websocket-accept"),
            Some(accept_value(HANDSHAKE_KEY).as_str())
        );
        Client {
            stream,
            buf: rest,
            mask_seed: 0x9E37_79B9,
        }
    }

    /// Connects and upgrades on `/echo`.
    pub fn connect(addr: SocketAddr) -> Client {
        Client::connect_path(addr, "/echo")
    }

    /// Bounds how long one write may block, for clients that stop reading on purpose.
    pub fn set_write_timeout(&mut self, timeout: Duration) {
        self.stream
            .set_write_timeout(Some(timeout))
            .expect("set_write_timeout");
    }

    /// Writes raw bytes to the socket.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends one masked frame with a fresh mask.
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> io::Result<()> {
        // A cheap xorshift gives every frame a different, non-zero mask, as real clients do.
        self.mask_seed ^= self.mask_seed << 13;
        self.mask_seed ^= self.mask_seed >> 17;
        self.mask_seed ^= self.mask_seed << 5;
        let frame = encode_client_frame(fin, opcode, payload, self.mask_seed.to_be_bytes());
        self.send_raw(&frame)
    }

    /// Sends a close frame with `code` and `reason`.
    pub fn send_close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(reason.as_bytes());
        self.send_frame(true, op::CLOSE, &body)
    }

    /// Reads exactly `n` more bytes into the buffer's front.
    fn fill(&mut self, n: usize) -> io::Result<()> {
        let mut chunk = vec![0u8; 64 * 1024];
        while self.buf.len() < n {
            let got = read_retrying(&mut self.stream, &mut chunk)?;
            if got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "eof inside a frame",
                ));
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
        Ok(())
    }

    /// Reads one frame; server frames must be unmasked (RFC 6455 section 5.1).
    pub fn read_frame(&mut self) -> io::Result<Frame> {
        self.fill(2)?;
        let fin = self.buf[0] & 0x80 != 0;
        assert_eq!(self.buf[0] & 0x70, 0, "server set RSV bits");
        let opcode = self.buf[0] & 0x0F;
        assert_eq!(self.buf[1] & 0x80, 0, "server frames must not be masked");
        let (len, header) = match self.buf[1] & 0x7F {
            126 => {
                self.fill(4)?;
                (u64::from(u16::from_be_bytes([self.buf[2], self.buf[3]])), 4)
            }
            127 => {
                self.fill(10)?;
                let mut be = [0u8; 8];
                be.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(be), 10)
            }
            n => (u64::from(n), 2),
        };
        let len = usize::try_from(len).expect("frame length fits usize");
        self.fill(header + len)?;
        let payload = self.buf[header..header + len].to_vec();
        self.buf.drain(..header + len);
        Ok(Frame {
            fin,
            opcode,
            payload,
        })
    }

    /// Reads one whole data message (opcode of its first frame, reassembled payload),
    /// answering pings on the way. Returns the close frame instead if one arrives.
    pub fn read_message(&mut self) -> io::Result<Frame> {
        let mut message: Option<Frame> = None;
        loop {
            let frame = self.read_frame()?;
            match frame.opcode {
                op::PING => self.send_frame(true, op::PONG, &frame.payload)?,
                op::PONG => {}
                op::CLOSE => return Ok(frame),
                op::CONTINUATION => {
                    let m = message
                        .as_mut()
                        .expect("continuation without a first frame");
                    m.payload.extend_from_slice(&frame.payload);
                    m.fin = frame.fin;
                }
                _ => {
                    assert!(
                        message.is_none(),
                        "new data frame inside a fragmented message"
                    );
                    message = Some(frame);
                }
            }
            if let Some(m) = message.as_ref()
                && m.fin
            {
                return Ok(message.take().expect("checked above"));
            }
        }
    }

    /// Sends `payload` as one frame with `opcode` and asserts it comes back unchanged.
    pub fn assert_echo(&mut self, opcode: u8, payload: &[u8]) {
        self.send_frame(true, opcode, payload).expect("send");
        let back = self.read_message().expect("read echo");
        assert_eq!(
            back.opcode,
            opcode,
            "echo opcode for a {}-byte message",
            payload.len()
        );
        assert_eq!(back.payload.len(), payload.len(), "echo length");
        assert!(
            back.payload == payload,
            "echo of a {}-byte message differs",
            payload.len()
        );
    }

    /// Answers the server's pings for `period`, as a live but quiet client does. Any other
    /// frame fails the test.
    pub fn answer_pings_for(&mut self, period: Duration) {
        let deadline = Instant::now() + period;
        self.stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set_read_timeout");
        while Instant::now() < deadline {
            // A timed-out read leaves any partial frame in the buffer, so the next one resumes.
            match self.read_frame() {
                Ok(frame) if frame.opcode == op::PING => {
                    self.send_frame(true, op::PONG, &frame.payload)
                        .expect("send pong");
                }
                Ok(frame) => panic!("unexpected frame while idle: {frame:?}"),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("idle connection failed: {e}"),
            }
        }
        self.stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("set_read_timeout");
    }

    /// Reads until the server's close frame and returns its code.
    pub fn expect_close(&mut self) -> Option<u16> {
        loop {
            let frame = self.read_frame().expect("read until close");
            match frame.opcode {
                op::CLOSE => return frame.close_code(),
                op::PING | op::PONG => {}
                other => panic!("expected close, got opcode {other:#x}: {frame:?}"),
            }
        }
    }

    /// Asserts the server closes the TCP connection: the next read sees end of stream (or a
    /// reset, which is also a close).
    pub fn expect_eof(&mut self) {
        assert!(
            self.buf.is_empty(),
            "bytes after the close frame: {:?}",
            self.buf
        );
        let mut byte = [0u8; 1];
        match read_retrying(&mut self.stream, &mut byte) {
            Ok(0) => {}
            Ok(_) => panic!("data after the close frame"),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("waiting for the server to close the socket: {e}"),
        }
    }
}

/// `len` bytes of printable ASCII, different at every offset modulo a prime, so a shifted or
/// truncated echo cannot compare equal.
pub fn text_payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 23) as u8).collect()
}

/// `len` bytes covering every byte value.
pub fn binary_payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) % 251) as u8).collect()
}
