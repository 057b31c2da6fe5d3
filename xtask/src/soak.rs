//! `cargo xtask soak`: the long kill loops of issue 15 (defect 3) for every
//! writer, on real files, with the figures printed at the end.
//!
//! For each writer (`soak_writers`), one uncut run on a fresh scenario
//! measures how long the command takes (and proves that the checks pass
//! on an uninterrupted run). Then each of `--runs` rounds builds a fresh
//! scenario, starts the `poolsync` command, sends it SIGKILL at a
//! pseudo-random moment spread over the measured duration (one kill in six
//! lands in the first two milliseconds), re-runs the same command (killed
//! again in one round in four, up to four times), and finally runs it to
//! completion. No manual step is ever taken: a run that exits non-zero by
//! itself, a final run that fails, or an end state that does not pass the
//! writer's checks (`poolsync check`, the replicas' bytes against the
//! expected data, `pmempool check` when PMDK is installed, no leftover
//! journal or temporary file) is a failure, and the soak exits non-zero
//! naming the writer, the round, the seed and the command's stderr. The
//! round's directory is kept for a look. Before a re-run the soak waits
//! while a child the killed run had forked, and that had not reached
//! `exec` yet, still holds the pool set file (and so its lock); the table
//! counts these waits.
//!
//! Every kill moment comes from the seed, the writer's name and the round
//! number, so `--seed S --only W --runs N` replays the same schedule (the
//! machine's timing decides where each kill lands). `docs/reliability.md`
//! records the figures of a full run. CI runs three rounds of every writer
//! on the debug build (`cargo xtask test`).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench_sync::{splitmix64, Machine};
use crate::soak_writers::{Cx, RemoteHost, Round, Writer, WRITERS};
use crate::util;

/// Rounds per writer unless `--runs` says otherwise.
pub const DEFAULT_RUNS: u32 = 200;
/// Rounds per writer of the CI smoke run (`cargo xtask test`).
pub const SMOKE_RUNS: u32 = 3;
/// One kill in this many lands in the first [`EARLY`] of a run.
const EARLY_ONE_IN: u64 = 6;
const EARLY: Duration = Duration::from_millis(2);
/// One round in this many kills the re-runs too, [`MORE_KILLS`] times at most.
const REPEAT_ONE_IN: u64 = 4;
const MORE_KILLS: u64 = 3;
/// An uncut run that takes this many times the measured one (and at least
/// [`HANG_MIN`]) is taken for a hang.
const HANG_FACTOR: u32 = 50;
const HANG_MIN: Duration = Duration::from_secs(120);
/// Uncut runs that measure a writer's command (one in the smoke run,
/// which has no time for more).
const MEASURE_RUNS: u32 = 3;
/// The longest wait for a fork of a killed run to let go of its files.
const SETTLE_MAX: Duration = Duration::from_secs(10);
/// Failed rounds whose directories are kept, per writer.
const KEEP_FAILED: u32 = 3;

/// What `cargo xtask soak` is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub runs: u32,
    /// Writer names; `None`: every writer.
    pub only: Option<Vec<String>>,
    /// Where the pools go (a fresh directory inside it); `None`: the
    /// system's temporary directory.
    pub dir: Option<PathBuf>,
    pub seed: Option<u64>,
    /// CI's short run: the debug build (which the tests built already),
    /// and the writers with an open defect left out, by name.
    pub smoke: bool,
}

impl Options {
    /// What `cargo xtask test` runs.
    pub fn smoke() -> Options {
        Options {
            runs: SMOKE_RUNS,
            only: None,
            dir: None,
            seed: Some(1),
            smoke: true,
        }
    }
}

/// `cargo xtask soak ...`.
pub fn command(root: &Path, args: &[String]) -> Result<()> {
    run(root, &parse(args)?)
}

