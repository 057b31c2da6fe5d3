//! Tests of the simulated crash backend, `poolsync_pmem::sim`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use poolsync_pmem::sim::{SimImage, SimStorage, Survival, DEFAULT_MAX_FILE_LEN, TORN_BLOCK};
use poolsync_pmem::{Access, Error, FileKind, PartFile, Storage};
use proptest::prelude::*;

const DIR: &str = "/pool";
const PART: &str = "/pool/a.part";

fn p(s: &str) -> &Path {
    Path::new(s)
}

/// A storage with the directory `/pool`.
fn fresh() -> SimStorage {
    let s = SimStorage::new();
    s.add_dir(p(DIR)).expect("add dir");
    s
}

/// Creates `/pool/a.part` of `len` bytes with its entry and allocation
/// durable, and returns the open handle.
fn durable_part(s: &SimStorage, len: u64) -> poolsync_pmem::sim::SimFile {
    let part = s.create(p(PART), len).expect("create");
    part.fence().expect("fence allocation");
    s.fsync_dir(p(DIR)).expect("fsync dir");
    part
}

fn is_crash(err: &Error, at: u64) -> bool {
    matches!(err, Error::SimulatedCrash { event } if *event == at)
}

#[test]
fn write_without_flush_or_fence_is_lost() {
    let s = fresh();
    let part = durable_part(&s, 4096);
    part.write_at(0, b"lost").expect("write");
    assert_eq!(
        s.written_bytes(p(PART)).expect("file").get(..4),
        Some(&b"lost"[..])
    );

    // Fenced without a flush: the fence has nothing to persist.
    part.fence().expect("fence");
    let rebooted = s.after_crash();
    assert_eq!(rebooted.written_bytes(p(PART)), Some(vec![0; 4096]));
    assert_eq!(s.persisted_bytes(p(PART)), Some(vec![0; 4096]));
}

#[test]
fn flush_without_fence_is_lost() {
    let s = fresh();
    let part = durable_part(&s, 4096);
    part.write_at(100, b"pending").expect("write");
    part.flush(100, 7).expect("flush");
    assert_eq!(s.after_crash().written_bytes(p(PART)), Some(vec![0; 4096]));
}

#[test]
fn flush_and_fence_survive_with_the_bytes_of_the_fence() {
    let s = fresh();
    let part = durable_part(&s, 4096);
    part.write_at(100, b"first").expect("write");
    part.flush(100, 5).expect("flush");
    // Written after the flush but before the fence: the fence takes the
    // range as it is now.
    part.write_at(100, b"later").expect("write");
    // Outside every flushed range: not persisted.
    part.write_at(200, b"stray").expect("write");
    part.fence().expect("fence");

    let mut expect = vec![0u8; 4096];
    expect[100..105].copy_from_slice(b"later");
    assert_eq!(s.persisted_bytes(p(PART)), Some(expect.clone()));
    let rebooted = s.after_crash();
    assert_eq!(rebooted.written_bytes(p(PART)), Some(expect));
    // After the reboot everything is durable and nothing is locked.
    assert_eq!(rebooted.durable_image(), rebooted.image());
    assert!(!rebooted.is_locked(p(PART)));
    assert!(s.is_locked(p(PART)));
    drop(
        rebooted
            .open(p(PART), Access::ReadWrite)
            .expect("no lock after reboot"),
    );
}

#[test]
fn a_fence_persists_only_its_own_file() {
    let s = fresh();
    let a = durable_part(&s, 4096);
    let b = s.create(p("/pool/b.part"), 4096).expect("create b");
    b.fence().expect("fence b");
    s.fsync_dir(p(DIR)).expect("fsync");

    a.write_at(0, b"aaaa").expect("write");
    a.flush(0, 4).expect("flush");
    b.fence().expect("fence of the other file");
    assert_eq!(s.persisted_bytes(p(PART)), Some(vec![0; 4096]));
    a.fence().expect("fence");
    assert_eq!(
        s.persisted_bytes(p(PART)).expect("file").get(..4),
        Some(&b"aaaa"[..])
    );
}

#[test]
fn flushed_ranges_die_with_their_handle() {
    let s = fresh();
    let part = durable_part(&s, 4096);
    part.write_at(0, b"orphan").expect("write");
    part.flush(0, 6).expect("flush");
    drop(part);
    let part = s.open(p(PART), Access::ReadWrite).expect("reopen");
    part.fence().expect("fence");
    assert_eq!(s.persisted_bytes(p(PART)), Some(vec![0; 4096]));
    // The data is still readable, only not durable.
    assert_eq!(
        s.written_bytes(p(PART)).expect("file").get(..6),
        Some(&b"orphan"[..])
    );
}

#[test]
fn new_file_needs_its_directory_synced_and_its_allocation_fenced() {
    // Fenced, directory not synced: gone after a crash.
    let s = fresh();
    let part = s.create(p(PART), 8192).expect("create");
    part.write_at(0, b"x").expect("write");
    part.flush(0, 1).expect("flush");
    part.fence().expect("fence");
    assert_eq!(s.persisted_bytes(p(PART)), None);
    assert!(s.after_crash().paths().is_empty());
    assert_eq!(s.durable_image(), SimImage::default());

    // Directory synced, nothing fenced: the entry survives, empty.
    let s = fresh();
    let part = s.create(p(PART), 8192).expect("create");
    s.fsync_parent(p(PART)).expect("fsync parent");
    assert_eq!(s.after_crash().written_bytes(p(PART)), Some(Vec::new()));
    assert_eq!(
        s.after_crash()
            .stat(p(PART))
            .expect("stat")
            .expect("exists")
            .len,
        0
    );

    // Both: the full, zero-filled file with mode 0.
    part.fence().expect("fence");
    let rebooted = s.after_crash();
    assert_eq!(rebooted.written_bytes(p(PART)), Some(vec![0; 8192]));
    let mut expect = SimImage::default();
    expect.insert(p(PART), vec![0; 8192], 0);
    assert_eq!(rebooted.image(), expect);
}

