//! Reading physical packet files: their headers and trailers, which files
//! make up which logical packet, and every record, verified, in order.
//!
//! Every refusal is an [`Error::PacketFile`] that names the file and the
//! byte offset at fault. Reading is bounded: a header of at most
//! `FILE_HEADER_MAX_LEN` bytes, a trailer, one record header and one
//! payload of at most 1 MiB at a time ([`read_ahead`] holds at most four
//! batches of records, each under 2 MiB).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use poolsync_packet::{
    check_parts, decode_file_header, decode_trailer, file_header_len, FileHeader, Key, PacketMeta,
    PacketReader, PacketSummary, Part, PartProblem, RecordBody, Trailer, FILE_HEADER_FIXED_LEN,
    MAX_RECORD_DATA, RECORD_HEADER_LEN, TRAILER_LEN,
};
use poolsync_pmem::{Access, PartFile, Storage};

use crate::Error;

/// One physical file whose header and trailer verified.
#[derive(Debug, Clone)]
pub struct PacketFile {
    /// The file.
    pub path: PathBuf,
    /// Its length.
    pub len: u64,
    /// Its header.
    pub header: FileHeader,
    /// Its trailer.
    pub trailer: Trailer,
}

fn refused(path: &Path, e: &poolsync_packet::Error) -> Error {
    Error::PacketFile {
        path: path.to_path_buf(),
        offset: e.offset(),
        reason: e.to_string(),
    }
}

fn refused_text(path: &Path, offset: Option<u64>, reason: String) -> Error {
    Error::PacketFile {
        path: path.to_path_buf(),
        offset,
        reason,
    }
}

/// Opens `path` and verifies its header and trailer (with `key`, only
/// signed files are accepted; without, only unsigned ones).
pub fn open_packet_file<S: Storage>(
    storage: &S,
    path: &Path,
    key: Option<&Key>,
) -> Result<PacketFile, Error> {
    if storage.stat(path)?.is_none() {
        return Err(refused_text(path, None, "no such file".to_string()));
    }
    let file = storage.open_aux(path, Access::ReadOnly)?;
    let len = file.len()?;
    let mut prefix = vec![0u8; usize::try_from(len.min(FILE_HEADER_FIXED_LEN as u64)).unwrap_or(0)];
    file.read_at(0, &mut prefix)?;
    let header_len = file_header_len(&prefix).map_err(|e| refused(path, &e))?;
    if (header_len as u64) > len {
        return Err(refused_text(
            path,
            Some(len),
            format!(
                "packet file is truncated: {len} bytes, shorter than its {header_len}-byte header (length at offset 12)"
            ),
        ));
    }
    let mut head = vec![0u8; header_len];
    file.read_at(0, &mut head)?;
    let header = decode_file_header(&head, key).map_err(|e| refused(path, &e))?;
    let min = (header.len + TRAILER_LEN) as u64;
    if len < min {
        return Err(refused_text(
            path,
            Some(len),
            format!("packet file is truncated: {len} bytes, a header and a trailer take {min}"),
        ));
    }
    let at = len - TRAILER_LEN as u64;
    let mut tail = vec![0u8; TRAILER_LEN];
    file.read_at(at, &mut tail)?;
    let trailer = decode_trailer(&tail, at, &header, key).map_err(|e| refused(path, &e))?;
    Ok(PacketFile {
        path: path.to_path_buf(),
        len,
        header,
        trailer,
    })
}

/// The physical files of one logical packet, in part order.
#[derive(Debug, Clone)]
pub struct LogicalPacket {
    /// The files.
    pub files: Vec<PacketFile>,
}

impl LogicalPacket {
    /// What every file says about the packet.
    pub fn meta(&self) -> &PacketMeta {
        // `group` never makes an empty packet.
        &self.files[0].header.meta
    }

    /// The totals the last file's trailer declares.
    pub fn summary(&self) -> Option<PacketSummary> {
        self.files.last().and_then(|f| f.trailer.last)
    }

    /// The first file's path, which names the packet in messages.
    pub fn path(&self) -> &Path {
        &self.files[0].path
    }

    /// Bytes of all its files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.len).sum()
    }

    /// Whether the packet carries every block of its range.
    pub fn is_full(&self) -> bool {
        let m = self.meta();
        let blocks = (m.range.end - m.range.start) / u64::from(m.block_size);
        self.summary()
            .is_some_and(|s| s.data_blocks + s.zero_blocks == blocks)
    }
}

/// A file that could not be read, or a set of files that do not make up
/// a whole packet.
#[derive(Debug)]
pub struct Refusal {
    /// The file (the packet's first file for a problem of the set).
    pub path: PathBuf,
    /// The error.
    pub error: Error,
}

