//! Crash points of update packets on the simulated storage, through the
//! shared harness: an import into an existing destination, a seeding
//! import, an import that deletes its packet, and an export's packet and
//! state writes. At every flush, fence and directory sync, after a power
//! failure, a killed process or a torn mix, and a re-run with the same
//! arguments, the end state is the uninterrupted run's; right after the
//! crash, libpmemobj could never open half an epoch (a header that
//! verifies sits only on a replica that holds a whole epoch), the state
//! never records an epoch whose data is not there, and no packet file
//! appears under its name before the state records its epoch.

use std::path::{Path, PathBuf};

use poolsync_engine::exec::NoProgress;
use poolsync_engine::packets::export::{export, ExportOptions};
use poolsync_engine::packets::import::{import, ImportOptions};
use poolsync_engine::packets::state::{load, Loaded};
use poolsync_engine::packets::IdSource;
use poolsync_engine::ring::UuidSource;
use poolsync_header::{PoolHdr, POOL_HDR_CRTIME_OFF, POOL_HDR_CSUM_OFF, POOL_HDR_SIZE};
use poolsync_pmem::sim::{SimImage, SimStorage};
use poolsync_pmem::Storage;

use crate::crash::{survivals_torn_every, CrashTest, Sweeping};
use crate::support::{read_logical, Fixture};

const M: u64 = 1 << 20;

fn export_opts(out: &str) -> ExportOptions {
    ExportOptions {
        destinations: vec!["b".into()],
        out: PathBuf::from(out),
        ids: IdSource::Derived { seed: 5 },
        stride: 1 << 20,
        ..ExportOptions::default()
    }
}

fn import_opts(keep: bool) -> ImportOptions {
    ImportOptions {
        keep,
        uuids: UuidSource::Derived { seed: 9 },
        ..ImportOptions::default()
    }
}

/// Site A (one 8 MiB replica and a second of 8 MiB), the pool set file of
/// B (two replicas of other layouts, parts not created) and `/out`.
fn sites() -> (Fixture, SimStorage, PathBuf) {
    let fx = Fixture::new(&[&[8], &[8]], false);
    let s = fx.copy();
    s.add_dir(Path::new("/b")).unwrap();
    s.add_dir(Path::new("/out")).unwrap();
    let b = PathBuf::from("/b/pool.set");
    let text = "PMEMPOOLSET\n8M /b/r0p0\nREPLICA\n4M /b/r1p0\n5M /b/r1p1\n";
    s.insert_file(&b, text.as_bytes(), 0o644).unwrap();
    s.fsync_dir(Path::new("/b")).unwrap();
    (fx, s, b)
}

fn change(s: &SimStorage, fx: &Fixture, at: u64, blocks: u64, seed: u8) {
    let bytes: Vec<u8> = (0..blocks * 4096)
        .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
        .collect();
    for r in 0..fx.parts.len() {
        fx.write_logical(s, r, at, &bytes);
    }
}

fn end(fx: &Fixture) -> u64 {
    fx.set.pool_size().unwrap() / 4096 * 4096
}

/// B's parsed set.
fn b_set(s: &SimStorage, b: &Path) -> poolsync_poolset::PoolSet {
    poolsync_poolset::parse(&String::from_utf8(s.written_bytes(b).unwrap()).unwrap()).unwrap()
}

/// Per replica of B: whether every header verifies, and its replicated
/// range (`None` when a part is missing).
fn b_replicas(s: &SimStorage, b: &Path, end: u64) -> Vec<(bool, Option<Vec<u8>>)> {
    let set = b_set(s, b);
    (0..set.replicas.len())
        .map(|r| {
            let parts = match &set.replicas[r] {
                poolsync_poolset::Replica::Local { parts, .. } => parts.clone(),
                _ => unreachable!(),
            };
            let exists = parts
                .iter()
                .all(|p| s.written_bytes(Path::new(&p.path)).is_some());
            let valid = exists
                && parts.iter().take(set.nhdrs(r)).all(|p| {
                    let bytes = s.written_bytes(Path::new(&p.path)).unwrap();
                    bytes.len() >= POOL_HDR_SIZE
                        && PoolHdr::decode(&bytes).is_ok_and(|h| !h.is_zero() && h.checksum_ok())
                });
            let image = exists.then(|| read_logical(s, &set, r, 4096, end - 4096));
            (valid, image)
        })
        .collect()
}

