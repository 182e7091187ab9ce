//! The run's figures: merged from every worker, printed for a person, written as JSON, and
//! judged against `--max-loss` and `--max-failures`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::cause::{Cause, CauseCounts};
use crate::plan::{Mode, Plan};
use crate::proto::{Merged, TICK_NS, Tick};
use crate::record::{Hist, Percentiles};

/// One point of the time series, all event loops summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Point {
    /// Seconds since the start.
    pub t_s: f64,
    /// Connections open.
    pub open: u64,
    /// Handshakes completed per second over this tick.
    pub connects_per_s: f64,
    /// Messages received per second over this tick.
    pub msgs_per_s: f64,
    /// Failed attempts so far.
    pub failed: u64,
    /// Largest per-loop p99 message latency in this tick, microseconds.
    pub p99_us: u64,
}

/// Live ticks of every event loop, folded into one time series.
#[derive(Debug, Default)]
pub struct Series {
    /// Per loop, its ticks in arrival order (cumulative counters).
    loops: BTreeMap<u32, Vec<Tick>>,
}

impl Series {
    /// Takes one tick.
    pub fn handle_tick(&mut self, tick: Tick) {
        self.loops.entry(tick.runner).or_default().push(tick);
    }

    /// The latest tick index every loop has reported.
    pub fn complete_idx(&self) -> Option<u32> {
        self.loops
            .values()
            .map(|t| t.last().map_or(0, |t| t.idx))
            .min()
    }

    /// Sum over loops of the latest tick at or before `idx` of each.
    fn sum_at(&self, idx: u32) -> (Tick, u64) {
        let mut sum = Tick::default();
        let mut p99 = 0;
        for ticks in self.loops.values() {
            let at = ticks.partition_point(|t| t.idx <= idx);
            if let Some(t) = at.checked_sub(1).and_then(|i| ticks.get(i)) {
                sum.open += t.open;
                sum.opened += t.opened;
                sum.failed += t.failed;
                sum.sent += t.sent;
                sum.received += t.received;
                if t.idx == idx {
                    p99 = p99.max(t.p99_us);
                }
            }
        }
        (sum, p99)
    }

    /// The series, one point per tick.
    pub fn points(&self) -> Vec<Point> {
        let last = self
            .loops
            .values()
            .filter_map(|t| t.last().map(|t| t.idx))
            .max()
            .unwrap_or(0);
        let tick_s = TICK_NS as f64 / 1e9;
        let mut prev = Tick::default();
        (1..=last)
            .map(|idx| {
                let (sum, p99) = self.sum_at(idx);
                let point = Point {
                    t_s: f64::from(idx) * tick_s,
                    open: sum.open,
                    connects_per_s: sum.opened.saturating_sub(prev.opened) as f64 / tick_s,
                    msgs_per_s: sum.received.saturating_sub(prev.received) as f64 / tick_s,
                    failed: sum.failed,
                    p99_us: p99,
                };
                prev = sum;
                point
            })
            .collect()
    }

    /// A progress line for a terminal.
    pub fn progress_line(&self, target: u64) -> Option<String> {
        let idx = self.complete_idx()?;
        let (now, p99) = self.sum_at(idx);
        let (before, _) = self.sum_at(idx.saturating_sub(5));
        let secs = 5.0 * TICK_NS as f64 / 1e9;
        Some(format!(
            "[{:6.1}s] open {}/{}  connects/s {:.0}  msgs/s {:.0}  p99 {}  errors {}",
            f64::from(idx) * TICK_NS as f64 / 1e9,
            now.open,
            target,
            now.opened.saturating_sub(before.opened) as f64 / secs,
            now.received.saturating_sub(before.received) as f64 / secs,
            human_us(p99),
            now.failed,
        ))
    }
}

/// Failure and disconnect counts by cause name.
fn by_cause(counts: &CauseCounts) -> BTreeMap<&'static str, u64> {
    counts.nonzero().map(|(c, n)| (c.name(), n)).collect()
}

/// Storm figures.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    /// Connections dropped at once.
    pub dropped: u64,
    /// Milliseconds from the drop until every connection was back; `None` when they never were.
    pub recover_ms: Option<f64>,
    /// Highest handshake rate over one 200 ms tick after the drop, per second.
    pub peak_reconnects_per_s: f64,
    /// Failed reconnect attempts that were retried, by cause.
    pub retries_by_cause: BTreeMap<&'static str, u64>,
}

