//! Heap-aware verification on the simulated storage, with synthetic heaps:
//! what `check --data` finds and names, what `sync --verify` repairs, the
//! majority rule, a corrupted source heap, and crash points of a repair.

use poolsync_engine::undo::{undo, RangeFate, UndoOptions};
use poolsync_engine::verify::{
    check_data, sync_verify, Findings, SourceChoice, Verdict, VerifyOptions, VerifyOutcome,
};
use poolsync_engine::Error;
use poolsync_header::heap::{
    zone_offset, AllocHeaderKind, ChunkHeader, ZoneHeader, CHUNK_FLAG_COMPACT_HEADER,
    CHUNK_TYPE_FREE, CHUNK_TYPE_USED, ZONE_MAGIC,
};
use poolsync_header::{
    ObjDescriptor, HEAP_CHUNKSIZE, HEAP_CHUNKS_PER_ZONE, OBJ_DESC_LEN, OBJ_DESC_OFF,
    ZONE_METADATA_SIZE,
};
use poolsync_pmem::sim::{Fault, SimImage, SimStorage, Survival};
use poolsync_pmem::{Access, PartFile, Storage};
use poolsync_poolset::map_range;

use crate::crash::{CrashTest, Sweeping};
use crate::support::{normalized, remove, Fixture};
use poolsync_engine::compare::CompareOptions;
use poolsync_engine::sync::{NoProgress, SyncOptions, UuidSource};

/// A used heap: zone 0 initialised, chunks 0–1 one used block (an object of
/// two chunks, which holds the fixture's data at 4 MiB), the rest free.
struct Heap {
    zone: u64,
    /// User data offset and size of the object.
    object: (u64, u64),
}

fn read_logical(fx: &Fixture, s: &SimStorage, r: usize, offset: u64, len: usize) -> Vec<u8> {
    let extents = fx.set.extents(r).expect("extents");
    let mut out = vec![0u8; len];
    for piece in map_range(&extents, offset, len as u64) {
        let f = s
            .open(fx.part(r, piece.part), Access::ReadOnly)
            .expect("open");
        let start = (piece.logical - offset) as usize;
        f.read_at(
            piece.file_offset,
            &mut out[start..start + piece.len as usize],
        )
        .expect("read");
    }
    out
}

/// Writes the same used heap into every replica, as libpmemobj would.
fn used_heap(fx: &Fixture) -> Heap {
    let desc = ObjDescriptor::decode(&read_logical(fx, &fx.base, 0, OBJ_DESC_OFF, OBJ_DESC_LEN))
        .expect("descriptor");
    let zone = zone_offset(desc.heap_offset, 0).expect("zone");
    let heap_end = desc.heap_offset + desc.heap_size;
    let nchunks =
        ((heap_end - zone - ZONE_METADATA_SIZE) / HEAP_CHUNKSIZE).min(HEAP_CHUNKS_PER_ZONE) as u32;
    let data = zone + ZONE_METADATA_SIZE;
    let kind = AllocHeaderKind::from_flags(CHUNK_FLAG_COMPACT_HEADER);
    for r in 0..fx.parts.len() {
        let zh = ZoneHeader {
            magic: ZONE_MAGIC,
            size_idx: nchunks,
            reserved: [0; 56],
        };
        fx.write_logical(&fx.base, r, zone, &zh.encode());
        let used = ChunkHeader {
            kind: CHUNK_TYPE_USED,
            flags: CHUNK_FLAG_COMPACT_HEADER,
            size_idx: 2,
        };
        fx.write_logical(&fx.base, r, zone + 64, &used.encode());
        let free = ChunkHeader {
            kind: CHUNK_TYPE_FREE,
            flags: 0,
            size_idx: nchunks - 2,
        };
        fx.write_logical(&fx.base, r, zone + 64 + 16, &free.encode());
        fx.write_logical(&fx.base, r, data, &kind.encode(2 * HEAP_CHUNKSIZE, 0, 7));
        fx.write_logical(&fx.base, r, data + 16, b"user data of the object");
    }
    Heap {
        zone,
        object: (data + 16, 2 * HEAP_CHUNKSIZE - 16),
    }
}

