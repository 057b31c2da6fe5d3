//! The DAX persistence path: part files mapped into memory, written with
//! CPU stores, and persisted by writing the CPU caches back.
//!
//! [`DaxStorage`] opens and creates files exactly as [`FsStorage`] does
//! (same `flock`, same `O_CREAT|O_EXCL`, mode 0 and `posix_fallocate`, same
//! cleanup), then maps them:
//!
//! * with `MAP_SHARED_VALIDATE | MAP_SYNC` ([`Mapping::Sync`]), which only a
//!   file on a DAX file system (or a Device DAX) accepts. Stores then go
//!   straight to persistent memory through the CPU caches, and writing the
//!   caches back is all it takes to persist them;
//! * when the kernel refuses `MAP_SYNC` and the DAX path was forced
//!   ([`DaxOptions::force`], which `PMEM_IS_PMEM_FORCE=1` and
//!   `POOLSYNC_PERSIST=dax` select), with plain `MAP_SHARED`
//!   ([`Mapping::Shared`]) and the very same flush code, which is what
//!   libpmem does under `PMEM_IS_PMEM_FORCE=1`: the code path can be tested
//!   and measured anywhere, but on such a file the data survives a crash of
//!   the process, not of the machine. Without forcing, the refusal is
//!   reported as [`Error::NotDax`].
//!
//! Files are mapped in windows of [`DaxOptions::window`] bytes, at most
//! [`DaxOptions::max_windows`] of them at a time (plus any that another
//! thread is using at that moment), so that memory use stays flat however
//! large a pool grows.
//!
//! [`PartFile::flush`] writes back every cache line of the range with the
//! instruction chosen from CPUID ([`choose_flush`]: CLWB, CLFLUSHOPT,
//! CLFLUSH, or `msync` where there is none) and ends with SFENCE, so that
//! the range is persistent when `flush` returns on whatever thread called
//! it: a fence on another thread could not order this thread's write-backs.
//! [`PartFile::fence`] issues SFENCE too, and once `fdatasync`s a file that
//! `create` made, so that its size and allocation are durable as well.
//! Writes of at least [`DaxOptions::nt_threshold`] bytes use non-temporal
//! stores, which bypass the caches; the ranges they wrote are remembered,
//! so that flushing them again costs nothing.
//!
//! The mapping is shared memory, so it is never turned into a Rust
//! reference; it is accessed only by raw-pointer copies. Conflicting
//! accesses by threads of this process are serialized by a table of
//! reader-writer locks, one per 1 MiB stripe of the file (hashed into
//! [`STRIPES`] slots), held for the copy of one stripe at a time;
//! processes are kept out by the `flock`.

mod cpu;
mod devdax;
mod window;

use std::fmt;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

pub use cpu::{choose_flush, CpuFeatures, FlushKind, CACHE_LINE};
pub use devdax::{DevDax, DevDaxProbe, FakeSysfs, STAND_INS_FILE, SYSFS_VAR};
pub use window::Mapping;

use crate::fs::{allocate, remove_created};
use crate::{Access, Error, FsFile, FsStorage, Meta, PartFile, Storage};
use cpu::Stream;
use window::Window;

/// Default window size: 128 MiB, a multiple of every Device DAX alignment
/// but 1 GiB (for which windows grow to 1 GiB).
pub const DEFAULT_WINDOW: u64 = 128 << 20;

/// Default number of windows kept mapped per file.
pub const DEFAULT_MAX_WINDOWS: usize = 4;

/// Default size from which writes use non-temporal stores (libpmem's
/// default `PMEM_MOVNT_THRESHOLD` is the same order of magnitude): below it
/// the data is likely to be read again soon and the cache helps.
pub const DEFAULT_NT_THRESHOLD: usize = 256 << 10;

/// Number of lock slots a file's stripes are hashed into.
pub const STRIPES: usize = 64;

/// log2 of the stripe size (1 MiB).
const STRIPE_SHIFT: u32 = 20;

/// Largest window accepted; larger requests are clamped (1 TiB).
const MAX_WINDOW: u64 = 1 << 40;

