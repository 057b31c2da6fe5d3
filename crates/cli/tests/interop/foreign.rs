//! Issue 15, defects 1 and 4: a file that is not provably the pool's is
//! never deleted or overwritten (`rm --verify-owner`, `sync`,
//! `transform`), and what cannot be finished is refused before the first
//! write. Pools are made by `pmempool create`; the foreign file is a text
//! file padded with zeros, as a copy of /etc/services would be.

use std::fs;
use std::path::Path;

use crate::support::{pmempool, poolsync, s, temp_dir};

const MIB: usize = 1 << 20;

/// A file that is no pool's: text, padded with zeros to `len` bytes.
fn foreign_bytes(len: usize) -> Vec<u8> {
    let mut bytes = b"# Network services, Internet style\nssh\t\t22/tcp\n".repeat(200);
    bytes.resize(len, 0);
    bytes
}

/// Writes the pool set file `name` in `dir` (`{DIR}` stands for `dir`).
fn write_set(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, text.replace("{DIR}", s(dir))).expect("write set file");
    s(&path).to_string()
}

/// `OPTION SINGLEHDR`, `16M s0`, `16M foreign`, `REPLICA`, `32M r0`,
/// created by pmempool, then `foreign` replaced by a foreign file.
fn singlehdr_with_foreign(dir: &Path) -> (String, Vec<u8>) {
    let set = write_set(
        dir,
        "pool.set",
        "PMEMPOOLSET\nOPTION SINGLEHDR\n16M {DIR}/s0\n16M {DIR}/foreign\nREPLICA\n32M {DIR}/r0\n",
    );
    pmempool(&["create", "obj", &set]).assert_success();
    let bytes = foreign_bytes(16 * MIB);
    fs::write(dir.join("foreign"), &bytes).expect("foreign file");
    (set, bytes)
}

/// Defect 1a: `rm --verify-owner` keeps a SINGLEHDR part after the first
/// (no header, no proof) and says why; with `-f` it goes.
#[test]
fn rm_verify_owner_keeps_a_headerless_part() {
    require_pmdk!();
    let dir = temp_dir();
    let d = dir.path();
    let (set, bytes) = singlehdr_with_foreign(d);
    let out = poolsync(&["rm", "--verify-owner", &set]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains(s(&d.join("foreign")))
            && out.stderr.contains("carries no pool header of its own"),
        "{}",
        out.describe()
    );
    assert_eq!(fs::read(d.join("foreign")).expect("kept"), bytes);
    assert!(!d.join("s0").exists() && !d.join("r0").exists());

    let (set, _) = singlehdr_with_foreign(d);
    poolsync(&["rm", "--verify-owner", "-f", &set]).assert_success();
    assert!(!d.join("foreign").exists());
}

