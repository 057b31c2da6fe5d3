//! Tests of the DAX path, `poolsync_pmem::DaxStorage`, on real files in
//! temporary directories.
//!
//! The temporary directories are not on a DAX file system here, so the
//! tests force the DAX code path (`MAP_SHARED` instead of `MAP_SYNC`, as
//! libpmem does under `PMEM_IS_PMEM_FORCE=1`); the flush instructions and
//! non-temporal stores run exactly as they would on persistent memory.
//! Whether data reaches the persistence domain cannot be observed without
//! persistent memory and a power cut; what is tested is that every path
//! writes, reads and flushes exactly the bytes asked for, keeps PMDK's
//! create and lock rules, and keeps its mappings bounded.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use poolsync_pmem::dax::{DEFAULT_NT_THRESHOLD, STRIPES};
use poolsync_pmem::{
    Access, AnyFile, AnyStorage, CpuFeatures, DaxOptions, DaxStorage, Error, FlushKind, FsStorage,
    Mapping, PartFile, PersistMode, Storage,
};
use proptest::prelude::*;

const PAGE: u64 = 4096;
const MIB: u64 = 1 << 20;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Forced DAX storage with one-page windows, at most `max_windows` mapped.
fn tiny(max_windows: usize) -> DaxStorage {
    DaxStorage::with_options(DaxOptions {
        force: true,
        window: 1,
        max_windows,
        ..DaxOptions::default()
    })
}

/// Bytes that differ from offset to offset.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
        .collect()
}

/// Lines of /proc/self/maps that map `path`.
fn mappings_of(path: &Path) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    let name = path.to_str().expect("utf-8 temp path");
    maps.lines().filter(|l| l.ends_with(name)).count()
}

/// The flush a restricted feature set selects on this CPU.
fn expected_flush(features: CpuFeatures) -> FlushKind {
    poolsync_pmem::choose_flush(CpuFeatures::detect().intersect(features))
}

/// Feature sets that select each flush this CPU can do, with and without
/// AVX.
fn feature_variants() -> Vec<CpuFeatures> {
    let all = CpuFeatures::ALL;
    let no_clwb = CpuFeatures { clwb: false, ..all };
    let only_clflush = CpuFeatures {
        clflushopt: false,
        ..no_clwb
    };
    let mut out = Vec::new();
    for f in [all, no_clwb, only_clflush, CpuFeatures::NONE] {
        out.push(f);
        out.push(CpuFeatures { avx: false, ..f });
    }
    out
}

#[test]
fn forced_mode_maps_any_file_and_strict_mode_names_the_problem() {
    let dir = tmp();
    let path = dir.path().join("a.part");
    let part = DaxStorage::forced().create(&path, MIB).expect("create");
    let mapping = part.mapping().expect("a non-empty file is mapped");
    drop(part);

    match DaxStorage::new().open(&path, Access::ReadWrite) {
        // The temporary directory happens to be on DAX: MAP_SYNC worked.
        Ok(part) => {
            assert_eq!(mapping, Mapping::Sync);
            assert_eq!(part.mapping(), Some(Mapping::Sync));
        }
        Err(err) => {
            assert_eq!(mapping, Mapping::Shared);
            assert!(
                matches!(&err, Error::NotDax { path: p, .. } if p == &path),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("mmap \"{}\" with MAP_SYNC: ", path.display())),
                "{text}"
            );
            assert!(text.contains("not on a DAX file system"), "{text}");
            assert!(text.contains("PMEM_IS_PMEM_FORCE=1"), "{text}");
            // The failed open released its lock.
            drop(
                FsStorage
                    .open(&path, Access::ReadOnly)
                    .expect("lock released"),
            );

            // A strict create removes the file it made.
            let new = dir.path().join("b.part");
            let err = DaxStorage::new().create(&new, MIB).expect_err("not on DAX");
            assert!(matches!(err, Error::NotDax { .. }), "{err:?}");
            assert!(!new.exists(), "the half-created file was left behind");
        }
    }
}

