//! Why a request head was refused, and the status each reason puts on the wire.

use std::fmt;

use super::StatusCode;

/// A request head that cannot be served. Every variant maps to one HTTP status
/// ([`HttpError::status`]); the connection answers with it and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// The head is not HTTP/1.x syntax (bad token, bad header name or value, bare CR).
    Malformed,
    /// [`HeadReader::parse`](super::HeadReader::parse) was called before the head was complete.
    Incomplete,
    /// The request line is longer than `max_request_line`.
    RequestLineTooLong,
    /// The head is longer than `max_header_bytes`.
    HeadTooLarge,
    /// The head has more than `max_headers` header fields.
    TooManyHeaders,
    /// The version is not HTTP/1.0 or HTTP/1.1.
    UnsupportedVersion,
    /// The request target is neither origin-form (`/path?query`) nor absolute-form
    /// (`http://host/path?query`).
    BadTarget,
    /// `Content-Length` is not one decimal number that fits in `usize`, or it appears more than
    /// once.
    BadContentLength,
    /// The request carries `Transfer-Encoding`; request bodies are accepted only with
    /// `Content-Length`.
    UnsupportedTransferEncoding,
}

impl HttpError {
    /// The status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Malformed | Self::Incomplete | Self::BadTarget | Self::BadContentLength => {
                StatusCode::BAD_REQUEST
            }
            Self::RequestLineTooLong => StatusCode::URI_TOO_LONG,
            Self::HeadTooLarge | Self::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::UnsupportedVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            Self::UnsupportedTransferEncoding => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Self::Malformed => "malformed request head",
            Self::Incomplete => "request head incomplete",
            Self::RequestLineTooLong => "request line too long",
            Self::HeadTooLarge => "request head too large",
            Self::TooManyHeaders => "too many header fields",
            Self::UnsupportedVersion => "unsupported HTTP version",
            Self::BadTarget => "request target is not origin-form or absolute-form",
            Self::BadContentLength => "invalid Content-Length",
            Self::UnsupportedTransferEncoding => "Transfer-Encoding on a request is not supported",
        };
        f.write_str(what)
    }
}

impl std::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::{HttpError, StatusCode};

    #[test]
    fn every_error_maps_to_its_status() {
        let cases = [
            (HttpError::Malformed, 400),
            (HttpError::Incomplete, 400),
            (HttpError::RequestLineTooLong, 414),
            (HttpError::HeadTooLarge, 431),
            (HttpError::TooManyHeaders, 431),
            (HttpError::UnsupportedVersion, 505),
            (HttpError::BadTarget, 400),
            (HttpError::BadContentLength, 400),
            (HttpError::UnsupportedTransferEncoding, 501),
        ];
        for (err, code) in cases {
            assert_eq!(err.status(), StatusCode(code), "{err}");
        }
    }
}
