//! `transform` on the simulated storage: adding and removing replicas,
//! pmempool's refusals (each leaving every file as it was), the ownership
//! check of files that would be overwritten or deleted, and crash points:
//! every persistence event of a run is a crash point, and after a crash
//! either the old pool set file opens a healthy, unchanged source, or
//! running the transform again (following its instructions where it gives
//! any) ends exactly where an uninterrupted run ends.

use std::path::{Path, PathBuf};

use poolsync_engine::inspect::inspect;
use poolsync_engine::open::open;
use poolsync_engine::sync::{NoProgress, UuidSource};
use poolsync_engine::transform::{transform, Operation, TransformOptions};
use poolsync_engine::Error;
use poolsync_header::{PoolHdr, POOL_HDR_CRTIME_OFF, POOL_HDR_CSUM_OFF, POOL_HDR_SIZE};
use poolsync_pmem::sim::{EventScope, SimImage, SimStorage, Survival};
use poolsync_pmem::{Access, Error as PmemError, Storage};
use poolsync_poolset::{map_range, PoolSet};

use crate::sync_crash::{write_file, Fixture};

const M: u64 = 1 << 20;

pub fn options() -> TransformOptions {
    TransformOptions {
        threads: 1,
        stride: 4 << 20,
        uuids: UuidSource::Derived { seed: 7 },
        ..TransformOptions::default()
    }
}

/// Writes a pool set file with the given replicas (part paths and MiB).
fn set_file(s: &SimStorage, path: &Path, replicas: &[&[(&str, u64)]]) -> PoolSet {
    set_file_with(s, path, false, replicas)
}

/// [`set_file`], with `OPTION SINGLEHDR` when `single_hdr`.
fn set_file_with(
    s: &SimStorage,
    path: &Path,
    single_hdr: bool,
    replicas: &[&[(&str, u64)]],
) -> PoolSet {
    let mut text = String::from("PMEMPOOLSET\n");
    if single_hdr {
        text.push_str("OPTION SINGLEHDR\n");
    }
    for (r, parts) in replicas.iter().enumerate() {
        if r > 0 {
            text.push_str("REPLICA\n");
        }
        for (p, mib) in *parts {
            text.push_str(&format!("{mib}M {p}\n"));
        }
    }
    if s.stat(path).expect("stat").is_some() {
        s.remove(path).expect("replace set file");
    }
    s.insert_file(path, text.as_bytes(), 0o644)
        .expect("set file");
    poolsync_poolset::parse(&text).expect("parse")
}

/// Reads logical `[offset, offset+len)` of replica `r` of `set`.
pub fn read_logical(s: &SimStorage, set: &PoolSet, r: usize, offset: u64, len: u64) -> Vec<u8> {
    let extents = set.extents(r).expect("extents");
    let poolsync_poolset::Replica::Local { parts, .. } = &set.replicas[r] else {
        panic!("remote");
    };
    let mut out = Vec::new();
    for piece in map_range(&extents, offset, len) {
        let bytes = s
            .written_bytes(Path::new(&parts[piece.part].path))
            .expect("part");
        let at = piece.file_offset as usize;
        out.extend_from_slice(&bytes[at..at + piece.len as usize]);
    }
    out
}

pub fn healthy(s: &SimStorage, set: &Path) -> bool {
    open(s, set, Access::ReadOnly).is_ok_and(|o| inspect(&o).is_healthy())
}

/// Every file's bytes and mode, with crtime and checksum of every valid
/// header zeroed (they depend on the clock).
pub fn normalized(s: &SimStorage) -> SimImage {
    let mut image = s.image();
    let files: Vec<(PathBuf, Vec<u8>, u32)> = image
        .files()
        .iter()
        .map(|(p, f)| (p.clone(), f.bytes.clone(), f.mode))
        .collect();
    for (path, mut bytes, mode) in files {
        if bytes.len() >= POOL_HDR_SIZE
            && PoolHdr::decode(&bytes).is_ok_and(|h| h.checksum_ok() && !h.is_zero())
        {
            bytes[POOL_HDR_CRTIME_OFF..POOL_HDR_CRTIME_OFF + 8].fill(0);
            bytes[POOL_HDR_CSUM_OFF..POOL_HDR_SIZE].fill(0);
        }
        image.insert(&path, bytes, mode);
    }
    image
}

