//! `cargo xtask man [--out DIR]` and `cargo xtask completions [--out DIR]`:
//! the man pages of `poolsync` and of each subcommand, and the shell
//! completion scripts, rendered from the clap definitions the binary parses
//! with (`poolsync::command()`).
//!
//! A page is clap_mangen's (name, synopsis, description, every option,
//! subcommands) plus an EXIT STATUS section whose text is the README's
//! `Exit status:` paragraph of that command, so the two cannot disagree;
//! the page of `poolsync` adds ENVIRONMENT and FILES from the settings
//! table (`poolsync::settings`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use roff::{bold, roman, Roff};

use crate::util;

/// `cargo xtask man [--out DIR]`.
pub fn command(root: &Path, args: &[String]) -> Result<()> {
    let out = out_dir(root, args, "man")?;
    let pages = write_pages(root, &out)?;
    for page in &pages {
        println!("{}", page.display());
    }
    eprintln!(
        "xtask: {} man pages in {}; read one with `man -l {}`",
        pages.len(),
        out.display(),
        out.join("poolsync-sync.1").display()
    );
    Ok(())
}

/// `cargo xtask completions [--out DIR]`.
pub fn completions_command(root: &Path, args: &[String]) -> Result<()> {
    let out = out_dir(root, args, "completions")?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for shell in poolsync::Shell::ALL {
        let mut script = Vec::new();
        poolsync::generate_completions(shell, &mut script);
        let path = out.join(shell.file_name());
        std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// `--out DIR`, or `<target dir>/<name>`.
fn out_dir(root: &Path, args: &[String], name: &str) -> Result<PathBuf> {
    match args {
        [] => Ok(util::target_dir(root)?.join(name)),
        [flag, dir] if flag == "--out" => Ok(PathBuf::from(dir)),
        _ => bail!("usage: cargo xtask {name} [--out DIR]; got {args:?}"),
    }
}

/// Writes `poolsync.1` and `poolsync-<subcommand>.1` for every subcommand
/// into `out` and returns their paths.
pub fn write_pages(root: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let readme_path = root.join("README.md");
    let readme = std::fs::read_to_string(&readme_path)
        .with_context(|| format!("reading {}", readme_path.display()))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cmd = poolsync::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    let mut commands = vec![(None, cmd.clone())];
    commands.extend(
        cmd.get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| (Some(s.get_name().to_string()), s.clone())),
    );
    for (sub, page_cmd) in commands {
        let exit_status = exit_status(&readme, sub.as_deref()).with_context(|| {
            format!(
                "README.md has no `Exit status:` paragraph for `poolsync{}`",
                sub.as_deref().map(|s| format!(" {s}")).unwrap_or_default()
            )
        })?;
        let man = clap_mangen::Man::new(page_cmd)
            .source(format!("poolsync {}", env!("CARGO_PKG_VERSION")))
            .manual("poolsync manual");
        let path = out.join(man.get_filename());
        let mut page = Vec::new();
        man.render(&mut page)?;
        let mut extra = Roff::new();
        extra
            .control("SH", ["EXIT STATUS"])
            .text([roman(exit_status)]);
        match &sub {
            None => top_level_sections(&mut extra, &cmd),
            Some(name) => {
                extra.control("SH", ["SEE ALSO"]).text([
                    bold("poolsync"),
                    roman("(1), "),
                    bold(format!("pmempool-{name}")),
                    roman("(1)"),
                ]);
            }
        }
        page.extend_from_slice(extra.render().as_bytes());
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        pages.push(path);
    }
    Ok(pages)
}

/// ENVIRONMENT, FILES and SEE ALSO of `poolsync.1`.
fn top_level_sections(roff: &mut Roff, cmd: &clap::Command) {
    use poolsync::settings::{CONFIG_VAR, KEYS, SYSTEM_CONFIG};
    roff.control("SH", ["ENVIRONMENT"]);
    let mut var = |name: &str, text: String| {
        roff.control("TP", [])
            .text([bold(name)])
            .text([roman(text)]);
    };
    var(
        CONFIG_VAR,
        "The config file to read instead of the default places (it must exist).".to_string(),
    );
    var(
        "XDG_CONFIG_HOME",
        "Where the user's config file lives: $XDG_CONFIG_HOME/poolsync/config.toml \
         (~/.config/poolsync/config.toml when unset)."
            .to_string(),
    );
    for key in KEYS {
        var(
            key.env,
            format!(
                "Sets {} ({}); {} overrides it, and it overrides the config file. Default: {}.",
                key.name, key.help, key.flag, key.default_text
            ),
        );
    }
    var(
        "POOLSYNC_PERSIST",
        "How sync and transform make data durable: pagecache (fdatasync) or dax \
         (MAP_SYNC mappings and cache-line flushes)."
            .to_string(),
    );
    var(
        "PMEM_IS_PMEM_FORCE",
        "PMDK's variable: 1 forces the DAX code path, as POOLSYNC_PERSIST=dax does.".to_string(),
    );
    var(
        "POOLSYNC_SYSFS",
        "For tests: the root of a sysfs tree to read Device DAX sizes and alignments from          instead of /sys; its poolsync-stand-ins file may name regular files that stand in          for devices."
            .to_string(),
    );
    roff.control("SH", ["FILES"]);
    roff.control("TP", [])
        .text([bold("$XDG_CONFIG_HOME/poolsync/config.toml")])
        .text([roman(
            "The user's config file (TOML), read when --config and $POOLSYNC_CONFIG are not given.",
        )]);
    roff.control("TP", [])
        .text([bold(SYSTEM_CONFIG)])
        .text([roman(
            "The system's config file, read when there is no user's config file. \
         `poolsync config` shows which file is read and where every setting comes from.",
        )]);
    roff.control("SH", ["SEE ALSO"]);
    let mut refs = Vec::new();
    for (i, sub) in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .enumerate()
    {
        if i > 0 {
            refs.push(roman(", "));
        }
        refs.push(bold(format!("poolsync-{}", sub.get_name())));
        refs.push(roman("(1)"));
    }
    refs.push(roman(", "));
    refs.push(bold("pmempool"));
    refs.push(roman("(1)"));
    roff.text(refs);
}

/// The `Exit status:` paragraph of the README for `poolsync <sub>` (or, for
/// `None`, of the Commands section), as plain text.
pub fn exit_status(readme: &str, sub: Option<&str>) -> Option<String> {
    let section = section(readme, sub)?;
    let mut paragraph: Vec<&str> = Vec::new();
    for line in section.lines() {
        let line = line.trim();
        if paragraph.is_empty() {
            if line.starts_with("Exit status:") {
                paragraph.push(line);
            }
        } else if line.is_empty() {
            break;
        } else {
            paragraph.push(line);
        }
    }
    let text = paragraph.join(" ");
    let text = text.strip_prefix("Exit status:")?.trim();
    Some(plain(text))
}

/// The README's text from the heading of `poolsync SUB` (a level-3
/// heading that starts with it) up to the next heading, or for `None` from
/// `## Commands` up to its first subsection.
fn section<'a>(readme: &'a str, sub: Option<&str>) -> Option<&'a str> {
    let (heading, stop): (String, &str) = match sub {
        Some(sub) => (format!("### `poolsync {sub}"), "#"),
        None => ("## Commands".to_string(), "#"),
    };
    let mut start = None;
    let mut offset = 0;
    let mut in_code = false;
    for line in readme.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if trimmed.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        if in_code {
            offset += line.len();
            continue;
        }
        if let Some(begin) = start {
            if trimmed.starts_with(stop) {
                return readme.get(begin..offset);
            }
        } else if trimmed.starts_with(&heading) && trimmed[heading.len()..].starts_with([' ', '`'])
            || (sub.is_none() && trimmed == heading)
        {
            start = Some(offset + line.len());
        }
        offset += line.len();
    }
    start.and_then(|begin| readme.get(begin..))
}

