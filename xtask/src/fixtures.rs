//! `cargo xtask fixtures`: regenerates `fixtures/pmdk/` with the real `pmempool`.
//!
//! Every case is created from scratch by PMDK's own tool in a temporary
//! directory. Only small slices are kept in the repository (header pages, the
//! obj descriptor, the heap header, the pool set text and `pmempool info`
//! output), so tests can compare against the reference implementation
//! without PMDK installed. Paths of the temporary directory are replaced by
//! the placeholder `@DIR@`.
//!
//! The `heap` case is a pool used by the real libpmemobj: the test program
//! `crates/header/tests/data/heapwork.c`, compiled with `cc -lpmemobj`,
//! allocates and frees objects of many classes in two sessions. Its
//! descriptor and heap are kept as a sparse image of their non-zero words,
//! next to the objects libpmemobj lists and the ones it freed.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

/// The placeholder that stands for the temporary directory in stored text.
const DIR_PLACEHOLDER: &str = "@DIR@";
/// The layout name every case is created with.
const LAYOUT: &str = "fixture";
/// Size of a pool header page.
const HDR_SIZE: u64 = 4096;
/// Logical range of the obj descriptor that is stored.
const DESC_RANGE: (u64, u64) = (0x1000, 0x2000);
/// Descriptor-relative offset of `heap_offset`.
const DESC_HEAP_OFFSET_OFF: usize = 0x410;
/// Size of the heap header.
const HEAP_HDR_SIZE: u64 = 1024;
const MIB: u64 = 1 << 20;

/// Layout name the heap case is created with (the one `heapwork` opens).
const HEAP_LAYOUT: &str = "heapwork";
/// Size of the heap case's pool file.
const HEAP_POOL_SIZE: &str = "24M";
/// End of the persistent part of the obj descriptor; the volatile area after
/// it holds process garbage and is left out of the sparse image.
const DESC_PERSISTENT_END: u64 = 0x1A20;
/// Magic at the start of the sparse image.
const SPARSE_MAGIC: &[u8; 8] = b"PSHEAP01";
/// Zero bytes a sparse record may bridge before a new record is cheaper.
const SPARSE_GAP: usize = 16;
/// The heapwork sessions of the heap case:
/// seed, small objects, large objects, free every n-th, bytes written per object.
const HEAP_SESSIONS: [[&str; 5]; 2] = [["1", "300", "1", "0", "8"], ["2", "250", "1", "4", "8"]];

