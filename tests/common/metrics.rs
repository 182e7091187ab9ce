//! The metrics suite's part of the harness: a Pusher HTTP API publish signed with the abuse
//! server's development app, so a test can make the fan-out families move.

use std::io::{Read, Write};
use std::net::SocketAddr;

use ringcast::pusher::api::signature::body_md5;
use ringcast::pusher::auth::sign;

use super::abuse::{APP_ID, APP_KEY, APP_SECRET, connect};

/// Publishes `event` with `data` (a JSON string value) to `channel` through
/// `POST /apps/{id}/events`, signed as the server SDKs sign it; returns the status code.
pub fn publish(addr: SocketAddr, channel: &str, event: &str, data: &str) -> u16 {
    let body = serde_json::json!({ "name": event, "channel": channel, "data": data }).to_string();
    post_signed(addr, &format!("/apps/{APP_ID}/events"), &body)
}

/// Publishes `count` events named `event` to `channel` in one `POST /apps/{id}/batch_events`;
/// returns the status code.
pub fn batch_publish(addr: SocketAddr, channel: &str, event: &str, count: usize) -> u16 {
    let batch: Vec<serde_json::Value> = (0..count)
        .map(|n| serde_json::json!({ "name": event, "channel": channel, "data": n.to_string() }))
        .collect();
    let body = serde_json::json!({ "batch": batch }).to_string();
    post_signed(addr, &format!("/apps/{APP_ID}/batch_events"), &body)
}

/// `POST path` with `body`, signed as the server SDKs sign it; returns the status code.
fn post_signed(addr: SocketAddr, path: &str, body: &str) -> u16 {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let md5 = body_md5(body.as_bytes());
    // Sorted by key, as the signature requires.
    let query =
        format!("auth_key={APP_KEY}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={md5}");
    let signature = sign(APP_SECRET, &[&format!("POST\n{path}\n{query}")]);
    let mut stream = connect(addr);
    let request = format!(
        "POST {path}?{query}&auth_signature={signature} HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send publish");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}
