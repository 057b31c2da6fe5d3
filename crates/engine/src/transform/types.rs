//! The plan a transform makes and the report of carrying it out: what the
//! dry run prints and the real run executes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use poolsync_header::{PoolHdr, RawUuid};
use serde::Serialize;

use crate::compare::{default_threads, DEFAULT_STRIDE};
use crate::exec::{ser_mode, totals, Step, Tuning};
use crate::sync::plan::Plan;
use crate::sync::{SyncReport, UuidSource};

/// Options of a transform.
#[derive(Debug, Clone)]
pub struct TransformOptions {
    /// `-d`: plan only, nothing is written.
    pub dry_run: bool,
    /// Where fresh UUIDs come from.
    pub uuids: UuidSource,
    /// Bytes per copy step.
    pub stride: usize,
    /// Worker threads for copies.
    pub threads: usize,
    /// `--force`: a part without a header of its own (SINGLEHDR, parts
    /// after the first) that the transform deletes or rewrites is taken on
    /// the word of its replica's part 0, as `rm --verify-owner -f` takes
    /// it, instead of being proven the pool's by its bytes.
    pub force: bool,
}

impl Default for TransformOptions {
    fn default() -> Self {
        TransformOptions {
            dry_run: false,
            uuids: UuidSource::Random,
            stride: DEFAULT_STRIDE,
            threads: default_threads(),
            force: false,
        }
    }
}

/// The structural change a transform makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Operation {
    /// Replicas of the target (by target index) are created.
    AddReplicas {
        /// Target replica indices.
        replicas: Vec<usize>,
    },
    /// Replicas of the source (by source index) are removed.
    RemoveReplicas {
        /// Source replica indices.
        replicas: Vec<usize>,
    },
    /// Beyond pmempool: replicas are replaced by replicas of another
    /// layout (new part files), in one call.
    Reshape {
        /// Target replica indices created.
        added: Vec<usize>,
        /// Source replica indices removed.
        removed: Vec<usize>,
    },
    /// `OPTION SINGLEHDR` is added: every replica is rewritten with one
    /// header, in part 0.
    AddSingleHdr,
    /// `OPTION SINGLEHDR` is removed: every replica is rewritten with a
    /// header in each part.
    RemoveSingleHdr,
    /// An interrupted transform is finished: links are completed and the
    /// files of removed replicas that are still there are deleted.
    Finish,
}

/// A part created by the transform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewPart {
    /// Target replica index.
    pub replica: usize,
    /// Part index.
    pub part: usize,
    /// The file.
    pub path: PathBuf,
    /// Its size (fully allocated).
    pub size: u64,
    /// A file left by an interrupted run of this transform is replaced.
    pub replace: bool,
    /// The part is a Device DAX (docs/format.md §25.3): opened and
    /// overwritten, never unlinked, allocated or given a mode, and it
    /// needs no room in a file system.
    pub device: bool,
    /// The header it gets (written with an inverted checksum at creation).
    #[serde(skip)]
    pub header: Option<PoolHdr>,
}

/// A part file deleted by the transform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovedPart {
    /// Source replica index.
    pub replica: usize,
    /// Part index.
    pub part: usize,
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
}

/// Exact counts of what a transform does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TransformTotals {
    /// Parts created.
    pub parts_to_create: u64,
    /// Bytes allocated for them.
    pub bytes_to_allocate: u64,
    /// Bytes copied into them.
    pub bytes_to_copy: u64,
    /// Headers written (new ones and relinked ones).
    pub headers_to_write: u64,
    /// Part files deleted.
    pub parts_to_remove: u64,
    /// Bytes those files hold.
    pub bytes_to_free: u64,
    /// Bytes copied into a temporary copy first (transforms that rewrite
    /// every replica onto its own files).
    pub bytes_to_stage: u64,
}

/// Everything a transform will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransformPlan {
    /// The source pool set file.
    pub source: PathBuf,
    /// The target pool set file.
    pub target: PathBuf,
    /// The change.
    pub operation: Operation,
    /// Bytes of the pool (`heap_offset + heap_size`).
    pub pool_size: u64,
    /// The pool set UUID every header carries.
    pub poolset_uuid: String,
    /// Mode of new parts (the source master's part 0), octal string in JSON.
    #[serde(serialize_with = "ser_mode")]
    pub mode: u32,
    /// Parts created, in order.
    pub create: Vec<NewPart>,
    /// Data and header steps on the target set.
    pub steps: Plan,
    /// Part files deleted at the end.
    pub remove: Vec<RemovedPart>,
    /// Files a stale, interrupted run left (the parts and temporary copy
    /// its journal names, then the journal), deleted first, in this order:
    /// the source is healthy, so they hold nothing it needs.
    pub discard: Vec<PathBuf>,
    /// The journal this run writes before its first other change (or
    /// keeps, finishing an interrupted run) and deletes at the end; `None`
    /// for a run that creates nothing and found no journal.
    pub journal: Option<JournalPlan>,
    /// How replicas that are rewritten onto their own files are rebuilt
    /// (`SINGLEHDR` changes, reshapes in place); `None` for transforms that
    /// only create and delete files.
    pub staging: Option<Staging>,
    /// Counts.
    pub totals: TransformTotals,
}

impl TransformPlan {
    /// Whether the plan does nothing (a finished transform run again).
    pub fn is_noop(&self) -> bool {
        self.create.is_empty()
            && self.steps.steps.is_empty()
            && self.remove.is_empty()
            && self.discard.is_empty()
            && self.staging.is_none()
            && self.journal.is_none()
    }
}

