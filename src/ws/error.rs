//! Every way a peer can break RFC 6455 or our limits, each mapped to the close code to send.

use super::{CloseCode, CloseFrame};
use std::fmt;

/// One variant per violation. A [`super::Connection`] that returned one stays failed; the caller
/// sends a close frame with `CloseCode::from(error)` and stops reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    /// A client frame without a mask (RFC 6455 5.1): 1002.
    UnmaskedFrame,
    /// A server frame with a mask, seen by a client (RFC 6455 5.1): 1002.
    MaskedFrame,
    /// RSV1-3 set while no extension was negotiated (RFC 6455 5.2): 1002.
    ReservedBits,
    /// Opcode 3-7 or 11-15 (RFC 6455 5.2): 1002.
    ReservedOpcode,
    /// A Close, Ping or Pong frame with a payload over 125 bytes (RFC 6455 5.5): 1002.
    ControlFrameTooLong,
    /// A Close, Ping or Pong frame without FIN (RFC 6455 5.5): 1002.
    FragmentedControlFrame,
    /// A 64-bit payload length with the most significant bit set (RFC 6455 5.2): 1002.
    LengthTopBitSet,
    /// A Continuation frame while no fragmented message is in progress (RFC 6455 5.4): 1002.
    UnexpectedContinuation,
    /// A Text or Binary frame while a fragmented message is in progress (RFC 6455 5.4): 1002.
    ExpectedContinuation,
    /// A Close frame whose payload is one byte, too short for a code (RFC 6455 5.5.1): 1002.
    ClosePayloadTooShort,
    /// A close code a peer may not send (RFC 6455 7.4): 1002.
    InvalidCloseCode,
    /// A text message that is not UTF-8, found as soon as its bytes cannot be a prefix of UTF-8
    /// (RFC 6455 8.1): 1007.
    InvalidUtf8,
    /// A close reason that is not UTF-8 (RFC 6455 5.5.1): 1007.
    InvalidCloseReason,
    /// A frame payload over `max_frame_size`, judged from the header: 1009.
    FrameTooBig,
    /// A message over `max_message_size` after reassembly, judged from each frame header: 1009.
    MessageTooBig,
    /// A message spread over more than `max_fragments` frames: 1008.
    TooManyFragments,
}

impl From<WsError> for CloseCode {
    fn from(error: WsError) -> Self {
        match error {
            WsError::UnmaskedFrame
            | WsError::MaskedFrame
            | WsError::ReservedBits
            | WsError::ReservedOpcode
            | WsError::ControlFrameTooLong
            | WsError::FragmentedControlFrame
            | WsError::LengthTopBitSet
            | WsError::UnexpectedContinuation
            | WsError::ExpectedContinuation
            | WsError::ClosePayloadTooShort
            | WsError::InvalidCloseCode => CloseCode::PROTOCOL_ERROR,
            WsError::InvalidUtf8 | WsError::InvalidCloseReason => CloseCode::INVALID_PAYLOAD,
            WsError::FrameTooBig | WsError::MessageTooBig => CloseCode::MESSAGE_TOO_BIG,
            WsError::TooManyFragments => CloseCode::POLICY_VIOLATION,
        }
    }
}

impl WsError {
    /// The close frame that answers this error: its code and its short reason, ready for
    /// [`super::encode_close`].
    pub fn close_frame(self) -> CloseFrame<'static> {
        CloseFrame {
            code: self.into(),
            reason: self.reason(),
        }
    }

    /// A short reason for the close frame and the logs; ASCII, well under the 123 bytes a close
    /// reason may take.
    pub fn reason(self) -> &'static str {
        match self {
            Self::UnmaskedFrame => "client frame not masked",
            Self::MaskedFrame => "server frame masked",
            Self::ReservedBits => "reserved bits set",
            Self::ReservedOpcode => "reserved opcode",
            Self::ControlFrameTooLong => "control frame over 125 bytes",
            Self::FragmentedControlFrame => "fragmented control frame",
            Self::LengthTopBitSet => "payload length top bit set",
            Self::UnexpectedContinuation => "continuation without a message",
            Self::ExpectedContinuation => "new message inside a fragmented message",
            Self::ClosePayloadTooShort => "close payload of one byte",
            Self::InvalidCloseCode => "invalid close code",
            Self::InvalidUtf8 => "invalid UTF-8 in text message",
            Self::InvalidCloseReason => "invalid UTF-8 in close reason",
            Self::FrameTooBig => "frame too big",
            Self::MessageTooBig => "message too big",
            Self::TooManyFragments => "too many fragments",
        }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for WsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_a_code_we_may_send() {
        let all = [
            (WsError::UnmaskedFrame, 1002),
            (WsError::MaskedFrame, 1002),
            (WsError::ReservedBits, 1002),
            (WsError::ReservedOpcode, 1002),
            (WsError::ControlFrameTooLong, 1002),
            (WsError::FragmentedControlFrame, 1002),
            (WsError::LengthTopBitSet, 1002),
            (WsError::UnexpectedContinuation, 1002),
            (WsError::ExpectedContinuation, 1002),
            (WsError::ClosePayloadTooShort, 1002),
            (WsError::InvalidCloseCode, 1002),
            (WsError::InvalidUtf8, 1007),
            (WsError::InvalidCloseReason, 1007),
            (WsError::FrameTooBig, 1009),
            (WsError::MessageTooBig, 1009),
            (WsError::TooManyFragments, 1008),
        ];
        for (error, code) in all {
            assert_eq!(CloseCode::from(error), CloseCode(code), "{error:?}");
            assert!(
                error.reason().len() <= 123 && error.reason().is_ascii(),
                "{error:?}"
            );
        }
    }
}
