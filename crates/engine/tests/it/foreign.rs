//! Foreign files in a pool set's place (issue 15, defects 1 and 4): `rm
//! --verify-owner`, `sync` and `transform` never destroy a file that does
//! not provably carry the pool set's UUID, and refuse before the first
//! write what they could not finish.

use std::path::{Path, PathBuf};

use poolsync_engine::create::{create, CreateOptions};
use poolsync_engine::rm::{rm, AlwaysYes, Ask, Outcome, RmOptions};
use poolsync_engine::sync::plan::DISPLACED_INFIX;
use poolsync_engine::sync::{sync, NoProgress, Step, SyncOptions, UuidSource};
use poolsync_engine::transform::{transform, TransformOptions};
use poolsync_engine::Error;
use poolsync_pmem::sim::{Guard, SimFile, SimImage, SimStorage};
use poolsync_pmem::{Access, Clock, Error as PmemError, Meta, Obstacle, Storage};

use crate::crash::{survivals_torn_every, CrashTest};
use crate::support::{healthy, Fixture};

const M: usize = 1 << 20;

/// A file that is no pool's: text, padded with zeros to `len` bytes.
fn foreign_bytes(len: usize) -> Vec<u8> {
    let mut bytes = b"# Network services, Internet style\nssh 22/tcp\n".repeat(64);
    bytes.resize(len, 0);
    bytes
}

fn put_foreign(s: &SimStorage, path: &Path, len: usize) -> Vec<u8> {
    let bytes = foreign_bytes(len);
    if s.stat(path).expect("stat").is_some() {
        crate::support::remove(s, path);
    }
    s.insert_file(path, &bytes, 0o644).expect("foreign file");
    bytes
}

fn verify_owner(force: bool) -> RmOptions {
    RmOptions {
        force,
        verify_owner: true,
        ask: Ask::Never,
        ..RmOptions::default()
    }
}

fn outcome_of<'a>(report: &'a poolsync_engine::rm::RmReport, path: &Path) -> &'a Outcome {
    &report
        .files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("{} not in the report", path.display()))
        .outcome
}

