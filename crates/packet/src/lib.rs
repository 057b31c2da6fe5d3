//! Byte formats of poolsync's update packets: the physical packet files, the
//! state file every site keeps beside its pool set file, and rewind
//! requests, with the timeline logic that decides who can apply what.
//!
//! Update packets ship a pool's changed blocks to offline replicas, as
//! ClearCase MultiSite's `syncreplica -export/-import` does for VOBs. This
//! crate does no I/O and reads no clock: decoders take `&[u8]` (with the file
//! offset the bytes came from, so that every error names it), encoders
//! return bytes, and the caller supplies times and random ids. Every length
//! read from input is bounded before anything is sized by it, decompression
//! is bounded by the declared size, and no input makes a decoder panic.
//! `docs/packet.md` is the byte-level specification; every offset there is
//! a constant here, checked at compile time.
//!
//! * [`packet`]: file header, records (runs of data blocks, compressed with
//!   zstd or LZ4, or runs of zero blocks) and trailer; [`PacketEncoder`]
//!   writes a logical packet as files `FILE`, `FILE_2`, ...;
//!   [`check_parts`] and [`PacketReader`] verify them before anything is
//!   applied.
//! * [`state`]: the state file ([`state::State`] head, then the per-block
//!   entries in tagged chunks, streamable).
//! * [`rewind`]: rewind requests.
//! * [`timeline`]: histories, fork points, and [`applicability`].
//! * [`size`]: `--max-size` values such as `500k` or `1.5g`.
//!
//! Tags are BLAKE3, truncated to 128 bits: keyed (a MAC) when the caller has
//! a key ([`key_from_file`]), a plain checksum otherwise. Without a key,
//! damage is detected but not forgery.
//!
//! # Example
//!
//! ```
//! use poolsync_packet::{
//!     verify_slices, Compression, PacketEncoder, PacketMeta, RecordBody,
//! };
//!
//! let key = poolsync_packet::key_from_file(&[42; 32])?;
//! let meta = PacketMeta {
//!     packet_id: [1; 16],
//!     poolset_uuid: [2; 16],
//!     lineage: [3; 16],
//!     timeline: 1,
//!     history: vec![],
//!     base_epoch: 4,
//!     new_epoch: 5,
//!     block_size: 4096,
//!     range: 0..(64 << 20),
//!     created: 1_700_000_000,
//!     comment: "nightly".into(),
//!     destinations: vec!["site-b".into()],
//!     source: "/pools/site-a/pool.set".into(),
//!     rewind: None,
//!     compression: Compression::Zstd,
//! };
//!
//! // Export: one file here, with a data run and a zero run.
//! let mut enc = PacketEncoder::new(meta, Some(&key))?;
//! let mut file = enc.start_file()?;
//! let data = vec![7u8; 8192];
//! let record = enc.prepare_data(4096, &data)?;
//! assert!(enc.fits(&record, 2 << 20));
//! enc.write_record(record, &mut file)?;
//! let zeros = enc.prepare_zero(1 << 20, 16)?;
//! enc.write_record(zeros, &mut file)?;
//! let (trailer, summary) = enc.finish()?;
//! file.extend_from_slice(&trailer);
//!
//! // Import: verify everything, then apply.
//! let mut applied = Vec::new();
//! let read = verify_slices(&[&file], Some(&key), |body, bytes| {
//!     applied.push((*body, bytes.len()));
//! })
//! .map_err(|(_, e)| e)?;
//! assert_eq!(read, summary);
//! assert_eq!(applied[0], (RecordBody::Data { offset: 4096, len: 8192 }, 8192));
//! assert_eq!(applied[1].0, RecordBody::Zero { offset: 1 << 20, len: 16 * 4096 });
//!
//! // One flipped byte anywhere is refused, with its offset.
//! file[200] ^= 1;
//! let (_, err) = verify_slices(&[&file], Some(&key), |_, _| {}).unwrap_err();
//! assert!(err.offset().is_some());
//! # Ok::<(), poolsync_packet::Error>(())
//! ```
#![forbid(unsafe_code)]

mod bytes;
mod error;
pub mod packet;
pub mod rewind;
pub mod size;
pub mod state;
mod tag;
pub mod timeline;

pub use error::Error;
pub use packet::*;
pub use rewind::{coarsen_ranges, normalize_ranges, BlockRange, RewindRequest};
pub use size::{parse_max_size, DEFAULT_MAX_SIZE, MAX_MAX_SIZE, MIN_MAX_SIZE};
pub use state::{Applied, Destination, Entry, Replay, State, StateLayout};
pub use tag::{key_from_file, Key, KEY_CONTEXT, MAX_KEY_FILE_LEN, MIN_KEY_FILE_LEN, TAG_LEN};
pub use timeline::{
    applicability, check_history, fork, fork_epoch, fork_point, is_ancestor, validate_history,
    Applicability, Fork, ForkPoint, HistoryProblem, Position, FORK_LEN, MAX_HISTORY, ROOT_TIMELINE,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_without_period() {
        let errors = [
            Error::Truncated {
                what: "record",
                offset: 1,
                needed: 2,
                available: 1,
            },
            Error::BadTag {
                what: "record",
                offset: 9,
                signed: true,
            },
            Error::KeyRequired {
                what: "packet file header",
                offset: 10,
            },
            Error::Part(PartProblem::Missing { first: 2, count: 3 }),
            Error::Part(PartProblem::NoLast { highest: Some(1) }),
            Error::MaxSize {
                text: "x".into(),
                problem: "no unit",
            },
            Error::Misuse {
                api: "x",
                problem: "y",
            },
        ];
        for e in errors {
            let m = e.to_string();
            assert!(!m.ends_with('.'), "{m}");
            assert!(m.chars().next().is_some_and(|c| c.is_lowercase()), "{m}");
        }
    }
}