/// The epoch B's state records, if it has one.
fn b_epoch(s: &SimStorage, b: &Path) -> Option<u32> {
    match load(s, b).unwrap() {
        Loaded::Ready(f) => Some(f.head.epoch),
        _ => None,
    }
}

/// The image with B's header crtimes and checksums zeroed (they depend on
/// the clock) once every header has been checked to verify.
fn normalized(s: &SimStorage, b: &Path) -> SimImage {
    let set = b_set(s, b);
    let mut image = s.image();
    for (r, rep) in set.replicas.iter().enumerate() {
        if let poolsync_poolset::Replica::Local { parts, .. } = rep {
            for p in parts.iter().take(set.nhdrs(r)) {
                let path = Path::new(&p.path);
                let Some(file) = image.get(path).cloned() else {
                    continue;
                };
                let mut bytes = file.bytes;
                let hdr = PoolHdr::decode(&bytes).unwrap();
                assert!(hdr.checksum_ok(), "{}: header checksum", p.path);
                bytes[POOL_HDR_CRTIME_OFF..POOL_HDR_CRTIME_OFF + 8].fill(0);
                bytes[POOL_HDR_CSUM_OFF..POOL_HDR_SIZE].fill(0);
                image.insert(path, bytes, file.mode);
            }
        }
    }
    image
}

/// The invariant of a destination right after a crash: a replica whose
/// headers all verify holds a whole epoch, the old or the new one, and a
/// state that records the new epoch has the new data everywhere.
fn check_destination(
    s: &SimStorage,
    b: &Path,
    end: u64,
    old: Option<&[u8]>,
    new: &[u8],
    new_epoch: u32,
    at: &str,
) {
    for (r, (valid, image)) in b_replicas(s, b, end).iter().enumerate() {
        let Some(image) = image else { continue };
        if *valid {
            assert!(
                image == new || old.is_some_and(|o| image == o),
                "{at}: replica {r} opens with a mix of two epochs"
            );
        }
        if b_epoch(s, b) == Some(new_epoch) {
            assert!(
                image == new,
                "{at}: the state records epoch {new_epoch} before its data"
            );
        }
    }
}

#[test]
fn an_import_survives_a_crash_at_every_point() {
    import_sweep(Sweeping::Crashes);
}

/// EIO, ENOSPC and EROFS while an import applies a packet: a clear error,
/// no replica that opens with a mix of two epochs, and a re-run that
/// converges.
#[test]
fn an_import_under_faults() {
    import_sweep(Sweeping::Faults);
}

fn import_sweep(how: Sweeping) {
    let (fx, s, b) = sites();
    export(&s, &fx.set_path, &export_opts("/out/p1"), &NoProgress).unwrap();
    import(
        &s,
        &b,
        &[PathBuf::from("/out/p1")],
        &import_opts(false),
        &NoProgress,
    )
    .unwrap();
    let old = read_logical(&s, &fx.set, 0, 4096, end(&fx) - 4096);
    change(&s, &fx, 5 * M, 3, 17);
    change(&s, &fx, 7 * M, 20, 18);
    export(&s, &fx.set_path, &export_opts("/out/p2"), &NoProgress).unwrap();
    let new = read_logical(&s, &fx.set, 0, 4096, end(&fx) - 4096);
    let packets = [PathBuf::from("/out/p2")];
    let opts = import_opts(true);
    let test = CrashTest::new("import", s, |w| import(w, &b, &packets, &opts, &NoProgress));
    let reference = test.reference();
    assert_eq!(reference.outcome.after, Some((1, 2)));
    let e = end(&fx);
    how.sweep(&test, &reference)
        .survivals(|k| survivals_torn_every(k, 3, 2))
        .after_crash(|c| check_destination(&c.storage, &b, e, Some(&old), &new, 2, &c.to_string()))
        .rerun(|c| {
            let outcome = c
                .run()
                .unwrap_or_else(|e| panic!("{c}: re-run failed: {e}"));
            assert!(!outcome.refused(), "{c}: re-run refused: {outcome:?}");
            outcome
        })
        .end(|c, outcome| {
            assert_eq!(outcome.after, Some((1, 2)), "{c}");
            for (r, (valid, image)) in b_replicas(&c.storage, &b, e).iter().enumerate() {
                assert!(
                    *valid && image.as_deref() == Some(&new[..]),
                    "{c}: replica {r}"
                );
            }
        })
        .run();
}

