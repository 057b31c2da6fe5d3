//! Heap-aware verification against real libpmemobj pools: `check --data`
//! and `sync --verify` on pool sets made by `pmempool create` and used by
//! libpmemobj (`heapwork` from the header crate's test data: many small
//! objects in runs, large objects in used chunks, frees and transactions,
//! in several sessions, some after a replica was rebuilt; then `objclient
//! fill` for a root object whose every replica libpmemobj can check).

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use poolsync_header::heap::zone_offset;
use poolsync_header::{HeapHeader, ObjDescriptor, OBJ_DESC_LEN, OBJ_DESC_OFF};

use crate::support::{
    objclient, pmempool, poolsync, read_at, snapshot, temp_dir, write_set, SetFiles, Shape, SET_3R,
    SET_SINGLEHDR,
};
use crate::sync::{copy_set, set_text, write_logical};

const SEED: &str = "4242";
/// Bytes of the root object's pattern: several chunks (a used block).
const ROOT_BYTES: u64 = 1 << 20;

/// Two replicas, three and two parts.
const SET_2R: Shape = Shape {
    name: "2replicas",
    replicas: &[&[12, 12, 12], &[20, 17]],
    singlehdr: false,
};

/// `heapwork`, compiled once per source version (as `objclient` is) under
/// `CARGO_TARGET_TMPDIR`, through a per-process temporary name and a rename.
fn heapwork_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let source = include_str!("../../../header/tests/data/heapwork.c");
        let mut hasher = DefaultHasher::new();
        source.hash(&mut hasher);
        let key = hasher.finish();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop");
        fs::create_dir_all(&dir).expect("create CARGO_TARGET_TMPDIR/interop");
        let exe = dir.join(format!("heapwork-{key:016x}"));
        if exe.is_file() {
            return exe;
        }
        let src = dir.join(format!("heapwork-{key:016x}-{}.c", std::process::id()));
        fs::write(&src, source).expect("write heapwork source");
        let tmp = dir.join(format!("heapwork-{key:016x}-{}.tmp", std::process::id()));
        let out = Command::new("cc")
            .args(["-O1", "-o"])
            .arg(&tmp)
            .arg(&src)
            .arg("-lpmemobj")
            .output()
            .expect("run cc");
        assert!(
            out.status.success(),
            "cannot compile heapwork: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::rename(&tmp, &exe).expect("move heapwork into place");
        let _ = fs::remove_file(&src);
        exe
    })
}

