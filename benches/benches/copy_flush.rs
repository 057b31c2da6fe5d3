//! Copy + flush + fence throughput of each persistence path: one buffer
//! written with `write_at`, persisted with `flush` and `fence`, for sizes
//! from 4 KiB to 64 MiB.
//!
//! * `pagecache`: `FsStorage` (pwrite, then fdatasync to the disk);
//! * `dax`: `DaxStorage` forced onto an ordinary file (CPU stores into the
//!   mapping, non-temporal from 256 KiB, cache-line flushes, SFENCE);
//! * `dax-no-nt`: the same without non-temporal stores.
//!
//! Off persistent memory the forced DAX path maps the page cache, so its
//! figures measure the CPU side of the path (stores and cache-line
//! write-backs to DRAM), not durability; the page-cache figures include
//! the disk. Run with `cargo xtask bench copy_flush` (or `cargo bench -p
//! poolsync-benches --bench copy_flush`).
#![forbid(unsafe_code)]

use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use poolsync_pmem::{DaxOptions, DaxStorage, FsStorage, PartFile, Storage};

const SIZES: [(&str, usize); 5] = [
    ("4KiB", 4 << 10),
    ("64KiB", 64 << 10),
    ("1MiB", 1 << 20),
    ("16MiB", 16 << 20),
    ("64MiB", 64 << 20),
];

/// Measures every size on `storage`, in files created under `dir`.
fn measure<S: Storage>(c: &mut Criterion, name: &str, storage: &S, dir: &Path) {
    let mut group = c.benchmark_group(format!("copy+flush+fence/{name}"));
    for (label, size) in SIZES {
        let path = dir.join(format!("{name}-{label}.part"));
        let part = storage
            .create(&path, size as u64)
            .expect("creating the part");
        part.fence().expect("persisting the allocation");
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        if size >= 16 << 20 {
            group.sample_size(10);
        } else {
            group.sample_size(50);
        }
        group.bench_with_input(BenchmarkId::from_parameter(label), &data, |b, data| {
            b.iter(|| {
                part.write_at(0, data).expect("write_at");
                part.flush(0, data.len() as u64).expect("flush");
                part.fence().expect("fence");
            })
        });
        drop(part);
        storage.remove(&path).expect("removing the part");
    }
    group.finish();
}

fn copy_flush(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    measure(c, "pagecache", &FsStorage, dir.path());

    let dax = DaxStorage::forced();
    // Say what the DAX path is on this machine, since it decides what the
    // figures mean.
    let probe_path = dir.path().join("probe.part");
    let probe = dax
        .create(&probe_path, 4096)
        .expect("creating a probe part");
    eprintln!(
        "dax path: mapping {:?}, flush {}, non-temporal stores {}",
        probe.mapping(),
        probe.flush_kind(),
        probe.uses_non_temporal_stores()
    );
    drop(probe);
    dax.remove(&probe_path).expect("removing the probe part");
    measure(c, "dax", &dax, dir.path());

    let no_nt = DaxStorage::with_options(DaxOptions {
        force: true,
        nt_threshold: usize::MAX,
        ..DaxOptions::default()
    });
    measure(c, "dax-no-nt", &no_nt, dir.path());
}

criterion_group!(benches, copy_flush);
criterion_main!(benches);
