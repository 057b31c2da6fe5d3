//! The walker against the real libpmemobj 1.12: the committed fixture of a
//! used pool (always), and live pool sets used by `tests/data/heapwork.c`
//! (when `cc`, libpmemobj's headers and `pmempool` are installed).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use poolsync_header::heap::{LiveMap, Owner, Place, ZONE_MAX_SIZE};
use poolsync_header::{HEAP_HDR_SIZE, OBJ_DESC_OFF, OBJ_DESC_PERSISTENT_LEN, ZONE_METADATA_SIZE};

use super::{check_map_invariants, Sparse};

const MIB: u64 = 1 << 20;
/// Flag of internal objects (ulog extensions, the root) in an allocation
/// header's flags; `pmemobj_first`/`pmemobj_next` skip them.
const OBJ_INTERNAL_OBJECT: u64 = 1 << 15;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// One line of `heapwork` output: (`obj`, `root` or `freed`, offset, size).
fn parse_objects(text: &str, tag: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(tag)).then(|| {
                let off = f.next().unwrap().parse().unwrap();
                let size = f.next().unwrap().parse().unwrap();
                (off, size)
            })
        })
        .collect()
}

/// The checks shared by the fixture and the live pools: every object
/// libpmemobj lists is an object of the map with the same offset and usable
/// size, every other object of the map is internal, and no byte of a freed
/// object is live.
fn check_against_libpmemobj(
    map: &LiveMap,
    image: &Sparse,
    listed: &[(u64, u64)],
    freed: &[(u64, u64)],
) {
    check_map_invariants(map, image.size);
    let walked: BTreeMap<u64, u64> = map.objects().collect();
    for &(off, size) in listed {
        assert_eq!(
            walked.get(&off),
            Some(&size),
            "libpmemobj object at {off:#x} of size {size}: walker says {:?}",
            map.owner_of(off)
        );
        match map.owner_of(off) {
            Some(Place::Object {
                offset, size: s, ..
            }) => assert_eq!((offset, s), (off, size)),
            other => panic!("object at {off:#x} is {other:?}"),
        }
    }
    let listed_set: BTreeSet<u64> = listed.iter().map(|&(o, _)| o).collect();
    for r in map.ranges() {
        if let Owner::Object { offset, .. } = r.owner {
            if listed_set.contains(&offset) {
                continue;
            }
            // Only internal objects stay hidden from pmemobj_first/next; they
            // all have compact headers with the internal flag.
            let hdr = image.read_vec(r.offset, 16);
            let flags = u64::from_le_bytes(hdr[..8].try_into().unwrap()) >> 48;
            assert_ne!(
                flags & OBJ_INTERNAL_OBJECT,
                0,
                "object at {offset:#x} is neither listed by libpmemobj nor internal"
            );
        }
    }
    for &(off, size) in freed {
        assert!(
            !listed_set.contains(&off),
            "freed object at {off:#x} is listed"
        );
        let live = map.overlapping(off, size);
        assert!(
            live.is_empty(),
            "freed object at {off:#x} of size {size} overlaps live {live:?}"
        );
    }
}

#[test]
fn fixture_of_a_used_pool_walks_to_libpmemobjs_objects() {
    let dir = repo_file("fixtures/pmdk/heap");
    let raw = fs::read(dir.join("image.bin")).unwrap();
    let image = parse_sparse(&raw);
    let objects = fs::read_to_string(dir.join("objects.txt")).unwrap();
    let freed = fs::read_to_string(dir.join("freed.txt")).unwrap();
    let mut listed = parse_objects(&objects, "obj");
    let root = parse_objects(&objects, "root");
    let freed = parse_objects(&freed, "freed");
    assert!(listed.len() > 100 && root.len() == 1 && freed.len() > 10);
    listed.extend(root);

    let map = image.walk().unwrap();
    check_against_libpmemobj(&map, &image, &listed, &freed);
    let stats = map.stats();
    assert_eq!((stats.zones, stats.initialised_zones), (1, 1));
    assert!(stats.runs >= 8, "{stats:?}");
    assert!(stats.used_chunks >= 11, "{stats:?}");
    assert!(stats.free_chunks > 0, "{stats:?}");
    // Every run of the three custom classes and of the default ones.
    let mut flags = BTreeSet::new();
    for r in map.ranges() {
        if let Owner::RunMetadata { zone, chunk } = r.owner {
            let at = image.descriptor().heap_offset
                + HEAP_HDR_SIZE as u64
                + u64::from(zone) * ZONE_MAX_SIZE
                + 64
                + u64::from(chunk) * 8;
            flags.insert(u16::from_le_bytes(
                image.read_vec(at + 2, 2).try_into().unwrap(),
            ));
        }
    }
    assert_eq!(
        flags,
        BTreeSet::from([0x8, 0x9, 0xA, 0xD]),
        "run flags: legacy, compact, no header, aligned"
    );
}

