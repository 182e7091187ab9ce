//! Real-socket tests run against both drivers: accept, receive, send round trips over loopback,
//! an adopted outbound connect, and the io_uring buffer-ring exhaustion path.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::epoll::EpollDriver;
use super::uring::{self, UringConfig};
use super::{ConnKey, Driver, Event};

fn listener() -> (OwnedFd, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.set_nonblocking(true).expect("non-blocking");
    let addr = listener.local_addr().expect("local addr");
    (OwnedFd::from(listener), addr)
}

/// What an echo loop saw, to assert on.
#[derive(Default)]
struct Seen {
    recv_stopped: usize,
    echoed: usize,
    sent: usize,
}

/// Runs an echo server on `driver` until `done` says so or ten seconds pass.
fn echo_loop(driver: &mut impl Driver, mut done: impl FnMut(&Seen) -> bool) -> Seen {
    let mut seen = Seen::default();
    let mut next_slot = 0;
    let mut frames = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(&seen) && Instant::now() < deadline {
        driver.wait(Duration::from_millis(20)).expect("wait");
        while let Some(event) = driver.poll_event() {
            match event {
                Event::Accepted(socket) => {
                    let key = ConnKey {
                        slot: next_slot,
                        generation: 1,
                    };
                    next_slot += 1;
                    driver.register(key, socket).expect("register");
                }
                Event::Recv { key, buf } => {
                    let bytes = Bytes::copy_from_slice(driver.recv_buf(buf));
                    driver.release(buf);
                    seen.echoed += bytes.len();
                    frames.push(bytes);
                    // Tests send little enough that a short send never happens on loopback.
                    driver.send(key, &mut frames);
                }
                Event::RecvStopped { key } => {
                    seen.recv_stopped += 1;
                    driver.resume_recv(key);
                }
                Event::Eof { key } => driver.close(key),
                Event::Sent { result, .. } => seen.sent += result.expect("send"),
                _ => {}
            }
        }
    }
    seen
}

fn round_trip(driver: &mut impl Driver, payload: &[u8]) -> Seen {
    let (listener, addr) = listener();
    driver.listen(listener).expect("listen");
    let payload = payload.to_vec();
    let expected = payload.len();
    let client = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(&payload).expect("write");
        let mut back = vec![0; payload.len()];
        stream.read_exact(&mut back).expect("read echo");
        assert!(back == payload, "echo differs from what was sent");
    });
    let seen = echo_loop(driver, |seen| seen.sent >= expected);
    client.join().expect("client thread");
    seen
}

const SMALL: &[u8] = b"hello over loopback";

#[test]
fn epoll_echoes_over_loopback() {
    let mut driver = EpollDriver::new(16 * 1024).expect("epoll driver");
    assert_eq!(round_trip(&mut driver, SMALL).echoed, SMALL.len());
}

#[test]
fn uring_echoes_over_loopback() {
    let config = UringConfig {
        recv_buffers: 16,
        recv_buffer_size: 4096,
    };
    let Some(mut driver) = uring::test_driver(config) else {
        return;
    };
    assert_eq!(round_trip(&mut driver, SMALL).echoed, SMALL.len());
}

#[test]
fn uring_rearms_after_buffer_ring_runs_dry_without_losing_bytes() {
    // Two 64-byte buffers cannot hold 64 KiB arriving at once: the multishot receive stops with
    // ENOBUFS and must be re-armed; the client checks every byte comes back in order.
    let config = UringConfig {
        recv_buffers: 2,
        recv_buffer_size: 64,
    };
    let Some(mut driver) = uring::test_driver(config) else {
        return;
    };
    let payload: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    let seen = round_trip(&mut driver, &payload);
    assert_eq!(seen.echoed, payload.len());
    assert!(seen.recv_stopped > 0, "the tiny ring never ran dry");
}

#[test]
fn epoll_echoes_more_than_its_scratch_buffer() {
    let mut driver = EpollDriver::new(64).expect("epoll driver");
    let payload: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(round_trip(&mut driver, &payload).echoed, payload.len());
}

