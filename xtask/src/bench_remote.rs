//! `cargo xtask bench remote`: a remote replica kept current over ssh on
//! loopback, side by side with `rsync --inplace --no-whole-file -e ssh` of
//! the same part file, in one run.
//!
//! A private sshd runs on 127.0.0.1 (keys and config in the scratch dir).
//! The pool is one part of `--size` (1 GiB by default) whose root object,
//! half the pool, libpmemobj fills with data (the interop tests' client,
//! `objclient fill`). Then:
//!
//! 1. **Seeding**: `poolsync sync` of the administrator's set creates the
//!    remote pool set's part on the "remote host" and fills it; beside it,
//!    `cat part | ssh host 'cat > copy'` copies the same part file (the
//!    copy rsync works on next).
//! 2. **Update**, `--reps` times: `--changed` per cent (1 by default) of
//!    the pool's blocks, scattered over the root object, get new bytes;
//!    then `poolsync sync` brings the remote replica up to date, and
//!    `rsync --inplace --no-whole-file` the copy.
//!
//! Bytes on the wire are counted by a wrapper around ssh (`bench __count`)
//! given to both as their remote shell; peak RSS is measured on both hosts
//! (`bench __measure` around the local poolsync and, through
//! `--remote-path`, around `poolsync serve`). The targets are those of the
//! remote replicas issue; `docs/performance.md` records the figures.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::bench_sync::{
    fmt_size, free_space, load_average, median, parse_reps, parse_size, secs, splitmix64, Machine,
    Scratch,
};
use crate::bench_verify::{build_objclient, fill};
use crate::sshd::Sshd;
use crate::util;

const MIB: u64 = 1 << 20;
const BLOCK: u64 = 4096;
const SEED: u64 = 0x7265_6d6f_7465;
/// The wrapper that counts the bytes a remote shell carries.
pub const COUNT: &str = "__count";

/// Targets: wire bytes at most this times the changed bytes ...
const WIRE_FACTOR: f64 = 1.05;
/// ... plus this share of the pool.
const WIRE_POOL_SHARE: f64 = 0.001;
/// Seeding at most this times `cat | ssh`.
const SEED_FACTOR: f64 = 1.2;
/// Peak RSS on either host.
const MAX_RSS: u64 = 64 * MIB;

/// Options of `bench remote`.
#[derive(Debug)]
struct Options {
    size: u64,
    reps: usize,
    changed_per_mille: u64,
    dir: Option<PathBuf>,
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        size: 1 << 30,
        reps: 3,
        changed_per_mille: 10,
        dir: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("`bench remote {flag}` needs a value"))
        };
        match flag.as_str() {
            "--size" => o.size = parse_size(value()?)?,
            "--reps" => o.reps = parse_reps(value()?)?,
            "--changed" => {
                let text = value()?;
                let pct: f64 = text
                    .parse()
                    .ok()
                    .filter(|p: &f64| (0.1..=50.0).contains(p))
                    .with_context(|| {
                        format!("--changed {text}: expected a per cent from 0.1 to 50")
                    })?;
                o.changed_per_mille = (pct * 10.0).round() as u64;
            }
            "--dir" => o.dir = Some(PathBuf::from(value()?)),
            other => bail!(
                "`bench remote` takes --size SIZE, --reps N, --changed PERCENT and --dir DIR, not `{other}`"
            ),
        }
    }
    ensure!(
        o.size >= 64 * MIB,
        "--size {}: at least 64M",
        fmt_size(o.size)
    );
    Ok(o)
}

