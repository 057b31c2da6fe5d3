//! Helpers shared by the engine's integration-test modules: pool set files,
//! a filled pool set on the simulated storage ([`Fixture`]), reading and
//! comparing what is on it, and [`Wrapped`], the simulated storage with an
//! operation log and injected read errors.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use poolsync_engine::create::{create, CreateOptions};
use poolsync_engine::inspect::inspect;
use poolsync_engine::open::open;
use poolsync_header::{PoolHdr, POOL_HDR_CRTIME_OFF, POOL_HDR_CSUM_OFF, POOL_HDR_SIZE};
use poolsync_pmem::sim::{SimFile, SimImage, SimStorage, Survival};
use poolsync_pmem::{Access, Error as PmemError, Meta, Obstacle, PartFile, Storage};
use poolsync_poolset::{map_range, PoolSet, Replica};

const M: u64 = 1 << 20;

// --- pool set files ---

/// The text of a pool set file whose replicas have parts of the given sizes
/// in MiB, named `r<R>p<P>` under `dir`, and the part paths per replica.
pub fn set_text(
    dir: &std::path::Path,
    replicas: &[&[u64]],
    single_hdr: bool,
) -> (String, Vec<Vec<PathBuf>>) {
    let mut text = String::from("PMEMPOOLSET\n");
    if single_hdr {
        text.push_str("OPTION SINGLEHDR\n");
    }
    let mut parts = Vec::new();
    for (r, sizes) in replicas.iter().enumerate() {
        if r > 0 {
            text.push_str("REPLICA\n");
        }
        let mut rep = Vec::new();
        for (p, mib) in sizes.iter().enumerate() {
            let path = dir.join(format!("r{r}p{p}"));
            text.push_str(&format!("{mib}M {}\n", path.display()));
            rep.push(path);
        }
        parts.push(rep);
    }
    (text, parts)
}

/// Replicas as lists of (part path, MiB).
pub type Layout<'a> = &'a [&'a [(&'a str, u64)]];

/// Writes a pool set file with the given replicas, replacing one that
/// exists, and returns it parsed.
pub fn put_set(s: &SimStorage, path: &Path, single_hdr: bool, replicas: Layout<'_>) -> PoolSet {
    let mut text = String::from("PMEMPOOLSET\n");
    if single_hdr {
        text.push_str("OPTION SINGLEHDR\n");
    }
    for (r, parts) in replicas.iter().enumerate() {
        if r > 0 {
            text.push_str("REPLICA\n");
        }
        for (p, mib) in *parts {
            text.push_str(&format!("{mib}M {p}\n"));
        }
    }
    if s.stat(path).expect("stat").is_some() {
        s.remove(path).expect("replace set file");
    }
    s.insert_file(path, text.as_bytes(), 0o644)
        .expect("set file");
    poolsync_poolset::parse(&text).expect("parse")
}

/// The local part paths of `set`, replica after replica.
pub fn part_paths(set: &PoolSet) -> Vec<PathBuf> {
    set.replicas
        .iter()
        .flat_map(|r| match r {
            Replica::Local { parts, .. } => parts.iter().map(|p| PathBuf::from(&p.path)).collect(),
            Replica::Remote { .. } => Vec::new(),
        })
        .collect()
}

// --- a filled pool set on the simulated storage ---

/// A pool set on a simulated storage, created, filled and damaged, kept as
/// a quiescent base that every run copies.
pub struct Fixture {
    pub base: SimStorage,
    pub set_path: PathBuf,
    pub set: PoolSet,
    pub parts: Vec<Vec<PathBuf>>,
}

