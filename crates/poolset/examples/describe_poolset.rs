//! Parses a pool set file and describes it: its replicas and parts, the
//! size of every replica and of the pool, and which part file holds a given
//! logical offset of each replica.
//!
//! ```sh
//! cargo run -p poolsync-poolset --example describe_poolset              # a built-in pool set
//! cargo run -p poolsync-poolset --example describe_poolset -- my.set    # yours
//! ```
#![forbid(unsafe_code)]

use std::error::Error;

use poolsync_poolset::{map_range, parse, PartSize, Replica};

/// Used when no file is given.
const EXAMPLE: &str = "\
PMEMPOOLSET
# the master: two parts
32M /mnt/pmem0/pool.part0
32M /mnt/pmem0/pool.part1
REPLICA
64M /mnt/pmem1/pool.mirror
";

fn main() -> Result<(), Box<dyn Error>> {
    let (name, text) = match std::env::args().nth(1) {
        Some(path) => {
            let text = std::fs::read_to_string(&path)?;
            (path, text)
        }
        None => ("(built-in example)".to_string(), EXAMPLE.to_string()),
    };
    // The parser reports PMDK's reason and line; name the file as PMDK does.
    let set = parse(&text).map_err(|e| format!("{name}:{}: {}", e.line(), e.reason()))?;
    println!("{name}: {} replica(s)", set.replicas.len());
    if set.options.single_hdr {
        println!("option SINGLEHDR: one pool header per replica");
    }
    for (r, replica) in set.replicas.iter().enumerate() {
        match replica {
            Replica::Remote {
                node, descriptor, ..
            } => println!("replica {r}: remote, {descriptor} on {node}"),
            Replica::Local { parts, .. } => {
                let size = set
                    .replica_size(r)
                    .map_or("unknown (AUTO parts)".to_string(), |s| format!("{s} bytes"));
                println!(
                    "replica {r}: {} part(s), {} header(s), net size {size}",
                    parts.len(),
                    set.nhdrs(r)
                );
                for (p, part) in parts.iter().enumerate() {
                    let size = match part.size {
                        PartSize::Bytes(b) => format!("{b} bytes"),
                        PartSize::Auto => "AUTO".to_string(),
                    };
                    println!("  part {p}: {} ({size}, line {})", part.path, part.line);
                }
            }
        }
    }
    match set.pool_size() {
        Some(size) => {
            println!("pool size: {size} bytes (the smallest replica)");
            // Where 4 KiB in the middle of the pool live in every replica; a
            // range may span two part files.
            let offset = size / 2;
            for r in 0..set.replicas.len() {
                let Some(extents) = set.extents(r) else {
                    continue;
                };
                for piece in map_range(&extents, offset, 4096) {
                    println!(
                        "replica {r}: logical [{:#x}, {:#x}) is in part {} at file offset {:#x}",
                        piece.logical,
                        piece.logical + piece.len,
                        piece.part,
                        piece.file_offset
                    );
                }
            }
        }
        None => println!("pool size: unknown until the AUTO parts are resolved"),
    }
    set.validate_obj_sizes()?;
    println!("the part and pool sizes are large enough for an obj pool");
    Ok(())
}