/// `bench __count OUT -- PROGRAM ARGS...`: runs the program with its
/// standard input and output passed through, counting the bytes each way,
/// and appends `to_remote from_remote` to OUT when it ends.
pub fn count(args: &[String]) -> Result<()> {
    let [out, dashes, program, rest @ ..] = args else {
        bail!("usage: bench {COUNT} OUT -- PROGRAM [ARGS...]");
    };
    ensure!(
        dashes == "--",
        "usage: bench {COUNT} OUT -- PROGRAM [ARGS...]"
    );
    let mut child = Command::new(program)
        .args(rest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting `{program}`"))?;
    let mut to_child = child.stdin.take().context("stdin pipe")?;
    let mut from_child = child.stdout.take().context("stdout pipe")?;
    let up = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let up_count = std::sync::Arc::clone(&up);
    // Not joined: when the child ends first, this thread may still wait
    // on our standard input; the bytes it passed are counted already.
    std::thread::spawn(move || {
        pump(&mut std::io::stdin().lock(), &mut to_child, &up_count);
    });
    let down = std::sync::atomic::AtomicU64::new(0);
    pump(&mut from_child, &mut std::io::stdout().lock(), &down);
    let status = child.wait()?;
    let up = up.load(std::sync::atomic::Ordering::SeqCst);
    let down = down.load(std::sync::atomic::Ordering::SeqCst);
    let mut f = OpenOptions::new().create(true).append(true).open(out)?;
    writeln!(f, "{up} {down}")?;
    std::process::exit(status.code().unwrap_or(1));
}

/// Copies until the end or an error, counting the bytes copied.
fn pump(from: &mut dyn Read, to: &mut dyn Write, n: &std::sync::atomic::AtomicU64) {
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                if to.write_all(&buf[..k]).and_then(|()| to.flush()).is_err() {
                    break;
                }
                n.fetch_add(k as u64, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
}

/// Sums the counts of every connection recorded in `path`.
fn counted(path: &Path) -> Result<(u64, u64)> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut up = 0;
    let mut down = 0;
    for line in text.lines() {
        let mut w = line.split_whitespace().map(str::parse::<u64>);
        if let (Some(Ok(a)), Some(Ok(b))) = (w.next(), w.next()) {
            up += a;
            down += b;
        }
    }
    Ok((up, down))
}

/// What one measured run used.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    wall: Duration,
    to_remote: u64,
    from_remote: u64,
    local_rss: u64,
    remote_rss: u64,
}

impl Sample {
    fn wire(&self) -> u64 {
        self.to_remote + self.from_remote
    }
}

/// Everything the runs need.
struct Setup {
    xtask: PathBuf,
    poolsync: PathBuf,
    sshd: Sshd,
    work: PathBuf,
    admin: PathBuf,
    part: PathBuf,
    remote_root: PathBuf,
    serve_config: PathBuf,
}

impl Setup {
    /// `poolsync sync` of the admin set, measured on both hosts.
    fn poolsync_sync(&self, name: &str) -> Result<Sample> {
        let tag = self.work.join(name);
        let (count, local, remote) = (
            tag.with_extension("count"),
            tag.with_extension("local.json"),
            tag.with_extension("remote.json"),
        );
        for f in [&count, &local, &remote] {
            let _ = fs::remove_file(f);
        }
        let rsh = format!(
            "{} bench {COUNT} {} -- {}",
            self.xtask.display(),
            count.display(),
            self.sshd.ssh_line()
        );
        let remote_path = format!(
            "{} bench {} {} -- {} --config {}",
            self.xtask.display(),
            crate::bench_sync::MEASURE,
            remote.display(),
            self.poolsync.display(),
            self.serve_config.display()
        );
        let started = Instant::now();
        let status = Command::new(&self.xtask)
            .args(["bench", crate::bench_sync::MEASURE])
            .arg(&local)
            .arg("--")
            .arg(&self.poolsync)
            .args(["sync", "--no-progress", "-v", "--rsh", &rsh])
            .args(["--remote-path", &remote_path])
            .arg(&self.admin)
            .status()?;
        let wall = started.elapsed();
        ensure!(status.success(), "`poolsync sync` failed ({status})");
        let (to_remote, from_remote) = counted(&count)?;
        Ok(Sample {
            wall,
            to_remote,
            from_remote,
            local_rss: max_rss(&local)?,
            remote_rss: max_rss(&remote)?,
        })
    }

