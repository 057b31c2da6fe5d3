//! Issue item 1: whatever `poolsync create` makes passes `pmempool check` and
//! `pmempool info`, matches what `pmempool create` makes from the same
//! arguments, and libpmemobj can open it, store a root object and read it
//! back after a reopen.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::support::{
    assert_unchanged, objclient, pmempool, poolsync, read_header, s, snapshot, temp_dir,
    verdict_line, write_set, Shape, MIB, SET_1X1, SET_1X3, SET_3R, SET_SINGLEHDR,
};

/// A pool set with a layout name: 2 replicas so that libpmemobj checks the
/// layout of the master and of the replica.
const SET_LAYOUT: Shape = Shape {
    name: "layout",
    replicas: &[&[10, 8], &[20]],
    singlehdr: false,
};

/// What a test creates: a single-file pool or a pool set.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    File,
    Set(&'a Shape),
}

/// One created pool in its own temp dir.
#[derive(Debug)]
struct Created {
    dir: TempDir,
    /// The argument given to create (file or set file).
    target: String,
    /// Part files (the pool file itself for a single-file pool).
    parts: Vec<PathBuf>,
}

fn make_target(dir: &Path, target: Target<'_>) -> (String, Vec<PathBuf>) {
    match target {
        Target::File => {
            let pool = dir.join("pool");
            (s(&pool).to_owned(), vec![pool])
        }
        Target::Set(shape) => {
            let files = write_set(dir, "pool", shape);
            let parts = files.all_parts().cloned().collect();
            (files.set_str().to_owned(), parts)
        }
    }
}

/// `create <opts> obj <target>` with `tool`.
fn create_with(
    tool: fn(&[&str]) -> crate::support::Out,
    opts: &[&str],
    target: Target<'_>,
) -> Created {
    let dir = temp_dir();
    let (target_arg, parts) = make_target(dir.path(), target);
    let mut args = vec!["create"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["obj", &target_arg]);
    tool(&args).assert_no_crash().assert_success();
    Created {
        dir,
        target: target_arg,
        parts,
    }
}

