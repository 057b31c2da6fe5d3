//! Issue item: `poolsync transform` against `pmempool transform` 1.12.1.
//!
//! For each allowed transform (adding and removing replicas, adding and
//! removing `OPTION SINGLEHDR`): the pool set is made by `pmempool create`,
//! libpmemobj stores a root object that spans several parts (`objclient
//! fill`), the directory is copied byte for byte, and `poolsync transform`
//! runs on one copy and `pmempool transform` on the other. Then `pmempool
//! check` must say consistent, libpmemobj must read the data through the
//! target set and through every replica alone (a copy of the set with the
//! replica list rotated so that it comes first), and the headers of both
//! copies must agree field by field: fresh UUIDs and crtime aside, and
//! links compared by the part they point to. For `SINGLEHDR` changes the
//! data of every part must also be laid out byte for byte as pmempool lays
//! it out. Every transform `pmempool` refuses, `poolsync` refuses with exit
//! 1 and changes nothing, except the reshapes poolsync does beyond
//! pmempool (splitting, merging and moving replicas onto their own files).
//! Staged transforms leave no temporary copy or journal, and a re-run of a
//! completed one changes nothing. `kill -9` loops check crash safety on
//! real files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::support::{
    assert_unchanged, file_names, flip_byte, le_u64, objclient, pmempool, poolsync, read_at,
    read_header, s, snapshot, temp_dir, verdict_line, MIB,
};

/// Seed of the root object's pattern.
const SEED: &str = "4170";

/// A pool set: replicas of (part name, MiB).
type Layout = &'static [&'static [(&'static str, u64)]];

/// A pool set file: its replicas, and whether it says `OPTION SINGLEHDR`.
#[derive(Debug, Clone, Copy)]
struct Spec<'a> {
    layout: &'a [&'a [(&'a str, u64)]],
    singlehdr: bool,
}

impl<'a> From<&'a [&'a [(&'a str, u64)]]> for Spec<'a> {
    fn from(layout: &'a [&'a [(&'a str, u64)]]) -> Self {
        Spec {
            layout,
            singlehdr: false,
        }
    }
}

/// `layout` with `OPTION SINGLEHDR`.
fn single(layout: Layout) -> Spec<'static> {
    Spec {
        layout,
        singlehdr: true,
    }
}

impl Spec<'_> {
    /// Whether part `p` of a replica starts with a pool header.
    fn has_header(&self, p: usize) -> bool {
        p == 0 || !self.singlehdr
    }

    /// The names of all parts, in set order.
    fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.layout
            .iter()
            .flat_map(|r| r.iter().map(|(name, _)| *name))
    }
}

fn set_text(dir: &Path, layout: &[&[(&str, u64)]]) -> String {
    spec_text(dir, layout.into())
}

