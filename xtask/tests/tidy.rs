//! Tidy checks: the project's written rules, enforced as ordinary tests.
//!
//! The idea is rust-analyzer's `tidy.rs`: rules that reviewers would
//! otherwise have to remember (a `//!` header on every file, no debugging
//! leftovers, `unsafe` only in `crates/pmem` and always argued, the layer
//! graph between crates) are checked by `cargo test`, so `cargo xtask test`
//! and CI enforce them and a failure names the file and line to fix.
//!
//! Patterns that would match this file itself are assembled with `concat!`.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root (the parent of `xtask/`).
fn root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}

/// Directories that hold build output or fuzzer state, not sources.
fn is_skipped_dir(root: &Path, dir: &Path) -> bool {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name == ".git" || name == "target" {
        return true;
    }
    let fuzz = root.join("fuzz");
    ["corpus", "artifacts", "coverage"]
        .iter()
        .any(|d| dir == fuzz.join(d))
}

/// Every `.rs` file of the repository outside build output, as paths
/// relative to the root, sorted. Untracked files count: a file is held to
/// the rules before it is committed.
fn rust_files() -> Vec<PathBuf> {
    let root = root();
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
            let path = entry.path();
            let file_type = entry
                .file_type()
                .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
            if file_type.is_dir() {
                if !is_skipped_dir(&root, &path) {
                    stack.push(path);
                }
            } else if file_type.is_file() && path.extension().is_some_and(|e| e == "rs") {
                files.push(
                    path.strip_prefix(&root)
                        .expect("walked below the root")
                        .to_path_buf(),
                );
            }
        }
    }
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with("xtask/tests/tidy.rs")),
        "the walk did not even find tidy.rs; it looked in {}",
        root.display()
    );
    files
}

fn read(relative: &Path) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn fail_if_any(rule: &str, violations: &[String]) {
    assert!(
        violations.is_empty(),
        "{rule}:\n  {}\n",
        violations.join("\n  ")
    );
}

#[test]
fn every_rust_file_starts_with_a_doc_comment() {
    let mut violations = Vec::new();
    for file in rust_files() {
        let text = read(&file);
        if !text.trim_start().starts_with("//!") {
            violations.push(format!(
                "{}: does not start with a `//!` comment saying what it is for",
                file.display()
            ));
        }
    }
    fail_if_any(
        "every .rs file starts with a `//!` doc comment",
        &violations,
    );
}

#[test]
fn no_debugging_leftovers() {
    let forbidden = [
        concat!("db", "g!("),
        concat!("to", "do!("),
        concat!("unimple", "mented!("),
    ];
    let mut violations = Vec::new();
    for file in rust_files() {
        for (n, line) in read(&file).lines().enumerate() {
            for pattern in forbidden {
                if line.contains(pattern) {
                    violations.push(format!("{}:{}: `{pattern}`", file.display(), n + 1));
                }
            }
        }
    }
    fail_if_any("no debugging or placeholder macros", &violations);
}

/// How `unsafe` can start a block, a function, an impl, a trait or an
/// extern block.
const UNSAFE_FORMS: [&str; 5] = [
    concat!("unsafe", " {"),
    concat!("unsafe", " fn "),
    concat!("unsafe", " impl"),
    concat!("unsafe", " trait"),
    concat!("unsafe", " extern"),
];

/// `true` when line `index` carries its justification: a `// SAFETY:`
/// comment (or, for an unsafe fn, a `# Safety` doc section) in the comment
/// block right above it, or above the statement it continues.
fn is_justified(lines: &[&str], index: usize, is_fn: bool) -> bool {
    let mut i = index;
    while i > 0 {
        i -= 1;
        let line = lines.get(i).map(|l| l.trim()).unwrap_or_default();
        if line.starts_with("//") || line.starts_with("#[") {
            if line.contains("SAFETY:") || (is_fn && line.contains("# Safety")) {
                return true;
            }
            continue;
        }
        // A line that ends a statement, an item or an argument is not part
        // of the expression the `unsafe` sits in; stop there.
        if line.is_empty()
            || line.ends_with(';')
            || line.ends_with('{')
            || line.ends_with('}')
            || line.ends_with(',')
        {
            return false;
        }
    }
    false
}

