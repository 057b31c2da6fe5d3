//! `poolsync export`: one logical packet of a pool's changes for the named
//! destinations.
//!
//! [`export`] opens the source set (healthy and not in use, as for
//! `sync`), reads its state, and decides everything before the scan: the
//! base epoch (the oldest epoch its destination table records for the
//! named destinations, 0 for one never exported to, or `--since`), the
//! new epoch (the writer's epoch plus one; a follower forwards its own
//! epoch and makes none), the packet's header, and the new state's head
//! (the destinations assumed to hold the new epoch). Then one scan of the
//! source writes the new state and the packet side by side
//! ([`super::scan`], [`super::stream`]): the state on the scan's thread,
//! the packet on a thread of its own, which reads the shipped blocks
//! again and checks them against the digests they were judged by.
//!
//! Files appear in this order, so that a crash never leaves a packet
//! whose epoch the state does not know (a packet of epoch E+1 next to a
//! state still at E could later be answered by a second, different epoch
//! E+1): the packet's files under temporary names, fenced; the new state,
//! renamed over the old one (the commit); the packet's files renamed to
//! their names. A re-run after a crash before the commit removes the
//! temporary files and exports again; after the commit it finishes the
//! renames ([`ExportOutcome::Completed`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use poolsync_packet::{
    fork_point, normalize_ranges, BlockRange, Compression, Destination as TableEntry, ForkPoint,
    Key, PacketMeta, Position, RewindRequest, State, MAX_DESTINATIONS, MAX_NAME,
};
use poolsync_pmem::{Access, PartFile, Storage};
use serde::Serialize;

use super::destination::open_waiting;
use super::scan::{scan, Block, ScanPlan, ScanVisitor};
use super::state::{self, EntryCursor, Loaded, OldEntries, StateWriter};
use super::stream::{
    part_path, partial_path, CountingSink, FileSink, FileSize, PacketSink, RecordWriter, Written,
};
use super::{lineage_text, state_path, uuid_text, IdSource, Spans, BLOCK_SIZE};
use crate::endpoint::Endpoint;
use crate::exec::Progress;
use crate::inspect::inspect;
use crate::open::OpenSet;
use crate::Error;

/// What to export and how.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The destinations the packet is for (MultiSite's replica names).
    pub destinations: Vec<String>,
    /// The first physical file; the others are `OUT_2`, `OUT_3`, ...
    pub out: PathBuf,
    /// `--since`: the base epoch, instead of the destinations' oldest.
    pub since: Option<u32>,
    /// `--max-size`: bytes per physical file.
    pub max_size: u64,
    /// `--limit`: the most physical files.
    pub limit: Option<u32>,
    /// `--compress`.
    pub compression: Compression,
    /// `--comment`.
    pub comment: String,
    /// `-d`: compute everything, write nothing (not even the state).
    pub dry_run: bool,
    /// `--key-file`: sign the packet.
    pub key: Option<Key>,
    /// `--request`: a destination's rewind request to honour.
    pub request: Option<PathBuf>,
    /// `--wait-lock`.
    pub wait_lock: Option<Duration>,
    /// Where packet ids and lineages come from.
    pub ids: IdSource,
    /// Bytes read at a time.
    pub stride: usize,
    /// Worker threads that read and hash the source.
    pub threads: usize,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            destinations: Vec::new(),
            out: PathBuf::new(),
            since: None,
            max_size: poolsync_packet::DEFAULT_MAX_SIZE,
            limit: None,
            compression: Compression::None,
            comment: String::new(),
            dry_run: false,
            key: None,
            request: None,
            wait_lock: None,
            ids: IdSource::Random,
            stride: 4 << 20,
            threads: 1,
        }
    }
}

/// How an export ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportOutcome {
    /// The packet was written and the state records it.
    Written,
    /// A dry run: what would be written.
    WouldWrite,
    /// Every destination holds the current epoch and nothing changed: no
    /// packet (MultiSite: "a packet may not be created when replicas
    /// appear to be synchronized"), exit 0.
    UpToDate,
    /// A crash had stopped an export after its state recorded the packet:
    /// its files were put in place, and nothing else was done.
    Completed,
}

/// A destination as the export sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestinationBase {
    /// Its name.
    pub name: String,
    /// The timeline and epoch the table believed it holds (`None`: never
    /// exported to).
    pub believed: Option<(u32, u32)>,
    /// The epoch from which it needs blocks.
    pub base: u32,
}

/// Why the state could not be used, when it could not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateNote {
    /// The state file.
    pub path: PathBuf,
    /// Missing, unusable or partly unusable, and what that means.
    pub reason: String,
}