    /// `cat part | ssh host 'cat > copy'`.
    fn cat_ssh(&self) -> Result<Sample> {
        let copy = self.remote_root.join("rsync/pool.part");
        let started = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cat {} | {} {} 'cat > {}'",
                self.part.display(),
                self.sshd.ssh_line(),
                self.sshd.node(),
                copy.display()
            ))
            .status()?;
        ensure!(status.success(), "cat | ssh failed ({status})");
        Ok(Sample {
            wall: started.elapsed(),
            ..Sample::default()
        })
    }

    /// `rsync --inplace --no-whole-file -e ssh part host:copy`.
    fn rsync(&self, name: &str) -> Result<Sample> {
        let count = self.work.join(name).with_extension("count");
        let _ = fs::remove_file(&count);
        // rsync skips a file whose size and modification time (in whole
        // seconds) match; the changes come within the second of the last
        // copy, so the copy gets an old time, as a day-old copy would have.
        let copy = self.remote_root.join("rsync/pool.part");
        OpenOptions::new()
            .write(true)
            .open(&copy)?
            .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(946_684_800))?;
        let rsh = format!(
            "{} bench {COUNT} {} -- {}",
            self.xtask.display(),
            count.display(),
            self.sshd.ssh_line()
        );
        let started = Instant::now();
        let status = Command::new("rsync")
            .args(["--inplace", "--no-whole-file", "-e", &rsh])
            .arg(&self.part)
            .arg(format!(
                "{}:{}",
                self.sshd.node(),
                self.remote_root.join("rsync/pool.part").display()
            ))
            .status()?;
        let wall = started.elapsed();
        ensure!(status.success(), "rsync failed ({status})");
        let (to_remote, from_remote) = counted(&count)?;
        Ok(Sample {
            wall,
            to_remote,
            from_remote,
            ..Sample::default()
        })
    }
}

/// `max_rss` of a `bench __measure` document.
fn max_rss(path: &Path) -> Result<u64> {
    let doc: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    Ok(doc["max_rss"].as_u64().unwrap_or(0))
}

