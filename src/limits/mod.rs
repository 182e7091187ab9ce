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
use std::sync::{Mutex, MutexGuard, PoisonError};
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
    /// Connections one client address may hold at once, counted from accept (so sockets that
    /// never finish a handshake, HTTP API requests and probes count too); 0 disables. Default
    /// 1000 (docs/operations.md).
    pub max_connections_per_ip: u32,
    /// WebSocket handshakes one client address may start per second (the bucket's burst is the
    /// same number); 0 disables. Default 20 (docs/operations.md), which absorbs a page reload
    /// storm from one office NAT while stopping a reconnect loop.
    pub max_handshakes_per_ip: u32,
    /// Connections one client address may hold whose request head has not arrived yet; 0
    /// disables. Default 16: a browser opens a handful at once, a slowloris opens thousands.
    pub max_pending_handshakes_per_ip: u32,
    /// IPv6 clients are counted per network of this prefix length, as one host is routinely
    /// given a whole /64 and could otherwise take a fresh address per connection. Default 64;
    /// 128 counts single addresses.
    pub ipv6_prefix: u8,
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
            max_pending_handshakes_per_ip: 16,
            ipv6_prefix: 64,
            trusted_proxies: Vec::new(),
            exempt: parse_nets("127.0.0.0/8,::1").unwrap_or_default(),
            proxy_protocol: false,
        }
    }
}

/// Why the per-IP table refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpLimitError {
    /// The address holds `max_connections_per_ip` connections (answered 429).
    TooManyConnections,
    /// The address started more than `max_handshakes_per_ip` handshakes this second (429).
    TooManyHandshakes,
    /// The address holds `max_pending_handshakes_per_ip` connections that have not sent their
    /// request head yet (429 at accept).
    TooManyPendingHandshakes,
}

/// What one client address holds.
#[derive(Debug)]
struct IpEntry {
    /// Connections held, from accept (or from the upgrade when the client is known only then).
    connections: u32,
    /// Of those, connections whose request head has not arrived.
    pending: u32,
    /// The handshake-rate bucket.
    handshakes: TokenBucket,
}

impl IpEntry {
    /// Whether the entry holds nothing worth keeping at `tick`: no connection and a bucket
    /// that would be full again.
    fn is_idle(&self, tick: u32, rate: u32) -> bool {
        self.connections == 0 && self.pending == 0 && self.handshakes.is_full_at(tick, rate, rate)
    }
}

/// Stripes of the table: enough that shards rarely meet on one lock.
const STRIPES: usize = 16;

/// Entries a stripe may hold before an insertion sweeps out the idle ones, so an address that
/// left leaves no memory behind for long.
const SWEEP_AT: usize = 4096;

/// One stripe: its entries and when it sweeps next.
#[derive(Debug)]
struct Stripe {
    /// What each client key holds.
    entries: HashMap<IpAddr, IpEntry>,
    /// Entries at which the next sweep runs: twice what the last sweep left (at least
    /// [`SWEEP_AT`]), so a table of many live addresses is swept once per doubling, never on
    /// every handshake, and a sweep's cost is paid for by the insertions before it.
    sweep_at: usize,
}

impl Default for Stripe {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            sweep_at: SWEEP_AT,
        }
    }
}

impl Stripe {
    /// Drops the idle entries once the stripe has doubled since the last sweep.
    fn sweep_when_due(&mut self, tick: u32, rate: u32) {
        if self.entries.len() < self.sweep_at {
            return;
        }
        self.entries.retain(|_, e| !e.is_idle(tick, rate));
        self.sweep_at = (self.entries.len() * 2).max(SWEEP_AT);
    }
}

/// Connections, pending handshakes and handshake buckets per client address, shared by every
/// shard.
#[derive(Debug)]
pub struct IpLimits {
    config: IpLimitsConfig,
    /// Where the buckets' ticks count from, shared by every shard.
    epoch: Instant,
    /// Picks a key's stripe; random per process, so clients cannot aim at one stripe.
    hasher: RandomState,
    stripes: Box<[Mutex<Stripe>]>,
}

impl IpLimits {
    /// An empty table applying `config`.
    pub fn new(config: IpLimitsConfig) -> Self {
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
        let c = &self.config;
        let limited = c.max_connections_per_ip > 0
            || c.max_handshakes_per_ip > 0
            || c.max_pending_handshakes_per_ip > 0;
        limited && !c.exempt.iter().any(|net| net.contains(ip))
    }

    /// The key `ip` is counted under: the address itself for IPv4, its network of
    /// `ipv6_prefix` bits for IPv6.
    fn key_of(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let keep = u32::from(self.config.ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
            v4 => v4,
        }
    }

