//! The HTTP/1.1 needed for the WebSocket upgrade, sans-IO. Nothing here touches a socket, a
//! clock or a thread.
#![forbid(unsafe_code)]

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
    /// Defaults from `shared/LIMITS.md`: 8 KiB request line, 8 KiB head, 64 headers.
    fn default() -> Self {
        Self {
            max_request_line: 8 * 1024,
            max_header_bytes: 8 * 1024,
            max_headers: 64,
            allowed_origins: Vec::new(),
        }
    }
}
