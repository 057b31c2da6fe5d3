//! Device DAX parts (docs/format.md §25) through the binary: regular files
//! stand in for devices, and a fake sysfs tree (`FakeSysfs`, which
//! `POOLSYNC_SYSFS` points the binary at) says which paths are devices and
//! of what size and alignment. Every command runs on them; a device file is
//! never replaced (its inode stays), never truncated, and `rm` zeroes its
//! first 2 MiB. Where PMDK is installed, it checks the bytes poolsync wrote
//! through a pool set file that names the stand-ins with explicit sizes
//! (PMDK sees regular files there).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use poolsync_pmem::dax::FakeSysfs;
use tempfile::TempDir;

use crate::support::{
    flip_byte, objclient, pmempool, poolsync_env, read_at, require_pmdk, s, temp_dir, Out,
};

const M: u64 = 1 << 20;

/// A temp dir with stand-ins for devices and the fake sysfs tree.
struct Devices {
    dir: TempDir,
    sysfs: PathBuf,
    devices: Vec<PathBuf>,
}

impl Devices {
    /// One stand-in `daxN.0` per `(MiB, alignment)`, zero-filled.
    fn new(specs: &[(u64, u64)]) -> Devices {
        let dir = temp_dir();
        let sysfs = dir.path().join("sys");
        let mut fake = FakeSysfs::new(&sysfs).expect("fake sysfs");
        let mut devices = Vec::new();
        for (i, &(mib, align)) in specs.iter().enumerate() {
            let path = dir.path().join(format!("dax{i}.0"));
            let f = fs::File::create(&path).expect("stand-in");
            f.set_len(mib * M).expect("size");
            fake.device(&path, mib * M, align).expect("device");
            devices.push(path);
        }
        Devices {
            dir,
            sysfs,
            devices,
        }
    }

    fn dev(&self, i: usize) -> &str {
        s(&self.devices[i])
    }

    /// Writes `<dir>/<name>`; `{N}` in `text` becomes device N's path.
    fn set(&self, name: &str, text: &str) -> PathBuf {
        let mut text = text.to_string();
        for i in 0..self.devices.len() {
            text = text.replace(&format!("{{{i}}}"), self.dev(i));
        }
        text = text.replace("{DIR}", s(self.dir.path()));
        let path = self.dir.path().join(name);
        fs::write(&path, text).expect("write set");
        path
    }

    /// `poolsync args` with the fake sysfs tree.
    fn run(&self, args: &[&str]) -> Out {
        let out = poolsync_env(args, &[("POOLSYNC_SYSFS", s(&self.sysfs))]);
        out.assert_no_crash();
        out
    }

    /// Inode and length of every stand-in: never replaced, never resized.
    fn identity(&self) -> Vec<(u64, u64)> {
        self.devices
            .iter()
            .map(|p| {
                let m = fs::metadata(p).expect("stand-in");
                (m.ino(), m.len())
            })
            .collect()
    }

    fn head_is_zero(&self, i: usize) -> bool {
        read_at(&self.devices[i], 0, (2 * M) as usize)
            .iter()
            .all(|&b| b == 0)
    }
}

#[test]
fn every_command_works_on_devices_that_are_never_replaced() {
    // Replica 2 concatenates two devices of 4 KiB alignment.
    let d = Devices::new(&[(32, 2 * M), (32, 2 * M), (16, 4096), (17, 4096)]);
    let set = d.set(
        "dax.set",
        "PMEMPOOLSET\nAUTO {0}\nREPLICA\nAUTO {1}\nREPLICA\nAUTO {2}\nAUTO {3}\n",
    );
    let set = s(&set);
    let ids = d.identity();
    d.run(&["create", "--layout", "dax", "obj", set])
        .assert_success();
    let info = d.run(&["info", set]);
    info.assert_success();
    assert!(
        info.stdout
            .contains("type                     : device dax"),
        "{}",
        info.describe()
    );
    assert!(
        info.stdout.contains("alignment                : 2097152"),
        "{}",
        info.describe()
    );
    assert!(
        info.stdout.contains("alignment                : 4096"),
        "{}",
        info.describe()
    );
    let checked = d.run(&["check", "-v", set]);
    assert!(
        checked.stdout.ends_with(": consistent\n"),
        "{}",
        checked.describe()
    );
    d.run(&["feature", "-d", "SHUTDOWN_STATE", set])
        .assert_success();
    assert_eq!(d.run(&["feature", "-q", "SHUTDOWN_STATE", set]).stdout, "0");
    // A broken header on a device: repaired in place.
    flip_byte(&d.devices[1], 100);
    assert_eq!(d.run(&["check", set]).code, Some(1));
    d.run(&["sync", set]).assert_success();
    assert!(d
        .run(&["check", "-v", set])
        .stdout
        .ends_with(": consistent\n"));
    assert_eq!(d.identity(), ids, "no device replaced or resized");

    // The PMDK checks are a part of this test only (the rest needs no PMDK).
    if require_pmdk("devdax::every_command_works_on_devices_that_are_never_replaced (PMDK checks)")
    {
        // PMDK reads the same bytes through explicit sizes.
        let plain = d.set(
            "plain.set",
            "PMEMPOOLSET\n32M {0}\nREPLICA\n32M {1}\nREPLICA\n16M {2}\n17M {3}\n",
        );
        let checked = pmempool(&["check", "-v", s(&plain)]);
        assert!(
            checked.stdout.contains("consistent"),
            "{}",
            checked.describe()
        );
        objclient(&["write", s(&plain), "dax", "on devices"]).assert_success();
        objclient(&["read", s(&plain), "dax", "on devices"]).assert_success();
    }

    // Removing replica 2 zeroes its devices' heads.
    let smaller = d.set("two.set", "PMEMPOOLSET\nAUTO {0}\nREPLICA\nAUTO {1}\n");
    d.run(&["transform", set, s(&smaller)]).assert_success();
    assert!(d.head_is_zero(2) && d.head_is_zero(3));
    // And adding it back takes them again.
    d.run(&["transform", s(&smaller), set]).assert_success();
    assert!(d
        .run(&["check", "-v", set])
        .stdout
        .ends_with(": consistent\n"));
    // rm zeroes every device and leaves it in place.
    let rm = d.run(&["rm", "-v", set]);
    rm.assert_success();
    assert!(
        rm.stdout.contains("its pool header was zeroed"),
        "{}",
        rm.describe()
    );
    for i in 0..4 {
        assert!(d.head_is_zero(i), "device {i}");
    }
    assert_eq!(d.identity(), ids);
    // A single-file pool on a device takes all of it.
    d.run(&["create", "obj", d.dev(0)]).assert_success();
    let info = d.run(&["info", d.dev(0)]);
    assert!(
        info.stdout
            .contains("type                     : device dax"),
        "{}",
        info.describe()
    );
    d.run(&["rm", d.dev(0)]).assert_success();
    assert!(d.head_is_zero(0));
    assert_eq!(d.identity(), ids);
}

