//! `sync` on real files and on wrapped simulated storage: one repair per
//! damage kind with its byte counts, the dry run, every refusal (which must
//! leave every file as it was, mtime included), bad block recovery files,
//! read errors of the source, lock waiting, and the order of writes.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use poolsync_engine::compare::{compare_replicas, CompareOptions, LogicalRange};
use poolsync_engine::create::{create, CreateOptions};
use poolsync_engine::inspect::inspect;
use poolsync_engine::open::open;
use poolsync_engine::sync::badblocks::{recovery_file_path, BadBlock, BadBlockQuery};
use poolsync_engine::sync::plan::{DataAction, HeaderAction, Step};
use poolsync_engine::sync::{sync, NoProgress, Progress, SyncOptions, UuidSource};
use poolsync_engine::Error;
use poolsync_header::{PoolHdr, RawUuid, Sds, POOL_HDR_SDS_OFF, POOL_HDR_SIZE};
use poolsync_pmem::{Access, FsStorage, Storage};
use tempfile::TempDir;

use crate::support::{flip, remove, write_file, Fixture, Op, Wrapped};

const M: u64 = 1 << 20;

// ---------------------------------------------------------------- helpers

/// A pool set of real files in a temp dir.
struct Pool {
    dir: TempDir,
    set: PathBuf,
    parts: Vec<Vec<PathBuf>>,
}

impl Pool {
    fn new(replicas: &[&[u64]], single_hdr: bool) -> Pool {
        let dir = tempfile::tempdir().expect("temp dir");
        let (text, parts) = crate::support::set_text(dir.path(), replicas, single_hdr);
        let set = dir.path().join("pool.set");
        fs::write(&set, text).expect("write set");
        create(&FsStorage, &set, &CreateOptions::default()).expect("create");
        Pool { dir, set, parts }
    }

    fn part(&self, r: usize, p: usize) -> &Path {
        &self.parts[r][p]
    }
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new().write(true).open(path).expect("open");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(bytes).expect("write");
}

fn read_hdr(path: &Path) -> PoolHdr {
    let mut buf = vec![0u8; POOL_HDR_SIZE];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read header");
    PoolHdr::decode(&buf).expect("decode")
}

fn opts() -> SyncOptions {
    SyncOptions {
        uuids: UuidSource::Derived { seed: 9 },
        ..SyncOptions::default()
    }
}

/// Size, bytes, mode and mtime of every file in a directory.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32, SystemTime)> {
    fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            let path = e.expect("entry").path();
            let meta = fs::metadata(&path).expect("stat");
            let bytes = fs::read(&path).expect("read");
            (
                path,
                (
                    bytes,
                    meta.permissions().mode(),
                    meta.modified().expect("mtime"),
                ),
            )
        })
        .collect()
}

#[track_caller]
fn assert_unchanged(before: &BTreeMap<PathBuf, (Vec<u8>, u32, SystemTime)>, dir: &Path) {
    let after = snapshot(dir);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "files appeared or vanished"
    );
    for (path, (bytes, mode, mtime)) in before {
        let (b, m, t) = &after[path];
        assert!(bytes == b, "{} changed", path.display());
        assert_eq!(mode, m, "{} mode changed", path.display());
        assert_eq!(mtime, t, "{} mtime changed", path.display());
    }
}

/// Every replica equals the source over `[4096, pool_size)` and the set is healthy.
#[track_caller]
fn assert_synced<S: Storage>(storage: &S, set_path: &Path, source: usize) {
    let set = open(storage, set_path, Access::ReadOnly).expect("open");
    let health = inspect(&set);
    assert!(health.is_healthy(), "not healthy: {health:?}");
    let pool = health.pool_size.expect("pool size");
    let range = [LogicalRange::from_bounds(4096, pool)];
    let options = CompareOptions::default();
    for r in (0..set.replicas.len()).filter(|&r| r != source) {
        let outcome = compare_replicas(&set, source, r, &range, &options).expect("compare");
        assert!(
            outcome.differing.is_empty(),
            "replica {r} differs from {source}: {:?}",
            outcome.differing
        );
        assert_eq!(outcome.stats.bytes_compared, pool - 4096);
    }
}

