//! `transform` on the simulated storage: adding and removing replicas,
//! pmempool's refusals (each leaving every file as it was), the ownership
//! check of files that would be overwritten or deleted, and crash points:
//! every persistence event of a run is a crash point, and after a crash
//! either the old pool set file opens a healthy, unchanged source, or
//! running the transform again (following its instructions where it gives
//! any) ends exactly where an uninterrupted run ends.

use std::path::Path;

use poolsync_engine::sync::{NoProgress, UuidSource};
use poolsync_engine::transform::{transform, Operation, TransformOptions};
use poolsync_pmem::sim::{EventScope, SimStorage, Survival};
use poolsync_pmem::Storage;

use crate::crash::{survivals_torn_every, CrashTest, Sweeping};
use crate::support::{
    flip, healthy, normalized, put_set, read_logical, write_file, Fixture, Layout,
};

pub fn options() -> TransformOptions {
    TransformOptions {
        threads: 1,
        stride: 4 << 20,
        uuids: UuidSource::Derived { seed: 7 },
        ..TransformOptions::default()
    }
}

const SRC2: Layout<'static> = &[
    &[("/pool/r0p0", 8), ("/pool/r0p1", 8)],
    &[("/pool/r1p0", 16)],
];
const ADD: Layout<'static> = &[
    &[("/pool/r0p0", 8), ("/pool/r0p1", 8)],
    &[("/pool/r1p0", 16)],
    &[("/pool/n0", 9), ("/pool/n1", 9)],
];
const REMOVE_FIRST: Layout<'static> = &[&[("/pool/r1p0", 16)]];

fn fixture() -> Fixture {
    Fixture::new(&[&[8, 8], &[16]], false)
}

