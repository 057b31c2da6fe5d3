//! Writing a logical packet as a series of physical files.

use std::borrow::Cow;

use super::compress::Codec;
use super::header::{encode_file_header, meta_problem, var_offsets};
use super::record::{record_tag, RecordHeader, RecordKind, RECORD_HEADER_LEN};
use super::trailer::{encode_trailer, TRAILER_LEN};
use super::{
    data_hash, Compression, ContentDigest, FileHeader, PacketMeta, PacketSummary, Trailer,
    MAX_RECORD_DATA, REC_KIND_DATA, REC_KIND_ZERO,
};
use crate::tag::{Key, TAG_LEN};
use crate::Error;

/// A record compressed and ready to be written, whose size is known before
/// the caller decides which file it goes into. A record stored as is
/// borrows the caller's data rather than copying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedRecord<'a> {
    kind: RecordKind,
    offset: u64,
    blocks: u32,
    payload: Cow<'a, [u8]>,
    /// What the tag covers: the BLAKE3 hash of the payload.
    payload_hash: [u8; 32],
    data_hash: Option<[u8; 32]>,
}

impl PreparedRecord<'_> {
    /// The bytes that follow its header in the file: the data, compressed
    /// or as is; nothing for a zero run.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Bytes it will take in a file: header and payload.
    pub fn encoded_len(&self) -> u64 {
        (RECORD_HEADER_LEN + self.payload.len()) as u64
    }

    /// Logical offset of its first block.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Blocks it covers.
    pub fn blocks(&self) -> u32 {
        self.blocks
    }

    /// How it is stored.
    pub fn kind(&self) -> RecordKind {
        self.kind
    }
}

#[derive(Debug)]
struct OpenFile {
    header: FileHeader,
    first_seq: u64,
    records: u64,
    len: u64,
}

/// Encodes one logical packet, file by file and record by record, in the
/// order the engine streams it:
///
/// ```text
/// start_file          -> header bytes of FILE
/// prepare_* / fits / write_record ...   (records, in ascending logical order)
/// end_file            -> trailer bytes of FILE;  start_file -> header of FILE_2 ...
/// finish              -> trailer bytes of the last file, and the packet's summary
/// ```
///
/// Records must come in ascending, non-overlapping logical order; the
/// encoder numbers them across files and tags each with its file's header
/// tag. Every record is also fed into the content digest written to the
/// last trailer.
#[derive(Debug)]
pub struct PacketEncoder<'k> {
    meta: PacketMeta,
    key: Option<&'k Key>,
    codec: Codec,
    header_len: usize,
    file: Option<OpenFile>,
    next_part: u32,
    seq: u64,
    next_offset: u64,
    data_blocks: u64,
    zero_blocks: u64,
    digest: ContentDigest,
}

impl<'k> PacketEncoder<'k> {
    /// An encoder for the packet `meta`, signed with `key` when given.
    pub fn new(meta: PacketMeta, key: Option<&'k Key>) -> Result<Self, Error> {
        if let Some((field, _, problem)) = meta_problem(&meta) {
            return Err(Error::encode(field, problem));
        }
        let tag_off = var_offsets(&meta).tag;
        Ok(PacketEncoder {
            digest: ContentDigest::new(&meta),
            next_offset: meta.range.start,
            meta,
            key,
            codec: Codec::default(),
            header_len: tag_off + TAG_LEN,
            file: None,
            next_part: 0,
            seq: 0,
            data_blocks: 0,
            zero_blocks: 0,
        })
    }

    /// The packet being written.
    pub fn meta(&self) -> &PacketMeta {
        &self.meta
    }

    /// Files started so far: the part index the next file gets.
    pub fn file_count(&self) -> u32 {
        self.next_part
    }

    /// Bytes of each file's header (the same for every file).
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Bytes written so far to the open file (header and records), or
    /// `None` between files.
    pub fn file_len(&self) -> Option<u64> {
        self.file.as_ref().map(|f| f.len)
    }

    /// Starts the next file and returns its header bytes.
    pub fn start_file(&mut self) -> Result<Vec<u8>, Error> {
        if self.file.is_some() {
            return Err(Error::Misuse {
                api: "PacketEncoder::start_file",
                problem: "the previous file is not ended",
            });
        }
        let part = self.next_part;
        self.next_part = part
            .checked_add(1)
            .ok_or_else(|| Error::encode("part index", "more than u32::MAX files in one packet"))?;
        let (bytes, header) = encode_file_header(&self.meta, part, self.key)?;
        self.file = Some(OpenFile {
            header,
            first_seq: self.seq,
            records: 0,
            len: bytes.len() as u64,
        });
        Ok(bytes)
    }

