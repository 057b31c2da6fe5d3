//! The greeting each side sends first, and the version negotiation.
//!
//! The server's greeting is the first thing it writes, so a remote shell
//! that prints anything before it (a profile's banner, `poolsync: command
//! not found`) is caught on the first bytes: [`Hello::decode`] refuses
//! them as [`Error::NotAGreeting`], quoting what arrived.

use crate::Error;

/// The greeting's magic number.
pub const MAGIC: [u8; 8] = *b"PSYNCWIR";
/// Bytes of a greeting.
pub const HELLO_LEN: usize = 32;

/// Offset of the magic number.
pub const HELLO_MAGIC_OFF: usize = 0;
/// Offset of the role byte.
pub const HELLO_ROLE_OFF: usize = 8;
/// Offset of a reserved byte.
pub const HELLO_RESERVED_OFF: usize = 9;
/// Offset of the lowest version the sender speaks.
pub const HELLO_MIN_VERSION_OFF: usize = 10;
/// Offset of the highest version the sender speaks.
pub const HELLO_MAX_VERSION_OFF: usize = 12;
/// Offset of two reserved bytes.
pub const HELLO_RESERVED2_OFF: usize = 14;
/// Offset of the largest frame payload the sender accepts.
pub const HELLO_MAX_PAYLOAD_OFF: usize = 16;
/// Offset of the feature bits.
pub const HELLO_FEATURES_OFF: usize = 20;
/// Offset of the CRC-32 of bytes 0 .. 24.
pub const HELLO_CRC_OFF: usize = 24;
/// Offset of four reserved bytes.
pub const HELLO_RESERVED3_OFF: usize = 28;

const _: () = assert!(HELLO_MAGIC_OFF + 8 == HELLO_ROLE_OFF);
const _: () = assert!(HELLO_ROLE_OFF + 1 == HELLO_RESERVED_OFF);
const _: () = assert!(HELLO_RESERVED_OFF + 1 == HELLO_MIN_VERSION_OFF);
const _: () = assert!(HELLO_MIN_VERSION_OFF + 2 == HELLO_MAX_VERSION_OFF);
const _: () = assert!(HELLO_MAX_VERSION_OFF + 2 == HELLO_RESERVED2_OFF);
const _: () = assert!(HELLO_RESERVED2_OFF + 2 == HELLO_MAX_PAYLOAD_OFF);
const _: () = assert!(HELLO_MAX_PAYLOAD_OFF + 4 == HELLO_FEATURES_OFF);
const _: () = assert!(HELLO_FEATURES_OFF + 4 == HELLO_CRC_OFF);
const _: () = assert!(HELLO_CRC_OFF + 4 == HELLO_RESERVED3_OFF);
const _: () = assert!(HELLO_RESERVED3_OFF + 4 == HELLO_LEN);

/// The lowest protocol version this build speaks.
pub const MIN_VERSION: u16 = 2;
/// The highest protocol version this build speaks.
pub const MAX_VERSION: u16 = 2;

/// Feature bit: the sender decompresses zstd payloads (every version-1
/// peer must set it).
pub const FEATURE_ZSTD: u32 = 1;
/// Feature bits this build knows.
pub const KNOWN_FEATURES: u32 = FEATURE_ZSTD;

/// Which end of the connection sent a greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that runs `ssh` and drives the session.
    Client,
    /// `poolsync serve`.
    Server,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Client => 1,
            Role::Server => 2,
        }
    }
}

/// A greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Who sends it.
    pub role: Role,
    /// The lowest version the sender speaks (at least 1).
    pub min_version: u16,
    /// The highest version the sender speaks.
    pub max_version: u16,
    /// The largest frame payload the sender accepts, from
    /// [`crate::MIN_PAYLOAD`] to [`crate::MAX_PAYLOAD`].
    pub max_payload: u32,
    /// Feature bits ([`FEATURE_ZSTD`]).
    pub features: u32,
}

impl Hello {
    /// This build's greeting for `role`.
    pub fn ours(role: Role) -> Hello {
        Hello {
            role,
            min_version: MIN_VERSION,
            max_version: MAX_VERSION,
            max_payload: crate::MAX_PAYLOAD,
            features: KNOWN_FEATURES,
        }
    }

