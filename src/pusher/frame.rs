//! Outbound Pusher messages as complete, unmasked WebSocket text frames in one shared buffer.
//!
//! A publish is encoded once; every subscriber's outbox then holds a clone of the same
//! [`Frame`], which is a reference count bump, not a copy. The buffer is an `Arc<[u8]>` rather
//! than `bytes::Bytes`: it is 16 bytes per outbox slot instead of 32, it needs no dependency,
//! and the only thing ringcast does with a frame is share it whole (nothing slices it). The one
//! copy into the `Arc` happens once per publish, not per subscriber.

use std::sync::Arc;

use crate::pusher::json;
use crate::ws::{MAX_HEADER_LEN, OpCode, encode_header};

/// Room reserved in front of a payload for the largest server frame header (RFC 6455 5.2:
/// 2 bytes, plus 8 for a 64-bit length; servers never mask, so the 4 mask bytes of
/// [`MAX_HEADER_LEN`] are never used).
const MAX_HEADER: usize = 10;

/// A complete WebSocket text frame (header and payload), shared by reference count.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame(Arc<[u8]>);

impl Frame {
    /// The bytes to write to the socket, header included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text payload (the Pusher JSON message), without the frame header.
    pub fn payload(&self) -> &[u8] {
        let skip = match self.0.get(1).map(|b| b & 0x7f) {
            Some(126) => 4,
            Some(127) => 10,
            _ => 2,
        };
        self.0.get(skip..).unwrap_or_default()
    }

    /// The payload as text; frames are only ever built from UTF-8.
    pub fn text(&self) -> &str {
        std::str::from_utf8(self.payload()).unwrap_or_default()
    }

    /// A frame received whole from another instance of a cluster, checked to be what this
    /// module builds (one final, unmasked text frame whose header length is the payload's, with
    /// a UTF-8 payload), so bytes from a broker never reach a client as anything else.
    pub fn from_wire(bytes: &[u8]) -> Option<Self> {
        let (&first, rest) = bytes.split_first()?;
        let (&second, rest) = rest.split_first()?;
        if first != 0x81 || second & 0x80 != 0 {
            return None;
        }
        let (length, payload) = match second & 0x7f {
            126 => {
                let (len, payload) = rest.split_at_checked(2)?;
                (u64::from(u16::from_be_bytes([len[0], len[1]])), payload)
            }
            127 => {
                let (len, payload) = rest.split_at_checked(8)?;
                (u64::from_be_bytes(len.try_into().ok()?), payload)
            }
            short => (u64::from(short), rest),
        };
        if u64::try_from(payload.len()).ok()? != length
            || simdutf8::basic::from_utf8(payload).is_err()
        {
            return None;
        }
        Some(Self(Arc::from(bytes)))
    }
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Frame").field(&self.text()).finish()
    }
}

/// Builds one frame: JSON written after a reserved header gap, then the header filled in and
/// the used range copied once into the shared buffer.
pub(crate) struct FrameBuilder {
    buf: Vec<u8>,
}

impl FrameBuilder {
    /// A builder whose payload is expected to be about `payload_hint` bytes.
    pub(crate) fn with_capacity(payload_hint: usize) -> Self {
        let mut buf = Vec::with_capacity(MAX_HEADER + payload_hint);
        buf.resize(MAX_HEADER, 0);
        Self { buf }
    }

    /// Appends literal JSON text.
    pub(crate) fn raw(&mut self, text: &str) -> &mut Self {
        self.buf.extend_from_slice(text.as_bytes());
        self
    }

    /// Appends `s` as a JSON string literal.
    pub(crate) fn string(&mut self, s: &str) -> &mut Self {
        json::write_str(&mut self.buf, s);
        self
    }

