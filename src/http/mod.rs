//! The HTTP/1.1 needed for the WebSocket upgrade and the plain requests served on the same
//! listener (HTTP API, `/health`, `/metrics`), sans-IO. Nothing here touches a socket, a clock
//! or a thread: bytes go in, a parsed request or an error with its status comes out, and
//! response bytes are appended to a buffer the caller sends.
//!
//! A connection's handshake, in order:
//! 1. [`HeadReader::handle_read`] with each read until [`Status::Complete`] (414 and 431 come
//!    from here, however the head was split);
//! 2. [`HeadReader::parse`] into a [`Request`] (400, 431 for too many fields, 505);
//! 3. route on [`Request::path`]; for a WebSocket route [`validate_upgrade`] (400, 403, 405,
//!    426), for a plain route [`Request::content_length`] and the body from
//!    [`HeadReader::buffered_after_head`];
//! 4. answer with [`write_switching_protocols`], [`write_response`] or [`write_error`].
//!
//! The choices where the RFCs leave room are written down in `docs/protocol.md`.
#![forbid(unsafe_code)]

mod error;
mod head;
mod query;
mod request;
mod response;
mod status;
mod upgrade;

pub use error::HttpError;
pub use head::{HeadReader, Status};
pub use query::{percent_decode, query_pairs};
pub use request::{Header, Request, comma_separated};
pub use response::{
    write_error, write_response, write_switching_protocols, write_switching_protocols_with,
};
pub use status::StatusCode;
pub use upgrade::{HandshakeError, Upgrade, validate_upgrade};

/// Limits of an HTTP request head, shared by every connection of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Longest request line accepted (answer 414).
    pub max_request_line: usize,
    /// Most bytes of the whole request head (answer 431).
    pub max_header_bytes: usize,
    /// Most header fields (answer 431).
    pub max_headers: usize,
    /// Origins allowed to upgrade; empty allows every origin (answer 403 otherwise).
    pub allowed_origins: Vec<String>,
}

impl Default for HttpConfig {
    /// Defaults as docs/operations.md lists them: 8 KiB request line, 8 KiB head, 64 headers.
    fn default() -> Self {
        Self {
            max_request_line: 8 * 1024,
            max_header_bytes: 8 * 1024,
            max_headers: 64,
            allowed_origins: Vec::new(),
        }
    }
}
