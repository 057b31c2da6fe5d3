//! Output helpers shared by the commands: pmempool's `label : value` fields,
//! its hex dumps, local time formatting and the `--json` envelope.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// Writes `text` to stdout. A reader that went away (`poolsync ... | head`)
/// is not an error: the rest of the output is dropped, as it is for a C
/// tool that SIGPIPE ends. Other write errors are returned.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// [`emit`] for places that cannot report an error (observer callbacks,
/// prompts): a failed write of stdout is dropped.
pub fn say(text: &str) {
    let _ = emit(text);
}

/// `println!` through [`say`]: never panics when stdout is a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::say(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` through [`say`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::say(&format!($($arg)*))
    };
}

pub(crate) use {out, outln};

/// Version of the JSON documents poolsync prints (see docs/json.md).
pub const JSON_FORMAT: u32 = 1;

/// pmempool's label column width (`%-24s : `).
const LABEL_WIDTH: usize = 24;

/// One `label : value` line as pmempool prints it, with its newline.
pub fn field(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{label:<LABEL_WIDTH$} : {value}");
}

/// `seconds` since the epoch in the local time zone, formatted as pmempool
/// formats creation times (`%a %b %d %Y %H:%M:%S`, e.g.
/// `Mon Nov 23 2026 04:34:05`); `unknown` when out of range.
pub fn local_time(seconds: u64) -> String {
    let Ok(secs) = i64::try_from(seconds) else {
        return "unknown".to_string();
    };
    match jiff::Timestamp::from_second(secs) {
        Ok(ts) => ts
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%a %b %d %Y %H:%M:%S")
            .to_string(),
        Err(_) => "unknown".to_string(),
    }
}

/// When a remote replica was last brought up to date, for `info` and
/// `check`: its local time, or why that is not known.
pub fn last_sync_text(r: &poolsync_engine::remote::status::RemoteStatus) -> String {
    match (r.last_sync, &r.last_sync_unknown) {
        (Some(t), _) => local_time(t),
        (None, Some(why)) => format!("unknown: {why}"),
        (None, None) => "unknown".to_string(),
    }
}

/// A size as pmempool prints it: plain bytes, or with `-n` one decimal and
/// a unit (`8.0M`).
pub fn size(bytes: u64, human: bool) -> String {
    if !human || bytes < 1024 {
        return bytes.to_string();
    }
    let units = ['K', 'M', 'G', 'T'];
    let mut value = bytes as f64;
    let mut whole = bytes;
    let mut unit = 0usize;
    value /= 1024.0;
    whole /= 1024;
    while whole >= 1024 && unit + 1 < units.len() {
        value /= 1024.0;
        whole /= 1024;
        unit += 1;
    }
    let u = units.get(unit).copied().unwrap_or('T');
    format!("{value:.1}{u}")
}

/// pmempool's hex dump (`outv_hexdump`): 16 bytes a row as
/// `%08x  hex |ascii|`, repeated rows collapsed into `*` (never the first or
/// the last), and a line of dashes after the dump.
pub fn hexdump(out: &mut String, data: &[u8], base: u64) {
    const ROW: usize = 16;
    let mut prev: Option<usize> = None;
    let mut repeated = false;
    let mut last_len = 0usize;
    let rows = data.len().div_ceil(ROW);
    for row in 0..rows {
        let start = row * ROW;
        let chunk = data
            .get(start..(start + ROW).min(data.len()))
            .unwrap_or_default();
        let is_last = row + 1 == rows;
        let same_as_prev = prev.is_some_and(|p| data.get(p..p + chunk.len()) == Some(chunk));
        if !is_last && row > 0 && same_as_prev {
            if !repeated {
                out.push_str("*\n");
                repeated = true;
            }
            continue;
        }
        repeated = false;
        let mut hex = String::new();
        for (i, b) in chunk.iter().enumerate() {
            if i > 0 && i % 8 == 0 {
                hex.push(' ');
            }
            let _ = write!(hex, "{b:02x} ");
        }
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    char::from(b)
                } else {
                    '.'
                }
            })
            .collect();
        let line = format!("{:08x}  {hex:<50}|{ascii:<16}|\n", start as u64 + base);
        last_len = line.len();
        out.push_str(&line);
        prev = Some(start);
    }
    if last_len > 0 {
        out.push_str(&"-".repeat(last_len - 1));
        out.push('\n');
    }
}

/// An error as one line: the message of every error in its chain, joined
/// by `: `. The library crates never return as an error's source an error
/// whose text its message already quotes (a storage error quotes the
/// system's text and keeps the `io::Error` to itself), so each message,
/// and the system's text in it, appears once; `{:#}` prints the same.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause.to_string());
    }
    text
}

/// Set once a `--json` document went to stdout.
static JSON_EMITTED: AtomicBool = AtomicBool::new(false);

/// Prints the `--json` document of `command` (see [`json_document`]): the
/// one place commands print their documents, so that [`json_emitted`]
/// knows whether a failed command printed one.
pub fn emit_json(command: &str, value: &impl Serialize) -> anyhow::Result<()> {
    let doc = json_document(command, value)?;
    JSON_EMITTED.store(true, Ordering::Relaxed);
    emit(&format!("{doc}\n"))
}

