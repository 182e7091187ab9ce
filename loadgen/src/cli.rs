//! The command line: one subcommand per scenario, common flags shared by all of them.
//!
//! Workers are the same binary started again with the same arguments (see `parent`), so
//! everything a worker needs to know travels through these flags and is parsed twice, the same
//! way.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ringcast::config::{Backend, parse_duration};

/// `ringcast-loadgen`: opens many WebSocket connections against ringcast and measures honestly.
#[derive(Debug, Parser)]
#[command(name = "ringcast-loadgen", version, about)]
pub struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    pub scenario: ScenarioCmd,
}

/// One subcommand per scenario; each carries the common flags plus its own.
#[derive(Debug, Subcommand)]
pub enum ScenarioCmd {
    /// Open N connections and hold them with heartbeats; report connects/s, connect latency,
    /// failures by cause and disconnects during the hold.
    Idle {
        /// Flags every scenario takes.
        #[command(flatten)]
        common: CommonArgs,
        /// Flags of the Pusher protocol, used when the URL path is `/app/{key}`.
        #[command(flatten)]
        pusher: PusherArgs,
    },
    /// Echo messages on `/echo`, closed-loop or open-loop (`--msg-rate`), measuring latency
    /// against the intended send time.
    Echo {
        /// Flags every scenario takes.
        #[command(flatten)]
        common: CommonArgs,
        /// Flags of the echo scenario.
        #[command(flatten)]
        echo: EchoArgs,
    },
    /// N subscribers over K Pusher channels; events published through the HTTP API and checked
    /// by sequence number per channel.
    Pubsub {
        /// Flags every scenario takes.
        #[command(flatten)]
        common: CommonArgs,
        /// Flags of the Pusher protocol.
        #[command(flatten)]
        pusher: PusherArgs,
        /// Flags of the publisher.
        #[command(flatten)]
        publish: PublishArgs,
    },
    /// Connect/disconnect cycles at `--rate`, at most `--conns` at once, for leak hunting.
    Churn {
        /// Flags every scenario takes.
        #[command(flatten)]
        common: CommonArgs,
        /// Flags of the Pusher protocol, used when the URL path is `/app/{key}`.
        #[command(flatten)]
        pusher: PusherArgs,
        /// How long each connection stays open before it closes.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        hold: Duration,
    },
    /// Open N, drop them all at once, reconnect with exponential backoff and full jitter;
    /// report the time to recover N and the peak reconnect rate.
    Storm {
        /// Flags every scenario takes.
        #[command(flatten)]
        common: CommonArgs,
        /// Flags of the Pusher protocol, used when the URL path is `/app/{key}`.
        #[command(flatten)]
        pusher: PusherArgs,
        /// Flags of the storm.
        #[command(flatten)]
        storm: StormArgs,
    },
}

/// Flags every scenario takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Target, `ws://HOST:PORT/PATH`; repeat to spread connections over several targets.
    /// Default: `ws://127.0.0.1:8080/echo`, or `/app/{key}?protocol=7` there for pubsub.
    #[arg(long = "url")]
    pub urls: Vec<String>,
    /// Connections to open (at once; for churn, the most open at once).
    #[arg(long, default_value_t = 100)]
    pub conns: u64,
    /// Connections opened per second, across all workers.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long the whole run lasts, ramp included (`10s`, `1.5m`, `500ms`, or seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Worker processes; at least as many as the open-files limit requires (computed at run
    /// time from RLIMIT_NOFILE).
    #[arg(long)]
    pub procs: Option<u32>,
    /// Event-loop threads per worker; defaults to the online CPUs.
    #[arg(long)]
    pub threads: Option<u32>,
    /// Event-loop backend, as for the server (`auto`, `uring` or `epoll`): io_uring when the
    /// kernel offers it, else epoll.
    #[arg(long, default_value_t = Backend::Auto)]
    pub backend: Backend,
    /// Source addresses to bind, as ranges and lists: `127.0.0.2-127.0.0.60,127.0.1.1`.
    #[arg(long)]
    pub src: Option<String>,
    /// Deadline for TCP connect plus the WebSocket handshake.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Heartbeat interval on open connections (WebSocket ping, or `pusher:ping` on Pusher).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub ping_interval: Duration,
    /// After `--duration`, how long to wait for messages still in flight before closing.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report with plots to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Largest tolerated fraction of lost deliveries (pubsub) before exiting non-zero.
    #[arg(long, default_value_t = 0.0)]
    pub max_loss: f64,
    /// Most failed connections tolerated before exiting non-zero.
    #[arg(long, default_value_t = 0)]
    pub max_failures: u64,
}

