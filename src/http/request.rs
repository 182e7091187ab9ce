//! A parsed request head: method, target split into path and query, header fields, and the
//! questions every route asks of them (body length, is this an upgrade).

use super::{HttpConfig, HttpError};

/// One header field as it arrived: the name keeps the client's case, the value is raw bytes
/// without leading or trailing whitespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Field name; compare with `eq_ignore_ascii_case` (RFC 9110 section 5.1).
    pub name: &'a str,
    /// Field value; may hold obs-text bytes, so not necessarily UTF-8.
    pub value: &'a [u8],
}

/// A parsed HTTP/1.x request head, borrowing from the bytes of its
/// [`HeadReader`](super::HeadReader).
///
/// Request targets: origin-form (`/path?query`) is the normal case; absolute-form
/// (`http://host/path?query`, also `https`, `ws`, `wss`) is accepted as RFC 9112 section 3.2.2
/// requires of servers, and its path and query are taken from it (the authority is ignored, as
/// is `Host` for routing). asterisk-form (`*`) and authority-form (`host:port`) are refused with
/// [`HttpError::BadTarget`] (400): no route here serves `OPTIONS *` or `CONNECT`. A target
/// containing `#` is refused too: a fragment is never part of a request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// Method token, case-sensitive (`GET`, `POST`, ...).
    pub method: &'a str,
    /// The request target exactly as sent.
    pub target: &'a str,
    /// Path of the target, starting with `/`, still percent-encoded (see
    /// [`percent_decode`](super::percent_decode)).
    pub path: &'a str,
    /// Query of the target, without the `?`; `None` when the target has no `?`.
    pub query: Option<&'a str>,
    /// HTTP minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Header fields in arrival order.
    pub headers: Vec<Header<'a>>,
}

/// Shortest possible header line, `a:\n`: bounds how many header slots a head can fill, so
/// the slot array never needs to be larger than the head allows whatever `max_headers` says.
const MIN_HEADER_LINE: usize = 3;

impl<'a> Request<'a> {
    /// Parses a complete head (ending in its blank line) with httparse.
    pub(crate) fn parse(head: &'a [u8], cfg: &HttpConfig) -> Result<Self, HttpError> {
        let slots = cfg.max_headers.min(head.len() / MIN_HEADER_LINE + 1);
        let mut headers = vec![httparse::EMPTY_HEADER; slots];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head) {
            Ok(httparse::Status::Complete(len)) if len == head.len() => {}
            Ok(_) => return Err(HttpError::Malformed),
            Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
            Err(httparse::Error::Version) => return Err(HttpError::UnsupportedVersion),
            Err(_) => return Err(HttpError::Malformed),
        }
        let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
        else {
            return Err(HttpError::Malformed);
        };
        let (path, query) = split_target(target)?;
        let headers = req
            .headers
            .iter()
            .map(|h| Header {
                name: h.name,
                value: trim_ows(h.value),
            })
            .collect();
        Ok(Self {
            method,
            target,
            path,
            query,
            minor_version,
            headers,
        })
    }

    /// The value of the first field named `name` (case-insensitive), if any. Fields that may
    /// repeat are read with [`header_values`](Self::header_values).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.header_values(name).next()
    }

    /// The values of every field named `name` (case-insensitive), in arrival order.
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a [u8]> + 's {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// Whether some field named `name` lists `token` (ASCII case-insensitive) in its
    /// comma-separated value: `Connection: keep-alive, Upgrade` lists `upgrade`.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.header_values(name)
            .filter_map(|value| std::str::from_utf8(value).ok())
            .flat_map(comma_separated)
            .any(|item| item.eq_ignore_ascii_case(token))
    }

    /// Length of the body that follows the head: `Ok(None)` without `Content-Length`,
    /// `Ok(Some(n))` with one. [`HttpError::BadContentLength`] (400) when the value is not
    /// digits, overflows, or the field repeats (even with equal values: RFC 9112 section 6.3
    /// lets a server refuse, and refusing closes the request-smuggling door);
    /// [`HttpError::UnsupportedTransferEncoding`] (501) when `Transfer-Encoding` is present,
    /// since request bodies are taken only with a length.
    pub fn content_length(&self) -> Result<Option<usize>, HttpError> {
        if self.header("transfer-encoding").is_some() {
            return Err(HttpError::UnsupportedTransferEncoding);
        }
        let mut values = self.header_values("content-length");
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() || value.is_empty() {
            return Err(HttpError::BadContentLength);
        }
        value
            .iter()
            .try_fold(0usize, |acc, &digit| {
                if !digit.is_ascii_digit() {
                    return None;
                }
                acc.checked_mul(10)?.checked_add(usize::from(digit - b'0'))
            })
            .map(Some)
            .ok_or(HttpError::BadContentLength)
    }

    /// Whether the client asks for a WebSocket: an `Upgrade` field lists `websocket`. A router
    /// uses it to tell an upgrade from a plain request;
    /// [`validate_upgrade`](super::validate_upgrade) then checks the rest.
    pub fn is_websocket_upgrade(&self) -> bool {
        self.header_has_token("upgrade", "websocket")
    }
}

