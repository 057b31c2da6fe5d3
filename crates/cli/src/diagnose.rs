//! Error messages that say how to fix things: each names what is wrong and
//! where, then the command that fixes it where there is one.
//!
//! The engine's errors name the file, line or offset; this module turns the
//! ones a user can act on into advice: a pool in use (wait with
//! `--wait-lock`), a pool set file without its `PMEMPOOLSET` line (the
//! `sed` that adds it), a broken replica (`poolsync sync`).

use std::path::Path;
use std::time::Duration;

use poolsync_engine::inspect::Health;
use poolsync_engine::Error;
use poolsync_pmem::FsStorage;
use poolsync_poolset::SignatureFix;

/// What a command can offer for a pool in use.
#[derive(Debug, Clone, Copy)]
pub enum Waiting {
    /// The command has `--wait-lock`; it waited this long (`None`: not at all).
    Supported(Option<Duration>),
    /// The command has no `--wait-lock`.
    Unsupported,
}

/// The one-line message of an engine error of a command run on `path`:
/// advice for a pool in use and for a pool set file without its first
/// line, else the error with each cause once.
pub fn explain(e: Error, path: &Path, waiting: Waiting) -> String {
    if let Some(message) = locked(&e, waiting) {
        return message;
    }
    if let Some(message) = missing_signature(path) {
        return message;
    }
    crate::output::error_text(&anyhow::Error::new(e))
}

/// A part another process holds locked: who holds it and what to do.
pub fn locked(e: &Error, waiting: Waiting) -> Option<String> {
    let (at, part, timed_out) = match e {
        Error::Storage(poolsync_pmem::Error::Locked { path }) => (String::new(), path, false),
        Error::PartStorage {
            set,
            line,
            error: poolsync_pmem::Error::Locked { path },
        } => (format!("{}:{line}: ", set.display()), path, false),
        Error::LockTimeout {
            error: poolsync_pmem::Error::Locked { path },
            ..
        } => (String::new(), path, true),
        _ => return None,
    };
    let what = format!(
        "{at}{} is in use by another process (flock: resource temporarily unavailable)",
        part.display()
    );
    let advice = match waiting {
        Waiting::Supported(Some(waited)) if timed_out => format!(
            "it was still in use after waiting {} s (--wait-lock); close the application that has the pool open, or wait longer",
            seconds(waited)
        ),
        Waiting::Supported(_) => "close the application that has the pool open, or wait until it does with --wait-lock SECONDS".to_string(),
        Waiting::Unsupported => "close the application that has the pool open and run the command again".to_string(),
    };
    Some(format!("{what}; {advice}"))
}

