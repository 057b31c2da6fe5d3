//! Decodes and judges the pool header of a part file, as `pmempool info`
//! and `pmempool check` read it: decoding never fails on bytes of the right
//! length, validation names the field and offset that is wrong.
//!
//! ```sh
//! cargo run -p poolsync-header --example read_pool_header              # a header built here, then damaged
//! cargo run -p poolsync-header --example read_pool_header -- pool.obj  # the first 4 KiB of a pool file
//! ```
#![forbid(unsafe_code)]

use std::error::Error;
use std::io::Read;

use poolsync_header::{
    format_checksum, format_incompat, ring_links, Features, PoolHdr, PoolType, RawUuid,
    POOL_HDR_SIZE,
};

fn main() -> Result<(), Box<dyn Error>> {
    match std::env::args().nth(1) {
        Some(path) => {
            let mut page = vec![0u8; POOL_HDR_SIZE];
            std::fs::File::open(&path)?.read_exact(&mut page)?;
            describe(&path, &page)
        }
        None => {
            // A one-part, one-replica pool: its header links to itself.
            let part = RawUuid([7; 16]);
            let links = ring_links(&[[part]])?;
            let mut hdr = PoolHdr::new(
                PoolType::Obj,
                Features::DEFAULT,
                RawUuid([1; 16]),
                part,
                &links[0][0],
                1_700_000_000,
            );
            let mut page = hdr.encode().to_vec();
            describe("a header built in memory", &page)?;
            // One flipped byte inside the checksummed area.
            page[100] ^= 0xff;
            describe("the same header with byte 100 flipped", &page)
        }
    }
}

/// Prints the header's fields and what validation says about them.
fn describe(what: &str, page: &[u8]) -> Result<(), Box<dyn Error>> {
    let hdr = PoolHdr::decode(page)?;
    println!("{what}:");
    println!(
        "  signature    {:?}",
        String::from_utf8_lossy(&hdr.signature).trim_end_matches('\0')
    );
    println!("  major        {}", hdr.major);
    println!("  incompat     {}", format_incompat(hdr.features.incompat));
    println!("  pool set     {}", hdr.poolset_uuid.to_canonical());
    println!("  uuid         {}", hdr.uuid.to_canonical());
    println!("  next part    {}", hdr.next_part_uuid.to_canonical());
    println!(
        "  checksum     {}",
        format_checksum(hdr.checksum, hdr.compute_checksum())
    );
    match hdr.validate_basic() {
        Ok(kind) => println!("  valid {} pool header", kind.name()),
        Err(e) => println!("  invalid: {e}"),
    }
    Ok(())
}