/// Runs `heapwork <set> <args>` and returns its stdout.
fn heapwork(set: &Path, args: &[&str]) -> String {
    let out = Command::new(heapwork_path())
        .env("PMEM_IS_PMEM_FORCE", "1")
        .arg(set)
        .args(args)
        .output()
        .expect("run heapwork");
    assert!(
        out.status.success(),
        "heapwork {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(offset, size)` of every line `<tag> <offset> <size>`.
fn tagged(text: &str, tag: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == tag).then_some(())?;
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect()
}

/// A used pool set: what the tests damage.
struct Used {
    _dir: tempfile::TempDir,
    shape: &'static Shape,
    files: SetFiles,
    /// Pool offset of the root object's pattern.
    root_data: u64,
    /// Small objects (`heapwork list`) after all sessions.
    objects: Vec<(u64, u64)>,
    /// Objects freed by the last session.
    freed: Vec<(u64, u64)>,
    heap_offset: u64,
}

/// Creates `shape` with pmempool, runs two heapwork sessions, rebuilds
/// replica 1 with `pmempool sync`, runs two more sessions, then fills the
/// root object with objclient.
fn used_pool(shape: &'static Shape, nlarge: &str, nlarge_later: &str) -> Used {
    let dir = temp_dir();
    let files = write_set(dir.path(), "pool", shape);
    pmempool(&["create", "obj", "--layout", "heapwork", files.set_str()]).assert_success();
    let set = files.set.clone();
    heapwork(&set, &["session", "1", "300", nlarge, "5", "0"]);
    heapwork(&set, &["session", "2", "200", nlarge, "7", "0"]);
    for p in &files.parts[1] {
        fs::remove_file(p).expect("remove replica 1");
    }
    pmempool(&["sync", files.set_str()]).assert_success();
    heapwork(&set, &["session", "3", "250", nlarge_later, "6", "0"]);
    let last = heapwork(&set, &["session", "4", "150", "0", "4", "0"]);
    let fill = objclient(&["fill", files.set_str(), "-", &ROOT_BYTES.to_string(), SEED]);
    fill.assert_success();
    let root_data = fill
        .stdout
        .split_whitespace()
        .last()
        .and_then(|w| w.parse().ok())
        .expect("objclient prints the root offset");
    let objects = tagged(&heapwork(&set, &["list"]), "obj");
    let desc = read_at(files.part(0, 0), OBJ_DESC_OFF, OBJ_DESC_LEN);
    let heap_offset = ObjDescriptor::decode(&desc)
        .expect("descriptor")
        .heap_offset;
    Used {
        _dir: dir,
        shape,
        files,
        root_data,
        objects,
        freed: tagged(&last, "freed"),
        heap_offset,
    }
}

impl Used {
    fn set(&self) -> &str {
        self.files.set_str()
    }

    /// Flips `len` bytes at logical `at` of replica `r`.
    fn flip(&self, r: usize, at: u64, len: usize) {
        let before = self.read(r, at, len);
        let flipped: Vec<u8> = before.iter().map(|b| !b).collect();
        write_logical(&self.files, self.shape, r, at, &flipped);
    }

    /// Logical bytes of replica `r` (within one part).
    fn read(&self, r: usize, at: u64, len: usize) -> Vec<u8> {
        let mut next = 0u64;
        let h = if self.shape.singlehdr { 0 } else { 4096 };
        for (p, mib) in self.shape.replicas[r].iter().enumerate() {
            let size = mib << 20;
            let (file_off, span) = if p == 0 { (0, size) } else { (h, size - h) };
            if at >= next && at < next + span {
                return read_at(self.files.part(r, p), file_off + at - next, len);
            }
            next += span;
        }
        panic!("offset {at:#x} outside replica {r}");
    }

    /// Every replica, read alone by libpmemobj (a copy with a rotated set
    /// file), holds the root pattern.
    fn assert_every_replica_readable(&self, what: &str) {
        let n = self.shape.replicas.len();
        for k in 0..n {
            let dst = self._dir.path().join(format!("read-{k}"));
            let copy = copy_set(&self.files, self.shape, &dst);
            let order: Vec<usize> = (0..n).map(|i| (k + i) % n).collect();
            fs::write(
                &copy.set,
                set_text(self.shape, &order, |r, p| copy.part(r, p).to_path_buf()),
            )
            .expect("write rotated set file");
            let out = objclient(&["verify", copy.set_str(), "-", &ROOT_BYTES.to_string(), SEED]);
            assert_eq!(
                out.code,
                Some(0),
                "{what}: replica {k} read alone does not hold the root pattern\n{}",
                out.describe()
            );
            fs::remove_dir_all(&dst).expect("remove rotated copy");
        }
    }

    fn assert_quiet(&self, what: &str) {
        let out = poolsync(&["check", "--data", self.set()]);
        assert_eq!(out.code, Some(0), "{what}: {}", out.describe());
        assert_eq!(out.stdout, "", "{what}: check --data printed something");
    }
}

#[test]
fn check_data_is_quiet_on_healthy_used_pools() {
    require_pmdk!();
    for (shape, nlarge, later) in [
        (&SET_3R, "3", "1"),
        (&SET_2R, "2", "1"),
        (&SET_SINGLEHDR, "0", "0"),
    ] {
        let pool = used_pool(shape, nlarge, later);
        pool.assert_quiet(shape.name);
        // The header check is still pmempool's.
        let plain = poolsync(&["check", pool.set()]);
        assert_eq!(plain.code, Some(0), "{}", plain.describe());
        let json = poolsync(&["check", "--data", "--json", pool.set()]);
        let doc: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
        assert_eq!(doc["result"], "consistent", "{}", shape.name);
        assert!(doc["findings"]["objects"].as_u64().unwrap_or(0) > 100);
    }
}

#[test]
fn flipped_live_bytes_are_found_named_and_repaired() {
    require_pmdk!();
    let pool = used_pool(&SET_3R, "3", "1");
    let root = pool.root_data - 8;
    // The root pattern in replica 2, a small object in replica 1.
    let at = pool.root_data + 5000;
    pool.flip(2, at, 3);
    let (obj, size) = pool
        .objects
        .iter()
        .copied()
        .find(|&(_, s)| (64..4096).contains(&s))
        .expect("a small object");
    pool.flip(1, obj + 16, 1);
    let out = poolsync(&["check", "--data", pool.set()]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    let line2 = format!(
        "replica 2: logical [{at:#x}, {:#x}), 3 bytes: object at offset {root:#x}",
        at + 3
    );
    let line1 = format!(
        "replica 1: logical [{:#x}, {:#x}), 1 bytes: object at offset {obj:#x} of size {size}",
        obj + 16,
        obj + 17
    );
    assert!(
        out.stdout.contains(&line2),
        "{}\nwanted {line2}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&line1),
        "{}\nwanted {line1}",
        out.stdout
    );
    // JSON names the part files too.
    let json = poolsync(&["check", "--data", "--json", pool.set()]);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(doc["exit_code"], 1);
    assert_eq!(doc["findings"]["replicas"][2]["ranges"], 1);
    assert_eq!(
        doc["findings"]["replicas"][2]["divergences"][0]["offset"],
        at
    );
    assert!(
        doc["findings"]["replicas"][2]["divergences"][0]["locations"][0]["path"]
            .as_str()
            .is_some_and(|p| p.contains("_r2p0"))
    );

    let out = poolsync(&["sync", "--verify", pool.set()]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stdout.contains(
            "replica 1: 1 range(s), 1 bytes repaired; replica 2: 1 range(s), 3 bytes repaired"
        ),
        "{}",
        out.stdout
    );
    pool.assert_quiet("after sync --verify");
    pool.assert_every_replica_readable("after sync --verify");
}

#[test]
fn free_space_differences_are_not_reported() {
    require_pmdk!();
    let pool = used_pool(&SET_2R, "2", "1");
    let (off, size) = pool
        .freed
        .iter()
        .copied()
        .find(|&(o, s)| s >= 64 && !pool.objects.iter().any(|&(x, _)| x == o))
        .expect("a freed object");
    pool.flip(1, off, size.min(256) as usize);
    pool.flip(0, off + 8, 8);
    pool.assert_quiet("flipped free space");
}

#[test]
fn heap_metadata_damage_is_found_and_repaired_and_the_heap_decides_which_copy_is_right() {
    require_pmdk!();
    let pool = used_pool(&SET_2R, "2", "1");
    let zone = zone_offset(pool.heap_offset, 0).expect("zone 0");
    // Zone header (reserved bytes) and chunk 0's header of replica 1.
    pool.flip(1, zone + 20, 2);
    pool.flip(1, zone + 64 + 4, 1);
    let out = poolsync(&["check", "--data", pool.set()]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(out.stdout.contains("zone 0 header"), "{}", out.stdout);
    assert!(
        out.stdout.contains("zone 0 chunk 0 header"),
        "{}",
        out.stdout
    );
    let out = poolsync(&["sync", "--verify", pool.set()]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    pool.assert_quiet("after repairing heap metadata");

    // A corrupted chunk header in the master: replica 1's heap passes, so
    // it is right, and the repair needs no --source.
    pool.flip(0, zone + 64, 1);
    let out = poolsync(&["check", "--data", pool.set()]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    for wanted in [
        "replica 0's heap fails the structural checks",
        "replica 1's passes and is the source instead",
        "zone 0 chunk 0 header",
        "replica 0 differs from replica 1 in 1 range(s), 1 bytes, where replica 1 is right",
    ] {
        assert!(
            out.stdout.contains(wanted),
            "{}\nwanted {wanted}",
            out.stdout
        );
    }
    assert!(
        out.stderr
            .contains("repair replica(s) 0 from replica 1: run `poolsync sync --verify "),
        "{}",
        out.stderr
    );
    let json = poolsync(&["check", "--data", "--json", pool.set()]);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    let f = &doc["findings"];
    assert_eq!(f["source"], 1);
    assert_eq!(f["source_choice"]["kind"], "heap");
    assert_eq!(f["source_choice"]["instead_of"], 0);
    assert_eq!(
        f["replicas"][0]["divergences"][0]["verdict"]["kind"],
        "heap"
    );
    assert!(f["tie"].is_null());

    let out = poolsync(&["sync", "--verify", pool.set()]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    for wanted in [
        "replica 1's passes and is the source instead",
        "replica 0: 1 range(s), 1 bytes repaired",
    ] {
        assert!(
            out.stdout.contains(wanted),
            "{}\nwanted {wanted}",
            out.stdout
        );
    }
    pool.assert_quiet("after repairing the master from replica 1");
    pool.assert_every_replica_readable("after repairing the master");

    // No replica's heap passes: refused, nothing written.
    pool.flip(0, zone + 64, 1);
    pool.flip(1, zone + 64, 1);
    let dir = pool.files.set.parent().expect("dir").to_path_buf();
    let before = snapshot(&dir);
    for args in [
        vec!["check", "--data", pool.set()],
        vec!["sync", "--verify", pool.set()],
    ] {
        let out = poolsync(&args);
        assert_eq!(out.code, Some(1), "{}", out.describe());
        assert!(
            out.stderr
                .contains("the heap of replica 0, the source, is corrupted")
                && out.stderr.contains("--source"),
            "{}",
            out.stderr
        );
    }
    assert_eq!(before, snapshot(&dir), "a refused verify wrote something");
}

#[test]
fn a_master_descriptor_or_heap_header_pointing_outside_the_pool_loses_to_the_replica() {
    require_pmdk!();
    let pool = used_pool(&SET_2R, "2", "1");
    // root_offset (descriptor offset 0x800, outside the descriptor's
    // checksum) far outside the pool; then, separately, a chunk size of 2^63
    // in the heap header, with its checksum made valid again.
    let desc_at = OBJ_DESC_OFF;
    let root_field = desc_at + 0x800;
    let heap_at = pool.heap_offset;
    let mut heap = HeapHeader::decode(&pool.read(0, heap_at, 1024)).expect("heap header");
    heap.chunksize = 1 << 63;
    let bad_heap = heap.encode().to_vec();
    let cases: [(&str, u64, Vec<u8>, &str); 2] = [
        (
            "root_offset",
            root_field,
            0xffff_ffff_ffff_fff0u64.to_le_bytes().to_vec(),
            "pool descriptor",
        ),
        ("chunksize", heap_at, bad_heap, "heap header"),
    ];
    for (what, at, bytes, owner) in cases {
        write_logical(&pool.files, pool.shape, 0, at, &bytes);
        let out = poolsync(&["check", "--data", pool.set()]);
        assert_eq!(out.code, Some(1), "{what}: {}", out.describe());
        for wanted in [
            "replica 0's heap fails the structural checks".to_string(),
            owner.to_string(),
            "replica 1's passes".to_string(),
        ] {
            assert!(
                out.stdout.contains(&wanted),
                "{what}: {}\nwanted {wanted}",
                out.stdout
            );
        }
        assert!(
            out.stdout.contains(what),
            "{what}: the report does not name the field\n{}",
            out.stdout
        );
        let json = poolsync(&["check", "--data", "--json", pool.set()]);
        let doc: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
        let first = &doc["findings"]["replicas"][0]["divergences"][0];
        let start = first["offset"].as_u64().expect("offset");
        assert!(
            (at..at + bytes.len() as u64).contains(&start),
            "{what}: the damaged range starts at {start:#x}"
        );
        assert_eq!(first["verdict"]["kind"], "heap", "{what}");
        let out = poolsync(&["sync", "--verify", pool.set()]);
        assert_eq!(out.code, Some(0), "{what}: {}", out.describe());
        assert!(
            out.stdout.contains("replica 0: 1 range(s)"),
            "{what}: {}",
            out.stdout
        );
        pool.assert_quiet(what);
        pool.assert_every_replica_readable(what);
    }
}

/// The part files' bytes, replica by replica (not the undo files).
fn parts(pool: &Used) -> Vec<Vec<u8>> {
    pool.files
        .parts
        .iter()
        .flatten()
        .map(|p| fs::read(p).expect("read part"))
        .collect()
}

#[test]
fn damage_in_the_master_of_two_replicas_is_a_tie_until_the_user_chooses() {
    require_pmdk!();
    let pool = used_pool(&SET_2R, "2", "1");
    let root = pool.root_data - 8;
    // 16 bytes of the root object's data in the master, 256 bytes into a
    // 4 KiB block (the repair writes whole blocks).
    let at = ((pool.root_data + 0x2000) & !0xfff) + 0x100;
    pool.flip(0, at, 16);
    let range = format!("logical [{at:#x}, {:#x})", at + 16);
    let owner = format!("object at offset {root:#x}");

    let out = poolsync(&["check", "--data", pool.set()]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    for wanted in [
        format!("replicas 0 and 1 differ at {range}, 16 bytes: {owner}"),
        "nothing tells which one is right".to_string(),
    ] {
        assert!(
            out.stdout.contains(&wanted),
            "{}\nwanted {wanted}",
            out.stdout
        );
    }
    assert!(
        !out.stdout.contains("not consistent with replica"),
        "check --data blames a replica: {}",
        out.stdout
    );
    assert!(out.stderr.contains("--source N"), "{}", out.stderr);
    let json = poolsync(&["check", "--data", "--json", pool.set()]);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert!(doc["fix"].is_null(), "a tie has no command that fixes it");
    assert_eq!(
        doc["findings"]["tie"]["replicas"],
        serde_json::json!([0, 1])
    );
    assert_eq!(doc["findings"]["replicas"][1]["undecided_bytes"], 16);

    // sync --verify refuses and writes nothing, in text and in JSON.
    let dir = pool.files.set.parent().expect("dir").to_path_buf();
    let before = snapshot(&dir);
    let out = poolsync(&["sync", "--verify", "-vv", pool.set()]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    for wanted in [
        format!("replicas 0 and 1 differ at {range}"),
        owner.clone(),
        "nothing tells which one is right".to_string(),
        "nothing was written".to_string(),
        "--source N".to_string(),
        "--force-source".to_string(),
    ] {
        assert!(
            out.stderr.contains(&wanted),
            "{}\nwanted {wanted}",
            out.stderr
        );
    }
    let out = poolsync(&["sync", "--verify", "--json", pool.set()]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let refusal = &doc["verify"]["refusal"];
    assert_eq!(refusal["kind"], "tie");
    assert_eq!(refusal["replicas"], serde_json::json!([0, 1]));
    assert_eq!(refusal["offset"], at);
    assert_eq!(
        before,
        snapshot(&dir),
        "a refused sync --verify wrote something"
    );

    // The dry run with a choice says what the undo file will hold.
    let dry = poolsync(&[
        "sync",
        "--verify",
        "--source",
        "1",
        "-d",
        "--json",
        pool.set(),
    ]);
    assert_eq!(dry.code, Some(0), "{}", dry.describe());
    let doc: serde_json::Value = serde_json::from_str(&dry.stdout).expect("json");
    assert_eq!(doc["plan"]["undo"]["bytes"], 4096, "{}", dry.stdout);
    assert_eq!(before, snapshot(&dir), "the dry run wrote something");

    // The administrator chooses replica 1.
    let damaged = parts(&pool);
    let out = poolsync(&["sync", "--verify", "--source", "1", pool.set()]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stdout
            .contains("replica 0: 1 range(s), 16 bytes repaired"),
        "{}",
        out.stdout
    );
    pool.assert_quiet("after --source 1");
    pool.assert_every_replica_readable("after --source 1");
    let repaired = parts(&pool);
    let undo_file = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("undo file "))
        .and_then(|l| l.split(": ").next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no undo file named: {}", out.stdout));
    assert!(undo_file.is_file(), "{}", undo_file.display());
    let undo_arg = undo_file.to_str().expect("utf-8 path");

    // undo -d checks and writes nothing; undo puts every byte back.
    let out = poolsync(&["undo", "-d", "-v", undo_arg]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(out.stdout.contains("would be restored"), "{}", out.stdout);
    assert_eq!(parts(&pool), repaired, "undo -d wrote");
    let out = poolsync(&["undo", undo_arg]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stdout.contains("4096 bytes in 1 range(s) restored"),
        "{}",
        out.stdout
    );
    assert!(
        parts(&pool) == damaged,
        "undo did not restore every part byte for byte"
    );
    // Again: nothing to do.
    let out = poolsync(&["undo", "--json", undo_arg]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(doc["report"]["bytes_restored"], 0);
    assert_eq!(doc["report"]["ranges"][0]["fate"], "already_old");

    // A pool that changed since the repair is refused, and kept as it is.
    pool.flip(0, at + 200, 1);
    let now = parts(&pool);
    let out = poolsync(&["undo", undo_arg]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("the pool changed since the repair")
            && out.stderr.contains("nothing was restored"),
        "{}",
        out.stderr
    );
    assert_eq!(parts(&pool), now, "a refused undo wrote");

    // --no-undo: the repair saves nothing.
    let undo_files = || {
        fs::read_dir(&dir)
            .expect("read dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().contains(".poolsync-undo-"))
            })
            .count()
    };
    assert_eq!(undo_files(), 1);
    let out = poolsync(&["sync", "--verify", "--source", "1", "--no-undo", pool.set()]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(!out.stdout.contains("undo file"), "{}", out.stdout);
    assert_eq!(undo_files(), 1, "--no-undo wrote an undo file");
    pool.assert_quiet("after --no-undo");
}

#[test]
fn an_outvoted_master_stops_the_repair_until_the_user_chooses() {
    require_pmdk!();
    let pool = used_pool(&SET_3R, "3", "1");
    let root = pool.root_data - 8;
    let at = pool.root_data + 100_000;
    pool.flip(0, at, 4);
    let dir = pool.files.set.parent().expect("dir").to_path_buf();
    let before = snapshot(&dir);
    let out = poolsync(&["sync", "--verify", pool.set()]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    for wanted in [
        "replica 0, the source, is outvoted".to_string(),
        "replicas 1, 2 agree".to_string(),
        format!("[{at:#x}, {:#x})", at + 4),
        format!("object at offset {root:#x}"),
        "--source 1".to_string(),
        "--force-source".to_string(),
    ] {
        assert!(
            out.stderr.contains(&wanted),
            "{}\nwanted {wanted}",
            out.stderr
        );
    }
    assert_eq!(before, snapshot(&dir), "the refusal wrote something");
    let dry = poolsync(&["sync", "--verify", "-d", pool.set()]);
    assert_eq!(dry.code, Some(1), "{}", dry.describe());

    // The majority's copy.
    let out = poolsync(&["sync", "--verify", "--source", "1", pool.set()]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(
        out.stdout
            .contains("replica 0: 1 range(s), 4 bytes repaired"),
        "{}",
        out.stdout
    );
    pool.assert_quiet("after --source 1");
    pool.assert_every_replica_readable("after --source 1");

    // The master's copy, spread on request.
    pool.flip(0, at, 4);
    let damaged = pool.read(0, at, 4);
    let out = poolsync(&["sync", "--verify", "--force-source", "--json", pool.set()]);
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(doc["verify"]["findings"]["outvoted"]["replica"], 0);
    assert_eq!(doc["verify"]["repair"]["replicas"][0]["bytes"], 4);
    pool.assert_quiet("after --force-source");
    for r in 1..3 {
        assert_eq!(
            pool.read(r, at, 4),
            damaged,
            "replica {r} holds the master's bytes"
        );
    }
}
