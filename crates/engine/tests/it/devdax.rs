//! Device DAX parts (docs/format.md §25) on the simulated storage: a
//! wrapper says which paths are devices (files of the device's size stand
//! in for them), and every command must resolve `AUTO`, keep PMDK's rules,
//! and never create, unlink, allocate or chmod a device: `rm` zeroes its
//! head, a rebuild overwrites it. Crash points of `rm` and of a transform
//! that adds and removes a replica on devices.

use std::path::{Path, PathBuf};

use poolsync_engine::create::{create, CreateOptions};
use poolsync_engine::devdax::DEVICE_DAX_ZERO_LEN;
use poolsync_engine::feature;
use poolsync_engine::inspect::inspect;
use poolsync_engine::open::open;
use poolsync_engine::ring::UuidSource;
use poolsync_engine::rm::{rm, AlwaysYes, Outcome, RmOptions};
use poolsync_engine::sync::{sync, NoProgress, SyncOptions};
use poolsync_engine::transform::{transform, TransformOptions};
use poolsync_engine::Error;
use poolsync_header::{Feature, PoolHdr, POOL_HDR_SIZE};
use poolsync_pmem::sim::{SimStorage, Survival};
use poolsync_pmem::{Access, Clock, DevDax, Error as PmemError, Meta, Obstacle, Storage};

use crate::crash::CrashTest;
use crate::support::{flip, Op, Wrapped};

const M: u64 = 1 << 20;

/// A storage whose `device_dax` names the given paths as devices.
#[derive(Debug, Clone)]
struct WithDevices<S> {
    inner: S,
    devices: Vec<(PathBuf, DevDax)>,
}

impl<S: Storage> Storage for WithDevices<S> {
    type File = S::File;
    type Aux = S::Aux;
    fn stat(&self, path: &Path) -> Result<Option<Meta>, PmemError> {
        self.inner.stat(path)
    }
    fn open(&self, path: &Path, access: Access) -> Result<S::File, PmemError> {
        self.inner.open(path, access)
    }
    fn create(&self, path: &Path, size: u64) -> Result<S::File, PmemError> {
        assert!(
            self.device(path).is_none(),
            "create of device {}",
            path.display()
        );
        self.inner.create(path, size)
    }
    fn removal_obstacle(&self, path: &Path) -> Result<Option<Obstacle>, PmemError> {
        self.inner.removal_obstacle(path)
    }
    fn creation_obstacle(&self, path: &Path) -> Result<Option<Obstacle>, PmemError> {
        self.inner.creation_obstacle(path)
    }
    fn remove(&self, path: &Path) -> Result<(), PmemError> {
        // pmem's storage refuses this too; here it is a test failure.
        assert!(
            self.device(path).is_none(),
            "unlink of device {}",
            path.display()
        );
        self.inner.remove(path)
    }
    fn set_mode(&self, path: &Path, mode: u32) -> Result<(), PmemError> {
        assert!(
            self.device(path).is_none(),
            "chmod of device {}",
            path.display()
        );
        self.inner.set_mode(path, mode)
    }
    fn rename(&self, from: &Path, to: &Path) -> Result<(), PmemError> {
        self.inner.rename(from, to)
    }
    fn create_aux(&self, path: &Path, mode: u32) -> Result<S::Aux, PmemError> {
        self.inner.create_aux(path, mode)
    }
    fn open_aux(&self, path: &Path, access: Access) -> Result<S::Aux, PmemError> {
        self.inner.open_aux(path, access)
    }
    fn device_dax(&self, path: &Path) -> Result<Option<DevDax>, PmemError> {
        Ok(self.device(path))
    }
    fn clock(&self) -> &dyn Clock {
        self.inner.clock()
    }
    fn current_dir(&self) -> Result<PathBuf, PmemError> {
        self.inner.current_dir()
    }
    fn fsync_dir(&self, dir: &Path) -> Result<(), PmemError> {
        self.inner.fsync_dir(dir)
    }
    fn free_space(&self, dir: &Path) -> Result<Option<u64>, PmemError> {
        self.inner.free_space(dir)
    }
}

impl<S> WithDevices<S> {
    fn device(&self, path: &Path) -> Option<DevDax> {
        self.devices
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, d)| *d)
    }
}

