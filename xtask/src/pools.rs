//! Pool set files that xtask writes itself, and the bytes of their
//! replicas: the text of a set file for a layout of named parts, and the
//! logical range of one replica read or written through its parts, as
//! `docs/format.md` lays a replica out (part 0 from its first byte, every
//! later part after its header page unless `OPTION SINGLEHDR`).
//!
//! The demo and the soak use these; the benchmarks keep their own
//! one-line set files.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

pub const MIB: u64 = 1 << 20;
/// A pool header page, and the block size of comparisons.
pub const PAGE: u64 = 4096;

/// The replicas of a pool set: their parts, as (file name, size in MiB),
/// and whether the set says `OPTION SINGLEHDR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub replicas: Vec<Vec<(String, u64)>>,
    pub singlehdr: bool,
}

impl Layout {
    /// A layout without `OPTION SINGLEHDR`.
    pub fn new(replicas: &[&[(&str, u64)]]) -> Layout {
        Layout {
            replicas: replicas
                .iter()
                .map(|parts| parts.iter().map(|(n, m)| ((*n).to_string(), *m)).collect())
                .collect(),
            singlehdr: false,
        }
    }

    /// The same parts with `OPTION SINGLEHDR` (or without it).
    pub fn with_singlehdr(&self, singlehdr: bool) -> Layout {
        Layout {
            singlehdr,
            ..self.clone()
        }
    }

    /// The text of its pool set file, with the parts in `dir` (absolute
    /// paths, as PMDK wants them).
    pub fn set_text(&self, dir: &Path) -> String {
        let mut text = String::from("PMEMPOOLSET\n");
        if self.singlehdr {
            text.push_str("OPTION SINGLEHDR\n");
        }
        for (i, parts) in self.replicas.iter().enumerate() {
            if i > 0 {
                text.push_str("REPLICA\n");
            }
            for (name, mib) in parts {
                text.push_str(&format!("{mib}M {}\n", dir.join(name).display()));
            }
        }
        text
    }

    /// Every part file, replica after replica.
    pub fn part_paths(&self, dir: &Path) -> Vec<PathBuf> {
        self.replicas
            .iter()
            .flatten()
            .map(|(name, _)| dir.join(name))
            .collect()
    }

    /// Where the logical bytes of replica `r` lie: (file, first file
    /// offset, first logical offset, length), part by part.
    fn extents(&self, dir: &Path, r: usize) -> Vec<(PathBuf, u64, u64, u64)> {
        let mut out = Vec::new();
        let mut logical = 0;
        for (p, (name, mib)) in self.replicas[r].iter().enumerate() {
            let skip = if p == 0 || self.singlehdr { 0 } else { PAGE };
            let len = mib * MIB - skip;
            out.push((dir.join(name), skip, logical, len));
            logical += len;
        }
        out
    }

    /// Reads `len` logical bytes of replica `r` from `logical` on.
    pub fn read(&self, dir: &Path, r: usize, logical: u64, len: u64) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; usize::try_from(len)?];
        let mut done = 0u64;
        for (path, first, start, extent) in self.extents(dir, r) {
            let (from, to) = (logical + done, logical + len);
            if from >= start + extent || from < start || done == len {
                continue;
            }
            let n = (to.min(start + extent)) - from;
            let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            let slice = &mut buf[usize::try_from(done)?..usize::try_from(done + n)?];
            file.read_exact_at(slice, first + from - start)
                .with_context(|| format!("reading {} bytes of {}", n, path.display()))?;
            done += n;
        }
        ensure!(
            done == len,
            "replica {r} holds {done} of the {len} bytes at logical offset {logical:#x}"
        );
        Ok(buf)
    }

    /// Writes `bytes` at a logical offset of replica `r`, across parts if
    /// need be.
    pub fn write(&self, dir: &Path, r: usize, logical: u64, bytes: &[u8]) -> Result<()> {
        let len = bytes.len() as u64;
        let mut done = 0u64;
        for (path, first, start, extent) in self.extents(dir, r) {
            let from = logical + done;
            if from >= start + extent || from < start || done == len {
                continue;
            }
            let n = (logical + len).min(start + extent) - from;
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let slice = &bytes[usize::try_from(done)?..usize::try_from(done + n)?];
            file.write_all_at(slice, first + from - start)
                .with_context(|| format!("writing {}", path.display()))?;
            done += n;
        }
        ensure!(
            done == len,
            "replica {r} has room for {done} of the {len} bytes at logical offset {logical:#x}"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_files_name_every_part_with_its_size() {
        let layout = Layout::new(&[&[("a0", 16), ("a1", 16)], &[("b0", 32)]]);
        assert_eq!(
            layout.set_text(Path::new("/pool")),
            "PMEMPOOLSET\n16M /pool/a0\n16M /pool/a1\nREPLICA\n32M /pool/b0\n"
        );
        assert_eq!(
            layout.with_singlehdr(true).set_text(Path::new("/p")),
            "PMEMPOOLSET\nOPTION SINGLEHDR\n16M /p/a0\n16M /p/a1\nREPLICA\n32M /p/b0\n"
        );
    }

    #[test]
    fn logical_bytes_cross_parts_after_their_header_pages() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(&[&[("a0", 1), ("a1", 1)]]);
        for (name, _) in &layout.replicas[0] {
            std::fs::write(dir.path().join(name), vec![0u8; MIB as usize]).unwrap();
        }
        let bytes: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        layout.write(dir.path(), 0, MIB - 4096, &bytes).unwrap();
        assert_eq!(layout.read(dir.path(), 0, MIB - 4096, 8192).unwrap(), bytes);
        let a1 = std::fs::read(dir.path().join("a1")).unwrap();
        assert_eq!(&a1[..4096], &[0u8; 4096][..], "a1's header page");
        assert_eq!(&a1[4096..8192], &bytes[4096..]);
        let single = layout.with_singlehdr(true);
        assert_eq!(
            single.read(dir.path(), 0, MIB, 4096).unwrap(),
            vec![0u8; 4096]
        );
        assert!(layout.read(dir.path(), 0, 2 * MIB - 4096, 1).is_err());
    }
}
