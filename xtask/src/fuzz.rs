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
//!
//! `fuzz long` is the reliability run (`docs/reliability.md`): it builds
//! every target once, in release, and then runs the built binaries one
//! after the other (never in parallel: the machines it runs on are small)
//! for a number of executions each, and prints a table of executions,
//! time, corpus size and findings. Running the binaries rather than `cargo
//! fuzz run` keeps a source change made while it runs out of the figures.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util;

/// The cargo-fuzz release `.ci/run` installs and this module was tried with.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Seconds each target runs in `fuzz smoke` unless `--seconds` says otherwise.
pub const SMOKE_SECONDS: u64 = 10;

/// The longest a smoke run may take per target (CI budget).
const SMOKE_SECONDS_MAX: u64 = 60;

/// Executions per target of `fuzz long` unless `--runs` says otherwise.
pub const LONG_RUNS: u64 = 10_000_000;

/// `cargo xtask fuzz ...`.
pub fn command(root: &Path, args: &[String]) -> Result<()> {
    let Some((first, rest)) = args.split_first() else {
        bail!(
            "usage: cargo xtask fuzz <target> [--seconds N] | fuzz smoke [--seconds N] | fuzz long [--runs N] [--only T,..] | fuzz list"
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
        "long" => long(root, &parse_long(rest)?),
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

/// What `fuzz long` is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LongArgs {
    runs: u64,
    only: Option<Vec<String>>,
}

fn parse_long(args: &[String]) -> Result<LongArgs> {
    let mut out = LongArgs {
        runs: LONG_RUNS,
        only: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                let n = args.next().context("--runs needs a number")?;
                out.runs = n
                    .parse()
                    .with_context(|| format!("--runs wants a whole number, got `{n}`"))?;
                if out.runs == 0 {
                    bail!("--runs must be at least 1");
                }
            }
            "--only" => {
                let list = args.next().context("--only needs target names")?;
                out.only = Some(list.split(',').map(str::to_string).collect());
            }
            other => {
                bail!("fuzz long: unknown argument `{other}`; expected --runs N or --only T,..")
            }
        }
    }
    Ok(out)
}

/// The figures of one target's long run, from libFuzzer's final stats.
#[derive(Debug, Clone, Default, PartialEq)]
struct LongFigures {
    executions: u64,
    seconds: f64,
    corpus: u64,
    peak_rss_mb: u64,
    /// `None` when the run ended cleanly; else what libFuzzer reported.
    finding: Option<String>,
}

/// Reads libFuzzer's `stat::` lines and its crash reports from its stderr.
fn parse_figures(stderr: &str) -> LongFigures {
    let mut f = LongFigures::default();
    let stat = |line: &str, key: &str| -> Option<u64> {
        line.strip_prefix(key)?
            .trim()
            .trim_start_matches(':')
            .trim()
            .parse()
            .ok()
    };
    for line in stderr.lines() {
        if let Some(n) = stat(line, "stat::number_of_executed_units") {
            f.executions = n;
        } else if let Some(n) = stat(line, "stat::peak_rss_mb") {
            f.peak_rss_mb = n;
        } else if line.contains("ERROR: libFuzzer")
            || line.contains("==ERROR:")
            || line.contains("panicked at")
        {
            f.finding.get_or_insert_with(|| line.trim().to_string());
        }
        // `#123 DONE cov: .. corp: 45/3Kb ..` and the pulse lines carry the corpus size.
        if let Some(rest) = line.split("corp: ").nth(1) {
            if let Some(n) = rest.split('/').next().and_then(|n| n.parse().ok()) {
                f.corpus = n;
            }
        }
    }
    f
}

