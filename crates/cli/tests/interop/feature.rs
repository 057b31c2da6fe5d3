//! `poolsync feature` against `pmempool feature` 1.12.1 (docs/format.md
//! §24): the same queries on the same pools, the same exit codes, headers
//! byte for byte equal after every change, pools that `pmempool check`
//! calls consistent and libpmemobj opens afterwards, and the states an
//! interrupted change leaves, built by hand, finished by poolsync.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::{
    objclient, pmempool, pmempool_set, poolsync, read_header, s, temp_dir, verdict_line, write_at,
    Holder, Out, SetFiles, Shape, SET_1X3, SET_3R, SET_SHAPES, SET_SINGLEHDR,
};

const FEATURES: [&str; 4] = [
    "SINGLEHDR",
    "CKSUM_2K",
    "SHUTDOWN_STATE",
    "CHECK_BAD_BLOCKS",
];

/// A copy of `files` under `dir`: the same part file names, the set file
/// naming the copies. Headers hold no paths, so the copy is the same pool.
fn copy_set(files: &SetFiles, dir: &Path) -> SetFiles {
    let text = fs::read_to_string(&files.set).expect("read set");
    let from = files.set.parent().expect("set dir");
    let text = text.replace(s(from), s(dir));
    let set = dir.join(files.set.file_name().expect("set name"));
    fs::write(&set, text).expect("write set copy");
    let parts: Vec<Vec<PathBuf>> = files
        .parts
        .iter()
        .map(|r| {
            r.iter()
                .map(|p| {
                    let to = dir.join(p.file_name().expect("part name"));
                    fs::copy(p, &to).expect("copy part");
                    to
                })
                .collect()
        })
        .collect();
    SetFiles { set, parts }
}

/// Every part file's bytes (`None` when missing), in set order.
fn contents(files: &SetFiles) -> Vec<Option<Vec<u8>>> {
    files.all_parts().map(|p| fs::read(p).ok()).collect()
}

/// Runs `feature <args>` with both tools, each on its own copy, and
/// asserts the same exit code, the same stdout and the same header bytes
/// in every part file afterwards (libpmemobj opens only poolsync's copy,
/// which changes its data, not its headers).
fn both(theirs: &SetFiles, ours: &SetFiles, args: &[&str]) -> (Out, Out) {
    let run = |tool: fn(&[&str]) -> Out, files: &SetFiles| {
        let mut all = vec!["feature"];
        all.extend_from_slice(args);
        all.push(files.set_str());
        tool(&all)
    };
    let p = run(pmempool, theirs);
    let o = run(poolsync, ours);
    o.assert_no_crash();
    let what = format!("feature {}", args.join(" "));
    assert_eq!(
        o.code,
        p.code,
        "{what}: exit code\n{}\n{}",
        p.describe(),
        o.describe()
    );
    assert_eq!(
        o.stdout,
        p.stdout,
        "{what}: stdout\n{}\n{}",
        p.describe(),
        o.describe()
    );
    for (i, (x, y)) in theirs.all_parts().zip(ours.all_parts()).enumerate() {
        let (x, y) = (read_header(x), read_header(y));
        let first = x.iter().zip(&y).position(|(u, v)| u != v);
        assert!(
            first.is_none(),
            "{what}: header of part file #{i} differs at byte {first:?}"
        );
    }
    (p, o)
}

#[test]
fn queries_match_pmempool_on_every_shape() {
    require_pmdk!();
    let dir = temp_dir();
    let mut shapes: Vec<(String, SetFiles)> = SET_SHAPES
        .iter()
        .map(|shape| {
            (
                shape.name.to_string(),
                pmempool_set(dir.path(), shape.name, shape),
            )
        })
        .collect();
    let single = dir.path().join("single.pool");
    pmempool(&["create", "obj", "-s", "16M", s(&single)]).assert_success();
    shapes.push((
        "single".to_string(),
        SetFiles {
            set: single.clone(),
            parts: vec![vec![single]],
        },
    ));
    for (name, files) in &shapes {
        for feature in FEATURES {
            let args = ["feature", "-q", feature, files.set_str()];
            let (p, o) = (pmempool(&args), poolsync(&args));
            assert_eq!(
                (o.code, &o.stdout),
                (p.code, &p.stdout),
                "{name}: -q {feature}\n{}\n{}",
                p.describe(),
                o.describe()
            );
            assert!(
                matches!(o.stdout.as_str(), "0" | "1"),
                "no newline: {:?}",
                o.stdout
            );
        }
    }
}

