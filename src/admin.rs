//! The admin answers (`/metrics`, `/health`, `/ready`, `/dashboard` and the dashboard feed) and
//! the admin listener (`admin_listen`, loopback port 9601 by default), so that metrics and the
//! dashboard stay off the public port unless an operator puts them there (`public`).
//!
//! The shards answer `/health` and `/ready` on the main listener always (load balancers probe
//! there) and the other admin paths only with `admin_listen = "public"`. The admin listener is
//! a plain blocking `std` listener on its own thread with one short-lived thread per
//! connection: it serves scrapes, probes and a few dashboards, never client traffic, so
//! simplicity wins over the event loop. It keeps itself available to probes:
//!
//! - at most [`MAX_ADMIN_CONNECTIONS`] connections; when all are taken, the one that has waited
//!   longest for its request head is shut down to make room, so slow senders can only push out
//!   each other;
//! - each request, head and answer, has one deadline (`admin_request_timeout`), not one per
//!   read, so a client trickling bytes cannot hold a thread;
//! - at most `admin_max_feeds` dashboard feeds stream at once, so feeds never fill the slots;
//! - an accept error (EMFILE, ENFILE) pauses accepting for [`ACCEPT_RETRY`] instead of
//!   retrying at once.
//!
//! What these refuse is counted in `ringcast_admin_rejected_total{reason}`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::dashboard;
use crate::health::{self, HealthConfig, HealthSnapshot};
use crate::http::{self, HttpConfig, StatusCode};
use crate::metrics::{self, Registry};
use crate::ws::{self, OpCode};

/// Connections the admin listener serves at once: scrapers, probes and dashboards are a
/// handful; more is someone else.
pub(crate) const MAX_ADMIN_CONNECTIONS: usize = 64;

/// How long accepting pauses after an accept error such as EMFILE: the shards' tick.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The paths the shards answer on the main listener whatever `admin_listen` says.
pub(crate) fn is_probe_path(path: &str) -> bool {
    matches!(path, "/health" | "/ready")
}

/// Why the admin listener turned a connection away, the `reason` label of
/// `ringcast_admin_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AdminReject {
    /// Every slot was busy answering (503).
    Connections,
    /// `admin_max_feeds` feeds were open (503).
    Feeds,
    /// The request was not whole before `admin_request_timeout` (408).
    Deadline,
    /// Shut down while waiting for its head, to make room for a new connection.
    Evicted,
}

impl AdminReject {
    /// Every reason, in exposition order.
    const ALL: [Self; 4] = [
        Self::Connections,
        Self::Feeds,
        Self::Deadline,
        Self::Evicted,
    ];

    /// The `reason` label value.
    fn as_str(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::Feeds => "feeds",
            Self::Deadline => "deadline",
            Self::Evicted => "evicted",
        }
    }
}

/// The admin listener's counters, beside the shards' registry: the admin thread is the only
/// writer and a few relaxed atomics are nothing at its rate.
#[derive(Debug, Default)]
pub(crate) struct AdminStats {
    /// Connections turned away, by [`AdminReject`] in `ALL` order.
    rejected: [AtomicU64; AdminReject::ALL.len()],
}

