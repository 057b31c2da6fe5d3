//! The data behind `pmempool info [-p N] [-f obj]` (docs/format.md §22): the
//! pool set structure, the pool header of part 0 of the chosen replica and the
//! obj descriptor.
//!
//! As pmempool does, a pool set must open with libpmemobj's header and link
//! validation ([`validate_open`], docs/format.md §16.2; the shutdown state is
//! ignored, as `pmempool info` ignores it); a single-file pool only needs a
//! known signature and a valid header checksum. With `force` (`-f obj`) neither
//! is required, though every part must still exist with its configured size.

use std::path::{Path, PathBuf};

use poolsync_header::{
    ArchFlags, Features, ObjDescriptor, PoolHdr, PoolType, RawUuid, FEAT_SINGLEHDR, OBJ_DESC_LEN,
    OBJ_DESC_OFF,
};
use poolsync_pmem::{Access, PartFile, Storage};
use serde::Serialize;

use crate::inspect::{ser_hex, signature_text};
use crate::open::{open, OpenPart, OpenSet, PartStatus};
use crate::Error;

/// Options of `pmempool info` that change what is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InfoOptions {
    /// `-p N`: show the headers of replica N (0 = master).
    pub replica: usize,
    /// `-f obj`: parse the pool as obj without validating its headers.
    pub force: bool,
}

/// One part file as `info` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartInfo {
    /// The path as written in the pool set (or given).
    pub path: PathBuf,
    /// `regular file` or `device dax`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The file's actual size in bytes (a Device DAX's, as sysfs reports it).
    pub size: u64,
    /// A Device DAX's mapping alignment in bytes (`pmempool info` prints
    /// it); `None` for a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alignment: Option<u64>,
}

/// One replica as `info` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaInfo {
    /// Replica index (0 = master).
    pub replica: usize,
    /// The parts.
    pub parts: Vec<PartInfo>,
}

/// The structure of a pool set file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolsetInfo {
    /// The replicas.
    pub replicas: Vec<ReplicaInfo>,
    /// Pool set options, as written (`SINGLEHDR`).
    pub options: Vec<&'static str>,
}

/// Every field of a pool header, as `info` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderInfo {
    /// The signature up to its first NUL (`PMEMOBJ`).
    pub signature: String,
    /// Format major version.
    pub major: u32,
    /// The three feature masks.
    pub features: Features,
    /// Names of the known incompat bits (pmempool's "Mandatory features").
    pub incompat_names: Vec<&'static str>,
    /// Pool set UUID.
    pub poolset_uuid: RawUuid,
    /// This part's UUID.
    pub uuid: RawUuid,
    /// Previous part's UUID.
    pub prev_part_uuid: RawUuid,
    /// Next part's UUID.
    pub next_part_uuid: RawUuid,
    /// Previous replica's part-0 UUID.
    pub prev_repl_uuid: RawUuid,
    /// Next replica's part-0 UUID.
    pub next_repl_uuid: RawUuid,
    /// Creation time, seconds since the epoch.
    pub crtime: u64,
    /// The architecture flags stored.
    #[serde(skip)]
    pub arch_flags: ArchFlags,
    /// The stored alignment descriptor.
    #[serde(serialize_with = "ser_hex")]
    pub alignment_desc: u64,
    /// The alignment descriptor of the running machine.
    #[serde(serialize_with = "ser_hex")]
    pub expected_alignment_desc: u64,
    /// Machine class (2 = 64-bit).
    pub machine_class: u8,
    /// Byte order (1 = little endian, 2 = big endian).
    pub data: u8,
    /// ELF machine id (62 = x86-64).
    pub machine: u16,
    /// `true` when the shutdown state's dirty flag is set.
    pub dirty: bool,
    /// The stored checksum.
    #[serde(serialize_with = "ser_hex")]
    pub checksum: u64,
    /// The checksum the header should carry.
    #[serde(serialize_with = "ser_hex")]
    pub expected_checksum: u64,
    /// The raw 4096 bytes (for `-x`).
    #[serde(skip)]
    pub raw: Vec<u8>,
}