/// `cargo xtask fuzz long`: every target (or those `--only` names), one
/// at a time, for `--runs` executions each, from its seeds and the corpus
/// earlier long runs grew; prints the figures and fails when any target
/// found something (its input is in `fuzz/artifacts/<target>/`).
fn long(root: &Path, args: &LongArgs) -> Result<()> {
    ensure_cargo_fuzz()?;
    let target_dir = fuzz_target_dir(root)?;
    let mut targets = targets(root)?;
    if let Some(only) = &args.only {
        for t in only {
            if !targets.contains(t) {
                bail!(
                    "no fuzz target `{t}`; the targets are: {}",
                    targets.join(", ")
                );
            }
        }
        targets.retain(|t| only.contains(t));
    }
    util::step("building every fuzz target (release, once)");
    util::run(
        cargo_fuzz(root)
            .args(["build", "--release", "--target-dir"])
            .arg(&target_dir),
    )?;
    let bin_dir = target_dir.join(host_triple()?).join("release");
    let mut rows: Vec<(String, LongFigures)> = Vec::new();
    for target in &targets {
        util::step(&format!("fuzz long: {target}, {} executions", args.runs));
        let corpus = root.join("fuzz").join("corpus").join(target);
        let artifacts = root.join("fuzz").join("artifacts").join(target);
        for dir in [&corpus, &artifacts] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut cmd = Command::new(bin_dir.join(target));
        cmd.arg(format!("-runs={}", args.runs))
            .args(libfuzzer_args(None))
            .args(["-print_final_stats=1", "-verbosity=0"])
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(&corpus);
        let seeds = seeds_dir(root, target);
        if seeds.is_dir() {
            cmd.arg(&seeds);
        }
        eprintln!("$ {}", util::display(&cmd));
        let started = std::time::Instant::now();
        let output = cmd
            .output()
            .with_context(|| format!("running the fuzz binary of {target}"))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut figures = parse_figures(&stderr);
        figures.seconds = started.elapsed().as_secs_f64();
        // With -verbosity=0 libFuzzer prints no `corp:` line: the corpus
        // is what its directory holds now.
        if let Some(n) = count_files(&corpus) {
            figures.corpus = n;
        }
        if !output.status.success() && figures.finding.is_none() {
            figures.finding = Some(format!("exit status {}", output.status));
        }
        let tail: Vec<&str> = stderr.lines().rev().take(25).collect();
        for line in tail.into_iter().rev() {
            eprintln!("  {line}");
        }
        eprintln!(
            "{target}: {} executions in {:.0} s, corpus {}, {}",
            figures.executions,
            figures.seconds,
            figures.corpus,
            figures.finding.as_deref().unwrap_or("no finding")
        );
        rows.push((target.clone(), figures));
    }
    println!("\n| target | executions | time | exec/s | corpus | peak RSS | findings |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for (target, f) in &rows {
        let rate = if f.seconds > 0.0 {
            f.executions as f64 / f.seconds
        } else {
            0.0
        };
        println!(
            "| `{target}` | {} | {:.0} s | {:.0} | {} | {} MB | {} |",
            f.executions,
            f.seconds,
            rate,
            f.corpus,
            f.peak_rss_mb,
            f.finding.as_deref().unwrap_or("none")
        );
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|(_, f)| f.finding.is_some())
        .map(|(t, _)| t.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzz targets found something: {}; the inputs are in fuzz/artifacts/<target>/",
            failed.join(", ")
        );
    }
    Ok(())
}

/// The number of files in `dir`, or `None` when it cannot be listed.
fn count_files(dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(dir).ok()?;
    Some(
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .count() as u64,
    )
}

/// The host's target triple (`rustc -vV`), under which cargo-fuzz puts
/// its binaries.
fn host_triple() -> Result<String> {
    let out = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .arg("-vV")
        .output()
        .context("running `rustc -vV`")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("`rustc -vV` printed no host line")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_arguments_parse() {
        assert_eq!(parse_long(&[]).unwrap().runs, LONG_RUNS);
        let args: Vec<String> = ["--runs", "5", "--only", "a,b"].map(String::from).to_vec();
        assert_eq!(
            parse_long(&args).unwrap(),
            LongArgs {
                runs: 5,
                only: Some(vec!["a".into(), "b".into()])
            }
        );
        assert!(parse_long(&["--runs".to_string(), "0".to_string()]).is_err());
        assert!(parse_long(&["--bogus".to_string()]).is_err());
    }

    #[test]
    fn the_corpus_is_counted_in_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(count_files(dir.path()), Some(0));
        std::fs::write(dir.path().join("a"), b"x").unwrap();
        std::fs::write(dir.path().join("b"), b"y").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(count_files(dir.path()), Some(2));
        assert_eq!(count_files(&dir.path().join("missing")), None);
    }

    #[test]
    fn figures_come_from_the_final_stats() {
        let stderr = "#1048576 pulse  cov: 10 ft: 20 corp: 33/1024b lim: 4 exec/s: 5 rss: 40Mb\n\
                      Done 10000000 runs in 300 second(s)\n\
                      stat::number_of_executed_units: 10000000\n\
                      stat::average_exec_per_sec:     33333\n\
                      stat::new_units_added:          12\n\
                      stat::peak_rss_mb:              87\n";
        let f = parse_figures(stderr);
        assert_eq!(f.executions, 10_000_000);
        assert_eq!(f.corpus, 33);
        assert_eq!(f.peak_rss_mb, 87);
        assert_eq!(f.finding, None);
        let crash = parse_figures(
            "thread '<unnamed>' panicked at src/x.rs:1:1:\n==1==ERROR: libFuzzer: deadly signal\n",
        );
        assert!(crash.finding.is_some());
    }
}
