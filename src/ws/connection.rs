//! Per-connection decoding state: frames in, [`Event`]s out, for any split of the input.

use super::close::parse_close_payload;
use super::frame::{FrameHead, MAX_CONTROL_PAYLOAD, parse_header};
use super::utf8::{validate_more, validate_whole};
use super::{CloseFrame, OpCode, Role, WsConfig, WsError, apply_mask};

/// What a peer said, borrowed from the read buffer (a frame that arrived whole) or from the
/// connection's reassembly buffer (a fragmented or split message). Valid only during the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete text message, UTF-8 checked.
    Text(&'a str),
    /// A complete binary message.
    Binary(&'a [u8]),
    /// A Ping; the caller answers with a Pong carrying the same payload (pongs may be coalesced).
    Ping(&'a [u8]),
    /// A Pong (answer or unsolicited heartbeat).
    Pong(&'a [u8]),
    /// The peer started or answered the closing handshake; `None` when it sent no code. A valid
    /// close only: an invalid one is a [`WsError`]. Nothing is read after it.
    Close(Option<CloseFrame<'a>>),
}

/// Longest header bytes kept between reads: a complete header is at most 14 bytes, so an
/// incomplete one is at most 13.
const HEADER_STASH: usize = 13;

/// Where the decoder stands inside the byte stream.
#[derive(Debug, Clone, Copy)]
enum ReadState {
    /// Before or inside a frame header; `buf[..len]` holds the header bytes seen so far.
    Header { buf: [u8; HEADER_STASH], len: u8 },
    /// Inside the payload of a frame that did not arrive whole. `mask` is already rotated to the
    /// next payload byte, so the payload position need not be kept.
    Payload {
        opcode: OpCode,
        fin: bool,
        mask: Option<[u8; 4]>,
        remaining: u64,
    },
}

impl ReadState {
    const START: Self = Self::Header {
        buf: [0; HEADER_STASH],
        len: 0,
    };
}

/// The kind of the data message being reassembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageKind {
    Text,
    Binary,
}

/// Heap state, allocated only while a frame is split across reads or a message is fragmented,
/// and released as soon as the connection is back between messages.
#[derive(Debug, Default)]
struct Buffers {
    /// The data message reassembled so far. Grows with the bytes that actually arrive, never
    /// reserved from a header's claim, so a peer cannot make us allocate what it does not send.
    message: Vec<u8>,
    /// `message[..utf8_checked]` is known to be whole, valid code points (text messages only).
    utf8_checked: usize,
    /// The payload so far of a control frame split across reads (at most 125 bytes).
    control: Vec<u8>,
}

/// Decoding state of one WebSocket connection, kept tiny for a million idle connections: 40
/// bytes on x86_64 (a test asserts at most 48), no heap until a frame is split across reads or a
/// message is fragmented.
///
/// Call order: [`Connection::handle_read`] with each chunk of bytes read from the socket, in
/// order. Answer each [`Event::Ping`] with a Pong, each [`Event::Close`] with
/// [`super::close_reply`] then [`Connection::handle_close_sent`]; on an error, send a close with
/// `CloseCode::from(error)`, call [`Connection::handle_close_sent`] and stop reading. The
/// connection is done when [`Connection::is_closed`].
#[derive(Debug)]
pub struct Connection {
    /// INVARIANT: `Some` only while `read` is `Payload` or `fragments > 0` (between calls).
    heap: Option<Box<Buffers>>,
    read: ReadState,
    /// Frames of the data message in progress; 0 when no message is in progress.
    fragments: u32,
    message: MessageKind,
    role: Role,
    close_received: bool,
    close_sent: bool,
    failed: Option<WsError>,
}

impl Connection {
    /// A connection at the start of the frame stream, right after the handshake.
    pub fn new(role: Role) -> Self {
        Self {
            heap: None,
            read: ReadState::START,
            fragments: 0,
            message: MessageKind::Binary,
            role,
            close_received: false,
            close_sent: false,
            failed: None,
        }
    }

    /// Decodes `input`, the next bytes from the peer, calling `on_event` for each message and
    /// control frame.
    ///
    /// `input` is unmasked in place; a complete frame contained in `input` is delivered borrowed
    /// (zero copy); only an incomplete tail is copied into the connection. Works for any split.
    /// After a Close event, later data is ignored. After an error, the connection stays failed
    /// and every later call returns the same error.
    pub fn handle_read(
        &mut self,
        cfg: &WsConfig,
        input: &mut [u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), WsError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let result = self.read_frames(cfg, input, on_event);
        if let Err(error) = result {
            self.failed = Some(error);
        }
        let between_messages = matches!(self.read, ReadState::Header { .. }) && self.fragments == 0;
        if between_messages || self.failed.is_some() || self.close_received {
            self.heap = None;
        }
        result
    }

    /// Records that we sent a close frame (our own or the echo), so the caller can tell when the
    /// closing handshake is complete.
    pub fn handle_close_sent(&mut self) {
        self.close_sent = true;
    }

    /// Whether the peer's close frame arrived; no data is read after it.
    pub fn is_close_received(&self) -> bool {
        self.close_received
    }

    /// Whether we sent a close frame ([`Connection::handle_close_sent`]).
    pub fn is_close_sent(&self) -> bool {
        self.close_sent
    }

    /// Whether the closing handshake is complete both ways: the TCP connection can be closed.
    pub fn is_closed(&self) -> bool {
        self.close_sent && self.close_received
    }

    /// The error that failed this connection, if one did.
    pub fn error(&self) -> Option<WsError> {
        self.failed
    }

    /// Which end of the connection this is.
    pub fn role(&self) -> Role {
        self.role
    }

    fn read_frames(
        &mut self,
        cfg: &WsConfig,
        mut input: &mut [u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), WsError> {
        while !input.is_empty() && !self.close_received {
            input = match self.read {
                ReadState::Header { .. } => self.read_header(cfg, input, on_event)?,
                ReadState::Payload { .. } => self.read_payload(input, on_event)?,
            };
        }
        Ok(())
    }

    /// Parses a header from the stashed bytes and `input`, then starts its frame.
    fn read_header<'i>(
        &mut self,
        cfg: &WsConfig,
        input: &'i mut [u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<&'i mut [u8], WsError> {
        let ReadState::Header { buf, len } = &mut self.read else {
            return Ok(input);
        };
        let stashed = usize::from(*len);
        if stashed == 0 {
            // The common case: the header lies whole in this read; parse it where it is.
            return match parse_header(input, self.role)? {
                Some((head, header_len)) => {
                    let rest = input.get_mut(header_len..).unwrap_or_default();
                    self.start_frame(cfg, head, rest, on_event)
                }
                None => {
                    // An incomplete header is at most 13 bytes.
                    if let Some(dst) = buf.get_mut(..input.len()) {
                        dst.copy_from_slice(input);
                        *len = input.len() as u8;
                    }
                    Ok(Default::default())
                }
            };
        }
        let mut joined = [0u8; HEADER_STASH + 1];
        let take = input.len().min(joined.len() - stashed);
        joined[..stashed].copy_from_slice(&buf[..stashed]);
        joined[stashed..stashed + take].copy_from_slice(&input[..take]);
        match parse_header(&joined[..stashed + take], self.role)? {
            Some((head, header_len)) => {
                self.read = ReadState::START;
                // The header ends after the stash, since the stash alone was incomplete.
                let rest = input.get_mut(header_len - stashed..).unwrap_or_default();
                self.start_frame(cfg, head, rest, on_event)
            }
            None => {
                // Incomplete even with 14 bytes is impossible, so `take` was all of `input` and
                // the stash stays within 13 bytes.
                if let Some(dst) = buf.get_mut(stashed..stashed + take) {
                    dst.copy_from_slice(&input[..take]);
                    *len = (stashed + take) as u8;
                }
                Ok(Default::default())
            }
        }
    }

    /// Judges a complete header against the message state and limits, then delivers the frame
    /// in place if its payload is all in `rest`, or starts buffering it.
    fn start_frame<'i>(
        &mut self,
        cfg: &WsConfig,
        head: FrameHead,
        rest: &'i mut [u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<&'i mut [u8], WsError> {
        let whole = rest.len() as u64 >= head.len;
        if head.opcode.is_control() {
            if whole {
                // `head.len <= rest.len()` was just checked.
                let (payload, rest) = rest.split_at_mut(head.len as usize);
                if let Some(mask) = head.mask {
                    apply_mask(payload, mask, 0);
                }
                self.close_received |= deliver_control(head.opcode, payload, on_event)?;
                return Ok(rest);
            }
            self.heap.get_or_insert_default().control.clear();
        } else {
            self.check_data_frame(cfg, &head)?;
            let starts_message = head.opcode != OpCode::Continuation;
            if starts_message && head.fin && whole {
                // A whole message in one frame and one read: the zero-copy path.
                let (payload, rest) = rest.split_at_mut(head.len as usize);
                if let Some(mask) = head.mask {
                    apply_mask(payload, mask, 0);
                }
                match head.opcode {
                    OpCode::Text => on_event(Event::Text(validate_whole(payload)?)),
                    _ => on_event(Event::Binary(payload)),
                }
                return Ok(rest);
            }
            if starts_message {
                self.message = if head.opcode == OpCode::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                let heap = self.heap.get_or_insert_default();
                heap.message.clear();
                heap.utf8_checked = 0;
            }
            self.fragments = self.fragments.saturating_add(1);
        }
        self.read = ReadState::Payload {
            opcode: head.opcode,
            fin: head.fin,
            mask: head.mask,
            remaining: head.len,
        };
        self.read_payload(rest, on_event)
    }

    /// Sequencing, size and fragment-count rules for a data frame, all judged from its header
    /// before any of its payload is buffered.
    fn check_data_frame(&self, cfg: &WsConfig, head: &FrameHead) -> Result<(), WsError> {
        let in_message = self.fragments > 0;
        match (head.opcode, in_message) {
            (OpCode::Continuation, false) => return Err(WsError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, true) => return Err(WsError::ExpectedContinuation),
            _ => {}
        }
        if head.len > cfg.max_frame_size as u64 {
            return Err(WsError::FrameTooBig);
        }
        let so_far = self
            .heap
            .as_ref()
            .map_or(0, |heap| heap.message.len() as u64);
        if so_far.saturating_add(head.len) > cfg.max_message_size as u64 {
            return Err(WsError::MessageTooBig);
        }
        if in_message && self.fragments as usize >= cfg.max_fragments {
            return Err(WsError::TooManyFragments);
        }
        Ok(())
    }

    /// Takes what `input` holds of the current frame's payload into the buffers, and delivers
    /// the frame (and message) when it is complete.
    fn read_payload<'i>(
        &mut self,
        input: &'i mut [u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<&'i mut [u8], WsError> {
        let ReadState::Payload {
            opcode,
            fin,
            mask,
            remaining,
        } = self.read
        else {
            return Ok(input);
        };
        let take = remaining.min(input.len() as u64) as usize;
        // `take <= input.len()` by construction.
        let (chunk, rest) = input.split_at_mut(take);
        let mask = mask.map(|key| {
            apply_mask(chunk, key, 0);
            let mut next = key;
            next.rotate_left(take % 4);
            next
        });
        let remaining = remaining - take as u64;
        let heap = self.heap.get_or_insert_default();
        if opcode.is_control() {
            heap.control.extend_from_slice(chunk);
            if remaining > 0 {
                self.read = ReadState::Payload {
                    opcode,
                    fin,
                    mask,
                    remaining,
                };
                return Ok(rest);
            }
            self.read = ReadState::START;
            let payload = std::mem::take(&mut heap.control);
            debug_assert!(payload.len() as u64 <= MAX_CONTROL_PAYLOAD);
            self.close_received |= deliver_control(opcode, &payload, on_event)?;
            return Ok(rest);
        }
        heap.message.extend_from_slice(chunk);
        let last = remaining == 0 && fin;
        if self.message == MessageKind::Text && !last {
            heap.utf8_checked = validate_more(&heap.message, heap.utf8_checked)?;
        }
        if remaining > 0 {
            self.read = ReadState::Payload {
                opcode,
                fin,
                mask,
                remaining,
            };
            return Ok(rest);
        }
        self.read = ReadState::START;
        if last {
            match self.message {
                MessageKind::Text => on_event(Event::Text(validate_whole(&heap.message)?)),
                MessageKind::Binary => on_event(Event::Binary(&heap.message)),
            }
            heap.message.clear();
            heap.utf8_checked = 0;
            self.fragments = 0;
        }
        Ok(rest)
    }
}

/// Delivers a complete control frame; returns whether it was a Close.
fn deliver_control(
    opcode: OpCode,
    payload: &[u8],
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<bool, WsError> {
    match opcode {
        OpCode::Ping => on_event(Event::Ping(payload)),
        OpCode::Pong => on_event(Event::Pong(payload)),
        _ => {
            on_event(Event::Close(parse_close_payload(payload)?));
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connection_is_at_most_48_bytes() {
        let size = std::mem::size_of::<Connection>();
        assert!(size <= 48, "Connection is {size} bytes");
    }

    #[test]
    fn heap_is_released_between_messages() {
        let cfg = WsConfig::default();
        let mut conn = Connection::new(Role::Client);
        let mut first = [0x01, 0x01, b'a'];
        conn.handle_read(&cfg, &mut first, &mut |_| {}).unwrap();
        assert!(conn.heap.is_some(), "a fragmented message needs the heap");
        let mut events = Vec::new();
        let mut last = [0x80, 0x01, b'b'];
        conn.handle_read(&cfg, &mut last, &mut |e| events.push(format!("{e:?}")))
            .unwrap();
        assert_eq!(events, ["Text(\"ab\")"]);
        assert!(
            conn.heap.is_none(),
            "back between messages, the heap is freed"
        );
    }

    #[test]
    fn split_header_stays_inline() {
        let cfg = WsConfig::default();
        let mut conn = Connection::new(Role::Client);
        conn.handle_read(&cfg, &mut [0x82, 0x7E], &mut |_| {})
            .unwrap();
        conn.handle_read(&cfg, &mut [0x00], &mut |_| {}).unwrap();
        assert!(conn.heap.is_none());
    }

    #[test]
    fn empty_fragment_flood_holds_no_payload_memory() {
        let cfg = WsConfig::default();
        let mut conn = Connection::new(Role::Client);
        let mut flood = vec![0x01, 0x00];
        for _ in 1..cfg.max_fragments {
            flood.extend_from_slice(&[0x00, 0x00]);
        }
        conn.handle_read(&cfg, &mut flood, &mut |_| {}).unwrap();
        let heap = conn
            .heap
            .as_ref()
            .map(|heap| heap.message.capacity() + heap.control.capacity());
        assert_eq!(heap, Some(0), "empty fragments must not grow buffers");
        assert_eq!(conn.fragments as usize, cfg.max_fragments);
        let mut one_more = [0x00, 0x00];
        let result = conn.handle_read(&cfg, &mut one_more, &mut |_| {});
        assert_eq!(result, Err(WsError::TooManyFragments));
        assert!(conn.heap.is_none(), "a failed connection holds no buffers");
    }
}
