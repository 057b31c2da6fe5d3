//! Issue item 3: on damaged pool sets `poolsync check` gives the same verdict
//! and exit code as `pmempool check` and names the damaged part, `poolsync
//! info` exits like `pmempool info`, and neither modifies anything.

use std::fs::{self, OpenOptions};

use crate::support::{
    assert_same_lines, assert_unchanged, fix_header_checksum, flip_byte, mentions_part, pmempool,
    pmempool_set, poolsync, read_header, snapshot, temp_dir, verdict_line, write_at, SetFiles, MIB,
    SET_DAMAGE,
};

/// What pmempool is expected to say about a damage (the test's premise: the
/// damage was effective, or invisible, as intended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Exit 0, "consistent" with -v.
    Consistent,
    /// Exit 1 with the "not consistent" verdict.
    NotConsistent,
    /// Exit 1 with an error and no verdict (the pool cannot be opened).
    Error,
}

/// Builds the damage-shape pool set with pmempool, damages it with `damage`
/// and compares both tools. `affected` is the damaged part (replica, part).
fn damage_case(damage: impl FnOnce(&SetFiles), expect: Expect, affected: (usize, usize)) {
    let dir = temp_dir();
    let files = pmempool_set(dir.path(), "damage", &SET_DAMAGE);
    damage(&files);
    let target = files.set_str();
    let before = snapshot(dir.path());

    for opts in [&[][..], &["-v"][..]] {
        let mut args = vec!["check"];
        args.extend_from_slice(opts);
        args.push(target);
        let theirs = pmempool(&args);
        let ours = poolsync(&args);
        ours.assert_no_crash();
        let their_verdict = verdict_line(&theirs.stdout, target);
        let premise = match expect {
            Expect::Consistent => {
                theirs.code == Some(0)
                    && (opts.is_empty()
                        || their_verdict.as_deref() == Some(&format!("{target}: consistent")))
            }
            Expect::NotConsistent => {
                theirs.code == Some(1)
                    && their_verdict.as_deref() == Some(&format!("{target}: not consistent"))
            }
            Expect::Error => theirs.code == Some(1) && their_verdict.is_none(),
        };
        assert!(
            premise,
            "test premise: pmempool should report {expect:?}\n{}",
            theirs.describe()
        );
        assert_eq!(
            ours.code,
            theirs.code,
            "exit code of `{}` differs\n{}\n{}",
            args.join(" "),
            theirs.describe(),
            ours.describe()
        );
        if their_verdict.is_some() {
            assert_eq!(
                verdict_line(&ours.stdout, target),
                their_verdict,
                "verdict of `{}` differs\n{}\n{}",
                args.join(" "),
                theirs.describe(),
                ours.describe()
            );
        }
        if expect != Expect::Consistent {
            let (r, p) = affected;
            assert!(
                mentions_part(&ours.combined(), &files, r, p),
                "`{}` does not name the damaged part (replica {r} part {p}, {})\n{}",
                args.join(" "),
                files.part(r, p).display(),
                ours.describe()
            );
        }
    }

    let theirs = pmempool(&["info", target]);
    let ours = poolsync(&["info", target]);
    ours.assert_no_crash();
    assert_eq!(
        ours.code,
        theirs.code,
        "exit code of `info` differs\n{}\n{}",
        theirs.describe(),
        ours.describe()
    );
    if theirs.code == Some(0) {
        assert_same_lines(
            &theirs.stdout,
            &ours.stdout,
            "info of a pool set with invisible damage",
        );
    }

    assert_unchanged(
        &before,
        &snapshot(dir.path()),
        "check/info without -r on a damaged pool set",
    );
}

#[test]
fn missing_part() {
    require_pmdk!();
    damage_case(
        |f| fs::remove_file(f.part(0, 1)).expect("remove part"),
        Expect::Error,
        (0, 1),
    );
}

#[test]
fn missing_part_of_replica() {
    require_pmdk!();
    damage_case(
        |f| fs::remove_file(f.part(1, 1)).expect("remove part"),
        Expect::Error,
        (1, 1),
    );
}

#[test]
fn truncated_part() {
    require_pmdk!();
    damage_case(
        |f| {
            let file = OpenOptions::new()
                .write(true)
                .open(f.part(0, 1))
                .expect("open part");
            file.set_len(4 * MIB).expect("truncate part");
        },
        Expect::Error,
        (0, 1),
    );
}

#[test]
fn extended_part() {
    require_pmdk!();
    damage_case(
        |f| {
            let file = OpenOptions::new()
                .write(true)
                .open(f.part(1, 0))
                .expect("open part");
            file.set_len(16 * MIB + 4096).expect("extend part");
        },
        Expect::Error,
        (1, 0),
    );
}

#[test]
fn header_byte_flipped_in_checksummed_area() {
    require_pmdk!();
    // Offset 1000 is in the zero padding covered by the 2K checksum.
    damage_case(
        |f| flip_byte(f.part(0, 1), 1000),
        Expect::NotConsistent,
        (0, 1),
    );
}

#[test]
fn header_byte_flipped_in_replica_master_part() {
    require_pmdk!();
    // The signature's first byte of replica 1's first part.
    damage_case(
        |f| flip_byte(f.part(1, 0), 0),
        Expect::NotConsistent,
        (1, 0),
    );
}

#[test]
fn header_byte_flipped_beyond_2k() {
    require_pmdk!();
    // CKSUM_2K: bytes from 2048 on are not checksummed, so this is invisible.
    damage_case(
        |f| flip_byte(f.part(0, 1), 3000),
        Expect::Consistent,
        (0, 1),
    );
}

#[test]
fn wrong_next_part_link_with_valid_checksum() {
    require_pmdk!();
    damage_case(
        |f| {
            // Point part 1's next_part_uuid (offset 72) back at part 0 – a
            // real UUID of the set, but the wrong one in a ring of 3 – and
            // make the checksum valid again.
            let part0_uuid = read_header(f.part(0, 0))[40..56].to_vec();
            let mut hdr = read_header(f.part(0, 1));
            assert_ne!(
                hdr[72..88],
                part0_uuid[..],
                "test premise: next of part 1 is part 2"
            );
            hdr[72..88].copy_from_slice(&part0_uuid);
            fix_header_checksum(&mut hdr);
            write_at(f.part(0, 1), 0, &hdr);
        },
        Expect::NotConsistent,
        (0, 1),
    );
}

/// Replaces part (r, p) with the same part of another pool set of the same shape.
fn swap_in_foreign_part(files: &SetFiles, r: usize, p: usize) {
    let dir = files.set.parent().expect("set dir");
    let other = pmempool_set(dir, "other", &SET_DAMAGE);
    fs::copy(other.part(r, p), files.part(r, p)).expect("copy foreign part");
    fs::remove_file(&other.set).expect("remove other set file");
    for part in other.all_parts() {
        fs::remove_file(part).expect("remove other part");
    }
}

#[test]
fn parts_from_two_pool_sets() {
    require_pmdk!();
    damage_case(
        |f| swap_in_foreign_part(f, 0, 1),
        Expect::NotConsistent,
        (0, 1),
    );
}

#[test]
fn replica_from_another_pool_set() {
    require_pmdk!();
    damage_case(
        |f| swap_in_foreign_part(f, 1, 0),
        Expect::NotConsistent,
        (1, 0),
    );
}
