//! `cargo xtask bench packets`: update packets on a pool of libpmemobj
//! data, side by side with the references the targets of
//! `docs/performance.md` name, in one run.
//!
//! The source is one replica of `--size` (1 GiB by default), made by
//! `pmempool create obj` and filled by `objclient fill` (the interop
//! tests' libpmemobj client) with a root object of 7/8 of the pool. The
//! destination, a pool set of the same size, is seeded from it by `poolsync
//! export` and `poolsync import` (timed too). Then, for each scenario and
//! repetition, blocks of the root object's data change in the source
//! (random bytes, written into the part file as an application's stores
//! would leave them): 1 % of the pool's blocks scattered, then 10 %
//! clustered in runs of 256 blocks. Each repetition measures, warm:
//!
//! * `cat` of the source's part to `/dev/null` (one read pass);
//! * `poolsync export` (uncompressed, and once with zstd, for the record);
//! * `rsync --only-write-batch` of the same change against the
//!   destination's part (the delta rsync would ship; `--ignore-times
//!   --no-whole-file`, as over a network);
//! * `poolsync import`, which checks the destination against its state.
//!
//! Every tool runs under `bench __measure` (see `bench_sync`): wall time,
//! CPU time and peak RSS. After each import the destination's range must
//! equal the source's.
//!
//! With `--baseline BIN`, an older poolsync does the same export and
//! import in every repetition, after the new build: from the source's
//! state as it was before the new export (saved and put back), into a
//! second destination seeded as a copy of the first, each file made warm
//! or cold again first. Each build reads only its own packets, so packet
//! formats may differ. The summary ends with the ratios new/baseline.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::bench_sync::{
    fmt_size, free_space, load_average, median, parse_size_options, pool_size, quiet, secs,
    splitmix64, write_durably, Machine, Scratch, BLOCK, KIB, MIB,
};
use crate::bench_verify::{build_objclient, cold_cache_works, fill, prepare, warm, Cache};
use crate::util;

/// The root object takes this share of the pool, in per mille.
const ROOT_PER_MILLE: u64 = 875;
/// Seed of the fill pattern and of the changes.
const SEED: u64 = 0x7061_636b_6574;

/// Targets (docs/performance.md).
const PACKET_FACTOR: f64 = 1.02;
const PACKET_SLACK: u64 = 64 * KIB;
const EXPORT_FACTOR: f64 = 1.5;
const IMPORT_FACTOR: f64 = 2.0;
const MAX_RSS: u64 = 64 * MIB;

/// How the blocks change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// 1 % of the pool's blocks, each alone.
    Scattered,
    /// 10 % of the pool's blocks, in runs of 256 blocks (1 MiB).
    Clustered,
}

impl Scenario {
    const ALL: [Scenario; 2] = [Scenario::Scattered, Scenario::Clustered];

    fn label(self) -> &'static str {
        match self {
            Scenario::Scattered => "1 % scattered",
            Scenario::Clustered => "10 % clustered",
        }
    }

    /// Blocks that change, out of `pool_blocks`.
    fn blocks(self, pool_blocks: u64) -> u64 {
        match self {
            Scenario::Scattered => pool_blocks / 100,
            Scenario::Clustered => pool_blocks / 10,
        }
    }

    /// Blocks per run of changed blocks.
    fn run_len(self) -> u64 {
        match self {
            Scenario::Scattered => 1,
            Scenario::Clustered => 256,
        }
    }
}

/// One measured tool run.
#[derive(Debug, Clone, Copy)]
struct Usage {
    wall: Duration,
    cpu: Duration,
    max_rss: u64,
}

/// One repetition of one scenario.
#[derive(Debug, Clone)]
struct Rep {
    changed_bytes: u64,
    packet_bytes: u64,
    zstd_bytes: u64,
    rsync_bytes: u64,
    cat: Usage,
    export: Usage,
    import: Usage,
    /// The baseline's export and import, with `--baseline`.
    baseline: Option<(Usage, Usage)>,
}

/// The source and destination every repetition works on.
struct Sites {
    dir: PathBuf,
    source_set: PathBuf,
    source_part: PathBuf,
    dest_set: PathBuf,
    dest_part: PathBuf,
    /// With `--baseline`: the baseline build's binary, and its destination
    /// (set file, part).
    baseline: Option<(PathBuf, PathBuf, PathBuf)>,
    pool_size: u64,
    root_data: u64,
    root_len: u64,
}

