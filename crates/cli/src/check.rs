//! `poolsync check`: `pmempool check [<args>] <file>` for obj pools and pool
//! sets, with pmempool's messages, questions, verdicts and exit codes, or
//! `--json`.
//!
//! `--data` replaces the header check with heap-aware verification of the
//! replicas' live data (`poolsync_engine::verify`): one line per divergent
//! range, nothing when the data is consistent, exit 1 on any divergence.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};
use poolsync_engine::check::{
    self, Answer, CheckOptions, CheckResult, CheckUi, Message, MessageKind,
};
use poolsync_engine::compare::CompareOptions;
use poolsync_engine::inspect::{self, Health};
use poolsync_engine::open;
use poolsync_engine::verify::{self, Divergence, Findings, SourceChoice, Verdict, VerifyOptions};
use poolsync_pmem::{Access, AnyStorage, PersistMode};
use serde::Serialize;

use crate::diagnose::{explain, feature_note, new_replica_note, shell_quote, sync_fix, Waiting};
use crate::output::{emit_json, out, outln};
use crate::settings::Settings;
use poolsync_engine::exec::Tuning;
use poolsync_engine::remote::status::{remote_status, RemoteStatus, StatusOptions};

/// Arguments of `poolsync check` (pmempool syntax).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Try to repair the pool if possible
    #[arg(short = 'r', long = "repair")]
    repair: bool,
    /// Answer yes to all questions
    #[arg(short = 'y', long = "yes")]
    yes: bool,
    /// Do not write anything, just show what would be done (requires -r)
    #[arg(short = 'd', long = "dry-run")]
    dry_run: bool,
    /// Same as -d (deprecated pmempool spelling)
    #[arg(short = 'N', long = "no-exec", hide = true)]
    no_exec: bool,
    /// Back up the pool before repairing (not supported yet)
    #[arg(short = 'b', long = "backup", value_name = "FILE")]
    backup: Option<PathBuf>,
    /// Perform advanced repairs (regenerate header checksums)
    #[arg(short = 'a', long = "advanced")]
    advanced: bool,
    /// Be quiet and print no messages
    #[arg(short = 'q', long = "quiet", overrides_with = "verbose")]
    quiet: bool,
    /// Print every step
    #[arg(short = 'v', long = "verbose", overrides_with = "quiet")]
    verbose: bool,
    /// Print a JSON document instead of text (see docs/json.md)
    #[arg(long = "json")]
    json: bool,
    /// Instead of the header check, compare the live data (heap-aware) of every
    /// replica with the source
    #[arg(long = "data", conflicts_with_all = ["repair", "dry_run", "no_exec", "backup", "advanced"])]
    data: bool,
    /// With --data: compare with replica N instead of the first healthy replica
    #[arg(long = "source", value_name = "N", requires = "data")]
    source: Option<usize>,
    /// With --data: show progress on stderr (default when stderr is a terminal)
    #[arg(long = "progress", overrides_with = "no_progress", requires = "data")]
    progress: bool,
    /// With --data: never show progress
    #[arg(long = "no-progress", overrides_with = "progress", requires = "data")]
    no_progress: bool,
    /// With --data: worker threads that compare (default: the jobs setting, else
    /// the machine's parallelism, at most 8)
    #[arg(short = 'j', long = "jobs", value_name = "N", requires = "data", value_parser = crate::settings::jobs_flag)]
    jobs: Option<String>,
    /// Wait up to SECONDS while another process has the pool open (default: the
    /// wait_lock setting, 0)
    #[arg(long = "wait-lock", value_name = "SECONDS", value_parser = crate::settings::wait_lock_flag)]
    wait_lock: Option<String>,
    #[command(flatten)]
    remote: crate::transport::RemoteArgs,
    /// The pool file or pool set file
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// pmempool's verbosity: 0 with `-q`, 1 by default, 2 with `-v`.
fn level(args: &Args) -> u8 {
    if args.quiet {
        0
    } else if args.verbose {
        2
    } else {
        1
    }
}

/// Prints messages as pmempool does and asks questions on the terminal.
struct Terminal {
    level: u8,
    json: bool,
}

impl CheckUi for Terminal {
    fn message(&mut self, message: &Message) {
        if self.json {
            return;
        }
        let shown = match message.kind {
            MessageKind::Info => self.level >= 2,
            MessageKind::Error => self.level >= 1,
            MessageKind::Question => true,
        };
        if shown {
            outln!("{}", message.text);
        }
    }