/// Groups verified files into logical packets by packet id, checking that
/// each group is one whole packet (`check_parts`): missing, duplicated,
/// inconsistent or surplus parts are refusals naming the file.
pub fn group(files: Vec<PacketFile>) -> (Vec<LogicalPacket>, Vec<Refusal>) {
    let mut by_id: BTreeMap<[u8; 16], Vec<PacketFile>> = BTreeMap::new();
    for f in files {
        by_id.entry(f.header.meta.packet_id).or_default().push(f);
    }
    let mut packets = Vec::new();
    let mut refusals = Vec::new();
    for (_, group) in by_id {
        let parts: Vec<Part<'_>> = group
            .iter()
            .map(|f| Part {
                header: &f.header,
                trailer: &f.trailer,
                file_len: f.len,
            })
            .collect();
        let report = check_parts(&parts);
        if let Some(problem) = report.problems.first() {
            let file = problem.file().and_then(|i| group.get(i));
            let named = file.map_or_else(|| group[0].path.clone(), |f| f.path.clone());
            let reason = describe_problem(problem, &group);
            refusals.push(Refusal {
                error: refused_text(&named, problem.offset(), reason),
                path: named,
            });
            continue;
        }
        let mut slots: Vec<Option<PacketFile>> = group.into_iter().map(Some).collect();
        let files = report
            .order
            .iter()
            .filter_map(|&i| slots.get_mut(i).and_then(Option::take))
            .collect();
        packets.push(LogicalPacket { files });
    }
    packets.sort_by_key(|p| {
        let m = p.meta();
        (m.base_epoch, m.new_epoch, m.timeline)
    });
    (packets, refusals)
}

/// A part problem in words, with the files named and, for missing parts,
/// the names they would have.
fn describe_problem(problem: &PartProblem, group: &[PacketFile]) -> String {
    let name = |i: usize| {
        group
            .get(i)
            .map_or_else(|| format!("file {i}"), |f| f.path.display().to_string())
    };
    let first = &group[0];
    let base = base_name(&first.path, first.header.part_index);
    match problem {
        PartProblem::Missing { first: part, count } => {
            let names: Vec<String> = (0..(*count).min(4))
                .map(|k| {
                    super::stream::part_path(&base, part + k as u32)
                        .display()
                        .to_string()
                })
                .collect();
            let more = if *count > 4 {
                format!(" and {} more", count - 4)
            } else {
                String::new()
            };
            format!(
                "packet is incomplete: physical file(s) {}{more} (part index {part}{}) not given; give every file of the packet",
                names.join(", "),
                if *count > 1 { " on" } else { "" }
            )
        }
        PartProblem::NoLast { .. } => format!(
            "packet is incomplete: {problem}; give every file of the packet ({}, {}_2, ...)",
            base.display(),
            base.display()
        ),
        PartProblem::Duplicate {
            part,
            first,
            second,
        } => format!(
            "{} and {} are both part index {part} of one packet (offset 68)",
            name(*first),
            name(*second)
        ),
        other => {
            let text = other.to_string();
            match other.file() {
                Some(i) => text.replace(&format!("file {i}"), &name(i)),
                None => text,
            }
        }
    }
}

/// The name of part 0 of the packet whose part `part` is `path`
/// (`pkt_3` → `pkt`).
pub fn base_name(path: &Path, part: u32) -> PathBuf {
    if part == 0 {
        return path.to_path_buf();
    }
    let text = path.to_string_lossy();
    let suffix = format!("_{}", u64::from(part) + 1);
    match text.strip_suffix(&suffix) {
        Some(base) => PathBuf::from(base),
        None => path.to_path_buf(),
    }
}

/// The records of a logical packet, verified one by one as they are read
/// (`PacketReader`); [`RecordStream::read_next`] gives the next record and its
/// uncompressed bytes (empty for a zero run).
pub struct RecordStream<'a, S: Storage> {
    storage: &'a S,
    packet: &'a LogicalPacket,
    reader: PacketReader<'a>,
    index: usize,
    current: Option<S::Aux>,
    /// Bytes of the current file read ahead, from file offset `buf_at`.
    buf: Vec<u8>,
    buf_at: u64,
    out: Vec<u8>,
}

/// Bytes of a packet file read at a time: a record header and the largest
/// payload fit.
const READ_AHEAD: usize = 2 << 20;

