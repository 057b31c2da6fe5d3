//! `poolsync undo [-d] [-v] [--json] <undo-file>`: puts back the bytes a
//! repair (`sync`, `sync --verify`) overwrote, from the undo file it saved
//! next to the pool set (`<poolset>.poolsync-undo-<time>`), as e2undo
//! replays an e2fsck undo file.
//!
//! Every saved range is checked against the pool first: it must still hold
//! the bytes the repair wrote, or the saved ones already (a crash of an
//! earlier undo leaves a mix, sector by sector). If any range holds
//! something else, the pool changed since the repair and nothing is
//! written. Running `undo` twice is harmless: the second run finds the
//! saved bytes in place. The undo file is kept.
//!
//! Output: one line, `<undo-file>: N bytes in R range(s) restored to
//! <poolset>` (`would be restored` for `-d`); `-v` adds a line per range.
//! Failures are one line on stderr and exit code 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use poolsync_engine::undo::{self, RangeFate, UndoOptions, UndoReport};
use poolsync_pmem::AnyStorage;
use serde::Serialize;

use crate::output::{emit, emit_json};

/// Arguments of `poolsync undo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Check the undo file against the pool and show what would be restored;
    /// write nothing
    #[arg(short = 'd', long = "dry-run")]
    dry_run: bool,
    /// Also print every saved range and what happens to it
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Print a JSON document instead of text (see docs/json.md)
    #[arg(long = "json")]
    json: bool,
    /// The undo file a repair wrote (<POOLSET>.poolsync-undo-<time>)
    #[arg(value_name = "UNDO_FILE")]
    file: PathBuf,
}

impl Args {
    /// `--json` was given.
    pub fn json(&self) -> bool {
        self.json
    }

    /// The file the command works on.
    pub fn path(&self) -> &Path {
        &self.file
    }
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct Document<'a> {
    path: &'a Path,
    dry_run: bool,
    result: &'static str,
    exit_code: u8,
    report: Option<&'a UndoReport>,
    error: Option<String>,
}

/// Runs the command; `Ok` carries the exit code.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let storage = AnyStorage::from_env().context("failed to undo")?;
    let options = UndoOptions {
        dry_run: args.dry_run,
    };
    let report = match undo::undo(&storage, &args.file, &options) {
        Ok(report) => report,
        Err(e) => {
            let message = format!("failed to undo: {e}");
            if args.json {
                let doc = Document {
                    path: &args.file,
                    dry_run: args.dry_run,
                    result: "error",
                    exit_code: 1,
                    report: None,
                    error: Some(message.clone()),
                };
                emit_json("undo", &doc)?;
            }
            return Err(anyhow::anyhow!(message));
        }
    };
    if args.json {
        let doc = Document {
            path: &args.file,
            dry_run: args.dry_run,
            result: if args.dry_run { "checked" } else { "restored" },
            exit_code: 0,
            report: Some(&report),
            error: None,
        };
        emit_json("undo", &doc)?;
        return Ok(ExitCode::SUCCESS);
    }
    emit(&report_text(&report, args.verbose))?;
    Ok(ExitCode::SUCCESS)
}

/// The report as text: per range with `verbose`, then the summary line.
fn report_text(r: &UndoReport, verbose: bool) -> String {
    let mut out = String::new();
    let count = |fate: RangeFate| r.ranges.iter().filter(|x| x.fate == fate).count();
    if verbose {
        for x in &r.ranges {
            let fate = match (x.fate, r.dry_run) {
                (RangeFate::Restored, false) => "restored",
                (RangeFate::Restored, true) => "would be restored",
                (RangeFate::AlreadyOld, _) => "holds the saved bytes already",
                (RangeFate::Unreadable, _) => {
                    "was unreadable when the repair saved it: nothing to put back"
                }
            };
            out.push_str(&format!(
                "replica {} part {} at file offset {:#x}, logical [{:#x}, {:#x}), {} bytes: {fate}\n",
                x.replica,
                x.part,
                x.file_offset,
                x.logical,
                x.logical.saturating_add(x.len),
                x.len
            ));
        }
    }
    let restored = count(RangeFate::Restored);
    let verb = if r.dry_run {
        "would be restored"
    } else {
        "restored"
    };
    out.push_str(&format!(
        "{}: {} bytes in {restored} range(s) {verb} to {}",
        r.path.display(),
        r.bytes_restored,
        r.set.display()
    ));
    let already = count(RangeFate::AlreadyOld);
    if already > 0 {
        out.push_str(&format!(
            "; {already} range(s) hold the saved bytes already"
        ));
    }
    let unreadable = count(RangeFate::Unreadable);
    if unreadable > 0 {
        out.push_str(&format!(
            "; {unreadable} range(s) were unreadable when saved and are left as they are"
        ));
    }
    out.push('\n');
    out
}
