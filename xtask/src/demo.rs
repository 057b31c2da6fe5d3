//! `cargo xtask demo`: a guided tour of poolsync on a three-replica pool set.
//!
//! Everything shown is real output of the release binary; the demo checks
//! the exit codes it expects and stops with an error when poolsync does not
//! behave, rather than printing a story the binary did not tell. It creates
//! a pool set, stores data in it through libpmemobj when a C compiler and
//! libpmemobj are there (and says so when they are not), damages two
//! replicas, shows the sync plan, syncs, and checks the result. Then it
//! keeps an offline copy: an update packet seeds a standby of another
//! layout, and an incremental packet brings it the next change. Last, a
//! remote replica at a third site is seeded and kept current over ssh: a
//! private sshd on 127.0.0.1 when OpenSSH's server is installed, else a
//! local stand-in for ssh (the demo says which).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util;

/// The parts of each replica: (file name, size in MiB). Replica 0 (the
/// master) has two parts, replica 1 one, replica 2 three, so the replicas
/// split the same pool differently, as real deployments do.
const REPLICAS: &[&[(&str, u64)]] = &[
    &[("r0-p0.part", 16), ("r0-p1.part", 16)],
    &[("r1-p0.part", 32)],
    &[("r2-p0.part", 12), ("r2-p1.part", 12), ("r2-p2.part", 12)],
];

/// The part of the master the demo deletes.
const DAMAGED_PART: &str = "r0-p1.part";
/// The part of replica 2 whose header and data blocks the demo corrupts.
const CORRUPTED_PART: &str = "r2-p1.part";
/// What the demo stores in the pool's root object.
const MESSAGE: &str = "hello from the demo: this text lives in the pool's root object";
/// What it stores later, to be shipped in an incremental packet.
const MESSAGE_2: &str = "the second message: it reaches the standby in an incremental packet";
/// What it stores last, to reach the remote replica.
const MESSAGE_3: &str = "the third message: a remote replica over ssh receives it";
/// The remote host's tree (its `serve.root`) and its pool set file there.
const REMOTE_ROOT: &str = "site-c";
const REMOTE_SET: &str = "dr.set";
/// The remote replica's parts, in the remote host's tree.
const REMOTE_PARTS: &[(&str, u64)] = &[("dr-p0.part", 24), ("dr-p1.part", 9)];
/// The standby's replicas, split otherwise than the source's.
const STANDBY: &[&[(&str, u64)]] = &[
    &[("sb-r0-p0.part", 20), ("sb-r0-p1.part", 13)],
    &[("sb-r1-p0.part", 33)],
];

