//! Fuzz target for the pool set parser: any text must parse or fail cleanly;
//! accepted text must survive the formatter round trip, and the size rules
//! and the address-space map must hold for it without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use poolsync_poolset::{map_range, parse};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(set) = parse(&text) else {
        return;
    };

    let formatted = set.to_text();
    let again = match parse(&formatted) {
        Ok(again) => again,
        Err(e) => panic!("formatter output does not parse ({e}): {formatted:?}"),
    };
    assert_eq!(again.without_lines(), set.without_lines());
    assert_eq!(again.to_text(), formatted);

    let _ = set.pool_size();
    let _ = set.validate_obj_sizes();
    for replica in 0..set.replicas.len() {
        let _ = set.nhdrs(replica);
        let size = set.replica_size(replica);
        let Some(extents) = set.extents(replica) else {
            continue;
        };
        let total = extents.iter().map(|e| e.len).sum::<u64>();
        assert_eq!(Some(total), size);
        assert_eq!(
            map_range(&extents, 0, total).len(),
            extents.iter().filter(|e| e.len > 0).count()
        );
        // A few ranges derived from the input, including ones past the end.
        for chunk in data.chunks(16).take(4) {
            let mut bytes = [0u8; 16];
            bytes[..chunk.len()].copy_from_slice(chunk);
            let offset = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
            let len = u64::from_le_bytes(bytes[8..].try_into().unwrap_or_default());
            let pieces = map_range(&extents, offset % total.saturating_add(1), len);
            let clipped = pieces.iter().map(|p| p.len).sum::<u64>();
            assert!(clipped <= len);
        }
    }
});
