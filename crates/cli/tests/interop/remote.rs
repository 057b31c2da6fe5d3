//! Remote replicas over a real `sshd` on 127.0.0.1 (`sshd.rs`): `create`
//! seeds the remote pool set, `sync` keeps it current sending only what
//! changed, libpmemobj opens the remote copy by itself, `pmempool check`
//! finds it consistent, nothing is written outside the server's root, and
//! noisy, missing or misdirected peers get one clear error.

use std::fs;
use std::path::{Path, PathBuf};

use crate::sshd::{require_sshd, Sshd};
use crate::support::{objclient, pmempool, poolsync, s, snapshot, temp_dir, Out, MIB};

/// A local pool set of two replicas and its administrator's set file with
/// one remote replica, whose set file waits in the server's root.
pub struct Remote {
    /// The local tree (removed with the value).
    pub _local: tempfile::TempDir,
    pub app: PathBuf,
    pub admin: PathBuf,
    pub remote_set: PathBuf,
    pub remote_parts: Vec<PathBuf>,
}

impl Remote {
    /// Local replicas of `local_mib` (two parts: the halves) and one of
    /// `local_mib` whole; the remote set has two parts of `remote_mib`.
    pub fn new(sshd: &Sshd, local_mib: u64, remote_mib: &[u64]) -> Remote {
        let local = temp_dir();
        let d = local.path();
        let app = d.join("app.set");
        let half = local_mib / 2;
        fs::write(
            &app,
            format!(
                "PMEMPOOLSET\n{half}M {}\n{}M {}\nREPLICA\n{local_mib}M {}\n",
                s(&d.join("a0")),
                local_mib - half,
                s(&d.join("a1")),
                s(&d.join("b0")),
            ),
        )
        .unwrap();
        let admin = d.join("admin.set");
        fs::write(
            &admin,
            format!(
                "{}REPLICA {} pools/standby.set\n",
                fs::read_to_string(&app).unwrap(),
                sshd.node()
            ),
        )
        .unwrap();
        let root = sshd.root();
        let pools = root.join("pools");
        fs::create_dir_all(&pools).unwrap();
        let remote_parts: Vec<PathBuf> = (0..remote_mib.len())
            .map(|i| pools.join(format!("standby.part{i}")))
            .collect();
        let mut text = String::from("PMEMPOOLSET\n");
        for (p, mib) in remote_parts.iter().zip(remote_mib) {
            text.push_str(&format!("{mib}M {}\n", s(p)));
        }
        let remote_set = pools.join("standby.set");
        fs::write(&remote_set, text).unwrap();
        Remote {
            _local: local,
            app,
            admin,
            remote_set,
            remote_parts,
        }
    }

    /// `poolsync ARGS... --rsh .. --remote-path .. ADMIN`.
    pub fn run(&self, sshd: &Sshd, args: &[&str]) -> Out {
        let flags = sshd.flags();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(flags.iter().map(String::as_str));
        all.push(s(&self.admin));
        poolsync(&all)
    }
}

/// The line of `text` that starts with `prefix`.
fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{text}"))
}

/// The number before `what` in `text` (`123 bytes differed`).
fn number_before(text: &str, what: &str) -> u64 {
    let at = text
        .find(what)
        .unwrap_or_else(|| panic!("{what:?} not in {text}"));
    text[..at]
        .split_whitespace()
        .last()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no number before {what:?} in {text}"))
}

