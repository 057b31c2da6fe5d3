//! `cargo xtask bench sync`: poolsync's `sync` against PMDK's `pmempool
//! sync`, side by side on identically damaged pool sets.
//!
//! Each scenario builds a two-replica pool set with `pmempool create`,
//! damages it (a replica removed, a header flipped, blocks corrupted) and
//! keeps that as a *template*. Every timed run starts from a fresh copy of
//! the template that is made durable first (so the tool's `fdatasync` or
//! `msync` has none of the copy's dirty pages to write) and then read once
//! (so every tool finds every file in the page cache): the figures are
//! warm-cache figures. The tools take turns going first from one
//! repetition to the next, and every run is checked afterwards: both
//! replicas hold the same data and `pmempool check` says consistent.
//! With `--baseline BIN`, every case also runs that older poolsync binary,
//! `poolsync (baseline)`, in the same way (see `bench_baseline`), and the
//! summary ends with the ratios new/baseline, the engine's own timings of
//! its data phase and of its fences (`sync --json`) among them.
//!
//! Measurement: each tool runs under a small wrapper, this program again
//! (`bench __measure`), whose only child is the tool. Once it has waited
//! for the tool, the wrapper's `getrusage(RUSAGE_CHILDREN)` is that one
//! child's usage (its peak RSS), and the change of the wrapper's
//! `/proc/self/io` is the child's I/O, because the kernel adds a reaped
//! child's counters into its parent's. docs/performance.md records how
//! this was checked and what the counters mean.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::resource::{getrusage, UsageWho};

use crate::bench_baseline::{
    byte_ratio, markdown_table, micros_ratio, ratio, take_turns, wall_ratio, Binaries,
    BASELINE_LABEL, RATIO_NOTE,
};
use crate::{test, util};

/// The hidden `bench` sub-command that runs one tool and records its usage.
pub const MEASURE: &str = "__measure";

pub(crate) const KIB: u64 = 1 << 10;
pub(crate) const MIB: u64 = 1 << 20;
pub(crate) const GIB: u64 = 1 << 30;
/// The unit poolsync compares and copies in, and the unit damage is done in.
pub(crate) const BLOCK: u64 = 4096;
pub(crate) const DEFAULT_SIZE: u64 = GIB;
pub(crate) const DEFAULT_REPS: usize = 3;
/// Pool sizes must split into parts (and quarters) that pmempool accepts.
pub(crate) const SIZE_UNIT: u64 = 8 * MIB;
pub(crate) const MIN_SIZE: u64 = 64 * MIB;
/// Offset of `uuid` in the pool header: flipping a byte there leaves a
/// header with a bad checksum.
const HEADER_FLIP_OFFSET: u64 = 40;
/// One block in this many is corrupted by the `scattered` scenario (5 %).
const SCATTER_ONE_IN: u64 = 20;
/// Seed of the block choice, so that every run damages the same blocks.
const SCATTER_SEED: u64 = 0x706f_6f6c_7379_6e63;

/// Targets (see docs/performance.md).
const REBUILD_MAX_TIME_RATIO: f64 = 1.0;
const REBUILD_MAX_RSS: u64 = 256 * MIB;
const HEADER_MIN_SPEEDUP: f64 = 5.0;
const HEADER_MAX_WRITTEN: u64 = 64 * KIB;
const SCATTER_MIN_COMPARE_RATE: f64 = 3e9;
/// Bytes beyond the differing blocks a repair may write: the headers.
const HEADER_ALLOWANCE: u64 = 64 * KIB;

// ---------------------------------------------------------------------------
// Options

/// What `cargo xtask bench sync` was asked to do.
#[derive(Debug)]
struct Options {
    /// Size of each replica.
    size: u64,
    reps: usize,
    scenarios: Vec<Scenario>,
    /// Where the pool sets go (default: the target directory).
    dir: Option<PathBuf>,
    /// `--baseline BIN`: an older poolsync to run beside the new one.
    baseline: Option<PathBuf>,
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut options = Options {
        size: DEFAULT_SIZE,
        reps: DEFAULT_REPS,
        scenarios: Scenario::ALL.to_vec(),
        dir: None,
        baseline: None,
    };
    for_each_flag(args, |flag, value| {
        match flag {
            "--size" => options.size = parse_size(&value()?)?,
            "--reps" => options.reps = parse_reps(&value()?)?,
            "--scenario" => options.scenarios = vec![Scenario::from_name(&value()?)?],
            "--dir" => options.dir = Some(PathBuf::from(value()?)),
            "--baseline" => options.baseline = Some(PathBuf::from(value()?)),
            other => bail!(
                "`bench sync`: unknown option `{other}`; expected --size SIZE, --reps N, \
                 --scenario NAME, --dir DIR or --baseline BIN"
            ),
        }
        Ok(())
    })?;
    ensure!(
        options.size >= MIN_SIZE && options.size.is_multiple_of(SIZE_UNIT),
        "--size: {} is not a multiple of 8 MiB of at least 64 MiB (the rebuild \
         scenario also runs at a quarter of it)",
        fmt_size(options.size)
    );
    Ok(options)
}

/// The flags `bench verify` and `bench transform` share: `--size SIZE`
/// (each replica; a multiple of 8 MiB of at least 64 MiB), `--reps N`,
/// `--dir DIR` (where the pool sets go; default: the target directory) and
/// `--baseline BIN` (an older poolsync binary to run beside the new one).
#[derive(Debug)]
pub(crate) struct SizeOptions {
    pub(crate) size: u64,
    pub(crate) reps: usize,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) baseline: Option<PathBuf>,
}

/// Reads [`SizeOptions`] for `bench NAME`.
pub(crate) fn parse_size_options(name: &str, args: &[String]) -> Result<SizeOptions> {
    let mut options = SizeOptions {
        size: DEFAULT_SIZE,
        reps: DEFAULT_REPS,
        dir: None,
        baseline: None,
    };
    for_each_flag(args, |flag, value| {
        match flag {
            "--size" => options.size = parse_size(&value()?)?,
            "--reps" => options.reps = parse_reps(&value()?)?,
            "--dir" => options.dir = Some(PathBuf::from(value()?)),
            "--baseline" => options.baseline = Some(PathBuf::from(value()?)),
            other => bail!(
                "`bench {name}`: unknown option `{other}`; expected --size SIZE, --reps N, \
                 --dir DIR or --baseline BIN"
            ),
        }
        Ok(())
    })?;
    ensure!(
        options.size >= MIN_SIZE && options.size.is_multiple_of(SIZE_UNIT),
        "--size: {} is not a multiple of 8 MiB of at least 64 MiB",
        fmt_size(options.size)
    );
    Ok(options)
}

/// Calls `handle` with every `--flag` of `args` and a function that takes
/// its value (`--flag value` or `--flag=value`).
pub(crate) fn for_each_flag(
    args: &[String],
    mut handle: impl FnMut(&str, &mut dyn FnMut() -> Result<String>) -> Result<()>,
) -> Result<()> {
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value)),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String> {
            match inline {
                Some(v) => Ok(v.to_string()),
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("`{flag}` needs a value")),
            }
        };
        handle(flag, &mut value)?;
    }
    Ok(())
}

