//! Cluster mode: several ringcast processes joined through a broker (Redis pub/sub or NATS),
//! so a publish on any instance reaches the subscribers on every instance.
//!
//! One thread per process, the bridge, owns the broker client on its own current-thread tokio
//! runtime; the shards stay free of tokio. Nothing of this runs without `--broker`.
//!
//! # The bridge's mailbox
//!
//! - **Publishes and terminations** from the shards go into one bounded queue
//!   (`broker_queue_capacity`) with `try_send`: a full queue drops the message and counts it
//!   (`ringcast_broker_dropped_total{reason="full"}`); a shard never waits on the broker.
//! - **Interest** is a set of `(app, channel)` whose local subscriber count may have crossed
//!   zero, filled by the hub when a shard's count goes 0 -> 1 or 1 -> 0, plus a wake-up. The
//!   bridge re-reads the hub's process-wide count for each and subscribes or unsubscribes the
//!   channel's subject to match, so the order in which shards report does not matter and a
//!   burst of churn on one channel is one check. The set holds each channel once, so it is
//!   bounded by the channels in use.
//!
//! Messages from the broker are decoded on the bridge and handed to each shard with
//! subscribers of the channel as a mesh publish on the lane after the shards' (the mailboxes are
//! built with one more lane when a broker is configured); the origin instance ignores its own
//! messages, having delivered them locally already. Local delivery never waits for, or depends
//! on, the broker.
//!
//! The bridge also reports the process's channel counts to the other instances and keeps
//! theirs (`counts.rs`), so the HTTP API's channel queries answer for the whole cluster, and a
//! stopping process asks it to flush ([`Bridge::flush`]) so its last presence leaves go out
//! before the exit.

mod bridge;
mod counts;
mod hold;
mod nats;
mod presence;
mod redis;
mod status;
mod tls;
mod url;
mod wire;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};

pub(crate) use counts::RemoteCounts;
pub(crate) use status::{BrokerSnapshot, BrokerStatus};
pub(crate) use tls::ca_problem;
pub use url::{BrokerKind, BrokerUrl};

use crate::config::Config;
use crate::pusher::{AppIndex, Frame, SocketId};
use crate::shard::hub::Hub;
use bridge::{Context, run};

/// The subject prefix when none is configured.
pub const DEFAULT_PREFIX: &str = "ringcast";

/// How long a stopping process waits for the bridge to publish what its shards left behind:
/// bounded, so a broker that is down or stuck cannot hold the exit.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest subject prefix accepted.
const MAX_PREFIX_LEN: usize = 64;

/// Why a prefix cannot name subjects on both brokers, or `None` when it can: letters, digits,
/// `-` and `_`, 1 to 64 of them.
pub(crate) fn prefix_problem(prefix: &str) -> Option<String> {
    if prefix.is_empty() || prefix.len() > MAX_PREFIX_LEN {
        return Some(format!(
            "must be 1 to {MAX_PREFIX_LEN} characters, not {}",
            prefix.len()
        ));
    }
    let ok = prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (!ok).then(|| {
        format!("{prefix:?} may hold only letters, digits, - and _ (it starts every subject)")
    })
}

/// Why cluster mode could not start.
#[derive(Debug)]
pub enum ClusterError {
    /// `broker_required` is set and the first connection attempt failed.
    Unreachable {
        /// The broker, without credentials.
        url: String,
        /// What the client said.
        reason: String,
    },
    /// The bridge thread or its runtime could not be started.
    Start(std::io::Error),
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable { url, reason } => write!(
                f,
                "the broker {url} is unreachable ({reason}) and --broker-required is set; start \
                 the broker, fix --broker, or leave --broker-required out to start degraded and \
                 keep retrying"
            ),
            Self::Start(e) => write!(f, "cannot start the cluster bridge thread: {e}"),
        }
    }
}

impl std::error::Error for ClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Start(e) => Some(e),
            Self::Unreachable { .. } => None,
        }
    }
}

