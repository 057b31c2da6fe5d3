//! PMDK interop suite: `poolsync` against the real PMDK 1.12.1 tools.
//!
//! Pools that `poolsync create` makes must pass `pmempool check`/`info` and
//! be usable by libpmemobj (through the small C client in
//! `tests/data/objclient.c`); pools that `pmempool create` makes, intact or
//! damaged, must get the same answers from `poolsync info`/`check`/`rm` as from
//! `pmempool`. Tests skip (or fail under `CI=true`) when the PMDK tools are
//! missing; see `tests/data/README.md`. The `messages` module needs no PMDK:
//! it pins poolsync's own messages and JSON documents as snapshots.

/// Returns from the calling test unless the PMDK tools are installed (see
/// `support::require_pmdk`), naming the test in the skip log.
macro_rules! require_pmdk {
    () => {{
        fn here() {}
        let name = std::any::type_name_of_val(&here);
        let name = name.strip_suffix("::here").unwrap_or(name);
        let name = name.strip_prefix("interop::").unwrap_or(name);
        if !$crate::support::require_pmdk(name) {
            return;
        }
    }};
}

#[path = "interop/bad_input.rs"]
mod bad_input;
#[path = "interop/checksum.rs"]
mod checksum;
#[path = "interop/create.rs"]
mod create;
#[path = "interop/create_import_kill.rs"]
mod create_import_kill;
#[path = "interop/damage.rs"]
mod damage;
#[path = "interop/devdax.rs"]
mod devdax;
#[path = "interop/feature.rs"]
mod feature;
#[path = "interop/foreign.rs"]
mod foreign;
#[path = "interop/info_check.rs"]
mod info_check;
#[path = "interop/kill_loop.rs"]
mod kill_loop;
#[path = "interop/messages.rs"]
mod messages;
#[path = "interop/packets.rs"]
mod packets;
#[path = "interop/refused_headers.rs"]
mod refused_headers;
#[path = "interop/remote.rs"]
mod remote;
#[path = "interop/rm.rs"]
mod rm;
#[path = "interop/sshd.rs"]
mod sshd;
#[path = "interop/support.rs"]
mod support;
#[path = "interop/sync.rs"]
mod sync;
#[path = "interop/transform.rs"]
mod transform;
#[path = "interop/transform_kill.rs"]
mod transform_kill;
#[path = "interop/verify.rs"]
mod verify;
