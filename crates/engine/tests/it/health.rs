//! `open`, `inspect`, `info` and `check` against pool sets built in temp
//! directories and then damaged: one verdict per damage kind, `check` never
//! writing without `-r`, and repairs leaving valid checksums.

use std::collections::VecDeque;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use poolsync_engine::check::{
    check, Answer, CheckOptions, CheckReport, CheckResult, CheckUi, Message, MessageKind,
};
use poolsync_engine::create::{create, CreateOptions};
use poolsync_engine::info::{info, InfoOptions};
use poolsync_engine::inspect::{inspect, Health, Inconsistency, PartFault, ReplicaFault};
use poolsync_engine::open::{open, PartStatus};
use poolsync_engine::Error;
use poolsync_header::{PoolHdr, RawUuid, Sds, POOL_HDR_SIZE};
use poolsync_pmem::{Access, FsStorage};
use tempfile::TempDir;

// ---------------------------------------------------------------- helpers

/// A pool set in a temp dir: replicas with part sizes in MiB.
struct Pool {
    _dir: TempDir,
    set: PathBuf,
    parts: Vec<Vec<PathBuf>>,
}

impl Pool {
    fn new(replicas: &[&[u64]], singlehdr: bool) -> Pool {
        let dir = tempfile::tempdir().expect("temp dir");
        let (text, parts) = crate::support::set_text(dir.path(), replicas, singlehdr);
        let set = dir.path().join("pool.set");
        fs::write(&set, text).expect("write set");
        create(&FsStorage, &set, &opts("health")).expect("create");
        Pool {
            _dir: dir,
            set,
            parts,
        }
    }

    fn part(&self, r: usize, p: usize) -> &Path {
        &self.parts[r][p]
    }

    fn all_bytes(&self) -> Vec<Vec<u8>> {
        self.parts
            .iter()
            .flatten()
            .map(|p| fs::read(p).expect("read part"))
            .collect()
    }
}

fn opts(layout: &str) -> CreateOptions {
    CreateOptions {
        layout: layout.to_string(),
        mode: 0o664,
        size: None,
        force: false,
    }
}

fn read_hdr(path: &Path) -> PoolHdr {
    let mut buf = vec![0u8; POOL_HDR_SIZE];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read header");
    PoolHdr::decode(&buf).expect("decode")
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open for write");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(bytes).expect("write");
}

/// Changes header fields and writes the header back with a valid checksum.
fn patch_hdr(path: &Path, change: impl FnOnce(&mut PoolHdr)) {
    let mut h = read_hdr(path);
    change(&mut h);
    write_at(path, 0, &h.encode());
}

fn health(set: &Path) -> Health {
    let open = open(&FsStorage, set, Access::ReadOnly).expect("open");
    inspect(&open)
}

/// A check UI that records messages and answers from a queue (then "no").
#[derive(Default)]
struct Script {
    answers: VecDeque<Answer>,
    asked: Vec<String>,
    seen: Vec<Message>,
}

impl CheckUi for Script {
    fn message(&mut self, message: &Message) {
        self.seen.push(message.clone());
    }
    fn ask(&mut self, question: &str) -> Answer {
        self.asked.push(question.to_string());
        self.answers.pop_front().unwrap_or(Answer::No)
    }
}

fn run_check(set: &Path, o: CheckOptions) -> (Result<CheckReport, Error>, Script) {
    let mut ui = Script::default();
    let r = check(&FsStorage, set, &o, &mut ui);
    (r, ui)
}

fn verify() -> CheckOptions {
    CheckOptions::default()
}

fn repair(advanced: bool, yes: bool, dry_run: bool) -> CheckOptions {
    CheckOptions {
        repair: true,
        dry_run,
        advanced,
        always_yes: yes,
    }
}

fn texts(report: &CheckReport, kind: MessageKind) -> Vec<String> {
    report
        .messages
        .iter()
        .filter(|m| m.kind == kind)
        .map(|m| m.text.clone())
        .collect()
}

// ---------------------------------------------------------------- healthy sets