fn cannot_sync(result: Result<poolsync_engine::sync::SyncOutcome, Error>) -> String {
    match result {
        Err(e) => e.to_string(),
        Ok(o) => panic!("expected a refusal, got a plan: {:?}", o.plan.steps),
    }
}

// ---------------------------------------------------------------- repairs

#[test]
fn a_healthy_set_needs_nothing_and_changes_nothing() {
    let pool = Pool::new(&[&[8], &[8]], false);
    let before = snapshot(pool.dir.path());
    let outcome = sync(&FsStorage, &pool.set, &opts(), &NoProgress).expect("sync");
    assert!(outcome.plan.is_noop());
    let report = outcome.report.expect("report");
    assert_eq!(report.bytes_written, 0);
    assert_eq!(report.headers_written, 0);
    assert_unchanged(&before, pool.dir.path());
}

#[test]
fn a_missing_part_is_recreated_with_the_source_mode_and_its_uuid() {
    let pool = Pool::new(&[&[8, 8], &[8, 8]], false);
    let old = read_hdr(pool.part(1, 1));
    fs::set_permissions(pool.part(0, 0), fs::Permissions::from_mode(0o640)).expect("chmod");
    fs::remove_file(pool.part(1, 1)).expect("rm");
    let outcome = sync(&FsStorage, &pool.set, &opts(), &NoProgress).expect("sync");
    let report = outcome.report.expect("report");
    assert_eq!(report.parts_created, 1);
    // Part 1 of replica 1 covers logical [8M, 16M - 4096), the pool's end.
    assert_eq!(report.bytes_copied, 8 * M - 4096);
    assert_eq!(report.bytes_written, 8 * M - 4096);
    assert_eq!(report.bytes_compared, 0);
    assert_eq!(report.headers_written, 1);
    let new = read_hdr(pool.part(1, 1));
    assert_eq!(new.uuid, old.uuid, "rule (a) keeps the UUID");
    assert_eq!(new.links(), old.links());
    let mode = fs::metadata(pool.part(1, 1))
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o640);
    assert_synced(&FsStorage, &pool.set, 0);
}

#[test]
fn a_broken_header_costs_a_compare_and_one_header_write() {
    let pool = Pool::new(&[&[8, 8], &[16]], false);
    write_at(pool.part(1, 0), 16, &[0xff; 4]);
    let outcome = sync(&FsStorage, &pool.set, &opts(), &NoProgress).expect("sync");
    let plan = &outcome.plan;
    assert_eq!(plan.replicas[1].parts[0].data, DataAction::Repair);
    assert_eq!(plan.replicas[1].parts[0].header, HeaderAction::New);
    // The compare walks [4096, pool size) split at the source's boundary.
    let compares: Vec<_> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::CompareAndCopy(d) => Some((d.logical, d.len, d.from_part)),
            _ => None,
        })
        .collect();
    assert_eq!(
        compares,
        [(4096, 8 * M - 4096, 0), (8 * M, 8 * M - 4096, 1)]
    );
    let report = outcome.report.expect("report");
    assert_eq!(report.bytes_compared, 16 * M - 8192);
    assert_eq!(report.bytes_written, 0, "the data was intact");
    assert_eq!(report.headers_written, 1);
    assert_synced(&FsStorage, &pool.set, 0);
}

#[test]
fn differing_blocks_are_found_and_only_they_are_written() {
    let pool = Pool::new(&[&[8, 8], &[9, 8]], false);
    // Break replica 1's descriptor (whole replica broken) and three blocks,
    // two of them adjacent and across replica 1's own part boundary.
    write_at(pool.part(1, 0), 4096 + 1100, b"x");
    write_at(pool.part(1, 0), 9 * M - 10, b"0123456789");
    write_at(pool.part(1, 1), 4096, b"abc");
    write_at(pool.part(1, 1), 4096 + 2 * M, b"def");
    let outcome = sync(&FsStorage, &pool.set, &opts(), &NoProgress).expect("sync");
    let report = outcome.report.expect("report");
    assert_eq!(report.bytes_differing, 4 * 4096);
    assert_eq!(report.bytes_written, 4 * 4096);
    assert_eq!(report.headers_invalidated, 2);
    assert_eq!(report.headers_written, 2);
    assert_synced(&FsStorage, &pool.set, 0);
}

