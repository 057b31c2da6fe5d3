//! Foreign files in a pool set's place (issue 15, defects 1 and 4): `rm
//! --verify-owner`, `sync` and `transform` never destroy a file that does
//! not provably carry the pool set's UUID, and refuse before the first
//! write what they could not finish.

use std::path::{Path, PathBuf};

use poolsync_engine::create::{create, CreateOptions};
use poolsync_engine::rm::{rm, AlwaysYes, Ask, Outcome, RmOptions};
use poolsync_pmem::sim::SimStorage;
use poolsync_pmem::Storage;

use crate::support::Fixture;

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
