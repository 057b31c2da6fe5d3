//! CPU primitives of the DAX path: which cache-flush instruction to use,
//! writing back a range line by line, the store fence, and non-temporal
//! copies.
//!
//! The choice is made at run time from CPUID, as libpmem makes it: CLWB
//! (write back, keep the line cached) when the CPU has it, else CLFLUSHOPT
//! (write back and evict, weakly ordered), else CLFLUSH (write back and
//! evict, strongly ordered). On other architectures, or on an x86_64 CPU
//! without any of them, the flush falls back to `msync` of the range,
//! which the kernel turns into its own cache maintenance for DAX files and
//! into a write-back for page-cache files.

use std::fmt;
use std::sync::OnceLock;

/// Size of the unit the cache-flush instructions act on. Every x86_64 CPU
/// that implements CLFLUSH reports 64 (CPUID leaf 1, EBX bits 15:8 × 8).
pub const CACHE_LINE: usize = 64;

/// The CPU features the DAX path can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CpuFeatures {
    /// `CLFLUSH` (CPUID leaf 1, EDX bit 19).
    pub clflush: bool,
    /// `CLFLUSHOPT` (CPUID leaf 7, EBX bit 23).
    pub clflushopt: bool,
    /// `CLWB` (CPUID leaf 7, EBX bit 24).
    pub clwb: bool,
    /// SSE2 16-byte non-temporal stores (`MOVNTDQ`); every x86_64 CPU has them.
    pub sse2: bool,
    /// AVX 32-byte non-temporal stores (`VMOVNTDQ`), usable only when the
    /// operating system saves the AVX state too.
    pub avx: bool,
}

impl CpuFeatures {
    /// No features at all: flushes fall back to `msync` and copies use
    /// ordinary stores.
    pub const NONE: CpuFeatures = CpuFeatures {
        clflush: false,
        clflushopt: false,
        clwb: false,
        sse2: false,
        avx: false,
    };

    /// Every feature this module knows; intersected with
    /// [`CpuFeatures::detect`] it leaves what the CPU has.
    pub const ALL: CpuFeatures = CpuFeatures {
        clflush: true,
        clflushopt: true,
        clwb: true,
        sse2: true,
        avx: true,
    };

    /// The features of the CPU this process runs on (read once, then cached).
    pub fn detect() -> CpuFeatures {
        static DETECTED: OnceLock<CpuFeatures> = OnceLock::new();
        *DETECTED.get_or_init(detect_uncached)
    }

