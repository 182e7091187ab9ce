//! One [`Config`] for the whole process, built once at start from the TOML file, `RINGCAST_*`
//! environment variables and command-line flags (in rising order of precedence), validated
//! once, then shared read-only by every shard.
//!
//! Every setting has three spellings: the flag `--max-connections`, the environment variable
//! `RINGCAST_MAX_CONNECTIONS` and the file key `max_connections` (HTTP and WebSocket limits and
//! logging sit in the `[http]`, `[ws]` and `[log]` tables of the file). Each source is read into
//! a [`ConfigLayer`] of optional values; the layers are stacked and [`ConfigLayer::resolve`]
//! turns the result into a validated [`Config`] or one [`ConfigError`] that names the fix.
//! Durations are integer seconds or a number with a unit: `500ms`, `30s`, `2m`, `1h`.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

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
    /// Where `/metrics`, `/health`, `/ready` and the dashboard are served instead of the main
    /// listener; `None`: on the main listener.
    pub admin_listen: Option<SocketAddr>,
    /// The Pusher apps served (`[[apps]]`); empty means one development app.
    pub apps: Vec<crate::pusher::AppConfig>,
    /// Credentials for the development app (`RINGCAST_APP_ID`, `_KEY`, `_SECRET`); the ones
    /// left unset are generated at start.
    pub dev_app: crate::pusher::apps::DevCredentials,
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
            ip_limits: crate::limits::IpLimitsConfig::default(),
            message_rate: crate::limits::MessageRateConfig::default(),
            outbox_policy: crate::limits::OutboxPolicy::Close,
            write_stall_timeout: crate::limits::WRITE_STALL_TIMEOUT,
            admin_listen: None,
            apps: Vec::new(),
            dev_app: crate::pusher::apps::DevCredentials::default(),
        }
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

