//! Carrying out a transform plan: delete what a stale run left, write the
//! journal, create the new parts, run the data and header steps through the
//! executor, delete what the plan deletes and the journal last; for a
//! staged plan, the temporary copy comes before the parts.

use std::path::{Path, PathBuf};

use poolsync_header::{PoolHdr, POOL_HDR_CSUM_OFF, POOL_HDR_SIZE};
use poolsync_pmem::{Access, PartFile, Storage};
use poolsync_poolset::PAGE;

use super::journal::{temp_header, write_journal};
use super::types::{
    DataFrom, JournalPlan, Operation, Staging, TempCopy, TransformOptions, TransformPlan,
    TransformReport,
};
use crate::durable;
use crate::endpoint::Endpoint;
use crate::exec::{
    self, data_steps, DataPurpose, Endpoints, ExecReport, Progress, RunOptions, Step,
};
use crate::open::{open, unusable, HeaderState, OpenReplica, OpenSet, PartStatus};
use crate::range::LogicalRange;
use crate::Error;

/// Carries out `plan` on `target` (the set [`super::plan()`] returned,
/// open read-write): deletes stale files, creates the new parts, runs the
/// data and header steps, and deletes the removed replicas' files.
///
/// Planning refused what it could foresee; a failure that still comes
/// ([`Error::Unfinished`]) names the command that finishes the job: the
/// same transform, run again, recognises what this run left (its journal,
/// its marks, the links already rewritten) and goes on from there.
pub fn execute<S: Storage>(
    storage: &S,
    target: &mut OpenSet<S::File>,
    plan: &TransformPlan,
    options: &TransformOptions,
    progress: &dyn Progress,
) -> Result<TransformReport, Error> {
    execute_plan(storage, target, plan, options, progress).map_err(|error| Error::Unfinished {
        command: format!(
            "poolsync transform {} {}",
            plan.source.display(),
            plan.target.display()
        ),
        error: Box::new(error),
    })
}

fn execute_plan<S: Storage>(
    storage: &S,
    target: &mut OpenSet<S::File>,
    plan: &TransformPlan,
    options: &TransformOptions,
    progress: &dyn Progress,
) -> Result<TransformReport, Error> {
    let discard: Vec<&Path> = plan.discard.iter().map(PathBuf::as_path).collect();
    // A stale device is zeroed through a descriptor of its own, which its
    // lock as a target part would refuse: the target lets it go (creating
    // the part opens it again).
    for part in target.replicas.iter_mut().flat_map(|r| r.parts.iter_mut()) {
        if part.device.is_some() && discard.contains(&part.path.as_path()) {
            part.file = None;
        }
    }
    remove_in_order(storage, &discard)?;
    // Before anything is created, the journal names it.
    if let Some(journal) = plan.journal.as_ref().filter(|j| j.write) {
        write_journal(storage, plan, journal, &target.set)?;
    }
    if let Some(staging) = &plan.staging {
        return execute_staged(storage, target, plan, staging, options, progress);
    }
    let mut report = TransformReport::default();
    for c in &plan.create {
        let slot = target
            .replicas
            .get_mut(c.replica)
            .and_then(|r| r.parts.get_mut(c.part))
            .ok_or_else(|| Error::InvalidRequest {
                path: plan.target.clone(),
                reason: format!("replica {} part {}: not in the pool set", c.replica, c.part),
            })?;
        slot.file = None;
        let file = if c.device {
            // A device is overwritten in place (docs/format.md §25.3).
            storage.open(&c.path, Access::ReadWrite)?
        } else {
            if c.replace {
                // Gone already when the plan discarded it as a stale leftover.
                durable::remove_if_exists(storage, &c.path)?;
            }
            let file = storage.create(&c.path, c.size)?;
            file.fence()?;
            file
        };
        if let Some(hdr) = &c.header {
            // The future header, marked as unfinished: proof that the file
            // is ours if this run is interrupted.
            let mut mark = hdr.clone();
            mark.crtime = file.ctime()?;
            mark.checksum = !mark.compute_checksum();
            durable::write_header(&file, &mark)?;
        }
        if !c.device {
            storage.set_mode(&c.path, plan.mode)?;
        }
        slot.file = Some(file);
        slot.status = PartStatus::Ok;
        if !matches!(slot.header, HeaderState::None) {
            slot.header = HeaderState::NotRead;
        }
        report.parts_created += 1;
    }
    report.sync = run_steps(
        storage,
        &plan.steps.path,
        &plan.steps.steps,
        &mut Endpoints::of(target),
        options,
        progress,
    )?;
    let remove: Vec<&Path> = plan.remove.iter().map(|r| r.path.as_path()).collect();
    report.parts_removed = count(&remove_in_order(storage, &remove)?);
    remove_journal(storage, plan.journal.as_ref())?;
    Ok(report)
}