/// `cargo xtask bench packets [--size SIZE] [--reps N] [--dir DIR]`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let options = parse_size_options("packets", args)?;
    if let Some(b) = &options.baseline {
        ensure!(
            b.is_file(),
            "--baseline: {} is not a file (a poolsync binary built from an older commit)",
            b.display()
        );
    }
    for tool in ["pmempool", "cc", "cat", "rsync"] {
        ensure!(
            util::on_path(tool),
            "`bench packets` needs `{tool}` on PATH (pmempool: Debian's pmdk-tools; cc and \
             libpmemobj-dev to build the client; rsync for the reference)"
        );
    }
    util::step("building poolsync (release)");
    util::run(
        util::cargo()
            .args(["build", "--release", "--package", "poolsync"])
            .current_dir(root),
    )?;
    let target = util::target_dir(root)?;
    let poolsync = target.join("release").join("poolsync");
    ensure!(
        poolsync.is_file(),
        "no release binary at {}",
        poolsync.display()
    );
    let base = options.dir.clone().unwrap_or(target);
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    // Source, destination, a packet; and the baseline's destination.
    let copies = if options.baseline.is_some() { 4 } else { 3 };
    let need = copies * options.size + 256 * MIB;
    let free = free_space(&base)?;
    ensure!(
        free >= need,
        "{} has {} free; the bench needs {}. Use a smaller --size or another --dir",
        base.display(),
        fmt_size(free),
        fmt_size(need)
    );
    let scratch = Scratch::create(base.join("poolsync-bench-packets"))?;
    let objclient = build_objclient(root, &scratch.0)?;
    let machine = Machine::probe(&base);

    util::step("making the source and seeding the destination");
    let mut sites = make_sites(&scratch.0, options.size, &poolsync, &objclient)?;
    let seed = seed(&sites, &poolsync)?;
    if let Some(bin) = &options.baseline {
        sites.baseline = Some(seed_baseline(&sites, bin)?);
    }
    println!(
        "source: {} pool, root object {} at {:#x}; seeding: export {:.3} s ({} packet), import {:.3} s",
        fmt_size(sites.pool_size),
        fmt_size(sites.root_len),
        sites.root_data,
        seed.0.wall.as_secs_f64(),
        fmt_size(seed.2),
        seed.1.wall.as_secs_f64()
    );

    let load_before = load_average();
    let mut results: Vec<((Scenario, Cache), Vec<Rep>)> = Vec::new();
    let mut epoch = 1u64;
    // Warm: a read pass at memory speed, so the ratios show the CPU and
    // the durable writes on top. Cold (when eviction works): every file
    // read comes from the disk, as a read pass of a pool does after a
    // reboot.
    let caches: &[Cache] = if cold_cache_works(&sites.source_part)? {
        &[Cache::Warm, Cache::Cold]
    } else {
        eprintln!("xtask: note: posix_fadvise(DONTNEED) did not evict; measuring warm only");
        &[Cache::Warm]
    };
    for (scenario, &cache) in Scenario::ALL
        .into_iter()
        .flat_map(|s| caches.iter().map(move |c| (s, c)))
    {
        let mut reps = Vec::new();
        for rep in 0..options.reps {
            epoch += 1;
            let r = run_rep(&sites, &poolsync, (scenario, cache), epoch)?;
            if let Some((export, import)) = &r.baseline {
                println!(
                    "{} ({}) rep {}: baseline export {:.3} s, import {:.3} s",
                    scenario.label(),
                    cache.name(),
                    rep + 1,
                    export.wall.as_secs_f64(),
                    import.wall.as_secs_f64()
                );
            }
            println!(
                "{} ({}) rep {}: changed {}, packet {} (zstd {}), rsync batch {}; cat {:.3} s, \
                 export {:.3} s, import {:.3} s; peak RSS export {}, import {}",
                scenario.label(),
                cache.name(),
                rep + 1,
                fmt_size(r.changed_bytes),
                fmt_size(r.packet_bytes),
                fmt_size(r.zstd_bytes),
                fmt_size(r.rsync_bytes),
                r.cat.wall.as_secs_f64(),
                r.export.wall.as_secs_f64(),
                r.import.wall.as_secs_f64(),
                fmt_size(r.export.max_rss),
                fmt_size(r.import.max_rss)
            );
            reps.push(r);
        }
        results.push(((scenario, cache), reps));
    }
    let load_after = load_average();
    drop(scratch);

    println!("\n## Summary (markdown)\n");
    println!(
        "Machine: {} CPUs ({}), {} memory, Linux {}, pools on {}; {}; {} repetition(s); load \
         average (1, 5, 15 min) {load_before} before, {load_after} after.\n",
        machine.cpus,
        machine.cpu_model,
        machine.memory,
        machine.kernel,
        machine.filesystem,
        machine.pmempool,
        options.reps
    );
    println!(
        "One replica of {}, root object {} of libpmemobj data; seeding: export {:.3} s, \
         import {:.3} s, packet {}.\n",
        fmt_size(options.size),
        fmt_size(sites.root_len),
        seed.0.wall.as_secs_f64(),
        seed.1.wall.as_secs_f64(),
        fmt_size(seed.2)
    );
    println!("{}", results_table(&results));
    let verdicts = judge(&results);
    println!("{}", verdict_table(&verdicts));
    if let Some(bin) = &options.baseline {
        println!("New build against the baseline ({}):\n", bin.display());
        println!("{}", baseline_table(&results));
    }
    Ok(())
}