/// `cargo xtask demo`.
pub fn run(root: &Path) -> Result<()> {
    util::step("building poolsync (release)");
    util::run(
        util::cargo()
            .args(["build", "--release", "--package", "poolsync"])
            .current_dir(root),
    )?;
    let poolsync = util::target_dir(root)?.join("release").join("poolsync");
    if !poolsync.is_file() {
        bail!("the release build did not produce {}", poolsync.display());
    }

    // Always under the repository's target/ (ignored by git), whatever
    // CARGO_TARGET_DIR says, so the README can name the place.
    let dir = root.join("target").join("demo");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing the previous demo in {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let set_text = set_file(&dir);
    std::fs::write(dir.join("pool.set"), &set_text).context("writing the demo's pool.set")?;
    let client = build_client(root, &dir);

    let demo = Demo {
        poolsync,
        dir: dir.clone(),
        env: Vec::new(),
    };
    say(&format!(
        "A pool set with three replicas of one libpmemobj pool, in {}.\n\
         Pool set files need absolute paths; the commands below run in that directory.",
        dir.display()
    ));
    println!("$ cat pool.set");
    print!("{set_text}");

    say("Create the pool: every part of every replica, with linked headers.");
    demo.expect(&["create", "obj", "pool.set"], 0)?;

    match &client {
        Some(client) => {
            say(
                "Store some data through libpmemobj (a small C program, `objclient`);\n\
                 libpmemobj writes it to every replica.",
            );
            demo.client(client, &["write", "pool.set", "-", MESSAGE], 0)?;
        }
        None => say(
            "(No data is stored: that needs a C compiler and libpmemobj's headers\n\
             (Debian: gcc libpmemobj-dev), which are not installed. The pool is empty.)",
        ),
    }

    say("Show the structure and the headers.");
    demo.expect(&["info", "pool.set"], 0)?;

    say("Check every replica: shutdown state, headers, UUID links.");
    demo.expect(&["check", "-v", "pool.set"], 0)?;

    say(
        "Now damage two replicas. The master loses a part, as a failed disk or a\n\
         stray `rm` would do it ...",
    );
    println!("$ rm {DAMAGED_PART}");
    std::fs::remove_file(dir.join(DAMAGED_PART))
        .with_context(|| format!("removing {DAMAGED_PART}"))?;
    say(&format!(
        "... and a part of replica 2 gets a corrupted header and two stale data blocks:\n\
         the demo overwrites 4 bytes of {CORRUPTED_PART}'s header and two 4 KiB blocks of its data."
    ));
    let corrupted = dir.join(CORRUPTED_PART);
    corrupt(&corrupted)?;

    say("`check` notices, and exits 1 as pmempool does.");
    demo.expect(&["check", "-v", "pool.set"], 1)?;

    say(
        "The dry run shows what `sync` would do, with exact byte counts, and changes\n\
         nothing. Replica 1 is the source (the first healthy one); the master's lost\n\
         part is created anew, and replica 2's broken part is compared block by block.",
    );
    demo.expect(&["sync", "-d", "pool.set"], 0)?;

    say(
        "Sync for real, with progress on stderr and a summary (-vv): only the blocks\n\
         that differ are written into replica 2.",
    );
    demo.expect(&["sync", "--progress", "-vv", "pool.set"], 0)?;

    say("Every replica is whole again.");
    demo.expect(&["check", "-v", "pool.set"], 0)?;
    if let Some(client) = &client {
        say("And libpmemobj reads the data back from the rebuilt master.");
        demo.client(client, &["read", "pool.set", "-", MESSAGE], 0)?;
    }
    offline_copy(&demo, client.as_deref())?;
    remote_copy(&demo, client.as_deref())?;
    say(
        "The next `cargo xtask demo` starts afresh; `poolsync rm admin.set` (the local\n\
         and the remote parts) and `poolsync rm standby.set` remove the parts (and the\n\
         state files) by hand.",
    );
    Ok(())
}

/// Update packets: seed a standby of another layout, then ship a change.
fn offline_copy(demo: &Demo, client: Option<&Path>) -> Result<()> {
    let standby = set_text(&demo.dir, STANDBY);
    std::fs::write(demo.dir.join("standby.set"), &standby).context("writing standby.set")?;
    say(
        "Offline copies: a standby at another site, kept current by update packets\n\
         carried by any means. Its pool set file names its own parts, split otherwise;\n\
         they do not exist yet.",
    );
    println!("$ cat standby.set");
    print!("{standby}");
    say(
        "Export a packet for the standby, site-b. The first one carries every block\n\
         (zero runs without their bytes); the state file beside pool.set now knows\n\
         each block's digest and epoch, and that site-b holds epoch 1.",
    );
    demo.expect(
        &["export", "--out", "site-b-1.pkt", "pool.set", "site-b"],
        0,
    )?;
    say("`packet` describes it and verifies every checksum.");
    demo.expect(&["packet", "site-b-1.pkt"], 0)?;
    say(
        "Import it at the standby: its parts are created from standby.set, with the\n\
         source's pool set UUID, and every replica receives the data. The packet is\n\
         deleted once applied.",
    );
    demo.expect(&["import", "-v", "standby.set", "site-b-1.pkt"], 0)?;
    demo.expect(&["check", "-v", "standby.set"], 0)?;
    match client {
        Some(client) => {
            say("The application writes again at the source ...");
            demo.client(client, &["write", "pool.set", "-", MESSAGE_2], 0)?;
        }
        None => say("(Without libpmemobj the source does not change: the next export says so.)"),
    }
    say(
        "... and the next export carries only the blocks that changed since site-b's\n\
         epoch (-v lists the files).",
    );
    demo.expect(
        &[
            "export",
            "-v",
            "--out",
            "site-b-2.pkt",
            "pool.set",
            "site-b",
        ],
        0,
    )?;
    if client.is_some() {
        demo.expect(&["import", "-v", "standby.set", "site-b-2.pkt"], 0)?;
    }
    say("`epoch` shows what the source believes each destination holds.");
    demo.expect(&["epoch", "pool.set"], 0)?;
    if let Some(client) = client {
        say("libpmemobj opens the standby on its own and reads the second message.");
        demo.client(client, &["read", "standby.set", "-", MESSAGE_2], 0)?;
    }
    Ok(())
}

/// Remote replicas: seed one at a third site over ssh, then keep it current.
fn remote_copy(demo: &Demo, client: Option<&Path>) -> Result<()> {
    let root = demo.dir.join(REMOTE_ROOT);
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let mut remote_set = String::from("PMEMPOOLSET\n");
    for (name, mib) in REMOTE_PARTS {
        remote_set.push_str(&format!("{mib}M {}\n", root.join(name).display()));
    }
    std::fs::write(root.join(REMOTE_SET), &remote_set).context("writing the remote set file")?;
    // poolsync serve on the "remote host" resolves set files under its root.
    let serve_config = root.join("serve.toml");
    std::fs::write(
        &serve_config,
        format!("[serve]\nroot = {:?}\n", root.display().to_string()),
    )
    .context("writing the remote end's config")?;
    say(
        "Remote replicas: a third site, site-c, holds a warm standby kept current over\n\
         ssh by `poolsync serve`, as rsync runs its server. Its pool set file lives on\n\
         its host, under serve.root, and names its own parts.",
    );
    // Keeps a private sshd running until the end of this section.
    let (_sshd, rsh, node) = if crate::sshd::available() {
        let sshd = crate::sshd::Sshd::start(&demo.dir.join("sshd"))?;
        say(
            "The demo starts a private sshd on 127.0.0.1 (its own host key, user key and\n\
             config) to stand for site-c's host: everything below goes through real ssh.",
        );
        let (rsh, node) = (sshd.ssh_line(), sshd.node());
        (Some(sshd), rsh, node)
    } else {
        say(
            "(OpenSSH's server is not installed, so a local stand-in replaces ssh: it drops\n\
             the host name and runs `poolsync serve` here, over the same pipes ssh would\n\
             give it. Debian: apt install openssh-server openssh-client.)",
        );
        (
            None,
            "sh -c 'shift; exec \"$@\"' local-shell".to_string(),
            "site-c".to_string(),
        )
    };
    let remote_path = format!(
        "{} --config {}",
        demo.poolsync.display(),
        serve_config.display()
    );
    println!("$ cat {REMOTE_ROOT}/{REMOTE_SET}   # on site-c");
    print!("{remote_set}");
    let admin = format!(
        "{}REPLICA {node} {REMOTE_SET}\n",
        std::fs::read_to_string(demo.dir.join("pool.set")).context("reading pool.set")?
    );
    std::fs::write(demo.dir.join("admin.set"), &admin).context("writing admin.set")?;
    say(
        "The administrator's set file adds a REPLICA line naming the host and the set\n\
         file there; the application keeps opening pool.set, which libpmemobj accepts.\n\
         --rsh and --remote-path (or POOLSYNC_RSH and POOLSYNC_REMOTE_PATH) say how\n\
         to reach poolsync on the host.",
    );
    println!("$ cat admin.set");
    print!("{admin}");
    println!("$ export POOLSYNC_RSH=\"{rsh}\"");
    println!("$ export POOLSYNC_REMOTE_PATH=\"{remote_path}\"");
    let remote = Demo {
        poolsync: demo.poolsync.clone(),
        dir: demo.dir.clone(),
        env: vec![
            ("POOLSYNC_RSH".to_string(), rsh),
            ("POOLSYNC_REMOTE_PATH".to_string(), remote_path),
        ],
    };
    say(
        "The first sync creates the remote parts on site-c and seeds them: every\n\
         block goes, so it reads the source once and tracks no epochs yet.",
    );
    remote.expect(&["sync", "-v", "admin.set"], 0)?;
    say(
        "The next sync finds site-c current by comparing digests, and leaves a sync\n\
         mark there naming the epoch of the source it holds.",
    );
    remote.expect(&["sync", "-v", "admin.set"], 0)?;
    say("`check` judges the remote replica's headers on its host and shows its lag.");
    remote.expect(&["check", "-v", "admin.set"], 0)?;
    let Some(client) = client else {
        say("(Without libpmemobj the source does not change, so there is nothing more to send.)");
        return Ok(());
    };
    say("The application writes once more, to pool.set ...");
    demo.client(client, &["write", "pool.set", "-", MESSAGE_3], 0)?;
    say("`check` measures how far site-c is behind, comparing digests only.");
    remote.expect(&["check", "admin.set"], 0)?;
    say(
        "... and the dry run shows what the next sync sends: only the blocks that\n\
         differ, with the bytes for the wire. The sync mark on site-c names the\n\
         epoch it holds, so they are the blocks the source changed since, and\n\
         site-c reads nothing to compare.",
    );
    remote.expect(&["sync", "-d", "admin.set"], 0)?;
    remote.expect(&["sync", "-v", "admin.set"], 0)?;
    say(
        "Failover needs no tool: on site-c, libpmemobj opens the remote pool set by\n\
         itself and reads the last message.",
    );
    let at_site_c = format!("{REMOTE_ROOT}/{REMOTE_SET}");
    demo.client(client, &["read", &at_site_c, "-", MESSAGE_3], 0)?;
    say(
        "Opening it there was a change on site-c (libpmemobj moved its run_id): the\n\
         next sync says so, and rewinds the standby to the source.",
    );
    remote.expect(&["sync", "-v", "admin.set"], 0)?;
    Ok(())
}

/// Overwrites 4 bytes of the part's header (its checksum no longer fits)
/// and two 4 KiB blocks of its data, as a stray write would.
fn corrupt(path: &Path) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    for (offset, bytes) in [
        (16u64, &[0xff_u8; 4][..]),
        (4096 + (1 << 20), &[0x5a; 4096][..]),
        (4096 + (3 << 20) + 4096, &[0xa5; 4096][..]),
    ] {
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| f.write_all(bytes))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))
}

