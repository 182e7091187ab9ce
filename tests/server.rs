//! Integration suite over real loopback sockets: the `ringcast` binary on each backend, driven by
//! hand-written blocking clients and by third-party WebSocket clients.
//!
//! Each scenario is one function taking a [`Backend`]; `backend_matrix!` generates a `uring` and an
//! `epoll` test for each, so `cargo test uring::` or `cargo test epoll::` runs one half. The uring
//! half skips itself, saying why, only when the kernel refuses io_uring.

#[allow(
    dead_code,
    reason = "the shared harness serves several suites; this one uses part of it"
)]
mod common;

use std::io::Write as _;
use std::process::Command;
use std::time::Duration;

use common::{Backend, Client, Server, op};

/// The largest message the server accepts by default; one byte more gets close 1009.
fn max_message_size() -> usize {
    ringcast::ws::WsConfig::default().max_message_size
}

macro_rules! backend_matrix {
    ($($scenario:ident),* $(,)?) => {
        mod uring {
            $(
                #[test]
                fn $scenario() {
                    if let Some(reason) = crate::common::uring_unavailable() {
                        eprintln!("io_uring unavailable on this kernel ({reason}): skipped");
                        return;
                    }
                    super::$scenario(crate::common::Backend::Uring);
                }
            )*
        }
        mod epoll {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario(crate::common::Backend::Epoll);
                }
            )*
        }
    };
}

backend_matrix!(
    echo_text_at_boundary_sizes,
    echo_binary_at_boundary_sizes,
    echo_utf8_text,
    message_above_max_size_gets_1009,
    configured_max_message_size_is_enforced,
    fragmented_message_echoed_as_one,
    ping_answered_with_pong,
    pipelined_messages_echoed_in_order,
    frames_split_across_many_reads,
    slow_consumer_is_cut_off,
    ten_thousand_connections_on_one_shard,
    ten_thousand_connections_across_shards,
    bad_key_gets_400,
    post_gets_405,
    wrong_version_gets_426,
    unknown_path_gets_404,
    huge_headers_get_431,
    slowloris_does_not_block_new_clients,
    client_close_is_echoed,
    invalid_close_code_gets_1002,
    sigterm_drains_with_1001_and_exits_0,
    drain_timeout_ends_drain_when_clients_stay_silent,
    silent_client_is_evicted_after_pong_deadline,
    python_websockets_client_echoes,
    node_ws_client_echoes,
);

/// Sizes at every boundary of the frame length encoding (RFC 6455 section 5.2) and the limit.
fn boundary_sizes() -> Vec<usize> {
    let mut sizes = vec![0, 1, 125, 126, 127, 65535, 65536, max_message_size()];
    sizes.dedup();
    sizes
}

fn echo_text_at_boundary_sizes(backend: Backend) {
    let server = Server::start(backend, 1, &[]);
    let mut client = Client::connect(server.addr());
    for size in boundary_sizes() {
        client.assert_echo(op::TEXT, &common::text_payload(size));
    }
}

fn echo_binary_at_boundary_sizes(backend: Backend) {
    let server = Server::start(backend, 1, &[]);
    let mut client = Client::connect(server.addr());
    for size in boundary_sizes() {
        client.assert_echo(op::BINARY, &common::binary_payload(size));
    }
}

fn echo_utf8_text(backend: Backend) {
    let server = Server::start(backend, 1, &[]);
    let mut client = Client::connect(server.addr());
    // Two-, three- and four-byte sequences, so a codec that validates per byte is exercised.
    client.assert_echo(op::TEXT, "héllo wörld ✓ 🦀".repeat(1000).as_bytes());
}

fn message_above_max_size_gets_1009(backend: Backend) {
    let server = Server::start(backend, 1, &[]);
    let mut client = Client::connect(server.addr());
    // The server may close before reading the whole payload, so a failed write is expected.
    let _ = client.send_frame(
        true,
        op::BINARY,
        &common::binary_payload(max_message_size() + 1),
    );
    assert_eq!(client.expect_close(), Some(1009));
}

