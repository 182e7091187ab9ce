//! Frame encoding: unmasked server frames, masked client frames, close frames.

use super::frame::OpCode;
use super::{CloseFrame, apply_mask};

/// Longest frame header: 2 bytes, an 8-byte extended length and a 4-byte mask (RFC 6455 5.2).
pub const MAX_HEADER_LEN: usize = 14;

/// Longest close reason: a control payload holds 125 bytes, two of them the code.
const MAX_CLOSE_REASON: usize = 123;

/// Writes a frame header into `buf` and returns its length, so a caller can put the header and
/// the payload in one buffer (a broadcast frame encoded once). Lengths use the shortest form, as
/// RFC 6455 5.2 requires. RSV bits are zero: no extension is negotiated.
pub fn encode_header(
    buf: &mut [u8; MAX_HEADER_LEN],
    fin: bool,
    opcode: OpCode,
    payload_len: u64,
    mask: Option<[u8; 4]>,
) -> usize {
    buf[0] = if fin { 0x80 } else { 0 } | opcode.bits();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut len = 2;
    if payload_len < 126 {
        buf[1] = mask_bit | payload_len as u8;
    } else if let Ok(short) = u16::try_from(payload_len) {
        buf[1] = mask_bit | 126;
        buf[2..4].copy_from_slice(&short.to_be_bytes());
        len = 4;
    } else {
        buf[1] = mask_bit | 127;
        buf[2..10].copy_from_slice(&payload_len.to_be_bytes());
        len = 10;
    }
    if let Some(key) = mask {
        buf[len..len + 4].copy_from_slice(&key);
        len += 4;
    }
    len
}

/// Appends an unmasked frame (server to client) to `out`.
pub fn encode_frame(out: &mut Vec<u8>, fin: bool, opcode: OpCode, payload: &[u8]) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let header_len = encode_header(&mut header, fin, opcode, payload.len() as u64, None);
    out.reserve(header_len + payload.len());
    out.extend_from_slice(&header[..header_len]);
    out.extend_from_slice(payload);
}

/// Appends a frame masked with `mask` (client to server) to `out`. The key comes from the caller
/// so the codec stays free of randomness; RFC 6455 5.3 wants it unpredictable.
pub fn encode_masked_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: [u8; 4],
) {
    let mut header = [0u8; MAX_HEADER_LEN];
    let header_len = encode_header(&mut header, fin, opcode, payload.len() as u64, Some(mask));
    out.reserve(header_len + payload.len());
    out.extend_from_slice(&header[..header_len]);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
}

/// Appends a close frame: empty for `None`, else the code and the reason, the reason cut at a
/// character boundary to fit the 125-byte control payload. Masked when `mask` is given.
pub fn encode_close(out: &mut Vec<u8>, close: Option<CloseFrame<'_>>, mask: Option<[u8; 4]>) {
    let mut payload = [0u8; 2 + MAX_CLOSE_REASON];
    let len = match close {
        None => 0,
        Some(close) => {
            let reason = truncate_at_char(close.reason, MAX_CLOSE_REASON);
            payload[..2].copy_from_slice(&close.code.0.to_be_bytes());
            payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
            2 + reason.len()
        }
    };
    match mask {
        Some(key) => encode_masked_frame(out, true, OpCode::Close, &payload[..len], key),
        None => encode_frame(out, true, OpCode::Close, &payload[..len]),
    }
}

/// The longest prefix of `text` that fits `max` bytes and ends on a character boundary.
fn truncate_at_char(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::CloseCode;

    #[test]
    fn header_lengths_use_the_shortest_form() {
        type Case = (u64, Option<[u8; 4]>, &'static [u8]);
        let cases: &[Case] = &[
            (0, None, &[0x82, 0x00]),
            (125, None, &[0x82, 125]),
            (126, None, &[0x82, 126, 0, 126]),
            (65535, None, &[0x82, 126, 0xFF, 0xFF]),
            (65536, None, &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
            (5, Some([1, 2, 3, 4]), &[0x82, 0x85, 1, 2, 3, 4]),
            (
                1 << 40,
                Some([9, 8, 7, 6]),
                &[0x82, 0xFF, 0, 0, 1, 0, 0, 0, 0, 0, 9, 8, 7, 6],
            ),
        ];
        for (len, mask, expect) in cases {
            let mut buf = [0u8; MAX_HEADER_LEN];
            let n = encode_header(&mut buf, true, OpCode::Binary, *len, *mask);
            assert_eq!(&buf[..n], *expect, "len {len}");
        }
    }

    #[test]
    fn fin_and_opcode_bits() {
        let mut out = Vec::new();
        encode_frame(&mut out, false, OpCode::Text, b"hi");
        encode_frame(&mut out, true, OpCode::Pong, b"");
        assert_eq!(out, [0x01, 0x02, b'h', b'i', 0x8A, 0x00]);
    }

    #[test]
    fn masked_frame_payload_is_masked() {
        let mut out = Vec::new();
        encode_masked_frame(
            &mut out,
            true,
            OpCode::Text,
            b"Hello",
            [0x37, 0xfa, 0x21, 0x3d],
        );
        // The example of RFC 6455 5.7.
        assert_eq!(
            out,
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
    }

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let reason = "é".repeat(70); // 140 bytes
        let mut out = Vec::new();
        encode_close(
            &mut out,
            Some(CloseFrame {
                code: CloseCode::NORMAL,
                reason: &reason,
            }),
            None,
        );
        assert_eq!(out[1], 2 + 122);
        assert_eq!(&out[2..4], &[0x03, 0xE8]);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
        let mut empty = Vec::new();
        encode_close(&mut empty, None, None);
        assert_eq!(empty, [0x88, 0x00]);
    }
}