impl Fixture {
    /// Creates `/pool/pool.set` with the given part sizes (MiB) and writes
    /// the same pseudo-random data into the heap of every replica, as
    /// libpmemobj's replication would.
    pub fn new(replicas: &[&[u64]], single_hdr: bool) -> Fixture {
        let s = SimStorage::new();
        s.add_dir(Path::new("/pool")).expect("dir");
        let (text, parts) = set_text(Path::new("/pool"), replicas, single_hdr);
        let set_path = PathBuf::from("/pool/pool.set");
        s.insert_file(&set_path, text.as_bytes(), 0o644)
            .expect("set file");
        let opts = CreateOptions {
            layout: "crash".to_string(),
            ..CreateOptions::default()
        };
        create(&s, &set_path, &opts).expect("create");
        // The master's part 0 gets its own mode, which rebuilt parts copy.
        let master = PathBuf::from("/pool/r0p0");
        s.set_mode(&master, 0o640).expect("chmod");
        s.fsync_parent(&master).expect("sync dir");
        let set = poolsync_poolset::parse(&text).expect("parse");
        let fixture = Fixture {
            base: s,
            set_path,
            set,
            parts,
        };
        let pool = fixture.set.pool_size().expect("pool size");
        for r in 0..replicas.len() {
            // Every 256 KiB of the heap, 8 KiB of data: blocks that a repair
            // has to find.
            let mut off = 4 * M;
            let mut seed = 1u64;
            while off + 8192 <= pool {
                let bytes: Vec<u8> = (0..8192u64)
                    .map(|i| {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (seed >> 33) as u8 ^ i as u8
                    })
                    .collect();
                fixture.write_logical(&fixture.base, r, off, &bytes);
                off += 256 * 1024;
            }
        }
        fixture
    }

    /// An independent copy of the base.
    pub fn copy(&self) -> SimStorage {
        self.base.after_crash_with(Survival::Everything)
    }

    /// Writes `bytes` at logical `offset` of replica `r`, durably.
    pub fn write_logical(&self, s: &SimStorage, r: usize, offset: u64, bytes: &[u8]) {
        let extents = self.set.extents(r).expect("extents");
        for piece in map_range(&extents, offset, bytes.len() as u64) {
            let start = (piece.logical - offset) as usize;
            let chunk = &bytes[start..start + piece.len as usize];
            write_file(s, &self.parts[r][piece.part], piece.file_offset, chunk);
        }
    }

    pub fn part(&self, r: usize, p: usize) -> &Path {
        &self.parts[r][p]
    }
}

/// Writes bytes into a file durably.
pub fn write_file(s: &SimStorage, path: &Path, offset: u64, bytes: &[u8]) {
    let f = s.open(path, Access::ReadWrite).expect("open for damage");
    f.write_at(offset, bytes).expect("write");
    f.flush(offset, bytes.len() as u64).expect("flush");
    f.fence().expect("fence");
}

/// Flips one byte of a file durably.
pub fn flip(s: &SimStorage, path: &Path, offset: u64) {
    let f = s.open(path, Access::ReadWrite).expect("open");
    let mut b = [0u8; 1];
    f.read_at(offset, &mut b).expect("read");
    drop(f);
    write_file(s, path, offset, &[!b[0]]);
}

/// Removes a file durably.
pub fn remove(s: &SimStorage, path: &Path) {
    s.remove(path).expect("remove");
    s.fsync_parent(path).expect("sync dir");
}

// --- reading and comparing ---

/// Reads logical `[offset, offset+len)` of replica `r` of `set`.
pub fn read_logical(s: &SimStorage, set: &PoolSet, r: usize, offset: u64, len: u64) -> Vec<u8> {
    let extents = set.extents(r).expect("extents");
    let Replica::Local { parts, .. } = &set.replicas[r] else {
        panic!("remote");
    };
    let mut out = Vec::new();
    for piece in map_range(&extents, offset, len) {
        let bytes = s
            .written_bytes(Path::new(&parts[piece.part].path))
            .expect("part");
        let at = piece.file_offset as usize;
        out.extend_from_slice(&bytes[at..at + piece.len as usize]);
    }
    out
}

/// Whether the pool set file `set` opens and its set is healthy.
pub fn healthy(s: &SimStorage, set: &Path) -> bool {
    open(s, set, Access::ReadOnly).is_ok_and(|o| inspect(&o).is_healthy())
}

/// Whether `path` names an undo file (each repairing run writes one of
/// its own, so end states compare without them).
pub fn is_undo_file(path: &Path) -> bool {
    path.to_string_lossy()
        .contains(poolsync_engine::undo::UNDO_INFIX)
}

