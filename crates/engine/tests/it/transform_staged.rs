//! Staged transforms on the simulated storage: adding and removing
//! `SINGLEHDR` and reshaping replicas onto their own files, rebuilt from a
//! replica that stays or from a temporary copy, with a journal.
//!
//! Every persistence event of an uninterrupted run is a crash point (the
//! events are recorded, so the ones around the journal and the temporary
//! copy are known by name). After a crash and a reboot (power failure,
//! killed process, or a torn mix), either the old pool set file opens a
//! healthy source with the original data, or the transform is under way;
//! in both cases running the same transform again, with no manual step,
//! ends where an uninterrupted run ends, and a
//! further run has nothing to do. Until the journal and the temporary copy
//! are durable, the source's files are untouched.

use std::path::{Path, PathBuf};

use poolsync_engine::sync::{sync, NoProgress, SyncOptions};
use poolsync_engine::transform::{
    journal_path, transform, DataFrom, Operation, TransformOptions, TransformOutcome,
    JOURNAL_SUFFIX, TEMP_SUFFIX,
};
use poolsync_engine::Error;
use poolsync_pmem::sim::{EventScope, SimImage, SimStorage, Survival};
use poolsync_pmem::Storage;
use poolsync_poolset::{PoolSet, Replica};

use crate::crash::{self, CrashTest, Sweeping};
use crate::support::{
    healthy, image_diff, normalized, part_paths, put_set, read_logical, Fixture, Layout, Op,
};
use crate::transform::options;

const M: u64 = 1 << 20;
const DST: &str = "/pool/dst.set";
const OTHER: &str = "/pool/other.set";
const PAGE: u64 = 4096;
/// Reboot images remembered to skip re-checking the same state.
const RECENT: usize = 4;

// --- pool set files and file checks ---

fn temp_of(set: &PoolSet) -> PathBuf {
    let master = part_paths(set).into_iter().next().expect("a part");
    let name = master.file_name().expect("name").to_string_lossy();
    master.with_file_name(format!(".{name}{TEMP_SUFFIX}"))
}

/// Logical `[offset, offset+len)` of replica `r` of `set` in `image`
/// (as [`read_logical`] reads it from a storage, without copying files).
fn logical(image: &SimImage, set: &PoolSet, r: usize, offset: u64, len: u64) -> Vec<u8> {
    let extents = set.extents(r).expect("extents");
    let Replica::Local { parts, .. } = &set.replicas[r] else {
        panic!("remote");
    };
    let mut out = Vec::with_capacity(len as usize);
    for piece in poolsync_poolset::map_range(&extents, offset, len) {
        let file = image.get(Path::new(&parts[piece.part].path)).expect("part");
        let at = piece.file_offset as usize;
        out.extend_from_slice(&file.bytes[at..at + piece.len as usize]);
    }
    out
}

fn exists(s: &SimStorage, path: &Path) -> bool {
    s.stat(path).expect("stat").is_some()
}

// --- re-running as told ---

/// The command in the first backquoted span of a refusal, split in words.
fn named_command(msg: &str) -> Option<Vec<String>> {
    let start = msg.find('`')? + 1;
    let len = msg.get(start..)?.find('`')?;
    let words: Vec<String> = msg
        .get(start..start + len)?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let known = matches!(
        words.iter().map(String::as_str).collect::<Vec<_>>()[..],
        ["rm", _] | ["poolsync", "sync", _] | ["poolsync", "transform", _, _]
    );
    known.then_some(words)
}

/// Carries out a command a refusal named.
fn follow(s: &SimStorage, words: &[String]) {
    match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["rm", path] => {
            s.remove(Path::new(path)).expect("rm as told");
            s.fsync_parent(Path::new(path)).expect("sync dir");
        }
        ["poolsync", "sync", set] => {
            let opts = SyncOptions {
                threads: 1,
                uuids: options().uuids,
                ..SyncOptions::default()
            };
            sync(s, Path::new(set), &opts, &NoProgress).expect("sync as told");
        }
        ["poolsync", "transform", from, to] => {
            transform(s, Path::new(from), Path::new(to), &options(), &NoProgress)
                .expect("transform as told");
        }
        _ => panic!("unknown command {words:?}"),
    }
}

