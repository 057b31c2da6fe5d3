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
    ("poolsync-packet", &[]),
    ("poolsync-wire", &[]),
    ("poolsync-pmem", &[]),
    (
        "poolsync-engine",
        &[
            "poolsync-poolset",
            "poolsync-header",
            "poolsync-packet",
            "poolsync-pmem",
            "poolsync-wire",
        ],
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

/// The comment part of a line of Rust: what follows its first `//`.
fn comment_of(line: &str) -> Option<&str> {
    line.find("//").map(|at| &line[at..])
}

/// The external citation of each comment line of `text` (see
/// [`external_citation`]), with its 1-based line. A citation whose section
/// number wraps to the next comment line is found on the line where it
/// starts.
fn external_citations(text: &str) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(comment) = comment_of(line) else {
            continue;
        };
        if let Some(cited) = external_citation(comment) {
            out.push((n + 1, cited));
            continue;
        }
        let lower = comment.trim_end().to_lowercase();
        let wraps = [concat!("sp", "ec"), concat!("des", "ign")]
            .iter()
            .any(|word| lower.ends_with(word));
        let next = lines
            .get(n + 1)
            .and_then(|l| comment_of(l))
            .map(|c| c.trim_start_matches(['/', '!']).trim_start());
        if let (true, Some(next)) = (wraps, next) {
            if let Some(cited) = external_citation(&format!("{} {next}", comment.trim_end())) {
                out.push((n + 1, cited));
            }
        }
    }
    out
}

/// The external citation in `comment`, if it has one: the word for the PMDK
/// format notes or for the design document followed by a section number (or
/// the word "section", or `§`), or either document by its name (see
/// `external_citations_are_recognised` for examples). Those documents are not
/// part of the repository; comments cite `docs/format.md` and
/// `ARCHITECTURE.md`.
fn external_citation(comment: &str) -> Option<String> {
    let lower = comment.to_lowercase();
    for name in [concat!("pmdk-", "format"), concat!("design", " note")] {
        if lower.contains(name) {
            return Some(name.to_string());
        }
    }
    for word in [concat!("sp", "ec"), concat!("des", "ign")] {
        let mut from = 0;
        while let Some(found) = lower[from..].find(word) {
            let at = from + found;
            from = at + word.len();
            let starts_word = !lower[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            let rest = &lower[from..];
            let Some(rest) = rest.strip_prefix(' ') else {
                continue;
            };
            let cites = rest.starts_with(|c: char| c.is_ascii_digit())
                || rest.starts_with(concat!("sec", "tion"))
                || rest.starts_with('§');
            if starts_word && cites {
                let mut words = comment.get(at..).unwrap_or(comment).split(' ');
                let mut cited: Vec<&str> = words.by_ref().take(2).collect();
                if cited
                    .last()
                    .is_some_and(|w| w.eq_ignore_ascii_case("section"))
                {
                    cited.extend(words.next());
                }
                let cited = cited.join(" ");
                return Some(
                    cited
                        .trim_end_matches(|c: char| !c.is_alphanumeric())
                        .to_string(),
                );
            }
        }
    }
    None
}

#[test]
fn external_citations_are_recognised() {
    let cites = [
        concat!("/// Size rules (sp", "ec 1.10, 1.11)."),
        concat!("// Sp", "ec 1.11: replica 0 = 16 MiB"),
        concat!("//! The map (sp", "ec section 3)."),
        concat!("//! Plans (des", "ign note section 1)."),
        concat!("/// header last: des", "ign 5, rule 1)."),
        concat!("/// see pmdk-", "format.md"),
    ];
    for line in cites {
        assert!(external_citation(line).is_some(), "{line}");
    }
    let fine = [
        "/// Size rules (docs/format.md §14.1).",
        "/// `spec` alone (rotated so that it comes first).",
        "/// For each replica of the pool set `spec` in `dir`,",
        "/// A design decision: change this table.",
        "/// The respec 5 of nothing.",
    ];
    for line in fine {
        assert_eq!(external_citation(line), None, "{line}");
    }
    let wrapped = concat!(
        "/// as in the sp",
        "ec\n/// 5.2 health check\nlet x = 1; // no\n"
    );
    assert_eq!(external_citations(wrapped).len(), 1);
    assert_eq!(external_citations(wrapped)[0].0, 1);
}

#[test]
fn comments_cite_no_document_outside_the_repository() {
    let mut violations = Vec::new();
    for file in rust_files() {
        for (line, cited) in external_citations(&read(&file)) {
            violations.push(format!(
                "{}:{line}: `{cited}`: cite docs/format.md (§N) or ARCHITECTURE.md (\"Section\") instead",
                file.display(),
            ));
        }
    }
    fail_if_any(
        "comments cite docs/format.md and ARCHITECTURE.md, not documents outside the repository",
        &violations,
    );
}

/// The section numbers of a Markdown document's numbered headings: `## 12.
/// Title` gives `12`, `### 11.4 Runs` gives `11.4`.
fn numbered_sections(markdown: &str) -> BTreeSet<String> {
    let mut sections = BTreeSet::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if in_code || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim_start();
        let number: String = title
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let number = number.trim_end_matches('.');
        if !number.is_empty() {
            sections.insert(number.to_string());
        }
    }
    sections
}

