//! The shutdown state (SDS), 64 bytes at pool header offset 4024
//! (docs/format.md §6).

use crate::bytes::{array, put, put_u64, u64_le, u8_at};
use crate::checksum::fletcher64;
use crate::Error;

/// Size of the shutdown state.
pub const SDS_SIZE: usize = 64;
/// Offset of `usc`, the summed unsafe-shutdown counts of the replica's devices.
pub const SDS_USC_OFF: usize = 0;
/// Offset of `uuid`, the summed checksums of the devices' id strings.
pub const SDS_UUID_OFF: usize = 8;
/// Offset of the `dirty` byte.
pub const SDS_DIRTY_OFF: usize = 16;
/// Offset of the reserved bytes.
pub const SDS_RESERVED_OFF: usize = 17;
/// Length of the reserved bytes.
pub const SDS_RESERVED_LEN: usize = 39;
/// Offset of the checksum (Fletcher64 over the 64 bytes, this field as zero).
pub const SDS_CSUM_OFF: usize = 56;

const _: () = assert!(SDS_UUID_OFF == SDS_USC_OFF + 8);
const _: () = assert!(SDS_DIRTY_OFF == SDS_UUID_OFF + 8);
const _: () = assert!(SDS_RESERVED_OFF == SDS_DIRTY_OFF + 1);
const _: () = assert!(SDS_CSUM_OFF == SDS_RESERVED_OFF + SDS_RESERVED_LEN);
const _: () = assert!(SDS_SIZE == SDS_CSUM_OFF + 8);

/// Shutdown state as stored, decoded without judgement.
///
/// On storage without unsafe-shutdown counters (every regular file system) a
/// clean SDS is 64 zero bytes, and a pool left open by a crashed process has
/// only `dirty = 1` and checksum `0x0000000C00000001`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sds {
    /// Sum of the unsafe-shutdown counts of the replica's devices.
    pub usc: u64,
    /// Wrapping sum of the Fletcher64 checksums of the devices' id buffers.
    pub uuid: u64,
    /// Non-zero while a process has the pool open.
    pub dirty: u8,
    /// Must be zero.
    pub reserved: [u8; SDS_RESERVED_LEN],
    /// Fletcher64 of the 64 bytes with this field as zero.
    pub checksum: u64,
}

impl Default for Sds {
    fn default() -> Self {
        Sds::ZERO
    }
}

/// The outcome of comparing a stored SDS with the current one (PMDK's
/// `shutdown_state_check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdsVerdict {
    /// The stored state is current and clean: nothing to do.
    Ok,
    /// Fine, but the stored state must be rewritten with
    /// [`Sds::reinitialized`] from the current one.
    Reinit(SdsReinit),
    /// Counters changed while the pool was open: an ADR failure, the
    /// replica's data may be corrupt ("an ADR failure was detected").
    AdrFailure,
}

/// Why a stored SDS needs re-initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdsReinit {
    /// The stored state is all zero but the current one is not.
    StoredZero,
    /// The stored checksum is wrong (a process died while updating it).
    BadChecksum,
    /// The counters match but the pool was not closed.
    NotClosed,
    /// The counters differ but the pool had been closed cleanly.
    ClosedAfterAdrFailure,
}

impl Sds {
    /// 64 zero bytes: a clean SDS on storage without unsafe-shutdown counters.
    pub const ZERO: Sds = Sds {
        usc: 0,
        uuid: 0,
        dirty: 0,
        reserved: [0; SDS_RESERVED_LEN],
        checksum: 0,
    };

