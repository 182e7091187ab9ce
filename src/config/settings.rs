//! [`Settings`]: one source of settings (the file, the environment or the flags), every value
//! optional so that sources stack. Each setting is declared once, as one field: its doc is the
//! `--help` text, `#[arg]` gives the flag and the `RINGCAST_*` variable, the field name is the
//! file key (under `[http]`, `[ws]` or `[log]` for the fields of those tables). Defaults and
//! validation are applied once, after stacking, in `resolve`.
//!
//! clap reads the process environment itself when `ringcast` parses its command line; the
//! variables are also read here from an explicit list ([`Settings::from_env`]) with the same
//! value parsers, so that `load` can stack them under the flags and tests can pass their own.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, FromArgMatches};
use serde::Deserialize;

use super::duration::{self, parse_duration};
use super::{AdminListen, Backend, ConfigError, LogFormat};
use crate::cluster::BrokerUrl;
use crate::limits::OutboxPolicy;
use crate::pusher::AppConfig;
use crate::pusher::apps::DevCredentials;

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

/// Stacking two sources: `self` wins where it holds a value, `base` fills the rest.
pub(super) trait Merge {
    /// `self` stacked over `base`.
    #[must_use]
    fn over(self, base: Self) -> Self;
}

impl<T> Merge for Option<T> {
    fn over(self, base: Self) -> Self {
        self.or(base)
    }
}

impl Merge for DevCredentials {
    fn over(self, base: Self) -> Self {
        Self {
            id: self.id.or(base.id),
            key: self.key.or(base.key),
            secret: self.secret.or(base.secret),
        }
    }
}

/// Declares a settings table as written and derives [`Merge`] for it field by field, so that a
/// new setting is one field and no merge line.
macro_rules! settings_table {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* pub $field:ident: $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl Merge for $name {
            fn over(self, base: Self) -> Self {
                Self { $( $field: self.$field.over(base.$field), )* }
            }
        }
    };
}

