//! The packet stream: shipped blocks in, physical packet files out.
//!
//! [`RecordWriter`] takes the blocks an export ships, in ascending logical
//! order, gathers neighbours into records (runs of all-zero blocks become
//! zero runs, without bytes; others data records of at most the size that
//! fits a file), and cuts the stream into physical files of at most
//! `--max-size` bytes. What it produces goes to a [`PacketSink`]: files on
//! a storage ([`FileSink`], which writes them under temporary names until
//! the export commits), a counter ([`CountingSink`], for a dry run), or,
//! later, a connection.

use std::path::{Path, PathBuf};

use poolsync_packet::{
    part_file_name, zero_runs, Key, PacketEncoder, PacketMeta, PacketSummary, PreparedRecord,
};
use poolsync_pmem::{PartFile, Storage};
use serde::Serialize;

use crate::Error;

/// Where the bytes of a packet go, file by file.
pub trait PacketSink {
    /// Physical file `part` (0 for `FILE`, 1 for `FILE_2`, ...) starts
    /// with `header`.
    fn begin_file(&mut self, part: u32, header: &[u8]) -> Result<(), Error>;
    /// More bytes of the current file.
    fn append(&mut self, bytes: &[u8]) -> Result<(), Error>;
    /// The current file ends with `trailer`.
    fn end_file(&mut self, trailer: &[u8]) -> Result<(), Error>;
}

/// One physical file of a packet, as written or as it would be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSize {
    /// Its name: `FILE`, `FILE_2`, ...
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// What a packet amounts to once written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Written {
    /// Blocks carried with their bytes.
    pub data_blocks: u64,
    /// Blocks carried as zero runs.
    pub zero_blocks: u64,
    /// Bytes of data carried (uncompressed).
    pub data_bytes: u64,
    /// Records.
    pub records: u64,
    /// The physical files, in order.
    pub files: Vec<FileSize>,
    /// All the files' bytes.
    pub packet_bytes: u64,
    /// The content digest (`docs/packet.md` section 5), hex.
    pub content_digest: String,
}

/// A run of blocks gathered into one record (a data run's bytes are in
/// [`RecordWriter::held`]).
#[derive(Debug)]
enum Pending {
    None,
    Data { offset: u64 },
    Zero { offset: u64, blocks: u32 },
}

/// Turns shipped blocks into records and files; see the module
/// documentation.
#[derive(Debug)]
pub struct RecordWriter<'k, S> {
    enc: PacketEncoder<'k>,
    sink: S,
    max_size: u64,
    max_data: usize,
    block: usize,
    open: bool,
    pending: Pending,
    /// The pending data run's bytes; the buffer is kept from record to
    /// record.
    held: Vec<u8>,
    data_bytes: u64,
}

impl<'k, S: PacketSink> RecordWriter<'k, S> {
    /// A writer of the packet `meta`, signed with `key` when given, into
    /// files of at most `max_size` bytes.
    pub fn new(
        meta: PacketMeta,
        key: Option<&'k Key>,
        max_size: u64,
        sink: S,
    ) -> Result<Self, Error> {
        let block = meta.block_size as usize;
        let enc = PacketEncoder::new(meta, key).map_err(|e| Error::InvalidRequest {
            path: PathBuf::new(),
            reason: format!("cannot make the packet: {e}"),
        })?;
        let max_data = enc.max_record_data(max_size);
        Ok(RecordWriter {
            enc,
            sink,
            max_size,
            max_data,
            block,
            open: false,
            pending: Pending::None,
            held: Vec::new(),
            data_bytes: 0,
        })
    }

    /// The packet being written.
    pub fn meta(&self) -> &PacketMeta {
        self.enc.meta()
    }