/// What an export did, or would do.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// The source pool set.
    pub set: PathBuf,
    /// How it ended.
    pub outcome: ExportOutcome,
    /// The pool set UUID.
    pub poolset_uuid: String,
    /// The lineage.
    pub lineage: String,
    /// The timeline.
    pub timeline: u32,
    /// The exporter follows another site (forwards its epochs).
    pub follower: bool,
    /// The packet's base epoch.
    pub base_epoch: u32,
    /// The epoch it brings the destinations to.
    pub new_epoch: u32,
    /// The replicated logical range.
    pub range: (u64, u64),
    /// The destinations and what they were believed to hold.
    pub destinations: Vec<DestinationBase>,
    /// Blocks read and compared.
    pub blocks: u64,
    /// Blocks that changed since the last export.
    pub changed_blocks: u64,
    /// Blocks shipped.
    pub shipped_blocks: u64,
    /// The packet, when one was (or would be) written.
    pub packet: Option<Written>,
    /// The state file, when it could not be used as it was.
    pub state_note: Option<StateNote>,
    /// The state file written (not for a dry run or without a packet).
    pub state_file: Option<PathBuf>,
    /// The rewind request honoured.
    pub request: Option<RequestNote>,
    /// The packet's id, hex.
    pub packet_id: Option<String>,
    /// The compression asked for.
    pub compression: &'static str,
}

/// A rewind request an export honoured.
#[derive(Debug, Clone, Serialize)]
pub struct RequestNote {
    /// The file.
    pub path: PathBuf,
    /// The destination that wrote it.
    pub destination: String,
    /// Its timeline and epoch.
    pub position: (u32, u32),
    /// Blocks it asked for.
    pub blocks: u64,
}

/// The state an export starts from.
pub(crate) struct Start<F> {
    pub(crate) file: Option<state::StateFile<F>>,
    pub(crate) head: State,
    pub(crate) note: Option<StateNote>,
}

/// Exports one logical packet from the pool set at `path` (see the module
/// documentation).
pub fn export<S: Storage>(
    storage: &S,
    path: &Path,
    options: &ExportOptions,
    progress: &dyn Progress,
) -> Result<ExportReport, Error> {
    check_options(path, options)?;
    let set = open_waiting(storage, path, Access::ReadOnly, options.wait_lock)?;
    let (source, uuid, whole) = judge_source(&set)?;
    let start = start_state(storage, path, uuid, &whole, &options.ids)?;
    // A destination's pool may be larger than the lineage's: the range is
    // the lineage's, as its state records it.
    let range = start.head.range.clone();
    if !options.dry_run {
        if let Some(done) = finish_interrupted(storage, path, &start, options)? {
            return Ok(done);
        }
    }
    let request = match &options.request {
        Some(p) => Some(read_request(storage, p, &start.head, options)?),
        None => None,
    };
    let head = &start.head;
    let new_epoch = if head.follower {
        head.epoch
    } else {
        head.epoch
            .checked_add(1)
            .ok_or_else(|| Error::CannotExport {
                set: path.to_path_buf(),
                reason: "the epoch counter is exhausted".to_string(),
            })?
    };
    let bases = destination_bases(head, options, request.as_ref());
    let base = match options.since {
        Some(s) if s > head.epoch => {
            return Err(Error::CannotExport {
                set: path.to_path_buf(),
                reason: format!(
                    "--since {s} is after the current epoch {}: there is no such epoch yet",
                    head.epoch
                ),
            })
        }
        Some(s) if head.follower && s >= head.epoch => {
            return Err(Error::CannotExport {
                set: path.to_path_buf(),
                reason: format!(
                    "--since {s}: this site follows another and holds epoch {}; it forwards epochs up to its own, so --since must be below it",
                    head.epoch
                ),
            })
        }
        Some(s) => s,
        None => bases.iter().map(|d| d.base).min().unwrap_or(0),
    };
    let mut report = ExportReport {
        set: path.to_path_buf(),
        outcome: ExportOutcome::UpToDate,
        poolset_uuid: uuid_text(&uuid),
        lineage: lineage_text(&head.lineage),
        timeline: head.timeline,
        follower: head.follower,
        base_epoch: base,
        new_epoch,
        range: (range.start, range.end),
        destinations: bases,
        blocks: 0,
        changed_blocks: 0,
        shipped_blocks: 0,
        packet: None,
        state_note: start.note.clone(),
        state_file: None,
        request: request.as_ref().map(|(p, r, n)| RequestNote {
            path: p.clone(),
            destination: r.destination.clone(),
            position: (r.timeline, r.epoch),
            blocks: *n,
        }),
        packet_id: None,
        compression: options.compression.name(),
    };
    let behind = report.destinations.iter().any(|d| d.base < head.epoch)
        || options.since.is_some()
        || request.is_some();
    if head.follower && !behind {
        // A follower makes no epochs: nothing it could ship is new.
        return Ok(report);
    }
    if behind {
        // A packet is certain: refuse before the scan. Otherwise only a
        // scan tells, and `run` asks again (a re-run after a crash that
        // followed the renames finds its own packet there, and is current).
        out_is_free(storage, options)?;
    }
    let plan = Plan {
        source,
        range,
        uuid,
        base,
        new_epoch,
        behind,
        request: request.as_ref().map(|(_, r, _)| r),
    };
    run(storage, path, &start, &plan, options, progress, &mut report)?;
    Ok(report)
}

