//! `poolsync sync`: `pmempool sync [-b] [-d] [-v] <poolset>` with
//! pmempool's output and exit codes, plus `--source`, `--json`,
//! `--progress`/`--no-progress` and `--wait-lock`.
//!
//! Output: with `-v`, `<poolset>: synchronized` on success (also for a dry
//! run and an already healthy set), as pmempool prints it. A dry run (`-d`)
//! prints its plan first; `-vv` adds a summary of what a real run did, and
//! `-vvv` its plan. Failures are one line on stderr, `error: failed to
//! synchronize: <message>`, and exit code 1. Progress (bytes, rate, time
//! left) goes to stderr and is on by default when stderr is a terminal.
//!
//! `--verify` (with `--force-source`) adds heap-aware verification and
//! repair of the live data (`poolsync_engine::verify::sync_verify`) and
//! prints one `verify: ...` result line with the ranges and bytes repaired
//! per replica.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use poolsync_engine::remote::sync::{sync_all, update_remotes_at, RemoteOutcome, RestoreOutcome};
use poolsync_engine::sync::plan::{DataStep, HeaderAction, Plan, Role, Step};
use poolsync_engine::sync::{self, SyncOptions, SyncReport};
use poolsync_engine::undo::UndoSummary;
use poolsync_engine::verify::{self, Findings, RepairReport, VerifyOptions, VerifyOutcome};
use poolsync_pmem::AnyStorage;
use serde::Serialize;

use crate::diagnose::{explain, Waiting};
use crate::output::{emit, emit_json};
use crate::settings::Settings;

/// Arguments of `poolsync sync` (pmempool syntax plus poolsync's options).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Fix bad blocks: repair the ranges that bad block recovery files list
    #[arg(short = 'b', long = "bad-blocks")]
    bad_blocks: bool,
    /// Do not change anything, only show what would be done
    #[arg(short = 'd', long = "dry-run")]
    dry_run: bool,
    /// Increase verbosity (-v prints the result, -vv also what was done, -vvv also the plan)
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    /// Copy from replica N (which must be healthy) instead of the first healthy replica
    #[arg(long = "source", value_name = "N")]
    source: Option<usize>,
    /// Print a JSON document (plan and result) instead of text (see docs/json.md)
    #[arg(long = "json")]
    json: bool,
    /// Show progress on stderr (default when stderr is a terminal)
    #[arg(long = "progress", overrides_with = "no_progress")]
    progress: bool,
    /// Never show progress
    #[arg(long = "no-progress", overrides_with = "progress")]
    no_progress: bool,
    /// Also compare the live data of every replica with the source and repair what differs
    #[arg(long = "verify")]
    verify: bool,
    /// With --verify: repair from the source even where the other replicas
    /// outvote it, or where nothing tells which replica is right
    #[arg(long = "force-source", requires = "verify")]
    force_source: bool,
    /// Do not save the bytes a repair overwrites to an undo file
    /// (<POOLSET>.poolsync-undo-<time>, which `poolsync undo` puts back)
    #[arg(long = "no-undo")]
    no_undo: bool,
    /// Wait up to SECONDS while another process has the pool open (default: the
    /// wait_lock setting, 0)
    #[arg(long = "wait-lock", value_name = "SECONDS", value_parser = crate::settings::wait_lock_flag)]
    wait_lock: Option<String>,
    /// Worker threads that copy and compare (default: the jobs setting, else
    /// the machine's parallelism, at most 8)
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = crate::settings::jobs_flag)]
    jobs: Option<String>,
    #[command(flatten)]
    remote: crate::transport::RemoteArgs,
    /// The pool set file
    #[arg(value_name = "POOLSET")]
    poolset: PathBuf,
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct Document<'a> {
    path: &'a Path,
    dry_run: bool,
    result: &'static str,
    exit_code: u8,
    plan: Option<&'a Plan>,
    report: Option<&'a SyncReport>,
    error: Option<String>,
    /// Worker threads used to copy and compare (`--jobs`, the `jobs` setting).
    jobs: usize,
    /// `--verify` only: what verification found and repaired.
    #[serde(skip_serializing_if = "Option::is_none")]
    verify: Option<VerifyDoc<'a>>,
    /// Each remote replica's update (absent without remote replicas).
    #[serde(skip_serializing_if = "<[RemoteOutcome]>::is_empty")]
    remotes: &'a [RemoteOutcome],
    /// The local replicas restored from a remote replica (absent unless no
    /// local replica was healthy).
    #[serde(skip_serializing_if = "Option::is_none")]
    restored: Option<&'a RestoreOutcome>,
}

