//! Which persistence path to use, as the environment asks for it.
//!
//! Two variables are read:
//!
//! * `POOLSYNC_PERSIST=pagecache|dax` is poolsync's own override and wins
//!   when it is set and not empty.
//! * `PMEM_IS_PMEM_FORCE` is PMDK's and is read the way libpmem reads it:
//!   the value goes through C's `atoi`, `1` forces the DAX path, `0` (which
//!   includes text that is not a number) forces the page-cache path, and any
//!   other number is ignored.
//!
//! A request for DAX selects [`crate::DaxStorage`] in forced mode, as
//! `PMEM_IS_PMEM_FORCE=1` does in libpmem: the DAX code path runs on any
//! file, mapped with `MAP_SYNC` where the file system allows it and with a
//! plain shared mapping elsewhere (see [`crate::Mapping`]).

use std::ffi::OsStr;
use std::fmt;
use std::str::FromStr;

use crate::Error;

/// Name of poolsync's override variable.
pub const PERSIST_VAR: &str = "POOLSYNC_PERSIST";

/// Name of PMDK's override variable.
pub const PMEM_IS_PMEM_FORCE_VAR: &str = "PMEM_IS_PMEM_FORCE";

/// A way of making writes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PersistMode {
    /// Ordinary files: writes go to the page cache and `fdatasync` persists
    /// them ([`crate::FsStorage`]).
    PageCache,
    /// Mapped persistent memory flushed from the CPU caches
    /// ([`crate::DaxStorage`]).
    Dax,
}

impl PersistMode {
    /// The spelling used by `POOLSYNC_PERSIST`.
    pub fn as_str(self) -> &'static str {
        match self {
            PersistMode::PageCache => "pagecache",
            PersistMode::Dax => "dax",
        }
    }
}

impl fmt::Display for PersistMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PersistMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "pagecache" => Ok(PersistMode::PageCache),
            "dax" => Ok(PersistMode::Dax),
            _ => Err(Error::Env {
                var: PERSIST_VAR,
                value: s.to_owned(),
                reason: "expected pagecache or dax",
            }),
        }
    }
}

/// A persistence mode that an environment variable asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistOverride {
    /// The mode asked for.
    pub mode: PersistMode,
    /// The variable that asked.
    pub var: &'static str,
    /// Its value.
    pub value: String,
}

/// Interprets the values of `POOLSYNC_PERSIST` and `PMEM_IS_PMEM_FORCE`
/// (`None` when unset) without reading the environment. `Ok(None)` means
/// neither variable asks for anything.
pub fn persist_override(
    persist: Option<&OsStr>,
    force: Option<&OsStr>,
) -> Result<Option<PersistOverride>, Error> {
    if let Some(raw) = persist.filter(|v| !v.is_empty()) {
        let value = raw.to_str().ok_or_else(|| Error::Env {
            var: PERSIST_VAR,
            value: raw.to_string_lossy().into_owned(),
            reason: "expected pagecache or dax",
        })?;
        let mode = value.parse()?;
        return Ok(Some(PersistOverride {
            mode,
            var: PERSIST_VAR,
            value: value.to_owned(),
        }));
    }
    if let Some(raw) = force {
        let mode = match c_atoi(raw.as_encoded_bytes()) {
            0 => PersistMode::PageCache,
            1 => PersistMode::Dax,
            _ => return Ok(None),
        };
        let value = raw.to_string_lossy().into_owned();
        return Ok(Some(PersistOverride {
            mode,
            var: PMEM_IS_PMEM_FORCE_VAR,
            value,
        }));
    }
    Ok(None)
}

/// The persistence mode to use, from the environment.
///
/// Without an override the page cache is used. `POOLSYNC_PERSIST=dax` or
/// `PMEM_IS_PMEM_FORCE=1` select the DAX code path on any file (see
/// [`crate::AnyStorage::new`]); a malformed `POOLSYNC_PERSIST` is an
/// error.
pub fn persist_mode_from_env() -> Result<PersistMode, Error> {
    let persist = std::env::var_os(PERSIST_VAR);
    let force = std::env::var_os(PMEM_IS_PMEM_FORCE_VAR);
    Ok(resolve(persist_override(
        persist.as_deref(),
        force.as_deref(),
    )?))
}

/// The mode a request (or its absence) selects.
fn resolve(request: Option<PersistOverride>) -> PersistMode {
    request.map_or(PersistMode::PageCache, |r| r.mode)
}