/// Why the configuration could not be built; each message names the setting and the fix.
#[derive(Debug)]
pub enum ConfigError {
    /// The file named by `--config` or `RINGCAST_CONFIG` could not be read.
    ReadFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid TOML or holds a key or value ringcast does not accept.
    ParseFile {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A `RINGCAST_*` environment variable holds a value that does not parse.
    Env {
        /// The variable.
        var: String,
        /// Why its value was refused.
        reason: String,
    },
    /// A value parsed but is out of range or contradicts another setting.
    Invalid {
        /// The file key (`ws.max_frame_size`); the flag and variable follow from it.
        key: &'static str,
        /// What is wrong and what to set instead.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReadFile { path, source } => write!(
                f,
                "cannot read the config file {}: {source}; fix the path given to --config or \
                 RINGCAST_CONFIG, or leave both out to run on defaults",
                path.display()
            ),
            Self::ParseFile { path, message } => write!(
                f,
                "the config file {} is not valid: {}; the keys are listed in docs/deployment.md",
                path.display(),
                message.trim_end()
            ),
            Self::Env { var, reason } => {
                write!(
                    f,
                    "environment variable {var} is not valid: {reason}; fix or unset it"
                )
            }
            Self::Invalid { key, reason } => {
                // The flag is the key without its table, except in `[log]`, whose flags keep
                // the table as a prefix (`log.level` is `--log-level`).
                let flag = match key.split_once('.') {
                    Some(("log", name)) => format!("log-{name}"),
                    Some((_, name)) => name.replace('_', "-"),
                    None => key.replace('_', "-"),
                };
                write!(f, "{key} (--{flag}): {reason}")
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::ReadFile { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Prefix of every environment variable ringcast reads.
const ENV_PREFIX: &str = "RINGCAST_";

/// Names the shell scripts under `sysctl/` read; not settings, so no warning when set.
const ENV_OF_SCRIPTS: &[&str] = &[
    "RINGCAST_SYSCTL_ROOT",
    "RINGCAST_STATE_DIR",
    "RINGCAST_ETC_ROOT",
    "RINGCAST_PROFILE",
    "RINGCAST_UID",
];

/// Largest message a process may be configured for (16 MiB, from `shared/LIMITS.md`).
const MAX_MESSAGE_CEILING: usize = 16 * 1024 * 1024;

/// Smallest receive buffer: a WebSocket frame header plus a small frame fit in one read.
const MIN_RECV_BUFFER: usize = 1024;

/// Largest receive buffer: 1 MiB times `recv_buffers` (256) is already 256 MiB per shard.
const MAX_RECV_BUFFER: usize = 1024 * 1024;

/// Most entries of an io_uring provided-buffer ring (the kernel's limit, 2^15).
const MAX_RECV_BUFFERS: u16 = 32768;

/// Headers every upgrade request carries (Host, Upgrade, Connection, Sec-WebSocket-Key,
/// Sec-WebSocket-Version, RFC 6455 4.1), so a lower `max_headers` refuses every client.
const MIN_UPGRADE_HEADERS: usize = 5;

/// One source of settings (the file, the environment or the flags): every value optional, so
/// layers stack. It doubles as the clap argument group of `ringcast serve` and `ringcast check`.
///
/// A new setting is one field here, one arm in `ConfigLayer::set_env`, one line in
/// [`ConfigLayer::over`] and one in [`ConfigLayer::resolve`]. A file-only section (a list of
/// tables) is one field in `FileConfig` and one here marked `#[arg(skip)]`.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct ConfigLayer {
    /// TOML file to read settings from (keys as in docs/deployment.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Number of shards (event-loop threads) [default: online CPUs].
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// Event-loop backend: auto, uring or epoll [default: auto].
    #[arg(long, value_name = "BACKEND", value_parser = Backend::from_str)]
    pub backend: Option<Backend>,
    /// Most connections at once, across all shards [default: 1000000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// How long a graceful drain waits for clients to close [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// Deadline for a client's whole request head [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub handshake_timeout: Option<Duration>,
    /// Interval between server pings on a quiet connection [default: 25s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ping_interval: Option<Duration>,
    /// How long to wait for a pong before closing [default: 20s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub pong_timeout: Option<Duration>,
    /// Close a connection with no traffic at all for this long [default: 120s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Deadline for the peer to answer our close frame [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub close_timeout: Option<Duration>,
    /// Longest HTTP request line, answered 414 above it [default: 8192].
    #[arg(long, value_name = "BYTES")]
    pub max_request_line: Option<usize>,
    /// Most bytes of an HTTP request head, answered 431 above it [default: 8192].
    #[arg(long, value_name = "BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Most HTTP header fields, answered 431 above it [default: 64].
    #[arg(long, value_name = "N")]
    pub max_headers: Option<usize>,
    /// Origins allowed to upgrade, comma-separated; `*` allows every origin [default: *].
    #[arg(long, value_name = "ORIGINS", value_parser = parse_origins)]
    pub allowed_origins: Option<Origins>,
    /// Largest WebSocket frame payload [default: max-message-size].
    #[arg(long, value_name = "BYTES")]
    pub max_frame_size: Option<usize>,
    /// Largest WebSocket message after reassembly [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<usize>,
    /// Most frames one fragmented message may span [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_fragments: Option<usize>,
    /// Bytes per receive buffer (io_uring provided buffer or epoll scratch) [default: 16384].
    #[arg(long, value_name = "BYTES")]
    pub recv_buffer_size: Option<usize>,
    /// Receive buffers per shard in the io_uring buffer ring, a power of two [default: 256].
    #[arg(long, value_name = "N")]
    pub recv_buffers: Option<u16>,
    /// Most bytes queued for one connection before it is closed as a slow consumer
    /// [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub max_outbox_bytes: Option<usize>,
    /// Pin each shard thread to its own CPU: true or false [default: true].
    #[arg(long, value_name = "BOOL")]
    pub pin_shards: Option<bool>,
    /// Most connections one client address may hold (0: no limit).
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<u32>,
    /// Most WebSocket handshakes one client address may start per second (0: no limit).
    #[arg(long, value_name = "N")]
    pub max_handshakes_per_ip: Option<u32>,
    /// Proxies whose X-Forwarded-For is believed (comma-separated addresses or ranges).
    #[arg(long, value_name = "RANGES", value_parser = parse_nets)]
    pub trusted_proxies: Option<Nets>,
    /// Connections from trusted proxies begin with a PROXY protocol v1/v2 header.
    #[arg(long, value_name = "BOOL")]
    pub proxy_protocol: Option<bool>,
    /// Client addresses the per-IP limits never apply to (comma-separated; empty for none).
    #[arg(long, value_name = "RANGES", value_parser = parse_nets)]
    pub limits_exempt: Option<Nets>,
    /// Most data messages a connection may send per second (0: no limit).
    #[arg(long, value_name = "N")]
    pub max_messages_per_sec: Option<u32>,
    /// Most payload bytes a connection may send per second (0: no limit).
    #[arg(long, value_name = "BYTES")]
    pub max_bytes_per_sec: Option<u32>,
    /// What a full outbox does: close, or drop-oldest for lossy messages.
    #[arg(long, value_name = "POLICY", value_parser = crate::limits::OutboxPolicy::from_str)]
    pub outbox_policy: Option<crate::limits::OutboxPolicy>,
    /// Close a connection whose queued bytes make no progress for this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub write_stall_timeout: Option<Duration>,
    /// Serve /metrics, /health, /ready and the dashboard here instead of on --listen.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Log filter in RUST_LOG syntax, e.g. `info` or `ringcast=debug,warn` [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format: human or json [default: human].
    #[arg(long, value_name = "FORMAT", value_parser = LogFormat::from_str)]
    pub log_format: Option<LogFormat>,
    /// The file's `[[apps]]` sections.
    #[arg(skip)]
    pub apps: Option<Vec<crate::pusher::AppConfig>>,
    /// Development-app credentials from `RINGCAST_APP_ID`, `_KEY` and `_SECRET`.
    #[arg(skip)]
    pub dev_app: crate::pusher::apps::DevCredentials,
}

/// A list of allowed origins; a newtype so clap takes one comma-separated value for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(pub Vec<String>);

/// Parses a duration: integer seconds (`30`) or a number with a unit (`500ms`, `30s`, `2m`,
/// `1h`). Shared by flags, environment variables and string values in the file.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let bad =
        || format!("expected seconds or a number with a unit (500ms, 30s, 2m, 1h), not {text:?}");
    let value: u64 = digits.parse().map_err(|_| bad())?;
    let millis_per_unit: u64 = match unit.trim_start() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    value
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

/// Address ranges from a comma-separated list (`10.0.0.0/8, ::1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nets(pub Vec<crate::limits::IpNet>);

fn parse_nets(text: &str) -> Result<Nets, String> {
    crate::limits::parse_nets(text).map(Nets)
}

/// Parses a comma-separated origin list; `*` (or an empty value) allows every origin.
fn parse_origins(text: &str) -> Result<Origins, String> {
    let origins: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty() && *origin != "*")
        .map(str::to_owned)
        .collect();
    Ok(Origins(origins))
}

/// Parses a whole number from an environment variable.
fn parse_count(text: &str) -> Result<usize, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("expected a whole number, not {text:?}"))
}

impl ConfigLayer {
    /// Reads the `RINGCAST_*` variables out of `vars` (the process passes `std::env::vars_os`).
    /// Returns the layer and one warning per unknown `RINGCAST_*` name, which is likely a typo.
    pub fn from_env(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let mut layer = Self::default();
        let mut warnings = Vec::new();
        for (name, value) in vars {
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(ENV_PREFIX) || ENV_OF_SCRIPTS.contains(&name) {
                continue;
            }
            let Some(value) = value.to_str() else {
                return Err(ConfigError::Env {
                    var: name.to_owned(),
                    reason: "its value is not UTF-8".to_owned(),
                });
            };
            let known = layer
                .set_env(&name[ENV_PREFIX.len()..], value)
                .map_err(|reason| ConfigError::Env {
                    var: name.to_owned(),
                    reason,
                })?;
            if !known {
                warnings.push(format!(
                    "ignoring unknown environment variable {name}; the settings are the flags of \
                     `ringcast serve --help` in upper case with a RINGCAST_ prefix"
                ));
            }
        }
        Ok((layer, warnings))
    }

