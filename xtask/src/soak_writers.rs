//! The writers `cargo xtask soak` kills: for each, how a round's scenario
//! is built on real files and what its end state must be.
//!
//! Every scenario is a small pool set (16 to 36 MiB per replica) that
//! `poolsync create` makes, with pseudo-random data written into the free
//! chunks of its heap, the same bytes in every replica, as libpmemobj's
//! replication leaves them. Its expected data is the replicated range
//! `[4096, heap end)` of a healthy replica, read before anything is
//! damaged or changed; after the round every replica of the result must
//! hold exactly those bytes. What each writer damages or changes, and what
//! else it checks, is said at its `prepare` function.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, ensure, Context, Result};

use crate::bench_sync::{pool_size, quiet};
use crate::pools::{Layout, MIB, PAGE};
use crate::soak::Rng;
use crate::sshd::Sshd;
use crate::util;

/// One writer of the soak.
pub struct Writer {
    /// Its name for `--only` and the table.
    pub name: &'static str,
    /// What a round does, for the log.
    pub what: &'static str,
    /// Whether it needs the remote host (ssh).
    pub remote: bool,
    /// A known defect that makes rounds fail, until it is fixed: CI's
    /// short run (`cargo xtask test`) leaves the writer out and says why;
    /// the full soak runs it.
    pub open_defect: Option<&'static str>,
    /// What a re-run says on stderr (exiting 1) when the run before it was
    /// killed after it had done all its work: `create` refuses an existing
    /// pool, as pmempool does, and a kill that lands after it removed its
    /// journal (its last step) leaves just that; `import` says that none
    /// of the packet files exists once it has deleted them and removed its
    /// record of the deletion (its last step). The end state is checked as
    /// for any round.
    pub finished_refusal: Option<&'static str>,
    /// Builds round `round`'s scenario in `dir` (empty) and says which
    /// command to run and how to check its end.
    pub prepare: fn(&Cx, &Path, &mut Rng, u32) -> Result<Round>,
}

/// Every writer, in the order the soak runs them.
pub const WRITERS: &[Writer] = &[
    Writer {
        name: "create",
        what: "create obj of a three-replica set of six parts",
        remote: false,
        open_defect: None,
        finished_refusal: Some("non-empty file detected"),
        prepare: create,
    },
    Writer {
        name: "sync",
        what: "sync rebuilding one or two replicas: parts removed, truncated, or with a broken header and stale blocks",
        remote: false,
        open_defect: None,
        finished_refusal: None,
        prepare: sync,
    },
    Writer {
        name: "sync-verify",
        what: "sync --verify repairing scattered damage in the live lanes of two of three replicas",
        remote: false,
        open_defect: None,
        finished_refusal: None,
        prepare: sync_verify,
    },
    Writer {
        name: "transform",
        what: "transform adding a two-part replica",
        remote: false,
        open_defect: None,
        finished_refusal: None,
        prepare: transform_add,
    },
    Writer {
        name: "transform-singlehdr",
        what: "transform adding OPTION SINGLEHDR (even rounds) or removing it (odd rounds)",
        remote: false,
        open_defect: None,
        finished_refusal: None,
        prepare: transform_singlehdr,
    },
    Writer {
        name: "rm",
        what: "rm of a three-replica set in two directories with its state file",
        remote: false,
        open_defect: None,
        finished_refusal: None,
        prepare: rm,
    },
    Writer {
        name: "export",
        what: "export of a first packet (even rounds) or an incremental one (odd rounds), in 4 MiB files",
        remote: false,
        open_defect: None,
        finished_refusal: None,
        prepare: export,
    },
    Writer {
        name: "import",
        what: "import seeding a destination (even rounds) or updating it (odd rounds), from 4 MiB files",
        remote: false,
        open_defect: None,
        finished_refusal: Some("none of the packet files exists"),
        prepare: import,
    },
    Writer {
        name: "feature",
        what: "feature --disable SHUTDOWN_STATE (even rounds) or --enable (odd rounds) on nine headers",
        remote: false,
        open_defect: None,
        finished_refusal: None,
        prepare: feature,
    },
    Writer {
        name: "remote-sync",
        what: "sync of a remote replica over ssh, seeding (even rounds) or updating (odd rounds); one kill in three hits the remote end",
        remote: true,
        open_defect: None,
        finished_refusal: None,
        prepare: remote_sync,
    },
];

/// What every round may use.
pub struct Cx {
    /// The poolsync binary under test.
    pub poolsync: PathBuf,
    /// Whether `pmempool check` judges the end states too.
    pub pmempool: bool,
    /// The remote host of the remote writer.
    pub remote: Option<RemoteHost>,
}