    /// Prepares a data record of `data` (whole blocks, at most
    /// [`MAX_RECORD_DATA`] bytes) at logical `offset`: compressed with the
    /// packet's compression when that makes it smaller, else stored as is.
    /// All-zero runs belong in [`prepare_zero`](Self::prepare_zero) records
    /// ([`zero_runs`] finds them); a data record may still hold zero blocks.
    pub fn prepare_data<'a>(
        &mut self,
        offset: u64,
        data: &'a [u8],
    ) -> Result<PreparedRecord<'a>, Error> {
        let bs = self.meta.block_size as usize;
        if data.is_empty() || !data.len().is_multiple_of(bs) || data.len() > MAX_RECORD_DATA {
            return Err(Error::encode(
                "data record",
                format!(
                    "{} bytes, expected whole blocks of {bs} bytes, at most {MAX_RECORD_DATA}",
                    data.len()
                ),
            ));
        }
        let blocks = (data.len() / bs) as u32;
        self.check_place(offset, blocks)?;
        let (compression, payload) = match self.codec.compress(self.meta.compression, data)? {
            Some(packed) => (self.meta.compression, Cow::Owned(packed)),
            None => (Compression::None, Cow::Borrowed(data)),
        };
        let hash = data_hash(data);
        // Stored as is, the payload is the data: one hash serves the tag
        // and the content digest.
        let stored_hash = match &payload {
            Cow::Borrowed(_) => hash,
            Cow::Owned(packed) => data_hash(packed),
        };
        Ok(PreparedRecord {
            kind: RecordKind::Data {
                compression,
                // At most MAX_RECORD_DATA, which fits a u32.
                stored_len: payload.len() as u32,
            },
            offset,
            blocks,
            payload,
            payload_hash: stored_hash,
            data_hash: Some(hash),
        })
    }

    /// Prepares a record of `blocks` zero blocks at logical `offset`.
    pub fn prepare_zero(&self, offset: u64, blocks: u32) -> Result<PreparedRecord<'static>, Error> {
        if blocks == 0 {
            return Err(Error::encode("zero run", "no blocks"));
        }
        self.check_place(offset, blocks)?;
        Ok(PreparedRecord {
            kind: RecordKind::Zero,
            offset,
            blocks,
            payload: Cow::Borrowed(&[]),
            payload_hash: data_hash(&[]),
            data_hash: None,
        })
    }

    fn check_place(&self, offset: u64, blocks: u32) -> Result<(), Error> {
        let bs = u64::from(self.meta.block_size);
        let end = offset.checked_add(u64::from(blocks) * bs);
        let range = &self.meta.range;
        if !offset.is_multiple_of(bs)
            || offset < range.start
            || !matches!(end, Some(e) if e <= range.end)
        {
            return Err(Error::encode(
                "record",
                format!(
                    "{blocks} blocks at {offset} are not aligned blocks inside the shipped range {}..{}",
                    range.start, range.end
                ),
            ));
        }
        Ok(())
    }

    /// Whether `record` still fits in the open file without making it
    /// exceed `max_file_size` once the trailer is added. A file that holds
    /// no record yet always takes one, so a record larger than the room
    /// makes a file larger than `max_file_size`;
    /// [`max_record_data`](Self::max_record_data) avoids that.
    pub fn fits(&self, record: &PreparedRecord<'_>, max_file_size: u64) -> bool {
        match &self.file {
            None => false,
            Some(f) if f.records == 0 => true,
            Some(f) => f.len + record.encoded_len() + TRAILER_LEN as u64 <= max_file_size,
        }
    }

    /// The most data bytes (whole blocks, at least one) a record may hold so
    /// that any record fits in an empty file of `max_file_size` bytes.
    /// Stored records are never larger than their data, so this bounds
    /// compressed records too.
    pub fn max_record_data(&self, max_file_size: u64) -> usize {
        let bs = self.meta.block_size as u64;
        let overhead = (self.header_len + RECORD_HEADER_LEN + TRAILER_LEN) as u64;
        let room = max_file_size
            .saturating_sub(overhead)
            .min(MAX_RECORD_DATA as u64);
        (room / bs).max(1) as usize * bs as usize
    }

    /// Appends `record` (header and payload) to `out`, as the next record of
    /// the open file.
    pub fn write_record(
        &mut self,
        record: PreparedRecord<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let header = self.record_header(&record)?;
        out.extend_from_slice(&header);
        out.extend_from_slice(record.payload());
        Ok(())
    }

    /// Makes `record` the next record of the open file and returns its
    /// header, which the file holds followed by
    /// [`record.payload()`](PreparedRecord::payload): what
    /// [`write_record`](Self::write_record) appends, for a caller that
    /// writes the payload from where it already is.
    pub fn record_header(
        &mut self,
        record: &PreparedRecord<'_>,
    ) -> Result<[u8; RECORD_HEADER_LEN], Error> {
        let Some(file) = &mut self.file else {
            return Err(Error::Misuse {
                api: "PacketEncoder::write_record",
                problem: "no file is started",
            });
        };
        if record.offset < self.next_offset {
            return Err(Error::encode(
                "record",
                format!(
                    "logical offset {} is below the end {} of the previous record; records go in ascending order",
                    record.offset, self.next_offset
                ),
            ));
        }
        let mut header = RecordHeader {
            kind: record.kind,
            seq: self.seq,
            offset: record.offset,
            blocks: record.blocks,
            tag: [0; TAG_LEN],
            at: file.len,
        };
        header.tag = record_tag(self.key, &file.header.tag, &header, &record.payload_hash);
        file.len += record.encoded_len();
        file.records += 1;
        self.seq += 1;
        let bs = u64::from(self.meta.block_size);
        self.next_offset = record.offset + u64::from(record.blocks) * bs;
        let kind = match record.kind {
            RecordKind::Data { .. } => {
                self.data_blocks += u64::from(record.blocks);
                REC_KIND_DATA
            }
            RecordKind::Zero => {
                self.zero_blocks += u64::from(record.blocks);
                REC_KIND_ZERO
            }
        };
        self.digest.add(
            kind,
            record.offset,
            record.blocks,
            record.data_hash.as_ref(),
        );
        Ok(header.encode())
    }

    /// Ends the open file, which is not the last, and returns its trailer.
    pub fn end_file(&mut self) -> Result<Vec<u8>, Error> {
        let Some(file) = self.file.take() else {
            return Err(Error::Misuse {
                api: "PacketEncoder::end_file",
                problem: "no file is started",
            });
        };
        let mut trailer = Trailer {
            first_seq: file.first_seq,
            record_count: file.records,
            last: None,
            tag: [0; TAG_LEN],
        };
        Ok(encode_trailer(&file.header, &mut trailer, self.key).to_vec())
    }

    /// Ends the open file as the last of the packet and returns its trailer
    /// and the packet's summary.
    pub fn finish(mut self) -> Result<(Vec<u8>, PacketSummary), Error> {
        let Some(file) = self.file.take() else {
            return Err(Error::Misuse {
                api: "PacketEncoder::finish",
                problem: "no file is started; the last trailer ends a started file",
            });
        };
        let summary = PacketSummary {
            files: self.next_part,
            records: self.seq,
            data_blocks: self.data_blocks,
            zero_blocks: self.zero_blocks,
            content_digest: self.digest.finish(),
        };
        let mut trailer = Trailer {
            first_seq: file.first_seq,
            record_count: file.records,
            last: Some(summary),
            tag: [0; TAG_LEN],
        };
        let bytes = encode_trailer(&file.header, &mut trailer, self.key).to_vec();
        Ok((bytes, summary))
    }
}

