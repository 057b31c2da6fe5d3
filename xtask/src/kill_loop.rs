//! `cargo xtask kill-loop [--rounds N] [--dir DIR]`: the long transform
//! kill loops, kept under their old name, and the strace loops of `create`
//! and `import`.
//!
//! The timed `kill -9` loops are the soak's (`soak --only
//! transform,transform-singlehdr --runs N --dir DIR`: an add of a replica,
//! and an add and a removal of `SINGLEHDR`). Then the interop suite's
//! strace loop runs in release with `POOLSYNC_KILL_EVERY_SYSCALL=1`: strace
//! kills at every occurrence of every system call that changes a file, for
//! an add of a replica and an add and a removal of `SINGLEHDR`, and for a
//! `create` and a seeding `import` of a packet of several files (CI hits
//! only the first and the last occurrence of each). No kill may need a
//! manual step.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::{soak, util};

/// Runs the loops.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut rounds: u32 = soak::DEFAULT_RUNS;
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
    soak::run(
        root,
        &soak::Options {
            runs: rounds,
            only: Some(vec![
                "transform".to_string(),
                "transform-singlehdr".to_string(),
            ]),
            dir: dir.as_ref().map(PathBuf::from),
            seed: None,
            smoke: false,
        },
    )?;
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
        "transform_kill::",
        "create_import_kill::",
    ])
    .env("POOLSYNC_KILL_EVERY_SYSCALL", "1")
    .current_dir(root);
    if let Some(dir) = dir {
        cmd.env("TMPDIR", dir);
    }
    util::run(&mut cmd)
}