/// Every file's bytes and mode but undo files, with crtime and checksum of
/// every valid header zeroed (they depend on the clock).
pub fn normalized(s: &SimStorage) -> SimImage {
    let mut image = s.image();
    image.retain(|p| !is_undo_file(p));
    let files: Vec<(PathBuf, Vec<u8>, u32)> = image
        .files()
        .iter()
        .map(|(p, f)| (p.clone(), f.bytes.clone(), f.mode))
        .collect();
    for (path, mut bytes, mode) in files {
        if bytes.len() >= POOL_HDR_SIZE
            && PoolHdr::decode(&bytes).is_ok_and(|h| h.checksum_ok() && !h.is_zero())
        {
            bytes[POOL_HDR_CRTIME_OFF..POOL_HDR_CRTIME_OFF + 8].fill(0);
            bytes[POOL_HDR_CSUM_OFF..POOL_HDR_SIZE].fill(0);
        }
        image.insert(&path, bytes, mode);
    }
    image
}

/// Where two images differ: each file that differs, with the first ranges.
pub fn image_diff(a: &SimImage, b: &SimImage) -> String {
    let mut out = Vec::new();
    for (path, fa) in a.files() {
        match b.get(path) {
            None => out.push(format!("{} only left", path.display())),
            Some(fb) if fa.mode != fb.mode => {
                out.push(format!(
                    "{} mode {:o}/{:o}",
                    path.display(),
                    fa.mode,
                    fb.mode
                ));
            }
            Some(fb) if fa.bytes != fb.bytes => {
                let mut ranges: Vec<(usize, usize)> = Vec::new();
                for (i, (x, y)) in fa.bytes.iter().zip(&fb.bytes).enumerate() {
                    if x != y {
                        match ranges.last_mut() {
                            Some(r) if r.1 + 8 >= i => r.1 = i,
                            _ => ranges.push((i, i)),
                        }
                    }
                }
                ranges.truncate(8);
                out.push(format!(
                    "{} differs (len {}/{}, at {ranges:?})",
                    path.display(),
                    fa.bytes.len(),
                    fb.bytes.len()
                ));
            }
            Some(_) => {}
        }
    }
    for path in b.files().keys() {
        if a.get(path).is_none() {
            out.push(format!("{} only right", path.display()));
        }
    }
    out.join("; ")
}

// --- the simulated storage, wrapped ---

/// `EACCES` (13 on Linux), without a dependency on libc for one number.
fn libc_eacces() -> i32 {
    13
}

/// One operation a [`Wrapped`] storage passed on to the simulation and saw
/// succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create { path: PathBuf, len: u64 },
    Remove { path: PathBuf },
    SetMode { path: PathBuf, mode: u32 },
    Write { path: PathBuf, off: u64, len: u64 },
    Flush { path: PathBuf, off: u64, len: u64 },
    Fence { path: PathBuf },
    DirSync { dir: PathBuf },
    Rename { path: PathBuf, to: PathBuf },
    SetLen { path: PathBuf, len: u64 },
}

impl Op {
    /// The file or directory it acted on.
    pub fn path(&self) -> &Path {
        match self {
            Op::Create { path, .. }
            | Op::Remove { path }
            | Op::SetMode { path, .. }
            | Op::Write { path, .. }
            | Op::Flush { path, .. }
            | Op::Fence { path }
            | Op::Rename { path, .. }
            | Op::SetLen { path, .. } => path,
            Op::DirSync { dir } => dir,
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.path().display();
        match self {
            Op::Create { len, .. } => write!(f, "create {p} ({len} bytes)"),
            Op::Remove { .. } => write!(f, "remove {p}"),
            Op::SetMode { mode, .. } => write!(f, "chmod {mode:o} {p}"),
            Op::Write { off, len, .. } => write!(f, "write {p} [{off:#x}, +{len:#x})"),
            Op::Flush { off, len, .. } => write!(f, "flush {p} [{off:#x}, +{len:#x})"),
            Op::Fence { .. } => write!(f, "fence {p}"),
            Op::DirSync { .. } => write!(f, "dir sync {p}"),
            Op::Rename { to, .. } => write!(f, "rename {p} to {}", to.display()),
            Op::SetLen { len, .. } => write!(f, "set length of {p} to {len}"),
        }
    }
}

/// Every logged operation, with the number of events the simulation
/// counted for it (0 for a change outside `EventScope::EveryChange`; 2 for
/// a create within it; fewer for an operation a crash stopped).
type OpLog = Arc<Mutex<Vec<(Op, u64)>>>;

fn lock(log: &OpLog) -> MutexGuard<'_, Vec<(Op, u64)>> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// A [`SimStorage`] that logs every operation that changes something (in
/// the order the simulation applies them, so that the persistence events
/// among them are numbered as `crash_after` counts them) and fails reads of
/// chosen ranges with EIO. Clones share the log. This is where faults other
/// than crashes are injected.
#[derive(Debug, Clone)]
pub struct Wrapped {
    sim: SimStorage,
    log: OpLog,
    eio_reads: Arc<Vec<(PathBuf, u64, u64)>>,
    eacces_writers: Arc<Vec<PathBuf>>,
}

/// An open file of a [`Wrapped`] storage.
#[derive(Debug)]
pub struct WrappedFile {
    inner: SimFile,
    sim: SimStorage,
    log: OpLog,
    eio_reads: Arc<Vec<(PathBuf, u64, u64)>>,
}

impl Wrapped {
    /// Wraps `sim` with an empty log and no faults.
    pub fn new(sim: SimStorage) -> Wrapped {
        Wrapped {
            sim,
            log: Arc::default(),
            eio_reads: Arc::default(),
            eacces_writers: Arc::default(),
        }
    }