    fn ask(&mut self, question: &str) -> Answer {
        // With --json, stdout carries the document: ask on stderr.
        let mut prompt: Box<dyn Write> = if self.json {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        };
        let stdin = std::io::stdin();
        let is_tty = stdin.is_terminal();
        loop {
            let _ = write!(prompt, "{question} [Y/n] ");
            let _ = prompt.flush();
            let mut line = String::new();
            let read = stdin.lock().read_line(&mut line);
            let answer = match read {
                Ok(0) | Err(_) => {
                    eprintln!("error: input is empty");
                    None
                }
                Ok(_) => parse_answer(&line),
            };
            match answer {
                Some(Ok(a)) => {
                    if !is_tty {
                        let _ = writeln!(prompt, "{}", if a == Answer::Yes { 'y' } else { 'n' });
                    }
                    return a;
                }
                // Not yes or no: ask again, as pmempool does.
                Some(Err(())) => continue,
                None => {
                    if !is_tty {
                        let _ = writeln!(prompt, "?");
                    }
                    return Answer::Invalid;
                }
            }
        }
    }
}

/// pmempool's answers: `yes`, `no`, `y`, `n` (first letter in any case),
/// or an empty line for the default, yes.
fn parse_answer(line: &str) -> Option<Result<Answer, ()>> {
    let text = line.strip_suffix('\n').unwrap_or(line);
    let mut chars = text.chars();
    let first = chars.next().map(|c| c.to_ascii_lowercase());
    let rest: String = chars.collect();
    let answer = match (first, rest.as_str()) {
        (None, _) => Answer::Yes,
        (Some('y'), "" | "es") => Answer::Yes,
        (Some('n'), "" | "o") => Answer::No,
        _ => return Some(Err(())),
    };
    Some(Ok(answer))
}

/// The `--json` document of a check that could not run.
#[derive(Debug, Serialize)]
struct Failure<'a> {
    path: &'a Path,
    result: &'static str,
    exit_code: u8,
    error: String,
    /// The set as `sync` judges it, when it could be opened at all (a part
    /// missing or of the wrong size makes `check` fail, not `inspect`).
    health: Option<&'a Health>,
    /// The command that repairs what was found, if any.
    fix: Option<String>,
}

/// The `--json` document of a check.
#[derive(Debug, Serialize)]
struct Report<'a> {
    path: &'a Path,
    exit_code: u8,
    /// The command that repairs what was found, if any.
    fix: Option<String>,
    #[serde(flatten)]
    report: &'a check::CheckReport,
    /// Each remote replica: health judged on its host, and lag (absent
    /// without remote replicas).
    #[serde(skip_serializing_if = "<[RemoteStatus]>::is_empty")]
    remotes: &'a [RemoteStatus],
}

impl Args {
    /// `--json` was given.
    pub fn json(&self) -> bool {
        self.json
    }

    /// The file the command works on.
    pub fn path(&self) -> &Path {
        &self.file
    }
}

