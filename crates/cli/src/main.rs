//! `poolsync`: keep PMDK pool sets and their replicas healthy.
//!
//! `main` is thin: parse the arguments, dispatch to one command module,
//! print, and map the result to pmempool's exit codes (0 or 1).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check;
mod create;
mod info;
mod output;
mod progress;
mod rm;
mod sync;
mod transform;

/// Keep PMDK pool sets and their replicas healthy (a drop-in successor of pmempool).
#[derive(Debug, Parser)]
#[command(name = "poolsync", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a pool or a pool set with all its replicas.
    Create(create::Args),
    /// Show the structure, pool header and obj header of a pool or pool set.
    Info(info::Args),
    /// Check the consistency of a pool or pool set, and repair it.
    Check(check::Args),
    /// Remove pools and the part files of pool sets.
    Rm(rm::Args),
    /// Rebuild the broken replicas of a pool set from a healthy one.
    Sync(sync::Args),
    /// Add or remove replicas of a pool set, validated against the media.
    Transform(transform::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // pmempool exits 1 on option errors and 0 for --help/--version.
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Create(args) => create::run(args),
        Command::Info(args) => info::run(args),
        Command::Check(args) => check::run(args),
        Command::Rm(args) => rm::run(args),
        Command::Sync(args) => sync::run(args),
        Command::Transform(args) => transform::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