/// What the scan is to do.
struct Plan<'a> {
    source: &'a dyn Endpoint,
    range: std::ops::Range<u64>,
    uuid: [u8; 16],
    base: u32,
    new_epoch: u32,
    behind: bool,
    request: Option<&'a RewindRequest>,
}

/// Refuses options that cannot work, before anything is opened.
fn check_options(path: &Path, options: &ExportOptions) -> Result<(), Error> {
    let refuse = |reason: String| {
        Err(Error::CannotExport {
            set: path.to_path_buf(),
            reason,
        })
    };
    if options.destinations.is_empty() {
        return refuse("no destination named: name the replicas the packet is for".to_string());
    }
    if options.destinations.len() > MAX_DESTINATIONS {
        return refuse(format!(
            "{} destinations named, at most {MAX_DESTINATIONS} per packet",
            options.destinations.len()
        ));
    }
    for (i, d) in options.destinations.iter().enumerate() {
        if d.is_empty() || d.len() > MAX_NAME {
            return refuse(format!(
                "destination name \"{d}\" is {} bytes, expected 1 to {MAX_NAME}",
                d.len()
            ));
        }
        if options.destinations[..i].contains(d) {
            return refuse(format!("destination \"{d}\" is named twice"));
        }
    }
    if options.limit == Some(0) {
        return refuse("--limit 0 allows no file at all".to_string());
    }
    if options.out.as_os_str().is_empty() {
        return refuse("no --out FILE given".to_string());
    }
    Ok(())
}

/// The source replica, the pool set UUID and the replicated range.
type Source<'a> = (&'a dyn Endpoint, [u8; 16], std::ops::Range<u64>);

/// The source replica (the lowest-index healthy one), the pool set UUID
/// and the replicated range `[4096, pool size)`, block aligned; refuses a
/// set that is not healthy.
fn judge_source<F: PartFile>(set: &OpenSet<F>) -> Result<Source<'_>, Error> {
    let health = inspect(set);
    let refuse = |reason: String| Error::CannotExport {
        set: set.path.clone(),
        reason,
    };
    if !health.is_healthy() {
        return Err(refuse(format!(
            "the pool set is not healthy ({}); repair it with `poolsync sync` first",
            first_problem(&health)
        )));
    }
    let r = health.sync_source().unwrap_or(0);
    let rep = set
        .replicas
        .get(r)
        .ok_or_else(|| refuse(format!("replica {r} is not in the set")))?;
    let uuid = set
        .part(r, 0)
        .and_then(|p| p.header())
        .map(|h| h.poolset_uuid.0)
        .ok_or_else(|| refuse(format!("replica {r} part 0 has no pool header")))?;
    let bs = u64::from(BLOCK_SIZE);
    let end = set.set_pool_size() / bs * bs;
    if end <= bs {
        return Err(refuse(format!("the pool is only {end} bytes")));
    }
    Ok((rep, uuid, bs..end))
}

/// The state to start from: the file's, or a new lineage (saying why).
pub(crate) fn start_state<S: Storage>(
    storage: &S,
    path: &Path,
    uuid: [u8; 16],
    range: &std::ops::Range<u64>,
    ids: &IdSource,
) -> Result<Start<S::Aux>, Error> {
    let fresh = |reason: String| {
        let lineage = ids.generate(
            b"lineage",
            u64::from_le_bytes([
                uuid[0], uuid[1], uuid[2], uuid[3], uuid[4], uuid[5], uuid[6], uuid[7],
            ]),
        );
        Start {
            file: None,
            head: State {
                poolset_uuid: uuid,
                lineage,
                timeline: poolsync_packet::ROOT_TIMELINE,
                history: Vec::new(),
                epoch: 0,
                generation: 0,
                block_size: BLOCK_SIZE,
                range: range.clone(),
                destinations: Vec::new(),
                applied: Vec::new(),
                follower: false,
            },
            note: Some(StateNote {
                path: state_path(path),
                reason,
            }),
        }
    };
    Ok(match state::load(storage, path)? {
        Loaded::Missing => fresh(
            "no state file yet: a new lineage starts, and every destination gets every block"
                .to_string(),
        ),
        Loaded::Unusable { reason, .. } => fresh(format!(
            "the state file cannot be used ({reason}): a new lineage starts, and every destination gets every block (destinations of the old lineage refuse it; re-seed them)"
        )),
        Loaded::Ready(f) => {
            let h = &f.head;
            if h.poolset_uuid != uuid
                || h.range.start != range.start
                || h.range.end > range.end
                || h.block_size != BLOCK_SIZE
            {
                fresh(format!(
                    "the state file belongs to another pool or another size (pool set UUID {}, range [{:#x}, {:#x})): a new lineage starts, and every destination gets every block",
                    uuid_text(&h.poolset_uuid),
                    h.range.start,
                    h.range.end
                ))
            } else {
                Start {
                    head: f.head.clone(),
                    file: Some(f),
                    note: None,
                }
            }
        }
    })
}