    /// Adds whole blocks at logical `offset`, which must not be below the
    /// end of the blocks added before. The blocks that follow them may be
    /// their neighbours, so the last data among them is kept (copied) until
    /// the next call says whether the record grows.
    pub fn push(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Error> {
        self.push_run(offset, bytes, false)
    }

    /// [`push`](Self::push) for blocks whose run ends with them: the next
    /// blocks added will not be their neighbours. Their records are then
    /// written from `bytes` where they are, without a copy.
    pub fn push_ended(&mut self, offset: u64, bytes: &[u8]) -> Result<(), Error> {
        self.push_run(offset, bytes, true)
    }

    fn push_run(&mut self, offset: u64, bytes: &[u8], ended: bool) -> Result<(), Error> {
        let bs = self.block;
        let mut runs = zero_runs(bytes, bs).peekable();
        while let Some(run) = runs.next() {
            let at = offset + (run.first_block * bs) as u64;
            let slice = bytes
                .get(run.first_block * bs..(run.first_block + run.blocks) * bs)
                .unwrap_or_default();
            if run.zero {
                self.push_zero(at, run.blocks as u64)?;
            } else {
                // Zero blocks after it end it too.
                self.push_data(at, slice, ended || runs.peek().is_some())?;
            }
        }
        Ok(())
    }

    fn push_zero(&mut self, offset: u64, mut blocks: u64) -> Result<(), Error> {
        let bs = self.block as u64;
        let mut at = offset;
        while blocks > 0 {
            if let Pending::Zero {
                offset: o,
                blocks: b,
            } = &mut self.pending
            {
                if *o + u64::from(*b) * bs == at && *b < u32::MAX {
                    let take = blocks.min(u64::from(u32::MAX - *b));
                    *b += take as u32;
                    blocks -= take;
                    at += take * bs;
                    continue;
                }
            }
            self.flush_pending()?;
            let take = blocks.min(u64::from(u32::MAX));
            self.pending = Pending::Zero {
                offset: at,
                blocks: take as u32,
            };
            blocks -= take;
            at += take * bs;
        }
        Ok(())
    }

    /// Adds a run of data blocks; `ended`: no neighbour follows.
    fn push_data(&mut self, offset: u64, mut bytes: &[u8], ended: bool) -> Result<(), Error> {
        let mut at = offset;
        while !bytes.is_empty() {
            if let Pending::Data { offset: o } = self.pending {
                let held = self.held.len();
                if o + held as u64 == at && held < self.max_data {
                    let take = bytes.len().min(self.max_data - held);
                    self.held.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    at += take as u64;
                    continue;
                }
            }
            self.flush_pending()?;
            let take = bytes.len().min(self.max_data);
            if ended || take < bytes.len() {
                // A whole record: written from where it is.
                let (record, rest) = bytes.split_at(take);
                self.data_bytes += take as u64;
                let prepared = self.enc.prepare_data(at, record).map_err(encode_error)?;
                self.emit(&prepared)?;
                bytes = rest;
                at += take as u64;
                continue;
            }
            self.held.clear();
            self.held.extend_from_slice(&bytes[..take]);
            self.pending = Pending::Data { offset: at };
            bytes = &bytes[take..];
            at += take as u64;
        }
        Ok(())
    }

    fn flush_pending(&mut self) -> Result<(), Error> {
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::None => Ok(()),
            Pending::Data { offset } => {
                // Taken for the record to borrow, and put back for the next.
                let held = std::mem::take(&mut self.held);
                self.data_bytes += held.len() as u64;
                let emitted = self
                    .enc
                    .prepare_data(offset, &held)
                    .map_err(encode_error)
                    .and_then(|record| self.emit(&record));
                self.held = held;
                emitted
            }
            Pending::Zero { offset, blocks } => {
                let record = self
                    .enc
                    .prepare_zero(offset, blocks)
                    .map_err(encode_error)?;
                self.emit(&record)
            }
        }
    }

    /// Writes `record`'s header, then its payload from where it is.
    fn emit(&mut self, record: &PreparedRecord<'_>) -> Result<(), Error> {
        if !self.open {
            self.start_file()?;
        } else if !self.enc.fits(record, self.max_size) {
            let trailer = self.enc.end_file().map_err(encode_error)?;
            self.sink.end_file(&trailer)?;
            self.start_file()?;
        }
        let header = self.enc.record_header(record).map_err(encode_error)?;
        self.sink.append(&header)?;
        self.sink.append(record.payload())
    }

    fn start_file(&mut self) -> Result<(), Error> {
        let part = self.enc.file_count();
        let header = self.enc.start_file().map_err(encode_error)?;
        self.sink.begin_file(part, &header)?;
        self.open = true;
        Ok(())
    }

    /// Gives up: the sink, with whatever reached it.
    pub fn into_sink(self) -> S {
        self.sink
    }

    /// Ends the packet (a packet without records is one file holding a
    /// header and a trailer) and returns its summary, the uncompressed
    /// data bytes, and the sink.
    pub fn finish(mut self) -> Result<(PacketSummary, u64, S), Error> {
        self.flush_pending()?;
        if !self.open {
            self.start_file()?;
        }
        let (trailer, summary) = self.enc.finish().map_err(encode_error)?;
        self.sink.end_file(&trailer)?;
        Ok((summary, self.data_bytes, self.sink))
    }
}

