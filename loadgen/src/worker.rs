//! A worker process: the same binary started by the parent with `RINGCAST_LOADGEN_WORKER=i/n`.
//! It runs one event loop per thread on the server's driver, forwards their live ticks to the
//! parent as JSON lines on stdout, merges their results and sends them last.

use std::sync::mpsc;
use std::sync::{Arc, Barrier};

use ringcast::config::Backend;
use ringcast::driver::Driver;
use ringcast::driver::epoll::EpollDriver;
use ringcast::driver::sys::{self, raise_nofile_limit};
use ringcast::driver::uring::{self, UringConfig, UringDriver};

use crate::net::resident_bytes;
use crate::plan::Plan;
use crate::proto::{Merged, WorkerMsg};
use crate::runner::{Runner, State};

/// Environment variable naming a worker: `INDEX/COUNT`.
pub const WORKER_ENV: &str = "RINGCAST_LOADGEN_WORKER";
/// Environment variable carrying the run's start on CLOCK_MONOTONIC, nanoseconds.
pub const T0_ENV: &str = "RINGCAST_LOADGEN_T0";

/// Bytes of the epoll driver's scratch read buffer per loop: the largest message read in one
/// piece; the messages of a load test are far smaller.
const EPOLL_SCRATCH: usize = 64 * 1024;
/// io_uring provided buffers per loop and their size: 4 MiB per loop, shared by all its
/// connections (messages of a load test are small; a full ring only pauses a receive).
const URING_BUFFERS: u16 = 1024;
const URING_BUFFER_SIZE: u32 = 4096;

/// Which worker this process is, read from the environment; `None` in the parent.
pub fn identity() -> Option<(u32, u32, u64)> {
    let spec = std::env::var(WORKER_ENV).ok()?;
    let (i, n) = spec.split_once('/')?;
    let t0 = std::env::var(T0_ENV).ok()?.parse().ok()?;
    Some((i.parse().ok()?, n.parse().ok()?, t0))
}

/// Writes one message to the parent.
fn send_to_parent(out: &mut impl std::io::Write, msg: &WorkerMsg) -> std::io::Result<()> {
    let line = serde_json::to_string(msg).map_err(std::io::Error::other)?;
    writeln!(out, "{line}")?;
    out.flush()
}

/// Runs worker `index` of `workers`.
pub fn run(plan: Plan, index: u32, workers: u32, t0: u64) -> anyhow::Result<()> {
    // The worker dies with its parent instead of holding connections open on its own; the call
    // cannot fail with a valid signal number.
    let _ = sys::die_with_parent();
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = raise_nofile_limit() {
        send_to_parent(
            &mut stdout,
            &WorkerMsg::Fatal(format!("cannot read the open-files limit: {e}")),
        )?;
        return Ok(());
    }
    let threads = plan
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let threads = threads.max(1);
    let runners = u64::from(workers) * u64::from(threads);
    let use_uring = match plan.backend {
        Backend::Epoll => false,
        Backend::Uring => true,
        Backend::Auto => uring::probe().is_ok(),
    };
    let plan = Arc::new(plan);
    let (tx, rx) = mpsc::channel();
    // Every loop sets up its driver, then the base RSS is read, then the loops allocate their
    // slabs and run: the per-connection figure includes slab entries but not the drivers'
    // fixed buffers.
    let ready = Arc::new(Barrier::new(threads as usize + 1));
    let mut handles = Vec::new();
    for thread in 0..threads {
        let runner = u64::from(thread) * u64::from(workers) + u64::from(index);
        let (plan, tx, ready) = (Arc::clone(&plan), tx.clone(), Arc::clone(&ready));
        handles.push(std::thread::spawn(move || {
            let seed = t0 ^ (runner << 32) ^ u64::from(std::process::id());
            let setup = || State::new(plan, t0, runner, runners, seed);
            let result = if use_uring {
                let cfg = UringConfig {
                    recv_buffers: URING_BUFFERS,
                    recv_buffer_size: URING_BUFFER_SIZE,
                };
                let driver =
                    UringDriver::new(cfg).map_err(|e| format!("io_uring setup failed: {e}"));
                drive(driver, &ready, setup, &tx)
            } else {
                let driver =
                    EpollDriver::new(EPOLL_SCRATCH).map_err(|e| format!("epoll setup failed: {e}"));
                drive(driver, &ready, setup, &tx)
            };
            if let Err(e) = result {
                let _ = tx.send(WorkerMsg::Fatal(e));
            }
        }));
    }
    ready.wait();
    let rss_base = resident_bytes().unwrap_or(0);
    ready.wait();
    drop(tx);
    let mut merged = Merged::default();
    let mut rss = 0;
    // Every loop ends with exactly one Done or Fatal. The result goes to the parent as soon as
    // all have, without waiting for the threads to tear their drivers down: closing thousands of
    // sockets is the kernel's job at exit, and a slow teardown must not cost the figures.
    let mut ended = 0;
    while ended < threads {
        let Ok(msg) = rx.recv() else { break };
        match msg {
            WorkerMsg::Done(mut outcome) => {
                ended += 1;
                rss = rss.max(outcome.counters.rss_bytes);
                outcome.counters.rss_bytes = 0;
                merged.merge(&outcome).map_err(anyhow::Error::msg)?;
            }
            WorkerMsg::Fatal(e) => {
                ended += 1;
                send_to_parent(&mut stdout, &WorkerMsg::Fatal(e))?;
            }
            tick => send_to_parent(&mut stdout, &tick)?,
        }
    }
    merged.counters.rss_bytes = rss;
    merged.counters.rss_base_bytes = rss_base;
    send_to_parent(&mut stdout, &WorkerMsg::Done(Box::new(merged.to_outcome())))?;
    drop(handles);
    std::process::exit(0);
}

fn drive<D: Driver>(
    driver: Result<D, String>,
    ready: &Barrier,
    setup: impl FnOnce() -> State,
    tx: &mpsc::Sender<WorkerMsg>,
) -> Result<(), String> {
    ready.wait();
    ready.wait();
    let mut runner = Runner::new(driver?, setup());
    runner
        .run(tx)
        .map_err(|e| format!("event loop failed: {e}"))?;
    let outcome = runner.state.outcome();
    let _ = tx.send(WorkerMsg::Done(Box::new(outcome)));
    Ok(())
}