/// Markdown to plain text: code spans, emphasis and links lose their marks.
fn plain(markdown: &str) -> String {
    let mut out = String::new();
    let mut rest = markdown;
    while let Some(c) = rest.chars().next() {
        if c == '[' {
            if let Some((text, after)) = rest[1..].split_once("](") {
                if let Some((_, tail)) = after.split_once(')') {
                    out.push_str(text);
                    rest = tail;
                    continue;
                }
            }
        }
        if c != '`' && c != '*' {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = "\
# poolsync

## Commands

Intro.

Exit status: 0 on success,
1 on `any` error.

### `poolsync check [<options>] <file>`

Checks.

Exit status: 0 for *consistent*, see [the docs](docs/x.md).

```sh
# a comment in a code block is not a heading
```

### `poolsync checker`

Exit status: wrong section.
";

    #[test]
    fn exit_status_paragraphs_are_found_per_command() {
        assert_eq!(
            exit_status(README, None).as_deref(),
            Some("0 on success, 1 on any error.")
        );
        assert_eq!(
            exit_status(README, Some("check")).as_deref(),
            Some("0 for consistent, see the docs.")
        );
        assert_eq!(exit_status(README, Some("sync")), None);
    }

    /// Every subcommand gets a page with every visible option and an EXIT
    /// STATUS section from the README; a subcommand without a page, an
    /// option missing from its page or a README without the paragraph
    /// fails here.
    #[test]
    fn every_subcommand_has_a_page_with_every_option_and_its_exit_status() {
        let root = crate::util::repo_root().expect("repo root");
        let out = tempfile::tempdir().expect("temp dir");
        let pages = write_pages(&root, out.path()).expect("man pages");
        let cmd = poolsync::command();
        let mut expected = vec![("poolsync.1".to_string(), cmd.clone())];
        for sub in cmd.get_subcommands() {
            assert!(!sub.is_hide_set(), "{} is hidden", sub.get_name());
            expected.push((format!("poolsync-{}.1", sub.get_name()), sub.clone()));
        }
        assert!(expected.len() >= 8, "{expected:?}");
        assert_eq!(pages.len(), expected.len());
        for (file, sub) in expected {
            let path = out.path().join(&file);
            let page = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{file} was not written: {e}"));
            assert!(
                page.contains(".SH \"EXIT STATUS\""),
                "{file} lacks EXIT STATUS"
            );
            let status = page
                .split(".SH \"EXIT STATUS\"")
                .nth(1)
                .unwrap_or_default()
                .lines()
                .nth(1)
                .unwrap_or_default();
            assert!(
                status.contains('0') && status.contains('1'),
                "{file}: {status}"
            );
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(long) = arg.get_long() {
                    let escaped = format!("\\-\\-{}", long.replace('-', "\\-"));
                    assert!(page.contains(&escaped), "{file} lacks --{long}");
                }
                if let Some(short) = arg.get_short() {
                    assert!(
                        page.contains(&format!("\\-{short}")),
                        "{file} lacks -{short}"
                    );
                }
            }
        }
        let top = std::fs::read_to_string(out.path().join("poolsync.1")).expect("poolsync.1");
        for var in ["POOLSYNC_CONFIG", "RAYON_NUM_THREADS", "POOLSYNC_WAIT_LOCK"] {
            assert!(top.contains(var), "poolsync.1 lacks {var}");
        }
    }

    /// The long options of the README's option table of `poolsync <sub>`.
    fn readme_options(readme: &str, sub: &str) -> std::collections::BTreeSet<String> {
        let section = section(readme, Some(sub)).unwrap_or_default();
        let mut options = std::collections::BTreeSet::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let first_cell = line.split('|').nth(1).unwrap_or_default();
            for word in first_cell.split(|c: char| c == '`' || c == ',' || c.is_whitespace()) {
                if let Some(long) = word.strip_prefix("--") {
                    options.insert(long.to_string());
                }
            }
        }
        options
    }

    /// The README's option table of every subcommand lists exactly the
    /// options `--help` shows (global ones and help/version aside), so the
    /// two cannot disagree about what exists.
    #[test]
    fn the_readme_lists_exactly_the_options_of_the_help() {
        let root = crate::util::repo_root().expect("repo root");
        let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
        let mut problems = Vec::new();
        for sub in poolsync::command().get_subcommands() {
            let name = sub.get_name();
            let in_help: std::collections::BTreeSet<String> = sub
                .get_arguments()
                .filter(|a| !a.is_hide_set() && !a.is_global_set())
                .filter_map(|a| a.get_long())
                .filter(|l| !matches!(*l, "help" | "version"))
                .map(str::to_string)
                .collect();
            let in_readme = readme_options(&readme, name);
            if section(&readme, Some(name)).is_none() {
                problems.push(format!("README.md has no section for `poolsync {name}`"));
                continue;
            }
            for missing in in_help.difference(&in_readme) {
                problems.push(format!("README.md lacks `poolsync {name} --{missing}`"));
            }
            for extra in in_readme.difference(&in_help) {
                problems.push(format!(
                    "README.md lists `poolsync {name} --{extra}`, which --help does not show"
                ));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn markdown_marks_are_dropped() {
        assert_eq!(plain("`a` *b* [c](d) e"), "a b c e");
        assert_eq!(plain("[not a link"), "[not a link");
    }
}
