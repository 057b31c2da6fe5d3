//! The crates.io side of the workspace: `cargo xtask package` (a step of
//! `cargo xtask ci`) and `cargo xtask publish-check`.
//!
//! `package` (`cargo package --no-verify` of every publishable crate) takes
//! seconds: it proves that the manifests are ones crates.io accepts (every
//! path dependency has a version, the readme exists) and that the file
//! lists can be built. `publish-check` is `cargo publish --workspace
//! --dry-run`: it also builds every crate from its packaged sources against
//! its siblings as they would be published. That takes about 2 minutes on
//! 2 cores, always from cold (see [`publish_check`]), while a cold
//! `cargo xtask ci` already takes about 20, so it runs before a release
//! rather than in CI (see README.md, "Development").

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::util;

/// The workspace crates that may be published (no `publish = false`), as
/// (name, version).
pub fn publishable(root: &Path) -> Result<Vec<(String, String)>> {
    let output = util::cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .context("running `cargo metadata`")?;
    if !output.status.success() {
        bail!(
            "`cargo metadata` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("parsing the output of `cargo metadata`")?;
    let names: Vec<(String, String)> = metadata["packages"]
        .as_array()
        .context("cargo metadata lists no packages")?
        .iter()
        // `publish` is null when any registry may have the crate, and an
        // empty list for `publish = false`.
        .filter(|p| p["publish"].is_null())
        .filter_map(|p| {
            Some((
                p["name"].as_str()?.to_string(),
                p["version"].as_str()?.to_string(),
            ))
        })
        .collect();
    if names.is_empty() {
        bail!("no publishable crate in the workspace");
    }
    Ok(names)
}

/// `cargo package --no-verify` of every publishable crate.
pub fn package(root: &Path) -> Result<()> {
    let mut cmd = util::cargo();
    cmd.args(["package", "--no-verify", "--allow-dirty", "--quiet"]);
    for (name, _) in publishable(root)? {
        cmd.args(["-p", &name]);
    }
    util::run(cmd.current_dir(root))
}

/// `cargo xtask publish-check`: `cargo publish --workspace --dry-run`.
///
/// The dry run verifies each crate against its siblings through a local
/// registry, which cargo unpacks under `$CARGO_HOME/registry/src/-<hash>/`
/// and builds like any registry crate. Cargo takes a registry crate of a
/// given version to be immutable: an unpacked copy, and the artifacts built
/// from it, of an earlier run of the same version would be reused, and a
/// crate checked against stale sources of its siblings. So the dry run
/// builds in a target directory of its own, emptied first, and our crates'
/// unpacked copies are removed.
pub fn publish_check(root: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    let target = util::target_dir(root)?.join("publish-check");
    if target.exists() {
        std::fs::remove_dir_all(&target)
            .with_context(|| format!("removing {}", target.display()))?;
    }
    remove_stale_unpacked(&publishable(root)?)?;
    util::run(
        util::cargo()
            .args(["publish", "--workspace", "--dry-run", "--allow-dirty"])
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(root),
    )?;
    eprintln!(
        "xtask: every publishable crate packages and builds from its package ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Removes `$CARGO_HOME/registry/src/-<hash>/<name>-<version>` (the
/// unpacked crates of earlier dry runs' local registries; crates.io's own
/// directory is not named with a leading `-`) for our crates.
fn remove_stale_unpacked(crates: &[(String, String)]) -> Result<()> {
    let home = match std::env::var_os("CARGO_HOME") {
        Some(home) => std::path::PathBuf::from(home),
        None => match std::env::var_os("HOME") {
            Some(home) => Path::new(&home).join(".cargo"),
            None => return Ok(()),
        },
    };
    let src = home.join("registry").join("src");
    let Ok(registries) = std::fs::read_dir(&src) else {
        return Ok(());
    };
    for registry in registries.flatten() {
        if !registry.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        for (name, version) in crates {
            let unpacked = registry.path().join(format!("{name}-{version}"));
            if unpacked.exists() {
                std::fs::remove_dir_all(&unpacked)
                    .with_context(|| format!("removing {}", unpacked.display()))?;
            }
        }
    }
    Ok(())
}
