//! Feature masks of the pool header (docs/format.md §3) and how `pmempool info`
//! prints them.

use serde::Serialize;

/// compat `CHECK_BAD_BLOCKS`: query bad blocks on create, open and sync.
pub const FEAT_CHECK_BAD_BLOCKS: u32 = 0x1;
/// incompat `SINGLEHDR`: the pool set has `OPTION SINGLEHDR`.
pub const FEAT_SINGLEHDR: u32 = 0x1;
/// incompat `CKSUM_2K`: the header checksum covers only bytes 0..2048.
pub const FEAT_CKSUM_2K: u32 = 0x2;
/// incompat `SDS` (`SHUTDOWN_STATE`): shutdown-state tracking is active.
pub const FEAT_SDS: u32 = 0x4;

/// compat bits PMDK 1.12.1 knows; others are ignored at open.
pub const KNOWN_COMPAT: u32 = FEAT_CHECK_BAD_BLOCKS;
/// incompat bits PMDK 1.12.1 (built with ndctl) knows; others refuse the open.
pub const KNOWN_INCOMPAT: u32 = FEAT_SINGLEHDR | FEAT_CKSUM_2K | FEAT_SDS;
/// ro_compat bits PMDK 1.12.1 knows (none); others force read-only.
pub const KNOWN_RO_COMPAT: u32 = 0;

/// The three feature masks at header offsets 12, 16 and 20.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Features {
    /// "May" features: unknown bits are ignored.
    pub compat: u32,
    /// "Must support" features: unknown bits refuse the open.
    pub incompat: u32,
    /// Unknown bits force read-only, which libpmemobj refuses.
    pub ro_compat: u32,
}

impl Features {
    /// What the Debian PMDK 1.12.1 build writes at create: compat
    /// `CHECK_BAD_BLOCKS`, incompat `CKSUM_2K | SDS` (add [`FEAT_SINGLEHDR`]
    /// for `OPTION SINGLEHDR`).
    pub const DEFAULT: Features = Features {
        compat: FEAT_CHECK_BAD_BLOCKS,
        incompat: FEAT_CKSUM_2K | FEAT_SDS,
        ro_compat: 0,
    };

    /// The bits PMDK 1.12.1 does not know, per mask.
    pub fn unknown(&self) -> Features {
        Features {
            compat: self.compat & !KNOWN_COMPAT,
            incompat: self.incompat & !KNOWN_INCOMPAT,
            ro_compat: self.ro_compat & !KNOWN_RO_COMPAT,
        }
    }

    /// Whether incompat `SINGLEHDR` is set.
    pub fn singlehdr(&self) -> bool {
        self.incompat & FEAT_SINGLEHDR != 0
    }

    /// Whether incompat `CKSUM_2K` is set.
    pub fn cksum_2k(&self) -> bool {
        self.incompat & FEAT_CKSUM_2K != 0
    }

    /// Whether incompat `SDS` is set.
    pub fn sds(&self) -> bool {
        self.incompat & FEAT_SDS != 0
    }
}

/// A feature `pmempool feature` names (docs/format.md §3, §24): one bit of
/// one of the three masks. It serializes as its name (`"CKSUM_2K"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// incompat `SINGLEHDR`: can only be queried (transform changes it).
    SingleHdr,
    /// incompat `CKSUM_2K`: the header checksum stops at byte 2048.
    Cksum2k,
    /// incompat `SHUTDOWN_STATE` (`SDS`): the shutdown state is maintained.
    ShutdownState,
    /// compat `CHECK_BAD_BLOCKS`: bad blocks are looked for.
    CheckBadBlocks,
}

impl Feature {
    /// Every feature, in pmempool's order.
    pub const ALL: [Feature; 4] = [
        Feature::SingleHdr,
        Feature::Cksum2k,
        Feature::ShutdownState,
        Feature::CheckBadBlocks,
    ];

