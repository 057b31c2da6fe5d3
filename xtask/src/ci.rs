//! `cargo xtask ci`: every check a change must pass, in the order CI runs them.
//!
//! `.ci/run` installs the tools and then runs exactly this, and
//! `.github/workflows/ci.yml` runs the same steps as separate jobs. The test
//! step is the code path of `cargo xtask test` with CI semantics: a PMDK
//! interop test that cannot run is a failure, not a skip.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::{fuzz, package, test, util};

/// `cargo xtask ci`.
pub fn run(root: &Path) -> Result<()> {
    // Fail now rather than after the tests when the last step cannot run.
    fuzz::ensure_cargo_fuzz()?;
    let started = Instant::now();
    let mut timings: Vec<(&str, Duration)> = Vec::new();
    let mut timed = |name: &'static str, step: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        util::step(&format!("ci: {name}"));
        let t = Instant::now();
        let result = step().with_context(|| format!("ci step `{name}` failed"));
        timings.push((name, t.elapsed()));
        result
    };

    timed("fmt", &mut || {
        util::run(
            util::cargo()
                .args(["fmt", "--all", "--", "--check"])
                .current_dir(root),
        )
    })?;
    timed("clippy", &mut || {
        util::run(
            util::cargo()
                .args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ])
                .current_dir(root),
        )
    })?;
    let mut closing_line = String::new();
    timed("test", &mut || {
        let summary = test::execute(root, true)?;
        closing_line = summary.closing_line();
        println!("{closing_line}");
        summary.into_result(true)
    })?;
    timed("doc", &mut || {
        util::run(
            util::cargo()
                .args(["doc", "--workspace", "--no-deps"])
                .env("RUSTDOCFLAGS", "-Dwarnings")
                .current_dir(root),
        )
    })?;
    // Seconds, where the full `cargo publish --dry-run` takes minutes:
    // see package.rs for why CI runs only this.
    timed("package", &mut || package::package(root))?;
    timed("fuzz smoke", &mut || fuzz::smoke(root, fuzz::SMOKE_SECONDS))?;

    eprintln!("\nci: every step passed");
    for (name, took) in &timings {
        eprintln!("  {name:<12} {:>6.1} s", took.as_secs_f64());
    }
    eprintln!(
        "  {:<12} {:>6.1} s",
        "total",
        started.elapsed().as_secs_f64()
    );
    // The test summary last, so that a log reader finds it at the end.
    println!("{closing_line}");
    Ok(())
}