#[test]
fn a_remote_replica_is_seeded_kept_current_and_opens_with_libpmemobj() {
    require_pmdk!();
    require_sshd!(sshd);
    let r = Remote::new(&sshd, 32, &[16, 17]);
    let outside = sshd.remote().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("keep"), b"not the server's").unwrap();
    let before_outside = snapshot(&outside);

    r.run(&sshd, &["create", "-v", "obj", "--layout", "remote"])
        .assert_success();
    for p in &r.remote_parts {
        assert!(p.is_file(), "{} was not created", p.display());
    }
    // The remote copy is a pool by itself, of the same pool.
    let check = pmempool(&["check", "-v", s(&r.remote_set)]);
    assert!(check.stdout.contains("consistent"), "{}", check.describe());

    // Data goes into the pool through libpmemobj, then to the remote.
    objclient(&["fill", s(&r.app), "remote", &(4 * MIB).to_string(), "11"]).assert_success();
    let out = r.run(&sshd, &["sync", "-v"]);
    out.assert_success();
    let done = line(&out.stdout, "remote replica ");
    assert!(done.contains("updated"), "{}", out.describe());
    objclient(&[
        "verify",
        s(&r.remote_set),
        "remote",
        &(4 * MIB).to_string(),
        "11",
    ])
    .assert_success();

    // A small change travels as a few blocks, not the pool.
    objclient(&["write", s(&r.app), "remote", "a small change"]).assert_success();
    let out = r.run(&sshd, &["sync", "-v"]);
    out.assert_success();
    let done = line(&out.stdout, "remote replica ");
    let differed = number_before(done, "bytes differed");
    let sent = number_before(done, "bytes sent");
    assert!(differed > 0 && differed <= 256 << 10, "{done}");
    assert!(sent < differed + (64 << 10), "{done}");
    // Nothing to do: current, and said so.
    let out = r.run(&sshd, &["sync", "-v"]);
    out.assert_success();
    // Known without comparing: the sync mark the last update left on the
    // remote host proves the epoch it holds (the `verify` above opened the
    // standby, so that update compared by digests).
    let done = line(&out.stdout, "remote replica ");
    assert!(done.contains("current"), "{done}");
    assert!(done.contains("nothing changed since epoch"), "{done}");
    let check = pmempool(&["check", "-v", s(&r.remote_set)]);
    assert!(check.stdout.contains("consistent"), "{}", check.describe());

    // libpmemobj opens the standby by itself (a failover test), which
    // writes to it; the next sync rewinds what it changed.
    objclient(&["read", s(&r.remote_set), "remote", "a small change"]).assert_success();
    let out = r.run(&sshd, &["sync", "-v"]);
    out.assert_success();
    let done = line(&out.stdout, "remote replica ");
    assert!(number_before(done, "bytes differed") > 0, "{done}");
    assert!(done.contains("by digests"), "{done}");
    assert!(
        done.contains("changed on its host since its last sync")
            && done.contains("rewound to the source"),
        "{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("warning: remote replica"),
        "{}",
        out.describe()
    );

    // A dry run prints the plan with the bytes for the wire and each side.
    objclient(&["write", s(&r.app), "remote", "another change"]).assert_success();
    // check measures the lag and says when the last sync was.
    let out = r.run(&sshd, &["check"]);
    out.assert_success();
    let status = line(&out.stdout, "remote replica ");
    assert!(status.contains("; lag: "), "{}", out.describe());
    assert!(
        status.contains("; last synchronized ") && !status.contains("unknown"),
        "{}",
        out.describe()
    );
    let out = r.run(&sshd, &["info"]);
    out.assert_success();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("last sync") && !l.contains("unknown")),
        "{}",
        out.describe()
    );
    let before = snapshot(r.remote_set.parent().unwrap());
    let out = r.run(&sshd, &["sync", "-d"]);
    out.assert_success();
    assert!(out.stdout.contains("wire: "), "{}", out.describe());
    assert!(out.stdout.contains("remote host: "), "{}", out.describe());
    assert!(
        out.stdout
            .contains("by epochs: its sync mark proves it holds epoch"),
        "{}",
        out.describe()
    );
    crate::support::assert_unchanged(
        &before,
        &snapshot(r.remote_set.parent().unwrap()),
        "dry run",
    );

    // The server wrote nothing outside its root.
    crate::support::assert_unchanged(&before_outside, &snapshot(&outside), "outside the root");
    let remote_files = snapshot(&sshd.remote());
    assert!(
        remote_files
            .keys()
            .all(|f| f.starts_with("root") || f.starts_with("outside")),
        "{remote_files:?}"
    );
}

