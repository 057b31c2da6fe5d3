//! `feature` (docs/format.md §24): queries and changes on the simulated
//! storage, every refusal, and its crash points: a crash leaves every
//! header old, new or torn between the two, `feature` run again (the same
//! change, or the opposite one) finishes, and meanwhile `query`, `check`,
//! `sync` and the health check say what happened and write nothing.

use std::path::{Path, PathBuf};

use poolsync_engine::check::{check, Answer, CheckOptions, CheckResult, CheckUi, Message};
use poolsync_engine::feature::{query, set, FeatureReport, FeatureState};
use poolsync_engine::inspect::{inspect, Inconsistency};
use poolsync_engine::open::open;
use poolsync_engine::sync::{sync, NoProgress, SyncOptions};
use poolsync_engine::Error;
use poolsync_header::{Feature, PoolHdr, Sds, POOL_HDR_SIZE};
use poolsync_pmem::sim::{SimImage, SimStorage, Survival, TORN_BLOCK};
use poolsync_pmem::{Access, Storage};

use crate::crash::{survivals_torn_every, CrashTest};
use crate::support::{remove, write_file, Fixture};

/// A check UI that answers nothing.
struct Quiet;

impl CheckUi for Quiet {
    fn message(&mut self, _: &Message) {}
    fn ask(&mut self, question: &str) -> Answer {
        panic!("asked: {question}")
    }
}

/// Three replicas with 2, 1 and 3 header-carrying parts (of the 8 MiB
/// that sync wants at least).
fn fixture() -> Fixture {
    Fixture::new(&[&[8, 9], &[17], &[8, 8, 8]], false)
}

/// The header of a part on `s`.
fn header(s: &SimStorage, path: &Path) -> PoolHdr {
    let bytes = s.written_bytes(path).expect("part");
    PoolHdr::decode(&bytes[..POOL_HDR_SIZE]).expect("header")
}

/// Changes a part's header and writes it back durably with a valid checksum.
fn patch_hdr(s: &SimStorage, path: &Path, change: impl FnOnce(&mut PoolHdr)) {
    let mut h = header(s, path);
    change(&mut h);
    write_file(s, path, 0, &h.encode());
}

/// Every header-carrying part of the fixture.
fn header_parts(fx: &Fixture) -> Vec<PathBuf> {
    fx.parts.iter().flatten().cloned().collect()
}

fn value(s: &SimStorage, fx: &Fixture, feature: Feature) -> bool {
    query(s, &fx.set_path, feature)
        .unwrap_or_else(|e| panic!("query {feature}: {e}"))
        .enabled
}

#[test]
fn query_reads_every_feature() {
    let fx = fixture();
    let s = fx.copy();
    assert!(!value(&s, &fx, Feature::SingleHdr));
    assert!(value(&s, &fx, Feature::Cksum2k));
    assert!(value(&s, &fx, Feature::ShutdownState));
    assert!(value(&s, &fx, Feature::CheckBadBlocks));
    assert_eq!(s.image(), fx.base.image(), "a query writes nothing");

    let single = Fixture::new(&[&[8, 8], &[16]], true);
    assert!(value(&single.copy(), &single, Feature::SingleHdr));
}

