//! Autobahn 9.x: large messages and many messages, and the limits that bound them: frame size
//! (judged from the header), message size, fragments per message.

use crate::support::*;
use ringcast::ws::{OpCode, Role, WsConfig, WsError};

const MIB: usize = 1024 * 1024;

fn big_cfg() -> WsConfig {
    WsConfig {
        max_frame_size: 16 * MIB,
        max_message_size: 16 * MIB,
        max_fragments: 1024,
    }
}

/// Decodes in chunks of `chunk` bytes; large cases skip the byte-by-byte split, which would make
/// debug test runs slow without exercising anything the small cases do not.
fn decode_in_chunks(cfg: &WsConfig, wire: &[u8], chunk: usize) -> Outcome {
    let chunks: Vec<usize> = (0..wire.len())
        .step_by(chunk)
        .map(|s| (wire.len() - s).min(chunk))
        .collect();
    decode_chunks(Role::Server, cfg, wire, &chunks)
}

#[test]
fn large_text_and_binary_messages_are_delivered() {
    // Cases 9.1.1-9.1.6 and 9.2.1-9.2.6: 64 KiB to 16 MiB in one frame.
    for size in [64 * 1024, 256 * 1024, MIB, 4 * MIB, 16 * MIB] {
        let payload = "*".repeat(size);
        let wire = client(true, OpCode::Text, payload.as_bytes());
        assert_eq!(
            decode_in_chunks(&big_cfg(), &wire, wire.len()),
            Outcome::ok(vec![text(&payload)])
        );
        let wire = client(true, OpCode::Binary, payload.as_bytes());
        let outcome = decode_in_chunks(&big_cfg(), &wire, 65536);
        assert_eq!(
            outcome,
            Outcome::ok(vec![binary(payload.as_bytes())]),
            "{size}"
        );
    }
}

#[test]
fn four_mib_message_in_fragments_of_every_size_is_reassembled() {
    // Cases 9.3.x and 9.4.x: 4 MiB fragmented into 64 B .. 4 MiB frames.
    let payload: Vec<u8> = (0..4 * MIB).map(|i| (i % 251) as u8).collect();
    for fragment in [64, 256, 1024, 4096, 16384, 65536, 262144, MIB, 4 * MIB] {
        let frames: Vec<Vec<u8>> = payload
            .chunks(fragment)
            .enumerate()
            .map(|(i, part)| {
                let opcode = if i == 0 {
                    OpCode::Binary
                } else {
                    OpCode::Continuation
                };
                client((i + 1) * fragment >= payload.len(), opcode, part)
            })
            .collect();
        let cfg = WsConfig {
            max_fragments: 65536,
            ..big_cfg()
        };
        let outcome = decode_in_chunks(&cfg, &wire(&frames), 65536);
        assert_eq!(
            outcome,
            Outcome::ok(vec![binary(&payload)]),
            "fragment {fragment}"
        );
    }
}

#[test]
fn many_small_messages_are_all_delivered() {
    // Cases 9.7.x and 9.8.x: 1000 messages in one stream.
    let frames: Vec<Vec<u8>> = (0..1000)
        .map(|i| client(true, OpCode::Text, format!("{i}").as_bytes()))
        .collect();
    let wire = wire(&frames);
    let expect: Vec<Owned> = (0..1000).map(|i| text(&format!("{i}"))).collect();
    for chunk in [1, 7, 4096, wire.len()] {
        assert_eq!(
            decode_in_chunks(&WsConfig::default(), &wire, chunk),
            Outcome::ok(expect.clone())
        );
    }
}

#[test]
fn frame_over_max_frame_size_fails_from_its_header() {
    let cfg = WsConfig {
        max_frame_size: 1000,
        max_message_size: 5000,
        max_fragments: 8,
    };
    let wire = client(true, OpCode::Binary, &[0; 1001]);
    // Only the header is fed: the verdict comes before any payload is buffered.
    let header_len = wire.len() - 1001;
    assert_eq!(
        decode_with(Role::Server, &cfg, &wire[..header_len]),
        Outcome::err(vec![], WsError::FrameTooBig)
    );
    let at_limit = client(true, OpCode::Binary, &[0; 1000]);
    assert_eq!(
        decode_with(Role::Server, &cfg, &at_limit),
        Outcome::ok(vec![binary(&[0; 1000])])
    );
}

