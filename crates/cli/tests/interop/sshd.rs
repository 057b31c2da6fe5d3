//! A private `sshd` on 127.0.0.1 for the remote replica tests: a host key
//! and a user key generated into a temp dir, a config of its own, a free
//! high port, and the current user; nothing of the machine's ssh setup is
//! used (no ~/.ssh, no /etc/ssh/sshd_config, no agent).
//!
//! The remote end lives in a tree of its own under the temp dir
//! (`remote/root` is `serve.root`, `remote/outside` a sibling the tests
//! watch), given to `poolsync serve` through a config file named in
//! `--remote-path`, so no environment crosses ssh.
//!
//! Without `sshd`, `ssh` or `ssh-keygen` the tests skip, and under
//! `CI=true` they fail, naming what is missing.

use std::ffi::OsStr;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support::{log_skip, run, s};

/// The absolute path sshd insists on being started with.
const SSHD: &str = "/usr/sbin/sshd";

/// A running private sshd; stopped (by its pid) on drop.
pub struct Sshd {
    pub dir: TempDir,
    port: u16,
    child: Child,
    user: String,
}

/// What is missing to run sshd here, if anything.
fn missing() -> Option<String> {
    let mut missing = Vec::new();
    if !Path::new(SSHD).is_file() {
        missing.push(format!("{SSHD} (package openssh-server)"));
    }
    for tool in ["ssh", "ssh-keygen"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            missing.push(format!("{tool} (package openssh-client)"));
        }
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// The user the tests log in as: the current one.
fn current_user() -> String {
    let out = run(OsStr::new("id"), &["-un"], None);
    out.stdout.trim().to_string()
}

impl Sshd {
    /// Starts a private sshd, or returns `None` (after logging the skip)
    /// where it cannot run; under `CI=true` that is a failure.
    pub fn start(test: &str) -> Option<Sshd> {
        if let Some(what) = missing() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: sshd is required on CI but missing: {what}");
            }
            log_skip(test, &format!("cannot start sshd: missing {what}"));
            return None;
        }
        match Sshd::try_start() {
            Ok(sshd) => Some(sshd),
            Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("{test}: cannot start sshd on CI: {why}")
            }
            Err(why) => {
                log_skip(test, &format!("cannot start sshd: {why}"));
                None
            }
        }
    }

    fn try_start() -> Result<Sshd, String> {
        let dir = tempfile::Builder::new()
            .prefix("poolsync-sshd-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let d = dir.path();
        for key in ["host_key", "user_key"] {
            let out = run(
                OsStr::new("ssh-keygen"),
                &[
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "poolsync-test",
                    "-f",
                    s(&d.join(key)),
                ],
                None,
            );
            if out.code != Some(0) {
                return Err(format!("ssh-keygen failed:\n{}", out.describe()));
            }
        }
        fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).map_err(|e| e.to_string())?;
        // sshd running as root needs its privilege separation directory,
        // which a fresh container may lack.
        if nix_is_root() && !Path::new("/run/sshd").is_dir() {
            let _ = fs::create_dir_all("/run/sshd");
        }
        let user = current_user();
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = free_port()?;
            let config = d.join("sshd_config");
            fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n\
                     AuthorizedKeysFile {}\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\n\
                     StrictModes no\nPermitRootLogin prohibit-password\nAllowUsers {user}\n\
                     LogLevel ERROR\nPrintMotd no\n",
                    s(&d.join("host_key")),
                    s(&d.join("sshd.pid")),
                    s(&d.join("authorized_keys")),
                ),
            )
            .map_err(|e| e.to_string())?;
            let host = fs::read_to_string(d.join("host_key.pub")).map_err(|e| e.to_string())?;
            let fields: Vec<&str> = host.split_whitespace().take(2).collect();
            fs::write(
                d.join("known_hosts"),
                format!("[127.0.0.1]:{port} {}\n", fields.join(" ")),
            )
            .map_err(|e| e.to_string())?;
            let log = fs::File::create(d.join("sshd.log")).map_err(|e| e.to_string())?;
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f", s(&config)])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .map_err(|e| format!("{SSHD}: {e}"))?;
            match wait_ready(d, port, &user, &mut child) {
                Ok(()) => {
                    return Ok(Sshd {
                        dir,
                        port,
                        child,
                        user,
                    })
                }
                Err(why) => {
                    last = why;
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        Err(last)
    }

    /// `ssh` and its options, as words.
    fn ssh_words(&self) -> Vec<String> {
        ssh_words(self.dir.path(), self.port)
    }

    /// The `--rsh` value that reaches this sshd.
    pub fn rsh(&self) -> String {
        self.ssh_words().join(" ")
    }

    /// `user@127.0.0.1`.
    pub fn node(&self) -> String {
        format!("{}@127.0.0.1", self.user)
    }

    /// The remote host's tree: `serve.root` lives in it.
    pub fn remote(&self) -> PathBuf {
        self.dir.path().join("remote")
    }

    /// The server's root (created on first use).
    pub fn root(&self) -> PathBuf {
        let root = self.remote().join("root");
        fs::create_dir_all(&root).expect("create the remote root");
        root
    }

    /// A `--remote-path` that runs this build of poolsync with a config
    /// file whose `serve.root` is [`Sshd::root`], after `prefix` (shell
    /// words run first on the remote host, such as a noisy `echo`).
    pub fn remote_path_with(&self, prefix: &str) -> String {
        let config = self.dir.path().join("serve.toml");
        fs::write(
            &config,
            format!("[serve]\nroot = \"{}\"\n", s(&self.root())),
        )
        .expect("serve config");
        format!(
            "{prefix}{} --config {}",
            env!("CARGO_BIN_EXE_poolsync"),
            s(&config)
        )
    }

    /// The usual `--remote-path`.
    pub fn remote_path(&self) -> String {
        self.remote_path_with("")
    }

    /// `--rsh RSH --remote-path PATH`, to put before the command's operands.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--rsh".into(),
            self.rsh(),
            "--remote-path".into(),
            self.remote_path(),
        ]
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // By its pid: the sshd this test started, and only it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ssh` with the options that reach the sshd of `dir` on `port`, as words.
fn ssh_words(d: &Path, port: u16) -> Vec<String> {
    vec![
        "ssh".into(),
        "-F".into(),
        "/dev/null".into(),
        "-p".into(),
        port.to_string(),
        "-i".into(),
        s(&d.join("user_key")).into(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", s(&d.join("known_hosts"))),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
    ]
}

/// Waits until a login works (sshd needs a moment to listen).
fn wait_ready(d: &Path, port: u16, user: &str, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = fs::read_to_string(d.join("sshd.log")).unwrap_or_default();
            return Err(format!("sshd exited ({status}): {log}"));
        }
        let mut args = ssh_words(d, port);
        args.extend([format!("{user}@127.0.0.1"), "true".to_string()]);
        let refs: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
        let out = run(OsStr::new("ssh"), &refs, None);
        if out.code == Some(0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let log = fs::read_to_string(d.join("sshd.log")).unwrap_or_default();
            return Err(format!(
                "no login within 15 s:\n{}\nsshd log: {log}",
                out.describe()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn nix_is_root() -> bool {
    current_user() == "root"
}

/// A port nobody listens on right now (sshd may still lose the race; the
/// caller tries again).
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    Ok(port)
}

/// Returns from the calling test unless a private sshd runs; binds it to
/// `$name`.
macro_rules! require_sshd {
    ($name:ident) => {
        let Some($name) = $crate::sshd::Sshd::start(module_path!()) else {
            return;
        };
    };
}
pub(crate) use require_sshd;
