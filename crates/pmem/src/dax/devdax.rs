//! Device DAX (`/dev/daxX.Y`): recognizing one and reading its size and
//! mapping alignment from sysfs.
//!
//! A Device DAX character device has no `st_size`, and it can be mapped
//! only in units of its alignment (4 KiB, 2 MiB or 1 GiB). Both live in
//! sysfs under `/sys/dev/char/<major>:<minor>`:
//!
//! * `subsystem` links to `class/dax` (the older layout) or `bus/dax`;
//! * `size` is the device size in bytes, in decimal;
//! * the alignment is the device's own `align` (kernels 5.10 and later),
//!   else `device/align` or `device/dax_region/align` (the `class/dax`
//!   layout), else the `dax_region/align` of the nearest ancestor
//!   directory. It is printed in decimal; kernels before 4.9 printed it in
//!   hexadecimal without a prefix, so a decimal reading that is not a power
//!   of two is read again as hexadecimal, as libpmem does.
//!
//! [`DevDaxProbe`] is the one place poolsync asks these questions (is this
//! path a Device DAX, of what size and alignment); every storage answers
//! [`crate::Storage::device_dax`] through it. Its sysfs root can be moved
//! (`POOLSYNC_SYSFS`), and a fake tree can name regular files that stand in
//! for devices ([`FakeSysfs`] writes one), so that every command can be
//! tested with Device DAX parts on a machine without one. No machine this
//! crate is tested on has a Device DAX, so mapping a real one is untested.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::Error;

/// Size and mapping alignment of a Device DAX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevDax {
    /// Bytes the device holds.
    pub size: u64,
    /// Every mapping must start and end on a multiple of this (a power of two).
    pub align: u64,
}

/// Parses a sysfs alignment: decimal, or hexadecimal when the decimal
/// reading is not a power of two. Trailing white space (the newline sysfs
/// adds) is ignored.
pub(crate) fn parse_align(text: &str) -> Result<u64, &'static str> {
    let text = text.trim_end();
    let is_pow2 = |v: u64| v != 0 && v.is_power_of_two();
    if let Some(v) = parse_digits(text, 10).filter(|&v| is_pow2(v)) {
        return Ok(v);
    }
    match parse_digits(text, 16) {
        Some(v) if is_pow2(v) => Ok(v),
        _ => Err("expected a power of two in decimal"),
    }
}

/// Parses a sysfs size: a decimal number of bytes, trailing white space
/// ignored.
pub(crate) fn parse_size(text: &str) -> Result<u64, &'static str> {
    parse_digits(text.trim_end(), 10).ok_or("expected a decimal number of bytes")
}

/// Digits only (no sign, no prefix, no spaces), at least one, no overflow.
fn parse_digits(text: &str, radix: u32) -> Option<u64> {
    if text.is_empty() || !text.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(text, radix).ok()
}

/// `true` when the `subsystem` link of a character device resolves to the
/// dax class or bus.
pub(crate) fn is_dax_subsystem(target: &Path) -> bool {
    target.ends_with("class/dax") || target.ends_with("bus/dax")
}

/// Where the alignment of the device whose resolved sysfs directory is
/// `dev_dir` may be found, in the order to try. Ancestors are searched up
/// to, not including, `<sysfs>/devices`.
pub(crate) fn align_candidates(sysfs: &Path, dev_dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![
        dev_dir.join("align"),
        dev_dir.join("device").join("align"),
        dev_dir.join("device").join("dax_region").join("align"),
    ];
    let stop = sysfs.join("devices");
    for dir in dev_dir.ancestors().skip(1) {
        if dir == stop || !dir.starts_with(&stop) {
            break;
        }
        out.push(dir.join("dax_region").join("align"));
    }
    out
}

