//! Integration tests: `FsStorage` on real files in temporary directories
//! (this file), the DAX path (`dax/`) and the simulated crash backend
//! (`sim/`).

mod dax;
mod sim;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use poolsync_pmem::{Access, Error, FileKind, FsStorage, PartFile, Storage};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn write_file(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("write test file");
}

#[test]
fn two_opens_of_one_file_conflict_even_in_one_process() {
    let dir = tmp();
    let path = dir.path().join("a.part");
    write_file(&path, &[0u8; 64]);
    let fs = FsStorage;

    let first = fs.open(&path, Access::ReadWrite).expect("first open");
    for access in [Access::ReadOnly, Access::ReadWrite] {
        let err = fs.open(&path, access).expect_err("second open must fail");
        assert!(
            matches!(&err, Error::Locked { path: p } if p == &path),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "flock \"{}\": resource temporarily unavailable (the pool is in use)",
                path.display()
            )
        );
    }
    // The same file through a symlink is still the same file.
    let link = dir.path().join("link.part");
    std::os::unix::fs::symlink(&path, &link).expect("symlink");
    assert!(matches!(
        fs.open(&link, Access::ReadOnly),
        Err(Error::Locked { .. })
    ));

    drop(first);
    let again = fs
        .open(&path, Access::ReadOnly)
        .expect("lock released on drop");
    assert!(matches!(
        fs.open(&path, Access::ReadOnly),
        Err(Error::Locked { .. })
    ));
    drop(again);
}

#[test]
fn created_file_is_locked_until_dropped() {
    let dir = tmp();
    let path = dir.path().join("new.part");
    let fs = FsStorage;
    let part = fs.create(&path, MIB).expect("create");
    assert!(matches!(
        fs.open(&path, Access::ReadOnly),
        Err(Error::Locked { .. })
    ));
    drop(part);
    fs.open(&path, Access::ReadWrite).expect("open after drop");
}

#[test]
fn create_never_touches_an_existing_file() {
    let dir = tmp();
    let path = dir.path().join("old.part");
    write_file(&path, b"precious");
    let before = std::fs::metadata(&path).expect("stat");
    let fs = FsStorage;

    let err = fs.create(&path, MIB).expect_err("exists");
    assert!(
        matches!(&err, Error::Exists { path: p } if p == &path),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!("\"{}\"", path.display())),
        "{err}"
    );

    let after = std::fs::metadata(&path).expect("still there");
    assert_eq!(std::fs::read(&path).expect("read"), b"precious");
    assert_eq!(
        (after.len(), after.mode(), after.ino()),
        (before.len(), before.mode(), before.ino())
    );

    // A dangling symlink counts as existing too (O_EXCL does not follow it).
    let link = dir.path().join("dangling.part");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).expect("symlink");
    assert!(matches!(fs.create(&link, MIB), Err(Error::Exists { .. })));
    assert!(!dir.path().join("nowhere").exists());
}

