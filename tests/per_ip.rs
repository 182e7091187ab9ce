//! The per-IP limits as clients meet them, on both backends: connections are counted from
//! accept (a socket that never sends its request holds a slot), connections still waiting for
//! their request head are capped per address, IPv6 clients are counted per /64, and a PROXY
//! header that names no client (`LOCAL`, `UNKNOWN`) leaves the balancer's own address charged
//! and its `X-Forwarded-For` unbelieved.

#[allow(
    dead_code,
    reason = "the shared harness serves several suites; this one uses part of it"
)]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::abuse::{Client, IO_TIMEOUT, Server, connect, connect_from};

/// Everything the server sends until it closes (or resets) the connection.
fn answer_of(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut chunk = [0; 4096];
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// One shard, so sockets are accepted (and charged) in the order they connected.
fn one_shard(backend: &str, extra: &[&str]) -> Server {
    Server::start_with_shards(backend, 1, extra)
}

fn half_open_sockets_hold_per_ip_slots(backend: &str) {
    let server = one_shard(
        backend,
        &[
            "--limits-exempt",
            "",
            "--max-connections-per-ip",
            "3",
            "--max-pending-handshakes-per-ip",
            "0",
            "--max-handshakes-per-ip",
            "0",
        ],
    );
    let source = [127, 0, 0, 22];
    let silent: Vec<TcpStream> = (0..3)
        .map(|_| connect_from(source, server.addr()))
        .collect();
    let refused = Client::upgrade(connect_from(source, server.addr()), "/echo", &[])
        .err()
        .expect("three silent sockets hold the address's three slots");
    assert!(refused.starts_with("HTTP/1.1 429 "), "{refused}");
    let mut probe = connect_from(source, server.addr());
    probe
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("probe");
    let probed = answer_of(&mut probe);
    assert!(
        probed.starts_with("HTTP/1.1 429 "),
        "plain requests count too: {probed}"
    );
    server.wait_metric(
        "ringcast_connections_rejected_total",
        "reason=\"per_ip\"",
        2.0,
    );
    drop(silent);
    let start = Instant::now();
    let _client = loop {
        match Client::upgrade(connect_from(source, server.addr()), "/echo", &[]) {
            Ok(client) => break client,
            Err(_) if start.elapsed() < IO_TIMEOUT => thread::sleep(Duration::from_millis(20)),
            Err(answer) => panic!("slots not given back when the sockets closed: {answer}"),
        }
    };
    server.assert_responsive_from([127, 0, 0, 23]);
}
matrix!(half_open_sockets_hold_per_ip_slots);

fn pending_handshakes_are_capped_per_ip(backend: &str) {
    let server = one_shard(
        backend,
        &[
            "--limits-exempt",
            "",
            "--max-pending-handshakes-per-ip",
            "4",
            "--max-handshakes-per-ip",
            "0",
        ],
    );
    let source = [127, 0, 0, 24];
    let mut silent: Vec<TcpStream> = (0..4)
        .map(|_| connect_from(source, server.addr()))
        .collect();
    // Refused at accept, before it sends anything.
    let answer = answer_of(&mut connect_from(source, server.addr()));
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    server.wait_metric(
        "ringcast_connections_rejected_total",
        "reason=\"pending_handshakes\"",
        1.0,
    );
    // Other addresses are unaffected.
    server.assert_responsive_from([127, 0, 0, 25]);
    // One of the four finishes its handshake: its pending slot frees, its connection stays.
    let upgraded = Client::upgrade(silent.remove(0), "/echo", &[]).expect("a pending one upgrades");
    let start = Instant::now();
    let _fifth = loop {
        let stream = connect_from(source, server.addr());
        match Client::upgrade(stream, "/echo", &[]) {
            Ok(client) => break client,
            Err(_) if start.elapsed() < IO_TIMEOUT => thread::sleep(Duration::from_millis(20)),
            Err(answer) => panic!("the finished handshake still counts as pending: {answer}"),
        }
    };
    drop(upgraded);
}
matrix!(pending_handshakes_are_capped_per_ip);

/// A server behind a PROXY-protocol balancer on 127.0.0.1 that is also trusted for
/// `X-Forwarded-For`, one connection per client address.
fn behind_a_balancer(backend: &str) -> Server {
    one_shard(
        backend,
        &[
            "--trusted-proxies",
            "127.0.0.1",
            "--proxy-protocol",
            "true",
            "--limits-exempt",
            "",
            "--max-connections-per-ip",
            "1",
            "--max-handshakes-per-ip",
            "0",
            "--max-pending-handshakes-per-ip",
            "0",
        ],
    )
}

/// An upgrade through the balancer: `header`, then a request carrying `forwarded_for`.
fn through(server: &Server, header: &[u8], forwarded_for: Option<&str>) -> Result<Client, String> {
    let mut stream = connect(server.addr());
    stream.write_all(header).expect("PROXY header");
    let headers: Vec<(&str, &str)> = forwarded_for
        .map(|client| ("X-Forwarded-For", client))
        .into_iter()
        .collect();
    Client::upgrade(stream, "/echo", &headers)
}

fn proxy_header_without_a_client_keeps_forwarded_for_untrusted(backend: &str) {
    let server = behind_a_balancer(backend);
    let local_v2 = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    let _first = through(&server, local_v2, Some("198.51.100.50")).expect("the balancer's own");
    let second = through(&server, local_v2, Some("198.51.100.51"))
        .err()
        .expect("charged to the balancer again, not to the forwarded address");
    assert!(second.starts_with("HTTP/1.1 429 "), "{second}");
    let unknown = through(&server, b"PROXY UNKNOWN\r\n", Some("198.51.100.52"))
        .err()
        .expect("UNKNOWN is the balancer's own connection too");
    assert!(unknown.starts_with("HTTP/1.1 429 "), "{unknown}");
    // A header that names its client is still believed.
    let _client = through(
        &server,
        b"PROXY TCP4 198.51.100.53 127.0.0.1 40000 80\r\n",
        Some("198.51.100.54"),
    )
    .expect("a named client has its own slot");
}
matrix!(proxy_header_without_a_client_keeps_forwarded_for_untrusted);

fn ipv6_clients_are_counted_per_64(backend: &str) {
    let server = behind_a_balancer(backend);
    let header = |source: &str| format!("PROXY TCP6 {source} ::1 40000 80\r\n");
    let _first = through(&server, header("2001:db8:7:1::1").as_bytes(), None)
        .expect("the first address of the /64");
    let second = through(&server, header("2001:db8:7:1::2").as_bytes(), None)
        .err()
        .expect("another address of the same /64 is the same client");
    assert!(second.starts_with("HTTP/1.1 429 "), "{second}");
    let _other = through(&server, header("2001:db8:7:2::1").as_bytes(), None)
        .expect("another /64 is another client");
}
matrix!(ipv6_clients_are_counted_per_64);
