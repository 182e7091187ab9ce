//! Autobahn 2.x: pings and pongs, their payload limits, unsolicited pongs.

use crate::support::*;
use ringcast::ws::{OpCode, WsError};

#[test]
fn ping_without_payload_is_delivered() {
    // Case 2.1.
    assert_eq!(
        decode(&client(true, OpCode::Ping, b"")),
        Outcome::ok(vec![ping(b"")])
    );
}

#[test]
fn ping_with_text_payload_is_delivered() {
    // Case 2.2.
    let wire = client(true, OpCode::Ping, b"Hello, world!");
    assert_eq!(decode(&wire), Outcome::ok(vec![ping(b"Hello, world!")]));
}

#[test]
fn ping_with_binary_payload_is_delivered() {
    // Case 2.3.
    let wire = client(
        true,
        OpCode::Ping,
        &[0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff],
    );
    assert_eq!(
        decode(&wire),
        Outcome::ok(vec![ping(&[0, 255, 254, 253, 252, 251, 0, 255])])
    );
}

#[test]
fn ping_of_125_bytes_is_delivered_under_any_split() {
    // Cases 2.4 and 2.6 (sent in small chunks).
    let payload = [0xFE; 125];
    assert_eq!(
        decode(&client(true, OpCode::Ping, &payload)),
        Outcome::ok(vec![ping(&payload)])
    );
}

#[test]
fn ping_of_126_bytes_is_a_protocol_error() {
    // Case 2.5.
    let wire = client(true, OpCode::Ping, &[0xFE; 126]);
    assert_fails(&wire, vec![], WsError::ControlFrameTooLong, 1002);
}

#[test]
fn unsolicited_pong_without_payload_is_delivered() {
    // Case 2.7.
    assert_eq!(
        decode(&client(true, OpCode::Pong, b"")),
        Outcome::ok(vec![pong(b"")])
    );
}

#[test]
fn unsolicited_pong_with_payload_is_delivered() {
    // Case 2.8.
    let wire = client(true, OpCode::Pong, b"unsolicited pong payload");
    assert_eq!(
        decode(&wire),
        Outcome::ok(vec![pong(b"unsolicited pong payload")])
    );
}

#[test]
fn unsolicited_pong_then_ping_are_both_delivered() {
    // Case 2.9.
    let wire = wire(&[
        client(true, OpCode::Pong, b"unsolicited pong payload"),
        client(true, OpCode::Ping, b"ping payload"),
    ]);
    let expect = vec![pong(b"unsolicited pong payload"), ping(b"ping payload")];
    assert_eq!(decode(&wire), Outcome::ok(expect));
}

#[test]
fn ten_pings_are_each_delivered_in_order() {
    // Cases 2.10 and 2.11 (the latter in small chunks: every split is tried).
    let frames: Vec<Vec<u8>> = (0..10)
        .map(|i| client(true, OpCode::Ping, format!("payload-{i}").as_bytes()))
        .collect();
    let expect = (0..10)
        .map(|i| ping(format!("payload-{i}").as_bytes()))
        .collect();
    assert_eq!(decode(&wire(&frames)), Outcome::ok(expect));
}

#[test]
fn pong_of_126_bytes_is_a_protocol_error() {
    let wire = client(true, OpCode::Pong, &[0; 126]);
    assert_fails(&wire, vec![], WsError::ControlFrameTooLong, 1002);
}