/// Where sysfs is mounted.
pub(crate) const SYSFS: &str = "/sys";

/// The [`DevDaxProbe`] the environment selects ([`SYSFS_VAR`]), read once.
pub(crate) fn env_probe() -> Result<&'static DevDaxProbe, Error> {
    static PROBE: std::sync::OnceLock<DevDaxProbe> = std::sync::OnceLock::new();
    if let Some(probe) = PROBE.get() {
        return Ok(probe);
    }
    let probe = DevDaxProbe::from_env()?;
    Ok(PROBE.get_or_init(|| probe))
}

/// How [`DaxStorage`] maps and persists files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaxOptions {
    /// Use the DAX code path on files the kernel will not map with
    /// `MAP_SYNC` (libpmem's `PMEM_IS_PMEM_FORCE=1`), instead of failing
    /// with [`Error::NotDax`].
    pub force: bool,
    /// Bytes per mapped window. Rounded up to a multiple of the page size
    /// (and of a Device DAX's alignment); clamped to 1 TiB.
    pub window: u64,
    /// Windows kept mapped per file (at least 1).
    pub max_windows: usize,
    /// Writes of at least this many bytes use non-temporal stores;
    /// `usize::MAX` turns them off (libpmem's `PMEM_NO_MOVNT`).
    pub nt_threshold: usize,
    /// The CPU features the path may use, intersected with what the CPU
    /// has: clearing `clwb` makes it use CLFLUSHOPT, like libpmem's
    /// `PMEM_NO_CLWB`, and so on down to `msync`.
    pub features: CpuFeatures,
}

impl Default for DaxOptions {
    fn default() -> Self {
        DaxOptions {
            force: false,
            window: DEFAULT_WINDOW,
            max_windows: DEFAULT_MAX_WINDOWS,
            nt_threshold: DEFAULT_NT_THRESHOLD,
            features: CpuFeatures::ALL,
        }
    }
}

impl DaxOptions {
    /// The CPU features this configuration uses on this machine.
    pub fn effective_features(&self) -> CpuFeatures {
        CpuFeatures::detect().intersect(self.features)
    }

    /// The flush this configuration uses on this machine.
    pub fn flush_kind(&self) -> FlushKind {
        choose_flush(self.effective_features())
    }
}

/// Part files on persistent memory, mapped and flushed from the CPU caches.
///
/// # Example
///
/// ```
/// use poolsync_pmem::{DaxStorage, PartFile, Storage};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("pool.part");
/// // Forced, the DAX path runs on any file; on a DAX file system it maps
/// // with MAP_SYNC, elsewhere with a plain shared mapping.
/// let storage = DaxStorage::forced();
/// let part = storage.create(&path, 1 << 20)?;
/// part.write_at(4096, b"hello")?;
/// part.flush(4096, 5)?;
/// part.fence()?;
/// println!("{:?}, flushed with {}", part.mapping(), part.flush_kind());
///
/// let mut buf = [0u8; 5];
/// part.read_at(4096, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct DaxStorage {
    options: DaxOptions,
}

impl DaxStorage {
    /// The DAX path with default options; files must be on DAX.
    pub fn new() -> Self {
        Self::default()
    }

    /// The DAX path on any file (libpmem's `PMEM_IS_PMEM_FORCE=1`).
    pub fn forced() -> Self {
        Self::with_options(DaxOptions {
            force: true,
            ..DaxOptions::default()
        })
    }

    /// The DAX path with `options`.
    pub fn with_options(options: DaxOptions) -> Self {
        Self { options }
    }

    /// The options in use.
    pub fn options(&self) -> &DaxOptions {
        &self.options
    }

