//! Autobahn 10.x and the rules no other group covers: masking direction, length encoding, the
//! zero-copy and sticky-error contracts of `Connection::handle_read`.

use crate::support::*;
use ringcast::ws::{Connection, Event, OpCode, Role, WsConfig, WsError};

#[test]
fn text_64k_in_fragments_of_1300_is_reassembled() {
    // Case 10.1.1: a 64 KiB message auto-fragmented into 1300-byte frames.
    let payload = "*".repeat(65536);
    let parts: Vec<&[u8]> = payload.as_bytes().chunks(1300).collect();
    let frames: Vec<Vec<u8>> = parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let opcode = if i == 0 {
                OpCode::Text
            } else {
                OpCode::Continuation
            };
            client(i + 1 == parts.len(), opcode, part)
        })
        .collect();
    let wire = wire(&frames);
    for chunk in [1300, 4096, wire.len()] {
        let chunks: Vec<usize> = (0..wire.len())
            .step_by(chunk)
            .map(|s| (wire.len() - s).min(chunk))
            .collect();
        let outcome = decode_chunks(Role::Server, &WsConfig::default(), &wire, &chunks);
        assert_eq!(outcome, Outcome::ok(vec![text(&payload)]), "chunk {chunk}");
    }
}

#[test]
fn unmasked_client_frame_fails_with_1002() {
    assert_fails(
        &raw_frame(0x81, b"hello", None),
        vec![],
        WsError::UnmaskedFrame,
        1002,
    );
    assert_fails(
        &raw_frame(0x89, b"", None),
        vec![],
        WsError::UnmaskedFrame,
        1002,
    );
}

#[test]
fn masked_server_frame_fails_on_the_client_side() {
    let outcome = decode_with(
        Role::Client,
        &WsConfig::default(),
        &raw_frame(0x81, b"hi", Some(KEY)),
    );
    assert_eq!(outcome, Outcome::err(vec![], WsError::MaskedFrame));
}

#[test]
fn length_with_top_bit_set_fails_with_1002() {
    let mut wire = vec![0x82, 0xFF];
    wire.extend_from_slice(&(1u64 << 63 | 5).to_be_bytes());
    wire.extend_from_slice(&KEY);
    wire.extend_from_slice(b"hello");
    assert_fails(&wire, vec![], WsError::LengthTopBitSet, 1002);
}

#[test]
fn non_minimal_length_encoding_is_accepted() {
    // RFC 6455 5.2 asks senders for the shortest form but names no receiver duty; we accept
    // (docs/protocol.md).
    let mut wire = vec![0x82, 0xFE, 0x00, 0x03];
    wire.extend_from_slice(&KEY);
    wire.extend(b"abc".iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
    assert_eq!(decode(&wire), Outcome::ok(vec![binary(b"abc")]));
}

#[test]
fn whole_frame_in_one_read_is_delivered_without_copy() {
    let cfg = WsConfig::default();
    let mut conn = Connection::new(Role::Server);
    let mut input = wire(&[
        client(true, OpCode::Text, b"hello"),
        client(true, OpCode::Binary, b"world"),
    ]);
    let range = input.as_ptr_range();
    let mut borrowed = 0;
    conn.handle_read(&cfg, &mut input, &mut |event| {
        let data = match event {
            Event::Text(text) => text.as_bytes(),
            Event::Binary(data) => data,
            other => panic!("unexpected {other:?}"),
        };
        assert!(
            range.contains(&data.as_ptr()),
            "payload must be borrowed from the input"
        );
        borrowed += 1;
    })
    .unwrap();
    assert_eq!(borrowed, 2);
}

#[test]
fn input_is_unmasked_in_place() {
    let cfg = WsConfig::default();
    let mut conn = Connection::new(Role::Server);
    let mut input = client(true, OpCode::Binary, b"plain");
    conn.handle_read(&cfg, &mut input, &mut |_| {}).unwrap();
    assert_eq!(&input[6..], b"plain");
}

#[test]
fn failed_connection_stays_failed() {
    let cfg = WsConfig::default();
    let mut conn = Connection::new(Role::Server);
    let mut bad = raw_frame(0x81, b"x", None);
    assert_eq!(
        conn.handle_read(&cfg, &mut bad, &mut |_| {}),
        Err(WsError::UnmaskedFrame)
    );
    for _ in 0..3 {
        let mut good = client(true, OpCode::Text, b"fine");
        let mut delivered = 0;
        assert_eq!(
            conn.handle_read(&cfg, &mut good, &mut |_| delivered += 1),
            Err(WsError::UnmaskedFrame)
        );
        assert_eq!(delivered, 0);
    }
}

#[test]
fn events_before_an_error_in_the_same_read_are_delivered() {
    let wire = wire(&[
        client(true, OpCode::Text, b"first"),
        raw_frame(0x81, b"second", None),
    ]);
    assert_fails(&wire, vec![text("first")], WsError::UnmaskedFrame, 1002);
}

#[test]
fn empty_reads_change_nothing() {
    let cfg = WsConfig::default();
    let mut conn = Connection::new(Role::Server);
    let frame = client(true, OpCode::Text, b"abc");
    let mut events = Vec::new();
    for byte in frame {
        conn.handle_read(&cfg, &mut [], &mut |_| events.push(()))
            .unwrap();
        conn.handle_read(&cfg, &mut [byte], &mut |_| events.push(()))
            .unwrap();
    }
    assert_eq!(events.len(), 1);
}