    /// The name `pmempool feature` accepts and prints, e.g. `CKSUM_2K`.
    pub fn name(self) -> &'static str {
        match self {
            Feature::SingleHdr => "SINGLEHDR",
            Feature::Cksum2k => "CKSUM_2K",
            Feature::ShutdownState => "SHUTDOWN_STATE",
            Feature::CheckBadBlocks => "CHECK_BAD_BLOCKS",
        }
    }

    /// The feature named exactly `name`, as pmempool 1.12.1 matches it:
    /// case matters, and `CHECKSUM_2K` (the manual page's spelling) is not
    /// a name (docs/format.md §24.1).
    pub fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The feature masks with only this feature's bit set.
    pub fn mask(self) -> Features {
        let (compat, incompat) = match self {
            Feature::SingleHdr => (0, FEAT_SINGLEHDR),
            Feature::Cksum2k => (0, FEAT_CKSUM_2K),
            Feature::ShutdownState => (0, FEAT_SDS),
            Feature::CheckBadBlocks => (FEAT_CHECK_BAD_BLOCKS, 0),
        };
        Features {
            compat,
            incompat,
            ro_compat: 0,
        }
    }

    /// Whether `features` has this feature.
    pub fn is_set(self, features: &Features) -> bool {
        let m = self.mask();
        features.compat & m.compat != 0 || features.incompat & m.incompat != 0
    }

    /// `features` with this feature's bit set to `on`, the other bits as they are.
    pub fn apply(self, features: Features, on: bool) -> Features {
        let m = self.mask();
        if on {
            Features {
                compat: features.compat | m.compat,
                incompat: features.incompat | m.incompat,
                ro_compat: features.ro_compat,
            }
        } else {
            Features {
                compat: features.compat & !m.compat,
                incompat: features.incompat & !m.incompat,
                ro_compat: features.ro_compat,
            }
        }
    }

    /// Whether `pmempool feature` can enable and disable it: all but
    /// `SINGLEHDR`, which only a transform changes.
    pub fn is_changeable(self) -> bool {
        self != Feature::SingleHdr
    }

    /// The feature that must be enabled before this one is enabled
    /// (`SHUTDOWN_STATE` needs `CKSUM_2K`: the shutdown state lies outside
    /// the 2K checksum range, so that updating it never invalidates the
    /// header).
    pub fn requires(self) -> Option<Feature> {
        match self {
            Feature::ShutdownState => Some(Feature::Cksum2k),
            _ => None,
        }
    }

    /// The feature that must be disabled before this one is disabled (the
    /// reverse of [`Feature::requires`]).
    pub fn required_by(self) -> Option<Feature> {
        Feature::ALL
            .into_iter()
            .find(|f| f.requires() == Some(self))
    }
}

impl Serialize for Feature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl std::fmt::Display for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The three masks as libpmempool prints them:
/// `{compat 0x1, incompat 0x6, ro_compat 0x0}`.
pub fn format_features(f: &Features) -> String {
    format!(
        "{{compat {:#x}, incompat {:#x}, ro_compat {:#x}}}",
        f.compat, f.incompat, f.ro_compat
    )
}

/// pmempool's feature names in its own order (`SINGLEHDR` first).
const INCOMPAT_NAMES: [(u32, &str); 3] = [
    (FEAT_SINGLEHDR, "SINGLEHDR"),
    (FEAT_CKSUM_2K, "CKSUM_2K"),
    (FEAT_SDS, "SHUTDOWN_STATE"),
];
const COMPAT_NAMES: [(u32, &str); 1] = [(FEAT_CHECK_BAD_BLOCKS, "CHECK_BAD_BLOCKS")];