    /// Works out how to map an open (and locked) file and maps its first
    /// window. `allocated` tells that `[0, len)` is known to be fully
    /// allocated already.
    fn map_inner(
        &self,
        file: &FsFile,
        access: Access,
        allocated: bool,
    ) -> Result<(Parts, Option<Arc<Window>>), Error> {
        let path = file.path();
        let meta = file.fstat()?;
        let kind = meta.file_type();
        let device = if kind.is_file() {
            None
        } else if kind.is_char_device() {
            Some(env_probe()?.probe(path)?.ok_or_else(|| Error::NotDevDax {
                path: path.to_path_buf(),
            })?)
        } else {
            // Directories, block devices, FIFOs: mmap would refuse them the
            // same way.
            return Err(Error::Io {
                op: "mmap",
                path: path.to_path_buf(),
                os: io::Error::from_raw_os_error(libc::ENODEV),
            });
        };
        let map_len = device.map_or(meta.len(), |d| d.size);
        let writable = access == Access::ReadWrite;

        if writable && device.is_none() && !allocated && map_len > 0 {
            // A store into a hole of a shared mapping makes the file system
            // allocate a block in the page fault; if it cannot, the process
            // gets SIGBUS. Allocating the holes now (without changing the
            // contents: holes read as zeroes either way) turns that into an
            // error here.
            let err = |source| Error::Allocate {
                path: path.to_path_buf(),
                size: map_len,
                os: source,
            };
            let len = i64::try_from(map_len)
                .map_err(|_| err(io::Error::from_raw_os_error(libc::EFBIG)))?;
            allocate(file.file(), len).map_err(|errno| err(io::Error::from(errno)))?;
        }

        let page = page_size();
        let unit = device.map_or(page as u64, |d| d.align.max(page as u64));
        let window = round_up(self.options.window.clamp(1, MAX_WINDOW), unit);

        let features = self.options.effective_features();
        let flush = choose_flush(features);
        let stream = cpu::choose_stream(features, flush);

        let mut first = None;
        let mut mapping = None;
        if map_len > 0 {
            let (w, m) = self.map_first(file, window.min(map_len), writable)?;
            first = Some(Arc::new(w));
            mapping = Some(m);
        }
        let cfg = Parts {
            map_len,
            device,
            window,
            max_windows: self.options.max_windows.max(1),
            writable,
            mapping,
            flush,
            stream,
            nt_threshold: self.options.nt_threshold,
            page,
        };
        Ok((cfg, first))
    }

    /// Maps the first window, finding out on the way whether the file
    /// takes `MAP_SYNC`.
    fn map_first(
        &self,
        file: &FsFile,
        len: u64,
        writable: bool,
    ) -> Result<(Window, Mapping), Error> {
        let path = file.path();
        let io_err = |source| Error::Io {
            op: "mmap",
            path: path.to_path_buf(),
            os: source,
        };
        let len =
            usize::try_from(len).map_err(|_| io_err(io::Error::from_raw_os_error(libc::EFBIG)))?;
        match Window::map(file.file(), 0, len, writable, true) {
            Ok(w) => Ok((w, Mapping::Sync)),
            Err(source)
                if matches!(source.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL)) =>
            {
                if !self.options.force {
                    return Err(Error::NotDax {
                        path: path.to_path_buf(),
                        os: source,
                    });
                }
                let w = Window::map(file.file(), 0, len, writable, false).map_err(io_err)?;
                Ok((w, Mapping::Shared))
            }
            Err(source) => Err(io_err(source)),
        }
    }
}

impl Storage for DaxStorage {
    type File = DaxFile;
    type Aux = FsFile;

    fn stat(&self, path: &Path) -> Result<Option<Meta>, Error> {
        FsStorage.stat(path)
    }

    fn open(&self, path: &Path, access: Access) -> Result<DaxFile, Error> {
        let file = FsStorage.open(path, access)?;
        let parts = self.map_inner(&file, access, false)?;
        Ok(DaxFile::new(file, parts))
    }

    fn create(&self, path: &Path, size: u64) -> Result<DaxFile, Error> {
        let file = FsStorage.create(path, size)?;
        match self.map_inner(&file, Access::ReadWrite, true) {
            Ok(parts) => Ok(DaxFile::new(file, parts)),
            // Like every failed step of `create`, this removes the new file.
            Err(err) => Err(remove_created(path, file.file(), err)),
        }
    }

    fn remove(&self, path: &Path) -> Result<(), Error> {
        FsStorage.remove(path)
    }

