//! One [`Config`] for the whole process, built once at start from the TOML file, `RINGCAST_*`
//! environment variables and command-line flags (in rising order of precedence), validated
//! once, then shared read-only by every shard.

use std::net::SocketAddr;
use std::time::Duration;

/// Which event-loop backend the shards run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// io_uring when the kernel offers every operation ringcast needs, epoll otherwise.
    #[default]
    Auto,
    /// io_uring only; start-up fails when it is unavailable.
    Uring,
    /// epoll only.
    Epoll,
}

/// Everything a running server needs to know, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address every shard's SO_REUSEPORT listener binds.
    pub listen: SocketAddr,
    /// Number of shards (event-loop threads); defaults to the online CPUs.
    pub shards: usize,
    /// Event-loop backend.
    pub backend: Backend,
    /// Most connections the process accepts at once, across all shards.
    pub max_connections: usize,
    /// How long a graceful drain waits for clients to close before exiting.
    pub drain_timeout: Duration,
    /// Deadline for a client to send its whole request head.
    pub handshake_timeout: Duration,
    /// Interval between server pings on an otherwise quiet connection.
    pub ping_interval: Duration,
    /// How long the server waits for a pong before closing (1011).
    pub pong_timeout: Duration,
    /// A connection with no traffic at all for this long is closed.
    pub idle_timeout: Duration,
    /// Deadline for the peer to answer our close frame before the socket is closed.
    pub close_timeout: Duration,
    /// Limits of the HTTP request head.
    pub http: crate::http::HttpConfig,
    /// Limits of the WebSocket codec.
    pub ws: crate::ws::WsConfig,
    /// Bytes per receive buffer: one io_uring provided buffer, or the epoll scratch buffer.
    pub recv_buffer_size: usize,
    /// Receive buffers per shard in the io_uring provided-buffer ring (a power of two, at most
    /// 32768); shared by all of the shard's connections, none is owned by a connection.
    pub recv_buffers: u16,
    /// Most bytes queued for one connection before it is treated as a slow consumer and closed.
    pub max_outbox_bytes: usize,
    /// Pin each shard thread to its own CPU (when the CPUs allowed outnumber the shards).
    pub pin_shards: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            backend: Backend::Auto,
            max_connections: 1_000_000,
            drain_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(120),
            close_timeout: Duration::from_secs(5),
            http: crate::http::HttpConfig::default(),
            ws: crate::ws::WsConfig::default(),
            // 16 KiB x 256 = 4 MiB per shard: a 16 KiB read holds many small frames, and 256
            // buffers cover a burst from 256 connections in one loop turn.
            recv_buffer_size: 16 * 1024,
            recv_buffers: 256,
            // 1 MiB and its answer from `shared/LIMITS.md` (outbox per connection).
            max_outbox_bytes: 1024 * 1024,
            pin_shards: true,
        }
    }
}
