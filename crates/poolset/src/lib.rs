//! Pool set (`*.set`) files of PMDK 1.12: parsing, formatting and size rules.
//!
//! CONTRACT SKELETON (to be replaced by the implementation): the public items
//! below are the API that the engine and the CLI build against.
#![forbid(unsafe_code)]

use serde::Serialize;

/// Size of a page and of a pool header: the unit every part size is aligned down to.
pub const PAGE: u64 = 4096;
/// `PMEMOBJ_MIN_PART`: the smallest part libpmemobj accepts.
pub const OBJ_MIN_PART: u64 = 2 << 20;
/// `PMEMOBJ_MIN_POOL`: the smallest net pool size libpmemobj accepts.
pub const OBJ_MIN_POOL: u64 = 8 << 20;
/// The 11 bytes that mark a file as a pool set file (spec 1.1).
pub const SIGNATURE: &str = "PMEMPOOLSET";

/// The size column of a part line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PartSize {
    /// A size in bytes (after applying the unit suffix; never zero).
    Bytes(u64),
    /// `AUTO`: only valid for Device DAX, resolved at open time.
    Auto,
}

/// One part line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Part {
    pub size: PartSize,
    /// Absolute path exactly as written (no normalisation).
    pub path: String,
    /// 1-based line number in the source text (0 for sets built in code).
    #[serde(skip)]
    pub line: usize,
}

/// One replica section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Replica {
    Local { parts: Vec<Part>, #[serde(skip)] line: usize },
    Remote { node: String, descriptor: String, #[serde(skip)] line: usize },
}

/// `OPTION` flags; they apply to the whole set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Options {
    pub single_hdr: bool,
    pub no_hdrs: bool,
}

/// A parsed pool set file. Replica 0 is the master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolSet {
    pub options: Options,
    pub replicas: Vec<Replica>,
}

/// Why a pool set file was rejected. Parse errors carry the 1-based line
/// (EOF errors: last line + 1), as PMDK reports them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("line {line}: {reason}")]
    Parse { line: usize, reason: ParseReason },
}

/// PMDK's parse error reasons (spec 1.9), printed with PMDK's exact text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseReason {
    FirstLine, ReplicaExpected, InvalidToken, RemoteAddress, SizeFormat,
    RelativePath, AbsoluteDescriptor, NoParts, NoReplicaParts, UnexpectedRemoteParts,
    UnknownOption, MissingOptionName,
}

impl Error {
    /// 1-based line the error is reported at.
    pub fn line(&self) -> usize { unimplemented!() }
    /// The reason without the line, e.g. "incorrect format of size".
    pub fn reason(&self) -> String { unimplemented!() }
}

impl std::fmt::Display for ParseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { let _ = f; unimplemented!() }
}

/// `true` when `head` (the first bytes of a file) starts with `PMEMPOOLSET`.
pub fn is_poolset(head: &[u8]) -> bool { head.starts_with(SIGNATURE.as_bytes()) }

/// Parses pool set text (spec section 1).
pub fn parse(text: &str) -> Result<PoolSet, Error> { let _ = text; unimplemented!() }

impl PoolSet {
    /// Writes the set back as pool set text that `parse` accepts (round trip).
    pub fn to_text(&self) -> String { unimplemented!() }
    /// Headers per replica: parts count, 1 with SINGLEHDR, 0 with NOHDRS.
    pub fn nhdrs(&self, replica: usize) -> usize { let _ = replica; unimplemented!() }
    /// Net size of local replica `replica` (spec 1.11); `None` for remote or AUTO.
    pub fn replica_size(&self, replica: usize) -> Option<u64> { let _ = replica; unimplemented!() }
    /// Pool size: minimum net size over local replicas (spec 1.11).
    pub fn pool_size(&self) -> Option<u64> { unimplemented!() }
}

/// `A(x)`: `x` rounded down to a multiple of [`PAGE`].
pub const fn page_align_down(x: u64) -> u64 { x & !(PAGE - 1) }

/// Where one part of a replica sits in the replica's logical address space (spec 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Extent {
    /// Part index within the replica.
    pub part: usize,
    /// First logical offset the part covers.
    pub logical: u64,
    /// File offset of that first logical byte (0 for part 0, or with SINGLEHDR/NOHDRS; else 4096).
    pub file_offset: u64,
    /// Bytes of address space the part covers.
    pub len: u64,
}

/// A piece of a logical range that falls in one part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece { pub part: usize, pub file_offset: u64, pub logical: u64, pub len: u64 }

impl PoolSet {
    /// The address-space map of local replica `replica` (sizes must be known).
    pub fn extents(&self, replica: usize) -> Option<Vec<Extent>> { let _ = replica; unimplemented!() }
}

/// Splits logical `[offset, offset+len)` at part boundaries; the part of the
/// range beyond the last extent is dropped. Pure; the one mapping everyone uses.
pub fn map_range(extents: &[Extent], offset: u64, len: u64) -> Vec<Piece> { let _ = (extents, offset, len); unimplemented!() }
