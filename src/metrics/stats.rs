//! [`ShardStats`]: everything one shard counts, as plain integers the shard thread owns.

use std::time::Duration;

use super::histogram::{
    HANDSHAKE_BOUNDS_US, HEARTBEAT_BOUNDS_US, Histogram, LOOP_LAG_BOUNDS_US, OUTBOX_BOUNDS_BYTES,
};
use super::labels::{CloseCodeLabel, DisconnectReason, RejectReason, SlowConsumerCause};
use crate::pusher::Limit;

/// The counters, gauges and histograms of one shard. The shard thread owns it and mutates it
/// with plain adds (no atomics, no locks) on the hot path; it publishes a copy to its
/// [`super::ShardSlot`] now and then, and the scrape sums the copies
/// ([`ShardStats::merge`]).
///
/// Counters only grow; gauges (`set_*`) hold the latest value the shard set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardStats {
    pub(crate) listening: bool,
    pub(crate) draining: bool,
    pub(crate) connections: u64,
    pub(crate) channels: u64,
    pub(crate) subscriptions: u64,
    pub(crate) loop_lag_us: u64,
    pub(crate) accepted: u64,
    pub(crate) rejected: [u64; RejectReason::COUNT],
    pub(crate) disconnects: [[u64; CloseCodeLabel::COUNT]; DisconnectReason::COUNT],
    pub(crate) messages_received: u64,
    pub(crate) messages_sent: u64,
    pub(crate) bytes_received: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) deliveries: u64,
    pub(crate) slow_consumer_closes: [u64; SlowConsumerCause::COUNT],
    /// Pusher subscriptions refused at a limit, by [`Limit::index`].
    pub(crate) pusher_refusals: [u64; Limit::COUNT],
    /// The shard's thread died (panicked); set by the registry, never published by the shard.
    pub(crate) failed: bool,
    /// Publishes to this shard dropped because the sender's mailbox lane was full.
    pub(crate) mesh_dropped_data: u64,
    /// Control messages to this shard dropped because its control lane was full.
    pub(crate) mesh_dropped_control: u64,
    /// Loop turns that reached the mesh turn budget with messages still queued.
    pub(crate) mesh_budget_exhausted: u64,
    pub(crate) outbox_bytes: Histogram<9>,
    pub(crate) handshake_duration_us: Histogram<16>,
    pub(crate) heartbeat_rtt_us: Histogram<16>,
    pub(crate) loop_lag_hist_us: Histogram<15>,
}

impl Default for ShardStats {
    fn default() -> Self {
        Self::new()
    }
}