/// What a shard hands the bridge to publish.
#[derive(Debug)]
enum Command {
    /// An event published locally, for the other instances.
    Publish {
        app: AppIndex,
        channel: Arc<str>,
        frame: Frame,
        exclude: Option<SocketId>,
    },
    /// `terminate_connections` for a user, for the other instances.
    TerminateUser { app: AppIndex, user_id: Arc<str> },
    /// The process is stopping: publish what the shards left behind (the presence leaves and
    /// events of the drain), then answer.
    Flush(std::sync::mpsc::Sender<()>),
}

/// The shards' handle on the bridge, kept in the [`Hub`]; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Bridge {
    commands: mpsc::Sender<Command>,
    interest: Arc<Interest>,
    status: Arc<BrokerStatus>,
    counts: Arc<RemoteCounts>,
}

/// A user of a presence channel of an app.
type PresenceKey = (AppIndex, Box<str>, Box<str>);

/// Channels whose local interest may have changed, presence members whose local connections
/// may have, the presence channels whose other members the bridge knows, and the bridge's
/// wake-up.
#[derive(Debug, Default)]
struct Interest {
    changed: Mutex<HashSet<(AppIndex, Box<str>)>>,
    presence: Mutex<HashSet<PresenceKey>>,
    /// Presence channels the bridge listens on and has asked the other instances about: a
    /// join on any other one waits for the answers before its roster goes out.
    synced: Mutex<HashSet<(AppIndex, Box<str>)>>,
    wake: Notify,
}

impl Bridge {
    /// Hands a locally published event to the other instances; dropped and counted when the
    /// bridge's queue is full.
    pub(crate) fn publish(
        &self,
        app: AppIndex,
        channel: Arc<str>,
        frame: Frame,
        exclude: Option<SocketId>,
    ) {
        self.send(Command::Publish {
            app,
            channel,
            frame,
            exclude,
        });
    }

    /// The other instances' last channel counts, for the HTTP API's channel queries.
    pub(crate) fn remote_counts(&self) -> &RemoteCounts {
        &self.counts
    }

    /// Hands `terminate_connections` for a user to the other instances.
    pub(crate) fn terminate_user(&self, app: AppIndex, user_id: Arc<str>) {
        self.send(Command::TerminateUser { app, user_id });
    }

    /// Waits up to `within` for the bridge to publish everything handed to it so far, the
    /// presence leaves of closed connections included, so the other instances hear of a
    /// drained instance's members at once rather than when their lease runs out. `false` when
    /// the bridge did not answer in time (a broker that is down or stuck).
    pub(crate) fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let (ack, done) = std::sync::mpsc::channel();
        let mut command = Command::Flush(ack);
        loop {
            match self.commands.try_send(command) {
                Ok(()) => break,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    command = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        self.interest.wake.notify_one();
        done.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }

    fn send(&self, command: Command) {
        if self.commands.try_send(command).is_err() {
            BrokerStatus::count(&self.status.dropped_full);
        }
    }

    /// A local connection of the user joined or left the presence channel: the bridge checks
    /// whether the other instances must hear of it (the user's first or last one here).
    pub(crate) fn presence_changed(&self, app: AppIndex, channel: &str, user_id: &str) {
        let inserted = self
            .interest
            .presence
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((app, channel.into(), user_id.into()));
        if inserted {
            self.interest.wake.notify_one();
        }
    }

    /// Whether a join of the presence channel must wait for its `subscription_succeeded`: the
    /// broker is up and the bridge has not yet learned the other instances' members of the
    /// channel. The bridge then answers within [`hold::ROSTER_WAIT`] with
    /// [`crate::mesh::MeshMessage::PresenceReady`].
    pub(crate) fn holds_roster(&self, app: AppIndex, channel: &str) -> bool {
        self.status.is_up()
            && !self
                .interest
                .synced
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&(app, Box::from(channel)))
    }

    /// A shard's subscriber count of the channel crossed zero: the bridge checks whether the
    /// process still wants the channel's subject.
    pub(crate) fn interest_changed(&self, app: AppIndex, channel: &str) {
        let inserted = self
            .interest
            .changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((app, channel.into()));
        if inserted {
            self.interest.wake.notify_one();
        }
    }
}

/// What the bridge's side of the mailbox holds.
struct Inbox {
    commands: mpsc::Receiver<Command>,
    interest: Arc<Interest>,
}