#[test]
fn failed_allocation_leaves_nothing_behind() {
    let dir = tmp();
    let path = dir.path().join("huge.part");
    let fs = FsStorage;
    // 4 EiB: beyond the maximum file size of ext4 (EFBIG) and the free space
    // of any real file system (ENOSPC), so posix_fallocate fails after the
    // file was created.
    let size = 1u64 << 62;
    let err = fs.create(&path, size).expect_err("cannot allocate 4 EiB");
    match &err {
        Error::Allocate {
            path: p,
            size: s,
            os: source,
        } => {
            assert_eq!((p, *s), (&path, size));
            assert!(
                matches!(source.raw_os_error(), Some(libc::EFBIG | libc::ENOSPC)),
                "{source:?}"
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with(&format!("posix_fallocate \"{}\", {size}: ", path.display())),
        "{err}"
    );
    assert_eq!(
        fs.stat(&path).expect("stat"),
        None,
        "half-made file left behind"
    );
    assert_eq!(std::fs::read_dir(dir.path()).expect("readdir").count(), 0);
}

#[test]
fn size_beyond_off_t_is_refused_before_creating() {
    let dir = tmp();
    let path = dir.path().join("toobig.part");
    let err = FsStorage
        .create(&path, u64::MAX)
        .expect_err("off_t overflow");
    assert!(
        matches!(&err, Error::Allocate { os, .. } if os.raw_os_error() == Some(libc::EFBIG)),
        "{err:?}"
    );
    assert!(!path.exists());
}

#[test]
fn create_in_missing_directory_names_the_path() {
    let dir = tmp();
    let path = dir.path().join("nodir").join("a.part");
    let err = FsStorage.create(&path, MIB).expect_err("no directory");
    assert_eq!(
        err.to_string(),
        format!("open \"{}\": No such file or directory", path.display())
    );
}

#[test]
fn created_file_is_fully_allocated_with_mode_zero() {
    let dir = tmp();
    let path = dir.path().join("full.part");
    let size = 4 * MIB + 4096;
    let part = FsStorage.create(&path, size).expect("create");
    assert_eq!(part.len().expect("len"), size);
    assert_eq!(part.path(), path);

    let m = std::fs::metadata(&path).expect("stat");
    assert_eq!(m.len(), size);
    // st_blocks counts 512-byte units; a sparse file would have (almost) none.
    assert!(
        m.blocks() * 512 >= size,
        "only {} of {size} bytes allocated",
        m.blocks() * 512
    );
    assert_eq!(m.mode() & 0o7777, 0, "created with mode 0");

    let mut buf = vec![0xffu8; 8192];
    part.read_at(size - 8192, &mut buf).expect("read tail");
    assert!(buf.iter().all(|&b| b == 0));
}

#[test]
fn create_of_size_zero_makes_an_empty_file() {
    let dir = tmp();
    let path = dir.path().join("empty.part");
    let part = FsStorage.create(&path, 0).expect("create");
    assert_eq!(part.len().expect("len"), 0);
    part.fence().expect("fence");
}

#[test]
fn write_flush_fence_read_round_trip() {
    let dir = tmp();
    let path = dir.path().join("rt.part");
    let fs = FsStorage;
    let part = fs.create(&path, 2 * MIB).expect("create");
    part.fence().expect("fence of the fresh allocation");
    part.fence().expect("fence with nothing flushed");

    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    part.write_at(MIB - 17, &data).expect("write");
    part.flush(MIB - 17, data.len() as u64).expect("flush");
    part.fence().expect("fence");
    fs.fsync_parent(&path).expect("fsync dir");
    fs.set_mode(&path, 0o664).expect("chmod");
    drop(part);

    let part = fs.open(&path, Access::ReadOnly).expect("reopen");
    let mut back = vec![0u8; data.len()];
    part.read_at(MIB - 17, &mut back).expect("read");
    assert_eq!(back, data);
    assert_eq!(
        fs.read_all(&path, 2 * MIB).expect_err("locked").to_string(),
        format!(
            "flock \"{}\": resource temporarily unavailable (the pool is in use)",
            path.display()
        )
    );
    drop(part);
    let all = fs.read_all(&path, 2 * MIB).expect("read_all");
    assert_eq!(all.len() as u64, 2 * MIB);
    assert_eq!(
        all.get(MIB as usize - 17..MIB as usize - 17 + data.len()),
        Some(&data[..])
    );
}

#[test]
fn read_only_file_refuses_writes_with_path_and_offset() {
    let dir = tmp();
    let path = dir.path().join("ro.part");
    write_file(&path, &[1u8; 100]);
    let part = FsStorage.open(&path, Access::ReadOnly).expect("open");
    let err = part.write_at(10, b"x").expect_err("read-only");
    assert_eq!(
        err.to_string(),
        format!(
            "write \"{}\" at offset 10: Bad file descriptor",
            path.display()
        )
    );
}

#[test]
fn read_past_end_names_path_and_offset() {
    let dir = tmp();
    let path = dir.path().join("short.part");
    write_file(&path, &[7u8; 100]);
    let part = FsStorage.open(&path, Access::ReadOnly).expect("open");

    let mut buf = [0u8; 50];
    let err = part.read_at(80, &mut buf).expect_err("past EOF");
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
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("read \"{}\": ", path.display())),
        "{text}"
    );
    assert!(text.contains("offset 80"), "{text}");

    let err = part.read_at(u64::MAX - 10, &mut buf).expect_err("overflow");
    assert!(
        matches!(err, Error::InvalidRange { op: "read", .. }),
        "{err:?}"
    );
    part.read_at(50, &mut buf).expect("exactly up to EOF");
    part.read_at(100, &mut []).expect("empty read at EOF");
}

