//! Letting a connection in: the process-wide connection limit taken at accept, the client
//! address of each connection (the TCP peer, or the source a PROXY protocol header names, or
//! the forwarded client behind a trusted proxy) and the per-IP slots charged to it: at accept
//! for a peer that is its own client (a connection and a pending handshake, so half-open
//! sockets, HTTP API requests and probes count), at the PROXY header for a balancer's client,
//! at the upgrade for a client known only from `X-Forwarded-For`. The PROXY header parser
//! itself is [`crate::limits::parse_proxy_header`]; this file decides when a header is
//! expected and what it changes.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::driver::{ConnKey, Driver};
use crate::http::{self, StatusCode};
use crate::limits::{IpLimitError, IpLimits, ProxyHeaderError, parse_proxy_header};
use crate::metrics::{RejectReason, ShardStats};

use super::Core;
use super::conn::Conn;
use super::deadline::ticks;

/// What a connection over `max_connections` is told before its socket closes: 503, as the
/// limits table of `docs/operations.md` documents for new connections at capacity.
const CAPACITY_ANSWER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\
    Connection: close\r\n\r\n";

/// What a connection over a per-IP limit at accept is told before its socket closes.
const PER_IP_ANSWER: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\
    Connection: close\r\n\r\n";

/// Connections held by all shards of the process, against `max_connections`. One relaxed
/// atomic touched on accept and close only, never per message.
#[derive(Debug)]
pub(crate) struct ConnLimit {
    open: AtomicUsize,
    max: usize,
}

