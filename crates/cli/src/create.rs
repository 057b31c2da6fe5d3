//! `poolsync create`.

use std::process::ExitCode;

/// Arguments of `poolsync create` (pmempool syntax).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command; `Ok` carries the exit code.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let _ = args;
    anyhow::bail!("not yet written")
}
