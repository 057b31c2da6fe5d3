//! The sync mark: what a remote replica's host keeps beside its pool set
//! file after an update completed, so that the next update can send only
//! the blocks changed since (`docs/wire.md`, section 9).
//!
//! A mark says "this pool holds the source's data as of `epoch` of
//! `lineage`, and its `run_id` was `run_id` then". The server writes it
//! at the client's request once an update is durable and the pool healthy,
//! and removes it before anything else whenever the pool set is opened for
//! writing, so a mark that survives proves that nothing of poolsync wrote
//! the pool since; a changed `run_id` shows that libpmemobj opened it.
//! It is 72 bytes, little-endian, with a CRC-32 over the rest.

use crate::Error;

/// Bytes of a mark.
pub const MARK_LEN: usize = 72;
/// Its magic number.
pub const MARK_MAGIC: [u8; 8] = *b"PSYNCMRK";
/// The version this build writes and reads.
pub const MARK_VERSION: u16 = 1;

/// Offset of the magic number.
pub const MARK_MAGIC_OFF: usize = 0;
/// Offset of the version.
pub const MARK_VERSION_OFF: usize = 8;
/// Offset of two reserved bytes (zero).
pub const MARK_RESERVED_OFF: usize = 10;
/// Offset of the timeline.
pub const MARK_TIMELINE_OFF: usize = 12;
/// Offset of the pool set UUID.
pub const MARK_POOLSET_UUID_OFF: usize = 16;
/// Offset of the lineage.
pub const MARK_LINEAGE_OFF: usize = 32;
/// Offset of the epoch.
pub const MARK_EPOCH_OFF: usize = 48;
/// Offset of four reserved bytes (zero).
pub const MARK_RESERVED2_OFF: usize = 52;
/// Offset of the pool's `run_id` when the mark was written.
pub const MARK_RUN_ID_OFF: usize = 56;
/// Offset of the CRC-32 of bytes 0 .. 64.
pub const MARK_CRC_OFF: usize = 64;
/// Offset of four reserved bytes (zero).
pub const MARK_RESERVED3_OFF: usize = 68;

const _: () = assert!(MARK_MAGIC_OFF + 8 == MARK_VERSION_OFF);
const _: () = assert!(MARK_VERSION_OFF + 2 == MARK_RESERVED_OFF);
const _: () = assert!(MARK_RESERVED_OFF + 2 == MARK_TIMELINE_OFF);
const _: () = assert!(MARK_TIMELINE_OFF + 4 == MARK_POOLSET_UUID_OFF);
const _: () = assert!(MARK_POOLSET_UUID_OFF + 16 == MARK_LINEAGE_OFF);
const _: () = assert!(MARK_LINEAGE_OFF + 16 == MARK_EPOCH_OFF);
const _: () = assert!(MARK_EPOCH_OFF + 4 == MARK_RESERVED2_OFF);
const _: () = assert!(MARK_RESERVED2_OFF + 4 == MARK_RUN_ID_OFF);
const _: () = assert!(MARK_RUN_ID_OFF + 8 == MARK_CRC_OFF);
const _: () = assert!(MARK_CRC_OFF + 4 == MARK_RESERVED3_OFF);
const _: () = assert!(MARK_RESERVED3_OFF + 4 == MARK_LEN);

/// A decoded sync mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncMark {
    /// The pool set UUID of the pool it describes.
    pub poolset_uuid: [u8; 16],
    /// The source's lineage (its state file's).
    pub lineage: [u8; 16],
    /// The source's timeline.
    pub timeline: u32,
    /// The source's epoch whose data the pool holds.
    pub epoch: u32,
    /// The pool's `run_id` when the mark was written.
    pub run_id: u64,
}

