//! `create` and `rm` against the real file system: what they write decodes
//! back into consistent headers and obj metadata (and, when PMDK's
//! `pmempool` is installed, matches what it writes and passes its checks),
//! refusals and failures leave the file system as it was, and `rm` removes
//! exactly what `pmempool rm` removes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use poolsync_engine::create::{create, CreateOptions, Created};
use poolsync_engine::rm::{rm, Ask, Outcome, RmObserver, RmOptions, RmReport, Role};
use poolsync_engine::Error;
use poolsync_header::{
    ArchFlags, HeapHeader, ObjDescriptor, PoolHdr, PoolType, RawUuid, Sds, FEAT_CHECK_BAD_BLOCKS,
    FEAT_CKSUM_2K, FEAT_SDS, FEAT_SINGLEHDR, LANE_SIZE, LANE_ULOGS, OBJ_HEAP_OFFSET,
    OBJ_LANES_OFFSET, OBJ_NLANES, POOL_HDR_SIZE, ULOG_CAPACITY_OFF,
};
use poolsync_pmem::sim::{SimStorage, Survival};
use poolsync_pmem::{Access, FsStorage, Storage};
use poolsync_poolset::{map_range, PoolSet};
use tempfile::TempDir;

use crate::crash::{CrashTest, Sweeping};

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------- helpers

fn tmp() -> TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Writes `dir/name.set` with one replica per entry of `replicas` (part
/// sizes in MiB), parts named `name_r{R}p{P}`. Returns the set path.
fn write_set(dir: &Path, name: &str, replicas: &[&[u64]], singlehdr: bool) -> PathBuf {
    let mut text = String::from("PMEMPOOLSET\n");
    if singlehdr {
        text.push_str("OPTION SINGLEHDR\n");
    }
    for (r, parts) in replicas.iter().enumerate() {
        if r > 0 {
            text.push_str("REPLICA\n");
        }
        for (p, mib) in parts.iter().enumerate() {
            let part = dir.join(format!("{name}_r{r}p{p}"));
            text.push_str(&format!("{mib}M {}\n", part.display()));
        }
    }
    let path = dir.join(format!("{name}.set"));
    fs::write(&path, text).expect("write set");
    path
}

/// Reads a whole file: from the real file system, or from a simulated one.
type Read<'a> = &'a dyn Fn(&Path) -> Rc<Vec<u8>>;

fn fs_read(path: &Path) -> Rc<Vec<u8>> {
    Rc::new(fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

/// A reader of a simulated storage's written images, each file read once.
fn sim_reader(sim: &SimStorage) -> impl Fn(&Path) -> Rc<Vec<u8>> {
    let sim = sim.clone();
    let cache: RefCell<HashMap<PathBuf, Rc<Vec<u8>>>> = RefCell::default();
    move |path: &Path| {
        let mut cache = cache.borrow_mut();
        let bytes = cache.entry(path.to_path_buf()).or_insert_with(|| {
            Rc::new(
                sim.written_bytes(path)
                    .unwrap_or_else(|| panic!("{} missing", path.display())),
            )
        });
        Rc::clone(bytes)
    }
}

/// The set of `target` (synthesised for a single-file pool) and the part
/// paths of every replica.
fn layout_of(read: Read<'_>, target: &Path) -> (PoolSet, Vec<Vec<PathBuf>>) {
    let bytes = read(target);
    let set = if bytes.starts_with(b"PMEMPOOLSET") {
        poolsync_poolset::parse(std::str::from_utf8(&bytes).expect("utf-8 set")).expect("parse set")
    } else {
        poolsync_engine::load::single_file_set(target, bytes.len() as u64)
    };
    let parts = set
        .replicas
        .iter()
        .map(|r| r.parts().iter().map(|p| PathBuf::from(&p.path)).collect())
        .collect();
    (set, parts)
}

fn part_paths(target: &Path) -> Vec<Vec<PathBuf>> {
    layout_of(&fs_read, target).1
}

fn header_of(part: &Path) -> PoolHdr {
    PoolHdr::decode(&fs_read(part)[..POOL_HDR_SIZE]).expect("decode header")
}

/// Reads logical `[offset, offset+len)` of replica `r` through the set's map.
fn read_logical(
    read: Read<'_>,
    set: &PoolSet,
    parts: &[PathBuf],
    r: usize,
    offset: u64,
    len: u64,
) -> Vec<u8> {
    let extents = set.extents(r).expect("extents");
    let mut out = Vec::with_capacity(len as usize);
    for piece in map_range(&extents, offset, len) {
        let bytes = read(&parts[piece.part]);
        let start = piece.file_offset as usize;
        out.extend_from_slice(&bytes[start..start + piece.len as usize]);
    }
    assert_eq!(
        out.len() as u64,
        len,
        "replica {r} covers [{offset:#x}, +{len:#x})"
    );
    out
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

/// Every file under `dir` with its length, mode and content hash, so that a
/// refused operation can be shown to have changed nothing.
fn snapshot(dir: &Path) -> Vec<(String, u64, u32, u64)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = fs::read(&p).expect("read");
            let mut hasher = DefaultHasher::new();
            bytes.hash(&mut hasher);
            let name = p
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (name, bytes.len() as u64, mode_of(&p), hasher.finish())
        })
        .collect();
    files.sort();
    files
}

/// The `pmempool` binary, when PMDK's tools are installed.
fn pmempool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("pmempool"))
        .find(|p| p.is_file())
}

