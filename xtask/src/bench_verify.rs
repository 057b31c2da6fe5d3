//! `cargo xtask bench verify`: the throughput of poolsync's heap-aware
//! verification (`check --data`, `sync --verify`) on a used, damaged
//! three-replica pool set, beside `cmp` of the same data.
//!
//! The template is made once: `pmempool create obj` on a set of three
//! single-part replicas, then `objclient fill` (the interop tests' small
//! libpmemobj client, compiled here with `cc -lpmemobj`) allocates a root
//! object of most of the pool and writes a pattern into it through
//! libpmemobj, which replicates it. Then whole 4 KiB blocks of the root
//! object's data in replica 2 (never the source) are inverted, 0.1 % of the
//! live bytes in all, scattered by a fixed seed.
//!
//! Each repetition runs, warm and (when the page cache can be emptied)
//! cold: `check --data --json` on the template (read-only), `cmp` of the
//! root object's bytes of replicas 0 and 1 (the read-and-compare
//! reference), and `sync --verify --json` on a fresh durable copy of the
//! template; they take turns going first from one repetition to the next.
//! With `--baseline BIN`, that binary's `check --data` and `sync --verify`
//! run too, in the same rotation, on the same files and with the same
//! checks (see `bench_baseline`). Every tool runs under `bench
//! __measure` (see `bench_sync`), which gives its wall time, CPU time, peak
//! RSS and I/O.

use std::fs::{self, File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::bench_baseline::{
    byte_ratio, markdown_table, ratio, take_turns, wall_ratio, Binaries, RATIO_NOTE,
};
use crate::bench_sync::{
    fmt_size, free_space, load_average, median, parse_size_options, part_name, pool_size, quiet,
    secs, splitmix64, sync_dir, write_durably, Machine, Scratch, SizeOptions, BLOCK, MEASURE, MIB,
};
use crate::util;

const REPLICAS: usize = 3;
/// The replica that is damaged (never the source, replica 0).
const DAMAGED: usize = 2;
/// The root object takes this share of each replica, in per mille.
const ROOT_PER_MILLE: u64 = 875;
/// Damage: this share of the live bytes, in per mille of a per mille.
const DAMAGE_PER_MILLION: u64 = 1000;
/// Seed of the fill pattern and of the choice of damaged blocks.
const SEED: u64 = 0x7665_7269_6679;

/// Targets (docs/performance.md).
const MIN_COMPARE_RATE: f64 = 3e9;
const MAX_RSS: u64 = 256 * MIB;

/// What `cargo xtask bench verify` was asked to do.
fn parse_options(args: &[String]) -> Result<SizeOptions> {
    parse_size_options("verify", args)
}

/// Page-cache state a run starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cache {
    /// Every file the tool reads was read once just before.
    Warm,
    /// Every file the tool reads was evicted with `posix_fadvise(DONTNEED)`.
    Cold,
}

impl Cache {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Cache::Warm => "warm",
            Cache::Cold => "cold",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Check,
    Cmp,
    Sync,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Check => "poolsync check --data",
            Op::Cmp => "cmp (replica 0 vs 1, root object)",
            Op::Sync => "poolsync sync --verify",
        }
    }
}

/// An operation, run by the new build or by the `--baseline` binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Job {
    op: Op,
    baseline: bool,
}

impl Job {
    const fn new(op: Op) -> Job {
        Job {
            op,
            baseline: false,
        }
    }

    /// What each repetition runs: every operation, and with a baseline its
    /// `check --data` and `sync --verify` right after the new build's.
    fn all(baseline: bool) -> Vec<Job> {
        let mut jobs = Vec::new();
        for op in [Op::Check, Op::Cmp, Op::Sync] {
            jobs.push(Job::new(op));
            if baseline && op != Op::Cmp {
                jobs.push(Job { op, baseline: true });
            }
        }
        jobs
    }

    fn label(self) -> String {
        if self.baseline {
            format!("{} (baseline)", self.op.label())
        } else {
            self.op.label().to_string()
        }
    }
}