impl AdminStats {
    /// Counts one connection turned away for `reason`.
    fn record(&self, reason: AdminReject) {
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the `ringcast_admin_rejected_total` family to a `/metrics` text.
    fn encode(&self, text: &mut String) {
        text.push_str(
            "# HELP ringcast_admin_rejected_total Admin listener connections turned away, by \
             reason.\n# TYPE ringcast_admin_rejected_total counter\n",
        );
        for reason in AdminReject::ALL {
            let count = self.rejected[reason as usize].load(Ordering::Relaxed);
            let _ = writeln!(
                text,
                "ringcast_admin_rejected_total{{reason=\"{}\"}} {count}",
                reason.as_str()
            );
        }
    }
}

/// Writes the whole HTTP answer for an admin `path` into `out`, from `registry` (and the admin
/// listener's `admin` counters when it runs); `false` when `path` is not one (the feed is a
/// WebSocket, answered apart). Answers say `Connection: close`: probes and scrapes are one
/// request each.
pub(crate) fn write_admin_response(
    registry: &Registry,
    admin: Option<&AdminStats>,
    health_config: &HealthConfig,
    path: &str,
    out: &mut Vec<u8>,
) -> bool {
    let close = [("Connection", "close"), ("Cache-Control", "no-store")];
    let snapshot = || registry.snapshot(SystemTime::now());
    let (status, content_type, body) = match path {
        "/metrics" => {
            let mut text = String::new();
            metrics::encode(&snapshot(), &mut text);
            admin.unwrap_or(&AdminStats::default()).encode(&mut text);
            (200, metrics::CONTENT_TYPE, text.into_bytes())
        }
        "/health" => {
            let health_snapshot = HealthSnapshot::from_metrics(&snapshot());
            let (status, body) = health::health_response(&health_snapshot, health_config);
            (status, health::CONTENT_TYPE, body)
        }
        "/ready" => {
            let (status, body) = health::ready_response(&HealthSnapshot::from_metrics(&snapshot()));
            (status, health::CONTENT_TYPE, body)
        }
        dashboard::PAGE_PATH => (
            200,
            dashboard::PAGE_CONTENT_TYPE,
            dashboard::PAGE_HTML.as_bytes().to_vec(),
        ),
        _ => return false,
    };
    http::write_response(out, StatusCode(status), content_type, &close, &body);
    true
}

/// The admin listener's limits (`admin_request_timeout`, `admin_max_feeds`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdminLimits {
    /// Deadline for one request, head and answer.
    pub(crate) request_timeout: Duration,
    /// Dashboard feeds streamed at once.
    pub(crate) max_feeds: usize,
}

/// What the admin threads share.
struct Admin {
    /// What the answers are made of.
    registry: Arc<Registry>,
    limits: AdminLimits,
    /// What was turned away.
    stats: AdminStats,
    /// Connection threads running.
    active: AtomicUsize,
    /// Feeds streaming.
    feeds: AtomicUsize,
    /// Connections still reading their request head, oldest first, with a handle to shut
    /// each down; the number tells entries apart.
    waiting: Mutex<VecDeque<(u64, TcpStream)>>,
    /// The number the next waiting entry gets.
    next_id: AtomicU64,
}

impl Admin {
    /// Shuts down the connection that has waited longest for its head; `false` when none is
    /// waiting.
    fn evict_oldest_waiting(&self) -> bool {
        let oldest = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        match oldest {
            Some((_, stream)) => {
                let _ = stream.shutdown(Shutdown::Both);
                self.stats.record(AdminReject::Evicted);
                true
            }
            None => false,
        }
    }

    /// Enters `stream` in the waiting list; the returned number takes it out again.
    fn enter_waiting(&self, stream: &TcpStream) -> Option<u64> {
        let handle = stream.try_clone().ok()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back((id, handle));
        Some(id)
    }

