//! Bad clients over real sockets, each run against the real binary on both backends. Every test
//! crosses one limit, checks the answer the client gets and the metric that counts it, and
//! asserts that the server stays up for everyone else (a fresh client still gets an echo) and
//! that its memory stays bounded.

#[allow(
    dead_code,
    reason = "the shared harness serves several suites; this one uses part of it"
)]
mod common;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::abuse::{APP_KEY, APP_SECRET, Client, Server, closed_by_server, connect, connect_from};
use ringcast::ws::OpCode;

/// Growth of the server's resident memory a test allows: far below what the abuse would cost
/// unbounded (each test sends or holds well over this), far above allocator noise.
const RSS_SLACK_KIB: u64 = 64 * 1024;

/// The close code a flooding client reads: the close frame, or `None` when the reset that
/// follows it (the server closes with the flood still unread) discards it first. Callers
/// check the code the server sent in `ringcast_disconnects_total`.
fn close_or_reset(client: &mut Client) -> Option<u16> {
    client.read_close_code()
}

fn assert_rss_bounded(server: &Server, before_kib: u64) {
    let after = server.rss_kib();
    assert!(
        after <= before_kib + RSS_SLACK_KIB,
        "RSS grew from {before_kib} KiB to {after} KiB"
    );
}

fn slowloris(backend: &str) {
    let server = Server::start(backend, &["--handshake-timeout", "1s"]);
    let rss = server.rss_kib();
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = connect(server.addr());
            stream
                .write_all(b"GET /echo HTTP/1.1\r\nHost:")
                .expect("partial head");
            stream
        })
        .collect();
    server.assert_responsive();
    for stream in &mut slow {
        assert!(
            closed_by_server(stream),
            "a half-sent head is closed at the deadline"
        );
    }
    server.wait_metric(
        "ringcast_connections_rejected_total",
        "reason=\"handshake_timeout\"",
        200.0,
    );
    server.assert_responsive();
    assert_rss_bounded(&server, rss);
}
matrix!(slowloris);