fn configured_max_message_size_is_enforced(backend: Backend) {
    let server = Server::start(backend, 1, &["--max-message-size", "1000"]);
    let mut client = Client::connect(server.addr());
    client.assert_echo(op::BINARY, &common::binary_payload(1000));
    // Over the limit in fragments: the limit holds after reassembly, not only per frame.
    client
        .send_frame(false, op::TEXT, &common::text_payload(600))
        .expect("send");
    let _ = client.send_frame(true, op::CONTINUATION, &common::text_payload(401));
    assert_eq!(client.expect_close(), Some(1009));
}

fn fragmented_message_echoed_as_one(backend: Backend) {
    let server = Server::start(backend, 1, &[]);
    let mut client = Client::connect(server.addr());
    client.send_frame(false, op::TEXT, b"Hel").expect("send");
    client
        .send_frame(false, op::CONTINUATION, b"lo, ")
        .expect("send");
    // A control frame between fragments is allowed and answered (RFC 6455 section 5.4).
    client.send_frame(true, op::PING, b"mid").expect("send");
    client
        .send_frame(false, op::CONTINUATION, b"")
        .expect("send");
    client
        .send_frame(true, op::CONTINUATION, b"world")
        .expect("send");
    // The pong may come before or after the echo: RFC 6455 section 5.5.2 asks for it "as soon as
    // is practical", not for an order, and a server may answer once per read.
    let mut frames = [
        client.read_frame().expect("read"),
        client.read_frame().expect("read"),
    ];
    frames.sort_by_key(|f| f.opcode);
    let [echo, pong] = frames;
    assert_eq!(
        pong,
        common::Frame {
            fin: true,
            opcode: op::PONG,
            payload: b"mid".to_vec()
        }
    );
    assert_eq!(
        echo,
        common::Frame {
            fin: true,
            opcode: op::TEXT,
            payload: b"Hello, world".to_vec()
        }
    );

    let big = common::binary_payload(3000);
    for (i, part) in big.chunks(1000).enumerate() {
        let opcode = if i == 0 { op::BINARY } else { op::CONTINUATION };
        client.send_frame(i == 2, opcode, part).expect("send");
    }
    let echo = client.read_frame().expect("read echo");
    assert_eq!(
        echo,
        common::Frame {
            fin: true,
            opcode: op::BINARY,
            payload: big
        }
    );
}

fn ping_answered_with_pong(backend: Backend) {
    let server = Server::start(backend, 1, &[]);
    let mut client = Client::connect(server.addr());
    for payload in [&b""[..], b"ping payload", &[7u8; 125]] {
        client
            .send_frame(true, op::PING, payload)
            .expect("send ping");
        let pong = client.read_frame().expect("read pong");
        assert_eq!(
            pong,
            common::Frame {
                fin: true,
                opcode: op::PONG,
                payload: payload.to_vec()
            }
        );
    }
    client.assert_echo(op::TEXT, b"still open");
}

fn pipelined_messages_echoed_in_order(backend: Backend) {
    let server = Server::start(backend, 1, &[]);
    let mut client = Client::connect(server.addr());
    // A thousand frames of mixed sizes in one write: many frames per read, some cut at the end.
    let messages: Vec<Vec<u8>> = (0..1000)
        .map(|i| common::binary_payload(i * 37 % 2000))
        .collect();
    let batch: Vec<u8> = messages
        .iter()
        .flat_map(|m| common::encode_client_frame(true, op::BINARY, m, [1, 2, 3, 4]))
        .collect();
    client.send_raw(&batch).expect("send batch");
    for (i, message) in messages.iter().enumerate() {
        let echo = client.read_message().expect("read echo");
        assert!(
            echo.payload == *message,
            "message {i} of the batch came back different"
        );
    }
}