fn options() -> VerifyOptions {
    VerifyOptions {
        compare: CompareOptions {
            stride: 1 << 20,
            threads: 1,
        },
        ..VerifyOptions::default()
    }
}

fn sync_options() -> SyncOptions {
    SyncOptions {
        threads: 1,
        ..SyncOptions::default()
    }
}

fn check(fx: &Fixture, s: &SimStorage) -> Findings {
    check_data(s, &fx.set_path, &options(), &NoProgress).expect("check --data")
}

#[test]
fn a_healthy_set_with_noise_in_free_space_is_clean() {
    let fx = Fixture::new(&[&[8, 8], &[16], &[10, 8]], false);
    let heap = used_heap(&fx);
    // Free space and the volatile area differ: no divergence.
    fx.write_logical(
        &fx.base,
        1,
        heap.object.0 + 3 * HEAP_CHUNKSIZE,
        b"free noise",
    );
    fx.write_logical(&fx.base, 2, 6688, b"volatile");
    let f = check(&fx, &fx.base);
    assert!(f.is_clean(), "{f:#?}");
    assert_eq!(f.objects, 1);
    assert!(f.live_bytes > heap.object.1);
}

#[test]
fn divergence_is_named_by_replica_offset_part_and_owner() {
    let fx = Fixture::new(&[&[8, 8], &[16], &[10, 8]], false);
    let heap = used_heap(&fx);
    let at = heap.object.0 + 100;
    fx.write_logical(&fx.base, 2, at, b"XYZ");
    fx.write_logical(&fx.base, 1, heap.zone + 64 + 4, &[9]);
    let f = check(&fx, &fx.base);
    assert!(!f.is_clean());
    let d2 = &f.replicas[2].divergences;
    assert_eq!(d2.len(), 1, "{d2:#?}");
    assert_eq!((d2[0].offset, d2[0].replica), (at, 2));
    assert!(d2[0].len <= 3);
    assert!(
        d2[0].owner.starts_with(&format!(
            "object at offset {:#x} of size {}",
            heap.object.0, heap.object.1
        )),
        "{}",
        d2[0].owner
    );
    assert_eq!(d2[0].locations[0].replica, 2);
    assert_eq!(d2[0].locations[0].path, fx.part(2, 0));
    assert_eq!(d2[0].locations[1].replica, 0);
    let d1 = &f.replicas[1].divergences;
    assert_eq!(d1.len(), 1);
    assert_eq!(d1[0].owner, "zone 0 chunk 0 header");
    assert!(f.outvoted.is_none());
}

#[test]
fn sync_verify_repairs_and_a_dry_run_writes_nothing() {
    let fx = Fixture::new(&[&[8, 8], &[16], &[10, 8]], false);
    let heap = used_heap(&fx);
    fx.write_logical(&fx.base, 1, heap.object.0 + 5000, b"damage");
    fx.write_logical(&fx.base, 2, heap.zone + 8, b"zone noise");
    let s = fx.copy();
    let before = s.image();
    let dry = sync_verify(
        &s,
        &fx.set_path,
        &SyncOptions {
            dry_run: true,
            ..sync_options()
        },
        &options(),
        &NoProgress,
    )
    .expect("dry run");
    assert!(dry.repair.is_none());
    assert_eq!(dry.findings.total_ranges(), 2);
    assert_eq!(s.image(), before, "a dry run wrote");
    let done = sync_verify(&s, &fx.set_path, &sync_options(), &options(), &NoProgress)
        .expect("sync --verify");
    let repair = done.repair.expect("repair report");
    assert_eq!(repair.replicas.len(), 2);
    assert_eq!(repair.replicas[0].ranges, 1);
    assert!(check(&fx, &s).is_clean());
}

