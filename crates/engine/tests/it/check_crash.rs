//! Crash points of `check -r`, which repairs pool headers in place
//! (docs/format.md §21): every header it writes is the old one or the
//! repaired one after a crash, nothing else changes, and running `check -r`
//! again finishes the repair.

use std::path::Path;

use poolsync_engine::check::{check, Answer, CheckOptions, CheckResult, CheckUi, Message};
use poolsync_engine::sync::{sync, NoProgress, SyncOptions};
use poolsync_header::{PoolHdr, RawUuid, Sds, POOL_HDR_SIZE};
use poolsync_pmem::sim::{SimImage, SimStorage, Survival, TORN_BLOCK};

use crate::crash::{CrashTest, Sweeping};
use crate::support::{write_file, Fixture, Op};

/// A check UI for `-y`: nothing is asked.
struct Quiet;

impl CheckUi for Quiet {
    fn message(&mut self, _: &Message) {}
    fn ask(&mut self, question: &str) -> Answer {
        panic!("asked with -y: {question}")
    }
}

/// `check -r -a -y`.
fn repair() -> CheckOptions {
    CheckOptions {
        repair: true,
        dry_run: false,
        advanced: true,
        always_yes: true,
    }
}

/// Changes header fields of a part and writes the header back durably,
/// with a valid checksum.
fn patch_hdr(s: &SimStorage, path: &Path, change: impl FnOnce(&mut PoolHdr)) {
    let bytes = s.written_bytes(path).expect("part");
    let mut h = PoolHdr::decode(&bytes[..POOL_HDR_SIZE]).expect("header");
    change(&mut h);
    write_file(s, path, 0, &h.encode());
}

/// Whether `now` is `old` or `new`, or (`torn`) a mix of their sectors.
fn old_or_new(now: &[u8], old: &[u8], new: &[u8], torn: bool) -> bool {
    if now == old || now == new {
        return true;
    }
    torn && now.len() == old.len()
        && now.len() == new.len()
        && now
            .chunks(TORN_BLOCK)
            .zip(old.chunks(TORN_BLOCK).zip(new.chunks(TORN_BLOCK)))
            .all(|(n, (o, w))| n == o || n == w)
}

/// Crashes `check -r -a -y` of `fx` at every event. The uninterrupted run
/// ends with `verdict` and writes `writes` headers; a check without `-r`
/// then says `after`. With `torn`, torn survivals too.
fn crash_everywhere(
    fx: &Fixture,
    verdict: CheckResult,
    writes: usize,
    after: CheckResult,
    torn: bool,
) {
    sweep(fx, (verdict, writes, after), torn, Sweeping::Crashes);
}

/// `crash_everywhere`'s checks on the sweep `how` names.
fn sweep(
    fx: &Fixture,
    (verdict, writes, after): (CheckResult, usize, CheckResult),
    torn: bool,
    how: Sweeping,
) {
    let test = CrashTest::new("check -r", fx.copy(), |s| {
        check(s, &fx.set_path, &repair(), &mut Quiet)
    });
    let reference = test.reference();
    assert_eq!(reference.outcome.result, verdict);
    assert_eq!(reference.outcome.writes.len(), writes);
    let old: SimImage = fx.base.image();
    let new: SimImage = reference.storage.image();
    how.sweep(&test, &reference)
        .survivals(|k| {
            let mut survivals = vec![Survival::Durable, Survival::Everything];
            if torn {
                survivals.extend([
                    Survival::Torn { seed: k },
                    Survival::Torn { seed: k ^ 0x5eed },
                ]);
            }
            survivals
        })
        .threads(1)
        .after_crash(|c| {
            // Only header pages change, each to the old or the repaired
            // header (or, torn, sector by sector).
            let torn = matches!(c.survival, Survival::Torn { .. });
            let now = c.storage.image();
            assert_eq!(
                now.files().keys().collect::<Vec<_>>(),
                old.files().keys().collect::<Vec<_>>(),
                "{c}: files"
            );
            for (path, file) in now.files() {
                let (o, n) = (
                    &old.get(path).expect("old").bytes,
                    &new.get(path).expect("new").bytes,
                );
                assert_eq!(file.mode, old.get(path).expect("old").mode, "{c}: mode");
                let split = POOL_HDR_SIZE.min(file.bytes.len());
                assert!(
                    file.bytes[split..] == o[split..],
                    "{c}: {} data changed",
                    path.display()
                );
                assert!(
                    old_or_new(&file.bytes[..split], &o[..split], &n[..split], torn),
                    "{c}: {} holds neither header",
                    path.display()
                );
            }
        })
        .rerun(|c| {
            let report = c
                .run()
                .unwrap_or_else(|e| panic!("{c}: check -r after the crash: {e}"));
            assert!(
                report.result.is_success(),
                "{c}: check -r after the crash: {} {:#?}",
                report.result,
                report.messages
            );
            report
        })
        .end(|c, _| {
            let plain = check(
                &c.storage,
                &fx.set_path,
                &CheckOptions::default(),
                &mut Quiet,
            )
            .unwrap_or_else(|e| panic!("{c}: check: {e}"));
            assert_eq!(plain.result, after, "{c}: check after the repair");
        })
        .run();
}