/// Runs `pmempool args...`; returns (exit code, stdout, stderr).
fn run_pmempool(tool: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .expect("run pmempool");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `pmempool check -v` says consistent and `pmempool info` succeeds.
fn assert_pmempool_accepts(tool: &Path, target: &Path) {
    let t = target.to_str().expect("utf-8 path");
    let (code, out, err) = run_pmempool(tool, &["check", "-v", t]);
    assert_eq!(code, Some(0), "pmempool check:\n{out}{err}");
    assert!(
        out.lines().any(|l| l == format!("{t}: consistent")),
        "pmempool check:\n{out}{err}"
    );
    let (code, out, err) = run_pmempool(tool, &["info", t]);
    assert_eq!(code, Some(0), "pmempool info:\n{out}{err}");
}

/// Checks everything a freshly created pool must satisfy (docs/format.md §5,
/// §7 to §10, §16.3): headers, links, descriptor, lanes and heap header in
/// every replica, and identical replicated ranges.
fn assert_fresh_pool(target: &Path, layout: &str, singlehdr: bool) {
    assert_pool(&fs_read, target, layout, singlehdr);
}

/// [`assert_fresh_pool`] on any storage.
fn assert_pool(read: Read<'_>, target: &Path, layout: &str, singlehdr: bool) {
    let (set, parts) = layout_of(read, target);
    let pool_size = set.pool_size().expect("pool size");
    let arch = ArchFlags::current();
    let mut incompat = FEAT_CKSUM_2K | FEAT_SDS;
    if singlehdr {
        incompat |= FEAT_SINGLEHDR;
    }

    let headers: Vec<Vec<PoolHdr>> = parts
        .iter()
        .enumerate()
        .map(|(r, ps)| {
            ps.iter()
                .take(set.nhdrs(r))
                .map(|p| PoolHdr::decode(&read(p)[..POOL_HDR_SIZE]).expect("decode header"))
                .collect()
        })
        .collect();
    let poolset_uuid = headers[0][0].poolset_uuid;
    assert!(!poolset_uuid.is_nil());
    let mut seen: Vec<RawUuid> = vec![poolset_uuid];
    let n = headers.len();
    for (r, hs) in headers.iter().enumerate() {
        for (p, h) in hs.iter().enumerate() {
            let what = format!("replica {r} part {p}");
            assert!(h.checksum_ok(), "{what}: checksum");
            h.validate_with_arch(PoolType::Obj, &arch)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(h.features.compat, FEAT_CHECK_BAD_BLOCKS, "{what}: compat");
            assert_eq!(h.features.incompat, incompat, "{what}: incompat");
            assert_eq!(h.features.ro_compat, 0, "{what}: ro_compat");
            assert_eq!(h.poolset_uuid, poolset_uuid, "{what}: poolset uuid");
            assert!(!seen.contains(&h.uuid), "{what}: uuid not unique");
            seen.push(h.uuid);
            let m = hs.len();
            assert_eq!(
                h.prev_part_uuid,
                hs[(p + m - 1) % m].uuid,
                "{what}: prev part"
            );
            assert_eq!(h.next_part_uuid, hs[(p + 1) % m].uuid, "{what}: next part");
            assert_eq!(
                h.prev_repl_uuid,
                headers[(r + n - 1) % n][0].uuid,
                "{what}: prev replica"
            );
            assert_eq!(
                h.next_repl_uuid,
                headers[(r + 1) % n][0].uuid,
                "{what}: next replica"
            );
            assert_eq!(
                h.sds,
                Sds::decode(&[0; 64]).expect("zero sds"),
                "{what}: clean SDS"
            );
            assert!(h.unused.iter().all(|&b| b == 0), "{what}: unused bytes");
            assert!(h.crtime > 0, "{what}: crtime");
        }
        // Parts without a header (SINGLEHDR) start with pool data: zero here.
        for (p, part) in parts[r].iter().enumerate().skip(set.nhdrs(r)) {
            let bytes = read(part);
            assert!(
                bytes[..POOL_HDR_SIZE].iter().all(|&b| b == 0),
                "replica {r} part {p}: no header"
            );
        }
        // Part files have exactly their configured sizes.
        for (p, part) in set.replicas[r].parts().iter().enumerate() {
            let poolsync_poolset::PartSize::Bytes(size) = part.size else {
                panic!("AUTO")
            };
            assert_eq!(
                read(&parts[r][p]).len() as u64,
                size,
                "replica {r} part {p}: size"
            );
        }
    }

    let master = read_logical(read, &set, &parts[0], 0, 0, pool_size);
    for (r, replica_parts) in parts.iter().enumerate() {
        let image = if r == 0 {
            master.clone()
        } else {
            read_logical(read, &set, replica_parts, r, 0, pool_size)
        };
        let desc = ObjDescriptor::decode(&image[0x1000..0x2000]).expect("descriptor");
        assert!(desc.checksum_ok(), "replica {r}: descriptor checksum");
        desc.validate()
            .unwrap_or_else(|e| panic!("replica {r}: {e}"));
        assert_eq!(desc.layout_name(), layout, "replica {r}: layout");
        assert_eq!(desc.lanes_offset, OBJ_LANES_OFFSET);
        assert_eq!(desc.nlanes, OBJ_NLANES);
        assert_eq!(desc.heap_offset, OBJ_HEAP_OFFSET);
        assert_eq!(
            desc.heap_size,
            pool_size - OBJ_HEAP_OFFSET,
            "replica {r}: heap size"
        );
        assert_eq!(desc.run_id, 2, "replica {r}: run_id");
        assert_eq!((desc.root_offset, desc.root_size), (0, 0));
        for lane in [0, 1, OBJ_NLANES - 1] {
            for ulog in LANE_ULOGS {
                let at = (OBJ_LANES_OFFSET + lane * LANE_SIZE + ulog.offset + ULOG_CAPACITY_OFF)
                    as usize;
                let cap = u64::from_le_bytes(image[at..at + 8].try_into().unwrap());
                assert_eq!(cap, ulog.capacity, "replica {r} lane {lane}: ulog capacity");
            }
        }
        let heap_at = OBJ_HEAP_OFFSET as usize;
        let heap = HeapHeader::decode(&image[heap_at..heap_at + 1024]).expect("heap header");
        assert_eq!(heap, HeapHeader::standard(), "replica {r}: heap header");
        heap.validate(OBJ_HEAP_OFFSET)
            .unwrap_or_else(|e| panic!("replica {r}: {e}"));
        // Nothing else in the heap (zones are initialised lazily).
        assert!(
            image[heap_at + 1024..].iter().all(|&b| b == 0),
            "replica {r}: heap not empty"
        );
        // Replicated range identical across replicas in a fresh pool.
        assert!(
            image[POOL_HDR_SIZE..] == master[POOL_HDR_SIZE..],
            "replica {r} differs from the master"
        );
    }
}

fn options(layout: &str) -> CreateOptions {
    CreateOptions {
        layout: layout.to_string(),
        ..CreateOptions::default()
    }
}

fn must_create(target: &Path, opts: &CreateOptions) -> Created {
    create(&FsStorage, target, opts).unwrap_or_else(|e| panic!("create {}: {e}", target.display()))
}

// ---------------------------------------------------------------- create

#[test]
fn single_file_pool_defaults() {
    let dir = tmp();
    let pool = dir.path().join("pool.obj");
    let created = must_create(&pool, &CreateOptions::default());
    assert!(!created.is_poolset);
    assert_eq!(created.pool_size, 8 * MIB);
    assert_eq!(fs::metadata(&pool).unwrap().len(), 8 * MIB);
    assert_eq!(
        mode_of(&pool),
        0o664,
        "pmempool's default mode, umask ignored"
    );
    assert_fresh_pool(&pool, "", false);
    let h = header_of(&pool);
    assert_eq!(
        (
            h.prev_part_uuid,
            h.next_part_uuid,
            h.prev_repl_uuid,
            h.next_repl_uuid
        ),
        (h.uuid, h.uuid, h.uuid, h.uuid)
    );
    if let Some(tool) = pmempool() {
        assert_pmempool_accepts(&tool, &pool);
    }
}

#[test]
fn single_file_pool_with_size_layout_and_mode() {
    let dir = tmp();
    let pool = dir.path().join("pool.obj");
    // An unaligned size: the file has exactly that length, the pool its page-aligned part.
    let opts = CreateOptions {
        layout: "mylayout".into(),
        mode: 0o600,
        size: Some(16 * MIB + 1),
        force: false,
    };
    let created = must_create(&pool, &opts);
    assert_eq!(created.pool_size, 16 * MIB);
    assert_eq!(fs::metadata(&pool).unwrap().len(), 16 * MIB + 1);
    assert_eq!(mode_of(&pool), 0o600);
    assert_fresh_pool(&pool, "mylayout", false);
    if let Some(tool) = pmempool() {
        assert_pmempool_accepts(&tool, &pool);
    }
}

#[test]
fn pool_set_two_parts() {
    let dir = tmp();
    let set = write_set(dir.path(), "two", &[&[10, 8]], false);
    let created = must_create(&set, &options(""));
    assert!(created.is_poolset);
    assert_eq!(created.pool_size, 18 * MIB - 4096);
    assert_eq!(created.parts.len(), 2);
    assert!(created.parts.iter().all(|p| !p.reused));
    assert_fresh_pool(&set, "", false);
    if let Some(tool) = pmempool() {
        assert_pmempool_accepts(&tool, &set);
    }
}

#[test]
fn pool_set_three_replicas_split_differently() {
    let dir = tmp();
    let set = write_set(
        dir.path(),
        "three",
        &[&[20, 20, 21], &[40, 21], &[61]],
        false,
    );
    let created = must_create(&set, &options("mylayout"));
    // Replica 0: 61 MiB minus two header pages is the smallest.
    assert_eq!(created.pool_size, 61 * MIB - 2 * 4096);
    assert_fresh_pool(&set, "mylayout", false);
    if let Some(tool) = pmempool() {
        assert_pmempool_accepts(&tool, &set);
    }
}

#[test]
fn pool_set_singlehdr() {
    let dir = tmp();
    let set = write_set(dir.path(), "single", &[&[4, 4, 4], &[6, 6]], true);
    let created = must_create(&set, &options("x"));
    assert_eq!(created.pool_size, 12 * MIB);
    assert_fresh_pool(&set, "x", true);
    if let Some(tool) = pmempool() {
        assert_pmempool_accepts(&tool, &set);
    }
}

/// Compares every byte of our parts with the parts `pmempool create` makes
/// from the same set shape, except the per-pool header fields (UUIDs,
/// crtime, checksum) and libpmemobj's volatile runtime area.
#[test]
fn bytes_match_pmempool_created_pool() {
    let Some(tool) = pmempool() else { return };
    for (shape, singlehdr, layout) in [
        (
            &[&[20u64, 20, 21][..], &[40, 21][..]][..],
            false,
            "mylayout",
        ),
        (&[&[4u64, 6][..], &[10][..]][..], true, ""),
    ] {
        let ours_dir = tmp();
        let theirs_dir = tmp();
        let ours = write_set(ours_dir.path(), "cmp", shape, singlehdr);
        let theirs = write_set(theirs_dir.path(), "cmp", shape, singlehdr);
        must_create(&ours, &options(layout));
        let t = theirs.to_str().unwrap();
        let mut args = vec!["create"];
        if !layout.is_empty() {
            args.extend(["-l", layout]);
        }
        args.extend(["obj", t]);
        let (code, out, err) = run_pmempool(&tool, &args);
        assert_eq!(code, Some(0), "pmempool create:\n{out}{err}");

        let (set, _) = layout_of(&fs_read, &ours);
        for (r, (ours_parts, theirs_parts)) in part_paths(&ours)
            .iter()
            .zip(part_paths(&theirs))
            .enumerate()
        {
            for (p, (o, t)) in ours_parts.iter().zip(&theirs_parts).enumerate() {
                let what = format!("{shape:?} replica {r} part {p}");
                let mut ob = fs::read(o).unwrap();
                let mut tb = fs::read(t).unwrap();
                assert_eq!(ob.len(), tb.len(), "{what}: size");
                assert_eq!(mode_of(o), mode_of(t), "{what}: mode");
                if p < set.nhdrs(r) {
                    let (oh, th) = (PoolHdr::decode(&ob).unwrap(), PoolHdr::decode(&tb).unwrap());
                    assert_eq!(oh.signature, th.signature, "{what}: signature");
                    assert_eq!(oh.major, th.major, "{what}: major");
                    assert_eq!(oh.features, th.features, "{what}: features");
                    assert_eq!(oh.arch_flags, th.arch_flags, "{what}: arch flags");
                    assert_eq!(oh.unused, th.unused, "{what}: unused");
                    assert_eq!(oh.sds, th.sds, "{what}: sds");
                    assert!(oh.checksum_ok() && th.checksum_ok(), "{what}: checksums");
                    // The links have the same shape: equal where theirs are equal.
                    let shape_of = |h: &PoolHdr| {
                        let l = [
                            h.uuid,
                            h.prev_part_uuid,
                            h.next_part_uuid,
                            h.prev_repl_uuid,
                            h.next_repl_uuid,
                        ];
                        l.map(|a| l.map(|b| a == b))
                    };
                    assert_eq!(shape_of(&oh), shape_of(&th), "{what}: link shape");
                    // Mask the per-pool fields: UUIDs and crtime (24..128), checksum.
                    for b in [&mut ob, &mut tb] {
                        b[24..128].fill(0);
                        b[4088..4096].fill(0);
                    }
                }
                if p == 0 {
                    // libpmemobj's runtime writes pointers into [0x1A20, 0x2000).
                    for b in [&mut ob, &mut tb] {
                        b[0x1A20..0x2000].fill(0);
                    }
                }
                if let Some(at) = ob.iter().zip(&tb).position(|(a, b)| a != b) {
                    panic!("{what}: first difference at file offset {at:#x}: ours {:#04x}, pmempool {:#04x}", ob[at], tb[at]);
                }
            }
        }
    }
}

#[test]
fn existing_zeroed_part_is_reused_as_is() {
    let dir = tmp();
    let set = write_set(dir.path(), "reuse", &[&[10, 8]], false);
    let part1 = dir.path().join("reuse_r0p1");
    // A zeroed header page, garbage in pool data, an unusual mode.
    let mut bytes = vec![0u8; (8 * MIB) as usize];
    bytes[5000] = 0x78;
    bytes[(6 * MIB) as usize] = 0x55;
    fs::write(&part1, &bytes).unwrap();
    fs::set_permissions(&part1, fs::Permissions::from_mode(0o600)).unwrap();

    let created = must_create(
        &set,
        &CreateOptions {
            mode: 0o644,
            ..CreateOptions::default()
        },
    );
    assert_eq!(
        created.parts.iter().map(|p| p.reused).collect::<Vec<_>>(),
        [false, true]
    );
    assert_eq!(mode_of(&dir.path().join("reuse_r0p0")), 0o644);
    assert_eq!(
        mode_of(&part1),
        0o600,
        "a reused part keeps its mode, as with PMDK"
    );
    let after = fs::read(&part1).unwrap();
    // Pool data libpmemobj does not initialise stays as it was.
    assert_eq!(after[5000], 0x78);
    assert_eq!(after[(6 * MIB) as usize], 0x55);
    if let Some(tool) = pmempool() {
        assert_pmempool_accepts(&tool, &set);
    }
}

#[test]
fn reused_single_file_gets_its_metadata_zeroed() {
    let dir = tmp();
    let pool = dir.path().join("pool");
    // Garbage where libpmemobj initialises lanes and the heap header.
    let mut bytes = vec![0u8; (8 * MIB) as usize];
    for at in [0x1500usize, 0x2008, 0x2100, 0x302010, 0x302400] {
        bytes[at] = 0xAA;
    }
    fs::write(&pool, &bytes).unwrap();
    fs::set_permissions(&pool, fs::Permissions::from_mode(0o640)).unwrap();
    let created = must_create(&pool, &CreateOptions::default());
    assert!(created.parts[0].reused);
    assert_eq!(mode_of(&pool), 0o640);
    assert_fresh_pool(&pool, "", false);
}

#[test]
fn refusals_change_nothing() {
    let dir = tmp();
    let d = dir.path();
    type Case = (&'static str, String, CreateOptions, fn(&Error) -> bool);
    let cases: Vec<Case> = vec![
        (
            "part too small",
            format!("PMEMPOOLSET\n1M {0}/a\n20M {0}/b\n", d.display()),
            options(""),
            |e| {
                matches!(
                    e,
                    Error::PartTooSmall {
                        line: 2,
                        size: 1048576,
                        ..
                    }
                )
            },
        ),
        (
            "pool too small",
            format!("PMEMPOOLSET\n4M {0}/a\n2M {0}/b\n", d.display()),
            options(""),
            |e| {
                matches!(
                    e,
                    Error::NetPoolTooSmall {
                        size: 6287360,
                        replica: 0,
                        ..
                    }
                )
            },
        ),
        (
            "NOHDRS",
            format!("PMEMPOOLSET\nOPTION NOHDRS\n20M {0}/a\n", d.display()),
            options(""),
            |e| matches!(e, Error::NoHdrs { .. }),
        ),
        (
            "remote",
            format!("PMEMPOOLSET\n20M {0}/a\nREPLICA host desc\n", d.display()),
            options(""),
            |e| matches!(e, Error::Unsupported { line: 3, .. }),
        ),
        (
            "same path twice",
            format!("PMEMPOOLSET\n20M {0}/a\nREPLICA\n20M {0}/a\n", d.display()),
            options(""),
            |e| {
                matches!(
                    e,
                    Error::DuplicatePart {
                        line: 4,
                        other_line: 2,
                        ..
                    }
                )
            },
        ),
        (
            "size with a set",
            format!("PMEMPOOLSET\n20M {0}/a\n", d.display()),
            CreateOptions {
                size: Some(20 * MIB),
                ..options("")
            },
            |e| matches!(e, Error::SizeWithPoolSet { .. }),
        ),
        (
            "layout too long",
            format!("PMEMPOOLSET\n20M {0}/a\n", d.display()),
            options(&"x".repeat(1024)),
            |e| matches!(e, Error::LayoutTooLong { len: 1024, .. }),
        ),
        (
            "directory part",
            format!("PMEMPOOLSET\nOPTION SINGLEHDR\n20M {0}/sub\n", d.display()),
            options(""),
            |e| matches!(e, Error::Unsupported { line: 3, .. }),
        ),
    ];
    fs::create_dir(d.join("sub")).unwrap();
    for (what, text, opts, expected) in cases {
        let set = d.join("refused.set");
        fs::write(&set, &text).unwrap();
        let before = snapshot(d);
        let err = create(&FsStorage, &set, &opts).expect_err(what);
        assert!(expected(&err), "{what}: unexpected error {err:?}");
        assert!(!err.to_string().is_empty());
        assert_eq!(snapshot(d), before, "{what}: the file system changed");
    }
    // The 1023-byte layout is the longest that fits.
    let ok = write_set(d, "longest", &[&[8]], false);
    must_create(&ok, &options(&"y".repeat(1023)));
    assert_fresh_pool(&ok, &"y".repeat(1023), false);
}

#[test]
fn duplicates_through_links_are_named() {
    let dir = tmp();
    let d = dir.path();
    fs::write(d.join("a"), vec![0u8; (20 * MIB) as usize]).unwrap();
    symlink(d.join("a"), d.join("link")).unwrap();
    let set = d.join("dup.set");
    fs::write(
        &set,
        format!(
            "PMEMPOOLSET\n20M {0}/a\nREPLICA\n20M {0}/link\n",
            d.display()
        ),
    )
    .unwrap();
    let before = snapshot(d);
    let err = create(&FsStorage, &set, &options("")).expect_err("same inode twice");
    assert!(
        matches!(
            err,
            Error::DuplicatePart {
                line: 4,
                other_line: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("link") && err.to_string().contains("line 2"),
        "{err}"
    );
    assert_eq!(snapshot(d), before);

    // Two spellings of one new file, through a symlinked directory: found
    // once the first is created, and the run is rolled back.
    fs::create_dir(d.join("real")).unwrap();
    symlink(d.join("real"), d.join("alias")).unwrap();
    fs::write(
        &set,
        format!(
            "PMEMPOOLSET\n20M {0}/real/x\nREPLICA\n20M {0}/alias/x\n",
            d.display()
        ),
    )
    .unwrap();
    let err = create(&FsStorage, &set, &options("")).expect_err("same new file twice");
    assert!(
        matches!(
            err,
            Error::DuplicatePart {
                line: 4,
                other_line: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        !d.join("real/x").exists(),
        "the file created before the failure is removed"
    );
}

#[test]
fn failure_midway_removes_new_files_and_keeps_old_ones() {
    let dir = tmp();
    let d = dir.path();
    // An existing zeroed part (reused), two new parts, and a last part in a
    // directory that does not exist.
    let existing = d.join("old");
    fs::write(&existing, vec![0u8; (10 * MIB) as usize]).unwrap();
    fs::set_permissions(&existing, fs::Permissions::from_mode(0o600)).unwrap();
    let set = d.join("mid.set");
    fs::write(
        &set,
        format!(
            "PMEMPOOLSET\n10M {0}/new0\n10M {0}/old\nREPLICA\n10M {0}/new1\n10M {0}/nodir/new2\n",
            d.display()
        ),
    )
    .unwrap();
    let before = snapshot(d);
    let err = create(&FsStorage, &set, &options("")).expect_err("missing directory");
    assert!(matches!(err, Error::PartStorage { line: 6, .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("{}:6: ", set.display())),
        "{err}"
    );
    assert_eq!(
        snapshot(d),
        before,
        "new parts removed, the reused part untouched"
    );

    // An existing part with data in its header page: refused before any
    // file is created.
    let mut bytes = vec![0u8; (10 * MIB) as usize];
    bytes[100] = 1;
    fs::write(&existing, &bytes).unwrap();
    fs::write(
        &set,
        format!("PMEMPOOLSET\n10M {0}/new0\n10M {0}/old\n", d.display()),
    )
    .unwrap();
    let before = snapshot(d);
    let err = create(&FsStorage, &set, &options("")).expect_err("non-empty part");
    assert!(matches!(err, Error::NonEmpty { line: 3, .. }), "{err:?}");
    assert_eq!(snapshot(d), before);

    // An existing part of the wrong size.
    fs::write(&existing, vec![0u8; (9 * MIB) as usize]).unwrap();
    let before = snapshot(d);
    let err = create(&FsStorage, &set, &options("")).expect_err("wrong size");
    assert!(
        matches!(err, Error::PartSizeMismatch { line: 3, actual, configured, .. } if actual == 9 * MIB && configured == 10 * MIB),
        "{err:?}"
    );
    assert_eq!(snapshot(d), before);
}

/// What a killed create leaves on a real file system (issue 15, defect 3):
/// a part created but not yet allocated (0 bytes, mode 000), a part with
/// its header written, a reused part whose header page it wrote, and its
/// journal. The same create run again clears exactly those and makes the
/// pool; a file at a named path that is not provably that run's is refused
/// and nothing is touched.
#[test]
fn a_killed_create_is_finished_by_running_it_again() {
    use poolsync_engine::create::{journal_path, CreateJournal, JournalPart};
    let dir = tmp();
    let d = dir.path();
    let set = write_set(d, "k", &[&[8, 8], &[16]], false);
    let paths = part_paths(&set);
    // A complete pool first: its headers stand for the ones the killed run
    // wrote.
    let first = must_create(&set, &options("k"));
    let created_size = |_: &Path| first.pool_size;
    let uuid = header_of(&paths[0][0]).poolset_uuid;
    // Part r0p1 was being created: empty, mode 000.
    fs::remove_file(&paths[0][1]).unwrap();
    fs::write(&paths[0][1], b"").unwrap();
    fs::set_permissions(&paths[0][1], fs::Permissions::from_mode(0o000)).unwrap();
    let part = |r: usize, p: usize, size: u64, created: bool| JournalPart {
        path: paths[r][p].display().to_string(),
        replica: r,
        part: p,
        size: size * MIB,
        header: true,
        created,
    };
    let mut journal = CreateJournal {
        version: poolsync_engine::create::CREATE_JOURNAL_VERSION,
        target: set.display().to_string(),
        poolset_uuid: uuid.to_canonical(),
        is_poolset: true,
        pool_size: created_size(&set),
        layout: "k".into(),
        mode: 0o664,
        parts: vec![
            part(0, 0, 8, true),
            part(0, 1, 8, true),
            // Reused: an existing zeroed file the run wrote a header into.
            part(1, 0, 16, false),
        ],
    };
    let jpath = journal_path(&set);
    fs::write(&jpath, journal.render().unwrap()).unwrap();
    let reused_mode = mode_of(&paths[1][0]);

    // Without the journal this is refused (the header page is not zero);
    // with it, create finishes.
    let created = must_create(&set, &options("k"));
    assert_eq!(created.finished, None);
    let cleared = created.cleared.as_ref().expect("cleared");
    assert_eq!(cleared.journal, jpath);
    assert_eq!(
        cleared.removed,
        vec![paths[0][0].clone(), paths[0][1].clone()]
    );
    assert_eq!(cleared.zeroed, vec![paths[1][0].clone()]);
    assert!(!jpath.exists(), "the journal is gone");
    assert_fresh_pool(&set, "k", false);
    assert_ne!(header_of(&paths[0][0]).poolset_uuid, uuid, "a new pool");
    assert_eq!(
        mode_of(&paths[1][0]),
        reused_mode,
        "a reused file keeps its mode"
    );
    assert!(created
        .parts
        .iter()
        .any(|p| p.path == paths[1][0] && p.reused));

    // Stopped after it wrote every header, while it gave the files their
    // mode: the pool is whole, and the same create finishes it.
    journal.poolset_uuid = header_of(&paths[0][0]).poolset_uuid.to_canonical();
    for p in [&paths[0][0], &paths[0][1]] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o000)).unwrap();
    }
    fs::write(&jpath, journal.render().unwrap()).unwrap();
    let before = header_of(&paths[0][0]);
    let finished = must_create(&set, &options("k"));
    assert_eq!(finished.finished.as_deref(), Some(jpath.as_path()));
    assert_eq!(header_of(&paths[0][0]), before, "the same pool");
    assert_eq!(mode_of(&paths[0][1]), 0o664);
    assert!(!jpath.exists());
    assert_fresh_pool(&set, "k", false);
    // Asked with other options, it is an existing pool like any other.
    fs::write(&jpath, journal.render().unwrap()).unwrap();
    let err = create(&FsStorage, &set, &options("other")).expect_err("exists");
    assert!(matches!(err, Error::NonEmpty { .. }), "{err:?}");
    assert!(!jpath.exists());

    // A foreign file where the journal names a part: refused, untouched.
    let foreign = vec![0x5au8; (8 * MIB) as usize];
    fs::write(&paths[0][1], &foreign).unwrap();
    fs::write(&jpath, journal.render().unwrap()).unwrap();
    let before = snapshot(d);
    let err = create(&FsStorage, &set, &options("k")).expect_err("foreign file");
    assert!(
        matches!(err, Error::CreateLeftover { ref path, .. } if *path == paths[0][1]),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("not a pool header") && text.contains(&jpath.display().to_string()),
        "{text}"
    );
    assert_eq!(snapshot(d), before, "nothing touched");

    // A journal that does not parse names its line.
    fs::write(&jpath, "version = 1\nnonsense\n").unwrap();
    let err = create(&FsStorage, &set, &options("k")).expect_err("bad journal");
    assert!(
        matches!(err, Error::CreateJournal { line: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn existing_single_file_rules() {
    let dir = tmp();
    let pool = dir.path().join("pool");
    must_create(&pool, &CreateOptions::default());
    let before = snapshot(dir.path());
    // A pool: its header is not zero.
    let err = create(&FsStorage, &pool, &CreateOptions::default()).expect_err("non-empty");
    assert!(matches!(err, Error::NonEmpty { line: 0, .. }), "{err:?}");
    // With a size, an existing file is never reused.
    let sized = CreateOptions {
        size: Some(16 * MIB),
        ..CreateOptions::default()
    };
    let err = create(&FsStorage, &pool, &sized).expect_err("exists");
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert_eq!(snapshot(dir.path()), before);
    // Too small to be reused.
    let small = dir.path().join("small");
    fs::write(&small, vec![0u8; 4096]).unwrap();
    let err = create(&FsStorage, &small, &CreateOptions::default()).expect_err("small");
    assert!(
        matches!(err, Error::FileTooSmall { size: 4096, .. }),
        "{err:?}"
    );
    // A size below the minimum.
    let err = create(
        &FsStorage,
        &dir.path().join("new"),
        &CreateOptions {
            size: Some(7 * MIB),
            ..CreateOptions::default()
        },
    )
    .expect_err("too small");
    assert!(matches!(err, Error::SizeTooSmall { .. }), "{err:?}");
    assert!(!dir.path().join("new").exists());

    // -f replaces the pool: a new pool set UUID, the requested size.
    let old = header_of(&pool).poolset_uuid;
    let created = must_create(
        &pool,
        &CreateOptions {
            force: true,
            ..sized
        },
    );
    assert_eq!(created.removed, std::slice::from_ref(&pool));
    assert_eq!(fs::metadata(&pool).unwrap().len(), 16 * MIB);
    assert_ne!(header_of(&pool).poolset_uuid, old);
    // -f without a size: the new pool takes the old file's size.
    let old = header_of(&pool).poolset_uuid;
    must_create(
        &pool,
        &CreateOptions {
            force: true,
            ..CreateOptions::default()
        },
    );
    assert_eq!(fs::metadata(&pool).unwrap().len(), 16 * MIB);
    assert_ne!(header_of(&pool).poolset_uuid, old);
    // ...so a file too small for a pool is refused, and kept.
    let before = snapshot(dir.path());
    let err = create(
        &FsStorage,
        &small,
        &CreateOptions {
            force: true,
            ..CreateOptions::default()
        },
    )
    .expect_err("small");
    assert!(matches!(err, Error::FileTooSmall { .. }), "{err:?}");
    assert_eq!(snapshot(dir.path()), before);
    assert_fresh_pool(&pool, "", false);
}

#[test]
fn force_recreates_a_pool_set_unless_in_use() {
    let dir = tmp();
    let set = write_set(dir.path(), "f", &[&[10, 8], &[18]], false);
    must_create(&set, &options(""));
    let old = header_of(&dir.path().join("f_r0p0")).poolset_uuid;
    // A part that a running program holds open: refused, nothing removed.
    let lock = FsStorage
        .open(&dir.path().join("f_r1p0"), Access::ReadOnly)
        .unwrap();
    let before = snapshot(dir.path());
    let err = create(
        &FsStorage,
        &set,
        &CreateOptions {
            force: true,
            ..options("")
        },
    )
    .expect_err("in use");
    assert!(err.to_string().contains("in use"), "{err}");
    assert_eq!(snapshot(dir.path()), before);
    drop(lock);
    // A missing part is fine with -f.
    fs::remove_file(dir.path().join("f_r0p1")).unwrap();
    let created = must_create(
        &set,
        &CreateOptions {
            force: true,
            ..options("again")
        },
    );
    assert_eq!(created.removed.len(), 2);
    assert_ne!(header_of(&dir.path().join("f_r0p0")).poolset_uuid, old);
    assert_fresh_pool(&set, "again", false);
}

/// Stops `create` at every flush, fence and directory sync it makes
/// (ARCHITECTURE.md, "Crash model", rule 3): after a power failure no part
/// carries a valid header unless every part of every replica exists with all
/// its data, and running the same `create` again (no `-f`: its journal names
/// what the stopped run made) always yields a complete pool, and no journal.
#[test]
fn create_survives_a_crash_at_every_persistence_point() {
    create_sweep(Sweeping::Crashes);
}

/// EIO, ENOSPC and EROFS at calls of `create`: a clear error, no header
/// without the whole pool's data, and `create` again makes the pool.
#[test]
fn create_under_faults() {
    create_sweep(Sweeping::Faults);
}

/// `create_survives_a_crash_at_every_persistence_point`'s checks on the
/// sweep `how` names.
fn create_sweep(how: Sweeping) {
    let set_path = Path::new("/pool/crash.set");
    let text = "PMEMPOOLSET\n6M /pool/a\n6M /pool/b\nREPLICA\n12M /pool/c\n";
    let base = SimStorage::new();
    base.add_dir(Path::new("/pool")).expect("dir");
    base.insert_file(set_path, text.as_bytes(), 0o644)
        .expect("set file");
    let opts = options("crash");
    let test = CrashTest::new("create", base, |s| create(s, set_path, &opts));
    let reference = test.reference();
    let events = reference.n();
    assert!(events >= 8, "create makes {events} persistence events");
    assert_pool(&sim_reader(&reference.storage), set_path, "crash", false);

    let parts = ["/pool/a", "/pool/b", "/pool/c"].map(Path::new);
    how.sweep(&test, &reference)
        .after_crash(|c| {
            let headed = parts.iter().any(|p| {
                c.storage.written_bytes(p).is_some_and(|b| {
                    b.len() >= POOL_HDR_SIZE && b[..POOL_HDR_SIZE].iter().any(|&x| x != 0)
                })
            });
            if headed {
                // A header exists, so the whole pool must be there (the
                // other headers may still be missing: sync repairs that).
                let read = sim_reader(&c.storage);
                let (set, paths) = layout_of(&read, set_path);
                for (r, replica) in paths.iter().enumerate() {
                    let image = read_logical(&read, &set, replica, r, 0x1000, 0x1000);
                    let desc = ObjDescriptor::decode(&image).expect("descriptor");
                    assert!(desc.checksum_ok(), "{c}: replica {r} descriptor");
                }
            }
        })
        // Running the same create again converges to a complete pool.
        .rerun(|c| {
            let journal = poolsync_engine::create::journal_path(set_path);
            match create(&c.storage, set_path, &opts) {
                Ok(created) => created,
                // Stopped after it removed its journal: the pool is whole,
                // and create refuses an existing pool as pmempool does.
                Err(Error::NonEmpty { .. })
                    if c.storage.stat(&journal).expect("stat").is_none() =>
                {
                    assert_pool(&sim_reader(&c.storage), set_path, "crash", false);
                    let again = CreateOptions {
                        force: true,
                        ..opts.clone()
                    };
                    create(&c.storage, set_path, &again)
                        .unwrap_or_else(|e| panic!("{c}: create -f of the whole pool: {e}"))
                }
                Err(e) => panic!("{c}: create again after the crash: {e}"),
            }
        })
        // New pools get fresh UUIDs: the end state is checked, not compared.
        .without_end_image()
        .end(|c, _| {
            assert_pool(&sim_reader(&c.storage), set_path, "crash", false);
            let journal = poolsync_engine::create::journal_path(set_path);
            for leftover in [
                journal.clone(),
                journal.with_extension("poolsync-create.tmp"),
            ] {
                assert!(
                    c.storage.stat(&leftover).expect("stat").is_none(),
                    "{c}: {} is left",
                    leftover.display()
                );
            }
        })
        .run();
}

// ---------------------------------------------------------------- rm

/// Records what `rm` reports, and answers questions from a script.
#[derive(Debug, Default)]
struct Script {
    answers: Vec<bool>,
    asked: Vec<(PathBuf, bool)>,
    visited: Vec<PathBuf>,
}

impl RmObserver for Script {
    fn visiting(&mut self, path: &Path, _role: &Role) {
        self.visited.push(path.to_path_buf());
    }
    fn confirm(&mut self, path: &Path, write_protected: bool) -> bool {
        self.asked.push((path.to_path_buf(), write_protected));
        if self.answers.is_empty() {
            false
        } else {
            self.answers.remove(0)
        }
    }
}

fn outcomes(report: &RmReport) -> Vec<&'static str> {
    report
        .files
        .iter()
        .map(|f| match f.outcome {
            Outcome::Removed => "removed",
            Outcome::Zeroed => "zeroed",
            Outcome::Declined => "declined",
            Outcome::Missing => "missing",
            Outcome::Skipped => "skipped",
            Outcome::Failed(_) => "failed",
            Outcome::NotOwned { .. } => "not owned",
            Outcome::Kept { .. } => "kept",
        })
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn rm_pool_set_parts_then_set_file() {
    let dir = tmp();
    let set = write_set(dir.path(), "s", &[&[10, 8], &[18]], false);
    must_create(&set, &options(""));
    let mut script = Script::default();
    let report = rm(&FsStorage, &set, &RmOptions::default(), &mut script).unwrap();
    assert!(report.ok() && report.is_poolset);
    assert_eq!(outcomes(&report), ["removed"; 3]);
    assert!(
        script.asked.is_empty(),
        "nothing write-protected, nothing asked"
    );
    assert_eq!(names(dir.path()), ["s.set"]);

    // Again: the parts are missing now.
    let report = rm(
        &FsStorage,
        &set,
        &RmOptions::default(),
        &mut Script::default(),
    )
    .unwrap();
    assert!(!report.ok());
    assert_eq!(outcomes(&report), ["failed"; 3]);
    let forced = RmOptions {
        force: true,
        remove_set_file: true,
        ask: Ask::Never,
        ..RmOptions::default()
    };
    let report = rm(&FsStorage, &set, &forced, &mut Script::default()).unwrap();
    assert!(report.ok());
    assert_eq!(
        outcomes(&report),
        ["missing", "missing", "missing", "removed"]
    );
    assert_eq!(report.files[3].role, Role::SetFile);
    assert!(names(dir.path()).is_empty());
}

/// A create journal for `target` that names no part: what a `create` of
/// it stopped before its first file would have left.
fn journal_text(target: &Path, created: &Created) -> String {
    poolsync_engine::create::CreateJournal {
        version: poolsync_engine::create::CREATE_JOURNAL_VERSION,
        target: target.display().to_string(),
        poolset_uuid: "6b0a3e1c-58b1-4ad3-9d0b-0d6f00f0a8c1".into(),
        is_poolset: created.is_poolset,
        pool_size: created.pool_size,
        layout: String::new(),
        mode: 0o664,
        parts: Vec::new(),
    }
    .render()
    .unwrap()
}

/// `rm` of `target` with the default options, which must succeed.
fn rm_ok(target: &Path) -> poolsync_engine::rm::RmReport {
    let report = rm(
        &FsStorage,
        target,
        &RmOptions::default(),
        &mut Script::default(),
    )
    .unwrap();
    assert!(report.ok(), "{report:?}");
    report
}

fn roles_of(report: &poolsync_engine::rm::RmReport) -> Vec<&Role> {
    report.files.iter().map(|f| &f.role).collect()
}

/// What an interrupted create or import left beside the set file goes
/// with the pool, when it reads as such; a file of that name that does not
/// is not poolsync's and stays.
#[test]
fn rm_removes_an_interrupted_runs_journal_and_deletion_record() {
    let dir = tmp();
    let set = write_set(dir.path(), "j", &[&[10]], false);
    let created = must_create(&set, &options(""));
    let journal = poolsync_engine::create::journal_path(&set);
    let record = poolsync_engine::packets::deleting::deleting_path(&set);
    fs::write(&journal, journal_text(&set, &created)).unwrap();
    fs::write(&record, "version = 1\npackets = []\n").unwrap();
    let report = rm_ok(&set);
    let roles = roles_of(&report);
    assert!(
        roles.contains(&&Role::CreateJournal) && roles.contains(&&Role::DeletionRecord),
        "{roles:?}"
    );
    assert_eq!(names(dir.path()), ["j.set"]);

    must_create(&set, &options(""));
    fs::write(&journal, "not a journal").unwrap();
    rm_ok(&set);
    assert!(journal.exists(), "a file that is not a journal is kept");
}

/// The same beside a single-file pool: the journal of a `create` of it
/// goes with the pool file.
#[test]
fn rm_removes_a_single_file_pools_journal() {
    let dir = tmp();
    let pool = dir.path().join("pool.obj");
    let created = must_create(&pool, &CreateOptions::default());
    let journal = poolsync_engine::create::journal_path(&pool);
    fs::write(&journal, journal_text(&pool, &created)).unwrap();
    let report = rm_ok(&pool);
    assert_eq!(roles_of(&report), [&Role::Pool, &Role::CreateJournal]);
    assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
}

#[test]
fn rm_missing_part_keeps_the_set_file() {
    let dir = tmp();
    let set = write_set(dir.path(), "s", &[&[10, 8]], false);
    must_create(&set, &options(""));
    fs::remove_file(dir.path().join("s_r0p0")).unwrap();
    let opts = RmOptions {
        remove_set_file: true,
        ..RmOptions::default()
    };
    let report = rm(&FsStorage, &set, &opts, &mut Script::default()).unwrap();
    assert_eq!(
        outcomes(&report),
        ["failed", "removed"],
        "the other parts are still removed"
    );
    assert!(matches!(
        report.files[0].outcome,
        Outcome::Failed(Error::NotFound { .. })
    ));
    assert_eq!(names(dir.path()), ["s.set"]);
}

#[test]
fn rm_asks_as_told() {
    let dir = tmp();
    let set = write_set(dir.path(), "s", &[&[10, 8], &[18]], false);
    must_create(&set, &options(""));
    let mut script = Script {
        answers: vec![true, false, true, true],
        ..Script::default()
    };
    let opts = RmOptions {
        remove_set_file: true,
        ask: Ask::Always,
        force: false,
        ..RmOptions::default()
    };
    let report = rm(&FsStorage, &set, &opts, &mut script).unwrap();
    assert_eq!(outcomes(&report), ["removed", "declined", "removed"]);
    assert_eq!(script.asked.len(), 3);
    assert!(script.asked.iter().all(|(_, wp)| !wp));
    // A part was kept, so the set file still describes something: kept too.
    assert_eq!(names(dir.path()), ["s.set", "s_r0p1"]);
}

#[test]
fn rm_refuses_a_pool_in_use() {
    let dir = tmp();
    let set = write_set(dir.path(), "s", &[&[10, 8]], false);
    must_create(&set, &options(""));
    let lock = FsStorage
        .open(&dir.path().join("s_r0p1"), Access::ReadWrite)
        .unwrap();
    let opts = RmOptions {
        force: true,
        remove_set_file: true,
        ask: Ask::Never,
        ..RmOptions::default()
    };
    let report = rm(&FsStorage, &set, &opts, &mut Script::default()).unwrap();
    assert_eq!(
        outcomes(&report),
        ["removed", "failed"],
        "-f does not override the lock"
    );
    assert_eq!(names(dir.path()), ["s.set", "s_r0p1"]);
    drop(lock);

    let pool = dir.path().join("single");
    must_create(&pool, &CreateOptions::default());
    let lock = open_when_free(&pool);
    let err = rm(
        &FsStorage,
        &pool,
        &RmOptions::default(),
        &mut Script::default(),
    )
    .expect_err("in use");
    assert!(err.to_string().contains("in use"), "{err}");
    drop(lock);
    let report = rm(
        &FsStorage,
        &pool,
        &RmOptions::default(),
        &mut Script::default(),
    )
    .unwrap();
    assert!(!report.is_poolset);
    assert_eq!(outcomes(&report), ["removed"]);
    assert!(!pool.exists());
}

#[test]
fn rm_targets_that_are_not_pools() {
    let dir = tmp();
    let missing = dir.path().join("nothing");
    let err = rm(
        &FsStorage,
        &missing,
        &RmOptions::default(),
        &mut Script::default(),
    )
    .expect_err("missing");
    assert!(matches!(err, Error::NotFound { .. }));
    let forced = RmOptions {
        force: true,
        ..RmOptions::default()
    };
    let report = rm(&FsStorage, &missing, &forced, &mut Script::default()).unwrap();
    assert!(report.ok());
    assert_eq!(outcomes(&report), ["missing"]);

    let bad = dir.path().join("bad.set");
    fs::write(
        &bad,
        format!("PMEMPOOLSET\n20M {}/p\nfoo\n", dir.path().display()),
    )
    .unwrap();
    let err = rm(&FsStorage, &bad, &forced, &mut Script::default()).expect_err("unparsable");
    assert!(matches!(err, Error::PoolSet { line: 3, .. }), "{err:?}");
    assert!(bad.exists());

    let err = rm(&FsStorage, dir.path(), &forced, &mut Script::default()).expect_err("directory");
    assert!(matches!(err, Error::IsDirectory { .. }));

    // A remote replica that cannot be reached (`rm` reaches no host): an
    // error even with -f, which ignores missing files only, and the set
    // file stays while it names parts that may exist.
    let remote = dir.path().join("remote.set");
    fs::write(
        &remote,
        format!(
            "PMEMPOOLSET\n20M {}/p\nREPLICA host desc\n",
            dir.path().display()
        ),
    )
    .unwrap();
    fs::write(dir.path().join("p"), b"x").unwrap();
    let report = rm(
        &FsStorage,
        &remote,
        &RmOptions::default(),
        &mut Script::default(),
    )
    .unwrap();
    assert_eq!(outcomes(&report), ["removed", "failed"]);
    fs::write(dir.path().join("p"), b"x").unwrap();
    let opts = RmOptions {
        force: true,
        remove_set_file: true,
        ask: Ask::Never,
        ..RmOptions::default()
    };
    let report = rm(&FsStorage, &remote, &opts, &mut Script::default()).unwrap();
    assert_eq!(outcomes(&report), ["removed", "failed"]);
    assert!(names(dir.path()) == ["bad.set", "remote.set"]);
}

/// Stops `rm -l` of a pool set whose parts lie in two directories at
/// every directory sync it makes (its only persistence events), and cuts
/// the power after it returns: every part is then either there and intact
/// or gone, the set file is gone only if every part is (and after the
/// run, everything is gone), and `rm -f -l` finishes the job.
#[test]
fn rm_survives_a_crash_at_every_persistence_point() {
    rm_sweep(Sweeping::Crashes);
}

/// EIO and EROFS at calls of `rm -l`: a clear error, every part intact or
/// gone, the set file gone only with every part, and `rm -f -l` finishes.
#[test]
fn rm_under_faults() {
    rm_sweep(Sweeping::Faults);
}

/// `rm_survives_a_crash_at_every_persistence_point`'s checks on the sweep
/// `how` names.
fn rm_sweep(how: Sweeping) {
    let set_path = Path::new("/pool/rm.set");
    let parts = ["/pool/a/r0p0", "/pool/b/r0p1", "/pool/b/r1p0"].map(Path::new);
    let text = "PMEMPOOLSET\n8M /pool/a/r0p0\n8M /pool/b/r0p1\nREPLICA\n16M /pool/b/r1p0\n";
    let base = SimStorage::new();
    for dir in ["/pool/a", "/pool/b"] {
        base.add_dir(Path::new(dir)).expect("dir");
    }
    base.insert_file(set_path, text.as_bytes(), 0o644)
        .expect("set file");
    create(&base, set_path, &options("rm")).expect("create");
    let before = base.image();
    let first_failure =
        |report: RmReport| match report.files.into_iter().find_map(|f| match f.outcome {
            Outcome::Failed(e) => Some(e),
            _ => None,
        }) {
            Some(e) => Err(e),
            None => Ok(()),
        };
    let rm_l = RmOptions {
        remove_set_file: true,
        ..RmOptions::default()
    };
    let test = CrashTest::new("rm -l", base, |s| {
        first_failure(rm(s, set_path, &rm_l, &mut Script::default())?)
    });
    let reference = test.reference();
    assert_eq!(
        reference.n(),
        3,
        "one directory sync per directory of parts, then the set file's"
    );
    assert!(reference.storage.paths().is_empty(), "everything removed");
    let n = reference.n();

    how.sweep(&test, &reference)
        .survivals(|k| {
            let mut survivals = vec![Survival::Durable, Survival::Everything];
            survivals.extend((0..6).map(|i| Survival::Torn { seed: k * 16 + i }));
            survivals
        })
        .threads(1)
        .after_crash(|c| {
            if c.k == n && c.fault.is_none() {
                // What rm said it removed stays removed.
                assert!(c.storage.paths().is_empty(), "{c}: a file came back");
            }
            for part in parts {
                let now = c.storage.written_bytes(part);
                assert!(
                    now.is_none() || now == before.get(part).map(|f| f.bytes.clone()),
                    "{c}: {} neither intact nor gone",
                    part.display()
                );
            }
            if c.storage.stat(set_path).expect("stat").is_none() {
                assert!(
                    parts.iter().all(|p| c.storage.written_bytes(p).is_none()),
                    "{c}: the set file is gone, a part is left"
                );
            }
        })
        .rerun(|c| {
            let forced = RmOptions {
                force: true,
                ..rm_l
            };
            let report = rm(&c.storage, set_path, &forced, &mut Script::default())
                .unwrap_or_else(|e| panic!("{c}: rm -f -l: {e}"));
            let outcomes = outcomes(&report);
            first_failure(report).unwrap_or_else(|e| panic!("{c}: rm -f -l: {e}"));
            c.note(format!("re-run: {outcomes:?}"));
        })
        .run();
}

/// Opens `path` read-only, retrying for a while when it is locked: another
/// test thread that forks a process at the moment a file is closed lends
/// the child its open file description, and the flock with it, until the
/// child execs.
fn open_when_free(path: &Path) -> poolsync_pmem::FsFile {
    for _ in 0..200 {
        match FsStorage.open(path, Access::ReadOnly) {
            Err(poolsync_pmem::Error::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return other.expect("open"),
        }
    }
    panic!("{} stayed locked", path.display())
}