    fn device_dax(&self, path: &Path) -> Result<Option<DevDax>, Error> {
        FsStorage.device_dax(path)
    }

    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), Error> {
        FsStorage.set_mode(path, mode)
    }

    fn read_link(&self, path: &Path) -> Result<Option<std::path::PathBuf>, Error> {
        FsStorage.read_link(path)
    }

    fn removal_obstacle(&self, path: &Path) -> Result<Option<crate::Obstacle>, Error> {
        FsStorage.removal_obstacle(path)
    }

    fn creation_obstacle(&self, path: &Path) -> Result<Option<crate::Obstacle>, Error> {
        FsStorage.creation_obstacle(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<(), Error> {
        FsStorage.rename(from, to)
    }

    fn create_aux(&self, path: &Path, mode: u32) -> Result<FsFile, Error> {
        FsStorage.create_aux(path, mode)
    }

    fn open_aux(&self, path: &Path, access: Access) -> Result<FsFile, Error> {
        FsStorage.open_aux(path, access)
    }

    fn fsync_dir(&self, dir: &Path) -> Result<(), Error> {
        FsStorage.fsync_dir(dir)
    }

    fn clock(&self) -> &dyn crate::Clock {
        crate::clock::system_clock()
    }

    fn current_dir(&self) -> Result<std::path::PathBuf, Error> {
        FsStorage.current_dir()
    }

    fn canonicalize(&self, path: &Path) -> Result<Option<std::path::PathBuf>, Error> {
        FsStorage.canonicalize(path)
    }
}

/// How a `DaxFile` maps and persists its file: what `map_inner` works out
/// before the file is assembled.
#[derive(Debug)]
struct Parts {
    /// Bytes that may be accessed: the file length (or Device DAX size) at
    /// open. Part files never change length while they are locked.
    map_len: u64,
    device: Option<DevDax>,
    window: u64,
    max_windows: usize,
    writable: bool,
    mapping: Option<Mapping>,
    flush: FlushKind,
    stream: Option<Stream>,
    nt_threshold: usize,
    page: usize,
}

/// One open, flocked, mapped file of a [`DaxStorage`].
///
/// The lock is held, and windows stay mapped, until the value is dropped.
pub struct DaxFile {
    /// Mapped windows, least recently used first. Declared before `file`
    /// so that they are unmapped before the descriptor closes.
    windows: Mutex<Vec<Arc<Window>>>,
    /// Lock slots of the stripes; see the module documentation.
    stripes: Box<[RwLock<Stripe>; STRIPES]>,
    file: FsFile,
    cfg: Parts,
}

impl fmt::Debug for DaxFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaxFile")
            .field("path", &self.file.path())
            .field("len", &self.cfg.map_len)
            .field("mapping", &self.cfg.mapping)
            .field("flush", &self.cfg.flush)
            .field("window", &self.cfg.window)
            .field("device", &self.cfg.device)
            .finish_non_exhaustive()
    }
}

/// What one lock slot protects besides the bytes: the last range written
/// with non-temporal stores in a stripe of this slot, which is already
/// persistent and need not be flushed again.
#[derive(Debug, Default)]
struct Stripe {
    /// `[start, end)` file offsets; `None` when nothing is known clean.
    clean: Option<(u64, u64)>,
}

impl Stripe {
    /// Ordinary stores landed in `[start, end)`: whatever they touched is
    /// in the cache again.
    fn stored(&mut self, start: u64, end: u64) {
        if let Some((a, b)) = self.clean {
            if start < b && a < end {
                self.clean = None;
            }
        }
    }

    /// `[start, end)` was written with non-temporal stores and fenced.
    fn streamed(&mut self, start: u64, end: u64) {
        self.clean = match self.clean {
            // Touching or overlapping: the union is clean.
            Some((a, b)) if start <= b && a <= end => Some((a.min(start), b.max(end))),
            _ => Some((start, end)),
        };
    }