/// The obj pool descriptor, as `info` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjInfo {
    /// The layout name; `None` when the layout field is all zero (pmempool
    /// prints `(null)`).
    pub layout: Option<String>,
    /// `lanes_offset`.
    pub lanes_offset: u64,
    /// `nlanes`.
    pub nlanes: u64,
    /// `heap_offset`.
    pub heap_offset: u64,
    /// `heap_size`.
    pub heap_size: u64,
    /// The stored descriptor checksum.
    #[serde(serialize_with = "ser_hex")]
    pub checksum: u64,
    /// The checksum the descriptor should carry.
    #[serde(serialize_with = "ser_hex")]
    pub expected_checksum: u64,
    /// `root_offset`.
    pub root_offset: u64,
    /// `run_id` (pmempool shows it with `-v`).
    pub run_id: u64,
    /// The raw 4096 bytes at logical 0x1000 (for `-x`).
    #[serde(skip)]
    pub raw: Vec<u8>,
}

/// What `info` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Info {
    /// The path given.
    pub path: PathBuf,
    /// `true` for a pool set file.
    pub is_poolset: bool,
    /// `true` for a single file whose header links name other files: one
    /// part of a pool set, given on its own (pmempool's `[part file]`).
    pub is_part: bool,
    /// The pool set structure (pool set files only).
    pub poolset: Option<PoolsetInfo>,
    /// The file (single-file pools only; pmempool's "Part file").
    pub part_file: Option<PartInfo>,
    /// The replica whose headers are shown.
    pub replica: usize,
    /// Part 0's pool header of that replica.
    pub pool_header: HeaderInfo,
    /// The obj descriptor of that replica (not shown for a part file).
    pub obj_header: Option<ObjInfo>,
}

/// `pmempool info <path>`: opens read-only, validates, and collects what
/// `info` prints.
pub fn info<S: Storage>(storage: &S, path: &Path, opts: &InfoOptions) -> Result<Info, Error> {
    let set = open(storage, path, Access::ReadOnly)?;
    info_open(&set, opts)
}

/// [`info`] on a set opened already.
pub fn info_open<F: PartFile>(set: &OpenSet<F>, opts: &InfoOptions) -> Result<Info, Error> {
    let path = set.path.clone();
    let open_failed = |reason: String| Error::OpenValidation {
        path: path.clone(),
        reason,
    };
    for part in set.parts() {
        if part.status != PartStatus::Ok {
            return Err(open_failed(format!("{}: {}", part.name(), part.status)));
        }
    }
    let part0 = set
        .part(0, 0)
        .ok_or_else(|| open_failed("the pool set has no part".to_string()))?;
    let hdr0 = part0
        .header()
        .ok_or_else(|| open_failed(format!("{}: cannot read pool header", part0.name())))?;
    let mut is_part = false;
    if !opts.force {
        match hdr0.pool_type() {
            Some(PoolType::Obj) => {}
            Some(ty) => {
                return Err(Error::UnsupportedPoolType {
                    path,
                    kind: ty.name(),
                })
            }
            None if set.is_poolset => {
                return Err(open_failed(format!(
                    "cannot determine pool type from poolset (replica 0 part 0 signature \"{}\")",
                    signature_text(&hdr0.signature)
                )))
            }
            None => {
                return Err(Error::UnknownPoolType {
                    path,
                    signature: signature_text(&hdr0.signature),
                })
            }
        }
        if set.is_poolset {
            validate_open(set).map_err(open_failed)?;
        } else {
            if !hdr0.checksum_ok() {
                return Err(Error::InvalidChecksum { path });
            }
            is_part = [
                hdr0.prev_part_uuid,
                hdr0.next_part_uuid,
                hdr0.prev_repl_uuid,
                hdr0.next_repl_uuid,
            ]
            .iter()
            .any(|u| *u != hdr0.uuid);
        }
    }
    let nrep = set.replicas.len();
    if opts.replica != 0 {
        if nrep == 1 {
            return Err(Error::InvalidRequest {
                path,
                reason: "only master replica available".to_string(),
            });
        }
        if opts.replica >= nrep {
            return Err(Error::InvalidRequest {
                path,
                reason: format!(
                    "replica number out of range (valid range is: 0-{})",
                    nrep - 1
                ),
            });
        }
    }
    let shown = set
        .part(opts.replica, 0)
        .ok_or_else(|| open_failed(format!("replica {} has no part", opts.replica)))?;
    let (hdr, raw) = match (shown.header(), shown.header_bytes()) {
        (Some(h), Some(raw)) => (h, raw),
        _ => {
            return Err(open_failed(format!(
                "{}: cannot read pool header",
                shown.name()
            )))
        }
    };
    let pool_header = header_info(hdr, raw);
    let obj_header = if is_part {
        None
    } else {
        Some(obj_info(set, opts.replica)?)
    };
    let (poolset, part_file) = if set.is_poolset {
        let replicas = set
            .replicas
            .iter()
            .map(|r| ReplicaInfo {
                replica: r.index,
                parts: r.parts.iter().map(part_info).collect(),
            })
            .collect();
        let mut options = Vec::new();
        if set.set.options.single_hdr {
            options.push("SINGLEHDR");
        }
        (Some(PoolsetInfo { replicas, options }), None)
    } else {
        (None, Some(part_info(part0)))
    };
    Ok(Info {
        path: set.path.clone(),
        is_poolset: set.is_poolset,
        is_part,
        poolset,
        part_file,
        replica: opts.replica,
        pool_header,
        obj_header,
    })
}