/// Everything, as written to `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// Worker processes.
    pub workers: u32,
    /// Event loops per worker.
    pub threads: u32,
    /// Driver backend of the workers.
    pub backend: String,
    /// Connections asked for.
    pub conns_target: u64,
    /// Handshakes completed (reconnects and churn cycles included).
    pub conns_opened: u64,
    /// Connections that failed (storm: never recovered).
    pub conns_failed: u64,
    /// Connections open when the run ended.
    pub conns_open_at_end: u64,
    /// Open connections that ended early.
    pub disconnects: u64,
    /// Messages sent.
    pub msgs_sent: u64,
    /// Messages received.
    pub msgs_received: u64,
    /// Pubsub: distinct deliveries to counted subscribers.
    pub delivered: u64,
    /// Pubsub: deliveries that should have happened and did not.
    pub lost: u64,
    /// Pubsub: repeated deliveries.
    pub duplicated: u64,
    /// Pubsub: deliveries after a higher sequence.
    pub out_of_order: u64,
    /// Pubsub: deliveries expected (counted subscribers times successful publishes).
    pub expected: u64,
    /// Pubsub: events published, and how many the API refused or that failed on the way.
    pub published: u64,
    /// Pubsub: failed publishes.
    pub publish_failed: u64,
    /// Pubsub: subscriptions completed, and those too late to count.
    pub subscribed: u64,
    /// Pubsub: subscribers left out of loss accounting.
    pub late_subscribers: u64,
    /// `pusher:error` events received.
    pub pusher_errors: u64,
    /// Churn: clean connect-hold-close cycles.
    pub cycles: u64,
    /// Average handshakes per second while opening the first `conns_target` connections.
    pub connects_per_s: f64,
    /// Highest handshake rate over one 200 ms tick, per second.
    pub peak_connects_per_s: f64,
    /// Connect latency (TCP connect plus WebSocket upgrade), microseconds.
    pub connect_latency_us: Percentiles,
    /// Message latency (echo round trip, publish-to-delivery, or heartbeat round trip) against
    /// intended send times, microseconds.
    pub latency_us: Percentiles,
    /// Latency curve: (percentile, microseconds), for plots.
    pub latency_curve: Vec<(f64, u64)>,
    /// Failures by cause.
    pub failures_by_cause: BTreeMap<&'static str, u64>,
    /// Disconnects by cause.
    pub disconnects_by_cause: BTreeMap<&'static str, u64>,
    /// Storm figures.
    pub storm: Option<StormReport>,
    /// Worker resident memory at the end of the hold, bytes (all workers).
    pub rss_bytes: u64,
    /// Worker resident memory growth per connection open at the end, bytes.
    pub rss_per_conn_bytes: Option<f64>,
    /// The time series.
    pub series: Vec<Point>,
    /// Why the run counts as failed, if it does.
    pub verdict: Vec<String>,
}

/// Percentiles at which the latency curve is drawn: 1 - 10^(-k/4), up to 99.999.
fn curve(hist: &Hist) -> Vec<(f64, u64)> {
    if hist.is_empty() {
        return Vec::new();
    }
    (0..=20)
        .map(|k| {
            let q = 1.0 - 10f64.powf(-f64::from(k) / 4.0);
            (q * 100.0, hist.value_at_quantile(q))
        })
        .collect()
}

/// Highest handshake rate of any one tick (200 ms) of the series after `from_s`, per second: a
/// reconnect storm is over within a second or two, so a one-second average would hide its peak.
fn peak_rate(points: &[Point], from_s: f64) -> f64 {
    points
        .iter()
        .filter(|p| p.t_s > from_s)
        .map(|p| p.connects_per_s)
        .fold(0.0, f64::max)
}

