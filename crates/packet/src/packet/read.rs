//! Reading and verifying a logical packet, file by file and record by record.

use super::compress::Codec;
use super::header::{decode_file_header, file_header_len, FILE_HEADER_FIXED_LEN};
use super::parts::{check_parts, first_difference, Part, PartProblem};
use super::record::{
    decode_record_header, open_record_with, RecordBody, RecordHeader, RecordKind,
    RECORD_HEADER_LEN, REC_OFFSET_OFF, REC_SEQ_OFF,
};
use super::trailer::{
    decode_trailer, TRAILER_LEN, TRL_DATA_BLOCKS_OFF, TRL_DIGEST_OFF, TRL_FIRST_SEQ_OFF,
    TRL_RECORD_COUNT_OFF, TRL_ZERO_BLOCKS_OFF,
};
use super::{
    data_hash, Compression, ContentDigest, FileHeader, PacketSummary, Trailer, MAX_RECORD_DATA,
    REC_KIND_DATA, REC_KIND_ZERO,
};
use crate::tag::Key;
use crate::Error;

#[derive(Debug)]
struct ReadFile {
    header: FileHeader,
    trailer: Trailer,
    trailer_at: u64,
    pos: u64,
    end_seq: u64,
}

#[derive(Debug)]
struct Started {
    first: FileHeader,
    digest: ContentDigest,
}

/// Verifies a logical packet as the engine reads it: files in part order
/// (as [`check_parts`] gives them), each file's records in order.
///
/// ```text
/// for each file, in part order:
///     begin_file(header, trailer, file_len)
///     while let Some(at) = next_record_at():
///         record_header(bytes at `at`, RECORD_HEADER_LEN of them)
///         record_payload(the record's payload_len() bytes that follow, buffer)
///     end_file()
/// finish()  -> the packet's summary, its content digest recomputed
/// ```
///
/// It checks what no single structure can: that part indexes follow one
/// another, that every file is a part of the same packet, that sequence
/// numbers run from 0 without a gap across files, that records ascend in
/// logical order without overlap, that records fill each file exactly up to
/// its trailer, and that the last trailer's totals and content digest match
/// what was read. Errors name the offset in the current file; the caller
/// knows which file that is.
#[derive(Debug)]
pub struct PacketReader<'k> {
    key: Option<&'k Key>,
    codec: Codec,
    started: Option<Started>,
    files_begun: usize,
    next_part: u32,
    next_seq: u64,
    next_offset: u64,
    data_blocks: u64,
    zero_blocks: u64,
    file: Option<ReadFile>,
    pending: Option<RecordHeader>,
    last: Option<(Trailer, u64)>,
}

impl<'k> PacketReader<'k> {
    /// A reader for a packet signed with `key`, or unsigned when `None`.
    pub fn new(key: Option<&'k Key>) -> Self {
        PacketReader {
            key,
            codec: Codec::default(),
            started: None,
            files_begun: 0,
            next_part: 0,
            next_seq: 0,
            next_offset: 0,
            data_blocks: 0,
            zero_blocks: 0,
            file: None,
            pending: None,
            last: None,
        }
    }

    /// The first file's header, once a file was begun.
    pub fn first_header(&self) -> Option<&FileHeader> {
        self.started.as_ref().map(|s| &s.first)
    }

