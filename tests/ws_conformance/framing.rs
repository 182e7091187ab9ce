//! Autobahn 1.x: text and binary frames of every length form, delivered whole.

use crate::support::*;
use ringcast::ws::{OpCode, Role, WsConfig};

/// The payload lengths around the 7-bit, 16-bit and 64-bit length encodings (cases 1.1.1-1.1.6,
/// 1.2.1-1.2.6).
const LENGTHS: [usize; 7] = [0, 125, 126, 127, 128, 65535, 65536];

fn decode_large(wire: &[u8]) -> Outcome {
    // Byte-by-byte decoding of 64 KiB frames under eight splits is slow in debug builds, so the
    // large lengths use the whole read and one coarse random split.
    let cfg = WsConfig::default();
    let whole = decode_chunks(Role::Server, &cfg, wire, &[wire.len()]);
    let third = wire.len() / 3;
    let split = decode_chunks(
        Role::Server,
        &cfg,
        wire,
        &[third, 1, wire.len() - third - 1],
    );
    assert_eq!(whole, split);
    whole
}

#[test]
fn text_of_every_length_form_is_delivered() {
    for len in LENGTHS {
        let payload = "*".repeat(len);
        let wire = client(true, OpCode::Text, payload.as_bytes());
        let outcome = if len > 200 {
            decode_large(&wire)
        } else {
            decode(&wire)
        };
        assert_eq!(outcome, Outcome::ok(vec![text(&payload)]), "len {len}");
    }
}

#[test]
fn binary_of_every_length_form_is_delivered() {
    for len in LENGTHS {
        let payload: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
        let wire = client(true, OpCode::Binary, &payload);
        let outcome = if len > 200 {
            decode_large(&wire)
        } else {
            decode(&wire)
        };
        assert_eq!(outcome, Outcome::ok(vec![binary(&payload)]), "len {len}");
    }
}

#[test]
fn text_64k_in_chunks_of_997_is_delivered() {
    // Case 1.1.8: the frame is written in chunks of 997 bytes.
    let payload = "*".repeat(65535);
    let wire = client(true, OpCode::Text, payload.as_bytes());
    let chunks: Vec<usize> = (0..wire.len())
        .step_by(997)
        .map(|start| (wire.len() - start).min(997))
        .collect();
    let outcome = decode_chunks(Role::Server, &WsConfig::default(), &wire, &chunks);
    assert_eq!(outcome, Outcome::ok(vec![text(&payload)]));
}

#[test]
fn binary_with_all_byte_values_survives_unmasking() {
    // Case 1.2.8 in spirit: every byte value, where a wrong mask offset would show.
    let payload: Vec<u8> = (0..=255).cycle().take(1000).collect();
    let wire = client(true, OpCode::Binary, &payload);
    assert_eq!(decode(&wire), Outcome::ok(vec![binary(&payload)]));
}

#[test]
fn several_frames_in_one_read_are_all_delivered() {
    let wire = wire(&[
        client(true, OpCode::Text, b"one"),
        client(true, OpCode::Binary, b"two"),
        client(true, OpCode::Text, b""),
    ]);
    assert_eq!(
        decode(&wire),
        Outcome::ok(vec![text("one"), binary(b"two"), text("")])
    );
}

#[test]
fn server_frames_decode_unmasked_on_the_client_side() {
    let wire = raw_frame(0x81, b"from server", None);
    let outcome = decode_with(Role::Client, &WsConfig::default(), &wire);
    assert_eq!(outcome, Outcome::ok(vec![text("from server")]));
}

#[test]
fn incomplete_frame_delivers_nothing_yet() {
    let wire = client(true, OpCode::Text, b"hello");
    for cut in 0..wire.len() {
        assert_eq!(decode(&wire[..cut]), Outcome::ok(vec![]), "cut at {cut}");
    }
}