#[test]
fn round_trip_across_window_and_stripe_boundaries() {
    let dir = tmp();
    let path = dir.path().join("rt.part");
    let storage = tiny(2);
    let size = 2 * MIB + 5 * PAGE;
    let part = storage.create(&path, size).expect("create");
    assert_eq!(part.window_len(), PAGE, "one byte rounds up to a page");
    assert_eq!(part.len().expect("len"), size);
    part.fence().expect("fence of the fresh allocation");

    // Ranges that start and end mid-window, span many windows, and cross
    // the 1 MiB stripe boundary.
    let writes = [
        (0u64, 10usize),
        (PAGE - 3, 7),
        (3 * PAGE + 100, 5 * PAGE as usize),
        (MIB - 2 * PAGE - 1, 4 * PAGE as usize + 2),
        (size - 9000, 9000),
    ];
    let mut model = vec![0u8; size as usize];
    for (i, &(off, len)) in writes.iter().enumerate() {
        let data = pattern(len, i as u32);
        part.write_at(off, &data).expect("write");
        part.flush(off, len as u64).expect("flush");
        model[off as usize..off as usize + len].copy_from_slice(&data);
    }
    part.fence().expect("fence");
    for &(off, len) in &writes {
        let mut back = vec![0u8; len + 2];
        let start = off.saturating_sub(1).min(size - back.len() as u64);
        part.read_at(start, &mut back).expect("read");
        assert_eq!(back, model[start as usize..start as usize + back.len()]);
    }
    assert!(part.mapped_windows() <= 2);
    drop(part);

    // Stores through the mapping are in the page cache: a plain read of
    // the file sees them without any msync.
    assert_eq!(std::fs::read(&path).expect("read file"), model);
    assert_eq!(mappings_of(&path), 0, "windows unmapped on drop");
}

#[test]
fn large_writes_use_non_temporal_stores() {
    let dir = tmp();
    let path = dir.path().join("nt.part");
    let part = DaxStorage::forced().create(&path, 4 * MIB).expect("create");
    assert_eq!(
        part.uses_non_temporal_stores(),
        part.flush_kind() != FlushKind::Msync
    );
    // Unaligned at both ends, above the threshold, across stripes.
    let off = 12_345u64;
    let data = pattern(DEFAULT_NT_THRESHOLD * 5 + 77, 9);
    part.write_at(off, &data).expect("write");
    part.flush(off, data.len() as u64).expect("flush");
    // Ordinary stores into the streamed range, then flushes of ranges that
    // overlap it partly.
    part.write_at(off + 1000, b"ordinary").expect("write");
    part.flush(off - 100, 2000).expect("flush");
    part.flush(0, 4 * MIB).expect("flush all");
    part.fence().expect("fence");
    drop(part);
    let file = std::fs::read(&path).expect("read file");
    let mut model = vec![0u8; 4 * MIB as usize];
    model[off as usize..off as usize + data.len()].copy_from_slice(&data);
    model[off as usize + 1000..off as usize + 1008].copy_from_slice(b"ordinary");
    assert!(file == model, "file differs from the writes");
}

#[test]
fn every_flush_and_copy_variant_writes_the_same_bytes() {
    let dir = tmp();
    let size = 3 * MIB;
    let writes = [
        (5u64, 100usize),
        (PAGE * 3 + 7, 70_000),
        (MIB - 33, 300_000),
        (2 * MIB + 64, 4096),
    ];
    let mut model = vec![0u8; size as usize];
    for (i, &(off, len)) in writes.iter().enumerate() {
        model[off as usize..off as usize + len].copy_from_slice(&pattern(len, i as u32));
    }
    for (v, features) in feature_variants().into_iter().enumerate() {
        let storage = DaxStorage::with_options(DaxOptions {
            force: true,
            window: 64 << 10,
            max_windows: 3,
            // Low, so that most writes take the non-temporal path.
            nt_threshold: 4096,
            features,
        });
        let path = dir.path().join(format!("v{v}.part"));
        let part = storage.create(&path, size).expect("create");
        assert_eq!(part.flush_kind(), expected_flush(features), "{features:?}");
        for (i, &(off, len)) in writes.iter().enumerate() {
            part.write_at(off, &pattern(len, i as u32)).expect("write");
            part.flush(off, len as u64).expect("flush");
        }
        part.fence().expect("fence");
        let mut back = vec![0u8; size as usize];
        part.read_at(0, &mut back).expect("read");
        assert!(back == model, "{features:?}: read back differs");
        drop(part);
        assert!(
            std::fs::read(&path).expect("read") == model,
            "{features:?}: file differs"
        );
    }
}