    /// Starts the next file, given its decoded header and trailer and its
    /// length in bytes.
    pub fn begin_file(
        &mut self,
        header: FileHeader,
        trailer: Trailer,
        file_len: u64,
    ) -> Result<(), Error> {
        if self.file.is_some() || self.pending.is_some() {
            return Err(Error::Misuse {
                api: "PacketReader::begin_file",
                problem: "the previous file is not ended",
            });
        }
        let file = self.files_begun;
        self.files_begun += 1;
        if let Some((t, _)) = &self.last {
            return Err(Error::Part(PartProblem::BeyondLast {
                file,
                part: header.part_index,
                files: t.last.map_or(0, |s| s.files),
            }));
        }
        if header.part_index != self.next_part {
            return Err(Error::Part(PartProblem::OutOfOrder {
                file,
                expected: self.next_part,
                found: header.part_index,
            }));
        }
        if let Some(s) = &self.started {
            match first_difference(&s.first, &header) {
                None => {}
                Some((field, offset)) if field == "packet id" => {
                    return Err(Error::Part(PartProblem::Foreign {
                        file,
                        field,
                        offset,
                    }))
                }
                Some((field, offset)) => {
                    return Err(Error::Part(PartProblem::Inconsistent {
                        file,
                        field,
                        offset,
                    }))
                }
            }
        }
        if header.signed != self.key.is_some() {
            return Err(Error::Misuse {
                api: "PacketReader::begin_file",
                problem: "the header was decoded with another key than the reader's",
            });
        }
        let min_len = (header.len + TRAILER_LEN) as u64;
        if file_len < min_len {
            return Err(Error::Truncated {
                what: "packet file",
                offset: 0,
                needed: min_len,
                available: file_len,
            });
        }
        let trailer_at = file_len - TRAILER_LEN as u64;
        if trailer.first_seq != self.next_seq {
            return Err(Error::Part(PartProblem::SequenceGap {
                file,
                previous: file.checked_sub(1),
                offset: trailer_at + TRL_FIRST_SEQ_OFF as u64,
                expected: self.next_seq,
                found: trailer.first_seq,
            }));
        }
        if self.started.is_none() {
            self.next_offset = header.meta.range.start;
            self.started = Some(Started {
                digest: ContentDigest::new(&header.meta),
                first: header.clone(),
            });
        }
        self.next_part = self.next_part.saturating_add(1);
        self.file = Some(ReadFile {
            pos: header.len as u64,
            // Checked against overflow when the trailer was decoded.
            end_seq: trailer.first_seq.saturating_add(trailer.record_count),
            header,
            trailer,
            trailer_at,
        });
        Ok(())
    }

    /// File offset of the next record header of the current file, or `None`
    /// when its records are done (call [`end_file`](Self::end_file)).
    pub fn next_record_at(&self) -> Option<u64> {
        match &self.file {
            Some(f) if self.pending.is_none() && f.pos < f.trailer_at => Some(f.pos),
            _ => None,
        }
    }

    /// Decodes the record header at [`next_record_at`](Self::next_record_at)
    /// (`bytes` starts there and holds at least [`RECORD_HEADER_LEN`]
    /// bytes) and checks its place in the packet.
    pub fn record_header(&mut self, bytes: &[u8]) -> Result<RecordHeader, Error> {
        let (Some(f), None) = (&self.file, &self.pending) else {
            return Err(Error::Misuse {
                api: "PacketReader::record_header",
                problem: "no file is begun, or the previous record's payload is pending",
            });
        };
        let bytes = bytes.get(..RECORD_HEADER_LEN).unwrap_or(bytes);
        let record = decode_record_header(bytes, f.pos, &f.header)?;
        if record.seq != self.next_seq {
            return Err(Error::Sequence {
                offset: f.pos,
                expected: self.next_seq,
                found: record.seq,
            });
        }
        if record.seq >= f.end_seq {
            return Err(Error::field(
                "sequence number",
                f.pos + REC_SEQ_OFF as u64,
                format!(
                    "record {} lies beyond the {} records the trailer counts",
                    record.seq, f.trailer.record_count
                ),
            ));
        }
        if record.offset < self.next_offset {
            return Err(Error::field(
                "logical offset",
                f.pos + REC_OFFSET_OFF as u64,
                format!(
                    "{} is below the end {} of the previous record; records ascend without overlap",
                    record.offset, self.next_offset
                ),
            ));
        }
        let payload_end = record.payload_offset() + record.payload_len() as u64;
        if payload_end > f.trailer_at {
            return Err(Error::Truncated {
                what: "record payload",
                offset: record.payload_offset(),
                needed: record.payload_len() as u64,
                available: f.trailer_at.saturating_sub(record.payload_offset()),
            });
        }
        self.pending = Some(record.clone());
        Ok(record)
    }

    /// Verifies the pending record with its `payload` and decompresses a
    /// data record into `out` (at least [`MAX_RECORD_DATA`] bytes is always
    /// enough).
    pub fn record_payload(&mut self, payload: &[u8], out: &mut [u8]) -> Result<RecordBody, Error> {
        self.open_pending(payload, out, true).map(|(body, _)| body)
    }