/// The items of a comma-separated header value (RFC 9110 section 5.6.1), whitespace trimmed,
/// empty items skipped. Commas inside quoted strings are not special-cased: none of the lists
/// read here (`Connection`, `Upgrade`, `Sec-WebSocket-Protocol`) allow quoted strings.
pub fn comma_separated(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(|item| item.trim_matches([' ', '\t']))
        .filter(|item| !item.is_empty())
}

/// Strips optional whitespace (space, tab) from both ends of a field value.
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    value.get(start..end).unwrap_or_default()
}

/// Splits a request target into path and query; see [`Request`] for the forms accepted.
fn split_target(target: &str) -> Result<(&str, Option<&str>), HttpError> {
    if target.contains('#') {
        return Err(HttpError::BadTarget);
    }
    let path_and_query = if target.starts_with('/') {
        target
    } else {
        let rest = ["http://", "https://", "ws://", "wss://"]
            .iter()
            .find_map(|scheme| strip_prefix_ignore_case(target, scheme))
            .ok_or(HttpError::BadTarget)?;
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if authority_end == 0 {
            return Err(HttpError::BadTarget);
        }
        rest.get(authority_end..).unwrap_or_default()
    };
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    // An absolute-form target with an empty path means `/` (RFC 9112 section 3.2.2).
    Ok((if path.is_empty() { "/" } else { path }, query))
}

