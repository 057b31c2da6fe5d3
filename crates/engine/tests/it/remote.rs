//! Remote replicas in one process: both ends of the protocol on the
//! simulated storage, the remote pool set in a tree of its own (`/srv/b`,
//! the server's root), reached through `remote::pipe::LocalConnector`.
//!
//! Seeding, incremental updates that send only the blocks that differ, a
//! remote changed on its host, refusals of the server's path rules and of
//! another pool, connections cut at every frame and crashes at every
//! persistence event of either end, each followed by a run that converges.

use std::path::{Path, PathBuf};

use poolsync_engine::inspect::inspect;
use poolsync_engine::open::open;
use poolsync_engine::remote::pipe::LocalConnector;
use poolsync_engine::remote::serve::ServeOptions;
use poolsync_engine::remote::sync::{sync_all, SyncAllOutcome};
use poolsync_engine::sync::{NoProgress, SyncOptions, UuidSource};
use poolsync_engine::Error;
use poolsync_pmem::sim::SimStorage;
use poolsync_pmem::{Access, PartFile, Storage};

use crate::support::{write_file, Fixture, Wrapped};

const M: u64 = 1 << 20;

/// The server's root and the remote pool set file under it.
pub const ROOT: &str = "/srv/b";
pub const REMOTE_SET: &str = "pools/standby.set";

/// The administrator's set: the fixture's local replicas and one remote.
pub fn admin_set(fx: &Fixture, s: &SimStorage) -> PathBuf {
    let local = s
        .written_bytes(&fx.set_path)
        .expect("the fixture's set file");
    let mut text = String::from_utf8(local).expect("text");
    text.push_str(&format!("REPLICA b.example.org {REMOTE_SET}\n"));
    let path = PathBuf::from("/pool/admin.set");
    if s.stat(&path).unwrap().is_some() {
        s.remove(&path).unwrap();
    }
    s.insert_file(&path, text.as_bytes(), 0o644).unwrap();
    path
}

/// The remote pool set file, with parts of the given sizes in MiB (not
/// created).
pub fn remote_tree(s: &SimStorage, sizes: &[u64]) -> Vec<PathBuf> {
    let dir = Path::new(ROOT).join("pools");
    s.add_dir(&dir).unwrap();
    let mut text = String::from("PMEMPOOLSET\n");
    let mut parts = Vec::new();
    for (i, mib) in sizes.iter().enumerate() {
        let p = dir.join(format!("standby.part{i}"));
        text.push_str(&format!("{mib}M {}\n", p.display()));
        parts.push(p);
    }
    s.insert_file(&dir.join("standby.set"), text.as_bytes(), 0o644)
        .unwrap();
    parts
}

pub fn connector<S: Storage + Clone>(s: &S) -> LocalConnector<S> {
    LocalConnector::new(
        s.clone(),
        ServeOptions {
            root: PathBuf::from(ROOT),
            server: "poolsync test".to_string(),
        },
    )
}

pub fn options() -> SyncOptions {
    SyncOptions {
        threads: 1,
        stride: 1 << 20,
        uuids: UuidSource::Derived { seed: 7 },
        ..SyncOptions::default()
    }
}

/// A two-replica local pool of 16 MiB, its admin set with a remote replica
/// of parts 9 MiB + 9 MiB, nothing created on the remote side yet.
pub fn setup() -> (Fixture, SimStorage, PathBuf) {
    let fx = Fixture::new(&[&[16], &[8, 9]], false);
    let s = fx.copy();
    let admin = admin_set(&fx, &s);
    remote_tree(&s, &[9, 9]);
    (fx, s, admin)
}

pub fn run<S: Storage + Clone + 'static>(s: &S, admin: &Path) -> SyncAllOutcome {
    sync_all(s, admin, &options(), &connector(s), &NoProgress).expect("sync")
}