/// A repetition count of 1 or more.
pub(crate) fn parse_reps(text: &str) -> Result<usize> {
    text.parse()
        .ok()
        .filter(|&n| n >= 1)
        .with_context(|| format!("`--reps {text}`: expected a count of 1 or more"))
}

/// `1G`, `256M`, `512MiB`, `1073741824`: binary units, as pmempool reads them.
pub(crate) fn parse_size(text: &str) -> Result<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .with_context(|| format!("`{text}`: expected a size such as 1G or 256M"))?;
    let unit = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KIB" => KIB,
        "M" | "MIB" => MIB,
        "G" | "GIB" => GIB,
        "T" | "TIB" => GIB << 10,
        _ => bail!("`{text}`: unknown unit; use K, M, G or T (binary units)"),
    };
    number
        .checked_mul(unit)
        .with_context(|| format!("`{text}`: too large"))
}

// ---------------------------------------------------------------------------
// Scenarios

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Rebuild,
    Header,
    Scattered,
    Parallel,
}

impl Scenario {
    const ALL: [Scenario; 4] = [
        Scenario::Rebuild,
        Scenario::Header,
        Scenario::Scattered,
        Scenario::Parallel,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Rebuild => "rebuild",
            Scenario::Header => "header",
            Scenario::Scattered => "scattered",
            Scenario::Parallel => "parallel",
        }
    }

    fn from_name(name: &str) -> Result<Scenario> {
        Scenario::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .with_context(|| {
                let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!(
                    "unknown scenario `{name}`; expected one of {}",
                    names.join(", ")
                )
            })
    }

    fn describe(self) -> &'static str {
        match self {
            Scenario::Rebuild => "replica 1 missing: full rebuild",
            Scenario::Header => "replica 1's part header corrupted",
            Scenario::Scattered => "5% of replica 1's blocks corrupted, and its part-0 header",
            Scenario::Parallel => "replica 1's two parts missing: rebuilt in parallel",
        }
    }

    /// The cases the scenario runs for replicas of `size` bytes; with a
    /// `baseline`, each case also runs it, after the new build.
    fn cases(self, size: u64, baseline: bool) -> Vec<Case> {
        let case = |size: u64, parts: Vec<u64>, damage, mut variants: Vec<Variant>| {
            if baseline {
                variants.insert(1, Variant::Baseline);
            }
            Case {
                scenario: self,
                size,
                parts,
                damage,
                variants,
            }
        };
        let both = || vec![Variant::Poolsync, Variant::Pmempool];
        match self {
            // Two sizes, to show that poolsync's memory stays flat.
            Scenario::Rebuild => vec![
                case(size / 4, vec![size / 4], Damage::RemoveReplica, both()),
                case(size, vec![size], Damage::RemoveReplica, both()),
            ],
            Scenario::Header => vec![case(size, vec![size], Damage::FlipHeader, both())],
            Scenario::Scattered => vec![case(size, vec![size], Damage::Scatter, both())],
            Scenario::Parallel => vec![case(
                size,
                vec![size / 2, size / 2],
                Damage::RemoveReplica,
                vec![
                    Variant::Poolsync,
                    Variant::PoolsyncOneCpu,
                    Variant::Pmempool,
                ],
            )],
        }
    }
}

/// One scenario at one size.
#[derive(Debug, Clone)]
struct Case {
    scenario: Scenario,
    /// Size of each replica.
    size: u64,
    /// Part sizes, the same in both replicas.
    parts: Vec<u64>,
    damage: Damage,
    variants: Vec<Variant>,
}

impl Case {
    fn title(&self) -> String {
        format!(
            "{} ({}), replicas of {} in {} part{}",
            self.scenario.name(),
            self.scenario.describe(),
            fmt_size(self.size),
            self.parts.len(),
            if self.parts.len() == 1 { "" } else { "s" }
        )
    }

    /// Disk space the case needs at once: the template and one working copy.
    fn disk_need(&self) -> u64 {
        4 * self.size
    }
}

/// What is done to replica 1 of a fresh pool set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// Every part file of replica 1 is removed.
    RemoveReplica,
    /// One byte of part 0's pool header is flipped (bad checksum).
    FlipHeader,
    /// One block in twenty of `[4096, pool size)` gets one byte flipped,
    /// and so does part 0's pool header.
    Scatter,
}

/// A tool, run one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Poolsync,
    /// poolsync pinned to one CPU with `taskset`: its engine sizes its worker
    /// pool from the CPUs it may use (`RAYON_NUM_THREADS` does not change
    /// it), so this is poolsync with one worker.
    PoolsyncOneCpu,
    /// The `--baseline` binary, run as [`Variant::Poolsync`] is.
    Baseline,
    Pmempool,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Poolsync => "poolsync",
            Variant::PoolsyncOneCpu => "poolsync, 1 CPU",
            Variant::Baseline => BASELINE_LABEL,
            Variant::Pmempool => "pmempool",
        }
    }

    /// Program and arguments that synchronize `set`.
    fn command(self, bins: &Binaries, set: &Path) -> Vec<OsString> {
        let poolsync_args = |prefix: &[&str], baseline: bool| {
            let mut words: Vec<OsString> = prefix.iter().map(OsString::from).collect();
            words.push(bins.binary(baseline).into());
            words.extend(["sync", "--json", "--no-progress"].map(OsString::from));
            words.push(set.into());
            words
        };
        match self {
            Variant::Poolsync => poolsync_args(&[], false),
            Variant::PoolsyncOneCpu => poolsync_args(&["taskset", "--cpu-list", "0"], false),
            Variant::Baseline => poolsync_args(&[], true),
            Variant::Pmempool => vec!["pmempool".into(), "sync".into(), set.into()],
        }
    }
}

// ---------------------------------------------------------------------------
// Entry points

/// `cargo xtask bench sync [--size SIZE] [--reps N] [--scenario NAME]
/// [--dir DIR] [--baseline BIN]`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let options = parse_options(args)?;
    check_tools(&options)?;
    let bins = Binaries::build(root, options.baseline.as_deref())?;

    let cases: Vec<Case> = options
        .scenarios
        .iter()
        .flat_map(|s| s.cases(options.size, bins.baseline.is_some()))
        .collect();
    let base = options.dir.clone().unwrap_or_else(|| bins.target.clone());
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let need = cases.iter().map(Case::disk_need).max().unwrap_or(0) + 256 * MIB;
    let free = free_space(&base)?;
    ensure!(
        free >= need,
        "{} has {} free; the largest case needs {} (template and working copy). \
         Use a smaller --size or another --dir",
        base.display(),
        fmt_size(free),
        fmt_size(need)
    );
    let workspace = Scratch::create(base.join("poolsync-bench-sync"))?;

    let machine = Machine::probe(&base);
    println!("{}", machine.describe(options.reps));
    println!("{}", bins.describe());
    let mut results = Vec::new();
    for case in &cases {
        util::step(&case.title());
        results.push(run_case(case, &bins, &workspace.0, options.reps)?);
    }
    drop(workspace);

    let verdicts = judge(&results);
    println!("\n## Summary (markdown)\n");
    println!("{}", machine.describe(options.reps));
    println!("{}\n", bins.describe());
    println!("{}", results_table(&results));
    println!("{}", verdict_table(&verdicts));
    if bins.baseline.is_some() {
        println!("{}", baseline_table(&results));
        println!("{RATIO_NOTE}\n");
    }
    let failed = verdicts.iter().filter(|v| v.pass == Some(false)).count();
    if failed > 0 {
        println!("{failed} target(s) missed; see docs/performance.md for the causes.");
    }
    Ok(())
}

