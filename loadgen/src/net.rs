//! Outbound sockets for the load generator: a non-blocking connect from a chosen source address
//! (IP_BIND_ADDRESS_NO_PORT, so the port is picked per 4-tuple at connect time rather than per
//! address at bind time), handed to the server's driver (`Driver::adopt_connecting`), which
//! does all reading and writing.

use std::io;
use std::net::{IpAddr, SocketAddr};
#[cfg(test)]
use std::os::fd::AsRawFd;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// `errno` of the last failed call.
fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Starts a non-blocking TCP connect to `dst`, bound to `src` when given. Returns the socket
/// (connecting or connected) or the errno that stopped it.
pub fn start_connect(src: Option<IpAddr>, dst: SocketAddr) -> Result<OwnedFd, i32> {
    let family = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall without pointers.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
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

/// Makes the socket close with a reset instead of the FIN handshake (SO_LINGER 0): what a
/// dropped network or a killed client looks like to the server.
pub fn set_abortive_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a valid struct of the size given for the duration of the call.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn set_int_opt(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int of the size given for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
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
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
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
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            (storage, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        }
    }
}

/// This process's resident set size in bytes (from /proc/self/statm), for reports.
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
    use std::net::TcpListener;

    /// Waits until `fd` is writable (a non-blocking connect finished) and returns SO_ERROR.
    fn connect_outcome(fd: RawFd) -> i32 {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 5000) }, 1);
        let mut value: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are valid for writes and `len` holds the size of `value`.
        unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut value).cast(),
                &mut len,
            )
        };
        value
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
