//! `cargo xtask bench transform`: poolsync's `transform` against PMDK's
//! `pmempool transform` when a replica is added to a used pool set.
//!
//! The template is made once: `pmempool create obj` on a one-replica set of
//! two parts, then `objclient fill` (see `bench_verify`) writes a pattern
//! into a root object of most of the pool through libpmemobj. Every timed
//! run starts from a fresh copy of the template's part files, made durable
//! and then read once (warm page cache, as in `bench_sync`), with two set
//! files beside it: the source (the one replica) and the target (the same
//! replica, then a new one of two parts whose files do not exist yet). The
//! tools take turns going first from one repetition to the next; with
//! `--baseline BIN`, that binary is a third tool (see `bench_baseline`).
//! Each tool runs under `bench __measure` (see `bench_sync`) for its wall
//! time, CPU time, peak RSS and I/O. Every run is checked afterwards,
//! outside the timing: the new replica holds the same bytes as the source
//! past each part's header page, and `pmempool check` finds the target
//! consistent.

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::bench_baseline::{
    byte_ratio, markdown_table, ratio, take_turns, wall_ratio, Binaries, BASELINE_LABEL, RATIO_NOTE,
};
use crate::bench_sync::{
    differing_blocks, fmt_size, free_space, load_average, median, parse_size_options, part_name,
    pool_size, quiet, secs, sync_dir, write_durably, Machine, Scratch, SizeOptions, BLOCK, MEASURE,
    MIB,
};
use crate::bench_verify::{build_objclient, fill, warm};
use crate::util;

/// Parts per replica, in the source and in the added replica.
const PARTS: usize = 2;
/// The root object takes this share of the pool, in per mille.
const ROOT_PER_MILLE: u64 = 875;
/// Seed of the fill pattern.
const SEED: u64 = 0x7472_616e_7366_6f72;

/// What `cargo xtask bench transform` was asked to do.
fn parse_options(args: &[String]) -> Result<SizeOptions> {
    parse_size_options("transform", args)
}

/// The tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Poolsync,
    /// The `--baseline` binary, run as [`Tool::Poolsync`] is.
    Baseline,
    Pmempool,
}

impl Tool {
    fn label(self) -> &'static str {
        match self {
            Tool::Poolsync => "poolsync",
            Tool::Baseline => BASELINE_LABEL,
            Tool::Pmempool => "pmempool",
        }
    }

    /// Program and arguments that transform `src` into `dst`.
    fn command(self, bins: &Binaries, src: &Path, dst: &Path) -> Vec<OsString> {
        let program: OsString = match self {
            Tool::Poolsync => bins.poolsync.clone().into(),
            Tool::Baseline => bins.binary(true).into(),
            Tool::Pmempool => "pmempool".into(),
        };
        vec![program, "transform".into(), src.into(), dst.into()]
    }

    /// The tools of every repetition, in the order of the tables (they take
    /// turns going first: [`take_turns`]).
    fn all(baseline: bool) -> Vec<Tool> {
        if baseline {
            vec![Tool::Poolsync, Tool::Baseline, Tool::Pmempool]
        } else {
            vec![Tool::Poolsync, Tool::Pmempool]
        }
    }
}

/// The filled one-replica set every run starts from.
#[derive(Debug)]
struct Template {
    dir: PathBuf,
    /// `heap_offset + heap_size`.
    pool_size: u64,
    root_data: u64,
    root_len: u64,
}

/// What one run of one tool used.
#[derive(Debug, Clone)]
struct Sample {
    wall: Duration,
    cpu: Duration,
    max_rss: u64,
    /// `wchar` less what the tool printed: bytes handed to write syscalls.
    written: u64,
    /// `write_bytes`: page-cache bytes dirtied, by write or through a mapping.
    dirtied: u64,
}

/// Medians over the repetitions (peak RSS: the largest).
#[derive(Debug, Clone, Copy)]
struct Summary {
    wall: Duration,
    cpu: Duration,
    max_rss: u64,
    written: u64,
    dirtied: u64,
}

impl Summary {
    fn of(samples: &[Sample]) -> Option<Summary> {
        Some(Summary {
            wall: median(samples.iter().map(|s| s.wall).collect())?,
            cpu: median(samples.iter().map(|s| s.cpu).collect())?,
            max_rss: samples.iter().map(|s| s.max_rss).max()?,
            written: median(samples.iter().map(|s| s.written).collect())?,
            dirtied: median(samples.iter().map(|s| s.dirtied).collect())?,
        })
    }
}

