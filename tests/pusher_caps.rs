//! The Pusher caps over real sockets on both backends: subscriptions per connection, occupied
//! channels per app, members per presence channel and the size of a member's `user_info`, each
//! crossed by a Pusher client and answered with a `pusher:subscription_error` of type
//! `LimitReached` while the connection stays usable, and counted in
//! `ringcast_pusher_limit_refusals_total`. Pusher's own defaults (100 members, 1 KiB
//! `user_info`) are crossed too. Then a churn test: a client subscribing to and leaving unique
//! channel names on the same app must not slow another client's deliveries more than a small
//! factor beyond what the same churn on another app costs (the CPU it takes).

#[allow(
    dead_code,
    reason = "the shared harness serves several suites; this one uses part of it"
)]
mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::abuse::{Client, Server, connect};
use ringcast::pusher::auth::sign;
use ringcast::ws::OpCode;
use serde_json::{Value, json};

/// Every app's secret: the test signs private and presence subscriptions with it.
const SECRET: &str = "caps-secret";

/// The apps of the suite's server, one per cap so that crossing one leaves the others alone;
/// `defaults` keeps every limit at its default.
const APPS: &str = r#"
[[apps]]
id = "1"
key = "per-connection"
secret = "caps-secret"
limits = { max_subscriptions_per_connection = 3 }

[[apps]]
id = "2"
key = "per-app"
secret = "caps-secret"
limits = { max_channels = 4 }

[[apps]]
id = "3"
key = "presence"
secret = "caps-secret"
limits = { max_presence_members = 2, max_presence_user_info_bytes = 32 }

[[apps]]
id = "4"
key = "defaults"
secret = "caps-secret"

[[apps]]
id = "5"
key = "churn"
secret = "caps-secret"
client_events = true
limits = { client_events_per_second = 100000 }
"#;

/// A config file holding [`APPS`], removed when dropped.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(name: &str) -> ConfigFile {
        let path = std::env::temp_dir().join(format!(
            "ringcast-pusher-caps-{name}-{}.toml",
            std::process::id()
        ));
        std::fs::write(&path, APPS).expect("write the config file");
        ConfigFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A server on `backend` with the suite's apps and no per-connection message or byte rate
/// limits (the churn client sends thousands of messages a second).
fn start(backend: &str, config: &ConfigFile) -> Server {
    Server::start(
        backend,
        &[
            "--config",
            config.path(),
            "--max-messages-per-sec",
            "0",
            "--max-bytes-per-sec",
            "0",
        ],
    )
}

/// One Pusher connection of an app.
struct Pusher {
    client: Client,
    key: String,
    socket_id: String,
}

impl Pusher {
    fn connect(addr: SocketAddr, key: &str) -> Pusher {
        let path = format!("/app/{key}?protocol=7&client=caps-test");
        let client = Client::upgrade(connect(addr), &path, &[]).expect("Pusher upgrade");
        let mut pusher = Pusher {
            client,
            key: key.to_owned(),
            socket_id: String::new(),
        };
        let established = pusher.next_event();
        assert_eq!(established["event"], "pusher:connection_established");
        let data: Value =
            serde_json::from_str(established["data"].as_str().unwrap_or("{}")).expect("data");
        pusher.socket_id = data["socket_id"].as_str().unwrap_or_default().to_owned();
        pusher
    }

    /// The shard part of the socket id.
    fn shard(&self) -> &str {
        self.socket_id.split('.').next().unwrap_or_default()
    }

    /// The next event that is not `pusher:ping`; a close fails the test.
    fn next_event(&mut self) -> Value {
        loop {
            let (op, payload) = self.client.read_frame().expect("a frame from the server");
            match op {
                OpCode::Text => {
                    let event: Value = serde_json::from_slice(&payload).expect("JSON event");
                    if event["event"] != "pusher:ping" {
                        return event;
                    }
                }
                OpCode::Ping => self.client.send(OpCode::Pong, &payload),
                OpCode::Close => panic!("closed: {payload:?}"),
                _ => {}
            }
        }
    }

    /// The next event named `event`, skipping presence member updates.
    fn expect_event(&mut self, event: &str) -> Value {
        self.expect(None, event)
    }

