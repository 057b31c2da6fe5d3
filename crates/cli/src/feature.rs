//! `poolsync feature (-e|-d|-q FEATURE) [-v] [--json] <file>`:
//! `pmempool feature [<args>] <file>`.
//!
//! The names are pmempool 1.12.1's, matched exactly: `SINGLEHDR` (query
//! only), `CKSUM_2K`, `SHUTDOWN_STATE` and `CHECK_BAD_BLOCKS`. A query
//! prints `0` or `1` and no newline, as pmempool prints it. Enabling and
//! disabling print nothing, as pmempool does (`-v` adds one line), and a
//! feature that has the value already is left alone with exit status 0.
//! pmempool prints nothing on any failure; poolsync says what is wrong and
//! how to fix it on stderr, with the same exit status 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use poolsync_engine::feature::{self, FeatureOp, FeatureReport, FeatureState};
use poolsync_header::Feature;
use poolsync_pmem::AnyStorage;
use serde::Serialize;

use crate::diagnose::{explain, Waiting};
use crate::output::{emit, emit_json};

/// The feature names `pmempool feature` accepts, in its order.
fn feature_parser() -> impl TypedValueParser<Value = Feature> {
    PossibleValuesParser::new(Feature::ALL.map(Feature::name)).try_map(|name: String| {
        Feature::from_name(&name).ok_or_else(|| format!("unknown feature {name}"))
    })
}

/// Arguments of `poolsync feature` (pmempool syntax).
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("operation").required(true).multiple(false)))]
pub struct Args {
    /// Enable FEATURE in every pool header (CKSUM_2K, SHUTDOWN_STATE, CHECK_BAD_BLOCKS)
    #[arg(short = 'e', long = "enable", value_name = "FEATURE", group = "operation", value_parser = feature_parser())]
    enable: Option<Feature>,
    /// Disable FEATURE in every pool header (CKSUM_2K, SHUTDOWN_STATE, CHECK_BAD_BLOCKS)
    #[arg(short = 'd', long = "disable", value_name = "FEATURE", group = "operation", value_parser = feature_parser())]
    disable: Option<Feature>,
    /// Print 1 when FEATURE is enabled, 0 when it is not (SINGLEHDR, CKSUM_2K, SHUTDOWN_STATE, CHECK_BAD_BLOCKS)
    #[arg(short = 'q', long = "query", value_name = "FEATURE", group = "operation", value_parser = feature_parser())]
    query: Option<Feature>,
    /// Say what was done (pmempool prints nothing)
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
    /// Print a JSON document instead of text (see docs/json.md)
    #[arg(long = "json")]
    json: bool,
    /// The pool or pool set file
    #[arg(value_name = "FILE|POOLSET")]
    file: PathBuf,
}

impl Args {
    /// `--json` was given.
    pub fn json(&self) -> bool {
        self.json
    }

    /// The pool or pool set the command works on.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// The operation and its feature.
    fn operation(&self) -> Option<(FeatureOp, Feature)> {
        match (self.enable, self.disable, self.query) {
            (Some(f), _, _) => Some((FeatureOp::Enable, f)),
            (_, Some(f), _) => Some((FeatureOp::Disable, f)),
            (_, _, Some(f)) => Some((FeatureOp::Query, f)),
            _ => None,
        }
    }
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct Document<'a> {
    path: &'a Path,
    feature: Feature,
    operation: FeatureOp,
    /// `enabled`, `disabled`, `already_enabled`, `already_disabled` or
    /// `queried`.
    result: &'static str,
    /// The feature's value after the command.
    enabled: bool,
    before: FeatureState,
    changed: bool,
    exit_code: u8,
    report: &'a FeatureReport,
}

/// Runs the command; `Ok` carries the exit code.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some((op, feature)) = args.operation() else {
        // clap's group makes one of the three required.
        anyhow::bail!("one of -e, -d or -q is required");
    };
    let storage = AnyStorage::from_env().context("failed to open the pool")?;
    let result = match op {
        FeatureOp::Query => feature::query(&storage, &args.file, feature),
        FeatureOp::Enable => feature::set(&storage, &args.file, feature, true),
        FeatureOp::Disable => feature::set(&storage, &args.file, feature, false),
    };
    let report =
        result.map_err(|e| anyhow::anyhow!(explain(e, &args.file, Waiting::Unsupported)))?;
    let result = result_word(&report);
    if args.json {
        let doc = Document {
            path: &args.file,
            feature,
            operation: op,
            result,
            enabled: report.enabled,
            before: report.before,
            changed: report.changed,
            exit_code: 0,
            report: &report,
        };
        emit_json("feature", &doc)?;
        return Ok(ExitCode::SUCCESS);
    }
    match op {
        // pmempool: printf("%d", ret), without a newline.
        FeatureOp::Query => emit(if report.enabled { "1" } else { "0" })?,
        FeatureOp::Enable | FeatureOp::Disable if args.verbose => {
            emit(&format!("{}\n", verbose_line(&report)))?;
        }
        FeatureOp::Enable | FeatureOp::Disable => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// The `result` word of the JSON document.
fn result_word(r: &FeatureReport) -> &'static str {
    match (r.op, r.changed, r.enabled) {
        (FeatureOp::Query, _, _) => "queried",
        (_, true, true) => "enabled",
        (_, true, false) => "disabled",
        (_, false, true) => "already_enabled",
        (_, false, false) => "already_disabled",
    }
}

/// What `-v` prints after a change: `<file>: CKSUM_2K enabled (3
/// headers written)`, or that it was so already.
fn verbose_line(r: &FeatureReport) -> String {
    let value = if r.enabled { "enabled" } else { "disabled" };
    if !r.changed {
        return format!("{}: {} already {value}", r.path.display(), r.feature);
    }
    let written = r.headers.iter().filter(|h| h.written).count();
    let finished = if r.before == FeatureState::Interrupted {
        ", finishing an interrupted change"
    } else {
        ""
    };
    format!(
        "{}: {} {value} ({written} of {} pool header(s) written{finished})",
        r.path.display(),
        r.feature,
        r.headers.len()
    )
}
