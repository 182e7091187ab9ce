//! Autobahn 7.x: the closing handshake, close payloads and codes, nothing read after a close.

use crate::support::*;
use ringcast::ws::{
    CloseCode, CloseFrame, OpCode, Role, WsConfig, WsError, close_reply, encode_close,
};

fn close_frame(payload: &[u8]) -> Vec<u8> {
    client(true, OpCode::Close, payload)
}

#[test]
fn close_with_normal_code_is_delivered() {
    // Case 7.1.1 (after a text).
    let wire = wire(&[
        client(true, OpCode::Text, b"Hello World!"),
        close_frame(&close_payload(1000, b"")),
    ]);
    assert_eq!(
        decode(&wire),
        Outcome::ok(vec![text("Hello World!"), close(1000, "")])
    );
}

#[test]
fn second_close_is_ignored() {
    // Case 7.1.2.
    let wire = wire(&[
        close_frame(&close_payload(1000, b"")),
        close_frame(&close_payload(1001, b"")),
    ]);
    assert_eq!(decode(&wire), Outcome::ok(vec![close(1000, "")]));
}

#[test]
fn ping_after_close_is_ignored() {
    // Case 7.1.3.
    let wire = wire(&[
        close_frame(&close_payload(1000, b"")),
        client(true, OpCode::Ping, b"ping"),
    ]);
    assert_eq!(decode(&wire), Outcome::ok(vec![close(1000, "")]));
}

#[test]
fn text_after_close_is_ignored() {
    // Case 7.1.4.
    let wire = wire(&[
        close_frame(&close_payload(1000, b"")),
        client(true, OpCode::Text, b"Hello World!"),
    ]);
    assert_eq!(decode(&wire), Outcome::ok(vec![close(1000, "")]));
}

#[test]
fn continuation_after_close_in_a_fragmented_message_is_ignored() {
    // Case 7.1.5.
    let wire = wire(&[
        client(false, OpCode::Text, b"fragment1"),
        close_frame(&close_payload(1000, b"")),
        client(true, OpCode::Continuation, b"fragment2"),
    ]);
    assert_eq!(decode(&wire), Outcome::ok(vec![close(1000, "")]));
}

#[test]
fn garbage_after_close_is_ignored() {
    // Case 7.1.6 in spirit: even bytes that would be a protocol error.
    let wire = wire(&[close_frame(&close_payload(1000, b"")), vec![0xFF; 20]]);
    assert_eq!(decode(&wire), Outcome::ok(vec![close(1000, "")]));
}

#[test]
fn empty_close_is_delivered_without_code() {
    // Case 7.3.1.
    assert_eq!(
        decode(&close_frame(b"")),
        Outcome::ok(vec![Owned::Close(None)])
    );
}

#[test]
fn one_byte_close_payload_fails() {
    // Case 7.3.2.
    assert_fails(
        &close_frame(b"\x03"),
        vec![],
        WsError::ClosePayloadTooShort,
        1002,
    );
}

#[test]
fn close_with_code_and_reason_is_delivered() {
    // Cases 7.3.3 and 7.3.4.
    assert_eq!(
        decode(&close_frame(&close_payload(1000, b""))),
        Outcome::ok(vec![close(1000, "")])
    );
    let wire = close_frame(&close_payload(1000, b"Hello World!"));
    assert_eq!(
        decode(&wire),
        Outcome::ok(vec![close(1000, "Hello World!")])
    );
}

#[test]
fn close_with_123_byte_reason_is_delivered() {
    // Case 7.3.5: the largest close payload.
    let reason = "*".repeat(123);
    let wire = close_frame(&close_payload(1000, reason.as_bytes()));
    assert_eq!(decode(&wire), Outcome::ok(vec![close(1000, &reason)]));
}

#[test]
fn close_with_124_byte_reason_fails() {
    // Case 7.3.6: 126 bytes of payload is over the control-frame limit.
    let wire = close_frame(&close_payload(1000, "*".repeat(124).as_bytes()));
    assert_fails(&wire, vec![], WsError::ControlFrameTooLong, 1002);
}

#[test]
fn close_reason_with_invalid_utf8_fails_with_1007() {
    // Case 7.5.1.
    let reason =
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64";
    assert_fails(
        &close_frame(&close_payload(1000, reason)),
        vec![],
        WsError::InvalidCloseReason,
        1007,
    );
    assert_fails(
        &close_frame(&close_payload(1000, b"\xce")),
        vec![],
        WsError::InvalidCloseReason,
        1007,
    );
}

#[test]
fn valid_close_codes_are_delivered_and_echoed() {
    // Cases 7.7.1-7.7.13, plus 1012-1014 (registered with IANA after RFC 6455).
    let valid = [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
        4999,
    ];
    for code in valid {
        assert_eq!(
            decode(&close_frame(&close_payload(code, b"x"))),
            Outcome::ok(vec![close(code, "x")])
        );
        let received = CloseFrame {
            code: CloseCode(code),
            reason: "x",
        };
        assert_eq!(
            close_reply(Some(&received)),
            Some(CloseFrame {
                code: CloseCode(code),
                reason: ""
            })
        );
    }
}

#[test]
fn invalid_close_codes_fail_with_1002() {
    // Cases 7.9.1-7.9.9 and 7.13.x.
    let invalid = [
        0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ];
    for code in invalid {
        assert_fails(
            &close_frame(&close_payload(code, b"")),
            vec![],
            WsError::InvalidCloseCode,
            1002,
        );
    }
}

#[test]
fn close_split_across_reads_is_judged_whole() {
    // The close code straddling reads: every split is tried by `decode`.
    let wire = close_frame(&close_payload(4001, "bye \u{3ba}".as_bytes()));
    assert_eq!(decode(&wire), Outcome::ok(vec![close(4001, "bye \u{3ba}")]));
}

#[test]
fn encoded_close_decodes_to_the_same_frame_both_ways() {
    let sent = CloseFrame {
        code: CloseCode::GOING_AWAY,
        reason: "draining",
    };
    let mut masked = Vec::new();
    encode_close(&mut masked, Some(sent), Some(KEY));
    assert_eq!(decode(&masked), Outcome::ok(vec![close(1001, "draining")]));
    let mut unmasked = Vec::new();
    encode_close(&mut unmasked, None, None);
    let outcome = decode_with(Role::Client, &WsConfig::default(), &unmasked);
    assert_eq!(outcome, Outcome::ok(vec![Owned::Close(None)]));
}

#[test]
fn close_handshake_state_is_tracked_both_ways() {
    use ringcast::ws::Connection;
    let cfg = WsConfig::default();
    let mut conn = Connection::new(Role::Server);
    assert!(!conn.is_close_received() && !conn.is_close_sent() && !conn.is_closed());
    conn.handle_close_sent();
    assert!(conn.is_close_sent() && !conn.is_closed());
    let mut frame = close_frame(&close_payload(1000, b""));
    conn.handle_read(&cfg, &mut frame, &mut |_| {}).unwrap();
    assert!(conn.is_close_received() && conn.is_closed());
    let mut later = client(true, OpCode::Text, b"late");
    let mut delivered = 0;
    assert_eq!(
        conn.handle_read(&cfg, &mut later, &mut |_| delivered += 1),
        Ok(())
    );
    assert_eq!(delivered, 0, "nothing is read after a close");
}
