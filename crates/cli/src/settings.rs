//! Settings: what a command-line flag, an environment variable or the
//! config file may set, and which of them wins.
//!
//! Every setting is one row of [`KEYS`]: its name in the config file, its
//! kind (which says how its value is written and checked), its flag and its
//! environment variable. Loading walks the TOML file against that table,
//! so a new setting is one more row (and, for a new kind of value, one
//! more arm in [`Kind`]). Nested names (`serve.root`) are TOML tables.
//!
//! Precedence, highest first: the command-line flag, the environment, the
//! config file, the built-in default. The config file is the first of
//! `--config FILE`, `$POOLSYNC_CONFIG`, `$XDG_CONFIG_HOME/poolsync/config.toml`
//! (`~/.config/...` when `XDG_CONFIG_HOME` is unset) and
//! `/etc/poolsync/config.toml`; only one file is read. A file named by
//! `--config` or `$POOLSYNC_CONFIG` must exist; the two default places may
//! hold none.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail};
use serde::Serialize;

/// The system-wide config file.
pub const SYSTEM_CONFIG: &str = "/etc/poolsync/config.toml";

/// The environment variable that names the config file.
pub const CONFIG_VAR: &str = "POOLSYNC_CONFIG";

/// The most worker threads `jobs` accepts.
pub const MAX_JOBS: u64 = 256;

/// The longest wait for a lock, in seconds (a day).
pub const MAX_WAIT_SECONDS: f64 = 86_400.0;

/// A config file larger than this is certainly not a config file.
const MAX_CONFIG_LEN: u64 = 1 << 20;

/// How a setting's value is written and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A number of worker threads, 1 to [`MAX_JOBS`]. In the environment
    /// (`RAYON_NUM_THREADS`), 0 means "not set", as it does for rayon.
    Threads,
    /// A number of seconds, 0 to [`MAX_WAIT_SECONDS`], whole or not.
    Seconds,
    /// A command line, split into words as a shell would (quotes group
    /// words): the remote shell (`ssh -p 2222`) or the remote poolsync.
    Command,
    /// A directory; a leading `~` is the user's home directory.
    Directory,
    /// A file's path (unset by default).
    Path,
    /// How packets are compressed: `none`, `zstd` or `lz4`.
    Compression,
    /// A size of a packet file, as `--max-size` takes it (`500k`, `20m`,
    /// `1.5g`), or a number of bytes.
    Size,
}

/// The names of the compressions `--compress` takes.
pub const COMPRESSIONS: [&str; 3] = ["none", "zstd", "lz4"];

impl Kind {
    /// What a valid value looks like, for error messages.
    fn expected(self) -> String {
        match self {
            Kind::Threads => format!("a whole number of threads from 1 to {MAX_JOBS}"),
            Kind::Seconds => format!("a number of seconds from 0 to {MAX_WAIT_SECONDS}"),
            Kind::Command => "a command (words, with quotes balanced)".to_string(),
            Kind::Directory => "a directory".to_string(),
            Kind::Path => "the path of a file".to_string(),
            Kind::Compression => "one of none, zstd, lz4".to_string(),
            Kind::Size => {
                "a size such as 500k, 20m or 1.5g (from 64k to 1024g), or a number of bytes"
                    .to_string()
            }
        }
    }

