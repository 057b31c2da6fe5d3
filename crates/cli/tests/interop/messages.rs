//! Messages that say how to fix things, pinned as snapshots: what
//! `poolsync` prints (stdout, stderr, exit code) when a pool set file lacks
//! its first line, a keyword or size is misspelled, a pool is in use, a
//! replica is broken, a dry run has nothing to rebuild, and the `--json`
//! documents of failures. These need no PMDK: `poolsync create` makes the
//! pools.
//!
//! The snapshots are `expect-test` literals; after a deliberate change of
//! a message, run `UPDATE_EXPECT=1 cargo test -p poolsync --test interop
//! messages` and review the diff. Temp dirs show as `<DIR>`, UUIDs as
//! `<UUID>`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use expect_test::{expect, Expect};
use tempfile::TempDir;

/// A temp dir in which `poolsync` runs with a controlled environment.
struct Scene {
    dir: TempDir,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::Builder::new()
            .prefix("poolsync-messages-")
            .tempdir()
            .expect("temp dir");
        // An empty config file, so that no /etc/poolsync/config.toml of the
        // machine changes what is shown.
        fs::write(dir.path().join("empty.toml"), "").expect("write empty config");
        Scene { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name`; `{DIR}` in `text` becomes the temp dir.
    fn write(&self, name: &str, text: &str) {
        let text = text.replace("{DIR}", self.dir.path().to_str().expect("utf-8"));
        fs::write(self.path(name), text).expect("write file");
    }

    /// Runs `poolsync args` in the temp dir with `env` set, and returns
    /// the command line, exit code, stdout and stderr, normalized.
    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_poolsync"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("RAYON_NUM_THREADS")
            .env_remove("POOLSYNC_WAIT_LOCK")
            .env_remove("POOLSYNC_KEY_FILE")
            .env_remove("POOLSYNC_COMPRESSION")
            .env_remove("POOLSYNC_MAX_SIZE")
            .env_remove("POOLSYNC_PERSIST")
            .env_remove("PMEM_IS_PMEM_FORCE")
            .env("HOME", self.dir.path())
            .env("POOLSYNC_CONFIG", self.path("empty.toml"))
            .env("TZ", "UTC");
        for (key, value) in env {
            cmd.env(key, value);
        }
        let out = cmd.output().expect("run poolsync");
        let mut text = format!(
            "$ poolsync {}\nexit: {}\n",
            args.join(" "),
            out.status
                .code()
                .map_or("signal".to_string(), |c| c.to_string())
        );
        for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            if !bytes.is_empty() {
                text.push_str(&format!("--- {name}\n{}", String::from_utf8_lossy(bytes)));
            }
        }
        self.normalize(&text)
    }

    fn run(&self, args: &[&str]) -> String {
        self.run_env(args, &[])
    }

    /// Runs every command line and checks the joined transcript.
    fn check(&self, runs: &[&[&str]], expected: Expect) {
        let text: Vec<String> = runs.iter().map(|args| self.run(args)).collect();
        expected.assert_eq(&text.join("\n"));
    }

    /// The temp dir as `<DIR>`, UUIDs as `<UUID>`, the time in undo
    /// files' names as `<TIME>`.
    fn normalize(&self, text: &str) -> String {
        let dir = self.dir.path().to_str().expect("utf-8");
        mask_ids(&mask_undo_times(&mask_uuids(&text.replace(dir, "<DIR>"))))
    }

    /// A two-replica pool set `pool.set` created by poolsync.
    fn pool_set(&self, replicas: usize) {
        let mut text = String::from("PMEMPOOLSET\n");
        for r in 0..replicas {
            if r > 0 {
                text.push_str("REPLICA\n");
            }
            text.push_str(&format!("16M {{DIR}}/r{r}.part\n"));
        }
        self.write("pool.set", &text);
        let created = self.run(&["create", "obj", "pool.set"]);
        assert!(created.contains("exit: 0"), "{created}");
    }
}

/// Replaces the digits after every `.poolsync-undo-` by `<TIME>`.
fn mask_undo_times(text: &str) -> String {
    const INFIX: &str = ".poolsync-undo-";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(INFIX) {
        let (head, tail) = rest.split_at(i + INFIX.len());
        out.push_str(head);
        let digits = tail.len() - tail.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            out.push_str("<TIME>");
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

/// Replaces every run of exactly 32 or 64 hex digits (lineages, packet
/// ids, content digests) by `<ID>`, and the time after `Created` by
/// `<TIME>`.
fn mask_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let hex = word.chars().all(|c| c.is_ascii_hexdigit());
        if hex && (word.len() == 32 || word.len() == 64) {
            out.push_str("<ID>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out.lines()
        .map(|l| match (l.find("Created "), l.find(", exported ")) {
            (Some(i), _) => match l.find(": ") {
                Some(j) if j > i => format!("{}: <TIME>", &l[..j]),
                _ => l.to_string(),
            },
            (None, Some(i)) => format!("{}, exported <TIME>", &l[..i]),
            (None, None) => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + if text.ends_with('\n') { "\n" } else { "" }
}

/// Replaces every `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` by `<UUID>`.
fn mask_uuids(text: &str) -> String {
    let groups = [8, 4, 4, 4, 12];
    let bytes = text.as_bytes();
    let total = 36;
    let mut out = String::new();
    let mut i = 0;
    while i < text.len() {
        let is_uuid = bytes.get(i..i + total).is_some_and(|w| {
            let mut at = 0;
            groups.iter().enumerate().all(|(g, len)| {
                let ok = w[at..at + len].iter().all(u8::is_ascii_hexdigit)
                    && (g + 1 == groups.len() || w[at + len] == b'-');
                at += len + 1;
                ok
            })
        });
        if is_uuid {
            out.push_str("<UUID>");
            i += total;
        } else {
            let c = text[i..].chars().next().expect("in bounds");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

#[test]
fn uuids_are_masked() {
    assert_eq!(
        mask_uuids("uuid 56a58961-104c-40c2-88b9-024a8e629d82, and 12-34"),
        "uuid <UUID>, and 12-34"
    );
}

#[test]
fn a_pool_set_file_without_its_first_line_is_named_by_every_command() {
    let s = Scene::new();
    s.write("pool.set", "16M {DIR}/a.part\nREPLICA\n16M {DIR}/b.part\n");
    s.write("typo.set", "PMEMPOOLST\n16M {DIR}/a.part\n");
    s.write("junk.set", "hello\n");
    s.check(
        &[
            &["create", "obj", "pool.set"],
            &["info", "pool.set"],
            &["check", "pool.set"],
            &["sync", "pool.set"],
            &["info", "typo.set"],
            &["check", "junk.set"],
        ],
        expect![[r#"
            $ poolsync create obj pool.set
            exit: 1
            --- stderr
            error: pool.set:1: not a pool set file: the first line must be exactly 'PMEMPOOLSET' (the rest of the file is a valid pool set); add it with: sed -i '1i PMEMPOOLSET' pool.set
            error: creating pool file failed

            $ poolsync info pool.set
            exit: 1
            --- stderr
            error: pool.set:1: not a pool set file: the first line must be exactly 'PMEMPOOLSET' (the rest of the file is a valid pool set); add it with: sed -i '1i PMEMPOOLSET' pool.set

            $ poolsync check pool.set
            exit: 1
            --- stderr
            error: checking consistency failed: pool.set:1: not a pool set file: the first line must be exactly 'PMEMPOOLSET' (the rest of the file is a valid pool set); add it with: sed -i '1i PMEMPOOLSET' pool.set

            $ poolsync sync pool.set
            exit: 1
            --- stderr
            error: failed to synchronize: pool.set:1: not a pool set file: the first line must be exactly 'PMEMPOOLSET' (the rest of the file is a valid pool set); add it with: sed -i '1i PMEMPOOLSET' pool.set

            $ poolsync info typo.set
            exit: 1
            --- stderr
            error: typo.set:1: not a pool set file: the first line is 'PMEMPOOLST' but must be exactly 'PMEMPOOLSET'; fix it with: sed -i '1s/.*/PMEMPOOLSET/' typo.set

            $ poolsync check junk.set
            exit: 1
            --- stderr
            error: checking consistency failed: junk.set:1: not a pool set file: the first line must be exactly 'PMEMPOOLSET' (without it the file is taken for a single-file pool); the rest of the file is not a valid pool set either (junk.set:1: invalid token found in the current line)
        "#]],
    );
}

#[test]
fn a_single_file_pool_is_still_a_single_file_pool() {
    let s = Scene::new();
    s.check(
        &[
            &["create", "obj", "single.obj"],
            &["check", "-v", "single.obj"],
            &["check", "--data", "single.obj"],
        ],
        expect![[r#"
            $ poolsync create obj single.obj
            exit: 0

            $ poolsync check -v single.obj
            exit: 0
            --- stdout
            checking shutdown state
            shutdown state correct
            checking pool header
            pool header correct
            single.obj: consistent

            $ poolsync check --data single.obj
            exit: 0
            --- stdout
            single.obj: nothing to compare: check --data compares the replicas of a pool set with each other, and this pool has a single replica
        "#]],
    );
    // A text file that is no pool set keeps the message of a pool.
    s.write("notes.txt", "hello\n");
    s.check(&[&["info", "notes.txt"]], expect![[r#"
        $ poolsync info notes.txt
        exit: 1
        --- stderr
        error: notes.txt: opening poolset failed: replica 0 part 0 (notes.txt): cannot read pool header
    "#]]);
}

#[test]
fn misspelled_keywords_and_sizes_get_a_hint() {
    let s = Scene::new();
    s.write(
        "replica.set",
        "PMEMPOOLSET\n16M {DIR}/a.part\nREPLCIA\n16M {DIR}/b.part\n",
    );
    s.write("size.set", "PMEMPOOLSET\n32m {DIR}/a.part\n");
    s.check(
        &[
            &["create", "obj", "replica.set"],
            &["check", "size.set"],
            &["create", "-s", "32m", "obj", "x.obj"],
            &["create", "-v", "-s", "16MB", "obj", "decimal.obj"],
        ],
        expect![[r#"
            $ poolsync create obj replica.set
            exit: 1
            --- stderr
            error: replica.set:3: invalid token found in the current line; did you mean 'REPLICA'?
            error: creating pool file failed

            $ poolsync check size.set
            exit: 1
            --- stderr
            error: checking consistency failed: size.set:2: incorrect format of size; a size is a whole number with an optional unit, B, K, M, G, T, P or KiB, MiB, GiB, TiB, PiB (powers of 1024) or kB, MB, GB, TB, PB (powers of 1000); units are case-sensitive

            $ poolsync create -s 32m obj x.obj
            exit: 1
            --- stderr
            error: invalid size value specified '32m'; a size is a whole number with an optional unit, B, K, M, G, T, P or KiB, MiB, GiB, TiB, PiB (powers of 1024) or kB, MB, GB, TB, PB (powers of 1000); units are case-sensitive

            $ poolsync create -v -s 16MB obj decimal.obj
            exit: 0
            --- stdout
            Creating pool: decimal.obj
            	type  : obj
            	size  : 15.3M [16000000]
            	mode  : 0664
            	layout: ''
            --- stderr
            note: 16MB is 16000000 bytes (MB counts in powers of 1000); 16M or 16MiB is 16777216 bytes
        "#]],
    );
    assert_eq!(
        fs::metadata(s.path("decimal.obj")).expect("created").len(),
        16_000_000,
        "16MB is 16,000,000 bytes, as with pmempool"
    );
}

#[test]
fn a_pool_in_use_is_named_with_the_flag_that_waits() {
    let s = Scene::new();
    s.pool_set(2);
    // An exclusive flock, as libpmemobj takes it on every part it opens.
    let holder = File::open(s.path("r1.part")).expect("open part");
    holder.lock().expect("flock the part");
    s.check(
        &[
            &["sync", "pool.set"],
            &["sync", "--wait-lock", "0.2", "pool.set"],
            &["check", "pool.set"],
            &["info", "--wait-lock", "0.2", "pool.set"],
            &["rm", "pool.set"],
        ],
        expect![[r#"
            $ poolsync sync pool.set
            exit: 1
            --- stderr
            error: failed to synchronize: <DIR>/r1.part is in use by another process (flock: resource temporarily unavailable); close the application that has the pool open, or wait until it does with --wait-lock SECONDS

            $ poolsync sync --wait-lock 0.2 pool.set
            exit: 1
            --- stderr
            error: failed to synchronize: <DIR>/r1.part is in use by another process (flock: resource temporarily unavailable); it was still in use after waiting 0.2 s (--wait-lock); close the application that has the pool open, or wait longer

            $ poolsync check pool.set
            exit: 1
            --- stderr
            error: checking consistency failed: <DIR>/r1.part is in use by another process (flock: resource temporarily unavailable); close the application that has the pool open, or wait until it does with --wait-lock SECONDS

            $ poolsync info --wait-lock 0.2 pool.set
            exit: 1
            --- stderr
            error: <DIR>/r1.part is in use by another process (flock: resource temporarily unavailable); it was still in use after waiting 0.2 s (--wait-lock); close the application that has the pool open, or wait longer

            $ poolsync rm pool.set
            exit: 1
            --- stderr
            error: cannot remove file '<DIR>/r1.part': <DIR>/r1.part is in use by another process (flock: resource temporarily unavailable); close the application that has the pool open and run the command again
            error: removing 'pool.set' failed
        "#]],
    );
    drop(holder);
}

#[test]
fn check_names_the_sync_that_repairs_a_broken_replica() {
    let s = Scene::new();
    s.pool_set(3);
    // Replica 1 loses the checksum of its header.
    let mut part = fs::read(s.path("r1.part")).expect("read part");
    part[1000] ^= 0xff;
    fs::write(s.path("r1.part"), part).expect("write part");
    s.check(
        &[
            &["check", "pool.set"],
            &["check", "-q", "pool.set"],
            &["check", "-ry", "pool.set"],
        ],
        expect![[r#"
            $ poolsync check pool.set
            exit: 1
            --- stdout
            replica 1 part 0: incorrect pool header
            pool.set: not consistent
            --- stderr
            note: replica 1 can be rebuilt from replica 0 (`poolsync sync -d pool.set` shows the plan): run `poolsync sync pool.set`

            $ poolsync check -q pool.set
            exit: 1

            $ poolsync check -ry pool.set
            exit: 1
            --- stdout
            the repair of pmemobj pools is not supported
            pool.set: cannot repair
            --- stderr
            note: replica 1 can be rebuilt from replica 0 (`poolsync sync -d pool.set` shows the plan): run `poolsync sync pool.set`
        "#]],
    );
    fs::remove_file(s.path("r2.part")).expect("remove part");
    s.check(&[&["check", "pool.set"]], expect![[r#"
        $ poolsync check pool.set
        exit: 1
        --- stderr
        error: checking consistency failed: pool.set: replica 2 part 0 (<DIR>/r2.part): no such file or directory; replicas 1, 2 can be rebuilt from replica 0 (`poolsync sync -d pool.set` shows the plan): run `poolsync sync pool.set`
    "#]]);
}

#[test]
fn dry_runs_say_what_they_did_not_look_at() {
    let s = Scene::new();
    s.pool_set(2);
    // One byte of lane 1 differs in replica 1: the headers stay healthy.
    let mut part = fs::read(s.path("r1.part")).expect("read part");
    part[0x3000] ^= 0xff;
    fs::write(s.path("r1.part"), part).expect("write part");
    s.check(
        &[
            &["sync", "-d", "pool.set"],
            &["sync", "-d", "--verify", "pool.set"],
            &["sync", "-d", "--verify", "--source", "0", "pool.set"],
            &["check", "--data", "pool.set"],
        ],
        expect![[r#"
            $ poolsync sync -d pool.set
            exit: 0
            --- stdout
            sync plan for pool.set (dry run: nothing is changed)
            nothing to rebuild: the headers of every replica are healthy (the data is not compared: --verify compares the live data of every replica)

            $ poolsync sync -d --verify pool.set
            exit: 1
            --- stderr
            error: failed to synchronize: pool.set: replicas 0 and 1 differ at logical [0x3000, 0x3001) (lane 1), and nothing tells which one is right; nothing was written: use --source N to copy from replica N, or --force-source to copy from replica 0, the source, anyway

            $ poolsync sync -d --verify --source 0 pool.set
            exit: 0
            --- stdout
            sync plan for pool.set (dry run: nothing is changed)
            no replica to rebuild: the headers of every replica are healthy; the live data is compared next
            replica 1: logical [0x3000, 0x3001), 1 bytes: lane 1; replica 0's copy is chosen; replica 1 part 0 (<DIR>/r1.part) at file offset 0x3000; replica 0 part 0 (<DIR>/r0.part) at file offset 0x3000
            undo file: <DIR>/pool.set.poolsync-undo-<TIME> will save the 4096 bytes overwritten (1 range(s), a file of 4382 bytes)
            verify: 3149408 live bytes compared with replica 0; replica 1: 1 range(s), 1 bytes to repair

            $ poolsync check --data pool.set
            exit: 1
            --- stdout
            replicas 0 and 1 differ at logical [0x3000, 0x3001), 1 bytes: lane 1; nothing tells which one is right; replica 1 part 0 (<DIR>/r1.part) at file offset 0x3000; replica 0 part 0 (<DIR>/r0.part) at file offset 0x3000
            pool.set: data not consistent: replicas 0 and 1 differ in 1 range(s), 1 bytes, and nothing tells which one is right
            --- stderr
            note: nothing tells which of replicas 0 and 1 is right: find out which copy holds the good data (e.g. read each replica alone), then run `poolsync sync --verify --source N pool.set` to copy from replica N
        "#]],
    );
}

#[test]
fn json_documents_of_failures() {
    let s = Scene::new();
    s.pool_set(2);
    fs::remove_file(s.path("r1.part")).expect("remove part");
    s.write("nohdr.set", "16M {DIR}/a.part\n");
    s.check(
        &[
            &["info", "--json", "nohdr.set"],
            &["info", "--json", "-d", "pool.set"],
            &["create", "--json", "obj", "pool.set"],
            &["rm", "--json", "missing.set"],
        ],
        expect![[r#"
            $ poolsync info --json nohdr.set
            exit: 1
            --- stdout
            {
              "command": "info",
              "error": "nohdr.set:1: not a pool set file: the first line must be exactly 'PMEMPOOLSET' (the rest of the file is a valid pool set); add it with: sed -i '1i PMEMPOOLSET' nohdr.set",
              "exit_code": 1,
              "format": 1,
              "path": "nohdr.set",
              "result": "error"
            }
            --- stderr
            error: nohdr.set:1: not a pool set file: the first line must be exactly 'PMEMPOOLSET' (the rest of the file is a valid pool set); add it with: sed -i '1i PMEMPOOLSET' nohdr.set

            $ poolsync info --json -d pool.set
            exit: 1
            --- stdout
            {
              "command": "info",
              "error": "info -d|--data is not supported yet: poolsync shows the pool set structure, the pool header and the obj header",
              "exit_code": 1,
              "format": 1,
              "path": "pool.set",
              "result": "error"
            }
            --- stderr
            error: info -d|--data is not supported yet: poolsync shows the pool set structure, the pool header and the obj header

            $ poolsync create --json obj pool.set
            exit: 1
            --- stdout
            {
              "command": "create",
              "created": null,
              "error": "pool.set:2: <DIR>/r0.part: non-empty file detected: the pool header area (bytes 0..4096) is not zero; remove the file or use -f",
              "exit_code": 1,
              "format": 1,
              "path": "pool.set",
              "result": "error"
            }
            --- stderr
            error: pool.set:2: <DIR>/r0.part: non-empty file detected: the pool header area (bytes 0..4096) is not zero; remove the file or use -f
            error: creating pool file failed

            $ poolsync rm --json missing.set
            exit: 1
            --- stdout
            {
              "command": "rm",
              "exit_code": 1,
              "format": 1,
              "result": "error",
              "targets": [
                {
                  "error": "cannot remove 'missing.set': No such file or directory",
                  "files": [],
                  "is_poolset": null,
                  "path": "missing.set"
                }
              ]
            }
            --- stderr
            error: cannot remove 'missing.set': No such file or directory
        "#]],
    );
    // check --json with a missing part: the error and, as sync judges it,
    // the health of every replica and part.
    let out = s.run(&["check", "--json", "pool.set"]);
    let json = out
        .split("--- stdout\n")
        .nth(1)
        .and_then(|rest| rest.split("--- stderr\n").next())
        .expect("a document on stdout");
    let doc: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
    assert_eq!(doc["result"], "error", "{out}");
    assert_eq!(doc["exit_code"], 1);
    assert_eq!(doc["fix"], "poolsync sync pool.set");
    assert_eq!(doc["health"]["replicas"][1]["broken"], true, "{out}");
    assert_eq!(
        doc["health"]["replicas"][1]["parts"][0]["fault"]["kind"],
        "missing"
    );
    assert_eq!(doc["health"]["replicas"][0]["healthy"], true);
}

#[test]
fn settings_show_where_they_come_from() {
    let s = Scene::new();
    s.write("config.toml", "# poolsync\njobs = 3\n\nwait_lock = 2.5\n");
    s.write("typo.toml", "\njob = 3\n");
    let config = s.path("config.toml");
    let config = config.to_str().expect("utf-8");
    let runs = [
        s.run_env(&["config"], &[("POOLSYNC_CONFIG", config)]),
        s.run_env(
            &["config", "--jobs", "5"],
            &[("POOLSYNC_CONFIG", config), ("RAYON_NUM_THREADS", "4")],
        ),
        s.run_env(
            &["config"],
            &[("POOLSYNC_CONFIG", config), ("POOLSYNC_WAIT_LOCK", "1")],
        ),
        s.run(&["config", "--config", "typo.toml"]),
        s.run(&["info", "--config", "missing.toml", "pool.set"]),
        s.run_env(
            &["sync", "--json", "pool.set"],
            &[("RAYON_NUM_THREADS", "lots")],
        ),
    ];
    expect![[r#"
        $ poolsync config
        exit: 0
        --- stdout
        # poolsync settings: flag > environment > config file > default
        # config file: <DIR>/config.toml
        jobs = 3                  # file <DIR>/config.toml:2
        wait_lock = 2.5           # file <DIR>/config.toml:4
        rsh = "ssh"               # default: ssh
        remote_path = "poolsync"  # default: poolsync
        serve.root = "~"          # default: the user's home directory (~)
        # key_file (not set)      # default: none: packets carry checksums, which catch damage but not forgery
        compression = "none"      # default: none
        max_size = 2147482624     # default: 2097151k, just under 2 GiB

        $ poolsync config --jobs 5
        exit: 0
        --- stdout
        # poolsync settings: flag > environment > config file > default
        # config file: <DIR>/config.toml
        jobs = 5                  # flag --jobs
        wait_lock = 2.5           # file <DIR>/config.toml:4
        rsh = "ssh"               # default: ssh
        remote_path = "poolsync"  # default: poolsync
        serve.root = "~"          # default: the user's home directory (~)
        # key_file (not set)      # default: none: packets carry checksums, which catch damage but not forgery
        compression = "none"      # default: none
        max_size = 2147482624     # default: 2097151k, just under 2 GiB

        $ poolsync config
        exit: 0
        --- stdout
        # poolsync settings: flag > environment > config file > default
        # config file: <DIR>/config.toml
        jobs = 3                  # file <DIR>/config.toml:2
        wait_lock = 1             # env POOLSYNC_WAIT_LOCK
        rsh = "ssh"               # default: ssh
        remote_path = "poolsync"  # default: poolsync
        serve.root = "~"          # default: the user's home directory (~)
        # key_file (not set)      # default: none: packets carry checksums, which catch damage but not forgery
        compression = "none"      # default: none
        max_size = 2147482624     # default: 2097151k, just under 2 GiB

        $ poolsync config --config typo.toml
        exit: 1
        --- stderr
        error: typo.toml:2: unknown key "job" (did you mean "jobs"?); the known keys are jobs, wait_lock, rsh, remote_path, serve.root, key_file, compression, max_size

        $ poolsync info --config missing.toml pool.set
        exit: 1
        --- stderr
        error: --config: missing.toml: no such file (give an existing config file, or leave it out to use <DIR>/.config/poolsync/config.toml or /etc/poolsync/config.toml)

        $ poolsync sync --json pool.set
        exit: 1
        --- stdout
        {
          "command": "sync",
          "error": "environment variable RAYON_NUM_THREADS=\"lots\": expected a whole number of threads from 1 to 256 (it sets jobs; unset it to use the config file or the default)",
          "exit_code": 1,
          "format": 1,
          "path": "pool.set",
          "result": "error"
        }
        --- stderr
        error: environment variable RAYON_NUM_THREADS="lots": expected a whole number of threads from 1 to 256 (it sets jobs; unset it to use the config file or the default)
    "#]].assert_eq(&runs.join("\n"));
}

#[test]
fn the_config_file_defaults_to_xdg_then_etc() {
    let s = Scene::new();
    fs::create_dir_all(s.path("xdg/poolsync")).expect("mkdir");
    s.write("xdg/poolsync/config.toml", "jobs = 6\n");
    let xdg = s.path("xdg");
    let out = s.run_env(
        &["config", "--json"],
        &[
            ("POOLSYNC_CONFIG", ""),
            ("XDG_CONFIG_HOME", xdg.to_str().expect("utf-8")),
        ],
    );
    let json = out.split("--- stdout\n").nth(1).expect("stdout");
    let doc: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
    assert_eq!(doc["settings"]["jobs"]["value"], 6, "{out}");
    assert_eq!(doc["settings"]["jobs"]["source"]["kind"], "file");
    assert_eq!(doc["settings"]["jobs"]["source"]["line"], 1);
    assert_eq!(doc["config_file"]["origin"], "user");
    // Without a user's file: the system's, when the machine has one.
    let out = s.run_env(
        &["config", "--json"],
        &[("POOLSYNC_CONFIG", ""), ("XDG_CONFIG_HOME", "/nonexistent")],
    );
    let json = out.split("--- stdout\n").nth(1).expect("stdout");
    let doc: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
    let system = Path::new("/etc/poolsync/config.toml");
    if system.exists() {
        assert_eq!(doc["config_file"]["origin"], "system", "{out}");
    } else {
        assert_eq!(doc["config_file"]["path"], serde_json::Value::Null, "{out}");
        assert_eq!(doc["settings"]["wait_lock"]["source"]["kind"], "default");
    }
}

#[test]
fn update_packets_say_what_they_carry_and_why_they_are_refused() {
    let s = Scene::new();
    s.pool_set(2);
    s.write("b.set", "PMEMPOOLSET\n20M {DIR}/b.part\n");
    s.check(
        &[
            &["export", "-d", "--out", "p1", "pool.set", "b"],
            &["export", "--out", "p1", "pool.set", "b"],
            &["export", "--out", "p2", "pool.set", "b"],
            &["packet", "p1"],
            &["import", "--keep", "b.set", "p1"],
            &["import", "b.set", "p1"],
            &["epoch", "pool.set"],
        ],
        expect![[r#"
            $ poolsync export -d --out p1 pool.set b
            exit: 0
            --- stdout
            export from pool.set (dry run: nothing is written, not even the state)
            epochs: base 0, new 1 (timeline 1, lineage <ID>)
            destinations: b (never exported to: every block)
            4095 block(s) compared, 4095 changed, 4095 shipped: 3153920 bytes of data in 770 block(s), 3325 zero block(s) without bytes
            would write 1 file(s), 3154456 bytes (none):
              p1 (3154456 bytes)
            --- stderr
            note: pool.set.poolsync-state: no state file yet: a new lineage starts, and every destination gets every block

            $ poolsync export --out p1 pool.set b
            exit: 0
            --- stdout
            p1: packet of epoch 0 -> 1 for b: 4095 block(s) shipped (3.0M of data, 3325 zero), 1 file(s), 3.0M
            --- stderr
            note: pool.set.poolsync-state: no state file yet: a new lineage starts, and every destination gets every block

            $ poolsync export --out p2 pool.set b
            exit: 0
            --- stdout
            pool.set: b already holds epoch 1 and nothing changed: replicas are synchronized, no packet written

            $ poolsync packet p1
            exit: 0
            --- stdout
            p1: packet <ID>, part 1 of 1, 3154456 bytes
            packet <ID>:
              Pool set UUID            : <UUID>
              Lineage                  : <ID>
              Timeline                 : 1
              Epochs                   : 0 -> 1
              Destinations             : b
              Source                   : <DIR>/pool.set
              Created                  : <TIME>
              Comment                  : 
              Compression              : none
              Format                   : version 2
              Signed                   : no (checksums)
              Range                    : [0x1000, 0x1000000) in blocks of 4096
              Blocks                   : 4095 (770 with data, 3325 zero)
              Records                  : 5
              Files                    : 1, 3154456 bytes
              Verified                 : yes

            $ poolsync import --keep b.set p1
            exit: 0
            --- stdout
            b.set: seeded: its parts created from its pool set file, with the source's pool set UUID
            p1 (epoch 0 -> 1 of timeline 1): applied

            $ poolsync import b.set p1
            exit: 0
            --- stdout
            p1 (epoch 0 -> 1 of timeline 1): skipped: already applied (epoch 1)

            $ poolsync epoch pool.set
            exit: 0
            --- stdout
            Pool set                 : pool.set
            State file               : pool.set.poolsync-state
            Pool set UUID            : <UUID>
            Lineage                  : <ID>
            Timeline                 : 1
            Epoch                    : 1
            Role                     : writer (exports make new epochs)
            Destinations:
              b  epoch 1 of timeline 1, exported <TIME>
        "#]],
    );
    // Two more epochs; the first packet is lost.
    let mut part = fs::read(s.path("r0.part")).expect("read part");
    part[5 << 20] ^= 1;
    fs::write(s.path("r0.part"), &part).expect("write part");
    let mut part = fs::read(s.path("r1.part")).expect("read part");
    part[5 << 20] ^= 1;
    fs::write(s.path("r1.part"), &part).expect("write part");
    assert!(s
        .run(&["export", "--out", "lost", "pool.set", "b"])
        .contains("exit: 0"));
    for name in ["r0.part", "r1.part"] {
        let mut part = fs::read(s.path(name)).expect("read part");
        part[6 << 20] ^= 1;
        fs::write(s.path(name), &part).expect("write part");
    }
    assert!(s
        .run(&["export", "--out", "p3", "pool.set", "b"])
        .contains("exit: 0"));
    let mut bad = fs::read(s.path("p3")).expect("read packet");
    let at = bad.len() - 200;
    bad[at] ^= 1;
    fs::write(s.path("bad"), &bad).expect("write packet");
    s.check(
        &[
            &["import", "b.set", "p3"],
            &["import", "--diagnose", "b.set", "p3"],
            &["import", "b.set", "bad"],
            &["packet", "bad"],
        ],
        expect![[r#"
            $ poolsync import b.set p3
            exit: 1
            --- stdout
            p3 (epoch 2 -> 3 of timeline 1): refused: p3: gap: the destination holds epoch 1, the packet starts at epoch 2 (offset 72): the changes of epoch 2 are missing; ask the source for `export --since 1`
            --- stderr
            error: failed to import: p3: gap: the destination holds epoch 1, the packet starts at epoch 2 (offset 72): the changes of epoch 2 are missing; ask the source for `export --since 1`

            $ poolsync import --diagnose b.set p3
            exit: 1
            --- stdout
            p3: refused: p3: gap: the destination holds epoch 1, the packet starts at epoch 2 (offset 72): the changes of epoch 2 are missing; ask the source for `export --since 1`
            to fill what is missing, run at the source:
            poolsync export --since 1 --out b-since-1.pkt <DIR>/pool.set b

            $ poolsync import b.set bad
            exit: 1
            --- stdout
            bad (epoch 2 -> 3 of timeline 1): refused: bad: record at offset 184 fails its checksum: the file is damaged or the structure is not this packet's
            --- stderr
            error: failed to import: bad: record at offset 184 fails its checksum: the file is damaged or the structure is not this packet's

            $ poolsync packet bad
            exit: 1
            --- stdout
            bad: packet <ID>, part 1 of 1, 4440 bytes
            packet <ID>:
              Pool set UUID            : <UUID>
              Lineage                  : <ID>
              Timeline                 : 1
              Epochs                   : 2 -> 3
              Destinations             : b
              Source                   : <DIR>/pool.set
              Created                  : <TIME>
              Comment                  : 
              Compression              : none
              Format                   : version 2
              Signed                   : no (checksums)
              Range                    : [0x1000, 0x1000000) in blocks of 4096
              Blocks                   : 1 (1 with data, 0 zero)
              Records                  : 1
              Files                    : 1, 4440 bytes
              Verified                 : NO
            --- stderr
            error: bad: record at offset 184 fails its checksum: the file is damaged or the structure is not this packet's
        "#]],
    );
}

#[test]
fn a_replica_added_by_hand_is_new_and_transform_adds_it() {
    let s = Scene::new();
    s.pool_set(1);
    s.write(
        "pool.set",
        "PMEMPOOLSET\n16M {DIR}/r0.part\nREPLICA\n16M {DIR}/r1.part\n",
    );
    s.check(
        &[&["sync", "pool.set"], &["check", "pool.set"]],
        expect![[r#"
            $ poolsync sync pool.set
            exit: 1
            --- stderr
            error: failed to synchronize: pool.set: alien replica found (probably coming from a different poolset): healthy replicas up to replica 0 form a ring of their own: replica 0 (<DIR>/r0.part); replica(s) 1 look new: none of their parts exists and the pool's headers name a ring without them, as when REPLICA lines are added to a pool set file by hand; sync rebuilds only the replicas a pool already has. To add replicas, put the pool set file back as it was (say as OLD.set) and run `poolsync transform OLD.set pool.set`

            $ poolsync check pool.set
            exit: 1
            --- stderr
            error: checking consistency failed: pool.set: replica 1 part 0 (<DIR>/r1.part): no such file or directory; replica(s) 1 look new: none of their parts exists and the pool's headers name a ring without them, as when REPLICA lines are added to a pool set file by hand; sync rebuilds only the replicas a pool already has. To add replicas, put the pool set file back as it was (say as OLD.set) and run `poolsync transform OLD.set pool.set`
        "#]],
    );
}

#[test]
fn one_file_named_twice_is_named_so_not_in_use() {
    let s = Scene::new();
    s.pool_set(2);
    s.write(
        "twice.set",
        "PMEMPOOLSET\n16M {DIR}/r0.part\nREPLICA\n16M {DIR}/r0.part\n",
    );
    s.write(
        "itself.set",
        "PMEMPOOLSET\n16M {DIR}/r0.part\nREPLICA\n16M {DIR}/itself.set\n",
    );
    s.check(
        &[
            &["info", "twice.set"],
            &["sync", "twice.set"],
            &["check", "itself.set"],
        ],
        expect![[r#"
            $ poolsync info twice.set
            exit: 1
            --- stderr
            error: twice.set:4: <DIR>/r0.part is the same file as <DIR>/r0.part on line 2 (listed twice, or a hard or symbolic link to it); a pool set names each part once

            $ poolsync sync twice.set
            exit: 1
            --- stderr
            error: failed to synchronize: twice.set:4: <DIR>/r0.part is the same file as <DIR>/r0.part on line 2 (listed twice, or a hard or symbolic link to it); a pool set names each part once

            $ poolsync check itself.set
            exit: 1
            --- stderr
            error: checking consistency failed: itself.set:4: <DIR>/itself.set is the pool set file itself (or a link to it); a part must be a file of its own
        "#]],
    );
}

#[test]
fn a_replica_listed_smaller_than_the_pool_is_named_too_small() {
    let s = Scene::new();
    s.write(
        "pool.set",
        "PMEMPOOLSET\n32M {DIR}/r0.part\nREPLICA\n32M {DIR}/r1.part\n",
    );
    let created = s.run(&["create", "obj", "pool.set"]);
    assert!(created.contains("exit: 0"), "{created}");
    s.write(
        "pool.set",
        "PMEMPOOLSET\n16M {DIR}/r0.part\nREPLICA\n32M {DIR}/r1.part\n",
    );
    s.check(&[&["check", "--data", "pool.set"]], expect![[r#"
        $ poolsync check --data pool.set
        exit: 1
        --- stderr
        error: checking data failed: pool.set: replica 0 is too small for the pool: the pool set file lists 16777216 bytes for it (without part headers), and the pool is 33554432 bytes (heap_offset + heap_size of the descriptor); was the pool set file edited? `poolsync transform` reshapes replicas
    "#]]);
}

/// `"checksum": "0x…"` as `"checksum": "<CSUM>"`: header checksums cover
/// the random UUIDs.
fn mask_checksums(text: &str) -> String {
    let key = "\"checksum\": \"0x";
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(key) {
        out.push_str(&rest[..i]);
        out.push_str("\"checksum\": \"<CSUM>");
        let tail = &rest[i + key.len()..];
        rest = tail.trim_start_matches(|c: char| c.is_ascii_hexdigit());
    }
    out.push_str(rest);
    out
}

#[test]
fn feature_names_its_rules_and_how_to_finish_an_interrupted_change() {
    let s = Scene::new();
    s.pool_set(2);
    s.check(
        &[
            &["feature", "-q", "CHECKSUM_2K", "pool.set"],
            &["feature", "-e", "SINGLEHDR", "pool.set"],
            &["feature", "-d", "CKSUM_2K", "pool.set"],
            &["feature", "-v", "-d", "CHECK_BAD_BLOCKS", "pool.set"],
            &["feature", "-v", "-d", "CHECK_BAD_BLOCKS", "pool.set"],
            &["feature", "-q", "CHECK_BAD_BLOCKS", "missing.set"],
        ],
        expect![[r#"
            $ poolsync feature -q CHECKSUM_2K pool.set
            exit: 1
            --- stderr
            error: invalid value 'CHECKSUM_2K' for '--query <FEATURE>'
              [possible values: SINGLEHDR, CKSUM_2K, SHUTDOWN_STATE, CHECK_BAD_BLOCKS]

              tip: a similar value exists: 'CKSUM_2K'

            For more information, try '--help'.

            $ poolsync feature -e SINGLEHDR pool.set
            exit: 1
            --- stderr
            error: pool.set: unsupported feature: SINGLEHDR cannot be enabled or disabled, it follows OPTION SINGLEHDR of the pool set file (`poolsync transform OLD.set NEW.set` adds or removes the option); nothing was written

            $ poolsync feature -d CKSUM_2K pool.set
            exit: 1
            --- stderr
            error: pool.set: disable SHUTDOWN_STATE prior to disabling CKSUM_2K (run `poolsync feature -d SHUTDOWN_STATE pool.set` first); nothing was written

            $ poolsync feature -v -d CHECK_BAD_BLOCKS pool.set
            exit: 0
            --- stdout
            pool.set: CHECK_BAD_BLOCKS disabled (2 of 2 pool header(s) written)

            $ poolsync feature -v -d CHECK_BAD_BLOCKS pool.set
            exit: 0
            --- stdout
            pool.set: CHECK_BAD_BLOCKS already disabled

            $ poolsync feature -q CHECK_BAD_BLOCKS missing.set
            exit: 1
            --- stderr
            error: missing.set: no such file or directory
        "#]],
    );
    // An interrupted `-d SHUTDOWN_STATE`: replica 0 changed, replica 1 not.
    let old = fs::read(s.path("r1.part")).expect("read part");
    let done = s.run(&["feature", "-d", "SHUTDOWN_STATE", "pool.set"]);
    assert!(done.contains("exit: 0"), "{done}");
    let f = fs::OpenOptions::new()
        .write(true)
        .open(s.path("r1.part"))
        .expect("open part");
    std::os::unix::fs::FileExt::write_all_at(&f, &old[..4096], 0).expect("write header");
    drop(f);
    s.check(
        &[
            &["feature", "-q", "SHUTDOWN_STATE", "pool.set"],
            &["feature", "-e", "CHECK_BAD_BLOCKS", "pool.set"],
            &["check", "pool.set"],
            &["sync", "pool.set"],
            &["feature", "-v", "-d", "SHUTDOWN_STATE", "pool.set"],
        ],
        expect![[r#"
            $ poolsync feature -q SHUTDOWN_STATE pool.set
            exit: 1
            --- stderr
            error: pool.set: the pool headers disagree on SHUTDOWN_STATE (set in: replica 1 part 0; clear in: replica 0 part 0): a change of SHUTDOWN_STATE was interrupted; finish it with `poolsync feature -e SHUTDOWN_STATE pool.set` or undo it with `poolsync feature -d SHUTDOWN_STATE pool.set`

            $ poolsync feature -e CHECK_BAD_BLOCKS pool.set
            exit: 1
            --- stderr
            error: pool.set: the pool headers disagree on SHUTDOWN_STATE (set in: replica 1 part 0; clear in: replica 0 part 0): a change of SHUTDOWN_STATE was interrupted; finish it with `poolsync feature -e SHUTDOWN_STATE pool.set` or undo it with `poolsync feature -d SHUTDOWN_STATE pool.set`

            $ poolsync check pool.set
            exit: 1
            --- stdout
            replica 1 part 0: pool header features differ from replica 0 part 0's in SHUTDOWN_STATE: an interrupted feature change
            pool.set: not consistent
            --- stderr
            note: a change of SHUTDOWN_STATE was interrupted: finish it with `poolsync feature -e SHUTDOWN_STATE pool.set` or undo it with `poolsync feature -d SHUTDOWN_STATE pool.set`

            $ poolsync sync pool.set
            exit: 1
            --- stderr
            error: failed to synchronize: pool.set: replica 1 part 0 and replica 0 part 0 disagree on SHUTDOWN_STATE (pool header offsets 12..24), as an interrupted feature change leaves them - cannot synchronize: replica 1 part 0 (<DIR>/r1.part) and replica 0 part 0 (<DIR>/r0.part); a change of SHUTDOWN_STATE was interrupted: finish it with `poolsync feature -e SHUTDOWN_STATE pool.set` or undo it with `poolsync feature -d SHUTDOWN_STATE pool.set`, then run the sync again

            $ poolsync feature -v -d SHUTDOWN_STATE pool.set
            exit: 0
            --- stdout
            pool.set: SHUTDOWN_STATE disabled (1 of 2 pool header(s) written, finishing an interrupted change)
        "#]],
    );
    let json = mask_checksums(&s.run(&["feature", "--json", "-e", "SHUTDOWN_STATE", "pool.set"]));
    expect![[r#"
        $ poolsync feature --json -e SHUTDOWN_STATE pool.set
        exit: 0
        --- stdout
        {
          "before": "disabled",
          "changed": true,
          "command": "feature",
          "enabled": true,
          "exit_code": 0,
          "feature": "SHUTDOWN_STATE",
          "format": 1,
          "operation": "enable",
          "path": "pool.set",
          "report": {
            "before": "disabled",
            "changed": true,
            "enabled": true,
            "feature": "SHUTDOWN_STATE",
            "headers": [
              {
                "checksum": "<CSUM>",
                "enabled": false,
                "part": 0,
                "path": "<DIR>/r0.part",
                "replica": 0,
                "torn": false,
                "written": true
              },
              {
                "checksum": "<CSUM>",
                "enabled": false,
                "part": 0,
                "path": "<DIR>/r1.part",
                "replica": 1,
                "torn": false,
                "written": true
              }
            ],
            "op": "enable",
            "path": "pool.set"
          },
          "result": "enabled"
        }
    "#]]
    .assert_eq(&json);
}

#[test]
fn device_dax_refusals_name_the_line_and_the_fix() {
    let s = Scene::new();
    let sysfs = s.path("sys");
    let mut fake = poolsync_pmem::dax::FakeSysfs::new(&sysfs).expect("fake sysfs");
    for (name, align) in [("dax0.0", 2 << 20), ("dax1.0", 4096)] {
        let path = s.path(name);
        File::create(&path)
            .and_then(|f| f.set_len(16 << 20))
            .expect("stand-in");
        fake.device(&path, 16 << 20, align).expect("device");
    }
    s.write(
        "concat.set",
        "PMEMPOOLSET\nAUTO {DIR}/dax0.0\nAUTO {DIR}/dax1.0\n",
    );
    s.write(
        "mixed.set",
        "PMEMPOOLSET\nAUTO {DIR}/dax1.0\n16M {DIR}/file\n",
    );
    s.write("auto.set", "PMEMPOOLSET\nAUTO {DIR}/concat.set\n");
    s.write(
        "ok.set",
        "PMEMPOOLSET\nAUTO {DIR}/dax0.0\nREPLICA\nAUTO {DIR}/dax1.0\n",
    );
    let sys = sysfs.to_str().expect("utf-8").to_string();
    let env = [("POOLSYNC_SYSFS", sys.as_str())];
    let runs: [&[&str]; 7] = [
        &["create", "obj", "concat.set"],
        &["create", "obj", "mixed.set"],
        &["info", "auto.set"],
        &["create", "obj", "ok.set"],
        &["create", "obj", "ok.set"],
        &["create", "-s", "16M", "obj", "dax0.0"],
        &["rm", "-v", "ok.set"],
    ];
    let text: Vec<String> = runs.iter().map(|args| s.run_env(args, &env)).collect();
    expect![[r#"
        $ poolsync create obj concat.set
        exit: 1
        --- stderr
        error: concat.set:2: replica 0: Multiple DAX devices with alignment other than 4KB. Use the SINGLEHDR poolset option. (<DIR>/dax0.0 has an alignment of 2097152 bytes; without SINGLEHDR every part after the first is mapped from its byte 4096)
        error: creating pool file failed

        $ poolsync create obj mixed.set
        exit: 1
        --- stderr
        error: mixed.set:3: replica 0: either all the parts must be Device DAX or none (<DIR>/dax1.0 is a Device DAX, <DIR>/file is not)
        error: creating pool file failed

        $ poolsync info auto.set
        exit: 1
        --- stderr
        error: auto.set:2: cannot determine size of a part: AUTO takes the size of a Device DAX, and <DIR>/concat.set is not a Device DAX

        $ poolsync create obj ok.set
        exit: 0

        $ poolsync create obj ok.set
        exit: 1
        --- stderr
        error: ok.set:2: <DIR>/dax0.0: non-empty Device DAX detected: its pool header area (bytes 0..4096) is not zero; if the pool on it is not needed, zero it with `poolsync rm <DIR>/dax0.0`, or use -f
        error: creating pool file failed

        $ poolsync create -s 16M obj dax0.0
        exit: 1
        --- stderr
        error: dax0.0: -s|--size cannot be used with a Device DAX, whose pool takes the whole device (16777216 bytes)
        error: creating pool file failed

        $ poolsync rm -v ok.set
        exit: 0
        --- stdout
        removed '<DIR>/dax0.0' (a Device DAX: its pool header was zeroed)
        removed '<DIR>/dax1.0' (a Device DAX: its pool header was zeroed)
    "#]]
    .assert_eq(&text.join("\n"));
}
