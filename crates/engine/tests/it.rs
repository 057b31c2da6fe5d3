//! The engine's integration tests: one test binary, one module per area
//! (add new areas as `tests/it/<area>.rs` with a `#[path]` module below).

#[path = "it/support.rs"]
mod support;

#[path = "it/check_crash.rs"]
mod check_crash;

#[path = "it/crash.rs"]
mod crash;

#[path = "it/create_rm.rs"]
mod create_rm;

#[path = "it/devdax.rs"]
mod devdax;

#[path = "it/feature.rs"]
mod feature;

#[path = "it/health.rs"]
mod health;

#[path = "it/sync.rs"]
mod sync;

#[path = "it/sync_crash.rs"]
mod sync_crash;

#[path = "it/transform.rs"]
mod transform;

#[path = "it/transform_staged.rs"]
mod transform_staged;

#[path = "it/verify.rs"]
mod verify;

#[path = "it/foreign.rs"]
mod foreign;

#[path = "it/remote.rs"]
mod remote;

#[path = "it/packets.rs"]
mod packets;
#[path = "it/remote_crash.rs"]
mod remote_crash;

#[path = "it/packets_crash.rs"]
mod packets_crash;