impl ConnLimit {
    /// A limit of `max` connections.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            open: AtomicUsize::new(0),
            max,
        }
    }

    /// Takes one connection slot; `false` (nothing taken) at the limit.
    pub(super) fn try_acquire(&self) -> bool {
        if self.open.fetch_add(1, Ordering::Relaxed) < self.max {
            true
        } else {
            self.open.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }

    /// Gives back a slot taken by [`ConnLimit::try_acquire`].
    pub(super) fn release(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections open now, across shards.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// The metric reason of a per-IP refusal.
pub(super) fn reject_reason(error: IpLimitError) -> RejectReason {
    match error {
        IpLimitError::TooManyConnections => RejectReason::PerIp,
        IpLimitError::TooManyHandshakes => RejectReason::Rate,
        IpLimitError::TooManyPendingHandshakes => RejectReason::PendingHandshakes,
    }
}

/// Why the start of a connection from a balancer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProxyRefusal {
    /// The PROXY header is missing or malformed: closed unanswered.
    Header(ProxyHeaderError),
    /// The client it names is over a per-IP limit: 429.
    Limit(IpLimitError),
}

/// What the shard knows of a connection's client address.
#[derive(Debug, Clone, Copy)]
struct Peer {
    /// The TCP peer, or the source a PROXY header gave, or the client the upgrade was
    /// charged to.
    ip: IpAddr,
    /// The connection holds a connection slot in [`IpLimits`] for `ip`.
    held: bool,
    /// It also holds a pending-handshake slot there: its request head has not arrived.
    pending: bool,
    /// A PROXY protocol header is expected before the request.
    expect_proxy: bool,
    /// `ip` is a trusted proxy speaking for its clients, so the upgrade is charged to the
    /// client its `X-Forwarded-For` names. Never set for a PROXY header without a source
    /// (`LOCAL`, `UNKNOWN`): that connection is the balancer's own.
    forwarded: bool,
}

/// The client addresses of a shard's connections and the per-IP slots they hold in the shared
/// [`IpLimits`].
pub(super) struct ClientAddrs {
    ip_limits: Arc<IpLimits>,
    /// Client addresses of connections the per-IP limits may apply to. Exempt peers
    /// (loopback by default) are not entered, so they cost nothing here.
    peers: HashMap<ConnKey, Peer>,
}

impl ClientAddrs {
    /// No connection yet; addresses are charged to `ip_limits`.
    pub(super) fn new(ip_limits: Arc<IpLimits>) -> Self {
        Self {
            ip_limits,
            peers: HashMap::new(),
        }
    }

    /// Whether `ip` is in `trusted_proxies`.
    fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        let trusted = &self.ip_limits.config().trusted_proxies;
        trusted.iter().any(|net| net.contains(ip))
    }

    /// A new connection from `peer`: a peer that is its own client is charged a connection and
    /// a pending handshake now (`Err` when that crosses a per-IP limit; nothing is held then);
    /// a trusted proxy is noted, its client is charged once known.
    pub(super) fn handle_accept(
        &mut self,
        key: ConnKey,
        peer: Option<IpAddr>,
    ) -> Result<(), IpLimitError> {
        let Some(peer) = peer.map(|p| p.to_canonical()) else {
            return Ok(());
        };
        let mut entry = Peer {
            ip: peer,
            held: false,
            pending: false,
            expect_proxy: false,
            forwarded: false,
        };
        if self.is_trusted_proxy(peer) {
            entry.expect_proxy = self.ip_limits.config().proxy_protocol;
            entry.forwarded = !entry.expect_proxy;
        } else if self.ip_limits.applies_to(peer) {
            self.ip_limits.try_open(peer, Instant::now())?;
            (entry.held, entry.pending) = (true, true);
        } else {
            return Ok(());
        }
        self.peers.insert(key, entry);
        Ok(())
    }

    /// Consumes the PROXY protocol header a connection from a trusted proxy starts with, when
    /// one is expected, and charges the client it names: `Ok(n)` says how many bytes of `data`
    /// it took (0 when none is expected). The header must arrive whole in the connection's
    /// first read (load balancers send it in one segment).
    pub(super) fn handle_proxy_header(
        &mut self,
        key: ConnKey,
        data: &[u8],
    ) -> Result<usize, ProxyRefusal> {
        let Some(peer) = self.peers.get(&key).copied().filter(|p| p.expect_proxy) else {
            return Ok(0);
        };
        let header = parse_proxy_header(data).map_err(ProxyRefusal::Header)?;
        let mut entry = Peer {
            expect_proxy: false,
            ..peer
        };
        if let Some(source) = header.source.map(|s| s.to_canonical()) {
            entry.ip = source;
            entry.forwarded = self.is_trusted_proxy(source);
        }
        if !entry.forwarded && self.ip_limits.applies_to(entry.ip) {
            if let Err(error) = self.ip_limits.try_open(entry.ip, Instant::now()) {
                self.peers.insert(key, entry);
                return Err(ProxyRefusal::Limit(error));
            }
            (entry.held, entry.pending) = (true, true);
        }
        self.peers.insert(key, entry);
        Ok(header.len)
    }

    /// The connection's request head arrived: it is no longer a pending handshake.
    pub(super) fn handle_head_complete(&mut self, key: ConnKey) {
        if let Some(peer) = self.peers.get_mut(&key).filter(|p| p.pending) {
            peer.pending = false;
            self.ip_limits.finish_handshake(peer.ip, Instant::now());
        }
    }

    /// Charges the upgrade to its client address: the handshake rate of the address charged
    /// at accept, or, behind a trusted proxy, a connection and the handshake rate of the
    /// forwarded client. `Err(429)` when the address is over a limit, counted in `stats`'
    /// rejects.
    pub(super) fn admit(
        &mut self,
        key: ConnKey,
        req: &http::Request<'_>,
        config: &Config,
        stats: &mut ShardStats,
    ) -> Result<(), StatusCode> {
        let Some(peer) = self.peers.get(&key).copied() else {
            return Ok(());
        };
        let now = Instant::now();
        let charged = if peer.forwarded && !peer.held {
            let forwarded: Vec<&[u8]> = req.header_values("x-forwarded-for").collect();
            let trusted = &config.ip_limits.trusted_proxies;
            let client = crate::limits::client_ip(peer.ip, &forwarded, trusted);
            if !self.ip_limits.applies_to(client) {
                return Ok(());
            }
            self.ip_limits.try_acquire(client, now).map(|()| {
                let entry = Peer {
                    ip: client,
                    held: true,
                    ..peer
                };
                self.peers.insert(key, entry);
            })
        } else if peer.held {
            self.ip_limits.try_upgrade(peer.ip, now)
        } else {
            Ok(())
        };
        charged.map_err(|error| {
            stats.record_reject(reject_reason(error));
            StatusCode::TOO_MANY_REQUESTS
        })
    }

    /// A connection is gone: gives back its per-IP slots.
    pub(super) fn handle_closed(&mut self, key: ConnKey) {
        let Some(peer) = self.peers.remove(&key) else {
            return;
        };
        let now = Instant::now();
        if peer.pending {
            self.ip_limits.finish_handshake(peer.ip, now);
        }
        if peer.held {
            self.ip_limits.release(peer.ip, now);
        }
    }
}