    /// The stripe holding `key`, locked.
    fn lock_stripe(&self, key: IpAddr) -> MutexGuard<'_, Stripe> {
        let index = self.hasher.hash_one(key) as usize % STRIPES;
        self.stripes[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `op` on the entry of `ip` (created empty when missing) under its stripe's lock,
    /// with the current tick, then drops the entry if `op` left it idle. Sweeps the stripe
    /// first when it is due. `None`: the limits do not apply to `ip`, nothing was touched.
    fn with_entry<T>(
        &self,
        ip: IpAddr,
        now: Instant,
        op: impl FnOnce(&mut IpEntry, u32) -> T,
    ) -> Option<T> {
        if !self.applies_to(ip) {
            return None;
        }
        let tick = tick_of(now, self.epoch);
        let rate = self.config.max_handshakes_per_ip;
        let key = self.key_of(ip);
        let mut stripe = self.lock_stripe(key);
        stripe.sweep_when_due(tick, rate);
        let entry = stripe.entries.entry(key).or_insert_with(|| IpEntry {
            connections: 0,
            pending: 0,
            handshakes: TokenBucket::full(rate, tick),
        });
        let result = op(entry, tick);
        if entry.is_idle(tick, rate) {
            stripe.entries.remove(&key);
        }
        Some(result)
    }

    /// Charges a new connection to `ip` at accept, before its request head: one connection
    /// and one pending handshake. On `Ok` the caller holds both and gives them back with
    /// [`IpLimits::finish_handshake`] and [`IpLimits::release`]. Addresses the limits do not
    /// apply to are always admitted and hold nothing.
    pub fn try_open(&self, ip: IpAddr, now: Instant) -> Result<(), IpLimitError> {
        let (max, max_pending) = (
            self.config.max_connections_per_ip,
            self.config.max_pending_handshakes_per_ip,
        );
        self.with_entry(ip, now, |entry, _| {
            if max > 0 && entry.connections >= max {
                return Err(IpLimitError::TooManyConnections);
            }
            if max_pending > 0 && entry.pending >= max_pending {
                return Err(IpLimitError::TooManyPendingHandshakes);
            }
            entry.connections += 1;
            entry.pending += 1;
            Ok(())
        })
        .unwrap_or(Ok(()))
    }

    /// The request head of a connection charged by [`IpLimits::try_open`] arrived: it no
    /// longer counts as a pending handshake.
    pub fn finish_handshake(&self, ip: IpAddr, now: Instant) {
        self.with_entry(ip, now, |entry, _| {
            entry.pending = entry.pending.saturating_sub(1);
        });
    }

    /// Takes one token of `ip`'s handshake rate for a WebSocket upgrade on a connection it
    /// already holds.
    pub(crate) fn try_upgrade(&self, ip: IpAddr, now: Instant) -> Result<(), IpLimitError> {
        let rate = self.config.max_handshakes_per_ip;
        self.with_entry(ip, now, |entry, tick| {
            if rate > 0 && !entry.handshakes.try_take(tick, 1, rate, rate) {
                return Err(IpLimitError::TooManyHandshakes);
            }
            Ok(())
        })
        .unwrap_or(Ok(()))
    }

    /// Charges an upgrade whose client is known only from its request (`X-Forwarded-For`
    /// behind a trusted proxy): one handshake and one connection. On `Ok` the caller holds a
    /// connection slot and must [`IpLimits::release`] it when the connection ends.
    pub fn try_acquire(&self, ip: IpAddr, now: Instant) -> Result<(), IpLimitError> {
        let rate = self.config.max_handshakes_per_ip;
        let max = self.config.max_connections_per_ip;
        self.with_entry(ip, now, |entry, tick| {
            if rate > 0 && !entry.handshakes.try_take(tick, 1, rate, rate) {
                return Err(IpLimitError::TooManyHandshakes);
            }
            if max > 0 && entry.connections >= max {
                return Err(IpLimitError::TooManyConnections);
            }
            entry.connections += 1;
            Ok(())
        })
        .unwrap_or(Ok(()))
    }

    /// Gives back a connection slot taken by [`IpLimits::try_open`] or
    /// [`IpLimits::try_acquire`].
    pub fn release(&self, ip: IpAddr, now: Instant) {
        self.with_entry(ip, now, |entry, _| {
            entry.connections = entry.connections.saturating_sub(1);
        });
    }

    /// Connections and pending handshakes `ip` holds now.
    #[cfg(test)]
    fn held(&self, ip: IpAddr) -> (u32, u32) {
        let key = self.key_of(ip);
        self.lock_stripe(key)
            .entries
            .get(&key)
            .map_or((0, 0), |e| (e.connections, e.pending))
    }

    /// Entries in the whole table.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entries
                    .len()
            })
            .sum()
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

