//! Cost of the Pusher core's hot paths: encoding a published event into its one shared frame
//! (100 B, 1 KiB and 10 KiB of data), handing it to 10k outboxes (a reference count each),
//! relaying a client event through a session, and verifying a signed HTTP API trigger.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcast::pusher::apps::DevCredentials;
use ringcast::pusher::*;

/// Data sizes: a chat message, a typical JSON event, the default API limit.
const SIZES: [usize; 3] = [100, 1024, 10 * 1024];

/// Subscribers one frame is handed to in the fan-out case.
const SUBSCRIBERS: usize = 10_000;

#[derive(Default)]
struct Table(HashMap<String, ChannelId>);

impl ChannelRegistry for Table {
    fn intern(&mut self, name: &str) -> ChannelId {
        let next = ChannelId(u32::try_from(self.0.len()).unwrap_or(u32::MAX));
        *self.0.entry(name.to_owned()).or_insert(next)
    }
    fn find(&self, name: &str) -> Option<ChannelId> {
        self.0.get(name).copied()
    }
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("pusher_encode_event_frame");
    for size in SIZES {
        let data = format!("{{\"text\":\"{}\"}}", "x".repeat(size - 11));
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_function(format!("{size}B"), |b| {
            b.iter(|| {
                encode_event_frame(black_box("news"), black_box("chat"), black_box(&data), None)
            })
        });
    }
    group.finish();
}

fn fan_out(c: &mut Criterion) {
    let frame = encode_event_frame("news", "chat", "{\"headline\":\"hello\"}", None);
    let mut outboxes: Vec<Frame> = Vec::with_capacity(SUBSCRIBERS);
    let mut group = c.benchmark_group("pusher_fan_out");
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    group.bench_function("clone_into_10k_outboxes", |b| {
        b.iter(|| {
            outboxes.clear();
            outboxes.extend(std::iter::repeat_n(&frame, SUBSCRIBERS).cloned());
            black_box(outboxes.len())
        })
    });
    group.finish();
}

fn client_event(c: &mut Criterion) {
    let app = AppConfig::development(DevCredentials::default(), [1; 32]);
    let apps = Apps::new(vec![app.clone()]).unwrap_or_else(|e| panic!("{e}"));
    let config = PusherConfig::default();
    let target = format!("/app/{}?protocol=7", app.key);
    let request = ConnectRequest::parse(&target).unwrap_or_else(|c| panic!("{c:?}"));
    let socket_id = SocketId { high: 1, low: 1 };
    let mut now = Instant::now();
    let (mut session, _) =
        Session::connect(&apps, &request, socket_id, Load::default(), &config, now)
            .unwrap_or_else(|c| panic!("{c:?}"));
    let sig = auth::sign(&app.secret, &["1.1", ":", "private-room"]);
    let subscribe = format!(
        r#"{{"event":"pusher:subscribe","data":{{"channel":"private-room","auth":"{}:{sig}"}}}}"#,
        app.key
    );
    let mut table = Table::default();
    let mut out = Vec::new();
    session.handle_text(&app, &mut table, &subscribe, now, &mut out);
    let event = r#"{"event":"client-typing","channel":"private-room","data":{"typing":true}}"#;
    c.bench_function("pusher_session_client_event", |b| {
        b.iter(|| {
            // A second per event keeps the 10/s rate limit from refusing.
            now += std::time::Duration::from_secs(1);
            out.clear();
            session.handle_text(&app, &mut table, black_box(event), now, &mut out);
            black_box(out.len())
        })
    });
}

fn api_trigger(c: &mut Criterion) {
    let app = AppConfig::new("1", "key", "secret");
    let apps = Apps::new(vec![app]).unwrap_or_else(|e| panic!("{e}"));
    let body = r#"{"name":"news","channels":["chat"],"data":"{\"headline\":\"hello\"}"}"#;
    let now = 1_700_000_000u64;
    let md5 = ringcast::pusher::api::signature::body_md5(body.as_bytes());
    let query = format!("auth_key=key&auth_timestamp={now}&auth_version=1.0&body_md5={md5}");
    let sig = auth::sign("secret", &["POST", "\n", "/apps/1/events", "\n", &query]);
    let target = format!("/apps/1/events?{query}&auth_signature={sig}");
    c.bench_function("pusher_api_verify_trigger", |b| {
        b.iter(|| {
            api::handle_request(&apps, "POST", black_box(&target), body.as_bytes(), now).is_ok()
        })
    });
}

criterion_group!(benches, encode, fan_out, client_event, api_trigger);
criterion_main!(benches);
