//! The admin answers (`/metrics`, `/health`, `/ready`, `/dashboard` and the dashboard feed) and
//! the optional separate admin listener (`admin_listen`), so operators can keep them off the
//! public port.
//!
//! The shards answer these paths on the main listener unless `admin_listen` is set. The admin
//! listener is a plain blocking `std` listener on its own thread with one short-lived thread
//! per connection: it serves scrapes, probes and a few dashboards, never client traffic, so
//! simplicity wins over the event loop. Its connections are capped at
//! [`MAX_ADMIN_CONNECTIONS`] and each read is bounded by [`ADMIN_READ_TIMEOUT`], so a client
//! of the admin port cannot pin threads.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::SystemTime;

use crate::dashboard;
use crate::health::{self, HealthConfig, HealthSnapshot};
use crate::http::{self, HttpConfig, StatusCode};
use crate::metrics::{self, Registry};
use crate::ws::{self, OpCode};

/// Connections the admin listener serves at once: scrapers, probes and dashboards are a
/// handful; more is someone else.
pub(crate) const MAX_ADMIN_CONNECTIONS: usize = 64;

/// How long an admin client may take to send its request: the default handshake deadline
/// (docs/operations.md, Limits).
pub(crate) const ADMIN_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Writes the whole HTTP answer for an admin `path` into `out`, from `registry`; `false` when
/// `path` is not one (the feed is a WebSocket, answered apart). Answers say `Connection:
/// close`: probes and scrapes are one request each.
pub(crate) fn write_admin_response(
    registry: &Registry,
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

/// Binds `addr` and serves the admin routes from `registry` on a background thread; returns
/// the bound address (the port is chosen when `addr` has port 0).
pub(crate) fn spawn(addr: SocketAddr, registry: Arc<Registry>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let active = Arc::new(AtomicUsize::new(0));
    thread::Builder::new().name("admin".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            if active.fetch_add(1, Ordering::Relaxed) >= MAX_ADMIN_CONNECTIONS {
                active.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            let (registry, done) = (Arc::clone(&registry), Arc::clone(&active));
            let spawned = thread::Builder::new()
                .name("admin-conn".into())
                .spawn(move || {
                    let _ = serve_connection(stream, &registry);
                    done.fetch_sub(1, Ordering::Relaxed);
                });
            if spawned.is_err() {
                active.fetch_sub(1, Ordering::Relaxed);
            }
        }
    })?;
    Ok(local)
}

/// One admin connection: reads the head, answers it, streams the feed when asked.
fn serve_connection(mut stream: TcpStream, registry: &Registry) -> io::Result<()> {
    stream.set_read_timeout(Some(ADMIN_READ_TIMEOUT))?;
    stream.set_write_timeout(Some(ADMIN_READ_TIMEOUT))?;
    let config = HttpConfig::default();
    let mut reader = http::HeadReader::new();
    let mut chunk = [0; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        match reader.handle_read(&config, chunk.get(..n).unwrap_or_default()) {
            Ok(http::Status::Partial) => {}
            Ok(http::Status::Complete(_)) => break,
            Err(e) => return answer_error(&mut stream, e.status()),
        }
    }
    let request = match reader.parse(&config) {
        Ok(request) => request,
        Err(e) => return answer_error(&mut stream, e.status()),
    };
    let mut out = Vec::new();
    if request.path == dashboard::FEED_PATH {
        let upgrade = match http::validate_upgrade(&request, &config) {
            Ok(upgrade) => upgrade,
            Err(e) => return answer_error(&mut stream, e.status()),
        };
        http::write_switching_protocols(&mut out, &ws::accept_key(upgrade.key), None);
        stream.write_all(&out)?;
        return stream_feed(stream, registry);
    }
    if !write_admin_response(registry, &HealthConfig::default(), request.path, &mut out) {
        return answer_error(&mut stream, StatusCode::NOT_FOUND);
    }
    stream.write_all(&out)
}

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

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(ADMIN_READ_TIMEOUT))
            .expect("timeout");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("send");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    #[test]
    fn admin_listener_serves_the_admin_routes_only() {
        let addr = spawn("127.0.0.1:0".parse().expect("addr"), registry()).expect("spawn");
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
        let addr = spawn("127.0.0.1:0".parse().expect("addr"), registry()).expect("spawn");
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(ADMIN_READ_TIMEOUT))
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
