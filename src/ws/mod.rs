//! RFC 6455 WebSocket, server side and the masked client side, sans-IO: bytes and `now` in,
//! events and bytes out. Nothing here touches a socket, a clock or a thread.
#![forbid(unsafe_code)]

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
    /// Defaults from `shared/LIMITS.md`: 64 KiB messages and frames, 1024 fragments.
    fn default() -> Self {
        Self {
            max_frame_size: 64 * 1024,
            max_message_size: 64 * 1024,
            max_fragments: 1024,
        }
    }
}