/// The default least drain rate (docs/operations.md), in bytes per second: 4 KiB/s, 40 KiB
/// over the default write-stall window. A link too poor for that (a tenth of 2G's EDGE) cannot
/// keep up with any stream, while a client that reads a byte now and then to look alive pins
/// its outbox for as long as it likes without it.
pub(crate) const MIN_DRAIN_RATE: u32 = 4 * 1024;

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
            max_pending_handshakes_per_ip: 0,
            exempt: Vec::new(),
            ..IpLimitsConfig::default()
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
        assert_eq!(limits.held(ip).0, 1);
        assert_eq!(limits.try_acquire(ip, now), Ok(()));
        limits.release(ip, now);
        limits.release(ip, now);
        assert_eq!(limits.held(ip).0, 0);
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
        assert_eq!(limits.held(ip).0, 0, "nothing held for exempt addresses");
    }

    #[test]
    fn default_exempts_loopback_only() {
        let limits = IpLimits::new(IpLimitsConfig::default());
        assert!(!limits.applies_to("127.0.0.1".parse().expect("ip")));
        assert!(!limits.applies_to("::1".parse().expect("ip")));
        assert!(limits.applies_to("192.0.2.1".parse().expect("ip")));
    }

    /// The `n`th IPv4 address after `base`.
    fn nth(base: [u8; 4], n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(
            u32::from(std::net::Ipv4Addr::from(base)) + n,
        ))
    }

    #[test]
    fn a_table_of_many_live_addresses_is_swept_once_per_doubling() {
        let limits = IpLimits::new(config(0, 20));
        let t0 = Instant::now();
        // Five thousand live entries per stripe on average: every stripe is past SWEEP_AT.
        let live = 80_000;
        for n in 0..live {
            assert_eq!(limits.try_open(nth([10, 0, 0, 0], n), t0), Ok(()));
        }
        // Visitors that leave at once keep their spent handshake bucket for a while.
        for n in 0..1000 {
            let ip = nth([100, 64, 0, 0], n);
            assert_eq!(limits.try_acquire(ip, t0), Ok(()));
            limits.release(ip, t0);
        }
        let later = t0 + Duration::from_secs(10);
        let ip = nth([100, 65, 0, 0], 0);
        assert_eq!(limits.try_acquire(ip, later), Ok(()));
        limits.release(ip, later);
        assert_eq!(
            limits.len(),
            live as usize + 1001,
            "one more handshake does not sweep a table that has not doubled"
        );
        let fresh = 100_000;
        for n in 1..=fresh {
            let ip = nth([100, 65, 0, 0], n);
            assert_eq!(limits.try_acquire(ip, later), Ok(()));
            limits.release(ip, later);
        }
        assert_eq!(
            limits.len(),
            (live + fresh + 1) as usize,
            "doubling swept the visitors gone idle, and only them"
        );
    }

    #[test]
    fn ipv6_clients_are_counted_per_prefix() {
        let limits = IpLimits::new(config(2, 0));
        let now = Instant::now();
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let other_64: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(limits.try_acquire(one, now), Ok(()));
        assert_eq!(limits.try_acquire(same_64, now), Ok(()));
        assert_eq!(
            limits.try_acquire(same_64, now),
            Err(IpLimitError::TooManyConnections),
            "another address of the same /64 is the same client"
        );
        assert_eq!(limits.try_acquire(other_64, now), Ok(()));
        let per_address = IpLimits::new(IpLimitsConfig {
            ipv6_prefix: 128,
            ..config(1, 0)
        });
        assert_eq!(per_address.try_acquire(one, now), Ok(()));
        assert_eq!(per_address.try_acquire(same_64, now), Ok(()));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        let v4: IpAddr = "192.0.2.1".parse().expect("ip");
        assert_eq!(limits.try_acquire(mapped, now), Ok(()));
        assert_eq!(limits.try_acquire(v4, now), Ok(()));
        assert_eq!(
            limits.try_acquire(v4, now),
            Err(IpLimitError::TooManyConnections),
            "an IPv4-mapped address is its IPv4 address, not a /64"
        );
    }

    #[test]
    fn pending_handshakes_are_capped_until_their_heads_arrive() {
        let limits = IpLimits::new(IpLimitsConfig {
            max_pending_handshakes_per_ip: 2,
            ..config(3, 0)
        });
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let now = Instant::now();
        assert_eq!(limits.try_open(ip, now), Ok(()));
        assert_eq!(limits.try_open(ip, now), Ok(()));
        assert_eq!(
            limits.try_open(ip, now),
            Err(IpLimitError::TooManyPendingHandshakes)
        );
        limits.finish_handshake(ip, now);
        assert_eq!(limits.held(ip), (2, 1));
        assert_eq!(limits.try_open(ip, now), Ok(()));
        assert_eq!(
            limits.try_open(ip, now),
            Err(IpLimitError::TooManyConnections),
            "three connections held, one of them still pending"
        );
        for _ in 0..3 {
            limits.finish_handshake(ip, now);
            limits.release(ip, now);
        }
        assert_eq!(limits.held(ip), (0, 0));
        assert_eq!(
            limits.len(),
            0,
            "an address that left leaves nothing behind"
        );
    }

    #[test]
    fn outbox_policy_parses() {
        assert_eq!("close".parse(), Ok(OutboxPolicy::Close));
        assert_eq!("drop-oldest".parse(), Ok(OutboxPolicy::DropOldest));
        assert!("drop".parse::<OutboxPolicy>().is_err());
    }
}