/// One pool to create.
struct Case {
    name: &'static str,
    /// `true`: a single pool file, no pool set.
    single_file: bool,
    singlehdr: bool,
    /// Part sizes in MiB, per replica.
    replicas: &'static [&'static [u64]],
    /// Features turned off with `pmempool feature -d` after creation, in order.
    disable: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "single",
        single_file: true,
        singlehdr: false,
        replicas: &[&[8]],
        disable: &[],
    },
    Case {
        name: "cksum4k",
        single_file: true,
        singlehdr: false,
        replicas: &[&[8]],
        disable: &["SHUTDOWN_STATE", "CKSUM_2K"],
    },
    Case {
        name: "parts",
        single_file: false,
        singlehdr: false,
        replicas: &[&[8, 8, 9]],
        disable: &[],
    },
    Case {
        name: "replicas",
        single_file: false,
        singlehdr: false,
        replicas: &[&[20, 20, 21], &[40, 21], &[64]],
        disable: &[],
    },
    Case {
        name: "singlehdr",
        single_file: false,
        singlehdr: true,
        replicas: &[&[8, 8], &[8, 8]],
        disable: &[],
    },
];

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("poolsync-fixtures-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Regenerates every case under `<repo_root>/fixtures/pmdk/`.
pub fn run(repo_root: &Path) -> Result<()> {
    let version = pmempool(&["--version"], None).context(
        "running `pmempool --version`; the fixtures need PMDK's pmempool (Debian package pmdk-tools)",
    )?;
    let version = version.trim().to_owned();
    if !version.contains("1.12.1") {
        eprintln!("warning: fixtures are meant to come from pmempool 1.12.1, found `{version}`");
    }
    let out_root = repo_root.join("fixtures").join("pmdk");
    fs::create_dir_all(&out_root).with_context(|| format!("creating {}", out_root.display()))?;
    let tmp = TempDir::new()?;
    for case in CASES {
        generate(case, &tmp.0, &out_root.join(case.name))
            .with_context(|| format!("fixture case `{}`", case.name))?;
        eprintln!("fixtures/pmdk/{}: done", case.name);
    }
    generate_heap(repo_root, &tmp.0, &out_root.join("heap")).context("fixture case `heap`")?;
    eprintln!("fixtures/pmdk/heap: done");
    fs::write(out_root.join("README.md"), readme(&version))
        .with_context(|| format!("writing {}", out_root.join("README.md").display()))?;
    Ok(())
}

fn generate(case: &Case, tmp_root: &Path, out: &Path) -> Result<()> {
    let dir = tmp_root.join(case.name);
    fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir_text = dir
        .to_str()
        .context("the temporary directory path is not valid UTF-8")?;
    ensure!(
        !dir_text.contains(char::is_whitespace),
        "the temporary directory path `{dir_text}` contains whitespace, which pool set files cannot hold"
    );

    // Part paths, per replica.
    let parts: Vec<Vec<PathBuf>> = if case.single_file {
        vec![vec![dir.join("pool.obj")]]
    } else {
        case.replicas
            .iter()
            .enumerate()
            .map(|(r, sizes)| {
                (0..sizes.len())
                    .map(|p| dir.join(format!("r{r}p{p}.part")))
                    .collect()
            })
            .collect()
    };

    let target = if case.single_file {
        let file = parts
            .first()
            .and_then(|r| r.first())
            .context("single case without a file")?;
        let size = format!("{}M", case.replicas[0][0]);
        pmempool_create(&["-s", &size], file)?;
        file.clone()
    } else {
        let template = set_text(case);
        let set_path = dir.join("pool.set");
        fs::write(&set_path, template.replace(DIR_PLACEHOLDER, dir_text))
            .with_context(|| format!("writing {}", set_path.display()))?;
        pmempool_create(&[], &set_path)?;
        set_path
    };

    let target_text = target.to_str().context("path is not valid UTF-8")?;
    for feature in case.disable {
        pmempool(&["feature", "-d", feature, target_text], None)?;
    }

    if out.exists() {
        fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    if !case.single_file {
        fs::write(out.join("pool.set"), set_text(case))?;
    }

    for (r, replica) in parts.iter().enumerate() {
        for (p, path) in replica.iter().enumerate() {
            if case.singlehdr && p > 0 {
                continue;
            }
            let hdr = read_at(path, 0, HDR_SIZE)?;
            fs::write(out.join(format!("r{r}p{p}.hdr")), hdr)?;
        }
    }

    // Replica 0's logical address space over its part files.
    let h = if case.singlehdr { 0 } else { HDR_SIZE };
    let sizes: Vec<u64> = case.replicas[0].iter().map(|m| m * MIB).collect();
    let replica0 = Replica {
        parts: &parts[0],
        sizes: &sizes,
        hdr: h,
    };
    let desc = replica0.read(DESC_RANGE.0, DESC_RANGE.1 - DESC_RANGE.0)?;
    let heap_offset = desc
        .get(DESC_HEAP_OFFSET_OFF..DESC_HEAP_OFFSET_OFF + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .context("descriptor too short")?;
    fs::write(out.join("desc.bin"), &desc)?;
    fs::write(
        out.join("heap_hdr.bin"),
        replica0.read(heap_offset, HEAP_HDR_SIZE)?,
    )?;

    let info = pmempool(&["info", target_text], Some("UTC"))?;
    fs::write(
        out.join("info.txt"),
        info.replace(dir_text, DIR_PLACEHOLDER),
    )?;
    Ok(())
}

/// The `heap` case: a 24 MiB pool used by `heapwork` in two sessions.
fn generate_heap(repo_root: &Path, tmp_root: &Path, out: &Path) -> Result<()> {
    let dir = tmp_root.join("heap");
    fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let source = repo_root.join("crates/header/tests/data/heapwork.c");
    let exe = dir.join("heapwork");
    let cc = Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&exe)
        .arg(&source)
        .arg("-lpmemobj")
        .output()
        .context("running `cc`; the heap fixture needs a C compiler and libpmemobj-dev")?;
    if !cc.status.success() {
        bail!(
            "compiling {} failed: {}",
            source.display(),
            String::from_utf8_lossy(&cc.stderr).trim()
        );
    }
    let pool = dir.join("pool.obj");
    let pool_text = pool.to_str().context("path is not valid UTF-8")?;
    pmempool(
        &[
            "create",
            "-l",
            HEAP_LAYOUT,
            "-s",
            HEAP_POOL_SIZE,
            "obj",
            pool_text,
        ],
        None,
    )?;
    // The objects freed by the last session stay free: nothing allocates after them.
    let mut last_session = String::new();
    for args in HEAP_SESSIONS {
        last_session = heapwork(&exe, &pool, &[&["session"], &args[..]].concat())?;
    }
    let objects = heapwork(&exe, &pool, &["list"])?;

    let image = fs::read(&pool).with_context(|| format!("reading {}", pool.display()))?;
    let heap_offset = image
        .get(DESC_RANGE.0 as usize + DESC_HEAP_OFFSET_OFF..)
        .and_then(|b| b.get(..8))
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_le_bytes)
        .context("pool too short for a descriptor")?;
    let heap_start = usize::try_from(heap_offset)?;
    ensure!(
        heap_start < image.len(),
        "heap offset {heap_offset:#x} is past the end of the pool"
    );
    let desc_range = DESC_RANGE.0 as usize..DESC_PERSISTENT_END as usize;
    let mut sparse = Vec::new();
    sparse.extend_from_slice(SPARSE_MAGIC);
    sparse.extend_from_slice(&(image.len() as u64).to_le_bytes());
    for range in [desc_range, heap_start..image.len()] {
        for (off, bytes) in nonzero_records(&image, range) {
            sparse.extend_from_slice(&(off as u64).to_le_bytes());
            sparse.extend_from_slice(&u32::try_from(bytes.len())?.to_le_bytes());
            sparse.extend_from_slice(bytes);
        }
    }

    if out.exists() {
        fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    fs::write(out.join("image.bin"), &sparse)?;
    fs::write(out.join("objects.txt"), objects)?;
    let freed: String = last_session
        .lines()
        .filter(|l| l.starts_with("freed "))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(out.join("freed.txt"), freed)?;
    Ok(())
}

/// Runs heapwork on `pool` and returns its stdout. `PMEM_IS_PMEM_FORCE`
/// makes libpmem flush with CPU instructions instead of msync: the same
/// bytes on media, much faster.
fn heapwork(exe: &Path, pool: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(exe)
        .env("PMEM_IS_PMEM_FORCE", "1")
        .arg(pool)
        .args(args)
        .output()
        .with_context(|| format!("running heapwork {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "heapwork {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("heapwork printed non-UTF-8 output")
}

/// The non-zero 8-byte words of `image[range]` as (offset, bytes) records;
/// a record runs on across up to [`SPARSE_GAP`] zero bytes.
fn nonzero_records(image: &[u8], range: std::ops::Range<usize>) -> Vec<(usize, &[u8])> {
    let mut records: Vec<(usize, usize)> = Vec::new();
    let mut off = range.start;
    while off < range.end {
        let end = (off + 8).min(range.end);
        if image
            .get(off..end)
            .is_some_and(|w| w.iter().any(|&b| b != 0))
        {
            match records.last_mut() {
                Some(last) if off - last.1 <= SPARSE_GAP => last.1 = end,
                _ => records.push((off, end)),
            }
        }
        off = end;
    }
    records
        .into_iter()
        .filter_map(|(s, e)| image.get(s..e).map(|b| (s, b)))
        .collect()
}

/// The pool set text of a case, with part paths under [`DIR_PLACEHOLDER`].
fn set_text(case: &Case) -> String {
    let mut s = String::from("PMEMPOOLSET\n");
    if case.singlehdr {
        s.push_str("OPTION SINGLEHDR\n");
    }
    for (r, sizes) in case.replicas.iter().enumerate() {
        if r > 0 {
            s.push_str("REPLICA\n");
        }
        for (p, mib) in sizes.iter().enumerate() {
            s.push_str(&format!("{mib}M {DIR_PLACEHOLDER}/r{r}p{p}.part\n"));
        }
    }
    s
}

/// The logical address space of one replica (docs/format.md §15.1).
struct Replica<'a> {
    parts: &'a [PathBuf],
    sizes: &'a [u64],
    /// Header bytes at the start of parts 1.. (4096, or 0 with SINGLEHDR).
    hdr: u64,
}

impl Replica<'_> {
    /// Reads `len` bytes at logical `offset`, across part boundaries.
    fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(len)?);
        let mut start = 0u64;
        for (p, (path, size)) in self.parts.iter().zip(self.sizes).enumerate() {
            let usable = size / HDR_SIZE * HDR_SIZE;
            let (file_base, span) = if p == 0 {
                (0, usable)
            } else {
                (self.hdr, usable.saturating_sub(self.hdr))
            };
            let want = offset + out.len() as u64;
            let end = offset + len;
            if want < start + span && want < end {
                let n = (start + span).min(end) - want;
                out.extend(read_at(path, file_base + (want - start), n)?);
            }
            start += span;
        }
        ensure!(
            out.len() as u64 == len,
            "logical range {offset:#x}+{len:#x} is beyond the replica"
        );
        Ok(out)
    }
}

fn read_at(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; usize::try_from(len)?];
    f.read_exact(&mut buf)
        .with_context(|| format!("reading {len} bytes at {offset} of {}", path.display()))?;
    Ok(buf)
}

