//! The poolsync engine: opens pool sets, judges their health, creates,
//! checks, describes, synchronizes and removes them.
//!
//! `open`/`inspect` are shared by `check`, `info` and `sync`; `compare` is
//! the block comparer of two replicas that `sync` repairs with.
#![forbid(unsafe_code)]

pub mod check;
pub mod compare;
pub mod create;
mod error;
pub mod info;
pub mod inspect;
pub mod load;
pub mod open;
pub mod rm;
pub mod sync;
pub mod transform;
pub mod verify;

pub use error::Error;