#[test]
fn unsafe_lives_only_in_pmem_and_is_always_justified() {
    let mut violations = Vec::new();
    for file in rust_files() {
        let in_pmem = file.starts_with("crates/pmem");
        let text = read(&file);
        let lines: Vec<&str> = text.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            let Some(form) = UNSAFE_FORMS.iter().find(|form| code.contains(**form)) else {
                continue;
            };
            let at = format!("{}:{}", file.display(), index + 1);
            if !in_pmem {
                violations.push(format!(
                    "{at}: `{form}` outside crates/pmem (the only crate allowed unsafe code)"
                ));
            } else if !is_justified(&lines, index, form.contains("fn")) {
                violations.push(format!(
                    "{at}: `{form}` without a `// SAFETY:` comment (or `# Safety` doc) above it"
                ));
            }
        }
    }
    fail_if_any(
        "unsafe code only in crates/pmem, each use with its SAFETY argument",
        &violations,
    );
}

/// Test lines with `UNSAFE` standing for the keyword, so that this file
/// does not trip its own check.
fn lines_of(text: &[&str]) -> Vec<String> {
    text.iter()
        .map(|l| l.replace("UNSAFE", concat!("uns", "afe")))
        .collect()
}

fn justified(text: &[&str], is_fn: bool) -> bool {
    let lines = lines_of(text);
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    is_justified(&lines, lines.len() - 1, is_fn)
}

#[test]
fn safety_comments_are_found_where_they_belong() {
    assert!(justified(
        &[
            "// SAFETY: the fd is open.",
            "let n = UNSAFE { libc::read(fd, p, len) };"
        ],
        false
    ));
    let continued = [
        "// SAFETY: the mapping outlives the slice.",
        "let bytes = std::slice::from_raw_parts(",
        "    UNSAFE { ptr() },",
    ];
    assert!(justified(&continued, false));
    let documented = [
        "/// Flushes.",
        "///",
        "/// # Safety",
        "/// `p` must be mapped.",
        "#[inline]",
        "pub UNSAFE fn flush(p: *const u8) {",
    ];
    assert!(justified(&documented, true));
    assert!(!justified(&["fn f() {", "    UNSAFE { g() }"], false));
    assert!(!justified(
        &[
            "// SAFETY: about the line below only.",
            "let a = 1;",
            "let b = UNSAFE { g() };"
        ],
        false
    ));
    assert!(!justified(
        &["/// # Safety", "UNSAFE impl Send for X {}"],
        false
    ));
}

/// `cargo metadata` for the workspace, without dependencies.
fn metadata() -> serde_json::Value {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root())
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

fn packages(metadata: &serde_json::Value) -> Vec<&serde_json::Value> {
    metadata["packages"]
        .as_array()
        .expect("metadata has packages")
        .iter()
        .collect()
}

fn str_field<'a>(value: &'a serde_json::Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("cargo metadata: `{key}` is not a string in {value}"))
}

#[test]
fn every_crate_but_pmem_forbids_unsafe_code() {
    let metadata = metadata();
    let mut violations = Vec::new();
    for package in packages(&metadata) {
        let name = str_field(package, "name");
        if name == "poolsync-pmem" {
            continue;
        }
        for target in package["targets"].as_array().expect("package has targets") {
            // The crates that make up the product and the tools: libraries
            // and binaries. Test and bench harnesses are covered by the
            // workspace lint `unsafe_code = "deny"`.
            let kinds = target["kind"].as_array().expect("target has kinds");
            if !kinds
                .iter()
                .any(|k| matches!(k.as_str(), Some("lib" | "bin" | "proc-macro")))
            {
                continue;
            }
            let src = PathBuf::from(str_field(target, "src_path"));
            let text = std::fs::read_to_string(&src)
                .unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
            if !text.lines().any(|l| l.trim() == "#![forbid(unsafe_code)]") {
                let relative = src.strip_prefix(root()).unwrap_or(&src).to_path_buf();
                violations.push(format!(
                    "{}: crate root of {name} ({}) lacks `#![forbid(unsafe_code)]`",
                    relative.display(),
                    str_field(target, "name"),
                ));
            }
        }
    }
    fail_if_any(
        "every crate except poolsync-pmem starts with #![forbid(unsafe_code)]",
        &violations,
    );
}

