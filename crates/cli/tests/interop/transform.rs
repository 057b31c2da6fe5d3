//! Issue item: `poolsync transform` against `pmempool transform` 1.12.1.
//!
//! For each allowed transform (adding and removing replicas): the pool set
//! is made by `pmempool create`, libpmemobj stores a root object that spans
//! several parts (`objclient fill`), the directory is copied byte for byte,
//! and `poolsync transform` runs on one copy and `pmempool transform` on
//! the other. Then `pmempool check` must say consistent, libpmemobj must
//! read the data through the target set and through every replica alone
//! (a copy of the set with the replica list rotated so that it comes
//! first), and the headers of both copies must agree field by field: fresh
//! UUIDs and crtime aside, and links compared by the part they point to.
//! Every transform `pmempool` refuses, `poolsync` refuses with exit 1 and
//! changes nothing. A `kill -9` loop checks crash safety on real files.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{
    assert_unchanged, flip_byte, objclient, pmempool, poolsync, read_header, s, snapshot, temp_dir,
    MIB,
};

/// Seed of the root object's pattern.
const SEED: &str = "4170";

/// A pool set: replicas of (part name, MiB).
type Layout = &'static [&'static [(&'static str, u64)]];

fn set_text(dir: &Path, layout: &[&[(&str, u64)]]) -> String {
    let mut text = String::from("PMEMPOOLSET\n");
    for (r, parts) in layout.iter().enumerate() {
        if r > 0 {
            text.push_str("REPLICA\n");
        }
        for (name, mib) in *parts {
            text.push_str(&format!("{mib}M {}\n", s(&dir.join(name))));
        }
    }
    text
}

fn write(path: &Path, text: &str) -> String {
    fs::write(path, text).expect("write set file");
    s(path).to_string()
}

/// Creates the source with `pmempool create` and fills a root object of
/// `nbytes` bytes; returns the source and target set paths.
fn setup(dir: &Path, src: Layout, dst: Layout, nbytes: u64) -> (String, String) {
    let src_set = write(&dir.join("src.set"), &set_text(dir, src));
    let dst_set = write(&dir.join("dst.set"), &set_text(dir, dst));
    pmempool(&["create", "obj", "--layout", "tx", &src_set]).assert_success();
    objclient(&["fill", &src_set, "tx", &nbytes.to_string(), SEED]).assert_success();
    (src_set, dst_set)
}

/// Copies every file of `from` into the empty directory `to`, set files
/// rewritten for the new directory.
fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).expect("read dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name");
        if name.to_string_lossy().ends_with(".set") {
            let text = fs::read_to_string(&path).expect("set");
            fs::write(to.join(name), text.replace(s(from), s(to))).expect("set copy");
        } else {
            fs::copy(&path, to.join(name)).expect("copy part");
        }
    }
}

/// libpmemobj reads the pattern through `set` and through each replica of
/// `layout` alone (rotated so that it comes first).
fn assert_readable(dir: &Path, set: &str, layout: &[&[(&str, u64)]], nbytes: u64) {
    let n = nbytes.to_string();
    objclient(&["verify", set, "tx", &n, SEED]).assert_success();
    for r in 0..layout.len() {
        let rotated: Vec<&[(&str, u64)]> = (0..layout.len())
            .map(|i| layout[(r + i) % layout.len()])
            .collect();
        let path = write(&dir.join(format!("rot{r}.set")), &set_text(dir, &rotated));
        objclient(&["verify", &path, "tx", &n, SEED]).assert_success();
        fs::remove_file(&path).expect("remove rotated set");
    }
}

/// Header fields (spec 2.1): name, offset, length.
const FIELDS: &[(&str, usize, usize)] = &[
    ("signature", 0, 8),
    ("major", 8, 4),
    ("features", 12, 12),
    ("poolset_uuid", 24, 16),
    ("arch_flags", 128, 24),
    ("unused", 152, 4024 - 152),
    ("sds", 4024, 64),
];
/// Link fields: offset.
const LINKS: &[(&str, usize)] = &[
    ("prev_part_uuid", 56),
    ("next_part_uuid", 72),
    ("prev_repl_uuid", 88),
    ("next_repl_uuid", 104),
];