fn adopted_connect(driver: &mut impl Driver) {
    let server = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = server.local_addr().expect("addr");
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_nonblocking(true).expect("non-blocking");
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => panic!("connect: {e}"),
    }
    let key = ConnKey {
        slot: 3,
        generation: 9,
    };
    driver
        .adopt_connecting(key, OwnedFd::from(socket))
        .expect("adopt");
    let (mut accepted, _) = server.accept().expect("accept");
    let mut connected = false;
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while received != b"pong" && Instant::now() < deadline {
        driver.wait(Duration::from_millis(20)).expect("wait");
        while let Some(event) = driver.poll_event() {
            match event {
                Event::Connected { key: k, result } => {
                    assert_eq!(k, key);
                    result.expect("connected");
                    connected = true;
                    driver.send(key, &mut vec![Bytes::from_static(b"ping")]);
                }
                Event::Sent { result, .. } => {
                    assert_eq!(result.expect("sent"), 4);
                    let mut buf = [0; 4];
                    accepted.read_exact(&mut buf).expect("server reads");
                    assert_eq!(&buf, b"ping");
                    accepted.write_all(b"pong").expect("server writes");
                }
                Event::Recv { key: k, buf } => {
                    assert_eq!(k, key);
                    received.extend_from_slice(driver.recv_buf(buf));
                    driver.release(buf);
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
    }
    assert!(connected);
    assert_eq!(received, b"pong");
}

#[test]
fn epoll_adopts_a_connecting_socket() {
    adopted_connect(&mut EpollDriver::new(4096).expect("epoll driver"));
}

#[test]
fn uring_adopts_a_connecting_socket() {
    let config = UringConfig {
        recv_buffers: 4,
        recv_buffer_size: 4096,
    };
    let Some(mut driver) = uring::test_driver(config) else {
        return;
    };
    adopted_connect(&mut driver);
}

fn closed_connection_reports_nothing_more(driver: &mut impl Driver) {
    let (a, b) = UnixStream::pair().expect("pair");
    let key = ConnKey {
        slot: 0,
        generation: 1,
    };
    driver.register(key, OwnedFd::from(a)).expect("register");
    driver.close(key);
    // The peer may see EPIPE; what matters is that the driver reports nothing for `key`.
    let _ = (&b).write_all(b"late");
    for _ in 0..3 {
        driver.wait(Duration::from_millis(10)).expect("wait");
        assert!(driver.poll_event().is_none());
    }
}

#[test]
fn epoll_reports_nothing_after_close() {
    closed_connection_reports_nothing_more(&mut EpollDriver::new(4096).expect("epoll driver"));
}

#[test]
fn uring_reports_nothing_after_close() {
    let config = UringConfig {
        recv_buffers: 4,
        recv_buffer_size: 4096,
    };
    let Some(mut driver) = uring::test_driver(config) else {
        return;
    };
    closed_connection_reports_nothing_more(&mut driver);
}

fn stops_accepting(driver: &mut impl Driver) {
    let (listener, addr) = listener();
    driver.listen(listener).expect("listen");
    driver.wait(Duration::from_millis(10)).expect("wait");
    driver.stop_accepting();
    driver.wait(Duration::from_millis(10)).expect("wait");
    while driver.poll_event().is_some() {}
    let refused = TcpStream::connect(addr).map_err(|e| e.kind());
    assert_eq!(refused.err(), Some(std::io::ErrorKind::ConnectionRefused));
}

#[test]
fn epoll_stops_accepting() {
    stops_accepting(&mut EpollDriver::new(4096).expect("epoll driver"));
}

#[test]
fn uring_stops_accepting() {
    let config = UringConfig {
        recv_buffers: 4,
        recv_buffer_size: 4096,
    };
    let Some(mut driver) = uring::test_driver(config) else {
        return;
    };
    stops_accepting(&mut driver);
}

/// `socket` duplicated onto the lowest free descriptor number at or above `at`: the number
/// `accept` would hand a new client once `at` is free, as Linux always picks the lowest.
fn duplicate_at_or_above(socket: &OwnedFd, at: RawFd) -> OwnedFd {
    // SAFETY: F_DUPFD_CLOEXEC only reads its arguments and returns a new descriptor or -1.
    let fd = unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_DUPFD_CLOEXEC, at) };
    assert!(fd >= 0, "fcntl: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just returned by fcntl, so it is open and owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A connection's receive (and, with `send`, a send) are queued, then it is closed in the same
/// loop turn, and a new socket takes the lowest free descriptor number before the driver
/// submits: the queued operations must still act on the closed connection's socket, never on
/// the new one.
fn queued_ops_never_reach_a_reused_descriptor(driver: &mut impl Driver, send: bool) {
    let (ours, _ours_peer) = UnixStream::pair().expect("pair");
    let number = ours.as_raw_fd();
    let key = ConnKey {
        slot: 0,
        generation: 1,
    };
    // The new client's socket exists before the close, so that only the duplicate below can
    // land on the number the close frees.
    let (newcomer, newcomer_peer) = UnixStream::pair().expect("pair");
    driver.register(key, OwnedFd::from(ours)).expect("register");
    if send {
        let frame = Bytes::from_static(b"frames of the closed connection");
        driver.send(key, &mut vec![frame]);
    }
    driver.close(key);
    let newcomer = UnixStream::from(duplicate_at_or_above(&OwnedFd::from(newcomer), number));
    (&newcomer_peer)
        .write_all(b"bytes of the new client")
        .expect("write to the new client");
    for _ in 0..5 {
        driver.wait(Duration::from_millis(10)).expect("wait");
        if let Some(event) = driver.poll_event() {
            panic!("event after close: {event:?}");
        }
    }

    newcomer_peer.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0; 64];
    let stray = (&newcomer_peer).read(&mut buf);
    assert!(
        matches!(&stray, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the new client received {stray:?}: {:?}",
        String::from_utf8_lossy(&buf)
    );
    newcomer.set_nonblocking(true).expect("non-blocking");
    let n = (&newcomer)
        .read(&mut buf)
        .expect("the new client's bytes wait in its socket");
    assert_eq!(&buf[..n], b"bytes of the new client");
}

#[test]
fn epoll_queued_ops_never_reach_a_reused_descriptor() {
    for send in [true, false] {
        let mut driver = EpollDriver::new(4096).expect("epoll driver");
        queued_ops_never_reach_a_reused_descriptor(&mut driver, send);
    }
}

#[test]
fn uring_queued_send_never_reaches_a_reused_descriptor() {
    let config = UringConfig {
        recv_buffers: 4,
        recv_buffer_size: 4096,
    };
    let Some(mut driver) = uring::test_driver(config) else {
        return;
    };
    queued_ops_never_reach_a_reused_descriptor(&mut driver, true);
}

#[test]
fn uring_queued_receive_never_takes_a_reused_descriptors_bytes() {
    let config = UringConfig {
        recv_buffers: 4,
        recv_buffer_size: 4096,
    };
    let Some(mut driver) = uring::test_driver(config) else {
        return;
    };
    queued_ops_never_reach_a_reused_descriptor(&mut driver, false);
}