/// Runs the transform, which must succeed at once: no crash point may
/// need a manual step.
fn finish(s: &SimStorage, src: &Path, dst: &Path, what: &str) -> TransformOutcome {
    transform(s, src, dst, &options(), &NoProgress)
        .unwrap_or_else(|e| panic!("{what}: the re-run failed: {e}"))
}

// --- the crash points ---

/// A staged transform of `fx`'s pool set into a target layout.
struct Case<'a> {
    name: &'a str,
    fx: Fixture,
    /// The source set as it is on the storage (it may differ from
    /// `fx.set` when the fixture was transformed before the test).
    src_set: PoolSet,
    single_hdr: bool,
    target: Layout<'a>,
    /// Whether the data is staged into a temporary copy.
    staged: bool,
    /// A torn survival at every `torn_every`-th crash point, two around
    /// the marks.
    torn_every: u64,
}

/// What an uninterrupted run did and left.
struct Reference {
    /// The transform on copies of the fixture with the target set file.
    test: CrashTest<'static, TransformOutcome>,
    run: crash::Reference<TransformOutcome>,
    dset: PoolSet,
    expected: SimImage,
    pool_size: u64,
    original: Vec<u8>,
    /// A crash up to this event leaves the source's files as they were:
    /// the directory sync that makes the journal durable, or (when a
    /// temporary copy is used) the one after the fence of its header.
    protect: u64,
    /// Named events, for the survivals and the report.
    marks: Vec<(&'static str, u64)>,
}

impl Reference {
    /// Crashes a run at event `k` and reboots after a power failure.
    fn crashed_at(&self, k: u64) -> SimStorage {
        self.test
            .interrupt(&self.run, k)
            .after_crash_with(Survival::Durable)
    }
}

impl Case<'_> {
    fn src(&self) -> &Path {
        &self.fx.set_path
    }

    /// Runs the transform uninterrupted on a copy of the fixture, recording
    /// its events, and checks its end state.
    fn reference(&self) -> Reference {
        let base = self.fx.copy();
        base.set_event_scope(EventScope::EveryChange);
        let dset = put_set(&base, Path::new(DST), self.single_hdr, self.target);
        let pool = self.src_set.pool_size().expect("pool size");
        let src = self.src().to_path_buf();
        let test = CrashTest::new(self.name, base, move |s| {
            transform(s, &src, Path::new(DST), &options(), &NoProgress)
        });
        let run = test.reference();
        let plan = &run.outcome.plan;
        let staging = plan.staging.as_ref().expect("a staged transform");
        assert_eq!(staging.temporary.is_some(), self.staged, "{}", self.name);
        assert_eq!(
            staging.data_from == DataFrom::Temporary,
            self.staged,
            "{}",
            self.name
        );
        assert!(!staging.resumed);
        let pool_size = plan.pool_size;
        assert!(pool_size <= pool);
        let original = read_logical(test.base(), &self.src_set, 0, PAGE, pool_size - PAGE);
        for r in 1..self.src_set.replicas.len() {
            let data = read_logical(test.base(), &self.src_set, r, PAGE, pool_size - PAGE);
            assert!(data == original, "{}: fixture replicas differ", self.name);
        }
        let journal = journal_path(self.src());
        let temp = temp_of(&self.src_set);
        let dir_sync = |from: u64| {
            run.find(from, |e| matches!(e, Op::DirSync { .. }))
                .expect("a directory sync")
        };
        let journal_fence = run
            .find(0, |e| matches!(e, Op::Fence { path } if *path == journal))
            .expect("the journal is fenced");
        let journal_durable = dir_sync(journal_fence);
        let mut marks = vec![
            ("journal fence", journal_fence),
            ("journal durable", journal_durable),
        ];
        let mut protect = journal_durable;
        if self.staged {
            let header_flush = run
                .find(
                    0,
                    |e| matches!(e, Op::Flush { path, off: 0, .. } if *path == temp),
                )
                .expect("the temporary copy's header is flushed");
            let header_fence = run
                .find(
                    header_flush,
                    |e| matches!(e, Op::Fence { path } if *path == temp),
                )
                .expect("and fenced");
            protect = dir_sync(header_fence);
            marks.push(("temp header fence", header_fence));
            marks.push(("temp durable", protect));
        } else {
            assert!(
                !run.events
                    .iter()
                    .any(|e| matches!(e, Op::Flush { path, .. } if *path == temp)),
                "{}: a temporary copy written",
                self.name
            );
        }
        // No source part is changed before that point.
        let parts = part_paths(&self.src_set);
        let first_part_event = run.find(0, |e| match e {
            Op::DirSync { .. } => false,
            other => parts.contains(&other.path().to_path_buf()),
        });
        if let Some(first) = first_part_event {
            assert!(first > protect, "{}: a part written early", self.name);
            marks.push(("first part write", first));
        }
        let reference = Reference {
            expected: normalized(&run.storage),
            test,
            run,
            dset,
            pool_size,
            original,
            protect,
            marks,
        };
        let done = &reference.run.storage;
        self.check_end(done, &reference, "uninterrupted");
        // A run after completion, dry or not, finds nothing to do.
        let before = done.image();
        for opts in [dry_run(), options()] {
            let again = transform(done, self.src(), Path::new(DST), &opts, &NoProgress)
                .unwrap_or_else(|e| panic!("{}: run after completion: {e}", self.name));
            assert!(again.plan.is_noop(), "{}: {:?}", self.name, again.plan);
            assert_eq!(again.plan.operation, Operation::Finish);
            assert!(
                done.image() == before,
                "{}: a finished transform wrote",
                self.name
            );
        }
        reference
    }