fn frames_split_across_many_reads(backend: Backend) {
    let server = Server::start(backend, 1, &[]);
    let mut client = Client::connect(server.addr());
    for size in [5, 300, 40_000] {
        let payload = common::text_payload(size);
        let frame = common::encode_client_frame(true, op::TEXT, &payload, [9, 8, 7, 6]);
        // The header a byte at a time, then the payload in three parts, each its own segment
        // (no delay on the socket, a pause between writes), so the server sees partial frames.
        let (head, body) = frame.split_at(frame.len() - payload.len());
        let third = body.len() / 3 + 1;
        for part in head.chunks(1).chain(body.chunks(third)) {
            client.send_raw(part).expect("send part");
            std::thread::sleep(Duration::from_millis(5));
        }
        let echo = client.read_message().expect("read echo");
        assert!(
            echo.payload == payload,
            "split {size}-byte message came back different"
        );
    }
}

/// Most bytes the slow-consumer test writes: far above any kernel socket buffers plus the
/// server's outbox limit (1 MiB by default, docs/operations.md), so a server without the limit
/// lets the whole amount through.
const SLOW_CONSUMER_BYTES: usize = 64 * 1024 * 1024;

fn slow_consumer_is_cut_off(backend: Backend) {
    let server = Server::start(backend, 1, &[]);
    let mut slow = Client::connect(server.addr());
    slow.set_write_timeout(Duration::from_secs(5));
    let message = common::binary_payload(64 * 1024);
    let mut sent = 0;
    // Never read: every echo piles up in the kernel buffers, then in the server's outbox.
    while sent < SLOW_CONSUMER_BYTES && slow.send_frame(true, op::BINARY, &message).is_ok() {
        sent += message.len();
    }
    assert!(
        sent < SLOW_CONSUMER_BYTES,
        "server buffered {sent} bytes for a client that never reads"
    );
    // What was queued before the cut comes out first, then a 1008 close or the end of the stream.
    loop {
        match slow.read_frame() {
            Ok(frame) if frame.opcode == op::BINARY => {}
            Ok(frame) => {
                assert_eq!(frame.close_code(), Some(1008), "close for a slow consumer");
                break;
            }
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                    ),
                    "slow consumer must be closed, got {e}"
                );
                break;
            }
        }
    }
    Client::connect(server.addr()).assert_echo(op::TEXT, b"others still served");
}

/// How many connections the concurrency tests hold: half the 20000 open files one process gets
/// on small CI boxes, so that the server and this test process each stay under it.
const MANY_CONNECTIONS: usize = 10_000;

fn many_connections_echo(backend: Backend, shards: usize) {
    let _heavy = common::heavy_lock();
    let limit = common::raise_nofile_limit();
    assert!(
        limit >= MANY_CONNECTIONS as u64 + 200,
        "RLIMIT_NOFILE hard limit {limit} is too low to hold {MANY_CONNECTIONS} sockets"
    );
    let server = Server::start(backend, shards, &[]);
    let mut clients: Vec<Client> = (0..MANY_CONNECTIONS)
        .map(|_| Client::connect(server.addr()))
        .collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .send_frame(true, op::TEXT, format!("hello {i}").as_bytes())
            .expect("send");
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let echo = client.read_message().expect("read echo");
        assert_eq!(
            echo.payload,
            format!("hello {i}").into_bytes(),
            "connection {i}"
        );
    }
    // Every connection is still open and served after all the others were.
    clients[0].assert_echo(op::BINARY, b"first");
    clients[MANY_CONNECTIONS - 1].assert_echo(op::BINARY, b"last");
}

fn ten_thousand_connections_on_one_shard(backend: Backend) {
    many_connections_echo(backend, 1);
}

fn ten_thousand_connections_across_shards(backend: Backend) {
    many_connections_echo(backend, 2);
}

/// Sends a hand-made request head and returns the answer.
fn handshake_answer(server: &Server, request: &str) -> common::ResponseHead {
    common::raw_request(server.addr(), request.as_bytes())
}

