//! Small helpers shared by the commands: locating the repository and the
//! target directory, and running programs with their command line shown.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use anyhow::{bail, Context, Result};

/// The root of the repository (the directory that holds the workspace
/// `Cargo.toml`), derived from where xtask itself was built.
pub fn repo_root() -> Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    match manifest_dir.parent() {
        Some(root) => Ok(root.to_path_buf()),
        None => bail!(
            "xtask's manifest directory {} has no parent",
            manifest_dir.display()
        ),
    }
}

/// `true` when the caller asked for CI semantics (`CI=true`, as GitHub
/// Actions and `.ci/run` set it): missing tools are then errors, not skips.
pub fn ci_requested() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A `cargo` command: the cargo that runs xtask when known, else the one on
/// `PATH`.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
}

/// The workspace's target directory as cargo resolves it
/// (`CARGO_TARGET_DIR`, `build.target-dir` or `<root>/target`).
pub fn target_dir(root: &Path) -> Result<PathBuf> {
    let output = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .context("running `cargo metadata`")?;
    if !output.status.success() {
        bail!(
            "`cargo metadata` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("parsing the output of `cargo metadata`")?;
    match metadata
        .get("target_directory")
        .and_then(serde_json::Value::as_str)
    {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => bail!("`cargo metadata` printed no target_directory"),
    }
}

/// The command line of `cmd` as one would type it (environment variables
/// set on it first), for the transcript.
pub fn display(cmd: &Command) -> String {
    let mut words = Vec::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            words.push(format!("{}={}", key.to_string_lossy(), quote(value)));
        }
    }
    let program = Path::new(cmd.get_program());
    // Show `cargo`, not the absolute path of the cargo binary.
    let program = if program.file_name() == Some(OsStr::new("cargo")) {
        OsStr::new("cargo")
    } else {
        cmd.get_program()
    };
    words.push(quote(program));
    words.extend(cmd.get_args().map(quote));
    words.join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Announces a step on stderr, in a way that stands out in a long log.
pub fn step(title: &str) {
    eprintln!("\n==> {title}");
}

/// Runs `cmd` with inherited stdio after printing `$ <command line>` on
/// stderr, and fails when it exits unsuccessfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Like [`run`], but hands back the exit status instead of judging it.
pub fn status(cmd: &mut Command) -> Result<ExitStatus> {
    eprintln!("$ {}", display(cmd));
    cmd.status()
        .with_context(|| format!("starting `{}`", display(cmd)))
}

/// Flushes stdout so that our own lines come before a child's output.
pub fn flush_stdout() {
    // A failed flush of the terminal is not worth failing a task for: the
    // worst outcome is a transcript line printed out of order.
    let _ = std::io::stdout().flush();
}

/// `true` when an executable called `name` is on `PATH`.
pub fn on_path(name: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| is_executable(&dir.join(name)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `true` when we run as root (so that `apt-get install` can work).
pub fn is_root() -> bool {
    // `id -u` is POSIX; asking it avoids an FFI call in a crate that
    // forbids unsafe code.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "0")
}