/// One measured run.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) wall: Duration,
    pub(crate) cpu: Duration,
    pub(crate) max_rss: u64,
    /// Bytes compared (see [`Template`] for what each tool counts).
    compared: u64,
    /// `wchar` less what the tool printed: bytes handed to write syscalls.
    written: u64,
    /// `write_bytes`: page-cache bytes dirtied.
    dirtied: u64,
}

/// The damaged set every run starts from.
#[derive(Debug)]
struct Template {
    dir: PathBuf,
    /// Size of each replica's single part.
    replica_size: u64,
    /// Pool offset (= file offset of the single part) of the root data.
    root_data: u64,
    root_len: u64,
    /// Live bytes of the source, from `check --data --json`.
    live_bytes: u64,
    objects: u64,
    pool_size: u64,
    /// Blocks inverted in replica [`DAMAGED`].
    damaged_blocks: u64,
}

/// `cargo xtask bench verify [--size SIZE] [--reps N] [--dir DIR]
/// [--baseline BIN]`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let options = parse_options(args)?;
    for tool in ["pmempool", "cc", "cmp", "dd"] {
        ensure!(
            util::on_path(tool),
            "`bench verify` needs `{tool}` on PATH (pmempool: Debian's pmdk-tools; cc and \
             libpmemobj-dev to build the client)"
        );
    }
    let bins = Binaries::build(root, options.baseline.as_deref())?;
    let base = options.dir.clone().unwrap_or_else(|| bins.target.clone());
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let need = 2 * REPLICAS as u64 * options.size + 256 * MIB;
    let free = free_space(&base)?;
    ensure!(
        free >= need,
        "{} has {} free; the bench needs {} (template and working copy). \
         Use a smaller --size or another --dir",
        base.display(),
        fmt_size(free),
        fmt_size(need)
    );
    let scratch = Scratch::create(base.join("poolsync-bench-verify"))?;
    let objclient = build_objclient(root, &scratch.0)?;

    let machine = Machine::probe(&base);
    util::step("making the template");
    let template = make_template(
        &scratch.0.join("template"),
        options.size,
        &bins.poolsync,
        &objclient,
    )?;
    println!("{}", bins.describe());
    println!(
        "template: {REPLICAS} replicas of {}; pool size {}; root object {} at {:#x}; \
         {} live bytes ({}) in {} object(s); replica {DAMAGED}: {} block(s) of 4 KiB \
         inverted ({})",
        fmt_size(options.size),
        fmt_size(template.pool_size),
        fmt_size(template.root_len),
        template.root_data,
        template.live_bytes,
        fmt_size(template.live_bytes),
        template.objects,
        template.damaged_blocks,
        fmt_size(template.damaged_blocks * BLOCK)
    );
    let cold = cold_cache_works(&template.dir.join(part_name(0, 0)))?;
    let caches: &[Cache] = if cold {
        &[Cache::Warm, Cache::Cold]
    } else {
        eprintln!(
            "xtask: note: posix_fadvise(DONTNEED) left the file cached; reporting warm \
             figures only"
        );
        &[Cache::Warm]
    };

    let load_before = load_average();
    let jobs = Job::all(bins.baseline.is_some());
    let mut runs: Runs = caches
        .iter()
        .flat_map(|&cache| jobs.iter().map(move |&job| ((job, cache), Vec::new())))
        .collect();
    for rep in 0..options.reps {
        for &cache in caches {
            for job in take_turns(&jobs, rep) {
                let run = run_op(job, cache, &template, &bins, &scratch.0)?;
                println!(
                    "rep {}: {:<47} {}: {:.3} s, {} compared, {:.2} GB/s, peak RSS {}, \
                     written {}",
                    rep + 1,
                    job.label(),
                    cache.name(),
                    run.wall.as_secs_f64(),
                    fmt_size(run.compared),
                    run.compared as f64 / secs(run.wall) / 1e9,
                    fmt_size(run.max_rss),
                    fmt_size(run.written)
                );
                if let Some((_, v)) = runs.iter_mut().find(|(k, _)| *k == (job, cache)) {
                    v.push(run);
                }
            }
        }
    }
    let load_after = load_average();
    drop(scratch);

    println!("\n## Summary (markdown)\n");
    println!(
        "Machine: {} CPUs ({}), {} memory, Linux {}, pool sets on {}; {}; {} repetition(s); \
         load average (1, 5, 15 min) {load_before} before, {load_after} after.\n",
        machine.cpus,
        machine.cpu_model,
        machine.memory,
        machine.kernel,
        machine.filesystem,
        machine.pmempool,
        options.reps
    );
    println!(
        "{} replicas of {}; {} live bytes ({} objects); {} damaged in replica {DAMAGED} \
         ({} blocks of 4 KiB).\n",
        REPLICAS,
        fmt_size(options.size),
        fmt_size(template.live_bytes),
        template.objects,
        fmt_size(template.damaged_blocks * BLOCK),
        template.damaged_blocks
    );
    println!("{}\n", bins.describe());
    println!("{}", results_table(&runs));
    let verdicts = judge(&runs);
    println!("{}", verdict_table(&verdicts));
    if bins.baseline.is_some() {
        println!("{}", baseline_table(&runs));
        println!("{RATIO_NOTE}\n");
    }
    if !cold {
        println!("Cold cache: not measured (posix_fadvise(DONTNEED) did not evict).");
    }
    Ok(())
}

