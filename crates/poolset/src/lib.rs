//! Pool set (`*.set`) files of PMDK 1.12: parsing, formatting, size rules and
//! the replica address-space map.
//!
//! A pool set file lists the replicas of a libpmemobj pool and the part files
//! of each replica. This crate turns its text into a [`PoolSet`] and back, and
//! answers the questions every other layer asks about it: how many headers a
//! replica has, how large a replica and the pool are, and where a logical
//! offset of a replica lives in its part files.
//!
//! Invariants:
//! * No I/O. [`parse`] takes `&str`; nothing here touches the file system.
//!   Whether a part path is a directory, a Device DAX or a missing file is the
//!   engine's business (see [`directory_part_file_name`]).
//! * [`parse`] accepts exactly what PMDK 1.12.1's `util_poolset_parse` accepts
//!   and rejects the rest with PMDK's reason text and line number
//!   ([`ParseReason`]); the few deliberate differences are listed on
//!   [`parse`].
//! * [`PoolSet::to_text`] produces text that [`parse`] turns back into an
//!   equal set (line numbers aside, see [`PoolSet::without_lines`]).
//! * [`map_range`] is the one mapping from logical replica offsets to part
//!   file offsets; copy and compare code uses it rather than doing its own
//!   arithmetic.
//!
//! # Example
//!
//! ```
//! use poolsync_poolset::{parse, PartSize};
//!
//! let text = "PMEMPOOLSET\n\
//!             20M /mnt/pmem/a.part\n\
//!             20M /mnt/pmem/b.part  # a comment\n\
//!             REPLICA\n\
//!             40M /mnt/pmem/mirror.part\n";
//! let set = parse(text)?;
//! assert_eq!(set.replicas.len(), 2);
//! assert_eq!(set.replicas[0].parts()[1].size, PartSize::Bytes(20 << 20));
//!
//! // Replica 0 loses the header page of its second part; replica 1 is larger,
//! // so the pool is as large as replica 0.
//! let pool_size = set.pool_size();
//! println!("pool size: {pool_size:?}");
//! assert_eq!(pool_size, Some((40 << 20) - 4096));
//! set.validate_obj_sizes()?;
//! # Ok::<(), poolsync_poolset::Error>(())
//! ```
#![forbid(unsafe_code)]

mod error;
mod format;
mod map;
mod parse;
mod size;

use serde::Serialize;

pub use error::{Error, Hint, ParseReason, SIZE_UNITS_HELP};
pub use map::{map_range, Extent, Piece};
pub use parse::{parse, parse_size, signature_fix, SignatureFix};

/// Size of a page and of a pool header: the unit every part size is aligned
/// down to (x86-64, aarch64 and riscv64; docs/format.md §14.1).
pub const PAGE: u64 = 4096;
/// `PMEMOBJ_MIN_PART`: the smallest part libpmemobj creates (2 MiB).
pub const OBJ_MIN_PART: u64 = 2 << 20;
/// `PMEMOBJ_MIN_POOL`: the smallest net pool size libpmemobj creates (8 MiB).
pub const OBJ_MIN_POOL: u64 = 8 << 20;
/// The 11 bytes that mark a file as a pool set file (docs/format.md §13.1).
pub const SIGNATURE: &str = "PMEMPOOLSET";

/// The size column of a part line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PartSize {
    /// A size in bytes, after applying the unit suffix. [`parse`] never
    /// returns zero.
    Bytes(u64),
    /// `AUTO`: the size of an existing Device DAX, known only once the engine
    /// has looked at the device. PMDK rejects `AUTO` for anything but a
    /// Device DAX with "cannot determine size of a part"; that check needs
    /// I/O, so it is the engine's.
    Auto,
}

/// One part line: a file (or Device DAX, or directory) of a local replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Part {
    /// The configured size.
    pub size: PartSize,
    /// The path exactly as written: absolute, no normalisation, no blanks
    /// and no `#`.
    pub path: String,
    /// 1-based line number of the part line in the source text (0 for sets
    /// built in code).
    #[serde(skip)]
    pub line: usize,
}

/// One replica section of a pool set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Replica {
    /// A replica made of local part files.
    Local {
        /// The parts in address-space order; [`parse`] never returns an
        /// empty list.
        parts: Vec<Part>,
        /// Line of the `REPLICA` line that opened the section (1, the
        /// `PMEMPOOLSET` line, for replica 0; 0 for sets built in code).
        #[serde(skip)]
        line: usize,
    },
    /// `REPLICA <node> <descriptor>`: a replica on another node, reached
    /// through librpmem (deprecated in PMDK 1.12, removed in 2.x).
    Remote {
        /// The node address, `[user@]host` as ssh understands it.
        node: String,
        /// The pool set descriptor on the remote node (a relative path).
        descriptor: String,
        /// Line of the `REPLICA` line (0 for sets built in code).
        #[serde(skip)]
        line: usize,
    },
}

impl Replica {
    /// The parts of a local replica; empty for a remote one.
    pub fn parts(&self) -> &[Part] {
        match self {
            Replica::Local { parts, .. } => parts,
            Replica::Remote { .. } => &[],
        }
    }

    /// `true` for a remote replica.
    pub fn is_remote(&self) -> bool {
        matches!(self, Replica::Remote { .. })
    }

    /// The line the replica section starts at (see the variants).
    pub fn line(&self) -> usize {
        match self {
            Replica::Local { line, .. } | Replica::Remote { line, .. } => *line,
        }
    }
}