/// The `verify` field of the `--json` document.
#[derive(Debug, Serialize)]
struct VerifyDoc<'a> {
    findings: Option<&'a Findings>,
    repair: Option<&'a RepairReport>,
    /// Why `sync --verify` stopped before writing anything, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<Refusal>,
}

/// A refusal of `sync --verify`, for `--json` readers.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Refusal {
    /// Nothing tells which of two replicas is right.
    Tie {
        replicas: [usize; 2],
        offset: u64,
        end: u64,
        what: String,
    },
    /// The source is outvoted by the other replicas.
    Outvoted {
        replica: usize,
        majority: Vec<usize>,
        offset: u64,
        end: u64,
        what: String,
    },
    /// The source's heap (or descriptor) fails the structural checks.
    SourceHeap { replica: usize },
}

impl Refusal {
    /// The refusal an engine error is, if it is one.
    fn of(e: &poolsync_engine::Error) -> Option<Refusal> {
        use poolsync_engine::Error as E;
        Some(match e {
            E::Tie {
                first,
                second,
                offset,
                end,
                what,
                ..
            } => Refusal::Tie {
                replicas: [*first, *second],
                offset: *offset,
                end: *end,
                what: what.clone(),
            },
            E::Outvoted {
                replica,
                majority,
                offset,
                end,
                what,
                ..
            } => Refusal::Outvoted {
                replica: *replica,
                majority: majority.clone(),
                offset: *offset,
                end: *end,
                what: what.clone(),
            },
            E::SourceHeap { replica, .. } | E::SourceDescriptor { replica, .. } => {
                Refusal::SourceHeap { replica: *replica }
            }
            _ => return None,
        })
    }
}

impl Args {
    /// `--json` was given.
    pub fn json(&self) -> bool {
        self.json
    }

    /// The file the command works on.
    pub fn path(&self) -> &Path {
        &self.poolset
    }
}

