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
//! The parsers are pure functions; the reader takes the sysfs root as a
//! parameter so that tests can build a fake tree. No machine this crate is
//! tested on has a Device DAX, so mapping one is untested.

use std::io;
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
                source,
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
        source,
    })?;
    for candidate in align_candidates(sysfs, &dev_dir) {
        let text = match std::fs::read_to_string(&candidate) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::Io {
                    op: "read",
                    path: candidate,
                    source,
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

/// Reads a small sysfs attribute as text.
fn read_attr(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
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