fn encode_error(e: poolsync_packet::Error) -> Error {
    Error::InvalidRequest {
        path: PathBuf::new(),
        reason: format!("cannot encode the packet: {e}"),
    }
}

/// Counts the files and bytes a packet would take, writing nothing (a dry
/// run, or an export that exceeds its `--limit`).
#[derive(Debug, Clone, Default)]
pub struct CountingSink {
    /// Bytes of each file.
    pub files: Vec<u64>,
}

impl PacketSink for CountingSink {
    fn begin_file(&mut self, _part: u32, header: &[u8]) -> Result<(), Error> {
        self.files.push(header.len() as u64);
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if let Some(last) = self.files.last_mut() {
            *last += bytes.len() as u64;
        }
        Ok(())
    }

    fn end_file(&mut self, trailer: &[u8]) -> Result<(), Error> {
        self.append(trailer)
    }
}

/// Suffix of a physical file while its export has not committed.
pub const PARTIAL_SUFFIX: &str = ".poolsync-partial";

/// The temporary name of the physical file `path`.
pub fn partial_path(path: &Path) -> PathBuf {
    crate::durable::beside(path, PARTIAL_SUFFIX)
}

/// The name of physical file `part` of the packet `out`.
pub fn part_path(out: &Path, part: u32) -> PathBuf {
    PathBuf::from(part_file_name(&out.to_string_lossy(), part))
}

/// Bytes gathered before a write to a packet file.
const WRITE_CHUNK: usize = 4 << 20;

/// Appends at least this long are written from where they are, not
/// gathered first (a record's payload).
const DIRECT_APPEND: usize = 64 << 10;

/// Writes physical files under their temporary names
/// ([`partial_path`]); once the export has committed its state,
/// [`FileSink::publish`] renames them. Files beyond `limit` are only
/// counted.
#[derive(Debug)]
pub struct FileSink<'s, S: Storage> {
    storage: &'s S,
    out: PathBuf,
    limit: Option<u32>,
    file: Option<(S::Aux, u64)>,
    buf: Vec<u8>,
    /// Sizes of every file, written or counted.
    pub sizes: Vec<u64>,
    written: Vec<PathBuf>,
}

impl<'s, S: Storage> FileSink<'s, S> {
    /// Files `out`, `out_2`, ... at most `limit` of them written.
    pub fn new(storage: &'s S, out: &Path, limit: Option<u32>) -> Self {
        FileSink {
            storage,
            out: out.to_path_buf(),
            limit,
            file: None,
            buf: Vec::new(),
            sizes: Vec::new(),
            written: Vec::new(),
        }
    }

    /// Whether more files were needed than `limit` allows.
    pub fn over_limit(&self) -> bool {
        self.limit.is_some_and(|l| self.sizes.len() > l as usize)
    }

    fn write_out(&mut self) -> Result<(), Error> {
        if let Some((file, at)) = &mut self.file {
            write_bytes(file, at, &self.buf)?;
        }
        self.buf.clear();
        Ok(())
    }

    /// Makes every written file durable (data and directory entries).
    pub fn sync(&mut self) -> Result<(), Error> {
        self.write_out()?;
        if let Some((file, _)) = self.file.take() {
            file.fence()?;
        }
        if let Some(first) = self.written.first() {
            self.storage.fsync_parent(first)?;
        }
        Ok(())
    }

    /// Renames the temporary files to their names and makes that durable;
    /// returns the names.
    pub fn publish(self) -> Result<Vec<PathBuf>, Error> {
        let mut names = Vec::with_capacity(self.written.len());
        for (part, tmp) in self.written.iter().enumerate() {
            let name = part_path(&self.out, part as u32);
            self.storage.rename(tmp, &name)?;
            names.push(name);
        }
        if let Some(first) = names.first() {
            self.storage.fsync_parent(first)?;
        }
        Ok(names)
    }

    /// Removes every temporary file written.
    pub fn discard(mut self) -> Result<(), Error> {
        self.file = None;
        for tmp in &self.written {
            crate::durable::remove_if_exists(self.storage, tmp)?;
        }
        if let Some(first) = self.written.first() {
            self.storage.fsync_parent(first)?;
        }
        Ok(())
    }
}