    /// The greeting's bytes.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[HELLO_ROLE_OFF] = self.role.byte();
        b[HELLO_MIN_VERSION_OFF..HELLO_MIN_VERSION_OFF + 2]
            .copy_from_slice(&self.min_version.to_le_bytes());
        b[HELLO_MAX_VERSION_OFF..HELLO_MAX_VERSION_OFF + 2]
            .copy_from_slice(&self.max_version.to_le_bytes());
        b[HELLO_MAX_PAYLOAD_OFF..HELLO_MAX_PAYLOAD_OFF + 4]
            .copy_from_slice(&self.max_payload.to_le_bytes());
        b[HELLO_FEATURES_OFF..HELLO_FEATURES_OFF + 4].copy_from_slice(&self.features.to_le_bytes());
        let crc = crc32fast::hash(&b[..HELLO_CRC_OFF]);
        b[HELLO_CRC_OFF..HELLO_CRC_OFF + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes the first bytes received from a peer, expecting a greeting
    /// from `role`. Fewer than [`HELLO_LEN`] bytes (the peer closed the
    /// connection early) or bytes that do not start with the magic number
    /// are [`Error::NotAGreeting`], quoting them.
    pub fn decode(bytes: &[u8], role: Role) -> Result<Hello, Error> {
        let not = || Error::NotAGreeting {
            received: bytes.get(..HELLO_LEN).unwrap_or(bytes).to_vec(),
        };
        let b: &[u8; HELLO_LEN] = bytes
            .get(..HELLO_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(not)?;
        if b[..8] != MAGIC {
            return Err(not());
        }
        let field = |field: &'static str, offset: usize, problem: String| Error::Hello {
            field,
            offset,
            problem,
        };
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let stored = u32_at(HELLO_CRC_OFF);
        let computed = crc32fast::hash(&b[..HELLO_CRC_OFF]);
        if stored != computed {
            return Err(field(
                "checksum",
                HELLO_CRC_OFF,
                format!("stored {stored:#010x}, computed {computed:#010x}"),
            ));
        }
        if b[HELLO_ROLE_OFF] != role.byte() {
            return Err(field(
                "role",
                HELLO_ROLE_OFF,
                format!(
                    "{} (expected {}: the greeting of a {})",
                    b[HELLO_ROLE_OFF],
                    role.byte(),
                    match role {
                        Role::Client => "client",
                        Role::Server => "server",
                    }
                ),
            ));
        }
        for (off, len) in [
            (HELLO_RESERVED_OFF, 1),
            (HELLO_RESERVED2_OFF, 2),
            (HELLO_RESERVED3_OFF, 4),
        ] {
            if let Some(i) = b[off..off + len].iter().position(|&x| x != 0) {
                return Err(field(
                    "reserved",
                    off + i,
                    "reserved byte is not zero".into(),
                ));
            }
        }
        let min_version = u16_at(HELLO_MIN_VERSION_OFF);
        let max_version = u16_at(HELLO_MAX_VERSION_OFF);
        if min_version == 0 || max_version < min_version {
            return Err(field(
                "versions",
                HELLO_MIN_VERSION_OFF,
                format!("{min_version} to {max_version} is not a range of versions"),
            ));
        }
        let max_payload = u32_at(HELLO_MAX_PAYLOAD_OFF);
        if !(crate::MIN_PAYLOAD..=crate::MAX_PAYLOAD).contains(&max_payload) {
            return Err(field(
                "max payload",
                HELLO_MAX_PAYLOAD_OFF,
                format!(
                    "{max_payload} is outside {} to {}",
                    crate::MIN_PAYLOAD,
                    crate::MAX_PAYLOAD
                ),
            ));
        }
        let features = u32_at(HELLO_FEATURES_OFF);
        Ok(Hello {
            role,
            min_version,
            max_version,
            max_payload,
            features,
        })
    }
}

/// What two greetings agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The protocol version both speak: the highest they share.
    pub version: u16,
    /// The largest payload either side sends: the smaller of the two
    /// limits.
    pub max_payload: u32,
}

/// The highest version and the payload limit both greetings allow; a
/// version-1 peer must decompress zstd.
pub fn negotiate(ours: &Hello, theirs: &Hello) -> Result<Agreed, Error> {
    let low = ours.min_version.max(theirs.min_version);
    let high = ours.max_version.min(theirs.max_version);
    if low > high {
        return Err(Error::NoCommonVersion {
            ours_min: ours.min_version,
            ours_max: ours.max_version,
            theirs_min: theirs.min_version,
            theirs_max: theirs.max_version,
        });
    }
    if theirs.features & FEATURE_ZSTD == 0 {
        return Err(Error::Hello {
            field: "features",
            offset: HELLO_FEATURES_OFF,
            problem: "the peer does not decompress zstd, which version 1 requires".into(),
        });
    }
    Ok(Agreed {
        version: high,
        max_payload: ours.max_payload.min(theirs.max_payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_before_the_greeting_is_quoted() {
        let err = Hello::decode(b"Welcome to host b!\nLast login: Mon", Role::Server).unwrap_err();
        assert_eq!(
            err,
            Error::NotAGreeting {
                received: b"Welcome to host b!\nLast login: M".to_vec()
            }
        );
        let short = Hello::decode(b"sh: 1: poo", Role::Server).unwrap_err();
        assert!(matches!(short, Error::NotAGreeting { received } if received == b"sh: 1: poo"));
    }

    #[test]
    fn a_greeting_round_trips_and_is_checked() {
        let h = Hello::ours(Role::Server);
        let b = h.encode();
        assert_eq!(Hello::decode(&b, Role::Server).unwrap(), h);
        assert!(matches!(
            Hello::decode(&b, Role::Client),
            Err(Error::Hello { field: "role", .. })
        ));
        let mut bad = b;
        bad[HELLO_FEATURES_OFF] ^= 2;
        assert!(matches!(
            Hello::decode(&bad, Role::Server),
            Err(Error::Hello {
                field: "checksum",
                ..
            })
        ));
    }

    #[test]
    fn negotiation_takes_the_highest_common_version() {
        let ours = Hello::ours(Role::Client);
        let mut theirs = Hello::ours(Role::Server);
        theirs.max_version = 7;
        theirs.max_payload = crate::MIN_PAYLOAD;
        let a = negotiate(&ours, &theirs).unwrap();
        assert_eq!(a.version, MAX_VERSION);
        assert_eq!(a.max_payload, crate::MIN_PAYLOAD);
        theirs.min_version = MAX_VERSION + 1;
        let e = negotiate(&ours, &theirs).unwrap_err();
        assert!(e.to_string().contains("no protocol version in common"));
        let mut old = Hello::ours(Role::Server);
        old.features = 0;
        assert!(negotiate(&ours, &old).is_err());
    }
}
