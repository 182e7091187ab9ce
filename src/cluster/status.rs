//! The broker's state and the bridge's counters, shared by the bridge (which writes them) and
//! the admin routes (`/health`, `/metrics`, which read a [`BrokerSnapshot`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::url::BrokerUrl;

/// The broker's state and the bridge's counters, read by `/health` and `/metrics`.
#[derive(Debug)]
pub(crate) struct BrokerStatus {
    pub(super) url: String,
    up: AtomicBool,
    /// Why the broker is down; empty while up.
    reason: Mutex<String>,
    pub(super) messages_in: AtomicU64,
    pub(super) messages_out: AtomicU64,
    pub(super) dropped_full: AtomicU64,
    pub(super) dropped_down: AtomicU64,
    pub(super) dropped_invalid: AtomicU64,
    /// Successful connections after the first.
    pub(super) reconnects: AtomicU64,
    /// Whether a connection ever succeeded.
    connected_once: AtomicBool,
    /// Subjects subscribed on the broker.
    pub(super) subscriptions: AtomicU64,
}

/// A copy of [`BrokerStatus`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BrokerSnapshot {
    /// The broker, without credentials.
    pub url: String,
    /// Connected.
    pub up: bool,
    /// Why it is down; empty while up.
    pub reason: String,
    /// Messages received from the broker.
    pub messages_in: u64,
    /// Messages published to the broker.
    pub messages_out: u64,
    /// Messages the shards handed over while the bridge's queue was full.
    pub dropped_full: u64,
    /// Messages not published because the broker was down.
    pub dropped_down: u64,
    /// Messages from the broker that were not ours to read.
    pub dropped_invalid: u64,
    /// Successful connections after the first: the reconnect epoch.
    pub reconnects: u64,
    /// Subjects subscribed on the broker.
    pub subscriptions: u64,
}

impl BrokerStatus {
    pub(super) fn new(url: &BrokerUrl) -> Self {
        Self {
            url: url.to_string(),
            up: AtomicBool::new(false),
            reason: Mutex::new("connecting".to_owned()),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            dropped_down: AtomicU64::new(0),
            dropped_invalid: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            connected_once: AtomicBool::new(false),
            subscriptions: AtomicU64::new(0),
        }
    }

    /// The broker answered: up, and one more epoch unless this is the first connection.
    pub(super) fn mark_up(&self) {
        if self.connected_once.swap(true, Ordering::AcqRel) {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.up.store(true, Ordering::Release);
        tracing::info!(broker = %self.url, "broker connected");
    }

    /// The broker is unreachable or the connection was lost, for `reason`.
    pub(super) fn mark_down(&self, reason: &str) {
        let was_up = self.up.swap(false, Ordering::AcqRel);
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = reason.to_owned();
        if was_up {
            tracing::warn!(broker = %self.url, reason, "broker connection lost; local delivery goes on, retrying");
        }
    }

    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub(super) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub(crate) fn snapshot(&self) -> BrokerSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BrokerSnapshot {
            url: self.url.clone(),
            up: self.is_up(),
            reason: self
                .reason
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            messages_in: load(&self.messages_in),
            messages_out: load(&self.messages_out),
            dropped_full: load(&self.dropped_full),
            dropped_down: load(&self.dropped_down),
            dropped_invalid: load(&self.dropped_invalid),
            reconnects: load(&self.reconnects),
            subscriptions: load(&self.subscriptions),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> BrokerUrl {
        "redis://127.0.0.1:1".parse().expect("valid")
    }

    #[test]
    fn broker_status_counts_reconnects_after_the_first_connection() {
        let status = BrokerStatus::new(&url());
        assert!(!status.snapshot().up);
        assert_eq!(status.snapshot().reason, "connecting");
        status.mark_up();
        status.mark_down("connection reset");
        let down = status.snapshot();
        assert_eq!(
            (down.up, down.reason.as_str(), down.reconnects),
            (false, "connection reset", 0)
        );
        status.mark_up();
        let up = status.snapshot();
        assert_eq!((up.up, up.reason.as_str(), up.reconnects), (true, "", 1));
    }
}
