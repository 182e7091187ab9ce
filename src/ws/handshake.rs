//! The WebSocket side of the opening handshake (RFC 6455 4.2): the `Sec-WebSocket-Accept` value
//! and the hooks that pick a subprotocol and read extension offers. Parsing the request head is
//! `crate::http`'s job; this module sees header values only.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

/// The GUID every server appends to the client's key (RFC 6455 1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Length of the accept value: base64 of a 20-byte SHA-1 digest.
const ACCEPT_LEN: usize = 28;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key ++ GUID)) (RFC 6455 4.2.2).
/// The key is taken as sent (the caller trims surrounding whitespace and checks it decodes to 16
/// bytes).
pub fn accept_key(client_key: &[u8]) -> [u8; ACCEPT_LEN] {
    let digest = Sha1::new()
        .chain_update(client_key)
        .chain_update(ACCEPT_GUID)
        .finalize();
    let mut out = [0u8; ACCEPT_LEN];
    // base64 of 20 bytes is always exactly 28 bytes, so the slice always fits.
    let written = STANDARD.encode_slice(digest, &mut out);
    debug_assert_eq!(written, Ok(ACCEPT_LEN));
    out
}

/// Picks the subprotocol to answer from a `Sec-WebSocket-Protocol` value (a comma-separated
/// list): the first entry of `supported`, in the server's order of preference, that the client
/// offered. Comparison is exact (subprotocol tokens are case-sensitive). `None` means the
/// response carries no `Sec-WebSocket-Protocol` header. When the client sent the header several
/// times, the caller joins the values with commas first.
pub fn select_subprotocol<'a>(offered: &'a str, supported: &[&str]) -> Option<&'a str> {
    supported.iter().find_map(|want| {
        offered
            .split(',')
            .map(str::trim)
            .find(|token| !token.is_empty() && token == want)
    })
}

/// One extension offered in `Sec-WebSocket-Extensions` (RFC 6455 9.1), e.g.
/// `permessage-deflate; client_max_window_bits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtensionOffer<'a> {
    /// The extension token, e.g. `permessage-deflate`.
    pub name: &'a str,
    /// Everything after the first `;`, unparsed; read it with [`ExtensionOffer::params`].
    params: &'a str,
}

impl<'a> ExtensionOffer<'a> {
    /// The offer's parameters as `(name, value)`; the value is `None` for a bare flag and is
    /// returned without its surrounding quotes (quoted-pair escapes are left as sent: no
    /// registered extension parameter needs them).
    pub fn params(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        split_unquoted(self.params, b';').filter_map(|param| {
            let param = param.trim();
            if param.is_empty() {
                return None;
            }
            Some(match param.split_once('=') {
                Some((name, value)) => {
                    let value = value.trim();
                    let value = value
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(value);
                    (name.trim(), Some(value))
                }
                None => (param, None),
            })
        })
    }
}

/// Reads the extensions a client offers, in its order of preference. Today ringcast accepts
/// none, so the server answers without `Sec-WebSocket-Extensions`; permessage-deflate will read
/// its parameters from here. Commas and semicolons inside quoted strings do not split.
pub fn parse_extension_offers(header: &str) -> impl Iterator<Item = ExtensionOffer<'_>> {
    split_unquoted(header, b',').filter_map(|offer| {
        let (name, params) = offer.split_once(';').unwrap_or((offer, ""));
        let name = name.trim();
        (!name.is_empty()).then_some(ExtensionOffer { name, params })
    })
}

/// Splits `text` at `separator` bytes that are not inside a double-quoted string.
fn split_unquoted(text: &str, separator: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, byte) in current.bytes().enumerate() {
            match byte {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b if b == separator && !quoted => {
                    // `i` indexes an ASCII byte, so both halves are on character boundaries.
                    rest = current.get(i + 1..);
                    return current.get(..i);
                }
                _ => {}
            }
        }
        rest = None;
        Some(current)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        // RFC 6455 1.3.
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn subprotocol_table() {
        let cases: &[(&str, &[&str], Option<&str>)] = &[
            ("", &["chat"], None),
            ("chat", &[], None),
            ("chat", &["chat"], Some("chat")),
            ("superchat, chat", &["chat", "superchat"], Some("chat")),
            (" a ,b", &["b"], Some("b")),
            ("Chat", &["chat"], None),
            (",,", &[""], None),
        ];
        for (offered, supported, expect) in cases {
            assert_eq!(
                select_subprotocol(offered, supported),
                *expect,
                "{offered:?}"
            );
        }
    }

    #[test]
    fn extension_offers_table() {
        let header = r#"permessage-deflate; client_max_window_bits, x-foo; a="1,2;3" ; b, ,bar"#;
        let offers: Vec<_> = parse_extension_offers(header)
            .map(|o| (o.name, o.params().collect::<Vec<_>>()))
            .collect();
        assert_eq!(
            offers,
            vec![
                ("permessage-deflate", vec![("client_max_window_bits", None)]),
                ("x-foo", vec![("a", Some("1,2;3")), ("b", None)]),
                ("bar", vec![]),
            ]
        );
        assert_eq!(parse_extension_offers("").count(), 0);
    }
}
