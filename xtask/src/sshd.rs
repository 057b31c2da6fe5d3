//! A private sshd on 127.0.0.1 for `bench remote` and the demo: its own
//! host key, user key, `authorized_keys` and config in a scratch
//! directory, the current user as the only one allowed in, and nothing
//! of the machine's ssh setup read (`ssh -F /dev/null`).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::util;

/// Whether this machine can run one: OpenSSH's server and client tools.
pub fn available() -> bool {
    Path::new("/usr/sbin/sshd").is_file()
        && ["ssh", "ssh-keygen"].iter().all(|tool| {
            Command::new(tool)
                .arg("-V")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
}

/// A private sshd on 127.0.0.1, stopped (by its pid) when dropped.
pub struct Sshd {
    child: Child,
    port: u16,
    dir: PathBuf,
    user: String,
}

impl Sshd {
    /// Starts `/usr/sbin/sshd` on a free port of 127.0.0.1 with a host key,
    /// a user key and a config made in `dir`, and waits until it accepts a
    /// login with the user key.
    pub fn start(dir: &Path) -> Result<Sshd> {
        fs::create_dir_all(dir)?;
        for key in ["host_key", "user_key"] {
            let path = dir.join(key);
            let _ = fs::remove_file(&path);
            util::run(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(&path),
            )?;
        }
        fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys"))?;
        if util::is_root() && !Path::new("/run/sshd").is_dir() {
            let _ = fs::create_dir_all("/run/sshd");
        }
        let user = String::from_utf8(Command::new("id").arg("-un").output()?.stdout)?
            .trim()
            .to_string();
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = dir.join("sshd_config");
        fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PermitRootLogin prohibit-password\nAllowUsers {user}\nLogLevel ERROR\n",
                dir.join("host_key").display(),
                dir.join("sshd.pid").display(),
                dir.join("authorized_keys").display()
            ),
        )?;
        let host = fs::read_to_string(dir.join("host_key.pub"))?;
        let key: Vec<&str> = host.split_whitespace().take(2).collect();
        fs::write(
            dir.join("known_hosts"),
            format!("[127.0.0.1]:{port} {}\n", key.join(" ")),
        )?;
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting /usr/sbin/sshd")?;
        let sshd = Sshd {
            child,
            port,
            dir: dir.to_path_buf(),
            user,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mut cmd = Command::new("ssh");
            cmd.args(sshd.ssh_args()).arg(sshd.node()).arg("true");
            if cmd
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success()
            {
                return Ok(sshd);
            }
            ensure!(
                Instant::now() < deadline,
                "the private sshd on port {port} accepts no login"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The options of `ssh` that reach this sshd with the user key.
    pub fn ssh_args(&self) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-p".into(),
            self.port.to_string(),
            "-i".into(),
            self.dir.join("user_key").display().to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            format!(
                "UserKnownHostsFile={}",
                self.dir.join("known_hosts").display()
            ),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
        ]
    }

    /// ssh with its options, as one command line.
    pub fn ssh_line(&self) -> String {
        std::iter::once("ssh".to_string())
            .chain(self.ssh_args())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `user@127.0.0.1`: the user running the tool.
    pub fn node(&self) -> String {
        format!("{}@127.0.0.1", self.user)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