/// The wrapper: `bench __measure OUT -- PROGRAM ARGS...` runs the program
/// (its only child), waits for it, and writes what it used to OUT as JSON.
/// The program's exit status is recorded, not judged.
pub fn measure(args: &[String]) -> Result<()> {
    let [out, dashes, program, tool_args @ ..] = args else {
        bail!("usage: bench {MEASURE} OUT -- PROGRAM [ARGS...]");
    };
    ensure!(
        dashes == "--",
        "usage: bench {MEASURE} OUT -- PROGRAM [ARGS...]"
    );
    let before = ProcIo::read_self()?;
    let started = Instant::now();
    let status = Command::new(program)
        .args(tool_args)
        .status()
        .with_context(|| format!("starting `{program}`"))?;
    let wall = started.elapsed();
    let after = ProcIo::read_self()?;
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage(RUSAGE_CHILDREN)")?;
    let micros = |tv: nix::sys::time::TimeVal| {
        u64::try_from(tv.tv_sec()).unwrap_or(0) * 1_000_000
            + u64::try_from(tv.tv_usec()).unwrap_or(0)
    };
    let doc = serde_json::json!({
        "exit_code": status.code(),
        "signal": std::os::unix::process::ExitStatusExt::signal(&status),
        "wall_ns": u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX),
        // Linux reports ru_maxrss in KiB.
        "max_rss": u64::try_from(usage.max_rss()).unwrap_or(0) * KIB,
        "user_us": micros(usage.user_time()),
        "sys_us": micros(usage.system_time()),
        "rchar": after.rchar.saturating_sub(before.rchar),
        "wchar": after.wchar.saturating_sub(before.wchar),
        "read_bytes": after.read_bytes.saturating_sub(before.read_bytes),
        "write_bytes": after.write_bytes.saturating_sub(before.write_bytes),
        "cancelled_write_bytes": after
            .cancelled_write_bytes
            .saturating_sub(before.cancelled_write_bytes),
    });
    fs::write(out, doc.to_string()).with_context(|| format!("writing {out}"))
}

fn check_tools(options: &Options) -> Result<()> {
    if !util::on_path("pmempool") {
        bail!(
            "`pmempool` is not on PATH; install PMDK 1.12 as root with \
             `apt-get update && apt-get install -y {}` (`cargo xtask test` does it when root)",
            test::PMDK_PACKAGES.join(" ")
        );
    }
    if options.scenarios.contains(&Scenario::Parallel) && !util::on_path("taskset") {
        bail!("the parallel scenario needs `taskset` (util-linux) on PATH");
    }
    for var in ["PMEM_IS_PMEM_FORCE", "POOLSYNC_PERSIST"] {
        if let Some(value) = std::env::var_os(var) {
            eprintln!(
                "xtask: note: {var}={} is set and changes how the tools persist data",
                value.to_string_lossy()
            );
        }
    }
    Ok(())
}

/// A directory that is removed when dropped (also when a case fails).
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    pub(crate) fn create(path: PathBuf) -> Result<Scratch> {
        if path.exists() {
            fs::remove_dir_all(&path)
                .with_context(|| format!("removing the leftovers in {}", path.display()))?;
        }
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("xtask: warning: cannot remove {}: {e}", self.0.display());
        }
    }
}

// ---------------------------------------------------------------------------
// One case

/// The damaged pool set every run of a case starts from.
#[derive(Debug)]
struct Template {
    dir: PathBuf,
    /// File names of the part files that exist, per replica and part.
    present: Vec<String>,
    /// `heap_offset + heap_size`: the end of the replicated range.
    pool_size: u64,
    /// Blocks of `[4096, pool size)` in which the replicas differ before
    /// the sync (single-part layouts only; else `None`).
    differing_blocks: Option<u64>,
}

pub(crate) fn part_name(replica: usize, part: usize) -> String {
    format!("r{replica}p{part}")
}

/// A two-replica pool set file for `parts` in `dir` (absolute paths, as
/// PMDK wants them).
fn set_text(dir: &Path, parts: &[u64]) -> String {
    let mut text = String::from("PMEMPOOLSET\n");
    for replica in 0..2 {
        if replica > 0 {
            text.push_str("REPLICA\n");
        }
        for (part, size) in parts.iter().enumerate() {
            text.push_str(&format!(
                "{}M {}\n",
                size / MIB,
                dir.join(part_name(replica, part)).display()
            ));
        }
    }
    text
}

fn make_template(case: &Case, dir: &Path, poolsync: &Path) -> Result<Template> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let set = dir.join("pool.set");
    write_durably(&set, set_text(dir, &case.parts).as_bytes())?;
    quiet(Command::new("pmempool").args(["create", "obj"]).arg(&set))?;
    let pool_size = pool_size(poolsync, &set)?;

    let part0 = dir.join(part_name(1, 0));
    match case.damage {
        Damage::RemoveReplica => {
            for part in 0..case.parts.len() {
                let path = dir.join(part_name(1, part));
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
        Damage::FlipHeader => flip_byte(&part0, HEADER_FLIP_OFFSET)?,
        Damage::Scatter => {
            flip_byte(&part0, HEADER_FLIP_OFFSET)?;
            let n = scatter(&part0, pool_size)?;
            eprintln!(
                "xtask: corrupted {n} of {} blocks of {}",
                pool_size / BLOCK - 1,
                part0.display()
            );
        }
    }

    let mut present = Vec::new();
    for replica in 0..2 {
        for part in 0..case.parts.len() {
            let name = part_name(replica, part);
            let path = dir.join(&name);
            if path.exists() {
                File::open(&path)
                    .and_then(|f| f.sync_all())
                    .with_context(|| format!("syncing {}", path.display()))?;
                present.push(name);
            }
        }
    }
    sync_dir(dir)?;
    let differing_blocks = if case.parts.len() == 1 && case.damage != Damage::RemoveReplica {
        Some(differing_blocks(
            &dir.join(part_name(0, 0)),
            &part0,
            BLOCK,
            pool_size,
        )?)
    } else {
        None
    };
    Ok(Template {
        dir: dir.to_path_buf(),
        present,
        pool_size,
        differing_blocks,
    })
}

/// `heap_offset + heap_size` of the set, from `poolsync info --json`.
pub(crate) fn pool_size(poolsync: &Path, set: &Path) -> Result<u64> {
    let out = Command::new(poolsync)
        .args(["info", "--json"])
        .arg(set)
        .output()
        .context("running `poolsync info --json`")?;
    ensure!(
        out.status.success(),
        "`poolsync info --json {}` failed: {}",
        set.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing `poolsync info --json`")?;
    let field = |name: &str| doc["obj_header"][name].as_u64();
    match (field("heap_offset"), field("heap_size")) {
        (Some(offset), Some(size)) => Ok(offset + size),
        _ => bail!("`poolsync info --json` printed no obj_header heap_offset/heap_size"),
    }
}

fn flip_byte(path: &Path, offset: u64) -> Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset)
        .and_then(|()| file.write_all_at(&[byte[0] ^ 0xa5], offset))
        .with_context(|| format!("flipping byte {offset} of {}", path.display()))
}