#[test]
fn removal_and_mode_need_a_directory_sync() {
    let s = fresh();
    s.insert_file(p(PART), b"old data", 0o600).expect("seed");
    s.insert_file(p("/pool/b.part"), b"keep", 0o600)
        .expect("seed");
    s.remove(p(PART)).expect("remove");
    s.set_mode(p("/pool/b.part"), 0o644).expect("chmod");
    assert_eq!(s.paths(), [PathBuf::from("/pool/b.part")]);

    let rebooted = s.after_crash();
    assert_eq!(rebooted.written_bytes(p(PART)), Some(b"old data".to_vec()));
    let meta = rebooted
        .stat(p("/pool/b.part"))
        .expect("stat")
        .expect("file");
    assert_eq!(meta.mode, 0o600);

    let everything = s.after_crash_with(Survival::Everything);
    assert_eq!(everything.image(), s.image());
    assert_eq!(everything.paths(), [PathBuf::from("/pool/b.part")]);

    s.fsync_dir(p("/pool/")).expect("fsync");
    let rebooted = s.after_crash();
    assert_eq!(rebooted.paths(), [PathBuf::from("/pool/b.part")]);
    assert_eq!(
        rebooted
            .stat(p("/pool/b.part"))
            .expect("stat")
            .expect("file")
            .mode,
        0o644
    );
    assert_eq!(s.durable_image(), s.image());
}

#[test]
fn crash_at_event_k_stops_everything_after_it() {
    let s = fresh();
    let part = durable_part(&s, 4096); // events 0 (fence) and 1 (fsync_dir)
    assert_eq!(s.events(), 2);
    s.crash_after(3);
    part.write_at(0, b"ok").expect("write is not an event");
    part.flush(0, 2).expect("event 2");
    let err = part.fence().expect_err("event 3 crashes");
    assert!(is_crash(&err, 3), "{err:?}");
    assert_eq!(err.to_string(), "simulated crash at persistence event 3");
    assert_eq!(s.events(), 3);
    assert_eq!(s.crashed(), Some(3));

    // Everything fails from now on, with the same event.
    let mut buf = [0u8; 2];
    let errors = [
        part.read_at(0, &mut buf).expect_err("read"),
        part.write_at(0, b"x").expect_err("write"),
        part.flush(0, 1).expect_err("flush"),
        part.fence().expect_err("fence"),
        part.len().expect_err("len"),
        part.ctime().expect_err("ctime"),
        s.stat(p(PART)).expect_err("stat"),
        s.open(p("/pool/other"), Access::ReadOnly)
            .expect_err("open"),
        s.create(p("/pool/new"), 1).expect_err("create"),
        s.remove(p(PART)).expect_err("remove"),
        s.set_mode(p(PART), 0o644).expect_err("chmod"),
        s.fsync_dir(p(DIR)).expect_err("fsync_dir"),
        s.read_all(p(PART), 1 << 20).expect_err("read_all"),
    ];
    for err in &errors {
        assert!(is_crash(err, 3), "{err:?}");
    }
    assert_eq!(s.events(), 3);
    // The crashed fence did not take effect.
    assert_eq!(s.persisted_bytes(p(PART)), Some(vec![0; 4096]));

    // The reboot works normally.
    let rebooted = s.after_crash();
    assert_eq!(rebooted.events(), 0);
    assert_eq!(rebooted.crashed(), None);
    let again = rebooted.open(p(PART), Access::ReadWrite).expect("open");
    again.write_at(0, b"ok").expect("write");
    again.flush(0, 2).expect("flush");
    again.fence().expect("fence");
    assert_eq!(rebooted.events(), 2);
}

#[test]
fn crash_armed_in_the_past_hits_the_next_event() {
    let s = fresh();
    let part = durable_part(&s, 64);
    s.crash_after(0);
    let err = part.flush(0, 64).expect_err("crash");
    assert!(is_crash(&err, 2), "{err:?}");
}

#[test]
fn failed_argument_checks_are_not_events() {
    let s = fresh();
    let part = durable_part(&s, 64);
    let before = s.events();
    assert!(matches!(
        part.flush(60, 5),
        Err(Error::IoAt {
            op: "flush",
            offset: 60,
            ..
        })
    ));
    assert!(matches!(
        part.flush(u64::MAX, 2),
        Err(Error::InvalidRange { op: "flush", .. })
    ));
    assert!(s.fsync_dir(p("/missing")).is_err());
    assert_eq!(s.events(), before);
}

/// The data-then-header writer of the tests below. The header is only
/// valid when its first bytes and a checksum of the data match.
struct Writer {
    /// Persist the header before the data (a bug the tests must catch).
    header_first: bool,
    /// Persist data and header with one fence (another bug).
    one_fence: bool,
}

const HDR: usize = 4096;
const DATA: usize = 3 * 4096 + 100;

fn data() -> Vec<u8> {
    (0..DATA).map(|i| (i * 7 % 251) as u8 + 1).collect()
}

