//! `poolsync import`: apply logical packets to a destination pool set, in
//! epoch order, skipping what it holds and refusing what it cannot take.
//!
//! The order of a run:
//!
//! 1. Open and lock the destination and judge it
//!    ([`super::destination`]): seeded (no part carries a header yet) or
//!    existing; read its state.
//! 2. Read every physical file's header and trailer and group the files
//!    into logical packets; then read every record of every packet,
//!    verified (tags, sequence, decompression, totals, content digest),
//!    and check each packet against the destination: the pool set UUID,
//!    the lineage, the range, a replay of an applied packet id with other
//!    content, the destination's size. Anything wrong here refuses the
//!    whole run, naming the file and offset, before anything is written.
//!    A lone packet to be applied to an existing destination with a state
//!    is verified by the check of step 3 instead, which reads every record
//!    before anything is written too: the same refusal, one reading fewer.
//! 3. Take the packets in epoch order. Each is skipped when the
//!    destination holds it already, refused when it leaves a gap or comes
//!    from a timeline the destination left, or applied: the destination is
//!    first proven to hold the image of its recorded epoch
//!    ([`super::apply::check_destination`], which reads the packet a
//!    second time), then its headers are marked broken, the records are
//!    written into every replica (the packet read a third time, verified
//!    again) with the new state written alongside, the data fenced, the
//!    headers restored, and the state committed.
//! 4. Delete the files of packets applied or skipped, unless `--keep`.
//!
//! `--diagnose` runs steps 1 to 3 without writing, says why each packet
//! was refused and which export fills the gap, and with `--rewind-request`
//! writes the request that brings a destination changed locally (or left
//! on another timeline) back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use poolsync_packet::{
    applicability, normalize_ranges, Applicability, Applied, BlockRange, Fork, Key, PacketMeta,
    Position, Replay, RewindRequest, State,
};
use poolsync_pmem::{PartFile, Storage};
use serde::Serialize;

use super::apply::{check_destination, write_records, CheckReport, NoRecords, Writer};
use super::deleting;
use super::destination::{
    create_parts, finish_modes, open_destination, write_seed_headers, Destination, Shape,
};
use super::files::{group, open_packet_file, read_records, LogicalPacket, RecordStream};
use super::state::{self, EntryCursor, Loaded, StateFile, StateWriter};
use super::{lineage_text, uuid_text, Spans};
use crate::exec::{NoProgress, Progress};
use crate::ring::UuidSource;
use crate::Error;

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// `-d`: check everything, write nothing, delete nothing.
    pub dry_run: bool,
    /// `--diagnose`: say what is missing and why packets are refused.
    pub diagnose: bool,
    /// `--keep`: do not delete the packets applied or skipped.
    pub keep: bool,
    /// `--key-file`: accept only packets signed with this key.
    pub key: Option<Key>,
    /// `--rewind-request FILE` (with `--diagnose`).
    pub rewind_request: Option<PathBuf>,
    /// `--as NAME`: this destination's name at the source.
    pub name: Option<String>,
    /// `--wait-lock`.
    pub wait_lock: Option<Duration>,
    /// Where the UUIDs of a seeded destination's parts come from.
    pub uuids: UuidSource,
    /// Worker threads that read and hash the destination while checking
    /// it (0 and 1: one).
    pub threads: usize,
}

/// Why a packet is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refusal {
    /// A file is damaged, truncated, missing or foreign to its packet.
    Damaged {
        /// The file at fault.
        file: PathBuf,
        /// The offset at fault.
        offset: Option<u64>,
    },
    /// The packet is for another pool.
    OtherPool {
        /// The packet's pool set UUID.
        packet: String,
        /// The destination's.
        destination: String,
    },
    /// The packet belongs to another lineage.
    OtherLineage {
        /// The packet's.
        packet: String,
        /// The destination's.
        destination: String,
    },
    /// A packet with this id was applied before, with other content.
    Altered,
    /// The packet's range or block size differ from the destination's.
    OtherRange,
    /// The destination pool set is too small for the pool.
    TooSmall {
        /// Bytes the pool needs.
        needed: u64,
        /// Bytes the destination's replicas give.
        available: u64,
    },
    /// The destination lacks changes the packet does not carry.
    Gap {
        /// The destination's epoch.
        destination_epoch: u32,
        /// The packet's base epoch.
        base_epoch: u32,
    },
    /// The destination has no usable state and the packet does not carry
    /// every block.
    NoState,
    /// The destination holds changes of a timeline the packet's history
    /// does not have.
    Diverged {
        /// The last epoch both share.
        fork_epoch: u32,
        /// The destination's timeline.
        timeline: u32,
        /// The destination's epoch.
        epoch: u32,
    },
    /// The destination was changed locally.
    LocalChanges {
        /// The changed ranges (those the packet would not overwrite, or
        /// would overwrite with other bytes).
        ranges: Spans,
    },
    /// The destination is the writer of the packet's timeline and holds
    /// an older epoch of it: another site wrote on the same timeline.
    SplitBrain,
    /// Not looked at: an earlier refusal stopped the run first.
    NotReached,
}

/// What happened to one logical packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Verdict {
    /// Applied.
    Applied,
    /// A dry run or diagnosis: it would be applied.
    WouldApply,
    /// The destination holds it already.
    Skipped {
        /// Why, in words.
        reason: String,
    },
    /// Refused.
    Refused {
        /// Why.
        refusal: Refusal,
        /// Why, in words, naming the file (and offset) at fault.
        message: String,
    },
}