/// Runs the command; `Ok` carries the exit code.
pub fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let options = SyncOptions {
        dry_run: args.dry_run,
        bad_blocks: args.bad_blocks,
        source: args.source,
        wait_lock: settings.wait_lock(args.wait_lock.as_deref())?,
        threads: settings.jobs(args.jobs.as_deref())?,
        undo: !args.no_undo,
        // --verify compares every block of the remote replicas too.
        remote_digests: args.verify,
        ..SyncOptions::default()
    };
    let storage = AnyStorage::from_env().context("failed to synchronize")?;
    let connector = args.remote.connector(settings)?;
    let progress =
        crate::progress::reporter("sync", args.dry_run || args.no_progress, args.progress);
    if args.verify {
        let verify_options = VerifyOptions {
            source: args.source,
            force_source: args.force_source,
            compare: poolsync_engine::compare::CompareOptions {
                stride: options.stride,
                threads: options.threads,
            },
        };
        let outcome = verify::sync_verify(
            &storage,
            &args.poolset,
            &options,
            &verify_options,
            progress.as_ref(),
        );
        // The remote replicas follow the verified local source.
        let remotes = match &outcome {
            Ok(_) => update_remotes_at(
                &storage,
                &args.poolset,
                &options,
                &connector,
                progress.as_ref(),
            ),
            Err(_) => Ok(Vec::new()),
        };
        progress.finish();
        return finish_verify(&args, &options, outcome, remotes);
    }
    let outcome = sync_all(
        &storage,
        &args.poolset,
        &options,
        &connector,
        progress.as_ref(),
    );
    progress.finish();
    let (local, remotes, restored) = match outcome {
        Ok(all) => (all.local, all.remotes, all.restored),
        Err(e) => {
            let message = failure(e, &args, &options);
            if args.json {
                emit_document(
                    &args,
                    options.threads,
                    Err(message.clone()),
                    None,
                    &[],
                    None,
                )?;
            }
            transform_hint(&storage, &args.poolset);
            return Err(anyhow::anyhow!(message));
        }
    };
    let remote_failure = remote_failure(&remotes);
    if args.json {
        let done = match &remote_failure {
            None => Ok((
                local.as_ref().map(|l| &l.plan),
                local.as_ref().and_then(|l| l.report.as_ref()),
            )),
            Some(message) => Err(message.clone()),
        };
        emit_document(
            &args,
            options.threads,
            done,
            None,
            &remotes,
            restored.as_ref(),
        )?;
        return match remote_failure {
            None => Ok(ExitCode::SUCCESS),
            Some(message) => Err(anyhow::anyhow!(message)),
        };
    }
    let mut text = String::new();
    if let Some(r) = &restored {
        text.push_str(&restore_text(r, args.dry_run, args.verbose));
    }
    let Some(outcome) = local else {
        emit(&text)?;
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(report) = &outcome.report {
        // A source that could not be read is worth knowing about at once.
        for line in report_text(report).lines().skip(1) {
            eprintln!("warning: {line}");
        }
    }
    if args.dry_run || args.verbose >= 3 {
        text.push_str(&plan_text(&outcome.plan, args.dry_run, false));
        if !outcome.plan.is_noop() {
            text.extend(undo_plan_line(&outcome.plan, args.no_undo));
        }
    }
    if let (Some(report), true) = (&outcome.report, args.verbose >= 2) {
        if let Some(line) = report_text(report).lines().next() {
            text.push_str(line);
            text.push('\n');
        }
    }
    if let (Some(undo), true) = (
        outcome.report.as_ref().and_then(|r| r.undo.as_ref()),
        args.verbose >= 1,
    ) {
        text.push_str(&undo_saved_line(undo));
        text.push('\n');
    }
    text.push_str(&remotes_text(&remotes, args.dry_run, args.verbose));
    if let Some(message) = remote_failure {
        emit(&text)?;
        return Err(anyhow::anyhow!(message));
    }
    if args.verbose >= 1 {
        text.push_str(&format!("{}: synchronized\n", args.poolset.display()));
    }
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// What restoring the local replicas from a remote replica did, or (a dry
/// run) will do. Always said: the local replicas were all broken.
fn restore_text(r: &RestoreOutcome, dry_run: bool, verbose: u8) -> String {
    let p = &r.plan;
    let mut text = String::new();
    if dry_run || verbose >= 3 {
        text.push_str(&format!(
            "restore plan for the local replicas from remote replica {}{} (no local replica is healthy)\n",
            p.remote,
            if dry_run { " (dry run: nothing is changed)" } else { "" }
        ));
        text.push_str(&format!(
            "source: remote replica {}, pool size {} bytes, pool set uuid {}\n",
            p.remote, p.pool_size, p.poolset_uuid
        ));
        for (i, step) in p.steps.iter().enumerate() {
            text.push_str(&format!("  {:>3}. {}\n", i + 1, step_text(step)));
        }
        text.push_str(&format!(
            "total: {} part(s) to create, {} bytes to fetch whole, {} bytes compared by digests of which {} differ and are fetched, {} header(s) to write\n",
            p.parts_to_create, p.bytes_to_copy, p.bytes_compared, p.bytes_differing, p.headers_to_write
        ));
        if let Some(u) = &p.undo {
            text.push_str(&format!(
                "undo file: {} will save the {} bytes overwritten\n",
                u.path.display(),
                u.bytes
            ));
        }
    }
    if let Some(report) = &r.report {
        text.push_str(&format!(
            "restored the local replicas from remote replica {}: {} part(s) created, {} bytes copied, {} bytes differed; {} bytes received on the wire\n",
            p.remote,
            report.parts_created,
            report.bytes_copied,
            report.bytes_differing,
            r.wire.bytes_received
        ));
        if let Some(undo) = &report.undo {
            text.push_str(&undo_saved_line(undo));
            text.push('\n');
        }
    }
    text
}

/// The error line of the first remote replica that failed, if one did.
fn remote_failure(remotes: &[RemoteOutcome]) -> Option<String> {
    let failed: Vec<&RemoteOutcome> = remotes.iter().filter(|r| r.error.is_some()).collect();
    let first = failed.first()?;
    let more = match failed.len() {
        1 => String::new(),
        n => format!(" (and {} more remote replica(s) failed; see above)", n - 1),
    };
    Some(format!(
        "failed to synchronize: {}{more}",
        first.error.as_deref().unwrap_or_default()
    ))
}

/// The remote replicas' part of the output: plans for a dry run (and
/// `-vvv`), a line per replica with `-v`, and the failures of those that
/// failed.
fn remotes_text(remotes: &[RemoteOutcome], dry_run: bool, verbose: u8) -> String {
    crate::remotes::warn_unrecorded(remotes);
    let mut text = String::new();
    for r in remotes {
        if let (Some(plan), true) = (&r.plan, dry_run || verbose >= 3) {
            text.push_str(&crate::remotes::plan_text(r, plan, dry_run));
        }
        if r.error.is_some() {
            text.push_str(&format!(
                "remote replica {}: failed (see the error below)\n",
                r.remote
            ));
        } else if verbose >= 1 && !dry_run {
            text.push_str(&crate::remotes::done_line(r));
            text.push('\n');
        }
    }
    text
}

/// `undo file X: N range(s), B bytes saved; `poolsync undo X` puts them back`.
fn undo_saved_line(undo: &UndoSummary) -> String {
    format!(
        "undo file {}: the {} overwritten bytes ({} range(s)) are saved; `poolsync undo {}` puts them back",
        undo.path.display(),
        undo.bytes,
        undo.records,
        crate::diagnose::shell_quote(&undo.path)
    )
}

/// The plan's undo file, or why there is none (in a plan's text).
fn undo_plan_line(plan: &Plan, no_undo: bool) -> Option<String> {
    match &plan.undo {
        Some(u) => Some(format!(
            "undo file: {} will save the {} bytes overwritten ({} range(s), a file of {} bytes)\n",
            u.path.display(),
            u.bytes,
            u.records,
            u.file_size
        )),
        None if no_undo => Some("undo file: none (--no-undo)\n".to_string()),
        None => None,
    }
}

/// The one-line message of a failed sync.
fn failure(e: poolsync_engine::Error, args: &Args, options: &SyncOptions) -> String {
    let waiting = Waiting::Supported(options.wait_lock);
    format!(
        "failed to synchronize: {}",
        explain(e, &args.poolset, waiting)
    )
}

/// Prints the `--json` document: the plan and report of a run (with the
/// `--verify` part, if any), or the message of a failure.
fn emit_document(
    args: &Args,
    jobs: usize,
    outcome: Result<(Option<&Plan>, Option<&SyncReport>), String>,
    verify: Option<VerifyDoc<'_>>,
    remotes: &[RemoteOutcome],
    restored: Option<&RestoreOutcome>,
) -> anyhow::Result<()> {
    let (result, exit_code, plan, report, error) = match outcome {
        Ok((plan, report)) => ("synchronized", 0, plan, report, None),
        Err(message) => ("error", 1, None, None, Some(message)),
    };
    let doc = Document {
        path: &args.poolset,
        dry_run: args.dry_run,
        result,
        exit_code,
        plan,
        report,
        error,
        jobs,
        verify,
        remotes,
        restored,
    };
    emit_json("sync", &doc)
}

/// After a failed sync: when an interrupted transform of this pool set left
/// its journal, says on stderr how to finish it (its replicas may be
/// rebuilt only from the transform's own copy); the same for a create.
fn transform_hint(storage: &AnyStorage, poolset: &std::path::Path) {
    if let Ok(Some((journal, command))) = poolsync_engine::transform::interrupted(storage, poolset)
    {
        eprintln!(
            "note: an interrupted transform left {}; run `{command}` to finish it",
            journal.display()
        );
    }
    if let Some(note) = crate::diagnose::interrupted_create_note(storage, poolset) {
        eprintln!("note: {note}");
    }
}

/// Prints the outcome of `sync --verify` and returns the exit code.
fn finish_verify(
    args: &Args,
    options: &SyncOptions,
    outcome: Result<VerifyOutcome, poolsync_engine::Error>,
    remotes: Result<Vec<RemoteOutcome>, poolsync_engine::Error>,
) -> anyhow::Result<ExitCode> {
    let jobs = options.threads;
    let remotes = match remotes {
        Ok(r) => r,
        Err(e) => {
            let message = failure(e, args, options);
            if args.json {
                emit_document(args, jobs, Err(message.clone()), None, &[], None)?;
            }
            return Err(anyhow::anyhow!(message));
        }
    };
    let remote_failure = remote_failure(&remotes);
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            let refusal = Refusal::of(&e);
            let message = failure(e, args, options);
            if args.json {
                let verify = VerifyDoc {
                    findings: None,
                    repair: None,
                    refusal,
                };
                emit_document(args, jobs, Err(message.clone()), Some(verify), &[], None)?;
            }
            return Err(anyhow::anyhow!(message));
        }
    };
    if args.json {
        let verify = VerifyDoc {
            findings: Some(&outcome.findings),
            repair: outcome.repair.as_ref(),
            refusal: None,
        };
        let done = match &remote_failure {
            None => Ok((Some(&outcome.sync.plan), outcome.sync.report.as_ref())),
            Some(message) => Err(message.clone()),
        };
        emit_document(args, jobs, done, Some(verify), &remotes, None)?;
        return match remote_failure {
            None => Ok(ExitCode::SUCCESS),
            Some(message) => Err(anyhow::anyhow!(message)),
        };
    }
    if let Some(report) = &outcome.sync.report {
        // Files moved aside and unreadable sources are worth knowing about at once.
        for line in report_text(report).lines().skip(1) {
            eprintln!("warning: {line}");
        }
    }
    let mut text = String::new();
    if args.dry_run || args.verbose >= 3 {
        text.push_str(&plan_text(&outcome.sync.plan, args.dry_run, true));
    }
    if args.dry_run || args.verbose >= 2 {
        text.push_str(&crate::check::findings_text(&outcome.findings));
    } else if let Some(line) = crate::check::source_choice_text(&outcome.findings) {
        // The heap overruled the default source: always worth saying.
        text.push_str(&line);
        text.push('\n');
    }
    if args.dry_run || args.verbose >= 3 {
        let repairs = outcome.findings.total_ranges() > 0;
        if !outcome.sync.plan.is_noop() || repairs {
            text.extend(undo_plan_line(&outcome.sync.plan, args.no_undo));
        }
    }
    if let (Some(report), true) = (&outcome.sync.report, args.verbose >= 2) {
        if let Some(line) = report_text(report).lines().next() {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str(&verify_line(&outcome));
    text.push('\n');
    if let Some(undo) = outcome.sync.report.as_ref().and_then(|r| r.undo.as_ref()) {
        text.push_str(&undo_saved_line(undo));
        text.push('\n');
    }
    text.push_str(&remotes_text(&remotes, args.dry_run, args.verbose));
    if let Some(message) = remote_failure {
        emit(&text)?;
        return Err(anyhow::anyhow!(message));
    }
    if args.verbose >= 1 {
        text.push_str(&format!("{}: synchronized\n", args.poolset.display()));
    }
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// `verified against replica S: replica 1: 2 range(s), 15 bytes repaired; ...`
/// (`would be repaired` for a dry run).
pub fn verify_line(o: &VerifyOutcome) -> String {
    let f = &o.findings;
    let verb = if o.repair.is_some() {
        "repaired"
    } else {
        "to repair"
    };
    let per: Vec<String> = f
        .replicas
        .iter()
        .filter(|r| r.replica != f.source)
        .map(|r| {
            if r.compared {
                format!(
                    "replica {}: {} range(s), {} bytes {verb}",
                    r.replica, r.ranges, r.bytes
                )
            } else {
                format!("replica {}: rebuilt by sync", r.replica)
            }
        })
        .collect();
    let mut line = format!(
        "verify: {} live bytes compared with replica {}",
        f.live_bytes, f.source
    );
    if !per.is_empty() {
        line.push_str(&format!("; {}", per.join("; ")));
    }
    if let Some(ov) = &f.outvoted {
        line.push_str(&format!(
            "; replica {} outvoted in {} range(s), spread anyway (--force-source)",
            ov.replica, ov.ranges
        ));
    }
    line
}

/// The plan as text: the replicas and their parts, then the numbered
/// steps and the totals. `verify`: the data is compared after the plan (a
/// plan with nothing to rebuild does not mean nothing to do).
pub fn plan_text(plan: &Plan, dry_run: bool, verify: bool) -> String {
    let mut out = String::new();
    let mode = if dry_run {
        " (dry run: nothing is changed)"
    } else {
        ""
    };
    out.push_str(&format!("sync plan for {}{mode}\n", plan.path.display()));
    if plan.is_noop() {
        out.push_str(if verify {
            "no replica to rebuild: the headers of every replica are healthy; the live data is compared next\n"
        } else {
            "nothing to rebuild: the headers of every replica are healthy \
             (the data is not compared: --verify compares the live data of every replica)\n"
        });
        return out;
    }
    out.push_str(&format!(
        "source: replica {}, pool size {} bytes, pool set uuid {}\n",
        plan.source, plan.pool_size, plan.poolset_uuid
    ));
    for rep in &plan.replicas {
        let role = match rep.role {
            Role::Source => "source",
            Role::Healthy => "healthy",
            Role::Target => "to repair",
        };
        let mut line = format!("replica {}: {role}", rep.replica);
        if let Some(fault) = &rep.fault {
            line.push_str(&format!(" ({fault})"));
        }
        if rep.bad_block_bytes > 0 {
            line.push_str(&format!(", {} bytes in bad blocks", rep.bad_block_bytes));
        }
        out.push_str(&line);
        out.push('\n');
        if rep.role != Role::Target {
            continue;
        }
        for part in &rep.parts {
            let data = match part.data {
                sync::plan::DataAction::Keep => "keep data",
                sync::plan::DataAction::Recreate => "recreate",
                sync::plan::DataAction::Repair => "repair data",
            };
            let header = match part.header {
                HeaderAction::None => "",
                HeaderAction::Keep => ", keep header",
                HeaderAction::Relink => ", relink header",
                HeaderAction::New => ", new header",
                HeaderAction::Restore => ", invalidate and restore header",
            };
            let fault = part
                .fault
                .as_ref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  part {} {}: {data}{header}{fault}\n",
                part.part,
                part.path.display()
            ));
        }
    }
    out.push_str("steps:\n");
    for (i, step) in plan.steps.iter().enumerate() {
        out.push_str(&format!("  {:>3}. {}\n", i + 1, step_text(step)));
    }
    let t = &plan.totals;
    out.push_str(&format!(
        "total: {} part(s) to create, {} bytes to copy, {} bytes to compare (at most that many written), \
         {} header(s) to write, {} to invalidate first, {} mode(s) to set\n",
        t.parts_to_create,
        t.bytes_to_copy,
        t.bytes_to_compare,
        t.headers_to_write,
        t.headers_to_invalidate,
        t.modes_to_set
    ));
    if t.parts_to_displace > 0 {
        out.push_str(&format!(
            "{} file(s) in a part's place do not carry this pool set's uuid: moved aside, not deleted\n",
            t.parts_to_displace
        ));
    }
    if t.recovery_files_to_save + t.recovery_files_to_remove > 0 {
        out.push_str(&format!(
            "bad block recovery files: {} to save, {} to remove\n",
            t.recovery_files_to_save, t.recovery_files_to_remove
        ));
    }
    out
}

