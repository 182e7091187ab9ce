//! Validation of a WebSocket opening handshake (RFC 6455 section 4.2.1) and the status each
//! refusal puts on the wire.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{HttpConfig, HttpError, Request, StatusCode};

/// The fields of a valid upgrade request that the WebSocket layer needs to answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgrade<'a> {
    /// `Sec-WebSocket-Key`, whitespace trimmed: 24 base64 characters of 16 bytes, the input of
    /// the `Sec-WebSocket-Accept` digest.
    pub key: &'a [u8],
    /// `Sec-WebSocket-Protocol` as sent (a comma-separated list, see
    /// [`comma_separated`](super::comma_separated)).
    pub protocols: Option<&'a str>,
    /// `Sec-WebSocket-Extensions` as sent.
    pub extensions: Option<&'a str>,
    /// `Origin` as sent.
    pub origin: Option<&'a str>,
}

/// Why an upgrade request is refused. Each variant maps to a status ([`status`](Self::status))
/// and the header fields that must go with it ([`extra_headers`](Self::extra_headers)); write
/// both with [`write_error`](super::write_error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// The head itself is unusable; its own status.
    Http(HttpError),
    /// No WebSocket route at this path (404). Routing is the caller's; the variant lets one
    /// error type carry every answer of the handshake.
    NotFound,
    /// Method other than GET (405, with `Allow: GET`).
    NotGet,
    /// HTTP/1.0: RFC 6455 section 4.1 requires at least HTTP/1.1 (400).
    HttpVersion,
    /// No `Upgrade` field at all (426, with `Upgrade: websocket` and `Sec-WebSocket-Version: 13`):
    /// a plain HTTP client reached a WebSocket route, and 426 tells it what the route needs
    /// (RFC 9110 section 15.5.22).
    MissingUpgrade,
    /// An `Upgrade` field that does not list `websocket` (400).
    UpgradeNotWebSocket,
    /// No `Connection` field listing `upgrade` (400).
    MissingConnection,
    /// `Sec-WebSocket-Version` missing, repeated or not `13` (426, with
    /// `Sec-WebSocket-Version: 13`, RFC 6455 section 4.4).
    BadVersion,
    /// `Host` missing or repeated (400, RFC 9112 section 3.2).
    BadHost,
    /// `Sec-WebSocket-Key` missing or not the base64 of exactly 16 bytes (400).
    BadKey,
    /// A field that must appear at most once appears more often: `Sec-WebSocket-Key`, `Origin`,
    /// `Sec-WebSocket-Protocol`, `Sec-WebSocket-Extensions` (400). Browsers send each once;
    /// two keys or two origins are ambiguous, and refusing is safer than picking one.
    DuplicateHeader,
    /// `Origin`, `Sec-WebSocket-Protocol` or `Sec-WebSocket-Extensions` is not UTF-8 (400).
    BadHeaderValue,
    /// The request carries a body (`Content-Length` above 0 or `Transfer-Encoding`) (400).
    /// Bytes after an upgrade head are WebSocket frames; a body would be read as frames.
    BodyNotAllowed,
    /// `Origin` present and not in `allowed_origins` (403).
    OriginNotAllowed,
}

impl HandshakeError {
    /// The status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Http(err) => err.status(),
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::NotGet => StatusCode::METHOD_NOT_ALLOWED,
            Self::MissingUpgrade | Self::BadVersion => StatusCode::UPGRADE_REQUIRED,
            Self::OriginNotAllowed => StatusCode::FORBIDDEN,
            Self::HttpVersion
            | Self::UpgradeNotWebSocket
            | Self::MissingConnection
            | Self::BadHost
            | Self::BadKey
            | Self::DuplicateHeader
            | Self::BadHeaderValue
            | Self::BodyNotAllowed => StatusCode::BAD_REQUEST,
        }
    }

    /// Header fields the answer must carry besides the usual ones.
    pub fn extra_headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::NotGet => &[("Allow", "GET")],
            Self::MissingUpgrade => &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
            Self::BadVersion => &[("Sec-WebSocket-Version", "13")],
            _ => &[],
        }
    }
}