impl Report {
    /// Builds the report of a run.
    pub fn new(
        plan: &Plan,
        workers: u32,
        threads: u32,
        backend: &str,
        merged: &Merged,
        series: &Series,
    ) -> Self {
        let c = &merged.counters;
        let mut expected = 0u64;
        let (mut delivered, mut lost, mut dup, mut ooo, mut published, mut publish_failed) =
            (0, 0, 0, 0, 0, 0);
        for t in merged.channels.values() {
            let ok = t.published.saturating_sub(t.publish_failed);
            expected += t.subs * ok;
            lost += crate::seq::lost(t.subs * ok, t.distinct);
            delivered += t.distinct;
            dup += t.duplicated;
            ooo += t.out_of_order;
            published += t.published;
            publish_failed += t.publish_failed;
        }
        let points = series.points();
        // Handshakes per second during the ramp: the first `conns_target` opens (or as many as
        // succeeded) over the time they took from the start.
        let target = c.conns_target;
        let ramp_ns = if c.conns_opened >= target {
            c.ramp_done_ns
        } else {
            Some(c.last_open_ns)
        };
        let connects_per_s = ramp_ns.filter(|ns| *ns > 0).map_or(0.0, |ns| {
            target.min(c.conns_opened) as f64 / (ns as f64 / 1e9)
        });
        let storm = matches!(plan.mode, Mode::Storm(_)).then(|| {
            let drop_s = c.drop_at_ns.map_or(f64::MAX, |ns| ns as f64 / 1e9);
            StormReport {
                dropped: c.storm_dropped,
                recover_ms: c.recover_ns.map(|ns| ns as f64 / 1e6),
                peak_reconnects_per_s: peak_rate(&points, drop_s),
                retries_by_cause: by_cause(&c.retries),
            }
        });
        let rss_growth = c.rss_bytes.saturating_sub(c.rss_base_bytes);
        let mut report = Self {
            scenario: plan.scenario,
            workers,
            threads,
            backend: backend.to_string(),
            conns_target: target,
            conns_opened: c.conns_opened,
            conns_failed: c.failures.total(),
            conns_open_at_end: c.conns_open_at_end,
            disconnects: c.disconnects.total(),
            msgs_sent: c.msgs_sent,
            msgs_received: c.msgs_received,
            delivered,
            lost,
            duplicated: dup,
            out_of_order: ooo,
            expected,
            published,
            publish_failed,
            subscribed: c.subscribed,
            late_subscribers: c.late_subscribers,
            pusher_errors: c.pusher_errors,
            cycles: c.cycles,
            connects_per_s,
            peak_connects_per_s: peak_rate(&points, 0.0),
            connect_latency_us: Percentiles::of(&merged.connect),
            latency_us: Percentiles::of(&merged.latency),
            latency_curve: curve(&merged.latency),
            failures_by_cause: by_cause(&c.failures),
            disconnects_by_cause: by_cause(&c.disconnects),
            storm,
            rss_bytes: c.rss_bytes,
            rss_per_conn_bytes: (c.conns_open_at_end > 0 && c.rss_bytes > 0)
                .then(|| rss_growth as f64 / c.conns_open_at_end as f64),
            series: points,
            verdict: Vec::new(),
        };
        report.verdict = report.judge(plan, &merged.counters.failures);
        report
    }

