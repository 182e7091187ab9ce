//! The run plan: the command line checked and turned into what every event loop needs, the same
//! in the parent and in each worker (workers parse the same arguments again).
//!
//! Every connection has a global index `g` in `0..conns`. With `R` event loops in all (workers
//! times threads), loop `r` owns the indices with `g % R == r`, opens index `g` at
//! `t0 + g / rate`, and takes its target, source address and channel from `g`. So the whole
//! run is laid out by arithmetic: no coordination between workers beyond a shared `t0` on the
//! system-wide monotonic clock.

use std::net::IpAddr;

use ringcast::config::Backend;

use crate::cli::{CommonArgs, PublishVia, ScenarioCmd};
use crate::sign::AppCredentials;
use crate::target::{Target, parse_sources};

/// What the connections do once open.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Hold with heartbeats.
    Idle,
    /// Echo messages.
    Echo(EchoPlan),
    /// Subscribe and check every delivery.
    Pubsub(PubsubPlan),
    /// Close each connection after `hold_ns` and open another.
    Churn {
        /// How long each connection stays open.
        hold_ns: u64,
    },
    /// Drop all at once and reconnect with backoff.
    Storm(StormPlan),
}

/// Echo parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EchoPlan {
    /// Open loop: nanoseconds between two messages of a connection; `None` for closed loop.
    pub interval_ns: Option<u64>,
    /// Message size in bytes (at least [`EchoPlan::MIN_SIZE`]).
    pub size: usize,
    /// Binary rather than text messages.
    pub binary: bool,
}

impl EchoPlan {
    /// Smallest message: the 16 hex digits of the intended send time.
    pub const MIN_SIZE: usize = 16;
}

/// Pubsub parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct PubsubPlan {
    /// Channels the subscribers spread over (`loadgen-0` ...).
    pub channels: u32,
    /// Nanoseconds between two events of one channel.
    pub publish_interval_ns: u64,
    /// When publishing starts, nanoseconds after `t0`.
    pub publish_after_ns: u64,
    /// Event data size in bytes.
    pub size: usize,
    /// Publish as client events on private channels instead of through the HTTP API.
    pub client_events: bool,
}

/// Storm parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StormPlan {
    /// When every connection is dropped, nanoseconds after `t0`.
    pub drop_after_ns: u64,
    /// First backoff ceiling.
    pub backoff_base_ns: u64,
    /// Largest backoff ceiling.
    pub backoff_max_ns: u64,
}

/// Everything an event loop needs, identical in every process of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Scenario name, for reports.
    pub scenario: &'static str,
    /// What connections do.
    pub mode: Mode,
    /// Targets, used round-robin by global index.
    pub targets: Vec<Target>,
    /// Source addresses, used round-robin by global index; empty lets the kernel choose.
    pub sources: Vec<IpAddr>,
    /// Connections (at once).
    pub conns: u64,
    /// Connections opened per second, all loops together.
    pub rate: f64,
    /// Length of the run, ramp included.
    pub duration_ns: u64,
    /// Wait for in-flight messages after the run.
    pub drain_ns: u64,
    /// Connect plus handshake deadline.
    pub connect_timeout_ns: u64,
    /// Heartbeat interval.
    pub ping_interval_ns: u64,
    /// Pusher credentials (empty strings when not given).
    pub app: AppCredentials,
    /// Whether connections speak Pusher (targets are `/app/{key}`).
    pub pusher: bool,
    /// Most lost fraction tolerated.
    pub max_loss: f64,
    /// Most failed connections tolerated.
    pub max_failures: u64,
    /// Worker processes asked for.
    pub procs: Option<u32>,
    /// Threads per worker asked for.
    pub threads: Option<u32>,
    /// Driver backend.
    pub backend: Backend,
    /// Where to write the JSON report.
    pub json: Option<std::path::PathBuf>,
    /// Where to write the HTML report.
    pub html: Option<std::path::PathBuf>,
}

/// Default target when no `--url` is given.
const DEFAULT_ECHO_URL: &str = "ws://127.0.0.1:8080/echo";

fn ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn interval_ns(per_second: f64, what: &str) -> Result<u64, String> {
    if !(per_second.is_finite() && per_second > 0.0) {
        return Err(format!(
            "{what} must be a positive number, got {per_second}"
        ));
    }
    Ok(((1e9 / per_second) as u64).max(1))
}

