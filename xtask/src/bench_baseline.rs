//! What `bench sync`, `bench verify` and `bench transform` share to measure
//! the poolsync under test: its release build, and `--baseline BIN`, an
//! older poolsync binary run beside it.
//!
//! With a baseline, each bench runs the given binary as one more variant,
//! `poolsync (baseline)`, exactly as it runs the new build: in the same
//! rotation (the variants take turns going first, see [`take_turns`]), on
//! the same fresh copy of the template, under the same measuring wrapper,
//! with the same checks afterwards. The summary then gains a table of the
//! ratios new/baseline of every figure the bench reports. Wall times are
//! given twice: the ratio of the two medians, and the lowest and highest
//! ratio within one repetition (the two runs of a repetition follow each
//! other closely, so their ratio is the least disturbed by a change in the
//! machine's load), which shows how much of a difference is noise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use crate::util;

/// The label of the baseline's variant in every table.
pub(crate) const BASELINE_LABEL: &str = "poolsync (baseline)";

/// The poolsync binaries a bench runs.
#[derive(Debug)]
pub(crate) struct Binaries {
    /// The release build of this tree.
    pub(crate) poolsync: PathBuf,
    /// `--baseline BIN`, when given.
    pub(crate) baseline: Option<Baseline>,
    /// The target directory the build went to.
    pub(crate) target: PathBuf,
    /// The commit this tree is at, as `git describe --always --dirty` says.
    pub(crate) commit: String,
}

/// An older poolsync binary to compare with.
#[derive(Debug)]
pub(crate) struct Baseline {
    /// Absolute, so that it runs from any directory.
    pub(crate) path: PathBuf,
    /// What `BIN --version` printed.
    pub(crate) version: String,
}

impl Binaries {
    /// Checks `baseline` (so that a wrong path fails before the build),
    /// builds poolsync (release) and locates the binary.
    pub(crate) fn build(root: &Path, baseline: Option<&Path>) -> Result<Binaries> {
        let baseline = baseline.map(Baseline::resolve).transpose()?;
        util::step("building poolsync (release)");
        util::run(
            util::cargo()
                .args(["build", "--release", "--package", "poolsync"])
                .current_dir(root),
        )?;
        let target = util::target_dir(root)?;
        let poolsync = target.join("release").join("poolsync");
        ensure!(
            poolsync.is_file(),
            "the release build left no binary at {}",
            poolsync.display()
        );
        if let Some(b) = &baseline {
            if poolsync.canonicalize().is_ok_and(|p| p == b.path) {
                eprintln!(
                    "xtask: warning: --baseline names the binary under test; the ratios \
                     will only show noise"
                );
            }
        }
        Ok(Binaries {
            poolsync,
            baseline,
            target,
            commit: describe_commit(root),
        })
    }

    /// The binary that runs a variant: the baseline's or the new one.
    pub(crate) fn binary(&self, baseline: bool) -> &Path {
        match (&self.baseline, baseline) {
            (Some(b), true) => &b.path,
            _ => &self.poolsync,
        }
    }

    /// One line for the report: what is compared.
    pub(crate) fn describe(&self) -> String {
        let new = format!("poolsync: release build of {}", self.commit);
        match &self.baseline {
            Some(b) => format!("{new}; baseline: {} (`{}`).", b.path.display(), b.version),
            None => format!("{new}."),
        }
    }
}

impl Baseline {
    /// Makes `path` absolute and asks the binary for its version, which
    /// also proves that it runs.
    fn resolve(path: &Path) -> Result<Baseline> {
        let path = path
            .canonicalize()
            .with_context(|| format!("--baseline {}: no such file", path.display()))?;
        ensure!(
            path.is_file(),
            "--baseline {}: not a file (give the poolsync binary, e.g. \
             target/release/poolsync of another checkout)",
            path.display()
        );
        let out = Command::new(&path)
            .arg("--version")
            .output()
            .with_context(|| format!("--baseline: running `{} --version`", path.display()))?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || !version.starts_with("poolsync") {
            bail!(
                "--baseline {}: `--version` printed {version:?} ({}); expected a poolsync binary",
                path.display(),
                out.status
            );
        }
        Ok(Baseline { path, version })
    }
}

/// `git describe --always --dirty` of the tree, or `an unknown commit`.
fn describe_commit(root: &Path) -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "an unknown commit".to_string())
}

