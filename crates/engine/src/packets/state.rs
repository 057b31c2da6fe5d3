//! The state file every site keeps beside its pool set file
//! (`<set>.poolsync-state`, `docs/packet.md` section 6): read chunk by
//! chunk as the engine walks the blocks, and written whole, aside, then
//! renamed over the old one.
//!
//! Reading never holds more than one chunk (4096 entries, 64 KiB). A chunk
//! that fails its tag is not fatal: its blocks' entries are *unknown*
//! ([`EntryCursor::entry`] gives `None`), which the exporter treats as
//! changed (they ship) and an importer as not proven (they must be
//! overwritten by the packet). A head that fails makes the whole file
//! unusable ([`Loaded::Unusable`]): an exporter then starts a new lineage
//! and ships everything, and says why.
//!
//! Writing goes to `<state>.tmp`, created anew, sized in one step, filled
//! chunk by chunk, fenced, renamed over the state file and made durable
//! with a sync of the directory. A crash leaves the old file or the new
//! one, never a mix; a leftover `.tmp` is an unfinished write of ours and
//! is replaced by the next one.

use std::path::{Path, PathBuf};

use poolsync_packet::state::{state_head_len, CHUNK_ENTRIES, STATE_FIXED_LEN};
use poolsync_packet::{Entry, State, StateLayout};
use poolsync_pmem::{Access, PartFile, Storage};

use super::state_path;
use crate::Error;

/// What reading a state file found.
#[derive(Debug)]
pub enum Loaded<F> {
    /// There is none.
    Missing,
    /// There is one, but its head cannot be used: damaged, of another
    /// version, or cut short. The reason names the offset.
    Unusable {
        /// The file.
        path: PathBuf,
        /// Why, with the offset at fault.
        reason: String,
    },
    /// A state whose head verified; its chunks verify as they are read.
    Ready(StateFile<F>),
}

/// An open state file whose head verified.
#[derive(Debug)]
pub struct StateFile<F> {
    /// The file.
    pub path: PathBuf,
    /// Its head.
    pub head: State,
    /// Where its chunks lie.
    pub layout: StateLayout,
    file: F,
}

/// Reads the head of the state file of the pool set at `set_path` and
/// checks the file's length; the chunks are verified as they are read.
pub fn load<S: Storage>(storage: &S, set_path: &Path) -> Result<Loaded<S::Aux>, Error> {
    let path = state_path(set_path);
    if storage.stat(&path)?.is_none() {
        return Ok(Loaded::Missing);
    }
    let file = storage.open_aux(&path, Access::ReadOnly)?;
    let unusable = |reason: String| {
        Ok(Loaded::Unusable {
            path: path.clone(),
            reason,
        })
    };
    let len = file.len()?;
    let mut prefix = vec![0u8; STATE_FIXED_LEN.min(usize::try_from(len).unwrap_or(0))];
    file.read_at(0, &mut prefix)?;
    let head_len = match state_head_len(&prefix) {
        Ok(n) => n,
        Err(e) => return unusable(e.to_string()),
    };
    if (head_len as u64) > len {
        return unusable(format!(
            "the file is {len} bytes, shorter than the {head_len}-byte head it declares at offset 12"
        ));
    }
    let mut head = vec![0u8; head_len];
    file.read_at(0, &mut head)?;
    let (state, layout) = match State::decode_head(&head) {
        Ok(x) => x,
        Err(e) => return unusable(e.to_string()),
    };
    if let Err(e) = layout.check_file_len(len) {
        return unusable(e.to_string());
    }
    Ok(Loaded::Ready(StateFile {
        path,
        head: state,
        layout,
        file,
    }))
}

impl<F: PartFile> StateFile<F> {
    /// Reads and verifies chunk `chunk`; `Err` carries the reason (with
    /// its offset) when it fails.
    pub fn chunk(&self, chunk: u64) -> Result<Result<Vec<Entry>, String>, Error> {
        let len = self.layout.chunk_len(chunk);
        let mut bytes = vec![0u8; len];
        self.file
            .read_at(self.layout.chunk_offset(chunk), &mut bytes)?;
        Ok(self
            .layout
            .decode_chunk(chunk, &bytes)
            .map_err(|e| e.to_string()))
    }

    /// A cursor over the entries, block by block.
    pub fn cursor(&self) -> EntryCursor<'_> {
        EntryCursor {
            source: Some(self),
            chunk: None,
            entries: Vec::new(),
            bad: Vec::new(),
        }
    }
}

/// Old entries, block by block: the state file's, or none at all.
pub trait OldEntries {
    /// The entry of block `block` (blocks are asked in ascending order),
    /// or `None` when it is not known.
    fn entry(&mut self, block: u64) -> Result<Option<Entry>, Error>;
    /// The chunks that failed their tags so far, with the reason.
    fn bad_chunks(&self) -> &[(u64, String)];
}

/// Chunk readers of one state file, in a form the cursor can hold.
trait ChunkSource {
    fn read_chunk(&self, chunk: u64) -> Result<Result<Vec<Entry>, String>, Error>;
    fn chunk_count(&self) -> u64;
}