/// Reads size and alignment of the character device `major:minor` from
/// the sysfs mounted at `sysfs` (`/sys` on a real system). `path` names the
/// device in errors.
pub(crate) fn read(sysfs: &Path, major: u64, minor: u64, path: &Path) -> Result<DevDax, Error> {
    let node = sysfs
        .join("dev")
        .join("char")
        .join(format!("{major}:{minor}"));
    let subsystem = node.join("subsystem");
    let is_dax = match std::fs::canonicalize(&subsystem) {
        Ok(target) => is_dax_subsystem(&target),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(source) => {
            return Err(Error::Io {
                op: "realpath",
                path: subsystem,
                os: source,
            })
        }
    };
    if !is_dax {
        return Err(Error::NotDevDax {
            path: path.to_path_buf(),
        });
    }
    let size_path = node.join("size");
    let size_text = read_attr(&size_path)?;
    let size = parse_size(&size_text).map_err(|reason| Error::Sysfs {
        path: size_path,
        value: size_text.clone(),
        reason,
    })?;
    let dev_dir = std::fs::canonicalize(&node).map_err(|source| Error::Io {
        op: "realpath",
        path: node.clone(),
        os: source,
    })?;
    for candidate in align_candidates(sysfs, &dev_dir) {
        let text = match std::fs::read_to_string(&candidate) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::Io {
                    op: "read",
                    path: candidate,
                    os: source,
                })
            }
        };
        return match parse_align(&text) {
            Ok(align) => Ok(DevDax { size, align }),
            Err(reason) => Err(Error::Sysfs {
                path: candidate,
                value: text,
                reason,
            }),
        };
    }
    Err(Error::Sysfs {
        path: dev_dir,
        value: String::new(),
        reason: "no align attribute found for the Device DAX",
    })
}

/// The environment variable that moves the sysfs root [`DevDaxProbe`]
/// reads (for tests; unset on a real system, where it is `/sys`).
pub const SYSFS_VAR: &str = "POOLSYNC_SYSFS";

/// The file in a sysfs root that lists regular files standing in for
/// Device DAX character devices: lines `<major>:<minor> <absolute path>`,
/// blank lines and `#` comments ignored. Real sysfs has no such file.
pub const STAND_INS_FILE: &str = "poolsync-stand-ins";

/// Whether a path is a Device DAX, and its size and alignment: the one
/// probe every storage backend asks ([`crate::Storage::device_dax`]).
///
/// A character device is looked up in sysfs by its device number; a
/// regular file is a Device DAX only when the sysfs root's
/// [`STAND_INS_FILE`] names it (with the device number to look up), which
/// only a fake tree does. Anything else is no Device DAX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevDaxProbe {
    sysfs: PathBuf,
    stand_ins: Vec<(PathBuf, u64, u64)>,
}

impl Default for DevDaxProbe {
    fn default() -> Self {
        DevDaxProbe::system()
    }
}

impl DevDaxProbe {
    /// The real system's: sysfs at `/sys`, no stand-ins.
    pub fn system() -> Self {
        DevDaxProbe {
            sysfs: PathBuf::from(super::SYSFS),
            stand_ins: Vec::new(),
        }
    }

    /// A probe of the sysfs tree at `root`, with the stand-ins its
    /// [`STAND_INS_FILE`] lists (paths made canonical).
    pub fn with_sysfs(root: &Path) -> Result<Self, Error> {
        let list = root.join(STAND_INS_FILE);
        let text = match std::fs::read_to_string(&list) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(Error::Io {
                    op: "read",
                    path: list,
                    os: source,
                })
            }
        };
        let mut stand_ins = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || Error::Sysfs {
                path: list.clone(),
                value: line.to_string(),
                reason: "expected <major>:<minor> <absolute path>",
            };
            let (number, path) = line.split_once(' ').ok_or_else(bad)?;
            let (major, minor) = number.split_once(':').ok_or_else(bad)?;
            let (major, minor) = (
                parse_digits(major, 10).ok_or_else(bad)?,
                parse_digits(minor, 10).ok_or_else(bad)?,
            );
            let path = Path::new(path.trim());
            if !path.is_absolute() {
                return Err(bad());
            }
            let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            stand_ins.push((path, major, minor));
        }
        Ok(DevDaxProbe {
            sysfs: root.to_path_buf(),
            stand_ins,
        })
    }

    /// The probe the environment selects: [`SYSFS_VAR`]'s tree when it is
    /// set and not empty, else the real system's.
    pub fn from_env() -> Result<Self, Error> {
        match std::env::var_os(SYSFS_VAR) {
            Some(root) if !root.is_empty() => {
                let root = PathBuf::from(root);
                if !root.is_absolute() {
                    return Err(Error::Env {
                        var: SYSFS_VAR,
                        value: root.to_string_lossy().into_owned(),
                        reason: "expected an absolute path (the root of a sysfs tree)",
                    });
                }
                DevDaxProbe::with_sysfs(&root)
            }
            _ => Ok(DevDaxProbe::system()),
        }
    }

    /// The sysfs root this probe reads.
    pub fn sysfs(&self) -> &Path {
        &self.sysfs
    }

    /// `Some` with the size and alignment sysfs reports when `path` is a
    /// Device DAX (or a stand-in for one); `None` for a regular file, a
    /// directory or a path that does not exist. A character device that is
    /// not a Device DAX is an error ([`Error::NotDevDax`]), as PMDK refuses
    /// it; so is a sysfs entry that cannot be read.
    pub fn probe(&self, path: &Path) -> Result<Option<DevDax>, Error> {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::Io {
                    op: "stat",
                    path: path.to_path_buf(),
                    os: source,
                })
            }
        };
        let number = if meta.file_type().is_char_device() {
            let rdev = meta.rdev();
            Some((nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev)))
        } else if meta.is_file() && !self.stand_ins.is_empty() {
            let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            self.stand_ins
                .iter()
                .find(|(p, _, _)| *p == canonical)
                .map(|(_, major, minor)| (*major, *minor))
        } else {
            None
        };
        match number {
            Some((major, minor)) => read(&self.sysfs, major, minor, path).map(Some),
            None => Ok(None),
        }
    }
}