impl<S: Storage> PacketSink for FileSink<'_, S> {
    fn begin_file(&mut self, part: u32, header: &[u8]) -> Result<(), Error> {
        self.sizes.push(header.len() as u64);
        if self.limit.is_some_and(|l| part >= l) {
            return Ok(());
        }
        let final_name = part_path(&self.out, part);
        if self.storage.stat(&final_name)?.is_some() {
            return Err(Error::CannotExport {
                set: final_name.clone(),
                reason: "the file exists; packets never overwrite a file: remove it or choose another --out".to_string(),
            });
        }
        let tmp = partial_path(&final_name);
        crate::durable::remove_if_exists(self.storage, &tmp)?;
        let file = self.storage.create_aux(&tmp, 0o644)?;
        // The exporter never reads a packet back.
        file.write_once();
        self.written.push(tmp);
        self.file = Some((file, 0));
        self.buf.clear();
        self.buf.extend_from_slice(header);
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if let Some(last) = self.sizes.last_mut() {
            *last += bytes.len() as u64;
        }
        if self.file.is_none() {
            return Ok(());
        }
        if bytes.len() >= DIRECT_APPEND {
            // What is gathered goes first, then these bytes, uncopied.
            self.write_out()?;
            if let Some((file, at)) = &mut self.file {
                write_bytes(file, at, bytes)?;
            }
            return Ok(());
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= WRITE_CHUNK {
            self.write_out()?;
        }
        Ok(())
    }

    fn end_file(&mut self, trailer: &[u8]) -> Result<(), Error> {
        self.append(trailer)?;
        self.write_out()?;
        if let Some((file, _)) = self.file.take() {
            file.fence()?;
        }
        Ok(())
    }
}

/// Writes `bytes` at `*at` of a packet file (extending it first) and
/// flushes them; advances `*at`.
fn write_bytes<F: PartFile>(file: &F, at: &mut u64, bytes: &[u8]) -> Result<(), Error> {
    if bytes.is_empty() {
        return Ok(());
    }
    let len = bytes.len() as u64;
    file.set_len(*at + len)?;
    file.write_at(*at, bytes)?;
    file.flush(*at, len)?;
    *at += len;
    Ok(())
}

