//! HTTP status codes: the numbers this server puts on the wire and the reason phrase each carries.

/// An HTTP status code. A newtype so a status cannot be confused with a length or a count, and
/// so codes the server never sends can still be carried (their reason phrase is empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode(pub u16);

impl StatusCode {
    /// 101: the answer to a valid WebSocket upgrade.
    pub const SWITCHING_PROTOCOLS: Self = Self(101);
    /// 200: a plain request served (HTTP API, `/health`, `/metrics`).
    pub const OK: Self = Self(200);
    /// 204: served, nothing to say.
    pub const NO_CONTENT: Self = Self(204);
    /// 400: malformed request or an invalid upgrade field.
    pub const BAD_REQUEST: Self = Self(400);
    /// 401: HTTP API request without valid authentication.
    pub const UNAUTHORIZED: Self = Self(401);
    /// 403: origin not allowed, or an HTTP API signature that does not verify.
    pub const FORBIDDEN: Self = Self(403);
    /// 404: unknown path.
    pub const NOT_FOUND: Self = Self(404);
    /// 405: known path, wrong method (sent with `Allow`).
    pub const METHOD_NOT_ALLOWED: Self = Self(405);
    /// 408: the request head did not arrive in time.
    pub const REQUEST_TIMEOUT: Self = Self(408);
    /// 411: a body was expected but no `Content-Length` came with it.
    pub const LENGTH_REQUIRED: Self = Self(411);
    /// 413: body larger than the route accepts.
    pub const PAYLOAD_TOO_LARGE: Self = Self(413);
    /// 414: request line longer than `max_request_line`.
    pub const URI_TOO_LONG: Self = Self(414);
    /// 426: a WebSocket route asked for without a usable upgrade (sent with
    /// `Sec-WebSocket-Version: 13`).
    pub const UPGRADE_REQUIRED: Self = Self(426);
    /// 429: a per-source rate limit crossed.
    pub const TOO_MANY_REQUESTS: Self = Self(429);
    /// 431: request head larger than `max_header_bytes`, or more than `max_headers` fields.
    pub const REQUEST_HEADER_FIELDS_TOO_LARGE: Self = Self(431);
    /// 500: the server failed, not the client.
    pub const INTERNAL_SERVER_ERROR: Self = Self(500);
    /// 501: a request feature the server does not implement (`Transfer-Encoding` on requests).
    pub const NOT_IMPLEMENTED: Self = Self(501);
    /// 503: draining or over capacity.
    pub const SERVICE_UNAVAILABLE: Self = Self(503);
    /// 505: an HTTP version other than 1.0 or 1.1.
    pub const HTTP_VERSION_NOT_SUPPORTED: Self = Self(505);

    /// The reason phrase of RFC 9110 section 15 for the codes above; empty for any other code
    /// (a reason phrase is optional on the wire, RFC 9112 section 4).
    pub fn reason(self) -> &'static str {
        match self.0 {
            101 => "Switching Protocols",
            200 => "OK",
            204 => "No Content",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            411 => "Length Required",
            413 => "Content Too Large",
            414 => "URI Too Long",
            426 => "Upgrade Required",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StatusCode;

    #[test]
    fn reason_phrases() {
        let cases = [
            (StatusCode::SWITCHING_PROTOCOLS, "Switching Protocols"),
            (StatusCode::BAD_REQUEST, "Bad Request"),
            (StatusCode::URI_TOO_LONG, "URI Too Long"),
            (StatusCode::UPGRADE_REQUIRED, "Upgrade Required"),
            (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Request Header Fields Too Large",
            ),
            (StatusCode(599), ""),
        ];
        for (code, reason) in cases {
            assert_eq!(code.reason(), reason, "{code:?}");
        }
    }
}