const SRC2: &[&[(&str, u64)]] = &[
    &[("/pool/r0p0", 8), ("/pool/r0p1", 8)],
    &[("/pool/r1p0", 16)],
];
const ADD: &[&[(&str, u64)]] = &[
    &[("/pool/r0p0", 8), ("/pool/r0p1", 8)],
    &[("/pool/r1p0", 16)],
    &[("/pool/n0", 9), ("/pool/n1", 9)],
];
const REMOVE_FIRST: &[&[(&str, u64)]] = &[&[("/pool/r1p0", 16)]];

fn fixture() -> Fixture {
    Fixture::new(&[&[8, 8], &[16]], false)
}

#[test]
fn adding_a_replica_copies_the_pool_and_links_every_header() {
    let fx = fixture();
    let s = fx.copy();
    let dst = Path::new("/pool/dst.set");
    let dset = set_file(&s, dst, ADD);
    let dry = transform(
        &s,
        &fx.set_path,
        dst,
        &TransformOptions {
            dry_run: true,
            ..options()
        },
        &NoProgress,
    )
    .expect("dry run");
    assert_eq!(
        dry.plan.operation,
        Operation::AddReplicas { replicas: vec![2] }
    );
    assert!(dry.report.is_none());
    assert_eq!(
        s.stat(Path::new("/pool/n0")).expect("stat"),
        None,
        "dry run wrote"
    );
    assert_eq!(dry.plan.totals.parts_to_create, 2);
    assert_eq!(dry.plan.totals.bytes_to_copy, dry.plan.pool_size - 4096);

    let done = transform(&s, &fx.set_path, dst, &options(), &NoProgress).expect("transform");
    assert_eq!(
        done.plan, dry.plan,
        "the dry run and the real run share the plan"
    );
    let report = done.report.expect("report");
    assert_eq!(report.parts_created, 2);
    assert_eq!(report.sync.bytes_copied, done.plan.totals.bytes_to_copy);
    assert!(healthy(&s, dst), "target healthy");
    let pool = done.plan.pool_size;
    let master = read_logical(&s, &dset, 0, 4096, pool - 4096);
    assert_eq!(read_logical(&s, &dset, 2, 4096, pool - 4096), master);
    // New parts get the master's mode.
    assert_eq!(
        s.stat(Path::new("/pool/n1"))
            .expect("stat")
            .expect("n1")
            .mode,
        0o640
    );
    // Run again: finished, nothing to do.
    let again = transform(&s, &fx.set_path, dst, &options(), &NoProgress).expect("re-run");
    assert!(again.plan.is_noop(), "{:?}", again.plan);
}

#[test]
fn removing_a_replica_relinks_the_rest_and_deletes_its_files() {
    let fx = fixture();
    let s = fx.copy();
    let dst = Path::new("/pool/dst.set");
    set_file(&s, dst, REMOVE_FIRST);
    let done = transform(&s, &fx.set_path, dst, &options(), &NoProgress).expect("transform");
    assert_eq!(
        done.plan.operation,
        Operation::RemoveReplicas { replicas: vec![0] }
    );
    assert_eq!(done.plan.totals.parts_to_remove, 2);
    assert_eq!(s.stat(fx.part(0, 0)).expect("stat"), None);
    assert_eq!(s.stat(fx.part(0, 1)).expect("stat"), None);
    assert!(healthy(&s, dst));
}

/// Runs a transform expected to be refused and checks that nothing changed.
fn refused(s: &SimStorage, src: &Path, dst: &Path) -> String {
    let before = s.image();
    let err = transform(s, src, dst, &options(), &NoProgress).expect_err("refused");
    assert_eq!(s.image(), before, "a refused transform changed something");
    err.to_string()
}

