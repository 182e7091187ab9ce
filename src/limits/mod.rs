//! Per-client limits: token buckets for rates, the process-wide per-IP table (connections held
//! and handshakes per second), and which address a connection is charged to.
//!
//! Everything here is arithmetic on ticks handed in by the caller, except [`IpLimits`], which
//! shards share and which keeps its own epoch so that shards with different start instants
//! agree on time. The table is touched on handshakes and closes only, never per message, so a
//! striped mutex costs nothing measurable.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

mod net;
mod proxy;

pub(crate) use net::{IpNet, client_ip, parse_nets};
pub use proxy::{ProxyHeader, ProxyHeaderError, parse_proxy_header};

/// Token buckets count in tenths of a token so that a rate of a few per second refills
/// smoothly at the shards' 100 ms tick.
const TENTHS: u64 = 10;

/// The tick [`TokenBucket`]s count time in: the shards' timer tick.
const TICK: Duration = Duration::from_millis(100);

/// The [`TokenBucket`] tick of `now`, counted from `epoch`, for callers that keep time as
/// `Instant`s rather than ticks. Saturates at `u32::MAX` ticks (over thirteen years).
pub(crate) fn tick_of(now: Instant, epoch: Instant) -> u32 {
    let ticks = now.saturating_duration_since(epoch).as_millis() / TICK.as_millis();
    ticks.min(u128::from(u32::MAX)) as u32
}

/// A token bucket in eight bytes: the level and the tick it was last refilled at. The rate and
/// burst are passed in on every call (they come from the configuration), so a connection pays
/// only for the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenBucket {
    /// Tokens held, in tenths.
    level: u32,
    /// Tick (100 ms) of the last refill.
    last: u32,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens at tick `now`.
    pub(crate) fn full(burst: u32, now: u32) -> Self {
        Self {
            level: (u64::from(burst) * TENTHS).min(u64::from(u32::MAX)) as u32,
            last: now,
        }
    }

    /// Refills at `per_second` up to `burst`, then takes `cost` tokens if the bucket holds
    /// them. `false` means the rate was exceeded (nothing is taken). Ticks are 100 ms.
    pub(crate) fn try_take(&mut self, now: u32, cost: u32, per_second: u32, burst: u32) -> bool {
        let cap = u64::from(burst) * TENTHS;
        // A tick is a tenth of a second, so each tick adds `per_second` tenths of a token.
        let refill = u64::from(now.saturating_sub(self.last)) * u64::from(per_second);
        let level = (u64::from(self.level) + refill).min(cap);
        self.last = now.max(self.last);
        let cost = u64::from(cost) * TENTHS;
        let (level, taken) = if level >= cost {
            (level - cost, true)
        } else {
            (level, false)
        };
        self.level = level.min(u64::from(u32::MAX)) as u32;
        taken
    }

    /// Whether the bucket would be full at `now`: it carries no history worth keeping.
    fn is_full_at(&self, now: u32, per_second: u32, burst: u32) -> bool {
        let refill = u64::from(now.saturating_sub(self.last)) * u64::from(per_second);
        u64::from(self.level) + refill >= u64::from(burst) * TENTHS
    }
}

/// The per-IP limits and the addresses they apply to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpLimitsConfig {
    /// Connections one client address may hold at once; 0 disables. Default 1000
    /// (docs/operations.md).
    pub max_connections_per_ip: u32,
    /// WebSocket handshakes one client address may start per second (the bucket's burst is the
    /// same number); 0 disables. Default 20 (docs/operations.md), which absorbs a page reload
    /// storm from one office NAT while stopping a reconnect loop.
    pub max_handshakes_per_ip: u32,
    /// Peers whose `X-Forwarded-For` is believed: the client is the last address in it that is
    /// not itself a trusted proxy. Empty: the header is ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// Client addresses the per-IP limits never apply to. Loopback by default: on one host the
    /// only clients from there are a local proxy or a load generator.
    pub exempt: Vec<IpNet>,
    /// Connections from `trusted_proxies` begin with a PROXY protocol (v1 or v2) header, whose
    /// source address is the client's. Off by default: a header nobody sends would refuse
    /// every connection from those peers.
    pub proxy_protocol: bool,
}

impl Default for IpLimitsConfig {
    fn default() -> Self {
        Self {
            max_connections_per_ip: 1000,
            max_handshakes_per_ip: 20,
            trusted_proxies: Vec::new(),
            exempt: parse_nets("127.0.0.0/8,::1").unwrap_or_default(),
            proxy_protocol: false,
        }
    }
}

/// Why [`IpLimits::try_acquire`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpLimitError {
    /// The address holds `max_connections_per_ip` connections (answered 429).
    TooManyConnections,
    /// The address started more than `max_handshakes_per_ip` handshakes this second (429).
    TooManyHandshakes,
}

#[derive(Debug)]
struct IpEntry {
    connections: u32,
    handshakes: TokenBucket,
}

/// Stripes of the table: enough that shards rarely meet on one lock.
const STRIPES: usize = 16;