fn part_info<F>(part: &OpenPart<F>) -> PartInfo {
    let kind = match part.device {
        Some(_) => "device dax",
        None => "regular file",
    };
    PartInfo {
        path: part.path.clone(),
        kind,
        size: part.actual_size().unwrap_or(0),
        alignment: part.device.map(|d| d.align),
    }
}

fn header_info(hdr: &PoolHdr, raw: &[u8]) -> HeaderInfo {
    let sig_end = hdr
        .signature
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(hdr.signature.len());
    HeaderInfo {
        signature: String::from_utf8_lossy(hdr.signature.get(..sig_end).unwrap_or_default())
            .into_owned(),
        major: hdr.major,
        features: hdr.features,
        incompat_names: poolsync_header::incompat_names(hdr.features.incompat),
        poolset_uuid: hdr.poolset_uuid,
        uuid: hdr.uuid,
        prev_part_uuid: hdr.prev_part_uuid,
        next_part_uuid: hdr.next_part_uuid,
        prev_repl_uuid: hdr.prev_repl_uuid,
        next_repl_uuid: hdr.next_repl_uuid,
        crtime: hdr.crtime,
        arch_flags: hdr.arch_flags,
        alignment_desc: hdr.arch_flags.alignment_desc,
        machine_class: hdr.arch_flags.machine_class,
        data: hdr.arch_flags.data,
        machine: hdr.arch_flags.machine,
        expected_alignment_desc: ArchFlags::current().alignment_desc,
        dirty: hdr.sds.is_dirty(),
        checksum: hdr.checksum,
        expected_checksum: hdr.compute_checksum(),
        raw: raw.to_vec(),
    }
}

fn obj_info<F: PartFile>(set: &OpenSet<F>, replica: usize) -> Result<ObjInfo, Error> {
    let mut raw = vec![0u8; OBJ_DESC_LEN];
    set.read_logical(replica, OBJ_DESC_OFF, &mut raw)?;
    let d = ObjDescriptor::decode(&raw).map_err(|e| Error::OpenValidation {
        path: set.path.clone(),
        reason: e.to_string(),
    })?;
    let layout = if d.layout.iter().all(|&b| b == 0) {
        None
    } else {
        Some(d.layout_name())
    };
    Ok(ObjInfo {
        layout,
        lanes_offset: d.lanes_offset,
        nlanes: d.nlanes,
        heap_offset: d.heap_offset,
        heap_size: d.heap_size,
        checksum: d.checksum,
        expected_checksum: d.compute_checksum(),
        root_offset: d.root_offset,
        run_id: d.run_id,
        raw,
    })
}

