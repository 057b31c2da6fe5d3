//! Integration tests of poolsync-wire: round trips of every message and of
//! frames, refusal of damaged and hostile input without panics or unbounded
//! allocation, and the offsets of `docs/wire.md`.

mod doc;
mod roundtrip;
mod seeds;