/// Decodes `fixtures/pmdk/heap/image.bin`: magic `PSHEAP01`, pool size, then
/// records of (offset u64, length u32, bytes), all little-endian.
fn parse_sparse(raw: &[u8]) -> Sparse {
    assert_eq!(&raw[..8], b"PSHEAP01");
    let size = u64::from_le_bytes(raw[8..16].try_into().unwrap());
    let mut image = Sparse::new(size);
    let mut at = 16;
    while at < raw.len() {
        let off = u64::from_le_bytes(raw[at..at + 8].try_into().unwrap());
        let len = u32::from_le_bytes(raw[at + 8..at + 12].try_into().unwrap()) as usize;
        image.write(off, &raw[at + 12..at + 12 + len]);
        at += 12 + len;
    }
    image
}

// ---------------------------------------------------------------------------
// Live pools.

/// Whether `cc`, libpmemobj's headers and `pmempool` are there. Without them
/// the test fails under `CI=true` and otherwise appends `<test>: <reason>` to
/// the file named by `POOLSYNC_SKIP_LOG` and is skipped.
fn pmdk_available(test: &str) -> bool {
    let mut missing = Vec::new();
    if !on_path("cc") {
        missing.push("C compiler `cc` not on PATH (package gcc)");
    }
    if !Path::new("/usr/include/libpmemobj.h").is_file() {
        missing.push("/usr/include/libpmemobj.h not found (package libpmemobj-dev)");
    }
    if !on_path("pmempool") {
        missing.push("pmempool not on PATH (package pmdk-tools)");
    }
    if missing.is_empty() {
        return true;
    }
    let what = missing.join("; ");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: PMDK is required on CI but missing: {what}"
    );
    eprintln!("skipping {test}: {what}");
    if let Some(log) = std::env::var_os("POOLSYNC_SKIP_LOG") {
        let line = format!("header::{test}: {what}\n");
        let _ = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
    false
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Compiles `tests/data/heapwork.c` into `dir`.
fn build_heapwork(dir: &Path) -> PathBuf {
    let exe = dir.join("heapwork");
    run(Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&exe)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/heapwork.c"))
        .arg("-lpmemobj"));
    exe
}

/// Runs heapwork; `PMEM_IS_PMEM_FORCE` makes libpmem flush with CPU
/// instructions instead of msync, which changes nothing on media but makes
/// the many small persists fast.
fn heapwork(exe: &Path, pool: &Path, args: &[&str]) -> String {
    run(Command::new(exe)
        .env("PMEM_IS_PMEM_FORCE", "1")
        .arg(pool)
        .args(args))
}

/// The logical image of one replica from its part files (docs/format.md §15.1).
fn replica_image(parts: &[PathBuf]) -> Vec<u8> {
    let mut image = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let bytes = fs::read(p).unwrap();
        let usable = bytes.len() / 4096 * 4096;
        let from = if i == 0 { 0 } else { 4096 };
        image.extend_from_slice(&bytes[from..usable]);
    }
    image
}

fn sparse_of(image: &[u8], size: u64) -> Sparse {
    let mut s = Sparse::new(size);
    s.write(0, &image[..size as usize]);
    s
}

/// Names the region of a byte outside the live ranges, for the report.
fn region_of(offset: u64, heap_offset: u64) -> &'static str {
    let zone_rel = offset.checked_sub(heap_offset + HEAP_HDR_SIZE as u64);
    if offset < 0x1000 {
        "pool header page"
    } else if offset < 0x2000 && offset >= OBJ_DESC_OFF + OBJ_DESC_PERSISTENT_LEN as u64 {
        "descriptor volatile area"
    } else if let Some(rel) = zone_rel.map(|r| r % ZONE_MAX_SIZE) {
        if rel < 64 {
            "zone header"
        } else if rel < ZONE_METADATA_SIZE {
            "chunk header not read by libpmemobj (footer or stale)"
        } else {
            "chunk space outside objects and run metadata"
        }
    } else {
        "other"
    }
}