settings_table! {
    /// The top level of the file and every flag of `ringcast serve` and `ringcast check`.
    /// Unknown file keys are refused, so a typo never silently leaves a default in place.
    #[derive(Debug, Clone, Default, PartialEq, Args, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Settings {
        /// TOML file to read settings from (keys as in docs/deployment.md).
        #[arg(long, env = "RINGCAST_CONFIG", value_name = "FILE")]
        #[serde(skip)]
        pub config: Option<PathBuf>,
        /// Address to listen on [default: 0.0.0.0:8080].
        #[arg(
            long,
            env = "RINGCAST_LISTEN",
            value_name = "ADDR",
            value_parser = parse_text::<SocketAddr>,
        )]
        pub listen: Option<SocketAddr>,
        /// Number of shards (event-loop threads) [default: online CPUs].
        #[arg(long, env = "RINGCAST_SHARDS", value_name = "N", value_parser = parse_count::<usize>)]
        pub shards: Option<usize>,
        /// Event-loop backend: auto, uring or epoll [default: auto].
        #[arg(
            long,
            env = "RINGCAST_BACKEND",
            value_name = "BACKEND",
            value_parser = Backend::from_str,
        )]
        pub backend: Option<Backend>,
        /// Most connections at once, across all shards [default: 1000000].
        #[arg(
            long,
            env = "RINGCAST_MAX_CONNECTIONS",
            value_name = "N",
            value_parser = parse_count::<usize>,
        )]
        pub max_connections: Option<usize>,
        /// How long a graceful drain waits for clients to close [default: 30s].
        #[arg(
            long,
            env = "RINGCAST_DRAIN_TIMEOUT",
            value_name = "DURATION",
            value_parser = parse_duration,
        )]
        #[serde(deserialize_with = "duration::deserialize_option")]
        pub drain_timeout: Option<Duration>,
        /// Deadline for a client's whole request head [default: 10s].
        #[arg(
            long,
            env = "RINGCAST_HANDSHAKE_TIMEOUT",
            value_name = "DURATION",
            value_parser = parse_duration,
        )]
        #[serde(deserialize_with = "duration::deserialize_option")]
        pub handshake_timeout: Option<Duration>,
        /// Interval between server pings on a quiet connection [default: 25s].
        #[arg(
            long,
            env = "RINGCAST_PING_INTERVAL",
            value_name = "DURATION",
            value_parser = parse_duration,
        )]
        #[serde(deserialize_with = "duration::deserialize_option")]
        pub ping_interval: Option<Duration>,
        /// How long to wait for a pong before closing [default: 20s].
        #[arg(
            long,
            env = "RINGCAST_PONG_TIMEOUT",
            value_name = "DURATION",
            value_parser = parse_duration,
        )]
        #[serde(deserialize_with = "duration::deserialize_option")]
        pub pong_timeout: Option<Duration>,
        /// Close a connection with no traffic at all for this long [default: 120s].
        #[arg(
            long,
            env = "RINGCAST_IDLE_TIMEOUT",
            value_name = "DURATION",
            value_parser = parse_duration,
        )]
        #[serde(deserialize_with = "duration::deserialize_option")]
        pub idle_timeout: Option<Duration>,
        /// Deadline for the peer to answer our close frame [default: 5s].
        #[arg(
            long,
            env = "RINGCAST_CLOSE_TIMEOUT",
            value_name = "DURATION",
            value_parser = parse_duration,
        )]
        #[serde(deserialize_with = "duration::deserialize_option")]
        pub close_timeout: Option<Duration>,
        /// The `[http]` table.
        #[command(flatten)]
        pub http: HttpSettings,
        /// The `[ws]` table.
        #[command(flatten)]
        pub ws: WsSettings,
        /// Bytes per receive buffer (io_uring provided buffer or epoll scratch) [default: 16384].
        #[arg(
            long,
            env = "RINGCAST_RECV_BUFFER_SIZE",
            value_name = "BYTES",
            value_parser = parse_count::<usize>,
        )]
        pub recv_buffer_size: Option<usize>,
        /// Receive buffers per shard in the io_uring buffer ring, a power of two [default: 256].
        #[arg(
            long,
            env = "RINGCAST_RECV_BUFFERS",
            value_name = "N",
            value_parser = parse_count::<u16>,
        )]
        pub recv_buffers: Option<u16>,
        /// Most bytes queued for one connection before it is closed as a slow consumer
        /// [default: 1048576].
        #[arg(
            long,
            env = "RINGCAST_MAX_OUTBOX_BYTES",
            value_name = "BYTES",
            value_parser = parse_count::<usize>,
        )]
        pub max_outbox_bytes: Option<usize>,
        /// Pin each shard thread to its own CPU: true or false [default: true].
        #[arg(
            long,
            env = "RINGCAST_PIN_SHARDS",
            value_name = "BOOL",
            value_parser = parse_text::<bool>,
        )]
        pub pin_shards: Option<bool>,
        /// Most connections one client address may hold (0: no limit) [default: 1000].
        #[arg(
            long,
            env = "RINGCAST_MAX_CONNECTIONS_PER_IP",
            value_name = "N",
            value_parser = parse_count::<u32>,
        )]
        pub max_connections_per_ip: Option<u32>,
        /// Most WebSocket handshakes one client address may start per second (0: no limit)
        /// [default: 20].
        #[arg(
            long,
            env = "RINGCAST_MAX_HANDSHAKES_PER_IP",
            value_name = "N",
            value_parser = parse_count::<u32>,
        )]
        pub max_handshakes_per_ip: Option<u32>,
        /// Most connections one client address may hold before its request head arrived
        /// (0: no limit) [default: 16].
        #[arg(
            long,
            env = "RINGCAST_MAX_PENDING_HANDSHAKES_PER_IP",
            value_name = "N",
            value_parser = parse_count::<u32>,
        )]
        pub max_pending_handshakes_per_ip: Option<u32>,
        /// IPv6 clients are counted per network of this prefix length, 1 to 128 [default: 64].
        #[arg(
            long,
            env = "RINGCAST_IPV6_PREFIX",
            value_name = "BITS",
            value_parser = parse_count::<u8>,
        )]
        pub ipv6_prefix: Option<u8>,
        /// Proxies whose X-Forwarded-For is believed (comma-separated addresses or ranges).
        #[arg(
            long,
            env = "RINGCAST_TRUSTED_PROXIES",
            value_name = "RANGES",
            value_parser = parse_nets,
        )]
        pub trusted_proxies: Option<Nets>,
        /// Connections from trusted proxies begin with a PROXY protocol v1/v2 header.
        #[arg(
            long,
            env = "RINGCAST_PROXY_PROTOCOL",
            value_name = "BOOL",
            value_parser = parse_text::<bool>,
        )]
        pub proxy_protocol: Option<bool>,
        /// Client addresses the per-IP limits never apply to (comma-separated; empty for none).
        #[arg(
            long,
            env = "RINGCAST_LIMITS_EXEMPT",
            value_name = "RANGES",
            value_parser = parse_nets,
        )]
        pub limits_exempt: Option<Nets>,
        /// Most data messages a connection may send per second (0: no limit) [default: 1000].
        #[arg(
            long,
            env = "RINGCAST_MAX_MESSAGES_PER_SEC",
            value_name = "N",
            value_parser = parse_count::<u32>,
        )]
        pub max_messages_per_sec: Option<u32>,
        /// Most payload bytes a connection may send per second (0: no limit)
        /// [default: 4194304].
        #[arg(
            long,
            env = "RINGCAST_MAX_BYTES_PER_SEC",
            value_name = "BYTES",
            value_parser = parse_count::<u32>,
        )]
        pub max_bytes_per_sec: Option<u32>,
        /// What a full outbox does: close, or drop-oldest for lossy messages [default: close].
        #[arg(
            long,
            env = "RINGCAST_OUTBOX_POLICY",
            value_name = "POLICY",
            value_parser = OutboxPolicy::from_str,
        )]
        pub outbox_policy: Option<OutboxPolicy>,
        /// Close a connection whose queued bytes make no progress for this long [default: 10s].
        #[arg(
            long,
            env = "RINGCAST_WRITE_STALL_TIMEOUT",
            value_name = "DURATION",
            value_parser = parse_duration,
        )]
        #[serde(deserialize_with = "duration::deserialize_option")]
        pub write_stall_timeout: Option<Duration>,
        /// Least bytes per second a connection with bytes waiting must take, judged over each
        /// write-stall window (0: any byte counts as progress) [default: 4096].
        #[arg(
            long,
            env = "RINGCAST_MIN_DRAIN_RATE",
            value_name = "BYTES",
            value_parser = parse_count::<u32>,
        )]
        pub min_drain_rate: Option<u32>,
        /// Most messages queued from one sender to one shard before publishes are dropped
        /// (counted in ringcast_mesh_dropped_total) [default: 1024].
        #[arg(
            long,
            env = "RINGCAST_MESH_QUEUE_CAPACITY",
            value_name = "N",
            value_parser = parse_count::<usize>,
        )]
        pub mesh_queue_capacity: Option<usize>,
        /// Most messages from other shards a shard handles per loop turn [default: 256].
        #[arg(
            long,
            env = "RINGCAST_MESH_TURN_BUDGET",
            value_name = "N",
            value_parser = parse_count::<usize>,
        )]
        pub mesh_turn_budget: Option<usize>,
        /// Where /metrics and the dashboard are served: an address, `off`, or `public` for the
        /// --listen port [default: 127.0.0.1:9601].
        #[arg(
            long,
            env = "RINGCAST_ADMIN_LISTEN",
            value_name = "ADDR",
            value_parser = AdminListen::from_str,
        )]
        pub admin_listen: Option<AdminListen>,
        /// Deadline for an admin client's whole request, head and answer [default: 10s].
        #[arg(
            long,
            env = "RINGCAST_ADMIN_REQUEST_TIMEOUT",
            value_name = "DURATION",
            value_parser = parse_duration,
        )]
        #[serde(deserialize_with = "duration::deserialize_option")]
        pub admin_request_timeout: Option<Duration>,
        /// Most dashboard feeds the admin listener streams at once [default: 8].
        #[arg(
            long,
            env = "RINGCAST_ADMIN_MAX_FEEDS",
            value_name = "N",
            value_parser = parse_count::<usize>,
        )]
        pub admin_max_feeds: Option<usize>,
        /// Broker that joins this instance to a cluster: redis://HOST:PORT[/DB] (rediss:// for
        /// TLS), redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER_NAME[/DB] or nats://HOST:PORT; without
        /// one the instance is standalone.
        #[arg(
            long,
            env = "RINGCAST_BROKER",
            value_name = "URL",
            value_parser = BrokerUrl::from_str,
        )]
        pub broker: Option<BrokerUrl>,
        /// PEM file of the CA that signs a rediss:// broker's certificate; without it the
        /// system's roots are trusted.
        #[arg(long, env = "RINGCAST_BROKER_CA_FILE", value_name = "PATH")]
        pub broker_ca_file: Option<PathBuf>,
        /// Prefix of every broker subject, so several clusters can share one broker
        /// [default: ringcast].
        #[arg(long, env = "RINGCAST_BROKER_PREFIX", value_name = "PREFIX")]
        pub broker_prefix: Option<String>,
        /// Refuse to start when the broker is unreachable at start, instead of starting
        /// degraded and retrying: true or false [default: false].
        #[arg(
            long,
            env = "RINGCAST_BROKER_REQUIRED",
            value_name = "BOOL",
            num_args = 0..=1,
            default_missing_value = "true",
            value_parser = parse_text::<bool>,
        )]
        pub broker_required: Option<bool>,
        /// Most publishes queued from the shards to the broker bridge before they are dropped
        /// (counted in ringcast_broker_dropped_total{reason="full"}) [default: 4096].
        #[arg(
            long,
            env = "RINGCAST_BROKER_QUEUE_CAPACITY",
            value_name = "N",
            value_parser = parse_count::<usize>,
        )]
        pub broker_queue_capacity: Option<usize>,
        /// How long another instance's presence members stay without word from it before
        /// they are removed (member_removed); each instance renews every third of it
        /// [default: 15s].
        #[arg(
            long,
            env = "RINGCAST_PRESENCE_LEASE",
            value_name = "DURATION",
            value_parser = parse_duration,
        )]
        #[serde(deserialize_with = "duration::deserialize_option")]
        pub presence_lease: Option<Duration>,
        /// The `[log]` table.
        #[command(flatten)]
        pub log: LogSettings,
        /// The file's `[[apps]]` sections.
        #[arg(skip)]
        pub apps: Option<Vec<AppConfig>>,
        /// Development-app credentials, from `RINGCAST_APP_ID`, `_KEY` and `_SECRET` only: a
        /// secret given as a flag would show in `ps`, and one in the file belongs in `[[apps]]`.
        #[arg(skip)]
        #[serde(skip)]
        pub dev_app: DevCredentials,
    }
}