/// The epoch each named destination needs blocks from: its table entry's
/// epoch where that lies on this site's history (the fork epoch where it
/// does not), 0 for one never exported to; a rewind request lowers its
/// destination's to where it left this history.
fn destination_bases(
    head: &State,
    options: &ExportOptions,
    request: Option<&(PathBuf, RewindRequest, u64)>,
) -> Vec<DestinationBase> {
    options
        .destinations
        .iter()
        .map(|name| {
            let entry = head.destination(name);
            let mut base = entry.map_or(0, |d| common_epoch(head, d.timeline, &[], d.epoch));
            if let Some((_, r, _)) = request.filter(|(_, r, _)| &r.destination == name) {
                base = base.min(common_epoch(head, r.timeline, &r.history, r.epoch));
            }
            DestinationBase {
                name: name.clone(),
                believed: entry.map(|d| (d.timeline, d.epoch)),
                base,
            }
        })
        .collect()
}

/// The last epoch at which a site at (`timeline`, `epoch`) holds what
/// this site held: its epoch when it is on this site's history, the fork
/// epoch when it left it, 0 when nothing is known.
fn common_epoch(head: &State, timeline: u32, history: &[poolsync_packet::Fork], epoch: u32) -> u32 {
    let epoch = epoch.min(head.epoch);
    if timeline == head.timeline {
        return epoch;
    }
    // A timeline without a history given: known only if it is on ours.
    let theirs: Vec<poolsync_packet::Fork> = if history.is_empty() {
        let mut h = Vec::new();
        for f in &head.history {
            if f.parent == timeline || timeline == poolsync_packet::ROOT_TIMELINE {
                break;
            }
            h.push(*f);
            if f.timeline == timeline {
                break;
            }
        }
        if timeline != poolsync_packet::ROOT_TIMELINE && !h.iter().any(|f| f.timeline == timeline) {
            return 0;
        }
        h
    } else {
        history.to_vec()
    };
    match fork_point(&theirs, timeline, &head.history, head.timeline) {
        Ok(ForkPoint::SameTimeline) => epoch,
        Ok(ForkPoint::At(f)) => epoch.min(f),
        Err(_) => 0,
    }
}

/// Reads and checks `--request FILE`; returns it with the blocks it asks for.
fn read_request<S: Storage>(
    storage: &S,
    path: &Path,
    head: &State,
    options: &ExportOptions,
) -> Result<(PathBuf, RewindRequest, u64), Error> {
    let refuse = |reason: String| Error::RewindRequest {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = storage
        .read_all(path, poolsync_packet::rewind::REWIND_MAX_LEN as u64)
        .map_err(|e| refuse(e.to_string()))?;
    let mut r =
        RewindRequest::decode(&bytes, options.key.as_ref()).map_err(|e| refuse(e.to_string()))?;
    if r.poolset_uuid != head.poolset_uuid {
        return Err(refuse(format!(
            "it is for pool set UUID {}, this pool's is {}",
            uuid_text(&r.poolset_uuid),
            uuid_text(&head.poolset_uuid)
        )));
    }
    if r.lineage != head.lineage {
        return Err(refuse(format!(
            "it belongs to lineage {}, this site's is {}",
            lineage_text(&r.lineage),
            lineage_text(&head.lineage)
        )));
    }
    if r.block_size != head.block_size {
        return Err(refuse(format!(
            "its block size is {}, this site's {}",
            r.block_size, head.block_size
        )));
    }
    if !options.destinations.contains(&r.destination) {
        if options.destinations.len() == 1 {
            r.destination = options.destinations[0].clone();
        } else {
            return Err(refuse(format!(
                "it was written by destination \"{}\", which is not among the destinations named",
                r.destination
            )));
        }
    }
    normalize_ranges(&mut r.ranges, r.block_size);
    let blocks = r.ranges.iter().map(|x| x.blocks).sum();
    Ok((path.to_path_buf(), r, blocks))
}

/// A run of shipped blocks, as the scan judged them: its first block's
/// logical offset, each block's digest, and whether it ends there (or may
/// go on in the next stride).
struct Run {
    at: u64,
    digests: Vec<[u8; 12]>,
    ended: bool,
}

/// Shipped runs go to the packet thread a stride at a time, at most this
/// many strides ahead.
const STRIDES_TO_SHIP: usize = 4;

/// Writes the new state as the scan goes, and hands each stride's shipped
/// runs to the packet thread ([`ship_runs`]).
struct Visitor<F> {
    state: Option<StateWriter<F>>,
    runs: std::sync::mpsc::SyncSender<Vec<Run>>,
}

impl<F: PartFile> ScanVisitor for Visitor<F> {
    fn stride(&mut self, offset: u64, blocks: &[Block]) -> Result<(), Error> {
        let bs = u64::from(BLOCK_SIZE);
        let mut runs: Vec<Run> = Vec::new();
        let mut open = false;
        for (i, b) in blocks.iter().enumerate() {
            if let Some(w) = &mut self.state {
                w.push(b.entry)?;
            }
            match (open, b.ships) {
                (true, true) => {
                    if let Some(r) = runs.last_mut() {
                        r.digests.push(b.entry.digest);
                    }
                }
                (false, true) => {
                    runs.push(Run {
                        at: offset + i as u64 * bs,
                        digests: vec![b.entry.digest],
                        ended: true,
                    });
                    open = true;
                }
                (_, false) => open = false,
            }
        }
        if open {
            if let Some(r) = runs.last_mut() {
                // It may go on in the next stride.
                r.ended = false;
            }
        }
        if runs.is_empty() {
            return Ok(());
        }
        self.runs.send(runs).map_err(|_| Error::WriterStopped)
    }
}

/// The packet thread: reads each shipped run of `source` again, checks
/// that every block still has the digest the scan judged it by (the set
/// must not be in use: a block changed in between would put bytes into
/// the packet that the new state does not describe), and adds it to the
/// packet. Returns the writer whatever happened, so that its files can be
/// removed after a failure.
fn ship_runs<'k, W: PacketSink>(
    source: &dyn Endpoint,
    mut packet: RecordWriter<'k, W>,
    strides: std::sync::mpsc::Receiver<Vec<Run>>,
) -> (RecordWriter<'k, W>, Result<(), Error>) {
    let bs = BLOCK_SIZE as usize;
    let mut buf = Vec::new();
    let mut ship = |packet: &mut RecordWriter<'k, W>, run: &Run| -> Result<(), Error> {
        buf.resize(run.digests.len() * bs, 0);
        source.read(run.at, &mut buf)?;
        for (k, (block, digest)) in buf.chunks(bs).zip(&run.digests).enumerate() {
            if super::scan::entry_of(block, 0).digest != *digest {
                return Err(Error::SourceChanged {
                    endpoint: source.name(),
                    offset: run.at + (k * bs) as u64,
                });
            }
        }
        if run.ended {
            packet.push_ended(run.at, &buf)
        } else {
            packet.push(run.at, &buf)
        }
    };
    for runs in strides {
        for run in &runs {
            if let Err(e) = ship(&mut packet, run) {
                return (packet, Err(e));
            }
        }
    }
    (packet, Ok(()))
}

