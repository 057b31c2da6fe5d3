//! An endpoint of bytes in memory for the engine's unit tests, with the
//! faults they inject: a read that fails, a block that changes after its
//! first reading, a preference for digests.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::endpoint::{Endpoint, HeaderWrite, Location};
use crate::open::HeaderState;
use crate::range::LogicalRange;
use crate::Error;

/// Bytes in memory that start at logical `base`; never written.
#[derive(Debug, Default)]
pub struct Mem {
    /// The logical offset of the first byte.
    pub base: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Whether it asks to be compared by digests.
    pub digests: bool,
    /// A read that covers this byte fails.
    pub fail_at: Option<u64>,
    /// This byte reads inverted after the first read that covers it.
    pub change_at: Option<u64>,
    /// Reads that covered `change_at` so far.
    pub reads_of_change: AtomicUsize,
}

impl Mem {
    /// `bytes` from logical 0, without faults.
    pub fn new(bytes: Vec<u8>) -> Self {
        Mem {
            bytes,
            ..Mem::default()
        }
    }
}

impl Endpoint for Mem {
    fn name(&self) -> String {
        "memory".to_string()
    }
    fn end(&self) -> u64 {
        self.base + self.bytes.len() as u64
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let end = offset + buf.len() as u64;
        if self.fail_at.is_some_and(|f| (offset..end).contains(&f)) {
            return Err(Error::InvalidRequest {
                path: "memory".into(),
                reason: format!("injected read error at {offset:#x}"),
            });
        }
        let s = (offset - self.base) as usize;
        buf.copy_from_slice(&self.bytes[s..s + buf.len()]);
        if let Some(at) = self.change_at.filter(|at| (offset..end).contains(at)) {
            if self.reads_of_change.fetch_add(1, Ordering::SeqCst) > 0 {
                buf[(at - offset) as usize] ^= 0xff;
            }
        }
        Ok(())
    }
    fn prefers_digests(&self) -> bool {
        self.digests
    }
    fn write(&self, _: u64, _: &[u8]) -> Result<(), Error> {
        unreachable!("never written")
    }
    fn flush(&self, _: u64, _: u64) -> Result<(), Error> {
        Ok(())
    }
    fn fence(&self) -> Result<(), Error> {
        Ok(())
    }
    fn headers(&self) -> Vec<HeaderState> {
        Vec::new()
    }
    fn write_header(&self, _: usize, _: &HeaderWrite) -> Result<(), Error> {
        Ok(())
    }
    fn locate(&self, _: LogicalRange) -> Vec<Location> {
        Vec::new()
    }
}
