//! Issue item: `poolsync sync` repairs every damage `pmempool sync` repairs
//! (docs/format.md §17), leaving what `pmempool` would leave: the same headers
//! field by field (UUIDs that PMDK generates afresh excepted), the source's
//! data in every rebuilt part, the same modes, and pool sets that `pmempool
//! check`/`sync` and libpmemobj accept replica by replica (and the reverse:
//! what `pmempool sync` leaves, `poolsync` accepts). The hard errors fail like
//! `pmempool` (exit 1) with a message naming the replica or part, and change
//! nothing; a dry run prints its plan and changes nothing either.
//!
//! Every case builds its pool set with `pmempool create`, stores a root object
//! that spans more than one part through libpmemobj (`objclient fill`),
//! damages it and runs `pmempool sync` and `poolsync sync` on two byte copies
//! with the same layout under different root directories. Lines marked "test
//! premise" check the real `pmempool` against the expectations.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::support::{
    assert_unchanged, fix_header_checksum, fletcher64_ref, flip_byte, header_skip, le_u64,
    objclient, pmempool, poolsync, read_at, read_header, s, temp_dir, write_at, write_set,
    FileState, Out, SetFiles, Shape, HDR_CSUM, MIB, SET_3R, SET_SINGLEHDR,
};

/// Seed of the root object's pattern (objclient `fill`/`verify`).
const SEED: &str = "20231";

/// 2 replicas × 2 parts; replica 1 is 2 MiB larger than the pool, so it has
/// bytes beyond the pool size.
const SET_2X2: Shape = Shape {
    name: "2x2",
    replicas: &[&[8, 8], &[10, 8]],
    singlehdr: false,
};

/// Size of the header page; also the start of the replicated range.
const PAGE: u64 = 4096;
/// libpmemobj's volatile area inside the pool descriptor: per replica, never
/// replicated, so neither compared nor required to be copied
/// (docs/format.md §7, §15.2).
const VOLATILE: std::ops::Range<u64> = 0x1A20..0x2000;
/// Descriptor offsets of heap_offset and heap_size (docs/format.md §7).
const DESC_HEAP_OFFSET: usize = 0x1410;
const DESC_HEAP_SIZE: usize = 0x1820;
/// Header field offsets (docs/format.md §2).
const HDR_UUID: usize = 40;

/// Modes given to part 0 of each replica before the damage, so that the mode of
/// a recreated part shows which replica it was copied from (pmempool gives
/// recreated parts the mode of the source replica's part 0,
/// docs/format.md §17.5, step 9).
const PART0_MODES: [u32; 3] = [0o640, 0o600, 0o644];

/// Marker written just beyond the pool size of larger replicas: it must stay
/// untouched (or be zeroed where the part is recreated).
const TAIL_MARKER: u8 = 0xA5;

// ---------------------------------------------------------------------------
// Pool set geometry (docs/format.md §14.1, §15.1)

/// Where one part's bytes sit in its replica's logical address space.
#[derive(Debug, Clone, Copy)]
struct PartRange {
    /// File offset of the first mapped byte (0 for part 0 or headerless parts).
    file_off: u64,
    /// Logical offset of that byte.
    logical: u64,
    /// Mapped length.
    len: u64,
}

/// The logical map of replica `r` (sizes in the shapes are whole MiB, so the
/// usable size of a part is its configured size).
fn part_ranges(shape: &Shape, r: usize) -> Vec<PartRange> {
    let h = if shape.singlehdr { 0 } else { PAGE };
    let mut next = 0;
    shape.replicas[r]
        .iter()
        .enumerate()
        .map(|(p, mib)| {
            let size = mib * MIB;
            let range = if p == 0 {
                PartRange {
                    file_off: 0,
                    logical: 0,
                    len: size,
                }
            } else {
                PartRange {
                    file_off: h,
                    logical: next,
                    len: size - h,
                }
            };
            next = range.logical + range.len;
            range
        })
        .collect()
}

/// Net size of replica `r`.
fn replica_size(shape: &Shape, r: usize) -> u64 {
    part_ranges(shape, r)
        .iter()
        .map(|range| range.len)
        .sum::<u64>()
}

/// First file offset of part `p` that is not header (the header page of a
/// header-carrying part is compared field by field instead).
fn data_start(shape: &Shape, r: usize, p: usize) -> u64 {
    if p < shape.nhdrs(r) {
        PAGE
    } else {
        0
    }
}

// ---------------------------------------------------------------------------
// Pool sets in directories

/// Set file text for `shape` with the replicas in `order`, part paths from `path`.
pub(crate) fn set_text(
    shape: &Shape,
    order: &[usize],
    path: impl Fn(usize, usize) -> PathBuf,
) -> String {
    let mut text = String::from("PMEMPOOLSET\n");
    if shape.singlehdr {
        text.push_str("OPTION SINGLEHDR\n");
    }
    for (i, &r) in order.iter().enumerate() {
        if i > 0 {
            text.push_str("REPLICA\n");
        }
        for (p, mib) in shape.replicas[r].iter().enumerate() {
            text.push_str(&format!("{mib}M {}\n", s(&path(r, p))));
        }
    }
    text
}

/// Copies the pool set into `dst` (created), with the same file names, and
/// writes its set file there. Missing parts stay missing; modes are copied.
pub(crate) fn copy_set(src: &SetFiles, shape: &Shape, dst: &Path) -> SetFiles {
    fs::create_dir(dst).unwrap_or_else(|e| panic!("create {}: {e}", dst.display()));
    let files = write_set(dst, "pool", shape);
    for (from, to) in src.all_parts().zip(files.all_parts()) {
        if from.exists() {
            fs::copy(from, to)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
        }
    }
    files
}

/// A pool set made by `pmempool create`, holding a pattern root object that
/// spans more than one part in every multi-part replica.
#[derive(Debug)]
struct Pool {
    dir: TempDir,
    shape: &'static Shape,
    /// The pool set under `<dir>/base`.
    files: SetFiles,
    /// Length of the root object's pattern.
    nbytes: u64,
    /// heap_offset + heap_size: the range sync copies.
    pool_size: u64,
    /// Every UUID the headers held before the damage (pool set UUID included).
    pristine_uuids: BTreeSet<[u8; 16]>,
}

