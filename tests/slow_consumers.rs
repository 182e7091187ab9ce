//! Slow consumers and the server's close, over real sockets against the real binary on both
//! backends: a reader that drains slower than the least drain rate is cut off while a normal
//! one is not; once the server queued its close frame no data frame follows it; and a reader
//! that stopped reading past the outbox cap reads its close code (1008, Pusher 4100) when it
//! reads again.

#[allow(
    dead_code,
    reason = "the shared harness serves several suites; this one uses part of it"
)]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::abuse::{APP_KEY, Client, IO_TIMEOUT, Server, connect};
use common::metrics::publish;
use ringcast::ws::OpCode;

/// The receive buffer of a client that reads little: the kernel's smallest, so what the server
/// sends stays in the server's buffers and outbox.
const SMALL_RCVBUF: usize = 4096;

/// Largest message the server accepts by default, and so the largest echo.
const MESSAGE: usize = 64 * 1024;

/// A connection whose receive buffer is set to `rcvbuf` before it connects (so its window is
/// small from the first segment), with the suite's timeouts.
fn connect_with_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> TcpStream {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream
}

/// Every frame the server sends until the stream ends (EOF, reset or timeout).
fn read_to_end(client: &mut Client) -> Vec<(OpCode, Vec<u8>)> {
    std::iter::from_fn(|| client.read_frame()).collect()
}

/// Every frame up to and with the server's close frame, which is then answered; asserts that
/// nothing follows it before the server ends the stream.
fn read_to_close(client: &mut Client) -> Vec<(OpCode, Vec<u8>)> {
    let mut frames = Vec::new();
    while let Some((op, payload)) = client.read_frame() {
        let close = op == OpCode::Close;
        frames.push((op, payload));
        if close {
            let code = close_code(&frames[frames.len() - 1].1);
            client.send(OpCode::Close, &code.to_be_bytes());
            let after = read_to_end(client);
            assert!(after.is_empty(), "frames after the close: {after:?}");
            break;
        }
    }
    frames
}

/// The close code of a close frame's payload (1005 when it has none).
fn close_code(payload: &[u8]) -> u16 {
    payload
        .get(..2)
        .map_or(1005, |b| u16::from_be_bytes([b[0], b[1]]))
}

/// Asserts that `frames` end with exactly one close frame carrying `code`, with only `data`
/// frames (of that opcode) before it.
fn assert_ends_with_close(frames: &[(OpCode, Vec<u8>)], data: OpCode, code: u16) {
    let kinds: Vec<OpCode> = frames.iter().map(|(op, _)| *op).collect();
    let Some(((last, payload), before)) = frames.split_last() else {
        panic!("the stream ended without a close frame");
    };
    assert_eq!(
        *last,
        OpCode::Close,
        "last frame of {} is not a close",
        kinds.len()
    );
    assert_eq!(close_code(payload), code, "close code");
    assert!(
        before.iter().all(|(op, _)| *op == data),
        "only {data:?} frames before the close: {:?}",
        kinds.iter().rev().take(5).collect::<Vec<_>>()
    );
}

/// `ringcast_slow_consumer_closes_total{reason}`.
fn slow_consumer_closes(server: &Server, reason: &str) -> f64 {
    server.metric(
        "ringcast_slow_consumer_closes_total",
        &format!("reason=\"{reason}\""),
    )
}

/// Writes `bytes` of echo messages on `client`'s socket from another thread, so the caller can
/// read at its pace; the thread stops early when the server closes the connection.
fn send_echoes(client: &Client, bytes: usize) -> thread::JoinHandle<()> {
    let mut stream = client.stream.try_clone().expect("clone");
    thread::spawn(move || {
        let mut frame = Vec::with_capacity(MESSAGE + 14);
        ringcast::ws::encode_masked_frame(
            &mut frame,
            true,
            OpCode::Binary,
            &[b'e'; MESSAGE],
            [3, 1, 4, 1],
        );
        for _ in 0..bytes / MESSAGE {
            if stream.write_all(&frame).is_err() {
                return;
            }
        }
    })
}