/// Whole microseconds of `duration`, saturating: histograms of time count in microseconds.
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl ShardStats {
    /// All zero: a shard that is not listening yet.
    pub(crate) const fn new() -> Self {
        Self {
            listening: false,
            draining: false,
            connections: 0,
            channels: 0,
            subscriptions: 0,
            loop_lag_us: 0,
            accepted: 0,
            rejected: [0; RejectReason::COUNT],
            disconnects: [[0; CloseCodeLabel::COUNT]; DisconnectReason::COUNT],
            messages_received: 0,
            messages_sent: 0,
            bytes_received: 0,
            bytes_sent: 0,
            deliveries: 0,
            slow_consumer_closes: [0; SlowConsumerCause::COUNT],
            pusher_refusals: [0; Limit::COUNT],
            failed: false,
            mesh_dropped_data: 0,
            mesh_dropped_control: 0,
            mesh_budget_exhausted: 0,
            outbox_bytes: Histogram::new(&OUTBOX_BOUNDS_BYTES),
            handshake_duration_us: Histogram::new(&HANDSHAKE_BOUNDS_US),
            heartbeat_rtt_us: Histogram::new(&HEARTBEAT_BOUNDS_US),
            loop_lag_hist_us: Histogram::new(&LOOP_LAG_BOUNDS_US),
        }
    }

    /// The shard's listener is bound and accepting (`/ready` waits for every shard).
    pub(crate) fn set_listening(&mut self, listening: bool) {
        self.listening = listening;
    }

    /// The shard stopped accepting and is closing its connections.
    pub(crate) fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Open WebSocket connections on this shard (gauge).
    pub(crate) fn set_connections(&mut self, connections: u64) {
        self.connections = connections;
    }

    /// Channels with at least one subscriber on this shard (gauge).
    pub(crate) fn set_channels(&mut self, channels: u64) {
        self.channels = channels;
    }

    /// Channel subscriptions held by this shard's connections (gauge).
    pub(crate) fn set_subscriptions(&mut self, subscriptions: u64) {
        self.subscriptions = subscriptions;
    }

    /// One loop turn's lag: how late the loop ran a timer tick it was due to run. Sets the lag
    /// gauge and feeds the lag histogram.
    pub(crate) fn record_loop_lag(&mut self, lag: Duration) {
        let lag = micros(lag);
        self.loop_lag_us = lag;
        self.loop_lag_hist_us.observe(lag);
    }

    /// A connection completed its WebSocket handshake, `duration` after its TCP accept.
    pub(crate) fn record_accept(&mut self, handshake: Duration) {
        self.accepted += 1;
        self.handshake_duration_us.observe(micros(handshake));
    }

    /// A connection attempt was refused before it became a WebSocket.
    pub(crate) fn record_reject(&mut self, reason: RejectReason) {
        if let Some(count) = self.rejected.get_mut(reason.index()) {
            *count += 1;
        }
    }

    /// An established connection ended for `reason`, with the close code sent or received
    /// (`None`: no close frame was exchanged). A slow consumer is also counted, by cause, when
    /// the shard decides to cut it off ([`ShardStats::record_slow_consumer`]).
    pub(crate) fn record_disconnect(&mut self, reason: DisconnectReason, code: Option<u16>) {
        let code = CloseCodeLabel::of(code);
        if let Some(count) = self
            .disconnects
            .get_mut(reason.index())
            .and_then(|row| row.get_mut(code.index()))
        {
            *count += 1;
        }
    }

    /// A connection is being cut off as a slow consumer, for `cause`.
    pub(crate) fn record_slow_consumer(&mut self, cause: SlowConsumerCause) {
        if let Some(count) = self.slow_consumer_closes.get_mut(cause.index()) {
            *count += 1;
        }
    }

    /// A complete data message (text or binary, after reassembly) arrived from a client.
    pub(crate) fn record_message_received(&mut self) {
        self.messages_received += 1;
    }

    /// A data message was queued to one connection as the answer to that connection (echo,
    /// Pusher replies); fan-out copies count in [`ShardStats::record_deliveries`].
    pub(crate) fn record_message_sent(&mut self) {
        self.messages_sent += 1;
    }

    /// Bytes read from client sockets, framing and HTTP heads included.
    pub(crate) fn record_bytes_received(&mut self, bytes: u64) {
        self.bytes_received += bytes;
    }

    /// Bytes written to client sockets, framing and HTTP heads included.
    pub(crate) fn record_bytes_sent(&mut self, bytes: u64) {
        self.bytes_sent += bytes;
    }

    /// A published message was queued to `count` subscriber outboxes on this shard.
    pub(crate) fn record_deliveries(&mut self, count: u64) {
        self.deliveries += count;
    }

    /// A Pusher subscription was refused at `limit`.
    pub(crate) fn record_pusher_refusal(&mut self, limit: Limit) {
        if let Some(count) = self.pusher_refusals.get_mut(limit.index()) {
            *count += 1;
        }
    }

    /// The bytes pending in one connection's outbox when the shard hands it to the driver.
    pub(crate) fn record_outbox(&mut self, pending_bytes: u64) {
        self.outbox_bytes.observe(pending_bytes);
    }

    /// Messages to this shard dropped so far by full mailbox lanes (data, control); the
    /// mailbox counts them, the shard copies the totals here.
    pub(crate) fn set_mesh_dropped(&mut self, data: u64, control: u64) {
        self.mesh_dropped_data = data;
        self.mesh_dropped_control = control;
    }

    /// A loop turn took its budget of messages from other shards and left some for the next.
    pub(crate) fn record_mesh_budget_exhausted(&mut self) {
        self.mesh_budget_exhausted += 1;
    }

    /// A pong answered our ping after `rtt`.
    pub(crate) fn record_heartbeat(&mut self, rtt: Duration) {
        self.heartbeat_rtt_us.observe(micros(rtt));
    }

    /// Adds `other` into these: counters and histograms sum, gauges sum (connections of two
    /// shards are the connections of both), the lag gauge keeps the worst, `listening` holds
    /// only if both listen and `draining` if either drains.
    pub(crate) fn merge(&mut self, other: &Self) {
        self.listening &= other.listening;
        self.draining |= other.draining;
        self.connections += other.connections;
        self.channels += other.channels;
        self.subscriptions += other.subscriptions;
        self.loop_lag_us = self.loop_lag_us.max(other.loop_lag_us);
        self.accepted += other.accepted;
        for (mine, theirs) in self.rejected.iter_mut().zip(other.rejected.iter()) {
            *mine += theirs;
        }
        for (mine, theirs) in self.disconnects.iter_mut().zip(other.disconnects.iter()) {
            for (mine, theirs) in mine.iter_mut().zip(theirs.iter()) {
                *mine += theirs;
            }
        }
        self.messages_received += other.messages_received;
        self.messages_sent += other.messages_sent;
        self.bytes_received += other.bytes_received;
        self.bytes_sent += other.bytes_sent;
        self.deliveries += other.deliveries;
        for (mine, theirs) in self
            .slow_consumer_closes
            .iter_mut()
            .zip(other.slow_consumer_closes.iter())
        {
            *mine += theirs;
        }
        for (mine, theirs) in self.pusher_refusals.iter_mut().zip(&other.pusher_refusals) {
            *mine += theirs;
        }
        self.failed |= other.failed;
        self.mesh_dropped_data += other.mesh_dropped_data;
        self.mesh_dropped_control += other.mesh_dropped_control;
        self.mesh_budget_exhausted += other.mesh_budget_exhausted;
        self.outbox_bytes.merge(&other.outbox_bytes);
        self.handshake_duration_us
            .merge(&other.handshake_duration_us);
        self.heartbeat_rtt_us.merge(&other.heartbeat_rtt_us);
        self.loop_lag_hist_us.merge(&other.loop_lag_hist_us);
    }

    /// Connection attempts refused, over every reason.
    pub(crate) fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Connections ended, over every reason and code.
    pub(crate) fn disconnects_total(&self) -> u64 {
        self.disconnects.iter().flatten().sum()
    }

    /// Connections cut off as slow consumers, over every cause.
    pub(crate) fn slow_consumer_closes_total(&self) -> u64 {
        self.slow_consumer_closes.iter().sum()
    }

    /// The latest loop lag the shard recorded.
    pub(crate) fn loop_lag(&self) -> Duration {
        Duration::from_micros(self.loop_lag_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_land_in_their_counters() {
        let mut stats = ShardStats::new();
        stats.record_accept(Duration::from_millis(2));
        stats.record_reject(RejectReason::PerIp);
        stats.record_reject(RejectReason::PerIp);
        stats.record_disconnect(DisconnectReason::SlowConsumer, Some(4100));
        stats.record_disconnect(DisconnectReason::ConnectionLost, None);
        stats.record_slow_consumer(SlowConsumerCause::SlowDrain);
        stats.record_deliveries(3);
        stats.record_loop_lag(Duration::from_micros(700));
        stats.record_pusher_refusal(Limit::PresenceMembers);
        assert_eq!(stats.pusher_refusals[Limit::PresenceMembers.index()], 1);

        assert_eq!(stats.accepted, 1);
        assert_eq!(stats.handshake_duration_us.sum(), 2_000);
        assert_eq!(stats.rejected[RejectReason::PerIp.index()], 2);
        assert_eq!(stats.rejected_total(), 2);
        assert_eq!(stats.disconnects_total(), 2);
        let slow = DisconnectReason::SlowConsumer.index();
        assert_eq!(
            stats.disconnects[slow][CloseCodeLabel::of(Some(4100)).index()],
            1
        );
        assert_eq!(
            stats.slow_consumer_closes[SlowConsumerCause::SlowDrain.index()],
            1
        );
        assert_eq!(stats.slow_consumer_closes_total(), 1);
        assert_eq!(stats.deliveries, 3);
        assert_eq!(stats.loop_lag(), Duration::from_micros(700));
        assert_eq!(stats.loop_lag_hist_us.count(), 1);
    }

    #[test]
    fn merge_sums_counters_and_combines_gauges() {
        let mut a = ShardStats::new();
        a.set_listening(true);
        a.set_connections(10);
        a.record_loop_lag(Duration::from_millis(1));
        a.record_message_received();
        let mut b = ShardStats::new();
        b.set_listening(true);
        b.set_draining(true);
        b.set_connections(5);
        b.record_loop_lag(Duration::from_millis(9));
        b.record_message_received();
        b.record_heartbeat(Duration::from_millis(1));

        let mut total = ShardStats::new();
        total.set_listening(true);
        total.merge(&a);
        total.merge(&b);
        assert!(total.listening);
        assert!(total.draining);
        assert_eq!(total.connections, 15);
        assert_eq!(total.loop_lag(), Duration::from_millis(9), "worst shard");
        assert_eq!(total.messages_received, 2);
        assert_eq!(total.heartbeat_rtt_us.count(), 1);
        assert_eq!(total.loop_lag_hist_us.count(), 2);

        total.merge(&ShardStats::new());
        assert!(
            !total.listening,
            "one shard not listening makes the sum not listening"
        );
    }
}
