//! Issue item 2: on pools and pool sets that `pmempool create` made,
//! `poolsync info` prints exactly what `pmempool info` prints (also per
//! replica with `-p N`), and `poolsync check` gives the same verdicts and exit
//! codes as `pmempool check` — fresh, after libpmemobj stored a root object,
//! and after a crash left the shutdown state dirty.

use crate::support::{
    assert_same_lines, objclient, pmempool, poolsync, s, temp_dir, verdict_line, write_set, Holder,
    Out, Shape, SET_1X1, SET_1X3, SET_3R, SET_SINGLEHDR,
};

/// `poolsync info <args>` prints exactly what `pmempool info <args>` prints.
/// The only environment-dependent line, "Creation Time", is printed in local
/// time by pmempool; both tools run with `TZ=UTC` (see `support::run`), so it
/// must be identical too.
fn assert_info_same(args: &[&str]) {
    let mut full = vec!["info"];
    full.extend_from_slice(args);
    let theirs = pmempool(&full);
    let ours = poolsync(&full);
    ours.assert_no_crash();
    assert_eq!(
        ours.code,
        theirs.code,
        "exit code of `info {}` differs\n{}\n{}",
        args.join(" "),
        theirs.describe(),
        ours.describe()
    );
    if theirs.code == Some(0) {
        assert_same_lines(
            &theirs.stdout,
            &ours.stdout,
            &format!("info {}", args.join(" ")),
        );
    }
}

/// Same exit code and same `<file>: <verdict>` line (or none) as pmempool.
fn assert_check_same(args: &[&str], target: &str) -> (Out, Out) {
    let mut full = vec!["check"];
    full.extend_from_slice(args);
    full.push(target);
    let theirs = pmempool(&full);
    let ours = poolsync(&full);
    ours.assert_no_crash();
    assert_eq!(
        ours.code,
        theirs.code,
        "exit code of `{}` differs\n{}\n{}",
        full.join(" "),
        theirs.describe(),
        ours.describe()
    );
    assert_eq!(
        verdict_line(&ours.stdout, target),
        verdict_line(&theirs.stdout, target),
        "verdict line of `{}` differs\n{}\n{}",
        full.join(" "),
        theirs.describe(),
        ours.describe()
    );
    (theirs, ours)
}

/// Every info/check comparison for a pool with `nreplicas` replicas.
fn compare_all(target: &str, nreplicas: usize) {
    assert_info_same(&[target]);
    for r in 0..nreplicas {
        assert_info_same(&["-p", &r.to_string(), target]);
    }
    // One past the last replica is an error for both.
    assert_info_same(&["-p", &nreplicas.to_string(), target]);

    assert_check_same(&[], target);
    let (theirs, _) = assert_check_same(&["-v"], target);
    assert_eq!(
        verdict_line(&theirs.stdout, target),
        Some(format!("{target}: consistent")),
        "test premise: pmempool finds the pool consistent"
    );
    let (theirs, ours) = assert_check_same(&["-q"], target);
    assert_eq!(
        ours.stdout,
        theirs.stdout,
        "check -q prints nothing on stdout\n{}",
        ours.describe()
    );
}

/// `info --json` (poolsync only) is valid JSON carrying the pool set UUID.
fn assert_json_info(target: &str) {
    let text = pmempool(&["info", target]);
    let uuid = text
        .stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("Pool set UUID")
                .and_then(|rest| rest.split(": ").nth(1))
        })
        .expect("pmempool info shows the pool set UUID")
        .trim()
        .to_owned();
    let ours = poolsync(&["info", "--json", target]);
    ours.assert_no_crash().assert_success();
    let value: serde_json::Value = serde_json::from_str(&ours.stdout)
        .unwrap_or_else(|e| panic!("info --json is not JSON: {e}\n{}", ours.describe()));
    assert!(
        value.to_string().contains(&uuid),
        "info --json does not carry the pool set UUID {uuid}\n{}",
        ours.describe()
    );
    let check = poolsync(&["check", "--json", target]);
    check.assert_no_crash().assert_success();
    serde_json::from_str::<serde_json::Value>(&check.stdout)
        .unwrap_or_else(|e| panic!("check --json is not JSON: {e}\n{}", check.describe()));
}

/// Compares fresh, after libpmemobj used the pool, and after a crash.
fn lifecycle(target: &str, nreplicas: usize, layout: &str) {
    compare_all(target, nreplicas);
    assert_json_info(target);

    // A root object moves "Root offset" away from 0.
    objclient(&["write", target, layout, "interop root object"]).assert_success();
    compare_all(target, nreplicas);

    // A process killed while holding the pool open leaves the shutdown state
    // dirty ("Last shutdown: dirty").
    Holder::start(&["hold", target, layout, "60"]).crash();
    let info = pmempool(&["info", target]);
    assert!(
        info.stdout
            .lines()
            .any(|l| l.starts_with("Last shutdown") && l.ends_with(": dirty")),
        "test premise: a killed libpmemobj process leaves a dirty shutdown state\n{}",
        info.describe()
    );
    compare_all(target, nreplicas);
}

fn single_file(opts: &[&str], layout: &str) {
    let dir = temp_dir();
    let pool = dir.path().join("pool");
    let mut args = vec!["create"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["obj", s(&pool)]);
    pmempool(&args).assert_success();
    lifecycle(s(&pool), 1, layout);
}

fn pool_set(shape: &Shape) {
    let dir = temp_dir();
    let files = write_set(dir.path(), shape.name, shape);
    pmempool(&["create", "obj", files.set_str()]).assert_success();
    lifecycle(files.set_str(), shape.replicas.len(), "-");
}

#[test]
fn single_file_default() {
    require_pmdk!();
    single_file(&[], "-");
}

#[test]
fn single_file_sized_with_layout() {
    require_pmdk!();
    single_file(&["-s", "16M", "-l", "mylayout"], "mylayout");
}

#[test]
fn set_one_part() {
    require_pmdk!();
    pool_set(&SET_1X1);
}

#[test]
fn set_several_parts() {
    require_pmdk!();
    pool_set(&SET_1X3);
}

#[test]
fn set_three_replicas_different_splits() {
    require_pmdk!();
    pool_set(&SET_3R);
}

#[test]
fn set_singlehdr() {
    require_pmdk!();
    pool_set(&SET_SINGLEHDR);
}
