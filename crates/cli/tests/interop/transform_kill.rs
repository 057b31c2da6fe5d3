//! `poolsync transform` killed at every system call that creates, writes,
//! makes durable, removes or chmods a file, by strace's fault injection
//! (`strace -f -e inject=<syscall>:signal=SIGKILL:when=<n>`), for three
//! transforms: adding a replica, adding `SINGLEHDR` and removing it. After
//! each kill the re-run alone must finish the transform: no kill may need
//! a manual step. Then `pmempool check` says consistent, libpmemobj reads
//! the data through the target, and nothing but the target's parts and the
//! two pool set files is left (no journal, no temporary copy).
//!
//! By default each system call is hit at its first and its last
//! occurrence, so that CI stays fast; with `POOLSYNC_KILL_EVERY_SYSCALL=1`
//! (`cargo xtask kill-loop` sets it) at every occurrence.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use crate::support::{
    file_names, objclient, pmempool, poolsync, require_strace, run, s, temp_dir, verdict_line, MIB,
};

/// The system calls killed at: every one by which the transform creates,
/// allocates, writes, makes durable, renames, removes or chmods a file,
/// and the opens and locks before them.
pub const SYSCALLS: &[&str] = &[
    "openat",
    "flock",
    "fallocate",
    "pwrite64",
    "fdatasync",
    "fsync",
    "rename",
    "unlink",
    "chmod",
    "fchmod",
    "fchmodat",
];

/// Seed of the root object's pattern.
const SEED: &str = "4171";

