//! Foreign files in a pool set's place (issue 15, defects 1 and 4): `rm
//! --verify-owner`, `sync` and `transform` never destroy a file that does
//! not provably carry the pool set's UUID, and refuse before the first
//! write what they could not finish.

use std::path::{Path, PathBuf};

use poolsync_engine::create::{create, CreateOptions};
use poolsync_engine::rm::{rm, AlwaysYes, Ask, Outcome, RmOptions};
use poolsync_engine::sync::plan::DISPLACED_INFIX;
use poolsync_engine::sync::{sync, NoProgress, Step, SyncOptions, UuidSource};
use poolsync_pmem::sim::{SimImage, SimStorage};
use poolsync_pmem::Storage;

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