/// Every `§N` or `§N.M` in `text` (a `§` followed by a digit), with its
/// 1-based line.
fn section_citations(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for (at, _) in line.match_indices('§') {
            let number: String = line[at + '§'.len_utf8()..]
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let number = number.trim_end_matches('.');
            if number.starts_with(|c: char| c.is_ascii_digit()) {
                out.push((n + 1, number.to_string()));
            }
        }
    }
    out
}

#[test]
fn section_citations_are_parsed() {
    let headings =
        "# Title\n## 1. Checksum\n```\n## 9. not a heading\n```\n### 11.4 Runs\n## Notes\n";
    let sections = numbered_sections(headings);
    assert_eq!(
        sections.into_iter().collect::<Vec<_>>(),
        ["1", "11.4"].map(String::from)
    );
    assert_eq!(
        section_citations("(docs/format.md §17.2, steps 1, 5)\nsee §3. and §11.4.\n§x"),
        [
            (1, "17.2".to_string()),
            (2, "3".to_string()),
            (2, "11.4".to_string())
        ]
    );
}

/// Markdown files whose `§` citations refer to `docs/format.md`.
const DOCS_CITING_FORMAT: &[&str] = &[
    "ARCHITECTURE.md",
    "README.md",
    "docs/format.md",
    "docs/json.md",
    "docs/performance.md",
    "fuzz/seeds/README.md",
];

#[test]
fn cited_format_sections_exist() {
    let sections = numbered_sections(&read(Path::new("docs/format.md")));
    assert!(
        sections.contains("1") && sections.contains("11.4"),
        "found no numbered headings in docs/format.md: {sections:?}"
    );
    let mut files = rust_files();
    files.extend(DOCS_CITING_FORMAT.iter().map(PathBuf::from));
    let mut violations = Vec::new();
    for file in files {
        for (line, number) in section_citations(&read(&file)) {
            if !sections.contains(&number) {
                violations.push(format!(
                    "{}:{line}: `§{number}` is not a numbered section of docs/format.md",
                    file.display()
                ));
            }
        }
    }
    fail_if_any(
        "every `§` cited (in .rs files and the docs) is a section of docs/format.md",
        &violations,
    );
}

/// The titles of a Markdown document's headings.
fn heading_titles(markdown: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut titles = BTreeSet::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && line.starts_with('#') {
            titles.insert(line.trim_start_matches('#').trim().to_string());
        }
    }
    titles
}

#[test]
fn cited_architecture_sections_exist() {
    let titles = heading_titles(&read(Path::new("ARCHITECTURE.md")));
    let marker = "ARCHITECTURE.md, \"";
    let mut violations = Vec::new();
    for file in rust_files() {
        for (n, line) in read(&file).lines().enumerate() {
            for (at, _) in line.match_indices(marker) {
                let rest = &line[at + marker.len()..];
                let title = rest.split('"').next().unwrap_or_default();
                if !rest.contains('"') || !titles.contains(title) {
                    violations.push(format!(
                        "{}:{}: `{}` names no heading of ARCHITECTURE.md (keep the cited title on one line)",
                        file.display(),
                        n + 1,
                        &line[at..]
                    ));
                }
            }
        }
    }
    fail_if_any(
        "every ARCHITECTURE.md section cited as `ARCHITECTURE.md, \"Title\"` exists",
        &violations,
    );
}

