//! RFC 6455 WebSocket, server side and the masked client side, sans-IO: bytes in, events and
//! bytes out. Nothing here touches a socket, a clock or a thread, so every rule of the protocol
//! is tested without sockets and the frame decoder is a three-line fuzz target.
//!
//! - [`Connection`] decodes frames for one connection: [`Connection::handle_read`] takes the bytes
//!   of one read (any split) and calls back with [`Event`]s; a frame that arrived whole is
//!   delivered borrowed from the read buffer, only an incomplete tail is copied.
//! - [`encode_frame`], [`encode_masked_frame`], [`encode_header`] and [`encode_close`] build
//!   frames: unmasked for the server, masked with a caller-given key for clients.
//! - [`handshake`] derives `Sec-WebSocket-Accept` and holds the subprotocol and extension hooks.
//!
//! Every violation is a [`WsError`] that maps to the [`CloseCode`] to send. The choices where the
//! RFC leaves room are written down in `docs/protocol.md`.
#![forbid(unsafe_code)]

mod close;
mod connection;
mod encode;
mod error;
mod frame;
pub mod handshake;
mod mask;
mod utf8;

pub use close::{CloseCode, CloseFrame, close_reply};
pub use connection::{Connection, Event};
pub use encode::{MAX_HEADER_LEN, encode_close, encode_frame, encode_header, encode_masked_frame};
pub use error::WsError;
pub use frame::{OpCode, Role};
pub use handshake::{accept_key, parse_extension_offers, select_subprotocol};
pub use mask::apply_mask;

/// Limits of the WebSocket codec, shared by every connection of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConfig {
    /// Largest frame payload accepted, judged from the frame header before anything is buffered.
    pub max_frame_size: usize,
    /// Largest message accepted after reassembly of its fragments.
    pub max_message_size: usize,
    /// Most frames one fragmented message may span.
    pub max_fragments: usize,
}

impl Default for WsConfig {
    /// Defaults as docs/operations.md lists them: 64 KiB messages and frames, 1024 fragments.
    fn default() -> Self {
        Self {
            max_frame_size: 64 * 1024,
            max_message_size: 64 * 1024,
            max_fragments: 1024,
        }
    }
}