impl From<HttpError> for HandshakeError {
    fn from(err: HttpError) -> Self {
        Self::Http(err)
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Self::Http(err) => return err.fmt(f),
            Self::NotFound => "no WebSocket route at this path",
            Self::NotGet => "WebSocket upgrade with a method other than GET",
            Self::HttpVersion => "WebSocket upgrade needs HTTP/1.1",
            Self::MissingUpgrade => "no Upgrade header",
            Self::UpgradeNotWebSocket => "Upgrade header does not list websocket",
            Self::MissingConnection => "Connection header does not list upgrade",
            Self::BadVersion => "Sec-WebSocket-Version is not 13",
            Self::BadHost => "Host missing or repeated",
            Self::BadKey => "Sec-WebSocket-Key missing or not base64 of 16 bytes",
            Self::DuplicateHeader => "a WebSocket header field appears twice",
            Self::BadHeaderValue => "a WebSocket header field is not UTF-8",
            Self::BodyNotAllowed => "WebSocket upgrade with a body",
            Self::OriginNotAllowed => "Origin not allowed",
        };
        f.write_str(what)
    }
}

impl std::error::Error for HandshakeError {}

/// Length of a `Sec-WebSocket-Key`: base64 of 16 bytes with its `==` padding.
const KEY_LEN: usize = 24;
/// Bytes of nonce a key must decode to (RFC 6455 section 4.1, item 7).
const NONCE_LEN: usize = 16;

/// Validates a WebSocket upgrade request (RFC 6455 section 4.2.1). Routing (404 for an unknown
/// path) is the caller's: it calls this only for a known WebSocket route.
///
/// Checks run in this order and the first failure is the answer: method, HTTP version,
/// `Upgrade`, `Connection`, `Sec-WebSocket-Version`, `Host`, `Sec-WebSocket-Key`, body, `Origin`,
/// `Sec-WebSocket-Protocol` and `Sec-WebSocket-Extensions`. The version comes before the key so
/// a client of another protocol version learns the version it needs. A missing `Origin` passes
/// even with an allow-list: only browsers send it, and any other client could forge it, so the
/// list protects browsers (against cross-site WebSocket hijacking) and nothing more.
pub fn validate_upgrade<'a>(
    req: &Request<'a>,
    cfg: &HttpConfig,
) -> Result<Upgrade<'a>, HandshakeError> {
    if req.method != "GET" {
        return Err(HandshakeError::NotGet);
    }
    if req.minor_version < 1 {
        return Err(HandshakeError::HttpVersion);
    }
    if req.header("upgrade").is_none() {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !req.is_websocket_upgrade() {
        return Err(HandshakeError::UpgradeNotWebSocket);
    }
    if !req.header_has_token("connection", "upgrade") {
        return Err(HandshakeError::MissingConnection);
    }
    match single(req, "sec-websocket-version") {
        Ok(Some(b"13")) => {}
        _ => return Err(HandshakeError::BadVersion),
    }
    if req.header_values("host").count() != 1 {
        return Err(HandshakeError::BadHost);
    }
    let key = single(req, "sec-websocket-key")?.ok_or(HandshakeError::BadKey)?;
    if !is_valid_key(key) {
        return Err(HandshakeError::BadKey);
    }
    if req.content_length()?.unwrap_or(0) > 0 {
        return Err(HandshakeError::BodyNotAllowed);
    }
    let origin = single_str(req, "origin")?;
    if let Some(origin) = origin {
        let allowed = &cfg.allowed_origins;
        if !allowed.is_empty() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
            return Err(HandshakeError::OriginNotAllowed);
        }
    }
    let protocols = single_str(req, "sec-websocket-protocol")?;
    let extensions = single_str(req, "sec-websocket-extensions")?;
    Ok(Upgrade {
        key,
        protocols,
        extensions,
        origin,
    })
}

/// The value of a field that may appear at most once.
fn single<'a>(req: &Request<'a>, name: &str) -> Result<Option<&'a [u8]>, HandshakeError> {
    let mut values = req.header_values(name);
    let first = values.next();
    if values.next().is_some() {
        return Err(HandshakeError::DuplicateHeader);
    }
    Ok(first)
}