    /// The end state of a completed run: the uninterrupted run's.
    fn check_end(&self, s: &SimStorage, reference: &Reference, what: &str) {
        let name = self.name;
        assert!(
            healthy(s, Path::new(DST)),
            "{name} {what}: target not healthy"
        );
        let now = normalized(s);
        let len = reference.pool_size - PAGE;
        for r in 0..reference.dset.replicas.len() {
            assert!(
                logical(&now, &reference.dset, r, PAGE, len) == reference.original,
                "{name} {what}: replica {r} lost data"
            );
        }
        let journal = journal_path(self.src());
        assert!(!exists(s, &journal), "{name} {what}: journal left");
        let temp = temp_of(&self.src_set);
        assert!(!exists(s, &temp), "{name} {what}: temporary copy left");
        // Nothing else is left: the old parts no replica uses are gone.
        let mut files = part_paths(&reference.dset);
        files.extend([self.src().to_path_buf(), PathBuf::from(DST)]);
        files.sort();
        assert_eq!(s.paths(), files, "{name} {what}: other files");
        assert!(
            now == reference.expected,
            "{name} {what}: ended elsewhere: {}",
            image_diff(&now, &reference.expected)
        );
    }

    /// Crashes the transform at every event and checks each reboot: (a)
    /// before the copy is safe, the source is untouched; a source that
    /// opens healthy holds the original data; (b) the re-run, following
    /// the commands refusals name, ends where the uninterrupted run ended.
    fn run(&self) {
        self.sweep(Sweeping::Crashes);
    }