impl<S: Storage> std::fmt::Debug for RecordStream<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordStream")
            .field("packet", &self.packet.path())
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl<'a, S: Storage> RecordStream<'a, S> {
    /// A stream over `packet`'s records, read with `key`.
    pub fn new(storage: &'a S, packet: &'a LogicalPacket, key: Option<&'a Key>) -> Self {
        RecordStream {
            storage,
            packet,
            reader: PacketReader::new(key),
            index: 0,
            current: None,
            buf: Vec::new(),
            buf_at: 0,
            out: vec![0; MAX_RECORD_DATA],
        }
    }

    /// Makes `[at, at + n)` of the current file (of length `len`) lie in
    /// the read-ahead buffer, reading it (and what follows, up to
    /// [`READ_AHEAD`] bytes) when it does not; returns its position in the
    /// buffer.
    fn fill(&mut self, at: u64, n: usize, len: u64) -> Result<usize, Error> {
        let end = at.saturating_add(n as u64);
        let held = self.buf_at..self.buf_at + self.buf.len() as u64;
        if at >= held.start && end <= held.end {
            return Ok((at - held.start) as usize);
        }
        let want = (len.saturating_sub(at)).min(READ_AHEAD.max(n) as u64) as usize;
        self.buf.resize(want, 0);
        if let Some(file) = &self.current {
            file.read_at(at, &mut self.buf)?;
        }
        self.buf_at = at;
        Ok(0)
    }

    fn path(&self) -> &Path {
        self.packet
            .files
            .get(self.index)
            .map_or_else(|| self.packet.path(), |f| f.path.as_path())
    }

    fn fail(&self, e: &poolsync_packet::Error) -> Error {
        refused(self.path(), e)
    }

    /// The next record, or `None` after the last one (then
    /// [`RecordStream::finish`]).
    pub fn read_next(&mut self) -> Result<Option<(RecordBody, &[u8])>, Error> {
        loop {
            if self.current.is_none() {
                let Some(f) = self.packet.files.get(self.index) else {
                    return Ok(None);
                };
                let file = self.storage.open_aux(&f.path, Access::ReadOnly)?;
                let len = file.len()?;
                if len != f.len {
                    return Err(refused_text(
                        &f.path,
                        Some(len.min(f.len)),
                        format!(
                            "packet file changed while it was read: {} bytes, then {len}",
                            f.len
                        ),
                    ));
                }
                self.reader
                    .begin_file(f.header.clone(), f.trailer.clone(), f.len)
                    .map_err(|e| self.fail(&e))?;
                self.current = Some(file);
                self.buf.clear();
                self.buf_at = 0;
            }
            let Some(at) = self.reader.next_record_at() else {
                self.reader.end_file().map_err(|e| self.fail(&e))?;
                self.current = None;
                self.index += 1;
                continue;
            };
            let len = self.packet.files[self.index].len;
            let n = (len - at).min(RECORD_HEADER_LEN as u64) as usize;
            let i = self.fill(at, n, len)?;
            let record = self
                .reader
                .record_header(self.buf.get(i..i + n).unwrap_or_default())
                .map_err(|e| self.fail(&e))?;
            // `record_header` checked that the payload ends before the
            // trailer.
            let p = self.fill(record.payload_offset(), record.payload_len(), len)?;
            let payload = self
                .buf
                .get(p..p + record.payload_len())
                .unwrap_or_default();
            // A payload stored as is is handed out where it was read.
            let (body, decoded) = match self.reader.record_payload_in_place(payload, &mut self.out)
            {
                Ok(opened) => opened,
                Err(e) => return Err(self.fail(&e)),
            };
            let data = match body {
                RecordBody::Data { len, .. } if decoded => self.out.get(..len).unwrap_or_default(),
                RecordBody::Data { len, .. } => payload.get(..len).unwrap_or_default(),
                RecordBody::Zero { .. } => &[],
            };
            return Ok(Some((body, data)));
        }
    }

    /// Ends the stream: the last trailer's totals and content digest must
    /// match what was read.
    pub fn finish(self) -> Result<PacketSummary, Error> {
        let last = self
            .packet
            .files
            .last()
            .map_or_else(PathBuf::new, |f| f.path.clone());
        self.reader.finish().map_err(|e| refused(&last, &e))
    }
}

/// Batches read ahead: how many the reader thread may have verified and
/// queued before the caller takes them.
const BATCHES_AHEAD: usize = 2;

/// A batch is handed over once it holds this many bytes of data (or
/// [`BATCH_RECORDS`] records): one hand-over per record would cost more
/// than a small record's reading (waking a thread takes tens of
/// microseconds on a virtual machine).
const BATCH_BYTES: usize = 1 << 20;

/// ... or this many records.
const BATCH_RECORDS: usize = 512;

/// Verified records handed over together: each record's body and where
/// its bytes lie in `data` (empty for a zero run).
#[derive(Debug, Default)]
struct Batch {
    records: Vec<(RecordBody, std::ops::Range<usize>)>,
    data: Vec<u8>,
}