#[test]
fn pmempools_refusals_change_nothing() {
    let fx = fixture();
    let s = fx.copy();
    let dst = Path::new("/pool/dst.set");

    set_file(&s, dst, SRC2);
    assert!(refused(&s, &fx.set_path, dst).contains("both poolsets are equal"));

    // Changing SINGLEHDR together with the replicas is refused.
    s.remove(dst).expect("replace set file");
    s.insert_file(
        dst,
        b"PMEMPOOLSET\nOPTION SINGLEHDR\n8M /pool/r0p0\n8M /pool/r0p1\n",
        0o644,
    )
    .expect("set file");
    assert!(refused(&s, &fx.set_path, dst).contains("change one thing at a time"));

    set_file(
        &s,
        dst,
        &[
            &[("/pool/r0p0", 8), ("/pool/r0p1", 8)],
            &[("/pool/r1p0", 16)],
            &[("/pool/x", 9)],
        ],
    );
    assert!(refused(&s, &fx.set_path, dst).contains("target poolset is too small"));

    set_file(
        &s,
        dst,
        &[
            &[("/pool/r0p0", 8), ("/pool/r0p1", 8)],
            &[("/pool/r1p0", 16)],
            &[("/pool/x", 4)],
        ],
    );
    assert!(refused(&s, &fx.set_path, dst).contains("8388608"));

    set_file(
        &s,
        dst,
        &[
            &[("/pool/r0p0", 8), ("/pool/r0p1", 8)],
            &[("/pool/r1p0", 16)],
            &[("/nodir/x", 16)],
        ],
    );
    assert!(refused(&s, &fx.set_path, dst).contains("does not exist"));

    set_file(
        &s,
        dst,
        &[
            &[("/pool/r0p0", 8), ("/pool/r0p1", 8)],
            &[("/pool/r1p0", 16)],
            &[("/pool/x", 8), ("/pool/x", 8)],
        ],
    );
    assert!(refused(&s, &fx.set_path, dst).contains("same file"));

    // A part being added exists and belongs to something else.
    s.insert_file(Path::new("/pool/x"), &vec![0xa5; 16 << 20], 0o644)
        .expect("foreign");
    set_file(
        &s,
        dst,
        &[
            &[("/pool/r0p0", 8), ("/pool/r0p1", 8)],
            &[("/pool/r1p0", 16)],
            &[("/pool/x", 16)],
        ],
    );
    let msg = refused(&s, &fx.set_path, dst);
    assert!(
        msg.contains("some parts being added already exist") && msg.contains("/pool/x"),
        "{msg}"
    );

    // A part being added is a copy of a source part (a backup): it carries
    // this pool set's uuid, but it is not ours to overwrite.
    s.remove(Path::new("/pool/x")).expect("rm");
    let copy = s.written_bytes(fx.part(1, 0)).expect("part");
    s.insert_file(Path::new("/pool/x"), &copy, 0o644)
        .expect("backup");
    let msg = refused(&s, &fx.set_path, dst);
    assert!(msg.contains("is a copy of a part of the source"), "{msg}");

    // A broken source.
    crate::sync_crash::flip(&s, fx.part(1, 0), 60);
    set_file(&s, dst, ADD);
    assert!(refused(&s, &fx.set_path, dst).contains("source poolset is broken"));
}

#[test]
fn a_file_of_another_pool_set_is_never_deleted() {
    // Replica 0 part 1 was swapped for the part of another pool set (a
    // copy with another pool set uuid): the source is not healthy, and the
    // transform refuses before anything is written.
    let fx = fixture();
    let other = Fixture::new(&[&[8, 8], &[16]], false);
    let s = fx.copy();
    let foreign = other.base.written_bytes(other.part(0, 1)).expect("part");
    write_file(&s, fx.part(0, 1), 0, &foreign[..4096]);
    let dst = Path::new("/pool/dst.set");
    set_file(&s, dst, REMOVE_FIRST);
    let msg = refused(&s, &fx.set_path, dst);
    assert!(msg.contains("broken") || msg.contains("uuid"), "{msg}");
    assert!(s.stat(fx.part(0, 1)).expect("stat").is_some());
}