/// Runs the command; `Ok` carries the exit code.
pub fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let wait = settings.wait_lock(args.wait_lock.as_deref())?;
    if args.data {
        let threads = settings.jobs(args.jobs.as_deref())?;
        return run_data(&args, settings, threads, wait);
    }
    let dry_run = args.dry_run || args.no_exec;
    if dry_run && !args.repair {
        bail!("'-d' (dry run) requires '-r'");
    }
    if args.backup.is_some() && !args.repair {
        bail!("'-b' option requires '-r'");
    }
    if args.backup.is_some() {
        bail!(
            "check -b|--backup is not supported yet: copy the part files yourself before repairing"
        );
    }
    let opts = CheckOptions {
        repair: args.repair,
        dry_run,
        advanced: args.advanced,
        always_yes: args.yes,
    };
    let level = level(&args);
    let mut ui = Terminal {
        level,
        json: args.json,
    };
    let what = if args.repair {
        "repairing failed"
    } else {
        "checking consistency failed"
    };
    let access = if opts.repair && !opts.dry_run {
        Access::ReadWrite
    } else {
        Access::ReadOnly
    };
    let checked = crate::wait::open(&page_cache(), &args.file, access, wait)
        .and_then(|set| check::check_open(&set, &opts, &mut ui));
    let report = match checked {
        Ok(report) => report,
        Err(e) => {
            // A part missing or of the wrong size stops check, but sync
            // knows what to do with it: judge the set as sync does.
            let health = open::open(&page_cache(), &args.file, Access::ReadOnly)
                .ok()
                .map(|set| inspect::inspect(&set));
            let fix = health.as_ref().and_then(|h| sync_fix(h, &args.file));
            let mut message = format!(
                "{what}: {}",
                explain(e, &args.file, Waiting::Supported(wait))
            );
            if let Some(note) = crate::diagnose::interrupted_create_note(&page_cache(), &args.file)
            {
                message.push_str(&format!("; {note}"));
            } else if let Some((advice, _)) = &fix {
                message.push_str(&format!("; {advice}"));
            } else if let Some(note) = health
                .as_ref()
                .and_then(|h| new_replica_note(h, &args.file))
            {
                message.push_str(&format!("; {note}"));
            }
            if args.json {
                emit_json(
                    "check",
                    &Failure {
                        path: &args.file,
                        result: "error",
                        exit_code: 1,
                        error: message.clone(),
                        health: health.as_ref(),
                        fix: fix.map(|(_, command)| command),
                    },
                )?;
            }
            return Err(anyhow!(message));
        }
    };
    let remotes = remotes_of(&args, settings, false, settings.jobs(None)?)?;
    let (remote_text, remotes_ok) = remote_lines(&remotes, false);
    let code: u8 = if report.result.is_success() && remotes_ok {
        0
    } else {
        1
    };
    // The health was judged before any repair: after one, it is stale.
    let fix = match report.result {
        CheckResult::Consistent | CheckResult::Repaired => None,
        _ => sync_fix(&report.health, &args.file),
    };
    if args.json {
        emit_json(
            "check",
            &Report {
                path: &args.file,
                exit_code: code,
                fix: fix.map(|(_, command)| command),
                report: &report,
                remotes: &remotes,
            },
        )?;
    } else {
        let shown = match report.result {
            CheckResult::Consistent => level >= 2,
            _ => level >= 1,
        };
        if shown {
            outln!("{}: {}", args.file.display(), report.result);
        }
        if let (Some((advice, _)), true) = (&fix, level >= 1) {
            eprintln!("note: {advice}");
        } else if let (Some(note), true, false) = (
            feature_note(&report.health, &args.file),
            level >= 1,
            report.result.is_success(),
        ) {
            eprintln!("note: {note}");
        }
        if level >= 1 {
            out!("{remote_text}");
        }
    }
    Ok(ExitCode::from(code))
}

/// The `--json` document of `check --data`.
#[derive(Debug, Serialize)]
struct DataReport<'a> {
    path: &'a Path,
    data: bool,
    result: &'static str,
    exit_code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    findings: Option<&'a Findings>,
    /// Worker threads used to compare (`--jobs`, the `jobs` setting).
    jobs: usize,
    /// The command that repairs what was found, if any.
    fix: Option<String>,
    /// Each remote replica: health, and its live data compared by digests
    /// (absent without remote replicas).
    #[serde(skip_serializing_if = "<[RemoteStatus]>::is_empty")]
    remotes: &'a [RemoteStatus],
}

/// The remote replicas of `file` as `check` reports them (none for a
/// file without `REPLICA host set` lines).
fn remotes_of(
    args: &Args,
    settings: &Settings,
    live_only: bool,
    threads: usize,
) -> anyhow::Result<Vec<RemoteStatus>> {
    let connector = args.remote.connector(settings)?;
    let options = StatusOptions {
        compare: true,
        live_only,
        tuning: Tuning {
            stride: poolsync_engine::compare::DEFAULT_STRIDE,
            threads,
        },
    };
    let progress = crate::progress::reporter("check", args.no_progress, args.progress);
    let found = remote_status(
        &page_cache(),
        &args.file,
        &connector,
        &options,
        progress.as_ref(),
    );
    progress.finish();
    // Each remote replica's own failure is in its status; a failure here
    // (the set cannot be opened again) must not pass for "no remotes".
    anyhow::Context::with_context(found, || {
        format!("{}: cannot judge the remote replicas", args.file.display())
    })
}