/// `true` when a Cargo.toml opts into the workspace lint table.
fn uses_workspace_lints(manifest: &str) -> bool {
    let mut in_lints = false;
    for line in manifest.lines() {
        let line: String = line
            .split('#')
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if line.starts_with('[') {
            in_lints = line == "[lints]";
        } else if line == "lints.workspace=true" || (in_lints && line == "workspace=true") {
            return true;
        }
    }
    false
}

#[test]
fn every_crate_uses_the_workspace_lints() {
    assert!(uses_workspace_lints(
        "[package]\nname = \"x\"\n\n[lints]\nworkspace = true\n"
    ));
    assert!(!uses_workspace_lints(
        "[lints]\n\n[dependencies]\nworkspace = true\n"
    ));
    let metadata = metadata();
    let mut violations = Vec::new();
    for package in packages(&metadata) {
        let manifest = PathBuf::from(str_field(package, "manifest_path"));
        let text = std::fs::read_to_string(&manifest)
            .unwrap_or_else(|e| panic!("reading {}: {e}", manifest.display()));
        if !uses_workspace_lints(&text) {
            let relative = manifest
                .strip_prefix(root())
                .unwrap_or(&manifest)
                .to_path_buf();
            violations.push(format!(
                "{}: no `[lints] workspace = true`",
                relative.display()
            ));
        }
    }
    fail_if_any("every crate inherits the workspace lints", &violations);
}

/// The intended dependency graph between workspace crates: data flows from
/// the pure codecs and the storage layer into the engine, and from there to
/// the thin binary. Adding an edge is a design decision: change this table
/// and ARCHITECTURE.md together.
const LAYERS: &[(&str, &[&str])] = &[
    ("poolsync-poolset", &[]),
    ("poolsync-header", &[]),
    ("poolsync-pmem", &[]),
    (
        "poolsync-engine",
        &["poolsync-poolset", "poolsync-header", "poolsync-pmem"],
    ),
    (
        "poolsync",
        &[
            "poolsync-engine",
            "poolsync-poolset",
            "poolsync-header",
            "poolsync-pmem",
        ],
    ),
    (
        "poolsync-benches",
        &[
            "poolsync-engine",
            "poolsync-poolset",
            "poolsync-header",
            "poolsync-pmem",
        ],
    ),
    // xtask renders the man pages from the command line definition.
    ("xtask", &["poolsync"]),
];

#[test]
fn crates_depend_on_each_other_only_along_the_layers() {
    let metadata = metadata();
    let packages = packages(&metadata);
    let workspace: BTreeSet<&str> = packages.iter().map(|p| str_field(p, "name")).collect();
    let expected: BTreeMap<&str, BTreeSet<&str>> = LAYERS
        .iter()
        .map(|(name, deps)| (*name, deps.iter().copied().collect()))
        .collect();
    let mut violations = Vec::new();
    for package in &packages {
        let name = str_field(package, "name");
        let Some(allowed) = expected.get(name) else {
            violations.push(format!(
                "{name}: a new workspace crate; add its intended edges to LAYERS in this file"
            ));
            continue;
        };
        let mut normal = BTreeSet::new();
        let mut dev = BTreeSet::new();
        for dep in package["dependencies"]
            .as_array()
            .expect("package has dependencies")
        {
            let dep_name = str_field(dep, "name");
            if !workspace.contains(dep_name) {
                continue;
            }
            if dep["kind"].as_str() == Some("dev") {
                dev.insert(dep_name);
            } else {
                normal.insert(dep_name);
            }
        }
        if &normal != allowed {
            violations.push(format!(
                "{name} depends on {normal:?} among workspace crates; the layers say {allowed:?}"
            ));
        }
        let stray: Vec<&&str> = dev.difference(allowed).collect();
        if !stray.is_empty() {
            violations.push(format!(
                "{name}'s tests depend on {stray:?}, which sit above or beside it"
            ));
        }
    }
    for (name, _) in LAYERS {
        if !workspace.contains(name) {
            violations.push(format!("{name} is in LAYERS but not in the workspace"));
        }
    }
    fail_if_any(
        "the crate graph follows the layers (see ARCHITECTURE.md)",
        &violations,
    );
}