#[test]
fn the_majority_rule_refuses_and_names_the_ways_on() {
    let fx = Fixture::new(&[&[8, 8], &[16], &[10, 8]], false);
    let heap = used_heap(&fx);
    let at = heap.object.0 + 64;
    fx.write_logical(&fx.base, 0, at, b"master only");
    let s = fx.copy();
    let before = s.image();
    let err = sync_verify(&s, &fx.set_path, &sync_options(), &options(), &NoProgress)
        .expect_err("outvoted");
    assert!(
        matches!(
            err,
            Error::Outvoted {
                replica: 0,
                take: 1,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("--source 1") && text.contains("--force-source"),
        "{text}"
    );
    assert!(
        text.contains(&format!("object at offset {:#x}", heap.object.0)),
        "{text}"
    );
    assert_eq!(s.image(), before, "the refusal wrote");
    let f = check(&fx, &s);
    assert_eq!(f.outvoted.as_ref().map(|o| o.replica), Some(0));

    // --source 1 takes the majority's copy.
    let taken = fx.copy();
    let with_source = VerifyOptions {
        source: Some(1),
        ..options()
    };
    let sync_source = SyncOptions {
        source: Some(1),
        ..sync_options()
    };
    sync_verify(
        &taken,
        &fx.set_path,
        &sync_source,
        &with_source,
        &NoProgress,
    )
    .expect("--source 1");
    assert!(check(&fx, &taken).is_clean());
    assert_eq!(
        read_logical(&fx, &taken, 0, at, 11),
        read_logical(&fx, &taken, 1, at, 11)
    );
    assert_ne!(read_logical(&fx, &taken, 0, at, 11), b"master only");

    // --force-source spreads the master's.
    let spread = fx.copy();
    let force = VerifyOptions {
        force_source: true,
        ..options()
    };
    sync_verify(&spread, &fx.set_path, &sync_options(), &force, &NoProgress).expect("forced");
    for r in 0..3 {
        assert_eq!(read_logical(&fx, &spread, r, at, 11), b"master only");
    }

    // Two replicas: no vote, so a difference nothing else decides is a
    // tie, refused before anything is written.
    let two = Fixture::new(&[&[8, 8], &[16]], false);
    let heap2 = used_heap(&two);
    two.write_logical(&two.base, 0, heap2.object.0, b"master only");
    let s2 = two.copy();
    let before = s2.image();
    let err = sync_verify(&s2, &two.set_path, &sync_options(), &options(), &NoProgress)
        .expect_err("a tie is refused");
    assert!(
        matches!(
            err,
            Error::Tie {
                first: 0,
                second: 1,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("replicas 0 and 1 differ")
            && text.contains(&format!("object at offset {:#x}", heap2.object.0))
            && text.contains("--source N")
            && text.contains("--force-source"),
        "{text}"
    );
    assert_eq!(s2.image(), before, "the refusal wrote");
    let f = check_data(&s2, &two.set_path, &options(), &NoProgress).expect("check --data");
    assert_eq!(f.replicas[1].divergences[0].verdict, Verdict::Tie);
    assert!(f.tie.is_some());
    // --source 1 says replica 1 is right: the master is repaired.
    let one = VerifyOptions {
        source: Some(1),
        ..options()
    };
    let sync_one = SyncOptions {
        source: Some(1),
        ..sync_options()
    };
    sync_verify(&s2, &two.set_path, &sync_one, &one, &NoProgress).expect("--source 1");
    assert_eq!(
        read_logical(&two, &s2, 0, heap2.object.0, 11),
        read_logical(&two, &s2, 1, heap2.object.0, 11)
    );
    assert_ne!(
        read_logical(&two, &s2, 0, heap2.object.0, 11),
        b"master only"
    );
}

#[test]
fn the_heap_decides_where_one_replica_fails_its_structural_checks() {
    let fx = Fixture::new(&[&[8, 8], &[16]], false);
    let heap = used_heap(&fx);
    // A chunk type libpmemobj never writes, in the master.
    fx.write_logical(&fx.base, 0, heap.zone + 64, &[0x77, 0]);
    let f = check_data(&fx.base, &fx.set_path, &options(), &NoProgress).expect("check --data");
    // The master's heap fails; replica 1's passes and is compared against.
    assert_eq!(f.source, 1);
    assert!(
        matches!(f.source_choice, SourceChoice::Heap { instead_of: 0, .. }),
        "{:?}",
        f.source_choice
    );
    let d = &f.replicas[0].divergences[0];
    assert_eq!(d.owner, "zone 0 chunk 0 header");
    assert!(matches!(d.verdict, Verdict::Heap { .. }), "{:?}", d.verdict);
    assert!(f.tie.is_none() && !f.is_clean());
    // sync --verify repairs the master without --source.
    let s = fx.copy();
    let done = sync_verify(&s, &fx.set_path, &sync_options(), &options(), &NoProgress)
        .expect("the heap decides");
    assert_eq!(done.findings.source, 1);
    assert!(check(&fx, &s).is_clean());
    assert_eq!(
        read_logical(&fx, &s, 0, heap.zone + 64, 16),
        read_logical(&fx, &s, 1, heap.zone + 64, 16)
    );
    // Both heaps broken: nothing passes, which is refused.
    fx.write_logical(&fx.base, 1, heap.zone + 64, &[0x66, 0]);
    let err = check_data(&fx.base, &fx.set_path, &options(), &NoProgress).expect_err("refused");
    assert!(matches!(err, Error::SourceHeap { replica: 0, .. }), "{err}");
    assert!(err.to_string().contains("--source N (replicas 1)"), "{err}");
}

#[test]
fn a_root_offset_outside_the_heap_makes_the_master_the_damaged_one() {
    let fx = Fixture::new(&[&[8, 8], &[16]], false);
    used_heap(&fx);
    // root_offset is outside the descriptor's checksum: it stays valid.
    let mut raw = read_logical(&fx, &fx.base, 0, OBJ_DESC_OFF, OBJ_DESC_LEN);
    raw[0x800..0x808].copy_from_slice(&0xffff_ffff_ffff_fff0u64.to_le_bytes());
    fx.write_logical(&fx.base, 0, OBJ_DESC_OFF, &raw);
    let f = check(&fx, &fx.base);
    assert_eq!(f.source, 1);
    assert_eq!(f.replicas[0].divergences[0].owner, "pool descriptor");
    assert!(matches!(
        f.replicas[0].divergences[0].verdict,
        Verdict::Heap { .. }
    ));
    let s = fx.copy();
    sync_verify(&s, &fx.set_path, &sync_options(), &options(), &NoProgress)
        .expect("the heap decides");
    assert_eq!(
        read_logical(&fx, &s, 0, OBJ_DESC_OFF, OBJ_DESC_LEN),
        read_logical(&fx, &s, 1, OBJ_DESC_OFF, OBJ_DESC_LEN)
    );
}

#[test]
fn undo_puts_back_exactly_what_a_repair_overwrote() {
    let fx = Fixture::new(&[&[8, 8], &[16]], false);
    let heap = used_heap(&fx);
    fx.write_logical(&fx.base, 0, heap.object.0 + 5000, b"damage in the master");
    let s = fx.copy();
    let before = without_undo(&s);
    let one = VerifyOptions {
        source: Some(1),
        ..options()
    };
    let sync_one = SyncOptions {
        source: Some(1),
        ..sync_options()
    };
    // The dry run says what the undo file will hold.
    let dry = sync_verify(
        &s,
        &fx.set_path,
        &SyncOptions {
            dry_run: true,
            ..sync_one.clone()
        },
        &one,
        &NoProgress,
    )
    .expect("dry run");
    let planned = dry.sync.plan.undo.expect("an undo file is planned");
    assert_eq!(planned.bytes, 4096);
    assert_eq!(without_undo(&s), before, "the dry run wrote");
    let done = sync_verify(&s, &fx.set_path, &sync_one, &one, &NoProgress).expect("repair");
    let saved = done.sync.report.expect("report").undo.expect("undo file");
    assert_eq!((saved.bytes, saved.records), (4096, 1));
    assert!(check(&fx, &s).is_clean());
    let report = undo(&s, &saved.path, &UndoOptions::default()).expect("undo");
    assert_eq!(report.bytes_restored, 4096);
    assert_eq!(without_undo(&s), before, "undo did not restore every byte");
    // Twice: nothing left to do.
    let again = undo(&s, &saved.path, &UndoOptions::default()).expect("again");
    assert_eq!(again.bytes_restored, 0);
    assert!(again.ranges.iter().all(|r| r.fate == RangeFate::AlreadyOld));
    // A pool changed since is refused, and nothing is written.
    sync_verify(&s, &fx.set_path, &sync_one, &one, &NoProgress).expect("repair again");
    fx.write_logical(&s, 0, heap.object.0 + 5000, b"the application wrote");
    let changed = without_undo(&s);
    let err = undo(&s, &saved.path, &UndoOptions::default()).expect_err("refused");
    assert!(
        matches!(err, Error::PoolChanged { replica: 0, .. }),
        "{err}"
    );
    assert_eq!(without_undo(&s), changed);
}

/// The bytes of every part of replica `r` in `s`.
fn parts_of(fx: &Fixture, s: &SimStorage, r: usize) -> Vec<Option<Vec<u8>>> {
    fx.parts[r].iter().map(|p| s.written_bytes(p)).collect()
}

/// The image of `s` without its undo files.
fn without_undo(s: &SimStorage) -> poolsync_pmem::sim::SimImage {
    let mut image = s.image();
    image.retain(|p| !crate::support::is_undo_file(p));
    image
}

/// The undo files of `s`, oldest first.
fn undo_files(s: &SimStorage) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = s
        .paths()
        .into_iter()
        .filter(|p| crate::support::is_undo_file(p))
        .collect();
    files.sort_by_key(|p| (p.as_os_str().len(), p.clone()));
    files
}

/// Every persistence event of a `sync --verify` repair is a crash point:
/// after the crash, a re-run converges to the uninterrupted end state and
/// the source is never written.
#[test]
fn crash_at_every_point_of_a_repair_converges() {
    let fx = Fixture::new(&[&[8, 8], &[16], &[10, 8]], false);
    let heap = used_heap(&fx);
    fx.write_logical(&fx.base, 1, heap.object.0 + 10, b"damage one");
    fx.write_logical(&fx.base, 1, heap.object.0 + 300_000, &[1; 9000]);
    fx.write_logical(&fx.base, 2, heap.zone + 64 + 4, &[3]);
    crash_everywhere(
        &fx,
        (&sync_options(), &options()),
        &[1, 2],
        without_undo,
        |o| {
            assert!(o.sync.plan.is_noop(), "the headers are intact");
            assert!(o.repair.as_ref().is_some_and(|r| r.replicas.len() == 2));
        },
    );
}

/// EIO, ENOSPC and EROFS while `sync --verify` repairs live data: a clear
/// error, the source never written, old bytes in place or an undo file
/// that puts them back, and a re-run that converges.
#[test]
fn faults_while_repairing_live_data() {
    let fx = Fixture::new(&[&[8, 8], &[16], &[10, 8]], false);
    let heap = used_heap(&fx);
    fx.write_logical(&fx.base, 1, heap.object.0 + 10, b"damage one");
    fx.write_logical(&fx.base, 2, heap.zone + 64 + 4, &[3]);
    sweep(
        &fx,
        (&sync_options(), &options()),
        (&[1, 2], without_undo),
        |o| assert!(o.repair.as_ref().is_some_and(|r| r.replicas.len() == 2)),
        Sweeping::Faults,
    );
}

/// Crashes `sync --verify` on `fx` at every event: the source is never
/// written, the re-run ends where an uninterrupted run ends (`end_image`
/// of both equal), and the set checks clean.
fn crash_everywhere(
    fx: &Fixture,
    options: (&SyncOptions, &VerifyOptions),
    repaired: &[usize],
    end_image: fn(&SimStorage) -> SimImage,
    check_reference: impl Fn(&VerifyOutcome),
) {
    sweep(
        fx,
        options,
        (repaired, end_image),
        check_reference,
        Sweeping::Crashes,
    );
}

/// `crash_everywhere`'s checks on the sweep `how` names.
fn sweep(
    fx: &Fixture,
    (sync_options, verify): (&SyncOptions, &VerifyOptions),
    (repaired, end_image): (&[usize], fn(&SimStorage) -> SimImage),
    check_reference: impl Fn(&VerifyOutcome),
    how: Sweeping,
) {
    let test = CrashTest::new("sync --verify", fx.copy(), |s| {
        sync_verify(s, &fx.set_path, sync_options, verify, &NoProgress)
    })
    .events_interleave();
    let source =
        |s: &SimStorage| -> Vec<_> { fx.parts[0].iter().map(|p| s.written_bytes(p)).collect() };
    let source_before = source(&fx.base);
    let reference = test.reference();
    check_reference(&reference.outcome);
    let events = reference.n();
    assert!(events >= 4, "only {events} events");
    how.sweep(&test, &reference)
        .survivals(|k| {
            vec![
                Survival::Durable,
                Survival::Everything,
                Survival::Torn { seed: k },
            ]
        })
        .after_crash(|c| {
            assert_eq!(source(&c.storage), source_before, "{c}: source written");
            // Old bytes in place, or new bytes with a complete undo file
            // that puts the old ones back.
            let undone = c.storage.after_crash_with(Survival::Everything);
            // Ranges whose old bytes a read error kept out of the undo
            // file: saved as unreadable (a bad block), so not put back.
            let mut unreadable = Vec::new();
            for file in undo_files(&undone) {
                match undo(&undone, &file, &UndoOptions::default()) {
                    Ok(report) => unreadable.extend(
                        report
                            .ranges
                            .into_iter()
                            .filter(|r| r.fate == RangeFate::Unreadable),
                    ),
                    Err(Error::UndoFile { reason, .. }) if reason.contains("incomplete") => {}
                    // A fault stopped the file's first write, and removing
                    // it failed too (EROFS): nothing was repaired after it.
                    Err(Error::UndoFile { reason, .. })
                        if c.fault.is_some() && reason.contains("no PSUNDO01 magic") =>
                    {
                        c.note("an empty undo file left");
                    }
                    Err(e) => panic!("{c}: undo failed: {e}"),
                }
            }
            if !unreadable.is_empty() {
                assert_eq!(c.fault, Some(Fault::ReadEio), "{c}: unreadable ranges");
                c.note("a range saved as unreadable");
            }
            for &r in repaired {
                let mut now = parts_of(fx, &undone, r);
                let before = parts_of(fx, &fx.base, r);
                for u in unreadable.iter().filter(|u| u.replica == r) {
                    let (at, len) = (u.file_offset as usize, u.len as usize);
                    if let (Some(now), Some(before)) = (&mut now[u.part], &before[u.part]) {
                        now[at..at + len].copy_from_slice(&before[at..at + len]);
                    }
                }
                let data = |parts: &[Option<Vec<u8>>]| -> Vec<Option<Vec<u8>>> {
                    let page = |b: &Vec<u8>| b[4096.min(b.len())..].to_vec();
                    parts.iter().map(|p| p.as_ref().map(page)).collect()
                };
                if now != before
                    && c.fault == Some(Fault::ReadEio)
                    && (data(&now) == data(&before)
                        || data(&now) == data(&parts_of(fx, &reference.storage, r)))
                {
                    // A header that could not be read makes its replica
                    // broken: sync gives it new headers, which no undo
                    // file holds, and copies the data (saving what it
                    // overwrites only where the part was left).
                    c.note("a replica rebuilt as broken after a read error");
                    continue;
                }
                assert_eq!(
                    now,
                    before,
                    "{c}: replica {r} holds neither its old bytes nor an undo file that restores them"
                );
            }
        })
        .end_image(end_image)
        .end(|c, _| {
            assert_eq!(source(&c.storage), source_before, "{c}: source written");
            assert!(check(fx, &c.storage).is_clean(), "{c}");
        })
        .run();
}

/// `sync --verify` on a set that needs both repairs: replica 2 lost a part,
/// which the sync's steps recreate, and replica 1's live data differs,
/// which the verification's repair copies. A crash in either phase is
/// finished by a re-run.
#[test]
fn crash_while_syncing_and_repairing_live_data() {
    let fx = Fixture::new(&[&[8, 8], &[16], &[10, 8]], false);
    let heap = used_heap(&fx);
    fx.write_logical(&fx.base, 1, heap.object.0 + 7000, b"damage");
    remove(&fx.base, fx.part(2, 1));
    let opts = SyncOptions {
        uuids: UuidSource::Derived { seed: 3 },
        ..sync_options()
    };
    // Replica 2 has no vote while it is broken: --force-source decides.
    let force = VerifyOptions {
        force_source: true,
        ..options()
    };
    crash_everywhere(&fx, (&opts, &force), &[1], normalized, |o| {
        let sync = o.sync.report.as_ref().expect("sync report");
        assert_eq!(sync.parts_created, 1);
        let repair = o.repair.as_ref().expect("repair");
        assert_eq!(repair.replicas.len(), 1);
        assert_eq!(repair.replicas[0].replica, 1);
    });
}

#[test]
fn a_broken_replica_is_not_compared_and_sync_verify_rebuilds_it_too() {
    let fx = Fixture::new(&[&[8, 8], &[16], &[10, 8]], false);
    let heap = used_heap(&fx);
    fx.write_logical(&fx.base, 1, heap.object.0 + 7000, b"damage");
    remove(&fx.base, fx.part(2, 1));
    let f = check(&fx, &fx.base);
    assert!(!f.is_clean());
    assert!(!f.replicas[2].compared);
    assert!(
        f.replicas[2]
            .note
            .as_deref()
            .is_some_and(|n| n.contains("broken")),
        "{:?}",
        f.replicas[2].note
    );
    assert_eq!(f.replicas[1].ranges, 1);
    // No vote with only one compared replica.
    assert!(f.outvoted.is_none());

    // Replica 2 has no vote while it is broken: source and replica 1
    // tie, which is refused before the rebuild too.
    let s = fx.copy();
    let err =
        sync_verify(&s, &fx.set_path, &sync_options(), &options(), &NoProgress).expect_err("a tie");
    assert!(
        matches!(
            err,
            Error::Tie {
                first: 0,
                second: 1,
                ..
            }
        ),
        "{err}"
    );
    let force = VerifyOptions {
        force_source: true,
        ..options()
    };
    let done = sync_verify(&s, &fx.set_path, &sync_options(), &force, &NoProgress)
        .expect("sync --verify --force-source");
    assert_eq!(done.sync.report.expect("report").parts_created, 1);
    let repair = done.repair.expect("repair");
    assert_eq!(repair.replicas.len(), 1);
    assert_eq!(
        (repair.replicas[0].replica, repair.replicas[0].ranges),
        (1, 1)
    );
    assert!(check(&fx, &s).is_clean());
}