/// `/dev/dax<i>.0` for every `(size in MiB, alignment)`, as zero-filled
/// stand-ins on a fresh simulated storage with `/pool` for files.
fn devices(specs: &[(u64, u64)]) -> (SimStorage, Vec<(PathBuf, DevDax)>) {
    let s = SimStorage::new();
    s.add_dir(Path::new("/pool")).expect("dir");
    s.add_dir(Path::new("/dev")).expect("dir");
    let mut list = Vec::new();
    for (i, &(mib, align)) in specs.iter().enumerate() {
        let path = PathBuf::from(format!("/dev/dax{i}.0"));
        s.insert_file(&path, &vec![0u8; (mib * M) as usize], 0o600)
            .expect("device");
        list.push((
            path,
            DevDax {
                size: mib * M,
                align,
            },
        ));
    }
    (s, list)
}

fn put(s: &SimStorage, path: &str, text: &str) {
    if s.stat(Path::new(path)).expect("stat").is_some() {
        s.remove(Path::new(path)).expect("remove");
    }
    s.insert_file(Path::new(path), text.as_bytes(), 0o644)
        .expect("set file");
}

fn created(s: &WithDevices<SimStorage>, set: &str) {
    let options = CreateOptions {
        layout: "dax".to_string(),
        ..CreateOptions::default()
    };
    create(s, Path::new(set), &options).unwrap_or_else(|e| panic!("create {set}: {e}"));
}

fn header(s: &SimStorage, path: &Path) -> PoolHdr {
    let bytes = s.written_bytes(path).expect("part");
    PoolHdr::decode(&bytes[..POOL_HDR_SIZE]).expect("header")
}

const TWO_DEVICES: &str = "PMEMPOOLSET\nAUTO /dev/dax0.0\nREPLICA\nAUTO /dev/dax1.0\n";

#[test]
fn auto_sizes_are_the_devices_and_create_reuses_them() {
    let (sim, list) = devices(&[(16, 2 * M), (24, 2 * M)]);
    let s = WithDevices {
        inner: Wrapped::new(sim.clone()),
        devices: list.clone(),
    };
    put(&sim, "/pool/d.set", TWO_DEVICES);
    created(
        &WithDevices {
            inner: sim.clone(),
            devices: list.clone(),
        },
        "/pool/d.set",
    );
    let set = open(&s, Path::new("/pool/d.set"), Access::ReadOnly).expect("open");
    assert_eq!(set.set.pool_size(), Some(16 * M), "AUTO sizes resolved");
    assert_eq!(
        set.part(1, 0).and_then(|p| p.device).map(|d| d.size),
        Some(24 * M)
    );
    assert!(inspect(&set).is_healthy());
    drop(set);
    for (path, _) in &list {
        assert!(header(&sim, path).checksum_ok());
        assert_eq!(
            sim.written_bytes(path).map(|b| b.len() as u64),
            Some(if path.ends_with("dax0.0") {
                16 * M
            } else {
                24 * M
            })
        );
    }
    // A feature change works on devices as on files.
    feature::set(&s, Path::new("/pool/d.set"), Feature::ShutdownState, false).expect("feature");
    assert!(
        !feature::query(&s, Path::new("/pool/d.set"), Feature::ShutdownState)
            .expect("query")
            .enabled
    );
    // A second create: the devices are not empty.
    let e = create(&s, Path::new("/pool/d.set"), &CreateOptions::default()).expect_err("non-empty");
    assert!(
        e.to_string().contains("non-empty Device DAX detected"),
        "{e}"
    );
    assert!(e.to_string().contains("poolsync rm /dev/dax0.0"), "{e}");
    // -f zeroes them (never unlinks) and creates the pool again.
    let log_before = s.inner.log().len();
    create(
        &s,
        Path::new("/pool/d.set"),
        &CreateOptions {
            force: true,
            ..CreateOptions::default()
        },
    )
    .expect("create -f");
    // Only the create journal beside the set file is created and removed.
    let ops = &s.inner.log()[log_before..];
    assert!(
        !ops.iter().any(|op| match op {
            Op::Create { path, .. } | Op::Remove { path } | Op::SetMode { path, .. } =>
                !path.to_string_lossy().contains(".poolsync-create"),
            _ => false,
        }),
        "{ops:?}"
    );
}