    /// Finishes the frame: one allocation of exactly the frame's size.
    pub(crate) fn finish(&mut self) -> Frame {
        let payload_len = (self.buf.len() - MAX_HEADER) as u64;
        let mut header = [0u8; MAX_HEADER_LEN];
        let header_len = encode_header(&mut header, true, OpCode::Text, payload_len, None);
        let start = MAX_HEADER - header_len;
        self.buf[start..MAX_HEADER].copy_from_slice(&header[..header_len]);
        Frame(Arc::from(&self.buf[start..]))
    }
}

/// Encodes a Pusher event as the frame every subscriber receives:
/// `{"event":..,"channel":..,"data":..,"user_id":..}` where `data` is sent as a JSON string, as
/// pusher-js expects (it JSON-parses string data itself). `user_id` is set for client events
/// on presence channels, telling receivers which member sent them.
pub fn encode_event_frame(event: &str, channel: &str, data: &str, user_id: Option<&str>) -> Frame {
    let mut b = FrameBuilder::with_capacity(48 + event.len() + channel.len() + data.len() * 9 / 8);
    b.raw("{\"event\":")
        .string(event)
        .raw(",\"channel\":")
        .string(channel);
    b.raw(",\"data\":").string(data);
    if let Some(user_id) = user_id {
        b.raw(",\"user_id\":").string(user_id);
    }
    b.raw("}").finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back_from_the_wire_and_anything_else_is_refused() {
        for size in [3, 200, 70_000] {
            let frame = encode_event_frame("e", "c", &"x".repeat(size), None);
            assert_eq!(Frame::from_wire(frame.as_bytes()), Some(frame.clone()));
            let bytes = frame.as_bytes();
            assert_eq!(Frame::from_wire(&bytes[..bytes.len() - 1]), None, "short");
        }
        let refused: &[&[u8]] = &[
            b"",
            b"\x81",
            b"\x82\x01a",
            b"\x01\x01a",
            b"\x81\x81abcda",
            b"\x81\x02a",
            b"\x81\x01\xff",
        ];
        for bytes in refused {
            assert_eq!(Frame::from_wire(bytes), None, "{bytes:?}");
        }
    }

    #[test]
    fn header_sizes_follow_rfc_6455() {
        for (len, header_len, second) in [
            (0, 2, 0),
            (125, 2, 125),
            (126, 4, 126),
            (65535, 4, 126),
            (65536, 10, 127),
        ] {
            let data = "x".repeat(len);
            let mut b = FrameBuilder::with_capacity(len);
            b.raw(&data);
            let frame = b.finish();
            assert_eq!(frame.as_bytes()[0], 0x81);
            assert_eq!(frame.as_bytes()[1], second, "len {len}");
            assert_eq!(frame.as_bytes().len(), header_len + len);
            assert_eq!(frame.payload().len(), len);
        }
        let mut b = FrameBuilder::with_capacity(0);
        let frame = b.raw(&"y".repeat(70_000)).finish();
        assert_eq!(&frame.as_bytes()[2..10], &70_000u64.to_be_bytes());
    }

    #[test]
    fn event_frame_is_the_wire_format_pusher_js_expects() {
        let frame = encode_event_frame("my-event", "my-channel", "{\"a\":\"b\\\"\"}", None);
        assert_eq!(
            frame.text(),
            r#"{"event":"my-event","channel":"my-channel","data":"{\"a\":\"b\\\"\"}"}"#
        );
        let v: serde_json::Value = serde_json::from_str(frame.text()).unwrap_or_default();
        assert_eq!(v["data"], "{\"a\":\"b\\\"\"}");
        let frame = encode_event_frame("client-x", "presence-r", "1", Some("u\"1"));
        assert_eq!(
            frame.text(),
            r#"{"event":"client-x","channel":"presence-r","data":"1","user_id":"u\"1"}"#
        );
    }

    #[test]
    fn clones_share_one_buffer() {
        let a = encode_event_frame("e", "c", "d", None);
        let b = a.clone();
        assert!(std::ptr::eq(a.as_bytes(), b.as_bytes()));
        assert_eq!(std::mem::size_of::<Frame>(), 16);
    }
}
