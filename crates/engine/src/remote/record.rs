//! When each remote replica was last brought up to date: a small TOML file
//! beside the administrator's pool set file, `<set>.poolsync-remotes`,
//! written aside and renamed over the old one after every update of a
//! remote replica that completed, or found it current (ARCHITECTURE.md,
//! "Remote replicas").
//!
//! It only informs `info` and `check` ("last synchronized at …"): no
//! decision rests on it. The lag itself is always measured, by digests, so
//! a missing, foreign or unreadable record costs nothing but the time of
//! the last sync, which the commands then call unknown and say why. The
//! file is at most [`MAX_LEN`] bytes; a larger one is not read.

use std::path::{Path, PathBuf};

use poolsync_pmem::{Access, PartFile, Storage};
use serde::{Deserialize, Serialize};

use crate::Error;

/// What the record's name adds to the pool set file's.
pub const RECORD_SUFFIX: &str = ".poolsync-remotes";
/// The `format` line that marks a record.
pub const RECORD_FORMAT: &str = "poolsync-remotes";
/// The largest record read (a remote replica's entry is about 150 bytes).
pub const MAX_LEN: u64 = 1 << 20;

/// One remote replica's last completed sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// `[user@]host` of its `REPLICA` line.
    pub node: String,
    /// The remote pool set file of its `REPLICA` line.
    pub set: String,
    /// The pool set UUID it was brought up to date with.
    pub poolset_uuid: String,
    /// When (Unix seconds of the storage clock).
    pub synced_at: u64,
    /// The remote replica's `run_id` right after that sync (libpmemobj
    /// adds 2 to it at every open, docs/format.md §7): a different value
    /// at the next sync means the pool was opened on the remote host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<u64>,
}

/// The file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordFile {
    format: String,
    version: u32,
    #[serde(default)]
    remote: Vec<Entry>,
}

/// What [`read`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// No record: no remote replica of this set file was synced yet.
    Missing,
    /// The entries.
    Ready(Vec<Entry>),
    /// A file that cannot be used, and why.
    Unusable(String),
}

impl Record {
    /// The entry of the remote replica `node` `set`, when there is one of
    /// pool set UUID `uuid`.
    pub fn entry(&self, node: &str, set: &str, uuid: &str) -> Option<&Entry> {
        match self {
            Record::Ready(entries) => entries.iter().find(|e| {
                e.node == node && e.set == set && e.poolset_uuid.eq_ignore_ascii_case(uuid)
            }),
            Record::Missing | Record::Unusable(_) => None,
        }
    }

    /// When the remote replica `node` `set` was last brought up to date
    /// with pool set UUID `uuid`; otherwise why that is unknown.
    pub fn last_sync(&self, node: &str, set: &str, uuid: Option<&str>) -> Result<u64, String> {
        match self {
            Record::Missing => Err("no sync of it is on record".to_string()),
            Record::Unusable(why) => Err(why.clone()),
            Record::Ready(entries) => entries
                .iter()
                .find(|e| e.node == node && e.set == set)
                .ok_or_else(|| "no sync of it is on record".to_string())
                .and_then(|e| match uuid {
                    Some(u) if !e.poolset_uuid.eq_ignore_ascii_case(u) => Err(format!(
                        "the record is of pool set UUID {}, not the pool's {u}",
                        e.poolset_uuid
                    )),
                    _ => Ok(e.synced_at),
                }),
        }
    }
}

/// The record of the pool set file at `set_path`.
pub fn record_path(set_path: &Path) -> PathBuf {
    crate::durable::beside(set_path, RECORD_SUFFIX)
}

/// The temporary name a new record is written under.
fn tmp_path(path: &Path) -> PathBuf {
    crate::durable::beside(path, ".tmp")
}

/// Parses a record's bytes; `Err` says what is wrong, naming the line.
pub fn parse(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("not UTF-8 text (byte {})", e.valid_up_to()))?;
    let file: RecordFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(l) => format!("line {l}: {}", e.message()),
            None => e.message().to_string(),
        }
    })?;
    if file.format != RECORD_FORMAT {
        return Err(format!(
            "format is {:?}, not {RECORD_FORMAT:?}",
            file.format
        ));
    }
    if file.version != 1 {
        return Err(format!("version {} (this poolsync reads 1)", file.version));
    }
    Ok(file.remote)
}

/// The text of a record holding `entries`.
pub fn render(entries: &[Entry]) -> Result<String, String> {
    let file = RecordFile {
        format: RECORD_FORMAT.to_string(),
        version: 1,
        remote: entries.to_vec(),
    };
    let mut text = String::from(
        "# poolsync: when each remote replica of this pool set file was last brought\n\
         # up to date. Informational; poolsync rewrites it after every sync.\n",
    );
    text.push_str(&toml::to_string(&file).map_err(|e| e.to_string())?);
    Ok(text)
}