#[test]
fn device_rules_are_pmdks_and_refusals_write_nothing() {
    let d = Devices::new(&[(16, 2 * M), (16, 2 * M), (16, 4096)]);
    let refused = |name: &str, text: &str, args: &[&str], want: &str| {
        let set = d.set(name, text);
        let before: Vec<Vec<u8>> = d
            .devices
            .iter()
            .map(|p| fs::read(p).expect("read"))
            .collect();
        let mut all = args.to_vec();
        all.push(s(&set));
        let out = d.run(&all);
        assert_eq!(out.code, Some(1), "{}", out.describe());
        assert!(out.stderr.contains(want), "{want}\n{}", out.describe());
        let after: Vec<Vec<u8>> = d
            .devices
            .iter()
            .map(|p| fs::read(p).expect("read"))
            .collect();
        assert!(before == after, "{name}: a device changed");
    };
    let create = ["create", "obj"];
    refused(
        "align.set",
        "PMEMPOOLSET\nAUTO {0}\nAUTO {1}\n",
        &create,
        "Multiple DAX devices with alignment other than 4KB. Use the SINGLEHDR poolset option.",
    );
    refused(
        "mix.set",
        "PMEMPOOLSET\nAUTO {2}\n16M {DIR}/file\n",
        &create,
        "either all the parts must be Device DAX or none",
    );
    refused(
        "auto.set",
        "PMEMPOOLSET\nAUTO {DIR}/align.set\n",
        &["info"],
        "cannot determine size of a part",
    );
    refused(
        "size.set",
        "PMEMPOOLSET\n32M {0}\n",
        &create,
        "file size does not match config",
    );
    // SINGLEHDR lifts the alignment rule.
    let single = d.set(
        "single.set",
        "PMEMPOOLSET\nOPTION SINGLEHDR\nAUTO {0}\nAUTO {1}\n",
    );
    d.run(&["create", "obj", s(&single)]).assert_success();
    // A device holding a pool is not taken by create, or by -s.
    refused(
        "again.set",
        "PMEMPOOLSET\nOPTION SINGLEHDR\nAUTO {0}\nAUTO {1}\n",
        &create,
        "non-empty Device DAX detected",
    );
    let out = d.run(&["create", "-s", "16M", "obj", d.dev(2)]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("cannot be used with a Device DAX"),
        "{}",
        out.describe()
    );
    // Sync cannot resize a device.
    let pair = d.set(
        "pair.set",
        "PMEMPOOLSET\nAUTO {2}\nREPLICA\n16M {DIR}/file\n",
    );
    d.run(&["create", "obj", s(&pair)]).assert_success();
    refused(
        "pair.set",
        "PMEMPOOLSET\n20M {2}\nREPLICA\n16M {DIR}/file\n",
        &["sync"],
        "a Device DAX cannot be recreated",
    );
    // A sysfs tree that cannot be read is named.
    fs::write(
        d.sysfs.join("devices/platform/fake/region2/dax2.0/size"),
        "junk\n",
    )
    .expect("break size");
    let out = d.run(&["info", d.dev(2)]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("252:2/size"), "{}", out.describe());
}