#[test]
fn a_whole_replica_rebuild_keeps_part_0_and_renews_the_others() {
    let pool = Pool::new(&[&[16], &[8, 8]], false);
    let old0 = read_hdr(pool.part(1, 0));
    let old1 = read_hdr(pool.part(1, 1));
    // An ADR failure recorded in replica 1's shutdown state.
    let mut sds = Sds {
        usc: 5,
        ..Sds::ZERO
    };
    sds.set_dirty();
    write_at(pool.part(1, 0), POOL_HDR_SDS_OFF as u64, &sds.encode_raw());
    let outcome = sync(&FsStorage, &pool.set, &opts(), &NoProgress).expect("sync");
    let expected_fresh = UuidSource::Derived { seed: 9 }.generate(1, 1);
    let new0 = read_hdr(pool.part(1, 0));
    let new1 = read_hdr(pool.part(1, 1));
    assert_eq!(new0.uuid, old0.uuid);
    assert_ne!(new1.uuid, old1.uuid);
    assert_eq!(new1.uuid, expected_fresh);
    assert_eq!(new0.next_part_uuid, new1.uuid);
    assert!(new0.sds.is_clean_zero(), "the shutdown state is reset");
    assert!(outcome.report.expect("report").bytes_written == 0);
    assert_synced(&FsStorage, &pool.set, 0);
}

#[test]
fn singlehdr_replicas_are_repaired_as_a_whole() {
    let pool = Pool::new(&[&[8, 8], &[12, 8]], true);
    fs::remove_file(pool.part(1, 1)).expect("rm");
    write_at(pool.part(1, 0), 5 * M, b"stale");
    let old = read_hdr(pool.part(1, 0));
    let outcome = sync(&FsStorage, &pool.set, &opts(), &NoProgress).expect("sync");
    let parts = &outcome.plan.replicas[1].parts;
    assert_eq!(parts[0].data, DataAction::Repair);
    assert_eq!(parts[0].header, HeaderAction::Restore);
    assert_eq!(parts[1].data, DataAction::Recreate);
    assert_eq!(parts[1].header, HeaderAction::None);
    let report = outcome.report.expect("report");
    assert_eq!(report.headers_invalidated, 1);
    assert_eq!(report.bytes_differing, 4096);
    let new = read_hdr(pool.part(1, 0));
    assert_eq!(
        new, old,
        "the restored header is the old one, crtime included"
    );
    assert_synced(&FsStorage, &pool.set, 0);
}

#[test]
fn the_source_can_be_chosen_and_the_master_rebuilt() {
    let pool = Pool::new(&[&[8, 8], &[16], &[16]], false);
    write_at(pool.part(1, 0), 6 * M, b"replica 1 only");
    fs::remove_file(pool.part(0, 0)).expect("rm");
    let o = SyncOptions {
        source: Some(2),
        ..opts()
    };
    let outcome = sync(&FsStorage, &pool.set, &o, &NoProgress).expect("sync");
    assert_eq!(outcome.plan.source, 2);
    let set = open(&FsStorage, &pool.set, Access::ReadOnly).expect("open");
    assert!(inspect(&set).is_healthy());
    // Replica 0 came from replica 2; replica 1 kept its own block.
    let mut buf = [0u8; 14];
    set.read_logical(0, 6 * M, &mut buf).expect("read");
    assert_eq!(buf, [0u8; 14]);
    set.read_logical(1, 6 * M, &mut buf).expect("read");
    assert_eq!(&buf, b"replica 1 only");
}

