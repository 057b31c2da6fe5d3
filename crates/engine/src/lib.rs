//! The poolsync engine: opens pool sets, judges their health, creates,
//! checks, describes and removes them.
//!
//! CONTRACT SKELETON: module owners fill these in. `open`/`inspect` are
//! shared by `check`, `info` and (later) `sync`.
#![forbid(unsafe_code)]

pub mod check;
pub mod create;
mod error;
pub mod info;
pub mod inspect;
pub mod load;
pub mod open;
pub mod rm;

pub use error::Error;