    /// The parts of `[start, end)` that may hold unflushed stores.
    fn dirty_parts(&self, start: u64, end: u64) -> [Option<(u64, u64)>; 2] {
        let Some((a, b)) = self.clean else {
            return [Some((start, end)), None];
        };
        let before = (start < a.min(end)).then(|| (start, a.min(end)));
        let after = (b.max(start) < end).then(|| (b.max(start), end));
        [before, after]
    }
}

impl DaxFile {
    fn new(file: FsFile, (cfg, first): (Parts, Option<Arc<Window>>)) -> Self {
        Self {
            windows: Mutex::new(first.into_iter().collect()),
            stripes: Box::new(std::array::from_fn(|_| RwLock::new(Stripe::default()))),
            file,
            cfg,
        }
    }

    /// How the file is mapped; `None` for an empty file, which is never
    /// mapped.
    pub fn mapping(&self) -> Option<Mapping> {
        self.cfg.mapping
    }

    /// The flush in use.
    pub fn flush_kind(&self) -> FlushKind {
        self.cfg.flush
    }

    /// `true` when large writes use non-temporal stores.
    pub fn uses_non_temporal_stores(&self) -> bool {
        self.cfg.stream.is_some()
    }

    /// Bytes per mapped window, after rounding.
    pub fn window_len(&self) -> u64 {
        self.cfg.window
    }

    /// Size and alignment when the file is a Device DAX.
    pub fn device(&self) -> Option<DevDax> {
        self.cfg.device
    }

    /// Windows mapped right now (the cache; windows in use by another
    /// thread at this moment may add to it).
    pub fn mapped_windows(&self) -> usize {
        self.windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The window that holds file offset `at` (< `map_len`), mapping it if
    /// needed and unmapping the least recently used one beyond the limit.
    fn window_at(&self, at: u64) -> Result<Arc<Window>, Error> {
        let start = at - at % self.cfg.window;
        let mut cache = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pos) = cache.iter().position(|w| w.offset() == start) {
            let w = cache.remove(pos);
            cache.push(Arc::clone(&w));
            return Ok(w);
        }
        let map_err = |source| Error::IoAt {
            op: "mmap",
            path: self.file.path().to_path_buf(),
            offset: start,
            os: source,
        };
        // `start < map_len` because `at` is; the window is at most
        // `MAX_WINDOW`, which fits a usize on 64-bit targets.
        let len = usize::try_from(self.cfg.window.min(self.cfg.map_len - start))
            .map_err(|_| map_err(io::Error::from_raw_os_error(libc::EFBIG)))?;
        let sync = self.cfg.mapping == Some(Mapping::Sync);
        let w = Arc::new(
            Window::map(self.file.file(), start, len, self.cfg.writable, sync).map_err(map_err)?,
        );
        cache.push(Arc::clone(&w));
        while cache.len() > self.cfg.max_windows {
            // Unmapped as soon as no other thread holds it.
            cache.remove(0);
        }
        Ok(w)
    }

