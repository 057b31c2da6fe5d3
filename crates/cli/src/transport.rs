//! The transport to remote hosts: `RSH [user@]host REMOTE_PATH serve`, the
//! way rsync runs `rsync --server`, handed to the engine as an abstract
//! connection (`poolsync_engine::remote::Transport`).
//!
//! The command's standard input and output carry the protocol; its
//! standard error is kept (the last 8 KiB) so that a failure can quote
//! what the remote side said (`poolsync: command not found`, ssh's own
//! complaints). `--rsh` and `--remote-path` (also `POOLSYNC_RSH`,
//! `POOLSYNC_REMOTE_PATH` and the config file) choose the commands.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use poolsync_engine::remote::{Connector, Transport, TransportControl};
use poolsync_engine::Error;

use crate::settings::Settings;

/// Bytes of the remote side's standard error kept for messages.
const STDERR_TAIL: usize = 8 << 10;

/// How long a finished session waits for the command to exit before it
/// is stopped.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// `--rsh` and `--remote-path`, for every command that reaches remote
/// replicas.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RemoteArgs {
    /// The remote shell for remote replicas, run as CMD [user@]host
    /// REMOTE_PATH serve (default: the rsh setting, else ssh)
    #[arg(long = "rsh", value_name = "CMD", value_parser = rsh_flag)]
    rsh: Option<String>,
    /// poolsync on the remote hosts, with any leading words such as sudo
    /// (default: the remote_path setting, else poolsync)
    #[arg(long = "remote-path", value_name = "PATH", value_parser = remote_path_flag)]
    remote_path: Option<String>,
}

fn rsh_flag(text: &str) -> Result<String, String> {
    crate::settings::check_flag("rsh", text)
}

fn remote_path_flag(text: &str) -> Result<String, String> {
    crate::settings::check_flag("remote_path", text)
}

impl RemoteArgs {
    /// The connector these flags and the settings describe.
    pub fn connector(&self, settings: &Settings) -> anyhow::Result<SshConnector> {
        Ok(SshConnector {
            rsh: settings.command("rsh", self.rsh.as_deref())?,
            remote_path: settings.command("remote_path", self.remote_path.as_deref())?,
        })
    }
}

/// Starts `RSH [user@]host REMOTE_PATH serve` for each connection.
#[derive(Debug, Clone)]
pub struct SshConnector {
    rsh: Vec<String>,
    remote_path: Vec<String>,
}

impl SshConnector {
    /// The command line for `node`, as words.
    fn words(&self, node: &str) -> Vec<String> {
        let mut words = self.rsh.clone();
        words.push(node.to_string());
        words.extend(self.remote_path.iter().cloned());
        words.push("serve".to_string());
        words
    }
}

/// Words joined as a shell would read them back.
fn shell_line(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Connector for SshConnector {
    fn connect(&self, node: &str) -> Result<Transport, Error> {
        let words = self.words(node);
        let command = shell_line(&words);
        let fail = |reason: String| Error::RemoteConnect {
            node: node.to_string(),
            command: command.clone(),
            reason,
        };
        // A host that looks like an option would be read as one by ssh.
        if node.starts_with('-') || node.is_empty() {
            return Err(fail(format!(
                "{node:?} is not a host name (it would be taken for an option)"
            )));
        }
        let (program, args) = words
            .split_first()
            .ok_or_else(|| fail("the remote shell command is empty".to_string()))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(io_text(&e)))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail("the command's pipes could not be set up".to_string()));
        };
        let tail = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&tail);
        let reader = std::thread::Builder::new()
            .name(format!("stderr of {node}"))
            .spawn(move || keep_tail(stderr, &kept))
            .map_err(|e| fail(e.to_string()))?;
        Ok(Transport {
            reader: Box::new(stdout),
            writer: Box::new(stdin),
            control: Box::new(ChildControl {
                command,
                child: Some(child),
                tail,
                reader: Some(reader),
            }),
        })
    }
}

/// An I/O error's text without Rust's ` (os error N)`.
fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Reads the remote side's standard error to its end, keeping the last
/// [`STDERR_TAIL`] bytes.
fn keep_tail(mut stderr: impl Read, tail: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match stderr.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut t = tail.lock().unwrap_or_else(PoisonError::into_inner);
        t.extend_from_slice(&buf[..n]);
        if t.len() > STDERR_TAIL {
            let cut = t.len() - STDERR_TAIL;
            t.drain(..cut);
        }
    }
}

/// The child process behind a connection.
struct ChildControl {
    command: String,
    child: Option<Child>,
    tail: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl ChildControl {
    /// Waits for the stderr reader (the pipe ends with the process).
    fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// `exit status 127`, `killed by signal 9`.
fn status_text(status: std::process::ExitStatus) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        return None;
    }
    Some(match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    })
}

impl TransportControl for ChildControl {
    fn command(&self) -> String {
        self.command.clone()
    }

    fn diagnostics(&self) -> String {
        let t = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&t).trim().to_string()
    }

    fn finish(&mut self) -> Option<String> {
        let mut child = self.child.take()?;
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status_text(status),
                Ok(None) if started.elapsed() < EXIT_WAIT => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Some(format!(
                        "stopped after {} s without exiting",
                        EXIT_WAIT.as_secs()
                    ));
                }
                Err(e) => break Some(io_text(&e)),
            }
        };
        self.join_reader();
        status
    }

    fn abort(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_reader();
    }
}

impl Drop for ChildControl {
    fn drop(&mut self) {
        // Never leave a process behind.
        self.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_quoted_for_messages() {
        let c = SshConnector {
            rsh: vec![
                "ssh".into(),
                "-p".into(),
                "2222".into(),
                "-i".into(),
                "my key".into(),
            ],
            remote_path: vec!["sudo".into(), "/opt/poolsync".into()],
        };
        assert_eq!(
            shell_line(&c.words("u@b")),
            "ssh -p 2222 -i 'my key' u@b sudo /opt/poolsync serve"
        );
    }

    #[test]
    fn a_missing_remote_shell_and_an_option_for_a_host_are_refused() {
        let c = SshConnector {
            rsh: vec!["/nonexistent/rsh".into()],
            remote_path: vec!["poolsync".into()],
        };
        let e = c.connect("b").unwrap_err().to_string();
        assert!(
            e.contains("cannot start `/nonexistent/rsh b poolsync serve`"),
            "{e}"
        );
        let e = c.connect("-oProxyCommand=x").unwrap_err().to_string();
        assert!(e.contains("not a host name"), "{e}");
    }
}
