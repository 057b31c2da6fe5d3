//! Update packets on the simulated storage: export, import, seeding,
//! idempotence, gaps, damage, local changes and their rewind, a hub, and
//! a failover with promotion and the old primary's failback.

use std::path::{Path, PathBuf};

use poolsync_engine::exec::NoProgress;
use poolsync_engine::inspect::inspect;
use poolsync_engine::open::open;
use poolsync_engine::packets::epoch::{epoch, EpochOptions};
use poolsync_engine::packets::export::{export, ExportOptions, ExportOutcome, ExportReport};
use poolsync_engine::packets::import::{import, ImportOptions, ImportReport, Refusal, Verdict};
use poolsync_engine::packets::{describe::describe, state_path, IdSource};
use poolsync_engine::ring::UuidSource;
use poolsync_pmem::sim::SimStorage;
use poolsync_pmem::{Access, Storage};

use crate::support::{flip, read_logical, write_file, Fixture};

const M: u64 = 1 << 20;

/// Site A (the fixture's `/pool/pool.set`, two replicas) and the
/// directories of sites B and C and of the packets.
fn sites() -> (Fixture, SimStorage) {
    let fx = Fixture::new(&[&[16, 16], &[32]], false);
    let s = fx.copy();
    for d in ["/b", "/c", "/out"] {
        s.add_dir(Path::new(d)).unwrap();
    }
    (fx, s)
}

/// A destination pool set file at `dir/pool.set` with the given replicas
/// (part sizes in MiB), and its path.
fn dest_set(s: &SimStorage, dir: &str, replicas: &[&[u64]]) -> PathBuf {
    let mut text = String::from("PMEMPOOLSET\n");
    for (r, parts) in replicas.iter().enumerate() {
        if r > 0 {
            text.push_str("REPLICA\n");
        }
        for (p, mib) in parts.iter().enumerate() {
            text.push_str(&format!("{mib}M {dir}/r{r}p{p}\n"));
        }
    }
    let path = PathBuf::from(format!("{dir}/pool.set"));
    s.insert_file(&path, text.as_bytes(), 0o644).unwrap();
    path
}

fn opts(dests: &[&str], out: &str) -> ExportOptions {
    ExportOptions {
        destinations: dests.iter().map(|d| d.to_string()).collect(),
        out: PathBuf::from(out),
        ids: IdSource::Derived { seed: 7 },
        stride: 1 << 20,
        ..ExportOptions::default()
    }
}

fn exp(s: &SimStorage, set: &Path, o: &ExportOptions) -> ExportReport {
    export(s, set, o, &NoProgress).unwrap_or_else(|e| panic!("export: {e}"))
}

fn imp_with(s: &SimStorage, set: &Path, packets: &[&str], o: &ImportOptions) -> ImportReport {
    let packets: Vec<PathBuf> = packets.iter().map(PathBuf::from).collect();
    import(s, set, &packets, o, &NoProgress).unwrap_or_else(|e| panic!("import: {e}"))
}

fn imp(s: &SimStorage, set: &Path, packets: &[&str]) -> ImportReport {
    let o = ImportOptions {
        uuids: UuidSource::Derived { seed: 3 },
        ..ImportOptions::default()
    };
    imp_with(s, set, packets, &o)
}

/// The replicated range `[4096, end)` of replica `r` of the pool set at `set`.
fn image(s: &SimStorage, set: &Path, r: usize, end: u64) -> Vec<u8> {
    let text = String::from_utf8(s.written_bytes(set).unwrap()).unwrap();
    let parsed = poolsync_poolset::parse(&text).unwrap();
    read_logical(s, &parsed, r, 4096, end - 4096)
}

fn pool_end(fx: &Fixture) -> u64 {
    fx.set.pool_size().unwrap() / 4096 * 4096
}