/// `cargo xtask bench transform [--size SIZE] [--reps N] [--dir DIR]
/// [--baseline BIN]`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let options = parse_options(args)?;
    for tool in ["pmempool", "cc"] {
        ensure!(
            util::on_path(tool),
            "`bench transform` needs `{tool}` on PATH (pmempool: Debian's pmdk-tools; cc and \
             libpmemobj-dev to build the client)"
        );
    }
    for var in ["PMEM_IS_PMEM_FORCE", "POOLSYNC_PERSIST"] {
        if let Some(value) = std::env::var_os(var) {
            eprintln!(
                "xtask: note: {var}={} is set and changes how the tools persist data",
                value.to_string_lossy()
            );
        }
    }
    let bins = Binaries::build(root, options.baseline.as_deref())?;
    let base = options.dir.clone().unwrap_or_else(|| bins.target.clone());
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    // The template, the working copy of its replica and the new replica.
    let need = 3 * options.size + 256 * MIB;
    let free = free_space(&base)?;
    ensure!(
        free >= need,
        "{} has {} free; the bench needs {} (template, working copy and new replica). \
         Use a smaller --size or another --dir",
        base.display(),
        fmt_size(free),
        fmt_size(need)
    );
    let scratch = Scratch::create(base.join("poolsync-bench-transform"))?;
    let objclient = build_objclient(root, &scratch.0)?;

    let machine = Machine::probe(&base);
    util::step("making the template");
    let template = make_template(
        &scratch.0.join("template"),
        options.size,
        &bins.poolsync,
        &objclient,
    )?;
    let describe = |t: &Template| {
        format!(
            "one replica of {} in {PARTS} parts (pool size {}; a {} root object filled by \
             libpmemobj at offset {:#x}) gets a second replica of {PARTS} new parts",
            fmt_size(options.size),
            fmt_size(t.pool_size),
            fmt_size(t.root_len),
            t.root_data
        )
    };
    println!("{}", describe(&template));
    println!("{}", bins.describe());

    let load_before = load_average();
    let work = scratch.0.join("work");
    let tools = Tool::all(bins.baseline.is_some());
    let mut samples: Vec<(Tool, Vec<Sample>)> = tools.iter().map(|&t| (t, Vec::new())).collect();
    for rep in 0..options.reps {
        for tool in take_turns(&tools, rep) {
            let (src, dst) = stage(&template, &work, options.size)?;
            let sample = run_tool(tool, &bins, &src, &dst, &scratch.0)?;
            verify(&work, &dst)
                .with_context(|| format!("checking the result of {}", tool.label()))?;
            eprintln!(
                "  rep {} {:<19} {:>8.3} s  CPU {:>7.3} s  peak RSS {:>10}  written {:>10}  \
                 dirtied {:>10}",
                rep + 1,
                tool.label(),
                sample.wall.as_secs_f64(),
                sample.cpu.as_secs_f64(),
                fmt_size(sample.max_rss),
                fmt_size(sample.written),
                fmt_size(sample.dirtied)
            );
            if let Some((_, list)) = samples.iter_mut().find(|(t, _)| *t == tool) {
                list.push(sample);
            }
        }
    }
    let load_after = load_average();
    drop(scratch);

    println!("\n## Summary (markdown)\n");
    println!("{}\n", machine.describe(options.reps));
    println!(
        "{}; load average (1, 5, 15 min) {load_before} before, {load_after} after.\n",
        describe(&template)
    );
    println!("{}\n", bins.describe());
    println!("{}", results_table(&samples));
    if bins.baseline.is_some() {
        println!("{}", baseline_table(&samples));
        println!("{RATIO_NOTE}\n");
    }
    Ok(())
}

/// A set file of `replicas` replicas of [`PARTS`] parts of `size / PARTS`
/// each in `dir` (absolute paths, as PMDK wants them).
fn set_text(dir: &Path, size: u64, replicas: usize) -> String {
    let mut text = String::from("PMEMPOOLSET\n");
    for replica in 0..replicas {
        if replica > 0 {
            text.push_str("REPLICA\n");
        }
        for part in 0..PARTS {
            text.push_str(&format!(
                "{}M {}\n",
                size / PARTS as u64 / MIB,
                dir.join(part_name(replica, part)).display()
            ));
        }
    }
    text
}

/// Creates the one-replica set and fills it through libpmemobj.
fn make_template(dir: &Path, size: u64, poolsync: &Path, objclient: &Path) -> Result<Template> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let set = dir.join("pool.set");
    write_durably(&set, set_text(dir, size, 1).as_bytes())?;
    quiet(Command::new("pmempool").args(["create", "obj"]).arg(&set))?;
    let pool_size = pool_size(poolsync, &set)?;
    let root_len = pool_size / 1000 * ROOT_PER_MILLE / BLOCK * BLOCK;
    let root_data = fill(objclient, &set, root_len, SEED)?;
    for part in 0..PARTS {
        let path = dir.join(part_name(0, part));
        File::open(&path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", path.display()))?;
    }
    sync_dir(dir)?;
    Ok(Template {
        dir: dir.to_path_buf(),
        pool_size,
        root_data,
        root_len,
    })
}

