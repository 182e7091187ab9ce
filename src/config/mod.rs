//! One [`Config`] for the whole process, built once at start from the TOML file, `RINGCAST_*`
//! environment variables and command-line flags (in rising order of precedence), validated
//! once, then shared read-only by every shard.
//!
//! Every setting has three spellings: the flag `--max-connections`, the environment variable
//! `RINGCAST_MAX_CONNECTIONS` and the file key `max_connections` (HTTP and WebSocket limits and
//! logging sit in the `[http]`, `[ws]` and `[log]` tables of the file), all declared by one
//! field of [`Settings`]. Each source is read into a [`Settings`] of optional values; the
//! sources are stacked and [`Settings::resolve`] turns the result into a validated [`Config`]
//! or one [`ConfigError`] that names the fix. Durations follow [`parse_duration`].

mod duration;
mod error;
mod resolve;
mod settings;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

pub use duration::{DurationError, parse_duration};
pub use error::ConfigError;
use settings::Merge as _;
pub use settings::{HttpSettings, LogSettings, Nets, Origins, Settings, WsSettings};

use serde::Deserialize;

/// Which event-loop backend the shards run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// Connections and handshakes per client address, and whose forwarded addresses count.
    pub ip_limits: crate::limits::IpLimitsConfig,
    /// Messages and bytes per second each connection may send.
    pub message_rate: crate::limits::MessageRateConfig,
    /// What crossing `max_outbox_bytes` does.
    pub outbox_policy: crate::limits::OutboxPolicy,
    /// A connection whose queued bytes make no progress for this long is closed.
    pub write_stall_timeout: Duration,
    /// Bytes per second a connection with bytes waiting must drain, judged over each
    /// `write_stall_timeout`; a slower one is closed as a slow consumer (0: any byte is progress).
    pub min_drain_rate: u32,
    /// Most messages one sender's lane into a shard's mailbox holds; a publish to a full lane is
    /// dropped and counted.
    pub mesh_queue_capacity: usize,
    /// Most data messages a shard takes from its mailbox per loop turn.
    pub mesh_turn_budget: usize,
    /// Where `/metrics` and the dashboard are served (`/health` and `/ready` are served on the
    /// main listener too, for load balancers).
    pub admin_listen: AdminListen,
    /// Deadline for one admin connection's whole request: reading the head and writing the
    /// answer (a dashboard feed's stream is bounded by its writes instead).
    pub admin_request_timeout: Duration,
    /// Dashboard feeds the admin listener streams at once; more are answered 503.
    pub admin_max_feeds: usize,
    /// The broker joining this instance to a cluster; `None`: standalone, nothing extra runs.
    pub broker: Option<crate::cluster::BrokerUrl>,
    /// The CA a `rediss://` broker's certificate is checked against; `None`: the system's roots.
    pub broker_ca_file: Option<std::path::PathBuf>,
    /// Prefix of every broker subject, so several clusters can share a broker.
    pub broker_prefix: String,
    /// Refuse to start when the broker cannot be reached at start (else start degraded).
    pub broker_required: bool,
    /// Most publishes queued from the shards to the broker bridge; more are dropped and counted.
    pub broker_queue_capacity: usize,
    /// How long another instance's presence members stay without word from it (cluster mode).
    pub presence_lease: Duration,
    /// The Pusher apps served (`[[apps]]`); empty means one development app.
    pub apps: Vec<crate::pusher::AppConfig>,
    /// Credentials for the development app (`RINGCAST_APP_ID`, `_KEY`, `_SECRET`); the ones
    /// left unset are generated at start.
    pub dev_app: crate::pusher::apps::DevCredentials,
}

impl Default for Config {
    /// The configuration of a process given no settings at all.
    fn default() -> Self {
        Settings::default().fill().0
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Self::Auto),
            "uring" => Ok(Self::Uring),
            "epoll" => Ok(Self::Epoll),
            _ => Err(format!("expected auto, uring or epoll, not {text:?}")),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Uring => "uring",
            Self::Epoll => "epoll",
        })
    }
}

/// The loopback address the admin routes listen on by default: reachable from the host only.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9601);

/// Where the admin routes (`/metrics`, `/dashboard` and its feed) are served. `/health` and
/// `/ready` are answered on the main listener whatever this says, as load balancers probe there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    /// Their own listener on this address ([`DEFAULT_ADMIN_LISTEN`] unless set). When the
    /// default address is taken (another instance on the host) the process serves without it
    /// and warns, rather than refuse to start over a port nobody asked for; any other address
    /// must bind.
    Addr(SocketAddr),
    /// Not served at all (`off`).
    Off,
    /// On the main listener, reachable by every client (`public`).
    Public,
}

impl AdminListen {
    /// The address of the admin listener to bind, if there is one.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            Self::Addr(addr) => Some(addr),
            Self::Off | Self::Public => None,
        }
    }
}

impl FromStr for AdminListen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "off" => Ok(Self::Off),
            "public" => Ok(Self::Public),
            addr => addr.parse().map(Self::Addr).map_err(|_| {
                format!("expected an address such as 127.0.0.1:9601, off or public, not {text:?}")
            }),
        }
    }
}

impl<'de> Deserialize<'de> for AdminListen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event, for a terminal or journald.
    #[default]
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "human" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            _ => Err(format!("expected human or json, not {text:?}")),
        }
    }
}

/// Logging settings; kept apart from [`Config`] because only `main` reads them, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A `RUST_LOG`-style filter: `info`, `ringcast=debug,warn`, ...
    pub filter: String,
    /// Human lines or JSON lines.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".to_owned(),
            format: LogFormat::Human,
        }
    }
}

/// What [`load`] produces: the server's settings, the logging settings and warnings to log
/// once logging is up (such as an unknown `RINGCAST_*` variable, which is likely a typo).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated server settings.
    pub config: Config,
    /// The validated logging settings.
    pub log: LogConfig,
    /// Problems worth a warning that do not stop the start.
    pub warnings: Vec<String>,
}

/// Builds the whole configuration: the file named by `--config` or `RINGCAST_CONFIG`, then the
/// `RINGCAST_*` variables in `env`, then `flags`, later sources winning. `RUST_LOG` is read as
/// the log filter when neither `--log-level` nor `RINGCAST_LOG_LEVEL` sets one.
pub fn load(
    flags: Settings,
    env: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Loaded, ConfigError> {
    let env: Vec<(OsString, OsString)> = env.into_iter().collect();
    let (mut from_env, warnings) = Settings::from_env(env.iter().cloned())?;
    if from_env.log.level.is_none() {
        from_env.log.level = env
            .iter()
            .find(|(name, _)| name == "RUST_LOG")
            .and_then(|(_, value)| value.to_str())
            .map(str::to_owned);
    }
    let from_file = match flags.config.as_ref().or(from_env.config.as_ref()) {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    let (config, log) = flags.over(from_env).over(from_file).resolve()?;
    Ok(Loaded {
        config,
        log,
        warnings,
    })
}
