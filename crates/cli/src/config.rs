//! `poolsync config`: the settings a command runs with, and where each one
//! comes from (a flag, the environment, a line of the config file, or the
//! default).
//!
//! The flags of `config` are those of the settings ([`crate::settings::KEYS`]),
//! so that `poolsync config --jobs 4` shows what `poolsync sync --jobs 4`
//! would use.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::{Arg, ArgAction, ArgMatches, Command};
use serde::Serialize;

use crate::output::{emit, emit_json};
use crate::settings::{ConfigFile, Setting, Settings, KEYS};

/// Arguments of `poolsync config`.
#[derive(Debug)]
pub struct Args {
    json: bool,
    /// The flags given, by setting name.
    flags: Vec<(&'static str, String)>,
}

impl clap::Args for Args {
    fn augment_args(cmd: Command) -> Command {
        let mut cmd = cmd.arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("Print a JSON document instead of text (see docs/json.md)"),
        );
        for key in KEYS {
            let long = key.flag.trim_start_matches('-');
            cmd = cmd.arg(
                Arg::new(key.name)
                    .long(long)
                    .value_name(key.kind.value_name())
                    .value_parser(clap::builder::ValueParser::new(
                        move |text: &str| -> Result<String, String> {
                            crate::settings::check_flag(key.name, text)
                        },
                    ))
                    .help(format!(
                        "Show the settings as a command given {} would use",
                        key.flag
                    )),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for Args {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let flags = KEYS
            .iter()
            .filter_map(|k| {
                matches
                    .get_one::<String>(k.name)
                    .map(|v| (k.name, v.clone()))
            })
            .collect();
        Ok(Args {
            json: matches.get_flag("json"),
            flags,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// The `--json` document.
#[derive(Debug, Serialize)]
struct Document<'a> {
    config_file: &'a ConfigFile,
    settings: BTreeMap<&'static str, &'a Setting>,
}

impl Args {
    /// `--json` was given.
    pub fn json(&self) -> bool {
        self.json
    }
}

/// Runs the command; `Ok` carries the exit code.
pub fn run(args: Args, settings: &Settings) -> anyhow::Result<ExitCode> {
    let mut effective = Vec::new();
    for key in KEYS {
        let flag = args
            .flags
            .iter()
            .find(|(name, _)| *name == key.name)
            .map(|(_, v)| v.as_str());
        effective.push(settings.with_flag(key.name, flag)?);
    }
    if args.json {
        let doc = Document {
            config_file: &settings.file,
            settings: effective.iter().map(|s| (s.name, s)).collect(),
        };
        emit_json("config", &doc)?;
    } else {
        emit(&text(&settings.file, &effective))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The settings as a TOML file with the source of each value in a comment,
/// so that the output can serve as a config file.
pub fn text(file: &ConfigFile, effective: &[Setting]) -> String {
    let mut out = String::from("# poolsync settings: flag > environment > config file > default\n");
    match &file.path {
        Some(path) => out.push_str(&format!("# config file: {}\n", path.display())),
        None => out.push_str(&format!(
            "# config file: none (looked for {})\n",
            file.searched
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    let lines: Vec<(String, String)> = effective
        .iter()
        .map(|s| {
            // A setting without a value is a comment, so that the text
            // reads back as the same settings.
            let assignment = match s.value {
                crate::settings::Value::Unset => format!("# {} (not set)", s.name),
                _ => format!("{} = {}", s.name, s.value),
            };
            let source = match (&s.source, crate::settings::key(s.name)) {
                (crate::settings::Source::Default, Some(key)) => {
                    format!("default: {}", key.default_text)
                }
                (source, _) => source.to_string(),
            };
            (assignment, source)
        })
        .collect();
    let width = lines.iter().map(|(a, _)| a.len()).max().unwrap_or(0);
    for (assignment, source) in lines {
        out.push_str(&format!("{assignment:<width$}  # {source}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use expect_test::expect;

    use super::*;
    use crate::settings::{Source, Value};

    fn setting(name: &'static str, value: Value, source: Source) -> Setting {
        Setting {
            name,
            value,
            source,
        }
    }

    #[test]
    fn text_is_a_config_file_that_names_each_source() {
        let file = ConfigFile {
            path: Some(PathBuf::from("/etc/poolsync/config.toml")),
            origin: Some(crate::settings::Origin::System),
            searched: vec![PathBuf::from("/etc/poolsync/config.toml")],
        };
        let effective = [
            setting("jobs", Value::Threads(12), Source::Flag { flag: "--jobs" }),
            setting(
                "wait_lock",
                Value::Seconds(2.5),
                Source::File {
                    path: PathBuf::from("/etc/poolsync/config.toml"),
                    line: 4,
                },
            ),
        ];
        expect![[r#"
            # poolsync settings: flag > environment > config file > default
            # config file: /etc/poolsync/config.toml
            jobs = 12        # flag --jobs
            wait_lock = 2.5  # file /etc/poolsync/config.toml:4
        "#]]
        .assert_eq(&text(&file, &effective));

        let none = ConfigFile {
            path: None,
            origin: None,
            searched: vec![
                PathBuf::from("/srv/a/.config/poolsync/config.toml"),
                PathBuf::from("/etc/poolsync/config.toml"),
            ],
        };
        let effective = [
            setting(
                "jobs",
                Value::Threads(4),
                Source::Env {
                    var: "RAYON_NUM_THREADS",
                },
            ),
            setting("wait_lock", Value::Seconds(0.0), Source::Default),
        ];
        expect![[r#"
            # poolsync settings: flag > environment > config file > default
            # config file: none (looked for /srv/a/.config/poolsync/config.toml, /etc/poolsync/config.toml)
            jobs = 4       # env RAYON_NUM_THREADS
            wait_lock = 0  # default: 0, fail at once
        "#]]
        .assert_eq(&text(&none, &effective));
    }

    #[test]
    fn the_text_reads_back_as_the_same_settings() {
        let file = ConfigFile {
            path: None,
            origin: None,
            searched: Vec::new(),
        };
        let effective = [
            setting("jobs", Value::Threads(6), Source::Default),
            setting("wait_lock", Value::Seconds(1.5), Source::Default),
        ];
        let read = crate::settings::parse_config(
            std::path::Path::new("out.toml"),
            &text(&file, &effective),
        )
        .expect("the output is a valid config file");
        let values: Vec<(&str, Value)> = read.iter().map(|s| (s.name, s.value.clone())).collect();
        assert_eq!(
            values,
            vec![
                ("jobs", Value::Threads(6)),
                ("wait_lock", Value::Seconds(1.5))
            ]
        );
    }
}