/// Defect 1a: a SINGLEHDR part after the first has no header, so nothing
/// proves it is the pool's: `rm --verify-owner` keeps it and says why;
/// `--force` takes part 0's word for it.
#[test]
fn rm_verify_owner_keeps_a_headerless_part() {
    let f = Fixture::new(&[&[16, 16], &[32]], true);
    let s = f.copy();
    let foreign = f.part(0, 1).to_path_buf();
    let bytes = put_foreign(&s, &foreign, 16 * M);
    let report = rm(&s, &f.set_path, &verify_owner(false), &mut AlwaysYes).expect("rm");
    assert!(report.refused());
    match outcome_of(&report, &foreign) {
        Outcome::NotOwned { what, .. } => {
            assert!(what.contains("carries no pool header of its own"), "{what}");
            assert!(what.contains("--force"), "{what}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.written_bytes(&foreign),
        Some(bytes),
        "the foreign file is kept"
    );
    assert!(s.stat(f.part(0, 0)).expect("stat").is_none());
    assert!(s.stat(f.part(1, 0)).expect("stat").is_none());

    // With --force, the headerless part goes on the word of its part 0.
    let s = f.copy();
    let report = rm(&s, &f.set_path, &verify_owner(true), &mut AlwaysYes).expect("rm");
    assert!(!report.refused(), "{report:?}");
    assert!(s.stat(f.part(0, 1)).expect("stat").is_none());
}

/// Defect 1c: a foreign pool's part listed first does not make its UUID
/// the pool's; the replicas' headers decide.
#[test]
fn rm_verify_owner_takes_the_identity_from_the_replicas() {
    let f = Fixture::new(&[&[16, 16], &[32]], false);
    let s = f.copy();
    // Another pool, whose only part replaces replica 0 part 0.
    let other_set = PathBuf::from("/other.set");
    let other_part = PathBuf::from("/pool/other");
    s.insert_file(
        &other_set,
        format!("PMEMPOOLSET\n16M {}\n", other_part.display()).as_bytes(),
        0o644,
    )
    .expect("set");
    create(&s, &other_set, &CreateOptions::default()).expect("create the other pool");
    let theirs = s.written_bytes(&other_part).expect("their part");
    crate::support::remove(&s, f.part(0, 0));
    s.insert_file(f.part(0, 0), &theirs, 0o644)
        .expect("swap in");
    let report = rm(&s, &f.set_path, &verify_owner(false), &mut AlwaysYes).expect("rm");
    match outcome_of(&report, f.part(0, 0)) {
        Outcome::NotOwned { what, expected } => {
            assert!(what.starts_with("carries pool set uuid"), "{what}");
            assert!(expected.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.written_bytes(f.part(0, 0)),
        Some(theirs),
        "their part is kept"
    );
    assert!(
        s.stat(f.part(0, 1)).expect("stat").is_none(),
        "ours is removed"
    );
    assert!(
        s.stat(f.part(1, 0)).expect("stat").is_none(),
        "ours is removed"
    );
}

fn sync_options() -> SyncOptions {
    SyncOptions {
        threads: 1,
        uuids: UuidSource::Derived { seed: 7 },
        ..SyncOptions::default()
    }
}

/// The files `s` holds whose names say they were moved aside.
fn displaced(s: &SimStorage) -> Vec<PathBuf> {
    s.paths()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(DISPLACED_INFIX))
        .collect()
}

/// Defect 1d: a wrong-size file that does not carry the pool set's UUID
/// is moved aside, never deleted, and the plan says so.
#[test]
fn sync_moves_a_wrong_size_foreign_file_aside() {
    let f = Fixture::new(&[&[16], &[16]], false);
    let s = f.copy();
    let part = f.part(1, 0).to_path_buf();
    let bytes = put_foreign(&s, &part, 12 * M);
    let dry = sync(
        &s,
        &f.set_path,
        &SyncOptions {
            dry_run: true,
            ..sync_options()
        },
        &NoProgress,
    )
    .expect("plan");
    let moves: Vec<&Step> = dry
        .plan
        .steps
        .iter()
        .filter(|st| matches!(st, Step::DisplacePart { .. }))
        .collect();
    assert_eq!(moves.len(), 1, "{:#?}", dry.plan.steps);
    assert_eq!(dry.plan.totals.parts_to_displace, 1);
    assert!(dry.plan.steps.iter().any(|st| matches!(
        st,
        Step::CreatePart { replace: false, path, .. } if *path == part
    )));
    assert!(displaced(&s).is_empty(), "the dry run moved something");

    let done = sync(&s, &f.set_path, &sync_options(), &NoProgress).expect("sync");
    let report = done.report.expect("report");
    assert_eq!(report.parts_displaced.len(), 1);
    let aside = displaced(&s);
    assert_eq!(aside, [report.parts_displaced[0].to.clone()]);
    assert!(
        aside[0]
            .to_string_lossy()
            .starts_with(&format!("{}{DISPLACED_INFIX}", part.display())),
        "{aside:?}"
    );
    assert_eq!(s.written_bytes(&aside[0]), Some(bytes), "moved intact");
    assert!(healthy(&s, &f.set_path));
}

/// A wrong-size file that carries the pool set's UUID (a part of this
/// pool, truncated) is replaced as before; so is an empty file.
#[test]
fn sync_replaces_a_wrong_size_part_of_its_own() {
    let f = Fixture::new(&[&[16], &[16]], false);
    for len in [12 * M, 0] {
        let s = f.copy();
        let part = f.part(1, 0).to_path_buf();
        let mut bytes = s.written_bytes(&part).expect("part");
        bytes.truncate(len);
        crate::support::remove(&s, &part);
        s.insert_file(&part, &bytes, 0o644).expect("truncated");
        let done = sync(&s, &f.set_path, &sync_options(), &NoProgress).expect("sync");
        assert_eq!(done.plan.totals.parts_to_displace, 0, "{len}");
        assert!(displaced(&s).is_empty());
        assert!(healthy(&s, &f.set_path));
    }
}

/// A SINGLEHDR part after the first, of the wrong size, proves nothing:
/// it is moved aside.
#[test]
fn sync_moves_a_wrong_size_headerless_part_aside() {
    let f = Fixture::new(&[&[16, 16], &[32]], true);
    let s = f.copy();
    let bytes = put_foreign(&s, f.part(0, 1), 12 * M);
    let done = sync(&s, &f.set_path, &sync_options(), &NoProgress).expect("sync");
    let report = done.report.expect("report");
    assert_eq!(report.parts_displaced.len(), 1);
    assert_eq!(s.written_bytes(&report.parts_displaced[0].to), Some(bytes));
    assert!(healthy(&s, &f.set_path));
}

/// The image with the time in the names of files moved aside taken out
/// (a re-run after a crash before the move names it at its own time),
/// and every header's crtime and checksum zeroed.
fn end_image(s: &SimStorage) -> SimImage {
    let mut image = crate::support::normalized(s);
    let aside: Vec<(PathBuf, Vec<u8>, u32)> = image
        .files()
        .iter()
        .filter(|(p, _)| p.to_string_lossy().contains(DISPLACED_INFIX))
        .map(|(p, f)| (p.clone(), f.bytes.clone(), f.mode))
        .collect();
    image.retain(|p| !p.to_string_lossy().contains(DISPLACED_INFIX));
    for (path, bytes, mode) in aside {
        let name = path.to_string_lossy();
        let cut = name.find(DISPLACED_INFIX).unwrap_or(name.len());
        image.insert(
            Path::new(&format!("{}{DISPLACED_INFIX}T", &name[..cut])),
            bytes,
            mode,
        );
    }
    image
}

/// Crash points of the move aside: at every event of a sync that moves a
/// foreign file out of a part's place, the foreign bytes survive intact
/// (in the part's place or moved aside), and a re-run ends where an
/// uninterrupted run does.
#[test]
fn crash_while_moving_a_foreign_file_aside() {
    let f = Fixture::new(&[&[8], &[8]], false);
    let part = f.part(1, 0).to_path_buf();
    let bytes = put_foreign(&f.base, &part, 5 * M);
    let opts = SyncOptions {
        stride: 4 << 20,
        ..sync_options()
    };
    let test = CrashTest::new("sync, moving aside", f.copy(), |s| {
        sync(s, &f.set_path, &opts, &NoProgress)
    })
    .events_interleave();
    let reference = test.reference();
    assert_eq!(reference.outcome.plan.totals.parts_to_displace, 1);
    let kept = |s: &SimStorage| {
        s.paths()
            .iter()
            .any(|p| s.written_bytes(p).as_ref() == Some(&bytes))
    };
    test.sweep(&reference, reference.all_points())
        .survivals(|k| survivals_torn_every(k, 3, 2))
        .after_crash(|c| assert!(kept(&c.storage), "{c}: the foreign bytes are lost"))
        .end_image(end_image)
        .end(|c, _| {
            assert!(kept(&c.storage), "{c}: the foreign bytes are lost");
            // A rename torn by the crash may leave both names; the re-run
            // then moves the second aside too: nothing lost, one more copy.
            assert!(!displaced(&c.storage).is_empty(), "{c}");
            assert!(healthy(&c.storage, &f.set_path), "{c}");
        })
        .run();
}

// --- defect 4: what could not be finished is refused before the first write ---

/// Every way the simulated storage can stand in the way of an entry.
const GUARDS: [Guard; 4] = [
    Guard::ReadOnly,
    Guard::NotWritable,
    Guard::Immutable,
    Guard::AppendOnly,
];

/// A pool set of two replicas, `/pool/a0` and the second in `dir` (one
/// part of 16 MiB, or two of 8 MiB with SINGLEHDR), created; returns the
/// storage and the second replica's parts.
fn two_dirs(dir: &str, single_hdr: bool) -> (SimStorage, Vec<PathBuf>) {
    let s = SimStorage::new();
    let second: Vec<PathBuf> = if single_hdr {
        vec![Path::new(dir).join("b0"), Path::new(dir).join("b1")]
    } else {
        vec![Path::new(dir).join("b0")]
    };
    let size = if single_hdr { 8 } else { 16 };
    let mut text = String::from("PMEMPOOLSET\n");
    if single_hdr {
        text.push_str("OPTION SINGLEHDR\n");
    }
    text.push_str("16M /pool/a0\nREPLICA\n");
    for p in &second {
        text.push_str(&format!("{size}M {}\n", p.display()));
    }
    s.add_dir(Path::new(dir)).expect("dir");
    s.insert_file(Path::new(SET), text.as_bytes(), 0o644)
        .expect("set file");
    create(&s, Path::new(SET), &CreateOptions::default()).expect("create");
    (s, second)
}

const SET: &str = "/pool/pool.set";

fn transform_options() -> TransformOptions {
    TransformOptions {
        threads: 1,
        uuids: UuidSource::Derived { seed: 7 },
        ..TransformOptions::default()
    }
}

/// Removing a replica whose directory does not let its file go is refused
/// while planning, dry run or not, naming the file and why; nothing
/// changes (before, the master was relinked and the unlink then failed,
/// leaving an "alien replica"). Once the directory lets go, it works.
#[test]
fn transform_refuses_to_remove_a_replica_it_could_not_delete() {
    for guard in GUARDS {
        let (s, second) = two_dirs("/ro", false);
        let dst = Path::new("/pool/dst.set");
        s.insert_file(dst, b"PMEMPOOLSET\n16M /pool/a0\n", 0o644)
            .expect("target");
        s.guard_dir(Path::new("/ro"), Some(guard));
        let before = s.image();
        for dry_run in [true, false] {
            let opts = TransformOptions {
                dry_run,
                ..transform_options()
            };
            let err = transform(&s, Path::new(SET), dst, &opts, &NoProgress).expect_err("refused");
            let text = err.to_string();
            assert!(
                text.contains(&format!("cannot delete {}: ", second[0].display())),
                "{guard:?}: {text}"
            );
            assert!(text.ends_with("; nothing was written"), "{guard:?}: {text}");
            assert_eq!(
                s.image(),
                before,
                "{guard:?}: the refusal changed something"
            );
        }
        assert!(healthy(&s, Path::new(SET)), "{guard:?}");
        s.guard_dir(Path::new("/ro"), None);
        transform(&s, Path::new(SET), dst, &transform_options(), &NoProgress).expect("transform");
        assert!(healthy(&s, dst));
        assert_eq!(s.stat(&second[0]).expect("stat"), None);
    }
}

/// A read-only mount is said to be one.
#[test]
fn a_read_only_mount_is_named() {
    let (s, _) = two_dirs("/ro", false);
    let dst = Path::new("/pool/dst.set");
    s.insert_file(dst, b"PMEMPOOLSET\n16M /pool/a0\n", 0o644)
        .expect("target");
    s.guard_dir(Path::new("/ro"), Some(Guard::ReadOnly));
    let err =
        transform(&s, Path::new(SET), dst, &transform_options(), &NoProgress).expect_err("refused");
    assert_eq!(
        err.to_string(),
        "failed to transform /pool/pool.set -> /pool/dst.set: cannot delete /ro/b0: /ro is on a read-only file system; nothing was written"
    );
}

/// The simulated storage, blind: it answers that nothing stands in the
/// way of any entry, so a run meets the guard only when it unlinks.
#[derive(Debug, Clone)]
struct Blind(SimStorage);

impl Storage for Blind {
    type File = SimFile;
    type Aux = SimFile;
    fn stat(&self, path: &Path) -> Result<Option<Meta>, PmemError> {
        self.0.stat(path)
    }
    fn open(&self, path: &Path, access: Access) -> Result<SimFile, PmemError> {
        self.0.open(path, access)
    }
    fn create(&self, path: &Path, size: u64) -> Result<SimFile, PmemError> {
        self.0.create(path, size)
    }
    fn remove(&self, path: &Path) -> Result<(), PmemError> {
        self.0.remove(path)
    }
    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), PmemError> {
        self.0.set_mode(path, mode)
    }
    fn removal_obstacle(&self, _: &Path) -> Result<Option<Obstacle>, PmemError> {
        Ok(None)
    }
    fn creation_obstacle(&self, _: &Path) -> Result<Option<Obstacle>, PmemError> {
        Ok(None)
    }
    fn rename(&self, from: &Path, to: &Path) -> Result<(), PmemError> {
        self.0.rename(from, to)
    }
    fn create_aux(&self, path: &Path, mode: u32) -> Result<SimFile, PmemError> {
        self.0.create_aux(path, mode)
    }
    fn open_aux(&self, path: &Path, access: Access) -> Result<SimFile, PmemError> {
        self.0.open_aux(path, access)
    }
    fn clock(&self) -> &dyn Clock {
        self.0.clock()
    }
    fn current_dir(&self) -> Result<PathBuf, PmemError> {
        self.0.current_dir()
    }
    fn fsync_dir(&self, dir: &Path) -> Result<(), PmemError> {
        self.0.fsync_dir(dir)
    }
    fn free_space(&self, dir: &Path) -> Result<Option<u64>, PmemError> {
        self.0.free_space(dir)
    }
}

/// What planning cannot foresee still fails after the first write; the
/// error then names the command that finishes the job, and that command,
/// run once the directory lets go, does.
#[test]
fn a_transform_that_fails_after_its_first_write_names_the_command_that_finishes_it() {
    let (s, second) = two_dirs("/ro", false);
    let dst = Path::new("/pool/dst.set");
    s.insert_file(dst, b"PMEMPOOLSET\n16M /pool/a0\n", 0o644)
        .expect("target");
    s.guard_dir(Path::new("/ro"), Some(Guard::ReadOnly));
    let blind = Blind(s.clone());
    let err = transform(
        &blind,
        Path::new(SET),
        dst,
        &transform_options(),
        &NoProgress,
    )
    .expect_err("the unlink fails");
    assert!(
        matches!(&err, Error::Unfinished { command, .. } if command == "poolsync transform /pool/pool.set /pool/dst.set"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("unlink \"/ro/b0\": Read-only file system"),
        "{text}"
    );
    assert!(
        text.ends_with("once that is fixed, run `poolsync transform /pool/pool.set /pool/dst.set` again: it finishes what this run began"),
        "{text}"
    );
    s.guard_dir(Path::new("/ro"), None);
    transform(&s, Path::new(SET), dst, &transform_options(), &NoProgress).expect("re-run");
    assert!(healthy(&s, dst));
    assert_eq!(s.stat(&second[0]).expect("stat"), None);
}

/// sync: a SINGLEHDR replica whose second part has the wrong size needs
/// that part moved aside and created anew (and its part 0's header
/// invalidated first); a directory that does not let the part go refuses
/// the sync before anything is written, dry run or not.
#[test]
fn sync_refuses_to_rebuild_a_part_it_could_not_replace() {
    for guard in GUARDS {
        let (s, second) = two_dirs("/imm", true);
        let mut bytes = s.written_bytes(&second[1]).expect("part");
        bytes.truncate(4 << 20);
        crate::support::remove(&s, &second[1]);
        s.insert_file(&second[1], &bytes, 0o644).expect("truncated");
        s.guard_dir(Path::new("/imm"), Some(guard));
        let before = s.image();
        for dry_run in [true, false] {
            let opts = SyncOptions {
                dry_run,
                ..sync_options()
            };
            let err = sync(&s, Path::new(SET), &opts, &NoProgress).expect_err("refused");
            let text = err.to_string();
            assert!(
                text.contains(&format!("{}: ", second[1].display())) && text.contains("cannot "),
                "{guard:?}: {text}"
            );
            assert_eq!(
                s.image(),
                before,
                "{guard:?}: the refusal changed something"
            );
        }
        s.guard_dir(Path::new("/imm"), None);
        sync(&s, Path::new(SET), &sync_options(), &NoProgress).expect("sync");
        assert!(healthy(&s, Path::new(SET)), "{guard:?}");
    }
}

/// rm: when one part of the pool set cannot be removed, none is; the
/// pool set stays whole, and the error names the file and why.
#[test]
fn rm_removes_nothing_when_a_part_cannot_be_removed() {
    for guard in GUARDS {
        let (s, second) = two_dirs("/ro", false);
        s.guard_dir(Path::new("/ro"), Some(guard));
        let before = s.image();
        for force in [false, true] {
            let options = RmOptions {
                force,
                ask: Ask::Never,
                ..RmOptions::default()
            };
            let err = rm(&s, Path::new(SET), &options, &mut AlwaysYes).expect_err("refused");
            assert!(
                matches!(&err, Error::CannotRemove { path, .. } if path == Path::new(SET)),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("cannot delete {}: ", second[0].display())),
                "{guard:?}: {text}"
            );
            assert!(text.ends_with("; nothing was removed"), "{text}");
            assert_eq!(
                s.image(),
                before,
                "{guard:?}: the refusal removed something"
            );
        }
        assert!(healthy(&s, Path::new(SET)));
    }
}

// --- defect 1b: transform never deletes or overwrites a header-less part
// --- that its bytes do not prove the pool's

/// `OPTION SINGLEHDR`, `16M /pool/s0`, `16M /pool/foreign`, `REPLICA`,
/// `32M /pool/r0`, created, then `foreign` replaced by a foreign file;
/// returns the storage and the foreign bytes.
fn singlehdr_with_foreign() -> (SimStorage, Vec<u8>) {
    let s = SimStorage::new();
    s.insert_file(
        Path::new(SET),
        b"PMEMPOOLSET\nOPTION SINGLEHDR\n16M /pool/s0\n16M /pool/foreign\nREPLICA\n32M /pool/r0\n",
        0o644,
    )
    .expect("set file");
    create(&s, Path::new(SET), &CreateOptions::default()).expect("create");
    let bytes = put_foreign(&s, Path::new("/pool/foreign"), 16 * M);
    (s, bytes)
}

/// The two targets of the issue: the first replica removed (its
/// header-less part would be deleted), and the first replica reshaped in
/// place (its header-less part would be overwritten).
const TARGETS: [(&str, &[u8], &str); 2] = [
    (
        "remove the first replica",
        b"PMEMPOOLSET\nOPTION SINGLEHDR\n32M /pool/r0\n",
        "refusing to delete /pool/foreign (replica 0 part 1): the file carries no pool header of its own (OPTION SINGLEHDR), and its bytes differ from those of replica 1 at logical offset 0x1000000",
    ),
    (
        "reshape the first replica",
        b"PMEMPOOLSET\nOPTION SINGLEHDR\n8M /pool/s0\n24M /pool/foreign\n",
        "refusing to overwrite /pool/foreign (replica 0 part 1): the file carries no pool header of its own (OPTION SINGLEHDR), and its bytes differ from those of replica 1 at logical offset 0x1000000",
    ),
];

/// A SINGLEHDR part after the first carries no header: a foreign file in
/// its place is never deleted or overwritten by transform, dry run or not;
/// the refusal names the file and why, and nothing changes.
#[test]
fn transform_leaves_a_foreign_headerless_part_alone() {
    for (what, target, expected) in TARGETS {
        let (s, bytes) = singlehdr_with_foreign();
        let dst = Path::new("/pool/dst.set");
        s.insert_file(dst, target, 0o644).expect("target");
        let before = s.image();
        for dry_run in [true, false] {
            let opts = TransformOptions {
                dry_run,
                ..transform_options()
            };
            let err = transform(&s, Path::new(SET), dst, &opts, &NoProgress).expect_err(what);
            let text = err.to_string();
            assert!(text.contains(expected), "{what}: {text}");
            assert!(
                text.ends_with(
                    "; if it is, --force takes it on the word of its replica's part 0, /pool/s0"
                ),
                "{what}: {text}"
            );
            assert_eq!(s.image(), before, "{what}: the refusal changed something");
        }
        assert_eq!(
            s.written_bytes(Path::new("/pool/foreign")),
            Some(bytes),
            "{what}"
        );
    }
}

/// The pool's own header-less part is proven by its bytes (they equal the
/// other replica's), so the same transforms go through; `--force` takes a
/// foreign one on part 0's word, as `rm --verify-owner -f` does.
#[test]
fn transform_proves_a_headerless_part_by_its_bytes_or_takes_it_with_force() {
    for (what, target, _) in TARGETS {
        let s = SimStorage::new();
        s.insert_file(
            Path::new(SET),
            b"PMEMPOOLSET\nOPTION SINGLEHDR\n16M /pool/s0\n16M /pool/foreign\nREPLICA\n32M /pool/r0\n",
            0o644,
        )
        .expect("set file");
        create(&s, Path::new(SET), &CreateOptions::default()).expect("create");
        let dst = Path::new("/pool/dst.set");
        s.insert_file(dst, target, 0o644).expect("target");
        transform(&s, Path::new(SET), dst, &transform_options(), &NoProgress)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(healthy(&s, dst), "{what}");

        let (s, _) = singlehdr_with_foreign();
        s.insert_file(dst, target, 0o644).expect("target");
        let forced = TransformOptions {
            force: true,
            ..transform_options()
        };
        transform(&s, Path::new(SET), dst, &forced, &NoProgress)
            .unwrap_or_else(|e| panic!("{what}, --force: {e}"));
    }
}

/// Bytes the other replica does not hold (past its end) prove nothing
/// unless they are zero: a part whose tail lies past every other replica
/// is proven only when that tail is blank.
#[test]
fn bytes_past_every_other_replica_must_be_zero() {
    let s = SimStorage::new();
    s.insert_file(
        Path::new(SET),
        b"PMEMPOOLSET\nOPTION SINGLEHDR\n16M /pool/s0\n24M /pool/s1\nREPLICA\n32M /pool/r0\n",
        0o644,
    )
    .expect("set file");
    create(&s, Path::new(SET), &CreateOptions::default()).expect("create");
    let dst = Path::new("/pool/dst.set");
    s.insert_file(dst, b"PMEMPOOLSET\nOPTION SINGLEHDR\n32M /pool/r0\n", 0o644)
        .expect("target");
    // Logical 36 MiB lies in s1, past the end of r0 (32 MiB).
    crate::support::write_file(&s, Path::new("/pool/s1"), 20 << 20, b"not the pool's");
    let err =
        transform(&s, Path::new(SET), dst, &transform_options(), &NoProgress).expect_err("refused");
    assert!(
        err.to_string()
            .contains("it holds bytes past the end of replica 1 (at logical offset 0x2400000)"),
        "{err}"
    );
    crate::support::write_file(&s, Path::new("/pool/s1"), 20 << 20, &[0; 14]);
    transform(&s, Path::new(SET), dst, &transform_options(), &NoProgress).expect("blank tail");
    assert!(healthy(&s, dst));
}

/// libpmemobj leaves a few bytes of heap bookkeeping in the master only
/// (chunk headers and footers in free chunks, docs/format.md §15.2): a
/// used pool's header-less part differs from the other replica in such
/// short runs, and is still proven the pool's. A run longer than that
/// bookkeeping, or many of them, is not.
#[test]
fn a_few_unreplicated_bytes_still_prove_the_part_a_longer_run_does_not() {
    let (what, target, _) = TARGETS[0];
    let fresh = || {
        let s = SimStorage::new();
        s.insert_file(
            Path::new(SET),
            b"PMEMPOOLSET\nOPTION SINGLEHDR\n16M /pool/s0\n16M /pool/foreign\nREPLICA\n32M /pool/r0\n",
            0o644,
        )
        .expect("set file");
        create(&s, Path::new(SET), &CreateOptions::default()).expect("create");
        s.insert_file(Path::new("/pool/dst.set"), target, 0o644)
            .expect("target");
        s
    };
    let dst = Path::new("/pool/dst.set");
    // As observed in a used pool: a handful of 1- to 6-byte runs.
    let s = fresh();
    for (off, len) in [(0x2c0, 1), (0x2c4, 1), (0x5_2440, 6), (0x5_2450, 6)] {
        crate::support::write_file(&s, Path::new("/pool/foreign"), off, &vec![0x5a; len]);
    }
    transform(&s, Path::new(SET), dst, &transform_options(), &NoProgress)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(healthy(&s, dst), "{what}");
    // 17 differing bytes in a row are no bookkeeping of libpmemobj's.
    let s = fresh();
    crate::support::write_file(&s, Path::new("/pool/foreign"), 0x2c0, &[0x5a; 17]);
    let err =
        transform(&s, Path::new(SET), dst, &transform_options(), &NoProgress).expect_err(what);
    assert!(err.to_string().contains("its bytes differ"), "{err}");
    // Nor are short runs in every other block.
    let s = fresh();
    for block in 0..2048u64 {
        crate::support::write_file(
            &s,
            Path::new("/pool/foreign"),
            4096 + block * 4096,
            &[0x5a; 2],
        );
    }
    transform(&s, Path::new(SET), dst, &transform_options(), &NoProgress).expect_err(what);
}
