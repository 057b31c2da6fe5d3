//! Heap-aware verification of replicas: `check --data` and `sync --verify`
//! (ARCHITECTURE.md, "Heap-aware verification";
//! ARCHITECTURE.md, "Choosing the source").
//!
//! Replicas of a healthy, used pool differ byte for byte where libpmemobj
//! never replicates (the descriptor's volatile area, free heap space, chunk
//! footers), so only *live* ranges are compared. The path:
//!
//! 1. The heap of every healthy replica is walked (`decide`): a default
//!    source whose heap fails the structural checks gives way to the first
//!    replica whose heap passes.
//! 2. `find` walks the source's heap into live spans, compares every
//!    other healthy replica with it over them (each stretch of the source
//!    read once for all replicas), narrows every differing block down to
//!    the differing bytes of each owner (object, chunk header, lane, ...),
//!    and lists them as [`Divergence`]s with their part files.
//! 3. `decide` says, for each, which copy is right: the heap (metadata
//!    whose walk fails in one replica and passes in the source), a
//!    majority, or nobody (a [`Tie`]); the administrator decides ties with
//!    `--source N` or `--force-source`.
//! 4. `sync --verify` refuses before writing anything while the source is
//!    outvoted or a tie is undecided; otherwise it saves the bytes it will
//!    overwrite to an undo file ([`crate::undo`]) and [`repair`] copies the
//!    source's bytes of every block it is right about through the
//!    executor.
//!
//! Crash safety: a repair writes data only, never a header, and only bytes
//! the source holds, after the undo file is durable. A run that stops
//! half-way leaves some blocks repaired and others not; the next run
//! compares again and finds exactly the blocks still differing, so
//! re-running (with the same `--source` or `--force-source`) converges.

mod decide;
mod find;
mod live;
mod repair;

use std::path::{Path, PathBuf};

use poolsync_pmem::{Access, Storage};
use serde::Serialize;

use crate::compare::{CompareOptions, LogicalRange};
pub use crate::endpoint::Location;
use crate::inspect::{choose_source, inspect, Health, ReplicaHealth, SourceRefusal};
use crate::open::open;
use crate::sync::{
    execute, open_for_sync, plan, prepare, survey, Progress, SyncOptions, SyncOutcome, Within,
};
use crate::Error;
pub use decide::{HeapCheck, SourceChoice, Verdict};
pub use live::walk_source;
pub use repair::repair;

/// Divergences listed per replica; more are counted but not listed.
pub const MAX_LISTED: usize = 10_000;

/// How verification runs.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// `--source N`: compare with (and repair from) replica N instead of the
    /// lowest-index healthy replica.
    pub source: Option<usize>,
    /// `--force-source`: repair from the source even where it is outvoted.
    pub force_source: bool,
    /// Stride and worker threads of the comparison.
    pub compare: CompareOptions,
}

/// A live range where a replica differs from the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Divergence {
    /// The replica that differs.
    pub replica: usize,
    /// Logical offset of the first differing byte.
    pub offset: u64,
    /// From the first to the last differing byte of one owner.
    pub len: u64,
    /// What the bytes belong to, as reports word it.
    pub owner: String,
    /// Where the range lies: the replica's pieces, then the source's.
    pub locations: Vec<Location>,
    /// Which replica is right there, and why.
    pub verdict: Verdict,
}

/// What verification found in one replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplicaFindings {
    /// Replica index.
    pub replica: usize,
    /// Whether its data was compared with the source.
    pub compared: bool,
    /// Why it was not compared.
    pub note: Option<String>,
    /// Divergent ranges found (all, also those not listed).
    pub ranges: u64,
    /// Bytes in divergent ranges.
    pub bytes: u64,
    /// Of those ranges, the ones nothing decides ([`Verdict::Tie`]).
    pub undecided_ranges: u64,
    /// Their bytes.
    pub undecided_bytes: u64,
    /// The divergent ranges, at most [`MAX_LISTED`].
    pub divergences: Vec<Divergence>,
    /// Differing 4 KiB blocks within the live spans.
    #[serde(skip)]
    pub blocks: Vec<LogicalRange>,
    /// The blocks the source is right about (by a majority, the heap, or
    /// the administrator's choice): what a repair copies.
    #[serde(skip)]
    pub repair: Vec<LogicalRange>,
}

/// The majority rule's verdict: the source stands alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outvoted {
    /// The outvoted replica (the source).
    pub replica: usize,
    /// The replicas that agree with each other and not with it.
    pub majority: Vec<usize>,
    /// Outvoted ranges found (all, also those not listed).
    pub ranges: u64,
    /// Bytes in outvoted ranges.
    pub bytes: u64,
    /// The outvoted ranges, as the source differs from the majority's first
    /// replica (at most [`MAX_LISTED`]).
    pub divergences: Vec<Divergence>,
}

/// Ranges nothing decides: replicas differ and no majority, heap or
/// choice says which one is right.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tie {
    /// The source and the first replica that differs from it undecided.
    pub replicas: Vec<usize>,
    /// Such ranges of that replica.
    pub ranges: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The first of them.
    pub first: Divergence,
}