#[test]
fn the_dry_run_plans_the_same_and_touches_nothing() {
    let pool = Pool::new(&[&[8, 8], &[16]], false);
    fs::remove_file(pool.part(0, 1)).expect("rm");
    write_at(pool.part(1, 0), 4096 + 1100, b"x");
    // Replica 1 is broken too: nothing healthy... so break only its header
    // checksum instead and keep the descriptor.
    write_at(pool.part(1, 0), 4096 + 1100, &[0]);
    let before = snapshot(pool.dir.path());
    let dry = sync(
        &FsStorage,
        &pool.set,
        &SyncOptions {
            dry_run: true,
            ..opts()
        },
        &NoProgress,
    )
    .expect("dry run");
    assert!(dry.report.is_none());
    assert_unchanged(&before, pool.dir.path());
    let real = sync(&FsStorage, &pool.set, &opts(), &NoProgress).expect("sync");
    assert_eq!(dry.plan.steps.len(), real.plan.steps.len());
    assert_eq!(dry.plan.totals, real.plan.totals);
    for (d, r) in dry.plan.steps.iter().zip(&real.plan.steps) {
        assert_eq!(d, r);
    }
}

#[test]
fn progress_sees_every_byte() {
    #[derive(Default)]
    struct Count(Mutex<(u64, u64, bool)>);
    impl Progress for Count {
        fn start(&self, total: u64) {
            self.0.lock().unwrap().0 = total;
        }
        fn advance(&self, bytes: u64) {
            self.0.lock().unwrap().1 += bytes;
        }
        fn finish(&self) {
            self.0.lock().unwrap().2 = true;
        }
    }
    let pool = Pool::new(&[&[8, 8], &[8, 8]], false);
    fs::remove_file(pool.part(1, 0)).expect("rm");
    let count = Count::default();
    let outcome = sync(&FsStorage, &pool.set, &opts(), &count).expect("sync");
    let (total, done, finished) = *count.0.lock().unwrap();
    let t = outcome.plan.totals;
    assert_eq!(total, t.bytes_to_copy + t.bytes_to_compare);
    assert_eq!(done, total);
    assert!(finished);
}

// ---------------------------------------------------------------- refusals

#[test]
fn refusals_change_nothing() {
    // Each case: a pool set, a damage, the expected words of the refusal.
    type Damage = fn(&Pool);
    let cases: Vec<(&str, &[&[u64]], Damage, &str)> = vec![
        (
            "replica of another pool",
            &[&[8], &[8]],
            |p| {
                let other = Pool::new(&[&[8], &[8]], false);
                fs::copy(other.part(1, 0), p.part(1, 0)).expect("copy");
            },
            "inconsistent",
        ),
        (
            "no healthy replica",
            &[&[8], &[8]],
            |p| {
                write_at(p.part(0, 0), 4096 + 1100, b"x");
                write_at(p.part(1, 0), 4096 + 1100, b"x");
            },
            "no healthy replica found",
        ),
        (
            "part too small",
            &[&[8, 4], &[12]],
            |p| {
                fs::remove_file(p.part(1, 0)).expect("rm");
            },
            "file is too small",
        ),
        (
            "recovery file without -b",
            &[&[8], &[8]],
            |p| {
                fs::write(recovery_file_path(&p.set, 1, 0), "0 0\n").expect("write");
            },
            "a bad block recovery file exists",
        ),
        (
            "bad blocks everywhere",
            &[&[8], &[8]],
            |p| {
                fs::write(recovery_file_path(&p.set, 0, 0), "65536 4096\n0 0\n").expect("write");
                fs::write(recovery_file_path(&p.set, 1, 0), "65536 8192\n0 0\n").expect("write");
            },
            "uncorrectable errors in all replicas",
        ),
    ];
    for (name, shape, damage, words) in cases {
        let pool = Pool::new(shape, false);
        damage(&pool);
        let before = snapshot(pool.dir.path());
        let o = SyncOptions {
            bad_blocks: name == "bad blocks everywhere",
            ..opts()
        };
        let message = cannot_sync(sync(&FsStorage, &pool.set, &o, &NoProgress));
        assert!(message.contains(words), "{name}: {message}");
        assert_unchanged(&before, pool.dir.path());
    }
}