#[test]
fn pmdk_rules_for_devices_are_kept() {
    let (sim, list) = devices(&[(16, 2 * M), (16, 2 * M), (16, 4096), (16, 4096)]);
    let s = WithDevices {
        inner: sim.clone(),
        devices: list,
    };
    let refused = |text: &str| {
        put(&sim, "/pool/r.set", text);
        let e =
            create(&s, Path::new("/pool/r.set"), &CreateOptions::default()).expect_err("refused");
        e.to_string()
    };
    // Concatenated devices need a 4 KiB alignment, or SINGLEHDR.
    let e = refused("PMEMPOOLSET\nAUTO /dev/dax0.0\nAUTO /dev/dax1.0\n");
    assert!(e.contains("/pool/r.set:2"), "{e}");
    assert!(
        e.contains(
            "Multiple DAX devices with alignment other than 4KB. Use the SINGLEHDR poolset option."
        ),
        "{e}"
    );
    // All or none.
    let e = refused("PMEMPOOLSET\nAUTO /dev/dax2.0\n16M /pool/f\n");
    assert!(
        e.contains("either all the parts must be Device DAX or none"),
        "{e}"
    );
    // AUTO is for devices only.
    let e = refused("PMEMPOOLSET\nAUTO /pool/nothing\n");
    assert!(e.contains("cannot determine size of a part"), "{e}");
    assert!(e.contains("does not exist"), "{e}");
    // A size that is not the device's.
    let e = refused("PMEMPOOLSET\n32M /dev/dax2.0\n");
    assert!(e.contains("file size does not match config"), "{e}");
    // These are fine.
    for text in [
        "PMEMPOOLSET\nOPTION SINGLEHDR\nAUTO /dev/dax0.0\nAUTO /dev/dax1.0\n",
        "PMEMPOOLSET\nAUTO /dev/dax2.0\n16M /dev/dax3.0\n",
    ] {
        put(&sim, "/pool/ok.set", text);
        created(&s, "/pool/ok.set");
        rm(
            &s,
            Path::new("/pool/ok.set"),
            &RmOptions::default(),
            &mut AlwaysYes,
        )
        .expect("rm");
    }
    // A single-file pool on a device takes the device, and no -s.
    created(&s, "/dev/dax0.0");
    assert!(
        inspect(&open(&s, Path::new("/dev/dax0.0"), Access::ReadOnly).expect("open")).is_healthy()
    );
    let e = create(
        &s,
        Path::new("/dev/dax1.0"),
        &CreateOptions {
            size: Some(16 * M),
            ..CreateOptions::default()
        },
    )
    .expect_err("-s on a device");
    assert!(
        e.to_string()
            .contains("-s|--size cannot be used with a Device DAX"),
        "{e}"
    );
}

#[test]
fn sync_overwrites_a_broken_device_and_never_recreates_one() {
    let (sim, list) = devices(&[(16, 2 * M), (16, 2 * M)]);
    let s = WithDevices {
        inner: Wrapped::new(sim.clone()),
        devices: list,
    };
    put(&sim, "/pool/d.set", TWO_DEVICES);
    created(
        &WithDevices {
            inner: sim.clone(),
            devices: s.devices.clone(),
        },
        "/pool/d.set",
    );
    flip(&sim, Path::new("/dev/dax1.0"), 64);
    let options = SyncOptions {
        threads: 1,
        ..SyncOptions::default()
    };
    sync(&s, Path::new("/pool/d.set"), &options, &NoProgress).expect("sync");
    assert!(
        !s.inner
            .log()
            .iter()
            .any(|op| matches!(op, Op::Create { path, .. } | Op::Remove { path } if path.starts_with("/dev"))),
        "{:?}",
        s.inner.log()
    );
    assert!(
        inspect(&open(&s, Path::new("/pool/d.set"), Access::ReadOnly).expect("open")).is_healthy()
    );
    // A configured size that is not the device's cannot be fixed by sync.
    put(
        &sim,
        "/pool/d.set",
        "PMEMPOOLSET\nAUTO /dev/dax0.0\nREPLICA\n24M /dev/dax1.0\n",
    );
    let before = sim.image();
    let e = sync(&s, Path::new("/pool/d.set"), &options, &NoProgress).expect_err("refused");
    assert!(
        e.to_string().contains("a Device DAX cannot be recreated"),
        "{e}"
    );
    assert!(e.to_string().contains("write AUTO"), "{e}");
    assert_eq!(sim.image(), before);
}