/// Gives `count` scattered blocks of `[first, end)` of the part file new
/// bytes (what an application's writes do); returns the blocks changed.
fn change_blocks(part: &Path, first: u64, end: u64, count: u64, seed: u64) -> Result<u64> {
    let f = OpenOptions::new().write(true).open(part)?;
    let blocks = (end - first) / BLOCK;
    let mut chosen = std::collections::BTreeSet::new();
    let mut x = seed;
    while (chosen.len() as u64) < count.min(blocks) {
        x = splitmix64(x);
        chosen.insert(x % blocks);
    }
    let mut buf = vec![0u8; BLOCK as usize];
    for b in &chosen {
        for chunk in buf.chunks_mut(8) {
            x = splitmix64(x);
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        f.write_all_at(&buf, first + b * BLOCK)?;
    }
    f.sync_all()?;
    Ok(chosen.len() as u64)
}

/// `cargo xtask bench remote [--size SIZE] [--reps N] [--changed PERCENT] [--dir DIR]`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let options = parse_options(args)?;
    for tool in ["ssh", "ssh-keygen", "rsync", "cc", "pmempool"] {
        ensure!(
            util::on_path(tool),
            "`bench remote` needs `{tool}` on PATH (openssh-client, rsync, a C compiler, pmdk-tools)"
        );
    }
    ensure!(
        Path::new("/usr/sbin/sshd").is_file(),
        "`bench remote` needs /usr/sbin/sshd (openssh-server)"
    );
    util::step("building poolsync and xtask (release)");
    util::run(
        util::cargo()
            .args([
                "build",
                "--release",
                "--package",
                "poolsync",
                "--package",
                "xtask",
            ])
            .current_dir(root),
    )?;
    let target = util::target_dir(root)?;
    let poolsync = target.join("release/poolsync");
    let xtask = target.join("release/xtask");
    let base = options.dir.clone().unwrap_or(target);
    let need = 4 * options.size + 512 * MIB;
    let free = free_space(&base)?;
    ensure!(
        free >= need,
        "{} has {} free; the bench needs {} (the pool, the remote replica, rsync's copy)",
        base.display(),
        fmt_size(free),
        fmt_size(need)
    );
    let scratch = Scratch::create(base.join("poolsync-bench-remote"))?;
    let work = scratch.0.clone();
    let objclient = build_objclient(root, &work)?;
    let sshd = Sshd::start(&work.join("sshd"))?;
    let local = work.join("local");
    let remote_root = work.join("remote-host/root");
    fs::create_dir_all(&local)?;
    fs::create_dir_all(remote_root.join("pools"))?;
    fs::create_dir_all(remote_root.join("rsync"))?;
    let mib = options.size / MIB;
    let part = local.join("pool.part");
    let app = local.join("app.set");
    fs::write(&app, format!("PMEMPOOLSET\n{mib}M {}\n", part.display()))?;
    let admin = local.join("admin.set");
    fs::write(
        &admin,
        format!(
            "{}REPLICA {} pools/standby.set\n",
            fs::read_to_string(&app)?,
            sshd.node()
        ),
    )?;
    fs::write(
        remote_root.join("pools/standby.set"),
        format!(
            "PMEMPOOLSET\n{mib}M {}\n",
            remote_root.join("pools/standby.part").display()
        ),
    )?;
    let serve_config = work.join("serve.toml");
    fs::write(
        &serve_config,
        format!("[serve]\nroot = \"{}\"\n", remote_root.display()),
    )?;
    util::step("making the pool (libpmemobj data in half of it)");
    util::run(
        Command::new(&poolsync)
            .args(["create", "obj", "--layout", "bench"])
            .arg(&app),
    )?;
    let pool_size = crate::bench_sync::pool_size(&poolsync, &app)?;
    let root_len = pool_size / 2;
    let root_at = fill(&objclient, &app, root_len, SEED)?;
    let setup = Setup {
        xtask,
        poolsync,
        sshd,
        work: work.clone(),
        admin,
        part: part.clone(),
        remote_root,
        serve_config,
    };

    let machine = Machine::probe(&base);
    let load_before = load_average();
    util::step("seeding: poolsync sync, then cat | ssh");
    let seed = setup.poolsync_sync("seed")?;
    let cat = setup.cat_ssh()?;
    let mut updates = Vec::new();
    let changed_blocks = pool_size / BLOCK * options.changed_per_mille / 1000;
    for rep in 0..options.reps {
        util::step(&format!(
            "update {}: {} blocks changed, then poolsync sync and rsync",
            rep + 1,
            changed_blocks
        ));
        let first = root_at.next_multiple_of(BLOCK);
        let n = change_blocks(
            &part,
            first,
            root_at + root_len,
            changed_blocks,
            SEED + rep as u64,
        )?;
        let ours = setup.poolsync_sync(&format!("update{rep}"))?;
        let theirs = setup.rsync(&format!("rsync{rep}"))?;
        println!(
            "update {}: {n} blocks ({}): poolsync {:.2} s, {} on the wire; rsync {:.2} s, {} on the wire",
            rep + 1,
            fmt_size(n * BLOCK),
            secs(ours.wall),
            fmt_size(ours.wire()),
            secs(theirs.wall),
            fmt_size(theirs.wire())
        );
        updates.push((n, ours, theirs));
    }
    // The remote replica holds the source's data.
    let check = Command::new(&setup.poolsync)
        .args([
            "check",
            "--json",
            "--rsh",
            &setup.sshd.ssh_line(),
            "--remote-path",
        ])
        .arg(format!(
            "{} --config {}",
            setup.poolsync.display(),
            setup.serve_config.display()
        ))
        .arg(&setup.admin)
        .output()?;
    let doc: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap_or_default();
    let lag = doc["remotes"][0]["lag"]["blocks"].as_u64();
    ensure!(
        lag == Some(0),
        "after the updates the remote replica lags ({lag:?} blocks): {}",
        String::from_utf8_lossy(&check.stdout)
    );
    let load_after = load_average();
    drop(setup);
    drop(scratch);

    report(
        &machine,
        &options,
        pool_size,
        &seed,
        &cat,
        &updates,
        (&load_before, &load_after),
    );
    Ok(())
}