pub fn parse(args: &[String]) -> Result<Options> {
    let mut opts = Options {
        runs: DEFAULT_RUNS,
        only: None,
        dir: None,
        seed: None,
        smoke: false,
    };
    let mut runs = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |what: &str| {
            args.next()
                .with_context(|| format!("{arg} needs {what}"))
                .cloned()
        };
        match arg.as_str() {
            "--runs" => {
                let n = value("a number")?;
                let n: u32 = n
                    .parse()
                    .with_context(|| format!("--runs wants a whole number, got `{n}`"))?;
                if n == 0 {
                    bail!("--runs must be at least 1");
                }
                runs = Some(n);
            }
            "--only" => {
                let list = value("writer names")?;
                let names: Vec<String> = list.split(',').map(str::to_string).collect();
                for name in &names {
                    if !WRITERS.iter().any(|w| w.name == name) {
                        bail!(
                            "no writer `{name}`; the writers are: {}",
                            WRITERS.iter().map(|w| w.name).collect::<Vec<_>>().join(", ")
                        );
                    }
                }
                opts.only = Some(names);
            }
            "--dir" => opts.dir = Some(PathBuf::from(value("a directory")?)),
            "--seed" => {
                let s = value("a number")?;
                opts.seed = Some(
                    s.parse()
                        .with_context(|| format!("--seed wants a whole number, got `{s}`"))?,
                );
            }
            "--smoke" => opts.smoke = true,
            other => bail!(
                "soak: unknown argument `{other}`; expected --runs N, --only W,.., --dir DIR, --seed S or --smoke"
            ),
        }
    }
    if opts.smoke {
        let smoke = Options::smoke();
        opts.runs = runs.unwrap_or(smoke.runs);
        opts.seed = opts.seed.or(smoke.seed);
    } else if let Some(n) = runs {
        opts.runs = n;
    }
    Ok(opts)
}

/// The figures of one writer.
#[derive(Debug, Clone, Default)]
struct Figures {
    rounds: u32,
    /// Kills that landed while the command ran (of the local command, or of
    /// the remote end for the remote writer).
    kills: u32,
    /// Of those, kills of the remote end.
    remote_kills: u32,
    /// Timers that fired after the command had completed.
    completed_before_kill: u32,
    /// Kills that landed after the command had done all its work (its
    /// last step, such as removing its journal, was done), so that the
    /// re-run gave the answer the writer gives to a finished job
    /// ([`Writer::finished_refusal`]); the end state is checked as always.
    finished_then_killed: u32,
    /// Kills after which a child the killed run had just forked still held
    /// the pool set's files (it had not reached `exec` yet); the re-run
    /// waited for it, as a refusal "in use" would say to.
    forks_waited: u32,
    /// Runs after the first of each round, summed.
    reruns: u32,
    max_reruns: u32,
    failures: u32,
    /// The uncut run that spread the kills.
    uncut: Duration,
    wall: Duration,
}

/// A round that needed a manual step, or ended in a wrong state.
#[derive(Debug)]
struct Failure {
    writer: &'static str,
    round: u32,
    seed: u64,
    what: String,
    command: String,
    stderr: String,
    kept: PathBuf,
}

/// The seed of a round: the soak's seed, the writer's name and the round.
fn round_seed(seed: u64, writer: &str, round: u32) -> u64 {
    let name = writer.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    splitmix64(seed ^ splitmix64(name ^ splitmix64(u64::from(round))))
}

/// A small pseudo-random generator (SplitMix64 over a counter).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix64(self.0)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// When to kill: early, or anywhere in the measured duration.
fn kill_delay(rng: &mut Rng, whole: Duration) -> Duration {
    if rng.below(EARLY_ONE_IN) == 0 {
        EARLY.mul_f64(rng.unit())
    } else {
        whole.mul_f64(rng.unit() * 1.05)
    }
}