#[test]
fn mapped_windows_stay_bounded() {
    let dir = tmp();
    let path = dir.path().join("bounded.part");
    let part = tiny(3).create(&path, 64 * PAGE).expect("create");
    let data = pattern(64 * PAGE as usize, 3);
    part.write_at(0, &data).expect("write through 64 windows");
    part.flush(0, data.len() as u64).expect("flush");
    part.fence().expect("fence");
    assert_eq!(part.mapped_windows(), 3);
    assert_eq!(mappings_of(&path), 3, "older windows are unmapped");
    let mut back = vec![0u8; data.len()];
    part.read_at(0, &mut back).expect("read");
    assert_eq!(back, data);
    assert!(mappings_of(&path) <= 3);
}

#[test]
fn locks_conflict_with_the_page_cache_backend_and_with_each_other() {
    let dir = tmp();
    let path = dir.path().join("lock.part");
    let dax = DaxStorage::forced();
    let part = dax.create(&path, MIB).expect("create");
    for access in [Access::ReadOnly, Access::ReadWrite] {
        assert!(matches!(dax.open(&path, access), Err(Error::Locked { .. })));
        assert!(matches!(
            FsStorage.open(&path, access),
            Err(Error::Locked { .. })
        ));
    }
    drop(part);
    let held = FsStorage.open(&path, Access::ReadOnly).expect("open");
    let err = dax.open(&path, Access::ReadWrite).expect_err("locked");
    assert_eq!(
        err.to_string(),
        format!(
            "flock \"{}\": resource temporarily unavailable (the pool is in use)",
            path.display()
        )
    );
    drop(held);
    drop(dax.open(&path, Access::ReadWrite).expect("free again"));
}

#[test]
fn create_follows_the_page_cache_rules() {
    let dir = tmp();
    let dax = DaxStorage::forced();

    // Fully allocated, mode 0, zero-filled.
    let path = dir.path().join("full.part");
    let size = 4 * MIB + PAGE;
    let part = dax.create(&path, size).expect("create");
    let m = std::fs::metadata(&path).expect("stat");
    assert_eq!((m.len(), m.mode() & 0o7777), (size, 0));
    assert!(m.blocks() * 512 >= size, "not fully allocated");
    let mut tail = vec![0xffu8; 8192];
    part.read_at(size - 8192, &mut tail).expect("read");
    assert!(tail.iter().all(|&b| b == 0));
    drop(part);

    // Existing files and dangling symlinks are never touched.
    std::fs::write(dir.path().join("old.part"), b"keep").expect("write");
    let err = dax
        .create(&dir.path().join("old.part"), MIB)
        .expect_err("exists");
    assert!(matches!(err, Error::Exists { .. }), "{err:?}");
    assert_eq!(
        std::fs::read(dir.path().join("old.part")).expect("read"),
        b"keep"
    );
    let link = dir.path().join("dangling.part");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).expect("symlink");
    assert!(matches!(dax.create(&link, MIB), Err(Error::Exists { .. })));

    // A failed allocation leaves nothing behind.
    let huge = dir.path().join("huge.part");
    let err = dax.create(&huge, 1 << 62).expect_err("4 EiB");
    assert!(matches!(err, Error::Allocate { .. }), "{err:?}");
    assert!(!huge.exists());

    // Size zero: an empty file, never mapped.
    let empty = dir.path().join("empty.part");
    let part = dax.create(&empty, 0).expect("create empty");
    assert_eq!(part.mapping(), None);
    assert_eq!(part.len().expect("len"), 0);
    part.read_at(0, &mut []).expect("empty read");
    part.write_at(0, &[]).expect("empty write");
    part.fence().expect("fence");
    let err = part.write_at(0, b"x").expect_err("past the end");
    assert!(matches!(err, Error::PastEnd { .. }), "{err:?}");
}

