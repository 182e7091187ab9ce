//! Shared by the integration suites: a real `ringcast serve` on loopback and a way to run the
//! load generator against it and read its JSON report.
// Each suite uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Id of the server's default app in these tests (server and loadgen read the same variables).
pub const APP_ID: &str = "4242";
/// Key of the default app.
pub const APP_KEY: &str = "loadgen-test-key";
/// Secret of the default app.
pub const APP_SECRET: &str = "loadgen-test-secret";

/// How long the server may take to print its listening line.
const STARTUP: Duration = Duration::from_secs(30);

/// The `ringcast` server binary: `RINGCAST_BIN` when set (the Makefile may set it), otherwise
/// built here with the same cargo into the same target directory.
pub fn ringcast_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("RINGCAST_BIN") {
        return PathBuf::from(bin);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--bin", "ringcast"])
        .current_dir(&workspace)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the ringcast server failed");
    // The loadgen test binary lives in <target>/<profile>/deps/; the server lands in <profile>/.
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_ringcast-loadgen"));
    exe.with_file_name(format!("ringcast{}", std::env::consts::EXE_SUFFIX))
}

/// A running server, killed on drop.
pub struct Server {
    child: Child,
    /// `ws://ADDR` of the server.
    pub url_base: String,
}

impl Server {
    /// Starts a server with the test app's credentials and waits for it to listen. Its
    /// per-connection message and byte rate limits are off: a closed-loop echo on loopback
    /// outruns the defaults, and these tests measure the load generator, not the limits.
    pub fn start() -> Self {
        let mut child = Command::new(ringcast_bin())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--max-messages-per-sec", "0", "--max-bytes-per-sec", "0"])
            .env("RINGCAST_APP_ID", APP_ID)
            .env("RINGCAST_APP_KEY", APP_KEY)
            .env("RINGCAST_APP_SECRET", APP_SECRET)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ringcast serve starts");
        let (tx, rx) = mpsc::channel();
        for out in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = std::time::Instant::now() + STARTUP;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ringcast serve printed no listen= line within {STARTUP:?}")
            });
            if let Some(addr) = listen_addr(&line) {
                return Self {
                    child,
                    url_base: format!("ws://{addr}"),
                };
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a log line carrying `listen=127.0.0.1:PORT`, if any.
fn listen_addr(line: &str) -> Option<String> {
    let at = line.find("listen=")? + "listen=".len();
    let addr: String = line[at..]
        .trim_start_matches('"')
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    let port = addr.rsplit_once(':')?.1;
    (!port.is_empty() && port != "0").then_some(addr)
}

/// Runs the load generator with `args` plus a JSON report; returns its exit code and report.
pub fn loadgen(args: &[&str]) -> (i32, Value) {
    static RUN: AtomicU32 = AtomicU32::new(0);
    let json = std::env::temp_dir().join(format!(
        "ringcast-loadgen-test-{}-{}.json",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast-loadgen"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .env("RINGCAST_APP_ID", APP_ID)
        .env("RINGCAST_APP_KEY", APP_KEY)
        .env("RINGCAST_APP_SECRET", APP_SECRET)
        .output()
        .expect("loadgen runs");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let _ = std::fs::remove_file(&json);
    let report: Value = serde_json::from_str(&text).expect("valid JSON report");
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    (out.status.code().unwrap_or(-1), report)
}

/// A counter of the report; missing counters fail the test.
pub fn n(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {report}"))
}