/// What the reader thread of [`read_ahead`] hands over: a batch, and
/// whether the packet ended with it (its totals and digest checked out).
type Handed = Result<(Batch, bool), Error>;

/// `packet`'s records, read and verified by a thread of their own a few
/// batches ahead of the caller ([`read_ahead`]).
#[derive(Debug)]
pub struct RecordsAhead {
    full: std::sync::mpsc::Receiver<Handed>,
    empty: std::sync::mpsc::Sender<Batch>,
    /// The batch at hand, the next record in it, and whether the packet
    /// ends with it.
    current: Option<Batch>,
    next: usize,
    last: bool,
}

impl RecordsAhead {
    /// The next record and its bytes, or `None` after the last one, once
    /// the packet's totals and content digest checked out (what
    /// [`RecordStream::finish`] checks).
    pub fn next_record(&mut self) -> Result<Option<(RecordBody, &[u8])>, Error> {
        loop {
            let at_hand = self
                .current
                .as_ref()
                .is_some_and(|b| self.next < b.records.len());
            if at_hand {
                break;
            }
            if let Some(done) = self.current.take() {
                let _ = self.empty.send(done);
            }
            if self.last {
                return Ok(None);
            }
            let (batch, last) = self.full.recv().map_err(|_| Error::WriterStopped)??;
            self.current = Some(batch);
            self.next = 0;
            self.last = last;
        }
        let batch = self.current.as_ref().ok_or(Error::WriterStopped)?;
        let (body, range) = batch.records.get(self.next).ok_or(Error::WriterStopped)?;
        self.next += 1;
        let data = batch.data.get(range.clone()).ok_or(Error::WriterStopped)?;
        Ok(Some((*body, data)))
    }
}

/// Runs `consume` with `packet`'s records (as [`RecordStream`] gives them,
/// verified) read by a thread of its own, so that reading and verifying
/// the next records overlaps with what the caller does with these. The
/// end is reported only after the packet's totals and content digest
/// checked out; an error is reported after the records before the one at
/// fault.
pub fn read_ahead<S: Storage, T>(
    storage: &S,
    packet: &LogicalPacket,
    key: Option<&Key>,
    consume: impl FnOnce(&mut RecordsAhead) -> Result<T, Error>,
) -> Result<T, Error> {
    use std::sync::mpsc;
    std::thread::scope(|scope| {
        // Created here, so that returning early drops the caller's ends
        // and the reader stops instead of waiting for ever.
        let (full_tx, full_rx) = mpsc::sync_channel::<Handed>(BATCHES_AHEAD);
        let (empty_tx, empty_rx) = mpsc::channel::<Batch>();
        for _ in 0..=BATCHES_AHEAD {
            let _ = empty_tx.send(Batch::default());
        }
        scope.spawn(move || {
            let mut stream = RecordStream::new(storage, packet, key);
            loop {
                let Ok(mut batch) = empty_rx.recv() else {
                    return;
                };
                batch.records.clear();
                batch.data.clear();
                let mut last = false;
                let mut failed = None;
                while batch.data.len() < BATCH_BYTES && batch.records.len() < BATCH_RECORDS {
                    match stream.read_next() {
                        Ok(Some((body, data))) => {
                            let at = batch.data.len();
                            batch.data.extend_from_slice(data);
                            batch.records.push((body, at..batch.data.len()));
                        }
                        Ok(None) => {
                            last = true;
                            break;
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                if last {
                    let _ = full_tx.send(stream.finish().map(|_| (batch, true)));
                    return;
                }
                if full_tx.send(Ok((batch, false))).is_err() {
                    return;
                }
                // The records before a failure are handed over first, as a
                // stream read in place would give them.
                if let Some(e) = failed {
                    let _ = full_tx.send(Err(e));
                    return;
                }
            }
        });
        let mut records = RecordsAhead {
            full: full_rx,
            empty: empty_tx,
            current: None,
            next: 0,
            last: false,
        };
        consume(&mut records)
    })
}

/// Reads every record of `packet`, verified, and hands each to `visit`;
/// returns the packet's summary once the totals and the content digest
/// checked out.
pub fn read_records<S: Storage>(
    storage: &S,
    packet: &LogicalPacket,
    key: Option<&Key>,
    mut visit: impl FnMut(&RecordBody, &[u8]) -> Result<(), Error>,
) -> Result<PacketSummary, Error> {
    let mut stream = RecordStream::new(storage, packet, key);
    while let Some((body, data)) = stream.read_next()? {
        visit(&body, data)?;
    }
    stream.finish()
}
