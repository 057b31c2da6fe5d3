//! Shared helpers of the PMDK interop suite: tool detection and skipping,
//! running `poolsync`, `pmempool` and the libpmemobj client, pool set shapes
//! in temp dirs, directory snapshots and raw header bytes.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;

/// One mebibyte.
pub const MIB: u64 = 1 << 20;

/// Longest time any single tool run may take before the test fails; a hang
/// usually means a blocking lock or an interactive question.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The Debian packages that provide everything the suite needs.
const APT_HINT: &str = "sudo apt-get install -y pmdk-tools libpmemobj-dev libpmempool-dev gcc";

/// What the suite needs but cannot find on this machine (empty when all is there).
fn missing_tools() -> &'static [String] {
    static MISSING: OnceLock<Vec<String>> = OnceLock::new();
    MISSING.get_or_init(|| {
        let mut missing = Vec::new();
        if find_on_path("pmempool").is_none() {
            missing.push("pmempool not on PATH (package pmdk-tools)".to_owned());
        }
        if find_on_path("cc").is_none() {
            missing.push("C compiler `cc` not on PATH (package gcc)".to_owned());
        }
        if !Path::new("/usr/include/libpmemobj.h").is_file() {
            missing.push("/usr/include/libpmemobj.h not found (package libpmemobj-dev)".to_owned());
        }
        missing
    })
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Returns true when the PMDK tools are available. Otherwise, under `CI=true`
/// it panics naming what is missing; elsewhere it records a skip line in the
/// file named by `POOLSYNC_SKIP_LOG` (and on stderr) and returns false, and the
/// caller returns early. Use it through the `require_pmdk!` macro.
pub fn require_pmdk(test: &str) -> bool {
    let missing = missing_tools();
    if missing.is_empty() {
        return true;
    }
    let what = missing.join("; ");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: the PMDK interop tools are required on CI but missing: {what}. Install them with: {APT_HINT}");
    }
    eprintln!("{test}: install the PMDK tools with: {APT_HINT}");
    log_skip(test, &what);
    false
}

/// Returns true when `strace` (fault injection for the kill loops) is on
/// `PATH`. Otherwise, as [`require_pmdk`]: under `CI=true` it panics, and
/// elsewhere it records a skip and returns false.
pub fn require_strace(test: &str) -> bool {
    if find_on_path("strace").is_some() {
        return true;
    }
    let what = "strace not on PATH (package strace)";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{test}: {what}, which CI requires. Install it with: sudo apt-get install -y strace"
        );
    }
    log_skip(test, what);
    false
}

/// Records that `test` skipped because of `what`: a line on stderr and one
/// in the file named by `POOLSYNC_SKIP_LOG` (which `cargo xtask test`
/// reports, and treats as an error under `CI=true`).
pub fn log_skip(test: &str, what: &str) {
    eprintln!("skipping {test}: {what}");
    if let Some(log) = std::env::var_os("POOLSYNC_SKIP_LOG") {
        let line = format!("{test}: {what}\n");
        // One write of the whole line on an O_APPEND file keeps lines of
        // concurrently skipping tests from interleaving.
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!(
                "cannot append to POOLSYNC_SKIP_LOG {}: {e}",
                Path::new(&log).display()
            );
        }
    }
}

/// The result of one tool run.
#[derive(Debug)]
pub struct Out {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// stdout then stderr.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// A multi-line description for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "$ {}\nexit: {:?}\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.cmdline, self.code, self.stdout, self.stderr
        )
    }

    /// Asserts exit code 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success\n{}", self.describe());
        self
    }

    /// Asserts that the run did not crash: a signal or a Rust panic is always a bug.
    #[track_caller]
    pub fn assert_no_crash(&self) -> &Self {
        assert!(
            self.code.is_some(),
            "killed by a signal\n{}",
            self.describe()
        );
        assert!(
            !self.stderr.contains("panicked"),
            "the tool panicked\n{}",
            self.describe()
        );
        self
    }
}

/// Runs a program with a timeout; stdin gets `stdin` (or /dev/null) so that
/// interactive questions never block. `TZ=UTC` pins the creation time that
/// `info` prints in local time, so the comparison does not depend on the
/// machine's time zone (both tools get the same environment).
pub fn run(program: &OsStr, args: &[&str], stdin: Option<&[u8]>) -> Out {
    run_with_env(program, args, stdin, &[])
}