#[test]
fn the_alien_replica_is_refused_before_anything_is_zeroed() {
    // PMDK 1.12 zero-fills broken parts and leaves them mode 0 when a
    // replica of another pool is in the set; here nothing is touched.
    let pool = Pool::new(&[&[8, 8], &[16]], false);
    let other = Pool::new(&[&[8, 8], &[16]], false);
    fs::copy(other.part(1, 0), pool.part(1, 0)).expect("copy");
    write_at(pool.part(0, 1), 40, &[7; 4]);
    let before = snapshot(pool.dir.path());
    let message = cannot_sync(sync(&FsStorage, &pool.set, &opts(), &NoProgress));
    assert!(message.contains("uuid"), "{message}");
    assert_unchanged(&before, pool.dir.path());
}

#[test]
fn shape_refusals_name_what_is_wrong() {
    let single = Pool::new(&[&[8, 8]], false);
    let message = cannot_sync(sync(&FsStorage, &single.set, &opts(), &NoProgress));
    assert!(
        message.ends_with("no replica(s) found in the pool set"),
        "{message}"
    );

    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("pool.obj");
    create(
        &FsStorage,
        &file,
        &CreateOptions {
            size: Some(8 * M),
            ..CreateOptions::default()
        },
    )
    .expect("create");
    let message = cannot_sync(sync(&FsStorage, &file, &opts(), &NoProgress));
    assert!(message.ends_with("file is not a poolset file"), "{message}");

    let nodir = dir.path().join("nodir.set");
    fs::write(
        &nodir,
        format!(
            "PMEMPOOLSET\n8M {}\nREPLICA\n8M {}/missing/b\n",
            file.display(),
            dir.path().display()
        ),
    )
    .expect("write");
    let message = cannot_sync(sync(&FsStorage, &nodir, &opts(), &NoProgress));
    assert!(message.contains("does not exist"), "{message}");
    assert!(message.contains("replica 1"), "{message}");

    let pool = Pool::new(&[&[8], &[8]], false);
    for (source, words) in [(Some(5), "replicas 0 to 1"), (Some(1), "not healthy")] {
        fs::remove_file(pool.part(1, 0)).ok();
        let o = SyncOptions { source, ..opts() };
        let message = cannot_sync(sync(&FsStorage, &pool.set, &o, &NoProgress));
        assert!(message.contains(words), "{message}");
    }
}

#[test]
fn a_pool_in_use_is_refused_or_waited_for() {
    let pool = Pool::new(&[&[8], &[8]], false);
    fs::remove_file(pool.part(1, 0)).expect("rm");
    let holder = FsStorage
        .open(pool.part(0, 0), Access::ReadOnly)
        .expect("lock");
    let before = snapshot(pool.dir.path());
    let message = cannot_sync(sync(&FsStorage, &pool.set, &opts(), &NoProgress));
    assert!(
        message.contains("resource temporarily unavailable"),
        "{message}"
    );
    assert!(message.contains("r0p0"), "{message}");
    let o = SyncOptions {
        wait_lock: Some(Duration::from_millis(300)),
        ..opts()
    };
    let started = Instant::now();
    let message = cannot_sync(sync(&FsStorage, &pool.set, &o, &NoProgress));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(message.contains("still locked after waiting"), "{message}");
    assert_unchanged(&before, pool.dir.path());

    // Released while waiting: the sync goes ahead.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        drop(holder);
    });
    let o = SyncOptions {
        wait_lock: Some(Duration::from_secs(20)),
        ..opts()
    };
    sync(&FsStorage, &pool.set, &o, &NoProgress).expect("sync after the wait");
    release.join().expect("join");
    assert_synced(&FsStorage, &pool.set, 0);
}

// ---------------------------------------------------------------- bad blocks