/// Prints the tables and the verdicts.
fn report(
    machine: &Machine,
    options: &Options,
    pool_size: u64,
    seed: &Sample,
    cat: &Sample,
    updates: &[(u64, Sample, Sample)],
    (load_before, load_after): (&str, &str),
) {
    let med = |f: &dyn Fn(&(u64, Sample, Sample)) -> u64| {
        median(updates.iter().map(f).collect()).unwrap_or(0)
    };
    let changed = med(&|u| u.0) * BLOCK;
    let ours_wall = Duration::from_nanos(med(&|u| u.1.wall.as_nanos() as u64));
    let theirs_wall = Duration::from_nanos(med(&|u| u.2.wall.as_nanos() as u64));
    let ours_wire = med(&|u| u.1.wire());
    let theirs_wire = med(&|u| u.2.wire());
    let rss_local = updates
        .iter()
        .map(|u| u.1.local_rss)
        .max()
        .unwrap_or(0)
        .max(seed.local_rss);
    let rss_remote = updates
        .iter()
        .map(|u| u.1.remote_rss)
        .max()
        .unwrap_or(0)
        .max(seed.remote_rss);
    println!("\n## Summary (markdown)\n");
    println!(
        "Machine: {} CPUs ({}), {} memory, Linux {}, files on {}; ssh on loopback (127.0.0.1); \
         {} update(s); load average (1, 5, 15 min) {load_before} before, {load_after} after.\n",
        machine.cpus,
        machine.cpu_model,
        machine.memory,
        machine.kernel,
        machine.filesystem,
        options.reps
    );
    println!(
        "Pool {} (root object of {} filled by libpmemobj); {} of the pool's blocks changed per update \
         ({} in {} blocks of 4 KiB, scattered over the root object). Medians of the updates.\n",
        fmt_size(pool_size),
        fmt_size(pool_size / 2),
        format_args!("{:.1} %", options.changed_per_mille as f64 / 10.0),
        fmt_size(changed),
        changed / BLOCK
    );
    println!("| measure | poolsync | reference | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| seeding an empty remote: time | {:.2} s | {:.2} s (`cat part \\| ssh host 'cat > f'`) | {:.2} |",
        secs(seed.wall),
        secs(cat.wall),
        secs(seed.wall) / secs(cat.wall)
    );
    println!(
        "| seeding: bytes on the wire | {} | {} (the part, uncompressed) | {:.3} |",
        fmt_size(seed.wire()),
        fmt_size(pool_size),
        seed.wire() as f64 / pool_size as f64
    );
    println!(
        "| update: bytes on the wire | {} ({} out, {} back) | {} (rsync) | {:.3} |",
        fmt_size(ours_wire),
        fmt_size(med(&|u| u.1.to_remote)),
        fmt_size(med(&|u| u.1.from_remote)),
        fmt_size(theirs_wire),
        ours_wire as f64 / theirs_wire.max(1) as f64
    );
    println!(
        "| update: bytes on the wire against the changed bytes | {} | {} changed | {:.3} |",
        fmt_size(ours_wire),
        fmt_size(changed),
        ours_wire as f64 / changed.max(1) as f64
    );
    println!(
        "| update: time | {:.2} s | {:.2} s (rsync) | {:.2} |",
        secs(ours_wall),
        secs(theirs_wall),
        secs(ours_wall) / secs(theirs_wall)
    );
    println!(
        "| peak RSS | {} here, {} on the remote host | | |\n",
        fmt_size(rss_local),
        fmt_size(rss_remote)
    );
    let wire_limit = WIRE_FACTOR * changed as f64 + WIRE_POOL_SHARE * pool_size as f64;
    let verdicts = [
        (
            format!(
                "wire ≤ {WIRE_FACTOR} × changed + 0.1 % of the pool ({})",
                fmt_size(wire_limit as u64)
            ),
            (ours_wire as f64) <= wire_limit,
        ),
        ("wire below rsync's".to_string(), ours_wire < theirs_wire),
        (
            "update time ≤ rsync's".to_string(),
            ours_wall <= theirs_wall,
        ),
        (
            format!("seeding ≤ {SEED_FACTOR} × cat | ssh"),
            secs(seed.wall) <= SEED_FACTOR * secs(cat.wall),
        ),
        (
            format!("peak RSS ≤ {} on either host", fmt_size(MAX_RSS)),
            rss_local <= MAX_RSS && rss_remote <= MAX_RSS,
        ),
    ];
    println!("| target | met |");
    println!("|---|---|");
    for (what, ok) in verdicts {
        println!("| {what} | {} |", if ok { "yes" } else { "**no**" });
    }
}
