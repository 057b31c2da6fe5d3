//! `cargo xtask demo`: a guided tour of poolsync on a three-replica pool set.
//!
//! Everything shown is real output of the release binary; the demo checks
//! the exit codes it expects and stops with an error when poolsync does not
//! behave, rather than printing a story the binary did not tell. The repair
//! step runs once the binary has a `sync` command.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util;

/// The parts of each replica: (file name, size in MiB). Replica 0 (the
/// master) has two parts, replica 1 one, replica 2 three, so the replicas
/// split the same pool differently, as real deployments do.
const REPLICAS: &[&[(&str, u64)]] = &[
    &[("r0-p0.part", 16), ("r0-p1.part", 16)],
    &[("r1-p0.part", 32)],
    &[("r2-p0.part", 12), ("r2-p1.part", 12), ("r2-p2.part", 12)],
];

/// The part the demo deletes to show what `check` reports.
const DAMAGED_PART: &str = "r2-p1.part";

/// `cargo xtask demo`.
pub fn run(root: &Path) -> Result<()> {
    util::step("building poolsync (release)");
    util::run(
        util::cargo()
            .args(["build", "--release", "--package", "poolsync"])
            .current_dir(root),
    )?;
    let poolsync = util::target_dir(root)?.join("release").join("poolsync");
    if !poolsync.is_file() {
        bail!("the release build did not produce {}", poolsync.display());
    }

    // Always under the repository's target/ (ignored by git), whatever
    // CARGO_TARGET_DIR says, so the README can name the place.
    let dir = root.join("target").join("demo");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing the previous demo in {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let set_text = set_file(&dir);
    std::fs::write(dir.join("pool.set"), &set_text).context("writing the demo's pool.set")?;

    let demo = Demo {
        poolsync,
        dir: dir.clone(),
    };
    say(&format!(
        "A pool set with three replicas of one libpmemobj pool, in {}.\n\
         Pool set files need absolute paths; the commands below run in that directory.",
        dir.display()
    ));
    println!("$ cat pool.set");
    print!("{set_text}");

    say("Create the pool: every part of every replica, with linked headers.");
    demo.expect(&["create", "obj", "pool.set"], 0)?;

    say("Show the structure and the headers.");
    demo.expect(&["info", "pool.set"], 0)?;

    say("Check every replica: shutdown state, headers, UUID links.");
    demo.expect(&["check", "-v", "pool.set"], 0)?;

    say("Now lose a part of replica 2, as a failed disk or a stray `rm` would.");
    println!("$ rm {DAMAGED_PART}");
    std::fs::remove_file(dir.join(DAMAGED_PART))
        .with_context(|| format!("removing {DAMAGED_PART}"))?;

    say("`check` notices, and exits 1 as pmempool does.");
    demo.expect(&["check", "-v", "pool.set"], 1)?;

    if demo.has_command("sync") {
        say("Rebuild the lost part from a healthy replica.");
        demo.expect(&["sync", "-v", "pool.set"], 0)?;
        say("Every replica is whole again.");
        demo.expect(&["check", "-v", "pool.set"], 0)?;
    } else {
        say(
            "Replica 2 is broken while replicas 0 and 1 are intact. Rebuilding it from a\n\
             healthy replica is the job of `poolsync sync`, which comes in a later release.",
        );
    }
    say(
        "The next `cargo xtask demo` starts afresh; `poolsync rm pool.set` removes the\n\
         parts by hand.",
    );
    Ok(())
}

struct Demo {
    poolsync: PathBuf,
    dir: PathBuf,
}

impl Demo {
    /// `true` when this build of poolsync has the subcommand `name`.
    fn has_command(&self, name: &str) -> bool {
        Command::new(&self.poolsync)
            .args([name, "--help"])
            .output()
            .is_ok_and(|out| out.status.success())
    }

    /// Runs `poolsync <args>` in the demo directory, showing the command line
    /// and letting its output through, and fails unless it exits with `code`.
    fn expect(&self, args: &[&str], code: i32) -> Result<()> {
        println!("$ poolsync {}", args.join(" "));
        util::flush_stdout();
        let status = Command::new(&self.poolsync)
            .args(args)
            .current_dir(&self.dir)
            .status()
            .with_context(|| format!("starting {}", self.poolsync.display()))?;
        if status.code() != Some(code) {
            bail!(
                "`poolsync {}` exited with {status}, but the demo expects exit code {code}",
                args.join(" ")
            );
        }
        Ok(())
    }
}

fn set_file(dir: &Path) -> String {
    let mut text = String::from("PMEMPOOLSET\n");
    for (i, parts) in REPLICAS.iter().enumerate() {
        if i > 0 {
            text.push_str("REPLICA\n");
        }
        for (name, mib) in *parts {
            text.push_str(&format!("{mib}M {}\n", dir.join(name).display()));
        }
    }
    text
}

fn say(text: &str) {
    println!();
    for line in text.lines() {
        println!("# {line}");
    }
    util::flush_stdout();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_file_lists_three_replicas_with_absolute_paths() {
        let text = set_file(Path::new("/demo"));
        let expected = "PMEMPOOLSET\n\
                        16M /demo/r0-p0.part\n16M /demo/r0-p1.part\n\
                        REPLICA\n32M /demo/r1-p0.part\n\
                        REPLICA\n12M /demo/r2-p0.part\n12M /demo/r2-p1.part\n12M /demo/r2-p2.part\n";
        assert_eq!(text, expected);
        assert!(REPLICAS
            .iter()
            .flat_map(|r| r.iter())
            .any(|(name, _)| *name == DAMAGED_PART));
    }
}
