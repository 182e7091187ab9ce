//! Cost of one connection's pass through the shared per-IP table while 200,000 other client
//! addresses hold a connection each: the table of a server whose clients come from that many
//! addresses. Each iteration charges a fresh address, as a reconnect storm from many clients
//! does: `try_acquire` then `release` (an upgrade charged at once, as behind a trusted proxy),
//! and `try_open`, `finish_handshake`, `release` (a connection charged at accept).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringcast::limits::{IpLimits, IpLimitsConfig};

/// Addresses holding a connection while the handshakes are measured.
const HELD: u32 = 200_000;

/// The `n`th address of a block starting at `base`.
fn addr(base: [u8; 4], n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::from(base)).wrapping_add(n),
    ))
}

fn handshakes(c: &mut Criterion) {
    let limits = IpLimits::new(IpLimitsConfig {
        exempt: Vec::new(),
        ..IpLimitsConfig::default()
    });
    let start = Instant::now();
    for n in 0..HELD {
        limits
            .try_acquire(addr([10, 0, 0, 0], n), start)
            .expect("one connection each");
    }
    let mut group = c.benchmark_group("ip_limits");
    group.throughput(Throughput::Elements(1));
    let mut next = 0u32;
    group.bench_function("try_acquire_release_200k_held", |b| {
        b.iter(|| {
            let ip = addr([100, 64, 0, 0], next % 4_000_000);
            next = next.wrapping_add(1);
            let now = Instant::now();
            let admitted = limits.try_acquire(black_box(ip), now).is_ok();
            if admitted {
                limits.release(ip, now);
            }
            admitted
        })
    });
    group.bench_function("try_open_finish_release_200k_held", |b| {
        b.iter(|| {
            let ip = addr([100, 128, 0, 0], next % 4_000_000);
            next = next.wrapping_add(1);
            let now = Instant::now();
            let admitted = limits.try_open(black_box(ip), now).is_ok();
            if admitted {
                limits.finish_handshake(ip, now);
                limits.release(ip, now);
            }
            admitted
        })
    });
    group.finish();
}

criterion_group!(benches, handshakes);
criterion_main!(benches);