#[test]
fn changes_are_pmempools_byte_for_byte() {
    require_pmdk!();
    for shape in [SET_3R, SET_SINGLEHDR, SET_1X3] {
        let dir = temp_dir();
        let (a, b) = (dir.path().join("pmempool"), dir.path().join("poolsync"));
        fs::create_dir_all(&a).expect("mkdir");
        fs::create_dir_all(&b).expect("mkdir");
        let theirs = pmempool_set(&a, "f", &shape);
        objclient(&["write", theirs.set_str(), "-", "feature data"]).assert_success();
        // A dirty shutdown state, as an application killed with the pool
        // open leaves it: disabling SHUTDOWN_STATE zeroes it.
        Holder::start(&["hold", theirs.set_str(), "-", "60"]).crash();
        let ours = copy_set(&theirs, &b);
        for args in [
            ["-d", "SHUTDOWN_STATE"],
            ["-d", "SHUTDOWN_STATE"],
            ["-d", "CKSUM_2K"],
            ["-e", "SHUTDOWN_STATE"],
            ["-e", "CKSUM_2K"],
            ["-e", "SHUTDOWN_STATE"],
            ["-d", "CHECK_BAD_BLOCKS"],
            ["-d", "CHECK_BAD_BLOCKS"],
            ["-e", "CHECK_BAD_BLOCKS"],
            ["-d", "CKSUM_2K"],
            ["-e", "SINGLEHDR"],
            ["-d", "SINGLEHDR"],
            ["-d", "SHUTDOWN_STATE"],
            ["-d", "CKSUM_2K"],
        ] {
            both(&theirs, &ours, &args);
            for feature in FEATURES {
                both(&theirs, &ours, &["-q", feature]);
            }
            let checked = pmempool(&["check", "-v", ours.set_str()]);
            assert_eq!(
                verdict_line(&checked.stdout, ours.set_str()).as_deref(),
                Some(format!("{}: consistent", ours.set_str()).as_str()),
                "{} after {args:?}\n{}",
                shape.name,
                checked.describe()
            );
            objclient(&["read", ours.set_str(), "-", "feature data"]).assert_success();
        }
    }
}

#[test]
fn names_and_operations_are_pmempools() {
    require_pmdk!();
    let dir = temp_dir();
    let files = pmempool_set(dir.path(), "n", &SET_1X3);
    for args in [
        &["-q", "CHECKSUM_2K"][..],
        &["-q", "cksum_2k"],
        &["-e", "SDS"],
        &["-e", "CKSUM_2K", "-q", "CKSUM_2K"],
        &[],
    ] {
        let mut all = vec!["feature"];
        all.extend_from_slice(args);
        all.push(files.set_str());
        let (p, o) = (pmempool(&all), poolsync(&all));
        o.assert_no_crash();
        assert_eq!(
            o.code,
            p.code,
            "{args:?}\n{}\n{}",
            p.describe(),
            o.describe()
        );
        assert_eq!(o.code, Some(1));
    }
    let o = poolsync(&["feature", "-q", "CHECKSUM_2K", files.set_str()]);
    assert!(o.stderr.contains("CKSUM_2K"), "{}", o.describe());
}

/// Runs `feature <args>` with both tools on copies of a pool of `shape`
/// that `damage` changed: poolsync must exit 1 with a message and write
/// nothing; the caller judges pmempool's outcome.
fn refused(shape: &Shape, args: &[&str], damage: impl Fn(&SetFiles)) -> (Out, Out) {
    let dir = temp_dir();
    let (a, b) = (dir.path().join("p"), dir.path().join("o"));
    fs::create_dir_all(&a).expect("mkdir");
    fs::create_dir_all(&b).expect("mkdir");
    let theirs = pmempool_set(&a, "r", shape);
    let ours = copy_set(&theirs, &b);
    damage(&theirs);
    damage(&ours);
    let before = contents(&ours);
    let mut all = vec!["feature"];
    all.extend_from_slice(args);
    let (p, o) = (
        pmempool(&[all.clone(), vec![theirs.set_str()]].concat()),
        poolsync(&[all, vec![ours.set_str()]].concat()),
    );
    o.assert_no_crash();
    assert_eq!(o.code, Some(1), "{}", o.describe());
    assert!(o.stderr.starts_with("error: "), "{}", o.describe());
    assert_eq!(contents(&ours), before, "poolsync wrote\n{}", o.describe());
    (p, o)
}