#[test]
fn noisy_missing_and_misdirected_peers_get_one_clear_error() {
    require_pmdk!();
    require_sshd!(sshd);
    let r = Remote::new(&sshd, 16, &[9, 9]);
    poolsync(&["create", "obj", s(&r.app)]).assert_success();

    // A shell profile that prints a banner on stdout.
    let noisy = sshd.remote_path_with("echo Welcome to b.example.org; ");
    let out = poolsync(&[
        "sync",
        "--rsh",
        &sshd.rsh(),
        "--remote-path",
        &noisy,
        s(&r.admin),
    ]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", out.describe());
    assert!(
        errors[0].contains("Welcome to b.example.org") && errors[0].contains("~/.bashrc"),
        "{}",
        errors[0]
    );

    // No poolsync on the remote host.
    let out = poolsync(&[
        "sync",
        "--rsh",
        &sshd.rsh(),
        "--remote-path",
        "/nonexistent/bin/poolsync",
        s(&r.admin),
    ]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    let err = line(&out.stderr, "error:");
    assert!(
        (err.contains("not found") || err.contains("No such file"))
            && err.contains("--remote-path")
            && err.contains("exit status 127"),
        "{err}"
    );

    // A remote set file that does not exist.
    fs::remove_file(&r.remote_set).unwrap();
    let out = r.run(&sshd, &["sync"]);
    assert_eq!(out.code, Some(1));
    let err = line(&out.stderr, "error:");
    assert!(
        err.contains("no such pool set file under the server's root"),
        "{err}"
    );

    // A remote set file reached through a symlink that leaves the root.
    let outside = sshd.remote().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("standby.set"), "PMEMPOOLSET\n16M /tmp/x\n").unwrap();
    std::os::unix::fs::symlink(outside.join("standby.set"), &r.remote_set).unwrap();
    let before = snapshot(&outside);
    let out = r.run(&sshd, &["sync"]);
    assert_eq!(out.code, Some(1));
    let err = line(&out.stderr, "error:");
    assert!(err.contains("outside the server's root"), "{err}");
    crate::support::assert_unchanged(&before, &snapshot(&outside), "outside the root");
}

#[test]
fn a_killed_sync_converges_whichever_end_dies() {
    require_pmdk!();
    require_sshd!(sshd);
    let r = Remote::new(&sshd, 64, &[33, 33]);
    r.run(&sshd, &["create", "obj", "--layout", "remote"])
        .assert_success();
    objclient(&["fill", s(&r.app), "remote", &(24 * MIB).to_string(), "5"]).assert_success();
    let pid_file = sshd.dir.path().join("serve.pid");
    let remote_path = sshd.remote_path_with(&format!("echo $$ > {}; exec ", s(&pid_file)));
    // Kill the local poolsync or the remote serve at growing delays; every
    // run goes on from what the killed ones left.
    let mut finished = false;
    for (i, delay_ms) in [30u64, 80, 150, 250, 400, 600].into_iter().enumerate() {
        let _ = fs::remove_file(&pid_file);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_poolsync"))
            .args([
                "sync",
                "--no-progress",
                "--rsh",
                &sshd.rsh(),
                "--remote-path",
                &remote_path,
                s(&r.admin),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        if i % 2 == 0 {
            let _ = child.kill();
        } else if let Some(pid) = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        {
            // The remote end, by the pid it wrote.
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
        let status = child.wait().unwrap();
        finished |= status.success();
    }
    let _ = finished;
    let out = r.run(&sshd, &["sync", "-v"]);
    out.assert_success();
    objclient(&[
        "verify",
        s(&r.remote_set),
        "remote",
        &(24 * MIB).to_string(),
        "5",
    ])
    .assert_success();
    let check = pmempool(&["check", "-v", s(&r.remote_set)]);
    assert!(check.stdout.contains("consistent"), "{}", check.describe());
    let _: &Path = &r.admin;
}