/// Compares the headers of the target sets in `a` and `b` field by field:
/// fixed fields byte for byte, links by the (replica, part) they name, UUIDs
/// of parts that both copies kept byte for byte.
fn compare_headers(a: &Path, b: &Path, layout: &[&[(&str, u64)]], kept: &[&str]) {
    let who = |dir: &Path| {
        let mut map = std::collections::BTreeMap::new();
        for (r, parts) in layout.iter().enumerate() {
            for (p, (name, _)) in parts.iter().enumerate() {
                let h = read_header(&dir.join(name));
                map.insert(h[40..56].to_vec(), (r, p));
            }
        }
        map
    };
    let (wa, wb) = (who(a), who(b));
    for parts in layout {
        for (name, _) in *parts {
            let (ha, hb) = (read_header(&a.join(name)), read_header(&b.join(name)));
            for (field, off, len) in FIELDS {
                assert_eq!(
                    ha[*off..off + len],
                    hb[*off..off + len],
                    "{name}: {field} differs from pmempool's"
                );
            }
            for (field, off) in LINKS {
                let la = wa.get(&ha[*off..off + 16]);
                let lb = wb.get(&hb[*off..off + 16]);
                assert!(la.is_some(), "{name}: {field} names no part");
                assert_eq!(la, lb, "{name}: {field} links elsewhere than pmempool's");
            }
            if kept.contains(name) {
                assert_eq!(ha[40..56], hb[40..56], "{name}: uuid changed");
            }
        }
    }
}

/// One allowed transform, both ways: poolsync on `dir/p`, pmempool on `dir/q`.
fn allowed(src: Layout, dst: Layout, kept: &[&str]) {
    let dir = temp_dir();
    let (p, q) = (dir.path().join("p"), dir.path().join("q"));
    fs::create_dir(&p).expect("p");
    fs::create_dir(&q).expect("q");
    let nbytes = 20 * MIB;
    let (src_set, dst_set) = setup(&p, src, dst, nbytes);
    copy_dir(&p, &q);

    let dry = poolsync(&["transform", "-d", &src_set, &dst_set]);
    dry.assert_success();
    assert!(dry.stdout.contains("total:"), "{}", dry.describe());
    let out = poolsync(&["transform", "-v", &src_set, &dst_set]);
    out.assert_success();
    assert_eq!(
        out.stdout.lines().last(),
        Some(format!("{src_set} -> {dst_set}: transformed").as_str()),
        "{}",
        out.describe()
    );
    let check = pmempool(&["check", "-v", &dst_set]);
    check.assert_success();
    assert!(check.stdout.contains("consistent"), "{}", check.describe());
    assert_readable(&p, &dst_set, dst, nbytes);

    let qs = |name: &str| s(&q.join(name)).to_string();
    pmempool(&["transform", &qs("src.set"), &qs("dst.set")]).assert_success();
    compare_headers(&p, &q, dst, kept);
    // Removed parts are gone in both copies, kept ones have the same data.
    let names = |d: &Path| {
        let mut v: Vec<String> = fs::read_dir(d)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&p), names(&q), "files left");
}

#[test]
fn add_a_replica_of_two_parts() {
    require_pmdk!();
    allowed(
        &[&[("a0", 16), ("a1", 16)]],
        &[&[("a0", 16), ("a1", 16)], &[("b0", 20), ("b1", 12)]],
        &["a0", "a1"],
    );
}

#[test]
fn add_two_replicas_around_existing_ones() {
    require_pmdk!();
    allowed(
        &[&[("a0", 32)], &[("b0", 16), ("b1", 16)]],
        &[
            &[("n0", 40)],
            &[("a0", 32)],
            &[("b0", 16), ("b1", 16)],
            &[("m0", 32)],
        ],
        &["a0", "b0", "b1"],
    );
}

#[test]
fn remove_the_master_replica() {
    require_pmdk!();
    allowed(
        &[&[("a0", 16), ("a1", 16)], &[("b0", 32)], &[("c0", 32)]],
        &[&[("b0", 32)], &[("c0", 32)]],
        &["b0", "c0"],
    );
}