/// The source (created, filled) and the destination's set file.
fn make_sites(dir: &Path, size: u64, poolsync: &Path, objclient: &Path) -> Result<Sites> {
    let a = dir.join("a");
    let b = dir.join("b");
    fs::create_dir_all(&a).with_context(|| format!("creating {}", a.display()))?;
    fs::create_dir_all(&b).with_context(|| format!("creating {}", b.display()))?;
    let source_set = a.join("pool.set");
    let source_part = a.join("part");
    write_durably(
        &source_set,
        format!("PMEMPOOLSET\n{}M {}\n", size / MIB, source_part.display()).as_bytes(),
    )?;
    quiet(
        Command::new("pmempool")
            .args(["create", "obj"])
            .arg(&source_set),
    )?;
    let pool = pool_size(poolsync, &source_set)?;
    let root_len = size / 1000 * ROOT_PER_MILLE / BLOCK * BLOCK;
    let root_data = fill(objclient, &source_set, root_len, SEED)?;
    let dest_set = b.join("pool.set");
    let dest_part = b.join("part");
    write_durably(
        &dest_set,
        format!("PMEMPOOLSET\n{}M {}\n", size / MIB, dest_part.display()).as_bytes(),
    )?;
    Ok(Sites {
        dir: dir.to_path_buf(),
        source_set,
        source_part,
        dest_set,
        dest_part,
        baseline: None,
        pool_size: pool,
        root_data,
        root_len,
    })
}

/// Seeds the destination; returns the export's and import's usage and
/// the packet's size.
fn seed(s: &Sites, poolsync: &Path) -> Result<(Usage, Usage, u64)> {
    let packet = s.dir.join("seed.pkt");
    let export = measured(
        poolsync,
        &["export", "--no-progress", "--out"],
        &[packet.as_path(), &s.source_set, Path::new("b")],
        &s.dir,
    )?;
    let bytes = packet_bytes(&packet)?;
    let import = measured(
        poolsync,
        &["import", "--no-progress"],
        &[&s.dest_set, &packet],
        &s.dir,
    )?;
    same_range(s, &s.dest_part)?;
    Ok((export, import, bytes))
}

