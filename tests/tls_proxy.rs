//! TLS in front of ringcast, which has none of its own: the shipped configurations
//! `examples/nginx-tls.conf` and `examples/haproxy-tls.cfg`, each run with its ports, paths and
//! a fresh self-signed certificate swapped in, in front of a real `ringcast serve`. A Python
//! `websockets` client (`tests/clients/wss_pusher.py`) then subscribes over `wss://`, triggers
//! an event over `https://` and receives it, checks that only the public routes are proxied, and
//! that the per-IP limit is charged to the client address the proxy forwards (X-Forwarded-For
//! from nginx, PROXY protocol v2 from HAProxy). On both backends. Needs nginx, HAProxy and
//! openssl (`tests/system-deps.sh`) and `.venv` (`make test-deps`).

#[allow(
    dead_code,
    reason = "the shared harness serves several suites; this one uses part of it"
)]
mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::pusher::{APP_ID, APP_KEY, APP_SECRET};
use common::{Backend, STARTUP_TIMEOUT, Server, repo_root, uring_unavailable};

/// epoll, then io_uring unless this kernel lacks it (the only reason a half is left out).
fn backends() -> Vec<Backend> {
    let mut list = vec![Backend::Epoll];
    match uring_unavailable() {
        None => list.push(Backend::Uring),
        Some(reason) => eprintln!("io_uring unavailable on this kernel ({reason}): epoll only"),
    }
    list
}

/// The path of `tool`, or a failure naming the package to install: a missing proxy fails the
/// suite rather than skipping it.
fn require(tool: &str, package: &str) -> PathBuf {
    let found = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(tool))
        .find(|path| path.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "{tool} is not installed: run `sh tests/system-deps.sh` as root \
             (apt-get install {package})"
        )
    })
}