/// SplitMix64: a small, well-mixed hash for choosing blocks reproducibly.
pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Flips one byte in one block of twenty of `[4096, pool_size)` of a
/// single-part replica (zero and non-zero blocks alike: a fresh pool is
/// mostly zeros). Returns how many blocks it damaged.
fn scatter(path: &Path, pool_size: u64) -> Result<u64> {
    let mut count = 0;
    for block in 1..pool_size / BLOCK {
        let h = splitmix64(SCATTER_SEED ^ block);
        if h.is_multiple_of(SCATTER_ONE_IN) {
            flip_byte(path, block * BLOCK + (h >> 32) % BLOCK)?;
            count += 1;
        }
    }
    Ok(count)
}

/// Counts the blocks of `[from, to)` in which two files differ.
pub(crate) fn differing_blocks(a: &Path, b: &Path, from: u64, to: u64) -> Result<u64> {
    let open = |p: &Path| File::open(p).with_context(|| format!("opening {}", p.display()));
    let (fa, fb) = (open(a)?, open(b)?);
    let chunk = MIB as usize;
    let (mut ba, mut bb) = (vec![0u8; chunk], vec![0u8; chunk]);
    let mut count = 0;
    let mut at = from;
    while at < to {
        let n = usize::try_from((to - at).min(MIB)).unwrap_or(chunk);
        let (sa, sb) = (&mut ba[..n], &mut bb[..n]);
        fa.read_exact_at(sa, at)
            .with_context(|| format!("reading {} at {at}", a.display()))?;
        fb.read_exact_at(sb, at)
            .with_context(|| format!("reading {} at {at}", b.display()))?;
        if sa != sb {
            count += sa
                .chunks(BLOCK as usize)
                .zip(sb.chunks(BLOCK as usize))
                .filter(|(x, y)| x != y)
                .count() as u64;
        }
        at += n as u64;
    }
    Ok(count)
}

/// Copies the template into a fresh `work` directory, makes the copy
/// durable and reads it once. Returns the copy's pool set file.
fn stage(case: &Case, template: &Template, work: &Path) -> Result<PathBuf> {
    if work.exists() {
        fs::remove_dir_all(work).with_context(|| format!("removing {}", work.display()))?;
    }
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let set = work.join("pool.set");
    write_durably(&set, set_text(work, &case.parts).as_bytes())?;
    for name in &template.present {
        let (from, to) = (template.dir.join(name), work.join(name));
        fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        File::open(&to)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", to.display()))?;
    }
    sync_dir(work)?;
    // Warm the page cache: every tool finds every existing file cached.
    let mut buf = vec![0u8; MIB as usize];
    for name in &template.present {
        let path = work.join(name);
        let mut file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        while file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?
            > 0
        {}
    }
    Ok(set)
}

/// After a sync: both replicas hold the same bytes past the header page of
/// every part, and `pmempool check` finds the set consistent.
fn verify(case: &Case, work: &Path, set: &Path) -> Result<()> {
    for part in 0..case.parts.len() {
        let (a, b) = (work.join(part_name(0, part)), work.join(part_name(1, part)));
        let len = |p: &Path| {
            fs::metadata(p)
                .map(|m| m.len())
                .with_context(|| format!("after the sync, {} is missing", p.display()))
        };
        let (la, lb) = (len(&a)?, len(&b)?);
        ensure!(
            la == lb,
            "after the sync, {} has {la} bytes and {} {lb}",
            a.display(),
            b.display()
        );
        let n = differing_blocks(&a, &b, BLOCK, la)?;
        ensure!(
            n == 0,
            "after the sync, {} and {} still differ in {n} block(s)",
            a.display(),
            b.display()
        );
    }
    let out = Command::new("pmempool")
        .args(["check", "-v"])
        .arg(set)
        .output()
        .context("running `pmempool check`")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && stdout.lines().any(|l| l.ends_with(": consistent")),
        "after the sync, `pmempool check -v {}` says: {}",
        set.display(),
        stdout.trim()
    );
    Ok(())
}

/// What one run of one tool used.
#[derive(Debug, Clone, Default)]
struct Sample {
    wall: Duration,
    max_rss: u64,
    /// `wchar` less what the tool printed: bytes given to write syscalls
    /// for files (pwrite; not stores through a mapping).
    written: u64,
    /// `write_bytes`: page-cache bytes the tool dirtied (by write or by
    /// storing through a mapping), counted per folio.
    dirtied: u64,
    cancelled: u64,
    cpu: Duration,
    report: Option<Report>,
}

/// The counters of poolsync's `--json` report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Report {
    compared: u64,
    differing: u64,
    copied: u64,
    written: u64,
    /// Wall time of the copies and comparisons.
    data_micros: u64,
    /// Wall time of the fences that made them durable.
    persist_micros: u64,
    /// Size of the undo file that saved the bytes the sync overwrote (0:
    /// none, or a poolsync that writes none).
    undo: u64,
}

