//! Verification of HTTP API requests exactly as the Pusher server SDKs sign them
//! (pusher-http-python `http.py`, pusher-http-node `auth.js`):
//!
//! ```text
//! auth_signature = hex(HMAC-SHA256(secret, METHOD "\n" PATH "\n" QUERY))
//! QUERY = every query parameter but auth_signature, keys lower-cased, sorted by key,
//!         each as key=value (values not URL-encoded), joined with "&"
//! ```
//!
//! The SDKs sign the raw values; node then URL-encodes them in the URL (`info=a%2Cb`) while
//! python sends them raw (`info=a,b`), so values are percent-decoded here before signing, with
//! the path-segment rule of [`crate::http::percent_decode`]: `+` kept literal (neither SDK
//! encodes a space as `+`), and a `%` not followed by two hex digits kept as sent, as python
//! sends it. The path is signed as sent.

use md5::{Digest, Md5};

use crate::http::percent_decode;
use crate::pusher::apps::{AppConfig, AppIndex, Apps};
use crate::pusher::auth;
use crate::pusher::json;

use super::ApiError;

/// How far `auth_timestamp` may be from the server's clock, in seconds (Pusher: 600).
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;

/// The decoded query: `(lower-cased key, value)` pairs, unique keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses and percent-decodes a raw query string; 400 on a repeated key (which would make
    /// the signed string ambiguous).
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let key = percent_decode(key).to_ascii_lowercase();
            let value = percent_decode(value).into_owned();
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(ApiError::bad_request(format!(
                    "Query parameter {key} is repeated"
                )));
            }
            pairs.push((key, value));
        }
        Ok(Self { pairs })
    }

    /// The value of `key` (lower-case).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The string the SDKs sign: sorted `key=value` pairs without `auth_signature`.
    fn signed_string(&self) -> String {
        let mut pairs: Vec<&(String, String)> = self
            .pairs
            .iter()
            .filter(|(k, _)| k != "auth_signature")
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = String::new();
        for (i, (k, v)) in pairs.into_iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
        out
    }
}

/// Lower-case hex MD5 of a request body, the `body_md5` parameter the SDKs sign.
pub fn body_md5(body: &[u8]) -> String {
    json::hex(&Md5::digest(body))
}

/// Authenticates a request: `auth_key` names an app (and the app of the path, when the path
/// names one), `auth_version` is 1.0, `auth_timestamp` is within [`MAX_CLOCK_SKEW_SECS`] of
/// `now_unix_secs`, `body_md5` matches a non-empty body (and any body it is given for), and
/// `auth_signature` matches. Every failure is 401. Returns the app.
pub fn verify<'a>(
    apps: &'a Apps,
    path_app_id: Option<&str>,
    method: &str,
    path: &str,
    query: &Query,
    body: &[u8],
    now_unix_secs: u64,
) -> Result<(AppIndex, &'a AppConfig), ApiError> {
    let key = query
        .get("auth_key")
        .ok_or_else(|| ApiError::unauthorized("Missing auth_key"))?;
    let (index, app) = apps
        .by_key(key)
        .ok_or_else(|| ApiError::unauthorized("Unknown auth_key"))?;
    if path_app_id.is_some_and(|id| id != app.id) {
        return Err(ApiError::unauthorized(
            "auth_key does not belong to the app in the path",
        ));
    }
    if query.get("auth_version") != Some("1.0") {
        return Err(ApiError::unauthorized("auth_version must be 1.0"));
    }
    let timestamp = query
        .get("auth_timestamp")
        .ok_or_else(|| ApiError::unauthorized("Missing auth_timestamp"))?;
    let timestamp: u64 = timestamp
        .parse()
        .map_err(|_| ApiError::unauthorized("auth_timestamp is not a number"))?;
    if timestamp.abs_diff(now_unix_secs) > MAX_CLOCK_SKEW_SECS {
        return Err(ApiError::unauthorized(
            "Timestamp expired: auth_timestamp is more than 600 s from the server's time; check the clock",
        ));
    }
    match query.get("body_md5") {
        Some(md5) if !md5.eq_ignore_ascii_case(&body_md5(body)) => {
            return Err(ApiError::unauthorized("body_md5 does not match the body"));
        }
        None if !body.is_empty() => return Err(ApiError::unauthorized("Missing body_md5")),
        _ => {}
    }
    let signature = query
        .get("auth_signature")
        .ok_or_else(|| ApiError::unauthorized("Missing auth_signature"))?;
    let signed = query.signed_string();
    if !auth::verify_hex(&app.secret, &[method, "\n", path, "\n", &signed], signature) {
        return Err(ApiError::unauthorized(
            "Invalid signature: expected HMAC-SHA256 of METHOD\\nPATH\\nQUERY",
        ));
    }
    Ok((index, app))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_table() {
        let q = Query::parse("b=2&A=x%2Cy&c=a+b&d&e=%E2%9C%93").unwrap_or_default();
        assert_eq!(q.get("a"), Some("x,y"));
        assert_eq!(q.get("c"), Some("a+b"));
        assert_eq!(q.get("d"), Some(""));
        assert_eq!(q.get("e"), Some("✓"));
        assert_eq!(q.signed_string(), "a=x,y&b=2&c=a+b&d=&e=✓");
        for (raw, value) in [
            ("a=%", "%"),
            ("a=%2", "%2"),
            ("a=%zz", "%zz"),
            ("a=%ff", "\u{fffd}"),
        ] {
            assert_eq!(
                Query::parse(raw).unwrap_or_default().get("a"),
                Some(value),
                "{raw}"
            );
        }
        for repeated in ["a=1&a=2", "A=1&a=2"] {
            let status = Query::parse(repeated).map_err(|e| e.status);
            assert_eq!(status, Err(400), "{repeated}");
        }
        assert_eq!(Query::parse("").unwrap_or_default().signed_string(), "");
    }
}