/// Entries a stripe may hold before a handshake sweeps out the idle ones, so an address that
/// left leaves no memory behind for long.
const SWEEP_AT: usize = 4096;

/// Connections held and handshake buckets per client address, shared by every shard.
#[derive(Debug)]
pub(crate) struct IpLimits {
    config: IpLimitsConfig,
    epoch: Instant,
    hasher: RandomState,
    stripes: Box<[Mutex<HashMap<IpAddr, IpEntry>>]>,
}

impl IpLimits {
    /// An empty table applying `config`.
    pub(crate) fn new(config: IpLimitsConfig) -> Self {
        Self {
            config,
            epoch: Instant::now(),
            hasher: RandomState::new(),
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
        }
    }

    /// The configuration applied.
    pub(crate) fn config(&self) -> &IpLimitsConfig {
        &self.config
    }

    /// Whether the limits apply to `ip` at all.
    pub(crate) fn applies_to(&self, ip: IpAddr) -> bool {
        let limited =
            self.config.max_connections_per_ip > 0 || self.config.max_handshakes_per_ip > 0;
        limited && !self.config.exempt.iter().any(|net| net.contains(ip))
    }

    fn stripe(&self, ip: IpAddr) -> &Mutex<HashMap<IpAddr, IpEntry>> {
        let index = self.hasher.hash_one(ip) as usize % STRIPES;
        &self.stripes[index]
    }

    /// Charges one handshake and one connection to `ip`. On `Ok` the caller holds a connection
    /// slot and must [`IpLimits::release`] it when the connection ends. Addresses the limits do
    /// not apply to are always admitted and hold nothing (the caller checks
    /// [`IpLimits::applies_to`] to know whether to release).
    pub(crate) fn try_acquire(&self, ip: IpAddr, now: Instant) -> Result<(), IpLimitError> {
        if !self.applies_to(ip) {
            return Ok(());
        }
        let tick = tick_of(now, self.epoch);
        let rate = self.config.max_handshakes_per_ip;
        let mut table = self
            .stripe(ip)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if table.len() >= SWEEP_AT {
            table.retain(|_, e| e.connections > 0 || !e.handshakes.is_full_at(tick, rate, rate));
        }
        let entry = table.entry(ip).or_insert_with(|| IpEntry {
            connections: 0,
            handshakes: TokenBucket::full(rate, tick),
        });
        if rate > 0 && !entry.handshakes.try_take(tick, 1, rate, rate) {
            return Err(IpLimitError::TooManyHandshakes);
        }
        let max = self.config.max_connections_per_ip;
        if max > 0 && entry.connections >= max {
            return Err(IpLimitError::TooManyConnections);
        }
        entry.connections += 1;
        Ok(())
    }

    /// Gives back a connection slot taken by [`IpLimits::try_acquire`].
    pub(crate) fn release(&self, ip: IpAddr, now: Instant) {
        if !self.applies_to(ip) {
            return;
        }
        let tick = tick_of(now, self.epoch);
        let rate = self.config.max_handshakes_per_ip;
        let mut table = self
            .stripe(ip)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = table.get_mut(&ip) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 && entry.handshakes.is_full_at(tick, rate, rate) {
                table.remove(&ip);
            }
        }
    }

    /// Connections `ip` holds now.
    #[cfg(test)]
    pub(crate) fn connections(&self, ip: IpAddr) -> u32 {
        let table = self
            .stripe(ip)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        table.get(&ip).map_or(0, |e| e.connections)
    }
}

/// Per-connection message limits, judged on every complete data message a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRateConfig {
    /// Data messages per second (also the burst); 0 disables. 1000 is far above any chat or
    /// game client and far below what one socket can push at a shard.
    pub messages_per_second: u32,
    /// Payload bytes per second (also the burst); 0 disables. 4 MiB: sixty-four maximum-size
    /// (64 KiB) messages a second.
    pub bytes_per_second: u32,
}

impl Default for MessageRateConfig {
    fn default() -> Self {
        Self {
            messages_per_second: 1000,
            bytes_per_second: 4 << 20,
        }
    }
}

/// What a connection does when its outbox crosses `max_outbox_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutboxPolicy {
    /// Close the connection (echo 1008, Pusher 4100): the default, as a client that misses
    /// messages silently is worse than one that knows to reconnect and resync.
    #[default]
    Close,
    /// For lossy streams (prices, positions) where only the latest matters: drop the oldest
    /// queued messages until the outbox fits, and close only if the write stalls past
    /// `write_stall_timeout`. Applies to messages pushed as lossy (the channel layer decides
    /// which); everything else still closes.
    DropOldest,
}

impl std::str::FromStr for OutboxPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "close" => Ok(Self::Close),
            "drop-oldest" => Ok(Self::DropOldest),
            _ => Err(format!("expected close or drop-oldest, not {text:?}")),
        }
    }
}

