//! `cargo xtask test`: every test of the workspace, with PMDK's tools in place.
//!
//! The interop tests compare poolsync with the real `pmempool` and compile C
//! programs against libpmemobj, so they need Debian's PMDK 1.12 packages and
//! a C compiler. When those are missing and we are root, we install them.
//! When we cannot, the interop tests skip themselves: each one appends
//! `<test name>: <reason>` to the file named by `POOLSYNC_SKIP_LOG`, and we
//! print those lines in a box at the end so that a green run cannot hide
//! that half of the suite did not run. With `CI=true` nothing may skip.
//! Last comes the soak's short run (`soak --smoke`): three kill rounds of
//! every writer on the debug build.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{soak, util};

/// Environment variable through which interop tests report that they skipped.
pub const SKIP_LOG_ENV: &str = "POOLSYNC_SKIP_LOG";

/// Debian's PMDK packages: `pmempool` and the headers of the two libraries.
pub const PMDK_PACKAGES: &[&str] = &["pmdk-tools", "libpmemobj-dev", "libpmempool-dev"];

/// Something the interop tests need, and the Debian packages that provide it.
struct Prerequisite {
    what: &'static str,
    present: fn() -> bool,
    packages: &'static [&'static str],
}

const PREREQUISITES: &[Prerequisite] = &[
    Prerequisite {
        what: "`pmempool` on PATH",
        present: || util::on_path("pmempool"),
        packages: PMDK_PACKAGES,
    },
    Prerequisite {
        what: "/usr/include/libpmemobj.h",
        present: || Path::new("/usr/include/libpmemobj.h").is_file(),
        packages: PMDK_PACKAGES,
    },
    Prerequisite {
        what: "/usr/include/libpmempool.h",
        present: || Path::new("/usr/include/libpmempool.h").is_file(),
        packages: PMDK_PACKAGES,
    },
    Prerequisite {
        what: "a C compiler (`cc`)",
        present: || util::on_path("cc"),
        packages: &["build-essential"],
    },
];

/// What one `cargo xtask test` run found.
#[derive(Debug, Default)]
pub struct Summary {
    /// Tests that ran and passed (skipped interop tests not included).
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
    /// `#[ignore]`d tests plus interop tests that skipped themselves.
    pub skipped: u64,
    /// The lines the skipping tests wrote to the skip log.
    pub skip_lines: Vec<String>,
    /// Prerequisites still missing after any install attempt.
    pub missing: Vec<&'static str>,
    /// Packages that would provide the missing prerequisites.
    pub packages: Vec<&'static str>,
    /// Cargo invocations that failed (build errors or failing tests).
    pub failures: Vec<String>,
}

impl Summary {
    /// The closing line, in the `N passed, N failed` form CI logs are read for.
    pub fn closing_line(&self) -> String {
        let mut line = format!("tests: {} passed, {} failed", self.passed, self.failed);
        if self.skipped > 0 {
            line.push_str(&format!(", {} skipped", self.skipped));
        }
        line
    }

    /// Fails when a cargo invocation failed, or (with `ci`) when anything skipped.
    pub fn into_result(self, ci: bool) -> Result<()> {
        if !self.failures.is_empty() {
            bail!("tests failed: {}", self.failures.join("; "));
        }
        if ci && !self.skip_lines.is_empty() {
            bail!(
                "CI=true, but {} interop test(s) skipped instead of failing",
                self.skip_lines.len()
            );
        }
        Ok(())
    }
}

/// `cargo xtask test`.
pub fn run(root: &Path, ci: bool) -> Result<()> {
    let summary = execute(root, ci)?;
    println!("{}", summary.closing_line());
    summary.into_result(ci)
}