    /// The placeholder of a flag's value in the help.
    pub fn value_name(self) -> &'static str {
        match self {
            Kind::Threads => "N",
            Kind::Seconds => "SECONDS",
            Kind::Command => "CMD",
            Kind::Directory => "DIR",
            Kind::Path => "FILE",
            Kind::Compression => "KIND",
            Kind::Size => "SIZE",
        }
    }

    /// Checks a number, from whichever source.
    fn check_number(self, n: f64, whole: bool) -> Option<Value> {
        match self {
            Kind::Threads if whole && (1.0..=MAX_JOBS as f64).contains(&n) => {
                Some(Value::Threads(n as u64))
            }
            Kind::Seconds if n.is_finite() && (0.0..=MAX_WAIT_SECONDS).contains(&n) => {
                Some(Value::Seconds(n))
            }
            Kind::Size
                if whole
                    && (poolsync_engine::packets::codec::MIN_MAX_SIZE as f64
                        ..=poolsync_engine::packets::codec::MAX_MAX_SIZE as f64)
                        .contains(&n) =>
            {
                Some(Value::Size(n as u64))
            }
            _ => None,
        }
    }

    /// Checks a string value, from whichever source.
    fn check_string(self, text: &str) -> Option<Value> {
        match self {
            Kind::Path if !text.is_empty() => Some(Value::Text(text.to_string())),
            Kind::Compression => COMPRESSIONS
                .iter()
                .find(|c| **c == text)
                .map(|c| Value::Compression(c)),
            Kind::Size => poolsync_engine::packets::codec::parse_max_size(text)
                .ok()
                .map(Value::Size),
            _ => None,
        }
    }

    /// Parses the text of a flag or an environment variable.
    fn parse_text(self, text: &str) -> Option<Value> {
        if matches!(self, Kind::Command | Kind::Directory) {
            return self.check_text(text);
        }
        let text = text.trim();
        match self {
            Kind::Threads => text
                .parse::<u64>()
                .ok()
                .and_then(|n| self.check_number(n as f64, true)),
            Kind::Seconds => text
                .parse::<f64>()
                .ok()
                .and_then(|n| self.check_number(n, false)),
            Kind::Size => match text.parse::<u64>() {
                Ok(n) => self.check_number(n as f64, true),
                Err(_) => self.check_string(text),
            },
            Kind::Path | Kind::Compression => self.check_string(text),
            Kind::Command | Kind::Directory => None,
        }
    }

    /// Checks a text value, from whichever source.
    fn check_text(self, text: &str) -> Option<Value> {
        match self {
            Kind::Command => split_words(text)
                .filter(|w| !w.is_empty())
                .map(|_| Value::Text(text.to_string())),
            Kind::Directory if !text.trim().is_empty() => Some(Value::Text(text.to_string())),
            _ => None,
        }
    }

    /// Converts a TOML value, or says what is wrong with it.
    fn read_toml(self, value: &toml_edit::Value) -> Result<Value, String> {
        if let (Kind::Command | Kind::Directory, toml_edit::Value::String(s)) = (self, value) {
            return self
                .check_text(s.value())
                .ok_or_else(|| format!("expected {}, found {:?}", self.expected(), s.value()));
        }
        let found = match value {
            toml_edit::Value::Integer(i) => {
                let n = *i.value();
                return self
                    .check_number(n as f64, true)
                    .ok_or_else(|| format!("expected {}, found {n}", self.expected()));
            }
            toml_edit::Value::Float(f) if self == Kind::Seconds => {
                let n = *f.value();
                return self
                    .check_number(n, false)
                    .ok_or_else(|| format!("expected {}, found {n}", self.expected()));
            }
            toml_edit::Value::Float(f) => format!("the number {}", f.value()),
            toml_edit::Value::String(s)
                if matches!(self, Kind::Path | Kind::Compression | Kind::Size) =>
            {
                return self
                    .check_string(s.value())
                    .ok_or_else(|| format!("expected {}, found {:?}", self.expected(), s.value()));
            }
            toml_edit::Value::String(s) => format!("the string {:?}", s.value()),
            toml_edit::Value::Boolean(b) => format!("the boolean {}", b.value()),
            toml_edit::Value::Datetime(_) => "a date".to_string(),
            toml_edit::Value::Array(_) => "an array".to_string(),
            toml_edit::Value::InlineTable(_) => "a table".to_string(),
        };
        Err(format!("expected {}, found {found}", self.expected()))
    }
}

/// A setting's value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// [`Kind::Threads`].
    Threads(u64),
    /// [`Kind::Seconds`].
    Seconds(f64),
    /// [`Kind::Command`], [`Kind::Directory`] and [`Kind::Path`].
    Text(String),
    /// [`Kind::Compression`].
    Compression(&'static str),
    /// [`Kind::Size`], in bytes.
    Size(u64),
    /// No value: the setting is off (a [`Kind::Path`] by default).
    Unset,
}

impl Value {
    /// The value as a flag or environment variable would give it.
    pub fn flag_text(&self) -> String {
        match self {
            Value::Text(t) => t.clone(),
            other => other.to_string(),
        }
    }
}

/// Its TOML form, so that `poolsync config` prints a valid config file.
impl fmt::Display for Value {
    /// The value as TOML writes it (so that `poolsync config` prints a
    /// config file).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Threads(n) => write!(f, "{n}"),
            Value::Seconds(s) => write!(f, "{s}"),
            Value::Text(t) => write!(f, "{}", toml_edit::Value::from(t.as_str())),
            Value::Compression(c) => write!(f, "{}", toml_edit::Value::from(*c)),
            Value::Size(n) => write!(f, "{n}"),
            Value::Unset => f.write_str("\"\""),
        }
    }
}

/// Splits a command line into words as a POSIX shell would, for the
/// common cases: blanks separate words, single quotes keep everything,
/// double quotes keep everything but `\"` and `\\`, a backslash
/// outside quotes keeps the next character. `None` when a quote is not
/// closed.
pub fn split_words(text: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            c @ ('"' | '\\') => word.push(c),
                            c => {
                                word.push('\\');
                                word.push(c);
                            }
                        },
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next()?);
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// One setting: a row of the schema.
#[derive(Debug)]
pub struct Key {
    /// The name in the config file (dots separate tables: `serve.root`).
    pub name: &'static str,
    /// How its value is written and checked.
    pub kind: Kind,
    /// The command-line flag that sets it.
    pub flag: &'static str,
    /// The environment variable that sets it.
    pub env: &'static str,
    /// What it does, for `poolsync config`, the README and the man page.
    pub help: &'static str,
    /// The default, described.
    pub default_text: &'static str,
    /// The default value.
    default: fn() -> Value,
}

