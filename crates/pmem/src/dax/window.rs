//! One mapped window of a part file: `mmap` with `MAP_SYNC` when the file
//! system supports it, `munmap` on drop.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

/// How a window is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// `MAP_SHARED_VALIDATE | MAP_SYNC`: the file is on DAX, its blocks
    /// are persistent memory, and the file system makes the metadata of a
    /// page durable before a write fault on it completes. Flushing the CPU
    /// caches is all it takes to persist data.
    Sync,
    /// Plain `MAP_SHARED` of a file that is not on DAX, used because the
    /// DAX path was forced (`PMEM_IS_PMEM_FORCE=1`, `POOLSYNC_PERSIST=dax`).
    /// As with PMDK under `PMEM_IS_PMEM_FORCE=1`, the cache flushes then
    /// make data safe against a crash of the process (the page cache keeps
    /// it) but not against a crash of the machine.
    Shared,
}

/// `mmap` flags asking for a synchronous DAX mapping.
const SYNC_FLAGS: libc::c_int = libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC;

/// A live mapping of `[offset, offset + len)` of one file.
#[derive(Debug)]
pub(crate) struct Window {
    base: NonNull<u8>,
    len: usize,
    offset: u64,
}

// SAFETY: a `Window` is an address range owned by this value; nothing in it
// is tied to the thread that created it, and `munmap` may run on any
// thread.
unsafe impl Send for Window {}
// SAFETY: `&Window` only hands out raw pointers. Every access through them
// is made by `DaxFile`, which serializes conflicting accesses with its
// stripe locks (see `crate::dax`).
unsafe impl Sync for Window {}

impl Window {
    /// Maps `[offset, offset + len)` of `file`; `len > 0`. With `sync`,
    /// asks for `MAP_SHARED_VALIDATE | MAP_SYNC`, which fails with
    /// `EOPNOTSUPP` on a file system without DAX (and `EINVAL` on kernels
    /// older than 4.15, which do not know `MAP_SHARED_VALIDATE`).
    ///
    /// Why the mapping cannot raise SIGBUS under us: a shared file mapping
    /// faults with SIGBUS when a page lies beyond the end of the file or
    /// when the file system cannot allocate a block for a written hole.
    /// `DaxFile` maps only `[0, len)` of the length it saw at open, every
    /// part file it opens read-write is fully allocated first (`create`
    /// allocates with `posix_fallocate`, `open` allocates any holes), and
    /// the file is held with `flock(LOCK_EX)` for as long as the mapping
    /// lives, so no cooperating process (libpmemobj, pmempool, poolsync)
    /// can truncate it meanwhile. A process that ignores the lock and
    /// truncates a pool in use breaks it for libpmemobj too.
    pub(crate) fn map(
        file: &File,
        offset: u64,
        len: usize,
        writable: bool,
        sync: bool,
    ) -> io::Result<Window> {
        let Ok(file_offset) = libc::off_t::try_from(offset) else {
            return Err(io::Error::from_raw_os_error(libc::EOVERFLOW));
        };
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let flags = if sync { SYNC_FLAGS } else { libc::MAP_SHARED };
        // SAFETY: a new mapping at an address the kernel chooses
        // (`addr == NULL`, no MAP_FIXED) cannot replace memory of ours; the
        // descriptor is valid because `file` is borrowed for the call. The
        // mapping is owned by the returned `Window` and unmapped in its
        // `Drop`. For why it cannot fault with SIGBUS, see above.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                flags,
                file.as_raw_fd(),
                file_offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        match NonNull::new(ptr.cast::<u8>()) {
            Some(base) => Ok(Window { base, len, offset }),
            // mmap never returns NULL for a non-fixed mapping; refuse
            // rather than build a window on it.
            None => Err(io::Error::from_raw_os_error(libc::ENOMEM)),
        }
    }

    /// File offset of the first mapped byte.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of mapped bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Address of file offset `at`; `None` unless `[at, at + len)` lies
    /// inside the window.
    pub(crate) fn ptr_at(&self, at: u64, len: usize) -> Option<*mut u8> {
        let start = usize::try_from(at.checked_sub(self.offset)?).ok()?;
        let end = start.checked_add(len)?;
        if end > self.len {
            return None;
        }
        // SAFETY: `start <= end <= self.len`, so the result stays inside
        // (or one past the end of) the mapping.
        Some(unsafe { self.base.as_ptr().add(start) })
    }

    /// `msync(MS_SYNC)` of the pages that hold `[at, at + len)`, which must
    /// lie inside the window.
    pub(crate) fn msync(&self, at: u64, len: usize, page: usize) -> io::Result<()> {
        let Some(ptr) = self.ptr_at(at, len) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        // The window starts on a page boundary, so rounding down to a page
        // stays inside it.
        let skew = (ptr as usize - self.base.as_ptr() as usize) % page;
        loop {
            // SAFETY: `[ptr - skew, ptr + len)` lies inside this live
            // mapping (the window start is page aligned, `ptr_at` checked
            // the end); msync reads no memory of ours.
            let rc = unsafe { libc::msync(ptr.sub(skew).cast(), len + skew, libc::MS_SYNC) };
            if rc == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe a mapping this value owns and that
        // nothing else unmaps; no pointer into it outlives the window,
        // because users hold an `Arc<Window>` while they use one. munmap
        // fails only for invalid arguments, which these are not, so its
        // result carries no information to act on.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}