/// `true` once [`emit_json`] printed a document.
pub fn json_emitted() -> bool {
    JSON_EMITTED.load(Ordering::Relaxed)
}

/// The `--json` document of a command that failed before it could print
/// its own (a bad config file, an option it refuses, a pool it cannot
/// open): the fields every error document carries (see docs/json.md).
pub fn emit_error_document(command: &str, path: Option<&std::path::Path>, e: &anyhow::Error) {
    let doc = ErrorDocument {
        path,
        result: "error",
        exit_code: 1,
        error: error_text(e),
    };
    // Nothing better can be done when stdout is gone; stderr has the error.
    let _ = emit_json(command, &doc);
}

/// The fields of every `--json` error document.
#[derive(Debug, Serialize)]
pub struct ErrorDocument<'a> {
    /// The pool or pool set the command was given, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'a std::path::Path>,
    /// Always `error`.
    pub result: &'static str,
    /// Always 1.
    pub exit_code: u8,
    /// The one-line message printed on stderr.
    pub error: String,
}

/// A `--json` document: `{"format": 1, "command": ..., <fields of value>}`.
pub fn json_document(command: &str, value: &impl Serialize) -> anyhow::Result<String> {
    let mut map = serde_json::Map::new();
    map.insert("format".to_string(), serde_json::Value::from(JSON_FORMAT));
    map.insert("command".to_string(), serde_json::Value::from(command));
    match serde_json::to_value(value)? {
        serde_json::Value::Object(fields) => map.extend(fields),
        other => {
            map.insert("value".to_string(), other);
        }
    }
    Ok(serde_json::to_string_pretty(&serde_json::Value::Object(
        map,
    ))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_pad_labels_to_24_columns() {
        let mut s = String::new();
        field(&mut s, "Major", 6);
        assert_eq!(s, "Major                    : 6\n");
    }

    #[test]
    fn human_sizes_match_pmempool() {
        assert_eq!(size(8 << 20, true), "8.0M");
        assert_eq!(size(1000, true), "1000");
        assert_eq!(size(1536, true), "1.5K");
        assert_eq!(size(8 << 20, false), "8388608");
        assert_eq!(size(3 << 30, true), "3.0G");
    }

    #[test]
    fn hexdump_collapses_repeats_and_ends_with_dashes() {
        let mut data = vec![0u8; 64];
        data[0] = b'P';
        let mut s = String::new();
        hexdump(&mut s, &data, 0x1000);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 5, "{s}");
        assert_eq!(
            lines[0],
            "00001000  50 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |P...............|"
        );
        assert_eq!(
            lines[1],
            "00001010  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|"
        );
        assert_eq!(lines[2], "*");
        assert!(lines[3].starts_with("00001030"));
        assert_eq!(lines[4], "-".repeat(78));
    }

    #[test]
    fn local_time_has_pmempool_shape() {
        let t = local_time(1_795_000_000);
        let parts: Vec<&str> = t.split(' ').collect();
        assert_eq!(parts.len(), 5, "{t}");
        assert_eq!(parts[4].len(), 8, "{t}");
        assert_eq!(local_time(u64::MAX), "unknown");
    }

    #[test]
    fn error_text_names_each_cause_once() {
        let e = anyhow::anyhow!("cause").context("outer");
        assert_eq!(error_text(&e), "outer: cause");
    }

    /// A full file system as a command reports it: the engine's error for
    /// a part, around the storage error around the system's ENOSPC, under
    /// the command's context. The system's text appears once, without
    /// Rust's ` (os error 28)`.
    #[test]
    fn the_system_text_of_an_engine_error_appears_once() {
        let storage = poolsync_pmem::Error::IoAt {
            op: "write",
            path: "/p/a".into(),
            offset: 0,
            os: std::io::Error::from_raw_os_error(28),
        };
        let part = poolsync_engine::Error::PartStorage {
            set: "/p/pool.set".into(),
            line: 3,
            error: storage,
        };
        let errors = [
            anyhow::Error::new(part).context("failed to synchronize"),
            anyhow::Error::new(poolsync_engine::Error::Storage(
                poolsync_pmem::Error::Allocate {
                    path: "/p/b".into(),
                    size: 1 << 20,
                    os: std::io::Error::from_raw_os_error(28),
                },
            ))
            .context("failed to transform"),
        ];
        for e in &errors {
            let text = error_text(e);
            assert_eq!(text.matches("No space left on device").count(), 1, "{text}");
            assert!(!text.contains("os error"), "{text}");
            assert_eq!(format!("{e:#}"), text);
        }
        assert_eq!(
            error_text(&errors[0]),
            "failed to synchronize: /p/pool.set:3: write \"/p/a\" at offset 0: No space left on device"
        );
    }

    #[test]
    fn json_document_carries_format_and_command() {
        #[derive(Serialize)]
        struct V {
            a: u32,
        }
        let doc: serde_json::Value =
            serde_json::from_str(&json_document("info", &V { a: 3 }).unwrap()).unwrap();
        assert_eq!(doc["format"], 1);
        assert_eq!(doc["command"], "info");
        assert_eq!(doc["a"], 3);
    }
}
