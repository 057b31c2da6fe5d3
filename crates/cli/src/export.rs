//! `poolsync export`: write one logical update packet of a pool's changes
//! for the named destinations, as MultiSite's `syncreplica -export` does.
//!
//! Output: one line naming the packet, its epochs and what it carries; `-v`
//! adds a line per physical file and the state file. A dry run (`-d`)
//! prints the base and new epoch, the blocks and bytes, and the files it
//! would write, and writes nothing. When every destination holds the
//! current epoch and nothing changed, it says so and writes no packet
//! (exit 0). Why a packet carries every block (no state yet, a damaged
//! state) is a `note:` on stderr. Failures are one `error:` line on
//! stderr and exit code 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use poolsync_engine::packets::export::{self, ExportOptions, ExportOutcome, ExportReport};
use poolsync_engine::packets::{read_key, IdSource};
use poolsync_pmem::AnyStorage;
use serde::Serialize;

use crate::diagnose::{explain, Waiting};
use crate::output::{emit, emit_json, size};
use crate::settings::Settings;

/// Arguments of `poolsync export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Ship every block changed after EPOCH, whatever the destination table says
    #[arg(long = "since", value_name = "EPOCH")]
    since: Option<u32>,
    /// The largest physical file (500k, 20m, 1.5g; default: the max_size setting, 2097151k)
    #[arg(long = "max-size", value_name = "SIZE", value_parser = crate::settings::max_size_flag)]
    max_size: Option<String>,
    /// Write nothing when the packet needs more than N files, and say how many it needs
    #[arg(long = "limit", value_name = "N")]
    limit: Option<u32>,
    /// Compress the records with zstd (the default) or lz4 (default: the compression setting)
    #[arg(long = "compress", value_name = "KIND", num_args = 0..=1, require_equals = true,
          default_missing_value = "zstd", value_parser = crate::settings::compress_flag)]
    compress: Option<String>,
    /// A comment stored in the packet
    #[arg(long = "comment", value_name = "TEXT")]
    comment: Option<String>,
    /// Ship also the blocks of this rewind request (written by `import --diagnose --rewind-request`)
    #[arg(long = "request", value_name = "FILE")]
    request: Option<PathBuf>,
    /// Sign the packet with a key derived from FILE (default: the key_file setting)
    #[arg(long = "key-file", value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Compute everything and print what would be written; write nothing, not even the state
    #[arg(short = 'd', long = "dry-run")]
    dry_run: bool,
    /// Also print every physical file and the state file
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
    /// The first physical file; further ones are FILE_2, FILE_3, ...
    #[arg(long = "out", value_name = "FILE", required = true)]
    out: PathBuf,
    /// The pool set (or single-file pool) to export from
    #[arg(value_name = "POOLSET")]
    poolset: PathBuf,
    /// The destinations the packet is for (the names their sites go by)
    #[arg(value_name = "DEST", required = true)]
    destinations: Vec<String>,
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
    result: &'static str,
    exit_code: u8,
    report: Option<&'a ExportReport>,
    error: Option<String>,
}

/// Runs the command; `Ok` carries the exit code.
pub fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let storage = AnyStorage::from_env().context("failed to export")?;
    let wait_lock = settings.wait_lock(args.wait_lock.as_deref())?;
    let key = match settings.key_file(args.key_file.as_deref())? {
        Some(path) => Some(read_key(&storage, &path).map_err(|e| fail(&args, e, wait_lock))?),
        None => None,
    };
    let options = ExportOptions {
        destinations: args.destinations.clone(),
        out: args.out.clone(),
        since: args.since,
        max_size: settings.max_size(args.max_size.as_deref())?,
        limit: args.limit,
        compression: settings.compression(args.compress.as_deref())?,
        comment: args.comment.clone().unwrap_or_default(),
        dry_run: args.dry_run,
        key,
        request: args.request.clone(),
        wait_lock,
        ids: IdSource::Random,
        threads: settings.jobs(None)?,
        ..ExportOptions::default()
    };
    let progress =
        crate::progress::reporter("export", args.dry_run || args.no_progress, args.progress);
    let outcome = export::export(&storage, &args.poolset, &options, progress.as_ref());
    progress.finish();
    let report = match outcome {
        Ok(r) => r,
        Err(e) => {
            let error = fail(&args, e, wait_lock);
            if args.json {
                let doc = Document {
                    path: &args.poolset,
                    dry_run: args.dry_run,
                    result: "error",
                    exit_code: 1,
                    report: None,
                    error: Some(error.to_string()),
                };
                emit_json("export", &doc)?;
            }
            return Err(error);
        }
    };
    if let Some(note) = &report.state_note {
        eprintln!("note: {}: {}", note.path.display(), note.reason);
    }
    if args.json {
        let doc = Document {
            path: &args.poolset,
            dry_run: args.dry_run,
            result: match report.outcome {
                ExportOutcome::Written => "written",
                ExportOutcome::WouldWrite => "would_write",
                ExportOutcome::UpToDate => "up_to_date",
                ExportOutcome::Completed => "completed",
            },
            exit_code: 0,
            report: Some(&report),
            error: None,
        };
        emit_json("export", &doc)?;
        return Ok(ExitCode::SUCCESS);
    }
    emit(&text(&args, &report))?;
    Ok(ExitCode::SUCCESS)
}

