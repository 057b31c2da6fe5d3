//! `poolsync serve`: the remote end of remote replicas. The client runs it
//! over ssh (`ssh host poolsync serve`) and speaks the protocol of
//! docs/wire.md on its standard input and output; nobody runs it by hand.
//!
//! It resolves every pool set file relative to its root (`--root`, the
//! `serve.root` setting, by default the user's home directory) and
//! touches nothing outside it. Its standard output carries only the
//! protocol; diagnostics go to standard error, which the client quotes
//! when something fails.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use poolsync_engine::remote::serve::{serve, ServeOptions};
use poolsync_pmem::AnyStorage;

use crate::settings::Settings;

/// Arguments of `poolsync serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory remote pool set files are named relative to; nothing
    /// outside it is touched (default: the serve.root setting, else your
    /// home directory)
    #[arg(long = "root", value_name = "DIR", value_parser = root_flag)]
    root: Option<String>,
}

fn root_flag(text: &str) -> Result<String, String> {
    crate::settings::check_flag("serve.root", text)
}

/// Runs the command; `Ok` carries the exit code.
pub fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let root = settings.serve_root(args.root.as_deref(), home.as_deref())?;
    let storage = AnyStorage::from_env().context("serve")?;
    let options = ServeOptions {
        root,
        server: format!("poolsync {}", env!("CARGO_PKG_VERSION")),
    };
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    serve(&storage, &options, &mut stdin.lock(), &mut stdout.lock()).context("serve")?;
    Ok(ExitCode::SUCCESS)
}