fn header() -> Vec<u8> {
    let mut h = vec![0u8; HDR];
    h[..8].copy_from_slice(b"POOLHDR\0");
    h[8..16].copy_from_slice(&fnv(&data()).to_le_bytes());
    h
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Writer {
    fn run(&self, s: &SimStorage) -> Result<(), Error> {
        let path = p(PART);
        let part = s.create(path, (HDR + DATA) as u64)?;
        s.fsync_parent(path)?;
        let write_data = || -> Result<(), Error> {
            part.write_at(HDR as u64, &data())?;
            part.flush(HDR as u64, DATA as u64)
        };
        let write_header = || -> Result<(), Error> {
            part.write_at(0, &header())?;
            part.flush(0, HDR as u64)
        };
        if self.one_fence {
            write_data()?;
            write_header()?;
            part.fence()?;
        } else if self.header_first {
            write_header()?;
            part.fence()?;
            write_data()?;
            part.fence()?;
        } else {
            write_data()?;
            part.fence()?;
            write_header()?;
            part.fence()?;
        }
        s.set_mode(path, 0o644)?;
        s.fsync_parent(path)
    }
}

/// What a recovery would find: `Ok(true)` for a complete part, `Ok(false)`
/// for one that plainly looks broken (missing, short or no valid header),
/// `Err` for a valid header over incomplete data.
fn judge(s: &SimStorage) -> Result<bool, String> {
    let Some(bytes) = s.written_bytes(p(PART)) else {
        return Ok(false);
    };
    let (Some(hdr), Some(body)) = (bytes.get(..HDR), bytes.get(HDR..)) else {
        return Ok(false);
    };
    if hdr.get(..8) != Some(&b"POOLHDR\0"[..]) {
        return Ok(false);
    }
    let sum = hdr.get(8..16).map(|b| b.to_vec());
    if sum != Some(fnv(&data()).to_le_bytes().to_vec()) {
        return Ok(false);
    }
    if body == data() {
        Ok(true)
    } else {
        Err("valid header over incomplete data".to_owned())
    }
}

/// Runs `writer` crashing at every event and reboots with each of
/// `survivals`; returns the first state with a header but no data, as a
/// message.
fn first_mix(writer: &Writer, survivals: &[Survival]) -> Option<String> {
    let full = fresh();
    writer.run(&full).expect("complete run");
    let events = full.events();
    assert!(events >= 5, "{events} events");
    assert_eq!(judge(&full.after_crash()), Ok(true));

    for k in 0..events {
        let s = fresh();
        s.crash_after(k);
        let err = writer
            .run(&s)
            .expect_err("the writer must stop at the crash");
        assert!(is_crash(&err, k), "event {k}: {err:?}");
        for &survival in survivals {
            if let Err(why) = judge(&s.after_crash_with(survival)) {
                return Some(format!(
                    "crash at event {k} of {events}, {survival:?}: {why}"
                ));
            }
        }
    }
    None
}

#[test]
fn correct_writer_never_leaves_a_header_without_its_data() {
    let writer = Writer {
        header_first: false,
        one_fence: false,
    };
    assert_eq!(first_mix(&writer, &all_survivals(64)), None);
}

/// Power failure, killed process, and `seeds` torn outcomes.
fn all_survivals(seeds: u64) -> Vec<Survival> {
    let mut survivals = vec![Survival::Durable, Survival::Everything];
    survivals.extend((0..seeds).map(|seed| Survival::Torn { seed }));
    survivals
}

#[test]
fn header_first_writer_is_caught_by_a_plain_power_failure() {
    let writer = Writer {
        header_first: true,
        one_fence: false,
    };
    let found = first_mix(&writer, &[Survival::Durable]).expect("the bug must be found");
    assert!(found.contains("Durable"), "{found}");
    // Killing the process between the two writes shows it too.
    assert!(first_mix(&writer, &[Survival::Everything]).is_some());
}

#[test]
fn single_fence_writer_is_caught_by_torn_write_back() {
    // The data is written before the header, so a killed process never
    // shows the bug, and one fence persists both at once, so neither does a
    // plain power failure: only partial write-back exposes that nothing
    // orders the header after the data.
    let writer = Writer {
        header_first: false,
        one_fence: true,
    };
    assert_eq!(first_mix(&writer, &all_survivals(0)), None);
    let found = first_mix(&writer, &all_survivals(32)).expect("the bug must be found");
    assert!(found.contains("Torn"), "{found}");
}

#[test]
fn torn_outcomes_mix_blocks_of_both_images_and_are_reproducible() {
    let s = fresh();
    let len = 64 * TORN_BLOCK;
    let part = durable_part(&s, len as u64);
    let old: Vec<u8> = (0..len).map(|i| (i % 13) as u8 + 1).collect();
    part.write_at(0, &old).expect("write");
    part.flush(0, len as u64).expect("flush");
    part.fence().expect("fence");
    let new: Vec<u8> = (0..len).map(|i| (i % 17) as u8 + 100).collect();
    part.write_at(0, &new).expect("write");
    part.flush(0, len as u64 / 2).expect("flush half");

    let mut saw_mixed = false;
    for seed in 0..8 {
        let got = s
            .after_crash_with(Survival::Torn { seed })
            .written_bytes(p(PART))
            .expect("file");
        assert_eq!(got.len(), len);
        let mut from_new = 0;
        for ((g, o), n) in got
            .chunks(TORN_BLOCK)
            .zip(old.chunks(TORN_BLOCK))
            .zip(new.chunks(TORN_BLOCK))
        {
            assert!(g == o || g == n, "seed {seed}: block from neither image");
            from_new += usize::from(g == n);
        }
        saw_mixed |= from_new > 0 && from_new < 64;
        let again = s.after_crash_with(Survival::Torn { seed }).image();
        assert_eq!(
            again.get(p(PART)).map(|f| &f.bytes),
            Some(&got),
            "seed {seed}"
        );
    }
    assert!(saw_mixed, "no seed mixed the two images");
}

#[test]
fn a_rename_needs_a_directory_sync_and_replaces_the_target() {
    let s = fresh();
    let old = s.create_aux(p("/pool/old"), 0o640).expect("create old");
    old.set_len(4).expect("grow");
    old.write_at(0, b"old!").expect("write");
    old.flush(0, 4).expect("flush");
    old.fence().expect("fence");
    drop(old);
    let new = s.create_aux(p("/pool/new"), 0o600).expect("create new");
    new.set_len(4).expect("grow");
    new.write_at(0, b"new!").expect("write");
    new.flush(0, 4).expect("flush");
    new.fence().expect("fence");
    drop(new);
    s.fsync_dir(p(DIR)).expect("fsync dir");
    s.rename(p("/pool/new"), p("/pool/old")).expect("rename");
    assert_eq!(s.written_bytes(p("/pool/old")), Some(b"new!".to_vec()));
    assert_eq!(s.written_bytes(p("/pool/new")), None);
    // Not synced: a power failure brings back both names.
    let lost = s.after_crash();
    assert_eq!(lost.written_bytes(p("/pool/old")), Some(b"old!".to_vec()));
    assert_eq!(lost.written_bytes(p("/pool/new")), Some(b"new!".to_vec()));
    s.fsync_dir(p(DIR)).expect("fsync dir");
    let kept = s.after_crash();
    assert_eq!(kept.written_bytes(p("/pool/old")), Some(b"new!".to_vec()));
    assert_eq!(kept.written_bytes(p("/pool/new")), None);
    assert_eq!(
        kept.image().get(p("/pool/old")).map(|f| f.mode),
        Some(0o600)
    );
    // Missing source, missing target directory.
    assert!(s.rename(p("/pool/none"), p("/pool/x")).is_err());
    assert!(s.rename(p("/pool/old"), p("/nodir/x")).is_err());
}

#[test]
fn set_len_is_durable_at_the_next_fence_and_keeps_what_was_persisted() {
    let s = fresh();
    let f = s.create_aux(p("/pool/aux"), 0o600).expect("create");
    s.fsync_dir(p(DIR)).expect("fsync dir");
    assert!(matches!(
        s.create_aux(p("/pool/aux"), 0o600),
        Err(Error::Exists { .. })
    ));
    f.set_len(8).expect("grow");
    f.write_at(0, b"abcdefgh").expect("write");
    f.flush(0, 8).expect("flush");
    f.fence().expect("fence");
    f.set_len(4).expect("shrink");
    assert_eq!(s.written_bytes(p("/pool/aux")), Some(b"abcd".to_vec()));
    // Not fenced yet: the old length survives a power failure.
    assert_eq!(
        s.after_crash().written_bytes(p("/pool/aux")),
        Some(b"abcdefgh".to_vec())
    );
    f.set_len(6).expect("grow again");
    f.fence().expect("fence");
    assert_eq!(
        s.after_crash().written_bytes(p("/pool/aux")),
        Some(b"abcd\0\0".to_vec())
    );
    let ro = {
        drop(f);
        s.open_aux(p("/pool/aux"), Access::ReadOnly).expect("open")
    };
    assert!(ro.set_len(0).is_err(), "a read-only handle cannot truncate");
}

#[test]
fn locks_conflict_until_the_handle_is_dropped() {
    let s = fresh();
    s.insert_file(p(PART), &[1; 64], 0o644).expect("seed");
    let first = s.open(p(PART), Access::ReadOnly).expect("open");
    assert!(s.is_locked(p(PART)));
    for access in [Access::ReadOnly, Access::ReadWrite] {
        let err = s.open(p("/pool/./a.part"), access).expect_err("locked");
        assert!(matches!(&err, Error::Locked { path } if path == p("/pool/./a.part")));
        assert_eq!(
            err.to_string(),
            "flock \"/pool/./a.part\": resource temporarily unavailable (the pool is in use)"
        );
    }
    assert!(matches!(s.read_all(p(PART), 64), Err(Error::Locked { .. })));
    drop(first);
    assert!(!s.is_locked(p(PART)));
    assert_eq!(s.read_all(p(PART), 64).expect("read_all"), [1; 64]);

    // A created file is locked by its handle; the lock follows the file,
    // not the path, as flock does.
    let created = s.create(p("/pool/b.part"), 16).expect("create");
    assert!(matches!(
        s.open(p("/pool/b.part"), Access::ReadOnly),
        Err(Error::Locked { .. })
    ));
    s.remove(p("/pool/b.part")).expect("unlink an open file");
    let other = s
        .create(p("/pool/b.part"), 16)
        .expect("new file at the same path");
    created
        .write_at(0, b"orphan")
        .expect("the old handle still works");
    assert_eq!(s.written_bytes(p("/pool/b.part")), Some(vec![0; 16]));
    drop(other);
    drop(created);
}

#[test]
fn read_only_handles_refuse_writes() {
    let s = fresh();
    s.insert_file(p(PART), &[0; 64], 0o644).expect("seed");
    let part = s.open(p(PART), Access::ReadOnly).expect("open");
    let err = part.write_at(10, b"x").expect_err("read-only");
    assert_eq!(
        err.to_string(),
        "write \"/pool/a.part\" at offset 10: Bad file descriptor"
    );
}

#[test]
fn create_is_exclusive_and_zero_filled() {
    let s = fresh();
    s.insert_file(p(PART), b"precious", 0o640).expect("seed");
    let err = s.create(p(PART), 4096).expect_err("exists");
    assert!(
        matches!(&err, Error::Exists { path } if path == p(PART)),
        "{err:?}"
    );
    assert!(matches!(s.create(p(DIR), 1), Err(Error::Exists { .. })));
    assert_eq!(s.written_bytes(p(PART)), Some(b"precious".to_vec()));
    assert_eq!(s.stat(p(PART)).expect("stat").expect("file").mode, 0o640);

    let part = s.create(p("/pool/new.part"), 10_000).expect("create");
    assert_eq!(part.len().expect("len"), 10_000);
    assert_eq!(part.path(), p("/pool/new.part"));
    let mut buf = vec![0xff; 10_000];
    part.read_at(0, &mut buf).expect("read");
    assert!(buf.iter().all(|&b| b == 0));
    let meta = s.stat(p("/pool/new.part")).expect("stat").expect("file");
    assert_eq!(
        (meta.len, meta.mode, meta.kind),
        (10_000, 0, FileKind::Regular)
    );
    assert_eq!(part.ctime().expect("ctime"), meta.ctime);
}

#[test]
fn stat_gives_distinct_identities_and_a_ticking_clock() {
    let s = fresh();
    s.insert_file(p("/pool/x"), b"1", 0o600).expect("seed");
    s.insert_file(p("/pool/y"), b"2", 0o600).expect("seed");
    let x = s.stat(p("/pool/x")).expect("stat").expect("x");
    let y = s.stat(p("/pool/y")).expect("stat").expect("y");
    assert_eq!(x.dev, y.dev);
    assert_ne!(x.ino, y.ino);
    assert!(y.ctime > x.ctime);
    s.set_mode(p("/pool/x"), 0o644).expect("chmod");
    let x2 = s.stat(p("/pool/x")).expect("stat").expect("x");
    assert!(x2.ctime > y.ctime);
    assert_eq!((x2.ino, x2.mode), (x.ino, 0o644));
    // Identities survive a reboot.
    let rebooted = s.after_crash();
    assert_eq!(rebooted.stat(p("/pool/y")).expect("stat"), Some(y));
}

#[test]
fn directories_behave_like_the_file_system() {
    let s = fresh();
    let dir = s.stat(p(DIR)).expect("stat").expect("dir");
    assert_eq!(dir.kind, FileKind::Directory);
    assert_eq!(
        s.stat(p("/")).expect("stat").expect("root").kind,
        FileKind::Directory
    );
    assert_eq!(s.stat(p("/nodir/a.part")).expect("stat"), None);

    let err = s
        .create(p("/nodir/a.part"), 4096)
        .expect_err("no directory");
    assert_eq!(
        err.to_string(),
        "open \"/nodir/a.part\": No such file or directory"
    );
    assert!(s.paths().is_empty());

    s.insert_file(p("/pool/file"), b"", 0o644).expect("seed");
    let err = s
        .create(p("/pool/file/a.part"), 1)
        .expect_err("parent is a file");
    assert_eq!(
        err.to_string(),
        "open \"/pool/file/a.part\": Not a directory"
    );
    let err = s.stat(p("/pool/file/x/y")).expect_err("ENOTDIR");
    assert_eq!(err.to_string(), "stat \"/pool/file/x/y\": Not a directory");

    let err = s.open(p(DIR), Access::ReadOnly).expect_err("a directory");
    assert_eq!(err.to_string(), "open \"/pool\": Is a directory");
    let err = s.remove(p(DIR)).expect_err("a directory");
    assert_eq!(err.to_string(), "unlink \"/pool\": Is a directory");
    let err = s.remove(p("/pool/missing")).expect_err("missing");
    assert_eq!(
        err.to_string(),
        "unlink \"/pool/missing\": No such file or directory"
    );
    let err = s.set_mode(p("/pool/missing"), 0o600).expect_err("missing");
    assert_eq!(
        err.to_string(),
        "chmod \"/pool/missing\": No such file or directory"
    );
    let err = s.fsync_dir(p("/nodir")).expect_err("missing");
    assert_eq!(
        err.to_string(),
        "open \"/nodir\": No such file or directory"
    );
    let err = s.fsync_dir(p("/pool/file")).expect_err("a file");
    assert_eq!(err.to_string(), "open \"/pool/file\": Not a directory");
    assert!(s.add_dir(p("/pool/file/sub")).is_err());
    assert!(s.add_dir(p("/pool/file")).is_err());

    // Bare names live in the current directory, the empty path.
    let part = s
        .create(p("rel.part"), 8)
        .expect("create in the current directory");
    part.fence().expect("fence");
    s.fsync_parent(p("rel.part"))
        .expect("fsync the current directory");
    s.fsync_dir(p("")).expect("fsync the current directory");
    assert_eq!(
        s.after_crash().written_bytes(p("./rel.part")),
        Some(vec![0; 8])
    );

    // Nested directories come with their ancestors.
    s.add_dir(p("/a/b/c")).expect("mkdir -p");
    assert!(s.stat(p("/a/b")).expect("stat").is_some());
    drop(s.create(p("/a/b/c/d"), 1).expect("create"));
}

#[test]
fn files_over_the_cap_are_refused_before_allocating() {
    assert_eq!(SimStorage::new().max_file_len(), DEFAULT_MAX_FILE_LEN);
    let s = fresh();
    let err = s
        .create(p(PART), DEFAULT_MAX_FILE_LEN + 1)
        .expect_err("cap");
    assert!(matches!(&err, Error::Allocate { size, .. } if *size == DEFAULT_MAX_FILE_LEN + 1));
    assert_eq!(
        err.to_string(),
        format!(
            "posix_fallocate \"/pool/a.part\", {}: the simulated storage refuses files over {} bytes",
            DEFAULT_MAX_FILE_LEN + 1,
            DEFAULT_MAX_FILE_LEN
        )
    );
    assert_eq!(s.stat(p(PART)).expect("stat"), None);

    let small = SimStorage::with_max_file_len(100);
    small.add_dir(p(DIR)).expect("dir");
    assert!(matches!(
        small.create(p(PART), 101),
        Err(Error::Allocate { .. })
    ));
    drop(small.create(p(PART), 100).expect("at the cap"));
}

#[test]
fn a_capacity_limits_creates_and_reports_free_space() {
    let s = fresh();
    assert_eq!(
        s.free_space(p(DIR)).expect("free"),
        None,
        "unlimited by default"
    );
    s.set_capacity(Some(1000));
    assert_eq!(s.free_space(p(DIR)).expect("free"), Some(1000));
    drop(s.create(p(PART), 600).expect("fits"));
    assert_eq!(s.free_space(p(DIR)).expect("free"), Some(400));
    let err = s.create(p("/pool/b.part"), 401).expect_err("full");
    assert!(
        matches!(&err, Error::Allocate { os, .. } if os.raw_os_error() == Some(libc::ENOSPC)),
        "{err:?}"
    );
    assert_eq!(s.stat(p("/pool/b.part")).expect("stat"), None);
    s.remove(p(PART)).expect("rm");
    assert_eq!(s.free_space(p(DIR)).expect("free"), Some(1000));
    // The capacity survives a crash.
    assert_eq!(
        s.after_crash().free_space(p(DIR)).expect("free"),
        Some(1000)
    );
}

#[test]
fn reads_writes_and_flushes_stay_inside_the_file() {
    let s = fresh();
    let part = durable_part(&s, 100);
    let mut buf = [0u8; 50];
    let err = part.read_at(80, &mut buf).expect_err("past end");
    assert!(
        matches!(
            err,
            Error::ShortRead {
                offset: 80,
                len: 50,
                got: 20,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        part.read_at(200, &mut buf),
        Err(Error::ShortRead { got: 0, .. })
    ));
    assert!(matches!(
        part.read_at(u64::MAX - 1, &mut buf),
        Err(Error::InvalidRange { op: "read", .. })
    ));
    part.read_at(100, &mut []).expect("empty read at the end");
    let err = part.write_at(90, &[1; 20]).expect_err("past end");
    assert_eq!(
        err.to_string(),
        "write \"/pool/a.part\" at offset 90: 20 bytes reach past the end of the \
         100-byte file (simulated files never grow)"
    );
    assert_eq!(s.written_bytes(p(PART)), Some(vec![0; 100]));
}

#[test]
fn sim_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SimStorage>();
    assert_send_sync::<poolsync_pmem::sim::SimFile>();

    let s = fresh();
    let part = durable_part(&s, 4 * 4096);
    std::thread::scope(|scope| {
        for t in 0..4u8 {
            let part = &part;
            scope.spawn(move || {
                let off = u64::from(t) * 4096;
                part.write_at(off, &[t + 1; 4096]).expect("write");
                part.flush(off, 4096).expect("flush");
                part.fence().expect("fence");
            });
        }
    });
    let expect: Vec<u8> = (0..4u8).flat_map(|t| [t + 1; 4096]).collect();
    assert_eq!(s.after_crash().written_bytes(p(PART)), Some(expect));
    assert_eq!(s.events(), 2 + 8);
}

#[test]
fn image_debug_output_is_short() {
    let s = fresh();
    s.insert_file(p(PART), &[0; 1 << 16], 0o644).expect("seed");
    let text = format!("{:?}", s.image());
    assert!(
        text.starts_with("{\"/pool/a.part\": 65536 bytes, mode 0o644, fnv1a 0x"),
        "{text}"
    );
    assert!(text.len() < 100, "{text}");
}

// A random sequence of operations, without crashes, behaves like a plain
// in-memory model of files, handles and locks.

const PATHS: [&str; 4] = ["/pool/a", "/pool/b", "/pool/c", "/nodir/d"];
const SLOTS: usize = 3;
const MAX_LEN: u64 = 3000;

#[derive(Debug, Clone)]
enum Op {
    Create {
        path: usize,
        slot: usize,
        len: u64,
    },
    Open {
        path: usize,
        slot: usize,
        rw: bool,
    },
    Close {
        slot: usize,
    },
    Write {
        slot: usize,
        off: u64,
        data: Vec<u8>,
    },
    Flush {
        slot: usize,
        off: u64,
        len: u64,
    },
    Fence {
        slot: usize,
    },
    Read {
        slot: usize,
        off: u64,
        len: u64,
    },
    Remove {
        path: usize,
    },
    Chmod {
        path: usize,
        mode: u32,
    },
    Stat {
        path: usize,
    },
    FsyncDir,
    Rename {
        from: usize,
        to: usize,
    },
    SetLen {
        slot: usize,
        len: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let path = 0..PATHS.len();
    let slot = 0..SLOTS;
    let off = 0..MAX_LEN + 10;
    prop_oneof![
        (path.clone(), slot.clone(), 0..MAX_LEN).prop_map(|(path, slot, len)| Op::Create {
            path,
            slot,
            len
        }),
        (path.clone(), slot.clone(), any::<bool>()).prop_map(|(path, slot, rw)| Op::Open {
            path,
            slot,
            rw
        }),
        slot.clone().prop_map(|slot| Op::Close { slot }),
        (
            slot.clone(),
            off.clone(),
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(slot, off, data)| Op::Write { slot, off, data }),
        (slot.clone(), off.clone(), 0u64..400).prop_map(|(slot, off, len)| Op::Flush {
            slot,
            off,
            len
        }),
        slot.clone().prop_map(|slot| Op::Fence { slot }),
        (slot.clone(), off, 0u64..400).prop_map(|(slot, off, len)| Op::Read { slot, off, len }),
        path.clone().prop_map(|path| Op::Remove { path }),
        (path.clone(), 0u32..0o1000).prop_map(|(path, mode)| Op::Chmod { path, mode }),
        path.clone().prop_map(|path| Op::Stat { path }),
        Just(Op::FsyncDir),
        (path.clone(), path).prop_map(|(from, to)| Op::Rename { from, to }),
        (slot, 0..MAX_LEN).prop_map(|(slot, len)| Op::SetLen { slot, len }),
    ]
}

/// The plain model: files by id, paths naming ids, handles naming ids.
#[derive(Default)]
struct Model {
    next: u64,
    files: BTreeMap<u64, (Vec<u8>, u32)>,
    paths: BTreeMap<usize, u64>,
    slots: [Option<(u64, bool)>; SLOTS],
}

/// The outcome of one operation, compared between sim and model.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Bytes(Vec<u8>),
    Meta(Option<(u64, u32)>),
    Exists,
    Locked,
    NotFound,
    OutOfRange,
    ReadOnly,
    NoHandle,
}

fn outcome_of_err(err: &Error) -> Outcome {
    match err {
        Error::Exists { .. } => Outcome::Exists,
        Error::Locked { .. } => Outcome::Locked,
        Error::Io { os, .. } if os.raw_os_error() == Some(libc::ENOENT) => Outcome::NotFound,
        Error::IoAt { os, .. } if os.raw_os_error() == Some(libc::EBADF) => Outcome::ReadOnly,
        // ftruncate through a read-only descriptor.
        Error::Io { os, .. } if os.raw_os_error() == Some(libc::EINVAL) => Outcome::ReadOnly,
        Error::IoAt { .. } | Error::ShortRead { .. } => Outcome::OutOfRange,
        other => panic!("unexpected error {other:?}"),
    }
}

fn result<T>(r: Result<T, Error>, ok: impl FnOnce(T) -> Outcome) -> Outcome {
    match r {
        Ok(v) => ok(v),
        Err(e) => outcome_of_err(&e),
    }
}

impl Model {
    fn locked(&self, id: u64) -> bool {
        self.slots.iter().flatten().any(|&(h, _)| h == id)
    }

    fn in_range(&self, id: u64, off: u64, len: u64) -> bool {
        self.files
            .get(&id)
            .is_some_and(|(d, _)| off + len <= d.len() as u64)
    }

    fn apply(&mut self, op: &Op) -> Outcome {
        match *op {
            Op::Create { path, slot, len } => {
                self.slots[slot] = None;
                if path == 3 {
                    return Outcome::NotFound;
                }
                if self.paths.contains_key(&path) {
                    return Outcome::Exists;
                }
                let id = self.next;
                self.next += 1;
                self.files.insert(id, (vec![0; len as usize], 0));
                self.paths.insert(path, id);
                self.slots[slot] = Some((id, true));
                Outcome::Ok
            }
            Op::Open { path, slot, rw } => {
                self.slots[slot] = None;
                match self.paths.get(&path) {
                    None => Outcome::NotFound,
                    Some(&id) if self.locked(id) => Outcome::Locked,
                    Some(&id) => {
                        self.slots[slot] = Some((id, rw));
                        Outcome::Ok
                    }
                }
            }
            Op::Close { slot } => {
                self.slots[slot] = None;
                Outcome::Ok
            }
            Op::Write {
                slot,
                off,
                ref data,
            } => match self.slots[slot] {
                None => Outcome::NoHandle,
                Some((_, false)) => Outcome::ReadOnly,
                Some((id, true)) if self.in_range(id, off, data.len() as u64) => {
                    if let Some((d, _)) = self.files.get_mut(&id) {
                        d[off as usize..off as usize + data.len()].copy_from_slice(data);
                    }
                    Outcome::Ok
                }
                Some(_) => Outcome::OutOfRange,
            },
            Op::Flush { slot, off, len } => match self.slots[slot] {
                None => Outcome::NoHandle,
                Some((id, _)) if self.in_range(id, off, len) => Outcome::Ok,
                Some(_) => Outcome::OutOfRange,
            },
            Op::Fence { slot } => match self.slots[slot] {
                None => Outcome::NoHandle,
                Some(_) => Outcome::Ok,
            },
            Op::Read { slot, off, len } => match self.slots[slot] {
                None => Outcome::NoHandle,
                Some((id, _)) if self.in_range(id, off, len) => {
                    Outcome::Bytes(self.files[&id].0[off as usize..(off + len) as usize].to_vec())
                }
                Some(_) => Outcome::OutOfRange,
            },
            Op::Remove { path } => match self.paths.remove(&path) {
                None => Outcome::NotFound,
                Some(_) => Outcome::Ok,
            },
            Op::Chmod { path, mode } => match self.paths.get(&path) {
                None => Outcome::NotFound,
                Some(id) => {
                    if let Some(f) = self.files.get_mut(id) {
                        f.1 = mode;
                    }
                    Outcome::Ok
                }
            },
            Op::Stat { path } => Outcome::Meta(
                self.paths
                    .get(&path)
                    .map(|id| (self.files[id].0.len() as u64, self.files[id].1)),
            ),
            Op::FsyncDir => Outcome::Ok,
            Op::Rename { from, to } => {
                let Some(&id) = self.paths.get(&from) else {
                    return Outcome::NotFound;
                };
                if to == 3 {
                    return Outcome::NotFound;
                }
                self.paths.remove(&from);
                self.paths.insert(to, id);
                Outcome::Ok
            }
            Op::SetLen { slot, len } => match self.slots[slot] {
                None => Outcome::NoHandle,
                Some((_, false)) => Outcome::ReadOnly,
                Some((id, true)) => {
                    if let Some((d, _)) = self.files.get_mut(&id) {
                        d.resize(len as usize, 0);
                    }
                    Outcome::Ok
                }
            },
        }
    }

    fn image(&self) -> SimImage {
        let mut image = SimImage::default();
        for (&path, id) in &self.paths {
            let (bytes, mode) = &self.files[id];
            image.insert(p(PATHS[path]), bytes.clone(), *mode);
        }
        image
    }
}

fn apply_sim(
    s: &SimStorage,
    slots: &mut [Option<poolsync_pmem::sim::SimFile>],
    op: &Op,
) -> Outcome {
    match *op {
        Op::Create { path, slot, len } => {
            slots[slot] = None;
            result(s.create(p(PATHS[path]), len), |f| {
                slots[slot] = Some(f);
                Outcome::Ok
            })
        }
        Op::Open { path, slot, rw } => {
            slots[slot] = None;
            let access = if rw {
                Access::ReadWrite
            } else {
                Access::ReadOnly
            };
            result(s.open(p(PATHS[path]), access), |f| {
                slots[slot] = Some(f);
                Outcome::Ok
            })
        }
        Op::Close { slot } => {
            slots[slot] = None;
            Outcome::Ok
        }
        Op::Write {
            slot,
            off,
            ref data,
        } => match &slots[slot] {
            None => Outcome::NoHandle,
            Some(f) => result(f.write_at(off, data), |()| Outcome::Ok),
        },
        Op::Flush { slot, off, len } => match &slots[slot] {
            None => Outcome::NoHandle,
            Some(f) => result(f.flush(off, len), |()| Outcome::Ok),
        },
        Op::Fence { slot } => match &slots[slot] {
            None => Outcome::NoHandle,
            Some(f) => result(f.fence(), |()| Outcome::Ok),
        },
        Op::Read { slot, off, len } => match &slots[slot] {
            None => Outcome::NoHandle,
            Some(f) => {
                let mut buf = vec![0u8; len as usize];
                result(f.read_at(off, &mut buf), |()| Outcome::Bytes(buf))
            }
        },
        Op::Remove { path } => result(s.remove(p(PATHS[path])), |()| Outcome::Ok),
        Op::Chmod { path, mode } => result(s.set_mode(p(PATHS[path]), mode), |()| Outcome::Ok),
        Op::Stat { path } => result(s.stat(p(PATHS[path])), |m| {
            Outcome::Meta(m.map(|m| (m.len, m.mode)))
        }),
        Op::FsyncDir => result(s.fsync_dir(p(DIR)), |()| Outcome::Ok),
        Op::Rename { from, to } => result(s.rename(p(PATHS[from]), p(PATHS[to])), |()| Outcome::Ok),
        Op::SetLen { slot, len } => match &slots[slot] {
            None => Outcome::NoHandle,
            Some(f) => result(f.set_len(len), |()| Outcome::Ok),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_behave_like_a_plain_model(ops in prop::collection::vec(op(), 1..60)) {
        let s = fresh();
        let mut model = Model::default();
        let mut slots: [Option<poolsync_pmem::sim::SimFile>; SLOTS] = Default::default();
        for (i, op) in ops.iter().enumerate() {
            let expected = model.apply(op);
            let got = apply_sim(&s, &mut slots, op);
            prop_assert_eq!(got, expected, "op {} {:?}", i, op);
        }
        prop_assert_eq!(s.image(), model.image());
        // A killed process loses nothing.
        prop_assert_eq!(s.after_crash_with(Survival::Everything).image(), model.image());
        // Fencing every handle and syncing the directory makes all durable,
        // except data flushed through handles already closed, which the
        // model does not track; flush everything first to cover it.
        for f in slots.iter().flatten() {
            let len = f.len().expect("len");
            f.flush(0, len).expect("flush");
            f.fence().expect("fence");
        }
        for slot in &mut slots {
            *slot = None;
        }
        for path in s.paths() {
            let f = s.open(&path, Access::ReadOnly).expect("open");
            f.flush(0, f.len().expect("len")).expect("flush");
            f.fence().expect("fence");
        }
        s.fsync_dir(p(DIR)).expect("fsync");
        prop_assert_eq!(s.durable_image(), model.image());
        prop_assert_eq!(s.after_crash().image(), model.image());
    }
}

#[test]
fn every_change_is_a_crash_point_in_the_every_change_scope() {
    use poolsync_pmem::sim::EventScope;
    // create (2 events), write, flush, fence, chmod, fsync_dir, remove.
    let writer = |s: &SimStorage| -> Result<(), Error> {
        let part = s.create(p(PART), 8192)?;
        part.write_at(0, b"data")?;
        part.flush(0, 4)?;
        part.fence()?;
        drop(part);
        s.set_mode(p(PART), 0o644)?;
        s.fsync_dir(p(DIR))?;
        s.remove(p(PART))
    };
    let full = fresh();
    writer(&full).expect("complete run");
    assert_eq!(full.events(), 3, "only persistence events by default");
    let full = fresh();
    full.set_event_scope(EventScope::EveryChange);
    writer(&full).expect("complete run");
    assert_eq!(full.events(), 8);

    let killed = |k: u64| {
        let s = fresh();
        s.set_event_scope(EventScope::EveryChange);
        s.crash_after(k);
        let err = writer(&s).expect_err("the writer must stop at the crash");
        assert!(is_crash(&err, k), "event {k}: {err:?}");
        s.after_crash_with(Survival::Everything)
    };
    // Before the create: no file.
    assert_eq!(killed(0).written_bytes(p(PART)), None);
    // Between open(O_CREAT) and the allocation: an empty file of mode 0.
    let s = killed(1);
    assert_eq!(s.written_bytes(p(PART)), Some(Vec::new()));
    assert_eq!(s.stat(p(PART)).expect("stat").expect("file").mode, 0);
    // Before the write: allocated, zero.
    assert_eq!(killed(2).written_bytes(p(PART)), Some(vec![0; 8192]));
    // Before the chmod: written, mode 0.
    let s = killed(5);
    assert_eq!(s.stat(p(PART)).expect("stat").expect("file").mode, 0);
    assert_eq!(
        s.written_bytes(p(PART)).expect("file").get(..4),
        Some(&b"data"[..])
    );
    // Before the remove: still there; the scope survives the reboot.
    let s = killed(7);
    assert!(s.written_bytes(p(PART)).is_some());
    s.crash_after(0);
    assert!(s.set_mode(p(PART), 0o600).is_err(), "the scope is kept");
}

/// A guarded directory refuses changes of its entries as the kernel
/// would, and says so beforehand through the obstacle queries; the mark
/// outlives a crash, and taking it away lifts it.
#[test]
fn guarded_directories_refuse_entry_changes_and_say_so_first() {
    use poolsync_pmem::sim::Guard;
    use poolsync_pmem::Obstacle;
    let errno = |e: Error| e.os_error().and_then(std::io::Error::raw_os_error);
    let s = fresh();
    drop(durable_part(&s, 4096));
    let other = p("/pool/b.part");

    s.guard_dir(p("/"), Some(Guard::ReadOnly));
    let read_only = Some(Obstacle::ReadOnly {
        dir: PathBuf::from(DIR),
    });
    assert_eq!(s.removal_obstacle(p(PART)).expect("query"), read_only);
    assert_eq!(s.creation_obstacle(other).expect("query"), read_only);
    assert_eq!(errno(s.remove(p(PART)).unwrap_err()), Some(libc::EROFS));
    assert_eq!(errno(s.create(other, 4096).unwrap_err()), Some(libc::EROFS));
    assert_eq!(
        errno(s.rename(p(PART), other).unwrap_err()),
        Some(libc::EROFS)
    );
    let s = s.after_crash();
    assert!(s.remove(p(PART)).is_err(), "the mark survives the crash");
    s.guard_dir(p("/"), None);

    s.guard_dir(p(DIR), Some(Guard::AppendOnly));
    assert!(matches!(
        s.removal_obstacle(p(PART)).expect("query"),
        Some(Obstacle::AppendOnly { .. })
    ));
    assert_eq!(s.creation_obstacle(other).expect("query"), None);
    drop(
        s.create(other, 4096)
            .expect("append-only takes new entries"),
    );
    assert_eq!(errno(s.remove(p(PART)).unwrap_err()), Some(libc::EPERM));

    s.guard_dir(p(DIR), Some(Guard::NotWritable));
    assert_eq!(errno(s.remove(p(PART)).unwrap_err()), Some(libc::EACCES));
    s.guard_dir(p(DIR), None);
    assert_eq!(s.removal_obstacle(p(PART)).expect("query"), None);
    s.remove(p(PART)).expect("unguarded");
}