#[test]
fn crash_while_check_relinks_two_headers() {
    // Two headers name a wrong next neighbour (with valid checksums):
    // `-r -a` rewrites both, one after the other. (A wrong link to a
    // header checked earlier makes that header's UUID ambiguous instead.)
    let fx = Fixture::new(&[&[8, 8, 8], &[16], &[16]], false);
    patch_hdr(&fx.base, fx.part(0, 1), |h| {
        h.next_part_uuid = RawUuid([0x11; 16]);
    });
    patch_hdr(&fx.base, fx.part(1, 0), |h| {
        h.next_repl_uuid = RawUuid([0x22; 16]);
    });
    // Not torn: see `a_header_torn_while_check_relinks_it_is_beyond_repair`.
    crash_everywhere(
        &fx,
        CheckResult::Repaired,
        2,
        CheckResult::Consistent,
        false,
    );
}

/// EIO, ENOSPC and EROFS while `check -r` relinks headers: a clear error,
/// only header pages changed, each old or repaired, and `check -r` again
/// finishes the repair.
#[test]
fn faults_while_check_relinks_two_headers() {
    let fx = Fixture::new(&[&[8, 8, 8], &[16], &[16]], false);
    patch_hdr(&fx.base, fx.part(0, 1), |h| {
        h.next_part_uuid = RawUuid([0x11; 16]);
    });
    patch_hdr(&fx.base, fx.part(1, 0), |h| {
        h.next_repl_uuid = RawUuid([0x22; 16]);
    });
    let expect = (CheckResult::Repaired, 2, CheckResult::Consistent);
    sweep(&fx, expect, false, Sweeping::Faults);
}

#[test]
fn crash_while_check_relinks_a_single_replica() {
    let fx = Fixture::new(&[&[8, 8, 8]], false);
    patch_hdr(&fx.base, fx.part(0, 1), |h| {
        h.next_part_uuid = RawUuid([0x33; 16]);
    });
    crash_everywhere(
        &fx,
        CheckResult::Repaired,
        1,
        CheckResult::Consistent,
        false,
    );
}

#[test]
fn crash_while_check_resets_the_shutdown_state() {
    // An ADR failure in every replica: `-r` resets the first replica's,
    // and the others need a sync.
    let fx = Fixture::new(&[&[16], &[8, 8]], false);
    let mut sds = Sds {
        usc: 5,
        ..Sds::ZERO
    };
    sds.set_dirty();
    for r in 0..2 {
        patch_hdr(&fx.base, fx.part(r, 0), |h| h.sds = sds);
    }
    // The shutdown state and the checksum share the header's last sector
    // (and a 2K checksum does not change), so a torn write cannot mix them.
    crash_everywhere(
        &fx,
        CheckResult::SyncRequired,
        1,
        CheckResult::SyncRequired,
        true,
    );
}

/// A known gap, pinned so that it is seen: `check -r` writes a repaired
/// header in one 4 KiB write, and the link it changed (sector 0) and the
/// checksum (sector 7) can reach the media apart (a torn write: a DAX
/// store sequence or a page write-back cut short by a power failure). The
/// header then has a bad checksum, which `check -r -a` does not repair in
/// an obj pool (libpmempool's "the repair of pmemobj pools is not
/// supported"), and `sync` has no healthy replica to rebuild it from: a
/// set `check -r` could repair before the crash can no longer be repaired.
/// When `check -r` learns to finish such a header, give the relinking
/// sweeps above their torn survivals and turn this test around.
#[test]
fn a_header_torn_while_check_relinks_it_is_beyond_repair() {
    let fx = Fixture::new(&[&[8, 8, 8]], false);
    let part = fx.part(0, 1);
    patch_hdr(&fx.base, part, |h| h.next_part_uuid = RawUuid([0x33; 16]));
    let test = CrashTest::new("check -r", fx.copy(), |s| {
        check(s, &fx.set_path, &repair(), &mut Quiet)
    });
    let reference = test.reference();
    assert!(matches!(
        &reference.events[0],
        Op::Flush { path, off: 0, len } if path == part && *len == POOL_HDR_SIZE as u64
    ));
    let old = fx.base.written_bytes(part).expect("part");
    let new = reference.storage.written_bytes(part).expect("part");
    // Stopped at the flush: the repaired header is written, nothing durable.
    let crashed = test.interrupt(&reference, 0);
    let torn = (0..64)
        .map(|seed| crashed.after_crash_with(Survival::Torn { seed }))
        .find(|s| {
            let now = s.written_bytes(part).expect("part");
            now[..POOL_HDR_SIZE] != old[..POOL_HDR_SIZE]
                && now[..POOL_HDR_SIZE] != new[..POOL_HDR_SIZE]
        })
        .expect("a seed that tears the header");
    let now = torn.written_bytes(part).expect("part");
    assert!(old_or_new(&now, &old, &new, true), "sectors old or new");
    assert!(!PoolHdr::decode(&now).expect("header").checksum_ok());
    let report = check(&torn, &fx.set_path, &repair(), &mut Quiet).expect("check -r");
    assert_eq!(report.result, CheckResult::CannotRepair);
    assert!(
        report
            .messages
            .iter()
            .any(|m| m.text == "the repair of pmemobj pools is not supported"),
        "{:#?}",
        report.messages
    );
    let sync_options = SyncOptions {
        threads: 1,
        ..SyncOptions::default()
    };
    let err = sync(&torn, &fx.set_path, &sync_options, &NoProgress).expect_err("sync");
    assert!(err.to_string().contains("no replica(s) found"), "{err}");
}
