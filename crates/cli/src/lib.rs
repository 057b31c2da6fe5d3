//! The `poolsync` command line: pmempool's commands for libpmemobj pool sets.
//!
//! This library is the binary's code; it is a library so that the man
//! pages (`cargo xtask man`) and the shell completions (`poolsync
//! completions`) are rendered from the very clap definitions the binary
//! parses with. [`command`] is that definition, [`main`] the binary. It is
//! not meant as an API for other programs: use `poolsync-engine` for that.
//!
//! `main` is thin: parse the arguments, read the settings (config file,
//! environment, flags), dispatch to one command module, print, and map the
//! result to pmempool's exit codes (0 or 1).
//!
//! ```
//! // Every subcommand has a man page and shell completions.
//! let cmd = poolsync::command();
//! assert!(cmd.get_subcommands().any(|sub| sub.get_name() == "sync"));
//! ```
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod check;
mod completions;
mod config;
mod create;
mod diagnose;
mod epoch;
mod export;
mod feature;
mod import;
mod info;
mod output;
mod packet;
mod progress;
mod remotes;
mod rm;
mod serve;
pub mod settings;
mod sync;
mod transform;
mod transport;
mod undo;
mod wait;

pub use completions::{generate_completions, Shell};

/// Keep PMDK pool sets and their replicas healthy (a drop-in successor of pmempool).
#[derive(Debug, Parser)]
#[command(name = "poolsync", version, about, propagate_version = true)]
struct Cli {
    /// Read the settings from FILE (default: $POOLSYNC_CONFIG, then
    /// $XDG_CONFIG_HOME/poolsync/config.toml, then /etc/poolsync/config.toml)
    #[arg(long = "config", value_name = "FILE", global = true)]
    config: Option<PathBuf>,
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
    /// Put back the bytes a repair overwrote, from the undo file it saved.
    Undo(undo::Args),
    /// Write an update packet of a pool's changes for offline copies.
    Export(export::Args),
    /// Apply update packets to a copy, or seed a new one.
    Import(import::Args),
    /// Show a site's epochs and destinations, roll one back, or promote.
    Epoch(epoch::Args),
    /// Describe update packets and verify every checksum.
    Packet(packet::Args),
    /// Query, enable or disable a pool feature (CKSUM_2K, SHUTDOWN_STATE, ...).
    Feature(feature::Args),
    /// The remote end of remote replicas, run over ssh by the other
    /// commands (nobody runs it by hand).
    Serve(serve::Args),
    /// Show the settings (jobs, wait_lock) and where each one comes from.
    Config(config::Args),
    /// Print shell completions for bash, zsh or fish.
    Completions(completions::Args),
}

impl Command {
    /// The subcommand's name, for JSON documents.
    fn name(&self) -> &'static str {
        match self {
            Command::Create(_) => "create",
            Command::Info(_) => "info",
            Command::Check(_) => "check",
            Command::Rm(_) => "rm",
            Command::Sync(_) => "sync",
            Command::Transform(_) => "transform",
            Command::Undo(_) => "undo",
            Command::Export(_) => "export",
            Command::Import(_) => "import",
            Command::Epoch(_) => "epoch",
            Command::Packet(_) => "packet",
            Command::Feature(_) => "feature",
            Command::Serve(_) => "serve",
            Command::Config(_) => "config",
            Command::Completions(_) => "completions",
        }
    }

    /// The one pool or pool set the command works on, for error documents.
    fn path(&self) -> Option<PathBuf> {
        match self {
            Command::Create(a) => Some(a.path()),
            Command::Info(a) => Some(a.path().to_path_buf()),
            Command::Check(a) => Some(a.path().to_path_buf()),
            Command::Sync(a) => Some(a.path().to_path_buf()),
            Command::Transform(a) => Some(a.path().to_path_buf()),
            Command::Undo(a) => Some(a.path().to_path_buf()),
            Command::Export(a) => Some(a.path().to_path_buf()),
            Command::Import(a) => Some(a.path().to_path_buf()),
            Command::Epoch(a) => Some(a.path().to_path_buf()),
            Command::Packet(a) => a.path().map(std::path::Path::to_path_buf),
            Command::Feature(a) => Some(a.path().to_path_buf()),
            Command::Rm(_) | Command::Config(_) | Command::Completions(_) | Command::Serve(_) => {
                None
            }
        }
    }

    /// `true` when `--json` was given: errors are then also a JSON document.
    fn json(&self) -> bool {
        match self {
            Command::Create(a) => a.json(),
            Command::Info(a) => a.json(),
            Command::Check(a) => a.json(),
            Command::Rm(a) => a.json(),
            Command::Sync(a) => a.json(),
            Command::Transform(a) => a.json(),
            Command::Undo(a) => a.json(),
            Command::Export(a) => a.json(),
            Command::Import(a) => a.json(),
            Command::Epoch(a) => a.json(),
            Command::Packet(a) => a.json(),
            Command::Feature(a) => a.json(),
            Command::Config(a) => a.json(),
            Command::Completions(_) | Command::Serve(_) => false,
        }
    }
}

/// The whole command line definition: the one clap parses with, and the
/// one the man pages and completions are rendered from.
pub fn command() -> clap::Command {
    Cli::command()
}

/// The `poolsync` binary: parses `std::env::args`, runs the command and
/// returns pmempool's exit code (0 or 1).
pub fn main() -> ExitCode {
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
        Command::Completions(args) => completions::run(args),
        command => {
            let env = settings::Environment::process();
            let (name, json, path) = (command.name(), command.json(), command.path());
            let result = settings::Settings::load(cli.config.as_deref(), &env)
                .and_then(|settings| dispatch(command, &settings));
            // A command that failed before it printed its own --json
            // document still answers with one.
            if let (Err(e), true, false) = (&result, json, output::json_emitted()) {
                output::emit_error_document(name, path.as_deref(), e);
            }
            result
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", output::error_text(&e));
            ExitCode::from(1)
        }
    }
}

/// Runs one command with the settings read.
fn dispatch(command: Command, settings: &settings::Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Create(args) => create::run(args, settings),
        Command::Info(args) => info::run(args, settings),
        Command::Check(args) => check::run(args, settings),
        Command::Rm(args) => rm::run(args, settings),
        Command::Sync(args) => sync::run(args, settings),
        Command::Transform(args) => transform::run(args, settings),
        Command::Undo(args) => undo::run(args),
        Command::Export(args) => export::run(args, settings),
        Command::Import(args) => import::run(args, settings),
        Command::Epoch(args) => epoch::run(args, settings),
        Command::Packet(args) => packet::run(args, settings),
        Command::Feature(args) => feature::run(args),
        Command::Serve(args) => serve::run(args, settings),
        Command::Config(args) => config::run(args, settings),
        Command::Completions(args) => completions::run(args),
    }
}
