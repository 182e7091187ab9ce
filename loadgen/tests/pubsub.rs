//! The pubsub scenario against a real `ringcast serve` on loopback: subscribers over several
//! Pusher channels, events published through the signed HTTP API, every delivery checked.

mod common;

use common::{APP_KEY, Server, loadgen, n};

#[test]
fn pubsub_delivers_every_event_exactly_once() {
    let server = Server::start();
    let url = format!("{}/app/{APP_KEY}?protocol=7", server.url_base);
    let (code, r) = loadgen(&[
        "pubsub",
        "--url",
        &url,
        "--conns",
        "100",
        "--channels",
        "5",
        "--publish-rate",
        "20",
        "--duration",
        "3s",
    ]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(n(&r, "subscribed"), 100, "{r}");
    assert_eq!(n(&r, "late_subscribers"), 0, "{r}");
    assert_eq!(n(&r, "publish_failed"), 0, "{r}");
    let expected = n(&r, "expected");
    assert!(expected >= 100 * 20, "{r}");
    assert_eq!(n(&r, "delivered"), expected, "{r}");
    assert_eq!(
        (n(&r, "lost"), n(&r, "duplicated"), n(&r, "out_of_order")),
        (0, 0, 0),
        "{r}"
    );
    assert_eq!(
        r["latency_us"]["count"].as_u64(),
        Some(expected),
        "every delivery timed: {r}"
    );
}

#[test]
fn pubsub_over_client_events_delivers_to_every_other_subscriber() {
    let server = Server::start();
    let url = format!("{}/app/{APP_KEY}?protocol=7", server.url_base);
    let (code, r) = loadgen(&[
        "pubsub",
        "--url",
        &url,
        "--conns",
        "50",
        "--channels",
        "5",
        "--publish-rate",
        "5",
        "--duration",
        "3s",
        "--publish-via",
        "client",
    ]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(n(&r, "subscribed"), 50, "{r}");
    let expected = n(&r, "expected");
    assert!(expected > 0, "{r}");
    assert_eq!(n(&r, "delivered"), expected, "{r}");
    assert_eq!(
        (n(&r, "lost"), n(&r, "duplicated"), n(&r, "out_of_order")),
        (0, 0, 0),
        "{r}"
    );
}

#[test]
fn pubsub_with_wrong_secret_fails_loudly() {
    let server = Server::start();
    let url = format!("{}/app/{APP_KEY}?protocol=7", server.url_base);
    let (code, r) = loadgen(&[
        "pubsub",
        "--url",
        &url,
        "--conns",
        "10",
        "--publish-rate",
        "10",
        "--duration",
        "2s",
        "--secret",
        "not-the-secret",
    ]);
    assert_ne!(code, 0, "{r}");
    assert!(n(&r, "publish_failed") > 0, "{r}");
    assert_eq!(n(&r, "delivered"), 0, "{r}");
}
