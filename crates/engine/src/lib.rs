//! The poolsync engine: opens pool sets, judges their health, creates,
//! checks, describes and removes them.
//!
//! CONTRACT SKELETON: module owners fill these in. `open`/`inspect` are
//! shared by `check`, `info` and (later) `sync`.
#![forbid(unsafe_code)]

mod error;
pub mod load;

pub use error::Error;
