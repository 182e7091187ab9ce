//! Property: random messages (random sizes across the three length forms, random fragmentation
//! with pings and pongs between fragments) go through the encoder and come out of the decoder
//! unchanged, whatever the split of the byte stream, for both roles.

use crate::support::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use ringcast::ws::{OpCode, Role, WsConfig, encode_frame, encode_masked_frame};

#[derive(Debug, Clone)]
enum Control {
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Item {
    /// A data message cut at `cuts` into fragments, with control frames between fragments.
    Message {
        text: Option<String>,
        payload: Vec<u8>,
        cuts: Vec<Index>,
        between: Vec<Option<Control>>,
    },
    Control(Control),
}

fn payload_len() -> impl Strategy<Value = usize> {
    // Mostly small, often around the 125/126 boundary, sometimes around 65535/65536.
    prop_oneof![6 => 0..200usize, 2 => 120..140usize, 1 => 65530..65542usize]
}

fn control() -> impl Strategy<Value = Control> {
    prop_oneof![
        vec(any::<u8>(), 0..=125).prop_map(Control::Ping),
        vec(any::<u8>(), 0..=125).prop_map(Control::Pong),
    ]
}

fn item() -> impl Strategy<Value = Item> {
    let text = prop_oneof![vec(any::<char>(), 0..150), vec(any::<char>(), 16300..16400)]
        .prop_map(|chars| Some(chars.into_iter().collect::<String>()));
    let data = prop_oneof![text, Just(None)];
    let message = (
        data,
        payload_len(),
        any::<u8>(),
        vec(any::<Index>(), 0..5),
        vec(proptest::option::of(control()), 5),
    )
        .prop_map(|(text, len, fill, cuts, between)| {
            let payload = match &text {
                Some(text) => text.as_bytes().to_vec(),
                None => (0..len).map(|i| fill.wrapping_add(i as u8)).collect(),
            };
            Item::Message {
                text,
                payload,
                cuts,
                between,
            }
        });
    prop_oneof![4 => message, 1 => control().prop_map(Item::Control)]
}

/// Encodes frames as `role`'s peer would, and lists the events the decoder must produce.
struct Peer {
    role: Role,
    rng: Xorshift,
    wire: Vec<u8>,
    expect: Vec<Owned>,
}

impl Peer {
    fn frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) {
        match self.role {
            Role::Server => {
                let mask = (self.rng.next() as u32).to_ne_bytes();
                encode_masked_frame(&mut self.wire, fin, opcode, payload, mask);
            }
            Role::Client => encode_frame(&mut self.wire, fin, opcode, payload),
        }
    }

    fn control(&mut self, control: &Control) {
        match control {
            Control::Ping(data) => {
                self.frame(true, OpCode::Ping, data);
                self.expect.push(ping(data));
            }
            Control::Pong(data) => {
                self.frame(true, OpCode::Pong, data);
                self.expect.push(pong(data));
            }
        }
    }

    fn item(&mut self, item: &Item) {
        let Item::Message {
            text: body,
            payload,
            cuts,
            between,
        } = item
        else {
            if let Item::Control(control) = item {
                self.control(control);
            }
            return;
        };
        let mut ends: Vec<usize> = cuts.iter().map(|c| c.index(payload.len() + 1)).collect();
        ends.sort_unstable();
        ends.push(payload.len());
        let mut start = 0;
        for (i, &end) in ends.iter().enumerate() {
            let opcode = match (i, body) {
                (0, Some(_)) => OpCode::Text,
                (0, None) => OpCode::Binary,
                _ => OpCode::Continuation,
            };
            let fin = i + 1 == ends.len();
            self.frame(fin, opcode, &payload[start..end]);
            start = end;
            if let (false, Some(Some(control))) = (fin, between.get(i)) {
                self.control(control);
            }
        }
        self.expect.push(match body {
            Some(body) => text(body),
            None => binary(payload),
        });
    }
}

fn random_chunks(len: usize, max_chunk: usize, rng: &mut Xorshift) -> Vec<usize> {
    let mut chunks = Vec::new();
    let mut left = len;
    while left > 0 {
        let n = (1 + rng.below(max_chunk)).min(left);
        chunks.push(n);
        left -= n;
    }
    chunks
}

fn round_trip(
    items: &[Item],
    role: Role,
    seed: u64,
    max_chunk: usize,
) -> Result<(), TestCaseError> {
    let cfg = WsConfig {
        max_frame_size: 1 << 20,
        max_message_size: 1 << 20,
        max_fragments: 1024,
    };
    let mut peer = Peer {
        role,
        rng: Xorshift::new(seed),
        wire: Vec::new(),
        expect: Vec::new(),
    };
    for item in items {
        peer.item(item);
    }
    let chunks = random_chunks(peer.wire.len(), max_chunk, &mut peer.rng);
    let (wire, expect) = (peer.wire, peer.expect);
    let outcome = decode_chunks(role, &cfg, &wire, &chunks);
    prop_assert_eq!(outcome, Outcome::ok(expect));
    Ok(())
}

fn max_chunk() -> impl Strategy<Value = usize> {
    prop_oneof![1..8usize, 8..2000usize, Just(usize::MAX)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn client_frames_round_trip_through_the_server_decoder(
        items in vec(item(), 1..6), seed in any::<u64>(), max_chunk in max_chunk(),
    ) {
        round_trip(&items, Role::Server, seed, max_chunk)?;
    }

    #[test]
    fn server_frames_round_trip_through_the_client_decoder(
        items in vec(item(), 1..6), seed in any::<u64>(), max_chunk in max_chunk(),
    ) {
        round_trip(&items, Role::Client, seed, max_chunk)?;
    }
}

/// Small limits so short random inputs reach the size and fragment rules.
fn small_limits() -> impl Strategy<Value = WsConfig> {
    (1..200usize, 1..400usize, 1..10usize).prop_map(|(frame, message, fragments)| WsConfig {
        max_frame_size: frame,
        max_message_size: message,
        max_fragments: fragments,
    })
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Server), Just(Role::Client)]
}

/// Well-formed frames from `role`'s peer with a few bytes flipped, so decoding gets past the
/// first header; or plain random bytes.
fn stream() -> impl Strategy<Value = (Role, Vec<u8>)> {
    let mangled = (
        role(),
        vec(item(), 1..4),
        vec((any::<Index>(), any::<u8>()), 0..4),
    )
        .prop_map(|(role, items, flips)| {
            let mut peer = Peer {
                role,
                rng: Xorshift::new(7),
                wire: Vec::new(),
                expect: Vec::new(),
            };
            for item in &items {
                peer.item(item);
            }
            let mut wire = peer.wire;
            if !wire.is_empty() {
                for (at, byte) in flips {
                    let at = at.index(wire.len());
                    wire[at] ^= byte;
                }
            }
            (role, wire)
        });
    prop_oneof![(role(), vec(any::<u8>(), 0..600)), mangled]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_decode_the_same_under_any_split(
        (role, stream) in stream(),
        cfg in small_limits(),
        seed in any::<u64>(),
        max_chunk in 1..20usize,
    ) {
        // The fuzz target's oracle, run in CI: never a panic, and the same events and verdict
        // whether the bytes come in one read or many.
        let whole = decode_chunks(role, &cfg, &stream, &[stream.len()]);
        let chunks = random_chunks(stream.len(), max_chunk, &mut Xorshift::new(seed));
        prop_assert_eq!(decode_chunks(role, &cfg, &stream, &chunks), whole);
    }
}
