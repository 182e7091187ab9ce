//! A shard that panics ends the process: the real binary on each backend, two shards, shard 1
//! told to panic on its first connection through the debug-build fault knob
//! `RINGCAST_TEST_PANIC_SHARD`. Clients connect until one lands on shard 1; the process must
//! then exit non-zero on its own, with one log line naming the shard and the panic, instead of
//! serving on one shard short.
//!
//! The knob exists in debug builds only (release binaries carry no fault injection), so this
//! suite is compiled for debug test builds only.

#![cfg(debug_assertions)]

#[allow(
    dead_code,
    reason = "the shared harness serves several suites; this one uses part of it"
)]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::{Backend, STARTUP_TIMEOUT, parse_listen_port, serve_command};

/// The line the process must log before it exits.
const PANIC_LINE: &str = "shard 1 panicked: fault injected by RINGCAST_TEST_PANIC_SHARD; \
                          exiting so the supervisor restarts the process";

/// Connections tried before giving up on reaching shard 1: SO_REUSEPORT spreads connections
/// by a hash of the client port, so one in two lands there on average.
const ATTEMPTS: usize = 200;

/// How long the process may take to exit once shard 1 has panicked; only bounds a hang.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// The server process with every line it wrote to stdout and stderr.
struct Process {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
}

impl Process {
    /// `ringcast serve` on `backend` with two shards, shard 1 set to panic on its first
    /// connection; returns once both shards listen.
    fn start(backend: Backend) -> Process {
        let mut child = serve_command(backend.flag(), 2)
            .env("RINGCAST_TEST_PANIC_SHARD", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringcast");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ports_tx, ports) = mpsc::channel();
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ];
        for pipe in pipes.into_iter().flatten() {
            let (log, ports_tx) = (Arc::clone(&log), ports_tx.clone());
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    eprintln!("[ringcast] {line}");
                    if let Some(port) = parse_listen_port(&line) {
                        let _ = ports_tx.send(port);
                    }
                    log.lock().expect("log").push(line);
                }
            });
        }
        let mut listening = Vec::new();
        while listening.len() < 2 {
            match ports.recv_timeout(STARTUP_TIMEOUT) {
                Ok(port) => listening.push(port),
                Err(_) => panic!("fewer than 2 listen lines: {:?}", log.lock().expect("log")),
            }
        }
        Process {
            child,
            log,
            addr: SocketAddr::from(([127, 0, 0, 1], listening[0])),
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits up to [`EXIT_TIMEOUT`] for the process to exit.
    fn wait_exit(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether a line containing `text` was logged, waiting briefly for the pipe readers.
    fn logged(&self, text: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self
                .log
                .lock()
                .expect("log")
                .iter()
                .any(|l| l.contains(text))
            {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// One `GET /health` on a fresh connection; whatever came back (nothing once the shard that
/// took it panicked or the process is gone).
fn health(addr: SocketAddr) -> String {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn a_shard_panic_ends_the_process_non_zero_with_one_clear_line(backend: Backend) {
    let mut server = Process::start(backend);
    let mut answered = 0;
    for _ in 0..ATTEMPTS {
        if server.exited().is_some() {
            break;
        }
        if health(server.addr).starts_with("HTTP/1.1 200 ") {
            answered += 1;
        }
    }
    let status = server.wait_exit().unwrap_or_else(|| {
        panic!("still running after {ATTEMPTS} connections: {answered} answered 200")
    });
    assert!(!status.success(), "exited {status}");
    assert_eq!(
        status.code(),
        Some(1),
        "a plain failure exit, not a signal: {status}"
    );
    assert!(
        server.logged(PANIC_LINE),
        "no line {PANIC_LINE:?} in {:?}",
        server.log.lock().expect("log")
    );
}

#[test]
fn uring_a_shard_panic_ends_the_process() {
    if let Some(reason) = common::uring_unavailable() {
        eprintln!("io_uring unavailable on this kernel ({reason}): skipped");
        return;
    }
    a_shard_panic_ends_the_process_non_zero_with_one_clear_line(Backend::Uring);
}

#[test]
fn epoll_a_shard_panic_ends_the_process() {
    a_shard_panic_ends_the_process_non_zero_with_one_clear_line(Backend::Epoll);
}