/// Scans `plan`'s source, writing the new state into `state` (when given)
/// on this thread and the packet into `packet` on a thread of its own, so
/// that reading the shipped blocks again, hashing and writing them
/// overlaps the scan. Returns the scan's totals (or the first error), the
/// state writer and the packet writer.
fn scan_and_ship<'k, W: PacketSink + Send, F: PartFile>(
    plan: &Plan<'_>,
    scan_plan: &ScanPlan<'_>,
    cursor: &mut EntryCursor<'_>,
    state: Option<StateWriter<F>>,
    packet: RecordWriter<'k, W>,
    progress: &dyn Progress,
) -> (
    Result<super::scan::ScanTotals, Error>,
    Option<StateWriter<F>>,
    RecordWriter<'k, W>,
) {
    let source = plan.source;
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel(STRIDES_TO_SHIP);
        let shipper = scope.spawn(move || ship_runs(source, packet, rx));
        let mut v = Visitor { state, runs: tx };
        let scanned = scan(source, scan_plan, cursor, &mut v, progress);
        let Visitor { state, runs } = v;
        // The packet thread ends once it has shipped what it was sent.
        drop(runs);
        let (packet, shipped) = match shipper.join() {
            Ok(x) => x,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let result = match (scanned, shipped) {
            // The scan stopped because the packet thread did: its error.
            (Err(Error::WriterStopped), Err(e)) | (Ok(_), Err(e)) => Err(e),
            (scanned, _) => scanned,
        };
        (result, state, packet)
    })
}

/// The packet's header, and the new state's head.
fn packet_and_head<S: Storage>(
    storage: &S,
    path: &Path,
    start: &Start<S::Aux>,
    plan: &Plan<'_>,
    options: &ExportOptions,
) -> (PacketMeta, State) {
    let head = &start.head;
    let now = storage.clock().unix_seconds();
    let salt = head.generation.wrapping_add(1) ^ (u64::from(plan.new_epoch) << 32);
    let meta = PacketMeta {
        packet_id: options.ids.generate(b"packet", salt),
        poolset_uuid: plan.uuid,
        lineage: head.lineage,
        timeline: head.timeline,
        history: head.history.clone(),
        base_epoch: plan.base,
        new_epoch: plan.new_epoch,
        block_size: BLOCK_SIZE,
        range: plan.range.clone(),
        created: now,
        comment: options.comment.clone(),
        destinations: options.destinations.clone(),
        source: crate::load::absolute(storage, path)
            .to_string_lossy()
            .into_owned(),
        rewind: plan.request.map(|r| Position {
            timeline: r.timeline,
            epoch: r.epoch,
        }),
        compression: options.compression,
    };
    let mut new = head.clone();
    new.generation = head.generation.wrapping_add(1);
    new.epoch = plan.new_epoch;
    for name in &options.destinations {
        let entry = TableEntry {
            name: name.clone(),
            timeline: head.timeline,
            epoch: plan.new_epoch,
            last_export: now,
        };
        match new.destinations.iter_mut().find(|d| &d.name == name) {
            Some(d) => *d = entry,
            None => new.destinations.push(entry),
        }
    }
    (meta, new)
}

