//! Close codes and the close frame payload (RFC 6455 5.5.1, 7.4): which codes a peer may send,
//! how a received payload is judged, and what we echo.

use super::WsError;

/// A close status code (RFC 6455 7.4). A newtype so that application codes (Pusher's 4000-4299)
/// pass through without a variant per code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection is fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the server is going down (graceful drain) or the client navigates away.
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1007: a message whose data does not match its type (bad UTF-8 in text).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a policy was violated (too many fragments, a slow consumer on the echo route).
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a frame or message over the configured size.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);

    /// Whether a peer may put this code on the wire: 1000-1003, 1007-1014 (IANA-registered) and
    /// 3000-4999 (libraries and applications), per RFC 6455 7.4.2. 1004 is reserved, 1005, 1006 and
    /// 1015 must never be sent (RFC 6455 7.4.1), 1016-2999 are unassigned, 0-999 and >= 5000 are
    /// not close codes at all.
    pub fn is_allowed_from_peer(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// A close frame's payload: a code and a UTF-8 reason of at most 123 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// Why the sender closes.
    pub code: CloseCode,
    /// Human-readable detail; may be empty.
    pub reason: &'a str,
}

/// Judges a received close payload: empty is a close without a code, one byte is a protocol
/// error, otherwise the code must be one a peer may send and the reason must be UTF-8.
pub(crate) fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseFrame<'_>>, WsError> {
    match payload {
        [] => Ok(None),
        [_] => Err(WsError::ClosePayloadTooShort),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_allowed_from_peer() {
                return Err(WsError::InvalidCloseCode);
            }
            let reason =
                simdutf8::basic::from_utf8(reason).map_err(|_| WsError::InvalidCloseReason)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// What to send back for a valid close we received: the same code without a reason, or an empty
/// close when the peer sent none (sending 1005 on the wire is forbidden, RFC 6455 7.4.1).
pub fn close_reply(received: Option<&CloseFrame<'_>>) -> Option<CloseFrame<'static>> {
    received.map(|close| CloseFrame {
        code: close.code,
        reason: "",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_codes_table() {
        let allowed = [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
        ];
        let allowed = allowed.iter().chain(&[3000, 3999, 4000, 4200, 4999]);
        for code in allowed {
            assert!(CloseCode(*code).is_allowed_from_peer(), "{code}");
        }
        let refused = [
            0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ];
        for code in refused {
            assert!(!CloseCode(code).is_allowed_from_peer(), "{code}");
        }
    }

    #[test]
    fn close_payload_table() {
        type Expect = Result<Option<(u16, &'static str)>, WsError>;
        let cases: &[(&[u8], Expect)] = &[
            (b"", Ok(None)),
            (b"\x03", Err(WsError::ClosePayloadTooShort)),
            (b"\x03\xe8", Ok(Some((1000, "")))),
            (b"\x03\xe8bye", Ok(Some((1000, "bye")))),
            (b"\x0f\xa0\xce\xba", Ok(Some((4000, "\u{3ba}")))),
            (b"\x03\xed", Err(WsError::InvalidCloseCode)),
            (b"\x00\x00", Err(WsError::InvalidCloseCode)),
            (b"\x03\xe8\xff", Err(WsError::InvalidCloseReason)),
            (b"\x03\xe8\xce", Err(WsError::InvalidCloseReason)),
        ];
        for (payload, expect) in cases {
            let got = parse_close_payload(payload).map(|c| c.map(|c| (c.code.0, c.reason)));
            assert_eq!(&got, expect, "{payload:?}");
        }
    }

    #[test]
    fn reply_echoes_the_code_without_reason() {
        let got = close_reply(Some(&CloseFrame {
            code: CloseCode(4001),
            reason: "x",
        }));
        assert_eq!(
            got,
            Some(CloseFrame {
                code: CloseCode(4001),
                reason: ""
            })
        );
        assert_eq!(close_reply(None), None);
    }
}
