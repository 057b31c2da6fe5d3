//! Crash-point tests of `sync` on the simulated storage: every persistence
//! event of a run is a crash point. After a crash (power failure, killed
//! process, or a torn mix of the two) and a reboot, the source replica is
//! byte for byte what it was, and running sync again reaches exactly the
//! end state of an uninterrupted run (crtime aside; fresh UUIDs are derived
//! from a seed, so they are the same too).

use std::path::{Path, PathBuf};

use poolsync_engine::create::{create, CreateOptions};
use poolsync_engine::inspect::inspect;
use poolsync_engine::open::open;
use poolsync_engine::sync::{sync, NoProgress, SyncOptions, UuidSource};
use poolsync_header::{PoolHdr, POOL_HDR_CRTIME_OFF, POOL_HDR_CSUM_OFF, POOL_HDR_SIZE};
use poolsync_pmem::sim::{SimImage, SimStorage, Survival};
use poolsync_pmem::{Access, Error as PmemError, PartFile, Storage};
use poolsync_poolset::{map_range, PoolSet};

const M: u64 = 1 << 20;

/// A pool set on a simulated storage, created, filled and damaged, kept as
/// a quiescent base that every run copies.
pub struct Fixture {
    pub base: SimStorage,
    pub set_path: PathBuf,
    pub set: PoolSet,
    pub parts: Vec<Vec<PathBuf>>,
}

impl Fixture {
    /// Creates `/pool/pool.set` with the given part sizes (MiB) and writes
    /// the same pseudo-random data into the heap of every replica, as
    /// libpmemobj's replication would.
    pub fn new(replicas: &[&[u64]], single_hdr: bool) -> Fixture {
        let s = SimStorage::new();
        s.add_dir(Path::new("/pool")).expect("dir");
        let (text, parts) = crate::support::set_text(Path::new("/pool"), replicas, single_hdr);
        let set_path = PathBuf::from("/pool/pool.set");
        s.insert_file(&set_path, text.as_bytes(), 0o644)
            .expect("set file");
        let opts = CreateOptions {
            layout: "crash".to_string(),
            ..CreateOptions::default()
        };
        create(&s, &set_path, &opts).expect("create");
        // The master's part 0 gets its own mode, which rebuilt parts copy.
        let master = PathBuf::from("/pool/r0p0");
        s.set_mode(&master, 0o640).expect("chmod");
        s.fsync_parent(&master).expect("sync dir");
        let set = poolsync_poolset::parse(&text).expect("parse");
        let fixture = Fixture {
            base: s,
            set_path,
            set,
            parts,
        };
        let pool = fixture.set.pool_size().expect("pool size");
        for r in 0..replicas.len() {
            // Every 256 KiB of the heap, 8 KiB of data: blocks that a repair
            // has to find.
            let mut off = 4 * M;
            let mut seed = 1u64;
            while off + 8192 <= pool {
                let bytes: Vec<u8> = (0..8192u64)
                    .map(|i| {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (seed >> 33) as u8 ^ i as u8
                    })
                    .collect();
                fixture.write_logical(&fixture.base, r, off, &bytes);
                off += 256 * 1024;
            }
        }
        fixture
    }

    /// An independent copy of the base.
    pub fn copy(&self) -> SimStorage {
        self.base.after_crash_with(Survival::Everything)
    }

    /// Writes `bytes` at logical `offset` of replica `r`, durably.
    pub fn write_logical(&self, s: &SimStorage, r: usize, offset: u64, bytes: &[u8]) {
        let extents = self.set.extents(r).expect("extents");
        for piece in map_range(&extents, offset, bytes.len() as u64) {
            let start = (piece.logical - offset) as usize;
            let chunk = &bytes[start..start + piece.len as usize];
            write_file(s, &self.parts[r][piece.part], piece.file_offset, chunk);
        }
    }

    pub fn part(&self, r: usize, p: usize) -> &Path {
        &self.parts[r][p]
    }
}

/// Writes bytes into a file durably.
pub fn write_file(s: &SimStorage, path: &Path, offset: u64, bytes: &[u8]) {
    let f = s.open(path, Access::ReadWrite).expect("open for damage");
    f.write_at(offset, bytes).expect("write");
    f.flush(offset, bytes.len() as u64).expect("flush");
    f.fence().expect("fence");
}

