//! Issue item 4: the Fletcher64 checksums that pmempool stores equal
//! `poolsync_header::fletcher64` and this suite's own recompute (with the
//! CKSUM_2K skip for pool headers).

use std::path::Path;

use crate::support::{
    fletcher64_ref, header_skip, le_u32, le_u64, pmempool, pmempool_set, read_at, read_header, s,
    temp_dir, Shape, CKSUM_2K, HDR_CSUM, HDR_INCOMPAT, SET_SHAPES,
};

/// Offset of the obj pool descriptor in a replica, its length and the offset
/// of its checksum field (docs/format.md §7, §1).
const DESC_OFF: u64 = 4096;
const DESC_LEN: usize = 2048;
const DESC_CSUM: usize = 2040;

/// The pool header of `part` carries a checksum both implementations agree on.
fn assert_header_checksum(part: &Path) {
    let hdr = read_header(part);
    assert!(
        hdr.iter().any(|&b| b != 0),
        "test premise: {} has a header",
        part.display()
    );
    assert_ne!(
        le_u32(&hdr, HDR_INCOMPAT) & CKSUM_2K,
        0,
        "pmempool 1.12.1 writes CKSUM_2K headers"
    );
    let stored = le_u64(&hdr, HDR_CSUM);
    let ours = fletcher64_ref(&hdr, HDR_CSUM, header_skip(&hdr));
    assert_eq!(
        ours,
        stored,
        "suite recompute (2K skip) vs stored checksum of {}",
        part.display()
    );
    assert_eq!(
        poolsync_header::fletcher64(&hdr, HDR_CSUM, Some(2048)),
        stored,
        "poolsync_header::fletcher64 (2K skip) vs stored checksum of {}",
        part.display()
    );
}

/// The obj descriptor at replica offset 4096 (always inside part 0, which is
/// at least 2 MiB) carries a checksum both implementations agree on.
fn assert_descriptor_checksum(part0: &Path) {
    let desc = read_at(part0, DESC_OFF, DESC_LEN);
    let stored = le_u64(&desc, DESC_CSUM);
    assert_eq!(
        fletcher64_ref(&desc, DESC_CSUM, None),
        stored,
        "suite recompute of the descriptor of {}",
        part0.display()
    );
    assert_eq!(
        poolsync_header::fletcher64(&desc, DESC_CSUM, None),
        stored,
        "poolsync_header::fletcher64 of the descriptor of {}",
        part0.display()
    );
}

#[test]
fn reference_vectors() {
    // docs/format.md §1: words 1, 2, 3, 4 without a checksum field in range.
    let words: Vec<u8> = [1u32, 2, 3, 4]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    let mut with_field = words.clone();
    with_field.extend_from_slice(&[0xAA; 8]);
    assert_eq!(
        fletcher64_ref(&with_field[..16], 16, None),
        0x0000_0014_0000_000A
    );
    // The checksum field counts as zero words that still advance `hi`.
    assert_eq!(fletcher64_ref(&with_field, 16, None), 0x0000_0028_0000_000A);
    assert_eq!(
        poolsync_header::fletcher64(&with_field, 16, None),
        0x0000_0028_0000_000A
    );
    // The 2K skip is not the checksum of the first 2048 bytes alone.
    let mut hdr = vec![0u8; 4096];
    hdr[0] = 1;
    assert_eq!(
        fletcher64_ref(&hdr, HDR_CSUM, Some(2048)),
        (1024u64 << 32) | 1
    );
    assert_eq!(
        poolsync_header::fletcher64(&hdr, HDR_CSUM, Some(2048)),
        (1024u64 << 32) | 1
    );
}

fn check_shape(shape: &Shape) {
    let dir = temp_dir();
    let files = pmempool_set(dir.path(), shape.name, shape);
    for (r, parts) in files.parts.iter().enumerate() {
        for part in &parts[..shape.nhdrs(r)] {
            assert_header_checksum(part);
        }
        assert_descriptor_checksum(&parts[0]);
    }
}

#[test]
fn pmempool_pool_sets() {
    require_pmdk!();
    for shape in &SET_SHAPES {
        check_shape(shape);
    }
}

#[test]
fn pmempool_single_files() {
    require_pmdk!();
    let dir = temp_dir();
    for (name, opts) in [
        ("default", &[][..]),
        ("sized", &["-s", "16M", "-l", "mylayout"][..]),
    ] {
        let pool = dir.path().join(name);
        let mut args = vec!["create"];
        args.extend_from_slice(opts);
        args.extend_from_slice(&["obj", s(&pool)]);
        pmempool(&args).assert_success();
        assert_header_checksum(&pool);
        assert_descriptor_checksum(&pool);
    }
}
