//! `ringcast-loadgen`: opens up to a million WebSocket connections from one box against ringcast
//! and measures honestly (see `docs/benchmarks.md` for how the figures are taken).

mod cause;
mod cli;
mod limits;
mod net;
mod record;
mod seq;
mod sign;
mod target;

use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let _cli = cli::Cli::parse();
    Ok(())
}
