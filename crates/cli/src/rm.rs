//! `poolsync rm`: `pmempool rm [<args>] <file>...`.
//!
//! Like pmempool's getopt loop, later options override earlier ones: `-s`
//! cancels an earlier `-l`/`-a`, and the last of `-f`/`-i` decides whether to
//! ask. clap does not keep the order of flags, so the arguments are read
//! from the matches by hand (`FromArgMatches`), using their indices.

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use poolsync_engine::rm::{self, Ask, Outcome, RmFile, RmObserver, RmOptions, Role};
use poolsync_engine::Error;
use poolsync_pmem::{AnyStorage, PersistMode};
use serde::Serialize;

use crate::output::{emit_json, out, outln};

/// Arguments of `poolsync rm` (pmempool syntax).
#[derive(Debug)]
pub struct Args {
    verbose: u8,
    verify_owner: bool,
    json: bool,
    options: RmOptions,
    remote: crate::transport::RemoteArgs,
    files: Vec<PathBuf>,
}

const FLAGS: [(&str, char, &str, &str); 6] = [
    (
        "only-pools",
        's',
        "only-pools",
        "Remove only pool files, keep pool set files (default)",
    ),
    (
        "all",
        'a',
        "all",
        "Remove all pool set files, local and remote",
    ),
    (
        "local",
        'l',
        "local",
        "Also remove local pool set files, after their parts",
    ),
    (
        "remote",
        'r',
        "remote",
        "Also remove the pool set files of remote replicas on their hosts",
    ),
    (
        "force",
        'f',
        "force",
        "Ignore files that do not exist, never ask",
    ),
    (
        "interactive",
        'i',
        "interactive",
        "Ask before every single removal",
    ),
];