/// How a remote replica's host is reached: a private sshd on 127.0.0.1
/// when OpenSSH's server is installed, else a local stand-in for ssh that
/// drops the host name and runs `poolsync serve` here, over the same pipes
/// (as `cargo xtask demo` does).
pub struct RemoteHost {
    /// Stopped when dropped.
    _sshd: Option<Sshd>,
    pub rsh: String,
    pub node: String,
    /// Which of the two, for the log.
    pub label: &'static str,
}

impl RemoteHost {
    pub fn start(dir: &Path) -> Result<RemoteHost> {
        if crate::sshd::available() {
            let sshd = Sshd::start(dir)?;
            Ok(RemoteHost {
                rsh: sshd.ssh_line(),
                node: sshd.node(),
                _sshd: Some(sshd),
                label: "a private sshd on 127.0.0.1",
            })
        } else {
            Ok(RemoteHost {
                _sshd: None,
                rsh: "sh -c 'shift; exec \"$@\"' local-shell".to_string(),
                node: "site-c".to_string(),
                label: "a local stand-in for ssh (no /usr/sbin/sshd)",
            })
        }
    }
}

/// The end state a round must reach.
pub type Verify = Box<dyn Fn(&Cx) -> Result<()>>;

/// A prepared round: the command and the check of its end state.
pub struct Round {
    /// poolsync's arguments.
    pub args: Vec<String>,
    /// Environment variables it runs with.
    pub env: Vec<(String, String)>,
    /// Where the remote end writes its pid (the remote writer), so that a
    /// kill can hit it.
    pub remote_pid: Option<PathBuf>,
    pub verify: Verify,
}

impl Round {
    /// The command line, for messages.
    pub fn display(&self) -> String {
        let mut words: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}='{v}'")).collect();
        words.push("poolsync".to_string());
        words.extend(self.args.iter().cloned());
        words.join(" ")
    }
}

// ---------------------------------------------------------------------------
// Pools

/// A pool set in a directory, with the end of its replicated range.
#[derive(Debug, Clone)]
struct Pool {
    dir: PathBuf,
    set: PathBuf,
    layout: Layout,
    /// `heap_offset + heap_size`.
    end: u64,
}

/// The free chunks of a fresh pool's heap start before this logical offset.
const FILL_FROM: u64 = 4 * MIB;
/// Data is written in pieces of this size; half of them get data.
const PIECE: u64 = 64 * 1024;

impl Pool {
    /// Writes the set file `name` and creates the pool with `poolsync create`.
    fn create(cx: &Cx, dir: &Path, name: &str, layout: &Layout) -> Result<Pool> {
        let set = write_set(dir, name, layout)?;
        for path in layout.part_paths(dir) {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
        }
        poolsync(cx, dir, &["create", "obj", "--layout", "soak", s(&set)])?;
        let end = pool_size(&cx.poolsync, &set)?;
        Ok(Pool {
            dir: dir.to_path_buf(),
            set,
            layout: layout.clone(),
            end,
        })
    }

    /// The same pool seen through another set file of `layout`.
    fn as_layout(&self, set: &Path, layout: &Layout) -> Pool {
        Pool {
            set: set.to_path_buf(),
            layout: layout.clone(),
            ..self.clone()
        }
    }

    /// Pseudo-random data in half of the free chunk pieces, the same in
    /// every replica.
    fn fill(&self, rng: &mut Rng) -> Result<()> {
        let mut piece = vec![0u8; PIECE as usize];
        let mut at = FILL_FROM;
        while at + PIECE <= self.end {
            if rng.below(2) == 0 {
                rng.fill(&mut piece);
                self.write_all(at, &piece)?;
            }
            at += PIECE;
        }
        Ok(())
    }

    /// New data in `n` pieces, the same in every replica, as an
    /// application's writes between two updates.
    fn change(&self, rng: &mut Rng, n: u64) -> Result<()> {
        let mut piece = vec![0u8; PIECE as usize];
        let pieces = (self.end - FILL_FROM) / PIECE;
        for _ in 0..n {
            rng.fill(&mut piece);
            self.write_all(FILL_FROM + rng.below(pieces) * PIECE, &piece)?;
        }
        Ok(())
    }

    fn write_all(&self, at: u64, bytes: &[u8]) -> Result<()> {
        for r in 0..self.layout.replicas.len() {
            self.layout.write(&self.dir, r, at, bytes)?;
        }
        Ok(())
    }

    /// The replicated range of replica `r`.
    fn data(&self, r: usize) -> Result<Vec<u8>> {
        self.layout.read(&self.dir, r, PAGE, self.end - PAGE)
    }