/// Everything verification learned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Findings {
    /// The pool set file.
    pub path: PathBuf,
    /// The replica compared with.
    pub source: usize,
    /// How it was chosen.
    pub source_choice: SourceChoice,
    /// The heap walk of the source and of every compared replica.
    pub heap: Vec<HeapCheck>,
    /// Bytes of the pool walked.
    pub pool_size: u64,
    /// Live bytes of the source (what each comparison reads).
    pub live_bytes: u64,
    /// Allocated objects of the source.
    pub objects: u64,
    /// Bytes compared, over all replicas.
    pub bytes_compared: u64,
    /// One entry per replica, the source included (never compared).
    pub replicas: Vec<ReplicaFindings>,
    /// Set when the majority rule found the source outvoted (also when
    /// `--force-source` spreads its bytes anyway).
    pub outvoted: Option<Outvoted>,
    /// Set when replicas differ somewhere nothing decides.
    pub tie: Option<Tie>,
}

impl Findings {
    /// No divergence, every replica compared, the source not outvoted.
    pub fn is_clean(&self) -> bool {
        self.outvoted.is_none()
            && self
                .replicas
                .iter()
                .all(|r| r.ranges == 0 && (r.compared || r.replica == self.source))
    }

    /// Divergent ranges over all replicas.
    pub fn total_ranges(&self) -> u64 {
        self.replicas.iter().map(|r| r.ranges).sum()
    }
}

/// What [`repair`] did to one replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplicaRepair {
    /// Replica index.
    pub replica: usize,
    /// Divergent live ranges repaired.
    pub ranges: u64,
    /// Bytes in those ranges.
    pub bytes: u64,
    /// Bytes written (whole differing blocks).
    pub bytes_written: u64,
}

/// What [`repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    /// The replica copied from.
    pub source: usize,
    /// One entry per repaired replica.
    pub replicas: Vec<ReplicaRepair>,
}

/// The outcome of [`sync_verify`].
#[derive(Debug, Clone, Serialize)]
pub struct VerifyOutcome {
    /// The sync's plan and (unless a dry run) report.
    pub sync: SyncOutcome,
    /// What verification found before anything was written.
    pub findings: Findings,
    /// What the repair did; `None` for a dry run.
    pub repair: Option<RepairReport>,
}