/// A client reading one byte every 200 ms keeps its outbox full at the socket's pace: it is a
/// slow consumer at the first write-stall window; a client that reads normally meanwhile gets
/// every echo and stays.
fn trickle_reader_is_cut_off_and_a_normal_one_is_not(backend: &str) {
    let server = Server::start(
        backend,
        &[
            "--write-stall-timeout",
            "1s",
            "--max-outbox-bytes",
            "67108864",
            "--max-messages-per-sec",
            "0",
            "--max-bytes-per-sec",
            "0",
        ],
    );
    // 8 MiB: twice what the kernel buffers of one connection hold, so the outbox holds the rest.
    let total = 8 << 20;
    let trickle = Client::upgrade(
        connect_with_rcvbuf(server.addr(), SMALL_RCVBUF),
        "/echo",
        &[],
    )
    .expect("upgrade");
    let writer = send_echoes(&trickle, total);
    let mut normal = Client::upgrade(connect(server.addr()), "/echo", &[]).expect("upgrade");
    let normal_writer = send_echoes(&normal, total);
    let mut received = 0;
    while received < total {
        let (op, payload) = normal.read_frame().expect("every echo reaches a reader");
        assert_eq!(op, OpCode::Binary);
        received += payload.len();
    }
    normal_writer.join().expect("normal writer");
    let start = Instant::now();
    let mut stream = trickle.stream;
    let mut byte = [0u8; 1];
    let closes = || {
        slow_consumer_closes(&server, "slow_drain") + slow_consumer_closes(&server, "write_stall")
    };
    while closes() < 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "a trickle reader is still served after ten write-stall windows"
        );
        let _ = stream.read(&mut byte);
        thread::sleep(Duration::from_millis(200));
    }
    drop(stream);
    writer.join().expect("trickle writer");
    assert_eq!(received, total);
    normal.send(OpCode::Text, b"still here");
    assert_eq!(
        normal.read_frame(),
        Some((OpCode::Text, b"still here".to_vec())),
        "the normal reader stays"
    );
}
matrix!(trickle_reader_is_cut_off_and_a_normal_one_is_not);

/// A reader that takes an eighth of `--min-drain-rate`: each write-stall window it makes
/// progress (so a server that counts any byte as progress keeps it for as long as it reads),
/// but far less than the least asked, so it is a slow consumer.
fn reader_below_the_least_drain_rate_is_cut_off(backend: &str) {
    let rate = 8 << 20;
    let server = Server::start(
        backend,
        &[
            "--write-stall-timeout",
            "2s",
            "--min-drain-rate",
            &rate.to_string(),
            "--max-outbox-bytes",
            "67108864",
            "--max-messages-per-sec",
            "0",
            "--max-bytes-per-sec",
            "0",
        ],
    );
    let slow = Client::upgrade(connect(server.addr()), "/echo", &[]).expect("upgrade");
    // Three windows of the slow pace on top of what the kernel buffers hold.
    let writer = send_echoes(&slow, 16 << 20);
    let mut stream = slow.stream.try_clone().expect("clone");
    let pace = rate / 8;
    let start = Instant::now();
    let mut read = 0usize;
    let mut chunk = vec![0u8; MESSAGE];
    let mut checked = Instant::now();
    loop {
        if checked.elapsed() >= Duration::from_millis(250) {
            if slow_consumer_closes(&server, "slow_drain") >= 1.0 {
                break;
            }
            checked = Instant::now();
        }
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "a reader at an eighth of the least drain rate is still served after three windows"
        );
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
        // Hold the pace: `read` bytes take `read / pace` seconds.
        let due = Duration::from_secs_f64(read as f64 / pace as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            thread::sleep(wait);
        }
    }
    server.wait_metric(
        "ringcast_slow_consumer_closes_total",
        "reason=\"slow_drain\"",
        1.0,
    );
    drop(stream);
    drop(slow);
    writer.join().expect("writer");
    server.assert_responsive();
}
matrix!(reader_below_the_least_drain_rate_is_cut_off);

/// The server closes a silent echo client (1011 after an unanswered ping); the client, which
/// has not seen the close yet, sends messages: none is echoed after the close frame.
fn no_echo_after_the_servers_close(backend: &str) {
    let server = Server::start(backend, &["--ping-interval", "1s", "--pong-timeout", "1s"]);
    let mut client = Client::upgrade(connect(server.addr()), "/echo", &[]).expect("upgrade");
    loop {
        let (op, payload) = client.read_frame().expect("a ping, then the close");
        match op {
            OpCode::Ping => {}
            OpCode::Close => {
                assert_eq!(close_code(&payload), 1011);
                break;
            }
            other => panic!("unexpected {other:?} frame"),
        }
    }
    for _ in 0..5 {
        client.send(OpCode::Binary, b"would be echoed");
    }
    client.send(OpCode::Close, &1000u16.to_be_bytes());
    let after = read_to_end(&mut client);
    assert!(after.is_empty(), "frames after the close: {after:?}");
}
matrix!(no_echo_after_the_servers_close);