    /// [`record_payload`](Self::record_payload) without copying a payload
    /// stored as is: its data is `payload` itself. Returns the body and
    /// whether its data was written to `out` (a compressed payload).
    pub fn record_payload_in_place(
        &mut self,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(RecordBody, bool), Error> {
        self.open_pending(payload, out, false)
    }

    fn open_pending(
        &mut self,
        payload: &[u8],
        out: &mut [u8],
        copy_stored: bool,
    ) -> Result<(RecordBody, bool), Error> {
        let (Some(f), Some(record)) = (&mut self.file, self.pending.take()) else {
            return Err(Error::Misuse {
                api: "PacketReader::record_payload",
                problem: "no record header is pending",
            });
        };
        let stored = matches!(
            record.kind,
            RecordKind::Data {
                compression: Compression::None,
                ..
            }
        );
        let into_out = copy_stored || !stored;
        let (body, hash) = open_record_with(
            &mut self.codec,
            &f.header,
            &record,
            payload,
            self.key,
            into_out.then_some(&mut *out),
        )?;
        let digest = &mut self
            .started
            .as_mut()
            .ok_or(Error::Misuse {
                api: "PacketReader::record_payload",
                problem: "no file is begun",
            })?
            .digest;
        let mut decoded = false;
        match body {
            RecordBody::Data { len, .. } => {
                // A payload stored as is is the data: its hash is the one
                // the tag was checked with.
                let hash = match hash {
                    Some(h) if stored => h,
                    _ if into_out => data_hash(out.get(..len).unwrap_or_default()),
                    _ => data_hash(payload),
                };
                decoded = into_out;
                digest.add(REC_KIND_DATA, record.offset, record.blocks, Some(&hash));
                self.data_blocks += u64::from(record.blocks);
            }
            RecordBody::Zero { .. } => {
                digest.add(REC_KIND_ZERO, record.offset, record.blocks, None);
                self.zero_blocks += u64::from(record.blocks);
            }
        }
        f.pos += record.encoded_len();
        self.next_seq += 1;
        self.next_offset = record.offset + record.logical_len(f.header.meta.block_size);
        Ok((body, decoded))
    }

    /// Ends the current file once [`next_record_at`](Self::next_record_at)
    /// says its records are done.
    pub fn end_file(&mut self) -> Result<(), Error> {
        if self.pending.is_some() || self.next_record_at().is_some() {
            return Err(Error::Misuse {
                api: "PacketReader::end_file",
                problem: "records of the file are still unread",
            });
        }
        let Some(f) = self.file.take() else {
            return Err(Error::Misuse {
                api: "PacketReader::end_file",
                problem: "no file is begun",
            });
        };
        if self.next_seq != f.end_seq {
            return Err(Error::field(
                "record count",
                f.trailer_at + TRL_RECORD_COUNT_OFF as u64,
                format!(
                    "the trailer counts {} records, the file holds {}",
                    f.trailer.record_count,
                    self.next_seq - f.trailer.first_seq
                ),
            ));
        }
        if f.trailer.last.is_some() {
            self.last = Some((f.trailer, f.trailer_at));
        }
        Ok(())
    }

    /// Ends the packet: the last file must have been read, and its totals
    /// and content digest must match the records read.
    pub fn finish(self) -> Result<PacketSummary, Error> {
        if self.file.is_some() {
            return Err(Error::Misuse {
                api: "PacketReader::finish",
                problem: "a file is not ended",
            });
        }
        let (Some((trailer, at)), Some(started)) = (self.last, self.started) else {
            return Err(Error::Part(PartProblem::NoLast {
                highest: self.next_part.checked_sub(1),
            }));
        };
        let computed = PacketSummary {
            files: self.next_part,
            records: self.next_seq,
            data_blocks: self.data_blocks,
            zero_blocks: self.zero_blocks,
            content_digest: started.digest.finish(),
        };
        let Some(stored) = trailer.last else {
            return Err(Error::Part(PartProblem::NoLast {
                highest: self.next_part.checked_sub(1),
            }));
        };
        let mismatch = |field: &'static str, off: usize, stored: String, read: String| {
            Err(Error::field(
                field,
                at + off as u64,
                format!("the last trailer says {stored}, the records read give {read}"),
            ))
        };
        if stored.data_blocks != computed.data_blocks {
            return mismatch(
                "data block total",
                TRL_DATA_BLOCKS_OFF,
                stored.data_blocks.to_string(),
                computed.data_blocks.to_string(),
            );
        }
        if stored.zero_blocks != computed.zero_blocks {
            return mismatch(
                "zero block total",
                TRL_ZERO_BLOCKS_OFF,
                stored.zero_blocks.to_string(),
                computed.zero_blocks.to_string(),
            );
        }
        if stored.content_digest != computed.content_digest {
            return mismatch(
                "content digest",
                TRL_DIGEST_OFF,
                "another digest".into(),
                "this one".into(),
            );
        }
        // Files and records were checked when the last trailer was decoded
        // (files = its part index + 1, records = its end sequence).
        Ok(computed)
    }
}