    /// Calls `f(offset, len, window, stripe)` for consecutive pieces of
    /// `[offset, offset + len)`, each inside one window and one stripe.
    /// The range must lie within `map_len`.
    fn for_each_piece(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(u64, usize, &Window, &RwLock<Stripe>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let end = offset + len;
        let mut at = offset;
        let mut current: Option<Arc<Window>> = None;
        while at < end {
            let win = match current.take() {
                Some(w) if w.offset() <= at && at - w.offset() < w.len() as u64 => w,
                _ => self.window_at(at)?,
            };
            let win_end = win.offset() + win.len() as u64;
            let stripe = at >> STRIPE_SHIFT;
            let stripe_end = (stripe + 1) << STRIPE_SHIFT;
            let piece_end = end.min(win_end).min(stripe_end);
            // A piece is at most one stripe long.
            let piece_len = (piece_end - at) as usize;
            let slot = &self.stripes[(stripe % STRIPES as u64) as usize];
            f(at, piece_len, &win, slot)?;
            at = piece_end;
            current = Some(win);
        }
        Ok(())
    }

    fn check_range(&self, op: &'static str, offset: u64, len: u64) -> Result<u64, Error> {
        crate::error::check_range(op, self.file.path(), offset, len)
    }

    fn past_end(&self, op: &'static str, offset: u64, len: u64) -> Error {
        Error::PastEnd {
            op,
            path: self.file.path().to_path_buf(),
            offset,
            len,
            file_len: self.cfg.map_len,
        }
    }

    /// Pointer to `[at, at + len)` inside `win`, which `for_each_piece`
    /// guarantees; a failure would be a bug, reported as a range error.
    fn ptr(&self, op: &'static str, win: &Window, at: u64, len: usize) -> Result<*mut u8, Error> {
        win.ptr_at(at, len)
            .ok_or_else(|| self.past_end(op, at, len as u64))
    }

    /// Writes back `[at, at + len)` of `win`.
    fn flush_piece(&self, win: &Window, at: u64, len: usize) -> Result<(), Error> {
        if self.cfg.flush.is_cache_flush() {
            let p = self.ptr("flush", win, at, len)?;
            // SAFETY: `[p, p + len)` lies in `win`, which the caller's `Arc`
            // keeps mapped; `self.cfg.flush` came from `choose_flush` of the
            // detected features, so the CPU has the instruction.
            unsafe { cpu::flush_lines(self.cfg.flush, p, len) };
            Ok(())
        } else {
            win.msync(at, len, self.cfg.page)
                .map_err(|source| Error::IoAt {
                    op: "msync",
                    path: self.file.path().to_path_buf(),
                    offset: at,
                    os: source,
                })
        }
    }
}

impl PartFile for DaxFile {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn len(&self) -> Result<u64, Error> {
        match self.cfg.device {
            Some(d) => Ok(d.size),
            None => self.file.len(),
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let len = buf.len() as u64;
        let end = self.check_range("read", offset, len)?;
        if len == 0 {
            return Ok(());
        }
        if end > self.cfg.map_len {
            return Err(Error::ShortRead {
                path: self.file.path().to_path_buf(),
                offset,
                len,
                got: self.cfg.map_len.saturating_sub(offset),
            });
        }
        let mut rest: &mut [u8] = buf;
        self.for_each_piece(offset, len, |at, n, win, slot| {
            let taken = std::mem::take(&mut rest);
            let (dst, tail) = taken.split_at_mut(n.min(taken.len()));
            rest = tail;
            let src = self.ptr("read", win, at, dst.len())?;
            let _guard = slot.read().unwrap_or_else(PoisonError::into_inner);
            // SAFETY: `src` points at `dst.len()` mapped bytes kept alive by
            // the window's `Arc`; `dst` is our own buffer, distinct from
            // the mapping. The stripe lock keeps writers of this process
            // out of the bytes for the copy.
            unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
            Ok(())
        })
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let len = data.len() as u64;
        let end = self.check_range("write", offset, len)?;
        if len == 0 {
            return Ok(());
        }
        if !self.cfg.writable {
            return Err(Error::IoAt {
                op: "write",
                path: self.file.path().to_path_buf(),
                offset,
                os: io::Error::from_raw_os_error(libc::EBADF),
            });
        }
        if end > self.cfg.map_len {
            return Err(self.past_end("write", offset, len));
        }
        let stream = self
            .cfg
            .stream
            .filter(|_| data.len() >= self.cfg.nt_threshold);
        let mut rest = data;
        self.for_each_piece(offset, len, |at, n, win, slot| {
            let (src, tail) = rest.split_at(n.min(rest.len()));
            rest = tail;
            let dst = self.ptr("write", win, at, src.len())?;
            let piece_end = at + src.len() as u64;
            let mut stripe = slot.write().unwrap_or_else(PoisonError::into_inner);
            match stream {
                Some(stream) => {
                    // SAFETY: `dst` points at `src.len()` bytes of a
                    // writable mapping kept alive by the window's `Arc`;
                    // `src` is the caller's buffer, which cannot overlap a
                    // mapping it holds no reference into. The stripe lock
                    // is held, so no other thread of this process touches
                    // these bytes. `stream` and `self.cfg.flush` come from the
                    // detected features.
                    unsafe { cpu::copy_nt(dst, src.as_ptr(), src.len(), stream, self.cfg.flush) };
                    stripe.streamed(at, piece_end);
                }
                None => {
                    // SAFETY: as above, with ordinary stores.
                    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
                    stripe.stored(at, piece_end);
                }
            }
            Ok(())
        })
    }