    /// [`Case::run`]'s checks on the sweep `how` names (under faults,
    /// the source's files are compared only where a crash point says the
    /// journal is not durable yet: a fault's call number says nothing of
    /// that).
    fn sweep(&self, how: Sweeping) {
        let reference = self.reference();
        let src = self.src();
        let dst = Path::new(DST);
        let mut source_files = part_paths(&self.src_set);
        source_files.push(src.to_path_buf());
        let base = reference.test.base().image();
        let original_files: Vec<_> = source_files
            .iter()
            .map(|p| base.get(p).map(|f| (f.bytes.clone(), f.mode)))
            .collect();
        let near_mark = |k: u64, d: u64| reference.marks.iter().any(|&(_, m)| k.abs_diff(m) <= d);
        eprintln!("{}: marks {:?}", self.name, reference.marks);
        let test = &reference.test;
        how.sweep(test, &reference.run)
            .survivals(|k| {
                let mut survivals = vec![Survival::Durable, Survival::Everything];
                if near_mark(k, 2) || k % self.torn_every == 0 {
                    survivals.push(Survival::Torn { seed: k });
                }
                if near_mark(k, 2) {
                    survivals.push(Survival::Torn { seed: k ^ 0x5eed });
                }
                survivals
            })
            // The same files as a reboot just checked: the same outcome.
            .skip_seen(RECENT)
            .after_crash(|c| {
                let image = c.storage.image();
                if c.fault.is_none() && c.k <= reference.protect {
                    for (path, before) in source_files.iter().zip(&original_files) {
                        let now = image.get(path).map(|f| (f.bytes.clone(), f.mode));
                        assert!(
                            now == *before,
                            "{} {c}: {} changed before the journal and copy were durable",
                            self.name,
                            path.display()
                        );
                    }
                }
                if healthy(&c.storage, src) {
                    c.note("source healthy");
                    for r in 0..self.src_set.replicas.len() {
                        let len = reference.pool_size - PAGE;
                        assert!(
                            logical(&image, &self.src_set, r, PAGE, len) == reference.original,
                            "{} {c}: the source opens healthy, but replica {r} lost data",
                            self.name
                        );
                    }
                }
            })
            .rerun(|c| {
                let src_ok = healthy(&c.storage, src);
                // The re-run alone finishes, as the uninterrupted run did.
                let outcome = finish(&c.storage, src, dst, &format!("{} {c}", self.name));
                let resumed = outcome.plan.staging.as_ref().is_some_and(|s| s.resumed);
                if src_ok {
                    assert!(!resumed, "{} {c}: a healthy source resumed", self.name);
                } else {
                    c.note("resumed");
                }
                outcome
            })
            // `check_end` compares the end state with the reference's.
            .without_end_image()
            .end(|c, _| {
                self.check_end(&c.storage, &reference, &c.to_string());
                let again = c
                    .run()
                    .unwrap_or_else(|e| panic!("{} {c}: third run: {e}", self.name));
                assert!(
                    again.plan.is_noop(),
                    "{} {c}: third run not a no-op",
                    self.name
                );
            })
            .run();
    }
}

// --- the scenarios ---

const THREE_PARTS: Layout<'static> = &[&[("/pool/r0p0", 8), ("/pool/r0p1", 8), ("/pool/r0p2", 8)]];

fn add_singlehdr_case() -> Case<'static> {
    let fx = Fixture::new(&[&[8, 8, 8]], false);
    Case {
        name: "add SINGLEHDR",
        src_set: fx.set.clone(),
        fx,
        single_hdr: true,
        target: THREE_PARTS,
        staged: true,
        torn_every: 4,
    }
}

const TWO_BY_TWO: Layout<'static> = &[
    &[("/pool/r0p0", 8), ("/pool/r0p1", 9)],
    &[("/pool/r1p0", 9), ("/pool/r1p1", 8)],
];

/// A `SINGLEHDR` pool of two replicas of two parts that is smaller than
/// either replica without `SINGLEHDR` (created with a smaller third
/// replica, which is then removed): removing the option needs a page per
/// part after the first.
fn remove_singlehdr_case() -> Case<'static> {
    let fx = Fixture::new(&[&[8, 9], &[9, 8], &[12]], true);
    let two = Path::new("/pool/two.set");
    put_set(&fx.base, two, true, TWO_BY_TWO);
    transform(&fx.base, &fx.set_path, two, &options(), &NoProgress).expect("remove replica 2");
    let src_set = put_set(&fx.base, &fx.set_path, true, TWO_BY_TWO);
    fx.base.remove(two).expect("rm");
    fx.base.fsync_parent(two).expect("sync dir");
    assert!(healthy(&fx.base, &fx.set_path));
    Case {
        name: "remove SINGLEHDR",
        src_set,
        fx,
        single_hdr: false,
        target: TWO_BY_TWO,
        staged: true,
        torn_every: 4,
    }
}

const RESIZE_IN_PLACE: Layout<'static> = &[
    &[("/pool/r0p0", 8), ("/pool/r0p1", 8)],
    &[("/pool/r1p0", 8), ("/pool/r1p1", 9)],
];

fn reshape_stable_case() -> Case<'static> {
    let fx = Fixture::new(&[&[8, 8], &[16]], false);
    Case {
        name: "reshape, replica 0 stays",
        src_set: fx.set.clone(),
        fx,
        single_hdr: false,
        target: RESIZE_IN_PLACE,
        staged: false,
        torn_every: 4,
    }
}

const SPLIT_ONTO_OWN: Layout<'static> = &[&[("/pool/r0p0", 8), ("/pool/b", 9)]];