/// Every replica of `dest` holds the source's replicated range, and the
/// set is healthy.
fn assert_same(s: &SimStorage, fx: &Fixture, dest: &Path) {
    let end = pool_end(fx);
    let want = image(s, &fx.set_path, 0, end);
    let text = String::from_utf8(s.written_bytes(dest).unwrap()).unwrap();
    let replicas = poolsync_poolset::parse(&text).unwrap().replicas.len();
    for r in 0..replicas {
        assert!(
            image(s, dest, r, end) == want,
            "{}: replica {r} differs",
            dest.display()
        );
    }
    let set = open(s, dest, Access::ReadOnly).unwrap();
    assert!(
        inspect(&set).is_healthy(),
        "{}: not healthy",
        dest.display()
    );
}

/// Changes `blocks` blocks of the source's heap at `at` (every replica, as
/// libpmemobj would).
fn change(s: &SimStorage, fx: &Fixture, at: u64, blocks: u64, seed: u8) {
    let bytes: Vec<u8> = (0..blocks * 4096)
        .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
        .collect();
    for r in 0..fx.parts.len() {
        fx.write_logical(s, r, at, &bytes);
    }
}

fn refusal(r: &ImportReport) -> Option<&Refusal> {
    r.packets.iter().find_map(|p| match &p.verdict {
        Verdict::Refused { refusal, .. } => Some(refusal),
        _ => None,
    })
}

#[test]
fn a_packet_seeds_a_destination_of_another_layout_and_the_next_one_is_small() {
    let (fx, s) = sites();
    let b = dest_set(&s, "/b", &[&[8, 8, 20], &[40]]);
    let first = exp(&s, &fx.set_path, &opts(&["b"], "/out/p1"));
    assert_eq!(first.outcome, ExportOutcome::Written);
    assert_eq!((first.base_epoch, first.new_epoch), (0, 1));
    assert!(
        first.state_note.is_some(),
        "a first export says why it ships everything"
    );
    let r = imp(&s, &b, &["/out/p1"]);
    assert!(r.seeded && !r.refused(), "{r:?}");
    assert_same(&s, &fx, &b);
    // Applied packets are deleted.
    assert!(s.stat(Path::new("/out/p1")).unwrap().is_none());
    assert!(s.stat(&state_path(&b)).unwrap().is_some());

    change(&s, &fx, 5 * M, 3, 11);
    change(&s, &fx, 9 * M + 8192, 1, 12);
    let second = exp(&s, &fx.set_path, &opts(&["b"], "/out/p2"));
    assert_eq!((second.base_epoch, second.new_epoch), (1, 2));
    assert_eq!(second.changed_blocks, 4);
    let packet = second.packet.as_ref().unwrap();
    assert_eq!(packet.data_blocks, 4);
    assert!(packet.packet_bytes < 4 * 4096 + 64 * 1024, "{packet:?}");
    let r = imp(&s, &b, &["/out/p2"]);
    assert!(!r.refused(), "{r:?}");
    assert_eq!(r.after, Some((1, 2)));
    assert_same(&s, &fx, &b);

    // Nothing changed, every destination current: no packet.
    let third = exp(&s, &fx.set_path, &opts(&["b"], "/out/p3"));
    assert_eq!(third.outcome, ExportOutcome::UpToDate);
    assert!(s.stat(Path::new("/out/p3")).unwrap().is_none());
}

