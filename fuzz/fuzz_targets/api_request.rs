//! Fuzzes the HTTP API behind the request head, `api::handle_request`: the route, the query
//! (parsed, percent-decoded, `info` and `filter_by_prefix`) and the body of `/events` and
//! `/batch_events`. Every request is signed the way the Pusher SDKs sign it, so the fuzzer's
//! bytes get past authentication and into the parsers; the app has small limits so short
//! inputs cross them.
//!
//! It must never panic; a refusal must be one of the documented statuses with a JSON
//! `{"error": ...}` body; a correctly signed request is never refused as unauthorized; and
//! what is accepted must respect the limits and encode to frames whose `data` is the event's.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use ringcast::http::percent_decode;
use ringcast::pusher::api::signature::body_md5;
use ringcast::pusher::api::{ApiRequest, handle_request};
use ringcast::pusher::auth::sign;
use ringcast::pusher::{AppConfig, AppLimits, Apps};
use serde_json::Value;

/// The server's clock for every request.
const NOW: u64 = 1_700_000_000;

/// The signed query string the SDKs build: every pair but `auth_signature`, keys lower-cased,
/// values percent-decoded, sorted by key, joined with `&`.
fn signed_string(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|part| {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let key = percent_decode(key).to_ascii_lowercase();
            (key, percent_decode(value).into_owned())
        })
        .filter(|(key, _)| key != "auth_signature")
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let pairs: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join("&")
}

/// Whether the fuzzer's own query pairs would make the signature fail on purpose or on
/// ambiguity: a repeated key, or an `auth_*` / `body_md5` parameter of its own.
fn tampers_with_auth(extra: &str) -> bool {
    let keys: Vec<String> = extra
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|part| {
            percent_decode(part.split_once('=').map_or(part, |(k, _)| k)).to_ascii_lowercase()
        })
        .collect();
    keys.iter()
        .enumerate()
        .any(|(i, k)| k.starts_with("auth_") || k == "body_md5" || keys[..i].contains(k))
}

/// The one app, with small limits so that short inputs cross them; built once.
static APPS: LazyLock<Apps> = LazyLock::new(|| {
    let app = AppConfig {
        limits: AppLimits {
            max_event_payload_bytes: 64,
            max_channels_per_event: 3,
            max_batch_events: 3,
            max_event_name_bytes: 16,
            ..AppLimits::default()
        },
        ..AppConfig::new("42", "fuzzkey", "fuzzsecret")
    };
    Apps::new(vec![app]).expect("app")
});

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let apps = &*APPS;
    let app = apps.iter().next().expect("one app");
    // Input: the route's tail and the extra query on the first line, the body after it.
    let (head, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let head = String::from_utf8_lossy(head).replace(['?', '#'], "");
    let (tail, extra) = head.split_once(' ').unwrap_or((&head, ""));
    let (method, path) = match knobs % 4 {
        0 => ("POST", "/apps/42/events".to_owned()),
        1 => ("POST", "/apps/42/batch_events".to_owned()),
        2 => ("GET", "/apps/42/channels".to_owned()),
        _ => (
            if knobs & 4 == 0 { "GET" } else { "POST" },
            format!("/apps/42/{tail}"),
        ),
    };
    let mut query = format!("auth_key=fuzzkey&auth_timestamp={NOW}&auth_version=1.0");
    if !body.is_empty() {
        query.push_str(&format!("&body_md5={}", body_md5(body)));
    }
    if !extra.is_empty() {
        query.push('&');
        query.push_str(extra);
    }
    let signature = sign(
        &app.secret,
        &[method, "\n", &path, "\n", &signed_string(&query)],
    );
    let target = format!("{path}?{query}&auth_signature={signature}");

    match handle_request(apps, method, &target, body, NOW) {
        Err(error) => {
            assert!(
                [400, 401, 403, 404, 405, 413].contains(&error.status),
                "{error:?}"
            );
            let answer: Value = serde_json::from_str(&error.body)
                .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {:?}", error.body));
            assert!(answer["error"].is_string(), "{answer}");
            if error.status == 401 {
                assert!(tampers_with_auth(extra), "{target:?} refused: {error:?}");
            }
        }
        Ok(ApiRequest::Events { events, batch, .. }) => {
            assert_eq!(batch, knobs % 4 == 1);
            // `/events` carries one event; a batch up to the limit, none included.
            assert!(if batch {
                events.len() <= app.limits.max_batch_events
            } else {
                events.len() == 1
            });
            for event in &events {
                assert!(!event.name.is_empty());
                assert!(event.name.len() <= app.limits.max_event_name_bytes);
                assert!(event.data.len() <= app.limits.max_event_payload_bytes);
                assert!(
                    !event.channels.is_empty()
                        && event.channels.len() <= app.limits.max_channels_per_event
                );
                for channel in &event.channels {
                    let frame = event.frame(channel);
                    let message: Value = serde_json::from_str(frame.text())
                        .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {:?}", frame.text()));
                    assert_eq!(message["event"], event.name.as_str());
                    assert_eq!(message["channel"], channel.as_str());
                    assert_eq!(message["data"], event.data.as_str());
                }
            }
        }
        Ok(_) => {}
    }
});