#[test]
fn remove_all_but_one_replica() {
    require_pmdk!();
    allowed(
        &[&[("a0", 32)], &[("b0", 16), ("b1", 16)], &[("c0", 32)]],
        &[&[("b0", 16), ("b1", 16)]],
        &["b0", "b1"],
    );
}

/// Beyond pmempool: one call replaces replica 0 (one part) by a replica
/// of two parts with new files; pmempool refuses this.
#[test]
fn reshape_a_replica_in_one_call() {
    require_pmdk!();
    let dir = temp_dir();
    let d = dir.path();
    let src: Layout = &[&[("a0", 32)], &[("b0", 32)]];
    let dst: Layout = &[&[("n0", 20), ("n1", 14)], &[("b0", 32)]];
    let nbytes = 20 * MIB;
    let (src_set, dst_set) = setup(d, src, dst, nbytes);
    let q = d.join("q");
    fs::create_dir(&q).expect("q");
    for name in ["a0", "b0"] {
        fs::copy(d.join(name), q.join(name)).expect("copy");
    }
    let qsrc = write(&q.join("src.set"), &set_text(&q, src));
    let qdst = write(&q.join("dst.set"), &set_text(&q, dst));
    let theirs = pmempool(&["transform", &qsrc, &qdst]);
    assert_eq!(theirs.code, Some(1), "test premise: {}", theirs.describe());

    let dry = poolsync(&["transform", "-d", &src_set, &dst_set]);
    dry.assert_success();
    assert!(dry.stdout.contains("reshape"), "{}", dry.describe());
    poolsync(&["transform", &src_set, &dst_set]).assert_success();
    let check = pmempool(&["check", "-v", &dst_set]);
    assert!(check.stdout.contains("consistent"), "{}", check.describe());
    assert_readable(d, &dst_set, dst, nbytes);
    assert!(
        !d.join("a0").exists(),
        "the replaced replica's file is deleted"
    );
}

/// A transform pmempool refuses: poolsync refuses too (exit 1, an error
/// line naming both sets and `expect`), and nothing changes.
fn refused(src: Layout, dst: Layout, damage: impl Fn(&Path), extra: &[&str], expect: &str) {
    let dir = temp_dir();
    let p = dir.path().join("p");
    let q = dir.path().join("q");
    fs::create_dir(&p).expect("p");
    fs::create_dir(&q).expect("q");
    let (src_set, dst_set) = setup(&p, src, dst, MIB);
    for name in extra {
        fs::write(p.join(name), vec![0x5a; 8 << 20]).expect("extra file");
    }
    damage(&p);
    copy_dir(&p, &q);
    let qs = |name: &str| s(&q.join(name)).to_string();
    let theirs = pmempool(&["transform", &qs("src.set"), &qs("dst.set")]);
    assert_eq!(theirs.code, Some(1), "test premise: {}", theirs.describe());

    let before = snapshot(&p);
    let ours = poolsync(&["transform", &src_set, &dst_set]);
    assert_eq!(ours.code, Some(1), "{}", ours.describe());
    let line = ours.stderr.lines().next().unwrap_or_default();
    assert!(
        line.starts_with(&format!(
            "error: failed to transform {src_set} -> {dst_set}: "
        )),
        "{}",
        ours.describe()
    );
    assert!(line.contains(expect), "{}", ours.describe());
    assert_unchanged(&before, &snapshot(&p), &ours.cmdline);
}

const TWO: Layout = &[&[("a0", 16)], &[("b0", 16)]];

#[test]
fn refusals_match_pmempool_and_change_nothing() {
    require_pmdk!();
    let none = |_: &Path| {};
    refused(TWO, TWO, none, &[], "both poolsets are equal");
    refused(
        TWO,
        &[&[("a0", 16)], &[("b0", 16)], &[("c0", 9)]],
        none,
        &[],
        "too small",
    );
    refused(
        TWO,
        &[&[("a0", 16)], &[("b0", 16)], &[("c0", 8), ("c0", 8)]],
        none,
        &[],
        "same file",
    );
    refused(
        TWO,
        &[&[("a0", 16)], &[("b0", 16)], &[("c0", 16)]],
        none,
        &["c0"],
        "some parts being added already exist",
    );
    refused(
        TWO,
        &[&[("a0", 16)], &[("b0", 16)], &[("c0", 16)]],
        |d: &Path| flip_byte(&d.join("b0"), 50),
        &[],
        "source poolset is broken",
    );
}

