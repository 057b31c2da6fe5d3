//! The poolsync engine: opens pool sets, judges their health, creates,
//! checks, describes, synchronizes, transforms, verifies and removes them.
//!
//! The data path runs one way (see `ARCHITECTURE.md`): [`load`] and
//! [`open`] read a `*.set` file and lock every part, [`inspect`] judges
//! each part and replica as `pmempool sync` does without writing anything,
//! and the commands build on that verdict: [`check`], [`info`], [`sync`]
//! (plan, then execute the same plan a dry run prints), [`transform`],
//! [`verify`], [`feature`] and [`packets`] (update packets for offline
//! copies). [`compare`] is the block comparer they share. The engine
//! reaches storage only through `poolsync_pmem`'s `Storage` trait, so the
//! same code runs on real files and on the simulated crash backend.
//!
//! ```
//! use std::path::Path;
//! use poolsync_engine::{create, inspect, open};
//! use poolsync_pmem::{sim::SimStorage, Access};
//!
//! // A two-replica pool set on the simulated storage.
//! let storage = SimStorage::new();
//! storage.add_dir(Path::new("/pool"))?;
//! let set = "PMEMPOOLSET\n16M /pool/a.part\nREPLICA\n16M /pool/b.part\n";
//! storage.insert_file(Path::new("/pool/demo.set"), set.as_bytes(), 0o644)?;
//! let options = create::CreateOptions {
//!     layout: "demo".into(),
//!     mode: 0o664,
//!     size: None,
//!     force: false,
//! };
//! create::create(&storage, Path::new("/pool/demo.set"), &options)?;
//!
//! let opened = open::open(&storage, Path::new("/pool/demo.set"), Access::ReadOnly)?;
//! let health = inspect::inspect(&opened);
//! assert!(health.is_healthy());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod badblocks;
pub mod check;
pub mod compare;
pub mod create;
pub mod devdax;
mod durable;
pub mod endpoint;
mod error;
pub mod exec;
pub mod feature;
pub mod info;
pub mod inspect;
pub mod load;
mod obstacles;
pub mod open;
mod ownership;
pub mod packets;
pub mod progress;
pub mod range;
pub mod remote;
pub mod ring;
pub mod rm;
mod space;
pub mod sync;
#[cfg(test)]
mod test_endpoint;
pub mod transform;
pub mod undo;
pub mod verify;

pub use error::Error;