    /// Takes entry `id` (from [`Admin::enter_waiting`]) out of the waiting list, if it is
    /// still there.
    fn leave_waiting(&self, id: Option<u64>) {
        if let Some(id) = id {
            self.waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|(entry, _)| *entry != id);
        }
    }

    /// A new connection: served on its own thread when a slot is free or can be freed, else
    /// answered 503.
    fn admit(self: &Arc<Self>, mut stream: TcpStream) {
        let active = self.active.load(Ordering::Relaxed);
        // Evicted threads leave within moments; the hard bound covers their exit.
        let room = active < MAX_ADMIN_CONNECTIONS
            || (active < 2 * MAX_ADMIN_CONNECTIONS && self.evict_oldest_waiting());
        if !room {
            self.stats.record(AdminReject::Connections);
            let _ = stream.set_nonblocking(true);
            let _ = answer_error(&mut stream, StatusCode::SERVICE_UNAVAILABLE);
            return;
        }
        self.active.fetch_add(1, Ordering::Relaxed);
        let admin = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name("admin-conn".into())
            .spawn(move || {
                let _ = admin.serve_connection(stream);
                admin.active.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            self.active.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// One admin connection: reads the head by the deadline, answers it, streams the feed when
    /// asked.
    fn serve_connection(&self, mut stream: TcpStream) -> io::Result<()> {
        let deadline = Instant::now() + self.limits.request_timeout;
        let waiting = self.enter_waiting(&stream);
        let head = read_head(&mut stream, deadline);
        self.leave_waiting(waiting);
        let reader = match head {
            Ok(Some(reader)) => reader,
            Ok(None) => return Ok(()),
            Err(HeadError::Deadline) => {
                self.stats.record(AdminReject::Deadline);
                return answer_error(&mut stream, StatusCode::REQUEST_TIMEOUT);
            }
            Err(HeadError::Http(status)) => return answer_error(&mut stream, status),
            Err(HeadError::Io(e)) => return Err(e),
        };
        let config = HttpConfig::default();
        let request = match reader.parse(&config) {
            Ok(request) => request,
            Err(e) => return answer_error(&mut stream, e.status()),
        };
        stream.set_write_timeout(Some(remaining(deadline).max(Duration::from_millis(1))))?;
        let mut out = Vec::new();
        if request.path == dashboard::FEED_PATH {
            let upgrade = match http::validate_upgrade(&request, &config) {
                Ok(upgrade) => upgrade,
                Err(e) => return answer_error(&mut stream, e.status()),
            };
            let Some(_feed) = FeedSlot::take(&self.feeds, self.limits.max_feeds) else {
                self.stats.record(AdminReject::Feeds);
                return answer_error(&mut stream, StatusCode::SERVICE_UNAVAILABLE);
            };
            http::write_switching_protocols(&mut out, &ws::accept_key(upgrade.key), None);
            stream.write_all(&out)?;
            // Each frame must leave within the deadline; a page that stopped reading goes.
            stream.set_write_timeout(Some(self.limits.request_timeout))?;
            return stream_feed(stream, &self.registry);
        }
        let health = HealthConfig::default();
        let stats = Some(&self.stats);
        if !write_admin_response(&self.registry, stats, &health, request.path, &mut out) {
            return answer_error(&mut stream, StatusCode::NOT_FOUND);
        }
        stream.write_all(&out)
    }
}

/// One of `admin_max_feeds` feed slots, given back when dropped.
struct FeedSlot<'a>(&'a AtomicUsize);

impl<'a> FeedSlot<'a> {
    /// Takes a slot of the `max` counted in `feeds`; `None` when all are taken.
    fn take(feeds: &'a AtomicUsize, max: usize) -> Option<Self> {
        if feeds.fetch_add(1, Ordering::Relaxed) < max {
            Some(Self(feeds))
        } else {
            feeds.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }
}

impl Drop for FeedSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why no request head was read.
enum HeadError {
    /// The deadline passed first.
    Deadline,
    /// A bad head, answered with this status.
    Http(StatusCode),
    /// The socket failed (or was shut down to make room).
    Io(io::Error),
}

/// Time left until `deadline`, zero once it passed.
fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// Reads a request head by `deadline`; `Ok(None)` when the client left first.
fn read_head(
    stream: &mut TcpStream,
    deadline: Instant,
) -> Result<Option<http::HeadReader>, HeadError> {
    let config = HttpConfig::default();
    let mut reader = http::HeadReader::new();
    let mut chunk = [0; 4096];
    loop {
        let left = remaining(deadline);
        if left.is_zero() {
            return Err(HeadError::Deadline);
        }
        stream.set_read_timeout(Some(left)).map_err(HeadError::Io)?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HeadError::Deadline);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HeadError::Io(e)),
        };
        match reader.handle_read(&config, chunk.get(..n).unwrap_or_default()) {
            Ok(http::Status::Partial) => {}
            Ok(http::Status::Complete(_)) => return Ok(Some(reader)),
            Err(e) => return Err(HeadError::Http(e.status())),
        }
    }
}

