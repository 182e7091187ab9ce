//! Fuzzes `ws::Connection::handle_read`: arbitrary bytes, both roles, small limits, decoded once
//! whole and once under a split the input chooses. It must never panic, and both decodes must
//! agree on the events and the verdict (the decoder works for any split).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::ws::{Connection, Event, Role, WsConfig, WsError};

/// An event copied out of the callback so the two decodes can be compared.
#[derive(Debug, PartialEq, Eq)]
enum Owned {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

fn own(event: Event<'_>) -> Owned {
    match event {
        Event::Text(text) => Owned::Text(text.to_owned()),
        Event::Binary(data) => Owned::Binary(data.to_vec()),
        Event::Ping(data) => Owned::Ping(data.to_vec()),
        Event::Pong(data) => Owned::Pong(data.to_vec()),
        Event::Close(close) => Owned::Close(close.map(|c| (c.code.0, c.reason.to_owned()))),
    }
}

fn decode(
    role: Role,
    cfg: &WsConfig,
    stream: &[u8],
    chunks: &[usize],
) -> (Vec<Owned>, Result<(), WsError>) {
    let mut conn = Connection::new(role);
    let mut events = Vec::new();
    let mut input = stream.to_vec();
    let mut rest = input.as_mut_slice();
    for &n in chunks {
        let (chunk, tail) = rest.split_at_mut(n.min(rest.len()));
        rest = tail;
        if let Err(error) = conn.handle_read(cfg, chunk, &mut |e| events.push(own(e))) {
            // A failed connection stays failed.
            assert_eq!(
                conn.handle_read(cfg, &mut [0x81, 0x80, 0, 0, 0, 0], &mut |_| panic!()),
                Err(error)
            );
            return (events, Err(error));
        }
    }
    (events, Ok(()))
}

fuzz_target!(|data: &[u8]| {
    let [setup, split_seed, stream @ ..] = data else {
        return;
    };
    let role = if setup & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    // Small limits so the size and fragment rules are reached by short inputs.
    let cfg = WsConfig {
        max_frame_size: 1 + usize::from(setup >> 1 & 0x7) * 40,
        max_message_size: 1 + usize::from(setup >> 4 & 0x7) * 60,
        max_fragments: 1 + usize::from(setup >> 7) * 7,
    };
    // Chunk lengths from a tiny generator seeded by the input: 1 to 16 bytes each.
    let mut state = u32::from(*split_seed) | 0x100;
    let mut chunks = Vec::new();
    let mut left = stream.len();
    while left > 0 {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = (1 + (state >> 16) as usize % 16).min(left);
        chunks.push(n);
        left -= n;
    }
    let whole = decode(role, &cfg, stream, &[stream.len()]);
    let split = decode(role, &cfg, stream, &chunks);
    assert_eq!(whole, split);
});
