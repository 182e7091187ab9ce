//! Response writers: the bytes of an HTTP/1.1 response head (and body) appended to a buffer the
//! caller sends. No `Date` field: a sans-IO module reads no clock, and RFC 9110 section 6.6.1
//! lets a server without one leave it out.

use super::StatusCode;

/// Writes the 101 that completes a WebSocket handshake. `accept_key` is the
/// `Sec-WebSocket-Accept` value (base64 of a SHA-1 digest, 28 bytes); `protocol` the
/// subprotocol chosen from the client's list, if any.
pub fn write_switching_protocols(out: &mut Vec<u8>, accept_key: &[u8; 28], protocol: Option<&str>) {
    write_switching_protocols_with(out, accept_key, protocol, &[]);
}

/// [`write_switching_protocols`] with further header fields, such as the negotiated
/// `Sec-WebSocket-Extensions`.
pub fn write_switching_protocols_with(
    out: &mut Vec<u8>,
    accept_key: &[u8; 28],
    protocol: Option<&str>,
    extra_headers: &[(&str, &str)],
) {
    write_status_line(out, StatusCode::SWITCHING_PROTOCOLS);
    write_header(out, "Upgrade", b"websocket");
    write_header(out, "Connection", b"Upgrade");
    write_header(out, "Sec-WebSocket-Accept", accept_key);
    if let Some(protocol) = protocol {
        write_header(out, "Sec-WebSocket-Protocol", protocol.as_bytes());
    }
    write_headers(out, extra_headers);
    out.extend_from_slice(b"\r\n");
}

/// Writes an error answer: the status, `extra_headers` (such as `Sec-WebSocket-Version: 13`
/// with a 426 or `Allow: GET` with a 405, see
/// [`HandshakeError::extra_headers`](super::HandshakeError::extra_headers)), a short text body
/// naming the status, and `Connection: close`: after an error the connection is closed, so a
/// body the client may have sent never has to be skipped.
pub fn write_error(out: &mut Vec<u8>, err_status: StatusCode, extra_headers: &[(&str, &str)]) {
    let mut body = Vec::with_capacity(48);
    write_decimal(&mut body, err_status.0.into());
    body.push(b' ');
    body.extend_from_slice(err_status.reason().as_bytes());
    body.push(b'\n');
    write_status_line(out, err_status);
    write_header(out, "Content-Type", b"text/plain; charset=utf-8");
    write_content_length(out, body.len());
    write_header(out, "Connection", b"close");
    write_headers(out, extra_headers);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
}

/// Writes a complete response with a body (HTTP API, `/health`, `/metrics`). The connection
/// stays open unless `extra_headers` says `Connection: close`. A 1xx or 204 status gets neither
/// `Content-Length` nor body (RFC 9110 sections 8.6 and 15.3.5).
pub fn write_response(
    out: &mut Vec<u8>,
    status: StatusCode,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) {
    let bodiless = status.0 < 200 || status == StatusCode::NO_CONTENT;
    write_status_line(out, status);
    if !bodiless {
        write_header(out, "Content-Type", content_type.as_bytes());
        write_content_length(out, body.len());
    }
    write_headers(out, extra_headers);
    out.extend_from_slice(b"\r\n");
    if !bodiless {
        out.extend_from_slice(body);
    }
}