/// `OPTION` flags; they apply to the whole set wherever the line stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Options {
    /// `SINGLEHDR`: only the first part of each replica has a pool header.
    pub single_hdr: bool,
    /// `NOHDRS`: no part has a header (remote pool sets only; local create
    /// and open reject it).
    pub no_hdrs: bool,
}

/// A parsed pool set file. Replica 0 is the master.
///
/// Equality is structural and includes the `line` fields; compare
/// [`PoolSet::without_lines`] to ignore where things were written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolSet {
    /// The union of all `OPTION` lines.
    pub options: Options,
    /// The replicas in file order; [`parse`] always returns a local replica 0.
    pub replicas: Vec<Replica>,
}

impl PoolSet {
    /// A copy with every `line` field set to 0, the value for sets built in
    /// code. Two sets that differ only in where their lines stood compare
    /// equal after this.
    pub fn without_lines(&self) -> PoolSet {
        let mut set = self.clone();
        for replica in &mut set.replicas {
            match replica {
                Replica::Local { parts, line } => {
                    *line = 0;
                    for part in parts {
                        part.line = 0;
                    }
                }
                Replica::Remote { line, .. } => *line = 0,
            }
        }
        set
    }

    /// Bytes of pool header that part `k ≥ 1` of every replica keeps out of
    /// the address space: [`PAGE`] by default, 0 with `SINGLEHDR` or `NOHDRS`.
    pub fn header_gap(&self) -> u64 {
        if self.options.single_hdr || self.options.no_hdrs {
            0
        } else {
            PAGE
        }
    }
}

/// A `REPLICA <node> <descriptor>` line, as [`PoolSet::split_remote`]
/// separates it from the local replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteLine {
    /// The node address, `[user@]host`.
    pub node: String,
    /// The pool set file on the remote node, relative to its root.
    pub descriptor: String,
    /// Line of the `REPLICA` line (0 for sets built in code).
    pub line: usize,
    /// Its place among every replica of the file, local and remote.
    pub position: usize,
}

impl PoolSet {
    /// The local replicas alone, in file order (the pool set an
    /// application opens, which lists only them), and the remote replica
    /// lines. Local replicas are numbered among themselves: a remote line
    /// before a local replica does not shift its number.
    pub fn split_remote(&self) -> (PoolSet, Vec<RemoteLine>) {
        let mut local = PoolSet {
            options: self.options,
            replicas: Vec::with_capacity(self.replicas.len()),
        };
        let mut remote = Vec::new();
        for (position, replica) in self.replicas.iter().enumerate() {
            match replica {
                Replica::Local { .. } => local.replicas.push(replica.clone()),
                Replica::Remote {
                    node,
                    descriptor,
                    line,
                } => remote.push(RemoteLine {
                    node: node.clone(),
                    descriptor: descriptor.clone(),
                    line: *line,
                    position,
                }),
            }
        }
        (local, remote)
    }
}

impl std::str::FromStr for PoolSet {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse(text)
    }
}

/// `true` when `head` (the first bytes of a file) starts with `PMEMPOOLSET`,
/// PMDK's test for "this path is a pool set file, not a single-file pool"
/// (docs/format.md §13.1). A file that passes may still fail [`parse`] (for
/// example `PMEMPOOLSETX`).
pub fn is_poolset(head: &[u8]) -> bool {
    head.starts_with(SIGNATURE.as_bytes())
}

/// `A(x)`: `x` rounded down to a multiple of [`PAGE`].
pub const fn page_align_down(x: u64) -> u64 {
    x & !(PAGE - 1)
}

/// The file name of part `index` inside a directory of a directory-based
/// pool set (docs/format.md §13.8): the index as at least six zero-padded
/// decimal digits followed by `.pmem`, e.g. `000000.pmem`.
///
/// A pool set becomes directory based when its part paths name existing
/// directories. The parser cannot know that (it does no I/O), so [`parse`]
/// returns such paths as ordinary parts; the engine classifies them, rejects
/// a mix of files and directories, requires `SINGLEHDR`, and builds the part
/// paths with this function.
pub fn directory_part_file_name(index: usize) -> String {
    format!("{index:06}.pmem")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_are_zero_padded() {
        assert_eq!(directory_part_file_name(0), "000000.pmem");
        assert_eq!(directory_part_file_name(42), "000042.pmem");
        assert_eq!(directory_part_file_name(1_234_567), "1234567.pmem");
    }

    #[test]
    fn page_alignment_rounds_down() {
        assert_eq!(page_align_down(0), 0);
        assert_eq!(page_align_down(4095), 0);
        assert_eq!(page_align_down(4096), 4096);
        assert_eq!(page_align_down(16_777_217), 16_777_216);
        assert_eq!(page_align_down(u64::MAX), u64::MAX - 4095);
    }

    #[test]
    fn signature_test_looks_at_the_prefix_only() {
        assert!(is_poolset(b"PMEMPOOLSET\n"));
        assert!(is_poolset(b"PMEMPOOLSETX"));
        assert!(!is_poolset(b"PMEMPOOLSE"));
        assert!(!is_poolset(b"\nPMEMPOOLSET\n"));
    }

    #[test]
    fn without_lines_clears_every_line() {
        let set = parse("PMEMPOOLSET\n8M /a\nREPLICA\n8M /b\nREPLICA h d\n").unwrap();
        let cleared = set.without_lines();
        assert_ne!(set, cleared);
        assert!(cleared.replicas.iter().all(|r| r.line() == 0));
        assert!(cleared
            .replicas
            .iter()
            .flat_map(|r| r.parts())
            .all(|p| p.line == 0));
    }
}
