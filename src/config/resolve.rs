//! Turning stacked [`Settings`] into a validated [`Config`]: every default is applied here, in
//! [`Settings::fill`], and every range and relation between settings is checked here, once.

use std::net::SocketAddr;
use std::time::Duration;

use super::{AdminListen, Backend, Config, ConfigError, LogConfig, LogFormat, Settings};
use crate::http::HttpConfig;
use crate::limits::{IpLimitsConfig, MessageRateConfig};
use crate::ws::WsConfig;

/// Largest message a process may be configured for (16 MiB; the limits and their defaults are in
/// docs/operations.md).
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

impl Settings {
    /// Fills what no source set from the defaults and validates the whole, once.
    pub fn resolve(self) -> Result<(Config, LogConfig), ConfigError> {
        let (config, log) = self.fill();
        validate(&config)?;
        validate_log(&log)?;
        Ok((config, log))
    }

    /// Every setting's default, in one place: what this source leaves unset takes it. The
    /// limits of the HTTP head, the codec and the per-address and per-connection rates keep their
    /// defaults beside the code they bound (`HttpConfig`, `WsConfig`, `crate::limits`); the
    /// values are listed in docs/operations.md.
    pub(super) fn fill(self) -> (Config, LogConfig) {
        let (http, ws) = (HttpConfig::default(), WsConfig::default());
        let (ip, rate) = (IpLimitsConfig::default(), MessageRateConfig::default());
        let max_message_size = self.ws.max_message_size.unwrap_or(ws.max_message_size);
        let config = Config {
            listen: self
                .listen
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 8080))),
            shards: self
                .shards
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            backend: self.backend.unwrap_or(Backend::Auto),
            max_connections: self.max_connections.unwrap_or(1_000_000),
            drain_timeout: self.drain_timeout.unwrap_or(Duration::from_secs(30)),
            handshake_timeout: self.handshake_timeout.unwrap_or(Duration::from_secs(10)),
            ping_interval: self.ping_interval.unwrap_or(Duration::from_secs(25)),
            pong_timeout: self.pong_timeout.unwrap_or(Duration::from_secs(20)),
            idle_timeout: self.idle_timeout.unwrap_or(Duration::from_secs(120)),
            close_timeout: self.close_timeout.unwrap_or(Duration::from_secs(5)),
            http: HttpConfig {
                max_request_line: self.http.max_request_line.unwrap_or(http.max_request_line),
                max_header_bytes: self.http.max_header_bytes.unwrap_or(http.max_header_bytes),
                max_headers: self.http.max_headers.unwrap_or(http.max_headers),
                allowed_origins: self
                    .http
                    .allowed_origins
                    .map_or(http.allowed_origins, |origins| origins.0),
            },
            ws: WsConfig {
                // A frame never carries more than its message, so an unset frame limit follows
                // the message limit.
                max_frame_size: self.ws.max_frame_size.unwrap_or(max_message_size),
                max_message_size,
                max_fragments: self.ws.max_fragments.unwrap_or(ws.max_fragments),
            },
            // 16 KiB x 256 = 4 MiB per shard: a 16 KiB read holds many small frames, and 256
            // buffers cover a burst from 256 connections in one loop turn.
            recv_buffer_size: self.recv_buffer_size.unwrap_or(16 * 1024),
            recv_buffers: self.recv_buffers.unwrap_or(256),
            // 1 MiB: the outbox limit of docs/operations.md (Limits), sixteen largest messages.
            max_outbox_bytes: self.max_outbox_bytes.unwrap_or(1024 * 1024),
            pin_shards: self.pin_shards.unwrap_or(true),
            ip_limits: IpLimitsConfig {
                max_connections_per_ip: self
                    .max_connections_per_ip
                    .unwrap_or(ip.max_connections_per_ip),
                max_handshakes_per_ip: self
                    .max_handshakes_per_ip
                    .unwrap_or(ip.max_handshakes_per_ip),
                max_pending_handshakes_per_ip: self
                    .max_pending_handshakes_per_ip
                    .unwrap_or(ip.max_pending_handshakes_per_ip),
                ipv6_prefix: self.ipv6_prefix.unwrap_or(ip.ipv6_prefix),
                trusted_proxies: self.trusted_proxies.map_or(ip.trusted_proxies, |n| n.0),
                exempt: self.limits_exempt.map_or(ip.exempt, |n| n.0),
                proxy_protocol: self.proxy_protocol.unwrap_or(ip.proxy_protocol),
            },
            message_rate: MessageRateConfig {
                messages_per_second: self
                    .max_messages_per_sec
                    .unwrap_or(rate.messages_per_second),
                bytes_per_second: self.max_bytes_per_sec.unwrap_or(rate.bytes_per_second),
            },
            outbox_policy: self.outbox_policy.unwrap_or_default(),
            write_stall_timeout: self
                .write_stall_timeout
                .unwrap_or(crate::limits::WRITE_STALL_TIMEOUT),
            min_drain_rate: self.min_drain_rate.unwrap_or(crate::limits::MIN_DRAIN_RATE),
            // 1024 publishes per sender absorb a burst of a thousand events a turn behind;
            // 256 per turn keeps a turn short enough for timers while draining a burst in a few.
            mesh_queue_capacity: self.mesh_queue_capacity.unwrap_or(1024),
            mesh_turn_budget: self.mesh_turn_budget.unwrap_or(256),
            admin_listen: self
                .admin_listen
                .unwrap_or(AdminListen::Addr(super::DEFAULT_ADMIN_LISTEN)),
            // As long as a client's handshake may take.
            admin_request_timeout: self
                .admin_request_timeout
                .unwrap_or(Duration::from_secs(10)),
            // A few operators watching; the rest of the 64 admin connections stay for scrapes
            // and probes.
            admin_max_feeds: self.admin_max_feeds.unwrap_or(8),
            broker: self
                .broker
                .map(|url| url.trusting(self.broker_ca_file.clone())),
            broker_ca_file: self.broker_ca_file,
            broker_prefix: self
                .broker_prefix
                .unwrap_or_else(|| crate::cluster::DEFAULT_PREFIX.to_owned()),
            broker_required: self.broker_required.unwrap_or(false),
            // Four bursts of a thousand events while the broker is slow to answer.
            broker_queue_capacity: self.broker_queue_capacity.unwrap_or(4096),
            // Three renewals per lease: one lost renewal never expires a live instance, and a
            // dead one's members go within 15 s.
            presence_lease: self.presence_lease.unwrap_or(Duration::from_secs(15)),
            apps: self.apps.unwrap_or_default(),
            dev_app: self.dev_app,
        };
        let log = LogConfig {
            filter: self.log.level.unwrap_or_else(|| "info".to_owned()),
            format: self.log.format.unwrap_or(LogFormat::Human),
        };
        (config, log)
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
        ("admin_request_timeout", config.admin_request_timeout),
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
    if !(1..=128).contains(&config.ip_limits.ipv6_prefix) {
        return invalid(
            "ipv6_prefix",
            format!(
                "{} is not a prefix length between 1 and 128; 64 counts one host's /64 as one \
                 client, 128 counts single addresses",
                config.ip_limits.ipv6_prefix
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
    let mesh = [
        ("mesh_queue_capacity", config.mesh_queue_capacity, 1024),
        ("mesh_turn_budget", config.mesh_turn_budget, 256),
    ];
    for (key, value, default) in mesh {
        if value == 0 {
            return invalid(
                key,
                format!(
                    "0 would stop every message between shards; set 1 or more (default {default})"
                ),
            );
        }
    }
    if let Err(e) = crate::pusher::Apps::new(config.apps.clone()) {
        return invalid(
            "apps",
            format!("{e}; fix the [[apps]] sections of the file"),
        );
    }
    if let Some(reason) = crate::cluster::prefix_problem(&config.broker_prefix) {
        return invalid("broker_prefix", reason);
    }
    if config.presence_lease < Duration::from_millis(300) {
        return invalid(
            "presence_lease",
            format!(
                "{:?} is shorter than 300ms, which the renewals (a third of it) need to cross a \
                 busy broker; try 15s",
                config.presence_lease
            ),
        );
    }
    if config.broker_queue_capacity == 0 {
        return invalid(
            "broker_queue_capacity",
            "0 would drop every publish to the broker; set 1 or more (default 4096)".to_owned(),
        );
    }
    if config.broker_ca_file.is_some()
        && let Some(reason) = crate::cluster::ca_problem(config.broker.as_ref())
    {
        return invalid("broker_ca_file", reason);
    }
    if config.broker_required && config.broker.is_none() {
        return invalid(
            "broker_required",
            "is set but no broker is; set --broker URL or leave broker_required out".to_owned(),
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
