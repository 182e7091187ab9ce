//! The Pusher suites' part of the harness: the shared [`super::Server`] started with known
//! development-app credentials, that runs client scripts against itself.

use std::process::{Command, Stdio};

use super::{Backend, repo_root};

/// The development app the scripts sign with.
pub const APP_ID: &str = "424242";
/// Its key.
pub const APP_KEY: &str = "client-test-key";
/// Its secret.
pub const APP_SECRET: &str = "client-test-secret";

/// A running server with the development app, killed when dropped.
pub struct Server {
    /// Held so the server lives as long as this value.
    _server: super::Server,
    /// The port every shard listens on.
    pub port: u16,
}

impl Server {
    /// Starts `ringcast serve` with `backend` (`uring` or `epoll`) and `shards` shards.
    pub fn start(backend: &str, shards: usize) -> Server {
        let backend = if backend == "uring" {
            Backend::Uring
        } else {
            Backend::Epoll
        };
        let server = super::Server::start_with_env(
            backend,
            shards,
            &[],
            &[
                ("RINGCAST_APP_ID", APP_ID),
                ("RINGCAST_APP_KEY", APP_KEY),
                ("RINGCAST_APP_SECRET", APP_SECRET),
            ],
        );
        Server {
            port: server.addr().port(),
            _server: server,
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