#[test]
fn refusals_exit_1_and_write_nothing() {
    require_pmdk!();
    // A missing part: pmempool aborts (docs/format.md §24.1).
    let (p, o) = refused(&SET_3R, &["-d", "CHECK_BAD_BLOCKS"], |f| {
        fs::remove_file(f.part(1, 1)).expect("rm part");
    });
    // pmempool 1.12.1 aborts (SIGABRT: no exit code) while cleaning up.
    assert!(matches!(p.code, None | Some(1)), "{}", p.describe());
    assert!(o.stderr.contains("replica 1 part 1"), "{}", o.describe());
    // Masks that disagree in two features.
    let (p, o) = refused(&SET_3R, &["-q", "CKSUM_2K"], |f| {
        let mut h = read_header(f.part(2, 0));
        h[16] = 0;
        h[12] = 0;
        crate::support::fix_header_checksum(&mut h);
        write_at(f.part(2, 0), 0, &h);
    });
    assert_eq!(p.code, Some(1), "{}", p.describe());
    assert!(
        o.stderr.contains("features mismatch detected"),
        "{}",
        o.describe()
    );
    // An unknown incompat bit.
    let (p, o) = refused(&SET_1X3, &["-e", "CKSUM_2K"], |f| {
        for part in f.all_parts() {
            let mut h = read_header(part);
            h[16] |= 0x10;
            crate::support::fix_header_checksum(&mut h);
            write_at(part, 0, &h);
        }
    });
    assert_eq!(p.code, Some(1), "{}", p.describe());
    assert!(
        o.stderr.contains("invalid features detected"),
        "{}",
        o.describe()
    );
    // Dependencies.
    let (p, o) = refused(&SET_1X3, &["-d", "CKSUM_2K"], |_| {});
    assert_eq!(p.code, Some(1));
    assert!(o
        .stderr
        .contains("disable SHUTDOWN_STATE prior to disabling CKSUM_2K"));
    // A damaged header: pmempool gives it a fresh checksum, poolsync refuses.
    let (p, o) = refused(&SET_1X3, &["-d", "CHECK_BAD_BLOCKS"], |f| {
        crate::support::flip_byte(f.part(0, 2), 200);
    });
    assert_eq!(p.code, Some(0), "{}", p.describe());
    assert!(
        o.stderr.contains("invalid checksum of pool header"),
        "{}",
        o.describe()
    );
    // Remote replicas.
    let (p, o) = refused(&SET_1X3, &["-q", "CKSUM_2K"], |f| {
        let mut text = fs::read_to_string(&f.set).expect("read set");
        text.push_str("REPLICA user@host remote.set\n");
        fs::write(&f.set, text).expect("write set");
    });
    assert_eq!(p.code, Some(1), "{}", p.describe());
    assert!(o.stderr.contains("remote replicas"), "{}", o.describe());
    // A pool in use.
    let dir = temp_dir();
    let files = pmempool_set(dir.path(), "u", &SET_1X3);
    let holder = Holder::start(&["hold", files.set_str(), "-", "60"]);
    let o = poolsync(&["feature", "-d", "CHECK_BAD_BLOCKS", files.set_str()]);
    assert_eq!(o.code, Some(1), "{}", o.describe());
    assert!(
        o.stderr.contains("in use by another process"),
        "{}",
        o.describe()
    );
    drop(holder);
}

/// The header bytes poolsync writes for a change, taken from a copy.
fn changed_headers(files: &SetFiles, args: &[&str]) -> Vec<Vec<u8>> {
    let dir = temp_dir();
    let copy = copy_set(files, dir.path());
    let mut all = vec!["feature"];
    all.extend_from_slice(args);
    all.push(copy.set_str());
    poolsync(&all).assert_success();
    copy.all_parts().map(|p| read_header(p)).collect()
}

#[test]
fn an_interrupted_change_is_named_everywhere_and_finished_by_a_rerun() {
    require_pmdk!();
    let dir = temp_dir();
    let files = pmempool_set(dir.path(), "i", &SET_3R);
    objclient(&["write", files.set_str(), "-", "kept"]).assert_success();
    let new = changed_headers(&files, &["-d", "SHUTDOWN_STATE"]);
    let parts: Vec<PathBuf> = files.all_parts().cloned().collect();
    // Mixed: replica 0 part 0 changed, part 1 torn (its first sector
    // changed, its checksum not), the rest as they were.
    write_at(&parts[0], 0, &new[0]);
    write_at(&parts[1], 0, &new[1][..512]);
    let set = files.set_str();
    let o = objclient(&["read", set, "-", "kept"]);
    assert_eq!(o.code, Some(1), "libpmemobj refuses\n{}", o.describe());
    let o = poolsync(&["feature", "-q", "SHUTDOWN_STATE", set]);
    assert_eq!(o.code, Some(1), "{}", o.describe());
    assert!(
        o.stderr.contains("poolsync feature -e SHUTDOWN_STATE"),
        "{}",
        o.describe()
    );
    let p = pmempool(&["feature", "-q", "SHUTDOWN_STATE", set]);
    assert_eq!(p.code, Some(1), "{}", p.describe());
    let o = poolsync(&["check", set]);
    assert_eq!(o.code, Some(1), "{}", o.describe());
    assert!(
        o.stderr.contains("SHUTDOWN_STATE was interrupted"),
        "{}",
        o.describe()
    );
    let o = poolsync(&["sync", set]);
    assert_eq!(o.code, Some(1), "{}", o.describe());
    assert!(
        o.stderr.contains("poolsync feature -d SHUTDOWN_STATE"),
        "{}",
        o.describe()
    );
    // The same change again finishes it.
    let o = poolsync(&["feature", "-v", "-d", "SHUTDOWN_STATE", set]);
    o.assert_success();
    assert!(
        o.stdout.contains("finishing an interrupted change"),
        "{}",
        o.describe()
    );
    for (part, header) in parts.iter().zip(&new) {
        assert_eq!(&read_header(part), header, "{}", part.display());
    }
    objclient(&["read", set, "-", "kept"]).assert_success();
    let checked = pmempool(&["check", "-v", set]);
    assert_eq!(
        verdict_line(&checked.stdout, set).as_deref(),
        Some(format!("{set}: consistent").as_str()),
        "{}",
        checked.describe()
    );
    pmempool(&["feature", "-q", "SHUTDOWN_STATE", set]).assert_success();
}