#[test]
fn recovery_files_are_repaired_from_a_good_replica_and_removed() {
    let pool = Pool::new(&[&[8, 8], &[16]], false);
    // PMDK cleared (zeroed) the bad blocks it saved, then stopped. Replica
    // 0's block at 1 MiB is bad; replica 1's at 9 MiB.
    write_at(pool.part(0, 0), M, &[9; 4096]);
    write_at(pool.part(1, 0), 9 * M, &[9; 4096]);
    write_at(pool.part(1, 0), M, &[9; 4096]);
    for (r, p, text) in [
        (0, 0, "1048576 4096\n0 0\n"),
        (0, 1, "0 0\n"),
        (1, 0, "9437184 4096\n0 0\n"),
    ] {
        fs::write(recovery_file_path(&pool.set, r, p), text).expect("write");
    }
    let o = SyncOptions {
        bad_blocks: true,
        ..opts()
    };
    let outcome = sync(&FsStorage, &pool.set, &o, &NoProgress).expect("sync");
    let copies: Vec<(usize, usize, u64)> = outcome
        .plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::CopyRange(d) => Some((d.from_replica, d.replica, d.logical)),
            _ => None,
        })
        .collect();
    assert_eq!(copies, [(1, 0, M), (0, 1, 9 * M)]);
    for (r, p) in [(0, 0), (0, 1), (1, 0)] {
        assert!(!recovery_file_path(&pool.set, r, p).exists());
    }
    let set = open(&FsStorage, &pool.set, Access::ReadOnly).expect("open");
    let mut a = vec![0u8; 4096];
    let mut b = vec![0u8; 4096];
    set.read_logical(0, 9 * M, &mut a).expect("read");
    set.read_logical(1, 9 * M, &mut b).expect("read");
    assert_eq!(a, b);
    set.read_logical(0, M, &mut a).expect("read");
    assert_eq!(
        a, [9; 4096],
        "replica 1's copy of the block (it was bad in 0)"
    );
}

#[test]
fn incomplete_recovery_files_are_removed() {
    let pool = Pool::new(&[&[8], &[8]], false);
    fs::write(recovery_file_path(&pool.set, 0, 0), "4096 4096\n").expect("write");
    let before = snapshot(pool.dir.path());
    let dry = SyncOptions {
        bad_blocks: true,
        dry_run: true,
        ..opts()
    };
    let outcome = sync(&FsStorage, &pool.set, &dry, &NoProgress).expect("dry run");
    assert_eq!(outcome.plan.totals.recovery_files_to_remove, 1);
    assert_unchanged(&before, pool.dir.path());
    let real = SyncOptions {
        bad_blocks: true,
        ..opts()
    };
    sync(&FsStorage, &pool.set, &real, &NoProgress).expect("sync");
    assert!(!recovery_file_path(&pool.set, 0, 0).exists());
}

/// A query that reports fixed bad blocks for some part files.
#[derive(Debug)]
struct FixedBadBlocks(Vec<(PathBuf, Vec<BadBlock>)>);

impl BadBlockQuery for FixedBadBlocks {
    fn query(&self, path: &Path) -> Result<Vec<BadBlock>, Error> {
        Ok(self
            .0
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .unwrap_or_default())
    }
}

#[test]
fn found_bad_blocks_are_saved_first_repaired_and_their_files_removed() {
    let fx = Fixture::new(&[&[8], &[8]], false);
    let s = fx.copy();
    write_file(&s, fx.part(1, 0), 5 * M, &[0; 8192]);
    let query = FixedBadBlocks(vec![(
        fx.part(1, 0).to_path_buf(),
        vec![BadBlock {
            offset: 5 * M,
            len: 8192,
        }],
    )]);
    let without = SyncOptions {
        bad_block_query: Arc::new(query),
        threads: 1,
        ..opts()
    };
    let message = cannot_sync(sync(&s, &fx.set_path, &without, &NoProgress));
    assert!(message.contains("bad blocks found"), "{message}");
    let with = SyncOptions {
        bad_blocks: true,
        ..without
    };
    let outcome = sync(&s, &fx.set_path, &with, &NoProgress).expect("sync");
    assert!(matches!(
        outcome.plan.steps[0],
        Step::SaveRecoveryFiles { .. }
    ));
    let report = outcome.report.expect("report");
    assert_eq!(report.recovery_files_saved, 2);
    assert_eq!(report.recovery_files_removed, 2);
    assert_eq!(report.bytes_copied, 8192);
    assert!(s
        .written_bytes(&recovery_file_path(&fx.set_path, 1, 0))
        .is_none());
    assert_synced(&s, &fx.set_path, 0);
}

// ------------------------------------------------- read errors and ordering