impl clap::Args for Args {
    fn augment_args(cmd: Command) -> Command {
        let cmd = <crate::transport::RemoteArgs as clap::Args>::augment_args(cmd);
        let mut cmd = cmd.arg(
            Arg::new("verbose")
                .short('v')
                .long("verbose")
                .action(ArgAction::Count)
                .help("Be verbose (twice: also name every file considered)"),
        );
        for (id, short, long, help) in FLAGS {
            cmd = cmd.arg(
                Arg::new(id)
                    .short(short)
                    .long(long)
                    .action(ArgAction::Count)
                    .help(help),
            );
        }
        cmd.arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help(
                    "Print a JSON document of what was removed instead of text (see docs/json.md)",
                ),
        )
        .arg(
            Arg::new("verify-owner")
                .long("verify-owner")
                .action(ArgAction::SetTrue)
                .help("Delete only part files whose headers carry the pool set's uuid"),
        )
        .arg(
            Arg::new("files")
                .value_name("FILE|POOLSET")
                .value_parser(clap::value_parser!(OsString))
                .num_args(1..)
                .required(true)
                .help("Pool files and pool set files"),
        )
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for Args {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        // (position on the command line, flag), in command-line order.
        let mut seen: Vec<(usize, &str)> = Vec::new();
        for (id, ..) in FLAGS {
            // Count flags always have a value (the default 0); only flags
            // given on the command line have positions that matter.
            if matches.value_source(id) != Some(ValueSource::CommandLine) {
                continue;
            }
            if let Some(indices) = matches.indices_of(id) {
                seen.extend(indices.map(|i| (i, id)));
            }
        }
        seen.sort_unstable();
        let mut options = RmOptions::default();
        for (_, id) in seen {
            match id {
                "only-pools" => {
                    options.remove_set_file = false;
                    options.remove_remote_set_files = false;
                }
                "all" => {
                    options.remove_set_file = true;
                    options.remove_remote_set_files = true;
                }
                "local" => options.remove_set_file = true,
                "remote" => options.remove_remote_set_files = true,
                "force" => {
                    options.force = true;
                    options.ask = Ask::Never;
                }
                "interactive" => options.ask = Ask::Always,
                _ => {}
            }
        }
        let files = matches
            .get_many::<OsString>("files")
            .map(|v| v.map(PathBuf::from).collect())
            .unwrap_or_default();
        Ok(Args {
            verbose: matches.get_count("verbose"),
            verify_owner: matches.get_flag("verify-owner"),
            json: matches.get_flag("json"),
            options,
            remote: <crate::transport::RemoteArgs as clap::FromArgMatches>::from_arg_matches(
                matches,
            )?,
            files,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args {
    /// `--json` was given.
    pub fn json(&self) -> bool {
        self.json
    }
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct Document {
    result: &'static str,
    exit_code: u8,
    targets: Vec<TargetDoc>,
}

/// One file or pool set given on the command line.
#[derive(Debug, Serialize)]
struct TargetDoc {
    path: PathBuf,
    /// `null` when the target could not be read at all.
    is_poolset: Option<bool>,
    /// Why the target as a whole failed (missing, unparsable), else `null`.
    error: Option<String>,
    files: Vec<FileDoc>,
}

/// One file considered.
#[derive(Debug, Serialize)]
struct FileDoc {
    path: PathBuf,
    /// `pool`, `part`, `remote`, `poolset_file`, `state_file` or
    /// `remote_record`.
    role: &'static str,
    replica: Option<usize>,
    part: Option<usize>,
    /// `removed`, `declined`, `missing`, `skipped`, `not_owned`, `kept`
    /// or `failed`.
    outcome: &'static str,
    error: Option<String>,
}

impl FileDoc {
    fn new(file: &RmFile) -> FileDoc {
        let (role, replica, part) = match &file.role {
            Role::Pool => ("pool", None, None),
            Role::Part { replica, part, .. } => ("part", Some(*replica), Some(*part)),
            Role::Remote { replica, .. } => ("remote", Some(*replica), None),
            Role::SetFile => ("poolset_file", None, None),
            Role::StateFile => ("state_file", None, None),
            Role::RemoteRecord => ("remote_record", None, None),
            Role::SyncMark => ("sync_mark", None, None),
            Role::CreateJournal => ("create_journal", None, None),
            Role::DeletionRecord => ("deletion_record", None, None),
        };
        let (outcome, error) = match &file.outcome {
            Outcome::NotOwned { .. } => ("not_owned", Some(not_owned_message(file))),
            Outcome::Removed => ("removed", None),
            Outcome::Zeroed => ("zeroed", None),
            Outcome::Declined => ("declined", None),
            Outcome::Missing => ("missing", None),
            Outcome::Skipped => ("skipped", None),
            Outcome::Failed(e) => ("failed", Some(e.to_string())),
            Outcome::Kept { why } => ("kept", Some(why.clone())),
        };
        FileDoc {
            path: file.path.clone(),
            role,
            replica,
            part,
            outcome,
            error,
        }
    }
}

/// Runs the command; `Ok` carries the exit code.
pub fn run(args: Args, settings: &crate::settings::Settings) -> anyhow::Result<ExitCode> {
    let connector = args.remote.connector(settings)?;
    let storage = AnyStorage::new(PersistMode::PageCache);
    let mut observer = CliObserver {
        // With --json, stdout carries the document only.
        verbose: if args.json { 0 } else { args.verbose },
        json: args.json,
    };
    let mut failed = false;
    let options = RmOptions {
        verify_owner: args.verify_owner,
        ..args.options
    };
    let mut targets = Vec::new();
    for file in &args.files {
        let mut target = TargetDoc {
            path: file.clone(),
            is_poolset: None,
            error: None,
            files: Vec::new(),
        };
        let result = rm::rm_with(&storage, file, &options, &mut observer, &connector);
        match result {
            Ok(report) => {
                failed |= report.refused();
                target.is_poolset = Some(report.is_poolset);
                target.files = report.files.iter().map(FileDoc::new).collect();
                if !report.ok() {
                    failed = true;
                    if report.is_poolset {
                        let message = format!("removing '{}' failed", file.display());
                        eprintln!("error: {message}");
                        target.error = Some(message);
                    }
                }
            }
            Err(e) => {
                failed = true;
                let message = match e {
                    Error::NotFound { .. } => format!(
                        "cannot remove '{}': No such file or directory",
                        file.display()
                    ),
                    Error::PoolSet { .. } => format!("parsing poolset failed: {e}"),
                    e => format!(
                        "cannot remove '{}': {}",
                        file.display(),
                        crate::diagnose::locked(&e, crate::diagnose::Waiting::Unsupported)
                            .unwrap_or_else(|| e.to_string())
                    ),
                };
                eprintln!("error: {message}");
                target.error = Some(message);
            }
        }
        targets.push(target);
    }
    let code: u8 = if failed { 1 } else { 0 };
    if args.json {
        let doc = Document {
            result: if failed { "error" } else { "removed" },
            exit_code: code,
            targets,
        };
        emit_json("rm", &doc)?;
    }
    Ok(ExitCode::from(code))
}

/// Why `--verify-owner` kept `file`.
fn not_owned_message(file: &RmFile) -> String {
    match &file.outcome {
        Outcome::NotOwned { what, expected } => format!(
            "not removing '{}': the file {what}, not the pool set's uuid {}",
            file.path.display(),
            expected.as_deref().unwrap_or("unknown")
        ),
        _ => String::new(),
    }
}

/// Prints what pmempool prints, and asks on the terminal.
#[derive(Debug)]
struct CliObserver {
    verbose: u8,
    /// Questions go to stderr: stdout carries the JSON document.
    json: bool,
}

impl RmObserver for CliObserver {
    fn classified(&mut self, target: &Path, is_poolset: bool) {
        if self.verbose >= 2 {
            let what = if is_poolset {
                "poolset file"
            } else {
                "pool file   "
            };
            outln!("{what}: {}", target.display());
        }
    }

    fn visiting(&mut self, path: &Path, role: &Role) {
        if self.verbose >= 2 && matches!(role, Role::Part { .. }) {
            outln!("part file   : {}", path.display());
        }
    }

    fn confirm(&mut self, path: &Path, write_protected: bool) -> bool {
        let what = if write_protected {
            "write-protected "
        } else {
            ""
        };
        let question = format!("remove {what}file '{}' ?", path.display());
        ask_yes_no(
            &question,
            &mut std::io::stdin().lock(),
            std::io::stdin().is_terminal(),
            self.json,
        )
    }

    fn done(&mut self, file: &RmFile) {
        match (&file.outcome, &file.role) {
            (Outcome::Removed, _) => {
                if self.verbose >= 1 {
                    outln!("removed '{}'", file.path.display());
                }
            }
            (Outcome::Zeroed, _) => {
                if self.verbose >= 1 {
                    outln!(
                        "removed '{}' (a Device DAX: its pool header was zeroed)",
                        file.path.display()
                    );
                }
            }
            (
                Outcome::Failed(e),
                Role::Remote {
                    node, descriptor, ..
                },
            ) => {
                eprintln!("error: cannot remove '{descriptor}' on '{node}': {e}");
            }
            (Outcome::Failed(Error::NotFound { path }), _) => {
                eprintln!(
                    "error: cannot remove file '{}': No such file or directory",
                    path.display()
                );
            }
            (Outcome::Failed(e), _) => {
                let why = crate::diagnose::locked(e, crate::diagnose::Waiting::Unsupported)
                    .unwrap_or_else(|| e.to_string());
                eprintln!("error: cannot remove file '{}': {why}", file.path.display())
            }
            (Outcome::NotOwned { .. }, _) => {
                eprintln!("error: {}", not_owned_message(file));
            }
            (Outcome::Kept { why }, _) => {
                eprintln!("warning: not removing '{}': {why}", file.path.display());
            }
            (Outcome::Declined | Outcome::Missing | Outcome::Skipped, _) => {}
        }
    }
}

/// pmempool's `[Y/n]` question: "y", "n", "yes", "no" (first letter in
/// any case) or an empty line for yes; anything else asks again. At the end
/// of the input the answer is no. When the input is not a terminal the
/// answer is echoed, as pmempool does.
fn ask_yes_no(question: &str, input: &mut dyn BufRead, is_tty: bool, on_stderr: bool) -> bool {
    let say = |text: &str| {
        if on_stderr {
            eprint!("{text}");
        } else {
            out!("{text}");
            let _ = std::io::stdout().flush();
        }
    };
    let answer = loop {
        say(&format!("{question} [Y/n] "));
        let mut line = String::new();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => {
                eprintln!("error: input is empty");
                break '?';
            }
            Ok(_) => {}
        }
        if let Some(answer) = parse_answer(&line) {
            break answer;
        }
    };
    if !is_tty {
        say(&format!("{answer}\n"));
    }
    answer == 'y'
}

/// One line of input (with its newline) as pmempool reads it.
fn parse_answer(line: &str) -> Option<char> {
    let mut chars = line.chars();
    let first = chars.next()?.to_ascii_lowercase();
    let rest = chars.as_str();
    match (first, rest) {
        ('\n', "") => Some('y'),
        ('y', "\n") | ('y', "es\n") => Some('y'),
        ('n', "\n") | ('n', "o\n") => Some('n'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{FromArgMatches, Parser};

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Args {
        let matches = <Wrap as clap::CommandFactory>::command().get_matches_from(argv);
        Wrap::from_arg_matches(&matches)
            .expect("valid arguments")
            .args
    }

    #[test]
    fn later_options_override_earlier_ones() {
        assert!(!parse(&["rm", "-l", "-s", "x"]).options.remove_set_file);
        assert!(parse(&["rm", "-s", "-l", "x"]).options.remove_set_file);
        assert!(parse(&["rm", "-a", "x"]).options.remove_set_file);
        assert!(!parse(&["rm", "-r", "x"]).options.remove_set_file);
        let a = parse(&["rm", "-f", "-i", "x"]).options;
        assert!(a.force);
        assert_eq!(a.ask, Ask::Always);
        let a = parse(&["rm", "-i", "-f", "x"]).options;
        assert!(a.force);
        assert_eq!(a.ask, Ask::Never);
        let a = parse(&["rm", "-fi", "x", "-vv", "-s", "y"]);
        assert_eq!(a.options.ask, Ask::Always);
        assert_eq!(a.verbose, 2);
        assert_eq!(a.files, vec![PathBuf::from("x"), PathBuf::from("y")]);
        let a = parse(&["rm", "x"]).options;
        assert_eq!(a, RmOptions::default());
    }

    #[test]
    fn answers_parse_as_pmempool_parses_them() {
        assert_eq!(parse_answer("\n"), Some('y'));
        assert_eq!(parse_answer("y\n"), Some('y'));
        assert_eq!(parse_answer("Y\n"), Some('y'));
        assert_eq!(parse_answer("Yes\n"), Some('y'));
        assert_eq!(parse_answer("n\n"), Some('n'));
        assert_eq!(parse_answer("No\n"), Some('n'));
        assert_eq!(parse_answer("maybe\n"), None);
        assert_eq!(parse_answer("YES\n"), None);
        assert_eq!(parse_answer("y"), None);
    }

    #[test]
    fn questions_repeat_until_answered_and_default_to_no_at_eof() {
        assert!(ask_yes_no("q", &mut "maybe\ny\n".as_bytes(), true, true));
        assert!(!ask_yes_no("q", &mut "n\n".as_bytes(), true, true));
        assert!(ask_yes_no("q", &mut "\n".as_bytes(), false, true));
        assert!(!ask_yes_no("q", &mut "".as_bytes(), false, true));
    }
}
