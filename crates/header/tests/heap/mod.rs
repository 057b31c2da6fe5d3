//! Tests of the heap walker: synthetic heaps built here, the committed
//! fixture of a pool used by libpmemobj, and live pools made by the real
//! libpmemobj when PMDK is installed.

mod pmdk;
mod synth;

use std::collections::BTreeMap;
use std::convert::Infallible;

use poolsync_header::heap::{walk, LiveMap, Owner};
use poolsync_header::ObjDescriptor;

pub const PAGE: u64 = 4096;

/// A logical pool image that stores only the pages written to; every other
/// byte reads as zero. Large (multi-zone) pools cost nothing.
#[derive(Clone, Debug)]
pub struct Sparse {
    pub size: u64,
    pages: BTreeMap<u64, Vec<u8>>,
}

impl Sparse {
    pub fn new(size: u64) -> Sparse {
        Sparse {
            size,
            pages: BTreeMap::new(),
        }
    }

    pub fn write(&mut self, offset: u64, bytes: &[u8]) {
        let mut done = 0usize;
        while done < bytes.len() {
            let off = offset + done as u64;
            let page = self
                .pages
                .entry(off / PAGE)
                .or_insert_with(|| vec![0; PAGE as usize]);
            let at = (off % PAGE) as usize;
            let n = (PAGE as usize - at).min(bytes.len() - done);
            page[at..at + n].copy_from_slice(&bytes[done..done + n]);
            done += n;
        }
    }

    /// Fills `buf` from `offset`; panics when asked for bytes outside the
    /// pool, which is exactly what the walker must never do.
    pub fn read(&self, offset: u64, buf: &mut [u8]) {
        let end = offset
            .checked_add(buf.len() as u64)
            .expect("read overflows");
        assert!(
            end <= self.size,
            "walker read {:#x}..{end:#x} outside the {:#x}-byte pool",
            offset,
            self.size
        );
        let mut done = 0usize;
        while done < buf.len() {
            let off = offset + done as u64;
            let at = (off % PAGE) as usize;
            let n = (PAGE as usize - at).min(buf.len() - done);
            match self.pages.get(&(off / PAGE)) {
                Some(page) => buf[done..done + n].copy_from_slice(&page[at..at + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
    }

    pub fn read_vec(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.read(offset, &mut v);
        v
    }

    pub fn descriptor(&self) -> ObjDescriptor {
        ObjDescriptor::decode(&self.read_vec(0x1000, 0x1000)).unwrap()
    }

    pub fn walk(&self) -> Result<LiveMap, poolsync_header::heap::WalkError<Infallible>> {
        walk(&self.descriptor(), self.size, |off, buf: &mut [u8]| {
            self.read(off, buf);
            Ok::<(), Infallible>(())
        })
    }
}

/// Checks the invariants every live map must keep: ranges inside the pool,
/// sorted, not overlapping, never empty, and every byte's owner found.
pub fn check_map_invariants(map: &LiveMap, pool_size: u64) {
    let mut prev_end = 0u64;
    let mut prev_owner: Option<Owner> = None;
    for r in map.ranges() {
        assert!(r.len > 0, "empty range {r:?}");
        assert!(r.offset >= prev_end, "overlap or disorder at {r:?}");
        assert!(r.end() <= pool_size, "{r:?} beyond the pool");
        if let (Some(Owner::ChunkHeaders { zone: a, .. }), Owner::ChunkHeaders { zone: b, .. }) =
            (prev_owner, r.owner)
        {
            assert!(
                a != b || prev_end != r.offset,
                "unmerged chunk headers at {r:?}"
            );
        }
        assert!(map.owner_of(r.offset).is_some());
        assert!(map.owner_of(r.end() - 1).is_some());
        assert_eq!(map.range_at(r.offset), Some(r));
        if let Owner::Object { offset, size, .. } = r.owner {
            assert_eq!(offset + size, r.end(), "object {r:?} must end its range");
            assert!(offset >= r.offset);
        }
        prev_end = r.end();
        prev_owner = Some(r.owner);
    }
    let total: u64 = map.ranges().iter().map(|r| r.len).sum();
    assert_eq!(total, map.stats().live_bytes);
    let spans: u64 = map.spans().map(|(s, e)| e - s).sum();
    assert_eq!(spans, total);
    assert_eq!(map.objects().count() as u64, map.stats().objects);
}