impl SyncMark {
    /// Its 72 bytes.
    pub fn encode(&self) -> [u8; MARK_LEN] {
        let mut b = [0u8; MARK_LEN];
        b[MARK_MAGIC_OFF..MARK_MAGIC_OFF + 8].copy_from_slice(&MARK_MAGIC);
        b[MARK_VERSION_OFF..MARK_VERSION_OFF + 2].copy_from_slice(&MARK_VERSION.to_le_bytes());
        b[MARK_TIMELINE_OFF..MARK_TIMELINE_OFF + 4].copy_from_slice(&self.timeline.to_le_bytes());
        b[MARK_POOLSET_UUID_OFF..MARK_POOLSET_UUID_OFF + 16].copy_from_slice(&self.poolset_uuid);
        b[MARK_LINEAGE_OFF..MARK_LINEAGE_OFF + 16].copy_from_slice(&self.lineage);
        b[MARK_EPOCH_OFF..MARK_EPOCH_OFF + 4].copy_from_slice(&self.epoch.to_le_bytes());
        b[MARK_RUN_ID_OFF..MARK_RUN_ID_OFF + 8].copy_from_slice(&self.run_id.to_le_bytes());
        let crc = crc32fast::hash(&b[..MARK_CRC_OFF]);
        b[MARK_CRC_OFF..MARK_CRC_OFF + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a mark: its length, magic, version, CRC and
    /// reserved bytes. The error names the field and its offset.
    pub fn decode(b: &[u8]) -> Result<SyncMark, Error> {
        let bad = |field: &'static str, offset: usize, problem: String| Error::Field {
            message: "sync mark",
            field,
            offset,
            problem,
        };
        if b.len() != MARK_LEN {
            return Err(bad(
                "length",
                0,
                format!("{} bytes, a mark has {MARK_LEN}", b.len()),
            ));
        }
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let array = |o: usize| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[o..o + 16]);
            a
        };
        if b[MARK_MAGIC_OFF..MARK_MAGIC_OFF + 8] != MARK_MAGIC {
            return Err(bad(
                "magic",
                MARK_MAGIC_OFF,
                format!("\"{}\", not PSYNCMRK", crate::quote(&b[..8])),
            ));
        }
        let version = u16_at(MARK_VERSION_OFF);
        if version != MARK_VERSION {
            return Err(bad(
                "version",
                MARK_VERSION_OFF,
                format!("{version}, this build reads {MARK_VERSION}"),
            ));
        }
        let stored = u32_at(MARK_CRC_OFF);
        let computed = crc32fast::hash(&b[..MARK_CRC_OFF]);
        if stored != computed {
            return Err(bad(
                "crc",
                MARK_CRC_OFF,
                format!("stored {stored:#010x}, computed {computed:#010x}"),
            ));
        }
        for (off, len) in [
            (MARK_RESERVED_OFF, 2),
            (MARK_RESERVED2_OFF, 4),
            (MARK_RESERVED3_OFF, 4),
        ] {
            if b[off..off + len].iter().any(|&x| x != 0) {
                return Err(bad("reserved", off, "not zero".to_string()));
            }
        }
        let mut run_id = [0u8; 8];
        run_id.copy_from_slice(&b[MARK_RUN_ID_OFF..MARK_RUN_ID_OFF + 8]);
        Ok(SyncMark {
            poolset_uuid: array(MARK_POOLSET_UUID_OFF),
            lineage: array(MARK_LINEAGE_OFF),
            timeline: u32_at(MARK_TIMELINE_OFF),
            epoch: u32_at(MARK_EPOCH_OFF),
            run_id: u64::from_le_bytes(run_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mark() -> SyncMark {
        SyncMark {
            poolset_uuid: [1; 16],
            lineage: [2; 16],
            timeline: 1,
            epoch: 7,
            run_id: 42,
        }
    }

    #[test]
    fn every_damage_is_named_with_its_offset() {
        let good = mark().encode();
        assert_eq!(SyncMark::decode(&good).unwrap(), mark());
        let e = SyncMark::decode(&good[..71]).unwrap_err();
        assert!(e.to_string().contains("71 bytes"), "{e}");
        let mut b = good;
        b[0] = b'X';
        assert_eq!(SyncMark::decode(&b).unwrap_err().offset(), Some(0));
        let mut b = good;
        b[MARK_EPOCH_OFF] ^= 1;
        let e = SyncMark::decode(&b).unwrap_err();
        assert!(e.to_string().contains("crc"), "{e}");
        assert_eq!(e.offset(), Some(MARK_CRC_OFF));
        let mut b = good;
        b[MARK_RESERVED3_OFF] = 1;
        assert_eq!(
            SyncMark::decode(&b).unwrap_err().offset(),
            Some(MARK_RESERVED3_OFF)
        );
    }

    proptest! {
        #[test]
        fn marks_round_trip(
            uuid in any::<[u8; 16]>(),
            lineage in any::<[u8; 16]>(),
            timeline in any::<u32>(),
            epoch in any::<u32>(),
            run_id in any::<u64>(),
        ) {
            let m = SyncMark { poolset_uuid: uuid, lineage, timeline, epoch, run_id };
            prop_assert_eq!(SyncMark::decode(&m.encode()).unwrap(), m);
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(b in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = SyncMark::decode(&b);
        }
    }
}