/// One line per remote replica; `true` when every one is consistent (and,
/// for `--data`, its live data equals the source's).
fn remote_lines(remotes: &[RemoteStatus], data: bool) -> (String, bool) {
    let mut text = String::new();
    let mut ok = true;
    for r in remotes {
        let line = if let Some(e) = &r.error {
            ok = false;
            format!("remote replica {}: cannot be checked: {e}", r.remote)
        } else if !r.healthy {
            ok = false;
            format!(
                "remote replica {}: not consistent (judged on the remote host): {}",
                r.remote,
                r.verdicts.join("; ")
            )
        } else {
            let lag = match &r.lag {
                Some(l) if l.blocks == 0 => format!(
                    "; {} equal to replica {} ({} bytes compared by digests)",
                    if l.live_only {
                        "its live data is"
                    } else {
                        "current:"
                    },
                    l.source,
                    l.bytes_compared
                )
                .replace("current: equal", "current, equal"),
                Some(l) => {
                    if data {
                        ok = false;
                    }
                    format!(
                        "; lag: {} block(s), {} bytes of {} differ from replica {} (changed since its last sync)",
                        l.blocks,
                        l.bytes,
                        if l.live_only { "live data" } else { "the pool" },
                        l.source
                    )
                }
                None => String::new(),
            };
            format!(
                "remote replica {}: consistent (judged on the remote host){lag}; last synchronized {}",
                r.remote,
                crate::output::last_sync_text(r)
            )
        };
        text.push_str(&line);
        text.push('\n');
    }
    (text, ok)
}

/// `check --data`: heap-aware comparison of every replica with the source.
fn run_data(
    args: &Args,
    settings: &Settings,
    threads: usize,
    wait: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let options = VerifyOptions {
        source: args.source,
        compare: CompareOptions {
            threads,
            ..CompareOptions::default()
        },
        ..VerifyOptions::default()
    };
    let what = "checking data failed";
    // check --data only reads, so retrying the whole call is safe.
    let progress = crate::progress::reporter("check --data", args.no_progress, args.progress);
    let checked = crate::wait::retry(wait, || {
        verify::check_data(&page_cache(), &args.file, &options, progress.as_ref())
    });
    let findings = match checked {
        Ok(f) => f,
        Err(e) => {
            let message = format!(
                "{what}: {}",
                explain(e, &args.file, Waiting::Supported(wait))
            );
            if args.json {
                let doc = DataReport {
                    path: &args.file,
                    data: true,
                    result: "error",
                    exit_code: 1,
                    error: Some(message.clone()),
                    findings: None,
                    jobs: threads,
                    fix: None,
                    remotes: &[],
                };
                emit_json("check", &doc)?;
            }
            return Err(anyhow!(message));
        }
    };
    let remotes = remotes_of(args, settings, true, threads)?;
    let (remote_text, remotes_ok) = remote_lines(&remotes, true);
    let clean = findings.is_clean() && remotes_ok;
    let code: u8 = if clean { 0 } else { 1 };
    let fix = data_fix(&findings, &args.file);
    if args.json {
        let doc = DataReport {
            path: &args.file,
            data: true,
            result: if clean {
                "consistent"
            } else {
                "not_consistent"
            },
            exit_code: code,
            error: None,
            findings: Some(&findings),
            jobs: threads,
            fix: fix.and_then(|(_, command)| command),
            remotes: &remotes,
        };
        emit_json("check", &doc)?;
        return Ok(ExitCode::from(code));
    }
    let level = level(args);
    if level >= 1 {
        out!("{remote_text}");
    }
    if findings.replicas.len() < 2 && remotes.is_empty() {
        if level >= 1 {
            outln!(
                "{}: nothing to compare: check --data compares the replicas of a pool set \
                 with each other, and this pool has a single replica",
                args.file.display()
            );
        }
        return Ok(ExitCode::from(code));
    }
    if level >= 1 {
        out!("{}", findings_text(&findings));
    }
    if !clean && level >= 1 || level >= 2 {
        outln!("{}: {}", args.file.display(), summary_text(&findings));
    }
    if let (Some((advice, _)), true) = (&fix, level >= 1) {
        eprintln!("note: {advice}");
    }
    Ok(ExitCode::from(code))
}

