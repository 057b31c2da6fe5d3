//! `poolsync sync` killed with SIGKILL at random moments on real files:
//! each run continues what the killed ones left, and once a run completes,
//! every replica holds the source's data, `poolsync check` says consistent,
//! and so does `pmempool check` when PMDK is installed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use poolsync_engine::compare::{compare_replicas, CompareOptions, LogicalRange};
use poolsync_engine::inspect::inspect;
use poolsync_engine::open::open;
use poolsync_pmem::{Access, FsStorage};

use crate::support::{
    flip_byte, pmempool, poolsync, s, temp_dir, write_at, write_set, SetFiles, Shape, MIB,
};

/// Three replicas that split the pool differently.
const KILL_SHAPE: Shape = Shape {
    name: "kill",
    replicas: &[&[8, 8], &[16], &[9, 8]],
    singlehdr: false,
};

/// At most this many runs are started (and killed).
const MAX_RUNS: u64 = 40;

/// The same pseudo-random data in every replica's heap, as libpmemobj's
/// replication leaves it.
fn fill(files: &SetFiles) {
    let mut seed = 0x1234_5678_u64;
    let mut block = vec![0u8; 16 * 1024];
    // Logical offsets 4 MiB .. 15 MiB, every 512 KiB: replica 0 and 2 map
    // them through their parts, replica 1 has one part.
    for step in 0..22u64 {
        for b in block.iter_mut() {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            *b = (seed >> 40) as u8;
        }
        let logical = 4 * MIB + step * 512 * 1024;
        write_logical(files, 0, &[8, 8], logical, &block);
        write_logical(files, 1, &[16], logical, &block);
        write_logical(files, 2, &[9, 8], logical, &block);
    }
}

/// Writes at a logical offset of a replica whose parts have these sizes (MiB).
fn write_logical(files: &SetFiles, r: usize, sizes: &[u64], logical: u64, bytes: &[u8]) {
    let mut start = 0u64;
    for (p, mib) in sizes.iter().enumerate() {
        let (first, len) = if p == 0 {
            (0, mib * MIB)
        } else {
            (4096, mib * MIB - 4096)
        };
        if logical >= start && logical + bytes.len() as u64 <= start + len {
            write_at(files.part(r, p), first + logical - start, bytes);
            return;
        }
        start += len;
    }
    panic!("logical {logical:#x} crosses a part boundary of replica {r}");
}

/// Runs `poolsync sync` and kills it after `delay`; `true` when it
/// finished (successfully) before the kill.
fn run_and_kill(set: &Path, delay: Duration) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_poolsync"))
        .args(["sync", "--no-progress", s(set)])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn poolsync sync");
    let deadline = Instant::now() + delay;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "an uninterrupted sync failed: {status}");
            return true;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let status = child.wait().expect("reap");
            // It may have finished just before the signal.
            return status.success();
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn sync_converges_when_killed_again_and_again() {
    let dir = temp_dir();
    let files = write_set(dir.path(), "kill", &KILL_SHAPE);
    poolsync(&["create", "obj", files.set_str()]).assert_success();
    fill(&files);
    // Replica 1 lost (its only part), replica 2 with a bad descriptor (so
    // it is compared block by block) and two stale blocks.
    std::fs::remove_file(files.part(1, 0)).expect("rm");
    flip_byte(files.part(2, 0), 4096 + 1100);
    write_at(files.part(2, 0), 6 * MIB, b"stale");
    write_at(files.part(2, 1), 4096 + MIB, b"stale too");

    // Delays grow, with a deterministic jitter, so that early runs die
    // early and a later one has time to finish.
    let mut seed = 7u64;
    let mut killed = 0u64;
    let mut completed = false;
    for run in 0..MAX_RUNS {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let jitter = (seed >> 33) % 4000;
        let delay = Duration::from_micros(run * run * 400 + jitter);
        if run_and_kill(&files.set, delay) {
            completed = true;
            break;
        }
        killed += 1;
    }
    eprintln!("kill loop: {killed} killed, completed {completed}");
    assert!(
        killed > 0,
        "no run was interrupted: the test proves nothing"
    );
    if !completed {
        // The machine is slow: finish without a kill, which must work too.
        poolsync(&["sync", "--no-progress", files.set_str()]).assert_success();
    }

    // Every replica equals the source over [4096, pool size).
    let set = open(&FsStorage, &files.set, Access::ReadOnly).expect("open");
    let health = inspect(&set);
    assert!(health.is_healthy(), "after {killed} kills: {health:?}");
    let pool = health.pool_size.expect("pool size");
    let ranges = [LogicalRange::from_bounds(4096, pool)];
    for r in 1..3 {
        let outcome =
            compare_replicas(&set, 0, r, &ranges, &CompareOptions::default()).expect("compare");
        assert!(
            outcome.differing.is_empty(),
            "after {killed} kills replica {r} differs: {:?}",
            outcome.differing
        );
    }
    drop(set);

    let check = poolsync(&["check", "-v", files.set_str()]);
    check.assert_success();
    assert!(
        check.stdout.trim_end().ends_with(": consistent"),
        "{}",
        check.describe()
    );
    if crate::support::require_pmdk("kill_loop::sync_converges_when_killed_again_and_again") {
        let check = pmempool(&["check", "-v", files.set_str()]);
        check.assert_success();
        assert!(
            check.stdout.trim_end().ends_with(": consistent"),
            "{}",
            check.describe()
        );
    }
}

