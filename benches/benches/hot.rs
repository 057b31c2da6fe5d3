//! The hot paths of the codecs, measured with criterion: the header
//! checksum and pool set parsing. Writing until the data is durable, per
//! persistence path and size, is measured by `copy_flush.rs`.
//!
//! Run with `cargo xtask bench [NAME]`; `cargo xtask test` runs each
//! benchmark once as a smoke test.
#![forbid(unsafe_code)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use poolsync_benches::{header_page, pool_set_text};
use poolsync_header::{fletcher64, POOL_HDR_CSUM_OFF};

/// Fletcher64 over one 4 KiB header, as every header read and write does.
fn checksum(c: &mut Criterion) {
    let page = header_page();
    let mut group = c.benchmark_group("fletcher64");
    group.throughput(Throughput::Bytes(page.len() as u64));
    group.bench_function("4KiB header", |b| {
        b.iter(|| fletcher64(black_box(&page), POOL_HDR_CSUM_OFF, None))
    });
    group.finish();
}

/// Parsing the text of a pool set with 100 replicas.
fn parse(c: &mut Criterion) {
    let text = pool_set_text(100, 3);
    let mut group = c.benchmark_group("poolset parse");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function("100 replicas", |b| {
        b.iter(|| poolsync_poolset::parse(black_box(&text)).expect("generated text parses"))
    });
    group.finish();
}

criterion_group!(benches, checksum, parse);
criterion_main!(benches);
