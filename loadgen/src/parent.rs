//! The parent process: decides how many workers the open-files limit requires, starts them
//! (this same binary, same arguments), shows live progress, merges their results and reports.

use std::io::{BufRead as _, BufReader, IsTerminal as _, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringcast::config::Backend;
use ringcast::driver::sys::{monotonic_ns as now_ns, raise_nofile_limit};

use crate::limits::{conns_per_worker, workers_needed};
use crate::plan::Plan;
use crate::proto::{Merged, WorkerMsg};
use crate::report::{Report, Series};
use crate::worker::{T0_ENV, WORKER_ENV};

/// Head start between starting the workers and `t0`: time for every worker to exec, set up its
/// loops and be ready before the first connection is due.
const STARTUP_NS: u64 = 500_000_000;
/// Extra time after the planned end before the parent kills workers that did not finish: a
/// fixed part, plus a part per connection of a worker, because closing tens of thousands of
/// connections on a loaded box takes seconds.
const GRACE: Duration = Duration::from_secs(15);
/// The per-connection part of the grace: 1 ms, so 19 s more for 19,000 connections.
const GRACE_PER_CONN: Duration = Duration::from_millis(1);
/// How often the live progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Runs the whole load test; returns the process exit status.
pub fn run(plan: &Plan) -> anyhow::Result<i32> {
    let nofile =
        raise_nofile_limit().map_err(|e| anyhow::anyhow!("cannot read RLIMIT_NOFILE: {e}"))?;
    let workers = workers_needed(plan.conns, nofile, plan.procs);
    if plan.procs.is_some_and(|p| p < workers) {
        eprintln!(
            "ringcast-loadgen: {} connections need {workers} workers under an open-files limit of \
             {nofile} ({} each); using {workers}",
            plan.conns,
            conns_per_worker(nofile)
        );
    }
    let threads = plan
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let exe = std::env::current_exe()?;
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let t0 = now_ns() + STARTUP_NS;
    let (tx, rx) = mpsc::channel::<(u32, Option<String>)>();
    let mut children: Vec<Child> = Vec::new();
    for i in 0..workers {
        let mut child = Command::new(&exe)
            .args(&args)
            .env(WORKER_ENV, format!("{i}/{workers}"))
            .env(T0_ENV, t0.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start worker {i}: {e}"))?;
        let Some(out) = child.stdout.take() else {
            anyhow::bail!("worker {i} has no stdout")
        };
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send((i, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((i, None));
        });
        children.push(child);
    }
    drop(tx);
    let planned =
        Duration::from_nanos(STARTUP_NS + plan.duration_ns + plan.drain_ns + 1_000_000_000);
    let per_worker = u32::try_from(plan.conns.div_ceil(u64::from(workers))).unwrap_or(u32::MAX);
    let deadline = Instant::now() + planned + GRACE + GRACE_PER_CONN * per_worker;
    let tty = std::io::stderr().is_terminal();
    let mut series = Series::default();
    let mut merged = Merged::default();
    let mut finished = 0;
    let mut done = 0;
    let mut reported = std::collections::HashSet::new();
    let mut fatal = Vec::new();
    let mut last_progress = Instant::now();
    while finished < workers {
        let now = Instant::now();
        if now >= deadline {
            fatal.push(format!(
                "{} workers did not finish in time; killed",
                workers - done
            ));
            break;
        }
        match rx.recv_timeout((deadline - now).min(PROGRESS_EVERY)) {
            Ok((_, None)) => finished += 1,
            Ok((i, Some(line))) => match serde_json::from_str::<WorkerMsg>(&line) {
                Ok(WorkerMsg::Tick(t)) => series.handle_tick(t),
                Ok(WorkerMsg::Done(o)) => {
                    done += 1;
                    reported.insert(i);
                    if let Err(e) = merged.merge(&o) {
                        fatal.push(format!("worker {i}: unreadable result: {e}"));
                    }
                }
                Ok(WorkerMsg::Fatal(e)) => fatal.push(format!("worker {i}: {e}")),
                Err(e) => fatal.push(format!("worker {i}: unreadable line ({e}): {line}")),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if tty && last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            if let Some(line) = series.progress_line(plan.conns) {
                eprint!("\r{line}\x1b[K");
                let _ = std::io::stderr().flush();
            }
        }
    }
    if tty {
        eprintln!();
    }
    for (i, mut child) in children.into_iter().enumerate() {
        if !matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
        }
        let status = child.wait();
        if !reported.contains(&(i as u32)) {
            let how = match status {
                Ok(st) => match (st.code(), st.signal()) {
                    (Some(code), _) => format!("exited with status {code}"),
                    (None, Some(sig)) => format!("was killed by signal {sig}"),
                    _ => format!("ended: {st}"),
                },
                Err(e) => format!("could not be waited for: {e}"),
            };
            fatal.push(format!("worker {i} {how} without reporting its results"));
        }
    }
    let backend = match plan.backend {
        Backend::Epoll => "epoll",
        Backend::Uring => "io_uring",
        Backend::Auto => {
            if ringcast::driver::uring::probe().is_ok() {
                "io_uring"
            } else {
                "epoll"
            }
        }
    };
    let report = Report::new(plan, workers, threads, backend, &merged, &series);
    print!("{}", report.summary());
    if let Some(path) = &plan.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &plan.html {
        std::fs::write(path, crate::html::render(&report))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    for e in &fatal {
        eprintln!("ringcast-loadgen: {e}");
    }
    Ok(if !fatal.is_empty() {
        1
    } else if report.verdict.is_empty() {
        0
    } else {
        2
    })
}