/// The baseline's destination: a copy of the seeded one (part and state)
/// under its own set file, so that both builds start from the same epoch.
fn seed_baseline(s: &Sites, bin: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let c = s.dir.join("c");
    fs::create_dir_all(&c).with_context(|| format!("creating {}", c.display()))?;
    let set = c.join("pool.set");
    let part = c.join("part");
    write_durably(
        &set,
        format!("PMEMPOOLSET\n{}M {}\n", s.pool_size / MIB, part.display()).as_bytes(),
    )?;
    for (from, to) in [
        (s.dest_part.clone(), part.clone()),
        (state_of(&s.dest_set), state_of(&set)),
    ] {
        fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    // The baseline must take the copy as its own: an empty import (no
    // packet applies) would not prove it, an epoch listing does.
    let out = Command::new(bin)
        .arg("epoch")
        .arg(&set)
        .output()
        .with_context(|| format!("running {} epoch", bin.display()))?;
    ensure!(
        out.status.success(),
        "the baseline does not read the copied destination: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok((bin.to_path_buf(), set, part))
}

/// Changes blocks, then measures `cat`, the exports, rsync and the import.
fn run_rep(
    s: &Sites,
    poolsync: &Path,
    (scenario, cache): (Scenario, Cache),
    epoch: u64,
) -> Result<Rep> {
    let changed = change(s, scenario, epoch)?;
    warm(&s.dest_part)?;
    prepare(cache, std::slice::from_ref(&s.source_part))?;
    // `cat` to /dev/null, as a read pass is timed: the measuring wrapper's
    // own output is a pipe the bench reads, and 1 GiB through it would
    // time the pipe (the shell execs cat, so no process is added).
    let cat = measured(
        Path::new("sh"),
        &["-c", "exec cat \"$0\" > /dev/null"],
        &[&s.source_part],
        &s.dir,
    )?;

    // The zstd export runs first as a dry run (it writes nothing, not even
    // the state); the measured export is the uncompressed one.
    let zstd = s.dir.join(format!("zstd-{epoch}.pkt"));
    let out = Command::new(poolsync)
        .args(["export", "--dry-run", "--json", "--compress", "--out"])
        .arg(&zstd)
        .arg(&s.source_set)
        .arg("b")
        .output()
        .context("running the zstd dry run")?;
    ensure!(out.status.success(), "zstd dry run failed");
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing export --json")?;
    let zstd_bytes = doc["report"]["packet"]["packet_bytes"]
        .as_u64()
        .context("export --json printed no packet_bytes")?;

    let batch = s.dir.join(format!("rsync-{epoch}.batch"));
    quiet(
        Command::new("rsync")
            // Compare the contents whatever the sizes and times say, and
            // compute a delta, as over a network.
            .arg("--ignore-times")
            .arg("--no-whole-file")
            .arg(format!("--only-write-batch={}", batch.display()))
            .arg(&s.source_part)
            .arg(&s.dest_part),
    )?;
    let rsync_bytes = fs::metadata(&batch)
        .with_context(|| format!("reading the size of {}", batch.display()))?
        .len();
    let _ = fs::remove_file(&batch);
    let _ = fs::remove_file(batch.with_extension("batch.sh"));

    // The source's state before the export, for the baseline's.
    let saved_state = if s.baseline.is_some() {
        let state = state_of(&s.source_set);
        fs::read(&state).with_context(|| format!("reading {}", state.display()))?
    } else {
        Vec::new()
    };
    let packet = s.dir.join(format!("p{epoch}.pkt"));
    let (export, import, packet_bytes) =
        export_import(s, poolsync, (&s.dest_set, &s.dest_part), cache, &packet)?;
    let baseline = match &s.baseline {
        Some((bin, set, part)) => {
            // From the source's state as it was before the new export.
            write_durably(&state_of(&s.source_set), &saved_state)?;
            let packet = s.dir.join(format!("base-{epoch}.pkt"));
            let (export, import, _) = export_import(s, bin, (set, part), cache, &packet)?;
            Some((export, import))
        }
        None => None,
    };
    Ok(Rep {
        changed_bytes: changed,
        packet_bytes,
        zstd_bytes,
        rsync_bytes,
        cat,
        export,
        import,
        baseline,
    })
}

/// `poolsync` exports the source's change for destination `b` into
/// `packet` and imports it into the destination `(set, part)`, each after
/// the files it reads are made warm or cold; the destination must then
/// equal the source. Returns both runs and the packet's size (taken
/// before the import deletes it).
fn export_import(
    s: &Sites,
    poolsync: &Path,
    (set, part): (&Path, &Path),
    cache: Cache,
    packet: &Path,
) -> Result<(Usage, Usage, u64)> {
    // Every file the export reads: the source and its state.
    prepare(
        cache,
        &[
            s.source_part.clone(),
            state_of(&s.source_set),
            s.source_set.clone(),
        ],
    )?;
    let export = measured(
        poolsync,
        &["export", "--no-progress", "--out"],
        &[packet, &s.source_set, Path::new("b")],
        &s.dir,
    )?;
    let bytes = packet_bytes(packet)?;
    // Every file the import reads: the destination, its state, the packet.
    prepare(
        cache,
        &[
            part.to_path_buf(),
            state_of(set),
            set.to_path_buf(),
            packet.to_path_buf(),
        ],
    )?;
    let import = measured(
        poolsync,
        &["import", "--no-progress"],
        &[set, packet],
        &s.dir,
    )?;
    same_range(s, part)?;
    Ok((export, import, bytes))
}

/// The state file beside a pool set file (`<set>.poolsync-state`).
fn state_of(set: &Path) -> PathBuf {
    let mut name = set.as_os_str().to_os_string();
    name.push(".poolsync-state");
    PathBuf::from(name)
}

/// Writes random bytes over the scenario's blocks of the root object's
/// data; returns the bytes changed.
fn change(s: &Sites, scenario: Scenario, epoch: u64) -> Result<u64> {
    let pool_blocks = s.pool_size / BLOCK;
    let count = scenario.blocks(pool_blocks);
    let run = scenario.run_len();
    let first = s.root_data.div_ceil(BLOCK);
    let end = (s.root_data + s.root_len) / BLOCK;
    let runs = count / run;
    let span = (end - first) / runs.max(1);
    ensure!(
        span >= run,
        "the root object is too small for {count} changed blocks"
    );
    let file = OpenOptions::new()
        .write(true)
        .open(&s.source_part)
        .with_context(|| format!("opening {}", s.source_part.display()))?;
    let mut buf = vec![0u8; (run * BLOCK) as usize];
    let mut x = splitmix64(SEED ^ epoch);
    for i in 0..runs {
        for chunk in buf.chunks_mut(8) {
            x = splitmix64(x);
            let n = chunk.len();
            chunk.copy_from_slice(&x.to_le_bytes()[..n]);
        }
        let start = first + i * span + splitmix64(x ^ i) % (span - run + 1);
        file.write_all_at(&buf, start * BLOCK)
            .with_context(|| format!("writing {}", s.source_part.display()))?;
    }
    file.sync_all()
        .with_context(|| format!("syncing {}", s.source_part.display()))?;
    Ok(runs * run * BLOCK)
}

/// The sizes of every physical file of the packet `first`.
fn packet_bytes(first: &Path) -> Result<u64> {
    let mut total = fs::metadata(first)
        .with_context(|| format!("reading the size of {}", first.display()))?
        .len();
    for k in 2.. {
        let name = PathBuf::from(format!("{}_{k}", first.display()));
        match fs::metadata(&name) {
            Ok(m) => total += m.len(),
            Err(_) => break,
        }
    }
    Ok(total)
}

/// The replicated range of the destination part `dest` equals the
/// source's.
fn same_range(s: &Sites, dest: &Path) -> Result<()> {
    let a = File::open(&s.source_part).context("opening the source")?;
    let b = File::open(dest).context("opening the destination")?;
    let mut x = vec![0u8; (4 * MIB) as usize];
    let mut y = vec![0u8; (4 * MIB) as usize];
    let mut pos = BLOCK;
    while pos < s.pool_size {
        let n = ((s.pool_size - pos).min(4 * MIB)) as usize;
        a.read_exact_at(&mut x[..n], pos)
            .context("reading the source")?;
        b.read_exact_at(&mut y[..n], pos)
            .context("reading the destination")?;
        ensure!(
            x[..n] == y[..n],
            "the destination differs from the source near {pos:#x}"
        );
        pos += n as u64;
    }
    Ok(())
}

/// Runs `program words files` under the measuring wrapper (as `bench
/// verify` does); it must exit 0.
fn measured(program: &Path, words: &[&str], files: &[&Path], scratch: &Path) -> Result<Usage> {
    let (run, _) = crate::bench_verify::measured(program, words, files, scratch, Some(0))?;
    Ok(Usage {
        wall: run.wall,
        cpu: run.cpu,
        max_rss: run.max_rss,
    })
}

/// Medians of a scenario's repetitions.
struct Summary {
    changed: u64,
    packet: u64,
    zstd: u64,
    rsync: u64,
    cat: Duration,
    export: Duration,
    export_cpu: Duration,
    import: Duration,
    import_cpu: Duration,
    rss: u64,
}

fn summary(reps: &[Rep]) -> Option<Summary> {
    let m = |f: fn(&Rep) -> u64| median(reps.iter().map(f).collect());
    let d = |f: fn(&Rep) -> Duration| median(reps.iter().map(f).collect());
    Some(Summary {
        changed: m(|r| r.changed_bytes)?,
        packet: m(|r| r.packet_bytes)?,
        zstd: m(|r| r.zstd_bytes)?,
        rsync: m(|r| r.rsync_bytes)?,
        cat: d(|r| r.cat.wall)?,
        export: d(|r| r.export.wall)?,
        export_cpu: d(|r| r.export.cpu)?,
        import: d(|r| r.import.wall)?,
        import_cpu: d(|r| r.import.cpu)?,
        rss: reps
            .iter()
            .map(|r| r.export.max_rss.max(r.import.max_rss))
            .max()?,
    })
}

fn results_table(results: &[((Scenario, Cache), Vec<Rep>)]) -> String {
    let mut out = String::from(
        "| change | changed | packet | packet (zstd) | rsync batch | cat (read pass) | export \
         (CPU) | import (CPU) | peak RSS |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for ((scenario, cache), reps) in results {
        let Some(s) = summary(reps) else { continue };
        out.push_str(&format!(
            "| {}, {} | {} | {} | {} | {} | {:.3} s | {:.3} s ({:.3} s) | {:.3} s ({:.3} s) | {} |\n",
            scenario.label(),
            cache.name(),
            fmt_size(s.changed),
            fmt_size(s.packet),
            fmt_size(s.zstd),
            fmt_size(s.rsync),
            s.cat.as_secs_f64(),
            s.export.as_secs_f64(),
            s.export_cpu.as_secs_f64(),
            s.import.as_secs_f64(),
            s.import_cpu.as_secs_f64(),
            fmt_size(s.rss)
        ));
    }
    out
}

struct Verdict {
    target: String,
    measured: String,
    pass: bool,
}

fn judge(results: &[((Scenario, Cache), Vec<Rep>)]) -> Vec<Verdict> {
    let mut v = Vec::new();
    for ((scenario, cache), reps) in results {
        let Some(s) = summary(reps) else { continue };
        let l = format!("{}, {}", scenario.label(), cache.name());
        let limit = (s.changed as f64 * PACKET_FACTOR) as u64 + PACKET_SLACK;
        v.push(Verdict {
            target: format!("{l}: packet ≤ 1.02 × changed + 64 KiB"),
            measured: format!(
                "{} ({:.4} × {})",
                fmt_size(s.packet),
                s.packet as f64 / s.changed.max(1) as f64,
                fmt_size(s.changed)
            ),
            pass: s.packet <= limit,
        });
        v.push(Verdict {
            target: format!("{l}: packet < rsync --only-write-batch"),
            measured: format!(
                "{} vs {} ({:.3} ×)",
                fmt_size(s.packet),
                fmt_size(s.rsync),
                s.packet as f64 / s.rsync.max(1) as f64
            ),
            pass: s.packet < s.rsync,
        });
        let ratio = secs(s.export) / secs(s.cat);
        v.push(Verdict {
            target: format!("{l}: export ≤ 1.5 × one read pass (cat)"),
            measured: format!(
                "{:.3} s vs {:.3} s ({ratio:.2} ×)",
                s.export.as_secs_f64(),
                s.cat.as_secs_f64()
            ),
            pass: ratio <= EXPORT_FACTOR,
        });
        let ratio = secs(s.import) / secs(s.cat);
        v.push(Verdict {
            target: format!("{l}: import (with the destination check) ≤ 2 × one read pass"),
            measured: format!(
                "{:.3} s vs {:.3} s ({ratio:.2} ×)",
                s.import.as_secs_f64(),
                s.cat.as_secs_f64()
            ),
            pass: ratio <= IMPORT_FACTOR,
        });
        v.push(Verdict {
            target: format!("{l}: peak RSS ≤ 64 MiB"),
            measured: fmt_size(s.rss),
            pass: s.rss <= MAX_RSS,
        });
    }
    v
}

/// Per scenario, new/baseline: the ratio of the medians of wall time,
/// with the lowest and highest per-repetition ratio, and of CPU time.
fn baseline_table(results: &[((Scenario, Cache), Vec<Rep>)]) -> String {
    let mut out = String::from(
        "| change | export new / baseline (per rep) | export CPU | import new / baseline (per \
         rep) | import CPU |\n|---|---|---|---|---|\n",
    );
    for ((scenario, cache), reps) in results {
        let pairs: Vec<(&Rep, &(Usage, Usage))> = reps
            .iter()
            .filter_map(|r| r.baseline.as_ref().map(|b| (r, b)))
            .collect();
        let ratio = |new: Vec<Duration>, old: Vec<Duration>| -> Option<String> {
            let per: Vec<f64> = new
                .iter()
                .zip(&old)
                .map(|(n, o)| secs(*n) / secs(*o))
                .collect();
            let lo = per.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = per.iter().copied().fold(0.0, f64::max);
            let (n, o) = (median(new)?, median(old)?);
            Some(format!(
                "{:.3} s / {:.3} s = {:.2} ({lo:.2}–{hi:.2})",
                secs(n),
                secs(o),
                secs(n) / secs(o)
            ))
        };
        let cpu = |new: Vec<Duration>, old: Vec<Duration>| -> Option<String> {
            Some(format!("{:.2}", secs(median(new)?) / secs(median(old)?)))
        };
        let (Some(e), Some(ec), Some(i), Some(ic)) = (
            ratio(
                pairs.iter().map(|(r, _)| r.export.wall).collect(),
                pairs.iter().map(|(_, b)| b.0.wall).collect(),
            ),
            cpu(
                pairs.iter().map(|(r, _)| r.export.cpu).collect(),
                pairs.iter().map(|(_, b)| b.0.cpu).collect(),
            ),
            ratio(
                pairs.iter().map(|(r, _)| r.import.wall).collect(),
                pairs.iter().map(|(_, b)| b.1.wall).collect(),
            ),
            cpu(
                pairs.iter().map(|(r, _)| r.import.cpu).collect(),
                pairs.iter().map(|(_, b)| b.1.cpu).collect(),
            ),
        ) else {
            continue;
        };
        out.push_str(&format!(
            "| {}, {} | {e} | {ec} | {i} | {ic} |\n",
            scenario.label(),
            cache.name()
        ));
    }
    out
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

    fn usage(ms: u64) -> Usage {
        Usage {
            wall: Duration::from_millis(ms),
            cpu: Duration::from_millis(2 * ms),
            max_rss: MIB,
        }
    }

    #[test]
    fn the_baseline_table_gives_ratios_of_medians_and_their_spread() {
        let rep = |new: u64, old: u64| Rep {
            changed_bytes: MIB,
            packet_bytes: MIB,
            zstd_bytes: MIB,
            rsync_bytes: 2 * MIB,
            cat: usage(100),
            export: usage(new),
            import: usage(new),
            baseline: Some((usage(old), usage(2 * old))),
        };
        let results = vec![(
            (Scenario::Clustered, Cache::Warm),
            vec![rep(100, 200), rep(300, 400), rep(200, 400)],
        )];
        let table = baseline_table(&results);
        let row = table.lines().nth(2).expect("a row");
        assert!(row.starts_with("| 10 % clustered, warm |"), "{row}");
        // Export: medians 0.2 s and 0.4 s; per repetition 0.5, 0.75, 0.5.
        assert!(
            row.contains("0.200 s / 0.400 s = 0.50 (0.50–0.75)"),
            "{row}"
        );
        // Import against twice the baseline's time: 0.25.
        assert!(
            row.contains("0.200 s / 0.800 s = 0.25 (0.25–0.37)"),
            "{row}"
        );
        // Without a baseline there is no row.
        let none = vec![(
            (Scenario::Clustered, Cache::Warm),
            vec![Rep {
                baseline: None,
                ..rep(1, 1)
            }],
        )];
        assert_eq!(baseline_table(&none).lines().count(), 2);
    }

    #[test]
    fn scenarios_change_the_share_they_promise() {
        assert_eq!(Scenario::Scattered.blocks(262_144), 2621);
        assert_eq!(Scenario::Clustered.blocks(262_144), 26_214);
        assert_eq!(Scenario::Clustered.run_len(), 256);
    }
}