    /// The next event named `event` (of `channel`, when given), skipping presence member
    /// updates; anything else fails the test.
    fn expect(&mut self, channel: Option<&str>, event: &str) -> Value {
        loop {
            let got = self.next_event();
            if channel.is_none_or(|c| got["channel"] == c) && got["event"] == event {
                return got;
            }
            assert!(
                got["event"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("pusher_internal:member_")),
                "waiting for {event} on {channel:?}, got {}",
                brief(&got)
            );
        }
    }

    fn send(&mut self, message: &Value) {
        self.client
            .send(OpCode::Text, message.to_string().as_bytes());
    }

    /// The subscribe message for `channel`, signed when it is private or presence.
    fn subscribe_message(&self, channel: &str, channel_data: Option<&str>) -> Value {
        let mut data = json!({ "channel": channel });
        if channel.starts_with("private-") || channel.starts_with("presence-") {
            let mut parts = vec![self.socket_id.as_str(), ":", channel];
            if let Some(channel_data) = channel_data {
                parts.extend([":", channel_data]);
                data["channel_data"] = channel_data.into();
            }
            data["auth"] = format!("{}:{}", self.key, sign(SECRET, &parts)).into();
        }
        json!({ "event": "pusher:subscribe", "data": data })
    }

    /// Subscribes and returns the answer on the channel (success or error).
    fn subscribe(&mut self, channel: &str, channel_data: Option<&str>) -> Value {
        let message = self.subscribe_message(channel, channel_data);
        self.send(&message);
        loop {
            let got = self.next_event();
            if got["channel"] == channel
                && (got["event"] == "pusher_internal:subscription_succeeded"
                    || got["event"] == "pusher:subscription_error")
            {
                return got;
            }
        }
    }

    fn unsubscribe(&mut self, channel: &str) {
        self.send(&json!({ "event": "pusher:unsubscribe", "data": { "channel": channel } }));
    }
}

/// The `data` of a `pusher:subscription_error` answer, asserting it is one.
fn refusal(answer: &Value) -> Value {
    assert_eq!(
        answer["event"],
        "pusher:subscription_error",
        "{}",
        brief(answer)
    );
    serde_json::from_str(answer["data"].as_str().unwrap_or("{}")).expect("error data")
}

/// The start of `event`'s text, for failure messages (a presence roster can be 100 KiB).
fn brief(event: &Value) -> String {
    event.to_string().chars().take(300).collect()
}

