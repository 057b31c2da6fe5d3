//! `pmempool transform`: change the structure of a pool set — add
//! replicas or remove replicas, and (beyond pmempool) replace replicas by
//! replicas of another part layout in one call, or add and remove
//! `SINGLEHDR` — validated against the media before anything is written,
//! with a plan shared by the dry run and the real run, and crash safety.
//!
//! The path from two pool set files to a transformed pool set runs down
//! through this module's files, each using only those below it:
//!
//! 1. `request` reads both pool set files, matches their replicas (same
//!    part path strings and sizes, in order; replica order does not
//!    matter), decides the one change the pair describes and refuses
//!    everything else as pmempool does.
//! 2. `source` surveys the source: its health, its headers, and which of
//!    its files may be deleted (each proven to belong to the pool set).
//! 3. `journal` finds, reads and writes the journal of a staged
//!    transform and judges its temporary copy.
//! 4. `target` proves that files about to be replaced are ours, builds
//!    the headers of the target's rings and checks the free space.
//! 5. `simple` plans transforms that only create and delete files, as
//!    pmempool does; `staged` plans those that rewrite replicas onto
//!    their own files. Both build a [`TransformPlan`] whose data and header
//!    steps are the executor's steps on the target set.
//! 6. `run` carries the plan out through the executor
//!    ([`crate::exec::run`]), with the temporary copy or the source as one
//!    more endpoint where the data comes from there.
//!
//! [`transform`] does it all; [`plan()`] and [`execute`] are the two
//! halves, so that a dry run prints exactly the plan a real run executes.

mod journal;
mod request;
mod run;
mod simple;
mod source;
mod staged;
mod target;
mod types;

use std::path::Path;

use poolsync_pmem::Storage;

use crate::exec::Progress;
use crate::open::OpenSet;
use crate::Error;

pub use crate::ownership::{ownership, Ownership};
pub use journal::{
    interrupted, journal_path, parse_journal, Journal, JournalError, JOURNAL_MAX, JOURNAL_SUFFIX,
    JOURNAL_VERSION, TEMP_SUFFIX,
};
pub use run::execute;
pub use types::{
    DataFrom, JournalPlan, NewPart, Operation, RemovedPart, Staging, TempCopy, TransformOptions,
    TransformOutcome, TransformPlan, TransformReport, TransformTotals,
};

/// Plans and (unless a dry run) carries out the transform of `src` into
/// `dst`.
pub fn transform<S: Storage>(
    storage: &S,
    src: &Path,
    dst: &Path,
    options: &TransformOptions,
    progress: &dyn Progress,
) -> Result<TransformOutcome, Error> {
    let (plan, mut target) = plan(storage, src, dst, options)?;
    if options.dry_run {
        return Ok(TransformOutcome { plan, report: None });
    }
    let report = execute(storage, &mut target, &plan, options, progress)?;
    Ok(TransformOutcome {
        plan,
        report: Some(report),
    })
}

/// Decides, validates and plans the transform of `src` into `dst`; returns
/// the plan and the target set, open read-write for a real run and
/// read-only for a dry run.
pub fn plan<S: Storage>(
    storage: &S,
    src: &Path,
    dst: &Path,
    options: &TransformOptions,
) -> Result<(TransformPlan, OpenSet<S::File>), Error> {
    let req = request::Request::read(storage, src, dst)?;
    let journal = journal::find_journal(storage, src)?;
    let planned = if req.is_staged() {
        staged::plan(storage, &req, journal, options)?
    } else {
        simple::plan(storage, &req, journal, options)?
    };
    target::check_entries(storage, src, dst, &planned.0)?;
    Ok(planned)
}
