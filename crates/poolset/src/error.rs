//! The crate's one error type and PMDK's parse error reasons.

use std::fmt;

/// Why a pool set was rejected.
///
/// Parse errors carry the 1-based line PMDK reports them at (errors found at
/// end of file: last line + 1). Size errors come from
/// [`PoolSet::validate_obj_sizes`](crate::PoolSet::validate_obj_sizes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not a pool set PMDK 1.12.1 accepts.
    #[error("line {line}: {reason}{}", hint_suffix(hint))]
    Parse {
        /// 1-based line number, as PMDK prints it after the reason.
        line: usize,
        /// What is wrong, with PMDK's text.
        reason: ParseReason,
        /// How to fix it, when the line shows what was meant.
        hint: Option<Hint>,
    },
    /// A part is smaller than `PMEMOBJ_MIN_PART` (PMDK: "size X smaller
    /// than Y" at create time).
    #[error("line {line}: size {size} smaller than {min}")]
    PartTooSmall {
        /// Line of the part (0 for sets built in code).
        line: usize,
        /// Replica index.
        replica: usize,
        /// Part index within the replica.
        part: usize,
        /// The configured size of the part.
        size: u64,
        /// The minimum, [`OBJ_MIN_PART`](crate::OBJ_MIN_PART).
        min: u64,
    },
    /// The net pool size is smaller than `PMEMOBJ_MIN_POOL`. PMDK 1.12.1
    /// reports this check for ordinary pool sets as "reservation pool size X
    /// smaller than Y" (the reservation equals the net size there) and as
    /// "net pool size X smaller than Y" for directory pool sets.
    #[error("net pool size {size} smaller than {min}")]
    PoolTooSmall {
        /// The net pool size (docs/format.md §14.1) of the smallest local
        /// replica.
        size: u64,
        /// The minimum, [`OBJ_MIN_POOL`](crate::OBJ_MIN_POOL).
        min: u64,
    },
}

impl Error {
    /// The 1-based line the error is reported at; 0 when the error is not
    /// tied to a line ([`Error::PoolTooSmall`], or a set built in code).
    pub fn line(&self) -> usize {
        match self {
            Error::Parse { line, .. } | Error::PartTooSmall { line, .. } => *line,
            Error::PoolTooSmall { .. } => 0,
        }
    }

    /// The message without the line: PMDK's reason, e.g. "incorrect format
    /// of size", followed by the [`Hint`] if there is one.
    pub fn reason(&self) -> String {
        match self {
            Error::Parse { reason, hint, .. } => format!("{reason}{}", hint_suffix(hint)),
            Error::PartTooSmall { size, min, .. } => format!("size {size} smaller than {min}"),
            Error::PoolTooSmall { .. } => self.to_string(),
        }
    }

    /// The parse reason, for parse errors.
    pub fn parse_reason(&self) -> Option<ParseReason> {
        match self {
            Error::Parse { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// The hint, for parse errors that have one.
    pub fn hint(&self) -> Option<Hint> {
        match self {
            Error::Parse { hint, .. } => *hint,
            _ => None,
        }
    }
}

/// `; <hint>` after PMDK's reason, or nothing.
fn hint_suffix(hint: &Option<Hint>) -> String {
    hint.map(|h| format!("; {h}")).unwrap_or_default()
}

/// What poolsync adds to PMDK's reason when the rejected line shows what
/// was meant. PMDK's text always comes first, unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hint {
    /// A keyword spelled wrong or in the wrong case (`REPLCIA`, `replica`,
    /// `OPTION SINGLEHEADER`): the keyword meant.
    DidYouMean(&'static str),
    /// A size with an unknown unit (`32m`): the units PMDK knows.
    SizeUnits,
}

/// The units a size may carry, as PMDK's `util_parse_size` knows them.
pub const SIZE_UNITS_HELP: &str = "a size is a whole number with an optional unit, \
    B, K, M, G, T, P or KiB, MiB, GiB, TiB, PiB (powers of 1024) or kB, MB, GB, TB, PB \
    (powers of 1000); units are case-sensitive";

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hint::DidYouMean(keyword) => write!(f, "did you mean '{keyword}'?"),
            Hint::SizeUnits => f.write_str(SIZE_UNITS_HELP),
        }
    }
}