/// The replicated range of the local master and of the remote replica
/// are equal, and the remote pool set is healthy on its own.
pub fn assert_in_sync(s: &SimStorage, local_set: &Path) {
    let local = open(s, local_set, Access::ReadOnly).expect("open local");
    let health = inspect(&local);
    let pool = health.pool_size.expect("pool size");
    let remote_path = Path::new(ROOT).join(REMOTE_SET);
    let remote = open(s, &remote_path, Access::ReadOnly).expect("open remote");
    let rh = inspect(&remote);
    assert!(rh.is_healthy(), "remote health: {rh:#?}");
    let a = local.replicas[0].parts[0].header().unwrap().poolset_uuid;
    let b = remote.replicas[0].parts[0].header().unwrap().poolset_uuid;
    assert_eq!(a, b, "one pool set UUID");
    let mut x = vec![0u8; M as usize];
    let mut y = vec![0u8; M as usize];
    let mut at = 4096;
    while at < pool {
        let n = (pool - at).min(M) as usize;
        local.read_logical(0, at, &mut x[..n]).unwrap();
        remote.read_logical(0, at, &mut y[..n]).unwrap();
        assert!(x[..n] == y[..n], "logical {at}: the remote differs");
        at += n as u64;
    }
}

fn remote_outcome(o: &SyncAllOutcome) -> &poolsync_engine::remote::sync::RemoteOutcome {
    let r = &o.remotes[0];
    assert!(r.error.is_none(), "remote: {:?}", r.error);
    r
}

#[test]
fn a_missing_remote_replica_is_seeded_and_then_kept_current() {
    let (fx, s, admin) = setup();
    let first = run(&s, &admin);
    let r = remote_outcome(&first);
    let plan = r.plan.as_ref().unwrap();
    assert_eq!(plan.totals.parts_to_create, 2);
    assert_eq!(plan.totals.bytes_compared, 0);
    assert!(plan.totals.bytes_to_copy > 15 * M);
    assert_in_sync(&s, &fx.set_path);
    // Unchanged: current, nothing written, only digests on the wire.
    let again = run(&s, &admin);
    let r = remote_outcome(&again);
    let plan = r.plan.as_ref().unwrap();
    assert!(plan.current, "{plan:#?}");
    assert!(r.report.is_none());
    assert!(
        r.wire.bytes_sent + r.wire.bytes_received < 64 << 10,
        "{:?}",
        r.wire
    );
    // Three scattered blocks change locally (in both replicas, as
    // libpmemobj writes them): exactly those travel.
    for (i, off) in [5 * M, 9 * M + 8192, 13 * M].into_iter().enumerate() {
        let bytes = vec![0xa0 + i as u8; 4096];
        fx.write_logical(&s, 0, off, &bytes);
        fx.write_logical(&s, 1, off, &bytes);
    }
    let third = run(&s, &admin);
    let r = remote_outcome(&third);
    let plan = r.plan.as_ref().unwrap();
    assert_eq!(plan.totals.bytes_differing, 3 * 4096, "{plan:#?}");
    assert_eq!(plan.totals.headers_to_invalidate, 2);
    assert_eq!(plan.totals.headers_to_write, 2);
    assert_in_sync(&s, &fx.set_path);
    let report = r.report.as_ref().unwrap();
    assert_eq!(report.bytes_written, 3 * 4096);
}