#[test]
fn stat_reports_kind_mode_and_identity() {
    let dir = tmp();
    let fs = FsStorage;
    let path = dir.path().join("f.part");
    write_file(&path, &[0u8; 1234]);
    fs.set_mode(&path, 0o640).expect("chmod");

    let meta = fs.stat(&path).expect("stat").expect("exists");
    let std_meta = std::fs::metadata(&path).expect("std stat");
    assert_eq!(meta.len, 1234);
    assert_eq!(meta.mode, 0o640);
    assert_eq!(meta.kind, FileKind::Regular);
    assert_eq!((meta.dev, meta.ino), (std_meta.dev(), std_meta.ino()));
    assert_eq!(meta.ctime, std_meta.ctime() as u64);

    let part = fs.open(&path, Access::ReadOnly).expect("open");
    assert_eq!(part.ctime().expect("ctime"), meta.ctime);
    drop(part);

    // Symlinks are followed.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&path, &link).expect("symlink");
    assert_eq!(fs.stat(&link).expect("stat").expect("exists"), meta);

    assert_eq!(
        fs.stat(dir.path()).expect("stat").expect("exists").kind,
        FileKind::Directory
    );
    assert_eq!(
        fs.stat(Path::new("/dev/null"))
            .expect("stat")
            .expect("exists")
            .kind,
        FileKind::CharDevice
    );
}

#[test]
fn stat_of_missing_path_is_none_but_other_errors_name_the_path() {
    let dir = tmp();
    let fs = FsStorage;
    assert_eq!(fs.stat(&dir.path().join("missing")).expect("stat"), None);
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).expect("symlink");
    assert_eq!(fs.stat(&dangling).expect("stat"), None);

    let file = dir.path().join("file");
    write_file(&file, b"");
    let below_file = file.join("child");
    let err = fs.stat(&below_file).expect_err("ENOTDIR");
    assert_eq!(
        err.to_string(),
        format!("stat \"{}\": Not a directory", below_file.display())
    );
}

#[test]
fn open_remove_chmod_errors_read_like_pmdk() {
    let dir = tmp();
    let fs = FsStorage;
    let missing = dir.path().join("missing.part");
    let expect = |op: &str| format!("{op} \"{}\": No such file or directory", missing.display());
    assert_eq!(
        fs.open(&missing, Access::ReadOnly)
            .expect_err("missing")
            .to_string(),
        expect("open")
    );
    assert_eq!(
        fs.remove(&missing).expect_err("missing").to_string(),
        expect("unlink")
    );
    assert_eq!(
        fs.set_mode(&missing, 0o600)
            .expect_err("missing")
            .to_string(),
        expect("chmod")
    );
    let err = fs.fsync_dir(&missing).expect_err("missing");
    assert_eq!(err.to_string(), expect("open"));
}

#[test]
fn remove_unlinks() {
    let dir = tmp();
    let path = dir.path().join("gone.part");
    let fs = FsStorage;
    drop(fs.create(&path, MIB).expect("create"));
    fs.remove(&path).expect("remove");
    fs.fsync_dir(dir.path()).expect("fsync dir");
    assert_eq!(fs.stat(&path).expect("stat"), None);
}

#[test]
fn fsync_dir_wants_a_directory() {
    let dir = tmp();
    let fs = FsStorage;
    fs.fsync_dir(dir.path()).expect("directory");
    fs.fsync_dir(Path::new(""))
        .expect("empty path is the current directory");
    let file = dir.path().join("f");
    write_file(&file, b"");
    let err = fs.fsync_dir(&file).expect_err("not a directory");
    assert_eq!(
        err.to_string(),
        format!("open \"{}\": Not a directory", file.display())
    );
    fs.fsync_parent(&file).expect("parent of a file");
    fs.fsync_parent(Path::new("relative.part"))
        .expect("parent of a bare name");
}

