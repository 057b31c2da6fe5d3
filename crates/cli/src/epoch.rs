//! `poolsync epoch`: show a site's replication state, like MultiSite's
//! `lsepoch` (lineage, timeline and its forks, the epoch held, the role,
//! and for each destination the epoch it is believed to hold and when it
//! was exported to); `--set DEST=EPOCH` rolls an estimate back after a
//! lost packet, like `chepoch`; `--promote` makes a follower the writer of
//! a new timeline after a failover.
//!
//! Output: what was changed, then the state (`-v` adds the packets
//! applied). Failures are one `error:` line on stderr and exit code 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use poolsync_engine::packets::epoch::{self, EpochOptions, EpochReport};
use poolsync_pmem::AnyStorage;
use serde::Serialize;

use crate::diagnose::{explain, Waiting};
use crate::output::{emit, emit_json, field, local_time};
use crate::settings::Settings;

/// Arguments of `poolsync epoch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Believe that destination DEST holds EPOCH (after a lost packet: its
    /// next packet starts there); repeatable
    #[arg(long = "set", value_name = "DEST=EPOCH", value_parser = parse_set)]
    set: Vec<(String, u32)>,
    /// Make this follower the writer: start a new timeline that forks the
    /// lineage at the epoch it holds
    #[arg(long = "promote")]
    promote: bool,
    /// Also print the packets applied
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    /// Print a JSON document instead of text (see docs/json.md)
    #[arg(long = "json")]
    json: bool,
    /// Accepted for symmetry with the other commands (epoch is quick)
    #[arg(long = "progress", overrides_with = "no_progress")]
    progress: bool,
    /// Never show progress
    #[arg(long = "no-progress", overrides_with = "progress")]
    no_progress: bool,
    /// With --set or --promote: wait up to SECONDS while another process has
    /// the pool open (default: the wait_lock setting, 0)
    #[arg(long = "wait-lock", value_name = "SECONDS", value_parser = crate::settings::wait_lock_flag)]
    wait_lock: Option<String>,
    /// The pool set
    #[arg(value_name = "POOLSET")]
    poolset: PathBuf,
}

/// `NAME=EPOCH`.
fn parse_set(text: &str) -> Result<(String, u32), String> {
    let (name, epoch) = text
        .rsplit_once('=')
        .ok_or_else(|| "expected DEST=EPOCH".to_string())?;
    let epoch = epoch
        .parse::<u32>()
        .map_err(|_| format!("{epoch:?} is not an epoch (a whole number)"))?;
    if name.is_empty() {
        return Err("expected DEST=EPOCH, the destination name is empty".to_string());
    }
    Ok((name.to_string(), epoch))
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
    result: &'static str,
    exit_code: u8,
    report: Option<&'a EpochReport>,
    error: Option<String>,
}

/// Runs the command; `Ok` carries the exit code.
pub fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let storage = AnyStorage::from_env().context("failed to read the epoch state")?;
    let wait_lock = settings.wait_lock(args.wait_lock.as_deref())?;
    let options = EpochOptions {
        set: args.set.clone(),
        promote: args.promote,
        wait_lock,
    };
    let report = match epoch::epoch(&storage, &args.poolset, &options) {
        Ok(r) => r,
        Err(e) => {
            let verb = if args.promote || !args.set.is_empty() {
                "change"
            } else {
                "read"
            };
            let message = format!(
                "failed to {verb} the epoch state: {}",
                explain(e, &args.poolset, Waiting::Supported(wait_lock))
            );
            if args.json {
                let doc = Document {
                    path: &args.poolset,
                    result: "error",
                    exit_code: 1,
                    report: None,
                    error: Some(message.clone()),
                };
                emit_json("epoch", &doc)?;
            }
            return Err(anyhow::anyhow!(message));
        }
    };
    if args.json {
        let doc = Document {
            path: &args.poolset,
            result: if report.changes.is_empty() {
                "shown"
            } else {
                "changed"
            },
            exit_code: 0,
            report: Some(&report),
            error: None,
        };
        emit_json("epoch", &doc)?;
        return Ok(ExitCode::SUCCESS);
    }
    emit(&text(&report, args.verbose))?;
    Ok(ExitCode::SUCCESS)
}

/// The state as text.
pub fn text(r: &EpochReport, verbose: u8) -> String {
    let mut out = String::new();
    for c in &r.changes {
        out.push_str(c);
        out.push('\n');
    }
    field(&mut out, "Pool set", r.set.display());
    field(&mut out, "State file", r.state_file.display());
    field(&mut out, "Pool set UUID", &r.poolset_uuid);
    field(&mut out, "Lineage", &r.lineage);
    let timeline = match r.history.last() {
        Some(f) => format!(
            "{} (forked from timeline {} at epoch {})",
            r.timeline, f.parent, f.epoch
        ),
        None => r.timeline.to_string(),
    };
    field(&mut out, "Timeline", timeline);
    if r.history.len() > 1 {
        let forks: Vec<String> = r
            .history
            .iter()
            .map(|f| format!("{}<-{}@{}", f.timeline, f.parent, f.epoch))
            .collect();
        field(&mut out, "History", forks.join(" "));
    }
    field(&mut out, "Epoch", r.epoch);
    let role = if r.role == "writer" {
        "writer (exports make new epochs)"
    } else {
        "follower (imports epochs; exports forward them)"
    };
    field(&mut out, "Role", role);
    if verbose >= 1 {
        field(&mut out, "Generation", r.generation);
        field(&mut out, "Blocks", r.blocks);
    }
    if r.destinations.is_empty() {
        out.push_str("Destinations: none\n");
    } else {
        out.push_str("Destinations:\n");
        let width = r
            .destinations
            .iter()
            .map(|d| d.name.len())
            .max()
            .unwrap_or(0);
        for d in &r.destinations {
            let when = if d.last_export == 0 {
                "never exported to".to_string()
            } else {
                format!("exported {}", local_time(d.last_export))
            };
            out.push_str(&format!(
                "  {:<width$}  epoch {} of timeline {}, {when}\n",
                d.name, d.epoch, d.timeline
            ));
        }
    }
    if verbose >= 1 && !r.applied.is_empty() {
        out.push_str("Packets applied:\n");
        for a in &r.applied {
            out.push_str(&format!(
                "  {}  epoch {} -> {} of timeline {}, applied {}\n",
                a.packet_id,
                a.base_epoch,
                a.new_epoch,
                a.timeline,
                local_time(a.applied_at)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_name_a_destination_and_an_epoch() {
        assert_eq!(parse_set("site-b=7"), Ok(("site-b".to_string(), 7)));
        assert_eq!(parse_set("a=b=3"), Ok(("a=b".to_string(), 3)));
        assert!(parse_set("b").is_err());
        assert!(parse_set("=3").is_err());
        assert!(parse_set("b=-1").is_err());
    }
}