/// Deletes the journal, last: until it is gone a re-run knows what to do.
fn remove_journal<S: Storage>(storage: &S, journal: Option<&JournalPlan>) -> Result<(), Error> {
    if let Some(journal) = journal {
        durable::remove_if_exists(storage, &journal.path)?;
        storage.fsync_parent(&journal.path)?;
    }
    Ok(())
}

/// Runs `steps` with progress over their bytes.
fn run_steps<S: Storage>(
    storage: &S,
    path: &Path,
    steps: &[Step],
    endpoints: &mut Endpoints<'_, S::File>,
    options: &TransformOptions,
    progress: &dyn Progress,
) -> Result<ExecReport, Error> {
    let totals = exec::totals(steps);
    progress.start(totals.bytes_to_copy + totals.bytes_to_compare);
    let report = exec::run(
        storage,
        path,
        steps,
        endpoints,
        RunOptions {
            alternates: &[],
            tuning: options.tuning(),
            progress,
            prepared: None,
        },
    )?;
    progress.finish();
    Ok(report)
}

/// Removes every one of `paths` that exists, in order, each durably (its
/// directory synced) before the next: a file that proves another one ours
/// (a part 0 for the parts without a header, a journal for what it names)
/// comes after it, so that a crash never leaves a file whose proof is
/// gone. Says for each whether it was there to remove.
fn remove_in_order<S: Storage>(storage: &S, paths: &[&Path]) -> Result<Vec<bool>, Error> {
    let mut removed = Vec::with_capacity(paths.len());
    for path in paths {
        let was = durable::remove_part(storage, path)?;
        if was {
            storage.fsync_parent(path)?;
        }
        removed.push(was);
    }
    Ok(removed)
}

/// How many of [`remove_in_order`]'s paths were removed.
fn count(removed: &[bool]) -> u64 {
    removed.iter().filter(|&&r| r).count() as u64
}

/// Carries out a staged plan. `target` is the set the plan was made on; its
/// handles are released while the source is read into the temporary copy,
/// then it is opened again read-write.
fn execute_staged<S: Storage>(
    storage: &S,
    target: &mut OpenSet<S::File>,
    plan: &TransformPlan,
    staging: &Staging,
    options: &TransformOptions,
    progress: &dyn Progress,
) -> Result<TransformReport, Error> {
    let mut report = TransformReport::default();
    if !matches!(plan.operation, Operation::Finish) {
        // Let go of the target: the source opens some of its parts.
        target.release();
        if let Some(temp) = staging.temporary.as_ref().filter(|t| !t.complete) {
            stage(storage, plan, temp, options, progress)?;
        }
        for path in &staging.invalidate {
            invalidate_header(storage, path)?;
        }
        let mut reopened = open(storage, &plan.target, Access::ReadWrite)?;
        let n = reopened.replicas.len();
        // The endpoint the data is read from, when it is not a target
        // replica: the temporary copy, or the source's replica 0 (its
        // parts are not the target's, so both sets can be open).
        let mut source_set = None;
        let extra: Option<OpenReplica<S::File>> = match (&staging.temporary, staging.data_from) {
            (Some(temp), _) => Some(OpenReplica::single_file(
                n,
                format!("the temporary copy {}", temp.path.display()),
                temp.path.clone(),
                temp.size,
                Some(storage.open(&temp.path, Access::ReadOnly)?),
            )),
            (None, DataFrom::Source) => {
                let mut set = open(storage, &plan.source, Access::ReadOnly)?;
                let mut replica = set.replicas.swap_remove(0);
                replica.index = n;
                replica.label = format!("replica 0 of {}", plan.source.display());
                source_set = Some(set);
                Some(replica)
            }
            (None, _) => None,
        };
        let mut endpoints = Endpoints::of(&mut reopened);
        if let Some(ep) = &extra {
            endpoints.extra.push(ep as &dyn Endpoint);
        }
        report.sync = run_steps(
            storage,
            &plan.steps.path,
            &plan.steps.steps,
            &mut endpoints,
            options,
            progress,
        )?;
        // The data source's handles go before the files are deleted.
        drop(extra);
        drop(source_set);
        *target = reopened;
        report.parts_created = plan.totals.parts_to_create;
    }
    let mut doomed: Vec<&Path> = plan.remove.iter().map(|r| r.path.as_path()).collect();
    let parts = doomed.len();
    doomed.extend(staging.temporary.iter().map(|t| t.path.as_path()));
    let removed = remove_in_order(storage, &doomed)?;
    report.parts_removed = count(removed.get(..parts).unwrap_or_default());
    remove_journal(storage, plan.journal.as_ref())?;
    Ok(report)
}

