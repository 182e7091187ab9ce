//! Cluster mode against real brokers: `redis-server` and `nats-server` run as child processes on
//! free loopback ports, and two ringcast instances join through each with `--broker`. A publish
//! on one instance must reach subscribers on the other, exclusion by socket id and
//! `terminate_connections` must hold across instances, an instance without subscribers of a
//! channel must receive nothing for it, presence must count a user once across instances and
//! drop a dead instance's members after the lease, and a broker outage must leave local delivery
//! alone and heal once the broker is back. Over `rediss://` the instances trust the test's own CA
//! through `--broker-ca-file` and refuse the broker without it. A missing broker binary fails the suite with the
//! command that installs it.

#[allow(
    dead_code,
    reason = "the shared harness serves several suites; this one uses part of it"
)]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, Server, uring_available};
use ringcast::pusher::api::signature::body_md5;
use ringcast::pusher::auth::sign;
use ringcast::ws::{self, OpCode};
use serde_json::{Value, json};

const APP_ID: &str = "7001";
const APP_KEY: &str = "cluster-key";
const APP_SECRET: &str = "cluster-secret";

/// Read timeout of every client socket: a missing delivery fails the test instead of hanging.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a test waits for a state it expects (a subscription reaching the broker, a
/// reconnection); only a bound on a hang, generous for a loaded machine.
const SETTLE: Duration = Duration::from_secs(30);

/// Which broker a test runs against.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Redis,
    Nats,
}

/// A broker child process on a fixed loopback port, killed when dropped.
struct Broker {
    kind: Kind,
    port: u16,
    child: Option<Child>,
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

impl Broker {
    fn start(kind: Kind) -> Broker {
        let mut broker = Broker {
            kind,
            port: free_port(),
            child: None,
        };
        broker.spawn();
        broker
    }

