//! Incremental, fail-fast UTF-8 validation of text messages (RFC 6455 8.1) with simdutf8.
//!
//! A text message may arrive in many fragments and reads, and a code point may straddle them. We
//! keep how far the assembled bytes are known to be whole valid code points; each new piece is
//! validated from there, and a tail of at most 3 bytes that is a valid prefix of a code point
//! waits for the next piece. Bytes that cannot start or continue a valid sequence fail at once,
//! before the message ends (what Autobahn 6.x calls fail-fast).

use super::WsError;

/// Validates `bytes[checked..]`, where `bytes[..checked]` is already known to be whole code
/// points. Returns the new `checked`: everything but an incomplete, still-valid tail.
pub(crate) fn validate_more(bytes: &[u8], checked: usize) -> Result<usize, WsError> {
    let Some(unchecked) = bytes.get(checked..) else {
        return Err(WsError::InvalidUtf8);
    };
    match simdutf8::compat::from_utf8(unchecked) {
        Ok(_) => Ok(bytes.len()),
        // `error_len() == None` means the input ended inside a sequence that is so far valid
        // (the same contract as `std::str::Utf8Error`), so the tail may still complete.
        Err(error) if error.error_len().is_none() => Ok(checked + error.valid_up_to()),
        Err(_) => Err(WsError::InvalidUtf8),
    }
}

/// Validates a whole text message at once: the fast path for a message in one frame and read.
pub(crate) fn validate_whole(bytes: &[u8]) -> Result<&str, WsError> {
    simdutf8::basic::from_utf8(bytes).map_err(|_| WsError::InvalidUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        // (bytes, Ok(checked) or Err)
        let cases: &[(&[u8], Result<usize, WsError>)] = &[
            (b"", Ok(0)),
            (b"hello", Ok(5)),
            ("\u{3ba}\u{1f600}".as_bytes(), Ok(6)),
            (b"a\xce", Ok(1)),
            (b"a\xf0\x9f\x98", Ok(1)),
            (b"a\xff", Err(WsError::InvalidUtf8)),
            (b"\xc0\x80", Err(WsError::InvalidUtf8)),
            (b"\xed\xa0\x80", Err(WsError::InvalidUtf8)),
            (b"\xed\xa0", Err(WsError::InvalidUtf8)),
            (b"\xf4\x90", Err(WsError::InvalidUtf8)),
            (b"\xf5", Err(WsError::InvalidUtf8)),
        ];
        for (bytes, expect) in cases {
            assert_eq!(&validate_more(bytes, 0), expect, "{bytes:?}");
        }
    }

    #[test]
    fn piece_by_piece_reaches_the_same_verdict_as_whole() {
        let text = "κόσμε \u{1f600} end".as_bytes();
        let mut checked = 0;
        for end in 1..=text.len() {
            checked = validate_more(&text[..end], checked).unwrap();
            assert!(checked <= end && end - checked <= 3);
        }
        assert_eq!(checked, text.len());
        assert!(validate_whole(text).is_ok());
        assert_eq!(validate_whole(b"\xce"), Err(WsError::InvalidUtf8));
    }
}
