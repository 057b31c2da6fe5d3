//! Issue item 6: `poolsync rm` removes the same files as `pmempool rm`, with
//! the same exit code and (with `-v`) the same output. Each scenario is built
//! twice, in two temp dirs, one for each tool.

use std::fs;
use std::path::Path;

use crate::support::{
    file_names, mentions_file, pmempool, pmempool_set, pmempool_stdin, poolsync, poolsync_stdin, s,
    temp_dir, Out, SetFiles, SET_SINGLEHDR,
};

/// What one tool did in one scenario.
#[derive(Debug)]
struct Outcome {
    out: Out,
    /// Files left in the scenario's dir.
    left: Vec<String>,
    /// stdout with the temp dir replaced by `<DIR>`.
    stdout: String,
}

/// Builds the scenario with `setup` (returns the rm arguments) and runs
/// `rm <opts> <targets>` with `stdin`, once per tool. Compares exit codes,
/// the files left, and stdout if `compare_stdout`.
fn rm_scenario(
    setup: impl Fn(&Path) -> Vec<String>,
    opts: &[&str],
    stdin: Option<&[u8]>,
    compare_stdout: bool,
) -> (Outcome, Outcome) {
    let run_one = |ours: bool| {
        let dir = temp_dir();
        let targets = setup(dir.path());
        let mut args = vec!["rm"];
        args.extend_from_slice(opts);
        args.extend(targets.iter().map(String::as_str));
        let out = match (ours, stdin) {
            (false, None) => pmempool(&args),
            (false, Some(input)) => pmempool_stdin(&args, input),
            (true, None) => poolsync(&args),
            (true, Some(input)) => poolsync_stdin(&args, input),
        };
        let stdout = out.stdout.replace(s(dir.path()), "<DIR>");
        Outcome {
            left: file_names(dir.path()),
            stdout,
            out,
        }
    };
    let theirs = run_one(false);
    let ours = run_one(true);
    ours.out.assert_no_crash();
    let context = format!("rm {}", opts.join(" "));
    assert_eq!(
        ours.out.code,
        theirs.out.code,
        "`{context}` exit code\n{}\n{}",
        theirs.out.describe(),
        ours.out.describe()
    );
    assert_eq!(
        ours.left,
        theirs.left,
        "`{context}` left different files\n{}\n{}",
        theirs.out.describe(),
        ours.out.describe()
    );
    if compare_stdout {
        assert_eq!(
            ours.stdout,
            theirs.stdout,
            "`{context}` stdout\n{}\n{}",
            theirs.out.describe(),
            ours.out.describe()
        );
    }
    (theirs, ours)
}

fn make_set(dir: &Path) -> SetFiles {
    pmempool_set(dir, "rmset", &SET_SINGLEHDR)
}

fn just_set(dir: &Path) -> Vec<String> {
    vec![make_set(dir).set_str().to_owned()]
}

/// A set whose replica 0 part 1 is already gone.
fn set_missing_part(dir: &Path) -> Vec<String> {
    let files = make_set(dir);
    fs::remove_file(files.part(0, 1)).expect("remove part");
    vec![files.set_str().to_owned()]
}

#[test]
fn pool_set_parts_only() {
    require_pmdk!();
    let (theirs, _) = rm_scenario(just_set, &[], None, true);
    assert_eq!(
        theirs.left,
        ["rmset.set"],
        "test premise: parts removed, set file kept"
    );
    assert_eq!(theirs.out.code, Some(0));
}

#[test]
fn pool_set_only_pools_option() {
    require_pmdk!();
    let (theirs, _) = rm_scenario(just_set, &["-s"], None, true);
    assert_eq!(
        theirs.left,
        ["rmset.set"],
        "test premise: -s removes parts only"
    );
}

#[test]
fn pool_set_with_set_file() {
    require_pmdk!();
    let (theirs, _) = rm_scenario(just_set, &["-l"], None, true);
    assert!(
        theirs.left.is_empty(),
        "test premise: -l removes the set file too"
    );
}

#[test]
fn pool_set_verbose() {
    require_pmdk!();
    let (theirs, _) = rm_scenario(just_set, &["-v", "-l"], None, true);
    assert!(
        theirs.stdout.contains("removed '"),
        "test premise: -v lists removed files\n{}",
        theirs.out.describe()
    );
}

#[test]
fn missing_part_without_force() {
    require_pmdk!();
    let (theirs, ours) = rm_scenario(set_missing_part, &[], None, true);
    assert_eq!(
        theirs.out.code,
        Some(1),
        "test premise: a missing part is an error"
    );
    assert_eq!(
        theirs.left,
        ["rmset.set"],
        "test premise: the other parts are still removed"
    );
    assert!(
        ours.out.stderr.contains("rmset_r0p1"),
        "poolsync rm does not name the missing part\n{}",
        ours.out.describe()
    );
}

#[test]
fn missing_part_with_force() {
    require_pmdk!();
    let (theirs, _) = rm_scenario(set_missing_part, &["-f"], None, true);
    assert_eq!(
        theirs.out.code,
        Some(0),
        "test premise: -f ignores missing parts"
    );
}

#[test]
fn several_arguments_and_missing_file() {
    require_pmdk!();
    let setup = |dir: &Path| {
        let pool = dir.join("single-pool");
        pmempool(&["create", "obj", s(&pool)]).assert_success();
        let mut targets = vec![s(&pool).to_owned()];
        targets.extend(set_missing_part(dir));
        targets.push(s(&dir.join("not-there")).to_owned());
        targets
    };
    let (theirs, ours) = rm_scenario(setup, &["-v"], None, true);
    assert_eq!(theirs.out.code, Some(1));
    assert!(
        mentions_file(&ours.out.stderr, Path::new("not-there")),
        "poolsync rm does not name the missing file\n{}",
        ours.out.describe()
    );
    let (theirs, _) = rm_scenario(setup, &["-f", "-l"], None, true);
    assert_eq!(theirs.out.code, Some(0));
    assert!(theirs.left.is_empty());
}

#[test]
fn interactive() {
    require_pmdk!();
    // Answers for the four parts: yes, no, yes, no. Prompts are not compared.
    let (theirs, _) = rm_scenario(just_set, &["-i"], Some(b"y\nn\ny\nn\n"), false);
    assert_eq!(
        theirs.left.len(),
        3,
        "test premise: two parts kept besides the set file: {:?}",
        theirs.left
    );
    // End of input answers nothing: nothing is removed.
    let (theirs, _) = rm_scenario(just_set, &["-i"], None, false);
    assert_eq!(
        theirs.left.len(),
        5,
        "test premise: nothing removed at end of input: {:?}",
        theirs.left
    );
}