fn huge_header_block(backend: &str) {
    let server = Server::start(backend, &[]);
    let rss = server.rss_kib();
    for _ in 0..20 {
        let mut stream = connect(server.addr());
        let mut head = b"GET /echo HTTP/1.1\r\nHost: x\r\n".to_vec();
        while head.len() < 64 * 1024 {
            head.extend_from_slice(
                b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        head.extend_from_slice(b"\r\n");
        // The server answers and closes before reading it all; a reset on write is expected.
        let _ = stream.write_all(&head);
        let answer = server_answer(&mut stream);
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    }
    server.wait_metric(
        "ringcast_connections_rejected_total",
        "reason=\"handshake_error\"",
        20.0,
    );
    server.assert_responsive();
    assert_rss_bounded(&server, rss);
}
matrix!(huge_header_block);

fn server_answer(stream: &mut TcpStream) -> String {
    use std::io::Read;
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

fn ping_flood(backend: &str) {
    let server = Server::start(backend, &[]);
    let mut client = Client::upgrade(connect(server.addr()), "/echo", &[]).expect("upgrade");
    for _ in 0..1000 {
        if client.send_frame(true, OpCode::Ping, b"flood").is_err() {
            break;
        }
    }
    assert!(matches!(close_or_reset(&mut client), Some(1008) | None));
    let labels = "reason=\"policy\",code=\"1008\"";
    server.wait_metric("ringcast_disconnects_total", labels, 1.0);
    server.assert_responsive();
}
matrix!(ping_flood);

fn tiny_frame_flood(backend: &str) {
    let server = Server::start(backend, &[]);
    let rss = server.rss_kib();
    let mut client = Client::upgrade(connect(server.addr()), "/echo", &[]).expect("upgrade");
    // 100,000 one-byte messages in one burst: 100 times the default per-second budget.
    let mut burst = Vec::new();
    for _ in 0..100_000 {
        ringcast::ws::encode_masked_frame(&mut burst, true, OpCode::Binary, b"x", [1, 2, 3, 4]);
    }
    let _ = client.stream.write_all(&burst);
    assert!(matches!(close_or_reset(&mut client), Some(1008) | None));
    let labels = "reason=\"rate_limit\",code=\"1008\"";
    server.wait_metric("ringcast_disconnects_total", labels, 1.0);
    server.assert_responsive();
    assert_rss_bounded(&server, rss);
}
matrix!(tiny_frame_flood);

fn endless_fragmented_message(backend: &str) {
    let server = Server::start(backend, &[]);
    let rss = server.rss_kib();
    let mut client = Client::upgrade(connect(server.addr()), "/echo", &[]).expect("upgrade");
    let mut stream = Vec::new();
    ringcast::ws::encode_masked_frame(&mut stream, false, OpCode::Text, b"a", [1, 2, 3, 4]);
    for _ in 0..5000 {
        ringcast::ws::encode_masked_frame(
            &mut stream,
            false,
            OpCode::Continuation,
            b"a",
            [1, 2, 3, 4],
        );
    }
    let _ = client.stream.write_all(&stream);
    let code = close_or_reset(&mut client);
    assert!(
        matches!(code, Some(1008 | 1009) | None),
        "closed with {code:?}"
    );
    let labels = "reason=\"policy\",code=\"1008\"";
    server.wait_metric("ringcast_disconnects_total", labels, 1.0);
    server.assert_responsive();
    assert_rss_bounded(&server, rss);
}
matrix!(endless_fragmented_message);

fn client_that_never_reads(backend: &str) {
    // Rates off: this test is about the outbox, not the inbound limits.
    let server = Server::start(
        backend,
        &["--max-messages-per-sec", "0", "--max-bytes-per-sec", "0"],
    );
    let rss = server.rss_kib();
    let message = vec![0u8; 60 * 1024];
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let mut client =
                Client::upgrade(connect(server.addr()), "/echo", &[]).expect("upgrade");
            let message = message.clone();
            thread::spawn(move || {
                // Echoes pile up unread: kernel buffers, then the 1 MiB outbox, then a close.
                // 64 MiB offered per client; the server must cut it off long before.
                let mut sent = 0usize;
                while sent < 64 << 20 {
                    if client.send_frame(true, OpCode::Binary, &message).is_err() {
                        return true;
                    }
                    sent += message.len();
                }
                false
            })
        })
        .collect();
    for reader in readers {
        assert!(
            reader.join().expect("client thread"),
            "cut off before 64 MiB"
        );
    }
    server.wait_metric("ringcast_slow_consumer_closes_total", "", 8.0);
    server.assert_responsive();
    assert_rss_bounded(&server, rss);
}
matrix!(client_that_never_reads);

fn many_connections_from_one_ip(backend: &str) {
    let server = Server::start(
        backend,
        &[
            "--limits-exempt",
            "",
            "--max-connections-per-ip",
            "1000",
            "--max-handshakes-per-ip",
            "0",
        ],
    );
    // 5,000 client sockets here (and as many on the other backend's run alongside): more than
    // the usual soft limit of 1024, so raise it to the hard limit, as the server does.
    let open_files = ringcast::driver::sys::raise_nofile_limit().expect("RLIMIT_NOFILE");
    assert!(
        open_files >= 12_000,
        "RLIMIT_NOFILE hard limit {open_files} is below the 12000 this test holds: raise it \
         (as root `ulimit -Hn 65536` before `make test`, or `LimitNOFILE=` for a CI service)"
    );
    let rss = server.rss_kib();
    let mut held = Vec::new();
    let (mut upgraded, mut refused) = (0, 0);
    for _ in 0..5000 {
        match Client::upgrade(connect(server.addr()), "/echo", &[]) {
            Ok(client) => {
                upgraded += 1;
                held.push(client);
            }
            Err(answer) => {
                assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
                refused += 1;
            }
        }
    }
    assert_eq!((upgraded, refused), (1000, 4000));
    server.wait_metric(
        "ringcast_connections_rejected_total",
        "reason=\"per_ip\"",
        4000.0,
    );
    // Another address is unaffected.
    server.assert_responsive_from([127, 0, 0, 2]);
    // A slot frees when a connection closes.
    drop(held.pop());
    let start = std::time::Instant::now();
    loop {
        match Client::upgrade(connect(server.addr()), "/echo", &[]) {
            Ok(client) => {
                held.push(client);
                break;
            }
            Err(_) if start.elapsed() < common::abuse::IO_TIMEOUT => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(answer) => panic!("slot not freed: {answer}"),
        }
    }
    assert_rss_bounded(&server, rss);
    // Operators see no line per connection at info level.
    let lines = server.info_lines();
    assert!(
        lines.len() < 20,
        "{} info lines: {:?}",
        lines.len(),
        &lines[..5.min(lines.len())]
    );
}
matrix!(many_connections_from_one_ip);

fn handshake_storm_from_one_ip(backend: &str) {
    let server = Server::start(
        backend,
        &["--limits-exempt", "", "--max-handshakes-per-ip", "20"],
    );
    let mut refused = 0;
    let mut held = Vec::new();
    for _ in 0..60 {
        match Client::upgrade(connect(server.addr()), "/echo", &[]) {
            Ok(client) => held.push(client),
            Err(answer) => {
                assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "60 handshakes at once exceed 20 a second");
    server.wait_metric(
        "ringcast_connections_rejected_total",
        "reason=\"rate\"",
        f64::from(refused),
    );
    server.assert_responsive_from([127, 0, 0, 3]);
}
matrix!(handshake_storm_from_one_ip);

fn forwarded_clients_behind_a_trusted_proxy(backend: &str) {
    let server = Server::start(
        backend,
        &[
            "--trusted-proxies",
            "127.0.0.1",
            "--limits-exempt",
            "",
            "--max-connections-per-ip",
            "2",
            "--max-handshakes-per-ip",
            "0",
        ],
    );
    let forwarded = |client: &str| {
        Client::upgrade(
            connect(server.addr()),
            "/echo",
            &[("X-Forwarded-For", client)],
        )
    };
    let _a = forwarded("198.51.100.7").expect("first");
    let _b = forwarded("198.51.100.7").expect("second");
    let third = forwarded("198.51.100.7").err().expect("third refused");
    assert!(third.starts_with("HTTP/1.1 429 "), "{third}");
    let _c = forwarded("198.51.100.8").expect("another client behind the same proxy");
    // An untrusted peer cannot pick its address with the header.
    let from_other = connect_from([127, 0, 0, 4], server.addr());
    let _d = Client::upgrade(from_other, "/echo", &[("X-Forwarded-For", "198.51.100.7")])
        .expect("charged to 127.0.0.4, not to the forwarded address");
}
matrix!(forwarded_clients_behind_a_trusted_proxy);

fn capacity_answers_503(backend: &str) {
    let server = Server::start(backend, &["--max-connections", "10"]);
    let held: Vec<Client> = (0..10)
        .map(|_| Client::upgrade(connect(server.addr()), "/echo", &[]).expect("within capacity"))
        .collect();
    // The answer comes at accept, before any request is sent.
    let answer = server_answer(&mut connect(server.addr()));
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    drop(held);
    server.wait_metric(
        "ringcast_connections_rejected_total",
        "reason=\"capacity\"",
        1.0,
    );
}
matrix!(capacity_answers_503);

/// A Pusher connection to the development app, past `pusher:connection_established`; returns
/// the client and its socket id.
fn pusher_client(server: &Server) -> (Client, String) {
    let path = format!("/app/{APP_KEY}?protocol=7&client=abuse&version=1");
    let mut client = Client::upgrade(connect(server.addr()), &path, &[]).expect("upgrade");
    let (_, established) = client.read_frame().expect("connection_established");
    let event: serde_json::Value = serde_json::from_slice(&established).expect("json");
    assert_eq!(event["event"], "pusher:connection_established");
    let data: serde_json::Value =
        serde_json::from_str(event["data"].as_str().expect("data string")).expect("data");
    let socket_id = data["socket_id"].as_str().expect("socket_id").to_owned();
    (client, socket_id)
}

fn subscribe(channel: &str, auth: Option<&str>) -> Vec<u8> {
    let data = match auth {
        Some(auth) => serde_json::json!({"channel": channel, "auth": auth}),
        None => serde_json::json!({"channel": channel}),
    };
    let message = serde_json::json!({"event": "pusher:subscribe", "data": data});
    let mut frame = Vec::new();
    ringcast::ws::encode_masked_frame(
        &mut frame,
        true,
        OpCode::Text,
        message.to_string().as_bytes(),
        [5, 6, 7, 8],
    );
    frame
}

fn event_name(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v["event"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn subscribe_to_100k_channels(backend: &str) {
    let server = Server::start(backend, &[]);
    let rss = server.rss_kib();
    let (mut client, _) = pusher_client(&server);
    // Within the message rate: the subscription cap answers.
    let burst: Vec<u8> = (0..200)
        .flat_map(|i| subscribe(&format!("c{i}"), None))
        .collect();
    client.stream.write_all(&burst).expect("200 subscribes");
    let (mut joined, mut refused) = (0, 0);
    while joined + refused < 200 {
        let (_, payload) = client.read_frame().expect("an answer per subscribe");
        match event_name(&payload).as_str() {
            "pusher_internal:subscription_succeeded" => joined += 1,
            _ => refused += 1,
        }
    }
    assert_eq!(
        (joined, refused),
        (128, 72),
        "128 subscriptions per connection"
    );
    // 100,000 more at once: the message rate closes the connection long before.
    let flood: Vec<u8> = (0..100_000)
        .flat_map(|i| subscribe(&format!("f{i}"), None))
        .collect();
    let _ = client.stream.write_all(&flood);
    assert!(matches!(close_or_reset(&mut client), Some(1008) | None));
    let labels = "reason=\"rate_limit\",code=\"1008\"";
    server.wait_metric("ringcast_disconnects_total", labels, 1.0);
    let start = std::time::Instant::now();
    while server.metric("ringcast_subscriptions", "") > 0.0 {
        assert!(
            start.elapsed() < common::abuse::IO_TIMEOUT,
            "subscriptions never released"
        );
        thread::sleep(Duration::from_millis(50));
    }
    server.assert_responsive();
    assert_rss_bounded(&server, rss);
}
matrix!(subscribe_to_100k_channels);

fn pusher_client_event_flood(backend: &str) {
    let server = Server::start(backend, &[]);
    let (mut client, socket_id) = pusher_client(&server);
    let channel = "private-flood";
    let signature = ringcast::pusher::auth::sign(APP_SECRET, &[&socket_id, ":", channel]);
    let auth = format!("{APP_KEY}:{signature}");
    client
        .stream
        .write_all(&subscribe(channel, Some(&auth)))
        .expect("subscribe");
    let (_, reply) = client.read_frame().expect("subscription answer");
    assert_eq!(event_name(&reply), "pusher_internal:subscription_succeeded");
    let event = serde_json::json!({"event": "client-spam", "channel": channel, "data": "{}"});
    for _ in 0..100 {
        client.send(OpCode::Text, event.to_string().as_bytes());
    }
    let mut limited = false;
    while let Some((_, payload)) = client.read_frame() {
        let value: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
        if value["event"] == "pusher:error" && value["data"]["code"] == 4301 {
            limited = true;
            break;
        }
    }
    assert!(
        limited,
        "100 client events at once exceed 10 a second: 4301"
    );
    server.assert_responsive();
}
matrix!(pusher_client_event_flood);

fn proxy_protocol_from_a_trusted_balancer(backend: &str) {
    let server = Server::start(
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
        ],
    );
    let behind = |header: &[u8]| {
        let mut stream = connect(server.addr());
        stream.write_all(header).expect("PROXY header");
        Client::upgrade(stream, "/echo", &[])
    };
    let v1 = b"PROXY TCP4 198.51.100.9 127.0.0.1 40000 80\r\n";
    let _first = behind(v1).expect("the client behind the balancer");
    let second = behind(v1)
        .err()
        .expect("its second connection is over the limit");
    assert!(second.starts_with("HTTP/1.1 429 "), "{second}");
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[198, 51, 100, 10, 127, 0, 0, 1, 0x9c, 0x40, 0, 80]);
    let _other = behind(&v2).expect("another client, version 2 header");
    // From the balancer, a connection without the header is not served.
    let mut bare = connect(server.addr());
    bare.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("request");
    assert!(closed_by_server(&mut bare));
    server.wait_metric(
        "ringcast_connections_rejected_total",
        "reason=\"per_ip\"",
        1.0,
    );
    // Peers that are not balancers send no header.
    server.assert_responsive_from([127, 0, 0, 5]);
}
matrix!(proxy_protocol_from_a_trusted_balancer);

fn admin_listener_keeps_admin_routes_off_the_main_port(backend: &str) {
    let server = Server::start(backend, &["--admin-listen", "127.0.0.1:0"]);
    let admin: std::net::SocketAddr = server.log_field("admin").parse().expect("admin addr");
    assert!(server.get("/metrics").starts_with("HTTP/1.1 404 "));
    let metrics = common::abuse::get_from(admin, "/metrics");
    assert!(metrics.contains("ringcast_shard_up"), "{metrics}");
    let feed = Client::upgrade(connect(server.addr()), "/dashboard/feed", &[]);
    assert!(feed.is_err(), "no feed on the main port");
    server.assert_responsive();
}
matrix!(admin_listener_keeps_admin_routes_off_the_main_port);