    /// Every replica holds `data`.
    fn expect_data(&self, data: &[u8]) -> Result<()> {
        for r in 0..self.layout.replicas.len() {
            let got = self.data(r)?;
            if got != data {
                let first = got.iter().zip(data).position(|(a, b)| a != b).unwrap_or(0);
                let blocks = got
                    .chunks(PAGE as usize)
                    .zip(data.chunks(PAGE as usize))
                    .filter(|(a, b)| a != b)
                    .count();
                bail!(
                    "replica {r} of {} differs from the expected data in {blocks} block(s), \
                     first at logical offset {:#x}",
                    self.set.display(),
                    PAGE + first as u64
                );
            }
        }
        Ok(())
    }

    /// `poolsync check` and `pmempool check` say consistent, and every
    /// replica holds `data`.
    fn expect_healthy(&self, cx: &Cx, data: &[u8]) -> Result<()> {
        expect_consistent(cx, &self.dir, &self.set)?;
        if cx.pmempool {
            expect_pmempool_consistent(&self.set)?;
        }
        self.expect_data(data)
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

fn write_set(dir: &Path, name: &str, layout: &Layout) -> Result<PathBuf> {
    let set = dir.join(name);
    fs::write(&set, layout.set_text(dir)).with_context(|| format!("writing {}", set.display()))?;
    Ok(set)
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_string()).collect()
}

/// Runs poolsync in `dir` for a scenario's preparation; it must succeed.
fn poolsync(cx: &Cx, dir: &Path, words: &[&str]) -> Result<()> {
    quiet(Command::new(&cx.poolsync).args(words).current_dir(dir))
}

/// Runs poolsync in `dir` and hands back its output, whatever its status.
fn poolsync_output(
    cx: &Cx,
    dir: &Path,
    words: &[&str],
    env: &[(String, String)],
) -> Result<Output> {
    let mut cmd = Command::new(&cx.poolsync);
    cmd.args(words)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir);
    cmd.output()
        .with_context(|| format!("running `{}`", util::display(&cmd)))
}

/// `poolsync check -v` exits 0 and calls the pool consistent.
fn expect_consistent(cx: &Cx, dir: &Path, set: &Path) -> Result<()> {
    expect_consistent_with(cx, dir, set, &[])
}

fn expect_consistent_with(cx: &Cx, dir: &Path, set: &Path, env: &[(String, String)]) -> Result<()> {
    let out = poolsync_output(cx, dir, &["check", "-v", s(set)], env)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success()
            && stdout.lines().any(|l| l.ends_with(": consistent"))
            && !stdout.contains("not consistent"),
        "`poolsync check -v {}` exits with {}: {}{}",
        set.display(),
        out.status,
        stdout.trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// `pmempool check -v` calls the pool consistent.
fn expect_pmempool_consistent(set: &Path) -> Result<()> {
    let out = Command::new("pmempool")
        .args(["check", "-v"])
        .arg(set)
        .output()
        .context("running `pmempool check`")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success() && stdout.lines().any(|l| l.ends_with(": consistent")),
        "`pmempool check -v {}` exits with {}: {}{}",
        set.display(),
        out.status,
        stdout.trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// No journal, temporary copy or partial packet file is left in `dir`
/// (or below it).
fn expect_no_leftovers(dir: &Path) -> Result<()> {
    let mut found = Vec::new();
    walk(dir, &mut |path| {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if [".poolsync-journal", ".poolsync-tmp", ".poolsync-partial"]
            .iter()
            .any(|tail| name.contains(tail))
        {
            found.push(path.display().to_string());
        }
    })?;
    ensure!(found.is_empty(), "left behind: {}", found.join(", "));
    Ok(())
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, f)?;
        } else {
            f(&path);
        }
    }
    Ok(())
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    walk(dir, &mut |path| {
        if let Ok(rel) = path.strip_prefix(dir) {
            names.push(rel.display().to_string());
        }
    })?;
    names.sort();
    Ok(names)
}

/// Flips one byte of a file.
fn flip(path: &Path, offset: u64) -> Result<()> {
    use std::os::unix::fs::FileExt as _;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut b = [0u8];
    file.read_exact_at(&mut b, offset)
        .and_then(|()| file.write_all_at(&[b[0] ^ 0xa5], offset))
        .with_context(|| format!("flipping byte {offset} of {}", path.display()))
}

/// The `uuid` of a part's pool header (bytes 40..56, `docs/format.md`).
fn part_uuid(path: &Path) -> Result<Vec<u8>> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes
        .get(40..56)
        .context("a part shorter than its header")?
        .to_vec())
}

