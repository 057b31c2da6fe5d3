//! `poolsync transform`: `pmempool transform [-d] [-v] <src> <dst>` with
//! pmempool's output and exit codes, plus `--json` and `--progress`.
//!
//! Output: with `-v`, `<src> -> <dst>: transformed` on success, as pmempool
//! prints it. A dry run (`-d`) prints its plan with byte counts first;
//! `-vv` also prints the plan of a real run. Failures are one line on
//! stderr, `error: failed to transform <src> -> <dst>: <message>`, and exit
//! code 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use poolsync_engine::remote::transform::{transform_all, RemoteTransform, TransformAll};
use poolsync_engine::sync::plan::{HeaderAction, Step};
use poolsync_engine::sync::SyncOptions;
use poolsync_engine::transform::{
    DataFrom, Operation, TransformOptions, TransformPlan, TransformReport,
};
use poolsync_pmem::AnyStorage;
use poolsync_poolset::PAGE;
use serde::Serialize;

use crate::diagnose::{explain, Waiting};
use crate::output::{emit, emit_json};
use crate::settings::Settings;

/// Arguments of `poolsync transform` (pmempool syntax plus poolsync's options).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do not change anything, only check and show what would be done
    #[arg(short = 'd', long = "dry-run")]
    dry_run: bool,
    /// Increase verbosity (-v prints the result, -vv also the plan)
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    /// Print a JSON document (plan and result) instead of text (see docs/json.md)
    #[arg(long = "json")]
    json: bool,
    /// Show progress on stderr (default when stderr is a terminal)
    #[arg(long = "progress", overrides_with = "no_progress")]
    progress: bool,
    /// Never show progress
    #[arg(long = "no-progress", overrides_with = "progress")]
    no_progress: bool,
    /// Delete or rewrite a part without a header of its own (OPTION SINGLEHDR,
    /// parts after the first) whose bytes do not prove it the pool's, on the
    /// word of its replica's part 0
    #[arg(long = "force")]
    force: bool,
    /// Worker threads that copy (default: the jobs setting, else the machine's
    /// parallelism, at most 8)
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = crate::settings::jobs_flag)]
    jobs: Option<String>,
    #[command(flatten)]
    remote: crate::transport::RemoteArgs,
    /// The pool set file describing the pool as it is
    #[arg(value_name = "SRC_POOLSET")]
    source: PathBuf,
    /// The pool set file describing the pool as it should be
    #[arg(value_name = "DST_POOLSET")]
    target: PathBuf,
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct Document<'a> {
    source: &'a Path,
    target: &'a Path,
    dry_run: bool,
    result: &'static str,
    exit_code: u8,
    plan: Option<&'a TransformPlan>,
    report: Option<&'a TransformReport>,
    error: Option<String>,
    /// Worker threads used to copy (`--jobs`, the `jobs` setting).
    jobs: usize,
    /// Remote replicas added or removed (absent for a transform of the
    /// local replicas).
    #[serde(skip_serializing_if = "Option::is_none")]
    remotes: Option<&'a RemoteTransform>,
}

impl Args {
    /// `--json` was given.
    pub fn json(&self) -> bool {
        self.json
    }

    /// The file the command works on.
    pub fn path(&self) -> &Path {
        &self.source
    }
}