/// PMDK's parse error reasons (docs/format.md §13.7). [`fmt::Display`] prints
/// PMDK's exact text.
///
/// PMDK's "cannot determine size of a part" is absent: it needs I/O (an
/// `AUTO` size on something that is not a Device DAX) and belongs to the
/// engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseReason {
    /// The first line is not exactly `PMEMPOOLSET`.
    FirstLine,
    /// A line starts with `REPLICA` followed by something other than a blank.
    ReplicaExpected,
    /// A part line without exactly two tokens, or a remote replica line with
    /// more than two.
    InvalidToken,
    /// A remote replica line with fewer than two tokens.
    RemoteAddress,
    /// A size that is not a positive number with a known unit.
    SizeFormat,
    /// A part path that does not start with `/`.
    RelativePath,
    /// A remote replica descriptor that starts with `/`.
    AbsoluteDescriptor,
    /// Replica 0 (the only replica so far) has no parts.
    NoParts,
    /// A later replica has no parts.
    NoReplicaParts,
    /// A part line after a remote replica.
    UnexpectedRemoteParts,
    /// An `OPTION` token other than `SINGLEHDR` and `NOHDRS`.
    UnknownOption,
    /// An `OPTION` line without tokens.
    MissingOptionName,
}

impl ParseReason {
    /// PMDK's text for the reason.
    pub const fn as_str(self) -> &'static str {
        match self {
            ParseReason::FirstLine => "the first line must be exactly 'PMEMPOOLSET'",
            ParseReason::ReplicaExpected => "exactly 'REPLICA' expected",
            ParseReason::InvalidToken => "invalid token found in the current line",
            ParseReason::RemoteAddress => {
                "address of remote node and descriptor of remote pool set expected"
            }
            ParseReason::SizeFormat => "incorrect format of size",
            ParseReason::RelativePath => "incorrect path (must be an absolute one)",
            ParseReason::AbsoluteDescriptor => "incorrect descriptor (must be a relative path)",
            ParseReason::NoParts => "no pool set parts",
            ParseReason::NoReplicaParts => "no replica parts",
            ParseReason::UnexpectedRemoteParts => "unexpected parts for remote replica",
            ParseReason::UnknownOption => "unknown option",
            ParseReason::MissingOptionName => "missing option name",
        }
    }
}

impl fmt::Display for ParseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_line_then_reason() {
        let err = Error::Parse {
            line: 3,
            reason: ParseReason::SizeFormat,
            hint: None,
        };
        assert_eq!(err.to_string(), "line 3: incorrect format of size");
        assert_eq!(err.line(), 3);
        assert_eq!(err.reason(), "incorrect format of size");
        assert_eq!(err.parse_reason(), Some(ParseReason::SizeFormat));
        let err = Error::Parse {
            line: 4,
            reason: ParseReason::InvalidToken,
            hint: Some(Hint::DidYouMean("REPLICA")),
        };
        assert_eq!(
            err.to_string(),
            "line 4: invalid token found in the current line; did you mean 'REPLICA'?"
        );
        assert_eq!(
            err.reason(),
            "invalid token found in the current line; did you mean 'REPLICA'?"
        );
    }

    #[test]
    fn size_errors_have_pmdk_wording() {
        let part = Error::PartTooSmall {
            line: 2,
            replica: 0,
            part: 0,
            size: 1 << 20,
            min: 2 << 20,
        };
        assert_eq!(
            part.to_string(),
            "line 2: size 1048576 smaller than 2097152"
        );
        assert_eq!(part.reason(), "size 1048576 smaller than 2097152");
        let pool = Error::PoolTooSmall {
            size: 5,
            min: 8 << 20,
        };
        assert_eq!(pool.to_string(), "net pool size 5 smaller than 8388608");
        assert_eq!(pool.line(), 0);
        assert_eq!(pool.parse_reason(), None);
    }
}
