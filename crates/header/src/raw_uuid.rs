//! UUIDs as stored in pool headers: 16 raw bytes in GUID (mixed-endian) order.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::Error;

/// A UUID as the 16 raw bytes stored on media.
///
/// PMDK stores UUIDs in "GUID" order (docs/format.md §5): bytes 0–3 are
/// `time_low` as a little-endian `u32`, bytes 4–5 `time_mid` and 6–7
/// `time_hi_and_version` as little-endian `u16`s, then `clock_seq_hi`,
/// `clock_seq_low` and the six node bytes as they are. The canonical text form
/// that `pmempool info` prints is built from those fields, so it is not the
/// bytes in order.
///
/// ```
/// use poolsync_header::RawUuid;
/// let raw = RawUuid([
///     0x1b, 0x3b, 0x48, 0x73, 0x70, 0xf8, 0x9b, 0x42,
///     0xb5, 0x94, 0x6b, 0x55, 0x2d, 0xa6, 0x77, 0x46,
/// ]);
/// assert_eq!(raw.to_canonical(), "73483b1b-f870-429b-b594-6b552da67746");
/// assert_eq!(RawUuid::from_canonical("73483b1b-f870-429b-b594-6b552da67746"), Ok(raw));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawUuid(pub [u8; 16]);

impl RawUuid {
    /// The all-zero UUID.
    pub const NIL: RawUuid = RawUuid([0; 16]);

    /// Canonical lowercase text form, as `pmempool info` prints it
    /// (docs/format.md §5).
    pub fn to_canonical(&self) -> String {
        self.to_uuid().hyphenated().to_string()
    }

    /// Parses the canonical 36-character hyphenated form (either case) into
    /// the on-media byte order.
    pub fn from_canonical(text: &str) -> Result<RawUuid, Error> {
        let invalid = || Error::InvalidUuid {
            text: text.chars().take(64).collect(),
        };
        if text.len() != 36 {
            return Err(invalid());
        }
        let parsed = uuid::Uuid::try_parse(text).map_err(|_| invalid())?;
        Ok(RawUuid::from_uuid(parsed))
    }

    /// Whether all 16 bytes are zero.
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Converts to a [`uuid::Uuid`] whose fields match what pmempool prints.
    pub fn to_uuid(&self) -> uuid::Uuid {
        uuid::Uuid::from_bytes_le(self.0)
    }

    /// Converts a [`uuid::Uuid`] (for example a fresh `Uuid::new_v4()`) into
    /// the on-media byte order.
    pub fn from_uuid(u: uuid::Uuid) -> RawUuid {
        RawUuid(u.to_bytes_le())
    }
}

impl From<uuid::Uuid> for RawUuid {
    fn from(u: uuid::Uuid) -> Self {
        RawUuid::from_uuid(u)
    }
}

impl fmt::Display for RawUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_uuid().hyphenated(), f)
    }
}

/// Serialized as the canonical text form.
impl Serialize for RawUuid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_example_prints_in_guid_order() {
        let raw = RawUuid([
            0x1b, 0x3b, 0x48, 0x73, 0x70, 0xf8, 0x9b, 0x42, 0xb5, 0x94, 0x6b, 0x55, 0x2d, 0xa6,
            0x77, 0x46,
        ]);
        assert_eq!(raw.to_canonical(), "73483b1b-f870-429b-b594-6b552da67746");
        assert_eq!(raw.to_string(), raw.to_canonical());
        assert!(!raw.is_nil());
        assert!(RawUuid::NIL.is_nil());
    }

    #[test]
    fn parse_accepts_uppercase_and_rejects_other_forms() {
        let a = RawUuid::from_canonical("73483B1B-F870-429B-B594-6B552DA67746");
        let b = RawUuid::from_canonical("73483b1b-f870-429b-b594-6b552da67746");
        assert_eq!(a, b);
        assert!(RawUuid::from_canonical("73483b1bf870429bb5946b552da67746").is_err());
        assert!(RawUuid::from_canonical("73483b1b-f870-429b-b594-6b552da6774g").is_err());
        assert!(RawUuid::from_canonical("").is_err());
        assert!(RawUuid::from_canonical("é3483b1b-f870-429b-b594-6b552da6774").is_err());
    }
}