fn run_tool(variant: Variant, bins: &Binaries, set: &Path, scratch: &Path) -> Result<Sample> {
    let words = variant.command(bins, set);
    let out_path = scratch.join("measure.json");
    let mut cmd = Command::new(std::env::current_exe().context("locating xtask itself")?);
    cmd.args(["bench", MEASURE])
        .arg(&out_path)
        .arg("--")
        .args(&words)
        .stdin(Stdio::null());
    let shown = words
        .iter()
        .map(|w| w.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let out = cmd
        .output()
        .with_context(|| format!("running `{shown}` under the measuring wrapper"))?;
    ensure!(
        out.status.success(),
        "the measuring wrapper failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text =
        fs::read_to_string(&out_path).with_context(|| format!("reading {}", out_path.display()))?;
    let m: serde_json::Value = serde_json::from_str(&text).context("parsing the measurement")?;
    let num = |key: &str| m[key].as_u64().unwrap_or(0);
    ensure!(
        m["exit_code"].as_i64() == Some(0),
        "`{shown}` failed (exit code {}, signal {}): {}",
        m["exit_code"],
        m["signal"],
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let printed = (out.stdout.len() + out.stderr.len()) as u64;
    let report = if variant == Variant::Pmempool {
        None
    } else {
        Some(parse_report(&out.stdout)?)
    };
    Ok(Sample {
        wall: Duration::from_nanos(num("wall_ns")),
        max_rss: num("max_rss"),
        written: num("wchar").saturating_sub(printed),
        dirtied: num("write_bytes"),
        cancelled: num("cancelled_write_bytes"),
        cpu: Duration::from_micros(num("user_us") + num("sys_us")),
        report,
    })
}

fn parse_report(stdout: &[u8]) -> Result<Report> {
    let doc: serde_json::Value =
        serde_json::from_slice(stdout).context("parsing `poolsync sync --json`")?;
    let field = |name: &str| {
        doc["report"][name]
            .as_u64()
            .with_context(|| format!("`poolsync sync --json` printed no report.{name}"))
    };
    Ok(Report {
        compared: field("bytes_compared")?,
        differing: field("bytes_differing")?,
        copied: field("bytes_copied")?,
        written: field("bytes_written")?,
        data_micros: field("data_micros")?,
        persist_micros: field("persist_micros")?,
        undo: doc["report"]["undo"]["file_size"].as_u64().unwrap_or(0),
    })
}

/// The measurements of one case.
#[derive(Debug)]
struct CaseResult {
    case: Case,
    pool_size: u64,
    differing_blocks: Option<u64>,
    samples: Vec<(Variant, Vec<Sample>)>,
    load_before: String,
    load_after: String,
}

impl CaseResult {
    fn samples(&self, variant: Variant) -> Option<&[Sample]> {
        self.samples
            .iter()
            .find(|(v, _)| *v == variant)
            .map(|(_, s)| s.as_slice())
    }

    fn summary(&self, variant: Variant) -> Option<Summary> {
        self.samples(variant).and_then(Summary::of)
    }
}

fn run_case(case: &Case, bins: &Binaries, scratch: &Path, reps: usize) -> Result<CaseResult> {
    let load_before = load_average();
    let template_dir = scratch.join("template");
    let work = scratch.join("work");
    let template = make_template(case, &template_dir, &bins.poolsync)?;
    let mut samples: Vec<(Variant, Vec<Sample>)> =
        case.variants.iter().map(|&v| (v, Vec::new())).collect();
    for rep in 0..reps {
        for variant in take_turns(&case.variants, rep) {
            let Some((_, list)) = samples.iter_mut().find(|(v, _)| *v == variant) else {
                continue;
            };
            let set = stage(case, &template, &work)?;
            let sample = run_tool(variant, bins, &set, scratch)?;
            verify(case, &work, &set)
                .with_context(|| format!("checking the result of {}", variant.label()))?;
            eprintln!(
                "  rep {} {:<19} {:>8.3} s  peak RSS {:>10}  written {:>10}  dirtied {:>10}",
                rep + 1,
                variant.label(),
                sample.wall.as_secs_f64(),
                fmt_size(sample.max_rss),
                fmt_size(sample.written),
                fmt_size(sample.dirtied)
            );
            list.push(sample);
        }
    }
    for dir in [&work, &template_dir] {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let result = CaseResult {
        case: case.clone(),
        pool_size: template.pool_size,
        differing_blocks: template.differing_blocks,
        samples,
        load_before,
        load_after: load_average(),
    };
    println!("{}", case_text(&result));
    Ok(result)
}

// ---------------------------------------------------------------------------
// Statistics and verdicts

/// Medians over the repetitions (peak RSS: the largest).
#[derive(Debug, Clone, Copy)]
struct Summary {
    wall: Duration,
    max_rss: u64,
    written: u64,
    dirtied: u64,
    cancelled: u64,
    cpu: Duration,
    report: Option<Report>,
}

impl Summary {
    fn of(samples: &[Sample]) -> Option<Summary> {
        let first = samples.first()?;
        // Byte counts are the same in every run; the engine's own timings
        // are medians, as the wall time is.
        let timing = |f: fn(&Report) -> u64| {
            median(
                samples
                    .iter()
                    .filter_map(|s| s.report.as_ref().map(f))
                    .collect(),
            )
        };
        let report = first.report.map(|r| Report {
            data_micros: timing(|r| r.data_micros).unwrap_or(r.data_micros),
            persist_micros: timing(|r| r.persist_micros).unwrap_or(r.persist_micros),
            ..r
        });
        Some(Summary {
            wall: median(samples.iter().map(|s| s.wall).collect())?,
            max_rss: samples.iter().map(|s| s.max_rss).max()?,
            written: median(samples.iter().map(|s| s.written).collect())?,
            dirtied: median(samples.iter().map(|s| s.dirtied).collect())?,
            cancelled: median(samples.iter().map(|s| s.cancelled).collect())?,
            cpu: median(samples.iter().map(|s| s.cpu).collect())?,
            report,
        })
    }
}

/// The middle value (the lower middle one of an even count).
pub(crate) fn median<T: Ord + Copy>(mut values: Vec<T>) -> Option<T> {
    values.sort_unstable();
    let mid = values.len().checked_sub(1)? / 2;
    values.get(mid).copied()
}

/// One target, measured.
#[derive(Debug)]
struct Verdict {
    scenario: &'static str,
    target: String,
    measured: String,
    /// `None`: reported, no target.
    pass: Option<bool>,
}

fn judge(results: &[CaseResult]) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    let mut verdict = |scenario: Scenario, target: String, measured: String, pass| {
        verdicts.push(Verdict {
            scenario: scenario.name(),
            target,
            measured,
            pass,
        });
    };
    let of = |scenario: Scenario| results.iter().filter(move |r| r.case.scenario == scenario);

    // Rebuild: time, memory, and memory flat as the pool grows.
    let rebuilds: Vec<&CaseResult> = of(Scenario::Rebuild).collect();
    for r in &rebuilds {
        let (Some(ps), Some(pm)) = (r.summary(Variant::Poolsync), r.summary(Variant::Pmempool))
        else {
            continue;
        };
        let ratio = secs(ps.wall) / secs(pm.wall);
        verdict(
            Scenario::Rebuild,
            format!(
                "{}: time ≤ {REBUILD_MAX_TIME_RATIO:.1}× pmempool's",
                fmt_size(r.case.size)
            ),
            format!(
                "{ratio:.2}× ({:.3} s vs {:.3} s)",
                secs(ps.wall),
                secs(pm.wall)
            ),
            Some(ratio <= REBUILD_MAX_TIME_RATIO),
        );
        verdict(
            Scenario::Rebuild,
            format!(
                "{}: peak RSS ≤ {}",
                fmt_size(r.case.size),
                fmt_size(REBUILD_MAX_RSS)
            ),
            format!(
                "{} (pmempool {})",
                fmt_size(ps.max_rss),
                fmt_size(pm.max_rss)
            ),
            Some(ps.max_rss <= REBUILD_MAX_RSS),
        );
    }
    if let [small, large, ..] = rebuilds.as_slice() {
        if let (Some(s), Some(l)) = (
            small.summary(Variant::Poolsync),
            large.summary(Variant::Poolsync),
        ) {
            // Flat: growing the pool 4× may add at most 8 MiB or 10 %.
            let allowance = (8 * MIB).max(s.max_rss / 10);
            verdict(
                Scenario::Rebuild,
                format!(
                    "peak RSS flat from {} to {} (grows ≤ max(8 MiB, 10%))",
                    fmt_size(small.case.size),
                    fmt_size(large.case.size)
                ),
                format!("{} → {}", fmt_size(s.max_rss), fmt_size(l.max_rss)),
                Some(l.max_rss <= s.max_rss + allowance),
            );
        }
    }

    // Header: speed-up and bytes written.
    for r in of(Scenario::Header) {
        let (Some(ps), Some(pm)) = (r.summary(Variant::Poolsync), r.summary(Variant::Pmempool))
        else {
            continue;
        };
        let speedup = secs(pm.wall) / secs(ps.wall);
        verdict(
            Scenario::Header,
            format!("≥ {HEADER_MIN_SPEEDUP:.0}× faster than pmempool"),
            format!(
                "{speedup:.1}× ({:.3} s vs {:.3} s)",
                secs(ps.wall),
                secs(pm.wall)
            ),
            Some(speedup >= HEADER_MIN_SPEEDUP),
        );
        verdict(
            Scenario::Header,
            format!("bytes written ≤ {}", fmt_size(HEADER_MAX_WRITTEN)),
            format!(
                "{} by write syscalls ({} of page cache dirtied; pmempool dirtied {})",
                fmt_size(ps.written),
                fmt_size(ps.dirtied),
                fmt_size(pm.dirtied)
            ),
            Some(ps.written <= HEADER_MAX_WRITTEN),
        );
        if let Some(report) = ps.report {
            verdict(
                Scenario::Header,
                "compare rate (reported)".to_string(),
                format!(
                    "{:.2} GB/s ({} compared in {:.3} s, whole run)",
                    report.compared as f64 / secs(ps.wall) / 1e9,
                    fmt_size(report.compared),
                    secs(ps.wall)
                ),
                None,
            );
        }
    }

    // Scattered: compare rate, only damaged blocks written, pmempool rewrites.
    for r in of(Scenario::Scattered) {
        let (Some(ps), Some(pm)) = (r.summary(Variant::Poolsync), r.summary(Variant::Pmempool))
        else {
            continue;
        };
        if let Some(report) = ps.report {
            // The compare phase: reading both replicas, comparing them and
            // writing the differing blocks (the engine's `data_micros`).
            // Making those writes durable is the disk's part, reported
            // with the whole run beside it.
            let data = report.data_micros as f64 / 1e6;
            let rate = if data > 0.0 {
                report.compared as f64 / data
            } else {
                0.0
            };
            verdict(
                Scenario::Scattered,
                format!(
                    "compares at ≥ {:.0} GB/s (warm page cache)",
                    SCATTER_MIN_COMPARE_RATE / 1e9
                ),
                format!(
                    "{:.2} GB/s ({} compared, and the differing blocks written, in {:.3} s)",
                    rate / 1e9,
                    fmt_size(report.compared),
                    data
                ),
                Some(rate >= SCATTER_MIN_COMPARE_RATE),
            );
            verdict(
                Scenario::Scattered,
                "whole run, with the fdatasync of the repaired blocks (reported)".to_string(),
                format!(
                    "{:.2} GB/s ({} in {:.3} s; the final fdatasync took {:.3} s)",
                    report.compared as f64 / secs(ps.wall) / 1e9,
                    fmt_size(report.compared),
                    secs(ps.wall),
                    report.persist_micros as f64 / 1e6
                ),
                None,
            );
            let damaged = r.differing_blocks.unwrap_or(0) * BLOCK;
            // The undo file saves the bytes the repair overwrites: as many
            // as the damaged blocks, written to a file of its own.
            let into_pool = ps.written.saturating_sub(report.undo);
            verdict(
                Scenario::Scattered,
                "writes only the damaged blocks (and their undo file)".to_string(),
                format!(
                    "{} differing found, {} damaged; {} written by syscalls: {} into the pool \
                     (headers included), {} into the undo file",
                    fmt_size(report.differing),
                    fmt_size(damaged),
                    fmt_size(ps.written),
                    fmt_size(into_pool),
                    fmt_size(report.undo)
                ),
                Some(
                    report.differing == damaged
                        && report.copied == 0
                        && into_pool <= damaged + HEADER_ALLOWANCE,
                ),
            );
        }
        verdict(
            Scenario::Scattered,
            "pmempool rewrites the whole replica (reported)".to_string(),
            format!(
                "pmempool dirtied {} of a {} replica; poolsync {:.1}× faster",
                fmt_size(pm.dirtied),
                fmt_size(r.case.size),
                secs(pm.wall) / secs(ps.wall)
            ),
            None,
        );
    }

    // Parallel: speed-up of poolsync's workers.
    for r in of(Scenario::Parallel) {
        let (Some(all), Some(one), Some(pm)) = (
            r.summary(Variant::Poolsync),
            r.summary(Variant::PoolsyncOneCpu),
            r.summary(Variant::Pmempool),
        ) else {
            continue;
        };
        verdict(
            Scenario::Parallel,
            "speed-up of rayon workers (reported)".to_string(),
            format!(
                "{:.2}× ({:.3} s on 1 CPU, {:.3} s on all; pmempool {:.3} s)",
                secs(one.wall) / secs(all.wall),
                secs(one.wall),
                secs(all.wall),
                secs(pm.wall)
            ),
            None,
        );
    }
    verdicts
}

pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}

// ---------------------------------------------------------------------------
// Output

fn case_text(r: &CaseResult) -> String {
    let mut out = format!(
        "\n### {}\npool size {}; load average {} → {}\n",
        r.case.title(),
        fmt_size(r.pool_size),
        r.load_before,
        r.load_after
    );
    if let Some(n) = r.differing_blocks {
        out.push_str(&format!(
            "replicas differ in {n} block(s) ({}) before the sync\n",
            fmt_size(n * BLOCK)
        ));
    }
    out.push_str(&format!(
        "{:<19} {:>10} {:>10} {:>11} {:>11} {:>10}  all runs (s)\n",
        "tool", "wall", "CPU", "peak RSS", "written", "dirtied"
    ));
    for (variant, samples) in &r.samples {
        let Some(s) = Summary::of(samples) else {
            continue;
        };
        let runs: Vec<String> = samples
            .iter()
            .map(|x| format!("{:.3}", x.wall.as_secs_f64()))
            .collect();
        out.push_str(&format!(
            "{:<19} {:>8.3} s {:>8.3} s {:>11} {:>11} {:>10}  {}\n",
            variant.label(),
            s.wall.as_secs_f64(),
            s.cpu.as_secs_f64(),
            fmt_size(s.max_rss),
            fmt_size(s.written),
            fmt_size(s.dirtied),
            runs.join(" ")
        ));
        if let Some(rep) = s.report {
            out.push_str(&format!(
                "{:<19} report: {} compared, {} differing, {} copied, {} written, \
                 undo file {}; data phase {:.3} s, fences {:.3} s\n",
                "",
                fmt_size(rep.compared),
                fmt_size(rep.differing),
                fmt_size(rep.copied),
                fmt_size(rep.written),
                fmt_size(rep.undo),
                rep.data_micros as f64 / 1e6,
                rep.persist_micros as f64 / 1e6
            ));
        }
        if s.cancelled > 0 {
            out.push_str(&format!(
                "{:<19} cancelled_write_bytes {}\n",
                "",
                fmt_size(s.cancelled)
            ));
        }
    }
    if let (Some(ps), Some(pm)) = (r.summary(Variant::Poolsync), r.summary(Variant::Pmempool)) {
        out.push_str(&format!(
            "{:<19} {:>9.2}× {:>9.2}× {:>10.3}× {:>11} {:>9.3}×\n",
            "poolsync/pmempool",
            secs(ps.wall) / secs(pm.wall),
            secs(ps.cpu) / secs(pm.cpu),
            ps.max_rss as f64 / pm.max_rss.max(1) as f64,
            "",
            ps.dirtied as f64 / pm.dirtied.max(1) as f64,
        ));
    }
    if let (Some(ps), Some(base)) = (r.summary(Variant::Poolsync), r.summary(Variant::Baseline)) {
        out.push_str(&format!(
            "{:<19} {:>10} {:>10} {:>11} {:>11} {:>10}\n",
            "poolsync/baseline",
            ratio(secs(ps.wall), secs(base.wall)),
            ratio(secs(ps.cpu), secs(base.cpu)),
            byte_ratio(ps.max_rss, base.max_rss),
            byte_ratio(ps.written, base.written),
            byte_ratio(ps.dirtied, base.dirtied),
        ));
    }
    out
}

/// The ratios new/baseline of every case: whole-process figures, then the
/// engine's own timings of its data phase and its fences (`--json`).
fn baseline_table(results: &[CaseResult]) -> String {
    let mut rows = Vec::new();
    for r in results {
        let (Some(new), Some(base)) = (r.samples(Variant::Poolsync), r.samples(Variant::Baseline))
        else {
            continue;
        };
        let (Some(n), Some(b)) = (Summary::of(new), Summary::of(base)) else {
            continue;
        };
        let walls = |s: &[Sample]| s.iter().map(|x| x.wall).collect::<Vec<_>>();
        let engine = |f: fn(&Report) -> u64| match (n.report, b.report) {
            (Some(n), Some(b)) => micros_ratio(f(&n), f(&b)),
            _ => String::new(),
        };
        rows.push(vec![
            r.case.scenario.name().to_string(),
            format!(
                "{} × {}",
                r.case.parts.len(),
                fmt_size(r.case.parts.first().copied().unwrap_or(0))
            ),
            wall_ratio(&walls(new), &walls(base)),
            ratio(secs(n.cpu), secs(b.cpu)),
            byte_ratio(n.max_rss, b.max_rss),
            byte_ratio(n.written, b.written),
            byte_ratio(n.dirtied, b.dirtied),
            engine(|r| r.data_micros),
            engine(|r| r.persist_micros),
        ]);
    }
    markdown_table(
        &[
            "scenario",
            "replica",
            "wall, new/baseline (range)",
            "CPU",
            "peak RSS",
            "written (syscalls)",
            "dirtied (write_bytes)",
            "data phase (data_micros)",
            "fences (persist_micros)",
        ],
        &rows,
    )
}

fn results_table(results: &[CaseResult]) -> String {
    let mut out = String::from(
        "| scenario | replica | tool | wall (median) | peak RSS | written (syscalls) | \
         dirtied (write_bytes) | wall vs pmempool |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        let pm = r.summary(Variant::Pmempool);
        for (variant, samples) in &r.samples {
            let Some(s) = Summary::of(samples) else {
                continue;
            };
            let ratio = match (variant, pm) {
                (Variant::Pmempool, _) | (_, None) => "".to_string(),
                (_, Some(pm)) => format!("{:.2}×", secs(s.wall) / secs(pm.wall)),
            };
            out.push_str(&format!(
                "| {} | {} × {} | {} | {:.3} s | {} | {} | {} | {} |\n",
                r.case.scenario.name(),
                r.case.parts.len(),
                fmt_size(r.case.parts.first().copied().unwrap_or(0)),
                variant.label(),
                s.wall.as_secs_f64(),
                fmt_size(s.max_rss),
                fmt_size(s.written),
                fmt_size(s.dirtied),
                ratio
            ));
        }
    }
    out
}

fn verdict_table(verdicts: &[Verdict]) -> String {
    let mut out = String::from("| scenario | target | measured | result |\n|---|---|---|---|\n");
    for v in verdicts {
        let result = match v.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "reported",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {result} |\n",
            v.scenario, v.target, v.measured
        ));
    }
    out
}