#[test]
fn packets_apply_in_any_order_twice_changes_nothing_and_a_gap_is_refused() {
    let (fx, s) = sites();
    let b = dest_set(&s, "/b", &[&[32]]);
    exp(&s, &fx.set_path, &opts(&["b"], "/out/p1"));
    imp(&s, &b, &["/out/p1"]);
    change(&s, &fx, 5 * M, 2, 3);
    exp(&s, &fx.set_path, &opts(&["b"], "/out/p2"));
    change(&s, &fx, 6 * M, 2, 4);
    exp(&s, &fx.set_path, &opts(&["b"], "/out/p3"));
    change(&s, &fx, 7 * M, 2, 5);
    exp(&s, &fx.set_path, &opts(&["b"], "/out/p4"));

    // p4 alone: a gap, refused, naming both epochs; nothing changes.
    let before = image(&s, &b, 0, pool_end(&fx));
    let keep = ImportOptions {
        keep: true,
        ..ImportOptions::default()
    };
    let r = imp_with(&s, &b, &["/out/p4"], &keep);
    assert_eq!(
        refusal(&r),
        Some(&Refusal::Gap {
            destination_epoch: 1,
            base_epoch: 3
        })
    );
    assert!(image(&s, &b, 0, pool_end(&fx)) == before);
    // Diagnosed: the export that fills the gap.
    let diag = ImportOptions {
        diagnose: true,
        ..ImportOptions::default()
    };
    let r = imp_with(&s, &b, &["/out/p4"], &diag);
    assert_eq!(r.suggestions.len(), 1);
    assert_eq!(r.suggestions[0].since, Some(1));
    assert_eq!(r.suggestions[0].destination, "b");
    assert_eq!(r.suggestions[0].source, "/pool/pool.set");
    assert!(s.stat(Path::new("/out/p4")).unwrap().is_some());

    // All of them, out of order, and once more: the second run skips.
    let r = imp_with(&s, &b, &["/out/p4", "/out/p2", "/out/p3"], &keep);
    assert!(!r.refused(), "{r:?}");
    assert_eq!(r.after, Some((1, 4)));
    assert_same(&s, &fx, &b);
    let image_after = image(&s, &b, 0, pool_end(&fx));
    let r = imp(&s, &b, &["/out/p3", "/out/p4", "/out/p2"]);
    assert!(
        r.packets
            .iter()
            .all(|p| matches!(p.verdict, Verdict::Skipped { .. })),
        "{r:?}"
    );
    assert!(image(&s, &b, 0, pool_end(&fx)) == image_after);
    assert_eq!(r.deleted.len(), 3);
}