#[test]
fn opening_read_write_allocates_holes() {
    let dir = tmp();
    let path = dir.path().join("sparse.part");
    let file = std::fs::File::create(&path).expect("create");
    file.set_len(4 * MIB).expect("set_len");
    drop(file);
    assert!(std::fs::metadata(&path).expect("stat").blocks() * 512 < 4 * MIB);

    let part = DaxStorage::forced()
        .open(&path, Access::ReadOnly)
        .expect("open read-only");
    assert!(
        std::fs::metadata(&path).expect("stat").blocks() * 512 < 4 * MIB,
        "read-only open must not allocate"
    );
    drop(part);
    let part = DaxStorage::forced()
        .open(&path, Access::ReadWrite)
        .expect("open read-write");
    assert!(std::fs::metadata(&path).expect("stat").blocks() * 512 >= 4 * MIB);
    let mut buf = vec![1u8; 4096];
    part.read_at(MIB, &mut buf).expect("read");
    assert!(buf.iter().all(|&b| b == 0), "holes still read as zeroes");
}

#[test]
fn errors_name_path_offset_and_range() {
    let dir = tmp();
    let path = dir.path().join("err.part");
    std::fs::write(&path, [7u8; 100]).expect("write");
    let dax = DaxStorage::forced();

    let ro = dax.open(&path, Access::ReadOnly).expect("open");
    let err = ro.write_at(10, b"x").expect_err("read-only");
    assert_eq!(
        err.to_string(),
        format!(
            "write \"{}\" at offset 10: Bad file descriptor",
            path.display()
        )
    );
    let mut buf = [0u8; 4];
    ro.read_at(96, &mut buf).expect("read the last bytes");
    assert_eq!(buf, [7; 4]);
    ro.flush(0, 100)
        .expect("flushing a read-only mapping is allowed");
    drop(ro);

    let rw = dax.open(&path, Access::ReadWrite).expect("open");
    let err = rw.read_at(90, &mut [0u8; 20]).expect_err("short");
    assert_eq!(
        err.to_string(),
        format!(
            "read \"{}\": 20 bytes at offset 90 reach past the end of the file (only 10 could be read)",
            path.display()
        )
    );
    let err = rw.write_at(99, b"ab").expect_err("past end");
    assert_eq!(
        err.to_string(),
        format!(
            "write \"{}\": 2 bytes at offset 99 reach past the end of the 100-byte file",
            path.display()
        )
    );
    assert!(matches!(
        rw.flush(50, 51),
        Err(Error::PastEnd { op: "flush", .. })
    ));
    assert!(matches!(
        rw.flush(u64::MAX, 2),
        Err(Error::InvalidRange { op: "flush", .. })
    ));
    assert!(matches!(
        rw.read_at(u64::MAX, &mut [0u8; 2]),
        Err(Error::InvalidRange { op: "read", .. })
    ));
    // Nothing past the end was written.
    drop(rw);
    assert_eq!(std::fs::read(&path).expect("read"), vec![7u8; 100]);

    // A directory is refused before anything tries to map it.
    let err = dax
        .open(dir.path(), Access::ReadOnly)
        .expect_err("a directory");
    assert_eq!(
        err.to_string(),
        format!(
            "open \"{}\": a directory, not a regular file",
            dir.path().display()
        )
    );
}

#[test]
fn character_devices_must_be_device_dax() {
    // /dev/zero is the memory class, not dax: sysfs says so.
    let path = PathBuf::from("/dev/zero");
    let err = DaxStorage::forced()
        .open(&path, Access::ReadOnly)
        .expect_err("not a Device DAX");
    assert!(
        matches!(&err, Error::NotDevDax { path: p } if p == &path),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "mmap \"/dev/zero\": a character device that is not a Device DAX (/dev/daxX.Y)"
    );
}