/// The key property of verification: after several libpmemobj sessions on
/// a two-replica pool set, the replicas agree on every live byte of the
/// master's map and differ only outside it.
#[test]
fn replicas_of_a_used_pool_agree_on_every_live_range() {
    let test = "replicas_of_a_used_pool_agree_on_every_live_range";
    if !pmdk_available(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = build_heapwork(dir.path());
    let part = |name: &str| dir.path().join(name);
    let set = dir.path().join("pool.set");
    fs::write(
        &set,
        format!(
            "PMEMPOOLSET\n32M {}\n32M {}\nREPLICA\n64M {}\n",
            part("r0p0").display(),
            part("r0p1").display(),
            part("r1p0").display()
        ),
    )
    .unwrap();
    run(Command::new("pmempool")
        .args(["create", "-l", "heapwork", "obj"])
        .arg(&set));

    heapwork(&exe, &set, &["session", "1", "400", "2", "0", "0"]);
    heapwork(&exe, &set, &["session", "2", "300", "2", "5", "0"]);
    let freed = heapwork(&exe, &set, &["session", "3", "200", "1", "6", "0"]);
    let listing = heapwork(&exe, &set, &["list"]);
    let mut listed = parse_objects(&listing, "obj");
    listed.extend(parse_objects(&listing, "root"));
    let freed = parse_objects(&freed, "freed");
    assert!(listed.len() > 300 && freed.len() > 50, "{listing}");

    let r0 = replica_image(&[part("r0p0"), part("r0p1")]);
    let r1 = replica_image(&[part("r1p0")]);
    let pool_size = (r0.len().min(r1.len())) as u64;
    assert_eq!(pool_size, 64 * MIB - 4096);
    let master = sparse_of(&r0, pool_size);
    let map = master.walk().unwrap();
    check_against_libpmemobj(&map, &master, &listed, &freed);
    let stats = *map.stats();
    assert!(stats.used_chunks > 0 && stats.runs > 5 && stats.free_chunks > 0);

    // The walk reads live bytes only, so the other replica gives the same map.
    let replica = sparse_of(&r1, pool_size);
    assert_eq!(replica.walk().unwrap(), map);

    let mut live_diffs = Vec::new();
    for (start, end) in map.spans() {
        for off in start..end {
            if r0[off as usize] != r1[off as usize] {
                live_diffs.push(off);
            }
        }
    }
    let shown: Vec<String> = live_diffs
        .iter()
        .take(10)
        .map(|&o| format!("{o:#x} ({})", map.owner_of(o).unwrap()))
        .collect();
    assert!(
        live_diffs.is_empty(),
        "{} live bytes differ between the replicas: {}",
        live_diffs.len(),
        shown.join(", ")
    );

    // Report where the replicas differ outside the live ranges.
    let heap_offset = master.descriptor().heap_offset;
    let mut outside: BTreeMap<&str, (u64, Vec<u64>)> = BTreeMap::new();
    for (off, (a, b)) in r0[..pool_size as usize].iter().zip(&r1).enumerate() {
        if a != b {
            let off = off as u64;
            assert!(!map.is_live(off));
            let entry = outside.entry(region_of(off, heap_offset)).or_default();
            entry.0 += 1;
            if entry.1.len() < 4 {
                entry.1.push(off);
            }
        }
    }
    eprintln!(
        "replica bytes differing outside live ranges ({} live bytes, {} objects):",
        stats.live_bytes, stats.objects
    );
    for (region, (count, examples)) in &outside {
        let ex: Vec<String> = examples.iter().map(|o| format!("{o:#x}")).collect();
        eprintln!("  {region}: {count} bytes, e.g. {}", ex.join(" "));
    }
    assert!(
        outside.contains_key("descriptor volatile area"),
        "libpmemobj leaves per-replica state in the volatile area: {outside:?}"
    );
    assert!(outside.contains_key("pool header page"));
}
