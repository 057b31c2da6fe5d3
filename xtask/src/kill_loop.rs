//! `cargo xtask kill-loop [--rounds N] [--dir DIR]`: the long version of the
//! transform kill loops of the interop suite, built in release.
//!
//! CI runs the short version of each loop (`cargo xtask test`): a few
//! dozen kills. This runs the same tests with `POOLSYNC_KILL_ROUNDS=N`
//! (default 200: `kill -9` at N moments spread over an add of a replica
//! and over an add of `SINGLEHDR`) and `POOLSYNC_KILL_EVERY_SYSCALL=1`
//! (strace kills at every occurrence of every system call that changes a
//! file, for an add of a replica and an add and a removal of
//! `SINGLEHDR`). No kill may need a manual step. `--dir` puts the pools in
//! another directory (`TMPDIR`): on a tmpfs (`/dev/shm`) allocation is slow
//! and a kill lands inside it more often.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::util;

/// Runs the loops.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut rounds: u32 = 200;
    let mut dir = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                let value = args.next().context("--rounds needs a number")?;
                rounds = value
                    .parse()
                    .with_context(|| format!("--rounds {value}: not a number"))?;
            }
            "--dir" => dir = Some(args.next().context("--dir needs a directory")?.clone()),
            other => {
                bail!("kill-loop: unknown argument `{other}`; `cargo xtask help` lists the options")
            }
        }
    }
    let mut cmd = util::cargo();
    cmd.args([
        "test",
        "--release",
        "--package",
        "poolsync",
        "--test",
        "interop",
        "--",
        "--nocapture",
        "--test-threads=1",
        "transform::kill_9_",
        "transform_kill::",
    ])
    .env("POOLSYNC_KILL_ROUNDS", rounds.to_string())
    .env("POOLSYNC_KILL_EVERY_SYSCALL", "1")
    .current_dir(root);
    if let Some(dir) = dir {
        cmd.env("TMPDIR", dir);
    }
    util::run(&mut cmd)
}