/// `2`, `0.5`, `1.25`: a duration in seconds as the user would write it.
fn seconds(d: Duration) -> String {
    let text = format!("{:.3}", d.as_secs_f64());
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A file that was meant as a pool set but lacks its `PMEMPOOLSET` first
/// line, so that it is taken for a single-file pool (and gets the errors of
/// one): text that becomes a valid pool set with that line, or any text
/// file named `*.set`.
pub fn missing_signature(path: &Path) -> Option<String> {
    let text = poolsync_engine::load::non_poolset_text(&FsStorage, path)?;
    let shown = path.display();
    let quoted = shell_quote(path);
    match poolsync_poolset::signature_fix(&text) {
        Some(SignatureFix::Insert) => Some(format!(
            "{shown}:1: not a pool set file: the first line must be exactly 'PMEMPOOLSET' \
             (the rest of the file is a valid pool set); add it with: sed -i '1i PMEMPOOLSET' {quoted}"
        )),
        Some(SignatureFix::Replace { first_line }) => Some(format!(
            "{shown}:1: not a pool set file: the first line is '{first_line}' but must be exactly \
             'PMEMPOOLSET'; fix it with: sed -i '1s/.*/PMEMPOOLSET/' {quoted}"
        )),
        None if path.extension().is_some_and(|e| e == "set") => {
            let then = match poolsync_poolset::parse(&format!("PMEMPOOLSET\n{text}")) {
                Err(e) if e.line() > 1 => format!(
                    "; the rest of the file is not a valid pool set either ({shown}:{}: {})",
                    e.line() - 1,
                    e.reason()
                ),
                _ => String::new(),
            };
            Some(format!(
                "{shown}:1: not a pool set file: the first line must be exactly 'PMEMPOOLSET' \
                 (without it the file is taken for a single-file pool){then}"
            ))
        }
        None => None,
    }
}

/// The broken replicas that `poolsync sync` can rebuild from a healthy
/// one, and the command: `None` when there is none, or no healthy source.
pub fn sync_fix(health: &Health, poolset: &Path) -> Option<(String, String)> {
    let source = health.sync_source()?;
    let broken: Vec<String> = health
        .replicas
        .iter()
        .filter(|r| r.broken)
        .map(|r| r.replica.to_string())
        .collect();
    if broken.is_empty() || health.replicas.len() < 2 {
        return None;
    }
    let what = if broken.len() == 1 {
        format!("replica {}", broken[0])
    } else {
        format!("replicas {}", broken.join(", "))
    };
    let set = shell_quote(poolset);
    let command = format!("poolsync sync {set}");
    let advice = format!(
        "{what} can be rebuilt from replica {source} (`poolsync sync -d {set}` shows the plan): run `{command}`"
    );
    Some((advice, command))
}

/// When a `feature -e|-d` was interrupted (headers that disagree on one
/// feature, or one torn mid-write), how to finish it.
pub fn feature_note(health: &Health, pool: &Path) -> Option<String> {
    let feature = poolsync_engine::feature::interrupted_change(health)?;
    Some(poolsync_engine::feature::finish_hint(
        Path::new(&shell_quote(pool)),
        feature,
    ))
}

/// When the pool set file names replicas the pool does not have yet
/// (added by hand), how to add them: the advice, with no command to run
/// as it is (the old pool set file must be put back first).
pub fn new_replica_note(health: &Health, poolset: &Path) -> Option<String> {
    let fresh = health.new_replicas();
    (!fresh.is_empty()).then(|| {
        poolsync_engine::sync::plan::new_replica_hint(Path::new(&shell_quote(poolset)), &fresh)
    })
}

/// `path` as one shell word.
pub fn shell_quote(path: &Path) -> String {
    let text = path.to_string_lossy();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:=@%".contains(c));
    if plain {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// When an interrupted `create` of `target` left its journal: what to run
/// to finish it (a half-made pool is finished by create, not repaired by
/// sync).
pub fn interrupted_create_note<S: poolsync_pmem::Storage>(
    storage: &S,
    target: &std::path::Path,
) -> Option<String> {
    let journal = poolsync_engine::create::journal_path(target);
    poolsync_engine::create::is_journal(storage, &journal).then(|| {
        format!(
            "an interrupted create left {}: run the same `poolsync create` again to finish it (it clears or completes what that run made)",
            journal.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn paths_are_quoted_for_the_shell_only_when_needed() {
        assert_eq!(shell_quote(Path::new("/pool/a.set")), "/pool/a.set");
        assert_eq!(shell_quote(Path::new("my pool.set")), "'my pool.set'");
        assert_eq!(shell_quote(Path::new("it's.set")), r"'it'\''s.set'");
    }

    #[test]
    fn seconds_are_written_as_typed() {
        assert_eq!(seconds(Duration::from_secs(2)), "2");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5");
        assert_eq!(seconds(Duration::from_millis(250)), "0.25");
    }

    #[test]
    fn a_locked_part_is_in_use_and_the_advice_fits_the_command() {
        let locked = || poolsync_pmem::Error::Locked {
            path: PathBuf::from("/p/b.part"),
        };
        let set = Path::new("/p/x.set");
        let text = explain(Error::Storage(locked()), set, Waiting::Supported(None));
        assert_eq!(
            text,
            "/p/b.part is in use by another process (flock: resource temporarily unavailable); \
             close the application that has the pool open, or wait until it does with --wait-lock SECONDS"
        );
        let text = explain(
            Error::PartStorage {
                set: set.to_path_buf(),
                line: 4,
                error: locked(),
            },
            set,
            Waiting::Unsupported,
        );
        assert!(
            text.starts_with("/p/x.set:4: /p/b.part is in use by another process"),
            "{text}"
        );
        assert!(!text.contains("--wait-lock"), "{text}");
        let text = explain(
            Error::LockTimeout {
                seconds: 1,
                error: locked(),
            },
            set,
            Waiting::Supported(Some(Duration::from_millis(1500))),
        );
        assert!(
            text.contains("still in use after waiting 1.5 s (--wait-lock)"),
            "{text}"
        );
        // The flock error is named once.
        assert_eq!(text.matches("temporarily unavailable").count(), 1, "{text}");
    }
}