settings_table! {
    /// The `[http]` table: limits of the HTTP request head.
    #[derive(Debug, Clone, Default, PartialEq, Args, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct HttpSettings {
        /// Longest HTTP request line, answered 414 above it [default: 8192].
        #[arg(
            long,
            env = "RINGCAST_MAX_REQUEST_LINE",
            value_name = "BYTES",
            value_parser = parse_count::<usize>,
        )]
        pub max_request_line: Option<usize>,
        /// Most bytes of an HTTP request head, answered 431 above it [default: 8192].
        #[arg(
            long,
            env = "RINGCAST_MAX_HEADER_BYTES",
            value_name = "BYTES",
            value_parser = parse_count::<usize>,
        )]
        pub max_header_bytes: Option<usize>,
        /// Most HTTP header fields, answered 431 above it [default: 64].
        #[arg(
            long,
            env = "RINGCAST_MAX_HEADERS",
            value_name = "N",
            value_parser = parse_count::<usize>,
        )]
        pub max_headers: Option<usize>,
        /// Origins allowed to upgrade, comma-separated; `*` allows every origin [default: *].
        #[arg(
            long,
            env = "RINGCAST_ALLOWED_ORIGINS",
            value_name = "ORIGINS",
            value_parser = parse_origins,
        )]
        pub allowed_origins: Option<Origins>,
    }
}