/// The server closes a silent Pusher subscriber (4201 after an unanswered `pusher:ping`);
/// events published to its channel meanwhile are not sent after the close frame.
fn no_fan_out_after_the_servers_close(backend: &str) {
    let server = Server::start(backend, &["--ping-interval", "1s", "--pong-timeout", "1s"]);
    let mut subscriber = pusher_subscriber(connect(server.addr()), "after-close");
    loop {
        let (op, payload) = subscriber.read_frame().expect("a ping, then the close");
        match op {
            OpCode::Text => assert_eq!(event_name(&payload), "pusher:ping"),
            OpCode::Close => {
                assert_eq!(close_code(&payload), 4201);
                break;
            }
            other => panic!("unexpected {other:?} frame"),
        }
    }
    for _ in 0..3 {
        assert_eq!(publish(server.addr(), "after-close", "late", "{}"), 200);
    }
    // The publishes may reach the subscriber's shard over the mesh after their answers: the
    // close reply waits a moment so that they are delivered while the server is closing.
    thread::sleep(Duration::from_millis(200));
    subscriber.send(OpCode::Close, &4201u16.to_be_bytes());
    let after = read_to_end(&mut subscriber);
    assert!(after.is_empty(), "frames after the close: {after:?}");
}
matrix!(no_fan_out_after_the_servers_close);

/// An echo client stops reading and writes on until its echoes cross the outbox cap behind
/// full kernel buffers. The messages are small against the cap (1 MiB by default), so the
/// outbox fills over many loop turns while a send waits for room, and that send is in flight
/// when the cap is crossed. When the client reads again it gets the echoes handed to the
/// kernel, then the close frame with 1008.
fn slow_echo_reader_reads_1008(backend: &str) {
    let server = Server::start(
        backend,
        &["--max-messages-per-sec", "0", "--max-bytes-per-sec", "0"],
    );
    let mut client = Client::upgrade(
        connect_with_rcvbuf(server.addr(), SMALL_RCVBUF),
        "/echo",
        &[],
    )
    .expect("upgrade");
    let message = vec![b'e'; 4 * 1024];
    let mut sent = 0usize;
    // A write fails only when the server dropped the connection instead of closing it: what
    // the client reads then ends without a close frame.
    'writing: while slow_consumer_closes(&server, "outbox_full") < 1.0 {
        for _ in 0..64 {
            if client.send_frame(true, OpCode::Binary, &message).is_err() {
                break 'writing;
            }
        }
        sent += 64 * message.len();
        assert!(sent < 256 << 20, "never cut off after {sent} bytes");
    }
    assert_ends_with_close(&read_to_close(&mut client), OpCode::Binary, 1008);
    server.assert_responsive();
}
matrix!(slow_echo_reader_reads_1008);

/// A Pusher subscriber stops reading while events are published to its channel past the outbox
/// cap; when it reads again it gets the events handed to the kernel, then the close frame with
/// 4100.
fn slow_pusher_subscriber_reads_4100(backend: &str) {
    let server = Server::start(backend, &["--max-outbox-bytes", "65536"]);
    let mut subscriber =
        pusher_subscriber(connect_with_rcvbuf(server.addr(), SMALL_RCVBUF), "firehose");
    let data = "x".repeat(8 * 1024);
    let mut published = 0;
    while slow_consumer_closes(&server, "outbox_full") < 1.0 {
        for _ in 0..16 {
            assert_eq!(publish(server.addr(), "firehose", "tick", &data), 200);
        }
        published += 16;
        assert!(published < 20_000, "never cut off after {published} events");
    }
    assert_ends_with_close(&read_to_close(&mut subscriber), OpCode::Text, 4100);
    server.assert_responsive();
}
matrix!(slow_pusher_subscriber_reads_4100);

/// A Pusher connection on `stream` subscribed to the public `channel`, past its
/// `subscription_succeeded`.
fn pusher_subscriber(stream: TcpStream, channel: &str) -> Client {
    let path = format!("/app/{APP_KEY}?protocol=7&client=slow-consumers&version=1");
    let mut client = Client::upgrade(stream, &path, &[]).expect("Pusher upgrade");
    let (_, established) = client.read_frame().expect("connection_established");
    assert_eq!(event_name(&established), "pusher:connection_established");
    let subscribe =
        serde_json::json!({ "event": "pusher:subscribe", "data": { "channel": channel } });
    client.send(OpCode::Text, subscribe.to_string().as_bytes());
    let (_, succeeded) = client.read_frame().expect("subscription_succeeded");
    assert_eq!(
        event_name(&succeeded),
        "pusher_internal:subscription_succeeded"
    );
    client
}

/// The `event` of a Pusher message.
fn event_name(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v["event"].as_str().map(str::to_owned))
        .unwrap_or_default()
}