impl Pool {
    /// Creates, fills, sets the part-0 modes and writes the tail markers.
    fn new(shape: &'static Shape) -> Pool {
        let dir = temp_dir();
        let base = dir.path().join("base");
        fs::create_dir(&base).expect("create base dir");
        let files = write_set(&base, "pool", shape);
        pmempool(&["create", "obj", files.set_str()]).assert_success();

        // The root object starts about 3.6 MiB into the pool (after the
        // descriptor, lanes and the first zone's chunk headers); make it end
        // 1 MiB beyond the largest part 0 of the multi-part replicas so it
        // crosses the first part boundary of each of them.
        let largest_part0 = shape
            .replicas
            .iter()
            .filter(|parts| parts.len() > 1)
            .map(|parts| parts[0])
            .max()
            .unwrap_or(4);
        let nbytes = (largest_part0 + 1) * MIB - 3 * MIB - MIB / 2;
        let fill = objclient(&["fill", files.set_str(), "-", &nbytes.to_string(), SEED]);
        fill.assert_success();
        let data_off: u64 = fill
            .stdout
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("objclient fill output\n{}", fill.describe()));
        for (r, parts) in shape.replicas.iter().enumerate() {
            if parts.len() > 1 {
                let boundary = part_ranges(shape, r)[1].logical;
                assert!(
                    data_off < boundary && boundary < data_off + nbytes,
                    "test premise: the root object [{data_off}, +{nbytes}) crosses part 0's end \
                     ({boundary}) in replica {r}"
                );
            }
        }

        let desc = read_at(files.part(0, 0), 0, 0x2000);
        let pool_size = le_u64(&desc, DESC_HEAP_OFFSET) + le_u64(&desc, DESC_HEAP_SIZE);
        assert!(
            pool_size
                <= (0..shape.replicas.len())
                    .map(|r| replica_size(shape, r))
                    .min()
                    .unwrap_or(0),
            "test premise: the pool fits every replica"
        );

        for (r, mode) in PART0_MODES.iter().enumerate().take(shape.replicas.len()) {
            fs::set_permissions(files.part(r, 0), fs::Permissions::from_mode(*mode))
                .expect("chmod part 0");
            if replica_size(shape, r) > pool_size {
                write_logical(&files, shape, r, pool_size, &[TAIL_MARKER; 4096]);
            }
        }

        let mut uuids = BTreeSet::new();
        for (r, parts) in files.parts.iter().enumerate() {
            for part in parts.iter().take(shape.nhdrs(r)) {
                let hdr = read_header(part);
                for off in (24..120).step_by(16) {
                    uuids.insert(hdr[off..off + 16].try_into().expect("16 bytes"));
                }
            }
        }
        Pool {
            dir,
            shape,
            files,
            nbytes,
            pool_size,
            pristine_uuids: uuids,
        }
    }

    /// A byte copy of the (possibly damaged) base set under `<dir>/<name>`.
    fn copy(&self, name: &str) -> SetFiles {
        copy_set(&self.files, self.shape, &self.dir.path().join(name))
    }
}

/// Every file under a directory: size, mode and mtime, and the content
/// itself (`support::snapshot` hashes the content instead; comparing it whole
/// is much faster in the debug test build and locates a difference).
struct Snap {
    meta: BTreeMap<PathBuf, FileState>,
    content: BTreeMap<PathBuf, Option<Vec<u8>>>,
}

impl Snap {
    fn take(dir: &Path) -> Snap {
        fn walk(root: &Path, dir: &Path, snap: &mut Snap) {
            for entry in fs::read_dir(dir).expect("read dir") {
                let path = entry.expect("dir entry").path();
                let meta = fs::symlink_metadata(&path).expect("stat");
                if meta.is_dir() {
                    walk(root, &path, snap);
                    continue;
                }
                let rel = path.strip_prefix(root).expect("under root").to_path_buf();
                let state = FileState {
                    len: meta.len(),
                    hash: None,
                    mtime: meta.modified().expect("mtime"),
                    mode: meta.permissions().mode(),
                };
                snap.meta.insert(rel.clone(), state);
                snap.content.insert(rel, fs::read(&path).ok());
            }
        }
        let mut snap = Snap {
            meta: BTreeMap::new(),
            content: BTreeMap::new(),
        };
        walk(dir, dir, &mut snap);
        snap
    }

    /// Asserts that no file under `dir` appeared, vanished or changed
    /// (content, size, mode, mtime) since the snapshot.
    #[track_caller]
    fn assert_unchanged(&self, dir: &Path, context: &str) {
        let now = Snap::take(dir);
        assert_unchanged(&self.meta, &now.meta, context);
        for (path, bytes) in &self.content {
            let after = now.content.get(path).and_then(Option::as_ref);
            if after != bytes.as_ref() {
                let at = match (bytes, after) {
                    (Some(b), Some(a)) => b.iter().zip(a).position(|(x, y)| x != y),
                    _ => None,
                };
                panic!(
                    "{context}: pre-existing file {} was modified (first difference at byte {at:?})",
                    path.display()
                );
            }
        }
    }
}

/// The directory holding a copy's set file and parts.
fn set_dir(files: &SetFiles) -> &Path {
    files.set.parent().expect("set file has a directory")
}

/// Writes `bytes` at logical offset `at` of replica `r` (within one part).
pub(crate) fn write_logical(files: &SetFiles, shape: &Shape, r: usize, at: u64, bytes: &[u8]) {
    let range = part_ranges(shape, r)
        .into_iter()
        .enumerate()
        .find(|(_, range)| (range.logical..range.logical + range.len).contains(&at));
    let Some((p, range)) = range else {
        panic!("logical offset {at} is outside replica {r}");
    };
    assert!(at + bytes.len() as u64 <= range.logical + range.len);
    write_at(files.part(r, p), range.file_off + at - range.logical, bytes);
}

// ---------------------------------------------------------------------------
// Damage (docs/format.md §17.2, the health check)

/// One damage that `pmempool sync` repairs.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Part file (replica, part) deleted.
    Deleted(usize, usize),
    /// Part file truncated to half its size.
    Truncated(usize, usize),
    /// Part file enlarged by 1 MiB.
    Enlarged(usize, usize),
    /// A byte of the header's zero padding flipped (covered by the 2K checksum).
    HeaderFlipped(usize, usize),
    /// Part 0's shutdown state says dirty with a non-zero unsafe-shutdown
    /// count and a valid SDS checksum: on a machine that reports no count,
    /// the stored and current states differ while dirty, an ADR failure.
    AdrFailure(usize),
    /// A byte of the replica's obj descriptor (logical [4096, 6144)) flipped.
    DescriptorFlipped(usize),
    /// Every part of the replica deleted.
    ReplicaGone(usize),
}