/// Runs the transform on a copy to the end, then crashes it at every
/// change it makes (every create, before and after the file appears, and
/// every write, flush, fence, chmod, remove and directory sync) and checks
/// the two allowed outcomes. No crash point may need a manual step: the
/// re-run alone finishes, and a third run has nothing to do.
fn crash_everywhere(fx: &Fixture, target: &[&[(&str, u64)]], single_hdr: bool, torn_every: u64) {
    let dst = Path::new("/pool/dst.set");
    let base = fx.copy();
    base.set_event_scope(EventScope::EveryChange);
    set_file_with(&base, dst, single_hdr, target);
    let reference = base.after_crash_with(Survival::Everything);
    transform(&reference, &fx.set_path, dst, &options(), &NoProgress).expect("uninterrupted");
    let expected = normalized(&reference);
    let events = reference.events();
    assert!(events >= 3, "only {events} events");
    let source_before = normalized(&base);

    let (mut runs, mut source_healthy) = (0, 0);
    for k in 0..events {
        let crashed = base.after_crash_with(Survival::Everything);
        crashed.crash_after(k);
        match transform(&crashed, &fx.set_path, dst, &options(), &NoProgress) {
            Err(Error::Storage(PmemError::SimulatedCrash { event })) => assert_eq!(event, k),
            other => panic!("crash at event {k}: expected a simulated crash, got {other:?}"),
        }
        let mut survivals = vec![Survival::Durable, Survival::Everything];
        if torn_every > 0 && k % torn_every == 0 {
            survivals.push(Survival::Torn { seed: k });
        }
        for survival in survivals {
            runs += 1;
            let rebooted = crashed.after_crash_with(survival);
            let src_ok = healthy(&rebooted, &fx.set_path);
            if src_ok {
                source_healthy += 1;
                // The old set file opens the source, and its data is unchanged.
                let now = normalized(&rebooted);
                for part in fx.parts.iter().flatten() {
                    assert_eq!(
                        now.get(part).map(|f| &f.bytes),
                        source_before.get(part).map(|f| &f.bytes),
                        "event {k} {survival:?}: {} changed while the source is in use",
                        part.display()
                    );
                }
            }
            if let Err(e) = transform(&rebooted, &fx.set_path, dst, &options(), &NoProgress) {
                panic!("event {k} {survival:?} (source healthy: {src_ok}): the re-run failed: {e}");
            }
            assert!(
                healthy(&rebooted, dst),
                "event {k} {survival:?}: target not healthy"
            );
            assert_eq!(
                normalized(&rebooted),
                expected,
                "event {k} {survival:?}: ended elsewhere"
            );
            let again = transform(&rebooted, &fx.set_path, dst, &options(), &NoProgress)
                .unwrap_or_else(|e| panic!("event {k} {survival:?}: third run: {e}"));
            assert!(
                again.plan.is_noop(),
                "event {k} {survival:?}: third run not a no-op"
            );
        }
    }
    eprintln!(
        "{} -> {target:?}: {events} crash points, {runs} re-runs ({source_healthy} with a healthy source), none needed a manual step",
        fx.set_path.display()
    );
}

#[test]
fn crash_while_adding_a_replica() {
    crash_everywhere(&fixture(), ADD, false, 3);
}

#[test]
fn crash_while_removing_a_replica() {
    crash_everywhere(&fixture(), REMOVE_FIRST, false, 1);
}

const RESHAPE: &[&[(&str, u64)]] = &[&[("/pool/r1p0", 16)], &[("/pool/n0", 10), ("/pool/n1", 8)]];

#[test]
fn reshaping_replaces_a_replica_by_one_of_another_layout() {
    let fx = fixture();
    let s = fx.copy();
    let dst = Path::new("/pool/dst.set");
    let dset = set_file(&s, dst, RESHAPE);
    let done = transform(&s, &fx.set_path, dst, &options(), &NoProgress).expect("reshape");
    assert_eq!(
        done.plan.operation,
        Operation::Reshape {
            added: vec![1],
            removed: vec![0]
        }
    );
    assert!(healthy(&s, dst));
    assert_eq!(s.stat(fx.part(0, 0)).expect("stat"), None);
    let pool = done.plan.pool_size;
    assert_eq!(
        read_logical(&s, &dset, 1, 4096, pool - 4096),
        read_logical(&s, &dset, 0, 4096, pool - 4096)
    );
}

#[test]
fn crash_while_reshaping() {
    crash_everywhere(&fixture(), RESHAPE, false, 4);
}

#[test]
fn crash_while_adding_two_replicas_to_three() {
    let fx = Fixture::new(&[&[16], &[8, 8], &[16]], false);
    let target: &[&[(&str, u64)]] = &[
        &[("/pool/a", 16)],
        &[("/pool/r0p0", 16)],
        &[("/pool/r1p0", 8), ("/pool/r1p1", 8)],
        &[("/pool/r2p0", 16)],
        &[("/pool/b", 20)],
    ];
    let _ = M;
    crash_everywhere(&fx, target, false, 0);
}