#[test]
fn healthy_set_with_different_part_splits() {
    let pool = Pool::new(&[&[9, 9], &[20], &[8, 8, 8]], false);
    let h = health(&pool.set);
    assert!(h.is_healthy(), "{h:#?}");
    assert_eq!(h.source, Some(0));
    // Replica 0: 18 MiB - 4096; replica 2: 24 MiB - 8192; replica 1: 20 MiB.
    assert_eq!(h.set_pool_size, (18 << 20) - 4096);
    assert_eq!(h.pool_size, Some((18 << 20) - 4096));
    assert!(h.sds_active);
    assert!(h.check_bad_blocks);

    let (r, ui) = run_check(&pool.set, verify());
    let report = r.expect("check");
    assert_eq!(report.result, CheckResult::Consistent);
    assert!(texts(&report, MessageKind::Error).is_empty());
    assert_eq!(
        texts(&report, MessageKind::Info)[..4],
        [
            "replica 0: checking shutdown state",
            "replica 0: shutdown state correct",
            "replica 1: checking shutdown state",
            "replica 1: shutdown state correct"
        ]
    );
    assert!(texts(&report, MessageKind::Info)
        .contains(&"replica 2 part 2: pool header correct".to_string()));
    assert_eq!(ui.seen, report.messages);
    assert!(ui.asked.is_empty());

    let i = info(&FsStorage, &pool.set, &InfoOptions::default()).expect("info");
    let ps = i.poolset.as_ref().expect("poolset");
    assert_eq!(ps.replicas.len(), 3);
    assert_eq!(ps.replicas[2].parts.len(), 3);
    assert_eq!(ps.replicas[0].parts[1].size, 9 << 20);
    assert_eq!(i.pool_header.signature, "PMEMOBJ");
    assert_eq!(i.pool_header.checksum, i.pool_header.expected_checksum);
    let obj = i.obj_header.as_ref().expect("obj header");
    assert_eq!(obj.layout.as_deref(), Some("health"));
    assert_eq!(obj.heap_offset + obj.heap_size, (18 << 20) - 4096);
    // -p 2 shows replica 2's part 0 header, which links back to replica 1.
    let i2 = info(
        &FsStorage,
        &pool.set,
        &InfoOptions {
            replica: 2,
            force: false,
        },
    )
    .expect("info -p 2");
    assert_eq!(i2.pool_header.uuid, read_hdr(pool.part(2, 0)).uuid);
    assert_eq!(
        i2.pool_header.prev_repl_uuid,
        read_hdr(pool.part(1, 0)).uuid
    );
    let err = info(
        &FsStorage,
        &pool.set,
        &InfoOptions {
            replica: 3,
            force: false,
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("valid range is: 0-2"), "{err}");
}

#[test]
fn singlehdr_set_is_healthy_and_maps_without_header_gaps() {
    let pool = Pool::new(&[&[8, 4], &[12]], true);
    let h = health(&pool.set);
    assert!(h.is_healthy(), "{h:#?}");
    assert!(h.replicas[0].parts[0].has_header);
    assert!(!h.replicas[0].parts[1].has_header);
    let (r, _) = run_check(&pool.set, verify());
    assert_eq!(r.expect("check").result, CheckResult::Consistent);
    let i = info(&FsStorage, &pool.set, &InfoOptions::default()).expect("info");
    assert_eq!(i.poolset.expect("poolset").options, ["SINGLEHDR"]);

    // With SINGLEHDR, part 1 starts at logical 8 MiB and file offset 0.
    write_at(pool.part(0, 1), 0, b"WXYZ");
    write_at(pool.part(0, 0), (8 << 20) - 2, b"UV");
    let set = open(&FsStorage, &pool.set, Access::ReadOnly).expect("open");
    let mut buf = [0u8; 6];
    set.read_logical(0, (8 << 20) - 2, &mut buf)
        .expect("read across the boundary");
    assert_eq!(&buf, b"UVWXYZ");
}

#[test]
fn read_logical_skips_header_pages_of_later_parts() {
    let pool = Pool::new(&[&[8, 8]], false);
    write_at(pool.part(0, 0), (8 << 20) - 3, b"abc");
    write_at(pool.part(0, 1), 4096, b"defg");
    let set = open(&FsStorage, &pool.set, Access::ReadOnly).expect("open");
    let mut buf = [0u8; 7];
    set.read_logical(0, (8 << 20) - 3, &mut buf).expect("read");
    assert_eq!(&buf, b"abcdefg");
    // Beyond the replica's address space (16 MiB - 4096) is an error, not a short read.
    let mut tail = [0u8; 8];
    let err = set
        .read_logical(0, (16 << 20) - 4096 - 4, &mut tail)
        .unwrap_err();
    assert!(
        matches!(err, Error::LogicalRead { replica: 0, .. }),
        "{err}"
    );
}

// ---------------------------------------------------------------- damage: parts

#[test]
fn missing_part_breaks_the_part_and_fails_check_and_info() {
    let pool = Pool::new(&[&[8, 8], &[16]], false);
    fs::remove_file(pool.part(0, 1)).expect("rm");
    let set = open(&FsStorage, &pool.set, Access::ReadOnly).expect("open records the fact");
    assert_eq!(set.part(0, 1).expect("part").status, PartStatus::Missing);
    let h = inspect(&set);
    assert_eq!(h.replicas[0].parts[1].fault, Some(PartFault::Missing));
    assert!(h.replicas[0].broken && !h.replicas[0].healthy);
    assert!(h.part_broken(0, 1) && !h.part_broken(0, 0));
    assert_eq!(
        h.source,
        Some(1),
        "replica 0 is broken, replica 1 is the source"
    );
    assert_eq!(h.sync_source(), Some(1));
    assert!(h.replicas[0].parts[1]
        .message
        .as_deref()
        .is_some_and(|m| m.contains("r0p1")));
    drop(set);

    let (r, _) = run_check(&pool.set, verify());
    let err = r.unwrap_err();
    assert!(
        matches!(
            err,
            Error::PartUnusable {
                replica: 0,
                part_index: 1,
                ..
            }
        ),
        "{err}"
    );
    let err = info(&FsStorage, &pool.set, &InfoOptions::default()).unwrap_err();
    assert!(err.to_string().contains("opening poolset failed"), "{err}");
}

#[test]
fn missing_part_zero_breaks_the_whole_replica_when_sds_is_on() {
    let pool = Pool::new(&[&[16], &[8, 8]], false);
    fs::remove_file(pool.part(1, 0)).expect("rm");
    let h = health(&pool.set);
    assert_eq!(
        h.replicas[1].fault,
        Some(ReplicaFault::ShutdownStateUnverifiable)
    );
    assert!(h.part_broken(1, 1), "the replica flag breaks every part");
    assert_eq!(h.source, Some(0));
}

#[test]
fn truncated_part_is_a_size_mismatch() {
    let pool = Pool::new(&[&[16], &[8, 8]], false);
    fs::OpenOptions::new()
        .write(true)
        .open(pool.part(1, 1))
        .and_then(|f| f.set_len(4 << 20))
        .expect("truncate");
    let h = health(&pool.set);
    assert_eq!(
        h.replicas[1].parts[1].fault,
        Some(PartFault::SizeMismatch {
            actual: 4 << 20,
            configured: 8 << 20
        })
    );
    assert_eq!(h.source, Some(0));
    assert!(h.inconsistencies.is_empty());
}

#[test]
fn a_part_in_use_is_refused_naming_it() {
    let pool = Pool::new(&[&[16], &[16]], false);
    let _held = open(&FsStorage, &pool.set, Access::ReadOnly).expect("first open");
    let err = open(&FsStorage, &pool.set, Access::ReadOnly).unwrap_err();
    assert!(err.to_string().contains("flock"), "{err}");
}

#[test]
fn directory_parts_are_refused_clearly() {
    let dir = tempfile::tempdir().expect("dir");
    let sub = dir.path().join("parts");
    fs::create_dir(&sub).expect("mkdir");
    let set = dir.path().join("d.set");
    fs::write(
        &set,
        format!("PMEMPOOLSET\nOPTION SINGLEHDR\n1G {}\n", sub.display()),
    )
    .expect("write");
    let err = open(&FsStorage, &set, Access::ReadOnly).unwrap_err();
    assert!(
        err.to_string()
            .contains("directory pool sets are not supported yet"),
        "{err}"
    );
}

// ---------------------------------------------------------------- damage: headers

#[test]
fn flipped_header_byte_breaks_the_part_and_check_never_writes() {
    let pool = Pool::new(&[&[16], &[8, 8]], false);
    // Byte 100 lies in a random UUID: invert it, so that it changes
    // whatever it held (writing 0xff left it alone one run in 256).
    let byte = fs::read(pool.part(1, 1)).expect("read part")[100];
    write_at(pool.part(1, 1), 100, &[!byte]);
    let h = health(&pool.set);
    assert!(
        matches!(
            h.replicas[1].parts[1].fault,
            Some(PartFault::BadChecksum { .. })
        ),
        "{h:#?}"
    );
    assert_eq!(h.source, Some(0));

    let before = pool.all_bytes();
    let (r, _) = run_check(&pool.set, verify());
    let report = r.expect("check");
    assert_eq!(report.result, CheckResult::NotConsistent);
    assert_eq!(
        texts(&report, MessageKind::Error),
        ["replica 1 part 1: incorrect pool header"]
    );
    let (r, _) = run_check(&pool.set, repair(true, true, false));
    let report = r.expect("check -r");
    assert_eq!(report.result, CheckResult::CannotRepair);
    assert_eq!(
        texts(&report, MessageKind::Error),
        ["the repair of pmemobj pools is not supported"]
    );
    assert!(report.writes.is_empty());
    assert_eq!(pool.all_bytes(), before, "nothing written");
}

#[test]
fn zero_header_and_unknown_signature() {
    let pool = Pool::new(&[&[16], &[16], &[16]], false);
    write_at(pool.part(1, 0), 0, &[0u8; POOL_HDR_SIZE]);
    patch_hdr(pool.part(2, 0), |h| h.signature = *b"XMEMOBJ\0");
    let h = health(&pool.set);
    assert_eq!(h.replicas[1].parts[0].fault, Some(PartFault::ZeroHeader));
    assert!(
        matches!(&h.replicas[2].parts[0].fault, Some(PartFault::UnknownSignature { signature }) if signature == "XMEMOBJ")
    );
    let (r, _) = run_check(&pool.set, verify());
    let report = r.expect("check");
    assert_eq!(
        texts(&report, MessageKind::Error),
        ["replica 1 part 0: empty pool hdr"]
    );
}

#[test]
fn singlehdr_flag_mismatch_breaks_the_part() {
    let pool = Pool::new(&[&[16], &[16]], false);
    patch_hdr(pool.part(1, 0), |h| {
        h.features.incompat |= poolsync_header::FEAT_SINGLEHDR
    });
    let h = health(&pool.set);
    assert_eq!(
        h.replicas[1].parts[0].fault,
        Some(PartFault::SingleHdrMismatch {
            header: true,
            poolset: false
        })
    );
}

#[test]
fn wrong_link_with_valid_checksum() {
    let pool = Pool::new(&[&[16], &[8, 8, 8]], false);
    patch_hdr(pool.part(1, 1), |h| h.next_part_uuid = RawUuid([0x11; 16]));
    let h = health(&pool.set);
    assert_eq!(
        h.inconsistencies,
        [Inconsistency::PartsNotLinked {
            replica: 1,
            part: 1,
            next_part: 2
        }]
    );
    assert_eq!(h.sync_source(), None, "no sync while inconsistent");
    assert!(h.inconsistencies[0]
        .to_string()
        .contains("two consecutive unbroken parts are not linked"));

    let before = pool.all_bytes();
    let (r, _) = run_check(&pool.set, verify());
    let report = r.expect("check");
    assert_eq!(report.result, CheckResult::NotConsistent);
    assert_eq!(
        texts(&report, MessageKind::Error),
        ["replica 1 part 1: invalid pool_hdr.next_part_uuid"]
    );

    // -r -y without -a: pmempool's verdict, but unlike pmempool nothing is written.
    let (r, _) = run_check(&pool.set, repair(false, true, false));
    let report = r.expect("check -r -y");
    assert_eq!(report.result, CheckResult::CannotRepair);
    assert_eq!(
        texts(&report, MessageKind::Info)[texts(&report, MessageKind::Info).len() - 3..],
        [
            "replica 1 part 1: invalid pool_hdr.next_part_uuid".to_string(),
            format!(
                "replica 1 part 1: setting pool_hdr.next_part_uuid to {}",
                read_hdr(pool.part(1, 2)).uuid.to_canonical()
            ),
            "replica 1 part 1: the following error can be fixed using PMEMPOOL_CHECK_ADVANCED flag"
                .to_string(),
        ]
    );
    assert_eq!(
        texts(&report, MessageKind::Error),
        ["replica 1 part 1: invalid pool_hdr.checksum"]
    );
    assert_eq!(
        pool.all_bytes(),
        before,
        "no header left with a bad checksum"
    );

    // Dry run: the same repair is computed and reported, nothing written.
    let (r, _) = run_check(&pool.set, repair(true, true, true));
    let report = r.expect("check -r -d -y -a");
    assert_eq!(report.result, CheckResult::Repaired);
    assert_eq!(report.writes.len(), 1);
    assert!(report.dry_run);
    assert_eq!(pool.all_bytes(), before);

    // -r -y -a: one header rewritten, whole, with a valid checksum.
    let (r, _) = run_check(&pool.set, repair(true, true, false));
    let report = r.expect("check -r -y -a");
    assert_eq!(report.result, CheckResult::Repaired);
    let fixed = read_hdr(pool.part(1, 1));
    assert!(fixed.checksum_ok());
    assert_eq!(fixed.next_part_uuid, read_hdr(pool.part(1, 2)).uuid);
    assert_eq!(report.writes[0].checksum, fixed.checksum);
    let after = pool.all_bytes();
    let changed: Vec<usize> = (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect();
    assert_eq!(changed, [2], "only replica 1 part 1 changed");
    let (r, _) = run_check(&pool.set, verify());
    assert_eq!(r.expect("check").result, CheckResult::Consistent);
    assert!(health(&pool.set).is_healthy());
}

#[test]
fn answering_no_reverts_everything() {
    let pool = Pool::new(&[&[16], &[8, 8, 8]], false);
    patch_hdr(pool.part(1, 1), |h| {
        h.next_part_uuid = RawUuid([0x11; 16]);
        h.prev_repl_uuid = RawUuid([0x22; 16]);
    });
    let before = pool.all_bytes();
    let mut ui = Script {
        answers: VecDeque::from([Answer::Yes, Answer::Yes, Answer::No]),
        ..Script::default()
    };
    let report = check(&FsStorage, &pool.set, &repair(true, false, false), &mut ui).expect("check");
    assert_eq!(report.result, CheckResult::NotConsistent);
    assert_eq!(
        ui.asked,
        [
            "replica 1 part 1: invalid pool_hdr.next_part_uuid. Do you want to set it to a valid value?",
            "replica 1 part 1: invalid pool_hdr.prev_repl_uuid. Do you want to set it to a valid value?",
            "replica 1 part 1: invalid pool_hdr.checksum. Do you want to regenerate checksum?",
        ]
    );
    assert_eq!(
        texts(&report, MessageKind::Error),
        ["cannot complete repair, reverting changes"]
    );
    assert_eq!(pool.all_bytes(), before);

    let mut ui = Script {
        answers: VecDeque::from([Answer::Yes, Answer::Yes, Answer::Yes]),
        ..Script::default()
    };
    let report = check(&FsStorage, &pool.set, &repair(true, false, false), &mut ui).expect("check");
    assert_eq!(report.result, CheckResult::Repaired);
    assert!(read_hdr(pool.part(1, 1)).checksum_ok());
    assert!(health(&pool.set).is_healthy());
}

#[test]
fn ambiguous_uuid_stops_before_any_write() {
    // Replica 1's uuid changed: pmempool rewrites the master's links and
    // then gives up; poolsync reports the same and writes nothing.
    let pool = Pool::new(&[&[8, 8], &[16], &[16]], false);
    patch_hdr(pool.part(1, 0), |h| h.uuid = RawUuid([0x33; 16]));
    let before = pool.all_bytes();
    let (r, _) = run_check(&pool.set, repair(true, true, false));
    let report = r.expect("check");
    assert_eq!(report.result, CheckResult::NotConsistent);
    assert_eq!(
        texts(&report, MessageKind::Error),
        ["replica 1 part 0: ambiguous pool_hdr.uuid"]
    );
    assert!(report.writes.is_empty());
    assert_eq!(pool.all_bytes(), before);
    let h = health(&pool.set);
    assert!(
        h.inconsistencies.contains(&Inconsistency::ReplicaUuids {
            replica: 0,
            next_replica: 1
        }),
        "{h:#?}"
    );
}

#[test]
fn parts_from_two_pool_sets() {
    let a = Pool::new(&[&[16], &[8, 8]], false);
    let b = Pool::new(&[&[16], &[8, 8]], false);
    fs::copy(b.part(1, 1), a.part(1, 1)).expect("copy");
    let (r, _) = run_check(&a.set, verify());
    let report = r.expect("check");
    assert_eq!(report.result, CheckResult::NotConsistent);
    let errors = texts(&report, MessageKind::Error);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with(
            "the poolset contains part files from various poolsets (replica 1 part 1, "
        ),
        "{errors:?}"
    );
    let h = health(&a.set);
    assert_eq!(
        h.inconsistencies[0],
        Inconsistency::PartsPoolsetUuid {
            replica: 1,
            first_part: 0,
            part: 1
        }
    );

    // A whole replica from another pool set.
    let c = Pool::new(&[&[16], &[16], &[16]], false);
    let d = Pool::new(&[&[16], &[16], &[16]], false);
    fs::copy(d.part(2, 0), c.part(2, 0)).expect("copy");
    let h = health(&c.set);
    assert!(
        h.inconsistencies
            .contains(&Inconsistency::ReplicasPoolsetUuid {
                healthy_replica: 0,
                replica: 2
            }),
        "{h:#?}"
    );
}

#[test]
fn swapped_replica_parts_of_equal_size() {
    let pool = Pool::new(&[&[16], &[16], &[16]], false);
    let tmp = pool.part(0, 0).with_extension("tmp");
    fs::rename(pool.part(1, 0), &tmp).expect("mv");
    fs::rename(pool.part(2, 0), pool.part(1, 0)).expect("mv");
    fs::rename(&tmp, pool.part(2, 0)).expect("mv");
    let h = health(&pool.set);
    assert!(
        h.inconsistencies
            .iter()
            .any(|i| matches!(i, Inconsistency::ReplicaUuids { .. })),
        "{h:#?}"
    );
}

// ---------------------------------------------------------------- damage: SDS and descriptor

fn adr_failure() -> Sds {
    let mut s = Sds {
        usc: 5,
        ..Sds::ZERO
    };
    s.set_dirty();
    s
}

#[test]
fn adr_failure_in_one_replica_means_sync_required() {
    let pool = Pool::new(&[&[16], &[16]], false);
    patch_hdr(pool.part(1, 0), |h| h.sds = adr_failure());
    let h = health(&pool.set);
    assert_eq!(h.replicas[1].fault, Some(ReplicaFault::AdrFailure));
    assert_eq!(h.source, Some(0));
    let (r, _) = run_check(&pool.set, verify());
    let report = r.expect("check");
    assert_eq!(report.result, CheckResult::SyncRequired);
    assert!(report.result.is_success());
    assert!(!texts(&report, MessageKind::Info)
        .iter()
        .any(|m| m.contains("shutdown")));
}

#[test]
fn adr_failure_everywhere_is_reset_in_the_first_replica_only() {
    let pool = Pool::new(&[&[16], &[16]], false);
    patch_hdr(pool.part(0, 0), |h| h.sds = adr_failure());
    patch_hdr(pool.part(1, 0), |h| h.sds = adr_failure());
    let h = health(&pool.set);
    assert_eq!(h.inconsistencies, [Inconsistency::NoHealthyReplica]);
    let (r, _) = run_check(&pool.set, verify());
    let report = r.expect("check");
    assert_eq!(report.result, CheckResult::NotConsistent);
    assert_eq!(
        texts(&report, MessageKind::Error),
        ["replica 0: an ADR failure was detected - your pool might be corrupted"]
    );
    let before = pool.all_bytes();
    let (r, _) = run_check(&pool.set, repair(false, true, false));
    let report = r.expect("check -r -y");
    assert_eq!(report.result, CheckResult::SyncRequired);
    let h0 = read_hdr(pool.part(0, 0));
    assert!(h0.sds.is_clean_zero());
    assert!(h0.checksum_ok());
    assert_eq!(pool.all_bytes()[1], before[1], "replica 1 untouched");
    assert_eq!(health(&pool.set).source, Some(0));
}

#[test]
fn corrupted_descriptor_breaks_the_replica() {
    let pool = Pool::new(&[&[16], &[16]], false);
    write_at(pool.part(0, 0), 0x1068, &[0xff]);
    let h = health(&pool.set);
    assert!(
        matches!(
            h.replicas[0].fault,
            Some(ReplicaFault::DescriptorChecksum { .. })
        ),
        "{h:#?}"
    );
    assert_eq!(h.source, Some(1));
    assert_eq!(h.pool_size, Some(16 << 20));
    // check never looks at the descriptor (pmempool neither).
    let (r, _) = run_check(&pool.set, verify());
    assert_eq!(r.expect("check").result, CheckResult::Consistent);
}

#[test]
fn pool_larger_than_the_set_is_inconsistent() {
    let pool = Pool::new(&[&[16], &[16]], false);
    let text = fs::read_to_string(&pool.set).expect("read set");
    fs::write(&pool.set, text.replacen("16M", "12M", 1)).expect("write set");
    fs::OpenOptions::new()
        .write(true)
        .open(pool.part(0, 0))
        .and_then(|f| f.set_len(12 << 20))
        .expect("truncate");
    let h = health(&pool.set);
    assert!(
        h.inconsistencies
            .iter()
            .any(|i| matches!(i, Inconsistency::ReplicasTooSmall { .. })),
        "{h:#?}"
    );
}

// ---------------------------------------------------------------- single files

#[test]
fn single_file_pool_and_a_part_file_given_alone() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("single.pool");
    create(&FsStorage, &file, &opts("")).expect("create");
    let i = info(&FsStorage, &file, &InfoOptions::default()).expect("info");
    assert!(!i.is_poolset && !i.is_part);
    assert_eq!(
        i.obj_header.as_ref().expect("obj").layout,
        None,
        "an empty layout prints (null)"
    );
    let (r, _) = run_check(&file, verify());
    let report = r.expect("check");
    assert_eq!(report.result, CheckResult::Consistent);
    assert!(
        texts(&report, MessageKind::Info).contains(&"pool header correct".to_string()),
        "no prefix for one file"
    );

    let pool = Pool::new(&[&[8, 8]], false);
    let i = info(&FsStorage, pool.part(0, 1), &InfoOptions::default()).expect("info of a part");
    assert!(i.is_part);
    assert!(i.obj_header.is_none());

    // Byte 100 lies in a random UUID: invert it, whatever it held.
    let byte = fs::read(&file).expect("read pool")[100];
    write_at(&file, 100, &[!byte]);
    let err = info(&FsStorage, &file, &InfoOptions::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidChecksum { .. }), "{err}");
    let forced = info(
        &FsStorage,
        &file,
        &InfoOptions {
            replica: 0,
            force: true,
        },
    )
    .expect("info -f obj");
    assert_ne!(
        forced.pool_header.checksum,
        forced.pool_header.expected_checksum
    );
}