fn reshape_none_stays_case() -> Case<'static> {
    let fx = Fixture::new(&[&[16]], false);
    Case {
        name: "reshape, no replica stays",
        src_set: fx.set.clone(),
        fx,
        single_hdr: false,
        target: SPLIT_ONTO_OWN,
        staged: true,
        torn_every: 4,
    }
}

const DROP_A_PART: Layout<'static> = &[
    &[("/pool/r0p0", 8), ("/pool/r0p1", 8)],
    &[("/pool/r1p0", 17)],
];

/// Replica 1 is merged into its (grown) first part: its second part is
/// deleted at the end.
fn reshape_dropping_a_part_case() -> Case<'static> {
    let fx = Fixture::new(&[&[8, 8], &[8, 8]], false);
    Case {
        name: "reshape, a part dropped",
        src_set: fx.set.clone(),
        fx,
        single_hdr: false,
        target: DROP_A_PART,
        staged: false,
        torn_every: 4,
    }
}

const ONTO_NEW_FILES: Layout<'static> = &[&[("/pool/n0", 8), ("/pool/n1", 9)]];

/// Every replica replaced by one on new files: the data is read from the
/// source itself (nothing is staged), whose files are all deleted at the
/// end.
fn reshape_onto_new_files_case() -> Case<'static> {
    let fx = Fixture::new(&[&[16]], false);
    Case {
        name: "reshape onto new files",
        src_set: fx.set.clone(),
        fx,
        single_hdr: false,
        target: ONTO_NEW_FILES,
        staged: false,
        torn_every: 4,
    }
}

const REUSE_A_HEADERLESS_PART: Layout<'static> = &[&[("/pool/r0p1", 8), ("/pool/c", 9)]];

/// SINGLEHDR on both sides: the header-less second part becomes the first
/// part of the new layout, and the old part 0, which is not recreated, is
/// invalidated before anything is, then deleted at the end.
fn reshape_reusing_a_headerless_part_case() -> Case<'static> {
    let fx = Fixture::new(&[&[8, 8]], true);
    Case {
        name: "reshape reusing a header-less part",
        src_set: fx.set.clone(),
        fx,
        single_hdr: true,
        target: REUSE_A_HEADERLESS_PART,
        staged: true,
        torn_every: 4,
    }
}

#[test]
fn crash_while_reshaping_onto_a_headerless_part() {
    reshape_reusing_a_headerless_part_case().run();
}

#[test]
fn crash_while_reshaping_onto_new_files() {
    reshape_onto_new_files_case().run();
}

#[test]
fn crash_while_adding_singlehdr() {
    add_singlehdr_case().run();
}

/// EIO, ENOSPC and EROFS while SINGLEHDR is added through a temporary
/// copy: a clear error, a source that opens healthy holds the original
/// data, and the transform again finishes alone.
#[test]
fn faults_while_adding_singlehdr() {
    add_singlehdr_case().sweep(Sweeping::Faults);
}

#[test]
fn crash_while_removing_singlehdr() {
    remove_singlehdr_case().run();
}

#[test]
fn crash_while_reshaping_with_a_replica_that_stays() {
    reshape_stable_case().run();
}

#[test]
fn crash_while_reshaping_with_no_replica_staying() {
    reshape_none_stays_case().run();
}

#[test]
fn crash_while_reshaping_and_dropping_a_part() {
    reshape_dropping_a_part_case().run();
}

// --- without crashes ---

fn dry_run() -> TransformOptions {
    TransformOptions {
        dry_run: true,
        ..options()
    }
}

/// The first event at which a power failure leaves a source that does not
/// open healthy.
fn first_broken(case: &Case<'_>, reference: &Reference) -> (u64, SimStorage) {
    (reference.protect..reference.run.n())
        .find_map(|k| {
            let s = reference.crashed_at(k);
            (!healthy(&s, case.src())).then_some((k, s))
        })
        .expect("the source breaks at some point")
}