/// One transform of the loop.
struct Scenario {
    name: &'static str,
    /// The source: `OPTION SINGLEHDR`, and replicas of (part name, MiB).
    src: (bool, &'static [&'static [(&'static str, u64)]]),
    /// The target, likewise.
    dst: (bool, &'static [&'static [(&'static str, u64)]]),
    /// Whether the pool is created as the target and transformed into the
    /// source first (a pool that removing `SINGLEHDR` fits into: each part
    /// after the first needs a header page more).
    made_as_target: bool,
}

const TWO_PARTS: &[&[(&str, u64)]] = &[&[("a0", 16), ("a1", 16)]];

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "add a replica",
        src: (false, &[&[("a0", 32)]]),
        dst: (false, &[&[("a0", 32)], &[("b0", 16), ("b1", 20)]]),
        made_as_target: false,
    },
    Scenario {
        name: "add SINGLEHDR",
        src: (false, TWO_PARTS),
        dst: (true, TWO_PARTS),
        made_as_target: false,
    },
    Scenario {
        name: "remove SINGLEHDR",
        src: (true, TWO_PARTS),
        dst: (false, TWO_PARTS),
        made_as_target: true,
    },
];

fn set_text(dir: &Path, (single_hdr, layout): (bool, &[&[(&str, u64)]])) -> String {
    let mut text = String::from("PMEMPOOLSET\n");
    if single_hdr {
        text.push_str("OPTION SINGLEHDR\n");
    }
    for (r, parts) in layout.iter().enumerate() {
        if r > 0 {
            text.push_str("REPLICA\n");
        }
        for (name, mib) in *parts {
            text.push_str(&format!("{mib}M {}\n", s(&dir.join(name))));
        }
    }
    text
}

/// Replaces every file of `to` by a copy of those of `from`.
pub fn restore(from: &Path, to: &Path) {
    for name in file_names(to) {
        fs::remove_file(to.join(name)).expect("clear the work directory");
    }
    for name in file_names(from) {
        fs::copy(from.join(&name), to.join(&name)).expect("restore a file");
    }
}

/// How often an uninterrupted run makes each of [`SYSCALLS`].
fn count_calls(bin: &str, src: &str, dst: &str, trace: &Path) -> BTreeMap<&'static str, u32> {
    count_calls_of(bin, &["transform", src, dst], trace)
}

/// How often an uninterrupted run of poolsync with `args` makes each of
/// [`SYSCALLS`].
pub fn count_calls_of(bin: &str, args: &[&str], trace: &Path) -> BTreeMap<&'static str, u32> {
    let trace_arg = format!("trace={}", SYSCALLS.join(","));
    let mut words = vec!["-f", "-o", s(trace), "-e", &trace_arg, bin];
    words.extend_from_slice(args);
    let out = run(OsStr::new("strace"), &words, None);
    out.assert_success();
    let text = fs::read_to_string(trace).expect("read the trace");
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        // `<pid> <name>(…`; a resumed call (`<… name resumed>`) is not a
        // second call.
        let call = line
            .split_once(' ')
            .map_or(line, |(_, rest)| rest)
            .trim_start();
        if let Some(&name) = SYSCALLS
            .iter()
            .find(|&&name| call.strip_prefix(name).is_some_and(|r| r.starts_with('(')))
        {
            *counts.entry(name).or_insert(0) += 1;
        }
    }
    counts
}

/// Which occurrences of a system call made `count` times are killed at.
pub fn occurrences(count: u32, every: bool) -> Vec<u32> {
    if every {
        (1..=count).collect()
    } else {
        let mut v = vec![1, count];
        v.dedup();
        v.retain(|&n| n >= 1);
        v
    }
}

#[test]
fn kill_at_every_system_call_of_a_transform() {
    require_pmdk!();
    if !require_strace("transform_kill::kill_at_every_system_call_of_a_transform") {
        return;
    }
    let every = std::env::var("POOLSYNC_KILL_EVERY_SYSCALL").is_ok_and(|v| v == "1");
    let bin = env!("CARGO_BIN_EXE_poolsync");
    let nbytes = (12 * MIB).to_string();
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for scenario in &SCENARIOS {
        let dir = temp_dir();
        let work = dir.path().join("work");
        let pristine = dir.path().join("pristine");
        fs::create_dir(&work).expect("work dir");
        fs::create_dir(&pristine).expect("pristine dir");
        let src = work.join("src.set");
        let dst = work.join("dst.set");
        fs::write(&src, set_text(&work, scenario.src)).expect("src.set");
        fs::write(&dst, set_text(&work, scenario.dst)).expect("dst.set");
        let (src, dst) = (s(&src).to_string(), s(&dst).to_string());
        let made = if scenario.made_as_target { &dst } else { &src };
        pmempool(&["create", "obj", "--layout", "tx", made]).assert_success();
        objclient(&["fill", made, "tx", &nbytes, SEED]).assert_success();
        if scenario.made_as_target {
            poolsync(&["transform", &dst, &src]).assert_success();
        }
        restore(&work, &pristine);
        let mut expected: Vec<String> = scenario
            .dst
            .1
            .iter()
            .flat_map(|r| r.iter().map(|(name, _)| (*name).to_string()))
            .chain(["src.set".to_string(), "dst.set".to_string()])
            .collect();
        expected.sort();

        let counts = count_calls(bin, &src, &dst, &dir.path().join("trace"));
        let (mut runs, mut killed) = (0u32, 0u32);
        for (&syscall, &count) in &counts {
            for n in occurrences(count, every) {
                restore(&pristine, &work);
                let inject = format!("inject={syscall}:signal=SIGKILL:when={n}");
                let trace = format!("trace={syscall}");
                let out = run(
                    OsStr::new("strace"),
                    &[
                        "-f",
                        "-o",
                        "/dev/null",
                        "-e",
                        &trace,
                        "-e",
                        &inject,
                        bin,
                        "transform",
                        &src,
                        &dst,
                    ],
                    None,
                );
                runs += 1;
                if out.code != Some(0) {
                    killed += 1;
                }
                let what = format!("{}: killed at {syscall} #{n} of {count}", scenario.name);
                let rerun = poolsync(&["transform", &src, &dst]);
                if rerun.code != Some(0) {
                    failures.push(format!(
                        "{what}: the re-run failed: {}",
                        rerun.stderr.trim()
                    ));
                    continue;
                }
                let check = pmempool(&["check", "-v", &dst]);
                if verdict_line(&check.stdout, &dst).as_deref()
                    != Some(format!("{dst}: consistent").as_str())
                {
                    failures.push(format!("{what}: pmempool check: {}", check.stdout.trim()));
                    continue;
                }
                let left = file_names(&work);
                if left != expected {
                    failures.push(format!("{what}: files left: {left:?}"));
                    continue;
                }
                let verify = objclient(&["verify", &dst, "tx", &nbytes, SEED]);
                if verify.code != Some(0) {
                    failures.push(format!(
                        "{what}: the data does not read back: {}",
                        verify.stderr.trim()
                    ));
                }
            }
        }
        summary.push(format!(
            "{}: system calls {counts:?}; {runs} runs, {killed} killed",
            scenario.name
        ));
    }
    eprintln!("{}\n{} failure(s)", summary.join("\n"), failures.len());
    assert!(
        failures.is_empty(),
        "kills that needed a manual step or left a bad pool:\n{}",
        failures.join("\n")
    );
}