/// One logical packet and what happened to it.
#[derive(Debug, Clone, Serialize)]
pub struct PacketReport {
    /// Its first file.
    pub path: PathBuf,
    /// All its files.
    pub files: Vec<PathBuf>,
    /// Its id, hex (unknown for a file whose header is unreadable).
    pub packet_id: Option<String>,
    /// Its timeline.
    pub timeline: u32,
    /// Its base epoch.
    pub base_epoch: u32,
    /// Its new epoch.
    pub new_epoch: u32,
    /// The exporter's pool set file.
    pub source: String,
    /// The destinations it was made for.
    pub destinations: Vec<String>,
    /// Blocks carried with bytes.
    pub data_blocks: u64,
    /// Blocks carried as zero runs.
    pub zero_blocks: u64,
    /// Bytes of its files.
    pub bytes: u64,
    /// What happened.
    pub verdict: Verdict,
    /// Its files were deleted.
    pub deleted: bool,
}

/// An export the source could run to fill what is missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suggestion {
    /// `--since`.
    pub since: Option<u32>,
    /// `--request`.
    pub request: Option<PathBuf>,
    /// The source's pool set file.
    pub source: String,
    /// The destination's name at the source.
    pub destination: String,
    /// A name for the packet.
    pub out: String,
}

/// A rewind request written by `--diagnose --rewind-request`.
#[derive(Debug, Clone, Serialize)]
pub struct RewindWritten {
    /// The file.
    pub path: PathBuf,
    /// The destination's name in it.
    pub destination: String,
    /// Ranges listed.
    pub ranges: usize,
    /// Blocks listed.
    pub blocks: u64,
}

/// What an import did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// The destination pool set.
    pub set: PathBuf,
    /// `-d`.
    pub dry_run: bool,
    /// `--diagnose`.
    pub diagnose: bool,
    /// Its parts were created (or would be) from a packet.
    pub seeded: bool,
    /// The timeline and epoch before.
    pub before: Option<(u32, u32)>,
    /// The timeline and epoch after.
    pub after: Option<(u32, u32)>,
    /// The packets, in the order taken.
    pub packets: Vec<PacketReport>,
    /// The last check of the destination against its state.
    pub check: Option<CheckReport>,
    /// What to run at the source (`--diagnose`).
    pub suggestions: Vec<Suggestion>,
    /// The rewind request written.
    pub rewind_request: Option<RewindWritten>,
    /// Files deleted.
    pub deleted: Vec<PathBuf>,
    /// Files given that do not exist (ignored: a gap they leave is
    /// refused as a gap).
    pub missing: Vec<PathBuf>,
    /// The destination's headers are still marked broken by an import
    /// that was interrupted and not finished by this run.
    pub interrupted: bool,
    /// The state file could not be used as it was, and why.
    pub state_note: Option<String>,
    /// Blocks written (all replicas count once).
    pub bytes_written: u64,
}

impl ImportReport {
    /// Whether any packet was refused (the command then exits 1).
    pub fn refused(&self) -> bool {
        self.packets
            .iter()
            .any(|p| matches!(p.verdict, Verdict::Refused { .. }))
    }

    /// Whether `--diagnose` found anything missing.
    pub fn missing(&self) -> bool {
        self.refused()
    }
}

/// The destination's position, as the run advances it.
#[derive(Debug, Clone)]
struct Held {
    timeline: u32,
    history: Vec<Fork>,
    epoch: u32,
    follower: bool,
}

impl Held {
    fn of(head: &State) -> Held {
        Held {
            timeline: head.timeline,
            history: head.history.clone(),
            epoch: head.epoch,
            follower: head.follower,
        }
    }

    fn position(&self) -> Position {
        Position {
            timeline: self.timeline,
            epoch: self.epoch,
        }
    }
}