fn names(mask: u32, table: &[(u32, &'static str)]) -> Vec<&'static str> {
    table
        .iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// Names of the known incompat bits set in `mask`, in pmempool's order
/// (`SINGLEHDR`, `CKSUM_2K`, `SHUTDOWN_STATE`); these are also the names
/// `pmempool feature` accepts.
pub fn incompat_names(mask: u32) -> Vec<&'static str> {
    names(mask, &INCOMPAT_NAMES)
}

/// Names of the known compat bits set in `mask` (`CHECK_BAD_BLOCKS`).
///
/// `pmempool info` does not print these; see [`format_compat`].
pub fn compat_names(mask: u32) -> Vec<&'static str> {
    names(mask, &COMPAT_NAMES)
}

/// The `Mandatory features` value of `pmempool info`: `0x0` for an empty
/// mask, else the hex value and the names in brackets, with `?UNKNOWN_FLAG?`
/// last when unknown bits are set, e.g. `0x6 [CKSUM_2K, SHUTDOWN_STATE]`.
pub fn format_incompat(mask: u32) -> String {
    if mask == 0 {
        return "0x0".to_owned();
    }
    let mut items = incompat_names(mask);
    if mask & !KNOWN_INCOMPAT != 0 {
        items.push("?UNKNOWN_FLAG?");
    }
    format!("{mask:#x} [{}]", items.join(", "))
}

/// The `Not mandatory features` value of `pmempool info`: the hex value only
/// (pmempool 1.12.1 prints `0x1` without the name `CHECK_BAD_BLOCKS`).
pub fn format_compat(mask: u32) -> String {
    format!("{mask:#x}")
}

/// The `Forced RO` value of `pmempool info`: the hex value only.
pub fn format_ro_compat(mask: u32) -> String {
    format!("{mask:#x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pmempool_info_wording() {
        assert_eq!(format_incompat(0), "0x0");
        assert_eq!(format_incompat(0x6), "0x6 [CKSUM_2K, SHUTDOWN_STATE]");
        assert_eq!(
            format_incompat(0x7),
            "0x7 [SINGLEHDR, CKSUM_2K, SHUTDOWN_STATE]"
        );
        assert_eq!(format_incompat(0x2), "0x2 [CKSUM_2K]");
        assert_eq!(format_incompat(0x8), "0x8 [?UNKNOWN_FLAG?]");
        assert_eq!(format_incompat(0x1a), "0x1a [CKSUM_2K, ?UNKNOWN_FLAG?]");
        assert_eq!(format_compat(0x1), "0x1");
        assert_eq!(format_compat(0), "0x0");
        assert_eq!(format_ro_compat(0x10), "0x10");
        assert_eq!(compat_names(0x3), ["CHECK_BAD_BLOCKS"]);
        assert_eq!(incompat_names(0x5), ["SINGLEHDR", "SHUTDOWN_STATE"]);
    }

    #[test]
    fn feature_names_are_pmempools() {
        let names: Vec<&str> = Feature::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            [
                "SINGLEHDR",
                "CKSUM_2K",
                "SHUTDOWN_STATE",
                "CHECK_BAD_BLOCKS"
            ]
        );
        for f in Feature::ALL {
            assert_eq!(Feature::from_name(f.name()), Some(f));
        }
        for bad in ["CHECKSUM_2K", "cksum_2k", "SDS", "", " CKSUM_2K"] {
            assert_eq!(Feature::from_name(bad), None, "{bad:?}");
        }
        assert_eq!(Feature::ShutdownState.requires(), Some(Feature::Cksum2k));
        assert_eq!(Feature::Cksum2k.required_by(), Some(Feature::ShutdownState));
        assert_eq!(Feature::CheckBadBlocks.requires(), None);
        assert!(!Feature::SingleHdr.is_changeable());
    }

    #[test]
    fn features_toggle_one_bit() {
        let f = Features::DEFAULT;
        assert!(Feature::ShutdownState.is_set(&f));
        assert!(Feature::CheckBadBlocks.is_set(&f));
        assert!(!Feature::SingleHdr.is_set(&f));
        let off = Feature::ShutdownState.apply(f, false);
        assert_eq!(off.incompat, FEAT_CKSUM_2K);
        assert_eq!(off.compat, f.compat);
        let bb = Feature::CheckBadBlocks.apply(f, false);
        assert_eq!((bb.compat, bb.incompat), (0, f.incompat));
        assert_eq!(Feature::CheckBadBlocks.apply(bb, true), f);
        assert_eq!(
            format_features(&f),
            "{compat 0x1, incompat 0x6, ro_compat 0x0}"
        );
    }

    #[test]
    fn unknown_bits() {
        let f = Features {
            compat: 0x3,
            incompat: 0xF,
            ro_compat: 0x1,
        };
        assert_eq!(
            f.unknown(),
            Features {
                compat: 0x2,
                incompat: 0x8,
                ro_compat: 0x1
            }
        );
        assert_eq!(Features::DEFAULT.unknown(), Features::default());
        assert!(f.singlehdr() && f.cksum_2k() && f.sds());
    }
}