/// SINGLEHDR on both sides: a replica of three parts is added, two of
/// them without a header of their own, which hold pool data from their
/// first byte.
#[test]
fn crash_while_adding_a_singlehdr_replica() {
    let fx = Fixture::new(&[&[8, 8]], true);
    let target: &[&[(&str, u64)]] = &[
        &[("/pool/r0p0", 8), ("/pool/r0p1", 8)],
        &[("/pool/n0", 8), ("/pool/n1", 8), ("/pool/n2", 8)],
    ];
    crash_everywhere(&fx, target, true, 5);
}

/// SINGLEHDR on both sides: a replica of three parts is removed; its
/// parts without a header belong with its part 0, which is deleted last.
#[test]
fn crash_while_removing_a_singlehdr_replica() {
    let fx = Fixture::new(&[&[16], &[8, 8, 8]], true);
    crash_everywhere(&fx, &[&[("/pool/r0p0", 16)]], true, 1);
}

/// Crashes an add of `ADD` at the first event after which a killed run
/// leaves `path` empty (created, not yet allocated), and reboots with what
/// the killed process had written.
fn killed_while_creating(fx: &Fixture, path: &Path) -> SimStorage {
    let dst = Path::new("/pool/dst.set");
    let base = fx.copy();
    base.set_event_scope(EventScope::EveryChange);
    set_file(&base, dst, ADD);
    (0..200)
        .find_map(|k| {
            let crashed = base.after_crash_with(Survival::Everything);
            crashed.crash_after(k);
            transform(&crashed, &fx.set_path, dst, &options(), &NoProgress).expect_err("crash");
            let rebooted = crashed.after_crash_with(Survival::Everything);
            (rebooted.written_bytes(path) == Some(Vec::new())).then_some(rebooted)
        })
        .expect("a crash point between creating and allocating the part")
}

/// The reported case: killed between creating a new part and allocating
/// it, the run leaves an empty file of mode 0. Its journal names it, so
/// the re-run deletes it and the journal first, and finishes alone.
#[test]
fn an_empty_part_left_by_a_killed_add_is_recognised() {
    let fx = fixture();
    let n0 = Path::new("/pool/n0");
    let s = killed_while_creating(&fx, n0);
    let meta = s.stat(n0).expect("stat").expect("n0 is left");
    assert_eq!((meta.len, meta.mode), (0, 0));
    let journal = Path::new("/pool/pool.set.poolsync-journal");
    let text = String::from_utf8(s.written_bytes(journal).expect("a journal")).expect("text");
    assert!(
        text.contains("new_parts = [\"/pool/n0\", \"/pool/n1\"]"),
        "{text}"
    );
    let dst = Path::new("/pool/dst.set");
    let done = transform(&s, &fx.set_path, dst, &options(), &NoProgress).expect("re-run");
    assert_eq!(
        done.plan.discard,
        vec![n0.to_path_buf(), journal.to_path_buf()]
    );
    assert!(healthy(&s, dst));
    assert_eq!(
        s.stat(journal).expect("stat"),
        None,
        "the journal is deleted"
    );
}

/// A file that the journal names but that carries another pool set's
/// header (put there after the crash) is neither deleted nor overwritten:
/// the re-run refuses, naming it, and changes nothing.
#[test]
fn a_foreign_file_where_the_journal_names_a_part_is_left_alone() {
    let fx = fixture();
    let n0 = Path::new("/pool/n0");
    let s = killed_while_creating(&fx, n0);
    let other = Fixture::new(&[&[8]], false);
    let foreign = other.base.written_bytes(other.part(0, 0)).expect("part");
    s.remove(n0).expect("rm");
    s.insert_file(n0, &foreign, 0o644).expect("foreign");
    let msg = refused(&s, &fx.set_path, Path::new("/pool/dst.set"));
    assert!(
        msg.contains("/pool/n0") && msg.contains("some parts being added already exist"),
        "{msg}"
    );
    assert_eq!(s.written_bytes(n0), Some(foreign));
}
