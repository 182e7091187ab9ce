//! The Pusher suites' part of the harness: a server started through [`super::serve_command`]
//! with a backend, a shard count and known development-app credentials, killed when dropped, that
//! runs client scripts against itself.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

use super::{STARTUP_TIMEOUT, parse_listen_port, repo_root, serve_command};

/// The development app the scripts sign with.
pub const APP_ID: &str = "424242";
/// Its key.
pub const APP_KEY: &str = "client-test-key";
/// Its secret.
pub const APP_SECRET: &str = "client-test-secret";

/// A running server, killed when dropped.
pub struct Server {
    child: Child,
    /// The port every shard listens on.
    pub port: u16,
}

impl Server {
    /// Starts `ringcast serve` with `backend` (`uring` or `epoll`) and `shards` shards.
    pub fn start(backend: &str, shards: usize) -> Server {
        let mut child = serve_command(backend, shards)
            .env("RINGCAST_APP_ID", APP_ID)
            .env("RINGCAST_APP_KEY", APP_KEY)
            .env("RINGCAST_APP_SECRET", APP_SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringcast");
        let (tx, rx) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[ringcast] {line}");
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut ports = Vec::new();
        while ports.len() < shards {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("ringcast logged {} listen lines", ports.len()));
            if let Some(port) = parse_listen_port(&line) {
                let name = if backend == "uring" {
                    "io_uring"
                } else {
                    "epoll"
                };
                assert!(line.contains(name), "listen line without {name}: {line}");
                ports.push(port);
            }
        }
        assert!(ports.iter().all(|&p| p == ports[0]), "ports {ports:?}");
        Server {
            child,
            port: ports[0],
        }
    }

    /// Runs a client script against the server with its address and the app's credentials in
    /// the environment; returns whether it exited 0 and what it printed.
    pub fn run_client(&self, program: &str, args: &[&str]) -> (bool, String) {
        let output = Command::new(program)
            .args(args)
            .current_dir(repo_root())
            .env("RINGCAST_HOST", "127.0.0.1")
            .env("RINGCAST_PORT", self.port.to_string())
            .env("RINGCAST_APP_ID", APP_ID)
            .env("RINGCAST_APP_KEY", APP_KEY)
            .env("RINGCAST_APP_SECRET", APP_SECRET)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}; run `make test-deps` first"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