/// Every setting. Add a row here (and, for a new kind of value, an arm to
/// [`Kind`]); loading, `poolsync config` and the man page follow.
pub const KEYS: &[Key] = &[
    Key {
        name: "jobs",
        kind: Kind::Threads,
        flag: "--jobs",
        env: "RAYON_NUM_THREADS",
        help: "worker threads that copy, compare and hash data: sync, transform, check --data, sync --verify, and the reading of export and import (they read with one thread more)",
        default_text: "the machine's parallelism, at most 8",
        default: || Value::Threads(poolsync_engine::compare::default_threads() as u64),
    },
    Key {
        name: "wait_lock",
        kind: Kind::Seconds,
        flag: "--wait-lock",
        env: "POOLSYNC_WAIT_LOCK",
        help: "seconds that info, check, sync, export, import and epoch wait while another process has the pool open; 0: fail at once",
        default_text: "0, fail at once",
        default: || Value::Seconds(0.0),
    },
    Key {
        name: "rsh",
        kind: Kind::Command,
        flag: "--rsh",
        env: "POOLSYNC_RSH",
        help: "the remote shell that reaches the hosts of remote replicas (REPLICA host set), run as CMD [user@]host REMOTE_PATH serve, as rsync's -e",
        default_text: "ssh",
        default: || Value::Text("ssh".to_string()),
    },
    Key {
        name: "remote_path",
        kind: Kind::Command,
        flag: "--remote-path",
        env: "POOLSYNC_REMOTE_PATH",
        help: "poolsync on the hosts of remote replicas: the command (with any leading words, such as sudo) the remote shell runs with serve",
        default_text: "poolsync",
        default: || Value::Text("poolsync".to_string()),
    },
    Key {
        name: "serve.root",
        kind: Kind::Directory,
        flag: "--root",
        env: "POOLSYNC_SERVE_ROOT",
        help: "poolsync serve: the directory remote pool set files are named relative to; nothing outside it is touched",
        default_text: "the user's home directory (~)",
        default: || Value::Text("~".to_string()),
    },
    Key {
        name: "key_file",
        kind: Kind::Path,
        flag: "--key-file",
        env: "POOLSYNC_KEY_FILE",
        help: "a file of 16 bytes to 64 KiB of secret shared by the sites: export signs packets with a MAC derived from it, import and packet accept only packets signed with it",
        default_text: "none: packets carry checksums, which catch damage but not forgery",
        default: || Value::Unset,
    },
    Key {
        name: "compression",
        kind: Kind::Compression,
        flag: "--compress",
        env: "POOLSYNC_COMPRESSION",
        help: "how export compresses packets: none, zstd or lz4",
        default_text: "none",
        default: || Value::Compression("none"),
    },
    Key {
        name: "max_size",
        kind: Kind::Size,
        flag: "--max-size",
        env: "POOLSYNC_MAX_SIZE",
        help: "the largest physical packet file export writes (500k, 20m, 1.5g; 64k to 1024g)",
        default_text: "2097151k, just under 2 GiB",
        default: || Value::Size(poolsync_engine::packets::codec::DEFAULT_MAX_SIZE),
    },
];

/// The schema row of `name`.
pub fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// clap's check of a setting's flag: the text must parse as the setting's
/// kind (the value is parsed again when the settings are resolved).
pub fn check_flag(name: &str, text: &str) -> Result<String, String> {
    match key(name) {
        Some(k) if k.kind.parse_text(text).is_some() => Ok(text.to_string()),
        Some(k) => Err(format!("expected {}", k.kind.expected())),
        None => Err(format!("unknown setting {name}")),
    }
}

/// clap's value parser of `--jobs`.
pub fn jobs_flag(text: &str) -> Result<String, String> {
    check_flag("jobs", text)
}

/// clap's value parser of `--wait-lock`.
pub fn wait_lock_flag(text: &str) -> Result<String, String> {
    check_flag("wait_lock", text)
}

/// clap's value parser of `--max-size`.
pub fn max_size_flag(text: &str) -> Result<String, String> {
    poolsync_engine::packets::codec::parse_max_size(text)
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

/// clap's value parser of `--compress`.
pub fn compress_flag(text: &str) -> Result<String, String> {
    check_flag("compression", text)
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// A command-line flag.
    Flag {
        /// The flag, `--jobs`.
        flag: &'static str,
    },
    /// An environment variable.
    Env {
        /// The variable.
        var: &'static str,
    },
    /// The config file.
    File {
        /// The file.
        path: PathBuf,
        /// The line of the key.
        line: usize,
    },
    /// The built-in default.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag { flag } => write!(f, "flag {flag}"),
            Source::Env { var } => write!(f, "env {var}"),
            Source::File { path, line } => write!(f, "file {}:{line}", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// A resolved setting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setting {
    /// Its name.
    #[serde(skip)]
    pub name: &'static str,
    /// Its value.
    pub value: Value,
    /// Where the value came from.
    pub source: Source,
}

/// How the config file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `--config FILE`.
    Flag,
    /// `$POOLSYNC_CONFIG`.
    Env,
    /// `$XDG_CONFIG_HOME/poolsync/config.toml` (or `~/.config/...`).
    User,
    /// `/etc/poolsync/config.toml`.
    System,
}

/// The config file that was read, if any, and where poolsync looked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigFile {
    /// The file read, `None` when neither default place holds one.
    pub path: Option<PathBuf>,
    /// How it was found.
    pub origin: Option<Origin>,
    /// The places looked at, in order.
    pub searched: Vec<PathBuf>,
}