/// The runs of every job in every cache state, in the order of the tables.
type Runs = Vec<((Job, Cache), Vec<Run>)>;

/// Creates the set, fills it, checks it is healthy and damages replica 2.
fn make_template(dir: &Path, size: u64, poolsync: &Path, objclient: &Path) -> Result<Template> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let set = dir.join("pool.set");
    write_durably(&set, set_text(dir, size).as_bytes())?;
    quiet(Command::new("pmempool").args(["create", "obj"]).arg(&set))?;
    let pool_size = pool_size(poolsync, &set)?;

    let root_len = size / 1000 * ROOT_PER_MILLE / BLOCK * BLOCK;
    let root_data = fill(objclient, &set, root_len, SEED)?;

    // The healthy set must be quiet before it is damaged.
    let (code, doc) = check_json(poolsync, &set)?;
    ensure!(
        code == Some(0),
        "`poolsync check --data` finds the healthy template inconsistent: {doc}"
    );
    let findings = &doc["findings"];
    let live_bytes = findings["live_bytes"]
        .as_u64()
        .context("check --data --json printed no findings.live_bytes")?;
    let objects = findings["objects"].as_u64().unwrap_or(0);

    let count = live_bytes
        .saturating_mul(DAMAGE_PER_MILLION)
        .div_ceil(1_000_000)
        .div_ceil(BLOCK);
    let first = root_data.div_ceil(BLOCK);
    let end = (root_data + root_len) / BLOCK;
    let blocks = choose_blocks(first, end, count);
    ensure!(
        blocks.len() as u64 == count,
        "the root object has too few blocks to damage {count}"
    );
    let damaged = dir.join(part_name(DAMAGED, 0));
    for &b in &blocks {
        invert_block(&damaged, b * BLOCK)?;
    }
    for replica in 0..REPLICAS {
        let path = dir.join(part_name(replica, 0));
        File::open(&path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", path.display()))?;
    }
    sync_dir(dir)?;
    Ok(Template {
        dir: dir.to_path_buf(),
        replica_size: size,
        root_data,
        root_len,
        live_bytes,
        objects,
        pool_size,
        damaged_blocks: count,
    })
}

/// Compiles the interop tests' libpmemobj client into `dir`
/// (`cc -O2 -lpmemobj`) and returns the program's path.
pub(crate) fn build_objclient(root: &Path, dir: &Path) -> Result<PathBuf> {
    let objclient = dir.join("objclient");
    quiet(
        Command::new("cc")
            .arg("-O2")
            .arg("-o")
            .arg(&objclient)
            .arg(root.join("crates/cli/tests/data/objclient.c"))
            .arg("-lpmemobj"),
    )?;
    Ok(objclient)
}