    /// Sets the field a `RINGCAST_<suffix>` variable names; `Ok(false)` for an unknown suffix.
    fn set_env(&mut self, suffix: &str, value: &str) -> Result<bool, String> {
        fn parsed<T: FromStr>(value: &str) -> Result<Option<T>, String>
        where
            T::Err: fmt::Display,
        {
            value
                .trim()
                .parse()
                .map(Some)
                .map_err(|e: T::Err| format!("{e} ({value:?})"))
        }
        match suffix {
            "CONFIG" => self.config = Some(PathBuf::from(value)),
            "LISTEN" => self.listen = parsed(value)?,
            "SHARDS" => self.shards = Some(parse_count(value)?),
            "BACKEND" => self.backend = Some(Backend::from_str(value.trim())?),
            "MAX_CONNECTIONS" => self.max_connections = Some(parse_count(value)?),
            "DRAIN_TIMEOUT" => self.drain_timeout = Some(parse_duration(value)?),
            "HANDSHAKE_TIMEOUT" => self.handshake_timeout = Some(parse_duration(value)?),
            "PING_INTERVAL" => self.ping_interval = Some(parse_duration(value)?),
            "PONG_TIMEOUT" => self.pong_timeout = Some(parse_duration(value)?),
            "IDLE_TIMEOUT" => self.idle_timeout = Some(parse_duration(value)?),
            "CLOSE_TIMEOUT" => self.close_timeout = Some(parse_duration(value)?),
            "MAX_REQUEST_LINE" => self.max_request_line = Some(parse_count(value)?),
            "MAX_HEADER_BYTES" => self.max_header_bytes = Some(parse_count(value)?),
            "MAX_HEADERS" => self.max_headers = Some(parse_count(value)?),
            "ALLOWED_ORIGINS" => self.allowed_origins = Some(parse_origins(value)?),
            "MAX_FRAME_SIZE" => self.max_frame_size = Some(parse_count(value)?),
            "MAX_MESSAGE_SIZE" => self.max_message_size = Some(parse_count(value)?),
            "MAX_FRAGMENTS" => self.max_fragments = Some(parse_count(value)?),
            "RECV_BUFFER_SIZE" => self.recv_buffer_size = Some(parse_count(value)?),
            "RECV_BUFFERS" => self.recv_buffers = parsed(value)?,
            "MAX_OUTBOX_BYTES" => self.max_outbox_bytes = Some(parse_count(value)?),
            "PIN_SHARDS" => self.pin_shards = parsed(value)?,
            "MAX_CONNECTIONS_PER_IP" => self.max_connections_per_ip = parsed(value)?,
            "MAX_HANDSHAKES_PER_IP" => self.max_handshakes_per_ip = parsed(value)?,
            "TRUSTED_PROXIES" => self.trusted_proxies = Some(parse_nets(value)?),
            "LIMITS_EXEMPT" => self.limits_exempt = Some(parse_nets(value)?),
            "PROXY_PROTOCOL" => self.proxy_protocol = parsed(value)?,
            "MAX_MESSAGES_PER_SEC" => self.max_messages_per_sec = parsed(value)?,
            "MAX_BYTES_PER_SEC" => self.max_bytes_per_sec = parsed(value)?,
            "OUTBOX_POLICY" => {
                self.outbox_policy = Some(crate::limits::OutboxPolicy::from_str(value)?)
            }
            "WRITE_STALL_TIMEOUT" => self.write_stall_timeout = Some(parse_duration(value)?),
            "ADMIN_LISTEN" => self.admin_listen = parsed(value)?,
            "LOG_LEVEL" => self.log_level = Some(value.to_owned()),
            "LOG_FORMAT" => self.log_format = Some(LogFormat::from_str(value.trim())?),
            "APP_ID" => self.dev_app.id = Some(value.to_owned()),
            "APP_KEY" => self.dev_app.key = Some(value.to_owned()),
            "APP_SECRET" => self.dev_app.secret = Some(value.to_owned()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Parses a TOML file's text; `path` only names the file in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::ParseFile {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Ok(file.into())
    }

    /// Reads and parses the TOML file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// This layer stacked over `base`: each value set here wins, the rest come from `base`.
    #[must_use]
    pub fn over(self, base: Self) -> Self {
        Self {
            config: self.config.or(base.config),
            listen: self.listen.or(base.listen),
            shards: self.shards.or(base.shards),
            backend: self.backend.or(base.backend),
            max_connections: self.max_connections.or(base.max_connections),
            drain_timeout: self.drain_timeout.or(base.drain_timeout),
            handshake_timeout: self.handshake_timeout.or(base.handshake_timeout),
            ping_interval: self.ping_interval.or(base.ping_interval),
            pong_timeout: self.pong_timeout.or(base.pong_timeout),
            idle_timeout: self.idle_timeout.or(base.idle_timeout),
            close_timeout: self.close_timeout.or(base.close_timeout),
            max_request_line: self.max_request_line.or(base.max_request_line),
            max_header_bytes: self.max_header_bytes.or(base.max_header_bytes),
            max_headers: self.max_headers.or(base.max_headers),
            allowed_origins: self.allowed_origins.or(base.allowed_origins),
            max_frame_size: self.max_frame_size.or(base.max_frame_size),
            max_message_size: self.max_message_size.or(base.max_message_size),
            max_fragments: self.max_fragments.or(base.max_fragments),
            recv_buffer_size: self.recv_buffer_size.or(base.recv_buffer_size),
            recv_buffers: self.recv_buffers.or(base.recv_buffers),
            max_outbox_bytes: self.max_outbox_bytes.or(base.max_outbox_bytes),
            pin_shards: self.pin_shards.or(base.pin_shards),
            max_connections_per_ip: self.max_connections_per_ip.or(base.max_connections_per_ip),
            max_handshakes_per_ip: self.max_handshakes_per_ip.or(base.max_handshakes_per_ip),
            trusted_proxies: self.trusted_proxies.or(base.trusted_proxies),
            limits_exempt: self.limits_exempt.or(base.limits_exempt),
            proxy_protocol: self.proxy_protocol.or(base.proxy_protocol),
            max_messages_per_sec: self.max_messages_per_sec.or(base.max_messages_per_sec),
            max_bytes_per_sec: self.max_bytes_per_sec.or(base.max_bytes_per_sec),
            outbox_policy: self.outbox_policy.or(base.outbox_policy),
            write_stall_timeout: self.write_stall_timeout.or(base.write_stall_timeout),
            admin_listen: self.admin_listen.or(base.admin_listen),
            log_level: self.log_level.or(base.log_level),
            log_format: self.log_format.or(base.log_format),
            apps: self.apps.or(base.apps),
            dev_app: crate::pusher::apps::DevCredentials {
                id: self.dev_app.id.or(base.dev_app.id),
                key: self.dev_app.key.or(base.dev_app.key),
                secret: self.dev_app.secret.or(base.dev_app.secret),
            },
        }
    }

    /// Fills what no layer set from the defaults and validates the whole, once.
    pub fn resolve(self) -> Result<(Config, LogConfig), ConfigError> {
        // Start from the defaults and overwrite what a layer set, so a field added to
        // `Config`, `HttpConfig` or `WsConfig` keeps its default here until it gets a setting.
        let mut config = Config::default();
        set(&mut config.listen, self.listen);
        set(&mut config.shards, self.shards);
        set(&mut config.backend, self.backend);
        set(&mut config.max_connections, self.max_connections);
        set(&mut config.drain_timeout, self.drain_timeout);
        set(&mut config.handshake_timeout, self.handshake_timeout);
        set(&mut config.ping_interval, self.ping_interval);
        set(&mut config.pong_timeout, self.pong_timeout);
        set(&mut config.idle_timeout, self.idle_timeout);
        set(&mut config.close_timeout, self.close_timeout);
        set(&mut config.http.max_request_line, self.max_request_line);
        set(&mut config.http.max_header_bytes, self.max_header_bytes);
        set(&mut config.http.max_headers, self.max_headers);
        set(
            &mut config.http.allowed_origins,
            self.allowed_origins.map(|origins| origins.0),
        );
        set(&mut config.ws.max_message_size, self.max_message_size);
        // A frame never carries more than its message, so an unset frame limit follows the
        // message limit (shared/LIMITS.md: max frame = max message).
        set(
            &mut config.ws.max_frame_size,
            self.max_frame_size.or(self.max_message_size),
        );
        set(&mut config.ws.max_fragments, self.max_fragments);
        set(&mut config.recv_buffer_size, self.recv_buffer_size);
        set(&mut config.recv_buffers, self.recv_buffers);
        set(&mut config.max_outbox_bytes, self.max_outbox_bytes);
        set(&mut config.pin_shards, self.pin_shards);
        let ip = &mut config.ip_limits;
        set(&mut ip.max_connections_per_ip, self.max_connections_per_ip);
        set(&mut ip.max_handshakes_per_ip, self.max_handshakes_per_ip);
        set(&mut ip.trusted_proxies, self.trusted_proxies.map(|n| n.0));
        set(&mut ip.exempt, self.limits_exempt.map(|n| n.0));
        set(&mut ip.proxy_protocol, self.proxy_protocol);
        let rate = &mut config.message_rate;
        set(&mut rate.messages_per_second, self.max_messages_per_sec);
        set(&mut rate.bytes_per_second, self.max_bytes_per_sec);
        set(&mut config.outbox_policy, self.outbox_policy);
        set(&mut config.write_stall_timeout, self.write_stall_timeout);
        config.admin_listen = self.admin_listen;
        set(&mut config.apps, self.apps);
        config.dev_app = self.dev_app;
        let mut log = LogConfig::default();
        set(&mut log.filter, self.log_level);
        set(&mut log.format, self.log_format);
        validate(&config)?;
        validate_log(&log)?;
        Ok((config, log))
    }
}

/// Overwrites `slot` with `value` when a layer set it.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// Checks ranges and relations between settings; the first problem found is returned.
fn validate(config: &Config) -> Result<(), ConfigError> {
    let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
    if config.shards == 0 {
        return invalid(
            "shards",
            "0 shards cannot serve anything; set 1 or more, or leave it out for one per CPU"
                .to_owned(),
        );
    }
    if config.max_connections == 0 {
        return invalid(
            "max_connections",
            "0 refuses every client; set the most connections this process may hold".to_owned(),
        );
    }
    let timeouts = [
        ("handshake_timeout", config.handshake_timeout),
        ("ping_interval", config.ping_interval),
        ("pong_timeout", config.pong_timeout),
        ("idle_timeout", config.idle_timeout),
        ("close_timeout", config.close_timeout),
    ];
    for (key, value) in timeouts {
        if value.is_zero() {
            return invalid(
                key,
                "must be longer than 0; set a duration such as 10s".to_owned(),
            );
        }
    }
    if config.idle_timeout <= config.ping_interval {
        return invalid(
            "idle_timeout",
            format!(
                "{:?} is not longer than ping_interval ({:?}), so a quiet connection is closed \
                 as idle before its first ping; raise idle_timeout or lower ping_interval",
                config.idle_timeout, config.ping_interval
            ),
        );
    }
    let http = &config.http;
    if http.max_header_bytes == 0 {
        return invalid(
            "http.max_header_bytes",
            "must be at least 1; try 8192".to_owned(),
        );
    }
    if http.max_request_line == 0 || http.max_request_line > http.max_header_bytes {
        return invalid(
            "http.max_request_line",
            format!(
                "{} must be between 1 and max_header_bytes ({}), as the request line is part \
                 of the head; try 8192",
                http.max_request_line, http.max_header_bytes
            ),
        );
    }
    if http.max_headers < MIN_UPGRADE_HEADERS {
        return invalid(
            "http.max_headers",
            format!(
                "{} refuses every upgrade, which carries at least {MIN_UPGRADE_HEADERS} headers; \
                 try 64",
                http.max_headers
            ),
        );
    }
    for origin in &http.allowed_origins {
        if let Some(reason) = origin_problem(origin) {
            return invalid(
                "http.allowed_origins",
                format!("{origin:?} {reason}; write origins as scheme://host[:port]"),
            );
        }
    }
    let ws = &config.ws;
    if ws.max_message_size == 0 || ws.max_message_size > MAX_MESSAGE_CEILING {
        return invalid(
            "ws.max_message_size",
            format!(
                "{} is outside 1..={MAX_MESSAGE_CEILING} bytes (16 MiB); try 65536",
                ws.max_message_size
            ),
        );
    }
    if ws.max_frame_size == 0 || ws.max_frame_size > ws.max_message_size {
        return invalid(
            "ws.max_frame_size",
            format!(
                "{} must be between 1 and max_message_size ({}), as a frame never carries more \
                 than its message; lower it or leave it out to follow max_message_size",
                ws.max_frame_size, ws.max_message_size
            ),
        );
    }
    if ws.max_fragments == 0 {
        return invalid(
            "ws.max_fragments",
            "must be at least 1; try 1024".to_owned(),
        );
    }
    if !(MIN_RECV_BUFFER..=MAX_RECV_BUFFER).contains(&config.recv_buffer_size) {
        return invalid(
            "recv_buffer_size",
            format!(
                "{} is outside {MIN_RECV_BUFFER}..={MAX_RECV_BUFFER} bytes: smaller splits most \
                 frames across reads, larger costs recv_buffers times as much per shard; try \
                 16384",
                config.recv_buffer_size
            ),
        );
    }
    if !config.recv_buffers.is_power_of_two() || config.recv_buffers > MAX_RECV_BUFFERS {
        return invalid(
            "recv_buffers",
            format!(
                "{} is not a power of two between 1 and {MAX_RECV_BUFFERS}, which an io_uring \
                 buffer ring requires; try 256",
                config.recv_buffers
            ),
        );
    }
    let bps = config.message_rate.bytes_per_second as usize;
    if bps != 0 && bps < ws.max_message_size {
        return invalid(
            "max_bytes_per_sec",
            format!(
                "{bps} is below max_message_size ({}), so one largest message could never pass; \
                 raise it, or set 0 for no limit (default 4194304)",
                ws.max_message_size
            ),
        );
    }
    if config.max_outbox_bytes < ws.max_message_size {
        return invalid(
            "max_outbox_bytes",
            format!(
                "{} is below max_message_size ({}), so one largest message would close its \
                 receiver as a slow consumer; raise it (default 1048576)",
                config.max_outbox_bytes, ws.max_message_size
            ),
        );
    }
    if let Err(e) = crate::pusher::Apps::new(config.apps.clone()) {
        return invalid(
            "apps",
            format!("{e}; fix the [[apps]] sections of the file"),
        );
    }
    Ok(())
}

/// Why an allowed origin can never match a browser's `Origin` header, if it cannot.
fn origin_problem(origin: &str) -> Option<&'static str> {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Some("has no scheme");
    };
    if scheme.is_empty() || rest.is_empty() {
        return Some("has no host");
    }
    if rest.contains('/') {
        return Some("has a path (browsers send no path or trailing slash in Origin)");
    }
    None
}