fn write_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    write_decimal(out, status.0.into());
    out.push(b' ');
    out.extend_from_slice(status.reason().as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn write_content_length(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(b"Content-Length: ");
    write_decimal(out, len as u64);
    out.extend_from_slice(b"\r\n");
}

fn write_headers(out: &mut Vec<u8>, headers: &[(&str, &str)]) {
    for (name, value) in headers {
        write_header(out, name, value.as_bytes());
    }
}

/// Writes `name: value`. CR, LF and NUL are dropped from both, so a value that came from a
/// client (a subprotocol name) can never split the head into extra fields.
fn write_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    let safe = |b: &&u8| !matches!(**b, b'\r' | b'\n' | 0);
    out.extend(name.as_bytes().iter().filter(safe));
    out.extend_from_slice(b": ");
    out.extend(value.iter().filter(safe));
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal without going through `fmt`.
fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        if let Some(slot) = digits.get_mut(at) {
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(at..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::{
        StatusCode, write_decimal, write_error, write_response, write_switching_protocols,
        write_switching_protocols_with,
    };

    /// `Sec-WebSocket-Accept` for the sample key of RFC 6455 section 1.3.
    const ACCEPT: &[u8; 28] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    type Fields<'a> = &'a [(&'a str, &'a str)];

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).expect("responses are ASCII")
    }

    #[test]
    fn switching_protocols() {
        let cases: &[(Option<&str>, Fields<'_>, &str)] = &[
            (None, &[], ""),
            (Some("chat"), &[], "Sec-WebSocket-Protocol: chat\r\n"),
            (
                None,
                &[("Sec-WebSocket-Extensions", "permessage-deflate")],
                "Sec-WebSocket-Extensions: permessage-deflate\r\n",
            ),
        ];
        for (protocol, extra, expected_tail) in cases {
            let mut out = Vec::new();
            write_switching_protocols_with(&mut out, ACCEPT, *protocol, extra);
            let expected = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{expected_tail}\r\n"
            );
            assert_eq!(text(&out), expected);
        }
        let mut plain = Vec::new();
        write_switching_protocols(&mut plain, ACCEPT, Some("chat"));
        let mut with = Vec::new();
        write_switching_protocols_with(&mut with, ACCEPT, Some("chat"), &[]);
        assert_eq!(plain, with);
    }

    #[test]
    fn errors() {
        let cases: &[(u16, Fields<'_>, &str)] = &[
            (
                400,
                &[],
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: 16\r\nConnection: close\r\n\r\n400 Bad Request\n",
            ),
            (
                426,
                &[("Sec-WebSocket-Version", "13")],
                "HTTP/1.1 426 Upgrade Required\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: 21\r\nConnection: close\r\nSec-WebSocket-Version: 13\r\n\r\n\
                 426 Upgrade Required\n",
            ),
            (
                405,
                &[("Allow", "GET")],
                "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: 23\r\nConnection: close\r\nAllow: GET\r\n\r\n\
                 405 Method Not Allowed\n",
            ),
            (
                599,
                &[],
                "HTTP/1.1 599 \r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: 5\r\nConnection: close\r\n\r\n599 \n",
            ),
        ];
        for (status, extra, expected) in cases {
            let mut out = b"kept".to_vec();
            write_error(&mut out, StatusCode(*status), extra);
            assert_eq!(text(&out), format!("kept{expected}"));
        }
    }

    #[test]
    fn responses_with_and_without_body() {
        let cases: &[(u16, &[u8], &str)] = &[
            (
                200,
                b"{\"ok\":true}",
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\
                 X-A: b\r\n\r\n{\"ok\":true}",
            ),
            (
                200,
                b"",
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\
                 X-A: b\r\n\r\n",
            ),
            (204, b"ignored", "HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n"),
            (
                101,
                b"ignored",
                "HTTP/1.1 101 Switching Protocols\r\nX-A: b\r\n\r\n",
            ),
        ];
        for (status, body, expected) in cases {
            let mut out = Vec::new();
            write_response(
                &mut out,
                StatusCode(*status),
                "application/json",
                &[("X-A", "b")],
                body,
            );
            assert_eq!(text(&out), *expected);
        }
    }

    #[test]
    fn header_injection_is_stripped() {
        let mut out = Vec::new();
        write_switching_protocols(&mut out, ACCEPT, Some("chat\r\nSet-Cookie: x=1"));
        assert!(text(&out).contains("Sec-WebSocket-Protocol: chatSet-Cookie: x=1\r\n"));
        let mut out = Vec::new();
        write_response(
            &mut out,
            StatusCode::OK,
            "text/plain\n",
            &[("X\r\n", "a\0b")],
            b"",
        );
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\nX: ab\r\n\r\n"
        );
    }

    #[test]
    fn decimals() {
        let cases = [
            (0, "0"),
            (7, "7"),
            (10, "10"),
            (65_535, "65535"),
            (u64::MAX, "18446744073709551615"),
        ];
        for (n, expected) in cases {
            let mut out = Vec::new();
            write_decimal(&mut out, n);
            assert_eq!(text(&out), expected);
        }
    }

    /// What the writers produce is what an HTTP client parses.
    #[test]
    fn responses_parse_back() {
        let mut out = Vec::new();
        write_error(
            &mut out,
            StatusCode::UPGRADE_REQUIRED,
            &[("Sec-WebSocket-Version", "13")],
        );
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(&out) {
            Ok(httparse::Status::Complete(len)) => len,
            other => panic!("{other:?}"),
        };
        assert_eq!(resp.code, Some(426));
        let version = resp
            .headers
            .iter()
            .find(|h| h.name == "Sec-WebSocket-Version");
        assert_eq!(version.map(|h| h.value), Some(&b"13"[..]));
        assert_eq!(&out[len..], b"426 Upgrade Required\n");
    }
}