fn pmempool_create(extra: &[&str], target: &Path) -> Result<()> {
    let target = target.to_str().context("path is not valid UTF-8")?;
    let mut args = vec!["create", "-l", LAYOUT];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["obj", target]);
    pmempool(&args, None).map(drop)
}

/// Runs pmempool and returns its stdout; `tz` sets `TZ` for stable times.
fn pmempool(args: &[&str], tz: Option<&str>) -> Result<String> {
    let mut cmd = Command::new("pmempool");
    cmd.args(args);
    if let Some(tz) = tz {
        cmd.env("TZ", tz);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running pmempool {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "pmempool {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("pmempool printed non-UTF-8 output")
}

fn readme(version: &str) -> String {
    format!(
        "# PMDK fixtures\n\
         \n\
         Generated by `cargo xtask fixtures` with `{version}`; do not edit by hand.\n\
         Each directory is one pool created by `pmempool create -l {LAYOUT} obj`:\n\
         \n\
         * `single`: one 8 MiB pool file (no pool set);\n\
         * `cksum4k`: like `single`, then `pmempool feature -d SHUTDOWN_STATE` and\n\
         \x20 `-d CKSUM_2K`, so the header checksum covers 4 KiB (incompat 0);\n\
         * `parts`: one replica of 8M + 8M + 9M parts;\n\
         * `replicas`: three replicas, 20M + 20M + 21M, 40M + 21M and 64M;\n\
         * `singlehdr`: `OPTION SINGLEHDR`, two replicas of 8M + 8M;\n\
         * `heap`: a {HEAP_POOL_SIZE} pool (layout `{HEAP_LAYOUT}`) used by the real libpmemobj:\n\
         \x20 `crates/header/tests/data/heapwork.c` ran two sessions on it (seed, small\n\
         \x20 and large objects, free every n-th, bytes written per object: {sessions}).\n\
         \n\
         Files of the pmempool cases:\n\
         \n\
         * `r<R>p<P>.hdr`: the 4096-byte header page of part P of replica R (only\n\
         \x20 part 0 of each replica with SINGLEHDR);\n\
         * `desc.bin`: logical bytes 0x1000..0x2000 of replica 0 (obj descriptor;\n\
         \x20 the volatile area from 0x1A20 holds libpmemobj run-time garbage);\n\
         * `heap_hdr.bin`: the 1024-byte heap header at `heap_offset` of replica 0;\n\
         * `pool.set`: the pool set file (pool set cases only), part paths under\n\
         \x20 `{DIR_PLACEHOLDER}`;\n\
         * `info.txt`: stdout of `pmempool info` with `TZ=UTC`, the temporary\n\
         \x20 directory replaced by `{DIR_PLACEHOLDER}`.\n\
         \n\
         Files of `heap`:\n\
         \n\
         * `image.bin`: a sparse image of the persistent descriptor (logical\n\
         \x20 0x1000..0x1A20) and the whole heap: `PSHEAP01`, the pool size as u64, then\n\
         \x20 records of offset u64, length u32 and that many bytes (little-endian);\n\
         \x20 every byte of those ranges outside the records is zero;\n\
         * `objects.txt`: `heapwork list` after the sessions: `obj <offset> <usable\n\
         \x20 size>` per object `pmemobj_first`/`pmemobj_next` visit, then `root ...`;\n\
         * `freed.txt`: the objects the last session freed, `freed <offset> <size>`.\n",
        sessions = HEAP_SESSIONS
            .iter()
            .map(|s| s.join(" "))
            .collect::<Vec<_>>()
            .join("; ")
    )
}