fn bad_key_gets_400(backend: Backend) {
    let server = Server::start(backend, 1, &[]);
    let request = common::upgrade_request(server.addr(), "/echo")
        .replace("dGhlIHNhbXBsZSBub25jZQ==", "not-a-16-byte-nonce");
    assert_eq!(handshake_answer(&server, &request).status, 400);
}

fn post_gets_405(backend: Backend) {
    let server = Server::start(backend, 1, &[]);
    let request = common::upgrade_request(server.addr(), "/echo").replacen("GET", "POST", 1);
    assert_eq!(handshake_answer(&server, &request).status, 405);
}

fn wrong_version_gets_426(backend: Backend) {
    let server = Server::start(backend, 1, &[]);
    let request = common::upgrade_request(server.addr(), "/echo")
        .replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let answer = handshake_answer(&server, &request);
    assert_eq!(answer.status, 426);
    // RFC 6455 section 4.4: the answer names the versions the server speaks.
    assert_eq!(answer.header("sec-websocket-version"), Some("13"));
}

fn unknown_path_gets_404(backend: Backend) {
    let server = Server::start(backend, 1, &[]);
    let request = common::upgrade_request(server.addr(), "/no-such-route");
    assert_eq!(handshake_answer(&server, &request).status, 404);
}

fn huge_headers_get_431(backend: Backend) {
    let server = Server::start(backend, 1, &[]);
    let limit = ringcast::http::HttpConfig::default().max_header_bytes;
    let filler = format!("X-Filler: {}\r\n\r\n", "a".repeat(limit));
    let request = common::upgrade_request(server.addr(), "/echo")
        .replace("\r\n\r\n", &format!("\r\n{filler}"));
    assert_eq!(handshake_answer(&server, &request).status, 431);
}

/// Half-open handshakes the slowloris test holds, from the test brief of the server.
const HALF_OPEN_HANDSHAKES: usize = 2_000;

fn slowloris_does_not_block_new_clients(backend: Backend) {
    let _heavy = common::heavy_lock();
    common::raise_nofile_limit();
    let server = Server::start(backend, 1, &[]);
    let mut half_open: Vec<_> = (0..HALF_OPEN_HANDSHAKES)
        .map(|_| {
            let mut stream = common::connect_tcp(server.addr());
            stream
                .write_all(b"GET /echo HTTP/1.1\r\nHost: slow\r\nUpgrade: web")
                .expect("write");
            stream
        })
        .collect();
    let mut client = Client::connect(server.addr());
    client.assert_echo(op::TEXT, b"not blocked");
    // The handshake deadline closes the half-open ones (with or without a 408 first).
    let stalled = &mut half_open[0];
    match common::read_response_head(stalled) {
        Ok((head, _)) => assert_eq!(head.status, 408, "answer to a stalled handshake"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ),
            "a stalled handshake must be closed by its deadline, got {e}"
        ),
    }
    client.assert_echo(op::TEXT, b"still served");
}

fn client_close_is_echoed(backend: Backend) {
    let server = Server::start(backend, 1, &[]);
    let mut client = Client::connect(server.addr());
    client.assert_echo(op::TEXT, b"before close");
    client.send_close(1000, "bye").expect("send close");
    assert_eq!(client.expect_close(), Some(1000));
    client.expect_eof();
}

fn invalid_close_code_gets_1002(backend: Backend) {
    let server = Server::start(backend, 1, &[]);
    // 1005 and 1006 are reserved for APIs and must never be sent (RFC 6455 section 7.4.1); 999 is
    // below the range; 2000 is unassigned in the protocol range.
    for code in [1005, 1006, 999, 2000] {
        let mut client = Client::connect(server.addr());
        client.send_close(code, "").expect("send close");
        assert_eq!(
            client.expect_close(),
            Some(1002),
            "answer to close code {code}"
        );
        client.expect_eof();
    }
}