/// A packet's header for tests: an unsigned, uncompressed packet of
/// epoch 0 to 1 for destination `b` over `range`.
#[cfg(test)]
pub(crate) fn test_meta(range: std::ops::Range<u64>) -> PacketMeta {
    PacketMeta {
        packet_id: [1; 16],
        poolset_uuid: [2; 16],
        lineage: [3; 16],
        timeline: 1,
        history: vec![],
        base_epoch: 0,
        new_epoch: 1,
        block_size: 4096,
        range,
        created: 7,
        comment: String::new(),
        destinations: vec!["b".into()],
        source: "/a/pool.set".into(),
        rewind: None,
        compression: poolsync_packet::Compression::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolsync_packet::{verify_slices, RecordBody};

    fn meta() -> PacketMeta {
        test_meta(4096..(64 << 20))
    }

    /// A sink that keeps the files in memory.
    #[derive(Default)]
    struct Memory(Vec<Vec<u8>>);

    impl PacketSink for Memory {
        fn begin_file(&mut self, _part: u32, header: &[u8]) -> Result<(), Error> {
            self.0.push(header.to_vec());
            Ok(())
        }
        fn append(&mut self, bytes: &[u8]) -> Result<(), Error> {
            self.0.last_mut().unwrap().extend_from_slice(bytes);
            Ok(())
        }
        fn end_file(&mut self, trailer: &[u8]) -> Result<(), Error> {
            self.append(trailer)
        }
    }

    #[test]
    fn neighbouring_blocks_become_records_and_zero_runs_carry_no_bytes() {
        let mut w = RecordWriter::new(meta(), None, 64 * 1024, Memory::default()).unwrap();
        let mut data = vec![0u8; 8 * 4096];
        data[4096] = 1; // block 1
        data[5 * 4096] = 2; // block 5
        w.push(4096, &data).unwrap();
        w.push(4096 + 8 * 4096, &[3u8; 4096]).unwrap();
        w.push(1 << 20, &vec![0u8; 3 * 4096]).unwrap();
        let (summary, data_bytes, sink) = w.finish().unwrap();
        assert_eq!(summary.data_blocks, 3);
        assert_eq!(summary.zero_blocks, 6 + 3);
        assert_eq!(data_bytes, 3 * 4096);
        let files: Vec<&[u8]> = sink.0.iter().map(Vec::as_slice).collect();
        let mut seen = Vec::new();
        verify_slices(&files, None, |body, _| seen.push(*body)).unwrap();
        assert_eq!(
            seen,
            [
                RecordBody::Zero {
                    offset: 4096,
                    len: 4096
                },
                RecordBody::Data {
                    offset: 8192,
                    len: 4096
                },
                RecordBody::Zero {
                    offset: 12288,
                    len: 3 * 4096
                },
                RecordBody::Data {
                    offset: 24576,
                    len: 4096
                },
                RecordBody::Zero {
                    offset: 28672,
                    len: 2 * 4096
                },
                RecordBody::Data {
                    offset: 36864,
                    len: 4096
                },
                RecordBody::Zero {
                    offset: 1 << 20,
                    len: 3 * 4096
                },
            ]
        );
    }

    #[test]
    fn runs_said_to_end_make_the_same_files_without_being_held() {
        // Runs of every length around the record size (1 MiB here, set by
        // the 4 MiB file size), some with zero blocks inside, some
        // neighbours of the next, split the way a scan's strides split
        // them. Pushing the runs that end with push_ended must give the
        // very bytes the gathering path gives.
        let bs = 4096usize;
        let mut runs: Vec<(u64, Vec<u8>, bool)> = Vec::new();
        let mut at = 4096u64;
        let mut seed = 7u64;
        for i in 0..40u64 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let blocks = 1 + (seed >> 33) as usize % 600;
            let mut bytes: Vec<u8> = (0..blocks * bs)
                .map(|b| (b as u64 ^ seed) as u8 | 1)
                .collect();
            if i % 5 == 0 {
                let end = (3 * bs).min(bytes.len());
                if end > bs {
                    bytes[bs..end].fill(0);
                }
            }
            // Every third run is the end of a stride whose neighbour comes
            // next; the others end before a block that does not ship.
            let continues = i % 3 == 0;
            let len = bytes.len() as u64;
            runs.push((at, bytes, !continues));
            at += len + if continues { 0 } else { 3 * bs as u64 };
        }
        let write = |say_ended: bool| {
            let mut m = meta();
            m.range = 0..at + (1 << 20);
            let mut w = RecordWriter::new(m, None, 4 << 20, Memory::default()).unwrap();
            for (at, bytes, ended) in &runs {
                if say_ended && *ended {
                    w.push_ended(*at, bytes).unwrap();
                } else {
                    w.push(*at, bytes).unwrap();
                }
            }
            let (summary, data_bytes, sink) = w.finish().unwrap();
            (summary, data_bytes, sink.0)
        };
        let (gathered, direct) = (write(false), write(true));
        assert_eq!(direct.0, gathered.0);
        assert_eq!(direct.1, gathered.1);
        assert!(direct.2 == gathered.2, "the files differ");
        let files: Vec<&[u8]> = direct.2.iter().map(Vec::as_slice).collect();
        let mut data = 0u64;
        verify_slices(&files, None, |body, _| {
            if let RecordBody::Data { len, .. } = body {
                data += *len as u64;
            }
        })
        .unwrap();
        assert_eq!(data, direct.1);
    }

    #[test]
    fn files_stay_within_the_maximum_size() {
        let max = 64 * 1024;
        let mut w = RecordWriter::new(meta(), None, max, CountingSink::default()).unwrap();
        let data: Vec<u8> = (0..(1 << 20)).map(|i| (i % 253) as u8 + 1).collect();
        w.push(4096, &data).unwrap();
        let (summary, _, sink) = w.finish().unwrap();
        assert!(sink.files.len() > 16, "{:?}", sink.files);
        assert!(sink.files.iter().all(|&n| n <= max), "{:?}", sink.files);
        assert_eq!(summary.files as usize, sink.files.len());
        assert_eq!(summary.data_blocks, 256);
    }

    #[test]
    fn an_empty_packet_is_one_file() {
        let w = RecordWriter::new(meta(), None, 64 * 1024, Memory::default()).unwrap();
        let (summary, _, sink) = w.finish().unwrap();
        assert_eq!((summary.files, summary.records), (1, 0));
        let files: Vec<&[u8]> = sink.0.iter().map(Vec::as_slice).collect();
        verify_slices(&files, None, |_, _| {}).unwrap();
    }
}