#[test]
fn read_all_refuses_files_over_the_limit() {
    let dir = tmp();
    let path = dir.path().join("set");
    write_file(&path, b"PMEMPOOLSET\n");
    let fs = FsStorage;
    assert_eq!(fs.read_all(&path, 12).expect("fits"), b"PMEMPOOLSET\n");
    let err = fs.read_all(&path, 11).expect_err("too large");
    assert!(
        matches!(
            err,
            Error::TooLarge {
                len: 12,
                max: 11,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn flush_rejects_overflowing_ranges() {
    let dir = tmp();
    let path = dir.path().join("f.part");
    let part = FsStorage.create(&path, MIB).expect("create");
    let err = part.flush(u64::MAX, 2).expect_err("overflow");
    assert!(
        matches!(err, Error::InvalidRange { op: "flush", .. }),
        "{err:?}"
    );
    part.flush(0, MIB).expect("whole file");
    part.fence().expect("fence");
}

#[test]
fn part_files_are_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<poolsync_pmem::FsFile>();

    let dir = tmp();
    let path = dir.path().join("mt.part");
    let part = FsStorage.create(&path, MIB).expect("create");
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let part = &part;
            s.spawn(move || {
                let off = u64::from(t) * 4096;
                part.write_at(off, &[t + 1; 4096]).expect("write");
                part.flush(off, 4096).expect("flush");
                part.fence().expect("fence");
            });
        }
    });
    for t in 0..4u8 {
        let mut buf = [0u8; 4096];
        part.read_at(u64::from(t) * 4096, &mut buf).expect("read");
        assert!(buf.iter().all(|&b| b == t + 1));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Any sequence of writes reads back like the same writes applied to a
    /// byte vector.
    #[test]
    fn writes_read_back_like_a_model(writes in prop::collection::vec((0u64..65_536, prop::collection::vec(any::<u8>(), 0..3000)), 1..12)) {
        let dir = tmp();
        let path: PathBuf = dir.path().join("model.part");
        let size = 65_536 + 3000;
        let part = FsStorage.create(&path, size).expect("create");
        let mut model = vec![0u8; size as usize];
        for (off, data) in &writes {
            part.write_at(*off, data).expect("write");
            part.flush(*off, data.len() as u64).expect("flush");
            let start = *off as usize;
            model.splice(start..start + data.len(), data.iter().copied());
        }
        part.fence().expect("fence");
        let mut back = vec![0u8; size as usize];
        part.read_at(0, &mut back).expect("read");
        prop_assert_eq!(back, model);
    }
}

#[test]
fn auxiliary_files_are_exclusive_resizable_and_renamed_in_place() {
    let dir = tmp();
    let fs = FsStorage;
    let path = dir.path().join("state.tmp");
    let f = fs.create_aux(&path, 0o600).expect("create aux");
    assert!(matches!(
        fs.create_aux(&path, 0o600),
        Err(Error::Exists { .. })
    ));
    // (A umask takes bits away, never the owner's here.)
    assert_eq!(
        std::fs::metadata(&path).expect("stat").mode() & 0o777,
        0o600
    );
    f.set_len(10).expect("grow");
    f.write_at(0, b"0123456789").expect("write");
    f.flush(0, 10).expect("flush");
    f.set_len(4).expect("shrink");
    f.fence().expect("fence");
    assert_eq!(std::fs::read(&path).expect("read"), b"0123");
    drop(f);
    let target = dir.path().join("state");
    write_file(&target, b"old");
    fs.rename(&path, &target).expect("rename");
    fs.fsync_dir(dir.path()).expect("fsync dir");
    assert_eq!(std::fs::read(&target).expect("read"), b"0123");
    assert!(!path.exists());
    let again = fs.open_aux(&target, Access::ReadOnly).expect("open aux");
    assert!(matches!(
        fs.open_aux(&target, Access::ReadOnly),
        Err(Error::Locked { .. })
    ));
    assert!(
        again.set_len(0).is_err(),
        "read-only handles cannot truncate"
    );
}

#[test]
fn canonicalize_resolves_symlinks_and_dots() {
    let dir = tmp();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    write_file(&real.join("f"), b"x");
    std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
    let s = FsStorage;
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let got = s
        .canonicalize(&dir.path().join("link/./../link/f"))
        .unwrap();
    assert_eq!(got, Some(root.join("real/f")));
    assert_eq!(s.canonicalize(&dir.path().join("nothing")).unwrap(), None);
    // The simulated backend has no symlinks: dots go lexically.
    let sim = poolsync_pmem::sim::SimStorage::new();
    sim.add_dir(Path::new("/a/b")).unwrap();
    sim.insert_file(Path::new("/a/b/f"), b"x", 0o644).unwrap();
    assert_eq!(
        sim.canonicalize(Path::new("/a/./b/../b/f")).unwrap(),
        Some(PathBuf::from("/a/b/f"))
    );
    assert_eq!(sim.canonicalize(Path::new("/a/c")).unwrap(), None);
}

#[test]
fn fifos_and_directories_are_refused_without_blocking() {
    let dir = tmp();
    let fifo = dir.path().join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "test premise: mkfifo");
    // Opening a FIFO for reading would wait for a writer: this returns.
    for access in [Access::ReadOnly, Access::ReadWrite] {
        assert!(matches!(
            FsStorage.open(&fifo, access),
            Err(Error::NotAFile { .. })
        ));
    }
    assert!(matches!(
        FsStorage.open(dir.path(), Access::ReadOnly),
        Err(Error::NotAFile { .. })
    ));
}