#[test]
fn huge_length_in_header_fails_with_1009_without_payload() {
    // A 64-bit length of 2^62 bytes: rejected from the 14 header bytes alone.
    let mut wire = vec![0x82, 0xFF];
    wire.extend_from_slice(&(1u64 << 62).to_be_bytes());
    wire.extend_from_slice(&KEY);
    assert_fails(&wire, vec![], WsError::FrameTooBig, 1009);
}

#[test]
fn message_over_max_message_size_fails_at_the_overflowing_fragment_header() {
    let cfg = WsConfig {
        max_frame_size: 100,
        max_message_size: 250,
        max_fragments: 8,
    };
    let first = wire(&[
        client(false, OpCode::Text, &[b'a'; 100]),
        client(false, OpCode::Continuation, &[b'a'; 100]),
        client(true, OpCode::Ping, b"still fine"),
    ]);
    assert_eq!(
        decode_with(Role::Server, &cfg, &first),
        Outcome::ok(vec![ping(b"still fine")])
    );
    let over = client(true, OpCode::Continuation, &[b'a'; 51]);
    let header_only = wire(&[first.clone(), over[..over.len() - 51].to_vec()]);
    let outcome = decode_with(Role::Server, &cfg, &header_only);
    assert_eq!(
        outcome,
        Outcome::err(vec![ping(b"still fine")], WsError::MessageTooBig)
    );
    let exact = wire(&[first, client(true, OpCode::Continuation, &[b'a'; 50])]);
    let outcome = decode_with(Role::Server, &cfg, &exact);
    assert_eq!(
        outcome,
        Outcome::ok(vec![ping(b"still fine"), text(&"a".repeat(250))])
    );
}

#[test]
fn too_many_fragments_fail_with_1008() {
    let cfg = WsConfig {
        max_fragments: 4,
        ..WsConfig::default()
    };
    let mut frames = vec![client(false, OpCode::Binary, b"1")];
    frames.extend((0..2).map(|_| client(false, OpCode::Continuation, b"2")));
    let four = wire(
        &[
            frames.clone(),
            vec![client(true, OpCode::Continuation, b"4")],
        ]
        .concat(),
    );
    assert_eq!(
        decode_with(Role::Server, &cfg, &four),
        Outcome::ok(vec![binary(b"1224")])
    );
    let five = wire(
        &[
            frames,
            vec![
                client(false, OpCode::Continuation, b"4"),
                client(true, OpCode::Continuation, b"5"),
            ],
        ]
        .concat(),
    );
    let outcome = decode_with(Role::Server, &cfg, &five);
    assert_eq!(outcome, Outcome::err(vec![], WsError::TooManyFragments));
}

#[test]
fn empty_fragment_flood_is_cut_at_max_fragments() {
    // Empty fragments cost nothing to send; without a count they pin a message open forever.
    let cfg = WsConfig::default();
    let mut frames = vec![client(false, OpCode::Text, b"")];
    frames.extend((0..cfg.max_fragments).map(|_| client(false, OpCode::Continuation, b"")));
    let wire = wire(&frames);
    let chunks = [wire.len() / 2, wire.len() - wire.len() / 2];
    let outcome = decode_chunks(Role::Server, &cfg, &wire, &chunks);
    assert_eq!(outcome, Outcome::err(vec![], WsError::TooManyFragments));
}

#[test]
fn control_frames_between_fragments_do_not_count_as_fragments() {
    let cfg = WsConfig {
        max_fragments: 2,
        ..WsConfig::default()
    };
    let wire = wire(&[
        client(false, OpCode::Text, b"a"),
        client(true, OpCode::Ping, b""),
        client(true, OpCode::Ping, b""),
        client(true, OpCode::Continuation, b"b"),
    ]);
    let outcome = decode_with(Role::Server, &cfg, &wire);
    assert_eq!(outcome, Outcome::ok(vec![ping(b""), ping(b""), text("ab")]));
}
