//! Autobahn 3.x: RSV1-3 set while no extension was negotiated.

use crate::support::*;
use ringcast::ws::{OpCode, WsError};

const RSV1: u8 = 0x40;
const RSV2: u8 = 0x20;
const RSV3: u8 = 0x10;
const FIN: u8 = 0x80;

#[test]
fn rsv1_on_small_text_fails() {
    // Case 3.1.
    let wire = raw_frame(FIN | RSV1 | 0x1, b"Hello, world!", Some(KEY));
    assert_fails(&wire, vec![], WsError::ReservedBits, 1002);
}

#[test]
fn rsv2_after_a_valid_text_fails_after_delivering_it() {
    // Case 3.2.
    let wire = wire(&[
        client(true, OpCode::Text, b"Hello, world!"),
        raw_frame(FIN | RSV2 | 0x1, b"Hello, world!", Some(KEY)),
        client(true, OpCode::Ping, b""),
    ]);
    assert_fails(
        &wire,
        vec![text("Hello, world!")],
        WsError::ReservedBits,
        1002,
    );
}

#[test]
fn rsv3_between_text_and_ping_fails_after_delivering_the_text() {
    // Case 3.3.
    let wire = wire(&[
        client(true, OpCode::Text, b"Hello, world!"),
        raw_frame(FIN | RSV3 | RSV1 | 0x1, b"Hello, world!", Some(KEY)),
        client(true, OpCode::Ping, b""),
    ]);
    assert_fails(
        &wire,
        vec![text("Hello, world!")],
        WsError::ReservedBits,
        1002,
    );
}

#[test]
fn rsv_on_binary_fails() {
    // Cases 3.4 and 3.5.
    for rsv in [RSV1 | RSV2, RSV1 | RSV3, RSV2 | RSV3] {
        let wire = raw_frame(FIN | rsv | 0x2, &[0x00, 0xff, 0xfe], Some(KEY));
        assert_fails(&wire, vec![], WsError::ReservedBits, 1002);
    }
}

#[test]
fn rsv_on_ping_fails() {
    // Case 3.6.
    let wire = raw_frame(FIN | RSV2 | RSV3 | 0x9, b"ping", Some(KEY));
    assert_fails(&wire, vec![], WsError::ReservedBits, 1002);
}

#[test]
fn all_rsv_on_close_fails() {
    // Case 3.7.
    let wire = raw_frame(
        FIN | RSV1 | RSV2 | RSV3 | 0x8,
        &close_payload(1000, b""),
        Some(KEY),
    );
    assert_fails(&wire, vec![], WsError::ReservedBits, 1002);
}

#[test]
fn rsv_is_judged_before_the_rest_of_the_frame_arrives() {
    // Fail fast: the first two bytes are enough.
    let wire = raw_frame(FIN | RSV1 | 0x1, b"Hello, world!", Some(KEY));
    assert_fails(&wire[..2], vec![], WsError::ReservedBits, 1002);
}