// ---------------------------------------------------------------------------
// The writers

/// `create obj` of a three-replica set (parts of 9 to 32 MiB). The end
/// state is compared with a pool the same binary created uncut, which a
/// scratch directory beside the round's holds for a moment: same replicated
/// bytes in every replica, consistent for both checks, and nothing in the
/// directory but the set file and the parts.
fn create(cx: &Cx, dir: &Path, _rng: &mut Rng, _round: u32) -> Result<Round> {
    let layout = Layout::new(&[
        &[("a0", 16), ("a1", 16)],
        &[("b0", 32)],
        &[("c0", 12), ("c1", 12), ("c2", 9)],
    ]);
    let scratch = dir.with_extension("reference");
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let reference = Pool::create(cx, &scratch, "pool.set", &layout)?;
    let data = reference.data(0)?;
    let end = reference.end;
    fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;

    let set = write_set(dir, "pool.set", &layout)?;
    let pool = Pool {
        dir: dir.to_path_buf(),
        set: set.clone(),
        layout: layout.clone(),
        end,
    };
    let mut expected: Vec<String> = layout
        .replicas
        .iter()
        .flatten()
        .map(|(n, _)| n.clone())
        .collect();
    expected.push("pool.set".to_string());
    expected.sort();
    Ok(Round {
        args: args(&["create", "obj", "--layout", "soak", s(&set)]),
        env: Vec::new(),
        remote_pid: None,
        verify: Box::new(move |cx| {
            pool.expect_healthy(cx, &data)?;
            let files = files_under(&pool.dir)?;
            ensure!(files == expected, "files after create: {files:?}");
            Ok(())
        }),
    })
}

/// `sync` of a three-replica set, one or two of whose replicas (never
/// all three) are damaged: every part removed, one part removed, a part
/// truncated to half, or a part's header broken (a flipped byte of its
/// uuid) with stale blocks in that part's data. The end state: every
/// replica holds the data of before the damage, both checks say
/// consistent, nothing is left but undo files.
fn sync(cx: &Cx, dir: &Path, rng: &mut Rng, _round: u32) -> Result<Round> {
    let layout = Layout::new(&[
        &[("a0", 16), ("a1", 16)],
        &[("b0", 32)],
        &[("c0", 17), ("c1", 16)],
    ]);
    let pool = Pool::create(cx, dir, "pool.set", &layout)?;
    pool.fill(rng)?;
    let data = pool.data(0)?;
    let damaged = 1 + rng.below(2) as usize;
    let first = rng.below(3) as usize;
    for k in 0..damaged {
        let r = (first + k) % 3;
        let parts = &layout.replicas[r];
        let p = rng.below(parts.len() as u64) as usize;
        let path = dir.join(&parts[p].0);
        match rng.below(4) {
            0 => {
                for (name, _) in parts {
                    fs::remove_file(dir.join(name)).context("removing a part")?;
                }
            }
            1 => fs::remove_file(&path).context("removing a part")?,
            2 => {
                let file = fs::OpenOptions::new().write(true).open(&path)?;
                file.set_len(parts[p].1 * MIB / 2)
                    .with_context(|| format!("truncating {}", path.display()))?;
            }
            _ => {
                flip(&path, 40)?;
                let mut block = vec![0u8; PAGE as usize];
                for _ in 0..1 + rng.below(16) {
                    let blocks = parts[p].1 * MIB / PAGE;
                    rng.fill(&mut block);
                    let at = (1 + rng.below(blocks - 1)) * PAGE;
                    use std::os::unix::fs::FileExt as _;
                    fs::OpenOptions::new()
                        .write(true)
                        .open(&path)?
                        .write_all_at(&block, at)
                        .context("writing stale data")?;
                }
            }
        }
    }
    let set = pool.set.clone();
    Ok(Round {
        args: args(&["sync", "--no-progress", s(&set)]),
        env: Vec::new(),
        remote_pid: None,
        verify: Box::new(move |cx| {
            pool.expect_healthy(cx, &data)?;
            expect_no_leftovers(&pool.dir)
        }),
    })
}

