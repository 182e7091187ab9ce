//! Throughput of the WebSocket codec: decoding (header parse, unmask, delivery) and encoding of
//! binary messages of 32 B, 1 KiB and 64 KiB, masked (client to server) and unmasked (server to
//! client). Each iteration handles a batch of about 64 KiB of messages in one read, the shape of
//! a busy connection's receive buffer; the copy that refreshes the masked input is not timed.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ringcast::ws::{Connection, Event, OpCode, Role, WsConfig, encode_frame, encode_masked_frame};
use std::hint::black_box;

/// Message sizes the issue asks for: a chat message, a typical JSON event, the default limit.
const SIZES: [usize; 3] = [32, 1024, 64 * 1024];

/// Bytes of payload per iteration, so small messages are measured in batches.
const BATCH_BYTES: usize = 64 * 1024;

/// An arbitrary fixed key: the cost of masking does not depend on its value.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn batch_len(size: usize) -> usize {
    (BATCH_BYTES / size).max(1)
}

fn encode_batch(size: usize, masked: bool) -> Vec<u8> {
    let payload = vec![0xA5u8; size];
    let mut out = Vec::new();
    for _ in 0..batch_len(size) {
        if masked {
            encode_masked_frame(&mut out, true, OpCode::Binary, &payload, MASK);
        } else {
            encode_frame(&mut out, true, OpCode::Binary, &payload);
        }
    }
    out
}

fn throughput(size: usize) -> Throughput {
    let elements = batch_len(size) as u64;
    Throughput::ElementsAndBytes {
        elements,
        bytes: elements * size as u64,
    }
}

fn label(size: usize, masked: bool) -> String {
    let size = if size >= 1024 {
        format!("{}KiB", size / 1024)
    } else {
        format!("{size}B")
    };
    format!("{size}/{}", if masked { "masked" } else { "unmasked" })
}

fn decode(c: &mut Criterion) {
    let cfg = WsConfig {
        max_frame_size: 1 << 20,
        max_message_size: 1 << 20,
        max_fragments: 1024,
    };
    let mut group = c.benchmark_group("decode");
    for size in SIZES {
        for masked in [true, false] {
            let frames = encode_batch(size, masked);
            let role = if masked { Role::Server } else { Role::Client };
            let mut conn = Connection::new(role);
            group.throughput(throughput(size));
            group.bench_function(label(size, masked), |b| {
                b.iter_batched_ref(
                    || frames.clone(),
                    |input| {
                        let mut delivered = 0usize;
                        let result = conn.handle_read(&cfg, input, &mut |event| {
                            if let Event::Binary(data) = event {
                                delivered += black_box(data).len();
                            }
                        });
                        assert_eq!(result, Ok(()));
                        delivered
                    },
                    BatchSize::LargeInput,
                );
            });
        }
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for size in SIZES {
        let payload = vec![0xA5u8; size];
        for masked in [true, false] {
            let mut out = Vec::with_capacity(batch_len(size) * (size + 14));
            group.throughput(throughput(size));
            group.bench_function(label(size, masked), |b| {
                b.iter(|| {
                    out.clear();
                    for _ in 0..batch_len(size) {
                        if masked {
                            encode_masked_frame(&mut out, true, OpCode::Binary, &payload, MASK);
                        } else {
                            encode_frame(&mut out, true, OpCode::Binary, &payload);
                        }
                    }
                    black_box(out.len())
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