/// [`run`] with extra environment variables.
pub fn run_with_env(
    program: &OsStr,
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &str)],
) -> Out {
    let cmdline = std::iter::once(program.to_string_lossy().into_owned())
        .chain(args.iter().map(|a| (*a).to_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut out_file = tempfile::tempfile().expect("temp file for stdout");
    let mut err_file = tempfile::tempfile().expect("temp file for stderr");
    let stdin_stdio = match stdin {
        Some(bytes) => {
            let mut f = tempfile::tempfile().expect("temp file for stdin");
            f.write_all(bytes).expect("write stdin");
            f.seek(SeekFrom::Start(0)).expect("rewind stdin");
            Stdio::from(f)
        }
        None => Stdio::null(),
    };
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .env("TZ", "UTC")
        .stdin(stdin_stdio)
        .stdout(Stdio::from(out_file.try_clone().expect("dup stdout file")))
        .stderr(Stdio::from(err_file.try_clone().expect("dup stderr file")))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmdline}: {e}"));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmdline}: still running after {RUN_TIMEOUT:?} (blocked on a lock or a question?)"
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let read_back = |f: &mut File| {
        let mut bytes = Vec::new();
        f.seek(SeekFrom::Start(0)).expect("rewind output");
        f.read_to_end(&mut bytes).expect("read output");
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Out {
        cmdline,
        code: status.code(),
        stdout: read_back(&mut out_file),
        stderr: read_back(&mut err_file),
    }
}

/// Runs the `poolsync` binary under test.
pub fn poolsync(args: &[&str]) -> Out {
    run(OsStr::new(env!("CARGO_BIN_EXE_poolsync")), args, None)
}

/// Runs `poolsync` with extra environment variables (such as
/// `POOLSYNC_SYSFS`, to point it at a fake sysfs tree).
pub fn poolsync_env(args: &[&str], env: &[(&str, &str)]) -> Out {
    run_with_env(OsStr::new(env!("CARGO_BIN_EXE_poolsync")), args, None, env)
}

/// Runs `poolsync` with bytes on stdin.
pub fn poolsync_stdin(args: &[&str], stdin: &[u8]) -> Out {
    run(
        OsStr::new(env!("CARGO_BIN_EXE_poolsync")),
        args,
        Some(stdin),
    )
}

/// Runs the reference `pmempool`.
pub fn pmempool(args: &[&str]) -> Out {
    run(OsStr::new("pmempool"), args, None)
}

/// Runs `pmempool` with bytes on stdin.
pub fn pmempool_stdin(args: &[&str], stdin: &[u8]) -> Out {
    run(OsStr::new("pmempool"), args, Some(stdin))
}

/// Runs the libpmemobj client (compiled on first use).
pub fn objclient(args: &[&str]) -> Out {
    run(objclient_path().as_os_str(), args, None)
}

/// Path of the compiled client. It is built once per source version under
/// `CARGO_TARGET_TMPDIR`, so later runs reuse it; the build goes through a
/// per-process temporary name and an atomic rename.
pub fn objclient_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let source = include_str!("../data/objclient.c");
        let mut hasher = DefaultHasher::new();
        source.hash(&mut hasher);
        let key = hasher.finish();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop");
        fs::create_dir_all(&dir).expect("create CARGO_TARGET_TMPDIR/interop");
        let exe = dir.join(format!("objclient-{key:016x}"));
        if exe.is_file() {
            return exe;
        }
        let src = dir.join(format!("objclient-{key:016x}-{}.c", std::process::id()));
        fs::write(&src, source).expect("write objclient source");
        let tmp_exe = dir.join(format!("objclient-{key:016x}-{}.tmp", std::process::id()));
        let out = run(
            OsStr::new("cc"),
            &[
                "-O1",
                "-Wall",
                "-o",
                tmp_exe.to_str().expect("utf-8 target dir"),
                src.to_str().expect("utf-8 target dir"),
                "-lpmemobj",
            ],
            None,
        );
        assert_eq!(
            out.code,
            Some(0),
            "cannot compile the libpmemobj client (is libpmemobj-dev installed? {APT_HINT})\n{}",
            out.describe()
        );
        fs::rename(&tmp_exe, &exe).expect("move objclient into place");
        let _ = fs::remove_file(&src);
        exe
    })
}

