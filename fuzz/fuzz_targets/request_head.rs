//! Fuzzes the request-head path end to end: `HeadReader` (the same bytes in one read and in
//! chunks), `parse`, `validate_upgrade`, `content_length`, the query and path decoders and the
//! response writers. A panic is a bug, and so is an answer that depends on how the bytes were
//! split into reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringcast::http::{
    HeadReader, HttpConfig, Status, percent_decode, query_pairs, validate_upgrade, write_error,
    write_switching_protocols,
};

/// `Sec-WebSocket-Accept` of the RFC 6455 sample key: any 28 bytes do for the writer.
const ACCEPT: &[u8; 28] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fuzz_target!(|data: &[u8]| {
    // The first byte picks the limits (defaults, or small ones that inputs cross often) and the
    // chunk size of the split read.
    let Some((&knobs, input)) = data.split_first() else {
        return;
    };
    let cfg = if knobs & 1 == 0 {
        HttpConfig::default()
    } else {
        HttpConfig {
            max_request_line: 40,
            max_header_bytes: 200,
            max_headers: 4,
            allowed_origins: vec!["https://app.example.com".to_owned()],
        }
    };
    let chunk = usize::from(knobs >> 1) + 1;
    let whole = answer(&cfg, &[input]);
    let chunks: Vec<&[u8]> = input.chunks(chunk).collect();
    assert_eq!(
        answer(&cfg, &chunks),
        whole,
        "split into reads of {chunk} bytes"
    );
});

/// Everything the server would do with `chunks`, as text to compare.
fn answer(cfg: &HttpConfig, chunks: &[&[u8]]) -> String {
    let mut reader = HeadReader::new();
    let mut status = Ok(Status::Partial);
    for chunk in chunks {
        status = reader.handle_read(cfg, chunk);
        if status.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let summary = match status {
        Err(err) => {
            write_error(&mut out, err.status(), &[]);
            format!("{err:?}")
        }
        Ok(Status::Partial) => "partial".to_owned(),
        Ok(Status::Complete(len)) => {
            assert!(len <= cfg.max_header_bytes);
            let received: usize = chunks.iter().map(|c| c.len()).sum();
            assert_eq!(reader.buffered_after_head().len(), received - len);
            match reader.parse(cfg) {
                Err(err) => {
                    write_error(&mut out, err.status(), &[]);
                    format!("{err:?}")
                }
                Ok(req) => {
                    assert!(req.path.starts_with('/'));
                    let pairs: Vec<_> = query_pairs(req.query.unwrap_or_default()).collect();
                    let segments: Vec<_> = req.path.split('/').map(percent_decode).collect();
                    let length = req.content_length();
                    let upgrade = validate_upgrade(&req, cfg);
                    match upgrade {
                        Ok(up) => write_switching_protocols(&mut out, ACCEPT, up.protocols),
                        Err(err) => write_error(&mut out, err.status(), err.extra_headers()),
                    }
                    format!("{req:?} {pairs:?} {segments:?} {length:?} {upgrade:?}")
                }
            }
        }
    };
    format!("{summary} {:?} {out:?}", reader.buffered_after_head())
}