/// Binds `addr` and serves the admin routes from `registry` on a background thread under
/// `limits`; returns the bound address (the port is chosen when `addr` has port 0).
pub(crate) fn spawn(
    addr: SocketAddr,
    registry: Arc<Registry>,
    limits: AdminLimits,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let admin = Arc::new(Admin {
        registry,
        limits,
        stats: AdminStats::default(),
        active: AtomicUsize::new(0),
        feeds: AtomicUsize::new(0),
        waiting: Mutex::new(VecDeque::new()),
        next_id: AtomicU64::new(0),
    });
    thread::Builder::new()
        .name("admin".into())
        .spawn(move || accept_loop(&listener, &admin))?;
    Ok(local)
}

/// Accepts forever; an error that is not about one connection (EMFILE, ENFILE, ENOBUFS) pauses
/// accepting for [`ACCEPT_RETRY`], logged at most once every ten seconds.
fn accept_loop(listener: &TcpListener, admin: &Arc<Admin>) {
    let mut last_warning: Option<Instant> = None;
    loop {
        match listener.accept() {
            Ok((stream, _)) => admin.admit(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(error = %e, "admin accept failed; retrying");
                }
                thread::sleep(ACCEPT_RETRY);
            }
        }
    }
}

/// Answers `status` with an empty body.
fn answer_error(stream: &mut TcpStream, status: StatusCode) -> io::Result<()> {
    let mut out = Vec::new();
    http::write_error(&mut out, status, &[]);
    stream.write_all(&out)
}

/// Sends a dashboard frame every [`dashboard::FEED_INTERVAL`] until the page goes away (a
/// write fails). What the page sends is never read; its close shows up as a failed write.
fn stream_feed(mut stream: TcpStream, registry: &Registry) -> io::Result<()> {
    let mut prev = None;
    loop {
        let snapshot = registry.snapshot(SystemTime::now());
        let frame = dashboard::dashboard_frame(&snapshot, prev.as_ref());
        prev = Some(snapshot);
        let mut out = Vec::with_capacity(frame.len() + 10);
        ws::encode_frame(&mut out, true, OpCode::Text, frame.as_bytes());
        stream.write_all(&out)?;
        thread::sleep(dashboard::FEED_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ProcessInfo;

    fn registry() -> Arc<Registry> {
        let process = ProcessInfo {
            version: "test",
            backend: "fake",
            start_time: SystemTime::now(),
            capacity: 10,
            capacity_configured: 10,
        };
        Arc::new(Registry::new(1, process))
    }

    const LIMITS: AdminLimits = AdminLimits {
        request_timeout: Duration::from_secs(10),
        max_feeds: 8,
    };

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("send");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    #[test]
    fn admin_listener_serves_the_admin_routes_only() {
        let addr = spawn("127.0.0.1:0".parse().expect("addr"), registry(), LIMITS).expect("spawn");
        assert!(get(addr, "/metrics").contains("ringcast_build_info"));
        assert!(
            get(addr, "/ready").starts_with("HTTP/1.1 503 "),
            "no shard listens"
        );
        assert!(get(addr, "/health").contains("\"status\""));
        assert!(get(addr, "/dashboard").contains("<html"));
        assert!(get(addr, "/echo").starts_with("HTTP/1.1 404 "));
    }

    #[test]
    fn admin_feed_sends_frames() {
        let addr = spawn("127.0.0.1:0".parse().expect("addr"), registry(), LIMITS).expect("spawn");
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let request = "GET /dashboard/feed HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                       Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                       Sec-WebSocket-Version: 13\r\n\r\n";
        stream.write_all(request.as_bytes()).expect("send");
        let mut seen = Vec::new();
        let mut chunk = [0; 4096];
        while !String::from_utf8_lossy(&seen).contains("\"v\":1") {
            let n = stream.read(&mut chunk).expect("read");
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&chunk[..n]);
        }
        assert!(seen.starts_with(b"HTTP/1.1 101 "));
    }
}