/// Installs what is missing (when possible), runs every test, and reports
/// skipped interop tests. Errors only when the tests could not be run at
/// all; failing tests are recorded in the [`Summary`].
pub fn execute(root: &Path, ci: bool) -> Result<Summary> {
    let missing = ensure_prerequisites(ci)?;
    let mut summary = Summary::default();
    for prerequisite in &missing {
        summary.missing.push(prerequisite.what);
        for package in prerequisite.packages {
            if !summary.packages.contains(package) {
                summary.packages.push(package);
            }
        }
    }

    let skip_log = SkipLog::create()?;
    let invocations: [(&str, &[&str]); 2] = [
        (
            "unit, integration, tidy and bench smoke tests",
            &["test", "--workspace", "--all-targets", "--no-fail-fast"],
        ),
        (
            "doc tests",
            &["test", "--workspace", "--doc", "--no-fail-fast"],
        ),
    ];
    for (title, args) in invocations {
        util::step(&format!("cargo test: {title}"));
        let mut cmd = util::cargo();
        cmd.args(args)
            .current_dir(root)
            .env(SKIP_LOG_ENV, skip_log.path());
        if ci {
            cmd.env("CI", "true");
        }
        let counts = run_counting(&mut cmd)?;
        summary.passed += counts.passed;
        summary.failed += counts.failed;
        summary.skipped += counts.ignored;
        if !counts.success {
            summary
                .failures
                .push(format!("`{}` failed", util::display(&cmd)));
        }
    }

    // The short soak: every writer killed in three rounds, on the debug
    // binary the tests just built (`soak::Options::smoke`).
    util::step("soak smoke: 3 kill rounds of every writer");
    if let Err(e) = soak::run(root, &soak::Options::smoke()) {
        eprintln!("xtask: the soak smoke failed: {e:#}");
        summary
            .failures
            .push(format!("the soak smoke failed: {e:#}"));
    }

    summary.skip_lines = skip_log.lines()?;
    let skipped_interop = u64::try_from(summary.skip_lines.len()).unwrap_or(u64::MAX);
    // A skipping interop test returns early, so cargo counted it as passed.
    summary.passed = summary.passed.saturating_sub(skipped_interop);
    summary.skipped += skipped_interop;
    if !summary.skip_lines.is_empty() {
        eprint!("{}", skip_box(&summary));
    }
    Ok(summary)
}

/// Checks the interop prerequisites, installs the missing ones when we are
/// root on a machine with apt-get, and hands back those still missing.
/// With `ci`, anything still missing is an error.
fn ensure_prerequisites(ci: bool) -> Result<Vec<&'static Prerequisite>> {
    let missing = missing_prerequisites();
    if missing.is_empty() {
        return Ok(missing);
    }
    let names: Vec<&str> = missing.iter().map(|p| p.what).collect();
    eprintln!(
        "xtask: the PMDK interop tests need {}, which are missing",
        names.join(", ")
    );
    let packages = packages_for(&missing);
    if util::is_root() && util::on_path("apt-get") {
        util::step(&format!("installing {}", packages.join(" ")));
        if let Err(e) = apt_install(&packages) {
            eprintln!("xtask: warning: installing the PMDK packages failed: {e:#}");
        }
    } else {
        eprintln!(
            "xtask: not root, or no apt-get: cannot install {} myself",
            packages.join(" ")
        );
    }
    let missing = missing_prerequisites();
    if !missing.is_empty() && ci {
        let names: Vec<&str> = missing.iter().map(|p| p.what).collect();
        bail!(
            "CI=true and the PMDK interop tests cannot run: missing {}. \
             Install them as root with `{}`",
            names.join(", "),
            install_command(&packages_for(&missing)),
        );
    }
    Ok(missing)
}

fn missing_prerequisites() -> Vec<&'static Prerequisite> {
    PREREQUISITES.iter().filter(|p| !(p.present)()).collect()
}

fn packages_for(missing: &[&Prerequisite]) -> Vec<&'static str> {
    let mut packages: Vec<&'static str> = Vec::new();
    for prerequisite in missing {
        for package in prerequisite.packages {
            if !packages.contains(package) {
                packages.push(package);
            }
        }
    }
    packages
}

fn install_command(packages: &[&str]) -> String {
    format!(
        "apt-get update && apt-get install -y {}",
        packages.join(" ")
    )
}