/// `objclient fill SET - LEN SEED`: libpmemobj allocates a root object of
/// `len` data bytes and writes the pattern of `seed` into it (replicated to
/// every replica). Returns the pool offset of the first data byte.
pub(crate) fn fill(objclient: &Path, set: &Path, len: u64, seed: u64) -> Result<u64> {
    let out = Command::new(objclient)
        .arg("fill")
        .arg(set)
        .arg("-")
        .arg(len.to_string())
        .arg(seed.to_string())
        .output()
        .context("running objclient fill")?;
    ensure!(
        out.status.success(),
        "`objclient fill` of {} failed: {}",
        fmt_size(len),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .split_whitespace()
        .last()
        .and_then(|w| w.parse().ok())
        .with_context(|| format!("objclient fill printed no offset: {stdout}"))
}

/// A set file of [`REPLICAS`] single-part replicas of `size` in `dir`.
fn set_text(dir: &Path, size: u64) -> String {
    let mut text = String::from("PMEMPOOLSET\n");
    for replica in 0..REPLICAS {
        if replica > 0 {
            text.push_str("REPLICA\n");
        }
        text.push_str(&format!(
            "{}M {}\n",
            size / MIB,
            dir.join(part_name(replica, 0)).display()
        ));
    }
    text
}

/// `count` distinct block numbers of `[first, end)`, one in each of
/// `count` equal strides, at a place within it chosen by [`SEED`].
fn choose_blocks(first: u64, end: u64, count: u64) -> Vec<u64> {
    let span = end.saturating_sub(first);
    if count == 0 || span < count {
        return Vec::new();
    }
    let stride = span / count;
    (0..count)
        .map(|i| first + i * stride + splitmix64(SEED ^ i) % stride)
        .collect()
}

fn invert_block(path: &Path, offset: u64) -> Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut block = vec![0u8; BLOCK as usize];
    file.read_exact_at(&mut block, offset)
        .with_context(|| format!("reading {} at {offset}", path.display()))?;
    for b in &mut block {
        *b = !*b;
    }
    file.write_all_at(&block, offset)
        .with_context(|| format!("writing {} at {offset}", path.display()))
}

/// `poolsync check --data --json SET`: exit code and document (unmeasured).
fn check_json(poolsync: &Path, set: &Path) -> Result<(Option<i32>, serde_json::Value)> {
    let out = Command::new(poolsync)
        .args(["check", "--data", "--json"])
        .arg(set)
        .output()
        .context("running `poolsync check --data --json`")?;
    let doc = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "parsing `poolsync check --data --json`: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    Ok((out.status.code(), doc))
}

/// Evicts `path` from the page cache: `dd iflag=nocache count=0` calls
/// `posix_fadvise(POSIX_FADV_DONTNEED)` on the whole file.
fn evict(path: &Path) -> Result<()> {
    let mut input = std::ffi::OsString::from("if=");
    input.push(path);
    quiet(
        Command::new("dd")
            .arg(input)
            .args(["iflag=nocache", "count=0", "status=none"]),
    )
}

/// Reads `path` once from start to end.
pub(crate) fn warm(path: &Path) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut buf = vec![0u8; MIB as usize];
    while file
        .read(&mut buf)
        .with_context(|| format!("reading {}", path.display()))?
        > 0
    {}
    Ok(())
}

pub(crate) fn prepare(cache: Cache, paths: &[PathBuf]) -> Result<()> {
    for p in paths {
        match cache {
            Cache::Warm => warm(p)?,
            Cache::Cold => evict(p)?,
        }
    }
    Ok(())
}