    /// Decodes the first 64 bytes of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Sds, Error> {
        let b = bytes.get(..SDS_SIZE).ok_or(Error::ShortBuffer {
            what: "shutdown state",
            len: bytes.len(),
            expected: SDS_SIZE,
        })?;
        Ok(Sds {
            usc: u64_le(b, SDS_USC_OFF),
            uuid: u64_le(b, SDS_UUID_OFF),
            dirty: u8_at(b, SDS_DIRTY_OFF),
            reserved: array(b, SDS_RESERVED_OFF),
            checksum: u64_le(b, SDS_CSUM_OFF),
        })
    }

    /// Encodes with the stored `checksum` as is.
    pub fn encode_raw(&self) -> [u8; SDS_SIZE] {
        let mut b = [0u8; SDS_SIZE];
        put_u64(&mut b, SDS_USC_OFF, self.usc);
        put_u64(&mut b, SDS_UUID_OFF, self.uuid);
        put(&mut b, SDS_DIRTY_OFF, &[self.dirty]);
        put(&mut b, SDS_RESERVED_OFF, &self.reserved);
        put_u64(&mut b, SDS_CSUM_OFF, self.checksum);
        b
    }

    /// Stores a freshly computed checksum in `self.checksum` and encodes.
    pub fn encode(&mut self) -> [u8; SDS_SIZE] {
        self.checksum = self.compute_checksum();
        self.encode_raw()
    }

    /// The checksum these fields should carry.
    pub fn compute_checksum(&self) -> u64 {
        fletcher64(&self.encode_raw(), SDS_CSUM_OFF, None)
    }

    /// Whether the stored checksum matches the fields.
    pub fn checksum_ok(&self) -> bool {
        self.checksum == self.compute_checksum()
    }

    /// Whether all 64 bytes are zero (a clean SDS on non-pmem storage).
    pub fn is_clean_zero(&self) -> bool {
        *self == Sds::ZERO
    }

    /// Whether the dirty byte is set (`pmempool info` "Last shutdown: dirty").
    pub fn is_dirty(&self) -> bool {
        self.dirty != 0
    }

    /// The current state of a replica on storage without unsafe-shutdown
    /// counters or device ids (regular files): all zero (docs/format.md §6).
    pub fn current_non_pmem() -> Sds {
        Sds::ZERO
    }

    /// Adds one part's device to a current state being built, as PMDK does
    /// for each part of a replica: `usc` is added, and the device id buffer
    /// (the reported bytes zero-padded by 1 to 4 bytes to a multiple of 4) is
    /// checksummed and added to `uuid`. An unsupported device contributes
    /// `usc = 0` and an empty id, i.e. nothing. The checksum is refreshed.
    pub fn add_part(&mut self, usc: u64, device_id: &[u8]) {
        let padded_len = device_id.len() + (4 - device_id.len() % 4);
        let mut buf = vec![0u8; padded_len];
        put(&mut buf, 0, device_id);
        // The checksum slot lies outside the id buffer, so nothing is excluded.
        let id_sum = fletcher64(&buf, usize::MAX, None);
        self.usc = self.usc.wrapping_add(usc);
        self.uuid = self.uuid.wrapping_add(id_sum);
        self.checksum = self.compute_checksum();
    }

    /// Sets the dirty byte and refreshes the checksum (done on open).
    pub fn set_dirty(&mut self) {
        self.dirty = 1;
        self.checksum = self.compute_checksum();
    }

    /// Clears the dirty byte and refreshes the checksum (done on close).
    pub fn clear_dirty(&mut self) {
        self.dirty = 0;
        self.checksum = self.compute_checksum();
    }

    /// The re-initialised state: zero, then `usc` and `uuid` from `current`,
    /// clean, with a fresh checksum.
    pub fn reinitialized(current: &Sds) -> Sds {
        let mut s = Sds {
            usc: current.usc,
            uuid: current.uuid,
            ..Sds::ZERO
        };
        s.checksum = s.compute_checksum();
        s
    }

    /// Judges a stored state against the replica's current one
    /// (docs/format.md §6).
    ///
    /// ```
    /// use poolsync_header::{Sds, SdsVerdict};
    /// let current = Sds::current_non_pmem();
    /// assert_eq!(Sds::compare(&Sds::ZERO, &current), SdsVerdict::Ok);
    /// let mut crashed = Sds::ZERO;
    /// crashed.set_dirty();
    /// assert!(matches!(Sds::compare(&crashed, &current), SdsVerdict::Reinit(_)));
    /// ```
    pub fn compare(stored: &Sds, current: &Sds) -> SdsVerdict {
        if stored.is_clean_zero() && !current.is_clean_zero() {
            return SdsVerdict::Reinit(SdsReinit::StoredZero);
        }
        if !stored.checksum_ok() {
            return SdsVerdict::Reinit(SdsReinit::BadChecksum);
        }
        let same = stored.usc == current.usc && stored.uuid == current.uuid;
        match (same, stored.is_dirty()) {
            (true, false) => SdsVerdict::Ok,
            (true, true) => SdsVerdict::Reinit(SdsReinit::NotClosed),
            (false, false) => SdsVerdict::Reinit(SdsReinit::ClosedAfterAdrFailure),
            (false, true) => SdsVerdict::AdrFailure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_non_pmem_vector() {
        let mut s = Sds::ZERO;
        s.set_dirty();
        assert_eq!(s.checksum, 0x0000_000C_0000_0001);
        let bytes = s.encode_raw();
        assert_eq!(bytes[16], 1);
        assert_eq!(&bytes[56..], &0x0000_000C_0000_0001u64.to_le_bytes());
        assert_eq!(Sds::decode(&bytes), Ok(s));
        s.clear_dirty();
        assert!(s.is_clean_zero());
        assert_eq!(Sds::ZERO.compute_checksum(), 0);
    }

    #[test]
    fn decode_needs_64_bytes() {
        assert_eq!(
            Sds::decode(&[0u8; 63]),
            Err(Error::ShortBuffer {
                what: "shutdown state",
                len: 63,
                expected: 64
            })
        );
    }

    #[test]
    fn unsupported_device_adds_nothing() {
        let mut s = Sds::current_non_pmem();
        s.add_part(0, &[]);
        s.add_part(0, &[]);
        assert!(s.is_clean_zero());
    }

    #[test]
    fn device_id_padding() {
        // "ab" is padded to 4 bytes, "abcd" to 8: both checksum one word "ab\0\0"
        // resp. "abcd" followed by a zero word.
        let mut a = Sds::ZERO;
        a.add_part(3, b"ab");
        let w = u64::from(u32::from_le_bytes(*b"ab\0\0"));
        assert_eq!(a.uuid, (w << 32) | w);
        assert_eq!(a.usc, 3);
        assert!(a.checksum_ok());
        let mut b = Sds::ZERO;
        b.add_part(0, b"abcd");
        let w = u64::from(u32::from_le_bytes(*b"abcd"));
        // lo = w, hi = w + w (the zero pad word adds lo again).
        assert_eq!(b.uuid, ((2 * w) << 32) | w);
    }

    #[test]
    fn verdicts() {
        let zero = Sds::ZERO;
        let mut cur = Sds::ZERO;
        cur.add_part(5, b"nvdimm0");
        let mut stale = Sds::ZERO;
        stale.add_part(4, b"nvdimm0");
        let mut stale_dirty = stale;
        stale_dirty.set_dirty();
        let mut cur_dirty = Sds::reinitialized(&cur);
        cur_dirty.set_dirty();
        let mut broken = Sds::reinitialized(&cur);
        broken.checksum ^= 1;

        assert_eq!(Sds::compare(&zero, &zero), SdsVerdict::Ok);
        assert_eq!(
            Sds::compare(&zero, &cur),
            SdsVerdict::Reinit(SdsReinit::StoredZero)
        );
        assert_eq!(
            Sds::compare(&broken, &cur),
            SdsVerdict::Reinit(SdsReinit::BadChecksum)
        );
        assert_eq!(
            Sds::compare(&Sds::reinitialized(&cur), &cur),
            SdsVerdict::Ok
        );
        assert_eq!(
            Sds::compare(&cur_dirty, &cur),
            SdsVerdict::Reinit(SdsReinit::NotClosed)
        );
        assert_eq!(
            Sds::compare(&stale, &cur),
            SdsVerdict::Reinit(SdsReinit::ClosedAfterAdrFailure)
        );
        assert_eq!(Sds::compare(&stale_dirty, &cur), SdsVerdict::AdrFailure);
        // On non-pmem a crashed pool is only "not closed", never an ADR failure.
        let mut crashed = Sds::ZERO;
        crashed.set_dirty();
        assert_eq!(
            Sds::compare(&crashed, &Sds::current_non_pmem()),
            SdsVerdict::Reinit(SdsReinit::NotClosed)
        );
        let re = Sds::reinitialized(&stale_dirty);
        assert_eq!((re.usc, re.uuid, re.dirty), (4, stale.uuid, 0));
        assert!(re.checksum_ok());
    }
}
