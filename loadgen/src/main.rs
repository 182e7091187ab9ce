//! `ringcast-loadgen`: opens up to a million WebSocket connections from one box against ringcast
//! and measures honestly (see `docs/benchmarks.md` for how the figures are taken).
//!
//! The parent process ([`parent`]) starts as many workers as the open-files limit requires;
//! each worker ([`worker`]) runs one event loop ([`runner`]) per thread on the server's own
//! driver and WebSocket codec, and reports back on a pipe ([`proto`]).

#![deny(unsafe_code)]

mod cause;
mod cli;
mod delivery;
mod html;
mod limits;
mod link;
mod net;
mod parent;
mod plan;
mod proto;
mod publish;
mod record;
mod report;
mod runner;
mod seq;
mod sign;
mod sweep;
mod target;
mod wire;
mod worker;

use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    let plan = match plan::Plan::from_cli(&cli.scenario) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("ringcast-loadgen: {e}");
            std::process::exit(64);
        }
    };
    if let Some((index, workers, t0)) = worker::identity() {
        return worker::run(plan, index, workers, t0);
    }
    let code = parent::run(&plan)?;
    std::process::exit(code);
}