/// Imports `packets` into the pool set at `path` (see the module
/// documentation).
pub fn import<S: Storage>(
    storage: &S,
    path: &Path,
    packets: &[PathBuf],
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<ImportReport, Error> {
    let readonly = options.dry_run || options.diagnose;
    let mut dest = open_destination(storage, path, readonly, options.wait_lock)?;
    let (mut state, state_note) = load_state(storage, path, &dest)?;
    let mut report = ImportReport {
        set: path.to_path_buf(),
        dry_run: options.dry_run,
        diagnose: options.diagnose,
        seeded: false,
        before: state.as_ref().map(|s| (s.head.timeline, s.head.epoch)),
        after: None,
        packets: Vec::new(),
        check: None,
        suggestions: Vec::new(),
        rewind_request: None,
        deleted: Vec::new(),
        missing: Vec::new(),
        interrupted: false,
        state_note,
        bytes_written: 0,
    };
    let key = options.key.as_ref();
    // An import stopped while it deleted packet files: finish that first.
    let earlier = deleting::finish(storage, path, key, readonly || options.keep)?;
    let mut recognized = Vec::new();
    let read = read_all(
        storage,
        packets,
        key,
        (&dest, state.as_ref()),
        (&earlier, &mut recognized),
        &mut report,
    )?;
    let Some((logical, verify_in_check)) = read else {
        finish_diagnosis(storage, &dest, state.as_ref(), &[], options, &mut report)?;
        return Ok(report);
    };
    let mut held = state.as_ref().map(|s| Held::of(&s.head));
    // A lone packet to apply to a destination with a state is verified by
    // the check, which reads every record before anything is written; a
    // damaged one ends the run as if the first reading had refused it.
    let mut prechecked = None;
    if let (true, [packet]) = (verify_in_check, logical.as_slice()) {
        if let Decision::Apply { fork } = decide(held.as_ref(), packet, state.as_ref(), &dest) {
            let check = check_only(
                storage,
                &dest,
                state.as_ref(),
                packet,
                key,
                fork,
                options.threads,
            );
            match check {
                Ok(check) => prechecked = Some(check),
                Err(e @ Error::PacketFile { .. }) => {
                    if let Some(r) = report.packets.first_mut() {
                        r.verdict = refused_damaged(&e, packet.path());
                    }
                    finish_diagnosis(storage, &dest, state.as_ref(), &[], options, &mut report)?;
                    return Ok(report);
                }
                Err(e) => return Err(e),
            }
        }
    }
    let mut checked_once = false;
    for (i, packet) in logical.iter().enumerate() {
        let decision = decide(held.as_ref(), packet, state.as_ref(), &dest);
        let verdict = match decision {
            Decision::Skip(reason) => Verdict::Skipped { reason },
            Decision::Refuse(refusal, message) => Verdict::Refused { refusal, message },
            Decision::Apply { fork } if readonly => {
                let verdict = if checked_once {
                    Verdict::WouldApply
                } else {
                    checked_once = true;
                    let check = match prechecked.take() {
                        Some(check) => check,
                        None => check_only(
                            storage,
                            &dest,
                            state.as_ref(),
                            packet,
                            key,
                            fork,
                            options.threads,
                        )?,
                    };
                    let verdict =
                        judge_check(&check, packet, held.as_ref(), fork, dest.interrupted);
                    report.check = Some(check);
                    verdict
                };
                if verdict == Verdict::WouldApply {
                    report.seeded |= dest.shape == Shape::Seed;
                    held = Some(advance(held.as_ref(), packet.meta()));
                }
                verdict
            }
            Decision::Apply { fork } => {
                let verdict = apply_one(
                    storage,
                    &mut dest,
                    state.as_ref(),
                    (packet, prechecked.take()),
                    key,
                    fork,
                    options,
                    progress,
                    &mut report,
                )?;
                if verdict == Verdict::Applied {
                    // The set and its state are what this packet made them.
                    drop(state);
                    drop(dest);
                    dest = open_destination(storage, path, false, options.wait_lock)?;
                    state = load_state(storage, path, &dest)?.0;
                    held = state.as_ref().map(|s| Held::of(&s.head));
                }
                verdict
            }
        };
        report.packets[i].verdict = verdict;
    }
    // A packet refused before a later one brought the destination past it
    // (a gap the later packet covered, or the changes a rewind packet
    // overwrote) is held now, and skipped as such.
    if let Some(h) = &held {
        for (packet, r) in logical.iter().zip(report.packets.iter_mut()) {
            let m = packet.meta();
            let superseded = matches!(r.verdict, Verdict::Refused { ref refusal, .. }
                if matches!(refusal, Refusal::Gap { .. } | Refusal::LocalChanges { .. } | Refusal::Diverged { .. }))
                && matches!(
                    applicability(
                        &h.history,
                        h.position(),
                        &m.history,
                        m.timeline,
                        m.base_epoch,
                        m.new_epoch
                    ),
                    Ok(Applicability::AlreadyHeld)
                );
            if superseded {
                r.verdict = Verdict::Skipped {
                    reason: format!(
                        "the destination holds epoch {} of timeline {} now, past the packet's {} (a later packet brought it there)",
                        h.epoch, h.timeline, m.new_epoch
                    ),
                };
            }
        }
    }
    report_recognized(&earlier, &recognized, &mut report);
    report.after = held.as_ref().map(|h| (h.timeline, h.epoch));
    report.interrupted =
        dest.interrupted && !report.packets.iter().any(|p| p.verdict == Verdict::Applied);
    if options.diagnose {
        finish_diagnosis(
            storage,
            &dest,
            state.as_ref(),
            &logical,
            options,
            &mut report,
        )?;
    } else if !options.dry_run && !options.keep {
        delete_done(storage, path, &logical, &mut report)?;
    }
    Ok(report)
}

/// The packets whose files an earlier import deleted (it was stopped
/// before it was done, and this run finished it), for the named files
/// that are gone: skipped, and deleted.
fn report_recognized(earlier: &deleting::Finished, named: &[PathBuf], report: &mut ImportReport) {
    let mut seen = std::collections::BTreeSet::new();
    for p in named {
        let Some(packet) = earlier
            .listed
            .iter()
            .find(|(f, _)| f.as_path() == p.as_path())
            .map(|(_, k)| k)
        else {
            continue;
        };
        if !seen.insert(packet.packet_id.clone()) {
            continue;
        }
        let files: Vec<PathBuf> = packet.files.iter().map(PathBuf::from).collect();
        report.packets.push(PacketReport {
            path: files.first().cloned().unwrap_or_else(|| p.clone()),
            files,
            packet_id: Some(packet.packet_id.clone()),
            timeline: packet.timeline,
            base_epoch: packet.base_epoch,
            new_epoch: packet.new_epoch,
            source: String::new(),
            destinations: Vec::new(),
            data_blocks: 0,
            zero_blocks: 0,
            bytes: 0,
            verdict: Verdict::Skipped {
                reason: format!(
                    "already applied (epoch {}): an import that was stopped while it deleted the packet's files had deleted them",
                    packet.new_epoch
                ),
            },
            deleted: true,
        });
    }
    report.deleted.extend(earlier.deleted.iter().cloned());
}

/// A destination's state (if usable) and why it is not.
type LoadedState<F> = (Option<StateFile<F>>, Option<String>);

/// The destination's state, unless it is missing, unusable or not this
/// pool's (then `None` and why).
fn load_state<S: Storage>(
    storage: &S,
    path: &Path,
    dest: &Destination<S::File>,
) -> Result<LoadedState<S::Aux>, Error> {
    Ok(match state::load(storage, path)? {
        Loaded::Missing => (None, None),
        Loaded::Unusable { path, reason } => (
            None,
            Some(format!(
                "{}: {reason}: it cannot tell which epoch the destination holds, so only a packet that carries every block can be applied",
                path.display()
            )),
        ),
        Loaded::Ready(_) if dest.shape == Shape::Seed => (
            None,
            Some("a state file is there but the pool is not: it is ignored and replaced when the pool is seeded".to_string()),
        ),
        Loaded::Ready(f) if dest.poolset_uuid.is_some_and(|u| u != f.head.poolset_uuid) => (
            None,
            Some(format!(
                "{}: it belongs to pool set UUID {}, not this pool's: only a packet that carries every block can be applied",
                f.path.display(),
                uuid_text(&f.head.poolset_uuid)
            )),
        ),
        Loaded::Ready(f) => (Some(f), None),
    })
}

/// Reads every file, groups them and verifies every packet whole, and
/// checks each against the destination. Returns the packets in order, or
/// `None` when something refused the whole run (the report says what).
fn read_all<S: Storage>(
    storage: &S,
    paths: &[PathBuf],
    key: Option<&Key>,
    (dest, state): (&Destination<S::File>, Option<&StateFile<S::Aux>>),
    (earlier, recognized): (&deleting::Finished, &mut Vec<PathBuf>),
    report: &mut ImportReport,
) -> Result<Option<(Vec<LogicalPacket>, bool)>, Error> {
    let mut files = Vec::new();
    let mut damaged = Vec::new();
    let cwd = storage.current_dir()?;
    for p in paths {
        if storage.stat(p)?.is_none() {
            // Deleted by an import that was stopped while it deleted the
            // files of packets the destination holds: its record says so.
            let abs = crate::durable::absolute(&cwd, p);
            if earlier.listed.contains_key(&abs) {
                recognized.push(abs);
                continue;
            }
            // Otherwise a packet that is really missing leaves a gap
            // that the epochs reveal.
            report.missing.push(p.clone());
            continue;
        }
        match open_packet_file(storage, p, key) {
            Ok(f) => files.push(f),
            Err(e @ Error::PacketFile { .. }) => damaged.push((p.clone(), e)),
            Err(e) => return Err(e),
        }
    }
    if files.is_empty() && damaged.is_empty() && recognized.is_empty() && !report.missing.is_empty()
    {
        return Err(Error::CannotImport {
            set: dest.set.path.clone(),
            reason: format!(
                "none of the packet files exists: {}",
                report
                    .missing
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let (logical, refusals) = group(files);
    for r in refusals {
        damaged.push((r.path, r.error));
    }
    let mut stop = !damaged.is_empty();
    for (p, e) in &damaged {
        report.packets.push(unreadable_report(p, e));
    }
    // A lone packet that the check will read anyway, before any write, is
    // verified there instead of here (see `import`).
    let verify_in_check = !stop
        && logical.len() == 1
        && logical
            .first()
            .is_some_and(|p| verified_by_check(p, dest, state));
    for packet in &logical {
        let mut r = packet_report(packet);
        let read = if verify_in_check {
            Ok(())
        } else {
            read_records(storage, packet, key, |_, _| Ok(())).map(drop)
        };
        if let Err(e) = read {
            r.verdict = refused_damaged(&e, packet.path());
            stop = true;
        } else if let Some((refusal, message)) = mismatch(packet, dest, state) {
            r.verdict = Verdict::Refused { refusal, message };
            stop = true;
        }
        report.packets.push(r);
    }
    if stop {
        let first = report
            .packets
            .iter()
            .find_map(|p| match &p.verdict {
                Verdict::Refused { message, .. } => Some(message.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for p in &mut report.packets {
            if matches!(p.verdict, Verdict::WouldApply) {
                p.verdict = Verdict::Refused {
                    refusal: Refusal::NotReached,
                    message: format!(
                        "not applied: nothing is applied while a packet is refused ({first})"
                    ),
                };
            }
        }
        return Ok(None);
    }
    Ok(Some((logical, verify_in_check)))
}

/// Whether the destination check will read every record of `packet`
/// before anything is written: the packet matches the destination, is to
/// be applied, and the destination exists and has a state to check.
fn verified_by_check<F: PartFile, A: PartFile>(
    packet: &LogicalPacket,
    dest: &Destination<F>,
    state: Option<&StateFile<A>>,
) -> bool {
    let Some(s) = state else {
        return false;
    };
    dest.shape == Shape::Existing
        && mismatch(packet, dest, state).is_none()
        && matches!(
            decide(Some(&Held::of(&s.head)), packet, state, dest),
            Decision::Apply { .. }
        )
}

/// A report of a file that could not be read.
fn unreadable_report(path: &Path, e: &Error) -> PacketReport {
    PacketReport {
        path: path.to_path_buf(),
        files: vec![path.to_path_buf()],
        packet_id: None,
        timeline: 0,
        base_epoch: 0,
        new_epoch: 0,
        source: String::new(),
        destinations: Vec::new(),
        data_blocks: 0,
        zero_blocks: 0,
        bytes: 0,
        verdict: refused_damaged(e, path),
        deleted: false,
    }
}

fn refused_damaged(e: &Error, fallback: &Path) -> Verdict {
    let (file, offset) = match e {
        Error::PacketFile { path, offset, .. } => (path.clone(), *offset),
        _ => (fallback.to_path_buf(), None),
    };
    Verdict::Refused {
        refusal: Refusal::Damaged { file, offset },
        message: e.to_string(),
    }
}

/// A report of a packet that has not been judged yet.
fn packet_report(packet: &LogicalPacket) -> PacketReport {
    let m = packet.meta();
    let s = packet.summary();
    PacketReport {
        path: packet.path().to_path_buf(),
        files: packet.files.iter().map(|f| f.path.clone()).collect(),
        packet_id: Some(lineage_text(&m.packet_id)),
        timeline: m.timeline,
        base_epoch: m.base_epoch,
        new_epoch: m.new_epoch,
        source: m.source.clone(),
        destinations: m.destinations.clone(),
        data_blocks: s.map_or(0, |s| s.data_blocks),
        zero_blocks: s.map_or(0, |s| s.zero_blocks),
        bytes: packet.bytes(),
        verdict: Verdict::WouldApply,
        deleted: false,
    }
}

/// What makes a whole packet unusable for this destination, whatever its
/// epochs: another pool, another lineage, another range, an altered
/// replay, a destination too small.
fn mismatch<F: PartFile, A: PartFile>(
    packet: &LogicalPacket,
    dest: &Destination<F>,
    state: Option<&StateFile<A>>,
) -> Option<(Refusal, String)> {
    let m = packet.meta();
    let at = packet.path().display();
    let pool = state.map(|s| s.head.poolset_uuid).or(dest.poolset_uuid);
    if let Some(uuid) = pool.filter(|u| *u != m.poolset_uuid) {
        return Some((
            Refusal::OtherPool {
                packet: uuid_text(&m.poolset_uuid),
                destination: uuid_text(&uuid),
            },
            format!(
                "{at}: the packet is for another pool: pool set UUID {} (offset 32), the destination's is {}",
                uuid_text(&m.poolset_uuid),
                uuid_text(&uuid)
            ),
        ));
    }
    if let Some(s) = state {
        let h = &s.head;
        if h.lineage != m.lineage {
            return Some((
                Refusal::OtherLineage {
                    packet: lineage_text(&m.lineage),
                    destination: lineage_text(&h.lineage),
                },
                format!(
                    "{at}: the packet belongs to another lineage: {} (offset 48), the destination's is {}; its exporter started a new history (a lost state file?): re-seed the destination from a packet that carries every block after removing its state file {}",
                    lineage_text(&m.lineage),
                    lineage_text(&h.lineage),
                    s.path.display()
                ),
            ));
        }
        if h.range != m.range || h.block_size != m.block_size {
            return Some((
                Refusal::OtherRange,
                format!(
                    "{at}: the packet ships logical [{:#x}, {:#x}) in blocks of {} (offset 80), the destination holds [{:#x}, {:#x}) in blocks of {}",
                    m.range.start, m.range.end, m.block_size, h.range.start, h.range.end, h.block_size
                ),
            ));
        }
        let digest = packet
            .summary()
            .map(|x| x.content_digest)
            .unwrap_or([0; 32]);
        if h.replay(&m.packet_id, &digest) == Replay::Altered {
            return Some((
                Refusal::Altered,
                format!(
                    "{at}: a packet with this id (offset 16) was applied before with other content: this one was altered after it was made; ask the source for a new export"
                ),
            ));
        }
    }
    let available = dest.pool_size();
    if available < m.range.end {
        return Some((
            Refusal::TooSmall {
                needed: m.range.end,
                available,
            },
            format!(
                "{}: the pool set is too small for the pool: it needs {} bytes, its smallest replica gives {available}; nothing was written: make every replica at least that large",
                dest.set.path.display(),
                m.range.end
            ),
        ));
    }
    None
}

/// What to do with one packet.
#[derive(Debug)]
enum Decision {
    Skip(String),
    Refuse(Refusal, String),
    /// Apply; `fork` is set when the destination left the packet's
    /// history after that epoch (a rewind packet meant for it).
    Apply {
        fork: Option<u32>,
    },
}

/// Decides from the positions alone (the destination is checked later).
fn decide<F: PartFile, A: PartFile>(
    held: Option<&Held>,
    packet: &LogicalPacket,
    state: Option<&StateFile<A>>,
    dest: &Destination<F>,
) -> Decision {
    let m = packet.meta();
    let at = packet.path().display();
    let Some(h) = held else {
        if packet.is_full() {
            return Decision::Apply { fork: None };
        }
        let why = if dest.shape == Shape::Seed {
            "the destination has no pool yet, and this packet does not carry every block: seed it with a packet for a destination never exported to (or `export --since 0`)".to_string()
        } else {
            "the destination has no usable state, so it cannot tell which epoch it holds, and this packet does not carry every block: import a packet made with `export --since 0`".to_string()
        };
        return Decision::Refuse(Refusal::NoState, format!("{at}: {why}"));
    };
    // The state may have changed since the packets were read (an earlier
    // packet of this run seeded it): another lineage is refused here too.
    if let Some(s) = state.filter(|s| s.head.lineage != m.lineage) {
        return Decision::Refuse(
            Refusal::OtherLineage {
                packet: lineage_text(&m.lineage),
                destination: lineage_text(&s.head.lineage),
            },
            format!(
                "{at}: the packet belongs to another lineage: {} (offset 48), the destination's is {}",
                lineage_text(&m.lineage),
                lineage_text(&s.head.lineage)
            ),
        );
    }
    // The very packet applied before (its id and content digest are in the
    // applied log of this lineage, and the destination holds its epoch) is
    // skipped: the log proves it, where epochs alone could not.
    if let Some(s) = state {
        let digest = packet
            .summary()
            .map(|x| x.content_digest)
            .unwrap_or([0; 32]);
        if s.head.replay(&m.packet_id, &digest) == Replay::AlreadyApplied && h.epoch >= m.new_epoch
        {
            return Decision::Skip(format!("already applied (epoch {})", m.new_epoch));
        }
    }
    if !h.follower && h.timeline == m.timeline && m.new_epoch > h.epoch {
        return Decision::Refuse(
            Refusal::SplitBrain,
            format!(
                "{at}: the packet brings epoch {} of timeline {}, but the destination is the writer of that timeline and holds epoch {}: another site wrote on the same timeline (a copied state file?); promote one of them (`poolsync epoch --promote`) to start a new timeline",
                m.new_epoch, m.timeline, h.epoch
            ),
        );
    }
    let verdict = applicability(
        &h.history,
        h.position(),
        &m.history,
        m.timeline,
        m.base_epoch,
        m.new_epoch,
    );
    match verdict {
        Err(e) => Decision::Refuse(
            Refusal::Diverged {
                fork_epoch: 0,
                timeline: h.timeline,
                epoch: h.epoch,
            },
            format!("{at}: the timeline histories of the packet (offset 128) and the destination contradict each other: {e}"),
        ),
        Ok(Applicability::Apply) => Decision::Apply { fork: None },
        Ok(Applicability::AlreadyHeld) => Decision::Skip(format!(
            "the destination holds epoch {} of timeline {}, at or past the packet's {}",
            h.epoch, h.timeline, m.new_epoch
        )),
        Ok(Applicability::Behind { dest_epoch, base_epoch }) => Decision::Refuse(
            Refusal::Gap {
                destination_epoch: dest_epoch,
                base_epoch,
            },
            format!(
                "{at}: gap: the destination holds epoch {dest_epoch}, the packet starts at epoch {base_epoch} (offset 72): the changes of {} are missing; ask the source for `export --since {dest_epoch}`",
                if dest_epoch + 1 == base_epoch {
                    format!("epoch {base_epoch}")
                } else {
                    format!("epochs {} to {base_epoch}", dest_epoch + 1)
                }
            ),
        ),
        Ok(Applicability::Diverged { fork_epoch }) => {
            let rewind_for_us = m.rewind == Some(h.position()) && m.base_epoch <= fork_epoch;
            if rewind_for_us {
                Decision::Apply {
                    fork: Some(fork_epoch),
                }
            } else {
                Decision::Refuse(
                    Refusal::Diverged {
                        fork_epoch,
                        timeline: h.timeline,
                        epoch: h.epoch,
                    },
                    format!(
                        "{at}: the packet's timeline {} forked from the destination's history at epoch {fork_epoch}, and the destination holds epoch {} of timeline {}, past the fork: applying it would mix two histories; write a rewind request (`--diagnose --rewind-request FILE`) and have the source export with `--request FILE`",
                        m.timeline, h.epoch, h.timeline
                    ),
                )
            }
        }
    }
}

/// The position after applying `meta`.
fn advance(_held: Option<&Held>, meta: &PacketMeta) -> Held {
    Held {
        timeline: meta.timeline,
        history: meta.history.clone(),
        epoch: meta.new_epoch,
        follower: true,
    }
}

/// Checks the destination against its state and the packet, writing
/// nothing.
fn check_only<S: Storage>(
    storage: &S,
    dest: &Destination<S::File>,
    state: Option<&StateFile<S::Aux>>,
    packet: &LogicalPacket,
    key: Option<&Key>,
    fork: Option<u32>,
    threads: usize,
) -> Result<CheckReport, Error> {
    let (Some(s), Shape::Existing) = (state, dest.shape) else {
        return Ok(CheckReport::default());
    };
    let mut cursor = s.cursor();
    let mut records = RecordStream::new(storage, packet, key);
    let replicas = dest.master();
    let m = packet.meta();
    let check = check_destination(
        &replicas,
        m.range.clone(),
        m.block_size,
        fork,
        &mut cursor,
        &mut records,
        threads,
        &NoProgress,
    )?;
    records.finish()?;
    Ok(check)
}

/// Whether a check lets the packet be applied.
fn judge_check(
    check: &CheckReport,
    packet: &LogicalPacket,
    held: Option<&Held>,
    fork: Option<u32>,
    interrupted: bool,
) -> Verdict {
    let m = packet.meta();
    // A rewind packet made for this destination overwrites its changes;
    // so does any packet after an interrupted import, whose writes (torn
    // or whole) are all the carried blocks can differ by: the import
    // proved the destination clean before it marked the headers broken,
    // and nothing opens a pool whose headers are.
    let ours = interrupted || held.is_some_and(|h| m.rewind == Some(h.position()));
    let refuse = |ranges: Spans, what: &str| {
        let message = format!(
            "{}: the destination was changed locally since it received its epoch{}: {what} {} bytes at {}; applying the packet over them would mix two histories: write a rewind request (`--diagnose --rewind-request FILE`) and have the source export with `--request FILE`",
            packet.path().display(),
            held.map_or_else(String::new, |h| format!(" {}", h.epoch)),
            ranges.bytes(),
            ranges.summary(4)
        );
        Verdict::Refused {
            refusal: Refusal::LocalChanges { ranges },
            message,
        }
    };
    if !check.kept.is_empty() {
        let what = if fork.is_some() {
            "blocks changed after the fork, or locally, that the packet does not bring back:"
        } else {
            "blocks the packet would not overwrite:"
        };
        return refuse(check.changed(), what);
    }
    if !check.carried.is_empty() && !ours {
        return refuse(
            check.carried.clone(),
            "blocks the packet would overwrite with other bytes:",
        );
    }
    Verdict::WouldApply
}

/// Checks, then applies one packet (see the module documentation).
#[allow(clippy::too_many_arguments)]
fn apply_one<S: Storage>(
    storage: &S,
    dest: &mut Destination<S::File>,
    state: Option<&StateFile<S::Aux>>,
    (packet, prechecked): (&LogicalPacket, Option<CheckReport>),
    key: Option<&Key>,
    fork: Option<u32>,
    options: &ImportOptions,
    progress: &dyn Progress,
    report: &mut ImportReport,
) -> Result<Verdict, Error> {
    let held = state.map(|s| Held::of(&s.head));
    let check = match prechecked {
        Some(check) => check,
        None => check_only(storage, dest, state, packet, key, fork, options.threads)?,
    };
    let verdict = judge_check(&check, packet, held.as_ref(), fork, dest.interrupted);
    report.check = Some(check);
    if verdict != Verdict::WouldApply {
        return Ok(verdict);
    }
    let m = packet.meta();
    let seeding = dest.shape == Shape::Seed;
    // The pool's data changes: a remote host's sync mark of it no longer
    // holds (docs/wire.md section 9).
    crate::remote::mark::forget(storage, &dest.set.path)?;
    let fresh = if seeding {
        report.seeded = true;
        create_parts(storage, dest)?.all_fresh
    } else {
        dest.mark_broken()?;
        false
    };
    let head = new_head(
        state.map(|s| &s.head),
        packet,
        storage.clock().unix_seconds(),
    );
    let mut writer_state = StateWriter::create(storage, &dest.set.path, &head)?;
    let mut cursor = match state {
        Some(s) if !packet.is_full() => s.cursor(),
        _ => EntryCursor::none(),
    };
    let replicas = dest.endpoints();
    let mut writer = Writer::new(&replicas, fresh);
    progress.start(packet.summary().map_or(0, |s| {
        (s.data_blocks + s.zero_blocks) * u64::from(m.block_size)
    }));
    // The records are read and verified again (the files could have
    // changed since the check), a few ahead on a thread of their own.
    let written = super::files::read_ahead(storage, packet, key, |records| {
        write_records(
            &mut writer,
            m.range.clone(),
            m.block_size,
            m.new_epoch,
            &mut cursor,
            records,
            progress,
            &mut |e| writer_state.push(e),
        )
    });
    progress.finish();
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = writer_state.abandon(storage);
            return Err(e);
        }
    };
    writer.fence()?;
    if seeding {
        write_seed_headers(storage, dest, m.poolset_uuid, &options.uuids)?;
    } else {
        finish_modes(storage, &dest.set)?;
        dest.restore_headers()?;
    }
    writer_state.finish(storage)?;
    report.bytes_written += written;
    Ok(Verdict::Applied)
}

/// The destination's state after applying `packet` over `old`.
fn new_head(old: Option<&State>, packet: &LogicalPacket, now: u64) -> State {
    let m = packet.meta();
    let mut head = State {
        poolset_uuid: m.poolset_uuid,
        lineage: m.lineage,
        timeline: m.timeline,
        history: m.history.clone(),
        epoch: m.new_epoch,
        generation: old.map_or(1, |o| o.generation.wrapping_add(1)),
        block_size: m.block_size,
        range: m.range.clone(),
        destinations: old.map(|o| o.destinations.clone()).unwrap_or_default(),
        applied: old.map(|o| o.applied.clone()).unwrap_or_default(),
        follower: true,
    };
    if let Some(s) = packet.summary() {
        head.record_applied(Applied {
            packet_id: m.packet_id,
            timeline: m.timeline,
            base_epoch: m.base_epoch,
            new_epoch: m.new_epoch,
            applied_at: now,
            content_digest: s.content_digest,
        });
    }
    head
}

/// Deletes the files of the packets applied or skipped, recorded first
/// ([`deleting`]) so that a run stopped half-way is finished by the next.
fn delete_done<S: Storage>(
    storage: &S,
    set: &Path,
    logical: &[LogicalPacket],
    report: &mut ImportReport,
) -> Result<(), Error> {
    let done: Vec<&LogicalPacket> = logical
        .iter()
        .zip(report.packets.iter())
        .filter(|(_, r)| matches!(r.verdict, Verdict::Applied | Verdict::Skipped { .. }))
        .map(|(p, _)| p)
        .collect();
    if done.is_empty() {
        return Ok(());
    }
    deleting::begin(storage, set, &done)?;
    let mut dirs = std::collections::BTreeSet::new();
    for (packet, r) in logical.iter().zip(report.packets.iter_mut()) {
        if !matches!(r.verdict, Verdict::Applied | Verdict::Skipped { .. }) {
            continue;
        }
        for f in &packet.files {
            if crate::durable::remove_if_exists(storage, &f.path)? {
                report.deleted.push(f.path.clone());
            }
            dirs.insert(f.path.parent().map(Path::to_path_buf).unwrap_or_default());
        }
        r.deleted = true;
    }
    for d in dirs {
        storage.fsync_dir(&d)?;
    }
    deleting::end(storage, set)
}

/// `--diagnose`: the exports that would fill what is missing, and the
/// rewind request.
fn finish_diagnosis<S: Storage>(
    storage: &S,
    dest: &Destination<S::File>,
    state: Option<&StateFile<S::Aux>>,
    logical: &[LogicalPacket],
    options: &ImportOptions,
    report: &mut ImportReport,
) -> Result<(), Error> {
    if !options.diagnose {
        return Ok(());
    }
    let name = options.name.clone().or_else(|| {
        let mut names: Vec<&String> = logical
            .iter()
            .flat_map(|p| &p.meta().destinations)
            .collect();
        names.sort();
        names.dedup();
        (names.len() == 1).then(|| names[0].clone())
    });
    let source = logical
        .first()
        .map(|p| p.meta().source.clone())
        .unwrap_or_default();
    let epoch = state.map_or(0, |s| s.head.epoch);
    let dest_name = name.clone().unwrap_or_else(|| "<destination>".to_string());
    let mut rewind: Option<Option<u32>> = None;
    let mut since: Option<u32> = None;
    for r in &report.packets {
        let Verdict::Refused { refusal, .. } = &r.verdict else {
            continue;
        };
        let lower = |since: Option<u32>, e: u32| Some(since.map_or(e, |s: u32| s.min(e)));
        match refusal {
            Refusal::Gap {
                destination_epoch, ..
            } => since = lower(since, *destination_epoch),
            Refusal::NoState => since = Some(0),
            Refusal::Damaged { .. } => since = lower(since, epoch),
            Refusal::LocalChanges { .. } => rewind = Some(rewind.flatten()),
            Refusal::Diverged { fork_epoch, .. } => rewind = Some(Some(*fork_epoch)),
            _ => {}
        }
    }
    let source = if source.is_empty() {
        "<source pool set>".to_string()
    } else {
        source
    };
    if let Some(fork) = rewind {
        let request = options.rewind_request.clone();
        if let (Some(path), Some(s)) = (&request, state) {
            report.rewind_request = Some(write_request(
                storage,
                dest,
                s,
                fork,
                name.as_deref(),
                path,
                options.key.as_ref(),
            )?);
        }
        report.suggestions.push(Suggestion {
            since: None,
            request: Some(request.unwrap_or_else(|| PathBuf::from("REWIND_REQUEST"))),
            source: source.clone(),
            destination: dest_name.clone(),
            out: format!("{dest_name}-rewind.pkt"),
        });
    } else if let Some(since) = since {
        report.suggestions.push(Suggestion {
            since: Some(since),
            request: None,
            source,
            destination: dest_name.clone(),
            out: format!("{dest_name}-since-{since}.pkt"),
        });
    }
    Ok(())
}

/// Writes the rewind request of a destination: every block that differs
/// from its state, and with `fork`, every block its state stamps after
/// the fork.
fn write_request<S: Storage>(
    storage: &S,
    dest: &Destination<S::File>,
    state: &StateFile<S::Aux>,
    fork: Option<u32>,
    name: Option<&str>,
    path: &Path,
    key: Option<&Key>,
) -> Result<RewindWritten, Error> {
    let refuse = |reason: String| Error::RewindRequest {
        path: path.to_path_buf(),
        reason,
    };
    let name = name.ok_or_else(|| {
        refuse(
            "the packets name several destinations: say which one this is with --as NAME"
                .to_string(),
        )
    })?;
    let h = &state.head;
    let replicas = dest.master();
    let mut cursor = state.cursor();
    let check = check_destination(
        &replicas,
        h.range.clone(),
        h.block_size,
        fork,
        &mut cursor,
        &mut NoRecords,
        1,
        &NoProgress,
    )?;
    let bs = u64::from(h.block_size);
    let mut ranges: Vec<BlockRange> = check
        .changed()
        .as_slice()
        .iter()
        .map(|s| BlockRange {
            offset: s.offset,
            blocks: s.len.div_ceil(bs),
        })
        .collect();
    normalize_ranges(&mut ranges, h.block_size);
    poolsync_packet::coarsen_ranges(
        &mut ranges,
        h.block_size,
        poolsync_packet::rewind::MAX_REWIND_RANGES,
    );
    let request = RewindRequest {
        poolset_uuid: h.poolset_uuid,
        lineage: h.lineage,
        timeline: h.timeline,
        history: h.history.clone(),
        epoch: h.epoch,
        block_size: h.block_size,
        created: storage.clock().unix_seconds(),
        destination: name.to_string(),
        ranges,
    };
    let bytes = request.encode(key).map_err(|e| refuse(e.to_string()))?;
    if let Some(meta) = storage.stat(path)? {
        let ours = storage
            .read_all(
                path,
                meta.len.min(poolsync_packet::rewind::REWIND_MAX_LEN as u64),
            )
            .map(|b| b.starts_with(poolsync_packet::rewind::REWIND_MAGIC))
            .unwrap_or(false);
        if !ours {
            return Err(refuse(
                "the file exists and is not a rewind request: not overwriting it".to_string(),
            ));
        }
    }
    crate::durable::replace_small_file(storage, path, &bytes)?;
    Ok(RewindWritten {
        path: path.to_path_buf(),
        destination: name.to_string(),
        ranges: request.ranges.len(),
        blocks: request.ranges.iter().map(|r| r.blocks).sum(),
    })
}