#[test]
fn changes_rewrite_every_header_and_nothing_else() {
    let fx = fixture();
    let s = fx.copy();
    // A dirty shutdown state, as a crashed application leaves it.
    patch_hdr(&s, fx.part(1, 0), |h| {
        let mut sds = Sds::ZERO;
        sds.set_dirty();
        sds.encode();
        h.sds = sds;
    });
    let before = s.image();
    let r = set(&s, &fx.set_path, Feature::ShutdownState, false).expect("disable");
    assert_eq!(r.before, FeatureState::Enabled);
    assert!(r.changed && !r.enabled);
    assert_eq!(r.headers.len(), 6);
    assert!(r.headers.iter().all(|h| h.written && !h.torn));
    for path in header_parts(&fx) {
        let h = header(&s, &path);
        assert!(h.checksum_ok());
        assert!(!Feature::ShutdownState.is_set(&h.features));
        assert_eq!(h.sds, Sds::ZERO, "libpmempool zeroes the shutdown state");
        let old = before.get(&path).expect("old").bytes.clone();
        let new = s.written_bytes(&path).expect("new");
        assert_eq!(old[POOL_HDR_SIZE..], new[POOL_HDR_SIZE..], "data untouched");
    }
    assert!(!value(&s, &fx, Feature::ShutdownState));
    assert!(inspect(&open(&s, &fx.set_path, Access::ReadOnly).expect("open")).is_healthy());

    // Already disabled: nothing written.
    let image = s.image();
    let again = set(&s, &fx.set_path, Feature::ShutdownState, false).expect("again");
    assert!(!again.changed && again.headers.iter().all(|h| !h.written));
    assert_eq!(s.image(), image);

    // CKSUM_2K off: 4K checksums; on again: the original masks.
    set(&s, &fx.set_path, Feature::Cksum2k, false).expect("2K off");
    let h = header(&s, fx.part(0, 1));
    assert!(h.checksum_ok() && !Feature::Cksum2k.is_set(&h.features));
    set(&s, &fx.set_path, Feature::Cksum2k, true).expect("2K on");
    set(&s, &fx.set_path, Feature::ShutdownState, true).expect("SDS on");
    set(&s, &fx.set_path, Feature::CheckBadBlocks, false).expect("bad blocks off");
    assert!(!value(&s, &fx, Feature::CheckBadBlocks));
    set(&s, &fx.set_path, Feature::CheckBadBlocks, true).expect("bad blocks on");
    // Back where it started, but for the zeroed shutdown state.
    let mut expected = before.clone();
    let part = fx.part(1, 0).to_path_buf();
    let mut bytes = expected.get(&part).expect("part").bytes.clone();
    let mut h = PoolHdr::decode(&bytes).expect("header");
    h.sds = Sds::ZERO;
    bytes[..POOL_HDR_SIZE].copy_from_slice(&h.encode());
    expected.insert(&part, bytes, expected.get(&part).expect("part").mode);
    assert_eq!(s.image(), expected);
}

#[test]
fn refusals_name_the_rule_and_write_nothing() {
    let fx = fixture();
    let s = fx.copy();
    let before = s.image();
    let refused = |feature, on| {
        let e = set(&s, &fx.set_path, feature, on).expect_err("refused");
        assert_eq!(s.image(), before, "{e}");
        e.to_string()
    };
    let e = refused(Feature::SingleHdr, true);
    assert!(e.contains("SINGLEHDR cannot be enabled or disabled"), "{e}");
    assert!(e.contains("poolsync transform"), "{e}");
    refused(Feature::SingleHdr, false);
    let e = refused(Feature::Cksum2k, false);
    assert!(
        e.contains("disable SHUTDOWN_STATE prior to disabling CKSUM_2K"),
        "{e}"
    );
    set(&s, &fx.set_path, Feature::ShutdownState, false).expect("SDS off");
    set(&s, &fx.set_path, Feature::Cksum2k, false).expect("2K off");
    let image = s.image();
    let e = set(&s, &fx.set_path, Feature::ShutdownState, true).expect_err("needs 2K");
    assert!(
        e.to_string()
            .contains("enable CKSUM_2K prior to enabling SHUTDOWN_STATE"),
        "{e}"
    );
    assert_eq!(s.image(), image);
}

