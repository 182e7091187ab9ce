//! Fan-out across shards, checked where it matters: connections are opened until two shards
//! each hold some (the shard is part of the socket id), then client events, presence and API
//! publishes must reach subscribers on the other shard exactly once, and never the sender.

#[allow(
    dead_code,
    reason = "the shared harness serves several suites; this one uses part of it"
)]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::pusher::{APP_ID, APP_KEY, APP_SECRET, Server};
use common::uring_available;
use ringcast::pusher::api::signature::body_md5;
use ringcast::pusher::auth::sign;
use ringcast::ws::{self, OpCode};
use serde_json::{Value, json};

/// Read timeout of every client socket: a missing delivery fails the test instead of hanging.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// One hand-driven Pusher connection.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    socket_id: String,
}

impl Client {
    fn connect(port: u16) -> Client {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("timeout");
        let request = format!(
            "GET /app/{APP_KEY}?protocol=7&client=test HTTP/1.1\r\nHost: x\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).expect("upgrade");
        let mut client = Client {
            stream,
            buf: Vec::new(),
            socket_id: String::new(),
        };
        while !client.buf.windows(4).any(|w| w == b"\r\n\r\n") {
            client.fill();
        }
        let end = client
            .buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(0)
            + 4;
        assert!(client.buf.starts_with(b"HTTP/1.1 101"), "no upgrade");
        client.buf.drain(..end);
        let established = client.next();
        assert_eq!(established["event"], "pusher:connection_established");
        let data: Value = serde_json::from_str(established["data"].as_str().unwrap_or("{}"))
            .expect("established data");
        client.socket_id = data["socket_id"].as_str().unwrap_or_default().to_owned();
        client
    }

    /// The shard part of the socket id.
    fn shard(&self) -> &str {
        self.socket_id.split('.').next().unwrap_or_default()
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).expect("read");
        assert!(n > 0, "server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// The next text message, as JSON; pings are skipped.
    fn next(&mut self) -> Value {
        loop {
            while self.buf.len() < 2 {
                self.fill();
            }
            let (len, header) = match self.buf[1] & 0x7f {
                126 => {
                    while self.buf.len() < 4 {
                        self.fill();
                    }
                    (
                        usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                        4,
                    )
                }
                127 => panic!("unexpectedly large frame"),
                n => (usize::from(n), 2),
            };
            while self.buf.len() < header + len {
                self.fill();
            }
            let opcode = self.buf[0] & 0x0f;
            let payload: Vec<u8> = self.buf.drain(..header + len).skip(header).collect();
            match opcode {
                0x1 => return serde_json::from_slice(&payload).expect("json message"),
                0x8 => panic!("closed: {payload:?}"),
                _ => continue,
            }
        }
    }

    /// The next message that is not `pusher:ping`.
    fn next_event(&mut self) -> Value {
        loop {
            let message = self.next();
            if message["event"] != "pusher:ping" {
                return message;
            }
        }
    }

    fn send(&mut self, message: &Value) {
        let mut frame = Vec::new();
        let text = message.to_string();
        ws::encode_masked_frame(
            &mut frame,
            true,
            OpCode::Text,
            text.as_bytes(),
            [7, 1, 3, 9],
        );
        self.stream.write_all(&frame).expect("send");
    }

    fn subscribe(&mut self, channel: &str, channel_data: Option<&str>) -> Value {
        let mut data = json!({ "channel": channel });
        if channel.starts_with("private-") || channel.starts_with("presence-") {
            let mut signed = format!("{}:{channel}", self.socket_id);
            if let Some(extra) = channel_data {
                signed.push(':');
                signed.push_str(extra);
                data["channel_data"] = json!(extra);
            }
            data["auth"] = json!(format!("{APP_KEY}:{}", sign(APP_SECRET, &[&signed])));
        }
        self.send(&json!({ "event": "pusher:subscribe", "data": data }));
        self.next_event()
    }
}

/// One signed HTTP API request, as the server SDKs sign it; returns status and JSON body.
fn api(port: u16, method: &str, path: &str, query: &[(&str, &str)], body: &str) -> (u16, Value) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string();
    let md5 = body_md5(body.as_bytes());
    let mut params: Vec<(&str, &str)> = vec![
        ("auth_key", APP_KEY),
        ("auth_timestamp", &now),
        ("auth_version", "1.0"),
    ];
    if !body.is_empty() {
        params.push(("body_md5", &md5));
    }
    params.extend_from_slice(query);
    params.sort();
    let joined: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let joined = joined.join("&");
    let signature = sign(APP_SECRET, &[&format!("{method}\n{path}\n{joined}")]);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("timeout");
    let request = format!(
        "{method} {path}?{joined}&auth_signature={signature} HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let json = response
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

/// Clients until at least two shards hold one; the first client of each of two shards, plus
/// the rest.
fn spread(port: u16) -> (Client, Client, Vec<Client>) {
    let mut clients: Vec<Client> = Vec::new();
    for _ in 0..64 {
        clients.push(Client::connect(port));
        let first = clients[0].shard().to_owned();
        if clients.len() >= 3
            && let Some(i) = clients.iter().position(|c| c.shard() != first)
        {
            let b = clients.remove(i);
            let a = clients.remove(0);
            return (a, b, clients);
        }
    }
    panic!("64 connections all landed on one shard");
}

fn cross_shard_delivery(backend: &str) {
    let server = Server::start(backend, 2);
    let (mut a, mut b, mut rest) = spread(server.port);
    let mut c = rest.pop().expect("a third client");
    assert_ne!(a.shard(), b.shard());

    // Client events: from A on one shard to B on the other, never back to A.
    for client in [&mut a, &mut b, &mut c] {
        let ok = client.subscribe("private-cross", None);
        assert_eq!(ok["event"], "pusher_internal:subscription_succeeded");
    }
    a.send(&json!({"event": "client-hi", "channel": "private-cross", "data": {"n": 1}}));
    for receiver in [&mut b, &mut c] {
        let got = receiver.next_event();
        assert_eq!(
            (got["event"].as_str(), got["channel"].as_str()),
            (Some("client-hi"), Some("private-cross"))
        );
    }

    // Presence: user u1 on two shards is added once and listed once.
    let u1 = r#"{"user_id":"u1"}"#;
    let u2 = r#"{"user_id":"u2"}"#;
    let joined = c.subscribe("presence-cross", Some(u2));
    assert_eq!(joined["event"], "pusher_internal:subscription_succeeded");
    let joined = a.subscribe("presence-cross", Some(u1));
    assert_eq!(joined["event"], "pusher_internal:subscription_succeeded");
    let added = c.next_event();
    assert_eq!(added["event"], "pusher_internal:member_added");
    let joined = b.subscribe("presence-cross", Some(u1));
    let members: Value =
        serde_json::from_str(joined["data"].as_str().unwrap_or("{}")).expect("data");
    assert_eq!(members["presence"]["count"], 2, "{members}");
    // A barrier: the next thing C sees is A's client event, not a second member_added.
    a.send(&json!({"event": "client-after", "channel": "presence-cross", "data": {}}));
    let next = c.next_event();
    assert_eq!(
        next["event"], "client-after",
        "u1 was announced twice: {next}"
    );
    assert_eq!(next["user_id"], "u1");
    let at_b = b.next_event();
    assert_eq!(at_b["event"], "client-after");

    // A was the sender of both client events: the next thing it gets is its own ping answer.
    a.send(&json!({"event": "pusher:ping", "data": {}}));
    assert_eq!(
        a.next_event()["event"],
        "pusher:pong",
        "the sender received its own event"
    );

    // The HTTP API: one publish reaches both shards, except the excluded socket; queries
    // count and list across shards.
    let events = format!("/apps/{APP_ID}/events");
    let body = json!({
        "name": "news", "channels": ["private-cross"], "data": "{\"n\":2}",
        "socket_id": c.socket_id,
    })
    .to_string();
    let (status, reply) = api(server.port, "POST", &events, &[], &body);
    assert_eq!(status, 200, "{reply}");
    for receiver in [&mut a, &mut b] {
        let got = receiver.next_event();
        assert_eq!(
            (got["event"].as_str(), got["data"].as_str()),
            (Some("news"), Some("{\"n\":2}"))
        );
    }
    c.send(&json!({"event": "pusher:ping", "data": {}}));
    assert_eq!(
        c.next_event()["event"],
        "pusher:pong",
        "the excluded socket got the event"
    );

    let channel = format!("/apps/{APP_ID}/channels/private-cross");
    let info = [("info", "subscription_count")];
    let (status, reply) = api(server.port, "GET", &channel, &info, "");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["occupied"], true);
    assert_eq!(reply["subscription_count"], 3, "{reply}");
    let users = format!("/apps/{APP_ID}/channels/presence-cross/users");
    let (status, reply) = api(server.port, "GET", &users, &[], "");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply, json!({"users": [{"id": "u1"}, {"id": "u2"}]}));
    let list = format!("/apps/{APP_ID}/channels");
    let query = [("filter_by_prefix", "presence-"), ("info", "user_count")];
    let (status, reply) = api(server.port, "GET", &list, &query, "");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["channels"]["presence-cross"]["user_count"], 2,
        "{reply}"
    );
}

#[test]
fn fan_out_crosses_shards_on_epoll() {
    cross_shard_delivery("epoll");
}

#[test]
fn fan_out_crosses_shards_on_io_uring() {
    if !uring_available() {
        eprintln!("io_uring is disabled on this kernel: skipped");
        return;
    }
    cross_shard_delivery("uring");
}
