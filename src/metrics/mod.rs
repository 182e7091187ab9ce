//! Counters, gauges and histograms, and their Prometheus text exposition at `/metrics`.
//!
//! # How shards count without sharing
//!
//! Each shard owns a [`ShardStats`]: plain `u64` fields and fixed-bucket [`Histogram`]s that
//! the shard thread bumps with ordinary adds. Nothing on the hot path is atomic or locked, and
//! no cache line is shared between shards.
//!
//! Every tick (100 ms) the shard copies its stats into its [`ShardSlot`] in the shared
//! [`Registry`]. The slot is a `Mutex<ShardStats>` taken with `try_lock`: the shard is its only
//! writer and touches it ten times a second; a reader (a scrape, a `/health` probe, the dashboard
//! feed) holds it only to copy a few KiB out. So the lock is nearly always free, and when a
//! reader does hold it the shard skips that publish rather than wait, and the next one carries
//! the counts (counters are cumulative, so nothing is lost, only up to one interval late).
//! A seqlock would let readers never block the writer either, but copying a multi-KiB struct
//! through it needs per-word atomics or unsafe volatile reads; the mutex is safe code and its
//! cost, one uncontended lock per 100 ms, is nothing.
//!
//! Readers call [`Registry::snapshot`], which copies every slot into a [`MetricsSnapshot`];
//! [`MetricsSnapshot::totals`] sums the shards. [`encode`] writes the exposition; `/health` and
//! the dashboard feed read the same snapshot (`crate::health`, `crate::dashboard`).
//!
//! Label values are closed enums ([`RejectReason`], [`DisconnectReason`], [`CloseCodeLabel`]) so
//! that the number of series is fixed by the code, never by clients.

mod exposition;
mod histogram;
mod labels;
mod registry;
mod stats;

pub(crate) use exposition::{CONTENT_TYPE, encode};
pub(crate) use histogram::Histogram;
pub(crate) use labels::{DisconnectReason, RejectReason, SlowConsumerCause};
pub(crate) use registry::{MetricsSnapshot, ProcessInfo, Registry};
pub(crate) use stats::ShardStats;
