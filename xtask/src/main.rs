//! Maintainer tasks for poolsync: `cargo xtask help` lists them.
//!
//! xtask is the one task runner of the project (the pattern of
//! rust-analyzer's `xtask/`): `.ci/run` calls `cargo xtask ci`, the README
//! names `cargo xtask demo` and `cargo xtask test`, and every other chore
//! (fuzzing, benchmarks, fixtures) has a command here so that nobody has to
//! remember a long cargo invocation.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::{bail, Context, Result};

mod bench;
mod bench_baseline;
mod bench_packets;
mod bench_remote;
mod bench_sync;
mod bench_transform;
mod bench_verify;
mod ci;
mod demo;
mod fixtures;
mod fuzz;
mod kill_loop;
mod man;
mod package;
mod pools;
mod soak;
mod soak_writers;
mod sshd;
mod test;
mod util;

const HELP: &str = "\
cargo xtask <command> [options]

Commands:
  test                       Run every test of the workspace (unit, integration,
                             tidy, bench smoke and doc tests). Installs PMDK's
                             tools first when they are missing and we are root.
  demo                       Build poolsync (release) and walk through a
                             three-replica pool set under target/demo/.
  ci                         Everything .ci/run checks: fmt, clippy, test, doc,
                             package (cargo package --no-verify of every
                             publishable crate), fuzz smoke. Test failures
                             and skips are fatal.
  package                    cargo package --no-verify of every publishable
                             crate: manifests crates.io accepts (seconds).
  publish-check              cargo publish --workspace --dry-run: package every
                             publishable crate and build it from its package
                             (minutes; run it before a release).
  fuzz <target> [--seconds N]
                             Fuzz one target with cargo-fuzz (until stopped,
                             or for N seconds).
  fuzz smoke [--seconds N]   Build every fuzz target and run each one on its
                             seeds for N seconds (default 10).
  fuzz long [--runs N] [--only T,..]
                             Build every fuzz target in release, then run them
                             one at a time for N executions each (default
                             10000000) from their seeds and fuzz/corpus/, and
                             print executions, time, corpus and findings
                             (docs/reliability.md).
  fuzz list                  List the fuzz targets.
  fixtures                   Regenerate fixtures/pmdk/ with the real pmempool.
  man [--out DIR]            Write the man pages of poolsync and of each
                             subcommand (default DIR: target/man).
  completions [--out DIR]    Write poolsync's bash, zsh and fish completions
                             (default DIR: target/completions).
  bench [NAME]               Run the criterion benchmarks: all, one file of
                             benches/benches/ (hot, copy_flush), or those whose
                             id contains NAME.
  bench sync [--size SIZE] [--reps N] [--scenario NAME] [--dir DIR]
             [--baseline BIN]
                             Time `poolsync sync` against `pmempool sync` on
                             damaged two-replica pool sets (scenarios rebuild,
                             header, scattered, parallel; SIZE per replica,
                             default 1G; 3 repetitions); see
                             docs/performance.md.
  bench verify [--size SIZE] [--reps N] [--dir DIR] [--baseline BIN]
                             Throughput and peak RSS of `poolsync check --data`
                             and `sync --verify` on a used three-replica set
                             with 0.1% of one replica's live bytes damaged,
                             beside `cmp`; warm and cold cache; see
                             docs/performance.md.
  bench transform [--size SIZE] [--reps N] [--dir DIR] [--baseline BIN]
                             Time and peak RSS of `poolsync transform` against
                             `pmempool transform` adding a replica (two parts)
                             to a used one-replica pool of SIZE (default 1G);
                             see docs/performance.md.
                             --baseline BIN (sync, verify, transform and
                             packets): also run BIN, an older poolsync
                             binary, as one more variant, and add the ratios
                             new/baseline to the
                             summary.
  bench packets [--size SIZE] [--reps N] [--dir DIR] [--baseline BIN]
                             Update packets on a pool of SIZE (default 1G) of
                             libpmemobj data, 1% of the blocks changed
                             scattered, then 10% clustered: packet bytes
                             against the change and `rsync --only-write-batch`,
                             export and import time against `cat` of the
                             source (warm, and cold where eviction works),
                             peak RSS; see docs/performance.md.
  bench remote [--size SIZE] [--reps N] [--changed PERCENT] [--dir DIR]
                             A remote replica over ssh on loopback (a private
                             sshd): seeding against `cat | ssh`, updates of
                             PERCENT (default 1) of the blocks against
                             `rsync --inplace --no-whole-file`: bytes on the
                             wire, time, peak RSS on both hosts; see
                             docs/performance.md.
  soak [--runs N] [--only W,..] [--dir DIR] [--seed S] [--smoke]
                             The long kill loops (docs/reliability.md): for
                             every writer (create, sync, sync-verify, transform,
                             transform-singlehdr, rm, export, import, feature,
                             remote-sync), N rounds (default 200) on fresh
                             pools in DIR (default: a temporary directory; a
                             tmpfs widens the windows): SIGKILL the release
                             poolsync at a pseudo-random moment of its run,
                             re-run it (killed again in some rounds), run it
                             to completion, then check the end state. Prints
                             a table per writer; a round that needs a manual
                             step fails the soak, naming the writer, round,
                             seed and stderr. --smoke is CI's short run
                             (`cargo xtask test`): 3 rounds, seed 1, the debug
                             build, writers with an open defect left out.
  kill-loop [--rounds N] [--dir DIR]
                             The transform loops: `soak --only transform,
                             transform-singlehdr --runs N`, then strace kills
                             at every system call of an add of a replica and
                             of adding and removing SINGLEHDR (the interop
                             test transform_kill, in release).
  help                       Print this text.

Environment:
  CI=true                    `test` fails instead of skipping PMDK interop tests.
  CARGO_TARGET_DIR           Honoured by every command.
";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<()> {
    let mut args = args.into_iter();
    let Some(command) = args.next() else {
        print!("{HELP}");
        return Ok(());
    };
    let rest: Vec<String> = args.collect();
    let root = util::repo_root()?;
    match command.as_str() {
        "help" | "-h" | "--help" => {
            no_more_args(&command, &rest)?;
            print!("{HELP}");
            Ok(())
        }
        "test" => {
            no_more_args(&command, &rest)?;
            test::run(&root, util::ci_requested())
        }
        "demo" => {
            no_more_args(&command, &rest)?;
            demo::run(&root)
        }
        "ci" => {
            no_more_args(&command, &rest)?;
            ci::run(&root)
        }
        "fuzz" => fuzz::command(&root, &rest),
        "package" => {
            no_more_args(&command, &rest)?;
            package::package(&root)
        }
        "publish-check" => {
            no_more_args(&command, &rest)?;
            package::publish_check(&root)
        }
        "fixtures" => {
            no_more_args(&command, &rest)?;
            fixtures::run(&root).context("regenerating fixtures/pmdk/")
        }
        "bench" => bench::command(&root, &rest),
        "man" => man::command(&root, &rest),
        "completions" => man::completions_command(&root, &rest),
        "soak" => soak::command(&root, &rest),
        "kill-loop" => kill_loop::run(&root, &rest),
        other => bail!("unknown command `{other}`; `cargo xtask help` lists the commands"),
    }
}

fn no_more_args(command: &str, rest: &[String]) -> Result<()> {
    if rest.is_empty() {
        Ok(())
    } else {
        bail!("`{command}` takes no arguments, got {rest:?}; `cargo xtask help` lists the commands")
    }
}
