//! Every metric family of `/metrics` moves under the traffic it counts: a real server on each
//! backend gets echo messages, a heartbeat answered, a refused handshake, a client close, a slow
//! consumer, a Pusher publish through the HTTP API to two subscribers, a Pusher subscription
//! over the per-connection limit, batches of publishes to a shard whose two-message mailbox lane
//! overflows and that takes one a turn, a socket over the per-IP pending-handshake cap and a
//! dashboard feed over the admin listener's cap; then each family is scraped and must be non-zero
//! (gauges that describe the process) or have counted the action.

#[allow(
    dead_code,
    reason = "the shared harness serves several suites; this one uses part of it"
)]
mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::abuse::{APP_KEY, Client, IO_TIMEOUT, Server, connect, connect_from};
use common::metrics::{batch_publish, publish};
use common::raw_request;
use ringcast::ws::OpCode;

/// The capacity the server is started with, so `ringcast_connections_capacity` has a known value.
const CAPACITY: &str = "5000";

/// The next data or close frame, answering pings on the way (the server pings every second).
fn next_frame(client: &mut Client) -> (OpCode, Vec<u8>) {
    loop {
        let (op, payload) = client.read_frame().expect("a frame from the server");
        match op {
            OpCode::Ping => client.send(OpCode::Pong, &payload),
            OpCode::Pong => {}
            _ => return (op, payload),
        }
    }
}

/// The next Pusher event that is not `pusher:ping`, as JSON.
fn next_event(client: &mut Client) -> serde_json::Value {
    loop {
        let (op, payload) = next_frame(client);
        assert_eq!(op, OpCode::Text, "Pusher frame: {payload:?}");
        let event: serde_json::Value = serde_json::from_slice(&payload).expect("JSON event");
        if event["event"] != "pusher:ping" {
            return event;
        }
    }
}

/// A Pusher connection subscribed to the public channel `channel`.
fn subscriber(server: &Server, channel: &str) -> Client {
    subscriber_with_shard(server, channel).0
}

/// [`subscriber`], with the shard it landed on (the socket id's first half ends in it).
fn subscriber_with_shard(server: &Server, channel: &str) -> (Client, u64) {
    let path = format!("/app/{APP_KEY}?protocol=7&client=metrics-test");
    let mut client = Client::upgrade(connect(server.addr()), &path, &[]).expect("Pusher upgrade");
    let established = next_event(&mut client);
    assert_eq!(established["event"], "pusher:connection_established");
    let data: serde_json::Value =
        serde_json::from_str(established["data"].as_str().unwrap_or("{}")).expect("JSON data");
    let shard = data["socket_id"]
        .as_str()
        .and_then(|id| id.split('.').next()?.parse::<u64>().ok())
        .map(|high| high % 1000)
        .expect("socket id");
    let subscribe =
        serde_json::json!({ "event": "pusher:subscribe", "data": { "channel": channel } });
    client.send(OpCode::Text, subscribe.to_string().as_bytes());
    assert_eq!(
        next_event(&mut client)["event"],
        "pusher_internal:subscription_succeeded"
    );
    (client, shard)
}

/// Subscribers on both shards, then batches of ten publishes: whichever shard takes a batch
/// sends the other ten messages in a row into a lane that holds two (`--mesh-queue-capacity 2`),
/// which the other takes one a turn (`--mesh-turn-budget 1`): the lane overflows (a drop) and a
/// turn leaves one behind (budget exhausted). Batches repeat until both are counted, a bounded
/// number of times.
fn mesh_lane_overflows(server: &Server) {
    let mut held = Vec::new();
    let mut shards = std::collections::HashSet::new();
    while shards.len() < 2 {
        assert!(held.len() < 64, "64 subscribers all landed on one shard");
        let (client, shard) = subscriber_with_shard(server, "metrics-mesh");
        shards.insert(shard);
        held.push(client);
    }
    let counted = || {
        server.metric("ringcast_mesh_dropped_total", "lane=\"data\"") >= 1.0
            && server.metric("ringcast_mesh_budget_exhausted_total", "") >= 1.0
    };
    for _ in 0..200 {
        assert_eq!(
            batch_publish(server.addr(), "metrics-mesh", "burst", 10),
            200
        );
        if counted() {
            return;
        }
    }
    panic!("200 batches of ten did not both overflow a two-message lane and exhaust a turn");
}