/// Scans, and writes (or, for a dry run, counts) the state and the packet.
fn run<S: Storage>(
    storage: &S,
    path: &Path,
    start: &Start<S::Aux>,
    plan: &Plan<'_>,
    options: &ExportOptions,
    progress: &dyn Progress,
    report: &mut ExportReport,
) -> Result<(), Error> {
    let (meta, new_head) = packet_and_head(storage, path, start, plan, options);
    if new_head.destinations.len() > poolsync_packet::state::MAX_STATE_DESTINATIONS {
        return Err(Error::CannotExport {
            set: path.to_path_buf(),
            reason: format!(
                "the destination table would hold {} destinations, at most {} are kept",
                new_head.destinations.len(),
                poolsync_packet::state::MAX_STATE_DESTINATIONS
            ),
        });
    }
    report.packet_id = Some(lineage_text(&meta.packet_id));
    let extra: Vec<BlockRange> = plan.request.map(|r| r.ranges.clone()).unwrap_or_default();
    let scan_plan = ScanPlan {
        range: plan.range.clone(),
        block_size: BLOCK_SIZE,
        change_stamp: plan.new_epoch,
        base: plan.base,
        extra: &extra,
        stride: options.stride,
        threads: options.threads,
    };
    let mut cursor = match &start.file {
        Some(f) => f.cursor(),
        None => EntryCursor::none(),
    };
    progress.start(plan.range.end - plan.range.start);
    let key = options.key.as_ref();
    if options.dry_run {
        let packet =
            RecordWriter::new(meta.clone(), key, options.max_size, CountingSink::default())?;
        let (scanned, _, packet) =
            scan_and_ship::<_, S::Aux>(plan, &scan_plan, &mut cursor, None, packet, progress);
        let totals = scanned?;
        progress.finish();
        note_scan(report, &totals, &cursor, start);
        if !needs_packet(plan, &totals, start, report) {
            return Ok(());
        }
        out_is_free(storage, options)?;
        let (summary, data_bytes, sink) = packet.finish()?;
        report.packet = Some(written(&options.out, &summary, data_bytes, &sink.files));
        report.outcome = ExportOutcome::WouldWrite;
        return check_limit(path, options, &sink.files);
    }
    let state = StateWriter::create(storage, path, &new_head)?;
    let sink = FileSink::new(storage, &options.out, options.limit);
    let packet = RecordWriter::new(meta, key, options.max_size, sink)?;
    let (scanned, state, packet) =
        scan_and_ship(plan, &scan_plan, &mut cursor, Some(state), packet, progress);
    progress.finish();
    let state = state.ok_or(Error::WriterStopped)?;
    let totals = match scanned {
        Ok(t) => t,
        Err(e) => return Err(give_up(storage, state, packet, e)),
    };
    note_scan(report, &totals, &cursor, start);
    if start.head.follower && totals.changed > totals.unknown {
        let e = follower_changed(path, &totals.changed_spans);
        return Err(give_up(storage, state, packet, e));
    }
    if !needs_packet(plan, &totals, start, report) {
        state.abandon(storage)?;
        packet.into_sink().discard()?;
        return Ok(());
    }
    if let Err(e) = out_is_free(storage, options) {
        state.abandon(storage)?;
        packet.into_sink().discard()?;
        return Err(e);
    }
    let (summary, data_bytes, mut sink) = match packet.finish() {
        Ok(x) => x,
        Err(e) => {
            state.abandon(storage)?;
            return Err(e);
        }
    };
    report.packet = Some(written(&options.out, &summary, data_bytes, &sink.sizes));
    if sink.over_limit() {
        let sizes = sink.sizes.clone();
        state.abandon(storage)?;
        sink.discard()?;
        return check_limit(path, options, &sizes);
    }
    sink.sync()?;
    report.state_file = Some(state.finish(storage)?);
    sink.publish()?;
    report.outcome = ExportOutcome::Written;
    Ok(())
}

/// Removes what a failed export wrote and returns its error.
fn give_up<S: Storage>(
    storage: &S,
    state: StateWriter<S::Aux>,
    packet: RecordWriter<'_, FileSink<'_, S>>,
    e: Error,
) -> Error {
    let _ = state.abandon(storage);
    let sink = packet.into_sink();
    let _ = sink.discard();
    e
}