fn apt_install(packages: &[&str]) -> Result<()> {
    util::run(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The loud report of skipped interop tests, with the command that would
/// let them run.
fn skip_box(summary: &Summary) -> String {
    let bar = "!".repeat(78);
    let mut out = format!("\n{bar}\n");
    let n = summary.skip_lines.len();
    out.push_str(&format!(
        "!! {n} PMDK interop test{} SKIPPED: poolsync was NOT compared with pmempool.\n!!\n",
        if n == 1 { "" } else { "s" }
    ));
    for line in &summary.skip_lines {
        out.push_str(&format!("!!   {line}\n"));
    }
    out.push_str("!!\n");
    if summary.missing.is_empty() {
        out.push_str("!! PMDK's tools were found, so read the reasons above.\n");
    } else {
        out.push_str(&format!("!! Missing: {}.\n", summary.missing.join(", ")));
        out.push_str("!! To run them, install PMDK 1.12 and a C compiler as root:\n");
        out.push_str(&format!("!!     {}\n", install_command(&summary.packages)));
        out.push_str("!! (`cargo xtask test` does this itself when it runs as root.)\n");
    }
    out.push_str(&format!("{bar}\n"));
    out
}

/// A temporary file the interop tests append their skip reasons to.
struct SkipLog {
    path: PathBuf,
}

impl SkipLog {
    fn create() -> Result<SkipLog> {
        let path = std::env::temp_dir().join(format!("poolsync-skip-{}.log", std::process::id()));
        std::fs::write(&path, b"").with_context(|| format!("creating {}", path.display()))?;
        Ok(SkipLog { path })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn lines(&self) -> Result<Vec<String>> {
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("reading the skip log {}", self.path.display()))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }
}

impl Drop for SkipLog {
    fn drop(&mut self) {
        // Leaving a stale empty file in the temp dir is harmless.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the `test result:` lines of one cargo invocation added up to.
#[derive(Debug, Default)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
    success: bool,
}

/// Runs a `cargo test` command with its stdout passed through as it comes
/// and its `test result:` lines added up.
fn run_counting(cmd: &mut Command) -> Result<Counts> {
    eprintln!("$ {}", util::display(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{}`", util::display(cmd)))?;
    let mut counts = Counts::default();
    if let Some(mut stdout) = child.stdout.take() {
        let mut out = std::io::stdout();
        let mut buf = [0u8; 8192];
        let mut line = Vec::new();
        loop {
            let n = stdout.read(&mut buf).context("reading cargo's output")?;
            if n == 0 {
                break;
            }
            let chunk = buf.get(..n).unwrap_or_default();
            out.write_all(chunk).context("writing to stdout")?;
            out.flush().context("writing to stdout")?;
            for &byte in chunk {
                if byte == b'\n' {
                    add_result_line(&mut counts, &String::from_utf8_lossy(&line));
                    line.clear();
                } else {
                    line.push(byte);
                }
            }
        }
        add_result_line(&mut counts, &String::from_utf8_lossy(&line));
    }
    let status = child.wait().context("waiting for cargo")?;
    counts.success = status.success();
    Ok(counts)
}

/// Adds a libtest line such as
/// `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s`.
fn add_result_line(counts: &mut Counts, line: &str) {
    let Some(rest) = line.trim().strip_prefix("test result: ") else {
        return;
    };
    for field in rest.split(';') {
        let words: Vec<&str> = field.split_whitespace().collect();
        // The first field reads `ok. 3 passed`: the count is the word before the label.
        let (Some(label), Some(number)) = (
            words.last(),
            words.len().checked_sub(2).and_then(|i| words.get(i)),
        ) else {
            continue;
        };
        let Ok(number) = number.parse::<u64>() else {
            continue;
        };
        match *label {
            "passed" => counts.passed += number,
            "failed" => counts.failed += number,
            "ignored" => counts.ignored += number,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_add_up() {
        let mut counts = Counts::default();
        add_result_line(
            &mut counts,
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s",
        );
        add_result_line(
            &mut counts,
            "test result: FAILED. 5 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.20s",
        );
        add_result_line(&mut counts, "test parse::ok ... ok");
        assert_eq!((counts.passed, counts.failed, counts.ignored), (8, 2, 1));
    }

    #[test]
    fn skipped_tests_are_named_with_the_fix() {
        let summary = Summary {
            skip_lines: vec!["interop::create: pmempool not found".to_string()],
            missing: vec!["`pmempool` on PATH"],
            packages: PMDK_PACKAGES.to_vec(),
            ..Summary::default()
        };
        let text = skip_box(&summary);
        assert!(text.contains("1 PMDK interop test SKIPPED"), "{text}");
        assert!(
            text.contains("interop::create: pmempool not found"),
            "{text}"
        );
        assert!(
            text.contains(
                "apt-get update && apt-get install -y pmdk-tools libpmemobj-dev libpmempool-dev"
            ),
            "{text}"
        );
    }

    #[test]
    fn ci_fails_on_skips_and_the_closing_line_counts_them() {
        let summary = Summary {
            passed: 7,
            skipped: 2,
            skip_lines: vec!["a: b".into()],
            ..Summary::default()
        };
        assert_eq!(
            summary.closing_line(),
            "tests: 7 passed, 0 failed, 2 skipped"
        );
        assert!(summary.into_result(true).is_err());
        let summary = Summary {
            passed: 7,
            skip_lines: vec!["a: b".into()],
            ..Summary::default()
        };
        assert!(summary.into_result(false).is_ok());
    }
}
