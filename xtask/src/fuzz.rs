//! `cargo xtask fuzz`: libFuzzer through cargo-fuzz, on the stable toolchain.
//!
//! cargo-fuzz builds with `-Zsanitizer=address` and other `-Z` flags that
//! stable rustc only accepts with `RUSTC_BOOTSTRAP=1`; the project has no
//! nightly toolchain, so every cargo-fuzz call here sets it. Only the fuzz
//! crate (its own workspace under `fuzz/`, with its own target directory)
//! is built that way; the product is never built with unstable flags.
//!
//! Seeds live in `fuzz/seeds/<target>/` (committed, small). A long run
//! keeps what it learns in `fuzz/corpus/<target>/` (ignored by git); the
//! smoke run starts from the seeds alone each time, with a fixed libFuzzer
//! seed, so that CI does the same work on every run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util;

/// The cargo-fuzz release `.ci/run` installs and this module was tried with.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds each target runs in `fuzz smoke` unless `--seconds` says otherwise.
pub const SMOKE_SECONDS: u64 = 30;

/// The longest a smoke run may take per target (CI budget).
const SMOKE_SECONDS_MAX: u64 = 60;

/// `cargo xtask fuzz ...`.
pub fn command(root: &Path, args: &[String]) -> Result<()> {
    let Some((first, rest)) = args.split_first() else {
        bail!(
            "usage: cargo xtask fuzz <target> [--seconds N] | fuzz smoke [--seconds N] | fuzz list"
        );
    };
    match first.as_str() {
        "list" => {
            if !rest.is_empty() {
                bail!("`fuzz list` takes no arguments, got {rest:?}");
            }
            for target in targets(root)? {
                println!("{target}");
            }
            Ok(())
        }
        "smoke" => {
            let seconds = parse_seconds(rest)?.unwrap_or(SMOKE_SECONDS);
            if seconds > SMOKE_SECONDS_MAX {
                bail!("a smoke run is at most {SMOKE_SECONDS_MAX} seconds per target; use `fuzz <target>` for more");
            }
            smoke(root, seconds)
        }
        target => run_target(root, target, parse_seconds(rest)?),
    }
}

fn parse_seconds(args: &[String]) -> Result<Option<u64>> {
    match args {
        [] => Ok(None),
        [flag, n] if flag == "--seconds" => {
            let n: u64 = n
                .parse()
                .with_context(|| format!("--seconds wants a whole number, got `{n}`"))?;
            if n == 0 {
                bail!("--seconds must be at least 1");
            }
            Ok(Some(n))
        }
        _ => bail!("expected nothing or `--seconds N`, got {args:?}"),
    }
}

/// `cargo xtask fuzz smoke`: build every target, then run each for
/// `seconds` on its seeds. A crash or a timeout fails the run.
pub fn smoke(root: &Path, seconds: u64) -> Result<()> {
    ensure_cargo_fuzz()?;
    let target_dir = fuzz_target_dir(root)?;
    let targets = targets(root)?;
    if targets.is_empty() {
        bail!("fuzz/Cargo.toml declares no fuzz targets");
    }
    util::step("building every fuzz target");
    util::run(
        cargo_fuzz(root)
            .arg("build")
            .arg("--target-dir")
            .arg(&target_dir),
    )?;
    for target in &targets {
        util::step(&format!("fuzz smoke: {target} for {seconds} s"));
        let corpus = target_dir.join("smoke-corpus").join(target);
        if corpus.exists() {
            std::fs::remove_dir_all(&corpus)
                .with_context(|| format!("clearing {}", corpus.display()))?;
        }
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        let seeds = seeds_dir(root, target);
        if !seeds.is_dir() {
            eprintln!("xtask: warning: {target} has no seeds in fuzz/seeds/{target}/; starting from nothing");
        }
        let mut cmd = cargo_fuzz(root);
        cmd.args(["run", target.as_str(), "--target-dir"])
            .arg(&target_dir)
            .arg(&corpus);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        cmd.arg("--")
            .args(libfuzzer_args(Some(seconds)))
            // A fixed seed makes the smoke repeatable; verbosity 0 keeps
            // libFuzzer from printing a line per new input into the CI log.
            .args(["-seed=1", "-verbosity=0", "-print_final_stats=1"]);
        util::run(&mut cmd).with_context(|| {
            format!("fuzz target {target} failed; the input that broke it is in fuzz/artifacts/{target}/")
        })?;
    }
    Ok(())
}

/// `cargo xtask fuzz <target>`: fuzz one target, growing `fuzz/corpus/<target>`.
fn run_target(root: &Path, target: &str, seconds: Option<u64>) -> Result<()> {
    ensure_cargo_fuzz()?;
    let known = targets(root)?;
    if !known.iter().any(|t| t == target) {
        bail!(
            "no fuzz target `{target}`; the targets are: {}",
            known.join(", ")
        );
    }
    let target_dir = fuzz_target_dir(root)?;
    let corpus = root.join("fuzz").join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let seeds = seeds_dir(root, target);
    let mut cmd = cargo_fuzz(root);
    cmd.args(["run", target, "--target-dir"])
        .arg(&target_dir)
        .arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--").args(libfuzzer_args(seconds));
    util::run(&mut cmd)
}

fn libfuzzer_args(seconds: Option<u64>) -> Vec<String> {
    // An input that takes 10 s is a hang worth reporting: the parsers are linear.
    let mut args = vec!["-timeout=10".to_string()];
    if let Some(seconds) = seconds {
        args.push(format!("-max_total_time={seconds}"));
    }
    args
}

/// A `cargo fuzz` command run from the repository root, allowed to use the
/// unstable flags cargo-fuzz needs.
fn cargo_fuzz(root: &Path) -> Command {
    let mut cmd = util::cargo();
    cmd.arg("fuzz")
        .current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1");
    cmd
}

fn seeds_dir(root: &Path, target: &str) -> PathBuf {
    root.join("fuzz").join("seeds").join(target)
}

/// Fuzz builds go to their own directory: they use other compiler flags
/// and would otherwise evict the workspace's artifacts.
fn fuzz_target_dir(root: &Path) -> Result<PathBuf> {
    Ok(util::target_dir(root)?.join("fuzz"))
}

/// The fuzz targets, as `cargo fuzz list` reads them from fuzz/Cargo.toml.
fn targets(root: &Path) -> Result<Vec<String>> {
    ensure_cargo_fuzz()?;
    let output = cargo_fuzz(root)
        .arg("list")
        .output()
        .context("running `cargo fuzz list`")?;
    if !output.status.success() {
        bail!(
            "`cargo fuzz list` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Fails with the install command when cargo-fuzz is missing.
pub fn ensure_cargo_fuzz() -> Result<()> {
    let installed = util::cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !installed {
        bail!(
            "cargo-fuzz is not installed; install it with \
             `cargo install cargo-fuzz --locked --version {CARGO_FUZZ_VERSION}` (.ci/run does)"
        );
    }
    Ok(())
}