/// `check --data`: opens the pool set read-only, judges its headers, picks
/// the source (`options.source`, or the lowest-index healthy replica whose
/// heap passes the structural checks) and compares every other healthy
/// replica with it. Broken replicas are listed as not compared (and make
/// the findings unclean).
pub fn check_data<S: Storage>(
    storage: &S,
    path: &Path,
    options: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<Findings, Error> {
    let set = open(storage, path, Access::ReadOnly)?;
    let health = inspect(&set);
    let healthy = |r: usize| health.replicas.get(r).is_some_and(|h| h.healthy);
    let default = choose_source(set.replicas.len(), options.source, healthy).map_err(|why| {
        Error::InvalidRequest {
            path: set.path.clone(),
            reason: match why {
                SourceRefusal::NoSuchReplica { requested: n, last } => {
                    format!("--source {n}: the pool set has replicas 0 to {last}")
                }
                SourceRefusal::Unusable { requested: n } => {
                    format!("--source {n}: replica {n} is not healthy (see poolsync check)")
                }
                SourceRefusal::NoneUsable => {
                    "no healthy replica to compare with (see poolsync check)".to_string()
                }
            },
        }
    })?;
    let healthy_list: Vec<usize> = (0..set.replicas.len()).filter(|&r| healthy(r)).collect();
    let pool_size = set.set_pool_size();
    let heap = decide::heap_checks(&set, &healthy_list, pool_size);
    let (source, choice) = decide::source_by_heap(default, options.source, &heap);
    let compared: Vec<usize> = healthy_list
        .iter()
        .copied()
        .filter(|&r| r != source)
        .collect();
    let note = |r: usize| {
        let why = health
            .replicas
            .get(r)
            .and_then(ReplicaHealth::reason)
            .unwrap_or_else(|| "its headers are not healthy".to_string());
        format!("not compared: replica {r} is broken ({why}); poolsync sync rebuilds it")
    };
    let req = find::Request {
        source,
        choice,
        heap,
        compared: &compared,
        pool_size,
        skipped_note: &note,
        progress,
    };
    let findings = find::find(&set, req, options);
    progress.finish();
    findings
}

/// `sync --verify`: plans the sync, verifies the replicas the sync leaves
/// alone against its source, refuses before anything is written while the
/// source is outvoted or a difference is undecided, saves what it will
/// overwrite to an undo file, then executes the sync and repairs every
/// block the source is right about. A dry run stops after verification
/// and returns the plan and the findings.
pub fn sync_verify<S: Storage>(
    storage: &S,
    path: &Path,
    sync_options: &SyncOptions,
    verify: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyOutcome, Error> {
    let mut set = open_for_sync(storage, path, sync_options)?;
    let survey = survey(storage, &set, sync_options)?;
    let mut plan = plan(&set, &survey, sync_options)?;
    let health = &survey.health;
    let healthy: Vec<usize> = (0..set.replicas.len())
        .filter(|&r| health.replicas.get(r).is_some_and(|h| h.healthy))
        .collect();
    let heap = decide::heap_checks(&set, &healthy, plan.pool_size);
    let (source, choice) = decide::source_by_heap(plan.source, verify.source, &heap);
    if source != plan.source {
        // The heap decided: rebuilt replicas are copied from it too.
        let options = SyncOptions {
            source: Some(source),
            ..sync_options.clone()
        };
        plan = crate::sync::plan(&set, &survey, &options)?;
    }
    let compared: Vec<usize> = healthy.iter().copied().filter(|&r| r != source).collect();
    let note = |r: usize| format!("not compared: sync rebuilds replica {r} from the source");
    let req = find::Request {
        source,
        choice,
        heap,
        compared: &compared,
        pool_size: plan.pool_size,
        skipped_note: &note,
        progress: if sync_options.dry_run {
            &crate::sync::NoProgress
        } else {
            progress
        },
    };
    let findings = find::find(&set, req, verify)?;
    let absent = absent(health, &findings.source_choice);
    match &findings.outvoted {
        Some(o) if !verify.force_source => return Err(outvoted_error(&set.path, o, absent)),
        _ => {}
    }
    if let Some(t) = &findings.tie {
        return Err(tie_error(&set.path, t, absent));
    }
    let repair_steps = repair::steps(&set, &findings)?;
    let survey_progress: &dyn Progress = if sync_options.dry_run {
        &crate::sync::NoProgress
    } else {
        progress
    };
    if !sync_options.dry_run {
        progress.start(
            plan.totals.bytes_to_copy + plan.totals.bytes_to_compare + repair::bytes(&findings),
        );
    }
    let prepared = prepare(
        storage,
        &set,
        &mut plan,
        &repair_steps,
        sync_options,
        survey_progress,
    )?;
    if sync_options.dry_run {
        return Ok(VerifyOutcome {
            sync: SyncOutcome { plan, report: None },
            findings,
            repair: None,
        });
    }
    let again = |e| {
        let extra = if verify.force_source {
            " --verify --force-source"
        } else {
            " --verify"
        };
        crate::sync::unfinished(e, path, sync_options, extra)
    };
    let report = execute(
        storage,
        &mut set,
        &plan,
        prepared.as_ref(),
        sync_options,
        &Within(progress),
    )
    .map_err(again)?;
    let repaired = repair::run(
        storage,
        &mut set,
        &findings,
        &repair_steps,
        prepared.as_ref(),
        verify,
        progress,
    )
    .map_err(again)?;
    progress.finish();
    Ok(VerifyOutcome {
        sync: SyncOutcome {
            plan,
            report: Some(report),
        },
        findings,
        repair: Some(repaired),
    })
}

/// "(owner) and N more range(s)", after a range in a refusal.
fn what(first: Option<&Divergence>, ranges: u64) -> String {
    format!(
        "({}){}",
        first.map_or("", |d| d.owner.as_str()),
        match ranges.saturating_sub(1) {
            0 => String::new(),
            n => format!(" and {n} more range(s)"),
        }
    )
}

/// The replicas that are not healthy, so had no vote, and why, and the
/// default source passed over for its heap: a vote that was one short, or
/// a source that is not the one expected, may come from a replica that
/// could not be read.
fn absent(health: &Health, choice: &SourceChoice) -> String {
    let mut reasons: Vec<String> = health
        .replicas
        .iter()
        .filter(|h| !h.healthy)
        .map(|h| {
            let why = h.reason().unwrap_or_else(|| "not healthy".to_string());
            format!("replica {} has no vote: {why}", h.replica)
        })
        .collect();
    if let SourceChoice::Heap {
        instead_of,
        problem,
    } = choice
    {
        reasons.push(format!(
            "replica {instead_of} is not the source: its heap fails the checks: {problem}"
        ));
    }
    if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", reasons.join("; "))
    }
}

/// The refusal of the majority rule.
fn outvoted_error(set: &Path, o: &Outvoted, absent: String) -> Error {
    let first = o.divergences.first();
    Error::Outvoted {
        set: set.to_path_buf(),
        replica: o.replica,
        majority: o.majority.clone(),
        take: o.majority.first().copied().unwrap_or(0),
        offset: first.map_or(0, |d| d.offset),
        end: first.map_or(0, |d| d.offset + d.len),
        what: format!("{}{absent}", what(first, o.ranges)),
    }
}

/// The refusal of an undecided difference.
fn tie_error(set: &Path, t: &Tie, absent: String) -> Error {
    Error::Tie {
        set: set.to_path_buf(),
        first: t.replicas.first().copied().unwrap_or(0),
        second: t.replicas.get(1).copied().unwrap_or(0),
        offset: t.first.offset,
        end: t.first.offset + t.first.len,
        what: what(Some(&t.first), t.ranges),
        absent,
    }
}
