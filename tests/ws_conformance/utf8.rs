//! Autobahn 6.x: UTF-8 of text messages, whole, fragmented at every byte, and fail-fast: the
//! error comes as soon as the bytes so far cannot be a prefix of valid UTF-8.

use crate::support::*;
use ringcast::ws::{OpCode, WsError};

/// Valid texts: Autobahn's samples, the boundary code points of each encoded length, the
/// surrogate neighbours and noncharacters (valid UTF-8 that applications may not like).
const VALID: &[&str] = &[
    "",
    "Hello-\u{b5}@\u{df}\u{f6}\u{e4}\u{fc}\u{e0}\u{e1}-UTF-8!!",
    "\u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5}",
    "\0",
    "\u{7f}\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}",
    "\u{d7ff}\u{e000}\u{fffd}",
    "\u{fffe}\u{ffff}\u{fdd0}\u{fdef}\u{1fffe}\u{1ffff}\u{10fffe}",
    "\u{1f600} mixed \u{20ac} text \u{3ba}",
];

/// Invalid byte sequences (Autobahn 6.3, 6.6-6.21), each embedded after a valid prefix.
const INVALID: &[&[u8]] = &[
    b"\xed\xa0\x80",             // U+D800, a high surrogate
    b"\xed\xad\xbf",             // U+DB7F
    b"\xed\xae\x80",             // U+DB80
    b"\xed\xaf\xbf",             // U+DBFF
    b"\xed\xb0\x80",             // U+DC00, a low surrogate
    b"\xed\xbe\x80",             // U+DF80
    b"\xed\xbf\xbf",             // U+DFFF
    b"\xed\xa0\x80\xed\xb0\x80", // a surrogate pair encoded as two code points
    b"\xf4\x90\x80\x80",         // U+110000, above the last code point
    b"\xf5\x80\x80\x80",         // lead byte beyond the range
    b"\xf8\x88\x80\x80\x80",     // 5-byte sequence
    b"\xfc\x84\x80\x80\x80\x80", // 6-byte sequence
    b"\xc0\xaf",                 // overlong '/'
    b"\xe0\x80\xaf",             // overlong '/' in 3 bytes
    b"\xf0\x80\x80\xaf",         // overlong '/' in 4 bytes
    b"\xc1\xbf",                 // largest overlong 2-byte
    b"\xe0\x9f\xbf",             // largest overlong 3-byte
    b"\xf0\x8f\xbf\xbf",         // largest overlong 4-byte
    b"\xc0\x80",                 // overlong NUL
    b"\xe0\x80\x80",             // overlong NUL in 3 bytes
    b"\x80",                     // lone continuation byte
    b"\xbf",                     // lone continuation byte
    b"\x80\xbf\x80",             // continuation bytes only
    b"\xc0\x20",                 // start byte followed by a space
    b"\xe0\x20",                 // 3-byte start followed by a space
    b"\xf0\x20",                 // 4-byte start followed by a space
    b"\xce\x20",                 // valid start, broken by a space
    b"\xe2\x82\x20",             // '\u{20ac}' with its last byte replaced
    b"\xfe",                     // impossible byte
    b"\xff",                     // impossible byte
    b"\xfe\xfe\xff\xff",         // impossible bytes
];

/// Sequences that are valid prefixes: invalid only because the message ends there.
const TRUNCATED: &[&[u8]] = &[b"\xce", b"\xe2\x82", b"\xf0\x9f\x98", b"\xf4\x8f\xbf"];

/// The shortest prefix of `bytes` that cannot begin valid UTF-8, by the standard library's
/// judgement (`error_len` is `Some` exactly then), or `None` if every prefix can.
fn fail_fast_position(bytes: &[u8]) -> Option<usize> {
    (1..=bytes.len())
        .find(|&p| matches!(std::str::from_utf8(&bytes[..p]), Err(e) if e.error_len().is_some()))
}

fn embedded(bad: &[u8]) -> Vec<u8> {
    let mut bytes = "\u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5}".as_bytes().to_vec();
    bytes.extend_from_slice(bad);
    bytes.extend_from_slice(b"edited");
    bytes
}

#[test]
fn valid_text_in_one_frame_is_delivered() {
    for valid in VALID {
        assert_eq!(
            decode(&client(true, OpCode::Text, valid.as_bytes())),
            Outcome::ok(vec![text(valid)])
        );
    }
}