/// Flips one byte of a file durably.
pub fn flip(s: &SimStorage, path: &Path, offset: u64) {
    let f = s.open(path, Access::ReadWrite).expect("open");
    let mut b = [0u8; 1];
    f.read_at(offset, &mut b).expect("read");
    drop(f);
    write_file(s, path, offset, &[!b[0]]);
}

/// Removes a file durably.
pub fn remove(s: &SimStorage, path: &Path) {
    s.remove(path).expect("remove");
    s.fsync_parent(path).expect("sync dir");
}

/// The image with every header's crtime and checksum zeroed (they depend
/// on the clock), after checking that every header checksum is valid.
fn normalized(fx: &Fixture, s: &SimStorage) -> SimImage {
    let mut image = s.image();
    // Each run that repairs writes an undo file of its own (see
    // `undo_saves_what_a_repair_overwrites`): not part of the pool.
    image.retain(|p| !is_undo_file(p));
    for (r, rep) in fx.parts.iter().enumerate() {
        for (p, path) in rep.iter().enumerate() {
            if p >= fx.set.nhdrs(r) {
                continue;
            }
            let Some(file) = image.get(path).cloned() else {
                continue;
            };
            let mut bytes = file.bytes;
            let hdr = PoolHdr::decode(&bytes).expect("header");
            assert!(hdr.checksum_ok(), "{}: header checksum", path.display());
            bytes[POOL_HDR_CRTIME_OFF..POOL_HDR_CRTIME_OFF + 8].fill(0);
            bytes[POOL_HDR_CSUM_OFF..POOL_HDR_SIZE].fill(0);
            image.insert(path, bytes, file.mode);
        }
    }
    image
}

/// Whether `path` names an undo file.
pub fn is_undo_file(path: &Path) -> bool {
    path.to_string_lossy()
        .contains(poolsync_engine::undo::UNDO_INFIX)
}

fn options() -> SyncOptions {
    SyncOptions {
        threads: 1,
        stride: 4 << 20,
        uuids: UuidSource::Derived { seed: 42 },
        ..SyncOptions::default()
    }
}

fn source_files(fx: &Fixture, s: &SimStorage, source: usize) -> Vec<Option<Vec<u8>>> {
    fx.parts[source]
        .iter()
        .map(|p| s.written_bytes(p))
        .collect()
}

/// Runs sync to completion on a copy, then crashes it at every event.
fn crash_everywhere(fx: &Fixture, source: usize, torn_every: u64) {
    let opts = options();
    let reference = fx.copy();
    let before = source_files(fx, &reference, source);
    let outcome = sync(&reference, &fx.set_path, &opts, &NoProgress).expect("uninterrupted sync");
    assert!(!outcome.plan.is_noop(), "the fixture must need a repair");
    let events = reference.events();
    assert!(events > 3, "only {events} events");
    let expected = normalized(fx, &reference);
    assert_eq!(
        source_files(fx, &reference, source),
        before,
        "source written"
    );
    {
        let set = open(&reference, &fx.set_path, Access::ReadOnly).expect("open");
        assert!(inspect(&set).is_healthy(), "healthy after the sync");
    }

    for k in 0..events {
        let crashed = fx.copy();
        crashed.crash_after(k);
        match sync(&crashed, &fx.set_path, &opts, &NoProgress) {
            Err(poolsync_engine::Error::Storage(PmemError::SimulatedCrash { event })) => {
                assert_eq!(event, k)
            }
            other => panic!("crash at event {k}: expected a simulated crash, got {other:?}"),
        }
        let mut survivals = vec![Survival::Durable, Survival::Everything];
        if torn_every > 0 && k % torn_every == 0 {
            survivals.extend([
                Survival::Torn { seed: k },
                Survival::Torn { seed: k ^ 0x5eed },
            ]);
        }
        for survival in survivals {
            let rebooted = crashed.after_crash_with(survival);
            assert_eq!(
                source_files(fx, &rebooted, source),
                before,
                "event {k} {survival:?}: source changed by the crashed run"
            );
            sync(&rebooted, &fx.set_path, &opts, &NoProgress)
                .unwrap_or_else(|e| panic!("event {k} {survival:?}: re-run failed: {e}"));
            assert_eq!(
                source_files(fx, &rebooted, source),
                before,
                "event {k} {survival:?}: source changed by the re-run"
            );
            assert_eq!(
                normalized(fx, &rebooted),
                expected,
                "event {k} {survival:?}: the re-run ended elsewhere"
            );
            let again = sync(&rebooted, &fx.set_path, &opts, &NoProgress).expect("third run");
            assert!(
                again.plan.is_noop(),
                "event {k} {survival:?}: not healthy after the re-run"
            );
        }
    }
}

