//! RFC 6455 conformance of the sans-IO codec, one module per Autobahn test-suite case group,
//! driven through `Connection::handle_read` without sockets. Every case is decoded whole, byte
//! by byte and under several random splits, and all splits must agree.

mod support;

mod close;
mod fragmentation;
mod framing;
mod misc;
mod opcodes;
mod ping_pong;
mod reserved_bits;
mod roundtrip;
mod sizes;
mod utf8;