/// The order in which `items` run in repetition `rep`: the list rotated by
/// `rep`, so that each one goes first in turn.
pub(crate) fn take_turns<T: Copy>(items: &[T], rep: usize) -> Vec<T> {
    let n = items.len();
    (0..n)
        .filter_map(|i| items.get((i + rep) % n).copied())
        .collect()
}

/// `new / base` as `1.02×`. Two zeros are equal (`1.00×`); a figure that
/// only the new build has is `new only`.
pub(crate) fn ratio(new: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:.2}×", new / base)
    } else if new > 0.0 {
        "new only".to_string()
    } else {
        "1.00×".to_string()
    }
}

/// [`ratio`] of two byte counts.
pub(crate) fn byte_ratio(new: u64, base: u64) -> String {
    ratio(new as f64, base as f64)
}

/// [`ratio`] of two durations given as microseconds.
pub(crate) fn micros_ratio(new: u64, base: u64) -> String {
    ratio(new as f64, base as f64)
}

/// The wall-time ratio: of the two medians, then in parentheses the lowest
/// and highest ratio of the runs of one repetition (run `i` of each list
/// belongs to repetition `i`).
pub(crate) fn wall_ratio(new: &[Duration], base: &[Duration]) -> String {
    let median = |d: &[Duration]| crate::bench_sync::median(d.to_vec());
    let (Some(n), Some(b)) = (median(new), median(base)) else {
        return String::new();
    };
    let mut text = ratio(n.as_secs_f64(), b.as_secs_f64());
    let paired: Vec<f64> = new
        .iter()
        .zip(base)
        .filter(|(_, b)| !b.is_zero())
        .map(|(n, b)| n.as_secs_f64() / b.as_secs_f64())
        .collect();
    let lowest = paired.iter().copied().reduce(f64::min);
    let highest = paired.iter().copied().reduce(f64::max);
    if let (Some(lo), Some(hi), true) = (lowest, highest, paired.len() > 1) {
        text.push_str(&format!(" ({lo:.2}–{hi:.2})"));
    }
    text
}

/// A markdown table.
pub(crate) fn markdown_table(head: &[&str], rows: &[Vec<String>]) -> String {
    let line = |cells: &[&str]| format!("| {} |\n", cells.join(" | "));
    let mut out = line(head);
    out.push_str(&format!("|{}\n", "---|".repeat(head.len())));
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        out.push_str(&line(&cells));
    }
    out
}

/// The sentence under every ratio table.
pub(crate) const RATIO_NOTE: &str = "Ratios are new/baseline of the medians (peak RSS: of \
    the largest); below 1 the new build is faster or smaller. The wall-time range in \
    parentheses is the lowest and highest ratio within one repetition.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_take_turns_going_first() {
        let items = ['a', 'b', 'c'];
        assert_eq!(take_turns(&items, 0), vec!['a', 'b', 'c']);
        assert_eq!(take_turns(&items, 1), vec!['b', 'c', 'a']);
        assert_eq!(take_turns(&items, 2), vec!['c', 'a', 'b']);
        assert_eq!(take_turns(&items, 3), take_turns(&items, 0));
        assert!(take_turns::<u8>(&[], 1).is_empty());
    }

    #[test]
    fn ratios_handle_zero_and_pair_the_repetitions() {
        assert_eq!(ratio(1.0, 2.0), "0.50×");
        assert_eq!(byte_ratio(0, 0), "1.00×");
        assert_eq!(byte_ratio(8192, 0), "new only");
        assert_eq!(micros_ratio(150, 100), "1.50×");
        let s = Duration::from_millis;
        assert_eq!(
            wall_ratio(&[s(110), s(90), s(100)], &[s(100), s(100), s(100)]),
            "1.00× (0.90–1.10)"
        );
        assert_eq!(wall_ratio(&[s(200)], &[s(100)]), "2.00×");
        assert_eq!(wall_ratio(&[], &[s(100)]), "");
    }

    #[test]
    fn tables_are_markdown() {
        let t = markdown_table(&["a", "b"], &[vec!["1".into(), "2".into()]]);
        assert_eq!(t, "| a | b |\n|---|---|\n| 1 | 2 |\n");
    }

    #[test]
    fn a_missing_baseline_is_refused() {
        let err = Baseline::resolve(Path::new("no/such/poolsync")).expect_err("refused");
        assert!(format!("{err:#}").contains("--baseline"), "{err:#}");
    }
}