/// Copies the template's replica into a fresh `work` directory, makes the
/// copy durable and reads it once. Returns the source and target set files.
fn stage(template: &Template, work: &Path, size: u64) -> Result<(PathBuf, PathBuf)> {
    if work.exists() {
        fs::remove_dir_all(work).with_context(|| format!("removing {}", work.display()))?;
    }
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let (src, dst) = (work.join("src.set"), work.join("dst.set"));
    write_durably(&src, set_text(work, size, 1).as_bytes())?;
    write_durably(&dst, set_text(work, size, 2).as_bytes())?;
    let mut copies = Vec::new();
    for part in 0..PARTS {
        let name = part_name(0, part);
        let (from, to) = (template.dir.join(&name), work.join(&name));
        fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        File::open(&to)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", to.display()))?;
        copies.push(to);
    }
    sync_dir(work)?;
    // Warm the page cache: both tools find the source cached.
    for path in &copies {
        warm(path)?;
    }
    Ok((src, dst))
}

/// After a transform: every part of the new replica holds the same bytes as
/// the source's past its header page, and `pmempool check` finds the target
/// set consistent.
fn verify(work: &Path, dst: &Path) -> Result<()> {
    for part in 0..PARTS {
        let (a, b) = (work.join(part_name(0, part)), work.join(part_name(1, part)));
        let len = |p: &Path| {
            fs::metadata(p)
                .map(|m| m.len())
                .with_context(|| format!("after the transform, {} is missing", p.display()))
        };
        let (la, lb) = (len(&a)?, len(&b)?);
        ensure!(
            la == lb,
            "after the transform, {} has {la} bytes and {} {lb}",
            a.display(),
            b.display()
        );
        let n = differing_blocks(&a, &b, BLOCK, la)?;
        ensure!(
            n == 0,
            "after the transform, {} and {} differ in {n} block(s)",
            a.display(),
            b.display()
        );
    }
    let out = Command::new("pmempool")
        .args(["check", "-v"])
        .arg(dst)
        .output()
        .context("running `pmempool check`")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && stdout.lines().any(|l| l.ends_with(": consistent")),
        "after the transform, `pmempool check -v {}` says: {}",
        dst.display(),
        stdout.trim()
    );
    Ok(())
}