    /// The features present in both `self` and `other`; used to restrict
    /// the detected features, never to add one the CPU lacks.
    pub fn intersect(self, other: CpuFeatures) -> CpuFeatures {
        CpuFeatures {
            clflush: self.clflush && other.clflush,
            clflushopt: self.clflushopt && other.clflushopt,
            clwb: self.clwb && other.clwb,
            sse2: self.sse2 && other.sse2,
            avx: self.avx && other.avx,
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn detect_uncached() -> CpuFeatures {
    use std::arch::x86_64::{__cpuid, __cpuid_count, __get_cpuid_max};

    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU and only reads identification
    // registers. Older Rust versions declare these intrinsics unsafe, newer
    // ones safe, hence the allowance for an unneeded block.
    let (max_leaf, leaf1_edx, leaf7_ebx) = unsafe {
        let (max_leaf, _) = __get_cpuid_max(0);
        let leaf1 = __cpuid(1);
        let leaf7_ebx = if max_leaf >= 7 {
            __cpuid_count(7, 0).ebx
        } else {
            0
        };
        (max_leaf, leaf1.edx, leaf7_ebx)
    };
    let bit = |word: u32, n: u32| word & (1 << n) != 0;
    CpuFeatures {
        clflush: max_leaf >= 1 && bit(leaf1_edx, 19),
        clflushopt: bit(leaf7_ebx, 23),
        clwb: bit(leaf7_ebx, 24),
        sse2: std::arch::is_x86_feature_detected!("sse2"),
        // The macro also checks that the OS enabled the AVX register state
        // (OSXSAVE and XCR0), which the CPUID bit alone does not tell.
        avx: std::arch::is_x86_feature_detected!("avx"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_uncached() -> CpuFeatures {
    CpuFeatures::NONE
}

/// How a range is written back to persistent memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlushKind {
    /// `CLWB` per cache line, ordered by `SFENCE`.
    Clwb,
    /// `CLFLUSHOPT` per cache line, ordered by `SFENCE`.
    ClflushOpt,
    /// `CLFLUSH` per cache line (strongly ordered; the `SFENCE` costs little).
    Clflush,
    /// `msync(MS_SYNC)` of the pages of the range: the fallback on other
    /// architectures and on CPUs without a cache-flush instruction.
    Msync,
}

impl FlushKind {
    /// Lower-case name, as benchmarks and diagnostics print it.
    pub fn as_str(self) -> &'static str {
        match self {
            FlushKind::Clwb => "clwb",
            FlushKind::ClflushOpt => "clflushopt",
            FlushKind::Clflush => "clflush",
            FlushKind::Msync => "msync",
        }
    }

    /// `true` for the CPU instructions (which need `SFENCE` at a fence),
    /// `false` for `msync` (complete when it returns).
    pub fn is_cache_flush(self) -> bool {
        !matches!(self, FlushKind::Msync)
    }
}

impl fmt::Display for FlushKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The flush to use with `features`: CLWB, else CLFLUSHOPT, else CLFLUSH,
/// else `msync`.
pub fn choose_flush(features: CpuFeatures) -> FlushKind {
    if features.clwb {
        FlushKind::Clwb
    } else if features.clflushopt {
        FlushKind::ClflushOpt
    } else if features.clflush {
        FlushKind::Clflush
    } else {
        FlushKind::Msync
    }
}

/// Which non-temporal stores large copies use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// 32-byte `VMOVNTDQ`.
    Avx,
    /// 16-byte `MOVNTDQ`.
    Sse2,
}

/// The non-temporal stores to use with `features` and `flush`, if any.
/// They are used only together with a cache-flush instruction: the
/// unaligned head and tail of a copy are written with ordinary stores and
/// flushed, and the `msync` fallback has no use for stores that bypass the
/// cache.
pub(crate) fn choose_stream(features: CpuFeatures, flush: FlushKind) -> Option<Stream> {
    if !flush.is_cache_flush() {
        None
    } else if features.avx {
        Some(Stream::Avx)
    } else if features.sse2 {
        Some(Stream::Sse2)
    } else {
        None
    }
}

/// Writes back every cache line that overlaps `[addr, addr + len)` with
/// the instruction `kind` names.
///
/// # Safety
///
/// The range must lie inside one live mapping for the whole call, and
/// `kind` must be a cache-flush instruction the CPU has (as
/// [`choose_flush`] of the detected features guarantees); `Msync` does
/// nothing here, the caller handles it per page.
pub(crate) unsafe fn flush_lines(kind: FlushKind, addr: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    let first = addr as usize & !(CACHE_LINE - 1);
    let end = addr as usize + len;
    #[cfg(target_arch = "x86_64")]
    {
        let mut line = first;
        match kind {
            FlushKind::Clwb => {
                while line < end {
                    // SAFETY: `line` lies in the mapped range (the caller's
                    // promise; rounding down to the line start stays in the
                    // same page) and the CPU has CLWB.
                    unsafe { x86::clwb(line as *const u8) };
                    line += CACHE_LINE;
                }
            }
            FlushKind::ClflushOpt => {
                while line < end {
                    // SAFETY: as for CLWB above; the CPU has CLFLUSHOPT.
                    unsafe { x86::clflushopt(line as *const u8) };
                    line += CACHE_LINE;
                }
            }
            FlushKind::Clflush => {
                while line < end {
                    // SAFETY: `line` is mapped (as above) and CLFLUSH is
                    // part of SSE2, which every x86_64 CPU has.
                    unsafe { std::arch::x86_64::_mm_clflush(line as *const u8) };
                    line += CACHE_LINE;
                }
            }
            FlushKind::Msync => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // Only `Msync` is ever chosen here: `detect` reports no x86 features
        // on other architectures, so there is nothing to do per line.
        let _ = (kind, first, end);
    }
}

/// Orders the cache flushes and non-temporal stores issued so far by this
/// thread before every later store (`SFENCE`); once it returns, flushed
/// lines have reached the persistence domain of a platform with ADR.
pub(crate) fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SFENCE has no operands and touches no memory; SSE is part
        // of the x86_64 baseline.
        unsafe { std::arch::x86_64::_mm_sfence() };
    }
}

/// Copies `len` bytes from `src` to `dst` with non-temporal stores for the
/// whole cache lines, and ordinary stores written back with `flush` for the
/// partial lines at either end; then fences. When it returns, the bytes are
/// in the persistence domain and no flush of them is needed.
///
/// # Safety
///
/// `src` must be valid for reads and `dst` for writes of `len` bytes, the
/// two must not overlap, no other thread may access `dst..dst + len` during
/// the call, `dst` must lie in one live mapping, and `stream` and `flush`
/// must be instructions the CPU has ([`choose_stream`] and
/// [`choose_flush`] of the detected features).
pub(crate) unsafe fn copy_nt(
    dst: *mut u8,
    src: *const u8,
    len: usize,
    stream: Stream,
    flush: FlushKind,
) {
    let head = ((CACHE_LINE - dst as usize % CACHE_LINE) % CACHE_LINE).min(len);
    let body = (len - head) & !(CACHE_LINE - 1);
    let tail = len - head - body;
    // SAFETY: `head <= len`, so both ranges are inside the caller's; the
    // flush covers only lines of the mapped destination.
    unsafe {
        std::ptr::copy_nonoverlapping(src, dst, head);
        flush_lines(flush, dst, head);
    }
    if body > 0 {
        // SAFETY: `head + body <= len`; `dst + head` is 64-byte aligned (it
        // is `dst` rounded up to a line, or `dst` itself when `head` is 0
        // because it was aligned), as the stores require.
        unsafe { stream_lines(stream, dst.add(head), src.add(head), body) };
    }
    if tail > 0 {
        // SAFETY: `head + body + tail == len`, inside the caller's ranges.
        unsafe {
            let at = head + body;
            std::ptr::copy_nonoverlapping(src.add(at), dst.add(at), tail);
            flush_lines(flush, dst.add(at), tail);
        }
    }
    // Non-temporal stores are weakly ordered: fence before anybody (this
    // thread included, through a lock release) can observe the memory.
    store_fence();
}

/// Non-temporal copy of `len` bytes, a multiple of [`CACHE_LINE`].
///
/// # Safety
///
/// As for [`copy_nt`], and `dst` is 64-byte aligned.
unsafe fn stream_lines(stream: Stream, dst: *mut u8, src: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    match stream {
        // SAFETY: the caller's promise, and `Stream::Avx` is chosen only
        // when AVX was detected (CPU and OS).
        Stream::Avx => unsafe { x86::stream_avx(dst, src, len) },
        // SAFETY: the caller's promise; SSE2 is in the x86_64 baseline.
        Stream::Sse2 => unsafe { x86::stream_sse2(dst, src, len) },
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // `choose_stream` never picks a stream here (no features are
        // detected), but an ordinary copy is the correct meaning anyway.
        let _ = stream;
        // SAFETY: the caller's promise.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The x86_64 instructions that have no stable intrinsic, and the
    //! vector loops of the non-temporal copy.

    use std::arch::asm;
    use std::arch::x86_64::{
        __m128i, __m256i, _mm256_loadu_si256, _mm256_stream_si256, _mm_loadu_si128,
        _mm_stream_si128,
    };

    /// `CLWB [p]`.
    ///
    /// # Safety
    ///
    /// `p` must be mapped and the CPU must have CLWB.
    #[inline(always)]
    pub(super) unsafe fn clwb(p: *const u8) {
        // SAFETY: the caller's promise. The block is not `nomem`, so the
        // compiler keeps every earlier store to the line before it.
        unsafe { asm!("clwb [{0}]", in(reg) p, options(nostack, preserves_flags)) };
    }

    /// `CLFLUSHOPT [p]`.
    ///
    /// # Safety
    ///
    /// `p` must be mapped and the CPU must have CLFLUSHOPT.
    #[inline(always)]
    pub(super) unsafe fn clflushopt(p: *const u8) {
        // SAFETY: as for `clwb`.
        unsafe { asm!("clflushopt [{0}]", in(reg) p, options(nostack, preserves_flags)) };
    }

    /// 16-byte non-temporal stores over `len` bytes (a multiple of 64).
    ///
    /// # Safety
    ///
    /// `dst` is 16-byte aligned and valid for writes of `len` bytes, `src`
    /// valid for reads of `len` bytes, no overlap.
    pub(super) unsafe fn stream_sse2(dst: *mut u8, src: *const u8, len: usize) {
        let mut at = 0;
        while at < len {
            // SAFETY: `at + 16 <= len` (len is a multiple of 16); loads are
            // unaligned, stores aligned because `dst` is and `at` is a
            // multiple of 16.
            unsafe {
                let v = _mm_loadu_si128(src.add(at).cast::<__m128i>());
                _mm_stream_si128(dst.add(at).cast::<__m128i>(), v);
            }
            at += 16;
        }
    }

    /// 32-byte non-temporal stores over `len` bytes (a multiple of 64).
    ///
    /// # Safety
    ///
    /// As for [`stream_sse2`] with 32-byte alignment of `dst`, and AVX must
    /// be available (CPU and OS).
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn stream_avx(dst: *mut u8, src: *const u8, len: usize) {
        let mut at = 0;
        while at < len {
            // SAFETY: `at + 32 <= len`; aligned stores as for SSE2 above.
            unsafe {
                let v = _mm256_loadu_si256(src.add(at).cast::<__m256i>());
                _mm256_stream_si256(dst.add(at).cast::<__m256i>(), v);
            }
            at += 32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(clflush: bool, clflushopt: bool, clwb: bool) -> CpuFeatures {
        CpuFeatures {
            clflush,
            clflushopt,
            clwb,
            ..CpuFeatures::NONE
        }
    }

    #[test]
    fn flush_choice_prefers_clwb_then_clflushopt_then_clflush_then_msync() {
        for clflush in [false, true] {
            for clflushopt in [false, true] {
                for clwb in [false, true] {
                    let expected = if clwb {
                        FlushKind::Clwb
                    } else if clflushopt {
                        FlushKind::ClflushOpt
                    } else if clflush {
                        FlushKind::Clflush
                    } else {
                        FlushKind::Msync
                    };
                    let f = features(clflush, clflushopt, clwb);
                    assert_eq!(choose_flush(f), expected, "{f:?}");
                    // Vector features never change the flush.
                    let wide = CpuFeatures {
                        sse2: true,
                        avx: true,
                        ..f
                    };
                    assert_eq!(choose_flush(wide), expected, "{wide:?}");
                }
            }
        }
    }

    #[test]
    fn streams_need_a_cache_flush_and_prefer_avx() {
        let all = CpuFeatures::ALL;
        assert_eq!(choose_stream(all, FlushKind::Clwb), Some(Stream::Avx));
        let no_avx = CpuFeatures { avx: false, ..all };
        assert_eq!(
            choose_stream(no_avx, FlushKind::Clflush),
            Some(Stream::Sse2)
        );
        assert_eq!(choose_stream(all, FlushKind::Msync), None);
        assert_eq!(choose_stream(CpuFeatures::NONE, FlushKind::Clwb), None);
    }

    #[test]
    fn intersect_only_removes() {
        let some = features(true, false, true);
        assert_eq!(some.intersect(CpuFeatures::ALL), some);
        assert_eq!(some.intersect(CpuFeatures::NONE), CpuFeatures::NONE);
        assert_eq!(
            some.intersect(features(false, true, true)),
            features(false, false, true)
        );
    }

    #[test]
    fn detection_is_consistent() {
        let f = CpuFeatures::detect();
        assert_eq!(f, CpuFeatures::detect());
        if cfg!(target_arch = "x86_64") {
            // Every x86_64 CPU has SSE2, and CLFLUSH with it.
            assert!(f.sse2 && f.clflush, "{f:?}");
            if f.avx {
                assert!(f.sse2);
            }
        } else {
            assert_eq!(f, CpuFeatures::NONE);
        }
    }

    /// Every flush and copy routine the detected CPU supports, run on an
    /// ordinary heap buffer (the instructions work on any mapped memory).
    #[test]
    fn primitives_copy_exactly_the_bytes_asked_for() {
        let detected = CpuFeatures::detect();
        let src: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut ran = 0;
        for kind in [FlushKind::Clwb, FlushKind::ClflushOpt, FlushKind::Clflush] {
            let restricted = match kind {
                FlushKind::Clwb => detected,
                FlushKind::ClflushOpt => CpuFeatures {
                    clwb: false,
                    ..detected
                },
                _ => CpuFeatures {
                    clwb: false,
                    clflushopt: false,
                    ..detected
                },
            };
            let flush = choose_flush(restricted);
            if flush != kind {
                continue;
            }
            for avx in [false, true] {
                let Some(stream) = choose_stream(CpuFeatures { avx, ..restricted }, flush) else {
                    continue;
                };
                for (start, len) in [(0, 0), (1, 5), (3, 64), (64, 128), (17, 2500), (0, 2944)] {
                    let mut dst = vec![0xeeu8; 3100];
                    // SAFETY: `start + len <= 2961 < dst.len()` and
                    // `len <= src.len()`; the buffers are distinct and
                    // owned by this test.
                    unsafe {
                        copy_nt(
                            dst.as_mut_ptr().add(start),
                            src.as_ptr(),
                            len,
                            stream,
                            flush,
                        );
                        flush_lines(flush, dst.as_ptr().add(start), len);
                    }
                    store_fence();
                    assert_eq!(&dst[start..start + len], &src[..len], "{kind} {stream:?}");
                    assert!(dst[..start].iter().all(|&b| b == 0xee));
                    assert!(dst[start + len..].iter().all(|&b| b == 0xee));
                }
                ran += 1;
            }
        }
        if cfg!(target_arch = "x86_64") {
            // CLFLUSH and SSE2 at least, on every x86_64 CPU.
            assert!(ran >= 1, "no variant ran on {detected:?}");
        }
    }
}