/// Checks that the log filter parses, so a typo stops the start instead of silencing logs.
fn validate_log(log: &LogConfig) -> Result<(), ConfigError> {
    tracing_subscriber::EnvFilter::try_new(&log.filter)
        .map(drop)
        .map_err(|e| ConfigError::Invalid {
            key: "log.level",
            reason: format!(
                "{:?} is not a log filter ({e}); use a level such as info or directives such \
                 as ringcast=debug,warn",
                log.filter
            ),
        })
}

/// Builds the whole configuration: the file named by `--config` or `RINGCAST_CONFIG`, then the
/// `RINGCAST_*` variables in `env`, then `flags`, later sources winning. `RUST_LOG` is read as
/// the log filter when neither `--log-level` nor `RINGCAST_LOG_LEVEL` sets one.
pub fn load(
    flags: ConfigLayer,
    env: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Loaded, ConfigError> {
    let env: Vec<(OsString, OsString)> = env.into_iter().collect();
    let (mut env_layer, warnings) = ConfigLayer::from_env(env.iter().cloned())?;
    if env_layer.log_level.is_none() {
        env_layer.log_level = env
            .iter()
            .find(|(name, _)| name == "RUST_LOG")
            .and_then(|(_, value)| value.to_str())
            .map(str::to_owned);
    }
    let file_layer = match flags.config.as_ref().or(env_layer.config.as_ref()) {
        Some(path) => ConfigLayer::from_file(path)?,
        None => ConfigLayer::default(),
    };
    let (config, log) = flags.over(env_layer).over(file_layer).resolve()?;
    Ok(Loaded {
        config,
        log,
        warnings,
    })
}

/// The TOML file as written: top-level server keys and one table per area. Unknown keys are
/// refused so a typo never silently leaves a default in place. A new section (such as a list of
/// `[[apps]]`) is one more field here.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    shards: Option<usize>,
    backend: Option<Backend>,
    max_connections: Option<usize>,
    #[serde(default, deserialize_with = "duration_value")]
    drain_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration_value")]
    handshake_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration_value")]
    ping_interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration_value")]
    pong_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration_value")]
    idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration_value")]
    close_timeout: Option<Duration>,
    recv_buffer_size: Option<usize>,
    recv_buffers: Option<u16>,
    max_outbox_bytes: Option<usize>,
    pin_shards: Option<bool>,
    max_connections_per_ip: Option<u32>,
    max_handshakes_per_ip: Option<u32>,
    #[serde(default, deserialize_with = "nets_value")]
    trusted_proxies: Option<Nets>,
    #[serde(default, deserialize_with = "nets_value")]
    limits_exempt: Option<Nets>,
    proxy_protocol: Option<bool>,
    max_messages_per_sec: Option<u32>,
    max_bytes_per_sec: Option<u32>,
    outbox_policy: Option<crate::limits::OutboxPolicy>,
    #[serde(default, deserialize_with = "duration_value")]
    write_stall_timeout: Option<Duration>,
    admin_listen: Option<SocketAddr>,
    #[serde(default)]
    http: FileHttp,
    #[serde(default)]
    ws: FileWs,
    #[serde(default)]
    log: FileLog,
    apps: Option<Vec<crate::pusher::AppConfig>>,
}