/// Compiles the interop tests' libpmemobj client into the demo directory,
/// or `None` (with the reason on stderr) when there is no compiler or no
/// libpmemobj.
fn build_client(root: &Path, dir: &Path) -> Option<PathBuf> {
    if !util::on_path("cc") || !Path::new("/usr/include/libpmemobj.h").is_file() {
        return None;
    }
    let source = root
        .join("crates")
        .join("cli")
        .join("tests")
        .join("data")
        .join("objclient.c");
    let exe = dir.join("objclient");
    let status = Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&exe)
        .arg(&source)
        .arg("-lpmemobj")
        .status();
    match status {
        Ok(s) if s.success() => Some(exe),
        Ok(s) => {
            eprintln!(
                "demo: compiling {} failed ({s}); no data is stored",
                source.display()
            );
            None
        }
        Err(e) => {
            eprintln!("demo: cannot run cc ({e}); no data is stored");
            None
        }
    }
}

struct Demo {
    poolsync: PathBuf,
    dir: PathBuf,
    /// Environment variables poolsync runs with.
    env: Vec<(String, String)>,
}

impl Demo {
    /// Runs the libpmemobj client like [`Demo::expect`] runs poolsync.
    fn client(&self, client: &Path, args: &[&str], code: i32) -> Result<()> {
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("\"{a}\"")
                } else {
                    (*a).to_string()
                }
            })
            .collect();
        println!("$ ./objclient {}", shown.join(" "));
        util::flush_stdout();
        let status = Command::new(client)
            .args(args)
            .current_dir(&self.dir)
            .status()
            .with_context(|| format!("starting {}", client.display()))?;
        if status.code() != Some(code) {
            bail!(
                "`objclient {}` exited with {status}, but the demo expects exit code {code}",
                args.join(" ")
            );
        }
        Ok(())
    }

    /// Runs `poolsync <args>` in the demo directory, showing the command line
    /// and letting its output through, and fails unless it exits with `code`.
    fn expect(&self, args: &[&str], code: i32) -> Result<()> {
        println!("$ poolsync {}", args.join(" "));
        util::flush_stdout();
        let status = Command::new(&self.poolsync)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.dir)
            .status()
            .with_context(|| format!("starting {}", self.poolsync.display()))?;
        if status.code() != Some(code) {
            bail!(
                "`poolsync {}` exited with {status}, but the demo expects exit code {code}",
                args.join(" ")
            );
        }
        Ok(())
    }
}

fn set_file(dir: &Path) -> String {
    set_text(dir, REPLICAS)
}

/// The text of a pool set file whose replicas have the given parts.
fn set_text(dir: &Path, replicas: &[&[(&str, u64)]]) -> String {
    crate::pools::Layout::new(replicas).set_text(dir)
}

fn say(text: &str) {
    println!();
    for line in text.lines() {
        println!("# {line}");
    }
    util::flush_stdout();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_file_lists_three_replicas_with_absolute_paths() {
        let text = set_file(Path::new("/demo"));
        let expected = "PMEMPOOLSET\n\
                        16M /demo/r0-p0.part\n16M /demo/r0-p1.part\n\
                        REPLICA\n32M /demo/r1-p0.part\n\
                        REPLICA\n12M /demo/r2-p0.part\n12M /demo/r2-p1.part\n12M /demo/r2-p2.part\n";
        assert_eq!(text, expected);
        for part in [DAMAGED_PART, CORRUPTED_PART] {
            assert!(REPLICAS
                .iter()
                .flat_map(|r| r.iter())
                .any(|(name, _)| *name == part));
        }
    }
}