/// Runs the command; `Ok` carries the exit code.
pub fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let what = format!(
        "failed to transform {} -> {}",
        args.source.display(),
        args.target.display()
    );
    let options = TransformOptions {
        dry_run: args.dry_run,
        threads: settings.jobs(args.jobs.as_deref())?,
        force: args.force,
        ..TransformOptions::default()
    };
    let storage = AnyStorage::from_env().map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    let progress =
        crate::progress::reporter("transform", args.dry_run || args.no_progress, args.progress);
    let connector = args.remote.connector(settings)?;
    let seeding = SyncOptions {
        threads: options.threads,
        ..SyncOptions::default()
    };
    let result = transform_all(
        &storage,
        &args.source,
        &args.target,
        &options,
        &connector,
        &seeding,
        progress.as_ref(),
    );
    progress.finish();
    let outcome = match result {
        Ok(TransformAll::Local(outcome)) => *outcome,
        Ok(TransformAll::Remote(remote)) => return finish_remote(&args, &options, &what, &remote),
        Err(e) => {
            // The engine's refusal already names both files.
            let message = match e {
                poolsync_engine::Error::CannotTransform { .. } => e.to_string(),
                // A pool set file without its first line, or a part in
                // use: say so (explain() looks at the source itself).
                e => match (
                    crate::diagnose::missing_signature(&args.source),
                    crate::diagnose::missing_signature(&args.target),
                ) {
                    (None, Some(target)) => format!("{what}: {target}"),
                    _ => format!("{what}: {}", explain(e, &args.source, Waiting::Unsupported)),
                },
            };
            if args.json {
                let doc = Document {
                    source: &args.source,
                    target: &args.target,
                    dry_run: args.dry_run,
                    result: "error",
                    exit_code: 1,
                    plan: None,
                    report: None,
                    error: Some(message.clone()),
                    jobs: options.threads,
                    remotes: None,
                };
                emit_json("transform", &doc)?;
            }
            return Err(anyhow::anyhow!(message));
        }
    };
    if args.json {
        let doc = Document {
            source: &args.source,
            target: &args.target,
            dry_run: args.dry_run,
            result: "transformed",
            exit_code: 0,
            plan: Some(&outcome.plan),
            report: outcome.report.as_ref(),
            error: None,
            jobs: options.threads,
            remotes: None,
        };
        emit_json("transform", &doc)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = String::new();
    if args.dry_run || args.verbose >= 2 {
        text.push_str(&plan_text(&outcome.plan, args.dry_run));
    }
    if args.verbose >= 1 {
        text.push_str(&format!(
            "{} -> {}: transformed\n",
            args.source.display(),
            args.target.display()
        ));
    }
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints what a transform of the remote replicas did (or, for a dry run,
/// would do) and returns the exit code.
fn finish_remote(
    args: &Args,
    options: &TransformOptions,
    what: &str,
    remote: &RemoteTransform,
) -> anyhow::Result<ExitCode> {
    let failure = remote.first_failure().map(|e| format!("{what}: {e}"));
    if args.json {
        let doc = Document {
            source: &args.source,
            target: &args.target,
            dry_run: args.dry_run,
            result: if failure.is_some() {
                "error"
            } else {
                "transformed"
            },
            exit_code: u8::from(failure.is_some()),
            plan: None,
            report: None,
            error: failure.clone(),
            jobs: options.threads,
            remotes: Some(remote),
        };
        emit_json("transform", &doc)?;
        return match failure {
            Some(m) => Err(anyhow::anyhow!(m)),
            None => Ok(ExitCode::SUCCESS),
        };
    }
    let mut text = String::new();
    for r in &remote.removed {
        if r.error.is_some() {
            continue;
        }
        if args.dry_run || args.verbose >= 1 {
            let verb = if args.dry_run {
                "would remove"
            } else {
                "removed"
            };
            text.push_str(&format!(
                "remote replica {}: {verb} {} part file(s) on its host ({}); its pool set file stays\n",
                r.remote,
                r.files.len(),
                r.files.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    crate::remotes::warn_unrecorded(&remote.added);
    for r in remote.added.iter().filter(|r| r.error.is_none()) {
        match (&r.plan, args.dry_run) {
            (Some(plan), true) => text.push_str(&crate::remotes::plan_text(r, plan, true)),
            _ if args.verbose >= 1 => {
                text.push_str(&format!("{} (added)\n", crate::remotes::done_line(r)));
            }
            _ => {}
        }
    }
    if failure.is_none() && args.verbose >= 1 {
        text.push_str(&format!(
            "{} -> {}: transformed\n",
            args.source.display(),
            args.target.display()
        ));
    }
    emit(&text)?;
    match failure {
        Some(m) => Err(anyhow::anyhow!(m)),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// The plan as text: the operation, the numbered steps and the totals.
pub fn plan_text(plan: &TransformPlan, dry_run: bool) -> String {
    let mut out = String::new();
    let mode = if dry_run {
        " (dry run: nothing is changed)"
    } else {
        ""
    };
    out.push_str(&format!(
        "transform plan for {} -> {}{mode}\n",
        plan.source.display(),
        plan.target.display()
    ));
    let op = match &plan.operation {
        Operation::AddReplicas { replicas } => format!("add target replica(s) {replicas:?}"),
        Operation::RemoveReplicas { replicas } => {
            format!("remove source replica(s) {replicas:?}")
        }
        Operation::Reshape { added, removed } => format!(
            "reshape: add target replica(s) {added:?}, remove source replica(s) {removed:?}"
        ),
        Operation::AddSingleHdr => "add OPTION SINGLEHDR (every replica rewritten)".to_string(),
        Operation::RemoveSingleHdr => {
            "remove OPTION SINGLEHDR (every replica rewritten)".to_string()
        }
        Operation::Finish => "finish an interrupted transform".to_string(),
    };
    out.push_str(&format!(
        "operation: {op}; pool size {} bytes, pool set uuid {}\n",
        plan.pool_size, plan.poolset_uuid
    ));
    if plan.is_noop() {
        out.push_str("nothing to do: the transform is complete\n");
        return out;
    }
    // The temporary copy is read as one more replica, after the target's.
    let temp_index = plan
        .staging
        .as_ref()
        .filter(|st| matches!(st.data_from, DataFrom::Temporary | DataFrom::Source))
        .map(|_| plan.steps.source);
    if let Some(j) = &plan.journal {
        out.push_str(&format!("journal: {}\n", j.path.display()));
    }
    if let Some(st) = &plan.staging {
        if st.resumed {
            out.push_str("resuming an interrupted run of this transform\n");
        }
        if !st.rewritten.is_empty() {
            out.push_str(&format!(
                "rewritten onto recreated parts: target replica(s) {:?}, from {}\n",
                st.rewritten,
                match st.data_from {
                    DataFrom::Replica { replica } =>
                        format!("target replica {replica}, which stays"),
                    DataFrom::Temporary =>
                        "a temporary copy (no replica stays as it is)".to_string(),
                    DataFrom::Source => "source replica 0, which stays intact until its files are deleted at the end".to_string(),
                }
            ));
        }
        if let Some(t) = &st.temporary {
            if t.complete {
                out.push_str(&format!(
                    "temporary copy: {} (complete; kept from the interrupted run)\n",
                    t.path.display()
                ));
            } else if t.size > 0 {
                out.push_str(&format!(
                    "temporary copy: {}, {} bytes of free space needed until the end of the run\n",
                    t.path.display(),
                    t.size
                ));
            }
        }
    }
    out.push_str("steps:\n");
    let mut n = 0;
    let mut line = |out: &mut String, s: String| {
        n += 1;
        out.push_str(&format!("  {n:>3}. {s}\n"));
    };
    for path in &plan.discard {
        line(
            &mut out,
            format!(
                "delete {} (left by an interrupted run; the source is healthy, so it is stale)",
                path.display()
            ),
        );
    }
    if let Some(j) = plan.journal.as_ref().filter(|j| j.write) {
        line(
            &mut out,
            format!(
                "write the journal {}, naming the {} part file(s) to create",
                j.path.display(),
                j.new_parts.len()
            ),
        );
    }
    if let Some(st) = &plan.staging {
        if let Some(t) = st.temporary.as_ref().filter(|t| !t.complete) {
            line(
                &mut out,
                format!(
                    "create the temporary copy {}, {} bytes, copy logical [{:#x}, {:#x}) of source replica 0 into it ({} bytes), then write its header",
                    t.path.display(),
                    t.size,
                    PAGE,
                    plan.pool_size,
                    plan.totals.bytes_to_stage
                ),
            );
        }
    }
    if let Some(st) = &plan.staging {
        for path in &st.invalidate {
            line(
                &mut out,
                format!(
                    "invalidate the header of {} (its replica is being rewritten; the file is deleted at the end)",
                    path.display()
                ),
            );
        }
    }
    let from_source = plan
        .staging
        .as_ref()
        .is_some_and(|st| matches!(st.data_from, DataFrom::Source));
    let replica_name = |r: usize| match temp_index {
        Some(t) if t == r && from_source => "source replica 0".to_string(),
        Some(t) if t == r => "the temporary copy".to_string(),
        _ => format!("replica {r}"),
    };
    for c in &plan.create {
        line(
            &mut out,
            format!(
                "{} replica {} part {} ({}), {} bytes, mode {:04o}",
                if c.replace {
                    "remove (left by an interrupted run) and create"
                } else {
                    "create"
                },
                c.replica,
                c.part,
                c.path.display(),
                c.size,
                plan.mode
            ),
        );
    }
    for step in &plan.steps.steps {
        let s = match step {
            Step::CopyRange(d) => format!(
                "copy logical [{:#x}, {:#x}) from {} part {} to replica {} part {}: {} bytes",
                d.logical,
                d.logical.saturating_add(d.len),
                replica_name(d.from_replica),
                d.from_part,
                d.replica,
                d.part,
                d.len
            ),
            Step::WriteHeader(h) => format!(
                "{} of replica {} part {} ({}, uuid {})",
                match (h.kind, &plan.staging) {
                    (HeaderAction::New, _) => "write the new header",
                    (_, Some(st)) if st.rewritten.contains(&h.replica) => {
                        "write the kept header (new links and SINGLEHDR bit)"
                    }
                    _ => "relink the header",
                },
                h.replica,
                h.part,
                h.path.display(),
                h.uuid
            ),
            // Creating parts, modes, directory syncs: as sync words them.
            other => crate::sync::step_text(other),
        };
        line(&mut out, s);
    }
    for r in &plan.remove {
        line(
            &mut out,
            format!(
                "delete source replica {} part {} ({}), {} bytes",
                r.replica,
                r.part,
                r.path.display(),
                r.size
            ),
        );
    }
    if let Some(t) = plan.staging.as_ref().and_then(|st| st.temporary.as_ref()) {
        line(
            &mut out,
            format!("delete the temporary copy {}", t.path.display()),
        );
    }
    if let Some(j) = &plan.journal {
        line(&mut out, format!("delete the journal {}", j.path.display()));
    }
    let t = &plan.totals;
    if t.bytes_to_stage > 0 {
        out.push_str(&format!(
            "staged: {} bytes copied into the temporary copy first\n",
            t.bytes_to_stage
        ));
    }
    out.push_str(&format!(
        "total: {} part(s) to create ({} bytes to allocate), {} bytes to copy, {} header(s) to write, \
         {} part(s) to delete ({} bytes freed)\n",
        t.parts_to_create,
        t.bytes_to_allocate,
        t.bytes_to_copy,
        t.headers_to_write,
        t.parts_to_remove,
        t.bytes_to_free
    ));
    out
}