/// A run of blocks that are all zero or all not zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Index of its first block in the buffer.
    pub first_block: usize,
    /// Number of blocks.
    pub blocks: usize,
    /// Whether every byte of these blocks is zero.
    pub zero: bool,
}

/// Iterator over the [`Run`]s of a buffer; see [`zero_runs`].
#[derive(Debug, Clone)]
pub struct ZeroRuns<'a> {
    data: &'a [u8],
    block_size: usize,
    next: usize,
}

/// Splits `data` into maximal runs of zero and non-zero blocks of
/// `block_size` bytes (a last partial block counts as a block). A
/// `block_size` of 0 yields nothing.
///
/// ```
/// use poolsync_packet::{zero_runs, Run};
/// let mut data = vec![0u8; 4 * 512];
/// data[512] = 1;
/// let runs: Vec<Run> = zero_runs(&data, 512).collect();
/// assert_eq!(runs, [
///     Run { first_block: 0, blocks: 1, zero: true },
///     Run { first_block: 1, blocks: 1, zero: false },
///     Run { first_block: 2, blocks: 2, zero: true },
/// ]);
/// ```
pub fn zero_runs(data: &[u8], block_size: usize) -> ZeroRuns<'_> {
    ZeroRuns {
        data,
        block_size,
        next: 0,
    }
}

impl Iterator for ZeroRuns<'_> {
    type Item = Run;

    fn next(&mut self) -> Option<Run> {
        if self.block_size == 0 {
            return None;
        }
        let mut chunks = self
            .data
            .get(self.next.checked_mul(self.block_size)?..)?
            .chunks(self.block_size);
        let zero = chunks.next()?.iter().all(|&b| b == 0);
        let blocks = 1 + chunks
            .take_while(|c| c.iter().all(|&b| b == 0) == zero)
            .count();
        let run = Run {
            first_block: self.next,
            blocks,
            zero,
        };
        self.next += blocks;
        Some(run)
    }
}
