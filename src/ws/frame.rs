//! The frame header (RFC 6455 section 5.2): opcodes, roles, and the header parser that judges a
//! frame from its first bytes, before any payload is buffered.

use super::WsError;

/// Which end of the connection this codec plays; decides which frames must be masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We are the server: every frame from the client must be masked (RFC 6455 5.1), else 1002.
    Server,
    /// We are a client (the load generator): frames from the server must not be masked.
    Client,
}

/// The frame opcodes RFC 6455 defines; the reserved ones (3-7, 11-15) are errors, not variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// Continues the data message started by an earlier Text or Binary frame.
    Continuation,
    /// Starts a UTF-8 text message.
    Text,
    /// Starts a binary message.
    Binary,
    /// Starts (or answers) the closing handshake.
    Close,
    /// Asks the peer for a Pong with the same payload.
    Ping,
    /// Answers a Ping, or is an unsolicited heartbeat.
    Pong,
}

impl OpCode {
    /// The 4-bit value on the wire.
    pub fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Parses the 4-bit value from the wire; `None` for the reserved opcodes.
    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0x0 => Some(Self::Continuation),
            0x1 => Some(Self::Text),
            0x2 => Some(Self::Binary),
            0x8 => Some(Self::Close),
            0x9 => Some(Self::Ping),
            0xA => Some(Self::Pong),
            _ => None,
        }
    }

    /// Control frames (Close, Ping, Pong) may interleave with fragments and are limited to 125
    /// bytes (RFC 6455 5.5).
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// Largest payload a control frame may carry (RFC 6455 5.5).
pub(crate) const MAX_CONTROL_PAYLOAD: u64 = 125;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHead {
    /// Last frame of its message.
    pub fin: bool,
    /// What the frame carries.
    pub opcode: OpCode,
    /// Masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub len: u64,
}

/// Parses a frame header from the start of `bytes`.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((head, header_len)))` when the header
/// is complete. The first two bytes are judged as soon as they are present, so a bad frame is
/// rejected whatever the split of the input. Size limits and message sequencing are the
/// connection's business; this judges only what one header says on its own.
pub(crate) fn parse_header(
    bytes: &[u8],
    role: Role,
) -> Result<Option<(FrameHead, usize)>, WsError> {
    let [b0, b1, rest @ ..] = bytes else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        // No extension is ever negotiated, so RSV1-3 must be zero (RFC 6455 5.2).
        return Err(WsError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(WsError::ReservedOpcode)?;
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(WsError::FragmentedControlFrame);
        }
        if u64::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(WsError::ControlFrameTooLong);
        }
    }
    match (role, masked) {
        (Role::Server, false) => return Err(WsError::UnmaskedFrame),
        (Role::Client, true) => return Err(WsError::MaskedFrame),
        _ => {}
    }
    let (len, rest) = match len7 {
        126 => match rest {
            [a, b, rest @ ..] => (u64::from(u16::from_be_bytes([*a, *b])), rest),
            _ => return Ok(None),
        },
        127 => match rest.split_first_chunk::<8>() {
            Some((ext, rest)) => {
                let len = u64::from_be_bytes(*ext);
                if len >> 63 != 0 {
                    return Err(WsError::LengthTopBitSet);
                }
                (len, rest)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), rest),
    };
    let mask = if masked {
        match rest.first_chunk::<4>() {
            Some(key) => Some(*key),
            None => return Ok(None),
        }
    } else {
        None
    };
    let header_len = bytes.len() - rest.len() + if masked { 4 } else { 0 };
    Ok(Some((
        FrameHead {
            fin,
            opcode,
            mask,
            len,
        },
        header_len,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_bits_round_trip_and_reserved_are_none() {
        for bits in 0u8..16 {
            match OpCode::from_bits(bits) {
                Some(op) => assert_eq!(op.bits(), bits),
                None => assert!(matches!(bits, 3..=7 | 11..=15), "bits {bits}"),
            }
        }
    }

    #[test]
    fn parse_header_table() {
        type Expect = Result<Option<(bool, OpCode, Option<[u8; 4]>, u64, usize)>, WsError>;
        let cases: &[(&str, &[u8], Role, Expect)] = &[
            ("empty needs more", &[], Role::Server, Ok(None)),
            ("one byte needs more", &[0x81], Role::Server, Ok(None)),
            (
                "rsv judged on the first two bytes",
                &[0xC1, 0x80],
                Role::Server,
                Err(WsError::ReservedBits),
            ),
            (
                "reserved opcode 3",
                &[0x83, 0x80],
                Role::Server,
                Err(WsError::ReservedOpcode),
            ),
            (
                "reserved opcode 11",
                &[0x8B, 0x80],
                Role::Server,
                Err(WsError::ReservedOpcode),
            ),
            (
                "unmasked to server",
                &[0x81, 0x00],
                Role::Server,
                Err(WsError::UnmaskedFrame),
            ),
            (
                "masked to client",
                &[0x81, 0x80],
                Role::Client,
                Err(WsError::MaskedFrame),
            ),
            (
                "fragmented ping",
                &[0x09, 0x80],
                Role::Server,
                Err(WsError::FragmentedControlFrame),
            ),
            (
                "ping of 126",
                &[0x89, 0xFE],
                Role::Server,
                Err(WsError::ControlFrameTooLong),
            ),
            (
                "mask key incomplete",
                &[0x81, 0x85, 1, 2, 3],
                Role::Server,
                Ok(None),
            ),
            (
                "short masked text",
                &[0x81, 0x85, 1, 2, 3, 4],
                Role::Server,
                Ok(Some((true, OpCode::Text, Some([1, 2, 3, 4]), 5, 6))),
            ),
            (
                "unmasked binary no fin",
                &[0x02, 0x03],
                Role::Client,
                Ok(Some((false, OpCode::Binary, None, 3, 2))),
            ),
            (
                "16-bit length incomplete",
                &[0x82, 0x7E, 0x01],
                Role::Client,
                Ok(None),
            ),
            (
                "16-bit length",
                &[0x82, 0x7E, 0x01, 0x00],
                Role::Client,
                Ok(Some((true, OpCode::Binary, None, 256, 4))),
            ),
            (
                "64-bit length incomplete",
                &[0x82, 0x7F, 0, 0, 0, 0, 0, 1],
                Role::Client,
                Ok(None),
            ),
            (
                "64-bit length",
                &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0],
                Role::Client,
                Ok(Some((true, OpCode::Binary, None, 65536, 10))),
            ),
            (
                "64-bit length top bit",
                &[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0],
                Role::Client,
                Err(WsError::LengthTopBitSet),
            ),
            (
                "64-bit masked header is 14 bytes",
                &[0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 9, 9, 9, 9, 0xAA],
                Role::Server,
                Ok(Some((true, OpCode::Binary, Some([9, 9, 9, 9]), 1, 14))),
            ),
        ];
        for (name, bytes, role, expect) in cases {
            let got = parse_header(bytes, *role)
                .map(|o| o.map(|(h, n)| (h.fin, h.opcode, h.mask, h.len, n)));
            assert_eq!(&got, expect, "{name}");
        }
    }
}