#[test]
fn headers_that_cannot_be_trusted_are_refused() {
    let fx = fixture();
    // An unknown feature bit, with a valid checksum.
    let s = fx.copy();
    patch_hdr(&s, fx.part(2, 1), |h| h.features.compat |= 0x10);
    let e = query(&s, &fx.set_path, Feature::Cksum2k).expect_err("unknown bit");
    let text = e.to_string();
    assert!(text.contains("invalid features detected"), "{text}");
    assert!(text.contains("replica 2 part 1"), "{text}");
    assert!(text.contains("compat 0x10"), "{text}");

    // Masks that differ in more than one feature.
    let s = fx.copy();
    patch_hdr(&s, fx.part(1, 0), |h| {
        h.features.incompat = 0;
        h.features.compat = 0;
    });
    let e = set(&s, &fx.set_path, Feature::CheckBadBlocks, false).expect_err("mismatch");
    assert!(
        matches!(
            e,
            Error::FeatureMismatch {
                replica: 1,
                part: 0,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("features mismatch detected"), "{e}");

    // A bad checksum that no feature change explains.
    let s = fx.copy();
    let path = fx.part(0, 1);
    let mut raw = s.written_bytes(path).expect("part");
    raw[100] ^= 0x40;
    write_file(&s, path, 100, &raw[100..101]);
    let e = set(&s, &fx.set_path, Feature::ShutdownState, false).expect_err("bad header");
    assert!(
        e.to_string().contains("invalid checksum of pool header"),
        "{e}"
    );
    assert!(e.to_string().contains("replica 0 part 1"), "{e}");

    // A missing part: nothing can be written consistently.
    let s = fx.copy();
    remove(&s, fx.part(2, 2));
    let before = s.image();
    let e = set(&s, &fx.set_path, Feature::CheckBadBlocks, false).expect_err("missing");
    assert!(e.to_string().contains("replica 2 part 2"), "{e}");
    assert_eq!(s.image(), before);

    // A pool in use.
    let s = fx.copy();
    let held = s.open(fx.part(1, 0), Access::ReadOnly).expect("hold");
    let e = set(&s, &fx.set_path, Feature::CheckBadBlocks, false).expect_err("locked");
    assert!(
        matches!(e, Error::Storage(poolsync_pmem::Error::Locked { .. })),
        "{e}"
    );
    drop(held);
}

#[test]
fn mixed_headers_are_an_interrupted_change_everywhere() {
    let fx = fixture();
    let s = fx.copy();
    // As a crash after the first two headers of `-d SHUTDOWN_STATE` leaves it.
    for (r, p) in [(0, 0), (0, 1)] {
        patch_hdr(&s, fx.part(r, p), |h| {
            *h = h.with_feature(Feature::ShutdownState, false);
        });
    }
    let before = s.image();
    let e = query(&s, &fx.set_path, Feature::ShutdownState).expect_err("interrupted");
    let text = e.to_string();
    assert!(matches!(e, Error::FeatureInterrupted { .. }), "{text}");
    assert!(
        text.contains("set in: replica 1 part 0, replica 2 part 0"),
        "{text}"
    );
    assert!(
        text.contains("clear in: replica 0 part 0, replica 0 part 1"),
        "{text}"
    );
    assert!(
        text.contains("poolsync feature -e SHUTDOWN_STATE"),
        "{text}"
    );
    // Another feature's change waits for this one.
    let e = set(&s, &fx.set_path, Feature::CheckBadBlocks, false).expect_err("other");
    assert!(
        matches!(
            e,
            Error::FeatureInterrupted {
                feature: Feature::ShutdownState,
                ..
            }
        ),
        "{e}"
    );
    // The health check and sync refuse, naming the fix; check says so.
    let health = inspect(&open(&s, &fx.set_path, Access::ReadOnly).expect("open"));
    assert!(
        matches!(
            health.inconsistencies.as_slice(),
            [
                Inconsistency::FeaturesDiffer {
                    feature: Some(Feature::ShutdownState),
                    ..
                },
                ..
            ]
        ),
        "{:?}",
        health.inconsistencies
    );
    let e = sync(&s, &fx.set_path, &sync_options(), &NoProgress).expect_err("sync");
    assert!(
        e.to_string().contains("poolsync feature -e SHUTDOWN_STATE"),
        "{e}"
    );
    let report = check(&s, &fx.set_path, &CheckOptions::default(), &mut Quiet).expect("check");
    assert_eq!(report.result, CheckResult::NotConsistent);
    assert_eq!(s.image(), before, "nothing written");
    // Either direction finishes it.
    let undone = fx.copy();
    for (path, file) in before.files() {
        write_file(&undone, path, 0, &file.bytes);
    }
    let r = set(&undone, &fx.set_path, Feature::ShutdownState, true).expect("undo");
    assert_eq!(r.before, FeatureState::Interrupted);
    assert_eq!(r.headers.iter().filter(|h| h.written).count(), 2);
    assert_eq!(undone.image(), fx.base.image());
    let r = set(&s, &fx.set_path, Feature::ShutdownState, false).expect("finish");
    assert_eq!(r.headers.iter().filter(|h| h.written).count(), 4);
    assert!(!value(&s, &fx, Feature::ShutdownState));
}

fn sync_options() -> SyncOptions {
    SyncOptions {
        threads: 1,
        ..SyncOptions::default()
    }
}

/// Whether every 512-byte sector of `now` is that of `old` or `new`.
fn sectors_old_or_new(now: &[u8], old: &[u8], new: &[u8]) -> bool {
    now.len() == old.len()
        && now.len() == new.len()
        && now
            .chunks(TORN_BLOCK)
            .zip(old.chunks(TORN_BLOCK).zip(new.chunks(TORN_BLOCK)))
            .all(|(n, (o, w))| n == o || n == w)
}

/// Crashes `feature -e|-d FEATURE` (from `base`) at every persistence
/// event, with power failures, killed processes and torn writes; checks
/// what every other command makes of the state it left, that the opposite
/// change goes back from there, and that the same change run again ends
/// exactly where the uninterrupted run did.
fn crash_everywhere(fx: &Fixture, base: SimStorage, feature: Feature, on: bool) {
    let set_path = fx.set_path.clone();
    let test = CrashTest::new(format!("feature {feature} {on}"), base, |s| {
        set(s, &set_path, feature, on)
    });
    let reference = test.reference();
    assert!(reference.outcome.changed);
    // A flush and a fence per header, one header after the other.
    assert_eq!(reference.n(), 2 * header_parts(fx).len() as u64);
    let old: SimImage = test.base().image();
    let new: SimImage = reference.storage.image();
    test.sweep(&reference, reference.all_points())
        .survivals(|k| survivals_torn_every(k, 1, 2))
        .after_crash(|c| {
            let now = c.storage.image();
            for (path, file) in now.files() {
                let (o, n) = (
                    &old.get(path).expect("old").bytes,
                    &new.get(path).expect("new").bytes,
                );
                let split = POOL_HDR_SIZE.min(file.bytes.len());
                assert!(
                    file.bytes[split..] == o[split..],
                    "{c}: {} data",
                    path.display()
                );
                assert!(
                    sectors_old_or_new(&file.bytes[..split], &o[..split], &n[..split]),
                    "{c}: {} holds neither header",
                    path.display()
                );
            }
            let state = judge_intermediate(&c.storage, fx, feature);
            c.note(format!("{state:?}"));
            assert!(c.storage.image() == now, "{c}: a reader wrote");
            // The opposite change goes back to where the run started (but
            // for shutdown states that disabling zeroed).
            let back = c.storage.after_crash_with(Survival::Everything);
            let r = set(&back, &fx.set_path, feature, !on)
                .unwrap_or_else(|e| panic!("{c}: the opposite change: {e}"));
            assert_eq!(r.enabled, !on);
            if feature == Feature::ShutdownState && !on {
                assert!(value(&back, fx, feature), "{c}");
                assert!(healthy(&back, fx), "{c}");
            } else {
                assert!(
                    back.image() == old,
                    "{c}: the opposite change ended elsewhere"
                );
            }
        })
        .end(|c, outcome: &FeatureReport| {
            assert_eq!(outcome.enabled, on, "{c}");
            assert!(healthy(&c.storage, fx), "{c}");
        })
        .run();
}

/// Whether the pool set opens healthy.
fn healthy(s: &SimStorage, fx: &Fixture) -> bool {
    inspect(&open(s, &fx.set_path, Access::ReadOnly).expect("open")).is_healthy()
}

/// What a crash left, as the headers say.
#[derive(Debug, PartialEq, Eq)]
enum Left {
    /// Every header valid, with the feature's one value.
    Uniform(bool),
    /// Valid headers that disagree.
    Mixed,
    /// A header torn between its old and its new bytes.
    Torn,
}

/// Classifies the headers, and checks that `query`, the health check,
/// `sync` and `check` each say what they should about it.
fn judge_intermediate(s: &SimStorage, fx: &Fixture, feature: Feature) -> Left {
    let hdrs: Vec<PoolHdr> = header_parts(fx).iter().map(|p| header(s, p)).collect();
    let left = if hdrs.iter().any(|h| !h.checksum_ok()) {
        for h in hdrs.iter().filter(|h| !h.checksum_ok()) {
            assert_eq!(h.torn_feature_change().map(|t| t.0), Some(feature));
        }
        Left::Torn
    } else if hdrs.iter().all(|h| feature.is_set(&h.features))
        || hdrs.iter().all(|h| !feature.is_set(&h.features))
    {
        Left::Uniform(feature.is_set(&hdrs[0].features))
    } else {
        Left::Mixed
    };
    let q = query(s, &fx.set_path, feature);
    let health = inspect(&open(s, &fx.set_path, Access::ReadOnly).expect("open"));
    let synced = sync(s, &fx.set_path, &sync_options(), &NoProgress);
    let checked = check(s, &fx.set_path, &CheckOptions::default(), &mut Quiet).expect("check");
    match left {
        Left::Uniform(v) => {
            assert_eq!(q.expect("query").enabled, v);
            assert!(health.is_healthy(), "{:?}", health.inconsistencies);
            synced.expect("sync of a healthy set");
            assert_eq!(checked.result, CheckResult::Consistent);
        }
        Left::Mixed | Left::Torn => {
            let e = q.expect_err("query of an interrupted change");
            assert!(
                matches!(e, Error::FeatureInterrupted { feature: f, .. } if f == feature),
                "{e}"
            );
            assert!(
                health.inconsistencies.iter().any(|i| matches!(
                    i,
                    Inconsistency::FeaturesDiffer { feature: Some(f), .. }
                        | Inconsistency::FeatureChangeTorn { feature: f, .. } if *f == feature
                )),
                "{:?}",
                health.inconsistencies
            );
            let e = synced.expect_err("sync refuses");
            let hint = format!("poolsync feature -e {feature}");
            assert!(e.to_string().contains(&hint), "{e}");
            assert_eq!(checked.result, CheckResult::NotConsistent);
        }
    }
    left
}

/// Two replicas, one of two parts: three headers, sync-sized parts.
fn crash_fixture() -> Fixture {
    Fixture::new(&[&[8, 8], &[17]], false)
}

#[test]
fn crash_while_disabling_the_shutdown_state() {
    let fx = crash_fixture();
    let base = fx.copy();
    // A dirty shutdown state that disabling zeroes.
    patch_hdr(&base, fx.part(1, 0), |h| h.sds.set_dirty());
    crash_everywhere(&fx, base, Feature::ShutdownState, false);
}

#[test]
fn crash_while_enabling_the_shutdown_state() {
    let fx = crash_fixture();
    let base = fx.copy();
    set(&base, &fx.set_path, Feature::ShutdownState, false).expect("SDS off");
    crash_everywhere(&fx, base, Feature::ShutdownState, true);
}

#[test]
fn crash_while_changing_the_checksum_range() {
    let fx = crash_fixture();
    let base = fx.copy();
    set(&base, &fx.set_path, Feature::ShutdownState, false).expect("SDS off");
    crash_everywhere(
        &fx,
        base.after_crash_with(Survival::Everything),
        Feature::Cksum2k,
        false,
    );
    set(&base, &fx.set_path, Feature::Cksum2k, false).expect("2K off");
    crash_everywhere(&fx, base, Feature::Cksum2k, true);
}

#[test]
fn crash_while_disabling_bad_block_checks() {
    let fx = crash_fixture();
    crash_everywhere(&fx, fx.copy(), Feature::CheckBadBlocks, false);
}