/// The settings before command-line flags: defaults, the config file and
/// the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file.
    pub file: ConfigFile,
    /// One per row of [`KEYS`], in order.
    settings: Vec<Setting>,
}

/// Where [`Settings::load`] reads the environment and the system file.
#[derive(Debug, Clone)]
pub struct Environment {
    vars: Vec<(String, OsString)>,
    system: PathBuf,
}

impl Environment {
    /// This process's environment and [`SYSTEM_CONFIG`].
    pub fn process() -> Self {
        let names = [CONFIG_VAR, "XDG_CONFIG_HOME", "HOME"];
        let vars = names
            .into_iter()
            .chain(KEYS.iter().map(|k| k.env))
            .filter_map(|name| std::env::var_os(name).map(|v| (name.to_string(), v)))
            .collect();
        Environment {
            vars,
            system: PathBuf::from(SYSTEM_CONFIG),
        }
    }

    /// A given environment and system file (tests).
    #[cfg(test)]
    pub fn new(vars: &[(&str, &str)], system: &Path) -> Self {
        Environment {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), OsString::from(v)))
                .collect(),
            system: system.to_path_buf(),
        }
    }

    /// A variable's value; empty counts as unset.
    fn var(&self, name: &str) -> Option<&OsString> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty())
    }
}

impl Settings {
    /// Finds and reads the config file (`--config` is `flag`), then reads
    /// the environment. Every error names the file and line, or the variable.
    pub fn load(flag: Option<&Path>, env: &Environment) -> anyhow::Result<Settings> {
        let file = find_file(flag, env)?;
        let mut from_file = match &file.path {
            Some(path) => read_file(path)?,
            None => Vec::new(),
        };
        let mut settings = Vec::new();
        for key in KEYS {
            let env_value = match env.var(key.env) {
                Some(raw) => parse_env(key, raw)?,
                None => None,
            };
            let setting = if let Some(value) = env_value {
                Setting {
                    name: key.name,
                    value,
                    source: Source::Env { var: key.env },
                }
            } else if let Some(i) = from_file.iter().position(|s| s.name == key.name) {
                from_file.swap_remove(i)
            } else {
                Setting {
                    name: key.name,
                    value: (key.default)(),
                    source: Source::Default,
                }
            };
            settings.push(setting);
        }
        Ok(Settings { file, settings })
    }

    /// Every setting, in the order of [`KEYS`].
    pub fn all(&self) -> &[Setting] {
        &self.settings
    }

    /// The setting `name` with its flag's text applied (the flag wins).
    pub fn with_flag(&self, name: &str, flag: Option<&str>) -> anyhow::Result<Setting> {
        let key = key(name).ok_or_else(|| anyhow!("unknown setting {name}"))?;
        if let Some(text) = flag {
            let value = key
                .kind
                .parse_text(text)
                .ok_or_else(|| anyhow!("{} {text}: expected {}", key.flag, key.kind.expected()))?;
            return Ok(Setting {
                name: key.name,
                value,
                source: Source::Flag { flag: key.flag },
            });
        }
        self.settings
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .ok_or_else(|| anyhow!("setting {name} was not loaded"))
    }

    /// The number of worker threads, with the `--jobs` flag's text.
    pub fn jobs(&self, flag: Option<&str>) -> anyhow::Result<usize> {
        match self.with_flag("jobs", flag)?.value {
            Value::Threads(n) => Ok(usize::try_from(n)?),
            other => bail!("jobs holds {other}, not a number of threads"),
        }
    }

    /// The key file, with the `--key-file` flag's text; `None` when unset.
    pub fn key_file(&self, flag: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
        let text = flag.map(|p| p.to_string_lossy().into_owned());
        match self.with_flag("key_file", text.as_deref())?.value {
            Value::Text(t) => Ok(Some(PathBuf::from(t))),
            Value::Unset => Ok(None),
            other => bail!("key_file holds {other}, not a path"),
        }
    }

    /// The compression, with the `--compress` flag's text.
    pub fn compression(
        &self,
        flag: Option<&str>,
    ) -> anyhow::Result<poolsync_engine::packets::Compression> {
        use poolsync_engine::packets::Compression;
        match self.with_flag("compression", flag)?.value {
            Value::Compression("zstd") => Ok(Compression::Zstd),
            Value::Compression("lz4") => Ok(Compression::Lz4),
            Value::Compression(_) => Ok(Compression::None),
            other => bail!("compression holds {other}, not a compression"),
        }
    }

