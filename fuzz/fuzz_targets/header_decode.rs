//! Fuzz target: every decoder of `poolsync-header` on arbitrary bytes.
//!
//! Decoding must never panic; when it succeeds, validation must not panic
//! either and encoding must reproduce the decoded bytes exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poolsync_header::{
    ArchFlags, HeapHeader, ObjDescriptor, PoolHdr, PoolType, Sds, HEAP_HDR_SIZE,
    OBJ_DESC_PERSISTENT_LEN, POOL_HDR_SIZE, SDS_SIZE,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(hdr) = PoolHdr::decode(data) {
        assert_eq!(&hdr.encode_raw()[..], &data[..POOL_HDR_SIZE]);
        let _ = hdr.validate_basic();
        for t in [PoolType::Obj, PoolType::Blk, PoolType::Log] {
            let _ = hdr.validate(t);
            let _ = hdr.problems(t, &ArchFlags::x86_64());
        }
        let _ = hdr.check_unused_zero();
        let _ = Sds::compare(&hdr.sds, &Sds::current_non_pmem());
        let mut fresh = hdr.clone();
        let bytes = fresh.encode();
        assert!(PoolHdr::decode(&bytes).is_ok_and(|h| h.checksum_ok()));
    } else {
        assert!(data.len() < POOL_HDR_SIZE);
    }

    if let Ok(desc) = ObjDescriptor::decode(data) {
        assert_eq!(&desc.encode_raw()[..], &data[..OBJ_DESC_PERSISTENT_LEN]);
        let _ = desc.validate();
        let _ = desc.check_unused_zero();
        let _ = desc.check_layout("layout");
        let _ = desc.layout_name();
        let _ = desc.pool_size();
    } else {
        assert!(data.len() < OBJ_DESC_PERSISTENT_LEN);
    }

    if let Ok(sds) = Sds::decode(data) {
        assert_eq!(&sds.encode_raw()[..], &data[..SDS_SIZE]);
        let _ = Sds::compare(&sds, &Sds::current_non_pmem());
        let _ = Sds::compare(&Sds::current_non_pmem(), &sds);
    } else {
        assert!(data.len() < SDS_SIZE);
    }

    if let Ok(heap) = HeapHeader::decode(data) {
        assert_eq!(&heap.encode_raw()[..], &data[..HEAP_HDR_SIZE]);
        let _ = heap.validate(0);
    } else {
        assert!(data.len() < HEAP_HDR_SIZE);
    }
});