/// Echo clients write without reading until the server cuts them off at the outbox cap.
fn slow_consumer(server: &Server) {
    let mut client = Client::upgrade(connect(server.addr()), "/echo", &[]).expect("upgrade");
    let message = vec![b's'; 32 * 1024];
    // 256 MiB is far above any socket buffers plus the 64 KiB cap: the server closes first.
    for _ in 0..8192 {
        if client.send_frame(true, OpCode::Binary, &message).is_err() {
            return;
        }
    }
    panic!("the server never closed a client that does not read");
}

/// What the server answered on whichever of `streams` it answered, waiting up to
/// [`IO_TIMEOUT`].
fn pending_refusal(streams: &mut [std::net::TcpStream]) -> String {
    let start = Instant::now();
    let mut chunk = [0; 256];
    while start.elapsed() < IO_TIMEOUT {
        for stream in streams.iter_mut() {
            stream
                .set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            if let Ok(n @ 1..) = std::io::Read::read(stream, &mut chunk) {
                return String::from_utf8_lossy(&chunk[..n]).into_owned();
            }
        }
    }
    String::new()
}

fn every_family_moves(backend: &str) {
    let server = Server::start(
        backend,
        &[
            "--max-connections",
            CAPACITY,
            "--ping-interval",
            "1s",
            "--max-outbox-bytes",
            "65536",
            "--max-messages-per-sec",
            "0",
            "--max-bytes-per-sec",
            "0",
            "--mesh-queue-capacity",
            "2",
            "--mesh-turn-budget",
            "1",
            // Limits for 127.0.0.0/8 but 127.0.0.1, where the rest of the traffic comes from.
            "--limits-exempt",
            "127.0.0.1",
            "--max-pending-handshakes-per-ip",
            "1",
            "--admin-max-feeds",
            "0",
        ],
    );

    // Two silent sockets from one address: whichever a shard charges second is refused at
    // accept as a pending handshake.
    let silent = [127, 0, 0, 31];
    let mut pair = [
        connect_from(silent, server.addr()),
        connect_from(silent, server.addr()),
    ];
    let refused = pending_refusal(&mut pair);
    assert!(refused.starts_with("HTTP/1.1 429 "), "{refused}");

    // A dashboard feed over the admin listener's feed cap.
    let feed = Client::upgrade(connect(server.admin_addr()), "/dashboard/feed", &[]);
    assert!(feed.err().is_some_and(|a| a.starts_with("HTTP/1.1 503 ")));

    // Echo: messages in and out, bytes, the outbox, a handshake, a connection held.
    let mut echo = Client::upgrade(connect(server.addr()), "/echo", &[]).expect("upgrade");
    for _ in 0..10 {
        echo.send(OpCode::Text, b"metrics");
        assert_eq!(next_frame(&mut echo), (OpCode::Text, b"metrics".to_vec()));
    }

    // A heartbeat: the server pings after a second of silence; the client answers.
    let mut quiet = Client::upgrade(connect(server.addr()), "/echo", &[]).expect("upgrade");
    quiet
        .stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (op, payload) = quiet.read_frame().expect("a ping within the ping interval");
    assert_eq!(op, OpCode::Ping);
    quiet.send(OpCode::Pong, &payload);

    // A refused handshake: an upgrade without its WebSocket headers.
    let refused = raw_request(server.addr(), b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!((400..500).contains(&refused.status), "{refused:?}");

    // A client close.
    let mut leaving = Client::upgrade(connect(server.addr()), "/echo", &[]).expect("upgrade");
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    leaving.send(OpCode::Close, &close);
    assert_eq!(next_frame(&mut leaving).0, OpCode::Close);

    slow_consumer(&server);

    // Fan-out: one API publish reaches two subscribers.
    let mut first = subscriber(&server, "metrics-fanout");
    let mut second = subscriber(&server, "metrics-fanout");
    assert_eq!(publish(server.addr(), "metrics-fanout", "tick", "{}"), 200);
    for client in [&mut first, &mut second] {
        assert_eq!(next_event(client)["event"], "tick");
    }

    // A Pusher limit: one subscription over the 128 a connection may hold.
    let mut greedy = subscriber(&server, "metrics-greedy-0");
    for i in 1..=128 {
        let channel = format!("metrics-greedy-{i}");
        let subscribe =
            serde_json::json!({ "event": "pusher:subscribe", "data": { "channel": channel } });
        greedy.send(OpCode::Text, subscribe.to_string().as_bytes());
        let answer = next_event(&mut greedy);
        let expected = if i < 128 {
            "pusher_internal:subscription_succeeded"
        } else {
            "pusher:subscription_error"
        };
        assert_eq!(answer["event"], expected, "{answer}");
    }
    mesh_lane_overflows(&server);

    // Each family, the series that must have moved and by how much at least. Shards publish
    // every 100 ms, so each is awaited rather than read once.
    let expected: &[(&str, &str, f64)] = &[
        ("ringcast_build_info", "version=", 1.0),
        ("ringcast_driver_info", "driver=", 1.0),
        ("process_start_time_seconds", "", 1.0),
        ("ringcast_connections_capacity", "", 5000.0),
        ("ringcast_connections_capacity_configured", "", 5000.0),
        ("ringcast_connections", "", 5.0),
        ("ringcast_channels", "", 1.0),
        ("ringcast_subscriptions", "", 2.0),
        ("ringcast_shard_up", "", 2.0),
        (
            "ringcast_event_loop_lag_current_seconds",
            "",
            f64::MIN_POSITIVE,
        ),
        ("ringcast_event_loop_lag_seconds_count", "", 1.0),
        ("ringcast_connections_accepted_total", "", 7.0),
        (
            "ringcast_connections_rejected_total",
            "reason=\"handshake_error\"",
            1.0,
        ),
        (
            "ringcast_connections_rejected_total",
            "reason=\"pending_handshakes\"",
            1.0,
        ),
        ("ringcast_admin_rejected_total", "reason=\"feeds\"", 1.0),
        (
            "ringcast_disconnects_total",
            "reason=\"client_close\",code=\"1000\"",
            1.0,
        ),
        (
            "ringcast_slow_consumer_closes_total",
            "reason=\"outbox_full\"",
            1.0,
        ),
        ("ringcast_messages_received_total", "", 10.0),
        ("ringcast_messages_sent_total", "", 10.0),
        ("ringcast_received_bytes_total", "", 1.0),
        ("ringcast_sent_bytes_total", "", 1.0),
        ("ringcast_deliveries_total", "", 2.0),
        (
            "ringcast_pusher_limit_refusals_total",
            "limit=\"subscriptions_per_connection\"",
            1.0,
        ),
        (
            "ringcast_mesh_dropped_total",
            "lane=\"data\",reason=\"full\"",
            1.0,
        ),
        ("ringcast_mesh_budget_exhausted_total", "", 1.0),
        ("ringcast_outbox_bytes_count", "", 1.0),
        ("ringcast_handshake_duration_seconds_count", "", 7.0),
        ("ringcast_heartbeat_rtt_seconds_count", "", 1.0),
    ];
    let deadline = Instant::now() + IO_TIMEOUT;
    let stayed = loop {
        let stayed: Vec<String> = expected
            .iter()
            .filter_map(|&(name, labels, at_least)| {
                let value = server.metric(name, labels);
                (value < at_least).then(|| format!("{name}{{{labels}}} = {value} < {at_least}"))
            })
            .collect();
        if stayed.is_empty() || Instant::now() >= deadline {
            break stayed;
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert!(
        stayed.is_empty(),
        "families that did not move:\n{}",
        stayed.join("\n")
    );
}

#[test]
fn every_family_moves_on_epoll() {
    every_family_moves("epoll");
}

#[test]
fn every_family_moves_on_io_uring() {
    if let Some(reason) = common::uring_unavailable() {
        eprintln!("io_uring unavailable on this kernel ({reason}): skipped");
        return;
    }
    every_family_moves("uring");
}