impl Damage {
    fn apply(self, files: &SetFiles, shape: &Shape) {
        match self {
            Damage::Deleted(r, p) => fs::remove_file(files.part(r, p)).expect("delete part"),
            Damage::Truncated(r, p) => {
                let len = shape.replicas[r][p] * MIB / 2;
                set_len(files.part(r, p), len);
            }
            Damage::Enlarged(r, p) => {
                let len = shape.replicas[r][p] * MIB + MIB;
                set_len(files.part(r, p), len);
            }
            Damage::HeaderFlipped(r, p) => {
                assert!(p < shape.nhdrs(r), "part {p} of replica {r} has no header");
                flip_byte(files.part(r, p), 1000);
            }
            Damage::AdrFailure(r) => {
                let part = files.part(r, 0);
                let mut sds = read_at(part, 4024, 64);
                assert!(
                    sds.iter().all(|&b| b == 0),
                    "test premise: a clean SDS on a regular file is all zero"
                );
                sds[0] = 5; // usc
                sds[16] = 1; // dirty
                let sum = fletcher64_ref(&sds, 56, None);
                sds[56..64].copy_from_slice(&sum.to_le_bytes());
                write_at(part, 4024, &sds);
            }
            Damage::DescriptorFlipped(r) => flip_byte(files.part(r, 0), 0x1000 + 100),
            Damage::ReplicaGone(r) => {
                for part in &files.parts[r] {
                    fs::remove_file(part).expect("delete part");
                }
            }
        }
    }

    /// The replica the damage hits.
    fn replica(self) -> usize {
        match self {
            Damage::Deleted(r, _)
            | Damage::Truncated(r, _)
            | Damage::Enlarged(r, _)
            | Damage::HeaderFlipped(r, _)
            | Damage::AdrFailure(r)
            | Damage::DescriptorFlipped(r)
            | Damage::ReplicaGone(r) => r,
        }
    }

    /// The part a plan or message should name.
    fn part(self) -> (usize, usize) {
        match self {
            Damage::Deleted(r, p)
            | Damage::Truncated(r, p)
            | Damage::Enlarged(r, p)
            | Damage::HeaderFlipped(r, p) => (r, p),
            Damage::AdrFailure(r) | Damage::DescriptorFlipped(r) | Damage::ReplicaGone(r) => (r, 0),
        }
    }

    /// The source sync must use: the lowest-index replica the damage left healthy.
    fn source(self) -> usize {
        usize::from(self.replica() == 0)
    }

    /// The parts whose data sync rebuilds from the source
    /// (docs/format.md §17.2): a part that is missing or has the wrong size is
    /// broken; with SDS on, a broken part 0 of that kind breaks its whole
    /// replica (the SDS cannot be read); a bad header breaks only its part; an
    /// ADR failure or a bad descriptor breaks the whole replica.
    fn rebuilt(self, shape: &Shape) -> Vec<(usize, usize)> {
        let whole = |r: usize| (0..shape.replicas[r].len()).map(move |p| (r, p)).collect();
        match self {
            Damage::Deleted(r, 0) | Damage::Truncated(r, 0) | Damage::Enlarged(r, 0) => whole(r),
            Damage::Deleted(r, p)
            | Damage::Truncated(r, p)
            | Damage::Enlarged(r, p)
            | Damage::HeaderFlipped(r, p) => vec![(r, p)],
            Damage::AdrFailure(r) | Damage::DescriptorFlipped(r) | Damage::ReplicaGone(r) => {
                whole(r)
            }
        }
    }
}

