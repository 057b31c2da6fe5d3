//! `poolsync packet FILE...`: describe update packets, like MultiSite's
//! `lspacket`, and verify every checksum (or MAC) of them.
//!
//! Output: per logical packet, its pool set UUID, lineage, timeline, base
//! and new epoch, its physical files (part k of n, sizes), compression,
//! format version, comment, creation time, destinations and source. A file that cannot be
//! read, a packet with a part missing, and a record that fails its check
//! are `error:` lines on stderr naming the file and the offset; the exit
//! code is then 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use poolsync_engine::packets::describe::{self, DescribeReport, PacketRow};
use poolsync_engine::packets::read_key;
use poolsync_pmem::AnyStorage;
use serde::Serialize;

use crate::output::{emit, emit_json, field, local_time};
use crate::settings::Settings;

/// Arguments of `poolsync packet`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Verify the MACs with the key derived from FILE (default: the
    /// key_file setting); signed packets need it
    #[arg(long = "key-file", value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Also print the timeline history and the content digest
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    /// Print a JSON document instead of text (see docs/json.md)
    #[arg(long = "json")]
    json: bool,
    /// Accepted for symmetry with the other commands
    #[arg(long = "progress", overrides_with = "no_progress")]
    progress: bool,
    /// Never show progress
    #[arg(long = "no-progress", overrides_with = "progress")]
    no_progress: bool,
    /// Wait up to SECONDS while another process (an export) holds a packet
    /// file (default: the wait_lock setting, 0)
    #[arg(long = "wait-lock", value_name = "SECONDS", value_parser = crate::settings::wait_lock_flag)]
    wait_lock: Option<String>,
    /// Packet files (every physical file of each packet)
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

impl Args {
    /// `--json` was given.
    pub fn json(&self) -> bool {
        self.json
    }

    /// The first file.
    pub fn path(&self) -> Option<&Path> {
        self.files.first().map(PathBuf::as_path)
    }
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct Document<'a> {
    result: &'static str,
    exit_code: u8,
    report: Option<&'a DescribeReport>,
    error: Option<String>,
}

/// Runs the command; `Ok` carries the exit code.
pub fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let storage = AnyStorage::from_env().context("failed to read packets")?;
    let wait = settings.wait_lock(args.wait_lock.as_deref())?;
    let key = match settings.key_file(args.key_file.as_deref())? {
        Some(path) => Some(read_key(&storage, &path).map_err(anyhow::Error::new)?),
        None => None,
    };
    let report = crate::wait::retry(wait, || {
        describe::describe(&storage, &args.files, key.as_ref())
    })
    .map_err(|e| {
        anyhow::anyhow!(
            "failed to read packets: {}",
            crate::output::error_text(&anyhow::Error::new(e))
        )
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            if args.json {
                let doc = Document {
                    result: "error",
                    exit_code: 1,
                    report: None,
                    error: Some(e.to_string()),
                };
                emit_json("packet", &doc)?;
            }
            return Err(e);
        }
    };
    let bad = !report.bad.is_empty();
    if args.json {
        let doc = Document {
            result: if bad { "bad" } else { "verified" },
            exit_code: u8::from(bad),
            report: Some(&report),
            error: report.bad.first().map(|b| b.message.clone()),
        };
        emit_json("packet", &doc)?;
    } else {
        emit(&text(&report, args.verbose))?;
        for b in &report.bad {
            eprintln!("error: {}", b.message);
        }
    }
    Ok(if bad {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The packets as text.
fn text(r: &DescribeReport, verbose: u8) -> String {
    let mut out = String::new();
    for p in &r.packets {
        packet_text(&mut out, p, verbose);
    }
    out
}

fn packet_text(out: &mut String, p: &PacketRow, verbose: u8) {
    let n = p.files.len();
    for f in &p.files {
        out.push_str(&format!(
            "{}: packet {}, part {} of {n}, {} bytes\n",
            f.path.display(),
            p.packet_id,
            f.part + 1,
            f.bytes
        ));
    }
    out.push_str(&format!("packet {}:\n", p.packet_id));
    let mut fields = String::new();
    field(&mut fields, "Pool set UUID", &p.poolset_uuid);
    field(&mut fields, "Lineage", &p.lineage);
    let timeline = match p.history.last() {
        Some(f) => format!(
            "{} (forked from timeline {} at epoch {})",
            p.timeline, f.parent, f.epoch
        ),
        None => p.timeline.to_string(),
    };
    field(&mut fields, "Timeline", timeline);
    field(
        &mut fields,
        "Epochs",
        format!("{} -> {}", p.base_epoch, p.new_epoch),
    );
    field(&mut fields, "Destinations", p.destinations.join(", "));
    field(&mut fields, "Source", &p.source);
    field(&mut fields, "Created", local_time(p.created));
    field(&mut fields, "Comment", &p.comment);
    field(&mut fields, "Compression", p.compression);
    field(
        &mut fields,
        "Format",
        format!("version {}", p.format_version),
    );
    field(
        &mut fields,
        "Signed",
        if p.signed {
            "yes (keyed MAC)"
        } else {
            "no (checksums)"
        },
    );
    if let Some((t, e)) = p.rewind {
        field(
            &mut fields,
            "Rewind",
            format!("honours the request of a destination at epoch {e} of timeline {t}"),
        );
    }
    field(
        &mut fields,
        "Range",
        format!(
            "[{:#x}, {:#x}) in blocks of {}",
            p.range.0, p.range.1, p.block_size
        ),
    );
    field(
        &mut fields,
        "Blocks",
        format!(
            "{} ({} with data, {} zero)",
            p.data_blocks + p.zero_blocks,
            p.data_blocks,
            p.zero_blocks
        ),
    );
    field(&mut fields, "Records", p.records);
    field(&mut fields, "Files", format!("{n}, {} bytes", p.bytes));
    if verbose >= 1 {
        field(&mut fields, "Content digest", &p.content_digest);
        for f in &p.history {
            field(
                &mut fields,
                "Fork",
                format!(
                    "timeline {} from {} at epoch {}",
                    f.timeline, f.parent, f.epoch
                ),
            );
        }
    }
    field(
        &mut fields,
        "Verified",
        if p.verified { "yes" } else { "NO" },
    );
    for line in fields.lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
}