#[test]
fn adding_a_replica_copies_the_pool_and_links_every_header() {
    let fx = fixture();
    let s = fx.copy();
    let dst = Path::new("/pool/dst.set");
    let dset = put_set(&s, dst, false, ADD);
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
    put_set(&s, dst, false, REMOVE_FIRST);
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

    put_set(&s, dst, false, SRC2);
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

    put_set(
        &s,
        dst,
        false,
        &[
            &[("/pool/r0p0", 8), ("/pool/r0p1", 8)],
            &[("/pool/r1p0", 16)],
            &[("/pool/x", 9)],
        ],
    );
    assert!(refused(&s, &fx.set_path, dst).contains("target poolset is too small"));

    put_set(
        &s,
        dst,
        false,
        &[
            &[("/pool/r0p0", 8), ("/pool/r0p1", 8)],
            &[("/pool/r1p0", 16)],
            &[("/pool/x", 4)],
        ],
    );
    assert!(refused(&s, &fx.set_path, dst).contains("8388608"));

    put_set(
        &s,
        dst,
        false,
        &[
            &[("/pool/r0p0", 8), ("/pool/r0p1", 8)],
            &[("/pool/r1p0", 16)],
            &[("/nodir/x", 16)],
        ],
    );
    assert!(refused(&s, &fx.set_path, dst).contains("does not exist"));

    put_set(
        &s,
        dst,
        false,
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
    put_set(
        &s,
        dst,
        false,
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
    flip(&s, fx.part(1, 0), 60);
    put_set(&s, dst, false, ADD);
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
    put_set(&s, dst, false, REMOVE_FIRST);
    let msg = refused(&s, &fx.set_path, dst);
    assert!(msg.contains("broken") || msg.contains("uuid"), "{msg}");
    assert!(s.stat(fx.part(0, 1)).expect("stat").is_some());
}

/// Runs the transform on a copy to the end, then crashes it at every
/// change it makes (every create, before and after the file appears, and
/// every write, flush, fence, chmod, remove and directory sync) and checks
/// the two allowed outcomes. No crash point may need a manual step: the
/// re-run alone finishes, and a third run has nothing to do.
fn crash_everywhere(fx: &Fixture, target: Layout<'_>, single_hdr: bool, torn_every: u64) {
    sweep(fx, target, (single_hdr, torn_every), Sweeping::Crashes);
}

/// `crash_everywhere`'s checks on the sweep `how` names.
fn sweep(fx: &Fixture, target: Layout<'_>, (single_hdr, torn_every): (bool, u64), how: Sweeping) {
    let dst = Path::new("/pool/dst.set");
    let base = fx.copy();
    base.set_event_scope(EventScope::EveryChange);
    put_set(&base, dst, single_hdr, target);
    let source_before = normalized(&base);
    let test = CrashTest::new("transform", base, |s| {
        transform(s, &fx.set_path, dst, &options(), &NoProgress)
    });
    let reference = test.reference();
    let events = reference.n();
    assert!(events >= 3, "only {events} events");

    how.sweep(&test, &reference)
        .survivals(|k| survivals_torn_every(k, torn_every, 1))
        .after_crash(|c| {
            if healthy(&c.storage, &fx.set_path) {
                // The old set file opens the source, and its data is unchanged.
                let now = normalized(&c.storage);
                for part in fx.parts.iter().flatten() {
                    assert_eq!(
                        now.get(part).map(|f| &f.bytes),
                        source_before.get(part).map(|f| &f.bytes),
                        "{c}: {} changed while the source is in use",
                        part.display()
                    );
                }
            }
        })
        // The default re-run: the transform again, which must finish alone.
        .end_image(normalized)
        .end(|c, _| {
            assert!(healthy(&c.storage, dst), "{c}: target not healthy");
            let again = c.run().unwrap_or_else(|e| panic!("{c}: third run: {e}"));
            assert!(again.plan.is_noop(), "{c}: third run not a no-op");
        })
        .run();
}

#[test]
fn crash_while_adding_a_replica() {
    crash_everywhere(&fixture(), ADD, false, 3);
}

/// EIO, ENOSPC and EROFS while a replica is added: a clear error, a
/// healthy source unchanged, and the transform again finishes alone.
#[test]
fn faults_while_adding_a_replica() {
    sweep(&fixture(), ADD, (false, 0), Sweeping::Faults);
}

#[test]
fn crash_while_removing_a_replica() {
    crash_everywhere(&fixture(), REMOVE_FIRST, false, 1);
}

const RESHAPE: Layout<'static> = &[&[("/pool/r1p0", 16)], &[("/pool/n0", 10), ("/pool/n1", 8)]];

#[test]
fn reshaping_replaces_a_replica_by_one_of_another_layout() {
    let fx = fixture();
    let s = fx.copy();
    let dst = Path::new("/pool/dst.set");
    let dset = put_set(&s, dst, false, RESHAPE);
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
    let target: Layout<'_> = &[
        &[("/pool/a", 16)],
        &[("/pool/r0p0", 16)],
        &[("/pool/r1p0", 8), ("/pool/r1p1", 8)],
        &[("/pool/r2p0", 16)],
        &[("/pool/b", 20)],
    ];
    crash_everywhere(&fx, target, false, 0);
}

/// SINGLEHDR on both sides: a replica of three parts is added, two of
/// them without a header of their own, which hold pool data from their
/// first byte.
#[test]
fn crash_while_adding_a_singlehdr_replica() {
    let fx = Fixture::new(&[&[8, 8]], true);
    let target: Layout<'_> = &[
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
    put_set(&base, dst, false, ADD);
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

/// Adding a replica writes the journal first, beside the source pool set
/// file: the free-space check counts it with the new parts and names both,
/// so that a full file system refuses the transform before anything is
/// written instead of failing to create the journal or the last part.
#[test]
fn no_room_for_the_new_parts_and_the_journal_is_refused_first() {
    let fx = fixture();
    let s = fx.copy();
    let dst = Path::new("/pool/dst.set");
    put_set(&s, dst, false, ADD);
    let used = crate::support::bytes_used(&s);
    // Room for both new parts (9 MiB each), not for the journal too.
    let parts = 18u64 << 20;
    s.set_capacity(Some(used + parts + 4096));
    let before = s.image();
    let err = transform(&s, &fx.set_path, dst, &options(), &NoProgress).expect_err("refused");
    assert_eq!(
        err.to_string(),
        format!(
            "failed to transform /pool/pool.set -> /pool/dst.set: not enough free space for the new parts and the journal in /pool: {} bytes needed, {} available",
            parts + (64 << 10),
            parts + 4096
        )
    );
    assert_eq!(s.image(), before, "a refused transform wrote");
    s.set_capacity(Some(used + parts + (64 << 10)));
    transform(&s, &fx.set_path, dst, &options(), &NoProgress).expect("fits");
    assert!(healthy(&s, dst));
}
