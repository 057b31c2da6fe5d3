//! Repairing what verification decided: the source's bytes copied over
//! every block it is right about, through the executor.

use poolsync_pmem::{Access, PartFile, Storage};

use super::find::{endpoint, intersect};
use super::{Findings, RepairReport, ReplicaRepair, VerifyOptions};
use crate::exec::{data_steps, DataPurpose, Endpoints, Prepared, RunOptions, Step, Tuning};
use crate::open::OpenSet;
use crate::sync::Progress;
use crate::Error;

/// The copy steps that put the source's bytes over every block of every
/// replica the source is right about, replica by replica.
pub(super) fn steps<F: PartFile>(
    set: &OpenSet<F>,
    findings: &Findings,
) -> Result<Vec<Step>, Error> {
    let source = findings.source;
    let from = (source, endpoint(set, source)?);
    let mut out = Vec::new();
    for rf in findings.replicas.iter().filter(|r| !r.repair.is_empty()) {
        let to = (rf.replica, endpoint(set, rf.replica)?);
        for block in &rf.repair {
            out.extend(data_steps(DataPurpose::Verify, from, to, *block));
        }
    }
    Ok(out)
}

/// Bytes [`run`] writes for `findings`.
pub(super) fn bytes(findings: &Findings) -> u64 {
    findings
        .replicas
        .iter()
        .flat_map(|r| r.repair.iter())
        .map(|b| b.len)
        .sum()
}

/// Copies the source's bytes of every block `findings` says the source is
/// right about over each compared replica: `steps` (from `steps`) run
/// through the executor, flushed as written, fenced per replica, with
/// progress, and with a block the source cannot read (`EIO`) taken from a
/// replica that agrees with the source there. `set` must be open
/// read-write.
pub fn repair<S: Storage>(
    storage: &S,
    set: &mut OpenSet<S::File>,
    findings: &Findings,
    options: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<RepairReport, Error> {
    let steps = steps(set, findings)?;
    run(storage, set, findings, &steps, None, options, progress)
}

/// [`repair`] with its steps made, and what a survey learnt of them.
pub(super) fn run<S: Storage>(
    storage: &S,
    set: &mut OpenSet<S::File>,
    findings: &Findings,
    steps: &[Step],
    prepared: Option<&Prepared>,
    options: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<RepairReport, Error> {
    if set.access != Access::ReadWrite {
        return Err(Error::InvalidRequest {
            path: set.path.clone(),
            reason: "the pool set is not open read-write".to_string(),
        });
    }
    let mut report = RepairReport {
        source: findings.source,
        replicas: Vec::new(),
    };
    for rf in findings.replicas.iter().filter(|r| !r.repair.is_empty()) {
        let mine: Vec<Step> = steps
            .iter()
            .filter(|s| matches!(s, Step::CopyRange(d) if d.replica == rf.replica))
            .cloned()
            .collect();
        // Replicas compared with the source that differ from it nowhere
        // this replica is repaired can stand in for it.
        let alternates: Vec<usize> = findings
            .replicas
            .iter()
            .filter(|o| o.compared && o.replica != rf.replica)
            .filter(|o| intersect(&o.blocks, &rf.repair).is_empty())
            .map(|o| o.replica)
            .collect();
        let path = set.path.clone();
        let done = crate::exec::run(
            storage,
            &path,
            &mine,
            &mut Endpoints::of(set),
            RunOptions {
                alternates: &alternates,
                tuning: Tuning {
                    stride: options.compare.stride,
                    threads: options.compare.threads,
                },
                progress,
                prepared,
            },
        )?;
        report.replicas.push(ReplicaRepair {
            replica: rf.replica,
            ranges: rf.ranges,
            bytes: rf.bytes,
            bytes_written: done.bytes_copied,
        });
    }
    Ok(report)
}