/// `sync --verify` of a three-replica set whose replicas 1 and 2 have
/// 4 to 24 damaged ranges (1 to 512 bytes each) in the lanes, which
/// `check --data` compares as live. No 4 KiB block is damaged in both
/// replicas: verification votes block by block, so damage at different
/// bytes of one block in two replicas is a tie (docs/reliability.md),
/// and the majority must say which copy is right. The end state: every
/// replica holds the data of before the damage, `check --data` exits 0,
/// both checks say consistent.
fn sync_verify(cx: &Cx, dir: &Path, rng: &mut Rng, _round: u32) -> Result<Round> {
    let layout = Layout::new(&[&[("a0", 32)], &[("b0", 16), ("b1", 17)], &[("c0", 33)]]);
    let pool = Pool::create(cx, dir, "pool.set", &layout)?;
    pool.fill(rng)?;
    let data = pool.data(0)?;
    // The blocks damaged so far, with the replica that holds the damage.
    let mut damaged: Vec<(u64, usize)> = Vec::new();
    for _ in 0..4 + rng.below(21) {
        let lane = rng.below(LANES);
        let len = 1 + rng.below(512);
        let at = LANES_OFFSET + lane * LANE_SIZE + rng.below(LANE_SIZE - len);
        let r = 1 + rng.below(2) as usize;
        let blocks = at / PAGE..=(at + len - 1) / PAGE;
        if damaged
            .iter()
            .any(|(b, other)| *other != r && blocks.contains(b))
        {
            continue;
        }
        damaged.extend(blocks.map(|b| (b, r)));
        let mut bytes = vec![0u8; len as usize];
        rng.fill(&mut bytes);
        // Garbage that differs from what is there in every byte.
        let old = layout.read(dir, r, at, len)?;
        for (b, o) in bytes.iter_mut().zip(&old) {
            if b == o {
                *b = !*o;
            }
        }
        layout.write(dir, r, at, &bytes)?;
    }
    let set = pool.set.clone();
    Ok(Round {
        args: args(&["sync", "--verify", "--no-progress", s(&set)]),
        env: Vec::new(),
        remote_pid: None,
        verify: Box::new(move |cx| {
            pool.expect_healthy(cx, &data)?;
            let out = poolsync_output(cx, &pool.dir, &["check", "--data", s(&pool.set)], &[])?;
            ensure!(
                out.status.success(),
                "`poolsync check --data` exits with {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            expect_no_leftovers(&pool.dir)
        }),
    })
}

/// The lanes of an obj pool (`docs/format.md`): 1024 of 3 KiB from 8 KiB.
const LANES_OFFSET: u64 = 2 * PAGE;
const LANES: u64 = 1024;
const LANE_SIZE: u64 = 3072;

/// `transform` adding a replica of two parts to a one-replica pool. The
/// end state: the target set is consistent for both checks, its every
/// replica holds the source's data, and the directory holds the two set
/// files and the target's parts only (no journal, no temporary copy).
fn transform_add(cx: &Cx, dir: &Path, rng: &mut Rng, _round: u32) -> Result<Round> {
    let src = Layout::new(&[&[("a0", 32)]]);
    let dst = Layout::new(&[&[("a0", 32)], &[("b0", 16), ("b1", 18)]]);
    let pool = Pool::create(cx, dir, "src.set", &src)?;
    pool.fill(rng)?;
    let data = pool.data(0)?;
    let dst_set = write_set(dir, "dst.set", &dst)?;
    let target = pool.as_layout(&dst_set, &dst);
    let args = args(&["transform", s(&pool.set), s(&dst_set)]);
    Ok(Round {
        args,
        env: Vec::new(),
        remote_pid: None,
        verify: Box::new(move |cx| {
            target.expect_healthy(cx, &data)?;
            expect_no_leftovers(&target.dir)?;
            let files = files_under(&target.dir)?;
            ensure!(
                files == ["a0", "b0", "b1", "dst.set", "src.set"],
                "files after the transform: {files:?}"
            );
            Ok(())
        }),
    })
}

/// `transform` adding `OPTION SINGLEHDR` to a set of two replicas (two and
/// three parts) in even rounds, removing it in odd ones (the pool is then
/// created without it, which leaves room for the headers, and given it by
/// a transform first). The end state: the target consistent for both
/// checks, every replica holding the source's data through the target's
/// layout, part 0 of each replica keeping its uuid (as pmempool keeps it),
/// nothing left but the two set files and the parts.
fn transform_singlehdr(cx: &Cx, dir: &Path, rng: &mut Rng, round: u32) -> Result<Round> {
    let plain = Layout::new(&[
        &[("a0", 16), ("a1", 16)],
        &[("b0", 12), ("b1", 12), ("b2", 12)],
    ]);
    let single = plain.with_singlehdr(true);
    let adding = round.is_multiple_of(2);
    let pool = Pool::create(cx, dir, "plain.set", &plain)?;
    pool.fill(rng)?;
    let data = pool.data(0)?;
    let single_set = write_set(dir, "single.set", &single)?;
    let (src_set, target) = if adding {
        (pool.set.clone(), pool.as_layout(&single_set, &single))
    } else {
        poolsync(cx, dir, &["transform", s(&pool.set), s(&single_set)])?;
        (single_set.clone(), pool.clone())
    };
    let uuids = [part_uuid(&dir.join("a0"))?, part_uuid(&dir.join("b0"))?];
    let args = args(&["transform", s(&src_set), s(&target.set)]);
    Ok(Round {
        args,
        env: Vec::new(),
        remote_pid: None,
        verify: Box::new(move |cx| {
            target.expect_healthy(cx, &data)?;
            expect_no_leftovers(&target.dir)?;
            for (part, uuid) in ["a0", "b0"].iter().zip(&uuids) {
                ensure!(
                    part_uuid(&target.dir.join(part))? == *uuid,
                    "{part} got a new uuid; part 0 keeps its uuid in a run that is not killed"
                );
            }
            let files = files_under(&target.dir)?;
            ensure!(
                files == ["a0", "a1", "b0", "b1", "b2", "plain.set", "single.set"],
                "files after the transform: {files:?}"
            );
            Ok(())
        }),
    })
}

/// `rm -f` of a three-replica set whose parts lie in two directories,
/// with the state file an export left beside the set file. The end state:
/// no part and no state file is left, only the set file.
fn rm(cx: &Cx, dir: &Path, rng: &mut Rng, _round: u32) -> Result<Round> {
    let layout = Layout::new(&[
        &[("x/a0", 16), ("y/a1", 16)],
        &[("y/b0", 32)],
        &[("x/c0", 12), ("y/c1", 12), ("x/c2", 9)],
    ]);
    let pool = Pool::create(cx, dir, "pool.set", &layout)?;
    pool.fill(rng)?;
    let packet = dir.join("seed.pkt");
    poolsync(
        cx,
        dir,
        &[
            "export",
            "--no-progress",
            "--out",
            s(&packet),
            s(&pool.set),
            "site-b",
        ],
    )?;
    fs::remove_file(&packet).context("removing the packet")?;
    let set = pool.set.clone();
    let root = dir.to_path_buf();
    Ok(Round {
        args: args(&["rm", "-f", s(&set)]),
        env: Vec::new(),
        remote_pid: None,
        verify: Box::new(move |_| {
            let files = files_under(&root)?;
            ensure!(files == ["pool.set"], "files after rm: {files:?}");
            Ok(())
        }),
    })
}

/// The files of the packet whose first file is `first`: `first`,
/// `first_2`, `first_3`, ...
fn packet_files(first: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut n = 1;
    loop {
        let path = if n == 1 {
            first.to_path_buf()
        } else {
            PathBuf::from(format!("{}_{n}", first.display()))
        };
        if !path.exists() {
            return files;
        }
        files.push(path);
        n += 1;
    }
}

/// A destination of another layout than the source's two replicas.
fn destination() -> Layout {
    Layout::new(&[&[("d0", 33)], &[("e0", 9), ("e1", 9), ("e2", 17)]])
}

/// `export` in files of 4 MiB at most, of a two-replica pool: in even
/// rounds the first packet for `site-b` (every block), in odd ones an
/// incremental packet after 32 pieces of 64 KiB changed. The end state: the
/// packet verifies (`poolsync packet`), no partial file is left, and
/// importing it (after the first packet, in odd rounds) into a fresh
/// destination of another layout gives every replica there the source's
/// data; the source is consistent and unchanged.
fn export(cx: &Cx, dir: &Path, rng: &mut Rng, round: u32) -> Result<Round> {
    let layout = Layout::new(&[&[("a0", 16), ("a1", 16)], &[("b0", 32)]]);
    let pool = Pool::create(cx, dir, "pool.set", &layout)?;
    pool.fill(rng)?;
    let mut earlier = Vec::new();
    if !round.is_multiple_of(2) {
        let first = dir.join("first.pkt");
        poolsync(
            cx,
            dir,
            &[
                "export",
                "--no-progress",
                "--max-size",
                "4m",
                "--out",
                s(&first),
                s(&pool.set),
                "site-b",
            ],
        )?;
        earlier = packet_files(&first);
        pool.change(rng, 32)?;
    }
    let data = pool.data(0)?;
    let out = dir.join("next.pkt");
    let set = pool.set.clone();
    Ok(Round {
        args: args(&[
            "export",
            "--no-progress",
            "--max-size",
            "4m",
            "--out",
            s(&out),
            s(&set),
            "site-b",
        ]),
        env: Vec::new(),
        remote_pid: None,
        verify: Box::new(move |cx| {
            pool.expect_healthy(cx, &data)?;
            expect_no_leftovers(&pool.dir)?;
            let files = packet_files(&out);
            ensure!(!files.is_empty(), "no packet {} was written", out.display());
            let mut words: Vec<&str> = vec!["packet"];
            words.extend(files.iter().map(|f| s(f)));
            let described = poolsync_output(cx, &pool.dir, &words, &[])?;
            ensure!(
                described.status.success(),
                "`poolsync packet` exits with {}: {}",
                described.status,
                String::from_utf8_lossy(&described.stderr).trim()
            );
            // Import into a fresh destination, beside the source.
            let dest_dir = pool.dir.join("dest");
            if dest_dir.exists() {
                fs::remove_dir_all(&dest_dir)?;
            }
            fs::create_dir_all(&dest_dir)?;
            let dest_layout = destination();
            let dest_set = write_set(&dest_dir, "dest.set", &dest_layout)?;
            let mut words: Vec<&str> = vec!["import", "--keep", "--no-progress", s(&dest_set)];
            words.extend(earlier.iter().chain(&files).map(|f| s(f)));
            poolsync(cx, &dest_dir, &words)?;
            let dest = Pool {
                dir: dest_dir.clone(),
                set: dest_set,
                layout: dest_layout,
                end: pool.end,
            };
            dest.expect_healthy(cx, &data)?;
            fs::remove_dir_all(&dest_dir)?;
            Ok(())
        }),
    })
}

/// `import` (deleting the packet, as without `--keep`) of a packet in
/// files of 4 MiB at most into a destination of another layout: in even
/// rounds the first packet, which seeds it (its parts do not exist), in
/// odd ones an incremental packet of 32 changed pieces into a destination
/// the first packet seeded. The end state: every replica of the
/// destination holds the source's data, both checks say consistent, the
/// packet's files are gone and nothing else is left.
fn import(cx: &Cx, dir: &Path, rng: &mut Rng, round: u32) -> Result<Round> {
    let layout = Layout::new(&[&[("a0", 16), ("a1", 16)]]);
    let source = dir.join("source");
    let dest_dir = dir.join("dest");
    for d in [&source, &dest_dir] {
        fs::create_dir_all(d)?;
    }
    let pool = Pool::create(cx, &source, "pool.set", &layout)?;
    pool.fill(rng)?;
    let dest_layout = destination();
    let dest_set = write_set(&dest_dir, "dest.set", &dest_layout)?;
    let first = dir.join("first.pkt");
    let export = |out: &Path| {
        poolsync(
            cx,
            dir,
            &[
                "export",
                "--no-progress",
                "--max-size",
                "4m",
                "--out",
                s(out),
                s(&pool.set),
                "site-b",
            ],
        )
    };
    export(&first)?;
    let mut packet = packet_files(&first);
    if !round.is_multiple_of(2) {
        let mut words: Vec<&str> = vec!["import", "--no-progress", s(&dest_set)];
        words.extend(packet.iter().map(|f| s(f)));
        poolsync(cx, &dest_dir, &words)?;
        pool.change(rng, 32)?;
        let next = dir.join("next.pkt");
        export(&next)?;
        packet = packet_files(&next);
    }
    let data = pool.data(0)?;
    let dest = Pool {
        dir: dest_dir.clone(),
        set: dest_set.clone(),
        layout: dest_layout,
        end: pool.end,
    };
    let mut words = vec![
        "import".to_string(),
        "--no-progress".to_string(),
        s(&dest_set).to_string(),
    ];
    words.extend(packet.iter().map(|f| s(f).to_string()));
    let root = dir.to_path_buf();
    Ok(Round {
        args: words,
        env: Vec::new(),
        remote_pid: None,
        verify: Box::new(move |cx| {
            dest.expect_healthy(cx, &data)?;
            for f in &packet {
                ensure!(
                    !f.exists(),
                    "{} is still there after the import",
                    f.display()
                );
            }
            expect_no_leftovers(&root)
        }),
    })
}

/// `feature --disable SHUTDOWN_STATE` (even rounds) or `--enable` (odd
/// rounds, on a pool where a first run disabled it) on a set of three
/// replicas and nine parts, each with its header. The end state: `feature
/// -q` (poolsync's and pmempool's) says the new value, both checks say
/// consistent, the data is unchanged.
fn feature(cx: &Cx, dir: &Path, rng: &mut Rng, round: u32) -> Result<Round> {
    let layout = Layout::new(&[
        &[("a0", 9), ("a1", 9), ("a2", 9), ("a3", 9)],
        &[("b0", 12), ("b1", 12), ("b2", 12)],
        &[("c0", 18), ("c1", 18)],
    ]);
    let pool = Pool::create(cx, dir, "pool.set", &layout)?;
    pool.fill(rng)?;
    let data = pool.data(0)?;
    let enable = !round.is_multiple_of(2);
    if enable {
        poolsync(
            cx,
            dir,
            &["feature", "--disable", "SHUTDOWN_STATE", s(&pool.set)],
        )?;
    }
    let flag = if enable { "--enable" } else { "--disable" };
    let want = if enable { "1" } else { "0" };
    let set = pool.set.clone();
    Ok(Round {
        args: args(&["feature", flag, "SHUTDOWN_STATE", s(&set)]),
        env: Vec::new(),
        remote_pid: None,
        verify: Box::new(move |cx| {
            pool.expect_healthy(cx, &data)?;
            let out = poolsync_output(
                cx,
                &pool.dir,
                &["feature", "-q", "SHUTDOWN_STATE", s(&pool.set)],
                &[],
            )?;
            let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
            ensure!(
                out.status.success() && got == want,
                "`poolsync feature -q SHUTDOWN_STATE` says {got:?} ({}), not {want}",
                out.status
            );
            if cx.pmempool {
                let out = Command::new("pmempool")
                    .args(["feature", "-q", "SHUTDOWN_STATE"])
                    .arg(&pool.set)
                    .output()
                    .context("running `pmempool feature`")?;
                let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
                ensure!(
                    got == want,
                    "`pmempool feature -q SHUTDOWN_STATE` says {got:?}, not {want}"
                );
            }
            expect_no_leftovers(&pool.dir)
        }),
    })
}

/// `sync` of a pool set with one local replica (two parts) and a remote
/// one (two parts of other sizes) on the remote host, whose tree is a
/// directory of the round: in even rounds the remote parts do not exist
/// (seeding), in odd ones a first sync seeded them and 32 pieces changed
/// since (an update). The remote end runs through a wrapper that writes
/// its pid, so that one kill in three hits it instead. The end state:
/// `poolsync check` of the administrator's set file exits 0 and calls the
/// remote replica consistent, the remote replica holds the local data,
/// and `pmempool check` passes both the local pool and the remote one.
fn remote_sync(cx: &Cx, dir: &Path, rng: &mut Rng, round: u32) -> Result<Round> {
    let host = cx
        .remote
        .as_ref()
        .context("the remote writer needs its host")?;
    let layout = Layout::new(&[&[("a0", 16), ("a1", 16)]]);
    let remote_layout = Layout::new(&[&[("r0", 20), ("r1", 13)]]);
    let site = dir.join("site");
    fs::create_dir_all(&site)?;
    let remote_set = write_set(&site, "standby.set", &remote_layout)?;
    let config = dir.join("serve.toml");
    fs::write(&config, format!("[serve]\nroot = {:?}\n", s(&site)))?;
    let pid_file = dir.join("serve.pid");
    let wrapper = dir.join("serve.sh");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho $$ > '{}'\nexec '{}' --config '{}' \"$@\"\n",
            s(&pid_file),
            s(&cx.poolsync),
            s(&config)
        ),
    )?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))?;
    }
    let pool = Pool::create(cx, dir, "app.set", &layout)?;
    pool.fill(rng)?;
    let admin = dir.join("admin.set");
    fs::write(
        &admin,
        format!(
            "{}REPLICA {} standby.set\n",
            layout.set_text(dir),
            host.node
        ),
    )?;
    let env = vec![
        ("POOLSYNC_RSH".to_string(), host.rsh.clone()),
        ("POOLSYNC_REMOTE_PATH".to_string(), s(&wrapper).to_string()),
    ];
    if !round.is_multiple_of(2) {
        let out = poolsync_output(cx, dir, &["sync", "--no-progress", s(&admin)], &env)?;
        ensure!(
            out.status.success(),
            "seeding the remote replica: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        pool.change(rng, 32)?;
    }
    let data = pool.data(0)?;
    let remote = Pool {
        dir: site.clone(),
        set: remote_set,
        layout: remote_layout,
        end: pool.end,
    };
    let check_env = env.clone();
    let root = dir.to_path_buf();
    Ok(Round {
        args: args(&["sync", "--no-progress", s(&admin)]),
        env,
        remote_pid: Some(pid_file),
        verify: Box::new(move |cx| {
            expect_consistent_with(cx, &root, &admin, &check_env)?;
            pool.expect_healthy(cx, &data)?;
            remote.expect_data(&data)?;
            if cx.pmempool {
                expect_pmempool_consistent(&remote.set)?;
            }
            expect_no_leftovers(&root)
        }),
    })
}