#[test]
fn threads_write_and_read_disjoint_and_shared_stripes() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<poolsync_pmem::DaxFile>();

    let dir = tmp();
    let path = dir.path().join("mt.part");
    let part = DaxStorage::with_options(DaxOptions {
        force: true,
        window: 64 << 10,
        max_windows: 2,
        nt_threshold: 8192,
        ..DaxOptions::default()
    })
    .create(&path, (STRIPES as u64 + 2) * MIB)
    .expect("create");
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let part = &part;
            s.spawn(move || {
                // Small pieces in one shared stripe, large ones striding
                // across windows and stripe slots.
                let small = u64::from(t) * 4096;
                let large = MIB + u64::from(t) * 17 * MIB;
                for round in 0..20u8 {
                    let fill = t.wrapping_mul(50).wrapping_add(round);
                    part.write_at(small, &[fill; 4096]).expect("write");
                    part.flush(small, 4096).expect("flush");
                    part.write_at(large, &vec![fill; 300_000]).expect("write");
                    part.flush(large, 300_000).expect("flush");
                    let mut back = vec![0u8; 300_000];
                    part.read_at(large, &mut back).expect("read");
                    assert!(back.iter().all(|&b| b == fill));
                }
                part.fence().expect("fence");
            });
        }
    });
    for t in 0..4u8 {
        let last = t.wrapping_mul(50).wrapping_add(19);
        let mut buf = [0u8; 4096];
        part.read_at(u64::from(t) * 4096, &mut buf).expect("read");
        assert!(buf.iter().all(|&b| b == last));
    }
    assert!(part.mapped_windows() <= 2);
}

#[test]
fn any_storage_delegates_to_the_chosen_backend() {
    let dir = tmp();
    for mode in [PersistMode::PageCache, PersistMode::Dax] {
        let storage = AnyStorage::new(mode);
        assert_eq!(storage.mode(), mode);
        let path = dir.path().join(format!("{mode}.part"));
        let part = storage.create(&path, MIB).expect("create");
        match (&part, mode) {
            (AnyFile::PageCache(_), PersistMode::PageCache) => {}
            (AnyFile::Dax(f), PersistMode::Dax) => assert!(f.mapping().is_some()),
            _ => panic!("{mode}: wrong backend {part:?}"),
        }
        part.write_at(100, b"any").expect("write");
        part.flush(100, 3).expect("flush");
        part.fence().expect("fence");
        assert_eq!(part.path(), path);
        assert_eq!(part.len().expect("len"), MIB);
        assert!(part.ctime().expect("ctime") > 0);
        assert!(matches!(
            storage.open(&path, Access::ReadOnly),
            Err(Error::Locked { .. })
        ));
        drop(part);
        storage.fsync_parent(&path).expect("fsync dir");
        storage.set_mode(&path, 0o640).expect("chmod");
        assert_eq!(
            storage.stat(&path).expect("stat").expect("exists").mode,
            0o640
        );
        let all = storage.read_all(&path, MIB).expect("read_all");
        assert_eq!(&all[100..103], b"any");
        storage.remove(&path).expect("remove");
        assert_eq!(storage.stat(&path).expect("stat"), None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any sequence of writes and flushes, through tiny windows and with a
    /// low non-temporal threshold, reads back like the same writes applied
    /// to a byte vector, through the mapping and through the file.
    #[test]
    fn writes_read_back_like_a_model(
        variant in 0usize..8,
        writes in prop::collection::vec((0u64..40_000, prop::collection::vec(any::<u8>(), 0..9000), any::<bool>()), 1..10),
    ) {
        let features = feature_variants()[variant];
        let dir = tmp();
        let path = dir.path().join("model.part");
        let size = 50_000u64;
        let part = DaxStorage::with_options(DaxOptions {
            force: true,
            window: 1,
            max_windows: 2,
            nt_threshold: 2048,
            features,
        })
        .create(&path, size)
        .expect("create");
        let mut model = vec![0u8; size as usize];
        for (off, data, flush) in &writes {
            part.write_at(*off, data).expect("write");
            if *flush {
                part.flush(*off, data.len() as u64).expect("flush");
            }
            let start = *off as usize;
            model.splice(start..start + data.len(), data.iter().copied());
        }
        part.flush(0, size).expect("flush all");
        part.fence().expect("fence");
        let mut back = vec![0u8; size as usize];
        part.read_at(0, &mut back).expect("read");
        prop_assert!(back == model);
        drop(part);
        prop_assert!(std::fs::read(&path).expect("read file") == model);
    }
}