/// A local part that cannot be opened for writing (its mode, or a file
/// system remounted read-only) was never read, and may hold newer data
/// than the standby: a restore refuses rather than replacing it.
#[test]
fn a_restore_never_replaces_a_local_part_it_could_not_open() {
    let fx = Fixture::new(&[&[16]], false);
    let s = fx.copy();
    let admin = admin_set(&fx, &s);
    remote_tree(&s, &[9, 9]);
    run(&s, &admin);
    // Newer data locally than on the standby.
    fx.write_logical(&s, 0, 5 * M, &[0x77; 8192]);
    let master = fx.part(0, 0).to_path_buf();
    let before = s.written_bytes(&master).unwrap();
    let w = Wrapped::new(s.clone()).refusing_writers(vec![master.clone()]);
    let err = match sync_all(&w, &admin, &options(), &connector(&w), &NoProgress) {
        Err(e) => e.to_string(),
        Ok(out) => panic!("synced: {:?}", out.remotes[0].error),
    };
    assert!(err.contains("never one it could not read"), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(
        s.written_bytes(&master).unwrap() == before,
        "the master was replaced"
    );
}

#[test]
fn a_dry_run_writes_nothing_and_counts_what_a_run_sends() {
    let (fx, s, admin) = setup();
    run(&s, &admin);
    fx.write_logical(&s, 0, 6 * M, &[7u8; 8192]);
    fx.write_logical(&s, 1, 6 * M, &[7u8; 8192]);
    let before = s.image();
    let opts = SyncOptions {
        dry_run: true,
        ..options()
    };
    let dry = sync_all(&s, &admin, &opts, &connector(&s), &NoProgress).unwrap();
    assert!(s.image() == before, "a dry run wrote");
    let plan = dry.remotes[0].plan.as_ref().unwrap();
    assert_eq!(plan.totals.bytes_differing, 8192);
    assert!(dry.remotes[0].report.is_none());
    let real = run(&s, &admin);
    let done = real.remotes[0].plan.as_ref().unwrap();
    assert_eq!(done.totals, plan.totals);
}

#[test]
fn a_remote_changed_on_its_host_is_rewound() {
    let (fx, s, admin) = setup();
    // Seeded, then marked by the next sync.
    run(&s, &admin);
    run(&s, &admin);
    // Something wrote the standby's file behind libpmemobj's back (its
    // run_id did not move) and poolsync's (its sync mark stands): the
    // changes since the marked epoch cannot see it, `--verify` can.
    let remote_part = Path::new(ROOT).join("pools/standby.part1");
    write_file(&s, &remote_part, 3 * M, &[0x55; 4096]);
    let out = run(&s, &admin);
    let plan = out.remotes[0].plan.as_ref().unwrap();
    assert!(plan.since_epoch.is_some(), "{plan:#?}");
    assert!(plan.current, "{plan:#?}");
    let verify = SyncOptions {
        remote_digests: true,
        ..options()
    };
    let out = sync_all(&s, &admin, &verify, &connector(&s), &NoProgress).unwrap();
    let plan = out.remotes[0].plan.as_ref().unwrap();
    assert_eq!(plan.since_epoch, None);
    assert!(
        plan.digests_because
            .as_deref()
            .is_some_and(|w| w.contains("--verify")),
        "{plan:#?}"
    );
    assert_eq!(plan.totals.bytes_differing, 4096);
    assert_in_sync(&s, &fx.set_path);
    // Its run_id did not move: not said to be changed on its host.
    assert_eq!(out.remotes[0].changed_on_host, None);
    assert!(!plan.rewind);

    // The source is opened by its application (run_id + 2 in both local
    // replicas): the remote lags, it was not changed on its host.
    let run_id_at = 0x1808u64;
    let run_id = |s: &SimStorage, path: &Path| {
        let f = s.open(path, Access::ReadOnly).unwrap();
        let mut b = [0u8; 8];
        f.read_at(run_id_at, &mut b).unwrap();
        u64::from_le_bytes(b)
    };
    let local = run_id(&s, fx.part(0, 0));
    for r in 0..2 {
        fx.write_logical(&s, r, run_id_at, &(local + 2).to_le_bytes());
    }
    let out = run(&s, &admin);
    assert_eq!(out.remotes[0].changed_on_host, None, "{:?}", out.remotes[0]);
    let remote_part0 = Path::new(ROOT).join("pools/standby.part0");
    assert_eq!(run_id(&s, &remote_part0), local + 2);

    // libpmemobj opens the standby on its host (run_id + 2 there) and
    // writes: the sync says it was changed there, and rewinds it.
    write_file(&s, &remote_part0, run_id_at, &(local + 4).to_le_bytes());
    write_file(&s, &remote_part, 5 * M, &[0x66; 4096]);
    let out = run(&s, &admin);
    let r = &out.remotes[0];
    let how = r.changed_on_host.as_deref().expect("changed on its host");
    assert!(how.contains("opened on its host"), "{how}");
    let plan = r.plan.as_ref().unwrap();
    assert!(plan.rewind);
    assert_eq!(plan.totals.bytes_differing, 2 * 4096, "{plan:#?}");
    assert_in_sync(&s, &fx.set_path);
    assert_eq!(run_id(&s, &remote_part0), local + 2, "rewound");
    // And the next sync finds it as it left it.
    let out = run(&s, &admin);
    assert_eq!(out.remotes[0].changed_on_host, None);
}

#[test]
fn the_server_refuses_another_pool_and_paths_outside_its_root() {
    let (fx, s, admin) = setup();
    run(&s, &admin);
    // Another pool's parts behind the remote set file: refused, untouched.
    let other = Fixture::new(&[&[16], &[16]], false);
    let theirs = other.base.written_bytes(other.part(0, 0)).unwrap();
    let part0 = Path::new(ROOT).join("pools/standby.part0");
    s.remove(&part0).unwrap();
    let mut alien = theirs.clone();
    alien.resize(9 * M as usize, 0);
    s.insert_file(&part0, &alien, 0o644).unwrap();
    let before = s.image();
    let out = run(&s, &admin);
    let e = out.remotes[0].error.as_deref().expect("refused");
    assert!(e.contains("belongs to the pool"), "{e}");
    assert!(s.image() == before);
    let _ = fx;
    // A descriptor with "..": refused by the server, naming the rule.
    let text = String::from_utf8(s.written_bytes(&admin).unwrap())
        .unwrap()
        .replace(REMOTE_SET, "../escape.set");
    s.remove(&admin).unwrap();
    s.insert_file(&admin, text.as_bytes(), 0o644).unwrap();
    let out = run(&s, &admin);
    let e = out.remotes[0].error.as_deref().expect("refused");
    assert!(e.contains("\"..\" is refused"), "{e}");
}

/// One frame of a recorded stream: its kind, its payload's length once
/// decompressed, and the offset at which it ends.
struct Frame {
    kind: u8,
    raw_len: u32,
    end: u64,
}

/// The frames of a recorded stream (after the 32-byte greeting), each
/// header decoded with the largest limit a peer may announce: a frame
/// above it fails the test.
fn frames(stream: &[u8]) -> Vec<Frame> {
    use poolsync_wire::{decode_header, FRAME_HEADER_LEN, HELLO_LEN, MAX_PAYLOAD};
    let mut out = Vec::new();
    let mut at = HELLO_LEN;
    while at < stream.len() {
        let head: &[u8; FRAME_HEADER_LEN] = stream
            .get(at..at + FRAME_HEADER_LEN)
            .and_then(|b| b.try_into().ok())
            .unwrap_or_else(|| panic!("a torn frame header at {at}"));
        let h = decode_header(head, MAX_PAYLOAD).unwrap_or_else(|e| panic!("frame at {at}: {e}"));
        at += FRAME_HEADER_LEN + h.stored_len as usize;
        assert!(at <= stream.len(), "a torn frame ending at {at}");
        out.push(Frame {
            kind: h.kind,
            raw_len: h.raw_len,
            end: at as u64,
        });
    }
    out
}

/// The remote replica's bytes at the logical ranges an update changes.
fn remote_ranges(s: &SimStorage, ranges: &[(u64, usize)]) -> Vec<Vec<u8>> {
    let remote = open(s, &Path::new(ROOT).join(REMOTE_SET), Access::ReadOnly).unwrap();
    ranges
        .iter()
        .map(|&(off, len)| {
            let mut b = vec![0u8; len];
            remote.read_logical(0, off, &mut b).unwrap();
            b
        })
        .collect()
}

#[test]
fn an_update_cut_at_every_frame_converges_when_run_again() {
    use poolsync_wire::message::kind;
    let (fx, base, admin) = setup();
    run(&base, &admin);
    let ranges = [(5 * M, 12288usize), (11 * M, 12288usize)];
    let old = remote_ranges(&base, &ranges);
    for &(off, len) in &ranges {
        fx.write_logical(&base, 0, off, &vec![0x3c; len]);
        fx.write_logical(&base, 1, off, &vec![0x3c; len]);
    }
    let new: Vec<Vec<u8>> = ranges.iter().map(|&(_, len)| vec![0x3c; len]).collect();
    assert!(old != new);
    let opts = SyncOptions {
        stride: 4 << 20,
        ..options()
    };
    // A whole update, tapped: every frame in either direction.
    let s = base.after_crash_with(poolsync_pmem::sim::Survival::Everything);
    let mut c = connector(&s);
    let tap = poolsync_engine::remote::pipe::Tap::default();
    c.tap = Some(tap.clone());
    let whole = sync_all(&s, &admin, &opts, &c, &NoProgress).unwrap();
    let r = remote_outcome(&whole);
    let differing = r.plan.as_ref().unwrap().totals.bytes_differing;
    assert_eq!(differing, 24576);
    assert_eq!(remote_ranges(&s, &ranges), new);
    let (up, down) = tap.lock().unwrap().clone();
    let (up, down) = (frames(&up), frames(&down));
    // Only the blocks that differ travel as data: each write carries an
    // 8-byte offset and its bytes. Nothing is read back but the remote's
    // run_id, 8 bytes before and after the update (remote::record).
    let written: u64 = up
        .iter()
        .filter(|f| f.kind == kind::WRITE)
        .map(|f| u64::from(f.raw_len) - 8)
        .sum();
    assert_eq!(written, differing);
    assert!(up.iter().filter(|f| f.kind == kind::READ).count() <= 2);
    let read_back: u64 = down
        .iter()
        .filter(|f| f.kind == kind::DATA)
        .map(|f| u64::from(f.raw_len) - 8)
        .sum();
    assert!(read_back <= 16, "{read_back} bytes read back");
    // The client's last frame is its goodbye and the server's last the
    // answer to it; losing those loses nothing, so no error is expected
    // there. Every other frame is cut at its end and (requests, which
    // carry the data) 7 bytes into the next one.
    assert_eq!(up.last().map(|f| f.kind), Some(kind::CLOSE));
    assert_eq!(down.last().map(|f| f.kind), Some(kind::DONE));
    let start_of_last = |f: &[Frame]| match f {
        [.., before, _] => before.end,
        _ => poolsync_wire::HELLO_LEN as u64,
    };
    let (last_up, last_down) = (start_of_last(&up), start_of_last(&down));
    // What the outcome counts on the wire is what went through the pipes
    // (before the goodbye).
    assert_eq!(r.wire.bytes_sent, last_up, "{:?}", r.wire);
    assert_eq!(r.wire.bytes_received, last_down, "{:?}", r.wire);
    let mut cuts: Vec<(bool, u64)> = vec![(true, 0), (true, 31), (false, 0), (false, 31)];
    for f in &up[..up.len() - 1] {
        cuts.extend([(true, f.end), (true, f.end + 7)]);
    }
    for f in &down[..down.len() - 1] {
        cuts.push((false, f.end));
    }
    cuts.retain(|&(requests, at)| at < if requests { last_up } else { last_down });
    assert!(cuts.len() > 20, "{} cuts", cuts.len());
    for (requests, cut) in cuts {
        let s = base.after_crash_with(poolsync_pmem::sim::Survival::Everything);
        let mut c = connector(&s);
        if requests {
            c.cut_requests = Some(cut);
        } else {
            c.cut_answers = Some(cut);
        }
        let out = sync_all(&s, &admin, &opts, &c, &NoProgress).unwrap();
        let e = out.remotes[0].error.as_deref();
        assert!(e.is_some(), "cut at {cut} (requests: {requests}): no error");
        // Untouched, complete, or marked broken: never healthy and half
        // done.
        let remote = open(&s, &Path::new(ROOT).join(REMOTE_SET), Access::ReadOnly).unwrap();
        let healthy = inspect(&remote).is_healthy();
        drop(remote);
        if healthy {
            let now = remote_ranges(&s, &ranges);
            assert!(
                now == old || now == new,
                "cut at {cut} (requests: {requests}): healthy, yet half updated"
            );
        }
        let again = sync_all(&s, &admin, &opts, &connector(&s), &NoProgress).unwrap();
        assert!(
            again.remotes[0].error.is_none(),
            "cut at {cut} (requests: {requests}): {:?}",
            again.remotes[0].error
        );
        assert_in_sync(&s, &fx.set_path);
        if !healthy {
            let p = again.remotes[0].plan.as_ref().unwrap();
            assert!(
                p.totals.headers_to_write > 0,
                "cut at {cut} (requests: {requests}): broken, yet not rewritten"
            );
        }
    }
}

#[test]
fn errors_from_the_server_name_the_remote_and_the_file() {
    let (fx, s, admin) = setup();
    let _ = fx;
    s.remove(&Path::new(ROOT).join(REMOTE_SET)).unwrap();
    let out = run(&s, &admin);
    let e = out.remotes[0].error.as_deref().unwrap();
    assert!(
        e.contains("b.example.org:pools/standby.set")
            && e.contains("no such pool set file under the server's root"),
        "{e}"
    );
    let _: Option<Error> = None;
}

#[test]
fn rm_removes_the_remote_parts_and_with_r_the_remote_set_file() {
    use poolsync_engine::rm::{rm_with, AlwaysYes, Ask, RmOptions};
    let (_fx, s, admin) = setup();
    run(&s, &admin);
    let pools = Path::new(ROOT).join("pools");
    let opts = RmOptions {
        ask: Ask::Never,
        remove_remote_set_files: true,
        ..RmOptions::default()
    };
    // `-i` asks about the remote replica too; declined, it stays whole.
    struct DeclineRemote(Vec<PathBuf>);
    impl poolsync_engine::rm::RmObserver for DeclineRemote {
        fn confirm(&mut self, path: &Path, _write_protected: bool) -> bool {
            self.0.push(path.to_path_buf());
            false
        }
    }
    let ask = RmOptions {
        ask: Ask::Always,
        ..opts
    };
    let mut declining = DeclineRemote(Vec::new());
    let report = rm_with(&s, &admin, &ask, &mut declining, &connector(&s)).unwrap();
    assert!(
        declining
            .0
            .iter()
            .any(|p| p.to_string_lossy().contains("b.example.org")),
        "{:?}",
        declining.0
    );
    assert!(report
        .files
        .iter()
        .any(|f| matches!(f.outcome, poolsync_engine::rm::Outcome::Declined)));
    for name in ["standby.part0", "standby.part1", "standby.set"] {
        assert!(s.stat(&pools.join(name)).unwrap().is_some(), "{name}");
    }
    assert!(s.stat(&admin).unwrap().is_some());

    let report = rm_with(&s, &admin, &opts, &mut AlwaysYes, &connector(&s)).unwrap();
    assert!(report.ok(), "{report:?}");
    for name in ["standby.part0", "standby.part1", "standby.set"] {
        assert!(s.stat(&pools.join(name)).unwrap().is_none(), "{name}");
    }
    // Removed files are reported with their host.
    assert!(report
        .files
        .iter()
        .any(|f| f.path == Path::new("b.example.org:/srv/b/pools/standby.set")));
}

#[test]
fn transform_adds_and_removes_a_remote_replica() {
    use poolsync_engine::remote::transform::{transform_all, TransformAll};
    use poolsync_engine::transform::TransformOptions;
    let (fx, s, admin) = setup();
    let app = fx.set_path.clone();
    let opts = TransformOptions {
        threads: 1,
        ..TransformOptions::default()
    };
    let out = transform_all(
        &s,
        &app,
        &admin,
        &opts,
        &connector(&s),
        &options(),
        &NoProgress,
    )
    .unwrap();
    let TransformAll::Remote(added) = out else {
        panic!("a remote transform")
    };
    assert!(added.first_failure().is_none(), "{added:?}");
    assert_eq!(added.added.len(), 1);
    assert_in_sync(&s, &fx.set_path);
    // Back: the remote parts go, the remote set file stays.
    let out = transform_all(
        &s,
        &admin,
        &app,
        &opts,
        &connector(&s),
        &options(),
        &NoProgress,
    )
    .unwrap();
    let TransformAll::Remote(removed) = out else {
        panic!("a remote transform")
    };
    assert_eq!(removed.removed[0].files.len(), 2);
    let pools = Path::new(ROOT).join("pools");
    assert!(s.stat(&pools.join("standby.part0")).unwrap().is_none());
    assert!(s.stat(&pools.join("standby.set")).unwrap().is_some());
    // Local and remote replicas changing together: refused.
    let text = String::from_utf8(s.written_bytes(&admin).unwrap()).unwrap();
    let both = Path::new("/pool/both.set");
    let local_changed = text.replace("REPLICA\n", "REPLICA\n8M /pool/extra\n");
    s.insert_file(both, local_changed.as_bytes(), 0o644)
        .unwrap();
    let e = transform_all(
        &s,
        &app,
        both,
        &opts,
        &connector(&s),
        &options(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("one thing at a time"), "{e}");
}

#[test]
fn with_no_local_replica_healthy_sync_restores_from_the_remote() {
    let (fx, s, admin) = setup();
    run(&s, &admin);
    // Both local replicas broken: replica 0's part 1 is gone, replica 1's
    // header is damaged and a block of its data too.
    crate::support::remove(&s, fx.part(0, 0));
    crate::support::flip(&s, fx.part(1, 0), 100);
    fx.write_logical(&s, 1, 6 * M, &[0x77; 4096]);
    let dry = sync_all(
        &s,
        &admin,
        &SyncOptions {
            dry_run: true,
            ..options()
        },
        &connector(&s),
        &NoProgress,
    )
    .unwrap();
    let plan = &dry.restored.as_ref().expect("a restore").plan;
    assert_eq!(plan.parts_to_create, 1);
    assert!(plan.bytes_differing >= 4096, "{plan:#?}");
    assert!(dry.local.is_none());
    let done = run(&s, &admin);
    let restored = done.restored.as_ref().expect("restored");
    let report = restored.report.as_ref().unwrap();
    assert_eq!(report.parts_created, 1);
    assert!(report.undo.is_some(), "what was overwritten is saved");
    assert!(crate::support::healthy(&s, &fx.set_path));
    assert_in_sync(&s, &fx.set_path);
    // The remote, the source of the restore, is current.
    assert!(done.remotes[0].plan.as_ref().unwrap().current);
}

/// `info` and `check` say when a remote replica was last brought up to
/// date: a record beside the administrator's set file, written after each
/// completed update, read back by `remote_status`; an unreadable record
/// makes the time unknown and says why, and `rm` removes the record with
/// the pool.
#[test]
fn the_time_of_the_last_sync_is_recorded_and_reported() {
    use poolsync_engine::exec::Tuning;
    use poolsync_engine::remote::record::{self, Record};
    use poolsync_engine::remote::status::{remote_status, StatusOptions};
    use poolsync_engine::rm::{rm_with, AlwaysYes, Ask, RmOptions};
    let (_fx, s, admin) = setup();
    let status_options = StatusOptions {
        compare: true,
        live_only: false,
        tuning: Tuning {
            stride: 1 << 20,
            threads: 1,
        },
    };
    let status = |s: &SimStorage| {
        remote_status(s, &admin, &connector(s), &status_options, &NoProgress).expect("status")
    };
    // Before any sync: nothing on record.
    let before = status(&s);
    assert_eq!(before[0].last_sync, None);
    assert!(before[0]
        .last_sync_unknown
        .as_deref()
        .unwrap()
        .contains("no sync of it is on record"));
    // A dry run records nothing.
    let dry = SyncOptions {
        dry_run: true,
        ..options()
    };
    sync_all(&s, &admin, &dry, &connector(&s), &NoProgress).expect("dry run");
    assert_eq!(record::read(&s, &admin), Record::Missing);

    let now = s.clock().unix_seconds();
    run(&s, &admin);
    let Record::Ready(entries) = record::read(&s, &admin) else {
        panic!("no record after a sync");
    };
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].node, "b.example.org");
    assert_eq!(entries[0].set, REMOTE_SET);
    let after = status(&s);
    let t = after[0].last_sync.expect("a time");
    assert!(t >= now, "{t} < {now}");
    assert_eq!(after[0].last_sync_unknown, None);

    // Damaged: unknown, naming the file.
    let path = record::record_path(&admin);
    let mut text = s.written_bytes(&path).expect("record");
    text.extend_from_slice(b"\nsynced_at = [\n");
    s.remove(&path).unwrap();
    s.insert_file(&path, &text, 0o644).unwrap();
    let damaged = status(&s);
    assert_eq!(damaged[0].last_sync, None);
    let why = damaged[0].last_sync_unknown.clone().unwrap();
    assert!(
        why.contains("poolsync-remotes") && why.contains("line "),
        "{why}"
    );
    // The next sync writes a good record again.
    run(&s, &admin);
    assert!(status(&s)[0].last_sync.is_some());

    // rm removes it with the pool; a file of that name that is not a
    // record would be kept.
    let opts = RmOptions {
        ask: Ask::Never,
        remove_set_file: true,
        ..RmOptions::default()
    };
    let report = rm_with(&s, &admin, &opts, &mut AlwaysYes, &connector(&s)).unwrap();
    assert!(report.ok(), "{report:?}");
    assert!(s.stat(&path).unwrap().is_none(), "the record is removed");
}