fn sigterm_drains_with_1001_and_exits_0(backend: Backend) {
    let mut server = Server::start(backend, 2, &[]);
    // Enough clients that both shards hold some with overwhelming likelihood.
    let mut clients: Vec<Client> = (0..32).map(|_| Client::connect(server.addr())).collect();
    for client in &mut clients {
        client.assert_echo(op::TEXT, b"before drain");
    }
    server.signal(libc::SIGTERM);
    for client in &mut clients {
        assert_eq!(client.expect_close(), Some(1001));
        client.send_close(1001, "").expect("answer close");
        client.expect_eof();
    }
    let status = server
        .wait_exit(Duration::from_secs(60))
        .expect("server must exit once every client answered the drain");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after drain: {status:?}"
    );
}

fn drain_timeout_ends_drain_when_clients_stay_silent(backend: Backend) {
    let mut server = Server::start(backend, 1, &["--drain-timeout", "2s"]);
    let mut silent = Client::connect(server.addr());
    silent.assert_echo(op::TEXT, b"before drain");
    server.signal(libc::SIGTERM);
    assert_eq!(silent.expect_close(), Some(1001));
    // Never answer the close: the drain timeout, not the client, ends the process.
    let status = server
        .wait_exit(Duration::from_secs(60))
        .expect("server must exit after the drain timeout");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after drain timeout: {status:?}"
    );
}

fn silent_client_is_evicted_after_pong_deadline(backend: Backend) {
    let server = Server::start(
        backend,
        1,
        &["--ping-interval", "1s", "--pong-timeout", "1s"],
    );
    let mut silent = Client::connect(server.addr());
    let mut polite = Client::connect(server.addr());
    let polite = std::thread::spawn(move || {
        polite.answer_pings_for(Duration::from_secs(5));
        polite
    });
    // The silent client reads the server's pings and never answers them.
    let code = loop {
        let frame = silent.read_frame().expect("read until the server gives up");
        match frame.opcode {
            op::PING => {}
            op::CLOSE => break frame.close_code(),
            other => panic!("unexpected opcode {other:#x}"),
        }
    };
    assert_eq!(
        code,
        Some(1011),
        "close code for a client that never answers pings"
    );
    // The polite one answered every ping and is still served.
    let mut polite = polite.join().expect("polite client thread");
    polite.send_frame(true, op::TEXT, b"alive").expect("send");
    let echo = polite.read_message().expect("read echo");
    assert_eq!(
        (echo.opcode, echo.payload.as_slice()),
        (op::TEXT, &b"alive"[..])
    );
}

/// Runs a third-party client script against the echo route and checks it reported success.
fn run_client_script(server: &Server, program: &std::path::Path, script: &str) {
    let root = common::repo_root();
    assert!(
        program.exists(),
        "{} is missing: run `make test-deps` first",
        program.display()
    );
    let output = Command::new(program)
        .arg(root.join("tests/clients").join(script))
        .arg(format!("ws://{}/echo", server.addr()))
        .current_dir(root.join("tests/clients"))
        .output()
        .expect("run client script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed: {:?}\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("ok: echo and close"),
        "{script} did not report success:\n{stdout}"
    );
}

fn python_websockets_client_echoes(backend: Backend) {
    let server = Server::start(backend, 1, &[]);
    run_client_script(
        &server,
        &common::repo_root().join(".venv/bin/python"),
        "ws_echo.py",
    );
}

fn node_ws_client_echoes(backend: Backend) {
    let server = Server::start(backend, 1, &[]);
    let node_modules = common::repo_root().join("tests/clients/node_modules/ws");
    assert!(
        node_modules.exists(),
        "npm `ws` is missing: run `make test-deps` first"
    );
    run_client_script(&server, std::path::Path::new(&node_path()), "ws_echo.mjs");
}

/// The `node` binary on PATH, as an absolute path so its existence can be checked.
fn node_path() -> String {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("node"))
                .find(|p| p.is_file())
        })
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "node (not found on PATH)".to_string())
}
