//! Crash points of remote updates, through the shared harness (`crash.rs`):
//! both ends run in this process on one simulated storage (the local pool
//! under `/pool`, the remote host's tree under `/srv/b`), so every flush,
//! fence and directory sync of either end is a crash point, and the
//! reboot is a power failure (or a killed process) of both hosts at once.
//!
//! Right after a crash the remote replica is either untouched (healthy,
//! the old image), complete (healthy, the new image), or visibly broken
//! (a header libpmemobj refuses): never healthy with half an update. The
//! re-run converges to the uninterrupted run's end state. The local source
//! is never written; the record of remote syncs beside the set file is
//! written aside and renamed, so a crash leaves the old one or the new.

use std::path::Path;

use poolsync_engine::inspect::inspect;
use poolsync_engine::open::open;
use poolsync_engine::remote::sync::sync_all;
use poolsync_engine::sync::NoProgress;
use poolsync_engine::Error;
use poolsync_header::{PoolHdr, POOL_HDR_CRTIME_OFF, POOL_HDR_CSUM_OFF, POOL_HDR_SIZE};
use poolsync_pmem::sim::{SimImage, SimStorage, Survival};
use poolsync_pmem::Access;

use crate::crash::{CrashTest, Sweeping};
use crate::remote::{admin_set, connector, options, remote_tree, run, REMOTE_SET, ROOT};
use crate::support::{is_undo_file, Fixture, Wrapped};

const M: u64 = 1 << 20;