/// The journal of a transform (docs/format.md §20).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalPlan {
    /// The file: the source pool set file's path with
    /// [`super::JOURNAL_SUFFIX`] appended.
    pub path: PathBuf,
    /// This run writes it before its first other change; `false` when the
    /// run finishes an interrupted one and keeps the journal that one wrote.
    pub write: bool,
    /// The part files the run creates at paths that are not parts of the
    /// source, in the order it creates them: what the journal names, so
    /// that a later run recognises them as its own.
    pub new_parts: Vec<PathBuf>,
    /// The source master's header page, recorded in the journal.
    #[serde(skip)]
    pub master_header: Vec<u8>,
}

/// What [`super::execute`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TransformReport {
    /// Parts created.
    pub parts_created: u64,
    /// Part files deleted.
    pub parts_removed: u64,
    /// What the data and header steps did.
    pub sync: SyncReport,
}

/// The plan and, for a real run, what was done.
#[derive(Debug, Clone, Serialize)]
pub struct TransformOutcome {
    /// The plan.
    pub plan: TransformPlan,
    /// `None` for a dry run.
    pub report: Option<TransformReport>,
}

/// How a transform that rewrites replicas onto their own files proceeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Staging {
    /// The journal file.
    pub journal: PathBuf,
    /// The temporary copy, when no replica stays as it is.
    pub temporary: Option<TempCopy>,
    /// Where the rewritten replicas' data is read.
    pub data_from: DataFrom,
    /// Target replicas rebuilt onto recreated parts.
    pub rewritten: Vec<usize>,
    /// `true` when this run finishes an interrupted one (the journal
    /// exists and the source is no longer healthy).
    pub resumed: bool,
    /// The source part 0 header page that each rewritten replica keeps
    /// (by target replica index), recorded in the journal so that a
    /// resumed run keeps their UUIDs too.
    #[serde(skip)]
    pub kept_headers: BTreeMap<usize, Vec<u8>>,
    /// Headers of source parts that are not recreated but belong to a
    /// source replica that loses files to a rewritten one: invalidated
    /// (inverted checksum) before anything is recreated, so that the old
    /// pool set file cannot take that half-rewritten replica for healthy.
    /// Those files are deleted at the end.
    pub invalidate: Vec<PathBuf>,
}

/// The temporary copy of the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TempCopy {
    /// The file.
    pub path: PathBuf,
    /// Its size: the pool size rounded up to a page.
    pub size: u64,
    /// An interrupted run already completed it; it is reused.
    pub complete: bool,
}

/// Where the data of rewritten replicas comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataFrom {
    /// A replica that stays as it is (target index).
    Replica {
        /// Target replica index.
        replica: usize,
    },
    /// The temporary copy.
    Temporary,
    /// Replica 0 of the source, read through the source pool set file:
    /// when every replica moves onto new files, the source is not written
    /// until its files are deleted at the end, so it needs no copy.
    Source,
}

impl TransformOptions {
    /// The stride and workers of the data steps.
    pub fn tuning(&self) -> Tuning {
        Tuning {
            stride: self.stride,
            threads: self.threads,
        }
    }
}

/// Everything [`assemble`] puts into a plan.
pub(super) struct Parts {
    pub operation: Operation,
    pub pool_size: u64,
    pub poolset_uuid: RawUuid,
    pub mode: u32,
    /// The endpoint data is read from (its number in the steps).
    pub data_from: usize,
    pub create: Vec<NewPart>,
    pub steps: Vec<Step>,
    pub remove: Vec<RemovedPart>,
}

impl Parts {
    /// A finishing plan that only deletes `remove` (nothing is created or
    /// copied, no header is written).
    pub(super) fn deletions(
        pool_size: u64,
        poolset_uuid: RawUuid,
        mode: u32,
        remove: Vec<RemovedPart>,
    ) -> Parts {
        Parts {
            operation: Operation::Finish,
            pool_size,
            poolset_uuid,
            mode,
            data_from: 0,
            create: Vec::new(),
            steps: Vec::new(),
            remove,
        }
    }
}

/// A transform plan of `parts`, with its counts.
pub(super) fn assemble(src: &Path, dst: &Path, parts: Parts) -> TransformPlan {
    let Parts {
        operation,
        pool_size,
        poolset_uuid,
        mode,
        data_from,
        create,
        steps,
        remove,
    } = parts;
    let sync_totals = totals(&steps);
    let plan_totals = TransformTotals {
        parts_to_create: create.len() as u64,
        bytes_to_allocate: create.iter().map(|c| c.size).sum(),
        bytes_to_copy: sync_totals.bytes_to_copy,
        headers_to_write: sync_totals.headers_to_write,
        parts_to_remove: remove.len() as u64,
        bytes_to_free: remove.iter().map(|r| r.size).sum(),
        bytes_to_stage: 0,
    };
    TransformPlan {
        source: src.to_path_buf(),
        target: dst.to_path_buf(),
        operation,
        pool_size,
        poolset_uuid: poolset_uuid.to_canonical(),
        mode,
        create,
        steps: Plan {
            path: dst.to_path_buf(),
            source: data_from,
            pool_size,
            poolset_uuid: poolset_uuid.to_canonical(),
            mode,
            bad_blocks: Default::default(),
            alternates: Vec::new(),
            replicas: Vec::new(),
            steps,
            totals: sync_totals,
            undo: None,
        },
        remove,
        discard: Vec::new(),
        journal: None,
        staging: None,
        totals: plan_totals,
    }
}