/// Every crate that may be published carries what crates.io shows: a
/// description, a license, the repository, a README that exists, keywords
/// crates.io accepts (at most five, each at most 20 ASCII letters, digits,
/// `-` or `_`, starting with a letter) and categories. `cargo xtask
/// publish-check` proves the rest before a release.
#[test]
fn every_publishable_crate_has_its_registry_metadata() {
    let metadata = metadata();
    let mut violations = Vec::new();
    let mut publishable = 0;
    for package in packages(&metadata) {
        if !package["publish"].is_null() {
            continue;
        }
        publishable += 1;
        let name = str_field(package, "name");
        for key in ["description", "license", "repository"] {
            if package[key].as_str().is_none_or(|v| v.trim().is_empty()) {
                violations.push(format!("{name}: no `{key}`"));
            }
        }
        let manifest = PathBuf::from(str_field(package, "manifest_path"));
        match package["readme"].as_str() {
            None => violations.push(format!("{name}: no `readme`")),
            Some(readme) => {
                let path = manifest.parent().expect("manifest in a dir").join(readme);
                if !path.is_file() {
                    violations.push(format!("{name}: readme {} does not exist", path.display()));
                }
            }
        }
        let keywords = package["keywords"].as_array().cloned().unwrap_or_default();
        if keywords.is_empty() || keywords.len() > 5 {
            violations.push(format!(
                "{name}: {} keywords; crates.io wants 1 to 5",
                keywords.len()
            ));
        }
        for keyword in keywords.iter().filter_map(|k| k.as_str()) {
            let ok = keyword.len() <= 20
                && keyword.starts_with(|c: char| c.is_ascii_alphabetic())
                && keyword
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                violations.push(format!(
                    "{name}: keyword {keyword:?} is not one crates.io accepts"
                ));
            }
        }
        if package["categories"]
            .as_array()
            .is_none_or(|c| c.is_empty())
        {
            violations.push(format!("{name}: no `categories`"));
        }
    }
    assert!(
        publishable >= 5,
        "expected the four libraries and poolsync to be publishable"
    );
    fail_if_any("publishable crates carry crates.io's metadata", &violations);
}

/// `1.89`, `1.89.0` as comparable numbers.
fn rust_version(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.trim().split('.').map(|p| p.parse::<u64>().ok());
    let major = parts.next()??;
    let minor = parts.next().unwrap_or(Some(0))?;
    let patch = parts.next().unwrap_or(Some(0))?;
    parts.next().is_none().then_some((major, minor, patch))
}

#[test]
fn rust_versions_compare_by_number() {
    assert_eq!(rust_version("1.89"), Some((1, 89, 0)));
    assert_eq!(rust_version("1.89.0"), Some((1, 89, 0)));
    assert!(rust_version("1.100") > rust_version("1.89.2"));
    assert_eq!(rust_version("1.x"), None);
    assert_eq!(rust_version("1.2.3.4"), None);
}