/// Answers a socket refused at accept with `answer` and closes it. Whatever request already
/// arrived is read first (one non-blocking read), so the close sends a FIN behind the answer
/// rather than a reset that could overtake it.
fn refuse(socket: OwnedFd, answer: &[u8]) {
    let socket = socket2::SockRef::from(&socket);
    // The client has not been read yet, but an HTTP client reads an early answer; one short
    // non-blocking send into an empty socket buffer, then close.
    let _ = socket.send_with_flags(answer, libc::MSG_DONTWAIT);
    let mut unread = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    let _ = socket.recv_with_flags(&mut unread, libc::MSG_DONTWAIT);
}

impl Core {
    /// A new socket: refused at drain (closed), at the connection limit (503, closed) or over
    /// a per-IP limit of its peer (429, closed), else registered with the driver under the
    /// handshake deadline.
    pub(super) fn handle_accept(&mut self, driver: &mut impl Driver, socket: OwnedFd) {
        if self.drain_until.is_some() {
            self.observe.stats.record_reject(RejectReason::Draining);
            return;
        }
        if !self.limit.try_acquire() {
            self.observe.stats.record_reject(RejectReason::Capacity);
            refuse(socket, CAPACITY_ANSWER);
            return;
        }
        let peer = socket2::SockRef::from(&socket)
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.ip());
        let Some(key) = self.conns.insert(Conn::new(self.now)) else {
            self.limit.release();
            return;
        };
        if let Err(error) = self.clients.handle_accept(key, peer) {
            self.conns.remove(key);
            self.limit.release();
            self.observe.stats.record_reject(reject_reason(error));
            refuse(socket, PER_IP_ANSWER);
            return;
        }
        // Small frames go out at once: latency matters more than packet count for echo and
        // pub/sub, and every send already gathers whatever is queued.
        let _ = socket2::SockRef::from(&socket).set_tcp_nodelay(true);
        if driver.register(key, socket).is_err() {
            self.clients.handle_closed(key);
            self.conns.remove(key);
            self.limit.release();
            return;
        }
        self.schedule(key);
    }

    /// The listener failed to accept: logged, at most once every ten seconds.
    pub(super) fn handle_accept_error(&mut self, error: &io::Error) {
        // Rate-limited: at EMFILE the driver pauses accepting for a tick, then retries.
        let quiet = self
            .last_accept_warning
            .is_some_and(|at| self.now < at + ticks(Duration::from_secs(10)));
        if !quiet {
            self.last_accept_warning = Some(self.now);
            tracing::warn!(error = %error, open = self.limit.open(), "accept failed; retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_refuses_past_max_and_frees_on_release() {
        let limit = ConnLimit::new(2);
        assert!(limit.try_acquire());
        assert!(limit.try_acquire());
        assert!(!limit.try_acquire());
        limit.release();
        assert!(limit.try_acquire());
        assert_eq!(limit.open(), 2);
    }
}
