//! `poolsync import`: apply update packets to a destination pool set, as
//! MultiSite's `syncreplica -import` does; seed a destination whose parts
//! do not exist yet.
//!
//! Output: a line per logical packet (applied, skipped and why, or
//! refused and why); `-v` adds the files deleted and the epoch reached.
//! A refusal is also one `error:` line on stderr, and the exit code is 1;
//! whatever was applied before it stays applied, and nothing is written
//! for a packet that is refused. Files of packets applied or skipped are
//! deleted unless `--keep`.
//!
//! `--diagnose` prints nothing and exits 0 when nothing is missing.
//! Otherwise it says why each packet was refused and prints the command to
//! run at the source that fills the gap (`poolsync export --since E ...`
//! or, for a destination changed locally or on another timeline,
//! `poolsync export --request FILE ...` after writing the request with
//! `--rewind-request FILE`), and exits 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use poolsync_engine::packets::import::{self, ImportOptions, ImportReport, Suggestion, Verdict};
use poolsync_engine::packets::read_key;
use poolsync_engine::ring::UuidSource;
use poolsync_pmem::AnyStorage;
use serde::Serialize;

use crate::diagnose::{explain, shell_quote, Waiting};
use crate::output::{emit, emit_json};
use crate::settings::Settings;

/// Arguments of `poolsync import`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Check everything and say what would be applied; write nothing, delete nothing
    #[arg(short = 'd', long = "dry-run")]
    dry_run: bool,
    /// Say why packets are refused and which export fills the gap; apply nothing
    #[arg(long = "diagnose")]
    diagnose: bool,
    /// With --diagnose: write the rewind request that brings a destination
    /// changed locally (or on another timeline) back, for `export --request`
    #[arg(long = "rewind-request", value_name = "FILE", requires = "diagnose")]
    rewind_request: Option<PathBuf>,
    /// Keep the packet files applied or skipped (they are deleted by default)
    #[arg(long = "keep")]
    keep: bool,
    /// This destination's name at the source, for the commands --diagnose
    /// prints and the rewind request (default: the packet's one destination)
    #[arg(long = "as", value_name = "NAME")]
    name: Option<String>,
    /// Accept only packets signed with the key derived from FILE (default:
    /// the key_file setting)
    #[arg(long = "key-file", value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Also print the files deleted and the epoch reached
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    /// Print a JSON document instead of text (see docs/json.md)
    #[arg(long = "json")]
    json: bool,
    /// Show progress on stderr (default when stderr is a terminal)
    #[arg(long = "progress", overrides_with = "no_progress")]
    progress: bool,
    /// Never show progress
    #[arg(long = "no-progress", overrides_with = "progress")]
    no_progress: bool,
    /// Wait up to SECONDS while another process has the pool open (default: the
    /// wait_lock setting, 0)
    #[arg(long = "wait-lock", value_name = "SECONDS", value_parser = crate::settings::wait_lock_flag)]
    wait_lock: Option<String>,
    /// The destination pool set
    #[arg(value_name = "POOLSET")]
    poolset: PathBuf,
    /// The packet files, in any order (every physical file of each packet)
    #[arg(value_name = "PACKET", required_unless_present = "diagnose")]
    packets: Vec<PathBuf>,
}

impl Args {
    /// `--json` was given.
    pub fn json(&self) -> bool {
        self.json
    }

    /// The pool set the command works on.
    pub fn path(&self) -> &Path {
        &self.poolset
    }
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct Document<'a> {
    path: &'a Path,
    dry_run: bool,
    diagnose: bool,
    result: &'static str,
    exit_code: u8,
    report: Option<&'a ImportReport>,
    /// `--diagnose`: the commands to run at the source, as text.
    commands: Vec<String>,
    error: Option<String>,
}

