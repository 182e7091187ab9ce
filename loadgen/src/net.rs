//! Outbound sockets and readiness for the load generator's event loops: non-blocking connect
//! from a chosen source address (IP_BIND_ADDRESS_NO_PORT, so the port is picked per 4-tuple at
//! connect time rather than per address at bind time), edge-triggered epoll with read and write
//! interest registered once, and plain read/write on a shared scratch buffer.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Readiness reported for one registered socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// The token given at registration.
    pub token: u64,
    /// Bytes (or EOF) may be read.
    pub readable: bool,
    /// The send buffer has room (or a pending connect finished).
    pub writable: bool,
    /// Error or hang-up: the next read or write reports what happened.
    pub hangup: bool,
}

/// One edge-triggered epoll instance.
#[derive(Debug)]
pub struct Poller {
    epfd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

/// Readiness events taken per `epoll_wait`: enough to amortise the syscall, small enough to
/// keep one turn of the loop short (the same order as mio's default of 1024).
const EVENTS_PER_WAIT: usize = 1024;

impl Poller {
    /// A new epoll instance.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall without pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nothing else.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT];
        Ok(Self { epfd, events })
    }

    /// Registers `fd` for edge-triggered read and write readiness under `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call; a bad `fd` is
        // reported as an error, not undefined behaviour.
        let rc = unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Waits up to `timeout_ms` (or not at all when 0) and calls `on_ready` for each event.
    pub fn wait(&mut self, timeout_ms: i32, mut on_ready: impl FnMut(Ready)) -> io::Result<usize> {
        let cap = i32::try_from(self.events.len()).unwrap_or(i32::MAX);
        // SAFETY: `events` has room for `cap` entries and outlives the call.
        let n = unsafe {
            libc::epoll_wait(self.epfd.as_raw_fd(), self.events.as_mut_ptr(), cap, timeout_ms)
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(err) };
        }
        let n = usize::try_from(n).unwrap_or(0);
        for ev in self.events.iter().take(n) {
            let bits = ev.events as i32;
            on_ready(Ready {
                token: ev.u64,
                readable: bits & (libc::EPOLLIN | libc::EPOLLRDHUP) != 0,
                writable: bits & libc::EPOLLOUT != 0,
                hangup: bits & (libc::EPOLLERR | libc::EPOLLHUP) != 0,
            });
        }
        Ok(n)
    }
}

/// `errno` of the last failed call.
fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// Starts a non-blocking TCP connect to `dst`, bound to `src` when given. Returns the socket
/// (connecting or connected) or the errno that stopped it.
pub fn start_connect(src: Option<IpAddr>, dst: SocketAddr) -> Result<OwnedFd, i32> {
    let family = if dst.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain syscall without pointers.
    let fd = unsafe {
        libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
    };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    if let Some(src) = src {
        // Without IP_BIND_ADDRESS_NO_PORT, bind() picks the port for the source address alone,
        // capping every source address at one port range in all instead of one per destination.
        set_int_opt(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        let (addr, len) = sockaddr_of(SocketAddr::new(src, 0));
        // SAFETY: `addr` holds a valid sockaddr of `len` bytes for the duration of the call.
        if unsafe { libc::bind(fd, (&raw const addr).cast(), len) } < 0 {
            return Err(last_errno());
        }
    }
    let (addr, len) = sockaddr_of(dst);
    // SAFETY: `addr` holds a valid sockaddr of `len` bytes for the duration of the call.
    if unsafe { libc::connect(fd, (&raw const addr).cast(), len) } < 0 {
        let errno = last_errno();
        if errno != libc::EINPROGRESS {
            return Err(errno);
        }
    }
    Ok(sock)
}

/// The pending error of a socket (SO_ERROR), 0 when none: how a non-blocking connect reports
/// its outcome.
pub fn take_error(fd: RawFd) -> i32 {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` holds the size of `value`.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&raw mut value).cast(), &mut len)
    };
    if rc < 0 { last_errno() } else { value }
}

/// Reads into `buf`. `Ok(0)` is EOF; `WouldBlock` means drained.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n.unsigned_abs()) }
}

/// Writes from `buf`, never raising SIGPIPE; returns how much the kernel took.
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n.unsigned_abs()) }
}

/// Closes with a reset instead of the FIN handshake (SO_LINGER 0): what a dropped network or a
/// killed client looks like to the server.
pub fn close_abortive(sock: OwnedFd) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `linger` is a valid struct of the size given for the duration of the call.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(sock);
}

fn set_int_opt(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int of the size given for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(fd, level, name, (&raw const value).cast(), size_of::<i32>() as libc::socklen_t)
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// A `sockaddr_storage` holding `addr`, and its length.
fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data for which all-zero bytes are valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            (storage, size_of::<libc::sockaddr_in>() as libc::socklen_t)
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            (storage, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// The calling thread's resident set size in bytes (from /proc/self/statm), for reports.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: plain syscall without pointers.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A connect from a second loopback address reaches a local listener and data flows both
    /// ways through read/write and the poller.
    #[test]
    fn connects_from_a_source_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let dst = listener.local_addr().unwrap();
        let sock = start_connect(Some("127.0.0.2".parse().unwrap()), dst).unwrap();
        let mut poller = Poller::new().unwrap();
        poller.add(sock.as_raw_fd(), 7).unwrap();
        let (mut peer, from) = listener.accept().unwrap();
        assert_eq!(from.ip().to_string(), "127.0.0.2");
        let mut writable = false;
        while !writable {
            poller.wait(1000, |r| writable |= r.token == 7 && r.writable).unwrap();
        }
        assert_eq!(take_error(sock.as_raw_fd()), 0);
        assert_eq!(write(sock.as_raw_fd(), b"hi").unwrap(), 2);
        let mut got = [0u8; 2];
        peer.read_exact(&mut got).unwrap();
        peer.write_all(b"yo").unwrap();
        let mut readable = false;
        while !readable {
            poller.wait(1000, |r| readable |= r.readable).unwrap();
        }
        let mut buf = [0u8; 8];
        assert_eq!(read(sock.as_raw_fd(), &mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"yo");
    }

    #[test]
    fn refused_connect_reports_econnrefused() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        // The listener is dropped: nothing listens on `port` any more.
        let sock = start_connect(None, port);
        let errno = match sock {
            Err(e) => e,
            Ok(sock) => {
                let mut poller = Poller::new().unwrap();
                poller.add(sock.as_raw_fd(), 1).unwrap();
                let mut done = false;
                while !done {
                    poller.wait(1000, |r| done |= r.hangup || r.writable).unwrap();
                }
                take_error(sock.as_raw_fd())
            }
        };
        assert_eq!(errno, libc::ECONNREFUSED);
    }
}