/// Bytes of `path` in the page cache, from `fincore` (None if unavailable).
fn resident(path: &Path) -> Option<u64> {
    let out = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Whether eviction works here: warm a file, evict it, ask `fincore`.
pub(crate) fn cold_cache_works(path: &Path) -> Result<bool> {
    warm(path)?;
    evict(path)?;
    let len = fs::metadata(path)
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len();
    Ok(match resident(path) {
        Some(res) => {
            println!(
                "cold cache: after posix_fadvise(DONTNEED), {} of {} of {} stay cached",
                fmt_size(res),
                fmt_size(len),
                path.display()
            );
            res <= len / 100
        }
        None => {
            eprintln!("xtask: note: `fincore` is missing; cannot confirm eviction");
            false
        }
    })
}

fn run_op(job: Job, cache: Cache, t: &Template, bins: &Binaries, scratch: &Path) -> Result<Run> {
    let parts: Vec<PathBuf> = (0..REPLICAS).map(|r| t.dir.join(part_name(r, 0))).collect();
    let poolsync = bins.binary(job.baseline);
    match job.op {
        Op::Check => {
            prepare(cache, &parts)?;
            let set = t.dir.join("pool.set");
            let (m, stdout) = measured(
                poolsync,
                &["check", "--data", "--json"],
                &[&set],
                scratch,
                Some(1),
            )?;
            let doc: serde_json::Value =
                serde_json::from_slice(&stdout).context("parsing `check --data --json`")?;
            let f = &doc["findings"];
            let found = f["replicas"][DAMAGED]["bytes"].as_u64().unwrap_or(0);
            ensure!(
                found == t.damaged_blocks * BLOCK,
                "check --data found {found} damaged bytes in replica {DAMAGED}, expected {}",
                t.damaged_blocks * BLOCK
            );
            let compared = f["bytes_compared"]
                .as_u64()
                .context("check --data --json printed no findings.bytes_compared")?;
            Ok(Run { compared, ..m })
        }
        Op::Cmp => {
            prepare(cache, &parts[..2])?;
            let args = [
                format!("--ignore-initial={}", t.root_data),
                format!("--bytes={}", t.root_len),
            ];
            let (m, _) = measured(
                Path::new("cmp"),
                &[&args[0], &args[1]],
                &[&parts[0], &parts[1]],
                scratch,
                Some(0),
            )?;
            Ok(Run {
                compared: t.root_len,
                ..m
            })
        }
        Op::Sync => {
            let work = scratch.join("work");
            if work.exists() {
                fs::remove_dir_all(&work)
                    .with_context(|| format!("removing {}", work.display()))?;
            }
            fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
            let set = work.join("pool.set");
            write_durably(&set, set_text(&work, t.replica_size).as_bytes())?;
            let mut copies = Vec::new();
            for from in &parts {
                let to = work.join(from.file_name().context("a part without a name")?);
                fs::copy(from, &to)
                    .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
                File::open(&to)
                    .and_then(|f| f.sync_all())
                    .with_context(|| format!("syncing {}", to.display()))?;
                copies.push(to);
            }
            sync_dir(&work)?;
            prepare(cache, &copies)?;
            let (m, stdout) = measured(
                poolsync,
                &["sync", "--verify", "--json"],
                &[&set],
                scratch,
                Some(0),
            )?;
            let doc: serde_json::Value =
                serde_json::from_slice(&stdout).context("parsing `sync --verify --json`")?;
            let v = &doc["verify"];
            let repaired: u64 = v["repair"]["replicas"]
                .as_array()
                .map(|a| a.iter().filter_map(|r| r["bytes"].as_u64()).sum())
                .unwrap_or(0);
            ensure!(
                repaired == t.damaged_blocks * BLOCK,
                "sync --verify repaired {repaired} bytes, expected {}",
                t.damaged_blocks * BLOCK
            );
            let compared = v["findings"]["bytes_compared"]
                .as_u64()
                .context("sync --verify --json printed no verify.findings.bytes_compared")?;
            // The same check after either binary: the new build's.
            let (code, after) = check_json(&bins.poolsync, &set)?;
            ensure!(
                code == Some(0),
                "after sync --verify, check --data still finds damage: {after}"
            );
            Ok(Run { compared, ..m })
        }
    }
}

/// Runs `program words files` under the measuring wrapper and returns its
/// usage and stdout; its exit code must be `expect`.
pub(crate) fn measured(
    program: &Path,
    words: &[&str],
    files: &[&Path],
    scratch: &Path,
    expect: Option<i32>,
) -> Result<(Run, Vec<u8>)> {
    let out_path = scratch.join("measure.json");
    let out = Command::new(std::env::current_exe().context("locating xtask itself")?)
        .args(["bench", MEASURE])
        .arg(&out_path)
        .arg("--")
        .arg(program)
        .args(words)
        .args(files)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} under the measuring wrapper", program.display()))?;
    ensure!(
        out.status.success(),
        "the measuring wrapper failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text =
        fs::read_to_string(&out_path).with_context(|| format!("reading {}", out_path.display()))?;
    let m: serde_json::Value = serde_json::from_str(&text).context("parsing the measurement")?;
    let num = |key: &str| m[key].as_u64().unwrap_or(0);
    let code = m["exit_code"].as_i64().and_then(|c| i32::try_from(c).ok());
    ensure!(
        code == expect,
        "`{} {}` exited with {code:?}, expected {expect:?}: {}",
        program.display(),
        words.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let printed = (out.stdout.len() + out.stderr.len()) as u64;
    Ok((
        Run {
            wall: Duration::from_nanos(num("wall_ns")),
            cpu: Duration::from_micros(num("user_us") + num("sys_us")),
            max_rss: num("max_rss"),
            compared: 0,
            written: num("wchar").saturating_sub(printed),
            dirtied: num("write_bytes"),
        },
        out.stdout,
    ))
}

/// Median wall and CPU, largest RSS, and the (equal) bytes compared and
/// written.
struct Summary {
    wall: Duration,
    cpu: Duration,
    max_rss: u64,
    compared: u64,
    written: u64,
    dirtied: u64,
}

fn summary(runs: &[Run]) -> Option<Summary> {
    Some(Summary {
        wall: median(runs.iter().map(|r| r.wall).collect())?,
        cpu: median(runs.iter().map(|r| r.cpu).collect())?,
        max_rss: runs.iter().map(|r| r.max_rss).max()?,
        compared: median(runs.iter().map(|r| r.compared).collect())?,
        written: median(runs.iter().map(|r| r.written).collect())?,
        dirtied: median(runs.iter().map(|r| r.dirtied).collect())?,
    })
}

fn rate(s: &Summary) -> f64 {
    s.compared as f64 / secs(s.wall) / 1e9
}

fn results_table(runs: &[((Job, Cache), Vec<Run>)]) -> String {
    let mut out = String::from(
        "| operation | cache | wall (median) | CPU (median) | bytes compared | rate | peak RSS | \
         written (syscalls) | every run (s) |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for ((job, cache), v) in runs {
        let Some(s) = summary(v) else { continue };
        let every: Vec<String> = v
            .iter()
            .map(|r| format!("{:.3}", r.wall.as_secs_f64()))
            .collect();
        out.push_str(&format!(
            "| {} | {} | {:.3} s | {:.3} s | {} | {:.2} GB/s | {} | {} | {} |\n",
            job.label(),
            cache.name(),
            s.wall.as_secs_f64(),
            s.cpu.as_secs_f64(),
            fmt_size(s.compared),
            rate(&s),
            fmt_size(s.max_rss),
            fmt_size(s.written),
            every.join(" ")
        ));
    }
    out
}

/// The ratios new/baseline of `check --data` and `sync --verify`, warm and
/// cold.
fn baseline_table(runs: &[((Job, Cache), Vec<Run>)]) -> String {
    let find = |job: Job, cache: Cache| {
        runs.iter()
            .find(|(k, _)| *k == (job, cache))
            .map(|(_, v)| v.as_slice())
    };
    let mut rows = Vec::new();
    for ((job, cache), new) in runs {
        if job.baseline || job.op == Op::Cmp {
            continue;
        }
        let Some(base) = find(
            Job {
                baseline: true,
                ..*job
            },
            *cache,
        ) else {
            continue;
        };
        let (Some(n), Some(b)) = (summary(new), summary(base)) else {
            continue;
        };
        let walls = |v: &[Run]| v.iter().map(|r| r.wall).collect::<Vec<_>>();
        rows.push(vec![
            job.op.label().to_string(),
            cache.name().to_string(),
            wall_ratio(&walls(new), &walls(base)),
            ratio(secs(n.cpu), secs(b.cpu)),
            byte_ratio(n.max_rss, b.max_rss),
            byte_ratio(n.compared, b.compared),
            byte_ratio(n.written, b.written),
            byte_ratio(n.dirtied, b.dirtied),
        ]);
    }
    markdown_table(
        &[
            "operation",
            "cache",
            "wall, new/baseline (range)",
            "CPU",
            "peak RSS",
            "bytes compared",
            "written (syscalls)",
            "dirtied (write_bytes)",
        ],
        &rows,
    )
}

struct Verdict {
    target: String,
    measured: String,
    pass: bool,
}

fn judge(runs: &[((Job, Cache), Vec<Run>)]) -> Vec<Verdict> {
    let find = |op: Op, cache: Cache| {
        runs.iter()
            .find(|(k, _)| *k == (Job::new(op), cache))
            .and_then(|(_, v)| summary(v))
    };
    let cmp = find(Op::Cmp, Cache::Warm);
    let mut verdicts = Vec::new();
    for op in [Op::Check, Op::Sync] {
        let Some(s) = find(op, Cache::Warm) else {
            continue;
        };
        let reference = cmp
            .as_ref()
            .map_or_else(String::new, |c| format!("; cmp {:.2} GB/s", rate(c)));
        verdicts.push(Verdict {
            target: format!("{}: ≥ 3 GB/s compared (warm)", op.label()),
            measured: format!(
                "{:.2} GB/s ({} in {:.3} s{reference})",
                rate(&s),
                fmt_size(s.compared),
                s.wall.as_secs_f64()
            ),
            pass: rate(&s) * 1e9 >= MIN_COMPARE_RATE,
        });
        let worst = runs
            .iter()
            .filter(|((job, _), _)| *job == Job::new(op))
            .flat_map(|(_, v)| v.iter().map(|r| r.max_rss))
            .max()
            .unwrap_or(0);
        verdicts.push(Verdict {
            target: format!("{}: peak RSS ≤ {}", op.label(), fmt_size(MAX_RSS)),
            measured: fmt_size(worst),
            pass: worst <= MAX_RSS,
        });
    }
    verdicts
}

fn verdict_table(verdicts: &[Verdict]) -> String {
    let mut out = String::from("| target | measured | result |\n|---|---|---|\n");
    for v in verdicts {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            v.target,
            v.measured,
            if v.pass { "PASS" } else { "FAIL" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_blocks_are_distinct_and_inside_the_range() {
        let blocks = choose_blocks(100, 100_000, 218);
        assert_eq!(blocks.len(), 218);
        assert!(blocks.windows(2).all(|w| w[0] < w[1]));
        assert!(blocks.iter().all(|&b| (100..100_000).contains(&b)));
        assert!(choose_blocks(0, 5, 6).is_empty());
    }

    #[test]
    fn options_default_and_reject_bad_sizes() {
        let o = parse_options(&[]).unwrap();
        assert_eq!((o.size, o.reps), (crate::bench_sync::GIB, 3));
        assert_eq!(o.baseline, None);
        let o = parse_options(&["--size=256M".into(), "--reps".into(), "5".into()]).unwrap();
        assert_eq!((o.size, o.reps), (256 * MIB, 5));
        let o = parse_options(&["--baseline".into(), "old/poolsync".into()]).unwrap();
        assert_eq!(o.baseline, Some(PathBuf::from("old/poolsync")));
        assert!(parse_options(&["--size".into(), "10M".into()]).is_err());
        assert!(parse_options(&["--frobnicate".into()]).is_err());
        assert!(parse_options(&["--baseline".into()]).is_err());
    }

    #[test]
    fn a_baseline_checks_and_syncs_but_does_not_cmp() {
        let labels =
            |baseline| -> Vec<String> { Job::all(baseline).into_iter().map(Job::label).collect() };
        assert_eq!(
            labels(false),
            [Op::Check, Op::Cmp, Op::Sync].map(|op| op.label().to_string())
        );
        assert_eq!(
            labels(true),
            [
                "poolsync check --data",
                "poolsync check --data (baseline)",
                "cmp (replica 0 vs 1, root object)",
                "poolsync sync --verify",
                "poolsync sync --verify (baseline)",
            ]
        );
    }
}