#[test]
fn damaged_truncated_missing_and_foreign_packets_are_refused_with_nothing_applied() {
    let (fx, s) = sites();
    let b = dest_set(&s, "/b", &[&[32]]);
    exp(&s, &fx.set_path, &opts(&["b"], "/out/p1"));
    imp(&s, &b, &["/out/p1"]);
    change(&s, &fx, 5 * M, 40, 9);
    let mut o = opts(&["b"], "/out/p2");
    o.max_size = 64 * 1024;
    let rep = exp(&s, &fx.set_path, &o);
    let files = rep.packet.unwrap().files;
    assert!(files.len() > 2, "{files:?}");
    let before = image(&s, &b, 0, pool_end(&fx));
    let keep = ImportOptions {
        keep: true,
        ..ImportOptions::default()
    };
    let names: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();

    // A missing part.
    let r = imp_with(&s, &b, &all[..all.len() - 1], &keep);
    assert!(
        matches!(refusal(&r), Some(Refusal::Damaged { .. })),
        "{r:?}"
    );
    // A flipped byte in a record of the second file.
    let copy = s.after_crash_with(poolsync_pmem::sim::Survival::Everything);
    flip(&copy, Path::new(&names[1]), 300);
    let r = imp_with(&copy, &b, &all, &keep);
    match refusal(&r) {
        Some(Refusal::Damaged { file, offset }) => {
            assert_eq!(file, Path::new(&names[1]));
            assert!(offset.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert!(image(&copy, &b, 0, pool_end(&fx)) == before);
    // The check finds the damage for a lone packet (it reads every record
    // before any write): the same refusal as a first reading gives, no
    // check reported, and without --keep no file deleted.
    assert!(r.check.is_none(), "{r:?}");
    let r = imp(&copy, &b, &all);
    assert!(
        matches!(refusal(&r), Some(Refusal::Damaged { .. })),
        "{r:?}"
    );
    assert!(r.deleted.is_empty(), "{r:?}");
    for name in &names {
        assert!(copy.stat(Path::new(name)).unwrap().is_some(), "{name} kept");
    }
    assert!(image(&copy, &b, 0, pool_end(&fx)) == before);
    // A truncated last file.
    let copy = s.after_crash_with(poolsync_pmem::sim::Survival::Everything);
    let last = Path::new(&names[names.len() - 1]);
    let mut bytes = copy.written_bytes(last).unwrap();
    bytes.truncate(bytes.len() - 10);
    copy.remove(last).unwrap();
    copy.insert_file(last, &bytes, 0o644).unwrap();
    let r = imp_with(&copy, &b, &all, &keep);
    assert!(
        matches!(refusal(&r), Some(Refusal::Damaged { .. })),
        "{r:?}"
    );
    assert!(image(&copy, &b, 0, pool_end(&fx)) == before);

    // A packet of another pool.
    let other = Fixture::new(&[&[32]], false);
    let os = other.copy();
    os.add_dir(Path::new("/out")).unwrap();
    exp(&os, &other.set_path, &opts(&["b"], "/out/x"));
    let bytes = os.written_bytes(Path::new("/out/x")).unwrap();
    s.insert_file(Path::new("/out/x"), &bytes, 0o644).unwrap();
    let r = imp_with(&s, &b, &["/out/x"], &keep);
    assert!(
        matches!(refusal(&r), Some(Refusal::OtherPool { .. })),
        "{r:?}"
    );
    assert!(image(&s, &b, 0, pool_end(&fx)) == before);

    // The whole packet, intact: applied.
    let r = imp(&s, &b, &all);
    assert!(!r.refused(), "{r:?}");
    assert_same(&s, &fx, &b);
}

#[test]
fn a_destination_changed_locally_is_refused_and_brought_back_by_a_rewind() {
    let (fx, s) = sites();
    let b = dest_set(&s, "/b", &[&[32], &[16, 16]]);
    exp(&s, &fx.set_path, &opts(&["b"], "/out/p1"));
    imp(&s, &b, &["/out/p1"]);
    // Someone writes to the standby (both replicas, as libpmemobj would).
    let text = String::from_utf8(s.written_bytes(&b).unwrap()).unwrap();
    let set = poolsync_poolset::parse(&text).unwrap();
    for r in 0..2 {
        let ext = set.extents(r).unwrap();
        let piece = &poolsync_poolset::map_range(&ext, 12 * M, 4096)[0];
        let part = match &set.replicas[r] {
            poolsync_poolset::Replica::Local { parts, .. } => {
                PathBuf::from(&parts[piece.part].path)
            }
            _ => unreachable!(),
        };
        write_file(&s, &part, piece.file_offset, &[0xab; 100]);
    }
    change(&s, &fx, 5 * M, 2, 7);
    exp(&s, &fx.set_path, &opts(&["b"], "/out/p2"));
    let keep = ImportOptions {
        keep: true,
        ..ImportOptions::default()
    };
    let r = imp_with(&s, &b, &["/out/p2"], &keep);
    match refusal(&r) {
        Some(Refusal::LocalChanges { ranges }) => {
            assert_eq!(ranges.as_slice()[0].offset, 12 * M, "{ranges:?}");
        }
        other => panic!("{other:?}"),
    }
    let diag = ImportOptions {
        diagnose: true,
        rewind_request: Some(PathBuf::from("/out/b.rewind")),
        ..ImportOptions::default()
    };
    let r = imp_with(&s, &b, &["/out/p2"], &diag);
    let written = r.rewind_request.as_ref().expect("a rewind request");
    assert_eq!(written.blocks, 1);
    assert_eq!(
        r.suggestions[0].request.as_deref(),
        Some(Path::new("/out/b.rewind"))
    );
    let mut o = opts(&["b"], "/out/p3");
    o.request = Some(PathBuf::from("/out/b.rewind"));
    let rep = exp(&s, &fx.set_path, &o);
    assert_eq!(rep.request.as_ref().unwrap().blocks, 1);
    // The destination table assumed p2 arrived: p3 starts there.
    assert_eq!(rep.base_epoch, 1);
    let r = imp(&s, &b, &["/out/p2", "/out/p3"]);
    assert!(
        r.packets.iter().any(|p| p.verdict == Verdict::Applied),
        "{r:?}"
    );
    assert_same(&s, &fx, &b);
}

#[test]
fn a_hub_forwards_and_one_packet_serves_two_destinations() {
    let (fx, s) = sites();
    let b = dest_set(&s, "/b", &[&[32]]);
    let c = dest_set(&s, "/c", &[&[20, 20]]);
    exp(&s, &fx.set_path, &opts(&["b"], "/out/p1"));
    imp(&s, &b, &["/out/p1"]);
    // B forwards A's epoch 1 to C.
    let rep = exp(&s, &b, &opts(&["c"], "/out/h1"));
    assert_eq!(rep.outcome, ExportOutcome::Written);
    assert!(rep.follower);
    assert_eq!((rep.base_epoch, rep.new_epoch), (0, 1));
    imp(&s, &c, &["/out/h1"]);
    assert_same(&s, &fx, &c);
    // Nothing new: the hub has nothing to forward.
    assert_eq!(
        exp(&s, &b, &opts(&["c"], "/out/h2")).outcome,
        ExportOutcome::UpToDate
    );
    // A packet for both; each applies it.
    change(&s, &fx, 7 * M, 5, 13);
    exp(&s, &fx.set_path, &opts(&["b", "c"], "/out/p2"));
    let keep = ImportOptions {
        keep: true,
        ..ImportOptions::default()
    };
    // C holds epoch 1 through the hub, in A's lineage: it takes A's packet.
    assert!(!imp_with(&s, &b, &["/out/p2"], &keep).refused());
    assert!(!imp(&s, &c, &["/out/p2"]).refused());
    assert_same(&s, &fx, &b);
    assert_same(&s, &fx, &c);
}

#[test]
fn dry_runs_write_nothing_limits_refuse_and_files_are_split() {
    let (fx, s) = sites();
    let before = s.image();
    let mut o = opts(&["b"], "/out/p1");
    o.dry_run = true;
    o.max_size = 1 << 20;
    let rep = exp(&s, &fx.set_path, &o);
    assert_eq!(rep.outcome, ExportOutcome::WouldWrite);
    let files = rep.packet.unwrap().files;
    assert!(files.len() > 1);
    assert!(files.iter().all(|f| f.bytes <= 1 << 20));
    assert!(s.image() == before, "a dry run wrote");
    let mut o = opts(&["b"], "/out/p1");
    o.max_size = 1 << 20;
    o.limit = Some(2);
    let e = export(&s, &fx.set_path, &o, &NoProgress).unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("needs {} files", files.len())),
        "{e}"
    );
    assert!(s.image() == before, "a refused export wrote");
    o.limit = Some(files.len() as u32);
    o.compression = poolsync_packet::Compression::Zstd;
    let rep = exp(&s, &fx.set_path, &o);
    assert!(rep.packet.unwrap().files.len() <= files.len());
    let b = dest_set(&s, "/b", &[&[32]]);
    let names: Vec<String> = (0..files.len())
        .map(|i| poolsync_packet::part_file_name("/out/p1", i as u32))
        .filter(|n| s.stat(Path::new(n)).unwrap().is_some())
        .collect();
    let d = describe(
        &s,
        &names.iter().map(PathBuf::from).collect::<Vec<_>>(),
        None,
    )
    .unwrap();
    assert!(d.bad.is_empty() && d.packets.len() == 1 && d.packets[0].verified);
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    assert!(!imp(&s, &b, &all).refused());
    assert_same(&s, &fx, &b);
}

#[test]
fn a_failover_promotes_a_standby_and_the_old_primary_fails_back() {
    let (fx, s) = sites();
    let b = dest_set(&s, "/b", &[&[32]]);
    exp(&s, &fx.set_path, &opts(&["b"], "/out/p1"));
    imp(&s, &b, &["/out/p1"]);
    // A goes on alone: epoch 2 never reaches B.
    change(&s, &fx, 5 * M, 3, 21);
    exp(&s, &fx.set_path, &opts(&["b"], "/out/lost"));
    // Failover: B becomes the writer of timeline 2, forked at epoch 1.
    let promoted = epoch(
        &s,
        &b,
        &EpochOptions {
            promote: true,
            ..EpochOptions::default()
        },
    )
    .unwrap();
    assert_eq!((promoted.timeline, promoted.role), (2, "writer"));
    // B's application writes.
    let text = String::from_utf8(s.written_bytes(&b).unwrap()).unwrap();
    let bset = poolsync_poolset::parse(&text).unwrap();
    let ext = bset.extents(0).unwrap();
    let piece = &poolsync_poolset::map_range(&ext, 8 * M, 4096)[0];
    write_file(&s, Path::new("/b/r0p0"), piece.file_offset, &[0x5c; 4096]);
    // B's packet for A: A holds timeline 1 epoch 2, past the fork.
    exp(&s, &b, &opts(&["a"], "/out/back1"));
    // A's lost epoch-2 packet never applies at B either: B is on another
    // timeline now and holds changes A lacks.
    let keep = ImportOptions {
        keep: true,
        ..ImportOptions::default()
    };
    let r = imp_with(&s, &b, &["/out/lost"], &keep);
    assert!(
        matches!(
            refusal(&r),
            Some(Refusal::SplitBrain | Refusal::Diverged { .. })
        ),
        "{r:?}"
    );
    let r = imp_with(&s, &fx.set_path, &["/out/back1"], &keep);
    assert_eq!(
        refusal(&r),
        Some(&Refusal::Diverged {
            fork_epoch: 1,
            timeline: 1,
            epoch: 2
        })
    );
    let diag = ImportOptions {
        diagnose: true,
        rewind_request: Some(PathBuf::from("/out/a.rewind")),
        ..ImportOptions::default()
    };
    let r = imp_with(&s, &fx.set_path, &["/out/back1"], &diag);
    let req = r.rewind_request.expect("request");
    assert_eq!(req.destination, "a");
    assert_eq!(req.blocks, 3, "the blocks A stamped after the fork");
    let mut o = opts(&["a"], "/out/back2");
    o.request = Some(PathBuf::from("/out/a.rewind"));
    let rep = exp(&s, &b, &o);
    assert_eq!(rep.timeline, 2);
    let r = imp(&s, &fx.set_path, &["/out/back2"]);
    assert!(!r.refused(), "{r:?}");
    assert_eq!(r.after, Some((2, rep.new_epoch)));
    let end = pool_end(&fx);
    for rep in 0..2 {
        assert!(
            image(&s, &fx.set_path, rep, end) == image(&s, &b, 0, end),
            "replica {rep}"
        );
    }
    // A is B's follower now: the next packet from B applies normally.
    let shown = epoch(&s, &fx.set_path, &EpochOptions::default()).unwrap();
    assert_eq!((shown.timeline, shown.role), (2, "follower"));
}

#[test]
fn epoch_set_rolls_an_estimate_back_after_a_lost_packet() {
    let (fx, s) = sites();
    let b = dest_set(&s, "/b", &[&[32]]);
    exp(&s, &fx.set_path, &opts(&["b"], "/out/p1"));
    imp(&s, &b, &["/out/p1"]);
    change(&s, &fx, 5 * M, 1, 1);
    exp(&s, &fx.set_path, &opts(&["b"], "/out/lost"));
    s.remove(Path::new("/out/lost")).unwrap();
    change(&s, &fx, 6 * M, 1, 2);
    exp(&s, &fx.set_path, &opts(&["b"], "/out/p3"));
    let keep = ImportOptions {
        keep: true,
        ..ImportOptions::default()
    };
    assert!(imp_with(&s, &b, &["/out/p3"], &keep).refused());
    let shown = epoch(
        &s,
        &fx.set_path,
        &EpochOptions {
            set: vec![("b".to_string(), 1)],
            ..EpochOptions::default()
        },
    )
    .unwrap();
    assert_eq!(shown.destinations[0].epoch, 1);
    let rep = exp(&s, &fx.set_path, &opts(&["b"], "/out/p4"));
    assert_eq!(rep.base_epoch, 1);
    assert!(!imp(&s, &b, &["/out/p4"]).refused());
    assert_same(&s, &fx, &b);
}

#[test]
fn a_replayed_packet_with_altered_content_is_refused() {
    let (fx, s) = sites();
    let b = dest_set(&s, "/b", &[&[32]]);
    exp(&s, &fx.set_path, &opts(&["b"], "/out/p1"));
    imp(&s, &b, &["/out/p1"]);
    let state = state_path(&fx.set_path);
    let saved = s.written_bytes(&state).unwrap();
    change(&s, &fx, 5 * M, 2, 31);
    let first = exp(&s, &fx.set_path, &opts(&["b"], "/out/p2"));
    imp(&s, &b, &["/out/p2"]);
    // The exporter's state is put back and the source changes otherwise:
    // the same packet id (derived ids) with other content.
    s.remove(&state).unwrap();
    s.insert_file(&state, &saved, 0o644).unwrap();
    change(&s, &fx, 5 * M, 2, 32);
    let second = exp(&s, &fx.set_path, &opts(&["b"], "/out/p2x"));
    assert_eq!(first.packet_id, second.packet_id);
    let before = image(&s, &b, 0, pool_end(&fx));
    let keep = ImportOptions {
        keep: true,
        ..ImportOptions::default()
    };
    let r = imp_with(&s, &b, &["/out/p2x"], &keep);
    assert_eq!(refusal(&r), Some(&Refusal::Altered), "{r:?}");
    assert!(image(&s, &b, 0, pool_end(&fx)) == before);
}

#[test]
fn the_same_packet_imported_twice_is_skipped_as_already_applied() {
    let (fx, s) = sites();
    let b = dest_set(&s, "/b", &[&[32]]);
    let keep = ImportOptions {
        keep: true,
        ..ImportOptions::default()
    };
    exp(&s, &fx.set_path, &opts(&["b"], "/out/p1"));
    imp_with(&s, &b, &["/out/p1"], &keep);
    change(&s, &fx, 5 * M, 2, 21);
    exp(&s, &fx.set_path, &opts(&["b"], "/out/p2"));
    let r = imp_with(&s, &b, &["/out/p2"], &keep);
    assert!(!r.refused(), "{r:?}");
    assert_eq!(r.after, Some((1, 2)));
    let after = image(&s, &b, 0, pool_end(&fx));
    for (packet, epoch) in [("/out/p2", 2), ("/out/p1", 1)] {
        let r = imp_with(&s, &b, &[packet], &keep);
        assert_eq!(r.packets.len(), 1, "{r:?}");
        match &r.packets[0].verdict {
            Verdict::Skipped { reason } => assert_eq!(
                reason,
                &format!("already applied (epoch {epoch})"),
                "{packet}"
            ),
            other => panic!("{packet}: {other:?}"),
        }
    }
    assert!(image(&s, &b, 0, pool_end(&fx)) == after);
    assert_same(&s, &fx, &b);
}

#[test]
fn a_packet_of_another_lineage_is_refused_with_nothing_applied() {
    let (fx, s) = sites();
    let b = dest_set(&s, "/b", &[&[32]]);
    let keep = ImportOptions {
        keep: true,
        ..ImportOptions::default()
    };
    exp(&s, &fx.set_path, &opts(&["b"], "/out/p1"));
    imp_with(&s, &b, &["/out/p1"], &keep);
    // The exporter loses its state and starts a new lineage (another seed
    // stands for other random ids): its full packet is refused by b.
    s.remove(&state_path(&fx.set_path)).unwrap();
    change(&s, &fx, 5 * M, 2, 22);
    let mut o = opts(&["b"], "/out/q1");
    o.ids = IdSource::Derived { seed: 8 };
    let rep = exp(&s, &fx.set_path, &o);
    assert!(rep.state_note.is_some(), "{rep:?}");
    let before = image(&s, &b, 0, pool_end(&fx));
    let r = imp_with(&s, &b, &["/out/q1"], &keep);
    assert!(
        matches!(refusal(&r), Some(Refusal::OtherLineage { .. })),
        "{r:?}"
    );
    assert!(image(&s, &b, 0, pool_end(&fx)) == before);
    assert!(s.stat(Path::new("/out/q1")).unwrap().is_some());

    // A new destination given a full packet of each lineage in one run:
    // the first seeds it, the other is refused by the state just written.
    let mut o = opts(&["c"], "/out/q2");
    o.ids = IdSource::Derived { seed: 8 };
    exp(&s, &fx.set_path, &o);
    let c = dest_set(&s, "/c", &[&[32]]);
    let r = imp_with(&s, &c, &["/out/q2", "/out/p1"], &keep);
    let applied = r
        .packets
        .iter()
        .filter(|p| matches!(p.verdict, Verdict::Applied))
        .count();
    assert_eq!(applied, 1, "{r:?}");
    assert!(
        matches!(refusal(&r), Some(Refusal::OtherLineage { .. })),
        "{r:?}"
    );
}

#[test]
fn an_export_never_overwrites_a_file_and_records_nothing_then() {
    let (fx, s) = sites();
    s.insert_file(Path::new("/out/p1"), b"someone's file", 0o644)
        .unwrap();
    let e = export(&s, &fx.set_path, &opts(&["b"], "/out/p1"), &NoProgress).unwrap_err();
    assert!(
        e.to_string().contains("packets never overwrite a file"),
        "{e}"
    );
    assert_eq!(
        s.written_bytes(Path::new("/out/p1")).unwrap(),
        b"someone's file"
    );
    assert!(s.stat(&state_path(&fx.set_path)).unwrap().is_none());
    let r = exp(&s, &fx.set_path, &opts(&["b"], "/out/p2"));
    assert_eq!((r.base_epoch, r.new_epoch), (0, 1));
}

/// Every record of the packet whose first file is `first`, as the
/// in-place stream and as the read-ahead thread give them: each as its
/// body and the digest of its bytes, up to the first error, and that
/// error's text.
type Read = (Vec<(poolsync_packet::RecordBody, u128)>, Option<String>);

fn both_readings(s: &SimStorage, first: &str) -> (Read, Read) {
    use poolsync_engine::packets::files::{group, open_packet_file, read_ahead, RecordStream};
    let file = open_packet_file(s, Path::new(first), None).unwrap();
    let (logical, refused) = group(vec![file]);
    assert!(refused.is_empty());
    let packet = &logical[0];
    let digest = poolsync_engine::endpoint::digest;
    let mut direct = (Vec::new(), None);
    let mut stream = RecordStream::new(s, packet, None);
    loop {
        match stream.read_next() {
            Ok(Some((body, data))) => direct.0.push((body, digest(data))),
            Ok(None) => {
                direct.1 = stream.finish().err().map(|e| e.to_string());
                break;
            }
            Err(e) => {
                direct.1 = Some(e.to_string());
                // Its files are closed (and unlocked) before the next
                // reading.
                drop(stream);
                break;
            }
        }
    }
    let mut ahead = (Vec::new(), None);
    let r = read_ahead(s, packet, None, |records| {
        while let Some((body, data)) = records.next_record()? {
            ahead.0.push((body, digest(data)));
        }
        Ok(())
    });
    ahead.1 = r.err().map(|e| e.to_string());
    (direct, ahead)
}

#[test]
fn records_read_ahead_in_batches_are_the_records_read_in_place() {
    let (fx, s) = sites();
    let b = dest_set(&s, "/b", &[&[32]]);
    exp(&s, &fx.set_path, &opts(&["b"], "/out/seed.pkt"));
    imp(&s, &b, &["/out/seed.pkt"]);
    // 1,300 single changed blocks, each its own record: several batches.
    let base = 2 * M;
    for i in 0..1300 {
        change(&s, &fx, base + i * 2 * 4096, 1, (i % 250) as u8 + 1);
    }
    exp(&s, &fx.set_path, &opts(&["b"], "/out/p.pkt"));
    let (direct, ahead) = both_readings(&s, "/out/p.pkt");
    assert!(direct.0.len() >= 1300, "{} records", direct.0.len());
    assert_eq!(direct.1, None);
    assert_eq!(ahead, direct);
    // A damaged record in the middle: the records before it, then the
    // same refusal.
    let len = s.stat(Path::new("/out/p.pkt")).unwrap().unwrap().len;
    flip(&s, Path::new("/out/p.pkt"), len * 3 / 5);
    let (direct, ahead) = both_readings(&s, "/out/p.pkt");
    let e = direct.1.clone().expect("refused");
    assert!(e.contains("/out/p.pkt"), "{e}");
    assert!(
        direct.0.len() > 600 && direct.0.len() < 1300,
        "{}",
        direct.0.len()
    );
    assert_eq!(ahead, direct);
}