    fn flush(&self, offset: u64, len: u64) -> Result<(), Error> {
        let end = self.check_range("flush", offset, len)?;
        if len == 0 {
            return Ok(());
        }
        if end > self.cfg.map_len {
            return Err(self.past_end("flush", offset, len));
        }
        self.for_each_piece(offset, len, |at, n, win, slot| {
            let stripe = slot.read().unwrap_or_else(PoisonError::into_inner);
            for (start, stop) in stripe.dirty_parts(at, at + n as u64).into_iter().flatten() {
                // Parts of a piece are shorter than the piece.
                self.flush_piece(win, start, (stop - start) as usize)?;
            }
            Ok(())
        })?;
        // Complete this thread's write-backs now: a fence issued later by
        // another thread would not order them.
        if self.cfg.flush.is_cache_flush() {
            cpu::store_fence();
        }
        Ok(())
    }

    fn fence(&self) -> Result<(), Error> {
        if self.cfg.flush.is_cache_flush() {
            cpu::store_fence();
        }
        // A file `create` made needs one fdatasync for its size and
        // allocation; after that this costs two atomic loads.
        self.file.fence()
    }

    fn ctime(&self) -> Result<u64, Error> {
        self.file.ctime()
    }

    fn set_len(&self, len: u64) -> Result<(), Error> {
        // The windows map the length the file had at open; a mapped part
        // never changes length (auxiliary files are never mapped).
        Err(Error::Io {
            op: "ftruncate",
            path: self.file.path().to_path_buf(),
            os: std::io::Error::other(format!(
                "a mapped part keeps its length ({} bytes), refusing {len}",
                self.cfg.map_len
            )),
        })
    }
}

/// The system page size (4096 where it cannot be read).
fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| usize::try_from(v).ok())
        .filter(|v| v.is_power_of_two())
        .unwrap_or(4096)
}

/// `value` rounded up to a multiple of `unit`, a power of two; with
/// `value <= 2^40` the result is at most `max(2^40, unit)`, so it cannot
/// overflow.
fn round_up(value: u64, unit: u64) -> u64 {
    value.div_ceil(unit) * unit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_remembers_streamed_ranges_until_stored_over() {
        let mut s = Stripe::default();
        assert_eq!(s.dirty_parts(0, 100), [Some((0, 100)), None]);
        s.streamed(10, 50);
        assert_eq!(s.dirty_parts(0, 100), [Some((0, 10)), Some((50, 100))]);
        assert_eq!(s.dirty_parts(20, 40), [None, None]);
        assert_eq!(s.dirty_parts(40, 60), [None, Some((50, 60))]);
        assert_eq!(s.dirty_parts(60, 70), [None, Some((60, 70))]);
        assert_eq!(s.dirty_parts(0, 5), [Some((0, 5)), None]);
        // Adjacent streamed pieces merge.
        s.streamed(50, 80);
        assert_eq!(s.dirty_parts(0, 100), [Some((0, 10)), Some((80, 100))]);
        // A disjoint one replaces (the older one is flushed again: slower,
        // never wrong).
        s.streamed(200, 300);
        assert_eq!(s.dirty_parts(10, 80), [Some((10, 80)), None]);
        // Ordinary stores outside leave it; inside clear it.
        s.stored(100, 200);
        assert_eq!(s.dirty_parts(200, 300), [None, None]);
        s.stored(299, 300);
        assert_eq!(s.dirty_parts(200, 300), [Some((200, 300)), None]);
    }

    #[test]
    fn rounding() {
        assert_eq!(round_up(1, 4096), 4096);
        assert_eq!(round_up(4096, 4096), 4096);
        assert_eq!(round_up(4097, 4096), 8192);
        assert_eq!(round_up(MAX_WINDOW, 1 << 30), MAX_WINDOW);
        assert!(page_size().is_power_of_two());
    }
}