#[test]
fn valid_text_in_two_fragments_split_at_every_byte_is_delivered() {
    // Case 6.2.x: fragment boundaries inside code points are fine.
    for valid in VALID {
        let bytes = valid.as_bytes();
        for cut in 0..=bytes.len() {
            let wire = wire(&[
                client(false, OpCode::Text, &bytes[..cut]),
                client(true, OpCode::Continuation, &bytes[cut..]),
            ]);
            assert_eq!(
                decode(&wire),
                Outcome::ok(vec![text(valid)]),
                "{valid:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn valid_text_with_each_byte_a_fragment_is_delivered() {
    // Case 6.2.4 style: one byte per frame.
    for valid in VALID.iter().filter(|v| !v.is_empty()) {
        let bytes = valid.as_bytes();
        let mut frames: Vec<Vec<u8>> = Vec::new();
        for (i, byte) in bytes.iter().enumerate() {
            let opcode = if i == 0 {
                OpCode::Text
            } else {
                OpCode::Continuation
            };
            frames.push(client(i + 1 == bytes.len(), opcode, &[*byte]));
        }
        assert_eq!(
            decode(&wire(&frames)),
            Outcome::ok(vec![text(valid)]),
            "{valid:?}"
        );
    }
}

#[test]
fn invalid_sequences_in_one_frame_fail_with_1007() {
    for bad in INVALID.iter().chain(TRUNCATED) {
        let wire = client(true, OpCode::Text, &embedded(bad));
        assert_fails(&wire, vec![], WsError::InvalidUtf8, 1007);
        // Alone, without the valid neighbours.
        assert_fails(
            &client(true, OpCode::Text, bad),
            vec![],
            WsError::InvalidUtf8,
            1007,
        );
    }
}

#[test]
fn invalid_sequences_with_each_byte_a_fragment_fail_with_1007() {
    for bad in INVALID.iter().chain(TRUNCATED) {
        let bytes = embedded(bad);
        let frames: Vec<Vec<u8>> = bytes
            .iter()
            .enumerate()
            .map(|(i, byte)| {
                let opcode = if i == 0 {
                    OpCode::Text
                } else {
                    OpCode::Continuation
                };
                client(i + 1 == bytes.len(), opcode, &[*byte])
            })
            .collect();
        assert_fails(&wire(&frames), vec![], WsError::InvalidUtf8, 1007);
    }
}

#[test]
fn truncated_sequence_at_the_end_of_a_message_fails_only_there() {
    // A valid prefix of a code point passes while the message goes on, fails at its end.
    for bad in TRUNCATED {
        let open = client(false, OpCode::Text, bad);
        assert_eq!(decode(&open), Outcome::ok(vec![]), "{bad:?} open");
        let closed = wire(&[open, client(true, OpCode::Continuation, b"")]);
        assert_fails(&closed, vec![], WsError::InvalidUtf8, 1007);
    }
}

#[test]
fn every_truncation_of_valid_text_is_judged_like_std() {
    // Cut each valid text at every byte and send the prefix as a whole message.
    for valid in VALID {
        let bytes = valid.as_bytes();
        for cut in 0..=bytes.len() {
            let prefix = &bytes[..cut];
            let expect = match std::str::from_utf8(prefix) {
                Ok(s) => Outcome::ok(vec![text(s)]),
                Err(_) => Outcome::err(vec![], WsError::InvalidUtf8),
            };
            assert_eq!(
                decode(&client(true, OpCode::Text, prefix)),
                expect,
                "{valid:?} cut {cut}"
            );
        }
    }
}

#[test]
fn fail_fast_inside_an_unfinished_frame() {
    // Case 6.4.3/6.4.4 style: the frame's header announces the whole payload, the bytes stop right
    // after the first byte that makes the prefix impossible. The error must come then, and not a
    // byte earlier.
    for bad in INVALID {
        let bytes = embedded(bad);
        let position = fail_fast_position(&bytes).expect("an invalid sequence has a position");
        let frame = client(true, OpCode::Text, &bytes);
        let header = frame.len() - bytes.len();
        assert_fails(
            &frame[..header + position],
            vec![],
            WsError::InvalidUtf8,
            1007,
        );
        assert_eq!(
            decode(&frame[..header + position - 1]),
            Outcome::ok(vec![]),
            "{bad:?}"
        );
    }
}

#[test]
fn fail_fast_across_fragments_before_the_message_ends() {
    // Cases 6.4.1/6.4.2: fragment 1 valid, fragment 2 holds the invalid bytes, fragment 3 never
    // needs to arrive.
    for bad in INVALID {
        let bytes = embedded(bad);
        let position = fail_fast_position(&bytes).expect("an invalid sequence has a position");
        let fragment_ending_at = |end: usize| {
            wire(&[
                client(false, OpCode::Text, &bytes[..5]),
                client(false, OpCode::Continuation, &bytes[5..end]),
            ])
        };
        assert_fails(
            &fragment_ending_at(position),
            vec![],
            WsError::InvalidUtf8,
            1007,
        );
        assert_eq!(
            decode(&fragment_ending_at(position - 1)),
            Outcome::ok(vec![]),
            "{bad:?}"
        );
    }
}

#[test]
fn binary_messages_are_not_utf8_checked() {
    let wire = client(true, OpCode::Binary, b"\xff\xfe\xed\xa0\x80");
    assert_eq!(
        decode(&wire),
        Outcome::ok(vec![binary(b"\xff\xfe\xed\xa0\x80")])
    );
}