/// A directory for one proxy's configuration, certificate and logs, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "ringcast-tls-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(dir.join("logs")).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A self-signed certificate for 127.0.0.1 and localhost: `(cert.pem, key.pem)` in `dir`.
fn self_signed_certificate(dir: &TempDir) -> (PathBuf, PathBuf) {
    let openssl = require("openssl", "openssl");
    let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
    let output = Command::new(openssl)
        .args([
            "req",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (cert, key)
}

/// An example configuration with each `(from, to)` replaced; every `from` must occur, so a
/// changed example cannot silently escape the test.
fn template(example: &str, replacements: &[(&str, String)]) -> String {
    let path = repo_root().join("examples").join(example);
    let mut text = std::fs::read_to_string(&path).expect("read example config");
    for (from, to) in replacements {
        assert!(text.contains(from), "{example} no longer contains {from:?}");
        text = text.replace(from, to);
    }
    text
}

/// A running proxy, stopped with SIGTERM (nginx's master then stops its workers) when dropped.
struct Proxy {
    child: Child,
    log: PathBuf,
}

impl Proxy {
    /// Starts `command` and waits until `port` accepts connections.
    fn start(mut command: Command, port: u16, log: PathBuf) -> Proxy {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("proxy log"))
            .spawn()
            .expect("spawn proxy");
        let mut proxy = Proxy { child, log };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("proxy exited with {status}:\n{}", proxy.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "proxy not listening on {port}:\n{}",
                proxy.log_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
        proxy
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = ringcast::driver::sys::signal(self.child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// ringcast with the development app the client signs with, one connection per client
/// address (loopback included, which is exempt by default), and `extra` flags (whom to trust,
/// and how).
fn start_ringcast(backend: Backend, extra: &[&str]) -> Server {
    let mut args = vec!["--max-connections-per-ip", "1", "--limits-exempt", ""];
    args.extend_from_slice(extra);
    Server::start_with_env(
        backend,
        2,
        &args,
        &[
            ("RINGCAST_APP_ID", APP_ID),
            ("RINGCAST_APP_KEY", APP_KEY),
            ("RINGCAST_APP_SECRET", APP_SECRET),
        ],
    )
}

/// Runs `tests/clients/wss_pusher.py` against the proxy on `port`, trusting `ca`.
fn assert_client_through(port: u16, ca: &Path, proxy: &Proxy) {
    let python = repo_root().join(".venv/bin/python");
    let script = repo_root().join("tests/clients/wss_pusher.py");
    let output = Command::new(&python)
        .arg(&script)
        .current_dir(repo_root())
        .env("RINGCAST_HOST", "127.0.0.1")
        .env("RINGCAST_PORT", port.to_string())
        .env("RINGCAST_CA", ca)
        .env("RINGCAST_APP_ID", APP_ID)
        .env("RINGCAST_APP_KEY", APP_KEY)
        .env("RINGCAST_APP_SECRET", APP_SECRET)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; run `make test-deps` first",
                python.display()
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && text.contains("all TLS proxy checks passed"),
        "wss_pusher.py through the proxy failed:\n{text}\nproxy log:\n{}",
        proxy.log_text()
    );
}

#[test]
fn nginx_terminates_tls_for_pusher_clients() {
    let nginx = require("nginx", "nginx");
    for backend in backends() {
        let ringcast = start_ringcast(backend, &["--trusted-proxies", "127.0.0.1"]);
        let dir = TempDir::new("nginx");
        let (cert, key) = self_signed_certificate(&dir);
        let port = free_port();
        let server_file = template(
            "nginx-tls.conf",
            &[
                ("listen 443 ssl", format!("listen 127.0.0.1:{port} ssl")),
                (
                    "server 127.0.0.1:8080",
                    format!("server {}", ringcast.addr()),
                ),
                (
                    "/etc/ssl/ringcast/fullchain.pem",
                    cert.display().to_string(),
                ),
                ("/etc/ssl/ringcast/privkey.pem", key.display().to_string()),
                (
                    "/var/log/nginx/",
                    format!("{}/", dir.path("logs").display()),
                ),
            ],
        );
        std::fs::write(dir.path("ringcast-tls.conf"), server_file).expect("write server file");
        // The main context the server file is included from, as /etc/nginx/nginx.conf would.
        let main = format!(
            "worker_processes 1;\nevents {{ worker_connections 1024; }}\n\
             http {{ include {}; }}\n",
            dir.path("ringcast-tls.conf").display()
        );
        std::fs::write(dir.path("nginx.conf"), main).expect("write nginx.conf");
        let mut command = Command::new(&nginx);
        command
            .arg("-p")
            .arg(&dir.0)
            .arg("-e")
            .arg(dir.path("logs/error.log"))
            .arg("-c")
            .arg(dir.path("nginx.conf"))
            .arg("-g")
            .arg(format!(
                "daemon off; pid {};",
                dir.path("logs/nginx.pid").display()
            ));
        let proxy = Proxy::start(command, port, dir.path("logs/error.log"));
        assert_client_through(port, &cert, &proxy);
    }
}

#[test]
fn haproxy_terminates_tls_for_pusher_clients() {
    let haproxy = require("haproxy", "haproxy");
    for backend in backends() {
        let ringcast = start_ringcast(
            backend,
            &["--trusted-proxies", "127.0.0.1", "--proxy-protocol", "true"],
        );
        let dir = TempDir::new("haproxy");
        let (cert, key) = self_signed_certificate(&dir);
        // HAProxy reads the certificate chain and the key from one PEM.
        let pem = [
            std::fs::read(&cert).expect("read cert"),
            std::fs::read(&key).expect("read key"),
        ]
        .concat();
        std::fs::write(dir.path("ringcast.pem"), pem).expect("write pem");
        let port = free_port();
        let config = template(
            "haproxy-tls.cfg",
            &[
                ("bind :443", format!("bind 127.0.0.1:{port}")),
                (
                    "/etc/haproxy/certs/ringcast.pem",
                    dir.path("ringcast.pem").display().to_string(),
                ),
                (
                    "server ringcast-1 127.0.0.1:8080",
                    format!("server ringcast-1 {}", ringcast.addr()),
                ),
                // Within the open-files limit of a test process.
                ("maxconn 1000000", "maxconn 2000".to_owned()),
            ],
        );
        std::fs::write(dir.path("haproxy.cfg"), config).expect("write haproxy.cfg");
        let mut command = Command::new(&haproxy);
        command.arg("-db").arg("-f").arg(dir.path("haproxy.cfg"));
        let proxy = Proxy::start(command, port, dir.path("logs/haproxy.log"));
        assert_client_through(port, &cert, &proxy);
    }
}