/// The header and link checks libpmemobj makes when it opens a pool set
/// (`util_replica_check` and `util_header_check`, docs/format.md §16.2),
/// against the attributes of replica 0 part 0's header and the running machine.
/// The shutdown state is not judged (`pmempool info` ignores it).
///
/// libpmemobj checks header by header, each against itself and its
/// neighbours, so a garbled header often shows first as a wrong link in the
/// header before it. The checks here are the same, but every header is
/// judged on its own first (major, signature, features, checksum, arch
/// flags), and the links between headers only then: the error names the
/// damaged part.
pub fn validate_open<F: PartFile>(set: &OpenSet<F>) -> Result<(), String> {
    let hdr = |r: usize, p: usize| -> Result<&PoolHdr, String> {
        let part = set
            .part(r, p)
            .ok_or_else(|| format!("replica {r} part {p} does not exist"))?;
        part.header()
            .ok_or_else(|| format!("{}: cannot read pool header", part.name()))
    };
    let name = |r: usize, p: usize| set.part(r, p).map(OpenPart::name).unwrap_or_default();
    let attr = hdr(0, 0)?;
    // What libpmemobj expects of every header: obj's signature and major
    // version, not whatever the master happens to hold, so that a damaged
    // master is the part named.
    let (signature, major) = (PoolType::Obj.signature(), PoolType::Obj.major());
    let arch = ArchFlags::current();
    let nrep = set.replicas.len();
    // Each header on its own.
    for rep in &set.replicas {
        for p in 0..rep.nhdrs {
            let h = hdr(rep.index, p)?;
            let fail = |what: String| Err(format!("{}: {what}", name(rep.index, p)));
            if h.major == 0 {
                return fail("invalid major version (0) (offset 8)".to_string());
            }
            if h.signature != signature {
                return fail(format!(
                    "wrong pool type: \"{}\" (offset 0)",
                    signature_text(&h.signature)
                ));
            }
            if h.major != major {
                return fail(format!(
                    "pool version {} (library expects {major}) (offset 8)",
                    h.major
                ));
            }
            let unknown = h.features.unknown().incompat;
            if unknown != 0 {
                return fail(format!(
                    "unsafe to continue due to unknown incompat features: {unknown:#x} (offset 16)"
                ));
            }
            let read_only = h.features.unknown().ro_compat;
            if read_only != 0 {
                return fail(format!(
                    "read-only mode is not supported: unknown ro_compat features {read_only:#x} (offset 20)"
                ));
            }
            if !h.checksum_ok() {
                return fail(format!(
                    "invalid checksum of pool header (offset 4088: stored {:#x}, should be {:#x})",
                    h.checksum,
                    h.compute_checksum()
                ));
            }
            if h.arch_flags != arch {
                return fail("wrong architecture flags (offset 128)".to_string());
            }
        }
    }
    // Every header belongs to this pool set.
    for rep in &set.replicas {
        for p in 0..rep.nhdrs {
            let h = hdr(rep.index, p)?;
            if h.poolset_uuid != attr.poolset_uuid {
                return Err(format!(
                    "{}: wrong pool set UUID (pool_hdr.poolset_uuid {} at offset 24, replica 0 part 0 has {})",
                    name(rep.index, p),
                    h.poolset_uuid.to_canonical(),
                    attr.poolset_uuid.to_canonical()
                ));
            }
        }
    }
    // The links between headers, and agreement with part 0 of the replica.
    let link =
        |r: usize, p: usize, field: &str, off: usize, (tr, tp): (usize, usize), what: &str| {
            format!(
                "{}: {what} (pool_hdr.{field} at offset {off} is not the uuid of {})",
                name(r, p),
                name(tr, tp)
            )
        };
    for rep in &set.replicas {
        let r = rep.index;
        let nhdrs = rep.nhdrs;
        for p in 0..nhdrs {
            let h = hdr(r, p)?;
            let prev = (r, (p + nhdrs - 1) % nhdrs);
            let next = (r, (p + 1) % nhdrs);
            if hdr(prev.0, prev.1)?.uuid != h.prev_part_uuid {
                return Err(link(r, p, "prev_part_uuid", 56, prev, "wrong part UUID"));
            }
            if hdr(next.0, next.1)?.uuid != h.next_part_uuid {
                return Err(link(r, p, "next_part_uuid", 72, next, "wrong part UUID"));
            }
            let first = hdr(r, 0)?;
            let fail = |what: &str| Err(format!("{}: {what}", name(r, p)));
            if first.major != h.major {
                return fail("incompatible pool format (major differs from part 0)");
            }
            if first.features != h.features {
                return fail("incompatible feature flags (features differ from part 0)");
            }
            let opt = set.set.options.single_hdr;
            if opt != (first.features.incompat & FEAT_SINGLEHDR != 0) {
                return Err(format!(
                    "{}: poolset file options ({}) do not match incompat feature flags ({:#x})",
                    name(r, p),
                    u32::from(opt),
                    first.features.incompat
                ));
            }
        }
        if nhdrs == 0 {
            continue;
        }
        let h0 = hdr(r, 0)?;
        let prev = ((r + nrep - 1) % nrep, 0);
        let next = ((r + 1) % nrep, 0);
        if hdr(prev.0, prev.1)?.uuid != h0.prev_repl_uuid {
            return Err(link(r, 0, "prev_repl_uuid", 88, prev, "wrong replica UUID"));
        }
        if hdr(next.0, next.1)?.uuid != h0.next_repl_uuid {
            return Err(link(
                r,
                0,
                "next_repl_uuid",
                104,
                next,
                "wrong replica UUID",
            ));
        }
    }
    Ok(())
}