/// The refusal of a follower that was changed locally.
fn follower_changed(path: &Path, spans: &Spans) -> Error {
    Error::CannotExport {
        set: path.to_path_buf(),
        reason: format!(
            "this site follows another (it imports packets) and was changed locally since it imported its epoch: {} bytes at {}; a follower forwards only what it imported: bring it back with a rewind (`poolsync import --diagnose --rewind-request FILE`), or make it the writer with `poolsync epoch --promote`",
            spans.bytes(),
            spans.summary(4)
        ),
    }
}

/// Whether a packet is due: a destination is behind, `--since` or a
/// request asks for one, or something changed.
/// Refuses an `--out` whose first file exists: packets never overwrite a
/// file.
fn out_is_free<S: Storage>(storage: &S, options: &ExportOptions) -> Result<(), Error> {
    let first = part_path(&options.out, 0);
    if storage.stat(&first)?.is_some() {
        return Err(Error::CannotExport {
            set: first,
            reason:
                "the file exists; packets never overwrite a file: remove it or choose another --out"
                    .to_string(),
        });
    }
    Ok(())
}

fn needs_packet<F>(
    plan: &Plan<'_>,
    totals: &super::scan::ScanTotals,
    _start: &Start<F>,
    _report: &ExportReport,
) -> bool {
    plan.behind || totals.changed > 0
}

fn note_scan<F>(
    report: &mut ExportReport,
    totals: &super::scan::ScanTotals,
    cursor: &EntryCursor<'_>,
    start: &Start<F>,
) {
    report.blocks = totals.blocks;
    report.changed_blocks = totals.changed;
    report.shipped_blocks = totals.shipped;
    let bad = cursor.bad_chunks();
    if let (Some((chunk, reason)), Some(f)) = (bad.first(), &start.file) {
        report.state_note = Some(StateNote {
            path: f.path.clone(),
            reason: format!(
                "{} chunk(s) of the state file fail their checksums (chunk {chunk}: {reason}): their {} blocks count as changed and ship to every destination",
                bad.len(),
                bad.len() * poolsync_packet::state::CHUNK_ENTRIES
            ),
        });
    }
}

/// The packet's files and totals.
fn written(
    out: &Path,
    summary: &poolsync_packet::PacketSummary,
    data_bytes: u64,
    sizes: &[u64],
) -> Written {
    let files: Vec<FileSize> = sizes
        .iter()
        .enumerate()
        .map(|(i, &bytes)| FileSize {
            path: part_path(out, i as u32),
            bytes,
        })
        .collect();
    Written {
        data_blocks: summary.data_blocks,
        zero_blocks: summary.zero_blocks,
        data_bytes,
        records: summary.records,
        packet_bytes: sizes.iter().sum(),
        files,
        content_digest: summary
            .content_digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    }
}

/// Refuses a packet that needs more files than `--limit` allows.
fn check_limit(path: &Path, options: &ExportOptions, sizes: &[u64]) -> Result<(), Error> {
    match options.limit {
        Some(limit) if sizes.len() > limit as usize => Err(Error::CannotExport {
            set: path.to_path_buf(),
            reason: format!(
                "the packet needs {} files of at most {} bytes (--max-size), --limit allows {limit}; nothing was written: raise --limit or --max-size",
                sizes.len(),
                options.max_size
            ),
        }),
        _ => Ok(()),
    }
}