impl Plan {
    /// Checks the command line and lays out the run.
    pub fn from_cli(cmd: &ScenarioCmd) -> Result<Self, String> {
        let (common, pusher_args) = match cmd {
            ScenarioCmd::Idle { common, pusher }
            | ScenarioCmd::Pubsub { common, pusher, .. }
            | ScenarioCmd::Churn { common, pusher, .. }
            | ScenarioCmd::Storm { common, pusher, .. } => (common, Some(pusher)),
            ScenarioCmd::Echo { common, .. } => (common, None),
        };
        let app = pusher_args.map_or_else(
            || AppCredentials {
                app_id: String::new(),
                key: String::new(),
                secret: String::new(),
            },
            |p| AppCredentials {
                app_id: p.app_id.clone(),
                key: p.key.clone(),
                secret: p.secret.clone(),
            },
        );
        let ramp_ns = ramp_ns(common)?;
        let (scenario, mode) = match cmd {
            ScenarioCmd::Idle { .. } => ("idle", Mode::Idle),
            ScenarioCmd::Echo { echo, .. } => {
                if echo.size < EchoPlan::MIN_SIZE {
                    return Err(format!(
                        "--size must be at least {} bytes",
                        EchoPlan::MIN_SIZE
                    ));
                }
                let interval_ns = echo
                    .msg_rate
                    .map(|r| interval_ns(r, "--msg-rate"))
                    .transpose()?;
                (
                    "echo",
                    Mode::Echo(EchoPlan {
                        interval_ns,
                        size: echo.size,
                        binary: echo.binary,
                    }),
                )
            }
            ScenarioCmd::Pubsub {
                pusher, publish, ..
            } => {
                if pusher.channels == 0 {
                    return Err("--channels must be at least 1".into());
                }
                if app.key.is_empty() || app.secret.is_empty() || app.app_id.is_empty() {
                    return Err(
                        "pubsub needs --app-id, --key and --secret (or RINGCAST_APP_ID, \
                                RINGCAST_APP_KEY, RINGCAST_APP_SECRET): the server prints its \
                                development app's credentials at start"
                            .into(),
                    );
                }
                let publish_after_ns = publish.publish_after.map_or(ramp_ns + 1_000_000_000, ns);
                let client_events = publish.publish_via == PublishVia::Client;
                if client_events && common.conns < u64::from(pusher.channels) {
                    return Err(
                        "--publish-via client needs at least one connection per channel".into(),
                    );
                }
                (
                    "pubsub",
                    Mode::Pubsub(PubsubPlan {
                        channels: pusher.channels,
                        publish_interval_ns: interval_ns(publish.publish_rate, "--publish-rate")?,
                        publish_after_ns,
                        size: publish.size,
                        client_events,
                    }),
                )
            }
            ScenarioCmd::Churn { hold, .. } => ("churn", Mode::Churn { hold_ns: ns(*hold) }),
            ScenarioCmd::Storm { storm, .. } => {
                if storm.backoff_base.is_zero() || storm.backoff_max < storm.backoff_base {
                    return Err("--backoff-base must be positive and at most --backoff-max".into());
                }
                (
                    "storm",
                    Mode::Storm(StormPlan {
                        drop_after_ns: storm.drop_after.map_or(ramp_ns + 1_000_000_000, ns),
                        backoff_base_ns: ns(storm.backoff_base),
                        backoff_max_ns: ns(storm.backoff_max),
                    }),
                )
            }
        };
        let urls = if common.urls.is_empty() {
            vec![if matches!(mode, Mode::Pubsub(_)) {
                format!("ws://127.0.0.1:8080/app/{}?protocol=7", app.key)
            } else {
                DEFAULT_ECHO_URL.to_string()
            }]
        } else {
            common.urls.clone()
        };
        let targets = urls
            .iter()
            .map(|u| Target::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        let pusher = targets.iter().all(Target::is_pusher);
        if !pusher && targets.iter().any(Target::is_pusher) {
            return Err("--url: mix of Pusher (/app/{key}) and plain targets".into());
        }
        if matches!(mode, Mode::Pubsub(_)) && !pusher {
            return Err("pubsub needs Pusher targets: ws://HOST:PORT/app/{key}?protocol=7".into());
        }
        let sources = common
            .src
            .as_deref()
            .map(parse_sources)
            .transpose()?
            .unwrap_or_default();
        if common.conns == 0 {
            return Err("--conns must be at least 1".into());
        }
        Ok(Self {
            scenario,
            mode,
            targets,
            sources,
            conns: common.conns,
            rate: common.rate,
            duration_ns: ns(common.duration),
            drain_ns: ns(common.drain),
            connect_timeout_ns: ns(common.connect_timeout),
            ping_interval_ns: ns(common.ping_interval).max(1_000_000),
            app,
            pusher,
            max_loss: common.max_loss,
            max_failures: common.max_failures,
            procs: common.procs,
            threads: common.threads,
            backend: common.backend,
            json: common.json.clone(),
            html: common.report.clone(),
        })
    }

    /// Global index of slot `slot` of loop `runner` out of `runners`.
    pub fn global_index(slot: u64, runner: u64, runners: u64) -> u64 {
        slot * runners + runner
    }

    /// Slots (connections at once) of loop `runner` out of `runners`.
    pub fn slots_of(&self, runner: u64, runners: u64) -> u64 {
        if runner >= self.conns {
            0
        } else {
            (self.conns - runner).div_ceil(runners)
        }
    }

    /// When global index `g` opens, nanoseconds after `t0`.
    pub fn open_at_ns(&self, g: u64) -> u64 {
        (g as f64 * 1e9 / self.rate) as u64
    }

    /// The channel of subscriber `g`.
    pub fn channel_of(g: u64, channels: u32) -> u32 {
        (g % u64::from(channels.max(1))) as u32
    }
}

/// How long opening every connection takes at `--rate`.
fn ramp_ns(common: &CommonArgs) -> Result<u64, String> {
    if !(common.rate.is_finite() && common.rate > 0.0) {
        return Err(format!(
            "--rate must be a positive number, got {}",
            common.rate
        ));
    }
    Ok((common.conns as f64 * 1e9 / common.rate) as u64)
}

/// Name of channel `c`: private channels when events are client events, which Pusher allows on
/// private and presence channels only.
pub fn channel_name(c: u32, private: bool) -> String {
    if private {
        format!("private-loadgen-{c}")
    } else {
        format!("loadgen-{c}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser as _;

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let cli =
            Cli::try_parse_from(std::iter::once("ringcast-loadgen").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        Plan::from_cli(&cli.scenario)
    }

    #[test]
    fn slots_cover_every_connection_once() {
        let p = plan(&["idle", "--conns", "10"]).unwrap();
        for runners in 1..=12u64 {
            let mut seen = vec![0; 10];
            for r in 0..runners {
                for s in 0..p.slots_of(r, runners) {
                    seen[Plan::global_index(s, r, runners) as usize] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{runners} runners: {seen:?}");
        }
    }

    #[test]
    fn command_lines_are_checked() {
        /// A pubsub command line with credentials, then `extra`.
        fn pubsub<'a>(extra: &[&'a str]) -> Vec<&'a str> {
            let mut args = vec!["pubsub", "--app-id", "1", "--key", "k", "--secret", "s"];
            args.extend_from_slice(extra);
            args
        }
        let cases: Vec<(Vec<&str>, bool)> = vec![
            (vec!["idle"], true),
            (
                vec!["echo", "--msg-rate", "10", "--size", "64", "--binary"],
                true,
            ),
            (vec!["echo", "--size", "8"], false),
            (vec!["echo", "--msg-rate", "0"], false),
            (vec!["idle", "--rate", "0"], false),
            (vec!["idle", "--conns", "0"], false),
            (pubsub(&[]), true),
            (pubsub(&["--url", "ws://127.0.0.1:1/echo"]), false),
            (
                vec![
                    "idle",
                    "--url",
                    "ws://127.0.0.1:1/echo",
                    "--url",
                    "ws://127.0.0.1:1/app/k",
                ],
                false,
            ),
            (vec!["idle", "--src", "127.0.0.2-127.0.0.9"], true),
            (vec!["idle", "--src", "bogus"], false),
            (vec!["storm", "--backoff-base", "0s"], false),
            (vec!["churn", "--hold", "250ms"], true),
            (pubsub(&["--publish-via", "client"]), true),
            (
                pubsub(&["--publish-via", "client", "--conns", "2", "--channels", "3"]),
                false,
            ),
        ];
        for (args, ok) in &cases {
            // Pusher credentials may come from the environment; keep the cases independent of it.
            let result = plan(args);
            if args.first() == Some(&"pubsub") && !args.contains(&"--app-id") {
                continue;
            }
            assert_eq!(result.is_ok(), *ok, "{args:?}: {result:?}");
        }
    }

    #[test]
    fn pubsub_defaults_to_the_app_path() {
        let p = plan(&[
            "pubsub", "--app-id", "1", "--key", "abc", "--secret", "s", "--conns", "1000",
        ])
        .unwrap();
        assert_eq!(p.targets[0].path, "/app/abc?protocol=7");
        assert!(p.pusher);
        match p.mode {
            Mode::Pubsub(ps) => assert_eq!(ps.publish_after_ns, 2_000_000_000, "ramp 1 s + 1 s"),
            other => panic!("{other:?}"),
        }
    }
}