/// The destination of the import kill loops: two replicas, split otherwise.
const KILL_DEST: Shape = Shape {
    name: "kill-dest",
    replicas: &[&[17], &[9, 9]],
    singlehdr: false,
};

/// Runs `poolsync <args>` and kills it after `delay`; the exit status when
/// it finished before the kill, `None` when it was killed.
fn run_and_kill_args(args: &[&str], delay: Duration) -> Option<std::process::ExitStatus> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_poolsync"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn poolsync");
    let deadline = Instant::now() + delay;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let status = child.wait().expect("reap");
            return status.success().then_some(status);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Kills `poolsync <args>` again and again with growing delays until a run
/// completes; returns how many were killed. Every completed run must
/// succeed.
fn kill_until_done(args: &[&str]) -> u64 {
    let mut seed = 11u64;
    let mut killed = 0u64;
    for run in 0..MAX_RUNS {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let jitter = (seed >> 33) % 3000;
        let delay = Duration::from_micros(run * run * 300 + jitter);
        match run_and_kill_args(args, delay) {
            Some(status) => {
                assert!(
                    status.success(),
                    "an uninterrupted {args:?} failed: {status}"
                );
                return killed;
            }
            None => killed += 1,
        }
    }
    // The machine is slow: finish without a kill, which must work too.
    poolsync(args).assert_success();
    killed
}

/// Every replica of the destination holds the source's range, and both
/// `poolsync check` and (with PMDK) `pmempool check` say consistent.
fn assert_dest_follows(source: &SetFiles, dest: &SetFiles, killed: u64, what: &str) {
    let src = open(&FsStorage, &source.set, Access::ReadOnly).expect("open source");
    let pool = inspect(&src).pool_size.expect("pool size");
    let end = src.set_pool_size() / 4096 * 4096;
    let dst = open(&FsStorage, &dest.set, Access::ReadOnly).expect("open destination");
    let health = inspect(&dst);
    assert!(
        health.is_healthy(),
        "{what}: after {killed} kills: {health:?}"
    );
    let mut a = vec![0u8; (end - 4096) as usize];
    src.read_logical(0, 4096, &mut a).expect("read source");
    for r in 0..dst.replicas.len() {
        let mut b = vec![0u8; (end - 4096) as usize];
        dst.read_logical(r, 4096, &mut b).expect("read destination");
        assert!(
            a == b,
            "{what}: after {killed} kills replica {r} differs from the source (pool {pool})"
        );
    }
    drop((src, dst));
    let check = poolsync(&["check", "-v", dest.set_str()]);
    check.assert_success();
    assert!(
        check.stdout.trim_end().ends_with(": consistent"),
        "{}",
        check.describe()
    );
    if crate::support::require_pmdk("kill_loop::import") {
        let check = pmempool(&["check", "-v", dest.set_str()]);
        check.assert_success();
        assert!(
            check.stdout.trim_end().ends_with(": consistent"),
            "{}",
            check.describe()
        );
    }
}

#[test]
fn import_converges_when_killed_again_and_again() {
    let dir = temp_dir();
    let files = write_set(dir.path(), "kill", &KILL_SHAPE);
    poolsync(&["create", "obj", files.set_str()]).assert_success();
    fill(&files);
    let dest = write_set(dir.path(), "dest", &KILL_DEST);
    let p1 = dir.path().join("p1");
    poolsync(&[
        "export",
        "--no-progress",
        "--out",
        s(&p1),
        files.set_str(),
        "d",
    ])
    .assert_success();
    // Seeding, killed.
    let killed = kill_until_done(&["import", "--keep", "--no-progress", dest.set_str(), s(&p1)]);
    eprintln!("seeding: {killed} killed");
    assert_dest_follows(&files, &dest, killed, "seeding");

    // An incremental import, killed: new data in every replica of the source.
    let mut block = vec![0u8; 64 * 1024];
    for (i, b) in block.iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    for step in 0..40u64 {
        let logical = 4 * MIB + step * 256 * 1024;
        write_logical(&files, 0, &[8, 8], logical, &block);
        write_logical(&files, 1, &[16], logical, &block);
        write_logical(&files, 2, &[9, 8], logical, &block);
    }
    let p2 = dir.path().join("p2");
    poolsync(&[
        "export",
        "--no-progress",
        "--out",
        s(&p2),
        files.set_str(),
        "d",
    ])
    .assert_success();
    let killed_too =
        kill_until_done(&["import", "--keep", "--no-progress", dest.set_str(), s(&p2)]);
    eprintln!("import: {killed_too} killed");
    assert!(
        killed + killed_too > 0,
        "no run was interrupted: the test proves nothing"
    );
    assert_dest_follows(&files, &dest, killed_too, "incremental import");
    // Once more without --keep: held, and the packets are deleted.
    poolsync(&["import", dest.set_str(), s(&p1), s(&p2)]).assert_success();
    assert!(!p1.exists() && !p2.exists());
}
