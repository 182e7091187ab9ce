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
