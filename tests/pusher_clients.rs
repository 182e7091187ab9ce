//! The Pusher protocol and HTTP API against the clients users run: pusher-js (npm) connecting,
//! subscribing to public, private, presence and cache channels, sending client events, signing
//! in; the Python `pusher` SDK triggering events and batches and querying channels; pusher-js in
//! headless Chromium receiving an event. Each on both backends, with two shards so that fan-out,
//! presence and queries cross shards. Needs `make test-deps` (node_modules and .venv).

#[allow(
    dead_code,
    reason = "the shared harness serves several suites; this one uses part of it"
)]
mod common;

use common::browser::chromium;
use common::pusher::Server;
use common::{repo_root, uring_unavailable};

/// epoll, then io_uring unless this kernel lacks it (the only reason a half is left out).
fn backends() -> Vec<&'static str> {
    let mut list = vec!["epoll"];
    match uring_unavailable() {
        None => list.push("uring"),
        Some(reason) => eprintln!("io_uring unavailable on this kernel ({reason}): epoll only"),
    }
    list
}

fn assert_client(server: &Server, program: &str, script: &str, done: &str) {
    let script = repo_root().join("tests/clients").join(script);
    let script = script.to_string_lossy();
    let (ok, output) = server.run_client(program, &[script.as_ref()]);
    assert!(ok, "{script} failed:\n{output}");
    assert!(output.contains(done), "{script} did not finish:\n{output}");
    assert!(!output.contains("FAIL"), "{script}:\n{output}");
}

#[test]
fn pusher_js_over_two_shards() {
    for backend in backends() {
        let server = Server::start(backend, 2);
        assert_client(
            &server,
            "node",
            "pusher_js.mjs",
            "all pusher-js checks passed",
        );
    }
}

#[test]
fn python_sdk_over_two_shards() {
    let python = repo_root().join(".venv/bin/python");
    let python = python.to_string_lossy();
    for backend in backends() {
        let server = Server::start(backend, 2);
        assert_client(
            &server,
            &python,
            "pusher_sdk.py",
            "all pusher SDK checks passed",
        );
    }
}

#[test]
fn pusher_js_in_headless_chromium() {
    // browser.mjs reads CHROMIUM; this fails first, naming the package, when it is missing.
    chromium();
    let server = Server::start("epoll", 2);
    assert_client(
        &server,
        "node",
        "browser.mjs",
        "headless Chromium received the event",
    );
}