/// `1.00 GiB`, `256 MiB`, `8.0 KiB`, `512 B`.
pub(crate) fn fmt_size(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes >= GIB {
        format!("{:.2} GiB", b / GIB as f64)
    } else if bytes >= MIB {
        format!("{:.1} MiB", b / MIB as f64)
    } else if bytes >= KIB {
        format!("{:.1} KiB", b / KIB as f64)
    } else {
        format!("{bytes} B")
    }
}

// ---------------------------------------------------------------------------
// The machine and the kernel's counters

/// `/proc/<pid>/io` (Documentation/filesystems/proc.rst).
#[derive(Debug, Default, Clone, Copy)]
struct ProcIo {
    rchar: u64,
    wchar: u64,
    read_bytes: u64,
    write_bytes: u64,
    cancelled_write_bytes: u64,
}

impl ProcIo {
    fn read_self() -> Result<ProcIo> {
        let text = fs::read_to_string("/proc/self/io").context("reading /proc/self/io")?;
        Ok(ProcIo::parse(&text))
    }

    fn parse(text: &str) -> ProcIo {
        let mut io = ProcIo::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<u64>() else {
                continue;
            };
            match key.trim() {
                "rchar" => io.rchar = value,
                "wchar" => io.wchar = value,
                "read_bytes" => io.read_bytes = value,
                "write_bytes" => io.write_bytes = value,
                "cancelled_write_bytes" => io.cancelled_write_bytes = value,
                _ => {}
            }
        }
        io
    }
}

