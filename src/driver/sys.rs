//! Thin, safe wrappers over the few syscalls no maintained safe crate in the tree covers: the
//! eventfd doorbell, rlimits, CPU affinity, and socket reads, gathered sends and shutdowns on
//! raw descriptors the drivers own; and, for the load generator (so that it needs no unsafe
//! code of its own), outbound connects from a chosen source address, the shared monotonic
//! clock, dying with the parent process and the page size. Each wrapper returns `io::Result`
//! and keeps its unsafe block as small as the call.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use bytes::Bytes;

/// Turns a `-1` syscall return into the thread's errno.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Turns a `-1` size return into the thread's errno.
fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// A new non-blocking, close-on-exec eventfd with a zero counter.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers; a non-negative return is a fresh descriptor we own.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Resets an eventfd's counter; a counter already at zero is not an error.
pub fn eventfd_drain(fd: RawFd) {
    let mut value = 0u64;
    // SAFETY: `value` is 8 writable bytes, the size an eventfd read needs; the result is ignored
    // on purpose because EAGAIN (already drained) is the only expected failure.
    let _ = unsafe { libc::read(fd, (&raw mut value).cast(), 8) };
}

/// Rings a shard's doorbell from any thread; cloning shares the eventfd.
#[derive(Debug, Clone)]
pub struct Waker {
    fd: Arc<OwnedFd>,
}

impl Waker {
    /// Wraps the eventfd a driver watches.
    pub fn new(fd: Arc<OwnedFd>) -> Self {
        Self { fd }
    }

    /// Wakes the shard. Failure means the counter is saturated, which already wakes it.
    pub fn wake(&self) {
        let one = 1u64;
        // SAFETY: `one` is 8 readable bytes, the size an eventfd write needs.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8) };
    }
}

/// Soft and hard RLIMIT_NOFILE.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to write into.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Raises the soft RLIMIT_NOFILE to the hard one; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let (soft, hard) = nofile_limit()?;
    if soft < hard {
        let lim = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: `lim` is a valid rlimit to read from.
        check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    }
    Ok(nofile_limit()?.0)
}

/// The CPUs this process may run on, in ascending order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    check(unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) })?;
    let is_set = |cpu: usize| {
        // SAFETY: CPU_ISSET reads one bit of a valid set; `cpu < CPU_SETSIZE` keeps it in bounds.
        unsafe { libc::CPU_ISSET(cpu, &set) }
    };
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| is_set(cpu))
        .collect())
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: CPU_SET writes one bit of a valid set; `cpu < CPU_SETSIZE` keeps it in bounds.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 names the calling thread.
    check(unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) }).map(drop)
}

/// `read(2)` into `buf`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
    check_size(unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

/// Fills `iov` with one entry per frame; the frames must outlive every use of `iov`.
pub fn fill_iovecs(frames: &[Bytes], iov: &mut Vec<libc::iovec>) {
    iov.clear();
    iov.extend(frames.iter().map(|frame| libc::iovec {
        iov_base: frame.as_ptr().cast_mut().cast(),
        iov_len: frame.len(),
    }));
}

/// Gathered `sendmsg(2)` of `frames` with MSG_NOSIGNAL (a closed peer is an EPIPE, never a
/// SIGPIPE). `iov` is scratch space.
pub fn send_frames(fd: RawFd, frames: &[Bytes], iov: &mut Vec<libc::iovec>) -> io::Result<usize> {
    fill_iovecs(frames, iov);
    // SAFETY: msghdr is plain data; all-zero means no address, no control data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    // SAFETY: `msg` points at `iov.len()` iovecs that describe live `Bytes`, borrowed for the
    // duration of the call.
    check_size(unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) })
}

/// `shutdown(2)` both directions. Failure (already shut, not connected) is not interesting to a
/// caller that is about to close.
pub fn shutdown(fd: RawFd) {
    // SAFETY: shutdown takes no pointers.
    let _ = unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// The pending error of a socket (SO_ERROR), which tells how a non-blocking connect ended.
pub fn socket_error(fd: RawFd) -> io::Result<()> {
    let mut err: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are valid for writes and `len` holds the size of `err`.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut err).cast(),
            &mut len,
        )
    })?;
    if err == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(err))
    }
}

