//! `poolsync create`: `pmempool create [<args>] obj <file>` for obj pools
//! and obj pool sets.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use poolsync_engine::create::{self, CreateOptions};
use poolsync_engine::remote::create::create_all;
use poolsync_engine::remote::sync::RemoteOutcome;
use poolsync_engine::sync::{NoProgress, SyncOptions};
use poolsync_pmem::{AnyStorage, PersistMode, Storage};
use serde::Serialize;

use crate::diagnose::{explain, Waiting};
use crate::output::{emit_json, outln};

/// Arguments of `poolsync create` (pmempool syntax: options may come before
/// or after the operands).
#[derive(Debug, clap::Args)]
#[command(override_usage = "poolsync create [OPTIONS] obj <FILE>")]
pub struct Args {
    /// Size of a single-file pool, e.g. 16M, 1G, 20MiB, 20MB (not with a pool set)
    #[arg(short = 's', long = "size", value_name = "SIZE")]
    size: Option<String>,
    /// Use all free space of the file system (not supported yet)
    #[arg(short = 'M', long = "max-size")]
    max_size: bool,
    /// Permissions of the new files, in octal (default 0664; the umask is ignored)
    #[arg(short = 'm', long = "mode", value_name = "OCTAL")]
    mode: Option<String>,
    /// Take the type, size, mode and layout from an existing pool (not supported yet)
    #[arg(short = 'i', long = "inherit", value_name = "FILE")]
    inherit: Option<PathBuf>,
    /// Clear bad blocks in existing files (not supported yet)
    #[arg(short = 'b', long = "clear-bad-blocks")]
    clear_bad_blocks: bool,
    /// Remove the pool, or every part of the pool set, first
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// Print what is being created
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    /// blk pools only (accepted as pmempool accepts it, and refused for obj)
    #[arg(short = 'w', long = "write-layout", hide = true)]
    write_layout: bool,
    /// Layout name stored in the pool descriptor (shorter than 1024 bytes)
    #[arg(short = 'l', long = "layout", value_name = "NAME")]
    layout: Option<String>,
    /// Print a JSON document of what was created instead of text (see docs/json.md)
    #[arg(long = "json")]
    json: bool,
    #[command(flatten)]
    remote: crate::transport::RemoteArgs,
    /// The pool type, obj, and the pool file or pool set file (pmempool's
    /// block size operand of blk pools is refused as pmempool refuses it
    /// for obj)
    #[arg(value_name = "obj FILE", num_args = 1..=3, required = true)]
    operands: Vec<OsString>,
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct Document<'a> {
    path: &'a Path,
    result: &'static str,
    exit_code: u8,
    /// What was created (`null` on error).
    created: Option<&'a create::Created>,
    /// The one-line reason (`null` on success).
    error: Option<String>,
    /// Each remote replica's seeding (absent without remote replicas).
    #[serde(skip_serializing_if = "<[RemoteOutcome]>::is_empty")]
    remotes: &'a [RemoteOutcome],
}

impl Args {
    /// `--json` was given.
    pub fn json(&self) -> bool {
        self.json
    }

    /// The pool or pool set file: the last operand.
    pub fn path(&self) -> PathBuf {
        self.operands.last().map(PathBuf::from).unwrap_or_default()
    }
}