/// After a crash: when the temporary files of an export are there, puts
/// them in place if the state recorded their packet (the export had
/// committed), and removes them if it had not. Returns the report of a
/// finished export.
fn finish_interrupted<S: Storage>(
    storage: &S,
    path: &Path,
    start: &Start<S::Aux>,
    options: &ExportOptions,
) -> Result<Option<ExportReport>, Error> {
    let mut parts = Vec::new();
    for part in 0u32.. {
        let name = part_path(&options.out, part);
        let tmp = partial_path(&name);
        let (has_name, has_tmp) = (
            storage.stat(&name)?.is_some(),
            storage.stat(&tmp)?.is_some(),
        );
        if !has_name && !has_tmp {
            break;
        }
        parts.push((name, tmp, has_tmp));
    }
    if !parts.iter().any(|p| p.2) {
        return Ok(None);
    }
    let key = options.key.as_ref();
    let opened: Vec<_> = parts
        .iter()
        .map(|(name, tmp, has_tmp)| {
            let file = if *has_tmp { tmp } else { name };
            super::files::open_packet_file(storage, file, key).ok()
        })
        .collect();
    let committed = opened.iter().all(Option::is_some)
        && start.file.is_some()
        && opened
            .iter()
            .flatten()
            .all(|f| is_recorded(&start.head, &f.header.meta))
        && opened.iter().flatten().all(|f| {
            f.header.meta.packet_id
                == opened[0]
                    .as_ref()
                    .map_or([0; 16], |g| g.header.meta.packet_id)
        });
    if !committed {
        for (_, tmp, has_tmp) in &parts {
            if *has_tmp {
                crate::durable::remove_if_exists(storage, tmp)?;
            }
        }
        if let Some((name, _, _)) = parts.first() {
            storage.fsync_parent(name)?;
        }
        return Ok(None);
    }
    let mut files = Vec::new();
    for ((name, tmp, has_tmp), f) in parts.iter().zip(&opened) {
        if *has_tmp {
            storage.rename(tmp, name)?;
        }
        files.push(FileSize {
            path: name.clone(),
            bytes: f.as_ref().map_or(0, |f| f.len),
        });
    }
    if let Some((name, _, _)) = parts.first() {
        storage.fsync_parent(name)?;
    }
    let meta = opened[0]
        .as_ref()
        .map(|f| f.header.meta.clone())
        .ok_or(Error::WriterStopped)?;
    let summary = opened
        .last()
        .and_then(|f| f.as_ref())
        .and_then(|f| f.trailer.last);
    Ok(Some(ExportReport {
        set: path.to_path_buf(),
        outcome: ExportOutcome::Completed,
        poolset_uuid: uuid_text(&meta.poolset_uuid),
        lineage: lineage_text(&meta.lineage),
        timeline: meta.timeline,
        follower: start.head.follower,
        base_epoch: meta.base_epoch,
        new_epoch: meta.new_epoch,
        range: (meta.range.start, meta.range.end),
        destinations: Vec::new(),
        blocks: 0,
        changed_blocks: 0,
        shipped_blocks: summary.map_or(0, |s| s.data_blocks + s.zero_blocks),
        packet: summary.map(|s| Written {
            data_blocks: s.data_blocks,
            zero_blocks: s.zero_blocks,
            data_bytes: s.data_blocks * u64::from(meta.block_size),
            records: s.records,
            packet_bytes: files.iter().map(|f| f.bytes).sum(),
            files,
            content_digest: s
                .content_digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }),
        state_note: None,
        state_file: Some(state_path(path)),
        request: None,
        packet_id: Some(lineage_text(&meta.packet_id)),
        compression: meta.compression.name(),
    }))
}

/// Whether the state's table records the packet `meta` as exported: every
/// destination it names holds its new epoch since its creation time.
fn is_recorded(head: &State, meta: &PacketMeta) -> bool {
    meta.lineage == head.lineage
        && meta.timeline == head.timeline
        && meta.new_epoch == head.epoch
        && !meta.destinations.is_empty()
        && meta.destinations.iter().all(|name| {
            head.destination(name).is_some_and(|d| {
                d.timeline == meta.timeline
                    && d.epoch == meta.new_epoch
                    && d.last_export == meta.created
            })
        })
}

/// The first thing wrong with a set that is not healthy, in words.
fn first_problem(health: &crate::inspect::Health) -> String {
    if let Some(i) = health.inconsistencies.first() {
        return i.to_string();
    }
    health
        .replicas
        .iter()
        .filter(|r| !r.healthy)
        .find_map(crate::inspect::ReplicaHealth::reason)
        .unwrap_or_else(|| "a replica is broken".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packets::stream::CountingSink;

    use crate::test_endpoint::Mem;

    /// Scans and ships all of `src` (no state: every block ships).
    fn export_all(src: &Mem) -> Result<u64, Error> {
        let plan = Plan {
            source: src,
            range: 0..32 * 4096,
            uuid: [2; 16],
            base: 0,
            new_epoch: 1,
            behind: false,
            request: None,
        };
        let scan_plan = ScanPlan {
            range: plan.range.clone(),
            block_size: BLOCK_SIZE,
            change_stamp: 1,
            base: 0,
            extra: &[],
            stride: 8 * 4096,
            threads: 2,
        };
        let meta = crate::packets::stream::test_meta(0..32 * 4096);
        let packet = RecordWriter::new(meta, None, 1 << 30, CountingSink::default())?;
        let mut none = EntryCursor::none();
        let (scanned, _, packet) = scan_and_ship::<_, poolsync_pmem::sim::SimFile>(
            &plan,
            &scan_plan,
            &mut none,
            None,
            packet,
            &crate::exec::NoProgress,
        );
        scanned?;
        let (_, data_bytes, _) = packet.finish()?;
        Ok(data_bytes)
    }

    #[test]
    fn every_block_ships_and_one_that_changes_while_it_is_read_fails_the_export() {
        let bytes: Vec<u8> = (0..32 * 4096).map(|i| (i / 4096) as u8 | 1).collect();
        let steady = Mem::new(bytes.clone());
        assert_eq!(export_all(&steady).unwrap(), 32 * 4096);
        // Block 13 changes after its first reading (the scan's).
        let changing = Mem {
            change_at: Some(13 * 4096 + 5),
            ..Mem::new(bytes)
        };
        let e = export_all(&changing).unwrap_err();
        assert!(
            matches!(e, Error::SourceChanged { offset, .. } if offset == 13 * 4096),
            "{e}"
        );
        assert!(e.to_string().contains("must not be in use"), "{e}");
    }
}