/// `accept4(2)` of a non-blocking, close-on-exec socket.
pub fn accept(listener: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: null address pointers are allowed: the peer address is not wanted.
    let fd = check(unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` was just returned by accept4 and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A new close-on-exec epoll instance.
pub fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes no pointers.
    let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `epoll_ctl(2)`: `op` is EPOLL_CTL_ADD, _MOD or _DEL.
pub fn epoll_ctl(
    epfd: RawFd,
    op: libc::c_int,
    fd: RawFd,
    events: u32,
    data: u64,
) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: data };
    // SAFETY: `event` is a valid epoll_event for the duration of the call.
    check(unsafe { libc::epoll_ctl(epfd, op, fd, &mut event) }).map(drop)
}

/// `epoll_wait(2)` into the spare capacity of `events` (cleared first).
pub fn epoll_wait(
    epfd: RawFd,
    events: &mut Vec<libc::epoll_event>,
    timeout_ms: i32,
) -> io::Result<()> {
    events.clear();
    let capacity = events.capacity().min(i32::MAX as usize) as i32;
    // SAFETY: the kernel writes at most `capacity` entries into the vector's spare capacity.
    let n = check(unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), capacity, timeout_ms) })?;
    // SAFETY: the kernel initialised the first `n` (<= capacity) entries.
    unsafe { events.set_len(n as usize) };
    Ok(())
}

/// Nanoseconds on CLOCK_MONOTONIC, which is system-wide on Linux: a timestamp taken in one
/// process means the same instant in another (the load generator's cross-process latency).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call; CLOCK_MONOTONIC
    // always exists on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Asks the kernel to SIGKILL this process when its parent dies (PR_SET_PDEATHSIG), so a
/// child never outlives the process that started it.
pub fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and no pointers.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) }).map(drop)
}

/// Sends `signal` to the process `pid`: the test harness stops and drains the servers it
/// started with it, so the tests need no `unsafe` of their own.
pub fn signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: kill takes a process id and a signal number, no pointers.
    check(unsafe { libc::kill(pid, signal) }).map(drop)
}

/// The size of a memory page in bytes.
pub fn page_size() -> u64 {
    // SAFETY: sysconf takes no pointers.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page).unwrap_or(4096)
}

/// Starts a non-blocking, close-on-exec TCP connect with TCP_NODELAY to `dst`, bound to `src`
/// when given. The socket comes back connecting or connected; how the connect ended is
/// [`socket_error`] once it is writable.
///
/// A source address is bound with IP_BIND_ADDRESS_NO_PORT, so the port is picked per 4-tuple at
/// connect time: otherwise bind() picks it for the source address alone, capping every source
/// address at one port range in all instead of one per destination.
pub fn connect_from(src: Option<IpAddr>, dst: SocketAddr) -> io::Result<OwnedFd> {
    let family = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket takes no pointers.
    let fd = check(unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `fd` was just returned by socket and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    if let Some(src) = src {
        set_int_opt(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
        let (addr, len) = sockaddr_of(SocketAddr::new(src, 0));
        // SAFETY: `addr` holds a valid sockaddr of `len` bytes for the duration of the call.
        check(unsafe { libc::bind(fd, (&raw const addr).cast(), len) })?;
    }
    let (addr, len) = sockaddr_of(dst);
    // SAFETY: `addr` holds a valid sockaddr of `len` bytes for the duration of the call.
    if let Err(e) = check(unsafe { libc::connect(fd, (&raw const addr).cast(), len) })
        && e.raw_os_error() != Some(libc::EINPROGRESS)
    {
        return Err(e);
    }
    Ok(sock)
}

/// Makes a socket close with a reset instead of the FIN handshake (SO_LINGER 0): what a
/// dropped network or a killed client looks like to the peer.
pub fn set_abortive_close(fd: RawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a valid struct of the size given for the duration of the call.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// Sets an integer socket option.
fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int of the size given for the duration of the call.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_never_goes_backwards() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a && a > 0);
    }
}