/// C's `atoi` as glibc implements it, `(int)strtol(s, NULL, 10)`: optional
/// leading white space, an optional sign, then decimal digits up to the
/// first non-digit; `strtol` saturates at the `long` limits and the cast to
/// `int` keeps the low 32 bits.
fn c_atoi(bytes: &[u8]) -> i32 {
    let mut rest = bytes;
    while let Some((&b, tail)) = rest.split_first() {
        if matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r') {
            rest = tail;
        } else {
            break;
        }
    }
    let mut negative = false;
    if let Some((&b, tail)) = rest.split_first() {
        if b == b'+' || b == b'-' {
            negative = b == b'-';
            rest = tail;
        }
    }
    // Magnitude, capped just above what a long can hold.
    const CAP: u128 = 1 << 63;
    let mut magnitude: u128 = 0;
    for &b in rest.iter().take_while(|b| b.is_ascii_digit()) {
        magnitude = (magnitude * 10 + u128::from(b - b'0')).min(CAP + 1);
    }
    let long: i64 = match (negative, magnitude) {
        (true, m) if m >= CAP => i64::MIN,
        (false, m) if m >= CAP => i64::MAX,
        // In range: m < 2^63.
        (true, m) => -(m as i64),
        (false, m) => m as i64,
    };
    // The truncation is the point: it is what the C cast does.
    long as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(persist: Option<&str>, force: Option<&str>) -> Result<Option<PersistOverride>, Error> {
        persist_override(persist.map(OsStr::new), force.map(OsStr::new))
    }

    fn mode(persist: Option<&str>, force: Option<&str>) -> Option<PersistMode> {
        req(persist, force).expect("valid values").map(|r| r.mode)
    }

    #[test]
    fn nothing_set_means_no_override_and_page_cache() {
        assert_eq!(mode(None, None), None);
        assert_eq!(resolve(None), PersistMode::PageCache);
    }

    #[test]
    fn poolsync_variable_is_parsed_strictly() {
        assert_eq!(mode(Some("pagecache"), None), Some(PersistMode::PageCache));
        assert_eq!(mode(Some("dax"), None), Some(PersistMode::Dax));
        for bad in ["DAX", "page-cache", " dax", "1"] {
            let err = req(Some(bad), None).expect_err(bad);
            assert!(
                matches!(
                    err,
                    Error::Env {
                        var: PERSIST_VAR,
                        ..
                    }
                ),
                "{bad}: {err}"
            );
            assert!(
                err.to_string().contains("expected pagecache or dax"),
                "{err}"
            );
        }
    }

    #[test]
    fn empty_poolsync_variable_counts_as_unset() {
        assert_eq!(mode(Some(""), None), None);
        assert_eq!(mode(Some(""), Some("1")), Some(PersistMode::Dax));
    }

    #[test]
    fn poolsync_variable_wins_over_pmdk_variable() {
        let r = req(Some("pagecache"), Some("1"))
            .expect("valid")
            .expect("override");
        assert_eq!((r.mode, r.var), (PersistMode::PageCache, PERSIST_VAR));
        assert_eq!(mode(Some("dax"), Some("0")), Some(PersistMode::Dax));
    }

    #[test]
    fn pmdk_variable_follows_atoi() {
        assert_eq!(mode(None, Some("1")), Some(PersistMode::Dax));
        assert_eq!(mode(None, Some(" +1x")), Some(PersistMode::Dax));
        assert_eq!(mode(None, Some("01")), Some(PersistMode::Dax));
        assert_eq!(mode(None, Some("0")), Some(PersistMode::PageCache));
        assert_eq!(mode(None, Some("")), Some(PersistMode::PageCache));
        assert_eq!(mode(None, Some("yes")), Some(PersistMode::PageCache));
        assert_eq!(mode(None, Some("2")), None);
        assert_eq!(mode(None, Some("-1")), None);
        // glibc: (int)strtol, so LONG_MAX becomes -1, LONG_MIN becomes 0
        // and 2^32 + 1 becomes 1.
        assert_eq!(mode(None, Some("99999999999999999999999")), None);
        assert_eq!(
            mode(None, Some("-99999999999999999999999")),
            Some(PersistMode::PageCache)
        );
        assert_eq!(mode(None, Some("4294967297")), Some(PersistMode::Dax));
    }

    #[test]
    fn dax_requests_select_the_dax_path() {
        let r = req(None, Some("1")).expect("valid");
        assert_eq!(resolve(r), PersistMode::Dax);
        let r = req(Some("dax"), None).expect("valid");
        assert_eq!(resolve(r), PersistMode::Dax);
    }

    #[test]
    fn page_cache_request_resolves() {
        let r = req(Some("pagecache"), None).expect("valid");
        assert_eq!(resolve(r), PersistMode::PageCache);
        let r = req(None, Some("0")).expect("valid");
        assert_eq!(resolve(r), PersistMode::PageCache);
        // A number other than 0 or 1 is ignored, as libpmem ignores it.
        let r = req(None, Some("2")).expect("valid");
        assert_eq!(resolve(r), PersistMode::PageCache);
    }

    #[test]
    fn mode_spelling_round_trips() {
        for m in [PersistMode::PageCache, PersistMode::Dax] {
            assert_eq!(m.to_string().parse::<PersistMode>().expect("round trip"), m);
        }
    }
}
