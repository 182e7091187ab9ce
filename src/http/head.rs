//! The incremental request-head reader: collects bytes until the blank line that ends an HTTP/1.x
//! request head, enforcing the size caps as the bytes arrive.

use super::{HttpConfig, HttpError, Request};

/// Progress of a [`HeadReader`] after a read, shaped like httparse's `Status`: running out of
/// input is not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The head has not ended yet; feed more bytes.
    Partial,
    /// The head ends after this many bytes; what follows them is body or early WebSocket frames,
    /// kept in [`HeadReader::buffered_after_head`].
    Complete(usize),
}

/// Incremental request-head reader. A connection in its handshake (or between HTTP requests)
/// owns one; it is dropped once the head is parsed, so an established connection holds none.
///
/// Call order: [`handle_read`](Self::handle_read) with each read until it returns
/// [`Status::Complete`], then [`parse`](Self::parse), then take the bytes after the head with
/// [`buffered_after_head`](Self::buffered_after_head) or [`into_after_head`](Self::into_after_head).
/// Once `handle_read` has returned an error it returns that error forever (a failed reader stays
/// failed) and holds no buffer.
///
/// Each byte is examined once: the scan resumes where the previous read stopped and looks back at
/// most two bytes to recognise a blank line, so a head split over many small reads (byte by byte)
/// costs linear time, never quadratic re-parsing (the lesson of CVE-2023-43669). httparse runs once,
/// on the complete head.
#[derive(Debug, Default)]
pub struct HeadReader {
    /// Every byte received: the head, then whatever followed it.
    buf: Vec<u8>,
    /// INVARIANT: `scanned <= buf.len()`. Bytes before it were examined and are never examined
    /// again.
    scanned: usize,
    /// Start of the request line: leading blank lines before it are skipped (RFC 9112 section 2.2).
    line_start: usize,
    /// Whether the `\n` ending the request line has been seen.
    request_line_done: bool,
    /// Length of the head once its blank line has been seen.
    head_len: Option<usize>,
    /// The error returned once; returned again by every later call.
    failed: Option<HttpError>,
    /// Bytes examined by the scan in all, to prove in tests that the work is linear.
    #[cfg(test)]
    examined: usize,
}

impl HeadReader {
    /// An empty reader; allocates nothing until the first bytes arrive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `bytes` and scans them for the end of the head.
    ///
    /// Returns `Ok(Status::Partial)` until the head is complete, then `Ok(Status::Complete(len))`.
    /// After that, further bytes are appended to [`buffered_after_head`](Self::buffered_after_head)
    /// (a body still arriving) and the same `Complete` comes back; the caller bounds how much it
    /// feeds. Errors: [`HttpError::RequestLineTooLong`] (414) once the request line is longer than
    /// `max_request_line`, [`HttpError::HeadTooLarge`] (431) once the head is longer than
    /// `max_header_bytes`. The answer does not depend on how the bytes were split into reads.
    pub fn handle_read(&mut self, cfg: &HttpConfig, bytes: &[u8]) -> Result<Status, HttpError> {
        if let Some(err) = self.failed {
            return Err(err);
        }
        self.buf.extend_from_slice(bytes);
        if let Some(len) = self.head_len {
            return Ok(Status::Complete(len));
        }
        match self.scan(cfg) {
            Ok(status) => Ok(status),
            Err(err) => {
                self.failed = Some(err);
                self.buf = Vec::new();
                Err(err)
            }
        }
    }

    /// Parses the complete head with httparse. [`HttpError::Incomplete`] before
    /// [`Status::Complete`]; [`HttpError::TooManyHeaders`] (431) past `max_headers`;
    /// [`HttpError::Malformed`] (400) for bad syntax. See [`Request`] for the target forms
    /// accepted.
    pub fn parse(&self, cfg: &HttpConfig) -> Result<Request<'_>, HttpError> {
        let head = self
            .head_len
            .and_then(|len| self.buf.get(..len))
            .ok_or(HttpError::Incomplete)?;
        Request::parse(head, cfg)
    }

    /// The bytes received after the head: a body, or WebSocket frames a client sent without
    /// waiting for the 101. Empty before the head is complete.
    pub fn buffered_after_head(&self) -> &[u8] {
        self.head_len
            .and_then(|len| self.buf.get(len..))
            .unwrap_or_default()
    }

    /// Consumes the reader and returns the bytes after the head in its own buffer, so a caller
    /// can keep them without another copy of the head. Empty before the head is complete.
    pub fn into_after_head(self) -> Vec<u8> {
        let Some(len) = self.head_len else {
            return Vec::new();
        };
        let mut buf = self.buf;
        buf.drain(..len.min(buf.len()));
        buf
    }

    /// Scans the bytes not yet examined. A head must end within `max_header_bytes`, so no byte
    /// past `max_header_bytes + 1` is ever examined: the cap bounds the work as well as the
    /// answer.
    fn scan(&mut self, cfg: &HttpConfig) -> Result<Status, HttpError> {
        let limit = self.buf.len().min(cfg.max_header_bytes.saturating_add(1));
        let start = self.scanned;
        let window = self.buf.get(start..limit).unwrap_or_default();
        for (offset, &byte) in window.iter().enumerate() {
            #[cfg(test)]
            {
                self.examined += 1;
            }
            if byte != b'\n' {
                continue;
            }
            let pos = start + offset;
            if !self.request_line_done {
                let line = self.buf.get(self.line_start..pos).unwrap_or_default();
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    self.line_start = pos + 1;
                } else if line.len() > cfg.max_request_line {
                    return Err(HttpError::RequestLineTooLong);
                } else {
                    self.request_line_done = true;
                }
                continue;
            }
            // A blank line ends the head: this `\n` follows another `\n`, or `\n\r`. httparse
            // accepts bare `\n` line ends (RFC 9112 section 2.2 allows it), so this does too.
            let before = |back: usize| pos.checked_sub(back).and_then(|i| self.buf.get(i)).copied();
            let blank =
                before(1) == Some(b'\n') || (before(1) == Some(b'\r') && before(2) == Some(b'\n'));
            if blank {
                let len = pos + 1;
                if len > cfg.max_header_bytes {
                    return Err(HttpError::HeadTooLarge);
                }
                self.scanned = len;
                self.head_len = Some(len);
                return Ok(Status::Complete(len));
            }
        }
        self.scanned = limit;
        if !self.request_line_done {
            let line = self.buf.get(self.line_start..limit).unwrap_or_default();
            // A `\r` may still be followed by the `\n` that ends the line; it is not counted.
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > cfg.max_request_line {
                return Err(HttpError::RequestLineTooLong);
            }
        }
        if self.scanned > cfg.max_header_bytes {
            return Err(HttpError::HeadTooLarge);
        }
        Ok(Status::Partial)
    }
}