    fn url(&self) -> String {
        match self.kind {
            Kind::Redis => format!("redis://127.0.0.1:{}", self.port),
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let (program, args): (&str, Vec<&str>) = match self.kind {
            Kind::Redis => (
                "redis-server",
                vec![
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
            ),
            Kind::Nats => ("nats-server", vec!["-a", "127.0.0.1", "-p", &port]),
        };
        // Debian installs nats-server in /usr/sbin, which a non-root PATH may leave out.
        let child = [program.to_owned(), format!("/usr/sbin/{program}")]
            .iter()
            .find_map(|path| {
                Command::new(path)
                    .args(&args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .ok()
            })
            .unwrap_or_else(|| panic!("cannot run {program}; install it with `make system-deps`"));
        self.child = Some(child);
        let deadline = Instant::now() + SETTLE;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{program} did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A ringcast instance joined to `broker` (any URL), with the test app and, unless `extra` says
/// otherwise, its admin routes on the public port, so one address serves the clients, the API
/// and `/metrics`.
fn instance(backend: Backend, broker: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--broker", broker, "--broker-prefix", "test"];
    if !extra.contains(&"--admin-listen") {
        args.extend(["--admin-listen", "public"]);
    }
    args.extend_from_slice(extra);
    Server::start_with_env(
        backend,
        2,
        &args,
        &[
            ("RINGCAST_APP_ID", APP_ID),
            ("RINGCAST_APP_KEY", APP_KEY),
            ("RINGCAST_APP_SECRET", APP_SECRET),
            ("RINGCAST_MAX_HANDSHAKES_PER_IP", "0"),
        ],
    )
}

/// The backends this machine runs; io_uring only where the kernel offers it.
fn backends() -> Vec<Backend> {
    let mut list = vec![Backend::Epoll];
    if uring_available() {
        list.push(Backend::Uring);
    }
    list
}

/// Two tests, `$redis` and `$nats`, each running `$body(kind, backend)` against its broker on
/// every backend this machine runs.
macro_rules! on_each_broker {
    ($body:ident: $redis:ident, $nats:ident) => {
        #[test]
        fn $redis() {
            for backend in backends() {
                $body(Kind::Redis, backend);
            }
        }

        #[test]
        fn $nats() {
            for backend in backends() {
                $body(Kind::Nats, backend);
            }
        }
    };
}

/// `GET path` on the instance; the body.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("request");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// One sample of `/metrics`, `name{labels}` (labels as written, `""` for none); 0 when absent.
fn metric(addr: SocketAddr, name: &str, labels: &str) -> f64 {
    let series = if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    };
    get(addr, "/metrics")
        .lines()
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == series).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// Waits until `check` holds, polling; panics with `what` after [`SETTLE`].
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One hand-driven Pusher connection.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    socket_id: String,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let mut stream = TcpStream::connect(addr).expect("connect");
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
        let established = client.next_event();
        assert_eq!(established["event"], "pusher:connection_established");
        let data: Value = serde_json::from_str(established["data"].as_str().unwrap_or("{}"))
            .expect("established data");
        client.socket_id = data["socket_id"].as_str().unwrap_or_default().to_owned();
        client
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).expect("read");
        assert!(n > 0, "server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// The next frame: opcode and payload.
    fn frame(&mut self) -> (u8, Vec<u8>) {
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
        (opcode, payload)
    }

    /// The next Pusher message that is not `pusher:ping`.
    fn next_event(&mut self) -> Value {
        loop {
            let (opcode, payload) = self.frame();
            match opcode {
                0x1 => {
                    let message: Value = serde_json::from_slice(&payload).expect("json message");
                    if message["event"] != "pusher:ping" {
                        return message;
                    }
                }
                0x8 => panic!("closed: {payload:?}"),
                _ => {}
            }
        }
    }

    /// The close code the server sends next, skipping other frames.
    fn close_code(&mut self) -> u16 {
        loop {
            let (opcode, payload) = self.frame();
            if opcode == 0x8 {
                return payload
                    .get(..2)
                    .map_or(0, |code| u16::from_be_bytes([code[0], code[1]]));
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

    fn subscribe(&mut self, channel: &str) {
        let mut data = json!({ "channel": channel });
        if channel.starts_with("private-") {
            let signed = format!("{}:{channel}", self.socket_id);
            data["auth"] = json!(format!("{APP_KEY}:{}", sign(APP_SECRET, &[&signed])));
        }
        self.send(&json!({ "event": "pusher:subscribe", "data": data }));
        let answer = self.next_event();
        assert_eq!(
            answer["event"], "pusher_internal:subscription_succeeded",
            "{answer}"
        );
    }

    /// Joins a presence channel as `user_id`; the user ids of `subscription_succeeded`.
    fn join(&mut self, channel: &str, user_id: &str) -> Vec<String> {
        let channel_data = json!({ "user_id": user_id, "user_info": { "n": user_id } }).to_string();
        let signed = format!("{}:{channel}:{channel_data}", self.socket_id);
        let auth = format!("{APP_KEY}:{}", sign(APP_SECRET, &[&signed]));
        self.send(&json!({
            "event": "pusher:subscribe",
            "data": { "channel": channel, "auth": auth, "channel_data": channel_data },
        }));
        let answer = self.next_event();
        assert_eq!(
            answer["event"], "pusher_internal:subscription_succeeded",
            "{answer}"
        );
        let data: Value =
            serde_json::from_str(answer["data"].as_str().unwrap_or("{}")).expect("data");
        let mut ids: Vec<String> = data["presence"]["ids"]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| id.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// The next event, asserting it is a presence change (`member_added`/`_removed`) of
    /// `user_id` on `channel`.
    fn expect_member(&mut self, channel: &str, event: &str, user_id: &str) {
        let message = self.next_event();
        assert_eq!(message["channel"], channel, "{message}");
        assert_eq!(
            message["event"],
            format!("pusher_internal:{event}"),
            "{message}"
        );
        let data: Value =
            serde_json::from_str(message["data"].as_str().unwrap_or("{}")).expect("data");
        assert_eq!(data["user_id"], user_id, "{message}");
    }

    fn sign_in(&mut self, user_id: &str) {
        let user_data = json!({ "id": user_id }).to_string();
        let signed = format!("{}::user::{user_data}", self.socket_id);
        let auth = format!("{APP_KEY}:{}", sign(APP_SECRET, &[&signed]));
        self.send(&json!({
            "event": "pusher:signin",
            "data": { "auth": auth, "user_data": user_data },
        }));
        let answer = self.next_event();
        assert_eq!(answer["event"], "pusher:signin_success", "{answer}");
    }

    /// Whether bytes arrive within `wait`.
    fn has_data_within(&mut self, wait: Duration) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        self.stream.set_read_timeout(Some(wait)).expect("timeout");
        let mut byte = [0u8; 1];
        let ready = self.stream.peek(&mut byte).is_ok_and(|n| n > 0);
        self.stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("timeout");
        ready
    }

    /// The next event's name and data, asserting it is on `channel`.
    fn expect_event(&mut self, channel: &str) -> (String, String) {
        let message = self.next_event();
        assert_eq!(message["channel"], channel, "{message}");
        assert!(
            !message["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("pusher_internal:")),
            "unexpected {message}"
        );
        (
            message["event"].as_str().unwrap_or_default().to_owned(),
            message["data"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

/// A signed HTTP API request; returns the status code.
fn api(addr: SocketAddr, method: &str, path: &str, body: &str) -> u16 {
    api_with(addr, method, path, &[], body).0
}

/// A signed HTTP API request with query parameters; returns the status code and JSON body.
fn api_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
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
    let mut stream = TcpStream::connect(addr).expect("connect");
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

/// Publishes `data` as event `e` on `channel` through the API of `addr`, excluding `socket_id`.
fn publish(addr: SocketAddr, channel: &str, data: &str, socket_id: Option<&str>) {
    let mut body = json!({ "name": "e", "channel": channel, "data": data });
    if let Some(id) = socket_id {
        body["socket_id"] = json!(id);
    }
    let status = api(
        addr,
        "POST",
        &format!("/apps/{APP_ID}/events"),
        &body.to_string(),
    );
    assert_eq!(status, 200, "publish on {addr}");
}

/// Broker subjects the instance subscribes to.
fn subscriptions(addr: SocketAddr) -> f64 {
    metric(addr, "ringcast_broker_subscriptions", "")
}

/// Waits until the instance holds `n` broker subscriptions (the app's user subject is one).
fn wait_subscriptions(addr: SocketAddr, n: f64) {
    wait_for(&format!("{n} broker subscriptions on {addr}"), || {
        subscriptions(addr) == n
    });
}

/// API and client events published on one instance reach the other's subscribers, and a
/// socket id excludes its connection whichever instance the API call came to.
fn crosses_instances(kind: Kind, backend: Backend) {
    let broker = Broker::start(kind);
    let a = instance(backend, &broker.url(), &[]);
    let b = instance(backend, &broker.url(), &[]);
    let channel = "private-room";
    let mut on_a = Client::connect(a.addr());
    let mut on_b = Client::connect(b.addr());
    on_a.subscribe(channel);
    on_b.subscribe(channel);
    wait_subscriptions(a.addr(), 2.0);
    wait_subscriptions(b.addr(), 2.0);

    publish(a.addr(), channel, "from-api-on-a", None);
    assert_eq!(on_b.expect_event(channel).1, "from-api-on-a");
    assert_eq!(on_a.expect_event(channel).1, "from-api-on-a");

    on_a.send(&json!({ "event": "client-typing", "channel": channel, "data": {"n": 1} }));
    let (event, data) = on_b.expect_event(channel);
    assert_eq!(
        (event.as_str(), data.as_str()),
        ("client-typing", r#"{"n":1}"#)
    );

    // Excluded on another instance than the one the API call came to: on_b misses the first
    // event and gets the second; on_a gets both (and not the client event it sent itself).
    publish(a.addr(), channel, "not-for-b", Some(&on_b.socket_id));
    publish(a.addr(), channel, "after", None);
    assert_eq!(on_b.expect_event(channel).1, "after");
    assert_eq!(on_a.expect_event(channel).1, "not-for-b");
    assert_eq!(on_a.expect_event(channel).1, "after");
    publish(b.addr(), channel, "not-for-a", Some(&on_a.socket_id));
    publish(b.addr(), channel, "last", None);
    assert_eq!(on_a.expect_event(channel).1, "last");
    assert_eq!(on_b.expect_event(channel).1, "not-for-a");
    assert_eq!(on_b.expect_event(channel).1, "last");
    wait_for("messages counted out", || {
        metric(
            a.addr(),
            "ringcast_broker_messages_total",
            r#"direction="out""#,
        ) >= 4.0
    });
    wait_for("messages counted in", || {
        metric(
            b.addr(),
            "ringcast_broker_messages_total",
            r#"direction="in""#,
        ) >= 4.0
    });

    // One publishing instance's events on one channel arrive in the order it published them.
    let batch: Vec<Value> = (0..10)
        .map(|n| json!({ "name": "e", "channel": channel, "data": n.to_string() }))
        .collect();
    let body = json!({ "batch": batch }).to_string();
    for _ in 0..3 {
        let status = api(
            a.addr(),
            "POST",
            &format!("/apps/{APP_ID}/batch_events"),
            &body,
        );
        assert_eq!(status, 200);
    }
    let order: Vec<String> = (0..30).map(|_| on_b.expect_event(channel).1).collect();
    let sent: Vec<String> = (0..30).map(|n| (n % 10).to_string()).collect();
    assert_eq!(order, sent);
}

on_each_broker!(crosses_instances: redis_api_and_client_events_cross_instances, nats_api_and_client_events_cross_instances);

/// An instance subscribes to a channel's subject only while it has subscribers of it: with
/// none it receives nothing of the channel's publishes.
fn routes_by_interest(kind: Kind, backend: Backend) {
    let broker = Broker::start(kind);
    // No presence lease renewal during the test: only channel messages move the counters.
    let quiet = ["--presence-lease", "3600s"];
    let a = instance(backend, &broker.url(), &quiet);
    let b = instance(backend, &broker.url(), &quiet);
    wait_subscriptions(a.addr(), 1.0);
    let mut on_b = Client::connect(b.addr());
    on_b.subscribe("news");
    wait_subscriptions(b.addr(), 2.0);
    // B reports its new count on the user subject every instance listens on; once A counts
    // it, nothing else is on its way to A.
    wait_for("B's count heard on A", || {
        cluster_subscriptions(a.addr(), "news") == 1
    });
    let received = |addr| metric(addr, "ringcast_broker_messages_total", r#"direction="in""#);
    let a_before = received(a.addr());
    for n in 0..5 {
        publish(a.addr(), "news", &n.to_string(), None);
        assert_eq!(on_b.expect_event("news").1, n.to_string());
    }
    publish(b.addr(), "news", "from-b", None);
    assert_eq!(on_b.expect_event("news").1, "from-b");
    assert_eq!(
        received(a.addr()),
        a_before,
        "an instance without subscribers of the channel received its publishes"
    );
    assert_eq!(subscriptions(a.addr()), 1.0, "only the user subject");

    // The last subscriber leaves: the subject is dropped and publishes stop arriving. The
    // probe, published after, arrives through the broker in order behind anything before it.
    drop(on_b);
    wait_subscriptions(b.addr(), 1.0);
    let mut probe = Client::connect(b.addr());
    probe.subscribe("probe");
    wait_subscriptions(b.addr(), 2.0);
    // B hears its own count report too; a marker published after A heard the report arrives
    // behind it, so nothing else is on its way to B once the marker is in.
    wait_for("B's count heard on A", || {
        cluster_subscriptions(a.addr(), "probe") == 1
    });
    publish(a.addr(), "probe", "marker", None);
    assert_eq!(probe.expect_event("probe").1, "marker");
    let b_before = received(b.addr());
    publish(a.addr(), "news", "nobody", None);
    publish(a.addr(), "probe", "sent-after", None);
    assert_eq!(probe.expect_event("probe").1, "sent-after");
    assert_eq!(
        received(b.addr()),
        b_before + 1.0,
        "only the probe arrived after the unsubscribe"
    );
}

on_each_broker!(routes_by_interest: redis_routes_by_interest, nats_routes_by_interest);

/// `terminate_connections` on one instance closes the user's connections on the other.
fn terminates_across_instances(kind: Kind, backend: Backend) {
    let broker = Broker::start(kind);
    let a = instance(backend, &broker.url(), &[]);
    let b = instance(backend, &broker.url(), &[]);
    wait_subscriptions(a.addr(), 1.0);
    wait_subscriptions(b.addr(), 1.0);
    let mut on_b = Client::connect(b.addr());
    on_b.sign_in("u-1");
    let status = api(
        a.addr(),
        "POST",
        &format!("/apps/{APP_ID}/users/u-1/terminate_connections"),
        "{}",
    );
    assert_eq!(status, 200);
    assert_eq!(on_b.close_code(), 4009);
}

on_each_broker!(terminates_across_instances: redis_terminates_connections_across_instances, nats_terminates_connections_across_instances);

/// The JSON of `/health`.
fn health(addr: SocketAddr) -> Value {
    serde_json::from_str(&get(addr, "/health")).unwrap_or(Value::Null)
}

/// The broker goes away: local delivery goes on, `/health` says degraded with the reason and
/// the metric reads 0; the broker comes back on the same port: cross-instance delivery resumes.
fn survives_a_broker_restart(kind: Kind) {
    let mut broker = Broker::start(kind);
    let a = instance(Backend::Epoll, &broker.url(), &[]);
    let b = instance(Backend::Epoll, &broker.url(), &[]);
    let mut on_a = Client::connect(a.addr());
    let mut on_b = Client::connect(b.addr());
    on_a.subscribe("live");
    on_b.subscribe("live");
    wait_subscriptions(b.addr(), 2.0);
    publish(a.addr(), "live", "before", None);
    assert_eq!(on_b.expect_event("live").1, "before");
    assert_eq!(on_a.expect_event("live").1, "before");
    assert_eq!(metric(a.addr(), "ringcast_broker_up", ""), 1.0);
    assert_eq!(health(a.addr())["status"], "ok");

    broker.kill();
    wait_for("the broker marked down", || {
        metric(a.addr(), "ringcast_broker_up", "") == 0.0
    });
    let report = health(a.addr());
    assert_eq!(report["status"], "degraded", "{report}");
    assert_eq!(report["reasons"], json!(["broker"]), "{report}");
    assert_eq!(report["broker"]["up"], false);
    assert_ne!(report["broker"]["reason"], "", "{report}");
    publish(a.addr(), "live", "local-only", None);
    assert_eq!(on_a.expect_event("live").1, "local-only");

    broker.spawn();
    for addr in [a.addr(), b.addr()] {
        wait_for("the broker back up", || {
            metric(addr, "ringcast_broker_up", "") == 1.0
                && metric(addr, "ringcast_broker_reconnects_total", "") >= 1.0
        });
    }
    wait_subscriptions(b.addr(), 2.0);
    assert_eq!(health(a.addr())["status"], "ok");
    // The first publishes after the restart may go out before the other instance's
    // subscription is back on the broker; delivery resumes within the wait.
    let deadline = Instant::now() + SETTLE;
    for n in 0.. {
        let data = format!("after-{n}");
        publish(a.addr(), "live", &data, None);
        assert_eq!(on_a.expect_event("live").1, data, "local delivery");
        if on_b.has_data_within(Duration::from_millis(300)) {
            let (_, got) = on_b.expect_event("live");
            assert!(got.starts_with("after-"), "{got}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no delivery across instances after the restart"
        );
    }
}

#[test]
fn redis_broker_restart_degrades_and_heals() {
    survives_a_broker_restart(Kind::Redis);
}

#[test]
fn nats_broker_restart_degrades_and_heals() {
    survives_a_broker_restart(Kind::Nats);
}

/// No broker listens: the instance starts degraded and serves local clients; with
/// `--broker-required` it exits non-zero naming the broker.
fn unreachable_at_start(kind: Kind) {
    let port = free_port();
    let url = match kind {
        Kind::Redis => format!("redis://127.0.0.1:{port}"),
        Kind::Nats => format!("nats://127.0.0.1:{port}"),
    };
    let a = instance(Backend::Epoll, &url, &[]);
    wait_for("the broker reported unreachable", || {
        health(a.addr())["broker"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty() && r != "connecting")
    });
    let report = health(a.addr());
    assert_eq!(report["status"], "degraded", "{report}");
    assert_eq!(metric(a.addr(), "ringcast_broker_up", ""), 0.0);
    let mut local = Client::connect(a.addr());
    local.subscribe("solo");
    publish(a.addr(), "solo", "served", None);
    assert_eq!(local.expect_event("solo").1, "served");
    wait_for("the publish the broker could not take counted", || {
        metric(
            a.addr(),
            "ringcast_broker_dropped_total",
            r#"reason="down""#,
        ) >= 1.0
    });

    let output = common::serve_command("epoll", 1)
        .args(["--broker", &url, "--broker-required"])
        .output()
        .expect("run ringcast");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "started without its broker");
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains("unreachable") && said.contains("--broker-required"),
        "{said}"
    );
}

#[test]
fn redis_unreachable_at_start() {
    unreachable_at_start(Kind::Redis);
}

#[test]
fn nats_unreachable_at_start() {
    unreachable_at_start(Kind::Nats);
}

/// One command to Redis over RESP; the first line of the answer.
fn redis_command(port: u16, args: &[&str]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("timeout");
    let mut command = format!("*{}\r\n", args.len());
    for arg in args {
        command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(command.as_bytes()).expect("send to redis");
    let mut answer = [0u8; 256];
    let n = stream.read(&mut answer).expect("redis answer");
    String::from_utf8_lossy(&answer[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Every broker family moves under what it counts (`ringcast_broker_up`, `_messages_total`,
/// `_dropped_total` for each reason, `_reconnects_total`, `_subscriptions`), and the bridge's
/// queue limit (`--broker-queue-capacity 1`) drops and counts once crossed: Redis is paused, so
/// the bridge waits on its first `PUBLISH` while a batch of ten events arrives behind it.
#[test]
fn redis_broker_families_move_and_the_queue_limit_drops() {
    let broker = Broker::start(Kind::Redis);
    let a = instance(
        Backend::Epoll,
        &broker.url(),
        &["--broker-queue-capacity", "1"],
    );
    let b = instance(Backend::Epoll, &broker.url(), &[]);
    let mut on_b = Client::connect(b.addr());
    on_b.subscribe("metrics");
    wait_subscriptions(b.addr(), 2.0);
    assert_eq!(metric(b.addr(), "ringcast_broker_up", ""), 1.0);
    publish(a.addr(), "metrics", "counted", None);
    assert_eq!(on_b.expect_event("metrics").1, "counted");
    wait_for("messages counted out", || {
        metric(
            a.addr(),
            "ringcast_broker_messages_total",
            r#"direction="out""#,
        ) >= 1.0
    });
    wait_for("messages counted in", || {
        metric(
            b.addr(),
            "ringcast_broker_messages_total",
            r#"direction="in""#,
        ) >= 1.0
    });

    let subject = format!("test:{APP_ID}:metrics");
    assert_eq!(
        redis_command(broker.port, &["PUBLISH", &subject, "not ours"]),
        ":1"
    );
    wait_for("the foreign message counted", || {
        metric(
            b.addr(),
            "ringcast_broker_dropped_total",
            r#"reason="invalid""#,
        ) >= 1.0
    });

    assert_eq!(
        redis_command(broker.port, &["CLIENT", "PAUSE", "3000", "ALL"]),
        "+OK"
    );
    let batch: Vec<Value> = (0..10)
        .map(|n| json!({ "name": "e", "channel": "metrics", "data": n.to_string() }))
        .collect();
    let body = json!({ "batch": batch }).to_string();
    let status = api(
        a.addr(),
        "POST",
        &format!("/apps/{APP_ID}/batch_events"),
        &body,
    );
    assert_eq!(status, 200);
    wait_for("drops past the queue's capacity", || {
        metric(
            a.addr(),
            "ringcast_broker_dropped_total",
            r#"reason="full""#,
        ) >= 1.0
    });
    let dropped = metric(
        a.addr(),
        "ringcast_broker_dropped_total",
        r#"reason="full""#,
    );
    assert!(
        dropped <= 9.0,
        "the first publish and one queued are kept: {dropped}"
    );

    // The broker goes: up reads 0 and what is published meanwhile counts as dropped (down);
    // it comes back: up reads 1 and the reconnect epoch moves.
    let mut broker = broker;
    broker.kill();
    wait_for("the broker marked down", || {
        metric(b.addr(), "ringcast_broker_up", "") == 0.0
    });
    publish(b.addr(), "metrics", "while-down", None);
    assert_eq!(on_b.expect_event("metrics").1, "while-down");
    wait_for("the publish counted as dropped", || {
        metric(
            b.addr(),
            "ringcast_broker_dropped_total",
            r#"reason="down""#,
        ) >= 1.0
    });
    broker.spawn();
    wait_for("the broker back", || {
        metric(b.addr(), "ringcast_broker_up", "") == 1.0
            && metric(b.addr(), "ringcast_broker_reconnects_total", "") >= 1.0
    });
}

/// A ringcast instance on a port another instance already listens on (SO_REUSEPORT), with its
/// admin routes on a port of its own; killed when dropped.
struct SharedPort {
    child: Child,
}

impl SharedPort {
    fn start(port: u16, broker: &str, admin: SocketAddr) -> SharedPort {
        use std::io::BufRead as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringcast"))
            .args(["serve", "--backend", "epoll", "--shards", "2"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--broker", broker, "--broker-prefix", "test"])
            .envs([
                ("RINGCAST_APP_ID", APP_ID),
                ("RINGCAST_APP_KEY", APP_KEY),
                ("RINGCAST_APP_SECRET", APP_SECRET),
                ("RINGCAST_MAX_HANDSHAKES_PER_IP", "0"),
                ("NO_COLOR", "1"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringcast");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("[ringcast shared port] {line}");
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + SETTLE;
        let mut listening = 0;
        while listening < 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .expect("the second instance's listen lines");
            if line.contains("shard listening") {
                listening += 1;
            }
        }
        SharedPort { child }
    }
}

impl Drop for SharedPort {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The instance part of a socket id (`{instance * 1000 + shard}.{n}`).
fn instance_of(socket_id: &str) -> u64 {
    socket_id
        .split('.')
        .next()
        .and_then(|high| high.parse::<u64>().ok())
        .map_or(0, |high| high / 1000)
}

/// Two processes on one SO_REUSEPORT port: the kernel spreads clients and API calls over both,
/// and every client gets every event whichever process took the publish.
#[test]
fn redis_instances_sharing_one_port_deliver_to_every_client() {
    let broker = Broker::start(Kind::Redis);
    let admin_a = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin_b = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let a = instance(
        Backend::Epoll,
        &broker.url(),
        &["--admin-listen", &admin_a.to_string()],
    );
    let _b = SharedPort::start(a.addr().port(), &broker.url(), admin_b);
    // Clients until both processes hold one (told apart by the instance in their socket id).
    let mut clients: Vec<Client> = Vec::new();
    let deadline = Instant::now() + SETTLE;
    loop {
        let client = Client::connect(a.addr());
        clients.push(client);
        let mut instances: Vec<u64> = clients.iter().map(|c| instance_of(&c.socket_id)).collect();
        instances.sort_unstable();
        instances.dedup();
        if instances.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the kernel never gave the second process a client"
        );
    }
    for client in &mut clients {
        client.subscribe("shared");
    }
    wait_subscriptions(admin_a, 2.0);
    wait_subscriptions(admin_b, 2.0);
    for n in 0..6 {
        publish(a.addr(), "shared", &n.to_string(), None);
    }
    // Each publish lands on either process, and events from different publishing instances
    // have no order between them: every client gets each event once.
    for client in &mut clients {
        let mut got: Vec<String> = (0..6).map(|_| client.expect_event("shared").1).collect();
        got.sort();
        let sent: Vec<String> = (0..6).map(|n: i32| n.to_string()).collect();
        assert_eq!(got, sent, "client {}", client.socket_id);
    }
}

/// Subscriptions of a channel on every instance, as one instance's HTTP API answers.
fn cluster_subscriptions(addr: SocketAddr, channel: &str) -> u64 {
    let (_, body) = api_with(
        addr,
        "GET",
        &format!("/apps/{APP_ID}/channels/{channel}"),
        &[("info", "subscription_count")],
        "",
    );
    body["subscription_count"].as_u64().unwrap_or(0)
}

/// The users of a presence channel as one instance answers.
fn users(addr: SocketAddr, channel: &str) -> Vec<String> {
    let (_, body) = api_with(
        addr,
        "GET",
        &format!("/apps/{APP_ID}/channels/{channel}/users"),
        &[],
        "",
    );
    let mut ids: Vec<String> = body["users"]
        .as_array()
        .map(|users| {
            users
                .iter()
                .filter_map(|u| u["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Presence spans instances: a user is added once wherever its first connection joins, stays
/// while any instance holds it, is removed once when its last connection anywhere leaves, and
/// when the instance holding it dies the survivors remove it once the lease runs out.
fn presence_spans_instances(kind: Kind, backend: Backend) {
    let broker = Broker::start(kind);
    let lease = ["--presence-lease", "2s"];
    let a = instance(backend, &broker.url(), &lease);
    let mut b = Some(instance(backend, &broker.url(), &lease));
    let b_addr = b.as_ref().map(Server::addr).expect("b");
    let room = "presence-room";
    let marker = |addr: SocketAddr, text: &str| publish(addr, room, text, None);

    let mut a1 = Client::connect(a.addr());
    assert_eq!(a1.join(room, "u1"), ["u1"]);
    wait_subscriptions(a.addr(), 2.0);
    // B has heard from A, so B's first join of the channel waits for A's members.
    wait_for("A's subscriber counted on B", || {
        cluster_subscriptions(b_addr, room) == 1
    });
    let mut b1 = Client::connect(b_addr);
    let seen = b1.join(room, "u2").contains(&"u1".to_owned());
    a1.expect_member(room, "member_added", "u2");
    // A's members are in B's roster, and none follows as member_added.
    marker(a.addr(), "m0");
    let mut added = 0;
    loop {
        let message = b1.next_event();
        if message["event"] == "e" {
            assert_eq!(message["data"], "m0");
            break;
        }
        assert_eq!(
            message["event"], "pusher_internal:member_added",
            "{message}"
        );
        assert!(
            message["data"]
                .as_str()
                .is_some_and(|d| d.contains("\"u1\"")),
            "{message}"
        );
        added += 1;
    }
    assert!(
        seen && added == 0,
        "u1 in the roster: {seen}, member_added {added} times"
    );
    assert_eq!(a1.expect_event(room).1, "m0");
    wait_for("both users listed on both instances", || {
        users(a.addr(), room) == ["u1", "u2"] && users(b_addr, room) == ["u1", "u2"]
    });

    // A second connection of u2, on the other instance: no member_added anywhere.
    let mut a2 = Client::connect(a.addr());
    assert_eq!(a2.join(room, "u2"), ["u1", "u2"]);
    marker(a.addr(), "m1");
    assert_eq!(a1.expect_event(room).1, "m1", "u2 added twice");
    assert_eq!(b1.expect_event(room).1, "m1", "u2 added twice");
    assert_eq!(a2.expect_event(room).1, "m1");
    // It leaves again: u2 is still on B, so no member_removed either.
    wait_for("three subscribers counted", || {
        cluster_subscriptions(a.addr(), room) == 3
    });
    drop(a2);
    wait_for("the second connection gone", || {
        cluster_subscriptions(a.addr(), room) == 2
    });
    marker(a.addr(), "m2");
    assert_eq!(a1.expect_event(room).1, "m2", "u2 removed while on B");
    assert_eq!(b1.expect_event(room).1, "m2", "u2 removed while on B");

    // A user only on A comes and goes: B's subscriber sees both, once.
    let mut a3 = Client::connect(a.addr());
    a3.join(room, "u3");
    a1.expect_member(room, "member_added", "u3");
    b1.expect_member(room, "member_added", "u3");
    drop(a3);
    a1.expect_member(room, "member_removed", "u3");
    b1.expect_member(room, "member_removed", "u3");

    // B dies without a word: after the lease A removes u2, once.
    drop(b.take());
    a1.expect_member(room, "member_removed", "u2");
    marker(a.addr(), "m3");
    assert_eq!(a1.expect_event(room).1, "m3", "u2 removed twice");
    assert_eq!(users(a.addr(), room), ["u1"]);
}

/// A watcher joining a presence channel on an instance that does not listen on it yet gets the
/// other instance's member in its roster, and no `member_added` for it afterwards; several
/// fresh channels in a row, as the race is between the two instances' bridges.
fn roster_is_complete_on_a_new_instance(kind: Kind, backend: Backend) {
    let broker = Broker::start(kind);
    let a = instance(backend, &broker.url(), &[]);
    let b = instance(backend, &broker.url(), &[]);
    // B has heard from A (its counts) before the rounds: the instances are up and joined.
    let mut warm = Client::connect(a.addr());
    warm.subscribe("warm-up");
    wait_for("A's subscriber counted on B", || {
        cluster_subscriptions(b.addr(), "warm-up") == 1
    });
    for round in 0..6 {
        let room = format!("presence-fresh-{round}");
        let mut member = Client::connect(a.addr());
        assert_eq!(member.join(&room, "member"), ["member"]);
        let mut watcher = Client::connect(b.addr());
        assert_eq!(
            watcher.join(&room, "watcher"),
            ["member", "watcher"],
            "round {round}: the roster lacks the other instance's member"
        );
        member.expect_member(&room, "member_added", "watcher");
        // Anything the watcher gets before this marker is a presence change it should not see.
        publish(a.addr(), &room, "marker", None);
        let (event, data) = watcher.expect_event(&room);
        assert_eq!(
            (event.as_str(), data.as_str()),
            ("e", "marker"),
            "round {round}"
        );
    }
}

on_each_broker!(roster_is_complete_on_a_new_instance: redis_roster_is_complete_on_a_new_instance, nats_roster_is_complete_on_a_new_instance);

#[test]
fn redis_presence_spans_instances() {
    presence_spans_instances(Kind::Redis, Backend::Epoll);
}

#[test]
fn nats_presence_spans_instances() {
    let backend = if uring_available() {
        Backend::Uring
    } else {
        Backend::Epoll
    };
    presence_spans_instances(Kind::Nats, backend);
}

/// The names of a process's threads.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's tasks")
        .filter_map(|task| {
            let path = task.ok()?.path().join("comm");
            Some(std::fs::read_to_string(path).ok()?.trim().to_owned())
        })
        .collect()
}

/// Without `--broker` nothing of cluster mode runs; with one, exactly one bridge thread does.
#[test]
fn the_bridge_thread_runs_only_with_a_broker() {
    let standalone = Server::start_with_env(Backend::Epoll, 2, &[], &[]);
    let names = thread_names(standalone.pid());
    assert!(
        !names.iter().any(|n| n == "cluster-bridge"),
        "standalone threads: {names:?}"
    );
    let broker = Broker::start(Kind::Redis);
    let joined = instance(Backend::Epoll, &broker.url(), &[]);
    let names = thread_names(joined.pid());
    let bridges = names.iter().filter(|n| *n == "cluster-bridge").count();
    assert_eq!(bridges, 1, "threads with a broker: {names:?}");
}

/// Every sequence number the client gets on `channel` until it has seen `last`, in order.
fn sequence_until(client: &mut Client, channel: &str, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    while seen.last() != Some(&last) {
        let (_, data) = client.expect_event(channel);
        seen.push(data.parse().expect("a sequence number"));
    }
    seen
}

/// SIGTERM drains one instance while events are published steadily through the other: the
/// drained instance's clients are closed with 4200, reconnect to the survivor and receive
/// events again, and the survivor's own clients get every event of the drain, in order, with
/// nothing else to notice.
fn drains_while_publishing(kind: Kind, backend: Backend) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let broker = Broker::start(kind);
    // A lease far beyond the test: a member of the drained instance must be removed at once,
    // not when its lease runs out.
    let lease = ["--presence-lease", "3600s"];
    let mut a = instance(
        backend,
        &broker.url(),
        &["--drain-timeout", "10s", lease[0], lease[1]],
    );
    let b = instance(backend, &broker.url(), &lease);
    let channel = "feed";
    let room = "presence-drain";
    let mut member_on_a = Client::connect(a.addr());
    member_on_a.join(room, "ua");
    wait_subscriptions(a.addr(), 2.0);
    let mut watcher_on_b = Client::connect(b.addr());
    let roster = watcher_on_b.join(room, "ub");
    member_on_a.expect_member(room, "member_added", "ub");
    if roster != ["ua", "ub"] {
        watcher_on_b.expect_member(room, "member_added", "ua");
    }
    let mut on_a: Vec<Client> = (0..3).map(|_| Client::connect(a.addr())).collect();
    let mut on_b: Vec<Client> = (0..2).map(|_| Client::connect(b.addr())).collect();
    for client in on_a.iter_mut().chain(on_b.iter_mut()) {
        client.subscribe(channel);
    }
    wait_subscriptions(a.addr(), 3.0);
    wait_subscriptions(b.addr(), 3.0);

    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (stop, published, b_addr) = (Arc::clone(&stop), Arc::clone(&published), b.addr());
        std::thread::spawn(move || {
            let mut seq = 0u64;
            while !stop.load(Ordering::Acquire) {
                publish(b_addr, channel, &seq.to_string(), None);
                published.store(seq + 1, Ordering::Release);
                seq += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // A's clients get B's events through the broker before the drain.
    wait_for("events published", || {
        published.load(Ordering::Acquire) >= 5
    });
    for client in &mut on_a {
        let (_, data) = client.expect_event(channel);
        assert!(data.parse::<u64>().is_ok(), "{data}");
    }

    a.signal(libc::SIGTERM);
    for client in &mut on_a {
        assert_eq!(client.close_code(), 4200, "drain close");
    }
    assert_eq!(member_on_a.close_code(), 4200, "drain close");
    watcher_on_b.expect_member(room, "member_removed", "ua");
    let status = a.wait_exit(SETTLE).expect("the drained instance exits");
    assert!(status.success(), "drain exit: {status:?}");
    // They reconnect to B and receive events again.
    let mut moved: Vec<Client> = (0..on_a.len()).map(|_| Client::connect(b.addr())).collect();
    for client in &mut moved {
        client.subscribe(channel);
    }
    let after = published.load(Ordering::Acquire) + 20;
    wait_for("events after the move", || {
        published.load(Ordering::Acquire) > after
    });
    stop.store(true, Ordering::Release);
    publisher.join().expect("publisher");
    let last = published.load(Ordering::Acquire) - 1;
    for client in &mut moved {
        let seen = sequence_until(client, channel, last);
        assert!(
            seen.windows(2).all(|w| w[1] == w[0] + 1),
            "moved client missed events: {seen:?}"
        );
    }
    let every: Vec<u64> = (0..=last).collect();
    for client in &mut on_b {
        assert_eq!(sequence_until(client, channel, last), every, "B's client");
        assert!(
            !client.has_data_within(Duration::from_millis(200)),
            "B's client got more than the events"
        );
    }
    let report = health(b.addr());
    assert_eq!(report["status"], "ok", "{report}");
    assert_eq!(
        metric(
            b.addr(),
            "ringcast_broker_dropped_total",
            r#"reason="down""#
        ),
        0.0
    );
}

on_each_broker!(drains_while_publishing: redis_drain_while_publishing_moves_clients_without_a_gap, nats_drain_while_publishing_moves_clients_without_a_gap);

/// One channel's `subscription_count` and `user_count` (presence only) as an instance answers.
fn channel_counts(addr: SocketAddr, channel: &str) -> (u64, u64, bool) {
    let info = if channel.starts_with("presence-") {
        "subscription_count,user_count"
    } else {
        "subscription_count"
    };
    let (status, body) = api_with(
        addr,
        "GET",
        &format!("/apps/{APP_ID}/channels/{channel}"),
        &[("info", info)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    (
        body["subscription_count"].as_u64().unwrap_or(0),
        body["user_count"].as_u64().unwrap_or(0),
        body["occupied"].as_bool().unwrap_or(false),
    )
}

/// The channels list an instance answers, with each channel's `subscription_count`.
fn channel_list(addr: SocketAddr) -> Value {
    let (status, body) = api_with(
        addr,
        "GET",
        &format!("/apps/{APP_ID}/channels"),
        &[("info", "subscription_count")],
        "",
    );
    assert_eq!(status, 200, "{body}");
    body["channels"].clone()
}

/// Channel counts are cluster-wide: `subscription_count`, `user_count` and `occupied` of one
/// channel and the channels list sum every instance's subscribers, whichever instance answers;
/// once an instance is killed its subscribers stop counting within the lease.
fn counts_span_instances(kind: Kind, backend: Backend) {
    let broker = Broker::start(kind);
    let lease_secs = 2;
    let lease_flag = format!("{lease_secs}s");
    let lease = ["--presence-lease", lease_flag.as_str()];
    let a = instance(backend, &broker.url(), &lease);
    let mut b = Some(instance(backend, &broker.url(), &lease));
    let b_addr = b.as_ref().map(Server::addr).expect("b");
    let mut on_a: Vec<Client> = (0..2).map(|_| Client::connect(a.addr())).collect();
    let mut on_b: Vec<Client> = (0..3).map(|_| Client::connect(b_addr)).collect();
    for client in on_a.iter_mut().chain(on_b.iter_mut()) {
        client.subscribe("shared");
    }
    on_b[0].subscribe("only-b");
    let room = "presence-counted";
    on_a[0].join(room, "ua");
    on_b[1].join(room, "ub");
    // A presence channel A does not listen on: its roster is B's alone.
    let elsewhere = "presence-only-b";
    on_b[2].join(elsewhere, "uc");

    for addr in [a.addr(), b_addr] {
        wait_for("the sums on both instances", || {
            channel_counts(addr, "shared") == (5, 0, true)
                && channel_counts(addr, "only-b") == (1, 0, true)
                && channel_counts(addr, room) == (2, 2, true)
                && channel_counts(addr, elsewhere) == (1, 1, true)
        });
    }
    let listed = channel_list(a.addr());
    assert_eq!(
        listed["only-b"],
        json!({ "subscription_count": 1 }),
        "{listed}"
    );
    assert_eq!(
        listed["shared"],
        json!({ "subscription_count": 5 }),
        "{listed}"
    );
    let (status, presence) = api_with(
        a.addr(),
        "GET",
        &format!("/apps/{APP_ID}/channels"),
        &[("filter_by_prefix", "presence-"), ("info", "user_count")],
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(
        presence["channels"],
        json!({ room: { "user_count": 2 }, elsewhere: { "user_count": 1 } }),
        "{presence}"
    );

    // A change reaches the other instance without waiting for the periodic report.
    drop(on_b.pop());
    wait_for("one subscriber fewer on A's answer", || {
        channel_counts(a.addr(), "shared") == (4, 0, true)
            && channel_counts(a.addr(), elsewhere) == (0, 0, false)
    });

    // B dies without a word: its subscribers stop counting once its figures are a lease old.
    let killed = Instant::now();
    drop(b.take());
    wait_for("B's figures dropped", || {
        channel_counts(a.addr(), "shared") == (2, 0, true)
            && channel_counts(a.addr(), "only-b") == (0, 0, false)
    });
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(lease_secs * 3),
        "B's figures outlived the lease by far: {took:?}"
    );
    let listed = channel_list(a.addr());
    assert!(listed.get("only-b").is_none(), "{listed}");
    wait_for("B's member removed", || {
        channel_counts(a.addr(), room) == (1, 1, true)
    });
}

on_each_broker!(counts_span_instances: redis_channel_counts_span_instances, nats_channel_counts_span_instances);

/// A child process killed when dropped.
struct Reaped {
    child: Child,
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis-server` with `args`, once it listens on `port`.
fn redis_process(port: u16, args: &[&str]) -> Reaped {
    let child = Command::new("redis-server")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run redis-server ({e}); install it with `make system-deps`")
        });
    let process = Reaped { child };
    wait_for(&format!("redis-server on {port}"), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    process
}

/// The master's port the sentinel on `sentinel` names for `mymaster`.
fn sentinel_master_port(sentinel: u16) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", sentinel)).ok()?;
    stream.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
    let command = "*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n$8\r\nmymaster\r\n";
    stream.write_all(command.as_bytes()).ok()?;
    let mut answer = [0u8; 256];
    let n = stream.read(&mut answer).ok()?;
    let text = String::from_utf8_lossy(&answer[..n]).into_owned();
    text.lines().nth(4)?.parse().ok()
}

/// `redis+sentinel://`: the instances ask a real `redis-server --sentinel` for the master, join
/// through it, and after the master dies and the sentinel promotes its replica they reconnect
/// to the new master and deliver across instances again.
#[test]
fn redis_sentinel_finds_the_master_and_follows_a_failover() {
    let (master_port, replica_port, sentinel_port) = (free_port(), free_port(), free_port());
    let bare = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
    let master_flag = master_port.to_string();
    let mut master_args = vec!["--port", master_flag.as_str()];
    master_args.extend(bare);
    let mut master = Some(redis_process(master_port, &master_args));
    let replica_flag = replica_port.to_string();
    let mut replica_args = vec![
        "--port",
        replica_flag.as_str(),
        "--replicaof",
        "127.0.0.1",
        master_flag.as_str(),
    ];
    replica_args.extend(bare);
    let _replica = redis_process(replica_port, &replica_args);
    let dir = std::env::temp_dir().join(format!("ringcast-sentinel-{sentinel_port}"));
    std::fs::create_dir_all(&dir).expect("sentinel dir");
    let config = dir.join("sentinel.conf");
    std::fs::write(
        &config,
        format!(
            "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
             sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
             sentinel down-after-milliseconds mymaster 500\n\
             sentinel failover-timeout mymaster 3000\n",
            dir.display()
        ),
    )
    .expect("sentinel config");
    let config_path = config.to_string_lossy().into_owned();
    let _sentinel = redis_process(sentinel_port, &[config_path.as_str(), "--sentinel"]);
    wait_for("the sentinel to know the master", || {
        sentinel_master_port(sentinel_port) == Some(master_port)
    });

    // The first node is down: the next one on the list answers.
    let url = format!(
        "redis+sentinel://127.0.0.1:{},127.0.0.1:{sentinel_port}/mymaster",
        free_port()
    );
    let a = instance(Backend::Epoll, &url, &[]);
    let b = instance(Backend::Epoll, &url, &[]);
    let mut on_b = Client::connect(b.addr());
    on_b.subscribe("watched");
    wait_subscriptions(b.addr(), 2.0);
    publish(a.addr(), "watched", "through-the-master", None);
    assert_eq!(on_b.expect_event("watched").1, "through-the-master");

    drop(master.take());
    wait_for("the sentinel to promote the replica", || {
        sentinel_master_port(sentinel_port) == Some(replica_port)
    });
    for addr in [a.addr(), b.addr()] {
        wait_for("the broker back up", || {
            metric(addr, "ringcast_broker_up", "") == 1.0
                && metric(addr, "ringcast_broker_reconnects_total", "") >= 1.0
        });
    }
    wait_subscriptions(b.addr(), 2.0);
    let deadline = Instant::now() + SETTLE;
    for n in 0.. {
        publish(a.addr(), "watched", &format!("after-{n}"), None);
        if on_b.has_data_within(Duration::from_millis(300)) {
            let (_, got) = on_b.expect_event("watched");
            assert!(got.starts_with("after-"), "{got}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no delivery across instances after the failover"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An instance that joins later counts the others' subscribers at once, not only at their next
/// periodic report (a third of a lease far beyond the test).
fn newcomer_counts_at_once(kind: Kind, backend: Backend) {
    let broker = Broker::start(kind);
    let lease = ["--presence-lease", "3600s"];
    let a = instance(backend, &broker.url(), &lease);
    let mut on_a = Client::connect(a.addr());
    on_a.subscribe("early");
    wait_subscriptions(a.addr(), 2.0);
    let b = instance(backend, &broker.url(), &lease);
    wait_for("A's subscriber counted on the newcomer", || {
        channel_counts(b.addr(), "early") == (1, 0, true)
    });
}

on_each_broker!(newcomer_counts_at_once: redis_newcomer_counts_the_others_at_once, nats_newcomer_counts_the_others_at_once);

/// A TLS-only Redis on a free loopback port, its certificate signed by a CA made for the test,
/// in a directory removed (and the server killed) when dropped.
struct TlsRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Child,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let dir = std::env::temp_dir().join(format!(
            "ringcast-redis-tls-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let openssl = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("run openssl; install it with `make system-deps`");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        openssl(
            &[
                &["req", "-x509", "-nodes", "-days", "2"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-subj",
                    "/CN=ringcast test CA",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req", "-nodes"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.crt",
            "-extfile",
            "san.ext",
        ]);
        let port = free_port();
        let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &file("server.crt")])
            .args(["--tls-key-file", &file("server.key")])
            .args(["--tls-ca-cert-file", &file("ca.crt")])
            .args(["--tls-auth-clients", "no", "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run redis-server; install it with `make system-deps`");
        let deadline = Instant::now() + SETTLE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsRedis { port, dir, child }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    fn ca_file(&self) -> String {
        self.dir.join("ca.crt").to_string_lossy().into_owned()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Over `rediss://` with the CA that signed the broker's certificate, two instances deliver
/// each other's API publishes.
fn crosses_instances_over_tls(backend: Backend) {
    let broker = TlsRedis::start();
    let ca = broker.ca_file();
    let a = instance(backend, &broker.url(), &["--broker-ca-file", &ca]);
    let b = instance(backend, &broker.url(), &["--broker-ca-file", &ca]);
    let channel = "tls-room";
    let mut on_a = Client::connect(a.addr());
    let mut on_b = Client::connect(b.addr());
    on_a.subscribe(channel);
    on_b.subscribe(channel);
    wait_subscriptions(a.addr(), 2.0);
    wait_subscriptions(b.addr(), 2.0);
    assert_eq!(health(a.addr())["status"], "ok");
    assert_eq!(
        health(a.addr())["broker"]["url"],
        format!("rediss://127.0.0.1:{}", broker.port)
    );

    publish(a.addr(), channel, "from-a", None);
    assert_eq!(on_b.expect_event(channel).1, "from-a");
    assert_eq!(on_a.expect_event(channel).1, "from-a");
    publish(b.addr(), channel, "from-b", None);
    assert_eq!(on_a.expect_event(channel).1, "from-b");
    assert_eq!(on_b.expect_event(channel).1, "from-b");
}

#[test]
fn rediss_with_the_ca_file_crosses_instances() {
    for backend in backends() {
        crosses_instances_over_tls(backend);
    }
}

/// Without the CA file the broker's certificate is checked against the system's roots, which
/// never signed it: the instance stays degraded, saying why, and serves its own clients.
#[test]
fn rediss_without_the_ca_file_is_refused_by_certificate() {
    let broker = TlsRedis::start();
    let a = instance(Backend::Epoll, &broker.url(), &[]);
    wait_for("the broker reported unreachable", || {
        health(a.addr())["broker"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty() && r != "connecting")
    });
    let report = health(a.addr());
    assert_eq!(report["status"], "degraded", "{report}");
    let reason = report["broker"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("certificate") || reason.contains("TLS"),
        "{report}"
    );
    assert_eq!(metric(a.addr(), "ringcast_broker_up", ""), 0.0);
    let mut local = Client::connect(a.addr());
    local.subscribe("solo");
    publish(a.addr(), "solo", "served", None);
    assert_eq!(local.expect_event("solo").1, "served");
}

/// A CA file that is missing or holds no certificate stops the start with the setting named
/// (`--broker-required` makes a start that skipped the check exit too, on the certificate,
/// rather than serve on).
#[test]
fn a_bad_broker_ca_file_stops_the_start() {
    let broker = TlsRedis::start();
    let not_pem = broker.dir.join("server.csr").to_string_lossy().into_owned();
    let missing = broker
        .dir
        .join("missing.crt")
        .to_string_lossy()
        .into_owned();
    for (ca, says) in [(&not_pem, "no PEM certificate"), (&missing, "cannot read")] {
        let output = common::serve_command("epoll", 1)
            .args([
                "--broker",
                &broker.url(),
                "--broker-ca-file",
                ca,
                "--broker-required",
            ])
            .output()
            .expect("run ringcast");
        assert!(!output.status.success(), "started with CA file {ca}");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            said.contains("broker_ca_file") && said.contains(says),
            "{said}"
        );
    }
}
