//! Percent-decoding of query strings and path segments, for routes like `/app/{key}?protocol=7`
//! and the HTTP API's signed query parameters.

use std::borrow::Cow;

/// The `(key, value)` pairs of a query string, decoded as
/// `application/x-www-form-urlencoded` (WHATWG URL standard): pairs split on `&`, key and value
/// on the first `=`, `+` means a space, `%XX` a byte. Empty pairs are skipped; a pair without
/// `=` has an empty value. A `%` not followed by two hex digits stays as it is, and bytes that
/// decode to invalid UTF-8 become U+FFFD, as the standard says. Borrows when nothing needs
/// decoding.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key, true), decode(value, true))
        })
}

/// Percent-decodes a path segment (`%XX` to a byte; `+` stays `+`, unlike in a query). Same
/// rules as [`query_pairs`] for stray `%` and invalid UTF-8. Decode a path after splitting it on
/// `/`, so an encoded `%2F` stays inside its segment.
pub fn percent_decode(segment: &str) -> Cow<'_, str> {
    decode(segment, false)
}

fn decode(s: &str, plus_is_space: bool) -> Cow<'_, str> {
    let needs_work = s.bytes().any(|b| b == b'%' || (plus_is_space && b == b'+'));
    if !needs_work {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match (b, bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => hex_digit(hi)
                .zip(hex_digit(lo))
                .map(|(hi, lo)| hi << 4 | lo),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(if plus_is_space && b == b'+' { b' ' } else { b });
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(decoded) => Cow::Owned(decoded),
        Err(err) => Cow::Owned(String::from_utf8_lossy(err.as_bytes()).into_owned()),
    }
}

/// The value of one hex digit, either case.
fn hex_digit(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::{percent_decode, query_pairs};

    #[test]
    fn pairs() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("", &[]),
            ("protocol=7", &[("protocol", "7")]),
            (
                "protocol=7&client=js&version=8.4.0",
                &[("protocol", "7"), ("client", "js"), ("version", "8.4.0")],
            ),
            ("a=1&&b=2&", &[("a", "1"), ("b", "2")]),
            ("flag&x=", &[("flag", ""), ("x", "")]),
            ("a=b=c", &[("a", "b=c")]),
            (
                "info=user_count%2Csubscription_count",
                &[("info", "user_count,subscription_count")],
            ),
            (
                "filter_by_prefix=presence-",
                &[("filter_by_prefix", "presence-")],
            ),
            ("q=a+b%20c", &[("q", "a b c")]),
            ("%41%62=%e2%82%ac", &[("Ab", "\u{20ac}")]),
            ("bad=%zz%4", &[("bad", "%zz%4")]),
            ("pct=100%", &[("pct", "100%")]),
            ("utf=%ff", &[("utf", "\u{fffd}")]),
            ("k%3Dx=v%26w", &[("k=x", "v&w")]),
        ];
        for (query, expected) in cases {
            let got: Vec<(String, String)> = query_pairs(query)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let expected: Vec<(String, String)> = expected
                .iter()
                .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            assert_eq!(got, expected, "{query:?}");
        }
    }

    #[test]
    fn path_segments() {
        let cases = [
            ("presence-room", "presence-room"),
            ("%23server-to-user-42", "#server-to-user-42"),
            ("a+b", "a+b"),
            ("a%2Fb", "a/b"),
            ("%", "%"),
            ("%C3%A9", "\u{e9}"),
        ];
        for (segment, expected) in cases {
            assert_eq!(percent_decode(segment), expected, "{segment:?}");
        }
    }

    #[test]
    fn borrows_when_nothing_is_encoded() {
        assert!(matches!(
            percent_decode("plain"),
            std::borrow::Cow::Borrowed("plain")
        ));
        let (key, value) = query_pairs("a=b").next().expect("one pair");
        assert!(matches!(
            (key, value),
            (std::borrow::Cow::Borrowed(_), std::borrow::Cow::Borrowed(_))
        ));
    }
}