/// Starts the bridge when `config` names a broker and registers it with the hub, whose shards
/// then hand it their publishes; the shards' mailboxes must have lane `hub.shards()` for its
/// deliveries. `None` without a broker: nothing runs. With `broker_required`, waits for the
/// first connection attempt and fails when it does.
pub(crate) fn start(
    config: &Config,
    hub: &Arc<Hub>,
) -> Result<Option<Arc<BrokerStatus>>, ClusterError> {
    let Some(url) = config.broker.clone() else {
        return Ok(None);
    };
    let (bridge, inbox) = channel(&url, config.broker_queue_capacity, config.presence_lease);
    let status = Arc::clone(&bridge.status);
    let counts = Arc::clone(&bridge.counts);
    hub.set_bridge(bridge);
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let context = Context {
        hub: Arc::clone(hub),
        status: Arc::clone(&status),
        prefix: config.broker_prefix.clone(),
        origin: u64::from_le_bytes(
            crate::shard::hub::entropy()[..8]
                .try_into()
                .unwrap_or_default(),
        ),
        lane: hub.shards(),
        lease: config.presence_lease,
        counts,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClusterError::Start)?;
    std::thread::Builder::new()
        .name("cluster-bridge".into())
        .spawn(move || {
            runtime.block_on(async move {
                match url.kind {
                    BrokerKind::Redis => {
                        run::<redis::RedisLink>(&url, context, inbox, first_tx).await
                    }
                    BrokerKind::Nats => run::<nats::NatsLink>(&url, context, inbox, first_tx).await,
                }
            });
        })
        .map_err(ClusterError::Start)?;
    if config.broker_required {
        match first_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                return Err(ClusterError::Unreachable {
                    url: status.url.clone(),
                    reason,
                });
            }
            Err(_) => {
                return Err(ClusterError::Unreachable {
                    url: status.url.clone(),
                    reason: "the bridge thread stopped".to_owned(),
                });
            }
        }
    }
    Ok(Some(status))
}

/// A bridge handle and its inbox, the queue holding `capacity` commands; other instances'
/// counts stay for `lease`.
fn channel(url: &BrokerUrl, capacity: usize, lease: Duration) -> (Bridge, Inbox) {
    let (commands_tx, commands) = mpsc::channel(capacity.max(1));
    let interest = Arc::new(Interest::default());
    let bridge = Bridge {
        commands: commands_tx,
        interest: Arc::clone(&interest),
        status: Arc::new(BrokerStatus::new(url)),
        counts: Arc::new(RemoteCounts::new(lease)),
    };
    (bridge, Inbox { commands, interest })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pusher::encode_event_frame;

    fn url() -> BrokerUrl {
        "redis://127.0.0.1:1".parse().expect("valid")
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (bridge, mut inbox) = channel(&url(), 2, Duration::from_secs(5));
        let frame = encode_event_frame("e", "c", "{}", None);
        for _ in 0..5 {
            bridge.publish(AppIndex(0), "c".into(), frame.clone(), None);
        }
        bridge.terminate_user(AppIndex(0), "u".into());
        assert_eq!(bridge.status.snapshot().dropped_full, 4);
        let mut queued = 0;
        while inbox.commands.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, 2, "the queue holds its capacity");
        bridge.publish(AppIndex(0), "c".into(), frame, None);
        assert_eq!(
            bridge.status.snapshot().dropped_full,
            4,
            "room again once read"
        );
    }

    #[test]
    fn interest_changes_are_kept_once_per_channel() {
        let (bridge, inbox) = channel(&url(), 2, Duration::from_secs(5));
        for _ in 0..3 {
            bridge.interest_changed(AppIndex(0), "a");
        }
        bridge.interest_changed(AppIndex(1), "a");
        let changed = inbox.interest.changed.lock().expect("lock").len();
        assert_eq!(changed, 2);
    }

    #[test]
    fn prefixes_that_name_subjects_on_both_brokers() {
        assert_eq!(prefix_problem("ringcast"), None);
        assert_eq!(prefix_problem("blue-2_x"), None);
        for bad in ["", "a.b", "a:b", "a b", "*", &"x".repeat(65)] {
            assert!(prefix_problem(bad).is_some(), "{bad:?}");
        }
    }
}