#[test]
fn a_source_read_error_is_served_by_another_healthy_replica() {
    let fx = Fixture::new(&[&[8, 8], &[16], &[8, 8]], false);
    let s = fx.copy();
    remove(&s, fx.part(2, 1));
    // Two blocks of the source (replica 0 part 1) cannot be read.
    let w = Wrapped::new(s).failing_reads(vec![(fx.part(0, 1).to_path_buf(), 4096 + M, 8192)]);
    let o = SyncOptions {
        threads: 1,
        ..opts()
    };
    let outcome = sync(&w, &fx.set_path, &o, &NoProgress).expect("sync");
    let fallbacks = outcome.report.expect("report").read_fallbacks;
    assert!(!fallbacks.is_empty());
    assert!(fallbacks
        .iter()
        .all(|f| f.replica == 0 && f.from_replica == 1));
    let covered: u64 = fallbacks.iter().map(|f| f.len).sum();
    assert_eq!(covered, 8192, "only the unreadable blocks: {fallbacks:?}");
    assert_synced(w.sim(), &fx.set_path, 1);
}

#[test]
fn data_is_durable_before_every_header_write() {
    let fx = Fixture::new(&[&[8, 8], &[9, 8]], false);
    let s = fx.copy();
    // Part 0 lost (with SDS the whole replica is rebuilt: part 1 is
    // compared) and part 1 has a stale block.
    remove(&s, fx.part(1, 0));
    flip(&s, fx.part(1, 1), 4096 + 3 * M);
    let w = Wrapped::new(s);
    let o = SyncOptions {
        threads: 1,
        ..opts()
    };
    sync(&w, &fx.set_path, &o, &NoProgress).expect("sync");
    let log = w.log();
    for path in [fx.part(1, 0), fx.part(1, 1)] {
        let ops: Vec<&Op> = log.iter().filter(|op| op.path() == path).collect();
        let header = ops
            .iter()
            .position(|op| {
                matches!(
                    op,
                    Op::Write {
                        off: 0,
                        len: 4096,
                        ..
                    }
                )
            })
            .expect("a header write");
        let last_data = ops
            .iter()
            .rposition(|op| matches!(op, Op::Write { off, .. } if *off >= 4096))
            .expect("data writes");
        assert!(
            last_data < header,
            "{}: data after the header",
            path.display()
        );
        assert!(
            ops[last_data..header]
                .iter()
                .any(|op| matches!(op, Op::Fence { .. })),
            "{}: no fence between data and header",
            path.display()
        );
        assert!(
            ops[header + 1..]
                .iter()
                .all(|op| !matches!(op, Op::Write { off, .. } if *off != 0)),
            "{}: data written after the header",
            path.display()
        );
    }
    // The source was never written.
    assert!(log
        .iter()
        .all(|op| !fx.parts[0].iter().any(|p| p == op.path())));
    for path in [fx.part(1, 0), fx.part(1, 1)] {
        let hdr = PoolHdr::decode(&w.sim().written_bytes(path).expect("part")).expect("hdr");
        assert!(hdr.checksum_ok());
        assert_ne!(hdr.uuid, RawUuid::NIL);
    }
    assert_synced(w.sim(), &fx.set_path, 0);
}

/// A part created anew is allocated whole, so the plan counts the room it
/// needs: on a full file system the sync is refused before anything is
/// written, and the refusal says the room is for the new parts.
#[test]
fn no_room_for_a_new_part_is_refused_before_anything_is_written() {
    let fx = Fixture::new(&[&[16], &[8, 8]], false);
    let s = fx.copy();
    remove(&s, fx.part(1, 1));
    let used = crate::support::bytes_used(&s);
    s.set_capacity(Some(used + (4 << 20)));
    let before = s.image();
    for dry_run in [true, false] {
        let err = sync(
            &s,
            &fx.set_path,
            &SyncOptions { dry_run, ..opts() },
            &NoProgress,
        )
        .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "/pool/pool.set: not enough free space for the new parts in /pool: 8388608 bytes needed, 4194304 available; nothing was written: free some space"
        );
        assert!(s.image() == before, "a refused sync wrote");
    }
    s.set_capacity(Some(used + (8 << 20)));
    sync(&s, &fx.set_path, &opts(), &NoProgress).expect("fits");
}