#[test]
fn no_room_for_the_temporary_copy_is_refused_before_anything_is_written() {
    let case = add_singlehdr_case();
    let s = case.fx.copy();
    put_set(&s, Path::new(DST), true, THREE_PARTS);
    let used = crate::support::bytes_used(&s);
    // Room for the journal (the plan grants it 64 KiB) and all but the
    // last page of the temporary copy: the recreated parts replace the old
    // ones and need nothing more.
    let pool = case.src_set.pool_size().expect("pool size");
    let needed = (64 << 10) + pool.div_ceil(PAGE) * PAGE;
    s.set_capacity(Some(used + needed - PAGE));
    let before = s.image();
    let err =
        transform(&s, case.src(), Path::new(DST), &options(), &NoProgress).expect_err("refused");
    let msg = err.to_string();
    // The recreated parts need no room: the refusal names what does.
    assert!(
        msg.contains("not enough free space for the temporary copy and the journal in /pool: "),
        "{msg}"
    );
    assert!(!msg.contains("new parts"), "{msg}");
    assert!(s.image() == before, "a refused transform wrote");
    // One more page and it fits.
    s.set_capacity(Some(used + needed));
    transform(&s, case.src(), Path::new(DST), &options(), &NoProgress).expect("fits");
    assert!(healthy(&s, Path::new(DST)));
}

/// Parts recreated in place at their own sizes need no room, and no
/// temporary copy is made (replica 0 stays): on a full file system only
/// the journal is short, and the refusal says so (it used to blame "the
/// new parts").
#[test]
fn no_room_for_the_journal_is_said_to_be_for_the_journal() {
    let fx = Fixture::new(&[&[16], &[8, 8]], false);
    let s = fx.copy();
    const SWAPPED: Layout<'static> = &[
        &[("/pool/r0p0", 16)],
        &[("/pool/r1p1", 8), ("/pool/r1p0", 8)],
    ];
    put_set(&s, Path::new(DST), false, SWAPPED);
    let used = crate::support::bytes_used(&s);
    s.set_capacity(Some(used + PAGE));
    let before = s.image();
    let err =
        transform(&s, &fx.set_path, Path::new(DST), &options(), &NoProgress).expect_err("refused");
    assert_eq!(
        err.to_string(),
        "failed to transform /pool/pool.set -> /pool/dst.set: not enough free space for the journal in /pool: 65536 bytes needed, 4096 available"
    );
    assert!(s.image() == before, "a refused transform wrote");
    s.set_capacity(Some(used + (64 << 10)));
    transform(&s, &fx.set_path, Path::new(DST), &options(), &NoProgress).expect("fits");
    assert!(healthy(&s, Path::new(DST)));
}

#[test]
fn a_dry_run_changes_nothing_and_reports_the_staging() {
    let case = add_singlehdr_case();
    let s = case.fx.copy();
    put_set(&s, Path::new(DST), true, THREE_PARTS);
    let before = s.image();
    let dry = transform(&s, case.src(), Path::new(DST), &dry_run(), &NoProgress).expect("dry run");
    assert!(s.image() == before, "the dry run wrote");
    assert!(dry.report.is_none());
    let plan = &dry.plan;
    assert_eq!(plan.operation, Operation::AddSingleHdr);
    let staging = plan.staging.as_ref().expect("staging");
    assert_eq!(staging.journal, journal_path(case.src()));
    assert_eq!(
        staging.journal,
        PathBuf::from(format!("/pool/pool.set{JOURNAL_SUFFIX}"))
    );
    let temp = staging.temporary.as_ref().expect("a temporary copy");
    assert_eq!(temp.path, PathBuf::from("/pool/.r0p0.poolsync-tmp"));
    assert_eq!(temp.size, plan.pool_size.div_ceil(PAGE) * PAGE);
    assert!(!temp.complete);
    assert_eq!(staging.data_from, DataFrom::Temporary);
    assert_eq!(staging.rewritten, vec![0]);
    assert!(!staging.resumed);
    assert_eq!(plan.totals.bytes_to_stage, plan.pool_size - PAGE);
    assert_eq!(plan.totals.parts_to_create, 3);
    assert_eq!(plan.totals.bytes_to_allocate, 3 * 8 * M + temp.size);
    assert!(plan.discard.is_empty());
    // The real run carries out the same plan.
    let done = transform(&s, case.src(), Path::new(DST), &options(), &NoProgress).expect("run");
    assert_eq!(done.plan, dry.plan);

    // With a replica that stays, nothing is staged.
    let case = reshape_stable_case();
    let s = case.fx.copy();
    put_set(&s, Path::new(DST), false, RESIZE_IN_PLACE);
    let before = s.image();
    let dry = transform(&s, case.src(), Path::new(DST), &dry_run(), &NoProgress).expect("dry run");
    assert!(s.image() == before, "the dry run wrote");
    let staging = dry.plan.staging.as_ref().expect("staging");
    assert_eq!(staging.temporary, None);
    assert_eq!(staging.data_from, DataFrom::Replica { replica: 0 });
    assert_eq!(staging.rewritten, vec![1]);
    assert_eq!(dry.plan.totals.bytes_to_stage, 0);
    assert_eq!(
        dry.plan.operation,
        Operation::Reshape {
            added: vec![1],
            removed: vec![1]
        }
    );
}