/// Defect 1c: a foreign pool's part listed first does not lend the pool
/// its identity: it is kept, the pool's own parts are removed.
#[test]
fn rm_verify_owner_ignores_a_foreign_part_listed_first() {
    require_pmdk!();
    let dir = temp_dir();
    let d = dir.path();
    let set = write_set(
        d,
        "pool.set",
        "PMEMPOOLSET\n16M {DIR}/a0\n16M {DIR}/a1\nREPLICA\n32M {DIR}/r0\n",
    );
    let other = write_set(d, "other.set", "PMEMPOOLSET\n16M {DIR}/o0\n");
    pmempool(&["create", "obj", &set]).assert_success();
    pmempool(&["create", "obj", &other]).assert_success();
    fs::copy(d.join("o0"), d.join("a0")).expect("swap in their part");
    let theirs = fs::read(d.join("o0")).expect("read");
    let out = poolsync(&["rm", "--verify-owner", &set]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(out.stderr.contains(s(&d.join("a0"))), "{}", out.describe());
    assert_eq!(fs::read(d.join("a0")).expect("kept"), theirs);
    assert!(!d.join("a1").exists(), "{}", out.describe());
    assert!(!d.join("r0").exists(), "{}", out.describe());
}

/// Defect 1b: transform neither deletes (the first replica removed) nor
/// overwrites (the first replica reshaped in place) a foreign file in the
/// place of a SINGLEHDR part after the first, dry run or not; it names
/// the file and why. The pool's own part goes through (its bytes equal
/// the other replica's), and `--force` takes a foreign one on part 0's
/// word.
#[test]
fn transform_leaves_a_foreign_headerless_part_alone() {
    require_pmdk!();
    let targets = [
        ("delete", "PMEMPOOLSET\nOPTION SINGLEHDR\n32M {DIR}/r0\n"),
        (
            "overwrite",
            "PMEMPOOLSET\nOPTION SINGLEHDR\n8M {DIR}/s0\n24M {DIR}/foreign\n",
        ),
    ];
    for (verb, target) in targets {
        let dir = temp_dir();
        let d = dir.path();
        let (set, bytes) = singlehdr_with_foreign(d);
        let dst = write_set(d, "dst.set", target);
        let before = crate::support::snapshot(d);
        for dry in [true, false] {
            let mut args = vec!["transform"];
            if dry {
                args.push("-d");
            }
            args.extend([set.as_str(), dst.as_str()]);
            let out = poolsync(&args);
            assert_eq!(out.code, Some(1), "{verb}: {}", out.describe());
            let foreign = s(&d.join("foreign")).to_string();
            assert!(
                out.stderr
                    .contains(&format!("refusing to {verb} {foreign} (replica 0 part 1)"))
                    && out.stderr.contains("carries no pool header of its own")
                    && out
                        .stderr
                        .contains("its bytes differ from those of replica 1")
                    && out.stderr.contains("--force"),
                "{verb}: {}",
                out.describe()
            );
            crate::support::assert_unchanged(&before, &crate::support::snapshot(d), &out.cmdline);
        }
        assert_eq!(fs::read(d.join("foreign")).expect("kept"), bytes);
        poolsync(&["transform", "--force", &set, &dst]).assert_success();
        poolsync(&["check", &dst]).assert_success();
    }
    // The pool's own header-less part is proven by its bytes.
    let dir = temp_dir();
    let d = dir.path();
    let set = write_set(
        d,
        "pool.set",
        "PMEMPOOLSET\nOPTION SINGLEHDR\n16M {DIR}/s0\n16M {DIR}/foreign\nREPLICA\n32M {DIR}/r0\n",
    );
    pmempool(&["create", "obj", &set]).assert_success();
    let dst = write_set(
        d,
        "dst.set",
        "PMEMPOOLSET\nOPTION SINGLEHDR\n32M {DIR}/r0\n",
    );
    poolsync(&["transform", &set, &dst]).assert_success();
    assert!(!d.join("foreign").exists());
    pmempool(&["check", &dst]).assert_success();
}

/// A directory made to refuse the removal of its entries by whatever this
/// machine allows: its write permission taken away (which root ignores),
/// else the immutable attribute (`chattr +i`, which needs
/// CAP_LINUX_IMMUTABLE). Dropping it gives the directory back.
struct Unremovable {
    dir: std::path::PathBuf,
    how: &'static str,
}

impl Unremovable {
    /// Tries each way in turn and keeps the first under which the kernel
    /// really refuses to unlink a file in `dir`; `None` when none works.
    fn make(dir: &Path) -> Option<Unremovable> {
        use std::os::unix::fs::PermissionsExt;
        let probe = dir.join("probe");
        fs::write(&probe, b"probe").expect("probe");
        let ways: [(&'static str, &dyn Fn(bool) -> bool); 2] = [
            ("no write permission", &|on| {
                let mode = if on { 0o555 } else { 0o755 };
                fs::set_permissions(dir, fs::Permissions::from_mode(mode)).is_ok()
            }),
            ("chattr +i", &|on| {
                std::process::Command::new("chattr")
                    .arg(if on { "+i" } else { "-i" })
                    .arg(dir)
                    .status()
                    .is_ok_and(|st| st.success())
            }),
        ];
        for (how, set) in ways {
            if !set(true) {
                continue;
            }
            if fs::remove_file(&probe).is_err() {
                return Some(Unremovable {
                    dir: dir.to_path_buf(),
                    how,
                });
            }
            set(false);
            fs::write(&probe, b"probe").expect("probe");
        }
        let _ = fs::remove_file(&probe);
        None
    }
}

impl Drop for Unremovable {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.how == "chattr +i" {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.dir)
                .status();
        }
        let _ = fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o755));
    }
}

/// Defect 4: a transform that would remove a replica whose directory does
/// not let its file go, and an `rm` of that pool set, are refused before
/// anything changes, naming the file and why; once the directory lets go,
/// the same transform works. (Where this machine offers no way to make a
/// directory refuse, the engine's tests cover it on the simulated storage.)
#[test]
fn a_replica_that_cannot_be_deleted_is_refused_before_anything_changes() {
    let dir = temp_dir();
    let d = dir.path();
    fs::create_dir(d.join("sub")).expect("sub");
    let src = write_set(
        d,
        "src.set",
        "PMEMPOOLSET\n16M {DIR}/a0\nREPLICA\n16M {DIR}/sub/b0\n",
    );
    let dst = write_set(d, "dst.set", "PMEMPOOLSET\n16M {DIR}/a0\n");
    poolsync(&["create", "obj", &src]).assert_success();
    let master = fs::read(d.join("a0")).expect("a0");
    let Some(guard) = Unremovable::make(&d.join("sub")) else {
        eprintln!(
            "no way to make a directory refuse unlink here (not root, no chattr): the engine's tests cover it"
        );
        return;
    };
    let b0 = d.join("sub/b0");
    let why = match guard.how {
        "chattr +i" => "is immutable",
        _ => "is not writable by this user",
    };
    let out = poolsync(&["transform", &src, &dst]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains(&format!("cannot delete {}: ", s(&b0)))
            && out.stderr.contains(why)
            && out.stderr.contains("nothing was written"),
        "{}: {}",
        guard.how,
        out.describe()
    );
    assert_eq!(
        fs::read(d.join("a0")).expect("a0"),
        master,
        "the master changed"
    );
    let out = poolsync(&["rm", &src]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("nothing was removed") && d.join("a0").exists(),
        "{}",
        out.describe()
    );
    poolsync(&["check", &src]).assert_success();
    drop(guard);
    poolsync(&["transform", &src, &dst]).assert_success();
    assert!(!b0.exists());
    poolsync(&["check", &dst]).assert_success();
}