/// A helper process that holds a lock (a flocked file or an open pool);
/// killed and reaped on drop.
#[derive(Debug)]
pub struct Holder {
    child: Child,
}

impl Holder {
    /// Starts `objclient <args>` and waits until it prints "ready".
    pub fn start(args: &[&str]) -> Holder {
        let mut child = Command::new(objclient_path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn objclient");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read objclient stdout");
        assert_eq!(
            line.trim(),
            "ready",
            "objclient {args:?} did not get its lock"
        );
        Holder { child }
    }

    /// Kills the holder with SIGKILL (like a crash) and reaps it.
    pub fn crash(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh temp dir (removed at the end of the test).
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("poolsync-interop-")
        .tempdir()
        .expect("create temp dir")
}

/// `&Path` as `&str` (temp dirs are UTF-8).
pub fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The shape of a pool set: part sizes in MiB per replica.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub name: &'static str,
    pub replicas: &'static [&'static [u64]],
    pub singlehdr: bool,
}

impl Shape {
    /// Number of header-carrying parts of replica `r`.
    pub fn nhdrs(&self, r: usize) -> usize {
        if self.singlehdr {
            1
        } else {
            self.replicas[r].len()
        }
    }
}

/// 1 replica × 1 part.
pub const SET_1X1: Shape = Shape {
    name: "1x1",
    replicas: &[&[10]],
    singlehdr: false,
};
/// 1 replica × 3 parts.
pub const SET_1X3: Shape = Shape {
    name: "1x3",
    replicas: &[&[8, 4, 4]],
    singlehdr: false,
};
/// 3 replicas with different part splits.
pub const SET_3R: Shape = Shape {
    name: "3replicas",
    replicas: &[&[20, 20, 21], &[40, 21], &[64]],
    singlehdr: false,
};
/// SINGLEHDR, 2 replicas × 2 parts.
pub const SET_SINGLEHDR: Shape = Shape {
    name: "singlehdr",
    replicas: &[&[10, 10], &[12, 8]],
    singlehdr: true,
};
/// The shape the damage tests break: 2 replicas, 3 and 2 parts.
pub const SET_DAMAGE: Shape = Shape {
    name: "damage",
    replicas: &[&[8, 8, 8], &[16, 9]],
    singlehdr: false,
};

/// Every pool set shape that create/info/check/checksum tests cover.
pub const SET_SHAPES: [Shape; 4] = [SET_1X1, SET_1X3, SET_3R, SET_SINGLEHDR];

/// A pool set file and its part paths, in a temp dir.
#[derive(Debug, Clone)]
pub struct SetFiles {
    pub set: PathBuf,
    pub parts: Vec<Vec<PathBuf>>,
}

impl SetFiles {
    pub fn set_str(&self) -> &str {
        s(&self.set)
    }

    pub fn part(&self, r: usize, p: usize) -> &Path {
        &self.parts[r][p]
    }

    pub fn all_parts(&self) -> impl Iterator<Item = &PathBuf> {
        self.parts.iter().flatten()
    }
}

/// Writes `<dir>/<prefix>.set` for `shape`, with absolute part paths
/// `<dir>/<prefix>_r<R>p<P>` (the parts are not created).
pub fn write_set(dir: &Path, prefix: &str, shape: &Shape) -> SetFiles {
    let mut text = String::from("PMEMPOOLSET\n");
    if shape.singlehdr {
        text.push_str("OPTION SINGLEHDR\n");
    }
    let mut parts = Vec::new();
    for (r, sizes) in shape.replicas.iter().enumerate() {
        if r > 0 {
            text.push_str("REPLICA\n");
        }
        let mut replica = Vec::new();
        for (p, mib) in sizes.iter().enumerate() {
            let path = dir.join(format!("{prefix}_r{r}p{p}"));
            text.push_str(&format!("{mib}M {}\n", s(&path)));
            replica.push(path);
        }
        parts.push(replica);
    }
    let set = dir.join(format!("{prefix}.set"));
    fs::write(&set, text).expect("write pool set file");
    SetFiles { set, parts }
}