#[test]
fn a_stale_journal_and_copy_beside_a_healthy_source_are_discarded() {
    let case = reshape_none_stays_case();
    let reference = case.reference();
    // Crashed once the copy was complete, before the source changed
    // durably: the journal and a complete copy are left.
    let s = reference.crashed_at(reference.protect + 1);
    let journal = journal_path(case.src());
    let temp = temp_of(&case.src_set);
    assert!(healthy(&s, case.src()), "the source is healthy");
    assert!(exists(&s, &journal) && exists(&s, &temp));
    let done = transform(&s, case.src(), Path::new(DST), &options(), &NoProgress).expect("run");
    assert_eq!(done.plan.discard, vec![temp.clone(), journal.clone()]);
    let staging = done.plan.staging.as_ref().expect("staging");
    assert!(!staging.resumed);
    assert!(
        staging.temporary.as_ref().is_some_and(|t| !t.complete),
        "the copy is made again"
    );
    case.check_end(&s, &reference, "after a stale journal");

    // A journal torn while it was written is stale too.
    let s = reference.crashed_at(0);
    let text = reference_journal(&case, &reference);
    let mut torn = vec![0u8; text.len()];
    torn[..512].copy_from_slice(&text[..512]);
    s.insert_file(&journal, &torn, 0o600).expect("torn journal");
    let done = transform(&s, case.src(), Path::new(DST), &options(), &NoProgress).expect("run");
    assert_eq!(done.plan.discard, vec![journal.clone()]);
    case.check_end(&s, &reference, "after a torn journal");
}

/// The journal an uninterrupted run writes.
fn reference_journal(case: &Case<'_>, reference: &Reference) -> Vec<u8> {
    let s = reference.crashed_at(reference.protect);
    s.written_bytes(&journal_path(case.src())).expect("journal")
}

#[test]
fn a_journal_of_other_set_files_is_refused_naming_it() {
    let case = add_singlehdr_case();
    let reference = case.reference();
    let (k, s) = first_broken(&case, &reference);
    let journal = journal_path(case.src());
    let text = String::from_utf8(s.written_bytes(&journal).expect("journal")).expect("text");
    let changed: String = text
        .lines()
        .map(|line| match line.strip_prefix("target_crc = ") {
            Some(crc) => format!("target_crc = {}\n", crc.parse::<u64>().expect("crc") ^ 1),
            None => format!("{line}\n"),
        })
        .collect();
    assert_ne!(changed, text);
    s.remove(&journal).expect("rm");
    s.insert_file(&journal, changed.as_bytes(), 0o600)
        .expect("journal");
    let before = s.image();
    let err =
        transform(&s, case.src(), Path::new(DST), &options(), &NoProgress).expect_err("refused");
    assert!(s.image() == before, "a refusal wrote");
    let msg = err.to_string();
    assert!(
        msg.contains(&journal.display().to_string()) && msg.contains("changed since it began"),
        "crash at {k}: {msg}"
    );
    // Put back, the journal lets the transform finish.
    s.remove(&journal).expect("rm");
    s.insert_file(&journal, text.as_bytes(), 0o600)
        .expect("journal");
    let done = finish(&s, case.src(), Path::new(DST), "put back");
    assert!(done.plan.staging.as_ref().is_some_and(|st| st.resumed));
    case.check_end(&s, &reference, "put back");

    // A journal that does not parse beside a broken source is an error
    // that names it.
    let (_, s) = first_broken(&case, &reference);
    s.remove(&journal).expect("rm");
    s.insert_file(&journal, b"version = \"one\"\n", 0o600)
        .expect("journal");
    let err =
        transform(&s, case.src(), Path::new(DST), &options(), &NoProgress).expect_err("refused");
    assert!(
        matches!(err, Error::Journal { ref path, .. } if *path == journal),
        "{err}"
    );
}

