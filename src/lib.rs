//! ringcast: a WebSocket pub/sub server that speaks the Pusher Channels protocol v7 and holds a
//! million connections on one Linux box.
//!
//! The protocol cores ([`ws`], [`http`]) are sans-IO: they take bytes and a `now` and return
//! events and bytes to send. Everything that touches a socket, a clock or a thread lives
//! elsewhere. See `docs/architecture.md` for the shape of the whole.

#![deny(unsafe_code)]
#![warn(unreachable_pub)]

mod admin;
pub mod check;
pub mod cluster;
pub mod config;
mod dashboard;
// The syscall and io_uring edges need unsafe; every block there carries a `// SAFETY:` line.
#[allow(unsafe_code)]
pub mod driver;
mod health;
pub mod http;
// Public for the per-IP table's benchmark (`benches/ip_limits.rs`).
pub mod limits;
mod mesh;
mod metrics;
pub mod pusher;
pub mod server;
mod shard;
pub mod ws;

/// The PROXY protocol (v1 and v2) header reader, public only so that the `proxy_header` fuzz
/// target can drive it; the server uses it through `limits`.
pub use limits::{ProxyHeader, ProxyHeaderError, parse_proxy_header};
