//! The client side of the WebSocket upgrade and frame codec, as the load generator uses them:
//! building the upgrade request, checking the 101 answer, and a thin adapter over the frame
//! decoder so the event loop sees one small event type.

use base64::Engine as _;

use crate::target::Target;

/// The key of one upgrade request and the bytes of a not yet complete answer. Boxed and
/// dropped once the connection is open, so an idle connection carries none of it.
#[derive(Debug)]
pub struct Handshake {
    /// `Sec-WebSocket-Key`, base64 of 16 random bytes.
    pub key: [u8; 24],
    /// Answer bytes received so far (only when the head arrived in pieces).
    pub partial: Vec<u8>,
}

impl Handshake {
    /// A handshake with a fresh random key.
    pub fn new(rng: &mut fastrand::Rng) -> Self {
        let mut raw = [0u8; 16];
        rng.fill(&mut raw);
        let mut key = [0u8; 24];
        // 16 bytes always encode to exactly 24 base64 characters.
        let _ = base64::engine::general_purpose::STANDARD.encode_slice(raw, &mut key);
        Self {
            key,
            partial: Vec::new(),
        }
    }

    /// Appends the upgrade request for `target` to `out`.
    pub fn write_request(&self, target: &Target, out: &mut Vec<u8>) {
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(target.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(target.host.as_bytes());
        out.extend_from_slice(
            b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: ",
        );
        out.extend_from_slice(&self.key);
        out.extend_from_slice(b"\r\n\r\n");
    }
}

/// What an upgrade answer says so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    /// The head is not complete yet.
    Partial,
    /// 101 with the right accept value; the head is `head_len` bytes, frames follow.
    Accepted {
        /// Length of the response head, including the blank line.
        head_len: usize,
    },
    /// The server answered with another status.
    Rejected(u16),
    /// Not a valid upgrade answer.
    Malformed,
}

/// Most header fields read from an upgrade answer; a valid one has about five.
const MAX_RESPONSE_HEADERS: usize = 32;

/// Reads an upgrade answer to a request made with `key`.
pub fn handle_upgrade_response(buf: &[u8], key: &[u8; 24]) -> Upgrade {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Upgrade::Partial,
        Err(_) => return Upgrade::Malformed,
    };
    match resp.code {
        Some(101) => {}
        Some(code) => return Upgrade::Rejected(code),
        None => return Upgrade::Malformed,
    }
    let expected = ringcast::ws::handshake::accept_key(key);
    let accept = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"));
    match accept {
        Some(h) if h.value == expected.as_slice() => Upgrade::Accepted { head_len },
        _ => Upgrade::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> [u8; 24] {
        *b"dGhlIHNhbXBsZSBub25jZQ=="
    }

    #[test]
    fn request_is_a_valid_upgrade() {
        let hs = Handshake {
            key: key(),
            partial: Vec::new(),
        };
        let target = Target::parse("ws://127.0.0.1:9/app/k?protocol=7").unwrap();
        let mut out = Vec::new();
        hs.write_request(&target, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /app/k?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn random_keys_are_base64_of_16_bytes() {
        let hs = Handshake::new(&mut fastrand::Rng::with_seed(1));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(hs.key)
            .unwrap();
        assert_eq!(raw.len(), 16);
    }

    /// RFC 6455 section 1.3's sample key and accept value.
    #[test]
    fn answers_are_classified() {
        let ok =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        let mut with_frame = ok.to_vec();
        with_frame.extend_from_slice(&[0x81, 0x00]);
        let wrong = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: AAAA\r\n\r\n";
        let cases: &[(&[u8], Upgrade)] = &[
            (ok, Upgrade::Accepted { head_len: ok.len() }),
            (&with_frame, Upgrade::Accepted { head_len: ok.len() }),
            (&ok[..40], Upgrade::Partial),
            (
                b"HTTP/1.1 503 Service Unavailable\r\n\r\n",
                Upgrade::Rejected(503),
            ),
            (wrong, Upgrade::Malformed),
            (b"HTTP/1.1 101 OK\r\n\r\n", Upgrade::Malformed),
            (b"SSH-2.0-OpenSSH\r\n\r\n", Upgrade::Malformed),
        ];
        for (input, want) in cases {
            assert_eq!(
                handle_upgrade_response(input, &key()),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