/// Runs the command; `Ok` carries the exit code.
pub fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let storage = AnyStorage::from_env().context("failed to import")?;
    let wait_lock = settings.wait_lock(args.wait_lock.as_deref())?;
    let fail = |e: poolsync_engine::Error| {
        anyhow::anyhow!(
            "failed to import: {}",
            explain(e, &args.poolset, Waiting::Supported(wait_lock))
        )
    };
    let outcome = settings
        .key_file(args.key_file.as_deref())
        .and_then(|path| match path {
            Some(p) => read_key(&storage, &p).map(Some).map_err(fail),
            None => Ok(None),
        })
        .and_then(|key| {
            let options = ImportOptions {
                dry_run: args.dry_run,
                diagnose: args.diagnose,
                keep: args.keep,
                key,
                rewind_request: args.rewind_request.clone(),
                name: args.name.clone(),
                wait_lock,
                uuids: UuidSource::Random,
                threads: settings.jobs(None)?,
            };
            let off = args.dry_run || args.diagnose || args.no_progress;
            let progress = crate::progress::reporter("import", off, args.progress);
            let r = import::import(
                &storage,
                &args.poolset,
                &args.packets,
                &options,
                progress.as_ref(),
            );
            progress.finish();
            r.map_err(fail)
        });
    let report = match outcome {
        Ok(r) => r,
        Err(e) => {
            if args.json {
                emit_document(&args, None, Err(e.to_string()))?;
            }
            return Err(e);
        }
    };
    for m in &report.missing {
        eprintln!(
            "warning: {}: no such file, ignored (already applied and deleted?)",
            m.display()
        );
    }
    if let Some(note) = &report.state_note {
        eprintln!("note: {note}");
    }
    let commands: Vec<String> = report.suggestions.iter().map(command).collect();
    let failed = if args.diagnose {
        report.missing()
    } else {
        report.refused()
    };
    if args.json {
        emit_document(&args, Some(&report), Ok(commands))?;
        return Ok(if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    if args.diagnose {
        emit(&diagnosis(&report, &commands))?;
        return Ok(if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        });
    }
    emit(&text(&args, &report))?;
    if report.interrupted {
        eprintln!(
            "warning: {}: an earlier import was interrupted and its headers still mark the pool broken; import the packet it was applying again",
            args.poolset.display()
        );
    }
    if let Some(message) = first_refusal(&report) {
        eprintln!("error: failed to import: {message}");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the `--json` document.
fn emit_document(
    args: &Args,
    report: Option<&ImportReport>,
    outcome: Result<Vec<String>, String>,
) -> anyhow::Result<()> {
    let (result, exit_code, commands, error) = match (&outcome, report) {
        (Err(e), _) => ("error", 1, Vec::new(), Some(e.clone())),
        (Ok(c), Some(r)) if args.diagnose => {
            let missing = r.missing();
            ("diagnosed", u8::from(missing), c.clone(), first_refusal(r))
        }
        (Ok(c), Some(r)) if r.refused() => ("refused", 1, c.clone(), first_refusal(r)),
        (Ok(c), _) => ("imported", 0, c.clone(), None),
    };
    let doc = Document {
        path: &args.poolset,
        dry_run: args.dry_run,
        diagnose: args.diagnose,
        result,
        exit_code,
        report,
        commands,
        error,
    };
    emit_json("import", &doc)
}

/// The message of the first refused packet.
fn first_refusal(report: &ImportReport) -> Option<String> {
    report.packets.iter().find_map(|p| match &p.verdict {
        Verdict::Refused { message, .. } => Some(message.clone()),
        _ => None,
    })
}

/// The export command a suggestion stands for.
pub fn command(s: &Suggestion) -> String {
    let mut cmd = String::from("poolsync export");
    if let Some(since) = s.since {
        cmd.push_str(&format!(" --since {since}"));
    }
    if let Some(request) = &s.request {
        cmd.push_str(&format!(" --request {}", shell_quote(request)));
    }
    cmd.push_str(&format!(
        " --out {} {} {}",
        shell_quote(Path::new(&s.out)),
        shell_quote(Path::new(&s.source)),
        shell_quote(Path::new(&s.destination))
    ));
    cmd
}

/// What a packet's verdict reads as.
fn verdict_text(v: &Verdict, dry_run: bool) -> String {
    match v {
        Verdict::Applied => "applied".to_string(),
        Verdict::WouldApply if dry_run => "would be applied".to_string(),
        Verdict::WouldApply => "can be applied".to_string(),
        Verdict::Skipped { reason } => format!("skipped: {reason}"),
        Verdict::Refused { message, .. } => format!("refused: {message}"),
    }
}

/// The report as text.
fn text(args: &Args, r: &ImportReport) -> String {
    let mut out = String::new();
    if r.seeded {
        let verb = if r.dry_run {
            "would be seeded"
        } else {
            "seeded"
        };
        out.push_str(&format!(
            "{}: {verb}: its parts created from its pool set file, with the source's pool set UUID\n",
            args.poolset.display()
        ));
    }
    for p in &r.packets {
        let epochs = if p.packet_id.is_some() {
            format!(
                " (epoch {} -> {} of timeline {})",
                p.base_epoch, p.new_epoch, p.timeline
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{}{epochs}: {}\n",
            p.path.display(),
            verdict_text(&p.verdict, r.dry_run)
        ));
    }
    if args.verbose >= 1 {
        for d in &r.deleted {
            out.push_str(&format!("deleted {}\n", d.display()));
        }
        if let Some((t, e)) = r.after {
            out.push_str(&format!(
                "{}: holds epoch {e} of timeline {t}\n",
                args.poolset.display()
            ));
        }
        if let Some(c) = r.check.as_ref().filter(|c| c.bytes_read > 0) {
            out.push_str(&format!(
                "checked against its state: {} bytes read, {} block(s) compared\n",
                c.bytes_read, c.blocks
            ));
        }
    }
    out
}

/// `--diagnose`: nothing when nothing is missing; else why each packet was
/// refused, the rewind request written, and the commands.
fn diagnosis(r: &ImportReport, commands: &[String]) -> String {
    if !r.missing() {
        return String::new();
    }
    let mut out = String::new();
    for p in &r.packets {
        if let Verdict::Refused { message, .. } = &p.verdict {
            out.push_str(&format!("{}: refused: {message}\n", p.path.display()));
        }
    }
    if let Some(w) = &r.rewind_request {
        out.push_str(&format!(
            "rewind request written to {} for destination {}: {} block(s) in {} range(s)\n",
            w.path.display(),
            w.destination,
            w.blocks,
            w.ranges
        ));
    }
    if !commands.is_empty() {
        out.push_str("to fill what is missing, run at the source:\n");
        for c in commands {
            out.push_str(c);
            out.push('\n');
        }
    }
    out
}