    fn judge(&self, plan: &Plan, failures: &CauseCounts) -> Vec<String> {
        let mut verdict = Vec::new();
        if self.conns_failed > plan.max_failures {
            verdict.push(format!(
                "{} connections failed, more than --max-failures {}",
                self.conns_failed, plan.max_failures
            ));
            for (cause, _) in failures.nonzero() {
                verdict.push(format!("  {}", cause.explain()));
            }
        }
        if matches!(plan.mode, Mode::Pubsub(_)) {
            if self.expected == 0 {
                verdict
                    .push("no event was both published and awaited: nothing was measured".into());
            } else if self.lost as f64 > plan.max_loss * self.expected as f64 {
                verdict.push(format!(
                    "{} of {} deliveries lost ({:.4}%), more than --max-loss {}",
                    self.lost,
                    self.expected,
                    100.0 * self.lost as f64 / self.expected as f64,
                    plan.max_loss
                ));
            }
        }
        verdict
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "ringcast-loadgen {}: {} workers x {} loops on {}",
            self.scenario, self.workers, self.threads, self.backend
        );
        let _ = writeln!(
            s,
            "  connections  target {}  opened {}  failed {}  open at end {}  disconnects {}",
            self.conns_target,
            self.conns_opened,
            self.conns_failed,
            self.conns_open_at_end,
            self.disconnects
        );
        let _ = writeln!(
            s,
            "  connects/s   {:.0} during the ramp, {:.0} peak",
            self.connects_per_s, self.peak_connects_per_s
        );
        let _ = writeln!(
            s,
            "  connect      {}",
            latency_line(&self.connect_latency_us)
        );
        if self.latency_us.count > 0 {
            let what = match self.scenario {
                "echo" => "echo",
                "pubsub" => "delivery",
                _ => "heartbeat",
            };
            let _ = writeln!(s, "  {what:<12} {}", latency_line(&self.latency_us));
        }
        let _ = writeln!(
            s,
            "  messages     sent {}  received {}",
            self.msgs_sent, self.msgs_received
        );
        if self.scenario == "pubsub" {
            let _ = writeln!(
                s,
                "  deliveries   expected {}  delivered {}  lost {}  duplicated {}  out of order {}",
                self.expected, self.delivered, self.lost, self.duplicated, self.out_of_order
            );
            let _ = writeln!(
                s,
                "  publishing   published {}  failed {}  subscribed {}  late {}",
                self.published, self.publish_failed, self.subscribed, self.late_subscribers
            );
        }
        if self.scenario == "churn" {
            let _ = writeln!(s, "  cycles       {}", self.cycles);
        }
        if let Some(storm) = &self.storm {
            let recover = storm
                .recover_ms
                .map_or("never".to_string(), |ms| format!("{ms:.0} ms"));
            let _ = writeln!(
                s,
                "  storm        dropped {}  recovered in {}  peak reconnects/s {:.0}  retries {}",
                storm.dropped,
                recover,
                storm.peak_reconnects_per_s,
                storm.retries_by_cause.values().sum::<u64>()
            );
        }
        if let Some(per) = self.rss_per_conn_bytes {
            let _ = writeln!(
                s,
                "  memory       workers' RSS {:.1} MiB, {:.0} bytes per open connection above the start",
                self.rss_bytes as f64 / 1048576.0,
                per
            );
        }
        for (name, n) in &self.failures_by_cause {
            let cause = Cause::ALL.iter().find(|c| c.name() == *name);
            let _ = writeln!(
                s,
                "  failed {n} x {name}: {}",
                cause.map_or("", |c| c.explain())
            );
        }
        for (name, n) in &self.disconnects_by_cause {
            let _ = writeln!(s, "  disconnected {n} x {name}");
        }
        for line in &self.verdict {
            let _ = writeln!(s, "FAIL: {line}");
        }
        s
    }
}

fn latency_line(p: &Percentiles) -> String {
    format!(
        "p50 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
        human_us(p.p50),
        human_us(p.p99),
        human_us(p.p999),
        human_us(p.max),
        p.count
    )
}

/// Microseconds as a short human figure.
pub fn human_us(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}us"),
        1_000..1_000_000 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(runner: u32, idx: u32, opened: u64, received: u64) -> Tick {
        Tick {
            runner,
            idx,
            open: opened,
            opened,
            received,
            ..Tick::default()
        }
    }

    #[test]
    fn series_sums_loops_and_fills_gaps() {
        let mut s = Series::default();
        for t in [
            tick(0, 1, 10, 0),
            tick(1, 1, 5, 0),
            tick(0, 2, 20, 100),
            tick(0, 3, 30, 200),
            tick(1, 3, 15, 0),
        ] {
            s.handle_tick(t);
        }
        let p = s.points();
        assert_eq!(p.len(), 3);
        assert_eq!(
            p.iter().map(|p| p.open).collect::<Vec<_>>(),
            [15, 25, 45],
            "loop 1 missed tick 2"
        );
        assert_eq!(p[1].msgs_per_s, 500.0);
        assert_eq!(s.complete_idx(), Some(3));
    }

    #[test]
    fn peak_rate_is_the_busiest_tick_after_the_start_given() {
        let points: Vec<Point> = (1..=20)
            .map(|i| Point {
                t_s: f64::from(i) * 0.2,
                connects_per_s: if i == 10 { 5000.0 } else { f64::from(i) },
                ..Point::default()
            })
            .collect();
        assert_eq!(peak_rate(&points, 0.0), 5000.0);
        assert_eq!(peak_rate(&points, 2.5), 20.0);
    }

    #[test]
    fn humans_read_microseconds() {
        assert_eq!(human_us(12), "12us");
        assert_eq!(human_us(1_500), "1.50ms");
        assert_eq!(human_us(2_000_000), "2.00s");
    }
}