/// What the figures were measured on.
#[derive(Debug)]
pub(crate) struct Machine {
    pub(crate) cpus: usize,
    pub(crate) cpu_model: String,
    pub(crate) memory: String,
    pub(crate) kernel: String,
    pub(crate) filesystem: String,
    pub(crate) pmempool: String,
}

impl Machine {
    pub(crate) fn probe(dir: &Path) -> Machine {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown CPU".to_string(), |(_, m)| m.trim().to_string());
        let meminfo = read("/proc/meminfo");
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or_else(|| "unknown".to_string(), |kib| fmt_size(kib * KIB));
        let filesystem = Command::new("findmnt")
            .args(["--noheadings", "--output", "FSTYPE", "--target"])
            .arg(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map_or_else(
                || "unknown".to_string(),
                |o| String::from_utf8_lossy(&o.stdout).trim().to_string(),
            );
        let pmempool = Command::new("pmempool")
            .arg("--version")
            .output()
            .ok()
            .map_or_else(String::new, |o| {
                String::from_utf8_lossy(&o.stdout).trim().to_string()
            });
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model,
            memory,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            filesystem,
            pmempool,
        }
    }

    pub(crate) fn describe(&self, reps: usize) -> String {
        format!(
            "Machine: {} CPUs ({}), {} memory, Linux {}, pool sets on {}; {}; \
             {reps} repetition{}, warm page cache, load average now {}.",
            self.cpus,
            self.cpu_model,
            self.memory,
            self.kernel,
            self.filesystem,
            self.pmempool,
            if reps == 1 { "" } else { "s" },
            load_average()
        )
    }
}