/// `s` without `prefix`, compared ASCII case-insensitively (URI schemes are case-insensitive).
fn strip_prefix_ignore_case<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::{HttpConfig, HttpError, Request, comma_separated};

    type Split<'a> = Result<(&'a str, Option<&'a str>), HttpError>;

    fn parse(head: &str) -> Result<Request<'_>, HttpError> {
        Request::parse(head.as_bytes(), &HttpConfig::default())
    }

    #[test]
    fn targets_split_into_path_and_query() {
        let cases: &[(&str, Split<'_>)] = &[
            ("/", Ok(("/", None))),
            (
                "/app/key?protocol=7&client=js",
                Ok(("/app/key", Some("protocol=7&client=js"))),
            ),
            ("/a?", Ok(("/a", Some("")))),
            ("/a?b?c", Ok(("/a", Some("b?c")))),
            (
                "http://example.com/app/key?x=1",
                Ok(("/app/key", Some("x=1"))),
            ),
            ("HTTPS://example.com", Ok(("/", None))),
            ("ws://example.com?x", Ok(("/", Some("x")))),
            ("wss://h:443/p", Ok(("/p", None))),
            ("*", Err(HttpError::BadTarget)),
            ("example.com:443", Err(HttpError::BadTarget)),
            ("ftp://h/p", Err(HttpError::BadTarget)),
            ("http:///p", Err(HttpError::BadTarget)),
            ("/a#frag", Err(HttpError::BadTarget)),
        ];
        for (target, expected) in cases {
            let head = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let got = parse(&head).map(|r| (r.path, r.query));
            assert_eq!(&got, expected, "{target}");
        }
    }

    #[test]
    fn malformed_heads_and_versions() {
        let cases: &[(&str, Result<u8, HttpError>)] = &[
            ("GET / HTTP/1.1\r\n\r\n", Ok(1)),
            ("GET / HTTP/1.0\r\n\r\n", Ok(0)),
            ("GET / HTTP/2.0\r\n\r\n", Err(HttpError::UnsupportedVersion)),
            ("GET / HTTP/1.1 \r\n\r\n", Err(HttpError::Malformed)),
            ("GET / HTTP/1.2\r\n\r\n", Err(HttpError::UnsupportedVersion)),
            ("GET / HTTP/3\r\n\r\n", Err(HttpError::UnsupportedVersion)),
            ("GET  / HTTP/1.1\r\n\r\n", Err(HttpError::Malformed)),
            ("G(T / HTTP/1.1\r\n\r\n", Err(HttpError::Malformed)),
            (
                "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
                Err(HttpError::Malformed),
            ),
            ("GET / HTTP/1.1\r\n: x\r\n\r\n", Err(HttpError::Malformed)),
            (
                "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
                Err(HttpError::Malformed),
            ),
            (
                "GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
                Err(HttpError::Malformed),
            ),
            ("GET / HTTP/1.1\r\n", Err(HttpError::Malformed)),
            ("\r\n\r\n", Err(HttpError::Malformed)),
        ];
        for (head, expected) in cases {
            assert_eq!(&parse(head).map(|r| r.minor_version), expected, "{head:?}");
        }
    }

    #[test]
    fn header_count_cap_answers_431() {
        let cfg = HttpConfig {
            max_headers: 3,
            ..HttpConfig::default()
        };
        let cases: &[(usize, Result<usize, HttpError>)] =
            &[(0, Ok(0)), (3, Ok(3)), (4, Err(HttpError::TooManyHeaders))];
        for &(count, ref expected) in cases {
            let fields: String = (0..count).map(|i| format!("X-{i}: v\r\n")).collect();
            let head = format!("GET / HTTP/1.1\r\n{fields}\r\n");
            let got = Request::parse(head.as_bytes(), &cfg).map(|r| r.headers.len());
            assert_eq!(&got, expected, "{count} fields");
            assert_eq!(got.err().map(|e| e.status().0), expected.err().map(|_| 431));
        }
    }

    #[test]
    fn headers_are_found_case_insensitively_and_trimmed() {
        let head = "GET / HTTP/1.1\r\nHost: a\r\nX-Multi: one\r\nx-multi:   two \t\r\n\
                    Connection: keep-alive, Upgrade\r\n\r\n";
        let req = parse(head).expect("valid head");
        assert_eq!(req.header("HOST"), Some(&b"a"[..]));
        assert_eq!(req.header("x-multi"), Some(&b"one"[..]));
        assert_eq!(
            req.header_values("X-MULTI").collect::<Vec<_>>(),
            [&b"one"[..], b"two"]
        );
        assert_eq!(req.header("missing"), None);
        let cases = [
            ("connection", "upgrade", true),
            ("Connection", "KEEP-ALIVE", true),
            ("connection", "close", false),
            ("x-multi", "two", true),
            ("host", "b", false),
        ];
        for (name, token, expected) in cases {
            assert_eq!(
                req.header_has_token(name, token),
                expected,
                "{name} {token}"
            );
        }
    }

    #[test]
    fn content_length() {
        let cases: &[(&str, Result<Option<usize>, HttpError>)] = &[
            ("", Ok(None)),
            ("Content-Length: 0\r\n", Ok(Some(0))),
            ("content-length: 42\r\n", Ok(Some(42))),
            ("Content-Length:  42 \r\n", Ok(Some(42))),
            (
                "Content-Length: 18446744073709551615\r\n",
                Ok(Some(usize::MAX)),
            ),
            (
                "Content-Length: 18446744073709551616\r\n",
                Err(HttpError::BadContentLength),
            ),
            ("Content-Length: -1\r\n", Err(HttpError::BadContentLength)),
            ("Content-Length: +1\r\n", Err(HttpError::BadContentLength)),
            ("Content-Length: 4 2\r\n", Err(HttpError::BadContentLength)),
            ("Content-Length: 1e3\r\n", Err(HttpError::BadContentLength)),
            ("Content-Length: 0x10\r\n", Err(HttpError::BadContentLength)),
            ("Content-Length:\r\n", Err(HttpError::BadContentLength)),
            (
                "Content-Length: 5\r\nContent-Length: 5\r\n",
                Err(HttpError::BadContentLength),
            ),
            ("Content-Length: 5, 5\r\n", Err(HttpError::BadContentLength)),
            (
                "Transfer-Encoding: chunked\r\n",
                Err(HttpError::UnsupportedTransferEncoding),
            ),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                Err(HttpError::UnsupportedTransferEncoding),
            ),
        ];
        for (fields, expected) in cases {
            let head = format!("POST /apps/1/events HTTP/1.1\r\nHost: h\r\n{fields}\r\n");
            let req = parse(&head).expect("valid head");
            assert_eq!(&req.content_length(), expected, "{fields:?}");
        }
    }

    #[test]
    fn websocket_upgrade_is_recognised() {
        let cases = [
            ("Upgrade: websocket\r\n", true),
            ("upgrade: WebSocket\r\n", true),
            ("Upgrade: h2c, websocket\r\n", true),
            ("Upgrade: h2c\r\nUpgrade: websocket\r\n", true),
            ("Upgrade: websockets\r\n", false),
            ("Upgrade: h2c\r\n", false),
            ("Connection: websocket\r\n", false),
            ("", false),
        ];
        for (fields, expected) in cases {
            let head = format!("GET / HTTP/1.1\r\n{fields}\r\n");
            assert_eq!(
                parse(&head).map(|r| r.is_websocket_upgrade()),
                Ok(expected),
                "{fields:?}"
            );
        }
    }

    #[test]
    fn comma_separated_items() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("a", &["a"]),
            ("keep-alive, Upgrade", &["keep-alive", "Upgrade"]),
            (" a ,\tb,, ,c ", &["a", "b", "c"]),
            (",", &[]),
        ];
        for (value, expected) in cases {
            assert_eq!(
                comma_separated(value).collect::<Vec<_>>(),
                *expected,
                "{value:?}"
            );
        }
    }
}