#[test]
fn a_seeding_import_survives_a_crash_at_every_point() {
    seed_sweep(Sweeping::Crashes);
}

/// EIO, ENOSPC and EROFS while an import seeds a destination.
#[test]
fn a_seeding_import_under_faults() {
    seed_sweep(Sweeping::Faults);
}

/// A seed killed between creating a part (`O_EXCL`, mode 0) and
/// allocating it leaves an empty file of mode 0: the same import run again
/// makes it anew instead of refusing its size (issue 15, defect 3). A file
/// of mode 0 with bytes in it, or an empty one with a mode, is not such a
/// leftover and is refused as before.
#[test]
fn a_seed_stopped_before_it_allocated_a_part_is_finished() {
    let (fx, s, b) = sites();
    export(&s, &fx.set_path, &export_opts("/out/p1"), &NoProgress).unwrap();
    let packets = [PathBuf::from("/out/p1")];
    let part = Path::new("/b/r1p1");
    for (bytes, mode) in [(&b"x"[..], 0), (&b""[..], 0o644)] {
        let t = s.after_crash_with(poolsync_pmem::sim::Survival::Everything);
        t.insert_file(part, bytes, mode).unwrap();
        let err = import(&t, &b, &packets, &import_opts(true), &NoProgress).unwrap_err();
        assert!(
            err.to_string().contains("file size does not match"),
            "{err}"
        );
    }
    s.insert_file(part, b"", 0).unwrap();
    let outcome =
        import(&s, &b, &packets, &import_opts(true), &NoProgress).unwrap_or_else(|e| panic!("{e}"));
    assert!(outcome.seeded && !outcome.refused(), "{outcome:?}");
    assert_eq!(outcome.after, Some((1, 1)));
    assert_eq!(s.stat(part).unwrap().unwrap().len, 5 * M);
}

fn seed_sweep(how: Sweeping) {
    let (fx, s, b) = sites();
    export(&s, &fx.set_path, &export_opts("/out/p1"), &NoProgress).unwrap();
    let new = read_logical(&s, &fx.set, 0, 4096, end(&fx) - 4096);
    let packets = [PathBuf::from("/out/p1")];
    let opts = import_opts(true);
    let test = CrashTest::new("seed", s, |w| import(w, &b, &packets, &opts, &NoProgress));
    let reference = test.reference();
    assert!(reference.outcome.seeded);
    let e = end(&fx);
    how.sweep(&test, &reference)
        .survivals(|k| survivals_torn_every(k, 4, 1))
        .after_crash(|c| check_destination(&c.storage, &b, e, None, &new, 1, &c.to_string()))
        .rerun(|c| {
            let outcome = c
                .run()
                .unwrap_or_else(|e| panic!("{c}: re-run failed: {e}"));
            assert!(!outcome.refused(), "{c}: re-run refused: {outcome:?}");
            outcome
        })
        .end_image(|st| normalized(st, &b))
        .end(|c, outcome| {
            assert_eq!(outcome.after, Some((1, 1)), "{c}");
        })
        .run();
}