    /// The largest packet file, with the `--max-size` flag's text.
    pub fn max_size(&self, flag: Option<&str>) -> anyhow::Result<u64> {
        match self.with_flag("max_size", flag)?.value {
            Value::Size(n) => Ok(n),
            other => bail!("max_size holds {other}, not a size"),
        }
    }

    /// How long to wait for a locked pool, with the `--wait-lock` flag's
    /// text; `None` for "do not wait" (0).
    pub fn wait_lock(&self, flag: Option<&str>) -> anyhow::Result<Option<Duration>> {
        match self.with_flag("wait_lock", flag)?.value {
            Value::Seconds(s) if s > 0.0 => Ok(Some(Duration::try_from_secs_f64(s)?)),
            Value::Seconds(_) => Ok(None),
            other => bail!("wait_lock holds {other}, not a number of seconds"),
        }
    }

    /// A command setting (`rsh`, `remote_path`) split into words, with its
    /// flag's text.
    pub fn command(&self, name: &str, flag: Option<&str>) -> anyhow::Result<Vec<String>> {
        let setting = self.with_flag(name, flag)?;
        match &setting.value {
            Value::Text(t) => split_words(t)
                .filter(|w| !w.is_empty())
                .ok_or_else(|| anyhow!("{name} ({}): {t:?} is not a command", setting.source)),
            other => bail!("{name} holds {other}, not a command"),
        }
    }

    /// `serve.root`, with its flag's text; a leading `~` is `home`.
    pub fn serve_root(&self, flag: Option<&str>, home: Option<&Path>) -> anyhow::Result<PathBuf> {
        let setting = self.with_flag("serve.root", flag)?;
        let Value::Text(text) = &setting.value else {
            bail!("serve.root holds {}, not a directory", setting.value);
        };
        let tilde = |rest: &str| -> anyhow::Result<PathBuf> {
            let home = home.ok_or_else(|| {
                anyhow!(
                    "serve.root ({}) is {text:?}, but HOME is not set: give --root DIR",
                    setting.source
                )
            })?;
            Ok(home.join(rest))
        };
        match text.strip_prefix('~') {
            Some("") => tilde(""),
            Some(rest) if rest.starts_with('/') => tilde(rest.trim_start_matches('/')),
            _ => Ok(PathBuf::from(text)),
        }
    }
}

/// `--config`, then `$POOLSYNC_CONFIG` (both must exist), then the user's
/// and the system's file (either may be missing).
fn find_file(flag: Option<&Path>, env: &Environment) -> anyhow::Result<ConfigFile> {
    let named = match (flag, env.var(CONFIG_VAR)) {
        (Some(path), _) => Some((path.to_path_buf(), Origin::Flag, "--config".to_string())),
        (None, Some(path)) => Some((
            PathBuf::from(path),
            Origin::Env,
            format!("{CONFIG_VAR}={}", Path::new(path).display()),
        )),
        (None, None) => None,
    };
    if let Some((path, origin, what)) = named {
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => bail!("{what}: {} is not a file", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{what}: {}: no such file (give an existing config file, or leave it out to use {})",
                path.display(),
                default_places(env)
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
            Err(e) => bail!("{what}: {}: {}", path.display(), io_text(&e)),
        }
        return Ok(ConfigFile {
            searched: vec![path.clone()],
            path: Some(path),
            origin: Some(origin),
        });
    }
    let places = default_places(env);
    let mut searched = Vec::new();
    for path in places {
        let exists = match std::fs::metadata(&path) {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => bail!("{}: {}", path.display(), io_text(&e)),
        };
        searched.push(path.clone());
        if exists {
            let origin = if path == env.system {
                Origin::System
            } else {
                Origin::User
            };
            return Ok(ConfigFile {
                path: Some(path),
                origin: Some(origin),
                searched,
            });
        }
    }
    Ok(ConfigFile {
        path: None,
        origin: None,
        searched,
    })
}

/// The user's file (XDG base directories: `$XDG_CONFIG_HOME`, else
/// `~/.config`; a relative `XDG_CONFIG_HOME` is ignored, as the
/// specification asks) and the system's.
fn default_places(env: &Environment) -> Vec<PathBuf> {
    let user = env
        .var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            env.var("HOME")
                .map(|home| Path::new(home).join(".config"))
                .filter(|p| p.is_absolute())
        });
    let mut places = Vec::new();
    if let Some(dir) = user {
        places.push(dir.join("poolsync").join("config.toml"));
    }
    places.push(env.system.clone());
    places
}

