//! `poolsync completions bash|zsh|fish`: shell completions rendered by
//! `clap_complete` from the same definitions the binary parses with.

use std::io::Write;
use std::process::ExitCode;

use crate::output::emit;

/// The shells poolsync prints completions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// bash (bash-completion): save as
    /// `/usr/share/bash-completion/completions/poolsync`.
    Bash,
    /// zsh: save as `_poolsync` in a directory of `$fpath`.
    Zsh,
    /// fish: save as `~/.config/fish/completions/poolsync.fish`.
    Fish,
}

impl Shell {
    /// Every shell, in the order the help lists them.
    pub const ALL: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

    /// The shell's name, as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Shell::Bash => "bash",
            Shell::Zsh => "zsh",
            Shell::Fish => "fish",
        }
    }

    /// The file name the shell loads the completions from.
    pub fn file_name(self) -> &'static str {
        match self {
            Shell::Bash => "poolsync.bash",
            Shell::Zsh => "_poolsync",
            Shell::Fish => "poolsync.fish",
        }
    }
}

/// Arguments of `poolsync completions`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    poolsync completions bash > /usr/share/bash-completion/completions/poolsync\n  \
    poolsync completions zsh > \"${fpath[1]}/_poolsync\"\n  \
    poolsync completions fish > ~/.config/fish/completions/poolsync.fish")]
pub struct Args {
    /// The shell to print completions for
    #[arg(value_enum, value_name = "SHELL")]
    shell: Shell,
}

/// Writes the completions of every `poolsync` subcommand and option for
/// `shell` into `out`.
pub fn generate_completions(shell: Shell, out: &mut dyn Write) {
    let mut cmd = crate::command();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut cmd, "poolsync", out);
}

/// Runs the command; `Ok` carries the exit code.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut script = Vec::new();
    generate_completions(args.shell, &mut script);
    emit(&String::from_utf8_lossy(&script))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(shell: Shell) -> String {
        let mut out = Vec::new();
        generate_completions(shell, &mut out);
        String::from_utf8(out).expect("completions are text")
    }

    /// Every subcommand and every one of its long options (hidden ones
    /// aside) appears in the completions of every shell: a subcommand
    /// added without them fails here.
    #[test]
    fn every_subcommand_and_option_is_completed_in_every_shell() {
        let cmd = crate::command();
        let subcommands: Vec<&clap::Command> = cmd.get_subcommands().collect();
        assert!(subcommands.len() >= 7, "{subcommands:?}");
        for shell in Shell::ALL {
            let text = script(shell);
            for sub in &subcommands {
                let name = sub.get_name();
                assert!(
                    text.contains(name),
                    "{} completions lack the subcommand `{name}`",
                    shell.name()
                );
                for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                    if let Some(long) = arg.get_long() {
                        // fish names long options without their dashes.
                        let wanted = match shell {
                            Shell::Fish => format!("-l {long}"),
                            _ => format!("--{long}"),
                        };
                        assert!(
                            text.contains(&wanted),
                            "{} completions lack `{name} --{long}`",
                            shell.name()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn shells_complete_the_subcommands_of_poolsync() {
        assert!(script(Shell::Bash).contains("complete -F _poolsync"));
        assert!(script(Shell::Zsh).starts_with("#compdef poolsync"));
        assert!(script(Shell::Fish).contains("complete -c poolsync"));
    }
}