/// Writes a fake sysfs tree in which regular files stand in for Device DAX
/// devices of a given size and alignment, for tests of programs built on
/// this crate (point [`SYSFS_VAR`] at [`FakeSysfs::root`], or use
/// [`DevDaxProbe::with_sysfs`]). The tree has the `bus/dax` layout of
/// kernels 5.10 and later, with the alignment in the device's own `align`
/// file or, with [`FakeSysfs::device_in_region`], in its region's
/// `dax_region/align`.
#[derive(Debug)]
pub struct FakeSysfs {
    root: PathBuf,
    next_minor: u64,
}

impl FakeSysfs {
    /// The device major number the fake tree uses.
    pub const MAJOR: u64 = 252;

    /// An empty tree at `root` (created when missing).
    pub fn new(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root.join("bus/dax"))?;
        std::fs::create_dir_all(root.join("dev/char"))?;
        Ok(FakeSysfs {
            root: root.to_path_buf(),
            next_minor: 0,
        })
    }

    /// The tree's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes `stand_in` (a regular file, usually of `size` bytes) a Device
    /// DAX of `size` bytes and alignment `align`, with the alignment in the
    /// device's own `align` attribute.
    pub fn device(&mut self, stand_in: &Path, size: u64, align: u64) -> io::Result<()> {
        self.add(stand_in, &size.to_string(), Some(&align.to_string()), None)
    }

    /// Like [`FakeSysfs::device`], with the alignment only in the region's
    /// `dax_region/align`, as older kernels show it.
    pub fn device_in_region(&mut self, stand_in: &Path, size: u64, align: u64) -> io::Result<()> {
        self.add(stand_in, &size.to_string(), None, Some(&align.to_string()))
    }

    /// A stand-in whose attributes hold the given raw text (`None`: the
    /// attribute is missing), to test what a broken sysfs tree does.
    pub fn raw_device(
        &mut self,
        stand_in: &Path,
        size: &str,
        align: Option<&str>,
    ) -> io::Result<()> {
        self.add(stand_in, size, align, None)
    }

    fn add(
        &mut self,
        stand_in: &Path,
        size: &str,
        align: Option<&str>,
        region_align: Option<&str>,
    ) -> io::Result<()> {
        let minor = self.next_minor;
        self.next_minor += 1;
        let region = self
            .root
            .join(format!("devices/platform/fake/region{minor}"));
        let dev = region.join(format!("dax{minor}.0"));
        std::fs::create_dir_all(&dev)?;
        std::fs::write(dev.join("size"), format!("{size}\n"))?;
        if let Some(align) = align {
            std::fs::write(dev.join("align"), format!("{align}\n"))?;
        }
        if let Some(align) = region_align {
            std::fs::create_dir_all(region.join("dax_region"))?;
            std::fs::write(region.join("dax_region/align"), format!("{align}\n"))?;
        }
        std::os::unix::fs::symlink(self.root.join("bus/dax"), dev.join("subsystem"))?;
        let number = format!("{}:{minor}", Self::MAJOR);
        std::os::unix::fs::symlink(&dev, self.root.join("dev/char").join(&number))?;
        let mut list = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(STAND_INS_FILE))?;
        std::io::Write::write_all(
            &mut list,
            format!("{number} {}\n", stand_in.display()).as_bytes(),
        )
    }
}

