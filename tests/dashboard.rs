//! The `/dashboard` page in headless Chromium (Debian `chromium`), driven by
//! `tests/dashboard/run.py`: once against its scripted fake feed (numbers appear, follow the
//! feed, per-shard rows render, the page reconnects), and once against a real `ringcast serve`
//! while echo traffic runs, asserting that the numbers the page shows change under load.

#[allow(
    dead_code,
    reason = "the shared harness serves several suites; this one uses part of it"
)]
mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::browser::chromium;
use common::{Backend, Client, Server, op, repo_root};

/// Runs `tests/dashboard/run.py` with `args` and asserts it passed.
fn run_dashboard_check(chromium: &Path, args: &[&str]) {
    let root = repo_root();
    let output = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/dashboard/run.py"))
        .arg(format!("--chromium={}", chromium.display()))
        .args(args)
        .output()
        .expect("run tests/dashboard/run.py (make test-deps installs .venv)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "dashboard check failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

#[test]
fn dashboard_follows_a_scripted_feed() {
    let chromium = chromium();
    run_dashboard_check(&chromium, &[]);
}

#[test]
fn dashboard_of_a_real_server_moves_under_load() {
    let chromium = chromium();
    let server = Server::start(Backend::Epoll, 2, &[]);
    let addr = server.addr();
    let stop = Arc::new(AtomicBool::new(false));
    // Echo traffic for the whole observation: the page's message and connection figures must
    // move while it runs.
    let load = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut client = Client::connect(addr);
                for _ in 0..50 {
                    client.assert_echo(op::TEXT, b"dashboard load");
                }
                rounds += 1;
                thread::sleep(Duration::from_millis(20));
            }
            rounds
        })
    };
    let target = format!("--target=http://{}", server.admin_addr());
    run_dashboard_check(&chromium, &[&target, "--observe=6"]);
    stop.store(true, Ordering::Relaxed);
    let rounds = load.join().expect("load thread");
    assert!(rounds > 0, "no echo load ran during the observation");
}