/// `kill -9` at spread-out moments of an add, then a re-run: after every
/// kill either the old set file opens the source with its data, or the
/// re-run completes the transform.
#[test]
fn kill_9_while_adding_a_replica() {
    require_pmdk!();
    let dir = temp_dir();
    let d = dir.path();
    let src: Layout = &[&[("a0", 64)]];
    let dst: Layout = &[&[("a0", 64)], &[("b0", 32), ("b1", 34)]];
    let nbytes = 40 * MIB;
    let (src_set, dst_set) = setup(d, src, dst, nbytes);
    let bin = env!("CARGO_BIN_EXE_poolsync");
    for i in 0..24u64 {
        // Back to the source alone: remove what a finished run added.
        if poolsync(&["check", &dst_set]).code == Some(0) && d.join("b1").exists() {
            poolsync(&["transform", &dst_set, &src_set]).assert_success();
        }
        let mut child = Command::new(bin)
            .args(["transform", &src_set, &dst_set])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(2 + i * i * 3));
        let _ = child.kill();
        let _ = child.wait();
        let n = nbytes.to_string();
        let source_ok = objclient(&["verify", &src_set, "tx", &n, SEED]).code == Some(0);
        let rerun = poolsync(&["transform", &src_set, &dst_set]);
        if rerun.code != Some(0) {
            // The only refusal allowed: a file that the killed run created
            // but had not yet marked, with the command that clears it.
            assert!(
                source_ok && rerun.stderr.contains("rm "),
                "kill {i}: neither the source nor a re-run: {}",
                rerun.describe()
            );
            let path = rerun
                .stderr
                .split("(`rm ")
                .nth(1)
                .and_then(|t| t.split('`').next())
                .expect("an rm command");
            fs::remove_file(path).expect("rm as told");
            poolsync(&["transform", &src_set, &dst_set]).assert_success();
        }
        let check = pmempool(&["check", "-v", &dst_set]);
        assert!(
            check.stdout.contains("consistent"),
            "kill {i}: {}",
            check.describe()
        );
        objclient(&["verify", &dst_set, "tx", &n, SEED]).assert_success();
    }
}

/// `rm --verify-owner` deletes only the parts that carry the pool set's
/// uuid; a part swapped in from another pool is kept, named, and exit 1.
#[test]
fn rm_verify_owner_keeps_files_of_another_pool() {
    let dir = temp_dir();
    let d = dir.path();
    let set = write(&d.join("x.set"), &set_text(d, TWO));
    let other = write(&d.join("o.set"), &set_text(d, &[&[("o0", 16)]]));
    poolsync(&["create", "obj", &set]).assert_success();
    poolsync(&["create", "obj", &other]).assert_success();
    fs::copy(d.join("o0"), d.join("b0")).expect("swap in a foreign part");
    let out = poolsync(&["rm", "--verify-owner", "-l", &set]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains(s(&d.join("b0"))) && out.stderr.contains("carries pool set uuid"),
        "{}",
        out.describe()
    );
    assert!(!d.join("a0").exists(), "the owned part is removed");
    assert!(d.join("b0").exists(), "the foreign part is kept");
    assert!(
        d.join("x.set").exists(),
        "the set file is kept while a part is"
    );
    poolsync(&["rm", "--verify-owner", &other]).assert_success();
    assert!(!d.join("o0").exists());
}

/// A new replica larger than the file system's free space is refused
/// before anything is created.
#[test]
fn refuses_to_start_without_space_for_the_new_parts() {
    let dir = temp_dir();
    let d = dir.path();
    let src = write(&d.join("src.set"), &set_text(d, &[&[("a0", 16)]]));
    // 64 TiB: more than any test machine has free.
    let dst = write(
        &d.join("dst.set"),
        &set_text(d, &[&[("a0", 16)], &[("b0", 64 << 20)]]),
    );
    poolsync(&["create", "obj", &src]).assert_success();
    let before = snapshot(d);
    let out = poolsync(&["transform", &src, &dst]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("not enough free space"),
        "{}",
        out.describe()
    );
    assert_unchanged(&before, &snapshot(d), &out.cmdline);
}