/// A remote failure carrying a simulated crash is that crash (the harness
/// recognises crashes by their event).
fn as_error(text: &str) -> Error {
    let marker = "simulated crash at persistence event ";
    let event = text
        .find(marker)
        .and_then(|i| {
            text[i + marker.len()..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
        })
        .and_then(|n| n.parse().ok());
    match event {
        Some(event) => Error::Storage(poolsync_pmem::Error::SimulatedCrash { event }),
        None => Error::InvalidRequest {
            path: Path::new(REMOTE_SET).to_path_buf(),
            reason: text.to_string(),
        },
    }
}

/// The writer: a sync of the admin set, both ends on `s`, in strides of
/// 4 MiB (fewer events than the default 1 MiB, the same paths).
fn writer(s: &Wrapped, admin: &Path) -> Result<u64, Error> {
    let opts = poolsync_engine::sync::SyncOptions {
        stride: 4 << 20,
        ..options()
    };
    let out = sync_all(s, admin, &opts, &connector(s), &NoProgress)?;
    if let Some(e) = out
        .remotes
        .iter()
        .find_map(|r| r.error.as_deref().or(r.unrecorded.as_deref()))
    {
        return Err(as_error(e));
    }
    Ok(out.remotes[0]
        .plan
        .as_ref()
        .map_or(0, |p| p.totals.bytes_to_send()))
}

/// The image with the crtime and checksum of every remote header zeroed
/// (a new header's crtime comes from the file), after checking that each
/// remote header's checksum is valid.
fn normalized(s: &SimStorage) -> SimImage {
    let mut image = s.image();
    // The record of remote syncs holds the time of the run that finished.
    // The source's state file and the remote's sync mark exist once a sync
    // tracked epochs: a seed does not, a re-run after a seed was cut does
    // (the remote has parts then); either end is right, and the third run
    // in `end` proves it current.
    image.retain(|p| {
        let name = p.to_string_lossy();
        !is_undo_file(p)
            && !name.contains(".poolsync-remotes")
            && !name.contains(".poolsync-state")
            && !name.contains(".poolsync-synced")
    });
    let parts: Vec<_> = image
        .files()
        .keys()
        .filter(|p| p.starts_with(ROOT) && p.to_string_lossy().contains(".part"))
        .cloned()
        .collect();
    for path in parts {
        let Some(file) = image.get(&path).cloned() else {
            continue;
        };
        let mut bytes = file.bytes;
        if let Ok(hdr) = PoolHdr::decode(&bytes) {
            if bytes[..8].iter().any(|&b| b != 0) {
                assert!(hdr.checksum_ok(), "{}: header checksum", path.display());
                bytes[POOL_HDR_CRTIME_OFF..POOL_HDR_CRTIME_OFF + 8].fill(0);
                bytes[POOL_HDR_CSUM_OFF..POOL_HDR_SIZE].fill(0);
            }
        }
        image.insert(&path, bytes, file.mode);
    }
    image
}

/// The replicated range of the remote replica when it is healthy, `None`
/// when its health check refuses it.
fn remote_image(s: &SimStorage, pool: u64) -> Option<Vec<u8>> {
    let set = open(s, &Path::new(ROOT).join(REMOTE_SET), Access::ReadOnly).ok()?;
    if !inspect(&set).is_healthy() {
        return None;
    }
    let mut buf = vec![0u8; (pool - 4096) as usize];
    set.read_logical(0, 4096, &mut buf).ok()?;
    Some(buf)
}

fn local_image(s: &SimStorage, fx: &Fixture, pool: u64) -> Vec<u8> {
    let set = open(s, &fx.set_path, Access::ReadOnly).expect("open local");
    let mut buf = vec![0u8; (pool - 4096) as usize];
    set.read_logical(0, 4096, &mut buf).expect("read local");
    buf
}

/// Crashes `base`'s sync at every event; the remote is never healthy with
/// anything but `old` (if any) or the new image.
fn crash_everywhere(fx: &Fixture, base: SimStorage, admin: &Path, old: Option<Vec<u8>>) {
    sweep(fx, base, (admin, old), Sweeping::Crashes);
}

/// `crash_everywhere`'s checks on the sweep `how` names.
fn sweep(fx: &Fixture, base: SimStorage, (admin, old): (&Path, Option<Vec<u8>>), how: Sweeping) {
    let pool = fx.set.pool_size().expect("pool size");
    let test = CrashTest::new("remote sync", base, |s| writer(s, admin));
    let reference = test.reference();
    let new = local_image(&reference.storage, fx, pool);
    assert_eq!(remote_image(&reference.storage, pool).as_ref(), Some(&new));
    let source_before = local_image(test.base(), fx, pool);
    how.sweep(&test, &reference)
        // Two hosts make each run slow: one call of each fault by
        // default, a power failure after every other faulted call, the
        // machine running on after each.
        .fault_points(1)
        .fault_survivals(|k| {
            let mut survivals = vec![Survival::Everything];
            if k % 2 == 0 {
                survivals.push(Survival::Durable);
            }
            survivals
        })
        .after_crash(|c| {
            match remote_image(&c.storage, pool) {
                None => c.note("remote marked broken"),
                Some(img) if img == new => c.note("remote complete"),
                Some(img) if Some(&img) == old.as_ref() => c.note("remote untouched"),
                Some(_) => panic!("{c}: the remote is healthy with a half-done update"),
            }
            assert!(
                local_image(&c.storage, fx, pool) == source_before,
                "{c}: the source changed"
            );
        })
        .end_image(normalized)
        .end(|c, _| {
            let again = c.run().expect("third run");
            assert_eq!(again, 0, "{c}: the third run still sent data");
        })
        .run();
}

#[test]
fn crash_while_seeding_a_remote_replica() {
    let fx = Fixture::new(&[&[16]], false);
    let base = fx.copy();
    let admin = admin_set(&fx, &base);
    remote_tree(&base, &[8, 9]);
    crash_everywhere(&fx, base, &admin, None);
}

/// EIO, ENOSPC and EROFS on either host while a remote replica is seeded:
/// a clear error, the remote untouched, complete or marked broken, and a
/// re-run that converges.
#[test]
fn faults_while_seeding_a_remote_replica() {
    let fx = Fixture::new(&[&[16]], false);
    let base = fx.copy();
    let admin = admin_set(&fx, &base);
    remote_tree(&base, &[8, 9]);
    sweep(&fx, base, (&admin, None), Sweeping::Faults);
}

/// The same while a remote replica is updated.
#[test]
fn faults_while_updating_a_remote_replica() {
    let (fx, base, admin, old) = updating();
    sweep(&fx, base, (&admin, old), Sweeping::Faults);
}

/// A remote replica seeded, then four blocks changed locally.
fn updating() -> (Fixture, SimStorage, std::path::PathBuf, Option<Vec<u8>>) {
    let fx = Fixture::new(&[&[16]], false);
    let base = fx.copy();
    let admin = admin_set(&fx, &base);
    remote_tree(&base, &[9, 9]);
    run(&base, &admin);
    let pool = fx.set.pool_size().expect("pool size");
    let old = remote_image(&base, pool);
    assert!(old.is_some());
    for (i, off) in [5 * M, 9 * M - 4096, 9 * M, 13 * M].into_iter().enumerate() {
        fx.write_logical(&base, 0, off, &[0x40 + i as u8; 8192]);
    }
    (fx, base, admin, old)
}

#[test]
fn crash_while_updating_a_remote_replica() {
    let (fx, base, admin, old) = updating();
    crash_everywhere(&fx, base, &admin, old);
}