/// The default write-stall deadline (docs/operations.md): 10 s, long enough for a mobile
/// client on a bad link, short enough that a dead one does not hold its outbox for minutes.
pub(crate) const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_refills_at_the_rate() {
        let mut bucket = TokenBucket::full(5, 0);
        for _ in 0..5 {
            assert!(bucket.try_take(0, 1, 5, 5));
        }
        assert!(!bucket.try_take(0, 1, 5, 5), "burst spent");
        assert!(!bucket.try_take(1, 1, 5, 5), "half a token after one tick");
        assert!(
            bucket.try_take(2, 1, 5, 5),
            "one token after two ticks at 5/s"
        );
        assert!(bucket.try_take(100, 5, 5, 5), "refill caps at the burst");
        assert!(!bucket.try_take(100, 1, 5, 5));
    }

    #[test]
    fn bucket_on_instants_bursts_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let at = |ms| tick_of(t0 + Duration::from_millis(ms), t0);
        let mut bucket = TokenBucket::full(10, at(0));
        let taken = (0..15)
            .filter(|_| bucket.try_take(at(0), 1, 10, 10))
            .count();
        assert_eq!(taken, 10);
        assert!(!bucket.try_take(at(99), 1, 10, 10));
        assert!(bucket.try_take(at(100), 1, 10, 10));
        assert!(!bucket.try_take(at(150), 1, 10, 10));
        let later = at(60_000);
        let taken = (0..15)
            .filter(|_| bucket.try_take(later, 1, 10, 10))
            .count();
        assert_eq!(taken, 10, "refill is capped at one burst");
    }

    #[test]
    fn bucket_at_zero_rate_refuses_everything() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::full(0, tick_of(t0, t0));
        let later = tick_of(t0 + Duration::from_secs(5), t0);
        assert!(!bucket.try_take(later, 1, 0, 0));
    }

    #[test]
    fn tick_of_counts_whole_ticks_and_never_goes_back() {
        let t0 = Instant::now();
        assert_eq!(tick_of(t0 + Duration::from_millis(250), t0), 2);
        assert_eq!(tick_of(t0, t0 + Duration::from_secs(1)), 0);
    }

    #[test]
    fn bucket_cost_larger_than_the_burst_never_passes() {
        let mut bucket = TokenBucket::full(10, 0);
        assert!(!bucket.try_take(1000, 11, 10, 10));
        assert!(bucket.try_take(1000, 10, 10, 10));
    }

    fn config(conns: u32, handshakes: u32) -> IpLimitsConfig {
        IpLimitsConfig {
            max_connections_per_ip: conns,
            max_handshakes_per_ip: handshakes,
            trusted_proxies: Vec::new(),
            exempt: Vec::new(),
            proxy_protocol: false,
        }
    }

    #[test]
    fn per_ip_connections_are_capped_and_released() {
        let limits = IpLimits::new(config(2, 0));
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        let now = Instant::now();
        assert_eq!(limits.try_acquire(ip, now), Ok(()));
        assert_eq!(limits.try_acquire(ip, now), Ok(()));
        assert_eq!(
            limits.try_acquire(ip, now),
            Err(IpLimitError::TooManyConnections)
        );
        assert_eq!(
            limits.try_acquire(other, now),
            Ok(()),
            "other addresses unaffected"
        );
        limits.release(ip, now);
        assert_eq!(limits.connections(ip), 1);
        assert_eq!(limits.try_acquire(ip, now), Ok(()));
        limits.release(ip, now);
        limits.release(ip, now);
        assert_eq!(limits.connections(ip), 0);
    }

    #[test]
    fn handshake_rate_is_capped_per_second() {
        let limits = IpLimits::new(config(0, 3));
        let ip: IpAddr = "2001:db8::1".parse().expect("ip");
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limits.try_acquire(ip, start), Ok(()));
        }
        assert_eq!(
            limits.try_acquire(ip, start),
            Err(IpLimitError::TooManyHandshakes)
        );
        let later = start + Duration::from_secs(1);
        assert_eq!(
            limits.try_acquire(ip, later),
            Ok(()),
            "refilled a second later"
        );
    }

    #[test]
    fn exempt_addresses_are_never_limited() {
        let limits = IpLimits::new(IpLimitsConfig {
            exempt: parse_nets("10.0.0.0/8").expect("nets"),
            ..config(1, 1)
        });
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(limits.try_acquire(ip, now), Ok(()));
        }
        assert_eq!(
            limits.connections(ip),
            0,
            "nothing held for exempt addresses"
        );
    }

    #[test]
    fn default_exempts_loopback_only() {
        let limits = IpLimits::new(IpLimitsConfig::default());
        assert!(!limits.applies_to("127.0.0.1".parse().expect("ip")));
        assert!(!limits.applies_to("::1".parse().expect("ip")));
        assert!(limits.applies_to("192.0.2.1".parse().expect("ip")));
    }

    #[test]
    fn outbox_policy_parses() {
        assert_eq!("close".parse(), Ok(OutboxPolicy::Close));
        assert_eq!("drop-oldest".parse(), Ok(OutboxPolicy::DropOldest));
        assert!("drop".parse::<OutboxPolicy>().is_err());
    }
}
