//! Outbound sockets for the load generator: a non-blocking connect from a chosen source address
//! (IP_BIND_ADDRESS_NO_PORT, so the port is picked per 4-tuple at connect time rather than per
//! address at bind time), handed to the server's driver (`Driver::adopt_connecting`), which
//! does all reading and writing.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{OwnedFd, RawFd};

use ringcast::driver::sys;

/// Starts a non-blocking TCP connect to `dst`, bound to `src` when given. Returns the socket
/// (connecting or connected) or the errno that stopped it.
pub fn start_connect(src: Option<IpAddr>, dst: SocketAddr) -> Result<OwnedFd, i32> {
    sys::connect_from(src, dst).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
}

/// Makes the socket close with a reset instead of the FIN handshake (SO_LINGER 0): what a
/// dropped network or a killed client looks like to the server.
pub fn set_abortive_close(fd: RawFd) {
    // A socket that refuses SO_LINGER closes gracefully instead, which is still a close.
    let _ = sys::set_abortive_close(fd);
}

/// This process's resident set size in bytes (from /proc/self/statm), for reports.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * sys::page_size())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    /// Waits until `fd` is writable (a non-blocking connect finished) and returns SO_ERROR.
    fn connect_outcome(fd: RawFd) -> i32 {
        let epoll = sys::epoll_create().unwrap();
        sys::epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd,
            libc::EPOLLOUT as u32,
            0,
        )
        .unwrap();
        let mut events = Vec::with_capacity(1);
        sys::epoll_wait(epoll.as_raw_fd(), &mut events, 5000).unwrap();
        assert_eq!(events.len(), 1, "connect did not finish within 5 s");
        sys::socket_error(fd).map_or_else(|e| e.raw_os_error().unwrap_or(libc::EIO), |()| 0)
    }

    /// A connect from a second loopback address reaches a local listener from that address.
    #[test]
    fn connects_from_a_source_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let dst = listener.local_addr().unwrap();
        let sock = start_connect(Some("127.0.0.2".parse().unwrap()), dst).unwrap();
        let (_peer, from) = listener.accept().unwrap();
        assert_eq!(from.ip().to_string(), "127.0.0.2");
        assert_eq!(connect_outcome(sock.as_raw_fd()), 0);
    }

    #[test]
    fn refused_connect_reports_econnrefused() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // The listener is dropped: nothing listens on `port` any more.
        let errno = match start_connect(None, port) {
            Err(e) => e,
            Ok(sock) => connect_outcome(sock.as_raw_fd()),
        };
        assert_eq!(errno, libc::ECONNREFUSED);
    }

    #[test]
    fn resident_memory_is_readable() {
        assert!(resident_bytes().unwrap() > 0);
    }
}