/// Reads the record of the pool set file at `set_path`.
pub fn read<S: Storage>(storage: &S, set_path: &Path) -> Record {
    let path = record_path(set_path);
    match storage.stat(&path) {
        Ok(None) => return Record::Missing,
        Ok(Some(meta)) if meta.len > MAX_LEN => {
            return Record::Unusable(format!(
                "{}: {} bytes, more than a record's {MAX_LEN}",
                path.display(),
                meta.len
            ))
        }
        Ok(Some(_)) => {}
        Err(e) => return Record::Unusable(format!("{}: {e}", path.display())),
    }
    let bytes = (|| {
        let file = storage.open_aux(&path, Access::ReadOnly)?;
        let len = file.len()?.min(MAX_LEN);
        let mut buf = vec![0u8; len as usize];
        file.read_at(0, &mut buf)?;
        Ok::<_, Error>(buf)
    })();
    match bytes {
        Ok(bytes) => match parse(&bytes) {
            Ok(entries) => Record::Ready(entries),
            Err(why) => Record::Unusable(format!("{}: {why}", path.display())),
        },
        Err(e) => Record::Unusable(format!("{}: {e}", path.display())),
    }
}

/// Records that the remote replica `node` `set` of the pool set file at
/// `set_path` was brought up to date with pool set UUID `uuid` now: the
/// new record is written aside, made durable and renamed over the old
/// one, so that a crash leaves the old record or the new one. An
/// unusable old record is replaced.
pub fn note_sync<S: Storage>(
    storage: &S,
    set_path: &Path,
    node: &str,
    set: &str,
    uuid: &str,
    run_id: Option<u64>,
) -> Result<(), Error> {
    let now = storage.clock().unix_seconds();
    let mut entries = match read(storage, set_path) {
        Record::Ready(entries) => entries,
        Record::Missing | Record::Unusable(_) => Vec::new(),
    };
    entries.retain(|e| !(e.node == node && e.set == set));
    entries.push(Entry {
        node: node.to_string(),
        set: set.to_string(),
        poolset_uuid: uuid.to_string(),
        synced_at: now,
        run_id,
    });
    let path = record_path(set_path);
    let text = render(&entries).map_err(|reason| Error::InvalidRequest {
        path: path.clone(),
        reason: format!("cannot write the record of remote syncs: {reason}"),
    })?;
    crate::durable::replace_small_file(storage, &path, text.as_bytes())
}

/// Whether the file at `path` is a record (or its temporary copy): its
/// text parses as one. `rm` removes only such a file with the pool.
pub fn is_record<S: Storage>(storage: &S, path: &Path) -> bool {
    let Ok(Some(meta)) = storage.stat(path) else {
        return false;
    };
    if meta.len > MAX_LEN {
        return false;
    }
    let Ok(file) = storage.open_aux(path, Access::ReadOnly) else {
        return false;
    };
    let mut buf = vec![0u8; meta.len as usize];
    file.read_at(0, &mut buf).is_ok() && parse(&buf).is_ok()
}

/// The names `rm` removes with the pool set file at `set_path`: the
/// record and a temporary one an interrupted write left.
pub fn record_files(set_path: &Path) -> [PathBuf; 2] {
    let path = record_path(set_path);
    let tmp = tmp_path(&path);
    [path, tmp]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(i: u64) -> Entry {
        Entry {
            node: format!("user{i}@host"),
            set: format!("dir/r{i}.set"),
            poolset_uuid: "0f6c8a1e-3d6b-4f38-9a41-5b0c9e7d2a11".to_string(),
            synced_at: 1_765_000_000 + i,
            run_id: i.is_multiple_of(2).then_some(2 * i),
        }
    }

    #[test]
    fn a_record_reads_back_and_names_what_is_wrong() {
        let entries = vec![entry(1), entry(2)];
        let text = render(&entries).expect("render");
        assert_eq!(parse(text.as_bytes()), Ok(entries.clone()));
        let record = Record::Ready(entries);
        assert_eq!(
            record.last_sync(
                "user2@host",
                "dir/r2.set",
                Some("0F6C8A1E-3D6B-4F38-9A41-5B0C9E7D2A11")
            ),
            Ok(1_765_000_002)
        );
        assert!(record
            .last_sync(
                "user2@host",
                "dir/r2.set",
                Some("11111111-3d6b-4f38-9a41-5b0c9e7d2a11")
            )
            .unwrap_err()
            .contains("not the pool's"));
        assert!(record.last_sync("other", "dir/r2.set", None).is_err());
        let bad = text.replace("synced_at = 1765000001", "synced_at = \"soon\"");
        let why = parse(bad.as_bytes()).unwrap_err();
        assert!(why.starts_with("line "), "{why}");
        assert!(parse(b"format = \"other\"\nversion = 1\n")
            .unwrap_err()
            .contains("not \"poolsync-remotes\""));
        assert!(parse(b"format = \"poolsync-remotes\"\nversion = 2\n")
            .unwrap_err()
            .contains("version 2"));
        assert!(parse(&[0xff, 0xfe]).unwrap_err().contains("UTF-8"));
    }

    proptest! {
        #[test]
        fn records_round_trip(
            entries in proptest::collection::vec(
                ("[a-z@.]{1,20}", "[a-z/._-]{1,30}", "[0-9a-f-]{36}", any::<u64>(), any::<Option<u64>>()),
                0..8,
            )
        ) {
            let entries: Vec<Entry> = entries
                .into_iter()
                .map(|(node, set, poolset_uuid, synced_at, run_id)| Entry {
                    node,
                    set,
                    poolset_uuid,
                    synced_at: synced_at >> 1,
                    run_id: run_id.map(|r| r >> 1),
                })
                .collect();
            let text = render(&entries).expect("render");
            prop_assert_eq!(parse(text.as_bytes()), Ok(entries));
        }

        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }
    }
}
