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
/// [`buffered_after_head`](Self::buffered_after_head) or
/// [`into_after_head`](Self::into_after_head).
/// Once `handle_read` has returned an error it returns that error forever (a failed reader stays
/// failed) and holds no buffer.
///
/// Each byte is examined once: the scan resumes where the previous read stopped and looks back at
/// most two bytes to recognise a blank line, so a head split over many small reads (byte by byte)
/// costs linear time, never quadratic re-parsing (the lesson of CVE-2023-43669). httparse runs
/// once, on the complete head.
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{HeadReader, HttpConfig, HttpError, Status};

    /// A complete upgrade head as browsers send it.
    const UPGRADE: &[u8] = b"GET /app/key?protocol=7 HTTP/1.1\r\nHost: example.com\r\n\
        Upgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn small_cfg() -> HttpConfig {
        HttpConfig {
            max_request_line: 32,
            max_header_bytes: 64,
            ..HttpConfig::default()
        }
    }

    /// Everything a caller can observe after feeding `chunks`: the status or error of the last
    /// read, the parsed request (as text), and the bytes kept after the head.
    fn outcome(cfg: &HttpConfig, chunks: &[&[u8]]) -> String {
        let mut reader = HeadReader::new();
        let mut last = Ok(Status::Partial);
        for chunk in chunks {
            last = reader.handle_read(cfg, chunk);
            if last.is_err() {
                break;
            }
        }
        format!(
            "{last:?} {:?} {:?}",
            reader.parse(cfg),
            reader.buffered_after_head()
        )
    }

    #[test]
    fn finds_the_end_of_the_head() {
        let cases: &[(&[u8], Result<Status, HttpError>)] = &[
            (b"GET / HTTP/1.1\r\n\r\n", Ok(Status::Complete(18))),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBODY",
                Ok(Status::Complete(27)),
            ),
            (b"GET / HTTP/1.1\nHost: a\n\n", Ok(Status::Complete(24))),
            (b"GET / HTTP/1.1\nHost: a\r\n\n", Ok(Status::Complete(25))),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", Ok(Status::Complete(26))),
            // Leading blank lines are skipped, not taken for the end of an empty head.
            (b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", Ok(Status::Complete(22))),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", Ok(Status::Partial)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r", Ok(Status::Partial)),
            (b"", Ok(Status::Partial)),
            (UPGRADE, Ok(Status::Complete(UPGRADE.len()))),
        ];
        for (input, expected) in cases {
            let mut reader = HeadReader::new();
            let got = reader.handle_read(&HttpConfig::default(), input);
            assert_eq!(&got, expected, "{:?}", String::from_utf8_lossy(input));
            if let Ok(Status::Complete(_)) = got {
                let parsed = reader.parse(&HttpConfig::default()).map(|r| r.method);
                assert_eq!(parsed, Ok("GET"), "{:?}", String::from_utf8_lossy(input));
            }
        }
    }

    #[test]
    fn caps_answer_414_and_431() {
        let cfg = small_cfg();
        let line_32 = format!("GET /{} HTTP/1.1", "a".repeat(18));
        let line_33 = format!("GET /{} HTTP/1.1", "a".repeat(19));
        assert_eq!(line_32.len(), 32);
        let head_64 = format!("{line_32}\r\nX: {}\r\n\r\n", "b".repeat(23));
        let head_65 = format!("{line_32}\r\nX: {}\r\n\r\n", "b".repeat(24));
        assert_eq!(head_64.len(), 64);
        let cases: Vec<(String, Result<Status, HttpError>)> = vec![
            (format!("{line_32}\r\n\r\n"), Ok(Status::Complete(36))),
            (
                format!("{line_33}\r\n\r\n"),
                Err(HttpError::RequestLineTooLong),
            ),
            (format!("{line_33}\n\n"), Err(HttpError::RequestLineTooLong)),
            // Refused before its end arrives: 33 bytes that cannot be a line of 32.
            (line_33.clone(), Err(HttpError::RequestLineTooLong)),
            (format!("{line_32}\r"), Ok(Status::Partial)),
            // 1 MiB without a line end: 414 after at most `max_header_bytes + 1` bytes.
            ("a".repeat(1 << 20), Err(HttpError::RequestLineTooLong)),
            (head_64.clone(), Ok(Status::Complete(64))),
            (head_65, Err(HttpError::HeadTooLarge)),
            (
                format!("{line_32}\r\nX: {}", "b".repeat(64)),
                Err(HttpError::HeadTooLarge),
            ),
            // Bytes after a head within the cap do not count against it.
            (
                format!("{head_64}{}", "c".repeat(1000)),
                Ok(Status::Complete(64)),
            ),
            // Leading blank lines count against the head cap.
            (
                format!("{}GET / HTTP/1.1\r\n\r\n", "\r\n".repeat(40)),
                Err(HttpError::HeadTooLarge),
            ),
        ];
        for (input, expected) in cases {
            let mut reader = HeadReader::new();
            assert_eq!(
                reader.handle_read(&cfg, input.as_bytes()),
                expected,
                "{input:?}"
            );
            if expected.is_err() {
                let err = expected.err();
                assert_eq!(
                    reader.handle_read(&cfg, b"\r\n\r\n").err(),
                    err,
                    "stays failed"
                );
                assert_eq!(reader.parse(&cfg).err(), Some(HttpError::Incomplete));
            }
        }
    }

    #[test]
    fn every_split_gives_the_same_answer() {
        let cfg = small_cfg();
        let inputs: &[&[u8]] = &[
            UPGRADE,
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nearly frame bytes",
            b"GET / HTTP/1.1\nHost: a\n\nx",
            b"\r\nGET / HTTP/1.1\r\n\r\n",
            b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        ];
        for &input in inputs {
            for cfg in [&cfg, &HttpConfig::default()] {
                let whole = outcome(cfg, &[input]);
                for at in 0..=input.len() {
                    let (a, b) = input.split_at(at);
                    assert_eq!(outcome(cfg, &[a, b]), whole, "split at {at} of {input:?}");
                }
                let bytes: Vec<&[u8]> = input.chunks(1).collect();
                assert_eq!(outcome(cfg, &bytes), whole, "byte by byte: {input:?}");
            }
        }
    }

    #[test]
    fn bytes_after_the_head_are_kept() {
        let cfg = HttpConfig::default();
        let mut reader = HeadReader::new();
        let mut first = UPGRADE.to_vec();
        first.extend_from_slice(b"\x81\x85");
        assert_eq!(
            reader.handle_read(&cfg, &first),
            Ok(Status::Complete(UPGRADE.len()))
        );
        assert_eq!(reader.buffered_after_head(), b"\x81\x85");
        // Later reads are appended, and the answer stays the same.
        assert_eq!(
            reader.handle_read(&cfg, b"GET /next"),
            Ok(Status::Complete(UPGRADE.len()))
        );
        assert_eq!(reader.buffered_after_head(), b"\x81\x85GET /next");
        assert_eq!(reader.parse(&cfg).map(|r| r.path), Ok("/app/key"));
        assert_eq!(reader.into_after_head(), b"\x81\x85GET /next");

        let mut reader = HeadReader::new();
        assert_eq!(
            reader.handle_read(&cfg, b"GET / HTTP/1.1\r\n"),
            Ok(Status::Partial)
        );
        assert_eq!(reader.buffered_after_head(), b"");
        assert_eq!(reader.parse(&cfg).err(), Some(HttpError::Incomplete));
        assert_eq!(reader.into_after_head(), b"");
    }

    /// A plain request's body arrives after its head and is collected by the same reader.
    #[test]
    fn body_arrives_after_the_head() {
        let cfg = HttpConfig::default();
        let head = b"POST /apps/1/events HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n";
        let mut reader = HeadReader::new();
        let mut reads: Vec<&[u8]> = vec![&head[..20], &head[20..], b"{\"ok\""];
        reads.push(b":true}");
        let mut statuses = Vec::new();
        for read in reads {
            statuses.push(reader.handle_read(&cfg, read));
        }
        let done = Ok(Status::Complete(head.len()));
        assert_eq!(statuses, [Ok(Status::Partial), done, done, done]);
        let length = reader.parse(&cfg).and_then(|req| req.content_length());
        assert_eq!(length, Ok(Some(11)));
        assert_eq!(reader.buffered_after_head(), b"{\"ok\":true}");
    }

    #[test]
    fn byte_by_byte_examines_each_byte_once() {
        let cfg = HttpConfig::default();
        let head = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X-Filler: abcdefgh\r\n".repeat(300)
        );
        assert!(head.len() < cfg.max_header_bytes);
        let mut reader = HeadReader::new();
        let mut last = Ok(Status::Partial);
        for byte in head.as_bytes() {
            last = reader.handle_read(&cfg, std::slice::from_ref(byte));
        }
        assert_eq!(last, Ok(Status::Complete(head.len())));
        assert_eq!(reader.examined, head.len());

        // A flood that never ends its head is examined up to the cap and no further.
        let mut reader = HeadReader::new();
        let mut reads = 0;
        while reader
            .handle_read(&cfg, b"GET / HTTP/1.1\r\nX: y\r\n")
            .is_ok()
        {
            reads += 1;
        }
        assert!(reads > 300, "{reads}");
        assert_eq!(reader.examined, cfg.max_header_bytes + 1);
    }

    proptest! {
        #[test]
        fn random_splits_match_one_read(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(&b"\r\n"[..]), Just(&b"\n"[..]), Just(&b"\r"[..]),
                    Just(&b"GET / HTTP/1.1"[..]), Just(&b"Host: a"[..]), Just(&b": "[..]),
                    Just(&b"Upgrade: websocket"[..]), Just(&b"xx"[..]),
                ],
                0..24,
            ),
            cuts in proptest::collection::vec(0usize..200, 0..6),
        ) {
            let input = parts.concat();
            let cfg = small_cfg();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for cut in cuts {
                chunks.push(&input[from..cut]);
                from = cut;
            }
            chunks.push(&input[from..]);
            prop_assert_eq!(outcome(&cfg, &chunks), outcome(&cfg, &[&input]));
        }
    }
}