settings_table! {
    /// The `[ws]` table: limits of the WebSocket codec.
    #[derive(Debug, Clone, Default, PartialEq, Args, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct WsSettings {
        /// Largest WebSocket frame payload [default: max-message-size].
        #[arg(
            long,
            env = "RINGCAST_MAX_FRAME_SIZE",
            value_name = "BYTES",
            value_parser = parse_count::<usize>,
        )]
        pub max_frame_size: Option<usize>,
        /// Largest WebSocket message after reassembly [default: 65536].
        #[arg(
            long,
            env = "RINGCAST_MAX_MESSAGE_SIZE",
            value_name = "BYTES",
            value_parser = parse_count::<usize>,
        )]
        pub max_message_size: Option<usize>,
        /// Most frames one fragmented message may span [default: 1024].
        #[arg(
            long,
            env = "RINGCAST_MAX_FRAGMENTS",
            value_name = "N",
            value_parser = parse_count::<usize>,
        )]
        pub max_fragments: Option<usize>,
    }
}

settings_table! {
    /// The `[log]` table; its flags keep the table as a prefix (`level` is `--log-level`).
    #[derive(Debug, Clone, Default, PartialEq, Args, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct LogSettings {
        /// Log filter in RUST_LOG syntax, e.g. `info` or `ringcast=debug,warn` [default: info].
        #[arg(
            id = "log_level",
            long = "log-level",
            env = "RINGCAST_LOG_LEVEL",
            value_name = "FILTER",
        )]
        pub level: Option<String>,
        /// Log format: human or json [default: human].
        #[arg(
            id = "log_format",
            long = "log-format",
            env = "RINGCAST_LOG_FORMAT",
            value_name = "FORMAT",
            value_parser = LogFormat::from_str,
        )]
        pub format: Option<LogFormat>,
    }
}