fn set_len(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .unwrap_or_else(|e| panic!("resize {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------
// Checks

/// Whether `text` names replica `r` ("replica 1", not "replica 10") or one of
/// its part files.
fn mentions_replica(text: &str, files: &SetFiles, r: usize) -> bool {
    let needle = format!("replica {r}");
    let by_number = text
        .match_indices(&needle)
        .any(|(i, _)| !text[i + needle.len()..].starts_with(|c: char| c.is_ascii_digit()));
    by_number || files.parts[r].iter().any(|p| text.contains(s(p)))
}

/// Whether `text` names part `p` of replica `r` by path or as "replica R part P".
fn mentions_part(text: &str, files: &SetFiles, r: usize, p: usize) -> bool {
    text.contains(s(files.part(r, p))) || text.contains(&format!("replica {r} part {p}"))
}

#[track_caller]
fn assert_synchronized(out: &Out, set: &SetFiles, what: &str) {
    assert_eq!(
        out.code,
        Some(0),
        "{what}: expected success\n{}",
        out.describe()
    );
    let line = format!("{}: synchronized", set.set_str());
    assert!(
        out.stdout.lines().any(|l| l.trim_end() == line),
        "{what}: no `{line}` line on stdout\n{}",
        out.describe()
    );
}

#[track_caller]
fn assert_consistent(tool: fn(&[&str]) -> Out, set: &SetFiles, what: &str) {
    let out = tool(&["check", "-v", set.set_str()]);
    let line = format!("{}: consistent", set.set_str());
    assert!(
        out.code == Some(0) && out.stdout.lines().any(|l| l.trim_end() == line),
        "{what}: check does not find the pool set consistent\n{}",
        out.describe()
    );
}

/// `tool sync -v` has nothing to do: it succeeds and no file changes (content,
/// size, mode, mtime).
fn assert_nothing_to_do(tool: fn(&[&str]) -> Out, files: &SetFiles, what: &str) {
    let dir = set_dir(files);
    let before = Snap::take(dir);
    let out = tool(&["sync", "-v", files.set_str()]);
    out.assert_no_crash();
    assert_synchronized(&out, files, what);
    before.assert_unchanged(dir, what);
}

/// Every replica, read alone through libpmemobj, holds the root pattern. A
/// replica is read alone by opening a copy whose set file lists the replicas
/// rotated so that it comes first (libpmemobj reads only the first replica;
/// a one-replica set would fail with "wrong replica UUID").
fn assert_every_replica_readable(pool: &Pool, files: &SetFiles, what: &str) {
    let n = pool.shape.replicas.len();
    for k in 0..n {
        let dst = pool.dir.path().join(format!("read-{k}"));
        let copy = copy_set(files, pool.shape, &dst);
        let order: Vec<usize> = (0..n).map(|i| (k + i) % n).collect();
        fs::write(
            &copy.set,
            set_text(pool.shape, &order, |r, p| copy.part(r, p).to_path_buf()),
        )
        .expect("write rotated set file");
        let out = objclient(&[
            "verify",
            copy.set_str(),
            "-",
            &pool.nbytes.to_string(),
            SEED,
        ]);
        assert_eq!(
            out.code,
            Some(0),
            "{what}: replica {k} read alone does not hold the root object's pattern\n{}",
            out.describe()
        );
        fs::remove_dir_all(&dst).expect("remove rotated copy");
    }
}

/// All part files of a pool set (`None` for a missing one).
struct SetImage {
    parts: Vec<Vec<Option<Vec<u8>>>>,
}

impl SetImage {
    fn read(files: &SetFiles) -> SetImage {
        let parts = files
            .parts
            .iter()
            .map(|replica| replica.iter().map(|p| fs::read(p).ok()).collect())
            .collect();
        SetImage { parts }
    }

    /// The logical bytes [0, replica size) of replica `r`, which must be intact.
    fn logical(&self, shape: &Shape, r: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for (p, range) in part_ranges(shape, r).iter().enumerate() {
            let bytes = self.parts[r][p]
                .as_ref()
                .unwrap_or_else(|| panic!("source replica {r} lacks part {p}"));
            let from = range.file_off as usize;
            out.extend_from_slice(&bytes[from..from + range.len as usize]);
        }
        out
    }
}

/// First logical offset in `range` where `got` and `want` differ, skipping
/// the volatile area; `got` and `want` hold the bytes of `range` (slices are
/// compared whole first: a byte loop is slow in the debug test build).
fn first_difference(range: std::ops::Range<u64>, got: &[u8], want: &[u8]) -> Option<u64> {
    let pieces = [
        range.start..range.end.min(VOLATILE.start).max(range.start),
        range.start.max(VOLATILE.end).min(range.end)..range.end,
    ];
    pieces
        .into_iter()
        .filter(|piece| !piece.is_empty())
        .find_map(|piece| {
            let at = |x: u64| (x - range.start) as usize;
            let (g, w) = (
                &got[at(piece.start)..at(piece.end)],
                &want[at(piece.start)..at(piece.end)],
            );
            if g == w {
                return None;
            }
            g.iter()
                .zip(w)
                .position(|(a, b)| a != b)
                .map(|i| piece.start + i as u64)
        })
}

/// The data sync leaves (docs/format.md §17.5, step 7). A rebuilt part holds the
/// source's bytes over its share of [4096, pool size) (volatile area
/// excepted) and, beyond the pool size, zeros or its old bytes. A part of an
/// undamaged replica is byte-identical to before. A part that pmempool leaves
/// alone in the damaged replica is either byte-identical to before (as
/// pmempool leaves it) or holds the source's bytes like a rebuilt part (block
/// repair may converge the whole replica), never a mix. Returns the problems.
fn data_problems(
    pool: &Pool,
    damage: Damage,
    source: usize,
    input: &SetImage,
    output: &SetImage,
) -> Vec<String> {
    let shape = pool.shape;
    let src = input.logical(shape, source);
    let rebuilt = damage.rebuilt(shape);
    let mut problems = Vec::new();
    for (r, sizes) in shape.replicas.iter().enumerate() {
        for (p, range) in part_ranges(shape, r).into_iter().enumerate() {
            let size = sizes[p] * MIB;
            let Some(out) = output.parts[r][p].as_ref() else {
                problems.push(format!("replica {r} part {p}: missing after sync"));
                continue;
            };
            if out.len() as u64 != size {
                problems.push(format!(
                    "replica {r} part {p}: {} bytes after sync, configured {size}",
                    out.len()
                ));
                continue;
            }
            let old = input.parts[r][p]
                .as_ref()
                .filter(|b| b.len() as u64 == size);
            let start = data_start(shape, r, p) as usize;
            let unchanged = old.is_some_and(|old| old[start..] == out[start..]);
            let from_source = source_problems(pool, &src, source, (r, p), range, old, out);
            if rebuilt.contains(&(r, p)) {
                problems.extend(from_source);
            } else if unchanged || (r == damage.replica() && from_source.is_empty()) {
                // Left alone, or (damaged replica only) converged to the source.
            } else if let Some(old) = old {
                let at = (start..out.len())
                    .find(|&i| old[i] != out[i])
                    .unwrap_or(start);
                problems.push(format!(
                    "replica {r} part {p} (not broken): file offset {at:#x} changed{}",
                    if r == damage.replica() {
                        format!(
                            ", and the part does not hold the source's data either: {}",
                            from_source.join("; ")
                        )
                    } else {
                        String::new()
                    }
                ));
            } else {
                problems.push(format!(
                    "replica {r} part {p}: expected intact, but it was damaged"
                ));
            }
        }
    }
    problems
}

/// Why part `(r, p)` (bytes `out`, before sync `old`) does not hold the
/// source's data: its share of [4096, pool size) must equal the source
/// replica's (volatile area excepted) and its bytes beyond the pool size
/// must be zero or unchanged.
fn source_problems(
    pool: &Pool,
    src: &[u8],
    source: usize,
    (r, p): (usize, usize),
    range: PartRange,
    old: Option<&Vec<u8>>,
    out: &[u8],
) -> Vec<String> {
    let mut problems = Vec::new();
    // File offset of logical offset `x` of this part.
    let file_at = |x: u64| (range.file_off + x - range.logical) as usize;
    let end = (range.logical + range.len).min(pool.pool_size);
    let start = range.logical.max(PAGE).min(end);
    let got = &out[file_at(start)..file_at(end)];
    let want = &src[start as usize..end as usize];
    if let Some(x) = first_difference(start..end, got, want) {
        problems.push(format!(
            "replica {r} part {p}: logical offset {x:#x} differs from source replica {source}"
        ));
    }
    let tail = range.logical.max(pool.pool_size)..range.logical + range.len;
    if !tail.is_empty() {
        let got = &out[file_at(tail.start)..file_at(tail.end)];
        let unchanged = old.is_some_and(|o| o[file_at(tail.start)..file_at(tail.end)] == *got);
        if !unchanged && got.iter().any(|&b| b != 0) {
            problems.push(format!(
                "replica {r} part {p}: logical range [{:#x}, {:#x}) beyond the pool size is \
                 neither zero nor its old bytes",
                tail.start, tail.end
            ));
        }
    }
    problems
}

/// Header fields compared one by one (crtime and the checksum excepted; the
/// checksum is checked for validity instead).
const FIELDS: [(&str, std::ops::Range<usize>); 13] = [
    ("signature", 0..8),
    ("major", 8..12),
    ("features", 12..24),
    ("poolset_uuid", 24..40),
    ("uuid", 40..56),
    ("prev_part_uuid", 56..72),
    ("next_part_uuid", 72..88),
    ("prev_repl_uuid", 88..104),
    ("next_repl_uuid", 104..120),
    ("arch_flags", 128..144),
    ("unused", 144..2048),
    ("unused2", 2048..4024),
    ("sds", 4024..4088),
];

/// Compares the headers and part modes `poolsync` left (`ours`) with those
/// `pmempool` left (`theirs`). Where pmempool generated a fresh UUID (one the
/// pristine set never had, docs/format.md §17.6, rule (e)), ours must be fresh
/// too and distinct, and both are replaced by a placeholder for that part
/// before the link fields are compared, which checks that the rings link the
/// same parts.
fn header_problems(pool: &Pool, damage: Damage, theirs: &SetFiles, ours: &SetFiles) -> Vec<String> {
    let shape = pool.shape;
    let mut problems = Vec::new();
    let mut subst_theirs: BTreeMap<[u8; 16], [u8; 16]> = BTreeMap::new();
    let mut subst_ours: BTreeMap<[u8; 16], [u8; 16]> = BTreeMap::new();
    let mut ours_all: BTreeMap<[u8; 16], (usize, usize)> = BTreeMap::new();
    let mut headers = Vec::new();
    for (r, parts) in shape.replicas.iter().enumerate() {
        for p in 0..parts.len().min(shape.nhdrs(r)) {
            let t = read_header(theirs.part(r, p));
            let o = read_header(ours.part(r, p));
            let tu: [u8; 16] = t[HDR_UUID..HDR_UUID + 16].try_into().expect("16 bytes");
            let ou: [u8; 16] = o[HDR_UUID..HDR_UUID + 16].try_into().expect("16 bytes");
            if let Some(other) = ours_all.insert(ou, (r, p)) {
                problems.push(format!(
                    "replica {r} part {p}: uuid {} also used by replica {} part {}",
                    hex(&ou),
                    other.0,
                    other.1
                ));
            }
            if !pool.pristine_uuids.contains(&tu) {
                // Rule (e): pmempool made a fresh UUID.
                if pool.pristine_uuids.contains(&ou) {
                    problems.push(format!(
                        "replica {r} part {p}: pmempool gives it a fresh uuid, ours reuses {}",
                        hex(&ou)
                    ));
                }
                let placeholder = [
                    0xF0, r as u8, p as u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xF0,
                ];
                subst_theirs.insert(tu, placeholder);
                subst_ours.insert(ou, placeholder);
            }
            headers.push((r, p, t, o));
        }
    }
    let map = |subst: &BTreeMap<[u8; 16], [u8; 16]>, bytes: &[u8]| -> Vec<u8> {
        if bytes.len() != 16 {
            return bytes.to_vec();
        }
        let key: [u8; 16] = bytes.try_into().expect("16 bytes");
        subst.get(&key).copied().unwrap_or(key).to_vec()
    };
    for (r, p, t, o) in &headers {
        for (name, range) in &FIELDS {
            let is_uuid = (24..120).contains(&range.start);
            let (tv, ov) = if is_uuid {
                (
                    map(&subst_theirs, &t[range.clone()]),
                    map(&subst_ours, &o[range.clone()]),
                )
            } else {
                (t[range.clone()].to_vec(), o[range.clone()].to_vec())
            };
            if tv != ov {
                problems.push(format!(
                    "replica {r} part {p}: {name} differs: pmempool {} poolsync {}",
                    hex(&t[range.clone()]),
                    hex(&o[range.clone()])
                ));
            }
        }
        let stored = le_u64(o, HDR_CSUM);
        let want = fletcher64_ref(o, HDR_CSUM, header_skip(o));
        if stored != want {
            problems.push(format!(
                "replica {r} part {p}: header checksum {stored:#x} invalid (should be {want:#x})"
            ));
        }
    }
    // Modes: a part that was missing is recreated by both tools; it must get
    // pmempool's mode (the source's part 0). A rebuilt part that existed keeps
    // its mode or gets pmempool's (pmempool recreates every broken part,
    // poolsync may repair it in place); an intact part keeps its mode.
    let rebuilt = damage.rebuilt(shape);
    for (r, parts) in shape.replicas.iter().enumerate() {
        for p in 0..parts.len() {
            let mode = |f: &SetFiles| {
                fs::metadata(f.part(r, p))
                    .map(|m| m.permissions().mode() & 0o7777)
                    .ok()
            };
            let before = fs::metadata(pool.files.part(r, p))
                .ok()
                .filter(|m| m.len() == parts[p] * MIB)
                .map(|m| m.permissions().mode() & 0o7777);
            let (tm, om) = (mode(theirs), mode(ours));
            let ok = match before {
                None => om == tm,
                Some(_) if rebuilt.contains(&(r, p)) => om == tm || om == before,
                Some(_) => om == before,
            };
            if !ok {
                problems.push(format!(
                    "replica {r} part {p}: file mode {} (before sync {}, pmempool {})",
                    octal(om),
                    octal(before),
                    octal(tm)
                ));
            }
        }
    }
    problems
}

fn octal(mode: Option<u32>) -> String {
    mode.map_or_else(|| "<missing>".to_owned(), |m| format!("{m:o}"))
}

fn hex(bytes: &[u8]) -> String {
    let shown: String = bytes.iter().take(32).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > 32 {
        format!("{shown}… ({} bytes)", bytes.len())
    } else {
        shown
    }
}

#[track_caller]
fn assert_no_problems(problems: &[String], what: &str) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

// ---------------------------------------------------------------------------
// The repair case

/// Damages a filled pool set of `shape` and repairs byte copies with both
/// tools; see the module doc for everything that is compared.
fn repair_case(shape: &'static Shape, damage: Damage) {
    let pool = Pool::new(shape);
    damage.apply(&pool.files, shape);
    let source = damage.source();
    let theirs = pool.copy("pmempool");
    let ours = pool.copy("poolsync");
    let input = SetImage::read(&pool.files);

    // pmempool: the premises of this case.
    let before = Snap::take(set_dir(&theirs));
    let dry = pmempool(&["sync", "-d", "-v", theirs.set_str()]);
    assert_synchronized(
        &dry,
        &theirs,
        "test premise: pmempool sync -d on the damaged set",
    );
    before.assert_unchanged(set_dir(&theirs), "test premise: pmempool sync -d");
    let out = pmempool(&["sync", "-v", theirs.set_str()]);
    assert_synchronized(
        &out,
        &theirs,
        "test premise: pmempool sync repairs the damage",
    );
    assert_no_problems(
        &data_problems(&pool, damage, source, &input, &SetImage::read(&theirs)),
        &format!(
            "test premise: pmempool's data after repairing {damage:?} (source replica {source})"
        ),
    );

    // poolsync: the dry run prints a plan naming the damage and changes nothing.
    let before = Snap::take(set_dir(&ours));
    let dry = poolsync(&["sync", "-d", "-v", ours.set_str()]);
    dry.assert_no_crash();
    assert_synchronized(&dry, &ours, "poolsync sync -d on the damaged set");
    let (r, p) = damage.part();
    assert!(
        mentions_part(&dry.combined(), &ours, r, p) || mentions_replica(&dry.combined(), &ours, r),
        "poolsync sync -d: the plan does not name the damaged part (replica {r} part {p})\n{}",
        dry.describe()
    );
    before.assert_unchanged(set_dir(&ours), "poolsync sync -d");

    // poolsync: the repair.
    let out = poolsync(&["sync", "-v", ours.set_str()]);
    out.assert_no_crash();
    assert_synchronized(&out, &ours, &format!("poolsync sync after {damage:?}"));
    assert_no_problems(
        &data_problems(&pool, damage, source, &input, &SetImage::read(&ours)),
        &format!("data poolsync left after {damage:?} (source replica {source})"),
    );
    drop(input);
    assert_no_problems(
        &header_problems(&pool, damage, &theirs, &ours),
        &format!("headers and modes poolsync left after {damage:?}, compared with pmempool's"),
    );

    // What poolsync leaves, PMDK accepts; what pmempool leaves, poolsync accepts.
    assert_consistent(pmempool, &ours, "pmempool check after poolsync sync");
    assert_nothing_to_do(pmempool, &ours, "pmempool sync after poolsync sync");
    assert_nothing_to_do(poolsync, &theirs, "poolsync sync after pmempool sync");
    assert_consistent(poolsync, &theirs, "poolsync check after pmempool sync");
    assert_every_replica_readable(&pool, &ours, &format!("after poolsync sync of {damage:?}"));
}

/// Declares one `#[test]` per (shape, damage).
macro_rules! repair_tests {
    ($($name:ident: $shape:expr, $damage:expr;)*) => {$(
        #[test]
        fn $name() {
            require_pmdk!();
            repair_case(&$shape, $damage);
        }
    )*};
}

repair_tests! {
    x2_deleted_r0p1: SET_2X2, Damage::Deleted(0, 1);
    x2_deleted_r1p0: SET_2X2, Damage::Deleted(1, 0);
    x2_truncated_r0p1: SET_2X2, Damage::Truncated(0, 1);
    x2_truncated_r0p0: SET_2X2, Damage::Truncated(0, 0);
    x2_enlarged_r1p0: SET_2X2, Damage::Enlarged(1, 0);
    x2_enlarged_r1p1: SET_2X2, Damage::Enlarged(1, 1);
    x2_header_flipped_r0p0: SET_2X2, Damage::HeaderFlipped(0, 0);
    x2_header_flipped_r1p1: SET_2X2, Damage::HeaderFlipped(1, 1);
    x2_adr_failure_r0: SET_2X2, Damage::AdrFailure(0);
    x2_adr_failure_r1: SET_2X2, Damage::AdrFailure(1);
    x2_descriptor_flipped_r0: SET_2X2, Damage::DescriptorFlipped(0);
    x2_descriptor_flipped_r1: SET_2X2, Damage::DescriptorFlipped(1);
    x2_replica_gone_r0: SET_2X2, Damage::ReplicaGone(0);
    x2_replica_gone_r1: SET_2X2, Damage::ReplicaGone(1);

    r3_deleted_r0p2: SET_3R, Damage::Deleted(0, 2);
    r3_truncated_r1p1: SET_3R, Damage::Truncated(1, 1);
    r3_enlarged_r2p0: SET_3R, Damage::Enlarged(2, 0);
    r3_header_flipped_r0p1: SET_3R, Damage::HeaderFlipped(0, 1);
    r3_adr_failure_r1: SET_3R, Damage::AdrFailure(1);
    r3_descriptor_flipped_r2: SET_3R, Damage::DescriptorFlipped(2);
    r3_replica_gone_r1: SET_3R, Damage::ReplicaGone(1);

    singlehdr_deleted_r0p1: SET_SINGLEHDR, Damage::Deleted(0, 1);
    singlehdr_truncated_r1p1: SET_SINGLEHDR, Damage::Truncated(1, 1);
    singlehdr_enlarged_r0p0: SET_SINGLEHDR, Damage::Enlarged(0, 0);
    singlehdr_header_flipped_r1p0: SET_SINGLEHDR, Damage::HeaderFlipped(1, 0);
    singlehdr_adr_failure_r0: SET_SINGLEHDR, Damage::AdrFailure(0);
    singlehdr_descriptor_flipped_r1: SET_SINGLEHDR, Damage::DescriptorFlipped(1);
    singlehdr_replica_gone_r1: SET_SINGLEHDR, Damage::ReplicaGone(1);
}

// ---------------------------------------------------------------------------
// Hard errors: nothing may change

/// `pmempool sync` fails with `premise` in its message; `poolsync sync` (and
/// its dry run) must fail with exit 1, a `failed to synchronize` message for
/// which `named` holds (`what_named` describes it), and change no file.
fn hard_error_case(
    shape: &'static Shape,
    damage: impl FnOnce(&Pool),
    premise: &str,
    what_named: &str,
    named: impl Fn(&str, &SetFiles) -> bool,
) {
    let pool = Pool::new(shape);
    damage(&pool);
    let files = &pool.files;
    let before = Snap::take(pool.dir.path());
    for dry in [false, true] {
        let mut args = vec!["sync", "-v"];
        if dry {
            args.push("-d");
        }
        args.push(files.set_str());
        let theirs = pmempool(&args);
        assert!(
            theirs.code == Some(1) && theirs.stderr.contains(premise),
            "test premise: `pmempool {}` fails with \"{premise}\"\n{}",
            args.join(" "),
            theirs.describe()
        );
        before.assert_unchanged(pool.dir.path(), "test premise: failed pmempool sync");

        let ours = poolsync(&args);
        ours.assert_no_crash();
        assert_eq!(
            ours.code,
            Some(1),
            "`poolsync {}` must fail like pmempool\n{}\n{}",
            args.join(" "),
            theirs.describe(),
            ours.describe()
        );
        assert!(
            ours.stderr.contains("error: failed to synchronize"),
            "`poolsync {}`: no `error: failed to synchronize: ...` on stderr\n{}",
            args.join(" "),
            ours.describe()
        );
        assert!(
            named(&ours.stderr, files),
            "`poolsync {}`: the message does not name {what_named}\n{}",
            args.join(" "),
            ours.describe()
        );
        before.assert_unchanged(
            pool.dir.path(),
            &format!("failed `poolsync {}`", args.join(" ")),
        );
    }
}

/// Sets header field `off` (16 bytes) of part (r, p) to `uuid` and makes the
/// checksum valid again.
fn rewrite_link(files: &SetFiles, r: usize, p: usize, off: usize, uuid: &[u8]) {
    let mut hdr = read_header(files.part(r, p));
    hdr[off..off + 16].copy_from_slice(uuid);
    fix_header_checksum(&mut hdr);
    write_at(files.part(r, p), 0, &hdr);
}

#[test]
fn hard_error_parts_not_linked() {
    require_pmdk!();
    // Replica 0 has three parts; part 1's next_part_uuid points back at part 0
    // (a UUID of the set, but not its neighbour), with a valid checksum.
    hard_error_case(
        &SET_3R,
        |pool| {
            let part0 = read_header(pool.files.part(0, 0))[HDR_UUID..HDR_UUID + 16].to_vec();
            rewrite_link(&pool.files, 0, 1, 72, &part0);
        },
        "two consecutive unbroken parts are not linked",
        "replica 0 part 1 or part 2",
        |text, files| mentions_part(text, files, 0, 1) || mentions_part(text, files, 0, 2),
    );
}

#[test]
fn hard_error_parts_not_linked_two_parts() {
    require_pmdk!();
    // Replica 1 has two parts; part 1 links to itself both ways.
    hard_error_case(
        &SET_2X2,
        |pool| {
            let own = read_header(pool.files.part(1, 1))[HDR_UUID..HDR_UUID + 16].to_vec();
            rewrite_link(&pool.files, 1, 1, 56, &own);
            rewrite_link(&pool.files, 1, 1, 72, &own);
        },
        "two consecutive unbroken parts are not linked",
        "replica 1 part 0 or part 1",
        |text, files| mentions_part(text, files, 1, 0) || mentions_part(text, files, 1, 1),
    );
}

#[test]
fn hard_error_replica_from_another_pool_set() {
    require_pmdk!();
    hard_error_case(
        &SET_2X2,
        |pool| {
            let other_dir = pool.dir.path().join("other");
            fs::create_dir(&other_dir).expect("create other dir");
            let other = write_set(&other_dir, "pool", &SET_2X2);
            pmempool(&["create", "obj", other.set_str()]).assert_success();
            for p in 0..2 {
                fs::copy(other.part(1, p), pool.files.part(1, p)).expect("copy foreign part");
            }
            fs::remove_dir_all(&other_dir).expect("remove other set");
        },
        "inconsistent poolset uuids between replicas",
        "replica 1",
        |text, files| mentions_replica(text, files, 1),
    );
}

#[test]
fn hard_error_replica_too_small() {
    require_pmdk!();
    // Replica 1's descriptor claims a heap 1 MiB larger than the pool set can
    // hold (heap_size is outside the descriptor checksum).
    hard_error_case(
        &SET_2X2,
        |pool| {
            let part = pool.files.part(1, 0);
            let heap_size = le_u64(&read_at(part, DESC_HEAP_SIZE as u64, 8), 0);
            write_at(
                part,
                DESC_HEAP_SIZE as u64,
                &(heap_size + MIB).to_le_bytes(),
            );
        },
        "some replicas are too small to hold synchronized data",
        "replica 1",
        |text, files| mentions_replica(text, files, 1),
    );
}

#[test]
fn hard_error_no_healthy_replica() {
    require_pmdk!();
    hard_error_case(
        &SET_2X2,
        |pool| {
            for r in 0..2 {
                flip_byte(pool.files.part(r, 0), 1000);
            }
        },
        "no healthy replica found",
        "every replica",
        |text, files| (0..2).all(|r| mentions_replica(text, files, r)),
    );
}

// ---------------------------------------------------------------------------
// Healthy sets, dirty shutdown, --source

#[test]
fn healthy_set_nothing_to_do() {
    require_pmdk!();
    let pool = Pool::new(&SET_3R);
    let theirs = pool.copy("pmempool");
    assert_nothing_to_do(
        pmempool,
        &theirs,
        "test premise: pmempool sync of a healthy set",
    );
    let before = Snap::take(pool.dir.path());
    let dry = poolsync(&["sync", "-d", "-v", pool.files.set_str()]);
    dry.assert_no_crash();
    assert_synchronized(&dry, &pool.files, "poolsync sync -d of a healthy set");
    before.assert_unchanged(pool.dir.path(), "poolsync sync -d of a healthy set");
    assert_nothing_to_do(poolsync, &pool.files, "poolsync sync of a healthy set");
}

#[test]
fn dirty_shutdown_without_adr_failure_left_alone() {
    require_pmdk!();
    // A libpmemobj process killed while holding the pool leaves dirty=1 with
    // the current (zero) usc/uuid: no ADR failure, libpmemobj reopens it, and
    // pmempool sync leaves it as it is.
    let pool = Pool::new(&SET_2X2);
    crate::support::Holder::start(&["hold", pool.files.set_str(), "-", "60"]).crash();
    let sds = read_at(pool.files.part(0, 0), 4024, 64);
    assert_eq!(
        sds[16], 1,
        "test premise: the killed process left the SDS dirty"
    );
    let theirs = pool.copy("pmempool");
    assert_nothing_to_do(
        pmempool,
        &theirs,
        "test premise: pmempool sync of a dirty set",
    );
    assert_nothing_to_do(
        poolsync,
        &pool.files,
        "poolsync sync of a dirty, not failed set",
    );
    let out = objclient(&[
        "verify",
        pool.files.set_str(),
        "-",
        &pool.nbytes.to_string(),
        SEED,
    ]);
    assert_eq!(
        out.code,
        Some(0),
        "libpmemobj reads the pool after sync\n{}",
        out.describe()
    );
}

#[test]
fn source_option_rebuilds_from_that_replica() {
    require_pmdk!();
    // Replica 2 is lost; the master is healthy, but `--source 1` must copy
    // replica 1. Replicas 0 and 1 legitimately differ in bytes libpmemobj
    // never persists (docs/format.md §15.2), which shows where the data came
    // from.
    let pool = Pool::new(&SET_3R);
    let damage = Damage::ReplicaGone(2);
    damage.apply(&pool.files, pool.shape);
    let input = SetImage::read(&pool.files);
    let (r0, r1) = (input.logical(pool.shape, 0), input.logical(pool.shape, 1));
    let replicated = PAGE as usize..pool.pool_size as usize;
    assert!(
        first_difference(
            PAGE..pool.pool_size,
            &r0[replicated.clone()],
            &r1[replicated]
        )
        .is_some(),
        "test premise: replicas 0 and 1 differ somewhere in the replicated range"
    );
    drop((r0, r1));

    let out = poolsync(&["sync", "-v", "--source", "1", pool.files.set_str()]);
    out.assert_no_crash();
    assert_synchronized(&out, &pool.files, "poolsync sync --source 1");
    assert_no_problems(
        &data_problems(&pool, damage, 1, &input, &SetImage::read(&pool.files)),
        "data after poolsync sync --source 1 (source replica 1)",
    );
    drop(input);
    assert_consistent(
        pmempool,
        &pool.files,
        "pmempool check after sync --source 1",
    );
    assert_nothing_to_do(pmempool, &pool.files, "pmempool sync after sync --source 1");
    assert_every_replica_readable(&pool, &pool.files, "after poolsync sync --source 1");
}

#[test]
fn source_option_rejects_a_broken_replica() {
    require_pmdk!();
    let pool = Pool::new(&SET_2X2);
    Damage::Deleted(1, 1).apply(&pool.files, pool.shape);
    let before = Snap::take(pool.dir.path());
    let out = poolsync(&["sync", "-v", "--source", "1", pool.files.set_str()]);
    out.assert_no_crash();
    assert_eq!(
        out.code,
        Some(1),
        "sync from a broken replica must fail\n{}",
        out.describe()
    );
    assert!(
        mentions_replica(&out.stderr, &pool.files, 1),
        "the message does not name replica 1\n{}",
        out.describe()
    );
    before.assert_unchanged(pool.dir.path(), "failed poolsync sync --source 1");
}

// ---------------------------------------------------------------------------
// --json: block-level repair reports what it compared and wrote

/// A number at a JSON pointer of `poolsync sync --json` output.
#[track_caller]
fn json_u64(out: &Out, pointer: &str) -> u64 {
    let value: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("sync --json is not JSON: {e}\n{}", out.describe()));
    value
        .pointer(pointer)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("sync --json has no number at {pointer}\n{}", out.describe()))
}

#[test]
fn json_reports_block_level_repair() {
    require_pmdk!();
    // Only the header of replica 1 part 1 is bad: its data is compared with
    // the source and only the differing 4 KiB blocks may be written.
    let pool = Pool::new(&SET_2X2);
    let damage = Damage::HeaderFlipped(1, 1);
    damage.apply(&pool.files, pool.shape);
    let input = SetImage::read(&pool.files);
    let range = part_ranges(pool.shape, 1)[1];
    let share = range.logical..pool.pool_size;
    let src = input.logical(pool.shape, 0);
    let old = input.logical(pool.shape, 1);
    let differing_blocks = (share.start..share.end)
        .step_by(PAGE as usize)
        .filter(|&b| {
            let block = b as usize..(b + PAGE).min(share.end) as usize;
            src[block.clone()] != old[block]
        })
        .count() as u64;
    drop((src, old));

    let set = pool.files.set_str();
    let before = Snap::take(set_dir(&pool.files));
    let dry = poolsync(&["sync", "-d", "--json", set]);
    dry.assert_no_crash().assert_success();
    assert_eq!(
        json_u64(&dry, "/plan/totals/bytes_to_compare"),
        share.end - share.start,
        "the plan compares the part's share of the pool\n{}",
        dry.describe()
    );
    before.assert_unchanged(set_dir(&pool.files), "poolsync sync -d --json");

    let out = poolsync(&["sync", "--json", set]);
    out.assert_no_crash().assert_success();
    assert_eq!(
        json_u64(&out, "/report/bytes_compared"),
        share.end - share.start,
        "bytes compared\n{}",
        out.describe()
    );
    let written = json_u64(&out, "/report/bytes_written");
    assert!(
        written <= differing_blocks * PAGE,
        "block repair wrote {written} bytes where {differing_blocks} block(s) of 4 KiB differ\n{}",
        out.describe()
    );
    assert_no_problems(
        &data_problems(&pool, damage, 0, &input, &SetImage::read(&pool.files)),
        "data after poolsync sync --json",
    );
    assert_consistent(pmempool, &pool.files, "pmempool check after sync --json");

    let again = poolsync(&["sync", "--json", set]);
    again.assert_no_crash().assert_success();
    assert_eq!(
        (
            json_u64(&again, "/report/bytes_compared"),
            json_u64(&again, "/report/bytes_written")
        ),
        (0, 0),
        "a healthy set needs no comparing or writing\n{}",
        again.describe()
    );
}

#[test]
fn block_level_repair_saves_an_undo_file_that_puts_the_old_bytes_back() {
    require_pmdk!();
    // Replica 1 part 1 has a bad header and two damaged bytes of data: the
    // blocks that differ are repaired, and their old bytes saved first.
    let pool = Pool::new(&SET_2X2);
    let damage = Damage::HeaderFlipped(1, 1);
    damage.apply(&pool.files, pool.shape);
    let part = pool.files.part(1, 1).to_path_buf();
    flip_byte(&part, PAGE + MIB);
    flip_byte(&part, PAGE + 2 * MIB + 7);
    let damaged = fs::read(&part).expect("read part");
    let set = pool.files.set_str();

    let dry = poolsync(&["sync", "-d", "--json", set]);
    dry.assert_no_crash().assert_success();
    let planned = json_u64(&dry, "/plan/undo/bytes");
    assert!(planned >= 2 * PAGE, "{}", dry.describe());
    let out = poolsync(&["sync", "--json", set]);
    out.assert_no_crash().assert_success();
    assert_eq!(json_u64(&out, "/report/undo/bytes"), planned);
    assert_eq!(planned, json_u64(&out, "/report/bytes_differing"));
    let ranges = json_u64(&out, "/report/undo/records");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let undo_file = doc
        .pointer("/report/undo/path")
        .and_then(serde_json::Value::as_str)
        .expect("the report names the undo file")
        .to_string();
    assert_consistent(pmempool, &pool.files, "pmempool check after the repair");

    let back = poolsync(&["undo", &undo_file]);
    back.assert_no_crash().assert_success();
    assert!(
        back.stdout
            .contains(&format!("{planned} bytes in {ranges} range(s) restored")),
        "{}",
        back.describe()
    );
    let now = fs::read(&part).expect("read part");
    // The header is the repaired one; every byte of data is the old one.
    assert!(
        now[PAGE as usize..] == damaged[PAGE as usize..],
        "undo did not put the old data back byte for byte"
    );
}

#[test]
fn a_part_that_is_a_symbolic_link_to_nothing_is_created_where_it_points() {
    require_pmdk!();
    // Issue 15, defect 6: the plan is what runs.
    let pool = Pool::new(&SET_2X2);
    let part = pool.files.part(1, 1).to_path_buf();
    let dir = part.parent().expect("dir").to_path_buf();
    fs::remove_file(&part).expect("remove part");
    // A link into a directory that does not exist: -d and the real run
    // refuse alike, and nothing changes.
    std::os::unix::fs::symlink("nowhere/part", &part).expect("symlink");
    let set = pool.files.set_str();
    for args in [&["sync", "-d", set][..], &["sync", set][..]] {
        let out = poolsync(args);
        assert_eq!(out.code, Some(1), "{}", out.describe());
        assert!(
            out.stderr.contains("symbolic link") && out.stderr.contains("nowhere"),
            "{}",
            out.describe()
        );
    }
    assert!(fs::symlink_metadata(&part).is_ok() && !dir.join("nowhere").exists());
    // A link to a missing file in an existing directory: the plan creates
    // the file it names, and so does the run.
    fs::remove_file(&part).expect("remove link");
    std::os::unix::fs::symlink("elsewhere.part", &part).expect("symlink");
    let plan = poolsync(&["sync", "-d", set]);
    plan.assert_success();
    assert!(
        plan.stdout
            .contains(&format!("({})", dir.join("elsewhere.part").display())),
        "{}",
        plan.describe()
    );
    poolsync(&["sync", set]).assert_success();
    assert!(fs::symlink_metadata(&part)
        .expect("link")
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::metadata(dir.join("elsewhere.part"))
            .expect("created")
            .len(),
        8 * MIB
    );
    assert_consistent(pmempool, &pool.files, "after creating through the link");
    assert_every_replica_readable(&pool, &pool.files, "after creating through the link");
}
