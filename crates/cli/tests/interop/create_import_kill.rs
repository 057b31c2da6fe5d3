//! `poolsync create` and `poolsync import` killed at every system call
//! that creates, writes, makes durable, removes or chmods a file, by
//! strace's fault injection, as `transform_kill` does for transforms
//! (issue 15, defect 3). After each kill the same command run again must
//! finish the job: no kill may need a manual step. Then `pmempool check`
//! says consistent, the directory holds what an uninterrupted run leaves
//! (no journal, no record of deleted packet files, no packet file), and
//! for an import libpmemobj reads the source's data through the
//! destination.
//!
//! By default each system call is hit at its first and its last
//! occurrence; with `POOLSYNC_KILL_EVERY_SYSCALL=1` at every occurrence.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use crate::support::{
    file_names, objclient, pmempool, poolsync, require_strace, run, s, temp_dir, verdict_line, MIB,
};
use crate::transform_kill::{count_calls_of, occurrences, restore};

/// Seed of the source's root object pattern.
const SEED: &str = "5233";

/// Kills `poolsync <args>` (run in `work`, restored from `pristine` before
/// each run) at each chosen occurrence of each system call, runs it again,
/// and asks `check` about the end; returns the failures and a summary.
fn kill_everywhere(
    label: &str,
    args: &[&str],
    (pristine, work, trace): (&Path, &Path, &Path),
    check: &dyn Fn() -> Result<(), String>,
) -> (Vec<String>, String) {
    let every = std::env::var("POOLSYNC_KILL_EVERY_SYSCALL").is_ok_and(|v| v == "1");
    let bin = env!("CARGO_BIN_EXE_poolsync");
    restore(pristine, work);
    let counts = count_calls_of(bin, args, trace);
    check().unwrap_or_else(|e| panic!("{label}: the uncut run: {e}"));
    let mut failures = Vec::new();
    let (mut runs, mut killed) = (0u32, 0u32);
    for (&syscall, &count) in &counts {
        for n in occurrences(count, every) {
            restore(pristine, work);
            let inject = format!("inject={syscall}:signal=SIGKILL:when={n}");
            let trace = format!("trace={syscall}");
            let mut words = vec!["-f", "-o", "/dev/null", "-e", &trace, "-e", &inject, bin];
            words.extend_from_slice(args);
            let out = run(OsStr::new("strace"), &words, None);
            runs += 1;
            let what = format!("{label}: killed at {syscall} #{n} of {count}");
            if out.code == Some(0) {
                // Not killed after all (the occurrence never came).
                if let Err(e) = check() {
                    failures.push(format!("{what}: not killed, and then: {e}"));
                }
                continue;
            }
            killed += 1;
            let rerun = poolsync(args);
            if rerun.code != Some(0) {
                failures.push(format!(
                    "{what}: the re-run failed: {}",
                    rerun.stderr.trim()
                ));
                continue;
            }
            if let Err(e) = check() {
                failures.push(format!("{what}: {e}"));
            }
        }
    }
    (
        failures,
        format!("{label}: system calls {counts:?}; {runs} runs, {killed} killed"),
    )
}

/// `pmempool check -v` calls `set` consistent.
fn consistent(set: &str) -> Result<(), String> {
    let check = pmempool(&["check", "-v", set]);
    match verdict_line(&check.stdout, set) {
        Some(v) if v == format!("{set}: consistent") => Ok(()),
        _ => Err(format!("pmempool check: {}", check.stdout.trim())),
    }
}

/// The names in `dir` are exactly `expected`.
fn only(dir: &Path, expected: &[&str]) -> Result<(), String> {
    let left = file_names(dir);
    let mut want: Vec<String> = expected.iter().map(|e| (*e).to_string()).collect();
    want.sort();
    if left == want {
        Ok(())
    } else {
        Err(format!("files left: {left:?}, expected {want:?}"))
    }
}

#[test]
fn kill_at_every_system_call_of_create_and_import() {
    require_pmdk!();
    if !require_strace("create_import_kill::kill_at_every_system_call_of_create_and_import") {
        return;
    }
    let dir = temp_dir();
    let root = dir.path();
    let mut failures = Vec::new();
    let mut summary = Vec::new();

    // create: three parts in two replicas.
    let (pristine, work) = (root.join("c-pristine"), root.join("c"));
    fs::create_dir(&pristine).unwrap();
    fs::create_dir(&work).unwrap();
    let set = work.join("pool.set");
    fs::write(
        pristine.join("pool.set"),
        format!(
            "PMEMPOOLSET\n16M {0}/a0\n16M {0}/a1\nREPLICA\n32M {0}/b0\n",
            work.display()
        ),
    )
    .unwrap();
    let set_s = s(&set).to_string();
    let (f, line) = kill_everywhere(
        "create",
        &["create", "obj", "--layout", "kill", &set_s],
        (&pristine, &work, &root.join("c-trace")),
        &|| {
            consistent(&set_s)?;
            only(&work, &["a0", "a1", "b0", "pool.set"])
        },
    );
    failures.extend(f);
    summary.push(line);

    // import: a source with libpmemobj data, a packet of several files.
    let src_dir = root.join("src");
    fs::create_dir(&src_dir).unwrap();
    let src = src_dir.join("src.set");
    fs::write(&src, format!("PMEMPOOLSET\n32M {}/s0\n", src_dir.display())).unwrap();
    let src_s = s(&src).to_string();
    let nbytes = (12 * MIB).to_string();
    pmempool(&["create", "obj", "--layout", "kill", &src_s]).assert_success();
    objclient(&["fill", &src_s, "kill", &nbytes, SEED]).assert_success();
    let (pristine, work) = (root.join("i-pristine"), root.join("i"));
    fs::create_dir(&pristine).unwrap();
    fs::create_dir(&work).unwrap();
    let dest = work.join("dest.set");
    let dest_s = s(&dest).to_string();
    fs::write(
        pristine.join("dest.set"),
        format!("PMEMPOOLSET\n20M {0}/d0\n13M {0}/d1\n", work.display()),
    )
    .unwrap();
    let packet = pristine.join("p.pkt");
    poolsync(&[
        "export",
        "--no-progress",
        "--max-size",
        "6m",
        "--out",
        s(&packet),
        &src_s,
        "b",
    ])
    .assert_success();
    let files: Vec<String> = file_names(&pristine)
        .into_iter()
        .filter(|n| n.starts_with("p.pkt"))
        .collect();
    assert!(files.len() >= 2, "{files:?}");
    let named: Vec<String> = files.iter().map(|n| s(&work.join(n)).to_string()).collect();
    let mut args = vec!["import", "--no-progress", dest_s.as_str()];
    args.extend(named.iter().map(String::as_str));
    let verify = || {
        consistent(&dest_s)?;
        only(&work, &["d0", "d1", "dest.set", "dest.set.poolsync-state"])?;
        let read = objclient(&["verify", &dest_s, "kill", &nbytes, SEED]);
        if read.code == Some(0) {
            Ok(())
        } else {
            Err(format!(
                "the data does not read back: {}",
                read.stderr.trim()
            ))
        }
    };
    let (f, line) = kill_everywhere(
        "import (seeding)",
        &args,
        (&pristine, &work, &root.join("i-trace")),
        &verify,
    );
    failures.extend(f);
    summary.push(line);

    eprintln!("{}\n{} failure(s)", summary.join("\n"), failures.len());
    assert!(
        failures.is_empty(),
        "kills that needed a manual step or left a bad pool:\n{}",
        failures.join("\n")
    );
}
