//! Creates a three-replica pool set on the simulated storage, loses a part
//! of replica 1, and lets the engine judge the damage, plan the repair (a
//! dry run), carry it out and judge again. `SimStorage` keeps every file in
//! memory, so this runs anywhere and touches no real file.
//!
//! ```sh
//! cargo run -p poolsync-engine --example repair_replica
//! ```
#![forbid(unsafe_code)]

use std::error::Error;
use std::path::Path;

use poolsync_engine::create::{self, CreateOptions};
use poolsync_engine::sync::{self, NoProgress, SyncOptions};
use poolsync_engine::{inspect, open};
use poolsync_pmem::sim::SimStorage;
use poolsync_pmem::{Access, Storage};

const SET: &str = "\
PMEMPOOLSET
16M /pool/r0.part
REPLICA
8M /pool/r1-a.part
8M /pool/r1-b.part
REPLICA
16M /pool/r2.part
";

fn main() -> Result<(), Box<dyn Error>> {
    let storage = SimStorage::new();
    storage.add_dir(Path::new("/pool"))?;
    let set = Path::new("/pool/demo.set");
    storage.insert_file(set, SET.as_bytes(), 0o644)?;
    let created = create::create(&storage, set, &CreateOptions::default())?;
    println!(
        "created {} parts; pool size {} bytes",
        created.parts.len(),
        created.pool_size
    );

    // A lost disk: the second part of replica 1 is gone.
    storage.remove(Path::new("/pool/r1-b.part"))?;
    report(&storage, set)?;

    // The dry run plans every step and writes nothing.
    let dry = SyncOptions {
        dry_run: true,
        ..SyncOptions::default()
    };
    let planned = sync::sync(&storage, set, &dry, &NoProgress)?;
    println!(
        "plan: copy from replica {}, {} step(s), {} part(s) to create, {} bytes to copy",
        planned.plan.source,
        planned.plan.steps.len(),
        planned.plan.totals.parts_to_create,
        planned.plan.totals.bytes_to_copy
    );

    let done = sync::sync(&storage, set, &SyncOptions::default(), &NoProgress)?;
    if let Some(r) = done.report {
        println!(
            "sync: {} part(s) created, {} bytes copied, {} header(s) written",
            r.parts_created, r.bytes_copied, r.headers_written
        );
    }
    report(&storage, set)
}

/// Prints the engine's verdict on every replica and part.
fn report(storage: &SimStorage, set: &Path) -> Result<(), Box<dyn Error>> {
    let opened = open::open(storage, set, Access::ReadOnly)?;
    let health = inspect::inspect(&opened);
    for replica in &health.replicas {
        let state = if replica.healthy { "healthy" } else { "broken" };
        println!("replica {}: {state}", replica.replica);
        for part in &replica.parts {
            if let Some(message) = &part.message {
                println!("  part {}: {message}", part.part);
            }
        }
    }
    println!(
        "the pool set is {}",
        if health.is_healthy() {
            "healthy"
        } else {
            "not healthy"
        }
    );
    Ok(())
}
