//! Autobahn 5.x: fragmented messages, control frames between fragments, broken sequences.

use crate::support::*;
use ringcast::ws::{OpCode, WsError};

#[test]
fn fragmented_ping_fails() {
    // Case 5.1.
    let wire = wire(&[
        client(false, OpCode::Ping, b"frag1"),
        client(true, OpCode::Continuation, b"frag2"),
    ]);
    assert_fails(&wire, vec![], WsError::FragmentedControlFrame, 1002);
}

#[test]
fn fragmented_pong_fails() {
    // Case 5.2.
    let wire = wire(&[
        client(false, OpCode::Pong, b"frag1"),
        client(true, OpCode::Continuation, b"frag2"),
    ]);
    assert_fails(&wire, vec![], WsError::FragmentedControlFrame, 1002);
}

#[test]
fn fragmented_close_fails() {
    let wire = client(false, OpCode::Close, &close_payload(1000, b""));
    assert_fails(&wire, vec![], WsError::FragmentedControlFrame, 1002);
}

#[test]
fn text_in_two_fragments_is_reassembled() {
    // Cases 5.3-5.5 (5.4 and 5.5 differ only in how the bytes are written: every split is tried).
    let wire = wire(&[
        client(false, OpCode::Text, b"frag1"),
        client(true, OpCode::Continuation, b"frag2"),
    ]);
    assert_eq!(decode(&wire), Outcome::ok(vec![text("frag1frag2")]));
}

#[test]
fn binary_in_two_fragments_is_reassembled() {
    let wire = wire(&[
        client(false, OpCode::Binary, &[1, 2]),
        client(true, OpCode::Continuation, &[3]),
    ]);
    assert_eq!(decode(&wire), Outcome::ok(vec![binary(&[1, 2, 3])]));
}

#[test]
fn ping_between_fragments_is_delivered_first() {
    // Cases 5.6-5.8.
    let wire = wire(&[
        client(false, OpCode::Text, b"fragment1"),
        client(true, OpCode::Ping, b"ping payload"),
        client(true, OpCode::Continuation, b"fragment2"),
    ]);
    let expect = vec![ping(b"ping payload"), text("fragment1fragment2")];
    assert_eq!(decode(&wire), Outcome::ok(expect));
}

#[test]
fn continuation_without_a_message_fails() {
    // Cases 5.9-5.11: a final continuation first, followed by a normal message.
    let wire = wire(&[
        client(true, OpCode::Continuation, b"non-continuation payload"),
        client(true, OpCode::Text, b"Hello, world!"),
    ]);
    assert_fails(&wire, vec![], WsError::UnexpectedContinuation, 1002);
}

#[test]
fn non_final_continuation_without_a_message_fails() {
    // Cases 5.12-5.14.
    let wire = wire(&[
        client(false, OpCode::Continuation, b"non-continuation payload"),
        client(true, OpCode::Text, b"Hello, world!"),
    ]);
    assert_fails(&wire, vec![], WsError::UnexpectedContinuation, 1002);
}

#[test]
fn continuation_after_a_finished_message_fails() {
    // Case 5.15: two fragments make a message, then a continuation starts nothing.
    let wire = wire(&[
        client(false, OpCode::Text, b"fragment1"),
        client(true, OpCode::Continuation, b"fragment2"),
        client(false, OpCode::Continuation, b"fragment3"),
        client(true, OpCode::Continuation, b"fragment4"),
    ]);
    assert_fails(
        &wire,
        vec![text("fragment1fragment2")],
        WsError::UnexpectedContinuation,
        1002,
    );
}

#[test]
fn repeated_final_continuations_fail() {
    // Cases 5.16-5.18.
    let wire = wire(&[
        client(false, OpCode::Continuation, b"fragment1"),
        client(true, OpCode::Text, b"fragment2"),
        client(true, OpCode::Continuation, b"fragment3"),
    ]);
    assert_fails(&wire, vec![], WsError::UnexpectedContinuation, 1002);
}

#[test]
fn text_in_five_fragments_with_pings_between_is_reassembled() {
    // Cases 5.19 and 5.20.
    let wire = wire(&[
        client(false, OpCode::Text, b"fragment1"),
        client(false, OpCode::Continuation, b"fragment2"),
        client(true, OpCode::Ping, b"pongme 1!"),
        client(false, OpCode::Continuation, b"fragment3"),
        client(false, OpCode::Continuation, b"fragment4"),
        client(true, OpCode::Ping, b"pongme 2!"),
        client(true, OpCode::Continuation, b"fragment5"),
    ]);
    let expect = vec![
        ping(b"pongme 1!"),
        ping(b"pongme 2!"),
        text("fragment1fragment2fragment3fragment4fragment5"),
    ];
    assert_eq!(decode(&wire), Outcome::ok(expect));
}

#[test]
fn new_text_inside_a_fragmented_message_fails() {
    let wire = wire(&[
        client(false, OpCode::Text, b"first"),
        client(true, OpCode::Text, b"second"),
    ]);
    assert_fails(&wire, vec![], WsError::ExpectedContinuation, 1002);
}

#[test]
fn new_binary_inside_a_fragmented_message_fails() {
    let wire = wire(&[
        client(false, OpCode::Binary, b"first"),
        client(false, OpCode::Binary, b"second"),
    ]);
    assert_fails(&wire, vec![], WsError::ExpectedContinuation, 1002);
}

#[test]
fn empty_fragments_make_an_empty_message() {
    let wire = wire(&[
        client(false, OpCode::Text, b""),
        client(false, OpCode::Continuation, b""),
        client(true, OpCode::Continuation, b""),
    ]);
    assert_eq!(decode(&wire), Outcome::ok(vec![text("")]));
}

#[test]
fn pong_and_close_between_fragments_are_delivered() {
    let wire = wire(&[
        client(false, OpCode::Binary, b"a"),
        client(true, OpCode::Pong, b"p"),
        client(true, OpCode::Close, &close_payload(1000, b"")),
        client(true, OpCode::Continuation, b"b"),
    ]);
    assert_eq!(
        decode(&wire),
        Outcome::ok(vec![pong(b"p"), close(1000, "")])
    );
}

#[test]
fn messages_after_a_fragmented_one_decode_normally() {
    let wire = wire(&[
        client(false, OpCode::Binary, b"a"),
        client(true, OpCode::Continuation, b"b"),
        client(true, OpCode::Text, b"c"),
        client(false, OpCode::Text, b"d"),
        client(true, OpCode::Continuation, b"e"),
    ]);
    assert_eq!(
        decode(&wire),
        Outcome::ok(vec![binary(b"ab"), text("c"), text("de")])
    );
}