/// Inverts the checksum of the header of `path` and makes that durable,
/// unless the header is already not valid (a resumed run).
fn invalidate_header<S: Storage>(storage: &S, path: &Path) -> Result<(), Error> {
    let file = storage.open(path, Access::ReadWrite)?;
    let mut page = vec![0u8; POOL_HDR_SIZE];
    file.read_at(0, &mut page)?;
    let Ok(hdr) = PoolHdr::decode(&page) else {
        return Ok(());
    };
    if !hdr.checksum_ok() {
        return Ok(());
    }
    durable::write_at(
        &file,
        POOL_HDR_CSUM_OFF as u64,
        &(!hdr.checksum).to_le_bytes(),
    )
}

/// The header of the source's replica 0 part 0, which the plan read, or
/// why it cannot be read now (opened for writing, it may fail with EROFS or
/// EACCES; its header read with EIO), naming the file.
fn master_header<F: PartFile>(source: &OpenSet<F>) -> Result<PoolHdr, Error> {
    let Some(part) = source.part(0, 0) else {
        return Err(Error::InvalidRequest {
            path: source.path.clone(),
            reason: "the source has no replica 0 part 0".to_string(),
        });
    };
    let why = match (part.read_header(), &part.status) {
        (Ok(read), _) => return Ok(read.hdr.clone()),
        (Err(_), status @ PartStatus::Inaccessible { .. }) => format!("the part file {status}"),
        (Err(why), _) => why,
    };
    Err(unusable(source, 0, 0, &part.path, why))
}

/// Copies the source's address space into the temporary copy, then writes
/// its header: the source master's attributes as a single-file pool.
fn stage<S: Storage>(
    storage: &S,
    plan: &TransformPlan,
    temp: &TempCopy,
    options: &TransformOptions,
    progress: &dyn Progress,
) -> Result<(), Error> {
    durable::remove_if_exists(storage, &temp.path)?;
    let file = storage.create(&temp.path, temp.size)?;
    file.fence()?;
    storage.fsync_parent(&temp.path)?;
    let mut source = open(storage, &plan.source, Access::ReadWrite)?;
    let master = master_header(&source)?;
    let n = source.replicas.len();
    let copy = OpenReplica::single_file(
        n,
        format!("the temporary copy {}", temp.path.display()),
        temp.path.clone(),
        temp.size,
        Some(file),
    );
    let mut steps = Vec::new();
    if let (Some(from), true) = (source.replica(0), plan.pool_size > PAGE) {
        steps = data_steps(
            DataPurpose::Rebuild,
            (0, from as &dyn Endpoint),
            (n, &copy as &dyn Endpoint),
            LogicalRange::from_bounds(PAGE, plan.pool_size),
        );
    }
    let mut endpoints = Endpoints::of(&mut source);
    endpoints.extra.push(&copy);
    run_steps(
        storage,
        &plan.source,
        &steps,
        &mut endpoints,
        options,
        progress,
    )?;
    // Complete: the header makes the copy a single-file pool of its own.
    durable::write_header(copy.part_file(0)?, &temp_header(&master))?;
    drop(copy);
    storage.set_mode(&temp.path, 0o600)?;
    storage.fsync_parent(&temp.path)?;
    Ok(())
}