/// [`single`], as UTF-8.
fn single_str<'a>(req: &Request<'a>, name: &str) -> Result<Option<&'a str>, HandshakeError> {
    single(req, name)?
        .map(|value| std::str::from_utf8(value).map_err(|_| HandshakeError::BadHeaderValue))
        .transpose()
}

/// Whether `key` is canonical base64 (padded, no stray bits) of exactly 16 bytes.
fn is_valid_key(key: &[u8]) -> bool {
    // The decoder wants room for its estimate (3 bytes per 4 characters), padding included.
    let mut nonce = [0u8; KEY_LEN / 4 * 3];
    key.len() == KEY_LEN && matches!(STANDARD.decode_slice(key, &mut nonce), Ok(NONCE_LEN))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{HandshakeError, HttpConfig, HttpError, Request, StatusCode, validate_upgrade};
    use crate::http::{HeadReader, Status};

    /// The sample key of RFC 6455 section 1.3.
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// A valid upgrade head changed by `edit`: `Name` (alone) removes the field,
    /// `Name: a\nName: b` replaces it with these lines; `line` is the method and the version.
    fn head(line: &str, edit: &str) -> String {
        let (method, version) = line.split_once(' ').unwrap_or((line, "1.1"));
        let mut fields = vec![
            "Host: example.com".to_owned(),
            "Upgrade: websocket".to_owned(),
            "Connection: Upgrade".to_owned(),
            format!("Sec-WebSocket-Key: {KEY}"),
            "Sec-WebSocket-Version: 13".to_owned(),
        ];
        if !edit.is_empty() {
            let name = edit.split(':').next().unwrap_or(edit);
            fields.retain(|f| {
                !f.to_ascii_lowercase()
                    .starts_with(&name.to_ascii_lowercase())
            });
            fields.extend(edit.lines().filter(|l| l.contains(':')).map(str::to_owned));
        }
        let fields: String = fields.iter().map(|f| format!("{f}\r\n")).collect();
        format!("{method} /app/key?protocol=7 HTTP/{version}\r\n{fields}\r\n")
    }

    /// Method and version, field edit (see [`head`]), whether the origin allow-list is set,
    /// expected result, status, extra answer fields.
    type Case<'a> = (
        &'a str,
        &'a str,
        bool,
        Result<(), HandshakeError>,
        u16,
        &'a [(&'a str, &'a str)],
    );

    fn check(cfg: &HttpConfig, head: &str) -> Result<(), HandshakeError> {
        let req = Request::parse(head.as_bytes(), cfg)?;
        validate_upgrade(&req, cfg).map(|_| ())
    }

    #[test]
    fn answers() {
        use HandshakeError::*;
        const KEY_TWICE: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n\
                                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
        const ORIGIN_TWICE: &str =
            "Origin: https://app.example.com\nOrigin: https://app.example.com";
        const VERSION_TWICE: &str = "Sec-WebSocket-Version: 13\nSec-WebSocket-Version: 13";
        const PROTOCOL_TWICE: &str = "Sec-WebSocket-Protocol: a\nSec-WebSocket-Protocol: b";
        const EXTENSIONS_TWICE: &str = "Sec-WebSocket-Extensions: a\nSec-WebSocket-Extensions: b";
        let v13: &[(&str, &str)] = &[("Sec-WebSocket-Version", "13")];
        let allow_get: &[(&str, &str)] = &[("Allow", "GET")];
        let upgrade_required: &[(&str, &str)] =
            &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")];
        let bad_length = Err(Http(HttpError::BadContentLength));
        let chunked = Err(Http(HttpError::UnsupportedTransferEncoding));
        let (no, yes) = (false, true);
        #[rustfmt::skip]
        let cases: &[Case<'_>] = &[
            ("GET", "", no, Ok(()), 101, &[]),
            ("GET", "Connection: keep-alive, Upgrade", no, Ok(()), 101, &[]),
            ("GET", "Connection: keep-alive\nConnection: upgrade", no, Ok(()), 101, &[]),
            ("GET", "Upgrade: WebSocket", no, Ok(()), 101, &[]),
            ("GET", "Sec-WebSocket-Key:  dGhlIHNhbXBsZSBub25jZQ== ", no, Ok(()), 101, &[]),
            ("GET", "Content-Length: 0", no, Ok(()), 101, &[]),
            ("GET", "Origin: https://evil.example", no, Ok(()), 101, &[]),
            ("GET", "Origin: https://app.example.com", yes, Ok(()), 101, &[]),
            ("GET", "Origin: HTTPS://APP.example.com", yes, Ok(()), 101, &[]),
            ("GET", "", yes, Ok(()), 101, &[]),
            ("POST", "", no, Err(NotGet), 405, allow_get),
            ("HEAD", "", no, Err(NotGet), 405, allow_get),
            ("GET 1.0", "", no, Err(HttpVersion), 400, &[]),
            ("GET", "Upgrade", no, Err(MissingUpgrade), 426, upgrade_required),
            ("GET", "Upgrade: h2c", no, Err(UpgradeNotWebSocket), 400, &[]),
            ("GET", "Connection", no, Err(MissingConnection), 400, &[]),
            ("GET", "Connection: keep-alive", no, Err(MissingConnection), 400, &[]),
            ("GET", "Sec-WebSocket-Version: 8", no, Err(BadVersion), 426, v13),
            ("GET", "Sec-WebSocket-Version: 13, 8", no, Err(BadVersion), 426, v13),
            ("GET", VERSION_TWICE, no, Err(BadVersion), 426, v13),
            ("GET", "Sec-WebSocket-Version", no, Err(BadVersion), 426, v13),
            ("GET", "Host", no, Err(BadHost), 400, &[]),
            ("GET", "Host: a\nHost: b", no, Err(BadHost), 400, &[]),
            ("GET", "Sec-WebSocket-Key", no, Err(BadKey), 400, &[]),
            ("GET", "Sec-WebSocket-Key: ", no, Err(BadKey), 400, &[]),
            ("GET", "Sec-WebSocket-Key: not base64 at all!!!!!!!", no, Err(BadKey), 400, &[]),
            // 15 and 17 bytes, unpadded, and a stray bit after the 16th byte.
            ("GET", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA", no, Err(BadKey), 400, &[]),
            ("GET", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=", no, Err(BadKey), 400, &[]),
            ("GET", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ", no, Err(BadKey), 400, &[]),
            ("GET", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==", no, Err(BadKey), 400, &[]),
            ("GET", KEY_TWICE, no, Err(DuplicateHeader), 400, &[]),
            ("GET", "Content-Length: 5", no, Err(BodyNotAllowed), 400, &[]),
            ("GET", "Content-Length: x", no, bad_length, 400, &[]),
            ("GET", "Transfer-Encoding: chunked", no, chunked, 501, &[]),
            ("GET", "Origin: https://evil.example", yes, Err(OriginNotAllowed), 403, &[]),
            ("GET", "Origin: null", yes, Err(OriginNotAllowed), 403, &[]),
            ("GET", ORIGIN_TWICE, yes, Err(DuplicateHeader), 400, &[]),
            ("GET", PROTOCOL_TWICE, no, Err(DuplicateHeader), 400, &[]),
            ("GET", EXTENSIONS_TWICE, no, Err(DuplicateHeader), 400, &[]),
        ];
        let open = HttpConfig::default();
        let listed = HttpConfig {
            allowed_origins: vec!["https://app.example.com".to_owned()],
            ..HttpConfig::default()
        };
        for (line, edit, with_list, expected, status, extra) in cases {
            let head = head(line, edit);
            let got = check(if *with_list { &listed } else { &open }, &head);
            assert_eq!(&got, expected, "{head:?}");
            let (got_status, got_extra) = match got {
                Ok(()) => (StatusCode::SWITCHING_PROTOCOLS, &[][..]),
                Err(err) => (err.status(), err.extra_headers()),
            };
            assert_eq!(got_status, StatusCode(*status), "{head:?}");
            assert_eq!(got_extra, *extra, "{head:?}");
        }
    }

    #[test]
    fn not_found_maps_to_404() {
        assert_eq!(HandshakeError::NotFound.status(), StatusCode::NOT_FOUND);
        assert_eq!(HandshakeError::NotFound.extra_headers(), &[]);
    }

    #[test]
    fn non_utf8_fields_are_refused() {
        for name in [
            "Origin",
            "Sec-WebSocket-Protocol",
            "Sec-WebSocket-Extensions",
        ] {
            let mut head = head("GET", "").into_bytes();
            head.truncate(head.len() - 2);
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": a\xff\r\n\r\n");
            let cfg = HttpConfig::default();
            let req = Request::parse(&head, &cfg).expect("obs-text is valid HTTP");
            assert_eq!(
                validate_upgrade(&req, &cfg),
                Err(HandshakeError::BadHeaderValue),
                "{name}"
            );
        }
    }

    #[test]
    fn valid_upgrade_returns_its_fields() {
        let head_of = head;
        let head = head_of(
            "GET",
            "Origin: https://app.example.com\n\
             Sec-WebSocket-Protocol: chat, superchat\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
        );
        let cfg = HttpConfig::default();
        let req = Request::parse(head.as_bytes(), &cfg).expect("valid head");
        let upgrade = validate_upgrade(&req, &cfg).expect("valid upgrade");
        assert_eq!(upgrade.key, KEY.as_bytes());
        assert_eq!(upgrade.protocols, Some("chat, superchat"));
        assert_eq!(
            upgrade.extensions,
            Some("permessage-deflate; client_max_window_bits")
        );
        assert_eq!(upgrade.origin, Some("https://app.example.com"));
        let bare = head_of("GET", "");
        let bare = Request::parse(bare.as_bytes(), &cfg).expect("valid head");
        let upgrade = validate_upgrade(&bare, &cfg).expect("valid upgrade");
        assert_eq!(
            (upgrade.protocols, upgrade.extensions, upgrade.origin),
            (None, None, None)
        );
    }

    /// The caps of the head reader reach the handshake's answer through `HandshakeError::Http`.
    #[test]
    fn head_caps_reach_the_handshake_answer() {
        let cfg = HttpConfig {
            max_headers: 8,
            ..HttpConfig::default()
        };
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(cfg.max_request_line));
        let big_head = head(
            "GET",
            &format!("X-Big: {}", "b".repeat(cfg.max_header_bytes)),
        );
        let many = head("GET", "X-Many: 1\nX-Many: 2\nX-Many: 3\nX-Many: 4");
        let cases = [(long_line, 414), (big_head, 431), (many, 431)];
        for (input, status) in cases {
            let mut reader = HeadReader::new();
            let err = match reader.handle_read(&cfg, input.as_bytes()) {
                Ok(Status::Complete(_)) => reader
                    .parse(&cfg)
                    .map_err(HandshakeError::from)
                    .and_then(|req| validate_upgrade(&req, &cfg).map(|_| ())),
                Ok(Status::Partial) => Ok(()),
                Err(err) => Err(err.into()),
            };
            assert_eq!(err.map_err(|e| e.status()), Err(StatusCode(status)));
        }
    }

    /// Whatever the bytes, the path from read to answer returns a status and never panics.
    fn answer_status(cfg: &HttpConfig, input: &[u8]) -> Option<u16> {
        let mut reader = HeadReader::new();
        match reader.handle_read(cfg, input) {
            Ok(Status::Partial) => None,
            Err(err) => Some(err.status().0),
            Ok(Status::Complete(_)) => Some(
                match reader
                    .parse(cfg)
                    .map_err(HandshakeError::from)
                    .and_then(|req| {
                        let _ = req.content_length();
                        validate_upgrade(&req, cfg)
                    }) {
                    Ok(_) => 101,
                    Err(err) => err.status().0,
                },
            ),
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_get_an_answer_without_panic(input in any::<Vec<u8>>()) {
            let status = answer_status(&HttpConfig::default(), &input);
            prop_assert!(status.is_none_or(|s| (101..=505).contains(&s)));
        }

        #[test]
        fn mutated_upgrades_get_an_answer_without_panic(
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut input = head("GET", "Origin: https://app.example.com").into_bytes();
            let i = at.index(input.len());
            input[i] = byte;
            let listed = HttpConfig {
                allowed_origins: vec!["https://app.example.com".to_owned()],
                ..HttpConfig::default()
            };
            let status = answer_status(&listed, &input);
            prop_assert!(status.is_none_or(|s| (101..=505).contains(&s)));
        }
    }
}