/// An import that deletes its packet (three files), stopped at every
/// point of the deletion: the same import run again finishes it and says
/// the packet is held, whether some of its files are left or none
/// (issue 15, defect 3). Only once the run has removed its record of the
/// deletion, its very last step, do the files count as never given.
#[test]
fn an_import_that_deletes_its_packet_converges_after_a_crash() {
    let (fx, s, b) = sites();
    export(&s, &fx.set_path, &export_opts("/out/p1"), &NoProgress).unwrap();
    import(
        &s,
        &b,
        &[PathBuf::from("/out/p1")],
        &import_opts(false),
        &NoProgress,
    )
    .unwrap();
    change(&s, &fx, 6 * M, 200, 3);
    let split = ExportOptions {
        max_size: 300 << 10,
        ..export_opts("/out/p2")
    };
    let made = export(&s, &fx.set_path, &split, &NoProgress).unwrap();
    let packets: Vec<PathBuf> = made
        .packet
        .as_ref()
        .expect("a packet")
        .files
        .iter()
        .map(|f| f.path.clone())
        .collect();
    assert!(packets.len() >= 3, "{packets:?}");
    let opts = import_opts(false);
    let test = CrashTest::new("import and delete", s, |w| {
        import(w, &b, &packets, &opts, &NoProgress)
    });
    let reference = test.reference();
    assert_eq!(reference.outcome.deleted, packets);
    let record = poolsync_engine::packets::deleting::deleting_path(&b);
    let n = reference.n();
    let points: Vec<u64> = (n.saturating_sub(12)..=n).collect();
    test.sweep(&reference, points)
        .rerun(|c| match c.run() {
            Ok(outcome) => {
                assert!(!outcome.refused(), "{c}: {outcome:?}");
                assert_eq!(outcome.after, Some((1, 2)), "{c}");
                outcome
            }
            // The run was done: its files and its record are gone.
            Err(e) => {
                assert!(
                    e.to_string().contains("none of the packet files exists")
                        && c.storage.stat(&record).unwrap().is_none(),
                    "{c}: {e}"
                );
                reference.outcome.clone()
            }
        })
        .end(|c, _| {
            for p in &packets {
                assert!(
                    c.storage.stat(p).unwrap().is_none(),
                    "{c}: {} is left",
                    p.display()
                );
            }
            assert!(
                c.storage.stat(&record).unwrap().is_none(),
                "{c}: the record is left"
            );
            assert_eq!(b_epoch(&c.storage, &b), Some(2), "{c}");
        })
        .run();
}

#[test]
fn an_export_survives_a_crash_at_every_point() {
    export_sweep(Sweeping::Crashes);
}

/// EIO, ENOSPC and EROFS while an export writes a packet and the state:
/// a clear error, no packet under its name before the state records it,
/// and a re-run that converges.
#[test]
fn an_export_under_faults() {
    export_sweep(Sweeping::Faults);
}

fn export_sweep(how: Sweeping) {
    let (fx, s, b) = sites();
    export(&s, &fx.set_path, &export_opts("/out/p1"), &NoProgress).unwrap();
    import(
        &s,
        &b,
        &[PathBuf::from("/out/p1")],
        &import_opts(false),
        &NoProgress,
    )
    .unwrap();
    change(&s, &fx, 5 * M, 30, 23);
    let mut opts = export_opts("/out/p2");
    opts.max_size = 64 * 1024;
    let test = CrashTest::new("export", s, |w| export(w, &fx.set_path, &opts, &NoProgress));
    let reference = test.reference();
    let files = reference.outcome.packet.as_ref().unwrap().files.len();
    assert!(files > 1, "the packet is split");
    how.sweep(&test, &reference)
        .after_crash(|c| {
            // A packet file under its name only once the state records it.
            if c.storage.stat(Path::new("/out/p2")).unwrap().is_some() {
                let Loaded::Ready(f) = load(&c.storage, &fx.set_path).unwrap() else {
                    panic!("{c}: a packet without a state");
                };
                assert_eq!(f.head.epoch, 2, "{c}: the packet's epoch is not recorded");
            }
        })
        .run();
}