pub(crate) fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_string())
}

pub(crate) fn free_space(dir: &Path) -> Result<u64> {
    let stat =
        nix::sys::statvfs::statvfs(dir).with_context(|| format!("statvfs {}", dir.display()))?;
    Ok(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes)
        .and_then(|()| File::open(path)?.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing the directory {}", dir.display()))
}

/// Runs `cmd`, showing its output only when it fails.
pub(crate) fn quiet(cmd: &mut Command) -> Result<()> {
    let shown = util::display(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("starting `{shown}`"))?;
    ensure!(
        out.status.success(),
        "`{shown}` failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("1G").ok(), Some(GIB));
        assert_eq!(parse_size("256M").ok(), Some(256 * MIB));
        assert_eq!(parse_size("512MiB").ok(), Some(512 * MIB));
        assert_eq!(parse_size("4096").ok(), Some(4096));
        assert!(parse_size("1Q").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn options_take_both_spellings_and_check_the_size() {
        let o = parse_options(&args(&[
            "--size=256M",
            "--reps",
            "5",
            "--scenario",
            "header",
        ]))
        .expect("valid options");
        assert_eq!((o.size, o.reps), (256 * MIB, 5));
        assert_eq!(o.scenarios, vec![Scenario::Header]);
        assert_eq!(o.baseline, None);
        let o = parse_options(&[]).expect("defaults");
        assert_eq!((o.size, o.reps, o.scenarios.len()), (GIB, 3, 4));
        let o =
            parse_options(&args(&["--baseline", "old/poolsync", "--dir=d"])).expect("a baseline");
        assert_eq!(o.baseline, Some(PathBuf::from("old/poolsync")));
        assert_eq!(o.dir, Some(PathBuf::from("d")));
        let o = parse_options(&args(&["--baseline=old/poolsync"])).expect("a baseline");
        assert_eq!(o.baseline, Some(PathBuf::from("old/poolsync")));
        for bad in [
            &["--size", "60M"][..],
            &["--size", "100M"],
            &["--reps", "0"],
            &["--scenario", "nope"],
            &["--frobnicate"],
            &["--reps"],
            &["--baseline"],
        ] {
            assert!(parse_options(&args(bad)).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn rebuild_runs_at_two_sizes_and_parallel_splits_the_replica() {
        let sizes: Vec<u64> = Scenario::Rebuild
            .cases(GIB, false)
            .iter()
            .map(|c| c.size)
            .collect();
        assert_eq!(sizes, vec![GIB / 4, GIB]);
        let parallel = Scenario::Parallel.cases(GIB, false);
        assert_eq!(parallel[0].parts, vec![GIB / 2, GIB / 2]);
        assert!(parallel[0].variants.contains(&Variant::PoolsyncOneCpu));
    }

    #[test]
    fn a_baseline_is_one_more_variant_of_every_case() {
        for scenario in Scenario::ALL {
            for (with, without) in scenario
                .cases(GIB, true)
                .iter()
                .zip(scenario.cases(GIB, false))
            {
                assert!(!without.variants.contains(&Variant::Baseline));
                let mut expected = without.variants.clone();
                expected.insert(1, Variant::Baseline);
                assert_eq!(with.variants, expected, "{}", with.title());
            }
        }
        let bins = Binaries {
            poolsync: PathBuf::from("new"),
            baseline: Some(crate::bench_baseline::Baseline {
                path: PathBuf::from("old"),
                version: "poolsync 0.1.0".to_string(),
            }),
            target: PathBuf::from("t"),
            commit: "abc".to_string(),
        };
        let words = |v: Variant| v.command(&bins, Path::new("s"));
        assert_eq!(
            words(Variant::Baseline),
            ["old", "sync", "--json", "--no-progress", "s"].map(OsString::from)
        );
        assert_eq!(
            words(Variant::Poolsync),
            ["new", "sync", "--json", "--no-progress", "s"].map(OsString::from)
        );
    }

    #[test]
    fn set_files_name_both_replicas() {
        let text = set_text(Path::new("/p"), &[16 * MIB, 8 * MIB]);
        assert_eq!(
            text,
            "PMEMPOOLSET\n16M /p/r0p0\n8M /p/r0p1\nREPLICA\n16M /p/r1p0\n8M /p/r1p1\n"
        );
    }

    #[test]
    fn proc_io_parses_the_kernel_format() {
        let io = ProcIo::parse(
            "rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\n\
             write_bytes: 8192\ncancelled_write_bytes: 0\n",
        );
        assert_eq!(
            (io.rchar, io.wchar, io.read_bytes, io.write_bytes),
            (10, 20, 4096, 8192)
        );
    }

    #[test]
    fn medians_and_scatter_choice() {
        assert_eq!(median(vec![3, 1, 2]), Some(2));
        assert_eq!(median(vec![4, 1, 3, 2]), Some(2));
        assert_eq!(median::<u64>(vec![]), None);
        // About one block in twenty is chosen.
        let chosen = (1..100_000u64)
            .filter(|b| splitmix64(SCATTER_SEED ^ b).is_multiple_of(SCATTER_ONE_IN))
            .count();
        assert!((4_500..5_500).contains(&chosen), "{chosen}");
    }

    #[test]
    fn differing_blocks_counts_whole_blocks() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let (a, b) = (dir.join("a"), dir.join("b"));
        let data = vec![7u8; 5 * BLOCK as usize];
        fs::write(&a, &data).expect("write a");
        fs::write(&b, &data).expect("write b");
        flip_byte(&b, BLOCK + 5).expect("flip");
        flip_byte(&b, 3 * BLOCK + 4095).expect("flip");
        flip_byte(&b, 3).expect("flip");
        assert_eq!(differing_blocks(&a, &b, 0, 5 * BLOCK).ok(), Some(3));
        assert_eq!(differing_blocks(&a, &b, BLOCK, 5 * BLOCK).ok(), Some(2));
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn measuring_a_child_counts_its_writes() {
        // The wrapper's own /proc/self/io grows by what a reaped child wrote.
        let dir = std::env::temp_dir().join(format!("xtask-measure-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let out = dir.join("m.json");
        let target = dir.join("data");
        measure(&args(&[
            out.to_str().expect("utf-8 path"),
            "--",
            "dd",
            "if=/dev/zero",
            &format!("of={}", target.display()),
            "bs=64k",
            "count=16",
            "status=none",
        ]))
        .expect("measuring dd");
        let m: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&out).expect("read")).expect("json");
        assert_eq!(m["exit_code"], 0);
        assert!(m["wchar"].as_u64().unwrap_or(0) >= 16 * 64 * KIB, "{m}");
        assert!(m["max_rss"].as_u64().unwrap_or(0) > 0, "{m}");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
