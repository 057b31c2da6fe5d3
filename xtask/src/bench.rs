//! `cargo xtask bench [NAME]`: the criterion benchmarks of `benches/`;
//! `cargo xtask bench packets [...]`: update packets against `cat` and
//! `rsync --only-write-batch` (`bench_packets`);
//! `cargo xtask bench sync [...]`: poolsync against `pmempool sync`
//! (`bench_sync`); `cargo xtask bench verify [...]`: the throughput of
//! `check --data` and `sync --verify` (`bench_verify`); `cargo xtask bench
//! transform [...]`: adding a replica, poolsync against `pmempool
//! transform` (`bench_transform`); `cargo xtask bench remote [...]`: a
//! remote replica over ssh against rsync (`bench_remote`). Sync, verify
//! and transform build poolsync and can run an older binary beside it
//! (`--baseline BIN`) through `bench_baseline`; packets runs one beside
//! it in its own way (see `bench_packets`).

use std::path::Path;

use anyhow::{bail, Result};

use crate::{bench_packets, bench_remote, bench_sync, bench_transform, bench_verify, util};

/// `cargo xtask bench ARGS`: `sync [OPTIONS]` compares poolsync with
/// pmempool, `verify [OPTIONS]` measures heap-aware verification,
/// `transform [OPTIONS]` compares adding a replica with pmempool's; anything
/// else names criterion benchmarks (see [`run`]).
pub fn command(root: &Path, args: &[String]) -> Result<()> {
    match args.split_first() {
        Some((first, rest)) if first == "sync" => bench_sync::run(root, rest),
        Some((first, rest)) if first == "verify" => bench_verify::run(root, rest),
        Some((first, rest)) if first == "transform" => bench_transform::run(root, rest),
        Some((first, rest)) if first == "remote" => bench_remote::run(root, rest),
        // The counting wrapper `bench remote` runs ssh under.
        Some((first, rest)) if first == bench_remote::COUNT => bench_remote::count(rest),
        Some((first, rest)) if first == "packets" => bench_packets::run(root, rest),
        // The measuring wrapper `bench sync` runs each tool under.
        Some((first, rest)) if first == bench_sync::MEASURE => bench_sync::measure(rest),
        _ if args.len() > 1 => {
            bail!("`bench` takes at most one benchmark name filter, got {args:?}")
        }
        _ => run(root, args.first().map(String::as_str)),
    }
}

/// Runs `cargo bench -p poolsync-benches`. `name` is either a benchmark
/// file (`hot`, `copy_flush`: only that harness runs) or a filter handed to
/// criterion (only the benchmarks whose id contains it run).
pub fn run(root: &Path, name: Option<&str>) -> Result<()> {
    let mut cmd = util::cargo();
    cmd.args(["bench", "--package", "poolsync-benches"])
        .current_dir(root);
    match name {
        Some(name) if is_bench_target(root, name) => {
            cmd.args(["--bench", name]);
        }
        Some(filter) => {
            cmd.args(["--", filter]);
        }
        None => {}
    }
    util::run(&mut cmd)
}

fn is_bench_target(root: &Path, name: &str) -> bool {
    !name.contains(['/', '\\', '.'])
        && root
            .join("benches")
            .join("benches")
            .join(format!("{name}.rs"))
            .is_file()
}
