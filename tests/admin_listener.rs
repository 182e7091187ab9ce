//! The admin listener against the real binary: metrics and the dashboard stay off the public
//! port unless asked for, probes stay on it, slow or many admin clients cannot lock `/health`
//! out, and running out of descriptors makes both listeners pause accepting rather than spin.

#[allow(
    dead_code,
    reason = "the shared harness serves several suites; this one uses part of it"
)]
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::abuse::{Client, IO_TIMEOUT, Server, connect, get_from};

/// The harness's backend for a matrix name.
fn backend_of(name: &str) -> common::Backend {
    match name {
        "uring" => common::Backend::Uring,
        _ => common::Backend::Epoll,
    }
}

/// The status line of a GET of `path` from `addr`.
fn status_of(addr: SocketAddr, path: &str) -> String {
    get_from(addr, path)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn admin_routes_stay_off_the_public_port_by_default(backend: &str) {
    // The harness puts every server's admin listener on an ephemeral port; this one gets the
    // default (the loopback port 9601, or none when another process holds it).
    let mut command = common::serve_command(backend, 1);
    command.env_remove("RINGCAST_ADMIN_LISTEN");
    let server = common::Server::spawn(command, backend_of(backend), 1);
    for path in ["/metrics", "/dashboard"] {
        assert_eq!(
            status_of(server.addr(), path),
            "HTTP/1.1 404 Not Found",
            "{path}"
        );
    }
    let feed = Client::upgrade(connect(server.addr()), "/dashboard/feed", &[]);
    assert!(feed.is_err(), "no dashboard feed on the public port");
    for path in ["/health", "/ready"] {
        assert_eq!(status_of(server.addr(), path), "HTTP/1.1 200 OK", "{path}");
    }
}
matrix!(admin_routes_stay_off_the_public_port_by_default);

fn admin_listener_serves_metrics_and_the_public_port_keeps_probes(backend: &str) {
    let server = Server::start(backend, &[]);
    let admin = server.admin_addr();
    // Healthy once both shards have published.
    server.wait_metric("ringcast_shard_up", "", 2.0);
    let metrics = get_from(admin, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200 "), "{metrics}");
    assert!(metrics.contains("ringcast_shard_up"), "{metrics}");
    assert!(
        metrics.contains("ringcast_admin_rejected_total"),
        "{metrics}"
    );
    assert_eq!(status_of(admin, "/health"), "HTTP/1.1 200 OK");
    assert_eq!(
        status_of(server.addr(), "/metrics"),
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(status_of(server.addr(), "/health"), "HTTP/1.1 200 OK");
    assert_eq!(status_of(server.addr(), "/ready"), "HTTP/1.1 200 OK");
}
matrix!(admin_listener_serves_metrics_and_the_public_port_keeps_probes);

fn admin_routes_can_be_public_or_off(backend: &str) {
    let public = Server::start(backend, &["--admin-listen", "public"]);
    let metrics = get_from(public.addr(), "/metrics");
    assert!(metrics.contains("ringcast_shard_up"), "{metrics}");
    let off = Server::start(backend, &["--admin-listen", "off"]);
    assert_eq!(status_of(off.addr(), "/metrics"), "HTTP/1.1 404 Not Found");
    assert_eq!(status_of(off.addr(), "/health"), "HTTP/1.1 200 OK");
    assert!(
        !off.info_lines()
            .iter()
            .any(|l| l.contains("admin routes listening")),
        "no admin listener when off"
    );
}
matrix!(admin_routes_can_be_public_or_off);

/// A dashboard feed upgrade to `admin`: `true` when it was switched to a WebSocket.
fn open_feed(admin: SocketAddr) -> Result<Client, String> {
    Client::upgrade(connect(admin), "/dashboard/feed", &[])
}

#[test]
fn slowloris_and_many_feeds_do_not_lock_out_health() {
    let server = Server::start(
        "epoll",
        &["--admin-request-timeout", "60s", "--admin-max-feeds", "4"],
    );
    let admin = server.admin_addr();
    let mut feeds = Vec::new();
    let mut refused = 0;
    for _ in 0..10 {
        match open_feed(admin) {
            Ok(feed) => feeds.push(feed),
            Err(answer) => {
                assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
                refused += 1;
            }
        }
    }
    assert_eq!(
        (feeds.len(), refused),
        (4, 6),
        "feeds past the cap are refused"
    );
    // More slow clients than the listener has connections, each holding a partial head.
    let slow: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut stream = connect(admin);
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHo")
                .expect("partial head");
            stream
        })
        .collect();
    for _ in 0..3 {
        assert_eq!(status_of(admin, "/health"), "HTTP/1.1 200 OK");
    }
    server.wait_metric("ringcast_admin_rejected_total", "reason=\"feeds\"", 6.0);
    server.wait_metric("ringcast_admin_rejected_total", "reason=\"evicted\"", 1.0);
    drop(slow);
}

#[test]
fn the_admin_deadline_covers_the_whole_request() {
    let server = Server::start("epoll", &["--admin-request-timeout", "1s"]);
    let mut stream = connect(server.admin_addr());
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nX-Slow: ")
        .expect("head");
    // One byte every 100 ms for ten times the deadline: each read is quick, the whole is not.
    // The answer is read before a write can fail on the closed connection.
    let mut answer = Vec::new();
    let mut chunk = [0; 1024];
    for _ in 0..100 {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if !answer.is_empty() {
                    break;
                }
                let _ = stream.write_all(b"a");
            }
            Err(_) => break,
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    server.wait_metric("ringcast_admin_rejected_total", "reason=\"deadline\"", 1.0);
}

fn accept_errors_back_off_and_recover(backend: &str) {
    // A descriptor limit the server cannot raise: a few dozen connections exhaust it.
    let mut command = common::serve_command_under(&["prlimit", "--nofile=64:64", "--"], backend, 1);
    command.args(["--handshake-timeout", "60s"]);
    let mut server = common::Server::spawn(command, backend_of(backend), 1);
    let admin = server.admin_addr();
    let public: Vec<TcpStream> = (0..100).map(|_| connect(server.addr())).collect();
    server.wait_for_log("accept failed");
    let waiting: Vec<TcpStream> = (0..4).map(|_| connect(admin)).collect();
    server.wait_for_log("admin accept failed");
    // Both listeners have hit EMFILE; over the next second the process must mostly sleep.
    let (demand, wall) = (server.cpu_demand(), Instant::now());
    thread::sleep(Duration::from_secs(1));
    let (demand, wall) = (server.cpu_demand() - demand, wall.elapsed());
    assert!(
        demand * 4 < wall,
        "the server's threads ran or waited to run for {demand:?} of {wall:?} at EMFILE: \
         accepting spins"
    );
    drop(public);
    drop(waiting);
    let start = Instant::now();
    loop {
        let served = status_of(server.addr(), "/health") == "HTTP/1.1 200 OK"
            && status_of(admin, "/health") == "HTTP/1.1 200 OK";
        if served {
            break;
        }
        assert!(
            start.elapsed() < IO_TIMEOUT,
            "the listeners did not recover"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let mut client = common::Client::connect(server.addr());
    client.assert_echo(common::op::TEXT, b"after EMFILE");
}
matrix!(accept_errors_back_off_and_recover);
