//! Integration tests of poolsync-packet: round trips of every structure,
//! refusal of every corruption with an offset, the state file budget, the
//! timeline logic against a brute-force model, the offsets of
//! `docs/packet.md`, and the fuzz seeds.

mod common;
mod doc;
mod packet;
mod rewind;
mod seeds;
mod size;
mod state;
mod timeline;