/// What repairs the findings of `check --data`, and the command: `sync
/// --verify` repairs divergent ranges (and, before that, rebuilds broken
/// replicas, which plain `sync` does too); an outvoted source needs a
/// choice of source first, and so does a difference nothing decides (the
/// advice then names no command, since only the administrator can tell
/// which copy is right).
fn data_fix(f: &Findings, poolset: &Path) -> Option<(String, Option<String>)> {
    let set = shell_quote(poolset);
    if let Some(o) = &f.outvoted {
        let take = o.majority.first()?;
        let command = format!("poolsync sync --verify --source {take} {set}");
        return Some((
            format!(
                "to spread replica {}'s data anyway, run `poolsync sync --verify --force-source {set}`; \
                 to take the majority's copy, run `{command}`",
                o.replica
            ),
            Some(command),
        ));
    }
    if let Some(t) = &f.tie {
        let pair: Vec<String> = t.replicas.iter().map(|r| r.to_string()).collect();
        return Some((
            format!(
                "nothing tells which of replicas {} is right: find out which copy holds the \
                 good data (e.g. read each replica alone), then run \
                 `poolsync sync --verify --source N {set}` to copy from replica N",
                pair.join(" and ")
            ),
            None,
        ));
    }
    let others = |pick: &dyn Fn(&verify::ReplicaFindings) -> bool| -> Vec<String> {
        f.replicas
            .iter()
            .filter(|r| r.replica != f.source && pick(r))
            .map(|r| r.replica.to_string())
            .collect()
    };
    let divergent = others(&|r| r.ranges > 0);
    let broken = others(&|r| !r.compared);
    let source = match f.source_choice {
        SourceChoice::Requested => format!("--source {} ", f.source),
        _ => String::new(),
    };
    let (what, command) = if !divergent.is_empty() {
        (
            format!(
                "repair replica(s) {} from replica {}",
                divergent.join(", "),
                f.source
            ),
            format!("poolsync sync --verify {source}{set}"),
        )
    } else if !broken.is_empty() {
        (
            format!(
                "rebuild replica(s) {} from replica {}",
                broken.join(", "),
                f.source
            ),
            format!("poolsync sync {source}{set}"),
        )
    } else {
        return None;
    };
    Some((format!("{what}: run `{command}`"), Some(command)))
}

