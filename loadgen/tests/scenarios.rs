//! Every load-generator scenario on the echo route against a real `ringcast serve` on loopback,
//! at small scale: the figures in the JSON report must add up (every connection opened, every
//! echo answered, storms recovered, refusals explained).

mod common;

use common::{Server, loadgen, n};

#[test]
fn idle_holds_every_connection() {
    let server = Server::start();
    let url = format!("{}/echo", server.url_base);
    let html =
        std::env::temp_dir().join(format!("ringcast-loadgen-idle-{}.html", std::process::id()));
    let html_arg = html.to_string_lossy().into_owned();
    let (code, r) = loadgen(&[
        "idle",
        "--url",
        &url,
        "--conns",
        "300",
        "--rate",
        "2000",
        "--duration",
        "3s",
        "--ping-interval",
        "500ms",
        "--report",
        &html_arg,
    ]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(n(&r, "conns_opened"), 300);
    assert_eq!(n(&r, "conns_failed"), 0);
    assert_eq!(n(&r, "disconnects"), 0);
    assert_eq!(n(&r, "conns_open_at_end"), 300);
    assert!(
        r["latency_us"]["count"].as_u64().unwrap() > 0,
        "heartbeats answered: {r}"
    );
    assert!(r["connect_latency_us"]["p99"].as_u64().unwrap() > 0);
    // The HTML report stands alone: plots inline, nothing fetched.
    let page = std::fs::read_to_string(&html).expect("HTML report written");
    let _ = std::fs::remove_file(&html);
    assert_eq!(page.matches("<svg").count(), 3, "three plots");
    assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("href="));
}

#[test]
fn echo_closed_and_open_loop_answer_everything() {
    let server = Server::start();
    let url = format!("{}/echo", server.url_base);
    for extra in [
        &["--size", "64"][..],
        &["--msg-rate", "50", "--size", "1000", "--binary"][..],
    ] {
        let mut args = vec![
            "echo",
            "--url",
            &url,
            "--conns",
            "20",
            "--duration",
            "2s",
            "--drain",
            "10s",
        ];
        args.extend_from_slice(extra);
        let (code, r) = loadgen(&args);
        assert_eq!(code, 0, "{extra:?}: {r}");
        assert_eq!(n(&r, "conns_opened"), 20);
        let sent = n(&r, "msgs_sent");
        assert!(sent > 20, "{extra:?}: {r}");
        assert_eq!(n(&r, "msgs_received"), sent, "every echo came back: {r}");
        assert_eq!(r["latency_us"]["count"].as_u64(), Some(sent));
    }
}

#[test]
fn churn_cycles_without_failures() {
    let server = Server::start();
    let url = format!("{}/echo", server.url_base);
    let (code, r) = loadgen(&[
        "churn",
        "--url",
        &url,
        "--conns",
        "50",
        "--rate",
        "200",
        "--hold",
        "200ms",
        "--duration",
        "3s",
    ]);
    assert_eq!(code, 0, "{r}");
    assert!(n(&r, "cycles") >= 100, "{r}");
    assert_eq!(n(&r, "conns_failed"), 0);
    assert_eq!(n(&r, "disconnects"), 0);
}

#[test]
fn storm_recovers_every_connection() {
    let server = Server::start();
    let url = format!("{}/echo", server.url_base);
    let (code, r) = loadgen(&[
        "storm",
        "--url",
        &url,
        "--conns",
        "200",
        "--rate",
        "2000",
        "--drop-after",
        "1s",
        "--duration",
        "4s",
    ]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["storm"]["dropped"].as_u64(), Some(200), "{r}");
    assert!(
        r["storm"]["recover_ms"].as_f64().is_some(),
        "recovered: {r}"
    );
    assert!(r["storm"]["peak_reconnects_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(n(&r, "conns_open_at_end"), 200);
    assert_eq!(n(&r, "conns_failed"), 0);
}

#[test]
fn refused_connections_are_explained_and_fail_the_run() {
    // A port nothing listens on: every connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/echo");
    let (code, r) = loadgen(&["idle", "--url", &url, "--conns", "10", "--duration", "1s"]);
    assert_ne!(code, 0);
    assert_eq!(r["failures_by_cause"]["refused"].as_u64(), Some(10), "{r}");
    assert!(
        r["verdict"][1].as_str().unwrap().contains("ECONNREFUSED"),
        "{r}"
    );
}