/// The `[http]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHttp {
    max_request_line: Option<usize>,
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    allowed_origins: Option<Vec<String>>,
}

/// The `[ws]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWs {
    max_frame_size: Option<usize>,
    max_message_size: Option<usize>,
    max_fragments: Option<usize>,
}

/// The `[log]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    level: Option<String>,
    format: Option<LogFormat>,
}

impl From<FileConfig> for ConfigLayer {
    fn from(file: FileConfig) -> Self {
        Self {
            config: None,
            listen: file.listen,
            shards: file.shards,
            backend: file.backend,
            max_connections: file.max_connections,
            drain_timeout: file.drain_timeout,
            handshake_timeout: file.handshake_timeout,
            ping_interval: file.ping_interval,
            pong_timeout: file.pong_timeout,
            idle_timeout: file.idle_timeout,
            close_timeout: file.close_timeout,
            max_request_line: file.http.max_request_line,
            max_header_bytes: file.http.max_header_bytes,
            max_headers: file.http.max_headers,
            allowed_origins: file
                .http
                .allowed_origins
                .map(|list| Origins(list.into_iter().filter(|origin| origin != "*").collect())),
            max_frame_size: file.ws.max_frame_size,
            max_message_size: file.ws.max_message_size,
            max_fragments: file.ws.max_fragments,
            recv_buffer_size: file.recv_buffer_size,
            recv_buffers: file.recv_buffers,
            max_outbox_bytes: file.max_outbox_bytes,
            pin_shards: file.pin_shards,
            max_connections_per_ip: file.max_connections_per_ip,
            max_handshakes_per_ip: file.max_handshakes_per_ip,
            trusted_proxies: file.trusted_proxies,
            limits_exempt: file.limits_exempt,
            proxy_protocol: file.proxy_protocol,
            max_messages_per_sec: file.max_messages_per_sec,
            max_bytes_per_sec: file.max_bytes_per_sec,
            outbox_policy: file.outbox_policy,
            write_stall_timeout: file.write_stall_timeout,
            admin_listen: file.admin_listen,
            log_level: file.log.level,
            log_format: file.log.format,
            apps: file.apps,
            dev_app: crate::pusher::apps::DevCredentials::default(),
        }
    }
}