/// Writes the set file and creates the pool set with the real `pmempool`.
pub fn pmempool_set(dir: &Path, prefix: &str, shape: &Shape) -> SetFiles {
    let files = write_set(dir, prefix, shape);
    pmempool(&["create", "obj", files.set_str()]).assert_success();
    files
}

/// Last line of `stdout` of the form `<target>: <verdict>`, if any.
pub fn verdict_line(stdout: &str, target: &str) -> Option<String> {
    const VERDICTS: [&str; 5] = [
        "consistent",
        "not consistent",
        "repaired",
        "cannot repair",
        "sync required",
    ];
    let prefix = format!("{target}: ");
    stdout
        .lines()
        .rfind(|line| {
            line.strip_prefix(&prefix)
                .is_some_and(|rest| VERDICTS.contains(&rest.trim_end()))
        })
        .map(|line| line.trim_end().to_owned())
}

/// Whether `text` mentions line `n` ("line 2", "...:2]", ":2:").
pub fn mentions_line(text: &str, n: usize) -> bool {
    if text.contains(&format!("line {n}")) {
        return true;
    }
    let needle = format!(":{n}");
    text.match_indices(&needle)
        .any(|(i, _)| !text[i + needle.len()..].starts_with(|c: char| c.is_ascii_digit()))
}

/// Whether `text` names `path` (full path or file name).
pub fn mentions_file(text: &str, path: &Path) -> bool {
    let name = path.file_name().and_then(OsStr::to_str).unwrap_or_default();
    text.contains(s(path)) || (!name.is_empty() && text.contains(name))
}

/// Whether `text` names part `p` of replica `r` (by path or "replica R part P").
pub fn mentions_part(text: &str, files: &SetFiles, r: usize, p: usize) -> bool {
    mentions_file(text, files.part(r, p)) || text.contains(&format!("replica {r} part {p}"))
}

/// Asserts two texts are identical line by line, pointing at the first difference.
#[track_caller]
pub fn assert_same_lines(expected: &str, got: &str, context: &str) {
    let e: Vec<&str> = expected.lines().collect();
    let g: Vec<&str> = got.lines().collect();
    for i in 0..e.len().max(g.len()) {
        let (el, gl) = (e.get(i).copied(), g.get(i).copied());
        if el != gl {
            panic!(
                "{context}: first difference at line {}\n  pmempool: {:?}\n  poolsync: {:?}\n=== pmempool ===\n{expected}=== poolsync ===\n{got}",
                i + 1,
                el.unwrap_or("<no line>"),
                gl.unwrap_or("<no line>")
            );
        }
    }
}

/// Size, content hash, mtime and mode of one file (hash `None` if unreadable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub len: u64,
    pub hash: Option<u64>,
    pub mtime: SystemTime,
    pub mode: u32,
}

/// Every file under `dir`, by path relative to `dir`.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, FileState> {
    fn walk(root: &Path, dir: &Path, map: &mut BTreeMap<PathBuf, FileState>) {
        for entry in fs::read_dir(dir).expect("read dir") {
            let entry = entry.expect("dir entry");
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).expect("stat");
            if meta.is_dir() {
                walk(root, &path, map);
                continue;
            }
            let hash = fs::read(&path).ok().map(|bytes| {
                let mut h = DefaultHasher::new();
                bytes.hash(&mut h);
                h.finish()
            });
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            let state = FileState {
                len: meta.len(),
                hash,
                mtime: meta.modified().expect("mtime"),
                mode: meta.permissions().mode(),
            };
            map.insert(rel, state);
        }
    }
    let mut map = BTreeMap::new();
    walk(dir, dir, &mut map);
    map
}

/// Asserts that no file appeared, vanished or changed (content, size, mode
/// and mtime).
#[track_caller]
pub fn assert_unchanged(
    before: &BTreeMap<PathBuf, FileState>,
    after: &BTreeMap<PathBuf, FileState>,
    context: &str,
) {
    assert_unchanged_inner(before, after, context, true);
}

/// Like [`assert_unchanged`] but ignores mtime: `pmempool create` bumps the
/// mtime of existing part files even when it refuses to touch them.
#[track_caller]
pub fn assert_same_content(
    before: &BTreeMap<PathBuf, FileState>,
    after: &BTreeMap<PathBuf, FileState>,
    context: &str,
) {
    assert_unchanged_inner(before, after, context, false);
}