/// The workspace's `rust-version` is the real minimum: no package in the
/// lock file (dependencies of every platform, dev and build ones included)
/// declares a newer one, and every workspace crate inherits it. The code's
/// own use of newer std APIs is caught by clippy's `incompatible_msrv`,
/// which reads the same field.
#[test]
fn no_locked_dependency_needs_a_newer_rust_than_the_workspace_says() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root())
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata --locked failed (is Cargo.lock up to date?): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("root Cargo.toml");
    let declared = manifest
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once('=')?;
            (key.trim() == "rust-version").then(|| value.trim().trim_matches('"').to_string())
        })
        .expect("the root Cargo.toml sets rust-version in [workspace.package]");
    let msrv = rust_version(&declared).expect("rust-version is a version");
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    let mut violations = Vec::new();
    for package in packages(&metadata) {
        let name = str_field(package, "name");
        let version = str_field(package, "version");
        let id = str_field(package, "id");
        let needs = package["rust_version"].as_str();
        if members.contains(id) {
            if needs != Some(declared.as_str()) {
                violations.push(format!(
                    "{name}: rust-version is {needs:?}; set `rust-version.workspace = true`"
                ));
            }
            continue;
        }
        let Some(needs) = needs else { continue };
        match rust_version(needs) {
            Some(v) if v > msrv => violations.push(format!(
                "{name} {version} needs Rust {needs}, the workspace says {declared}: raise \
                 rust-version in Cargo.toml (and the README), or pin an older release \
                 (cargo update -p {name}@{version} --precise <older>)"
            )),
            Some(_) => {}
            None => violations.push(format!(
                "{name} {version}: unreadable rust_version {needs:?}"
            )),
        }
    }
    fail_if_any(
        "the workspace's rust-version is at least that of every locked dependency",
        &violations,
    );
}

/// Text files that are (or are about to be) committed: tracked plus
/// untracked-but-not-ignored, as git lists them. Outside a git checkout
/// (a source archive) every file outside build output.
fn committed_files() -> Vec<PathBuf> {
    let root = root();
    let git = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(&root)
        .output();
    match git {
        Ok(output) if output.status.success() => output
            .stdout
            .split(|&b| b == 0)
            .filter(|name| !name.is_empty())
            .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
            .collect(),
        _ => {
            let mut files = Vec::new();
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        if !is_skipped_dir(&root, &path) {
                            stack.push(path);
                        }
                    } else if let Ok(relative) = path.strip_prefix(&root) {
                        files.push(relative.to_path_buf());
                    }
                }
            }
            files
        }
    }
}

#[test]
fn no_absolute_paths_of_a_developer_machine() {
    let forbidden = [concat!("/wo", "rk/"), concat!("/ho", "me/")];
    let root = root();
    let files = committed_files();
    assert!(
        files.iter().any(|f| f.ends_with("Cargo.toml")),
        "found no files to check in {}",
        root.display()
    );
    let mut violations = Vec::new();
    for file in files {
        // Deleted but not yet staged, or not text (fixtures, seeds): skip.
        let Ok(bytes) = std::fs::read(root.join(&file)) else {
            continue;
        };
        if bytes.contains(&0) {
            continue;
        }
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            for pattern in forbidden {
                if line.contains(pattern) {
                    violations.push(format!("{}:{}: `{pattern}`", file.display(), n + 1));
                }
            }
        }
    }
    fail_if_any(
        "no absolute paths of this machine in committed files (tests make their own temp dirs)",
        &violations,
    );
}

#[test]
fn ignored_tests_say_why() {
    let mut violations = Vec::new();
    for file in rust_files() {
        let text = read(&file);
        let lines: Vec<&str> = text.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            let code = line.trim();
            if !code.starts_with(concat!("#[ig", "nore"))
                || code.starts_with(concat!("#[ig", "nore = \""))
            {
                continue;
            }
            let above = index
                .checked_sub(1)
                .and_then(|i| lines.get(i))
                .map(|l| l.trim())
                .unwrap_or_default();
            if !above.starts_with("//") && !code.contains("//") {
                violations.push(format!(
                    "{}:{}: an ignored test without a reason",
                    file.display(),
                    index + 1
                ));
            }
        }
    }
    fail_if_any(
        "#[ignore] carries a reason (`#[ignore = \"...\"]` or a comment)",
        &violations,
    );
}

#[test]
fn code_is_formatted() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["fmt", "--all", "--", "--check", "--color", "never"])
        .current_dir(root())
        .output()
        .expect("running cargo fmt");
    assert!(
        output.status.success(),
        "`cargo fmt --all -- --check` wants changes; run `cargo fmt --all`:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}