/// Runs the command; `Ok` carries the exit code.
pub fn run(args: Args, settings: &crate::settings::Settings) -> anyhow::Result<ExitCode> {
    let (kind, bsize, file) = match args.operands.as_slice() {
        [kind, bsize, file] => (Some(kind), Some(bsize), file),
        [kind, file] => (Some(kind), None, file),
        [file] => (None, None, file),
        _ => anyhow::bail!("usage: poolsync create [<args>] obj <file>"),
    };
    let file = PathBuf::from(file);
    if args.inherit.is_some() {
        anyhow::bail!(
            "-i|--inherit is not supported yet: give the pool type (obj) and the options"
        );
    }
    let Some(kind) = kind else {
        anyhow::bail!(
            "missing pool type: poolsync create [<args>] obj {}",
            file.display()
        );
    };
    let kind = kind.to_string_lossy();
    match kind.as_ref() {
        "obj" => {}
        "blk" | "log" => {
            anyhow::bail!(
                "'{kind}' -- {kind} pools are not supported: poolsync creates obj pools only"
            )
        }
        _ => anyhow::bail!("'{kind}' -- unknown pool type"),
    }
    if bsize.is_some() {
        anyhow::bail!("invalid option specified for obj pool type -- block size");
    }
    if args.write_layout {
        anyhow::bail!("'--write-layout|-w' -- invalid option specified for pool type 'obj'");
    }

    let size = match &args.size {
        Some(text) => match poolsync_poolset::parse_size(text) {
            Some(size) if size > 0 => Some(size),
            _ => anyhow::bail!(
                "invalid size value specified '{text}'; {}",
                poolsync_poolset::SIZE_UNITS_HELP
            ),
        },
        None => None,
    };
    let mode = match &args.mode {
        Some(text) => parse_mode(text)
            .ok_or_else(|| anyhow::anyhow!("invalid mode value specified '{text}'"))?,
        None => create::DEFAULT_MODE,
    };
    if args.max_size {
        if size.is_some() {
            anyhow::bail!("-M|--max-size option cannot be used with -s|--size option");
        }
        anyhow::bail!("-M|--max-size is not supported yet: give the size with -s");
    }
    if args.clear_bad_blocks {
        anyhow::bail!("-b|--clear-bad-blocks is not supported yet");
    }
    let layout = args.layout.unwrap_or_default();

    // The page cache for files; a Device DAX is mapped (it has no page cache).
    let storage = AnyStorage::new(PersistMode::PageCache);
    // With --json, stdout carries the document only.
    if args.verbose > 0 && !args.json {
        let exists = storage.stat(&file).map(|m| m.is_some()).unwrap_or(false);
        let shown = match size {
            Some(size) => size,
            None if !exists => {
                outln!("No size option passed - picking minimum pool size.");
                poolsync_poolset::OBJ_MIN_POOL
            }
            // pmempool shows 0 when the size comes from an existing file or a pool set.
            None => 0,
        };
        outln!("Creating pool: {}", file.display());
        outln!("\ttype  : obj");
        outln!("\tsize  : {}", size_str(shown));
        outln!("\tmode  : 0{mode:o}");
        outln!("\tlayout: '{layout}'");
        if let (Some(text), Some(size)) = (&args.size, size) {
            if let Some(note) = decimal_size_note(text, size) {
                eprintln!("note: {note}");
            }
        }
    }

    let options = CreateOptions {
        layout,
        mode,
        size,
        force: args.force,
    };
    let connector = args.remote.connector(settings)?;
    let seeding = SyncOptions {
        threads: settings.jobs(None)?,
        ..SyncOptions::default()
    };
    match create_all(&storage, &file, &options, &connector, &seeding, &NoProgress) {
        Ok(all) => {
            interrupted_notes(&all.local);
            let failed = all.remotes.iter().find_map(|r| r.error.as_deref());
            let message = failed.map(|e| {
                format!(
                    "{e}; the local replicas are created: `poolsync sync {}` seeds the remote replica when it can be reached",
                    crate::diagnose::shell_quote(&file)
                )
            });
            crate::remotes::warn_unrecorded(&all.remotes);
            if args.json {
                let doc = Document {
                    path: &file,
                    result: if message.is_some() {
                        "error"
                    } else {
                        "created"
                    },
                    exit_code: u8::from(message.is_some()),
                    created: Some(&all.local),
                    error: message.clone(),
                    remotes: &all.remotes,
                };
                emit_json("create", &doc)?;
            } else if args.verbose > 0 {
                for r in all.remotes.iter().filter(|r| r.error.is_none()) {
                    outln!("{}", crate::remotes::done_line(r));
                }
            }
            match message {
                Some(m) => {
                    eprintln!("error: {m}");
                    Ok(ExitCode::from(1))
                }
                None => Ok(ExitCode::SUCCESS),
            }
        }
        Err(e) => {
            // pmempool rejects arguments before it tries to create anything.
            let before_creation = e.is_refused_argument();
            let message = explain(e, &file, Waiting::Unsupported);
            eprintln!("error: {message}");
            if !before_creation {
                eprintln!("error: creating pool file failed");
            }
            if args.json {
                let doc = Document {
                    path: &file,
                    result: "error",
                    exit_code: 1,
                    created: None,
                    error: Some(message),
                    remotes: &[],
                };
                emit_json("create", &doc)?;
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// Notes on stderr of what an interrupted create had left (pmempool's
/// stdout stays as it was).
fn interrupted_notes(created: &create::Created) {
    let list = |paths: &[PathBuf]| {
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(c) = &created.cleared {
        let mut what = Vec::new();
        if !c.removed.is_empty() {
            what.push(format!("removed {}", list(&c.removed)));
        }
        if !c.zeroed.is_empty() {
            what.push(format!("zeroed the header page of {}", list(&c.zeroed)));
        }
        if what.is_empty() {
            what.push("nothing of it was there".to_string());
        }
        eprintln!(
            "note: {} recorded a create that was interrupted: {} before creating the pool again",
            c.journal.display(),
            what.join("; ")
        );
    }
    if let Some(journal) = &created.finished {
        eprintln!(
            "note: {} recorded a create that was interrupted after it had written the whole pool: finished it (the files have their mode, the journal is gone)",
            journal.display()
        );
    }
}

/// For a size given in powers of 1000 (`16MB`, as pmempool reads it):
/// that it is not the power of 1024 the user may have meant.
fn decimal_size_note(text: &str, size: u64) -> Option<String> {
    const DECIMAL: [(&str, &str); 5] = [
        ("kB", "K"),
        ("MB", "M"),
        ("GB", "G"),
        ("TB", "T"),
        ("PB", "P"),
    ];
    let trimmed = text.trim();
    let (unit, binary) = DECIMAL.iter().find(|(unit, _)| trimmed.ends_with(unit))?;
    let number = trimmed.strip_suffix(unit)?.trim();
    let binary_size = poolsync_poolset::parse_size(&format!("{number}{binary}"))?;
    Some(format!(
        "{trimmed} is {size} bytes ({unit} counts in powers of 1000); \
         {number}{binary} or {number}{binary}iB is {binary_size} bytes"
    ))
}

/// pmempool's mode syntax: leading zeros, then at most three octal digits.
fn parse_mode(text: &str) -> Option<u32> {
    let digits = text.trim_start_matches('0');
    if digits.len() > 3 {
        return None;
    }
    digits
        .chars()
        .try_fold(0u32, |mode, c| Some(mode << 3 | c.to_digit(8)?))
}

/// A size as pmempool's verbose output shows it: `8.0M [8388608]`.
fn size_str(size: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", ""];
    let mut unit = None;
    let mut scaled = size as f64;
    let mut rest = size;
    while rest >= 1024 && unit.is_none_or(|u| u < UNITS.len()) {
        rest /= 1024;
        scaled /= 1024.0;
        unit = Some(unit.map_or(0, |u| u + 1));
    }
    match unit.and_then(|u| UNITS.get(u)) {
        Some(letter) => format!("{scaled:.1}{letter} [{size}]"),
        None => size.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_as_pmempool_parses_them() {
        assert_eq!(parse_mode("664"), Some(0o664));
        assert_eq!(parse_mode("0664"), Some(0o664));
        assert_eq!(parse_mode("000640"), Some(0o640));
        assert_eq!(parse_mode("0"), Some(0));
        assert_eq!(parse_mode("7"), Some(7));
        assert_eq!(parse_mode("8"), None);
        assert_eq!(parse_mode("1777"), None);
        assert_eq!(parse_mode("0x1ff"), None);
        assert_eq!(parse_mode("abc"), None);
    }

    #[test]
    fn decimal_units_are_pointed_out() {
        assert_eq!(
            decimal_size_note("16MB", 16_000_000).as_deref(),
            Some("16MB is 16000000 bytes (MB counts in powers of 1000); 16M or 16MiB is 16777216 bytes")
        );
        assert_eq!(
            decimal_size_note("8kB", 8000).as_deref(),
            Some("8kB is 8000 bytes (kB counts in powers of 1000); 8K or 8KiB is 8192 bytes")
        );
        assert_eq!(decimal_size_note("16M", 16 << 20), None);
        assert_eq!(decimal_size_note("16MiB", 16 << 20), None);
    }

    #[test]
    fn sizes_print_as_pmempool_prints_them() {
        assert_eq!(size_str(0), "0");
        assert_eq!(size_str(1023), "1023");
        assert_eq!(size_str(8 << 20), "8.0M [8388608]");
        assert_eq!(size_str(8_390_000), "8.0M [8390000]");
        assert_eq!(size_str(1_074_790_400), "1.0G [1074790400]");
        assert_eq!(size_str(16 << 20), "16.0M [16777216]");
    }
}