fn range_text(d: &DataStep) -> String {
    format!(
        "logical [{:#x}, {:#x})",
        d.logical,
        d.logical.saturating_add(d.len)
    )
}

pub(crate) fn step_text(step: &Step) -> String {
    match step {
        Step::RemoveRecoveryFiles { paths } => format!(
            "remove bad block recovery file(s) {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Step::SaveRecoveryFiles { files } => format!(
            "save bad block recovery file(s) {}",
            files
                .iter()
                .map(|f| f.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Step::InvalidateHeader {
            replica,
            part,
            path,
        } => format!(
            "invalidate the header checksum of replica {replica} part {part} ({}) until the repair is done",
            path.display()
        ),
        Step::DisplacePart {
            replica,
            part,
            path,
            to,
            reason,
        } => format!(
            "move {} aside to {} (replica {replica} part {part}): the file {reason}, not this pool set's uuid, so it is kept, never deleted",
            path.display(),
            to.display()
        ),
        Step::CreatePart {
            replica,
            part,
            path,
            size,
            replace,
        } => format!(
            "{} replica {replica} part {part} ({}), {size} bytes",
            if *replace { "remove and create" } else { "create" },
            path.display()
        ),
        Step::SetMode {
            replica,
            part,
            path,
            mode,
        } => format!(
            "set mode {mode:04o} on replica {replica} part {part} ({})",
            path.display()
        ),
        Step::SyncDirectory { path } => {
            let shown = if path.as_os_str().is_empty() {
                ".".to_string()
            } else {
                path.display().to_string()
            };
            format!("sync directory {shown}")
        }
        Step::CopyRange(d) => format!(
            "copy {} from replica {} part {} to replica {} part {}: {} bytes",
            range_text(d),
            d.from_replica,
            d.from_part,
            d.replica,
            d.part,
            d.len
        ),
        Step::CompareAndCopy(d) => format!(
            "compare {} of replica {} part {} with replica {} part {}, copy the blocks that differ: {} bytes to compare",
            range_text(d),
            d.replica,
            d.part,
            d.from_replica,
            d.from_part,
            d.len
        ),
        Step::WriteHeader(h) => {
            let what = match h.kind {
                HeaderAction::New => "write a new header",
                HeaderAction::Restore => "restore the header",
                _ => "relink the header",
            };
            format!(
                "{what} of replica {} part {} (uuid {}, {})",
                h.replica, h.part, h.uuid, h.uuid_origin
            )
        }
    }
}

/// What a real run did, as text.
pub fn report_text(r: &SyncReport) -> String {
    let mut out = format!(
        "done: {} part(s) created, {} bytes copied, {} bytes compared, {} bytes differed, \
         {} bytes written, {} header(s) written\n",
        r.parts_created,
        r.bytes_copied,
        r.bytes_compared,
        r.bytes_differing,
        r.bytes_written,
        r.headers_written
    );
    for d in &r.parts_displaced {
        out.push_str(&format!(
            "moved {} aside to {}: it does not carry this pool set's uuid\n",
            d.path.display(),
            d.to.display()
        ));
    }
    for f in &r.read_fallbacks {
        out.push_str(&format!(
            "read error in replica {} at logical [{:#x}, {:#x}): read from replica {} instead\n",
            f.replica,
            f.offset,
            f.offset.saturating_add(f.len),
            f.from_replica
        ));
    }
    out
}