#[test]
fn an_update_sends_the_changes_since_the_epoch_its_mark_proves() {
    let (fx, s, admin) = setup();
    let mark = {
        let mut m = Path::new(ROOT).join(REMOTE_SET).into_os_string();
        m.push(".poolsync-synced");
        PathBuf::from(m)
    };
    // Seeded: every block is sent, and the source is not scanned a second
    // time for epochs (so no mark yet).
    let out = run(&s, &admin);
    let plan = out.remotes[0].plan.as_ref().unwrap();
    assert_eq!(plan.since_epoch, None);
    assert_eq!(plan.totals.bytes_compared, 0);
    let why = plan.digests_because.clone().unwrap_or_default();
    assert!(why.contains("being seeded"), "{why}");
    assert!(s.stat(&mark).unwrap().is_none(), "a sync mark after a seed");
    // The next sync compares by digests (it is current), scans and marks.
    let out = run(&s, &admin);
    let plan = out.remotes[0].plan.as_ref().unwrap();
    assert!(plan.current && plan.since_epoch.is_none(), "{plan:#?}");
    assert!(s.stat(&mark).unwrap().is_some(), "no sync mark written");
    let state = poolsync_engine::packets::state_path(&admin);
    assert!(s.stat(&state).unwrap().is_some(), "no state file written");

    // Nothing changed: current, and nothing compared or read there.
    let out = run(&s, &admin);
    let r = &out.remotes[0];
    let plan = r.plan.as_ref().unwrap();
    assert!(plan.current && plan.since_epoch.is_some(), "{plan:#?}");
    assert_eq!(plan.totals.bytes_compared, 0);
    assert_eq!(plan.totals.wire_compare, 0);
    let first = plan.since_epoch;

    // Three blocks change locally: exactly they are sent, nothing is
    // compared, and the epoch moves on.
    for (i, off) in [2 * M, 5 * M + 4096, 11 * M].into_iter().enumerate() {
        let bytes = vec![0xc0 + i as u8; 4096];
        fx.write_logical(&s, 0, off, &bytes);
        fx.write_logical(&s, 1, off, &bytes);
    }
    let out = run(&s, &admin);
    let plan = out.remotes[0].plan.as_ref().unwrap();
    assert_eq!(plan.since_epoch, first, "{plan:#?}");
    assert_eq!(plan.totals.bytes_differing, 3 * 4096, "{plan:#?}");
    assert_eq!(plan.totals.bytes_compared, 0);
    assert_in_sync(&s, &fx.set_path);
    let out = run(&s, &admin);
    let plan = out.remotes[0].plan.as_ref().unwrap();
    assert!(plan.current);
    assert!(plan.since_epoch > first, "{plan:#?}");

    // libpmemobj opens the standby there (run_id + 2): by digests, saying why.
    let part0 = Path::new(ROOT).join("pools/standby.part0");
    let f = s.open(&part0, Access::ReadOnly).unwrap();
    let mut b = [0u8; 8];
    f.read_at(0x1808, &mut b).unwrap();
    drop(f);
    write_file(
        &s,
        &part0,
        0x1808,
        &(u64::from_le_bytes(b) + 2).to_le_bytes(),
    );
    let out = run(&s, &admin);
    let plan = out.remotes[0].plan.as_ref().unwrap();
    assert_eq!(plan.since_epoch, None);
    let why = plan.digests_because.as_deref().unwrap_or_default();
    assert!(why.contains("opened on its host"), "{why}");
    assert_in_sync(&s, &fx.set_path);

    // The local state file is lost: a new lineage, by digests once.
    s.remove(&state).unwrap();
    let out = run(&s, &admin);
    let plan = out.remotes[0].plan.as_ref().unwrap();
    assert_eq!(plan.since_epoch, None);
    assert!(plan.digests_because.is_some(), "{plan:#?}");
    let out = run(&s, &admin);
    assert!(out.remotes[0].plan.as_ref().unwrap().since_epoch.is_some());

    // A dry run leaves the mark, a write session removes it first: an
    // update that fails half way leaves none.
    let dry = SyncOptions {
        dry_run: true,
        ..options()
    };
    let before = s.image();
    sync_all(&s, &admin, &dry, &connector(&s), &NoProgress).unwrap();
    assert!(s.image() == before, "a dry run wrote");
    assert!(s.stat(&mark).unwrap().is_some());
}