/// The one-line error of a failed export.
fn fail(
    args: &Args,
    e: poolsync_engine::Error,
    wait: Option<std::time::Duration>,
) -> anyhow::Error {
    anyhow::anyhow!(
        "failed to export: {}",
        explain(e, &args.poolset, Waiting::Supported(wait))
    )
}

/// The destinations and what each was believed to hold.
fn destinations_text(report: &ExportReport) -> String {
    report
        .destinations
        .iter()
        .map(|d| match d.believed {
            None => format!("{} (never exported to: every block)", d.name),
            Some((t, e)) => format!("{} (believed to hold epoch {e} of timeline {t})", d.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report as text.
fn text(args: &Args, r: &ExportReport) -> String {
    let mut out = String::new();
    let names = args.destinations.join(", ");
    match r.outcome {
        ExportOutcome::UpToDate => {
            out.push_str(&format!(
                "{}: {names} already hold{} epoch {} and nothing changed: replicas are synchronized, no packet written\n",
                args.poolset.display(),
                if args.destinations.len() == 1 { "s" } else { "" },
                r.base_epoch
            ));
            return out;
        }
        ExportOutcome::Completed => {
            out.push_str(&format!(
                "{}: the packet of an interrupted export (epoch {} -> {}) is complete; its files are in place\n",
                args.out.display(),
                r.base_epoch,
                r.new_epoch
            ));
            return out;
        }
        ExportOutcome::WouldWrite => {
            out.push_str(&format!(
                "export from {} (dry run: nothing is written, not even the state)\n",
                args.poolset.display()
            ));
            out.push_str(&format!(
                "epochs: base {}, new {} (timeline {}, lineage {})\n",
                r.base_epoch, r.new_epoch, r.timeline, r.lineage
            ));
            out.push_str(&format!("destinations: {}\n", destinations_text(r)));
        }
        ExportOutcome::Written => {}
    }
    let Some(p) = &r.packet else {
        return out;
    };
    let blocks = format!(
        "{} block(s) compared, {} changed, {} shipped: {} bytes of data in {} block(s), {} zero block(s) without bytes",
        r.blocks,
        r.changed_blocks,
        r.shipped_blocks,
        p.data_bytes,
        p.data_blocks,
        p.zero_blocks
    );
    if r.outcome == ExportOutcome::WouldWrite {
        out.push_str(&blocks);
        out.push('\n');
        out.push_str(&format!(
            "would write {} file(s), {} bytes ({}):\n",
            p.files.len(),
            p.packet_bytes,
            r.compression
        ));
        for f in &p.files {
            out.push_str(&format!("  {} ({} bytes)\n", f.path.display(), f.bytes));
        }
        return out;
    }
    out.push_str(&format!(
        "{}: packet of epoch {} -> {} for {names}: {} block(s) shipped ({} of data, {} zero), {} file(s), {}\n",
        args.out.display(),
        r.base_epoch,
        r.new_epoch,
        r.shipped_blocks,
        size(p.data_bytes, true),
        p.zero_blocks,
        p.files.len(),
        size(p.packet_bytes, true)
    ));
    if args.verbose >= 1 {
        out.push_str(&format!("destinations: {}\n", destinations_text(r)));
        out.push_str(&blocks);
        out.push('\n');
        for f in &p.files {
            out.push_str(&format!("  {} ({} bytes)\n", f.path.display(), f.bytes));
        }
        if let Some(state) = &r.state_file {
            out.push_str(&format!(
                "state: {} (epoch {})\n",
                state.display(),
                r.new_epoch
            ));
        }
        if let Some(req) = &r.request {
            out.push_str(&format!(
                "rewind request {} of {} (timeline {}, epoch {}): {} block(s) shipped again\n",
                req.path.display(),
                req.destination,
                req.position.0,
                req.position.1,
                req.blocks
            ));
        }
    }
    out
}