/// An I/O error's text without Rust's ` (os error N)` suffix.
fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The value of a setting's environment variable; `None` when it means
/// "not set" (`RAYON_NUM_THREADS=0`).
fn parse_env(key: &'static Key, raw: &OsString) -> anyhow::Result<Option<Value>> {
    let text = raw.to_string_lossy();
    if key.kind == Kind::Threads && text.trim() == "0" {
        return Ok(None);
    }
    match key.kind.parse_text(&text) {
        Some(value) => Ok(Some(value)),
        None => bail!(
            "environment variable {}={text:?}: expected {} (it sets {}; unset it to use the config file or the default)",
            key.env,
            key.kind.expected(),
            key.name
        ),
    }
}

/// Reads the config file and checks every key against [`KEYS`].
fn read_file(path: &Path) -> anyhow::Result<Vec<Setting>> {
    let len = std::fs::metadata(path)
        .map_err(|e| anyhow!("{}: {}", path.display(), io_text(&e)))?
        .len();
    if len > MAX_CONFIG_LEN {
        bail!(
            "{}: {len} bytes is far too large for a config file",
            path.display()
        );
    }
    let bytes = std::fs::read(path).map_err(|e| anyhow!("{}: {}", path.display(), io_text(&e)))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        anyhow!(
            "{}:{line}: the config file is not UTF-8 text",
            path.display()
        )
    })?;
    parse_config(path, &text)
}

/// The 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    1 + text
        .as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
}

/// Parses config text (`path` only names it in errors).
pub fn parse_config(path: &Path, text: &str) -> anyhow::Result<Vec<Setting>> {
    let doc = toml_edit::ImDocument::parse(text).map_err(|e| {
        // toml_edit reports the error's position in characters.
        let line = e.span().map_or(1, |span| {
            1 + text.chars().take(span.start).filter(|&c| c == '\n').count()
        });
        let message = e.message().trim().replace('\n', "; ");
        anyhow!("{}:{line}: invalid TOML: {message}", path.display())
    })?;
    let mut found = Vec::new();
    walk(path, text, doc.as_table(), "", &mut found)?;
    Ok(found)
}

/// Checks every key of `table` (whose name is `prefix`) against [`KEYS`].
fn walk(
    path: &Path,
    text: &str,
    table: &dyn toml_edit::TableLike,
    prefix: &str,
    found: &mut Vec<Setting>,
) -> anyhow::Result<()> {
    for (name, item) in table.iter() {
        let full = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        let line = table
            .key(name)
            .and_then(|k| k.span())
            .or_else(|| item.span())
            .map_or(0, |span| line_at(text, span.start));
        let at = if line > 0 {
            format!("{}:{line}", path.display())
        } else {
            path.display().to_string()
        };
        let is_table_name = KEYS.iter().any(|k| k.name.starts_with(&format!("{full}.")));
        match (key(&full), item.as_table_like()) {
            (None, Some(inner)) if is_table_name => walk(path, text, inner, &full, found)?,
            (None, _) => bail!("{at}: unknown key {full:?}{}", suggestion(&full)),
            (Some(k), _) => {
                let value = item
                    .as_value()
                    .ok_or_else(|| {
                        anyhow!(
                            "{at}: {full}: expected {}, found a table",
                            k.kind.expected()
                        )
                    })
                    .and_then(|v| {
                        k.kind
                            .read_toml(v)
                            .map_err(|why| anyhow!("{at}: {full}: {why}"))
                    })?;
                found.push(Setting {
                    name: k.name,
                    value,
                    source: Source::File {
                        path: path.to_path_buf(),
                        line,
                    },
                });
            }
        }
    }
    Ok(())
}

/// `(did you mean "jobs"?) (known keys: ...)` for an unknown key.
fn suggestion(name: &str) -> String {
    let known: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    let close = known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min();
    let mut text = String::new();
    if let Some((_, k)) = close {
        text.push_str(&format!(" (did you mean {k:?}?)"));
    }
    text.push_str(&format!("; the known keys are {}", known.join(", ")));
    text
}