/// A list of allowed origins; a newtype so clap takes one comma-separated value for it, while
/// the file gives an array. `*` in either allows every origin and is dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(pub Vec<String>);

impl<'de> Deserialize<'de> for Origins {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let list = Vec::<String>::deserialize(deserializer)?;
        Ok(Self(
            list.into_iter().filter(|origin| origin != "*").collect(),
        ))
    }
}

/// Address ranges from a comma-separated list (`10.0.0.0/8, ::1`), in a flag, a variable or a
/// file string alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nets(pub Vec<crate::limits::IpNet>);

impl<'de> Deserialize<'de> for Nets {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_nets(&text).map_err(serde::de::Error::custom)
    }
}

fn parse_nets(text: &str) -> Result<Nets, String> {
    crate::limits::parse_nets(text).map(Nets)
}

/// Parses a comma-separated origin list; `*` (or an empty value) allows every origin.
pub(super) fn parse_origins(text: &str) -> Result<Origins, String> {
    let origins: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty() && *origin != "*")
        .map(str::to_owned)
        .collect();
    Ok(Origins(origins))
}

/// Parses a whole number, saying so when it is not one.
fn parse_count<T>(text: &str) -> Result<T, String>
where
    T: FromStr<Err = std::num::ParseIntError>,
{
    text.trim()
        .parse()
        .map_err(|e| format!("expected a whole number ({e}), not {text:?}"))
}

/// Parses any other value by its `FromStr`, quoting the text in the error.
fn parse_text<T>(text: &str) -> Result<T, String>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    text.trim().parse().map_err(|e| format!("{e} ({text:?})"))
}

impl Settings {
    /// Reads the `RINGCAST_*` variables out of `vars` (the process passes `std::env::vars_os`),
    /// each through the value parser of the flag that declares it. Returns the settings and one
    /// warning per unknown `RINGCAST_*` name, which is likely a typo.
    pub fn from_env(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let declared = Self::augment_args(clap::Command::new("ringcast"));
        // Parse with the `env` attributes cleared, so only `vars` count, not the process's.
        let mut parser = declared
            .clone()
            .no_binary_name(true)
            .mut_args(|arg| arg.env(None));
        let mut settings = Self::default();
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
            if set_dev_credential(&mut settings.dev_app, name, value) {
                continue;
            }
            let flag = declared
                .get_arguments()
                .find(|arg| arg.get_env().is_some_and(|env| env == name))
                .and_then(|arg| arg.get_long());
            let Some(flag) = flag else {
                warnings.push(format!(
                    "ignoring unknown environment variable {name}; the settings are the flags of \
                     `ringcast serve --help` in upper case with a RINGCAST_ prefix"
                ));
                continue;
            };
            let one = parser
                .try_get_matches_from_mut([format!("--{flag}={}", value.trim())])
                .and_then(|matches| Self::from_arg_matches(&matches))
                .map_err(|error| ConfigError::Env {
                    var: name.to_owned(),
                    reason: clap_reason(&error),
                })?;
            settings = one.over(settings);
        }
        Ok((settings, warnings))
    }

    /// Parses a TOML file's text; `path` only names the file in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::ParseFile {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads and parses the TOML file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }
}

/// Takes `value` into `dev` when `name` is one of the development app's variables (which are
/// not flags, see [`Settings::dev_app`]); `false` for any other name.
fn set_dev_credential(dev: &mut DevCredentials, name: &str, value: &str) -> bool {
    let slot = match name {
        "RINGCAST_APP_ID" => &mut dev.id,
        "RINGCAST_APP_KEY" => &mut dev.key,
        "RINGCAST_APP_SECRET" => &mut dev.secret,
        _ => return false,
    };
    *slot = Some(value.to_owned());
    true
}

/// What a value parser said, without clap's usage text around it.
fn clap_reason(error: &clap::Error) -> String {
    match std::error::Error::source(error) {
        Some(source) => source.to_string(),
        None => error
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned(),
    }
}