impl<F: PartFile> ChunkSource for StateFile<F> {
    fn read_chunk(&self, chunk: u64) -> Result<Result<Vec<Entry>, String>, Error> {
        self.chunk(chunk)
    }

    fn chunk_count(&self) -> u64 {
        self.layout.chunk_count()
    }
}

/// Walks a state file's entries in block order, holding one chunk.
pub struct EntryCursor<'a> {
    source: Option<&'a dyn ChunkSource>,
    chunk: Option<u64>,
    entries: Vec<Entry>,
    bad: Vec<(u64, String)>,
}

impl std::fmt::Debug for EntryCursor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryCursor")
            .field("chunk", &self.chunk)
            .field("bad", &self.bad)
            .finish_non_exhaustive()
    }
}

impl EntryCursor<'_> {
    /// A cursor that knows no entry (no state file).
    pub fn none() -> EntryCursor<'static> {
        EntryCursor {
            source: None,
            chunk: None,
            entries: Vec::new(),
            bad: Vec::new(),
        }
    }
}

impl OldEntries for EntryCursor<'_> {
    fn entry(&mut self, block: u64) -> Result<Option<Entry>, Error> {
        let Some(source) = self.source else {
            return Ok(None);
        };
        let chunk = block / CHUNK_ENTRIES as u64;
        if chunk >= source.chunk_count() {
            return Ok(None);
        }
        if self.chunk != Some(chunk) {
            self.chunk = Some(chunk);
            self.entries = match source.read_chunk(chunk)? {
                Ok(entries) => entries,
                Err(reason) => {
                    self.bad.push((chunk, reason));
                    Vec::new()
                }
            };
        }
        Ok(self
            .entries
            .get((block % CHUNK_ENTRIES as u64) as usize)
            .copied())
    }

    fn bad_chunks(&self) -> &[(u64, String)] {
        &self.bad
    }
}

/// Writes a new state file aside and renames it over the old one.
#[derive(Debug)]
pub struct StateWriter<F> {
    tmp: PathBuf,
    path: PathBuf,
    file: F,
    layout: StateLayout,
    pending: Vec<Entry>,
    chunk: u64,
    count: u64,
}

/// The temporary name of a state file being written.
pub fn tmp_path(path: &Path) -> PathBuf {
    crate::durable::beside(path, ".tmp")
}

impl<F: PartFile> StateWriter<F> {
    /// Starts writing the state file of the pool set at `set_path` with
    /// `head` (whose generation the caller has bumped); its entries follow
    /// with [`StateWriter::push`].
    pub fn create<S: Storage<Aux = F>>(
        storage: &S,
        set_path: &Path,
        head: &State,
    ) -> Result<Self, Error> {
        let path = state_path(set_path);
        let tmp = tmp_path(&path);
        let (bytes, layout) = head.encode_head().map_err(|e| Error::StateFile {
            path: path.clone(),
            reason: format!("cannot encode the new state: {e}"),
        })?;
        // A leftover of an unfinished write: never the state itself.
        crate::durable::remove_if_exists(storage, &tmp)?;
        let file = storage.create_aux(&tmp, 0o644)?;
        file.set_len(layout.file_len())?;
        // Flushed once, whole, by `finish`: one `fdatasync` rather than
        // one per chunk.
        file.write_at(0, &bytes)?;
        Ok(StateWriter {
            tmp,
            path,
            file,
            layout,
            pending: Vec::with_capacity(CHUNK_ENTRIES),
            chunk: 0,
            count: 0,
        })
    }

    /// Entries written so far.
    pub fn written(&self) -> u64 {
        self.count
    }

    /// Adds the next block's entry.
    pub fn push(&mut self, entry: Entry) -> Result<(), Error> {
        if self.count >= self.layout.block_count {
            return Err(Error::StateFile {
                path: self.path.clone(),
                reason: format!("more entries than its {} blocks", self.layout.block_count),
            });
        }
        self.count += 1;
        self.pending.push(entry);
        if self.pending.len() == self.layout.chunk_entries(self.chunk) {
            self.write_chunk()?;
        }
        Ok(())
    }

    fn write_chunk(&mut self) -> Result<(), Error> {
        let bytes = self
            .layout
            .encode_chunk(self.chunk, &self.pending)
            .map_err(|e| Error::StateFile {
                path: self.path.clone(),
                reason: format!("cannot encode chunk {}: {e}", self.chunk),
            })?;
        let at = self.layout.chunk_offset(self.chunk);
        self.file.write_at(at, &bytes)?;
        self.pending.clear();
        self.chunk += 1;
        Ok(())
    }