/// Deserializes a file duration: integer seconds or a string such as `"30s"`.
/// An address-range list in the file: a comma-separated string, like the flag.
fn nets_value<'de, D>(deserializer: D) -> Result<Option<Nets>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text: Option<String> = serde::Deserialize::deserialize(deserializer)?;
    text.map(|t| parse_nets(&t).map_err(serde::de::Error::custom))
        .transpose()
}

fn duration_value<'de, D>(deserializer: D) -> Result<Option<Duration>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Visitor;

    impl serde::de::Visitor<'_> for Visitor {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("integer seconds or a string such as \"500ms\", \"30s\", \"2m\", \"1h\"")
        }

        fn visit_u64<E: serde::de::Error>(self, seconds: u64) -> Result<Self::Value, E> {
            Ok(Some(Duration::from_secs(seconds)))
        }

        fn visit_i64<E: serde::de::Error>(self, seconds: i64) -> Result<Self::Value, E> {
            u64::try_from(seconds)
                .map(|seconds| Some(Duration::from_secs(seconds)))
                .map_err(|_| E::custom(format!("a duration cannot be negative ({seconds})")))
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            parse_duration(text).map(Some).map_err(E::custom)
        }
    }

    deserializer.deserialize_any(Visitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn file(text: &str) -> ConfigLayer {
        match ConfigLayer::from_toml(text, Path::new("test.toml")) {
            Ok(layer) => layer,
            Err(e) => panic!("{e}"),
        }
    }

    fn error_of(result: Result<(Config, LogConfig), ConfigError>) -> String {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    /// Every key of the file, each with a value that differs from its default.
    const FULL_FILE: &str = r#"
        listen = "127.0.0.1:9000"
        shards = 3
        backend = "epoll"
        max_connections = 5000
        drain_timeout = "45s"
        handshake_timeout = 7
        ping_interval = "30s"
        pong_timeout = "15s"
        idle_timeout = "2m"
        close_timeout = "1500ms"
        recv_buffer_size = 4096
        recv_buffers = 64
        max_outbox_bytes = 2097152
        pin_shards = false

        [http]
        max_request_line = 4096
        max_header_bytes = 16384
        max_headers = 32
        allowed_origins = ["https://example.com", "http://localhost:3000"]

        [ws]
        max_frame_size = 16384
        max_message_size = 1048576
        max_fragments = 16

        [log]
        level = "ringcast=debug,warn"
        format = "json"
    "#;

    #[test]
    fn every_file_key_is_parsed() {
        let (config, log) = file(FULL_FILE).resolve().unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.shards, 3);
        assert_eq!(config.backend, Backend::Epoll);
        assert_eq!(config.max_connections, 5000);
        assert_eq!(config.drain_timeout, Duration::from_secs(45));
        assert_eq!(config.handshake_timeout, Duration::from_secs(7));
        assert_eq!(config.ping_interval, Duration::from_secs(30));
        assert_eq!(config.pong_timeout, Duration::from_secs(15));
        assert_eq!(config.idle_timeout, Duration::from_secs(120));
        assert_eq!(config.close_timeout, Duration::from_millis(1500));
        assert_eq!(config.http.max_request_line, 4096);
        assert_eq!(config.http.max_header_bytes, 16384);
        assert_eq!(config.http.max_headers, 32);
        assert_eq!(
            config.http.allowed_origins,
            vec![
                "https://example.com".to_owned(),
                "http://localhost:3000".to_owned()
            ]
        );
        assert_eq!(config.ws.max_frame_size, 16384);
        assert_eq!(config.ws.max_message_size, 1048576);
        assert_eq!(config.ws.max_fragments, 16);
        assert_eq!(config.recv_buffer_size, 4096);
        assert_eq!(config.recv_buffers, 64);
        assert_eq!(config.max_outbox_bytes, 2097152);
        assert!(!config.pin_shards);
        assert_eq!(log.filter, "ringcast=debug,warn");
        assert_eq!(log.format, LogFormat::Json);
    }

    #[test]
    fn apps_sections_and_development_app_variables() {
        let layer = file(
            r#"
            [[apps]]
            id = "1"
            key = "k1"
            secret = "s1"
            client_events = true

            [[apps]]
            id = "2"
            key = "k2"
            secret = "s2"
            limits = { max_event_payload_bytes = 2048 }
            "#,
        );
        let (config, _) = layer.resolve().unwrap();
        let keys: Vec<&str> = config.apps.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["k1", "k2"]);
        assert!(config.apps[0].client_events && !config.apps[1].client_events);
        assert_eq!(config.apps[1].limits.max_event_payload_bytes, 2048);

        let vars = env(&[("RINGCAST_APP_ID", "7"), ("RINGCAST_APP_KEY", "dev-key")]);
        let (layer, warnings) = ConfigLayer::from_env(vars).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let (config, _) = layer.resolve().unwrap();
        assert!(config.apps.is_empty());
        assert_eq!(config.dev_app.id.as_deref(), Some("7"));
        assert_eq!(config.dev_app.key.as_deref(), Some("dev-key"));
        assert_eq!(config.dev_app.secret, None);
    }

    #[test]
    fn duplicate_app_keys_are_refused() {
        let layer = file(
            r#"
            [[apps]]
            id = "1"
            key = "same"
            secret = "s1"
            [[apps]]
            id = "2"
            key = "same"
            secret = "s2"
            "#,
        );
        let message = error_of(layer.resolve());
        assert!(message.starts_with("apps"), "{message}");
    }

    #[test]
    fn every_env_variable_is_parsed() {
        let vars = env(&[
            ("RINGCAST_LISTEN", "127.0.0.1:9001"),
            ("RINGCAST_SHARDS", "5"),
            ("RINGCAST_BACKEND", "uring"),
            ("RINGCAST_MAX_CONNECTIONS", "70"),
            ("RINGCAST_DRAIN_TIMEOUT", "1m"),
            ("RINGCAST_HANDSHAKE_TIMEOUT", "3s"),
            ("RINGCAST_PING_INTERVAL", "10"),
            ("RINGCAST_PONG_TIMEOUT", "4s"),
            ("RINGCAST_IDLE_TIMEOUT", "1h"),
            ("RINGCAST_CLOSE_TIMEOUT", "250ms"),
            ("RINGCAST_MAX_REQUEST_LINE", "100"),
            ("RINGCAST_MAX_HEADER_BYTES", "200"),
            ("RINGCAST_MAX_HEADERS", "10"),
            (
                "RINGCAST_ALLOWED_ORIGINS",
                "https://a.example, https://b.example",
            ),
            ("RINGCAST_MAX_FRAME_SIZE", "300"),
            ("RINGCAST_MAX_MESSAGE_SIZE", "400"),
            ("RINGCAST_MAX_FRAGMENTS", "2"),
            ("RINGCAST_RECV_BUFFER_SIZE", "2048"),
            ("RINGCAST_RECV_BUFFERS", "128"),
            ("RINGCAST_MAX_OUTBOX_BYTES", "500"),
            ("RINGCAST_PIN_SHARDS", "false"),
            ("RINGCAST_LOG_LEVEL", "debug"),
            ("RINGCAST_LOG_FORMAT", "json"),
        ]);
        let loaded = load(ConfigLayer::default(), vars).unwrap();
        let config = loaded.config;
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(config.listen, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(config.shards, 5);
        assert_eq!(config.backend, Backend::Uring);
        assert_eq!(config.max_connections, 70);
        assert_eq!(config.drain_timeout, Duration::from_secs(60));
        assert_eq!(config.handshake_timeout, Duration::from_secs(3));
        assert_eq!(config.ping_interval, Duration::from_secs(10));
        assert_eq!(config.pong_timeout, Duration::from_secs(4));
        assert_eq!(config.idle_timeout, Duration::from_secs(3600));
        assert_eq!(config.close_timeout, Duration::from_millis(250));
        assert_eq!(config.http.max_request_line, 100);
        assert_eq!(config.http.max_header_bytes, 200);
        assert_eq!(config.http.max_headers, 10);
        assert_eq!(
            config.http.allowed_origins,
            ["https://a.example", "https://b.example"]
        );
        assert_eq!(config.ws.max_frame_size, 300);
        assert_eq!(config.ws.max_message_size, 400);
        assert_eq!(config.ws.max_fragments, 2);
        assert_eq!(config.recv_buffer_size, 2048);
        assert_eq!(config.recv_buffers, 128);
        assert_eq!(config.max_outbox_bytes, 500);
        assert!(!config.pin_shards);
        assert_eq!(
            loaded.log,
            LogConfig {
                filter: "debug".into(),
                format: LogFormat::Json
            }
        );
    }

    #[test]
    fn no_source_gives_the_defaults() {
        let loaded = load(ConfigLayer::default(), env(&[("PATH", "/bin")])).unwrap();
        let defaults = Config::default();
        assert_eq!(loaded.config.listen, defaults.listen);
        assert_eq!(loaded.config.shards, defaults.shards);
        assert_eq!(loaded.config.max_connections, defaults.max_connections);
        assert_eq!(loaded.config.http, defaults.http);
        assert_eq!(loaded.config.ws, defaults.ws);
        assert_eq!(loaded.log, LogConfig::default());
    }

    #[test]
    fn flags_beat_env_and_env_beats_the_file() {
        let dir = std::env::temp_dir().join(format!("ringcast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ringcast.toml");
        std::fs::write(
            &path,
            "shards = 2\nmax_connections = 10\nbackend = \"epoll\"\n",
        )
        .unwrap();
        let vars = env(&[
            ("RINGCAST_CONFIG", path.to_str().unwrap()),
            ("RINGCAST_MAX_CONNECTIONS", "20"),
            ("RINGCAST_BACKEND", "uring"),
        ]);
        let flags = ConfigLayer {
            backend: Some(Backend::Auto),
            ..ConfigLayer::default()
        };
        let loaded = load(flags, vars);
        std::fs::remove_dir_all(&dir).unwrap();
        let config = loaded.unwrap().config;
        assert_eq!(config.shards, 2, "file only");
        assert_eq!(config.max_connections, 20, "env over file");
        assert_eq!(config.backend, Backend::Auto, "flag over env and file");
    }

    #[test]
    fn config_flag_beats_config_env() {
        let vars = env(&[("RINGCAST_CONFIG", "/nonexistent/env.toml")]);
        let flags = ConfigLayer {
            config: Some(PathBuf::from("/nonexistent/flag.toml")),
            ..ConfigLayer::default()
        };
        let message = load(flags, vars).unwrap_err().to_string();
        assert!(message.contains("flag.toml"), "{message}");
    }

    #[test]
    fn rust_log_is_the_filter_only_when_no_setting_names_one() {
        let loaded = load(ConfigLayer::default(), env(&[("RUST_LOG", "trace")])).unwrap();
        assert_eq!(loaded.log.filter, "trace");
        let vars = env(&[("RUST_LOG", "trace"), ("RINGCAST_LOG_LEVEL", "warn")]);
        assert_eq!(
            load(ConfigLayer::default(), vars).unwrap().log.filter,
            "warn"
        );
    }

    #[test]
    fn unknown_env_names_warn_and_script_names_do_not() {
        let vars = env(&[("RINGCAST_SHARD", "4"), ("RINGCAST_SYSCTL_ROOT", "/tmp")]);
        let loaded = load(ConfigLayer::default(), vars).unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].contains("RINGCAST_SHARD"));
    }

    #[test]
    fn frame_limit_follows_the_message_limit_unless_set() {
        let (config, _) = file("[ws]\nmax_message_size = 1000000").resolve().unwrap();
        assert_eq!(config.ws.max_frame_size, 1000000);
        let (config, _) = file("[ws]\nmax_message_size = 32768").resolve().unwrap();
        assert_eq!(config.ws.max_frame_size, 32768);
    }

    #[test]
    fn star_allows_every_origin() {
        let (config, _) = file("[http]\nallowed_origins = [\"*\"]").resolve().unwrap();
        assert!(config.http.allowed_origins.is_empty());
        assert_eq!(parse_origins("*"), Ok(Origins(Vec::new())));
    }

    #[test]
    fn durations_parse() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("30", Some(Duration::from_secs(30))),
            ("30s", Some(Duration::from_secs(30))),
            ("30 s", Some(Duration::from_secs(30))),
            ("500ms", Some(Duration::from_millis(500))),
            ("2m", Some(Duration::from_secs(120))),
            ("1h", Some(Duration::from_secs(3600))),
            ("0", Some(Duration::ZERO)),
            ("", None),
            ("s", None),
            ("-1s", None),
            ("1.5s", None),
            ("10d", None),
            ("99999999999999999999s", None),
            ("18446744073709551615h", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text).ok(), *want, "{text:?}");
        }
    }

    #[test]
    fn bad_files_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("shard = 4", "unknown field `shard`"),
            ("shards = -1", "shards"),
            ("pin_shards = \"no\"", "bool"),
            ("recv_buffers = 70000", "recv_buffers"),
            ("backend = \"kqueue\"", "unknown variant `kqueue`"),
            ("listen = \"localhost\"", "listen"),
            ("drain_timeout = \"soon\"", "500ms"),
            ("drain_timeout = -5", "negative"),
            ("[ws]\nmax_size = 1", "unknown field `max_size`"),
            ("shards = ", "test.toml"),
        ];
        for (text, want) in cases {
            let message = ConfigLayer::from_toml(text, Path::new("test.toml"))
                .map(drop)
                .unwrap_err()
                .to_string();
            assert!(message.contains(want), "{text:?} gave {message}");
        }
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let cases: &[(&str, &str, &str)] = &[
            ("RINGCAST_SHARDS", "four", "whole number"),
            ("RINGCAST_BACKEND", "io_uring", "auto, uring or epoll"),
            ("RINGCAST_LISTEN", "8080", "address"),
            ("RINGCAST_DRAIN_TIMEOUT", "forever", "500ms"),
            ("RINGCAST_LOG_FORMAT", "xml", "human or json"),
            ("RINGCAST_PIN_SHARDS", "yes", "true"),
            ("RINGCAST_RECV_BUFFERS", "65536", "too large"),
        ];
        for (var, value, want) in cases {
            let message = load(ConfigLayer::default(), env(&[(var, value)])).unwrap_err();
            let message = message.to_string();
            assert!(message.contains(var), "{message}");
            assert!(message.contains(want), "{var}={value} gave {message}");
        }
    }

    #[test]
    fn invalid_values_tell_the_fix() {
        let cases: &[(&str, &str)] = &[
            ("shards = 0", "shards (--shards): 0 shards"),
            ("max_connections = 0", "max_connections (--max-connections)"),
            (
                "handshake_timeout = 0",
                "handshake_timeout (--handshake-timeout)",
            ),
            (
                "idle_timeout = \"20s\"",
                "raise idle_timeout or lower ping_interval",
            ),
            ("[http]\nmax_headers = 3", "at least 5 headers"),
            ("[http]\nmax_request_line = 9000", "max_header_bytes (8192)"),
            ("[http]\nmax_header_bytes = 0", "http.max_header_bytes"),
            ("[http]\nallowed_origins = [\"example.com\"]", "no scheme"),
            (
                "[http]\nallowed_origins = [\"https://example.com/\"]",
                "has a path",
            ),
            ("[ws]\nmax_message_size = 0", "16 MiB"),
            ("[ws]\nmax_message_size = 16777217", "16 MiB"),
            ("[ws]\nmax_frame_size = 70000", "max_message_size (65536)"),
            (
                "[ws]\nmax_fragments = 0",
                "ws.max_fragments (--max-fragments)",
            ),
            (
                "[log]\nlevel = \"ringcast=loud\"",
                "log.level (--log-level): \"ringcast=loud\"",
            ),
            (
                "recv_buffer_size = 100",
                "recv_buffer_size (--recv-buffer-size)",
            ),
            ("recv_buffers = 100", "not a power of two"),
            ("recv_buffers = 0", "not a power of two"),
            ("max_outbox_bytes = 1000", "below max_message_size (65536)"),
        ];
        for (text, want) in cases {
            let message = error_of(file(text).resolve());
            assert!(message.contains(want), "{text:?} gave {message}");
        }
    }

    #[test]
    fn an_unreadable_file_names_the_path_and_the_fix() {
        let message = ConfigLayer::from_file(Path::new("/nonexistent/ringcast.toml"))
            .map(drop)
            .unwrap_err()
            .to_string();
        assert!(message.contains("/nonexistent/ringcast.toml"), "{message}");
        assert!(message.contains("--config"), "{message}");
    }

    #[test]
    fn limit_keys_reach_the_config_from_every_source() {
        let text = "max_connections_per_ip = 5\ntrusted_proxies = \"10.0.0.0/8\"\n\
                    outbox_policy = \"drop-oldest\"\nwrite_stall_timeout = \"3s\"\n";
        let (config, _) = file(text).resolve().unwrap();
        assert_eq!(config.ip_limits.max_connections_per_ip, 5);
        assert_eq!(config.ip_limits.trusted_proxies.len(), 1);
        assert_eq!(
            config.outbox_policy,
            crate::limits::OutboxPolicy::DropOldest
        );
        assert_eq!(config.write_stall_timeout, Duration::from_secs(3));
        let env = [
            ("RINGCAST_LIMITS_EXEMPT", ""),
            ("RINGCAST_MAX_MESSAGES_PER_SEC", "7"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let (layer, _) = ConfigLayer::from_env(env).unwrap();
        let (config, _) = layer.resolve().unwrap();
        assert!(config.ip_limits.exempt.is_empty());
        assert_eq!(config.message_rate.messages_per_second, 7);
        let bad = ConfigLayer::from_toml("trusted_proxies = \"10.0.0.0/99\"", Path::new("t"));
        assert!(bad.is_err(), "a bad range is reported, not dropped");
    }

    #[test]
    fn byte_rate_below_one_message_is_refused() {
        let layer = ConfigLayer {
            max_bytes_per_sec: Some(1000),
            ..ConfigLayer::default()
        };
        assert!(layer.resolve().is_err());
    }

    #[test]
    fn the_example_file_in_deploy_is_valid() {
        let text = include_str!("../deploy/ringcast.toml");
        file(text).resolve().unwrap();
    }
}