/// Replica indexes as `0, 2`.
fn list(replicas: &[usize]) -> String {
    replicas
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why the source is not the lowest-index healthy replica, if that is why.
pub fn source_choice_text(f: &Findings) -> Option<String> {
    match &f.source_choice {
        SourceChoice::Heap {
            instead_of,
            problem,
        } => Some(format!(
            "replica {instead_of}'s heap fails the structural checks ({problem}); \
             replica {}'s passes and is the source instead",
            f.source
        )),
        SourceChoice::Default | SourceChoice::Requested => None,
    }
}

/// How a replica's heap is doing, and the source choice; then one line
/// per divergent range, per replica not compared, and for the majority
/// rule's verdict.
pub fn findings_text(f: &Findings) -> String {
    let mut out = String::new();
    if let Some(line) = source_choice_text(f) {
        out.push_str(&line);
        out.push('\n');
    }
    for rf in &f.replicas {
        if let (false, Some(note), true) = (rf.compared, &rf.note, rf.replica != f.source) {
            out.push_str(&format!("replica {}: {note}\n", rf.replica));
        }
        for d in &rf.divergences {
            out.push_str(&divergence_text(d, f.source));
            out.push('\n');
        }
        if rf.ranges > rf.divergences.len() as u64 {
            out.push_str(&format!(
                "replica {}: {} more divergent range(s) not listed\n",
                rf.replica,
                rf.ranges - rf.divergences.len() as u64
            ));
        }
    }
    if let Some(o) = &f.outvoted {
        out.push_str(&format!(
            "replica {} (the source) is outvoted: replicas {} agree with each other and not with it in {} range(s), {} bytes\n",
            o.replica,
            list(&o.majority),
            o.ranges,
            o.bytes
        ));
        for d in &o.divergences {
            out.push_str("  ");
            out.push_str(&divergence_text(
                d,
                o.majority.first().copied().unwrap_or(f.source),
            ));
            out.push('\n');
        }
    }
    out
}

/// One divergent range of replica `d.replica` against `source`, worded by
/// its verdict: who is right and why, or that nothing tells. Then the
/// part files and offsets.
///
/// `replica R: logical [a, b), N bytes: OWNER; WHY; replica R part P (path) at file offset X; ...`
/// or, undecided, `replicas S and R differ at logical [a, b), ...`.
pub fn divergence_text(d: &Divergence, source: usize) -> String {
    let range = format!(
        "logical [{:#x}, {:#x}), {} bytes: {}",
        d.offset,
        d.offset.saturating_add(d.len),
        d.len,
        d.owner
    );
    let r = d.replica;
    let head = match &d.verdict {
        Verdict::Tie => {
            format!("replicas {source} and {r} differ at {range}; nothing tells which one is right")
        }
        Verdict::Majority { agree } => format!(
            "replica {r}: {range}; replicas {} agree on the other copy",
            list(agree)
        ),
        Verdict::Heap { problem } => format!(
            "replica {r}: {range}; replica {r}'s heap fails the structural checks ({problem}) \
             and replica {source}'s passes"
        ),
        Verdict::Outvoted { majority } => format!(
            "replicas {source} and {r} differ at {range}; replicas {} agree with each other \
             and not with replica {source}",
            list(majority)
        ),
        Verdict::Chosen { outvoted_by } if outvoted_by.is_empty() => {
            format!("replica {r}: {range}; replica {source}'s copy is chosen")
        }
        Verdict::Chosen { outvoted_by } => format!(
            "replica {r}: {range}; replica {source}'s copy is chosen (--force-source), \
             although replicas {} agree with each other",
            list(outvoted_by)
        ),
    };
    let places: Vec<String> = d
        .locations
        .iter()
        .map(|l| {
            format!(
                "replica {} part {} ({}) at file offset {:#x}",
                l.replica,
                l.part,
                l.path.display(),
                l.file_offset
            )
        })
        .collect();
    format!("{head}; {}", places.join("; "))
}

/// `data consistent (...)` or the counts of what diverges: the replicas
/// that a majority, the heap or a choice of source says are wrong, and the
/// pairs that differ where nothing decides.
pub fn summary_text(f: &Findings) -> String {
    let compared = f.replicas.iter().filter(|r| r.compared).count();
    if f.is_clean() {
        return format!(
            "data consistent: {compared} replica(s) compared with replica {} over {} live bytes ({} objects)",
            f.source, f.live_bytes, f.objects
        );
    }
    let mut parts: Vec<String> = Vec::new();
    for r in f.replicas.iter().filter(|r| r.ranges > 0) {
        let decided = r.ranges - r.undecided_ranges;
        if decided > 0 {
            let right = if f.outvoted.is_some() {
                String::new()
            } else {
                format!(", where replica {} is right", f.source)
            };
            parts.push(format!(
                "replica {} differs from replica {} in {decided} range(s), {} bytes{right}",
                r.replica,
                f.source,
                r.bytes - r.undecided_bytes,
            ));
        }
        if r.undecided_ranges > 0 {
            parts.push(format!(
                "replicas {} and {} differ in {} range(s), {} bytes, and nothing tells which one is right",
                f.source, r.replica, r.undecided_ranges, r.undecided_bytes
            ));
        }
    }
    let mut text = String::from("data not consistent");
    if !parts.is_empty() {
        text.push_str(&format!(": {}", parts.join("; ")));
    }
    let skipped = f
        .replicas
        .iter()
        .filter(|r| !r.compared && r.replica != f.source)
        .count();
    if skipped > 0 {
        text.push_str(&format!("; {skipped} broken replica(s) not compared"));
    }
    if let Some(o) = &f.outvoted {
        text.push_str(&format!(
            "; replica {}, the source, is outvoted by replicas {}",
            o.replica,
            list(&o.majority)
        ));
    }
    text
}

/// The storage `check` reads (and `check -r` writes) through: the page
/// cache for files, a mapping for a Device DAX, which has no page cache.
fn page_cache() -> AnyStorage {
    AnyStorage::new(PersistMode::PageCache)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_follow_pmempool() {
        assert_eq!(parse_answer("\n"), Some(Ok(Answer::Yes)));
        assert_eq!(parse_answer("y\n"), Some(Ok(Answer::Yes)));
        assert_eq!(parse_answer("Yes\n"), Some(Ok(Answer::Yes)));
        assert_eq!(parse_answer("n\n"), Some(Ok(Answer::No)));
        assert_eq!(parse_answer("No\n"), Some(Ok(Answer::No)));
        assert_eq!(parse_answer("maybe\n"), Some(Err(())));
        assert_eq!(parse_answer("yess\n"), Some(Err(())));
    }
}
