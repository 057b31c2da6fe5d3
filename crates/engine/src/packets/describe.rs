//! `poolsync packet`: describe packets (MultiSite's `lspacket`) and
//! verify every checksum of them.
//!
//! The files given are grouped into logical packets. Each packet is
//! described from its headers and trailers (pool set UUID, lineage,
//! timeline and history, base and new epoch, its files, sizes,
//! compression, comment, creation time, destinations) and then read
//! whole, every record verified. A file that cannot be read, a packet
//! with a part missing and a record that fails are refusals naming the
//! file and the offset.

use std::path::{Path, PathBuf};

use poolsync_packet::{Key, PacketMeta};
use poolsync_pmem::Storage;
use serde::Serialize;

use super::epoch::ForkRow;
use super::files::{group, open_packet_file, read_records, LogicalPacket};
use super::{lineage_text, uuid_text};
use crate::Error;

/// One physical file.
#[derive(Debug, Clone, Serialize)]
pub struct FileRow {
    /// The file.
    pub path: PathBuf,
    /// Its part index, from 0.
    pub part: u32,
    /// Its size.
    pub bytes: u64,
    /// Records in it.
    pub records: u64,
}

/// One logical packet.
#[derive(Debug, Clone, Serialize)]
pub struct PacketRow {
    /// Its id, hex.
    pub packet_id: String,
    /// The pool set UUID.
    pub poolset_uuid: String,
    /// The lineage, hex.
    pub lineage: String,
    /// The exporter's timeline.
    pub timeline: u32,
    /// Its history.
    pub history: Vec<ForkRow>,
    /// The base epoch.
    pub base_epoch: u32,
    /// The new epoch.
    pub new_epoch: u32,
    /// Bytes per block.
    pub block_size: u32,
    /// The shipped logical range.
    pub range: (u64, u64),
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// The comment.
    pub comment: String,
    /// The destinations it was made for.
    pub destinations: Vec<String>,
    /// The exporter's pool set file.
    pub source: String,
    /// For a packet that honours a rewind request: the destination's
    /// timeline and epoch.
    pub rewind: Option<(u32, u32)>,
    /// `none`, `zstd` or `lz4`.
    pub compression: &'static str,
    /// Its files are keyed MACs.
    pub signed: bool,
    /// The packet format version its files are written in
    /// (`docs/packet.md` section 9).
    pub format_version: u16,
    /// Physical files, in part order.
    pub files: Vec<FileRow>,
    /// Blocks carried with bytes.
    pub data_blocks: u64,
    /// Blocks carried as zero runs.
    pub zero_blocks: u64,
    /// Records.
    pub records: u64,
    /// Bytes of all files.
    pub bytes: u64,
    /// The content digest, hex.
    pub content_digest: String,
    /// Every checksum (or MAC) verified.
    pub verified: bool,
}

/// A file or packet that did not verify.
#[derive(Debug, Clone, Serialize)]
pub struct Bad {
    /// The file at fault.
    pub path: PathBuf,
    /// The offset at fault, when known.
    pub offset: Option<u64>,
    /// What is wrong.
    pub message: String,
}

/// What `poolsync packet` found.
#[derive(Debug, Clone, Serialize)]
pub struct DescribeReport {
    /// The packets that could be read (verified or not).
    pub packets: Vec<PacketRow>,
    /// Everything that failed.
    pub bad: Vec<Bad>,
}

fn bad(e: Error, fallback: &Path) -> Bad {
    match e {
        Error::PacketFile {
            path,
            offset,
            reason,
        } => Bad {
            message: format!("{}: {reason}", path.display()),
            path,
            offset,
        },
        other => Bad {
            path: fallback.to_path_buf(),
            offset: None,
            message: other.to_string(),
        },
    }
}

/// Describes and verifies the packet files `paths`.
pub fn describe<S: Storage>(
    storage: &S,
    paths: &[PathBuf],
    key: Option<&Key>,
) -> Result<DescribeReport, Error> {
    let mut out = DescribeReport {
        packets: Vec::new(),
        bad: Vec::new(),
    };
    let mut files = Vec::new();
    for p in paths {
        match open_packet_file(storage, p, key) {
            Ok(f) => files.push(f),
            Err(e @ Error::PacketFile { .. }) => out.bad.push(bad(e, p)),
            Err(e) => return Err(e),
        }
    }
    let (packets, refusals) = group(files);
    for r in refusals {
        out.bad.push(bad(r.error, &r.path));
    }
    for packet in &packets {
        let mut row = row(packet);
        let mut per_file = vec![0u64; packet.files.len()];
        match read_records(storage, packet, key, |_, _| Ok(())) {
            Ok(summary) => {
                row.verified = true;
                row.records = summary.records;
                for (n, f) in per_file.iter_mut().zip(&packet.files) {
                    *n = f.trailer.record_count;
                }
            }
            Err(e) => out.bad.push(bad(e, packet.path())),
        }
        for (r, n) in row.files.iter_mut().zip(per_file) {
            r.records = n;
        }
        out.packets.push(row);
    }
    Ok(out)
}

fn row(packet: &LogicalPacket) -> PacketRow {
    let m: &PacketMeta = packet.meta();
    let s = packet.summary();
    PacketRow {
        packet_id: lineage_text(&m.packet_id),
        poolset_uuid: uuid_text(&m.poolset_uuid),
        lineage: lineage_text(&m.lineage),
        timeline: m.timeline,
        history: m
            .history
            .iter()
            .map(|f| ForkRow {
                timeline: f.timeline,
                parent: f.parent,
                epoch: f.epoch,
            })
            .collect(),
        base_epoch: m.base_epoch,
        new_epoch: m.new_epoch,
        block_size: m.block_size,
        range: (m.range.start, m.range.end),
        created: m.created,
        comment: m.comment.clone(),
        destinations: m.destinations.clone(),
        source: m.source.clone(),
        rewind: m.rewind.map(|p| (p.timeline, p.epoch)),
        compression: m.compression.name(),
        signed: packet.files.first().is_some_and(|f| f.header.signed),
        format_version: packet.files.first().map_or(0, |f| f.header.version),
        files: packet
            .files
            .iter()
            .map(|f| FileRow {
                path: f.path.clone(),
                part: f.header.part_index,
                bytes: f.len,
                records: 0,
            })
            .collect(),
        data_blocks: s.map_or(0, |s| s.data_blocks),
        zero_blocks: s.map_or(0, |s| s.zero_blocks),
        records: s.map_or(0, |s| s.records),
        bytes: packet.bytes(),
        content_digest: s.map_or_else(String::new, |s| {
            s.content_digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        }),
        verified: false,
    }
}