/// Reads a small sysfs attribute as text.
fn read_attr(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        op: "read",
        path: path.to_path_buf(),
        os: source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_is_decimal_with_the_old_hexadecimal_fallback() {
        assert_eq!(parse_align("2097152\n"), Ok(2 << 20));
        assert_eq!(parse_align("4096"), Ok(4096));
        assert_eq!(parse_align("1073741824\n"), Ok(1 << 30));
        // Kernels before 4.9: "200000" is not a power of two in decimal
        // but 2 MiB in hexadecimal.
        assert_eq!(parse_align("200000\n"), Ok(2 << 20));
        assert_eq!(parse_align("1000\n"), Ok(4096));
        // Digits that are decimal powers of two stay decimal.
        assert_eq!(parse_align("1024\n"), Ok(1024));
        for bad in [
            "",
            "\n",
            "0\n",
            "3\n",
            "-4096",
            "+4096",
            "0x1000",
            " 4096",
            "4k",
            "99999999999999999999999",
        ] {
            assert!(parse_align(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn size_is_plain_decimal() {
        assert_eq!(parse_size("17179869184\n"), Ok(16 << 30));
        assert_eq!(parse_size("0\n"), Ok(0));
        for bad in ["", "0x10", "12 MiB", "-1", "18446744073709551616"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subsystem_must_be_dax() {
        assert!(is_dax_subsystem(Path::new("/sys/class/dax")));
        assert!(is_dax_subsystem(Path::new("/sys/bus/dax")));
        assert!(!is_dax_subsystem(Path::new("/sys/class/mem")));
        assert!(!is_dax_subsystem(Path::new("/sys/bus/daxfoo")));
    }

    #[test]
    fn candidates_walk_up_to_the_devices_directory() {
        let sys = Path::new("/sys");
        let dev = Path::new("/sys/devices/platform/e820_pmem/ndbus0/region0/dax0.0/dax0.0");
        let got = align_candidates(sys, dev);
        let want: Vec<PathBuf> = [
            "/sys/devices/platform/e820_pmem/ndbus0/region0/dax0.0/dax0.0/align",
            "/sys/devices/platform/e820_pmem/ndbus0/region0/dax0.0/dax0.0/device/align",
            "/sys/devices/platform/e820_pmem/ndbus0/region0/dax0.0/dax0.0/device/dax_region/align",
            "/sys/devices/platform/e820_pmem/ndbus0/region0/dax0.0/dax_region/align",
            "/sys/devices/platform/e820_pmem/ndbus0/region0/dax_region/align",
            "/sys/devices/platform/e820_pmem/ndbus0/dax_region/align",
            "/sys/devices/platform/e820_pmem/dax_region/align",
            "/sys/devices/platform/dax_region/align",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
        // A directory outside <sysfs>/devices gets no ancestor candidates.
        assert_eq!(align_candidates(sys, Path::new("/elsewhere/x")).len(), 3);
    }

    /// A fake sysfs tree with one Device DAX at 252:0 in the bus layout:
    /// the alignment sits in the region's `dax_region` directory.
    fn fake_sysfs(align: Option<&str>, subsystem: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("temp dir");
        let r = root.path();
        let region = r.join("devices/platform/ndbus0/region0");
        let dev = region.join("dax0.0/dax0.0");
        std::fs::create_dir_all(&dev).expect("mkdir");
        std::fs::create_dir_all(region.join("dax_region")).expect("mkdir");
        std::fs::create_dir_all(r.join(subsystem)).expect("mkdir");
        std::fs::create_dir_all(r.join("dev/char")).expect("mkdir");
        std::fs::write(dev.join("size"), "4294967296\n").expect("write");
        if let Some(align) = align {
            std::fs::write(region.join("dax_region/align"), align).expect("write");
        }
        std::os::unix::fs::symlink(r.join(subsystem), dev.join("subsystem")).expect("symlink");
        std::os::unix::fs::symlink(&dev, r.join("dev/char/252:0")).expect("symlink");
        root
    }

    #[test]
    fn reader_finds_size_and_region_alignment() {
        let sys = fake_sysfs(Some("2097152\n"), "bus/dax");
        let dev = read(sys.path(), 252, 0, Path::new("/dev/dax0.0")).expect("device dax");
        assert_eq!(
            dev,
            DevDax {
                size: 4 << 30,
                align: 2 << 20
            }
        );
    }

    #[test]
    fn reader_prefers_the_device_own_alignment() {
        let sys = fake_sysfs(Some("2097152\n"), "class/dax");
        let dev_dir = sys
            .path()
            .join("devices/platform/ndbus0/region0/dax0.0/dax0.0");
        std::fs::write(dev_dir.join("align"), "1073741824\n").expect("write");
        let dev = read(sys.path(), 252, 0, Path::new("/dev/dax0.0")).expect("device dax");
        assert_eq!(dev.align, 1 << 30);
    }

    #[test]
    fn the_probe_knows_stand_ins_and_nothing_else() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sys = dir.path().join("sys");
        let mut fake = FakeSysfs::new(&sys).expect("fake sysfs");
        let dax = dir.path().join("dax0.0");
        let other = dir.path().join("other");
        std::fs::write(&dax, b"").expect("stand-in");
        std::fs::write(&other, b"").expect("file");
        fake.device(&dax, 16 << 20, 2 << 20).expect("device");
        let region = dir.path().join("dax1.0");
        std::fs::write(&region, b"").expect("stand-in");
        fake.device_in_region(&region, 1 << 30, 1 << 30)
            .expect("device");
        let probe = DevDaxProbe::with_sysfs(&sys).expect("probe");
        assert_eq!(
            probe.probe(&dax).expect("probe"),
            Some(DevDax {
                size: 16 << 20,
                align: 2 << 20
            })
        );
        assert_eq!(
            probe.probe(&region).expect("probe").map(|d| d.align),
            Some(1 << 30)
        );
        assert_eq!(probe.probe(&other).expect("probe"), None);
        assert_eq!(
            probe.probe(&dir.path().join("nothing")).expect("probe"),
            None
        );
        assert_eq!(probe.probe(dir.path()).expect("probe"), None);
        // The real system's probe has no stand-ins.
        assert_eq!(DevDaxProbe::system().probe(&dax).expect("probe"), None);

        let broken = dir.path().join("dax2.0");
        std::fs::write(&broken, b"").expect("stand-in");
        fake.raw_device(&broken, "12 MiB", Some("4096"))
            .expect("device");
        let probe = DevDaxProbe::with_sysfs(&sys).expect("probe");
        let e = probe.probe(&broken).expect_err("bad size");
        assert!(
            e.to_string().contains("expected a decimal number of bytes"),
            "{e}"
        );

        std::fs::write(sys.join(STAND_INS_FILE), "252:x /a\n").expect("write list");
        let e = DevDaxProbe::with_sysfs(&sys).expect_err("bad list");
        assert!(e.to_string().contains(STAND_INS_FILE), "{e}");
    }

    #[test]
    fn reader_errors_name_what_is_wrong() {
        let sys = fake_sysfs(Some("2097152\n"), "class/mem");
        let err = read(sys.path(), 252, 0, Path::new("/dev/zero")).expect_err("not dax");
        assert!(matches!(err, Error::NotDevDax { .. }), "{err}");
        assert!(err.to_string().contains("\"/dev/zero\""), "{err}");

        let err = read(sys.path(), 1, 5, Path::new("/dev/x")).expect_err("no such node");
        assert!(matches!(err, Error::NotDevDax { .. }), "{err}");

        let sys = fake_sysfs(Some("3\n"), "bus/dax");
        let err = read(sys.path(), 252, 0, Path::new("/dev/dax0.0")).expect_err("bad align");
        let text = err.to_string();
        assert!(text.contains("dax_region/align"), "{text}");
        assert!(text.contains("power of two"), "{text}");

        let sys = fake_sysfs(None, "bus/dax");
        let err = read(sys.path(), 252, 0, Path::new("/dev/dax0.0")).expect_err("no align");
        assert!(err.to_string().contains("no align attribute"), "{err}");
    }
}
