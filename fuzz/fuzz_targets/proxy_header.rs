//! Fuzzes `parse_proxy_header` (PROXY protocol v1 and v2) the way the accept path reads it: the
//! header arrives in reads of any size, so the verdict on a prefix must never be contradicted
//! by a longer one. It must never panic, a header is never longer than what was read (nor than
//! the spec's limits), and an accepted header parses the same from its own bytes alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::{ProxyHeaderError, parse_proxy_header};

/// Longest version 1 line (spec section 2.1) and longest version 2 block (16 bytes plus a
/// 16-bit length).
const V1_MAX: usize = 107;
const V2_MAX: usize = 16 + 0xffff;

/// Inputs up to this long are also checked prefix by prefix (the check is quadratic).
const PREFIX_CHECK_MAX: usize = 600;

fuzz_target!(|data: &[u8]| {
    let whole = parse_proxy_header(data);
    match whole {
        Ok(header) => {
            assert!(header.len <= data.len());
            let limit = if data.starts_with(b"PROXY ") {
                V1_MAX
            } else {
                V2_MAX
            };
            assert!(header.len <= limit, "{} > {limit}", header.len);
            assert_eq!(parse_proxy_header(&data[..header.len]), whole);
            if let Some(source) = header.source
                && data.starts_with(b"PROXY ")
            {
                let line = String::from_utf8_lossy(&data[..header.len]);
                let field = line.split(' ').nth(2).unwrap_or_default();
                assert_eq!(field.parse().ok(), Some(source), "{line:?}");
            }
        }
        Err(ProxyHeaderError::Incomplete) => {
            let limit = if data.starts_with(b"PROXY ") {
                V1_MAX
            } else {
                V2_MAX
            };
            assert!(
                data.len() < limit,
                "still incomplete after {} bytes",
                data.len()
            );
        }
        Err(ProxyHeaderError::Invalid) => {}
    }
    if data.len() <= PREFIX_CHECK_MAX {
        let mut decided = None;
        for end in 0..=data.len() {
            let verdict = parse_proxy_header(&data[..end]);
            match decided {
                Some(earlier) => assert_eq!(verdict, earlier, "after {end} bytes"),
                None if verdict != Err(ProxyHeaderError::Incomplete) => decided = Some(verdict),
                None => {}
            }
        }
    }
});