/// Levenshtein distance of two short strings.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temp dir holding `files` (relative path, text).
    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    fn s(p: &Path) -> &str {
        p.to_str().expect("utf-8 temp path")
    }

    fn load(flag: Option<&Path>, vars: &[(&str, &str)], system: &Path) -> anyhow::Result<Settings> {
        Settings::load(flag, &Environment::new(vars, system))
    }

    fn error(result: anyhow::Result<Settings>) -> String {
        result.expect_err("an error").to_string()
    }

    #[test]
    fn every_key_has_a_distinct_name_flag_and_variable() {
        for (i, a) in KEYS.iter().enumerate() {
            assert!(a.flag.starts_with("--"), "{}", a.name);
            assert!(!a.env.is_empty() && !a.help.is_empty() && !a.default_text.is_empty());
            for b in &KEYS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.flag, b.flag);
                assert_ne!(a.env, b.env);
            }
            // The default passes the key's own check (or is no value).
            let default = (a.default)();
            if default != Value::Unset {
                let text = match &default {
                    Value::Text(t) => t.clone(),
                    Value::Compression(c) => c.to_string(),
                    other => other.to_string(),
                };
                assert!(a.kind.parse_text(&text).is_some(), "{}: {text}", a.name);
            }
        }
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_file_which_beats_the_default() {
        let dir = dir_with(&[("c.toml", "jobs = 3\nwait_lock = 2.5\n")]);
        let file = dir.path().join("c.toml");
        let none = dir.path().join("no-system.toml");

        let defaults = load(None, &[("HOME", s(dir.path()))], &none).expect("load");
        assert_eq!(defaults.file.path, None);
        let jobs = defaults.with_flag("jobs", None).expect("jobs");
        assert_eq!(jobs.source, Source::Default);
        assert_eq!(
            defaults.jobs(None).expect("jobs"),
            poolsync_engine::compare::default_threads()
        );
        assert_eq!(defaults.wait_lock(None).expect("wait"), None);

        let from_file = load(Some(&file), &[], &none).expect("load");
        assert_eq!(from_file.jobs(None).expect("jobs"), 3);
        assert_eq!(
            from_file.with_flag("jobs", None).expect("jobs").source,
            Source::File {
                path: file.clone(),
                line: 1
            }
        );
        assert_eq!(
            from_file.wait_lock(None).expect("wait"),
            Some(Duration::from_millis(2500))
        );

        let vars = [("RAYON_NUM_THREADS", "5"), ("POOLSYNC_WAIT_LOCK", "0")];
        let from_env = load(Some(&file), &vars, &none).expect("load");
        assert_eq!(from_env.jobs(None).expect("jobs"), 5);
        assert_eq!(from_env.wait_lock(None).expect("wait"), None);
        assert_eq!(
            from_env.with_flag("wait_lock", None).expect("wait").source,
            Source::Env {
                var: "POOLSYNC_WAIT_LOCK"
            }
        );

        assert_eq!(from_env.jobs(Some("7")).expect("jobs"), 7);
        assert_eq!(
            from_env.with_flag("jobs", Some("7")).expect("jobs").source,
            Source::Flag { flag: "--jobs" }
        );
        assert_eq!(
            from_env.wait_lock(Some("0.25")).expect("wait"),
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn rayon_num_threads_zero_means_not_set_as_for_rayon() {
        let dir = dir_with(&[("c.toml", "jobs = 3\n")]);
        let file = dir.path().join("c.toml");
        let settings = load(Some(&file), &[("RAYON_NUM_THREADS", "0")], &file).expect("load");
        assert_eq!(settings.jobs(None).expect("jobs"), 3);
    }

    #[test]
    fn the_config_file_is_searched_in_order() {
        let dir = dir_with(&[
            ("flag.toml", "jobs = 1\n"),
            ("env.toml", "jobs = 2\n"),
            ("xdg/poolsync/config.toml", "jobs = 3\n"),
            ("home/.config/poolsync/config.toml", "jobs = 4\n"),
            ("etc/config.toml", "jobs = 5\n"),
        ]);
        let d = dir.path();
        let system = d.join("etc/config.toml");
        let env_file = d.join("env.toml");
        let vars = [
            (CONFIG_VAR, s(&env_file)),
            (
                "XDG_CONFIG_HOME",
                &*d.join("xdg").to_string_lossy().into_owned(),
            ),
            ("HOME", &*d.join("home").to_string_lossy().into_owned()),
        ];
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, *v)).collect();
        let jobs = |flag: Option<&Path>, vars: &[(&str, &str)]| {
            load(flag, vars, &system)
                .expect("load")
                .jobs(None)
                .expect("jobs")
        };
        assert_eq!(jobs(Some(&d.join("flag.toml")), &vars), 1);
        assert_eq!(jobs(None, &vars), 2);
        assert_eq!(jobs(None, &vars[1..]), 3);
        assert_eq!(jobs(None, &vars[2..]), 4);
        // A relative XDG_CONFIG_HOME is ignored, as the XDG spec asks.
        assert_eq!(jobs(None, &[("XDG_CONFIG_HOME", "xdg"), vars[2]]), 4);
        assert_eq!(jobs(None, &[]), 5);
        let loaded = load(None, &[], &system).expect("load");
        assert_eq!(loaded.file.origin, Some(Origin::System));
        // A missing default file is fine.
        let nothing = load(None, &[("HOME", s(d))], &d.join("none.toml")).expect("load");
        assert_eq!(nothing.file.path, None);
        assert_eq!(nothing.file.searched.len(), 2);
    }

    #[test]
    fn a_named_file_must_exist() {
        let dir = dir_with(&[]);
        let missing = dir.path().join("missing.toml");
        let message = error(load(Some(&missing), &[], &missing));
        assert!(message.starts_with("--config: "), "{message}");
        assert!(message.contains("missing.toml: no such file"), "{message}");
        let message = error(load(None, &[(CONFIG_VAR, s(&missing))], &missing));
        assert!(message.starts_with("POOLSYNC_CONFIG="), "{message}");
        let message = error(load(Some(dir.path()), &[], &missing));
        assert!(message.contains("is not a file"), "{message}");
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        let cases: [(&str, &str); 12] = [
            ("\n\njob = 3\n", ":3: unknown key \"job\" (did you mean \"jobs\"?); the known keys are jobs, wait_lock, rsh, remote_path, serve.root"),
            ("jobs = 2\n[serve]\nrot = \"/x\"\n", ":3: unknown key \"serve.rot\" (did you mean \"serve.root\"?)"),
            ("[serve]\nroot = 3\n", ":2: serve.root: expected a directory, found 3"),
            ("rsh = \"ssh -o 'x\"\n", ":1: rsh: expected a command (words, with quotes balanced), found \"ssh -o 'x\""),
            ("remote_path = \"\"\n", ":1: remote_path: expected a command (words, with quotes balanced), found \"\""),
            ("# a comment\njobs = \"four\"\n", ":2: jobs: expected a whole number of threads from 1 to 256, found the string \"four\""),
            ("jobs = 0\n", ":1: jobs: expected a whole number of threads from 1 to 256, found 0"),
            ("jobs = 2.5\n", ":1: jobs: expected a whole number of threads from 1 to 256, found the number 2.5"),
            ("wait_lock = -1\n", ":1: wait_lock: expected a number of seconds from 0 to 86400, found -1"),
            ("wait_lock = true\n", ":1: wait_lock: expected a number of seconds from 0 to 86400, found the boolean true"),
            ("jobs = 1\n[jobs]\n", ":2: invalid TOML: "),
            ("jobs = [\n", ":2: invalid TOML: "),
        ];
        for (text, wanted) in cases {
            let dir = dir_with(&[("config.toml", text)]);
            let file = dir.path().join("config.toml");
            let message = error(load(Some(&file), &[], &file));
            let expected = format!("{}{wanted}", file.display());
            assert!(
                message.starts_with(&expected),
                "{text:?}:\n  got {message}\n  not {expected}"
            );
        }
    }

    #[test]
    fn commands_split_as_a_shell_would_and_the_root_expands_tilde() {
        let w = |t: &str| split_words(t).map(|v| v.join("|"));
        assert_eq!(w("ssh -p 2222"), Some("ssh|-p|2222".into()));
        assert_eq!(
            w(r#"ssh -o "UserKnownHostsFile=/a b" -i 'k y'"#),
            Some("ssh|-o|UserKnownHostsFile=/a b|-i|k y".into())
        );
        assert_eq!(
            w(r#"sh -c 'shift; exec "$@"' sh"#),
            Some(r#"sh|-c|shift; exec "$@"|sh"#.into())
        );
        assert_eq!(w(r"a\ b"), Some("a b".into()));
        assert_eq!(w("ssh 'x"), None);
        let dir = dir_with(&[]);
        let none = dir.path().join("none.toml");
        let set = load(
            None,
            &[("POOLSYNC_RSH", "ssh -p 2222"), ("HOME", s(dir.path()))],
            &none,
        )
        .unwrap();
        assert_eq!(set.command("rsh", None).unwrap(), ["ssh", "-p", "2222"]);
        assert_eq!(set.command("rsh", Some("rsh")).unwrap(), ["rsh"]);
        assert_eq!(set.command("remote_path", None).unwrap(), ["poolsync"]);
        let home = Path::new("/users/u");
        assert_eq!(set.serve_root(None, Some(home)).unwrap(), home);
        assert_eq!(
            set.serve_root(Some("~/pools"), Some(home)).unwrap(),
            home.join("pools")
        );
        assert_eq!(
            set.serve_root(Some("/srv"), None).unwrap(),
            PathBuf::from("/srv")
        );
        assert!(set.serve_root(None, None).is_err());
    }

    #[test]
    fn a_bad_environment_variable_is_named() {
        let dir = dir_with(&[]);
        let none = dir.path().join("none.toml");
        let message = error(load(None, &[("RAYON_NUM_THREADS", "many")], &none));
        assert!(
            message.starts_with(
                "environment variable RAYON_NUM_THREADS=\"many\": expected a whole number"
            ),
            "{message}"
        );
        let message = error(load(None, &[("POOLSYNC_WAIT_LOCK", "NaN")], &none));
        assert!(message.contains("POOLSYNC_WAIT_LOCK"), "{message}");
    }

    #[test]
    fn flags_are_checked_as_the_config_file_is() {
        assert_eq!(jobs_flag("4"), Ok("4".to_string()));
        assert!(jobs_flag("0").is_err());
        assert!(jobs_flag("257").is_err());
        assert!(jobs_flag("2.5").is_err());
        assert_eq!(wait_lock_flag("0.5"), Ok("0.5".to_string()));
        assert!(wait_lock_flag("-1").is_err());
        assert!(wait_lock_flag("inf").is_err());
        assert!(wait_lock_flag("1e30").is_err());
    }

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("job", "jobs"), 1);
        assert_eq!(edit_distance("wait-lock", "wait_lock"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("serve", "jobs"), 5);
    }
}