    /// Makes the new file durable and puts it in place of the old one.
    pub fn finish<S: Storage<Aux = F>>(self, storage: &S) -> Result<PathBuf, Error> {
        if self.written() != self.layout.block_count || !self.pending.is_empty() {
            return Err(Error::StateFile {
                path: self.path.clone(),
                reason: format!(
                    "{} entries written for {} blocks",
                    self.written(),
                    self.layout.block_count
                ),
            });
        }
        self.file.flush(0, self.layout.file_len())?;
        self.file.fence()?;
        drop(self.file);
        // The new file's entry and mode are durable before it takes the
        // old one's name.
        storage.fsync_parent(&self.tmp)?;
        storage.rename(&self.tmp, &self.path)?;
        storage.fsync_parent(&self.path)?;
        Ok(self.path)
    }

    /// Gives up: removes the temporary file (the old state stays).
    pub fn abandon<S: Storage<Aux = F>>(self, storage: &S) -> Result<(), Error> {
        drop(self.file);
        crate::durable::remove_if_exists(storage, &self.tmp)?;
        Ok(())
    }
}

/// Writes `head` with the entries of `old` (each block's entry as it is,
/// for a change of the head only: `epoch --set`, `--promote`). A chunk of
/// `old` that fails its tag stops the write, naming it.
pub fn rewrite_head<S: Storage>(
    storage: &S,
    set_path: &Path,
    old: &StateFile<S::Aux>,
    head: &State,
) -> Result<PathBuf, Error> {
    let mut writer = StateWriter::create(storage, set_path, head)?;
    for chunk in 0..old.layout.chunk_count() {
        let entries = match old.chunk(chunk)? {
            Ok(entries) => entries,
            Err(reason) => {
                writer.abandon(storage)?;
                return Err(Error::StateFile {
                    path: old.path.clone(),
                    reason: format!("chunk {chunk}: {reason}"),
                });
            }
        };
        for e in entries {
            writer.push(e)?;
        }
    }
    writer.finish(storage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolsync_packet::Destination;
    use poolsync_pmem::sim::SimStorage;

    fn head(blocks: u64) -> State {
        State {
            poolset_uuid: [1; 16],
            lineage: [2; 16],
            timeline: 1,
            history: vec![],
            epoch: 3,
            generation: 1,
            block_size: 4096,
            range: 4096..4096 * (blocks + 1),
            destinations: vec![Destination {
                name: "b".into(),
                timeline: 1,
                epoch: 2,
                last_export: 5,
            }],
            applied: vec![],
            follower: false,
        }
    }

    #[test]
    fn a_state_is_written_aside_and_read_chunk_by_chunk() {
        let s = SimStorage::new();
        s.add_dir(Path::new("/p")).unwrap();
        let set = Path::new("/p/pool.set");
        assert!(matches!(load(&s, set).unwrap(), Loaded::Missing));
        let blocks = CHUNK_ENTRIES as u64 + 10;
        let h = head(blocks);
        let mut w = StateWriter::create(&s, set, &h).unwrap();
        for b in 0..blocks {
            w.push(Entry::from_xxh3_128(u128::from(b), (b % 4) as u32))
                .unwrap();
        }
        w.finish(&s).unwrap();
        let after = s.after_crash();
        let Loaded::Ready(f) = load(&after, set).unwrap() else {
            panic!("not loaded");
        };
        assert_eq!(f.head, h);
        let mut c = f.cursor();
        assert_eq!(
            c.entry(blocks - 1).unwrap(),
            Some(Entry::from_xxh3_128(u128::from(blocks - 1), 1))
        );
        assert_eq!(c.entry(blocks).unwrap(), None);
        assert!(c.bad_chunks().is_empty());
        assert!(after.stat(&tmp_path(&f.path)).unwrap().is_none());
    }

    #[test]
    fn a_damaged_chunk_makes_its_entries_unknown_and_a_damaged_head_the_file() {
        let s = SimStorage::new();
        s.add_dir(Path::new("/p")).unwrap();
        let set = Path::new("/p/pool.set");
        let blocks = 2 * CHUNK_ENTRIES as u64;
        let mut w = StateWriter::create(&s, set, &head(blocks)).unwrap();
        for b in 0..blocks {
            w.push(Entry::from_xxh3_128(u128::from(b), 1)).unwrap();
        }
        let path = w.finish(&s).unwrap();
        let mut bytes = s.written_bytes(&path).unwrap();
        let Loaded::Ready(f) = load(&s, set).unwrap() else {
            panic!()
        };
        let at = f.layout.entry_offset(CHUNK_ENTRIES as u64 + 1) as usize;
        drop(f);
        bytes[at] ^= 1;
        s.remove(&path).unwrap();
        s.insert_file(&path, &bytes, 0o644).unwrap();
        let Loaded::Ready(f) = load(&s, set).unwrap() else {
            panic!()
        };
        let mut c = f.cursor();
        assert!(c.entry(0).unwrap().is_some());
        assert_eq!(c.entry(CHUNK_ENTRIES as u64 + 5).unwrap(), None);
        assert_eq!(c.bad_chunks().len(), 1);
        drop(f);
        bytes[20] ^= 1;
        s.remove(&path).unwrap();
        s.insert_file(&path, &bytes, 0o644).unwrap();
        assert!(matches!(load(&s, set).unwrap(), Loaded::Unusable { .. }));
    }
}