#[test]
fn crash_while_recreating_a_missing_part() {
    let fx = Fixture::new(&[&[8, 8], &[8, 8]], false);
    remove(&fx.base, fx.part(1, 1));
    crash_everywhere(&fx, 0, 3);
}

#[test]
fn crash_while_rebuilding_a_whole_replica() {
    // A bad descriptor checksum breaks replica 1 as a whole; some of its
    // blocks differ from the master as well, on both sides of its part
    // boundary.
    let fx = Fixture::new(&[&[8, 8], &[8, 8]], false);
    flip(&fx.base, fx.part(1, 0), 4096 + 1100);
    fx.write_logical(&fx.base, 1, 6 * M, b"stale block");
    fx.write_logical(&fx.base, 1, 9 * M, b"another stale block");
    crash_everywhere(&fx, 0, 3);
}

#[test]
fn crash_while_repairing_blocks_across_different_part_splits() {
    // Replica 1 splits the pool at 9 MiB, the master at 8 MiB. An ADR
    // failure breaks replica 1 as a whole; blocks differ around both
    // boundaries. The master is broken too (bad header), so replica 1 is
    // repaired from... no: the source is the lowest healthy replica, 2.
    let fx = Fixture::new(&[&[8, 8], &[9, 8], &[16]], false);
    let mut sds = poolsync_header::Sds {
        usc: 3,
        ..poolsync_header::Sds::ZERO
    };
    sds.set_dirty();
    write_file(
        &fx.base,
        fx.part(1, 0),
        poolsync_header::POOL_HDR_SDS_OFF as u64,
        &sds.encode_raw(),
    );
    for off in [8 * M - 4096, 8 * M, 9 * M - 8192, 9 * M + 4096, 12 * M] {
        fx.write_logical(&fx.base, 1, off, b"diverged");
    }
    flip(&fx.base, fx.part(0, 1), 200);
    crash_everywhere(&fx, 2, 4);
}

#[test]
fn crash_while_syncing_a_singlehdr_replica() {
    // SINGLEHDR: replica 1's second part (no header of its own) is lost;
    // the whole replica is repaired under its invalidated part-0 header.
    let fx = Fixture::new(&[&[8, 8], &[12, 8]], true);
    remove(&fx.base, fx.part(1, 1));
    fx.write_logical(&fx.base, 1, 5 * M, b"stale");
    crash_everywhere(&fx, 0, 3);
}

#[test]
fn crash_between_header_writes_of_neighbouring_broken_replicas() {
    // Replica 2 and part 0 of its neighbours 1 and 3 are broken. PMDK gives
    // replica 2 a fresh UUID (no part 0 around it is intact) and relinks the
    // intact second parts of replicas 1 and 3, one write after the other; a
    // crash between them leaves links the health check calls inconsistent.
    // Here replica 2 keeps the UUID those intact headers already name, so
    // no intact header is written at all.
    let fx = Fixture::new(&[&[16], &[8, 8], &[16], &[8, 8]], false);
    for r in 1..4 {
        flip(&fx.base, fx.part(r, 0), 60);
    }
    fx.write_logical(&fx.base, 2, 7 * M, b"stale");
    let plan = sync(
        &fx.copy(),
        &fx.set_path,
        &SyncOptions {
            dry_run: true,
            ..options()
        },
        &NoProgress,
    )
    .expect("plan")
    .plan;
    let writes: Vec<(usize, usize)> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            poolsync_engine::sync::Step::WriteHeader(h) => Some((h.replica, h.part)),
            _ => None,
        })
        .collect();
    assert_eq!(
        writes,
        [(1, 0), (3, 0), (2, 0)],
        "only broken headers are written"
    );
    crash_everywhere(&fx, 0, 0);
}