/// Masks the values that differ between any two pools (UUIDs, creation time,
/// checksums) and the temp dir, keeping everything that must be equal.
fn normalize_info(text: &str, dir: &Path) -> String {
    const PER_POOL: [&str; 8] = [
        "Pool set UUID",
        "UUID",
        "Previous part UUID",
        "Next part UUID",
        "Previous replica UUID",
        "Next replica UUID",
        "Creation Time",
        "Checksum",
    ];
    text.replace(s(dir), "<DIR>")
        .lines()
        .map(|line| match line.split_once(": ") {
            Some((label, value)) if PER_POOL.contains(&label.trim()) => {
                let verdict = match label.trim() {
                    "Checksum" if value.ends_with("[OK]") => " [OK]",
                    "Checksum" => " [BAD]",
                    _ => "",
                };
                format!("{label}: <per-pool>{verdict}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect()
}

/// Part sizes, modes and `pmempool info` (per-pool values masked) of the
/// poolsync-made pool equal those of the pmempool-made twin.
fn assert_same_as_twin(ours: &Created, twin: &Created) {
    assert_eq!(ours.parts.len(), twin.parts.len());
    for (o, t) in ours.parts.iter().zip(&twin.parts) {
        let (om, tm) = (
            fs::metadata(o).expect("stat ours"),
            fs::metadata(t).expect("stat twin"),
        );
        assert_eq!(
            om.len(),
            tm.len(),
            "size of {} differs from pmempool's",
            o.display()
        );
        assert_eq!(
            om.permissions().mode() & 0o7777,
            tm.permissions().mode() & 0o7777,
            "mode of {} differs from pmempool's",
            o.display()
        );
    }
    let ours_info = pmempool(&["info", &ours.target]);
    let twin_info = pmempool(&["info", &twin.target]);
    ours_info.assert_success();
    twin_info.assert_success();
    crate::support::assert_same_lines(
        &normalize_info(&twin_info.stdout, twin.dir.path()),
        &normalize_info(&ours_info.stdout, ours.dir.path()),
        "pmempool info of a poolsync-made pool vs a pmempool-made one (UUIDs, time, checksums masked)",
    );
}

#[track_caller]
fn assert_pmempool_consistent(target: &str) {
    let check = pmempool(&["check", "-v", target]);
    assert_eq!(
        check.code,
        Some(0),
        "pmempool check rejects the pool\n{}",
        check.describe()
    );
    assert_eq!(
        verdict_line(&check.stdout, target),
        Some(format!("{target}: consistent")),
        "pmempool check verdict\n{}",
        check.describe()
    );
}

/// pmempool accepts the pool, and libpmemobj stores a root object, reopens
/// and reads it back, then grows it and reads again.
fn assert_usable_by_pmdk(target: &str, layout: &str) {
    assert_pmempool_consistent(target);
    pmempool(&["info", target]).assert_success();
    let short = "hex:00ff7f80017e";
    objclient(&["write", target, layout, short]).assert_success();
    objclient(&["read", target, layout, short]).assert_success();
    let long: String = (0..3000u32)
        .map(|i| format!("{:02x}", (i * 7 + 3) % 256))
        .collect();
    let long = format!("hex:{long}");
    objclient(&["write", target, layout, &long]).assert_success();
    objclient(&["read", target, layout, &long]).assert_success();
    // libpmemobj's own use must leave a pool that pmempool still accepts.
    assert_pmempool_consistent(target);
}

/// Creates with poolsync and with pmempool, compares them, and uses ours.
fn create_compare_use(opts: &[&str], target: Target<'_>, layout: &str) -> Created {
    let ours = create_with(crate::support::poolsync, opts, target);
    let twin = create_with(pmempool, opts, target);
    assert_same_as_twin(&ours, &twin);
    assert_usable_by_pmdk(&ours.target, layout);
    ours
}

fn assert_part_sizes(created: &Created, shape: &Shape) {
    let expected = shape
        .replicas
        .iter()
        .flat_map(|r| r.iter().map(|mib| mib * MIB));
    for (part, size) in created.parts.iter().zip(expected) {
        assert_eq!(
            fs::metadata(part).expect("stat part").len(),
            size,
            "size of {}",
            part.display()
        );
    }
}

#[test]
fn single_file_default_size() {
    require_pmdk!();
    let ours = create_compare_use(&[], Target::File, "-");
    assert_eq!(
        fs::metadata(&ours.parts[0]).expect("stat").len(),
        8 * MIB,
        "default obj pool size"
    );
}

#[test]
fn single_file_with_size_verbose() {
    require_pmdk!();
    let ours = create_compare_use(&["-v", "-s", "16M"], Target::File, "-");
    assert_eq!(fs::metadata(&ours.parts[0]).expect("stat").len(), 16 * MIB);
}

fn pool_set_case(shape: &Shape) {
    let ours = create_compare_use(&[], Target::Set(shape), "-");
    assert_part_sizes(&ours, shape);
}

#[test]
fn set_one_part() {
    require_pmdk!();
    pool_set_case(&SET_1X1);
}

#[test]
fn set_several_parts() {
    require_pmdk!();
    pool_set_case(&SET_1X3);
}

#[test]
fn set_three_replicas_different_splits() {
    require_pmdk!();
    pool_set_case(&SET_3R);
}

#[test]
fn set_singlehdr() {
    require_pmdk!();
    pool_set_case(&SET_SINGLEHDR);
}

/// Opening with the right layout (or none) works, a wrong one fails.
fn assert_layout_enforced(target: &str) {
    objclient(&["write", target, "mylayout", "layout check"]).assert_success();
    objclient(&["read", target, "-", "layout check"]).assert_success();
    for cmd in ["read", "write"] {
        let wrong = objclient(&[cmd, target, "otherlayout", "layout check"]);
        assert_eq!(
            wrong.code,
            Some(1),
            "libpmemobj opened the pool with a wrong layout\n{}",
            wrong.describe()
        );
        assert!(
            wrong.stderr.contains("wrong layout"),
            "expected libpmemobj's layout error\n{}",
            wrong.describe()
        );
    }
    objclient(&["read", target, "mylayout", "layout check"]).assert_success();
    let info = pmempool(&["info", target]);
    assert!(
        info.stdout
            .lines()
            .any(|l| l.starts_with("Layout ") && l.ends_with(": mylayout")),
        "pmempool info does not show the layout\n{}",
        info.describe()
    );
}

#[test]
fn layout_single_file() {
    require_pmdk!();
    let ours = create_compare_use(&["-l", "mylayout"], Target::File, "mylayout");
    assert_layout_enforced(&ours.target);
}

#[test]
fn layout_pool_set() {
    require_pmdk!();
    let ours = create_compare_use(&["-l", "mylayout"], Target::Set(&SET_LAYOUT), "mylayout");
    assert_layout_enforced(&ours.target);
}

#[test]
fn mode_option() {
    require_pmdk!();
    let ours = create_compare_use(&["-m", "0600"], Target::Set(&SET_1X3), "-");
    for part in &ours.parts {
        let mode = fs::metadata(part).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "mode of {}", part.display());
    }
}

#[test]
fn existing_pool_needs_force() {
    require_pmdk!();
    let ours = create_with(poolsync, &[], Target::Set(&SET_1X3));
    let uuid_before = read_header(&ours.parts[0])[24..40].to_vec();

    let before = snapshot(ours.dir.path());
    let again = poolsync(&["create", "obj", &ours.target]);
    again.assert_no_crash();
    assert_eq!(
        again.code,
        Some(1),
        "create over an existing pool set must fail\n{}",
        again.describe()
    );
    assert_unchanged(
        &before,
        &snapshot(ours.dir.path()),
        "create without -f over an existing pool set",
    );

    poolsync(&["create", "-f", "obj", &ours.target])
        .assert_no_crash()
        .assert_success();
    let uuid_after = read_header(&ours.parts[0])[24..40].to_vec();
    assert_ne!(
        uuid_before, uuid_after,
        "create -f must make a new pool set (new pool set UUID)"
    );
    assert_usable_by_pmdk(&ours.target, "-");
}
