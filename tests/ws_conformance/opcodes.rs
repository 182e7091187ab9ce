//! Autobahn 4.x: reserved opcodes, data (3-7) and control (11-15).

use crate::support::*;
use ringcast::ws::{OpCode, WsError};

const FIN: u8 = 0x80;

#[test]
fn reserved_data_opcodes_fail() {
    // Cases 4.1.1-4.1.5: 3-7, empty and with payload, after a valid text and before a ping.
    for opcode in 3..=7 {
        for payload in [&b""[..], b"reserved"] {
            let wire = wire(&[
                client(true, OpCode::Text, b"Hello, world!"),
                raw_frame(FIN | opcode, payload, Some(KEY)),
                client(true, OpCode::Ping, b""),
            ]);
            assert_fails(
                &wire,
                vec![text("Hello, world!")],
                WsError::ReservedOpcode,
                1002,
            );
        }
    }
}

#[test]
fn reserved_control_opcodes_fail() {
    // Cases 4.2.1-4.2.5: 11-15.
    for opcode in 11..=15 {
        for payload in [&b""[..], b"reserved"] {
            let wire = wire(&[
                client(true, OpCode::Text, b"Hello, world!"),
                raw_frame(FIN | opcode, payload, Some(KEY)),
                client(true, OpCode::Ping, b""),
            ]);
            assert_fails(
                &wire,
                vec![text("Hello, world!")],
                WsError::ReservedOpcode,
                1002,
            );
        }
    }
}

#[test]
fn reserved_opcode_without_fin_fails_the_same() {
    assert_fails(
        &raw_frame(0x05, b"", Some(KEY)),
        vec![],
        WsError::ReservedOpcode,
        1002,
    );
    assert_fails(
        &raw_frame(0x0C, b"", Some(KEY)),
        vec![],
        WsError::ReservedOpcode,
        1002,
    );
}
