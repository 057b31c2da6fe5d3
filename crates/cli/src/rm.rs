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
use poolsync_pmem::FsStorage;

use crate::output::{out, outln};

/// Arguments of `poolsync rm` (pmempool syntax).
#[derive(Debug)]
pub struct Args {
    verbose: u8,
    verify_owner: bool,
    options: RmOptions,
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
        "Remove remote pool set files (remote replicas are not supported yet)",
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
                "only-pools" => options.remove_set_file = false,
                "all" | "local" => options.remove_set_file = true,
                "force" => {
                    options.force = true;
                    options.ask = Ask::Never;
                }
                "interactive" => options.ask = Ask::Always,
                // -r concerns remote pool set files only.
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
            options,
            files,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// Runs the command; `Ok` carries the exit code.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let storage = FsStorage;
    let mut observer = CliObserver {
        verbose: args.verbose,
    };
    let mut failed = false;
    let options = RmOptions {
        verify_owner: args.verify_owner,
        ..args.options
    };
    for file in &args.files {
        let result = rm::rm(&storage, file, &options, &mut observer);
        match result {
            Ok(report) => {
                failed |= report.refused();
                if !report.ok() {
                    failed = true;
                    if report.is_poolset {
                        eprintln!("error: removing '{}' failed", file.display());
                    }
                }
            }
            Err(e) => {
                failed = true;
                match e {
                    Error::NotFound { .. } => {
                        eprintln!(
                            "error: cannot remove '{}': No such file or directory",
                            file.display()
                        )
                    }
                    Error::PoolSet { .. } => eprintln!("error: parsing poolset failed: {e}"),
                    e => eprintln!("error: cannot remove '{}': {e}", file.display()),
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints what pmempool prints, and asks on the terminal.
#[derive(Debug)]
struct CliObserver {
    verbose: u8,
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
        )
    }

    fn done(&mut self, file: &RmFile) {
        match (&file.outcome, &file.role) {
            (Outcome::Removed, _) => {
                if self.verbose >= 1 {
                    outln!("removed '{}'", file.path.display());
                }
            }
            (
                Outcome::Skipped,
                Role::Remote {
                    node, descriptor, ..
                },
            ) => {
                if self.verbose >= 1 {
                    outln!("cannot remove '{descriptor}' on '{node}' -- remote replicas are not supported yet");
                }
            }
            (
                Outcome::Failed(_),
                Role::Remote {
                    node, descriptor, ..
                },
            ) => {
                eprintln!("error: cannot remove '{descriptor}' on '{node}' -- remote replicas are not supported yet");
            }
            (Outcome::Failed(Error::NotFound { path }), _) => {
                eprintln!(
                    "error: cannot remove file '{}': No such file or directory",
                    path.display()
                );
            }
            (Outcome::Failed(e), _) => {
                eprintln!("error: cannot remove file '{}': {e}", file.path.display())
            }
            (Outcome::NotOwned { what, expected }, _) => {
                eprintln!(
                    "error: not removing '{}': the file {what}, not the pool set's uuid {}",
                    file.path.display(),
                    expected.as_deref().unwrap_or("unknown")
                );
            }
            (Outcome::Declined | Outcome::Missing | Outcome::Skipped, _) => {}
        }
    }
}

/// pmempool's `[Y/n]` question: "y", "n", "yes", "no" (first letter in
/// any case) or an empty line for yes; anything else asks again. At the end
/// of the input the answer is no. When the input is not a terminal the
/// answer is echoed, as pmempool does.
fn ask_yes_no(question: &str, input: &mut dyn BufRead, is_tty: bool) -> bool {
    let answer = loop {
        out!("{question} [Y/n] ");
        let _ = std::io::stdout().flush();
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
        outln!("{answer}");
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
        assert!(ask_yes_no("q", &mut "maybe\ny\n".as_bytes(), true));
        assert!(!ask_yes_no("q", &mut "n\n".as_bytes(), true));
        assert!(ask_yes_no("q", &mut "\n".as_bytes(), false));
        assert!(!ask_yes_no("q", &mut "".as_bytes(), false));
    }
}