/// The words in backticks of a Markdown text that look like repository
/// paths: they contain a `/` or end in `.rs`, `.md` or `.toml`. Code blocks,
/// words with blanks, comment markers (`//!`) and placeholders (`<target>`)
/// are left out.
fn backticked_paths(markdown: &str) -> Vec<String> {
    let mut prose = String::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    prose
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| {
            let looks_like_path = word.contains('/')
                || [".rs", ".md", ".toml"]
                    .iter()
                    .any(|ext| word.ends_with(ext));
            looks_like_path
                && !word.starts_with("//")
                && !word.contains(char::is_whitespace)
                && !word.contains(['<', '>', '*'])
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn backticked_paths_are_found() {
    let text = "`crates/engine` and `xtask/tests/tidy.rs`, `README.md`, the\n\
                `// SAFETY:` marker, `fuzz/seeds/<target>/`, `*.set`, `a / b`,\n\
                `O_CREAT|O_EXCL`, `map_range`\n```\n`ignored/in/code`\n```\n";
    assert_eq!(
        backticked_paths(text),
        ["crates/engine", "xtask/tests/tidy.rs", "README.md"].map(String::from)
    );
}

#[test]
fn paths_named_in_architecture_exist() {
    let root = root();
    let mut violations = Vec::new();
    for path in backticked_paths(&read(Path::new("ARCHITECTURE.md"))) {
        if !root.join(&path).exists() {
            violations.push(format!(
                "ARCHITECTURE.md: `{path}` does not exist (name paths from the repository root)"
            ));
        }
    }
    fail_if_any("every path ARCHITECTURE.md names exists", &violations);
}

/// Crates that must not reach the operating system themselves: the codecs
/// (poolset, header, packet, wire) do no I/O at all, and the engine reaches files only through `pmem`'s
/// traits and gets its clock and working directory from them.
const NO_OS_CRATES: &[&str] = &[
    "crates/poolset/src",
    "crates/header/src",
    "crates/packet/src",
    "crates/wire/src",
    "crates/engine/src",
];

/// What those crates may not name, and why.
const OS_ACCESS: &[(&str, &str)] = &[
    (
        concat!("std::", "fs"),
        "files go through poolsync_pmem::Storage",
    ),
    (
        concat!("std::", "env"),
        "the environment is read by the CLI",
    ),
    (
        concat!("std::", "process"),
        "processes are the CLI's business",
    ),
    (
        concat!("std::", "net"),
        "connections are the CLI's business",
    ),
    (concat!("path::", "absolute"), "use Storage::current_dir"),
    (concat!("Instant::", "now"), "use Storage::clock"),
    (concat!("SystemTime::", "now"), "use Storage::clock"),
    (concat!("thread::", "sleep"), "use Storage::clock"),
];

#[test]
fn codecs_and_the_engine_reach_the_system_only_through_pmem() {
    let mut violations = Vec::new();
    for file in rust_files() {
        let name = file.to_string_lossy().replace('\\', "/");
        if !NO_OS_CRATES.iter().any(|dir| name.starts_with(dir)) {
            continue;
        }
        let text = read(&file);
        for (index, line) in text.lines().enumerate() {
            // Unit tests at the bottom of a file may use the real system.
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            let code = line.split("//").next().unwrap_or_default();
            for (pattern, why) in OS_ACCESS {
                if code.contains(pattern) {
                    violations.push(format!(
                        "{}:{}: `{pattern}`: {why}",
                        file.display(),
                        index + 1
                    ));
                }
            }
        }
    }
    fail_if_any(
        "poolset, header and engine reach the system only through pmem's traits",
        &violations,
    );
}