#[track_caller]
fn assert_unchanged_inner(
    before: &BTreeMap<PathBuf, FileState>,
    after: &BTreeMap<PathBuf, FileState>,
    context: &str,
    with_mtime: bool,
) {
    for (path, state) in before {
        let Some(now) = after.get(path) else {
            panic!(
                "{context}: pre-existing file {} was deleted",
                path.display()
            );
        };
        let mut now = now.clone();
        if !with_mtime {
            now.mtime = state.mtime;
        }
        assert_eq!(
            *state,
            now,
            "{context}: pre-existing file {} was modified",
            path.display()
        );
    }
    for path in after.keys() {
        assert!(
            before.contains_key(path),
            "{context}: file {} was left behind",
            path.display()
        );
    }
}

/// Names of the files in `dir` (not recursive), sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// The first 4096 bytes of a file.
pub fn read_header(path: &Path) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .unwrap_or_else(|e| panic!("read header of {}: {e}", path.display()));
    buf
}

/// `len` bytes at `offset` of a file.
pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(offset))?;
            f.read_exact(&mut buf)
        })
        .unwrap_or_else(|e| panic!("read {len} bytes at {offset} of {}: {e}", path.display()));
    buf
}

/// Overwrites bytes at `offset` of a file in place.
pub fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(offset))?;
            f.write_all(bytes)
        })
        .unwrap_or_else(|e| panic!("write at {offset} of {}: {e}", path.display()));
}

/// Inverts one byte of a file.
pub fn flip_byte(path: &Path, offset: u64) {
    let old = read_at(path, offset, 1);
    write_at(path, offset, &[!old[0]]);
}

/// Little-endian u32 at `off`.
pub fn le_u32(buf: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(buf[off..off + 4].try_into().expect("4 bytes"))
}

/// Little-endian u64 at `off`.
pub fn le_u64(buf: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(buf[off..off + 8].try_into().expect("8 bytes"))
}

/// The suite's own Fletcher64 (docs/format.md §1), independent of poolsync's:
/// words inside the checksum field or at/after `skip` count as zero but still
/// advance the sums.
pub fn fletcher64_ref(buf: &[u8], csum_off: usize, skip: Option<usize>) -> u64 {
    assert_eq!(
        buf.len() % 4,
        0,
        "Fletcher64 input must be a multiple of 4 bytes"
    );
    let (mut lo, mut hi) = (0u32, 0u32);
    for (i, word) in buf.chunks_exact(4).enumerate() {
        let off = i * 4;
        let excluded =
            (csum_off..csum_off + 8).contains(&off) || skip.is_some_and(|skip| off >= skip);
        let w = if excluded {
            0
        } else {
            u32::from_le_bytes(word.try_into().expect("4 bytes"))
        };
        lo = lo.wrapping_add(w);
        hi = hi.wrapping_add(lo);
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Header offset of the incompat feature mask.
pub const HDR_INCOMPAT: usize = 16;
/// Header offset of the checksum.
pub const HDR_CSUM: usize = 4088;
/// incompat CKSUM_2K.
pub const CKSUM_2K: u32 = 0x2;

/// The checksum skip a header uses, per its own incompat (docs/format.md §1).
pub fn header_skip(hdr: &[u8]) -> Option<usize> {
    if le_u32(hdr, HDR_INCOMPAT) & CKSUM_2K != 0 {
        Some(2048)
    } else {
        Some(HDR_CSUM)
    }
}

/// Recomputes and stores a header's checksum.
pub fn fix_header_checksum(hdr: &mut [u8]) {
    let sum = fletcher64_ref(hdr, HDR_CSUM, header_skip(hdr));
    hdr[HDR_CSUM..HDR_CSUM + 8].copy_from_slice(&sum.to_le_bytes());
}

/// Whether the current process ignores file permissions (root, or
/// CAP_DAC_OVERRIDE): probed with a mode-000 file.
pub fn permissions_ignored(dir: &Path) -> bool {
    let probe = dir.join(".perm-probe");
    fs::write(&probe, b"x").expect("write probe");
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o000)).expect("chmod probe");
    let readable = File::open(&probe).is_ok();
    fs::remove_file(&probe).expect("remove probe");
    readable
}
