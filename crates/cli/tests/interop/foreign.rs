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
