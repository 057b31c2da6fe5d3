//! Update packets with the real PMDK: `poolsync export`, `import`,
//! `epoch` and `packet` on pools that `pmempool create` made and
//! libpmemobj filled. After seeding and after every import the
//! destination is checked the way an application would see it: a copy of
//! it opens with libpmemobj and holds the source's root object, `pmempool
//! check` says consistent, and every replica read alone holds it too.
//! (Checks open copies: opening the destination itself with libpmemobj
//! changes it, which the next import would rightly refuse.)

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::{
    objclient, pmempool, poolsync, s, snapshot, temp_dir, write_set, Out, SetFiles, Shape, MIB,
};
use crate::sync::{copy_set, set_text};

/// The source: two replicas, split differently.
const SOURCE: Shape = Shape {
    name: "source",
    replicas: &[&[24], &[12, 13]],
    singlehdr: false,
};
/// A destination of another layout, with two replicas.
const DEST: Shape = Shape {
    name: "dest",
    replicas: &[&[10, 10, 6], &[26]],
    singlehdr: false,
};
/// A destination of one replica with SINGLEHDR.
const DEST_SINGLEHDR: Shape = Shape {
    name: "dest-singlehdr",
    replicas: &[&[13, 13]],
    singlehdr: true,
};
/// A destination too small for the source.
const DEST_SMALL: Shape = Shape {
    name: "dest-small",
    replicas: &[&[16]],
    singlehdr: false,
};

/// Bytes of the root object pattern.
const NBYTES: u64 = 6 * MIB;

/// Sites in one temp dir: A (the source, created and filled), and the
/// pool set files of the destinations; packets go to `out/`.
struct Sites {
    dir: tempfile::TempDir,
    a: SetFiles,
}