    /// Opening any of `paths` for writing fails with EACCES (a part whose
    /// mode forbids writing, for a user who is not root).
    pub fn refusing_writers(self, paths: Vec<PathBuf>) -> Wrapped {
        Wrapped {
            eacces_writers: Arc::new(paths),
            ..self
        }
    }

    /// Reads overlapping any of `ranges` (file, offset, length) fail with EIO.
    pub fn failing_reads(self, ranges: Vec<(PathBuf, u64, u64)>) -> Wrapped {
        Wrapped {
            eio_reads: Arc::new(ranges),
            ..self
        }
    }

    /// The simulated storage underneath.
    pub fn sim(&self) -> &SimStorage {
        &self.sim
    }

    /// Every operation logged so far that succeeded or counted an event.
    pub fn log(&self) -> Vec<Op> {
        lock(&self.log).iter().map(|(op, _)| op.clone()).collect()
    }

    /// The events the simulation counted, each named by its operation (a
    /// create under `EventScope::EveryChange` twice): event `k` is
    /// `events()[k]`.
    pub fn events(&self) -> Vec<Op> {
        lock(&self.log)
            .iter()
            .flat_map(|(op, n)| std::iter::repeat_n(op.clone(), *n as usize))
            .collect()
    }

    fn wrap(&self, inner: SimFile) -> WrappedFile {
        WrappedFile {
            inner,
            sim: self.sim.clone(),
            log: Arc::clone(&self.log),
            eio_reads: Arc::clone(&self.eio_reads),
        }
    }
}

/// Runs `op` on `sim` and logs `entry` with the events it made, holding
/// the log for both so that the log's order (and its event numbering) is
/// the simulation's. An operation that failed is logged only if it made
/// an event before failing (a crash inside a create).
fn logged<T>(
    sim: &SimStorage,
    log: &OpLog,
    entry: impl FnOnce() -> Op,
    op: impl FnOnce() -> Result<T, PmemError>,
) -> Result<T, PmemError> {
    let mut log = lock(log);
    let before = sim.events();
    let result = op();
    let made = sim.events().saturating_sub(before);
    if result.is_ok() || made > 0 {
        log.push((entry(), made));
    }
    result
}

impl Storage for Wrapped {
    type File = WrappedFile;
    type Aux = WrappedFile;
    fn stat(&self, path: &Path) -> Result<Option<Meta>, PmemError> {
        self.sim.stat(path)
    }
    fn open(&self, path: &Path, access: Access) -> Result<WrappedFile, PmemError> {
        if access == Access::ReadWrite && self.eacces_writers.iter().any(|p| p == path) {
            return Err(PmemError::Io {
                op: "open",
                path: path.to_path_buf(),
                os: std::io::Error::from_raw_os_error(libc_eacces()),
            });
        }
        Ok(self.wrap(self.sim.open(path, access)?))
    }
    fn create(&self, path: &Path, size: u64) -> Result<WrappedFile, PmemError> {
        let entry = || Op::Create {
            path: path.to_path_buf(),
            len: size,
        };
        let file = logged(&self.sim, &self.log, entry, || self.sim.create(path, size))?;
        Ok(self.wrap(file))
    }
    fn remove(&self, path: &Path) -> Result<(), PmemError> {
        let entry = || Op::Remove {
            path: path.to_path_buf(),
        };
        logged(&self.sim, &self.log, entry, || self.sim.remove(path))
    }
    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), PmemError> {
        let entry = || Op::SetMode {
            path: path.to_path_buf(),
            mode,
        };
        logged(&self.sim, &self.log, entry, || {
            self.sim.set_mode(path, mode)
        })
    }
    fn removal_obstacle(&self, path: &Path) -> Result<Option<Obstacle>, PmemError> {
        self.sim.removal_obstacle(path)
    }
    fn creation_obstacle(&self, path: &Path) -> Result<Option<Obstacle>, PmemError> {
        self.sim.creation_obstacle(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> Result<(), PmemError> {
        let entry = || Op::Rename {
            path: from.to_path_buf(),
            to: to.to_path_buf(),
        };
        logged(&self.sim, &self.log, entry, || self.sim.rename(from, to))
    }
    fn create_aux(&self, path: &Path, mode: u32) -> Result<WrappedFile, PmemError> {
        let entry = || Op::Create {
            path: path.to_path_buf(),
            len: 0,
        };
        let file = logged(&self.sim, &self.log, entry, || {
            self.sim.create_aux(path, mode)
        })?;
        Ok(self.wrap(file))
    }
    fn open_aux(&self, path: &Path, access: Access) -> Result<WrappedFile, PmemError> {
        Ok(self.wrap(self.sim.open_aux(path, access)?))
    }
    fn clock(&self) -> &dyn poolsync_pmem::Clock {
        self.sim.clock()
    }
    fn current_dir(&self) -> Result<PathBuf, PmemError> {
        self.sim.current_dir()
    }
    fn fsync_dir(&self, dir: &Path) -> Result<(), PmemError> {
        let entry = || Op::DirSync {
            dir: dir.to_path_buf(),
        };
        logged(&self.sim, &self.log, entry, || self.sim.fsync_dir(dir))
    }
    fn free_space(&self, dir: &Path) -> Result<Option<u64>, PmemError> {
        self.sim.free_space(dir)
    }
}

impl PartFile for WrappedFile {
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn len(&self) -> Result<u64, PmemError> {
        self.inner.len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), PmemError> {
        let end = offset + buf.len() as u64;
        let path = self.inner.path();
        if self
            .eio_reads
            .iter()
            .any(|(p, o, l)| p == path && *o < end && offset < o + l)
        {
            return Err(PmemError::IoAt {
                op: "read",
                path: path.to_path_buf(),
                offset,
                os: std::io::Error::from_raw_os_error(5),
            });
        }
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, off: u64, data: &[u8]) -> Result<(), PmemError> {
        let entry = || Op::Write {
            path: self.inner.path().to_path_buf(),
            off,
            len: data.len() as u64,
        };
        logged(&self.sim, &self.log, entry, || {
            self.inner.write_at(off, data)
        })
    }
    fn flush(&self, off: u64, len: u64) -> Result<(), PmemError> {
        let entry = || Op::Flush {
            path: self.inner.path().to_path_buf(),
            off,
            len,
        };
        logged(&self.sim, &self.log, entry, || self.inner.flush(off, len))
    }
    fn fence(&self) -> Result<(), PmemError> {
        let entry = || Op::Fence {
            path: self.inner.path().to_path_buf(),
        };
        logged(&self.sim, &self.log, entry, || self.inner.fence())
    }
    fn ctime(&self) -> Result<u64, PmemError> {
        self.inner.ctime()
    }
    fn set_len(&self, len: u64) -> Result<(), PmemError> {
        let entry = || Op::SetLen {
            path: self.inner.path().to_path_buf(),
            len,
        };
        logged(&self.sim, &self.log, entry, || self.inner.set_len(len))
    }
}

/// Bytes the files of a simulated storage hold, for a capacity just above
/// what is there.
pub fn bytes_used(s: &SimStorage) -> u64 {
    s.image()
        .files()
        .values()
        .map(|f| f.bytes.len() as u64)
        .sum()
}