/// Runs one tool under the measuring wrapper; it must succeed.
fn run_tool(tool: Tool, bins: &Binaries, src: &Path, dst: &Path, scratch: &Path) -> Result<Sample> {
    let words = tool.command(bins, src, dst);
    let shown = words
        .iter()
        .map(|w| w.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let out_path = scratch.join("measure.json");
    let out = Command::new(std::env::current_exe().context("locating xtask itself")?)
        .args(["bench", MEASURE])
        .arg(&out_path)
        .arg("--")
        .args(&words)
        .stdin(Stdio::null())
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
        "`{shown}` failed (exit code {}, signal {}): {}{}",
        m["exit_code"],
        m["signal"],
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let printed = (out.stdout.len() + out.stderr.len()) as u64;
    Ok(Sample {
        wall: Duration::from_nanos(num("wall_ns")),
        cpu: Duration::from_micros(num("user_us") + num("sys_us")),
        max_rss: num("max_rss"),
        written: num("wchar").saturating_sub(printed),
        dirtied: num("write_bytes"),
    })
}

fn results_table(samples: &[(Tool, Vec<Sample>)]) -> String {
    let mut out = String::from(
        "| tool | wall (median) | CPU (median, user + sys) | peak RSS | written (syscalls) | \
         dirtied (write_bytes) | wall of every run (s) |\n|---|---|---|---|---|---|---|\n",
    );
    let summary = |tool: Tool| {
        samples
            .iter()
            .find(|(t, _)| *t == tool)
            .and_then(|(_, v)| Summary::of(v))
    };
    for (tool, v) in samples {
        let Some(s) = Summary::of(v) else { continue };
        let every: Vec<String> = v
            .iter()
            .map(|x| format!("{:.3}", x.wall.as_secs_f64()))
            .collect();
        out.push_str(&format!(
            "| {} | {:.3} s | {:.3} s | {} | {} | {} | {} |\n",
            tool.label(),
            s.wall.as_secs_f64(),
            s.cpu.as_secs_f64(),
            fmt_size(s.max_rss),
            fmt_size(s.written),
            fmt_size(s.dirtied),
            every.join(" ")
        ));
    }
    if let (Some(ps), Some(pm)) = (summary(Tool::Poolsync), summary(Tool::Pmempool)) {
        out.push_str(&format!(
            "| poolsync/pmempool | {:.2}× | {:.2}× | {:.3}× | | {:.2}× | |\n",
            secs(ps.wall) / secs(pm.wall),
            secs(ps.cpu) / secs(pm.cpu),
            ps.max_rss as f64 / pm.max_rss.max(1) as f64,
            ps.dirtied as f64 / pm.dirtied.max(1) as f64,
        ));
    }
    out
}

/// The ratios new/baseline.
fn baseline_table(samples: &[(Tool, Vec<Sample>)]) -> String {
    let of = |tool: Tool| {
        samples
            .iter()
            .find(|(t, _)| *t == tool)
            .map(|(_, v)| v.as_slice())
    };
    let mut rows = Vec::new();
    if let (Some(new), Some(base)) = (of(Tool::Poolsync), of(Tool::Baseline)) {
        if let (Some(n), Some(b)) = (Summary::of(new), Summary::of(base)) {
            let walls = |v: &[Sample]| v.iter().map(|s| s.wall).collect::<Vec<_>>();
            rows.push(vec![
                "transform (add a replica)".to_string(),
                wall_ratio(&walls(new), &walls(base)),
                ratio(secs(n.cpu), secs(b.cpu)),
                byte_ratio(n.max_rss, b.max_rss),
                byte_ratio(n.written, b.written),
                byte_ratio(n.dirtied, b.dirtied),
            ]);
        }
    }
    markdown_table(
        &[
            "operation",
            "wall, new/baseline (range)",
            "CPU",
            "peak RSS",
            "written (syscalls)",
            "dirtied (write_bytes)",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_and_reject_bad_sizes() {
        let o = parse_options(&[]).unwrap();
        assert_eq!((o.size, o.reps), (crate::bench_sync::GIB, 3));
        assert!(o.dir.is_none());
        assert!(o.baseline.is_none());
        let o = parse_options(&[
            "--size=256M".into(),
            "--reps".into(),
            "5".into(),
            "--dir".into(),
            "d".into(),
            "--baseline=old/poolsync".into(),
        ])
        .unwrap();
        assert_eq!((o.size, o.reps), (256 * MIB, 5));
        assert_eq!(o.dir, Some(PathBuf::from("d")));
        assert_eq!(o.baseline, Some(PathBuf::from("old/poolsync")));
        for bad in [
            &["--size", "10M"][..],
            &["--size", "100M"],
            &["--reps", "0"],
            &["--frobnicate"],
            &["--dir"],
            &["--baseline"],
        ] {
            let bad: Vec<String> = bad.iter().map(|w| w.to_string()).collect();
            assert!(parse_options(&bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_target_set_is_the_source_and_one_new_replica() {
        let dir = Path::new("/p");
        assert_eq!(
            set_text(dir, 64 * MIB, 1),
            "PMEMPOOLSET\n32M /p/r0p0\n32M /p/r0p1\n"
        );
        let dst = set_text(dir, 64 * MIB, 2);
        assert!(dst.starts_with(&set_text(dir, 64 * MIB, 1)));
        assert_eq!(
            dst.strip_prefix(&set_text(dir, 64 * MIB, 1)),
            Some("REPLICA\n32M /p/r1p0\n32M /p/r1p1\n")
        );
    }

    #[test]
    fn tools_take_turns_going_first() {
        let tools = Tool::all(false);
        assert_eq!(take_turns(&tools, 0), [Tool::Poolsync, Tool::Pmempool]);
        assert_eq!(take_turns(&tools, 1), [Tool::Pmempool, Tool::Poolsync]);
        assert_eq!(take_turns(&tools, 2), take_turns(&tools, 0));
        let tools = Tool::all(true);
        assert_eq!(tools, [Tool::Poolsync, Tool::Baseline, Tool::Pmempool]);
        assert_eq!(
            take_turns(&tools, 1),
            [Tool::Baseline, Tool::Pmempool, Tool::Poolsync]
        );
        let bins = Binaries {
            poolsync: PathBuf::from("new"),
            baseline: Some(crate::bench_baseline::Baseline {
                path: PathBuf::from("old"),
                version: "poolsync 0.1.0".to_string(),
            }),
            target: PathBuf::from("t"),
            commit: "abc".to_string(),
        };
        let words = |tool: Tool| tool.command(&bins, Path::new("a"), Path::new("b"));
        assert_eq!(
            words(Tool::Pmempool),
            ["pmempool", "transform", "a", "b"].map(OsString::from)
        );
        assert_eq!(
            words(Tool::Baseline),
            ["old", "transform", "a", "b"].map(OsString::from)
        );
        assert_eq!(
            words(Tool::Poolsync),
            ["new", "transform", "a", "b"].map(OsString::from)
        );
    }
}