impl Sites {
    fn new() -> Sites {
        let dir = temp_dir();
        for sub in ["a", "b", "c", "out"] {
            fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        let a = write_set(&dir.path().join("a"), "pool", &SOURCE);
        pmempool(&["create", "obj", a.set_str()]).assert_success();
        objclient(&["fill", a.set_str(), "-", &NBYTES.to_string(), "1"]).assert_success();
        Sites { dir, a }
    }

    /// A destination pool set file (its parts are not created).
    fn dest(&self, site: &str, shape: &Shape) -> SetFiles {
        write_set(&self.dir.path().join(site), "pool", shape)
    }

    fn out(&self, name: &str) -> String {
        s(&self.dir.path().join("out").join(name)).to_string()
    }

    /// Changes the root object at A: a new pattern from `seed` over its
    /// first `nbytes` bytes.
    fn change(&self, nbytes: u64, seed: &str) {
        objclient(&["fill", self.a.set_str(), "-", &nbytes.to_string(), seed]).assert_success();
    }
}

/// `poolsync` that must succeed.
fn ok(args: &[&str]) -> Out {
    let out = poolsync(args);
    out.assert_success();
    out
}

/// `poolsync` that must fail with exit code 1 and one `error:` line.
fn refused(args: &[&str]) -> Out {
    let out = poolsync(args);
    out.assert_no_crash();
    assert_eq!(out.code, Some(1), "expected a refusal\n{}", out.describe());
    assert!(
        out.stderr.lines().any(|l| l.starts_with("error: ")),
        "no error line\n{}",
        out.describe()
    );
    out
}

/// The destination holds what libpmemobj at the source holds: a copy opens
/// and verifies, `pmempool check` says consistent, and every replica
/// alone verifies. `pattern` is the root object's (length, seed).
#[track_caller]
fn assert_follows(
    sites: &Sites,
    dest: &SetFiles,
    shape: &'static Shape,
    pattern: (u64, &str),
    what: &str,
) {
    let check = pmempool(&["check", "-v", dest.set_str()]);
    assert!(
        check.code == Some(0) && check.stdout.trim_end().ends_with(": consistent"),
        "{what}: pmempool check\n{}",
        check.describe()
    );
    let n = shape.replicas.len();
    for k in 0..n {
        let copy_dir = sites.dir.path().join(format!("read-{}-{k}", shape.name));
        let _ = fs::remove_dir_all(&copy_dir);
        let copy = copy_set(dest, shape, &copy_dir);
        let order: Vec<usize> = (0..n).map(|i| (k + i) % n).collect();
        fs::write(
            &copy.set,
            set_text(shape, &order, |r, p| copy.part(r, p).to_path_buf()),
        )
        .expect("rotated set file");
        let out = objclient(&[
            "verify",
            copy.set_str(),
            "-",
            &pattern.0.to_string(),
            pattern.1,
        ]);
        assert_eq!(
            out.code,
            Some(0),
            "{what}: replica {k} of {} read alone does not hold the source's root object\n{}",
            dest.set_str(),
            out.describe()
        );
        fs::remove_dir_all(&copy_dir).expect("remove copy");
    }
}

fn dir_of(files: &SetFiles) -> &Path {
    files.set.parent().expect("set dir")
}

#[test]
fn a_packet_seeds_a_standby_of_another_layout_and_later_ones_keep_it_current() {
    require_pmdk!();
    let sites = Sites::new();
    let b = sites.dest("b", &DEST);
    let p1 = sites.out("p1");
    ok(&["export", "--out", &p1, sites.a.set_str(), "b"]);
    let desc = ok(&["packet", &p1]);
    assert!(
        desc.stdout.contains("Epochs                   : 0 -> 1"),
        "{}",
        desc.describe()
    );
    let imp = ok(&["import", "-v", b.set_str(), &p1]);
    assert!(imp.stdout.contains("seeded"), "{}", imp.describe());
    assert!(!Path::new(&p1).exists(), "applied packets are deleted");
    assert_follows(&sites, &b, &DEST, (NBYTES, "1"), "seeded");

    // An incremental packet is small.
    sites.change(64 * 1024, "2");
    let p2 = sites.out("p2");
    let exp = ok(&["export", "--json", "--out", &p2, sites.a.set_str(), "b"]);
    let doc: serde_json::Value = serde_json::from_str(&exp.stdout).expect("json");
    let bytes = doc["report"]["packet"]["packet_bytes"]
        .as_u64()
        .expect("packet bytes");
    assert!(
        bytes < 2 * MIB,
        "an incremental packet of {bytes} bytes\n{}",
        exp.stdout
    );
    ok(&["import", b.set_str(), &p2]);
    assert_follows(&sites, &b, &DEST, (64 * 1024, "2"), "incremental");

    // Nothing changed: no packet, exit 0.
    let p3 = sites.out("p3");
    let out = ok(&["export", "--out", &p3, sites.a.set_str(), "b"]);
    assert!(out.stdout.contains("synchronized"), "{}", out.describe());
    assert!(!Path::new(&p3).exists());
    let epoch = ok(&["epoch", sites.a.set_str()]);
    assert!(
        epoch.stdout.contains("b  epoch 2 of timeline 1"),
        "{}",
        epoch.describe()
    );
}

#[test]
fn packets_apply_in_any_order_once_and_a_gap_is_filled_by_the_diagnosed_command() {
    require_pmdk!();
    let sites = Sites::new();
    let b = sites.dest("b", &DEST_SINGLEHDR);
    let p1 = sites.out("p1");
    ok(&["export", "--out", &p1, sites.a.set_str(), "b"]);
    ok(&["import", b.set_str(), &p1]);
    let (p2, p3, p4) = (sites.out("p2"), sites.out("p3"), sites.out("p4"));
    sites.change(100_000, "3");
    ok(&["export", "--out", &p2, sites.a.set_str(), "b"]);
    sites.change(200_000, "4");
    ok(&["export", "--out", &p3, sites.a.set_str(), "b"]);
    sites.change(300_000, "5");
    ok(&["export", "--out", &p4, sites.a.set_str(), "b"]);

    // Out of order, kept: applied in epoch order.
    ok(&["import", "--keep", b.set_str(), &p4, &p2, &p3]);
    assert_follows(&sites, &b, &DEST_SINGLEHDR, (300_000, "5"), "any order");
    let before = snapshot(dir_of(&b));
    let again = ok(&["import", b.set_str(), &p3, &p2, &p4]);
    assert_eq!(
        again.stdout.matches("skipped").count(),
        3,
        "{}",
        again.describe()
    );
    let after = snapshot(dir_of(&b));
    assert!(before == after, "importing twice changed the destination");

    // A gap: p6 without p5.
    sites.change(400_000, "6");
    ok(&["export", "--out", &sites.out("p5"), sites.a.set_str(), "b"]);
    fs::remove_file(sites.out("p5")).expect("lose p5");
    sites.change(500_000, "7");
    let p6 = sites.out("p6");
    ok(&["export", "--out", &p6, sites.a.set_str(), "b"]);
    let before = snapshot(dir_of(&b));
    let out = refused(&["import", b.set_str(), &p6]);
    assert!(
        out.stderr.contains("holds epoch 4") && out.stderr.contains("starts at epoch 5"),
        "{}",
        out.describe()
    );
    assert!(
        snapshot(dir_of(&b)) == before,
        "a refused import changed the destination"
    );
    let diag = poolsync(&["import", "--diagnose", b.set_str(), &p6]);
    assert_eq!(diag.code, Some(1), "{}", diag.describe());
    let command = diag
        .stdout
        .lines()
        .find(|l| l.starts_with("poolsync export "))
        .unwrap_or_else(|| panic!("no command\n{}", diag.describe()))
        .to_string();
    assert!(command.contains("--since 4"), "{command}");
    // Run it at the source, from the packets' directory.
    let words: Vec<&str> = command.split_whitespace().skip(1).collect();
    let out = crate::support::run(
        std::ffi::OsStr::new(env!("CARGO_BIN_EXE_poolsync")),
        &words,
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let filled = std::env::current_dir()
        .expect("cwd")
        .join(words[words.iter().position(|w| *w == "--out").unwrap() + 1]);
    let filled = s(&filled).to_string();
    ok(&["import", b.set_str(), &p6, &filled]);
    assert_follows(&sites, &b, &DEST_SINGLEHDR, (500_000, "7"), "gap filled");
    // Nothing is missing now: --diagnose is silent.
    let quiet = ok(&["import", "--diagnose", b.set_str()]);
    assert_eq!(quiet.stdout, "", "{}", quiet.describe());
}

#[test]
fn split_limited_compressed_and_signed_packets() {
    require_pmdk!();
    let sites = Sites::new();
    let key = sites.dir.path().join("key");
    fs::write(&key, [7u8; 32]).expect("key");
    let b = sites.dest("b", &DEST);
    let p1 = sites.out("p1");
    // Too many files: nothing written, the count said.
    let out = refused(&[
        "export",
        "--max-size",
        "500k",
        "--limit",
        "2",
        "--out",
        &p1,
        sites.a.set_str(),
        "b",
    ]);
    assert!(out.stderr.contains("needs "), "{}", out.describe());
    assert!(!Path::new(&p1).exists());
    assert!(
        !Path::new(&format!("{}.poolsync-state", sites.a.set_str())).exists(),
        "a refused export wrote its state"
    );
    // A dry run writes nothing either.
    let dry = ok(&[
        "export",
        "-d",
        "--max-size",
        "500k",
        "--out",
        &p1,
        sites.a.set_str(),
        "b",
    ]);
    assert!(dry.stdout.contains("would write"), "{}", dry.describe());
    assert!(!Path::new(&p1).exists());
    // zstd, split, signed.
    ok(&[
        "export",
        "--compress",
        "--max-size",
        "500k",
        "--key-file",
        s(&key),
        "--out",
        &p1,
        sites.a.set_str(),
        "b",
    ]);
    let files: Vec<String> = std::iter::once(p1.clone())
        .chain((2..100).map(|i| format!("{p1}_{i}")))
        .filter(|f| Path::new(f).exists())
        .collect();
    assert!(files.len() > 1, "{files:?}");
    for f in &files {
        assert!(fs::metadata(f).expect("size").len() <= 500 * 1024, "{f}");
    }
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    // Without the key, or with another, it is refused.
    let mut cmd = vec!["import", "--keep", b.set_str()];
    cmd.extend(&args);
    let out = refused(&cmd);
    assert!(out.stderr.contains("signed"), "{}", out.describe());
    let other = sites.dir.path().join("other-key");
    fs::write(&other, [8u8; 32]).expect("key");
    let mut cmd = vec!["import", "--keep", "--key-file", s(&other), b.set_str()];
    cmd.extend(&args);
    refused(&cmd);
    let mut cmd = vec!["packet", "--key-file", s(&key)];
    cmd.extend(&args);
    let desc = ok(&cmd);
    assert!(
        desc.stdout.contains("zstd") && desc.stdout.contains("part 2 of"),
        "{}",
        desc.describe()
    );
    let mut cmd = vec!["import", "--key-file", s(&key), b.set_str()];
    cmd.extend(&args);
    ok(&cmd);
    assert_follows(
        &sites,
        &b,
        &DEST,
        (NBYTES, "1"),
        "compressed, split and signed",
    );
    // lz4 through the setting, unsigned: refused by a destination that
    // holds a key.
    sites.change(1_000_000, "9");
    let p2 = sites.out("p2");
    let out = crate::support::run(
        std::ffi::OsStr::new(env!("CARGO_BIN_EXE_poolsync")),
        &["export", "--out", &p2, sites.a.set_str(), "b"],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.describe());
    refused(&["import", "--keep", "--key-file", s(&key), b.set_str(), &p2]);
    fs::remove_file(&p2).expect("rm");
    let config = sites.dir.path().join("config.toml");
    fs::write(
        &config,
        format!("compression = \"lz4\"\nkey_file = {:?}\n", s(&key)),
    )
    .expect("config");
    epoch_set(&sites.a, "b", 1);
    ok(&[
        "--config",
        s(&config),
        "export",
        "--out",
        &p2,
        sites.a.set_str(),
        "b",
    ]);
    let desc = ok(&["--config", s(&config), "packet", &p2]);
    assert!(
        desc.stdout.contains("lz4") && desc.stdout.contains("yes (keyed MAC)"),
        "{}",
        desc.describe()
    );
    ok(&["--config", s(&config), "import", b.set_str(), &p2]);
    assert_follows(
        &sites,
        &b,
        &DEST,
        (1_000_000, "9"),
        "lz4 from the config file",
    );
}

fn epoch_set(set: &SetFiles, dest: &str, epoch: u32) {
    ok(&["epoch", "--set", &format!("{dest}={epoch}"), set.set_str()]);
}

#[test]
fn damaged_truncated_missing_foreign_and_altered_packets_change_nothing() {
    require_pmdk!();
    let sites = Sites::new();
    let b = sites.dest("b", &DEST);
    let p1 = sites.out("p1");
    ok(&["export", "--out", &p1, sites.a.set_str(), "b"]);
    ok(&["import", b.set_str(), &p1]);
    sites.change(3 * MIB, "11");
    let p2 = sites.out("p2");
    ok(&[
        "export",
        "--max-size",
        "1m",
        "--out",
        &p2,
        sites.a.set_str(),
        "b",
    ]);
    let p2_2 = format!("{p2}_2");
    assert!(Path::new(&p2_2).exists());
    let all: Vec<String> = std::iter::once(p2.clone())
        .chain((2..100).map(|i| format!("{p2}_{i}")))
        .filter(|f| Path::new(f).exists())
        .collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let with = |head: &[&'static str]| -> Vec<&str> {
        let mut v: Vec<&str> = head.to_vec();
        v.push(b.set_str());
        v.extend(&all);
        v
    };
    let before = snapshot(dir_of(&b));
    let pristine = fs::read(&p2_2).expect("read");

    // A flipped byte: named with its file and offset.
    let mut bad = pristine.clone();
    bad[5000] ^= 0x40;
    fs::write(&p2_2, &bad).expect("write");
    let out = refused(&with(&["import"]));
    assert!(
        out.stderr.contains(&p2_2) && out.stderr.contains("offset"),
        "{}",
        out.describe()
    );
    let mut desc_args = vec!["packet"];
    desc_args.extend(&all);
    let desc = poolsync(&desc_args);
    assert_eq!(desc.code, Some(1));
    assert!(
        desc.stderr.contains(&p2_2) && desc.stderr.contains("offset"),
        "{}",
        desc.describe()
    );
    // Truncated.
    fs::write(&p2_2, &pristine[..pristine.len() - 100]).expect("write");
    let out = refused(&with(&["import"]));
    assert!(out.stderr.contains(&p2_2), "{}", out.describe());
    fs::write(&p2_2, &pristine).expect("restore");
    // Missing.
    let out = refused(&["import", b.set_str(), &p2]);
    assert!(out.stderr.contains("_2"), "{}", out.describe());
    // Foreign: another pool's packet.
    let other = write_set(&sites.dir.path().join("c"), "other", &DEST_SMALL);
    pmempool(&["create", "obj", other.set_str()]).assert_success();
    let x = sites.out("x");
    ok(&["export", "--out", &x, other.set_str(), "b"]);
    let out = refused(&["import", b.set_str(), &x]);
    assert!(out.stderr.contains("another pool"), "{}", out.describe());
    // Another lineage: a copy of A exporting on its own.
    let copy = copy_set(&sites.a, &SOURCE, &sites.dir.path().join("a2"));
    let y = sites.out("y");
    ok(&["export", "--out", &y, copy.set_str(), "b"]);
    let out = refused(&["import", b.set_str(), &y]);
    assert!(out.stderr.contains("lineage"), "{}", out.describe());
    assert!(
        snapshot(dir_of(&b)) == before,
        "a refused packet changed the destination"
    );
    // The intact packet applies.
    ok(&with(&["import"]));
    assert_follows(&sites, &b, &DEST, (3 * MIB, "11"), "after the refusals");
    // A too small destination is refused before anything is written.
    let small = sites.dest("c", &DEST_SMALL);
    let p3 = sites.out("p3");
    ok(&["export", "--out", &p3, sites.a.set_str(), "c"]);
    let out = refused(&["import", small.set_str(), &p3]);
    assert!(out.stderr.contains("too small"), "{}", out.describe());
    assert!(!small.part(0, 0).exists(), "a refused seed created a part");
}

#[test]
fn a_standby_opened_by_an_application_is_refused_then_rewound() {
    require_pmdk!();
    let sites = Sites::new();
    let b = sites.dest("b", &DEST);
    let p1 = sites.out("p1");
    ok(&["export", "--out", &p1, sites.a.set_str(), "b"]);
    ok(&["import", b.set_str(), &p1]);
    // Someone uses the standby: libpmemobj bumps run_id and writes.
    objclient(&["fill", b.set_str(), "-", "5000", "77"]).assert_success();
    sites.change(2 * MIB, "12");
    let p2 = sites.out("p2");
    ok(&["export", "--out", &p2, sites.a.set_str(), "b"]);
    let before = snapshot(dir_of(&b));
    let out = refused(&["import", b.set_str(), &p2]);
    assert!(out.stderr.contains("changed locally"), "{}", out.describe());
    assert!(snapshot(dir_of(&b)) == before);
    let req = sites.out("b.rewind");
    let diag = poolsync(&[
        "import",
        "--diagnose",
        "--rewind-request",
        &req,
        b.set_str(),
        &p2,
    ]);
    assert_eq!(diag.code, Some(1), "{}", diag.describe());
    assert!(
        diag.stdout.contains("rewind request written"),
        "{}",
        diag.describe()
    );
    assert!(
        diag.stdout.contains(&format!("--request {req}")),
        "{}",
        diag.describe()
    );
    let p3 = sites.out("p3");
    ok(&[
        "export",
        "--request",
        &req,
        "--out",
        &p3,
        sites.a.set_str(),
        "b",
    ]);
    ok(&["import", b.set_str(), &p2, &p3]);
    assert_follows(&sites, &b, &DEST, (2 * MIB, "12"), "rewound");
}

#[test]
fn one_packet_for_two_destinations_and_a_hub_that_forwards() {
    require_pmdk!();
    let sites = Sites::new();
    let b = sites.dest("b", &DEST);
    let c = sites.dest("c", &DEST_SINGLEHDR);
    let p1 = sites.out("p1");
    ok(&["export", "--out", &p1, sites.a.set_str(), "b", "c"]);
    ok(&["import", "--keep", b.set_str(), &p1]);
    ok(&["import", c.set_str(), &p1]);
    assert_follows(&sites, &b, &DEST, (NBYTES, "1"), "b from the shared packet");
    assert_follows(
        &sites,
        &c,
        &DEST_SINGLEHDR,
        (NBYTES, "1"),
        "c from the shared packet",
    );
    // B forwards A's next epoch to a new destination D, seeded from B.
    sites.change(MIB, "13");
    let p2 = sites.out("p2");
    ok(&["export", "--out", &p2, sites.a.set_str(), "b"]);
    ok(&["import", b.set_str(), &p2]);
    let d_dir = sites.dir.path().join("d");
    fs::create_dir(&d_dir).expect("mkdir");
    let d = write_set(&d_dir, "pool", &DEST_SMALL_OK);
    let h1 = sites.out("h1");
    let out = ok(&["export", "-v", "--out", &h1, b.set_str(), "d"]);
    assert!(out.stdout.contains("epoch 0 -> 2"), "{}", out.describe());
    ok(&["import", d.set_str(), &h1]);
    assert_follows(
        &sites,
        &d,
        &DEST_SMALL_OK,
        (MIB, "13"),
        "forwarded by the hub",
    );
    // C is behind (epoch 1): the hub ships it epoch 2 in A's lineage.
    epoch_set(&b, "c", 1);
    let h2 = sites.out("h2");
    ok(&["export", "--out", &h2, b.set_str(), "c"]);
    ok(&["import", c.set_str(), &h2]);
    assert_follows(
        &sites,
        &c,
        &DEST_SINGLEHDR,
        (MIB, "13"),
        "c through the hub",
    );
}

/// A one-replica destination just large enough.
const DEST_SMALL_OK: Shape = Shape {
    name: "dest-d",
    replicas: &[&[25]],
    singlehdr: false,
};

#[test]
fn a_failover_promotes_the_standby_and_the_old_primary_fails_back() {
    require_pmdk!();
    let sites = Sites::new();
    let b = sites.dest("b", &DEST);
    let p1 = sites.out("p1");
    ok(&["export", "--out", &p1, sites.a.set_str(), "b"]);
    ok(&["import", b.set_str(), &p1]);
    // A makes epoch 2, which never reaches B, then fails.
    sites.change(MIB, "21");
    ok(&[
        "export",
        "--out",
        &sites.out("lost"),
        sites.a.set_str(),
        "b",
    ]);
    // B is promoted and written to.
    let promoted = ok(&["epoch", "--promote", b.set_str()]);
    assert!(
        promoted.stdout.contains("promoted: timeline 2"),
        "{}",
        promoted.describe()
    );
    objclient(&["fill", b.set_str(), "-", "700000", "22"]).assert_success();
    // A comes back. B's packet is refused: A went on past the fork.
    let back1 = sites.out("back1");
    ok(&["export", "--out", &back1, b.set_str(), "a"]);
    let before = snapshot(dir_of(&sites.a));
    let out = refused(&["import", "--keep", sites.a.set_str(), &back1]);
    assert!(out.stderr.contains("forked"), "{}", out.describe());
    assert!(snapshot(dir_of(&sites.a)) == before);
    let req = sites.out("a.rewind");
    let diag = poolsync(&[
        "import",
        "--diagnose",
        "--rewind-request",
        &req,
        sites.a.set_str(),
        &back1,
    ]);
    assert_eq!(diag.code, Some(1), "{}", diag.describe());
    assert!(diag.stdout.contains("epoch 1"), "{}", diag.describe());
    let back2 = sites.out("back2");
    ok(&[
        "export",
        "--request",
        &req,
        "--out",
        &back2,
        b.set_str(),
        "a",
    ]);
    ok(&["import", sites.a.set_str(), &back1, &back2]);
    // A is now B's exact follower.
    let a_files = sites.a.clone();
    let check = pmempool(&["check", "-v", a_files.set_str()]);
    assert!(
        check.stdout.trim_end().ends_with(": consistent"),
        "{}",
        check.describe()
    );
    let copy = copy_set(&sites.a, &SOURCE, &sites.dir.path().join("a-check"));
    objclient(&["verify", copy.set_str(), "-", "700000", "22"]).assert_success();
    let shown = ok(&["epoch", sites.a.set_str()]);
    assert!(
        shown.stdout.contains("follower")
            && shown.stdout.contains("forked from timeline 1 at epoch 1"),
        "{}",
        shown.describe()
    );
    // And B's next packet applies to it normally.
    objclient(&["fill", b.set_str(), "-", "800000", "23"]).assert_success();
    let p = sites.out("next");
    ok(&["export", "--out", &p, b.set_str(), "a"]);
    ok(&["import", sites.a.set_str(), &p]);
    let copy = copy_set(&sites.a, &SOURCE, &sites.dir.path().join("a-check2"));
    objclient(&["verify", copy.set_str(), "-", "800000", "23"]).assert_success();
}

#[test]
fn rm_removes_the_state_file_with_the_pool() {
    require_pmdk!();
    let sites = Sites::new();
    let p1 = sites.out("p1");
    ok(&["export", "--out", &p1, sites.a.set_str(), "b"]);
    let state = PathBuf::from(format!("{}.poolsync-state", sites.a.set_str()));
    assert!(state.exists());
    // Not a state file: kept.
    let b = sites.dest("b", &DEST);
    ok(&["import", b.set_str(), &p1]);
    ok(&["rm", sites.a.set_str()]);
    assert!(!state.exists(), "rm left the state file");
    let b_state = PathBuf::from(format!("{}.poolsync-state", b.set_str()));
    fs::write(&b_state, b"not a state file").expect("write");
    let out = poolsync(&["rm", b.set_str()]);
    assert!(
        b_state.exists(),
        "rm removed a file that is not a state file\n{}",
        out.describe()
    );
}