#[test]
fn a_foreign_file_where_the_copy_goes_is_refused_and_left_alone() {
    let case = add_singlehdr_case();
    let other = Fixture::new(&[&[8]], false);
    let foreign = other.base.written_bytes(other.part(0, 0)).expect("part");
    let other_uuid = poolsync_header::PoolHdr::decode(&foreign)
        .expect("header")
        .poolset_uuid
        .to_canonical();
    let temp = temp_of(&case.src_set);
    for (bytes, what) in [
        (foreign, format!("carries pool set uuid {other_uuid}")),
        (
            vec![0x5a; 64 << 10],
            "carries no obj pool header".to_string(),
        ),
    ] {
        let s = case.fx.copy();
        put_set(&s, Path::new(DST), true, THREE_PARTS);
        s.insert_file(&temp, &bytes, 0o644).expect("foreign file");
        let before = s.image();
        for opts in [dry_run(), options()] {
            let err =
                transform(&s, case.src(), Path::new(DST), &opts, &NoProgress).expect_err("refused");
            assert!(s.image() == before, "a refusal wrote");
            let msg = err.to_string();
            assert!(
                msg.contains(&temp.display().to_string()) && msg.contains(&what),
                "{msg}"
            );
        }
    }
}

#[test]
fn another_transform_is_refused_until_the_interrupted_one_finishes() {
    let case = add_singlehdr_case();
    let reference = case.reference();
    let (_, s) = first_broken(&case, &reference);
    let command = format!("`poolsync transform {} {DST}`", case.src().display());
    // A staged transform and a plain one (adding a replica).
    let others: [(bool, Layout<'_>); 2] = [
        (false, &[&[("/pool/r0p0", 12), ("/pool/r0p1", 12)]]),
        (
            false,
            &[
                &[("/pool/r0p0", 8), ("/pool/r0p1", 8), ("/pool/r0p2", 8)],
                &[("/pool/x", 24)],
            ],
        ),
    ];
    for (single_hdr, layout) in others {
        put_set(&s, Path::new(OTHER), single_hdr, layout);
        let before = s.image();
        let err = transform(&s, case.src(), Path::new(OTHER), &options(), &NoProgress)
            .expect_err("refused");
        assert!(s.image() == before, "a refusal wrote");
        let msg = err.to_string();
        assert!(msg.contains(&command), "{msg}");
        assert!(
            msg.contains(&journal_path(case.src()).display().to_string()),
            "{msg}"
        );
    }
    s.remove(Path::new(OTHER)).expect("rm");
    follow(&s, &named_command(&command).expect("a command"));
    case.check_end(&s, &reference, "as told");
}

/// The flaky interop test's case: killed between creating the temporary
/// copy and allocating it, the run leaves an empty file of mode 0 beside a
/// healthy source. The journal names it, so the re-run deletes it and the
/// journal first, and finishes alone.
#[test]
fn an_empty_temporary_copy_left_by_a_kill_is_recognised() {
    let case = add_singlehdr_case();
    let reference = case.reference();
    let temp = temp_of(&case.src_set);
    // A create is two events: the file appears, then it is allocated.
    let created = reference
        .run
        .find(0, |e| matches!(e, Op::Create { path, .. } if *path == temp))
        .expect("the temporary copy is created");
    let s = reference.test.copy();
    s.crash_after(created + 1);
    transform(&s, case.src(), Path::new(DST), &options(), &NoProgress).expect_err("crash");
    let s = s.after_crash_with(Survival::Everything);
    let meta = s.stat(&temp).expect("stat").expect("the copy is left");
    assert_eq!((meta.len, meta.mode), (0, 0));
    assert!(healthy(&s, case.src()));
    let journal = journal_path(case.src());
    let done = finish(&s, case.src(), Path::new(DST), "after the kill");
    assert_eq!(done.plan.discard, vec![temp, journal]);
    case.check_end(&s, &reference, "after the kill");
}