/// Flags of the Pusher protocol. Defaults come from the same environment variables the server
/// reads for its default app, so one environment configures both.
#[derive(Debug, Clone, Args)]
pub struct PusherArgs {
    /// Pusher app id (for the HTTP API path).
    #[arg(long, env = "RINGCAST_APP_ID", default_value = "")]
    pub app_id: String,
    /// Pusher app key (in the connection path and the API signature).
    #[arg(long, env = "RINGCAST_APP_KEY", default_value = "")]
    pub key: String,
    /// Pusher app secret (signs API requests).
    #[arg(
        long,
        env = "RINGCAST_APP_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    pub secret: String,
    /// Number of channels subscribers spread over.
    #[arg(long, default_value_t = 1)]
    pub channels: u32,
}

/// Flags of the pubsub publisher.
#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// Events published per second on each channel, through the HTTP API.
    #[arg(long, default_value_t = 1.0)]
    pub publish_rate: f64,
    /// Event data size in bytes (at least the sequence header).
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// How events are published: through the signed HTTP API, or as client events (`client-seq`
    /// on `private-` channels, sent by one subscriber of each channel; the server limits client
    /// events to about 10 per second per connection).
    #[arg(long, value_enum, default_value_t = PublishVia::Api)]
    pub publish_via: PublishVia,
    /// When publishing starts; defaults to the end of the ramp (`--conns` / `--rate`) plus one
    /// second, so that subscribers are in place first.
    #[arg(long, value_parser = parse_duration)]
    pub publish_after: Option<Duration>,
}

/// How the pubsub scenario publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PublishVia {
    /// `POST /apps/{id}/events`, signed like the server SDKs.
    Api,
    /// Client events on private channels.
    Client,
}

/// Flags of the echo scenario.
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    /// Messages per second per connection, open loop; without it, closed loop (send the next
    /// message when the echo of the previous one arrives).
    #[arg(long)]
    pub msg_rate: Option<f64>,
    /// Message size in bytes.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Send binary messages instead of text.
    #[arg(long)]
    pub binary: bool,
}

/// Flags of the storm scenario.
#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    /// When every connection is dropped; defaults to the end of the ramp plus one second.
    #[arg(long, value_parser = parse_duration)]
    pub drop_after: Option<Duration>,
    /// First backoff ceiling; attempt n waits a uniform random time in [0, min(max, base*2^n)].
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub backoff_max: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations follow the server's one rule (`ringcast::config::parse_duration`).
    #[test]
    fn durations_are_parsed_as_the_server_parses_them() {
        let duration = |text: &str| {
            Cli::try_parse_from(["ringcast-loadgen", "idle", "--duration", text]).map(|cli| {
                match cli.scenario {
                    ScenarioCmd::Idle { common, .. } => common.duration,
                    other => panic!("not idle: {other:?}"),
                }
            })
        };
        assert_eq!(duration("1.5s").ok(), Some(Duration::from_millis(1500)));
        assert_eq!(duration("250ms").ok(), Some(Duration::from_millis(250)));
        assert_eq!(duration("10").ok(), Some(Duration::from_secs(10)));
        for refused in ["-1s", "", "5 parsecs", "1.5"] {
            assert!(duration(refused).is_err(), "{refused:?} was accepted");
        }
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
