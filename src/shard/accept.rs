//! Letting a connection in: the process-wide connection limit taken at accept, the client
//! address of each connection (the TCP peer, or the source a PROXY protocol header names) and
//! the per-IP slot charged to it when its upgrade arrives. The PROXY header parser itself is
//! [`crate::limits::parse_proxy_header`]; this file decides when a header is expected and what
//! it changes.

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

/// What the shard knows of a connection's client address.
#[derive(Debug, Clone, Copy)]
struct Peer {
    /// The TCP peer, or the source a PROXY header gave, or the client the upgrade was
    /// charged to.
    ip: IpAddr,
    /// The connection holds a slot in [`IpLimits`] for `ip`.
    held: bool,
    /// A PROXY protocol header is expected before the request.
    expect_proxy: bool,
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

    /// Notes the TCP peer of a new connection when the per-IP limits may concern it: a peer
    /// that is limited itself, or a trusted proxy whose forwarded clients may be.
    pub(super) fn handle_accept(&mut self, key: ConnKey, peer: Option<IpAddr>) {
        let Some(peer) = peer.map(|p| p.to_canonical()) else {
            return;
        };
        let config = self.ip_limits.config();
        let proxy = config.trusted_proxies.iter().any(|net| net.contains(peer));
        if proxy || self.ip_limits.applies_to(peer) {
            let expect_proxy = proxy && config.proxy_protocol;
            let entry = Peer {
                ip: peer,
                held: false,
                expect_proxy,
            };
            self.peers.insert(key, entry);
        }
    }

    /// Consumes the PROXY protocol header a connection from a trusted proxy starts with, when
    /// one is expected: `Ok(n)` says how many bytes of `data` it took (0 when none is
    /// expected). The header must arrive whole in the connection's first read (load balancers
    /// send it in one segment); `Err` closes the connection.
    pub(super) fn handle_proxy_header(
        &mut self,
        key: ConnKey,
        data: &[u8],
    ) -> Result<usize, ProxyHeaderError> {
        let Some(peer) = self.peers.get_mut(&key).filter(|p| p.expect_proxy) else {
            return Ok(0);
        };
        let header = parse_proxy_header(data)?;
        peer.expect_proxy = false;
        if let Some(source) = header.source {
            peer.ip = source.to_canonical();
        }
        Ok(header.len)
    }

    /// Charges the upgrade to its client address (the TCP peer or PROXY source, or the
    /// forwarded client when that is a trusted proxy): `Err(429)` when the address is over its
    /// connection or handshake limit, counted in `stats`' rejects.
    pub(super) fn admit(
        &mut self,
        key: ConnKey,
        req: &http::Request<'_>,
        config: &Config,
        stats: &mut ShardStats,
    ) -> Result<(), StatusCode> {
        let Some(peer) = self.peers.get(&key).map(|p| p.ip) else {
            return Ok(());
        };
        let forwarded: Vec<&[u8]> = req.header_values("x-forwarded-for").collect();
        let client = crate::limits::client_ip(peer, &forwarded, &config.ip_limits.trusted_proxies);
        if !self.ip_limits.applies_to(client) {
            return Ok(());
        }
        match self.ip_limits.try_acquire(client, Instant::now()) {
            Ok(()) => {
                let entry = Peer {
                    ip: client,
                    held: true,
                    expect_proxy: false,
                };
                self.peers.insert(key, entry);
                Ok(())
            }
            Err(error) => {
                let reason = match error {
                    IpLimitError::TooManyConnections => RejectReason::PerIp,
                    IpLimitError::TooManyHandshakes => RejectReason::Rate,
                };
                stats.record_reject(reason);
                Err(StatusCode::TOO_MANY_REQUESTS)
            }
        }
    }

    /// A connection is gone: gives back its per-IP slot.
    pub(super) fn handle_closed(&mut self, key: ConnKey) {
        if let Some(Peer { ip, held: true, .. }) = self.peers.remove(&key) {
            self.ip_limits.release(ip, Instant::now());
        }
    }
}

impl Core {
    /// A new socket: refused at drain (closed) or at the connection limit (503, closed), else
    /// registered with the driver under the handshake deadline.
    pub(super) fn handle_accept(&mut self, driver: &mut impl Driver, socket: OwnedFd) {
        if self.drain_until.is_some() {
            self.observe.stats.record_reject(RejectReason::Draining);
            return;
        }
        if !self.limit.try_acquire() {
            self.observe.stats.record_reject(RejectReason::Capacity);
            // The client has not sent its request yet, but an HTTP client reads an early
            // answer; one short non-blocking send into an empty socket buffer, then close.
            let _ = socket2::SockRef::from(&socket)
                .send_with_flags(CAPACITY_ANSWER, libc::MSG_DONTWAIT);
            return;
        }
        let peer = socket2::SockRef::from(&socket)
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.ip());
        // Small frames go out at once: latency matters more than packet count for echo and
        // pub/sub, and every send already gathers whatever is queued.
        let _ = socket2::SockRef::from(&socket).set_tcp_nodelay(true);
        let Some(key) = self.conns.insert(Conn::new(self.now)) else {
            self.limit.release();
            return;
        };
        if driver.register(key, socket).is_err() {
            self.conns.remove(key);
            self.limit.release();
            return;
        }
        self.clients.handle_accept(key, peer);
        self.schedule(key);
    }

    /// The listener failed to accept: logged, at most once every ten seconds.
    pub(super) fn handle_accept_error(&mut self, error: &io::Error) {
        // Rate-limited: at EMFILE the driver retries every tick.
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