/// `cargo xtask soak` with `opts`: fails when a round failed.
pub fn run(root: &Path, opts: &Options) -> Result<()> {
    let profile = if opts.smoke { "debug" } else { "release" };
    util::step(&format!("building poolsync ({profile})"));
    let mut build = util::cargo();
    build
        .args(["build", "--package", "poolsync"])
        .current_dir(root);
    if !opts.smoke {
        build.arg("--release");
    }
    util::run(&mut build)?;
    let poolsync = util::target_dir(root)?.join(profile).join("poolsync");
    if !poolsync.is_file() {
        bail!("the build did not produce {}", poolsync.display());
    }

    let seed = opts.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let parent = match &opts.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir(),
    };
    let base = parent.join(format!("poolsync-soak-{}", std::process::id()));
    if base.exists() {
        fs::remove_dir_all(&base).with_context(|| format!("removing {}", base.display()))?;
    }
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let base = base
        .canonicalize()
        .with_context(|| format!("resolving {}", base.display()))?;
    let mut writers: Vec<&Writer> = WRITERS
        .iter()
        .filter(|w| {
            opts.only
                .as_ref()
                .is_none_or(|only| only.iter().any(|n| n == w.name))
        })
        .collect();
    if opts.smoke {
        // CI stays green while a known defect waits for its fix; the
        // full soak runs these writers and fails on them.
        for w in writers.iter().filter(|w| w.open_defect.is_some()) {
            println!(
                "soak: {} is left out of this short run: {}",
                w.name,
                w.open_defect.unwrap_or_default()
            );
        }
        writers.retain(|w| w.open_defect.is_none());
    }
    let remote = if writers.iter().any(|w| w.remote) {
        Some(RemoteHost::start(&base.join("sshd"))?)
    } else {
        None
    };
    let cx = Cx {
        poolsync,
        pmempool: util::on_path("pmempool"),
        remote,
    };
    let machine = Machine::probe(&base);
    println!(
        "soak: seed {seed} (repeat with --seed {seed}), {} rounds per writer, {profile} build, \
         {} CPUs, pools on {}, pmempool check {}{}",
        opts.runs,
        machine.cpus,
        machine.filesystem.lines().next().unwrap_or("unknown"),
        if cx.pmempool {
            "after every round"
        } else {
            "skipped (pmempool is not installed)"
        },
        cx.remote.as_ref().map_or(String::new(), |r| format!(
            ", remote replicas over {}",
            r.label
        )),
    );
    util::flush_stdout();

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for writer in writers {
        let started = Instant::now();
        let dir = base.join(writer.name);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut figures = Figures::default();
        let plan = Plan {
            seed,
            runs: opts.runs,
            measure_runs: if opts.smoke { 1 } else { MEASURE_RUNS },
        };
        match soak_writer(&cx, writer, &dir, &plan, &mut figures, &mut failures) {
            Ok(()) => {}
            Err(e) => {
                // The measuring run itself failed: nothing else can be judged.
                figures.failures += 1;
                failures.push(Failure {
                    writer: writer.name,
                    round: 0,
                    seed,
                    what: format!("the uncut measuring run failed: {e:#}"),
                    command: String::new(),
                    stderr: String::new(),
                    kept: dir.join("measure"),
                });
            }
        }
        figures.wall = started.elapsed();
        eprintln!(
            "soak: {}: {} rounds, {} kills, {} failures in {:.0} s",
            writer.name,
            figures.rounds,
            figures.kills,
            figures.failures,
            figures.wall.as_secs_f64()
        );
        rows.push((writer.name, figures));
    }
    drop(cx);

    print!("{}", table(&rows));
    util::flush_stdout();
    if failures.is_empty() {
        fs::remove_dir_all(&base).with_context(|| format!("removing {}", base.display()))?;
        return Ok(());
    }
    for f in &failures {
        eprintln!(
            "\nsoak: FAILURE: writer {}, round {}, seed {}: {}\n  command: {}\n  kept in {}\n  \
             repeat: cargo xtask soak --only {} --seed {} --runs {}\n  stderr:\n{}",
            f.writer,
            f.round,
            f.seed,
            f.what,
            f.command,
            f.kept.display(),
            f.writer,
            f.seed,
            f.round + 1,
            indent(&f.stderr)
        );
    }
    bail!(
        "{} round(s) needed a manual step or ended in a wrong state: {}",
        failures.len(),
        failures
            .iter()
            .map(|f| format!("{} round {}", f.writer, f.round))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn indent(text: &str) -> String {
    if text.trim().is_empty() {
        return "    (nothing)".to_string();
    }
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The figures as a markdown table.
fn table(rows: &[(&str, Figures)]) -> String {
    let mut out = String::from(
        "\n| writer | rounds | kills | completed before kill | finished, then killed | re-runs | max re-runs in a round | waits for a fork | failures | uncut run | wall time |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, f) in rows {
        let kills = if f.remote_kills > 0 {
            format!("{} ({} of the remote end)", f.kills, f.remote_kills)
        } else {
            f.kills.to_string()
        };
        out.push_str(&format!(
            "| `{name}` | {} | {kills} | {} | {} | {} | {} | {} | {} | {:.0} ms | {:.0} s |\n",
            f.rounds,
            f.completed_before_kill,
            f.finished_then_killed,
            f.reruns,
            f.max_reruns,
            f.forks_waited,
            f.failures,
            f.uncut.as_secs_f64() * 1000.0,
            f.wall.as_secs_f64()
        ));
    }
    out
}

/// How many rounds a writer gets, from which seed.
struct Plan {
    seed: u64,
    runs: u32,
    /// Uncut runs that measure the command.
    measure_runs: u32,
}

/// One writer: the measuring runs, then the rounds. Errors only when a
/// measuring run fails; failed rounds go to `failures`.
fn soak_writer(
    cx: &Cx,
    writer: &Writer,
    dir: &Path,
    plan: &Plan,
    figures: &mut Figures,
    failures: &mut Vec<Failure>,
) -> Result<()> {
    util::step(&format!("soak: {} ({})", writer.name, writer.what));
    let seed = plan.seed;
    let whole = measure(cx, writer, dir, seed, plan.measure_runs)?;
    figures.uncut = whole;

    for i in 0..plan.runs {
        let rseed = round_seed(seed, writer.name, i);
        let mut rng = Rng::new(rseed);
        let rdir = fresh(&dir.join(format!("round-{i}")))?;
        let logs = Logs::new(dir, &format!("round-{i}"));
        figures.rounds += 1;
        let outcome = (writer.prepare)(cx, &rdir, &mut rng, i)
            .map_err(|e| {
                (
                    format!("preparing the scenario failed: {e:#}"),
                    String::new(),
                )
            })
            .and_then(|round| {
                let run = Run {
                    writer,
                    round: &round,
                    dir: &rdir,
                    logs: &logs,
                };
                kill_round(cx, &run, &mut rng, whole, figures)
            });
        match outcome {
            Ok(line) => {
                eprintln!("{} round {i}: {line}", writer.name);
                fs::remove_dir_all(&rdir)
                    .with_context(|| format!("removing {}", rdir.display()))?;
                logs.remove();
            }
            Err((what, command)) => {
                figures.failures += 1;
                eprintln!("{} round {i}: FAILURE: {what}", writer.name);
                // Keep the first few for a look; a writer that fails in
                // every round would fill the file system otherwise.
                let kept = if figures.failures <= KEEP_FAILED {
                    rdir
                } else {
                    fs::remove_dir_all(&rdir)
                        .with_context(|| format!("removing {}", rdir.display()))?;
                    PathBuf::from("(removed)")
                };
                failures.push(Failure {
                    writer: writer.name,
                    round: i,
                    seed,
                    what,
                    command,
                    stderr: logs.last_stderr(),
                    kept,
                });
            }
        }
    }
    Ok(())
}

/// Measures how long an uncut run of the writer's command takes: the
/// median of `runs` runs, each on a fresh scenario (a single one may pay
/// for a cold cache). Each run's end state must pass the writer's checks,
/// which proves the checks right before any kill.
fn measure(cx: &Cx, writer: &Writer, dir: &Path, seed: u64, runs: u32) -> Result<Duration> {
    let mut times = Vec::new();
    for m in 0..runs {
        let scenario = fresh(&dir.join("measure"))?;
        let mut rng = Rng::new(round_seed(seed, writer.name, u32::MAX - m));
        let round = (writer.prepare)(cx, &scenario, &mut rng, m)?;
        let logs = Logs::new(dir, "measure");
        let started = Instant::now();
        let status = run_uncut(
            cx,
            &round,
            &scenario,
            &logs.next(),
            Duration::from_secs(600),
        )?;
        let took = started.elapsed();
        if !status.success() {
            bail!(
                "`{}` exited with {status}: {}",
                round.display(),
                logs.last_stderr()
            );
        }
        (round.verify)(cx).context("the uncut run's end state")?;
        times.push(took);
        fs::remove_dir_all(&scenario)
            .with_context(|| format!("removing {}", scenario.display()))?;
        logs.remove();
        if m == 0 {
            eprintln!("{}: `{}`", writer.name, round.display());
        }
    }
    times.sort();
    let whole = times[times.len() / 2];
    eprintln!(
        "{}: uncut runs take {} ms; kills are spread over {:.1} ms",
        writer.name,
        times
            .iter()
            .map(|t| format!("{:.1}", t.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(", "),
        whole.as_secs_f64() * 1000.0
    );
    Ok(whole)
}

/// A fresh, empty directory.
fn fresh(dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// The stderr files of a round's runs, beside (not in) its directory, so
/// that the scenario's directory holds only what poolsync leaves.
struct Logs {
    dir: PathBuf,
    prefix: String,
    count: std::cell::Cell<u32>,
}

impl Logs {
    fn new(dir: &Path, prefix: &str) -> Logs {
        Logs {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            count: std::cell::Cell::new(0),
        }
    }

    /// The stderr file of the next run.
    fn next(&self) -> PathBuf {
        self.count.set(self.count.get() + 1);
        self.path(self.count.get())
    }

    fn path(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{}.run-{n}.stderr", self.prefix))
    }

    /// What the last run printed on stderr.
    fn last_stderr(&self) -> String {
        fs::read_to_string(self.path(self.count.get())).unwrap_or_default()
    }

    fn remove(&self) {
        for n in 1..=self.count.get() {
            let _ = fs::remove_file(self.path(n));
        }
    }
}

/// Starts the round's command with its stderr in `stderr`.
fn spawn(cx: &Cx, round: &Round, dir: &Path, stderr: &Path) -> Result<Child> {
    let err = File::create(stderr).with_context(|| format!("creating {}", stderr.display()))?;
    let mut cmd = Command::new(&cx.poolsync);
    cmd.args(&round.args)
        .envs(round.env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    cmd.spawn()
        .with_context(|| format!("starting `{}`", round.display()))
}

/// Runs the round's command to its end (killing it as a hang after
/// `limit`).
fn run_uncut(
    cx: &Cx,
    round: &Round,
    dir: &Path,
    stderr: &Path,
    limit: Duration,
) -> Result<ExitStatus> {
    let mut child = spawn(cx, round, dir, stderr)?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().context("waiting for poolsync")? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{}` still ran after {limit:?}: a hang", round.display());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// How a run that was to be killed ended.
enum Killed {
    /// The kill landed (the local command, or the remote end).
    Landed { remote: bool },
    /// The command had exited by itself before the timer fired.
    Exited(ExitStatus),
}

/// Starts the command and kills it after `delay` (the local process, or
/// with `remote` the remote end, by the pid its wrapper wrote).
fn run_and_kill(
    cx: &Cx,
    round: &Round,
    dir: &Path,
    stderr: &Path,
    delay: Duration,
    remote: bool,
) -> Result<Killed> {
    if let Some(pid_file) = &round.remote_pid {
        let _ = fs::remove_file(pid_file);
    }
    let mut child = spawn(cx, round, dir, stderr)?;
    let deadline = Instant::now() + delay;
    loop {
        if let Some(status) = child.try_wait().context("waiting for poolsync")? {
            return Ok(Killed::Exited(status));
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(
            Duration::from_micros(200).min(deadline.saturating_duration_since(Instant::now())),
        );
    }
    let remote_pid = remote
        .then_some(round.remote_pid.as_ref())
        .flatten()
        .and_then(|f| fs::read_to_string(f).ok())
        .and_then(|t| t.trim().parse::<u32>().ok());
    if let Some(pid) = remote_pid {
        let _ = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // The local end notices the lost connection and exits (non-zero)
        // by itself; that is the point of this kill, not a failure.
        let waited = Instant::now();
        loop {
            if let Some(status) = child.try_wait().context("waiting for poolsync")? {
                // The remote end may have been done already.
                if status.success() {
                    return Ok(Killed::Exited(status));
                }
                break;
            }
            if waited.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "`{}` still ran a minute after its remote end was killed",
                    round.display()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        return Ok(Killed::Landed { remote: true });
    }
    let _ = child.kill();
    let status = child.wait().context("reaping poolsync")?;
    // It may have finished just before the signal.
    if status.success() {
        Ok(Killed::Exited(status))
    } else {
        Ok(Killed::Landed { remote: false })
    }
}

/// One round on a prepared scenario: kills, re-runs, the final run and the
/// checks. `Ok` is a line for the log; `Err` says what failed and the
/// command line.
/// One round's writer, scenario, directory and logs.
struct Run<'a> {
    writer: &'a Writer,
    round: &'a Round,
    dir: &'a Path,
    logs: &'a Logs,
}

fn kill_round(
    cx: &Cx,
    run: &Run<'_>,
    rng: &mut Rng,
    whole: Duration,
    figures: &mut Figures,
) -> Result<String, (String, String)> {
    let (round, dir, logs) = (run.round, run.dir, run.logs);
    // A run that exited 1 because the killed run had finished: the
    // writer says whether its stderr is that answer (the end state is
    // checked as for any round).
    let finished = |log: &Path| {
        run.writer
            .finished_refusal
            .is_some_and(|says| fs::read_to_string(log).is_ok_and(|t| t.contains(says)))
    };
    let mut line: Vec<String> = Vec::new();
    let fail = |what: String, line: &[String]| {
        let schedule = if line.is_empty() {
            String::new()
        } else {
            format!(" (runs: {})", line.join(", "))
        };
        // A refusal for a lock: say who holds the round's files.
        let holders = holders(dir);
        let holders = if holders.is_empty() {
            String::new()
        } else {
            format!("; files of the round open in: {}", holders.join("; "))
        };
        (format!("{what}{schedule}{holders}"), round.display())
    };
    let kills = 1 + if rng.below(REPEAT_ONE_IN) == 0 {
        1 + rng.below(MORE_KILLS)
    } else {
        0
    };
    let mut runs = 0u32;
    let mut done = false;
    for _ in 0..kills {
        let delay = kill_delay(rng, whole);
        let remote = round.remote_pid.is_some() && rng.below(3) == 0;
        runs += 1;
        let log = logs.next();
        match run_and_kill(cx, round, dir, &log, delay, remote)
            .map_err(|e| fail(format!("{e:#}"), &line))?
        {
            Killed::Landed { remote } => {
                figures.kills += 1;
                if settle(cx, round, dir) {
                    figures.forks_waited += 1;
                }
                if remote {
                    figures.remote_kills += 1;
                }
                line.push(format!(
                    "killed {}at {:.1} ms",
                    if remote { "the remote end " } else { "" },
                    delay.as_secs_f64() * 1000.0
                ));
            }
            Killed::Exited(status) if status.success() => {
                figures.completed_before_kill += 1;
                line.push(format!(
                    "completed before the kill at {:.1} ms",
                    delay.as_secs_f64() * 1000.0
                ));
                done = true;
                break;
            }
            Killed::Exited(_) if runs > 1 && finished(&log) => {
                figures.finished_then_killed += 1;
                line.push("refused as an existing pool: the killed run had finished".to_string());
                done = true;
                break;
            }
            Killed::Exited(status) => {
                return Err(fail(
                    format!(
                        "run {runs} exited with {status} by itself at {:.1} ms at the latest, \
                         after {} kill(s): it needs a manual step",
                        delay.as_secs_f64() * 1000.0,
                        runs - 1
                    ),
                    &line,
                ));
            }
        }
    }
    if !done {
        runs += 1;
        let limit = (whole * HANG_FACTOR).max(HANG_MIN);
        let log = logs.next();
        let status =
            run_uncut(cx, round, dir, &log, limit).map_err(|e| fail(format!("{e:#}"), &line))?;
        if !status.success() && finished(&log) {
            figures.finished_then_killed += 1;
            line.push("refused as an existing pool: the killed run had finished".to_string());
        } else if !status.success() {
            return Err(fail(
                format!(
                    "the final uncut run (run {runs}) exited with {status}: it needs a manual step"
                ),
                &line,
            ));
        }
        line.push("completed".to_string());
    }
    let reruns = runs - 1;
    figures.reruns += reruns;
    figures.max_reruns = figures.max_reruns.max(reruns);
    (round.verify)(cx).map_err(|e| fail(format!("after {runs} run(s): {e:#}"), &line))?;
    Ok(format!("{}; checked", line.join(", ")))
}

/// After a kill: waits (at most [`SETTLE_MAX`]) while a process that
/// still carries the killed command's line has a file of the round open,
/// and says whether it waited. That is a child the killed run had forked
/// to start ssh and that had not reached `exec` yet: until then it holds
/// the pool set file's descriptor, and with it the lock, so a re-run in
/// that moment is refused as "in use" (a fact of fork, not a leftover to
/// repair). The children that did start (ssh, a remote `poolsync serve`)
/// are not waited for.
fn settle(cx: &Cx, round: &Round, dir: &Path) -> bool {
    let mut line = vec![cx.poolsync.display().to_string()];
    line.extend(round.args.iter().cloned());
    let line = line.join(" ");
    let started = Instant::now();
    let mut waited = false;
    while started.elapsed() < SETTLE_MAX {
        let forks = holders(dir).iter().any(|h| {
            h.split_once(" (")
                .is_some_and(|(_, rest)| rest.starts_with(&format!("{line})")))
        });
        if !forks {
            break;
        }
        waited = true;
        std::thread::sleep(Duration::from_millis(1));
    }
    waited
}

/// The processes (pid and command line) that have a file under `dir`
/// open, from `/proc/<pid>/fd`.
fn holders(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in procs.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let open: Vec<String> = fds
            .flatten()
            .filter_map(|fd| fs::read_link(fd.path()).ok())
            .filter(|target| target.starts_with(dir))
            .map(|target| target.display().to_string())
            .collect();
        if !open.is_empty() {
            let cmdline = fs::read(entry.path().join("cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .replace('\0', " ")
                        .trim()
                        .to_string()
                })
                .unwrap_or_default();
            out.push(format!("pid {pid} ({cmdline}): {}", open.join(", ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn options_parse() {
        let o = parse(&[]).unwrap();
        assert_eq!(
            (o.runs, o.only, o.dir, o.seed, o.smoke),
            (200, None, None, None, false)
        );
        assert_eq!(parse(&args(&["--smoke"])).unwrap(), Options::smoke());
        assert_eq!(parse(&args(&["--smoke", "--runs", "7"])).unwrap().runs, 7);
        let o = parse(&args(&[
            "--runs", "5", "--only", "sync,rm", "--dir", "/x", "--seed", "9",
        ]))
        .unwrap();
        assert_eq!(o.runs, 5);
        assert_eq!(o.only, Some(vec!["sync".to_string(), "rm".to_string()]));
        assert_eq!(o.dir, Some(PathBuf::from("/x")));
        assert_eq!(o.seed, Some(9));
        assert!(parse(&args(&["--runs", "0"])).is_err());
        assert!(parse(&args(&["--only", "nonesuch"])).is_err());
        assert!(parse(&args(&["--bogus"])).is_err());
    }

    #[test]
    fn rounds_have_their_own_seeds_whatever_else_runs() {
        assert_eq!(round_seed(1, "sync", 3), round_seed(1, "sync", 3));
        assert_ne!(round_seed(1, "sync", 3), round_seed(1, "sync", 4));
        assert_ne!(round_seed(1, "sync", 3), round_seed(1, "rm", 3));
        assert_ne!(round_seed(1, "sync", 3), round_seed(2, "sync", 3));
    }

    #[test]
    fn kills_spread_over_the_run_and_some_come_early() {
        let mut rng = Rng::new(7);
        let whole = Duration::from_millis(100);
        let delays: Vec<Duration> = (0..600).map(|_| kill_delay(&mut rng, whole)).collect();
        let early = delays.iter().filter(|d| **d < EARLY).count();
        assert!((60..=160).contains(&early), "{early} early kills of 600");
        assert!(delays.iter().all(|d| *d <= whole.mul_f64(1.05)));
        let late = delays.iter().filter(|d| **d > whole.mul_f64(0.8)).count();
        assert!(late > 50, "{late} kills in the last fifth");
    }

    #[test]
    fn holders_of_open_files_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held");
        let _file = File::create(&path).unwrap();
        let found = holders(dir.path());
        let me = format!("pid {} ", std::process::id());
        assert!(
            found
                .iter()
                .any(|h| h.starts_with(&me) && h.contains("held")),
            "{found:?}"
        );
    }

    #[test]
    fn every_writer_has_a_distinct_name() {
        let mut names: Vec<&str> = WRITERS.iter().map(|w| w.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), WRITERS.len());
    }
}