/// Asserts `answer` is a `LimitReached` refusal with `status`.
fn assert_limit_reached(answer: &Value, status: u16) {
    let data = refusal(answer);
    assert_eq!(data["type"], "LimitReached", "{}", brief(answer));
    assert_eq!(data["status"], status, "{}", brief(answer));
    assert!(
        data["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        brief(answer)
    );
}

fn assert_succeeded(answer: &Value) {
    assert_eq!(
        answer["event"],
        "pusher_internal:subscription_succeeded",
        "{}",
        brief(answer)
    );
}

/// Presence `channel_data` of `user` with `info_bytes` of `user_info` JSON (at least 8).
fn member(user: &str, info_bytes: usize) -> String {
    let info = format!(r#"{{"n":"{}"}}"#, "x".repeat(info_bytes - 8));
    assert_eq!(info.len(), info_bytes);
    format!(r#"{{"user_id":"{user}","user_info":{info}}}"#)
}

/// Waits for the refusal counter of `limit` to reach `at_least`.
fn assert_counted(server: &Server, limit: &str, at_least: f64) {
    let labels = format!("limit=\"{limit}\"");
    server.wait_metric("ringcast_pusher_limit_refusals_total", &labels, at_least);
}

fn caps_are_answered_and_counted(backend: &str) {
    let _alone = common::heavy_lock();
    let config = ConfigFile::new(&format!("caps-{backend}"));
    let server = start(backend, &config);

    // Subscriptions per connection: 3; the fourth is refused (status 400) and the connection
    // still subscribes once it left one.
    let mut one = Pusher::connect(server.addr(), "per-connection");
    for channel in ["a", "b", "private-c"] {
        assert_succeeded(&one.subscribe(channel, None));
    }
    assert_limit_reached(&one.subscribe("d", None), 400);
    one.unsubscribe("a");
    assert_succeeded(&one.subscribe("d", None));
    assert_counted(&server, "subscriptions_per_connection", 1.0);

    // Channels per app: 4 occupied over two connections; a fifth name is refused with 4100,
    // joining an occupied channel is not, and leaving one makes room.
    let mut first = Pusher::connect(server.addr(), "per-app");
    let mut second = Pusher::connect(server.addr(), "per-app");
    for channel in ["w", "x"] {
        assert_succeeded(&first.subscribe(channel, None));
    }
    for channel in ["y", "z"] {
        assert_succeeded(&second.subscribe(channel, None));
    }
    assert_limit_reached(&first.subscribe("five", None), 4100);
    assert_limit_reached(&second.subscribe("private-five", None), 4100);
    assert_succeeded(&first.subscribe("y", None));
    second.unsubscribe("z");
    // The unsubscribe has no answer; the next subscribe, on the same socket and shard, is
    // handled after it.
    assert_succeeded(&second.subscribe("five", None));
    assert_counted(&server, "channels_per_app", 2.0);
    // Other apps are not touched by this one's cap.
    assert_succeeded(&Pusher::connect(server.addr(), "defaults").subscribe("five", None));

    // Presence members: 2 users; a third is refused with 4100, the members' other devices are
    // not, and a member leaving makes room.
    let data_of = |user: &str| member(user, 16);
    let mut alice = Pusher::connect(server.addr(), "presence");
    let mut bob = Pusher::connect(server.addr(), "presence");
    let mut carol = Pusher::connect(server.addr(), "presence");
    let mut alice_phone = Pusher::connect(server.addr(), "presence");
    assert_succeeded(&alice.subscribe("presence-room", Some(&data_of("alice"))));
    assert_succeeded(&bob.subscribe("presence-room", Some(&data_of("bob"))));
    assert_limit_reached(
        &carol.subscribe("presence-room", Some(&data_of("carol"))),
        4100,
    );
    let roster = alice_phone.subscribe("presence-room", Some(&data_of("alice")));
    assert_succeeded(&roster);
    let presence: Value =
        serde_json::from_str(roster["data"].as_str().unwrap_or("{}")).expect("roster");
    assert_eq!(presence["presence"]["count"], 2, "{}", brief(&roster));
    bob.unsubscribe("presence-room");
    alice.expect(Some("presence-room"), "pusher_internal:member_removed");
    assert_succeeded(&carol.subscribe("presence-room", Some(&data_of("carol"))));
    assert_counted(&server, "presence_members", 1.0);

    // user_info: 32 bytes pass, 33 are refused with 400 on a channel with room.
    assert_succeeded(&carol.subscribe("presence-info", Some(&member("carol", 32))));
    assert_limit_reached(
        &alice.subscribe("presence-info", Some(&member("alice", 33))),
        400,
    );
    assert_counted(&server, "presence_user_info", 1.0);

    // The refused connections are still served.
    for pusher in [&mut one, &mut second, &mut carol, &mut alice] {
        pusher.send(&json!({ "event": "pusher:ping" }));
        pusher.expect_event("pusher:pong");
    }
    server.assert_responsive();
}

/// Pusher's defaults: 100 members per presence channel and 1 KiB of `user_info`.
fn pusher_defaults_are_crossed(backend: &str) {
    let _alone = common::heavy_lock();
    let config = ConfigFile::new(&format!("defaults-{backend}"));
    let server = start(backend, &config);
    let mut members: Vec<Pusher> = (0..100)
        .map(|i| {
            let mut pusher = Pusher::connect(server.addr(), "defaults");
            let data = member(&format!("user{i}"), 1024);
            assert_succeeded(&pusher.subscribe("presence-hall", Some(&data)));
            pusher
        })
        .collect();
    let mut late = Pusher::connect(server.addr(), "defaults");
    assert_limit_reached(
        &late.subscribe("presence-hall", Some(&member("late", 16))),
        4100,
    );
    assert_limit_reached(
        &late.subscribe("presence-other", Some(&member("late", 1025))),
        400,
    );
    assert_succeeded(&late.subscribe("presence-other", Some(&member("late", 1024))));
    assert_counted(&server, "presence_members", 1.0);
    assert_counted(&server, "presence_user_info", 1.0);
    // A member that leaves makes room for the late one.
    members[0].unsubscribe("presence-hall");
    members[1].expect(Some("presence-hall"), "pusher_internal:member_removed");
    assert_succeeded(&late.subscribe("presence-hall", Some(&member("late", 16))));
}

matrix!(caps_are_answered_and_counted);
matrix!(pusher_defaults_are_crossed);
matrix!(channel_churn_leaves_other_deliveries_alone);

/// Delivery samples per measured phase.
const SAMPLES: usize = 500;
/// Phases of each kind per attempt; an attempt's verdict is on the median of their p99s.
const ROUNDS: usize = 9;
/// Attempts before the churn test fails: a real cost of churn shows in every one, a burst of
/// load from elsewhere on the machine rarely spans three.
const ATTEMPTS: usize = 3;
/// How much slower the p99 delivery may be under churn on the probe's own app than under the
/// same churn on another app. The two cost the machine the same CPU; only the first shares the
/// app's channel index with the probe, so this ratio is what the index's locking costs.
const CHURN_FACTOR: f64 = 5.0;
/// How much slower the p99 delivery may be under churn on the probe's app than with no churn at
/// all: looser, since with three shards on a small machine the churning shard takes CPU time
/// from the probe's shards whatever app it churns (measured: about 5x on two cores).
const QUIET_FACTOR: f64 = 20.0;
/// Subscribe and unsubscribe pairs the churn client writes at once.
const CHURN_BATCH: usize = 50;
/// The churn client's pause after each batch.
const CHURN_PAUSE: Duration = Duration::from_millis(10);

/// A sender and a receiver on one private channel, on different shards when the server has
/// more than one, measuring client event to delivery one event at a time.
struct Probe {
    sender: Pusher,
    receiver: Pusher,
    seq: u64,
}

impl Probe {
    fn new(addr: SocketAddr) -> Probe {
        let sender = Pusher::connect(addr, "churn");
        let mut receiver = Pusher::connect(addr, "churn");
        for _ in 0..32 {
            if receiver.shard() != sender.shard() {
                break;
            }
            receiver = Pusher::connect(addr, "churn");
        }
        let mut probe = Probe {
            sender,
            receiver,
            seq: 0,
        };
        assert_succeeded(&probe.sender.subscribe("private-probe", None));
        assert_succeeded(&probe.receiver.subscribe("private-probe", None));
        probe
    }

    /// One event from the sender to the receiver: how long it took.
    fn sample(&mut self) -> Duration {
        self.seq += 1;
        let event = json!({
            "event": "client-probe",
            "channel": "private-probe",
            "data": { "seq": self.seq },
        });
        let start = Instant::now();
        self.sender.send(&event);
        let got = self.receiver.expect_event("client-probe");
        let took = start.elapsed();
        let data: Value = serde_json::from_str(got["data"].as_str().unwrap_or("{}")).expect("data");
        assert_eq!(data["seq"], self.seq, "{got}");
        took
    }

    /// The 99th percentile of [`SAMPLES`] deliveries.
    fn p99(&mut self) -> Duration {
        let mut samples: Vec<Duration> = (0..SAMPLES).map(|_| self.sample()).collect();
        samples.sort();
        samples[(SAMPLES * 99).div_ceil(100) - 1]
    }
}

/// A client subscribing to and leaving unique channel names as fast as the server answers,
/// in batches, on a shard other than the probe sender's when it can; counts its subscribes.
fn churn(addr: SocketAddr, app: &str, avoid: &[&str], stop: &AtomicBool, done: &AtomicU64) {
    let mut client = Pusher::connect(addr, app);
    for _ in 0..64 {
        if !avoid.contains(&client.shard()) {
            break;
        }
        client = Pusher::connect(addr, app);
    }
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut batch = Vec::new();
        for i in n..n + CHURN_BATCH as u64 {
            let channel = format!("churn-{i}");
            for message in [
                json!({ "event": "pusher:subscribe", "data": { "channel": channel } }),
                json!({ "event": "pusher:unsubscribe", "data": { "channel": channel } }),
            ] {
                let text = message.to_string();
                ringcast::ws::encode_masked_frame(
                    &mut batch,
                    true,
                    OpCode::Text,
                    text.as_bytes(),
                    [1, 2, 3, 4],
                );
            }
        }
        client.client.stream.write_all(&batch).expect("churn batch");
        for _ in 0..CHURN_BATCH {
            client.expect_event("pusher_internal:subscription_succeeded");
        }
        n += CHURN_BATCH as u64;
        done.store(n, Ordering::Relaxed);
        // Paced, so that the churn's cost in CPU (the test's own thread and the churning
        // shard's) stays a fraction of a core on a small machine: what is measured is what
        // its subscriptions cost the other shards through the shared channel index.
        thread::sleep(CHURN_PAUSE);
    }
}

fn channel_churn_leaves_other_deliveries_alone(backend: &str) {
    // Alone in the binary: another test's traffic would be measured as churn.
    let _alone = common::heavy_lock();
    let config = ConfigFile::new(&format!("churn-{backend}"));
    // Three shards: the probe's sender, its receiver and the churning client each get one.
    let backend_of = if backend == "uring" {
        common::Backend::Uring
    } else {
        common::Backend::Epoll
    };
    let server = common::Server::start(
        backend_of,
        3,
        &[
            "--config",
            config.path(),
            "--max-messages-per-sec",
            "0",
            "--max-bytes-per-sec",
            "0",
        ],
    );
    let mut probe = Probe::new(server.addr());
    for _ in 0..SAMPLES {
        probe.sample();
    }
    let probe_shards = [
        probe.sender.shard().to_owned(),
        probe.receiver.shard().to_owned(),
    ];
    let avoid = [probe_shards[0].as_str(), probe_shards[1].as_str()];
    let within = |churning: Duration, baseline: Duration, factor: f64| {
        churning.as_secs_f64() <= baseline.as_secs_f64() * factor
    };
    let mut attempts = Vec::new();
    for _ in 0..ATTEMPTS {
        let p99 = Medians::measure(&mut probe, server.addr(), &avoid);
        eprintln!("{backend}: {p99:?}");
        assert!(
            p99.same_app_channels >= (ROUNDS * CHURN_BATCH) as u64,
            "every round churns at least one batch: {p99:?}"
        );
        let passed = within(p99.same_app, p99.other_app, CHURN_FACTOR)
            && within(p99.same_app, p99.quiet, QUIET_FACTOR);
        attempts.push(p99);
        if passed {
            return;
        }
    }
    panic!(
        "in each of {ATTEMPTS} attempts, churn on the probe's app moved p99 delivery more than \
         {CHURN_FACTOR}x from the one under the same churn on another app, or more than \
         {QUIET_FACTOR}x from the quiet one: {attempts:#?}"
    );
}

/// Median over [`ROUNDS`] of the probe's p99 delivery in each condition.
#[derive(Debug)]
struct Medians {
    /// Nobody churns.
    quiet: Duration,
    /// A client of another app churns: the same work for the CPUs, no shared channel index.
    other_app: Duration,
    /// A client of the probe's own app churns.
    same_app: Duration,
    /// Unique channels the same-app churn subscribed to and left, over every round.
    same_app_channels: u64,
}

impl Medians {
    /// Rounds of the three conditions, interleaved so that a change in the machine's load
    /// falls on all three.
    fn measure(probe: &mut Probe, addr: SocketAddr, avoid: &[&str]) -> Medians {
        let mut quiet = Vec::new();
        let mut other_app = Vec::new();
        let mut same_app = Vec::new();
        let mut same_app_channels = 0;
        for _ in 0..ROUNDS {
            quiet.push(probe.p99());
            other_app.push(p99_under_churn(probe, addr, "defaults", avoid).0);
            let (p99, channels) = p99_under_churn(probe, addr, "churn", avoid);
            same_app.push(p99);
            same_app_channels += channels;
        }
        let median = |mut samples: Vec<Duration>| {
            samples.sort();
            samples[samples.len() / 2]
        };
        Medians {
            quiet: median(quiet),
            other_app: median(other_app),
            same_app: median(same_app),
            same_app_channels,
        }
    }
}

/// The probe's p99 while a client of `app` churns unique channel names, and how many it went
/// through; the churn must get going and answer, or the test fails.
fn p99_under_churn(
    probe: &mut Probe,
    addr: SocketAddr,
    app: &str,
    avoid: &[&str],
) -> (Duration, u64) {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    thread::scope(|scope| {
        let churner = scope.spawn(|| churn(addr, app, avoid, &stop, &done));
        let deadline = Instant::now() + Duration::from_secs(20);
        while done.load(Ordering::Relaxed) == 0 {
            assert!(
                Instant::now() < deadline && !churner.is_finished(),
                "the churn client never got going"
            );
            thread::sleep(Duration::from_millis(5));
        }
        let p99 = probe.p99();
        stop.store(true, Ordering::Relaxed);
        churner.join().expect("the churn client ran to the end");
        (p99, done.load(Ordering::Relaxed))
    })
}