fn spec_text(dir: &Path, spec: Spec<'_>) -> String {
    let mut text = String::from("PMEMPOOLSET\n");
    if spec.singlehdr {
        text.push_str("OPTION SINGLEHDR\n");
    }
    for (r, parts) in spec.layout.iter().enumerate() {
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
fn setup<'a>(
    dir: &Path,
    src: impl Into<Spec<'a>>,
    dst: impl Into<Spec<'a>>,
    nbytes: u64,
) -> (String, String) {
    let src_set = write(&dir.join("src.set"), &spec_text(dir, src.into()));
    let dst_set = write(&dir.join("dst.set"), &spec_text(dir, dst.into()));
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

/// The path of `name` in `dir`, as a string.
fn qs(dir: &Path, name: &str) -> String {
    s(&dir.join(name)).to_string()
}

/// libpmemobj reads the pattern through `set` and through each replica of
/// `spec` alone (rotated so that it comes first).
fn assert_readable<'a>(dir: &Path, set: &str, spec: impl Into<Spec<'a>>, nbytes: u64) {
    let spec = spec.into();
    let layout = spec.layout;
    let n = nbytes.to_string();
    objclient(&["verify", set, "tx", &n, SEED]).assert_success();
    for r in 0..layout.len() {
        let rotated: Vec<&[(&str, u64)]> = (0..layout.len())
            .map(|i| layout[(r + i) % layout.len()])
            .collect();
        let rotated = Spec {
            layout: &rotated,
            singlehdr: spec.singlehdr,
        };
        let path = write(&dir.join(format!("rot{r}.set")), &spec_text(dir, rotated));
        objclient(&["verify", &path, "tx", &n, SEED]).assert_success();
        fs::remove_file(&path).expect("remove rotated set");
    }
}

/// Header fields (docs/format.md §2): name, offset, length.
const FIELDS: &[(&str, usize, usize)] = &[
    ("signature", 0, 8),
    ("major", 8, 4),
    ("features", 12, 12),
    ("poolset_uuid", 24, 16),
    ("arch_flags", 128, 16),
    ("unused", 144, 4024 - 144),
    ("sds", 4024, 64),
];
/// Link fields: offset.
const LINKS: &[(&str, usize)] = &[
    ("prev_part_uuid", 56),
    ("next_part_uuid", 72),
    ("prev_repl_uuid", 88),
    ("next_repl_uuid", 104),
];

/// Header fields pmempool leaves as stale pool data in the new headers of
/// parts ≥ 1 when it removes `SINGLEHDR` (it writes the header over the
/// part's old first page without clearing it); poolsync zeroes them.
const STALE_IN_PMEMPOOL: &[&str] = &["unused", "sds"];

/// Compares the headers of the target sets in `a` and `b` field by field:
/// fixed fields byte for byte, links by the (replica, part) they name, UUIDs
/// of parts that both copies kept byte for byte. Only parts that carry a
/// header are compared (part 0 alone with `SINGLEHDR`). In the parts named
/// by `stale`, the fields of [`STALE_IN_PMEMPOOL`] are not compared; `a`'s
/// must be zero there.
fn compare_headers<'a>(
    a: &Path,
    b: &Path,
    spec: impl Into<Spec<'a>>,
    kept: &[&str],
    stale: &[&str],
) {
    let spec = spec.into();
    let with_header = || {
        spec.layout.iter().enumerate().flat_map(move |(r, parts)| {
            parts
                .iter()
                .enumerate()
                .filter(move |(p, _)| spec.has_header(*p))
                .map(move |(p, (name, _))| (r, p, *name))
        })
    };
    let who = |dir: &Path| {
        let mut map = BTreeMap::new();
        for (r, p, name) in with_header() {
            let h = read_header(&dir.join(name));
            let twin = map.insert(h[40..56].to_vec(), (r, p));
            assert!(
                twin.is_none(),
                "{}: uuid is not unique",
                dir.join(name).display()
            );
        }
        map
    };
    let (wa, wb) = (who(a), who(b));
    for (_, _, name) in with_header() {
        let (ha, hb) = (read_header(&a.join(name)), read_header(&b.join(name)));
        for (field, off, len) in FIELDS {
            if stale.contains(&name) && STALE_IN_PMEMPOOL.contains(field) {
                assert!(
                    ha[*off..off + len].iter().all(|&x| x == 0),
                    "{name}: {field} is not zero"
                );
                continue;
            }
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
        if kept.contains(&name) {
            assert_eq!(ha[40..56], hb[40..56], "{name}: uuid changed");
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

    pmempool(&["transform", &qs(&q, "src.set"), &qs(&q, "dst.set")]).assert_success();
    compare_headers(&p, &q, dst, kept, &[]);
    // Removed parts are gone in both copies.
    assert_eq!(file_names(&p), file_names(&q), "files left");
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
    let theirs = pmempool(&["transform", &qs(&q, "src.set"), &qs(&q, "dst.set")]);
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
/// kill the old set file opens the source with its data, or not, and the
/// re-run alone completes the transform: no kill needs a manual step.
#[test]
fn kill_9_while_adding_a_replica() {
    require_pmdk!();
    let dir = temp_dir();
    let d = dir.path();
    let src: Layout = &[&[("a0", 64)]];
    let dst: Layout = &[&[("a0", 64)], &[("b0", 32), ("b1", 34)]];
    let nbytes = 40 * MIB;
    let (src_set, dst_set) = setup(d, src, dst, nbytes);
    // One whole run spreads the kills over its length.
    let started = Instant::now();
    poolsync(&["transform", &src_set, &dst_set]).assert_success();
    let whole = started.elapsed();
    let bin = env!("CARGO_BIN_EXE_poolsync");
    // A sample for CI; `cargo xtask soak --only transform` runs the long loop.
    let rounds = 24;
    let mut finished = 0;
    for i in 0..rounds {
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
        // Denser early, where the parts are created: whole × ((i + ½) / rounds)².
        let t = (f64::from(i) + 0.5) / f64::from(rounds);
        std::thread::sleep(whole.mul_f64(t * t));
        if matches!(child.try_wait(), Ok(Some(_))) {
            finished += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let n = nbytes.to_string();
        let source_ok = objclient(&["verify", &src_set, "tx", &n, SEED]).code == Some(0);
        let rerun = poolsync(&["transform", &src_set, &dst_set]);
        assert_eq!(
            rerun.code,
            Some(0),
            "kill {i} (source readable after it: {source_ok}): the re-run failed: {}",
            rerun.describe()
        );
        let check = pmempool(&["check", "-v", &dst_set]);
        assert!(
            check.stdout.contains("consistent"),
            "kill {i}: {}",
            check.describe()
        );
        objclient(&["verify", &dst_set, "tx", &n, SEED]).assert_success();
    }
    eprintln!(
        "{rounds} kills over {whole:?} ({finished} came after the run had finished); no re-run needed a manual step"
    );
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
    // Two replicas that disagree decide no identity: neither file is
    // provably the pool's, so both are kept (README, rm --verify-owner).
    assert!(
        out.stderr.contains("do not agree on a pool set uuid"),
        "{}",
        out.describe()
    );
    assert!(d.join("a0").exists(), "a tie proves nothing: a0 is kept");
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

// Staged transforms (engine `transform/staging.rs`): SINGLEHDR changes, and
// reshapes of replicas onto their own files.

/// What the journal's name adds to the source pool set file's.
const JOURNAL_SUFFIX: &str = ".poolsync-journal";
/// What the temporary copy's name adds to the source master part 0's.
const TEMP_SUFFIX: &str = ".poolsync-tmp";
/// The pool header page, which starts the replicated address space.
const PAGE: u64 = 4096;
/// Bytes compared at a time.
const CHUNK: u64 = 4 * MIB;

/// `pmempool check -v` says `set` is consistent.
#[track_caller]
fn assert_consistent(set: &str, context: &str) {
    let check = pmempool(&["check", "-v", set]);
    assert_eq!(
        verdict_line(&check.stdout, set).as_deref(),
        Some(format!("{set}: consistent").as_str()),
        "{context}: {}",
        check.describe()
    );
}

/// Neither a temporary copy nor the journal of `src_set` is left in `dir`.
#[track_caller]
fn assert_no_leftovers(dir: &Path, src_set: &str, context: &str) {
    let journal = format!("{src_set}{JOURNAL_SUFFIX}");
    assert!(
        !Path::new(&journal).exists(),
        "{context}: the journal {journal} is left"
    );
    let temps: Vec<String> = file_names(dir)
        .into_iter()
        .filter(|n| n.ends_with(TEMP_SUFFIX))
        .collect();
    assert!(
        temps.is_empty(),
        "{context}: temporary copies left: {temps:?}"
    );
}

/// Runs a transform that poolsync stages, of `src_set` into `dst_set` (both
/// in `dir`, target `dst`): a dry run first, which changes nothing and names
/// a temporary copy iff `temp`; then the transform. Afterwards `pmempool
/// check` says consistent and `dir` holds the two set files and the
/// target's parts only: no temporary copy, no journal, no old part that no
/// replica uses. (The caller checks the data with libpmemobj, after any
/// byte comparison: opening the pool changes it.)
fn staged(dir: &Path, src_set: &str, dst_set: &str, dst: Spec<'_>, temp: bool) {
    staged_with(dir, &[], src_set, dst_set, dst, temp);
}

/// [`staged`] with `options` (such as `--force`) before the pool set files.
fn staged_with(
    dir: &Path,
    options: &[&str],
    src_set: &str,
    dst_set: &str,
    dst: Spec<'_>,
    temp: bool,
) {
    let before = snapshot(dir);
    let mut args = vec!["transform", "-d"];
    args.extend(options);
    args.extend([src_set, dst_set]);
    let dry = poolsync(&args);
    dry.assert_success();
    assert_unchanged(&before, &snapshot(dir), &dry.cmdline);
    assert_eq!(
        dry.stdout.contains("temporary copy:"),
        temp,
        "a temporary copy is {}expected\n{}",
        if temp { "" } else { "not " },
        dry.describe()
    );
    args.remove(1);
    let out = poolsync(&args);
    out.assert_success();
    assert_consistent(dst_set, &out.cmdline);
    assert_no_leftovers(dir, src_set, &out.cmdline);
    let mut expected: BTreeSet<String> = dst.names().map(str::to_string).collect();
    expected.extend(["src.set".to_string(), "dst.set".to_string()]);
    assert_eq!(
        file_names(dir),
        expected.into_iter().collect::<Vec<_>>(),
        "files after {}",
        out.cmdline
    );
}

/// `heap_offset + heap_size` (docs/format.md §7), read from the master's part 0.
fn pool_size(part0: &Path) -> u64 {
    le_u64(&read_at(part0, 0x1410, 8), 0) + le_u64(&read_at(part0, 0x1820, 8), 0)
}

/// The part, the file offset and the bytes left in that part at logical
/// offset `l` of `replica` (docs/format.md §15.1: parts ≥ 1 begin after their
/// header page unless `singlehdr`).
fn locate(replica: &[(&str, u64)], singlehdr: bool, l: u64) -> Option<(usize, u64, u64)> {
    let mut start = 0;
    for (p, (_, mib)) in replica.iter().enumerate() {
        let skip = if p == 0 || singlehdr { 0 } else { PAGE };
        let len = mib * MIB - skip;
        if l < start + len {
            return Some((p, skip + l - start, start + len - l));
        }
        start += len;
    }
    None
}

/// `len` bytes at logical offset `l` of `replica`, whose parts are in `dir`.
fn read_logical(dir: &Path, replica: &[(&str, u64)], singlehdr: bool, l: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while (out.len() as u64) < len {
        let at = l + out.len() as u64;
        let (p, off, left) = locate(replica, singlehdr, at)
            .unwrap_or_else(|| panic!("logical {at:#x} is beyond the replica"));
        let n = (len - out.len() as u64).min(left);
        out.extend(read_at(&dir.join(replica[p].0), off, n as usize));
    }
    out
}

/// The replicated range `[4096, size)` in chunks: (logical offset, length).
fn chunks(size: u64) -> impl Iterator<Item = (u64, u64)> {
    (PAGE..size)
        .step_by(CHUNK as usize)
        .map(move |l| (l, (size - l).min(CHUNK)))
}

/// For each replica of the pool set `spec` in `dir`, the logical offsets in
/// `[4096, size)` where it differs from replica 0, with replica 0's byte
/// there (the volatile area, and heap bytes libpmemobj wrote to the master
/// only; docs/format.md §15.2).
fn master_differences(dir: &Path, spec: Spec<'_>, size: u64) -> Vec<BTreeMap<u64, u8>> {
    let master = spec.layout[0];
    spec.layout
        .iter()
        .map(|replica| {
            let mut diffs = BTreeMap::new();
            for (l, len) in chunks(size) {
                let m = read_logical(dir, master, spec.singlehdr, l, len);
                let here = read_logical(dir, replica, spec.singlehdr, l, len);
                for (i, (a, b)) in m.iter().zip(&here).enumerate() {
                    if a != b {
                        diffs.insert(l + i as u64, *a);
                    }
                }
            }
            diffs
        })
        .collect()
}

/// poolsync's copy `p` and pmempool's copy `q` of the target `spec` hold
/// the same bytes in the replicated range `[4096, size)` of every part,
/// each read where docs/format.md §15.1 puts it. The only exception is where
/// the source replica differed from the master (`diffs`, from
/// [`master_differences`]): pmempool moves each replica's own bytes while
/// poolsync rebuilds every replica from the master, so there `p` must hold the
/// master's byte.
fn assert_same_data(p: &Path, q: &Path, spec: Spec<'_>, size: u64, diffs: &[BTreeMap<u64, u8>]) {
    for (r, replica) in spec.layout.iter().enumerate() {
        for (l, len) in chunks(size) {
            let ours = read_logical(p, replica, spec.singlehdr, l, len);
            let theirs = read_logical(q, replica, spec.singlehdr, l, len);
            if ours == theirs {
                continue;
            }
            for (i, (o, t)) in ours.iter().zip(&theirs).enumerate() {
                let at = l + i as u64;
                let master = diffs[r].get(&at);
                if o == t || master == Some(o) {
                    continue;
                }
                let (part, off, _) = locate(replica, spec.singlehdr, at).expect("located above");
                panic!(
                    "replica {r} logical {at:#x} ({} file offset {off:#x}): poolsync has {o:#04x}, pmempool {t:#04x}{}",
                    replica[part].0,
                    master.map_or(String::new(), |m| format!(", the source master {m:#04x}"))
                );
            }
        }
    }
}

/// A `SINGLEHDR` change, both ways: poolsync on `dir/p` (which must stage
/// the data in a temporary copy: no replica stays as it is), pmempool on
/// `dir/q`. Both keep each replica's part-0 UUID; poolsync's headers equal
/// pmempool's field by field (fresh UUIDs of parts ≥ 1 and crtime aside),
/// and each part's data is where pmempool puts it.
fn singlehdr_change(src: Spec<'static>, dst: Spec<'static>) {
    let dir = temp_dir();
    let (p, q) = (dir.path().join("p"), dir.path().join("q"));
    fs::create_dir(&p).expect("p");
    fs::create_dir(&q).expect("q");
    let nbytes = 20 * MIB;
    let (src_set, dst_set) = setup(&p, src, dst, nbytes);
    copy_dir(&p, &q);
    let part0: Vec<&str> = dst.layout.iter().map(|r| r[0].0).collect();
    let uuids: Vec<Vec<u8>> = part0
        .iter()
        .map(|name| read_header(&p.join(name))[40..56].to_vec())
        .collect();
    let size = pool_size(&p.join(part0[0]));
    let diffs = master_differences(&p, src, size);

    // A part without a header of its own is rewritten only when its bytes
    // equal another replica's, but for the few bytes of heap bookkeeping
    // libpmemobj writes to the master only (docs/format.md §15.2), which
    // the proof tolerates: a pool libpmemobj used passes it, no --force.
    let planned = poolsync(&["transform", "-d", &src_set, &dst_set]);
    planned.assert_success();
    let force: &[&str] = &[];
    staged_with(&p, force, &src_set, &dst_set, dst, true);
    pmempool(&["transform", &qs(&q, "src.set"), &qs(&q, "dst.set")]).assert_success();
    // Removing SINGLEHDR, pmempool writes the new headers of parts ≥ 1 over
    // the pool data that was there, and leaves it in the unused bytes.
    let stale: Vec<&str> = if src.singlehdr {
        dst.layout
            .iter()
            .flat_map(|r| r.iter().skip(1).map(|(name, _)| *name))
            .collect()
    } else {
        Vec::new()
    };
    compare_headers(&p, &q, dst, &part0, &stale);
    for (name, uuid) in part0.iter().zip(&uuids) {
        assert_eq!(
            read_header(&p.join(name))[40..56],
            uuid[..],
            "{name}: part 0 keeps its uuid"
        );
    }
    assert_same_data(&p, &q, dst, size, &diffs);
    assert_eq!(file_names(&p), file_names(&q), "files left");
    assert_readable(&p, &dst_set, dst, nbytes);
}

/// Replica 0 of three parts, replica 1 of two.
const THREE_TWO: Layout = &[
    &[("a0", 16), ("a1", 8), ("a2", 8)],
    &[("b0", 20), ("b1", 12)],
];

#[test]
fn add_singlehdr_to_two_replicas() {
    require_pmdk!();
    singlehdr_change(THREE_TWO.into(), single(THREE_TWO));
}

/// The single-part replica 2 is the smallest: every multi-part replica
/// loses a header page per part without SINGLEHDR, and a pool as large as
/// its smallest multi-part replica would not fit any more.
const THREE_TWO_ONE: Layout = &[
    &[("a0", 16), ("a1", 8), ("a2", 9)],
    &[("b0", 20), ("b1", 13)],
    &[("c0", 32)],
];

#[test]
fn remove_singlehdr_from_three_replicas() {
    require_pmdk!();
    singlehdr_change(single(THREE_TWO_ONE), THREE_TWO_ONE.into());
}

#[test]
fn add_singlehdr_to_one_replica() {
    require_pmdk!();
    const ONE: Layout = &[&[("a0", 16), ("a1", 8), ("a2", 8)]];
    singlehdr_change(ONE.into(), single(ONE));
}

/// Beyond pmempool (which refuses, a test premise): a reshape onto the
/// replica's own files, staged; `temp` tells whether it needs the
/// temporary copy (no replica stays as it is).
fn beyond_pmempool(src: Layout, dst: Layout, nbytes: u64, temp: bool) {
    let dir = temp_dir();
    let d = dir.path();
    let (src_set, dst_set) = setup(d, src, dst, nbytes);
    let before = snapshot(d);
    let theirs = pmempool(&["transform", &src_set, &dst_set]);
    assert_eq!(theirs.code, Some(1), "test premise: {}", theirs.describe());
    assert_unchanged(&before, &snapshot(d), &theirs.cmdline);
    staged(d, &src_set, &dst_set, dst.into(), temp);
    assert_readable(d, &dst_set, dst, nbytes);
}

#[test]
fn split_a_part_reusing_its_file() {
    require_pmdk!();
    beyond_pmempool(
        &[&[("a0", 32)], &[("b0", 32)]],
        &[&[("a0", 16), ("a1", 17)], &[("b0", 32)]],
        20 * MIB,
        false,
    );
}

#[test]
fn merge_the_parts_of_the_only_replica() {
    require_pmdk!();
    beyond_pmempool(
        &[&[("a0", 16), ("a1", 16)]],
        &[&[("a0", 33)]],
        20 * MIB,
        true,
    );
}

#[test]
fn move_every_replica_to_new_files() {
    require_pmdk!();
    // The source stays intact until its files are deleted, so it is read
    // directly: nothing is staged.
    beyond_pmempool(
        &[&[("a0", 16)], &[("b0", 16)]],
        &[&[("c0", 16)], &[("d0", 16)]],
        8 * MIB,
        false,
    );
}

/// After a staged transform completed, running it again exits 0 and
/// changes nothing, whatever the shape.
#[test]
fn rerunning_a_completed_staged_transform_changes_nothing() {
    require_pmdk!();
    const ADD: Layout = &[&[("a0", 8), ("a1", 8)], &[("b0", 16)]];
    const REMOVE: Layout = &[&[("a0", 8), ("a1", 9)], &[("b0", 16)]];
    const TWO16: Layout = &[&[("a0", 16)], &[("b0", 16)]];
    const SPLIT: Layout = &[&[("a0", 8), ("a1", 9)], &[("b0", 16)]];
    const PARTS: Layout = &[&[("a0", 8), ("a1", 8)]];
    const MERGED: Layout = &[&[("a0", 16)]];
    const MOVED: Layout = &[&[("c0", 16)], &[("d0", 16)]];
    let cases: [(&str, Spec<'static>, Spec<'static>); 5] = [
        ("add SINGLEHDR", ADD.into(), single(ADD)),
        ("remove SINGLEHDR", single(REMOVE), REMOVE.into()),
        ("split", TWO16.into(), SPLIT.into()),
        ("merge", PARTS.into(), MERGED.into()),
        ("move", TWO16.into(), MOVED.into()),
    ];
    let mut failures = Vec::new();
    for (what, src, dst) in cases {
        let dir = temp_dir();
        let d = dir.path();
        let (src_set, dst_set) = setup(d, src, dst, MIB);
        poolsync(&["transform", &src_set, &dst_set]).assert_success();
        let before = snapshot(d);
        let again = poolsync(&["transform", &src_set, &dst_set]);
        if again.code != Some(0) {
            failures.push(format!("{what}:\n{}", again.describe()));
            continue;
        }
        assert_unchanged(&before, &snapshot(d), &format!("{what}: {}", again.cmdline));
    }
    assert!(
        failures.is_empty(),
        "re-runs that did not exit 0:\n{}",
        failures.join("\n")
    );
}

/// `kill -9` at spread-out moments of a SINGLEHDR add on one replica (the
/// temporary copy path), then a re-run: it alone completes the transform
/// (no kill needs a manual step), and part 0 keeps its UUID as in a run
/// that was not killed. Each round starts from the source, restored by the
/// reverse transform.
#[test]
fn kill_9_while_adding_singlehdr() {
    require_pmdk!();
    const PARTS: Layout = &[&[("a0", 32), ("a1", 32)]];
    let dir = temp_dir();
    let d = dir.path();
    let nbytes = 40 * MIB;
    let n = nbytes.to_string();
    let (src_set, dst_set) = setup(d, PARTS, single(PARTS), nbytes);
    let names = file_names(d);
    // One whole run spreads the kills over its length.
    let started = Instant::now();
    poolsync(&["transform", &src_set, &dst_set]).assert_success();
    let whole = started.elapsed();
    let bin = env!("CARGO_BIN_EXE_poolsync");
    // A sample for CI; `cargo xtask soak --only transform-singlehdr` runs the long loop.
    let rounds = 16;
    let mut renamed = Vec::new();
    for i in 0..rounds {
        poolsync(&["transform", &dst_set, &src_set]).assert_success();
        let uuid = read_header(&d.join("a0"))[40..56].to_vec();
        let mut child = Command::new(bin)
            .args(["transform", &src_set, &dst_set])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let delay = whole * (2 * i + 1) / (2 * rounds);
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        let source_ok = objclient(&["verify", &src_set, "tx", &n, SEED]).code == Some(0);
        let rerun = poolsync(&["transform", &src_set, &dst_set]);
        eprintln!(
            "kill {i} after {delay:?} of {whole:?}: source readable {source_ok}, re-run exit {:?}",
            rerun.code
        );
        assert_eq!(
            rerun.code,
            Some(0),
            "kill {i} after {delay:?}: the re-run failed (source readable: {source_ok}): {}",
            rerun.describe()
        );
        let context = format!("kill {i} (source readable after it: {source_ok})");
        assert_consistent(&dst_set, &context);
        objclient(&["verify", &dst_set, "tx", &n, SEED]).assert_success();
        assert_no_leftovers(d, &src_set, &context);
        assert_eq!(file_names(d), names, "{context}: files");
        if read_header(&d.join("a0"))[40..56] != uuid[..] {
            renamed.push(format!("{context}, re-run exit {:?}", rerun.code));
        }
    }
    // Checked last, so that every round's crash safety is checked first.
    assert!(
        renamed.is_empty(),
        "part 0 must keep its uuid, as it does without a kill; it got a new one after:\n{}",
        renamed.join("\n")
    );
}

/// A tmpfs mounted on a directory for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts one of `mib` MiB on `dir`; `None` when that is not allowed
    /// (it needs CAP_SYS_ADMIN: root, outside a container).
    fn mount(dir: &Path, mib: u64) -> Option<Tmpfs> {
        let size = format!("size={mib}m");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs", s(dir)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        matches!(status, Ok(s) if s.success()).then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut cmd = Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            matches!(cmd.arg(&self.0).status(), Ok(s) if s.success())
        };
        if !umount(false) {
            umount(true);
        }
    }
}

/// Free bytes of the file system holding `dir` (`stat -f`).
fn free_bytes(dir: &Path) -> Option<u64> {
    let out = Command::new("stat")
        .args(["-f", "-c", "%a %S", s(dir)])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut words = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    Some(words.next()?? * words.next()??)
}

/// A SINGLEHDR add needs room for the temporary copy (the pool's size) on
/// the file system of the master's part 0; without it the plan refuses
/// before anything is written. The file system is a small tmpfs: mounted
/// for the test when allowed, else `/dev/shm` when it is small (64 MiB in a
/// container); skipped when neither is possible.
#[test]
fn refuses_to_start_without_space_for_the_temporary_copy() {
    require_pmdk!();
    let outer = temp_dir();
    let mnt = outer.path().join("mnt");
    fs::create_dir(&mnt).expect("mnt");
    let mounted = Tmpfs::mount(&mnt, 48);
    let shm;
    let d: &Path = if mounted.is_some() {
        &mnt
    } else {
        let small = free_bytes(Path::new("/dev/shm"))
            .is_some_and(|free| (24 * MIB..=256 * MIB).contains(&free));
        if !small {
            crate::support::log_skip(
                "transform::refuses_to_start_without_space_for_the_temporary_copy",
                "no small file system: mounting a tmpfs is not allowed and /dev/shm is not 24..256 MiB free",
            );
            return;
        }
        shm = tempfile::Builder::new()
            .prefix("poolsync-interop-")
            .tempdir_in("/dev/shm")
            .expect("temp dir in /dev/shm");
        shm.path()
    };
    let free = free_bytes(d).expect("free space");
    // Two parts take 60% of the room: they fit, a copy of them does not.
    let mib = free * 3 / 10 / MIB;
    let parts = [("a0", mib), ("a1", mib)];
    let layout: &[&[(&str, u64)]] = &[&parts];
    let dst = Spec {
        layout,
        singlehdr: true,
    };
    let (src_set, dst_set) = setup(d, layout, dst, MIB);
    let size = pool_size(&d.join("a0"));
    let before = snapshot(d);
    let out = poolsync(&["transform", &src_set, &dst_set]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    let needed = out
        .stderr
        .split(" bytes needed")
        .next()
        .and_then(|t| t.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        out.stderr.contains("not enough free space") && needed.is_some_and(|n| n >= size),
        "a refusal counting the {size}-byte temporary copy expected\n{}",
        out.describe()
    );
    assert_unchanged(&before, &snapshot(d), &out.cmdline);
    objclient(&["verify", &src_set, "tx", &MIB.to_string(), SEED]).assert_success();
}