#[test]
fn crash_while_rm_zeroes_devices() {
    let (sim, list) = devices(&[(16, 2 * M), (16, 2 * M)]);
    put(&sim, "/pool/d.set", TWO_DEVICES);
    created(
        &WithDevices {
            inner: sim.clone(),
            devices: list.clone(),
        },
        "/pool/d.set",
    );
    let test = CrashTest::new("rm on devices", sim, |w| {
        let s = WithDevices {
            inner: w.clone(),
            devices: list.clone(),
        };
        // A crash inside the removal of one file is that file's failure.
        let report = rm(
            &s,
            Path::new("/pool/d.set"),
            &RmOptions::default(),
            &mut AlwaysYes,
        )?;
        let zeroed = report
            .files
            .iter()
            .filter(|f| matches!(f.outcome, Outcome::Zeroed))
            .count();
        match report.files.into_iter().find_map(|f| match f.outcome {
            Outcome::Failed(e) => Some(e),
            _ => None,
        }) {
            Some(e) => Err(e),
            None => Ok(zeroed),
        }
    });
    let reference = test.reference();
    assert_eq!(reference.outcome, 2, "both devices zeroed");
    for (path, dev) in &list {
        let bytes = reference.storage.written_bytes(path).expect("device stays");
        assert_eq!(bytes.len() as u64, dev.size);
        assert!(bytes[..DEVICE_DAX_ZERO_LEN as usize]
            .iter()
            .all(|&b| b == 0));
    }
    test.sweep(&reference, reference.all_points())
        .after_crash(|c| {
            // Every device is still there, whole; a header is either the
            // pool's or zero, never a torn mix in front of zeroed metadata.
            for (path, dev) in &list {
                let bytes = c.storage.written_bytes(path).expect("device");
                assert_eq!(bytes.len() as u64, dev.size, "{c}");
                let h = PoolHdr::decode(&bytes).expect("header");
                assert!(h.is_zero() || h.checksum_ok(), "{c}: {}", path.display());
            }
        })
        .run();
}

#[test]
fn transform_adds_and_removes_a_replica_on_a_device() {
    let (sim, list) = devices(&[(16, 2 * M)]);
    put(&sim, "/pool/one.set", "PMEMPOOLSET\n16M /pool/a\n");
    put(
        &sim,
        "/pool/two.set",
        "PMEMPOOLSET\n16M /pool/a\nREPLICA\nAUTO /dev/dax0.0\n",
    );
    let s = WithDevices {
        inner: sim.clone(),
        devices: list.clone(),
    };
    created(&s, "/pool/one.set");
    let options = TransformOptions {
        threads: 1,
        uuids: UuidSource::Derived { seed: 25 },
        ..TransformOptions::default()
    };
    let add = |w: &Wrapped| {
        let s = WithDevices {
            inner: w.clone(),
            devices: list.clone(),
        };
        transform(
            &s,
            Path::new("/pool/one.set"),
            Path::new("/pool/two.set"),
            &options,
            &NoProgress,
        )
    };
    let test = CrashTest::new(
        "transform onto a device",
        sim.after_crash_with(Survival::Everything),
        add,
    );
    let reference = test.reference();
    let added = reference.storage.clone();
    assert!(inspect(
        &open(
            &WithDevices {
                inner: added.clone(),
                devices: list.clone()
            },
            Path::new("/pool/two.set"),
            Access::ReadOnly
        )
        .expect("open")
    )
    .is_healthy());
    test.sweep(&reference, reference.all_points())
        .end_image(crate::support::normalized)
        .run();
    // Removing it zeroes the device's head.
    let s = WithDevices {
        inner: added.clone(),
        devices: list.clone(),
    };
    transform(
        &s,
        Path::new("/pool/two.set"),
        Path::new("/pool/one.set"),
        &options,
        &NoProgress,
    )
    .expect("remove the replica");
    let bytes = added
        .written_bytes(Path::new("/dev/dax0.0"))
        .expect("device stays");
    assert!(bytes[..DEVICE_DAX_ZERO_LEN as usize]
        .iter()
        .all(|&b| b == 0));
    // A device holding another pool is not taken.
    created(&s, "/dev/dax0.0");
    let e = transform(
        &s,
        Path::new("/pool/one.set"),
        Path::new("/pool/two.set"),
        &options,
        &NoProgress,
    )
    .expect_err("foreign pool");
    assert!(matches!(e, Error::DeviceDaxPart { .. }), "{e}");
    assert!(e.to_string().contains("poolsync rm /dev/dax0.0"), "{e}");
}
