//! `cargo xtask bench [NAME]`: the criterion benchmarks of `benches/`.

use std::path::Path;

use anyhow::Result;

use crate::util;

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