/// Verifies a whole logical packet held in memory, one slice per physical
/// file in any order, and hands every record to `on_record` (with the
/// record's uncompressed bytes, empty for a zero run) in logical order.
///
/// This is the engine's reading procedure in one function, for tests,
/// fuzzing and small packets; on error it returns the index of the file at
/// fault (the last file for errors about the packet as a whole).
pub fn verify_slices(
    files: &[&[u8]],
    key: Option<&Key>,
    mut on_record: impl FnMut(&RecordBody, &[u8]),
) -> Result<PacketSummary, (usize, Error)> {
    let mut decoded = Vec::with_capacity(files.len());
    for (i, bytes) in files.iter().enumerate() {
        let fail = |e| (i, e);
        let prefix = bytes.get(..FILE_HEADER_FIXED_LEN).unwrap_or(bytes);
        file_header_len(prefix).map_err(fail)?;
        let header = decode_file_header(bytes, key).map_err(fail)?;
        let len = bytes.len() as u64;
        let trailer_at = len.saturating_sub(TRAILER_LEN as u64);
        if len < (header.len + TRAILER_LEN) as u64 {
            return Err((
                i,
                Error::Truncated {
                    what: "packet file",
                    offset: 0,
                    needed: (header.len + TRAILER_LEN) as u64,
                    available: len,
                },
            ));
        }
        let trailer_bytes = bytes.get(trailer_at as usize..).unwrap_or_default();
        let trailer = decode_trailer(trailer_bytes, trailer_at, &header, key).map_err(fail)?;
        decoded.push((header, trailer));
    }
    let parts: Vec<Part<'_>> = decoded
        .iter()
        .zip(files)
        .map(|((header, trailer), bytes)| Part {
            header,
            trailer,
            file_len: bytes.len() as u64,
        })
        .collect();
    let report = check_parts(&parts);
    let fault_file = report
        .problems
        .first()
        .and_then(PartProblem::file)
        .unwrap_or(files.len().saturating_sub(1));
    let order = report.into_result().map_err(|e| (fault_file, e))?;

    let mut reader = PacketReader::new(key);
    let mut out = vec![0u8; MAX_RECORD_DATA];
    let mut current = 0;
    for &i in &order {
        current = i;
        let fail = |e| (i, e);
        let bytes = files.get(i).copied().unwrap_or_default();
        let (header, trailer) = decoded.get(i).cloned().ok_or((
            i,
            Error::Misuse {
                api: "verify_slices",
                problem: "file index out of range",
            },
        ))?;
        reader
            .begin_file(header, trailer, bytes.len() as u64)
            .map_err(fail)?;
        while let Some(at) = reader.next_record_at() {
            let rest = bytes.get(at as usize..).unwrap_or_default();
            let record = reader.record_header(rest).map_err(fail)?;
            let start = record.payload_offset() as usize;
            let payload = bytes
                .get(start..start + record.payload_len())
                .unwrap_or_default();
            let body = reader.record_payload(payload, &mut out).map_err(fail)?;
            let data = match body {
                RecordBody::Data { len, .. } => out.get(..len).unwrap_or_default(),
                RecordBody::Zero { .. } => &[],
            };
            on_record(&body, data);
        }
        reader.end_file().map_err(fail)?;
    }
    reader.finish().map_err(|e| (current, e))
}