#[test]
fn check_options_need_repair() {
    let pool = Pool::new(&[&[16]], false);
    for o in [
        CheckOptions {
            dry_run: true,
            ..CheckOptions::default()
        },
        CheckOptions {
            advanced: true,
            ..CheckOptions::default()
        },
        CheckOptions {
            always_yes: true,
            ..CheckOptions::default()
        },
    ] {
        let (r, _) = run_check(&pool.set, o);
        assert!(matches!(r, Err(Error::InvalidOptions { .. })));
    }
}

// ---------------------------------------------------------------- PMDK interop

/// `true` when PMDK's `pmempool` can be run; tests that need it return early otherwise.
fn have_pmempool() -> bool {
    Command::new("pmempool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn pmempool_created_sets_are_healthy_and_consistent() {
    if !have_pmempool() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let set = dir.path().join("p.set");
    let p = |n: &str| dir.path().join(n).display().to_string();
    fs::write(
        &set,
        format!(
            "PMEMPOOLSET\n9M {}\n9M {}\n9M {}\nREPLICA\n30M {}\n",
            p("a"),
            p("b"),
            p("c"),
            p("d")
        ),
    )
    .expect("write");
    let status = Command::new("pmempool")
        .args(["create", "-l", "interop", "obj"])
        .arg(&set)
        .status()
        .expect("run");
    assert!(status.success());
    assert!(health(&set).is_healthy());
    let (r, _) = run_check(&set, verify());
    assert_eq!(r.expect("check").result, CheckResult::Consistent);
    let i = info(&FsStorage, &set, &InfoOptions::default()).expect("info");
    assert_eq!(
        i.obj_header.expect("obj").layout.as_deref(),
        Some("interop")
    );

    // Damage a link with a valid checksum; both tools repair it to the same bytes.
    let part = dir.path().join("b");
    patch_hdr(&part, |h| h.next_part_uuid = RawUuid([0x44; 16]));
    let damaged = fs::read(&part).expect("read");
    let status = Command::new("pmempool")
        .args(["check", "-q", "-r", "-y", "-a"])
        .arg(&set)
        .status()
        .expect("run");
    assert!(status.success());
    let by_pmempool = fs::read(&part).expect("read");
    fs::write(&part, &damaged).expect("restore");
    let (r, _) = run_check(&set, repair(true, true, false));
    assert_eq!(r.expect("check").result, CheckResult::Repaired);
    assert_eq!(fs::read(&part).expect("read"), by_pmempool);
}
